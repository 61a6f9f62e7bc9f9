//! Artifacts: streamed upload (`PUT`), show, list, versions, delete, query with every filter,
//! and the content-first probe `POST /v1/blobs/missing`.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::Json;
use cairn::{Artifact, ArtifactId, ArtifactKind, ContentHash, NewArtifact, Page, Query, SessionId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::api::{Params, Routes};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{blocking, Json as JsonBody, Path, Reader, Writer};
use crate::limits::check_quota;
use crate::state::AppState;
use crate::streaming::{drain, feed, parse_hash, ChannelReader, VerifyingReader, CHANNEL_DEPTH};

/// The header that declares an upload's BLAKE3 hash.
pub const HASH_HEADER: &str = "x-cairn-hash";
/// The header that makes a put idempotent: its value is the put's request id
/// ([`cairn::NewArtifact::request_id`]).
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Most hashes one `POST /v1/blobs/missing` may ask about.
pub const MAX_PROBE: usize = 10_000;

pub(crate) fn routes(r: Routes) -> Routes {
    r.add(Method::PUT, "/v1/sessions/{id}/artifacts/{name}", put)
        .add(
            Method::GET,
            "/v1/sessions/{id}/artifacts/{name}",
            show_by_name,
        )
        .add(Method::GET, "/v1/sessions/{id}/artifacts", list)
        .add(
            Method::GET,
            "/v1/sessions/{id}/artifacts/{name}/versions",
            versions,
        )
        .add(Method::GET, "/v1/artifacts", query)
        .add(Method::GET, "/v1/artifacts/{id}", show)
        .add(Method::DELETE, "/v1/artifacts/{id}", delete)
        .add(Method::POST, "/v1/blobs/missing", missing)
}

fn new_artifact(p: &Params, name: String) -> ApiResult<NewArtifact> {
    let kind = p.get("kind").ok_or_else(|| {
        ApiError::invalid(
            "kind",
            "missing: give kind=user_input, tool_result, agent_output, system_generated, checkpoint or a custom kind",
        )
    })?;
    let kind = ArtifactKind::from_str(kind).map_err(ApiError::from)?;
    let mut n = NewArtifact::new(kind, name);
    for t in p.all("tag") {
        n = n.tag(t);
    }
    if let Some(m) = p.get("metadata") {
        let v: Map<String, Value> = serde_json::from_str(m).map_err(|e| {
            ApiError::invalid(
                "metadata",
                format!("{e}; give a JSON object such as {{\"step\":3}}"),
            )
        })?;
        n = n.metadata(v);
    }
    if let Some(m) = p.get("mime_type") {
        n = n.mime_type(m);
    }
    Ok(n)
}

/// Stores the request body as a new artifact (or a new version of `name`). The body streams
/// to the store; it is never held whole. With `X-Cairn-Hash` (or `hash=`) the content must
/// hash to it (422 `hash_mismatch` otherwise, nothing stored); with that hash and an empty
/// body (`Content-Length: 0`), the artifact reuses content this tenant already stores (404
/// `content_missing` if it does not: upload the bytes then). With `Idempotency-Key`, a retry
/// of the same put (same session, name and content) stores nothing and answers with the
/// artifact the first attempt stored: safe after a 503 whose outcome is unknown.
#[utoipa::path(put, path = "/v1/sessions/{id}/artifacts/{name}", tag = "artifacts",
    params(("id" = SessionId, Path, description = "Session id"),
        ("name" = String, Path, description = "Artifact name (percent-encode '/' as %2F)"),
        ("kind" = String, Query, description = "user_input, tool_result, agent_output, system_generated, checkpoint or a custom kind"),
        ("tag" = Option<Vec<String>>, Query, description = "Tags (repeat)"),
        ("metadata" = Option<String>, Query, description = "A JSON object"),
        ("mime_type" = Option<String>, Query, description = "The MIME type"),
        ("hash" = Option<ContentHash>, Query, description = "The declared BLAKE3 hash (or the X-Cairn-Hash header)"),
        ("X-Cairn-Hash" = Option<ContentHash>, Header, description = "The declared BLAKE3 hash"),
        ("Idempotency-Key" = Option<String>, Header, description = "A request id (1 to 128 bytes, e.g. a UUID): a retry with the same key stores the artifact once")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The content"),
    responses((status = 201, description = "The stored artifact", body = Artifact),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 404, description = "No such session, or declared content not stored", body = ErrorBody),
        (status = 409, description = "The session is closed", body = ErrorBody),
        (status = 413, description = "The body is over max_body_bytes or max_artifact_size", body = ErrorBody),
        (status = 422, description = "hash_mismatch or quota_exceeded", body = ErrorBody)))]
