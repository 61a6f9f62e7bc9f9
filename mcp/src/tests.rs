//! Unit tests: argument validation, result shaping, resources, over an in-memory store.

use cairn::Store;
use rmcp::model::{CallToolResult, ContentBlock, ResourceContents};
use serde_json::{json, Map, Value};

use crate::args::Args;
use crate::resources::{self, Target};
use crate::tools;
use crate::{CairnMcp, McpOptions};

fn server() -> CairnMcp {
    CairnMcp::new(Store::memory(), McpOptions::default())
}

fn obj(v: Value) -> Option<Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn call(s: &CairnMcp, name: &str, args: Value) -> CallToolResult {
    let r = s.call_blocking(name, obj(args));
    assert!(r.is_some(), "tool {name} exists");
    r.unwrap_or_default()
}

/// The structured result of a call that must succeed.
fn ok(s: &CairnMcp, name: &str, args: Value) -> Value {
    let r = call(s, name, args.clone());
    assert_ne!(
        r.is_error,
        Some(true),
        "{name} {args} failed: {:?}",
        r.content
    );
    let v = r.structured_content.clone().unwrap_or(Value::Null);
    // The text block carries the same JSON (for clients that ignore structured content).
    let text = match r.content.first() {
        Some(ContentBlock::Text(t)) => t.text.clone(),
        _ => String::new(),
    };
    assert_eq!(serde_json::from_str::<Value>(&text).ok(), Some(v.clone()));
    v
}

/// The structured error of a call that must fail as a tool error (not a protocol error).
fn err(s: &CairnMcp, name: &str, args: Value) -> Value {
    let r = call(s, name, args.clone());
    assert_eq!(
        r.is_error,
        Some(true),
        "{name} {args} should fail: {:?}",
        r.structured_content
    );
    r.structured_content.unwrap_or(Value::Null)["error"].clone()
}

fn store_text(s: &CairnMcp, name: &str, text: &str) -> String {
    let v = ok(s, "store_output", json!({"name": name, "content": text}));
    v["artifact_id"].as_str().unwrap_or_default().to_string()
}

#[test]
fn every_example_is_a_valid_call_and_every_schema_is_closed() {
    for t in tools::all() {
        let schema = (t.schema)();
        assert_eq!(schema["type"], "object", "{}", t.name);
        assert_eq!(schema["additionalProperties"], false, "{}", t.name);
        let ex = (t.example)();
        let args = Args::new(t, obj(ex.clone()));
        assert!(
            args.is_ok(),
            "example of {} refused: {:?}",
            t.name,
            args.err()
        );
        // The description says what the tool returns; keep it substantial.
        assert!(
            t.description.len() > 120,
            "{} has a thin description",
            t.name
        );
        let def = t.to_tool();
        assert_eq!(def.name, t.name);
        assert_eq!(def.input_schema.get("properties"), schema.get("properties"));
    }
    let read = tools::find("read_part").map(|t| (t.example)());
    let spec = tools::find("read_part");
    assert!(spec.is_some());
    if let (Some(spec), Some(ex)) = (spec, read) {
        let a = Args::new(spec, obj(ex));
        assert!(a.is_ok());
        if let Ok(a) = a {
            let parsed = tools::part_of(&a);
            assert!(
                matches!(parsed, Ok((cairn::Part::Grep { context: 2, .. }, _))),
                "{parsed:?}"
            );
        }
    }
}

#[test]
fn unknown_argument_is_named_with_the_valid_names_and_an_example() {
    let s = server();
    let e = err(&s, "read_part", json!({"artifact_id": "x", "nmae": 1}));
    assert_eq!(e["code"], "invalid_argument");
    assert_eq!(e["argument"], "nmae");
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("artifact_id") && msg.contains("pattern"),
        "{msg}"
    );
    assert!(e["example"]["artifact_id"].is_string());
    // The text a model reads ends with the example call.
    let r = call(&s, "read_part", json!({"artifact_id": "x", "nmae": 1}));
    let text = match r.content.first() {
        Some(ContentBlock::Text(t)) => t.text.clone(),
        _ => String::new(),
    };
    assert!(text.contains("Example of a valid call: {"), "{text}");
}

