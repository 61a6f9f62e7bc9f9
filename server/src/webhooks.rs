//! Webhooks: a tenant's lifecycle events POSTed to URLs it registered, signed, retried, and
//! never in a request's way.
//!
//! - **Configured by an admin route** (`POST/GET /v1/webhooks`, `DELETE /v1/webhooks/{id}`,
//!   admin scope), for the caller's tenant, kept in `<data>/webhooks.json` (written atomically,
//!   mode 0600: it holds the signing secrets, which must stay readable to sign).
//! - **Fed from the store's acknowledged event feed**: one [`cairn::Store::subscribe`] per tenant
//!   with webhooks, which hands over only batches that are durable (after their flush), in commit
//!   order. A thread per such tenant reads the feed and offers each event to the matching
//!   webhooks' bounded queues (`webhook_queue`; a full queue drops and counts the event).
//! - **Delivered by a task per webhook**, one event at a time (so a receiver sees a webhook's
//!   events in commit order), with retries on any non-2xx answer, connection error or timeout:
//!   `webhook_retry_base_ms` doubled per retry (capped at 10 minutes), `webhook_max_attempts` in
//!   all, then the event is given up and counted (`failed`).
//! - **Kept across restarts**: the feed thread appends each event a webhook wants to that
//!   webhook's journal (`<data>/webhook-queues/<id>.jsonl`, fsync per batch) before queueing
//!   it, and the delivery task appends a `done` line when the event is delivered or given up.
//!   At start the events without a `done` line are delivered first, in order: at least once
//!   across SIGTERM and SIGKILL for every event that reached the journal (see DESIGN.md for
//!   the window between a write's acknowledgement and its journal line).
//! - **Signed**: `Cairn-Signature: sha256=HEX`, the HMAC-SHA256 with the webhook's secret (its
//!   bytes as shown) over `TIMESTAMP.BODY`, where `TIMESTAMP` is the `Cairn-Timestamp` header
//!   (Unix seconds) and `BODY` the exact request body. Receivers should compare in constant time
//!   and refuse old timestamps (replays).
//! - **Destinations**: `http://` only to a loopback address; `https://` (rustls, the system's
//!   roots plus `webhook_ca_file`) to public addresses only, unless `webhook_private_https`
//!   also allows loopback and private ones. Whatever the scheme, a name resolving to a
//!   link-local, cloud metadata, unspecified, multicast or broadcast address is refused, at
//!   registration and again at every attempt (the address connected to is the one checked, so
//!   DNS rebinding does not help). Redirects are not followed and no proxy is used.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, Method, Request, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use cairn::{Delivery, Event, Store, SubscriptionFilter};
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use crate::api::Routes;
use crate::auth::Principal;
use crate::config::ServerLimits;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{AdminStore, Json, Path};
use crate::state::AppState;

/// The webhook file's name inside the data folder.
pub const WEBHOOKS_FILE: &str = "webhooks.json";
/// The signature header: `sha256=` + 64 hex digits.
pub const SIGNATURE_HEADER: &str = "cairn-signature";
/// The timestamp header (Unix seconds), signed together with the body.
pub const TIMESTAMP_HEADER: &str = "cairn-timestamp";
/// The webhook id header.
pub const WEBHOOK_ID_HEADER: &str = "cairn-webhook-id";
/// The delivery id header: `SESSION:SEQ`, the event's id, the same on every retry (use it to
/// drop duplicates).
pub const DELIVERY_ID_HEADER: &str = "cairn-delivery-id";
/// The event type header.
pub const EVENT_TYPE_HEADER: &str = "cairn-event-type";
/// The event types a webhook receives when it names none: the session lifecycle.
pub const DEFAULT_EVENTS: &[&str] = &["created", "status_changed"];
/// Webhooks a tenant may register.
pub const MAX_PER_TENANT: usize = 16;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// The folder of the delivery journals, one file per webhook: `<id>.jsonl`.
pub const JOURNAL_DIR: &str = "webhook-queues";
/// A journal with every event done is emptied once it has this many lines.
const JOURNAL_COMPACT_LINES: u64 = 1024;
/// Events the feed thread takes at once (one journal fsync per webhook per batch).
const FEED_BATCH: usize = 256;
/// How often the feed thread and a waiting delivery task look for shutdown and deletion.
const POLL: Duration = Duration::from_millis(200);
const FORMAT: u32 = 1;

type HmacSha256 = Hmac<Sha256>;

/// One webhook as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WebhookRecord {
    /// `wh_` + 12 hex digits.
    pub id: String,
    /// The tenant whose events it receives.
    pub tenant: String,
    /// Where events are POSTed.
    pub url: String,
    /// The event types it receives.
    pub events: Vec<String>,
    /// The signing secret (HMAC-SHA256 key: these bytes as shown).
    pub secret: String,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct WebhookFile {
    format: u32,
    webhooks: Vec<WebhookRecord>,
}

/// The body of `POST /v1/webhooks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// `https://` to a public host, or `http://` to a loopback address
    /// (`http://127.0.0.1:9000/hook`).
    pub url: String,
    /// Event types to receive (`created`, `status_changed`, `artifact_stored`,
    /// `artifact_deleted`, `metadata_updated`, `checkpoint_created`, `forked`, `custom`).
    /// Default: `created` and `status_changed`.
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// The signing secret, 16 to 256 printable ASCII characters; default: a new random one
    /// (`whsec_` + 64 hex digits), shown once in the answer.
    #[serde(default)]
    pub secret: Option<String>,
}

