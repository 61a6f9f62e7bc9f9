//! `cairn artifact read` and `cairn memo`, run for real: every part kind in both output modes,
//! what a result says was left out, and clear errors (with their exit codes) for bad input.

use crate::cli_env;

use cli_env::{one_json, s, Env};

use serde_json::Value;

/// A log of `n` lines, `line 1: ...`, with an ERROR on every 100th line.
fn log(n: u64) -> String {
    let mut t = String::new();
    for i in 1..=n {
        if i % 100 == 0 {
            t.push_str(&format!("line {i}: ERROR disk {i} failed\n"));
        } else {
            t.push_str(&format!("line {i}: ok step {}\n", i * 7));
        }
    }
    t
}

/// Creates a session and puts `content` from stdin as `name`; returns (session id, artifact id).
fn put(env: &Env, name: &str, content: &[u8]) -> (String, String) {
    let sess = env.json(&["session", "create", "--name", "partial"]);
    let sid = s(&sess, "id").to_string();
    let args = [
        "--json",
        "artifact",
        "put",
        &sid,
        "-",
        "--kind",
        "tool_result",
        "--name",
        name,
    ];
    let art = one_json(&env.run_stdin(&args, content), &args);
    (sid, s(&art, "id").to_string())
}

fn text_lines(v: &Value) -> Vec<String> {
    v["content"]["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| s(l, "text").to_string())
        .collect()
}

#[test]
fn line_parts_head_tail_range_bytes() {
    let env = Env::new();
    let content = log(3000);
    let (_, id) = put(&env, "build.log", content.as_bytes());
    let all: Vec<&str> = content.lines().collect();

    // Default part: the first 20 lines; the note on stderr says how to go on.
    let out = env.run(&["artifact", "read", &id]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().collect::<Vec<_>>(), all[..20].to_vec());
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(note.contains("--lines 21.."), "{note}");

    assert_eq!(
        env.human(&["artifact", "read", &id, "--head", "3"]),
        format!("{}\n{}\n{}\n", all[0], all[1], all[2])
    );
    assert_eq!(
        env.human(&["artifact", "read", &id, "--tail", "2"]),
        format!("{}\n{}\n", all[2998], all[2999])
    );
    // A..B excludes B, A..=B includes it.
    assert_eq!(
        env.human(&["artifact", "read", &id, "--lines", "10..12"]),
        format!("{}\n{}\n", all[9], all[10])
    );
    assert_eq!(
        env.human(&["artifact", "read", &id, "--lines", "10..=12"]),
        format!("{}\n{}\n{}\n", all[9], all[10], all[11])
    );
    // Bytes are printed as they are.
    let mid = content.len() / 2;
    let got = env.human(&[
        "artifact",
        "read",
        &id,
        "--bytes",
        &format!("{mid}..{}", mid + 40),
    ]);
    assert_eq!(got, &content[mid..mid + 40]);

    // --json: the result object, with totals and where to continue.
    let v = env.json(&["artifact", "read", &id, "--lines", "2990.."]);
    assert_eq!(v["total_lines"], 3000);
    assert_eq!(v["size"], content.len() as u64);
    assert_eq!(text_lines(&v), all[2989..].to_vec());
    assert_eq!(v["truncated"], false);
    assert!(v["next_line"].is_null(), "{v}");
    assert!(v["cost"]["stored_bytes_read"].as_u64().unwrap() > 0, "{v}");

    // A byte limit cuts the result and says where to continue.
    let v = env.json(&[
        "artifact",
        "read",
        &id,
        "--head",
        "1000",
        "--max-bytes",
        "1000",
    ]);
    assert_eq!(v["truncated"], true);
    let n = text_lines(&v).len() as u64;
    assert!(n > 0 && n < 1000, "{n}");
    assert_eq!(v["next_line"], n + 1);
    let v = env.json(&[
        "artifact",
        "read",
        &id,
        "--bytes",
        "0..",
        "--max-bytes",
        "100",
    ]);
    assert_eq!(v["content"]["len"], 100);
    assert_eq!(v["next_offset"], 100);
    assert_eq!(s(&v["content"]["data"], "data"), &content[..100]);
}

#[test]
fn grep_with_context_limits_and_continuation() {
    let env = Env::new();
    let content = log(1000);
    let (_, id) = put(&env, "run.log", content.as_bytes());

    let out = env.human(&[
        "artifact",
        "read",
        &id,
        "--grep",
        "ERROR",
        "-C",
        "1",
        "--max-matches",
        "2",
    ]);
    let expect = "99-line 99: ok step 693\n100:line 100: ERROR disk 100 failed\n101-line 101: ok step 707\n\
                  --\n199-line 199: ok step 1393\n200:line 200: ERROR disk 200 failed\n201-line 201: ok step 1407\n";
    assert_eq!(out, expect);

    let v = env.json(&[
        "artifact",
        "read",
        &id,
        "--grep",
        "error",
        "-i",
        "--max-matches",
        "3",
    ]);
    assert_eq!(v["content"]["kind"], "grep");
    assert_eq!(v["content"]["matches"], 3);
    assert_eq!(v["truncated"], true);
    let next = v["next_line"].as_u64().expect("next_line");
    assert_eq!(next, 400);
    // Continue from next_line: the remaining 7 matches.
    let v = env.json(&[
        "artifact",
        "read",
        &id,
        "--grep",
        "ERROR",
        "--start-line",
        &next.to_string(),
    ]);
    assert_eq!(v["content"]["matches"], 7);
    assert_eq!(v["truncated"], false);
    let nums: Vec<u64> = v["content"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["number"].as_u64().unwrap())
        .collect();
    assert_eq!(nums, (4..=10).map(|k| k * 100).collect::<Vec<_>>());
    // Case matters without -i.
    let v = env.json(&["artifact", "read", &id, "--grep", "error"]);
    assert_eq!(v["content"]["matches"], 0);
}

#[test]
fn json_path_json_lines_and_preview() {
    let env = Env::new();
    let doc =
        br#"{"name":"run","steps":[{"tool":"ls","ok":true},{"tool":"cat","ok":false}],"n":2}"#;
    let (_, id) = put(&env, "doc.json", doc);
    assert_eq!(
        env.human(&["artifact", "read", &id, "--json-path", "steps[1].tool"]),
        "\"cat\"\n"
    );
    let v = env.json(&["artifact", "read", &id, "--json-path", "/steps/0"]);
    assert_eq!(v["content"]["found"], true);
    assert_eq!(
        v["content"]["value"],
        serde_json::json!({"tool":"ls","ok":true})
    );
    // A path that is not there: found false in --json, exit 3 for people.
    let v = env.json(&["artifact", "read", &id, "--json-path", "/missing"]);
    assert_eq!(v["content"]["found"], false);
    let e = env.human_fails(&["artifact", "read", &id, "--json-path", "/missing"], 3);
    assert!(e.contains("/missing"), "{e}");

    let p = env.json(&["artifact", "read", &id, "--preview"]);
    assert_eq!(s(&p, "mime_type"), "application/json");
    assert_eq!(p["size"], doc.len() as u64);
    let keys: Vec<&str> = p["json_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(keys, ["name", "steps", "n"]);

    let mut jl = String::new();
    for i in 1..=50 {
        jl.push_str(&format!("{{\"i\":{i},\"msg\":\"m{i}\"}}\n"));
    }
    jl.push_str("not json\n");
    let (_, id) = put(&env, "events.jsonl", jl.as_bytes());
    let out = env.human(&[
        "artifact",
        "read",
        &id,
        "--json-lines",
        "msg",
        "--lines",
        "49..",
    ]);
    assert!(out.starts_with("49:\"m49\"\n50:\"m50\"\n51!"), "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
    let v = env.json(&[
        "artifact",
        "read",
        &id,
        "--json-lines",
        "/i",
        "--lines",
        "1..=3",
    ]);
    let items: Vec<u64> = v["content"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["value"].as_u64().unwrap())
        .collect();
    assert_eq!(items, [1, 2, 3]);
    assert_eq!(v["next_line"], 4);
}

#[test]
fn bad_input_is_refused_clearly() {
    let env = Env::new();
    let (_, id) = put(&env, "x.txt", b"a\nb\n");
    for (args, exit, needle) in [
        (vec!["--bytes", "5..2"], 5, "before the start"),
        (vec!["--lines", "0..3"], 5, "the first is 1"),
        (vec!["--lines", "x"], 5, "A..B"),
        (vec!["--bytes", "10..20"], 5, "past the end"),
        (vec!["--grep", "("], 5, "pattern"),
        (vec!["--grep", "a", "--max-matches", "0"], 5, "max_matches"),
        (vec!["--head", "1", "--max-bytes", "0"], 5, "max_bytes"),
        (vec!["--json-path", "a[x"], 5, ""),
    ] {
        let mut a = vec!["artifact", "read", id.as_str()];
        a.extend(args.iter().copied());
        let (_, msg) = env.fails(&a, exit);
        assert!(msg.contains(needle), "{a:?}: {msg}");
    }
    // Two parts at once, or context without grep: usage errors.
    env.fails(&["artifact", "read", &id, "--head", "1", "--tail", "1"], 2);
    env.fails(
        &["artifact", "read", &id, "--lines", "1..2", "--grep", "a"],
        2,
    );
    env.fails(&["artifact", "read", &id, "-C", "2"], 2);
    let (code, _) = env.fails(
        &["artifact", "read", "0190f0f0-0000-7000-8000-000000000000"],
        3,
    );
    assert_eq!(code, "artifact_not_found");
    let (_, msg) = env.fails(&["artifact", "read", "nope"], 5);
    assert!(msg.contains("artifact id"), "{msg}");
}

#[test]
fn memo_get_put_stats_ttl_forget() {
    let env = Env::new();
    let (sid, id) = put(&env, "ls.out", b"a\nb\n");
    let args = r#"{"path": "src", "depth": 2}"#;
    let same = r#"{"depth":2,"path":"src"}"#;

    let (code, msg) = env.fails(&["memo", "get", "ls", args], 3);
    assert_eq!(code, "memo_miss");
    assert!(msg.contains("memo put"), "{msg}");
    let hit = env.json(&["memo", "put", "ls", args, &id]);
    assert_eq!(s(&hit["artifact"], "id"), id);
    // Key order and whitespace do not matter.
    let hit = env.json(&["memo", "get", "ls", same]);
    assert_eq!(s(&hit["artifact"], "id"), id);
    assert!(env
        .human(&["memo", "get", "ls", args])
        .starts_with(&format!("hit: {id}")));
    // Different arguments miss.
    env.fails(&["memo", "get", "ls", r#"{"path":"src","depth":3}"#], 3);

    let st = env.json(&["memo", "stats", "--tool", "ls"]);
    assert_eq!(
        (st["hits"].as_u64(), st["misses"].as_u64()),
        (Some(2), Some(2))
    );
    let st = env.json(&["memo", "stats"]);
    assert_eq!(st["hits"], 2);

    // Session scope: visible from the session, not store-wide.
    env.json(&["memo", "put", "cat", "{}", &id, "--session", &sid]);
    env.json(&["memo", "get", "cat", "{}", "--session", &sid]);
    env.fails(&["memo", "get", "cat", "{}"], 3);

    let t = env.json(&["memo", "ttl", "ls", "2h"]);
    assert_eq!(t["ttl_secs"], 7200);
    assert_eq!(env.json(&["memo", "ttl", "ls"])["ttl_secs"], 7200);
    assert!(env.json(&["memo", "ttl", "ls", "none"])["ttl_secs"].is_null());

    assert_eq!(env.json(&["memo", "forget", "ls", same])["removed"], true);
    assert_eq!(env.json(&["memo", "forget", "ls", same])["removed"], false);
    env.fails(&["memo", "get", "ls", args], 3);

    let (_, msg) = env.fails(&["memo", "get", "ls", "{not json"], 5);
    assert!(msg.contains("JSON"), "{msg}");
    let (_, msg) = env.fails(&["memo", "put", "ls", "{}", "nope"], 5);
    assert!(msg.contains("artifact id"), "{msg}");
    let (_, msg) = env.fails(&["memo", "ttl", "ls", "soon"], 5);
    assert!(msg.contains("TTL"), "{msg}");
}
