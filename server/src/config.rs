//! The server's configuration: where the data lives, where it listens, and every limit, each a
//! named value with a default. Read from flags and from the `[server]` section of a TOML file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Everything `cairn serve` needs. Build with [`ServerConfig::new`] and change fields directly.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The data folder: `tokens.json` and `tenants/<tenant>/` (one store per tenant).
    pub data_dir: PathBuf,
    /// The address to listen on. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// The limits.
    pub limits: ServerLimits,
    /// Without tokens on loopback, whether anonymous callers also get the admin scope
    /// (`/v1/admin/*`, `/metrics`, `/v1/webhooks`). Default false: anonymous loopback callers
    /// read and write the tenant `default`, and administration needs an admin token or this
    /// switch (`[server] open_admin = true`).
    pub open_admin: bool,
    /// A PostgreSQL URL (`postgres://user:password@host:port/dbname`): every tenant's records
    /// live there (one namespace each) instead of under `data_dir`, shared by any number of
    /// servers (the build needs the feature `postgres`). `None`: embedded stores. See DESIGN.md,
    /// "Beyond one machine".
    pub metadata: Option<String>,
    /// Whether `https://` webhooks may also go to loopback and private addresses (127/8,
    /// 10/8, 172.16/12, 192.168/16, 100.64/10, ::1, fc00::/7). Default false: https
    /// webhooks go to public addresses only (link-local and cloud metadata are refused
    /// whatever this says). For tests and receivers on a private network.
    pub webhook_private_https: bool,
    /// A PEM file of CA certificates that https webhooks trust besides the system's roots
    /// (a private CA, or a test's self-signed certificate).
    pub webhook_ca_file: Option<PathBuf>,
    /// Every tenant's content on this S3-compatible bucket and prefix (one namespace each),
    /// with [`ServerConfig::metadata`] (`cairn serve --content s3://bucket/prefix`; feature
    /// `s3`). `None`: content in PostgreSQL with the records. See DESIGN.md, "Content on object
    /// storage".
    #[cfg(feature = "s3")]
    pub content: Option<cairn::S3Config>,
}

/// The limits of one server, each with a default. See DESIGN.md, "Server".
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerLimits {
    /// Largest request body in bytes (413 beyond it, checked from `Content-Length` before
    /// anything is read, and while streaming). Default 4 GiB.
    pub max_body_bytes: u64,
    /// Largest JSON request body in bytes (requests that are not uploads). Default 16 MiB.
    pub max_json_bytes: u64,
    /// Largest body of a `POST /mcp` (one JSON-RPC message of the Model Context Protocol) in
    /// bytes: an agent stores a large tool output through MCP's `store_output` as a JSON string,
    /// so this is apart from (and larger than) `max_json_bytes`. Default 64 MiB.
    pub max_mcp_bytes: u64,
    /// Seconds a client has to send the request line and headers; a connection that takes
    /// longer is closed. Default 30.
    pub header_timeout_secs: u64,
    /// Seconds a request may take until its response starts (the body of an upload included):
    /// 408 beyond it. Default 3600.
    pub request_timeout_secs: u64,
    /// Requests served at once; more get 503 with `Retry-After`. Default 256.
    pub max_concurrency: usize,
    /// Stored bytes (after dedup and compression) a tenant may hold; writes beyond it get
    /// `quota_exceeded`. 0 means no quota. Default 0.
    pub quota_bytes: u64,
    /// Artifacts a tenant may hold; 0 means no quota. Default 0.
    pub quota_artifacts: u64,
    /// Seconds between keep-alive comments on an idle event stream
    /// (`GET /v1/sessions/{id}/events/stream`). Default 15.
    pub sse_keepalive_secs: u64,
    /// Live events an event-stream client may fall behind by before it is told it missed
    /// events (its subscription queue length, 2 or more). Default 1024.
    pub sse_queue: usize,
    /// Event streams open at once (they do not count towards `max_concurrency`); more get 503
    /// with `Retry-After`. Default 64.
    pub max_streams: usize,
    /// Events a webhook may have waiting for delivery; beyond it new events are dropped for
    /// that webhook and counted (`dropped` in `GET /v1/webhooks`). Default 1024.
    pub webhook_queue: usize,
    /// Attempts per webhook delivery (the first one included) before it is given up and
    /// counted as `failed`. Default 10 (about 8.5 minutes of retries at the default base).
    pub webhook_max_attempts: u32,
    /// Milliseconds before the first retry of a failed delivery; each further retry waits
    /// twice as long (capped at 10 minutes). Default 1000.
    pub webhook_retry_base_ms: u64,
    /// Seconds one delivery attempt may take (connect, send, response head). Default 10.
    pub webhook_timeout_secs: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 30,
            max_json_bytes: 16 << 20,
            max_mcp_bytes: 64 << 20,
            header_timeout_secs: 30,
            request_timeout_secs: 3600,
            max_concurrency: 256,
            quota_bytes: 0,
            quota_artifacts: 0,
            sse_keepalive_secs: 15,
            sse_queue: 1024,
            max_streams: 64,
            webhook_queue: 1024,
            webhook_max_attempts: 10,
            webhook_retry_base_ms: 1000,
            webhook_timeout_secs: 10,
        }
    }
}

