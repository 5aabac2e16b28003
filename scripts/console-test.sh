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

TEST_KIND=console
# shellcheck source=scripts/test-server.sh
. "$SCRIPT_DIR/test-server.sh"
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
