//! Checkpoints, restore, fork/copy/merge, lineage, timeline and conversation history.
//!
//! Tables (see `keys.rs` and DESIGN.md, "Checkpoints, forks and history"):
//! - `P` + checkpoint id -> [`Checkpoint`]; `P` + checkpoint id + artifact id -> the captured
//!   [`Artifact`] record (a snapshot, so the checkpoint outlives the artifact's deletion);
//! - `p` + session id + checkpoint id -> empty (the session's checkpoints, in time order);
//! - `F` + source session id + derived session id -> [`Lineage`];
//! - `h` + session id + message seq -> [`HistoryEntry`].
//!
//! A checkpoint holds one blob reference per captured artifact (and one for its binary state),
//! taken in the batch that writes it and dropped in the batch that deletes it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Store, Tx};
use crate::artifact::{Artifact, NewArtifact};
use crate::backend::{prefix_end, RangeIter};
use crate::checkpoint::{
    validate_label, Checkpoint, CopyOptions, Lineage, LineageKind, Message, NewCheckpoint,
    RestoreReport, Role, StateBlob, TimelineEntry, TimelineOptions,
};
use crate::content::Codec;
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::ids::{ArtifactId, CheckpointId, SessionId};
use crate::keys::{self, Key};
use crate::query::{Page, MAX_LIMIT};
use crate::session::{NewSession, Session};

/// `h` value: which artifact holds message `seq`, and who said it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct HistoryEntry {
    artifact_id: ArtifactId,
    role: Role,
}

fn cp_key(id: &CheckpointId) -> Vec<u8> {
    Key::new(keys::CHECKPOINT).bytes(id.as_bytes()).build()
}
fn cp_member_key(id: &CheckpointId, aid: &ArtifactId) -> Vec<u8> {
    Key::new(keys::CHECKPOINT)
        .bytes(id.as_bytes())
        .aid(aid)
        .build()
}
fn session_cp_key(sid: &SessionId, id: &CheckpointId) -> Vec<u8> {
    Key::new(keys::SESSION_CHECKPOINT)
        .sid(sid)
        .bytes(id.as_bytes())
        .build()
}
fn fork_key(source: &SessionId, derived: &SessionId) -> Vec<u8> {
    Key::new(keys::FORK).sid(source).sid(derived).build()
}
fn history_prefix(sid: &SessionId) -> Vec<u8> {
    Key::new(keys::HISTORY).sid(sid).build()
}
fn event_key(sid: &SessionId, seq: u64) -> Vec<u8> {
    Key::new(keys::EVENT).sid(sid).u64(seq).build()
}

/// The order of timeline entries: time, then session, then position in the session's log.
type TimeKey = (i64, SessionId, u64);

fn time_key(e: &Event) -> TimeKey {
    let nanos =
        e.at.timestamp_nanos_opt()
            .unwrap_or_else(|| e.at.timestamp_micros().saturating_mul(1000));
    (nanos, e.session_id, e.seq)
}

fn encode_cursor(k: &TimeKey) -> String {
    format!("{}:{}:{}", k.0, k.1, k.2)
}

fn parse_cursor(s: &str) -> Result<TimeKey> {
    let bad = || {
        Error::invalid(
            "timeline cursor",
            format!(
                "{:?} is not a timeline cursor; pass back the next_cursor of a previous page",
                crate::artifact::truncate_for_message(s)
            ),
        )
    };
    let mut parts = s.trim().splitn(3, ':');
    let t = parts
        .next()
        .and_then(|p| p.parse::<i64>().ok())
        .ok_or_else(bad)?;
    let sid = parts
        .next()
        .and_then(|p| p.parse::<SessionId>().ok())
        .ok_or_else(bad)?;
    let seq = parts
        .next()
        .and_then(|p| p.parse::<u64>().ok())
        .ok_or_else(bad)?;
    Ok((t, sid, seq))
}

impl Store {
    // ---------------------------------------------------------------- checkpoints

    /// Records a checkpoint of `session`: its label and state, and the exact set of artifact
    /// versions it holds now. No content is copied; the checkpoint takes a reference on every
    /// blob it needs, so that content survives deletes and [`Store::gc`] while it exists.
    ///
    /// Works on finished sessions too (a completed run is a good point to fork from).
    pub fn create_checkpoint(&self, session: SessionId, new: NewCheckpoint) -> Result<Checkpoint> {
        validate_label(&new.label)?;
        self.check_state(&new.state)?;
        self.session(session)?;
        let staged = match &new.state_bytes {
            Some(b) => {
                let p = self.prepare(&mut &b[..])?;
                let blob = StateBlob {
                    hash: p.hash,
                    size: p.size,
                };
                Some((blob, self.stage(p)?))
            }
            None => None,
        };
        self.write(|tx| {
            let blob = match &staged {
                Some((blob, st)) => {
                    tx.reference_blob(st)?;
                    Some(*blob)
                }
                None => None,
            };
            let cp =
                self.create_checkpoint_in(tx, session, new.label.clone(), new.state.clone(), blob)?;
            Ok(cp)
        })
    }

    fn check_state(&self, state: &Value) -> Result<()> {
        let max = self.inner.config.limits.max_metadata_bytes;
        let len = serde_json::to_vec(state)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if len > max {
            return Err(Error::LimitExceeded {
                limit: "max_metadata_bytes",
                message: format!(
                    "the checkpoint's JSON state is {len} bytes; the limit is {max}: put large \
                     state in the binary state (NewCheckpoint::state_bytes)"
                ),
            });
        }
        Ok(())
    }

    /// Writes a checkpoint in `tx`. The binary state's reference must already be taken.
    fn create_checkpoint_in(
        &self,
        tx: &mut Tx<'_>,
        session: SessionId,
        label: String,
        state: Value,
        state_blob: Option<StateBlob>,
    ) -> Result<Checkpoint> {
        self.tx_session(tx, session)?;
        let id = CheckpointId::new();
        let members = self.tx_session_artifacts(tx, session)?;
        for a in &members {
            tx.retain_blob(&a.hash)?;
            tx.put(
                cp_member_key(&id, &a.id),
                crate::artifact::record::encode(a),
            );
        }
        let ev = tx.event(
            session,
            EventKind::CheckpointCreated {
                checkpoint_id: id,
                label: label.clone(),
            },
        )?;
        let cp = Checkpoint {
            id,
            session_id: session,
            label,
            state,
            state_blob,
            artifact_count: members.len() as u64,
            event_seq: ev.seq,
            created_at: ev.at,
        };
        tx.put(cp_key(&id), keys::encode(&cp));
        tx.put(session_cp_key(&session, &id), vec![]);
        tx.add(super::counters::CHECKPOINTS, 1);
        Ok(cp)
    }

