//! The routes against a real server on 127.0.0.1 with a real HTTP client: sessions, artifacts,
//! content (ETag, ranges), queries, errors and their shapes.

use crate::common;

use common::TestServer;
use serde_json::json;

#[test]
fn sessions_lifecycle_and_listing() {
    let srv = TestServer::start();
    let c = srv.anon();
    let root = c.session(&json!({"name": "run-1", "tags": ["demo"], "metadata": {"model": "m1"}}));
    let child = c.session(&json!({"name": "child", "parent": root}));

    let r = c.get(&format!("/v1/sessions/{root}"));
    assert_eq!(r.status, 200);
    let s = r.json();
    assert_eq!(s["name"], "run-1");
    assert_eq!(s["tags"], json!(["demo"]));
    assert_eq!(s["metadata"]["model"], "m1");
    assert_eq!(s["status"], "active");
    assert!(r.header("x-request-id").is_some_and(|v| !v.is_empty()));

    let r = c.get(&format!("/v1/sessions/{root}/children"));
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert_eq!(r.json()[0]["id"], child.as_str());
    let r = c.get(&format!("/v1/sessions/{root}/tree"));
    let ids: Vec<_> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(root), json!(child)]);

    // Filters and cursor pages.
    let r = c.get("/v1/sessions?roots=true");
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    let r = c.get(&format!("/v1/sessions?parent={root}"));
    assert_eq!(r.json()["items"][0]["id"], child.as_str());
    let r = c.get("/v1/sessions?limit=1");
    let page = r.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let r = c.get(&format!("/v1/sessions?limit=1&cursor={cursor}"));
    assert_eq!(r.json()["items"][0]["id"], child.as_str());
    assert!(r.json()["next_cursor"].is_null());
    let r = c.get("/v1/sessions?tag=demo&status=active");
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);

    // Update metadata and tags.
    let r = c.json(
        "PATCH",
        &format!("/v1/sessions/{root}"),
        &json!({"metadata": {"step": 2, "model": null}, "add_tags": ["x"], "remove_tags": ["demo"]}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["metadata"], json!({"step": 2}));
    assert_eq!(r.json()["tags"], json!(["x"]));

    // Lifecycle: suspend, resume, fail with a reason; a terminal session refuses more.
    let r = c.post(&format!("/v1/sessions/{child}/suspend"), &json!({}));
    assert_eq!(r.json()["status"], "suspended");
    let r = c.call("POST", &format!("/v1/sessions/{child}/resume"), &[]);
    assert_eq!(r.status, 200, "an empty body is allowed");
    assert_eq!(r.json()["status"], "active");
    let r = c.post(
        &format!("/v1/sessions/{child}/fail"),
        &json!({"reason": "tool crashed"}),
    );
    assert_eq!(r.json()["status"], "failed");
    assert_eq!(r.json()["reason"], "tool crashed");
    let r = c.post(&format!("/v1/sessions/{child}/complete"), &json!({}));
    assert_eq!(r.status, 409);
    assert_eq!(r.code(), "invalid_transition");

    // Events page.
    let r = c.get(&format!("/v1/sessions/{child}/events?limit=2"));
    assert_eq!(r.status, 200);
    let ev = r.json();
    assert_eq!(ev["items"][0]["type"], "created");
    let next = ev["next_cursor"].as_str().unwrap();
    let r = c.get(&format!("/v1/sessions/{child}/events?after={next}"));
    assert!(r.json()["items"].as_array().unwrap().len() >= 2);
    let r = c.post(
        &format!("/v1/sessions/{root}/events"),
        &json!({"name": "tool_call", "payload": {"tool": "grep"}}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));

    let r = c.get(&format!("/v1/sessions/{root}/stats"));
    assert_eq!(r.status, 200);

    // Delete: refused with children unless recursive.
    let r = c.call("DELETE", &format!("/v1/sessions/{root}"), &[]);
    assert_eq!(r.status, 409);
    assert_eq!(r.code(), "has_children");
    let r = c.call(
        "DELETE",
        &format!("/v1/sessions/{root}?recursive=true"),
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["sessions"], 2);
    let r = c.get(&format!("/v1/sessions/{root}"));
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "session_not_found");
}

#[test]
fn get_or_create_by_key() {
    let srv = TestServer::start();
    let c = srv.anon();
    let r = c.json("PUT", "/v1/sessions/by-key/job-7", &json!({"name": "job"}));
    assert_eq!(r.status, 201);
    let id = r.json()["id"].clone();
    let r = c.json("PUT", "/v1/sessions/by-key/job-7", &json!({}));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], id);
    assert_eq!(r.json()["key"], "job-7");
    let r = c.post("/v1/sessions", &json!({"key": "job-7"}));
    assert_eq!(r.status, 409);
    assert_eq!(r.code(), "key_conflict");
}

