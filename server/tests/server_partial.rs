//! Partial reads, previews and the tool-call memo over HTTP, against a real server on
//! 127.0.0.1: every part kind, the result's continuation fields, clear errors, and tenant scope
//! (another tenant's artifact or memo entry is not found).

use crate::common;

use common::TestServer;
use serde_json::{json, Value};

fn log(n: u64) -> String {
    (1..=n)
        .map(|i| {
            if i % 50 == 0 {
                format!("{i} WARN slow call {i}\n")
            } else {
                format!("{i} ok\n")
            }
        })
        .collect()
}

fn texts(v: &Value) -> Vec<String> {
    v["content"]["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lines in {v}"))
        .iter()
        .map(|l| l["text"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_part_kind_over_http() {
    let srv = TestServer::start();
    let c = srv.anon();
    let sid = c.session(&json!({"name": "p"}));
    let content = log(500);
    let all: Vec<&str> = content.lines().collect();
    let id = c.put(&sid, "run.log", content.as_bytes())["id"]
        .as_str()
        .unwrap()
        .to_string();
    let read = |q: &str| {
        let r = c.get(&format!("/v1/artifacts/{id}/read?{q}"));
        assert_eq!(r.status, 200, "{q}: {}", String::from_utf8_lossy(&r.body));
        r.json()
    };

    // Default: head 20.
    let v = read("");
    assert_eq!(texts(&v), all[..20].to_vec());
    assert_eq!(v["next_line"], 21);
    assert_eq!(v["total_lines"], 500);
    assert_eq!(
        v["hash"],
        c.get(&format!("/v1/artifacts/{id}")).json()["hash"]
    );

    assert_eq!(texts(&read("part=tail&lines=3")), all[497..].to_vec());
    assert_eq!(
        texts(&read("part=lines&start=100&count=2")),
        all[99..101].to_vec()
    );
    let v = read("part=bytes&offset=10&len=25");
    assert_eq!(v["content"]["data"]["data"], &content[10..35]);
    assert_eq!(v["next_offset"], 35);

    let v = read("part=grep&pattern=warn&ignore_case=true&context=1&max_matches=2");
    assert_eq!(v["content"]["matches"], 2);
    assert_eq!(v["truncated"], true);
    assert_eq!(v["next_line"], 150);
    let nums: Vec<u64> = v["content"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["number"].as_u64().unwrap())
        .collect();
    assert_eq!(nums, [49, 50, 51, 99, 100, 101]);

    // A byte limit cuts lines and says where to go on.
    let v = read("part=lines&start=1&count=500&max_bytes=200");
    assert_eq!(v["truncated"], true);
    let got = texts(&v).len() as u64;
    assert!(got > 0 && got < 500);
    assert_eq!(v["next_line"], got + 1);

    let doc = br#"{"a":{"b":[10,20,30]},"z":true}"#;
    let did = c.put(&sid, "doc.json", doc)["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c.get(&format!(
        "/v1/artifacts/{did}/read?part=json&path=a.b%5B2%5D"
    ));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["content"]["value"], 30);
    let r = c.get(&format!("/v1/artifacts/{did}/read?part=json&path=/nope"));
    assert_eq!(r.json()["content"]["found"], false);
    let r = c.get(&format!("/v1/artifacts/{did}/preview"));
    assert_eq!(r.status, 200);
    let p = r.json();
    assert_eq!(p["mime_type"], "application/json");
    assert_eq!(p["json_keys"], json!(["a", "z"]));

    let jl = "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n";
    let jid = c.put(&sid, "e.jsonl", jl.as_bytes())["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c.get(&format!(
        "/v1/artifacts/{jid}/read?part=json_lines&path=n&start=2"
    ));
    let vals: Vec<u64> = r.json()["content"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["value"].as_u64().unwrap())
        .collect();
    assert_eq!(vals, [2, 3]);
}

#[test]
fn bad_reads_are_clear_errors() {
    let srv = TestServer::start();
    let c = srv.anon();
    let sid = c.session(&json!({"name": "p"}));
    let id = c.put(&sid, "x.txt", b"one\ntwo\n")["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (q, status, needle) in [
        ("part=nope", 400, "json_lines"),
        ("part=head&pattern=x", 400, "pattern"),
        ("part=grep", 400, "pattern"),
        ("part=grep&pattern=(", 400, "pattern"),
        ("part=lines&start=0", 400, "numbered from 1"),
        ("part=bytes&offset=99", 400, "past the end"),
        ("part=head&lines=x", 400, "lines"),
        ("max_bytes=0", 400, "max_bytes"),
        ("bogus=1", 400, "bogus"),
    ] {
        let r = c.get(&format!("/v1/artifacts/{id}/read?{q}"));
        assert_eq!(
            r.status,
            status,
            "{q}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.code(), "invalid_input", "{q}");
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(needle), "{q}: {msg}");
    }
    let r = c.get("/v1/artifacts/0190f0f0-0000-7000-8000-000000000000/read");
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "artifact_not_found");
    let r = c.get("/v1/artifacts/not-an-id/preview");
    assert_eq!(r.status, 400);
}

