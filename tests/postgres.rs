//! The PostgreSQL metadata backend (feature `postgres`) on a real server on 127.0.0.1 (see
//! `common::pg`): schema migrations, conflicts, clear errors, and several store handles with
//! their own connections writing the same names at once. The conformance suite and the model
//! test run on it too (tests/conformance.rs, tests/model.rs, tests/backend_conformance.rs).
#![cfg(feature = "postgres")]

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Barrier};

use cairn::{
    ArtifactKind, Backend, Config, ContentHash, Error, NewArtifact, NewSession, PostgresBackend,
    Store,
};

fn client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

#[test]
fn migrations_are_recorded_applied_once_and_a_newer_schema_is_refused() {
    let Some(url) = common::pg::url() else { return };
    let ns = common::pg::namespace();
    let versions = |c: &mut postgres::Client| -> Vec<i32> {
        c.query(
            "SELECT version FROM cairn_migrations WHERE namespace = $1 ORDER BY version",
            &[&ns],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let mut c = client(&url);
    // Several processes opening one new namespace at once: each migration is applied once.
    let opened: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| PostgresBackend::connect(&url, &ns).map(|_| ())))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(opened.iter().all(|r| r.is_ok()), "{opened:?}");
    assert_eq!(versions(&mut c), vec![1]);
    // The table has the primary key the range scans use.
    let pk: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE tablename = $1 AND indexdef LIKE '%UNIQUE%(k)'",
            &[&format!("cairn_kv_{ns}")],
        )
        .unwrap()
        .get(0);
    assert_eq!(pk, 1);
    // A store written by a newer Cairn (a schema version this one does not know) is refused.
    c.execute(
        "INSERT INTO cairn_migrations (namespace, version) VALUES ($1, 99)",
        &[&ns],
    )
    .unwrap();
    let e = PostgresBackend::connect(&url, &ns).unwrap_err().to_string();
    assert!(
        e.contains("schema version 99") && e.contains("upgrade Cairn"),
        "{e}"
    );
}

#[test]
fn range_scans_are_answered_by_the_primary_key_index() {
    let Some(url) = common::pg::url() else { return };
    let b = common::pg::backend().unwrap();
    let ops = (0..2000u32)
        .map(|i| cairn::Op::Put(i.to_be_bytes().to_vec(), vec![1]))
        .collect();
    b.apply(ops).unwrap();
    let mut c = client(&url);
    c.batch_execute(&format!("ANALYZE cairn_kv_{}", b.namespace()))
        .unwrap();
    let plan: Vec<String> = c
        .query(
            &format!(
                "EXPLAIN SELECT k, v FROM cairn_kv_{} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT 10",
                b.namespace()
            ),
            &[&vec![0u8, 0, 1, 0], &vec![0u8, 0, 2, 0]],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        plan.iter().any(|l| l.contains("Index Scan")),
        "{}",
        plan.join("\n")
    );
    b.drop_namespace().unwrap();
}

#[test]
fn a_lost_race_is_a_write_conflict_and_the_loser_writes_nothing() {
    let Some(b) = common::pg::backend() else {
        return;
    };
    b.apply(vec![cairn::Op::Put(b"n".to_vec(), vec![0])])
        .unwrap();
    // Two transactions read the same counter and both write it: one must lose.
    let mut t1 = b.begin_write().unwrap();
    let mut t2 = b.begin_write().unwrap();
    let v1 = t1.get(b"n").unwrap().unwrap()[0];
    let v2 = t2.get(b"n").unwrap().unwrap()[0];
    t1.put(b"n".to_vec(), vec![v1 + 1]);
    t2.put(b"n".to_vec(), vec![v2 + 1]);
    t2.put(b"other".to_vec(), vec![9]);
    t1.commit().unwrap();
    let e = t2.commit().unwrap_err();
    assert!(matches!(e, Error::WriteConflict { .. }), "{e}");
    assert_eq!(e.code(), "write_conflict");
    assert_eq!(b.get(b"n").unwrap(), Some(vec![1]));
    assert_eq!(b.get(b"other").unwrap(), None, "the loser wrote nothing");
    // The connection of the failed transaction is usable again.
    for _ in 0..20 {
        let mut t = b.begin_write().unwrap();
        let v = t.get(b"n").unwrap().unwrap()[0];
        t.put(b"n".to_vec(), vec![v + 1]);
        t.commit().unwrap();
    }
    assert_eq!(b.get(b"n").unwrap(), Some(vec![21]));
    b.drop_namespace().unwrap();
}

