//! `cairn bench`: runs the workloads on a chosen engine, prints a table or JSON, and never runs
//! inside a folder it did not make.
use std::process::Command;

fn cairn() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cairn"))
}

#[test]
fn bench_prints_json_figures_for_each_engine() {
    let dir = tempfile::tempdir().unwrap();
    for engine in ["memory", "sled", "redb"] {
        let scratch = dir.path().join(engine);
        let out = cairn()
            .args([
                "bench",
                "--backend",
                engine,
                "--preset",
                "tiny",
                "--workloads",
                "small,read",
            ])
            .args(["--json", "--store"])
            .arg(&scratch)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let figs = v.as_array().unwrap();
        assert!(figs.len() >= 6, "{v}");
        assert!(figs.iter().all(|f| f["backend"] == engine), "{v}");
        assert!(figs.iter().any(|f| f["workload"] == "4 reads"), "{v}");
        assert!(
            figs.iter().all(|f| f["median"].as_f64().unwrap() > 0.0),
            "{v}"
        );
        // Scratch stores are removed; only the marker stays.
        let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }
    // The table form for people, and a second run in the same (marked) folder is accepted.
    let out = cairn()
        .args([
            "bench",
            "--backend",
            "memory",
            "--preset",
            "tiny",
            "--workloads",
            "small",
        ])
        .arg("--store")
        .arg(dir.path().join("memory"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("1 small ingest") && text.contains("raw memory insert"),
        "{text}"
    );
}

#[test]
fn bench_refuses_a_foreign_folder_and_bad_options() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious.txt"), b"keep me").unwrap();
    let out = cairn()
        .args([
            "bench",
            "--backend",
            "memory",
            "--preset",
            "tiny",
            "--store",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(
        std::fs::read(dir.path().join("precious.txt")).unwrap(),
        b"keep me"
    );

    let fresh = dir.path().join("new");
    for (args, word) in [
        (vec!["--backend", "lmdb"], "lmdb"),
        (vec!["--preset", "huge"], "huge"),
        (vec!["--workloads", "small,fast"], "fast"),
        (vec!["--scale", "10"], "scale"),
    ] {
        let out = cairn()
            .arg("bench")
            .args(&args)
            .arg("--store")
            .arg(&fresh)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(word), "{args:?}: {err}");
    }
}
