//! Sessions: a parent/child tree with a lifecycle, tags and JSON metadata.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::ids::SessionId;

/// Where a session is in its lifecycle.
///
/// `Active` and `Suspended` are live and may move between each other; every other state is terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Running.
    Active,
    /// Paused; may be resumed.
    Suspended,
    /// Finished successfully (terminal).
    Completed,
    /// Finished with an error (terminal).
    Failed,
    /// Stopped by a caller (terminal).
    Cancelled,
    /// Idle for too long (terminal).
    Expired,
    /// Ran out of its iteration or time budget (terminal).
    TimedOut,
}

impl SessionStatus {
    /// Every status, in index order.
    pub const ALL: [SessionStatus; 7] = [
        SessionStatus::Active,
        SessionStatus::Suspended,
        SessionStatus::Completed,
        SessionStatus::Failed,
        SessionStatus::Cancelled,
        SessionStatus::Expired,
        SessionStatus::TimedOut,
    ];

    /// True for states a session never leaves.
    pub fn is_terminal(self) -> bool {
        !matches!(self, SessionStatus::Active | SessionStatus::Suspended)
    }

    /// Whether the lifecycle allows going from `self` to `to`.
    pub fn can_transition_to(self, to: SessionStatus) -> bool {
        use SessionStatus::*;
        match (self, to) {
            (Active, Suspended) | (Suspended, Active) => true,
            (Active | Suspended, t) => t.is_terminal(),
            _ => false,
        }
    }

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Suspended => "suspended",
            SessionStatus::Completed => "completed",
            SessionStatus::Failed => "failed",
            SessionStatus::Cancelled => "cancelled",
            SessionStatus::Expired => "expired",
            SessionStatus::TimedOut => "timed_out",
        }
    }

    pub(crate) fn code(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for SessionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SessionStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        SessionStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s.trim().to_ascii_lowercase().replace('-', "_"))
            .ok_or_else(|| {
                Error::invalid(
                    "session status",
                    format!(
                        "{s:?}; expected one of active, suspended, completed, failed, cancelled, expired, timed_out"
                    ),
                )
            })
    }
}

/// A session as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Session {
    /// Its id (UUID v7).
    pub id: SessionId,
    /// Optional caller-chosen unique key.
    pub key: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// The parent session, `None` for a root.
    pub parent_id: Option<SessionId>,
    /// Lifecycle state.
    pub status: SessionStatus,
    /// Tags (sorted, unique).
    pub tags: Vec<String>,
    /// JSON object metadata.
    pub metadata: Map<String, Value>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it entered a terminal state.
    pub ended_at: Option<DateTime<Utc>>,
    /// The reason given for the last status change (failure, cancellation...).
    pub reason: Option<String>,
    /// Options that bound the session.
    #[serde(default)]
    pub options: SessionOptions,
}

/// Per-session options and budgets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct SessionOptions {
    /// A pinned session is never touched by retention or expiry.
    pub pinned: bool,
    /// Iteration budget: reaching it moves the session to `timed_out`.
    pub max_iterations: Option<u64>,
    /// Wall-clock deadline: after it, the session is `timed_out`.
    pub deadline: Option<DateTime<Utc>>,
    /// Bound on the conversation history returned by `history`.
    pub max_history: Option<u32>,
}

/// What to create: build with [`NewSession::new`] and the chained setters.
#[derive(Clone, Debug, Default)]
pub struct NewSession {
    pub(crate) key: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) parent: Option<SessionId>,
    pub(crate) tags: Vec<String>,
    pub(crate) metadata: Map<String, Value>,
    pub(crate) options: SessionOptions,
}

impl NewSession {
    /// An empty root session.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the display name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
    /// Sets the description.
    pub fn description(mut self, d: impl Into<String>) -> Self {
        self.description = Some(d.into());
        self
    }
    /// Sets the unique key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
    /// Makes it a child of `parent` (which must exist).
    pub fn parent(mut self, parent: SessionId) -> Self {
        self.parent = Some(parent);
        self
    }
    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }
    /// Sets one metadata field.
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }
    /// Replaces the metadata object.
    pub fn metadata(mut self, m: Map<String, Value>) -> Self {
        self.metadata = m;
        self
    }
    /// Sets the options.
    pub fn options(mut self, o: SessionOptions) -> Self {
        self.options = o;
        self
    }
}