#[test]
fn missing_required_wrong_types_and_bad_ids_name_the_argument() {
    let s = server();
    let e = err(&s, "store_output", json!({"content": "x"}));
    assert_eq!(e["argument"], "name");
    assert!(e["message"]
        .as_str()
        .unwrap_or_default()
        .contains("required"));

    let e = err(&s, "query_artifacts", json!({"limit": "many"}));
    assert_eq!(e["argument"], "limit");
    let e = err(&s, "query_artifacts", json!({"limit": 0}));
    assert_eq!(e["argument"], "limit");
    assert!(e["message"]
        .as_str()
        .unwrap_or_default()
        .contains("1 to 200"));
    let e = err(&s, "query_artifacts", json!({"kinds": [3]}));
    assert_eq!(e["argument"], "kinds");
    let e = err(&s, "query_artifacts", json!({"kinds": ["Not A Kind"]}));
    assert_eq!(e["argument"], "kinds");
    let e = err(&s, "query_artifacts", json!({"created_from": "yesterday"}));
    assert_eq!(e["argument"], "created_from");
    assert!(e["message"]
        .as_str()
        .unwrap_or_default()
        .contains("RFC 3339"));
    let e = err(
        &s,
        "query_artifacts",
        json!({"min_size": 10, "max_size": 5}),
    );
    assert_eq!(e["argument"], "min_size");
    let e = err(&s, "query_artifacts", json!({"subtree": true}));
    assert_eq!(e["argument"], "subtree");

    let e = err(&s, "read_part", json!({"artifact_id": "not-a-uuid"}));
    assert_eq!(e["argument"], "artifact_id");
    assert!(e["message"].as_str().unwrap_or_default().contains("UUID"));

    let e = err(&s, "list_sessions", json!({"status": ["running"]}));
    assert_eq!(e["argument"], "status");
    let e = err(
        &s,
        "checkpoint",
        json!({"session_id": "0192f0c4-9a5e-7b3c-8d2e-4f6a7b8c9d0e"}),
    );
    assert_eq!(e["argument"], "label");
    // null counts as absent (models send it for "not given").
    let v = ok(&s, "list_sessions", json!({"cursor": null, "limit": null}));
    assert_eq!(v["count"], 0);
}

#[test]
fn read_part_refuses_arguments_of_another_mode_and_bad_modes() {
    let s = server();
    let id = store_text(&s, "a.txt", "one\ntwo\n");
    let e = err(
        &s,
        "read_part",
        json!({"artifact_id": id, "mode": "grep", "lines": 5, "pattern": "o"}),
    );
    assert_eq!(e["argument"], "lines");
    assert!(e["message"]
        .as_str()
        .unwrap_or_default()
        .contains("pattern"));
    let e = err(
        &s,
        "read_part",
        json!({"artifact_id": id, "mode": "middle"}),
    );
    assert_eq!(e["argument"], "mode");
    let e = err(&s, "read_part", json!({"artifact_id": id, "mode": "grep"}));
    assert_eq!(e["argument"], "pattern");
    let e = err(
        &s,
        "read_part",
        json!({"artifact_id": id, "mode": "grep", "pattern": "(unclosed"}),
    );
    assert_eq!(e["argument"], "pattern");
    let e = err(
        &s,
        "read_part",
        json!({"artifact_id": id, "mode": "json", "path": "a[x]"}),
    );
    assert_eq!(e["argument"], "path");
    let e = err(
        &s,
        "read_part",
        json!({"artifact_id": id, "max_bytes": 1u64 << 30}),
    );
    assert_eq!(e["argument"], "max_bytes");
    let e = err(
        &s,
        "read_part",
        json!({"artifact_id": id, "mode": "bytes", "offset": 100}),
    );
    assert_eq!(e["argument"], "offset");
}

