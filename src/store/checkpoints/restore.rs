//! Restoring a session to a checkpoint, and the artifact copy that restore and forks share.

use std::collections::HashSet;

use super::*;
use crate::artifact::Artifact;
use crate::checkpoint::RestoreReport;
use crate::content::Codec;
use crate::error::{Error, Result};
use crate::events::EventKind;
use crate::ids::{ArtifactId, CheckpointId, SessionId};
use crate::keys::{self};
use crate::store::{Store, Tx};

impl Store {
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
    pub(super) fn copy_artifact_in(
        &self,
        tx: &mut Tx<'_>,
        session: SessionId,
        template: &Artifact,
        id: Option<ArtifactId>,
        version: Option<u32>,
    ) -> Result<Artifact> {
        let limit = self.inner.config.limits.max_artifacts_per_session;
        let count_key = crate::store::counters::session_artifacts(&session);
        if tx.counter(&count_key)? as u64 >= limit {
            return Err(Error::LimitExceeded {
                limit: "max_artifacts_per_session",
                message: format!(
                    "session {session} would hold more than {limit} artifacts; nothing was stored"
                ),
            });
        }
        let meta = tx.retain_blob(&template.hash)?;
        let latest = tx.latest_version(&session, &template.name)?;
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
        self.add_artifact_in(tx, &a)?;
        Ok(a)
    }
}