    /// Every artifact record of `session` as `tx` sees it, oldest first. Call under the lock.
    fn tx_session_artifacts(&self, tx: &Tx<'_>, session: SessionId) -> Result<Vec<Artifact>> {
        let prefix = Key::new(keys::SESSION_ARTIFACT).sid(&session).build();
        let mut out = Vec::new();
        for e in tx.prefix(&prefix, false) {
            let (k, _) = e?;
            let aid = ArtifactId::from_bytes(keys::tail16(&k)?);
            if let Some(b) = tx.get(&keys::artifact(&aid))? {
                out.push(crate::artifact::record::decode(&b)?);
            }
        }
        Ok(out)
    }

    /// The checkpoint `id`.
    pub fn checkpoint(&self, id: CheckpointId) -> Result<Checkpoint> {
        match self.backend().get(&cp_key(&id))? {
            Some(b) => keys::decode("checkpoint", &b),
            None => Err(Error::CheckpointNotFound { id }),
        }
    }

    /// The checkpoints of `session`, oldest first, one page at a time (`after`: the last id of
    /// the previous page; `limit`: 1 to [`crate::MAX_LIMIT`]).
    pub fn checkpoints_page(
        &self,
        session: SessionId,
        after: Option<CheckpointId>,
        limit: usize,
    ) -> Result<Page<Checkpoint>> {
        if limit == 0 || limit > MAX_LIMIT {
            return Err(Error::invalid(
                "limit",
                format!("{limit}; use 1 to {MAX_LIMIT}"),
            ));
        }
        self.session(session)?;
        let prefix = Key::new(keys::SESSION_CHECKPOINT).sid(&session).build();
        let start = match after {
            Some(c) => {
                let mut k = session_cp_key(&session, &c);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut items = Vec::new();
        for e in RangeIter::new(self.backend(), start, prefix_end(&prefix), false, limit + 1) {
            let id = CheckpointId::from_bytes(keys::tail16(&e?.0)?);
            items.push(self.checkpoint(id)?);
            if items.len() > limit {
                break;
            }
        }
        Ok(Page::from_overfetch(items, limit, |c| c.id.to_string()))
    }

    /// Every checkpoint of `session`, oldest first (a checkpoint record is small: its artifact
    /// list is read separately with [`Store::checkpoint_artifacts`]).
    pub fn checkpoints(&self, session: SessionId) -> Result<Vec<Checkpoint>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let page = self.checkpoints_page(session, after, 1000)?;
            after = page.items.last().map(|c| c.id);
            let more = page.has_more();
            out.extend(page.items);
            if !more {
                return Ok(out);
            }
        }
    }

    /// The most recent checkpoint of `session`, or the most recent one labelled `label`.
    pub fn latest_checkpoint(
        &self,
        session: SessionId,
        label: Option<&str>,
    ) -> Result<Option<Checkpoint>> {
        self.session(session)?;
        let prefix = Key::new(keys::SESSION_CHECKPOINT).sid(&session).build();
        for e in RangeIter::prefix(self.backend(), &prefix, true) {
            let id = CheckpointId::from_bytes(keys::tail16(&e?.0)?);
            let cp = self.checkpoint(id)?;
            if label.is_none_or(|l| cp.label == l) {
                return Ok(Some(cp));
            }
        }
        Ok(None)
    }

    /// The artifact versions a checkpoint captured, oldest first, as they were then.
    pub fn checkpoint_artifacts(&self, id: CheckpointId) -> Result<Vec<Artifact>> {
        self.checkpoint(id)?;
        let header = cp_key(&id);
        let mut out = Vec::new();
        for e in RangeIter::prefix(self.backend(), &header, false) {
            let (k, v) = e?;
            if k == header {
                continue;
            }
            out.push(crate::artifact::record::decode(&v)?);
        }
        Ok(out)
    }

    /// The content of an artifact as a checkpoint captured it, verified; it stays readable for
    /// as long as the checkpoint exists, even after the artifact itself is deleted.
    pub fn read_checkpoint_artifact(
        &self,
        id: CheckpointId,
        artifact: ArtifactId,
    ) -> Result<Vec<u8>> {
        self.checkpoint(id)?;
        let a: Artifact = match self.backend().get(&cp_member_key(&id, &artifact))? {
            Some(b) => crate::artifact::record::decode(&b)?,
            None => {
                return Err(Error::ArtifactNotFound {
                    id: format!("{artifact} (not in checkpoint {id})"),
                })
            }
        };
        self.read_content(&a.hash, a.size)
    }

    /// The binary state of a checkpoint, verified, or `None` if it has none.
    pub fn checkpoint_state_bytes(&self, id: CheckpointId) -> Result<Option<Vec<u8>>> {
        let cp = self.checkpoint(id)?;
        cp.state_blob
            .map(|b| self.read_content(&b.hash, b.size))
            .transpose()
    }

    /// Deletes a checkpoint. Content it alone referenced becomes garbage for [`Store::gc`].
    pub fn delete_checkpoint(&self, id: CheckpointId) -> Result<Checkpoint> {
        self.write(|tx| {
            let cp = self.remove_checkpoint_in(tx, id)?;
            tx.event(
                cp.session_id,
                EventKind::Custom {
                    name: "checkpoint_deleted".into(),
                    payload: serde_json::json!({ "checkpoint_id": id, "label": cp.label }),
                },
            )?;
            Ok(cp)
        })
    }

