//! The store facade: opening, the write path's transaction, durability, statistics.

mod artifacts;
pub(crate) mod blobs;
mod checkpoints;
pub(crate) mod counters;
pub(crate) mod event_log;
mod gc;
mod integrity;
mod metrics;
mod query;
pub(crate) mod retention;
mod sessions;
mod subscriptions;
mod tx;
pub(crate) mod verify;

pub use self::artifacts::{Admin, ContentInfo};
pub use self::gc::GcReport;
pub use self::sessions::DeleteReport;
// For bundle import, which writes records with their indexes and counters directly.
use self::blobs::{BlobFiles, LocalFiles, Pins};
pub(crate) use self::blobs::{EncodedBytes, PendingGuard, Staged};
pub(crate) use self::checkpoints::RemapIds;
use self::tx::Acks;
use self::tx::WriteState;
pub(crate) use self::tx::{Tx, Writer};

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use serde::{Deserialize, Serialize};

pub use crate::backend::BackendKind;
use crate::backend::{Backend, MemoryBackend, Op, SledBackend};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys::{self, Key};

/// The largest artifact a store on PostgreSQL takes when its content lives inline in the
/// database ([`Store::open_postgres`]): PostgreSQL keeps a value in one field of at most 1 GB,
/// and such a put holds the content in memory. With content on an object store
/// (`Store::open_postgres_s3`, feature `s3`) puts are spooled to disk and this cap does not apply.
#[cfg(feature = "postgres")]
pub const POSTGRES_MAX_ARTIFACT_SIZE: u64 = 256 << 20;

/// The on-disk format this version writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const MARKER: &str = "CAIRN";

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

