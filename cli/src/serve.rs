//! `cairn serve` (the HTTP server, from the `cairn-server` crate) and `cairn token
//! create|list|revoke` (the bearer tokens it checks).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

use cairn_server::auth::{self, TokenRecord};
use cairn_server::config::{parse_listen, ServerConfig};

use super::context::{CliResult, Ctx, Failure};
use super::output::Table;

/// The data folder when neither --data nor CAIRN_DATA is given.
pub const DEFAULT_DATA: &str = ".cairn-server";

/// `cairn serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The data folder: tokens.json and one store per tenant under tenants/ [default: ./.cairn-server].
    #[arg(long, env = "CAIRN_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The address to listen on (port 0 picks a free one) [default: 127.0.0.1:7070]. Without
    /// tokens only a loopback address is served, as the single tenant `default`.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// Keep every tenant's records in this PostgreSQL database (postgres://user:password@host:port/dbname)
    /// instead of under the data folder: several servers can then share them.
    #[arg(long, env = "CAIRN_METADATA", value_name = "URL")]
    pub metadata: Option<String>,
    /// Keep every tenant's content on this S3-compatible bucket (s3://bucket/prefix), with
    /// --metadata. Credentials, region and endpoint from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION and AWS_ENDPOINT_URL (plain http only to loopback).
    #[arg(long, env = "CAIRN_CONTENT", value_name = "URL")]
    pub content: Option<String>,
    /// With --content: how long content stays on the object store after its last reference
    /// is dropped before GC may delete it (e.g. 90s, 15m, 1h, 7d) [default: 1h]. Keep it
    /// longer than any server's GC run; 0 deletes at the next GC.
    #[arg(long, env = "CAIRN_GC_GRACE", value_name = "DURATION")]
    pub gc_grace: Option<String>,
    /// A TOML file whose [server] section sets `listen`, `data` and any limit by name.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Largest upload in bytes (413 beyond it).
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<u64>,
    /// Largest JSON request body in bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_json_bytes: Option<u64>,
    /// Largest body of a POST /mcp (an MCP message: a stored tool output travels inside it).
    #[arg(long, value_name = "BYTES")]
    pub max_mcp_bytes: Option<u64>,
    /// Seconds a client has to send its request headers.
    #[arg(long, value_name = "SECS")]
    pub header_timeout: Option<u64>,
    /// Seconds a request may take until its response starts (408 beyond it).
    #[arg(long, value_name = "SECS")]
    pub request_timeout: Option<u64>,
    /// Requests served at once (503 with Retry-After beyond it).
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<usize>,
    /// Stored bytes per tenant (0: no quota).
    #[arg(long, value_name = "BYTES")]
    pub quota_bytes: Option<u64>,
    /// Artifacts per tenant (0: no quota).
    #[arg(long, value_name = "N")]
    pub quota_artifacts: Option<u64>,
    /// Without tokens (loopback only): give anonymous callers the admin scope too (stats, gc,
    /// verify, cleanup, webhooks, /metrics). Off by default: they read and write the tenant
    /// `default` only. Same as `open_admin = true` in the config file.
    #[arg(long)]
    pub open_admin: bool,
}

/// `cairn token`.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Make a new token for a tenant and print it once (only its hash is kept).
    Create(TokenCreateArgs),
    /// List the tokens (ids, tenants, scopes; never the secrets).
    List(TokenDataArgs),
    /// Revoke a token by id; a running server stops accepting it at once.
    Revoke(TokenRevokeArgs),
}

/// The data folder of the token commands.
#[derive(Debug, Args)]
pub struct TokenDataArgs {
    /// The server's data folder [default: ./.cairn-server].
    #[arg(long, env = "CAIRN_DATA", value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The servers' shared PostgreSQL database (the `--metadata` URL of `cairn serve`): the
    /// tokens live there instead of in the data folder, seen by every server at once.
    #[arg(long, env = "CAIRN_METADATA", value_name = "URL")]
    pub metadata: Option<String>,
}

impl TokenDataArgs {
    fn place(self) -> Result<auth::TokenPlace, Failure> {
        if let Some(url) = &self.metadata {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(Failure::invalid(
                    "--metadata",
                    "it takes a PostgreSQL URL: postgres://user:password@host:port/dbname",
                ));
            }
        }
        auth::TokenPlace::new(&data_dir(self.data), self.metadata.as_deref()).map_err(other)
    }
}

/// `cairn token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    #[command(flatten)]
    data: TokenDataArgs,
    /// The tenant the token acts for (a-z, 0-9, '_', '-').
    #[arg(long)]
    pub tenant: String,
    /// Also reach /v1/admin (stats, gc, verify of the tenant's store) and /metrics.
    #[arg(long)]
    pub admin: bool,
    /// Read only: every write is refused (403).
    #[arg(long)]
    pub read_only: bool,
}

/// `cairn token revoke`.
#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    #[command(flatten)]
    data: TokenDataArgs,
    /// The token id (`cairn token list` shows them).
    pub id: String,
}