/// How deliveries of one webhook went since the server started.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct DeliveryState {
    /// Events waiting in the webhook's queue.
    pub queued: u64,
    /// Events delivered (answered 2xx).
    pub delivered: u64,
    /// Events given up after `webhook_max_attempts` attempts.
    pub failed: u64,
    /// Attempts repeated after a failure.
    pub retries: u64,
    /// Events dropped because the queue was full (or the feed fell behind).
    pub dropped: u64,
    /// The HTTP status of the last attempt that got an answer.
    pub last_status: Option<u16>,
    /// What went wrong in the last failed attempt.
    pub last_error: Option<String>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When the last event was delivered.
    pub last_delivered_at: Option<DateTime<Utc>>,
}

/// A webhook as listed (never its secret).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct WebhookInfo {
    /// `wh_` + 12 hex digits.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// The event types it receives.
    pub events: Vec<String>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// Delivery counters since the server started.
    pub delivery: DeliveryState,
}

/// The answer to `POST /v1/webhooks`: the webhook and its secret (shown this once).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    /// `wh_` + 12 hex digits.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// The event types it receives.
    pub events: Vec<String>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// The signing secret: keep it; it is not shown again.
    pub secret: String,
}

/// The answer to `GET /v1/webhooks`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// The tenant's webhooks, oldest first.
    pub items: Vec<WebhookInfo>,
}

/// What a receiver gets: the event and who sends it.
#[derive(Debug, Serialize)]
struct Payload<'a> {
    webhook_id: &'a str,
    delivery_id: String,
    tenant: &'a str,
    event: &'a Event,
}

// ------------------------------------------------------------------------------ signatures

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// HMAC-SHA256 of `message` under `key`, as 64 hex digits.
pub fn hmac_sha256_hex(key: &[u8], message: &[&[u8]]) -> String {
    // HMAC takes a key of any length; the error case cannot happen, but is not unwrapped.
    let Ok(mut mac) = <HmacSha256 as KeyInit>::new_from_slice(key) else {
        return String::new();
    };
    for part in message {
        mac.update(part);
    }
    hex(&mac.finalize().into_bytes())
}

/// The `Cairn-Signature` value for a body sent at `timestamp` (Unix seconds).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    format!(
        "sha256={}",
        hmac_sha256_hex(secret.as_bytes(), &[ts.as_bytes(), b".", body])
    )
}

// ------------------------------------------------------------------------- destinations

/// Which destinations a webhook URL may have: `http://` to loopback only; `https://` to public
/// addresses, and to loopback and private ones too when `private_https` (the server's
/// `webhook_private_https`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `https://` may also reach loopback and private addresses.
    pub private_https: bool,
}

const PRIVATE_REFUSED: &str = "a loopback or private address: https:// webhooks go to public addresses (the server setting webhook_private_https allows private ones)";

/// Why an address may not receive webhooks over `https` (or `http`), or `None` when it may.
pub fn refused_address(ip: IpAddr, https: bool, policy: Policy) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
            None if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
                let o = v6.octets();
                IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
            }
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    };
    let private_ok = https && policy.private_https;
    match ip {
        IpAddr::V4(v4) => {
            if v4 == Ipv4Addr::new(100, 100, 100, 200) {
                return Some("a cloud metadata address");
            }
            if v4.is_link_local() {
                return Some("a link-local address (169.254.0.0/16, where cloud metadata lives)");
            }
            if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() {
                return Some("an unspecified, broadcast or multicast address");
            }
            if !https && !v4.is_loopback() {
                return Some("not loopback: http:// is only allowed to 127.0.0.0/8 and ::1");
            }
            let o = v4.octets();
            let cgnat = o[0] == 100 && (64..128).contains(&o[1]);
            if https && !private_ok && (v4.is_loopback() || v4.is_private() || cgnat || o[0] == 0) {
                return Some(PRIVATE_REFUSED);
            }
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                return Some("a cloud metadata address");
            }
            if seg[0] & 0xffc0 == 0xfe80 {
                return Some("a link-local address (fe80::/10)");
            }
            if v6.is_unspecified() || v6.is_multicast() {
                return Some("an unspecified or multicast address");
            }
            if !https && !v6.is_loopback() {
                return Some("not loopback: http:// is only allowed to 127.0.0.0/8 and ::1");
            }
            let unique_local = seg[0] & 0xfe00 == 0xfc00;
            let site_local = seg[0] & 0xffc0 == 0xfec0;
            if https && !private_ok && (v6.is_loopback() || unique_local || site_local) {
                return Some(PRIVATE_REFUSED);
            }
        }
    }
    None
}

/// A checked destination.
#[derive(Clone, Debug)]
struct Target {
    https: bool,
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    path: String,
}

fn parse_target(url: &str, policy: Policy) -> Result<Target, String> {
    let https = match url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()) {
        Some(s) if s == "http" => false,
        Some(s) if s == "https" => true,
        Some(_) => {
            return Err(format!(
                "{url:?}: the scheme must be http:// (to a loopback address) or https://"
            ))
        }
        None => {
            return Err(format!(
                "{url:?} is not a URL; give http://127.0.0.1:PORT/PATH"
            ))
        }
    };
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL ({e}); give http://127.0.0.1:PORT/PATH"))?;
    let Some(auth) = uri.authority() else {
        return Err(format!("{url:?} has no host"));
    };
    if auth.as_str().contains('@') {
        return Err(format!(
            "{url:?} carries credentials before the host; put none in the URL (the signature authenticates the sender)"
        ));
    }
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        if let Some(why) = refused_address(ip, https, policy) {
            return Err(format!("{url:?}: {ip} is {why}"));
        }
    }
    Ok(Target {
        https,
        host: host.to_string(),
        port: auth.port_u16().unwrap_or(if https { 443 } else { 80 }),
        authority: auth.as_str().to_string(),
        path: uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
    })
}

