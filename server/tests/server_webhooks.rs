//! Webhooks against a real server and a real receiver on 127.0.0.1: delivered after the write
//! is acknowledged, signed (checked here with an independent HMAC), filtered by event type,
//! retried after a 500, given up after `webhook_max_attempts`, kept per tenant, kept across a
//! restart, stopped by a delete; registration is admin-only and refuses unsafe destinations.

use crate::common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn h(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

/// A tiny HTTP/1.1 receiver: records every request and answers the scripted statuses in turn
/// (200 once the script is used up).
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    fn start(script: Vec<u16>) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook?src=cairn", l.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = Arc::clone(&got);
        std::thread::spawn(move || {
            let mut script = script.into_iter();
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let Some(req) = read_request(&mut conn) else {
                    continue;
                };
                let status = script.next().unwrap_or(200);
                g.lock().unwrap().push(req);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Self { url, got }
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (bounded) until at least `n` requests arrived.
    fn wait_for(&self, n: usize) -> Vec<Got> {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let g = self.got();
            if g.len() >= n || Instant::now() > end {
                return g;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read_request(conn: &mut std::net::TcpStream) -> Option<Got> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).ok()?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let n: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).ok()?;
    Some(Got {
        path,
        headers,
        body,
    })
}

/// The receiver's check, written independently of the server's code.
fn signature_ok(secret: &str, got: &Got) -> bool {
    let ts = got.h("cairn-timestamp");
    let Some(hex) = got.h("cairn-signature").strip_prefix("sha256=") else {
        return false;
    };
    let Ok(want) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("zz"), 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&got.body);
    mac.verify_slice(&want).is_ok()
}

fn fast(c: &mut cairn_server::ServerConfig) {
    c.limits.webhook_retry_base_ms = 20;
    c.limits.webhook_timeout_secs = 5;
}

#[test]
fn delivers_signed_lifecycle_events_after_they_are_acknowledged() {
    let srv = TestServer::start_with(fast);
    let rx = Receiver::start(vec![]);
    let admin = srv.client(&srv.token("acme", true, false));
    let r = admin.post("/v1/webhooks", &json!({"url": rx.url}));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let created = r.json();
    let secret = created["secret"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(created["events"], json!(["created", "status_changed"]));

    // A session is created, gets an artifact (not a lifecycle event: filtered out) and
    // completes. Each request returned 2xx, so each event was acknowledged.
    let s = admin.session(&json!({"name": "run"}));
    admin.put(&s, "a.txt", b"abc");
    assert_eq!(
        admin
            .post(&format!("/v1/sessions/{s}/complete"), &json!({}))
            .status,
        200
    );
    let got = rx.wait_for(2);
    assert_eq!(got.len(), 2, "{got:?}");
    let types: Vec<String> = got
        .iter()
        .map(|g| g.json()["event"]["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        ["created", "status_changed"],
        "commit order, filtered"
    );
    for g in &got {
        assert_eq!(g.path, "/hook?src=cairn");
        assert!(signature_ok(&secret, g), "signature verifies: {g:?}");
        assert_eq!(g.h("content-type"), "application/json");
        assert_eq!(g.h("cairn-webhook-id"), id);
        let v = g.json();
        assert_eq!(v["tenant"], "acme");
        assert_eq!(v["webhook_id"], id.as_str());
        assert_eq!(v["event"]["session_id"], s.as_str());
        let did = format!("{s}:{}", v["event"]["seq"]);
        assert_eq!(g.h("cairn-delivery-id"), did);
        assert_eq!(v["delivery_id"], did.as_str());
        assert_eq!(
            g.h("cairn-event-type"),
            v["event"]["type"].as_str().unwrap()
        );
        // A tampered body, a wrong secret or another timestamp does not verify.
        let mut bad = g.clone();
        bad.body.push(b' ');
        assert!(!signature_ok(&secret, &bad));
        assert!(!signature_ok("whsec_wrong", g));
        let mut old = g.clone();
        old.headers.insert("cairn-timestamp".into(), "1".into());
        assert!(!signature_ok(&secret, &old));
    }
    assert_eq!(
        got[1].json()["event"]["to"],
        "completed",
        "{:?}",
        got[1].json()
    );

    // The list shows the delivery state and never the secret. The receiver records a delivery
    // before the server has read its answer and counted it, so wait (bounded) for the count.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let l = loop {
        let l = admin.get("/v1/webhooks");
        assert_eq!(l.status, 200);
        if l.json()["items"][0]["delivery"]["delivered"] == 2
            || std::time::Instant::now() > deadline
        {
            break l;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(!String::from_utf8_lossy(&l.body).contains(&secret));
    let w = &l.json()["items"][0];
    assert_eq!(w["id"], id.as_str());
    assert_eq!(w["delivery"]["delivered"], 2, "{w}");
    assert_eq!(w["delivery"]["failed"], 0, "{w}");
    assert_eq!(w["delivery"]["last_status"], 200, "{w}");
}

#[test]
fn a_failed_delivery_is_retried_and_given_up_after_max_attempts() {
    let srv = TestServer::start_with(|c| {
        fast(c);
        c.limits.webhook_max_attempts = 3;
    });
    // 500, then 200: delivered on the second attempt. Then three 503s: given up.
    let rx = Receiver::start(vec![500, 200, 503, 503, 503]);
    let admin = srv.client(&srv.token("acme", true, false));
    let r = admin.post(
        "/v1/webhooks",
        &json!({"url": rx.url, "events": ["created"], "secret": "0123456789abcdef-secret"}),
    );
    assert_eq!(r.status, 201);
    let a = admin.session(&json!({}));
    let got = rx.wait_for(2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].body, got[1].body, "a retry sends the same event");
    assert_eq!(got[0].h("cairn-delivery-id"), format!("{a}:1"));
    assert!(signature_ok("0123456789abcdef-secret", &got[1]));

    let b = admin.session(&json!({}));
    let got = rx.wait_for(5);
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got[2..]
        .iter()
        .all(|g| g.h("cairn-delivery-id") == format!("{b}:1")));
    // The state settles (the give-up is counted right after the last answer).
    let end = Instant::now() + Duration::from_secs(30);
    let w = loop {
        let w = admin.get("/v1/webhooks").json()["items"][0].clone();
        if w["delivery"]["failed"] == 1 || Instant::now() > end {
            break w;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let d = &w["delivery"];
    assert_eq!(d["delivered"], 1, "{w}");
    assert_eq!(d["failed"], 1, "{w}");
    assert_eq!(d["retries"], 3, "{w}");
    assert_eq!(d["last_status"], 503, "{w}");
    assert!(d["last_error"].as_str().unwrap().contains("503"), "{w}");
    // Nothing more arrives for the given-up event.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.got().len(), 5);
}

#[test]
fn tenants_see_only_their_own_webhooks_and_events() {
    let srv = TestServer::start_with(fast);
    let rx_acme = Receiver::start(vec![]);
    let rx_globex = Receiver::start(vec![]);
    let acme = srv.client(&srv.token("acme", true, false));
    let globex = srv.client(&srv.token("globex", true, false));
    let acme_hook = acme
        .post("/v1/webhooks", &json!({"url": rx_acme.url}))
        .json();
    let r = globex.post("/v1/webhooks", &json!({"url": rx_globex.url}));
    assert_eq!(r.status, 201);

    let s = acme.session(&json!({}));
    let g = globex.session(&json!({}));
    rx_acme.wait_for(1);
    let got_g = rx_globex.wait_for(1);
    // Give a stray cross-tenant delivery time to show up before counting.
    std::thread::sleep(Duration::from_millis(300));
    let got = rx_acme.got();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].json()["event"]["session_id"], s.as_str());
    assert_eq!(got[0].json()["tenant"], "acme");
    assert_eq!(rx_globex.got().len(), 1, "{got_g:?}");
    assert_eq!(got_g[0].json()["event"]["session_id"], g.as_str());
    assert_eq!(got_g[0].json()["tenant"], "globex");

    // Lists are per tenant; another tenant's id is "not found", exactly as an unknown one.
    let l = globex.get("/v1/webhooks").json();
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    assert_ne!(l["items"][0]["id"], acme_hook["id"]);
    let id = acme_hook["id"].as_str().unwrap();
    let r = globex.call("DELETE", &format!("/v1/webhooks/{id}"), &[]);
    assert_eq!(r.status, 404);
    let r2 = globex.call("DELETE", "/v1/webhooks/wh_000000000000", &[]);
    assert_eq!(
        String::from_utf8_lossy(&r.body).replace(id, "<ID>"),
        String::from_utf8_lossy(&r2.body).replace("wh_000000000000", "<ID>")
    );
    assert_eq!(acme.get("/v1/webhooks").json()["items"][0]["id"], id);
}

#[test]
fn registration_is_admin_only_and_refuses_unsafe_destinations() {
    let srv = TestServer::start();
    // Anonymous loopback callers are not admins.
    let r = srv
        .anon()
        .post("/v1/webhooks", &json!({"url": "http://127.0.0.1:9/"}));
    assert_eq!(r.status, 403);
    assert_eq!(r.code(), "forbidden");
    let writer = srv.client(&srv.token("acme", false, false));
    assert_eq!(writer.get("/v1/webhooks").status, 403);
    let admin = srv.client(&srv.token("acme", true, false));
    for (body, why) in [
        (json!({"url": "http://10.1.2.3/hook"}), "loopback"),
        (
            json!({"url": "http://169.254.169.254/latest"}),
            "link-local",
        ),
        (json!({"url": "https://169.254.169.254/"}), "link-local"),
        // https goes to public hosts only, unless the server allows private ones.
        (
            json!({"url": "https://127.0.0.1:9/x"}),
            "webhook_private_https",
        ),
        (json!({"url": "https://192.168.1.1/x"}), "private"),
        (json!({"url": "file:///etc/passwd"}), "scheme"),
        (
            json!({"url": "http://127.0.0.1:9/", "events": ["nope"]}),
            "nope",
        ),
        (
            json!({"url": "http://127.0.0.1:9/", "secret": "short"}),
            "secret",
        ),
        (json!({"url": "http://127.0.0.1:9/", "extra": 1}), "extra"),
    ] {
        let r = admin.post("/v1/webhooks", &body);
        assert_eq!(r.status, 400, "{body}");
        assert_eq!(r.code(), "invalid_input", "{body}");
        assert!(
            String::from_utf8_lossy(&r.body).contains(why),
            "{body}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    assert_eq!(admin.get("/v1/webhooks").json()["items"], json!([]));
    // The limit per tenant.
    for i in 0..cairn_server::webhooks::MAX_PER_TENANT {
        let r = admin.post(
            "/v1/webhooks",
            &json!({"url": format!("http://127.0.0.1:9/{i}")}),
        );
        assert_eq!(r.status, 201);
    }
    let r = admin.post("/v1/webhooks", &json!({"url": "http://127.0.0.1:9/x"}));
    assert_eq!(r.status, 422);
    assert_eq!(r.code(), "limit_exceeded");
    // The file keeps the secrets, readable by the server's user only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(srv.data().join("webhooks.json")).unwrap();
        assert_eq!(m.permissions().mode() & 0o077, 0);
    }
}

#[test]
fn webhooks_survive_a_restart_and_a_delete_stops_them() {
    let srv = TestServer::start_with(fast);
    let rx = Receiver::start(vec![]);
    let token = srv.token("acme", true, false);
    let r = srv.client(&token).post(
        "/v1/webhooks",
        &json!({"url": rx.url, "events": ["custom"]}),
    );
    assert_eq!(r.status, 201);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let dir = srv.stop();

    // After a restart, delivery resumes before the first request is served.
    let srv = TestServer::start_in(dir, fast);
    let c = srv.client(&token);
    let s = c.session(&json!({}));
    let ev = json!({"name": "tick", "payload": {"n": 1}});
    let r = c.post(&format!("/v1/sessions/{s}/events"), &ev);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let got = rx.wait_for(1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["event"]["type"], "custom");

    let r = c.call("DELETE", &format!("/v1/webhooks/{id}"), &[]);
    assert_eq!(r.status, 204);
    assert_eq!(c.get("/v1/webhooks").json()["items"], json!([]));
    let r = c.post(&format!("/v1/sessions/{s}/events"), &ev);
    assert_eq!(r.status, 201);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.got().len(), 1, "nothing is delivered after the delete");
    let r = c.call("DELETE", &format!("/v1/webhooks/{id}"), &[]);
    assert_eq!(r.status, 404);
}
