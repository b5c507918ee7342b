#!/usr/bin/env bash
# pgbench against PostgreSQL directly, through PgBouncer and through pgheal, in the same run.
#
#   scripts/bench-pgbench.sh                          # session pooling, 3 rounds of 15 s
#   DURATION=10 ROUNDS=2 scripts/bench-pgbench.sh
#   MODE=transaction scripts/bench-pgbench.sh
#   TLS=1 PGBOUNCER_BIN=/path/to/pgbouncer-1.25/pgbouncer scripts/bench-pgbench.sh
#
# What it does:
#   1. starts a throwaway PostgreSQL (initdb in a temp dir, free port, fsync=off,
#      max_connections=200; as the `postgres` OS user when run as root) and `pgbench -i -s 10`;
#   2. starts PgBouncer (PGBOUNCER_BIN, else the `pgbouncer` on the PATH) and pgheal
#      (target/dist/pgheal, brought up to date with `cargo build --profile dist`: the release
#      build with link-time optimisation that the Dockerfile ships) from the same pgbouncer.ini
#      (only the port, logfile and pidfile differ), both with a pool of POOL_SIZE server
#      connections;
#   3. runs `pgbench -S` (read-only select, one prepared statement) for DURATION seconds against
#      direct, pgbouncer, pgheal, direct, pgbouncer, pgheal, ... for ROUNDS rounds (interleaved,
#      so drift of the machine hits every target alike);
#   4. in each round, after pgbench, the pipelined benchmark (examples/pipeline_bench.rs):
#      PIPE_CONNS connections each keeping PIPE_DEPTH `Bind/Execute/Sync` segments of the same
#      select in flight, as tokio-postgres, pgx or libpq pipeline mode do (pgbench 15 cannot:
#      its pipelines end with one Sync);
#   5. prints TPS (segments per second for the pipelined runs), average latency and the
#      pooler's CPU time per transaction or segment (user + system time of the pooler process
#      from /proc, divided by what the client counted) per round, the medians, and the ratios.
#
# Environment:
#   MODE       session (default) or transaction
#                session:     all three with -M prepared, -c 16, pools of 16, pool_mode=session
#                transaction: -c 64, pools of 8, pool_mode=transaction, -M prepared; a
#                             PgBouncer older than 1.21 (no prepared statements in
#                             transaction mode) runs -M extended instead
#   TLS        1: TLS on both sides. PostgreSQL gets ssl=on with a certificate made here
#              (openssl, a throwaway CA), both poolers client_tls_sslmode=require with their own
#              certificate and server_tls_sslmode=require, and every pgbench run sslmode=require
#              (default 0: plain text everywhere)
#   PGBOUNCER_BIN PgBouncer binary (default: `pgbouncer` on the PATH; Debian 12 ships 1.18,
#              build 1.25 from PgBouncer's source archive for the current comparison)
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
#   PIPELINE   0: skip the pipelined benchmark (default 1; always skipped with TLS=1, as the
#              load generator speaks plain text only)
#   PIPE_DEPTH segments in flight per connection (default 50)
#   PIPE_CONNS connections of the pipelined benchmark (default 4)
#   KEEP_LOGS=1       keep the temp dir with the server, PgBouncer and pgheal logs
#
# Everything started here is stopped on exit (trap), and the temp dir removed.
set -euo pipefail
# Shared helpers: log, die, find_pg_bindir, cleanup, free_port, wait_ready.
. "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

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
    M_DIRECT=prepared M_PGBOUNCER=prepared M_PGHEAL=prepared
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


# --- tools --------------------------------------------------------------------------------------
PG_BINDIR="$(find_pg_bindir)" || die "no PostgreSQL server binaries (run .ci/setup)"
PGBENCH="$PG_BINDIR/pgbench"
[ -x "$PGBENCH" ] || PGBENCH="$(command -v pgbench)" || die "no pgbench"
PSQL="$PG_BINDIR/psql"
[ -x "$PSQL" ] || PSQL="$(command -v psql)" || die "no psql"
PGBOUNCER="${PGBOUNCER_BIN:-$(command -v pgbouncer || true)}"
[ -n "$PGBOUNCER" ] || { [ -x /usr/sbin/pgbouncer ] && PGBOUNCER=/usr/sbin/pgbouncer; } ||
  die "no pgbouncer (apt-get install pgbouncer, run .ci/setup, or set PGBOUNCER_BIN)"