/// Resolves `host` and checks every address it resolves to.
async fn resolve_checked(
    host: &str,
    port: u16,
    https: bool,
    policy: Policy,
) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    for a in &addrs {
        if let Some(why) = refused_address(a.ip(), https, policy) {
            return Err(format!("{host} resolves to {}, which is {why}", a.ip()));
        }
    }
    Ok(addrs)
}

/// Resolves the target and checks every address it resolves to.
async fn resolve(t: &Target, policy: Policy) -> Result<Vec<SocketAddr>, String> {
    resolve_checked(&t.host, t.port, t.https, policy).await
}

/// The https client's resolver: every address a name resolves to is checked against the
/// policy before reqwest may connect to it, at every attempt (so DNS rebinding cannot reach a
/// refused address). Literal IP hosts do not come here; [`parse_target`] checked them.
struct CheckedResolver {
    policy: Policy,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: reqwest puts the URL's port (or 443) in its place.
            match resolve_checked(&host, 0, true, policy).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(m) => Err(m.into()),
            }
        })
    }
}

/// The https client: rustls with the system's roots (and `ca_file`'s certificates), the
/// checking resolver, no proxy, no redirects.
fn https_client(policy: Policy, ca_file: Option<&FsPath>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .https_only(true)
        .user_agent(concat!("cairn-webhooks/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(CheckedResolver { policy }));
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            format!(
                "cannot read webhook_ca_file {}: {e}; give a PEM file of CA certificates",
                path.display()
            )
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            format!(
                "webhook_ca_file {} holds no usable PEM certificate ({e})",
                path.display()
            )
        })?;
        if certs.is_empty() {
            return Err(format!(
                "webhook_ca_file {} holds no PEM certificate",
                path.display()
            ));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| format!("cannot set up the https client for webhooks: {}", chain(&e)))
}

/// An error with its sources, for messages ("error sending request" alone says little).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

fn check_events(events: Option<Vec<String>>) -> Result<Vec<String>, String> {
    let events = events.unwrap_or_else(|| DEFAULT_EVENTS.iter().map(|s| s.to_string()).collect());
    if events.is_empty() {
        return Err("events is empty; name at least one event type, or leave it out for created and status_changed".into());
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if !cairn::EVENT_TYPES.contains(&e.as_str()) {
            return Err(format!(
                "unknown event type {e:?}; use any of {}",
                cairn::EVENT_TYPES.join(", ")
            ));
        }
        if !out.contains(&e) {
            out.push(e);
        }
    }
    Ok(out)
}

fn check_secret(secret: Option<String>) -> Result<String, String> {
    match secret {
        None => {
            let mut b = [0u8; 32];
            getrandom::fill(&mut b).map_err(|e| format!("no randomness from the OS: {e}"))?;
            Ok(format!("whsec_{}", hex(&b)))
        }
        Some(s) => {
            if !(16..=256).contains(&s.len()) || !s.bytes().all(|b| (0x21..0x7f).contains(&b)) {
                return Err(
                    "secret must be 16 to 256 printable ASCII characters without spaces; or leave it out for a random one".into(),
                );
            }
            Ok(s)
        }
    }
}

// --------------------------------------------------------------------------------- file

fn load_file(data: &FsPath) -> Result<WebhookFile, String> {
    crate::jsonfile::load(
        data,
        WEBHOOKS_FILE,
        "a webhook file",
        "restore it from a backup or remove it and register the webhooks again",
        FORMAT,
        |f: &WebhookFile| f.format,
        || WebhookFile {
            format: FORMAT,
            webhooks: Vec::new(),
        },
    )
}

/// Written atomically with mode 0600 (it holds the signing secrets): see
/// [`crate::jsonfile::save`].
fn save_file(data: &FsPath, file: &WebhookFile) -> Result<(), String> {
    crate::jsonfile::save(data, WEBHOOKS_FILE, file)
}

// ------------------------------------------------------------------------------ runtime

/// Delivery settings, from the limits.
#[derive(Clone, Copy, Debug)]
struct Settings {
    queue: usize,
    max_attempts: u32,
    retry_base: Duration,
    timeout: Duration,
}

impl Settings {
    fn from_limits(l: &ServerLimits) -> Self {
        Self {
            queue: l.webhook_queue,
            max_attempts: l.webhook_max_attempts,
            retry_base: Duration::from_millis(l.webhook_retry_base_ms),
            timeout: Duration::from_secs(l.webhook_timeout_secs),
        }
    }

    fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.retry_base
            .checked_mul(factor)
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values are replaced whole or counted: a panic cannot leave them torn.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ------------------------------------------------------------------------------ journal

/// One line of a delivery journal.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum JournalLine {
    /// An event to deliver.
    Event(Event),
    /// The delivery id (`SESSION:SEQ`) of an event delivered, given up or dropped.
    Done(String),
}

fn delivery_key(e: &Event) -> String {
    format!("{}:{}", e.session_id, e.seq)
}

fn journal_path(data: &FsPath, id: &str) -> PathBuf {
    data.join(JOURNAL_DIR).join(format!("{id}.jsonl"))
}

/// A webhook's delivery journal, open for appending.
struct Journal {
    file: std::fs::File,
    /// Lines in the file.
    lines: u64,
    /// Events in the file without a `done` line.
    pending: u64,
}

