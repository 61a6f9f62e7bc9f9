//! # cairn-server: `cairn serve`
//!
//! Cairn over HTTP, for many processes, many languages and many tenants: a thin layer over the
//! `cairn` library. One embedded store per tenant under `<data>/tenants/<tenant>/`; bearer
//! tokens in `<data>/tokens.json` (hashes only); every error is
//! `{"error":{"code","message"}}` with the library's codes. Blocking engine calls run on the
//! blocking pool; bodies stream in and out through small bounded channels.
//!
//! Map: [`config`] (limits), [`auth`] (tokens), [`state`] (tenant stores), [`middleware`]
//! (request id, concurrency cap, auth, body size, timeout, log, metrics), [`logging`] (the
//! buffered JSON log on stderr), [`api`] (one file per
//! resource family), [`openapi`] (the generated document), [`metrics`], [`streaming`], [`ui`]
//! (the web view at `/ui`, with its own cookie-or-header authentication), [`webhooks`] (signed,
//! retried deliveries of lifecycle events).
//!
//! ```no_run
//! let config = cairn_server::ServerConfig::new("/var/lib/cairn");
//! let server = cairn_server::spawn(config).unwrap();
//! println!("listening on {}", server.url());
//! server.shutdown().unwrap();
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod extract;
#[cfg(feature = "postgres")]
pub mod feed;
mod jsonfile;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod state;
pub mod streaming;
pub mod ui;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

pub use config::{ServerConfig, ServerLimits};
pub use error::ApiError;
pub use state::AppState;

/// How long shutdown waits for in-flight requests before it flushes and exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(60);

/// The application: every route, the middleware, and the JSON 404/405 answers.
pub fn app(state: AppState) -> Router {
    let (router, _) = api::routes();
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::layer,
        ))
        .merge(ui::router(state.clone()))
        .with_state(state)
}

/// Every (method, path template) the server serves.
pub fn served_routes() -> Vec<(Method, &'static str)> {
    api::routes().1
}

async fn not_found() -> axum::response::Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; GET /openapi.json lists every route",
    )
    .into_response()
}

async fn method_not_allowed() -> axum::response::Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; GET /openapi.json lists every route",
    )
    .into_response()
}

/// Logs one JSON line on stderr.
pub fn log(level: &str, msg: &str) {
    let line = serde_json::json!({
        "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "level": level,
        "msg": msg,
    });
    logging::immediate_line(&line.to_string());
}

/// Checks the start-up rules: without tokens, only a loopback address is served.
fn check_start(state: &AppState, addr: SocketAddr) -> Result<(), String> {
    if state.open_mode() {
        log(
            "warn",
            &format!(
                "no tokens in {}: serving the single tenant \"default\" without authentication on {addr} (loopback only; {}); `cairn token create` turns authentication on",
                state.config().data_dir.join(auth::TOKENS_FILE).display(),
                if state.config().open_admin {
                    "admin routes open too (open_admin)"
                } else {
                    "read and write; admin routes need an admin token or `open_admin = true`"
                }
            ),
        );
    }
    if !state.loopback() && !state.tokens().any()? {
        return Err(format!(
            "refusing to listen on {addr} without tokens: create one with `cairn token create --data {} --tenant NAME`, or listen on 127.0.0.1",
            state.config().data_dir.display()
        ));
    }
    Ok(())
}

/// Serves `listener` until `shutdown` resolves; then stops accepting, lets in-flight requests
/// finish (up to [`SHUTDOWN_GRACE`]) and flushes every tenant store.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let app = app(state.clone());
    let service = TowerToHyperService::new(app);
    let graceful = GracefulShutdown::new();
    let header_timeout = state.config().limits.header_timeout();
    // Webhook feeds subscribe before the first request, so no acknowledged event is missed.
    state.webhooks().start(&state).await?;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        log("error", &format!("accept failed: {e}"));
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (stream, answer) = match limits::watch_headers(stream) {
                    Ok(x) => x,
                    Err(e) => {
                        log("error", &format!("cannot set up a connection: {e}"));
                        continue;
                    }
                };
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout)
                    .serve_connection(TokioIo::new(stream), service.clone());
                let watched = graceful.watch(conn);
                let metrics_state = state.clone();
                tokio::spawn(async move {
                    if let Err(e) = watched.await {
                        // hyper closes the connection on its header timeout; answer 408 when
                        // part of a request had arrived.
                        if e.is_timeout() && answer.answer(header_timeout) {
                            metrics_state.metrics().record(
                                "header_timeout",
                                "-",
                                408,
                                header_timeout,
                            );
                        }
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    state.begin_shutdown();
    log(
        "info",
        "shutting down: no new connections; finishing in-flight requests",
    );
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        log(
            "warn",
            "some requests were still running after the grace period; they were cut off (none of them had been answered)",
        );
    }
    // The feed threads let go of their subscriptions, so the stores can close after us.
    let st = state.clone();
    let _ = tokio::task::spawn_blocking(move || st.webhooks().stop()).await;
    let st = state.clone();
    let flushed = tokio::task::spawn_blocking(move || st.flush_all())
        .await
        .map_err(|e| format!("flushing failed: {e}"));
    logging::flush();
    flushed??;
    log("info", "stopped; every store flushed");
    Ok(())
}

async fn signals() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("cairn-serve")
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Runs the server until SIGTERM or SIGINT: binds, prints `http://ADDR` as the first line on
/// stdout, serves, then shuts down gracefully. Blocks the calling thread.
pub fn run(config: ServerConfig) -> Result<(), String> {
    let rt = runtime()?;
    rt.block_on(async move {
        let state = AppState::new(config)?;
        let listener = TcpListener::bind(state.config().listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", state.config().listen))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        check_start(&state, addr)?;
        state.webhooks().configure(state.config())?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "http://{addr}");
            let _ = out.flush();
        }
        log("info", &format!("listening on http://{addr}"));
        serve(listener, state, signals()).await
    })
}

/// A server running on its own thread (for tests and embedding). Dropping it does not stop
/// it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl RunningServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the graceful shutdown and waits until it is done.
    pub fn shutdown(mut self) -> Result<(), String> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err("the server thread panicked".into()),
            None => Ok(()),
        }
    }
}

/// Starts a server on its own thread and returns once it listens.
pub fn spawn(config: ServerConfig) -> Result<RunningServer, String> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("cairn-server".into())
        .spawn(move || {
            let rt = runtime()?;
            rt.block_on(async move {
                let started = async {
                    let state = AppState::new(config)?;
                    let listener = TcpListener::bind(state.config().listen)
                        .await
                        .map_err(|e| format!("cannot listen on {}: {e}", state.config().listen))?;
                    let addr = listener
                        .local_addr()
                        .map_err(|e| format!("cannot read the bound address: {e}"))?;
                    check_start(&state, addr)?;
                    state.webhooks().configure(state.config())?;
                    Ok::<_, String>((state, listener, addr))
                }
                .await;
                match started {
                    Ok((state, listener, addr)) => {
                        let _ = ready_tx.send(Ok(addr));
                        serve(listener, state, async {
                            let _ = stop_rx.await;
                        })
                        .await
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.clone()));
                        Err(e)
                    }
                }
            })
        })
        .map_err(|e| format!("cannot start the server thread: {e}"))?;
    match ready_rx.recv() {
        Ok(Ok(addr)) => Ok(RunningServer {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err("the server thread stopped before listening".into()),
    }
}
