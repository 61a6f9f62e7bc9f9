//! Partial reads (issue 13): every part kind against a naive model, on every content layout
//! (raw, plain zstd, seekable; in the engine and in files), bounded cost, and verification.

use crate::common;

use cairn::{
    ArtifactKind, BackendKind, Config, Error, NewArtifact, NewSession, Part, PartContent,
    PartLimits, PartResult, Store,
};

/// The layouts a piece of content can have on disk.
fn layouts() -> Vec<(&'static str, Config)> {
    vec![
        (
            "raw",
            Config::default().compression_threshold(Config::NEVER_COMPRESS),
        ),
        (
            "zstd",
            Config::default()
                .compression_threshold(Config::ALWAYS_COMPRESS)
                .seekable_threshold(Config::NEVER_SEEKABLE),
        ),
        (
            "seekable",
            Config::default()
                .compression_threshold(Config::ALWAYS_COMPRESS)
                .seekable_threshold(Config::ALWAYS_SEEKABLE)
                .seekable_frame_size(1024),
        ),
        (
            "seekable-file",
            Config::default()
                .compression_threshold(Config::ALWAYS_COMPRESS)
                .seekable_threshold(Config::ALWAYS_SEEKABLE)
                .seekable_frame_size(2048)
                .inline_threshold(0),
        ),
    ]
}

/// Lines as the API defines them: split at `\n`, a `\r` before it dropped, a last line
/// without `\n` counted.
fn model_lines(b: &[u8]) -> Vec<Vec<u8>> {
    if b.is_empty() {
        return vec![];
    }
    let body = b.strip_suffix(b"\n").unwrap_or(b);
    body.split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .collect()
}

fn texts(r: &PartResult) -> Vec<(u64, String)> {
    match &r.content {
        PartContent::Lines { lines } => lines.iter().map(|l| (l.number, l.text.clone())).collect(),
        PartContent::Grep { lines, .. } => lines
            .iter()
            .map(|l| (l.line.number, l.line.text.clone()))
            .collect(),
        other => panic!("not lines: {other:?}"),
    }
}

/// A line as returned: lines over the scan bound are cut there.
fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(cairn::SCAN_LINE_BYTES)]).into_owned()
}

fn cases() -> Vec<(&'static str, Vec<u8>)> {
    let mut jsonl = Vec::new();
    for i in 0..3000 {
        jsonl.extend_from_slice(
            format!(
                "{{\"i\":{i},\"tool\":\"grep\",\"out\":{{\"n\":{}}}}}\n",
                i * 3
            )
            .as_bytes(),
        );
    }
    let mut huge = b"start\n".to_vec();
    huge.extend(std::iter::repeat_n(b'x', (1 << 20) + 5000));
    huge.extend_from_slice(b"\nneedle after huge\nend");
    let mut invalid = b"ok line\n".repeat(300);
    invalid.extend_from_slice(b"bad \xff\xfe line\n\xc3\n");
    invalid.extend(b"tail line\n".repeat(300));
    vec![
        ("empty", vec![]),
        ("one-newline", b"\n".to_vec()),
        ("no-trailing-newline", b"alpha\nbeta\ngamma".repeat(500)),
        ("crlf", b"first\r\nsecond\r\n\r\nfourth\r\n".repeat(400)),
        ("invalid-utf8", invalid),
        ("huge-line", huge),
        ("jsonl", jsonl),
    ]
}

fn store(config: Config) -> (Store, tempfile::TempDir, cairn::SessionId) {
    let (s, d) = common::store(BackendKind::Sled, config);
    let sid = s.create_session(NewSession::new()).unwrap().id;
    (s, d, sid)
}

