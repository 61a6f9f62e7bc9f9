//! The server's integration tests, one test binary (see `tests/library.rs` for why). Run one
//! file's tests with `cargo test --test server server_multi::`.
//! `server_stream.rs` stays its own binary: it measures the process's peak RSS.

mod common;
#[cfg(feature = "postgres")]
#[path = "../../tests/common/pg.rs"]
mod pg;
#[cfg(all(feature = "postgres", feature = "s3"))]
#[path = "../../tests/common/s3.rs"]
mod s3;

/// For `s3.rs`: the repository root, where `target/moto-venv` is.
#[cfg(all(feature = "postgres", feature = "s3"))]
fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::PathBuf::from)
        .unwrap_or_default()
}

mod server_api;
mod server_content;
mod server_crash;
mod server_limits;
mod server_mcp;
mod server_multi;
mod server_ops;
mod server_partial;
mod server_pg_restart;
mod server_postgres;
mod server_s3;
mod server_security;
mod server_shared;
mod server_shutdown;
mod server_sse;
mod server_webhooks;
mod server_webhooks_https;
mod server_webhooks_restart;
mod ui_pages;
