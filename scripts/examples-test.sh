#!/usr/bin/env bash
# The client guide's examples (examples/, docs/clients.md): GraphQL Code Generator from
# the server's /schema.graphql, `tsc --noEmit`, then the examples run against a running till in dev
# mode, and again against a second till started in trusted-documents mode with the
# manifest codegen wrote, as it is.
#   scripts/examples-test.sh BASE_URL TILL_BINARY
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base_url="${1:?BASE_URL of a running till in dev mode}"
till="$(cd "$(dirname "${2:?the till binary}")" && pwd)/$(basename "$2")"
cd "$repo/examples"
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
# Types from the running server's /schema.graphql (the checked-in file is the same text).
TILL_SCHEMA="$base_url/schema.graphql" npm run --silent codegen
npx tsc --noEmit
echo "examples: codegen and tsc --noEmit ok"
npx tsc
BASE_URL="$base_url" node dist/run.js

# The manifest as codegen wrote it, on a server that runs nothing else.
work="$(mktemp -d /tmp/till-examples-XXXXXX)"
chmod 755 "$work"
install -m 0644 src/gql/persisted-documents.json "$work/manifest.json"
port=18091
(
  cd "$work"
  TILL_TRUSTED_DOCUMENTS="$work/manifest.json" TILL_LISTEN="127.0.0.1:$port" RUST_LOG=warn exec "$till" serve
) >"$work/server.log" 2>&1 &
server=$!
trap 'kill -INT "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server" 2>/dev/null; then cat "$work/server.log"; exit 1; fi
  sleep 1
done
refused="$(curl -sS "http://127.0.0.1:$port/graphql" -H 'content-type: application/json' \
  -d '{"query":"{ categories { slug } }"}')"
grep -q FORBIDDEN <<<"$refused" || { echo "trusted mode ran a document outside the manifest: $refused" >&2; exit 1; }
echo "examples: trusted-documents mode refuses other documents; running the examples there"
BASE_URL="http://127.0.0.1:$port" node dist/run.js
