#!/usr/bin/env bash
# rebuild-visibility.sh BIN SEED_DIR RUN_DIR [rebuild-visibility.py options]: copy the data
# folder a `till seed` left in SEED_DIR/pg to RUN_DIR, start `till serve` on it, run
# benches/load/rebuild-visibility.py against it (an order-view rebuild under writes), stop
# the server. Load run 18 in benches/README.md.
set -euo pipefail
bin="$1" seed="$2" dir="$3"; shift 3
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

rm -rf "$dir"; cp -a "$seed" "$dir"
cd "$dir"
port=18320; base="http://127.0.0.1:$port"
export TILL_PG_DATA="$dir/pg" TILL_JWT_SECRET="load-test-secret-0123456789abcdef0123456789"
(TILL_LISTEN="127.0.0.1:$port" TILL_ADMIN_LISTEN="127.0.0.1:$((port + 1))" TILL_SEED_DEMO=false RUST_LOG=warn \
  TILL_RATE_CUSTOMER_MAX=1000000000 TILL_RATE_CUSTOMER_RESTORE=100000000 \
  TILL_RATE_STAFF_MAX=1000000000 TILL_RATE_STAFF_RESTORE=100000000 \
  TILL_ACCESS_TOKEN_TTL_S=7200 exec "$bin" serve) > "$dir/server.log" 2>&1 &
server=$!
trap 'kill -INT $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 1 180); do curl -fsS "$base/readyz" >/dev/null 2>&1 && break; sleep 1; done
pgport="$(sed -n 4p "$dir/pg/postmaster.pid")"
sql() { /usr/lib/postgresql/15/bin/psql -X -At -h 127.0.0.1 -p "$pgport" -U postgres -d till -c "$1"; }
sql "UPDATE inventory SET on_hand = on_hand + 10000000 WHERE product_id IN (SELECT id FROM products WHERE status = 'ACTIVE' ORDER BY id LIMIT 200)" >/dev/null
sql "SELECT id FROM customers WHERE role = 'CUSTOMER' ORDER BY id LIMIT 200" > customers.txt
sql "SELECT id FROM products WHERE status = 'ACTIVE' ORDER BY id LIMIT 200" > products.txt
while read -r c; do "$bin" token --role customer --sub "$c" --ttl-minutes 120; done < customers.txt > tokens.txt
admin="$("$bin" token --role admin --sub 00000000-0000-0000-0000-0000000000ad --ttl-minutes 120)"
python3 - "$dir" "$admin" <<'PY'
import base64, json, pathlib, sys
out = pathlib.Path(sys.argv[1])
gid = lambda kind, u: base64.b64encode(f"{kind}:{u}".encode()).decode().rstrip("=")
json.dump({"admin": sys.argv[2], "tokens": out.joinpath("tokens.txt").read_text().split(),
           "products": [gid("Product", u) for u in out.joinpath("products.txt").read_text().split()]},
          open(out / "data.json", "w"))
PY
python3 "$repo/benches/load/rebuild-visibility.py" "$base" "$pgport" "$dir/data.json" "$dir/outcome.json" "$@"
curl -fsS "http://127.0.0.1:$((port + 1))/metrics" | grep -E '^till_db_horizon_age_seconds|^till_projection_commit_visible_seconds_(sum|count)' > "$dir/metrics-after.txt" || true
