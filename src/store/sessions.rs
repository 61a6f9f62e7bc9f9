//! Session operations: create, lifecycle, metadata, tree, listing, events, delete.

use std::collections::VecDeque;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::counters;
use super::{Store, Tx};
use crate::artifact::{normalize_tags, truncate_for_message};
use crate::backend::{prefix_end, RangeIter};
use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::ids::{ArtifactId, SessionId};
use crate::keys::{self, Key};
use crate::query::Page;
use crate::session::{
    MetadataUpdate, NewSession, ParentFilter, Session, SessionFilter, SessionStatus,
};

/// Longest session key, name or description, in bytes.
const MAX_TEXT: usize = 4096;

/// What a recursive delete removed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeleteReport {
    /// Sessions removed.
    pub sessions: u64,
    /// Artifacts removed.
    pub artifacts: u64,
}

fn check_text(what: &str, s: &str, allow_newlines: bool) -> Result<()> {
    if s.len() > MAX_TEXT {
        return Err(Error::invalid(
            what,
            format!(
                "{} is longer than {MAX_TEXT} bytes",
                truncate_for_message(s)
            ),
        ));
    }
    if s.chars()
        .any(|c| c.is_control() && !(allow_newlines && (c == '\n' || c == '\t' || c == '\r')))
    {
        return Err(Error::invalid(
            what,
            format!("{:?} contains control characters", truncate_for_message(s)),
        ));
    }
    Ok(())
}

fn status_key(s: SessionStatus, id: &SessionId) -> Vec<u8> {
    Key::new(keys::SESSION_STATUS).u8(s.code()).sid(id).build()
}

/// The index entries (key, value) of a session record, without the record itself.
pub(crate) fn session_index_entries(s: &Session) -> Vec<(Vec<u8>, Vec<u8>)> {
    let id = s.id;
    let mut out = Vec::with_capacity(3 + s.tags.len());
    if let Some(k) = &s.key {
        out.push((
            Key::new(keys::SESSION_KEY).bytes(k.as_bytes()).build(),
            id.as_bytes().to_vec(),
        ));
    }
    match &s.parent_id {
        Some(p) => out.push((Key::new(keys::CHILD).sid(p).sid(&id).build(), vec![])),
        None => out.push((Key::new(keys::ROOT).sid(&id).build(), vec![])),
    }
    out.push((status_key(s.status, &id), vec![]));
    for t in &s.tags {
        out.push((Key::new(keys::SESSION_TAG).str0(t).sid(&id).build(), vec![]));
    }
    out
}

impl Store {
    pub(crate) fn check_metadata(&self, m: &Map<String, Value>) -> Result<()> {
        let max = self.inner.config.limits.max_metadata_bytes;
        let len = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
        if len > max {
            return Err(Error::LimitExceeded {
                limit: "max_metadata_bytes",
                message: format!("metadata is {len} bytes of JSON; the limit is {max}"),
            });
        }
        Ok(())
    }

    pub(crate) fn check_tags(&self, tags: &[String]) -> Result<Vec<String>> {
        let tags = normalize_tags(tags)?;
        let max = self.inner.config.limits.max_tags;
        if tags.len() > max {
            return Err(Error::LimitExceeded {
                limit: "max_tags",
                message: format!("{} tags; the limit is {max}", tags.len()),
            });
        }
        Ok(tags)
    }

    /// Creates a session.
    pub fn create_session(&self, new: NewSession) -> Result<Session> {
        let tags = self.validate_new_session(&new)?;
        self.write(|tx| {
            let s = self.insert_session(tx, new.clone(), tags.clone(), None)?;
            Ok(s)
        })
    }

    /// Returns the session with `key`, creating it from `new` (with that key) if there is none.
    /// The boolean is true when it was created. Atomic: concurrent callers get the same session.
    pub fn get_or_create_by_key(&self, key: &str, new: NewSession) -> Result<(Session, bool)> {
        let new = new.key(key);
        let tags = self.validate_new_session(&new)?;
        self.write(|tx| {
            if let Some(s) = self.session_by_key(key)? {
                return Ok((s, false));
            }
            let s = self.insert_session(tx, new.clone(), tags.clone(), None)?;
            Ok((s, true))
        })
    }

