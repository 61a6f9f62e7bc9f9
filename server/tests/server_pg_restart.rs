//! Fault injection: the PostgreSQL server under two `cairn serve` instances is restarted
//! (`pg_ctl restart -m fast`, every connection cut) while eight clients write. Requests caught
//! by it get a clear JSON answer (503, `Retry-After`, a named code), never a 500 or a half
//! write; the servers reconnect by themselves; clients that retry succeed; afterwards versions
//! are gapless, every acknowledged artifact reads back and the store verifies clean.
#![cfg(feature = "postgres")]

use crate::common;
use crate::pg;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::{json, Value};

const CLIENTS: usize = 8;
/// Acknowledged puts before the restart, and again after it, before the clients stop.
const PHASE: usize = 30;
/// Acknowledged puts: name, version, artifact id, the bytes sent.
type Acked = Arc<Mutex<Vec<(String, u64, String, Vec<u8>)>>>;
/// A hang guard, not a timing assertion.
const WAIT: Duration = Duration::from_secs(90);

#[test]
fn a_postgres_restart_mid_load_gives_clear_errors_and_retries_succeed() {
    let Some(cluster) = pg::Cluster::start() else {
        return;
    };
    let servers: Vec<TestServer> = (0..2)
        .map(|_| {
            TestServer::start_with(|c| {
                c.metadata = Some(cluster.url.clone());
                c.open_admin = true;
            })
        })
        .collect();
    let session = servers[0].anon().session(&json!({"name": "restart"}));
    let acked: Acked = Arc::default();
    let refused: Arc<Mutex<Vec<String>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::scope(|scope| {
        for k in 0..CLIENTS {
            let c = servers[k % 2].anon();
            let (session, acked, refused, count, stop) = (
                session.clone(),
                acked.clone(),
                refused.clone(),
                count.clone(),
                stop.clone(),
            );
            scope.spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let name = format!("n{}", k % 3);
                    let body = format!("client {k} put {i}").into_bytes();
                    let r = c.bytes(
                        "PUT",
                        &format!("/v1/sessions/{session}/artifacts/{name}?kind=tool_result"),
                        &[],
                        body.clone(),
                    );
                    match r.status {
                        201 => {
                            let v = r.json();
                            acked.lock().unwrap().push((
                                name,
                                v["version"].as_u64().unwrap(),
                                v["id"].as_str().unwrap().to_string(),
                                body,
                            ));
                            count.fetch_add(1, Ordering::SeqCst);
                            i += 1;
                        }
                        503 => {
                            assert!(r.header("retry-after").is_some(), "503 without Retry-After");
                            // The code is named and the body is the one error shape.
                            let code = r.code();
                            refused.lock().unwrap().push(code);
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        s => panic!(
                            "PUT answered {s} during a PostgreSQL restart: {}",
                            String::from_utf8_lossy(&r.body)
                        ),
                    }
                }
            });
        }
        let started = Instant::now();
        let wait_for = |n: usize| {
            while count.load(Ordering::SeqCst) < n {
                assert!(started.elapsed() < WAIT, "the load stalled at {n}");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_for(PHASE);
        cluster.restart();
        let after_restart = count.load(Ordering::SeqCst);
        wait_for(after_restart + PHASE);
        stop.store(true, Ordering::SeqCst);
    });
    let refused = refused.lock().unwrap().clone();
    for code in &refused {
        assert!(
            ["unavailable", "write_conflict"].contains(&code.as_str()),
            "a 503 named {code:?}"
        );
    }
    eprintln!(
        "{} acknowledged, {} refused with 503 ({:?})",
        acked.lock().unwrap().len(),
        refused.len(),
        refused.iter().collect::<BTreeSet<_>>()
    );
    // After the restart both servers answer without being restarted themselves.
    let acked = acked.lock().unwrap().clone();
    for n in 0..3 {
        let name = format!("n{n}");
        let r = servers[1]
            .anon()
            .get(&format!("/v1/sessions/{session}/artifacts/{name}/versions"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let versions: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
        let got: BTreeSet<u64> = versions
            .iter()
            .map(|v| v["version"].as_u64().unwrap())
            .collect();
        let want: BTreeSet<u64> = (1..=versions.len() as u64).collect();
        assert_eq!(got, want, "versions of {name} gapless");
        let mine: Vec<u64> = acked.iter().filter(|a| a.0 == name).map(|a| a.1).collect();
        let unique: BTreeSet<u64> = mine.iter().copied().collect();
        assert_eq!(unique.len(), mine.len(), "no version acknowledged twice");
        assert!(unique.is_subset(&got));
    }
    for (i, (_, _, id, body)) in acked.iter().enumerate() {
        let r = servers[i % 2]
            .anon()
            .get(&format!("/v1/artifacts/{id}/content"));
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(&r.body, body);
    }
    let v = servers[0]
        .anon()
        .post("/v1/admin/verify", &json!({}))
        .json();
    assert_eq!(v["ok"], true, "{v}");
}