#[test]
fn memo_over_http_is_scoped_to_the_tenant() {
    let srv = TestServer::start();
    let ta = srv.token("a", false, false);
    let tb = srv.token("b", false, false);
    let ro = srv.token("a", false, true);
    let (a, b, a_ro) = (srv.client(&ta), srv.client(&tb), srv.client(&ro));
    let sid = a.session(&json!({"name": "m"}));
    let id = a.put(&sid, "ls.out", b"x\ny\n")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let key = json!({"tool": "ls", "args": {"path": "/", "all": true}});

    let r = a.post("/v1/memo/lookup", &key);
    assert_eq!(r.status, 200);
    assert!(r.json()["hit"].is_null());
    let r = a.json(
        "PUT",
        "/v1/memo",
        &json!({"tool": "ls", "args": {"all": true, "path": "/"}, "artifact_id": id}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = a.post("/v1/memo/lookup", &key);
    assert_eq!(r.json()["hit"]["artifact"]["id"], id.as_str());
    // A read-only token may look up, not store.
    assert_eq!(
        a_ro.post("/v1/memo/lookup", &key).json()["hit"]["artifact"]["id"],
        id.as_str()
    );
    let r = a_ro.json(
        "PUT",
        "/v1/memo",
        &json!({"tool": "ls", "args": {}, "artifact_id": id}),
    );
    assert_eq!(r.status, 403);
    // Another tenant sees neither the entry nor the artifact.
    assert!(b.post("/v1/memo/lookup", &key).json()["hit"].is_null());
    let r = b.json(
        "PUT",
        "/v1/memo",
        &json!({"tool": "ls", "args": {}, "artifact_id": id}),
    );
    assert_eq!(r.status, 404);
    assert_eq!(b.get(&format!("/v1/artifacts/{id}/read")).status, 404);

    let st = a.get("/v1/memo/stats?tool=ls").json();
    assert_eq!(
        (st["hits"].as_u64(), st["misses"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(b.get("/v1/memo/stats").json()["misses"], 1);

    let r = a.json("PUT", "/v1/memo/ttl/ls", &json!({"ttl_secs": 60}));
    assert_eq!(r.json()["ttl_secs"], 60);
    assert_eq!(a.get("/v1/memo/ttl/ls").json()["ttl_secs"], 60);
    assert!(b.get("/v1/memo/ttl/ls").json()["ttl_secs"].is_null());

    assert_eq!(a.post("/v1/memo/forget", &key).json()["removed"], true);
    assert!(a.post("/v1/memo/lookup", &key).json()["hit"].is_null());

    // Bad bodies name what is wrong.
    let r = a.post("/v1/memo/lookup", &json!({"tool": "", "args": {}}));
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    let r = a.post("/v1/memo/lookup", &json!({"tool": "ls", "argz": {}}));
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("argz"));
    let r = a.post(
        "/v1/memo/lookup",
        &json!({"tool": "ls", "session_id": "nope"}),
    );
    assert_eq!(r.status, 400);
}

#[test]
fn memo_over_http_is_scoped_to_a_session_subtree_and_expires_with_its_ttl() {
    let srv = TestServer::start();
    let c = srv.anon();
    let root = c.session(&json!({"name": "root"}));
    let child = c.session(&json!({"name": "child", "parent": root}));
    let other = c.session(&json!({"name": "other"}));
    let id = c.put(&child, "pytest.out", b"1 passed\n")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let args = json!({"path": "tests/", "k": "slow"});
    let lookup = |session: &str| {
        let r = c.post(
            "/v1/memo/lookup",
            &json!({"tool": "pytest", "args": args, "session_id": session}),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["hit"].clone()
    };

    // An artifact outside the session's subtree cannot be its result.
    let r = c.json(
        "PUT",
        "/v1/memo",
        &json!({"tool": "pytest", "args": args, "artifact_id": id, "session_id": other}),
    );
    assert_eq!(r.status, 404, "{}", String::from_utf8_lossy(&r.body));
    let r = c.json(
        "PUT",
        "/v1/memo",
        &json!({"tool": "pytest", "args": args, "artifact_id": id, "session_id": root}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // Seen from the session and from under it; not from another tree nor store-wide.
    assert_eq!(lookup(&child)["artifact"]["id"], id.as_str());
    assert_eq!(lookup(&root)["artifact"]["id"], id.as_str());
    assert!(lookup(&other).is_null());
    let r = c.post("/v1/memo/lookup", &json!({"tool": "pytest", "args": args}));
    assert!(r.json()["hit"].is_null());
    let st = c.get("/v1/memo/stats?tool=pytest").json();
    assert_eq!(
        (st["hits"].as_u64(), st["misses"].as_u64()),
        (Some(2), Some(2))
    );

    // A TTL applies to the entry already stored: long, it has an expiry; zero, it is gone.
    let r = c.json("PUT", "/v1/memo/ttl/pytest", &json!({"ttl_secs": 3600}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(lookup(&child)["expires_at"].is_string());
    c.json("PUT", "/v1/memo/ttl/pytest", &json!({"ttl_secs": 0}));
    assert!(lookup(&child).is_null());
    // Expired entries are removed, so clearing the TTL does not bring it back.
    c.json("PUT", "/v1/memo/ttl/pytest", &json!({"ttl_secs": null}));
    assert!(lookup(&child).is_null());
}
