//! Tokens, scopes and tenant isolation against a real server: every cross-tenant access looks
//! exactly like access to something that never existed.

use crate::common;

use common::{Resp, TestServer};
use serde_json::json;

/// The response with every occurrence of `id` replaced, for byte-for-byte comparison.
fn masked(r: &Resp, id: &str) -> (u16, String) {
    (
        r.status,
        String::from_utf8_lossy(&r.body).replace(id, "<ID>"),
    )
}

#[test]
fn tokens_are_required_once_one_exists_and_scopes_hold() {
    let srv = TestServer::start();
    // Open mode: no tokens, loopback.
    assert_eq!(srv.anon().get("/v1/sessions").status, 200);

    let writer = srv.token("acme", false, false);
    let reader = srv.token("acme", false, true);
    let admin = srv.token("acme", true, false);

    // The running server saw the new tokens without a restart: anonymous access is over.
    let r = srv.anon().get("/v1/sessions");
    assert_eq!(r.status, 401);
    assert_eq!(r.code(), "unauthorized");
    let r = srv.client("cairn_0000").get("/v1/sessions");
    assert_eq!(r.status, 401);
    let r = srv
        .anon()
        .call("GET", "/v1/sessions", &[("authorization", "Basic abc")]);
    assert_eq!(r.status, 401);
    // Health and the document stay public.
    assert_eq!(srv.anon().get("/healthz").status, 200);
    assert_eq!(srv.anon().get("/openapi.json").status, 200);

    let w = srv.client(&writer);
    let s = w.session(&json!({"name": "x"}));
    let a = w.put(&s, "a.txt", b"abc");

    let ro = srv.client(&reader);
    assert_eq!(ro.get(&format!("/v1/sessions/{s}")).status, 200);
    let r = ro.get(&format!(
        "/v1/artifacts/{}/content",
        a["id"].as_str().unwrap()
    ));
    assert_eq!(r.body, b"abc");
    let r = ro.post("/v1/sessions", &json!({}));
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "forbidden");
    let r = ro.bytes(
        "PUT",
        &format!("/v1/sessions/{s}/artifacts/b?kind=tool_result"),
        &[],
        b"x".to_vec(),
    );
    assert_eq!(r.status, 403);
    let r = ro.call(
        "DELETE",
        &format!("/v1/artifacts/{}", a["id"].as_str().unwrap()),
        &[],
    );
    assert_eq!(r.status, 403);
    // A probe is a read.
    let r = ro.post("/v1/blobs/missing", &json!({"hashes": [a["hash"]]}));
    assert_eq!(r.status, 200);

    // Admin routes and /metrics need the admin scope.
    for path in ["/v1/admin/stats", "/metrics"] {
        let r = w.get(path);
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.code(), "forbidden");
    }
    let ad = srv.client(&admin);
    let r = ad.get("/v1/admin/stats");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["artifacts"], 1);
    let r = ad.post("/v1/admin/gc", &json!({}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = ad.post("/v1/admin/verify", &json!({}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(ad.get("/metrics").status, 200);

    // Revocation takes effect at once.
    let file = cairn_server::auth::load_tokens(srv.data()).unwrap();
    let id = file
        .tokens
        .iter()
        .find(|t| t.read_only)
        .map(|t| t.id.clone())
        .unwrap();
    cairn_server::auth::revoke_token(srv.data(), &id).unwrap();
    let r = ro.get(&format!("/v1/sessions/{s}"));
    assert_eq!(r.status, 401);
    assert_eq!(w.get(&format!("/v1/sessions/{s}")).status, 200);
}

#[test]
fn tokens_file_keeps_only_hashes() {
    let srv = TestServer::start();
    let t = srv.token("acme", false, false);
    let text = std::fs::read_to_string(srv.data().join("tokens.json")).unwrap();
    assert!(!text.contains(&t["cairn_".len()..]));
    assert!(text.contains(blake3::hash(t.as_bytes()).to_hex().as_str()));
}

#[test]
fn cross_tenant_access_is_indistinguishable_from_absence() {
    let srv = TestServer::start();
    let a = srv.client(&srv.token("alpha", false, false));
    let b = srv.client(&srv.token("beta", false, false));

    let sa = a.session(&json!({"name": "secret"}));
    let art = a.put(&sa, "secret.txt", b"alpha's secret content");
    let aid = art["id"].as_str().unwrap().to_string();
    let hash = art["hash"].as_str().unwrap().to_string();
    let cp = a.post(
        &format!("/v1/sessions/{sa}/checkpoints"),
        &json!({"label": "c1"}),
    );
    assert_eq!(cp.status, 201);
    let cpid = cp.json()["id"].as_str().unwrap().to_string();

    // Ids that never existed anywhere (same format).
    let sb = b.session(&json!({}));
    let never_s = "0190f1d2-0000-7000-8000-000000000000";
    let never_a = "0190f1d2-0000-7000-8000-000000000001";
    let never_c = "0190f1d2-0000-7000-8000-000000000002";
    let never_hash = blake3::hash(b"never stored by anyone").to_hex().to_string();

    let s_pair = |suffix: &str| {
        (
            format!("/v1/sessions/{sa}{suffix}"),
            sa.clone(),
            format!("/v1/sessions/{never_s}{suffix}"),
            never_s.to_string(),
        )
    };
    let pairs = vec![
        s_pair(""),
        s_pair("/artifacts"),
        s_pair("/events"),
        s_pair("/tree"),
        s_pair("/children"),
        s_pair("/timeline"),
        s_pair("/messages"),
        s_pair("/checkpoints"),
        s_pair("/lineage"),
        s_pair("/stats"),
        s_pair("/export"),
        s_pair("/artifacts/secret.txt"),
        s_pair("/artifacts/secret.txt/versions"),
        (
            format!("/v1/artifacts/{aid}"),
            aid.clone(),
            format!("/v1/artifacts/{never_a}"),
            never_a.to_string(),
        ),
        (
            format!("/v1/artifacts/{aid}/content"),
            aid.clone(),
            format!("/v1/artifacts/{never_a}/content"),
            never_a.to_string(),
        ),
        (
            format!("/v1/checkpoints/{cpid}"),
            cpid.clone(),
            format!("/v1/checkpoints/{never_c}"),
            never_c.to_string(),
        ),
        (
            format!("/v1/artifacts?session={sa}"),
            sa.clone(),
            format!("/v1/artifacts?session={never_s}"),
            never_s.to_string(),
        ),
    ];
    for (theirs, id1, never, id2) in &pairs {
        let r1 = b.get(theirs);
        let r2 = b.get(never);
        assert_eq!(
            r1.status,
            404,
            "{theirs}: {}",
            String::from_utf8_lossy(&r1.body)
        );
        assert_eq!(masked(&r1, id1), masked(&r2, id2), "{theirs}");
    }

    // Writes on their objects: the same not-found.
    let r1 = b.call("DELETE", &format!("/v1/artifacts/{aid}"), &[]);
    let r2 = b.call("DELETE", &format!("/v1/artifacts/{never_a}"), &[]);
    assert_eq!(masked(&r1, &aid), masked(&r2, never_a));
    let r1 = b.bytes(
        "PUT",
        &format!("/v1/sessions/{sa}/artifacts/x?kind=tool_result"),
        &[],
        b"x".to_vec(),
    );
    let r2 = b.bytes(
        "PUT",
        &format!("/v1/sessions/{never_s}/artifacts/x?kind=tool_result"),
        &[],
        b"x".to_vec(),
    );
    assert_eq!(r1.status, 404);
    assert_eq!(masked(&r1, &sa), masked(&r2, never_s));

    // Fork and merge of another tenant's session.
    let r1 = b.post(&format!("/v1/sessions/{sa}/fork"), &json!({}));
    let r2 = b.post(&format!("/v1/sessions/{never_s}/fork"), &json!({}));
    assert_eq!(r1.status, 404);
    assert_eq!(masked(&r1, &sa), masked(&r2, never_s));
    let r1 = b.post("/v1/sessions/merge", &json!({"sources": [sb, sa]}));
    let r2 = b.post("/v1/sessions/merge", &json!({"sources": [sb, never_s]}));
    assert_eq!(r1.status, 404);
    assert_eq!(masked(&r1, &sa), masked(&r2, never_s));
    let r1 = b.post(
        &format!("/v1/sessions/{sb}/fork"),
        &json!({"checkpoint": cpid}),
    );
    let r2 = b.post(
        &format!("/v1/sessions/{sb}/fork"),
        &json!({"checkpoint": never_c}),
    );
    assert_eq!(r1.status, 404);
    assert_eq!(masked(&r1, &cpid), masked(&r2, never_c));

    // The hash probe: alpha's content is "missing" for beta, like content nobody stored.
    let r = b.post("/v1/blobs/missing", &json!({"hashes": [hash, never_hash]}));
    assert_eq!(r.json()["missing"], json!([hash, never_hash]));
    let r = a.post("/v1/blobs/missing", &json!({"hashes": [hash, never_hash]}));
    assert_eq!(r.json()["missing"], json!([never_hash]));
    // And a content-first put naming alpha's hash stores nothing for beta.
    let put = |hash: &str| {
        b.bytes(
            "PUT",
            &format!("/v1/sessions/{sb}/artifacts/stolen?kind=tool_result"),
            &[("x-cairn-hash", hash), ("content-length", "0")],
            Vec::new(),
        )
    };
    let (r1, r2) = (put(&hash), put(&never_hash));
    assert_eq!(r1.status, 404);
    assert_eq!(r1.code(), "content_missing");
    assert_eq!(masked(&r1, &hash), masked(&r2, &never_hash));
    // Beta's view of the store is untouched.
    let r = b.get("/v1/artifacts");
    assert_eq!(r.json()["items"], json!([]));
}

#[test]
fn refuses_a_non_loopback_address_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cairn_server::ServerConfig::new(dir.path());
    c.listen = "0.0.0.0:0".parse().unwrap();
    let e = cairn_server::spawn(c.clone()).err().expect("must refuse");
    assert!(e.contains("without tokens"), "{e}");
    cairn_server::auth::create_token(dir.path(), "t", false, false).unwrap();
    let s = cairn_server::spawn(c).expect("starts with a token");
    // The server answers on loopback too (0.0.0.0), and needs the token.
    let url = format!("http://127.0.0.1:{}", s.addr().port());
    let r = common::Client::new(&url, None).get("/v1/sessions");
    assert_eq!(r.status, 401);
    s.shutdown().unwrap();
}

#[test]
fn anonymous_loopback_reads_and_writes_but_does_not_administer() {
    let srv = TestServer::start();
    let c = srv.anon();
    // Read and write on the tenant `default`.
    let s = c.session(&json!({"name": "x"}));
    let a = c.put(&s, "a.txt", b"abc");
    let r = c.get(&format!(
        "/v1/artifacts/{}/content",
        a["id"].as_str().unwrap()
    ));
    assert_eq!(r.body, b"abc");
    // Administration is refused with the same answer as a non-admin token.
    for path in ["/v1/admin/stats", "/metrics"] {
        let r = c.get(path);
        assert_eq!(r.status, 403, "{path}");
        assert_eq!(r.code(), "forbidden", "{path}");
        assert!(
            String::from_utf8_lossy(&r.body).contains("admin"),
            "{path}: the message names the missing scope"
        );
    }
    assert_eq!(c.post("/v1/admin/gc", &json!({})).status, 403);
    assert_eq!(c.post("/v1/admin/verify", &json!({})).status, 403);
    let dir = srv.stop();

    // `open_admin` opens administration to anonymous loopback callers, on the same data.
    let srv = TestServer::start_in(dir, |c| c.open_admin = true);
    let c = srv.anon();
    let r = c.get("/v1/admin/stats");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["artifacts"], 1);
    assert_eq!(c.get("/metrics").status, 200);
    // An admin token still turns anonymous access off entirely, open_admin or not.
    let admin = srv.token("default", true, false);
    assert_eq!(c.get("/v1/admin/stats").status, 401);
    assert_eq!(srv.client(&admin).get("/v1/admin/stats").status, 200);
}
