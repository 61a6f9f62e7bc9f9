//! The engine behind [`Store::verify`] and [`Store::repair`].
//!
//! One pass under the write lock walks every table and file that carries meaning and compares it
//! with what the primary records (sessions, artifacts, blob records) say must exist. Each
//! difference becomes a [`Problem`] for the report and, where the records allow it, a fix in a
//! [`Plan`] that `repair` applies. The expected index entries are produced by the write path's own
//! functions (`write_session_indexes`, `write_artifact_indexes`) run into a scratch batch that is
//! never committed, so the check cannot drift from what puts actually write.
//!
//! Memory: one reference count per distinct blob and one expected value per counter; never the
//! artifact records themselves. The `l` (latest version) keys of older stores are retired and
//! not checked: nothing reads them (the last `n` entry of a name is its latest version).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::verify::{Problem, RepairReport, VerifyReport};
use super::{counters, Store, Writer};
use crate::artifact::Artifact;
use crate::backend::{prefix_end, Op, RangeIter};
use crate::content::{self, BlobMeta, Codec};
use crate::error::{Error, Result};
use crate::ids::{ArtifactId, ContentHash, SessionId};
use crate::keys;
use crate::session::Session;

/// Problem kinds, as they appear in [`Problem::kind`].
pub(crate) mod kind {
    /// Content does not hash to its name, cannot be decoded, or has the wrong length.
    pub const HASH_MISMATCH: &str = "hash_mismatch";
    /// A blob's bytes (inline value or file) are not there.
    pub const MISSING_BLOB: &str = "missing_blob";
    /// A blob file's length differs from its record's stored size.
    pub const STORED_SIZE: &str = "stored_size";
    /// An artifact's size differs from its blob's size.
    pub const SIZE_MISMATCH: &str = "size_mismatch";
    /// A blob's reference count differs from the references in the records.
    pub const REFCOUNT: &str = "refcount";
    /// A garbage-list entry is missing, or present for a blob that is referenced or gone.
    pub const GARBAGE_ENTRY: &str = "garbage_entry";
    /// An index entry whose record does not exist or does not produce it.
    pub const DANGLING_INDEX: &str = "dangling_index";
    /// An index entry a record needs is missing or holds the wrong value.
    pub const MISSING_INDEX: &str = "missing_index";
    /// A record that does not decode.
    pub const CORRUPT_RECORD: &str = "corrupt_record";
    /// An artifact whose session does not exist.
    pub const ORPHAN_ARTIFACT: &str = "orphan_artifact";
    /// Inline blob bytes no inline blob record claims.
    pub const ORPHAN_INLINE_DATA: &str = "orphan_inline_data";
    /// A stored preview (issue 13) of content that has no blob record.
    pub const ORPHAN_PREVIEW: &str = "orphan_preview";
    /// A store-wide counter differs from the records.
    pub const COUNTER: &str = "counter";
    /// Records this version of `verify` cannot count references from (reference counts are then
    /// checked only as lower bounds and `repair` never lowers one).
    pub const UNCOUNTED_REFERENCES: &str = "uncounted_references";
}

/// What `repair` will do.
#[derive(Default)]
pub(crate) struct Plan {
    /// Key writes and deletes that rebuild indexes, reference counts and garbage entries.
    ops: Vec<Op>,
    /// Counters to set: name -> correct value.
    counters: BTreeMap<Vec<u8>, i64>,
    /// Blob files to move into `quarantine/` (with the hash, to re-check pins at the move).
    files: Vec<(ContentHash, PathBuf)>,
    /// Keys whose values are moved into `quarantine/records/` and then deleted.
    records: Vec<Vec<u8>>,
    /// Blob records (format 2) whose inline bytes are corrupt: the record is copied into
    /// `quarantine/records/` and rewritten without its bytes (the content is then missing).
    strip: Vec<Vec<u8>>,
    /// Corrupt objects on a shared object store (no store folder): moved aside by the blob
    /// layer into `<prefix>/<namespace>/quarantine/`.
    objects: Vec<(ContentHash, Codec)>,
    /// Content whose file or object is missing or corrupt but that has another good copy.
    restores: Vec<Restore>,
    /// The stored-bytes total the records give (restores that change a blob's stored size
    /// set the counter from it).
    stored_bytes: i64,
}

impl Plan {
    /// Whether repair restores the content of `hash` from another copy.
    pub(crate) fn restores(&self, hash: &ContentHash) -> bool {
        self.restores.iter().any(|r| r.hash == *hash)
    }
}

/// A good copy of content whose blob file or object is missing or corrupt, found (and
/// verified against the content hash) by `verify`; `repair` makes it the blob's file again.
struct Restore {
    hash: ContentHash,
    /// The blob's record as `verify` read it.
    meta: BlobMeta,
    source: CopySource,
    /// The codec the copy's bytes are encoded with.
    codec: Codec,
}

enum CopySource {
    /// The blob's bytes under its `D` key in the engine (left by an earlier inline record):
    /// uploaded as the blob's file.
    Inline,
    /// The blob's file or object in the other encoding (written by a store with other
    /// compression settings): the record is pointed at it, no upload needed.
    OtherEncoding,
}

/// The result of one checking pass.
pub(crate) struct Checked {
    pub(crate) report: VerifyReport,
    pub(crate) plan: Plan,
}

