#!/usr/bin/env bash
# Load scenarios against a real `till serve` (release build, its embedded PostgreSQL,
# rate limiting on with buckets large enough not to throttle), driven by oha:
#   browse      product(id:), products(first: 20, category, PRICE), myOrders(first: 10)
#   checkout    placeOrder with 2 lines
#   flash-sale  BUYERS orders of 1 unit racing for 100 units of one product; checks the
#               outcome (units sold = stock, no negative stock, every answer success or
#               OUT_OF_STOCK)
#   mixed       browse and checkout at the same time
# Results (oha JSON, summary.md, latency.png) go to target/load/run-<time>/.
#
#   benches/load/run.sh [--scenario all|browse|checkout|flash-sale|mixed] [--duration 15]
#                       [--connections 64] [--products 2000] [--customers 500] [--orders 20000]
#                       [--buyers 2000]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
scenario=all duration=15 connections=64 products=2000 customers=500 orders=20000 buyers=2000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --scenario) scenario="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --products) products="$2"; shift 2 ;;
    --customers) customers="$2"; shift 2 ;;
    --orders) orders="$2"; shift 2 ;;
    --buyers) buyers="$2"; shift 2 ;;
    *) sed -n '2,16p' "$0" >&2; exit 2 ;;
  esac
done
command -v oha >/dev/null || { echo "run: oha is missing: cargo install oha --locked" >&2; exit 1; }
out="$repo/target/load/run-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
chmod 755 "$out"
cargo build --release -p till-api --manifest-path "$repo/Cargo.toml"
till="$repo/target/release/till"
port=18310
base="http://127.0.0.1:$port"
export TILL_PG_DATA="$out/pg" TILL_JWT_SECRET="load-test-secret-0123456789abcdef0123456789"

echo "== seed: $products products, $customers customers, $orders orders"
(cd "$out" && "$till" seed --categories 50 --products "$products" --customers "$customers" --orders "$orders")

(cd "$out" && TILL_LISTEN="127.0.0.1:$port" TILL_SEED_DEMO=false RUST_LOG=warn \
  TILL_RATE_CUSTOMER_MAX=1000000000 TILL_RATE_CUSTOMER_RESTORE=100000000 \
  TILL_RATE_STAFF_MAX=1000000000 TILL_RATE_STAFF_RESTORE=100000000 \
  TILL_RATE_ANONYMOUS_MAX=1000000000 TILL_RATE_ANONYMOUS_RESTORE=100000000 \
  TILL_ACCESS_TOKEN_TTL_S=7200 exec "$till" serve) > "$out/server.log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -fsS "$base/readyz" >/dev/null 2>&1 && break; sleep 1; done

gql() { # token query-json
  curl -fsS "$base/graphql" -H 'content-type: application/json' ${1:+-H "authorization: Bearer $1"} -d "$2"
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }

staff="$(cd "$out" && "$till" token --role staff --sub 00000000-0000-0000-0000-000000000001 --ttl-minutes 120)"
buyer="$(gql '' '{"query":"mutation { register(input: {email: \"load@example.com\", password: \"load test password\", name: \"Load\"}) { accessToken } }"}' \
  | json 'd["data"]["register"]["accessToken"]')"
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

body() { echo "$2" > "$out/$1.body.json"; }
body product "{\"query\":\"query Product(\$id: ID!) { product(id: \$id) { id sku name price { amount currency } available categoryPath { name } } }\",\"variables\":{\"id\":\"$p1\"}}"
body products "{\"query\":\"query Browse(\$c: ID!) { products(first: 20, filter: {category: \$c}, sortBy: PRICE) { edges { node { id sku name price { amount } available } } pageInfo { hasNextPage endCursor } } }\",\"variables\":{\"c\":\"$cat_id\"}}"
body my-orders '{"query":"query Mine { myOrders(first: 10) { edges { node { id status total { amount } lines { name quantity product { name } } } } } }"}'
body place-order "{\"query\":\"mutation Buy(\$a: ID!, \$b: ID!) { placeOrder(input: {lines: [{productId: \$a, quantity: 1}, {productId: \$b, quantity: 1}]}) { orderId } }\",\"variables\":{\"a\":\"$p1\",\"b\":\"$p2\"}}"

load() { # name token [extra oha args...]
  local name="$1" token="$2"; shift 2
  oha -z "${duration}s" -c "$connections" --no-tui --output-format json -m POST -T application/json \
    -H "authorization: Bearer $token" -D "$out/$name.body.json" "$@" "$base/graphql" > "$out/$name.json"
  echo "   $name done"
}

run_browse() {
  echo "== browse"
  load product "$buyer"; load products "$buyer"; load my-orders "$buyer"
}
run_checkout() {
  echo "== checkout"
  load place-order "$buyer"
}
run_mixed() {
  echo "== mixed (browse and checkout at once)"
  cp "$out/product.body.json" "$out/mixed-product.body.json"
  cp "$out/place-order.body.json" "$out/mixed-place-order.body.json"
  load mixed-product "$buyer" & local a=$!
  load mixed-place-order "$buyer" & local b=$!
  wait "$a" "$b"
}
run_flash_sale() {
  echo "== flash sale: $buyers orders racing for 100 units"
  local made cat
  made="$(gql "$staff" "{\"query\":\"mutation { createProduct(input: {sku: \\\"FLASH-$(date +%s)\\\", name: \\\"Flash\\\", categoryId: \\\"$cat_id\\\", priceMinor: 999, initialStock: 100}) { productId } }\"}")"
  local flash; flash="$(echo "$made" | json 'd["data"]["createProduct"]["productId"]')"
  echo "{\"query\":\"mutation Flash(\$p: ID!) { placeOrder(input: {lines: [{productId: \$p, quantity: 1}]}) { orderId } }\",\"variables\":{\"p\":\"$flash\"}}" > "$out/flash-sale.body.json"
  oha -n "$buyers" -c "$connections" --no-tui --output-format json -m POST -T application/json \
    -H "authorization: Bearer $buyer" -D "$out/flash-sale.body.json" "$base/graphql" > "$out/flash-sale.json"
  sleep 2
  gql "$staff" "{\"query\":\"{ product(id: \\\"$flash\\\") { onHand reserved available } orders(first: 100) { edges { node { id } } } }\"}" > "$out/flash-sale-outcome.json"
  python3 - "$out/flash-sale-outcome.json" "$out/flash-sale.json" "$buyers" <<'PY'
import json, sys
outcome = json.load(open(sys.argv[1]))["data"]["product"]
oha = json.load(open(sys.argv[2]))
codes = oha.get("statusCodeDistribution", {})
sold = outcome["reserved"] + (100 - outcome["onHand"])
print(f"   flash sale: {sum(codes.values())} answers {codes}; sold {sold} of 100; available {outcome['available']}")
assert outcome["available"] >= 0, "negative stock"
assert sold == 100, f"sold {sold}, stock was 100"
assert set(codes) <= {"200"}, f"non-200 answers: {codes}"
PY
}

case "$scenario" in
  browse) run_browse ;;
  checkout) run_checkout ;;
  mixed) run_mixed ;;
  flash-sale) run_flash_sale ;;
  all) run_browse; run_checkout; run_mixed; run_flash_sale ;;
  *) echo "unknown scenario $scenario" >&2; exit 2 ;;
esac
python3 "$repo/benches/load/summarize.py" "$out" | tee "$out/summary.md"
echo "results in $out"
