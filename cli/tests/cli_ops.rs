//! The `cairn` binary's commands for checkpoints, fork, timeline, conversation history,
//! session statistics, cleanup (retention) and verify/repair, run for real against temporary
//! sled stores, in both output modes, with their error cases.

use crate::cli_env;
use crate::common;

use cli_env::{failure, one_json, parse_one, s, Env};

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Helpers of these tests on top of the shared `Env`.
trait EnvExt {
    fn session(&self, extra: &[&str]) -> String;
    fn put(&self, sid: &str, name: &str, kind: &str, content: &[u8]) -> Value;
}

impl EnvExt for Env {
    fn session(&self, extra: &[&str]) -> String {
        let mut a = vec!["session", "create"];
        a.extend_from_slice(extra);
        s(&self.json(&a), "id").to_string()
    }

    /// Puts `content` as artifact `name` (kind `kind`) into `sid`; returns the artifact JSON.
    fn put(&self, sid: &str, name: &str, kind: &str, content: &[u8]) -> Value {
        let args = [
            "--json", "artifact", "put", sid, "-", "--name", name, "--kind", kind,
        ];
        one_json(&self.run_stdin(&args, content), &args)
    }
}

fn ids(items: &Value, k: &str) -> Vec<String> {
    items
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {items}"))
        .iter()
        .map(|i| s(i, k).to_string())
        .collect()
}

/// Names of the artifacts listed in `sid`, sorted.
fn names(env: &Env, sid: &str) -> Vec<String> {
    let page = env.json(&["artifact", "list", sid]);
    let mut n = ids(&page["items"], "name");
    n.sort();
    n
}

// ------------------------------------------------------------------ checkpoints

