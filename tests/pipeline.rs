//! The pipeline story: validate, transform, analyze, report on a real sled store; the process is
//! SIGKILLed inside analyze; running again resumes at analyze with transform's output and does
//! not redo earlier steps.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cairn::*;
use serde_json::{json, Value};

const CHILD_ENV: &str = "CAIRN_PIPELINE_CHILD_DIR";
const TEST_NAME: &str = "pipeline_killed_during_analyze_resumes_there";

fn trajectory() -> Vec<u8> {
    std::fs::read(
        common::fixtures_dir()
            .join("agent-runs/organized/astropy__astropy-12907/raw_logs/trajectory.jsonl"),
    )
    .expect("fixture trajectory")
}

/// Appends `line` to the execution log and fsyncs it, so a SIGKILL cannot lose it.
fn record(log: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open log");
    writeln!(f, "{line}").expect("write log");
    f.sync_all().expect("sync log");
}

fn count(log: &Path, line: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == line)
        .count()
}

/// The four steps. With `block_in_analyze`, analyze writes that marker file and never returns.
fn pipeline<'s>(
    store: &'s Store,
    session: SessionId,
    log: &'s Path,
    block_in_analyze: Option<&'s Path>,
) -> Pipeline<'s> {
    Pipeline::new(store, session, "etl")
        .step("validate", move |ctx| {
            record(log, "validate");
            let raw = trajectory();
            let lines = raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
            for l in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                serde_json::from_slice::<Value>(l).map_err(|e| Error::Other {
                    message: format!("bad line: {e}"),
                })?;
            }
            let a = ctx.store().put(
                ctx.session(),
                NewArtifact::new(ArtifactKind::UserInput, "input/trajectory.jsonl"),
                &raw,
            )?;
            Ok(json!({ "lines": lines, "input": a.id }))
        })
        .step("transform", move |ctx| {
            record(log, "transform");
            let input: ArtifactId = serde_json::from_value(ctx.input()["input"].clone()).unwrap();
            let raw = ctx.store().read(ctx.session(), input)?;
            let actions: Vec<String> = raw
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| {
                    let v: Value = serde_json::from_slice(l).unwrap();
                    v["action"].as_str().unwrap_or("?").to_string()
                })
                .collect();
            let a = ctx.store().put(
                ctx.session(),
                NewArtifact::new(ArtifactKind::AgentOutput, "work/actions.json"),
                serde_json::to_vec(&actions).unwrap(),
            )?;
            Ok(json!({ "actions": a.id, "count": actions.len() }))
        })
        .step("analyze", move |ctx| {
            record(log, "analyze:start");
            if let Some(marker) = block_in_analyze {
                std::fs::write(marker, b"inside analyze").unwrap();
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            let actions: ArtifactId =
                serde_json::from_value(ctx.input()["actions"].clone()).unwrap();
            let list: Vec<String> =
                serde_json::from_slice(&ctx.store().read(ctx.session(), actions)?).unwrap();
            let mut hist = std::collections::BTreeMap::new();
            for a in &list {
                *hist.entry(a.clone()).or_insert(0u64) += 1;
            }
            record(log, "analyze:done");
            Ok(json!({ "input_seen": ctx.input().clone(), "histogram": hist }))
        })
        .step("report", move |ctx| {
            record(log, "report");
            let text = format!("analysis: {}", ctx.input()["histogram"]);
            let a = ctx.store().put(
                ctx.session(),
                NewArtifact::new(ArtifactKind::AgentOutput, "report.txt"),
                text.as_bytes(),
            )?;
            Ok(json!({ "report": a.id }))
        })
}

fn child_main(dir: PathBuf) {
    let store = Store::open(dir.join("store")).unwrap();
    let (s, _) = store
        .get_or_create_by_key("etl-run", NewSession::new().name("etl"))
        .unwrap();
    let log = dir.join("executions.log");
    let marker = dir.join("in-analyze");
    pipeline(&store, s.id, &log, Some(&marker))
        .run(json!({}))
        .unwrap();
    unreachable!("analyze blocks until the process is killed");
}

