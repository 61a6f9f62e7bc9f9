//! Several servers on one PostgreSQL (a private server on 127.0.0.1, see tests/common/pg.rs),
//! in process: tokens live in the database (created or revoked once, honoured by every server
//! at once), and an event written through one server reaches an event stream open on another,
//! in order, resumable with Last-Event-ID. Each test has a database of its own.
#![cfg(feature = "postgres")]

use crate::common;
use crate::pg;

use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use cairn_server::auth::TokenPlace;
use common::TestServer;
use serde_json::{json, Value};
use ureq::http;

/// A hang guard, not a timing assertion.
const WAIT: Duration = Duration::from_secs(60);

/// A database of its own on the test server (so token and open-mode tests do not meet).
fn fresh_db() -> Option<String> {
    let url = pg::url()?;
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "shared_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    let (base, _) = url.rsplit_once('/').unwrap();
    Some(format!("{base}/{name}"))
}

fn servers(db: &str, n: usize) -> Vec<TestServer> {
    (0..n)
        .map(|_| TestServer::start_with(|c| c.metadata = Some(db.to_string())))
        .collect()
}

#[test]
fn a_token_made_once_is_honoured_by_every_server_and_revoked_on_all_at_once() {
    let Some(db) = fresh_db() else { return };
    let srv = servers(&db, 2);
    // No token yet: open mode on loopback, on both.
    assert_eq!(srv[0].anon().get("/v1/sessions").status, 200);
    let dir = tempfile::tempdir().unwrap();
    let place = TokenPlace::new(dir.path(), Some(&db)).unwrap();
    let (tok, rec) = place.create("acme", false, false).unwrap();
    assert!(
        !dir.path().join("tokens.json").exists(),
        "no per-server token file"
    );
    // A token exists now: anonymous callers are refused by every server.
    for s in &srv {
        let r = s.anon().get("/v1/sessions");
        assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    }
    // Made once, used on B; what B stored is seen through A with the same token.
    let sid = srv[1].client(&tok).session(&json!({"name": "t"}));
    let r = srv[0].client(&tok).get(&format!("/v1/sessions/{sid}"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Listed from the database, secret never stored.
    let listed = place.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, rec.id);
    assert_eq!(listed[0].tenant, "acme");
    // A read-only token of another tenant does not see acme's session and cannot write.
    let (ro, _) = place.create("other", false, true).unwrap();
    assert_eq!(
        srv[0]
            .client(&ro)
            .get(&format!("/v1/sessions/{sid}"))
            .status,
        404
    );
    assert_eq!(
        srv[1].client(&ro).post("/v1/sessions", &json!({})).status,
        403
    );
    // Revoked once: refused by both at once (no restart, no reload).
    let gone = place.revoke(&rec.id).unwrap();
    assert_eq!(gone.id, rec.id);
    for s in &srv {
        let r = s.client(&tok).get(&format!("/v1/sessions/{sid}"));
        assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.code(), "unauthorized");
    }
    let e = place.revoke(&rec.id).unwrap_err();
    assert!(e.contains("no token"), "{e}");
}

#[derive(Debug)]
struct Frame {
    id: Option<String>,
    data: Value,
}

/// Opens an event stream; a thread parses event frames (comments skipped) until `take`.
fn open(url: &str, path: &str, last_id: Option<&str>, take: usize) -> mpsc::Receiver<Frame> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut b = http::Request::builder()
        .method("GET")
        .uri(format!("{url}{path}"));
    if let Some(l) = last_id {
        b = b.header("last-event-id", l);
    }
    let resp = agent.run(b.body(()).unwrap()).unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(resp.into_body().into_reader());
        let (mut id, mut data) = (None, String::new());
        let mut n = 0;
        let mut line = String::new();
        while n < take {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end_matches(['\n', '\r']);
            if l.is_empty() {
                if !data.is_empty() {
                    n += 1;
                    let f = Frame {
                        id: id.take(),
                        data: serde_json::from_str(&std::mem::take(&mut data)).unwrap(),
                    };
                    if tx.send(f).is_err() {
                        return;
                    }
                }
            } else if let Some(v) = l.strip_prefix("id: ") {
                id = Some(v.to_string());
            } else if let Some(v) = l.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
    });
    rx
}