    pub(crate) fn validate_new_session(&self, new: &NewSession) -> Result<Vec<String>> {
        if let Some(k) = &new.key {
            if k.is_empty() {
                return Err(Error::invalid("session key", "the key is empty"));
            }
            check_text("session key", k, false)?;
        }
        if let Some(n) = &new.name {
            check_text("session name", n, false)?;
        }
        if let Some(d) = &new.description {
            check_text("session description", d, true)?;
        }
        self.check_metadata(&new.metadata)?;
        self.check_tags(&new.tags)
    }

    /// Inserts a new session in `tx` with its `created` event. `id` lets callers choose ids.
    pub(crate) fn insert_session(
        &self,
        tx: &mut Tx<'_>,
        new: NewSession,
        tags: Vec<String>,
        id: Option<SessionId>,
    ) -> Result<Session> {
        let s = self.insert_session_record(tx, new, tags, id)?;
        tx.event(
            s.id,
            EventKind::Created {
                parent_id: s.parent_id,
            },
        )?;
        Ok(s)
    }

    /// Checks limits, parent and key, then writes a new session's record, indexes and counters
    /// in `tx`, without an event: the caller writes the session's first event (`created`, or
    /// `forked` for forks, copies and merges).
    pub(crate) fn insert_session_record(
        &self,
        tx: &mut Tx<'_>,
        new: NewSession,
        tags: Vec<String>,
        id: Option<SessionId>,
    ) -> Result<Session> {
        let max = self.inner.config.limits.max_sessions;
        if tx.counter(counters::SESSIONS)? as u64 >= max {
            return Err(Error::LimitExceeded {
                limit: "max_sessions",
                message: format!("the store holds {max} sessions already"),
            });
        }
        if let Some(p) = &new.parent {
            if tx.get(&keys::session(p))?.is_none() {
                return Err(Error::session_not_found(*p));
            }
        }
        if let Some(k) = &new.key {
            let kk = Key::new(keys::SESSION_KEY).bytes(k.as_bytes()).build();
            if let Some(v) = tx.get(&kk)? {
                return Err(Error::KeyConflict {
                    key: k.clone(),
                    existing: SessionId::from_slice(&v)?,
                });
            }
        }
        let id = id.unwrap_or_default();
        if tx.get(&keys::session(&id))?.is_some() {
            return Err(Error::AlreadyExists {
                what: format!("session {id}"),
            });
        }
        // created_at is the millisecond in the id, so time-range scans over ids and the
        // created_at filter agree exactly.
        let now = id.timestamp();
        let s = Session {
            id,
            key: new.key,
            name: new.name,
            description: new.description,
            parent_id: new.parent,
            status: SessionStatus::Active,
            tags,
            metadata: new.metadata,
            created_at: now,
            updated_at: now,
            ended_at: None,
            reason: None,
            options: new.options,
        };
        self.write_session_indexes(tx, &s);
        tx.add(counters::SESSIONS, 1);
        tx.add(counters::sessions_in(s.status), 1);
        Ok(s)
    }

    /// Writes a session record with every index entry (used on create and import).
    pub(crate) fn write_session_indexes(&self, tx: &mut Tx<'_>, s: &Session) {
        tx.put(keys::session(&s.id), keys::encode(s));
        for (k, v) in session_index_entries(s) {
            tx.put(k, v);
        }
    }

    /// The session with `id`.
    pub fn session(&self, id: SessionId) -> Result<Session> {
        match self.backend().get(&keys::session(&id))? {
            Some(b) => keys::decode("session", &b),
            None => Err(Error::session_not_found(id)),
        }
    }

    pub(crate) fn tx_session(&self, tx: &Tx<'_>, id: SessionId) -> Result<Session> {
        match tx.get(&keys::session(&id))? {
            Some(b) => keys::decode("session", &b),
            None => Err(Error::session_not_found(id)),
        }
    }

    /// The session with this key, if any.
    pub fn session_by_key(&self, key: &str) -> Result<Option<Session>> {
        let kk = Key::new(keys::SESSION_KEY).bytes(key.as_bytes()).build();
        match self.backend().get(&kk)? {
            Some(v) => self.session(SessionId::from_slice(&v)?).map(Some),
            None => Ok(None),
        }
    }

    /// Moves a session to `to`, recording `reason`. Invalid transitions change nothing.
    pub fn transition(
        &self,
        id: SessionId,
        to: SessionStatus,
        reason: Option<&str>,
    ) -> Result<Session> {
        if let Some(r) = reason {
            check_text("reason", r, true)?;
        }
        self.write(|tx| {
            let s = self.transition_in(tx, id, to, reason)?;
            Ok(s)
        })
    }

