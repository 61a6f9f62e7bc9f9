//! Measures bundle export and import against the store's own put and read of the same content,
//! in the same run, on real agent runs (the shared corpus, else `fixtures/agent-runs/`), each file
//! stored `CAIRN_BENCH_COPIES` times under a distinct prefix (default 20) with a one-byte suffix
//! so that content is distinct, plus one 64 MiB log-like artifact for the streaming path.
//!
//! Run: `cargo bench --bench bundle`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cairn::{ArtifactKind, Config, ImportOptions, NewArtifact, NewSession, Store};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

struct Gen {
    left: u64,
    x: u64,
}

impl Read for Gen {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for b in &mut buf[..n] {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            *b = if self.x & 1 == 0 {
                b'a'
            } else {
                (self.x >> 24) as u8
            };
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn mib_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    files(&root.join("../shared/corpus"), &mut paths);
    if paths.is_empty() {
        files(&root.join("fixtures/agent-runs"), &mut paths);
    }
    paths.sort();
    let copies: usize = std::env::var("CAIRN_BENCH_COPIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let contents: Vec<(String, Vec<u8>)> = paths
        .iter()
        .filter_map(|p| {
            Some((
                p.strip_prefix(root).unwrap_or(p).display().to_string(),
                std::fs::read(p).ok()?,
            ))
        })
        .collect();

    let dir = tempfile::tempdir().expect("tempdir");
    let src = Store::open_with(dir.path().join("src"), Config::default()).expect("open");
    let sess = src
        .create_session(NewSession::new().name("bench"))
        .expect("session");

    // Baseline: the store's own batched put of the same content.
    let mut items = Vec::new();
    let mut logical = 0u64;
    for c in 0..copies {
        for (name, bytes) in &contents {
            let mut b = bytes.clone();
            b.push(c as u8);
            logical += b.len() as u64;
            items.push((
                sess.id,
                NewArtifact::new(ArtifactKind::ToolResult, format!("{c}/{name}")),
                b,
            ));
        }
    }
    let n = items.len();
    let t = Instant::now();
    for chunk in items.chunks(500) {
        src.put_batch(chunk.to_vec()).expect("put");
    }
    let put_s = t.elapsed().as_secs_f64();

    let bundle = dir.path().join("b.cairnb");
    let t = Instant::now();
    let ex = src
        .export_session_to_path(sess.id, false, &bundle)
        .expect("export");
    let export_s = t.elapsed().as_secs_f64();

    let dst = Store::open_with(dir.path().join("dst"), Config::default()).expect("open");
    let t = Instant::now();
    dst.import_bundle_from_path(&bundle, &ImportOptions::new())
        .expect("import");
    let import_s = t.elapsed().as_secs_f64();

    // Baseline for reading: every artifact read back, verified.
    let t = Instant::now();
    let mut read = 0u64;
    let mut cursor = None;
    loop {
        let page = src
            .list_artifacts(sess.id, false, 1000, cursor.as_deref())
            .expect("list");
        for a in &page.items {
            read += src.read(sess.id, a.id).expect("read").len() as u64;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let read_s = t.elapsed().as_secs_f64();
    assert_eq!(read, logical);

    println!(
        "corpus: {n} artifacts, {:.1} MiB of content",
        logical as f64 / (1 << 20) as f64
    );
    println!(
        "  put_batch      {:7.1} MiB/s (baseline)",
        mib_s(logical, put_s)
    );
    println!(
        "  read           {:7.1} MiB/s (baseline)",
        mib_s(logical, read_s)
    );
    println!(
        "  export         {:7.1} MiB/s = {:.2}x read; bundle {:.1} MiB ({:.2}x smaller than the content)",
        mib_s(logical, export_s),
        read_s / export_s,
        ex.bundle_bytes as f64 / (1 << 20) as f64,
        logical as f64 / ex.bundle_bytes as f64
    );
    println!(
        "  import         {:7.1} MiB/s = {:.2}x put_batch",
        mib_s(logical, import_s),
        put_s / import_s
    );

    // One large artifact: the streaming path.
    const BIG: u64 = 64 << 20;
    let big = src
        .create_session(NewSession::new().name("big"))
        .expect("session");
    let t = Instant::now();
    src.put_reader(
        big.id,
        NewArtifact::new(ArtifactKind::ToolResult, "big.log"),
        Gen { left: BIG, x: 7 },
    )
    .expect("put");
    let put_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let ex = src
        .export_session_to_path(big.id, false, &bundle)
        .expect("export");
    let export_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    dst.import_bundle_from_path(&bundle, &ImportOptions::new())
        .expect("import");
    let import_s = t.elapsed().as_secs_f64();
    println!("one 64 MiB artifact:");
    println!(
        "  put_reader     {:7.1} MiB/s (baseline)",
        mib_s(BIG, put_s)
    );
    println!(
        "  export         {:7.1} MiB/s, bundle {:.1} MiB",
        mib_s(BIG, export_s),
        ex.bundle_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "  import         {:7.1} MiB/s = {:.2}x put_reader",
        mib_s(BIG, import_s),
        put_s / import_s
    );
}
