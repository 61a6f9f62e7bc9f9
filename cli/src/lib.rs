//! The command line front end: clap structure, global flags, output mode, error mapping.
//!
//! Layout: one file per noun (`session.rs`, `artifact.rs`, `admin.rs` for store-wide commands,
//! `demo.rs`), shared argument parsing in `args.rs`, people-facing formatting in `output.rs`,
//! the stderr progress bar in `progress.rs`, the context and failure type every command uses in
//! `context.rs`, atomic file writes in `atomic.rs`, and the HTTP client of remote mode
//! (`--server URL`: every command talks to `cairn serve` instead of a store) in `remote.rs`.
//!
//! Imports go one way: this file (the clap structure and dispatch) uses the command modules;
//! command modules use shared leaves (`context`, `output`, `args`, `atomic`, `progress`,
//! `session_view`) and at most other command modules that never use them back; no module
//! imports this file. A unit test checks that the module graph has no cycle.
//!
//! Adding a subcommand: add one variant to the noun's enum (with its `Args` struct) and one
//! function in the same file, called from the noun's `run`. A new noun is one variant of
//! [`Command`] plus a `match` arm in `dispatch`.
//!
//! Exit codes: 0 success (also when stdout is a closed pipe), 2 usage error, 3 not found,
//! 4 invalid state transition or conflict, 5 limit exceeded or invalid input, 1 anything else.

pub mod admin;
pub mod args;
pub mod artifact;
pub mod atomic;
pub mod bench;
pub mod checkpoint;
pub mod cleanup;
pub mod context;
pub mod demo;
pub mod memo;
pub mod output;
pub mod progress;
pub mod read;
pub mod remote;
pub mod serve;
pub mod session;
pub mod session_ops;
pub mod session_view;

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub use self::context::{note, CliResult, Ctx, Failure, DEFAULT_STORE};

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
    /// The store folder (created on first write) [default: ./.cairn; for `demo`:
    /// ./.cairn-demo].
    #[arg(long, global = true, env = "CAIRN_STORE", value_name = "PATH")]
    pub store: Option<PathBuf>,

    /// Print exactly one JSON value on stdout (errors as {"error":{"code","message"}} on stderr).
    #[arg(long, global = true)]
    pub json: bool,

    /// The storage engine of a store this command creates [default: the default engine, see
    /// README]. An existing store always keeps the engine it was made with.
    #[arg(long, global = true, env = "CAIRN_ENGINE", value_name = "ENGINE",
          value_parser = ["sled", "redb", "fjall"])]
    pub engine: Option<String>,

    /// Talk to a `cairn serve` server at this URL (e.g. http://127.0.0.1:7070) instead of
    /// opening a store: every command works the same, with the same output and exit codes. The
    /// bearer token is read from CAIRN_TOKEN.
    #[arg(long, global = true, env = "CAIRN_SERVER", value_name = "URL")]
    pub server: Option<String>,

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
    /// Serve stores over HTTP (REST API, bearer tokens, one store per tenant) until SIGTERM.
    /// Prints the URL it listens on as the first line.
    Serve(serve::ServeArgs),
    /// Bearer tokens for `cairn serve`: create (printed once), list, revoke.
    #[command(subcommand)]
    Token(serve::TokenCmd),
    /// Measure the standard workloads on one engine (memory, sled, redb) in scratch stores under
    /// --store (default ./.cairn-bench): throughput, latency and ratios to same-run baselines.
    Bench(bench::BenchArgs),
    /// Serve the store to AI agents over the Model Context Protocol on stdin/stdout (for an MCP
    /// client's configuration: `"command": "cairn", "args": ["mcp", "--store", "PATH"]`).
    Mcp(McpArgs),
    /// The tool-call memo: look up, store and forget results of tool calls by their arguments.
    #[command(subcommand)]
    Memo(memo::MemoCmd),
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
        Command::Serve(a) => serve::serve(ctx, a),
        Command::Token(c) => serve::token(ctx, c),
        Command::Mcp(a) => mcp(ctx, a),
        Command::Memo(c) => memo::run(ctx, c),
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
    let parsed = Cli::command()
        .try_get_matches_from(&argv)
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) => return clap_failure(e, json_requested),
    };
    let json = cli.json;
    let ctx = match context(
        cli.store,
        cli.json,
        cli.engine,
        cli.server.as_deref(),
        &matches,
    ) {
        Ok(c) => c,
        Err(f) => return f.report(json),
    };
    if ctx.remote().is_some() {
        if let Err(f) = local_only(&cli.command) {
            return f.report(json);
        }
    }
    match dispatch(&ctx, cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(ctx.json),
    }
}

/// Whether `id` was given on the command line itself (not from the environment or a default).
fn on_command_line(m: &clap::ArgMatches, id: &str) -> bool {
    m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
}

/// The context: a local store, or with `--server` (or CAIRN_SERVER) a client of that server with
/// CAIRN_TOKEN as its bearer token. `--store` and `--engine` on the command line contradict
/// `--server` and are refused; from the environment they are ignored in remote mode.
fn context(
    store: Option<PathBuf>,
    json: bool,
    engine: Option<String>,
    server: Option<&str>,
    m: &clap::ArgMatches,
) -> Result<Ctx, Failure> {
    let Some(url) = server.filter(|s| !s.trim().is_empty()) else {
        let mut ctx = Ctx::new(store, json);
        ctx.engine = engine.and_then(|e| e.parse().ok());
        return Ok(ctx);
    };
    for (flag, id) in [("--store", "store"), ("--engine", "engine")] {
        if on_command_line(m, id) {
            return Err(Failure::usage(format!(
                "{flag} names a local store, and --server (or CAIRN_SERVER) sends every command to a \
                 server; give one or the other"
            )));
        }
    }
    let token = std::env::var("CAIRN_TOKEN").ok();
    let mut ctx = Ctx::new(None, json);
    ctx.remote = Some(remote::Remote::new(url, token)?);
    Ok(ctx)
}