pub async fn put(
    State(st): State<AppState>,
    req: axum::extract::Request,
) -> ApiResult<(StatusCode, Json<Artifact>)> {
    let (mut parts, body) = req.into_parts();
    // Everything that can refuse the request is checked before the body is read; a refused
    // body is drained (up to a bound) so the client reads the answer.
    let checked = async {
        let Writer(store) = Writer::from_request_parts(&mut parts, &st).await?;
        let Path((id, name)) =
            Path::<(SessionId, String)>::from_request_parts(&mut parts, &st).await?;
        let p = Params::parse(
            parts.uri.query(),
            &["kind", "tag", "metadata", "mime_type", "hash"],
        )?;
        let mut new = new_artifact(&p, name)?;
        if let Some(k) = parts.headers.get(IDEMPOTENCY_HEADER) {
            let k = k.to_str().map_err(|_| {
                ApiError::invalid(
                    "Idempotency-Key header",
                    "it is not visible ASCII; use a UUID or another printable id",
                )
            })?;
            new = new.request_id(k);
        }
        let declared = match (p.get("hash"), parts.headers.get(HASH_HEADER)) {
            (Some(h), _) => Some(parse_hash("hash", h)?),
            (None, Some(h)) => Some(parse_hash(
                "X-Cairn-Hash header",
                h.to_str().unwrap_or("\u{fffd}"),
            )?),
            (None, None) => None,
        };
        check_quota(&st, &store).await?;
        Ok::<_, ApiError>((store, id, new, declared))
    }
    .await;
    let (store, id, new, declared) = match checked {
        Ok(x) => x,
        Err(e) => {
            drain(body).await;
            return Err(e);
        }
    };
    let empty_body = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() == b"0");
    if let Some(h) = declared {
        if empty_body && h != ContentHash::of(b"") {
            let a = blocking(move || store.put_existing(id, new, &h)).await?;
            return Ok((StatusCode::CREATED, Json(a)));
        }
    }

    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let mismatch = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&mismatch);
    let work = tokio::task::spawn_blocking(move || {
        let reader = ChannelReader::new(rx);
        match declared {
            Some(h) => store.put_reader(id, new, VerifyingReader::new(reader, h, flag)),
            None => store.put_reader(id, new, reader),
        }
    });
    let (fed, feed_error) = feed(body, tx, st.config().limits.max_body_bytes).await;
    st.metrics().add_in(fed);
    let result = work
        .await
        .map_err(|e| ApiError::internal(format!("the upload failed: {e}")))?;
    if let Some(e) = feed_error {
        return Err(e);
    }
    if mismatch.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "hash_mismatch",
            match result {
                Err(e) => format!("{e}; nothing was stored"),
                Ok(_) => "the content does not match the declared hash".into(),
            },
        ));
    }
    Ok((StatusCode::CREATED, Json(result?)))
}

/// The artifact named `name` in a session: the latest version, or `version=N`.
#[utoipa::path(get, path = "/v1/sessions/{id}/artifacts/{name}", tag = "artifacts",
    params(("id" = SessionId, Path, description = "Session id"),
        ("name" = String, Path, description = "Artifact name"),
        ("version" = Option<u32>, Query, description = "A version (default: the latest)")),
    responses((status = 200, description = "The artifact", body = Artifact),
        (status = 404, description = "No such session, name or version", body = ErrorBody)))]
