//! A backend wrapper that fails or kills the process at the Nth `apply` or `flush`.

use std::sync::atomic::{AtomicU64, Ordering};

use cairn::{Backend, Error, Op, Result};

/// Which engine call a fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// `Backend::apply`.
    Apply,
    /// `Backend::flush`.
    Flush,
}

/// Whether the fault strikes before the call reaches the engine or after it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// The engine never sees the call.
    Before,
    /// The engine did the work; the caller never hears of it.
    After,
}

/// What the fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Kill the process on the spot (no destructors, no flush): a crash at exactly this step.
    Abort,
    /// Return an engine error to the caller.
    Error,
}

/// One injected fault: the `n`th (1-based) call of `call` does `action` at `when`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Which call.
    pub call: Call,
    /// Which occurrence, from 1.
    pub n: u64,
    /// Before or after the engine.
    pub when: When,
    /// Abort or error.
    pub action: Action,
}

impl Fault {
    /// Parses `apply:3:before:abort` (the form passed to child processes).
    pub fn parse(s: &str) -> Option<Fault> {
        let p: Vec<&str> = s.split(':').collect();
        let [call, n, when, action] = p.as_slice() else {
            return None;
        };
        Some(Fault {
            call: match *call {
                "apply" => Call::Apply,
                "flush" => Call::Flush,
                _ => return None,
            },
            n: n.parse().ok()?,
            when: match *when {
                "before" => When::Before,
                "after" => When::After,
                _ => return None,
            },
            action: match *action {
                "abort" => Action::Abort,
                "error" => Action::Error,
                _ => return None,
            },
        })
    }

    /// The form [`Fault::parse`] reads.
    pub fn render(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            match self.call {
                Call::Apply => "apply",
                Call::Flush => "flush",
            },
            self.n,
            match self.when {
                When::Before => "before",
                When::After => "after",
            },
            match self.action {
                Action::Abort => "abort",
                Action::Error => "error",
            }
        )
    }
}

/// Wraps an engine; counts calls and injects at most one fault per call kind and occurrence.
pub struct FaultBackend {
    inner: Box<dyn Backend>,
    faults: Vec<Fault>,
    applies: AtomicU64,
    flushes: AtomicU64,
}

impl FaultBackend {
    /// Wraps `inner` with the given faults.
    pub fn new(inner: Box<dyn Backend>, faults: Vec<Fault>) -> Self {
        Self {
            inner,
            faults,
            applies: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        }
    }

    fn strike(&self, call: Call, n: u64, when: When) -> Result<()> {
        for f in &self.faults {
            if f.call == call && f.n == n && f.when == when {
                match f.action {
                    Action::Abort => {
                        use std::io::Write;
                        let _ = std::io::stdout().flush();
                        std::process::abort();
                    }
                    Action::Error => {
                        return Err(Error::Io {
                            path: "injected".into(),
                            source: std::io::Error::other(format!("injected fault {}", f.render())),
                        })
                    }
                }
            }
        }
        Ok(())
    }
}

impl Backend for FaultBackend {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan(start, end, reverse, limit)
    }
    fn apply(&self, ops: Vec<Op>) -> Result<()> {
        let n = self.applies.fetch_add(1, Ordering::SeqCst) + 1;
        self.strike(Call::Apply, n, When::Before)?;
        self.inner.apply(ops)?;
        self.strike(Call::Apply, n, When::After)
    }
    fn flush(&self) -> Result<()> {
        let n = self.flushes.fetch_add(1, Ordering::SeqCst) + 1;
        self.strike(Call::Flush, n, When::Before)?;
        self.inner.flush()?;
        self.strike(Call::Flush, n, When::After)
    }
    fn flush_is_fsync(&self) -> bool {
        self.inner.flush_is_fsync()
    }
}
