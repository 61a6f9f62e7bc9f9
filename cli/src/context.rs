//! What every command gets and returns: the context ([`Ctx`]: the store, opened on first use,
//! the output mode and styling) and the failure type ([`Failure`]: code, message, exit code).
//! In remote mode (`--server`) the context holds a [`Remote`] client instead, and asking it for a
//! store is an error naming why. A leaf of the front end: it imports only `output` and `remote`,
//! never a command module or the crate root.

use std::cell::OnceCell;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use cairn::Store;

use crate::output::Style;
use crate::remote::{Remote, RemoteError};

/// The store used when neither --store nor CAIRN_STORE is given.
pub const DEFAULT_STORE: &str = ".cairn";

/// What every command returns.
pub type CliResult<T = ()> = Result<T, Failure>;

/// A failed command: a stable code, one line for people, and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// Machine-readable code (the library's `Error::code`, or `usage`, `io`...).
    pub code: String,
    /// One line saying what is wrong and what to do.
    pub message: String,
    /// The process exit code (0 only for a closed stdout pipe).
    pub exit: u8,
}

impl Failure {
    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: "usage".into(),
            message: message.into(),
            exit: 2,
        }
    }

    /// Invalid input given on the command line (exit 5).
    pub fn invalid(what: &str, message: impl Into<String>) -> Self {
        Self {
            code: "invalid_input".into(),
            message: format!("invalid {what}: {}", message.into()),
            exit: 5,
        }
    }

    /// An I/O error on a path the user named (exit 1).
    pub fn io(path: &Path, e: io::Error) -> Self {
        Self {
            code: "io".into(),
            message: format!("{}: {e}", path.display()),
            exit: 1,
        }
    }

    /// An input file or folder the user named cannot be read: "not found" (exit 3) when it does
    /// not exist, else an I/O error (exit 1).
    pub fn input(path: &Path, e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::NotFound {
            Self {
                code: "file_not_found".into(),
                message: format!("{}: no such file or folder", path.display()),
                exit: 3,
            }
        } else {
            Self::io(path, e)
        }
    }

    /// A write to stdout failed. A closed pipe (`cairn ... | head`) is success.
    pub fn stdout(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Self {
                code: "broken_pipe".into(),
                message: String::new(),
                exit: 0,
            }
        } else {
            Self {
                code: "io".into(),
                message: format!("cannot write to stdout: {e}"),
                exit: 1,
            }
        }
    }

    /// Prints the failure on stderr (as JSON with `--json`) and returns the exit code.
    pub(crate) fn report(self, json: bool) -> ExitCode {
        if self.exit == 0 {
            return ExitCode::SUCCESS;
        }
        let mut err = io::stderr().lock();
        if json {
            let v = serde_json::json!({"error": {"code": self.code, "message": self.message}});
            let _ = writeln!(err, "{v}");
        } else {
            let _ = writeln!(err, "cairn: error: {}", self.message);
        }
        ExitCode::from(self.exit)
    }
}

/// The exit code of an error code: 3 not found, 4 invalid state transition or conflict, 5 limit
/// exceeded or invalid input, 1 anything else. One table for the library's errors and the
/// server's, so a command exits alike locally and remotely.
pub fn exit_code_of(code: &str) -> u8 {
    match code {
        "session_not_found"
        | "artifact_not_found"
        | "checkpoint_not_found"
        | "content_missing"
        | "not_found"
        | "file_not_found"
        | "store_not_found" => 3,
        "invalid_transition" | "key_conflict" | "already_exists" | "has_children"
        | "session_closed" | "conflict" => 4,
        "limit_exceeded"
        | "invalid_input"
        | "invalid_glob"
        | "payload_too_large"
        | "quota_exceeded"
        | "hash_mismatch"
        | "range_not_satisfiable" => 5,
        "usage" => 2,
        _ => 1,
    }
}

impl From<cairn::Error> for Failure {
    fn from(e: cairn::Error) -> Self {
        Failure {
            code: e.code().to_string(),
            message: e.to_string(),
            exit: exit_code_of(e.code()),
        }
    }
}

impl From<RemoteError> for Failure {
    fn from(e: RemoteError) -> Self {
        Failure {
            exit: exit_code_of(&e.code),
            code: e.code,
            message: e.message,
        }
    }
}

