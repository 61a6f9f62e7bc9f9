//! The command line's tests, one test binary (see `tests/library.rs` for why). Run one file's
//! tests with `cargo test --test commands cli_ops::`. `cli_remote.rs` runs
//! `cli.rs`, `cli_ops.rs` and `cli_partial.rs` a second time against a server.

#[path = "common/cli.rs"]
mod cli_env;
#[path = "../../tests/common/mod.rs"]
mod common;

mod bench;
mod bundle_cli;
mod cli;
mod cli_bench;
mod cli_ops;
mod cli_partial;
mod cli_serve;
