//! Live events over Server-Sent Events against a real server on 127.0.0.1 with a real HTTP
//! client: live delivery (one session and a subtree), resume with Last-Event-ID after a
//! disconnect (no gap, no duplicate), cross-tenant streams refused as not found, keep-alives.

use crate::common;

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::Duration;

use common::TestServer;
use serde_json::{json, Value};
use ureq::http;

/// A hang guard, not a timing assertion: generous so a loaded machine never trips it.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
enum Frame {
    Comment(String),
    Event {
        id: Option<String>,
        event: Option<String>,
        data: String,
    },
}

impl Frame {
    fn seq(&self) -> u64 {
        match self {
            Frame::Event { data, .. } => serde_json::from_str::<Value>(data).unwrap()["seq"]
                .as_u64()
                .unwrap(),
            Frame::Comment(c) => panic!("a comment, not an event: {c}"),
        }
    }
}

struct Stream {
    status: u16,
    content_type: Option<String>,
    frames: mpsc::Receiver<Frame>,
    body: Option<String>,
}

impl Stream {
    /// The next event frame (comments skipped).
    fn next_event(&self) -> Frame {
        loop {
            let f = self.frames.recv_timeout(WAIT).expect("no frame arrived");
            if let Frame::Event { .. } = f {
                return f;
            }
        }
    }
}

/// Opens an event stream; a thread parses frames and hangs up after `take` event frames
/// (dropping the connection: a client disconnect).
fn open(url: &str, token: Option<&str>, path: &str, last_id: Option<&str>, take: usize) -> Stream {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut b = http::Request::builder()
        .method("GET")
        .uri(format!("{url}{path}"));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    if let Some(l) = last_id {
        b = b.header("last-event-id", l);
    }
    let resp = agent.run(b.body(()).unwrap()).unwrap();
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let (tx, rx) = mpsc::channel();
    if status != 200 {
        let body = resp.into_body().read_to_string().unwrap();
        return Stream {
            status,
            content_type,
            frames: rx,
            body: Some(body),
        };
    }
    std::thread::spawn(move || {
        let mut reader = BufReader::new(resp.into_body().into_reader());
        let (mut id, mut event, mut data) = (None, None, String::new());
        let mut events = 0;
        let mut line = String::new();
        while events < take {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let l = line.trim_end_matches(['\n', '\r']);
            if l.is_empty() {
                if !data.is_empty() || id.is_some() {
                    events += 1;
                    let f = Frame::Event {
                        id: id.take(),
                        event: event.take(),
                        data: std::mem::take(&mut data),
                    };
                    if tx.send(f).is_err() {
                        return;
                    }
                }
            } else if let Some(c) = l.strip_prefix(':') {
                if tx.send(Frame::Comment(c.trim().to_string())).is_err() {
                    return;
                }
            } else if let Some(v) = l.strip_prefix("id: ") {
                id = Some(v.to_string());
            } else if let Some(v) = l.strip_prefix("event: ") {
                event = Some(v.to_string());
            } else if let Some(v) = l.strip_prefix("data: ") {
                data.push_str(v);
            } else {
                panic!("not an SSE line: {l:?}");
            }
        }
        // Dropping the reader here closes the connection.
    });
    Stream {
        status,
        content_type,
        frames: rx,
        body: None,
    }
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
fn live_events_arrive_in_order_for_a_session_and_a_subtree() {
    let srv = TestServer::start();
    let c = srv.anon();
    let root = c.session(&json!({}));
    let s = open(
        &srv.url,
        None,
        &format!("/v1/sessions/{root}/events/stream"),
        None,
        3,
    );
    assert_eq!(s.status, 200, "{:?}", s.body);
    assert_eq!(s.content_type.as_deref(), Some("text/event-stream"));
    let tree = open(
        &srv.url,
        None,
        &format!("/v1/sessions/{root}/events/stream?subtree=true"),
        None,
        3,
    );
    assert_eq!(tree.status, 200, "{:?}", tree.body);

    let seq = append(&c, &root, "first");
    c.put(&root, "notes.txt", b"hello");
    let child = c.session(&json!({"parent": root}));
    c.put(&child, "child.txt", b"child data");

    // The session's own stream: its events in seq order, the child's not.
    let e1 = s.next_event();
    let Frame::Event { id, event, data } = &e1 else {
        unreachable!()
    };
    assert_eq!(id.as_deref(), Some(format!("{root}:{seq}").as_str()));
    assert_eq!(event.as_deref(), Some("custom"));
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["name"], "first");
    assert_eq!(v["session_id"], root.as_str());
    let e2 = s.next_event();
    assert_eq!(e2.seq(), seq + 1);
    let Frame::Event { event, .. } = &e2 else {
        unreachable!()
    };
    assert_eq!(event.as_deref(), Some("artifact_stored"));

    // The subtree stream: the root's two events, then the child's creation and its artifact.
    let got: Vec<(String, String)> = (0..3)
        .map(|_| match tree.next_event() {
            Frame::Event { event, data, .. } => {
                let v: Value = serde_json::from_str(&data).unwrap();
                (
                    v["session_id"].as_str().unwrap().to_string(),
                    event.unwrap(),
                )
            }
            Frame::Comment(_) => unreachable!(),
        })
        .collect();
    assert_eq!(
        got,
        [
            (root.clone(), "custom".to_string()),
            (root.clone(), "artifact_stored".to_string()),
            (child.clone(), "created".to_string()),
        ]
    );
}