impl Journal {
    /// Reads the journal at `path` (missing: empty), rewrites it with only its pending events
    /// (atomically), and returns it open for appending with those events, oldest first. A
    /// torn last line (a crash in the middle of a write) is skipped.
    fn open(path: &FsPath) -> Result<(Self, Vec<Event>), String> {
        let dir = path.parent().unwrap_or(FsPath::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let mut events: Vec<Event> = Vec::new();
        let mut done = std::collections::HashSet::new();
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<JournalLine>(line) {
                Ok(JournalLine::Event(e)) => events.push(e),
                Ok(JournalLine::Done(id)) => {
                    done.insert(id);
                }
                Err(_) => {} // a torn line: its event had not been queued (no fsync yet)
            }
        }
        events.retain(|e| !done.contains(&delivery_key(e)));
        let mut out = Vec::new();
        for e in &events {
            serde_json::to_writer(&mut out, &JournalLine::Event(e.clone()))
                .map_err(|e| format!("cannot encode a journal line: {e}"))?;
            out.push(b'\n');
        }
        let tmp = path.with_extension("jsonl.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| format!("cannot rewrite {}: {e}", path.display()))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let n = events.len() as u64;
        Ok((
            Self {
                file,
                lines: n,
                pending: n,
            },
            events,
        ))
    }

    /// Appends events and makes them durable (one fsync).
    fn append_events(&mut self, events: &[&Event]) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut out = Vec::new();
        for e in events {
            serde_json::to_writer(&mut out, &JournalLine::Event((*e).clone()))?;
            out.push(b'\n');
        }
        self.file.write_all(&out)?;
        self.file.sync_data()?;
        self.lines += events.len() as u64;
        self.pending += events.len() as u64;
        Ok(())
    }

    /// Marks an event done (not synced: losing the mark only repeats a delivery). Empties
    /// the file when nothing is pending and it has grown.
    fn done(&mut self, id: &str) -> std::io::Result<()> {
        use std::io::Write as _;
        self.pending = self.pending.saturating_sub(1);
        if self.pending == 0 && self.lines + 1 >= JOURNAL_COMPACT_LINES {
            self.file.set_len(0)?;
            self.lines = 0;
            return Ok(());
        }
        let mut line = serde_json::to_vec(&JournalLine::Done(id.to_string()))?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.lines += 1;
        Ok(())
    }
}

/// One registered webhook at run time.
struct Hook {
    rec: WebhookRecord,
    target: Target,
    tx: mpsc::Sender<Event>,
    state: Mutex<DeliveryState>,
    /// Deleted: its task stops at the next event or wait.
    removed: AtomicBool,
    /// The delivery journal.
    journal: Mutex<Journal>,
    /// Journal events from before the start still to deliver.
    backlog: std::sync::atomic::AtomicU64,
}

impl Hook {
    fn wants(&self, e: &Event) -> bool {
        self.rec.events.iter().any(|t| t == e.kind.type_name())
    }

