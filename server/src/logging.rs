//! The server's log on stderr, one JSON object a line, buffered.
//!
//! Request lines (one per request) go into a shared buffer that a background thread writes out
//! every [`FLUSH_EVERY`], or at once when it holds [`FLUSH_BYTES`]: a `write` system call per
//! request (what `eprintln!` costs, stderr being unbuffered) was a measurable share of a small
//! GET. Lifecycle lines ([`crate::log`]: start, warnings, errors, shutdown) are written at once,
//! after whatever request lines are waiting, so the order on stderr stays the order of events.
//! A process killed with SIGKILL loses at most the last [`FLUSH_EVERY`] of request lines.

use std::io::Write;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// How often buffered request lines are written out.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Buffered bytes that trigger an immediate write.
pub const FLUSH_BYTES: usize = 64 << 10;

static BUFFER: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static FLUSHER: OnceLock<()> = OnceLock::new();

fn buffer() -> MutexGuard<'static, Vec<u8>> {
    // Bytes are appended whole under the lock: a panic elsewhere cannot tear a line.
    BUFFER.lock().unwrap_or_else(|p| p.into_inner())
}

fn write_out(buf: &mut Vec<u8>) {
    if buf.is_empty() {
        return;
    }
    let mut err = std::io::stderr().lock();
    // Nowhere to report a failed write of the log itself; the lines are dropped.
    let _ = err.write_all(buf);
    let _ = err.flush();
    buf.clear();
}

fn start_flusher() {
    FLUSHER.get_or_init(|| {
        // Without the thread (it could not start), lines are still written when the buffer
        // fills and at the next lifecycle line: later, but none is lost while the process lives.
        let _ = std::thread::Builder::new()
            .name("cairn-log".into())
            .spawn(|| loop {
                std::thread::sleep(FLUSH_EVERY);
                flush();
            });
    });
}

/// Appends one request line (without its newline); written out within [`FLUSH_EVERY`].
pub fn request_line(line: &str) {
    start_flusher();
    let mut buf = buffer();
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    if buf.len() >= FLUSH_BYTES {
        write_out(&mut buf);
    }
}

/// Writes one line at once, after the request lines waiting before it.
pub fn immediate_line(line: &str) {
    let mut buf = buffer();
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    write_out(&mut buf);
}

/// Writes out every waiting line.
pub fn flush() {
    write_out(&mut buffer());
}

/// Appends `s` to `out` as a JSON string (quoted and escaped).
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_round_trip_through_serde() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "nl\n\r\t",
            "\u{1}\u{1f}",
            "é/%2F",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, s, "{out}");
        }
    }
}
