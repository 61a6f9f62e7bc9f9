//! Hostile input: random and adversarial strings, crafted blob files, oversize streams, damaged
//! store folders and write errors. Never a panic; a clear error; nothing stored on error.

use crate::common;

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use cairn::*;
use proptest::prelude::*;

/// Strings that have broken stores before: control characters, traversal, absolute paths, NUL,
/// glob syntax, very long, odd Unicode.
fn adversarial() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\x00-\\x1f\\x7f]{0,8}[a-z./]{0,8}",
        Just("..".to_string()),
        Just("../../etc/passwd".to_string()),
        Just("/etc/passwd".to_string()),
        Just("C:\\Windows\\system32".to_string()),
        Just("a\0b".to_string()),
        Just(String::new()),
        Just(" ".to_string()),
        Just("\u{202e}evil\u{200b}".to_string()),
        Just("[".to_string()),
        Just("{a,{b,".to_string()),
        Just("**/***/[!]".to_string()),
        (1usize..200_000).prop_map(|n| "x".repeat(n)),
        (1usize..5_000).prop_map(|n| "é".repeat(n)),
    ]
}

fn is_clear(e: &Error) -> bool {
    ["invalid_input", "invalid_glob", "limit_exceeded"].contains(&e.code())
        && !e.to_string().is_empty()
}

/// Files under a store's blobs/ and tmp/.
fn stray_files(root: &Path) -> usize {
    ["blobs", "tmp"]
        .iter()
        .map(|d| {
            let p = root.join(d);
            if p.exists() {
                common::files_under(&p).len()
            } else {
                0
            }
        })
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn artifact_options_are_validated_and_nothing_is_stored_on_error(
        name in adversarial(),
        tag in adversarial(),
        kind in adversarial(),
        key in adversarial(),
    ) {
        let store = Store::memory();
        let s = store.create_session(NewSession::new()).unwrap();
        let before = store.stats().unwrap();
        let kind = match kind.parse::<ArtifactKind>() {
            Ok(k) => k,
            Err(e) => {
                prop_assert!(is_clear(&e), "{e}");
                ArtifactKind::ToolResult
            }
        };
        let new = NewArtifact::new(kind, name.clone()).tag(tag.clone()).meta(key.clone(), "v");
        match store.put(s.id, new, b"content") {
            Ok(a) => {
                prop_assert_eq!(&a.name, &name);
                prop_assert_eq!(store.read(s.id, a.id).unwrap(), b"content".to_vec());
                prop_assert_eq!(store.artifact_by_name(s.id, &name, None).unwrap().id, a.id);
            }
            Err(e) => {
                prop_assert!(is_clear(&e), "{e}");
                prop_assert_eq!(store.stats().unwrap(), before.clone());
                prop_assert_eq!(store.garbage_count().unwrap(), 0);
            }
        }
        prop_assert!(store.verify().unwrap().ok);
    }

    #[test]
    fn globs_never_panic(glob in adversarial()) {
        let store = Store::memory();
        let s = store.create_session(NewSession::new()).unwrap();
        store.put(s.id, NewArtifact::new(ArtifactKind::ToolResult, "a/b.txt"), b"x").unwrap();
        if let Err(e) = store.query(&Query::new().name_glob(glob)) {
            prop_assert!(is_clear(&e), "{e}");
        }
    }

    #[test]
    fn session_keys_names_and_events_are_validated(
        key in adversarial(),
        name in adversarial(),
        event in adversarial(),
    ) {
        let store = Store::memory();
        let before = store.stats().unwrap();
        match store.get_or_create_by_key(&key, NewSession::new().name(name.clone())) {
            Ok((s, created)) => {
                prop_assert!(created);
                prop_assert_eq!(store.session_by_key(&key).unwrap().unwrap().id, s.id);
                if let Err(e) = store.append_event(s.id, &event, serde_json::json!({"k": 1})) {
                    prop_assert!(is_clear(&e), "{e}");
                }
            }
            Err(e) => {
                prop_assert!(is_clear(&e), "{e}");
                prop_assert_eq!(store.stats().unwrap(), before);
            }
        }
    }

    #[test]
    fn configuration_text_never_panics(text in prop_oneof![
        any::<String>(),
        "[a-z_]{1,20} = [0-9a-z\"]{0,10}",
        Just("compression_level = 99999999999999999999".to_string()),
        Just("[limits]\nmax_artifact_size = -1".to_string()),
        Just("[durability]\nmode = \"group\"\ninterval_ms = 0".to_string()),
        Just("inline_threshold = 18446744073709551615".to_string()),
        Just("[[[[".to_string()),
    ]) {
        match Config::from_toml_str(&text) {
            Ok(c) => prop_assert!(c.validate().is_ok()),
            Err(e) => prop_assert!(is_clear(&e), "{e}"),
        }
    }

    #[test]
    fn any_bytes_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..20_000)) {
        let store = Store::memory_with(Config::default().compression_threshold(Config::ALWAYS_COMPRESS)).unwrap();
        let s = store.create_session(NewSession::new()).unwrap();
        let a = store.put(s.id, NewArtifact::new(ArtifactKind::UserInput, "in"), &bytes).unwrap();
        prop_assert_eq!(store.read(s.id, a.id).unwrap(), bytes);
    }
}

