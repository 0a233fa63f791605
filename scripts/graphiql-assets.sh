#!/usr/bin/env bash
# The GraphiQL page's third-party assets are vendored in api/graphiql/vendor/, so that
# building till needs no Node.js or npm. This script installs the versions pinned in
# api/graphiql/package.json and package-lock.json (npm ci) and:
#   scripts/graphiql-assets.sh          copies the built files and their licences into
#                                       vendor/ (after changing the pinned versions)
#   scripts/graphiql-assets.sh --check  fails unless vendor/ holds exactly those files
#                                       (run by CI: the vendored bytes are what npm serves)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$repo/api/graphiql"
vendor="$src/vendor"
check=false
[[ "${1:-}" == "--check" ]] && check=true
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$src/package.json" "$src/package-lock.json" "$work/"
(cd "$work" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >/dev/null)
nm="$work/node_modules"
# (file in node_modules, name in vendor/)
assets=(
  "react/umd/react.production.min.js react.production.min.js"
  "react-dom/umd/react-dom.production.min.js react-dom.production.min.js"
  "graphiql/graphiql.min.js graphiql.min.js"
  "graphiql/graphiql.min.css graphiql.min.css"
  "graphiql/LICENSE LICENSE-graphiql"
  "react/LICENSE LICENSE-react"
  "react-dom/LICENSE LICENSE-react-dom"
)
mkdir -p "$vendor"
stale=0
for pair in "${assets[@]}"; do
  read -r from to <<<"$pair"
  if $check; then
    if ! cmp -s "$nm/$from" "$vendor/$to"; then
      echo "api/graphiql/vendor/$to differs from $from of the pinned packages" >&2
      stale=1
    fi
  else
    cp "$nm/$from" "$vendor/$to"
  fi
done
if $check; then
  [[ $stale == 0 ]] || { echo "run scripts/graphiql-assets.sh and commit api/graphiql/vendor/" >&2; exit 1; }
  echo "api/graphiql/vendor/ holds the pinned packages' files"
else
  for p in graphiql react react-dom; do
    node -e "const p = require('$nm/$p/package.json'); console.log(p.name + ' ' + p.version + ' (' + p.license + ')')"
  done
  echo "copied into api/graphiql/vendor/; commit it"
fi