/// Which sessions to list.
#[derive(Clone, Debug, Default)]
pub struct SessionFilter {
    pub(crate) statuses: Vec<SessionStatus>,
    pub(crate) tags: Vec<String>,
    pub(crate) key: Option<String>,
    pub(crate) parent: ParentFilter,
    pub(crate) created: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    pub(crate) updated: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    pub(crate) limit: Option<usize>,
    pub(crate) cursor: Option<SessionId>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum ParentFilter {
    #[default]
    Any,
    Roots,
    Of(SessionId),
}

impl SessionFilter {
    /// All sessions.
    pub fn new() -> Self {
        Self::default()
    }
    /// Only sessions with this status (repeat for any of several).
    pub fn status(mut self, s: SessionStatus) -> Self {
        self.statuses.push(s);
        self
    }
    /// Only sessions carrying this tag (repeat: all of them).
    pub fn tag(mut self, t: impl Into<String>) -> Self {
        self.tags.push(t.into());
        self
    }
    /// Only the session with this key.
    pub fn key(mut self, k: impl Into<String>) -> Self {
        self.key = Some(k.into());
        self
    }
    /// Only direct children of `parent`.
    pub fn parent(mut self, parent: SessionId) -> Self {
        self.parent = ParentFilter::Of(parent);
        self
    }
    /// Only root sessions.
    pub fn roots(mut self) -> Self {
        self.parent = ParentFilter::Roots;
        self
    }
    /// Created at or after `from` and before `to`.
    pub fn created_between(
        mut self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Self {
        self.created = (from, to);
        self
    }
    /// Updated at or after `from` and before `to`.
    pub fn updated_between(
        mut self,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Self {
        self.updated = (from, to);
        self
    }
    /// At most `n` sessions per page.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }
    /// Continue after this session id (the `next_cursor` of the previous page).
    pub fn after(mut self, cursor: SessionId) -> Self {
        self.cursor = Some(cursor);
        self
    }

    pub(crate) fn matches(&self, s: &Session) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&s.status))
            && self.tags.iter().all(|t| s.tags.contains(t))
            && self.key.as_ref().is_none_or(|k| s.key.as_ref() == Some(k))
            && match &self.parent {
                ParentFilter::Any => true,
                ParentFilter::Roots => s.parent_id.is_none(),
                ParentFilter::Of(p) => s.parent_id == Some(*p),
            }
            && in_range(s.created_at, self.created)
            && in_range(s.updated_at, self.updated)
    }
}

pub(crate) fn in_range(
    t: DateTime<Utc>,
    r: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
) -> bool {
    r.0.is_none_or(|from| t >= from) && r.1.is_none_or(|to| t < to)
}

/// How to change metadata.
#[derive(Clone, Debug)]
pub enum MetadataUpdate {
    /// Merge these keys in; a `null` value removes the key.
    Merge(Map<String, Value>),
    /// Replace the whole object.
    Replace(Map<String, Value>),
}

impl MetadataUpdate {
    pub(crate) fn apply(&self, m: &mut Map<String, Value>) {
        match self {
            MetadataUpdate::Merge(patch) => {
                for (k, v) in patch {
                    if v.is_null() {
                        m.remove(k);
                    } else {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
            MetadataUpdate::Replace(new) => *m = new.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        use SessionStatus::*;
        assert!(Active.can_transition_to(Suspended));
        assert!(Suspended.can_transition_to(Active));
        assert!(Active.can_transition_to(Failed));
        assert!(!Completed.can_transition_to(Active));
        assert!(!Failed.can_transition_to(Completed));
        assert!(!Active.can_transition_to(Active));
        for s in SessionStatus::ALL {
            assert_eq!(s.as_str().parse::<SessionStatus>().unwrap(), s);
        }
        assert!("done".parse::<SessionStatus>().is_err());
    }
}
