//! The Model Context Protocol over streamable HTTP at `/mcp`: the same tools and resources as
//! `cairn mcp` on stdio (the `cairn-mcp` crate), served by rmcp's streamable-HTTP transport on
//! this server's axum router.
//!
//! Authentication and tenancy are the REST API's: the middleware checks the bearer token before
//! a request gets here, and each (tenant, read-only) pair has its own MCP service over its own
//! store, with its own MCP sessions, so an `Mcp-Session-Id` of one tenant means nothing to
//! another. A read-only token gets a service whose writing tools answer with an error.
//! Local files are never read (`store_output` with `path` is refused on a network server).
//!
//! Host header validation (rmcp's defence against DNS rebinding): on in open mode, where the
//! server has no tokens and listens on loopback only; off once tokens exist, since every
//! request must then carry a valid bearer token, which a rebinding page cannot send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use cairn_mcp::{CairnMcp, McpOptions};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tower_service::Service;

use crate::api::Routes;
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

type Svc = StreamableHttpService<CairnMcp, LocalSessionManager>;
type Table = HashMap<(String, bool), Svc>;

/// The MCP services of one server, one per (tenant, read-only).
#[derive(Default)]
pub struct McpServices {
    services: Mutex<Table>,
    watching: std::sync::atomic::AtomicBool,
}

pub(crate) fn routes(r: Routes) -> Routes {
    r.add(Method::POST, "/mcp", post)
        .add(Method::GET, "/mcp", get)
        .add(Method::DELETE, "/mcp", delete)
}

/// The service for the caller, made on first use.
async fn service(st: &AppState, p: &Principal) -> Result<Svc, ApiError> {
    let key = (p.tenant.clone(), p.read_only);
    let m = st.mcp();
    if let Some(s) = lock(m)?.get(&key) {
        return Ok(s.clone());
    }
    let store = st.store(&p.tenant).await?;
    // rmcp refuses bodies over its own limit (4 MiB by default) with a plain-text 413; the
    // middleware has already held the body to max_mcp_bytes with the server's JSON error, so
    // rmcp's limit is set to the same value and never answers first.
    let max_body = usize::try_from(st.config().limits.max_mcp_bytes).unwrap_or(usize::MAX);
    let mut config = StreamableHttpServerConfig::default()
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        .with_max_request_body_bytes(max_body);
    if !st.open_mode() {
        config = config.disable_allowed_hosts();
    }
    let opts = McpOptions {
        read_only: p.read_only,
        ..McpOptions::default()
    };
    let store = (*store).clone();
    let svc: Svc = StreamableHttpService::new(
        move || Ok(CairnMcp::new(store.clone(), opts.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let svc = lock(m)?.entry(key).or_insert(svc).clone();
    watch_shutdown(st);
    Ok(svc)
}

fn lock(m: &McpServices) -> Result<std::sync::MutexGuard<'_, Table>, ApiError> {
    m.services
        .lock()
        .map_err(|_| ApiError::internal("the MCP service table lock was poisoned"))
}

/// Ends every MCP session (and its open event streams) when the server begins to shut down, so
/// that graceful shutdown does not wait for idle MCP clients.
fn watch_shutdown(st: &AppState) {
    if st
        .mcp()
        .watching
        .swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        return;
    }
    let st = st.clone();
    tokio::spawn(async move {
        while !st.shutting_down() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if let Ok(services) = st.mcp().services.lock() {
            for s in services.values() {
                s.config.cancellation_token.cancel();
            }
        }
    });
}

async fn serve(st: AppState, req: Request) -> Response {
    let Some(p) = req.extensions().get::<Principal>().cloned() else {
        return ApiError::unauthorized("no credentials were checked for this route")
            .into_response();
    };
    let mut svc = match service(&st, &p).await {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    match svc.call(req).await {
        Ok(r) => r.map(axum::body::Body::new),
        Err(never) => match never {},
    }
}

/// MCP streamable HTTP: a JSON-RPC message from the client (initialize, tools/call, ...). The
/// answer is JSON or an event stream, as the MCP specification describes.
#[utoipa::path(post, path = "/mcp", tag = "mcp",
    request_body(content = serde_json::Value, content_type = "application/json",
        description = "One JSON-RPC message of the Model Context Protocol"),
    responses((status = 200, description = "The JSON-RPC answer (application/json or text/event-stream)"),
        (status = 202, description = "A notification or response was accepted"),
        (status = 404, description = "Unknown MCP session", body = ErrorBody)))]
pub async fn post(State(st): State<AppState>, req: Request) -> Response {
    serve(st, req).await
}

/// MCP streamable HTTP: the server-to-client event stream of an MCP session.
#[utoipa::path(get, path = "/mcp", tag = "mcp",
    responses((status = 200, description = "Server-sent events of the MCP session", content_type = "text/event-stream"),
        (status = 405, description = "Not offered without a session")))]
pub async fn get(State(st): State<AppState>, req: Request) -> Response {
    serve(st, req).await
}

/// MCP streamable HTTP: ends an MCP session.
#[utoipa::path(delete, path = "/mcp", tag = "mcp",
    responses((status = 200, description = "The MCP session ended"),
        (status = 404, description = "Unknown MCP session", body = ErrorBody)))]
pub async fn delete(State(st): State<AppState>, req: Request) -> Response {
    serve(st, req).await
}
