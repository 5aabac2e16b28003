#!/usr/bin/env bash
# scripts/services.sh — find or start PostgreSQL and Redis for development/tests.
#
# Usage:
#   scripts/services.sh env     make sure both services are reachable, then print
#                               `export DATABASE_URL=...` / `export REDIS_URL=...`
#                               on stdout (meant for: eval "$(scripts/services.sh env)")
#   scripts/services.sh status  show what would be used / what is running (stdout)
#   scripts/services.sh stop    stop the throwaway instances this script started
#   scripts/services.sh clean   stop them and delete .dev-services/ (all their data)
#
# Resolution order per service:
#   1. DATABASE_URL / REDIS_URL from the environment (must be reachable, else fail)
#   2. a server on the default local port (127.0.0.1:5432 / 127.0.0.1:6379);
#      PostgreSQL is used as postgres://postgres@127.0.0.1:5432/tally and the
#      database `tally` is created if missing
#   3. a throwaway instance under <repo>/.dev-services/{pg,redis} (reused if running)
#   4. if the server binaries are missing: apt-get install them (root only,
#      unless TALLY_NO_INSTALL is set), then 3.
#
# Environment knobs:
#   TALLY_PG_DEFAULT_PORT     port probed in step 2 for PostgreSQL (default 5432)
#   TALLY_REDIS_DEFAULT_PORT  port probed in step 2 for Redis      (default 6379)
#   TALLY_PG_PORT_BASE        first port tried for a throwaway PostgreSQL (55432)
#   TALLY_REDIS_PORT_BASE     first port tried for a throwaway Redis      (56379)
#   TALLY_SERVICE_TIMEOUT     seconds to wait for a service to get ready (30)
#   TALLY_NO_INSTALL          if set (non-empty), never apt-get install anything
#   TALLY_DEV_USER            unprivileged user running PostgreSQL when invoked
#                             as root (default tally-dev; created if missing)
#
# Human-readable logging goes to stderr; with `env`, stdout carries only the
# export lines.

set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(cd "$SCRIPT_DIR/.." && pwd)"
STATE_DIR="$ROOT_DIR/.dev-services"
PG_DIR="$STATE_DIR/pg"
REDIS_DIR="$STATE_DIR/redis"

PG_DEFAULT_PORT="${TALLY_PG_DEFAULT_PORT:-5432}"
REDIS_DEFAULT_PORT="${TALLY_REDIS_DEFAULT_PORT:-6379}"
PG_PORT_BASE="${TALLY_PG_PORT_BASE:-55432}"
REDIS_PORT_BASE="${TALLY_REDIS_PORT_BASE:-56379}"
TIMEOUT="${TALLY_SERVICE_TIMEOUT:-30}"
DEV_USER="${TALLY_DEV_USER:-tally-dev}"
DB_NAME="tally"

# Don't let the caller's libpq settings leak into our own probes; keep probes short.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS || true
export PGCONNECT_TIMEOUT=5

log() { printf 'services.sh: %s\n' "$*" >&2; }
die() {
  printf 'services.sh: error: %s\n' "$*" >&2
  exit 1
}

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# ---------------------------------------------------------------------------
# generic helpers
# ---------------------------------------------------------------------------

# port_open HOST PORT — true if something accepts TCP connections there.
port_open() {
  local host="$1" port="$2"
  if [[ "$host" == 127.0.0.1 || "$host" == localhost ]]; then
    # Local connects are refused or accepted immediately; avoid forking timeout(1).
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
  else
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null
  fi
}

# free_port BASE — first port >= BASE on which nothing listens locally.
free_port() {
  local p="$1" last=$(($1 + 200))
  while ((p <= last)); do
    if ! port_open 127.0.0.1 "$p"; then
      echo "$p"
      return 0
    fi
    p=$((p + 1))
  done
  die "no free port found in $1..$last"
}

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

read_file() {
  if [[ -r "$1" ]]; then head -n1 "$1"; fi
}

