#!/usr/bin/env bash
# The soak (issue 14, point 5): tests/it/soak.rs for as long as asked instead of the ~90 s it
# runs in CI.
#
#   scripts/soak.sh 3600                          # the one-hour run, 1,000 clients per process
#   scripts/soak.sh 600                           # ten minutes
#   PGHEAL_SOAK_CLIENTS=2000 scripts/soak.sh 900  # more clients
#
# What it runs: one throwaway PostgreSQL and two pgheal processes in front of it (session and
# transaction pooling, pools of 20), each with PGHEAL_SOAK_CLIENTS clients: writers (autocommit
# INSERTs and transactions, every acknowledged one checked in the table afterwards), readers
# with prepared statements that the migrations make stale, raw-protocol clients that vanish
# mid-batch, with half a message sent, mid-COPY and mid-transaction, and a canary per process.
# Meanwhile a migrator adds and drops columns, replaces a view, adds enum values (ALTER TYPE)
# and changes a column's type, about once a second; 1–3 random backends are terminated every 3 s;
# the server is restarted (pg_ctl restart -m fast) once (runs under 5 minutes) or twice. The RSS
# of both processes is sampled every second. It fails on a crash or panic, a hang (an operation
# over 60 s, or a client not done 30 s after the end), a lost or doubled acknowledged write, a
# committed write of a vanished client, an error no fault explains (never 0A000), a wrong row,
# or RSS after the run more than 25% + 8 MiB above RSS after the first wave. It prints a
# summary (`soak: ...`); docs/stress.md ("Soak") has the figures of the last runs.
#
# Arguments and environment (all optional):
#   $1 or PGHEAL_SOAK_SECS      seconds of load (default here 3600; the test's own default is 90)
#   PGHEAL_SOAK_CLIENTS         clients per pgheal process (default 1000). The open-file limit
#                               must allow about 4 per client (the test raises the soft limit).
#   PGHEAL_SOAK_RESTARTS        server restarts in the second wave (default 1 under 300 s, else 2)
#   PGHEAL_SOAK_MIGRATE_MS      pause between two migrations (default 1000)
#   PGHEAL_SOAK_KILL_MS         pause between two rounds of pg_terminate_backend (default 3000)
#
# Needs what the test suite needs: PostgreSQL server binaries (.ci/setup installs them) and
# Rust. Everything runs on loopback; the cluster and the processes are torn down at the end.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PGHEAL_SOAK_SECS="${1:-${PGHEAL_SOAK_SECS:-3600}}"
echo "soak: PGHEAL_SOAK_SECS=$PGHEAL_SOAK_SECS PGHEAL_SOAK_CLIENTS=${PGHEAL_SOAK_CLIENTS:-1000}" \
     "(commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
exec cargo test --release --test it soak:: -- --nocapture