    /// Queues an event (journaled before). A full queue drops it: counted and marked done.
    fn offer(&self, e: &Event) {
        match self.tx.try_send(e.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                lock(&self.state).dropped += 1;
                self.done(&delivery_key(e));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Records in the journal that an event needs no more attempts.
    fn done(&self, id: &str) {
        if let Err(e) = lock(&self.journal).done(id) {
            crate::log(
                "warn",
                &format!("webhook {}: cannot write its journal: {e}", self.rec.id),
            );
        }
    }

    fn info(&self) -> WebhookInfo {
        let mut delivery = lock(&self.state).clone();
        delivery.queued = (self.tx.max_capacity() - self.tx.capacity()) as u64
            + self.backlog.load(Ordering::SeqCst);
        WebhookInfo {
            id: self.rec.id.clone(),
            url: self.rec.url.clone(),
            events: self.rec.events.clone(),
            created_at: self.rec.created_at,
            delivery,
        }
    }
}

/// A tenant's feed: its hooks and the thread that reads its store's subscription.
struct Feed {
    hooks: Mutex<Vec<Arc<Hook>>>,
    /// Set when its last hook is removed: the thread ends.
    closed: AtomicBool,
}

/// Every tenant's webhooks: the file, the feeds and the delivery tasks.
pub struct Webhooks {
    data: PathBuf,
    settings: Settings,
    /// Serialises changes of the file.
    file: Arc<Mutex<()>>,
    feeds: Mutex<HashMap<String, Arc<Feed>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stopping: Arc<AtomicBool>,
    /// Set by [`Webhooks::start`] from the server's configuration.
    tls: OnceLock<Tls>,
}

/// The destination policy and the https client, from the server's configuration.
struct Tls {
    policy: Policy,
    client: reqwest::Client,
}

impl Webhooks {
    /// Reads `<data>/webhooks.json` (a missing file is no webhooks; an unreadable one an error).
    pub fn open(data: &FsPath, limits: &ServerLimits) -> Result<Self, String> {
        load_file(data)?;
        Ok(Self {
            data: data.to_path_buf(),
            settings: Settings::from_limits(limits),
            file: Arc::new(Mutex::new(())),
            feeds: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
            stopping: Arc::new(AtomicBool::new(false)),
            tls: OnceLock::new(),
        })
    }

    /// Starts delivery for every registered webhook (at server start, before the first
    /// request). A tenant whose store cannot open is logged and skipped.
    pub async fn start(&self, st: &AppState) -> Result<(), String> {
        self.configure(st.config())?;
        let file = load_file(&self.data)?;
        let mut by_tenant: HashMap<String, Vec<WebhookRecord>> = HashMap::new();
        for rec in file.webhooks {
            by_tenant.entry(rec.tenant.clone()).or_default().push(rec);
        }
        for (tenant, recs) in by_tenant {
            let store = match st.store(&tenant).await {
                Ok(s) => s,
                Err(e) => {
                    crate::log(
                        "error",
                        &format!("webhooks of tenant {tenant} are not delivered: its store did not open: {}", e.message),
                    );
                    continue;
                }
            };
            for rec in recs {
                if let Err(e) = self.attach(&tenant, &store, rec).await {
                    crate::log("error", &format!("webhook of tenant {tenant}: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Sets the destination policy and builds the https client from the configuration
    /// (`webhook_private_https`, `webhook_ca_file`). The server calls it before it reports
    /// that it listens, so a bad CA file stops the start; later calls keep the first settings.
    pub fn configure(&self, config: &crate::ServerConfig) -> Result<(), String> {
        if self.tls.get().is_some() {
            return Ok(());
        }
        let policy = Policy {
            private_https: config.webhook_private_https,
        };
        let client = https_client(policy, config.webhook_ca_file.as_deref())?;
        let _ = self.tls.set(Tls { policy, client });
        Ok(())
    }

    /// Stops the feeds and waits for their threads (they let go of the subscriptions, so the
    /// stores can close). Delivery tasks end with the runtime.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let threads: Vec<_> = lock(&self.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }

    /// Registers a webhook for `tenant` and starts delivering to it.
    async fn add(
        &self,
        tenant: &str,
        store: &Arc<Store>,
        new: NewWebhook,
    ) -> ApiResult<CreatedWebhook> {
        let policy = self.policy();
        let target = parse_target(&new.url, policy).map_err(|m| ApiError::invalid("url", m))?;
        resolve(&target, policy)
            .await
            .map_err(|m| ApiError::invalid("url", m))?;
        let events = check_events(new.events).map_err(|m| ApiError::invalid("events", m))?;
        let secret = check_secret(new.secret).map_err(|m| ApiError::invalid("secret", m))?;
        let mut idb = [0u8; 6];
        getrandom::fill(&mut idb)
            .map_err(|e| ApiError::internal(format!("no randomness from the OS: {e}")))?;
        let rec = WebhookRecord {
            id: format!("wh_{}", hex(&idb)),
            tenant: tenant.to_string(),
            url: new.url,
            events,
            secret,
            created_at: Utc::now(),
        };
        let (t, r) = (tenant.to_string(), rec.clone());
        self.edit(move |file| {
            let n = file.webhooks.iter().filter(|w| w.tenant == t).count();
            if n >= MAX_PER_TENANT {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "limit_exceeded",
                    format!("the tenant has {n} webhooks, the most it may have ({MAX_PER_TENANT}); delete one first"),
                ));
            }
            file.webhooks.push(r);
            Ok(())
        })
        .await?;
        if let Err(e) = self.attach(tenant, store, rec.clone()).await {
            // Registered but not running: undo, so the list never shows a dead webhook.
            let _ = self.remove(tenant, &rec.id).await;
            return Err(ApiError::internal(e));
        }
        Ok(CreatedWebhook {
            id: rec.id,
            url: rec.url,
            events: rec.events,
            created_at: rec.created_at,
            secret: rec.secret,
        })
    }

    /// The tenant's webhooks with their delivery state.
    fn list(&self, tenant: &str) -> ApiResult<WebhookList> {
        let file = load_file(&self.data).map_err(ApiError::internal)?;
        let running: HashMap<String, WebhookInfo> = match lock(&self.feeds).get(tenant) {
            Some(f) => lock(&f.hooks)
                .iter()
                .map(|h| (h.rec.id.clone(), h.info()))
                .collect(),
            None => HashMap::new(),
        };
        let items = file
            .webhooks
            .into_iter()
            .filter(|w| w.tenant == tenant)
            .map(|w| {
                running.get(&w.id).cloned().unwrap_or(WebhookInfo {
                    id: w.id,
                    url: w.url,
                    events: w.events,
                    created_at: w.created_at,
                    delivery: DeliveryState::default(),
                })
            })
            .collect();
        Ok(WebhookList { items })
    }

    /// Loads the file, applies `f`, and saves it, off the async workers, one change at a time.
    async fn edit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut WebhookFile) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let (data, file_lock) = (self.data.clone(), Arc::clone(&self.file));
        tokio::task::spawn_blocking(move || {
            let _g = lock(&file_lock);
            let mut file = load_file(&data).map_err(ApiError::internal)?;
            let out = f(&mut file)?;
            file.format = FORMAT;
            save_file(&data, &file).map_err(ApiError::internal)?;
            Ok(out)
        })
        .await
        .map_err(|e| ApiError::internal(format!("writing {WEBHOOKS_FILE} failed: {e}")))?
    }

    /// Deletes the tenant's webhook `id`; another tenant's id is "not found".
    async fn remove(&self, tenant: &str, id: &str) -> ApiResult<()> {
        let (t, i) = (tenant.to_string(), id.to_string());
        self.edit(move |file| {
            let Some(pos) = file
                .webhooks
                .iter()
                .position(|w| w.id == i && w.tenant == t)
            else {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no webhook {i:?}; GET /v1/webhooks lists them"),
                ));
            };
            file.webhooks.remove(pos);
            Ok(())
        })
        .await?;
        let mut feeds = lock(&self.feeds);
        if let Some(feed) = feeds.get(tenant).cloned() {
            let mut hooks = lock(&feed.hooks);
            hooks.retain(|h| {
                if h.rec.id == id {
                    h.removed.store(true, Ordering::SeqCst);
                    false
                } else {
                    true
                }
            });
            if hooks.is_empty() {
                feed.closed.store(true, Ordering::SeqCst);
                drop(hooks);
                feeds.remove(tenant);
            }
        }
        drop(feeds);
        match std::fs::remove_file(journal_path(&self.data, id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => crate::log(
                "warn",
                &format!("webhook {id} deleted, but its journal stays: {e}"),
            ),
        }
        Ok(())
    }

    fn policy(&self) -> Policy {
        self.tls.get().map(|t| t.policy).unwrap_or_default()
    }

    /// Starts delivering `rec`: its task, and the tenant's feed if it has none yet.
    async fn attach(
        &self,
        tenant: &str,
        store: &Arc<Store>,
        rec: WebhookRecord,
    ) -> Result<(), String> {
        let policy = self.policy();
        let target = parse_target(&rec.url, policy)?;
        let client = self.tls.get().map(|t| t.client.clone());
        let path = journal_path(&self.data, &rec.id);
        let (journal, backlog) = tokio::task::spawn_blocking(move || Journal::open(&path))
            .await
            .map_err(|e| format!("opening the webhook journal failed: {e}"))??;
        let (tx, rx) = mpsc::channel(self.settings.queue);
        let hook = Arc::new(Hook {
            rec,
            target,
            tx,
            state: Mutex::new(DeliveryState::default()),
            removed: AtomicBool::new(false),
            journal: Mutex::new(journal),
            backlog: std::sync::atomic::AtomicU64::new(backlog.len() as u64),
        });
        tokio::spawn(deliver(
            Arc::clone(&hook),
            backlog,
            rx,
            Sender { policy, client },
            self.settings,
            Arc::clone(&self.stopping),
        ));
        if let Some(feed) = lock(&self.feeds).get(tenant) {
            lock(&feed.hooks).push(hook);
            return Ok(());
        }
        // Subscribe off the async workers (it takes the store's write lock for a moment).
        let s = Arc::clone(store);
        let queue = self
            .settings
            .queue
            .clamp(2, cairn::MAX_SUBSCRIPTION_CAPACITY);
        let sub = tokio::task::spawn_blocking(move || {
            s.subscribe(SubscriptionFilter::new().capacity(queue))
        })
        .await
        .map_err(|e| format!("subscribing to the event feed failed: {e}"))?
        .map_err(|e| format!("subscribing to the event feed failed: {e}"))?;
        let mut feeds = lock(&self.feeds);
        if let Some(feed) = feeds.get(tenant) {
            // Another registration started the feed meanwhile; this subscription is not needed.
            lock(&feed.hooks).push(hook);
            return Ok(());
        }
        let feed = Arc::new(Feed {
            hooks: Mutex::new(vec![hook]),
            closed: AtomicBool::new(false),
        });
        feeds.insert(tenant.to_string(), Arc::clone(&feed));
        drop(feeds);
        let stopping = Arc::clone(&self.stopping);
        let name = tenant.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("cairn-webhooks-{tenant}"))
            .spawn(move || run_feed(&name, &sub, &feed, &stopping))
            .map_err(|e| format!("cannot start the webhook feed thread: {e}"))?;
        let mut threads = lock(&self.threads);
        threads.retain(|t| !t.is_finished());
        threads.push(thread);
        Ok(())
    }
}

/// Reads a tenant's acknowledged events and, for each webhook that wants them, journals them
/// (one fsync per batch) and then queues them.
fn run_feed(tenant: &str, sub: &cairn::Subscription, feed: &Feed, stopping: &AtomicBool) {
    loop {
        if stopping.load(Ordering::SeqCst) || feed.closed.load(Ordering::SeqCst) {
            return;
        }
        let mut batch = Vec::new();
        let mut missed = 0u64;
        match sub.recv_timeout(POLL) {
            Some(Delivery::Event(e)) => batch.push(e),
            Some(Delivery::Missed(n)) => missed += n,
            None if sub.is_closed() => return,
            None => continue,
        }
        while batch.len() < FEED_BATCH {
            match sub.try_recv() {
                Some(Delivery::Event(e)) => batch.push(e),
                Some(Delivery::Missed(n)) => missed += n,
                None => break,
            }
        }
        if missed > 0 {
            crate::log(
                "warn",
                &format!("webhooks of tenant {tenant}: the event feed fell {missed} events behind; they are not delivered"),
            );
        }
        for h in lock(&feed.hooks).iter() {
            if missed > 0 {
                lock(&h.state).dropped += missed;
            }
            let wanted: Vec<&Event> = batch.iter().filter(|e| h.wants(e)).collect();
            if wanted.is_empty() {
                continue;
            }
            if let Err(e) = lock(&h.journal).append_events(&wanted) {
                // Still delivered while the server runs; only a restart could lose them.
                crate::log(
                    "error",
                    &format!("webhook {}: cannot write its journal ({e}); these events are delivered but not kept across a restart", h.rec.id),
                );
            }
            for e in wanted {
                h.offer(e);
            }
        }
    }
}

/// Waits `d`, or less if the webhook is removed or the server stops. Returns false then.
async fn wait(d: Duration, hook: &Hook, stopping: &AtomicBool) -> bool {
    let end = tokio::time::Instant::now() + d;
    loop {
        if hook.removed.load(Ordering::SeqCst) || stopping.load(Ordering::SeqCst) {
            return false;
        }
        let now = tokio::time::Instant::now();
        if now >= end {
            return true;
        }
        tokio::time::sleep((end - now).min(POLL)).await;
    }
}

/// How a delivery task sends: the policy, and the https client (`None` before
/// [`Webhooks::start`], when https deliveries fail with a clear error).
struct Sender {
    policy: Policy,
    client: Option<reqwest::Client>,
}

/// Delivers one webhook's events, one at a time, with retries.
async fn deliver(
    hook: Arc<Hook>,
    backlog: Vec<Event>,
    mut rx: mpsc::Receiver<Event>,
    sender: Sender,
    settings: Settings,
    stopping: Arc<AtomicBool>,
) {
    // The journal's events from before the start come first, in their order.
    let mut backlog = std::collections::VecDeque::from(backlog);
    loop {
        if hook.removed.load(Ordering::SeqCst) || stopping.load(Ordering::SeqCst) {
            return;
        }
        let event = if let Some(e) = backlog.pop_front() {
            hook.backlog.fetch_sub(1, Ordering::SeqCst);
            e
        } else {
            // The hook holds the sender, so the queue never closes by itself: look at the
            // flags between waits.
            match tokio::time::timeout(POLL, rx.recv()).await {
                Ok(Some(e)) => e,
                Ok(None) => return,
                Err(_) => continue,
            }
        };
        let delivery_id = delivery_key(&event);
        let payload = Payload {
            webhook_id: &hook.rec.id,
            delivery_id: delivery_id.clone(),
            tenant: &hook.rec.tenant,
            event: &event,
        };
        let body = match serde_json::to_vec(&payload) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                {
                    let mut s = lock(&hook.state);
                    s.failed += 1;
                    s.last_error = Some(format!("the event did not serialize: {e}"));
                }
                hook.done(&delivery_id);
                continue;
            }
        };
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let result = tokio::time::timeout(
                settings.timeout,
                post(&hook, &sender, &event, &delivery_id, body.clone()),
            )
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "no answer within {} s (webhook_timeout_secs)",
                    settings.timeout.as_secs()
                ))
            });
            let now = Utc::now();
            let ok = {
                let mut s = lock(&hook.state);
                s.last_attempt_at = Some(now);
                match result {
                    Ok(status) if (200..300).contains(&status) => {
                        s.last_status = Some(status);
                        s.delivered += 1;
                        s.last_delivered_at = Some(now);
                        true
                    }
                    Ok(status) => {
                        s.last_status = Some(status);
                        s.last_error = Some(format!("the receiver answered HTTP {status}"));
                        false
                    }
                    Err(e) => {
                        s.last_error = Some(e);
                        false
                    }
                }
            };
            if ok {
                hook.done(&delivery_id);
                break;
            }
            if attempt >= settings.max_attempts {
                lock(&hook.state).failed += 1;
                hook.done(&delivery_id);
                crate::log(
                    "warn",
                    &format!(
                        "webhook {} gave up on event {delivery_id} after {attempt} attempts",
                        hook.rec.id
                    ),
                );
                break;
            }
            if !wait(settings.backoff(attempt - 1), &hook, &stopping).await {
                return;
            }
            lock(&hook.state).retries += 1;
        }
    }
}

