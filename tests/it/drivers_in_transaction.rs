//! Real drivers using cached statements *inside explicit transactions* across a migration
//! (issue 5.5): an ActiveRecord transaction with prepared statements, pgjdbc with
//! autocommit=false and prepareThreshold=1, asyncpg inside `conn.transaction()`, psycopg 3
//! without autocommit. Each must read correct data, commit, and write exactly once.
//!
//! Inside a transaction block the cached-plan error aborts the transaction, so pgheal cannot
//! heal it afterwards: it must prevent it. The schema epoch of the database advances when DDL
//! passes through pgheal and commits, or (with `schema_watch = "listen"`) when the event
//! trigger notifies of DDL run straight on the server; statements prepared before the current
//! epoch are re-prepared before their next Bind and projected onto the client's contract
//! (docs: shared/design/heal-engine.md, "Inside explicit transactions").
//!
//! Each script (tests/drivers/{python,java,ruby}/*_tx.*):
//!
//! 1. caches `SELECT * FROM orders WHERE id = $1` (ActiveRecord: the model query
//!    `Order.find(1)`) and `INSERT INTO orders (id, total, note) VALUES ($1, $2, $3) RETURNING *`
//!    and runs each once, in one transaction that commits;
//! 2. prints `READY` and waits for `go` on stdin while this test runs
//!    `ALTER TABLE orders ADD COLUMN discount_code varchar(50)`, either through pgheal (as `app`,
//!    the table owner, with tokio-postgres) or straight on the server with the schema watch on,
//!    and waits until pgheal's schema epoch has advanced;
//! 3. in ONE transaction: reads id 1 with the cached select, inserts id 4 with the cached
//!    insert, commits. A failing statement prints its error and the transaction rolls back, the
//!    way the driver's idiomatic transaction block does.
//!
//! Straight to PostgreSQL the select fails with `0A000 cached plan must not change result type`
//! (ActiveRecord: `PreparedStatementCacheExpired`) and the transaction is rolled back. Through
//! pgheal there is no error: the old three columns, the right values, the commit, row 4 exactly
//! once, and nothing counted as `forwarded_in_transaction`. Session and transaction pooling.
//!
//! Transcript format (one line per fact; `driver:` and `info:` lines are not compared):
//!
//! ```text
//! driver: <name and version>
//! <label>: columns=<name>:<type>,...     (the description the driver decodes with)
//! <label>: rows=<n>
//! <label>: row=<v>|<v>|...               (NULL for null; numerics as plain text)
//! <label>: error=<SQLSTATE> <message> routine=<R field>
//! info: <phase> raised <exception class>
//! <phase>: committed | rolled back       (phase = before, after)
//! READY                                  (then waits for "go" on stdin)
//! DONE
//! ```
//!
//! A missing driver skips its tests with `skipping: ...` on stderr, except when the `CI`
//! environment variable is set: there it fails (`.ci/setup` installs every driver).

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::drivers::{
    admin_async, crate_dir, heal_counters, run_script, start_cluster, Driver, CACHED_PLAN_ERROR,
    CONTRACT, MIGRATION, ROWS_SQL,
};
use common::{admin_client, connect, heal_count, proxy_url, start_proxy, DB};
use pgheal::cluster::TempCluster;
use pgheal::heal::Outcome;
use pgheal::proxy::ProxyHandle;

/// How long the schema epoch may take to advance after a migration (the watch is a LISTEN).
const EPOCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Transcript lines not compared.
const INFORMATIONAL: &[&str] = &["driver: ", "info: "];

// One driver: how to run its script, how to tell whether it is installed, and (`direct`) the
// exception the application sees, straight against PostgreSQL, when the cached select fails
// inside the transaction (from the script's `info:` line).

fn psycopg() -> Driver<&'static str> {
    Driver {
        install_hint: "pip install 'psycopg[binary]' (.ci/setup)",
        informational: INFORMATIONAL,
        ..Driver::python(
            "psycopg 3",
            "psycopg",
            "tests/drivers/python/psycopg_tx.py",
            "psycopg.errors.FeatureNotSupported",
        )
    }
}

fn asyncpg() -> Driver<&'static str> {
    Driver {
        install_hint: "pip install asyncpg (.ci/setup)",
        informational: INFORMATIONAL,
        ..Driver::python(
            "asyncpg",
            "asyncpg",
            "tests/drivers/python/asyncpg_tx.py",
            "asyncpg.exceptions.InvalidCachedStatementError",
        )
    }
}

