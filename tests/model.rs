//! Property test: random sequences of puts, deletes, status changes, session deletes, GC and
//! reopens, checked against a simple in-memory model: every query result, every content read and
//! every reference count.

use crate::common;

use std::collections::{BTreeSet, HashMap};

use cairn::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    NewSession {
        parent: Option<usize>,
    },
    Put {
        s: usize,
        name: u8,
        content: u8,
        kind: u8,
        tags: Vec<u8>,
    },
    Delete {
        a: usize,
    },
    Transition {
        s: usize,
        to: u8,
    },
    DeleteSession {
        s: usize,
    },
    Gc,
    Reopen,
    Query {
        q: u8,
        arg: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => proptest::option::of(0usize..8).prop_map(|parent| Step::NewSession { parent }),
        6 => (0usize..8, 0u8..4, 0u8..6, 0u8..3, proptest::collection::vec(0u8..3, 0..3))
            .prop_map(|(s, name, content, kind, tags)| Step::Put { s, name, content, kind, tags }),
        2 => (0usize..40).prop_map(|a| Step::Delete { a }),
        1 => (0usize..8, 0u8..7).prop_map(|(s, to)| Step::Transition { s, to }),
        1 => (0usize..8).prop_map(|s| Step::DeleteSession { s }),
        1 => Just(Step::Gc),
        1 => Just(Step::Reopen),
        3 => (0u8..7, 0u8..8).prop_map(|(q, arg)| Step::Query { q, arg }),
    ]
}

fn contents() -> Vec<Vec<u8>> {
    vec![
        Vec::new(),
        b"tiny".to_vec(),
        common::json_text(12_000, 1),
        common::json_text(150_000, 2),
        common::random_bytes(90_000, 3),
        b"tiny!".to_vec(),
    ]
}

#[derive(Clone, Debug)]
struct MSession {
    id: SessionId,
    parent: Option<SessionId>,
    status: SessionStatus,
}

#[derive(Clone, Debug)]
struct MArt {
    id: ArtifactId,
    session: SessionId,
    name: String,
    version: u32,
    content: usize,
    kind: ArtifactKind,
    tags: Vec<String>,
    alive: bool,
}

struct Model {
    sessions: Vec<MSession>,
    arts: Vec<MArt>,
}

impl Model {
    fn subtree(&self, root: SessionId) -> BTreeSet<SessionId> {
        let mut out = BTreeSet::from([root]);
        loop {
            let before = out.len();
            for s in &self.sessions {
                if let Some(p) = s.parent {
                    if out.contains(&p) {
                        out.insert(s.id);
                    }
                }
            }
            if out.len() == before {
                return out;
            }
        }
    }
    fn alive(&self) -> impl Iterator<Item = &MArt> {
        self.arts.iter().filter(|a| a.alive)
    }
}

fn kind_of(k: u8) -> ArtifactKind {
    [
        ArtifactKind::ToolResult,
        ArtifactKind::AgentOutput,
        ArtifactKind::Custom("note".into()),
    ][k as usize % 3]
        .clone()
}

fn run(kind: BackendKind, steps: &[Step]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let open = || Store::open_backend(kind, &path, Config::default()).unwrap();
    run_on(&open, kind != BackendKind::Memory, steps)
}

