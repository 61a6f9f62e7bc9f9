//! https webhooks against a real server and a TLS receiver on 127.0.0.1 with a self-signed
//! certificate: refused as a private destination by default; delivered, signed, once the
//! server allows private https (`webhook_private_https`) and trusts the certificate
//! (`webhook_ca_file`); failed and retried (nothing sent in clear) when it does not trust it.

use crate::common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// One request the receiver decrypted.
#[derive(Clone, Debug)]
struct Got {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A TLS receiver: answers 200 to every request it can read, records them, and counts the
/// connections whose handshake failed.
struct TlsReceiver {
    port: u16,
    got: Arc<Mutex<Vec<Got>>>,
    failed_handshakes: Arc<Mutex<usize>>,
}

impl TlsReceiver {
    /// Listens on 127.0.0.1 with a new self-signed certificate for `localhost` and
    /// 127.0.0.1; writes that certificate (PEM) to `ca_out`.
    fn start(ca_out: &Path) -> Self {
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        std::fs::write(ca_out, ck.cert.pem()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap(),
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(0));
        let (g, f) = (Arc::clone(&got), Arc::clone(&failed));
        std::thread::spawn(move || {
            for tcp in l.incoming() {
                let Ok(tcp) = tcp else { continue };
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                match read_request(&mut tls) {
                    Some(req) => {
                        g.lock().unwrap().push(req);
                        let _ = tls.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        );
                        tls.conn.send_close_notify();
                        let _ = tls.flush();
                    }
                    None => *f.lock().unwrap() += 1,
                }
            }
        });
        Self {
            port,
            got,
            failed_handshakes: failed,
        }
    }

    fn wait_for(&self, n: usize) -> Vec<Got> {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let g = self.got.lock().unwrap().clone();
            if g.len() >= n || Instant::now() > end {
                return g;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read_request(conn: &mut impl Read) -> Option<Got> {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    if !line.starts_with("POST ") {
        return None;
    }
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
    Some(Got { headers, body })
}

/// The receiver's check, written independently of the server's code.
fn signature_ok(secret: &str, got: &Got) -> bool {
    let ts = &got.headers["cairn-timestamp"];
    let Some(hex) = got.headers["cairn-signature"].strip_prefix("sha256=") else {
        return false;
    };
    let want: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&got.body);
    mac.verify_slice(&want).is_ok()
}

fn webhook_state(admin: &common::Client, id: &str) -> Value {
    let list = admin.get("/v1/webhooks").json();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no webhook {id} in {list}"))
}

#[test]
fn https_to_loopback_is_refused_unless_the_server_allows_private_https() {
    let dir = tempfile::tempdir().unwrap();
    let rx = TlsReceiver::start(&dir.path().join("ca.pem"));
    let srv = TestServer::start();
    let admin = srv.client(&srv.token("acme", true, false));
    for url in [
        format!("https://127.0.0.1:{}/hook", rx.port),
        format!("https://localhost:{}/hook", rx.port),
    ] {
        let r = admin.post("/v1/webhooks", &json!({ "url": url }));
        assert_eq!(r.status, 400, "{url}: {}", String::from_utf8_lossy(&r.body));
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("webhook_private_https"));
    }
}

#[test]
fn https_delivers_signed_events_to_a_trusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let rx = TlsReceiver::start(&ca);
    let srv = TestServer::start_with(|c| {
        c.webhook_private_https = true;
        c.webhook_ca_file = Some(ca.clone());
        c.limits.webhook_retry_base_ms = 20;
        c.limits.webhook_timeout_secs = 5;
    });
    let admin = srv.client(&srv.token("acme", true, false));
    // By name: the server's resolver resolves and checks localhost at every attempt.
    let r = admin.post(
        "/v1/webhooks",
        &json!({ "url": format!("https://localhost:{}/hook", rx.port) }),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let secret = r.json()["secret"].as_str().unwrap().to_string();
    let s = admin.session(&json!({"name": "tls"}));
    let got = rx.wait_for(1);
    assert_eq!(got.len(), 1, "{got:?}");
    let v: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(v["event"]["type"], "created");
    assert_eq!(v["event"]["session_id"], s.as_str());
    assert!(signature_ok(&secret, &got[0]), "{got:?}");
    assert_eq!(got[0].headers["content-type"], "application/json");
}

#[test]
fn https_to_an_untrusted_certificate_fails_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let rx = TlsReceiver::start(&dir.path().join("ca.pem"));
    let srv = TestServer::start_with(|c| {
        c.webhook_private_https = true;
        c.limits.webhook_retry_base_ms = 20;
        c.limits.webhook_max_attempts = 2;
        c.limits.webhook_timeout_secs = 5;
    });
    let admin = srv.client(&srv.token("acme", true, false));
    let r = admin.post(
        "/v1/webhooks",
        &json!({ "url": format!("https://127.0.0.1:{}/hook", rx.port) }),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_str().unwrap().to_string();
    admin.session(&json!({}));
    let end = Instant::now() + Duration::from_secs(30);
    let state = loop {
        let w = webhook_state(&admin, &id);
        if w["delivery"]["failed"] == 1 || Instant::now() > end {
            break w;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(state["delivery"]["failed"], 1, "{state}");
    assert_eq!(state["delivery"]["retries"], 1, "{state}");
    assert_eq!(state["delivery"]["delivered"], 0, "{state}");
    let err = state["delivery"]["last_error"].as_str().unwrap();
    assert!(err.contains("certificate"), "{err}");
    assert!(rx.got.lock().unwrap().is_empty(), "nothing was sent");
    assert!(*rx.failed_handshakes.lock().unwrap() >= 1);
}

#[test]
fn an_unreadable_ca_file_stops_the_server_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cairn_server::ServerConfig::new(dir.path().join("data"));
    c.webhook_ca_file = Some(dir.path().join("missing.pem"));
    let e = cairn_server::spawn(c)
        .err()
        .expect("the server must not start");
    assert!(
        e.contains("webhook_ca_file") && e.contains("missing.pem"),
        "{e}"
    );
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let mut c = cairn_server::ServerConfig::new(dir.path().join("data"));
    c.webhook_ca_file = Some(bad);
    let e = cairn_server::spawn(c)
        .err()
        .expect("the server must not start");
    assert!(e.contains("webhook_ca_file"), "{e}");
}
