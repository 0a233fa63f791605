#!/usr/bin/env bash
# Till as a federation subgraph behind a real @apollo/gateway: composes Till's
# `_service { sdl }` with a small reviews subgraph and queries through the gateway
# (tests/federation/gateway.mjs). Needs a running till in dev mode with
# TILL_FEDERATION=true.
#   scripts/federation-test.sh [BASE_URL]   (default http://127.0.0.1:8080)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base_url="${1:-http://127.0.0.1:8080}"
cd "$repo/tests/federation"
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
BASE_URL="$base_url" node gateway.mjs