#[test]
fn a_configuration_file_that_is_not_utf8_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("cairn.toml");
    fs::write(&p, b"compression_level = \xff\xfe 3").unwrap();
    let e = Config::from_toml_file(&p).unwrap_err();
    assert!(e.to_string().contains("UTF-8"), "{e}");
    assert!(e.to_string().contains("cairn.toml"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Crafted blob files.

/// A store with one large compressed artifact in a file; returns (guard, path, session, artifact).
fn store_with_file_blob() -> (tempfile::TempDir, PathBuf, SessionId, Artifact) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = Store::open_with(&path, Config::default().inline_threshold(1024)).unwrap();
    let s = store.create_session(NewSession::new()).unwrap();
    let a = store
        .put(
            s.id,
            NewArtifact::new(ArtifactKind::ToolResult, "out.json"),
            common::json_text(200_000, 1),
        )
        .unwrap();
    assert!(a.compressed);
    (dir, path, s.id, a)
}

fn blob_file(root: &Path, h: &ContentHash) -> PathBuf {
    let hex = h.to_hex();
    root.join("blobs")
        .join(&hex[..2])
        .join(format!("{hex}.zst"))
}

/// A zstd frame header: magic, descriptor (no checksum, not single-segment), window descriptor.
fn frame_header(window_exponent: u8) -> Vec<u8> {
    let mut f = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00];
    f.push(window_exponent << 3);
    f
}

/// RLE blocks of 128 KiB of zeros each: 4 bytes of file per 128 KiB of output.
fn rle_blocks(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 4);
    for i in 0..n {
        let last = (i + 1 == n) as u32;
        let header: u32 = last | (1 << 1) | ((128 << 10) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

#[test]
fn a_zstd_bomb_with_a_huge_declared_window_is_refused() {
    let (_d, path, sid, a) = store_with_file_blob();
    // Window 2^41 bytes (exponent 31): a decoder that honoured it would try to reserve 2 TiB.
    let mut bomb = frame_header(31);
    bomb.extend(rle_blocks(8));
    fs::write(blob_file(&path, &a.hash), bomb).unwrap();
    let store = Store::open_with(&path, Config::default().inline_threshold(1024)).unwrap();
    let e = store.read(sid, a.id).unwrap_err();
    assert!(matches!(e, Error::Integrity { .. }), "{e}");
    let r = store.verify().unwrap();
    assert!(r
        .problems
        .iter()
        .any(|p| p.kind == "hash_mismatch" && p.artifacts == vec![a.id]));
}

#[test]
fn a_zstd_bomb_whose_output_exceeds_the_recorded_size_is_cut_off() {
    let (_d, path, sid, a) = store_with_file_blob();
    // 64 GiB of zeros in 2 MiB of file, inside an allowed 1 MiB window. The reader stops one byte
    // past the recorded 200 KB; decoding it all would not finish, holding it would not fit.
    let mut bomb = frame_header(10);
    bomb.extend(rle_blocks(512 * 1024));
    fs::write(blob_file(&path, &a.hash), bomb).unwrap();
    let store = Store::open_with(&path, Config::default().inline_threshold(1024)).unwrap();
    let e = store.read(sid, a.id).unwrap_err();
    let matched = matches!(&e, Error::Integrity { message, .. } if message.contains("longer"));
    assert!(matched, "{e}");
    let mut r = store.open_reader(sid, a.id).map(|_| ()).unwrap_err();
    assert_eq!(r.code(), "integrity");
    r = store.read_range(sid, a.id, 0, 10).unwrap_err();
    assert_eq!(r.code(), "integrity");
    let v = store.verify().unwrap();
    assert!(v.problems.iter().any(|p| p.kind == "hash_mismatch"));
}

// ---------------------------------------------------------------------------------------------
// Limits while streaming.

/// An endless reader of zeros.
struct Endless;
impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        buf.fill(0);
        Ok(buf.len())
    }
}

