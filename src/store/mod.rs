//! The store facade: opening, the write path's transaction, durability, statistics.

mod artifacts;
mod checkpoints;
mod gc;
mod integrity;
mod metrics;
mod sessions;

pub use self::artifacts::{Admin, ContentInfo};
pub use self::gc::GcReport;
pub use self::sessions::DeleteReport;
// For bundle import, which writes records with their indexes and counters directly.
pub(crate) use self::artifacts::session_count_key;
pub(crate) use self::checkpoints::RemapIds;
pub(crate) use self::sessions::status_counter;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde::{Deserialize, Serialize};

use crate::backend::{Backend, MemoryBackend, Op, SledBackend};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::ids::{ContentHash, SessionId};
use crate::keys::{self, Key};

/// The on-disk format this version writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const MARKER: &str = "CAIRN";

/// Which engine holds the records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// In memory; nothing survives the process.
    Memory,
    /// sled on local disk (the default).
    Sled,
    /// redb on local disk (feature `redb`).
    Redb,
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "memory" => Ok(BackendKind::Memory),
            "sled" => Ok(BackendKind::Sled),
            "redb" => Ok(BackendKind::Redb),
            other => Err(Error::invalid(
                "backend",
                format!("{other:?}; use memory, sled or redb"),
            )),
        }
    }
}

/// Folders of a store on disk.
#[derive(Clone, Debug)]
pub(crate) struct Paths {
    pub root: PathBuf,
    pub blobs: PathBuf,
    pub tmp: PathBuf,
    #[allow(dead_code)] // used by repair
    pub quarantine: PathBuf,
}

impl Paths {
    fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            blobs: root.join("blobs"),
            tmp: root.join("tmp"),
            quarantine: root.join("quarantine"),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Marker {
    format: u32,
    backend: BackendKind,
}

/// Mutable state guarded by the write lock: caches of counters and event sequence numbers.
#[derive(Default)]
pub(crate) struct WriteState {
    counters: HashMap<Vec<u8>, i64>,
    next_seq: HashMap<SessionId, u64>,
}

pub(crate) struct Inner {
    backend: Box<dyn Backend>,
    pub(crate) paths: Option<Paths>,
    pub(crate) config: Config,
    write: Mutex<WriteState>,
    /// Content hashes a put is about to reference: GC leaves their blobs and files alone.
    pending: Mutex<HashMap<ContentHash, usize>>,
    pub(crate) hooks: Hooks,
}

/// Observers of committed writes.
#[derive(Default)]
pub(crate) struct Hooks {
    /// Subscriptions: offered each batch's events inside the write lock (in `Tx::commit`), so
    /// they see commit order; observers called after the lock is released could see concurrent
    /// commits out of order.
    pub(crate) hub: crate::subscribe::Hub,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.backend.flush();
    }
}

