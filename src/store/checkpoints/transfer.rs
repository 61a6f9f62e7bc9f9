//! Export and import of this module's records (checkpoints, conversation order, lineage)
//! for bundles.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::*;
use crate::artifact::Artifact;
use crate::backend::RangeIter;
use crate::checkpoint::{validate_label, Checkpoint, Lineage};
use crate::error::{Error, Result};
use crate::ids::{ArtifactId, CheckpointId, SessionId};
use crate::keys::{self, Key};
use crate::store::{Store, Tx};

/// How an importer maps the ids of a bundle to the ids in this store (the bundle module's
/// `IdMap` implements it).
pub(crate) trait RemapIds {
    fn session(&mut self, old: SessionId) -> SessionId;
    fn artifact(&mut self, old: ArtifactId) -> ArtifactId;
    fn checkpoint(&mut self, old: CheckpointId) -> CheckpointId;
}

/// One exported record of this module: its kind (`checkpoint`, `history`, `lineage`), its JSON
/// body and the content hashes it references.
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
                tx.add(crate::store::counters::CHECKPOINTS, 1);
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
    use std::collections::HashMap;

    use serde_json::Map;

    use super::*;
    use crate::artifact::NewArtifact;
    use crate::checkpoint::{NewCheckpoint, Role};
    use crate::session::NewSession;

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
