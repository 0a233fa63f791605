#!/usr/bin/env bash
# Builds the runtime image that production runs and runs it, with podman, against a real
# PostgreSQL on this host: the migrate Job's command, `till serve` and `till worker` as
# user 65532 on a read-only root filesystem with the Kubernetes manifests' environment
# (production mode, TLS verify-full to the database, secrets as read-only files), the
# image's HEALTHCHECK, and a SIGTERM stop within the grace period. Fails when the image
# holds a shell or a package manager.
#
# No registry is reachable here, so the runtime base (distroless cc-debian12 in
# production) is made locally from this Debian 12 host's own packages: libc6, libgcc-s1
# and the CA bundle, /etc/passwd and /etc/group with nonroot (65532), nothing else. The
# Dockerfile's `prebuilt` binary stage packages the release binary built here.
#
#   scripts/image-test.sh            builds target/release/till first
#   TILL_IMAGE_BINARY=path scripts/image-test.sh   packages that binary instead
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
step() { printf -- '--- %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
fail() { echo "image-test: $*" >&2; exit 1; }

if ! command -v podman >/dev/null || [[ ! -x /usr/sbin/runc ]]; then
  step "installing podman and runc"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null; }; then
    echo "image-test: SKIPPED: podman and runc cannot be installed on this machine" >&2
    exit 0
  fi
fi
# crun and podman's default ulimits are refused by this sandbox.
pod() { podman --runtime /usr/sbin/runc --cgroup-manager cgroupfs "$@"; }
# No systemd here to time the image's HEALTHCHECK: its command is run below instead.
run_flags=(--network host --ulimit nofile=1024:1024 --ulimit nproc=1000:1000 --no-healthcheck)

if [[ -z "${TILL_IMAGE_BINARY:-}" ]]; then
  step "release build"
  cargo build --release --locked -p till-api
  TILL_IMAGE_BINARY="$repo/target/release/till"
fi
[[ -x "$TILL_IMAGE_BINARY" ]] || fail "no binary at $TILL_IMAGE_BINARY"

