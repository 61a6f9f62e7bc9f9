//! The cost of a selective query depends on the size of its result, not of the store.
//! Measured as work (index and record entries read through the backend), never as time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cairn::*;

/// Counts the entries the store reads through the engine.
struct Counting {
    inner: MemoryBackend,
    reads: Arc<AtomicU64>,
}

impl Backend for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.get(key)
    }
    fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        reverse: bool,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let v = self.inner.scan(start, end, reverse, limit)?;
        self.reads.fetch_add(v.len() as u64 + 1, Ordering::Relaxed);
        Ok(v)
    }
    fn apply(&self, ops: Vec<Op>) -> Result<()> {
        self.inner.apply(ops)
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    fn flush_is_fsync(&self) -> bool {
        false
    }
}

fn work_for(total: usize) -> Vec<(String, u64, usize)> {
    let reads = Arc::new(AtomicU64::new(0));
    let s = Store::with_backend(
        Box::new(Counting {
            inner: MemoryBackend::new(),
            reads: reads.clone(),
        }),
        Config::default(),
    )
    .unwrap();
    let root = s.create_session(NewSession::new()).unwrap();
    let rare_session = s.create_session(NewSession::new().parent(root.id)).unwrap();
    let bulk = s.create_session(NewSession::new().parent(root.id)).unwrap();
    let mut items = Vec::new();
    for i in 0..total {
        let rare = i % (total / 100) == 0; // exactly 100 rare artifacts, spread over time
        let (sess, kind, name, tag, size) = if rare {
            (
                rare_session.id,
                ArtifactKind::Custom("rare_kind".into()),
                format!("special/{i}.csv"),
                "rare",
                5000 + i % 7,
            )
        } else {
            (
                bulk.id,
                ArtifactKind::ToolResult,
                format!("out/{i}.json"),
                "common",
                100 + i % 50,
            )
        };
        items.push((
            sess,
            NewArtifact::new(kind, name).tag(tag),
            vec![b'x'; size],
        ));
        if items.len() == 5000 {
            s.put_batch(std::mem::take(&mut items)).unwrap();
        }
    }
    s.put_batch(items).unwrap();
    let queries: Vec<(&str, Query)> = vec![
        ("tag", Query::new().tag("rare")),
        (
            "kind in subtree",
            Query::new()
                .session(root.id)
                .subtree(true)
                .kind(ArtifactKind::Custom("rare_kind".into())),
        ),
        ("name glob suffix", Query::new().name_glob("*.csv")),
        ("name glob prefix", Query::new().name_glob("special/*")),
        ("size range", Query::new().min_size(5000).max_size(6000)),
        ("session", Query::new().session(rare_session.id)),
    ];
    queries
        .into_iter()
        .map(|(label, q)| {
            let before = reads.load(Ordering::Relaxed);
            let page = s.query(&q).unwrap();
            let work = reads.load(Ordering::Relaxed) - before;
            (label.to_string(), work, page.items.len())
        })
        .collect()
}

#[test]
fn selective_query_work_is_independent_of_store_size() {
    let small = work_for(5_000);
    let large = work_for(100_000);
    for ((label, w_small, n_small), (_, w_large, n_large)) in small.iter().zip(&large) {
        println!("{label}: {w_small} entries read at 5k artifacts, {w_large} at 100k");
        assert_eq!(*n_small, 100, "{label}");
        assert_eq!(*n_large, 100, "{label}");
        // 20x more artifacts must not mean (much) more work: a full scan would read 100,000+.
        assert!(
            *w_large < 2 * *w_small + 200,
            "{label}: {w_small} entries read at 5k, {w_large} at 100k"
        );
        assert!(
            *w_large < 3_000,
            "{label}: {w_large} entries read for 100 results out of 100,000"
        );
    }
}
