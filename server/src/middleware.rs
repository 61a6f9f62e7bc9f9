//! Every request passes here, in this order: a request id; the concurrency cap (503 with
//! `Retry-After`); authentication (401) for every route but health, readiness and the OpenAPI
//! document; the body size from `Content-Length` (413 before anything is read); the request
//! timeout (408); then the handler. On the way out: the `X-Request-Id` header, one JSON log
//! line on stderr (buffered: [`crate::logging`]), and the metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use std::fmt::Write as _;

use crate::auth::Principal;
use crate::error::{ApiError, ErrorCode};
use crate::logging;
use crate::state::AppState;

/// Routes that answer without a token.
const PUBLIC: [&str; 3] = ["/healthz", "/readyz", "/openapi.json"];

/// The request id header.
pub const REQUEST_ID: &str = "x-request-id";

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn request_id() -> String {
    // Unique within a process run; the start time makes ids of restarts differ.
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let start = *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    format!(
        "{:08x}-{:06x}",
        start & 0xffff_ffff,
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether a request writes, for the body size check (uploads stream, others are JSON).
fn is_upload(method: &Method, route: &str) -> bool {
    (method == Method::PUT && route == "/v1/sessions/{id}/artifacts/{name}")
        || (method == Method::POST && route == "/v1/import")
}

/// The body limit of a route and its name: uploads `max_body_bytes`, MCP messages
/// (`POST /mcp`, which carry `store_output`'s content) `max_mcp_bytes`, every other body
/// `max_json_bytes`.
fn body_limit(
    limits: &crate::config::ServerLimits,
    method: &Method,
    route: &str,
) -> (u64, &'static str) {
    if is_upload(method, route) {
        (limits.max_body_bytes, "max_body_bytes")
    } else if method == Method::POST && route == "/mcp" {
        (limits.max_mcp_bytes, "max_mcp_bytes")
    } else {
        (limits.max_json_bytes, "max_json_bytes")
    }
}

/// The one middleware. See the module documentation for the order of the checks.
pub async fn layer(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = request_id();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let public = PUBLIC.contains(&route.as_str());
    let mut tenant = None;

    let response = 'run: {
        // The concurrency cap; health checks still answer under load.
        let _permit = if public {
            None
        } else {
            match st.permits().clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    st.metrics().add_overload();
                    let mut e = ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded",
                        format!(
                            "the server is serving its limit of {} requests at once (max_concurrency); retry shortly",
                            st.config().limits.max_concurrency
                        ),
                    );
                    e.retry_after = Some(1);
                    crate::streaming::drain(req.into_body()).await;
                    break 'run e.into_response();
                }
            }
        };
        if !public {
            let auth = req
                .headers()
                .get(header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap_or("\u{fffd}"));
            let p = match st.authenticate_async(auth).await {
                Ok(p) => p,
                Err(e) => {
                    // Read (a bounded part of) the body, so a client still sending it gets
                    // the answer rather than a reset connection.
                    crate::streaming::drain(req.into_body()).await;
                    break 'run e.into_response();
                }
            };
            if route == "/metrics" && !p.admin {
                crate::streaming::drain(req.into_body()).await;
                break 'run ApiError::forbidden(
                    "/metrics needs an admin token (`cairn token create --admin`)",
                )
                .into_response();
            }
            tenant = Some(p.tenant.clone());
            req.extensions_mut().insert::<Principal>(p);
        }
        let limits = &st.config().limits;
        let (max, limit_name) = body_limit(limits, &method, &route);
        if let Some(n) = length {
            if n > max {
                break 'run ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!(
                        "the request body ({n} bytes) is larger than the limit of {max} bytes ({limit_name}); nothing was read or stored"
                    ),
                )
                .into_response();
            }
        }
        let upload = is_upload(&method, &route);
        let run = async {
            // Bodies that are not uploads are bounded (max_json_bytes, max_mcp_bytes): read
            // them whole here, so a request refused before its handler reads the body still
            // gets its answer rather than a reset connection.
            let req = if upload {
                req
            } else {
                let (parts, body) = req.into_parts();
                match axum::body::to_bytes(body, usize::try_from(max).unwrap_or(usize::MAX)).await {
                    Ok(b) => {
                        st.metrics().add_in(b.len() as u64);
                        Request::from_parts(parts, axum::body::Body::from(b))
                    }
                    Err(e) => {
                        let too_large = std::error::Error::source(&e)
                            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                        return if too_large {
                            ApiError::new(
                                StatusCode::PAYLOAD_TOO_LARGE,
                                "payload_too_large",
                                format!("the request body is larger than the limit of {max} bytes ({limit_name}); nothing was stored"),
                            )
                            .into_response()
                        } else {
                            ApiError::invalid("request body", format!("it could not be read: {e}"))
                                .into_response()
                        };
                    }
                }
            };
            next.run(req).await
        };
        match tokio::time::timeout(limits.request_timeout(), run).await {
            Ok(r) => r,
            Err(_) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request took longer than {} s (request_timeout_secs); if it was a write, it was not stored",
                    limits.request_timeout_secs
                ),
            )
            .into_response(),
        }
    };

    let mut response = response;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    let status = response.status().as_u16();
    let elapsed = start.elapsed();
    st.metrics()
        .record(&route, method.as_str(), status, elapsed);
    if let Some(n) = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        st.metrics().add_out(n);
    }
    let code = response.extensions().get::<ErrorCode>().map(|c| c.0);
    // Written by hand rather than through serde_json::Value (no map, no per-field allocation)
    // and buffered (see crate::logging): the log was a measurable share of a small GET.
    let mut line = String::with_capacity(256);
    line.push_str("{\"ts\":\"");
    line.push_str(&chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    line.push_str("\",\"level\":");
    line.push_str(if status >= 500 {
        "\"error\""
    } else {
        "\"info\""
    });
    line.push_str(",\"request_id\":");
    logging::push_json_str(&mut line, &id);
    line.push_str(",\"method\":");
    logging::push_json_str(&mut line, method.as_str());
    line.push_str(",\"path\":");
    logging::push_json_str(&mut line, &path);
    line.push_str(",\"route\":");
    logging::push_json_str(&mut line, &route);
    let ms = (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    let _ = write!(line, ",\"status\":{status},\"ms\":{ms},\"tenant\":");
    match &tenant {
        Some(t) => logging::push_json_str(&mut line, t),
        None => line.push_str("null"),
    }
    line.push_str(",\"code\":");
    match code {
        Some(c) => logging::push_json_str(&mut line, c),
        None => line.push_str("null"),
    }
    line.push('}');
    logging::request_line(&line);
    response
}
