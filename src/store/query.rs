//! Running queries: the plan (validated filters, compiled glob, resolved session set), the race
//! of index sources, and paging. The query type itself is in `crate::query`; see DESIGN.md,
//! "Queries".

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use globset::{Glob, GlobMatcher};

use crate::artifact::{Artifact, ArtifactKind};
use crate::backend::{prefix_end, RangeIter};
use crate::error::{Error, Result};
use crate::ids::{ArtifactId, SessionId};
use crate::keys::{self, Key};
use crate::query::{Page, Query, DEFAULT_LIMIT, MAX_LIMIT, PROBE_BUDGET};
use crate::store::Store;

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
                let mut found = self.check_many(plan, src.buf, &mut latest_cache)?;
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
                let mut cands = buf.into_iter().map(Ok).chain(iter);
                // In chunks of as many candidates as the page still needs, so that their records
                // load in one engine call and never more are loaded than one at a time would.
                while found.len() <= plan.limit {
                    let need = plan.limit + 1 - found.len();
                    let chunk = cands.by_ref().take(need).collect::<Result<Vec<_>>>()?;
                    if chunk.is_empty() {
                        break;
                    }
                    let done = chunk.len() < need;
                    found.extend(self.check_many(plan, chunk, &mut latest_cache)?);
                    if done {
                        break;
                    }
                }
                Ok(paginate(found, plan.limit))
            }
        }
    }

    /// The candidates that match every filter, in the order given. Candidates whose index entry
    /// already rules them out are dropped first; the records of the rest load in one engine call.
    fn check_many(
        &self,
        plan: &Plan,
        cands: Vec<Cand>,
        latest: &mut HashMap<(SessionId, String), u32>,
    ) -> Result<Vec<Artifact>> {
        let cands: Vec<Cand> = cands
            .into_iter()
            .filter(|c| match (c.sid, &plan.sessions) {
                (Some(sid), Some(set)) => set.contains(&sid),
                _ => true,
            })
            .collect();
        let wanted: Vec<Vec<u8>> = cands
            .iter()
            .filter(|c| c.record.is_none())
            .map(|c| keys::artifact(&c.aid))
            .collect();
        let loaded = if wanted.is_empty() {
            Vec::new() // every candidate came with its record (the time source)
        } else {
            self.backend().get_many(&wanted)?
        };
        let mut loaded = loaded.into_iter();
        let mut out = Vec::new();
        for c in cands {
            let record = match c.record {
                Some(r) => r,
                // An index entry whose record is gone is reported by verify; queries skip it.
                None => match loaded.next().flatten() {
                    Some(r) => r,
                    None => continue,
                },
            };
            if let Some(a) = self.check(plan, &record, latest)? {
                out.push(a);
            }
        }
        Ok(out)
    }

    fn check(
        &self,
        plan: &Plan,
        record: &[u8],
        latest: &mut HashMap<(SessionId, String), u32>,
    ) -> Result<Option<Artifact>> {
        let a: Artifact = crate::artifact::record::decode(record)?;
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
