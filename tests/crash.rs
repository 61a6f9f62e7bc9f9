//! Crash safety through the real sled store with `Durability::Immediate`.
//!
//! * `kill_9_at_random_moments_loses_nothing_acknowledged`: a child process (this test binary,
//!   re-run with `CAIRN_CRASH_CHILD` set) writes a random mix of operations and prints each one
//!   when the call returns; the parent SIGKILLs it after a random delay, reopens the store and
//!   checks it against everything acknowledged. `CAIRN_CRASH_CYCLES` sets the number of cycles
//!   (default 30), `CAIRN_CRASH_SEED` the seed.
//! * `a_crash_at_every_engine_step_leaves_a_consistent_store`: the child runs a fixed script and
//!   aborts at exactly the Nth engine `apply` or `flush` (before it or after it), for every N.
//! * `engine_errors_at_every_step_fail_cleanly`: the same steps fail with an error in-process.
//! * `gc_racing_deletes_and_puts_of_the_same_content_never_loses_a_referenced_blob`.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use cairn::*;
use common::faults::{Action, Call, Fault, FaultBackend, When};

const CHILD_ENV: &str = "CAIRN_CRASH_CHILD";
const STORE_ENV: &str = "CAIRN_CRASH_STORE";
const FAULT_ENV: &str = "CAIRN_CRASH_FAULT";

fn config() -> Config {
    // Small inline threshold: plenty of blob files, the part of a put that lives outside the engine.
    // sled: the fault-injection wrapper opens the store's engine as sled.
    Config::default()
        .engine(BackendKind::Sled)
        .inline_threshold(8 << 10)
        .durability(Durability::Immediate)
}

/// Content from a spec: `j:<len>:<seed>` JSON-like text, `r:<len>:<seed>` random bytes.
fn gen(spec: &str) -> Vec<u8> {
    let p: Vec<&str> = spec.split(':').collect();
    let len: usize = p[1].parse().unwrap();
    let seed: u64 = p[2].parse().unwrap();
    match p[0] {
        "j" => common::json_text(len, seed),
        _ => common::random_bytes(len, seed),
    }
}

/// xorshift: small, seeded, good enough to pick operations and delays.
struct Rng(u64);
impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

type Ack<'a> = &'a mut dyn FnMut(String);

