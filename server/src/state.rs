//! What every request shares: the configuration, the tokens, the open tenant stores, the
//! metrics and the concurrency cap. One embedded store per tenant under `<data>/tenants/`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cairn::Store;
use tokio::sync::Semaphore;

use crate::auth::{validate_tenant, Principal, TokenPlace, Tokens};
use crate::config::ServerConfig;
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::webhooks::Webhooks;

/// The state shared by every request (cheap to clone).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: ServerConfig,
    tokens: Tokens,
    loopback: bool,
    tenants: Mutex<HashMap<String, Arc<Store>>>,
    /// Serialises first opens so two requests never open one tenant's store twice.
    opening: tokio::sync::Mutex<()>,
    metrics: Metrics,
    permits: Arc<Semaphore>,
    /// Open event streams (`max_streams`).
    streams: Arc<Semaphore>,
    shutting_down: AtomicBool,
    webhooks: Webhooks,
    /// The MCP services at `/mcp`, one per (tenant, read-only).
    mcp: crate::api::mcp::McpServices,
    /// Cross-server event notices per tenant (`--metadata postgres://...`).
    #[cfg(feature = "postgres")]
    feeds: Mutex<HashMap<String, Arc<crate::feed::Feed>>>,
}

impl AppState {
    /// State for `config`; reads the token file.
    pub fn new(config: ServerConfig) -> Result<Self, String> {
        config.limits.validate()?;
        config.validate_metadata()?;
        config.validate_content()?;
        std::fs::create_dir_all(config.data_dir.join("tenants")).map_err(|e| {
            format!(
                "cannot create the data folder {}: {e}",
                config.data_dir.display()
            )
        })?;
        let tokens = Tokens::open_at(TokenPlace::new(
            &config.data_dir,
            config.metadata.as_deref(),
        )?)?;
        let webhooks = Webhooks::open(&config.data_dir, &config.limits)?;
        let loopback = config.listen.ip().is_loopback();
        let permits = Arc::new(Semaphore::new(config.limits.max_concurrency));
        Ok(Self {
            inner: Arc::new(Inner {
                loopback,
                tokens,
                tenants: Mutex::new(HashMap::new()),
                opening: tokio::sync::Mutex::new(()),
                metrics: Metrics::default(),
                permits,
                streams: Arc::new(Semaphore::new(config.limits.max_streams)),
                shutting_down: AtomicBool::new(false),
                webhooks,
                mcp: Default::default(),
                #[cfg(feature = "postgres")]
                feeds: Mutex::new(HashMap::new()),
                config,
            }),
        })
    }

    /// The webhooks of every tenant.
    pub fn webhooks(&self) -> &Webhooks {
        &self.inner.webhooks
    }

    /// The MCP services at `/mcp`.
    pub fn mcp(&self) -> &crate::api::mcp::McpServices {
        &self.inner.mcp
    }