/// A Cairn store. Cheap to clone; every clone shares the same store. `Send + Sync`: use it from
/// many threads at once.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend.name())
            .field("path", &self.inner.paths.as_ref().map(|p| &p.root))
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the default sled store at `path` with the default configuration.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Self::open_with(path, Config::default())
    }

    /// Opens (or creates) a sled store at `path`.
    pub fn open_with(path: impl AsRef<Path>, config: Config) -> Result<Store> {
        Self::open_backend(BackendKind::Sled, path, config)
    }

    /// An in-memory store with the default configuration.
    pub fn memory() -> Store {
        Self::memory_with(Config::default())
            .unwrap_or_else(|_| unreachable!("default config is valid"))
    }

    /// An in-memory store.
    pub fn memory_with(config: Config) -> Result<Store> {
        config.validate()?;
        Ok(Self::from_parts(
            Box::new(MemoryBackend::new()),
            None,
            config,
        ))
    }

    /// A store over any engine implementing [`Backend`], with no blob folder: all content lives
    /// in the engine. For custom engines and instrumented tests.
    pub fn with_backend(backend: Box<dyn Backend>, config: Config) -> Result<Store> {
        config.validate()?;
        Ok(Self::from_parts(backend, None, config))
    }

    /// Opens (or creates) a store of the given backend at `path` (ignored for `Memory`).
    pub fn open_backend(
        kind: BackendKind,
        path: impl AsRef<Path>,
        config: Config,
    ) -> Result<Store> {
        config.validate()?;
        if kind == BackendKind::Memory {
            return Self::memory_with(config);
        }
        let cache = config.engine_cache_bytes;
        Self::open_with_backend(kind, path, config, |db_dir| {
            Ok(match kind {
                BackendKind::Sled => Box::new(SledBackend::open_with_cache(db_dir, cache)?),
                #[cfg(feature = "redb")]
                BackendKind::Redb => Box::new(crate::backend::RedbBackend::open(db_dir)?),
                #[cfg(not(feature = "redb"))]
                BackendKind::Redb => {
                    return Err(Error::invalid(
                        "backend",
                        "this build of Cairn has no redb backend; build with the `redb` feature",
                    ))
                }
                BackendKind::Memory => unreachable!(),
            })
        })
    }

    /// Opens (or creates) a store at `path` whose engine `open_engine` opens in the given database
    /// folder (`<path>/db`), for example a wrapper around [`SledBackend`] that injects faults or
    /// counts calls. `kind` is the engine recorded in the store's marker. The folder checks,
    /// format checks and recovery steps are those of [`Store::open_backend`].
    pub fn open_with_backend(
        kind: BackendKind,
        path: impl AsRef<Path>,
        config: Config,
        open_engine: impl FnOnce(&Path) -> Result<Box<dyn Backend>>,
    ) -> Result<Store> {
        config.validate()?;
        let root = path.as_ref();
        let paths = Paths::new(root);
        prepare_dir(root, kind)?;
        let db_dir = root.join("db");
        let backend = open_engine(&db_dir)?;
        // The engine's lock is held now, so leftovers in tmp/ are from a dead process.
        for dir in [&paths.blobs, &paths.tmp] {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        if let Ok(rd) = fs::read_dir(&paths.tmp) {
            for e in rd.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        let format_key = Key::new(keys::META).bytes(b"format").build();
        match backend.get(&format_key)? {
            Some(v) => {
                let f = keys::u64_value(&v);
                if f != FORMAT_VERSION as u64 {
                    return Err(Error::NotAStore {
                        path: root.to_path_buf(),
                        message: format!(
                            "the records are format {f}; this Cairn reads format {FORMAT_VERSION}"
                        ),
                    });
                }
            }
            None => {
                backend.apply(vec![Op::Put(
                    format_key,
                    (FORMAT_VERSION as u64).to_be_bytes().to_vec(),
                )])?;
                backend.flush()?;
            }
        }
        let store = Self::from_parts(backend, Some(paths), config);
        Ok(store)
    }

    fn from_parts(backend: Box<dyn Backend>, paths: Option<Paths>, config: Config) -> Store {
        let interval = config.group_interval();
        let store = Store {
            inner: Arc::new(Inner {
                backend,
                paths,
                config,
                write: Mutex::new(WriteState::default()),
                pending: Mutex::new(HashMap::new()),
                hooks: Hooks::default(),
            }),
        };
        if let Some(every) = interval {
            let weak: Weak<Inner> = Arc::downgrade(&store.inner);
            std::thread::Builder::new()
                .name("cairn-flush".into())
                .spawn(move || loop {
                    std::thread::sleep(every);
                    match weak.upgrade() {
                        Some(inner) => {
                            let _ = inner.backend.flush();
                        }
                        None => return,
                    }
                })
                .ok();
        }
        store
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The store's folder, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.inner.paths.as_ref().map(|p| p.root.as_path())
    }

    /// The engine's name: `memory`, `sled` or `redb`.
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// Makes every write that returned before this call durable. See DESIGN.md, "Durability".
    pub fn flush(&self) -> Result<()> {
        self.inner.backend.flush()
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.inner.backend
    }

    pub(crate) fn lock(&self) -> Result<MutexGuard<'_, WriteState>> {
        self.inner.write.lock().map_err(|_| Error::Backend {
            message: "write lock poisoned by a panic in another thread".into(),
        })
    }

    pub(crate) fn tx<'a>(&'a self, state: &'a mut WriteState) -> Tx<'a> {
        Tx {
            store: self,
            state,
            ops: Vec::new(),
            overlay: HashMap::new(),
            counters: BTreeMap::new(),
            seqs: HashMap::new(),
            events: Vec::new(),
        }
    }

    /// Called after a commit, outside the write lock: durability per the configured mode.
    /// (Subscribers were already given the batch's events inside the lock.)
    pub(crate) fn after_commit(&self, _events: &[Event]) -> Result<()> {
        if self.inner.config.group_interval().is_none() {
            self.inner.backend.flush()?;
        }
        Ok(())
    }

    pub(crate) fn pin_pending(&self, hash: ContentHash) -> PendingGuard<'_> {
        if let Ok(mut p) = self.inner.pending.lock() {
            *p.entry(hash).or_insert(0) += 1;
        }
        PendingGuard { store: self, hash }
    }

    pub(crate) fn is_pending(&self, hash: &ContentHash) -> bool {
        self.inner
            .pending
            .lock()
            .map(|p| p.contains_key(hash))
            .unwrap_or(true)
    }

    /// Reads a counter (committed value).
    pub(crate) fn counter(&self, name: &[u8]) -> Result<i64> {
        Ok(self
            .backend()
            .get(&keys::counter(name))?
            .map(|v| keys::u64_value(&v) as i64)
            .unwrap_or(0))
    }

    /// Store-wide statistics, from counters kept in the same batches as the records.
    pub fn stats(&self) -> Result<Stats> {
        let mut sessions_by_status = BTreeMap::new();
        for s in crate::session::SessionStatus::ALL {
            let n = self.counter(format!("sessions.status.{}", s.as_str()).as_bytes())?;
            if n != 0 {
                sessions_by_status.insert(s.as_str().to_string(), n as u64);
            }
        }
        let mut artifacts_by_kind = BTreeMap::new();
        let prefix = keys::counter(b"artifacts.kind.");
        for e in crate::backend::RangeIter::prefix(self.backend(), &prefix, false) {
            let (k, v) = e?;
            let n = keys::u64_value(&v);
            if n != 0 {
                let kind = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                artifacts_by_kind.insert(kind, n);
            }
        }
        let logical = self.counter(b"logical_bytes")? as u64;
        let stored = self.counter(b"stored_bytes")? as u64;
        let content = self.counter(b"content_bytes")? as u64;
        Ok(Stats {
            sessions: self.counter(b"sessions")? as u64,
            sessions_by_status,
            artifacts: self.counter(b"artifacts")? as u64,
            artifacts_by_kind,
            blobs: self.counter(b"blobs")? as u64,
            logical_bytes: logical,
            content_bytes: content,
            stored_bytes: stored,
            dedup_ratio: ratio(logical, content),
            compression_ratio: ratio(content, stored),
        })
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// Store-wide statistics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stats {
    /// Number of sessions.
    pub sessions: u64,
    /// Sessions by status name.
    pub sessions_by_status: BTreeMap<String, u64>,
    /// Number of artifacts.
    pub artifacts: u64,
    /// Artifacts by kind name.
    pub artifacts_by_kind: BTreeMap<String, u64>,
    /// Distinct stored blobs (including unreferenced ones not yet collected).
    pub blobs: u64,
    /// Sum of artifact sizes.
    pub logical_bytes: u64,
    /// Sum of distinct blob sizes before compression.
    pub content_bytes: u64,
    /// Sum of distinct blob sizes as stored (after dedup and compression).
    pub stored_bytes: u64,
    /// logical_bytes / content_bytes.
    pub dedup_ratio: f64,
    /// content_bytes / stored_bytes.
    pub compression_ratio: f64,
}