# shell-quote a value for an `export` line (single quotes, ' escaped).
shquote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# url_host_port URL DEFAULT_PORT — prints "host port" from scheme://[user[:pw]@]host[:port][/...]
url_host_port() {
  local rest="${1#*://}" default_port="$2" hostport host port
  rest="${rest%%[/?#]*}"
  hostport="${rest##*@}"
  if [[ "$hostport" == \[*\]* ]]; then # [ipv6]:port
    host="${hostport%%]*}"
    host="${host#[}"
    port="${hostport##*]}"
    port="${port#:}"
  elif [[ "$hostport" == *:* ]]; then
    host="${hostport%%:*}"
    port="${hostport##*:}"
  else
    host="$hostport"
    port=""
  fi
  echo "${host:-localhost} ${port:-$default_port}"
}

APT_UPDATED=""
# apt_install PKG... — install packages if allowed; returns 1 if not allowed.
apt_install() {
  if ! is_root || [[ -n "${TALLY_NO_INSTALL:-}" ]] || ! command -v apt-get >/dev/null 2>&1; then
    return 1
  fi
  log "installing $* via apt-get (set TALLY_NO_INSTALL=1 to prevent this)"
  export DEBIAN_FRONTEND=noninteractive
  if [[ -z "$APT_UPDATED" ]]; then
    apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
  apt-get install -y -qq --no-install-recommends "$@" >&2 || die "apt-get install $* failed"
}

# Take an exclusive lock on the state dir, so concurrent `env` calls don't
# race to start two instances. Held until the script exits.
LOCKED=""
lock_state() {
  [[ -n "$LOCKED" ]] && return 0
  mkdir -p "$STATE_DIR"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$STATE_DIR/.lock"
    if ! flock -w "$((TIMEOUT * 2))" 9; then
      die "timed out waiting for lock $STATE_DIR/.lock"
    fi
  fi
  LOCKED=1
}

# ---------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------

PG_BINDIR=""
# find_pg_bindir — directory holding initdb + pg_ctl + postgres (Debian keeps it off PATH).
find_pg_bindir() {
  local d cands=()
  if command -v pg_config >/dev/null 2>&1; then
    cands+=("$(pg_config --bindir 2>/dev/null || true)")
  fi
  # newest major version first
  while IFS= read -r d; do cands+=("$d"); done < <(
    compgen -G '/usr/lib/postgresql/*/bin' | sort -t/ -k5,5 -V -r || true
  )
  if command -v pg_ctl >/dev/null 2>&1; then
    cands+=("$(dirname "$(command -v pg_ctl)")")
  fi
  for d in "${cands[@]}"; do
    if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
      PG_BINDIR="$d"
      return 0
    fi
  done
  return 1
}

