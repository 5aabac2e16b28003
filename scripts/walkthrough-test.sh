#!/usr/bin/env bash
# scripts/walkthrough-test.sh — run the walkthroughs of docs/walkthrough.md (scripts/walkthrough.sh: buf curl and
# plain curl) and the gateway's third-party checks (scripts/gateway-check.sh: schemathesis, a
# gRPC-web client) against a fresh `tally serve` on a fresh database, then check the server
# stops cleanly on SIGTERM.
#
# Usage:
#   scripts/walkthrough-test.sh
#
# Steps:
#   1. PostgreSQL: DATABASE_URL if set, else whatever `scripts/services.sh env` finds or starts.
#      A new database tally_walkthrough_<epoch>_<pid> is created on that server (through the
#      `postgres` database of the same URL) and dropped at the end, pass or fail.
#   2. `target/debug/tally serve --migrate true` on a free 127.0.0.1 port, waits for /readyz;
#      a `tally worker` on its mail queue writes the mail as .eml files (the walkthrough
#      verifies an email with the mailed code).
#   3. scripts/walkthrough.sh, recording what each step printed; scripts/docs-outputs.py then
#      compares the example outputs of docs/walkthrough.md and the README with those records;
#      then scripts/gateway-check.sh against the server.
#   4. SIGTERM; the server must exit with status 0 within 30 s.
#
# Environment:
#   DATABASE_URL          PostgreSQL server to use (its database name is replaced)
#   REDIS_URL             passed on to the server when set
#   TALLY_BIN             server binary (default <repo>/target/debug/tally; not built here)
#   TALLY_READY_TIMEOUT   seconds to wait for /readyz (default 60)
#   WALKTHROUGH_RECORD    a directory to keep what each walkthrough step printed in (default: a
#                         temporary one); `scripts/docs-outputs.py update DIR docs/walkthrough.md
#                         README.md` then rewrites the example outputs that changed
#
# Needs: bash, curl, python3, psql, node; buf, schemathesis and the npm gRPC-web client packages
# are installed by scripts/tools.sh on first use.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"

TALLY_BIN="${TALLY_BIN:-$ROOT_DIR/target/debug/tally}"
READY_TIMEOUT="${TALLY_READY_TIMEOUT:-60}"
STOP_TIMEOUT=30

log() { printf 'walkthrough-test.sh: %s\n' "$*" >&2; }
die() {
  printf 'walkthrough-test.sh: error: %s\n' "$*" >&2
  exit 1
}

command -v python3 >/dev/null 2>&1 || die "python3 is required"
command -v curl >/dev/null 2>&1 || die "curl is required (Debian/Ubuntu: apt-get install curl)"
command -v psql >/dev/null 2>&1 ||
  die "psql is required to create the test database (Debian/Ubuntu: apt-get install postgresql-client)"
[[ -x "$TALLY_BIN" ]] || die "$TALLY_BIN not found or not executable; build it first (cargo build)"

# Make sure the tools are there before anything is started (the first install takes a while).
"$SCRIPT_DIR/tools.sh" install

TEST_KIND=walkthrough
# shellcheck source=scripts/test-server.sh
. "$SCRIPT_DIR/test-server.sh"
# A mail queue of its own: only this test's worker drains it, and no other worker (say, of
# `make run`) on the same Redis sees these sign-ups. Its keys are deleted at the end.
# The gateway checks (schemathesis) make hundreds of sign-ups and logins from one address in
# a minute: the per-address rate limits are raised so that they test the API, not the limits
# (tests/api/abuse.rs tests those).
DATABASE_URL="$TEST_DB_URL" TALLY_ENV=development TALLY_REFLECTION=true \
  TALLY_MAIL_QUEUE="$MAIL_QUEUE" TALLY_RATE_AUTH_PER_MINUTE=1000000 \
  TALLY_RATE_WRITES_PER_SECOND=10000000 \
  "$TALLY_BIN" serve --migrate true --listen-addr "$ADDR" >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

deadline=$((SECONDS + READY_TIMEOUT))
until [[ "$(http_status "http://$ADDR/readyz")" == 200 ]]; do
  kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited before it became ready"
  ((SECONDS < deadline)) || die "/readyz did not answer 200 within ${READY_TIMEOUT}s"
  sleep 0.2
done
log "server ready"

# A worker on the server's mail queue, writing each mail as an .eml file: the walkthrough
# verifies an email with the mailed code.
MAIL_DIR="$WORK_DIR/mail"
mkdir -p "$MAIL_DIR"
log "starting $TALLY_BIN worker (mail as .eml files in $MAIL_DIR; log: $WORKER_LOG)"
DATABASE_URL="$TEST_DB_URL" TALLY_ENV=development TALLY_MAIL_QUEUE="$MAIL_QUEUE" \
  TALLY_MAIL_DIR="$MAIL_DIR" "$TALLY_BIN" worker >"$WORKER_LOG" 2>&1 &
WORKER_PID=$!

# What each step printed: kept in WALKTHROUGH_RECORD when the caller names a directory (to
# update the docs with scripts/docs-outputs.py update), else in the work directory.
RECORD_DIR="${WALKTHROUGH_RECORD:-$WORK_DIR/outputs}"
mkdir -p "$RECORD_DIR"
WALKTHROUGH_MAIL_DIR="$MAIL_DIR" WALKTHROUGH_RECORD="$RECORD_DIR" TALLY_ADDR="$ADDR" DATABASE_URL="$TEST_DB_URL" TALLY_BIN="$TALLY_BIN" \
  "$SCRIPT_DIR/walkthrough.sh" ||
  die "the walkthrough failed"
python3 "$SCRIPT_DIR/docs-outputs.py" check "$RECORD_DIR" "$ROOT_DIR/docs/walkthrough.md" \
  "$ROOT_DIR/docs/exchange.md" "$ROOT_DIR/docs/identity.md" "$ROOT_DIR/README.md" || die "an example output in the docs is not what the walkthrough saw"
TALLY_ADDR="$ADDR" "$SCRIPT_DIR/gateway-check.sh" || die "the gateway checks failed"

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
