//! Expiry of idle sessions and retention policies that keep storage from growing without end.
//!
//! A retention run first plans (read-only), then, unless it is a dry run, carries the plan out:
//! every removal is decided again under the write lock, so a session pinned or changed since the
//! plan is left alone. With nothing changing in between, a dry run reports exactly what the real
//! run then removes, down to the bytes garbage collection frees. Pinned sessions, and pinned
//! artifacts, are never touched; a session holding a pinned artifact, or with a child that is
//! kept, is kept whole.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::artifact::{Artifact, ArtifactKind};
use crate::backend::{prefix_end, RangeIter};
use crate::content::BlobMeta;
use crate::error::{Error, Result};
use crate::ids::{ArtifactId, ContentHash, SessionId};
use crate::keys::{self, Key};
use crate::metrics::LAST_ACTIVITY_MS;
use crate::session::{Session, SessionStatus};
use crate::store::Store;

fn chrono_duration(what: &str, d: Duration) -> Result<chrono::Duration> {
    chrono::Duration::from_std(d).map_err(|_| {
        Error::invalid(
            what,
            format!("{d:?} is too long; use at most a few thousand years"),
        )
    })
}

/// `now - d`, or a clear error when that is before the earliest time a timestamp can hold
/// (an age of many thousand years), instead of chrono's overflow panic.
fn before(now: DateTime<Utc>, what: &str, d: Duration) -> Result<DateTime<Utc>> {
    let d = chrono_duration(what, d)?;
    now.checked_sub_signed(d).ok_or_else(|| {
        Error::invalid(
            what,
            format!("{d} reaches before the earliest time a timestamp can hold; use at most a few thousand years"),
        )
    })
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 86_400 && s % 86_400 == 0 {
        format!("{}d", s / 86_400)
    } else if s >= 3600 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s >= 60 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

/// What [`Store::expire_inactive`] did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExpiryReport {
    /// The idle limit applied, in seconds (fractional).
    pub max_idle_secs: f64,
    /// Live sessions looked at.
    pub checked: u64,
    /// Sessions moved to `expired`, oldest first.
    pub expired: Vec<SessionId>,
    /// Idle sessions left alone because they are pinned.
    pub pinned_skipped: u64,
}

impl Store {
    /// Moves every active or suspended session idle for longer than `max_idle` to `expired`.
    /// `None` uses the configuration's `default_idle_timeout_secs` (an error if it is not set).
    ///
    /// A session's last activity is the latest of its `updated_at`, its newest event, its newest
    /// artifact and its last metrics or iteration update. Pinned sessions are never expired.
    pub fn expire_inactive(&self, max_idle: impl Into<Option<Duration>>) -> Result<ExpiryReport> {
        self.expire_inactive_at(max_idle, Utc::now())
    }

    /// [`Store::expire_inactive`] as of the time `now` (for schedulers and tests).
    pub fn expire_inactive_at(
        &self,
        max_idle: impl Into<Option<Duration>>,
        now: DateTime<Utc>,
    ) -> Result<ExpiryReport> {
        let max_idle = match max_idle.into() {
            Some(d) => d,
            None => match self.config().default_idle_timeout_secs {
                Some(s) => Duration::from_secs(s),
                None => {
                    return Err(Error::invalid(
                        "idle timeout",
                        "none given and the configuration sets no default_idle_timeout_secs; \
                         pass a duration or set default_idle_timeout_secs",
                    ))
                }
            },
        };
        let cutoff = before(now, "idle timeout", max_idle)?;
        let mut report = ExpiryReport {
            max_idle_secs: max_idle.as_secs_f64(),
            ..Default::default()
        };
        let mut candidates = Vec::new();
        for status in [SessionStatus::Active, SessionStatus::Suspended] {
            for id in self.ids_with_status(status)? {
                let s = match self.session(id) {
                    Ok(s) => s,
                    Err(Error::SessionNotFound { .. }) => continue,
                    Err(e) => return Err(e),
                };
                report.checked += 1;
                if self.last_activity_of(&s)? >= cutoff {
                    continue;
                }
                if s.options.pinned {
                    report.pinned_skipped += 1;
                } else {
                    candidates.push(id);
                }
            }
        }
        candidates.sort();
        let reason = format!("inactive for more than {}", human(max_idle));
        for chunk in candidates.chunks(256) {
            let expired = self.write(|tx| {
                let mut expired = Vec::new();
                for id in chunk {
                    // Decide again under the lock: activity since the scan keeps the session alive.
                    let s = match self.tx_session(tx, *id) {
                        Ok(s) => s,
                        Err(Error::SessionNotFound { .. }) => continue,
                        Err(e) => return Err(e),
                    };
                    if s.status.is_terminal()
                        || s.options.pinned
                        || self.last_activity_of(&s)? >= cutoff
                    {
                        continue;
                    }
                    self.transition_in(tx, *id, SessionStatus::Expired, Some(&reason))?;
                    expired.push(*id);
                }
                Ok(expired)
            })?;
            report.expired.extend(expired);
        }
        Ok(report)
    }