[ -x "$PGBOUNCER" ] || die "PGBOUNCER_BIN=$PGBOUNCER is not an executable"
BOUNCER_VERSION="$("$PGBOUNCER" --version | head -1 | awk '{print $2}')"
# Prepared statements in transaction pooling arrived in PgBouncer 1.21.
BOUNCER_PREPARED=1
if [ "$(printf '%s\n1.21.0\n' "$BOUNCER_VERSION" | sort -V | head -1)" != 1.21.0 ]; then
  BOUNCER_PREPARED=0
  if [ "$MODE" = transaction ]; then M_PGBOUNCER=extended; fi
fi
TLS="${TLS:-0}"
if [ "$TLS" = 1 ]; then
  command -v openssl >/dev/null || die "TLS=1 needs openssl"
  export PGSSLMODE=require
fi

PIPELINE="${PIPELINE:-1}"
PIPE_DEPTH="${PIPE_DEPTH:-50}"
PIPE_CONNS="${PIPE_CONNS:-4}"
if [ "$TLS" = 1 ] && [ "$PIPELINE" = 1 ]; then
  log "TLS=1: the pipelined benchmark is skipped (its load generator speaks plain text only)"
  PIPELINE=0
fi
PIPE_BIN="$ROOT/target/release/examples/pipeline_bench"
if [ "$PIPELINE" = 1 ]; then
  log "building the pipelined load generator (cargo build --release --example pipeline_bench)"
  cargo build --release --example pipeline_bench --quiet
  [ -x "$PIPE_BIN" ] || die "no load generator at $PIPE_BIN"
fi

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
PG_TLS_OPTS=""
if [ "$TLS" = 1 ]; then
  # A throwaway CA and one certificate for 127.0.0.1, used by PostgreSQL and both poolers.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$TMP/ca.key" -out "$TMP/ca.crt" >/dev/null 2>&1 || die "openssl: CA"
  openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 \
    -keyout "$TMP/server.key" -out "$TMP/server.csr" >/dev/null 2>&1 || die "openssl: key"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$TMP/san.ext"
  openssl x509 -req -in "$TMP/server.csr" -CA "$TMP/ca.crt" -CAkey "$TMP/ca.key" \
    -CAcreateserial -days 2 -extfile "$TMP/san.ext" -out "$TMP/server.crt" >/dev/null 2>&1 ||
    die "openssl: certificate"
  chmod 0600 "$TMP/server.key" "$TMP/ca.key"
  [ "${#AS[@]}" -eq 0 ] || chown postgres: "$TMP/server.key" "$TMP/server.crt" "$TMP/ca.crt"
  PG_TLS_OPTS="-c ssl=on -c ssl_cert_file=$TMP/server.crt -c ssl_key_file=$TMP/server.key"
fi
run_as "$PG_BINDIR/pg_ctl" -D "$TMP/data" -l "$TMP/postgres.log" -w -t 60 start \
  -o "-c port=$PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$TMP \
      -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
      -c max_connections=200 $PG_TLS_OPTS" >/dev/null ||
  die "PostgreSQL did not start (see $TMP/postgres.log)"
PG_STARTED=1
"$PSQL" -X -q -h 127.0.0.1 -p "$PG_PORT" -U "$BENCH_USER" -d postgres \
  -c "CREATE DATABASE $BENCH_DB" >/dev/null
log "pgbench -i -s $SCALE"
"$PGBENCH" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PG_PORT" -U "$BENCH_USER" "$BENCH_DB" \
  >"$TMP/pgbench-init.log" 2>&1 || die "pgbench -i failed (see $TMP/pgbench-init.log)"