#[test]
fn store_output_returns_id_and_preview_never_the_content() {
    let s = server();
    let body: String = (1..=5000)
        .map(|i| format!("line {i} of the log\n"))
        .collect();
    let v = ok(
        &s,
        "store_output",
        json!({"name": "logs/run.log", "content": body, "tags": ["ci"], "metadata": {"cmd": "make test"}}),
    );
    let text = v.to_string();
    assert!(text.len() < 4000, "result is {} bytes", text.len());
    assert!(!text.contains("line 2500 of the log"));
    assert_eq!(v["size"], body.len());
    assert_eq!(v["preview"]["lines"], 5000);
    assert!(v["preview"]["head"]
        .as_str()
        .unwrap_or_default()
        .starts_with("line 1 of"));
    assert!(v["preview"]["tail"]
        .as_str()
        .unwrap_or_default()
        .contains("line 5000 of"));
    assert_eq!(v["tags"], json!(["ci"]));
    assert_eq!(v["kind"], "tool_result");
    let id = v["artifact_id"].as_str().unwrap_or_default();
    assert_eq!(v["uri"], format!("cairn://artifact/{id}"));
    // Same name again: a new version in the same (default) session.
    let v2 = ok(
        &s,
        "store_output",
        json!({"name": "logs/run.log", "content": "short"}),
    );
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["session_id"], v["session_id"]);

    // Exactly one source of content.
    let e = err(&s, "store_output", json!({"name": "x"}));
    assert_eq!(e["argument"], "content");
    let e = err(
        &s,
        "store_output",
        json!({"name": "x", "content": "a", "content_base64": "YQ=="}),
    );
    assert_eq!(e["argument"], "content_base64");
    let e = err(
        &s,
        "store_output",
        json!({"name": "x", "content_base64": "***"}),
    );
    assert_eq!(e["argument"], "content_base64");
    // Local files are off unless the options allow them.
    let e = err(
        &s,
        "store_output",
        json!({"name": "x", "path": "/etc/hostname"}),
    );
    assert_eq!(e["argument"], "path");
    let e = err(&s, "store_output", json!({"name": "", "content": "a"}));
    assert_eq!(e["argument"], "name");
    let e = err(
        &s,
        "store_output",
        json!({"name": "x", "content": "a", "kind": "Bad Kind"}),
    );
    assert_eq!(e["argument"], "kind");
    let b = ok(
        &s,
        "store_output",
        json!({"name": "bin", "content_base64": "AAEC/w=="}),
    );
    assert_eq!(b["size"], 4);
}