#[test]
fn checkpoint_create_list_show_restore_round_trip() {
    let env = Env::new();
    let sid = env.session(&["--name", "pipeline"]);
    let a = env.put(&sid, "validated.json", "tool_result", b"{\"rows\":10}");
    std::fs::write(env.path("state.json"), br#"{"step":"validate","rows":10}"#).unwrap();

    // A JSON state file becomes the JSON state.
    let state_path = env.path("state.json");
    let cp = env.json(&[
        "checkpoint",
        "create",
        &sid,
        "--label",
        "after-validate",
        "--state",
        state_path.to_str().unwrap(),
    ]);
    let cp_id = s(&cp, "id").to_string();
    assert_eq!(s(&cp, "session_id"), sid);
    assert_eq!(s(&cp, "label"), "after-validate");
    assert_eq!(cp["state"], json!({"step": "validate", "rows": 10}));
    assert_eq!(cp["state_blob"], Value::Null);
    assert_eq!(cp["artifact_count"], json!(1));

    // Any other bytes from stdin become the binary state, stored exactly.
    let binary: Vec<u8> = (0u8..=255).cycle().take(5000).collect();
    let args = [
        "--json",
        "checkpoint",
        "create",
        &sid,
        "--label",
        "binary",
        "--state",
        "-",
    ];
    let cp2 = one_json(&env.run_stdin(&args, &binary), &args);
    assert_eq!(cp2["state"], Value::Null);
    assert_eq!(cp2["state_blob"]["size"], json!(5000));
    let cp2_id = s(&cp2, "id").to_string();
    let out = env.path("state.bin");
    env.human(&["checkpoint", "state", &cp2_id, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), binary);
    // A binary state is not one JSON value: --json without --output refuses clearly.
    let (code, msg) = env.fails(&["checkpoint", "state", &cp2_id], 5);
    assert_eq!(code, "invalid_input");
    assert!(msg.contains("--output"), "{msg}");
    // A JSON state prints as JSON, in both modes.
    let st = env.json(&["checkpoint", "state", &cp_id]);
    assert_eq!(st, json!({"step": "validate", "rows": 10}));
    let st: Value = serde_json::from_str(&env.human(&["checkpoint", "state", &cp_id])).unwrap();
    assert_eq!(st["rows"], json!(10));
    // --binary keeps JSON bytes as bytes.
    let args = [
        "--json",
        "checkpoint",
        "create",
        &sid,
        "--label",
        "raw",
        "--state",
        "-",
        "--binary",
    ];
    let cp3 = one_json(&env.run_stdin(&args, b"[1,2,3]"), &args);
    assert_eq!(cp3["state"], Value::Null);
    assert_eq!(cp3["state_blob"]["size"], json!(7));

    // List: oldest first, both modes, paged.
    let page = env.json(&["checkpoint", "list", &sid]);
    assert_eq!(
        ids(&page["items"], "id"),
        vec![cp_id.clone(), cp2_id.clone(), s(&cp3, "id").to_string()]
    );
    assert_eq!(page["next_cursor"], Value::Null);
    let p1 = env.json(&["checkpoint", "list", &sid, "--limit", "2"]);
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let cursor = s(&p1, "next_cursor").to_string();
    let p2 = env.json(&[
        "checkpoint",
        "list",
        &sid,
        "--limit",
        "2",
        "--cursor",
        &cursor,
    ]);
    assert_eq!(ids(&p2["items"], "id"), vec![s(&cp3, "id").to_string()]);
    let text = env.human(&["checkpoint", "list", &sid]);
    assert!(text.starts_with("ID"), "{text}");
    assert!(
        text.contains("after-validate") && text.contains(&cp2_id),
        "{text}"
    );
    assert!(text.contains("4.9 KiB binary"), "{text}");

    // Show: the record and the artifact versions it captured.
    let shown = env.json(&["checkpoint", "show", &cp_id]);
    assert_eq!(s(&shown, "label"), "after-validate");
    assert_eq!(
        ids(&shown["artifacts"], "id"),
        vec![s(&a, "id").to_string()]
    );
    let text = env.human(&["checkpoint", "show", &cp_id]);
    assert!(
        text.contains("after-validate") && text.contains("validated.json"),
        "{text}"
    );

    // Change the session: delete what was there, add something new.
    let b = env.put(&sid, "transformed.json", "agent_output", b"{\"rows\":9}");
    env.json(&["artifact", "delete", s(&a, "id")]);
    assert_eq!(names(&env, &sid), vec!["transformed.json"]);

    // Restore: back to exactly the checkpoint's artifacts, with a backup checkpoint.
    let r = env.json(&["checkpoint", "restore", &cp_id]);
    assert_eq!(s(&r, "checkpoint"), cp_id);
    assert_eq!(r["removed"], json!([s(&b, "id")]));
    assert_eq!(r["reinstated"], json!([s(&a, "id")]));
    assert_eq!(names(&env, &sid), vec!["validated.json"]);
    let got = env.run(&["artifact", "get", s(&a, "id")]);
    assert_eq!(got.stdout, b"{\"rows\":10}");
    // Undo the restore with the backup (in human mode this time).
    let backup = s(&r, "backup").to_string();
    let text = env.human(&["checkpoint", "restore", &backup]);
    assert!(
        text.contains("removed 1 artifact(s), reinstated 1"),
        "{text}"
    );
    assert!(
        text.contains("undo with `cairn checkpoint restore"),
        "{text}"
    );
    assert_eq!(names(&env, &sid), vec!["transformed.json"]);

    // Delete a checkpoint: gone from list and show.
    let d = env.json(&["checkpoint", "delete", &cp2_id]);
    assert_eq!(s(&d, "id"), cp2_id);
    let (code, _) = env.fails(&["checkpoint", "show", &cp2_id], 3);
    assert_eq!(code, "checkpoint_not_found");
}

#[test]
fn checkpoint_errors_are_clear() {
    let env = Env::new();
    let sid = env.session(&[]);
    let unknown = "0190f5d0-0000-7000-8000-000000000000";
    for verb in ["show", "restore", "delete", "state"] {
        let (code, msg) = env.fails(&["checkpoint", verb, unknown], 3);
        assert_eq!(code, "checkpoint_not_found", "{verb}");
        assert!(msg.contains(unknown), "{msg}");
    }
    let e = env.human_fails(&["checkpoint", "show", unknown], 3);
    assert!(e.contains(unknown), "{e}");
    let (code, msg) = env.fails(&["checkpoint", "show", "not-an-id"], 5);
    assert_eq!(code, "invalid_input");
    assert!(msg.contains("checkpoint id"), "{msg}");
    let (_, msg) = env.fails(&["checkpoint", "create", &sid, "--label", ""], 5);
    assert!(msg.contains("label"), "{msg}");
    let (code, _) = env.fails(
        &[
            "checkpoint",
            "create",
            &sid,
            "--label",
            "x",
            "--state",
            "missing.json",
        ],
        3,
    );
    assert_eq!(code, "file_not_found");
    let (code, _) = env.fails(&["checkpoint", "create", unknown, "--label", "x"], 3);
    assert_eq!(code, "session_not_found");
    let (_, msg) = env.fails(&["checkpoint", "list", &sid, "--cursor", "zzz"], 5);
    assert!(msg.contains("cursor"), "{msg}");
    // Nothing was created by the failures.
    assert_eq!(env.json(&["checkpoint", "list", &sid])["items"], json!([]));
    assert_eq!(env.human(&["checkpoint", "list", &sid]), "no checkpoints\n");
}

#[test]
fn fork_at_a_checkpoint_is_isolated_from_its_source() {
    let env = Env::new();
    let sid = env.session(&["--name", "src"]);
    env.put(&sid, "a.txt", "agent_output", b"alpha");
    let cp = env.json(&["checkpoint", "create", &sid, "--label", "one"]);
    env.put(&sid, "b.txt", "agent_output", b"beta");

    let f = env.json(&[
        "session",
        "fork",
        &sid,
        "--checkpoint",
        s(&cp, "id"),
        "--name",
        "try-2",
    ]);
    let fid = s(&f, "id").to_string();
    assert_eq!(s(&f, "parent_id"), sid);
    assert_eq!(s(&f, "name"), "try-2");
    assert_eq!(names(&env, &fid), vec!["a.txt"]);
    // Writes on one side do not show on the other.
    env.put(&fid, "c.txt", "agent_output", b"gamma");
    assert_eq!(names(&env, &sid), vec!["a.txt", "b.txt"]);
    assert_eq!(names(&env, &fid), vec!["a.txt", "c.txt"]);
    // Fork at the state now, in human mode.
    let text = env.human(&["session", "fork", &sid]);
    assert!(text.contains("src") && text.contains(&sid), "{text}");
    // A checkpoint of another session is refused.
    let other = env.session(&[]);
    let (code, _) = env.fails(
        &["session", "fork", &other, "--checkpoint", s(&cp, "id")],
        5,
    );
    assert_eq!(code, "invalid_input");
}

// ------------------------------------------------------------------ timeline

#[test]
fn timeline_is_in_time_order_pages_and_covers_the_subtree() {
    let env = Env::new();
    let sid = env.session(&["--name", "root"]);
    env.put(&sid, "first.txt", "tool_result", b"one");
    env.json(&["checkpoint", "create", &sid, "--label", "cp"]);
    let child = env.session(&["--parent", &sid]);
    env.put(&child, "child.txt", "agent_output", b"two");
    env.put(&sid, "second.txt", "tool_result", b"three");

    let t = env.json(&["session", "timeline", &sid]);
    let items = t["items"].as_array().unwrap();
    let types: Vec<&str> = items.iter().map(|e| s(&e["event"], "type")).collect();
    assert_eq!(
        types,
        vec![
            "created",
            "artifact_stored",
            "checkpoint_created",
            "artifact_stored"
        ],
        "{t}"
    );
    let seqs: Vec<u64> = items
        .iter()
        .map(|e| e["event"]["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(s(&items[1]["artifact"], "name"), "first.txt");
    assert_eq!(s(&items[2]["checkpoint"], "label"), "cp");
    assert_eq!(s(&items[3]["artifact"], "name"), "second.txt");

    // The subtree interleaves the child's events, by time.
    let t = env.json(&["session", "timeline", &sid, "--subtree"]);
    let items = t["items"].as_array().unwrap().clone();
    let named: Vec<&str> = items
        .iter()
        .filter_map(|e| e["artifact"]["name"].as_str())
        .collect();
    assert_eq!(named, vec!["first.txt", "child.txt", "second.txt"]);
    let times: Vec<&str> = items.iter().map(|e| s(&e["event"], "at")).collect();
    let parsed: Vec<_> = times
        .iter()
        .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap())
        .collect();
    assert!(parsed.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // Pages of 2 give the same entries as one page.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut a = vec![
            "session",
            "timeline",
            sid.as_str(),
            "--subtree",
            "--limit",
            "2",
        ];
        if let Some(c) = &cursor {
            a.push("--after");
            a.push(c);
        }
        let page = env.json(&a);
        let got = page["items"].as_array().unwrap().clone();
        assert!(got.len() <= 2);
        paged.extend(got);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, items);

    let text = env.human(&["session", "timeline", &sid, "--subtree"]);
    assert!(
        text.contains("first.txt v1") && text.contains("child.txt"),
        "{text}"
    );
    assert!(
        text.contains(&child),
        "the SESSION column names the child: {text}"
    );
    let text = env.human(&["session", "timeline", &sid, "--limit", "1"]);
    assert!(text.contains("more entries: add --after"), "{text}");

    let (_, msg) = env.fails(&["session", "timeline", &sid, "--after", "bogus"], 5);
    assert!(msg.contains("--after"), "{msg}");
    let (_, msg) = env.fails(&["session", "timeline", &sid, "--limit", "0"], 5);
    assert!(msg.contains("--limit"), "{msg}");
}

// ------------------------------------------------------------------ conversation

#[test]
fn say_and_history_with_last() {
    let env = Env::new();
    let sid = env.session(&[]);
    let m1 = env.json(&["session", "say", &sid, "--role", "user", "What is 2+2?"]);
    assert_eq!(m1["seq"], json!(1));
    assert_eq!(s(&m1, "role"), "user");
    let args = [
        "--json",
        "session",
        "say",
        &sid,
        "--role",
        "assistant",
        "-",
        "--meta",
        "model=gpt-4o",
    ];
    let m2 = one_json(
        &env.run_stdin(&args, "It is 4.\nAnything else?".as_bytes()),
        &args,
    );
    assert_eq!(m2["seq"], json!(2));
    assert_eq!(m2["metadata"], json!({"model": "gpt-4o"}));
    let text = env.human(&["session", "say", &sid, "--role", "TOOL", "calc: 4"]);
    assert!(text.contains("message #3 (tool)"), "{text}");

    let h = env.json(&["session", "history", &sid]);
    let contents: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|m| s(m, "content"))
        .collect();
    assert_eq!(
        contents,
        vec!["What is 2+2?", "It is 4.\nAnything else?", "calc: 4"]
    );
    let roles: Vec<&str> = h.as_array().unwrap().iter().map(|m| s(m, "role")).collect();
    assert_eq!(roles, vec!["user", "assistant", "tool"]);

    let last2 = env.json(&["session", "history", &sid, "--last", "2"]);
    let seqs: Vec<u64> = last2
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![2, 3], "the last two, oldest first");
    let text = env.human(&["session", "history", &sid, "--last", "1"]);
    assert!(text.contains("tool: calc: 4"), "{text}");
    assert!(!text.contains("2+2"), "{text}");
    let text = env.human(&["session", "history", &sid]);
    assert!(text.contains("user: What is 2+2?"), "{text}");

    // Messages are artifacts of the role's kind.
    let q = env.json(&[
        "artifact",
        "query",
        "--session",
        &sid,
        "--kind",
        "user_input",
    ]);
    assert_eq!(q["items"].as_array().unwrap().len(), 1);

    // Errors: bad role, invalid UTF-8 on stdin, --last 0, a finished session.
    let (code, msg) = env.fails(&["session", "say", &sid, "--role", "robot", "hi"], 5);
    assert_eq!(code, "invalid_input");
    assert!(msg.contains("user, assistant, system or tool"), "{msg}");
    let args = ["--json", "session", "say", &sid, "--role", "user", "-"];
    let out = env.run_stdin(&args, &[0x66, 0xff, 0xfe]);
    let (_, msg) = failure(&out, &args, 5);
    assert!(msg.contains("UTF-8"), "{msg}");
    env.fails(&["session", "history", &sid, "--last", "0"], 5);
    env.json(&["session", "complete", &sid]);
    let (code, _) = env.fails(&["session", "say", &sid, "--role", "user", "more"], 4);
    assert_eq!(code, "session_closed");
    // Still three messages.
    assert_eq!(
        env.json(&["session", "history", &sid])
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let empty = env.session(&[]);
    assert_eq!(env.human(&["session", "history", &empty]), "no messages\n");
}

