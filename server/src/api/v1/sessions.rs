//! Sessions: create, get-or-create by key, get, list, update, delete, tree, children,
//! lifecycle transitions, per-session counters and the event log.

use axum::extract::RawQuery;
use axum::http::{Method, StatusCode};
use axum::Json;
use cairn::{
    DeleteReport, Event, MetadataUpdate, NewSession, Page, Session, SessionFilter, SessionId,
    SessionMetrics, SessionOptions, SessionStats, SessionStatus,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::api::{Params, Routes};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{blocking, Json as Body, Path, Reader, Writer};

pub(crate) fn routes(r: Routes) -> Routes {
    r.add(Method::POST, "/v1/sessions", create)
        .add(Method::GET, "/v1/sessions", list)
        .add(Method::GET, "/v1/sessions/stats", session_stats)
        .add(Method::PUT, "/v1/sessions/by-key/{key}", by_key)
        .add(Method::GET, "/v1/sessions/{id}", show)
        .add(Method::PATCH, "/v1/sessions/{id}", update)
        .add(Method::DELETE, "/v1/sessions/{id}", delete)
        .add(Method::GET, "/v1/sessions/{id}/tree", tree)
        .add(Method::GET, "/v1/sessions/{id}/children", children)
        .add(Method::POST, "/v1/sessions/{id}/complete", complete)
        .add(Method::POST, "/v1/sessions/{id}/fail", fail)
        .add(Method::POST, "/v1/sessions/{id}/cancel", cancel)
        .add(Method::POST, "/v1/sessions/{id}/suspend", suspend)
        .add(Method::POST, "/v1/sessions/{id}/resume", resume)
        .add(Method::GET, "/v1/sessions/{id}/stats", stats)
        .add(Method::GET, "/v1/sessions/{id}/events", events)
        .add(Method::POST, "/v1/sessions/{id}/events", append_event)
}

/// A session to create (every field optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// Display name.
    pub name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// The parent session (must exist in the caller's tenant).
    pub parent: Option<SessionId>,
    /// A unique key (get-or-create uses it).
    pub key: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// A JSON object of metadata.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// Budgets and flags.
    pub options: Option<SessionOptions>,
}

impl CreateSession {
    fn into_new(self) -> NewSession {
        let mut n = NewSession::new().metadata(self.metadata);
        if let Some(v) = self.name {
            n = n.name(v);
        }
        if let Some(v) = self.description {
            n = n.description(v);
        }
        if let Some(v) = self.parent {
            n = n.parent(v);
        }
        if let Some(v) = self.key {
            n = n.key(v);
        }
        for t in self.tags {
            n = n.tag(t);
        }
        if let Some(o) = self.options {
            n = n.options(o);
        }
        n
    }
}

/// Creates a session.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = CreateSession,
    responses((status = 201, description = "The new session", body = Session),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "The parent does not exist", body = ErrorBody),
        (status = 409, description = "The key is taken or the parent is closed", body = ErrorBody)))]
pub async fn create(
    Writer(store): Writer,
    Body(body): Body<CreateSession>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    let s = blocking(move || store.create_session(body.into_new())).await?;
    Ok((StatusCode::CREATED, Json(s)))
}

const LIST_PARAMS: [&str; 10] = [
    "status",
    "tag",
    "key",
    "parent",
    "roots",
    "created_after",
    "created_before",
    "updated_after",
    "updated_before",
    "limit",
];

/// Lists sessions, newest last, one page at a time.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions",
    params(
        ("status" = Option<Vec<SessionStatus>>, Query, description = "Only these statuses (repeat for any of several)"),
        ("tag" = Option<Vec<String>>, Query, description = "Only sessions with every one of these tags (repeat)"),
        ("key" = Option<String>, Query, description = "Only the session with this key"),
        ("parent" = Option<SessionId>, Query, description = "Only direct children of this session"),
        ("roots" = Option<bool>, Query, description = "Only root sessions"),
        ("created_after" = Option<String>, Query, description = "Created at or after (RFC 3339)"),
        ("created_before" = Option<String>, Query, description = "Created before (RFC 3339)"),
        ("updated_after" = Option<String>, Query, description = "Updated at or after (RFC 3339)"),
        ("updated_before" = Option<String>, Query, description = "Updated before (RFC 3339)"),
        ("limit" = Option<usize>, Query, description = "Page size (default 100)"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor"),
    ),
    responses((status = 200, description = "One page", body = Page<Session>),
        (status = 400, description = "Invalid filter", body = ErrorBody)))]