#[test]
fn a_stream_resumes_after_a_disconnect_without_gaps_or_duplicates() {
    let srv = TestServer::start();
    let c = srv.anon();
    let sid = c.session(&json!({}));
    let path = format!("/v1/sessions/{sid}/events/stream");
    // The first connection takes two events and hangs up.
    let first = open(&srv.url, None, &path, None, 2);
    assert_eq!(first.status, 200);
    let a = append(&c, &sid, "a");
    let b = append(&c, &sid, "b");
    assert_eq!(first.next_event().seq(), a);
    let last = first.next_event();
    assert_eq!(last.seq(), b);
    let Frame::Event {
        id: Some(last_id), ..
    } = last
    else {
        panic!("the event has no id")
    };
    // Written while nobody listens.
    let missed: Vec<u64> = (0..3).map(|i| append(&c, &sid, &format!("m{i}"))).collect();
    // Resume: the three stored ones are replayed, then a live one follows.
    let second = open(&srv.url, None, &path, Some(&last_id), 4);
    assert_eq!(second.status, 200, "{:?}", second.body);
    let live = append(&c, &sid, "live");
    let got: Vec<u64> = (0..4).map(|_| second.next_event().seq()).collect();
    let mut want = missed.clone();
    want.push(live);
    assert_eq!(got, want);
    assert_eq!(want, [b + 1, b + 2, b + 3, b + 4], "seqs are consecutive");

    // A bare seq works for a one-session stream too, and so does the query parameter.
    let third = open(
        &srv.url,
        None,
        &format!("{path}?last_event_id={}", missed[1]),
        None,
        2,
    );
    assert_eq!(third.status, 200, "{:?}", third.body);
    assert_eq!(third.next_event().seq(), missed[2]);
    assert_eq!(third.next_event().seq(), live);

    // A subtree stream resumes from a child's event and replays the rest of the subtree.
    let child = c.session(&json!({"parent": sid}));
    let tree_path = format!("/v1/sessions/{sid}/events/stream?subtree=true");
    let t1 = open(&srv.url, None, &tree_path, None, 1);
    let x = append(&c, &child, "x");
    let Frame::Event { id: Some(tid), .. } = t1.next_event() else {
        panic!("no id")
    };
    assert_eq!(tid, format!("{child}:{x}"));
    let y = append(&c, &child, "y");
    let z = append(&c, &sid, "z");
    let t2 = open(&srv.url, None, &tree_path, Some(&tid), 2);
    assert_eq!(t2.status, 200, "{:?}", t2.body);
    let mut got: Vec<String> = (0..2)
        .map(|_| match t2.next_event() {
            Frame::Event { id, .. } => id.unwrap(),
            Frame::Comment(_) => unreachable!(),
        })
        .collect();
    got.sort();
    let mut want = vec![format!("{child}:{y}"), format!("{sid}:{z}")];
    want.sort();
    assert_eq!(got, want);

    // Ids that do not fit are refused with a clear error.
    let bad = open(&srv.url, None, &path, Some("not-an-id:x"), 1);
    assert_eq!(bad.status, 400);
    assert!(bad.body.unwrap().contains("Last-Event-ID"));
    let other = open(&srv.url, None, &path, Some(&format!("{child}:1")), 1);
    assert_eq!(other.status, 400, "{:?}", other.body);
}

