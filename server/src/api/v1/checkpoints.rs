//! Checkpoints (create, list, show, restore, delete), forks, copies, merges, lineage, the
//! timeline and the conversation history (say/history).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::Json;
use cairn::{
    Artifact, Checkpoint, CheckpointId, CopyOptions, Lineage, Message, NewCheckpoint, NewSession,
    Page, RestoreReport, Role, Session, SessionId, SessionOptions, TimelineEntry, TimelineOptions,
};
use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::api::{Params, Routes};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{blocking, Json as Body, Path, Reader, Writer};
use crate::limits::check_quota;
use crate::state::AppState;

pub(crate) fn routes(r: Routes) -> Routes {
    r.add(Method::POST, "/v1/sessions/{id}/checkpoints", create)
        .add(Method::PUT, "/v1/sessions/{id}/checkpoints", create_binary)
        .add(Method::GET, "/v1/sessions/{id}/checkpoints", list)
        .add(Method::GET, "/v1/checkpoints/{id}", show)
        .add(Method::GET, "/v1/checkpoints/{id}/artifacts", artifacts)
        .add(Method::GET, "/v1/checkpoints/{id}/state", state)
        .add(Method::DELETE, "/v1/checkpoints/{id}", delete)
        .add(Method::POST, "/v1/checkpoints/{id}/restore", restore)
        .add(Method::POST, "/v1/sessions/{id}/fork", fork)
        .add(Method::POST, "/v1/sessions/{id}/copy", copy)
        .add(Method::POST, "/v1/sessions/merge", merge)
        .add(Method::GET, "/v1/sessions/{id}/lineage", lineage)
        .add(Method::GET, "/v1/sessions/{id}/timeline", timeline)
        .add(Method::POST, "/v1/sessions/{id}/messages", say)
        .add(Method::GET, "/v1/sessions/{id}/messages", history)
}

/// A checkpoint to record.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCheckpoint {
    /// Its label (1-256 printable bytes).
    pub label: String,
    /// A JSON state kept with it.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub state: Value,
}

/// Records a checkpoint of a session: its current artifact versions and a state.
#[utoipa::path(post, path = "/v1/sessions/{id}/checkpoints", tag = "checkpoints",
    params(("id" = SessionId, Path, description = "Session id")),
    request_body = CreateCheckpoint,
    responses((status = 201, description = "The checkpoint", body = Checkpoint),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "The session is closed", body = ErrorBody)))]
pub async fn create(
    Writer(store): Writer,
    Path(id): Path<SessionId>,
    Body(body): Body<CreateCheckpoint>,
) -> ApiResult<(StatusCode, Json<Checkpoint>)> {
    let cp = blocking(move || {
        store.create_checkpoint(id, NewCheckpoint::new(body.label).state(body.state))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(cp)))
}

/// Records a checkpoint whose state is the request body's bytes (its binary state: content
/// addressed, deduplicated and compressed like an artifact), as `cairn checkpoint create
/// --state FILE --binary` does. The body is at most the store's `max_artifact_size`.
#[utoipa::path(put, path = "/v1/sessions/{id}/checkpoints", tag = "checkpoints",
    params(("id" = SessionId, Path, description = "Session id"),
        ("label" = String, Query, description = "The label (1-256 printable bytes)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The binary state"),
    responses((status = 201, description = "The checkpoint", body = Checkpoint),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "The session is closed", body = ErrorBody),
        (status = 413, description = "The state is over max_body_bytes or max_artifact_size", body = ErrorBody),
        (status = 422, description = "quota_exceeded", body = ErrorBody)))]
