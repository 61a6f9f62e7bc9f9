//! The `cairn` binary, run for real against temporary sled stores.
//!
//! Every command in both output modes, the exit codes, errors for bad input, stdin streaming,
//! a closed stdout pipe, the demo, and a bulk put of the shared corpus whose query results are
//! checked against what this test computes from the files themselves.

use crate::cli_env;
use crate::common;

use cli_env::{bin, one_json, s, Env};

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

fn rfc3339(v: &Value, k: &str) {
    chrono::DateTime::parse_from_rfc3339(s(v, k)).unwrap_or_else(|e| panic!("{k}: {e} in {v}"));
}

/// Every item of a paged listing, following `next_cursor`; asserts no item appears twice.
fn all_pages(env: &Env, args: &[&str]) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut a: Vec<&str> = args.to_vec();
        if let Some(c) = &cursor {
            a.push("--cursor");
            a.push(c);
        }
        let page = env.json(&a);
        let got = page["items"].as_array().expect("items").clone();
        items.extend(got);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                assert!(page["next_cursor"].is_null());
                break;
            }
        }
    }
    let ids: HashSet<&str> = items.iter().map(|i| s(i, "id")).collect();
    assert_eq!(ids.len(), items.len(), "an item appeared on two pages");
    items
}

#[test]
fn help_version_and_usage_errors() {
    let env = Env::new();
    let out = env.run(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for noun in [
        "session", "artifact", "stats", "gc", "verify", "demo", "--store", "--json",
    ] {
        assert!(help.contains(noun), "help lacks {noun}: {help}");
    }
    for sub in [
        vec!["session", "--help"],
        vec!["session", "create", "--help"],
        vec!["artifact", "put", "--help"],
        vec!["artifact", "query", "--help"],
        vec!["demo", "--help"],
    ] {
        let out = env.run(&sub);
        assert!(out.status.success(), "{sub:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage: cairn"),
            "{sub:?}"
        );
    }
    let out = env.run(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("cairn "));
    // No command, unknown commands and flags, missing arguments: usage errors, exit 2.
    assert_eq!(env.run(&[]).status.code(), Some(2));
    let e = env.human_fails(&["sesion", "list"], 2);
    assert!(e.contains("'sesion'") && e.contains("'session'"), "{e}");
    let e = env.human_fails(&["session", "create", "--nmae", "x"], 2);
    assert!(
        e.contains("--nmae") && e.contains("cairn session create --help"),
        "{e}"
    );
    let (_, msg) = env.fails(&["artifact", "put"], 2);
    assert!(msg.contains("--kind") && msg.contains("<SESSION>"), "{msg}");
    let (code, _) = env.fails(&["artifact", "put"], 2);
    assert_eq!(code, "usage");
    let (code, _) = env.fails(&["session", "list", "--roots", "--parent", "x"], 2);
    assert_eq!(code, "usage");
    // Nothing above wrote, so no store was created.
    assert!(!env.store().exists());
}