    /// The transition inside an open batch (budgets and expiry use it too).
    pub(crate) fn transition_in(
        &self,
        tx: &mut Tx<'_>,
        id: SessionId,
        to: SessionStatus,
        reason: Option<&str>,
    ) -> Result<Session> {
        let mut s = self.tx_session(tx, id)?;
        let from = s.status;
        if !from.can_transition_to(to) {
            return Err(Error::InvalidTransition { id, from, to });
        }
        let now = Utc::now();
        s.status = to;
        s.updated_at = now;
        if to.is_terminal() {
            s.ended_at = Some(now);
        }
        s.reason = reason.map(str::to_string);
        tx.del(status_key(from, &id));
        tx.put(status_key(to, &id), vec![]);
        tx.put(keys::session(&id), keys::encode(&s));
        tx.add(counters::sessions_in(from), -1);
        tx.add(counters::sessions_in(to), 1);
        tx.event(
            id,
            EventKind::StatusChanged {
                from,
                to,
                reason: s.reason.clone(),
            },
        )?;
        Ok(s)
    }

    /// Active -> suspended.
    pub fn suspend(&self, id: SessionId) -> Result<Session> {
        self.transition(id, SessionStatus::Suspended, None)
    }
    /// Suspended -> active.
    pub fn resume(&self, id: SessionId) -> Result<Session> {
        self.transition(id, SessionStatus::Active, None)
    }
    /// -> completed.
    pub fn complete(&self, id: SessionId) -> Result<Session> {
        self.transition(id, SessionStatus::Completed, None)
    }
    /// -> failed, with a reason.
    pub fn fail(&self, id: SessionId, reason: Option<&str>) -> Result<Session> {
        self.transition(id, SessionStatus::Failed, reason)
    }
    /// -> cancelled, with a reason.
    pub fn cancel(&self, id: SessionId, reason: Option<&str>) -> Result<Session> {
        self.transition(id, SessionStatus::Cancelled, reason)
    }

    /// Merges into or replaces a session's metadata.
    pub fn update_metadata(&self, id: SessionId, update: MetadataUpdate) -> Result<Session> {
        self.modify_session(id, |s| {
            update.apply(&mut s.metadata);
            Ok(())
        })
    }

    /// Adds and removes tags.
    pub fn update_tags(&self, id: SessionId, add: &[String], remove: &[String]) -> Result<Session> {
        self.modify_session(id, |s| {
            let mut t = s.tags.clone();
            t.extend(add.iter().cloned());
            t.retain(|x| !remove.contains(x));
            s.tags = t;
            Ok(())
        })
    }

    /// Changes the session's options (pin, budgets, history bound).
    pub fn set_session_options(
        &self,
        id: SessionId,
        options: crate::session::SessionOptions,
    ) -> Result<Session> {
        self.modify_session(id, |s| {
            s.options = options.clone();
            Ok(())
        })
    }

    fn modify_session(
        &self,
        id: SessionId,
        f: impl Fn(&mut Session) -> Result<()>,
    ) -> Result<Session> {
        self.write(|tx| {
            let old = self.tx_session(tx, id)?;
            let mut s = old.clone();
            f(&mut s)?;
            s.tags = self.check_tags(&s.tags)?;
            self.check_metadata(&s.metadata)?;
            s.updated_at = Utc::now();
            for t in &old.tags {
                if !s.tags.contains(t) {
                    tx.del(Key::new(keys::SESSION_TAG).str0(t).sid(&id).build());
                }
            }
            for t in &s.tags {
                tx.put(Key::new(keys::SESSION_TAG).str0(t).sid(&id).build(), vec![]);
            }
            tx.put(keys::session(&id), keys::encode(&s));
            tx.event(
                id,
                EventKind::MetadataUpdated {
                    metadata: s.metadata.clone(),
                },
            )?;
            Ok(s)
        })
    }

    /// Direct children, oldest first.
    pub fn children(&self, id: SessionId) -> Result<Vec<Session>> {
        self.session(id)?;
        self.child_ids(id)?
            .into_iter()
            .map(|c| self.session(c))
            .collect()
    }

    pub(crate) fn child_ids(&self, id: SessionId) -> Result<Vec<SessionId>> {
        let prefix = Key::new(keys::CHILD).sid(&id).build();
        RangeIter::prefix(self.backend(), &prefix, false)
            .map(|e| Ok(SessionId::from_bytes(keys::tail16(&e?.0)?)))
            .collect()
    }