    /// When the session was last active: the latest of its `updated_at`, newest event, newest
    /// artifact and last metrics update.
    pub fn last_activity(&self, session: SessionId) -> Result<DateTime<Utc>> {
        let s = self.session(session)?;
        self.last_activity_of(&s)
    }

    fn last_activity_of(&self, s: &Session) -> Result<DateTime<Utc>> {
        let mut t = s.updated_at;
        if let Some(e) = crate::store::event_log::last_event(self.backend(), &s.id)? {
            t = t.max(e.at);
        }
        let a_prefix = Key::new(keys::SESSION_ARTIFACT).sid(&s.id).build();
        if let Some((k, _)) = self
            .backend()
            .scan(&a_prefix, &prefix_end(&a_prefix), true, 1)?
            .into_iter()
            .next()
        {
            t = t.max(ArtifactId::from_bytes(keys::tail16(&k)?).timestamp());
        }
        let mk = Key::new(keys::METRIC)
            .sid(&s.id)
            .bytes(LAST_ACTIVITY_MS.as_bytes())
            .build();
        if let Some(v) = self.backend().get(&mk)? {
            let ms = keys::u64_value(&v);
            if let Some(m) = DateTime::<Utc>::from_timestamp_millis(ms.min(i64::MAX as u64) as i64)
            {
                t = t.max(m);
            }
        }
        Ok(t)
    }
}

/// Which rules to apply. Build with [`RetentionPolicy::new`] and the chained setters; run with
/// [`Store::apply_retention`].
///
/// ```
/// use std::time::Duration;
/// use cairn::{ArtifactKind, RetentionPolicy, SessionStatus};
/// let day = Duration::from_secs(86_400);
/// let p = RetentionPolicy::new()
///     .sessions_older_than(30 * day)
///     .status(SessionStatus::Failed)
///     .keep_versions(5)
///     .kind_ttl(ArtifactKind::ToolResult, 7 * day)
///     .dry_run(true);
/// # let _ = p;
/// ```
#[derive(Clone, Debug, Default)]
pub struct RetentionPolicy {
    older_than: Option<Duration>,
    statuses: Vec<SessionStatus>,
    tags: Vec<String>,
    keep_versions: Option<u32>,
    kind_ttl: Vec<(ArtifactKind, Duration)>,
    dry_run: bool,
    as_of: Option<DateTime<Utc>>,
}