/// What every command gets: the store (opened on first use), the output mode and styling.
pub struct Ctx {
    /// The store folder.
    pub store_path: PathBuf,
    /// Whether the folder was given (--store or CAIRN_STORE) rather than the default.
    pub store_given: bool,
    /// `--json` was given.
    pub json: bool,
    /// Colours and terminal detection for people-facing output.
    pub style: Style,
    /// `--engine`: the engine of a store created by this command.
    pub engine: Option<cairn::BackendKind>,
    /// `--server`: the server every command talks to instead of a store.
    pub remote: Option<Remote>,
    store: OnceCell<Store>,
}

impl Ctx {
    /// A context for `store_path` in the given output mode.
    pub fn new(store: Option<PathBuf>, json: bool) -> Self {
        let colour = !json
            && io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Self {
            store_given: store.is_some(),
            store_path: store.unwrap_or_else(|| PathBuf::from(DEFAULT_STORE)),
            json,
            style: Style::new(colour),
            engine: None,
            remote: None,
            store: OnceCell::new(),
        }
    }

    /// The store, opened (and created if missing) on first use: for commands that write.
    pub fn store(&self) -> CliResult<&Store> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        if let Some(r) = &self.remote {
            return Err(Failure::usage(format!(
                "this command works on a local store only, and --server {} (or CAIRN_SERVER) is set; \
                 run it on the server's machine, or unset CAIRN_SERVER to use --store",
                r.url()
            )));
        }
        let config = cairn::Config::default();
        let config = match self.engine {
            Some(engine) => config.engine(engine),
            None => config,
        };
        let s = Store::open_with(&self.store_path, config)?;
        Ok(self.store.get_or_init(|| s))
    }

    /// The store, which must already exist: for commands that only read, so that a mistyped
    /// `--store` is reported instead of silently creating an empty store.
    pub fn existing_store(&self) -> CliResult<&Store> {
        if self.remote.is_some() {
            return self.store();
        }
        if self.store.get().is_none() {
            self.existing_store_check()?;
        }
        self.store()
    }

    /// Fails with `store_not_found` when there is no store at `--store`.
    fn existing_store_check(&self) -> CliResult<()> {
        let missing_or_empty = match std::fs::read_dir(&self.store_path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        if missing_or_empty {
            return Err(Failure {
                code: "store_not_found".into(),
                message: format!(
                    "no store at {}; it is created by the first write (e.g. `cairn session create`), \
                     or point --store / CAIRN_STORE at an existing one",
                    self.store_path.display()
                ),
                exit: 3,
            });
        }
        Ok(())
    }

    /// The store, which must already exist, opened to read only: for commands that never
    /// write (queries, listings, `get`). On redb this writes nothing to the store, so a command
    /// on a large store does not pay the engine's open and close bookkeeping; a command that
    /// may write uses [`Ctx::existing_store`] instead.
    pub fn reading_store(&self) -> CliResult<&Store> {
        if self.remote.is_some() || self.store.get().is_some() {
            return self.existing_store();
        }
        self.existing_store_check()?;
        let s = Store::open_read_only(&self.store_path, cairn::Config::default())?;
        Ok(self.store.get_or_init(|| s))
    }

    /// The server client in remote mode (`--server` / `CAIRN_SERVER`), else `None`.
    pub fn remote(&self) -> Option<&Remote> {
        self.remote.as_ref()
    }

    /// Whether progress may be drawn: stderr is a terminal and the output is not JSON.
    pub fn progress_enabled(&self) -> bool {
        !self.json && io::stderr().is_terminal()
    }

    /// Prints `value` as one JSON value with `--json`, else calls `human` to write text for people.
    pub fn emit<T: Serialize + ?Sized>(
        &self,
        value: &T,
        human: impl FnOnce(&mut dyn Write, &Style) -> io::Result<()>,
    ) -> CliResult {
        let stdout = io::stdout();
        let mut w = io::BufWriter::with_capacity(64 << 10, stdout.lock());
        let r = if self.json {
            self.write_json(&mut w, value)
        } else {
            human(&mut w, &self.style)
        };
        r.and_then(|()| w.flush()).map_err(Failure::stdout)
    }

    fn write_json<T: Serialize + ?Sized>(&self, w: &mut dyn Write, value: &T) -> io::Result<()> {
        let bytes = if io::stdout().is_terminal() {
            serde_json::to_vec_pretty(value)
        } else {
            serde_json::to_vec(value)
        }
        .map_err(io::Error::other)?;
        w.write_all(&bytes)?;
        w.write_all(b"\n")
    }
}

/// A one-line note for people on stderr.
pub fn note(message: &str) {
    let mut e = io::stderr().lock();
    let _ = writeln!(e, "{message}");
}
