#!/usr/bin/env bash
# The reference figures of issue #7, measured in one run on this machine:
#   1. a bare actix-web handler returning a fixed 440-byte JSON (oha, 64 connections);
#   2. async-graphql + actix-web answering a constant 6-field query (oha, 64 connections);
#   3. pgbench: one product by primary key joined with category and inventory (64 clients);
#   4. pgbench: a simplified order-placement transaction (16 clients, synchronous commit);
#   5. pgbench: Till's own placeOrder transaction, its two statements as Till sends them
#      (16 clients, generic plans as in Till's transactions): the issue's "same SQL".
# Results (oha JSON, pgbench logs, summary.md) go to target/load/reference-<time>/.
#
#   benches/load/reference.sh [--duration 15]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
duration=15
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    *) echo "usage: $0 [--duration SECONDS]" >&2; exit 2 ;;
  esac
done
command -v oha >/dev/null || { echo "reference: oha is missing: cargo install oha --locked" >&2; exit 1; }
pgbin="$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")"
out="$repo/target/load/reference-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
chmod 777 "$out"

# Built apart: together, feature unification would rebuild the server that run.sh builds.
cargo build --release -p till-api --manifest-path "$repo/Cargo.toml"
cargo build --release -p till-benches --bins --manifest-path "$repo/Cargo.toml"
bin="$repo/target/release"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "== bare actix-web"
"$bin/ref-actix" 127.0.0.1:18301 & pids+=($!)
sleep 1
oha -z "${duration}s" -c 64 --no-tui --output-format json http://127.0.0.1:18301/ > "$out/bare-actix.json"

echo "== async-graphql constant query"
"$bin/ref-graphql" 127.0.0.1:18302 & pids+=($!)
sleep 1
echo '{"query":"{ product { id sku name description priceMinor available } }"}' > "$out/constant.json"
oha -z "${duration}s" -c 64 --no-tui --output-format json -m POST -T application/json \
  -D "$out/constant.json" http://127.0.0.1:18302/graphql > "$out/constant-graphql.json"

echo "== pgbench"
data="$out/pg"
runuser -u postgres -- "$pgbin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$data" -l "$out/pg.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p 18303 -k $out -c max_connections=200 -c shared_buffers=256MB" start >/dev/null
pids+=()
stop_pg() { runuser -u postgres -- "$pgbin/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1 || true; }
trap 'cleanup; stop_pg' EXIT
url="postgres://postgres@127.0.0.1:18303/postgres"
DATABASE_URL="$url" "$bin/till" migrate >/dev/null
"$pgbin/psql" -q -h 127.0.0.1 -p 18303 -U postgres -f "$repo/benches/load/reference.sql"
"$pgbin/pgbench" -h 127.0.0.1 -p 18303 -U postgres -n -c 64 -j 2 -T "$duration" -M prepared \
  -f "$repo/benches/load/pgbench-select.sql" postgres > "$out/pgbench-select.txt"
# The order references log every transaction's latency (pgbench-<name>.log.*), so the
# summary can give their p50/p95/p99 beside Till's.
"$pgbin/pgbench" -h 127.0.0.1 -p 18303 -U postgres -n -c 16 -j 2 -T "$duration" -M prepared \
  --log --log-prefix="$out/pgbench-order.log" \
  -f "$repo/benches/load/pgbench-order.sql" postgres > "$out/pgbench-order.txt"
PGOPTIONS="-c plan_cache_mode=force_generic_plan" \
  "$pgbin/pgbench" -h 127.0.0.1 -p 18303 -U postgres -n -c 16 -j 2 -T "$duration" -M prepared \
  --log --log-prefix="$out/pgbench-place-order.log" \
  -f "$repo/benches/load/pgbench-place-order.sql" postgres > "$out/pgbench-place-order.txt"
stop_pg

python3 "$repo/benches/load/summarize.py" "$out" | tee "$out/summary.md"