/// Tables that index sessions; for each, how to find the owning session id in an entry.
const SESSION_INDEXES: [(u8, Owner); 5] = [
    (keys::SESSION_KEY, Owner::Value),
    (keys::CHILD, Owner::Tail),
    (keys::ROOT, Owner::Tail),
    (keys::SESSION_STATUS, Owner::Tail),
    (keys::SESSION_TAG, Owner::Tail),
];

/// Tables that index artifacts; for each, how to find the owning artifact id in an entry.
const ARTIFACT_INDEXES: [(u8, Owner); 7] = [
    (keys::SESSION_ARTIFACT, Owner::Tail),
    (keys::NAME_VERSION, Owner::Value),
    (keys::KIND, Owner::Tail),
    (keys::TAG, Owner::Tail),
    (keys::SIZE, Owner::Tail),
    (keys::NAME, Owner::Tail),
    (keys::RNAME, Owner::Tail),
];

#[derive(Clone, Copy)]
enum Owner {
    /// The owner id is the entry's value.
    Value,
    /// The owner id is the last 16 bytes of the key.
    Tail,
}

/// Counter names `verify` knows how to recompute (exact names and prefixes). Counters other
/// modules add under other names are left alone.
const EXACT_COUNTERS: [&[u8]; 6] = [
    counters::SESSIONS,
    counters::ARTIFACTS,
    counters::BLOBS,
    counters::LOGICAL_BYTES,
    counters::STORED_BYTES,
    counters::CONTENT_BYTES,
];
const COUNTER_PREFIXES: [&[u8]; 3] = [
    counters::STATUS_PREFIX,
    counters::KIND_PREFIX,
    counters::SESSION_ARTIFACTS_PREFIX,
];

