//! Feeds arbitrary bytes to the bundle reader and to an import into an in-memory store.
//! Run with `cargo +nightly fuzz run bundle_import` from the repository root.
//!
//! Invariants checked beyond "does not panic" (see `cairn::fuzzing::check_bundle_import`): an
//! import either succeeds or leaves the store exactly empty (all or nothing), whatever import
//! accepts `inspect` accepts too, and an accepted import passes `verify`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn::fuzzing::check_bundle_import(data));