fn stdout_ack(line: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

// ---------------------------------------------------------------------------------------------
// Child workloads. Each operation prints `B ...` before it starts and its result when it returns.

fn put(store: &Store, ack: Ack, sid: SessionId, name: &str, spec: &str) -> Result<Artifact> {
    ack(format!("B P {sid} {spec}"));
    let bytes = gen(spec);
    let new = NewArtifact::new(ArtifactKind::ToolResult, name).meta("gen", spec);
    // Through the streaming path: inputs over 8 MiB go through a temporary file.
    let a = store.put_reader(sid, new, &bytes[..])?;
    ack(format!("P {sid} {} {} {spec}", a.id, a.hash));
    Ok(a)
}

fn delete(store: &Store, ack: Ack, a: &Artifact) -> Result<()> {
    ack(format!("B D {}", a.id));
    store.delete_artifact(a.session_id, a.id)?;
    ack(format!("D {}", a.id));
    Ok(())
}

fn transition(store: &Store, ack: Ack, sid: SessionId, to: SessionStatus) -> Result<()> {
    ack(format!("B T {sid} {}", to.as_str()));
    store.transition(sid, to, None)?;
    ack(format!("T {sid} {}", to.as_str()));
    Ok(())
}

fn session(store: &Store, ack: Ack) -> Result<SessionId> {
    ack("B S".into());
    let s = store.create_session(NewSession::new().name("crash"))?;
    ack(format!("S {}", s.id));
    Ok(s.id)
}

fn gc(store: &Store, ack: Ack) -> Result<()> {
    ack("B G".into());
    store.gc()?;
    ack("G".into());
    Ok(())
}

/// The fixed script of the fault-injection tests: every kind of step of a put and a delete.
fn run_script(store: &Store, ack: Ack) -> Result<()> {
    let s = session(store, ack)?;
    let s1 = put(store, ack, s, "s1", "j:300:1")?; // inline
    let l1 = put(store, ack, s, "l1", "j:2000000:2")?; // compressed file
    let l2 = put(store, ack, s, "l2", "j:2000000:2")?; // duplicate: one more reference
    put(store, ack, s, "s2", "j:300:1")?; // inline duplicate
    let r1 = put(store, ack, s, "r1", "r:100000:3")?; // raw file
    let big = put(store, ack, s, "big", "j:9000000:4")?; // streamed through tmp/
    delete(store, ack, &s1)?; // refs 2 -> 1
    delete(store, ack, &l1)?;
    delete(store, ack, &l2)?; // refs -> 0: garbage
    transition(store, ack, s, SessionStatus::Suspended)?;
    transition(store, ack, s, SessionStatus::Active)?;
    gc(store, ack)?; // removes l1's blob: records, flush, then the file
    put(store, ack, s, "l3", "j:2000000:2")?; // the collected content again
    delete(store, ack, &r1)?;
    delete(store, ack, &big)?;
    gc(store, ack)?;
    transition(store, ack, s, SessionStatus::Completed)?;
    ack("DONE".into());
    Ok(())
}

/// Everything readable from the store for a child to pick from.
fn discover(store: &Store) -> (Vec<SessionId>, Vec<Artifact>) {
    let mut sessions = Vec::new();
    let page = store.list_sessions(&SessionFilter::new()).unwrap();
    for s in page.items {
        if !s.status.is_terminal() {
            sessions.push(s.id);
        }
    }
    (sessions, all_artifacts(store))
}

fn all_artifacts(store: &Store) -> Vec<Artifact> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = Query::new().limit(1000);
        if let Some(c) = &cursor {
            q = q.cursor(c.clone());
        }
        let page = store.query(&q).unwrap();
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

/// A random mix until killed.
fn run_random(store: &Store, seed: u64, ack: Ack) -> Result<()> {
    let mut rng = Rng::new(seed);
    let (mut sessions, mut live) = discover(store);
    ack("READY".into());
    for step in 0..200_000u64 {
        if sessions.is_empty() {
            sessions.push(session(store, ack)?);
        }
        let sid = sessions[rng.below(sessions.len() as u64) as usize];
        let spec_seed = seed.wrapping_mul(1_000_003).wrapping_add(step);
        match rng.below(100) {
            0..=39 => {
                let kind = if rng.below(2) == 0 { "j" } else { "r" };
                let spec = format!("{kind}:{}:{spec_seed}", rng.below(6000));
                live.push(put(store, ack, sid, "small", &spec)?);
            }
            40..=54 if !live.is_empty() => {
                let src = &live[rng.below(live.len() as u64) as usize];
                let spec = src.metadata["gen"].as_str().unwrap_or("j:1:1").to_string();
                live.push(put(store, ack, sid, "dup", &spec)?);
            }
            55..=64 => {
                let spec = if rng.below(2) == 0 {
                    format!("r:{}:{spec_seed}", 20_000 + rng.below(280_000))
                } else {
                    format!("j:{}:{spec_seed}", 100_000 + rng.below(1_900_000))
                };
                live.push(put(store, ack, sid, "large", &spec)?);
            }
            65 => {
                let spec = format!("j:9000000:{spec_seed}");
                live.push(put(store, ack, sid, "huge", &spec)?);
            }
            66..=84 if !live.is_empty() => {
                let a = live.swap_remove(rng.below(live.len() as u64) as usize);
                delete(store, ack, &a)?;
            }
            85..=92 => {
                let s = store.session(sid)?;
                let to = match (s.status, rng.below(5)) {
                    (SessionStatus::Suspended, _) => SessionStatus::Active,
                    (_, 0) => SessionStatus::Completed,
                    _ => SessionStatus::Suspended,
                };
                transition(store, ack, sid, to)?;
                if to.is_terminal() {
                    sessions.retain(|x| *x != sid);
                }
            }
            93..=95 => sessions.push(session(store, ack)?),
            _ => gc(store, ack)?,
        }
    }
    Ok(())
}

fn open_child_store(path: &Path) -> Store {
    match std::env::var(FAULT_ENV).ok().and_then(|f| Fault::parse(&f)) {
        Some(fault) => Store::open_with_backend(BackendKind::Sled, path, config(), |db| {
            let engine: Box<dyn Backend> = Box::new(SledBackend::open(db)?);
            Ok(Box::new(FaultBackend::new(engine, vec![fault])))
        })
        .unwrap(),
        None => Store::open_with(path, config()).unwrap(),
    }
}

/// The child process's entry point. Run directly (without `CAIRN_CRASH_CHILD`), it runs the
/// fault script to the end in-process and checks the result like a crash cycle would.
#[test]
fn crash_child() {
    match std::env::var(CHILD_ENV) {
        Ok(mode) => {
            let path = PathBuf::from(std::env::var(STORE_ENV).unwrap());
            let store = open_child_store(&path);
            let mut ack = stdout_ack;
            // End the test harness's "test crash_child ... " line first.
            ack(String::new());
            match mode.strip_prefix("random:") {
                Some(seed) => run_random(&store, seed.parse().unwrap(), &mut ack).unwrap(),
                None => run_script(&store, &mut ack).unwrap(),
            }
        }
        Err(_) => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("store");
            let mut lines = Vec::new();
            {
                let store = Store::open_with(&path, config()).unwrap();
                run_script(&store, &mut |l| lines.push(l)).unwrap();
            }
            assert_eq!(lines.last().map(String::as_str), Some("DONE"));
            let mut model = Model::default();
            let inflight = model.apply(&lines);
            assert_eq!(inflight, InFlight::None);
            let checked = check(&path, model, inflight);
            assert_eq!(checked.live.len(), 2, "s2 and l3 remain");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The parent's model of what was acknowledged, and the check after a crash.

#[derive(Default, Debug)]
struct Model {
    /// Acknowledged and not deleted: id -> (session, hash, spec).
    live: HashMap<ArtifactId, (SessionId, ContentHash, String)>,
    /// Acknowledged deletes.
    deleted: HashSet<ArtifactId>,
    /// Acknowledged sessions and their last acknowledged status.
    sessions: HashMap<SessionId, String>,
    /// Operations acknowledged over all cycles.
    acked_ops: u64,
}

/// The operation that was running when the process died, if any: it may or may not have happened.
#[derive(Debug, PartialEq, Eq)]
enum InFlight {
    None,
    Put { sid: SessionId, spec: String },
    Delete(ArtifactId),
    Status { sid: SessionId, to: String },
    Session,
    Gc,
}

impl Model {
    /// Applies complete acknowledgement lines; returns the operation left in flight.
    fn apply(&mut self, lines: &[String]) -> InFlight {
        let mut inflight = InFlight::None;
        for line in lines {
            let w: Vec<&str> = line.split(' ').collect();
            match w.as_slice() {
                ["B", "P", sid, spec] => {
                    inflight = InFlight::Put {
                        sid: sid.parse().unwrap(),
                        spec: spec.to_string(),
                    }
                }
                ["B", "D", aid] => inflight = InFlight::Delete(aid.parse().unwrap()),
                ["B", "T", sid, to] => {
                    inflight = InFlight::Status {
                        sid: sid.parse().unwrap(),
                        to: to.to_string(),
                    }
                }
                ["B", "S"] => inflight = InFlight::Session,
                ["B", "G"] => inflight = InFlight::Gc,
                ["P", sid, aid, hash, spec] => {
                    self.live.insert(
                        aid.parse().unwrap(),
                        (
                            sid.parse().unwrap(),
                            hash.parse().unwrap(),
                            spec.to_string(),
                        ),
                    );
                    inflight = InFlight::None;
                    self.acked_ops += 1;
                }
                ["D", aid] => {
                    let id: ArtifactId = aid.parse().unwrap();
                    assert!(self.live.remove(&id).is_some(), "deleted unknown {id}");
                    self.deleted.insert(id);
                    inflight = InFlight::None;
                    self.acked_ops += 1;
                }
                ["T", sid, to] => {
                    self.sessions.insert(sid.parse().unwrap(), to.to_string());
                    inflight = InFlight::None;
                    self.acked_ops += 1;
                }
                ["S", sid] => {
                    self.sessions.insert(sid.parse().unwrap(), "active".into());
                    inflight = InFlight::None;
                    self.acked_ops += 1;
                }
                ["G"] => {
                    inflight = InFlight::None;
                    self.acked_ops += 1;
                }
                _ => {} // the test harness's own output
            }
        }
        inflight
    }
}

/// Reopens the store and checks it against the model; returns the model with the in-flight
/// operation resolved to what the store shows.
fn check(path: &Path, mut model: Model, inflight: InFlight) -> Model {
    let store = Store::open_with(path, config()).unwrap();
    // Every acknowledged artifact reads back byte-identical (the read verifies its hash).
    let ids: Vec<ArtifactId> = model.live.keys().copied().collect();
    for id in ids {
        let (sid, hash, spec) = model.live[&id].clone();
        match store.artifact(sid, id) {
            Ok(a) => {
                assert_eq!(a.hash, hash, "{id}");
                let bytes = store
                    .read(sid, id)
                    .unwrap_or_else(|e| panic!("acknowledged {id} ({spec}) unreadable: {e}"));
                assert!(
                    bytes == gen(&spec),
                    "acknowledged {id} ({spec}) reads back different bytes"
                );
            }
            Err(e) if e.is_not_found() && inflight == InFlight::Delete(id) => {
                model.live.remove(&id);
                model.deleted.insert(id);
            }
            Err(e) => panic!("acknowledged artifact {id} ({spec}) lost: {e}"),
        }
    }
    // Acknowledged deletes stay deleted.
    for id in &model.deleted {
        let e = store.admin().artifact(*id).unwrap_err();
        assert!(e.is_not_found(), "deleted {id} is back: {e}");
    }
    // Nothing unacknowledged is visible, except the one in-flight put, and then whole.
    for a in all_artifacts(&store) {
        if model.live.contains_key(&a.id) {
            continue;
        }
        match &inflight {
            InFlight::Put { sid, spec }
                if a.session_id == *sid && a.metadata["gen"].as_str() == Some(spec) =>
            {
                assert_eq!(store.read(a.session_id, a.id).unwrap(), gen(spec));
                model
                    .live
                    .insert(a.id, (a.session_id, a.hash, spec.clone()));
            }
            _ => panic!("unacknowledged artifact {} ({:?}) is visible", a.id, a.name),
        }
    }
    // Sessions: acknowledged ones exist with their acknowledged status (or the in-flight one).
    let mut seen = HashSet::new();
    let page = store.list_sessions(&SessionFilter::new()).unwrap();
    for s in page.items {
        seen.insert(s.id);
        let status = s.status.as_str().to_string();
        match model.sessions.get(&s.id) {
            Some(want) if *want == status => {}
            Some(_)
                if inflight
                    == (InFlight::Status {
                        sid: s.id,
                        to: status.clone(),
                    }) =>
            {
                model.sessions.insert(s.id, status);
            }
            Some(want) => panic!("session {} is {status}, acknowledged {want}", s.id),
            None if inflight == InFlight::Session => {
                model.sessions.insert(s.id, status);
            }
            None => panic!("unacknowledged session {} is visible", s.id),
        }
    }
    for id in model.sessions.keys() {
        assert!(seen.contains(id), "acknowledged session {id} lost");
    }
    // Indexes, reference counts and counters agree with the records. At worst a blob file
    // written before its batch is left for GC.
    let r = store.verify().unwrap();
    let bad: Vec<&Problem> = r
        .problems
        .iter()
        .filter(|p| p.kind != "orphan_file")
        .collect();
    assert!(bad.is_empty(), "after the crash: {bad:#?}");
    store.gc().unwrap();
    let r = store.verify().unwrap();
    assert!(r.ok, "after gc: {:#?}", r.problems);
    assert_eq!(r.artifacts_checked, model.live.len() as u64);
    let tmp = std::fs::read_dir(path.join("tmp")).unwrap().count();
    assert_eq!(tmp, 0, "tmp/ is cleared on open");
    model
}

// ---------------------------------------------------------------------------------------------
// Parents.

struct ChildRun {
    lines: Vec<String>,
    exited_cleanly: bool,
}

/// Runs this binary's `crash_child` with `mode`; `kill_after` decides when to SIGKILL it, given
/// the channel of its output lines. Only complete lines count.
fn run_child(
    path: &Path,
    mode: &str,
    fault: Option<Fault>,
    kill_after: impl FnOnce(&mpsc::Receiver<String>, &mut Vec<String>),
) -> ChildRun {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    let name = common::test_path(module_path!(), "crash_child");
    cmd.args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .env(STORE_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    match fault {
        Some(f) => cmd.env(FAULT_ENV, f.render()),
        None => cmd.env_remove(FAULT_ENV),
    };
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line.ends_with('\n') => {
                    line.pop();
                    if tx.send(line).is_err() {
                        return;
                    }
                }
                Ok(_) => return, // a line cut by the kill was never acknowledged
            }
        }
    });
    let mut lines = Vec::new();
    kill_after(&rx, &mut lines);
    let _ = child.kill(); // SIGKILL
    let status = child.wait().unwrap();
    reader.join().unwrap();
    lines.extend(rx.try_iter());
    ChildRun {
        lines,
        exited_cleanly: status.success(),
    }
}