# --- PgBouncer and pgheal, from the same pgbouncer.ini ---------------------------------------------
printf '"%s" "%s"\n' "$BENCH_USER" "$PGPASSWORD" >"$TMP/userlist.txt"
write_ini() { # name port -> $TMP/<name>.ini
  local name=$1 port=$2
  {
    cat <<EOF
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
max_client_conn = 1000
server_reset_query = DISCARD ALL
logfile = $TMP/$name.log
pidfile = $TMP/$name.pid
log_connections = 0
log_disconnections = 0
EOF
    if [ "$BOUNCER_PREPARED" = 1 ]; then echo "max_prepared_statements = 200"; fi
    if [ "$TLS" = 1 ]; then
      cat <<EOF
client_tls_sslmode = require
client_tls_cert_file = $TMP/server.crt
client_tls_key_file = $TMP/server.key
server_tls_sslmode = require
EOF
    fi
  } >"$TMP/$name.ini"
  [ "${#AS[@]}" -eq 0 ] || chown postgres: "$TMP/$name.ini"
}
write_ini pgbouncer "$BOUNCER_PORT"
write_ini pgheal "$PGHEAL_PORT"
[ "${#AS[@]}" -eq 0 ] || chown postgres: "$TMP/userlist.txt"
log "PgBouncer $BOUNCER_VERSION on port $BOUNCER_PORT (pool_mode=$MODE, default_pool_size=$POOL_SIZE, TLS=$TLS)"
run_as "$PGBOUNCER" -d "$TMP/pgbouncer.ini" >/dev/null 2>&1 ||
  die "PgBouncer did not start (see $TMP/pgbouncer.log)"
wait_ready PgBouncer "$BOUNCER_PORT"

# pgheal reads the same file, as a PgBouncer user would run it, as the same OS user.
log "pgheal $("$PGHEAL_BIN" --version | awk '{print $2}') on port $PGHEAL_PORT (the same pgbouncer.ini)"
PGHEAL_LOG="${PGHEAL_LOG:-info}" run_as "$PGHEAL_BIN" -q "$TMP/pgheal.ini" >"$TMP/pgheal.out" 2>&1 &
PGHEAL_PID=$!
wait_ready pgheal "$PGHEAL_PORT"
# The process to measure is pgheal itself, not the runuser wrapper: its pidfile names it.
PGHEAL_REAL="$(cat "$TMP/pgheal.pid" 2>/dev/null || true)"
[ -n "$PGHEAL_REAL" ] || die "pgheal wrote no pidfile ($TMP/pgheal.pid)"

# --- runs -------------------------------------------------------------------------------------------
declare -A PORT=([direct]=$PG_PORT [pgbouncer]=$BOUNCER_PORT [pgheal]=$PGHEAL_PORT)
declare -A PROTO=([direct]=$M_DIRECT [pgbouncer]=$M_PGBOUNCER [pgheal]=$M_PGHEAL)
TARGETS=(direct pgbouncer pgheal)
declare -A TPS LAT CPU PIPE_RATE PIPE_CPU
FAILED=0
CLK_TCK="$(getconf CLK_TCK)"

# CPU time (user + system, clock ticks) a process has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo NA; }
pooler_pid() { # target -> pid of the pooler process, empty for direct
  case "$1" in
    pgbouncer) cat "$TMP/pgbouncer.pid" ;;
    pgheal) echo "$PGHEAL_REAL" ;;
  esac
}

# CPU per unit of work: ticks before, ticks after, units -> microseconds per unit, or NA.
cpu_per() {
  awk -v a="$1" -v b="$2" -v n="$3" -v hz="$CLK_TCK" \
    'BEGIN { if (a == "NA" || b == "NA" || n == "" || n == 0) print "NA"; else printf "%.2f\n", (b - a) * 1e6 / hz / n }'
}