#[test]
fn every_part_kind_matches_the_model_on_every_layout() {
    let limits = PartLimits {
        max_bytes: 16 << 20,
        max_line_bytes: cairn::SCAN_LINE_BYTES,
    };
    for (case, bytes) in cases() {
        let lines = model_lines(&bytes);
        let total = lines.len() as u64;
        let mut results: Vec<(String, Vec<PartResult>)> = Vec::new();
        for (layout, config) in layouts() {
            let (s, _d, sid) = store(config);
            let a = s
                .put(
                    sid,
                    NewArtifact::new(ArtifactKind::ToolResult, case),
                    &bytes,
                )
                .unwrap();
            let ctx = format!("{case}/{layout}");
            let read = |p: Part| s.read_part_with(sid, a.id, &p, &limits).unwrap();
            let mut rs = Vec::new();

            // Byte ranges: start, middle, end, past the end of content.
            for (off, len) in [
                (0, 10),
                (bytes.len() as u64 / 2, 3000),
                (bytes.len() as u64, 5),
            ] {
                let off = off.min(bytes.len() as u64);
                let r = read(Part::Bytes { offset: off, len });
                let end = (off + len).min(bytes.len() as u64);
                let PartContent::Bytes { data, len: got, .. } = &r.content else {
                    panic!("{ctx}")
                };
                assert_eq!(
                    data.bytes().unwrap(),
                    &bytes[off as usize..end as usize],
                    "{ctx}"
                );
                assert_eq!(*got, end - off, "{ctx}");
                assert_eq!(
                    r.next_offset,
                    (end < bytes.len() as u64).then_some(end),
                    "{ctx}"
                );
                assert!(!r.truncated, "{ctx}");
                assert_eq!(r.total_lines, total, "{ctx}");
                rs.push(r);
            }
            let e = s
                .read_part(
                    sid,
                    a.id,
                    &Part::Bytes {
                        offset: bytes.len() as u64 + 1,
                        len: 1,
                    },
                )
                .unwrap_err();
            assert_eq!(e.code(), "invalid_input", "{ctx}");

            // Line ranges including the first, last, and past the end.
            for (start, count) in [
                (1, 3),
                (2, 5),
                (total.max(1), 3),
                (total + 1, 2),
                (total / 2 + 1, 40),
            ] {
                let r = read(Part::Lines { start, count });
                let want: Vec<(u64, String)> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (i as u64 + 1, lossy(l)))
                    .filter(|(n, _)| *n >= start && *n < start + count)
                    .collect();
                assert_eq!(texts(&r), want, "{ctx} lines {start}+{count}");
                assert_eq!(r.total_lines, total, "{ctx}");
                let last = want.last().map_or(start, |(n, _)| n + 1);
                assert_eq!(
                    r.next_line,
                    (last <= total).then_some(last),
                    "{ctx} {start}+{count}"
                );
                rs.push(r);
            }
            // Head and tail.
            for n in [0, 1, 7, total + 5] {
                let h = read(Part::Head { lines: n });
                let want: Vec<_> = lines
                    .iter()
                    .take(n as usize)
                    .enumerate()
                    .map(|(i, l)| (i as u64 + 1, lossy(l)))
                    .collect();
                assert_eq!(texts(&h), want, "{ctx} head {n}");
                let t = read(Part::Tail { lines: n });
                let skip = lines.len().saturating_sub(n as usize);
                let want: Vec<_> = lines
                    .iter()
                    .enumerate()
                    .skip(skip)
                    .map(|(i, l)| (i as u64 + 1, lossy(l)))
                    .collect();
                assert_eq!(texts(&t), want, "{ctx} tail {n}");
                assert!(!t.truncated && t.next_line.is_none(), "{ctx}");
                rs.push(h);
                rs.push(t);
            }
            // Grep with context; a match limit gives truncated and where to continue.
            for (pat, ctxl) in [("needle|gamma|fourth|bad", 1u32), ("^$", 0), ("9\\d,", 2)] {
                let r = read(Part::Grep {
                    pattern: pat.into(),
                    context: ctxl,
                    max_matches: 100_000,
                    ignore_case: false,
                    start_line: 1,
                });
                let re = regex::bytes::Regex::new(pat).unwrap();
                let hits: Vec<u64> = lines
                    .iter()
                    .enumerate()
                    .filter(|(_, l)| re.is_match(l))
                    .map(|(i, _)| i as u64 + 1)
                    .collect();
                let PartContent::Grep {
                    matches,
                    lines: got,
                } = &r.content
                else {
                    panic!()
                };
                assert_eq!(*matches, hits.len() as u64, "{ctx} {pat}");
                let got_hits: Vec<u64> = got
                    .iter()
                    .filter(|l| l.matched)
                    .map(|l| l.line.number)
                    .collect();
                assert_eq!(got_hits, hits, "{ctx} {pat}");
                // Context lines are exactly the non-matching neighbours within `ctxl`.
                for l in got.iter().filter(|l| !l.matched) {
                    assert!(
                        hits.iter()
                            .any(|h| h.abs_diff(l.line.number) <= u64::from(ctxl)),
                        "{ctx} {pat}"
                    );
                }
                assert!(!r.truncated, "{ctx}");
                rs.push(r);
                if hits.len() > 2 {
                    let r = read(Part::Grep {
                        pattern: pat.into(),
                        context: 0,
                        max_matches: 2,
                        ignore_case: false,
                        start_line: 1,
                    });
                    assert!(r.truncated, "{ctx}");
                    assert_eq!(r.next_line, Some(hits[2]), "{ctx}");
                    let r2 = read(Part::Grep {
                        pattern: pat.into(),
                        context: 0,
                        max_matches: 1,
                        ignore_case: false,
                        start_line: hits[2],
                    });
                    assert_eq!(texts(&r2)[0].0, hits[2], "{ctx}");
                }
            }
            results.push((layout.to_string(), rs));
        }
        // Every layout gives the same answers (costs aside).
        let strip = |v: &Vec<PartResult>| {
            v.iter()
                .map(|r| {
                    let mut v = serde_json::to_value(r).unwrap();
                    let o = v.as_object_mut().unwrap();
                    o.remove("cost");
                    o.remove("artifact_id");
                    v
                })
                .collect::<Vec<_>>()
        };
        for (l, rs) in &results[1..] {
            assert_eq!(
                strip(rs),
                strip(&results[0].1),
                "{case}: {l} differs from raw"
            );
        }
    }
}

