//! The command line front end: clap structure, global flags, output mode, error mapping.
//!
//! Layout: one file per noun (`session.rs`, `artifact.rs`, `admin.rs` for store-wide commands,
//! `demo.rs`), shared argument parsing in `args.rs`, people-facing formatting in `output.rs`,
//! the stderr progress bar in `progress.rs`.
//!
//! Adding a subcommand: add one variant to the noun's enum (with its `Args` struct) and one
//! function in the same file, called from the noun's `run`. A new noun is one variant of
//! [`Command`] plus a `match` arm in [`dispatch`].
//!
//! Exit codes: 0 success (also when stdout is a closed pipe), 2 usage error, 3 not found,
//! 4 invalid state transition or conflict, 5 limit exceeded or invalid input, 1 anything else.

pub mod admin;
pub mod args;
pub mod artifact;
pub mod bench;
pub mod checkpoint;
pub mod cleanup;
pub mod demo;
pub mod output;
pub mod progress;
pub mod session;
pub mod session_ops;

use std::cell::OnceCell;
use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;

use cairn::Store;

use self::output::Style;

/// The store used when neither --store nor CAIRN_STORE is given.
pub const DEFAULT_STORE: &str = ".cairn";

/// `cairn`: an artifact store for AI agents, from the shell.
#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    bin_name = "cairn",
    version,
    about = "An artifact store for AI agents: sessions, deduplicated and compressed artifacts, indexed queries",
    long_about = "An artifact store for AI agents: a tree of sessions with a lifecycle, and artifacts \
                  (tool outputs, model outputs, files) stored by content hash, deduplicated, \
                  compressed and indexed for queries.\n\n\
                  Commands are `cairn NOUN VERB`. Start with `cairn demo`, or:\n  \
                  cairn session create --name run-1\n  \
                  cairn artifact put SESSION_ID out.txt --kind tool_result\n  \
                  cairn artifact query --kind tool_result --name '*.txt'\n\n\
                  Exit codes: 0 ok (also when stdout is a closed pipe), 2 usage error, 3 not found, \
                  4 invalid state transition or conflict, 5 limit exceeded or invalid input, 1 other errors.",
    arg_required_else_help = true,
    propagate_version = true
)]
pub struct Cli {
    /// The store folder (a sled store, created on first write) [default: ./.cairn; for `demo`:
    /// ./.cairn-demo].
    #[arg(long, global = true, env = "CAIRN_STORE", value_name = "PATH")]
    pub store: Option<PathBuf>,

    /// Print exactly one JSON value on stdout (errors as {"error":{"code","message"}} on stderr).
    #[arg(long, global = true)]
    pub json: bool,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The nouns (and store-wide verbs).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sessions: create, inspect, list, move through the lifecycle, delete.
    #[command(subcommand)]
    Session(session::SessionCmd),
    /// Artifacts: store files or stdin, read them back verified, list, query, delete.
    #[command(subcommand)]
    Artifact(artifact::ArtifactCmd),
    /// Checkpoints: record, list, show, restore and delete a session's known good points.
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCmd),
    /// Store-wide counts: sessions, artifacts, blobs, bytes, dedup and compression ratios.
    Stats(admin::StatsArgs),
    /// Remove content no artifact references any more and report the space freed.
    Gc(admin::GcArgs),
    /// Re-hash every blob and check every index entry and reference count (exit 1 on problems);
    /// with --repair, rebuild indexes and quarantine bad blobs.
    Verify(admin::VerifyArgs),
    /// Apply retention rules: delete old finished sessions, old versions, expired artifacts.
    Cleanup(cleanup::CleanupArgs),
    /// Play a realistic agent run from fixtures/agent-runs into a demo store and report on it.
    Demo(demo::DemoArgs),
    /// Measure the standard workloads on one engine (memory, sled, redb) in scratch stores under
    /// --store (default ./.cairn-bench): throughput, latency and ratios to same-run baselines.
    Bench(bench::BenchArgs),
    /// Serve the store to AI agents over the Model Context Protocol on stdin/stdout (for an MCP
    /// client's configuration: `"command": "cairn", "args": ["mcp", "--store", "PATH"]`).
    Mcp(McpArgs),
}

/// `cairn mcp`: no options of its own (the store is `--store` / `CAIRN_STORE`).
#[derive(Debug, clap::Args)]
pub struct McpArgs {}

/// Runs the MCP server on stdio until the client disconnects. Only protocol messages go to
/// stdout; the store is created on first use.
fn mcp(ctx: &Ctx, _args: McpArgs) -> CliResult {
    let store = ctx.store()?.clone();
    cairn_mcp::run_stdio(store, cairn_mcp::McpOptions::local()).map_err(|e| Failure {
        code: "mcp".into(),
        message: format!("the MCP server stopped: {e}"),
        exit: 1,
    })
}

