#!/usr/bin/env python3
"""The scale benchmark of issue 15 (server/bench/scale.sh runs it; results in BENCHMARKS.md,
"Beyond one machine").

Starts, all on 127.0.0.1 and all private to this run:
  - a PostgreSQL cluster in a temporary folder (Debian's binaries, as the tests do), with
    pg_stat_statements loaded; fsync as PostgreSQL ships it unless --pg-fsync off;
  - moto in server mode (target/moto-venv, tests/services/s3.sh installs it) as the S3 server;
  - release `cairn serve` processes, each with a bearer token (as a deployment would run).

Then, for each configuration, a fresh store and the same wrk load (server/bench/*.lua, one wrk
process, WRK_THREADS threads and CONNS connections spread over the servers):
  embedded  one server on its embedded default store (the baseline, same run);
  pg1       one server, --metadata postgres:// --content s3://;
  pg3       three servers on the same database and bucket.
Each phase (put 1 KiB into one session, put 1 KiB into 64 sessions, get 1 KiB by id, query) prints one JSON line: requests/s, p50/p99, errors,
the CPU seconds each component used during the phase (servers, PostgreSQL, moto, wrk), the SQL
statements PostgreSQL ran (pg_stat_statements) and the load average before and after.

Last, the cost phase: one server whose PostgreSQL and S3 connections go through a counting
proxy in this process; N requests of each kind, one at a time, measure per request the round
trips (a response after a request on a connection: one turn), the bytes each way, the
statements by kind and the CPU time of each component.

Every loop is bounded: wrk runs for SECS seconds; preparation and the cost phase make a fixed
number of requests; every wait has a deadline. Everything started is stopped on exit.
Only the Python standard library is used.
"""

import argparse
import asyncio
import http.client
import json
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH = os.path.join(ROOT, "server", "bench")
BUCKET = "cairn-bench"
TENANT = "bench"
# Sessions the put_many phase spreads its puts over.
SESSIONS = 64
TICKS = os.sysconf("SC_CLK_TCK")
CHILDREN = []  # (name, Popen) to stop at exit
CLEANUP = []  # callables run at exit, last first


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def emit(obj):
    print(json.dumps(obj, separators=(",", ":")), flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, secs):
    deadline = time.monotonic() + secs
    last = None
    while time.monotonic() < deadline:
        try:
            r = check()
            if r:
                return r
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = e
        time.sleep(0.1)
    raise SystemExit(f"{what} did not come up within {secs} s (last error: {last})")


def cleanup():
    for name, p in reversed(CHILDREN):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop on SIGTERM; killing it")
                p.kill()
                p.wait(timeout=10)
    CHILDREN.clear()
    for f in reversed(CLEANUP):
        try:
            f()
        except Exception as e:  # noqa: BLE001 - keep cleaning up
            log(f"cleanup step failed: {e}")
    CLEANUP.clear()


# ---------------------------------------------------------------- CPU accounting (/proc)


