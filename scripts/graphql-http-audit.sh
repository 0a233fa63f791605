#!/usr/bin/env bash
# GraphQL-over-HTTP spec audit (npm graphql-http) of a running Till server.
#   scripts/graphql-http-audit.sh [BASE_URL]   (default http://127.0.0.1:8080)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base_url="${1:-http://127.0.0.1:8080}"
cd "$repo/tests/http-audit"
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
URL="$base_url/graphql" node audit.mjs
