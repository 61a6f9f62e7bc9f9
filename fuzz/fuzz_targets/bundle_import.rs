//! Feeds arbitrary bytes to the bundle reader and to an import into an in-memory store.
//! Run with `cargo +nightly fuzz run bundle_import` from the repository root.
//!
//! Invariants checked beyond "does not panic": an import either succeeds or leaves the store
//! exactly empty (all or nothing), and whatever import accepts `inspect` accepts too.
#![no_main]

use cairn::bundle;
use cairn::{ImportOptions, Store};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let inspected = bundle::inspect(data);
    let store = Store::memory();
    match store.import_bundle(data, &ImportOptions::new()) {
        Ok(report) => {
            let summary = inspected.expect("import accepted a bundle that inspect rejects");
            assert_eq!(report.hash, summary.hash);
            let stats = store.stats().expect("stats");
            assert_eq!(stats.sessions, summary.sessions.len() as u64);
            // A second import of the same bundle conflicts and changes nothing.
            assert!(store.import_bundle(data, &ImportOptions::new()).is_err());
            assert_eq!(store.stats().expect("stats"), stats);
        }
        Err(_) => {
            let stats = store.stats().expect("stats");
            assert_eq!((stats.sessions, stats.artifacts, stats.blobs), (0, 0, 0));
        }
    }
});
