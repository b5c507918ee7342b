#!/usr/bin/env bash
# pgbench against PostgreSQL directly, through PgBouncer and through pgheal, in the same run.
#
#   scripts/bench-pgbench.sh                          # session pooling, 3 rounds of 15 s
#   DURATION=10 ROUNDS=2 scripts/bench-pgbench.sh
#   MODE=transaction scripts/bench-pgbench.sh
#
# What it does:
#   1. starts a throwaway PostgreSQL (initdb in a temp dir, free port, fsync=off,
#      max_connections=200; as the `postgres` OS user when run as root) and `pgbench -i -s 10`;
#   2. starts PgBouncer (Debian package pgbouncer, see .ci/setup) and pgheal
#      (target/dist/pgheal, brought up to date with `cargo build --profile dist`: the release
#      build with link-time optimisation that the Dockerfile ships), both with a pool of
#      POOL_SIZE server connections;
#   3. runs `pgbench -S` (read-only select, one prepared statement) for DURATION seconds against
#      direct, pgbouncer, pgheal, direct, pgbouncer, pgheal, ... for ROUNDS rounds (interleaved,
#      so drift of the machine hits every target alike);
#   4. prints TPS and average latency per round, the medians, and the ratios.
#
# Environment:
#   MODE       session (default) or transaction
#                session:     all three with -M prepared, -c 16, pools of 16, pool_mode=session
#                transaction: -c 64, pools of 8, pool_mode=transaction; PgBouncer with
#                             -M extended (PgBouncer 1.18 has no prepared statements in
#                             transaction mode), pgheal and direct with -M prepared
#   DURATION   seconds per pgbench run (default 15)
#   ROUNDS     rounds (default 3)
#   CLIENTS    pgbench clients (default 16 in session mode, 64 in transaction mode)
#   POOL_SIZE  server connections per pooler (default 16 in session mode, 8 in transaction mode)
#   THREADS    pgbench threads (default 2)
#   SCALE      pgbench scale factor (default 10)
#   PGPASSWORD password of the benchmark user (default: a random one). Passwords are only ever
#              passed through the environment and 0600 files, never on a command line.
#   PGHEAL_LOG pgheal's log filter (default info, pgheal's own default, as PgBouncer runs at its
#              default verbosity)
#   PGHEAL_BIN pgheal binary (default: target/dist/pgheal, built first; a given one is not built)
#   PGHEAL_PG_BINDIR  PostgreSQL binaries (default: as .ci/setup finds them)
#   KEEP_LOGS=1       keep the temp dir with the server, PgBouncer and pgheal logs
#
# Everything started here is stopped on exit (trap), and the temp dir removed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

MODE="${MODE:-session}"
DURATION="${DURATION:-15}"
ROUNDS="${ROUNDS:-3}"
THREADS="${THREADS:-2}"
SCALE="${SCALE:-10}"
case "$MODE" in
  session)
    CLIENTS="${CLIENTS:-16}"
    POOL_SIZE="${POOL_SIZE:-16}"
    M_DIRECT=prepared M_PGBOUNCER=prepared M_PGHEAL=prepared
    ;;
  transaction)
    CLIENTS="${CLIENTS:-64}"
    POOL_SIZE="${POOL_SIZE:-8}"
    M_DIRECT=prepared M_PGBOUNCER=extended M_PGHEAL=prepared
    ;;
  *)
    echo "MODE must be session or transaction, got '$MODE'" >&2
    exit 2
    ;;
esac
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

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
  printf '[bench] ERROR: %s\n' "$*" >&2
  exit 1
}

# --- tools --------------------------------------------------------------------------------------
is_server_bin_dir() { [ -n "$1" ] && [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ]; }
find_pg_bindir() { # same order as .ci/setup and src/cluster/binaries.rs
  local dir
  if [ -n "${PGHEAL_PG_BINDIR:-}" ]; then
    is_server_bin_dir "$PGHEAL_PG_BINDIR" && { echo "$PGHEAL_PG_BINDIR"; return 0; }
    return 1
  fi
  if command -v pg_config >/dev/null 2>&1; then
    dir="$(pg_config --bindir 2>/dev/null || true)"
    is_server_bin_dir "$dir" && { echo "$dir"; return 0; }
  fi
  for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
    is_server_bin_dir "$dir" && { echo "$dir"; return 0; }
  done
  if dir="$(command -v initdb 2>/dev/null)"; then
    dir="$(dirname "$(readlink -f "$dir")")"
    is_server_bin_dir "$dir" && { echo "$dir"; return 0; }
  fi
  return 1
}
PG_BINDIR="$(find_pg_bindir)" || die "no PostgreSQL server binaries (run .ci/setup)"
PGBENCH="$PG_BINDIR/pgbench"
[ -x "$PGBENCH" ] || PGBENCH="$(command -v pgbench)" || die "no pgbench"
PSQL="$PG_BINDIR/psql"
[ -x "$PSQL" ] || PSQL="$(command -v psql)" || die "no psql"
PGBOUNCER="$(command -v pgbouncer || true)"
[ -n "$PGBOUNCER" ] || { [ -x /usr/sbin/pgbouncer ] && PGBOUNCER=/usr/sbin/pgbouncer; } ||
  die "no pgbouncer (apt-get install pgbouncer, or run .ci/setup)"

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