pub(crate) struct Inner {
    backend: Box<dyn Backend>,
    pub(crate) paths: Option<Paths>,
    pub(crate) config: Config,
    write: Mutex<WriteState>,
    /// Where large blobs' files live (`None`: in memory, all content inline).
    pub(crate) files: Option<Box<dyn BlobFiles>>,
    /// Content hashes a write is about to reference: GC leaves their blobs and files alone.
    pub(crate) pins: Pins,
    /// Committed batches waiting for the flush that acknowledges them.
    pub(crate) acks: Acks,
    /// Subscriptions, offered each batch's events once it is durable, in commit order.
    pub(crate) hub: crate::subscribe::Hub,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = Store::flush_and_publish(self);
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
    /// Opens (or creates) the store at `path` with the default configuration. A new store gets
    /// the default engine ([`BackendKind::default_engine`]); an existing one opens with the engine
    /// recorded in its marker.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        Self::open_with(path, Config::default())
    }

    /// Opens (or creates) the store at `path`. A new store is created with `config.engine`; an
    /// existing store always opens with the engine recorded in its `CAIRN` marker, whatever
    /// `config.engine` says. `config.engine = memory` gives an in-memory store (nothing on disk).
    pub fn open_with(path: impl AsRef<Path>, config: Config) -> Result<Store> {
        let root = path.as_ref();
        let kind = read_marker(root)?.map_or(config.engine, |m| m.backend);
        Self::open_backend(kind, root, config)
    }

    /// Opens the existing store at `path` to read: for commands that only read (a query, a
    /// listing, a `get`). On redb (the default engine) nothing is written to the store, not even
    /// the engine's own open and close bookkeeping, which on a large store costs a short command
    /// more than its query (BENCHMARKS.md, workload 11); several readers may open the store at
    /// once, and a write through this handle is an error that says to open it with
    /// [`Store::open`]. Where there is no such mode (another engine, or a redb file that was not
    /// closed cleanly and needs a writer's repair first), this is [`Store::open_with`].
    pub fn open_read_only(path: impl AsRef<Path>, config: Config) -> Result<Store> {
        let root = path.as_ref();
        #[cfg(feature = "redb")]
        if let Some(store) = Self::open_redb_read_only(root, &config)? {
            return Ok(store);
        }
        Self::open_with(root, config)
    }

    /// [`Store::open_read_only`] on a redb store in its engine's read-only mode, or `None` when
    /// that mode does not apply (not a redb store of this format, or a file needing repair).
    #[cfg(feature = "redb")]
    fn open_redb_read_only(root: &Path, config: &Config) -> Result<Option<Store>> {
        config.validate()?;
        let Some(m) = read_marker(root)? else {
            return Ok(None);
        };
        if m.backend != BackendKind::Redb || m.format != FORMAT_VERSION {
            return Ok(None);
        }
        let Ok(backend) = crate::backend::RedbBackend::open_read_only(&root.join("db")) else {
            return Ok(None);
        };
        let format_key = Key::new(keys::META).bytes(b"format").build();
        match backend.get(&format_key)? {
            Some(v) if keys::u64_value(&v) == FORMAT_VERSION as u64 => {}
            _ => return Ok(None),
        }
        Ok(Some(Self::from_parts(
            Box::new(backend),
            Some(Paths::new(root)),
            config.clone(),
        )))
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
        if !kind.is_compiled() {
            return Err(kind.not_compiled());
        }
        let cache = config.engine_cache_bytes;
        Self::open_with_backend(kind, path, config, |db_dir| {
            Ok(match kind {
                BackendKind::Sled => Box::new(SledBackend::open_with_cache(db_dir, cache)?),
                #[cfg(feature = "redb")]
                BackendKind::Redb => Box::new(crate::backend::RedbBackend::open(db_dir)?),
                #[cfg(feature = "fjall")]
                BackendKind::Fjall => Box::new(crate::backend::FjallBackend::open_with_cache(
                    db_dir, cache,
                )?),
                other => return Err(other.not_compiled()),
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
        let mut backend = open_engine(&db_dir)?;
        if config.group_interval().is_some() && !backend.is_shared() {
            // Group commit: batches reach the engine once per flush (backend/buffered.rs).
            backend = Box::new(crate::backend::Buffered::new(backend));
        }
        // The engine's lock is held now, so leftovers in tmp/ are from a dead process.
        for dir in [&paths.blobs, &paths.tmp] {
            fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        if let Ok(rd) = fs::read_dir(&paths.tmp) {
            for e in rd.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        check_format(&*backend).map_err(|message| Error::NotAStore {
            path: root.to_path_buf(),
            message,
        })??;
        let store = Self::from_parts(backend, Some(paths), config);
        Ok(store)
    }

    /// Opens (or creates) the store held in the PostgreSQL database at `url` under `namespace`
    /// (one table per namespace: a tenant), for several processes to share (feature
    /// `postgres`). Content lives in the database with the records (inline) in this build, so
    /// `limits.max_artifact_size` is lowered to [`POSTGRES_MAX_ARTIFACT_SIZE`] if it is above:
    /// a larger put gets `limit_exceeded`. See DESIGN.md, "Beyond one machine".
    #[cfg(feature = "postgres")]
    pub fn open_postgres(url: &str, namespace: &str, config: Config) -> Result<Store> {
        let mut config = config;
        config.limits.max_artifact_size = config
            .limits
            .max_artifact_size
            .min(POSTGRES_MAX_ARTIFACT_SIZE);
        config.validate()?;
        let backend = crate::backend::PostgresBackend::connect(url, namespace)?;
        check_format(&backend).map_err(|message| Error::Backend {
            message: format!("PostgreSQL namespace {namespace:?}: {message}"),
        })??;
        Ok(Self::from_parts(Box::new(backend), None, config))
    }

    /// Opens the store held in PostgreSQL at `url` under `namespace`, with its content on an
    /// S3-compatible object store (features `postgres` and `s3`): the deployment of several
    /// `cairn serve` processes sharing one database and one bucket. Records stay in
    /// PostgreSQL; content of at least `inline_threshold` encoded bytes goes to objects under
    /// `<prefix>/<namespace>/blobs/`. A large put is spooled to a local temporary file
    /// ([`crate::S3Config::spool_dir`]) and uploaded from it, so `limits.max_artifact_size`
    /// applies as configured (no [`POSTGRES_MAX_ARTIFACT_SIZE`] cap). See DESIGN.md, "Content
    /// on object storage".
    #[cfg(all(feature = "postgres", feature = "s3"))]
    pub fn open_postgres_s3(
        url: &str,
        namespace: &str,
        content: &crate::S3Config,
        config: Config,
    ) -> Result<Store> {
        config.validate()?;
        let files = crate::content_store::ObjectFiles::open(content, namespace)?;
        let backend = crate::backend::PostgresBackend::connect(url, namespace)?;
        check_format(&backend).map_err(|message| Error::Backend {
            message: format!("PostgreSQL namespace {namespace:?}: {message}"),
        })??;
        Ok(Self::from_files(
            Box::new(backend),
            None,
            Some(Box::new(files)),
            config,
        ))
    }

    /// A store over any engine, with its content on an S3-compatible object store under
    /// `<prefix>/<namespace>/blobs/` (feature `s3`). Several processes may share the content
    /// only if they share the engine too (PostgreSQL: [`Store::open_postgres_s3`]); this
    /// constructor is for tests and custom engines.
    #[cfg(feature = "s3")]
    pub fn with_backend_s3(
        backend: Box<dyn Backend>,
        namespace: &str,
        content: &crate::S3Config,
        config: Config,
    ) -> Result<Store> {
        config.validate()?;
        let files = crate::content_store::ObjectFiles::open(content, namespace)?;
        Ok(Self::from_files(
            backend,
            None,
            Some(Box::new(files)),
            config,
        ))
    }

    fn from_parts(backend: Box<dyn Backend>, paths: Option<Paths>, config: Config) -> Store {
        let files = paths.as_ref().map(|p| {
            Box::new(LocalFiles::new(p.blobs.clone(), p.tmp.clone())) as Box<dyn BlobFiles>
        });
        Self::from_files(backend, paths, files, config)
    }

    fn from_files(
        backend: Box<dyn Backend>,
        paths: Option<Paths>,
        files: Option<Box<dyn BlobFiles>>,
        config: Config,
    ) -> Store {
        let interval = config.group_interval();
        let store = Store {
            inner: Arc::new(Inner {
                backend,
                paths,
                config,
                write: Mutex::new(WriteState::default()),
                files,
                pins: Pins::default(),
                acks: Acks::default(),
                hub: crate::subscribe::Hub::default(),
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
                            let _ = Store::flush_and_publish(&inner);
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

    /// The engine's name: `memory`, `sled`, `redb` or `fjall`.
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// Makes every write that returned before this call durable. See DESIGN.md, "Durability".
    /// Subscribers receive the events of those writes once this returns.
    pub fn flush(&self) -> Result<()> {
        Self::flush_and_publish(&self.inner)
    }

    pub(crate) fn backend(&self) -> &dyn Backend {
        &*self.inner.backend
    }

    /// Up to `limit` of the engine's raw entries with `start <= key < end` (an empty `end`
    /// means no upper bound), in key order. Read-only. For benchmarks and diagnostics that
    /// measure what the store writes (engine keys and bytes per artifact) or replay it into a
    /// bare engine as a baseline; the key layout and record encoding are private to Cairn and
    /// change between releases, so never build on them.
    pub fn engine_scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<crate::backend::Entry>> {
        self.backend().scan(start, end, false, limit)
    }

    /// Reads a counter (committed value).
    pub(crate) fn counter(&self, name: &[u8]) -> Result<i64> {
        match self.backend().get(&keys::counter(name))? {
            Some(v) => counters::decode(name, &v),
            None => Ok(0),
        }
    }

    /// Store-wide statistics, from counters kept in the same batches as the records.
    pub fn stats(&self) -> Result<Stats> {
        let mut sessions_by_status = BTreeMap::new();
        for s in crate::session::SessionStatus::ALL {
            let n = self.counter(&counters::sessions_in(s))?;
            if n != 0 {
                sessions_by_status.insert(s.as_str().to_string(), n as u64);
            }
        }
        let mut artifacts_by_kind = BTreeMap::new();
        let prefix = keys::counter(counters::KIND_PREFIX);
        for e in crate::backend::RangeIter::prefix(self.backend(), &prefix, false) {
            let (k, v) = e?;
            let n = counters::decode(&k[1..], &v)? as u64;
            if n != 0 {
                let kind = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                artifacts_by_kind.insert(kind, n);
            }
        }
        let logical = self.counter(counters::LOGICAL_BYTES)? as u64;
        let stored = self.counter(counters::STORED_BYTES)? as u64;
        let content = self.counter(counters::CONTENT_BYTES)? as u64;
        Ok(Stats {
            sessions: self.counter(counters::SESSIONS)? as u64,
            sessions_by_status,
            artifacts: self.counter(counters::ARTIFACTS)? as u64,
            artifacts_by_kind,
            blobs: self.counter(counters::BLOBS)? as u64,
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

/// Checks the records' format version, or records it in a new store. The outer error is a
/// format mismatch (its message), the inner one the engine's.
fn check_format(backend: &dyn Backend) -> std::result::Result<Result<()>, String> {
    let format_key = Key::new(keys::META).bytes(b"format").build();
    let got = match backend.get(&format_key) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    Ok(match got {
        Some(v) => {
            let f = keys::u64_value(&v);
            if f != FORMAT_VERSION as u64 {
                return Err(format!(
                    "the records are format {f}; this Cairn reads format {FORMAT_VERSION}"
                ));
            }
            Ok(())
        }
        None => backend
            .apply(vec![Op::Put(
                format_key,
                (FORMAT_VERSION as u64).to_be_bytes().to_vec(),
            )])
            .and_then(|()| backend.flush()),
    })
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
    if let Some(m) = read_marker(root)? {
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
                "it is a {} store (its CAIRN marker says so); open it with that engine, or with \
                 `Store::open`, which uses the engine in the marker",
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
    let marker = root.join(MARKER);
    let body = serde_json::to_vec(&Marker {
        format: FORMAT_VERSION,
        backend: kind,
    })
    .unwrap_or_default();
    crate::fsutil::atomic_write(root, &marker, &body)?;
    Ok(())
}

/// The store's `CAIRN` marker, or `None` where there is none (a new or empty folder).
fn read_marker(root: &Path) -> Result<Option<Marker>> {
    let marker = root.join(MARKER);
    if !marker.is_file() {
        return Ok(None);
    }
    let bytes = fs::read(&marker).map_err(|e| Error::io(&marker, e))?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|_| Error::NotAStore {
            path: root.to_path_buf(),
            message: format!(
                "{} is not a Cairn marker file (or names an engine this Cairn does not know); \
                 this folder is not a Cairn store of this version",
                marker.display()
            ),
        })
}