fn append(c: &common::Client, session: &str, name: &str) -> u64 {
    let r = c.post(
        &format!("/v1/sessions/{session}/events"),
        &json!({"name": name, "payload": {"n": name}}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["seq"].as_u64().unwrap()
}

#[test]
fn events_written_through_one_server_reach_a_stream_on_another_in_order() {
    let Some(db) = fresh_db() else { return };
    let srv = servers(&db, 3);
    let (a, b) = (srv[0].anon(), srv[1].anon());
    let s = a.session(&json!({"name": "watched"}));
    const N: usize = 40;
    let live = open(
        &srv[1].url,
        &format!("/v1/sessions/{s}/events/stream"),
        None,
        N,
    );
    let tree = open(
        &srv[2].url,
        &format!("/v1/sessions/{s}/events/stream?subtree=true"),
        None,
        N + 2,
    );
    // Writes through A and C (never B), concurrently from two threads.
    let written: Vec<u64> = std::thread::scope(|scope| {
        let hs: Vec<_> = [0usize, 2]
            .into_iter()
            .map(|k| {
                let c = srv[k].anon();
                let s = s.clone();
                scope.spawn(move || {
                    (0..N / 2)
                        .map(|i| append(&c, &s, &format!("w{k}-{i}")))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut want = written.clone();
    want.sort_unstable();
    let got: Vec<u64> = (0..N)
        .map(|_| {
            let f = live.recv_timeout(WAIT).expect("an event on B");
            let seq = f.data["seq"].as_u64().unwrap();
            assert_eq!(f.id.as_deref(), Some(format!("{s}:{seq}").as_str()));
            seq
        })
        .collect();
    assert_eq!(got, want, "every event, once, in seq order, on B");
    // A child made through A after the subtree stream opened on C: its events arrive too.
    let child = a.session(&json!({"parent": s}));
    append(&a, &child, "in the child");
    let tree_got: Vec<(String, u64)> = (0..N + 2)
        .map(|_| {
            let f = tree.recv_timeout(WAIT).expect("an event on C");
            (
                f.data["session_id"].as_str().unwrap().to_string(),
                f.data["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let root_seqs: Vec<u64> = tree_got
        .iter()
        .filter(|(id, _)| *id == s)
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(root_seqs, want);
    let child_seqs: Vec<u64> = tree_got
        .iter()
        .filter(|(id, _)| *id == child)
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(
        child_seqs,
        vec![1, 2],
        "the child's created and custom events"
    );

    // Resume on B after the 10th event: the rest, then new writes through A, nothing twice.
    let k = want[9];
    let resumed = open(
        &srv[1].url,
        &format!("/v1/sessions/{s}/events/stream"),
        Some(&format!("{s}:{k}")),
        N - 10 + 3,
    );
    let more: Vec<u64> = (0..3)
        .map(|i| append(&a, &s, &format!("more{i}")))
        .collect();
    let got: Vec<u64> = (0..N - 10 + 3)
        .map(|_| {
            resumed.recv_timeout(WAIT).expect("a resumed event").data["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let mut want_rest: Vec<u64> = want[10..].to_vec();
    want_rest.extend(&more);
    assert_eq!(got, want_rest);
    drop(b);
}

/// `Idempotency-Key` on a put: the same put sent again (a client retrying after a 503 whose
/// outcome it cannot know) through either server answers with the artifact the first one
/// stored, and adds no version; the same key for other content is refused; no key, a new
/// version each time.
#[test]
fn a_put_retried_with_its_idempotency_key_is_stored_once_across_servers() {
    let Some(db) = fresh_db() else { return };
    let srv = servers(&db, 2);
    let sid = srv[0].anon().session(&json!({"name": "idem"}));
    let path = format!("/v1/sessions/{sid}/artifacts/out.json?kind=tool_result");
    let put = |s: &TestServer, key: Option<&str>, body: &[u8]| {
        let h: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
        s.anon().bytes("PUT", &path, &h, body.to_vec())
    };
    let first = put(&srv[0], Some("k-1"), b"{\"a\":1}");
    assert_eq!(
        first.status,
        201,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    let again = put(&srv[1], Some("k-1"), b"{\"a\":1}");
    assert_eq!(
        again.status,
        201,
        "{}",
        String::from_utf8_lossy(&again.body)
    );
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(again.json()["version"], 1);
    let other = put(&srv[1], Some("k-1"), b"{\"a\":2}");
    assert_eq!(
        other.status,
        400,
        "{}",
        String::from_utf8_lossy(&other.body)
    );
    assert_eq!(other.code(), "invalid_input");
    let plain = put(&srv[0], None, b"{\"a\":1}");
    assert_eq!(plain.json()["version"], 2);
    let r = srv[1]
        .anon()
        .get(&format!("/v1/sessions/{sid}/artifacts/out.json/versions"));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json().as_array().map(Vec::len), Some(2), "{}", r.json());
}
