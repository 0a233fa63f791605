#!/usr/bin/env python3
"""Fault-injection harness for Till (issue #4).

Runs a real `till serve` against a PostgreSQL cluster of its own, drives a write load
(placeOrder with an Idempotency-Key, unknown outcomes retried with the same key) and
injects faults:

  crash      kill -9 the server twice while writers run, restart it at once;
  db-outage  stop PostgreSQL under the running server for a while, then start it again.

After each scenario it checks that no acknowledged order was lost or duplicated, that
the read models converge to the write models, and the scenario's own expectations
(see the printed table). Exit status 1 when any check fails, 2 on a harness error.

Only the Python 3.11 standard library; all traffic goes to 127.0.0.1. Every process it
starts (the server, the cluster) is stopped by pid / data folder on exit, also on
Ctrl-C; the temporary folder is removed unless --keep is given.

    scripts/fault-harness.sh                      # both scenarios
    scripts/fault-harness.sh --scenario crash --seconds 60 --writers 8 --keep
"""

import argparse
import base64
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter

def _find_pg_bin():
    """PostgreSQL's server binaries: $PG_BIN, else the newest /usr/lib/postgresql/*/bin,
    else the folder of pg_ctl on PATH."""
    import glob
    import shutil
    if os.environ.get("PG_BIN"):
        return os.environ["PG_BIN"]
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(f"{d}/pg_ctl")]
    found.sort(key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0)
    if found:
        return found[-1]
    pg_ctl = shutil.which("pg_ctl")
    return os.path.dirname(pg_ctl) if pg_ctl else "/usr/lib/postgresql/15/bin"


PG_BIN = _find_pg_bin()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TILL = os.path.join(REPO, "target", "debug", "till")

# Order statuses whose sale the read models reverse (cancelled, expired, payment failed).
REVERSED = "('CANCELLED','EXPIRED','PAYMENT_FAILED')"
# Error codes after which the outcome of a placeOrder is unknown or transient: retried
# with the same Idempotency-Key. Every other code is a definitive answer.
RETRYABLE = {"SERVICE_UNAVAILABLE", "IDEMPOTENCY_IN_PROGRESS", "THROTTLED", "INTERNAL"}

PLACE_ORDER = (
    "mutation($p: ID!, $q: Int!) { placeOrder(input: {lines: [{productId: $p, quantity: $q}]}) "
    "{ orderId consistencyToken } }"
)
RESTOCK = "mutation($p: ID!, $q: Int!) { restockProduct(productId: $p, quantity: $q) { productId } }"
PROJECTIONS = "{ projections { name position lagEvents } }"

T0 = time.monotonic()
# Set while tearing down: a signal then only asks to stop, it does not interrupt cleanup.
CLEANING = threading.Event()
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def say(msg):
    print(f"[{time.monotonic() - T0:7.2f}s] {msg}", flush=True)


class HarnessError(Exception):
    pass


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gid(kind, raw_uuid):
    return base64.urlsafe_b64encode(f"{kind}:{raw_uuid}".encode()).decode().rstrip("=")


def ungid(global_id):
    pad = "=" * (-len(global_id) % 4)
    kind, _, raw = base64.urlsafe_b64decode(global_id + pad).decode().partition(":")
    return kind, raw


def http_once(port, method, path, body=None, headers=None, timeout=10.0):
    """One request on a fresh connection: (status, lower-cased headers, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def transport_kind(exc):
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "transport:timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "transport:refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return "transport:reset"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "transport:disconnected"
    return f"transport:{type(exc).__name__}"


def gql_headers(token=None, key=None):
    h = {"content-type": "application/json", "accept": "application/graphql-response+json"}
    if token:
        h["authorization"] = f"Bearer {token}"
    if key:
        h["idempotency-key"] = key
    return h


def error_code(doc):
    try:
        return doc["errors"][0]["extensions"]["code"]
    except (KeyError, IndexError, TypeError):
        return None


# --------------------------------------------------------------------------- PostgreSQL


class PgCluster:
    """A throw-away cluster in `root/pg`, run as the `postgres` user when we are root."""

    def __init__(self, root, port, name="pg"):
        self.dir = os.path.join(root, name)
        self.data = os.path.join(self.dir, "data")
        self.logfile = os.path.join(self.dir, "postgres.log")
        self.port = port
        self.initialised = False
        os.makedirs(self.dir)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o700)

    def _run(self, args, timeout=120):
        cmd = (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []) + args
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/")

    def _check(self, what, res):
        if res.returncode != 0:
            raise HarnessError(f"{what} failed ({res.returncode}): {res.stdout}{res.stderr}")

    def init(self):
        res = self._run([f"{PG_BIN}/initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
                         "-E", "UTF8", "--locale=C.UTF-8"])
        self._check("initdb", res)
        self.initialised = True

    def replicate(self, primary, apply_delay_ms):
        """A streaming replica of `primary` (base backup through a slot, standby.signal),
        replaying `apply_delay_ms` behind it."""
        res = self._run([f"{PG_BIN}/pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port),
                         "-U", "postgres", "-D", self.data, "-X", "stream", "-c", "fast",
                         "-C", "-S", "harness_replica", "-R"])
        self._check("pg_basebackup", res)
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as conf:
            conf.write(f"primary_slot_name = 'harness_replica'\n"
                       f"recovery_min_apply_delay = '{apply_delay_ms}ms'\n"
                       f"hot_standby_feedback = on\n")
        self.initialised = True

    def start(self):
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories=''"
        res = self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", self.logfile, "-o", opts,
                         "-w", "-t", "60", "start"])
        self._check("pg_ctl start", res)

    def stop(self, mode="fast"):
        res = self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop"])
        self._check("pg_ctl stop", res)

    def running(self):
        if not self.initialised:
            return False
        return self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "status"], timeout=30).returncode == 0

    def shutdown(self):
        """Best effort, for cleanup: fast, then immediate."""
        try:
            if self.running():
                try:
                    self.stop("fast")
                except Exception:
                    self.stop("immediate")
        except Exception as e:  # noqa: BLE001 - cleanup must go on
            say(f"warning: could not stop the cluster in {self.data}: {e}")

    def psql(self, sql, db="till"):
        env = dict(os.environ, PGCONNECT_TIMEOUT="5")
        res = subprocess.run(
            [f"{PG_BIN}/psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-F", "\t",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql],
            capture_output=True, text=True, timeout=60, env=env)
        if res.returncode != 0:
            raise HarnessError(f"psql failed: {sql}\n{res.stderr}")
        return [line.split("\t") for line in res.stdout.splitlines() if line != ""]

    def scalar(self, sql):
        rows = self.psql(sql)
        return rows[0][0] if rows else None


# --------------------------------------------------------------------------- the server


class TillServer:
    def __init__(self, binary, env, root, port):
        self.binary = binary
        self.env = env
        self.root = root
        self.logdir = os.path.join(root, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.port = port
        self.proc = None
        self.generation = 0
        self.logs = []

    def start(self):
        self.generation += 1
        path = os.path.join(self.logdir, f"till-{self.generation}.log")
        self.logs.append(path)
        with open(path, "ab") as out:
            self.proc = subprocess.Popen([self.binary, "serve"], env=self.env, cwd=self.root,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise HarnessError(f"till serve exited with {self.proc.returncode}; "
                                   f"log tail:\n{self.tail()}")
            try:
                status, _, _ = http_once(self.port, "GET", "/readyz", timeout=2)
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout=30):
        """SIGTERM (graceful drain), SIGKILL after `timeout`. Returns the exit code."""
        if not self.alive():
            return None if self.proc is None else self.proc.returncode
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return "killed after SIGTERM timeout"

    def tail(self, n=20):
        if not self.logs:
            return ""
        with open(self.logs[-1], "rb") as f:
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join(ANSI.sub("", line) for line in lines[-n:])

    def notable_log_lines(self, limit=12):
        """Distinct WARN/ERROR messages over all generations (timestamps stripped)."""
        seen = Counter()
        first = {}
        for path in self.logs:
            with open(path, "rb") as f:
                for line in f.read().decode(errors="replace").splitlines():
                    line = ANSI.sub("", line)
                    if not re.search(r"\b(WARN|ERROR)\b|panicked", line):
                        continue
                    msg = re.sub(r"^\S*\d{4}-\d\d-\d\dT\S+\s*", "", line)
                    msg = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<uuid>", msg)
                    msg = re.sub(r"\d+(\.\d+)?(ms|s|µs)\b", "<t>", msg)[:300]
                    seen[msg] += 1
                    first.setdefault(msg, os.path.basename(path))
        ranked = sorted(seen.items(), key=lambda kv: (not re.search(r"\bERROR\b|panicked", kv[0]), -kv[1]))
        return [(n, first[m], m) for m, n in ranked[:limit]], sum(seen.values())

    def local_ports(self):
        """Local TCP ports of the server's sockets (to tell its DB sessions from orphans)."""
        inodes = set()
        fd_dir = f"/proc/{self.proc.pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except FileNotFoundError:
            return set()  # the server is gone: every session left is an orphan
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            m = re.fullmatch(r"socket:\[(\d+)\]", target)
            if m:
                inodes.add(m.group(1))
        ports = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    next(f)
                    for line in f:
                        cols = line.split()
                        if cols[9] in inodes:
                            ports.add(int(cols[1].rsplit(":", 1)[1], 16))
            except FileNotFoundError:
                pass
        return ports


