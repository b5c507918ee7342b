#!/usr/bin/env bash
# The long run of the migration stress test (issue 5, point 6): tests/it/stress_migrations/ for
# 10 minutes instead of the ~15 s it runs in CI.
#
#   scripts/stress-migrations.sh                         # 600 s, 20 clients, guard after-schema-change
#   STRESS_SECONDS=120 scripts/stress-migrations.sh
#   STRESS_GUARD=off scripts/stress-migrations.sh        # the numbers without the savepoint guard
#
# What it runs: one throwaway PostgreSQL and two pgheal proxies in front of it (one
# --pool-mode session, one --pool-mode transaction with a small pool), both with
# --schema-watch listen and --savepoint-guard $STRESS_GUARD; STRESS_CLIENTS tokio-postgres
# clients (half through each proxy) with cached prepared statements, in and outside
# transactions (some rolled back on purpose), while a migrator keeps adding columns under
# SELECT * / RETURNING *, replacing a view with one more column, and adding and dropping an
# unrelated column, straight on the server and through both proxies. It prints a summary
# (per pool mode: transactions, statements in and outside transactions, heals, errors by
# class, write checks; migrations by kind and way) and fails if a client saw an error, a row
# was not in its contract shape or had wrong values, a write was lost, doubled or present
# although it failed or was rolled back, no heal happened, or a migration failed. The module
# comment of tests/it/stress_migrations/mod.rs says more; docs/stress.md has the results of the last long run.
#
# Environment (all optional):
#   STRESS_SECONDS           seconds of load (default here 600; the test's own default is 15).
#                            The run goes on until the migrator has done at least 30 migrations.
#   STRESS_CLIENTS           client connections, half per pool mode (default 20, at least 2)
#   STRESS_GUARD             savepoint guard of both proxies: off, after-schema-change (default)
#                            or always. With off, 0A000 errors inside transactions are expected
#                            (reported, not asserted); everything else is still checked.
#   STRESS_TX_POOL_SIZE      server connections of the transaction-mode proxy (default 4)
#   STRESS_MIGRATE_PAUSE_MS  pause between two migrations (default 200). A table or the view
#                            gets at most 1000 added columns (PostgreSQL's limit is 1600), about
#                            an hour at the default pace.
#   RUST_LOG                 pgheal's log on stderr (e.g. pgheal=info: every heal; very verbose)
#
# Needs what the test suite needs: PostgreSQL server binaries (.ci/setup installs them) and
# Rust. Everything runs on loopback; the cluster and the proxies are torn down at the end.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

export STRESS_SECONDS="${STRESS_SECONDS:-600}"
echo "stress-migrations: STRESS_SECONDS=$STRESS_SECONDS STRESS_CLIENTS=${STRESS_CLIENTS:-20}" \
     "STRESS_GUARD=${STRESS_GUARD:-after-schema-change} (commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
exec cargo test --release --test it stress_migrations:: -- --nocapture