run_one() { # target round
  local t=$1 r=$2 out tps lat pid before after txns cpu=NA
  out="$TMP/run-$t-$r.log"
  pid="$(pooler_pid "$t")"
  before=""
  if [ -n "$pid" ]; then before="$(cpu_ticks "$pid")"; fi
  log "round $r/$ROUNDS: $t (pgbench -S -M ${PROTO[$t]} -c $CLIENTS -j $THREADS -T $DURATION)"
  if timeout $((DURATION + 120)) "$PGBENCH" -n -S -M "${PROTO[$t]}" -c "$CLIENTS" -j "$THREADS" \
    -T "$DURATION" -h 127.0.0.1 -p "${PORT[$t]}" -U "$BENCH_USER" "$BENCH_DB" >"$out" 2>&1; then
    tps="$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$out" | head -1)"
    lat="$(sed -n 's/^latency average = \([0-9.]*\) ms.*/\1/p' "$out" | head -1)"
    txns="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out" | head -1)"
    if [ -n "$pid" ] && [ -n "$txns" ]; then
      after="$(cpu_ticks "$pid")"
      cpu="$(cpu_per "$before" "$after" "$txns")"
    fi
  fi
  if [ -z "${tps:-}" ] || [ -z "${lat:-}" ]; then
    log "  $t failed: $(tail -n 3 "$out" | tr '\n' ' ')"
    tps=NA lat=NA
    FAILED=1
  else
    log "  $t: $tps tps, $lat ms, pooler CPU $cpu us/txn"
  fi
  TPS[$t]="${TPS[$t]:-} $tps"
  LAT[$t]="${LAT[$t]:-} $lat"
  CPU[$t]="${CPU[$t]:-} $cpu"
}

run_pipelined() { # target round
  local t=$1 r=$2 out pid before="" after rate=NA segs cpu=NA
  out="$TMP/pipe-$t-$r.log"
  pid="$(pooler_pid "$t")"
  if [ -n "$pid" ]; then before="$(cpu_ticks "$pid")"; fi
  log "round $r/$ROUNDS: $t pipelined ($PIPE_CONNS connections x $PIPE_DEPTH Bind/Execute/Sync in flight, $DURATION s)"
  if timeout $((DURATION + 120)) "$PIPE_BIN" 127.0.0.1 "${PORT[$t]}" "$BENCH_USER" "$BENCH_DB" \
    "$DURATION" "$PIPE_DEPTH" "$PIPE_CONNS" "$SCALE" >"$out" 2>&1; then
    rate="$(sed -n 's/.* rate=\([0-9.]*\).*/\1/p' "$out" | head -1)"
    segs="$(sed -n 's/^segments=\([0-9]*\) .*/\1/p' "$out" | head -1)"
    if [ -n "$pid" ]; then
      after="$(cpu_ticks "$pid")"
      cpu="$(cpu_per "$before" "$after" "$segs")"
    fi
  fi
  if [ -z "$rate" ] || [ "$rate" = NA ]; then
    log "  $t pipelined failed: $(tail -n 3 "$out" | tr '\n' ' ')"
    rate=NA
    FAILED=1
  else
    log "  $t pipelined: $rate segments/s, pooler CPU $cpu us/segment"
  fi
  PIPE_RATE[$t]="${PIPE_RATE[$t]:-} $rate"
  PIPE_CPU[$t]="${PIPE_CPU[$t]:-} $cpu"
}

for r in $(seq "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do
    run_one "$t" "$r"
  done
  if [ "$PIPELINE" = 1 ]; then
    for t in "${TARGETS[@]}"; do
      run_pipelined "$t" "$r"
    done
  fi
done

# --- report -----------------------------------------------------------------------------------------
median() { # numbers... (NA ignored) -> median, or NA
  printf '%s\n' "$@" | { grep -v -e '^NA$' -e '^$' || true; } | sort -g | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "NA"; exit }
      if (NR % 2) printf "%.1f\n", v[(NR + 1) / 2]
      else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}
median3() { # same with 3 decimals (latency)
  printf '%s\n' "$@" | { grep -v -e '^NA$' -e '^$' || true; } | sort -g | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "NA"; exit }
      if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2]
      else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
    }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "NA" || b == "NA" || b == 0) print "NA"; else printf "%.3f\n", a / b }'; }
declare -A MED_TPS MED_LAT MED_CPU
for t in "${TARGETS[@]}"; do
  # shellcheck disable=SC2086
  MED_CPU[$t]="$(median3 ${CPU[$t]})"
  # shellcheck disable=SC2086
  MED_TPS[$t]="$(median ${TPS[$t]})"
  # shellcheck disable=SC2086
  MED_LAT[$t]="$(median3 ${LAT[$t]})"
done

