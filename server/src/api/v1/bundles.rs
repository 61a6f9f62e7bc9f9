//! Bundles: `GET /v1/sessions/{id}/export` streams a bundle out as it is written;
//! `POST /v1/import` streams one in (all or nothing).

use std::io::{self, Write};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Json;
use cairn::{ImportOptions, ImportReport, SessionId};
use tokio::sync::mpsc;

use crate::api::{Params, Routes};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{blocking, Path, Reader, Writer};
use crate::limits::check_quota;
use crate::state::AppState;
use crate::streaming::{drain, feed, ChannelReader, CHANNEL_DEPTH, CHUNK};

pub(crate) fn routes(r: Routes) -> Routes {
    r.add(Method::GET, "/v1/sessions/{id}/export", export)
        .add(Method::POST, "/v1/import", import)
}

/// A `Write` that hands 64 KiB chunks to the response body.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Streams a bundle of a session (with `subtree=true`, its subtree): sessions, artifacts,
/// events, checkpoints and each distinct content once. A failure midway breaks the transfer
/// (the client sees an incomplete body, never a complete wrong bundle).
#[utoipa::path(get, path = "/v1/sessions/{id}/export", tag = "bundles",
    params(("id" = SessionId, Path, description = "Session id"),
        ("subtree" = Option<bool>, Query, description = "Also every descendant")),
    responses((status = 200, description = "The bundle", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "No such session", body = ErrorBody)))]
pub async fn export(
    Reader(store): Reader,
    Path(id): Path<SessionId>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let subtree = Params::parse(q.as_deref(), &["subtree"])?.flag("subtree")?;
    {
        let store = Arc::clone(&store);
        blocking(move || store.session(id)).await?;
    }
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let r = store
            .export_session(id, subtree, &mut w)
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|_| w.flush());
        if let Err(e) = r {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{id}.cairn\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

/// Imports a bundle from the request body (streamed). All or nothing.
#[utoipa::path(post, path = "/v1/import", tag = "bundles",
    params(("parent" = Option<SessionId>, Query, description = "Import the bundle's root under this session"),
        ("drop_keys" = Option<bool>, Query, description = "Drop the sessions' unique keys"),
        ("new_ids" = Option<bool>, Query, description = "Give everything new ids (a copy beside the original)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A bundle"),
    responses((status = 201, description = "What was imported", body = ImportReport),
        (status = 400, description = "Not a valid bundle", body = ErrorBody),
        (status = 404, description = "No such parent", body = ErrorBody),
        (status = 409, description = "An id or key already exists", body = ErrorBody)))]
pub async fn import(
    State(st): State<AppState>,
    req: axum::extract::Request,
) -> ApiResult<(StatusCode, Json<ImportReport>)> {
    let (mut parts, body) = req.into_parts();
    let checked = async {
        let Writer(store) = Writer::from_request_parts(&mut parts, &st).await?;
        let p = Params::parse(parts.uri.query(), &["parent", "drop_keys", "new_ids"])?;
        let mut o = ImportOptions::new()
            .drop_keys(p.flag("drop_keys")?)
            .new_ids(p.flag("new_ids")?);
        if let Some(parent) = p.parse_opt::<SessionId>("parent")? {
            o = o.parent(parent);
        }
        check_quota(&st, &store).await?;
        Ok::<_, ApiError>((store, o))
    }
    .await;
    let (store, o) = match checked {
        Ok(x) => x,
        Err(e) => {
            drain(body).await;
            return Err(e);
        }
    };
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let work = tokio::task::spawn_blocking(move || store.import_bundle(ChannelReader::new(rx), &o));
    let (fed, feed_error) = feed(body, tx, st.config().limits.max_body_bytes).await;
    st.metrics().add_in(fed);
    let result = work
        .await
        .map_err(|e| ApiError::internal(format!("the import failed: {e}")))?;
    if let Some(e) = feed_error {
        return Err(e);
    }
    Ok((StatusCode::CREATED, Json(result?)))
}