#[test]
fn another_tenants_stream_is_not_found_like_a_missing_session() {
    let srv = TestServer::start();
    let ta = srv.token("alpha", false, false);
    let tb = srv.token("beta", false, false);
    let a = srv.client(&ta);
    let sid = a.session(&json!({}));
    let mine = open(
        &srv.url,
        Some(&ta),
        &format!("/v1/sessions/{sid}/events/stream"),
        None,
        1,
    );
    assert_eq!(mine.status, 200);
    let theirs = open(
        &srv.url,
        Some(&tb),
        &format!("/v1/sessions/{sid}/events/stream?subtree=true"),
        None,
        1,
    );
    assert_eq!(theirs.status, 404);
    let nobody = a.session(&json!({}));
    // A session that never existed in beta's store, for comparison: same answer.
    let never = open(
        &srv.url,
        Some(&tb),
        &format!("/v1/sessions/{nobody}/events/stream?subtree=true"),
        None,
        1,
    );
    assert_eq!(never.status, 404);
    assert_eq!(
        theirs.body.unwrap().replace(&sid, "ID"),
        never.body.unwrap().replace(&nobody, "ID")
    );
    let anon = open(
        &srv.url,
        None,
        &format!("/v1/sessions/{sid}/events/stream"),
        None,
        1,
    );
    assert_eq!(anon.status, 401);
    // The tenant's own stream still works.
    let seq = append(&a, &sid, "mine");
    assert_eq!(mine.next_event().seq(), seq);
}

#[test]
fn an_idle_stream_gets_keep_alive_comments() {
    let srv = TestServer::start_with(|c| c.limits.sse_keepalive_secs = 1);
    let c = srv.anon();
    let sid = c.session(&json!({}));
    let s = open(
        &srv.url,
        None,
        &format!("/v1/sessions/{sid}/events/stream"),
        None,
        1,
    );
    assert_eq!(s.status, 200);
    let f = s.frames.recv_timeout(WAIT).expect("nothing arrived");
    match f {
        Frame::Comment(c) => assert_eq!(c, "keep-alive"),
        other => panic!("expected a keep-alive comment, got {other:?}"),
    }
}

#[test]
fn streams_over_max_streams_get_503_and_a_slow_client_is_told_what_it_missed() {
    let srv = TestServer::start_with(|c| {
        c.limits.max_streams = 1;
        c.limits.sse_queue = 2;
    });
    let c = srv.anon();
    let sid = c.session(&json!({}));
    let path = format!("/v1/sessions/{sid}/events/stream");
    // This client never reads: its connection stalls once the socket buffers fill.
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let stalled = agent.get(format!("{}{path}", srv.url)).call().unwrap();
    assert_eq!(stalled.status().as_u16(), 200);
    let second = open(&srv.url, None, &path, None, 1);
    assert_eq!(second.status, 503);
    assert!(second.body.unwrap().contains("max_streams"));
    // Large events fill the socket buffers and the channel quickly; the server keeps writing.
    let big = "x".repeat(60 * 1024);
    for _ in 0..400 {
        let r = c.post(
            &format!("/v1/sessions/{sid}/events"),
            &json!({"name": "big", "payload": big}),
        );
        assert_eq!(r.status, 201);
    }
    // Now read: somewhere in the stream a `missed` frame counts the dropped events, and the
    // events plus the missed counts add up to all 400.
    let mut reader = BufReader::new(stalled.into_body().into_reader());
    let (mut events, mut missed) = (0u64, 0u64);
    let mut line = String::new();
    let mut kind = String::new();
    while events + missed < 400 {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "the stream ended");
        let l = line.trim_end();
        if let Some(k) = l.strip_prefix("event: ") {
            kind = k.to_string();
        } else if let Some(d) = l.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(d).unwrap();
            if kind == "missed" {
                missed += v["missed"].as_u64().unwrap();
            } else {
                events += 1;
            }
        }
    }
    assert_eq!(events + missed, 400);
    assert!(missed > 0, "a stalled client lost nothing: {events} events");
}