    /// Keeps the `keep_latest` most recent checkpoints of `session` (only those labelled
    /// `label`, if given) and deletes the older ones. Returns how many were deleted.
    pub fn prune_checkpoints(
        &self,
        session: SessionId,
        label: Option<&str>,
        keep_latest: usize,
    ) -> Result<u64> {
        let mut matching: Vec<CheckpointId> = self
            .checkpoints(session)?
            .into_iter()
            .filter(|c| label.is_none_or(|l| c.label == l))
            .map(|c| c.id)
            .collect();
        let drop_n = matching.len().saturating_sub(keep_latest);
        matching.truncate(drop_n);
        let mut n = 0;
        for id in matching {
            match self.delete_checkpoint(id) {
                Ok(_) => n += 1,
                Err(Error::CheckpointNotFound { .. }) => {} // deleted concurrently
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Removes a checkpoint's records and releases its blob references (no event).
    fn remove_checkpoint_in(&self, tx: &mut Tx<'_>, id: CheckpointId) -> Result<Checkpoint> {
        let cp: Checkpoint = match tx.get(&cp_key(&id))? {
            Some(b) => keys::decode("checkpoint", &b)?,
            None => return Err(Error::CheckpointNotFound { id }),
        };
        for e in RangeIter::prefix(self.backend(), &cp_key(&id), false) {
            let (k, v) = e?;
            if k.len() > 17 {
                // A captured artifact (the 17-byte key is the header).
                let a: Artifact = crate::artifact::record::decode(&v)?;
                tx.release_blob(&a.hash)?;
            }
            tx.del(k);
        }
        if let Some(b) = &cp.state_blob {
            tx.release_blob(&b.hash)?;
        }
        tx.del(session_cp_key(&cp.session_id, &id));
        tx.add(super::counters::CHECKPOINTS, -1);
        Ok(cp)
    }

    /// Called when a session is deleted: its checkpoints (releasing their references), the
    /// lineage records that point at it as a derived session, and its conversation order.
    /// Lineage records naming it as a *source* stay: the forks still exist and came from it.
    pub(crate) fn remove_checkpoint_data_in(&self, tx: &mut Tx<'_>, id: SessionId) -> Result<()> {
        let prefix = Key::new(keys::SESSION_CHECKPOINT).sid(&id).build();
        for e in RangeIter::prefix(self.backend(), &prefix, false) {
            let (k, _) = e?;
            let cid = CheckpointId::from_bytes(keys::tail16(&k)?);
            match self.remove_checkpoint_in(tx, cid) {
                Ok(_) | Err(Error::CheckpointNotFound { .. }) => tx.del(k),
                Err(e) => return Err(e),
            }
        }
        for (source, _) in self.derived_from(id)? {
            tx.del(fork_key(&source, &id));
        }
        for e in RangeIter::prefix(self.backend(), &history_prefix(&id), false) {
            tx.del(e?.0);
        }
        Ok(())
    }

    /// Adds to `refs` one count per blob reference held by checkpoints (each captured artifact
    /// version, and the binary state), exactly as `create_checkpoint_in` takes them. For
    /// `verify`/`repair`, which rebuild reference counts from the records that hold them.
    /// Returns false if some checkpoint record could not be decoded (its references are then
    /// unknown, and callers must treat the counts as lower bounds).
    pub(crate) fn checkpoint_blob_refs(
        &self,
        refs: &mut HashMap<crate::ids::ContentHash, u64>,
    ) -> Result<bool> {
        let mut all = true;
        for e in RangeIter::prefix(self.backend(), &[keys::CHECKPOINT], false) {
            let (k, v) = e?;
            if k.len() == 17 {
                match keys::decode::<Checkpoint>("checkpoint", &v) {
                    Ok(cp) => {
                        if let Some(b) = cp.state_blob {
                            *refs.entry(b.hash).or_insert(0) += 1;
                        }
                    }
                    Err(_) => all = false,
                }
            } else {
                match crate::artifact::record::decode(&v) {
                    Ok(a) => *refs.entry(a.hash).or_insert(0) += 1,
                    Err(_) => all = false,
                }
            }
        }
        Ok(all)
    }

    /// The sources recorded by a session's leading `forked` events.
    fn derived_from(&self, id: SessionId) -> Result<Vec<(SessionId, Event)>> {
        let prefix = Key::new(keys::EVENT).sid(&id).build();
        let mut out = Vec::new();
        for e in RangeIter::new(
            self.backend(),
            prefix.clone(),
            prefix_end(&prefix),
            false,
            16,
        ) {
            let ev: Event = keys::decode("event", &e?.1)?;
            match &ev.kind {
                EventKind::Forked { source_session, .. } => out.push((*source_session, ev.clone())),
                _ => break,
            }
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- restore

    /// Puts `session` back to the artifact versions a checkpoint captured: artifacts stored
    /// since are removed, artifacts deleted since come back with their original ids and
    /// versions. First, in the same atomic batch, a `before-restore` checkpoint of the current
    /// state is taken, so nothing is lost: restoring that one undoes the restore.
    ///
    /// A finished session cannot be restored (fork it at the checkpoint instead).
    pub fn restore_checkpoint(&self, id: CheckpointId) -> Result<RestoreReport> {
        let cp = self.checkpoint(id)?;
        let members = self.checkpoint_artifacts(id)?;
        let sid = cp.session_id;
        self.write(|tx| {
            // Deleted since it was read? (Its records never change while it exists.)
            if tx.get(&cp_key(&id))?.is_none() {
                return Err(Error::CheckpointNotFound { id });
            }
            let s = self.tx_session(tx, sid)?;
            if s.status.is_terminal() {
                return Err(Error::SessionClosed {
                    id: sid,
                    status: s.status,
                    message: format!(
                        "checkpoint {id} cannot be restored into it; fork it at the checkpoint instead"
                    ),
                });
            }
            let backup = self.create_checkpoint_in(
                tx,
                sid,
                "before-restore".into(),
                serde_json::json!({ "restoring": id }),
                None,
            )?;
            let wanted: HashSet<ArtifactId> = members.iter().map(|a| a.id).collect();
            let current = self.tx_session_artifacts(tx, sid)?;
            let present: HashSet<ArtifactId> = current.iter().map(|a| a.id).collect();
            let mut removed = Vec::new();
            for a in &current {
                if !wanted.contains(&a.id) {
                    self.remove_artifact_in(tx, a.id)?;
                    removed.push(a.id);
                }
            }
            let mut reinstated = Vec::new();
            for a in &members {
                if !present.contains(&a.id) {
                    self.copy_artifact_in(tx, sid, a, Some(a.id), Some(a.version))?;
                    reinstated.push(a.id);
                }
            }
            // Messages whose artifact went away leave the conversation.
            // Read in the transaction: on a shared engine another process may add messages.
            let gone: HashSet<ArtifactId> = removed.iter().copied().collect();
            let mut stale = Vec::new();
            for e in tx.prefix(&history_prefix(&sid), false) {
                let (k, v) = e?;
                let h: HistoryEntry = keys::decode("history", &v)?;
                if gone.contains(&h.artifact_id) {
                    stale.push(k);
                }
            }
            for k in stale {
                tx.del(k);
            }
            tx.event(
                sid,
                EventKind::Custom {
                    name: "checkpoint_restored".into(),
                    payload: serde_json::json!({
                        "checkpoint_id": id,
                        "backup": backup.id,
                        "removed": removed.len(),
                        "reinstated": reinstated.len(),
                    }),
                },
            )?;
            Ok(RestoreReport {
                checkpoint: id,
                backup: backup.id,
                removed,
                reinstated,
            })
        })
    }

    /// Adds an artifact record to `session` that points at `template`'s content (one more
    /// reference, no content copied). `id`: keep that id (restore); `version`: keep that version
    /// (fork, copy, restore) or take the next one (merge).
    fn copy_artifact_in(
        &self,
        tx: &mut Tx<'_>,
        session: SessionId,
        template: &Artifact,
        id: Option<ArtifactId>,
        version: Option<u32>,
    ) -> Result<Artifact> {
        let limit = self.inner.config.limits.max_artifacts_per_session;
        let count_key = super::counters::session_artifacts(&session);
        if tx.counter(&count_key)? as u64 >= limit {
            return Err(Error::LimitExceeded {
                limit: "max_artifacts_per_session",
                message: format!(
                    "session {session} would hold more than {limit} artifacts; nothing was stored"
                ),
            });
        }
        let meta = tx.retain_blob(&template.hash)?;
        let latest_key = keys::latest(&session, &template.name);
        let latest = tx
            .get(&latest_key)?
            .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
            .map(u32::from_be_bytes);
        let version = match version {
            Some(v) => v,
            None => latest
                .unwrap_or(0)
                .checked_add(1)
                .ok_or_else(|| Error::LimitExceeded {
                    limit: "versions",
                    message: format!("{:?} has reached the largest version number", template.name),
                })?,
        };
        let (id, created_at) = match id {
            Some(id) => (id, template.created_at),
            None => {
                let id = ArtifactId::new();
                (id, id.timestamp())
            }
        };
        let a = Artifact {
            id,
            session_id: session,
            kind: template.kind.clone(),
            name: template.name.clone(),
            version,
            hash: template.hash,
            size: template.size,
            stored_size: meta.stored_size,
            compressed: meta.codec == Codec::Zstd,
            tags: template.tags.clone(),
            metadata: template.metadata.clone(),
            mime_type: template.mime_type.clone(),
            created_at,
            pinned: template.pinned,
        };
        if latest.is_none_or(|l| version > l) {
            tx.put(latest_key, version.to_be_bytes().to_vec());
        }
        self.add_artifact_in(tx, &a)?;
        Ok(a)
    }

    // ---------------------------------------------------------------- fork, copy, merge

    /// Forks `source` at a checkpoint of it (or, with `None`, at its state now): a new child
    /// session of `source` whose artifacts are the checkpoint's artifact versions (new ids, same
    /// names, versions and content; no content is copied) and whose first event is `forked`.
    /// The two sessions are independent from then on. The conversation history comes along.
    ///
    /// `new` gives the fork's name, tags, metadata and options; the name and options default
    /// to the source's. Its parent is always `source`.
    pub fn fork(
        &self,
        source: SessionId,
        checkpoint: Option<CheckpointId>,
        new: NewSession,
    ) -> Result<Session> {
        let src = self.session(source)?;
        if let Some(p) = new.parent {
            if p != source {
                return Err(Error::invalid(
                    "fork parent",
                    format!(
                        "a fork is always a child of its source {source}; do not set parent {p}"
                    ),
                ));
            }
        }
        let members = match checkpoint {
            Some(c) => {
                let cp = self.checkpoint(c)?;
                if cp.session_id != source {
                    return Err(Error::invalid(
                        "checkpoint",
                        format!(
                            "checkpoint {c} belongs to session {}, not to {source}",
                            cp.session_id
                        ),
                    ));
                }
                Some(self.checkpoint_artifacts(c)?)
            }
            None => None,
        };
        let mut new = new.parent(source);
        if new.name.is_none() {
            new.name = src.name.clone();
        }
        if new.options == Default::default() {
            new.options = src.options.clone();
        }
        let tags = self.validate_new_session(&new)?;
        self.write(|tx| {
            if let Some(c) = checkpoint {
                // Deleted since it was read? (Its records never change while it exists.)
                if tx.get(&cp_key(&c))?.is_none() {
                    return Err(Error::CheckpointNotFound { id: c });
                }
            }
            let members = match &members {
                Some(m) => m.clone(),
                None => self.tx_session_artifacts(tx, source)?,
            };
            let s = self.insert_derived_session(
                tx,
                new.clone(),
                tags.clone(),
                &[(source, checkpoint)],
                LineageKind::Fork,
            )?;
            let roles = self.history_roles(&[source])?;
            self.copy_artifact_set_in(tx, s.id, &members, &roles, true)?;
            Ok(s)
        })
    }

    /// Copies `source` (with [`CopyOptions::subtree`], its whole subtree, keeping the shape):
    /// new sessions with the same name, description, tags, metadata and options (not the unique
    /// key), active, each holding the same artifact versions and conversation under new ids,
    /// with no content copied. Each copy's first event is `forked` from its original. One
    /// atomic batch: all or nothing. Returns the top copy.
    pub fn copy_session(&self, source: SessionId, opts: CopyOptions) -> Result<Session> {
        let top = self.session(source)?;
        let order = if opts.subtree {
            self.subtree_ids(source)?
        } else {
            vec![source]
        };
        let top_parent = match opts.parent {
            Some(p) => p,
            None => top.parent_id,
        };
        let mut plan = Vec::with_capacity(order.len());
        for sid in &order {
            let s = self.session(*sid)?;
            let mut n = NewSession::new()
                .metadata(s.metadata.clone())
                .options(s.options.clone());
            n.name = s.name.clone();
            n.description = s.description.clone();
            n.tags = s.tags.clone();
            if *sid == source {
                if let Some(name) = &opts.name {
                    n.name = Some(name.clone());
                }
            }
            let tags = self.validate_new_session(&n)?;
            plan.push((s, n, tags));
        }
        self.write(|tx| {
            let mut map: HashMap<SessionId, SessionId> = HashMap::new();
            let mut out = None;
            for (s, n, tags) in &plan {
                let (s, mut n, tags) = (s, n.clone(), tags.clone());
                n.parent = if s.id == source {
                    top_parent
                } else {
                    match s.parent_id.and_then(|p| map.get(&p)) {
                        Some(p) => Some(*p),
                        None => {
                            return Err(Error::Other {
                                message: format!(
                                    "session {} changed while it was being copied; try again",
                                    s.id
                                ),
                            })
                        }
                    }
                };
                let copy =
                    self.insert_derived_session(tx, n, tags, &[(s.id, None)], LineageKind::Copy)?;
                let members = self.tx_session_artifacts(tx, s.id)?;
                let roles = self.history_roles(&[s.id])?;
                self.copy_artifact_set_in(tx, copy.id, &members, &roles, true)?;
                map.insert(s.id, copy.id);
                if s.id == source {
                    out = Some(copy);
                }
            }
            out.ok_or_else(|| Error::session_not_found(source))
        })
    }

    /// Merges several sessions into a new one (`new` gives its name, parent, tags...): every
    /// artifact of every source, in time order, so that the same name in several sources
    /// becomes successive versions in the order they were stored. Conversations are merged
    /// the same way. No content is copied; the new session's first events are one `forked`
    /// per source.
    pub fn merge_sessions(&self, sources: &[SessionId], new: NewSession) -> Result<Session> {
        if sources.is_empty() {
            return Err(Error::invalid(
                "merge sources",
                "no session to merge; give at least one",
            ));
        }
        let mut seen = HashSet::new();
        for s in sources {
            if !seen.insert(*s) {
                return Err(Error::invalid(
                    "merge sources",
                    format!("session {s} is listed twice"),
                ));
            }
            self.session(*s)?;
        }
        let tags = self.validate_new_session(&new)?;
        self.write(|tx| {
            let mut members = Vec::new();
            for s in sources {
                members.extend(self.tx_session_artifacts(tx, *s)?);
            }
            members.sort_by_key(|a| (a.created_at, a.id));
            let pairs: Vec<_> = sources.iter().map(|s| (*s, None)).collect();
            let s = self.insert_derived_session(
                tx,
                new.clone(),
                tags.clone(),
                &pairs,
                LineageKind::Merge,
            )?;
            let roles = self.history_roles(sources)?;
            self.copy_artifact_set_in(tx, s.id, &members, &roles, false)?;
            Ok(s)
        })
    }

    /// The roles of the messages of `sessions`, by artifact id.
    fn history_roles(&self, sessions: &[SessionId]) -> Result<HashMap<ArtifactId, Role>> {
        let mut out = HashMap::new();
        for s in sessions {
            for e in RangeIter::prefix(self.backend(), &history_prefix(s), false) {
                let h: HistoryEntry = keys::decode("history", &e?.1)?;
                out.insert(h.artifact_id, h.role);
            }
        }
        Ok(out)
    }

    /// Copies `members` (in order) into `target`, and the messages among them into its
    /// conversation, numbered in the same order.
    fn copy_artifact_set_in(
        &self,
        tx: &mut Tx<'_>,
        target: SessionId,
        members: &[Artifact],
        roles: &HashMap<ArtifactId, Role>,
        keep_versions: bool,
    ) -> Result<()> {
        let mut seq = 0u64;
        for a in members {
            let version = keep_versions.then_some(a.version);
            let c = self.copy_artifact_in(tx, target, a, None, version)?;
            if let Some(role) = roles.get(&a.id) {
                seq += 1;
                tx.put(
                    Key::new(keys::HISTORY).sid(&target).u64(seq).build(),
                    keys::encode(&HistoryEntry {
                        artifact_id: c.id,
                        role: *role,
                    }),
                );
            }
        }
        Ok(())
    }

    /// Like `insert_session`, but the first events are `forked` (one per source) and the
    /// lineage records are written.
    fn insert_derived_session(
        &self,
        tx: &mut Tx<'_>,
        new: NewSession,
        tags: Vec<String>,
        sources: &[(SessionId, Option<CheckpointId>)],
        kind: LineageKind,
    ) -> Result<Session> {
        let s = self.insert_session_record(tx, new, tags, None)?;
        let id = s.id;
        for (source, checkpoint) in sources {
            let ev = tx.event(
                id,
                EventKind::Forked {
                    source_session: *source,
                    checkpoint_id: *checkpoint,
                },
            )?;
            let l = Lineage {
                session: id,
                source: *source,
                checkpoint: *checkpoint,
                kind,
                at: ev.at,
            };
            tx.put(fork_key(source, &id), keys::encode(&l));
        }
        Ok(s)
    }

    /// Where `session` came from: one record for a fork or copy, one per source for a merge,
    /// none for a session made from scratch. Still answers after a source was deleted.
    pub fn lineage(&self, session: SessionId) -> Result<Vec<Lineage>> {
        let s = self.session(session)?;
        let sources = self.derived_from(session)?;
        let many = sources.len() > 1;
        let mut out = Vec::with_capacity(sources.len());
        for (source, ev) in sources {
            match self.backend().get(&fork_key(&source, &session))? {
                Some(b) => out.push(keys::decode::<Lineage>("lineage", &b)?),
                None => {
                    // Written with every forked event; rebuild it from the event if it is gone.
                    let checkpoint = match ev.kind {
                        EventKind::Forked { checkpoint_id, .. } => checkpoint_id,
                        _ => None,
                    };
                    out.push(Lineage {
                        session,
                        source,
                        checkpoint,
                        kind: if many {
                            LineageKind::Merge
                        } else if s.parent_id == Some(source) {
                            LineageKind::Fork
                        } else {
                            LineageKind::Copy
                        },
                        at: ev.at,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Every session made from `session` (forks, copies, merges), oldest first.
    pub fn forks(&self, session: SessionId) -> Result<Vec<Lineage>> {
        self.session(session)?;
        let prefix = Key::new(keys::FORK).sid(&session).build();
        RangeIter::prefix(self.backend(), &prefix, false)
            .map(|e| keys::decode::<Lineage>("lineage", &e?.1))
            .collect()
    }

    // ---------------------------------------------------------------- timeline

    /// A session's history (with [`TimelineOptions::subtree`], its subtree's) in time order,
    /// one page at a time: every event, with the artifact of each `artifact_stored` and the
    /// checkpoint of each `checkpoint_created` when they still exist. Content is not read:
    /// read it on demand with [`Store::read`].
    pub fn timeline(
        &self,
        session: SessionId,
        opts: &TimelineOptions,
    ) -> Result<Page<TimelineEntry>> {
        let limit = opts.limit;
        if limit == 0 || limit > MAX_LIMIT {
            return Err(Error::invalid(
                "limit",
                format!("{limit}; use 1 to {MAX_LIMIT}"),
            ));
        }
        let cursor = opts.cursor.as_deref().map(parse_cursor).transpose()?;
        let sessions = if opts.subtree {
            self.subtree_ids(session)?
        } else {
            self.session(session)?;
            vec![session]
        };
        let page = (limit + 1).min(256);
        let mut iters = Vec::with_capacity(sessions.len());
        let mut heap = BinaryHeap::new();
        for sid in sessions {
            let start = match &cursor {
                Some(c) => self.first_seq_after(sid, c)?,
                None => 1,
            };
            let prefix = Key::new(keys::EVENT).sid(&sid).build();
            let mut it = RangeIter::new(
                self.backend(),
                event_key(&sid, start),
                prefix_end(&prefix),
                false,
                page,
            );
            if let Some(e) = it.next() {
                let ev: Event = keys::decode("event", &e?.1)?;
                heap.push(Reverse((time_key(&ev), iters.len())));
                iters.push((it, Some(ev)));
            }
        }
        let mut items = Vec::new();
        while let Some(Reverse((_, i))) = heap.pop() {
            let (it, slot) = &mut iters[i];
            let Some(ev) = slot.take() else { continue };
            if let Some(e) = it.next() {
                let next: Event = keys::decode("event", &e?.1)?;
                heap.push(Reverse((time_key(&next), i)));
                *slot = Some(next);
            }
            items.push(ev);
            if items.len() > limit {
                break;
            }
        }
        let Page { items, next_cursor } =
            Page::from_overfetch(items, limit, |e| encode_cursor(&time_key(e)));
        let mut out = Vec::with_capacity(items.len());
        for event in items {
            let artifact = match &event.kind {
                EventKind::ArtifactStored { artifact_id, .. } => {
                    match self.artifact(event.session_id, *artifact_id) {
                        Ok(a) => Some(a),
                        Err(Error::ArtifactNotFound { .. }) => None,
                        Err(e) => return Err(e),
                    }
                }
                _ => None,
            };
            let checkpoint = match &event.kind {
                EventKind::CheckpointCreated { checkpoint_id, .. } => {
                    match self.checkpoint(*checkpoint_id) {
                        Ok(c) => Some(c),
                        Err(Error::CheckpointNotFound { .. }) => None,
                        Err(e) => return Err(e),
                    }
                }
                _ => None,
            };
            out.push(TimelineEntry {
                event,
                artifact,
                checkpoint,
            });
        }
        Ok(Page {
            items: out,
            next_cursor,
        })
    }

    /// The first sequence number of `sid`'s log that sorts after `c`. Events of one session are
    /// appended under the write lock with the wall clock, so their times do not go down: a
    /// binary search over sequence numbers finds the spot in O(log n) reads.
    fn first_seq_after(&self, sid: SessionId, c: &TimeKey) -> Result<u64> {
        if sid == c.1 {
            return Ok(c.2.saturating_add(1));
        }
        let prefix = Key::new(keys::EVENT).sid(&sid).build();
        let last = match self
            .backend()
            .scan(&prefix, &prefix_end(&prefix), true, 1)?
            .first()
        {
            Some((k, _)) if k.len() == prefix.len() + 8 => keys::u64_value(&k[prefix.len()..]),
            _ => return Ok(1),
        };
        let (mut lo, mut hi) = (1u64, last + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let after = match self.backend().get(&event_key(&sid, mid))? {
                Some(b) => time_key(&keys::decode::<Event>("event", &b)?) > *c,
                None => false,
            };
            if after {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }

    // ---------------------------------------------------------------- conversation history

    /// Appends a message to `session`'s conversation: it is stored as an artifact named
    /// `messages/<seq>-<role>` (kind `user_input` for the user, `tool_result` for tools,
    /// `agent_output` otherwise, tag `message`, metadata as given) and numbered in order.
    pub fn say(
        &self,
        session: SessionId,
        role: Role,
        content: &str,
        metadata: Map<String, Value>,
    ) -> Result<Message> {
        let new = NewArtifact::new(role.artifact_kind(), "messages/0")
            .tag("message")
            .metadata(metadata)
            .mime_type("text/plain; charset=utf-8");
        let checked = self.check_new(new)?;
        let s = self.session(session)?;
        if s.status.is_terminal() {
            return Err(Error::SessionClosed {
                id: session,
                status: s.status,
                message:
                    "a finished session takes no new messages; fork it to continue the conversation"
                        .into(),
            });
        }
        let prepared = self.prepare(&mut content.as_bytes())?;
        let staged = self.stage(prepared)?;
        self.write(|tx| {
            let prefix = history_prefix(&session);
            let seq = match self
                .backend()
                .scan(&prefix, &prefix_end(&prefix), true, 1)?
                .first()
            {
                Some((k, _)) if k.len() == prefix.len() + 8 => {
                    keys::u64_value(&k[prefix.len()..]) + 1
                }
                _ => 1,
            };
            let mut checked = checked.clone();
            checked.new.name = format!("messages/{seq:06}-{role}");
            let a = self.insert_artifact(tx, session, checked, &staged, None)?;
            tx.put(
                Key::new(keys::HISTORY).sid(&session).u64(seq).build(),
                keys::encode(&HistoryEntry {
                    artifact_id: a.id,
                    role,
                }),
            );
            Ok(Message {
                seq,
                role,
                content: content.to_string(),
                metadata: a.metadata,
                artifact_id: a.id,
                at: a.created_at,
            })
        })
    }

    /// The latest messages of `session`'s conversation, oldest first: the last `last_n`
    /// (all with `None`), never more than the session's `max_history` option. Messages whose
    /// artifact was deleted are left out.
    pub fn history(&self, session: SessionId, last_n: Option<usize>) -> Result<Vec<Message>> {
        let s = self.session(session)?;
        let mut n = last_n.unwrap_or(usize::MAX);
        if let Some(m) = s.options.max_history {
            n = n.min(m as usize);
        }
        let mut out = Vec::new();
        if n == 0 {
            return Ok(out);
        }
        for e in RangeIter::prefix(self.backend(), &history_prefix(&session), true) {
            let (k, v) = e?;
            let h: HistoryEntry = keys::decode("history", &v)?;
            let a = match self.artifact(session, h.artifact_id) {
                Ok(a) => a,
                Err(Error::ArtifactNotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            let bytes = self.read_content(&a.hash, a.size)?;
            let content = String::from_utf8(bytes).map_err(|_| Error::Corrupt {
                what: format!("message artifact {} is not UTF-8 text", a.id),
            })?;
            out.push(Message {
                seq: keys::u64_value(&k[k.len().saturating_sub(8)..]),
                role: h.role,
                content,
                metadata: a.metadata,
                artifact_id: a.id,
                at: a.created_at,
            });
            if out.len() >= n {
                break;
            }
        }
        out.reverse();
        Ok(out)
    }
}

// -------------------------------------------------------------------- bundles

/// How an importer maps the ids of a bundle to the ids in this store (the bundle module's
/// `IdMap` implements it).
#[allow(dead_code)] // used by the bundle module once both branches are merged
pub(crate) trait RemapIds {
    fn session(&mut self, old: SessionId) -> SessionId;
    fn artifact(&mut self, old: ArtifactId) -> ArtifactId;
    fn checkpoint(&mut self, old: CheckpointId) -> CheckpointId;
}

/// One exported record of this module: its kind (`checkpoint`, `history`, `lineage`), its JSON
/// body and the content hashes it references.
#[allow(dead_code)]
pub(crate) struct ExportedRecord {
    pub(crate) kind: &'static str,
    pub(crate) body: Value,
    pub(crate) hashes: Vec<crate::ids::ContentHash>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointBody {
    checkpoint: Checkpoint,
    artifacts: Vec<Artifact>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryBody {
    entries: Vec<(u64, HistoryEntry)>,
}

#[allow(dead_code)]
impl Store {
    /// This module's records for one session, for a bundle: every checkpoint (with its captured
    /// artifacts), the conversation order, and where the session came from.
    pub(crate) fn export_checkpoint_data(&self, session: SessionId) -> Result<Vec<ExportedRecord>> {
        let mut out = Vec::new();
        for cp in self.checkpoints(session)? {
            let artifacts = self.checkpoint_artifacts(cp.id)?;
            let mut hashes: Vec<_> = artifacts.iter().map(|a| a.hash).collect();
            hashes.extend(cp.state_blob.map(|b| b.hash));
            hashes.sort();
            hashes.dedup();
            let body = serde_json::to_value(CheckpointBody {
                checkpoint: cp,
                artifacts,
            })
            .map_err(|e| Error::Other {
                message: format!("cannot serialize a checkpoint: {e}"),
            })?;
            out.push(ExportedRecord {
                kind: "checkpoint",
                body,
                hashes,
            });
        }
        let mut entries = Vec::new();
        for e in RangeIter::prefix(self.backend(), &history_prefix(&session), false) {
            let (k, v) = e?;
            let h: HistoryEntry = keys::decode("history", &v)?;
            entries.push((keys::u64_value(&k[k.len().saturating_sub(8)..]), h));
        }
        if !entries.is_empty() {
            out.push(ExportedRecord {
                kind: "history",
                body: serde_json::to_value(HistoryBody { entries }).map_err(|e| Error::Other {
                    message: format!("cannot serialize a conversation: {e}"),
                })?,
                hashes: Vec::new(),
            });
        }
        for l in self.lineage(session)? {
            out.push(ExportedRecord {
                kind: "lineage",
                body: serde_json::to_value(&l).map_err(|e| Error::Other {
                    message: format!("cannot serialize lineage: {e}"),
                })?,
                hashes: Vec::new(),
            });
        }
        Ok(out)
    }

    /// Writes one record exported by [`Store::export_checkpoint_data`] inside an import's batch,
    /// mapping ids through `ids`. The record is untrusted: it is validated, it must belong to a
    /// session already written in `tx`, it never overwrites anything, and every blob it keeps
    /// must already be stored (one reference is taken per use, as on the write path).
    pub(crate) fn import_checkpoint_record_in(
        &self,
        tx: &mut Tx<'_>,
        ids: &mut dyn RemapIds,
        session: SessionId,
        kind: &str,
        body: &Value,
    ) -> Result<()> {
        let bad = |m: String| Error::invalid(format!("bundle {kind} record"), m);
        let sid = ids.session(session);
        self.tx_session(tx, sid)?;
        match kind {
            "checkpoint" => {
                let b: CheckpointBody =
                    serde_json::from_value(body.clone()).map_err(|e| bad(e.to_string()))?;
                let mut cp = b.checkpoint;
                if cp.session_id != session {
                    return Err(bad(format!(
                        "checkpoint {} names session {}, not {session}",
                        cp.id, cp.session_id
                    )));
                }
                validate_label(&cp.label)?;
                self.check_state(&cp.state)?;
                let limit = self.inner.config.limits.max_artifacts_per_session;
                if b.artifacts.len() as u64 > limit || cp.artifact_count != b.artifacts.len() as u64
                {
                    return Err(bad(format!(
                        "checkpoint {} lists {} artifacts (count {}, limit {limit})",
                        cp.id,
                        b.artifacts.len(),
                        cp.artifact_count
                    )));
                }
                cp.id = ids.checkpoint(cp.id);
                cp.session_id = sid;
                if tx.get(&cp_key(&cp.id))?.is_some() {
                    return Err(Error::AlreadyExists {
                        what: format!("checkpoint {}", cp.id),
                    });
                }
                let mut seen = HashSet::new();
                for mut a in b.artifacts {
                    if a.session_id != session || !seen.insert(a.id) {
                        return Err(bad(format!(
                            "artifact {} is listed twice or belongs to another session",
                            a.id
                        )));
                    }
                    crate::artifact::validate_name(&a.name)?;
                    let m = tx.retain_blob(&a.hash)?;
                    if m.size != a.size {
                        return Err(bad(format!(
                            "artifact {} says {} bytes; its content has {}",
                            a.id, a.size, m.size
                        )));
                    }
                    a.id = ids.artifact(a.id);
                    a.session_id = sid;
                    tx.put(
                        cp_member_key(&cp.id, &a.id),
                        crate::artifact::record::encode(&a),
                    );
                }
                if let Some(sb) = &cp.state_blob {
                    let m = tx.retain_blob(&sb.hash)?;
                    if m.size != sb.size {
                        return Err(bad(format!(
                            "the binary state says {} bytes; its content has {}",
                            sb.size, m.size
                        )));
                    }
                }
                tx.put(cp_key(&cp.id), keys::encode(&cp));
                tx.put(session_cp_key(&sid, &cp.id), vec![]);
                tx.add(super::counters::CHECKPOINTS, 1);
            }
            "history" => {
                let b: HistoryBody =
                    serde_json::from_value(body.clone()).map_err(|e| bad(e.to_string()))?;
                let limit = self.inner.config.limits.max_artifacts_per_session;
                if b.entries.len() as u64 > limit {
                    return Err(bad(format!(
                        "{} messages; the limit is {limit}",
                        b.entries.len()
                    )));
                }
                for (seq, mut h) in b.entries {
                    h.artifact_id = ids.artifact(h.artifact_id);
                    let k = Key::new(keys::HISTORY).sid(&sid).u64(seq).build();
                    if seq == 0 || tx.get(&k)?.is_some() {
                        return Err(bad(format!(
                            "message {seq} is out of range or listed twice"
                        )));
                    }
                    tx.put(k, keys::encode(&h));
                }
            }
            "lineage" => {
                let mut l: Lineage =
                    serde_json::from_value(body.clone()).map_err(|e| bad(e.to_string()))?;
                if l.session != session {
                    return Err(bad(format!(
                        "it names session {}, not {session}",
                        l.session
                    )));
                }
                l.session = sid;
                l.source = ids.session(l.source);
                l.checkpoint = l.checkpoint.map(|c| ids.checkpoint(c));
                tx.put(fork_key(&l.source, &sid), keys::encode(&l));
            }
            other => return Err(bad(format!("unknown kind {other:?}"))),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::BlobMeta;

    /// Checkpoint references plus artifact references equal every blob's stored count.
    #[test]
    fn checkpoint_refs_account_for_every_stored_count() {
        let s = Store::memory();
        let a = s.create_session(NewSession::new()).unwrap();
        let put = |name: &str, b: &[u8]| {
            s.put(
                a.id,
                NewArtifact::new(crate::ArtifactKind::ToolResult, name),
                b,
            )
            .unwrap()
        };
        let x = put("x", b"same");
        put("y", b"same");
        put("z", b"other");
        s.create_checkpoint(a.id, NewCheckpoint::new("1").state_bytes(b"same".to_vec()))
            .unwrap();
        s.delete_artifact(a.id, x.id).unwrap();
        let c2 = s.create_checkpoint(a.id, NewCheckpoint::new("2")).unwrap();
        s.fork(a.id, Some(c2.id), NewSession::new()).unwrap();
        s.delete_checkpoint(c2.id).unwrap();

        let mut refs = HashMap::new();
        s.checkpoint_blob_refs(&mut refs).unwrap();
        // Checkpoint 1 holds x, y, z and the state: "same" three times, "other" once.
        let same = crate::ContentHash::of(b"same");
        let other = crate::ContentHash::of(b"other");
        assert_eq!(refs.get(&same), Some(&3));
        assert_eq!(refs.get(&other), Some(&1));
        for e in RangeIter::prefix(s.backend(), &[keys::ARTIFACT], false) {
            let a: Artifact = crate::artifact::record::decode(&e.unwrap().1).unwrap();
            *refs.entry(a.hash).or_insert(0) += 1;
        }
        for h in [same, other] {
            let m = BlobMeta::decode(&s.backend().get(&keys::blob(&h)).unwrap().unwrap()).unwrap();
            assert_eq!(m.refs, refs[&h], "{h:?}");
        }
    }

    struct Same;
    impl RemapIds for Same {
        fn session(&mut self, old: SessionId) -> SessionId {
            old
        }
        fn artifact(&mut self, old: ArtifactId) -> ArtifactId {
            old
        }
        fn checkpoint(&mut self, old: CheckpointId) -> CheckpointId {
            old
        }
    }

    struct Fresh(HashMap<[u8; 16], [u8; 16]>, SessionId, SessionId);
    impl Fresh {
        fn map(&mut self, b: &[u8; 16]) -> [u8; 16] {
            *self
                .0
                .entry(*b)
                .or_insert_with(|| *ArtifactId::new().as_bytes())
        }
    }
    impl RemapIds for Fresh {
        fn session(&mut self, old: SessionId) -> SessionId {
            if old == self.1 {
                self.2
            } else {
                old
            }
        }
        fn artifact(&mut self, old: ArtifactId) -> ArtifactId {
            ArtifactId::from_bytes(self.map(old.as_bytes()))
        }
        fn checkpoint(&mut self, old: CheckpointId) -> CheckpointId {
            CheckpointId::from_bytes(self.map(old.as_bytes()))
        }
    }

    fn import_all(
        s: &Store,
        ids: &mut dyn RemapIds,
        from: SessionId,
        recs: &[ExportedRecord],
    ) -> Result<()> {
        s.write(|tx| {
            for r in recs {
                s.import_checkpoint_record_in(tx, ids, from, r.kind, &r.body)?;
            }
            Ok(())
        })
    }

    #[test]
    fn checkpoint_records_round_trip_through_export_and_import() {
        let a = Store::memory();
        let src = a.create_session(NewSession::new()).unwrap();
        let x = a
            .put(
                src.id,
                NewArtifact::new(crate::ArtifactKind::ToolResult, "x"),
                b"xx",
            )
            .unwrap();
        a.say(src.id, Role::User, "hi", Map::new()).unwrap();
        let cp = a
            .create_checkpoint(
                src.id,
                NewCheckpoint::new("c")
                    .state(serde_json::json!(1))
                    .state_bytes(b"st".to_vec()),
            )
            .unwrap();
        let fork = a.fork(src.id, Some(cp.id), NewSession::new()).unwrap();
        let recs = a.export_checkpoint_data(src.id).unwrap();
        assert_eq!(
            recs.iter().map(|r| r.kind).collect::<Vec<_>>(),
            ["checkpoint", "history"]
        );
        assert_eq!(recs[0].hashes.len(), 3, "x, the message and the state");
        let frecs = a.export_checkpoint_data(fork.id).unwrap();
        assert!(frecs.iter().any(|r| r.kind == "lineage"));

        // Into a store holding the same content under a new session (new ids).
        let b = Store::memory();
        let dst = b.create_session(NewSession::new()).unwrap();
        b.put(
            dst.id,
            NewArtifact::new(crate::ArtifactKind::ToolResult, "x"),
            b"xx",
        )
        .unwrap();
        // Without the content the import fails and stores nothing.
        let mut ids = Fresh(HashMap::new(), src.id, dst.id);
        let e = import_all(&b, &mut ids, src.id, &recs).unwrap_err();
        assert!(matches!(e, Error::ContentMissing { .. }), "{e}");
        assert!(b.checkpoints(dst.id).unwrap().is_empty());
        b.put(
            dst.id,
            NewArtifact::new(crate::ArtifactKind::ToolResult, "m"),
            b"hi",
        )
        .unwrap();
        b.put(
            dst.id,
            NewArtifact::new(crate::ArtifactKind::ToolResult, "s"),
            b"st",
        )
        .unwrap();
        import_all(&b, &mut ids, src.id, &recs).unwrap();
        let got = b.checkpoints(dst.id).unwrap();
        assert_eq!(got.len(), 1);
        assert_ne!(got[0].id, cp.id);
        assert_eq!(
            (got[0].label.as_str(), got[0].state.clone()),
            ("c", serde_json::json!(1))
        );
        assert_eq!(b.checkpoint_state_bytes(got[0].id).unwrap().unwrap(), b"st");
        let arts = b.checkpoint_artifacts(got[0].id).unwrap();
        assert_eq!(arts.len(), 2);
        assert!(arts.iter().all(|a| a.session_id == dst.id && a.id != x.id));
        // References were taken: deleting the live artifacts and collecting keeps the content.
        for a in b.list_artifacts(dst.id, false, 10, None).unwrap().items {
            b.delete_artifact(dst.id, a.id).unwrap();
        }
        b.gc().unwrap();
        assert_eq!(
            b.read_checkpoint_artifact(got[0].id, arts[0].id).unwrap(),
            b"xx"
        );
        // Importing again with the same ids is a conflict, not an overwrite.
        let e = import_all(&b, &mut ids, src.id, &recs).unwrap_err();
        assert!(matches!(e, Error::AlreadyExists { .. }), "{e}");

        // Altered records are refused.
        let mut evil = serde_json::to_value(&recs[0].body).unwrap();
        evil["artifacts"][0]["size"] = serde_json::json!(999);
        let c = Store::memory();
        let d = c.create_session(NewSession::new()).unwrap();
        c.put(
            d.id,
            NewArtifact::new(crate::ArtifactKind::ToolResult, "x"),
            b"xx",
        )
        .unwrap();
        let mut ids = Fresh(HashMap::new(), src.id, d.id);
        let r = ExportedRecord {
            kind: "checkpoint",
            body: evil,
            hashes: vec![],
        };
        let e = import_all(&c, &mut ids, src.id, &[r]).unwrap_err();
        assert_eq!(e.code(), "invalid_input", "{e}");
        let e = import_all(
            &c,
            &mut Same,
            d.id,
            &[ExportedRecord {
                kind: "nope",
                body: Value::Null,
                hashes: vec![],
            }],
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown kind"), "{e}");
    }
}
