//! `cairn serve` and `cairn token` as a user runs them: the real binary, its first stdout line,
//! a real HTTP client, SIGTERM, and the data still there afterwards.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use serde_json::Value;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cairn")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
}

fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (u16, Vec<u8>) {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    let mut r = agent.run(b.body(body).unwrap()).unwrap();
    let status = r.status().as_u16();
    let mut out = Vec::new();
    r.body_mut().as_reader().read_to_end(&mut out).unwrap();
    (status, out)
}

fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(b)))
}

#[test]
fn token_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("srv");
    let out = Command::new(bin())
        .args([
            "--json",
            "token",
            "create",
            "--tenant",
            "acme",
            "--read-only",
            "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json(&out.stdout);
    assert!(v["token"].as_str().unwrap().starts_with("cairn_"));
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["read_only"], true);
    let id = v["id"].as_str().unwrap().to_string();

    let out = Command::new(bin())
        .args(["--json", "token", "list", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    let list = json(&out.stdout);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("token").is_none(), "the secret is never listed");

    let out = Command::new(bin())
        .args(["--json", "token", "create", "--tenant", "../x", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    let e = json(&out.stderr);
    assert_eq!(e["error"]["code"], "invalid_input");

    let out = Command::new(bin())
        .args(["--json", "token", "revoke", &id, "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new(bin())
        .args(["--json", "token", "revoke", &id, "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
}

#[cfg(unix)]
#[test]
fn serve_prints_its_url_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("srv");
    let mut child = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut url = String::new();
    stdout.read_line(&mut url).unwrap();
    let url = url.trim().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let a = agent();
    let (st, body) = call(
        &a,
        "POST",
        &format!("{url}/v1/sessions"),
        None,
        b"{}".to_vec(),
    );
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
    let sid = json(&body)["id"].as_str().unwrap().to_string();
    let (st, body) = call(
        &a,
        "PUT",
        &format!("{url}/v1/sessions/{sid}/artifacts/out.txt?kind=tool_result"),
        None,
        b"kept".to_vec(),
    );
    assert_eq!(st, 201);
    let aid = json(&body)["id"].as_str().unwrap().to_string();

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("without authentication"), "{err}");
    assert!(
        err.contains("\"request_id\""),
        "one JSON line per request: {err}"
    );
    assert!(err.contains("every store flushed"), "{err}");

    // The tenant's store is an ordinary store: the CLI reads the acknowledged artifact.
    let out = Command::new(bin())
        .arg("--store")
        .arg(data.join("tenants").join("default"))
        .args(["artifact", "get", &aid])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"kept");
}

#[test]
fn serve_refuses_a_public_address_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["--json", "serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("srv"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = json(&out.stderr);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("without tokens"),
        "{e}"
    );
}

/// Starts `cairn serve` on an ephemeral loopback port without tokens; returns it and its URL.
fn start_open(data: &std::path::Path, extra: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut url = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut url)
        .unwrap();
    (child, url.trim().to_string())
}

#[test]
fn open_admin_flag_gives_anonymous_loopback_the_admin_scope() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent();
    for (extra, want) in [(&[][..], 403), (&["--open-admin"][..], 200)] {
        let (mut child, url) = start_open(&dir.path().join("srv"), extra);
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let (st, body) = call(
            &a,
            "GET",
            &format!("{url}/v1/admin/stats"),
            None,
            Vec::new(),
        );
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(st, want, "{extra:?}: {}", String::from_utf8_lossy(&body));
        if want == 403 {
            assert_eq!(json(&body)["error"]["code"], "forbidden");
        }
    }
}

/// `cairn serve --gc-grace`: a value that is not a duration, or the flag without content on
/// object storage (the only content with a grace period), is refused before anything starts.
#[test]
fn serve_refuses_a_bad_or_misplaced_gc_grace() {
    let dir = tempfile::tempdir().unwrap();
    let serve = |extra: &[&str], env: Option<&str>| {
        let mut c = Command::new(bin());
        c.args(["--json", "serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("srv"))
            .args(extra)
            .env_remove("CAIRN_GC_GRACE")
            .env_remove("CAIRN_CONTENT")
            .env_remove("CAIRN_METADATA");
        if let Some(g) = env {
            c.env("CAIRN_GC_GRACE", g);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(5), "{extra:?} {env:?}");
        let e = json(&out.stderr);
        e["error"]["message"].as_str().unwrap().to_string()
    };
    let s3 = [
        "--metadata",
        "postgres://cairn@127.0.0.1:1/none",
        "--content",
        "s3://bucket/prefix",
    ];
    let m = serve(&[&s3[..], &["--gc-grace", "an hour"]].concat(), None);
    assert!(
        m.contains("--gc-grace") && m.contains("\"an hour\" is not a duration"),
        "{m}"
    );
    let m = serve(&s3, Some("-5m"));
    assert!(
        m.contains("--gc-grace") && m.contains("not a duration"),
        "{m}"
    );
    let m = serve(&["--gc-grace", "1h"], None);
    assert!(
        m.contains("--gc-grace") && m.contains("--content s3://"),
        "{m}"
    );
    assert!(
        !dir.path().join("srv").join("tenants").exists(),
        "nothing started"
    );
}