    /// Parent, grandparent, ... up to the root.
    pub fn ancestors(&self, id: SessionId) -> Result<Vec<Session>> {
        let mut out = Vec::new();
        let mut cur = self.session(id)?;
        while let Some(p) = cur.parent_id {
            if out.len() > 100_000 {
                return Err(Error::Corrupt {
                    what: format!("session {id} has a cycle in its ancestry"),
                });
            }
            cur = self.session(p)?;
            out.push(cur.clone());
        }
        Ok(out)
    }

    /// The session and all its descendants, breadth first.
    pub fn subtree(&self, id: SessionId) -> Result<Vec<Session>> {
        self.subtree_ids(id)?
            .into_iter()
            .map(|s| self.session(s))
            .collect()
    }

    /// Ids of the session and all its descendants, breadth first.
    pub fn subtree_ids(&self, id: SessionId) -> Result<Vec<SessionId>> {
        self.session(id)?;
        let mut out = vec![id];
        let mut queue = VecDeque::from([id]);
        while let Some(s) = queue.pop_front() {
            for c in self.child_ids(s)? {
                out.push(c);
                queue.push_back(c);
            }
        }
        Ok(out)
    }

    /// Lists sessions matching `filter`, oldest first, one page at a time.
    pub fn list_sessions(&self, filter: &SessionFilter) -> Result<Page<Session>> {
        let limit = filter.limit.unwrap_or(crate::query::DEFAULT_LIMIT);
        if limit == 0 || limit > crate::query::MAX_LIMIT {
            return Err(Error::invalid("limit", format!("{limit}; use 1 to 100000")));
        }
        for t in &filter.tags {
            crate::artifact::validate_tag(t)?;
        }
        let mut items = Vec::new();
        if let Some(k) = &filter.key {
            if let Some(s) = self.session_by_key(k)? {
                if filter.matches(&s) && filter.cursor.is_none_or(|c| s.id > c) {
                    items.push(s);
                }
            }
            return Ok(Page {
                items,
                next_cursor: None,
            });
        }
        // Pick an index whose keys end in the session id, so results come in id (time) order.
        let prefix = if let ParentFilter::Of(p) = &filter.parent {
            Key::new(keys::CHILD).sid(p).build()
        } else if filter.parent == ParentFilter::Roots {
            vec![keys::ROOT]
        } else if filter.statuses.len() == 1 {
            Key::new(keys::SESSION_STATUS)
                .u8(filter.statuses[0].code())
                .build()
        } else if let Some(t) = filter.tags.first() {
            Key::new(keys::SESSION_TAG).str0(t).build()
        } else {
            vec![keys::SESSION]
        };
        let mut start = prefix.clone();
        let mut end = prefix_end(&prefix);
        if let Some(from) = filter.created.0 {
            start = Key::new(0)
                .bytes(&prefix)
                .sid(&SessionId::min_at(from))
                .build()[1..]
                .to_vec();
        }
        if let Some(to) = filter.created.1 {
            end = Key::new(0)
                .bytes(&prefix)
                .sid(&SessionId::min_after(to))
                .build()[1..]
                .to_vec();
        }
        if let Some(c) = &filter.cursor {
            let mut s = Key::new(0).bytes(&prefix).sid(c).build()[1..].to_vec();
            s.push(0);
            start = start.max(s);
        }
        let records = prefix == [keys::SESSION];
        for e in RangeIter::new(self.backend(), start, end, false, 128) {
            let (k, v) = e?;
            let s: Session = if records {
                keys::decode("session", &v)?
            } else {
                match self.session(SessionId::from_bytes(keys::tail16(&k)?)) {
                    Ok(s) => s,
                    Err(Error::SessionNotFound { .. }) => continue,
                    Err(e) => return Err(e),
                }
            };
            if filter.matches(&s) {
                items.push(s);
                if items.len() > limit {
                    break;
                }
            }
        }
        Ok(Page::from_overfetch(items, limit, |s| s.id.to_string()))
    }

    /// Appends a custom event with a JSON payload.
    pub fn append_event(&self, id: SessionId, name: &str, payload: Value) -> Result<Event> {
        check_text("event name", name, false)?;
        if name.is_empty() {
            return Err(Error::invalid("event name", "the name is empty"));
        }
        let max = self.inner.config.limits.max_metadata_bytes;
        let len = serde_json::to_vec(&payload)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if len > max {
            return Err(Error::LimitExceeded {
                limit: "max_metadata_bytes",
                message: format!("event payload is {len} bytes of JSON; the limit is {max}"),
            });
        }
        self.write(|tx| {
            self.tx_session(tx, id)?;
            let ev = tx.event(
                id,
                EventKind::Custom {
                    name: name.to_string(),
                    payload: payload.clone(),
                },
            )?;
            Ok(ev)
        })
    }

