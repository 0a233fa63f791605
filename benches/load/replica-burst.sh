#!/usr/bin/env bash
# A burst of reads with a consistency token that all wait for a lagging replica, with the
# reading server's resident memory watched (the API pod's limit is 384 MiB, deploy/k8s).
# An owner server runs `till serve --replicas 2` (replica 1 replays DELAY_MS behind) and
# the projector; a reader server reads from replica 1 only (TILL_REPLICA_WAIT_MS=5000, so
# every token read waits for it, holding no connection). One order's token, then N
# requests at C connections, all with that token.
#   TILL_BIN=target/release/till benches/load/replica-burst.sh [N] [C] [DELAY_MS]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
till="${TILL_BIN:-$repo/target/release/till}"
n="${1:-4000}" c="${2:-2000}" delay="${3:-2000}"
out="$repo/target/load/replica-burst-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out" && chmod 755 "$out" && cd "$out"
export TILL_PG_DATA="$out/pg" TILL_JWT_SECRET=load-test-secret-0123456789abcdef0123456789
(TILL_LISTEN=127.0.0.1:18701 TILL_DEV_REPLICA_DELAY_MS="$delay" TILL_REPLICA_MAX_LAG_MS=10000 \
  exec "$till" serve --replicas 2 > owner.log 2>&1) &
owner=$!
trap 'kill -INT $owner ${reader:-} 2>/dev/null; wait 2>/dev/null || true' EXIT
for _ in $(seq 120); do curl -fsS localhost:18701/readyz >/dev/null 2>&1 && break; sleep 1; done
pw="$(cat pg/till-password)"; p0="$(sed -n 4p pg/postmaster.pid)"; p1="$(sed -n 4p pg-replica-1/postmaster.pid)"
(TILL_LISTEN=127.0.0.1:18702 DATABASE_URL="postgres://postgres:$pw@127.0.0.1:$p0/till" \
  TILL_READ_DATABASE_URLS="postgres://postgres:$pw@127.0.0.1:$p1/till" TILL_PROJECTOR=false \
  TILL_JOBS=false TILL_RATE_LIMIT=false TILL_REPLICA_WAIT_MS=5000 TILL_REPLICA_MAX_LAG_MS=10000 \
  TILL_SEED_DEMO=false exec "$till" serve > reader.log 2>&1) &
reader=$!
for _ in $(seq 120); do curl -fsS localhost:18702/readyz >/dev/null 2>&1 && break; sleep 1; done
echo "reader RSS before: $(grep VmRSS /proc/$reader/status)"
tok="$(grep -A1 'shopper token' owner.log | tail -1 | sed 's/.*Bearer //')"
gql() { curl -fsS localhost:18701/graphql -H 'content-type: application/json' -H "authorization: Bearer $tok" -d "$1"; }
pid="$(gql '{"query":"{ products(first: 1, filter: {inStock: true}) { edges { node { id } } } }"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["products"]["edges"][0]["node"]["id"])')"
ct="$(gql "{\"query\":\"mutation { placeOrder(input: {lines: [{productId: \\\"$pid\\\", quantity: 1}]}) { consistencyToken } }\"}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["placeOrder"]["consistencyToken"])')"
(while kill -0 "$reader" 2>/dev/null; do grep VmRSS "/proc/$reader/status" >> rss.txt || true; sleep 0.2; done) &
watcher=$!
oha -n "$n" -c "$c" --no-tui -m POST -T application/json -H "x-consistency-token: $ct" \
  -d '{"query":"{ categories { id } }"}' http://127.0.0.1:18702/graphql \
  | grep -E 'Success rate|Slowest|Fastest|Average|\[[0-9]{3}\]'
kill "$watcher"
echo "reader RSS peak: $(sort -k2 -n rss.txt | tail -1)"
curl -fsS localhost:18702/metrics | grep -E '^till_read_queries_total|^till_replica_fallbacks_total'
