# Shell functions the benchmark scripts share (sourced by scripts/bench-pgbench.sh and
# scripts/bench-idle-memory.sh). `cleanup` stops what a script started: it reads the script's
# globals TMP, PG_STARTED, PG_BINDIR, PGHEAL_PID, PGHEAL_REAL and AS (free_port: USED_PORTS), and is installed by the
# script with `trap cleanup EXIT`.

log() { printf '[bench] %s\n' "$*" >&2; }

die() {
  printf '[bench] ERROR: %s\n' "$*" >&2
  exit 1
}

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

cleanup() {
  local rc=$?
  set +e
  if [ -n "$PGHEAL_REAL" ]; then kill -TERM "$PGHEAL_REAL" 2>/dev/null; fi
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
    rm -rf "$TMP/data" "$TMP/pw" "$TMP/userlist.txt" "$TMP"/*.key
  else
    rm -rf "$TMP"
  fi
  exit "$rc"
}

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
