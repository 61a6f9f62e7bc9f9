//! Graceful shutdown: in-flight requests finish, every store is flushed, and everything that
//! got a 2xx reads back after a restart.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Client, TestServer};
use serde_json::json;

/// Acknowledged uploads: artifact id and the bytes sent.
type Acked = Vec<(String, Vec<u8>)>;

#[test]
fn shutdown_finishes_in_flight_requests_and_loses_nothing_acknowledged() {
    let srv = TestServer::start();
    let c = srv.anon();
    let s = c.session(&json!({"name": "load"}));
    let addr = srv.url.trim_start_matches("http://").to_string();

    // One upload in flight. `Expect: 100-continue` makes the server answer "100 Continue"
    // when the handler starts reading the body: then we know the request is inside.
    let mut held = TcpStream::connect(&addr).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        held,
        "PUT /v1/sessions/{s}/artifacts/in-flight?kind=tool_result HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
    )
    .unwrap();
    held.flush().unwrap();
    let mut interim = Vec::new();
    let mut b = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        assert_eq!(held.read(&mut b).unwrap(), 1);
        interim.push(b[0]);
    }
    assert!(
        interim.starts_with(b"HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&interim)
    );
    held.write_all(b"01234").unwrap();
    held.flush().unwrap();

    // Writers keep storing while the shutdown begins.
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (acked, stop, url, s) = (
            Arc::clone(&acked),
            Arc::clone(&stop),
            srv.url.clone(),
            s.clone(),
        );
        writers.push(std::thread::spawn(move || {
            let c = Client::new(&url, None);
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let body = format!("writer {w} item {i}").into_bytes();
                match c.try_bytes(
                    "PUT",
                    &format!("/v1/sessions/{s}/artifacts/w{w}-{i}?kind=tool_result"),
                    &[],
                    body.clone(),
                ) {
                    Some(r) if r.status == 201 => {
                        let id = r.json()["id"].as_str().unwrap().to_string();
                        acked.lock().unwrap().push((id, body));
                    }
                    Some(r) if r.status >= 500 => panic!("server error {}", r.status),
                    _ => {}
                }
                i += 1;
                if i > 5000 {
                    break;
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 20 {
        std::thread::sleep(Duration::from_millis(5));
    }

    let TestServer { server, dir, .. } = srv;
    let server = server.unwrap();
    let shutdown = std::thread::spawn(move || server.shutdown());

    // Wait until the listener is closed: new connections are refused.
    let mut closed = false;
    for _ in 0..4000 {
        if TcpStream::connect(&addr).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(closed, "the listener closes at shutdown");
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    // The in-flight upload still completes and is acknowledged.
    held.write_all(b"56789").unwrap();
    let mut text = Vec::new();
    let _ = held.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text).into_owned();
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    shutdown.join().unwrap().unwrap();

    // Restart on the same data: everything acknowledged reads back.
    let srv = TestServer::start_in(dir, |_| {});
    let c = srv.anon();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 20);
    for (id, body) in &acked {
        let r = c.get(&format!("/v1/artifacts/{id}/content"));
        assert_eq!(r.status, 200, "acknowledged artifact {id} is readable");
        assert_eq!(&r.body, body);
    }
    let r = c.get(&format!("/v1/sessions/{s}/artifacts/in-flight"));
    assert_eq!(r.status, 200);
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        c.get(&format!("/v1/artifacts/{id}/content")).body,
        b"0123456789"
    );
}
