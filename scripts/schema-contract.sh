#!/usr/bin/env bash
# The schema contract: schema.graphql against schema.released.graphql with
# @graphql-inspector/cli; a breaking change fails unless docs/schema-changelog.md lists
# its path under "Unreleased" (tests/schema-contract/listed-in-changelog.cjs). First
# proves the check bites: an unannounced removal fails, the same removal announced passes.
#   scripts/schema-contract.sh
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo/tests/schema-contract"
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
inspector=./node_modules/.bin/graphql-inspector
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

node drop-field.mjs "$repo/schema.released.graphql" > "$scratch/dropped.graphql"
if "$inspector" diff "$repo/schema.released.graphql" "$scratch/dropped.graphql" \
     --rule ./listed-in-changelog.cjs > "$scratch/unannounced.log" 2>&1; then
  cat "$scratch/unannounced.log"
  echo "the check let an unannounced breaking change (Query.products removed) through" >&2
  exit 1
fi
printf '# Schema changelog\n\n## Unreleased\n\n- `Query.products` removed.\n' > "$scratch/changelog.md"
if ! SCHEMA_CHANGELOG="$scratch/changelog.md" "$inspector" diff "$repo/schema.released.graphql" \
     "$scratch/dropped.graphql" --rule ./listed-in-changelog.cjs > "$scratch/announced.log" 2>&1; then
  cat "$scratch/announced.log"
  echo "the check refused a breaking change listed in the changelog" >&2
  exit 1
fi
echo "self-test: an unannounced breaking change fails, an announced one passes"

"$inspector" diff "$repo/schema.released.graphql" "$repo/schema.graphql" --rule ./listed-in-changelog.cjs
