//! A small progress display on stderr, drawn only when stderr is a terminal and `--json` is off.
//! When disabled every call is a no-op, so callers never branch on it.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::output::human_size;

/// A bar for work of known size: `label [=====>     ] 45/100 files, 12.3 MiB`.
pub struct Progress {
    enabled: bool,
    label: String,
    total: u64,
    done: u64,
    bytes: u64,
    unit: &'static str,
    last_draw: Option<Instant>,
}

impl Progress {
    /// A bar over `total` items; draws nothing unless `enabled`.
    pub fn new(label: &str, total: u64, enabled: bool) -> Self {
        Self {
            enabled,
            label: label.to_string(),
            total,
            done: 0,
            bytes: 0,
            unit: "files",
            last_draw: None,
        }
    }

    /// Names what is counted (default `files`); the byte total is then shown only when non-zero.
    pub fn unit(mut self, unit: &'static str) -> Self {
        self.unit = unit;
        self
    }

    /// Sets how many of how many items are done (for work reported as absolute progress).
    pub fn set(&mut self, done: u64, total: u64) {
        self.total = total;
        let more = done.saturating_sub(self.done);
        if done < self.done {
            self.done = done;
        }
        self.advance(more, 0);
    }

    /// Counts `items` more items of `bytes` bytes done, redrawing at most ten times a second.
    pub fn advance(&mut self, items: u64, bytes: u64) {
        self.done += items;
        self.bytes += bytes;
        if !self.enabled {
            return;
        }
        let due = self
            .last_draw
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(100));
        if due || self.done >= self.total {
            self.draw();
            self.last_draw = Some(Instant::now());
        }
    }

    fn draw(&self) {
        const WIDTH: u64 = 30;
        let filled = (self.done.min(self.total) * WIDTH)
            .checked_div(self.total)
            .unwrap_or(WIDTH);
        let mut bar = "=".repeat(filled as usize);
        if filled < WIDTH {
            bar.push('>');
            bar.push_str(&" ".repeat((WIDTH - filled - 1) as usize));
        }
        let mut e = io::stderr().lock();
        let size = if self.unit == "files" || self.bytes > 0 {
            format!(", {}", human_size(self.bytes))
        } else {
            String::new()
        };
        let _ = write!(
            e,
            "\r\x1b[2K{} [{bar}] {}/{} {}{size}",
            self.label, self.done, self.total, self.unit
        );
        let _ = e.flush();
    }

    /// Clears the bar's line.
    pub fn finish(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            let mut e = io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K");
            let _ = e.flush();
        }
        self.enabled = false;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A ticking `label... 3s` line for work whose size is unknown; stops when dropped.
pub struct Spinner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Spinner {
    /// Starts ticking on stderr if `enabled`.
    pub fn start(label: &str, enabled: bool) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = if enabled {
            let stop2 = stop.clone();
            let label = label.to_string();
            std::thread::Builder::new()
                .name("cairn-progress".into())
                .spawn(move || {
                    let start = Instant::now();
                    let frames = ['|', '/', '-', '\\'];
                    let mut i = 0;
                    let mut drawn = false;
                    // The first frame after a short delay, so quick work shows nothing.
                    std::thread::sleep(Duration::from_millis(300));
                    while !stop2.load(Ordering::Relaxed) {
                        let mut e = io::stderr().lock();
                        let _ = write!(
                            e,
                            "\r\x1b[2K{} {label}... {}s",
                            frames[i % frames.len()],
                            start.elapsed().as_secs()
                        );
                        let _ = e.flush();
                        drop(e);
                        i += 1;
                        drawn = true;
                        std::thread::sleep(Duration::from_millis(120));
                    }
                    if drawn {
                        let mut e = io::stderr().lock();
                        let _ = write!(e, "\r\x1b[2K");
                        let _ = e.flush();
                    }
                })
                .ok()
        } else {
            None
        };
        Self { stop, thread }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
