//! What only remote mode has: a local store exported and imported on a server and back,
//! content-first bulk puts, verified downloads, tokens and scopes, the commands refused with
//! `--server`, and an unreachable server. Included by `cli_remote.rs`, so `Env` is remote.

use crate::cli_env;

use cli_env::{failure, one_json, s, Env};

use std::process::Command;

use serde_json::Value;

/// Runs `cairn` with `--server URL` and the given token (or none).
fn with_token(env: &Env, token: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut c = env.cmd(args);
    match token {
        Some(t) => c.env("CAIRN_TOKEN", t),
        None => c.env_remove("CAIRN_TOKEN"),
    };
    c.output().expect("run cairn")
}

fn server(env: &Env) -> (&str, &str) {
    let srv = env
        .server
        .as_ref()
        .expect("the remote target starts a server");
    (&srv.url, &srv.token)
}

#[test]
fn local_commands_are_refused_with_a_reason() {
    let env = Env::new();
    assert!(env.is_remote());
    for (args, word) in [
        (vec!["demo"], "demo"),
        (vec!["serve"], "serve"),
        (vec!["token", "list"], "token"),
        (vec!["mcp"], "mcp"),
    ] {
        let (code, msg) = env.fails(&args, 2);
        assert_eq!(code, "usage", "{args:?}");
        assert!(
            msg.contains(word) && msg.contains("--server"),
            "{args:?}: {msg}"
        );
    }
    // --store or --engine next to --server: a contradiction, said so.
    let (code, msg) = env.fails(&["--store", "x", "session", "list"], 2);
    assert_eq!(code, "usage");
    assert!(msg.contains("--store") && msg.contains("--server"), "{msg}");
    let (_, msg) = env.fails(&["--engine", "redb", "session", "list"], 2);
    assert!(msg.contains("--engine"), "{msg}");
    // CAIRN_STORE in the environment is ignored in remote mode: no local store appears.
    let out = env
        .cmd(&["--json", "session", "create", "--name", "x"])
        .env("CAIRN_STORE", env.store())
        .output()
        .unwrap();
    one_json(&out, &["session", "create"]);
    assert!(!env.store().exists(), "remote mode created a local store");
}

