//! A PostgreSQL server for the tests, on 127.0.0.1.
//!
//! `CAIRN_PG_URL` names a running server (`.ci/run` starts one with `tests/services/run.sh`).
//! Without it, the first test that asks starts a private cluster for this test process:
//! `initdb` in a temporary folder, `postgres` on a free loopback port (as the `postgres` user
//! when running as root, which PostgreSQL refuses to run as), stopped and removed by a watchdog
//! when the test process ends. When no server can be had, the tests say so and skip, unless
//! `CAIRN_REQUIRE_PG=1` (CI), where that is a failure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cairn::{Config, PostgresBackend, Store};

/// The URL of the test server, or `None` (with the reason printed) when there is none.
pub fn url() -> Option<String> {
    static URL: OnceLock<Result<String, String>> = OnceLock::new();
    match URL.get_or_init(start) {
        Ok(u) => Some(u.clone()),
        Err(why) => {
            if std::env::var("CAIRN_REQUIRE_PG").as_deref() == Ok("1") {
                panic!("CAIRN_REQUIRE_PG=1 but no PostgreSQL server could be had: {why}");
            }
            eprintln!("SKIPPED: PostgreSQL tests need a server and none could be started: {why}");
            None
        }
    }
}

/// A namespace no other test of any process uses.
pub fn namespace() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// A fresh store in its own namespace, or `None` when no server can be had.
pub fn store(config: Config) -> Option<Store> {
    let url = url()?;
    Some(Store::open_postgres(&url, &namespace(), config).expect("open a PostgreSQL store"))
}

/// A fresh backend in its own namespace.
pub fn backend() -> Option<PostgresBackend> {
    let url = url()?;
    Some(PostgresBackend::connect(&url, &namespace()).expect("connect"))
}

fn bin_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("CAIRN_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    for v in ["17", "16", "15", "14"] {
        let d = PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"));
        if d.join("initdb").is_file() {
            return Some(d);
        }
    }
    // On PATH (other distributions).
    let out = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    p.parent()
        .filter(|d| d.join("postgres").is_file())
        .map(Path::to_path_buf)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// Runs `script` with `sh -c`, as the `postgres` user when we are root.
fn sh(script: &str, as_postgres: bool) -> Command {
    let mut c = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", "sh", "-c", script]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", script]);
        c
    };
    c.stdin(std::process::Stdio::null());
    c
}

