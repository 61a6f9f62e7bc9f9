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