/// Runs one parsed command.
fn dispatch(ctx: &Ctx, command: Command) -> CliResult {
    match command {
        Command::Session(c) => session::run(ctx, c),
        Command::Artifact(c) => artifact::run(ctx, c),
        Command::Checkpoint(c) => checkpoint::run(ctx, c),
        Command::Cleanup(a) => cleanup::cleanup(ctx, a),
        Command::Stats(a) => admin::stats(ctx, a),
        Command::Gc(a) => admin::gc(ctx, a),
        Command::Verify(a) => admin::verify(ctx, a),
        Command::Demo(a) => demo::run(ctx, a),
        Command::Bench(a) => bench::run(ctx, a),
        Command::Mcp(a) => mcp(ctx, a),
    }
}

/// The entry point of the binary.
pub fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    run_args(argv)
}

/// Parses `argv` (including the program name), runs the command and maps the outcome to an exit code.
pub fn run_args(argv: Vec<OsString>) -> ExitCode {
    // Known before parsing, so that even usage errors can be reported as JSON.
    let json_requested = argv.iter().skip(1).any(|a| a == "--json");
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => return clap_failure(e, json_requested),
    };
    let ctx = Ctx::new(cli.store, cli.json);
    match dispatch(&ctx, cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(ctx.json),
    }
}

fn clap_failure(e: clap::Error, json: bool) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // --help and --version: their text on stdout, success.
            let mut out = io::stdout().lock();
            let _ = write!(out, "{}", e.render());
            let _ = out.flush();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand if !json => {
            // `cairn` or `cairn session` alone: the help, on stderr, as a usage error.
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => Failure::usage(clap_message(&e)).report(json),
    }
}

/// clap's error as one line: the error, its details, any tips, and where to find help.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut msg = lines
        .next()
        .unwrap_or("usage error")
        .trim_start_matches("error: ")
        .to_string();
    let mut details = Vec::new();
    let mut tips = String::new();
    let mut cmd = "cairn".to_string();
    for l in lines {
        if let Some(tip) = l.strip_prefix("tip: ") {
            tips.push_str(&format!(" ({tip})"));
        } else if let Some(u) = l.strip_prefix("Usage: ") {
            cmd = u
                .split_whitespace()
                .take_while(|w| !w.starts_with(['-', '[', '<']))
                .collect::<Vec<_>>()
                .join(" ");
        } else if !l.starts_with("For more information") {
            details.push(l);
        }
    }
    if !details.is_empty() {
        msg = format!("{msg} {}", details.join(", "));
    }
    format!("{msg}{tips}; see `{cmd} --help`")
}

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
    fn report(self, json: bool) -> ExitCode {
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

impl From<cairn::Error> for Failure {
    fn from(e: cairn::Error) -> Self {
        use cairn::Error as E;
        let exit = match &e {
            E::SessionNotFound { .. }
            | E::ArtifactNotFound { .. }
            | E::CheckpointNotFound { .. }
            | E::ContentMissing { .. } => 3,
            E::InvalidTransition { .. }
            | E::KeyConflict { .. }
            | E::AlreadyExists { .. }
            | E::HasChildren { .. }
            | E::SessionClosed { .. } => 4,
            E::LimitExceeded { .. } | E::InvalidInput { .. } | E::InvalidGlob { .. } => 5,
            _ => 1,
        };
        Failure {
            code: e.code().to_string(),
            message: e.to_string(),
            exit,
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
            store: OnceCell::new(),
        }
    }

    /// The store, opened (and created if missing) on first use: for commands that write.
    pub fn store(&self) -> CliResult<&Store> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        let s = Store::open(&self.store_path)?;
        Ok(self.store.get_or_init(|| s))
    }

    /// The store, which must already exist: for commands that only read, so that a mistyped
    /// `--store` is reported instead of silently creating an empty store.
    pub fn existing_store(&self) -> CliResult<&Store> {
        let missing_or_empty = match std::fs::read_dir(&self.store_path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
        if self.store.get().is_none() && missing_or_empty {
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
        self.store()
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_structure_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn errors_map_to_exit_codes() {
        let sid = cairn::SessionId::new();
        let f: Failure = cairn::Error::SessionNotFound {
            id: sid.to_string(),
        }
        .into();
        assert_eq!((f.exit, f.code.as_str()), (3, "session_not_found"));
        let f: Failure = cairn::Error::InvalidTransition {
            id: sid,
            from: cairn::SessionStatus::Completed,
            to: cairn::SessionStatus::Active,
        }
        .into();
        assert_eq!(f.exit, 4);
        let f: Failure = cairn::Error::InvalidGlob {
            pattern: "[".into(),
            message: "unclosed".into(),
        }
        .into();
        assert_eq!(f.exit, 5);
        let f: Failure = cairn::Error::Other {
            message: "x".into(),
        }
        .into();
        assert_eq!(f.exit, 1);
        assert_eq!(
            Failure::stdout(io::Error::from(io::ErrorKind::BrokenPipe)).exit,
            0
        );
    }
}