#[test]
fn content_size_is_capped_while_it_lives_in_the_database() {
    let Some(url) = common::pg::url() else { return };
    let s = Store::open_postgres(&url, &common::pg::namespace(), Config::default()).unwrap();
    assert_eq!(
        s.config().limits.max_artifact_size,
        cairn::POSTGRES_MAX_ARTIFACT_SIZE
    );
    // A smaller configured limit stays, and a put over it is refused clearly.
    let mut c = Config::default();
    c.limits.max_artifact_size = 1000;
    let s = Store::open_postgres(&url, &common::pg::namespace(), c).unwrap();
    assert_eq!(s.config().limits.max_artifact_size, 1000);
    let sid = s.create_session(NewSession::new()).unwrap().id;
    let e = s
        .put(
            sid,
            NewArtifact::new(ArtifactKind::ToolResult, "big"),
            vec![7u8; 1001],
        )
        .unwrap_err();
    assert_eq!(e.code(), "limit_exceeded", "{e}");
}

#[test]
fn connection_errors_are_clear() {
    // Nothing listens on port 1.
    let e = Store::open_postgres("postgres://cairn@127.0.0.1:1/x", "t", Config::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("could not connect to PostgreSQL at 127.0.0.1:1/x"),
        "{e}"
    );
    let e = Store::open_postgres(
        "postgres://cairn@127.0.0.1:1/x",
        "Bad-Name",
        Config::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("namespace"), "{e}");
}

