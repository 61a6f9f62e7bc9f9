//! Webhook deliveries survive a restart: a real `cairn serve` whose receiver refuses every
//! delivery (503) is killed with SIGKILL while events wait in its queue; restarted on the same
//! data folder with the receiver accepting, it delivers every one of them, in commit order.
//! Then the same across a graceful stop (SIGTERM).

use crate::common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A server process and its URL; killed when dropped (so a failing test leaves none behind).
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(bin: &Path, data: &Path, config: &Path) -> Self {
        let (child, url) = common::spawn_serve(
            Command::new(bin)
                .args(["serve", "--listen", "127.0.0.1:0", "--config"])
                .arg(config)
                .arg("--data")
                .arg(data),
        );
        Self { child, url }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let c = common::Client::new(&self.url, None);
        let r = match body {
            Some(b) => c.json(method, path, &b),
            None => c.call(method, path, &[]),
        };
        (
            r.status,
            serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        )
    }

    fn signal(mut self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A receiver answering the current `status` to every request; records (status, delivery id).
struct Receiver {
    url: String,
    status: Arc<AtomicU16>,
    got: Arc<Mutex<Vec<(u16, String)>>>,
}

impl Receiver {
    fn start(status: u16) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let status = Arc::new(AtomicU16::new(status));
        let got = Arc::new(Mutex::new(Vec::new()));
        let (s, g) = (Arc::clone(&status), Arc::clone(&got));
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let Some(id) = delivery_id(&mut conn) else {
                    continue;
                };
                let st = s.load(Ordering::SeqCst);
                g.lock().unwrap().push((st, id));
                let _ = write!(
                    conn,
                    "HTTP/1.1 {st} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        Self { url, status, got }
    }

    /// Delivery ids answered 200, first occurrences in arrival order.
    fn accepted(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (st, id) in self.got.lock().unwrap().iter() {
            if *st == 200 && !out.contains(id) {
                out.push(id.clone());
            }
        }
        out
    }
}

fn delivery_id(conn: &mut std::net::TcpStream) -> Option<String> {
    let mut r = BufReader::new(conn);
    let mut headers = HashMap::new();
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
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
    headers.remove("cairn-delivery-id")
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Writes events, waits until the webhook has them all (one in its failing first attempts,
/// the rest queued), and returns their delivery ids in commit order.
fn pending_events(srv: &Server, webhook: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let (st, s) = srv.call(
            "POST",
            "/v1/sessions",
            Some(json!({"name": format!("s{i}")})),
        );
        assert_eq!(st, 201, "{s}");
        // The `created` event is the session's first.
        ids.push(format!("{}:1", s["id"].as_str().unwrap()));
    }
    wait_until("every event to be queued or in retry", || {
        let (_, list) = srv.call("GET", "/v1/webhooks", None);
        let d = list["items"]
            .as_array()
            .and_then(|a| a.iter().find(|w| w["id"] == webhook))
            .map(|w| w["delivery"].clone())
            .unwrap_or(Value::Null);
        d["queued"] == (n as u64 - 1) && d["retries"].as_u64().unwrap_or(0) >= 1
    });
    ids
}

#[cfg(unix)]
#[test]
fn queued_webhook_events_are_delivered_after_sigkill_and_after_sigterm() {
    let bin = common::cairn_bin();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("serve.toml");
    // Anonymous loopback admin (no tokens); retries soon and for a long time.
    std::fs::write(
        &config,
        "[server]\nopen_admin = true\nwebhook_retry_base_ms = 50\nwebhook_max_attempts = 1000\n",
    )
    .unwrap();
    let rx = Receiver::start(503);

    let srv = Server::start(&bin, &data, &config);
    let (st, w) = srv.call("POST", "/v1/webhooks", Some(json!({"url": rx.url})));
    assert_eq!(st, 201, "{w}");
    let webhook = w["id"].as_str().unwrap().to_string();
    let first = pending_events(&srv, &webhook, 4);
    srv.signal("-KILL");
    assert!(
        rx.accepted().is_empty(),
        "nothing was accepted before the kill"
    );

    // Restarted with the receiver accepting: the four come, oldest first, then new ones.
    rx.status.store(200, Ordering::SeqCst);
    let srv = Server::start(&bin, &data, &config);
    wait_until("the journaled events after SIGKILL", || {
        rx.accepted().len() >= first.len()
    });
    assert_eq!(
        rx.accepted(),
        first,
        "commit order, each event once accepted"
    );

    // The same across a graceful stop.
    rx.status.store(503, Ordering::SeqCst);
    let second = pending_events(&srv, &webhook, 3);
    srv.signal("-TERM");
    rx.status.store(200, Ordering::SeqCst);
    let srv = Server::start(&bin, &data, &config);
    wait_until("the journaled events after SIGTERM", || {
        rx.accepted().len() >= first.len() + second.len()
    });
    let all: Vec<String> = first.iter().chain(second.iter()).cloned().collect();
    assert_eq!(rx.accepted(), all);

    // Delivered events are not delivered again by a further restart.
    srv.signal("-TERM");
    let before = rx.got.lock().unwrap().len();
    let srv = Server::start(&bin, &data, &config);
    let (st, s) = srv.call("POST", "/v1/sessions", Some(json!({"name": "last"})));
    assert_eq!(st, 201);
    let last = format!("{}:1", s["id"].as_str().unwrap());
    wait_until("the new event", || rx.accepted().contains(&last));
    let after: Vec<String> = rx.got.lock().unwrap()[before..]
        .iter()
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(after, [last], "only the new event was sent");
}