#[test]
fn max_artifact_size_is_enforced_while_streaming() {
    // Below and above the 8 MiB in-memory buffer: the second one streams through tmp/.
    for limit in [1u64 << 20, 12 << 20] {
        let (store, dir) = common::store(
            BackendKind::Sled,
            Config::default().limits(Limits {
                max_artifact_size: limit,
                ..Limits::default()
            }),
        );
        let s = store.create_session(NewSession::new()).unwrap();
        // Endless input: holding it or writing it whole would never end.
        let e = store
            .put_reader(
                s.id,
                NewArtifact::new(ArtifactKind::UserInput, "endless"),
                Endless,
            )
            .unwrap_err();
        let matched = matches!(
            e,
            Error::LimitExceeded {
                limit: "max_artifact_size",
                ..
            }
        );
        assert!(matched, "{e}");
        // Exactly at the limit is fine; one byte over is not.
        let e = store
            .put_reader(
                s.id,
                NewArtifact::new(ArtifactKind::UserInput, "over"),
                Endless.take(limit + 1),
            )
            .unwrap_err();
        assert_eq!(e.code(), "limit_exceeded");
        assert_eq!(
            stray_files(&dir.path().join("store")),
            0,
            "nothing left in blobs/ or tmp/"
        );
        assert_eq!(store.stats().unwrap().artifacts, 0);
        let ok = store
            .put_reader(
                s.id,
                NewArtifact::new(ArtifactKind::UserInput, "at"),
                Endless.take(limit),
            )
            .unwrap();
        assert_eq!(ok.size, limit);
        assert!(store.verify().unwrap().ok);
    }
}

/// Yields `n` bytes, then fails like a broken pipe or a dying disk would.
struct FailsAfter(u64);
impl Read for FailsAfter {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0 == 0 {
            return Err(io::Error::other("the input device failed"));
        }
        let n = (buf.len() as u64).min(self.0) as usize;
        buf[..n].fill(7);
        self.0 -= n as u64;
        Ok(n)
    }
}

#[test]
fn a_read_error_mid_put_stores_nothing() {
    for at in [100u64, 10 << 20] {
        let (store, dir) = common::store(BackendKind::Sled, Config::default());
        let s = store.create_session(NewSession::new()).unwrap();
        let e = store
            .put_reader(
                s.id,
                NewArtifact::new(ArtifactKind::UserInput, "x"),
                FailsAfter(at),
            )
            .unwrap_err();
        assert_eq!(e.code(), "input_io", "{e}");
        assert!(e.to_string().contains("input device failed"));
        assert_eq!(stray_files(&dir.path().join("store")), 0);
        assert_eq!(store.stats().unwrap().artifacts, 0);
        assert!(store.verify().unwrap().ok);
    }
}

/// Disk full in the middle of a put, on a real 24 MiB tmpfs (needs root to mount; the injected
/// engine errors of `tests/crash.rs` cover the engine side everywhere).
#[test]
fn disk_full_mid_put_is_a_clear_error_and_the_store_stays_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    fs::create_dir(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("disk-full test skipped: cannot mount a tmpfs here (not root?)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let path = mnt.join("store");
    let store = Store::open(&path).unwrap();
    let s = store.create_session(NewSession::new()).unwrap();
    let first = common::random_bytes(4 << 20, 1);
    let a = store
        .put(
            s.id,
            NewArtifact::new(ArtifactKind::UserInput, "fits"),
            &first,
        )
        .unwrap();
    let mut failures = 0;
    for i in 0..4u64 {
        let big = common::random_bytes(12 << 20, 10 + i);
        match store.put_reader(
            s.id,
            NewArtifact::new(ArtifactKind::UserInput, "big"),
            &big[..],
        ) {
            Ok(b) => assert_eq!(store.read(s.id, b.id).unwrap(), big),
            Err(e) => {
                failures += 1;
                assert!(
                    e.to_string().contains("No space left") || e.code() == "backend",
                    "{e}"
                );
            }
        }
    }
    assert!(failures > 0, "a 24 MiB disk cannot take 52 MiB");
    assert_eq!(store.read(s.id, a.id).unwrap(), first);
    let r = store.verify().unwrap();
    assert!(r.ok, "{:#?}", r.problems);
    assert_eq!(common::files_under(&path.join("tmp")).len(), 0);
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.read(s.id, a.id).unwrap(), first);
    assert!(store.verify().unwrap().ok);
}