/// One attempt: resolve and check, connect, POST, read the status. Returns the status.
async fn post(
    hook: &Hook,
    sender: &Sender,
    event: &Event,
    delivery_id: &str,
    body: Bytes,
) -> Result<u16, String> {
    let t = &hook.target;
    let ts = Utc::now().timestamp();
    let signature = signature(&hook.rec.secret, ts, &body);
    if t.https {
        let Some(client) = &sender.client else {
            return Err(
                "the https client is not set up (the server did not start webhooks)".into(),
            );
        };
        // The resolver checks the addresses; redirects are refused (a 3xx is a failure).
        let resp = client
            .post(&hook.rec.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(WEBHOOK_ID_HEADER, hook.rec.id.as_str())
            .header(DELIVERY_ID_HEADER, delivery_id)
            .header(EVENT_TYPE_HEADER, event.kind.type_name())
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("sending to {} failed: {}", t.authority, chain(&e)))?;
        return Ok(resp.status().as_u16());
    }
    let addrs = resolve(t, sender.policy).await?;
    let stream = tokio::net::TcpStream::connect(&addrs[..])
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", t.authority))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {} failed: {e}", t.authority))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method(Method::POST)
        .uri(t.path.as_str())
        .header(header::HOST, t.authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("cairn-webhooks/", env!("CARGO_PKG_VERSION")),
        )
        .header(WEBHOOK_ID_HEADER, hook.rec.id.as_str())
        .header(DELIVERY_ID_HEADER, delivery_id)
        .header(EVENT_TYPE_HEADER, event.kind.type_name())
        .header(TIMESTAMP_HEADER, ts.to_string())
        .header(SIGNATURE_HEADER, signature)
        .body(Full::new(body))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("sending to {} failed: {e}", t.authority))?;
    Ok(resp.status().as_u16())
}

