//! The load benchmark's Rust half (`server/bench/load.sh` drives it; wrk does the HTTP load):
//!
//! - `inproc DIR THREADS SECS`: the in-process baseline. The same operations the wrk scripts
//!   send, on the library directly, from THREADS threads for SECS seconds each: small puts
//!   (1 KiB, unique content, a new name each), 1 KiB gets by id (verified read), and the
//!   query of `query.lua`. Prints one JSON line per operation: ops/s, p50, p99 (µs).
//! - `prepare URL N FILE`: over HTTP, makes a session and N 1 KiB artifacts named `doc-N`; writes
//!   the session id and then the artifact ids, one a line, for the wrk scripts.
//! - `sse URL SUBSCRIBERS EVENTS`: SSE fan-out over HTTP: SUBSCRIBERS streams on one session,
//!   then EVENTS events appended over HTTP by 4 writers; counts every delivery and measures the
//!   delay from the append's send to each receipt.
//! - `inproc-sse DIR SUBSCRIBERS EVENTS`: the same fan-out on library subscriptions.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use cairn::{ArtifactKind, Delivery, NewArtifact, NewSession, Query, Store, SubscriptionFilter};

/// Artifacts the get and query workloads read from.
const PRELOAD: usize = 1000;

fn usage() -> ! {
    eprintln!(
        "usage: load inproc DIR THREADS SECS | prepare URL N FILE | sse URL SUBSCRIBERS EVENTS | inproc-sse DIR SUBSCRIBERS EVENTS"
    );
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage())
}

fn body(i: u64, t: usize) -> Vec<u8> {
    let mut b = format!("{i:08}-{t:04}-").into_bytes();
    b.resize(1024, b'x');
    b
}

/// p50 and p99 in microseconds.
fn percentiles(lat: &mut [u32]) -> (u32, u32) {
    if lat.is_empty() {
        return (0, 0);
    }
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize];
    (at(0.50), at(0.99))
}

fn report(mode: &str, op: &str, n: usize, secs: f64, lat: &mut [u32], extra: &str) {
    let (p50, p99) = percentiles(lat);
    println!(
        "{{\"mode\":\"{mode}\",\"op\":\"{op}\",\"ops\":{n},\"secs\":{secs:.2},\"ops_per_sec\":{:.0},\"p50_us\":{p50},\"p99_us\":{p99}{extra}}}",
        n as f64 / secs
    );
}

/// Runs `f(thread, i)` on `threads` threads for `secs` seconds; returns (ops, secs, latencies).
fn run_for(
    threads: usize,
    secs: f64,
    f: impl Fn(usize, u64) + Send + Sync + 'static,
) -> (usize, f64, Vec<u32>) {
    let f = Arc::new(f);
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (f, stop, barrier) = (Arc::clone(&f), Arc::clone(&stop), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                barrier.wait();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let s = Instant::now();
                    f(t, i);
                    lat.push(s.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    i += 1;
                }
                lat
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().expect("a load thread panicked"));
    }
    let secs = start.elapsed().as_secs_f64();
    (all.len(), secs, all)
}

fn inproc(args: &[String]) {
    let dir: PathBuf = arg(args, 2);
    let threads: usize = arg(args, 3);
    let secs: f64 = arg(args, 4);
    let store = Arc::new(Store::open(&dir).expect("open the store"));
    let session = store
        .create_session(NewSession::new().name("load"))
        .expect("session")
        .id;
    let mut ids = Vec::new();
    for i in 0..PRELOAD {
        let a = store
            .put(
                session,
                NewArtifact::new(ArtifactKind::ToolResult, format!("doc-{i}")),
                body(i as u64, 9999),
            )
            .expect("preload");
        ids.push(a.id);
    }
    let ids = Arc::new(ids);

    let s = Arc::clone(&store);
    let (n, t, mut lat) = run_for(threads, secs, move |t, i| {
        s.put(
            session,
            NewArtifact::new(ArtifactKind::ToolResult, format!("load-{t}-{i}")),
            body(i, t),
        )
        .expect("put");
    });
    report("inproc", "put_1k", n, t, &mut lat, "");

    let (s, ids2) = (Arc::clone(&store), Arc::clone(&ids));
    let (n, t, mut lat) = run_for(threads, secs, move |t, i| {
        let id = ids2[(i as usize * 7919 + t * 104_729) % ids2.len()];
        let b = s.admin().read(id).expect("get");
        assert_eq!(b.len(), 1024);
    });
    report("inproc", "get_1k", n, t, &mut lat, "");

    let s = Arc::clone(&store);
    let (n, t, mut lat) = run_for(threads, secs, move |_, _| {
        let q = Query::new()
            .session(session)
            .kind(ArtifactKind::ToolResult)
            .name_glob("doc-1*")
            .limit(20);
        let p = s.query(&q).expect("query");
        assert_eq!(p.items.len(), 20);
    });
    report("inproc", "query", n, t, &mut lat, "");
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
}

