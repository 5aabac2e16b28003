# scripts/test-server.sh — sourced by scripts/walkthrough-test.sh and scripts/console-test.sh:
# what both need before they start a real server and worker: DATABASE_URL (or
# scripts/services.sh), a fresh database of their own, a work directory, a mail queue of their
# own, and the EXIT trap that stops the processes, drops the database, deletes the queue's keys
# and says PASSED or FAILED. The sourcing script sets TEST_KIND (a word: the names' infix) and
# defines log and die first; it reads ADMIN_URL, TEST_DB_URL, WORK_DIR, SERVER_LOG, WORKER_LOG,
# MAIL_QUEUE and sets SERVER_PID / WORKER_PID as it starts them. Helpers: with_database,
# free_port, http_status.
# shellcheck shell=bash
: "${TEST_KIND:?set TEST_KIND before sourcing scripts/test-server.sh}"

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
DB_NAME="tally_${TEST_KIND}_$(date +%s)_$$"
ADMIN_URL="$(with_database "$DATABASE_URL" postgres)" || die "cannot parse DATABASE_URL"
TEST_DB_URL="$(with_database "$DATABASE_URL" "$DB_NAME")"
WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tally-${TEST_KIND}.XXXXXX")"
SERVER_LOG="$WORK_DIR/server.log"
WORKER_LOG="$WORK_DIR/worker.log"
SERVER_PID=""
WORKER_PID=""
DB_CREATED=""
MAIL_QUEUE="tally:${TEST_KIND}:$DB_NAME"

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
