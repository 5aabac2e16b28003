#!/usr/bin/env bash
# scripts/bench.sh — `tally bench` over gRPC (uniform and hot) and pgbench with the same
# transaction shape (scripts/pgbench-transfer.sql), one run, one fresh database, side by side.
#
# Usage:
#   scripts/bench.sh
#
# Environment (all optional):
#   BENCH_CLIENTS       concurrent clients for both tools (default 16)
#   BENCH_SECONDS       seconds per run (default 10)
#   BENCH_ACCOUNTS      accounts in the uniform mode (default 100)
#   BENCH_HOT_ACCOUNTS  accounts in the hot mode (default 4)
#   BENCH_PROFILE       cargo profile of the server and client (default release)
#   TALLY_BIN           use this tally binary instead of building one
#   DATABASE_URL        PostgreSQL server (its database name is replaced); else scripts/services.sh
#
# Not part of `make test` (it measures, it does not assert); `make bench` runs it.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
CLIENTS="${BENCH_CLIENTS:-16}"
DURATION="${BENCH_SECONDS:-10}"
ACCOUNTS="${BENCH_ACCOUNTS:-100}"
HOT="${BENCH_HOT_ACCOUNTS:-4}"
PROFILE="${BENCH_PROFILE:-release}"
PASSWORD="bench password 0123456789"

log() { printf 'bench.sh: %s\n' "$*" >&2; }
die() {
  printf 'bench.sh: error: %s\n' "$*" >&2
  exit 1
}
command -v pgbench >/dev/null 2>&1 || die "pgbench is required (Debian: apt-get install postgresql-client)"
command -v psql >/dev/null 2>&1 || die "psql is required (Debian: apt-get install postgresql-client)"

if [[ -z "${DATABASE_URL:-}" ]]; then
  eval "$("$SCRIPT_DIR/services.sh" env)"
fi
cd "$ROOT_DIR"
if [[ -n "${TALLY_BIN:-}" ]]; then
  BIN="$TALLY_BIN"
else
  log "building ($PROFILE)"
  cargo build --locked --profile "$PROFILE" >&2
  case "$PROFILE" in
    dev) BIN="$ROOT_DIR/target/debug/tally" ;;
    *) BIN="$ROOT_DIR/target/$PROFILE/tally" ;;
  esac
fi

with_database() {
  python3 - "$1" "$2" <<'EOF'
import sys
from urllib.parse import urlsplit, urlunsplit
parts = urlsplit(sys.argv[1])
print(urlunsplit(parts._replace(path="/" + sys.argv[2])))
EOF
}
DB_NAME="tally_bench_$$"
ADMIN_URL="$(with_database "$DATABASE_URL" postgres)"
URL="$(with_database "$DATABASE_URL" "$DB_NAME")"
WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/tally-bench.XXXXXX")"
SERVER_PID=""
cleanup() {
  [[ -n "$SERVER_PID" ]] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  psql "$ADMIN_URL" -qXc "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK_DIR"
}
trap cleanup EXIT

psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -qXc "CREATE DATABASE $DB_NAME" >/dev/null
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
DATABASE_URL="$URL" TALLY_ACCOUNTS_PER_OWNER_MAX=100000 RUST_LOG=warn \
  "$BIN" serve --migrate true --listen-addr "127.0.0.1:$PORT" >"$WORK_DIR/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited: $(tail -5 "$WORK_DIR/server.log")"
  sleep 0.2
done

USER_NAME="bench_$$"
printf '%s\n' "$PASSWORD" | DATABASE_URL="$URL" RUST_LOG=warn "$BIN" admin create-user \
  --username "$USER_NAME" --email "$USER_NAME@example.com" >/dev/null
DATABASE_URL="$URL" RUST_LOG=warn "$BIN" admin grant-role "$USER_NAME" banker >/dev/null

# run_tally ACCOUNTS MODE [MORE ARGS] — one `tally bench` run (it opens its own accounts).
run_tally() {
  local accounts="$1" mode="$2"
  shift 2
  "$BIN" bench --addr "http://127.0.0.1:$PORT" --username "$USER_NAME" --password "$PASSWORD" \
    --clients "$CLIENTS" --seconds "$DURATION" --accounts "$accounts" --mode "$mode" \
    --hot-accounts "$HOT" "$@"
}
log "tally bench, uniform: $CLIENTS clients, $ACCOUNTS accounts, ${DURATION}s"
run_tally "$ACCOUNTS" uniform | tee "$WORK_DIR/tally-uniform.txt" >&2
log "tally bench, hot: $CLIENTS clients, $HOT accounts, ${DURATION}s"
run_tally "$HOT" hot | tee "$WORK_DIR/tally-hot.txt" >&2
log "tally bench, JSON versus gRPC: GetAccount and CreateTransfer"
run_tally "$ACCOUNTS" uniform --operation get-account --protocol grpc |
  tee "$WORK_DIR/tally-get-grpc.txt" >&2
