//! The command line's own tests run a second time in remote mode: `cli.rs`, `cli_ops.rs` and
//! `cli_partial.rs` (partial reads and the memo) are included as modules, and their shared harness (`common/cli.rs`) sees this target's name
//! and gives every `Env` its own `cairn serve` on an ephemeral 127.0.0.1 port, an admin
//! token, and `--server URL` instead of `--store`. The same bodies check that every command
//! prints the same output and exits with the same codes against a server. The few tests that
//! look at the store's files stay local (listed with their reasons in
//! `common/cli.rs`, `LOCAL_ONLY`).
#[path = "common/cli.rs"]
mod cli_env;
#[path = "../../tests/common/mod.rs"]
mod common;

#[path = "cli.rs"]
mod cli;
#[path = "cli_ops.rs"]
mod cli_ops;
#[path = "cli_partial.rs"]
mod cli_partial;
#[path = "common/remote_only.rs"]
mod remote_only;
