//! Artifact queries: one type combining every filter with AND, answered from secondary indexes.
//!
//! Planning (see DESIGN.md, "Queries"): every filter that has an index becomes a candidate source.
//! The sources are raced: each is read a little at a time, round robin, and the first to run out is
//! the smallest, so its entries are the candidate set; the other filters are checked on each record.
//! The cost of a selective query is therefore about (number of filters) x (size of the smallest
//! matching index range), independent of the store's size. If no source runs out within the probe
//! budget, the query streams a time-ordered source from the cursor and stops at the page limit.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use globset::{Glob, GlobMatcher};
use serde::{Deserialize, Serialize};

use crate::artifact::{Artifact, ArtifactKind};
use crate::backend::{prefix_end, RangeIter};
use crate::error::{Error, Result};
use crate::ids::{ArtifactId, SessionId};
use crate::keys::{self, Key};
use crate::store::Store;

/// Default page size.
pub const DEFAULT_LIMIT: usize = 1000;
/// Largest page size.
pub const MAX_LIMIT: usize = 100_000;
/// Entries each source may yield while racing before the planner stops probing.
const PROBE_BUDGET: usize = 50_000;

/// One page of results. `next_cursor` is `Some` exactly when more results exist.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// The results.
    pub items: Vec<T>,
    /// Pass this back to get the next page; `None` when this page is the last.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Whether another page exists.
    pub fn has_more(&self) -> bool {
        self.next_cursor.is_some()
    }

    /// A page from up to `limit + 1` items read in order: the extra item, if present, only says
    /// that more exist; the cursor is made from the last item kept.
    pub(crate) fn from_overfetch(
        mut items: Vec<T>,
        limit: usize,
        cursor: impl FnOnce(&T) -> String,
    ) -> Self {
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if more { items.last().map(cursor) } else { None };
        Page { items, next_cursor }
    }
}

/// A query over artifacts. Every filter is optional; all given filters must hold.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub(crate) session: Option<SessionId>,
    pub(crate) subtree: bool,
    pub(crate) kinds: Vec<ArtifactKind>,
    pub(crate) tags_all: Vec<String>,
    pub(crate) tags_any: Vec<String>,
    pub(crate) name_glob: Option<String>,
    pub(crate) min_size: Option<u64>,
    pub(crate) max_size: Option<u64>,
    pub(crate) created_from: Option<DateTime<Utc>>,
    pub(crate) created_to: Option<DateTime<Utc>>,
    pub(crate) latest_only: bool,
    pub(crate) limit: Option<usize>,
    pub(crate) cursor: Option<String>,
    pub(crate) descending: bool,
}

impl Query {
    /// Everything in the store, oldest first.
    pub fn new() -> Self {
        Self::default()
    }
    /// Only artifacts of this session.
    pub fn session(mut self, id: SessionId) -> Self {
        self.session = Some(id);
        self
    }
    /// With [`Query::session`]: include the session's whole subtree.
    pub fn subtree(mut self, yes: bool) -> Self {
        self.subtree = yes;
        self
    }
    /// Only this kind (repeat: any of several).
    pub fn kind(mut self, k: ArtifactKind) -> Self {
        self.kinds.push(k);
        self
    }
    /// Must carry this tag (repeat: all of them).
    pub fn tag(mut self, t: impl Into<String>) -> Self {
        self.tags_all.push(t.into());
        self
    }
    /// Must carry at least one of the tags given this way.
    pub fn any_tag(mut self, t: impl Into<String>) -> Self {
        self.tags_any.push(t.into());
        self
    }
    /// Name matches this glob (globset syntax; `*` also matches `/`).
    pub fn name_glob(mut self, g: impl Into<String>) -> Self {
        self.name_glob = Some(g.into());
        self
    }
    /// Size at least `n` bytes (inclusive).
    pub fn min_size(mut self, n: u64) -> Self {
        self.min_size = Some(n);
        self
    }
    /// Size at most `n` bytes (inclusive).
    pub fn max_size(mut self, n: u64) -> Self {
        self.max_size = Some(n);
        self
    }
    /// Created at or after `t`.
    pub fn created_from(mut self, t: DateTime<Utc>) -> Self {
        self.created_from = Some(t);
        self
    }
    /// Created before `t` (exclusive).
    pub fn created_to(mut self, t: DateTime<Utc>) -> Self {
        self.created_to = Some(t);
        self
    }
    /// Only the latest version of each (session, name).
    pub fn latest_only(mut self, yes: bool) -> Self {
        self.latest_only = yes;
        self
    }
    /// At most `n` results per page (default 1000).
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }
    /// Continue from a previous page's `next_cursor`.
    pub fn cursor(mut self, c: impl Into<String>) -> Self {
        self.cursor = Some(c.into());
        self
    }
    /// Newest first.
    pub fn descending(mut self, yes: bool) -> Self {
        self.descending = yes;
        self
    }
}

