#!/usr/bin/env bash
# scripts/console-test.sh — the web console (/console) and the API explorer (/docs) in a real
# browser: Debian's Chromium, headless, driven by playwright-core (scripts/console-test.cjs),
# against a fresh `tally serve` and `tally worker` on a fresh database.
#
# Usage:
#   scripts/console-test.sh
#
# Steps:
#   1. Chromium: CHROMIUM if set, else /usr/bin/chromium, installed with apt-get (package
#      `chromium`) as root when missing; playwright-core from tools/package-lock.json (make
#      tools); vendor/swagger-ui/ must equal the pinned swagger-ui-dist (vendor-swagger-ui.sh).
#   2. PostgreSQL: DATABASE_URL if set, else whatever `scripts/services.sh env` finds or starts.
#      A new database tally_console_<epoch>_<pid> is created and dropped at the end.
#   3. `target/debug/tally serve --migrate true` on a free 127.0.0.1 port with 30 s access
#      tokens (so the console refreshes its session during the run), and a `tally worker`
#      writing the mail as .eml files whose links open the console (TALLY_MAIL_LINK=console).
#   4. scripts/console-test.cjs: the scenario, screenshots into SCREENS_DIR; it prints
#      "N passed, N failed" and the figures (log-in render time, asset sizes).
#   5. SIGTERM; the server must exit with status 0.
#
# Environment:
#   DATABASE_URL, REDIS_URL   as for scripts/walkthrough-test.sh
#   TALLY_BIN                 server binary (default <repo>/target/debug/tally; not built here)
#   CHROMIUM                  the browser (default /usr/bin/chromium)
#   SCREENS_DIR               where the screenshots go (default <repo>/target/console-screens)
#
# Needs: bash, curl, python3, psql, node, npm; the rest is installed on first use.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"

TALLY_BIN="${TALLY_BIN:-$ROOT_DIR/target/debug/tally}"
READY_TIMEOUT="${TALLY_READY_TIMEOUT:-60}"
STOP_TIMEOUT=30

log() { printf 'console-test.sh: %s\n' "$*" >&2; }
die() {
  printf 'console-test.sh: error: %s\n' "$*" >&2
  exit 1
}

command -v python3 >/dev/null 2>&1 || die "python3 is required"
command -v curl >/dev/null 2>&1 || die "curl is required (Debian/Ubuntu: apt-get install curl)"
command -v psql >/dev/null 2>&1 ||
  die "psql is required to create the test database (Debian/Ubuntu: apt-get install postgresql-client)"
[[ -x "$TALLY_BIN" ]] || die "$TALLY_BIN not found or not executable; build it first (cargo build)"

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
SCREENS_DIR="${SCREENS_DIR:-$ROOT_DIR/target/console-screens}"
if [[ ! -x "$CHROMIUM" ]]; then
  TALLY_SCRIPT=console-test.sh
  # shellcheck source=scripts/lib.sh
  . "$SCRIPT_DIR/lib.sh"
  need_packages chromium chromium
  CHROMIUM="$(command -v chromium)"
fi
log "browser: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
NODE_MODULES="$("$SCRIPT_DIR/tools.sh" node-modules)" || die "could not install the npm packages"
"$SCRIPT_DIR/vendor-swagger-ui.sh" check || die "vendor/swagger-ui/ is not the pinned swagger-ui-dist"

if [[ -z "${DATABASE_URL:-}" ]]; then
  log "DATABASE_URL is not set: asking scripts/services.sh"
  eval "$("$SCRIPT_DIR/services.sh" env)"
fi
[[ -n "${DATABASE_URL:-}" ]] || die "DATABASE_URL is empty"

