#!/usr/bin/env python3
"""Commit -> visible while a projection is rebuilt, against a running `till serve`.

WRITERS threads each place an order (2 random products, a random customer) and at once
read it back with the payload's X-Consistency-Token (the server holds that read until
every projection has the order, answering 503 after TILL_CONSISTENCY_WAIT_MS). The
read-back's duration is the figure: how long a client waits to see its own write.
After BASELINE seconds of that load alone, rebuildProjection(PROJECTION) is started and
polled (every 0.1 s) until it is no longer RUNNING; the load goes on for AFTER seconds
more. Meanwhile a sampler asks PostgreSQL every 20 ms which session of the rebuild holds
a transaction id (pg_stat_activity.backend_xid), to find the longest time one xid was
held. Prints read-back percentiles per phase (baseline, each rebuild phase, after) and
writes them as JSON to OUT.

usage: rebuild-visibility.py BASE PGPORT DATA_JSON OUT [--writers 8] [--baseline 20]
                             [--after 10] [--projection ORDER_VIEW]
DATA_JSON: {"admin": token, "tokens": [customer tokens], "products": [global ids]}
"""
import argparse, json, random, statistics, subprocess, threading, time, urllib.error, urllib.request

p = argparse.ArgumentParser()
p.add_argument("base"); p.add_argument("pgport"); p.add_argument("data"); p.add_argument("out")
p.add_argument("--writers", type=int, default=8)
p.add_argument("--baseline", type=float, default=20)
p.add_argument("--after", type=float, default=10)
p.add_argument("--projection", default="ORDER_VIEW")
p.add_argument("--psql", default="/usr/lib/postgresql/15/bin/psql")
a = p.parse_args()
data = json.load(open(a.data))

def post(token, body, headers=None, timeout=30):
    h = {"content-type": "application/json", "authorization": "Bearer " + token}
    h.update(headers or {})
    req = urllib.request.Request(a.base + "/graphql", json.dumps(body).encode(), h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None

PLACE = "mutation Buy($lines: [OrderLineInput!]!) { placeOrder(input: {lines: $lines}) { orderId consistencyToken } }"
READ = "query Mine($id: ID!) { order(id: $id) { id status } }"
phase = ["baseline"]
samples = []  # (phase, read-back ms, status)
lock = threading.Lock()
stop = threading.Event()

def writer():
    while not stop.is_set():
        token = random.choice(data["tokens"])
        x, y = random.sample(data["products"], 2)
        status, body = post(token, {"query": PLACE, "variables": {"lines": [
            {"productId": x, "quantity": 1}, {"productId": y, "quantity": 1}]}})
        placed = body and (body.get("data") or {}).get("placeOrder")
        if status != 200 or not placed:
            with lock:
                samples.append((phase[0], None, "place-%s" % status))
            continue
        started, at = time.monotonic(), phase[0]
        status, body = post(token, {"query": READ, "variables": {"id": placed["orderId"]}},
                            {"x-consistency-token": placed["consistencyToken"]})
        ms = (time.monotonic() - started) * 1000
        ok = (status == 200 and body and not body.get("errors")
              and ((body.get("data") or {}).get("order") or {}).get("status") == "PENDING_PAYMENT")
        with lock:
            samples.append((at, ms, "ok" if ok else "read-%s" % status))

xid_holds = {}  # (pid, xid) -> [first seen, last seen]
def sampler():
    q = ("SELECT pid || ' ' || backend_xid FROM pg_stat_activity WHERE backend_xid IS NOT NULL "
         "AND (query ILIKE '%till_rebuild_%' OR query ILIKE 'CREATE %INDEX%' OR query ILIKE 'ANALYZE%')")
    proc = subprocess.Popen([a.psql, "-X", "-At", "-h", "127.0.0.1", "-p", a.pgport, "-U", "postgres",
                             "-d", "till"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    while not stop.is_set():
        proc.stdin.write(q + ";\nSELECT 'END';\n"); proc.stdin.flush()
        now = time.monotonic()
        while True:
            line = proc.stdout.readline().strip()
            if line == "END" or not line and proc.poll() is not None:
                break
            if line:
                xid_holds.setdefault(line, [now, now])[1] = now
        time.sleep(0.02)
    proc.terminate()

threads = [threading.Thread(target=writer, daemon=True) for _ in range(a.writers)]
threads.append(threading.Thread(target=sampler, daemon=True))
for t in threads: t.start()
time.sleep(a.baseline)
admin = data["admin"]
status, body = post(admin, {"query": "mutation($p: ProjectionName!) { rebuildProjection(projection: $p) { name } }",
                            "variables": {"p": a.projection}})
assert status == 200 and not body.get("errors"), body
name = a.projection.lower()
started = time.monotonic()
phases = []
while True:
    _, body = post(admin, {"query": "{ projections { name rebuild { state phase eventsApplied error } } }"})
    r = next(x for x in body["data"]["projections"] if x["name"] == name)["rebuild"]
    if r["state"] != "RUNNING":
        break
    if r["phase"] != phase[0]:
        phase[0] = r["phase"]
        phases.append((r["phase"], round(time.monotonic() - started, 2)))
    time.sleep(0.1)
rebuild_s = time.monotonic() - started
phase[0] = "after"
time.sleep(a.after)
stop.set()
time.sleep(1)

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else None
report = {"rebuild": {"state": r["state"], "error": r["error"], "events": r["eventsApplied"],
                      "seconds": round(rebuild_s, 2), "phases_started_at_s": phases},
          "longest_xid_hold_ms": round(max((b - f for f, b in xid_holds.values()), default=0) * 1000),
          "xids_seen": len(xid_holds), "phases": {}}
order = ["baseline"] + [p for p, _ in phases] + ["after"]
for ph in order:
    mine = [s for s in samples if s[0] == ph]
    oks = [ms for _, ms, st in mine if st == "ok"]
    during = ph not in ("baseline", "after")
    report["phases"][ph] = {
        "reads": len(oks), "failed": sum(1 for s in mine if s[2] != "ok"),
        "failures": sorted({s[2] for s in mine if s[2] != "ok"}),
        "p50_ms": round(pct(oks, 0.5), 1) if oks else None,
        "p99_ms": round(pct(oks, 0.99), 1) if oks else None,
        "max_ms": round(max(oks), 1) if oks else None}
rebuild_phases = [p for p, _ in phases]
during = [ms for ph, ms, st in samples if ph in rebuild_phases and st == "ok"]
report["during_rebuild"] = {"reads": len(during), "p50_ms": round(pct(during, 0.5), 1) if during else None,
                            "p99_ms": round(pct(during, 0.99), 1) if during else None,
                            "max_ms": round(max(during), 1) if during else None,
                            "failed": sum(1 for ph, ms, st in samples if ph in rebuild_phases and st != "ok")}
json.dump(report, open(a.out, "w"), indent=1)
print(json.dumps(report, indent=1))