/// Runs `steps` on the store `open` opens (again at each reopen, when `reopens`).
fn run_on(open: &dyn Fn() -> Store, reopens: bool, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut s = open();
    let pool = contents();
    let mut m = Model {
        sessions: Vec::new(),
        arts: Vec::new(),
    };
    let first = s.create_session(NewSession::new()).unwrap();
    m.sessions.push(MSession {
        id: first.id,
        parent: None,
        status: SessionStatus::Active,
    });
    for st in steps {
        match st {
            Step::NewSession { parent } => {
                let p = parent
                    .and_then(|i| m.sessions.get(i % m.sessions.len().max(1)))
                    .map(|x| x.id);
                let mut n = NewSession::new();
                if let Some(p) = p {
                    n = n.parent(p);
                }
                let x = s.create_session(n).unwrap();
                m.sessions.push(MSession {
                    id: x.id,
                    parent: p,
                    status: SessionStatus::Active,
                });
            }
            Step::Put {
                s: si,
                name,
                content,
                kind,
                tags,
            } => {
                if m.sessions.is_empty() {
                    continue;
                }
                let sess = m.sessions[si % m.sessions.len()].clone();
                let name = format!(
                    "dir/n{name}.{}",
                    if *name % 2 == 0 { "json" } else { "txt" }
                );
                let tags: Vec<String> = tags.iter().map(|t| format!("t{t}")).collect();
                let na = NewArtifact::new(kind_of(*kind), &name).tags(tags.clone());
                let r = s.put(sess.id, na, &pool[*content as usize]);
                if sess.status.is_terminal() {
                    prop_assert!(matches!(r, Err(Error::SessionClosed { .. })), "{r:?}");
                    continue;
                }
                let a = r.unwrap();
                let expected_version = m
                    .alive()
                    .filter(|x| x.session == sess.id && x.name == name)
                    .map(|x| x.version)
                    .max()
                    .unwrap_or(0)
                    + 1;
                prop_assert_eq!(a.version, expected_version);
                let mut tags = tags;
                tags.sort();
                tags.dedup();
                prop_assert_eq!(&a.tags, &tags);
                m.arts.push(MArt {
                    id: a.id,
                    session: sess.id,
                    name,
                    version: a.version,
                    content: *content as usize,
                    kind: kind_of(*kind),
                    tags,
                    alive: true,
                });
            }
            Step::Delete { a } => {
                if m.arts.is_empty() {
                    continue;
                }
                let i = a % m.arts.len();
                let art = m.arts[i].clone();
                let r = s.delete_artifact(art.session, art.id);
                if art.alive {
                    prop_assert!(r.is_ok(), "{r:?}");
                    m.arts[i].alive = false;
                } else {
                    prop_assert!(r.unwrap_err().is_not_found());
                }
            }
            Step::Transition { s: si, to } => {
                let i = si % m.sessions.len().max(1);
                let Some(sess) = m.sessions.get(i).cloned() else {
                    continue;
                };
                let to = SessionStatus::ALL[*to as usize];
                let r = s.transition(sess.id, to, Some("because"));
                if sess.status.can_transition_to(to) {
                    prop_assert_eq!(r.unwrap().status, to);
                    m.sessions[i].status = to;
                } else {
                    let is_invalid_transition = matches!(r, Err(Error::InvalidTransition { .. }));
                    prop_assert!(is_invalid_transition);
                }
                prop_assert_eq!(s.session(sess.id).unwrap().status, m.sessions[i].status);
            }
            Step::DeleteSession { s: si } => {
                if m.sessions.len() <= 1 {
                    continue;
                }
                let sess = m.sessions[si % m.sessions.len()].clone();
                let sub = m.subtree(sess.id);
                let rep = s.delete_session(sess.id, true).unwrap();
                prop_assert_eq!(rep.sessions as usize, sub.len());
                let expected_arts = m.alive().filter(|a| sub.contains(&a.session)).count();
                prop_assert_eq!(rep.artifacts as usize, expected_arts);
                for a in m.arts.iter_mut() {
                    if sub.contains(&a.session) {
                        a.alive = false;
                    }
                }
                m.sessions.retain(|x| !sub.contains(&x.id));
                for a in m.arts.iter_mut() {
                    if sub.contains(&a.session) {
                        a.session = SessionId::from_bytes([0; 16]); // gone
                    }
                }
            }
            Step::Gc => {
                s.gc().unwrap();
            }
            Step::Reopen => {
                if !reopens {
                    continue; // nothing survives a memory store
                }
                drop(s);
                s = open();
            }
            Step::Query { q, arg } => {
                check_query(&s, &m, &pool, *q, *arg)?;
            }
        }
    }
    // Full check: contents, reference counts, stats, every kind of query.
    for a in &m.arts {
        if a.alive {
            prop_assert!(s.read(a.session, a.id).unwrap() == pool[a.content]);
        } else {
            prop_assert!(s.admin().artifact(a.id).unwrap_err().is_not_found());
        }
    }
    let mut refs: HashMap<usize, u64> = HashMap::new();
    for a in m.alive() {
        *refs.entry(a.content).or_default() += 1;
    }
    for (i, c) in pool.iter().enumerate() {
        let info = s.content_info(&ContentHash::of(c)).unwrap();
        let expected = refs.get(&i).copied().unwrap_or(0);
        prop_assert_eq!(info.map(|x| x.refs).unwrap_or(0), expected, "content {}", i);
    }
    s.gc().unwrap();
    for (i, c) in pool.iter().enumerate() {
        let present = s.content_info(&ContentHash::of(c)).unwrap().is_some();
        prop_assert_eq!(present, refs.contains_key(&i), "after gc, content {}", i);
    }
    let st = s.stats().unwrap();
    prop_assert_eq!(st.artifacts as usize, m.alive().count());
    prop_assert_eq!(st.sessions as usize, m.sessions.len());
    prop_assert_eq!(st.blobs as usize, refs.len());
    for q in 0..7 {
        for arg in 0..8 {
            check_query(&s, &m, &pool, q, arg)?;
        }
    }
    Ok(())
}

