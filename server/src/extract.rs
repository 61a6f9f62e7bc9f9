//! Extractors: the caller's store with the scope a handler needs, and JSON, path and query
//! extractors whose rejections use the API's error shape.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use cairn::Store;
use serde::de::DeserializeOwned;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn principal(parts: &Parts) -> ApiResult<Principal> {
    parts
        .extensions
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ApiError::unauthorized("no credentials were checked for this route"))
}

/// The caller's tenant store, for a handler that only reads. Any valid token may read.
pub struct Reader(pub Arc<Store>);

/// The caller's tenant store, for a handler that writes: read-only tokens get 403.
pub struct Writer(pub Arc<Store>);

/// The caller's tenant store, for an admin handler: only admin tokens pass (403 otherwise).
pub struct AdminStore(pub Arc<Store>);

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> ApiResult<Self> {
        let p = principal(parts)?;
        Ok(Reader(st.store(&p.tenant).await?))
    }
}

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> ApiResult<Self> {
        let p = principal(parts)?;
        if p.read_only {
            return Err(ApiError::forbidden(
                "this token is read-only; writing needs a token made without --read-only",
            ));
        }
        Ok(Writer(st.store(&p.tenant).await?))
    }
}

impl FromRequestParts<AppState> for AdminStore {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> ApiResult<Self> {
        let p = principal(parts)?;
        if !p.admin {
            return Err(ApiError::forbidden(
                "this route needs an admin token (`cairn token create --admin`)",
            ));
        }
        Ok(AdminStore(st.store(&p.tenant).await?))
    }
}

/// Runs blocking engine work on the blocking pool, never on an async worker.
pub async fn blocking<T, F>(f: F) -> ApiResult<T>
where
    F: FnOnce() -> cairn::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("a store call failed: {e}"))),
    }
}

/// A JSON body, limited to `max_json_bytes`, with API-shaped errors.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Json<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, st: &AppState) -> ApiResult<Self> {
        let limit = st.config().limits.max_json_bytes;
        let body = req.into_body();
        let bytes = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX))
            .await
            .map_err(|e| {
                if std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                    || e.to_string().contains("length limit")
                {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("the JSON body is larger than {limit} bytes (max_json_bytes)"),
                    )
                } else {
                    ApiError::invalid("request body", e)
                }
            })?;
        let bytes = if bytes.is_empty() {
            axum::body::Bytes::from_static(b"{}")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes)
            .map(Json)
            .map_err(|e| ApiError::invalid("JSON body", e))
    }
}

/// Path parameters with API-shaped errors.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for Path<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> ApiResult<Self> {
        match axum::extract::Path::<T>::from_request_parts(parts, st).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => Err(ApiError::invalid("path", e.body_text())),
        }
    }
}

/// Query parameters with API-shaped errors.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned> FromRequestParts<AppState> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> ApiResult<Self> {
        match axum::extract::Query::<T>::from_request_parts(parts, st).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(ApiError::invalid("query parameter", e.body_text())),
        }
    }
}
