//! Fork, copy and merge of sessions, and the lineage records that say where a session came from.

use std::collections::{HashMap, HashSet};

use super::*;
use crate::artifact::Artifact;
use crate::backend::RangeIter;
use crate::checkpoint::{CopyOptions, Lineage, LineageKind, Role};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::ids::{ArtifactId, CheckpointId, SessionId};
use crate::keys::{self, Key};
use crate::session::{NewSession, Session};
use crate::store::{Store, Tx};

impl Store {
    /// The sources recorded by a session's leading `forked` events.
    pub(super) fn derived_from(&self, id: SessionId) -> Result<Vec<(SessionId, Event)>> {
        let mut out = Vec::new();
        for e in crate::store::event_log::EventIter::new(self.backend(), &id, 1, 16) {
            let ev: Event = e?;
            match &ev.kind {
                EventKind::Forked { source_session, .. } => out.push((*source_session, ev.clone())),
                _ => break,
            }
        }
        Ok(out)
    }

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
}