// ---------------------------------------------------------------------------------------------
// Damaged store folders.

fn open_err(path: &Path) -> Error {
    match std::panic::catch_unwind(|| Store::open(path)) {
        Ok(Ok(_)) => panic!("{} opened", path.display()),
        Ok(Err(e)) => e,
        Err(_) => panic!("opening {} panicked", path.display()),
    }
}

#[test]
fn a_folder_of_garbage_is_not_a_store() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("notes.txt"), b"hello").unwrap();
    let e = open_err(dir.path());
    assert_eq!(e.code(), "not_a_store");
    assert!(e.to_string().contains("CAIRN marker"), "{e}");
    assert_eq!(fs::read(dir.path().join("notes.txt")).unwrap(), b"hello");
    // A file where a folder should be.
    let e = open_err(&dir.path().join("notes.txt"));
    assert_eq!(e.code(), "not_a_store");
}

#[test]
fn a_marker_from_a_newer_format_or_of_garbage_is_refused_clearly() {
    let (store, dir) = common::store(BackendKind::Sled, Config::default());
    drop(store);
    let root = dir.path().join("store");
    fs::write(root.join("CAIRN"), br#"{"format":99,"backend":"sled"}"#).unwrap();
    let e = open_err(&root);
    assert_eq!(e.code(), "not_a_store");
    assert!(e.to_string().contains("newer"), "{e}");
    fs::write(root.join("CAIRN"), b"\x00\xffgarbage").unwrap();
    let e = open_err(&root);
    assert_eq!(e.code(), "not_a_store");
}

/// A store whose sled files are damaged: truncated, or replaced by garbage.
#[test]
fn damaged_sled_files_give_an_error_not_a_panic() {
    type Damage = fn(&Path);
    let cases: [(&str, Damage); 4] = [
        ("truncated to half", |db| {
            let f = fs::OpenOptions::new().write(true).open(db).unwrap();
            let len = f.metadata().unwrap().len();
            f.set_len(len / 2).unwrap();
        }),
        ("truncated to 10 bytes", |db| {
            fs::OpenOptions::new()
                .write(true)
                .open(db)
                .unwrap()
                .set_len(10)
                .unwrap();
        }),
        ("overwritten with garbage", |db| {
            let len = fs::metadata(db).unwrap().len() as usize;
            fs::write(db, common::random_bytes(len.max(4096), 5)).unwrap();
        }),
        ("conf file garbage", |db| {
            fs::write(db.with_file_name("conf"), b"\xff\xfe not a sled config").unwrap();
        }),
    ];
    for (what, damage) in cases {
        let (store, dir) = common::store(BackendKind::Sled, Config::default());
        let s = store.create_session(NewSession::new()).unwrap();
        for i in 0..200 {
            store
                .put(
                    s.id,
                    NewArtifact::new(ArtifactKind::ToolResult, format!("f{i}")),
                    common::json_text(2000, i),
                )
                .unwrap();
        }
        drop(store);
        let root = dir.path().join("store");
        damage(&root.join("db").join("db"));
        // Either a clear error, or (if sled recovers a prefix of its log) a store whose verify
        // runs without panicking. Never a panic.
        let opened = std::panic::catch_unwind(|| Store::open(&root));
        match opened {
            Err(_) => panic!("{what}: opening panicked"),
            Ok(Err(e)) => {
                assert!(
                    ["not_a_store", "io", "backend", "corrupt"].contains(&e.code()),
                    "{what}: {e}"
                );
                assert!(!e.to_string().is_empty());
            }
            Ok(Ok(store)) => {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.verify()));
                assert!(r.is_ok(), "{what}: verify panicked");
            }
        }
    }
}
