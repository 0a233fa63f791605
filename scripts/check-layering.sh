#!/usr/bin/env bash
# Dependencies point one way: api -> domain, api -> read-models, read-models -> domain.
# The domain knows nothing of HTTP, GraphQL or the read side; the read side nothing of
# HTTP or GraphQL.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fail=0
check() {
  local crate=$1; shift
  local tree
  tree="$(cargo tree -p "$crate" -e normal --prefix none --format '{p}' | awk '{print $1}' | sort -u)"
  for banned in "$@"; do
    if grep -qx "$banned" <<<"$tree"; then
      echo "layering: $crate must not depend on $banned" >&2
      fail=1
    fi
  done
}
check till-domain actix-web async-graphql till-read-models till-api
check till-read-models actix-web async-graphql till-api
if [[ $fail -eq 0 ]]; then echo "layering: ok (domain and read-models are free of HTTP and GraphQL)"; fi
exit $fail