# --- temp dir and cleanup -------------------------------------------------------------------------
TMP="$(mktemp -d /tmp/pgheal-bench.XXXXXX)"
chmod 0700 "$TMP"
[ "${#AS[@]}" -eq 0 ] || chown postgres: "$TMP"
PG_STARTED=0
PGHEAL_PID=""
cleanup() {
  local rc=$?
  set +e
  if [ -n "$PGHEAL_PID" ] && kill -0 "$PGHEAL_PID" 2>/dev/null; then
    kill -TERM "$PGHEAL_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$PGHEAL_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PGHEAL_PID" 2>/dev/null
    wait "$PGHEAL_PID" 2>/dev/null
  fi
  if [ -s "$TMP/pgbouncer.pid" ]; then
    local bpid
    bpid="$(cat "$TMP/pgbouncer.pid")"
    kill -TERM "$bpid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$bpid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$bpid" 2>/dev/null
  fi
  if [ "$PG_STARTED" -eq 1 ]; then
    run_as "$PG_BINDIR/pg_ctl" -D "$TMP/data" -m immediate -w stop >/dev/null 2>&1
  fi
  # Keep the logs when asked to, or when something failed (not when interrupted).
  if [ "${KEEP_LOGS:-0}" = 1 ] || { [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ] && [ "$rc" -ne 143 ]; }; then
    log "logs kept in $TMP"
    rm -rf "$TMP/data" "$TMP/pw" "$TMP/userlist.txt"
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A TCP port nothing listens on (bash's /dev/tcp connect fails), not handed out twice.
USED_PORTS=" "
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 40000))
    case "$USED_PORTS" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED_PORTS="$USED_PORTS$p "
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

wait_ready() { # name port
  local name=$1 port=$2
  for _ in $(seq 100); do
    if "$PSQL" -X -q -h 127.0.0.1 -p "$port" -U "$BENCH_USER" -d "$BENCH_DB" -c 'SELECT 1' \
      >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.2
  done
  die "$name on port $port does not answer (logs in $TMP)"
}

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
      -c max_connections=200" >/dev/null || die "PostgreSQL did not start (see $TMP/postgres.log)"
PG_STARTED=1
"$PSQL" -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$BENCH_USER" -d postgres \
  -c "CREATE DATABASE $BENCH_DB" >/dev/null
log "pgbench -i -s $SCALE"
"$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U "$BENCH_USER" "$BENCH_DB" \
  >"$TMP/pgbench-init.log" 2>&1 || die "pgbench -i failed (see $TMP/pgbench-init.log)"

# --- PgBouncer --------------------------------------------------------------------------------------
printf '"%s" "%s"\n' "$BENCH_USER" "$PGPASSWORD" >"$TMP/userlist.txt"
cat >"$TMP/pgbouncer.ini" <<EOF
[databases]
$BENCH_DB = host=127.0.0.1 port=$PG_PORT dbname=$BENCH_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BOUNCER_PORT
unix_socket_dir =
auth_type = md5
auth_file = $TMP/userlist.txt
pool_mode = $MODE
default_pool_size = $POOL_SIZE
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 1000
max_db_connections = $POOL_SIZE
server_reset_query = DISCARD ALL
logfile = $TMP/pgbouncer.log
pidfile = $TMP/pgbouncer.pid
log_connections = 0
log_disconnections = 0
EOF
[ "${#AS[@]}" -eq 0 ] || chown postgres: "$TMP/userlist.txt" "$TMP/pgbouncer.ini"
log "PgBouncer $("$PGBOUNCER" --version | head -1 | awk '{print $2}') on port $BOUNCER_PORT (pool_mode=$MODE, default_pool_size=$POOL_SIZE)"
run_as "$PGBOUNCER" -d "$TMP/pgbouncer.ini" >/dev/null 2>&1 ||
  die "PgBouncer did not start (see $TMP/pgbouncer.log)"
wait_ready PgBouncer "$BOUNCER_PORT"

# --- pgheal -----------------------------------------------------------------------------------------
# The upstream URL carries the password, so it goes through the environment (PGHEAL_UPSTREAM,
# the equivalent of --upstream), not the command line. Clients log in with the same user and
# password (md5, like PgBouncer above; authentication happens once per pgbench client).
log "pgheal $("$PGHEAL_BIN" --version | awk '{print $2}') on port $PGHEAL_PORT (--pool-mode $MODE, --pool-size $POOL_SIZE)"
PGHEAL_UPSTREAM="postgres://$BENCH_USER:$PGPASSWORD@127.0.0.1:$PG_PORT/$BENCH_DB" \
  PGHEAL_LOG="${PGHEAL_LOG:-info}" \
  "$PGHEAL_BIN" --listen "127.0.0.1:$PGHEAL_PORT" --pool-size "$POOL_SIZE" \
  --pool-mode "$MODE" --auth-type md5 >"$TMP/pgheal.log" 2>&1 &