# --------------------------------------------------------------------------- load


class Attempt:
    __slots__ = ("t_send", "t_done", "status", "code", "latency", "replayed", "key", "message")

    def __init__(self, t_send, t_done, status, code, replayed, key, message=None):
        self.t_send, self.t_done, self.status, self.code = t_send, t_done, status, code
        self.latency = t_done - t_send
        self.replayed = replayed
        self.key = key
        self.message = message


class LogicalOrder:
    __slots__ = ("key", "body", "order_gid", "final_code", "attempts", "replayed", "t_ack")

    def __init__(self, key, body):
        self.key, self.body = key, body
        self.order_gid = None
        self.final_code = None
        self.attempts = 0
        self.replayed = False
        self.t_ack = None


class Client:
    """One keep-alive connection per writer. A request that fails on a connection left
    idle for more than STALE_AFTER seconds (one the server may have closed as idle) is
    re-sent once on a fresh one; any other transport failure is reported to the caller
    (an unknown outcome). The Idempotency-Key makes either re-send safe."""

    STALE_AFTER = 2.0

    def __init__(self, port, timeout):
        self.port, self.timeout = port, timeout
        self.conn = None
        self.used = False
        self.last_used = 0.0
        self.stale_resends = 0

    def close(self):
        if self.conn is not None:
            self.conn.close()
        self.conn, self.used = None, False

    def post(self, path, body, headers):
        for fresh_retry in (False, True):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                self.used = False
            reused = self.used and time.monotonic() - self.last_used > self.STALE_AFTER
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                self.used, self.last_used = True, time.monotonic()
                if resp.getheader("connection", "").lower() == "close":
                    self.close()
                return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if reused and not fresh_retry:
                    self.stale_resends += 1
                    continue
                raise e
            except Exception:
                self.close()
                raise
        raise AssertionError("unreachable")


