//! Operational routes: liveness, readiness, Prometheus metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::Routes;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::state::AppState;

pub(crate) fn routes(r: Routes) -> Routes {
    r.add(Method::GET, "/healthz", healthz)
        .add(Method::GET, "/readyz", readyz)
        .add(Method::GET, "/metrics", metrics)
        .add(Method::GET, "/openapi.json", openapi)
}

/// A health answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `shutting_down`.
    pub status: String,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops", security(()),
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the server takes requests (503 once shutdown began).
#[utoipa::path(get, path = "/readyz", tag = "ops", security(()),
    responses((status = 200, description = "Ready", body = Health),
        (status = 503, description = "Shutting down", body = ErrorBody)))]
pub async fn readyz(State(st): State<AppState>) -> ApiResult<Json<Health>> {
    if st.shutting_down() {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down",
        );
        e.retry_after = Some(1);
        return Err(e);
    }
    Ok(Json(Health {
        status: "ready".into(),
    }))
}

/// Prometheus text: requests by route and status, latencies, bytes, store counters.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        (status = 403, description = "Not an admin token", body = ErrorBody)))]
pub async fn metrics(State(st): State<AppState>) -> ApiResult<Response> {
    let stores = st.open_stores();
    let stats = tokio::task::spawn_blocking(move || {
        stores
            .into_iter()
            .filter_map(|(t, s)| s.stats().ok().map(|x| (t, x)))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("reading store counters failed: {e}")))?;
    let mut r = st.metrics().render(&stats).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(r)
}

/// The OpenAPI 3 document of this API, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub async fn openapi() -> Response {
    match crate::openapi::document().to_json() {
        Ok(s) => {
            let mut r = s.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => ApiError::internal(format!("the OpenAPI document failed to render: {e}"))
            .into_response(),
    }
}