/// Keeps a content hash marked as "about to be referenced" until dropped.
pub(crate) struct PendingGuard<'a> {
    store: &'a Store,
    hash: ContentHash,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut p) = self.store.inner.pending.lock() {
            if let Some(n) = p.get_mut(&self.hash) {
                *n -= 1;
                if *n == 0 {
                    p.remove(&self.hash);
                }
            }
        }
    }
}

/// One atomic batch under the write lock. Reads see the batch's own writes.
pub(crate) struct Tx<'a> {
    pub(crate) store: &'a Store,
    state: &'a mut WriteState,
    ops: Vec<Op>,
    overlay: HashMap<Vec<u8>, Option<Vec<u8>>>,
    counters: BTreeMap<Vec<u8>, i64>,
    seqs: HashMap<SessionId, u64>,
    events: Vec<Event>,
}

impl Tx<'_> {
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.store.backend().get(key),
        }
    }

    /// Whether this batch deleted `key`.
    pub(crate) fn deleted(&self, key: &[u8]) -> bool {
        self.overlay.get(key).is_some_and(Option::is_none)
    }

    pub(crate) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.insert(key.clone(), Some(value.clone()));
        self.ops.push(Op::Put(key, value));
    }

    pub(crate) fn del(&mut self, key: Vec<u8>) {
        self.overlay.insert(key.clone(), None);
        self.ops.push(Op::Delete(key));
    }

    pub(crate) fn add(&mut self, counter: impl AsRef<[u8]>, delta: i64) {
        *self.counters.entry(counter.as_ref().to_vec()).or_insert(0) += delta;
    }

    /// The committed-plus-pending value of a counter.
    pub(crate) fn counter(&mut self, counter: &[u8]) -> Result<i64> {
        let base = self.base_counter(counter)?;
        Ok(base + self.counters.get(counter).copied().unwrap_or(0))
    }

    fn base_counter(&mut self, counter: &[u8]) -> Result<i64> {
        if let Some(v) = self.state.counters.get(counter) {
            return Ok(*v);
        }
        let v = self
            .store
            .backend()
            .get(&keys::counter(counter))?
            .map(|v| keys::u64_value(&v) as i64)
            .unwrap_or(0);
        self.state.counters.insert(counter.to_vec(), v);
        Ok(v)
    }

    /// Appends an event to a session's log in this batch.
    pub(crate) fn event(&mut self, session_id: SessionId, kind: EventKind) -> Result<Event> {
        let seq = match self.seqs.get(&session_id) {
            Some(s) => *s,
            None => match self.state.next_seq.get(&session_id) {
                Some(s) => *s,
                None => {
                    let prefix = Key::new(keys::EVENT).sid(&session_id).build();
                    let last = self.store.backend().scan(
                        &prefix,
                        &crate::backend::prefix_end(&prefix),
                        true,
                        1,
                    )?;
                    match last.first() {
                        Some((k, _)) if k.len() == prefix.len() + 8 => {
                            keys::u64_value(&k[prefix.len()..]) + 1
                        }
                        _ => 1,
                    }
                }
            },
        };
        self.seqs.insert(session_id, seq + 1);
        let ev = Event {
            session_id,
            seq,
            at: chrono::Utc::now(),
            kind,
        };
        self.put(
            Key::new(keys::EVENT).sid(&session_id).u64(seq).build(),
            keys::encode(&ev),
        );
        self.events.push(ev.clone());
        Ok(ev)
    }

    /// Forgets the cached event sequence of a session (it is being deleted).
    pub(crate) fn forget_session(&mut self, id: &SessionId) {
        self.seqs.remove(id);
        self.state.next_seq.remove(id);
    }

    /// Applies the batch atomically and returns the events it wrote.
    pub(crate) fn commit(mut self) -> Result<Vec<Event>> {
        let mut finals = Vec::with_capacity(self.counters.len());
        let deltas = std::mem::take(&mut self.counters);
        for (name, delta) in deltas {
            if delta == 0 {
                continue;
            }
            let v = self.base_counter(&name)? + delta;
            self.ops.push(Op::Put(
                keys::counter(&name),
                (v.max(0) as u64).to_be_bytes().to_vec(),
            ));
            finals.push((name, v));
        }
        if !self.ops.is_empty() {
            let ops = std::mem::take(&mut self.ops);
            if let Err(e) = self.store.backend().apply(ops) {
                // The cached counters may now disagree with a partially failed engine: reload later.
                self.state.counters.clear();
                self.state.next_seq.clear();
                return Err(e);
            }
        }
        for (name, v) in finals {
            self.state.counters.insert(name, v);
        }
        for (sid, s) in self.seqs.drain() {
            self.state.next_seq.insert(sid, s);
        }
        self.store.inner.hooks.hub.publish(&self.events);
        Ok(std::mem::take(&mut self.events))
    }
}

