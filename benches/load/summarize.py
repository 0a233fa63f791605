#!/usr/bin/env python3
"""Summarizes a load run folder: every oha and k6 JSON result and pgbench log into one
markdown table (req/s, p50/p95/p99, status codes or GraphQL outcomes), the resources
sampled during each scenario (resident memory, cache size and evictions, projection
lag, commit -> visible quantiles from till_projection_commit_visible_seconds and the
transaction start -> visible p99 from till_projection_visible_seconds), plus a latency plot
(latency.png) when matplotlib is available."""
import json
import pathlib
import re
import sys

run = pathlib.Path(sys.argv[1])
rows = []
series = {}
for f in sorted(run.glob("*.json")):
    try:
        d = json.loads(f.read_text())
    except ValueError:
        continue
    if d.get("tool") == "k6":
        ms = d["ms"]
        name = f.name.removesuffix(".k6.json")
        rows.append((name, f"{d['requestsPerSec']:,.0f}", f"{ms['p50']:.2f}", f"{ms['p95']:.2f}",
                     f"{ms['p99']:.2f}", ", ".join(f"{k}: {v}" for k, v in sorted(d["codes"].items()))))
        series[name] = [(q, ms[k]) for q, k in (("p50", "p50"), ("p90", "p90"), ("p95", "p95"), ("p99", "p99"))]
        v = d.get("visible")
        if v:
            rows.append((f"{name}: read back with X-Consistency-Token (commit -> visible, upper bound)", "",
                         f"{v['p50']:.2f}", f"{v['p95']:.2f}", f"{v['p99']:.2f}",
                         f"failed: {d.get('readbackFailed', 0)}"))
        continue
    if "summary" not in d:
        continue
    s = d["summary"]
    p = d.get("latencyPercentiles", {})
    codes = d.get("statusCodeDistribution", {})
    errors = d.get("errorDistribution", {})
    ms = lambda k: f"{(p.get(k) or 0) * 1000:.2f}"
    rows.append((f.stem, f"{s.get('requestsPerSec', 0):,.0f}", ms("p50"), ms("p95"), ms("p99"),
                 ", ".join(f"{k}: {v}" for k, v in sorted(codes.items())) +
                 ("; errors: " + ", ".join(f"{k}: {v}" for k, v in errors.items()) if errors else "")))
    series[f.stem] = [(q, (p.get(q) or 0) * 1000) for q in ("p10", "p25", "p50", "p75", "p90", "p95", "p99", "p99.9") if q in p]
for f in sorted(run.glob("pgbench-*.txt")):
    text = f.read_text()
    tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", text)
    lat = re.search(r"latency average = ([0-9.]+) ms", text)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    # Per-transaction logs (pgbench --log): the third column is the latency in us.
    latencies = sorted(int(line.split()[2]) / 1000 for log in run.glob(f"{f.stem}.log.*")
                       for line in log.read_text().splitlines() if len(line.split()) > 2)
    q = lambda p: f"{latencies[min(len(latencies) - 1, int(p * len(latencies)))]:.2f}" if latencies else ""
    rows.append((f.stem, f"{float(tps.group(1)):,.0f} tps" if tps else "?",
                 q(0.5) or (f"avg {lat.group(1)}" if lat else ""), q(0.95), q(0.99),
                 f"failed: {failed.group(1)}" if failed else ""))

print("| run | req/s | p50 ms | p95 ms | p99 ms | statuses / outcomes |")
print("|---|---|---|---|---|---|")
for r in rows:
    print("| " + " | ".join(r) + " |")

ratio = run / "ratio-outcome.json"
if ratio.exists():
    d = json.loads(ratio.read_text())
    print()
    print("| round | constant query req/s | product(id:) req/s | ratio |")
    print("|---|---|---|---|")
    for r in d["rounds"]:
        print(f"| {r['round']} | {r['constant']:,.0f} | {r['product']:,.0f} | {r['ratio']:.2f} |")
    print(f"| median | | | {d['median']:.2f} |")

outcome = run / "rebuild-outcome.json"
if outcome.exists():
    print()
    print("| projection rebuilt under load | state | seconds | events | events/s |")
    print("|---|---|---|---|---|")
    for r in json.loads(outcome.read_text())["rebuilds"]:
        rate = r["events"] / r["seconds"] if r["seconds"] else 0
        print(f"| {r['projection']} | {r['state']} | {r['seconds']:.2f} | {r['events']:,} | {rate:,.0f} |")

resources = sorted(run.glob("resources-*.json"))
if resources:
    def pct(values, q):
        values = sorted(values)
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")
    def visible(d, q, key="visible_buckets"):
        """Quantile q (ms) of commit -> visible (or, with key start_visible_buckets,
        transaction start -> visible) from the scenario's histogram delta, interpolated
        within its bucket; blank when no events were applied."""
        b = d.get(key) or {}
        first, last = b.get("first") or {}, b.get("last") or {}
        bounds = sorted((float(le), last[le] - first.get(le, 0.0)) for le in last if le != "+Inf")
        total = last.get("+Inf", 0.0) - first.get("+Inf", 0.0)
        if total <= 0:
            return ""
        lower, below = 0.0, 0.0
        for upper, count in bounds:
            if count >= q * total:
                share = (q * total - below) / max(count - below, 1e-9)
                return f"{(lower + share * (upper - lower)) * 1000:.0f}"
            lower, below = upper, count
        return f"> {lower * 1000:.0f}"
    print()
    print("| scenario | RSS first MiB | RSS max MiB | RSS last MiB | heap trims "
          "| cache max MiB | cache last MiB | evictions "
          "| projection lag p50 s | p99 s | max s | samples "
          "| commit -> visible p50 ms | p95 ms | p99 ms | transaction start -> visible p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for f in resources:
        d = json.loads(f.read_text())
        rss, lag = d["rss_mib"], d["lag_s"]
        cache, evicted = d.get("cache_mib") or [], d.get("evictions") or []
        trims = d.get("heap_trims") or []
        print(f"| {f.stem.removeprefix('resources-')} | {(rss or [float('nan')])[0]:.1f} | "
              f"{max(rss, default=float('nan')):.1f} | "
              f"{(rss or [float('nan')])[-1]:.1f} | "
              f"{(trims[-1] - trims[0]) if trims else 0:.0f} | "
              f"{max(cache, default=float('nan')):.1f} | "
              f"{(cache or [float('nan')])[-1]:.1f} | "
              f"{(evicted[-1] - evicted[0]) if evicted else 0:.0f} | "
              f"{pct(lag, 0.5):.3f} | {pct(lag, 0.99):.3f} | "
              f"{max(lag, default=float('nan')):.3f} | {len(lag)} | "
              f"{visible(d, 0.5)} | {visible(d, 0.95)} | {visible(d, 0.99)} | "
              f"{visible(d, 0.99, 'start_visible_buckets')} |")

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit(0)
fig, ax = plt.subplots(figsize=(9, 5))
for name, points in series.items():
    if points:
        ax.plot([q for q, _ in points], [v for _, v in points], marker="o", label=name)
ax.set_yscale("log")
ax.set_ylabel("latency (ms, log scale)")
ax.set_xlabel("percentile")
ax.set_title(run.name)
ax.grid(True, which="both", alpha=0.3)
ax.legend(fontsize="small")
fig.tight_layout()
fig.savefig(run / "latency.png", dpi=110)
