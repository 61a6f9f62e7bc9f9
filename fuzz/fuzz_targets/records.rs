//! Fuzz target `records`: see `cairn::fuzzing::check_records` for the input layout and the invariants.
//! Run with `cargo +nightly fuzz run records` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn::fuzzing::check_records(data));