pub async fn list(Reader(store): Reader, RawQuery(q): RawQuery) -> ApiResult<Json<Page<Session>>> {
    let mut known = LIST_PARAMS.to_vec();
    known.push("cursor");
    let p = Params::parse(q.as_deref(), &known)?;
    let mut f = filter(&p)?.limit(p.limit()?);
    if let Some(c) = p.parse_opt::<SessionId>("cursor")? {
        f = f.after(c);
    }
    Ok(Json(blocking(move || store.list_sessions(&f)).await?))
}

/// The filters `list` and `session_stats` share (not the page size or cursor).
fn filter(p: &Params) -> ApiResult<SessionFilter> {
    let mut f = SessionFilter::new();
    for s in p.all("status") {
        let st: SessionStatus = s
            .parse()
            .map_err(|e: cairn::Error| ApiError::invalid("status", e))?;
        f = f.status(st);
    }
    for t in p.all("tag") {
        f = f.tag(t);
    }
    if let Some(k) = p.get("key") {
        f = f.key(k);
    }
    if let Some(parent) = p.parse_opt::<SessionId>("parent")? {
        f = f.parent(parent);
    }
    if p.flag("roots")? {
        f = f.roots();
    }
    let created = (p.time("created_after")?, p.time("created_before")?);
    if created != (None, None) {
        f = f.created_between(created.0, created.1);
    }
    let updated = (p.time("updated_after")?, p.time("updated_before")?);
    if updated != (None, None) {
        f = f.updated_between(updated.0, updated.1);
    }
    Ok(f)
}

/// Statistics across the sessions the filters select (all of them without filters): counts
/// by status, success and error rates, iteration and duration percentiles, token totals. The
/// JSON of `cairn session stats`.
#[utoipa::path(get, path = "/v1/sessions/stats", tag = "sessions",
    params(
        ("status" = Option<Vec<SessionStatus>>, Query, description = "Only these statuses (repeat for any of several)"),
        ("tag" = Option<Vec<String>>, Query, description = "Only sessions with every one of these tags (repeat)"),
        ("key" = Option<String>, Query, description = "Only the session with this key"),
        ("parent" = Option<SessionId>, Query, description = "Only direct children of this session"),
        ("roots" = Option<bool>, Query, description = "Only root sessions"),
        ("created_after" = Option<String>, Query, description = "Created at or after (RFC 3339)"),
        ("created_before" = Option<String>, Query, description = "Created before (RFC 3339)"),
        ("updated_after" = Option<String>, Query, description = "Updated at or after (RFC 3339)"),
        ("updated_before" = Option<String>, Query, description = "Updated before (RFC 3339)"),
    ),
    responses((status = 200, description = "The statistics", body = SessionStats),
        (status = 400, description = "Invalid filter", body = ErrorBody)))]
pub async fn session_stats(
    Reader(store): Reader,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<SessionStats>> {
    let known: Vec<&str> = LIST_PARAMS
        .iter()
        .copied()
        .filter(|k| *k != "limit")
        .collect();
    let p = Params::parse(q.as_deref(), &known)?;
    let f = filter(&p)?;
    Ok(Json(blocking(move || store.session_stats(&f)).await?))
}

/// Gets the session with this key, or creates it (201) from the body.
#[utoipa::path(put, path = "/v1/sessions/by-key/{key}", tag = "sessions",
    params(("key" = String, Path, description = "The session key")),
    request_body = CreateSession,
    responses((status = 200, description = "The existing session", body = Session),
        (status = 201, description = "The session, created", body = Session),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "The parent does not exist", body = ErrorBody),
        (status = 409, description = "The parent is closed", body = ErrorBody)))]
