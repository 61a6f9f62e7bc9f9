//! The library's integration tests, one test binary (one link, one copy of the dependencies on
//! disk; CI ran out of disk with a binary per file). Each file is a module; run one with
//! `cargo test --test library crash::` (module path prefix). `tests/bundle.rs` stays its own
//! binary: it installs a counting global allocator.

mod common;

mod backend_conformance;
mod bad_input;
mod budgets;
mod checkpoints;
mod conformance;
mod corpus;
mod crash;
mod fixture_stores;
mod fork;
mod fuzz_corpus;
mod history;
mod integrity;
mod layers;
mod model;
mod partial;
mod persistence;
mod pipeline;
mod postgres;
mod power_loss;
mod query_cost;
mod retention;
mod s3;
mod subscriptions;
mod write_path;