#[test]
fn tokens_and_scopes_map_to_clear_errors() {
    let env = Env::new();
    let (url, token) = server(&env);
    // The token is never printed, whatever happens.
    let out = with_token(&env, Some("cairn_wrong"), &["--json", "session", "list"]);
    let (code, msg) = failure(&out, &["session", "list"], 1);
    assert_eq!(code, "unauthorized");
    assert!(!msg.contains("cairn_wrong"), "{msg}");
    let out = with_token(&env, None, &["session", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("cairn: error: "), "{err}");

    // A read-only token of the same tenant reads, and a write is "forbidden".
    let data = env.server.as_ref().unwrap().data.clone();
    let out = Command::new(cli_env::bin())
        .args([
            "--json",
            "token",
            "create",
            "--tenant",
            "cli",
            "--read-only",
            "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    let ro: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ro = s(&ro, "token").to_string();
    let sid = s(&env.json(&["session", "create", "--name", "w"]), "id").to_string();
    let out = with_token(&env, Some(&ro), &["--json", "session", "show", &sid]);
    assert_eq!(s(&one_json(&out, &["show"]), "name"), "w");
    let out = with_token(&env, Some(&ro), &["--json", "session", "complete", &sid]);
    let (code, msg) = failure(&out, &["complete"], 1);
    assert_eq!(code, "forbidden");
    assert!(!msg.contains(&ro) && !msg.contains(token), "{msg}");
    // Not an admin: store-wide commands are refused, and nothing leaks the token.
    let out = with_token(&env, Some(&ro), &["--json", "gc"]);
    assert_eq!(failure(&out, &["gc"], 1).0, "forbidden");
    assert!(url.starts_with("http://127.0.0.1:"));
}

#[test]
fn an_unreachable_server_is_one_clear_line() {
    let env = Env::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = Command::new(cli_env::bin())
        .args(["--server", &url, "session", "list"])
        .env_remove("CAIRN_SERVER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("cairn: error: ") && err.contains(&url) && err.contains("cairn serve"),
        "{err}"
    );
    // CAIRN_SERVER works like --server; a bad URL is a usage error.
    let out = Command::new(cli_env::bin())
        .args(["--json", "session", "list"])
        .env("CAIRN_SERVER", "localhost:1")
        .output()
        .unwrap();
    let (code, msg) = failure(&out, &["session", "list"], 2);
    assert_eq!(code, "usage");
    assert!(msg.contains("http://"), "{msg}");
    let _ = env;
}

#[test]
fn bulk_put_sends_only_missing_content_and_get_verifies() {
    let env = Env::new();
    let sid = s(&env.json(&["session", "create"]), "id").to_string();
    let dir = env.path("tree");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("a.txt"), b"alpha").unwrap();
    std::fs::write(dir.join("sub/b.bin"), &big).unwrap();
    std::fs::write(dir.join("sub/same.bin"), &big).unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
    let put = env.json(&[
        "artifact",
        "put",
        &sid,
        dir.to_str().unwrap(),
        "-r",
        "--kind",
        "tool_result",
    ]);
    let items = put.as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|a| s(a, "name")).collect();
    assert_eq!(names, ["a.txt", "empty", "sub/b.bin", "sub/same.bin"]);
    assert_eq!(items[2]["hash"], items[3]["hash"]);
    assert_eq!(items[2]["size"], 300_000);

    // Again under a prefix: all content is on the server already, so nothing is sent.
    let out = env.human(&[
        "artifact",
        "put",
        &sid,
        dir.to_str().unwrap(),
        "-r",
        "--kind",
        "tool_result",
        "--prefix",
        "again/",
    ]);
    assert!(out.contains("stored 4 file(s)"), "{out}");
    assert!(out.contains("the store grew by 0 B"), "{out}");

    // A verified download to a file and to stdout.
    let id = s(&items[2], "id");
    let dest = env.path("out.bin");
    let v = env.json(&["artifact", "get", id, "-o", dest.to_str().unwrap()]);
    assert_eq!(s(&v, "id"), id);
    assert_eq!(std::fs::read(&dest).unwrap(), big);
    let out = env.run(&["artifact", "get", "--session", &sid, "--name", "a.txt"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, b"alpha");
    let out = env.run(&["artifact", "get", "--session", &sid, "--name", "empty"]);
    assert!(out.status.success() && out.stdout.is_empty());
}

#[test]
fn export_and_import_between_servers_and_stores() {
    let env = Env::new();
    let root = s(
        &env.json(&["session", "create", "--name", "root", "--key", "k1"]),
        "id",
    )
    .to_string();
    env.json(&["session", "create", "--name", "kid", "--parent", &root]);
    let put = one_json(
        &env.run_stdin(
            &[
                "--json",
                "artifact",
                "put",
                &root,
                "-",
                "--name",
                "n.txt",
                "--kind",
                "user_input",
            ],
            b"hello bundle",
        ),
        &["put"],
    );
    let file = env.path("b.cairn");
    let rep = env.json(&[
        "session",
        "export",
        "key:k1",
        file.to_str().unwrap(),
        "--subtree",
    ]);
    assert_eq!(rep["sessions"], 2);
    assert_eq!(rep["artifacts"], 1);
    assert_eq!(rep["bundle_bytes"], std::fs::metadata(&file).unwrap().len());
    // To stdout: the same bytes, and the note counts what the check on the way saw.
    let out = env.run(&["session", "export", "key:k1", "-", "--subtree"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains("exported 2 session(s), 1 artifact(s)"),
        "{note}"
    );
    assert_eq!(
        out.stdout.len() as u64,
        std::fs::metadata(&file).unwrap().len()
    );
    // Into a local store, and the content reads back.
    let local = env.path("local");
    let out = Command::new(cli_env::bin())
        .arg("--store")
        .arg(&local)
        .args(["--json", "session", "import"])
        .arg(&file)
        .env_remove("CAIRN_SERVER")
        .output()
        .unwrap();
    let imp = one_json(&out, &["import"]);
    assert_eq!(s(&imp, "root"), root);
    let out = Command::new(cli_env::bin())
        .arg("--store")
        .arg(&local)
        .args(["artifact", "get", s(&put, "id")])
        .env_remove("CAIRN_SERVER")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"hello bundle");
    // Back into the server as a copy: new ids, keys dropped, under a parent.
    let home = s(&env.json(&["session", "create", "--name", "home"]), "id").to_string();
    let imp = env.json(&[
        "session",
        "import",
        file.to_str().unwrap(),
        "--new-ids",
        "--drop-keys",
        "--parent",
        &home,
    ]);
    assert_ne!(s(&imp, "root"), root);
    assert_eq!(imp["sessions"].as_array().unwrap().len(), 2);
    let tree = env.json(&["session", "tree", &home]);
    assert_eq!(tree["children"].as_array().unwrap().len(), 1);
    // The same ids again: "already exists", exit 4, nothing changed.
    let (code, _) = env.fails(&["session", "import", file.to_str().unwrap()], 4);
    assert_eq!(code, "already_exists");
}

#[test]
fn checkpoint_binary_state_round_trips() {
    let env = Env::new();
    let sid = s(&env.json(&["session", "create"]), "id").to_string();
    let state: Vec<u8> = (0..5000u32).map(|i| (i % 256) as u8).collect();
    let f = env.path("state.bin");
    std::fs::write(&f, &state).unwrap();
    let cp = env.json(&[
        "checkpoint",
        "create",
        &sid,
        "--label",
        "bin",
        "--state",
        f.to_str().unwrap(),
    ]);
    assert_eq!(cp["state_blob"]["size"], 5000);
    let id = s(&cp, "id");
    let out = env.run(&["checkpoint", "state", id]);
    assert!(out.status.success());
    assert_eq!(out.stdout, state);
    let shown = env.json(&["checkpoint", "show", id]);
    assert_eq!(shown["artifacts"], serde_json::json!([]));
}

#[test]
fn session_stats_and_repair_go_through_their_routes() {
    let env = Env::new();
    let a = s(&env.json(&["session", "create", "--tag", "t"]), "id").to_string();
    let b = s(
        &env.json(&["session", "create", "--tag", "t", "--parent", &a]),
        "id",
    )
    .to_string();
    env.json(&["session", "create", "--tag", "other"]);
    env.json(&["session", "complete", &a]);
    env.json(&["session", "fail", &b, "--reason", "x"]);
    let st = env.json(&["session", "stats", "--tag", "t"]);
    assert_eq!(st["sessions"], 2);
    assert_eq!(st["finished"], 2);
    assert_eq!(st["by_status"]["completed"], 1);
    assert_eq!(st["by_status"]["failed"], 1);
    let st = env.json(&["session", "stats", "--parent", &a]);
    assert_eq!(st["sessions"], 1);
    let st = env.json(&["session", "stats", "--status", "active"]);
    assert_eq!(st["sessions"], 1);
    let (code, _) = env.fails(
        &[
            "session",
            "stats",
            "--parent",
            "0190a0a0-0000-7000-8000-000000000000",
        ],
        3,
    );
    assert_eq!(code, "session_not_found");
    let human = env.human(&["session", "stats"]);
    assert!(
        human.contains("success rate") && human.contains("3"),
        "{human}"
    );

    let rep = env.json(&["verify", "--repair"]);
    assert_eq!(rep["after"]["ok"], true);
    assert_eq!(rep["quarantined"], serde_json::json!([]));
}

#[test]
fn cleanup_runs_on_the_server_and_its_rules_are_checked_there_too() {
    let env = Env::new();
    let sid = s(&env.json(&["session", "create"]), "id").to_string();
    for body in [&b"v1"[..], b"v2", b"v3"] {
        one_json(
            &env.run_stdin(
                &[
                    "--json",
                    "artifact",
                    "put",
                    &sid,
                    "-",
                    "--name",
                    "n",
                    "--kind",
                    "tool_result",
                ],
                body,
            ),
            &["put"],
        );
    }
    let dry = env.json(&["cleanup", "--keep-versions", "1", "--dry-run"]);
    assert_eq!(dry["artifacts_removed"], 2);
    assert_eq!(
        env.json(&["artifact", "versions", &sid, "n"])
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let real = env.json(&["cleanup", "--keep-versions", "1"]);
    assert_eq!(real["artifacts_removed"], 2);
    assert_eq!(
        env.json(&["artifact", "versions", &sid, "n"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The server refuses what the command line would (a client may call it directly).
    let url = &env.server.as_ref().unwrap().url;
    let token = &env.server.as_ref().unwrap().token;
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    for body in [
        r#"{}"#,
        r#"{"keep_versions":0}"#,
        r#"{"older_than_secs":1e13}"#,
        r#"{"older_than_secs":-1}"#,
        r#"{"statuses":["failed"]}"#,
        r#"{"ttl_secs":{"Bad Kind":1}}"#,
    ] {
        let req = ureq::http::Request::builder()
            .method("POST")
            .uri(format!("{url}/v1/admin/cleanup"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body.as_bytes().to_vec())
            .unwrap();
        let resp = agent.run(req).unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{body}");
    }
}
