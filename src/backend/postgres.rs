//! The metadata engine on a PostgreSQL server (feature `postgres`), shared by any number of
//! processes: one table of `(k bytea PRIMARY KEY, v bytea)` per store namespace (tenant).
//!
//! - Range scans are `k >= $1 AND k < $2 ORDER BY k [DESC] LIMIT $3`, answered by the primary
//!   key's btree (bytea compares bytewise, the order every engine here keeps).
//! - A write transaction is a PostgreSQL `SERIALIZABLE` transaction: its reads go to the server
//!   inside it (so PostgreSQL sees what each write depended on), its writes gather in an overlay
//!   and go out at commit as one upsert and one delete. A serialization failure (SQLSTATE 40001)
//!   or a deadlock (40P01), on any statement or on `COMMIT`, becomes
//!   [`Error::WriteConflict`]: the store runs the whole write again.
//! - The schema is versioned per namespace in `cairn_migrations`; missing migrations are applied
//!   at open under an advisory lock, so several servers starting at once apply each once.
//! - Every commit that appends events sends, inside its transaction (so PostgreSQL delivers it
//!   only once the commit succeeded), one `NOTIFY` on the namespace's channel
//!   ([`events_channel`]) saying "session X has events up to seq N" and nothing more; an
//!   [`EventListener`] on any process receives it and reads the events from the table.
//! - Connections are pooled; a connection that broke (a server restart) is dropped and the next
//!   call opens a new one. Reads outside a transaction retry once on a fresh connection.

use std::cell::RefCell;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, NoTls, Statement};

use super::{Backend, Entry, Op, Overlay, WriteTx};
use crate::error::{Error, Result};

#[path = "postgres_tls.rs"]
mod tls;

/// Opens a connection, with TLS when the URL asked for it.
fn open_client(
    config: &postgres::Config,
    tls: Option<&tls::Tls>,
) -> std::result::Result<Client, postgres::Error> {
    match tls {
        None => config.connect(NoTls),
        Some(t) => config.connect(t.clone()),
    }
}

/// How many idle connections the pool keeps.
const MAX_IDLE: usize = 16;

/// How long a connection attempt may take before it is an error.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest namespace: table names stay within PostgreSQL's 63-byte identifiers.
pub const MAX_NAMESPACE_LEN: usize = 40;

/// The schema of one namespace, in order: migration `i + 1` is `MIGRATIONS[i]`, with `{t}` the
/// namespace's table. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &["CREATE TABLE {t} (k bytea PRIMARY KEY, v bytea NOT NULL)"];

/// A Cairn key space in a PostgreSQL database. Cheap to share between threads; each call takes a
/// pooled connection.
pub struct PostgresBackend {
    config: postgres::Config,
    /// `None`: plain TCP (no `sslmode`, or `sslmode=disable`).
    tls: Option<tls::Tls>,
    /// `host:port/dbname`, for messages (never the password).
    target: String,
    namespace: String,
    sql: Sql,
    pool: Mutex<Vec<Conn>>,
}

/// The statements of one namespace's table.
struct Sql {
    get: String,
    /// Many keys in one statement (a query's candidate records): one round trip, not one each.
    get_many: String,
    scan: [String; 4],
    upsert: String,
    delete: String,
}

