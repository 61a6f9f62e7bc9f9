//! Fuzz target `config_toml`: see `cairn::fuzzing::check_config_toml` for the input layout and the invariants.
//! Run with `cargo +nightly fuzz run config_toml` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn::fuzzing::check_config_toml(data));