PGHEAL_PID=$!
sleep 0.2
kill -0 "$PGHEAL_PID" 2>/dev/null || die "pgheal exited at start: $(tail -n 5 "$TMP/pgheal.log")"
wait_ready pgheal "$PGHEAL_PORT"

# --- runs -------------------------------------------------------------------------------------------
declare -A PORT=([direct]=$PG_PORT [pgbouncer]=$BOUNCER_PORT [pgheal]=$PGHEAL_PORT)
declare -A PROTO=([direct]=$M_DIRECT [pgbouncer]=$M_PGBOUNCER [pgheal]=$M_PGHEAL)
TARGETS=(direct pgbouncer pgheal)
declare -A TPS LAT
FAILED=0

run_one() { # target round
  local t=$1 r=$2 out tps lat
  out="$TMP/run-$t-$r.log"
  log "round $r/$ROUNDS: $t (pgbench -S -M ${PROTO[$t]} -c $CLIENTS -j $THREADS -T $DURATION)"
  if timeout $((DURATION + 120)) "$PGBENCH" -n -S -M "${PROTO[$t]}" -c "$CLIENTS" -j "$THREADS" \
    -T "$DURATION" -h 127.0.0.1 -p "${PORT[$t]}" -U "$BENCH_USER" "$BENCH_DB" >"$out" 2>&1; then
    tps="$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$out" | head -1)"
    lat="$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$out" | head -1)"
  fi
  if [ -z "${tps:-}" ] || [ -z "${lat:-}" ]; then
    log "  $t failed: $(tail -n 3 "$out" | tr '\n' ' ')"
    tps=NA lat=NA
    FAILED=1
  else
    log "  $t: $tps tps, $lat ms"
  fi
  TPS[$t]="${TPS[$t]:-} $tps"
  LAT[$t]="${LAT[$t]:-} $lat"
}

for r in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    run_one "$t" "$r"
  done
done

# --- report -----------------------------------------------------------------------------------------
median() { # numbers... (NA ignored) -> median, or NA
  printf '%s\n' "$@" | grep -v '^NA$' | grep -v '^$' | sort -g | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "NA"; exit }
      if (NR % 2) printf "%.1f\n", v[(NR + 1) / 2]
      else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}
median3() { # same with 3 decimals (latency)
  printf '%s\n' "$@" | grep -v '^NA$' | grep -v '^$' | sort -g | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "NA"; exit }
      if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2]
      else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b == 0) print "NA"; else printf "%.3f\n", a / b }'; }
declare -A MED_TPS MED_LAT
for t in "${TARGETS[@]}"; do
  # shellcheck disable=SC2086
  MED_TPS[$t]="$(median ${TPS[$t]})"
  # shellcheck disable=SC2086
  MED_LAT[$t]="$(median3 ${LAT[$t]})"
done

echo
echo "pgbench -S (select-only), scale $SCALE, MODE=$MODE, -c $CLIENTS -j $THREADS -T $DURATION, $ROUNDS rounds interleaved"
echo "poolers: $POOL_SIZE server connections, pool_mode=$MODE; PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}'), PgBouncer $("$PGBOUNCER" --version | head -1 | awk '{print $2}'), $(nproc) CPUs"
echo
printf '| %-9s | %-8s | %-28s | %10s | %17s |\n' target protocol "TPS per round" "median TPS" "median latency ms"
printf '|%s|%s|%s|%s|%s|\n' "-----------" "----------" "------------------------------" "-----------:" "------------------:"
for t in "${TARGETS[@]}"; do
  rounds="$(echo "${TPS[$t]}" | awk '{ for (i = 1; i <= NF; i++) { if ($i == "NA") s = s sep "NA"; else s = s sep sprintf("%.0f", $i); sep = ", " } print s }')"
  printf '| %-9s | %-8s | %-28s | %10s | %17s |\n' "$t" "${PROTO[$t]}" "$rounds" "${MED_TPS[$t]}" "${MED_LAT[$t]}"
done
echo
printf '| %-19s | %9s | %13s |\n' ratio "TPS" "latency"
printf '|%s|%s|%s|\n' "---------------------" "----------:" "--------------:"
for pair in pgheal/direct pgbouncer/direct pgheal/pgbouncer; do
  a="${pair%/*}" b="${pair#*/}"
  printf '| %-19s | %9s | %13s |\n' "$pair" "$(ratio "${MED_TPS[$a]}" "${MED_TPS[$b]}")" \
    "$(ratio "${MED_LAT[$a]}" "${MED_LAT[$b]}")"
done
echo
if [ "$FAILED" -ne 0 ]; then
  log "some runs failed (NA above); their pgbench output is in $TMP"
  KEEP_LOGS=1
fi