fn pgjdbc() -> Driver<&'static str> {
    Driver {
        install_hint: "apt-get install default-jdk-headless libpostgresql-jdbc-java (.ci/setup)",
        informational: INFORMATIONAL,
        ..Driver::pgjdbc(
            "pgjdbc (autocommit off)",
            "tests/drivers/java/PgjdbcTx.java",
            "org.postgresql.util.PSQLException",
        )
    }
}

fn activerecord() -> Driver<&'static str> {
    Driver {
        name: "ActiveRecord",
        program: "ruby",
        args: vec!["tests/drivers/ruby/activerecord_tx.rb".into()],
        env: vec![],
        probe: (
            "ruby",
            vec!["-e".into(), "require 'pg'; require 'active_record'".into()],
            crate_dir().into(),
        ),
        needs_file: None,
        install_hint: "apt-get install ruby ruby-activerecord ruby-pg (.ci/setup)",
        informational: INFORMATIONAL,
        direct: "ActiveRecord::PreparedStatementCacheExpired",
    }
}

/// `orders` as it is before each run: two rows, owned by app, no discount_code yet. (Totals
/// without trailing zeros: ActiveRecord decodes numerics to BigDecimal, which drops them.)
async fn reset_orders(pg: &Arc<TempCluster>) {
    common::drivers::reset_orders(pg, "(1, 10.25, 'first'), (2, 20.5, NULL)").await;
}

/// The lines of one successful statement: its description and one row.
fn ok_lines(label: &str, row: &str) -> Vec<String> {
    vec![
        format!("{label}: columns={CONTRACT}"),
        format!("{label}: rows=1"),
        format!("{label}: row={row}"),
    ]
}

/// Both statements of the first transaction, committed, then READY.
fn before_lines() -> Vec<String> {
    let mut out = ok_lines("before select 1", "1|10.25|first");
    out.extend(ok_lines("before insert 3", "3|30.25|third"));
    out.push("before: committed".into());
    out.push("READY".into());
    out
}

/// Through pgheal: the second transaction reads and writes in the contract shape and commits.
fn healed_transcript() -> Vec<String> {
    let mut out = before_lines();
    out.extend(ok_lines("after select 1", "1|10.25|first"));
    out.extend(ok_lines("after insert 4", "4|40.75|fourth"));
    out.push("after: committed".into());
    out.push("DONE".into());
    out
}

/// Straight to PostgreSQL: the cached select fails, the transaction is rolled back.
fn direct_transcript() -> Vec<String> {
    let mut out = before_lines();
    out.push(format!("after select 1: {CACHED_PLAN_ERROR}"));
    out.push("after: rolled back".into());
    out.push("DONE".into());
    out
}

const ROWS_WITHOUT_4: &str = "1|10.25|first|\n2|20.5||\n3|30.25|third|";
const ROWS_WITH_4: &str = "1|10.25|first|\n2|20.5||\n3|30.25|third|\n4|40.75|fourth|";

/// Where the migration runs.
#[derive(Clone, Copy, Debug)]
enum Migration {
    /// Through pgheal, as `app` (the owner) with tokio-postgres: the epoch advances at commit.
    ThroughPgheal,
    /// Straight on the server; pgheal runs with `--schema-watch listen` and learns of it from
    /// the event trigger's notification.
    StraightWithWatch,
}

#[derive(Clone, Copy, Debug)]
enum Pooling {
    Session,
    /// `pool_mode = transaction`, `pool_size = 2`.
    Transaction,
}