type Keep = Box<dyn Fn(&MArt) -> bool>;

fn check_query(
    s: &Store,
    m: &Model,
    pool: &[Vec<u8>],
    q: u8,
    arg: u8,
) -> Result<(), TestCaseError> {
    let sess = m
        .sessions
        .get(arg as usize % m.sessions.len().max(1))
        .map(|x| x.id);
    let (query, keep): (Query, Keep) = match q {
        0 => (
            Query::new().kind(kind_of(arg)),
            Box::new(move |a: &MArt| a.kind == kind_of(arg)),
        ),
        1 => {
            let t = format!("t{}", arg % 3);
            (
                Query::new().tag(t.clone()),
                Box::new(move |a: &MArt| a.tags.contains(&t)),
            )
        }
        2 => {
            let g = if arg % 2 == 0 { "*.json" } else { "dir/n1*" };
            let matcher = globset::Glob::new(g).unwrap().compile_matcher();
            (
                Query::new().name_glob(g),
                Box::new(move |a: &MArt| matcher.is_match(&a.name)),
            )
        }
        3 => {
            let lo = [0u64, 4, 5, 1000][arg as usize % 4];
            let hi = [4u64, 12_000, 100_000, u64::MAX][arg as usize / 2 % 4].max(lo);
            let sizes: Vec<u64> = pool.iter().map(|c| c.len() as u64).collect();
            (
                Query::new().min_size(lo).max_size(hi),
                Box::new(move |a: &MArt| (lo..=hi).contains(&sizes[a.content])),
            )
        }
        4 => {
            let Some(root) = sess else { return Ok(()) };
            let sub = m.subtree(root);
            (
                Query::new().session(root).subtree(true),
                Box::new(move |a: &MArt| sub.contains(&a.session)),
            )
        }
        5 => {
            let Some(root) = sess else { return Ok(()) };
            let k = kind_of(arg);
            (
                Query::new().session(root).kind(k.clone()),
                Box::new(move |a: &MArt| a.session == root && a.kind == k),
            )
        }
        _ => {
            let latest: HashMap<(SessionId, String), u32> =
                m.alive().fold(HashMap::new(), |mut acc, a| {
                    let e = acc.entry((a.session, a.name.clone())).or_insert(0);
                    *e = (*e).max(a.version);
                    acc
                });
            (
                Query::new().latest_only(true),
                Box::new(move |a: &MArt| {
                    latest.get(&(a.session, a.name.clone())) == Some(&a.version)
                }),
            )
        }
    };
    let mut got = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut qq = query.clone().limit(7);
        if let Some(c) = &cursor {
            qq = qq.cursor(c.clone());
        }
        let page = s.query(&qq).unwrap();
        for a in page.items {
            prop_assert!(got.insert(a.id), "no duplicates across pages");
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let want: BTreeSet<ArtifactId> = m.alive().filter(|a| keep(a)).map(|a| a.id).collect();
    prop_assert_eq!(got, want, "query {} arg {}", q, arg);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model_memory(steps in proptest::collection::vec(step(), 1..60)) {
        run(BackendKind::Memory, &steps)?;
    }

    #[test]
    fn store_matches_model_sled(steps in proptest::collection::vec(step(), 1..60)) {
        run(BackendKind::Sled, &steps)?;
    }

    #[cfg(feature = "redb")]
    #[test]
    fn store_matches_model_redb(steps in proptest::collection::vec(step(), 1..60)) {
        run(BackendKind::Redb, &steps)?;
    }

    /// The same model on a PostgreSQL server (see `common::pg`): every reopen is a new
    /// connection to the same namespace, so nothing cached in the process carries over.
    #[cfg(feature = "postgres")]
    #[test]
    fn store_matches_model_postgres(steps in proptest::collection::vec(step(), 1..60)) {
        if let Some(url) = common::pg::url() {
            let ns = common::pg::namespace();
            let open = || Store::open_postgres(&url, &ns, Config::default()).unwrap();
            run_on(&open, true, &steps)?;
        }
    }

    #[cfg(feature = "fjall")]
    #[test]
    fn store_matches_model_fjall(steps in proptest::collection::vec(step(), 1..60)) {
        run(BackendKind::Fjall, &steps)?;
    }

    /// Group commit (`backend/buffered.rs`): committed batches wait in memory in front of the
    /// engine and a background flush every 2 ms hands them over, so reads mix the buffer, a
    /// flush in progress and the engine at random points of the run.
    #[cfg(feature = "redb")]
    #[test]
    fn store_matches_model_redb_group_commit(steps in proptest::collection::vec(step(), 1..60)) {
        run_group(BackendKind::Redb, &steps)?;
    }

    #[test]
    fn store_matches_model_sled_group_commit(steps in proptest::collection::vec(step(), 1..60)) {
        run_group(BackendKind::Sled, &steps)?;
    }
}

fn run_group(kind: BackendKind, steps: &[Step]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let config = Config::default().durability(cairn::Durability::Group { interval_ms: 2 });
    let open = || Store::open_backend(kind, &path, config.clone()).unwrap();
    run_on(&open, true, steps)
}

proptest! {
    // Fewer cases than the embedded engines: each case opens a fresh PostgreSQL namespace and
    // S3 prefix, and every object request is a round trip to moto.
    #![proptest_config(ProptestConfig { cases: 16, max_shrink_iters: 50, ..ProptestConfig::default() })]

    /// The same model on PostgreSQL with the content on an S3-compatible server (moto, see
    /// `common::s3`): content of 1 KiB or more encoded goes to objects, so most puts, reads,
    /// dedups and GC runs reach the object store; every reopen is a new connection and a new
    /// object store client on the same namespace.
    #[cfg(all(feature = "postgres", feature = "s3"))]
    #[test]
    fn store_matches_model_postgres_s3(steps in proptest::collection::vec(step(), 1..60)) {
        let config = Config::default().inline_threshold(1024);
        if let Some((first, ns)) = common::s3::pg_store_with(config.clone(), std::time::Duration::ZERO) {
            let first = std::cell::RefCell::new(Some(first));
            let open = || {
                first
                    .borrow_mut()
                    .take()
                    .unwrap_or_else(|| common::s3::open(&ns, config.clone(), std::time::Duration::ZERO))
            };
            run_on(&open, true, &steps)?;
        }
    }
}
