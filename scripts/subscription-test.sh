#!/usr/bin/env bash
# The graphql-ws reference client against a running till server in dev mode:
# subscribes to orderStatusChanged and expects PAID after payOrder with tok_ok.
#   scripts/subscription-test.sh [BASE_URL]   (default http://127.0.0.1:8080)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base_url="${1:-http://127.0.0.1:8080}"
cd "$repo/tests/subscriptions"
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
BASE_URL="$base_url" node paid.mjs