    /// Reads a session's events in order, after sequence number `after` (0 or `None`: from the start).
    pub fn events(&self, id: SessionId, after: Option<u64>, limit: usize) -> Result<Page<Event>> {
        self.session(id)?;
        let limit = limit.clamp(1, crate::query::MAX_LIMIT);
        let from = after.unwrap_or(0).saturating_add(1);
        let mut items = Vec::new();
        for e in super::event_log::EventIter::new(self.backend(), &id, from, limit + 1) {
            items.push(e?);
            if items.len() > limit {
                break;
            }
        }
        Ok(Page::from_overfetch(items, limit, |e| e.seq.to_string()))
    }

    /// Deletes a session. With children, `recursive` is required and the whole subtree goes,
    /// with all its artifacts (their content becomes garbage for [`Store::gc`]).
    pub fn delete_session(&self, id: SessionId, recursive: bool) -> Result<DeleteReport> {
        self.write_batches(|w| {
            self.session(id)?;
            let kids = self.child_ids(id)?;
            if !kids.is_empty() && !recursive {
                return Err(Error::HasChildren {
                    id,
                    children: kids.len(),
                });
            }
            // Deepest first, so that a crash part way leaves a consistent (smaller) tree.
            let mut order = self.subtree_ids(id)?;
            order.reverse();
            let mut report = DeleteReport::default();
            for sid in order {
                // Artifacts in bounded batches; the last one removes the session too, so that
                // "no artifact left" and the removal are one transaction (on a shared engine,
                // another process may put an artifact in between two batches).
                loop {
                    let removed = w.batch(|tx| {
                        const BATCH: usize = 1000;
                        let prefix = Key::new(keys::SESSION_ARTIFACT).sid(&sid).build();
                        let batch = tx.scan(&prefix, &prefix_end(&prefix), false, BATCH)?;
                        let mut removed = 0;
                        for (k, _) in &batch {
                            let aid = ArtifactId::from_bytes(keys::tail16(k)?);
                            if self.remove_artifact_in(tx, aid)? {
                                removed += 1;
                            } else {
                                tx.del(k.clone()); // a dangling index entry: drop it
                            }
                        }
                        let last = batch.len() < BATCH;
                        if last {
                            self.remove_session_in(tx, sid)?;
                        }
                        Ok((last, removed))
                    })?;
                    report.artifacts += removed.1;
                    if removed.0 {
                        break;
                    }
                }
                report.sessions += 1;
            }
            Ok(report)
        })
    }

    /// Removes one session's record, indexes, events and extension data (not its artifacts).
    pub(crate) fn remove_session_in(&self, tx: &mut Tx<'_>, id: SessionId) -> Result<()> {
        let s = self.tx_session(tx, id)?;
        // Checkpoints (releasing their blob references), lineage and history go with the session.
        self.remove_checkpoint_data_in(tx, id)?;
        tx.del(keys::session(&id));
        if let Some(k) = &s.key {
            tx.del(Key::new(keys::SESSION_KEY).bytes(k.as_bytes()).build());
        }
        match &s.parent_id {
            Some(p) => tx.del(Key::new(keys::CHILD).sid(p).sid(&id).build()),
            None => tx.del(Key::new(keys::ROOT).sid(&id).build()),
        }
        tx.del(status_key(s.status, &id));
        for t in &s.tags {
            tx.del(Key::new(keys::SESSION_TAG).str0(t).sid(&id).build());
        }
        for table in [
            keys::EVENT,
            keys::METRIC,
            keys::SESSION_CHECKPOINT,
            keys::REQUEST,
        ] {
            let prefix = Key::new(table).sid(&id).build();
            for e in RangeIter::prefix(self.backend(), &prefix, false) {
                tx.del(e?.0);
            }
        }
        tx.forget_session(&id);
        tx.add(counters::SESSIONS, -1);
        tx.add(counters::sessions_in(s.status), -1);
        let sa = counters::session_artifacts(&id);
        let n = tx.counter(&sa)?;
        tx.add(&sa, -n);
        Ok(())
    }
}
