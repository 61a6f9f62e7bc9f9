//! The command line's own tests run a second time in remote mode: `cli.rs`, `cli_ops.rs` and
//! `cli_partial.rs` (partial reads and the memo) are included as modules, and their shared harness (`common/cli.rs`) sees this target's name
//! and gives every `Env` its own `cairn serve` on an ephemeral 127.0.0.1 port, an admin
//! token, and `--server URL` instead of `--store`. The same bodies check that every command
//! prints the same output and exits with the same codes against a server. The few tests that
//! look at the store's files stay local (listed with their reasons in
//! `common/cli.rs`, `LOCAL_ONLY`).
// Each included file brings its own copy of the harness (and of the library's test helpers),
// as it does in its own target: loading them more than once is the point here.
#![allow(clippy::duplicate_mod)]

#[path = "cli.rs"]
mod cli;
#[path = "cli_ops.rs"]
mod cli_ops;
#[path = "cli_partial.rs"]
mod cli_partial;
#[path = "common/remote_only.rs"]
mod remote_only;