fn post_json(a: &ureq::Agent, url: &str, v: &serde_json::Value) -> serde_json::Value {
    let mut r = a
        .post(url)
        .header("content-type", "application/json")
        .send(v.to_string())
        .expect("POST");
    let text = r.body_mut().read_to_string().expect("body");
    assert!(r.status().is_success(), "{url}: {} {text}", r.status());
    serde_json::from_str(&text).expect("JSON")
}

fn prepare(args: &[String]) {
    let url: String = arg(args, 2);
    let n: usize = arg(args, 3);
    let file: PathBuf = arg(args, 4);
    let a = agent();
    let s = post_json(
        &a,
        &format!("{url}/v1/sessions"),
        &serde_json::json!({"name": "load"}),
    );
    let sid = s["id"].as_str().expect("session id").to_string();
    let mut out = format!("{sid}\n");
    for i in 0..n {
        let mut r = a
            .put(&format!(
                "{url}/v1/sessions/{sid}/artifacts/doc-{i}?kind=tool_result"
            ))
            .send(&body(i as u64, 9999)[..])
            .expect("PUT");
        let text = r.body_mut().read_to_string().expect("body");
        assert_eq!(r.status().as_u16(), 201, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        out.push_str(v["id"].as_str().expect("artifact id"));
        out.push('\n');
    }
    std::fs::write(&file, out).expect("write the ids file");
}

/// Receipt times (µs since `t0`) per event seq, per subscriber.
type Receipts = Arc<Mutex<Vec<(u64, u64)>>>;

fn sse(args: &[String]) {
    let url: String = arg(args, 2);
    let subs: usize = arg(args, 3);
    let events: u64 = arg(args, 4);
    let a = agent();
    let s = post_json(
        &a,
        &format!("{url}/v1/sessions"),
        &serde_json::json!({"name": "sse"}),
    );
    let sid = s["id"].as_str().expect("session id").to_string();
    let addr = url.trim_start_matches("http://").to_string();
    let t0 = Instant::now();
    let receipts: Receipts = Arc::new(Mutex::new(Vec::new()));
    let missed = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(Barrier::new(subs + 1));
    let mut readers = Vec::new();
    for _ in 0..subs {
        let (addr, sid, receipts, missed, ready) = (
            addr.clone(),
            sid.clone(),
            Arc::clone(&receipts),
            Arc::clone(&missed),
            Arc::clone(&ready),
        );
        readers.push(std::thread::spawn(move || {
            let mut c = TcpStream::connect(&addr).expect("connect");
            write!(
                c,
                "GET /v1/sessions/{sid}/events/stream HTTP/1.1\r\nHost: {addr}\r\n\r\n"
            )
            .expect("send");
            c.set_read_timeout(Some(Duration::from_secs(30))).ok();
            let mut r = BufReader::new(c);
            let mut line = String::new();
            r.read_line(&mut line).expect("status line");
            assert!(line.contains(" 200 "), "{line}");
            ready.wait();
            let mut mine = Vec::new();
            let mut got = 0u64;
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if let Some(id) = line.strip_prefix("id: ") {
                    let seq: u64 = id
                        .trim()
                        .rsplit(':')
                        .next()
                        .and_then(|x| x.parse().ok())
                        .unwrap_or(0);
                    mine.push((seq, t0.elapsed().as_micros() as u64));
                    got += 1;
                    if got > events {
                        break;
                    }
                } else if line.starts_with("event: missed") {
                    missed.fetch_add(1, Ordering::Relaxed);
                }
            }
            receipts.lock().expect("receipts").extend(mine);
        }));
    }
    ready.wait();
    // Four writers append the events; each records its send time per seq.
    let sent = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (url, sid, sent) = (url.clone(), sid.clone(), Arc::clone(&sent));
            let n = events / 4 + u64::from(w < events % 4);
            std::thread::spawn(move || {
                let a = agent();
                for i in 0..n {
                    let at = t0.elapsed().as_micros() as u64;
                    let e = post_json(
                        &a,
                        &format!("{url}/v1/sessions/{sid}/events"),
                        &serde_json::json!({"name": "tick", "payload": {"w": w, "i": i}}),
                    );
                    sent.lock()
                        .expect("sent")
                        .push((e["seq"].as_u64().unwrap_or(0), at));
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let write_secs = start.elapsed().as_secs_f64();
    // One more event (seq events+2) tells every reader the run is over.
    post_json(
        &a,
        &format!("{url}/v1/sessions/{sid}/events"),
        &serde_json::json!({"name": "end", "payload": {}}),
    );
    for r in readers {
        r.join().expect("reader");
    }
    let total_secs = start.elapsed().as_secs_f64();
    let sent: std::collections::HashMap<u64, u64> =
        sent.lock().expect("sent").iter().copied().collect();
    let receipts = receipts.lock().expect("receipts");
    let mut lat: Vec<u32> = receipts
        .iter()
        .filter_map(|(seq, at)| sent.get(seq).map(|s| at.saturating_sub(*s) as u32))
        .collect();
    let delivered = lat.len();
    let extra = format!(
        ",\"subscribers\":{subs},\"events\":{events},\"expected\":{},\"missed_markers\":{},\"append_per_sec\":{:.0}",
        subs as u64 * events,
        missed.load(Ordering::Relaxed),
        events as f64 / write_secs
    );
    report(
        "http",
        "sse_fanout",
        delivered,
        total_secs,
        &mut lat,
        &extra,
    );
}

fn inproc_sse(args: &[String]) {
    let dir: PathBuf = arg(args, 2);
    let subs: usize = arg(args, 3);
    let events: u64 = arg(args, 4);
    let store = Arc::new(Store::open(&dir).expect("open the store"));
    let session = store
        .create_session(NewSession::new().name("sse"))
        .expect("session")
        .id;
    let t0 = Instant::now();
    let sent = Arc::new(Mutex::new(std::collections::HashMap::new()));
    let mut readers = Vec::new();
    for _ in 0..subs {
        let sub = store
            .subscribe(SubscriptionFilter::new().session(session).capacity(1024))
            .expect("subscribe");
        readers.push(std::thread::spawn(move || {
            let mut mine = Vec::new();
            let mut missed = 0u64;
            while let Some(d) = sub.recv_timeout(Duration::from_secs(30)) {
                match d {
                    Delivery::Event(e) => {
                        mine.push((e.seq, t0.elapsed().as_micros() as u64));
                        if e.seq > events + 1 {
                            break;
                        }
                    }
                    Delivery::Missed(n) => missed += n,
                }
            }
            (mine, missed)
        }));
    }
    let start = Instant::now();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (store, sent) = (Arc::clone(&store), Arc::clone(&sent));
            let n = events / 4 + u64::from(w < events % 4);
            std::thread::spawn(move || {
                for i in 0..n {
                    let at = t0.elapsed().as_micros() as u64;
                    let e = store
                        .append_event(session, "tick", serde_json::json!({"w": w, "i": i}))
                        .expect("append");
                    sent.lock().expect("sent").insert(e.seq, at);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let write_secs = start.elapsed().as_secs_f64();
    store
        .append_event(session, "end", serde_json::json!({}))
        .expect("append");
    let mut lat = Vec::new();
    let mut missed = 0;
    let sent = sent.lock().expect("sent").clone();
    for r in readers {
        let (mine, m) = r.join().expect("reader");
        missed += m;
        lat.extend(
            mine.iter()
                .filter_map(|(seq, at)| sent.get(seq).map(|s| at.saturating_sub(*s) as u32)),
        );
    }
    let total_secs = start.elapsed().as_secs_f64();
    let extra = format!(
        ",\"subscribers\":{subs},\"events\":{events},\"expected\":{},\"missed\":{missed},\"append_per_sec\":{:.0}",
        subs as u64 * events,
        events as f64 / write_secs
    );
    let n = lat.len();
    report("inproc", "sse_fanout", n, total_secs, &mut lat, &extra);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; ignore it.
    let args: Vec<String> = args.into_iter().filter(|a| a != "--bench").collect();
    match args.get(1).map(String::as_str) {
        Some("inproc") => inproc(&args),
        Some("prepare") => prepare(&args),
        Some("sse") => sse(&args),
        Some("inproc-sse") => inproc_sse(&args),
        _ => usage(),
    }
    let _ = std::io::stdout().flush();
}
