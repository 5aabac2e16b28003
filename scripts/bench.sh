#!/usr/bin/env bash
# scripts/bench.sh — what `make bench` runs: tally against pgbench, in one run on one fresh
# database, printed as one markdown table.
#
# Usage:
#   scripts/bench.sh
#
# Environment (all optional):
#   BENCH_SECONDS       seconds per run (default 10)
#   BENCH_PROFILE       cargo profile of the server and client (default release; dev = debug)
#   TALLY_BIN           use this tally binary instead of building one
#   BENCH_ACCOUNTS      accounts of the uniform mode (default 1000)
#   BENCH_HOT_ACCOUNTS  accounts of the hot mode, the first of those (default 10)
#   BENCH_HISTORY_ENTRIES  entries of each account of the point-in-time run (default 1000000)
#   BENCH_ONLY          `feed`: only the change feed's runs (lag, then cost) and their rows
#   DATABASE_URL        PostgreSQL server (its database name is replaced); else scripts/services.sh
#
# The runs, in this order, each BENCH_SECONDS long (the server and PostgreSQL on this machine):
#   for 16 then 64 clients, uniform then hot:
#     tally bench over gRPC, tally bench over JSON (single CreateTransfer calls, closed loop),
#     pgbench with the same transaction (scripts/pgbench-transfer.sql, -M prepared), twice: as
#     the tally runs left the database and after settling it; the table takes the better;
#   tally bench --batch 100: CreateTransfers of 100 transfers, 8 clients, uniform;
#   tally bench --operation hold-post: a hold and then its post (two calls per transfer), 64
#     clients, uniform;
#   tally bench --operation balance-at: GetAccountBalance at random instants of the last 2 h,
#     16 clients, on two accounts of BENCH_HISTORY_ENTRIES entries each (scripts/history-seed.sql
#     writes them straight into the tables, as the ledger would);
#   tally bench --rate: uniform, gRPC, 64 clients, paced at half the transfers/s that the
#     closed-loop run of the same shape reached above; latency counts from each call's due time;
#   then `tally verify`;
#   the change feed's lag: uniform, gRPC, 64 clients, with a reader of the server's Redis stream
#     and a WatchAccount of one account beside it (from each event's transaction to here);
#   what the feed costs: uniform 16 clients and the batch run, twice over, alternating a server
#     restarted with TALLY_FEED_EVENTS=false and one with it on (off, on, off, on: neither side
#     gets only the later, larger tables); the table takes each side's better run.
# Before them, one unreported 2 s run of tally bench warms the server up. Before every run, of
# either tool, `VACUUM (ANALYZE)` of accounts, transfers and entries and a `CHECKPOINT`.
# The accounts are opened and funded once (`tally bench --setup-only`) and every run reuses
# them; pgbench's bench_accounts table holds the same ids in the same order, so both tools' hot
# set is the same accounts. Then the table.
#
# Not part of `make test`'s assertions (it measures, it asserts nothing about speed); `make
# bench` runs it, `make bench-smoke` runs it short to check that it still produces its table.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
DURATION="${BENCH_SECONDS:-10}"
PROFILE="${BENCH_PROFILE:-release}"
ACCOUNTS="${BENCH_ACCOUNTS:-1000}"
HOT="${BENCH_HOT_ACCOUNTS:-10}"
HISTORY_ENTRIES="${BENCH_HISTORY_ENTRIES:-1000000}"
ONLY="${BENCH_ONLY:-}"
[[ -z "$ONLY" || "$ONLY" == feed ]] || { echo "bench.sh: BENCH_ONLY is empty or feed" >&2; exit 2; }
HISTORY_CLIENTS=16
CLIENT_COUNTS=(16 64)
MODES=(uniform hot)
# The batch run: transfers per CreateTransfers call, and its clients.
BATCH_SIZE=100
BATCH_CLIENTS=8
# The feed-on/off comparison: clients of its single-transfer runs.
FEED_CLIENTS=16
# The paced run: its clients, and the share of the closed-loop rate it asks for.
PACED_CLIENTS=64
PACED_SHARE=0.5
# Server limits: every bench account has one owner, no call should wait for a slot, and a
# batch of 100 needs about 100 * (150 + 256) bytes of the message limit (1 MiB is plenty).
ACCOUNTS_PER_OWNER_MAX=100000
CONCURRENCY_MAX=4096
# One user on one address makes every call: no rate limit may bite (the anchor has none).
RATE_WRITES_PER_SECOND=10000000
RATE_AUTH_PER_MINUTE=1000000
MAX_MESSAGE_BYTES=1048576
# pgbench: worker threads (one per core here) and tries per transaction (tally's engine retries
# a batch 20 times by default; pgbench gets more, so it never gives up first).
PGBENCH_THREADS="$(nproc)"
PGBENCH_MAX_TRIES=1000
# An unreported first run, so that the first measured one does not pay for the server's cold
# start (its pool's connections, PostgreSQL's plan and buffer caches).
WARMUP_SECONDS=2
WARMUP_CLIENTS=16
# The server's pool (tally's default TALLY_DB_MAX_CONNECTIONS) and the few psql and tally
# admin connections of this script: PostgreSQL must have room for them beside pgbench's
# clients.
SERVER_POOL_CONNECTIONS="${TALLY_DB_MAX_CONNECTIONS:-20}"
SCRIPT_CONNECTIONS=2
READY_POLLS=300
READY_POLL_SECONDS=0.2
PASSWORD="bench password 0123456789"