fn data_dir(d: Option<PathBuf>) -> PathBuf {
    d.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA))
}

fn other(message: String) -> Failure {
    Failure {
        code: "other".into(),
        message,
        exit: 1,
    }
}

/// Runs the server until SIGTERM or SIGINT.
pub fn serve(_ctx: &Ctx, a: ServeArgs) -> CliResult {
    let mut c = ServerConfig::new(data_dir(a.data.clone()));
    c.listen = parse_listen("127.0.0.1:7070").map_err(other)?;
    if let Some(f) = &a.config {
        c.apply_file(f).map_err(|m| Failure::invalid("config", m))?;
    }
    if let Some(d) = a.data {
        c.data_dir = d;
    }
    if let Some(l) = &a.listen {
        c.listen = parse_listen(l).map_err(|m| Failure::invalid("--listen", m))?;
    }
    if let Some(m) = &a.metadata {
        c.metadata = Some(m.clone());
        c.validate_metadata()
            .map_err(|m| Failure::invalid("--metadata", m))?;
    }
    if let Some(u) = &a.content {
        let content = cairn::S3Config::from_url(u)
            .map_err(|e| Failure::invalid("--content", e.to_string()))?;
        c.content = Some(content);
        c.validate_content()
            .map_err(|m| Failure::invalid("--content", m))?;
    }
    if let Some(g) = &a.gc_grace {
        let grace = super::args::parse_duration(g, "--gc-grace")?;
        match c.content.take() {
            Some(content) => c.content = Some(content.gc_grace(grace)),
            None => {
                return Err(Failure::invalid(
                    "--gc-grace",
                    "the grace period is for content on object storage, which several servers \
                     share: give --content s3://BUCKET/PREFIX too (the other stores collect \
                     garbage under their own write lock, with no grace period), or unset \
                     CAIRN_GC_GRACE",
                ))
            }
        }
    }
    if a.open_admin {
        c.open_admin = true;
    }
    let l = &mut c.limits;
    let set = |dst: &mut u64, v: Option<u64>| {
        if let Some(v) = v {
            *dst = v;
        }
    };
    set(&mut l.max_body_bytes, a.max_body_bytes);
    set(&mut l.max_json_bytes, a.max_json_bytes);
    set(&mut l.max_mcp_bytes, a.max_mcp_bytes);
    set(&mut l.header_timeout_secs, a.header_timeout);
    set(&mut l.request_timeout_secs, a.request_timeout);
    set(&mut l.quota_bytes, a.quota_bytes);
    set(&mut l.quota_artifacts, a.quota_artifacts);
    if let Some(n) = a.max_concurrency {
        l.max_concurrency = n;
    }
    l.validate().map_err(|m| Failure::invalid("limit", m))?;
    cairn_server::run(c).map_err(other)
}

#[derive(Serialize)]
struct Created<'a> {
    token: &'a str,
    #[serde(flatten)]
    record: &'a TokenRecord,
}

/// `cairn token ...`.
pub fn token(ctx: &Ctx, cmd: TokenCmd) -> CliResult {
    match cmd {
        TokenCmd::Create(a) => {
            let place = a.data.place()?;
            let (token, rec) = place.create(&a.tenant, a.admin, a.read_only).map_err(|m| {
                if m.starts_with("invalid tenant") {
                    Failure::invalid("--tenant", m)
                } else {
                    other(m)
                }
            })?;
            ctx.emit(
                &Created {
                    token: &token,
                    record: &rec,
                },
                |w, _| {
                    writeln!(w, "{token}")?;
                    writeln!(
                        w,
                        "(id {}, tenant {}{}{}; shown once: only its hash is kept)",
                        rec.id,
                        rec.tenant,
                        if rec.admin { ", admin" } else { "" },
                        if rec.read_only { ", read-only" } else { "" }
                    )
                },
            )
        }
        TokenCmd::List(a) => {
            let tokens = a.place()?.list().map_err(other)?;
            ctx.emit(&tokens, |w, style| {
                let mut t = Table::new(&["ID", "TENANT", "SCOPES", "CREATED"]);
                for r in &tokens {
                    let mut scopes = vec![if r.read_only { "read" } else { "read,write" }];
                    if r.admin {
                        scopes.push("admin");
                    }
                    t.row(vec![
                        r.id.clone().into(),
                        r.tenant.clone().into(),
                        scopes.join(",").into(),
                        r.created_at.to_rfc3339().into(),
                    ]);
                }
                t.write(w, style)
            })
        }
        TokenCmd::Revoke(a) => {
            let rec = a.data.place()?.revoke(&a.id).map_err(|m| {
                if m.starts_with("no token") {
                    Failure {
                        code: "token_not_found".into(),
                        message: m,
                        exit: 3,
                    }
                } else {
                    other(m)
                }
            })?;
            ctx.emit(&rec, |w, _| {
                writeln!(w, "revoked {} (tenant {})", rec.id, rec.tenant)
            })
        }
    }
}
