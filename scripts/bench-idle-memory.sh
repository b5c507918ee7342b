#!/usr/bin/env bash
# Memory of an idle client and of the transaction-pooling statement registry, for pgheal and
# PgBouncer in the same run (pgheal issue 14). Prints figures; asserts nothing about them.
#
#   scripts/bench-idle-memory.sh
#   CLIENTS=2000 TEXTS=20000 scripts/bench-idle-memory.sh
#   PGBOUNCER_BIN=/tmp/pgbouncer-1.25.2/pgbouncer scripts/bench-idle-memory.sh
#
# What it does:
#   1. starts a throwaway PostgreSQL as scripts/bench-pgbench.sh does (initdb in a temp dir, free
#      port, as the `postgres` OS user when run as root);
#   2. starts PgBouncer and pgheal (target/dist/pgheal, built with `cargo build --profile dist`)
#      from the same pgbouncer.ini, pool_mode=transaction, default_pool_size=POOL_SIZE,
#      max_client_conn above CLIENTS, max_prepared_statements=200;
#   3. idle clients, for each pooler in turn: reads its VmRSS (/proc/PID/status), opens CLIENTS
#      connections (scripts/idle_clients.py: startup, authentication, one `SELECT 1`, then
#      nothing), waits SETTLE seconds, reads VmRSS, closes every client, waits SETTLE seconds,
#      reads VmRSS again. KiB per idle client = (RSS with all idle - RSS before) / CLIENTS;
#   4. statement registry: one client prepares, executes and closes TEXTS distinct statement
#      texts (Parse/Bind/Execute/Close/Sync, 100 per round trip) through each pooler; VmRSS
#      before, at the end, and SETTLE seconds after the client left.
#
# Environment:
#   CLIENTS    idle clients (default 10000; the file-descriptor limit is raised to fit)
#   TEXTS      distinct statement texts (default 100000)
#   POOL_SIZE  server connections per pooler (default 8)
#   SETTLE     seconds to wait before reading RSS (default 3)
#   PGBOUNCER_BIN, PGHEAL_BIN, PGHEAL_PG_BINDIR, PGHEAL_LOG, KEEP_LOGS: as scripts/bench-pgbench.sh
#
# Everything started here is stopped on exit (trap), and the temp dir removed.
set -euo pipefail
# Shared helpers: log, die, find_pg_bindir, cleanup, free_port, wait_ready.
. "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

MODE=transaction
CLIENTS="${CLIENTS:-10000}"
TEXTS="${TEXTS:-100000}"
POOL_SIZE="${POOL_SIZE:-8}"
SETTLE="${SETTLE:-3}"
if [ -z "${PGPASSWORD:-}" ]; then
  PGPASSWORD="bench-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
fi
export PGPASSWORD
BUILD_PGHEAL=0
if [ -z "${PGHEAL_BIN:-}" ]; then
  PGHEAL_BIN="$ROOT/target/dist/pgheal"
  BUILD_PGHEAL=1
fi
BENCH_USER=bench
BENCH_DB=bench


# Each client is one descriptor here and one in the pooler (which inherits this limit).
NOFILE=$((2 * CLIENTS + 1000))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NOFILE" ]; then
  ulimit -n "$NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge $((CLIENTS + 100)) ] ||
  die "ulimit -n is $(ulimit -n): too low for $CLIENTS clients"
command -v python3 >/dev/null || die "no python3"

# --- tools --------------------------------------------------------------------------------------
PG_BINDIR="$(find_pg_bindir)" || die "no PostgreSQL server binaries (run .ci/setup)"
PSQL="$PG_BINDIR/psql"
[ -x "$PSQL" ] || PSQL="$(command -v psql)" || die "no psql"
PGBOUNCER="${PGBOUNCER_BIN:-$(command -v pgbouncer || true)}"
[ -n "$PGBOUNCER" ] || { [ -x /usr/sbin/pgbouncer ] && PGBOUNCER=/usr/sbin/pgbouncer; } ||
  die "no pgbouncer (apt-get install pgbouncer, run .ci/setup, or set PGBOUNCER_BIN)"
[ -x "$PGBOUNCER" ] || die "PGBOUNCER_BIN=$PGBOUNCER is not an executable"
BOUNCER_VERSION="$("$PGBOUNCER" --version | head -1 | awk '{print $2}')"
if [ "$BUILD_PGHEAL" -eq 1 ]; then
  log "building pgheal (cargo build --profile dist --bin pgheal)"
  cargo build --profile dist --bin pgheal --quiet