fn start() -> Result<String, String> {
    if let Ok(u) = std::env::var("CAIRN_PG_URL") {
        return wait_ready(&u).map(|()| u);
    }
    let bin = bin_dir().ok_or(
        "no initdb found (install Debian's `postgresql` package, or set CAIRN_PG_BIN or \
         CAIRN_PG_URL)",
    )?;
    let root = is_root();
    let dir = std::env::temp_dir().join(format!(
        "cairn-pg-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if root {
        let ok = Command::new("chown")
            .args(["postgres:postgres", &dir.to_string_lossy()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err(format!("could not chown {} to postgres", dir.display()));
        }
    }
    let data = dir.join("data");
    let bin_s = bin.display().to_string();
    let data_s = data.display().to_string();
    let dir_s = dir.display().to_string();
    let out = sh(
        &format!("'{bin_s}/initdb' -D '{data_s}' -U cairn --auth=trust -E UTF8 --no-sync >'{dir_s}/initdb.log' 2>&1"),
        root,
    )
    .status()
    .map_err(|e| format!("initdb: {e}"))?;
    if !out.success() {
        let log = std::fs::read_to_string(dir.join("initdb.log")).unwrap_or_default();
        return Err(format!("initdb failed: {log}"));
    }
    let port = free_port()?;
    // The watchdog: runs the server and stops it (fast shutdown), then removes the cluster,
    // once this test process is gone.
    let me = std::process::id();
    let script = format!(
        "'{bin_s}/postgres' -D '{data_s}' -p {port} -h 127.0.0.1 -k '{dir_s}' \
         -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
         -c max_connections=300 -c max_pred_locks_per_transaction=256 \
         >'{dir_s}/server.log' 2>&1 & pid=$!; \
         while [ -d /proc/{me} ] && kill -0 $pid 2>/dev/null; do sleep 1; done; \
         kill -INT $pid 2>/dev/null; wait $pid; rm -rf '{dir_s}'"
    );
    sh(&script, root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let url = format!("postgres://cairn@127.0.0.1:{port}/postgres");
    wait_ready(&url).map_err(|e| {
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        format!("{e}; server log: {log}")
    })?;
    Ok(url)
}

fn wait_ready(url: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match PostgresBackend::connect(url, "ready_probe") {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("the server at {url} did not answer in 30 s: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A PostgreSQL cluster of one test's own, run with `pg_ctl` so that the test can restart it
/// (fault injection); stopped and removed when dropped. `None` (with the reason printed) when
/// none can be started, unless `CAIRN_REQUIRE_PG=1`.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    root: bool,
    /// `postgres://cairn@127.0.0.1:PORT/postgres`.
    pub url: String,
}

impl Cluster {
    /// Makes and starts the cluster.
    pub fn start() -> Option<Cluster> {
        Self::start_with(None)
    }

    /// Makes and starts a cluster with `ssl = on`, serving the PEM certificate (chain) and key
    /// given, that accepts TCP connections over TLS only (`hostssl` in `pg_hba.conf`; a plain
    /// connection is refused).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Option<Cluster> {
        Self::start_with(Some((cert_pem, key_pem)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Option<Cluster> {
        match Self::try_start(tls) {
            Ok(c) => Some(c),
            Err(why) => {
                if std::env::var("CAIRN_REQUIRE_PG").as_deref() == Ok("1") {
                    panic!("CAIRN_REQUIRE_PG=1 but no PostgreSQL cluster could be started: {why}");
                }
                eprintln!("SKIPPED: this test needs a PostgreSQL cluster of its own: {why}");
                None
            }
        }
    }

    fn try_start(tls: Option<(&str, &str)>) -> Result<Cluster, String> {
        let bin = bin_dir().ok_or("no initdb found (install Debian's `postgresql` package)")?;
        let root = is_root();
        let dir = std::env::temp_dir().join(format!(
            "cairn-pgctl-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if root {
            let ok = Command::new("chown")
                .args(["postgres:postgres", &dir.to_string_lossy()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return Err(format!("could not chown {} to postgres", dir.display()));
            }
        }
        let port = free_port()?;
        let c = Cluster {
            url: format!("postgres://cairn@127.0.0.1:{port}/postgres"),
            bin,
            dir,
            root,
        };
        let (b, d) = (c.bin.display(), c.dir.display());
        c.run(&format!(
            "'{b}/initdb' -D '{d}/data' -U cairn --auth=trust -E UTF8 --no-sync >'{d}/initdb.log' 2>&1 && \
             printf \"port = {port}\\nlisten_addresses = '127.0.0.1'\\nunix_socket_directories = '{d}'\\n\
             fsync = off\\nsynchronous_commit = off\\nmax_connections = 300\\n\
             max_pred_locks_per_transaction = 256\\n\" >> '{d}/data/postgresql.conf'"
        ))?;
        if let Some((cert, key)) = tls {
            // Written here, copied by the cluster's owner (the key must be theirs, mode 0600).
            std::fs::write(c.dir.join("tls.crt"), cert).map_err(|e| e.to_string())?;
            std::fs::write(c.dir.join("tls.key"), key).map_err(|e| e.to_string())?;
            c.run(&format!(
                "cp '{d}/tls.crt' '{d}/data/server.crt' && cp '{d}/tls.key' '{d}/data/server.key' && \
                 chmod 600 '{d}/data/server.key' && \
                 printf \"ssl = on\\n\" >> '{d}/data/postgresql.conf' && \
                 printf \"local all all trust\\nhostssl all all 127.0.0.1/32 trust\\n\
                 hostnossl all all 127.0.0.1/32 reject\\n\" > '{d}/data/pg_hba.conf'"
            ))?;
        }
        c.ctl("start")?;
        // A watchdog stops and removes the cluster if this process dies without dropping it.
        let me = std::process::id();
        let _ = sh(
            &format!(
                "while [ -d /proc/{me} ]; do sleep 1; done; \
                 '{b}/pg_ctl' -D '{d}/data' -m immediate stop >/dev/null 2>&1; rm -rf '{d}'"
            ),
            c.root,
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
        match tls {
            // Plain connections are refused: probe over TLS (any certificate).
            Some(_) => wait_ready(&format!("{}?sslmode=require", c.url))?,
            None => wait_ready(&c.url)?,
        }
        Ok(c)
    }

    fn run(&self, script: &str) -> Result<(), String> {
        let ok = sh(script, self.root)
            .status()
            .map_err(|e| e.to_string())?
            .success();
        if ok {
            Ok(())
        } else {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            Err(format!("`{script}` failed; server log: {log}"))
        }
    }

    fn ctl(&self, what: &str) -> Result<(), String> {
        let (b, d) = (self.bin.display(), self.dir.display());
        self.run(&format!(
            "'{b}/pg_ctl' -D '{d}/data' -l '{d}/server.log' -w -t 60 -m fast {what} >/dev/null 2>&1"
        ))
    }

    /// `pg_ctl restart -m fast`: every connection is cut; returns once the server accepts
    /// connections again.
    pub fn restart(&self) {
        self.ctl("restart").expect("pg_ctl restart");
        wait_ready(&self.url).expect("the restarted server answers");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.ctl("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