/// Waits (bounded) until pgheal's schema epoch for appdb passes `than`; false if it never did.
async fn epoch_after(proxy: &ProxyHandle, than: u64) -> bool {
    let deadline = tokio::time::Instant::now() + EPOCH_TIMEOUT;
    loop {
        if proxy.schema_epoch(DB) > than {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until pgheal's schema watch connection has run its LISTEN: a notification
/// sent earlier would be lost.
async fn watch_listening(pg: &TempCluster) {
    let admin = admin_client(pg).await;
    let deadline = tokio::time::Instant::now() + EPOCH_TIMEOUT;
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE application_name = 'pgheal schema watch'
                   AND query LIKE 'LISTEN %' AND state = 'idle'",
                &[],
            )
            .await
            .expect("pg_stat_activity")
            .get(0);
        if n > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "pgheal's schema watch did not start listening within {EPOCH_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn counters(proxy: &ProxyHandle) -> String {
    format!(
        "{}; schema epoch {}",
        heal_counters(proxy),
        proxy.schema_epoch(DB)
    )
}

/// Straight to PostgreSQL, for contrast: the cached select fails inside the transaction, the
/// application sees the error (and its driver's exception), and nothing is written.
async fn straight_to_postgresql(driver: Driver<&'static str>) {
    if !driver.ready_or_skip().await {
        return;
    }
    let pg = start_cluster().await;
    reset_orders(&pg).await;
    let (run, _) = run_script(
        &driver,
        pg.port(),
        "PostgreSQL directly".into(),
        async || {
            admin_async(&pg, MIGRATION).await;
        },
    )
    .await;
    run.assert_ok(&direct_transcript(), "");
    let raised = format!("info: after raised {}", driver.direct);
    assert!(
        run.stdout.contains(&raised),
        "expected `{raised}` (what the application catches)\n{}",
        run.report()
    );
    assert_eq!(
        admin_async(&pg, ROWS_SQL).await,
        ROWS_WITHOUT_4,
        "the aborted transaction wrote nothing\n{}",
        run.report()
    );
}

/// Through pgheal: no error inside the transaction, the contract shape and values, the commit,
/// row 4 exactly once.
async fn through_pgheal(driver: Driver<&'static str>, migration: Migration, pooling: Pooling) {
    if !driver.ready_or_skip().await {
        return;
    }
    let pg = start_cluster().await;
    if let Migration::StraightWithWatch = migration {
        pgheal::watch::install(&pg.superuser_url(DB))
            .await
            .expect("install the schema watch's event triggers");
    }
    reset_orders(&pg).await;
    let proxy = start_proxy(&pg, |a| {
        if let Pooling::Transaction = pooling {
            a.pool_mode = Some("transaction".into());
            a.pool_size = Some(2);
        }
        if let Migration::StraightWithWatch = migration {
            a.schema_watch = Some("listen".into());
        }
    })
    .await;
    if let Migration::StraightWithWatch = migration {
        watch_listening(&pg).await;
    }

    let target = format!("pgheal ({pooling:?} pooling, migration {migration:?})");
    let proxy_ref = &proxy;
    let pg_ref = &pg;
    let (run, _) = run_script(&driver, proxy.addr.port(), target, async || {
        let before = proxy_ref.schema_epoch(DB);
        match migration {
            Migration::ThroughPgheal => {
                let migrator = connect(&proxy_url(proxy_ref)).await;
                migrator
                    .batch_execute(MIGRATION)
                    .await
                    .unwrap_or_else(|e| panic!("migration through pgheal: {e}"));
            }
            Migration::StraightWithWatch => {
                admin_async(pg_ref, MIGRATION).await;
            }
        }
        assert!(
            epoch_after(proxy_ref, before).await,
            "the schema epoch did not advance within {EPOCH_TIMEOUT:?} after the migration \
             ({migration:?}); {}",
            counters(proxy_ref)
        );
    })
    .await;

    let context = counters(&proxy);
    eprintln!(
        "{} through pgheal ({pooling:?}, {migration:?}): {context}",
        driver.name
    );
    run.assert_ok(&healed_transcript(), &context);
    assert_eq!(
        admin_async(&pg, ROWS_SQL).await,
        ROWS_WITH_4,
        "table after the run through pgheal (rows 3 and 4 once each, migration applied)\n{}\n{context}",
        run.report()
    );
    assert_eq!(
        admin_async(&pg, "SELECT count(*) FROM orders WHERE note = 'fourth'").await,
        "1",
        "the insert inside the transaction must land exactly once; {context}"
    );
    assert_eq!(
        heal_count(&proxy, Outcome::ForwardedInTransaction),
        0,
        "pgheal let the error reach a transaction; {context}"
    );
    assert_eq!(
        heal_count(&proxy, Outcome::Refused),
        0,
        "pgheal refused to keep a contract; {context}"
    );
    proxy.shutdown().await;
}

/// For each driver: the contrast straight to PostgreSQL, and through pgheal with the migration
/// through pgheal or straight to the server (schema watch), in session and transaction pooling.
macro_rules! driver_tests {
    ($module:ident, $driver:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn straight_to_postgresql_the_transaction_aborts() {
                straight_to_postgresql($driver).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ddl_through_pgheal_session_pooling() {
                through_pgheal($driver, Migration::ThroughPgheal, Pooling::Session).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ddl_straight_with_schema_watch_session_pooling() {
                through_pgheal($driver, Migration::StraightWithWatch, Pooling::Session).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ddl_through_pgheal_transaction_pooling() {
                through_pgheal($driver, Migration::ThroughPgheal, Pooling::Transaction).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn ddl_straight_with_schema_watch_transaction_pooling() {
                through_pgheal($driver, Migration::StraightWithWatch, Pooling::Transaction).await;
            }
        }
    };
}

driver_tests!(psycopg3_without_autocommit, psycopg());
driver_tests!(asyncpg_in_conn_transaction, asyncpg());
driver_tests!(pgjdbc_autocommit_off, pgjdbc());
driver_tests!(activerecord_transaction, activerecord());
