//! The benchmark workloads run end to end at tiny sizes on every backend: each produces its
//! figures with same-run baselines, and the correctness checks inside them (every query returns
//! exactly its 100 needles, dedup stores one blob, streamed size matches) hold. No timing is asserted.
use crate::common;

use cairn_bench::{parse_workloads, Bench, BenchOptions, Workload};

#[test]
fn every_workload_runs_on_every_backend_at_tiny_sizes() {
    for kind in common::backends() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = BenchOptions::tiny();
        opts.corpus = Some(common::fixtures_dir().join("agent-runs"));
        let mut bench = Bench::new(kind, dir.path(), opts);
        let figs = bench.run().unwrap();
        let name = bench.backend();
        for f in &figs {
            assert_eq!(f.backend, name);
            assert!(f.median.is_finite() && f.median > 0.0, "{f:?}");
            assert!(f.min <= f.median && f.median <= f.max, "{f:?}");
            for b in &f.baselines {
                assert!(b.median > 0.0 && b.ratio > 0.0, "{f:?}");
            }
        }
        let has = |w: &str| figs.iter().any(|f| f.workload.starts_with(w));
        for w in ["1 ", "2 ", "3 ", "4 ", "5 queries", "6 ", "8 ", "10 "] {
            assert!(has(w), "{name}: no figure for workload {w}");
        }
        // Five query kinds, each compared against the full scan.
        let queries = figs.iter().filter(|f| f.workload == "5 queries").count();
        assert_eq!(queries, 5, "{name}");
        if name != "memory" {
            assert!(
                has("7 ") && has("9 "),
                "{name}: space and open figures missing"
            );
        }
        // The corpus fixture has repeated content, so dedup finds something.
        let dedup = figs
            .iter()
            .find(|f| f.metric.starts_with("dedup ratio"))
            .unwrap();
        assert!(dedup.median >= 1.0, "{dedup:?}");
        // Stores are removed after each workload.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{name}");
        let table = cairn_bench::render_table(&figs);
        assert!(table.contains("full scan of every record"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&cairn_bench::to_json(&figs)).unwrap();
        assert_eq!(json.as_array().unwrap().len(), figs.len());
    }
}

#[test]
fn bad_options_are_refused_with_a_clear_message() {
    let e = parse_workloads("small,quick").unwrap_err();
    assert!(e.to_string().contains("quick"), "{e}");
    let mut o = BenchOptions::tiny();
    o.scale_count = 10;
    assert!(o.validate().unwrap_err().to_string().contains("scale"));
    let dir = tempfile::tempdir().unwrap();
    o.workloads = vec![Workload::Small];
    let e = Bench::new(cairn::BackendKind::Memory, dir.path(), o.clone())
        .run()
        .unwrap_err();
    assert!(e.to_string().contains("scale"), "{e}");
    o.scale_count = 2_000;
    let figs = Bench::new(cairn::BackendKind::Memory, dir.path(), o)
        .run()
        .unwrap();
    assert_eq!(figs.len(), 4);
    assert!(figs.iter().all(|f| f.workload == "1 small ingest"));
    // The record, its indexes, the blob and the event: several engine keys per artifact.
    let keys = figs
        .iter()
        .find(|f| f.metric == "engine keys written per artifact")
        .unwrap();
    assert!(keys.median > 5.0 && keys.median < 30.0, "{keys:?}");
    let put_batch = &figs[0];
    assert_eq!(put_batch.baselines.len(), 2, "{put_batch:?}");
}