impl RetentionPolicy {
    /// No rules yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Delete terminal sessions (completed, failed, cancelled, expired, timed out) that ended
    /// more than `age` ago, with their artifacts and whole subtree.
    pub fn sessions_older_than(mut self, age: Duration) -> Self {
        self.older_than = Some(age);
        self
    }
    /// With [`RetentionPolicy::sessions_older_than`]: only sessions with this terminal status
    /// (repeat for several).
    pub fn status(mut self, s: SessionStatus) -> Self {
        self.statuses.push(s);
        self
    }
    /// With [`RetentionPolicy::sessions_older_than`]: only sessions carrying this tag (repeat:
    /// all of them).
    pub fn tag(mut self, t: impl Into<String>) -> Self {
        self.tags.push(t.into());
        self
    }
    /// Keep only the newest `n` versions of each artifact name in each session.
    pub fn keep_versions(mut self, n: u32) -> Self {
        self.keep_versions = Some(n);
        self
    }
    /// Delete artifacts of `kind` created more than `ttl` ago.
    pub fn kind_ttl(mut self, kind: ArtifactKind, ttl: Duration) -> Self {
        self.kind_ttl.retain(|(k, _)| *k != kind);
        self.kind_ttl.push((kind, ttl));
        self
    }
    /// Report what would be removed and change nothing.
    pub fn dry_run(mut self, yes: bool) -> Self {
        self.dry_run = yes;
        self
    }
    /// Measure ages from `now` instead of the current time (for schedulers and tests).
    pub fn as_of(mut self, now: DateTime<Utc>) -> Self {
        self.as_of = Some(now);
        self
    }

    fn validate(&self) -> Result<()> {
        if self.older_than.is_none() && self.keep_versions.is_none() && self.kind_ttl.is_empty() {
            return Err(Error::invalid(
                "retention policy",
                "it has no rule; set sessions_older_than, keep_versions or kind_ttl",
            ));
        }
        if self.older_than.is_none() && (!self.statuses.is_empty() || !self.tags.is_empty()) {
            return Err(Error::invalid(
                "retention policy",
                "a status or tag selects sessions to delete only together with sessions_older_than \
                 (use a zero age to ignore age)",
            ));
        }
        for s in &self.statuses {
            if !s.is_terminal() {
                return Err(Error::invalid(
                    "retention policy",
                    format!(
                        "status {s} is not terminal; retention deletes only completed, failed, \
                         cancelled, expired or timed_out sessions"
                    ),
                ));
            }
        }
        for t in &self.tags {
            crate::artifact::validate_tag(t)?;
        }
        if self.keep_versions == Some(0) {
            return Err(Error::invalid(
                "retention policy",
                "keep_versions 0 would delete every version; keep at least 1 (use kind_ttl or \
                 sessions_older_than to delete whole artifacts or sessions)",
            ));
        }
        Ok(())
    }
}

/// Which rule removes an artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionRule {
    /// An older version beyond `keep_versions`.
    KeepVersions,
    /// Older than its kind's time to live.
    KindTtl,
}

/// A session a retention run removes (or would remove).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionRemoval {
    /// The session.
    pub id: SessionId,
    /// Its status.
    pub status: SessionStatus,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Artifacts it held.
    pub artifacts: u64,
    /// Their logical size in bytes.
    pub bytes: u64,
}

/// An artifact a retention run removes (or would remove) from a session that stays.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArtifactRemoval {
    /// The artifact.
    pub id: ArtifactId,
    /// Its session.
    pub session_id: SessionId,
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// Its kind.
    pub kind: ArtifactKind,
    /// Its size in bytes.
    pub size: u64,
    /// The rule that removes it.
    pub rule: RetentionRule,
}

/// What a retention run removed, or with a dry run would remove.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetentionReport {
    /// True when nothing was changed.
    pub dry_run: bool,
    /// The time ages were measured from.
    pub as_of: DateTime<Utc>,
    /// Sessions removed, children before parents.
    pub sessions: Vec<SessionRemoval>,
    /// Artifacts removed from sessions that stay, in id order.
    pub artifacts: Vec<ArtifactRemoval>,
    /// All artifacts removed, including those inside removed sessions.
    pub artifacts_removed: u64,
    /// Their logical size in bytes.
    pub logical_bytes_removed: u64,
    /// Sessions a rule selected that were kept because they are pinned.
    pub kept_pinned_sessions: u64,
    /// Artifacts a rule selected that were kept because they are pinned (or their session holds
    /// a pinned artifact).
    pub kept_pinned_artifacts: u64,
    /// Old terminal sessions kept because a child session is kept.
    pub kept_with_kept_children: u64,
    /// Blobs garbage collection removed (dry run: would remove).
    pub blobs_freed: u64,
    /// Stored bytes garbage collection freed (dry run: would free), including content already
    /// unreferenced before the run.
    pub bytes_freed: u64,
}