log() { printf 'bench.sh: %s\n' "$*" >&2; }
die() {
  printf 'bench.sh: error: %s\n' "$*" >&2
  exit 1
}
TALLY_SCRIPT=bench.sh
# shellcheck source=scripts/lib.sh
. "$SCRIPT_DIR/lib.sh"
need_packages pgbench postgresql-client
need_packages psql postgresql-client
need_packages redis-cli redis-tools

if [[ -z "${DATABASE_URL:-}" || -z "${REDIS_URL:-}" ]]; then
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
# The server's change-feed stream: its own, on whatever Redis REDIS_URL names, deleted at the end.
EVENTS_STREAM="tally:bench:events:$$"
cleanup() {
  if [[ -n "$SERVER_PID" ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  fi
  redis-cli -u "$REDIS_URL" DEL "$EVENTS_STREAM" >/dev/null 2>&1 || true
  psql "$ADMIN_URL" -qXc "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK_DIR"
}
trap cleanup EXIT

# The machine, before anything of this run loads it (after the build, which loads it too: the
# 1-minute load average includes a build that just ran).
{
  echo "nproc=$(nproc)"
  echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "mem_kib=$(sed -n 's/^MemTotal:[[:space:]]*\([0-9]*\) kB/\1/p' /proc/meminfo)"
  echo "loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rustc_before=$(pgrep -fc rustc || true)"
  echo "clk_tck=$(getconf CLK_TCK)"
  echo "pg=$(psql "$ADMIN_URL" -AtXc 'SHOW server_version')"
  echo "pg_settings=$(psql "$ADMIN_URL" -AtXc "SELECT string_agg(name || ' ' || current_setting(name), ', ' ORDER BY name) FROM unnest(ARRAY['fsync', 'synchronous_commit', 'shared_buffers', 'max_connections']) AS name")"
  echo "profile=$PROFILE"
  echo "seconds=$DURATION"
  echo "accounts=$ACCOUNTS"
  echo "hot=$HOT"
} >"$WORK_DIR/machine.env"

# Fail now, not in the middle of the run, when PostgreSQL is too busy for the 64-client runs.
NEEDED_CONNECTIONS=$((${CLIENT_COUNTS[-1]} + SERVER_POOL_CONNECTIONS + SCRIPT_CONNECTIONS))
FREE_CONNECTIONS="$(psql "$ADMIN_URL" -AtXc "SELECT current_setting('max_connections')::int
  - current_setting('superuser_reserved_connections')::int - count(*) FROM pg_stat_activity
  WHERE backend_type = 'client backend'")"
((FREE_CONNECTIONS >= NEEDED_CONNECTIONS)) ||
  die "PostgreSQL has room for $FREE_CONNECTIONS more connections; this run needs $NEEDED_CONNECTIONS (pgbench's ${CLIENT_COUNTS[-1]} clients, the server's pool of $SERVER_POOL_CONNECTIONS, this script's $SCRIPT_CONNECTIONS): wait for other users of the server, or raise its max_connections"

psql "$ADMIN_URL" -v ON_ERROR_STOP=1 -qXc "CREATE DATABASE $DB_NAME" >/dev/null
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# start_server FEED_EVENTS — (re)starts the server on PORT, with the change feed on or off.
start_server() {
  if [[ -n "$SERVER_PID" ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  fi
  DATABASE_URL="$URL" TALLY_ACCOUNTS_PER_OWNER_MAX="$ACCOUNTS_PER_OWNER_MAX" \
    TALLY_CONCURRENCY_MAX="$CONCURRENCY_MAX" TALLY_MAX_MESSAGE_BYTES="$MAX_MESSAGE_BYTES" \
    TALLY_RATE_WRITES_PER_SECOND="$RATE_WRITES_PER_SECOND" TALLY_RATE_AUTH_PER_MINUTE="$RATE_AUTH_PER_MINUTE" \
    TALLY_EVENTS_STREAM="$EVENTS_STREAM" TALLY_FEED_EVENTS="$1" RUST_LOG=warn \
    "$BIN" serve --migrate true --listen-addr "127.0.0.1:$PORT" >>"$WORK_DIR/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 "$READY_POLLS"); do
    curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited: $(tail -5 "$WORK_DIR/server.log")"
    sleep "$READY_POLL_SECONDS"
  done
  die "the server was not ready in time: $(tail -5 "$WORK_DIR/server.log")"
}
start_server true

USER_NAME="bench_$$"
printf '%s\n' "$PASSWORD" | DATABASE_URL="$URL" RUST_LOG=warn "$BIN" admin create-user \
  --username "$USER_NAME" --email "$USER_NAME@example.com" >/dev/null
DATABASE_URL="$URL" RUST_LOG=warn "$BIN" admin grant-role "$USER_NAME" banker >/dev/null
REQUESTER="$(psql "$URL" -qAtXc "SELECT id FROM users WHERE username = '$USER_NAME'")"

ACCOUNTS_FILE="$WORK_DIR/accounts.txt"
# The accounts every run uses (the history run swaps in its own two).
POOL_ARGS=(--accounts "$ACCOUNTS" --accounts-file "$ACCOUNTS_FILE" --hot-accounts "$HOT")
tally_bench() {
  "$BIN" bench --addr "http://127.0.0.1:$PORT" --username "$USER_NAME" --password "$PASSWORD" \
    "${POOL_ARGS[@]}" "$@"
}
log "opening and funding $ACCOUNTS accounts"
SETUP_STARTED=$SECONDS
tally_bench --setup-only
log "accounts ready in $((SECONDS - SETUP_STARTED)) s"
# pgbench's accounts: the same ids, numbered in the file's order.
psql "$URL" -v ON_ERROR_STOP=1 -qX >/dev/null <<SQL
CREATE TABLE bench_accounts (i bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, id uuid NOT NULL);
\copy bench_accounts (id) FROM '$ACCOUNTS_FILE'
SQL
log "warming up: $WARMUP_SECONDS s, not reported"
tally_bench --seconds "$WARMUP_SECONDS" --clients "$WARMUP_CLIENTS" >/dev/null

# settle — before every run, of either tool: vacuum and analyze the ledger tables (the change
# feed's too: it grows with every transfer of the feed-on runs) and write a
# checkpoint, so that no run inherits the previous one's dead rows (pgbench's hot runs leave
# thousands of dead versions of 10 account rows), a stale plan or a checkpoint in the middle of
# its 10 s. The same for both tools; pgbench does the same itself for its own tables unless -n.
settle() {
  psql "$URL" -v ON_ERROR_STOP=1 -qXc "VACUUM (ANALYZE) accounts, transfers, entries, ledger_events" >/dev/null
  psql "$URL" -qXc "CHECKPOINT" >/dev/null 2>&1 ||
    log "CHECKPOINT refused (needs superuser or pg_checkpoint); runs may overlap a checkpoint"
}

# run_tally NAME [tally bench options] — one run; its summary goes to NAME.json, its report to
# stderr.
run_tally() {
  local name="$1"
  shift
  settle
  log "tally bench $name: $*"
  tally_bench --seconds "$DURATION" --server-pid "$SERVER_PID" --summary-json "$@" \
    >"$WORK_DIR/$name.out"
  sed '$d' "$WORK_DIR/$name.out" >&2
  tail -1 "$WORK_DIR/$name.out" >"$WORK_DIR/$name.json"
}
# run_pgbench NAME CLIENTS ACCOUNTS [settle] — pgbench at its best: prepared statements, no
# per-transaction log; its summary goes to NAME.txt. With `settle`, after settle().
run_pgbench() {
  local name="$1" clients="$2" accounts="$3"
  [[ "${4:-}" == settle ]] && settle
  log "pgbench $name: $clients clients over $accounts accounts"
  pgbench -n -M prepared -c "$clients" -j "$PGBENCH_THREADS" -T "$DURATION" -P "$DURATION" \
    --max-tries="$PGBENCH_MAX_TRIES" --failures-detailed -f "$SCRIPT_DIR/pgbench-transfer.sql" \
    -D naccounts="$accounts" -D requester="$REQUESTER" "$URL" >"$WORK_DIR/$name.txt" 2>&1 ||
    die "pgbench failed: $(tail -5 "$WORK_DIR/$name.txt")"
  grep -E '^(tps|latency|number of (transactions actually|failed)|total number)' \
    "$WORK_DIR/$name.txt" >&2
}

if [[ "$ONLY" != feed ]]; then
for clients in "${CLIENT_COUNTS[@]}"; do
  for mode in "${MODES[@]}"; do
    for protocol in grpc json; do
      run_tally "$protocol-$mode-$clients" --protocol "$protocol" --mode "$mode" --clients "$clients"
    done
    if [[ "$mode" == hot ]]; then pool="$HOT"; else pool="$ACCOUNTS"; fi
    # Twice, and the table takes the better: once as the tally runs left the database, once
    # settled like them. (Settling has measured slower for pgbench on some runs, and the anchor
    # is compared at its best.)
    run_pgbench "pgbench-$mode-$clients-as-left" "$clients" "$pool"
    run_pgbench "pgbench-$mode-$clients-settled" "$clients" "$pool" settle
  done
done
run_tally "batch-uniform-$BATCH_CLIENTS" --protocol grpc --mode uniform \
  --clients "$BATCH_CLIENTS" --batch "$BATCH_SIZE"
run_tally "holdpost-uniform-$PACED_CLIENTS" --protocol grpc --mode uniform \
  --clients "$PACED_CLIENTS" --operation hold-post
RATE="$(python3 -c 'import json, sys; print(max(1, round(json.load(open(sys.argv[1]))["per_second"] * float(sys.argv[2]))))' \
  "$WORK_DIR/grpc-uniform-$PACED_CLIENTS.json" "$PACED_SHARE")"
echo "$RATE" >"$WORK_DIR/paced.rate"
run_tally "paced-uniform-$PACED_CLIENTS" --protocol grpc --mode uniform \
  --clients "$PACED_CLIENTS" --rate "$RATE"
fi

# Before the feed-off runs, which leave transfers without events (verify would say so), and
# before the history seed, whose two million events the relay would still be publishing.
log "tally verify after both tools"
# Every invariant holds; the feed's check counts exactly pgbench's transfers (memo `pgbench`),
# which write no event: the anchor is the hand-written transfer alone.
DATABASE_URL="$URL" RUST_LOG=warn "$BIN" verify >"$WORK_DIR/verify.txt" 2>&1 || true
PGBENCH_TRANSFERS="$(psql "$URL" -AtXc "SELECT count(*) FROM transfers WHERE memo = 'pgbench'")"
python3 - "$WORK_DIR/verify.txt" "$PGBENCH_TRANSFERS" <<'EOF' || die "tally verify: $(cat "$WORK_DIR/verify.txt")"
import re, sys
counts = dict(re.findall(r"^\s*(\w+): (\d+),$", open(sys.argv[1]).read(), re.M))
bad = {k: v for k, v in counts.items() if k.endswith(("mismatches", "transfers", "currencies",
       "balances", "empty")) and k not in ("transfers", "feed_mismatches") and v != "0"}
feed = int(counts.get("feed_mismatches", -1))
if bad or feed != int(sys.argv[2]):
    sys.exit(f"bench.sh: invariants {bad}, feed mismatches {feed} for {sys.argv[2]} pgbench transfers")
print(f"bench.sh: ledger consistent; the {feed} transfers without a feed event are pgbench's",
      file=sys.stderr)
EOF
# The change feed's lag at full speed: one more closed-loop run of the 64-client shape, with a
# reader of the Redis stream and a WatchAccount stream of one account beside it.
run_tally "feed-lag-uniform-$PACED_CLIENTS" --protocol grpc --mode uniform \
  --clients "$PACED_CLIENTS" --feed-redis-url "$REDIS_URL" --feed-stream "$EVENTS_STREAM" --watch-lag
# What the feed costs: single transfers and batches with it off and on, on the same database,
# alternating twice (off, on, off, on), so that neither side has only the later, larger tables.
for round in 1 2; do
  for feed in off on; do
    if [[ "$feed" == on ]]; then events=true; else events=false; fi
    log "restarting the server with TALLY_FEED_EVENTS=$events (round $round)"
    start_server "$events"
    run_tally "feed-$feed-uniform-$FEED_CLIENTS-$round" --protocol grpc --mode uniform \
      --clients "$FEED_CLIENTS"
    run_tally "feed-$feed-batch-$round" --protocol grpc --mode uniform --clients "$BATCH_CLIENTS" \
      --batch "$BATCH_SIZE"
  done
done
if [[ "$ONLY" != feed ]]; then
log "seeding two accounts of $HISTORY_ENTRIES entries each"
SEED_STARTED=$SECONDS
psql "$URL" -qAtX -v user="$USER_NAME" -v entries="$HISTORY_ENTRIES" \
  -f "$SCRIPT_DIR/history-seed.sql" >"$WORK_DIR/history-accounts.txt"
log "history ready in $((SECONDS - SEED_STARTED)) s"
echo "$HISTORY_ENTRIES" >"$WORK_DIR/history.entries"
POOL_ARGS=(--accounts 2 --accounts-file "$WORK_DIR/history-accounts.txt" --hot-accounts 2)
run_tally "balance-at-$HISTORY_CLIENTS" --protocol grpc --operation balance-at \
  --clients "$HISTORY_CLIENTS"
fi


echo "rustc_after=$(pgrep -fc rustc || true)" >>"$WORK_DIR/machine.env"
echo "loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)" >>"$WORK_DIR/machine.env"

python3 - "$WORK_DIR" "$BATCH_SIZE" "$BATCH_CLIENTS" "$PACED_CLIENTS" "$FEED_CLIENTS" "$ONLY" "${CLIENT_COUNTS[@]}" <<'EOF'
import json, os, re, sys
work, batch, batch_clients, paced_clients, feed_clients, only = sys.argv[1:7]
client_counts = sys.argv[7:] if only != "feed" else []
machine = dict(line.rstrip("\n").split("=", 1) for line in open(os.path.join(work, "machine.env")))
clk_tck = int(machine["clk_tck"])
MICROS = 1_000_000

def tally(name):
    s = json.load(open(os.path.join(work, f"{name}.json")))
    errors = sum(s["errors"].values())
    cpu = (s["server_cpu_ticks"] / clk_tck * MICROS / s["succeeded"]
           if s["succeeded"] and s["server_cpu_ticks"] is not None else None)
    detail = ", ".join(f"{code} {n}" for code, n in s["errors"].items())
    return {"tps": s["per_second"], "p50": s["p50_ms"], "p99": s["p99_ms"], "mean": s["mean_ms"],
            "retries": s["retries"], "errors": errors, "detail": detail,
            "refused": s["refused"], "aborted": s["aborted"], "cpu": cpu}

def pgbench(name):
    text = open(os.path.join(work, f"{name}.txt")).read()
    def number(pattern):
        m = re.search(pattern, text)
        if not m:
            sys.exit(f"bench.sh: no '{pattern}' in pgbench's output:\n{text}")
        return float(m.group(1))
    failed = int(number(r"number of failed transactions: (\d+)"))
    aborted = int(number(r"number of serialization failures: (\d+)")
                  + number(r"number of deadlock failures: (\d+)"))
    return {"tps": number(r"tps = ([\d.]+)"), "p50": None, "p99": None,
            "mean": number(r"latency average = ([\d.]+) ms"),
            "retries": int(number(r"total number of retries: (\d+)")),
            "errors": failed, "detail": "", "refused": 0, "aborted": aborted, "cpu": None}

def ms(v): return "n/a" if v is None else f"{v:.2f}"
def ratio(a, b): return "n/a" if a is None or not b else f"{a / b:.2f}×"
def errors(r):
    parts = [f"{r['errors']}" + (f" ({r['detail']})" if r["detail"] else "")]
    if r["refused"]:
        parts.append(f"{r['refused']} refused by a rule")
    return "; ".join(parts)
def row(scenario, r, vs):
    cpu = "n/a" if r["cpu"] is None else f"{r['cpu']:.0f}"
    print(f"| {scenario} | {r['tps']:.0f} | {vs} | {ms(r['p50'])} | {ms(r['p99'])} | "
          f"{ms(r['mean'])} | {r['retries']} | {errors(r)} | {r['aborted']} | {cpu} |")

gib = int(machine["mem_kib"]) / (1024 * 1024)
print()
print(f"Machine: {machine['nproc']} CPUs ({machine['cpu']}), {gib:.0f} GiB; PostgreSQL "
      f"{machine['pg']} ({machine['pg_settings']}); tally {machine['profile']} build; server, "
      f"clients and PostgreSQL on this one machine.")
print(f"Load average before the runs: {machine['loadavg_before']} (after: "
      f"{machine['loadavg_after']}); rustc processes running before: {machine['rustc_before']}, "
      f"after: {machine['rustc_after']}.")
print(f"{machine['seconds']} s per run; uniform = any two of {machine['accounts']} accounts, "
      f"hot = any two of the first {machine['hot']} of them.")
print()
print("| scenario | transfers/s | vs pgbench | p50 ms | p99 ms | mean ms | retries | errors "
      "| ABORTED | server CPU µs/transfer |")
print("|---|---|---|---|---|---|---|---|---|---|")
results = {}
for clients in client_counts:
    for mode in ("uniform", "hot"):
        runs = [(how, pgbench(f"pgbench-{mode}-{clients}-{how}")) for how in ("as-left", "settled")]
        how, anchor = max(runs, key=lambda run: run[1]["tps"])
        other = next(r for h, r in runs if h != how)
        best_of = f"best of two runs: {how}, the other {other['tps']:.0f}/s"
        results[("pgbench", mode, clients)] = anchor
        for protocol, label in (("grpc", "gRPC"), ("json", "JSON")):
            r = tally(f"{protocol}-{mode}-{clients}")
            results[(protocol, mode, clients)] = r
            row(f"tally {label}, {mode}, {clients} clients", r, ratio(r["tps"], anchor["tps"]))
        row(f"pgbench, {mode}, {clients} clients ({best_of})", anchor, "1.00× (anchor)")
if only != "feed":
    top = client_counts[-1]
    anchor = results[("pgbench", "uniform", top)]
    r = tally(f"batch-uniform-{batch_clients}")
    row(f"tally gRPC, CreateTransfers of {batch}, uniform, {batch_clients} clients", r,
        f"{ratio(r['tps'], anchor['tps'])} (vs pgbench uniform, {top} clients)")
    r = tally(f"holdpost-uniform-{paced_clients}")
    single = results[("grpc", "uniform", paced_clients)]
    row(f"tally gRPC, hold then post (2 calls per transfer), uniform, {paced_clients} clients", r,
        f"{ratio(r['tps'], results[('pgbench', 'uniform', paced_clients)]['tps'])}; "
        f"{ratio(r['tps'], single['tps'])} of single transfers")
    history = open(os.path.join(work, "history.entries")).read().strip()
    r = tally("balance-at-16")
    row(f"tally gRPC, GetAccountBalance at a random instant, accounts of {int(history):,} entries, "
        f"16 clients", r, "n/a (a read)")
    rate = open(os.path.join(work, "paced.rate")).read().strip()
    r = tally(f"paced-uniform-{paced_clients}")
    row(f"tally gRPC, uniform, {paced_clients} clients, paced at {rate} calls/s (half its closed "
        f"loop)", r, "n/a (paced)")
for shape, label in ((f"uniform-{feed_clients}", f"uniform, {feed_clients} clients"),
                     ("batch", f"CreateTransfers of {batch}, {batch_clients} clients")):
    # Each side's better run of its two (rounds alternate off and on).
    off, on = (max((tally(f"feed-{side}-{shape}-{n}") for n in (1, 2)), key=lambda r: r["tps"])
               for side in ("off", "on"))
    row(f"tally gRPC, {label}, change feed off (TALLY_FEED_EVENTS=false), better of two", off,
        "n/a (on ÷ off below)")
    row(f"tally gRPC, {label}, change feed on (the default), better of two, alternating with "
        f"off", on, f"{ratio(on['tps'], off['tps'])} of feed off")
lag = json.load(open(os.path.join(work, f"feed-lag-uniform-{paced_clients}.json")))
under = tally(f"feed-lag-uniform-{paced_clients}")
for key, label in (("stream_lag", "Redis stream (XREAD here)"), ("watch_lag", "WatchAccount of one account")):
    l = lag[key]
    print(f"| change-feed lag, {label}, from each event's transaction, during gRPC uniform "
          f"{paced_clients} clients at {under['tps']:.0f} transfers/s | {l['events']} events | n/a | "
          f"{l['p50_ms']:.2f} | {l['p99_ms']:.2f} | max {l['max_ms']:.2f} | | | | |")
for clients in client_counts:
    for mode in ("uniform", "hot"):
        g, j = results[("grpc", mode, clients)], results[("json", mode, clients)]
        print(f"| JSON ÷ gRPC, {mode}, {clients} clients | {ratio(j['tps'], g['tps'])} | | "
              f"{ratio(j['p50'], g['p50'])} | {ratio(j['p99'], g['p99'])} | "
              f"{ratio(j['mean'], g['mean'])} | | | | {ratio(j['cpu'], g['cpu'])} |")
print()
print("transfers/s: succeeded transfers per second (CreateTransfers: transfers, not calls). "
      "Latencies are per call, from when the call was sent (paced: from when it was due). "
      "retries: server-side transaction retries summed over transfers (tally: tally-attempts "
      "- 1 per transfer; pgbench: its total number of retries). ABORTED: transfers answered "
      "ABORTED (pgbench: transactions that failed all --max-tries on serialization or "
      "deadlock). pgbench p50/p99: n/a, because pgbench has percentiles only from its "
      "per-transaction log (-l), which costs the anchor client CPU on this machine; its mean "
      "is its own 'latency average'. server CPU: utime + stime of the tally server process "
      "over the run (/proc/PID/stat) per succeeded transfer; PostgreSQL's CPU is not in it.")
EOF
