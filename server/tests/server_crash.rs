//! Crash test: the real `cairn serve` binary under a concurrent upload load is killed with
//! SIGKILL, restarted on the same data folder, and every artifact that got a 2xx reads back
//! byte-identical with its hash; then the store verifies clean.

use crate::common;

use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Client;
use serde_json::json;

/// Upload clients running at once.
const CLIENTS: usize = 4;
/// Puts per client at most (bounds the test whatever the machine's speed).
const MAX_PUTS: usize = 300;
/// Acknowledged puts to wait for before the kill.
const KILL_AFTER: usize = 40;
/// Acknowledged uploads: artifact id and the bytes sent.
type Acked = Arc<Mutex<Vec<(String, Vec<u8>)>>>;
/// Hang guard.
const WAIT: Duration = Duration::from_secs(120);

/// Starts `cairn serve` on `data` and returns the process and its URL (its first stdout line).
fn serve(bin: &Path, data: &Path) -> (Child, String) {
    common::spawn_serve(
        Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data),
    )
}

/// Deterministic, distinct content: client, index, and a varied size (1 KiB .. ~200 KiB).
fn content(client: usize, i: usize) -> Vec<u8> {
    let size = 1024 + (client * 7919 + i * 104_729) % (200 * 1024);
    let mut x = (client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64 + 1);
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn kill_9_under_upload_load_loses_nothing_acknowledged() {
    let bin = common::cairn_bin();
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = serve(&bin, dir.path());
    let c = Client::new(&url, None);
    let session = c.session(&json!({"key": "crash"}));

    let acked: Acked = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let (url, session) = (url.clone(), session.clone());
            let (acked, count, stop) = (acked.clone(), count.clone(), stop.clone());
            std::thread::spawn(move || {
                let c = Client::new(&url, None);
                for i in 0..MAX_PUTS {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let bytes = content(k, i);
                    let path =
                        format!("/v1/sessions/{session}/artifacts/c{k}-{i}.bin?kind=tool_result");
                    // A refused connection or a cut response: the server is gone.
                    let Some(r) = c.try_bytes("PUT", &path, &[], bytes.clone()) else {
                        return;
                    };
                    assert!(
                        (200..300).contains(&r.status) || r.status == 503,
                        "PUT answered {}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                    if (200..300).contains(&r.status) {
                        let v = r.json();
                        let hash = blake3::hash(&bytes).to_hex().to_string();
                        assert_eq!(v["hash"], hash.as_str(), "the acknowledged hash");
                        let id = v["id"].as_str().unwrap().to_string();
                        acked.lock().unwrap().push((id, bytes));
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();

    let start = Instant::now();
    while count.load(Ordering::SeqCst) < KILL_AFTER && start.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(5));
    }
    // SIGKILL with uploads in flight.
    server.kill().unwrap();
    server.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().expect("an upload client panicked");
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.len() >= KILL_AFTER.min(CLIENTS * MAX_PUTS),
        "only {} uploads were acknowledged before the kill",
        acked.len()
    );

    // Restart on the same folder: every acknowledged artifact reads back intact.
    let (mut server, url) = serve(&bin, dir.path());
    let c = Client::new(&url, None);
    for (id, bytes) in &acked {
        let r = c.get(&format!("/v1/artifacts/{id}/content"));
        assert_eq!(
            r.status,
            200,
            "artifact {id}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(
            blake3::hash(&r.body),
            blake3::hash(bytes),
            "artifact {id} came back different"
        );
        assert_eq!(r.body.len(), bytes.len());
    }
    // The store still takes writes after the crash.
    c.put(&session, "after-restart.txt", b"still here");
    // A graceful stop this time (SIGTERM), so the store is closed before it is opened here.
    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = server.wait().unwrap();
    assert!(
        exit.success(),
        "cairn serve exited with {exit} after SIGTERM"
    );

    // And the store verifies clean.
    let store = cairn::Store::open(dir.path().join("tenants").join("default")).unwrap();
    let report = store.verify().unwrap();
    assert!(report.ok, "verify after the crash: {:?}", report.problems);
    assert!(report.artifacts_checked > acked.len() as u64);
}