/// Progress of a retention run, for progress bars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionProgress {
    /// What is being done: `"planning"`, `"sessions"`, `"artifacts"` or `"gc"`.
    pub phase: &'static str,
    /// Items done in this phase.
    pub done: u64,
    /// Items in this phase.
    pub total: u64,
}

/// The read-only plan.
struct Plan {
    now: DateTime<Utc>,
    cutoff: Option<DateTime<Utc>>,
    sessions: Vec<SessionRemoval>,
    artifacts: Vec<ArtifactRemoval>,
    /// Hash -> references the plan drops.
    released: HashMap<ContentHash, u64>,
    artifacts_in_sessions: u64,
    bytes_in_sessions: u64,
    kept_pinned_sessions: u64,
    kept_pinned_artifacts: u64,
    kept_with_kept_children: u64,
}

impl Store {
    /// Runs a retention policy: plans, then (unless it is a dry run) removes what the plan
    /// selected and collects the freed content. See the module docs for the guarantees.
    pub fn apply_retention(&self, policy: &RetentionPolicy) -> Result<RetentionReport> {
        self.apply_retention_with_progress(policy, |_| {})
    }

    /// [`Store::apply_retention`], calling `progress` as it goes.
    pub fn apply_retention_with_progress(
        &self,
        policy: &RetentionPolicy,
        mut progress: impl FnMut(RetentionProgress),
    ) -> Result<RetentionReport> {
        policy.validate()?;
        progress(RetentionProgress {
            phase: "planning",
            done: 0,
            total: 1,
        });
        let plan = self.plan_retention(policy)?;
        progress(RetentionProgress {
            phase: "planning",
            done: 1,
            total: 1,
        });
        if policy.dry_run {
            let (blobs_freed, bytes_freed) = self.bytes_freed_by(&plan.released)?;
            return Ok(RetentionReport {
                dry_run: true,
                as_of: plan.now,
                artifacts_removed: plan.artifacts_in_sessions + plan.artifacts.len() as u64,
                logical_bytes_removed: plan.bytes_in_sessions
                    + plan.artifacts.iter().map(|a| a.size).sum::<u64>(),
                sessions: plan.sessions,
                artifacts: plan.artifacts,
                kept_pinned_sessions: plan.kept_pinned_sessions,
                kept_pinned_artifacts: plan.kept_pinned_artifacts,
                kept_with_kept_children: plan.kept_with_kept_children,
                blobs_freed,
                bytes_freed,
            });
        }
        let mut report = RetentionReport {
            dry_run: false,
            as_of: plan.now,
            sessions: Vec::new(),
            artifacts: Vec::new(),
            artifacts_removed: 0,
            logical_bytes_removed: 0,
            kept_pinned_sessions: plan.kept_pinned_sessions,
            kept_pinned_artifacts: plan.kept_pinned_artifacts,
            kept_with_kept_children: plan.kept_with_kept_children,
            blobs_freed: 0,
            bytes_freed: 0,
        };
        let total = plan.sessions.len() as u64;
        for (i, sr) in plan.sessions.iter().enumerate() {
            if let Some(removed) = self.remove_session_for_retention(policy, plan.cutoff, sr.id)? {
                report.artifacts_removed += removed.artifacts;
                report.logical_bytes_removed += removed.bytes;
                report.sessions.push(removed);
            }
            progress(RetentionProgress {
                phase: "sessions",
                done: i as u64 + 1,
                total,
            });
        }
        let total = plan.artifacts.len() as u64;
        let mut done = 0;
        for chunk in plan.artifacts.chunks(256) {
            let removed = self.remove_artifacts_for_retention(policy, plan.now, chunk)?;
            for a in removed {
                report.artifacts_removed += 1;
                report.logical_bytes_removed += a.size;
                report.artifacts.push(a);
            }
            done += chunk.len() as u64;
            progress(RetentionProgress {
                phase: "artifacts",
                done,
                total,
            });
        }
        progress(RetentionProgress {
            phase: "gc",
            done: 0,
            total: 1,
        });
        let gc = self.gc()?;
        report.blobs_freed = gc.blobs_removed;
        report.bytes_freed = gc.bytes_freed;
        progress(RetentionProgress {
            phase: "gc",
            done: 1,
            total: 1,
        });
        Ok(report)
    }