pub async fn create_binary(
    State(st): State<AppState>,
    Writer(store): Writer,
    Path(id): Path<SessionId>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> ApiResult<(StatusCode, Json<Checkpoint>)> {
    let p = Params::parse(q.as_deref(), &["label"])?;
    let label = p
        .get("label")
        .ok_or_else(|| ApiError::invalid("label", "missing: give label=NAME"))?
        .to_string();
    check_quota(&st, &store).await?;
    let max = store
        .config()
        .limits
        .max_artifact_size
        .min(st.config().limits.max_body_bytes);
    let bytes = axum::body::to_bytes(body, usize::try_from(max).unwrap_or(usize::MAX))
        .await
        .map_err(|e| {
            if e.to_string().contains("length limit") {
                ApiError::too_large(max)
            } else {
                ApiError::invalid("request body", e)
            }
        })?;
    st.metrics().add_in(bytes.len() as u64);
    let cp = blocking(move || {
        store.create_checkpoint(id, NewCheckpoint::new(label).state_bytes(bytes.to_vec()))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(cp)))
}

/// A session's checkpoints, oldest first, one page at a time.
#[utoipa::path(get, path = "/v1/sessions/{id}/checkpoints", tag = "checkpoints",
    params(("id" = SessionId, Path, description = "Session id"),
        ("limit" = Option<usize>, Query, description = "Page size (default 100)"),
        ("cursor" = Option<CheckpointId>, Query, description = "The previous page's next_cursor")),
    responses((status = 200, description = "One page", body = Page<Checkpoint>),
        (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn list(
    Reader(store): Reader,
    Path(id): Path<SessionId>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Page<Checkpoint>>> {
    let p = Params::parse(q.as_deref(), &["limit", "cursor"])?;
    let limit = p.limit()?;
    let after = p.parse_opt::<CheckpointId>("cursor")?;
    Ok(Json(
        blocking(move || store.checkpoints_page(id, after, limit)).await?,
    ))
}

/// Shows a checkpoint.
#[utoipa::path(get, path = "/v1/checkpoints/{id}", tag = "checkpoints",
    params(("id" = CheckpointId, Path, description = "Checkpoint id")),
    responses((status = 200, description = "The checkpoint", body = Checkpoint),
        (status = 404, description = "No such checkpoint", body = ErrorBody)))]
pub async fn show(
    Reader(store): Reader,
    Path(id): Path<CheckpointId>,
) -> ApiResult<Json<Checkpoint>> {
    Ok(Json(blocking(move || store.checkpoint(id)).await?))
}

/// The artifact versions a checkpoint captured.
#[utoipa::path(get, path = "/v1/checkpoints/{id}/artifacts", tag = "checkpoints",
    params(("id" = CheckpointId, Path, description = "Checkpoint id")),
    responses((status = 200, description = "The captured artifacts", body = Vec<Artifact>),
        (status = 404, description = "No such checkpoint", body = ErrorBody)))]
pub async fn artifacts(
    Reader(store): Reader,
    Path(id): Path<CheckpointId>,
) -> ApiResult<Json<Vec<Artifact>>> {
    Ok(Json(
        blocking(move || store.checkpoint_artifacts(id)).await?,
    ))
}

/// A checkpoint's binary state, verified (404 `not_found` when it has only a JSON state: that
/// is in the checkpoint itself).
#[utoipa::path(get, path = "/v1/checkpoints/{id}/state", tag = "checkpoints",
    params(("id" = CheckpointId, Path, description = "Checkpoint id")),
    responses((status = 200, description = "The binary state", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "No such checkpoint, or no binary state", body = ErrorBody)))]
pub async fn state(
    Reader(store): Reader,
    Path(id): Path<CheckpointId>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let bytes = blocking(move || store.checkpoint_state_bytes(id)).await?;
    let Some(bytes) = bytes else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("checkpoint {id} has no binary state; its JSON state is in GET /v1/checkpoints/{id}"),
        ));
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

/// Deletes a checkpoint (the artifacts stay).
#[utoipa::path(delete, path = "/v1/checkpoints/{id}", tag = "checkpoints",
    params(("id" = CheckpointId, Path, description = "Checkpoint id")),
    responses((status = 200, description = "The deleted checkpoint", body = Checkpoint),
        (status = 404, description = "No such checkpoint", body = ErrorBody)))]
pub async fn delete(
    Writer(store): Writer,
    Path(id): Path<CheckpointId>,
) -> ApiResult<Json<Checkpoint>> {
    Ok(Json(blocking(move || store.delete_checkpoint(id)).await?))
}

/// Puts a session back to a checkpoint (a `before-restore` checkpoint keeps what it replaced).
#[utoipa::path(post, path = "/v1/checkpoints/{id}/restore", tag = "checkpoints",
    params(("id" = CheckpointId, Path, description = "Checkpoint id")),
    responses((status = 200, description = "What the restore did", body = RestoreReport),
        (status = 404, description = "No such checkpoint", body = ErrorBody),
        (status = 409, description = "The session is closed", body = ErrorBody)))]
