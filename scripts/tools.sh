#!/usr/bin/env bash
# scripts/tools.sh — project-local developer tools, installed under <repo>/.tools/ (gitignored).
#
# Usage:
#   scripts/tools.sh buf           install buf if needed, print the path of the buf executable
#   scripts/tools.sh bin           install buf if needed, print the path of the bin dir
#   scripts/tools.sh schemathesis  install schemathesis if needed, print the path of its executable
#   scripts/tools.sh aiosmtpd      install aiosmtpd if needed, print the path of the venv's python
#   scripts/tools.sh node-modules  install the gRPC-web client packages, print node_modules' path
#   scripts/tools.sh install       install every tool if needed (prints nothing on stdout)
#   scripts/tools.sh version       print the pinned versions
#
# Tools:
#   buf  npm package @bufbuild/buf, pinned to BUF_VERSION below (exact version). Works offline
#        once installed; `buf curl` talks to `tally serve` through server reflection.
#   schemathesis, aiosmtpd  PyPI, pinned to SCHEMATHESIS_VERSION and AIOSMTPD_VERSION, in one
#        virtualenv at .tools/venv (needs python3 with venv; as root on Debian, python3-venv is
#        installed when missing). The tests run scripts/smtp_sink.py with that python as a real
#        SMTP server.
#   @connectrpc/connect, @connectrpc/connect-web, @bufbuild/protobuf  npm, pinned below: the
#        gRPC-web client that scripts/grpc-web-client.cjs runs under node.
#
# Installing is idempotent: when the pinned version is already in .tools/ nothing runs except a
# version check (a few milliseconds). A different installed version is replaced. Concurrent runs
# are serialised with flock when it is available.
#
# Needs npm (and node). If npm is missing and we run as root on a Debian-like system, the
# distribution packages `nodejs npm` are installed with apt-get, unless TALLY_NO_INSTALL is set
# (non-empty); otherwise the script fails saying what to install.
#
# stdout carries only the requested path; all log lines go to stderr, so
#   BUF="$(scripts/tools.sh buf)"
# is safe.

set -euo pipefail

# Pinned tool versions. Bump deliberately (npm view @bufbuild/buf version).
BUF_VERSION="1.75.0"
SCHEMATHESIS_VERSION="4.32.5"
CONNECT_VERSION="2.2.0"
PROTOBUF_ES_VERSION="2.17.0"
AIOSMTPD_VERSION="1.4.6"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
TOOLS_DIR="$ROOT_DIR/.tools"
NODE_MODULES="$TOOLS_DIR/node_modules"
# Stable, platform-independent place for the executables (symlinks into node_modules).
BIN_DIR="$TOOLS_DIR/bin"