    fn plan_retention(&self, policy: &RetentionPolicy) -> Result<Plan> {
        let now = policy.as_of.unwrap_or_else(Utc::now);
        let mut plan = Plan {
            now,
            cutoff: None,
            sessions: Vec::new(),
            artifacts: Vec::new(),
            released: HashMap::new(),
            artifacts_in_sessions: 0,
            bytes_in_sessions: 0,
            kept_pinned_sessions: 0,
            kept_pinned_artifacts: 0,
            kept_with_kept_children: 0,
        };
        let mut doomed: HashSet<SessionId> = HashSet::new();
        if let Some(age) = policy.older_than {
            let cutoff = before(now, "retention age", age)?;
            plan.cutoff = Some(cutoff);
            // Candidates: old terminal sessions that match and hold nothing pinned.
            let statuses: Vec<SessionStatus> = if policy.statuses.is_empty() {
                SessionStatus::ALL
                    .into_iter()
                    .filter(|s| s.is_terminal())
                    .collect()
            } else {
                policy.statuses.clone()
            };
            let mut candidates: BTreeMap<SessionId, SessionRemoval> = BTreeMap::new();
            let mut hashes: HashMap<SessionId, Vec<ContentHash>> = HashMap::new();
            for st in statuses {
                for id in self.ids_with_status(st)? {
                    let s = match self.session(id) {
                        Ok(s) => s,
                        Err(Error::SessionNotFound { .. }) => continue,
                        Err(e) => return Err(e),
                    };
                    if !session_selected(policy, cutoff, &s) {
                        continue;
                    }
                    if s.options.pinned {
                        plan.kept_pinned_sessions += 1;
                        continue;
                    }
                    let arts = self.session_artifacts(id)?;
                    let pinned = arts.iter().filter(|a| a.pinned).count() as u64;
                    if pinned > 0 {
                        plan.kept_pinned_artifacts += pinned;
                        continue;
                    }
                    hashes.insert(id, arts.iter().map(|a| a.hash).collect());
                    candidates.insert(
                        id,
                        SessionRemoval {
                            id,
                            status: s.status,
                            ended_at: s.ended_at,
                            artifacts: arts.len() as u64,
                            bytes: arts.iter().map(|a| a.size).sum(),
                        },
                    );
                }
            }
            // A candidate goes only with its whole subtree; emit children before parents.
            let mut memo: HashMap<SessionId, bool> = HashMap::new();
            let ids: Vec<SessionId> = candidates.keys().copied().collect();
            let mut order = Vec::new();
            for id in ids {
                self.subtree_deletable(id, &candidates, &mut memo, &mut order)?;
            }
            plan.kept_with_kept_children = memo
                .iter()
                .filter(|(id, ok)| !**ok && candidates.contains_key(id))
                .count() as u64;
            for id in order {
                if let Some(r) = candidates.remove(&id) {
                    plan.artifacts_in_sessions += r.artifacts;
                    plan.bytes_in_sessions += r.bytes;
                    for h in hashes.remove(&id).unwrap_or_default() {
                        *plan.released.entry(h).or_insert(0) += 1;
                    }
                    // Deleting the session deletes its checkpoints, which release their
                    // references too (see `remove_checkpoint_data_in`).
                    for cp in self.checkpoints(id)? {
                        for a in self.checkpoint_artifacts(cp.id)? {
                            *plan.released.entry(a.hash).or_insert(0) += 1;
                        }
                        if let Some(b) = cp.state_blob {
                            *plan.released.entry(b.hash).or_insert(0) += 1;
                        }
                    }
                    doomed.insert(id);
                    plan.sessions.push(r);
                }
            }
        }

        let mut pinned_sessions: HashMap<SessionId, bool> = HashMap::new();
        let mut is_pinned = |store: &Store, sid: SessionId| -> Result<bool> {
            if let Some(p) = pinned_sessions.get(&sid) {
                return Ok(*p);
            }
            let p = match store.session(sid) {
                Ok(s) => s.options.pinned,
                Err(Error::SessionNotFound { .. }) => true, // dangling: leave it to verify
                Err(e) => return Err(e),
            };
            pinned_sessions.insert(sid, p);
            Ok(p)
        };
        let mut chosen: BTreeMap<ArtifactId, ArtifactRemoval> = BTreeMap::new();
        let mut consider = |plan: &mut Plan, a: Artifact, rule: RetentionRule| {
            if chosen.contains_key(&a.id) {
                return;
            }
            if a.pinned {
                plan.kept_pinned_artifacts += 1;
                return;
            }
            chosen.insert(
                a.id,
                ArtifactRemoval {
                    id: a.id,
                    session_id: a.session_id,
                    name: a.name,
                    version: a.version,
                    kind: a.kind,
                    size: a.size,
                    rule,
                },
            );
        };
        let mut pinned_with_work: HashSet<SessionId> = HashSet::new();
        if let Some(keep) = policy.keep_versions {
            // `n` + session + name + 0 + version: each (session, name) is one contiguous run.
            let mut group: Vec<u8> = Vec::new();
            let mut members: Vec<ArtifactId> = Vec::new();
            let mut flush =
                |plan: &mut Plan, group: &[u8], members: &mut Vec<ArtifactId>| -> Result<()> {
                    if members.len() > keep as usize && group.len() > 17 {
                        let sid = SessionId::from_slice(&group[1..17])?;
                        if !doomed.contains(&sid) {
                            if is_pinned(self, sid)? {
                                pinned_with_work.insert(sid);
                            } else {
                                let old = members.len() - keep as usize;
                                for aid in &members[..old] {
                                    match self.artifact_any(*aid) {
                                        Ok(a) => consider(plan, a, RetentionRule::KeepVersions),
                                        Err(Error::ArtifactNotFound { .. }) => {}
                                        Err(e) => return Err(e),
                                    }
                                }
                            }
                        }
                    }
                    members.clear();
                    Ok(())
                };
            for e in RangeIter::prefix(self.backend(), &[keys::NAME_VERSION], false) {
                let (k, v) = e?;
                if k.len() < 1 + 16 + 1 + 4 {
                    continue;
                }
                let g = &k[..k.len() - 4];
                if g != group.as_slice() {
                    flush(&mut plan, &group, &mut members)?;
                    group = g.to_vec();
                }
                members.push(ArtifactId::from_slice(&v)?);
            }
            flush(&mut plan, &group, &mut members)?;
        }
        for (kind, ttl) in &policy.kind_ttl {
            let cutoff = before(now, "artifact time to live", *ttl)?;
            let prefix = Key::new(keys::KIND).str0(kind.as_str()).build();
            let end = Key::new(keys::KIND)
                .str0(kind.as_str())
                .aid(&ArtifactId::min_at(cutoff))
                .build();
            for e in RangeIter::new(self.backend(), prefix, end, false, 256) {
                let (k, v) = e?;
                let sid = SessionId::from_slice(&v)?;
                if doomed.contains(&sid) {
                    continue;
                }
                if is_pinned(self, sid)? {
                    pinned_with_work.insert(sid);
                    continue;
                }
                match self.artifact_any(ArtifactId::from_bytes(keys::tail16(&k)?)) {
                    Ok(a) if a.created_at < cutoff => {
                        consider(&mut plan, a, RetentionRule::KindTtl)
                    }
                    Ok(_) | Err(Error::ArtifactNotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        plan.kept_pinned_sessions += pinned_with_work.len() as u64;
        for a in chosen.values() {
            if let Ok(full) = self.artifact_any(a.id) {
                *plan.released.entry(full.hash).or_insert(0) += 1;
            }
        }
        plan.artifacts = chosen.into_values().collect();
        Ok(plan)
    }

    /// Whether `id` and its whole subtree are candidates; pushes deletable ids children-first.
    fn subtree_deletable(
        &self,
        id: SessionId,
        candidates: &BTreeMap<SessionId, SessionRemoval>,
        memo: &mut HashMap<SessionId, bool>,
        order: &mut Vec<SessionId>,
    ) -> Result<bool> {
        if let Some(v) = memo.get(&id) {
            return Ok(*v);
        }
        // Iterative post-order, so deep trees do not overflow the stack.
        let mut stack: Vec<(SessionId, Vec<SessionId>)> = vec![(id, self.child_ids(id)?)];
        while let Some((cur, kids)) = stack.last_mut() {
            let cur = *cur;
            if let Some(next) = kids.pop() {
                if memo.contains_key(&next) {
                    continue;
                }
                if !candidates.contains_key(&next) {
                    memo.insert(next, false);
                    continue;
                }
                let grandkids = self.child_ids(next)?;
                stack.push((next, grandkids));
                continue;
            }
            stack.pop();
            let ok = candidates.contains_key(&cur)
                && self
                    .child_ids(cur)?
                    .iter()
                    .all(|c| memo.get(c) == Some(&true));
            memo.insert(cur, ok);
            if ok {
                order.push(cur);
            }
        }
        Ok(memo.get(&id) == Some(&true))
    }

    /// Every artifact of one session.
    fn session_artifacts(&self, sid: SessionId) -> Result<Vec<Artifact>> {
        let prefix = Key::new(keys::SESSION_ARTIFACT).sid(&sid).build();
        let mut out = Vec::new();
        for e in RangeIter::prefix(self.backend(), &prefix, false) {
            let aid = ArtifactId::from_bytes(keys::tail16(&e?.0)?);
            match self.artifact_any(aid) {
                Ok(a) => out.push(a),
                Err(Error::ArtifactNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Blobs and stored bytes a GC would free after dropping `released` references: blobs whose
    /// references all go, plus blobs already unreferenced.
    fn bytes_freed_by(&self, released: &HashMap<ContentHash, u64>) -> Result<(u64, u64)> {
        let mut blobs = 0;
        let mut bytes = 0;
        let mut seen = HashSet::new();
        for e in RangeIter::prefix(self.backend(), &[keys::GARBAGE], false) {
            let (k, _) = e?;
            let hash = ContentHash::from_slice(&k[1..])?;
            if let Some(b) = self.backend().get(&keys::blob(&hash))? {
                let m = BlobMeta::decode(&b)?;
                if m.refs == 0 && seen.insert(hash) {
                    blobs += 1;
                    bytes += m.stored_size;
                }
            }
        }
        for (hash, n) in released {
            if seen.contains(hash) {
                continue;
            }
            if let Some(b) = self.backend().get(&keys::blob(hash))? {
                let m = BlobMeta::decode(&b)?;
                if m.refs <= *n {
                    seen.insert(*hash);
                    blobs += 1;
                    bytes += m.stored_size;
                }
            }
        }
        Ok((blobs, bytes))
    }

    /// Removes one session chosen by the plan, if it still qualifies under the write lock.
    fn remove_session_for_retention(
        &self,
        policy: &RetentionPolicy,
        cutoff: Option<DateTime<Utc>>,
        id: SessionId,
    ) -> Result<Option<SessionRemoval>> {
        let Some(cutoff) = cutoff else {
            return Ok(None);
        };
        // The lock is held for the whole session, so nothing can pin it, add to it or give it a
        // child between this check and the last batch.
        self.write_batches(|w| {
            let s = match self.session(id) {
                Ok(s) => s,
                Err(Error::SessionNotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            if !session_selected(policy, cutoff, &s)
                || s.options.pinned
                || !self.child_ids(id)?.is_empty()
            {
                return Ok(None);
            }
            let arts = self.session_artifacts(id)?;
            if arts.iter().any(|a| a.pinned) {
                return Ok(None);
            }
            let mut removal = SessionRemoval {
                id,
                status: s.status,
                ended_at: s.ended_at,
                artifacts: 0,
                bytes: 0,
            };
            for chunk in arts.chunks(1000) {
                let (n, bytes) = w.batch(|tx| {
                    let (mut n, mut bytes) = (0, 0);
                    for a in chunk {
                        if self.remove_artifact_in(tx, a.id)? {
                            n += 1;
                            bytes += a.size;
                        }
                    }
                    Ok((n, bytes))
                })?;
                removal.artifacts += n;
                removal.bytes += bytes;
            }
            w.batch(|tx| self.remove_session_in(tx, id))?;
            Ok(Some(removal))
        })
    }

    /// Removes planned artifacts that still qualify under the write lock, in one batch.
    fn remove_artifacts_for_retention(
        &self,
        policy: &RetentionPolicy,
        now: DateTime<Utc>,
        chunk: &[ArtifactRemoval],
    ) -> Result<Vec<ArtifactRemoval>> {
        self.write(|tx| {
            let mut out = Vec::new();
            for r in chunk {
                let a: Artifact = match tx.get(&keys::artifact(&r.id))? {
                    Some(b) => crate::artifact::record::decode(&b)?,
                    None => continue,
                };
                if a.pinned {
                    continue;
                }
                match self.tx_session(tx, a.session_id) {
                    Ok(s) if !s.options.pinned => {}
                    Ok(_) | Err(Error::SessionNotFound { .. }) => continue,
                    Err(e) => return Err(e),
                }
                let still = match r.rule {
                    RetentionRule::KeepVersions => {
                        let keep = policy.keep_versions.unwrap_or(u32::MAX) as usize;
                        let prefix = keys::name_versions_prefix(&a.session_id, &a.name);
                        let mut newer = 0usize;
                        for e in tx.prefix(&prefix, true) {
                            let (k, _) = e?;
                            let v = k[k.len().saturating_sub(4)..]
                                .try_into()
                                .map(u32::from_be_bytes)
                                .unwrap_or(0);
                            if v <= a.version || newer >= keep {
                                break;
                            }
                            newer += 1;
                        }
                        newer >= keep
                    }
                    RetentionRule::KindTtl => policy.kind_ttl.iter().any(|(k, ttl)| {
                        *k == a.kind
                            && before(now, "artifact time to live", *ttl)
                                .is_ok_and(|cutoff| a.created_at < cutoff)
                    }),
                };
                if still && self.remove_artifact_in(tx, a.id)? {
                    out.push(r.clone());
                }
            }
            Ok(out)
        })
    }
}

/// Whether the session rule selects `s` (ignoring pins).
fn session_selected(policy: &RetentionPolicy, cutoff: DateTime<Utc>, s: &Session) -> bool {
    s.status.is_terminal()
        && (policy.statuses.is_empty() || policy.statuses.contains(&s.status))
        && policy.tags.iter().all(|t| s.tags.contains(t))
        && s.ended_at.unwrap_or(s.updated_at) < cutoff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_beyond_the_timestamp_range_is_an_error_not_a_panic() {
        let now = Utc::now();
        // 10^13 s is about 317,000 years: before the earliest timestamp chrono can hold.
        let err = before(
            now,
            "retention age",
            Duration::from_secs(10_000_000_000_000),
        )
        .expect_err("an age past the timestamp range is refused");
        let msg = err.to_string();
        assert!(
            msg.contains("retention age") && msg.contains("thousand years"),
            "{msg}"
        );
        let cutoff = before(now, "retention age", Duration::from_secs(60)).expect("a minute");
        assert_eq!(now - cutoff, chrono::Duration::seconds(60));
    }
}