/// Several store handles, each with its own connections (as separate servers would have), put
/// the same names in one session at once, and the same content. Afterwards every name's
/// versions are 1..=n with no gap or duplicate, the content's reference count is exact, and the
/// counters agree with the records.
#[test]
fn several_stores_writing_the_same_names_lose_nothing() {
    let Some(url) = common::pg::url() else { return };
    let ns = common::pg::namespace();
    const HANDLES: usize = 4;
    const THREADS_PER_HANDLE: usize = 2;
    const PUTS: usize = 12;
    let first = Store::open_postgres(&url, &ns, Config::default()).unwrap();
    let session = first.create_session(NewSession::new()).unwrap().id;
    let stores: Vec<Store> = (0..HANDLES)
        .map(|_| Store::open_postgres(&url, &ns, Config::default()).unwrap())
        .collect();
    let workers = HANDLES * THREADS_PER_HANDLE;
    let barrier = Arc::new(Barrier::new(workers));
    let shared = b"the same content from every writer".to_vec();
    let acked: Vec<(String, u32, ContentHash)> = std::thread::scope(|s| {
        let mut hs = Vec::new();
        for w in 0..workers {
            let store = stores[w % HANDLES].clone();
            let barrier = barrier.clone();
            let shared = shared.clone();
            hs.push(s.spawn(move || {
                barrier.wait();
                let mut out = Vec::new();
                for i in 0..PUTS {
                    let name = format!("name-{}", i % 3);
                    let body = if i % 2 == 0 {
                        shared.clone()
                    } else {
                        format!("writer {w} put {i}").into_bytes()
                    };
                    let a = store
                        .put(
                            session,
                            NewArtifact::new(ArtifactKind::ToolResult, &name),
                            &body,
                        )
                        .unwrap();
                    out.push((name, a.version, a.hash));
                }
                out
            }));
        }
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(acked.len(), workers * PUTS);
    // Versions per name: exactly 1..=n, each acknowledged once.
    let mut by_name: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (name, v, _) in &acked {
        by_name.entry(name.clone()).or_default().push(*v);
    }
    let reader = Store::open_postgres(&url, &ns, Config::default()).unwrap();
    for (name, mut vs) in by_name {
        vs.sort_unstable();
        let want: Vec<u32> = (1..=vs.len() as u32).collect();
        assert_eq!(vs, want, "{name}: versions gapless and unique");
        let stored: Vec<u32> = reader
            .versions(session, &name)
            .unwrap()
            .iter()
            .map(|a| a.version)
            .collect();
        let mut sorted = stored.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, want, "{name}: what the store lists");
    }
    // Reference counts: one per artifact holding the content.
    let mut refs: HashMap<ContentHash, u64> = HashMap::new();
    for (_, _, h) in &acked {
        *refs.entry(*h).or_default() += 1;
    }
    assert_eq!(refs[&ContentHash::of(&shared)], (workers * PUTS / 2) as u64);
    for (h, n) in &refs {
        assert_eq!(reader.content_info(h).unwrap().unwrap().refs, *n, "{h}");
    }
    let st = reader.stats().unwrap();
    assert_eq!(st.artifacts as usize, workers * PUTS);
    assert_eq!(st.blobs as usize, refs.len());
    assert_eq!(st.sessions, 1);
    // Every acknowledged artifact reads back.
    for (name, v, h) in &acked {
        let a = reader.artifact_by_name(session, name, Some(*v)).unwrap();
        assert_eq!(ContentHash::of(&reader.read(session, a.id).unwrap()), *h);
    }
}

/// TLS to PostgreSQL: a cluster with `ssl = on` that refuses plain TCP, its certificate made
/// here (self-signed for 127.0.0.1). `sslmode=verify-full` against that certificate as the CA
/// connects and works; a wrong CA is refused with a clear error naming the CA file; a name the
/// certificate does not hold is refused by `verify-full` and accepted by `verify-ca`;
/// `require` encrypts without checking; no `sslmode` stays plain (and this server refuses it).
#[test]
fn tls_verify_full_connects_and_a_wrong_ca_is_refused() {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let Some(cluster) =
        common::pg::Cluster::start_tls(&ck.cert.pem(), &ck.key_pair.serialize_pem())
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let wrong = dir.path().join("wrong-ca.pem");
    std::fs::write(&wrong, other.cert.pem()).unwrap();
    let with = |params: &str| format!("{}?{params}", cluster.url);

    // verify-full against the right CA: a working store, over TLS.
    let url = with(&format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    let ns = common::pg::namespace();
    let s = Store::open_postgres(&url, &ns, Config::default()).unwrap();
    let sid = s.create_session(NewSession::new()).unwrap().id;
    let a = s
        .put(
            sid,
            NewArtifact::new(ArtifactKind::ToolResult, "a"),
            b"over tls",
        )
        .unwrap();
    assert_eq!(s.read(sid, a.id).unwrap(), b"over tls");
    // Another handle (its own connections) sees it: the records went over those connections.
    let again = Store::open_postgres(&url, &ns, Config::default()).unwrap();
    assert_eq!(again.artifact(sid, a.id).unwrap().hash, a.hash);

    // A wrong CA: refused, saying what was checked (not "the server is down").
    let e = Store::open_postgres(
        &with(&format!(
            "sslmode=verify-full&sslrootcert={}",
            wrong.display()
        )),
        &common::pg::namespace(),
        Config::default(),
    )
    .unwrap_err();
    let m = e.to_string();
    assert!(m.contains("certificate"), "{m}");
    assert!(m.contains(&wrong.display().to_string()), "{m}");
    assert!(m.contains("verify-full"), "{m}");
    assert_ne!(e.code(), "unavailable", "{m}");

    // A host name the certificate does not hold (it holds 127.0.0.1 only).
    let port = cluster
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let by_name = |mode: &str| {
        format!(
            "postgres://cairn@localhost:{port}/postgres?sslmode={mode}&sslrootcert={}",
            ca.display()
        )
    };
    let e = Store::open_postgres(&by_name("verify-full"), &ns, Config::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("certificate"), "{e}");
    let s = Store::open_postgres(&by_name("verify-ca"), &ns, Config::default()).unwrap();
    assert_eq!(s.artifact(sid, a.id).unwrap().hash, a.hash);

    // require: encrypted, the certificate not checked (libpq's meaning).
    let s = Store::open_postgres(&with("sslmode=require"), &ns, Config::default()).unwrap();
    assert_eq!(s.read(sid, a.id).unwrap(), b"over tls");

    // No sslmode: plain TCP, which this server refuses (pg_hba `hostnossl ... reject`).
    let e = Store::open_postgres(&cluster.url, &ns, Config::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no encryption") || e.contains("pg_hba"), "{e}");

    // A CA file that is not there: refused at open, naming it.
    let e = Store::open_postgres(
        &with("sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
        &ns,
        Config::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
}

/// A TCP proxy to PostgreSQL that, once armed, lets the next simple query holding `COMMIT`
/// through to the server, reads the server's answer to its end, drops it and cuts the
/// client's connection: the server committed, the client never hears whether it did.
struct CommitCutter {
    port: u16,
    armed: Arc<std::sync::atomic::AtomicBool>,
    cuts: Arc<std::sync::atomic::AtomicUsize>,
}

impl CommitCutter {
    fn start(upstream: std::net::SocketAddr) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicUsize};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (a, n) = (Arc::clone(&armed), Arc::clone(&cuts));
        std::thread::spawn(move || {
            for client in l.incoming().flatten() {
                let Ok(up) = std::net::TcpStream::connect(upstream) else {
                    continue;
                };
                let (a, n) = (Arc::clone(&a), Arc::clone(&n));
                std::thread::spawn(move || relay(client, up, &a, &n));
            }
        });
        Self { port, armed, cuts }
    }

    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn cuts(&self) -> usize {
        self.cuts.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// One proxied connection: the client's messages parsed (type byte, length), the server's
/// copied back until a cut.
fn relay(
    client: std::net::TcpStream,
    up: std::net::TcpStream,
    armed: &std::sync::atomic::AtomicBool,
    cuts: &std::sync::atomic::AtomicUsize,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    let cut = Arc::new(AtomicBool::new(false));
    let (mut from_up, mut to_client) = (up.try_clone().unwrap(), client.try_clone().unwrap());
    let c2 = Arc::clone(&cut);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        let mut tail = Vec::new();
        loop {
            let n = match from_up.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if c2.load(Ordering::SeqCst) {
                // Swallow the answer to the COMMIT up to its ReadyForQuery ('Z', length 5).
                tail.extend_from_slice(&buf[..n]);
                let k = tail.len();
                if k >= 6 && tail[k - 6] == b'Z' && tail[k - 5..k - 1] == [0, 0, 0, 5] {
                    break;
                }
                continue;
            }
            if to_client.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to_client.shutdown(std::net::Shutdown::Both);
        let _ = from_up.shutdown(std::net::Shutdown::Both);
    });
    let (mut from_client, mut to_up) = (client, up);
    let mut first = true;
    loop {
        // The startup message has no type byte; every later one does.
        let mut head = vec![0u8; if first { 4 } else { 5 }];
        if from_client.read_exact(&mut head).is_err() {
            break;
        }
        let len_at = head.len() - 4;
        let len = u32::from_be_bytes(head[len_at..].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        if from_client.read_exact(&mut body).is_err() {
            break;
        }
        let is_commit = !first && head[0] == b'Q' && body.windows(6).any(|w| w == b"COMMIT");
        first = false;
        let cut_now = is_commit && armed.swap(false, Ordering::SeqCst);
        if cut_now {
            cut.store(true, Ordering::SeqCst);
            cuts.fetch_add(1, Ordering::SeqCst);
        }
        if to_up.write_all(&head).is_err() || to_up.write_all(&body).is_err() {
            break;
        }
        if cut_now {
            // The other thread closes the client's connection once the server has answered
            // (so the commit is done before the client sees the cut).
            return;
        }
    }
    let _ = to_up.shutdown(std::net::Shutdown::Both);
}

/// A put whose connection is lost during `COMMIT` (the server committed, the client cannot
/// know): the error says the outcome is unknown; retried with the same request id it is
/// stored once (same artifact, same version); without a request id a retry adds one more
/// version (the documented caveat), never a gap.
#[test]
fn a_put_cut_at_commit_is_stored_once_when_retried_with_its_request_id() {
    let Some(url) = common::pg::url() else { return };
    let (base, _) = url.rsplit_once('/').unwrap();
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let proxy = CommitCutter::start(([127, 0, 0, 1], port).into());
    let via_proxy = url.replace(&format!(":{port}/"), &format!(":{}/", proxy.port));
    let ns = common::pg::namespace();
    let s = Store::open_postgres(&via_proxy, &ns, Config::default()).unwrap();
    let direct = Store::open_postgres(&url, &ns, Config::default()).unwrap();
    let sid = s.create_session(NewSession::new()).unwrap().id;
    let new = |rid: Option<&str>| {
        let n = NewArtifact::new(ArtifactKind::ToolResult, "report.json");
        match rid {
            Some(r) => n.request_id(r),
            None => n,
        }
    };

    proxy.arm();
    let e = s.put(sid, new(Some("req-1")), b"first").unwrap_err();
    assert_eq!(proxy.cuts(), 1, "the proxy cut the COMMIT: {e}");
    assert_eq!(e.code(), "unavailable", "{e}");
    assert!(e.to_string().contains("during COMMIT"), "{e}");
    // The server did commit it.
    let v = direct.versions(sid, "report.json").unwrap();
    assert_eq!(v.len(), 1);
    // The retry, with the same request id: the same artifact, nothing added.
    let a = s.put(sid, new(Some("req-1")), b"first").unwrap();
    assert_eq!((a.id, a.version), (v[0].id, 1));
    // Through the other handle (another server) too.
    let b = direct.put(sid, new(Some("req-1")), b"first").unwrap();
    assert_eq!(b.id, a.id);
    assert_eq!(direct.versions(sid, "report.json").unwrap().len(), 1);
    // The same id for other content is refused, not taken as a retry.
    let e = s.put(sid, new(Some("req-1")), b"other").unwrap_err();
    assert_eq!(e.code(), "invalid_input", "{e}");
    assert!(e.to_string().contains("req-1"), "{e}");

    // Without a request id: the retry after a cut COMMIT adds one more version (no gap).
    proxy.arm();
    let e = s.put(sid, new(None), b"second").unwrap_err();
    assert_eq!(proxy.cuts(), 2);
    assert_eq!(e.code(), "unavailable", "{e}");
    let c = s.put(sid, new(None), b"second").unwrap();
    let versions: Vec<u32> = direct
        .versions(sid, "report.json")
        .unwrap()
        .iter()
        .map(|a| a.version)
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
    assert_eq!(c.version, 3);
    // A new request id is a new put; request records go with their session.
    let d = s.put(sid, new(Some("req-2")), b"third").unwrap();
    assert_eq!(d.version, 4);
    s.delete_session(sid, false).unwrap();
    let left = direct.engine_scan(b"q", b"r", 10).unwrap().len();
    assert_eq!(left, 0, "request records of a deleted session are removed");
}