#[test]
fn pipeline_killed_during_analyze_resumes_there() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child_main(PathBuf::from(dir));
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let log = dir.join("executions.log");
    let marker = dir.join("in-analyze");

    // 1. A separate process runs the pipeline on a sled store and is killed inside analyze.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            &common::test_path(module_path!(), TEST_NAME),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A generous deadline so a broken child fails the test instead of hanging it.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("the child exited ({status}) before reaching analyze: {err}");
        }
        if Instant::now() >= deadline {
            panic!("the child never reached analyze (a hang guard, not a timing check)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished");
    assert_eq!(count(&log, "validate"), 1);
    assert_eq!(count(&log, "transform"), 1);
    assert_eq!(count(&log, "analyze:start"), 1);
    assert_eq!(count(&log, "analyze:done"), 0);

    // 2. Run again in this process: it resumes at analyze with transform's output.
    let store = Store::open(dir.join("store")).unwrap();
    let s = store
        .session_by_key("etl-run")
        .unwrap()
        .expect("session survived the kill");
    let done = store.checkpoints(s.id).unwrap();
    let labels: Vec<&str> = done.iter().map(|c| c.label.as_str()).collect();
    assert_eq!(labels, ["etl/validate", "etl/transform"]);
    let transform_output = done[1].state["output"].clone();
    assert_eq!(
        transform_output["count"],
        json!(trajectory()
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count())
    );

    let run = pipeline(&store, s.id, &log, None).run(json!({})).unwrap();
    assert_eq!(run.skipped, ["validate", "transform"]);
    assert_eq!(run.executed, ["analyze", "report"]);
    assert_eq!(run.checkpoints.len(), 4);
    assert_eq!(run.checkpoints[..2], [done[0].id, done[1].id]);

    // Earlier steps were not redone; analyze ran again (it never finished) and saw transform's output.
    assert_eq!(count(&log, "validate"), 1);
    assert_eq!(count(&log, "transform"), 1);
    assert_eq!(count(&log, "analyze:start"), 2);
    assert_eq!(count(&log, "analyze:done"), 1);
    assert_eq!(count(&log, "report"), 1);
    let analyze_cp = store.checkpoint(run.checkpoints[2]).unwrap();
    assert_eq!(analyze_cp.state["output"]["input_seen"], transform_output);
    let hist = &analyze_cp.state["output"]["histogram"];
    assert!(hist["initialization"].as_u64().unwrap() >= 1, "{hist}");

    // The store's own audit trail agrees: one start per step, two for analyze.
    let mut started = std::collections::BTreeMap::new();
    for e in store.events(s.id, None, 10_000).unwrap().items {
        if let EventKind::Custom { name, payload } = e.kind {
            if name == "pipeline.step_started" {
                *started
                    .entry(payload["step"].as_str().unwrap().to_string())
                    .or_insert(0) += 1;
            }
        }
    }
    assert_eq!(
        started,
        [
            ("analyze", 2),
            ("report", 1),
            ("transform", 1),
            ("validate", 1)
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    );
    // Exactly one version of every artifact: nothing was stored twice.
    for name in ["input/trajectory.jsonl", "work/actions.json", "report.txt"] {
        assert_eq!(store.versions(s.id, name).unwrap().len(), 1, "{name}");
    }
    let report_id: ArtifactId = serde_json::from_value(run.output["report"].clone()).unwrap();
    let text = String::from_utf8(store.read(s.id, report_id).unwrap()).unwrap();
    assert!(text.starts_with("analysis: {"), "{text}");

    // 3. A third run does nothing and returns the final output.
    let again = pipeline(&store, s.id, &log, None).run(json!({})).unwrap();
    assert!(again.executed.is_empty());
    assert_eq!(again.skipped.len(), 4);
    assert_eq!(again.output, run.output);
    assert_eq!(count(&log, "report"), 1);
}

#[test]
fn a_failed_step_saves_nothing_and_is_retried() {
    let store = Store::memory();
    let s = store.create_session(NewSession::new()).unwrap();
    let attempts = std::cell::Cell::new(0);
    let build = |fail: bool| {
        let attempts = &attempts;
        Pipeline::new(&store, s.id, "p")
            .step("one", |_| Ok(json!(1)))
            .step("two", move |ctx| {
                attempts.set(attempts.get() + 1);
                if fail {
                    Err(Error::Other {
                        message: "disk full".into(),
                    })
                } else {
                    Ok(json!(ctx.input().as_i64().unwrap() + 1))
                }
            })
    };
    let err = build(true).run(json!(null)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("\"two\"") && msg.contains("disk full"),
        "{msg}"
    );
    assert_eq!(store.checkpoints(s.id).unwrap().len(), 1);
    let run = build(false).run(json!(null)).unwrap();
    assert_eq!(run.skipped, ["one"]);
    assert_eq!(run.executed, ["two"]);
    assert_eq!(run.output, json!(2));
    assert_eq!(attempts.get(), 2);
}

#[test]
fn once_a_step_reruns_later_steps_rerun_too() {
    let store = Store::memory();
    let s = store.create_session(NewSession::new()).unwrap();
    let p = |store| {
        Pipeline::new(store, s.id, "p")
            .step("a", |ctx| Ok(json!(ctx.input().as_i64().unwrap() * 10)))
            .step("b", |ctx| Ok(json!(ctx.input().as_i64().unwrap() + 1)))
    };
    assert_eq!(p(&store).run(json!(1)).unwrap().output, json!(11));
    // Drop a's checkpoint: a reruns (with the new initial state) and so does b.
    let a = store.latest_checkpoint(s.id, Some("p/a")).unwrap().unwrap();
    store.delete_checkpoint(a.id).unwrap();
    let run = p(&store).run(json!(2)).unwrap();
    assert_eq!(run.executed, ["a", "b"]);
    assert_eq!(run.output, json!(21));
}

#[test]
fn large_step_outputs_go_to_binary_state() {
    let store = Store::memory();
    let s = store.create_session(NewSession::new()).unwrap();
    let big: Vec<String> = (0..20_000).map(|i| format!("row {i}")).collect();
    let big2 = big.clone();
    let run = Pipeline::new(&store, s.id, "p")
        .step("big", move |_| Ok(json!(big2.clone())))
        .run(json!(null))
        .unwrap();
    let cp = store.checkpoint(run.checkpoints[0]).unwrap();
    assert!(cp.state_blob.is_some(), "output over the JSON state limit");
    let again = Pipeline::new(&store, s.id, "p")
        .step("big", |_| panic!("must not rerun"))
        .run(json!(null))
        .unwrap();
    assert_eq!(again.output, json!(big));
}

#[test]
fn bad_pipelines_are_refused_before_running() {
    let store = Store::memory();
    let s = store.create_session(NewSession::new()).unwrap();
    let err = Pipeline::new(&store, s.id, "p")
        .step("x", |_| Ok(json!(1)))
        .step("x", |_| Ok(json!(2)))
        .run(json!(null))
        .unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
    let err = Pipeline::new(&store, s.id, "")
        .step("x", |_| Ok(json!(1)))
        .run(json!(null))
        .unwrap_err();
    assert_eq!(err.code(), "invalid_input");
    assert!(store.checkpoints(s.id).unwrap().is_empty());
    // A checkpoint with a pipeline's label but not written by it is reported, not misread.
    store
        .create_checkpoint(s.id, NewCheckpoint::new("q/x").state(json!({"other": 1})))
        .unwrap();
    let err = Pipeline::new(&store, s.id, "q")
        .step("x", |_| Ok(json!(1)))
        .run(json!(null))
        .unwrap_err();
    assert!(
        err.to_string().contains("not written by this pipeline"),
        "{err}"
    );
}