// ------------------------------------------------------------------------------- routes

pub(crate) fn routes(r: Routes) -> Routes {
    r.add(Method::POST, "/v1/webhooks", create)
        .add(Method::GET, "/v1/webhooks", list)
        .add(Method::DELETE, "/v1/webhooks/{id}", delete)
}

/// Registers a webhook for the caller's tenant (admin scope). The answer shows its secret once.
#[utoipa::path(post, path = "/v1/webhooks", tag = "webhooks", request_body = NewWebhook,
    responses((status = 201, description = "Registered; deliveries start with the next event", body = CreatedWebhook),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 422, description = "The tenant has the most webhooks it may have (limit_exceeded)", body = ErrorBody)))]
pub async fn create(
    State(st): State<AppState>,
    AdminStore(store): AdminStore,
    axum::Extension(p): axum::Extension<Principal>,
    Json(body): Json<NewWebhook>,
) -> ApiResult<Response> {
    let created = st.webhooks().add(&p.tenant, &store, body).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// The caller's tenant's webhooks with their delivery state (admin scope; never the secrets).
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, description = "The webhooks", body = WebhookList),
        (status = 403, description = "Not an admin token", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    AdminStore(_): AdminStore,
    axum::Extension(p): axum::Extension<Principal>,
) -> ApiResult<axum::Json<WebhookList>> {
    Ok(axum::Json(st.webhooks().list(&p.tenant)?))
}

