#!/usr/bin/env python3
"""Reads from a streaming replica against reads from the primary, in the same run.

One embedded cluster (`till serve --replicas 2 --replica-delay-ms DELAY`, which also runs
the projector) and three more servers on it, with no projector or jobs of their own:
  primary   reads from the primary only
  replica   reads from replica 0 (replays at once)
  delayed   reads from replica 1 (replays DELAY ms behind: a realistic apply delay)

Read scenarios (oha, CONNECTIONS connections, ROUNDS rounds of SECONDS each, primary and
replica alternated, each going first in every other round): product(id:) (one product:
the cache), products (an in-stock page by popularity: never cached, a query per
request), myOrders (one shopper's first page: the page cache). For each round: requests/s,
p99, and the primary's load while it ran: transactions/s of the `till` database
(pg_stat_database) and CPU seconds of the primary's PostgreSQL processes.

Then read-your-writes: placeOrder, then at once `order(id:)` with its consistency token,
one after the other (one client), through `primary` and through `delayed`: p50/p99 of the
read with the token.

  benches/load/replicas.py [--till target/release/till] [--seconds 10] [--rounds 3]
                           [--connections 32] [--delay-ms 50] [--orders 200]
Writes target/load/replicas-<time>/outcome.json and prints a table.
"""

import argparse
import json
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]
SECRET = "load-test-secret-0123456789abcdef0123456789"


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(base, body, token=None, headers=None):
    req = urllib.request.Request(f"{base}/graphql", data=json.dumps(body).encode(), method="POST")
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def wait_ready(base, proc, log):
    for _ in range(240):
        if proc.poll() is not None:
            sys.exit(f"server exited: {pathlib.Path(log).read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.5)
    sys.exit(f"{base} never became ready")


class Server:
    def __init__(self, till, out, name, env, args=()):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = out / f"{name}.log"
        full = {k: v for k, v in os.environ.items() if not k.startswith(("TILL_", "DATABASE_URL"))}
        full.update({
            "TILL_LISTEN": f"127.0.0.1:{self.port}", "TILL_JWT_SECRET": SECRET,
            "TILL_SEED_DEMO": "false", "TILL_RATE_LIMIT": "false", "RUST_LOG": "warn",
            "TILL_ACCESS_TOKEN_TTL_S": "7200", "TILL_CACHE_IDLE_S": "3600",
        })
        full.update(env)
        self.proc = subprocess.Popen([till, "serve", *args], cwd=out, env=full,
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        wait_ready(self.base, self.proc, self.log)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def pg_cpu_seconds(data_dir):
    """CPU seconds (user + system) of a cluster's postmaster and its children now."""
    pid = int(pathlib.Path(data_dir, "postmaster.pid").read_text().split()[0])
    tick = os.sysconf("SC_CLK_TCK")
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    total = 0
    for p in [pid, *map(int, kids)]:
        try:
            fields = pathlib.Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, IndexError, ValueError):
            pass
    return total / tick


def psql(port, password, sql):
    pg_bin = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    res = subprocess.run([str(pg_bin / "psql"), "-X", "-At", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                          "-d", "till", "-c", sql], capture_output=True, text=True,
                         env=dict(os.environ, PGPASSWORD=password), check=True)
    return res.stdout.strip()


def oha(base, body, token, seconds, connections, out, name):
    path = out / f"{name}.json"
    cmd = ["oha", "-z", f"{seconds}s", "-c", str(connections), "--no-tui", "--output-format", "json",
           "-m", "POST", "-T", "application/json", "-d", json.dumps(body), f"{base}/graphql"]
    if token:
        cmd[1:1] = ["-H", f"authorization: Bearer {token}"]
    with open(path, "w") as f:
        subprocess.run(cmd, stdout=f, check=True)
    d = json.loads(path.read_text())
    codes = d.get("statusCodeDistribution", {})
    return {"rps": d["summary"]["requestsPerSec"], "p50_ms": d["latencyPercentiles"]["p50"] * 1000,
            "p99_ms": d["latencyPercentiles"]["p99"] * 1000, "non_200": sum(v for k, v in codes.items() if k != "200")}


def ryw_round(label, ryw, primary, delayed, product, shopper, args):
    """placeOrder, then its order with the token at once, through each server."""
    for which, server in (("primary", primary), ("delayed replica", delayed)):
        lat = []
        for _ in range(args.orders):
            placed = post(server.base, {"query": f'mutation {{ placeOrder(input: {{lines: [{{productId: "{product}", quantity: 1}}]}}) {{ orderId consistencyToken }} }}'}, shopper)
            p = placed["data"]["placeOrder"]
            t = time.perf_counter()
            got = post(server.base, {"query": f'{{ order(id: "{p["orderId"]}") {{ id status }} }}'}, shopper,
                       {"x-consistency-token": p["consistencyToken"]})
            lat.append((time.perf_counter() - t) * 1000)
            if (got.get("data") or {}).get("order", {}) is None or got.get("errors"):
                sys.exit(f"token read missed its order through {which}: {got}")
        lat.sort()
        key = f"{label}, {which}"
        ryw[key] = {"p50_ms": statistics.median(lat), "p99_ms": lat[int(len(lat) * 0.99) - 1], "n": len(lat)}
        print(f"{label}: read with token through {which:16}: p50 {ryw[key]['p50_ms']:6.1f} ms  p99 {ryw[key]['p99_ms']:6.1f} ms", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--till", default=str(REPO / "target/release/till"))
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--delay-ms", type=int, default=50)
    ap.add_argument("--orders", type=int, default=200)
    args = ap.parse_args()
    out = REPO / "target/load" / time.strftime("replicas-%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    os.chmod(out, 0o755)
    print(f"== seed into {out}", flush=True)
    env = {"TILL_PG_DATA": str(out / "pg"), "TILL_JWT_SECRET": SECRET}
    subprocess.run([args.till, "seed", "--categories", "50", "--products", "2000", "--customers", "2000",
                    "--orders", "20000"], cwd=out, env=dict(os.environ, **env), check=True,
                   stdout=subprocess.DEVNULL)
    servers = []
    try:
        owner = Server(args.till, out, "owner", {**env, "TILL_PG_MAX_CONNECTIONS": "400",
                                                 "TILL_DEV_REPLICA_DELAY_MS": str(args.delay_ms)},
                       ["--replicas", "2"])
        servers.append(owner)
        password = (out / "pg/till-password").read_text().strip()
        ports = {name: int((out / name / "postmaster.pid").read_text().split()[3])
                 for name in ("pg", "pg-replica-0", "pg-replica-1")}
        url = lambda name: f"postgres://postgres:{password}@127.0.0.1:{ports[name]}/till"  # noqa: E731
        follower = {"TILL_PROJECTOR": "false", "TILL_JOBS": "false", "DATABASE_URL": url("pg"),
                    "TILL_DB_POOL_SIZE": "8"}
        primary = Server(args.till, out, "primary", follower)
        replica = Server(args.till, out, "replica", {**follower, "TILL_READ_DATABASE_URLS": url("pg-replica-0")})
        delayed = Server(args.till, out, "delayed", {**follower, "TILL_READ_DATABASE_URLS": url("pg-replica-1")})
        servers += [primary, replica, delayed]

        def token(role, email):
            cid = psql(ports["pg"], password, f"SELECT id FROM customers WHERE email = '{email}'")
            return subprocess.run([args.till, "token", "--role", role, "--sub", cid, "--ttl-minutes", "120"],
                                  cwd=out, env=dict(os.environ, **env), capture_output=True, text=True,
                                  check=True).stdout.strip()

        reg = post(primary.base, {"query": 'mutation { register(input: {email: "replica-load@example.com", '
                                           'password: "load test password", name: "Load"}) { accessToken } }'})
        shopper = reg["data"]["register"]["accessToken"]
        staff_email = psql(ports["pg"], password, "SELECT email FROM customers ORDER BY email LIMIT 1")
        psql(ports["pg"], password, f"UPDATE customers SET role = 'STAFF' WHERE email = '{staff_email}'")
        staff = token("staff", staff_email)
        first = post(primary.base, {"query": "{ products(first: 2, filter: {inStock: true}) { edges { node { id } } } }"})
        product = first["data"]["products"]["edges"][0]["node"]["id"]
        post(primary.base, {"query": f'mutation {{ restockProduct(input: {{productId: "{product}", quantity: 1000000}}) {{ productId }} }}'}, staff)
        for _ in range(20):
            post(primary.base, {"query": f'mutation {{ placeOrder(input: {{lines: [{{productId: "{product}", quantity: 1}}]}}) {{ orderId }} }}'}, shopper)
        time.sleep(2)

        scenarios = {
            "product(id:)": ({"query": f'{{ product(id: "{product}") {{ id name available price {{ minorUnits }} }} }}'}, None),
            "products (in stock, popular)": ({"query": "{ products(first: 20, sortBy: POPULAR, filter: {inStock: true}) { edges { node { id name available } } } }"}, None),
            "myOrders": ({"query": "{ myOrders(first: 10) { edges { node { id status total { minorUnits } } } } }"}, shopper),
        }
        results = {}
        for label, (body, tok) in scenarios.items():
            rows = {"primary": [], "replica": []}
            for r in range(args.rounds):
                order = ["primary", "replica"] if r % 2 == 0 else ["replica", "primary"]
                for which in order:
                    server = primary if which == "primary" else replica
                    x0 = int(psql(ports["pg"], password, "SELECT xact_commit FROM pg_stat_database WHERE datname = 'till'"))
                    c0, t0 = pg_cpu_seconds(out / "pg"), time.time()
                    res = oha(server.base, body, tok, args.seconds, args.connections, out,
                              f"{label.split()[0].strip('(:)')}-{which}-{r}")
                    secs = time.time() - t0
                    c1 = pg_cpu_seconds(out / "pg")
                    x1 = int(psql(ports["pg"], password, "SELECT xact_commit FROM pg_stat_database WHERE datname = 'till'"))
                    res["primary_tps"] = (x1 - x0) / secs
                    res["primary_cpu_pct"] = 100 * (c1 - c0) / secs
                    rows[which].append(res)
                    print(f"{label:30} {which:8} round {r}: {res['rps']:8.0f} req/s  p99 {res['p99_ms']:6.1f} ms  "
                          f"primary {res['primary_tps']:7.0f} tx/s  {res['primary_cpu_pct']:5.1f}% CPU  non-200 {res['non_200']}",
                          flush=True)
            results[label] = rows

        ryw = {}
        for writer_delay in (200, 10):
            # The projector commits without waiting for the flush and the replica gets
            # only flushed WAL: the WAL writer's round is part of a token read's wait.
            psql(ports["pg"], password, f"ALTER SYSTEM SET wal_writer_delay = '{writer_delay}ms'")
            psql(ports["pg"], password, "SELECT pg_reload_conf()")
            time.sleep(1)
            ryw_round(f"wal_writer_delay {writer_delay} ms", ryw, primary, delayed, product, shopper, args)
        metrics = urllib.request.urlopen(f"{delayed.base}/metrics").read().decode()
        served = [line for line in metrics.splitlines() if line.startswith(("till_read_queries_total", "till_replica_fallbacks_total"))]
        print("delayed server:", *served, sep="\n  ")
        (out / "outcome.json").write_text(json.dumps({"args": vars(args), "reads": results, "read_your_writes": ryw,
                                                       "delayed_server_metrics": served}, indent=2))
        print(f"outcome: {out / 'outcome.json'}")
    finally:
        for s in reversed(servers):
            s.stop()
        shutil.rmtree(out / "pg-replica-0", ignore_errors=True)
        shutil.rmtree(out / "pg-replica-1", ignore_errors=True)


if __name__ == "__main__":
    main()