echo
TLS_NOTE="plain text"
if [ "$TLS" = 1 ]; then TLS_NOTE="TLS on both sides (sslmode=require)"; fi
echo "pgbench -S (select-only), scale $SCALE, MODE=$MODE, -c $CLIENTS -j $THREADS -T $DURATION, $ROUNDS rounds interleaved, $TLS_NOTE"
echo "poolers: $POOL_SIZE server connections, pool_mode=$MODE; PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}'), PgBouncer $BOUNCER_VERSION, $(nproc) CPUs"
echo
printf '| %-9s | %-8s | %-28s | %10s | %17s | %20s |\n' target protocol "TPS per round" "median TPS" "median latency ms" "pooler CPU us/txn"
printf '|%s|%s|%s|%s|%s|%s|\n' "-----------" "----------" "------------------------------" "-----------:" "------------------:" "---------------------:"
for t in "${TARGETS[@]}"; do
  rounds="$(echo "${TPS[$t]}" | awk '{ for (i = 1; i <= NF; i++) { if ($i == "NA") s = s sep "NA"; else s = s sep sprintf("%.0f", $i); sep = ", " } print s }')"
  printf '| %-9s | %-8s | %-28s | %10s | %17s | %20s |\n' "$t" "${PROTO[$t]}" "$rounds" "${MED_TPS[$t]}" "${MED_LAT[$t]}" "${MED_CPU[$t]}"
done
echo
printf '| %-19s | %9s | %13s | %13s |\n' ratio "TPS" "latency" "CPU/txn"
printf '|%s|%s|%s|%s|\n' "---------------------" "----------:" "--------------:" "--------------:"
for pair in pgheal/direct pgbouncer/direct pgheal/pgbouncer; do
  a="${pair%/*}" b="${pair#*/}"
  printf '| %-19s | %9s | %13s | %13s |\n' "$pair" "$(ratio "${MED_TPS[$a]}" "${MED_TPS[$b]}")" \
    "$(ratio "${MED_LAT[$a]}" "${MED_LAT[$b]}")" "$(ratio "${MED_CPU[$a]}" "${MED_CPU[$b]}")"
done
if [ "$PIPELINE" = 1 ]; then
  declare -A MED_RATE MED_PCPU
  for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2086
    MED_RATE[$t]="$(median ${PIPE_RATE[$t]})"
    # shellcheck disable=SC2086
    MED_PCPU[$t]="$(median3 ${PIPE_CPU[$t]})"
  done
  echo
  echo "pipelined: $PIPE_CONNS connections, each keeping $PIPE_DEPTH Bind/Execute/Sync segments of pgbench's select in flight (tokio-postgres), -T $DURATION, $ROUNDS rounds interleaved with the above"
  echo
  printf '| %-9s | %-28s | %18s | %24s |\n' target "segments/s per round" "median segments/s" "pooler CPU us/segment"
  printf '|%s|%s|%s|%s|\n' "-----------" "------------------------------" "-------------------:" "-------------------------:"
  for t in "${TARGETS[@]}"; do
    rounds="$(echo "${PIPE_RATE[$t]}" | awk '{ for (i = 1; i <= NF; i++) { if ($i == "NA") s = s sep "NA"; else s = s sep sprintf("%.0f", $i); sep = ", " } print s }')"
    printf '| %-9s | %-28s | %18s | %24s |\n' "$t" "$rounds" "${MED_RATE[$t]}" "${MED_PCPU[$t]}"
  done
  echo
  printf '| %-19s | %12s | %14s |\n' ratio "segments/s" "CPU/segment"
  printf '|%s|%s|%s|\n' "---------------------" "-------------:" "---------------:"
  for pair in pgheal/direct pgbouncer/direct pgheal/pgbouncer; do
    a="${pair%/*}" b="${pair#*/}"
    printf '| %-19s | %12s | %14s |\n' "$pair" "$(ratio "${MED_RATE[$a]}" "${MED_RATE[$b]}")" \
      "$(ratio "${MED_PCPU[$a]}" "${MED_PCPU[$b]}")"
  done
fi

echo
if [ "$FAILED" -ne 0 ]; then
  log "some runs failed (NA above); their pgbench output is in $TMP"
  KEEP_LOGS=1
fi