/// A connection with its prepared statements.
struct Conn {
    client: Client,
    get: Statement,
    get_many: Statement,
    /// Forward bounded, forward unbounded, reverse bounded, reverse unbounded.
    scan: [Statement; 4],
    upsert: Statement,
    delete: Statement,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("target", &self.target)
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// The `LISTEN`/`NOTIFY` channel of a namespace's event notices: `cairn_ev_<namespace>`.
pub(crate) fn events_channel(namespace: &str) -> String {
    format!("cairn_ev_{namespace}")
}

/// The largest notice payload sent at once (PostgreSQL's limit is 8000 bytes).
const MAX_NOTICE: usize = 7000;

/// The `SELECT pg_notify(...)` statements announcing the events among `ops`: per session, the
/// highest seq written, as `SESSIONHEX:SEQ` entries joined by `,`. Empty: no events.
fn notify_sql(channel: &str, ops: &[Op]) -> String {
    use std::collections::BTreeMap;
    const EVENT_KEY_LEN: usize = 1 + 16 + 8;
    let mut top: BTreeMap<&[u8], u64> = BTreeMap::new();
    for op in ops {
        if let Op::Put(k, _) = op {
            if k.len() == EVENT_KEY_LEN && k[0] == crate::keys::EVENT {
                let seq = crate::keys::u64_value(&k[17..]);
                let e = top.entry(&k[1..17]).or_insert(0);
                *e = (*e).max(seq);
            }
        }
    }
    let mut sql = String::new();
    let mut payload = String::new();
    let flush = |payload: &mut String, sql: &mut String| {
        if !payload.is_empty() {
            // Channel and payload hold only [a-z0-9_:,]: nothing to escape.
            sql.push_str(&format!("SELECT pg_notify('{channel}', '{payload}'); "));
            payload.clear();
        }
    };
    for (sid, seq) in top {
        if payload.len() > MAX_NOTICE {
            flush(&mut payload, &mut sql);
        }
        if !payload.is_empty() {
            payload.push(',');
        }
        for b in sid {
            payload.push_str(&format!("{b:02x}"));
        }
        payload.push_str(&format!(":{seq}"));
    }
    flush(&mut payload, &mut sql);
    sql
}

/// Parses one notice payload (see [`notify_sql`]); malformed entries are skipped (the poll
/// backstop of a listener's user finds their events anyway).
fn parse_notice(payload: &str, out: &mut Vec<(crate::ids::SessionId, u64)>) {
    for entry in payload.split(',') {
        let Some((sid, seq)) = entry.split_once(':') else {
            continue;
        };
        let Ok(seq) = seq.parse::<u64>() else {
            continue;
        };
        if sid.len() != 32 {
            continue;
        }
        let mut bytes = [0u8; 16];
        let ok = (0..16).all(|i| {
            sid.get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .filter(|_| sid.as_bytes()[2 * i] != b'+')
                .map(|b| bytes[i] = b)
                .is_some()
        });
        if ok {
            out.push((crate::ids::SessionId::from_bytes(bytes), seq));
        }
    }
}

/// Receives a namespace's event notices ("session X has events up to seq N") on a connection
/// of its own that `LISTEN`s on [`events_channel`]. Notices are hints: one may be lost while
/// the connection is down, so a user also reads the table on a bounded interval.
pub struct EventListener {
    config: postgres::Config,
    tls: Option<tls::Tls>,
    target: String,
    channel: String,
    client: Option<Client>,
}

impl std::fmt::Debug for EventListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventListener")
            .field("target", &self.target)
            .field("channel", &self.channel)
            .finish()
    }
}

impl EventListener {
    /// Waits up to `timeout` for notices and returns every one received, as (session, highest
    /// seq). Connects (again) first when needed; an error means the connection failed (the
    /// next call reconnects), and notices may have been missed meanwhile.
    pub fn wait(&mut self, timeout: Duration) -> Result<Vec<(crate::ids::SessionId, u64)>> {
        use postgres::fallible_iterator::FallibleIterator;
        let fail = |what: &str, e: String, target: &str| Error::Backend {
            message: format!(
                "PostgreSQL at {target}: {what}: {e} (the connection failed: check that the \
                 server runs and is reachable)"
            ),
        };
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = None;
            let mut c = open_client(&self.config, self.tls.as_ref())
                .map_err(|e| fail("listen", e.to_string(), &self.target))?;
            c.batch_execute(&format!("LISTEN {}", self.channel))
                .map_err(|e| fail("listen", e.to_string(), &self.target))?;
            self.client = Some(c);
        }
        let mut out = Vec::new();
        let Some(c) = self.client.as_mut() else {
            return Ok(out);
        };
        let got = {
            let mut n = c.notifications();
            let first = n.timeout_iter(timeout).next();
            match first {
                Ok(Some(note)) => {
                    parse_notice(note.payload(), &mut out);
                    let mut rest = n.iter();
                    loop {
                        match rest.next() {
                            Ok(Some(note)) => parse_notice(note.payload(), &mut out),
                            Ok(None) => break Ok(()),
                            Err(e) => break Err(e.to_string()),
                        }
                    }
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        };
        let closed = c.is_closed();
        match got {
            Err(e) => {
                self.client = None;
                Err(fail("waiting for notices", e, &self.target))
            }
            Ok(()) if closed => {
                self.client = None;
                Err(fail(
                    "waiting for notices",
                    "connection closed".into(),
                    &self.target,
                ))
            }
            Ok(()) => Ok(out),
        }
    }
}

fn table_name(namespace: &str) -> String {
    format!("cairn_kv_{namespace}")
}

/// Checks a namespace: 1 to [`MAX_NAMESPACE_LEN`] of `a-z`, `0-9`, `_`.
fn check_namespace(namespace: &str) -> Result<()> {
    let ok = !namespace.is_empty()
        && namespace.len() <= MAX_NAMESPACE_LEN
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "namespace",
            format!(
                "{namespace:?}: a PostgreSQL namespace is 1 to {MAX_NAMESPACE_LEN} characters of \
                 a-z, 0-9 and _"
            ),
        ))
    }
}