impl ServerLimits {
    /// The header timeout as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.header_timeout_secs)
    }

    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// Checks that every limit can work.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("max_body_bytes", self.max_body_bytes),
            ("max_json_bytes", self.max_json_bytes),
            ("max_mcp_bytes", self.max_mcp_bytes),
            ("header_timeout_secs", self.header_timeout_secs),
            ("request_timeout_secs", self.request_timeout_secs),
            ("max_concurrency", self.max_concurrency as u64),
            ("sse_keepalive_secs", self.sse_keepalive_secs),
            ("max_streams", self.max_streams as u64),
            ("webhook_queue", self.webhook_queue as u64),
            ("webhook_max_attempts", u64::from(self.webhook_max_attempts)),
            ("webhook_retry_base_ms", self.webhook_retry_base_ms),
            ("webhook_timeout_secs", self.webhook_timeout_secs),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("server limit {name} is 0; give a positive value"));
            }
        }
        if !(2..=cairn::MAX_SUBSCRIPTION_CAPACITY).contains(&self.sse_queue) {
            return Err(format!(
                "server limit sse_queue is {}; give 2 to {}",
                self.sse_queue,
                cairn::MAX_SUBSCRIPTION_CAPACITY
            ));
        }
        Ok(())
    }
}

/// The `[server]` section of a configuration file: every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileSection {
    listen: Option<String>,
    data: Option<PathBuf>,
    open_admin: Option<bool>,
    webhook_private_https: Option<bool>,
    webhook_ca_file: Option<PathBuf>,
    /// Everything else: the limits by name (unknown names are refused when they are applied).
    #[serde(flatten)]
    limits: toml::Table,
}

/// The file as a whole: only `[server]` is read here; other sections belong to others.
#[derive(Debug, Default, Deserialize)]
struct File {
    #[serde(default)]
    server: Option<FileSection>,
}

impl ServerConfig {
    /// A configuration with the default limits, listening on 127.0.0.1 with an ephemeral port.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            limits: ServerLimits::default(),
            open_admin: false,
            metadata: None,
            webhook_private_https: false,
            webhook_ca_file: None,
            #[cfg(feature = "s3")]
            content: None,
        }
    }

    /// Checks the content location: object storage needs the PostgreSQL metadata too (the
    /// records of content shared by several servers must be shared as well).
    pub fn validate_content(&self) -> Result<(), String> {
        #[cfg(feature = "s3")]
        if self.content.is_some() && self.metadata.is_none() {
            return Err(
                "--content s3://... needs --metadata postgres://... (several servers share the \
                 content only with its records)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Checks [`ServerConfig::metadata`]: a PostgreSQL URL, and a build that can use it.
    pub fn validate_metadata(&self) -> Result<(), String> {
        let Some(url) = &self.metadata else {
            return Ok(());
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(
                "--metadata takes a PostgreSQL URL: postgres://user:password@host:port/dbname"
                    .into(),
            );
        }
        if !cfg!(feature = "postgres") {
            return Err(
                "this build of the server has no PostgreSQL support: rebuild it with \
                        the cargo feature `postgres`"
                    .into(),
            );
        }
        Ok(())
    }

    /// Applies the `[server]` section of the TOML file at `path` (`listen`, `data`,
    /// `open_admin` and any limit by its name, e.g. `max_body_bytes = 1073741824`).
    pub fn apply_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config file {}: {e}", path.display()))?;
        self.apply_toml(&text)
            .map_err(|e| format!("config file {}: {e}", path.display()))
    }

    /// Applies the `[server]` section of a TOML document.
    pub fn apply_toml(&mut self, text: &str) -> Result<(), String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let Some(section) = file.server else {
            return Ok(());
        };
        if let Some(l) = section.listen {
            self.listen = parse_listen(&l)?;
        }
        if let Some(d) = section.data {
            self.data_dir = d;
        }
        if let Some(a) = section.open_admin {
            self.open_admin = a;
        }
        if let Some(a) = section.webhook_private_https {
            self.webhook_private_https = a;
        }
        if let Some(f) = section.webhook_ca_file {
            self.webhook_ca_file = Some(f);
        }
        let t = section.limits;
        if !t.is_empty() {
            // Start from the current limits so a file sets only what it names.
            let mut merged =
                toml::Table::try_from(LimitsSer::from(&self.limits)).map_err(|e| e.to_string())?;
            for (k, v) in t {
                merged.insert(k, v);
            }
            self.limits = merged
                .try_into()
                .map_err(|e: toml::de::Error| format!("[server]: {e}"))?;
        }
        self.limits.validate()
    }
}

