#!/usr/bin/env bash
# `make k8s-check`: render every overlay of deploy/k8s with kustomize and validate the result
# against the Kubernetes schemas (kubernetes-validate, strict: unknown fields are errors;
# KEDA's kinds are CRDs and only checked by tests/unit/test_deploy.py), then run that test.
# Tools go into a virtualenv of their own (.data/container-tools), not the project's.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=${CANOPY_TOOLS_VENV:-.data/container-tools}
if [ ! -x "$tools/bin/kubernetes-validate" ]; then
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q kubernetes-validate pyyaml pytest requests "psycopg[binary]" huey redis 2> >(grep -v '^WARNING: Location' >&2)
fi
if command -v kubectl >/dev/null; then render=(kubectl kustomize)
elif command -v kustomize >/dev/null; then render=(kustomize build)
else echo "k8s-check: needs kubectl (Debian: kubernetes-client) or kustomize" >&2; exit 1; fi
mkdir -p .data
for overlay in deploy/k8s/overlays/*/; do
  out=.data/k8s-$(basename "$overlay").yaml
  "${render[@]}" "$overlay" >"$out"
  echo "k8s-check: $overlay renders $(grep -c '^kind:' "$out") objects"
  "$tools/bin/kubernetes-validate" --strict --quiet --no-warn -k "${K8S_VERSION:-1.30.0}" "$out" deploy/k8s/secret.example.yaml
  echo "k8s-check: $out and deploy/k8s/secret.example.yaml valid against Kubernetes ${K8S_VERSION:-1.30.0} (strict)"
done
py=.venv/bin/python; [ -x "$py" ] || py=$tools/bin/python
"$py" -m pytest -q -p no:cacheprovider tests/unit/test_deploy.py