    /// The open-event-stream cap (`max_streams`).
    pub fn stream_permits(&self) -> &Arc<Semaphore> {
        &self.inner.streams
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The concurrency cap's permits.
    pub fn permits(&self) -> &Arc<Semaphore> {
        &self.inner.permits
    }

    /// Whether requests without a token are served (no tokens exist and the address is loopback).
    pub fn open_mode(&self) -> bool {
        self.inner.loopback && self.inner.tokens.is_empty()
    }

    /// The tokens (the file, or the shared database with `--metadata postgres://...`).
    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    /// [`AppState::authenticate`] off the async workers when the tokens live in a database
    /// (each check is a round trip that may wait for a reconnect).
    pub async fn authenticate_async(&self, header: Option<&str>) -> ApiResult<Principal> {
        if !self.inner.tokens.place().is_shared() {
            return self.authenticate(header);
        }
        let st = self.clone();
        let header = header.map(str::to_string);
        tokio::task::spawn_blocking(move || st.authenticate(header.as_deref()))
            .await
            .map_err(|e| ApiError::internal(format!("checking the token failed: {e}")))?
    }

    /// Whether shutdown began (readiness then answers 503).
    pub fn shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Marks the start of shutdown.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether the server listens on a loopback address.
    pub fn loopback(&self) -> bool {
        self.inner.loopback
    }

    /// Who sent the `Authorization` header value `header` (None: no header).
    pub fn authenticate(&self, header: Option<&str>) -> ApiResult<Principal> {
        let Some(h) = header else {
            let any = self.inner.tokens.any().map_err(tokens_unavailable)?;
            if self.inner.loopback && !any {
                // Any local process can reach a loopback port: it may read and write the
                // default tenant, but administration (gc, verify, metrics, webhooks) needs an
                // admin token unless the operator opened it explicitly (`open_admin`).
                return Ok(Principal {
                    tenant: crate::auth::DEFAULT_TENANT.to_string(),
                    admin: self.inner.config.open_admin,
                    read_only: false,
                    token_id: None,
                });
            }
            return Err(ApiError::unauthorized(
                "this server needs a token: send `Authorization: Bearer TOKEN` (make one with `cairn token create`)",
            ));
        };
        let token = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer TOKEN`")
            })?;
        self.inner
            .tokens
            .lookup(token)
            .map_err(tokens_unavailable)?
            .ok_or_else(|| ApiError::unauthorized("the token is not valid (unknown or revoked)"))
    }

    fn tenant_dir(&self, tenant: &str) -> PathBuf {
        self.inner.config.data_dir.join("tenants").join(tenant)
    }

    /// The store of `tenant`, opened on first use (off the async workers) and kept open.
    pub async fn store(&self, tenant: &str) -> ApiResult<Arc<Store>> {
        if let Some(s) = self.cached(tenant) {
            return Ok(s);
        }
        validate_tenant(tenant).map_err(ApiError::internal)?;
        let _guard = self.inner.opening.lock().await;
        if let Some(s) = self.cached(tenant) {
            return Ok(s);
        }
        let dir = self.tenant_dir(tenant);
        let metadata = self.inner.config.metadata.clone();
        let ns = tenant_namespace(tenant);
        // Large puts are spooled under the data folder (`<data>/spool`) unless the
        // configuration names another folder: never held in memory.
        #[cfg(feature = "s3")]
        let content = self.inner.config.content.clone().map(|c| match c.spool() {
            Some(_) => c,
            None => c.spool_dir(self.inner.config.data_dir.join("spool")),
        });
        let store = tokio::task::spawn_blocking(move || match metadata {
            #[cfg(feature = "s3")]
            Some(url) if content.is_some() => match &content {
                Some(c) => Store::open_postgres_s3(&url, &ns, c, cairn::Config::default()),
                None => open_shared(&url, &ns),
            },
            Some(url) => open_shared(&url, &ns),
            None => Store::open(dir),
        })
        .await
        .map_err(|e| ApiError::internal(format!("opening the tenant store failed: {e}")))??;
        let store = Arc::new(store);
        self.tenants_lock()
            .insert(tenant.to_string(), Arc::clone(&store));
        Ok(store)
    }

    fn tenants_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Store>>> {
        self.inner.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, tenant: &str) -> Option<Arc<Store>> {
        self.tenants_lock().get(tenant).cloned()
    }

    /// The cross-server event notices of `tenant` when its records live in PostgreSQL (other
    /// servers' writes never reach this process's subscriptions); `None` for embedded stores.
    /// Blocking (connects once per tenant): call it off the async workers.
    #[cfg(feature = "postgres")]
    pub fn feed(&self, tenant: &str) -> ApiResult<Option<Arc<crate::feed::Feed>>> {
        let Some(url) = &self.inner.config.metadata else {
            return Ok(None);
        };
        let mut feeds = self.inner.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = feeds.get(tenant) {
            return Ok(Some(Arc::clone(f)));
        }
        let backend = cairn::PostgresBackend::connect(url, &tenant_namespace(tenant))
            .map_err(ApiError::from)?;
        let feed = crate::feed::Feed::start(backend.event_listener());
        feeds.insert(tenant.to_string(), Arc::clone(&feed));
        Ok(Some(feed))
    }

    /// Every open store, by tenant name.
    pub fn open_stores(&self) -> Vec<(String, Arc<Store>)> {
        let mut v: Vec<_> = self
            .tenants_lock()
            .iter()
            .map(|(k, s)| (k.clone(), Arc::clone(s)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Flushes every open store (at shutdown). Returns the first error.
    pub fn flush_all(&self) -> Result<(), String> {
        let mut first = None;
        for (t, s) in self.open_stores() {
            if let Err(e) = s.flush() {
                first.get_or_insert(format!("flushing tenant {t}: {e}"));
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// The token database could not be asked: 503 with `Retry-After`, the request did nothing.
fn tokens_unavailable(message: String) -> ApiError {
    let mut e = ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        format!("the tokens could not be checked: {message}; nothing was done, retry shortly"),
    );
    e.retry_after = Some(1);
    e
}

/// The PostgreSQL namespace of a tenant: a hash of its name, so any valid tenant name maps to a
/// valid table name and no two tenants share one.
pub fn tenant_namespace(tenant: &str) -> String {
    let h = blake3::hash(tenant.as_bytes()).to_hex();
    format!("tenant_{}", &h.as_str()[..32])
}

#[cfg(feature = "postgres")]
fn open_shared(url: &str, namespace: &str) -> cairn::Result<Store> {
    Store::open_postgres(url, namespace, cairn::Config::default())
}

#[cfg(not(feature = "postgres"))]
fn open_shared(_url: &str, _namespace: &str) -> cairn::Result<Store> {
    // `AppState::new` refuses such a configuration first.
    Err(cairn::Error::InvalidInput {
        what: "metadata".into(),
        message: "this build of the server has no PostgreSQL support: rebuild it with the cargo \
                  feature `postgres`"
            .into(),
    })
}

#[cfg(test)]
mod tenant_namespace_tests {
    #[test]
    fn tenant_namespaces_are_distinct_valid_table_names() {
        let a = super::tenant_namespace("acme");
        let b = super::tenant_namespace("Acme");
        assert_ne!(a, b);
        assert_eq!(a, super::tenant_namespace("acme"));
        assert!(a.len() <= 40);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'));
    }
}