/// Deletes one of the caller's tenant's webhooks (admin scope); its queued events are dropped.
#[utoipa::path(delete, path = "/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id (wh_...)")),
    responses((status = 204, description = "Deleted"),
        (status = 403, description = "Not an admin token", body = ErrorBody),
        (status = 404, description = "No such webhook in this tenant", body = ErrorBody)))]
pub async fn delete(
    State(st): State<AppState>,
    AdminStore(_): AdminStore,
    axum::Extension(p): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    st.webhooks().remove(&p.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231, test case 2.
        assert_eq!(
            hmac_sha256_hex(b"Jefe", &[b"what do ya want ", b"for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let s = signature("k", 12, b"{}");
        assert_eq!(s, format!("sha256={}", hmac_sha256_hex(b"k", &[b"12.{}"])));
        assert_ne!(s, signature("k", 13, b"{}"), "the timestamp is signed");
    }

    #[test]
    fn destinations_are_loopback_http_and_never_metadata() {
        let ok = |u: &str| parse_target(u, Policy::default()).map(|_| ());
        assert!(ok("http://127.0.0.1:9000/hook?x=1").is_ok());
        assert!(ok("http://[::1]:9000/").is_ok());
        assert!(
            ok("http://localhost:9000/").is_ok(),
            "names are checked when resolved"
        );
        for (url, why) in [
            ("http://10.0.0.1/", "not loopback"),
            ("http://192.168.1.1/", "not loopback"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("https://169.254.169.254/", "link-local"),
            ("https://[fe80::1]/", "link-local"),
            ("https://100.100.100.200/", "metadata"),
            ("https://[fd00:ec2::254]/", "metadata"),
            ("http://[::ffff:169.254.169.254]/", "link-local"),
            ("https://0.0.0.0/", "unspecified"),
            ("https://127.0.0.1/hook", "private"),
            ("https://10.1.2.3/hook", "private"),
            ("https://172.16.0.1/hook", "private"),
            ("https://192.168.0.1/hook", "private"),
            ("https://100.64.0.1/hook", "private"),
            ("https://[::1]/hook", "private"),
            ("https://[fd12::1]/hook", "private"),
            ("https://[::ffff:10.0.0.1]/hook", "private"),
            ("https://[64:ff9b::a9fe:a9fe]/hook", "link-local"),
            ("ftp://127.0.0.1/", "scheme"),
            ("http://user:pw@127.0.0.1/", "credentials"),
            ("not a url", "not a URL"),
        ] {
            let e = ok(url).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
        // Public https destinations pass (names are checked when resolved).
        assert!(ok("https://example.com/hook").is_ok());
        assert!(ok("https://93.184.215.14:8443/hook").is_ok());
        let t = parse_target("http://127.0.0.1:81/a/b?c=d", Policy::default()).unwrap();
        assert_eq!((t.port, t.path.as_str()), (81, "/a/b?c=d"));
        assert_eq!(
            parse_target("http://127.0.0.1", Policy::default())
                .unwrap()
                .path,
            "/"
        );
        assert_eq!(
            parse_target("https://example.com", Policy::default())
                .unwrap()
                .port,
            443
        );
        // The switch opens loopback and private https, never metadata or http elsewhere.
        let private = Policy {
            private_https: true,
        };
        assert!(parse_target("https://127.0.0.1:9443/h", private).is_ok());
        assert!(parse_target("https://10.0.0.1/h", private).is_ok());
        for (url, why) in [
            ("https://169.254.169.254/", "link-local"),
            ("https://[fd00:ec2::254]/", "metadata"),
            ("http://10.0.0.1/", "not loopback"),
        ] {
            let e = parse_target(url, private).unwrap_err();
            assert!(e.contains(why), "{url}: {e}");
        }
    }

    #[test]
    fn events_and_secrets_are_checked() {
        assert_eq!(check_events(None).unwrap(), DEFAULT_EVENTS);
        assert!(check_events(Some(vec![])).is_err());
        assert!(check_events(Some(vec!["nope".into()]))
            .unwrap_err()
            .contains("nope"));
        assert_eq!(
            check_events(Some(vec!["custom".into(), "custom".into()])).unwrap(),
            ["custom"]
        );
        let s = check_secret(None).unwrap();
        assert!(s.starts_with("whsec_") && s.len() == 6 + 64);
        assert_ne!(s, check_secret(None).unwrap());
        assert!(check_secret(Some("short".into())).is_err());
        assert!(check_secret(Some("has a space in it ok".into())).is_err());
        assert_eq!(
            check_secret(Some("0123456789abcdef".into())).unwrap(),
            "0123456789abcdef"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let s = Settings {
            queue: 4,
            max_attempts: 3,
            retry_base: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(s.backoff(0), Duration::from_millis(100));
        assert_eq!(s.backoff(3), Duration::from_millis(800));
        assert_eq!(s.backoff(40), MAX_BACKOFF);
    }
}