pub async fn by_key(
    Writer(store): Writer,
    Path(key): Path<String>,
    Body(body): Body<CreateSession>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    if body.key.as_ref().is_some_and(|k| *k != key) {
        return Err(ApiError::invalid(
            "key",
            "the body's key differs from the key in the path; leave it out of the body",
        ));
    }
    let (s, created) = blocking(move || store.get_or_create_by_key(&key, body.into_new())).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(s)))
}

/// Shows one session.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = SessionId, Path, description = "Session id")),
    responses((status = 200, description = "The session", body = Session),
        (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn show(Reader(store): Reader, Path(id): Path<SessionId>) -> ApiResult<Json<Session>> {
    Ok(Json(blocking(move || store.session(id)).await?))
}

/// A change to a session's metadata and tags.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSession {
    /// Keys to merge into the metadata; a `null` value removes the key.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Replace the whole metadata object with this one instead.
    #[schema(value_type = Option<Object>)]
    pub replace_metadata: Option<Map<String, Value>>,
    /// Tags to add.
    #[serde(default)]
    pub add_tags: Vec<String>,
    /// Tags to remove.
    #[serde(default)]
    pub remove_tags: Vec<String>,
}

/// Updates a session's metadata and tags.
#[utoipa::path(patch, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = SessionId, Path, description = "Session id")),
    request_body = UpdateSession,
    responses((status = 200, description = "The updated session", body = Session),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn update(
    Writer(store): Writer,
    Path(id): Path<SessionId>,
    Body(body): Body<UpdateSession>,
) -> ApiResult<Json<Session>> {
    if body.metadata.is_some() && body.replace_metadata.is_some() {
        return Err(ApiError::invalid(
            "update",
            "give metadata (merge) or replace_metadata, not both",
        ));
    }
    let s = blocking(move || {
        let mut s = store.session(id)?;
        if let Some(m) = body.metadata {
            s = store.update_metadata(id, MetadataUpdate::Merge(m))?;
        }
        if let Some(m) = body.replace_metadata {
            s = store.update_metadata(id, MetadataUpdate::Replace(m))?;
        }
        if !body.add_tags.is_empty() || !body.remove_tags.is_empty() {
            s = store.update_tags(id, &body.add_tags, &body.remove_tags)?;
        }
        Ok(s)
    })
    .await?;
    Ok(Json(s))
}

/// Deletes a session (with `recursive=true`, its whole subtree) and its artifacts.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = SessionId, Path, description = "Session id"),
        ("recursive" = Option<bool>, Query, description = "Also delete every descendant")),
    responses((status = 200, description = "What was removed", body = DeleteReport),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "It has children and recursive is not set", body = ErrorBody)))]
