//! Runs every fuzz target's check function over its committed seed corpus (`fuzz/corpus/<target>/`),
//! so CI exercises the targets without a fuzzer. Plus regression inputs for what fuzzing found.

use std::path::Path;

use cairn::fuzzing;

fn run_corpus(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| check(&bytes));
        assert!(result.is_ok(), "{target}: seed {} fails", path.display());
        n += 1;
    }
    n
}

#[test]
fn config_toml_corpus() {
    assert!(run_corpus("config_toml", fuzzing::check_config_toml) >= 10);
}

#[test]
fn records_corpus() {
    assert!(run_corpus("records", fuzzing::check_records) >= 40);
}

#[test]
fn content_decoder_corpus() {
    assert!(run_corpus("content_decoder", fuzzing::check_content_decoder) >= 10);
}

#[test]
fn bundle_import_corpus() {
    assert!(run_corpus("bundle_import", fuzzing::check_bundle_import) >= 2);
}

/// The committed seeds are what the generator produces now: every seed name it knows is there.
#[test]
fn seed_generator_and_corpus_agree() {
    for target in ["config_toml", "records", "content_decoder"] {
        for (name, bytes) in fuzzing::seeds(target) {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/corpus")
                .join(target)
                .join(&name);
            assert!(path.exists(), "missing seed {}", path.display());
            // Generated seeds pass their checks too (records seeds carry fresh ids).
            match target {
                "config_toml" => fuzzing::check_config_toml(&bytes),
                "records" => fuzzing::check_records(&bytes),
                _ => fuzzing::check_content_decoder(&bytes),
            }
        }
    }
}

/// Found by the `content_decoder` seeds: an artifact recorded as `u64::MAX` bytes overflowed the
/// verified reader's "one byte more" arithmetic (a panic in debug builds), and `read_range` with a
/// huge recorded size allocated the whole range up front (an abort). Both are now integrity errors.
#[test]
fn regression_huge_recorded_size() {
    let input = |flags: u8, size: u64, payload: &[u8]| {
        let mut v = vec![flags];
        v.extend_from_slice(&[0u8; 32]);
        v.extend_from_slice(&size.to_be_bytes());
        v.extend_from_slice(payload);
        v
    };
    // Raw codec, the payload's real hash, a recorded size of u64::MAX and of 2^62.
    fuzzing::check_content_decoder(&input(2 | 4, u64::MAX, b"hello"));
    fuzzing::check_content_decoder(&input(2 | 4, 1 << 62, b"hello"));
}