#[test]
fn sessions_in_both_output_modes() {
    let env = Env::new();
    // Read commands on a store that does not exist yet: "not found", and nothing is created.
    // (A server's tenant store always exists: remotely the list is just empty.)
    if !env.is_remote() {
        let (code, msg) = env.fails(&["session", "list"], 3);
        assert_eq!(code, "store_not_found");
        assert!(msg.contains("store"), "{msg}");
    }
    assert!(!env.store().exists());

    let root = env.json(&[
        "session",
        "create",
        "--name",
        "run-1",
        "--description",
        "a test run",
        "--key",
        "run-1",
        "--tag",
        "b",
        "--tag",
        "a",
        "--meta",
        "n=3",
        "--meta",
        "model=gpt-4o",
        "--meta",
        "cfg={\"t\":0.5}",
        "--meta",
        "ok=true",
    ]);
    for k in [
        "id",
        "key",
        "name",
        "description",
        "parent_id",
        "status",
        "tags",
        "metadata",
    ] {
        assert!(root.get(k).is_some(), "{k} missing in {root}");
    }
    rfc3339(&root, "created_at");
    rfc3339(&root, "updated_at");
    assert_eq!(root["parent_id"], Value::Null);
    assert_eq!(s(&root, "status"), "active");
    assert_eq!(root["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(root["metadata"]["n"], serde_json::json!(3));
    assert_eq!(root["metadata"]["model"], serde_json::json!("gpt-4o"));
    assert_eq!(root["metadata"]["cfg"], serde_json::json!({"t": 0.5}));
    assert_eq!(root["metadata"]["ok"], serde_json::json!(true));
    let rid = s(&root, "id").to_string();

    // show by id and by key; human output names the fields.
    assert_eq!(env.json(&["session", "show", &rid])["id"], root["id"]);
    assert_eq!(
        env.json(&["session", "show", "key:run-1"])["id"],
        root["id"]
    );
    let h = env.human(&["session", "show", &rid]);
    assert!(
        h.contains("run-1") && h.contains("active") && h.contains("a test run"),
        "{h}"
    );

    // Children and grandchildren.
    let mut kids = Vec::new();
    for i in 0..3 {
        let c = env.json(&[
            "session",
            "create",
            "--name",
            &format!("child-{i}"),
            "--parent",
            &rid,
            "--tag",
            "child",
        ]);
        assert_eq!(s(&c, "parent_id"), rid);
        kids.push(s(&c, "id").to_string());
    }
    let gc = env.json(&[
        "session",
        "create",
        "--name",
        "grandchild",
        "--parent",
        &kids[0],
    ]);
    let gcid = s(&gc, "id").to_string();

    // list: filters and paging (every session exactly once).
    let roots = env.json(&["session", "list", "--roots"]);
    assert_eq!(roots["items"].as_array().unwrap().len(), 1);
    let of_root = env.json(&["session", "list", "--parent", &rid]);
    let got: Vec<&str> = of_root["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| s(i, "id"))
        .collect();
    assert_eq!(got, kids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(
        env.json(&["session", "list", "--tag", "child"])["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let all = all_pages(&env, &["session", "list", "--limit", "2"]);
    assert_eq!(all.len(), 5);
    let h = env.human(&["session", "list"]);
    assert!(
        h.starts_with("ID") && h.contains("child-2") && h.contains("grandchild"),
        "{h}"
    );

    // Lifecycle, with the reason kept; invalid transitions are exit 4 and change nothing.
    assert_eq!(
        s(&env.json(&["session", "suspend", &kids[1]]), "status"),
        "suspended"
    );
    assert_eq!(
        s(&env.json(&["session", "resume", &kids[1]]), "status"),
        "active"
    );
    let f = env.json(&["session", "fail", &kids[1], "--reason", "tool crashed"]);
    assert_eq!(
        (s(&f, "status"), s(&f, "reason")),
        ("failed", "tool crashed")
    );
    let c = env.json(&["session", "cancel", &kids[2], "--reason", "user stop"]);
    assert_eq!(s(&c, "status"), "cancelled");
    let (code, msg) = env.fails(&["session", "resume", &kids[1]], 4);
    assert_eq!(code, "invalid_transition");
    assert!(msg.contains("failed"), "{msg}");
    env.human_fails(&["session", "complete", &kids[2]], 4);
    assert_eq!(
        s(&env.json(&["session", "show", &kids[1]]), "status"),
        "failed"
    );
    assert_eq!(
        env.json(&["session", "list", "--status", "failed"])["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let h = env.human(&["session", "complete", &gcid]);
    assert!(h.contains("completed"), "{h}");

    // Metadata: set (JSON or text) and unset.
    let m = env.json(&[
        "session",
        "meta",
        &rid,
        "--set",
        "n=4",
        "--set",
        "note=hello world",
        "--unset",
        "model",
    ]);
    assert_eq!(m["metadata"]["n"], serde_json::json!(4));
    assert_eq!(m["metadata"]["note"], serde_json::json!("hello world"));
    assert!(m["metadata"].get("model").is_none(), "{m}");
    assert_eq!(env.fails(&["session", "meta", &rid], 2).0, "usage");

    // Tree: nested JSON, and an indented tree for people.
    let t = env.json(&["session", "tree", &rid]);
    assert_eq!(s(&t, "id"), rid);
    let children = t["children"].as_array().unwrap();
    assert_eq!(children.len(), 3);
    assert_eq!(s(&children[0]["children"][0], "id"), gcid);
    assert_eq!(children[1]["children"].as_array().unwrap().len(), 0);
    let h = env.human(&["session", "tree", &rid]);
    let lines: Vec<&str> = h.lines().collect();
    assert_eq!(lines.len(), 5, "{h}");
    assert!(lines[0].starts_with("run-1"), "{h}");
    assert!(
        lines[2].contains("grandchild") && lines[2].starts_with("│  └─ "),
        "{h}"
    );
    assert!(
        lines[4].starts_with("└─ child-2") && lines[4].contains("(user stop)"),
        "{h}"
    );

    // Events, paged with --after.
    let ev = env.json(&["session", "events", &kids[1]]);
    let types: Vec<&str> = ev["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| s(e, "type"))
        .collect();
    assert_eq!(
        types,
        [
            "created",
            "status_changed",
            "status_changed",
            "status_changed"
        ]
    );
    let p1 = env.json(&["session", "events", &kids[1], "--limit", "3"]);
    let cur = s(&p1, "next_cursor").to_string();
    let p2 = env.json(&["session", "events", &kids[1], "--after", &cur]);
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert_eq!(p2["items"][0]["seq"], serde_json::json!(4));
    assert!(p2["next_cursor"].is_null());
    let h = env.human(&["session", "events", &kids[1]]);
    assert!(
        h.contains("status_changed") && h.contains("tool crashed"),
        "{h}"
    );
    assert_eq!(
        env.fails(&["session", "events", &kids[1], "--after", "x"], 5)
            .0,
        "invalid_input"
    );

    // Delete: children need --recursive.
    let (code, _) = env.fails(&["session", "delete", &kids[0]], 4);
    assert_eq!(code, "has_children");
    let d = env.json(&["session", "delete", &kids[0], "--recursive"]);
    assert_eq!(d["sessions"], serde_json::json!(2));
    assert_eq!(
        env.fails(&["session", "show", &gcid], 3).0,
        "session_not_found"
    );
    let h = env.human(&["session", "delete", &kids[2]]);
    assert!(h.contains("deleted 1 session"), "{h}");

    // Key conflicts are exit 4.
    assert_eq!(
        env.fails(&["session", "create", "--key", "run-1"], 4).0,
        "key_conflict"
    );
}

#[test]
fn artifacts_put_get_list_query_delete() {
    let env = Env::new();
    let sid = s(
        &env.json(&["session", "create", "--name", "a", "--key", "a"]),
        "id",
    )
    .to_string();

    // A file: the name defaults to the file's name.
    std::fs::write(env.path("grep.txt"), b"src/main.rs:3: fn main()\n").unwrap();
    let a = env.json(&[
        "artifact",
        "put",
        &sid,
        env.path("grep.txt").to_str().unwrap(),
        "--kind",
        "tool_result",
        "--tag",
        "grep",
        "--meta",
        "exit_code=0",
        "--meta",
        "cmd=grep -n main",
    ]);
    for k in [
        "id",
        "session_id",
        "kind",
        "name",
        "version",
        "hash",
        "size",
        "stored_size",
        "compressed",
        "tags",
        "metadata",
    ] {
        assert!(a.get(k).is_some(), "{k} missing in {a}");
    }
    rfc3339(&a, "created_at");
    assert_eq!(s(&a, "name"), "grep.txt");
    assert_eq!(
        s(&a, "hash"),
        blake3::hash(b"src/main.rs:3: fn main()\n")
            .to_hex()
            .as_str()
    );
    assert_eq!(a["size"], serde_json::json!(25));
    assert_eq!(a["metadata"]["exit_code"], serde_json::json!(0));
    assert_eq!(a["metadata"]["cmd"], serde_json::json!("grep -n main"));
    let aid = s(&a, "id").to_string();

    // stdin, streaming, with `-` and without a path; large enough to spill and compress.
    let big = common::json_text(12 << 20, 7);
    let b = one_json(
        &env.run_stdin(
            &[
                "--json",
                "artifact",
                "put",
                "key:a",
                "-",
                "--kind",
                "agent_output",
                "--name",
                "big.jsonl",
            ],
            &big,
        ),
        &["put stdin"],
    );
    assert_eq!(b["size"], serde_json::json!(big.len()));
    assert_eq!(b["compressed"], serde_json::json!(true));
    assert!(b["stored_size"].as_u64().unwrap() < big.len() as u64);
    let bid = s(&b, "id").to_string();
    let out = env.run_stdin(
        &[
            "artifact",
            "put",
            &sid,
            "--kind",
            "agent_output",
            "--name",
            "note.txt",
        ],
        b"v1",
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("note.txt"));
    let v2 = one_json(
        &env.run_stdin(
            &[
                "--json",
                "artifact",
                "put",
                &sid,
                "--kind",
                "agent_output",
                "--name",
                "note.txt",
            ],
            b"v2",
        ),
        &["put v2"],
    );
    assert_eq!(v2["version"], serde_json::json!(2));

    // get: raw bytes to stdout (verified), or to a file.
    let out = env.run(&["artifact", "get", &bid]);
    assert!(out.status.success());
    assert!(out.stdout == big, "streamed content differs");
    let out = env.run(&["--json", "artifact", "get", &aid]);
    assert_eq!(
        out.stdout, b"src/main.rs:3: fn main()\n",
        "content is raw even with --json"
    );
    let dest = env.path("out/copy.txt");
    std::fs::create_dir_all(env.path("out")).unwrap();
    let g = env.json(&["artifact", "get", &aid, "-o", dest.to_str().unwrap()]);
    assert_eq!(s(&g, "id"), aid);
    assert_eq!(std::fs::read(&dest).unwrap(), b"src/main.rs:3: fn main()\n");
    let h = env.human(&["artifact", "get", &bid, "-o", dest.to_str().unwrap()]);
    assert!(h.contains("verified"), "{h}");
    assert!(std::fs::read(&dest).unwrap() == big);
    assert_eq!(
        std::fs::read_dir(env.path("out")).unwrap().count(),
        1,
        "no temp file left behind"
    );

    // A recursive put of an empty folder stores nothing and says so.
    std::fs::create_dir_all(env.path("empty")).unwrap();
    let empty = env.path("empty");
    let none = env.json(&[
        "artifact",
        "put",
        &sid,
        empty.to_str().unwrap(),
        "-r",
        "--kind",
        "tool_result",
    ]);
    assert_eq!(none, serde_json::json!([]));
    assert!(env
        .human(&[
            "artifact",
            "put",
            &sid,
            empty.to_str().unwrap(),
            "-r",
            "--kind",
            "tool_result"
        ])
        .starts_with("stored 0 file(s)"));

    // get and show by session and name (latest, or a given version).
    let out = env.run(&[
        "artifact",
        "get",
        "--session",
        "key:a",
        "--name",
        "note.txt",
    ]);
    assert_eq!(out.stdout, b"v2");
    let out = env.run(&[
        "artifact",
        "get",
        "--session",
        &sid,
        "--name",
        "note.txt",
        "--version",
        "1",
    ]);
    assert_eq!(out.stdout, b"v1");
    let shown = env.json(&["artifact", "show", "--session", &sid, "--name", "grep.txt"]);
    assert_eq!(s(&shown, "id"), aid);
    let (code, _) = env.fails(
        &[
            "artifact",
            "show",
            "--session",
            &sid,
            "--name",
            "note.txt",
            "--version",
            "9",
        ],
        3,
    );
    assert_eq!(code, "artifact_not_found");
    assert_eq!(
        env.fails(&["artifact", "show", "--name", "note.txt"], 2).0,
        "usage"
    );
    assert_eq!(env.fails(&["artifact", "get"], 2).0, "usage");

    // show, versions.
    assert_eq!(env.json(&["artifact", "show", &aid])["hash"], a["hash"]);
    let h = env.human(&["artifact", "show", &bid]);
    assert!(h.contains("big.jsonl") && h.contains("zstd"), "{h}");
    let vs = env.json(&["artifact", "versions", &sid, "note.txt"]);
    let versions: Vec<u64> = vs
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2]);
    assert!(
        env.human(&["artifact", "versions", &sid, "note.txt"])
            .lines()
            .count()
            == 3
    );
    assert_eq!(
        env.fails(&["artifact", "versions", &sid, "nope.txt"], 3).0,
        "artifact_not_found"
    );

    // list: {"items", "next_cursor"}, every artifact exactly once across pages; --recursive.
    let child = s(&env.json(&["session", "create", "--parent", &sid]), "id").to_string();
    let out = env.run_stdin(
        &[
            "artifact",
            "put",
            &child,
            "--kind",
            "tool_result",
            "--name",
            "c.txt",
        ],
        b"child output",
    );
    assert!(out.status.success());
    assert_eq!(
        all_pages(&env, &["artifact", "list", &sid, "--limit", "2"]).len(),
        4
    );
    assert_eq!(
        all_pages(
            &env,
            &["artifact", "list", &sid, "--recursive", "--limit", "3"]
        )
        .len(),
        5
    );
    let h = env.human(&["artifact", "list", &sid, "--limit", "2"]);
    assert!(h.contains("more artifacts: add --cursor"), "{h}");

    // query: kinds, tags, glob, sizes, time, latest, desc.
    let q = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["artifact", "query"];
        a.extend_from_slice(args);
        all_pages(&env, &a)
            .iter()
            .map(|i| s(i, "name").to_string())
            .collect()
    };
    assert_eq!(q(&["--kind", "tool_result"]), ["grep.txt", "c.txt"]);
    assert_eq!(
        q(&["--kind", "tool_result", "--session", &sid]),
        ["grep.txt"]
    );
    assert_eq!(
        q(&["--kind", "tool_result", "--session", &sid, "--subtree"]),
        ["grep.txt", "c.txt"]
    );
    assert_eq!(q(&["--tag", "grep"]), ["grep.txt"]);
    assert_eq!(q(&["--any-tag", "grep", "--any-tag", "none"]), ["grep.txt"]);
    assert_eq!(
        q(&["--name", "*.txt", "--latest"]),
        ["grep.txt", "note.txt", "c.txt"]
    );
    assert_eq!(q(&["--name", "note.*", "--desc"]), ["note.txt", "note.txt"]);
    assert_eq!(q(&["--min-size", "1MiB"]), ["big.jsonl"]);
    assert_eq!(q(&["--max-size", "2B"]), ["note.txt", "note.txt"]);
    assert_eq!(
        q(&["--min-size", "10", "--max-size", "1KB"]),
        ["grep.txt", "c.txt"]
    );
    assert_eq!(q(&["--after", "1h", "--kind", "agent_output"]).len(), 3);
    assert_eq!(q(&["--before", "1h"]).len(), 0);
    assert_eq!(
        q(&["--after", "2020-01-01T00:00:00Z", "--before", "now"]).len(),
        5
    );
    let h = env.human(&["artifact", "query", "--kind", "tool_result"]);
    assert!(
        h.starts_with("ID") && h.contains("grep.txt") && h.contains("c.txt"),
        "{h}"
    );
    assert_eq!(
        env.human(&["artifact", "query", "--tag", "none"]).trim(),
        "no artifacts"
    );

    // stats before and after delete + gc.
    let st = env.json(&["stats"]);
    for k in [
        "sessions",
        "artifacts",
        "blobs",
        "logical_bytes",
        "stored_bytes",
    ] {
        assert!(st[k].is_u64(), "{k} in {st}");
    }
    assert_eq!(st["artifacts"], serde_json::json!(5));
    assert_eq!(st["sessions"], serde_json::json!(2));
    assert!(env.human(&["stats"]).contains("compression"));
    let d = env.json(&["artifact", "delete", &bid]);
    assert_eq!(s(&d, "id"), bid);
    assert_eq!(
        env.fails(&["artifact", "show", &bid], 3).0,
        "artifact_not_found"
    );
    assert_eq!(
        env.fails(&["artifact", "get", &bid], 3).0,
        "artifact_not_found"
    );
    let gc = env.json(&["gc"]);
    assert_eq!(gc["blobs_removed"], serde_json::json!(1));
    assert_eq!(gc["bytes_freed"], b["stored_size"]);
    assert!(env.human(&["gc"]).contains("removed 0 blob"));
    let h = env.human(&["artifact", "delete", &aid]);
    assert!(h.contains("deleted artifact"), "{h}");
    assert_eq!(env.json(&["stats"])["artifacts"], serde_json::json!(3));
}

#[test]
fn bad_input_gets_clear_errors_and_exit_codes() {
    let env = Env::new();
    let sid = s(&env.json(&["session", "create", "--name", "x"]), "id").to_string();
    let unknown = "0190f4c4-7b1e-7c3a-9a51-3f0e2b8d4c11";
    std::fs::write(env.path("f.txt"), b"data").unwrap();
    let f = env.path("f.txt");
    let f = f.to_str().unwrap();

    // Not found: exit 3.
    assert_eq!(
        env.fails(&["session", "show", unknown], 3).0,
        "session_not_found"
    );
    assert_eq!(
        env.fails(&["session", "show", "key:nope"], 3).0,
        "session_not_found"
    );
    assert_eq!(
        env.fails(&["artifact", "put", unknown, f, "--kind", "tool_result"], 3)
            .0,
        "session_not_found"
    );
    assert_eq!(
        env.fails(&["artifact", "query", "--session", unknown], 3).0,
        "session_not_found"
    );
    assert_eq!(
        env.fails(&["session", "create", "--parent", unknown], 3).0,
        "session_not_found"
    );
    assert_eq!(
        env.fails(&["artifact", "show", unknown], 3).0,
        "artifact_not_found"
    );
    let (code, msg) = env.fails(
        &[
            "artifact",
            "put",
            &sid,
            "missing.txt",
            "--kind",
            "tool_result",
        ],
        3,
    );
    assert_eq!(code, "file_not_found");
    assert!(msg.contains("missing.txt"), "{msg}");
    let e = env.human_fails(&["session", "show", unknown], 3);
    assert!(e.contains(unknown), "{e}");

    // Invalid input: exit 5, naming what is wrong.
    let (code, msg) = env.fails(&["artifact", "query", "--name", "[unclosed"], 5);
    assert_eq!(code, "invalid_glob");
    assert!(msg.contains("[unclosed"), "{msg}");
    let (code, msg) = env.fails(&["artifact", "put", &sid, f, "--kind", "Tool-Result"], 5);
    assert_eq!(code, "invalid_input");
    assert!(msg.contains("kind") && msg.contains("Tool-Result"), "{msg}");
    assert_eq!(
        env.fails(&["artifact", "query", "--kind", "BAD"], 5).0,
        "invalid_input"
    );
    let (code, msg) = env.fails(&["session", "create", "--meta", "novalue"], 5);
    assert_eq!(code, "invalid_input");
    assert!(msg.contains("--meta") && msg.contains("KEY=VALUE"), "{msg}");
    assert_eq!(
        env.fails(
            &[
                "artifact",
                "put",
                &sid,
                f,
                "--kind",
                "tool_result",
                "--meta",
                "=x"
            ],
            5
        )
        .0,
        "invalid_input"
    );
    assert!(env
        .fails(&["artifact", "query", "--min-size", "10XB"], 5)
        .1
        .contains("--min-size"));
    assert!(env
        .fails(&["artifact", "query", "--after", "yesterday"], 5)
        .1
        .contains("--after"));
    assert_eq!(
        env.fails(
            &[
                "artifact",
                "query",
                "--min-size",
                "2KiB",
                "--max-size",
                "1KiB"
            ],
            5
        )
        .0,
        "invalid_input"
    );
    assert_eq!(
        env.fails(&["artifact", "query", "--cursor", "garbage"], 5)
            .0,
        "invalid_input"
    );
    assert_eq!(
        env.fails(&["artifact", "query", "--limit", "0"], 5).0,
        "invalid_input"
    );
    assert_eq!(
        env.fails(&["session", "show", "not-a-uuid"], 5).0,
        "invalid_input"
    );
    assert_eq!(
        env.fails(&["artifact", "show", "not-a-uuid"], 5).0,
        "invalid_input"
    );
    assert_eq!(
        env.fails(&["session", "list", "--status", "done"], 5).0,
        "invalid_input"
    );
    assert_eq!(
        env.fails(
            &[
                "artifact",
                "put",
                &sid,
                f,
                "--kind",
                "tool_result",
                "--tag",
                "has space"
            ],
            5
        )
        .0,
        "invalid_input"
    );
    assert!(env
        .fails(&["artifact", "put", &sid, "--kind", "tool_result"], 5)
        .1
        .contains("--name"));
    let dir = env.dir.path().to_str().unwrap();
    assert!(env
        .fails(&["artifact", "put", &sid, dir, "--kind", "tool_result"], 5)
        .1
        .contains("--recursive"));
    assert!(env
        .human_fails(&["artifact", "query", "--name", "a{b"], 5)
        .contains("glob"));

    // A recursive put of the folder holding the store leaves the store itself out.
    let put = env.json(&["artifact", "put", &sid, dir, "-r", "--kind", "tool_result"]);
    let names: Vec<&str> = put
        .as_array()
        .unwrap()
        .iter()
        .map(|a| s(a, "name"))
        .collect();
    assert_eq!(names, ["f.txt"]);
    env.json(&["artifact", "delete", s(&put[0], "id")]);

    // Invalid state transitions and writes to a finished session: exit 4.
    env.json(&["session", "complete", &sid]);
    assert_eq!(
        env.fails(&["session", "suspend", &sid], 4).0,
        "invalid_transition"
    );
    assert_eq!(
        env.fails(&["artifact", "put", &sid, f, "--kind", "tool_result"], 4)
            .0,
        "session_closed"
    );
    assert_eq!(
        env.fails(
            &["artifact", "put", &sid, dir, "-r", "--kind", "tool_result"],
            4
        )
        .0,
        "session_closed"
    );
    // Nothing was stored by any of the failures above.
    assert_eq!(env.json(&["stats"])["artifacts"], serde_json::json!(0));
}

#[test]
fn store_comes_from_cairn_store_env_and_defaults_to_dot_cairn() {
    let env = Env::new();
    let custom = env.path("elsewhere");
    let out = Command::new(bin())
        .args(["--json", "session", "create", "--name", "via-env"])
        .env("CAIRN_STORE", &custom)
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        custom.join("db").exists(),
        "the store was created at CAIRN_STORE"
    );
    let out = Command::new(bin())
        .args(["--json", "session", "create", "--name", "default"])
        .env_remove("CAIRN_STORE")
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        env.path(".cairn").join("db").exists(),
        "default store is ./.cairn"
    );
}

#[test]
fn closed_stdout_pipe_is_success() {
    let env = Env::new();
    let sid = s(&env.json(&["session", "create"]), "id").to_string();
    let big = common::random_bytes(4 << 20, 11);
    let a = one_json(
        &env.run_stdin(
            &[
                "--json",
                "artifact",
                "put",
                &sid,
                "--kind",
                "tool_result",
                "--name",
                "r.bin",
            ],
            &big,
        ),
        &["put"],
    );
    let mut child = env
        .cmd(&["artifact", "get", s(&a, "id")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(first, big[..16]);
    drop(stdout); // like `cairn artifact get ID | head -c 16`
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {:?}: {err}", status.code());
    assert!(err.is_empty(), "{err}");
}

#[test]
fn verify_command_reports_or_fails_with_exit_1() {
    let env = Env::new();
    env.json(&["session", "create"]);
    let out = env.run(&["--json", "verify"]);
    if out.status.success() {
        // Store::verify is implemented (after the merge): the report's fields are there.
        let v = one_json(&out, &["verify"]);
        assert_eq!(v["ok"], serde_json::json!(true));
        assert!(
            v["blobs_checked"].is_u64() && v["problems"].is_array(),
            "{v}"
        );
    } else {
        // Store::verify is still the placeholder on this branch: a clean error, exit 1.
        assert_eq!(out.status.code(), Some(1));
        assert!(out.stdout.is_empty());
        let e: Value = serde_json::from_slice(&out.stderr).expect("JSON error on stderr");
        assert!(
            e["error"]["code"].is_string() && e["error"]["message"].is_string(),
            "{e}"
        );
    }
}

/// Every regular file under `dir`: relative name, content.
fn corpus_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    common::files_under(dir)
        .into_iter()
        .map(|(rel, p)| {
            let bytes = std::fs::read(&p).unwrap();
            (rel, bytes)
        })
        .collect()
}

#[test]
fn bulk_put_of_the_corpus_then_queries_match_the_files() {
    let corpus = common::corpus_dir();
    assert!(
        corpus.is_dir(),
        "the shared corpus is at {}",
        corpus.display()
    );
    let files = corpus_files(&corpus);
    assert!(files.len() > 50, "corpus has {} files", files.len());
    let env = Env::new();
    let sid = s(&env.json(&["session", "create", "--name", "bulk"]), "id").to_string();
    let stored = env.json(&[
        "artifact",
        "put",
        &sid,
        corpus.to_str().unwrap(),
        "--recursive",
        "--kind",
        "tool_result",
        "--tag",
        "corpus",
    ]);
    let stored = stored.as_array().expect("an array of stored artifacts");
    assert_eq!(stored.len(), files.len());

    // Names are the relative paths with `/`; hashes and sizes are those of the files.
    let by_name: HashMap<&str, &Value> = stored.iter().map(|a| (s(a, "name"), a)).collect();
    assert_eq!(by_name.len(), files.len());
    for (rel, bytes) in &files {
        let a = by_name
            .get(rel.as_str())
            .unwrap_or_else(|| panic!("{rel} not stored"));
        assert_eq!(s(a, "hash"), blake3::hash(bytes).to_hex().as_str(), "{rel}");
        assert_eq!(a["size"].as_u64(), Some(bytes.len() as u64), "{rel}");
        assert_eq!(a["tags"], serde_json::json!(["corpus"]));
        assert_eq!(s(a, "session_id"), sid);
    }

    // Queries, with small pages so the cursor is exercised; expectations from the files.
    let names = |args: &[&str]| -> HashSet<String> {
        let mut a = vec!["artifact", "query", "--limit", "13"];
        a.extend_from_slice(args);
        all_pages(&env, &a)
            .iter()
            .map(|i| s(i, "name").to_string())
            .collect()
    };
    let expect = |f: &dyn Fn(&str, &[u8]) -> bool| -> HashSet<String> {
        files
            .iter()
            .filter(|(n, b)| f(n, b))
            .map(|(n, _)| n.clone())
            .collect()
    };
    let json_files = expect(&|n, _| n.ends_with(".json"));
    assert!(!json_files.is_empty());
    assert_eq!(names(&["--name", "*.json"]), json_files);
    let big = expect(&|_, b| b.len() as u64 >= 10 << 10);
    assert!(!big.is_empty() && big.len() < files.len());
    assert_eq!(names(&["--min-size", "10KiB"]), big);
    let small_jsonl = expect(&|n, b| n.ends_with(".jsonl") && b.len() as u64 <= 50_000);
    assert_eq!(
        names(&["--name", "*.jsonl", "--max-size", "50KB", "--session", &sid]),
        small_jsonl
    );
    let logs = expect(&|n, _| n.starts_with("swe-agent-runs/results/logs/") && n.ends_with(".log"));
    assert!(!logs.is_empty());
    assert_eq!(
        names(&[
            "--name",
            "swe-agent-runs/results/logs/*.log",
            "--tag",
            "corpus"
        ]),
        logs
    );
    assert_eq!(names(&["--kind", "agent_output"]), HashSet::new());
    let everything: HashSet<String> = files.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names(&["--kind", "tool_result", "--desc"]), everything);

    // Dedup: blobs are the distinct contents; logical bytes are the sum of the files.
    let distinct: HashSet<&[u8]> = files.iter().map(|(_, b)| b.as_slice()).collect();
    assert!(
        distinct.len() < files.len(),
        "the corpus has duplicate files"
    );
    let st = env.json(&["stats"]);
    assert_eq!(st["artifacts"].as_u64(), Some(files.len() as u64));
    assert_eq!(st["blobs"].as_u64(), Some(distinct.len() as u64));
    let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(st["logical_bytes"].as_u64(), Some(total));
    assert!(st["stored_bytes"].as_u64().unwrap() < total);

    // A second bulk put of the same folder: new versions, no new blobs; human summary.
    let h = env.human(&[
        "artifact",
        "put",
        &sid,
        corpus.to_str().unwrap(),
        "-r",
        "--kind",
        "tool_result",
        "--prefix",
        "again/",
    ]);
    assert!(
        h.contains(&format!("stored {} file(s)", files.len())),
        "{h}"
    );
    assert!(h.contains("the store grew by 0 B"), "{h}");
    let st2 = env.json(&["stats"]);
    assert_eq!(st2["blobs"], st["blobs"]);
    assert_eq!(names(&["--name", "again/**"]).len(), files.len());

    // Content comes back byte for byte.
    for (rel, bytes) in files.iter().filter(|(_, b)| b.len() > 100_000).take(2) {
        let id = s(by_name[rel.as_str()], "id");
        let out = env.run(&["artifact", "get", id]);
        assert!(out.status.success());
        assert!(out.stdout == *bytes, "{rel} differs");
    }
}

#[test]
fn demo_runs_twice_on_the_same_store() {
    let env = Env::new();
    let out = env.human(&["demo"]);
    assert!(out.contains("Started a fresh demo store"), "{out}");
    assert!(
        out.contains("dedup ratio") && out.contains("compression ratio"),
        "{out}"
    );
    assert!(
        out.contains("[failed]") && out.contains("Evaluation failed"),
        "{out}"
    );
    assert!(
        env.store().join("db").exists(),
        "--store is honoured by the demo"
    );

    let r = env.json(&["demo"]);
    assert_eq!(r["reused"], serde_json::json!(true));
    assert_eq!(r["run"], serde_json::json!(2));
    let sessions = r["sessions"].as_array().unwrap();
    let root = sessions
        .iter()
        .find(|x| x["id"] == r["root_session"])
        .expect("root reported");
    assert_eq!(s(root, "status"), "completed");
    let failed: Vec<&Value> = sessions
        .iter()
        .filter(|x| x["status"] == "failed")
        .collect();
    assert!(!failed.is_empty());
    assert!(failed.iter().all(|f| f["reason"].is_string()));
    let n = r["artifacts_stored"].as_u64().unwrap();
    assert!(n > 50, "{r}");
    // Everything in run 2 was already stored by run 1.
    assert_eq!(r["deduplicated_artifacts"].as_u64(), Some(n));
    assert_eq!(r["store_grew_by"], serde_json::json!(0));
    let st = &r["stats"];
    assert!(st["dedup_ratio"].as_f64().unwrap() > 2.0, "{st}");
    assert!(st["compression_ratio"].as_f64().unwrap() > 1.0, "{st}");
    for q in r["queries"].as_array().unwrap() {
        assert!(q["count"].as_u64().unwrap() > 0, "{q}");
    }

    // The demo's tree is there for the other commands to explore.
    let root_id = s(&r, "root_session");
    let tree = env.json(&["session", "tree", root_id]);
    assert_eq!(
        tree["children"].as_array().unwrap().len(),
        sessions.len() - 1
    );
    assert_eq!(
        s(&env.json(&["session", "show", "key:demo-run-2"]), "id"),
        root_id
    );
    let patches = env.json(&[
        "artifact",
        "query",
        "--session",
        root_id,
        "--subtree",
        "--name",
        "*.diff",
        "--tag",
        "patch",
    ]);
    assert!(!patches["items"].as_array().unwrap().is_empty());
}