def _stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    rest = s[s.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime is field 14 -> rest[11].
    ppid = int(rest[1])
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return ppid, utime + stime, cutime + cstime


def tree_cpu(root):
    """CPU seconds used by `root` and all its descendants, live or already reaped."""
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                parents[int(d)] = _stat(int(d))
            except (OSError, ValueError, IndexError):
                pass
    total = 0
    todo = [root]
    seen = set()
    while todo:
        p = todo.pop()
        if p in seen or p not in parents:
            continue
        seen.add(p)
        _, own, reaped = parents[p]
        total += own + reaped
        todo.extend(c for c, (pp, _, _) in parents.items() if pp == p)
    return total / TICKS


def cpu_snapshot(groups):
    return {name: sum(tree_cpu(p) for p in pids) for name, pids in groups.items()}


def wrk_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------- PostgreSQL


class Postgres:
    def __init__(self, fsync):
        self.bin = next(
            (
                f"/usr/lib/postgresql/{v}/bin"
                for v in ("17", "16", "15", "14")
                if os.path.exists(f"/usr/lib/postgresql/{v}/bin/initdb")
            ),
            None,
        )
        if self.bin is None:
            raise SystemExit("no PostgreSQL server binaries: run tests/services/postgres.sh")
        self.root = os.geteuid() == 0
        self.dir = tempfile.mkdtemp(prefix="cairn-scale-pg-")
        CLEANUP.append(lambda: shutil.rmtree(self.dir, ignore_errors=True))
        if self.root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        self.as_pg(
            f"'{self.bin}/initdb' -D '{self.dir}/data' -U cairn --auth=trust -E UTF8 "
            f">'{self.dir}/initdb.log' 2>&1"
        )
        conf = (
            f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{self.dir}'\nmax_connections = 300\n"
            "max_pred_locks_per_transaction = 256\n"
            "shared_preload_libraries = 'pg_stat_statements'\n"
            "pg_stat_statements.track = all\npg_stat_statements.max = 5000\n"
            f"fsync = {fsync}\n"
        )
        self.as_pg(f"printf \"{conf}\" >> '{self.dir}/data/postgresql.conf'")
        self.as_pg(
            f"'{self.bin}/pg_ctl' -D '{self.dir}/data' -l '{self.dir}/server.log' -w -t 60 start "
            ">/dev/null"
        )
        CLEANUP.append(self.stop)
        with open(f"{self.dir}/data/postmaster.pid") as f:
            self.pid = int(f.readline())
        self.base = f"postgres://cairn@127.0.0.1:{self.port}"
        self.sql("postgres", "CREATE EXTENSION pg_stat_statements")
        self.version = self.sql("postgres", "SHOW server_version")

    def as_pg(self, script):
        cmd = ["runuser", "-u", "postgres", "--", "sh", "-c", script] if self.root else [
            "sh", "-c", script]
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, timeout=120)

    def stop(self):
        self.as_pg(f"'{self.bin}/pg_ctl' -D '{self.dir}/data' -m fast -w -t 60 stop >/dev/null")

    def sql(self, db, q):
        r = subprocess.run(
            ["psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", "cairn", "-d", db, "-c", q],
            check=True, capture_output=True, text=True, timeout=60)
        return r.stdout.strip()

    def new_db(self, name):
        self.sql("postgres", f"CREATE DATABASE {name}")
        return f"{self.base}/{name}"

    def reset_statements(self):
        self.sql("postgres", "SELECT pg_stat_statements_reset()")

    def statements(self, db):
        """{normalized statement: calls} for database `db` since the last reset."""
        out = self.sql(
            "postgres",
            "SELECT coalesce(json_object_agg(query, calls), '{}') FROM (SELECT "
            "regexp_replace(query, 'cairn_[a-z0-9_]+', 'T', 'g') AS query, sum(calls) AS calls "
            "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            f"WHERE d.datname = '{db}' GROUP BY 1) x")
        return json.loads(out)

    def sessions(self, db):
        """Connections to `db` that have ended (pg_stat_database.sessions, PostgreSQL 14+)."""
        return int(self.sql("postgres",
                            f"SELECT sessions FROM pg_stat_database WHERE datname = '{db}'"))

    def db_size(self, db):
        return int(self.sql("postgres", f"SELECT pg_database_size('{db}')"))


def classify(stmts):
    """Statement calls grouped by kind: get, scan, upsert, delete, begin, commit, rollback,
    notify, set (transaction settings), other."""
    kinds = {}
    for q, n in stmts.items():
        ql = q.strip().lower()
        if ql.startswith("select pg_stat_statements_reset"):
            continue
        if ql.startswith("begin") or ql.startswith("start transaction"):
            k = "begin"
        elif ql.startswith("commit"):
            k = "commit"
        elif ql.startswith("rollback"):
            k = "rollback"
        elif "pg_notify" in ql:
            k = "notify"
        elif ql.startswith("set"):
            k = "set"
        elif ql.startswith("insert"):
            k = "upsert"
        elif ql.startswith("delete"):
            k = "delete"
        elif ql.startswith("select") and "limit" in ql:
            k = "scan"
        elif ql.startswith("select"):
            k = "get"
        else:
            k = "other"
        kinds[k] = kinds.get(k, 0) + int(n)
    return kinds