run_tally "$ACCOUNTS" uniform --operation get-account --protocol json |
  tee "$WORK_DIR/tally-get-json.txt" >&2
run_tally "$ACCOUNTS" uniform --operation transfer --protocol json |
  tee "$WORK_DIR/tally-uniform-json.txt" >&2

REQUESTER="$(psql "$URL" -qAtXc "SELECT id FROM users WHERE username = '$USER_NAME'")"
# pgbench's accounts: the bench user's, numbered in id order, so the hot set is the same
# accounts-per-run size as tally's.
run_pgbench() {
  local accounts="$1" name="$2"
  psql "$URL" -v ON_ERROR_STOP=1 -qX >/dev/null <<SQL
DROP TABLE IF EXISTS bench_accounts;
CREATE TABLE bench_accounts AS
  SELECT row_number() OVER (ORDER BY id) AS i, id FROM accounts
  WHERE owner_id = '$REQUESTER' ORDER BY id LIMIT $accounts;
CREATE UNIQUE INDEX ON bench_accounts (i);
SQL
  (cd "$WORK_DIR" && pgbench -n -M simple -c "$CLIENTS" -j 2 -T "$DURATION" --max-tries=1000 \
    -l --log-prefix="pgbench-$name" -f "$SCRIPT_DIR/pgbench-transfer.sql" \
    -D naccounts="$accounts" -D requester="$REQUESTER" "$URL") >"$WORK_DIR/pgbench-$name.txt" 2>&1 ||
    die "pgbench failed: $(tail -5 "$WORK_DIR/pgbench-$name.txt")"
}
log "pgbench, uniform"
run_pgbench "$ACCOUNTS" uniform
log "pgbench, hot"
run_pgbench "$HOT" hot

log "tally verify after both tools"
DATABASE_URL="$URL" RUST_LOG=warn "$BIN" verify | tail -1 >&2

python3 - "$WORK_DIR" "$CLIENTS" "$DURATION" <<'EOF'
import glob, os, re, sys
work, clients, duration = sys.argv[1], sys.argv[2], sys.argv[3]

def tally(name):
    text = open(os.path.join(work, f"tally-{name}.txt")).read()
    tps = re.search(r"calls/s\s+(\d+)", text).group(1)
    lat = re.search(r"p50 ([\d.]+)\s+p90 ([\d.]+)\s+p99 ([\d.]+)\s+max ([\d.]+)", text).groups()
    retries = re.search(r"retries\s+(\d+)", text).group(1)
    errors = re.search(r"errors\s+(.*)", text).group(1)
    return tps, lat, retries, errors

def pgbench(name):
    text = open(os.path.join(work, f"pgbench-{name}.txt")).read()
    tps = re.search(r"tps = ([\d.]+)", text).group(1)
    retried = re.search(r"number of transactions retried: (\d+)", text)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    lats = []
    for path in glob.glob(os.path.join(work, f"pgbench-{name}*")):
        if path.endswith(".txt"):
            continue
        for line in open(path):
            lats.append(int(line.split()[2]))
    lats.sort()
    pick = lambda p: lats[min(len(lats) - 1, round(p / 100 * (len(lats) - 1)))] / 1000
    lat = tuple(f"{v:.2f}" for v in (pick(50), pick(90), pick(99), lats[-1] / 1000))
    return (f"{float(tps):.0f}", lat, retried.group(1) if retried else "?",
            f"{failed.group(1)} failed" if failed else "?")

print(f"\n{clients} clients, {duration} s per run\n")
print(f"| tool | mode | transfers/s | p50 ms | p90 ms | p99 ms | max ms | retries | errors |")
print(f"|---|---|---|---|---|---|---|---|---|")
for name in ("uniform", "hot"):
    for tool, f in (("tally bench (gRPC)", tally), ("pgbench (SQL only)", pgbench)):
        tps, lat, retries, errors = f(name)
        print(f"| {tool} | {name} | {tps} | {' | '.join(lat)} | {retries} | {errors} |")

print(f"\nHTTP JSON (gateway, HTTP/1.1) versus gRPC (HTTP/2), uniform, {clients} clients\n")
print("| operation | gRPC calls/s | JSON calls/s | JSON / gRPC | gRPC p50 ms | JSON p50 ms |")
print("|---|---|---|---|---|---|")
for op, grpc_name, json_name in (("GetAccount", "get-grpc", "get-json"),
                                 ("CreateTransfer", "uniform", "uniform-json")):
    g, j = tally(grpc_name), tally(json_name)
    ratio = float(j[0]) / float(g[0]) if float(g[0]) else 0.0
    print(f"| {op} | {g[0]} | {j[0]} | {ratio:.2f} | {g[1][0]} | {j[1][0]} |")
EOF