#[test]
fn artifacts_put_show_list_versions_query_delete() {
    let srv = TestServer::start();
    let c = srv.anon();
    let s = c.session(&json!({}));
    let r = c.bytes(
        "PUT",
        &format!("/v1/sessions/{s}/artifacts/grep%2Fout.txt?kind=tool_result&tag=grep&tag=t2&metadata=%7B%22n%22%3A1%7D&mime_type=text%2Fplain"),
        &[],
        b"hello".to_vec(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let a = r.json();
    assert_eq!(a["name"], "grep/out.txt");
    assert_eq!(a["version"], 1);
    assert_eq!(a["size"], 5);
    assert_eq!(a["tags"], json!(["grep", "t2"]));
    assert_eq!(a["metadata"], json!({"n": 1}));
    assert_eq!(a["mime_type"], "text/plain");
    assert_eq!(a["hash"], blake3::hash(b"hello").to_hex().as_str());
    let v2 = c.put(&s, "grep%2Fout.txt", b"hello again");
    assert_eq!(v2["version"], 2);

    let r = c.get(&format!("/v1/artifacts/{}", a["id"].as_str().unwrap()));
    assert_eq!(r.json(), a);
    let r = c.get(&format!("/v1/sessions/{s}/artifacts/grep%2Fout.txt"));
    assert_eq!(r.json()["version"], 2);
    let r = c.get(&format!(
        "/v1/sessions/{s}/artifacts/grep%2Fout.txt?version=1"
    ));
    assert_eq!(r.json()["id"], a["id"]);
    let r = c.get(&format!(
        "/v1/sessions/{s}/artifacts/grep%2Fout.txt/versions"
    ));
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    let r = c.get(&format!("/v1/sessions/{s}/artifacts?limit=1"));
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    assert!(r.json()["next_cursor"].is_string());

    // Query with filters.
    c.put(&s, "notes.md", b"# notes");
    let r = c.get("/v1/artifacts?name=*.txt&latest=true");
    let items = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["version"], 2);
    let r = c.get("/v1/artifacts?tag=grep&tag=t2");
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    let r = c.get(&format!("/v1/artifacts?session={s}&min_size=6"));
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 2);
    let r = c.get("/v1/artifacts?kind=tool_result&max_size=5");
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    let r = c.get("/v1/artifacts?name=%5B");
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "invalid_glob");
    let r = c.get("/v1/artifacts?colour=red");
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "invalid_input");

    // Delete.
    let r = c.call(
        "DELETE",
        &format!("/v1/artifacts/{}", a["id"].as_str().unwrap()),
        &[],
    );
    assert_eq!(r.status, 200);
    let r = c.get(&format!("/v1/artifacts/{}", a["id"].as_str().unwrap()));
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "artifact_not_found");
}

#[test]
fn content_etag_and_ranges() {
    let srv = TestServer::start();
    let c = srv.anon();
    let s = c.session(&json!({}));
    let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let a = c.put(&s, "data.bin", &body);
    let id = a["id"].as_str().unwrap();
    let path = format!("/v1/artifacts/{id}/content");

    let r = c.get(&path);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
    let etag = r.header("etag").unwrap();
    assert_eq!(etag, format!("\"{}\"", a["hash"].as_str().unwrap()));
    assert_eq!(r.header("accept-ranges").as_deref(), Some("bytes"));

    let r = c.call("GET", &path, &[("if-none-match", &etag)]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = c.call("GET", &path, &[("if-none-match", "\"other\"")]);
    assert_eq!(r.status, 200);

    let r = c.call("GET", &path, &[("range", "bytes=10-19")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body[10..20]);
    assert_eq!(
        r.header("content-range").as_deref(),
        Some("bytes 10-19/1000")
    );
    let r = c.call("GET", &path, &[("range", "bytes=-5")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body[995..]);
    let r = c.call("GET", &path, &[("range", "bytes=990-")]);
    assert_eq!(r.body, &body[990..]);
    let r = c.call("GET", &path, &[("range", "bytes=1000-")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.code(), "range_not_satisfiable");
    assert_eq!(r.header("content-range").as_deref(), Some("bytes */1000"));
}

#[test]
fn errors_have_one_shape_and_the_right_status() {
    let srv = TestServer::start();
    let c = srv.anon();
    let r = c.get("/v1/nothing-here");
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "not_found");
    let r = c.get("/v1/sessions/not-a-uuid");
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "invalid_input");
    let r = c.bytes(
        "POST",
        "/v1/sessions",
        &[("content-type", "application/json")],
        b"{not json".to_vec(),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "invalid_input");
    let r = c.post("/v1/sessions", &json!({"nme": "typo"}));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nme"));
    let r = c.call("PATCH", "/v1/artifacts", &[]);
    assert_eq!(r.status, 405);
    assert_eq!(r.code(), "method_not_allowed");
    let s = c.session(&json!({}));
    let r = c.bytes(
        "PUT",
        &format!("/v1/sessions/{s}/artifacts/x"),
        &[],
        b"1".to_vec(),
    );
    assert_eq!(r.status, 400, "kind is required");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("kind"));
    let r = c.get("/v1/sessions?limit=0");
    assert_eq!(r.code(), "invalid_input");
    c.post(&format!("/v1/sessions/{s}/complete"), &json!({}));
    let r = c.bytes(
        "PUT",
        &format!("/v1/sessions/{s}/artifacts/x?kind=tool_result"),
        &[],
        b"1".to_vec(),
    );
    assert_eq!(r.status, 409);
    assert_eq!(r.code(), "session_closed");
}

#[test]
fn health_readiness_openapi_and_metrics() {
    // `open_admin`: anonymous loopback callers may read /metrics (server_security.rs checks
    // that they may not by default).
    let srv = TestServer::start_with(|c| c.open_admin = true);
    let c = srv.anon();
    assert_eq!(c.get("/healthz").json()["status"], "ok");
    assert_eq!(c.get("/readyz").json()["status"], "ready");
    let doc = c.get("/openapi.json").json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let s = c.session(&json!({}));
    c.put(&s, "a", b"abc");
    let m = c.get("/metrics");
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body).unwrap();
    assert!(
        text.contains(
            "cairn_http_requests_total{route=\"/v1/sessions\",method=\"POST\",status=\"201\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("cairn_store_artifacts{tenant=\"default\"} 1"),
        "{text}"
    );
    assert!(text.contains("cairn_http_request_duration_seconds_bucket{route=\"/v1/sessions/{id}/artifacts/{name}\",le=\"+Inf\"} 1"), "{text}");
}