work="$(mktemp -d /tmp/till-image-XXXXXX)"
chmod 755 "$work"
tag="localhost/till:image-test-$$"
base="localhost/till-runtime-base:bookworm-$$"
# shellcheck disable=SC2012 # the newest of the installed versions
pgbin="$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | sort -V | tail -1)")"
pgport=18470
pgdata="$work/pg"
containers=()
cleanup() {
  local c
  for c in "${containers[@]}"; do pod rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -m immediate stop >/dev/null 2>&1 || true
  podman rmi -f "$tag" "$base" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

step "runtime base from this host's Debian 12 packages (stands in for distroless cc-debian12)"
root="$work/rootfs"
mkdir -p "$root"
# Regular files and symlinks of the packages (no directories: tar would take their whole
# contents), without their documentation.
dpkg -L libc6 libgcc-s1 \
  | grep -Ev '^/usr/share/(doc|lintian|man)/' \
  | while read -r f; do if [[ -L "$f" || -f "$f" ]]; then printf '%s\n' "$f"; fi; done > "$work/files"
# The merged /usr layout of Debian 12: /lib and /lib64 point into /usr.
mkdir -p "$root/usr/lib/x86_64-linux-gnu" "$root/usr/lib64" "$root/etc/ssl/certs" \
  "$root/tmp" "$root/home/nonroot"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
tar -C / --no-recursion -cf - -T "$work/files" 2>/dev/null | tar -C "$root" -xf - --keep-directory-symlink
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
chmod 1777 "$root/tmp"
chown 65532:65532 "$root/home/nonroot"
tar -C "$root" -c . | podman import -q - "$base" >/dev/null

step "runtime image: the Dockerfile's runtime stage with the prebuilt binary"
mkdir "$work/context"
cp "$TILL_IMAGE_BINARY" "$work/context/till"
podman build -q --format docker -f "$repo/Dockerfile" --target runtime \
  --build-arg BINARY=prebuilt --build-arg RUNTIME_IMAGE="$base" \
  -t "$tag" "$work/context" >/dev/null
size="$(podman image inspect --format '{{.Size}}' "$tag")"
echo "image size: $((size / 1024 / 1024)) MiB ($size bytes; the binary $(($(stat -c %s "$TILL_IMAGE_BINARY") / 1024 / 1024)) MiB)"
[[ "$(podman image inspect --format '{{.Config.User}}' "$tag")" == "65532:65532" ]] \
  || fail "the image does not run as 65532:65532"
health="$(podman image inspect --format '{{json .Config.Healthcheck.Test}}' "$tag")"
[[ "$health" == '["CMD","/till","healthcheck"]' ]] || fail "unexpected HEALTHCHECK: $health"

step "no shell, no package manager"
mnt="$(podman image mount "$tag")"
found="$(cd "$mnt" && find . \( -name sh -o -name bash -o -name dash -o -name ash -o -name busybox \
  -o -name apt -o -name apt-get -o -name dpkg -o -name rpm -o -name apk \) -print)"
podman image unmount "$tag" >/dev/null
[[ -z "$found" ]] || fail "the runtime image holds: $found"
echo "none found"

step "PostgreSQL on the host, TLS with a test CA (the manifests ask verify-full)"
tls="$work/tls"
mkdir "$tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=till-image-test-ca \
  -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
  -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$tls/ext"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
  -days 2 -extfile "$tls/ext" -out "$tls/server.pem" 2>/dev/null
chown -R postgres "$tls"
chmod 600 "$tls/server.key"
password="image-test-$(openssl rand -hex 12)"
printf '%s\n' "$password" > "$work/pw"
chown postgres "$work/pw"
mkdir "$pgdata" "$work/pgrun"
chown postgres "$pgdata" "$work/pgrun"
chmod 700 "$pgdata"
runuser -u postgres -- "$pgbin/initdb" -D "$pgdata" -U postgres --auth=scram-sha-256 \
  --pwfile="$work/pw" -E UTF8 --locale=C.UTF-8 >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdata" -l "$work/pgrun/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pgport -k $work/pgrun -c ssl=on \
      -c ssl_cert_file=$tls/server.pem -c ssl_key_file=$tls/server.key" start >/dev/null
PGPASSWORD="$password" "$pgbin/psql" -X -q -h 127.0.0.1 -p "$pgport" -U postgres -d postgres \
  -c "CREATE DATABASE till"

step "secrets and environment as the manifests give them"
secrets="$work/secrets"
mkdir "$secrets"
printf 'postgres://postgres:%s@localhost:%s/till' "$password" "$pgport" > "$secrets/database-url"
openssl rand -hex 32 > "$secrets/jwt-secret"
openssl rand -hex 32 > "$secrets/payment-webhook-secret"
mkdir "$work/db-ca"
cp "$tls/ca.pem" "$work/db-ca/ca.pem"
chmod 755 "$secrets" "$work/db-ca"
chmod 644 "$secrets"/* "$work/db-ca/ca.pem"
# The ConfigMap's data, one KEY=value a line; the listen addresses move to loopback ports
# of their own (the containers share the host's network).
python3 - "$repo/deploy/k8s/base/configmap.yaml" > "$work/env" <<'PY'
import re, sys
data = False
for line in open(sys.argv[1]):
    if line.startswith("data:"):
        data = True
        continue
    m = re.match(r"^  ([A-Z_][A-Z0-9_]*): (.*)$", line) if data else None
    if m:
        value = m.group(2).strip()
        if value[:1] in "\"'":
            value = value[1:-1]
        print(f"{m.group(1)}={value}")
PY
grep -q '^TILL_MODE=production$' "$work/env" || fail "the ConfigMap does not ask for production mode"
api_port=18480
worker_admin=18482
ctr_run() { # name [podman run options...] -- args...
  local name="$1"; shift
  containers+=("$name")
  pod run -d --name "$name" "${run_flags[@]}" --read-only --read-only-tmpfs=false \
    --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges \
    --env-file "$work/env" \
    -v "$secrets:/var/run/secrets/till:ro" -v "$work/db-ca:/etc/till/db-ca:ro" "$@" >/dev/null
}
wait_http() { # url container
  local _
  for _ in $(seq 1 60); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    [[ "$(podman inspect --format '{{.State.Running}}' "$2")" == "true" ]] \
      || { podman logs "$2" | tail -20; fail "$2 stopped before $1 answered"; }
    sleep 1
  done
  podman logs "$2" | tail -20
  fail "$1 did not answer within 60 s"
}
stop_within() { # container grace-seconds
  local started code
  started=$(date +%s)
  pod stop -t "$2" "$1" >/dev/null
  code="$(podman inspect --format '{{.State.ExitCode}}' "$1")"
  echo "$1 stopped in $(( $(date +%s) - started )) s (grace $2 s), exit $code"
  [[ "$code" == 0 ]] || { podman logs "$1" | tail -20; fail "$1 exited $code after SIGTERM"; }
  (( $(date +%s) - started < $2 )) || fail "$1 needed the whole grace period (killed)"
}

step "the migrate Job's command: till migrate"
containers+=(till-migrate-$$)
pod run --name "till-migrate-$$" "${run_flags[@]}" --read-only --read-only-tmpfs=false \
  --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges --env-file "$work/env" \
  -v "$secrets:/var/run/secrets/till:ro" -v "$work/db-ca:/etc/till/db-ca:ro" \
  "$tag" migrate || fail "till migrate failed in the container"
PGPASSWORD="$password" "$pgbin/psql" -X -At -h 127.0.0.1 -p "$pgport" -U postgres -d till \
  -c "SELECT count(*) FROM __diesel_schema_migrations" | grep -qv '^0$' \
  || fail "no migrations recorded"

step "till serve as the api Deployment runs it"
ctr_run "till-api-$$" -e TILL_LISTEN="127.0.0.1:$api_port" -e TILL_ADMIN_LISTEN="127.0.0.1:$((api_port + 1))" \
  "$tag" serve --projector false --jobs false
wait_http "http://127.0.0.1:$api_port/readyz" "till-api-$$"
answer="$(curl -fsS "http://127.0.0.1:$api_port/graphql" -H 'content-type: application/json' \
  -d '{"query":"{ categories { id } }"}')"
echo "GraphQL: $answer"
python3 -c 'import json, sys; d = json.loads(sys.argv[1]); assert d["data"] == {"categories": []} and "errors" not in d' "$answer" \
  || fail "unexpected GraphQL answer"
# The image's HEALTHCHECK command, as the image declares it (checked above).
pod exec "till-api-$$" /till healthcheck || fail "the image's HEALTHCHECK failed in the api container"
echo "HEALTHCHECK ok"
grace="$(sed -n 's/^ *terminationGracePeriodSeconds: *\([0-9]*\).*/\1/p' deploy/k8s/base/api-deployment.yaml)"
stop_within "till-api-$$" "${grace:-30}"

step "till worker as the worker Deployment runs it"
ctr_run "till-worker-$$" -e TILL_ADMIN_LISTEN="127.0.0.1:$worker_admin" "$tag" worker
wait_http "http://127.0.0.1:$worker_admin/readyz" "till-worker-$$"
metrics="$(curl -fsS "http://127.0.0.1:$worker_admin/metrics")"
grep -q '^till_projection_lag_events' <<<"$metrics" || fail "the worker's /metrics has no projection lag"
echo "worker /metrics: $(grep -c '^till_' <<<"$metrics") till_ series"
pod exec "till-worker-$$" /till healthcheck || fail "till healthcheck failed in the worker container"
grace="$(sed -n 's/^ *terminationGracePeriodSeconds: *\([0-9]*\).*/\1/p' deploy/k8s/base/worker-deployment.yaml)"
stop_within "till-worker-$$" "${grace:-30}"

echo "image test passed"