# ---------------------------------------------------------------- moto (S3)


def start_moto(moto_bin):
    port = free_port()
    logf = open(os.path.join(TMP, "moto.log"), "w")
    p = subprocess.Popen([moto_bin, "-H", "127.0.0.1", "-p", str(port)],
                         stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    CHILDREN.append(("moto", p))

    def make_bucket():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        c.request("PUT", f"/{BUCKET}")
        s = c.getresponse().status
        c.close()
        return s < 300 or s == 409

    wait_for("moto", make_bucket, 60)
    return p, port


# ---------------------------------------------------------------- cairn serve


def cairn_bin():
    return os.path.join(ROOT, "target", "release", "cairn")


def token(data, metadata):
    cmd = [cairn_bin(), "token", "create", "--tenant", TENANT, "--data", data]
    if metadata:
        cmd += ["--metadata", metadata]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout
    return out.splitlines()[0].strip()


def serve(name, data, env, metadata=None, content=None):
    cmd = [cairn_bin(), "serve", "--listen", "127.0.0.1:0", "--data", data]
    if metadata:
        cmd += ["--metadata", metadata]
    if content:
        cmd += ["--content", content]
    errf = open(os.path.join(TMP, f"{name}.log"), "w")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, stdin=subprocess.DEVNULL,
                         env=env, text=True)
    CHILDREN.append((name, p))
    line = p.stdout.readline()
    url = next((w for w in line.split() if w.startswith("http://")), None)
    if url is None:
        raise SystemExit(f"{name}: no URL on its first stdout line ({line!r}); see {errf.name}")
    # Drain stdout so that the server never blocks on a full pipe.
    threading.Thread(target=lambda: p.stdout.read(), daemon=True).start()
    return p, url.rstrip("/")


def stop(name, p):
    p.terminate()
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop within 30 s of SIGTERM; killing it")
        p.kill()
        p.wait(timeout=10)
    for i, (n, q) in enumerate(CHILDREN):
        if q is p:
            del CHILDREN[i]
            break


class Http:
    """One keep-alive HTTP/1.1 connection with the bearer token."""

    def __init__(self, url, tok):
        host, port = url.removeprefix("http://").split(":")
        self.c = http.client.HTTPConnection(host, int(port), timeout=60)
        self.h = {"Authorization": f"Bearer {tok}"}

    def call(self, method, path, body=None, ctype=None, want=200):
        h = dict(self.h)
        if ctype:
            h["Content-Type"] = ctype
        self.c.request(method, path, body=body, headers=h)
        r = self.c.getresponse()
        data = r.read()
        if r.status != want:
            raise SystemExit(f"{method} {path}: HTTP {r.status} (wanted {want}): {data[:300]!r}")
        return data


def body_1k(i, t):
    b = f"{i:08d}-{t:04d}-".encode()
    return b + b"x" * (1024 - len(b))


def prepare(url, tok, n, ids_file):
    """A session and n 1 KiB artifacts doc-0..doc-{n-1}; writes the session id then the ids."""
    h = Http(url, tok)
    s = json.loads(h.call("POST", "/v1/sessions", json.dumps({"name": "load"}),
                          "application/json", want=201))
    sid = s["id"]
    ids = []
    for i in range(n):
        a = json.loads(h.call("PUT", f"/v1/sessions/{sid}/artifacts/doc-{i}?kind=tool_result",
                              body_1k(i, 9999), "application/octet-stream", want=201))
        ids.append(a["id"])
    with open(ids_file, "w") as f:
        f.write(sid + "\n" + "\n".join(ids) + "\n")
    # SESSIONS more sessions for put_many.lua (one agent per session).
    with open(ids_file + ".sessions", "w") as f:
        for i in range(SESSIONS):
            s = json.loads(h.call("POST", "/v1/sessions", json.dumps({"name": f"agent-{i}"}),
                                  "application/json", want=201))
            f.write(s["id"] + "\n")
    return sid, ids