/// Refuses, in remote mode, the commands that run on the local machine by nature.
fn local_only(command: &Command) -> CliResult {
    let why = match command {
        Command::Serve(_) => "`cairn serve` is the server itself; run it without --server",
        Command::Token(_) => {
            "`cairn token` edits the server's token file; run it on the server's machine, \
             with --data and without --server"
        }
        Command::Demo(_) => "`cairn demo` plays into a local demo store; run it without --server",
        Command::Bench(_) => {
            "`cairn bench` measures the local engines in scratch stores; run it without --server"
        }
        Command::Mcp(_) => {
            "`cairn mcp` serves a local store to an MCP client; run it without --server"
        }
        _ => return Ok(()),
    };
    Err(Failure::usage(format!(
        "{why} (--server or CAIRN_SERVER is set)"
    )))
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn server_error_codes_exit_like_local_ones() {
        let f = |code: &str| -> Failure {
            remote::RemoteError {
                code: code.into(),
                message: "m".into(),
                status: Some(400),
            }
            .into()
        };
        for (code, exit) in [
            ("session_not_found", 3),
            ("artifact_not_found", 3),
            ("not_found", 3),
            ("has_children", 4),
            ("invalid_transition", 4),
            ("invalid_input", 5),
            ("limit_exceeded", 5),
            ("hash_mismatch", 5),
            ("unauthorized", 1),
            ("forbidden", 1),
            ("server_unreachable", 1),
            ("usage", 2),
        ] {
            assert_eq!(f(code).exit, exit, "{code}");
            assert_eq!(f(code).code, code);
        }
        // The library's errors go through the same table.
        let lib: Failure = cairn::Error::HasChildren {
            id: cairn::SessionId::new(),
            children: 1,
        }
        .into();
        assert_eq!(lib.exit, context::exit_code_of("has_children"));
    }

    #[test]
    fn remote_mode_refuses_local_commands_and_flags() {
        let argv = |a: &[&str]| -> Vec<OsString> {
            std::iter::once("cairn")
                .chain(a.iter().copied())
                .map(OsString::from)
                .collect()
        };
        let url = "http://127.0.0.1:9";
        for a in [
            vec!["--server", url, "demo"],
            vec!["--server", url, "serve"],
            vec!["--server", url, "token", "list"],
            vec!["--server", url, "mcp"],
            vec!["--server", url, "--store", "x", "stats"],
            vec!["--server", url, "--engine", "redb", "stats"],
            vec!["--server", "ftp://x", "stats"],
        ] {
            assert_eq!(run_args(argv(&a)), ExitCode::from(2), "{a:?}");
        }
    }

    /// The modules of this crate that `text` refers to (`super::NAME` or `crate::NAME`, outside
    /// comments), and whether it refers to the crate root's own items (`super::{..}`,
    /// `super::Ctx`, ...).
    fn references(text: &str, modules: &[String]) -> (Vec<String>, bool) {
        let mut found = Vec::new();
        let mut root = false;
        // A unit-test module (`mod tests`, last in a file) uses `super::` for its own file.
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for prefix in ["super::", "crate::"] {
                for (i, _) in code.match_indices(prefix) {
                    let rest = &code[i + prefix.len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if modules.contains(&name) {
                        found.push(name);
                    } else if name != "super" {
                        root = true;
                    }
                }
            }
        }
        found.sort();
        found.dedup();
        (found, root)
    }

    /// Regression (issue 10): `session.rs` and `session_ops.rs` imported each other, and every
    /// module imported the crate root that imports them. The module graph must stay acyclic.
    #[test]
    fn modules_import_one_way() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .map(|p| {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&p).unwrap())
            })
            .filter(|(n, _)| n != "lib" && n != "main")
            .collect();
        files.sort();
        let modules: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
        assert!(modules.contains(&"session_ops".to_string()), "{modules:?}");
        let mut edges: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (name, text) in &files {
            let (refs, root) = references(text, &modules);
            assert!(
                !root,
                "{name}.rs imports the crate root; import the module instead"
            );
            edges.insert(
                name.clone(),
                refs.into_iter().filter(|r| r != name).collect(),
            );
        }
        // Depth-first search; a module met again while on the stack closes a cycle.
        fn visit(
            m: &str,
            edges: &std::collections::BTreeMap<String, Vec<String>>,
            stack: &mut Vec<String>,
            done: &mut std::collections::BTreeSet<String>,
        ) {
            if done.contains(m) {
                return;
            }
            if let Some(at) = stack.iter().position(|s| s == m) {
                panic!("import cycle: {} -> {m}", stack[at..].join(" -> "));
            }
            stack.push(m.to_string());
            for next in &edges[m] {
                visit(next, edges, stack, done);
            }
            stack.pop();
            done.insert(m.to_string());
        }
        let mut done = Default::default();
        for m in edges.keys() {
            visit(m, &edges, &mut Vec::new(), &mut done);
        }
        // The check sees the edges it must: session uses session_ops and session_view.
        assert!(edges["session"].contains(&"session_ops".to_string()));
        assert!(edges["session_ops"].contains(&"session_view".to_string()));
        assert!(!edges["session_ops"].contains(&"session".to_string()));
    }
}
