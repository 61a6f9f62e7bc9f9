//! Artifact queries: one type combining every filter with AND, answered from secondary indexes.
//!
//! Planning (see DESIGN.md, "Queries"): every filter that has an index becomes a candidate source.
//! The sources are raced: each is read a little at a time, round robin, and the first to run out is
//! the smallest, so its entries are the candidate set; the other filters are checked on each record.
//! The cost of a selective query is therefore about (number of filters) x (size of the smallest
//! matching index range), independent of the store's size. If no source runs out within the probe
//! budget, the query streams a time-ordered source from the cursor and stops at the page limit.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::artifact::ArtifactKind;
use crate::ids::SessionId;

/// Default page size.
pub const DEFAULT_LIMIT: usize = 1000;
/// Largest page size.
pub const MAX_LIMIT: usize = 100_000;
/// Entries each source may yield while racing before the planner stops probing.
pub(crate) const PROBE_BUDGET: usize = 50_000;

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
