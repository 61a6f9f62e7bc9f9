//! Limits against a real server: body size (413, from Content-Length and while streaming),
//! request and header timeouts (408), the concurrency cap (503 with
//! Retry-After) and per-tenant quotas.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::TestServer;
use serde_json::json;

fn raw(srv: &TestServer) -> TcpStream {
    let addr = srv.url.trim_start_matches("http://");
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

fn read_all(mut s: TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn body_size_limits() {
    let srv = TestServer::start_with(|c| {
        c.limits.max_body_bytes = 1000;
        c.limits.max_json_bytes = 200;
    });
    let c = srv.anon();
    let s = c.session(&json!({}));
    let path = format!("/v1/sessions/{s}/artifacts/big?kind=tool_result");

    // From Content-Length, before reading.
    let r = c.bytes("PUT", &path, &[], vec![7u8; 2000]);
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), "payload_too_large");
    // While streaming (chunked: no Content-Length).
    let r = c.stream("PUT", &path, std::io::repeat(7).take(5000));
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), "payload_too_large");
    // At the limit it passes.
    let r = c.stream("PUT", &path, std::io::repeat(7).take(1000));
    assert_eq!(r.status, 201);
    // Nothing of the refused bodies was stored.
    let r = c.get(&format!("/v1/sessions/{s}/artifacts"));
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.json()["items"][0]["size"], 1000);

    // JSON bodies have their own limit.
    let r = c.post("/v1/sessions", &json!({"metadata": {"x": "y".repeat(500)}}));
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), "payload_too_large");
}

#[test]
fn request_timeout_answers_408_and_stores_nothing() {
    let srv = TestServer::start_with(|c| c.limits.request_timeout_secs = 1);
    let c = srv.anon();
    let s = c.session(&json!({}));
    let mut t = raw(&srv);
    write!(
        t,
        "PUT /v1/sessions/{s}/artifacts/slow?kind=tool_result HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"
    )
    .unwrap();
    let text = read_all(t);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"request_timeout\""), "{text}");
    let r = c.get(&format!("/v1/sessions/{s}/artifacts"));
    assert_eq!(
        r.json()["items"],
        json!([]),
        "a cancelled upload stores nothing"
    );
}

#[test]
fn header_timeout_answers_408() {
    let srv = TestServer::start_with(|c| c.limits.header_timeout_secs = 1);
    // Part of a request's headers, then silence: the server answers 408 and closes.
    let mut t = raw(&srv);
    t.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let text = read_all(t);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    let body = &text[text.find("\r\n\r\n").expect("a header block") + 4..];
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "request_timeout", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("header_timeout_secs"),
        "{v}"
    );

    // A connection that sent nothing (idle) is closed without a response: no request, no
    // answer, so a keep-alive client never reads a 408 it did not ask for.
    let t = raw(&srv);
    assert_eq!(read_all(t), "");

    // After a complete request and its response, an idle keep-alive connection is closed
    // quietly too.
    let mut t = raw(&srv);
    t.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let text = read_all(t);
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(!text.contains("408"), "{text:?}");

    // A complete request on a new connection is served.
    assert_eq!(srv.anon().get("/healthz").status, 200);
    let m = srv
        .client(&srv.token("default", true, false))
        .get("/metrics");
    let text = String::from_utf8(m.body).unwrap();
    assert!(
        text.contains(
            "cairn_http_requests_total{route=\"header_timeout\",method=\"-\",status=\"408\"} 1"
        ),
        "{text}"
    );
}

#[test]
fn concurrency_cap_answers_503_with_retry_after() {
    let srv = TestServer::start_with(|c| c.limits.max_concurrency = 1);
    let c = srv.anon();
    let s = c.session(&json!({}));
    // Hold the only permit: an upload whose body has not all arrived. A GET of this loop can
    // reach the server before the upload does and take the permit first; the upload is then
    // refused (503) and every later GET succeeds, so the scenario starts again on a new
    // connection (bounded: a few attempts).
    let mut held = None;
    for _attempt in 0..5 {
        let mut t = raw(&srv);
        write!(
            t,
            "PUT /v1/sessions/{s}/artifacts/held?kind=tool_result HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234"
        )
        .unwrap();
        t.flush().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..400 {
            let r = c.get("/v1/sessions");
            if r.status == 503 {
                held = Some((t, r));
                break;
            }
            assert_eq!(r.status, 200);
            std::thread::sleep(Duration::from_millis(5));
        }
        if held.is_some() {
            break;
        }
    }
    let (mut t, r) = held.expect("a 503 while the permit is held");
    assert_eq!(r.code(), "overloaded");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    // Health checks are exempt.
    assert_eq!(c.get("/healthz").status, 200);
    // Finish the held upload: it is stored, and the permit is free again.
    t.write_all(b"56789").unwrap();
    let mut head = [0u8; 12];
    t.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 201");
    drop(t);
    let mut ok = false;
    for _ in 0..2000 {
        if c.get("/v1/sessions").status == 200 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(ok, "the permit was released");
    let m = srv
        .client(&srv.token("default", true, false))
        .get("/metrics");
    let text = String::from_utf8(m.body).unwrap();
    assert!(
        !text.contains("cairn_http_overload_rejections_total 0"),
        "{text}"
    );
}

#[test]
fn quotas_refuse_writes_beyond_them() {
    let srv = TestServer::start_with(|c| c.limits.quota_artifacts = 2);
    let c = srv.anon();
    let s = c.session(&json!({}));
    c.put(&s, "a", b"1");
    c.put(&s, "b", b"2");
    let r = c.bytes(
        "PUT",
        &format!("/v1/sessions/{s}/artifacts/c?kind=tool_result"),
        &[],
        b"3".to_vec(),
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.code(), "quota_exceeded");
    let r = c.post(&format!("/v1/sessions/{s}/fork"), &json!({}));
    assert_eq!(r.code(), "quota_exceeded");
    // Deleting makes room.
    let id = c.get(&format!("/v1/sessions/{s}/artifacts/a")).json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        c.call("DELETE", &format!("/v1/artifacts/{id}"), &[]).status,
        200
    );
    c.put(&s, "c", b"3");

    let srv = TestServer::start_with(|c| c.limits.quota_bytes = 100);
    let c = srv.anon();
    let s = c.session(&json!({}));
    let noise: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    c.put(&s, "a", &noise);
    let r = c.bytes(
        "PUT",
        &format!("/v1/sessions/{s}/artifacts/b?kind=tool_result"),
        &[],
        b"x".to_vec(),
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.code(), "quota_exceeded");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("quota_bytes"));
}