# ---------------------------------------------------------------- one configuration under wrk


def wrk_phase(cfg, op, script, arg, urls, tok, groups, pg, db, secs, threads, conns):
    env = dict(os.environ, CAIRN_BENCH_DIR=BENCH, CAIRN_BENCH_TOKEN=tok,
               CAIRN_BENCH_ADDRS=",".join(u.removeprefix("http://") for u in urls))
    if pg and db:
        pg.reset_statements()
        s0 = pg.sessions(db)
    la0 = loadavg()
    c0, w0 = cpu_snapshot(groups), wrk_cpu()
    r = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--timeout", "10s", "--latency",
         "-s", os.path.join(BENCH, script), urls[0], "--", arg],
        env=env, capture_output=True, text=True, timeout=secs + 120)
    c1, w1 = cpu_snapshot(groups), wrk_cpu()
    la1 = loadavg()
    line = next((l for l in r.stdout.splitlines() if l.startswith("{")), None)
    if r.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({r.returncode}): {r.stdout} {r.stderr}")
    w = json.loads(line)
    n = max(w["requests"], 1)
    cpu = {k: round(c1[k] - c0[k], 2) for k in c0}
    cpu["wrk"] = round(w1 - w0, 2)
    out = {
        "config": cfg, "servers": len(urls), "op": op, "wrk": w,
        "cpu_s": cpu,
        "cpu_us_per_req": {k: round(v * 1e6 / n) for k, v in cpu.items()},
        "cpu_busy_cores": round(sum(cpu.values()) / w["secs"], 2),
        "loadavg_before": la0, "loadavg_after": la1,
    }
    if pg and db:
        kinds = classify(pg.statements(db))
        out["sql_per_req"] = {k: round(v / n, 2) for k, v in sorted(kinds.items())}
        out["pg_connections_closed"] = pg.sessions(db) - s0
    emit(out)
    return out


def run_config(cfg, nservers, args, pg, moto_port, groups_extra):
    data = [os.path.join(TMP, f"{cfg}-data{i}") for i in range(nservers)]
    for d in data:
        os.makedirs(d)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{moto_port}")
    db = metadata = content = None
    if cfg != "embedded":
        db = f"scale_{cfg}"
        metadata = pg.new_db(db)
        content = f"s3://{BUCKET}/{cfg}"
    tok = token(data[0], metadata)
    procs, urls = [], []
    for i, d in enumerate(data):
        p, u = serve(f"{cfg}-serve{i}", d, env, metadata, content)
        procs.append(p)
        urls.append(u)
    t0 = time.monotonic()
    sid, _ = prepare(urls[0], tok, args.prepare, os.path.join(TMP, f"{cfg}.ids"))
    log(f"  {cfg}: {nservers} server(s) at {', '.join(urls)}; prepared {args.prepare} "
        f"artifacts in {time.monotonic() - t0:.1f} s")
    groups = {"servers": [p.pid for p in procs]}
    if cfg != "embedded":
        groups.update(groups_extra)
    rows = []
    for op, script, arg in (("put_1k", "put.lua", sid),
                            ("put_1k_64_sessions", "put_many.lua",
                             os.path.join(TMP, f"{cfg}.ids.sessions")),
                            ("get_1k", "get.lua", os.path.join(TMP, f"{cfg}.ids")),
                            ("query", "query.lua", sid)):
        rows.append(wrk_phase(cfg, op, script, arg, urls, tok, groups,
                              pg if db else None, db, args.secs, args.wrk_threads, args.conns))
    rss = []
    for p in procs:
        with open(f"/proc/{p.pid}/status") as f:
            rss += [int(l.split()[1]) for l in f if l.startswith("VmHWM:")]
    emit({"config": cfg, "server_peak_rss_kib": rss,
          "db_bytes": pg.db_size(db) if db else None})
    for i, p in enumerate(procs):
        stop(f"{cfg}-serve{i}", p)
    return rows