/// The limits as TOML values, for merging a file over the current values.
#[derive(serde::Serialize)]
struct LimitsSer {
    max_body_bytes: u64,
    max_json_bytes: u64,
    max_mcp_bytes: u64,
    header_timeout_secs: u64,
    request_timeout_secs: u64,
    max_concurrency: u64,
    quota_bytes: u64,
    quota_artifacts: u64,
    sse_keepalive_secs: u64,
    sse_queue: u64,
    max_streams: u64,
    webhook_queue: u64,
    webhook_max_attempts: u32,
    webhook_retry_base_ms: u64,
    webhook_timeout_secs: u64,
}

impl From<&ServerLimits> for LimitsSer {
    fn from(l: &ServerLimits) -> Self {
        Self {
            max_body_bytes: l.max_body_bytes,
            max_json_bytes: l.max_json_bytes,
            max_mcp_bytes: l.max_mcp_bytes,
            header_timeout_secs: l.header_timeout_secs,
            request_timeout_secs: l.request_timeout_secs,
            max_concurrency: l.max_concurrency as u64,
            quota_bytes: l.quota_bytes,
            quota_artifacts: l.quota_artifacts,
            sse_keepalive_secs: l.sse_keepalive_secs,
            sse_queue: l.sse_queue as u64,
            max_streams: l.max_streams as u64,
            webhook_queue: l.webhook_queue as u64,
            webhook_max_attempts: l.webhook_max_attempts,
            webhook_retry_base_ms: l.webhook_retry_base_ms,
            webhook_timeout_secs: l.webhook_timeout_secs,
        }
    }
}

/// Parses `ADDR:PORT` (`127.0.0.1:8080`, `[::1]:0`, `0.0.0.0:7070`).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| {
        format!("invalid listen address {s:?}: {e}; use ADDR:PORT such as 127.0.0.1:7070 (port 0 picks a free port)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_sets_only_what_it_names() {
        let mut c = ServerConfig::new("/tmp/x");
        c.apply_toml("[server]\nlisten = \"127.0.0.1:9\"\nmax_concurrency = 3\n[store]\nx = 1\n")
            .unwrap();
        assert_eq!(c.listen.port(), 9);
        assert_eq!(c.limits.max_concurrency, 3);
        assert!(!c.open_admin, "admin without a token is never the default");
        c.apply_toml("[server]\nopen_admin = true\n").unwrap();
        assert!(c.open_admin);
        assert_eq!(
            c.limits.max_body_bytes,
            ServerLimits::default().max_body_bytes
        );
    }

    #[test]
    fn unknown_and_zero_limits_are_refused() {
        let mut c = ServerConfig::new("/tmp/x");
        let e = c.apply_toml("[server]\nmax_bodybytes = 3\n").unwrap_err();
        assert!(e.contains("max_bodybytes"), "{e}");
        let e = c.apply_toml("[server]\nmax_concurrency = 0\n").unwrap_err();
        assert!(e.contains("max_concurrency"), "{e}");
        let mut c = ServerConfig::new("/tmp/x");
        let e = c.apply_toml("[server]\nmax_mcp_bytes = 0\n").unwrap_err();
        assert!(e.contains("max_mcp_bytes"), "{e}");
        let mut c = ServerConfig::new("/tmp/x");
        c.apply_toml("[server]\nmax_mcp_bytes = 1000\n").unwrap();
        assert_eq!(c.limits.max_mcp_bytes, 1000);
    }
}