#[test]
fn long_lines_and_results_are_cut_and_say_so() {
    for (layout, config) in layouts() {
        let (s, _d, sid) = store(config);
        let mut b = Vec::new();
        for i in 0..2000 {
            b.extend_from_slice(format!("line {i} {}\n", "y".repeat(i % 50)).as_bytes());
        }
        b.extend(std::iter::repeat_n(b'z', 10_000));
        let a = s
            .put(sid, NewArtifact::new(ArtifactKind::ToolResult, "l"), &b)
            .unwrap();
        let limits = PartLimits {
            max_bytes: 1000,
            max_line_bytes: 100,
        };
        let r = s
            .read_part_with(
                sid,
                a.id,
                &Part::Lines {
                    start: 1,
                    count: 1000,
                },
                &limits,
            )
            .unwrap();
        assert!(r.truncated, "{layout}");
        let got = texts(&r);
        assert!(got.len() > 5 && got.len() < 100, "{layout}: {}", got.len());
        assert_eq!(r.next_line, Some(got.len() as u64 + 1), "{layout}");
        // Continue from next_line.
        let r2 = s
            .read_part_with(
                sid,
                a.id,
                &Part::Lines {
                    start: r.next_line.unwrap(),
                    count: 1,
                },
                &limits,
            )
            .unwrap();
        assert_eq!(texts(&r2)[0].0, got.len() as u64 + 1);
        // The last, 10,000-byte line: cut to 100 bytes and marked.
        let t = s
            .read_part_with(sid, a.id, &Part::Tail { lines: 1 }, &limits)
            .unwrap();
        let PartContent::Lines { lines } = &t.content else {
            panic!()
        };
        assert_eq!(lines[0].number, 2001);
        assert!(lines[0].truncated && lines[0].text.len() == 100, "{layout}");
        // A tail cut by bytes keeps the last lines.
        let t = s
            .read_part_with(sid, a.id, &Part::Tail { lines: 500 }, &limits)
            .unwrap();
        assert!(t.truncated, "{layout}");
        assert_eq!(texts(&t).last().unwrap().0, 2001, "{layout}");
        // A byte range over max_bytes: cut, with where to continue.
        let r = s
            .read_part_with(
                sid,
                a.id,
                &Part::Bytes {
                    offset: 10,
                    len: 5000,
                },
                &limits,
            )
            .unwrap();
        assert!(r.truncated);
        assert_eq!(r.next_offset, Some(1010));
    }
}

