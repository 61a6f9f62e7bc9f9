//! Measures where inline blobs (in the engine) stop paying against blob files, to choose
//! `Config::inline_threshold`. For each size: put and read N distinct random blobs with everything
//! inline, then with everything in files, in the same process run; prints the ratio.
//!
//! Run: `cargo bench --bench inline_threshold` (CAIRN_BENCH_N sets the count per size).

use std::time::Instant;

use cairn::{ArtifactKind, Config, NewArtifact, NewSession, Store};

fn random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn run(inline_threshold: u64, size: usize, n: usize) -> (f64, f64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config::default()
        .inline_threshold(inline_threshold)
        .compression_threshold(Config::NEVER_COMPRESS);
    let store = Store::open_with(dir.path().join("s"), cfg).expect("open");
    let s = store.create_session(NewSession::new()).expect("session");
    let blobs: Vec<Vec<u8>> = (0..n).map(|i| random(size, i as u64 + 1)).collect();
    let t = Instant::now();
    let ids: Vec<_> = blobs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            store
                .put(
                    s.id,
                    NewArtifact::new(ArtifactKind::ToolResult, format!("b{i}")),
                    b,
                )
                .expect("put")
                .id
        })
        .collect();
    let put = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for id in &ids {
        let b = store.read(s.id, *id).expect("read");
        assert_eq!(b.len(), size);
    }
    let read = t.elapsed().as_secs_f64();
    store.flush().expect("flush");
    drop(store);
    let disk = dir_size(dir.path());
    (n as f64 / put, n as f64 / read, disk)
}

fn dir_size(p: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().expect("metadata");
            total += if m.is_dir() {
                dir_size(&e.path())
            } else {
                m.len()
            };
        }
    }
    total
}

fn main() {
    let n: usize = std::env::var("CAIRN_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    println!("size      inline put/s  file put/s  ratio | inline read/s  file read/s  ratio | disk inline/file");
    for size in [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20] {
        let (ip, ir, id) = run(16 << 20, size, n);
        let (fp, fr, fd) = run(0, size, n);
        println!(
            "{:>7}  {:>12.0} {:>11.0} {:>6.2} | {:>13.0} {:>12.0} {:>6.2} | {:.2}",
            size,
            ip,
            fp,
            ip / fp,
            ir,
            fr,
            ir / fr,
            id as f64 / fd as f64
        );
    }
}
