//! Checkpoints, forks, copies, merges, timeline, conversations, bundles, content-first
//! uploads, and the OpenAPI document against the routes the server serves.

use crate::common;

use std::collections::BTreeSet;

use common::TestServer;
use serde_json::json;

#[test]
fn checkpoints_restore_fork_copy_merge() {
    let srv = TestServer::start();
    let c = srv.anon();
    let s = c.session(&json!({"name": "src"}));
    c.put(&s, "plan.md", b"v1");
    let r = c.post(
        &format!("/v1/sessions/{s}/checkpoints"),
        &json!({"label": "after-plan", "state": {"step": 1}}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let cp = r.json();
    let cpid = cp["id"].as_str().unwrap().to_string();
    assert_eq!(cp["label"], "after-plan");
    c.put(&s, "plan.md", b"v2");
    c.put(&s, "extra.txt", b"extra");

    let r = c.get(&format!("/v1/sessions/{s}/checkpoints"));
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        c.get(&format!("/v1/checkpoints/{cpid}")).json()["id"],
        cpid.as_str()
    );

    // Fork at the checkpoint: the fork sees v1 only.
    let r = c.post(
        &format!("/v1/sessions/{s}/fork"),
        &json!({"checkpoint": cpid, "name": "f"}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let fork = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["parent_id"], s.as_str());
    let r = c.get(&format!("/v1/sessions/{fork}/artifacts/plan.md"));
    let fid = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(c.get(&format!("/v1/artifacts/{fid}/content")).body, b"v1");
    let r = c.get(&format!("/v1/sessions/{fork}/lineage"));
    assert_eq!(r.json()[0]["source"], s.as_str());
    let r = c.post(&format!("/v1/sessions/{s}/fork"), &json!({"parent": s}));
    assert_eq!(r.status, 400, "fork takes no parent");

    // Copy as a root, and merge two sessions.
    let r = c.post(
        &format!("/v1/sessions/{s}/copy"),
        &json!({"root": true, "name": "copy"}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert!(r.json()["parent_id"].is_null());
    let other = c.session(&json!({}));
    c.put(&other, "plan.md", b"other");
    let r = c.post(
        "/v1/sessions/merge",
        &json!({"sources": [s, other], "name": "merged"}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let merged = r.json()["id"].as_str().unwrap().to_string();
    let r = c.get(&format!("/v1/sessions/{merged}/artifacts/plan.md/versions"));
    assert!(r.json().as_array().unwrap().len() >= 2);

    // Restore puts the session back; a backup checkpoint keeps what it replaced.
    let r = c.post(&format!("/v1/checkpoints/{cpid}/restore"), &json!({}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let rep = r.json();
    assert!(rep["backup"].is_string());
    let r = c.get(&format!("/v1/sessions/{s}/artifacts/extra.txt"));
    assert_eq!(r.status, 404);

    let r = c.call("DELETE", &format!("/v1/checkpoints/{cpid}"), &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        c.get(&format!("/v1/checkpoints/{cpid}")).code(),
        "checkpoint_not_found"
    );
}

#[test]
fn timeline_and_conversation() {
    let srv = TestServer::start();
    let c = srv.anon();
    let s = c.session(&json!({}));
    let r = c.post(
        &format!("/v1/sessions/{s}/messages"),
        &json!({"role": "user", "content": "hi"}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    c.post(
        &format!("/v1/sessions/{s}/messages"),
        &json!({"role": "assistant", "content": "hello"}),
    );
    let r = c.get(&format!("/v1/sessions/{s}/messages"));
    let m = r.json();
    assert_eq!(m.as_array().unwrap().len(), 2);
    assert_eq!(m[1]["content"], "hello");
    assert_eq!(m[1]["role"], "assistant");
    let r = c.get(&format!("/v1/sessions/{s}/messages?last=1"));
    assert_eq!(r.json()[0]["content"], "hello");
    let r = c.post(
        &format!("/v1/sessions/{s}/messages"),
        &json!({"role": "robot", "content": "x"}),
    );
    assert_eq!(r.status, 400);

    let r = c.get(&format!("/v1/sessions/{s}/timeline?limit=2"));
    assert_eq!(r.status, 200);
    let page = r.json();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cur = page["next_cursor"].as_str().unwrap();
    let r = c.get(&format!("/v1/sessions/{s}/timeline?cursor={cur}"));
    assert!(!r.json()["items"].as_array().unwrap().is_empty());
}

#[test]
fn export_and_import_stream_a_bundle() {
    let srv = TestServer::start();
    let c = srv.anon();
    let s = c.session(&json!({"name": "bundle-me", "key": "k1"}));
    c.put(&s, "a.txt", b"alpha");
    c.put(&s, "b.txt", &vec![42u8; 300_000]);
    let r = c.get(&format!("/v1/sessions/{s}/export"));
    assert_eq!(r.status, 200);
    assert!(r.body.len() > 10);
    let bundle = r.body;

    // Into another server (another tenant store), keeping ids.
    let srv2 = TestServer::start();
    let c2 = srv2.anon();
    let r = c2.bytes("POST", "/v1/import", &[], bundle.clone());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let r = c2.get(&format!("/v1/sessions/{s}/artifacts/b.txt"));
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        c2.get(&format!("/v1/artifacts/{id}/content")).body,
        vec![42u8; 300_000]
    );
    // Again into the same store: the ids exist, so it is refused, all or nothing.
    let r = c2.bytes("POST", "/v1/import", &[], bundle.clone());
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    // With new ids and without keys it goes in beside the original.
    let r = c2.bytes(
        "POST",
        "/v1/import?new_ids=true&drop_keys=true",
        &[],
        bundle,
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    // Garbage is not a bundle.
    let r = c2.bytes("POST", "/v1/import", &[], b"not a bundle".to_vec());
    assert!(r.status == 400 || r.status == 422, "{}", r.status);
}

#[test]
fn content_first_uploads() {
    let srv = TestServer::start();
    let c = srv.anon();
    let s = c.session(&json!({}));
    let known = c.put(&s, "first", b"shared content");
    let h_known = known["hash"].as_str().unwrap().to_string();
    let h_new = blake3::hash(b"new content").to_hex().to_string();
    let r = c.post("/v1/blobs/missing", &json!({"hashes": [h_known, h_new]}));
    assert_eq!(r.json()["missing"], json!([h_new]));

    // Present: an empty body with the declared hash makes the artifact.
    let r = c.bytes(
        "PUT",
        &format!("/v1/sessions/{s}/artifacts/second?kind=tool_result"),
        &[("x-cairn-hash", &h_known), ("content-length", "0")],
        Vec::new(),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["hash"], h_known.as_str());
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        c.get(&format!("/v1/artifacts/{id}/content")).body,
        b"shared content"
    );
    // Missing: the same request is 404 content_missing; with the bytes it succeeds.
    let path = format!("/v1/sessions/{s}/artifacts/third?kind=tool_result&hash={h_new}");
    let r = c.bytes("PUT", &path, &[("content-length", "0")], Vec::new());
    assert_eq!(r.status, 404);
    assert_eq!(r.code(), "content_missing");
    let r = c.bytes("PUT", &path, &[], b"new content".to_vec());
    assert_eq!(r.status, 201);
    // A body that does not match its declared hash is refused and not stored.
    let r = c.bytes("PUT", &path, &[], b"other content".to_vec());
    assert_eq!(r.status, 422);
    assert_eq!(r.code(), "hash_mismatch");
    let r = c.get(&format!("/v1/sessions/{s}/artifacts/third/versions"));
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    let r = c.post("/v1/blobs/missing", &json!({"hashes": ["xyz"]}));
    assert_eq!(r.status, 400);
    assert_eq!(r.code(), "invalid_input");
}

#[test]
fn openapi_document_lists_exactly_the_routes_served() {
    let srv = TestServer::start();
    let doc = srv.anon().get("/openapi.json").json();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if ["get", "put", "post", "patch", "delete"].contains(&method.as_str()) {
                documented.insert((method.to_uppercase(), path.clone()));
                // Every operation documents its error statuses with the error schema.
                let responses = op["responses"].as_object().unwrap();
                if !["/healthz", "/readyz", "/openapi.json"].contains(&path.as_str()) {
                    for code in ["401", "408", "500", "503"] {
                        assert!(responses.contains_key(code), "{method} {path} lacks {code}");
                    }
                }
            }
        }
    }
    let served: BTreeSet<_> = cairn_server::served_routes()
        .into_iter()
        .map(|(m, p)| (m.as_str().to_string(), p.to_string()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );
    assert!(served.len() >= 40, "{}", served.len());
    // The library's types are in the document, generated (not hand-written).
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "Session",
        "Artifact",
        "Event",
        "Checkpoint",
        "ErrorBody",
        "SessionStatus",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}