#[test]
fn read_part_modes_and_continue_with() {
    let s = server();
    let body: String = (1..=100)
        .map(|i| format!("row {i}{}\n", if i % 10 == 0 { " ERROR" } else { "" }))
        .collect();
    let id = store_text(&s, "r.txt", &body);

    let v = ok(
        &s,
        "read_part",
        json!({"artifact_id": id, "mode": "tail", "lines": 3}),
    );
    let nums: Vec<u64> = v["lines"]
        .as_array()
        .map(|l| l.iter().filter_map(|x| x["number"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(nums, vec![98, 99, 100]);
    assert_eq!(v["total_lines"], 100);
    assert_eq!(v["truncated"], false);
    assert!(v.get("continue_with").is_none());

    // A head of 10 continues at line 11 (lines mode) up to what was asked: nothing, here.
    let v = ok(&s, "read_part", json!({"artifact_id": id}));
    assert_eq!(v["lines"].as_array().map(Vec::len), Some(20));
    assert!(v.get("continue_with").is_none(), "{v}");

    // Cut by max_bytes: continue_with reads exactly the rest of what was asked.
    let v = ok(
        &s,
        "read_part",
        json!({"artifact_id": id, "mode": "lines", "start": 1, "count": 50, "max_bytes": 200}),
    );
    assert_eq!(v["truncated"], true);
    let got = v["lines"].as_array().map(Vec::len).unwrap_or(0) as u64;
    assert!(got > 0 && got < 50);
    let next = v["continue_with"].clone();
    assert_eq!(next["mode"], "lines");
    assert_eq!(next["start"], got + 1);
    assert_eq!(next["count"], 50 - got);
    assert_eq!(next["max_bytes"], 200);
    let v2 = ok(&s, "read_part", next);
    assert_eq!(v2["lines"][0]["number"], got + 1);

    // Grep with a match limit continues where it stopped.
    let v = ok(
        &s,
        "read_part",
        json!({"artifact_id": id, "mode": "grep", "pattern": "ERROR", "max_matches": 3, "context": 1}),
    );
    assert_eq!(v["matches"], 3);
    let matched: Vec<u64> = v["lines"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|x| x["matched"] == true)
                .filter_map(|x| x["number"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(matched, vec![10, 20, 30]);
    let next = v["continue_with"].clone();
    assert_eq!(next["mode"], "grep");
    assert_eq!(next["pattern"], "ERROR");
    let v2 = ok(&s, "read_part", next);
    assert_eq!(
        v2["lines"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["matched"] == true))
            .map(|x| x["number"].clone()),
        Some(json!(40))
    );

    // Bytes.
    let v = ok(
        &s,
        "read_part",
        json!({"artifact_id": id, "mode": "bytes", "offset": 0, "length": 6}),
    );
    assert_eq!(v["data"]["data"], "row 1\n");
    assert_eq!(v["result"], "bytes");
}

#[test]
fn json_modes_read_one_field() {
    let s = server();
    let id = store_text(
        &s,
        "r.json",
        r#"{"summary": {"passed": 41, "failed": [{"name": "t_io"}]}, "log": "long"}"#,
    );
    let v = ok(
        &s,
        "read_part",
        json!({"artifact_id": id, "mode": "json", "path": "summary.failed[0].name"}),
    );
    assert_eq!(v["found"], true);
    assert_eq!(v["value"], "t_io");
    let lines = store_text(&s, "r.jsonl", "{\"a\": 1}\n{\"a\": 2}\nnot json\n");
    let v = ok(
        &s,
        "read_part",
        json!({"artifact_id": lines, "mode": "json_lines", "path": "/a"}),
    );
    let items = v["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 3);
    assert_eq!(items[1]["value"], 2);
    assert!(items[2]["error"].is_string());
}

#[test]
fn store_errors_say_what_to_do() {
    let s = server();
    let e = err(
        &s,
        "read_part",
        json!({"artifact_id": "0192f0c4-9a5e-7b3c-8d2e-4f6a7b8c9d0e"}),
    );
    assert_eq!(e["code"], "artifact_not_found");
    assert!(e["message"]
        .as_str()
        .unwrap_or_default()
        .contains("query_artifacts"));
    let id = store_text(&s, "a.txt", "x");
    // The artifact exists, but not in this session.
    let other = ok(&s, "create_session", json!({"name": "other"}));
    let e = err(
        &s,
        "read_part",
        json!({"artifact_id": id, "session_id": other["session_id"]}),
    );
    assert_eq!(e["code"], "artifact_not_found");
    let e = err(
        &s,
        "store_output",
        json!({"name": "a", "content": "x", "session_id": "0192f0c4-9a5e-7b3c-8d2e-4f6a7b8c9d0e"}),
    );
    assert_eq!(e["code"], "session_not_found");
    assert!(s.call_blocking("no_such_tool", None).is_none());
}

#[test]
fn query_pages_with_every_filter() {
    let s = server();
    let sess = ok(&s, "create_session", json!({"name": "q"}));
    let sid = sess["session_id"].clone();
    for i in 0..7 {
        let tags = if i % 2 == 0 {
            json!(["even"])
        } else {
            json!(["odd"])
        };
        ok(
            &s,
            "store_output",
            json!({"session_id": sid, "name": format!("out/{i}.log"), "content": "x".repeat(i + 1), "tags": tags}),
        );
    }
    ok(
        &s,
        "store_output",
        json!({"session_id": sid, "name": "notes.md", "content": "n", "kind": "agent_output"}),
    );
    let mut seen = Vec::new();
    let mut args = json!({"session_id": sid, "name_glob": "out/*", "limit": 3});
    for _ in 0..10 {
        let v = ok(&s, "query_artifacts", args.clone());
        for a in v["artifacts"].as_array().cloned().unwrap_or_default() {
            seen.push(a["name"].as_str().unwrap_or_default().to_string());
        }
        match v.get("next_cursor") {
            Some(c) => args["cursor"] = c.clone(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    let v = ok(
        &s,
        "query_artifacts",
        json!({"session_id": sid, "tags_all": ["even"], "min_size": 3, "max_size": 5}),
    );
    let names: Vec<&str> = v["artifacts"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec!["out/2.log", "out/4.log"]);
    let v = ok(&s, "query_artifacts", json!({"kinds": ["agent_output"]}));
    assert_eq!(v["count"], 1);
    let v = ok(
        &s,
        "query_artifacts",
        json!({"tags_any": ["odd"], "descending": true, "limit": 1}),
    );
    assert_eq!(v["artifacts"][0]["name"], "out/5.log");
    assert!(v["next_cursor"].is_string());
    let e = err(&s, "query_artifacts", json!({"cursor": "garbage"}));
    assert_eq!(e["argument"], "cursor");
}

#[test]
fn sessions_checkpoint_and_fork() {
    let s = server();
    let a = ok(
        &s,
        "create_session",
        json!({"name": "task", "key": "task-1", "tags": ["ci"]}),
    );
    assert_eq!(a["created"], true);
    let again = ok(&s, "create_session", json!({"key": "task-1"}));
    assert_eq!(again["created"], false);
    assert_eq!(again["session_id"], a["session_id"]);
    let sid = a["session_id"].clone();
    ok(
        &s,
        "store_output",
        json!({"session_id": sid, "name": "f.txt", "content": "v1"}),
    );
    let cp = ok(
        &s,
        "checkpoint",
        json!({"session_id": sid, "label": "green", "state": {"step": 1}}),
    );
    assert_eq!(cp["artifact_count"], 1);
    ok(
        &s,
        "store_output",
        json!({"session_id": sid, "name": "g.txt", "content": "later"}),
    );
    let f = ok(
        &s,
        "fork",
        json!({"session_id": sid, "checkpoint_id": cp["checkpoint_id"], "name": "alt"}),
    );
    assert_eq!(f["parent_id"], sid);
    let v = ok(
        &s,
        "query_artifacts",
        json!({"session_id": f["session_id"]}),
    );
    assert_eq!(
        v["count"], 1,
        "the fork holds what the checkpoint held: {v}"
    );
    let v = ok(&s, "list_sessions", json!({"parent_id": sid}));
    assert_eq!(v["count"], 1);
    let v = ok(
        &s,
        "list_sessions",
        json!({"roots_only": true, "tags": ["ci"]}),
    );
    assert_eq!(v["count"], 1);
    let e = err(
        &s,
        "list_sessions",
        json!({"roots_only": true, "parent_id": sid}),
    );
    assert_eq!(e["argument"], "roots_only");
    let e = err(
        &s,
        "fork",
        json!({"session_id": sid, "checkpoint_id": "nope"}),
    );
    assert_eq!(e["argument"], "checkpoint_id");
}

#[test]
fn resource_uris_parse_or_say_the_forms() {
    let id = "0192f0c4-9a5e-7b3c-8d2e-4f6a7b8c9d0e";
    assert!(matches!(
        resources::parse_uri(&format!("cairn://artifact/{id}")),
        Ok(Target::Artifact(_))
    ));
    let t = resources::parse_uri(&format!("cairn://session/{id}/artifacts?cursor=abc"));
    assert!(
        matches!(t, Ok(Target::Session { cursor: Some(ref c), .. }) if c == "abc"),
        "{t:?}"
    );
    let e = resources::parse_uri("cairn://artifact/xyz")
        .err()
        .map(|e| e.message.to_string());
    assert!(e
        .unwrap_or_default()
        .contains("cairn://session/{session_id}/artifacts"));
    assert!(resources::parse_uri("file:///etc/passwd").is_err());
    assert!(resources::parse_uri(&format!("cairn://session/{id}/artifacts?limit=3")).is_err());
}

#[test]
fn resources_serve_text_binary_and_a_pointer_for_large_content() {
    let store = Store::memory();
    let s = CairnMcp::new(
        store.clone(),
        McpOptions {
            resource_cap: 1000,
            ..McpOptions::default()
        },
    );
    let small = store_text(&s, "s.txt", "hello\n");
    let bin = ok(
        &s,
        "store_output",
        json!({"name": "b.png", "content_base64": "iVBORw0KGgoAAAANSUhEUgAA", "mime_type": "image/png"}),
    );
    let big = store_text(&s, "big.txt", &"0123456789\n".repeat(500));

    let r = resources::read(&store, &format!("cairn://artifact/{small}"), 1000);
    let c = r.map(|r| r.contents).unwrap_or_default();
    assert!(
        matches!(&c[..], [ResourceContents::TextResourceContents { text, mime_type: Some(m), .. }] if text == "hello\n" && m == "text/plain"),
        "{c:?}"
    );

    let bid = bin["artifact_id"].as_str().unwrap_or_default();
    let r = resources::read(&store, &format!("cairn://artifact/{bid}"), 1000);
    let c = r.map(|r| r.contents).unwrap_or_default();
    assert!(
        matches!(&c[..], [ResourceContents::BlobResourceContents { blob, mime_type: Some(m), .. }] if blob == "iVBORw0KGgoAAAANSUhEUgAA" && m == "image/png"),
        "{c:?}"
    );

    let r = resources::read(&store, &format!("cairn://artifact/{big}"), 1000);
    let c = r.map(|r| r.contents).unwrap_or_default();
    let text = match &c[..] {
        [ResourceContents::TextResourceContents { text, .. }] => text.clone(),
        _ => String::new(),
    };
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(v["read_part"]["artifact_id"], big);
    assert!(v["omitted"]
        .as_str()
        .unwrap_or_default()
        .contains("5500 bytes"));
    assert!(!text.contains(&"0123456789\n".repeat(100)));

    // Listing: newest first, paged.
    let l = resources::list(&store, None);
    assert!(l.is_ok());
    let names: Vec<String> = l
        .map(|l| l.resources.iter().map(|r| r.name.clone()).collect())
        .unwrap_or_default();
    assert_eq!(names, vec!["big.txt", "b.png", "s.txt"]);

    // A session's artifacts, paged by next_uri.
    let sid = bin["session_id"].as_str().unwrap_or_default();
    let r = resources::read(&store, &format!("cairn://session/{sid}/artifacts"), 1000);
    let c = r.map(|r| r.contents).unwrap_or_default();
    let text = match &c[..] {
        [ResourceContents::TextResourceContents { text, .. }] => text.clone(),
        _ => String::new(),
    };
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(v["count"], 3);
    assert_eq!(v["session"]["session_id"], sid);
    let missing = resources::read(
        &store,
        "cairn://artifact/0192f0c4-9a5e-7b3c-8d2e-4f6a7b8c9d0e",
        1000,
    );
    assert_eq!(
        missing.err().map(|e| e.code),
        Some(rmcp::model::ErrorCode::RESOURCE_NOT_FOUND)
    );
}

#[test]
fn memo_store_then_lookup_hits_regardless_of_key_order() {
    let s = server();
    let args = json!({"path": "tests/", "flags": ["-x"], "n": 1});
    let miss = ok(
        &s,
        "memo_lookup",
        json!({"tool": "pytest", "arguments": args}),
    );
    assert_eq!(miss["hit"], false);
    let out = ok(
        &s,
        "store_output",
        json!({"name": "pytest.log", "content": "1 passed\n"}),
    );
    let stored = ok(
        &s,
        "memo_store",
        json!({"tool": "pytest", "arguments": args, "artifact_id": out["artifact_id"], "ttl_seconds": 3600}),
    );
    assert_eq!(stored["stored"], true);
    assert!(stored["expires_at"].is_string());
    // Same arguments, other key order: a hit with the artifact and its preview.
    let hit = ok(
        &s,
        "memo_lookup",
        json!({"tool": "pytest", "arguments": {"n": 1, "flags": ["-x"], "path": "tests/"}}),
    );
    assert_eq!(hit["hit"], true);
    assert_eq!(hit["artifact"]["artifact_id"], out["artifact_id"]);
    assert_eq!(hit["preview"]["lines"], 1);
    // Other arguments or another tool: a miss.
    let other = ok(
        &s,
        "memo_lookup",
        json!({"tool": "pytest", "arguments": {"path": "src/"}}),
    );
    assert_eq!(other["hit"], false);
    let other = ok(
        &s,
        "memo_lookup",
        json!({"tool": "cargo", "arguments": args}),
    );
    assert_eq!(other["hit"], false);

    let e = err(
        &s,
        "memo_store",
        json!({"tool": "pytest", "arguments": {}, "artifact_id": out["artifact_id"], "ttl_seconds": 0}),
    );
    assert_eq!(e["argument"], "ttl_seconds");
    let e = err(&s, "memo_lookup", json!({"tool": "", "arguments": {}}));
    assert_eq!(e["argument"], "tool");
    let e = err(&s, "memo_lookup", json!({"tool": "pytest"}));
    assert_eq!(e["argument"], "arguments");
    let e = err(
        &s,
        "memo_store",
        json!({"tool": "pytest", "arguments": {}, "artifact_id": "0192f0c4-9a5e-7b3c-8d2e-4f6a7b8c9d0e"}),
    );
    assert_eq!(e["code"], "artifact_not_found");
}

#[test]
fn a_read_only_service_reads_and_refuses_every_writing_tool() {
    let store = Store::memory();
    let rw = CairnMcp::new(store.clone(), McpOptions::default());
    let id = store_text(&rw, "a.log", "one\ntwo\n");
    let ro = CairnMcp::new(
        store,
        McpOptions {
            read_only: true,
            ..McpOptions::default()
        },
    );
    let r = ok(
        &ro,
        "read_part",
        json!({"artifact_id": id, "mode": "tail", "lines": 1}),
    );
    assert_eq!(r["lines"][0]["text"], "two");
    let mut writers = 0;
    for t in tools::all().iter().filter(|t| !t.read_only) {
        let e = err(&ro, t.name, (t.example)());
        assert_eq!(e["code"], "forbidden", "{}", t.name);
        assert!(
            e["message"].as_str().unwrap_or("").contains("read-only"),
            "{e}"
        );
        writers += 1;
    }
    assert!(writers >= 4, "{writers}");
}