pub async fn restore(
    State(st): State<AppState>,
    Writer(store): Writer,
    Path(id): Path<CheckpointId>,
) -> ApiResult<Json<RestoreReport>> {
    check_quota(&st, &store).await?;
    Ok(Json(blocking(move || store.restore_checkpoint(id)).await?))
}

/// The new session of a fork, copy or merge.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Derive {
    /// Fork: the checkpoint of the source to fork at (default: its current state).
    pub checkpoint: Option<CheckpointId>,
    /// The new session's name.
    pub name: Option<String>,
    /// Copy and merge: the parent of the new session (copy default: the source's parent;
    /// merge default: none).
    pub parent: Option<SessionId>,
    /// Copy: make the copy a root session.
    #[serde(default)]
    pub root: bool,
    /// Copy: also copy every descendant.
    #[serde(default)]
    pub subtree: bool,
    /// Merge: the sessions to merge, in order.
    #[serde(default)]
    pub sources: Vec<SessionId>,
    /// Fork and merge: tags of the new session.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Fork and merge: metadata of the new session.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// Fork and merge: options of the new session.
    pub options: Option<SessionOptions>,
}

impl Derive {
    fn new_session(&self) -> NewSession {
        let mut n = NewSession::new().metadata(self.metadata.clone());
        if let Some(v) = &self.name {
            n = n.name(v.clone());
        }
        for t in &self.tags {
            n = n.tag(t.clone());
        }
        if let Some(o) = &self.options {
            n = n.options(o.clone());
        }
        n
    }

    fn refuse(&self, route: &str, fields: &[(&str, bool)]) -> ApiResult<()> {
        for (name, given) in fields {
            if *given {
                return Err(ApiError::invalid(
                    name,
                    format!("{route} does not take {name}"),
                ));
            }
        }
        Ok(())
    }
}

async fn derived(
    st: &AppState,
    store: &Arc<cairn::Store>,
    f: impl FnOnce() -> cairn::Result<Session> + Send + 'static,
) -> ApiResult<(StatusCode, Json<Session>)> {
    check_quota(st, store).await?;
    Ok((StatusCode::CREATED, Json(blocking(f).await?)))
}

/// Forks a session (at a checkpoint, or now) into a new child: same artifacts, no content copied.
#[utoipa::path(post, path = "/v1/sessions/{id}/fork", tag = "checkpoints",
    params(("id" = SessionId, Path, description = "The source session")),
    request_body = Derive,
    responses((status = 201, description = "The fork", body = Session),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such session or checkpoint", body = ErrorBody)))]
pub async fn fork(
    State(st): State<AppState>,
    Writer(store): Writer,
    Path(id): Path<SessionId>,
    Body(body): Body<Derive>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    body.refuse(
        "fork",
        &[
            ("parent", body.parent.is_some()),
            ("root", body.root),
            ("subtree", body.subtree),
            ("sources", !body.sources.is_empty()),
        ],
    )?;
    let s = Arc::clone(&store);
    derived(&st, &store, move || {
        s.fork(id, body.checkpoint, body.new_session())
    })
    .await
}

/// Copies a session (with `subtree`, its whole subtree) as a sibling, under `parent`, or as a root.
#[utoipa::path(post, path = "/v1/sessions/{id}/copy", tag = "checkpoints",
    params(("id" = SessionId, Path, description = "The source session")),
    request_body = Derive,
    responses((status = 201, description = "The copy", body = Session),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn copy(
    State(st): State<AppState>,
    Writer(store): Writer,
    Path(id): Path<SessionId>,
    Body(body): Body<Derive>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    body.refuse(
        "copy",
        &[
            ("checkpoint", body.checkpoint.is_some()),
            ("sources", !body.sources.is_empty()),
            ("tags", !body.tags.is_empty()),
            ("metadata", !body.metadata.is_empty()),
            ("options", body.options.is_some()),
        ],
    )?;
    if body.root && body.parent.is_some() {
        return Err(ApiError::invalid("copy", "give parent or root, not both"));
    }
    let mut o = CopyOptions::new().subtree(body.subtree);
    if body.root {
        o = o.parent(None);
    } else if let Some(p) = body.parent {
        o = o.parent(Some(p));
    }
    if let Some(n) = &body.name {
        o = o.name(n.clone());
    }
    let s = Arc::clone(&store);
    derived(&st, &store, move || s.copy_session(id, o)).await
}

/// Merges sessions into a new one: every artifact of every source, in time order.
#[utoipa::path(post, path = "/v1/sessions/merge", tag = "checkpoints",
    request_body = Derive,
    responses((status = 201, description = "The merged session", body = Session),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "A source does not exist", body = ErrorBody)))]