pub async fn delete(
    Writer(store): Writer,
    Path(id): Path<SessionId>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<DeleteReport>> {
    let recursive = Params::parse(q.as_deref(), &["recursive"])?.flag("recursive")?;
    Ok(Json(
        blocking(move || store.delete_session(id, recursive)).await?,
    ))
}

/// The session and all its descendants, the session first (parents before children).
#[utoipa::path(get, path = "/v1/sessions/{id}/tree", tag = "sessions",
    params(("id" = SessionId, Path, description = "Session id")),
    responses((status = 200, description = "The subtree", body = Vec<Session>),
        (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn tree(
    Reader(store): Reader,
    Path(id): Path<SessionId>,
) -> ApiResult<Json<Vec<Session>>> {
    Ok(Json(blocking(move || store.subtree(id)).await?))
}

/// The direct children of a session.
#[utoipa::path(get, path = "/v1/sessions/{id}/children", tag = "sessions",
    params(("id" = SessionId, Path, description = "Session id")),
    responses((status = 200, description = "The children", body = Vec<Session>),
        (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn children(
    Reader(store): Reader,
    Path(id): Path<SessionId>,
) -> ApiResult<Json<Vec<Session>>> {
    Ok(Json(blocking(move || store.children(id)).await?))
}

/// The reason for a lifecycle change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    /// Why (kept as the session's `reason`).
    pub reason: Option<String>,
}

async fn transition(
    store: std::sync::Arc<cairn::Store>,
    id: SessionId,
    to: SessionStatus,
    body: Transition,
) -> ApiResult<Json<Session>> {
    Ok(Json(
        blocking(move || store.transition(id, to, body.reason.as_deref())).await?,
    ))
}

macro_rules! lifecycle {
    ($fn:ident, $path:literal, $status:expr, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "sessions",
            params(("id" = SessionId, Path, description = "Session id")),
            request_body(content = Option<Transition>, description = "An optional reason"),
            responses((status = 200, description = "The session in its new state", body = Session),
                (status = 404, description = "No such session", body = ErrorBody),
                (status = 409, description = "The lifecycle does not allow this change", body = ErrorBody)))]
        pub async fn $fn(
            Writer(store): Writer,
            Path(id): Path<SessionId>,
            Body(body): Body<Transition>,
        ) -> ApiResult<Json<Session>> {
            transition(store, id, $status, body).await
        }
    };
}

lifecycle!(
    complete,
    "/v1/sessions/{id}/complete",
    SessionStatus::Completed,
    "Marks a session completed (terminal)."
);
lifecycle!(
    fail,
    "/v1/sessions/{id}/fail",
    SessionStatus::Failed,
    "Marks a session failed (terminal), with a reason."
);
lifecycle!(
    cancel,
    "/v1/sessions/{id}/cancel",
    SessionStatus::Cancelled,
    "Cancels a session (terminal)."
);
lifecycle!(
    suspend,
    "/v1/sessions/{id}/suspend",
    SessionStatus::Suspended,
    "Suspends an active session."
);
lifecycle!(
    resume,
    "/v1/sessions/{id}/resume",
    SessionStatus::Active,
    "Resumes a suspended session."
);

/// A session's counters: iterations, tokens, requests, tool calls, cost.
#[utoipa::path(get, path = "/v1/sessions/{id}/stats", tag = "sessions",
    params(("id" = SessionId, Path, description = "Session id")),
    responses((status = 200, description = "The counters", body = SessionMetrics),
        (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn stats(
    Reader(store): Reader,
    Path(id): Path<SessionId>,
) -> ApiResult<Json<SessionMetrics>> {
    Ok(Json(blocking(move || store.metrics(id)).await?))
}

/// A session's event log, oldest first, one page at a time.
#[utoipa::path(get, path = "/v1/sessions/{id}/events", tag = "sessions",
    params(("id" = SessionId, Path, description = "Session id"),
        ("after" = Option<u64>, Query, description = "Only events with a larger seq (a page's next_cursor)"),
        ("cursor" = Option<u64>, Query, description = "Same as after"),
        ("limit" = Option<usize>, Query, description = "Page size (default 100)")),
    responses((status = 200, description = "One page of events", body = Page<Event>),
        (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn events(
    Reader(store): Reader,
    Path(id): Path<SessionId>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Page<Event>>> {
    let p = Params::parse(q.as_deref(), &["after", "cursor", "limit"])?;
    let after = match p.parse_opt::<u64>("after")? {
        Some(a) => Some(a),
        None => p.parse_opt::<u64>("cursor")?,
    };
    let limit = p.limit()?;
    Ok(Json(
        blocking(move || store.events(id, after, limit)).await?,
    ))
}

/// An application event to append to a session's log.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// The event's name.
    pub name: String,
    /// Its JSON payload.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// Appends an application event to a session's log.
#[utoipa::path(post, path = "/v1/sessions/{id}/events", tag = "sessions",
    params(("id" = SessionId, Path, description = "Session id")),
    request_body = NewEvent,
    responses((status = 201, description = "The event", body = Event),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "The session is closed", body = ErrorBody)))]
pub async fn append_event(
    Writer(store): Writer,
    Path(id): Path<SessionId>,
    Body(body): Body<NewEvent>,
) -> ApiResult<(StatusCode, Json<Event>)> {
    let e = blocking(move || store.append_event(id, &body.name, body.payload)).await?;
    Ok((StatusCode::CREATED, Json(e)))
}