pub async fn show_by_name(
    Reader(store): Reader,
    Path((id, name)): Path<(SessionId, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Artifact>> {
    let p = Params::parse(q.as_deref(), &["version"])?;
    let version = p.parse_opt::<u32>("version")?;
    Ok(Json(
        blocking(move || store.artifact_by_name(id, &name, version)).await?,
    ))
}

/// A session's artifacts (with `recursive=true`, its subtree's), one page at a time.
#[utoipa::path(get, path = "/v1/sessions/{id}/artifacts", tag = "artifacts",
    params(("id" = SessionId, Path, description = "Session id"),
        ("recursive" = Option<bool>, Query, description = "Include the whole subtree"),
        ("limit" = Option<usize>, Query, description = "Page size (default 100)"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor")),
    responses((status = 200, description = "One page", body = Page<Artifact>),
        (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn list(
    Reader(store): Reader,
    Path(id): Path<SessionId>,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Page<Artifact>>> {
    let p = Params::parse(q.as_deref(), &["recursive", "limit", "cursor"])?;
    let recursive = p.flag("recursive")?;
    let limit = p.limit()?;
    let cursor = p.get("cursor").map(str::to_string);
    Ok(Json(
        blocking(move || {
            store.session(id)?;
            store.list_artifacts(id, recursive, limit, cursor.as_deref())
        })
        .await?,
    ))
}

/// Every version of a name in a session, oldest first.
#[utoipa::path(get, path = "/v1/sessions/{id}/artifacts/{name}/versions", tag = "artifacts",
    params(("id" = SessionId, Path, description = "Session id"),
        ("name" = String, Path, description = "Artifact name")),
    responses((status = 200, description = "The versions", body = Vec<Artifact>),
        (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn versions(
    Reader(store): Reader,
    Path((id, name)): Path<(SessionId, String)>,
) -> ApiResult<Json<Vec<Artifact>>> {
    Ok(Json(blocking(move || store.versions(id, &name)).await?))
}

const QUERY_PARAMS: [&str; 14] = [
    "kind", "tag", "any_tag", "name", "session", "subtree", "min_size", "max_size", "after",
    "before", "latest", "desc", "cursor", "limit",
];

/// Finds artifacts across the tenant's sessions; every given filter must hold.
#[utoipa::path(get, path = "/v1/artifacts", tag = "artifacts",
    params(("kind" = Option<Vec<String>>, Query, description = "Only these kinds (repeat for any of several)"),
        ("tag" = Option<Vec<String>>, Query, description = "Carrying every one of these tags (repeat)"),
        ("any_tag" = Option<Vec<String>>, Query, description = "Carrying at least one of these tags (repeat)"),
        ("name" = Option<String>, Query, description = "Name glob such as *.txt"),
        ("session" = Option<SessionId>, Query, description = "Only in this session"),
        ("subtree" = Option<bool>, Query, description = "With session: its whole subtree"),
        ("min_size" = Option<u64>, Query, description = "At least this many bytes"),
        ("max_size" = Option<u64>, Query, description = "At most this many bytes"),
        ("after" = Option<String>, Query, description = "Created at or after (RFC 3339)"),
        ("before" = Option<String>, Query, description = "Created before (RFC 3339)"),
        ("latest" = Option<bool>, Query, description = "Only the latest version of each name"),
        ("desc" = Option<bool>, Query, description = "Newest first"),
        ("limit" = Option<usize>, Query, description = "Page size (default 100)"),
        ("cursor" = Option<String>, Query, description = "The previous page's next_cursor")),
    responses((status = 200, description = "One page", body = Page<Artifact>),
        (status = 400, description = "Invalid filter", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn query(
    Reader(store): Reader,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Page<Artifact>>> {
    let p = Params::parse(q.as_deref(), &QUERY_PARAMS)?;
    let mut qy = Query::new().limit(p.limit()?);
    for k in p.all("kind") {
        qy = qy.kind(ArtifactKind::from_str(k).map_err(ApiError::from)?);
    }
    for t in p.all("tag") {
        qy = qy.tag(t);
    }
    for t in p.all("any_tag") {
        qy = qy.any_tag(t);
    }
    if let Some(g) = p.get("name") {
        qy = qy.name_glob(g);
    }
    let session = p.parse_opt::<SessionId>("session")?;
    if let Some(s) = session {
        qy = qy.session(s);
    }
    if p.flag("subtree")? {
        if session.is_none() {
            return Err(ApiError::invalid("subtree", "subtree needs session=ID"));
        }
        qy = qy.subtree(true);
    }
    if let Some(n) = p.parse_opt::<u64>("min_size")? {
        qy = qy.min_size(n);
    }
    if let Some(n) = p.parse_opt::<u64>("max_size")? {
        qy = qy.max_size(n);
    }
    if let Some(t) = p.time("after")? {
        qy = qy.created_from(t);
    }
    if let Some(t) = p.time("before")? {
        qy = qy.created_to(t);
    }
    if p.flag("latest")? {
        qy = qy.latest_only(true);
    }
    if p.flag("desc")? {
        qy = qy.descending(true);
    }
    if let Some(c) = p.get("cursor") {
        qy = qy.cursor(c);
    }
    Ok(Json(
        blocking(move || {
            if let Some(s) = session {
                store.session(s)?;
            }
            store.query(&qy)
        })
        .await?,
    ))
}

/// Shows one artifact.
#[utoipa::path(get, path = "/v1/artifacts/{id}", tag = "artifacts",
    params(("id" = ArtifactId, Path, description = "Artifact id")),
    responses((status = 200, description = "The artifact", body = Artifact),
        (status = 404, description = "No such artifact", body = ErrorBody)))]
pub async fn show(Reader(store): Reader, Path(id): Path<ArtifactId>) -> ApiResult<Json<Artifact>> {
    // The tenant's store holds only its own artifacts: an id from elsewhere is "not found".
    Ok(Json(blocking(move || store.admin().artifact(id)).await?))
}

/// Deletes one artifact; its content becomes garbage when nothing else uses it.
#[utoipa::path(delete, path = "/v1/artifacts/{id}", tag = "artifacts",
    params(("id" = ArtifactId, Path, description = "Artifact id")),
    responses((status = 200, description = "The deleted artifact", body = Artifact),
        (status = 404, description = "No such artifact", body = ErrorBody)))]
pub async fn delete(
    Writer(store): Writer,
    Path(id): Path<ArtifactId>,
) -> ApiResult<Json<Artifact>> {
    Ok(Json(blocking(move || store.admin().delete(id)).await?))
}

/// Hashes to ask about.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlobProbe {
    /// BLAKE3 hashes (at most 10,000).
    pub hashes: Vec<ContentHash>,
}

/// The hashes this tenant does not store.
#[derive(Debug, Serialize, ToSchema)]
pub struct MissingBlobs {
    /// The asked hashes with no content in this tenant's store, in the order asked.
    pub missing: Vec<ContentHash>,
}

/// Which of these hashes this tenant's store lacks. Content stored by another tenant is
/// "missing" exactly like content nobody stored: a hash never grants access.
#[utoipa::path(post, path = "/v1/blobs/missing", tag = "artifacts",
    request_body = BlobProbe,
    responses((status = 200, description = "The missing hashes", body = MissingBlobs),
        (status = 400, description = "Invalid input", body = ErrorBody)))]
pub async fn missing(
    Reader(store): Reader,
    JsonBody(body): JsonBody<BlobProbe>,
) -> ApiResult<Json<MissingBlobs>> {
    if body.hashes.len() > MAX_PROBE {
        return Err(ApiError::invalid(
            "hashes",
            format!(
                "{} hashes; ask about at most {MAX_PROBE} per request",
                body.hashes.len()
            ),
        ));
    }
    let missing = blocking(move || {
        let mut out = Vec::new();
        for h in body.hashes {
            let live = store.content_info(&h)?.is_some_and(|i| i.refs > 0);
            if !live {
                out.push(h);
            }
        }
        Ok(out)
    })
    .await?;
    Ok(Json(MissingBlobs { missing }))
}