pub async fn merge(
    State(st): State<AppState>,
    Writer(store): Writer,
    Body(body): Body<Derive>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    body.refuse(
        "merge",
        &[
            ("checkpoint", body.checkpoint.is_some()),
            ("root", body.root),
            ("subtree", body.subtree),
        ],
    )?;
    let mut new = body.new_session();
    if let Some(p) = body.parent {
        new = new.parent(p);
    }
    let s = Arc::clone(&store);
    derived(&st, &store, move || s.merge_sessions(&body.sources, new)).await
}

/// Where a session came from: one record for a fork or copy, one per source for a merge.
#[utoipa::path(get, path = "/v1/sessions/{id}/lineage", tag = "checkpoints",
    params(("id" = SessionId, Path, description = "Session id")),
    responses((status = 200, description = "The lineage", body = Vec<Lineage>),
        (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn lineage(
    Reader(store): Reader,
    Path(id): Path<SessionId>,
) -> ApiResult<Json<Vec<Lineage>>> {
    Ok(Json(blocking(move || store.lineage(id)).await?))
}

/// A session's history in time order (events with their artifacts and checkpoints), paged.
#[utoipa::path(get, path = "/v1/sessions/{id}/timeline", tag = "checkpoints",
    params(("id" = SessionId, Path, description = "Session id"),
        ("subtree" = Option<bool>, Query, description = "Interleave the whole subtree"),
        ("limit" = Option<usize>, Query, description = "Page size (default 100)"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor")),
    responses((status = 200, description = "One page", body = Page<TimelineEntry>),
        (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn timeline(
    Reader(store): Reader,
    Path(id): Path<SessionId>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Page<TimelineEntry>>> {
    let p = Params::parse(q.as_deref(), &["subtree", "limit", "cursor"])?;
    let mut o = TimelineOptions::new()
        .subtree(p.flag("subtree")?)
        .limit(p.limit()?);
    if let Some(c) = p.get("cursor") {
        o = o.cursor(c);
    }
    Ok(Json(blocking(move || store.timeline(id, &o)).await?))
}

/// A message to append to a session's conversation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Say {
    /// user, assistant, system or tool.
    pub role: Role,
    /// The text.
    pub content: String,
    /// Metadata kept with the message.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
}

/// Appends a message to a session's conversation (stored as an artifact).
#[utoipa::path(post, path = "/v1/sessions/{id}/messages", tag = "checkpoints",
    params(("id" = SessionId, Path, description = "Session id")),
    request_body = Say,
    responses((status = 201, description = "The message", body = Message),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 409, description = "The session is closed", body = ErrorBody)))]
pub async fn say(
    State(st): State<AppState>,
    Writer(store): Writer,
    Path(id): Path<SessionId>,
    Body(body): Body<Say>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    check_quota(&st, &store).await?;
    let m = blocking(move || store.say(id, body.role, &body.content, body.metadata)).await?;
    Ok((StatusCode::CREATED, Json(m)))
}

/// The conversation, oldest first (the last `last` messages with `last=N`).
#[utoipa::path(get, path = "/v1/sessions/{id}/messages", tag = "checkpoints",
    params(("id" = SessionId, Path, description = "Session id"),
        ("last" = Option<usize>, Query, description = "Only the last N messages")),
    responses((status = 200, description = "The messages", body = Vec<Message>),
        (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn history(
    Reader(store): Reader,
    Path(id): Path<SessionId>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Vec<Message>>> {
    let p = Params::parse(q.as_deref(), &["last"])?;
    let last = p.parse_opt::<usize>("last")?;
    Ok(Json(blocking(move || store.history(id, last)).await?))
}
