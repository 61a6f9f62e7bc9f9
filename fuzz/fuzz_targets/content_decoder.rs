//! Fuzz target `content_decoder`: see `cairn::fuzzing::check_content_decoder` for the input layout and the invariants.
//! Run with `cargo +nightly fuzz run content_decoder` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn::fuzzing::check_content_decoder(data));