#[test]
fn json_documents_and_json_lines() {
    for (layout, config) in layouts() {
        let (s, _d, sid) = store(config);
        let doc = serde_json::json!({"a": {"b": [10, {"c": "deep"}]}, "big": "x".repeat(5000)});
        let a = s
            .put(
                sid,
                NewArtifact::new(ArtifactKind::ToolResult, "d.json"),
                doc.to_string(),
            )
            .unwrap();
        let get = |path: &str| {
            s.read_part(sid, a.id, &Part::Json { path: path.into() })
                .unwrap()
        };
        let r = get("a.b[1].c");
        assert_eq!(
            r.content,
            PartContent::Json {
                found: true,
                value: Some(serde_json::json!("deep")),
                value_bytes: 6
            },
            "{layout}"
        );
        assert_eq!(get("/a/b/0").content, get("$.a.b[0]").content);
        let PartContent::Json { found, .. } = get("a.nope").content else {
            panic!()
        };
        assert!(!found);
        let big = s
            .read_part_with(
                sid,
                a.id,
                &Part::Json { path: "big".into() },
                &PartLimits {
                    max_bytes: 100,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(big.truncated);
        let PartContent::Json {
            value, value_bytes, ..
        } = big.content
        else {
            panic!()
        };
        assert_eq!((value, value_bytes), (None, 5002));
        assert_eq!(
            s.read_part(sid, a.id, &Part::Json { path: "a[".into() })
                .unwrap_err()
                .code(),
            "invalid_input"
        );

        let mut jl = String::new();
        for i in 0..50 {
            jl.push_str(&format!("{{\"i\":{i},\"v\":{{\"sq\":{}}}}}\n", i * i));
        }
        jl.push_str("not json\n{\"i\":50}\n");
        let b = s
            .put(
                sid,
                NewArtifact::new(ArtifactKind::ToolResult, "j.jsonl"),
                &jl,
            )
            .unwrap();
        let r = s
            .read_part(
                sid,
                b.id,
                &Part::JsonLines {
                    path: "v.sq".into(),
                    start: 48,
                    count: 10,
                },
            )
            .unwrap();
        let PartContent::JsonLines { items } = &r.content else {
            panic!()
        };
        assert_eq!(items.len(), 5, "{layout}");
        assert_eq!(
            items[0].value,
            Some(serde_json::json!(47 * 47)),
            "line 48 holds i = 47"
        );
        assert!(items[3].error.as_deref().unwrap().starts_with("not JSON"));
        assert_eq!(items[4].error.as_deref(), Some("path not found"));
        assert_eq!(r.next_line, None);
        // A JSON-lines artifact is not one document.
        let e = s
            .read_part(sid, b.id, &Part::Json { path: "".into() })
            .unwrap_err();
        assert!(e.to_string().contains("json_lines"), "{e}");
    }
}

#[test]
fn oversized_json_documents_and_bad_requests_are_refused_clearly() {
    let (s, _d, sid) = store(Config::default());
    let big = format!(
        "[{}1]",
        "1,".repeat((cairn::MAX_JSON_DOCUMENT / 2) as usize)
    );
    let a = s
        .put(
            sid,
            NewArtifact::new(ArtifactKind::ToolResult, "big.json"),
            &big,
        )
        .unwrap();
    let e = s
        .read_part(sid, a.id, &Part::Json { path: "/0".into() })
        .unwrap_err();
    assert_eq!(e.code(), "limit_exceeded", "{e}");
    assert!(e.to_string().contains("json_lines"), "{e}");
    let bad = [
        Part::Lines { start: 0, count: 1 },
        Part::Grep {
            pattern: "(".into(),
            context: 0,
            max_matches: 1,
            ignore_case: false,
            start_line: 1,
        },
        Part::Grep {
            pattern: "a".into(),
            context: cairn::MAX_CONTEXT + 1,
            max_matches: 1,
            ignore_case: false,
            start_line: 1,
        },
        Part::Grep {
            pattern: "a".into(),
            context: 0,
            max_matches: 0,
            ignore_case: false,
            start_line: 1,
        },
    ];
    for p in bad {
        let e = s.read_part(sid, a.id, &p).unwrap_err();
        assert_eq!(e.code(), "invalid_input", "{p:?}: {e}");
    }
    let e = s
        .read_part_with(
            sid,
            a.id,
            &Part::Head { lines: 1 },
            &PartLimits {
                max_bytes: 0,
                ..Default::default()
            },
        )
        .unwrap_err();
    assert_eq!(e.code(), "invalid_input");
    // Another session cannot read it.
    let other = s.create_session(NewSession::new()).unwrap().id;
    assert!(s
        .read_part(other, a.id, &Part::Head { lines: 1 })
        .unwrap_err()
        .is_not_found());
    // Parts deserialize from the JSON a front end receives, with defaults.
    let p: Part = serde_json::from_str(r#"{"kind":"grep","pattern":"x"}"#).unwrap();
    assert_eq!(
        p,
        Part::Grep {
            pattern: "x".into(),
            context: 0,
            max_matches: 100,
            ignore_case: false,
            start_line: 1
        }
    );
    assert!(serde_json::from_str::<Part>(r#"{"kind":"head","lines":1,"x":2}"#).is_err());
}

/// JSON-like text, as agents produce: compresses about 4-5x.
fn json_text(size: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(size + 200);
    let mut i = 0u64;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(
            format!(
                "{{\"seq\":{i},\"tool\":\"run_tests\",\"status\":\"{}\",\"ms\":{},\"msg\":\"test_{} finished\"}}\n",
                ["ok", "failed", "skipped"][(x % 3) as usize],
                x % 10_000,
                x % 997
            )
            .as_bytes(),
        );
        i += 1;
    }
    v.truncate(size);
    v
}

#[test]
fn a_range_read_near_the_end_of_a_large_artifact_reads_only_a_few_frames() {
    // 24 MiB through the streaming put path (over 8 MiB) and 6 MiB through the memory path.
    for size in [24usize << 20, 6 << 20] {
        let config = Config::default().seekable_frame_size(256 << 10);
        let (s, _d, sid) = store(config);
        let bytes = json_text(size);
        let a = s
            .put(
                sid,
                NewArtifact::new(ArtifactKind::ToolResult, "big.log"),
                &bytes,
            )
            .unwrap();
        assert!(a.compressed);
        let off = size as u64 - 10_000;
        let r = s
            .read_part(
                sid,
                a.id,
                &Part::Bytes {
                    offset: off,
                    len: 4096,
                },
            )
            .unwrap();
        let PartContent::Bytes { data, .. } = &r.content else {
            panic!()
        };
        assert_eq!(
            data.bytes().unwrap(),
            &bytes[off as usize..off as usize + 4096]
        );
        let c = r.cost;
        assert!(c.seekable, "{c:?}");
        assert_eq!(c.frames_total, (size as u64).div_ceil(256 << 10));
        assert!(c.frames_read <= 2, "{c:?}");
        assert!(c.content_bytes_decoded <= 512 << 10, "{c:?}");
        // The frames read plus the index: a small fraction of the stored bytes.
        assert!(c.stored_bytes_read * 8 < c.stored_size, "{c:?}");
        // Tail and a line range near the end are bounded the same way.
        let t = s.read_part(sid, a.id, &Part::Tail { lines: 20 }).unwrap();
        assert!(t.cost.frames_read <= 2, "{:?}", t.cost);
        let want = model_lines(&bytes);
        assert_eq!(t.total_lines, want.len() as u64);
        assert_eq!(texts(&t).last().unwrap().1, lossy(want.last().unwrap()));
        let start = want.len() as u64 - 100;
        let l = s
            .read_part(sid, a.id, &Part::Lines { start, count: 3 })
            .unwrap();
        assert_eq!(texts(&l)[0], (start, lossy(&want[start as usize - 1])));
        assert!(l.cost.frames_read <= 2, "{:?}", l.cost);
        // Whole reads still work (the seekable blob is a zstd stream).
        assert_eq!(s.read(sid, a.id).unwrap(), bytes);
    }
}

#[test]
fn old_layouts_still_read_after_seekable_is_turned_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let bytes = json_text(9 << 20); // over 8 MiB: the streaming verifier for plain zstd
    let small = json_text(300 << 10);
    let (id, small_id, sid) = {
        let old = Store::open_with(
            &path,
            Config::default().seekable_threshold(Config::NEVER_SEEKABLE),
        )
        .unwrap();
        let sid = old.create_session(NewSession::new()).unwrap().id;
        let a = old
            .put(
                sid,
                NewArtifact::new(ArtifactKind::ToolResult, "old"),
                &bytes,
            )
            .unwrap();
        let b = old
            .put(
                sid,
                NewArtifact::new(ArtifactKind::ToolResult, "small"),
                &small,
            )
            .unwrap();
        (a.id, b.id, sid)
    };
    let s = Store::open(&path).unwrap();
    let want = model_lines(&bytes);
    let t = s.read_part(sid, id, &Part::Tail { lines: 3 }).unwrap();
    assert!(!t.cost.seekable);
    // No index: the whole content was read (and verified).
    assert_eq!(t.cost.content_bytes_decoded, bytes.len() as u64);
    assert_eq!(t.total_lines, want.len() as u64);
    assert_eq!(texts(&t)[2].1, lossy(want.last().unwrap()));
    let g = s
        .read_part(
            sid,
            id,
            &Part::Grep {
                pattern: "\"seq\":12345,".into(),
                context: 1,
                max_matches: 10,
                ignore_case: false,
                start_line: 1,
            },
        )
        .unwrap();
    assert_eq!(texts(&g).len(), 3);
    assert_eq!(texts(&g)[1].0, 12346);
    let r = s
        .read_part(sid, small_id, &Part::Bytes { offset: 5, len: 5 })
        .unwrap();
    let PartContent::Bytes { data, .. } = &r.content else {
        panic!()
    };
    assert_eq!(data.bytes().unwrap(), &small[5..10]);
    // New content is seekable and dedup still keys on the whole content's hash.
    let again = s
        .put(
            sid,
            NewArtifact::new(ArtifactKind::ToolResult, "again"),
            &bytes,
        )
        .unwrap();
    assert_eq!(again.hash, s.artifact(sid, id).unwrap().hash);
    assert!(
        !s.read_part(sid, again.id, &Part::Head { lines: 1 })
            .unwrap()
            .cost
            .seekable
    );
}

/// Every blob file under the store (they are named by hash).
fn blob_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(root.join("blobs")).unwrap() {
        let d = d.unwrap().path();
        if d.is_dir() {
            for f in std::fs::read_dir(d).unwrap() {
                out.push(f.unwrap().path());
            }
        }
    }
    out
}

#[test]
fn a_flipped_byte_on_disk_is_an_integrity_error_never_wrong_bytes() {
    for (layout, config) in [
        (
            "seekable",
            Config::default()
                .seekable_threshold(0)
                .seekable_frame_size(16 << 10),
        ),
        (
            "zstd",
            Config::default().seekable_threshold(Config::NEVER_SEEKABLE),
        ),
        (
            "raw",
            Config::default().compression_threshold(Config::NEVER_COMPRESS),
        ),
    ] {
        let (s, d, sid) = store(config);
        let bytes = json_text(1 << 20);
        let a = s
            .put(sid, NewArtifact::new(ArtifactKind::ToolResult, "x"), &bytes)
            .unwrap();
        let files = blob_files(&d.path().join("store"));
        assert_eq!(files.len(), 1, "{layout}");
        let mut stored = std::fs::read(&files[0]).unwrap();
        // Flip a byte three quarters of the way in: inside a late frame (which one depends on
        // how well each frame compressed, so the byte range read below covers them all).
        let pos = stored.len() * 3 / 4;
        stored[pos] ^= 0x20;
        std::fs::write(&files[0], &stored).unwrap();
        for p in [
            Part::Bytes {
                offset: 0,
                len: bytes.len() as u64,
            },
            Part::Tail { lines: 5 },
            Part::Grep {
                pattern: "no such text".into(),
                context: 0,
                max_matches: 100_000,
                ignore_case: false,
                start_line: 1,
            },
        ] {
            let limits = PartLimits {
                max_bytes: 16 << 20,
                ..PartLimits::default()
            };
            match s.read_part_with(sid, a.id, &p, &limits) {
                Err(Error::Integrity { hash, .. }) => assert_eq!(hash, a.hash),
                // Only a seekable tail that never touches the damaged frame may succeed, and then
                // with the right bytes.
                Ok(r) if layout == "seekable" && matches!(p, Part::Tail { .. }) => {
                    let want = model_lines(&bytes);
                    assert_eq!(texts(&r).last().unwrap().1, lossy(want.last().unwrap()));
                }
                Ok(r) => panic!("{layout} {p:?}: returned {:?}", r.cost),
                Err(e) => panic!("{layout} {p:?}: {e}"),
            }
        }
        // A seekable read of an undamaged frame still works.
        if layout == "seekable" {
            let r = s
                .read_part(
                    sid,
                    a.id,
                    &Part::Bytes {
                        offset: 0,
                        len: 100,
                    },
                )
                .unwrap();
            let PartContent::Bytes { data, .. } = &r.content else {
                panic!()
            };
            assert_eq!(data.bytes().unwrap(), &bytes[..100]);
        }
    }
}

#[test]
fn previews_are_computed_on_put_and_shared_by_identical_content() {
    for (layout, config) in layouts() {
        let (s, _d, sid) = store(config);
        let doc = br#"{"tool": "pytest", "passed": 41, "failed": 1, "log": "..."}"#;
        let a = s
            .put(
                sid,
                NewArtifact::new(ArtifactKind::ToolResult, "r.json"),
                doc,
            )
            .unwrap();
        let p = s.preview(sid, a.id).unwrap();
        assert_eq!(p.mime_type, "application/json", "{layout}");
        assert_eq!(
            p.json_keys,
            Some(vec![
                "tool".into(),
                "passed".into(),
                "failed".into(),
                "log".into()
            ])
        );
        assert_eq!(p.size, doc.len() as u64);
        assert_eq!(p.stored_size, a.stored_size);
        let other = s.create_session(NewSession::new()).unwrap().id;
        let b = s
            .put(
                other,
                NewArtifact::new(ArtifactKind::ToolResult, "copy"),
                doc,
            )
            .unwrap();
        assert_eq!(s.preview(other, b.id).unwrap(), p);
        // Large text through the streaming path: lines, head and tail without a second pass.
        let big = json_text(9 << 20);
        let c = s
            .put(sid, NewArtifact::new(ArtifactKind::ToolResult, "big"), &big)
            .unwrap();
        let p = s.preview(sid, c.id).unwrap();
        assert_eq!(p.lines, model_lines(&big).len() as u64);
        assert_eq!(p.mime_type, "text/plain"); // the cut last line is not JSON
        assert!(p.head.unwrap().starts_with("{\"seq\":0,"));
        assert!(p.tail.is_some());
        let png = s
            .put(
                sid,
                NewArtifact::new(ArtifactKind::UserInput, "i.png"),
                b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
            )
            .unwrap();
        assert_eq!(s.preview(sid, png.id).unwrap().mime_type, "image/png");
        let e = s
            .put(sid, NewArtifact::new(ArtifactKind::UserInput, "e"), b"")
            .unwrap();
        assert_eq!(s.preview(sid, e.id).unwrap().lines, 0);
        // Serialized shape.
        let v = serde_json::to_value(s.preview(sid, a.id).unwrap()).unwrap();
        assert_eq!(v["mime_type"], "application/json");
        assert!(v.get("tail").is_none());
    }
}

#[test]
fn content_from_a_format_1_bundle_reads_by_part_and_gets_a_preview() {
    let (s, _d, _) = store(Config::default());
    let bytes = std::fs::read(common::fixtures_dir().join("bundles/v1.cairnb")).unwrap();
    let report = s
        .import_bundle(&bytes[..], &cairn::ImportOptions::new())
        .unwrap();
    let mut checked = 0;
    for sess in std::iter::once(report.root).chain(report.sessions.iter().map(|x| x.id)) {
        let page = s.list_artifacts(sess, false, 100, None).unwrap();
        for a in page.items {
            let whole = s.read(sess, a.id).unwrap();
            let lines = model_lines(&whole);
            let t = s.read_part(sess, a.id, &Part::Tail { lines: 2 }).unwrap();
            let want: Vec<u64> = (1..=lines.len() as u64)
                .skip(lines.len().saturating_sub(2))
                .collect();
            let got: Vec<u64> = texts(&t).iter().map(|x| x.0).collect();
            assert_eq!(got, want);
            if let Some(last) = lines.last().filter(|l| l.len() < 1000) {
                assert_eq!(texts(&t).last().unwrap().1, lossy(last));
            }
            assert_eq!(t.total_lines, lines.len() as u64);
            // No preview was stored by the import: it is computed from the content.
            let p = s.preview(sess, a.id).unwrap();
            assert_eq!((p.size, p.lines), (whole.len() as u64, lines.len() as u64));
            checked += 1;
        }
    }
    assert!(checked >= 3, "{checked}");
}

/// Grep searches whole frames at once and checks candidates line by line: the lines it returns
/// (matches and context) are exactly the naive per-line model's, for patterns whose whole-buffer
/// and per-line meanings differ (anchors, word boundaries, patterns that can span a newline,
/// `\A`, `(?-m)`), on every layout and with lines that cross frame boundaries.
#[test]
fn grep_over_whole_frames_returns_exactly_the_per_line_model() {
    let mut content = Vec::new();
    for i in 0..4000u32 {
        let line = match i % 7 {
            0 => format!("ERROR {i} disk full"),
            // Carriage returns in one stretch only (a frame with one is matched line by line).
            1 if (1000..1050).contains(&i) => format!("warn: {i} retry\r"),
            1 => format!("warn: {i} retry"),
            2 => String::new(),
            3 => format!("x{i}"),
            4 => format!("{i} y end"),
            5 => "ERROR".repeat((i % 300) as usize),
            _ => format!("ok {i} error-free"),
        };
        content.extend_from_slice(line.as_bytes());
        content.push(b'\n');
    }
    content.extend_from_slice(b"last ERROR without newline");
    let lines = model_lines(&content);
    let patterns = [
        "ERROR",
        "^ERROR",
        "full$",
        "^$",
        "\\berror\\b",
        "x\\d+\\s+\\d",
        "(?s)end.x",
        "\\AERROR",
        "(?-m)^x",
        "retry$",
        "[0-9]+ y",
        "(?i)error",
    ];
    for (layout, config) in layouts() {
        let (s, _d, sid) = store(config);
        let a = s
            .put(
                sid,
                NewArtifact::new(ArtifactKind::ToolResult, "g.log"),
                &content,
            )
            .unwrap();
        for pat in patterns {
            let re = regex::bytes::Regex::new(pat).unwrap();
            let hits: Vec<u64> = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| re.is_match(l))
                .map(|(i, _)| i as u64 + 1)
                .collect();
            for context in [0u32, 2] {
                let r = s
                    .read_part_with(
                        sid,
                        a.id,
                        &Part::Grep {
                            pattern: pat.into(),
                            context,
                            max_matches: 100_000,
                            ignore_case: false,
                            start_line: 1,
                        },
                        &PartLimits {
                            max_bytes: 16 << 20,
                            max_line_bytes: 64,
                        },
                    )
                    .unwrap();
                let total = lines.len() as u64;
                let mut want: Vec<(u64, bool)> = Vec::new();
                for n in 1..=total {
                    let near = hits.iter().any(|h| h.abs_diff(n) <= u64::from(context));
                    if near {
                        want.push((n, hits.binary_search(&n).is_ok()));
                    }
                }
                let PartContent::Grep {
                    lines: got,
                    matches,
                } = &r.content
                else {
                    panic!("{layout} {pat}: not a grep result")
                };
                let got: Vec<(u64, bool)> =
                    got.iter().map(|l| (l.line.number, l.matched)).collect();
                assert_eq!(*matches, hits.len() as u64, "{layout} {pat} -C{context}");
                assert_eq!(got, want, "{layout} {pat} -C{context}");
                assert!(!r.truncated, "{layout} {pat}");
            }
        }
    }
}

/// A bundle carries plain zstd; import writes content that `put` would store seekable in the
/// seekable format, so a range read of imported content is bounded too (file and memory stores).
#[test]
fn imported_large_content_is_stored_seekable_and_range_reads_stay_bounded() {
    let (src, _d, sid) = store(Config::default().seekable_threshold(Config::NEVER_SEEKABLE));
    let bytes = json_text(6 << 20);
    let a = src
        .put(
            sid,
            NewArtifact::new(ArtifactKind::ToolResult, "big.log"),
            &bytes,
        )
        .unwrap();
    let plain = src.read_part(sid, a.id, &Part::Tail { lines: 1 }).unwrap();
    assert!(!plain.cost.seekable, "{:?}", plain.cost);
    let mut bundle = Vec::new();
    src.export_session(sid, false, &mut bundle).unwrap();
    for kind in [BackendKind::Sled, BackendKind::Memory] {
        let (dst, _d2) = common::store(kind, Config::default().seekable_frame_size(256 << 10));
        let report = dst
            .import_bundle(&bundle[..], &cairn::ImportOptions::new())
            .unwrap();
        let page = dst.list_artifacts(report.root, false, 10, None).unwrap();
        let b = &page.items[0];
        assert_eq!(b.hash, a.hash);
        let off = bytes.len() as u64 - 5000;
        let r = dst
            .read_part(
                report.root,
                b.id,
                &Part::Bytes {
                    offset: off,
                    len: 4096,
                },
            )
            .unwrap();
        assert!(r.cost.seekable, "{kind:?}: {:?}", r.cost);
        assert!(r.cost.frames_read <= 2, "{kind:?}: {:?}", r.cost);
        assert!(
            r.cost.stored_bytes_read * 8 < r.cost.stored_size,
            "{:?}",
            r.cost
        );
        let PartContent::Bytes { data, .. } = &r.content else {
            panic!()
        };
        assert_eq!(
            data.bytes().unwrap(),
            &bytes[off as usize..off as usize + 4096]
        );
        // `read_range` takes the same bounded path, and whole reads still verify.
        assert_eq!(
            dst.read_range(report.root, b.id, off, 4096).unwrap(),
            &bytes[off as usize..off as usize + 4096]
        );
        assert_eq!(dst.read(report.root, b.id).unwrap(), bytes);
        assert!(dst.verify().unwrap().ok, "{kind:?}");
    }
}

/// Repair moves corrupt content aside; the stored preview of that content goes with it, so a
/// preview then fails like a read instead of describing bytes that are gone.
#[test]
fn repair_removes_the_preview_of_content_it_moves_aside() {
    let (s, d, sid) = store(Config::default().inline_threshold(0));
    let bytes = json_text(200 << 10);
    let a = s
        .put(sid, NewArtifact::new(ArtifactKind::ToolResult, "x"), &bytes)
        .unwrap();
    assert_eq!(s.preview(sid, a.id).unwrap().size, bytes.len() as u64);
    let files = blob_files(&d.path().join("store"));
    assert_eq!(files.len(), 1);
    let mut stored = std::fs::read(&files[0]).unwrap();
    let mid = stored.len() / 2;
    stored[mid] ^= 0x11;
    std::fs::write(&files[0], &stored).unwrap();
    assert!(!s.verify().unwrap().ok);
    s.repair().unwrap();
    match s.preview(sid, a.id) {
        Err(Error::Integrity { hash, .. }) => assert_eq!(hash, a.hash),
        other => panic!("a preview of content repair moved aside: {other:?}"),
    }
}