# ---------------------------------------------------------------- the counting proxy


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.conns = 0
        self.up = 0  # bytes client -> server
        self.down = 0  # bytes server -> client
        self.turns = 0  # a response after a request on one connection: one round trip

    def snap(self):
        with self.lock:
            return {"conns": self.conns, "turns": self.turns, "bytes_up": self.up,
                    "bytes_down": self.down}


class Proxy:
    """A TCP proxy on a free loopback port to 127.0.0.1:target, counting as it forwards."""

    def __init__(self, loop, target):
        self.counts = Counts()
        self.target = target
        self.port = free_port()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self.handle, "127.0.0.1", self.port), loop)
        self.server = fut.result(timeout=10)

    async def handle(self, reader, writer):
        c = self.counts
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        with c.lock:
            c.conns += 1
        last = [None]

        async def pipe(src, dst, up):
            try:
                while True:
                    data = await src.read(1 << 16)
                    if not data:
                        break
                    with c.lock:
                        if up:
                            c.up += len(data)
                        else:
                            c.down += len(data)
                            if last[0] == "up":
                                c.turns += 1
                        last[0] = "up" if up else "down"
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                try:
                    dst.close()
                except Exception:  # noqa: BLE001 - already closed
                    pass

        await asyncio.gather(pipe(reader, uw, True), pipe(ur, writer, False))


def diff(a, b):
    return {k: b[k] - a[k] for k in a}