// ------------------------------------------------------------------ session stats

#[test]
fn session_stats_match_what_the_test_recorded() {
    let env = Env::new();
    let root = env.session(&["--tag", "batch", "--key", "run-a"]);
    let b = env.session(&["--tag", "batch", "--parent", &root]);
    let c = env.session(&["--tag", "batch", "--parent", &root]);
    let other = env.session(&["--tag", "other"]);

    // Counters have no command of their own: record them through the library, then close it
    // (sled holds a lock on the folder) before the binary runs again.
    {
        let store = cairn::Store::open(env.store()).unwrap();
        let id = |s: &str| s.parse::<cairn::SessionId>().unwrap();
        let per = [(&root, 10u64, 1u64, 3u64), (&b, 30, 3, 5), (&c, 60, 0, 1)];
        for (sid, requests, errors, iters) in per {
            store
                .record_metrics(
                    id(sid),
                    &cairn::MetricsDelta::new()
                        .requests(requests)
                        .errors(errors)
                        .input_tokens(requests * 100)
                        .output_tokens(requests * 10)
                        .tool_call("bash"),
                )
                .unwrap();
            for _ in 0..iters {
                store.increment_iterations(id(sid)).unwrap();
            }
        }
        store
            .record_metrics(id(&other), &cairn::MetricsDelta::new().requests(1000))
            .unwrap();
    }
    env.json(&["session", "complete", &root]);
    env.json(&["session", "complete", &b]);
    env.json(&["session", "fail", &c, "--reason", "tool crashed"]);

    let st = env.json(&["session", "stats", "--tag", "batch"]);
    assert_eq!(st["sessions"], json!(3));
    assert_eq!(st["by_status"]["completed"], json!(2));
    assert_eq!(st["by_status"]["failed"], json!(1));
    assert_eq!(st["by_status"]["active"], json!(0));
    assert_eq!(st["finished"], json!(3));
    assert!(
        (st["success_rate"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9,
        "{st}"
    );
    assert_eq!(st["requests"], json!(100));
    assert_eq!(st["errors"], json!(4));
    assert!(
        (st["error_rate"].as_f64().unwrap() - 0.04).abs() < 1e-9,
        "{st}"
    );
    assert_eq!(st["input_tokens"], json!(10_000));
    assert_eq!(st["output_tokens"], json!(1_000));
    assert_eq!(st["total_tokens"], json!(11_000));
    assert_eq!(st["tool_calls"], json!({"bash": 3}));
    assert_eq!(st["iterations"]["count"], json!(3));
    assert_eq!(st["iterations"]["sum"], json!(9));
    assert_eq!(st["iterations"]["min"], json!(1));
    assert_eq!(st["iterations"]["max"], json!(5));
    assert_eq!(st["iterations"]["p50"], json!(3));
    assert_eq!(st["duration_ms"]["count"], json!(3));

    // Every filter narrows as it says.
    assert_eq!(env.json(&["session", "stats"])["sessions"], json!(4));
    assert_eq!(env.json(&["session", "stats"])["requests"], json!(1100));
    assert_eq!(
        env.json(&["session", "stats", "--status", "failed"])["sessions"],
        json!(1)
    );
    let st = env.json(&[
        "session", "stats", "--status", "failed", "--status", "active",
    ]);
    assert_eq!(st["sessions"], json!(2));
    assert_eq!(st["success_rate"], json!(0.0));
    assert_eq!(
        env.json(&["session", "stats", "--key", "run-a"])["sessions"],
        json!(1)
    );
    assert_eq!(
        env.json(&["session", "stats", "--roots"])["sessions"],
        json!(2)
    );
    let st = env.json(&["session", "stats", "--parent", "key:run-a"]);
    assert_eq!(st["sessions"], json!(2));
    assert_eq!(st["requests"], json!(90));
    assert_eq!(
        env.json(&["session", "stats", "--since", "1h"])["sessions"],
        json!(4)
    );
    assert_eq!(
        env.json(&["session", "stats", "--until", "1h"])["sessions"],
        json!(0)
    );
    let none = env.json(&["session", "stats", "--tag", "nothing"]);
    assert_eq!(none["sessions"], json!(0));
    assert_eq!(none["success_rate"], Value::Null);
    assert_eq!(none["error_rate"], Value::Null);

    let text = env.human(&["session", "stats", "--tag", "batch"]);
    assert!(text.contains("3 (2 completed, 1 failed)"), "{text}");
    assert!(text.contains("66.7% of 3 finished"), "{text}");
    assert!(text.contains("4 of 100 request(s): 4.0%"), "{text}");
    assert!(text.contains("10000 in, 1000 out, 11000 total"), "{text}");
    assert!(text.contains("p50 3"), "{text}");
    assert!(text.contains("bash 3"), "{text}");

    let (_, msg) = env.fails(&["session", "stats", "--since", "yesterday"], 5);
    assert!(msg.contains("--since"), "{msg}");
    let (_, msg) = env.fails(&["session", "stats", "--since", "1h", "--until", "2h"], 5);
    assert!(msg.contains("before --until"), "{msg}");
    env.fails(&["session", "stats", "--status", "sleeping"], 5);
    let (code, _) = env.fails(
        &[
            "session",
            "stats",
            "--parent",
            "0190f5d0-0000-7000-8000-000000000000",
        ],
        3,
    );
    assert_eq!(code, "session_not_found");
    let out = env.run(&["--json", "session", "stats", "--roots", "--parent", &root]);
    assert_eq!(out.status.code(), Some(2));
}

// ------------------------------------------------------------------ cleanup

/// What `artifact list` shows for every session: (session id, sorted artifact ids).
fn inventory(env: &Env) -> Vec<(String, Vec<String>)> {
    let sessions = env.json(&["session", "list"]);
    let mut out = Vec::new();
    for sid in ids(&sessions["items"], "id") {
        let page = env.json(&["artifact", "list", &sid]);
        let mut a = ids(&page["items"], "id");
        a.sort();
        out.push((sid, a));
    }
    out
}

#[test]
fn cleanup_dry_run_changes_nothing_and_predicts_the_real_run() {
    let env = Env::new();
    let done = env.session(&["--name", "old-run", "--tag", "nightly"]);
    env.put(
        &done,
        "out.bin",
        "tool_result",
        &common::random_bytes(100_000, 1),
    );
    env.put(&done, "log.txt", "agent_output", b"finished fine");
    // A checkpoint holds references on the session's content and on its own binary state:
    // deleting the session releases those too, and the dry run must count them.
    let early = env.put(&done, "early.txt", "agent_output", b"replaced later");
    let args = [
        "--json",
        "checkpoint",
        "create",
        &done,
        "--label",
        "mid",
        "--state",
        "-",
    ];
    one_json(&env.run_stdin(&args, b"\x00binary state"), &args);
    env.json(&["artifact", "delete", s(&early, "id")]);
    env.json(&["session", "complete", &done]);
    let kept_done = env.session(&["--name", "kept", "--tag", "weekly"]);
    env.json(&["session", "fail", &kept_done]);
    let live = env.session(&["--name", "live"]);
    let mut report_ids = Vec::new();
    // (random_bytes ORs the seed with 1: even seeds keep the three versions distinct.)
    for i in 0..3u64 {
        let a = env.put(
            &live,
            "report.md",
            "agent_output",
            &common::random_bytes(3000, 20 + 2 * i),
        );
        report_ids.push(s(&a, "id").to_string());
    }
    let tool = env.put(&live, "tool.json", "tool_result", b"{\"ok\":true}");

    let before = inventory(&env);
    let stats_before = env.json(&["stats"]);
    let rules = [
        "--older-than",
        "0s",
        "--status",
        "completed",
        "--tag",
        "nightly",
        "--keep-versions",
        "1",
    ];
    let mut dry_args = vec!["cleanup", "--dry-run"];
    dry_args.extend_from_slice(&rules);
    let dry = env.json(&dry_args);
    assert_eq!(dry["dry_run"], json!(true));
    assert_eq!(inventory(&env), before, "a dry run changes nothing");
    assert_eq!(env.json(&["stats"]), stats_before);
    // What it predicts: the completed nightly session (2 artifacts), and the 2 older versions.
    assert_eq!(ids(&dry["sessions"], "id"), vec![done.clone()]);
    let mut old_versions = ids(&dry["artifacts"], "id");
    old_versions.sort();
    let mut want = report_ids[..2].to_vec();
    want.sort();
    assert_eq!(old_versions, want);
    assert_eq!(dry["artifacts_removed"], json!(4));
    assert_eq!(
        dry["logical_bytes_removed"],
        json!(100_000 + "finished fine".len() + 2 * 3000)
    );
    // 4 blobs of the artifacts removed, plus the deleted artifact's content and the binary
    // state that only the checkpoint still held.
    assert_eq!(dry["blobs_freed"], json!(6));
    assert!(dry["bytes_freed"].as_u64().unwrap() > 100_000, "{dry}");
    let text = env.human(&dry_args);
    assert!(
        text.contains("dry run: would remove 1 session(s) and 4 artifact(s)"),
        "{text}"
    );
    assert!(text.contains("run again without --dry-run"), "{text}");
    assert!(text.contains("keep_versions"), "{text}");
    assert_eq!(inventory(&env), before);

    let mut real_args = vec!["cleanup"];
    real_args.extend_from_slice(&rules);
    let real = env.json(&real_args);
    assert_eq!(real["dry_run"], json!(false));
    for k in [
        "sessions",
        "artifacts",
        "artifacts_removed",
        "logical_bytes_removed",
        "blobs_freed",
        "bytes_freed",
        "kept_pinned_sessions",
        "kept_pinned_artifacts",
    ] {
        assert_eq!(real[k], dry[k], "{k}: the dry run predicted the real run");
    }
    // The store agrees.
    let (code, _) = env.fails(&["session", "show", &done], 3);
    assert_eq!(code, "session_not_found");
    env.json(&["session", "show", &kept_done]);
    let mut left = ids(&env.json(&["artifact", "list", &live])["items"], "id");
    left.sort();
    let mut want = vec![report_ids[2].clone(), s(&tool, "id").to_string()];
    want.sort();
    assert_eq!(left, want);
    assert!(env.json(&["verify"])["ok"].as_bool().unwrap());

    // A kind's time to live, in human mode; then nothing is left to do.
    let text = env.human(&["cleanup", "--ttl", "tool_result=0s"]);
    assert!(
        text.contains("removed 0 session(s) and 1 artifact(s)"),
        "{text}"
    );
    assert_eq!(
        ids(&env.json(&["artifact", "list", &live])["items"], "id"),
        vec![report_ids[2].clone()]
    );
    let again = env.json(&["cleanup", "--keep-versions", "1", "--ttl", "tool_result=0s"]);
    assert_eq!(again["artifacts_removed"], json!(0));
    assert_eq!(again["sessions"], json!([]));
    // A generous age removes nothing.
    let none = env.json(&["cleanup", "--older-than", "30d"]);
    assert_eq!(none["sessions"], json!([]));
}

#[test]
fn cleanup_rejects_bad_rules_before_touching_the_store() {
    let env = Env::new();
    let sid = env.session(&[]);
    env.json(&["session", "complete", &sid]);
    let cases: &[(&[&str], &str)] = &[
        (&["cleanup"], "no rule"),
        (&["cleanup", "--older-than", "30"], "--older-than"),
        (&["cleanup", "--older-than", "soon"], "--older-than"),
        (&["cleanup", "--older-than=-1d"], "--older-than"),
        (&["cleanup", "--ttl", "tool_result"], "KIND=AGE"),
        (&["cleanup", "--ttl", "tool_result=3y"], "--ttl"),
        (&["cleanup", "--ttl", "Bad Kind=1d"], "--ttl"),
        (&["cleanup", "--status", "completed"], "--older-than"),
        (
            &["cleanup", "--older-than", "0s", "--status", "active"],
            "terminal",
        ),
        (&["cleanup", "--keep-versions", "0"], "--keep-versions"),
    ];
    for (args, want) in cases {
        let (code, msg) = env.fails(args, 5);
        assert_eq!(code, "invalid_input", "{args:?}");
        assert!(msg.contains(want), "{args:?}: {msg}");
    }
    let e = env.human_fails(&["cleanup", "--older-than", "30"], 5);
    assert!(e.contains("30d"), "the message shows a valid form: {e}");
    // Nothing was removed by any of them.
    env.json(&["session", "show", &sid]);
}

/// Regression (issue 10): `checkpoint state -o FILE` wrote `FILE` with its extension replaced
/// by `cairn-partial` (a fixed name: a user's `state.cairn-partial` was overwritten, then renamed
/// away) and never synced it. Now: a unique temporary name, fsync, rename, nothing else touched.
#[test]
fn checkpoint_state_to_a_file_replaces_only_that_file() {
    let env = Env::new();
    let sid = env.session(&[]);
    let args = [
        "--json",
        "checkpoint",
        "create",
        &sid,
        "--label",
        "step-3",
        "--state",
        "-",
    ];
    let cp = one_json(&env.run_stdin(&args, br#"{"step":3}"#), &args);
    let cp_id = s(&cp, "id").to_string();
    let dir = env.path("out");
    std::fs::create_dir_all(&dir).unwrap();
    let dest = dir.join("state.json");
    std::fs::write(&dest, b"old state").unwrap();
    std::fs::write(dir.join("state.cairn-partial"), b"the user's own file").unwrap();

    let text = env.run(&["checkpoint", "state", &cp_id, "-o", dest.to_str().unwrap()]);
    assert!(
        text.status.success(),
        "{}",
        String::from_utf8_lossy(&text.stderr)
    );
    let got: Value = serde_json::from_slice(&std::fs::read(&dest).unwrap()).unwrap();
    assert_eq!(got, json!({"step": 3}));
    let v = env.json(&["checkpoint", "state", &cp_id, "-o", dest.to_str().unwrap()]);
    assert_eq!(v["path"], json!(dest.to_str().unwrap()));
    assert_eq!(
        std::fs::read(dir.join("state.cairn-partial")).unwrap(),
        b"the user's own file"
    );
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["state.cairn-partial", "state.json"],
        "no temporary file left"
    );

    // A folder that does not exist: a clear I/O error naming it, nothing created.
    let missing = dir.join("no-such-folder").join("state.json");
    let (code, msg) = env.fails(
        &[
            "checkpoint",
            "state",
            &cp_id,
            "-o",
            missing.to_str().unwrap(),
        ],
        1,
    );
    assert_eq!(code, "io");
    assert!(msg.contains("no-such-folder"), "{msg}");
    assert!(!dir.join("no-such-folder").exists());
}

// ------------------------------------------------------------------ verify and repair

fn blob_files(store: &Path) -> Vec<PathBuf> {
    common::files_under(&store.join("blobs"))
        .into_iter()
        .map(|(_, p)| p)
        .collect()
}

/// Regression (issue 10): after a `kill -9` during a bulk put, orphan blob files made `verify`
/// exit 1 with "integrity". They are garbage `gc` reclaims, reported apart, exit 0.
#[test]
fn orphans_from_a_killed_bulk_put_are_reported_apart_and_verify_exits_0() {
    let env = Env::new();
    let sid = env.session(&[]);
    // Random bytes do not compress, and over the 64 KiB inline threshold each file is a blob file
    // under blobs/, written before the batch that records it commits.
    let dir = env.path("bulk");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..150u64 {
        let f = dir.join(format!("f{i:03}.bin"));
        std::fs::write(f, common::random_bytes(100_000, i)).unwrap();
    }
    let mut child = env
        .cmd(&[
            "artifact",
            "put",
            &sid,
            dir.to_str().unwrap(),
            "-r",
            "--kind",
            "tool_result",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // SIGKILL as soon as the put has written blob files (or at once, if it already finished).
    for _ in 0..3000 {
        if !blob_files(&env.store()).is_empty() || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let _ = child.kill(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    // Killed mid-put (the case of the issue), or finished before the kill: never refused.
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(status.signal() == Some(9) || status.success(), "{status:?}");
    }
    // Whatever the kill left, add one file exactly as a crash between writing a blob file and
    // committing its batch leaves it, so there is at least one orphan to report.
    let content = common::random_bytes(100_000, 999);
    let hex = blake3::hash(&content).to_hex().to_string();
    let sub = env.store().join("blobs").join(&hex[..2]);
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join(format!("{hex}.raw")), &content).unwrap();

    // JSON: ok, no problems, the orphans counted apart; exit 0 with nothing on stderr.
    let v = env.json(&["verify"]);
    assert_eq!(v["ok"], json!(true), "{v}");
    assert_eq!(v["problems"], json!([]), "{v}");
    let orphans = v["orphan_files"].as_u64().unwrap();
    assert!(orphans >= 1, "{v}");
    assert!(v["orphan_bytes"].as_u64().unwrap() >= 100_000, "{v}");
    // Human: "ok", the count and what reclaims them; exit 0.
    let text = env.human(&["verify"]);
    assert!(text.starts_with("ok: "), "{text}");
    assert!(
        text.contains(&format!("{orphans} orphan blob file(s)")) && text.contains("cairn gc"),
        "{text}"
    );
    // gc reclaims exactly those; verify then counts none and says nothing about them.
    let g = env.json(&["gc"]);
    assert_eq!(g["orphan_files_removed"].as_u64(), Some(orphans), "{g}");
    let v = env.json(&["verify"]);
    assert_eq!(
        (v["ok"].clone(), v["orphan_files"].clone()),
        (json!(true), json!(0))
    );
    assert!(!env.human(&["verify"]).contains("orphan"));

    // Damage beside an orphan still fails: exit 1, code `integrity`.
    std::fs::write(sub.join(format!("{hex}.raw")), &content).unwrap();
    let big = env.put(
        &sid,
        "big.bin",
        "tool_result",
        &common::random_bytes(200_000, 1000),
    );
    let big_hash = s(&big, "hash").to_string();
    let victim = blob_files(&env.store())
        .into_iter()
        .find(|p| p.to_string_lossy().contains(&big_hash))
        .unwrap_or_else(|| panic!("the blob file of big.bin ({big_hash})"));
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&victim, &bytes).unwrap();
    let out = env.run(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let v = parse_one(&out.stdout, &["verify"]);
    assert_eq!(v["ok"], json!(false));
    assert_eq!(v["orphan_files"], json!(1), "{v}");
    let e: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(s(&e["error"], "code"), "integrity");
}

#[test]
fn verify_finds_a_flipped_byte_and_repair_quarantines_it() {
    let env = Env::new();
    let sid = env.session(&[]);
    let good = env.put(&sid, "small.txt", "agent_output", b"tiny and inline");
    // Random bytes do not compress: well over the inline threshold, so a file under blobs/.
    let big = env.put(
        &sid,
        "big.bin",
        "tool_result",
        &common::random_bytes(200_000, 7),
    );
    let big_id = s(&big, "id").to_string();

    // Clean: exit 0 in both modes.
    let v = env.json(&["verify"]);
    assert_eq!(v["ok"], json!(true));
    assert_eq!(v["problems"], json!([]));
    let text = env.human(&["verify"]);
    assert!(text.starts_with("ok: "), "{text}");
    let r = env.json(&["verify", "--repair"]);
    assert_eq!(r["quarantined"], json!([]));
    assert_eq!(r["after"]["ok"], json!(true));

    // Flip one byte in the only blob file.
    let files = blob_files(&env.store());
    assert_eq!(files.len(), 1, "{files:?}");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes[1234] ^= 0x01;
    std::fs::write(&files[0], &bytes).unwrap();

    // verify: exit 1, the report on stdout names the artifact, one error line on stderr.
    let out = env.run(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    let v = parse_one(&out.stdout, &["verify"]);
    assert_eq!(v["ok"], json!(false));
    let p = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == json!("hash_mismatch"))
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(p["artifacts"], json!([big_id]));
    let e: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(s(&e["error"], "code"), "integrity");
    let out = env.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("hash_mismatch") && text.contains(&big_id),
        "{text}"
    );
    assert!(text.contains("cairn verify --repair"), "{text}");
    // Reads fail clearly, never with wrong bytes.
    let (code, _) = env.fails(&["artifact", "get", &big_id], 1);
    assert_eq!(code, "integrity");

    // repair: the file goes to quarantine, the artifact is named as lost; exit 1 (still lost).
    let out = env.run(&["--json", "verify", "--repair"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = parse_one(&out.stdout, &["verify", "--repair"]);
    let q = r["quarantined"].as_array().unwrap();
    assert_eq!(q.len(), 1, "{r}");
    let qpath = PathBuf::from(q[0].as_str().unwrap());
    assert!(
        qpath.starts_with(env.store().join("quarantine")),
        "{qpath:?}"
    );
    assert_eq!(std::fs::read(&qpath).unwrap(), bytes, "kept, not deleted");
    assert!(!files[0].exists());
    assert_eq!(r["artifacts_with_lost_content"], json!([big_id]));
    assert_eq!(r["after"]["ok"], json!(false));
    let e: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert!(
        s(&e["error"], "message").contains("remain after repair"),
        "{e}"
    );
    // The healthy artifact still reads back.
    let got = env.run(&["artifact", "get", s(&good, "id")]);
    assert_eq!(got.stdout, b"tiny and inline");

    // Human repair output names the lost artifact and what to do.
    let out = env.run(&["verify", "--repair"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&big_id) && text.contains("cairn artifact delete"),
        "{text}"
    );

    // Deleting the lost artifact and collecting makes the store verify clean again.
    env.json(&["artifact", "delete", &big_id]);
    env.json(&["gc"]);
    assert_eq!(env.json(&["verify"])["ok"], json!(true));
    let text = env.human(&["verify", "--repair"]);
    assert!(text.contains("the store verifies clean"), "{text}");
}

/// `cairn gc --gc-grace DURATION` (and `CAIRN_GC_GRACE`): unreferenced content listed less than
/// that long ago stays; 0 collects it; a bad value is a clear error naming the flag. Against a
/// server the flag is refused, naming the server's own `--gc-grace`.
#[test]
fn gc_grace_keeps_recent_garbage_and_bad_values_are_refused() {
    let env = Env::new();
    let sid = env.session(&[]);
    let a = env.put(
        &sid,
        "big.bin",
        "tool_result",
        &common::random_bytes(100_000, 41),
    );
    env.json(&["artifact", "delete", s(&a, "id")]);

    let (code, message) = env.fails(&["gc", "--gc-grace", "soon"], 5);
    assert_eq!(code, "invalid_input");
    assert!(
        message.contains("--gc-grace") && message.contains("\"soon\" is not a duration"),
        "{message}"
    );
    let out = env
        .cmd(&["--json", "gc"])
        .env("CAIRN_GC_GRACE", "3 months")
        .output()
        .unwrap();
    let (_, message) = failure(&out, &["gc"], 5);
    assert!(message.contains("no fixed length"), "{message}");

    if env.is_remote() {
        let (code, message) = env.fails(&["gc", "--gc-grace", "1h"], 2);
        assert_eq!(code, "usage");
        assert!(message.contains("cairn serve --gc-grace"), "{message}");
        assert_eq!(env.json(&["gc"])["blobs_removed"], json!(1));
        return;
    }
    // Deleted a moment ago: within an hour's grace it stays (flag, then environment).
    let g = env.json(&["gc", "--gc-grace", "1h"]);
    assert_eq!(g["blobs_removed"], json!(0), "{g}");
    let out = env
        .cmd(&["--json", "gc"])
        .env("CAIRN_GC_GRACE", "90m")
        .output()
        .unwrap();
    assert_eq!(parse_one(&out.stdout, &["gc"])["blobs_removed"], json!(0));
    assert_eq!(env.json(&["stats"])["blobs"], json!(1));
    // A grace of 0 (as without the flag) collects it.
    let g = env.json(&["gc", "--gc-grace", "0s"]);
    assert_eq!(g["blobs_removed"], json!(1), "{g}");
    assert_eq!(env.json(&["stats"])["blobs"], json!(0));
    assert!(blob_files(&env.store()).is_empty(), "its file is gone");
}
