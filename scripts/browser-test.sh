#!/usr/bin/env bash
# Headless-Chromium test of the GraphiQL page of a running till server.
#
#   scripts/browser-test.sh [BASE_URL]     (default http://127.0.0.1:8080)
#
# Installs Debian's chromium when /usr/bin/chromium is missing (needs root or sudo),
# installs the pinned playwright-core, and runs tests/browser/graphiql.mjs. The
# screenshot goes to $SCREENSHOT (default target/graphiql.png under the repository).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
base_url="${1:-${BASE_URL:-http://127.0.0.1:8080}}"

if [[ ! -x /usr/bin/chromium ]]; then
  if ! command -v apt-get >/dev/null; then
    echo "browser-test: /usr/bin/chromium is missing and apt-get is not available; install Chromium" >&2
    exit 1
  fi
  sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then sudo=(sudo); fi
  echo "browser-test: installing chromium with apt-get" >&2
  "${sudo[@]}" apt-get update
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium
fi

if ! command -v npm >/dev/null; then
  echo "browser-test: npm is missing; install Node.js 20 or newer" >&2
  exit 1
fi

cd "$repo/tests/browser"
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error

BASE_URL="$base_url" SCREENSHOT="${SCREENSHOT:-$repo/target/graphiql.png}" node graphiql.mjs