def cost_phase(args, pg, moto_port, groups_extra):
    """Per-request PostgreSQL and S3 traffic and CPU, one request at a time through proxies."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    pgp = Proxy(loop, pg.port)
    s3p = Proxy(loop, moto_port)
    db = "scale_cost"
    pg.new_db(db)
    metadata = f"postgres://cairn@127.0.0.1:{pgp.port}/{db}"
    data = os.path.join(TMP, "cost-data")
    os.makedirs(data)
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               AWS_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{s3p.port}")
    tok = token(data, metadata)
    p, url = serve("cost-serve", data, env, metadata, f"s3://{BUCKET}/cost")
    sid, ids = prepare(url, tok, args.prepare, os.path.join(TMP, "cost.ids"))
    groups = {"server": [p.pid]}
    groups.update(groups_extra)
    h = Http(url, tok)
    n = args.cost_n
    # Idle traffic over 2 s (background work of the server, if any).
    a = (pgp.counts.snap(), s3p.counts.snap())
    time.sleep(2)
    b = (pgp.counts.snap(), s3p.counts.snap())
    emit({"phase": "cost", "op": "idle_2s", "pg": diff(a[0], b[0]), "s3": diff(a[1], b[1])})

    q = f"/v1/artifacts?session={sid}&kind=tool_result&name=doc-1*&limit=20"
    ops = {
        "put_1k": lambda i: h.call("PUT", f"/v1/sessions/{sid}/artifacts/cost-{i}?kind=tool_result",
                                   body_1k(i, 7777), "application/octet-stream", want=201),
        "put_1k_same_name": lambda i: h.call(
            "PUT", f"/v1/sessions/{sid}/artifacts/same?kind=tool_result",
            body_1k(i, 6666), "application/octet-stream", want=201),
        "put_1k_dup_content": lambda i: h.call(
            "PUT", f"/v1/sessions/{sid}/artifacts/dup-{i}?kind=tool_result",
            body_1k(0, 5555), "application/octet-stream", want=201),
        "get_1k": lambda i: h.call("GET", f"/v1/artifacts/{ids[(i * 7919) % len(ids)]}/content"),
        "query": lambda i: h.call("GET", q),
        # Content of 64 KiB or more (encoded) goes to S3; random bytes do not compress.
        "put_256k_s3": lambda i: big.append(json.loads(h.call(
            "PUT", f"/v1/sessions/{sid}/artifacts/big-{i}?kind=file", os.urandom(256 << 10),
            "application/octet-stream", want=201))["id"]),
        "get_256k_s3": lambda i: h.call("GET", f"/v1/artifacts/{big[i % len(big)]}/content"),
    }
    big = []
    for op, f in ops.items():
        f(n + 1)  # warm this path (and the first S3 object for the dedup case) outside the count
        pg.reset_statements()
        a = (pgp.counts.snap(), s3p.counts.snap(), cpu_snapshot(groups))
        t0 = time.monotonic()
        for i in range(n):
            f(i)
        secs = time.monotonic() - t0
        b = (pgp.counts.snap(), s3p.counts.snap(), cpu_snapshot(groups))
        kinds = classify(pg.statements(db))
        emit({
            "phase": "cost", "op": op, "requests": n, "secs": round(secs, 2),
            "pg_per_req": {k: round(v / n, 2) for k, v in diff(a[0], b[0]).items()},
            "s3_per_req": {k: round(v / n, 2) for k, v in diff(a[1], b[1]).items()},
            "sql_per_req": {k: round(v / n, 2) for k, v in sorted(kinds.items())},
            "cpu_us_per_req": {k: round((b[2][k] - a[2][k]) * 1e6 / n) for k in a[2]},
            "loadavg": loadavg(),
        })
    stop("cost-serve", p)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--secs", type=int, default=10, help="seconds per wrk phase")
    ap.add_argument("--conns", type=int, default=30, help="wrk connections in all")
    ap.add_argument("--wrk-threads", type=int, default=3)
    ap.add_argument("--prepare", type=int, default=1000, help="1 KiB artifacts read by get/query")
    ap.add_argument("--cost-n", type=int, default=300, help="requests per kind in the cost phase")
    ap.add_argument("--configs", default="embedded,pg1,pg3")
    ap.add_argument("--pg-fsync", default="on", choices=["on", "off"])
    ap.add_argument("--no-cost", action="store_true")
    args = ap.parse_args()

    global TMP
    TMP = tempfile.mkdtemp(prefix="cairn-scale-")
    CLEANUP.append(lambda: shutil.rmtree(TMP, ignore_errors=True))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        moto_bin = os.environ.get("CAIRN_MOTO_SERVER",
                                  os.path.join(ROOT, "target", "moto-venv", "bin", "moto_server"))
        if not os.path.exists(moto_bin):
            raise SystemExit(f"no moto_server at {moto_bin}: run tests/services/s3.sh")
        if not os.path.exists(cairn_bin()):
            raise SystemExit("no target/release/cairn: cargo build --release -p cairn-cli")
        if shutil.which("wrk") is None:
            raise SystemExit("wrk not found: apt-get install -y wrk")
        pg = Postgres(args.pg_fsync)
        moto, moto_port = start_moto(moto_bin)
        extra = {"postgres": [pg.pid], "moto": [moto.pid]}
        emit({"start_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
              "cores": os.cpu_count(), "postgres": pg.version, "pg_fsync": args.pg_fsync,
              "secs": args.secs, "conns": args.conns, "wrk_threads": args.wrk_threads,
              "loadavg": loadavg()})
        for cfg in args.configs.split(","):
            n = {"embedded": 1, "pg1": 1, "pg3": 3}.get(cfg)
            if n is None:
                raise SystemExit(f"unknown configuration {cfg!r}: embedded, pg1 or pg3")
            run_config(cfg, n, args, pg, moto_port, extra)
        if not args.no_cost:
            cost_phase(args, pg, moto_port, extra)
        emit({"end_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "loadavg": loadavg()})
    finally:
        cleanup()


if __name__ == "__main__":
    main()
