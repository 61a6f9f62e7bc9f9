//! The tool-call memo of a tenant's store: look up (`POST /v1/memo/lookup`), store
//! (`PUT /v1/memo`), forget (`POST /v1/memo/forget`), counts (`GET /v1/memo/stats`) and per-tool
//! TTLs (`GET`/`PUT /v1/memo/ttl/{tool}`). Arguments travel as JSON bodies: they are JSON
//! documents of up to `cairn::MAX_MEMO_ARGS` bytes, too large and too structured for a URL.

use std::time::Duration;

use axum::extract::RawQuery;
use axum::http::Method;
use axum::Json;
use cairn::{ArtifactId, MemoHit, MemoScope, MemoStats, SessionId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::api::{Params, Routes};
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{blocking, Json as JsonBody, Path, Reader, Writer};

pub(crate) fn routes(r: Routes) -> Routes {
    r.add(Method::POST, "/v1/memo/lookup", lookup)
        .add(Method::PUT, "/v1/memo", store)
        .add(Method::POST, "/v1/memo/forget", forget)
        .add(Method::GET, "/v1/memo/stats", stats)
        .add(Method::GET, "/v1/memo/ttl/{tool}", ttl)
        .add(Method::PUT, "/v1/memo/ttl/{tool}", set_ttl)
}

/// A memo key and the scope to look in.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoKeyBody {
    /// The tool name.
    pub tool: String,
    /// The tool's arguments (key order and whitespace do not matter).
    #[serde(default)]
    pub args: Value,
    /// Look from this session (its entries, then its ancestors', then store-wide ones), or,
    /// for `forget`, the session scope to remove from; absent: store-wide.
    #[serde(default)]
    pub session_id: Option<SessionId>,
}

/// A memo entry to store.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoStoreBody {
    /// The tool name.
    pub tool: String,
    /// The tool's arguments.
    #[serde(default)]
    pub args: Value,
    /// The artifact holding the result.
    pub artifact_id: ArtifactId,
    /// Visible to this session and its subtree only (the artifact must be in it); absent:
    /// store-wide.
    #[serde(default)]
    pub session_id: Option<SessionId>,
}

/// The answer to a lookup.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemoLookup {
    /// The stored result, or null on a miss.
    pub hit: Option<MemoHit>,
}

/// The answer to a forget.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemoForgot {
    /// Whether an entry existed (and was removed).
    pub removed: bool,
}

/// A tool's TTL.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoTtl {
    /// Seconds a stored result stays valid; null: never expires.
    pub ttl_secs: Option<u64>,
}

fn scope(s: Option<SessionId>) -> MemoScope {
    s.map_or(MemoScope::Store, MemoScope::Session)
}

/// Looks up the stored result of a tool call; counts a hit or a miss.
#[utoipa::path(post, path = "/v1/memo/lookup", tag = "memo", request_body = MemoKeyBody,
    responses((status = 200, description = "The hit, or hit = null on a miss", body = MemoLookup),
        (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn lookup(
    Reader(store): Reader,
    JsonBody(b): JsonBody<MemoKeyBody>,
) -> ApiResult<Json<MemoLookup>> {
    let hit = blocking(move || store.memo_lookup(scope(b.session_id), &b.tool, &b.args)).await?;
    Ok(Json(MemoLookup { hit }))
}

/// Records that a tool call produced an artifact (replacing an earlier entry for the same key).
#[utoipa::path(put, path = "/v1/memo", tag = "memo", request_body = MemoStoreBody,
    responses((status = 200, description = "The stored entry", body = MemoHit),
        (status = 404, description = "No such artifact (in that session's subtree) or session", body = ErrorBody)))]
pub async fn store(
    Writer(store): Writer,
    JsonBody(b): JsonBody<MemoStoreBody>,
) -> ApiResult<Json<MemoHit>> {
    Ok(Json(
        blocking(move || store.memo_store(scope(b.session_id), &b.tool, &b.args, b.artifact_id))
            .await?,
    ))
}

/// Removes the entry for a tool call in exactly the given scope.
#[utoipa::path(post, path = "/v1/memo/forget", tag = "memo", request_body = MemoKeyBody,
    responses((status = 200, description = "Whether an entry was removed", body = MemoForgot)))]
pub async fn forget(
    Writer(store): Writer,
    JsonBody(b): JsonBody<MemoKeyBody>,
) -> ApiResult<Json<MemoForgot>> {
    let removed =
        blocking(move || store.memo_forget(scope(b.session_id), &b.tool, &b.args)).await?;
    Ok(Json(MemoForgot { removed }))
}

/// Hit and miss counts, for all tools or one.
#[utoipa::path(get, path = "/v1/memo/stats", tag = "memo",
    params(("tool" = Option<String>, Query, description = "Only this tool")),
    responses((status = 200, description = "The counts", body = MemoStats)))]
pub async fn stats(Reader(store): Reader, RawQuery(q): RawQuery) -> ApiResult<Json<MemoStats>> {
    let p = Params::parse(q.as_deref(), &["tool"])?;
    let tool = p.get("tool").map(str::to_string);
    Ok(Json(
        blocking(move || store.memo_stats(tool.as_deref())).await?,
    ))
}

/// How long results of a tool stay valid.
#[utoipa::path(get, path = "/v1/memo/ttl/{tool}", tag = "memo",
    params(("tool" = String, Path, description = "Tool name")),
    responses((status = 200, description = "The TTL", body = MemoTtl)))]
pub async fn ttl(Reader(store): Reader, Path(tool): Path<String>) -> ApiResult<Json<MemoTtl>> {
    let t = blocking(move || store.memo_ttl(&tool)).await?;
    Ok(Json(MemoTtl {
        ttl_secs: t.map(|d| d.as_secs()),
    }))
}

/// Sets (or, with null, removes) the TTL of a tool; applies to entries already stored.
#[utoipa::path(put, path = "/v1/memo/ttl/{tool}", tag = "memo", request_body = MemoTtl,
    params(("tool" = String, Path, description = "Tool name")),
    responses((status = 200, description = "The TTL now", body = MemoTtl)))]
pub async fn set_ttl(
    Writer(store): Writer,
    Path(tool): Path<String>,
    JsonBody(b): JsonBody<MemoTtl>,
) -> ApiResult<Json<MemoTtl>> {
    let t = blocking(move || {
        store.memo_set_ttl(&tool, b.ttl_secs.map(Duration::from_secs))?;
        store.memo_ttl(&tool)
    })
    .await?;
    Ok(Json(MemoTtl {
        ttl_secs: t.map(|d| d.as_secs()),
    }))
}