fi
[ -x "$PGHEAL_BIN" ] || die "no pgheal binary at $PGHEAL_BIN"

# PostgreSQL and PgBouncer refuse to run as root: run them as `postgres`, like src/cluster does.
AS=()
if [ "$(id -u)" -eq 0 ]; then
  getent passwd postgres >/dev/null || die "running as root but there is no 'postgres' OS user"
  AS=(runuser -u postgres --)
fi
run_as() { "${AS[@]}" "$@"; }
# The poolers run as `postgres` through setpriv, not runuser: runuser opens a PAM session whose
# limits (often 1024 descriptors) would replace the raised one of this shell.
POOLER_AS=()
if [ "${#AS[@]}" -ne 0 ]; then
  command -v setpriv >/dev/null || die "running as root needs setpriv (util-linux)"
  POOLER_AS=(setpriv --reuid=postgres --regid=postgres --init-groups --)
fi

# --- temp dir and cleanup -------------------------------------------------------------------------
TMP="$(mktemp -d /tmp/pgheal-bench.XXXXXX)"
chmod 0700 "$TMP"
[ "${#AS[@]}" -eq 0 ] || chown postgres: "$TMP"
PG_STARTED=0
PGHEAL_PID=""
PGHEAL_REAL=""
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A TCP port nothing listens on (bash's /dev/tcp connect fails), not handed out twice.
USED_PORTS=" "


PG_PORT="$(free_port)"
BOUNCER_PORT="$(free_port)"
PGHEAL_PORT="$(free_port)"

# --- PostgreSQL -------------------------------------------------------------------------------------
log "PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}') on port $PG_PORT ($TMP)"
umask 077
printf '%s\n' "$PGPASSWORD" >"$TMP/pw"
[ "${#AS[@]}" -eq 0 ] || chown postgres: "$TMP/pw"
run_as "$PG_BINDIR/initdb" -D "$TMP/data" -U "$BENCH_USER" --pwfile="$TMP/pw" \
  --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C >"$TMP/initdb.log" 2>&1 ||
  die "initdb failed (see $TMP/initdb.log)"
rm -f "$TMP/pw"
run_as "$PG_BINDIR/pg_ctl" -D "$TMP/data" -l "$TMP/postgres.log" -w -t 60 start \
  -o "-c port=$PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$TMP \
      -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
      -c max_connections=100" >/dev/null ||
  die "PostgreSQL did not start (see $TMP/postgres.log)"
PG_STARTED=1
"$PSQL" -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$BENCH_USER" -d postgres \
  -c "CREATE DATABASE $BENCH_DB" >/dev/null

# --- PgBouncer and pgheal, from the same pgbouncer.ini ---------------------------------------------
BOUNCER_VERSION="$("$PGBOUNCER" --version | head -1 | awk '{print $2}')"
printf '"%s" "%s"\n' "$BENCH_USER" "$PGPASSWORD" >"$TMP/userlist.txt"
write_ini() { # name port -> $TMP/<name>.ini
  local name=$1 port=$2
  cat >"$TMP/$name.ini" <<INI
[databases]
$BENCH_DB = host=127.0.0.1 port=$PG_PORT dbname=$BENCH_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = md5
auth_file = $TMP/userlist.txt
pool_mode = $MODE
default_pool_size = $POOL_SIZE
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = $((CLIENTS + 100))
max_prepared_statements = 200
logfile = $TMP/$name.log
pidfile = $TMP/$name.pid
log_connections = 0
log_disconnections = 0
INI
  [ "${#AS[@]}" -eq 0 ] || chown postgres: "$TMP/$name.ini"
}
write_ini pgbouncer "$BOUNCER_PORT"
write_ini pgheal "$PGHEAL_PORT"
[ "${#AS[@]}" -eq 0 ] || chown postgres: "$TMP/userlist.txt"
log "PgBouncer $BOUNCER_VERSION on port $BOUNCER_PORT (pool_mode=$MODE, default_pool_size=$POOL_SIZE)"
"${POOLER_AS[@]}" "$PGBOUNCER" -d "$TMP/pgbouncer.ini" >/dev/null 2>&1 ||
  die "PgBouncer did not start (see $TMP/pgbouncer.log)"
wait_ready PgBouncer "$BOUNCER_PORT"
log "pgheal $("$PGHEAL_BIN" --version | awk '{print $2}') on port $PGHEAL_PORT (the same pgbouncer.ini)"
PGHEAL_LOG="${PGHEAL_LOG:-info}" "${POOLER_AS[@]}" "$PGHEAL_BIN" -q "$TMP/pgheal.ini" >"$TMP/pgheal.out" 2>&1 &
PGHEAL_PID=$!
wait_ready pgheal "$PGHEAL_PORT"
PGHEAL_REAL="$(cat "$TMP/pgheal.pid" 2>/dev/null || true)"
[ -n "$PGHEAL_REAL" ] || die "pgheal wrote no pidfile ($TMP/pgheal.pid)"
BOUNCER_REAL="$(cat "$TMP/pgbouncer.pid")"
for pid in "$BOUNCER_REAL" "$PGHEAL_REAL"; do
  lim="$(awk '/^Max open files/ { print $4 }' "/proc/$pid/limits")"
  [ "$lim" = unlimited ] || [ "$lim" -ge $((CLIENTS + 100)) ] ||
    die "process $pid may open $lim files: too few for $CLIENTS clients"
done

# --- probes -----------------------------------------------------------------------------------------
declare -A PID=([pgbouncer]=$BOUNCER_REAL [pgheal]=$PGHEAL_REAL)
declare -A PORT=([pgbouncer]=$BOUNCER_PORT [pgheal]=$PGHEAL_PORT)
declare -A RES
probe() { # target what extra-args... -> "key value" lines into $TMP/<target>-<what>.out
  local t=$1 what=$2
  shift 2
  log "$t: $what $*"
  PGUSER="$BENCH_USER" PGDATABASE="$BENCH_DB" python3 "$ROOT/scripts/idle_clients.py" "$what" \
    --pid "${PID[$t]}" --port "${PORT[$t]}" --settle "$SETTLE" "$@" >"$TMP/$t-$what.out" ||
    die "$t: the $what probe failed"
  while read -r k v; do RES[$t.$what.$k]=$v; done <"$TMP/$t-$what.out"
}
for t in pgbouncer pgheal; do
  probe "$t" idle --clients "$CLIENTS"
done
for t in pgbouncer pgheal; do
  probe "$t" registry --texts "$TEXTS"
done

# --- report -----------------------------------------------------------------------------------------
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
echo
echo "idle clients: $CLIENTS logged-in clients in transaction pooling, each after one SELECT 1 (pool_size=$POOL_SIZE)"
printf '%-18s %12s %14s %12s %14s %14s\n' pooler "RSS before" "RSS all idle" "KiB/client" "RSS after" "after-before"
for t in pgbouncer pgheal; do
  name=$t
  [ "$t" = pgbouncer ] && name="pgbouncer $BOUNCER_VERSION"
  s=${RES[$t.idle.rss_start_kib]} h=${RES[$t.idle.rss_idle_kib]} a=${RES[$t.idle.rss_after_kib]}
  printf '%-18s %8s MiB %10s MiB %12s %10s MiB %10s MiB\n' "$name" "$(mib "$s")" "$(mib "$h")" \
    "${RES[$t.idle.kib_per_idle_client]}" "$(mib "$a")" "$(mib $((a - s)))"
done
echo
echo "statement registry: $TEXTS distinct texts prepared, executed and closed by one client"
printf '%-18s %12s %14s %22s %10s\n' pooler "RSS before" "RSS at the end" "RSS after it left" "seconds"
for t in pgbouncer pgheal; do
  name=$t
  [ "$t" = pgbouncer ] && name="pgbouncer $BOUNCER_VERSION"
  s=${RES[$t.registry.rss_start_kib]} e=${RES[$t.registry.rss_end_kib]} a=${RES[$t.registry.rss_after_kib]}
  printf '%-18s %8s MiB %10s MiB %10s MiB (%+.1f) %10s\n' "$name" "$(mib "$s")" "$(mib "$e")" \
    "$(mib "$a")" "$(awk -v d=$((a - s)) 'BEGIN { print d / 1024 }')" "${RES[$t.registry.seconds]}"
done
echo "pgheal: $("$PGHEAL_BIN" --version | awk '{print $2}') ($PGHEAL_BIN), commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