# pg_tool NAME — path to a client tool (psql, pg_isready, createdb), or fail.
pg_tool() {
  local name="$1" d
  if command -v "$name" >/dev/null 2>&1; then
    command -v "$name"
    return 0
  fi
  if [[ -n "$PG_BINDIR" ]] || find_pg_bindir; then
    if [[ -x "$PG_BINDIR/$name" ]]; then
      echo "$PG_BINDIR/$name"
      return 0
    fi
  fi
  for d in /usr/lib/postgresql/*/bin; do
    if [[ -x "$d/$name" ]]; then
      echo "$d/$name"
      return 0
    fi
  done
  return 1
}

# need_psql — path to psql, installing postgresql-client if allowed.
need_psql() {
  local p
  if p="$(pg_tool psql)"; then
    echo "$p"
    return 0
  fi
  apt_install postgresql-client ||
    die "psql is required (install the 'postgresql-client' package, or set DATABASE_URL to a ready database)"
  pg_tool psql || die "psql still not found after installing postgresql-client"
}

# pg_ready_once ARGS... — one readiness probe; ARGS are libpq args for pg_isready
# (e.g. -h H -p P, or -d URL). Falls back to a TCP probe if pg_isready is missing.
pg_ready_once() {
  local isready
  if isready="$(pg_tool pg_isready)"; then
    "$isready" -q -t 2 "$@"
    return
  fi
  # fallback: plain TCP connect
  local host="" port=""
  while (($#)); do
    case "$1" in
      -h) host="$2"; shift 2 ;;
      -p) port="$2"; shift 2 ;;
      -d) read -r host port < <(url_host_port "$2" 5432); shift 2 ;;
      *) shift ;;
    esac
  done
  [[ "$host" == /* ]] && return 0 # unix socket dir: can't probe by TCP, let psql decide
  port_open "${host:-127.0.0.1}" "${port:-5432}"
}

# wait_pg WHAT ARGS... — wait up to $TIMEOUT s for pg_ready_once ARGS.
# With PG_FAIL_FAST set, give up at once unless the server says it is starting
# up (pg_isready exit 1), i.e. when whatever listens there does not speak PostgreSQL.
wait_pg() {
  local what="$1" deadline=$((SECONDS + TIMEOUT + 1)) rc
  shift
  while :; do
    rc=0
    pg_ready_once "$@" || rc=$?
    ((rc == 0)) && break
    if ((SECONDS >= deadline)) || { [[ -n "${PG_FAIL_FAST:-}" ]] && ((rc != 1)); }; then
      return 1
    fi
    sleep 0.2
  done
  log "PostgreSQL ready: $what"
}

# ensure_db PORT — create database $DB_NAME on 127.0.0.1:PORT (user postgres) if missing.
# Returns 1 (with a message) if we can't connect as postgres.
ensure_db() {
  local port="$1" psql out
  psql="$(need_psql)"
  if ! out="$("$psql" -X -Atq -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -c "select 1 from pg_database where datname = '$DB_NAME'" 2>&1)"; then
    log "cannot connect to PostgreSQL on 127.0.0.1:$port as user postgres without a password:"
    log "  ${out//$'\n'/ }"
    return 1
  fi
  if [[ "$out" != 1 ]]; then
    log "creating database $DB_NAME on 127.0.0.1:$port"
    if ! out="$("$psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
      -c "create database \"$DB_NAME\"" 2>&1)"; then
      # a concurrent caller may have created it in the meantime
      if [[ "$out" != *"already exists"* ]]; then
        log "  ${out//$'\n'/ }"
        return 1
      fi
    fi
  fi
}

# run_as USER CMD... — run CMD as USER (directly if we already are USER), from /.
run_as() {
  local user="$1"
  shift
  if [[ "$user" == "$(id -un)" ]]; then
    (cd / && "$@")
  elif ! is_root; then
    die "need to run '$1' as user $user; re-run as root or as $user"
  elif command -v runuser >/dev/null 2>&1; then
    (cd / && runuser -u "$user" -- "$@")
  else
    local cmd
    cmd="$(printf '%q ' "$@")"
    (cd / && su -s /bin/bash "$user" -c "$cmd")
  fi
}

# pg_run_user — the user owning/running the throwaway cluster.
pg_run_user() {
  if [[ -d "$PG_DIR/data" ]]; then
    stat -c %U "$PG_DIR/data"
  elif is_root; then
    echo "$DEV_USER"
  else
    id -un
  fi
}

ensure_dev_user() {
  id -u "$DEV_USER" >/dev/null 2>&1 && return 0
  log "creating system user $DEV_USER (PostgreSQL refuses to run as root)"
  local nologin=/usr/sbin/nologin
  [[ -x "$nologin" ]] || nologin=/bin/false
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell "$nologin" "$DEV_USER" >&2 ||
    die "useradd $DEV_USER failed"
}

# throwaway_pg_port — port of our running throwaway cluster, or fail.
throwaway_pg_port() {
  local pid port
  [[ -f "$PG_DIR/data/postmaster.pid" ]] || return 1
  pid="$(read_file "$PG_DIR/data/postmaster.pid")"
  port="$(read_file "$PG_DIR/port")"
  [[ -n "$port" ]] && pid_alive "$pid" || return 1
  echo "$port"
}

# prepare_pg_dir USER — make sure $PG_DIR exists and USER can reach it.
# If USER cannot traverse the repo path (e.g. repo under /root), the data
# lives in /var/tmp and $PG_DIR becomes a symlink to it.
prepare_pg_dir() {
  local user="$1"
  [[ -e "$PG_DIR" ]] || mkdir -p "$STATE_DIR"
  if [[ ! -e "$PG_DIR" ]]; then
    if [[ "$user" == "$(id -un)" ]] || run_as "$user" test -x "$STATE_DIR" 2>/dev/null; then
      mkdir -p "$PG_DIR"
    else
      local alt
      alt="/var/tmp/tally-dev-services-$(printf '%s' "$ROOT_DIR" | md5sum | cut -c1-12)/pg"
      log "$user cannot access $STATE_DIR; keeping PostgreSQL data in $alt"
      mkdir -p "$alt"
      chmod 755 "$(dirname "$alt")"
      ln -sfn "$alt" "$PG_DIR"
    fi
  fi
  if [[ "$user" != "$(id -un)" ]]; then
    chown "$user:" "$PG_DIR/"
  fi
}

start_throwaway_pg() {
  local user port pgport pgdir
  if ! find_pg_bindir; then
    log "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found"
    apt_install postgresql ||
      die "install PostgreSQL (Debian/Ubuntu: apt-get install postgresql), or set DATABASE_URL, or run a server on 127.0.0.1:$PG_DEFAULT_PORT"
    find_pg_bindir || die "PostgreSQL server binaries still not found after install"
  fi

  user="$(pg_run_user)"
  [[ "$user" == root ]] && die "$PG_DIR/data is owned by root; PostgreSQL cannot run as root (run '$0 clean')"
  if is_root && [[ "$user" == "$DEV_USER" ]]; then
    ensure_dev_user
  fi
  prepare_pg_dir "$user"
  pgdir="$(cd "$PG_DIR" && pwd -P)"

  if [[ ! -f "$pgdir/data/PG_VERSION" ]]; then
    log "initialising throwaway PostgreSQL cluster in $pgdir/data (as $user, using $PG_BINDIR)"
    rm -rf "$pgdir/data"
    run_as "$user" "$PG_BINDIR/initdb" -D "$pgdir/data" -U postgres --auth=trust \
      -E UTF8 --no-locale --no-sync >"$pgdir/initdb.log" 2>&1 || {
      tail -n 20 "$pgdir/initdb.log" >&2 || true
      die "initdb failed (log: $pgdir/initdb.log)"
    }
    cat >>"$pgdir/data/postgresql.conf" <<'EOF'

# --- throwaway dev/test instance (scripts/services.sh) ---
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
    # trust only over loopback TCP
    cat >"$pgdir/data/pg_hba.conf" <<'EOF'
# throwaway dev/test instance (scripts/services.sh): trust on loopback only
host    all             all             127.0.0.1/32            trust
host    replication     all             127.0.0.1/32            trust
EOF
  fi

  # prefer the previous port if it is free
  port="$(read_file "$pgdir/port")"
  if [[ -z "$port" ]] || port_open 127.0.0.1 "$port"; then
    port="$(free_port "$PG_PORT_BASE")"
  fi
  log "starting throwaway PostgreSQL on 127.0.0.1:$port"
  echo "$port" >"$pgdir/port"
  if ! run_as "$user" "$PG_BINDIR/pg_ctl" -D "$pgdir/data" -l "$pgdir/postgres.log" \
    -o "-p $port" -w -t "$TIMEOUT" start </dev/null >/dev/null 2>"$pgdir/pg_ctl.err" 9>&-; then
    cat "$pgdir/pg_ctl.err" >&2 || true
    tail -n 20 "$pgdir/postgres.log" >&2 || true
    die "could not start PostgreSQL (log: $pgdir/postgres.log; '$0 clean' resets it)"
  fi
  pgport="$port"
  wait_pg "127.0.0.1:$pgport (throwaway)" -h 127.0.0.1 -p "$pgport" ||
    die "throwaway PostgreSQL on port $pgport did not become ready within ${TIMEOUT}s"
  ensure_db "$pgport" || die "could not create database $DB_NAME in the throwaway cluster"
  echo "$pgport"
}

resolve_pg() {
  local port psql out

  # 1. explicit DATABASE_URL
  if [[ -n "${DATABASE_URL:-}" ]]; then
    if ! wait_pg "DATABASE_URL from environment" -d "$DATABASE_URL"; then
      die "DATABASE_URL is set but the server is not reachable within ${TIMEOUT}s: $(redact "$DATABASE_URL")"
    fi
    if psql="$(pg_tool psql)"; then
      if ! out="$("$psql" -X -Atq -d "$DATABASE_URL" -c 'select 1' 2>&1)"; then
        die "DATABASE_URL is set but connecting failed: ${out//$'\n'/ } (url: $(redact "$DATABASE_URL"))"
      fi
    fi
    RESOLVED_DATABASE_URL="$DATABASE_URL"
    return 0
  fi

  # 2. something on the default local port
  if port_open 127.0.0.1 "$PG_DEFAULT_PORT"; then
    # the port is open: only wait while a real PostgreSQL is starting up
    if PG_FAIL_FAST=1 wait_pg "127.0.0.1:$PG_DEFAULT_PORT" -h 127.0.0.1 -p "$PG_DEFAULT_PORT" && ensure_db "$PG_DEFAULT_PORT"; then
      RESOLVED_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_DEFAULT_PORT/$DB_NAME"
      return 0
    fi
    log "not using the server on 127.0.0.1:$PG_DEFAULT_PORT (set DATABASE_URL to use it); falling back to a throwaway instance"
  fi

  # 3./4. throwaway instance (reuse if running)
  if port="$(throwaway_pg_port)" && pg_ready_once -h 127.0.0.1 -p "$port"; then
    log "PostgreSQL ready: 127.0.0.1:$port (throwaway, reused)"
  else
    lock_state
    if port="$(throwaway_pg_port)" && wait_pg "127.0.0.1:$port (throwaway, reused)" -h 127.0.0.1 -p "$port"; then
      :
    else
      port="$(start_throwaway_pg)"
    fi
  fi
  RESOLVED_DATABASE_URL="postgres://postgres@127.0.0.1:$port/$DB_NAME"
}

stop_pg() {
  local user pid bindir
  if [[ ! -d "$PG_DIR/data" ]]; then
    log "no throwaway PostgreSQL"
    return 0
  fi
  pid="$(read_file "$PG_DIR/data/postmaster.pid")"
  if ! pid_alive "$pid"; then
    log "throwaway PostgreSQL is not running"
    return 0
  fi
  user="$(pg_run_user)"
  if find_pg_bindir; then
    bindir="$PG_BINDIR"
    log "stopping throwaway PostgreSQL (pid $pid, port $(read_file "$PG_DIR/port"))"
    if run_as "$user" "$bindir/pg_ctl" -D "$(cd "$PG_DIR" && pwd -P)/data" -m fast -w -t "$TIMEOUT" stop >/dev/null; then
      return 0
    fi
    log "pg_ctl stop failed; sending SIGTERM to $pid"
  fi
  kill -TERM "$pid" 2>/dev/null || true
}

# redact URL — hide a password in a URL for log messages.
redact() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#' <<<"$1"; }

# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------

# redis_ping_url URL — true if the server answers PONG.
redis_ping_url() {
  local url="$1" cli out tls=()
  if cli="$(command -v redis-cli)"; then
    [[ "$url" == rediss://* ]] && tls=(--tls)
    out="$("$cli" "${tls[@]}" -u "$url" ping 2>/dev/null)" || return 1
    [[ "$out" == PONG ]]
    return
  fi
  # fallback: raw RESP over /dev/tcp (no auth / TLS support)
  local host port reply
  read -r host port < <(url_host_port "$url" 6379)
  # shellcheck disable=SC2016 # expanded by the inner bash
  reply="$(timeout 3 bash -c '
    exec 3<>"/dev/tcp/$0/$1" || exit 1
    printf "PING\r\n" >&3
    IFS= read -r -t 2 line <&3 && printf "%s" "$line"' "$host" "$port" 2>/dev/null)" || return 1
  [[ "${reply%$'\r'}" == "+PONG" ]]
}

# wait_redis WHAT URL
wait_redis() {
  local what="$1" url="$2" deadline=$((SECONDS + TIMEOUT + 1))
  until redis_ping_url "$url"; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 0.2
  done
  log "Redis ready: $what"
}

throwaway_redis_port() {
  local pid port
  pid="$(read_file "$REDIS_DIR/redis.pid")"
  port="$(read_file "$REDIS_DIR/port")"
  [[ -n "$port" ]] && pid_alive "$pid" || return 1
  echo "$port"
}

start_throwaway_redis() {
  local server port
  if ! server="$(command -v redis-server)"; then
    log "redis-server not found"
    apt_install redis-server ||
      die "install Redis (Debian/Ubuntu: apt-get install redis-server), or set REDIS_URL, or run a server on 127.0.0.1:$REDIS_DEFAULT_PORT"
    server="$(command -v redis-server)" || die "redis-server still not found after install"
  fi
  mkdir -p "$REDIS_DIR"
  port="$(read_file "$REDIS_DIR/port")"
  if [[ -z "$port" ]] || port_open 127.0.0.1 "$port"; then
    port="$(free_port "$REDIS_PORT_BASE")"
  fi
  log "starting throwaway Redis on 127.0.0.1:$port"
  echo "$port" >"$REDIS_DIR/port"
  rm -f "$REDIS_DIR/redis.pid"
  (cd "$REDIS_DIR" && "$server" --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --dir "$REDIS_DIR" --pidfile "$REDIS_DIR/redis.pid" \
    --logfile "$REDIS_DIR/redis.log") </dev/null >&2 9>&- ||
    die "could not start redis-server (log: $REDIS_DIR/redis.log)"
  if ! wait_redis "127.0.0.1:$port (throwaway)" "redis://127.0.0.1:$port"; then
    tail -n 20 "$REDIS_DIR/redis.log" >&2 || true
    die "throwaway Redis on port $port did not become ready within ${TIMEOUT}s"
  fi
  echo "$port"
}

resolve_redis() {
  local port url

  # 1. explicit REDIS_URL
  if [[ -n "${REDIS_URL:-}" ]]; then
    wait_redis "REDIS_URL from environment" "$REDIS_URL" ||
      die "REDIS_URL is set but the server does not answer PING within ${TIMEOUT}s: $(redact "$REDIS_URL")"
    RESOLVED_REDIS_URL="$REDIS_URL"
    return 0
  fi

  # 2. default local port
  if port_open 127.0.0.1 "$REDIS_DEFAULT_PORT"; then
    url="redis://127.0.0.1:$REDIS_DEFAULT_PORT"
    # the port is open, so don't wait long for a real Redis to answer
    if TIMEOUT=1 wait_redis "127.0.0.1:$REDIS_DEFAULT_PORT" "$url"; then
      RESOLVED_REDIS_URL="$url"
      return 0
    fi
    log "something listens on 127.0.0.1:$REDIS_DEFAULT_PORT but does not answer PING without auth (set REDIS_URL to use it); falling back to a throwaway instance"
  fi

  # 3./4. throwaway instance
  if port="$(throwaway_redis_port)" && redis_ping_url "redis://127.0.0.1:$port"; then
    log "Redis ready: 127.0.0.1:$port (throwaway, reused)"
  else
    lock_state
    if port="$(throwaway_redis_port)" && wait_redis "127.0.0.1:$port (throwaway, reused)" "redis://127.0.0.1:$port"; then
      :
    else
      port="$(start_throwaway_redis)"
    fi
  fi
  RESOLVED_REDIS_URL="redis://127.0.0.1:$port"
}

stop_redis() {
  local pid port i
  pid="$(read_file "$REDIS_DIR/redis.pid")"
  port="$(read_file "$REDIS_DIR/port")"
  if ! pid_alive "$pid"; then
    log "throwaway Redis is not running"
    rm -f "$REDIS_DIR/redis.pid"
    return 0
  fi
  log "stopping throwaway Redis (pid $pid, port $port)"
  if [[ -n "$port" ]] && command -v redis-cli >/dev/null 2>&1; then
    redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  fi
  for ((i = 0; i < 50; i++)); do
    pid_alive "$pid" || break
    ((i == 10)) && kill -TERM "$pid" 2>/dev/null
    sleep 0.1
  done
  if pid_alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$REDIS_DIR/redis.pid"
}

# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------

cmd_env() {
  RESOLVED_DATABASE_URL=""
  RESOLVED_REDIS_URL=""
  resolve_pg
  resolve_redis
  printf 'export DATABASE_URL=%s\n' "$(shquote "$RESOLVED_DATABASE_URL")"
  printf 'export REDIS_URL=%s\n' "$(shquote "$RESOLVED_REDIS_URL")"
}

cmd_status() {
  local port
  echo "PostgreSQL:"
  if [[ -n "${DATABASE_URL:-}" ]]; then
    if pg_ready_once -d "$DATABASE_URL"; then
      echo "  in use: DATABASE_URL from environment ($(redact "$DATABASE_URL")) - reachable"
    else
      echo "  in use: DATABASE_URL from environment ($(redact "$DATABASE_URL")) - NOT reachable"
    fi
  elif port_open 127.0.0.1 "$PG_DEFAULT_PORT"; then
    echo "  in use: local server postgres://postgres@127.0.0.1:$PG_DEFAULT_PORT/$DB_NAME"
  elif port="$(throwaway_pg_port)"; then
    echo "  in use: throwaway postgres://postgres@127.0.0.1:$port/$DB_NAME"
  else
    echo "  in use: none yet ('env' would start a throwaway instance)"
  fi
  if port="$(throwaway_pg_port)"; then
    echo "  throwaway: running, pid $(read_file "$PG_DIR/data/postmaster.pid"), port $port, data $(cd "$PG_DIR" && pwd -P)/data"
  elif [[ -d "$PG_DIR/data" ]]; then
    echo "  throwaway: stopped (data kept in $(cd "$PG_DIR" && pwd -P)/data)"
  else
    echo "  throwaway: none"
  fi

  echo "Redis:"
  if [[ -n "${REDIS_URL:-}" ]]; then
    if redis_ping_url "$REDIS_URL"; then
      echo "  in use: REDIS_URL from environment ($(redact "$REDIS_URL")) - reachable"
    else
      echo "  in use: REDIS_URL from environment ($(redact "$REDIS_URL")) - NOT reachable"
    fi
  elif port_open 127.0.0.1 "$REDIS_DEFAULT_PORT"; then
    echo "  in use: local server redis://127.0.0.1:$REDIS_DEFAULT_PORT"
  elif port="$(throwaway_redis_port)"; then
    echo "  in use: throwaway redis://127.0.0.1:$port"
  else
    echo "  in use: none yet ('env' would start a throwaway instance)"
  fi
  if port="$(throwaway_redis_port)"; then
    echo "  throwaway: running, pid $(read_file "$REDIS_DIR/redis.pid"), port $port, dir $REDIS_DIR"
  else
    echo "  throwaway: none running"
  fi
}

cmd_stop() {
  if [[ ! -d "$STATE_DIR" ]]; then
    log "nothing to stop ($STATE_DIR does not exist)"
    return 0
  fi
  lock_state
  stop_pg
  stop_redis
}

cmd_clean() {
  local target
  cmd_stop
  if [[ -L "$PG_DIR" ]]; then
    target="$(readlink -f "$PG_DIR")"
    [[ "$target" == /var/tmp/tally-dev-services-*/pg ]] && rm -rf "$(dirname "$target")"
  fi
  if [[ -d "$STATE_DIR" ]]; then
    log "removing $STATE_DIR"
    rm -rf "$STATE_DIR"
  fi
}

usage() {
  sed -n '2,/^$/{s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

main() {
  case "${1:-}" in
    env) cmd_env ;;
    status) cmd_status ;;
    stop) cmd_stop ;;
    clean) cmd_clean ;;
    -h | --help | help) usage ;;
    *)
      usage
      exit 2
      ;;
  esac
}

main "$@"