/// A validated query with its compiled glob and resolved session set.
pub(crate) struct Plan {
    sessions: Option<HashSet<SessionId>>,
    kinds: Vec<ArtifactKind>,
    tags_all: Vec<String>,
    tags_any: Vec<String>,
    glob: Option<(String, GlobMatcher)>,
    min_size: u64,
    max_size: u64,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    latest_only: bool,
    limit: usize,
    cursor: Option<ArtifactId>,
    desc: bool,
}

impl Plan {
    pub(crate) fn matches(&self, a: &Artifact) -> bool {
        self.sessions
            .as_ref()
            .is_none_or(|s| s.contains(&a.session_id))
            && (self.kinds.is_empty() || self.kinds.contains(&a.kind))
            && self.tags_all.iter().all(|t| a.tags.contains(t))
            && (self.tags_any.is_empty() || self.tags_any.iter().any(|t| a.tags.contains(t)))
            && self.glob.as_ref().is_none_or(|(_, g)| g.is_match(&a.name))
            && a.size >= self.min_size
            && a.size <= self.max_size
            && self.from.is_none_or(|f| a.created_at >= f)
            && self.to.is_none_or(|t| a.created_at < t)
    }
}

/// Literal text before the first glob metacharacter, and after the last one.
pub(crate) fn literal_affixes(glob: &str) -> (String, String) {
    let meta = |c: char| matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\');
    let prefix: String = glob.chars().take_while(|c| !meta(*c)).collect();
    if prefix.len() == glob.len() {
        return (prefix.clone(), prefix);
    }
    let rev: String = glob.chars().rev().take_while(|c| !meta(*c)).collect();
    (prefix, rev.chars().rev().collect())
}

fn cursor_encode(id: &ArtifactId) -> String {
    id.to_string()
}

fn cursor_decode(s: &str) -> Result<ArtifactId> {
    s.parse().map_err(|_| {
        Error::invalid(
            "cursor",
            format!("{s:?} is not a cursor from a previous page; pass next_cursor back unchanged"),
        )
    })
}

/// A candidate from an index: the artifact id, its session if the index stores it, and the
/// record itself if the source is the record table.
struct Cand {
    aid: ArtifactId,
    sid: Option<SessionId>,
    record: Option<Vec<u8>>,
}

type CandIter<'a> = Box<dyn Iterator<Item = Result<Cand>> + 'a>;

struct Source<'a> {
    /// Yields in artifact-id (time) order in the query's direction, starting after the cursor.
    ordered: bool,
    iter: CandIter<'a>,
    buf: Vec<Cand>,
    exhausted: bool,
}

/// k-way merge of ordered index ranges (a union: any of several kinds, tags or sessions).
struct Merge<'a> {
    parts: Vec<std::iter::Peekable<CandIter<'a>>>,
    desc: bool,
    last: Option<ArtifactId>,
}

impl Iterator for Merge<'_> {
    type Item = Result<Cand>;
    fn next(&mut self) -> Option<Result<Cand>> {
        loop {
            let mut best: Option<(usize, ArtifactId)> = None;
            for (i, p) in self.parts.iter_mut().enumerate() {
                match p.peek() {
                    Some(Ok(c)) => {
                        let better = match best {
                            None => true,
                            Some((_, b)) => {
                                if self.desc {
                                    c.aid > b
                                } else {
                                    c.aid < b
                                }
                            }
                        };
                        if better {
                            best = Some((i, c.aid));
                        }
                    }
                    Some(Err(_)) => return p.next(),
                    None => {}
                }
            }
            let (i, aid) = best?;
            let item = self.parts[i].next();
            if self.last == Some(aid) {
                continue; // the same artifact through two parts of the union
            }
            self.last = Some(aid);
            return item;
        }
    }
}

