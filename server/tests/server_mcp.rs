//! MCP over streamable HTTP at `/mcp` against a real server, spoken as raw JSON-RPC over HTTP
//! (the Python SDK's tests in `mcp/tests/python/` cover the protocol; these cover the server's
//! body limit): a 10 MB tool output stored through `store_output` passes with `max_json_bytes`
//! far below it, and a message above `max_mcp_bytes` is refused with a JSON 413.

use crate::common;

use common::{Client, Resp, TestServer};
use serde_json::{json, Value};

const ACCEPT: (&str, &str) = ("accept", "application/json, text/event-stream");
const JSON: (&str, &str) = ("content-type", "application/json");

/// The JSON-RPC message of a `/mcp` answer: the body itself, or the last `data:` event of an
/// event stream.
fn message(r: &Resp) -> Value {
    let body = String::from_utf8_lossy(&r.body);
    let ct = r.header("content-type").unwrap_or_default();
    if ct.starts_with("text/event-stream") {
        let data = body
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim)
            .rfind(|d| !d.is_empty())
            .unwrap_or_else(|| panic!("no data event in {body}"));
        serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"))
    } else {
        r.json()
    }
}

/// An initialized MCP session: the client and its `Mcp-Session-Id`.
fn initialize(c: &Client) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "server_mcp.rs", "version": "0"}
    }});
    let r = c.bytes(
        "POST",
        "/mcp",
        &[ACCEPT, JSON],
        serde_json::to_vec(&init).unwrap(),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let m = message(&r);
    assert_eq!(m["result"]["serverInfo"]["name"], "cairn", "{m}");
    let sid = r.header("mcp-session-id").expect("an Mcp-Session-Id");
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = c.bytes(
        "POST",
        "/mcp",
        &[ACCEPT, JSON, ("mcp-session-id", &sid)],
        serde_json::to_vec(&note).unwrap(),
    );
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    sid
}

fn call(c: &Client, sid: &str, id: u64, tool: &str, args: Value) -> Resp {
    let msg = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": args}});
    c.bytes(
        "POST",
        "/mcp",
        &[ACCEPT, JSON, ("mcp-session-id", sid)],
        serde_json::to_vec(&msg).unwrap(),
    )
}

/// POSTs `body` to `/mcp` chunked (no Content-Length) on a raw connection; returns the answer.
fn chunked_post(srv: &TestServer, sid: &str, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let addr = srv.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: {addr}\r\naccept: {}\r\ncontent-type: application/json\r\nmcp-session-id: {sid}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        ACCEPT.1
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer and stop reading before the whole body is sent.
    for chunk in body.chunks(64 << 10) {
        let sent = s
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .and_then(|_| s.write_all(chunk))
            .and_then(|_| s.write_all(b"\r\n"));
        if sent.is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// A test log of about 10 MB, 200,000 lines, with a few failures to grep for.
fn big_log() -> String {
    let mut s = String::with_capacity(11 << 20);
    for i in 1..=200_000u32 {
        if i % 50_000 == 0 {
            s.push_str(&format!(
                "{i:06} FAILED test_case_{i} - AssertionError: \"expected\" 1, got 2\n"
            ));
        } else {
            s.push_str(&format!(
                "{i:06} PASSED test_case_{i} in 0.01s \"ok\" ........................\n"
            ));
        }
    }
    s
}

#[test]
fn a_10_mb_output_is_stored_through_mcp_over_http_above_max_json_bytes() {
    // REST JSON bodies stay small; MCP messages have their own (default) limit.
    let srv = TestServer::start_with(|c| c.limits.max_json_bytes = 64 << 10);
    let c = srv.anon();
    let sid = initialize(&c);
    let body = big_log();
    assert!(body.len() >= 10_000_000);
    let r = call(
        &c,
        &sid,
        2,
        "store_output",
        json!({"name": "pytest/full.log", "content": body, "tags": ["pytest"]}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let m = message(&r);
    let result = &m["result"];
    assert_ne!(result["isError"], true, "{m}");
    let stored = &result["structuredContent"];
    assert_eq!(stored["size"], body.len() as u64, "{m}");
    assert_eq!(stored["preview"]["lines"], 200_000, "{m}");
    let art = stored["artifact_id"].as_str().expect("an artifact id");

    // It reads back by part, through MCP and through REST.
    let r = call(
        &c,
        &sid,
        3,
        "read_part",
        json!({"artifact_id": art, "mode": "grep", "pattern": "FAILED", "context": 0}),
    );
    let m = message(&r);
    let lines = m["result"]["structuredContent"]["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("{m}"));
    let numbers: Vec<u64> = lines
        .iter()
        .filter(|l| l["matched"] == true)
        .filter_map(|l| l["number"].as_u64())
        .collect();
    assert_eq!(numbers, [50_000, 100_000, 150_000, 200_000], "{m}");
    let r = c.get(&format!("/v1/artifacts/{art}/read?part=tail&lines=1"));
    assert_eq!(r.status, 200);
    assert!(r.json()["content"]["lines"][0]["text"]
        .as_str()
        .is_some_and(|t| t.starts_with("200000 FAILED")));

    // The same size as a REST JSON body is still refused by max_json_bytes.
    let r = c.post(
        "/v1/sessions",
        &json!({"metadata": {"x": "y".repeat(100 << 10)}}),
    );
    assert_eq!(r.status, 413);
    assert_eq!(r.code(), "payload_too_large");
}

#[test]
fn an_mcp_message_above_max_mcp_bytes_is_a_json_413_and_stores_nothing() {
    let srv = TestServer::start_with(|c| c.limits.max_mcp_bytes = 64 << 10);
    let c = srv.anon();
    let sid = initialize(&c);
    let r = call(
        &c,
        &sid,
        2,
        "store_output",
        json!({"name": "big.log", "content": "x".repeat(100 << 10)}),
    );
    assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.code(), "payload_too_large");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("max_mcp_bytes"), "{msg}");

    // Chunked (no Content-Length): refused while reading. (Bodies here stay small enough for
    // the socket buffers: the server answers 413 without reading the rest.)
    let big = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "store_output", "arguments": {"name": "big.log", "content": "x".repeat(2 << 20)}}}))
    .unwrap();
    let answer = chunked_post(&srv, &sid, &big);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("max_mcp_bytes"), "{answer}");

    // Under the limit the same session still works, and nothing was stored.
    let r = call(
        &c,
        &sid,
        4,
        "store_output",
        json!({"name": "small.log", "content": "ok\n"}),
    );
    assert_eq!(r.status, 200);
    assert_ne!(message(&r)["result"]["isError"], true);
    let s = c.get("/v1/artifacts?limit=100");
    assert_eq!(s.status, 200, "{}", String::from_utf8_lossy(&s.body));
    let names: Vec<String> = s.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str().map(String::from))
        .collect();
    assert_eq!(names, ["small.log"]);
}
