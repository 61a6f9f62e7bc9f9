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
//!
//! One file per idea: this one holds the keys shared by all of them and checkpoint records
//! (create, read, list, delete, prune, and their blob references); `restore` puts a session back
//! to a checkpoint; `lineage` forks, copies and merges sessions and records where they came
//! from; `timeline` pages a session's events in time order; `history` is the conversation;
//! `transfer` exports and imports these records for bundles.

mod history;
mod lineage;
mod restore;
mod timeline;
mod transfer;

pub(crate) use self::transfer::RemapIds;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Store, Tx};
use crate::artifact::Artifact;
use crate::backend::{prefix_end, RangeIter};
use crate::checkpoint::{validate_label, Checkpoint, NewCheckpoint, Role, StateBlob};
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::ids::{ArtifactId, CheckpointId, SessionId};
use crate::keys::{self, Key};
use crate::query::{Page, MAX_LIMIT};

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::NewArtifact;
    use crate::content::BlobMeta;
    use crate::session::NewSession;

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
}