/// Checks or initialises the store folder and its `CAIRN` marker.
fn prepare_dir(root: &Path, kind: BackendKind) -> Result<()> {
    let not_store = |message: String| Error::NotAStore {
        path: root.to_path_buf(),
        message,
    };
    if root.exists() && !root.is_dir() {
        return Err(not_store(
            "it is a file, not a store folder; pass a folder path (created if missing)".into(),
        ));
    }
    let marker = root.join(MARKER);
    if marker.exists() {
        let bytes = fs::read(&marker).map_err(|e| Error::io(&marker, e))?;
        let m: Marker = serde_json::from_slice(&bytes).map_err(|_| {
            not_store(format!(
                "{} is not a Cairn marker file; this folder is not a Cairn store",
                marker.display()
            ))
        })?;
        if m.format > FORMAT_VERSION {
            return Err(not_store(format!(
                "it was written by a newer Cairn (format {}); this Cairn reads format {FORMAT_VERSION}: upgrade Cairn",
                m.format
            )));
        }
        if m.format < FORMAT_VERSION {
            return Err(not_store(format!(
                "it is format {}, which this Cairn cannot read (it reads format {FORMAT_VERSION})",
                m.format
            )));
        }
        if m.backend != kind {
            return Err(not_store(format!(
                "it is a {:?} store; open it with that backend",
                m.backend
            )));
        }
        if !root.join("db").exists() {
            return Err(not_store(
                "the marker is there but the database folder db/ is missing".into(),
            ));
        }
        return Ok(());
    }
    if root.exists() {
        let mut entries = fs::read_dir(root).map_err(|e| Error::io(root, e))?;
        if entries.next().is_some() {
            return Err(not_store(
                "the folder is not empty and has no CAIRN marker, so it is not a Cairn store; \
                 use an empty or new folder"
                    .into(),
            ));
        }
    }
    let db = root.join("db");
    fs::create_dir_all(&db).map_err(|e| Error::io(&db, e))?;
    let tmp = root.join(".CAIRN.tmp");
    let body = serde_json::to_vec(&Marker {
        format: FORMAT_VERSION,
        backend: kind,
    })
    .unwrap_or_default();
    fs::write(&tmp, body).map_err(|e| Error::io(&tmp, e))?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &marker).map_err(|e| Error::io(&marker, e))?;
    crate::content::sync_dir(root)?;
    Ok(())
}