/// Whether a PostgreSQL error means the connection (or the server behind it) is gone: closed,
/// an I/O error, or the server shutting down or restarting (SQLSTATE class 57P).
fn is_broken(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(c) => {
            *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
        }
        None => e.as_db_error().is_none(),
    }
}

/// Whether a connection error is a TLS certificate refusal (rustls's messages).
fn is_tls_refusal(text: &str) -> bool {
    let all = text.to_ascii_lowercase();
    all.contains("certificate") || all.contains("unknownissuer") || all.contains("notvalidforname")
}

/// Whether a PostgreSQL error means "lost a race: run the transaction again".
fn is_conflict(e: &postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    })
}

impl PostgresBackend {
    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname` or the
    /// `host=... user=...` form) and opens the key space `namespace` (its table
    /// `cairn_kv_<namespace>`), creating or migrating its schema.
    ///
    /// TLS as libpq does it, from the URL: `sslmode=disable` (the default here: plain TCP, for
    /// loopback and trusted networks), `prefer`, `require`, `verify-ca` or `verify-full`, and
    /// `sslrootcert=/path/ca.pem` (PEM CA certificates; default `~/.postgresql/root.crt`).
    /// With `verify-full`, the server's certificate must chain to that CA and name the host.
    pub fn connect(url: &str, namespace: &str) -> Result<Self> {
        check_namespace(namespace)?;
        let (url, tls_params) = tls::split(url)?;
        let tls = tls::Tls::new(&tls_params)?;
        let mut config: postgres::Config = url.parse().map_err(|e| {
            Error::invalid(
                "postgres url",
                format!(
                    "{e}; write it as postgres://user:password@host:port/dbname (the password \
                     is not shown here)"
                ),
            )
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.ssl_mode(match tls_params.mode {
            Some(tls::SslMode::Prefer) => postgres::config::SslMode::Prefer,
            Some(tls::SslMode::Require | tls::SslMode::VerifyCa | tls::SslMode::VerifyFull) => {
                postgres::config::SslMode::Require
            }
            None | Some(tls::SslMode::Disable) => postgres::config::SslMode::Disable,
        });
        let target = describe(&config);
        let t = table_name(namespace);
        let sql = Sql {
            get: format!("SELECT v FROM {t} WHERE k = $1"),
            get_many: format!("SELECT k, v FROM {t} WHERE k = ANY($1::bytea[])"),
            scan: [
                format!("SELECT k, v FROM {t} WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3"),
                format!("SELECT k, v FROM {t} WHERE k >= $1 ORDER BY k LIMIT $2"),
                format!("SELECT k, v FROM {t} WHERE k >= $1 AND k < $2 ORDER BY k DESC LIMIT $3"),
                format!("SELECT k, v FROM {t} WHERE k >= $1 ORDER BY k DESC LIMIT $2"),
            ],
            upsert: format!(
                "INSERT INTO {t} (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                 ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v"
            ),
            delete: format!("DELETE FROM {t} WHERE k = ANY($1::bytea[])"),
        };
        let backend = PostgresBackend {
            config,
            tls,
            target,
            namespace: namespace.to_string(),
            sql,
            pool: Mutex::new(Vec::new()),
        };
        backend.migrate()?;
        Ok(backend)
    }

    /// The namespace this backend holds.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// A listener for this namespace's event notices (it connects on its first wait).
    pub fn event_listener(&self) -> EventListener {
        EventListener {
            config: self.config.clone(),
            tls: self.tls.clone(),
            target: self.target.clone(),
            channel: events_channel(&self.namespace),
            client: None,
        }
    }

    /// Drops the namespace's table and its migration records: every record of that store is
    /// gone. For tests and for removing a tenant.
    pub fn drop_namespace(&self) -> Result<()> {
        let mut client = self.raw_connect()?;
        let t = table_name(&self.namespace);
        let mut tx = client.transaction().map_err(|e| self.err("drop", e))?;
        tx.execute(&format!("DROP TABLE IF EXISTS {t}"), &[])
            .map_err(|e| self.err("drop", e))?;
        tx.execute(
            "DELETE FROM cairn_migrations WHERE namespace = $1",
            &[&self.namespace],
        )
        .map_err(|e| self.err("drop", e))?;
        tx.commit().map_err(|e| self.err("drop", e))?;
        if let Ok(mut pool) = self.pool.lock() {
            pool.clear();
        }
        Ok(())
    }

    fn err(&self, what: &str, e: postgres::Error) -> Error {
        if is_conflict(&e) {
            return Error::WriteConflict {
                message: format!("PostgreSQL at {}: {what}: {e}", self.target),
            };
        }
        if is_broken(&e) {
            // A server restart: every pooled connection is as dead as this one.
            self.pool().clear();
            return Error::Unavailable {
                message: format!(
                    "PostgreSQL at {}: {what}: {e} (the connection failed: check that the \
                     server runs and is reachable)",
                    self.target
                ),
            };
        }
        Error::Backend {
            message: format!("PostgreSQL at {}: {what}: {e}", self.target),
        }
    }

    fn raw_connect(&self) -> Result<Client> {
        open_client(&self.config, self.tls.as_ref()).map_err(|e| {
            // The error and its causes (the TLS refusal is a cause of "error performing TLS
            // handshake").
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = std::error::Error::source(c);
            }
            match &self.tls {
                // A refused certificate is not a server that is down: say what was checked.
                Some(t) if is_tls_refusal(&text) => Error::Backend {
                    message: format!(
                        "could not connect to PostgreSQL at {} over TLS ({}): {text}; \
                         the server's certificate was refused: check that sslrootcert names \
                         the CA that signed it and that it names the host of the URL",
                        self.target, t.describe
                    ),
                },
                _ => Error::Unavailable {
                    message: format!(
                        "could not connect to PostgreSQL at {}{}: {text}; check that \
                         the server runs, the URL (user, host, port, database) is right and \
                         the user may log in",
                        self.target,
                        self.tls
                            .as_ref()
                            .map(|t| format!(" over TLS ({})", t.describe))
                            .unwrap_or_default()
                    ),
                },
            }
        })
    }

    /// Applies the migrations this namespace lacks, under an advisory lock.
    fn migrate(&self) -> Result<()> {
        let mut client = self.raw_connect()?;
        let e = |e| self.err("schema migration", e);
        let mut tx = client.transaction().map_err(e)?;
        // One migrator at a time across every process (the key is arbitrary but fixed).
        tx.execute("SELECT pg_advisory_xact_lock(7417201500)", &[])
            .map_err(e)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS cairn_migrations (
                namespace text NOT NULL,
                version integer NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (namespace, version))",
        )
        .map_err(e)?;
        let row = tx
            .query_one(
                "SELECT COALESCE(max(version), 0) FROM cairn_migrations WHERE namespace = $1",
                &[&self.namespace],
            )
            .map_err(e)?;
        let have: i32 = row.get(0);
        let known = MIGRATIONS.len() as i32;
        if have > known {
            return Err(Error::Backend {
                message: format!(
                    "the PostgreSQL namespace {:?} at {} is at schema version {have}, newer than \
                     this Cairn knows ({known}): upgrade Cairn",
                    self.namespace, self.target
                ),
            });
        }
        let t = table_name(&self.namespace);
        for (i, m) in MIGRATIONS.iter().enumerate().skip(have as usize) {
            tx.batch_execute(&m.replace("{t}", &t)).map_err(e)?;
            tx.execute(
                "INSERT INTO cairn_migrations (namespace, version) VALUES ($1, $2)",
                &[&self.namespace, &(i as i32 + 1)],
            )
            .map_err(e)?;
        }
        tx.commit().map_err(e)?;
        Ok(())
    }

    fn pool(&self) -> MutexGuard<'_, Vec<Conn>> {
        // The pool is a plain list: consistent after any panic.
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pooled connection, or a new one.
    fn checkout(&self) -> Result<Conn> {
        if let Some(c) = self.pool().pop() {
            if !c.client.is_closed() {
                return Ok(c);
            }
        }
        let mut client = self.raw_connect()?;
        let e = |e| self.err("prepare", e);
        let scan = [
            client.prepare(&self.sql.scan[0]).map_err(e)?,
            client.prepare(&self.sql.scan[1]).map_err(e)?,
            client.prepare(&self.sql.scan[2]).map_err(e)?,
            client.prepare(&self.sql.scan[3]).map_err(e)?,
        ];
        Ok(Conn {
            get: client.prepare(&self.sql.get).map_err(e)?,
            get_many: client.prepare(&self.sql.get_many).map_err(e)?,
            upsert: client.prepare(&self.sql.upsert).map_err(e)?,
            delete: client.prepare(&self.sql.delete).map_err(e)?,
            scan,
            client,
        })
    }

    /// Returns a healthy connection to the pool.
    fn checkin(&self, c: Conn) {
        if c.client.is_closed() {
            return;
        }
        let mut pool = self.pool();
        if pool.len() < MAX_IDLE {
            pool.push(c);
        }
    }

    /// Runs `f` on a pooled connection outside any transaction; once more on a new connection
    /// if the pooled one had broken (the server restarted since).
    fn with_conn<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&mut Conn) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut retried = false;
        loop {
            let mut c = self.checkout()?;
            match f(&mut c) {
                Ok(v) => {
                    self.checkin(c);
                    return Ok(v);
                }
                Err(e) if !retried && (is_broken(&e) || c.client.is_closed()) => {
                    // Every pooled connection predates the break: start from a new one.
                    self.pool().clear();
                    retried = true;
                }
                Err(e) => {
                    self.checkin(c);
                    return Err(self.err(what, e));
                }
            }
        }
    }
}

impl Drop for PostgresBackend {
    /// Closes the pooled connections on a thread of their own: the blocking client's close
    /// runs a small async runtime, which must not start inside a caller's (a server dropping
    /// its state on an async worker).
    fn drop(&mut self) {
        let conns = std::mem::take(self.pool.get_mut().unwrap_or_else(|p| p.into_inner()));
        if !conns.is_empty() {
            let _ = std::thread::Builder::new()
                .name("cairn-pg-close".into())
                .spawn(move || drop(conns));
        }
    }
}

/// `host:port/dbname` of a configuration, for messages.
fn describe(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn get_on(c: &mut Conn, key: &[u8]) -> std::result::Result<Option<Vec<u8>>, postgres::Error> {
    let rows = c.client.query(&c.get, &[&key])?;
    Ok(rows.first().map(|r| r.get::<_, Vec<u8>>(0)))
}

/// The values of `keys`, in their order (`None` where a key is absent), in one statement.
fn get_many_on(
    c: &mut Conn,
    keys: &[Vec<u8>],
) -> std::result::Result<Vec<Option<Vec<u8>>>, postgres::Error> {
    let rows = c.client.query(&c.get_many, &[&keys])?;
    let mut found: std::collections::HashMap<Vec<u8>, Vec<u8>> = rows
        .into_iter()
        .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1)))
        .collect();
    // A key asked twice gets its value twice: clone for all but its last occurrence.
    let mut last = std::collections::HashMap::new();
    for (i, k) in keys.iter().enumerate() {
        last.insert(k.as_slice(), i);
    }
    Ok(keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            if last.get(k.as_slice()) == Some(&i) {
                found.remove(k)
            } else {
                found.get(k).cloned()
            }
        })
        .collect())
}

fn scan_on(
    c: &mut Conn,
    start: &[u8],
    end: &[u8],
    reverse: bool,
    limit: usize,
) -> std::result::Result<Vec<Entry>, postgres::Error> {
    if limit == 0 || (!end.is_empty() && start >= end) {
        return Ok(Vec::new());
    }
    let limit = limit_param(limit);
    let rows = match (reverse, end.is_empty()) {
        (false, false) => c.client.query(&c.scan[0], &[&start, &end, &limit])?,
        (false, true) => c.client.query(&c.scan[1], &[&start, &limit])?,
        (true, false) => c.client.query(&c.scan[2], &[&start, &end, &limit])?,
        (true, true) => c.client.query(&c.scan[3], &[&start, &limit])?,
    };
    Ok(rows
        .into_iter()
        .map(|r| (r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1)))
        .collect())
}

/// Sends `ops` on a connection inside an open transaction: one upsert, one delete.
fn write_on(c: &mut Conn, ops: Vec<Op>) -> std::result::Result<(), postgres::Error> {
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let mut dels = Vec::new();
    for op in ops {
        match op {
            Op::Put(k, v) => {
                keys.push(k);
                values.push(v);
            }
            Op::Delete(k) => dels.push(k),
        }
    }
    if !dels.is_empty() {
        c.client.execute(&c.delete, &[&dels])?;
    }
    if !keys.is_empty() {
        c.client.execute(&c.upsert, &[&keys, &values])?;
    }
    Ok(())
}

impl Backend for PostgresBackend {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.with_conn("get", |c| get_on(c, key))
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.with_conn("get_many", |c| get_many_on(c, keys))
    }

    fn scan(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Vec<Entry>> {
        self.with_conn("scan", |c| scan_on(c, start, end, reverse, limit))
    }

    fn apply(&self, ops: Vec<Op>) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        // Later ops on a key win, as in every engine: keep the last op of each key.
        let mut last = Overlay::default();
        for op in ops {
            match op {
                Op::Put(k, v) => last.put(k, v),
                Op::Delete(k) => last.delete(k),
            }
        }
        let ops = last.into_ops();
        let notify = notify_sql(&events_channel(&self.namespace), &ops);
        let mut c = self.checkout()?;
        if let Err(e) = c.client.batch_execute("BEGIN") {
            if !is_broken(&e) {
                return Err(self.err("begin", e));
            }
            // A pooled connection from before a server restart: begin on a new one.
            self.pool().clear();
            c = self.checkout()?;
            c.client
                .batch_execute("BEGIN")
                .map_err(|e| self.err("begin", e))?;
        }
        let out = (|| {
            write_on(&mut c, ops)?;
            c.client.batch_execute(&format!("{notify}COMMIT"))
        })();
        match out {
            Ok(()) => {
                self.checkin(c);
                Ok(())
            }
            Err(e) => {
                if c.client.batch_execute("ROLLBACK").is_ok() {
                    self.checkin(c);
                }
                Err(self.err("apply", e))
            }
        }
    }

    /// A committed transaction is durable on the server already (with PostgreSQL's default
    /// `synchronous_commit = on` and `fsync = on`): nothing to do.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn flush_is_fsync(&self) -> bool {
        true
    }

    fn begin_write(&self) -> Result<Box<dyn WriteTx + '_>> {
        let mut c = self.checkout()?;
        if let Err(e) = c.client.batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE") {
            if !is_broken(&e) {
                return Err(self.err("begin", e));
            }
            // A pooled connection from before a server restart: nothing was sent yet, so
            // begin once more on a new connection.
            self.pool().clear();
            c = self.checkout()?;
            c.client
                .batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
                .map_err(|e| self.err("begin", e))?;
        }
        Ok(Box::new(PgTx {
            backend: self,
            conn: RefCell::new(Some(c)),
            overlay: Overlay::default(),
        }))
    }

    fn is_shared(&self) -> bool {
        true
    }
}

/// A `SERIALIZABLE` transaction on one pooled connection. Dropped without commit: rolled back.
struct PgTx<'a> {
    backend: &'a PostgresBackend,
    /// `None` once the connection is given back (after commit or a failure).
    conn: RefCell<Option<Conn>>,
    overlay: Overlay,
}

impl PgTx<'_> {
    fn on_conn<T>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Conn) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut slot = self.conn.borrow_mut();
        let Some(c) = slot.as_mut() else {
            return Err(Error::Backend {
                message: format!(
                    "PostgreSQL at {}: {what} in a transaction that already failed",
                    self.backend.target
                ),
            });
        };
        f(c).map_err(|e| self.backend.err(what, e))
    }
}

impl WriteTx for PgTx<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.overlay.get(key) {
            Some(v) => Ok(v),
            None => self.on_conn("get", |c| get_on(c, key)),
        }
    }

    fn scan(&self, start: &[u8], end: &[u8], reverse: bool, limit: usize) -> Result<Vec<Entry>> {
        self.overlay.scan(start, end, reverse, limit, |s, e, n| {
            self.on_conn("scan", |c| scan_on(c, s, e, reverse, n))
        })
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.put(key, value);
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.overlay.delete(key);
    }

    fn is_empty(&self) -> bool {
        self.overlay.is_empty()
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        let ops = std::mem::take(&mut self.overlay).into_ops();
        let Some(mut c) = self.conn.get_mut().take() else {
            return Err(Error::Backend {
                message: format!(
                    "PostgreSQL at {}: commit of a transaction that already failed",
                    self.backend.target
                ),
            });
        };
        // The notice rides in the same round trip as COMMIT and is delivered only if it succeeds.
        let notify = notify_sql(&events_channel(&self.backend.namespace), &ops);
        let mut at_commit = false;
        let out = write_on(&mut c, ops).and_then(|()| {
            at_commit = true;
            c.client.batch_execute(&format!("{notify}COMMIT"))
        });
        match out {
            Ok(()) => {
                self.backend.checkin(c);
                Ok(())
            }
            Err(e) => {
                // After a failed statement the transaction is aborted; after a failed COMMIT
                // it is over. ROLLBACK makes the connection usable either way.
                let unknown = at_commit && is_broken(&e);
                if c.client.batch_execute("ROLLBACK").is_ok() {
                    self.backend.checkin(c);
                }
                let err = self.backend.err("commit", e);
                match err {
                    // The COMMIT went out and no answer came back: it may have been applied.
                    Error::Unavailable { message } if unknown => Err(Error::Unavailable {
                        message: format!(
                            "{message}; the connection was lost during COMMIT, so this write \
                             may or may not have been applied: a put retried with the same \
                             request id (Idempotency-Key) is stored once, without one a retry \
                             may add one more version"
                        ),
                    }),
                    other => Err(other),
                }
            }
        }
    }
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.conn.get_mut().take() {
            if c.client.batch_execute("ROLLBACK").is_ok() {
                self.backend.checkin(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_name_the_highest_seq_per_session_and_parse_back() {
        let a = crate::ids::SessionId::new();
        let b = crate::ids::SessionId::new();
        let ev = |s: &crate::ids::SessionId, n: u64| {
            crate::keys::Key::new(crate::keys::EVENT)
                .sid(s)
                .u64(n)
                .build()
        };
        let ops = vec![
            Op::Put(ev(&a, 3), vec![]),
            Op::Put(ev(&a, 4), vec![]),
            Op::Put(ev(&b, 1), vec![]),
            Op::Put(b"Sxx".to_vec(), vec![]),
            Op::Delete(ev(&b, 9)),
        ];
        let sql = notify_sql("cairn_ev_t", &ops);
        assert_eq!(sql.matches("pg_notify").count(), 1, "{sql}");
        let payload = sql.split('\'').nth(3).unwrap();
        let mut got = Vec::new();
        parse_notice(payload, &mut got);
        got.sort_by_key(|(_, n)| *n);
        assert_eq!(got, vec![(b, 1), (a, 4)]);
        assert!(notify_sql("c", &[Op::Put(b"Sxx".to_vec(), vec![])]).is_empty());
        let mut bad = Vec::new();
        parse_notice("zz:1,+0000000000000000000000000000000:2,x,", &mut bad);
        assert!(bad.is_empty(), "{bad:?}");
    }

    #[test]
    fn namespaces_are_checked() {
        for ok in ["a", "tenant_1", &"x".repeat(MAX_NAMESPACE_LEN)] {
            assert!(check_namespace(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a-b", "a;drop", &"x".repeat(MAX_NAMESPACE_LEN + 1)] {
            let e = check_namespace(bad).unwrap_err().to_string();
            assert!(e.contains("namespace"), "{e}");
        }
    }

    #[test]
    fn a_bad_url_is_a_clear_error_without_connecting() {
        let e = PostgresBackend::connect("postgres://u:secret@[bad", "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("postgres://user:password@host:port/dbname"),
            "{e}"
        );
        assert!(
            !e.contains("secret"),
            "the password stays out of messages: {e}"
        );
    }

    #[test]
    fn a_server_that_is_not_there_is_a_clear_error() {
        // Port 1 on loopback: nothing listens there.
        let e = PostgresBackend::connect("postgres://cairn@127.0.0.1:1/cairn", "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("could not connect to PostgreSQL at 127.0.0.1:1/cairn"),
            "{e}"
        );
    }
}