class Load:
    """Writer threads placing orders as one shopper; every logical order has its own
    Idempotency-Key and is retried with that key until it gets a definitive answer."""

    def __init__(self, port, token, products, writers, timeout, stop_at, resolve_by, abort):
        self.port, self.token, self.products = port, token, products
        self.writers, self.timeout = writers, timeout
        self.stop_at, self.resolve_by = stop_at, resolve_by
        self.abort = abort
        self.lock = threading.Lock()
        self.orders = []
        self.attempts = []
        self.threads = []
        self.stale_resends = 0

    def start(self):
        for i in range(self.writers):
            t = threading.Thread(target=self._writer, args=(i,), name=f"writer-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def _writer(self, idx):
        rnd = random.Random(idx * 7919 + int(time.time()))
        client = Client(self.port, self.timeout)
        try:
            while time.monotonic() < self.stop_at and not self.abort.is_set():
                product = rnd.choice(self.products)
                body = json.dumps({"query": PLACE_ORDER,
                                   "variables": {"p": product, "q": rnd.randint(1, 3)}}).encode()
                order = LogicalOrder(str(uuid.uuid4()), body)
                with self.lock:
                    self.orders.append(order)
                self.resolve(client, order, self.resolve_by, rnd)
        finally:
            with self.lock:
                self.stale_resends += client.stale_resends
            client.close()

    def send(self, client, order):
        headers = gql_headers(self.token, order.key)
        t_send = time.monotonic()
        order.attempts += 1
        try:
            status, hdrs, data = client.post("/graphql", order.body, headers)
        except Exception as e:  # noqa: BLE001 - any transport failure: unknown outcome
            a = Attempt(t_send, time.monotonic(), None, transport_kind(e), False, order.key)
            with self.lock:
                self.attempts.append(a)
            return a, None, {}
        t_done = time.monotonic()
        replayed = hdrs.get("idempotent-replayed", "").lower() == "true"
        try:
            doc = json.loads(data)
        except ValueError:
            doc = None
        gid_ = None
        if isinstance(doc, dict):
            gid_ = ((doc.get("data") or {}).get("placeOrder") or {}).get("orderId")
        code = "ok" if gid_ else (error_code(doc) or f"HTTP_{status}_no_code")
        message = None
        if code != "ok":
            try:
                message = str(doc["errors"][0].get("message"))[:160]
            except (KeyError, IndexError, TypeError, AttributeError):
                message = data[:160].decode(errors="replace")
        a = Attempt(t_send, t_done, status, code, replayed, order.key, message)
        with self.lock:
            self.attempts.append(a)
        return a, gid_, hdrs

    def resolve(self, client, order, deadline, rnd):
        backoff = 0.05
        while True:
            a, gid_, hdrs = self.send(client, order)
            if gid_:
                order.order_gid, order.replayed, order.t_ack = gid_, a.replayed, a.t_done
                return True
            if not (a.code.startswith("transport:") or a.code in RETRYABLE
                    or a.code.startswith("HTTP_5")):
                order.final_code = a.code
                return True
            if time.monotonic() > deadline or self.abort.is_set():
                return False
            pause = backoff * (0.5 + rnd.random())
            try:
                pause = max(pause, min(float(hdrs.get("retry-after", 0)), 1.0))
            except ValueError:
                pass
            time.sleep(pause)
            backoff = min(backoff * 2, 0.5)

    def resolve_leftovers(self, deadline):
        """Re-send every unresolved logical order (same key, same body) until answered."""
        left = [o for o in self.orders if o.order_gid is None and o.final_code is None]
        client = Client(self.port, self.timeout)
        rnd = random.Random(1)
        for o in left:
            self.resolve(client, o, deadline, rnd)
        client.close()
        return len(left)


class Monitor:
    """Polls /healthz and /readyz (one thread each) every `interval` seconds:
    samples are (t_send, path, status|error, latency)."""

    def __init__(self, port, interval=0.1):
        self.port, self.interval = port, interval
        self.samples = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(path,), name=f"monitor{path}", daemon=True)
                        for path in ("/healthz", "/readyz")]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self, timeout):
        self.stop.set()
        for t in self.threads:
            t.join(timeout)

    def _run(self, path):
        while not self.stop.is_set():
            t = time.monotonic()
            try:
                status, _, _ = http_once(self.port, "GET", path, timeout=10)
            except Exception as e:  # noqa: BLE001
                status = transport_kind(e)
            self.samples.append((t, path, status, time.monotonic() - t))
            self.stop.wait(self.interval)


# --------------------------------------------------------------------------- checks


class Report:
    def __init__(self):
        self.rows = []

    def check(self, scenario, name, ok, detail=""):
        self.rows.append((scenario, name, bool(ok), detail))
        say(f"{'PASS' if ok else 'FAIL'}  {scenario}: {name}  {detail}")
        return ok

    def failed(self):
        return [r for r in self.rows if not r[2]]

    def table(self):
        w1 = max([len("scenario")] + [len(r[0]) for r in self.rows])
        w2 = max([len("check")] + [len(r[1]) for r in self.rows])
        out = [f"{'scenario':<{w1}}  {'check':<{w2}}  result  detail",
               f"{'-' * w1}  {'-' * w2}  ------  ------"]
        for sc, name, ok, detail in self.rows:
            out.append(f"{sc:<{w1}}  {name:<{w2}}  {'PASS' if ok else 'FAIL':<6}  {detail}")
        return "\n".join(out)


def describe(attempts, origin, origin_name, limit=3):
    """A few attempts with their timing relative to `origin` (for FAIL details)."""
    return "; ".join(
        f"{x.code} HTTP {x.status} sent {x.t_send - origin:+.2f}s answered {x.t_done - origin:+.2f}s "
        f"from {origin_name} key {x.key}" + (f" message {x.message!r}" if x.message else "")
        for x in attempts[:limit])


def fmt_counter(c):
    return ", ".join(f"{k}={v}" for k, v in sorted(c.items(), key=lambda kv: (-kv[1], str(kv[0])))) or "none"


