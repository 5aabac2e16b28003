# scripts/lib.sh — helpers the scripts share (source it: `. "$SCRIPT_DIR/lib.sh"`).
#
# need_packages COMMAND PACKAGE... — succeeds when COMMAND runs; else, as root on a Debian-like
# system and unless TALLY_NO_INSTALL is set, installs the Debian PACKAGEs with apt-get; else
# fails saying what to install.

tally_log() { printf '%s: %s\n' "${TALLY_SCRIPT:-tally}" "$*" >&2; }
tally_die() {
  printf '%s: error: %s\n' "${TALLY_SCRIPT:-tally}" "$*" >&2
  exit 1
}

need_packages() {
  local command="$1"
  shift
  command -v "$command" >/dev/null 2>&1 && return 0
  if [[ -n "${TALLY_NO_INSTALL:-}" || "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    tally_die "$command is required: install it (Debian/Ubuntu: apt-get install $*) and run again"
  fi
  tally_log "$command not found: installing $* with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || tally_die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "$@" >&2 || tally_die "apt-get install $* failed"
  command -v "$command" >/dev/null 2>&1 || tally_die "$command still missing after apt-get install $*"
}

# need_python_venv — python3 that can create a virtual environment with pip (Debian splits venv
# and ensurepip into python3-venv).
need_python_venv() {
  local probe ok=0
  probe="$(mktemp -d)"
  if command -v python3 >/dev/null 2>&1 && python3 -m venv "$probe/venv" >/dev/null 2>&1 &&
    [[ -x "$probe/venv/bin/pip" ]]; then
    ok=1
  fi
  rm -rf "$probe"
  [[ "$ok" -eq 1 ]] && return 0
  if [[ -n "${TALLY_NO_INSTALL:-}" || "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    tally_die "python3 with the venv module is required: install it (Debian/Ubuntu: apt-get install python3 python3-venv) and run again"
  fi
  tally_log "python3 cannot create a virtual environment: installing python3 python3-venv with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || tally_die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends python3 python3-venv >&2 ||
    tally_die "apt-get install python3 python3-venv failed"
}