impl Store {
    /// Runs a query and returns one page. A query without a session searches the whole store.
    pub fn query(&self, q: &Query) -> Result<Page<Artifact>> {
        let plan = self.plan(q)?;
        self.run_plan(&plan)
    }

    pub(crate) fn plan(&self, q: &Query) -> Result<Plan> {
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(Error::invalid(
                "limit",
                format!("{limit}; use 1 to {MAX_LIMIT} and page with the cursor"),
            ));
        }
        if let (Some(a), Some(b)) = (q.min_size, q.max_size) {
            if a > b {
                return Err(Error::invalid(
                    "size range",
                    format!("minimum {a} is larger than maximum {b}"),
                ));
            }
        }
        if let (Some(a), Some(b)) = (q.created_from, q.created_to) {
            if a >= b {
                return Err(Error::invalid(
                    "time range",
                    format!("from {a} is not before to {b} (from is inclusive, to exclusive)"),
                ));
            }
        }
        if q.subtree && q.session.is_none() {
            return Err(Error::invalid(
                "query",
                "subtree needs a session to start from",
            ));
        }
        for k in &q.kinds {
            k.as_str().parse::<ArtifactKind>()?;
        }
        for t in q.tags_all.iter().chain(&q.tags_any) {
            crate::artifact::validate_tag(t)?;
        }
        let glob = match &q.name_glob {
            None => None,
            Some(g) => {
                if g.is_empty() || g.len() > crate::artifact::MAX_NAME_LEN * 2 {
                    return Err(Error::InvalidGlob {
                        pattern: g.clone(),
                        message: "empty or too long".into(),
                    });
                }
                let m = Glob::new(g)
                    .map_err(|e| Error::InvalidGlob {
                        pattern: g.clone(),
                        message: e.kind().to_string(),
                    })?
                    .compile_matcher();
                Some((g.clone(), m))
            }
        };
        let sessions = match q.session {
            None => None,
            Some(sid) => {
                self.session(sid)?; // a clear not-found for an unknown session
                let mut set = HashSet::new();
                if q.subtree {
                    for s in self.subtree_ids(sid)? {
                        set.insert(s);
                    }
                } else {
                    set.insert(sid);
                }
                Some(set)
            }
        };
        Ok(Plan {
            sessions,
            kinds: q.kinds.clone(),
            tags_all: q.tags_all.clone(),
            tags_any: q.tags_any.clone(),
            glob,
            min_size: q.min_size.unwrap_or(0),
            max_size: q.max_size.unwrap_or(u64::MAX),
            from: q.created_from,
            to: q.created_to,
            latest_only: q.latest_only,
            limit,
            cursor: q.cursor.as_deref().map(cursor_decode).transpose()?,
            desc: q.descending,
        })
    }

    /// An ordered source over `prefix + artifact id` keys, bounded by the cursor.
    fn ordered_prefix<'a>(
        &'a self,
        prefix: Vec<u8>,
        plan: &Plan,
        sid: Option<SessionId>,
    ) -> CandIter<'a> {
        let backend = self.backend();
        let mut start = prefix.clone();
        let mut end = prefix_end(&prefix);
        if let Some(c) = &plan.cursor {
            let at = Key::new(0).bytes(&prefix).aid(c).build()[1..].to_vec();
            if plan.desc {
                end = at;
            } else {
                start = at;
                start.push(0);
            }
        }
        let plen = prefix.len();
        Box::new(
            RangeIter::new(backend, start, end, plan.desc, 64).map(move |r| {
                let (k, v) = r?;
                if k.len() != plen + 16 {
                    return Err(Error::Corrupt {
                        what: format!("index key of {} bytes under a {plen}-byte prefix", k.len()),
                    });
                }
                let aid = ArtifactId::from_bytes(keys::tail16(&k)?);
                let sid = match sid {
                    Some(s) => Some(s),
                    None if v.len() == 16 => Some(SessionId::from_slice(&v)?),
                    None => None,
                };
                Ok(Cand {
                    aid,
                    sid,
                    record: None,
                })
            }),
        )
    }

    /// An unordered source over index keys ending in an artifact id, with the session as value.
    fn unordered_range<'a>(&'a self, start: Vec<u8>, end: Vec<u8>) -> CandIter<'a> {
        Box::new(
            RangeIter::new(self.backend(), start, end, false, 64).map(|r| {
                let (k, v) = r?;
                Ok(Cand {
                    aid: ArtifactId::from_bytes(keys::tail16(&k)?),
                    sid: if v.len() == 16 {
                        Some(SessionId::from_slice(&v)?)
                    } else {
                        None
                    },
                    record: None,
                })
            }),
        )
    }

    fn merged<'a>(
        &'a self,
        prefixes: Vec<(Vec<u8>, Option<SessionId>)>,
        plan: &Plan,
    ) -> CandIter<'a> {
        if prefixes.len() == 1 {
            let (p, s) = prefixes.into_iter().next().unwrap_or_default();
            return self.ordered_prefix(p, plan, s);
        }
        Box::new(Merge {
            parts: prefixes
                .into_iter()
                .map(|(p, s)| self.ordered_prefix(p, plan, s).peekable())
                .collect(),
            desc: plan.desc,
            last: None,
        })
    }

    /// The record table in time order between the plan's time bounds and cursor.
    fn time_source<'a>(&'a self, plan: &Plan) -> CandIter<'a> {
        let mut start = vec![keys::ARTIFACT];
        let mut end = vec![keys::ARTIFACT + 1];
        if let Some(f) = plan.from {
            start = keys::artifact(&ArtifactId::min_at(f));
        }
        if let Some(t) = plan.to {
            end = keys::artifact(&ArtifactId::min_after(t));
        }
        if let Some(c) = &plan.cursor {
            let at = keys::artifact(c);
            if plan.desc {
                end = end.min(at);
            } else {
                let mut s = at;
                s.push(0);
                start = start.max(s);
            }
        }
        Box::new(
            RangeIter::new(self.backend(), start, end, plan.desc, 64).map(|r| {
                let (k, v) = r?;
                Ok(Cand {
                    aid: ArtifactId::from_bytes(keys::tail16(&k)?),
                    sid: None,
                    record: Some(v),
                })
            }),
        )
    }

    fn sources<'a>(&'a self, plan: &Plan) -> Vec<Source<'a>> {
        let mut out = Vec::new();
        let mut push = |ordered: bool, iter: CandIter<'a>| {
            out.push(Source {
                ordered,
                iter,
                buf: Vec::new(),
                exhausted: false,
            })
        };
        if let Some(sessions) = &plan.sessions {
            let prefixes = sessions
                .iter()
                .map(|s| (Key::new(keys::SESSION_ARTIFACT).sid(s).build(), Some(*s)))
                .collect();
            push(true, self.merged(prefixes, plan));
        }
        if !plan.kinds.is_empty() {
            let prefixes = plan
                .kinds
                .iter()
                .map(|k| (Key::new(keys::KIND).str0(k.as_str()).build(), None))
                .collect();
            push(true, self.merged(prefixes, plan));
        }
        for t in &plan.tags_all {
            push(
                true,
                self.ordered_prefix(Key::new(keys::TAG).str0(t).build(), plan, None),
            );
        }
        if !plan.tags_any.is_empty() {
            let prefixes = plan
                .tags_any
                .iter()
                .map(|t| (Key::new(keys::TAG).str0(t).build(), None))
                .collect();
            push(true, self.merged(prefixes, plan));
        }
        if let Some((g, _)) = &plan.glob {
            let (prefix, suffix) = literal_affixes(g);
            if !prefix.is_empty() {
                let p = Key::new(keys::NAME).bytes(prefix.as_bytes()).build();
                let e = prefix_end(&p);
                push(false, self.unordered_range(p, e));
            }
            if !suffix.is_empty() {
                let p = Key::new(keys::RNAME)
                    .bytes(&keys::reversed(&suffix))
                    .build();
                let e = prefix_end(&p);
                push(false, self.unordered_range(p, e));
            }
        }
        if plan.min_size > 0 || plan.max_size < u64::MAX {
            let start = Key::new(keys::SIZE).u64(plan.min_size).build();
            let end = match plan.max_size.checked_add(1) {
                Some(m) => Key::new(keys::SIZE).u64(m).build(),
                None => vec![keys::SIZE + 1],
            };
            push(false, self.unordered_range(start, end));
        }
        // The record table itself, in time order. Bounded by a time range it is a real candidate;
        // unbounded it is never smaller than any other source, so it is only the fallback.
        if plan.from.is_some() || plan.to.is_some() || out.is_empty() {
            out.push(Source {
                ordered: true,
                iter: self.time_source(plan),
                buf: Vec::new(),
                exhausted: false,
            });
        }
        out
    }

    fn run_plan(&self, plan: &Plan) -> Result<Page<Artifact>> {
        let mut sources = self.sources(plan);
        // Race: read each source a little at a time; the first to run out is the smallest.
        // A single ordered source needs no race: it is streamed from the cursor.
        let mut winner = None;
        let mut step = 32usize;
        let mut pulled = 0usize;
        let race = !(sources.len() == 1 && sources[0].ordered);
        'race: while race && pulled < PROBE_BUDGET {
            for (i, s) in sources.iter_mut().enumerate() {
                for _ in 0..step {
                    match s.iter.next() {
                        Some(c) => s.buf.push(c?),
                        None => {
                            s.exhausted = true;
                            winner = Some(i);
                            break 'race;
                        }
                    }
                }
            }
            pulled += step;
            step = (step * 2).min(4096);
        }
        let mut latest_cache: HashMap<(SessionId, String), u32> = HashMap::new();
        match winner {
            Some(i) => {
                let src = sources.swap_remove(i);
                let mut found = Vec::new();
                for c in src.buf {
                    if let Some(a) = self.check(plan, c, &mut latest_cache)? {
                        found.push(a);
                    }
                }
                found.sort_by_key(|a| a.id);
                if plan.desc {
                    found.reverse();
                }
                if let Some(c) = plan.cursor {
                    found.retain(|a| if plan.desc { a.id < c } else { a.id > c });
                }
                Ok(paginate(found, plan.limit))
            }
            None => {
                // Nothing small: stream a time-ordered source from the cursor until the page is
                // full (the first ordered one: session, kinds, tags; else the record table).
                let (buf, iter) = match sources.iter().position(|s| s.ordered) {
                    Some(i) => {
                        let src = sources.swap_remove(i);
                        (src.buf, src.iter)
                    }
                    None => (Vec::new(), self.time_source(plan)),
                };
                let mut found = Vec::with_capacity(plan.limit + 1);
                for c in buf.into_iter().map(Ok).chain(iter) {
                    if let Some(a) = self.check(plan, c?, &mut latest_cache)? {
                        found.push(a);
                        if found.len() > plan.limit {
                            break;
                        }
                    }
                }
                Ok(paginate(found, plan.limit))
            }
        }
    }

    fn check(
        &self,
        plan: &Plan,
        c: Cand,
        latest: &mut HashMap<(SessionId, String), u32>,
    ) -> Result<Option<Artifact>> {
        if let (Some(sid), Some(set)) = (c.sid, &plan.sessions) {
            if !set.contains(&sid) {
                return Ok(None);
            }
        }
        let a: Artifact = match c.record {
            Some(bytes) => crate::artifact::record::decode(&bytes)?,
            None => match self.backend().get(&keys::artifact(&c.aid))? {
                Some(bytes) => crate::artifact::record::decode(&bytes)?,
                // An index entry whose record is gone is reported by verify; queries skip it.
                None => return Ok(None),
            },
        };
        if !plan.matches(&a) {
            return Ok(None);
        }
        if plan.latest_only {
            let key = (a.session_id, a.name.clone());
            let v = match latest.get(&key) {
                Some(v) => *v,
                None => {
                    let v = self.latest_version(&a.session_id, &a.name)?.unwrap_or(0);
                    latest.insert(key, v);
                    v
                }
            };
            if a.version != v {
                return Ok(None);
            }
        }
        Ok(Some(a))
    }
}

fn paginate(found: Vec<Artifact>, limit: usize) -> Page<Artifact> {
    Page::from_overfetch(found, limit, |a| cursor_encode(&a.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affixes() {
        assert_eq!(literal_affixes("*.csv"), ("".into(), ".csv".into()));
        assert_eq!(literal_affixes("report_*"), ("report_".into(), "".into()));
        assert_eq!(
            literal_affixes("logs/**/*.log"),
            ("logs/".into(), ".log".into())
        );
        assert_eq!(literal_affixes("{a,b}.json"), ("".into(), ".json".into()));
        assert_eq!(literal_affixes("exact"), ("exact".into(), "exact".into()));
    }
}