# with_database URL NAME — URL with its database (path) replaced by NAME, query kept.
with_database() {
  python3 - "$1" "$2" <<'EOF'
import sys
from urllib.parse import urlsplit, urlunsplit
url, name = sys.argv[1], sys.argv[2]
parts = urlsplit(url)
if parts.scheme not in ("postgres", "postgresql"):
    sys.exit("DATABASE_URL must be a postgres:// or postgresql:// URL")
print(urlunsplit(parts._replace(path="/" + name)))
EOF
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# http_status URL — the HTTP status code of a GET, or 000 when nothing answers.
http_status() {
  python3 - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
EOF
}

export PGCONNECT_TIMEOUT=10
DB_NAME="tally_console_$(date +%s)_$$"
ADMIN_URL="$(with_database "$DATABASE_URL" postgres)" || die "cannot parse DATABASE_URL"
TEST_DB_URL="$(with_database "$DATABASE_URL" "$DB_NAME")"
WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tally-console.XXXXXX")"
SERVER_LOG="$WORK_DIR/server.log"
WORKER_LOG="$WORK_DIR/worker.log"
SERVER_PID=""
WORKER_PID=""
DB_CREATED=""
MAIL_QUEUE="tally:console:$DB_NAME"

cleanup() {
  local rc=$?
  if [[ -n "$WORKER_PID" ]] && kill -0 "$WORKER_PID" 2>/dev/null; then
    kill -TERM "$WORKER_PID" 2>/dev/null || true
    wait "$WORKER_PID" 2>/dev/null || true
  fi
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    log "killing the server (pid $SERVER_PID)"
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ -n "$DB_CREATED" ]]; then
    log "dropping database $DB_NAME"
    psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -qXc "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" \
      >/dev/null 2>&1 ||
      psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -qXc "DROP DATABASE IF EXISTS $DB_NAME" >/dev/null ||
      log "warning: could not drop database $DB_NAME"
  fi
  if [[ -n "$DB_CREATED" ]] && command -v redis-cli >/dev/null 2>&1; then
    # The sign-ups' jobs on the server's own mail queue, which no worker drained.
    redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" --scan --pattern "$MAIL_QUEUE:*" 2>/dev/null |
      xargs -r redis-cli -u "${REDIS_URL:-redis://127.0.0.1:6379}" del >/dev/null 2>&1 || true
  fi
  if [[ "$rc" -ne 0 && -s "$SERVER_LOG" ]]; then
    log "server log (last 40 lines of $SERVER_LOG):"
    tail -n 40 "$SERVER_LOG" >&2
  fi
  rm -rf "$WORK_DIR"
  if [[ "$rc" -eq 0 ]]; then
    log "PASSED"
  else
    log "FAILED (exit status $rc)"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "creating database $DB_NAME"
psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -qXc "CREATE DATABASE $DB_NAME" >/dev/null ||
  die "could not create database $DB_NAME through $(with_database "$DATABASE_URL" postgres | sed 's#//[^@/]*@#//***@#')"
DB_CREATED=1

PORT="$(free_port)"
ADDR="127.0.0.1:$PORT"
log "starting $TALLY_BIN serve on $ADDR (log: $SERVER_LOG)"
# A mail queue of its own: only this test's worker drains it. Every browser page logs in and
# refreshes from one address: the per-address limit on those calls is raised (abuse.rs tests
# it). Access tokens live 30 s, so every page's session is refreshed (rotated) during the run.
DATABASE_URL="$TEST_DB_URL" TALLY_ENV=development \
  TALLY_MAIL_QUEUE="$MAIL_QUEUE" TALLY_RATE_AUTH_PER_MINUTE=1000000 \
  TALLY_ACCESS_TOKEN_TTL_SECS=30 \
  "$TALLY_BIN" serve --migrate true --listen-addr "$ADDR" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

deadline=$((SECONDS + READY_TIMEOUT))
until [[ "$(http_status "http://$ADDR/readyz")" == 200 ]]; do
  kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited before it became ready"
  ((SECONDS < deadline)) || die "/readyz did not answer 200 within ${READY_TIMEOUT}s"
  sleep 0.2
done
log "server ready"

# A worker on the server's mail queue, writing each mail as an .eml file whose link opens the
# console's verify screen: the test opens the link the real worker wrote.
MAIL_DIR="$WORK_DIR/mail"
mkdir -p "$MAIL_DIR"
log "starting $TALLY_BIN worker (mail as .eml files in $MAIL_DIR; log: $WORKER_LOG)"
DATABASE_URL="$TEST_DB_URL" TALLY_ENV=development TALLY_MAIL_QUEUE="$MAIL_QUEUE" \
  TALLY_MAIL_DIR="$MAIL_DIR" TALLY_PUBLIC_URL="http://$ADDR" TALLY_MAIL_LINK=console \
  "$TALLY_BIN" worker >"$WORKER_LOG" 2>&1 &
WORKER_PID=$!

mkdir -p "$SCREENS_DIR"
rm -f "$SCREENS_DIR"/*.png
TALLY_URL="http://$ADDR" MAIL_DIR="$MAIL_DIR" TALLY_BIN="$TALLY_BIN" DATABASE_URL="$TEST_DB_URL" \
  CHROMIUM="$CHROMIUM" PLAYWRIGHT_CORE="$NODE_MODULES/playwright-core" SCREENS_DIR="$SCREENS_DIR" \
  node "$SCRIPT_DIR/console-test.cjs" || die "the browser test failed"
log "screenshots: $(find "$SCREENS_DIR" -name '*.png' | wc -l) in $SCREENS_DIR"

log "sending SIGTERM to the server (pid $SERVER_PID)"
kill -TERM "$SERVER_PID"
deadline=$((SECONDS + STOP_TIMEOUT))
while kill -0 "$SERVER_PID" 2>/dev/null; do
  ((SECONDS < deadline)) || die "the server did not exit within ${STOP_TIMEOUT}s of SIGTERM"
  sleep 0.2
done
status=0
wait "$SERVER_PID" || status=$?
SERVER_PID=""
[[ "$status" -eq 0 ]] || die "the server exited with status $status after SIGTERM (expected 0)"
log "server exited with status 0 after SIGTERM"