fn known_counter(name: &[u8]) -> bool {
    EXACT_COUNTERS.contains(&name) || COUNTER_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn counter_label(name: &[u8]) -> String {
    match name.strip_prefix(counters::SESSION_ARTIFACTS_PREFIX) {
        Some(rest) => match SessionId::from_slice(rest) {
            Ok(sid) => format!("artifacts of session {sid}"),
            Err(_) => format!("sa.{}", hex(rest)),
        },
        None => String::from_utf8_lossy(name).into_owned(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A readable form of a key for messages: its table letter and hex.
fn key_label(k: &[u8]) -> String {
    match k.split_first() {
        Some((t, rest)) if t.is_ascii_graphic() => {
            let shown = &rest[..rest.len().min(48)];
            format!("{}:{}", *t as char, hex(shown))
        }
        _ => hex(&k[..k.len().min(49)]),
    }
}

fn problem(
    kind: &str,
    hash: Option<ContentHash>,
    artifacts: Vec<ArtifactId>,
    message: String,
) -> Problem {
    Problem {
        kind: kind.to_string(),
        hash,
        artifacts,
        message,
    }
}

impl Store {
    /// The index entries (key, value) the write path creates for a session record, excluding
    /// the record itself.
    fn session_entries(&self, s: &Session) -> Vec<(Vec<u8>, Vec<u8>)> {
        super::sessions::session_index_entries(s)
    }

    /// The index entries (key, value) and counter deltas the write path creates for an artifact
    /// record, excluding the record itself.
    #[allow(clippy::type_complexity)]
    fn artifact_entries(&self, a: &Artifact) -> (Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, i64)>) {
        let entries = super::artifacts::artifact_index_entries(a);
        let counters = super::artifacts::artifact_counter_deltas(a)
            .into_iter()
            .collect();
        (entries, counters)
    }

    /// Adds to `refs` the blob references held by records other than artifacts, and returns
    /// whether every such record was counted.
    ///
    /// This is the one place to add a table that references blobs (checkpoints, retention
    /// snapshots...): decode its records and add one to `refs` per referenced hash, exactly as its
    /// write path calls `retain_blob`. A record that cannot be decoded makes this
    /// return `false`, which turns reference-count checks into lower-bound checks and stops
    /// `repair` from lowering any count (lowering a count it cannot see would let GC delete
    /// content a checkpoint still needs).
    pub(crate) fn sum_extension_references(
        &self,
        refs: &mut HashMap<ContentHash, u64>,
    ) -> Result<bool> {
        self.checkpoint_blob_refs(refs)
    }

    /// Runs every check. The caller holds the write lock.
    pub(crate) fn check_integrity(&self) -> Result<Checked> {
        let mut c = Checker {
            store: self,
            report: VerifyReport::default(),
            plan: Plan::default(),
            refs: HashMap::new(),
            counters: BTreeMap::new(),
            lost: BTreeMap::new(),
        };
        for name in EXACT_COUNTERS {
            c.counters.insert(name.to_vec(), 0);
        }
        c.sessions()?;
        c.session_indexes()?;
        c.artifacts()?;
        c.artifact_indexes()?;
        let all_counted = self.sum_extension_references(&mut c.refs)?;
        if !all_counted {
            c.report.problems.push(problem(
                kind::UNCOUNTED_REFERENCES,
                None,
                Vec::new(),
                "checkpoint records exist whose blob references this version of verify does not \
                 count; reference counts were checked as lower bounds only and repair will not \
                 lower any"
                    .into(),
            ));
        }
        c.blobs(all_counted)?;
        c.inline_data()?;
        c.garbage()?;
        c.previews()?;
        c.orphan_files()?;
        c.plan.stored_bytes = c.counters.get(counters::STORED_BYTES).copied().unwrap_or(0);
        c.find_copies()?;
        c.check_counters()?;
        c.report_lost();
        c.fill_affected()?;
        c.report.ok = c.report.problems.is_empty();
        Ok(Checked {
            report: c.report,
            plan: c.plan,
        })
    }

    /// Applies a plan under the write lock (held by the caller through `state`). Returns what
    /// was done.
    pub(crate) fn apply_plan(
        &self,
        w: &mut Writer<'_>,
        plan: Plan,
        report: &mut RepairReport,
    ) -> Result<()> {
        // Content with another good copy first (that copy may be an orphan file the next step
        // would move aside): it becomes the blob's file again, and its record says so.
        let mut ops = plan.ops;
        let mut restored: Vec<(ContentHash, Codec)> = Vec::new();
        let mut stored_delta = 0i64;
        for r in &plan.restores {
            let new_size = self.restore_copy(r, &mut report.quarantined)?;
            let key = keys::blob(&r.hash);
            // A reference-count fix of the same record, if any, has the right count.
            let refs = ops
                .iter()
                .rev()
                .find_map(|op| match op {
                    Op::Put(k, v) if *k == key => BlobMeta::decode(v).ok().map(|m| m.refs),
                    _ => None,
                })
                .unwrap_or(r.meta.refs);
            let m = BlobMeta {
                codec: r.codec,
                inline: false,
                size: r.meta.size,
                stored_size: new_size,
                refs,
            };
            ops.push(Op::Put(key, m.encode()));
            stored_delta += new_size as i64 - r.meta.stored_size as i64;
            restored.push((r.hash, r.codec));
            report.restored.push(r.hash);
        }
        let mut counters = plan.counters;
        if stored_delta != 0 {
            counters.insert(
                counters::STORED_BYTES.to_vec(),
                plan.stored_bytes + stored_delta,
            );
        }
        // Files next: a corrupt or orphaned file is moved aside, never deleted.
        if let Some(paths) = &self.inner.paths {
            for (hash, path) in &plan.files {
                let now_claimed = restored
                    .iter()
                    .any(|(h, c)| h == hash && content::blob_path(&paths.blobs, h, *c) == *path);
                if now_claimed {
                    continue; // the good copy a restore just made the blob's file
                }
                if let Some(dest) = self.quarantine_file(&paths.quarantine, hash, path)? {
                    report.quarantined.push(dest.display().to_string());
                }
            }
        }
        // Corrupt objects on an object store: moved aside by the blob layer.
        if let Some(files) = &self.inner.files {
            for (hash, codec) in &plan.objects {
                if restored.contains(&(*hash, *codec)) {
                    continue;
                }
                if let Some(dest) = files.quarantine(hash, *codec)? {
                    report.quarantined.push(dest);
                }
            }
        }
        // Undecodable records and orphaned inline bytes: copy the value aside, then delete.
        for key in plan.records {
            if let Some(value) = self.backend().get(&key)? {
                let dest = self.quarantine_record(&key, &value)?;
                if let Some(d) = dest {
                    report.quarantined.push(d.display().to_string());
                }
                ops.push(Op::Delete(key));
            }
        }
        report.index_entries_fixed = ops
            .iter()
            .filter(|op| {
                let k = match op {
                    Op::Put(k, _) | Op::Delete(k) => k,
                };
                k.first().is_some_and(|t| {
                    ![keys::BLOB, keys::GARBAGE, keys::BLOB_DATA, keys::PREVIEW].contains(t)
                })
            })
            .count() as u64;
        report.refcounts_fixed = ops
            .iter()
            .filter(|op| matches!(op, Op::Put(k, _) if k.first() == Some(&keys::BLOB)))
            .count() as u64;
        // Corrupt inline bytes inside a blob record: keep a copy, then drop the bytes (the
        // record stays, so counts hold; reads then fail with "content missing").
        for key in plan.strip {
            if let Some(value) = self.backend().get(&key)? {
                if let Some(d) = self.quarantine_record(&key, &value)? {
                    report.quarantined.push(d.display().to_string());
                }
                // A reference-count fix of the same record, if any, has the right count.
                let fixed = ops.iter().rev().find_map(|op| match op {
                    Op::Put(k, v) if *k == key => Some(v.clone()),
                    _ => None,
                });
                let m = BlobMeta::decode(fixed.as_deref().unwrap_or(&value))?;
                ops.push(Op::Put(key, m.encode()));
            }
        }
        // Bounded batches; each is atomic, and a crash between them leaves a store that a second
        // repair finishes.
        let mut iter = ops.into_iter().peekable();
        while iter.peek().is_some() {
            let chunk: Vec<Op> = iter.by_ref().take(2048).collect();
            w.batch(|tx| {
                for op in &chunk {
                    match op {
                        Op::Put(k, v) => tx.put(k.clone(), v.clone()),
                        Op::Delete(k) => tx.del(k.clone()),
                    }
                }
                Ok(())
            })?;
        }
        if !counters.is_empty() {
            w.batch(|tx| {
                for (name, want) in &counters {
                    // Overwritten, not adjusted: the stored value may be undecodable.
                    tx.set_counter(name, *want)?;
                }
                Ok(())
            })?;
        }
        self.flush()
    }

    /// Makes a verified good copy the blob's file again; returns its stored size. The missing
    /// or corrupt file is moved aside first when the copy goes to the same name.
    fn restore_copy(&self, r: &Restore, quarantined: &mut Vec<String>) -> Result<u64> {
        let files = self
            .inner
            .files
            .as_ref()
            .ok_or(Error::ContentMissing { hash: r.hash })?;
        match r.source {
            CopySource::OtherEncoding => files
                .stored_len(&r.hash, r.codec)?
                .ok_or(Error::ContentMissing { hash: r.hash }),
            CopySource::Inline => {
                let bytes = self
                    .backend()
                    .get(&keys::blob_data(&r.hash))?
                    .ok_or(Error::ContentMissing { hash: r.hash })?;
                // Checked again: the engine may have changed since `verify` read it.
                if !verifies(
                    r.codec,
                    content::bytes_source(bytes.clone()),
                    r.hash,
                    r.meta.size,
                ) {
                    return Err(Error::Integrity {
                        hash: r.hash,
                        message: "its inline copy changed since it was checked; nothing was \
                                  restored, run `cairn verify --repair` again"
                            .into(),
                    });
                }
                if r.codec == r.meta.codec {
                    // The damaged file has the name the copy goes to: out of the way first.
                    if let Some(paths) = &self.inner.paths {
                        let p = content::blob_path(&paths.blobs, &r.hash, r.codec);
                        if let Some(dest) = self.quarantine_file(&paths.quarantine, &r.hash, &p)? {
                            quarantined.push(dest.display().to_string());
                        }
                    } else if let Some(dest) = files.quarantine(&r.hash, r.codec)? {
                        quarantined.push(dest);
                    }
                }
                files.write(&r.hash, r.codec, &bytes)?;
                Ok(bytes.len() as u64)
            }
        }
    }

    /// Moves a blob file into the quarantine folder. Returns where it went, or `None` if it was
    /// gone already.
    fn quarantine_file(
        &self,
        quarantine: &Path,
        hash: &ContentHash,
        path: &Path,
    ) -> Result<Option<PathBuf>> {
        if !path.exists() {
            return Ok(None);
        }
        fs::create_dir_all(quarantine).map_err(|e| Error::io(quarantine, e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| hash.to_hex());
        let dest = free_name(quarantine, &name);
        // Hold the pin set across the check and the move, as GC does: a put that stages this
        // hash outside the lock either pinned first (the file stays for it) or pins after the
        // move and, finding no usable file, writes its own.
        let moved = self.inner.pins.locked(|pins| {
            if pins.contains_key(hash) {
                return Ok(false);
            }
            fs::rename(path, &dest).map_err(|e| Error::io(path, e))?;
            Ok(true)
        })?;
        if !moved? {
            return Ok(None);
        }
        crate::fsutil::sync_dir(quarantine)?;
        if let Some(parent) = path.parent() {
            crate::fsutil::sync_dir(parent)?;
        }
        Ok(Some(dest))
    }

    /// Writes a record's key and value into `quarantine/records/`.
    fn quarantine_record(&self, key: &[u8], value: &[u8]) -> Result<Option<PathBuf>> {
        let Some(paths) = &self.inner.paths else {
            return Ok(None);
        };
        let dir = paths.quarantine.join("records");
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let stem = ContentHash::of(key).to_hex();
        let dest = free_name(&dir, &format!("{stem}.record"));
        let mut f = fs::File::create(&dest).map_err(|e| Error::io(&dest, e))?;
        // Layout: key length (u32 BE), key, value. Enough to put it back by hand.
        let mut body = Vec::with_capacity(4 + key.len() + value.len());
        body.extend_from_slice(&(key.len() as u32).to_be_bytes());
        body.extend_from_slice(key);
        body.extend_from_slice(value);
        f.write_all(&body)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(&dest, e))?;
        crate::fsutil::sync_dir(&dir)?;
        Ok(Some(dest))
    }
}

/// Whether `source`, decoded with `codec`, is the content of `hash` (`size` bytes). Streams:
/// bounded memory whatever the size.
fn verifies(codec: Codec, source: Box<dyn Read + Send + '_>, hash: ContentHash, size: u64) -> bool {
    content::decoder(codec, source)
        .and_then(|dec| {
            let mut r = content::ContentReader::new(dec, hash, size);
            io::copy(&mut r, &mut io::sink())
        })
        .is_ok()
}

/// A path in `dir` named `name`, or `name.1`, `name.2`... whichever does not exist yet.
fn free_name(dir: &Path, name: &str) -> PathBuf {
    let mut p = dir.join(name);
    let mut n = 1;
    while p.exists() {
        p = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    p
}

struct Checker<'a> {
    store: &'a Store,
    report: VerifyReport,
    plan: Plan,
    /// References per blob, from the records.
    refs: HashMap<ContentHash, u64>,
    /// Expected value of every counter `verify` knows.
    counters: BTreeMap<Vec<u8>, i64>,
    /// Blobs whose content is missing or corrupt: the artifacts that lose it are filled in later.
    lost: BTreeMap<ContentHash, (&'static str, String)>,
}

impl Checker<'_> {
    fn backend(&self) -> &dyn crate::backend::Backend {
        self.store.backend()
    }

    fn count(&mut self, name: impl AsRef<[u8]>, delta: i64) {
        *self.counters.entry(name.as_ref().to_vec()).or_insert(0) += delta;
    }

    fn push(&mut self, p: Problem) {
        self.report.problems.push(p);
    }

    /// Checks that `(k, v)` is stored; plans the write if not.
    fn expect_entry(
        &mut self,
        k: Vec<u8>,
        v: Vec<u8>,
        owner: &str,
        affected: Vec<ArtifactId>,
    ) -> Result<()> {
        let have = self.backend().get(&k)?;
        if have.as_deref() != Some(v.as_slice()) {
            let what = if have.is_some() {
                "holds a wrong value"
            } else {
                "is missing"
            };
            self.push(problem(
                kind::MISSING_INDEX,
                None,
                affected,
                format!("index entry {} of {owner} {what}", key_label(&k)),
            ));
            self.plan.ops.push(Op::Put(k, v));
        }
        Ok(())
    }

    /// Undecodable record: report and plan to move it aside.
    fn corrupt(&mut self, key: &[u8], what: &str, e: Error) {
        self.push(problem(
            kind::CORRUPT_RECORD,
            None,
            Vec::new(),
            format!("{what} record {} does not decode: {e}", key_label(key)),
        ));
        self.plan.records.push(key.to_vec());
    }

    fn sessions(&mut self) -> Result<()> {
        let backend = self.store.backend();
        for e in RangeIter::prefix(backend, &[keys::SESSION], false) {
            let (k, v) = e?;
            let s = match keys::decode::<Session>("session", &v) {
                Ok(s) if k.len() == 17 && s.id.as_bytes() == &k[1..] => s,
                Ok(_) => {
                    self.corrupt(
                        &k,
                        "session",
                        Error::Corrupt {
                            what: "its id does not match its key".into(),
                        },
                    );
                    continue;
                }
                Err(e) => {
                    self.corrupt(&k, "session", e);
                    continue;
                }
            };
            self.count(counters::SESSIONS, 1);
            self.count(counters::sessions_in(s.status), 1);
            for (ik, iv) in self.store.session_entries(&s) {
                self.report.index_entries_checked += 1;
                self.expect_entry(ik, iv, &format!("session {}", s.id), Vec::new())?;
            }
        }
        Ok(())
    }

    fn session_indexes(&mut self) -> Result<()> {
        let backend = self.store.backend();
        for (table, owner) in SESSION_INDEXES {
            for e in RangeIter::prefix(backend, &[table], false) {
                let (k, v) = e?;
                self.report.index_entries_checked += 1;
                let id = match owner {
                    Owner::Value => SessionId::from_slice(&v),
                    Owner::Tail => keys::tail16(&k).map(SessionId::from_bytes),
                };
                let expected = match id {
                    Ok(id) => match backend.get(&keys::session(&id))? {
                        Some(b) => match keys::decode::<Session>("session", &b) {
                            Ok(s) => self.store.session_entries(&s),
                            Err(_) => Vec::new(),
                        },
                        None => Vec::new(),
                    },
                    Err(_) => Vec::new(),
                };
                if !expected.iter().any(|(ek, _)| *ek == k) {
                    self.push(problem(
                        kind::DANGLING_INDEX,
                        None,
                        Vec::new(),
                        format!(
                            "session index entry {} points to no session that has it",
                            key_label(&k)
                        ),
                    ));
                    self.plan.ops.push(Op::Delete(k));
                }
            }
        }
        Ok(())
    }

    fn artifacts(&mut self) -> Result<()> {
        let backend = self.store.backend();
        for e in RangeIter::prefix(backend, &[keys::ARTIFACT], false) {
            let (k, v) = e?;
            let a = match crate::artifact::record::decode(&v) {
                Ok(a) if k.len() == 17 && a.id.as_bytes() == &k[1..] => a,
                Ok(_) => {
                    self.corrupt(
                        &k,
                        "artifact",
                        Error::Corrupt {
                            what: "its id does not match its key".into(),
                        },
                    );
                    continue;
                }
                Err(e) => {
                    self.corrupt(&k, "artifact", e);
                    continue;
                }
            };
            self.report.artifacts_checked += 1;
            if backend.get(&keys::session(&a.session_id))?.is_none() {
                self.push(problem(
                    kind::ORPHAN_ARTIFACT,
                    Some(a.hash),
                    vec![a.id],
                    format!(
                        "artifact {} ({:?} v{}) belongs to session {}, which does not exist",
                        a.id, a.name, a.version, a.session_id
                    ),
                ));
            }
            let (entries, deltas) = self.store.artifact_entries(&a);
            for (ik, iv) in entries {
                self.report.index_entries_checked += 1;
                self.expect_entry(ik, iv, &format!("artifact {}", a.id), vec![a.id])?;
            }
            for (name, d) in deltas {
                self.count(name, d);
            }
            self.count(super::counters::session_artifacts(&a.session_id), 1);
            *self.refs.entry(a.hash).or_insert(0) += 1;
            match backend.get(&keys::blob(&a.hash))? {
                None => {
                    self.lost.entry(a.hash).or_insert((
                        kind::MISSING_BLOB,
                        "no blob record exists for this content".into(),
                    ));
                }
                Some(b) => {
                    if let Ok(m) = BlobMeta::decode(&b) {
                        if m.size != a.size {
                            self.push(problem(
                                kind::SIZE_MISMATCH,
                                Some(a.hash),
                                vec![a.id],
                                format!(
                                    "artifact {} records {} bytes but its blob records {}",
                                    a.id, a.size, m.size
                                ),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn artifact_indexes(&mut self) -> Result<()> {
        let backend = self.store.backend();
        for (table, owner) in ARTIFACT_INDEXES {
            for e in RangeIter::prefix(backend, &[table], false) {
                let (k, v) = e?;
                self.report.index_entries_checked += 1;
                let id = match owner {
                    Owner::Value => ArtifactId::from_slice(&v),
                    Owner::Tail => keys::tail16(&k).map(ArtifactId::from_bytes),
                };
                let (found, affected) = match id {
                    Ok(id) => match backend.get(&keys::artifact(&id))? {
                        Some(b) => match crate::artifact::record::decode(&b) {
                            Ok(a) => (
                                self.store
                                    .artifact_entries(&a)
                                    .0
                                    .iter()
                                    .any(|(ek, _)| *ek == k),
                                vec![a.id],
                            ),
                            Err(_) => (false, vec![id]),
                        },
                        None => (false, Vec::new()),
                    },
                    Err(_) => (false, Vec::new()),
                };
                if !found {
                    self.push(problem(
                        kind::DANGLING_INDEX,
                        None,
                        affected,
                        format!(
                            "artifact index entry {} points to no artifact that has it",
                            key_label(&k)
                        ),
                    ));
                    self.plan.ops.push(Op::Delete(k));
                }
            }
        }
        Ok(())
    }

    fn blobs(&mut self, all_counted: bool) -> Result<()> {
        let store = self.store;
        let backend = store.backend();
        for e in RangeIter::prefix(backend, &[keys::BLOB], false) {
            let (k, v) = e?;
            let hash = match ContentHash::from_slice(&k[1..]) {
                Ok(h) => h,
                Err(e) => {
                    self.corrupt(&k, "blob", e);
                    continue;
                }
            };
            let m = match BlobMeta::decode(&v) {
                Ok(m) => m,
                Err(e) => {
                    // The content may be fine, but without its record nothing can read it.
                    self.lost.insert(
                        hash,
                        (
                            kind::CORRUPT_RECORD,
                            format!("the blob record does not decode: {e}"),
                        ),
                    );
                    continue;
                }
            };
            self.report.blobs_checked += 1;
            self.count(counters::BLOBS, 1);
            self.count(counters::STORED_BYTES, m.stored_size as i64);
            self.count(counters::CONTENT_BYTES, m.size as i64);
            let want = self.refs.remove(&hash).unwrap_or(0);
            let refs_wrong = if all_counted {
                m.refs != want
            } else {
                m.refs < want
            };
            // With uncounted references, a recorded count above ours may be right: keep it.
            let refs = if refs_wrong { want } else { m.refs };
            if refs_wrong {
                self.push(problem(
                    kind::REFCOUNT,
                    Some(hash),
                    Vec::new(),
                    format!(
                        "blob {} records {} reference(s); the records hold {want}",
                        hash.short(),
                        m.refs
                    ),
                ));
                self.plan
                    .ops
                    .push(Op::Put(k.clone(), BlobMeta::with_refs(&v, refs)));
            }
            let listed = backend.get(&keys::garbage(&hash))?.is_some();
            if listed != (refs == 0) {
                self.push(problem(
                    kind::GARBAGE_ENTRY,
                    Some(hash),
                    Vec::new(),
                    if listed {
                        format!(
                            "blob {} is listed for GC but has {refs} reference(s)",
                            hash.short()
                        )
                    } else {
                        format!(
                            "blob {} has no references but is not listed for GC",
                            hash.short()
                        )
                    },
                ));
                self.plan.ops.push(if listed {
                    Op::Delete(keys::garbage(&hash))
                } else {
                    Op::Put(keys::garbage(&hash), Vec::new())
                });
            }
            self.check_content(hash, &m, &v)?;
        }
        Ok(())
    }

    /// Re-hashes one blob's content, streaming (bounded memory whatever its size).
    fn check_content(&mut self, hash: ContentHash, m: &BlobMeta, record: &[u8]) -> Result<()> {
        let store = self.store;
        let in_record = BlobMeta::data(record);
        let source: Box<dyn Read + Send> = if let Some(d) = in_record {
            content::bytes_source(d.to_vec())
        } else if m.inline {
            match store.backend().get(&keys::blob_data(&hash))? {
                Some(b) => content::bytes_source(b),
                None => {
                    self.lost.insert(
                        hash,
                        (kind::MISSING_BLOB, "its inline bytes are missing".into()),
                    );
                    return Ok(());
                }
            }
        } else if let (None, Some(files)) = (&store.inner.paths, &store.inner.files) {
            // Content on an object store (issue 15): checked through the blob file layer.
            match files.stored_len(&hash, m.codec)? {
                Some(len) => {
                    if len != m.stored_size {
                        self.push(problem(
                            kind::STORED_SIZE,
                            Some(hash),
                            Vec::new(),
                            format!(
                                "blob object {} is {len} bytes; its record says {}",
                                files.describe(&hash, m.codec),
                                m.stored_size
                            ),
                        ));
                    }
                    match files.open(&hash, m.codec)? {
                        Some(r) => r,
                        None => content::bytes_source(Vec::new()),
                    }
                }
                None => {
                    self.lost.insert(
                        hash,
                        (
                            kind::MISSING_BLOB,
                            format!(
                                "its blob object {} is missing",
                                files.describe(&hash, m.codec)
                            ),
                        ),
                    );
                    return Ok(());
                }
            }
        } else {
            let Some(paths) = &store.inner.paths else {
                self.lost.insert(
                    hash,
                    (
                        kind::MISSING_BLOB,
                        "a file blob in a store without files".into(),
                    ),
                );
                return Ok(());
            };
            let p = content::blob_path(&paths.blobs, &hash, m.codec);
            match fs::File::open(&p) {
                Ok(f) => {
                    let len = f.metadata().map_err(|e| Error::io(&p, e))?.len();
                    if len != m.stored_size {
                        self.push(problem(
                            kind::STORED_SIZE,
                            Some(hash),
                            Vec::new(),
                            format!(
                                "blob file {} is {len} bytes; its record says {}",
                                p.display(),
                                m.stored_size
                            ),
                        ));
                    }
                    Box::new(io::BufReader::with_capacity(256 << 10, f))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.lost.insert(
                        hash,
                        (
                            kind::MISSING_BLOB,
                            format!("its blob file {} is missing", p.display()),
                        ),
                    );
                    return Ok(());
                }
                Err(e) => return Err(Error::io(p, e)),
            }
        };
        let result = content::decoder(m.codec, source).and_then(|dec| {
            let mut r = content::ContentReader::new(dec, hash, m.size);
            io::copy(&mut r, &mut io::sink())
        });
        if let Err(e) = result {
            let message = match content::unwrap_integrity(e, hash) {
                Error::Integrity { message, .. } => message,
                other => other.to_string(),
            };
            if let (false, None, Some(files)) = (m.inline, &store.inner.paths, &store.inner.files) {
                // Content on an object store: the message names the object.
                let message = format!(
                    "its blob object {}: {message}",
                    files.describe(&hash, m.codec)
                );
                self.lost.insert(hash, (kind::HASH_MISMATCH, message));
                self.plan.objects.push((hash, m.codec));
                return Ok(());
            }
            self.lost.insert(hash, (kind::HASH_MISMATCH, message));
            if let (false, Some(paths)) = (m.inline, &store.inner.paths) {
                self.plan
                    .files
                    .push((hash, content::blob_path(&paths.blobs, &hash, m.codec)));
            } else if in_record.is_some() {
                self.plan.strip.push(keys::blob(&hash));
            } else if m.inline {
                self.plan.records.push(keys::blob_data(&hash));
            }
        }
        Ok(())
    }

    /// Inline bytes whose blob record is missing or says the bytes live in a file.
    fn inline_data(&mut self) -> Result<()> {
        let backend = self.store.backend();
        for e in RangeIter::prefix(backend, &[keys::BLOB_DATA], false) {
            let (k, _) = e?;
            let claimed = match ContentHash::from_slice(&k[1..]) {
                // Claimed by a format-1 inline record; a format-2 record carries its own bytes.
                Ok(h) => match backend.get(&keys::blob(&h))? {
                    Some(b) => BlobMeta::decode(&b)
                        .map(|m| m.inline && BlobMeta::data(&b).is_none())
                        .unwrap_or(true),
                    None => false,
                },
                Err(_) => false,
            };
            if !claimed {
                self.push(problem(
                    kind::ORPHAN_INLINE_DATA,
                    ContentHash::from_slice(&k[1..]).ok(),
                    Vec::new(),
                    format!(
                        "inline blob bytes {} have no inline blob record",
                        key_label(&k)
                    ),
                ));
                self.plan.records.push(k);
            }
        }
        Ok(())
    }

    /// Garbage entries for blobs that no longer exist (present-but-referenced is checked with
    /// the blob).
    fn garbage(&mut self) -> Result<()> {
        let backend = self.store.backend();
        for e in RangeIter::prefix(backend, &[keys::GARBAGE], false) {
            let (k, _) = e?;
            let exists = match ContentHash::from_slice(&k[1..]) {
                Ok(h) => backend.get(&keys::blob(&h))?.is_some(),
                Err(_) => false,
            };
            if !exists {
                self.push(problem(
                    kind::GARBAGE_ENTRY,
                    ContentHash::from_slice(&k[1..]).ok(),
                    Vec::new(),
                    format!("GC list entry {} names no blob", key_label(&k)),
                ));
                self.plan.ops.push(Op::Delete(k));
            }
        }
        Ok(())
    }

    /// Previews (partial reads, issue 13) of content that has no blob record: GC deletes a
    /// preview with its blob, so one left over is removed by repair.
    fn previews(&mut self) -> Result<()> {
        let backend = self.store.backend();
        for e in RangeIter::prefix(backend, &[keys::PREVIEW], false) {
            let (k, _) = e?;
            let exists = match ContentHash::from_slice(&k[1..]) {
                Ok(h) => backend.get(&keys::blob(&h))?.is_some(),
                Err(_) => false,
            };
            if !exists {
                self.push(problem(
                    kind::ORPHAN_PREVIEW,
                    ContentHash::from_slice(&k[1..]).ok(),
                    Vec::new(),
                    format!("preview {} names no blob", key_label(&k)),
                ));
                self.plan.ops.push(Op::Delete(k));
            }
        }
        Ok(())
    }

    fn orphan_files(&mut self) -> Result<()> {
        let store = self.store;
        let Some(paths) = &store.inner.paths else {
            return Ok(());
        };
        for (hash, path) in super::gc::blob_files(&paths.blobs)? {
            if store.is_pending(&hash) {
                continue; // a put in progress staged it; its batch claims it next
            }
            let claimed = match store.backend().get(&keys::blob(&hash))? {
                Some(b) => match BlobMeta::decode(&b) {
                    Ok(m) => !m.inline && content::blob_path(&paths.blobs, &hash, m.codec) == path,
                    // An undecodable record may still own the file: keep it for a person to judge.
                    Err(_) => true,
                },
                None => false,
            };
            if !claimed {
                // Not a problem: the expected leftover of a crash between writing a file and its
                // batch. Counted apart (gc reclaims it); repair still moves it aside.
                let bytes = match fs::metadata(&path) {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(&path, e)),
                };
                self.report.orphan_files += 1;
                self.report.orphan_bytes += bytes;
                self.plan.files.push((hash, path));
            }
        }
        Ok(())
    }

    fn check_counters(&mut self) -> Result<()> {
        let backend = self.store.backend();
        let prefix = keys::counter(b"");
        let mut expected = std::mem::take(&mut self.counters);
        for e in RangeIter::prefix(backend, &prefix, false) {
            let (k, v) = e?;
            let name = &k[prefix.len()..];
            if !known_counter(name) {
                continue;
            }
            let want = expected.remove(name).unwrap_or(0);
            match super::counters::decode(name, &v) {
                Ok(have) if have == want => {}
                Ok(have) => self.counter_problem(name, &have.to_string(), want),
                Err(_) => self.counter_problem(name, "undecodable", want),
            }
        }
        for (name, want) in expected {
            if want != 0 {
                self.counter_problem(&name, "0", want);
            }
        }
        Ok(())
    }

    fn counter_problem(&mut self, name: &[u8], have: &str, want: i64) {
        self.push(problem(
            kind::COUNTER,
            None,
            Vec::new(),
            format!(
                "counter {} is {have}; the records say {want}",
                counter_label(name)
            ),
        ));
        self.plan.counters.insert(name.to_vec(), want);
    }

    /// For each file blob whose file (or object) is missing or corrupt, looks for another
    /// copy of its content and verifies it against the hash: the bytes under its `D` key in
    /// the engine (an earlier inline record's), then its file in the other encoding. A good
    /// copy is named in the problem and planned as a restore.
    fn find_copies(&mut self) -> Result<()> {
        let store = self.store;
        let Some(files) = &store.inner.files else {
            return Ok(());
        };
        let damaged: Vec<ContentHash> = self
            .lost
            .iter()
            .filter(|(_, (k, _))| *k == kind::MISSING_BLOB || *k == kind::HASH_MISMATCH)
            .map(|(h, _)| *h)
            .collect();
        for hash in damaged {
            let Ok(Some(m)) = store.blob_meta(&hash) else {
                continue;
            };
            if m.inline {
                continue;
            }
            let other = match m.codec {
                Codec::Raw => Codec::Zstd,
                Codec::Zstd => Codec::Raw,
            };
            let good =
                |codec: Codec, source: Box<dyn Read + Send>| verifies(codec, source, hash, m.size);
            let mut found = None;
            if let Some(d) = store.backend().get(&keys::blob_data(&hash))? {
                found = [m.codec, other]
                    .into_iter()
                    .find(|c| good(*c, content::bytes_source(d.clone())))
                    .map(|c| {
                        let at = format!("inline bytes {}", key_label(&keys::blob_data(&hash)));
                        (CopySource::Inline, c, at)
                    });
            }
            if found.is_none() {
                if let Some(r) = files.open(&hash, other)? {
                    if good(other, r) {
                        found = Some((
                            CopySource::OtherEncoding,
                            other,
                            files.describe(&hash, other),
                        ));
                    }
                }
            }
            if let Some((source, codec, at)) = found {
                if let Some((_, why)) = self.lost.get_mut(&hash) {
                    why.push_str(&format!(
                        "; a good copy is in {at}, from which `repair` restores it"
                    ));
                }
                self.plan.restores.push(Restore {
                    hash,
                    meta: m,
                    source,
                    codec,
                });
            }
        }
        Ok(())
    }

    /// One problem per blob whose content is gone or corrupt.
    fn report_lost(&mut self) {
        let lost = std::mem::take(&mut self.lost);
        for (hash, (k, why)) in lost {
            let restored = self.plan.restores(&hash);
            // Repair moves the content aside: its stored preview goes with it (a later
            // `preview` then fails like a read instead of describing content that is gone).
            // Content restored from another copy keeps its preview.
            if !restored {
                self.plan.ops.push(Op::Delete(keys::preview(&hash)));
            }
            let why = if restored {
                why
            } else {
                format!("{why}; reads of its artifacts fail with an integrity error")
            };
            self.push(problem(
                k,
                Some(hash),
                Vec::new(),
                format!("content {}: {why}", hash.short()),
            ));
        }
    }

    /// Fills in the affected artifacts of every blob-level problem, with one more scan of the
    /// artifact records (only when there is such a problem).
    fn fill_affected(&mut self) -> Result<()> {
        let wanted: HashSet<ContentHash> = self
            .report
            .problems
            .iter()
            .filter(|p| p.artifacts.is_empty())
            .filter_map(|p| p.hash)
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut by_hash: HashMap<ContentHash, Vec<ArtifactId>> = HashMap::new();
        let backend = self.store.backend();
        let end = prefix_end(&[keys::ARTIFACT]);
        for e in RangeIter::new(backend, vec![keys::ARTIFACT], end, false, 256) {
            let (_, v) = e?;
            if let Ok(a) = crate::artifact::record::decode(&v) {
                if wanted.contains(&a.hash) {
                    by_hash.entry(a.hash).or_default().push(a.id);
                }
            }
        }
        for p in &mut self.report.problems {
            if p.artifacts.is_empty() {
                if let Some(ids) = p.hash.and_then(|h| by_hash.get(&h)) {
                    p.artifacts = ids.clone();
                }
            }
        }
        Ok(())
    }
}