class Scenario:
    """Common set-up: own cluster, database, server, tokens, restocked products."""

    name = "?"

    def __init__(self, args, binary, report, abort):
        self.args, self.binary, self.report, self.abort = args, binary, report, abort
        self.root = None
        self.cluster = None
        self.replica = None
        self.server = None
        self.secret = base64.b32encode(os.urandom(30)).decode()[:48]

    def check(self, name, ok, detail=""):
        return self.report.check(self.name, name, ok, detail)

    # -- set-up / tear-down

    def setup(self):
        self.root = tempfile.mkdtemp(prefix=f"till-fault-{self.name}-")
        os.chmod(self.root, 0o755)
        say(f"{self.name}: work folder {self.root}")
        self.cluster = PgCluster(self.root, free_port())
        self.cluster.init()
        self.cluster.start()
        self.cluster.psql("CREATE DATABASE till", db="postgres")
        say(f"{self.name}: PostgreSQL 15 on 127.0.0.1:{self.cluster.port}")
        if self.args.replica_delay_ms is not None:
            self.replica = PgCluster(self.root, free_port(), name="replica")
            self.replica.replicate(self.cluster, self.args.replica_delay_ms)
            self.replica.start()
            say(f"{self.name}: streaming replica on 127.0.0.1:{self.replica.port}, "
                f"replaying {self.args.replica_delay_ms} ms behind")
        self.http_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TILL_", "DATABASE_URL", "PG"))}
        env.update({
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{self.cluster.port}/till",
            "TILL_LISTEN": f"127.0.0.1:{self.http_port}",
            "TILL_JWT_SECRET": self.secret,
            "TILL_MODE": "dev",
            # A database of the harness's own, not the embedded one: the demo accounts
            # its writers sign in with are asked for by name.
            "TILL_SEED_DEMO": "true",
            # The harness checks invariants under faults, not quotas: its few writers
            # would otherwise spend their buckets and see THROTTLED.
            "TILL_RATE_LIMIT": "false",
            "RUST_LOG": "warn",
            "NO_COLOR": "1",
        })
        if self.replica is not None:
            env["TILL_READ_DATABASE_URLS"] = f"postgres://postgres@127.0.0.1:{self.replica.port}/till"
        for kv in self.args.server_env:
            k, _, v = kv.partition("=")
            env[k] = v
        self.server = TillServer(self.binary, env, self.root, self.http_port)
        pid = self.server.start()
        if not self.server.wait_ready(120):
            raise HarnessError(f"till serve (pid {pid}) not ready in 120 s:\n{self.server.tail()}")
        say(f"{self.name}: till serve pid {pid} ready on 127.0.0.1:{self.http_port}")
        shopper = self.cluster.scalar("SELECT id FROM customers WHERE email='shopper@till.dev'")
        staff = self.cluster.scalar("SELECT id FROM customers WHERE email='staff@till.dev'")
        if not shopper or not staff:
            raise HarnessError("demo accounts shopper@till.dev / staff@till.dev not found")
        self.shopper_id = shopper
        self.shopper_token = self.token("customer", shopper)
        self.staff_token = self.token("staff", staff)
        rows = self.cluster.psql("SELECT id FROM products WHERE status='ACTIVE' ORDER BY sku")
        self.products = [gid("Product", r[0]) for r in rows]
        if not self.products:
            raise HarnessError("no ACTIVE products in the demo catalog")
        for p in self.products:
            doc = self.gql(RESTOCK, {"p": p, "q": 100000}, self.staff_token)
            if not ((doc.get("data") or {}).get("restockProduct") or {}).get("productId"):
                raise HarnessError(f"restock failed: {doc}")
        say(f"{self.name}: {len(self.products)} products restocked (+100000 each)")

    def teardown(self):
        CLEANING.set()
        try:
            self._teardown()
        finally:
            CLEANING.clear()

    def _teardown(self):
        if self.server is not None:
            try:
                code = self.server.stop()
                if code is not None:
                    say(f"{self.name}: till serve stopped (exit {code})")
            except Exception as e:  # noqa: BLE001
                say(f"warning: stopping till serve: {e}")
        if self.replica is not None:
            self.replica.shutdown()
        if self.cluster is not None:
            self.cluster.shutdown()
        if self.root:
            if self.args.keep:
                say(f"{self.name}: kept {self.root} (server logs in logs/, PostgreSQL log in pg/)")
            else:
                shutil.rmtree(self.root, ignore_errors=True)

    def token(self, role, sub):
        res = subprocess.run([self.binary, "token", "--role", role, "--sub", sub,
                              "--ttl-minutes", "240", "--jwt-secret", self.secret],
                             capture_output=True, text=True, timeout=60, cwd=self.root)
        lines = [line.strip() for line in res.stdout.splitlines() if line.strip()]
        if res.returncode != 0 or not lines:
            raise HarnessError(f"till token failed: {res.stdout}{res.stderr}")
        return lines[-1]

    def gql(self, query, variables=None, token=None, timeout=10):
        status, _, data = http_once(self.http_port, "POST", "/graphql",
                                    json.dumps({"query": query, "variables": variables or {}}).encode(),
                                    gql_headers(token), timeout=timeout)
        try:
            return json.loads(data)
        except ValueError:
            raise HarnessError(f"non-JSON answer ({status}): {data[:200]!r}") from None

    def new_load(self, stop_at):
        return Load(self.http_port, self.shopper_token, self.products, self.args.writers,
                    self.args.client_timeout, stop_at, stop_at + self.args.resolve_grace, self.abort)

    # -- shared checks

    def load_summary(self, load, elapsed):
        acked = [o for o in load.orders if o.order_gid]
        definitive = Counter(o.final_code for o in load.orders if o.final_code)
        unresolved = [o for o in load.orders if o.order_gid is None and o.final_code is None]
        errors = Counter(a.code for a in load.attempts if a.code != "ok")
        retries = sum(max(0, o.attempts - 1) for o in load.orders)
        replays = sum(1 for o in acked if o.replayed)
        lat = sorted(a.latency for a in load.attempts)
        p = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0)
        say(f"{self.name}: load: {len(load.orders)} logical orders, {len(acked)} acknowledged "
            f"({len(acked) / max(elapsed, 0.001):.0f}/s), {retries} retries, {replays} replays, "
            f"{len(unresolved)} unresolved, definitive errors: {fmt_counter(definitive)}")
        say(f"{self.name}: errors by code (all attempts): {fmt_counter(errors)}")
        say(f"{self.name}: latency p50={p(0.5) * 1000:.0f}ms p99={p(0.99) * 1000:.0f}ms "
            f"max={lat[-1] * 1000 if lat else 0:.0f}ms; stale keep-alive re-sends: {load.stale_resends}")
        return acked, unresolved, errors, retries, replays

    def check_accounting(self, load):
        """No acknowledged order lost, none duplicated, no effect without its key."""
        acked = [o for o in load.orders if o.order_gid]
        unresolved = [o for o in load.orders if o.order_gid is None and o.final_code is None]
        self.check("every logical order got a definitive answer", not unresolved,
                   f"{len(load.orders)} orders, {len(unresolved)} unresolved after retries")
        ack_ids = {}
        bad_gids = []
        for o in acked:
            kind, raw = ungid(o.order_gid)
            if kind != "Order":
                bad_gids.append(o.order_gid)
            ack_ids.setdefault(raw, []).append(o.key)
        shared = {k: v for k, v in ack_ids.items() if len(v) > 1}
        self.check("each idempotency key -> its own order id", not shared and not bad_gids,
                   f"{len(acked)} acks, {len(ack_ids)} distinct order ids"
                   + (f"; ids shared by keys: {list(shared.items())[:3]}" if shared else "")
                   + (f"; bad ids: {bad_gids[:3]}" if bad_gids else ""))
        db_ids = {r[0] for r in self.cluster.psql(
            f"SELECT id FROM orders WHERE customer_id = '{self.shopper_id}'")}
        missing = set(ack_ids) - db_ids
        phantom = db_ids - set(ack_ids)
        self.check("no acknowledged order lost (all in orders)", not missing,
                   f"{len(ack_ids)} acknowledged, {len(missing)} missing"
                   + (f": {sorted(missing)[:3]}" if missing else ""))
        self.check("no duplicate/unacknowledged order in orders", not phantom,
                   f"{len(db_ids)} orders in DB, {len(phantom)} not acknowledged to any key"
                   + (f" ({len(unresolved)} keys unresolved)" if unresolved else ""))
        principal = f"user:{self.shopper_id}"
        rows = self.cluster.psql(
            "SELECT count(*) FILTER (WHERE outcome IS NOT NULL), count(*) FILTER (WHERE outcome IS NULL), "
            "count(*) FILTER (WHERE outcome IS NOT NULL AND response IS NULL) "
            f"FROM idempotency_keys WHERE principal = '{principal}'")
        with_outcome, no_outcome, no_response = (int(x) for x in rows[0])
        self.check("idempotency keys <-> orders (no key without effect)",
                   with_outcome == len(db_ids) and no_outcome == 0,
                   f"{with_outcome} keys with outcome, {no_outcome} without, {len(db_ids)} orders; "
                   f"{no_response} keys with outcome but no stored response")
        placed = int(self.cluster.scalar("SELECT count(*) FROM events WHERE event_type = 'OrderPlaced'"))
        total_orders = int(self.cluster.scalar("SELECT count(*) FROM orders"))
        self.check("one OrderPlaced event per order", placed == total_orders,
                   f"{placed} OrderPlaced events, {total_orders} orders")
        rows = self.cluster.psql(
            "SELECT p.sku, coalesce(i.reserved, 0), coalesce(s.q, 0) FROM products p "
            "LEFT JOIN inventory i ON i.product_id = p.id "
            "LEFT JOIN (SELECT l.product_id, sum(l.quantity) q FROM order_lines l "
            "  JOIN orders o ON o.id = l.order_id WHERE o.status = 'PENDING_PAYMENT' "
            "  GROUP BY 1) s ON s.product_id = p.id "
            "WHERE coalesce(i.reserved, 0) <> coalesce(s.q, 0)")
        self.check("inventory.reserved == units of open orders", not rows,
                   "per product" + (f"; mismatches (sku, reserved, open units): {rows[:4]}" if rows else ""))
        # A sample of acknowledged keys, sent again: same order id, marked as a replay.
        sample = random.sample(acked, min(len(acked), self.args.replay_sample))
        bad = []
        client = Client(self.http_port, self.args.client_timeout)
        for o in sample:
            try:
                status, hdrs, data = client.post("/graphql", o.body, gql_headers(self.shopper_token, o.key))
                doc = json.loads(data)
                got = ((doc.get("data") or {}).get("placeOrder") or {}).get("orderId")
                if got != o.order_gid or hdrs.get("idempotent-replayed", "").lower() != "true":
                    bad.append((o.key, status, got, hdrs.get("idempotent-replayed"), error_code(doc)))
            except Exception as e:  # noqa: BLE001
                bad.append((o.key, transport_kind(e)))
        client.close()
        after = int(self.cluster.scalar(f"SELECT count(*) FROM orders WHERE customer_id = '{self.shopper_id}'"))
        self.check("re-sent keys replay the same order", not bad and after == len(db_ids),
                   f"{len(sample)} re-sent, {len(bad)} wrong, orders {len(db_ids)} -> {after}"
                   + (f"; e.g. {bad[:2]}" if bad else ""))

    def wait_projections(self, bound):
        t = time.monotonic()
        last = None
        while time.monotonic() - t < bound:
            try:
                doc = self.gql(PROJECTIONS, token=self.staff_token)
                ps = (doc.get("data") or {}).get("projections")
                if ps:
                    last = ps
                    if all(p["lagEvents"] == 0 for p in ps):
                        return True, time.monotonic() - t, ps
                else:
                    last = doc.get("errors")
            except (OSError, HarnessError) as e:
                last = str(e)
            time.sleep(0.5)
        return False, time.monotonic() - t, last

    def read_model_diffs(self):
        c = self.cluster
        diffs = {}
        w = set(map(tuple, c.psql("SELECT id, status, total_minor FROM orders")))
        r = set(map(tuple, c.psql("SELECT id, status, total_minor FROM rm_order_view")))
        if w != r:
            diffs["orders"] = (f"orders={len(w)} rm_order_view={len(r)}; only write: {sorted(w - r)[:2]}; "
                               f"only read: {sorted(r - w)[:2]}")
        w = set(map(tuple, c.psql(
            "SELECT p.id, coalesce(i.on_hand, 0), coalesce(i.reserved, 0), "
            "coalesce(i.on_hand, 0) - coalesce(i.reserved, 0) "
            "FROM products p LEFT JOIN inventory i ON i.product_id = p.id")))
        r = set(map(tuple, c.psql("SELECT id, on_hand, reserved, available FROM rm_product_view")))
        if w != r:
            diffs["stock"] = f"only write: {sorted(w - r)[:2]}; only read: {sorted(r - w)[:2]}"
        w = c.psql(
            f"SELECT count(*), coalesce(sum(total_minor), 0) FROM orders WHERE status NOT IN {REVERSED}")[0]
        wu = c.scalar(
            "SELECT coalesce(sum(l.quantity), 0) FROM order_lines l JOIN orders o ON o.id = l.order_id "
            f"WHERE o.status NOT IN {REVERSED}")
        r = c.psql("SELECT coalesce(sum(orders_count), 0), coalesce(sum(revenue_minor), 0), "
                   "coalesce(sum(units), 0) FROM rm_sales_daily")[0]
        if (w[0], w[1], wu) != (r[0], r[1], r[2]):
            diffs["sales"] = (f"orders (count, revenue, units)=({w[0]}, {w[1]}, {wu}) "
                              f"rm_sales_daily=({r[0]}, {r[1]}, {r[2]})")
        w = set(map(tuple, c.psql(
            "SELECT l.product_id, sum(l.quantity), sum(l.quantity * l.unit_price_minor) "
            "FROM order_lines l JOIN orders o ON o.id = l.order_id "
            f"WHERE o.status NOT IN {REVERSED} GROUP BY 1")))
        r = set(map(tuple, c.psql(
            "SELECT product_id, units, revenue_minor FROM rm_product_sales WHERE units <> 0 OR revenue_minor <> 0")))
        if w != r:
            diffs["product_sales"] = f"only write: {sorted(w - r)[:2]}; only read: {sorted(r - w)[:2]}"
        w = set(map(tuple, c.psql(
            "SELECT customer_id, count(*), "
            f"coalesce(sum(total_minor) FILTER (WHERE status NOT IN {REVERSED}), 0) FROM orders GROUP BY 1")))
        r = set(map(tuple, c.psql(
            "SELECT customer_id, orders_count, lifetime_spend_minor FROM rm_customer_summary "
            "WHERE orders_count <> 0 OR lifetime_spend_minor <> 0")))
        if w != r:
            diffs["customers"] = f"only write: {sorted(w - r)[:2]}; only read: {sorted(r - w)[:2]}"
        return diffs

    def check_convergence(self):
        ok, took, state = self.wait_projections(self.args.converge_bound)
        if isinstance(state, list) and all(isinstance(p, dict) and "lagEvents" in p for p in state):
            lag = ", ".join(f"{p['name']} lag {p['lagEvents']}" for p in state)
        else:
            lag = str(state)[:200]
        self.check("projections caught up (lagEvents 0)", ok,
                   f"after {took:.1f}s (bound {self.args.converge_bound:.0f}s): {lag}")
        t = time.monotonic()
        diffs = self.read_model_diffs()
        while diffs and time.monotonic() - t < 10:
            time.sleep(1)
            diffs = self.read_model_diffs()
        extra = f" (equal only {time.monotonic() - t:.1f}s after lag 0)" if time.monotonic() - t > 0.5 and not diffs else ""
        names = {"orders": "rm_order_view == orders (id, status, total)",
                 "stock": "rm_product_view == inventory (on_hand, reserved, available)",
                 "sales": "rm_sales_daily == orders (count, revenue, units)",
                 "product_sales": "rm_product_sales == order_lines (units, revenue)",
                 "customers": "rm_customer_summary == orders (count, spend)"}
        counts = self.cluster.psql("SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM products)")[0]
        for key, label in names.items():
            self.check(label, key not in diffs,
                       diffs.get(key, f"equal ({counts[0]} orders, {counts[1]} products){extra}"))

    def check_no_orphans(self):
        """Every session on the database belongs to the live server; none idle in a transaction."""
        t = time.monotonic()
        while True:
            ports = self.server.local_ports()
            rows = self.cluster.psql(
                "SELECT pid, client_port, coalesce(state, ''), "
                "coalesce(extract(epoch FROM now() - xact_start)::int, 0) FROM pg_stat_activity "
                "WHERE datname = 'till' AND pid <> pg_backend_pid() AND backend_type = 'client backend'")
            orphans = [r for r in rows if r[1] and int(r[1]) not in ports]
            stuck = [r for r in rows if r[2].startswith("idle in transaction") and int(r[3]) > 5]
            if (not orphans and not stuck) or time.monotonic() - t > 15:
                break
            time.sleep(1)
        self.check("no orphan DB sessions (all owned by the live server)", not orphans and not stuck,
                   f"{len(rows)} sessions, {len(orphans)} not from pid {self.server.proc.pid}, "
                   f"{len(stuck)} idle in transaction > 5s" + (f": {(orphans + stuck)[:3]}" if orphans or stuck else ""))
        locks = self.cluster.psql(
            "SELECT l.pid, l.objid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted")
        lock_pids = {r[0] for r in locks}
        live_pids = {r[0] for r in rows if not (r[1] and int(r[1]) not in ports)}
        stray = lock_pids - live_pids
        self.check("advisory locks held only by live sessions", not stray,
                   f"{len(locks)} advisory locks" + (f"; held by non-server pids {sorted(stray)}" if stray else ""))

    def check_graceful_stop(self):
        t = time.monotonic()
        code = self.server.stop(timeout=30)
        took = time.monotonic() - t
        self.check("graceful stop (SIGTERM) exits 0", code == 0, f"exit {code} after {took:.1f}s")

    def check_pg_log(self):
        """PostgreSQL itself never crashed (no PANIC, no backend killed by a signal)."""
        try:
            with open(self.cluster.logfile, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
        except OSError as e:
            self.check("PostgreSQL log: no PANIC / backend crash", False, f"cannot read log: {e}")
            return
        levels = Counter()
        for line in lines:
            m = re.search(r"\b(PANIC|FATAL|ERROR|WARNING|LOG):", line)
            if m:
                levels[m.group(1)] += 1
        crashes = [line for line in lines if "PANIC:" in line or "terminated by signal" in line
                   or "database system was not properly shut down" in line]
        self.check("PostgreSQL log: no PANIC / backend crash", not crashes,
                   f"levels {fmt_counter(levels)}" + (f"; e.g. {crashes[0][:160]}" if crashes else ""))

    def report_server_log(self):
        lines, total = self.server.notable_log_lines()
        say(f"{self.name}: server log: {total} WARN/ERROR lines over {self.server.generation} start(s)"
            + ("" if not lines else "; most frequent:"))
        for n, where, msg in lines:
            print(f"      {n:>6}x [{where}] {msg}", flush=True)


class CrashScenario(Scenario):
    name = "crash"

    def run(self):
        a = self.args
        start = time.monotonic()
        stop_at = start + a.seconds
        load = self.new_load(stop_at)
        load.start()
        say(f"crash: {a.writers} writers for {a.seconds:.0f}s; kill -9 at "
            f"{a.seconds / 3:.0f}s and {2 * a.seconds / 3:.0f}s")
        gaps = []
        for frac in (1 / 3, 2 / 3):
            when = start + a.seconds * frac
            while time.monotonic() < when and not self.abort.is_set():
                time.sleep(0.05)
            if self.abort.is_set():
                break
            old = self.server.proc.pid
            in_flight_before = len(load.attempts)
            t_kill = time.monotonic()
            self.server.kill9()
            pid = self.server.start()
            ready = self.server.wait_ready(a.restart_bound * 4)
            t_ready = time.monotonic()
            gaps.append((t_kill, t_ready))
            say(f"crash: kill -9 {old} at {t_kill - start:.1f}s; restarted as {pid}, ready after "
                f"{t_ready - t_kill:.2f}s ({in_flight_before} attempts so far)")
            self.check(f"restart #{len(gaps)} after kill -9 ready within {a.restart_bound:.0f}s",
                       ready and t_ready - t_kill <= a.restart_bound,
                       f"/readyz 200 {t_ready - t_kill:.2f}s after the kill" if ready else "never ready")
            if not ready:
                raise HarnessError(f"server not ready after restart:\n{self.server.tail()}")
        if not load.join(a.seconds + a.resolve_grace + 30):
            self.abort.set()
            load.join(15)
            raise HarnessError("writers did not finish")
        elapsed = time.monotonic() - start
        leftovers = load.resolve_leftovers(time.monotonic() + 30)
        if leftovers:
            say(f"crash: re-sent {leftovers} unresolved logical orders after the load")
        acked, unresolved, errors, retries, replays = self.load_summary(load, elapsed)
        self.check("writes acknowledged during the run", len(acked) > 0,
                   f"{len(acked)} acks, {retries} retries, {replays} replays; errors: {fmt_counter(errors)}")
        slack = 1.0
        outside = [x for x in load.attempts if x.code.startswith("transport:")
                   and not any(k <= x.t_done <= r + slack for k, r in gaps)]
        self.check("transport errors only while the server was down", not outside,
                   f"{sum(1 for x in load.attempts if x.code.startswith('transport:'))} transport errors, "
                   f"{len(outside)} outside the kill gaps"
                   + (f": {fmt_counter(Counter(x.code for x in outside))}" if outside else ""))
        unexpected = Counter(x.code for x in load.attempts if x.code != "ok"
                             and not x.code.startswith("transport:")
                             and x.code not in ("SERVICE_UNAVAILABLE", "IDEMPOTENCY_IN_PROGRESS"))
        self.check("no unexpected error codes (INTERNAL, KEY_REUSED, ...)", not unexpected,
                   fmt_counter(unexpected) + ": " + describe(
                       [x for x in load.attempts if x.code in unexpected], start, "the start")
                   if unexpected else
                   f"codes seen: {fmt_counter(Counter(x.code for x in load.attempts if x.code != 'ok'))}")
        self.check_accounting(load)
        self.check_convergence()
        self.check_no_orphans()
        self.check_graceful_stop()
        self.check_pg_log()
        self.report_server_log()


class DbOutageScenario(Scenario):
    name = "db-outage"

    def run(self):
        a = self.args
        warmup, after = 5.0, 10.0
        start = time.monotonic()
        stop_at = start + warmup + a.outage_seconds + after
        mon = Monitor(self.http_port)
        mon.start()
        load = self.new_load(stop_at)
        load.start()
        say(f"db-outage: {a.writers} writers; PostgreSQL down from {warmup:.0f}s for {a.outage_seconds:.0f}s")
        while time.monotonic() < start + warmup and not self.abort.is_set():
            time.sleep(0.05)
        t_stop = time.monotonic()
        self.cluster.stop("fast")
        t_stopped = time.monotonic()
        say(f"db-outage: pg_ctl stop -m fast took {t_stopped - t_stop:.2f}s")
        while time.monotonic() < t_stop + a.outage_seconds and not self.abort.is_set():
            time.sleep(0.05)
        t_start = time.monotonic()
        self.cluster.start()
        t_back = time.monotonic()
        say(f"db-outage: pg_ctl start took {t_back - t_start:.2f}s; database back "
            f"{t_back - t_stop:.1f}s after the stop began")
        if not load.join(warmup + a.outage_seconds + after + a.resolve_grace + 30):
            self.abort.set()
            load.join(15)
            raise HarnessError("writers did not finish")
        mon.join(15)
        elapsed = time.monotonic() - start
        leftovers = load.resolve_leftovers(time.monotonic() + 30)
        if leftovers:
            say(f"db-outage: re-sent {leftovers} unresolved logical orders after the load")
        acked, unresolved, errors, retries, replays = self.load_summary(load, elapsed)

        # During the outage: answered quickly, with SERVICE_UNAVAILABLE, by a live server.
        window = [x for x in load.attempts if x.t_done >= t_stop and x.t_send <= t_back]
        codes = Counter(x.code for x in window)
        statuses = Counter(f"{x.status}:{x.code}" for x in window if x.code != "ok")
        bad = Counter(x.code for x in window if x.code not in ("ok", "SERVICE_UNAVAILABLE"))
        # A request sent before the stop completed may have committed first and still be
        # finishing (storing its idempotent response waits for a connection): fine.
        ok_before = sum(1 for x in window if x.code == "ok" and x.t_send <= t_stopped
                        and x.t_done < t_start)
        ok_after = sum(1 for x in window if x.code == "ok" and x.t_done >= t_start)
        ok_down = codes.get("ok", 0) - ok_before - ok_after
        self.check("outage: placeOrder answered SERVICE_UNAVAILABLE", window and not bad and not ok_down
                   and codes.get("SERVICE_UNAVAILABLE", 0) > 0,
                   f"{len(window)} attempts; HTTP status:code {fmt_counter(statuses)}"
                   + (f"; ok, sent before the stop completed={ok_before}" if ok_before else "")
                   + (f"; ok once restarting={ok_after}" if ok_after else "")
                   + (f"; ok while down (!)={ok_down}" if ok_down else "")
                   + (f"; unexpected: {fmt_counter(bad)}: "
                      + describe([x for x in window if x.code in bad], t_stop, "the stop") if bad else ""))
        lat = sorted(x.latency for x in window)
        max_lat = lat[-1] if lat else 0.0
        self.check(f"outage: no request hangs (max latency <= {a.max_latency:.0f}s)",
                   lat and max_lat <= a.max_latency,
                   f"max {max_lat:.2f}s, p50 {lat[len(lat) // 2] if lat else 0:.3f}s, "
                   f"{sum(1 for v in lat if v > a.max_latency)} over the bound (client timeout {a.client_timeout:.0f}s)")
        health = [s for s in mon.samples if s[1] == "/healthz"]
        bad_health = [s for s in health if s[2] != 200]
        alive = self.server.alive()
        self.check("outage: server alive, /healthz 200 throughout", alive and health and not bad_health,
                   f"{len(health)} probes, {len(bad_health)} not 200"
                   + (f" e.g. {[(round(s[0] - start, 1), s[2]) for s in bad_health[:3]]}" if bad_health else "")
                   + ("" if alive else f"; server exited with {self.server.proc.returncode}"))
        # Probes sent after the stop completed and answered before the start began.
        ready_down = [s for s in mon.samples if s[1] == "/readyz"
                      and s[0] >= t_stopped + 0.5 and s[0] + s[3] <= t_start]
        ready_down_ok = [s for s in ready_down if s[2] == 200]
        self.check("outage: /readyz not ready while the DB is down", ready_down and not ready_down_ok,
                   f"{len(ready_down)} probes, {len(ready_down_ok)} answered 200; statuses "
                   f"{fmt_counter(Counter(s[2] for s in ready_down))}, max latency "
                   f"{max((s[3] for s in ready_down), default=0):.2f}s"
                   + (f"; 200 at +{[round(s[0] - t_stop, 2) for s in ready_down_ok[:3]]}s after the stop"
                      if ready_down_ok else ""))

        # Recovery.
        first_ok = min((o.t_ack for o in acked if o.t_ack and o.t_ack >= t_back), default=None)
        first_ok_send = min((x.t_send for x in load.attempts if x.code == "ok" and x.t_send >= t_back), default=None)
        after_errs = Counter(x.code for x in load.attempts if x.t_send >= t_back and x.code != "ok")
        self.check(f"recovery: first placeOrder ok within {a.recovery_bound:.0f}s",
                   first_ok is not None and first_ok - t_back <= a.recovery_bound,
                   (f"{first_ok - t_back:.2f}s after the DB was back" if first_ok else "no success after the outage")
                   + (f" (first successful request sent at +{first_ok_send - t_back:.2f}s)" if first_ok_send else "")
                   + f"; errors after it was back: {fmt_counter(after_errs)}")
        ready_after = sorted(s[0] + s[3] for s in mon.samples
                             if s[1] == "/readyz" and s[0] + s[3] >= t_back and s[2] == 200)
        first_ready = ready_after[0] if ready_after else None
        self.check(f"recovery: /readyz 200 within {a.recovery_bound:.0f}s",
                   first_ready is not None and first_ready - t_back <= a.recovery_bound,
                   f"{first_ready - t_back:.2f}s after the DB was back" if first_ready else "never 200 again")
        unexpected = Counter(x.code for x in load.attempts if x.code not in
                             ("ok", "SERVICE_UNAVAILABLE", "IDEMPOTENCY_IN_PROGRESS"))
        self.check("no unexpected error codes (INTERNAL, transport, ...)", not unexpected,
                   fmt_counter(unexpected) + ": " + describe(
                       [x for x in load.attempts if x.code in unexpected], t_stop, "the stop")
                   if unexpected else
                   f"codes seen: {fmt_counter(Counter(x.code for x in load.attempts if x.code != 'ok'))}")
        self.check("writes acknowledged during the run", len(acked) > 0,
                   f"{len(acked)} acks, {retries} retries, {replays} replays")
        self.check_accounting(load)
        self.check_convergence()
        self.check_no_orphans()
        self.check_graceful_stop()
        self.check_pg_log()
        self.report_server_log()


SCENARIOS = {"crash": CrashScenario, "db-outage": DbOutageScenario}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", action="append", choices=[*SCENARIOS, "all"],
                    help="scenario to run (repeatable; default: all)")
    ap.add_argument("--till", default=DEFAULT_TILL, help="the till binary (default: target/debug/till)")
    ap.add_argument("--no-copy", action="store_true",
                    help="run the binary in place (default: copy it first, so a rebuild mid-run is harmless)")
    ap.add_argument("--writers", type=int, default=6, help="writer threads (default 6)")
    ap.add_argument("--seconds", type=float, default=30, help="crash: load duration (default 30)")
    ap.add_argument("--outage-seconds", type=float, default=10, help="db-outage: downtime (default 10)")
    ap.add_argument("--client-timeout", type=float, default=10, help="per-request timeout (default 10)")
    ap.add_argument("--max-latency", type=float, default=5, help="db-outage: longest acceptable answer (default 5)")
    ap.add_argument("--recovery-bound", type=float, default=5,
                    help="db-outage: seconds until writes and /readyz recover (default 5)")
    ap.add_argument("--restart-bound", type=float, default=15,
                    help="crash: seconds from kill -9 to /readyz 200 of the new process (default 15)")
    ap.add_argument("--resolve-grace", type=float, default=30,
                    help="seconds a writer keeps retrying an unknown outcome after the load ends (default 30)")
    ap.add_argument("--converge-bound", type=float, default=60, help="seconds to wait for lagEvents 0 (default 60)")
    ap.add_argument("--replay-sample", type=int, default=50, help="acknowledged keys re-sent to check replays")
    ap.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for till serve (repeatable)")
    ap.add_argument("--replica-delay-ms", type=int, default=None, metavar="MS",
                    help="also start a streaming replica replaying MS behind the primary and "
                         "serve reads from it (TILL_READ_DATABASE_URLS)")
    ap.add_argument("--keep", action="store_true", help="keep the work folders (logs, data) and print their paths")
    args = ap.parse_args()
    wanted = args.scenario or ["all"]
    names = list(SCENARIOS) if "all" in wanted else list(dict.fromkeys(wanted))
    if args.writers < 1:
        ap.error("--writers must be at least 1")

    abort = threading.Event()

    def on_term(signum, _frame):
        if CLEANING.is_set() or getattr(on_term, "fired", False):
            abort.set()
            say(f"signal {signum}: cleaning up ...")
            return
        on_term.fired = True
        abort.set()
        raise KeyboardInterrupt(f"signal {signum}")

    # Installed explicitly: a shell starts background jobs with SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_term)

    for tool in ("initdb", "pg_ctl", "psql"):
        if not os.access(f"{PG_BIN}/{tool}", os.X_OK):
            print(f"missing {PG_BIN}/{tool}: install PostgreSQL 15 server binaries", file=sys.stderr)
            return 2
    deadline = time.monotonic() + 300
    while not os.access(args.till, os.X_OK):
        if time.monotonic() > deadline:
            print(f"no executable at {args.till} (build it first)", file=sys.stderr)
            return 2
        say(f"waiting for {args.till} to exist ...")
        time.sleep(5)

    report = Report()
    binary_dir = None
    status = 0
    try:
        binary = args.till
        if not args.no_copy:
            binary_dir = tempfile.mkdtemp(prefix="till-fault-bin-")
            os.chmod(binary_dir, 0o755)
            binary = os.path.join(binary_dir, "till")
            shutil.copy2(args.till, binary)
        st = os.stat(args.till)
        say(f"binary {args.till} ({st.st_size / 1e6:.0f} MB, built "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(st.st_mtime))})")
        for name in names:
            if abort.is_set():
                break
            sc = SCENARIOS[name](args, binary, report, abort)
            say(f"===== scenario {name} =====")
            try:
                sc.setup()
                sc.run()
            except HarnessError as e:
                report.check(name, "scenario ran to completion", False, str(e).splitlines()[0][:300])
                print(str(e), file=sys.stderr, flush=True)
                status = 2
            finally:
                abort_state = abort.is_set()
                abort.set()          # stop stray writers before tearing down
                sc.teardown()
                if not abort_state:
                    abort.clear()
    except KeyboardInterrupt:
        abort.set()
        print("\ninterrupted; cleaned up", file=sys.stderr)
        status = 130
    finally:
        if binary_dir:
            shutil.rmtree(binary_dir, ignore_errors=True)

    print()
    print(report.table() if report.rows else "(no checks ran)")
    failed = report.failed()
    print()
    print(f"{len(report.rows) - len(failed)} passed, {len(failed)} failed")
    if status:
        return status
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