#[test]
fn kill_9_at_random_moments_loses_nothing_acknowledged() {
    let cycles: u64 = std::env::var("CAIRN_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("CAIRN_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    eprintln!("crash test: {cycles} cycles, CAIRN_CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut model = Model::default();
    let mut mid_operation = 0;
    for cycle in 0..cycles {
        let early = rng.below(10) == 0;
        let delay = Duration::from_millis(if early { rng.below(40) } else { rng.below(400) });
        let run = run_child(
            &path,
            &format!("random:{}", seed.wrapping_add(cycle)),
            None,
            |rx, lines| {
                if !early {
                    // Wait until the store is open, then let it write for a while.
                    while let Ok(l) = rx.recv_timeout(Duration::from_secs(60)) {
                        let ready = l == "READY";
                        lines.push(l);
                        if ready {
                            break;
                        }
                    }
                }
                std::thread::sleep(delay);
            },
        );
        assert!(!run.exited_cleanly, "the child runs until killed");
        let inflight = model.apply(&run.lines);
        if inflight != InFlight::None {
            mid_operation += 1;
        }
        model = check(&path, model, inflight);
    }
    eprintln!(
        "crash test: {} operations acknowledged, {} kills mid-operation, {} artifacts live",
        model.acked_ops,
        mid_operation,
        model.live.len()
    );
    assert!(
        model.acked_ops >= cycles,
        "the children acknowledged too little to test anything"
    );
}

#[test]
fn a_crash_at_every_engine_step_leaves_a_consistent_store() {
    let mut crashes = 0;
    for (call, when) in [
        (Call::Apply, When::Before),
        (Call::Apply, When::After),
        (Call::Flush, When::After),
    ] {
        for n in 1.. {
            let fault = Fault {
                call,
                n,
                when,
                action: Action::Abort,
            };
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("store");
            let run = run_child(&path, "script", Some(fault), |rx, lines| {
                lines.extend(rx.iter());
            });
            assert!(!run.exited_cleanly || run.lines.iter().any(|l| l == "DONE"));
            crashes += 1;
            let mut model = Model::default();
            let inflight = model.apply(&run.lines);
            check(&path, model, inflight);
            if run.lines.iter().any(|l| l == "DONE") {
                // Past the script's last step (or in the final flush as the store closes).
                assert!(n > 10, "the script has more than {n} steps");
                break;
            }
        }
    }
    eprintln!("fault injection: {crashes} crash points checked");
}

#[test]
fn engine_errors_at_every_step_fail_cleanly() {
    for (call, when) in [
        (Call::Apply, When::Before),
        (Call::Apply, When::After),
        (Call::Flush, When::Before),
    ] {
        for n in 1.. {
            let fault = Fault {
                call,
                n,
                when,
                action: Action::Error,
            };
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("store");
            let mut lines = Vec::new();
            let opened = Store::open_with_backend(BackendKind::Sled, &path, config(), |db| {
                let engine: Box<dyn Backend> = Box::new(SledBackend::open(db)?);
                Ok(Box::new(FaultBackend::new(engine, vec![fault])))
            });
            let Ok(store) = opened else {
                continue; // the fault hit the open itself: a clear error, nothing to check
            };
            let result = run_script(&store, &mut |l| lines.push(l));
            let done = result.is_ok();
            if let Err(e) = &result {
                assert!(e.to_string().contains("injected"), "{e}");
                // The same store keeps working after the error, and stays consistent.
                let r = store.verify().unwrap();
                let bad: Vec<_> = r
                    .problems
                    .iter()
                    .filter(|p| p.kind != "orphan_file")
                    .collect();
                assert!(bad.is_empty(), "{}: {bad:#?}", fault.render());
            }
            drop(store);
            let mut model = Model::default();
            let inflight = model.apply(&lines);
            check(&path, model, inflight);
            if done {
                assert!(n > 10);
                break;
            }
        }
    }
}

#[test]
fn gc_racing_deletes_and_puts_of_the_same_content_never_loses_a_referenced_blob() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::default()
        .inline_threshold(4 << 10)
        .durability(Durability::Group { interval_ms: 20 });
    let store = Store::open_with(dir.path().join("store"), cfg).unwrap();
    let contents: Arc<Vec<Vec<u8>>> = Arc::new(vec![
        b"shared small content".to_vec(),
        common::random_bytes(50_000, 1), // raw file
        common::json_text(200_000, 2),   // compressed file
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0u64;
            while !stop.load(Ordering::SeqCst) {
                store.gc().unwrap();
                runs += 1;
            }
            runs
        })
    };
    let writers: Vec<_> = (0..4u64)
        .map(|t| {
            let (store, contents) = (store.clone(), contents.clone());
            std::thread::spawn(move || {
                let s = store.create_session(NewSession::new()).unwrap();
                let mut rng = Rng::new(t + 1);
                for i in 0..150 {
                    let c = &contents[rng.below(3) as usize];
                    let a = store
                        .put(
                            s.id,
                            NewArtifact::new(ArtifactKind::ToolResult, format!("x{i}")),
                            c,
                        )
                        .unwrap();
                    // The reference just taken must hold whatever GC did meanwhile.
                    let back = store
                        .read(s.id, a.id)
                        .unwrap_or_else(|e| panic!("thread {t} iteration {i}: {e}"));
                    assert!(back == *c);
                    store.delete_artifact(s.id, a.id).unwrap();
                }
                // One survivor per thread and content.
                (0..3)
                    .map(|k| {
                        let a = store
                            .put(
                                s.id,
                                NewArtifact::new(ArtifactKind::ToolResult, "keep"),
                                &contents[k],
                            )
                            .unwrap();
                        (s.id, a.id, k)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut kept = Vec::new();
    for w in writers {
        kept.extend(w.join().unwrap());
    }
    stop.store(true, Ordering::SeqCst);
    let gc_runs = collector.join().unwrap();
    assert!(gc_runs > 0);
    store.gc().unwrap();
    let r = store.verify().unwrap();
    assert!(r.ok, "{:#?}", r.problems);
    for (sid, aid, k) in kept {
        assert!(store.read(sid, aid).unwrap() == contents[k]);
    }
}