log() { printf 'tools.sh: %s\n' "$*" >&2; }
die() {
  printf 'tools.sh: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
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

VENV_DIR="$TOOLS_DIR/venv"

installed_schemathesis() {
  local exe="$VENV_DIR/bin/schemathesis" version
  [[ -x "$exe" ]] || return 1
  version="$("$exe" --version 2>/dev/null)" || return 1
  [[ "$version" == *" $SCHEMATHESIS_VERSION" ]] || return 1
  printf '%s\n' "$exe"
}

# Path of the venv's python when it has the pinned aiosmtpd, or failure.
installed_aiosmtpd() {
  local python="$VENV_DIR/bin/python" version
  [[ -x "$python" ]] || return 1
  version="$("$python" -c 'import importlib.metadata as m; print(m.version("aiosmtpd"))' 2>/dev/null)" || return 1
  [[ "$version" == "$AIOSMTPD_VERSION" ]] || return 1
  printf '%s\n' "$python"
}

# Both Python tools live in one venv; installing either installs both pinned versions.
install_python_tools() {
  if installed_schemathesis >/dev/null && installed_aiosmtpd >/dev/null; then
    return 0
  fi
  command -v python3 >/dev/null 2>&1 || die "python3 is required for schemathesis and aiosmtpd"
  mkdir -p "$TOOLS_DIR"
  local lock_fd=""
  if command -v flock >/dev/null 2>&1; then
    exec {lock_fd}>"$TOOLS_DIR/.lock-venv"
    flock "$lock_fd"
    if installed_schemathesis >/dev/null && installed_aiosmtpd >/dev/null; then
      exec {lock_fd}>&-
      return 0
    fi
  fi
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [[ -z "${TALLY_NO_INSTALL:-}" ]] && is_root && command -v apt-get >/dev/null 2>&1; then
      log "python3 venv support missing: installing python3-venv with apt-get"
      export DEBIAN_FRONTEND=noninteractive
      { apt-get update && apt-get install -y --no-install-recommends python3-venv; } >&2 ||
        die "apt-get install python3-venv failed"
    else
      die "python3 venv support is required (Debian/Ubuntu: apt-get install python3-venv)"
    fi
  fi
  log "installing schemathesis $SCHEMATHESIS_VERSION and aiosmtpd $AIOSMTPD_VERSION into $VENV_DIR"
  [[ -x "$VENV_DIR/bin/python" ]] || python3 -m venv "$VENV_DIR" >&2 || die "python3 -m venv failed"
  "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "aiosmtpd==$AIOSMTPD_VERSION" >&2 ||
    die "pip install of schemathesis and aiosmtpd failed (is PyPI reachable?)"
  if [[ -n "$lock_fd" ]]; then
    exec {lock_fd}>&-
  fi
  installed_schemathesis >/dev/null || die "schemathesis is not runnable after pip install"
  installed_aiosmtpd >/dev/null || die "aiosmtpd $AIOSMTPD_VERSION is not importable after pip install"
}

node_modules_ready() {
  local want="$NODE_MODULES/@connectrpc/connect-web/package.json"
  [[ -f "$want" ]] && grep -q "\"version\": \"$CONNECT_VERSION\"" "$want" &&
    [[ -f "$NODE_MODULES/@bufbuild/protobuf/package.json" ]]
}

install_node_modules() {
  if node_modules_ready; then
    return 0
  fi
  ensure_npm
  mkdir -p "$TOOLS_DIR"
  log "installing the gRPC-web client packages into $TOOLS_DIR"
  npm install --prefix "$TOOLS_DIR" --save-exact --ignore-scripts --no-audit --no-fund \
    --loglevel=error "@connectrpc/connect@$CONNECT_VERSION" \
    "@connectrpc/connect-web@$CONNECT_VERSION" "@bufbuild/protobuf@$PROTOBUF_ES_VERSION" >&2 ||
    die "npm install of the gRPC-web client packages failed (is the npm registry reachable?)"
  node_modules_ready || die "the gRPC-web client packages are missing after npm install"
}

main() {
  local command="${1:-}"
  case "$command" in
    buf)
      install_buf
      installed_buf
      ;;
    bin)
      install_buf
      printf '%s\n' "$BIN_DIR"
      ;;
    schemathesis)
      install_python_tools
      installed_schemathesis
      ;;
    aiosmtpd)
      install_python_tools
      installed_aiosmtpd
      ;;
    node-modules)
      install_node_modules
      printf '%s\n' "$NODE_MODULES"
      ;;
    install)
      install_buf
      install_python_tools
      install_node_modules
      ;;
    version)
      printf 'buf %s\nschemathesis %s\naiosmtpd %s\n@connectrpc/connect(-web) %s\n@bufbuild/protobuf %s\n' \
        "$BUF_VERSION" "$SCHEMATHESIS_VERSION" "$AIOSMTPD_VERSION" "$CONNECT_VERSION" "$PROTOBUF_ES_VERSION"
      ;;
    -h | --help | help)
      usage
      ;;
    *)
      usage
      die "unknown command '${command}' (expected buf, bin, schemathesis, aiosmtpd, node-modules, install or version)"
      ;;
  esac
}

main "$@"
