//! pgheal driven by real drivers of other ecosystems: psycopg 3 and asyncpg (Python),
//! node-postgres, pgjdbc. Each driver runs the same scenario twice, once straight against
//! PostgreSQL and once through pgheal:
//!
//! 1. cache `SELECT * FROM orders WHERE id = $1` and `INSERT ... RETURNING *` the way the driver
//!    does it (psycopg `prepare_threshold=0` in autocommit, asyncpg `conn.prepare()`,
//!    node-postgres named queries, pgjdbc `prepareThreshold=1` PreparedStatements) and run each
//!    once;
//! 2. the script prints `READY` and waits for `go` on stdin while this test runs
//!    `ALTER TABLE orders ADD COLUMN discount_code varchar(50)` straight on the server;
//! 3. the script runs the cached statements again (select id 1 and 2, insert id 4).
//!
//! Straight to PostgreSQL the driver gets `0A000 cached plan must not change result type` (or,
//! pgjdbc with autocommit on, retries by itself and silently returns the new 4-column shape).
//! Through pgheal it gets the old 3 columns and the right values, and the inserted row is in the
//! table exactly once.
//!
//! The scripts (tests/drivers/) only report; this file judges. Each prints a transcript, one
//! line per fact:
//!
//! ```text
//! driver: <name and version>                     (informational, not compared)
//! <label>: columns=<name>:<type>,...             (the description the driver decodes with)
//! <label>: rows=<n>
//! <label>: row=<v>|<v>|...                       (NULL for null; numerics as text)
//! <label>: error=<SQLSTATE> <message> routine=<R field>
//! READY                                          (then waits for "go" on stdin)
//! DONE
//! ```
//!
//! A missing driver skips its test with `skipping: ...` on stderr, except when the `CI`
//! environment variable is set: there a missing driver fails (`.ci/setup` installs them all).

use crate::common;

use std::sync::Arc;

use common::drivers::{
    admin_async, heal_counters, run_script, start_cluster, Driver, Run, CACHED_PLAN_ERROR,
    CONTRACT, MIGRATION, ROWS_SQL,
};
use common::wire::{Msg, Wire};
use common::{heal_count, start_proxy};
use pgheal::cluster::TempCluster;
use pgheal::heal::Outcome;

/// The shape after the migration.
const NEW_SHAPE: &str = "id:int4,total:numeric,note:text,discount_code:varchar";

/// What the cached statements give after the migration, straight against PostgreSQL.
#[derive(Clone, Copy, Debug)]
enum DirectBehaviour {
    /// Every later execution of a cached statement fails with the cached-plan error.
    Errors,
    /// The first one fails (inside a transaction the driver cannot retry); the driver then
    /// drops its prepared statements and re-prepares: the next ones return the new shape.
    ErrorThenNewShape,
    /// The driver re-prepares and retries by itself: no error, but rows in the new shape.
    NewShape,
}

/// One driver scenario: how to run its script and what it does straight against PostgreSQL.
fn psycopg() -> Driver<DirectBehaviour> {
    Driver::python(
        "psycopg 3",
        "psycopg",
        "tests/drivers/python/psycopg_heal.py",
        DirectBehaviour::Errors,
    )
}

fn asyncpg() -> Driver<DirectBehaviour> {
    Driver::python(
        "asyncpg",
        "asyncpg",
        "tests/drivers/python/asyncpg_heal.py",
        DirectBehaviour::Errors,
    )
}

fn node_postgres() -> Driver<DirectBehaviour> {
    Driver::node(
        "node-postgres",
        "tests/drivers/node/pg_heal.js",
        DirectBehaviour::Errors,
    )
}

fn pgjdbc(autocommit: bool) -> Driver<DirectBehaviour> {
    let (name, direct) = if autocommit {
        ("pgjdbc (autocommit on)", DirectBehaviour::NewShape)
    } else {
        (
            "pgjdbc (autocommit off)",
            DirectBehaviour::ErrorThenNewShape,
        )
    };
    Driver {
        env: vec![(
            "PGHEAL_JDBC_AUTOCOMMIT",
            if autocommit { "on" } else { "off" },
        )],
        install_hint: ".ci/setup installs it; Debian package libpostgresql-jdbc-java",
        ..Driver::pgjdbc(name, "tests/drivers/java/PgjdbcHeal.java", direct)
    }
}

/// Where the statements run after the migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Steer {
    /// Wherever the pooler puts them.
    Anywhere,
    /// Transaction pooling on a pool of 2: on the server connection the script did not use
    /// last, where its statements are prepared again after the migration.
    OtherServerConnection,
}

/// Runs the driver's script against 127.0.0.1:`port` (common::drivers::run_script); when the
/// script says `READY`, runs the migration straight on the server, first (`steer`) holding the
/// server connection the script used last until the script ends.
async fn run(
    pg: &Arc<TempCluster>,
    driver: &Driver<DirectBehaviour>,
    port: u16,
    target: &str,
    steer: Steer,
) -> Run {
    let (run, blockers) = run_script(driver, port, target.into(), async || {
        // Clients of pgheal that hold a server connection in an open transaction until the
        // script ends.
        let blockers = if steer == Steer::OtherServerConnection {
            hold_last_used_server_connection(pg, port).await
        } else {
            Vec::new()
        };
        admin_async(pg, MIGRATION).await;
        blockers
    })
    .await;
    // The script has ended: let go of the server connection held for it.
    for mut b in blockers.unwrap_or_default() {
        let msgs = b.query("ROLLBACK").await;
        assert_eq!(msgs.last(), Some(&Msg::Ready('I')), "{msgs:?}");
    }
    run
}

/// The backend pid of a `SELECT pg_backend_pid()` run in a new transaction block on `w`.
async fn begin_and_pid(w: &mut Wire) -> i32 {
    let msgs = w.query("BEGIN; SELECT pg_backend_pid()").await;
    assert_eq!(msgs.last(), Some(&Msg::Ready('T')), "{msgs:?}");
    common::wire::rows(&msgs)[0][0]
        .as_deref()
        .expect("pid")
        .parse()
        .expect("pid")
}

/// With the script idle at READY and pgheal in transaction pooling on a pool of 2: holds the
/// server connection the script used last in an open transaction, so the script's next
/// transactions run on the other one. Returns the client holding it.
async fn hold_last_used_server_connection(pg: &Arc<TempCluster>, port: u16) -> Vec<Wire> {
    let last_used: i32 = admin_async(
        pg,
        "SELECT pid FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend' \
         ORDER BY state_change DESC NULLS LAST LIMIT 1",
    )
    .await
    .parse()
    .expect("a backend of app in pg_stat_activity");
    let mut first = Wire::connect(port, common::USER, common::PASSWORD, common::DB).await;
    if begin_and_pid(&mut first).await == last_used {
        return vec![first];
    }
    // `first` holds the other connection: the only one left for `second` is the script's.
    let mut second = Wire::connect(port, common::USER, common::PASSWORD, common::DB).await;
    assert_eq!(
        begin_and_pid(&mut second).await,
        last_used,
        "the pool of 2 gave a third server connection"
    );
    let msgs = first.query("COMMIT").await;
    assert_eq!(msgs.last(), Some(&Msg::Ready('I')), "{msgs:?}");
    vec![second]
}

/// `orders` as it is before each run: two rows, owned by app, no discount_code yet.
async fn reset_orders(pg: &Arc<TempCluster>) {
    common::drivers::reset_orders(pg, "(1, 10.50, 'first'), (2, 20.00, NULL)").await;
}

#[derive(Clone, Copy)]
enum Shape {
    Contract,
    New,
    Error,
}

/// The lines one statement execution prints: its description and one row, or the error.
fn lines(label: &str, shape: Shape, row: &str) -> Vec<String> {
    match shape {
        Shape::Contract => vec![
            format!("{label}: columns={CONTRACT}"),
            format!("{label}: rows=1"),
            format!("{label}: row={row}"),
        ],
        Shape::New => vec![
            format!("{label}: columns={NEW_SHAPE}"),
            format!("{label}: rows=1"),
            format!("{label}: row={row}|NULL"),
        ],
        Shape::Error => vec![format!("{label}: {CACHED_PLAN_ERROR}")],
    }
}

/// The whole transcript when the statements after the migration give `after[i]`
/// (select 1, select 2, insert 4).
fn expected(after: [Shape; 3]) -> Vec<String> {
    let mut out = Vec::new();
    out.extend(lines("before select 1", Shape::Contract, "1|10.50|first"));
    out.extend(lines("before insert 3", Shape::Contract, "3|30.25|third"));
    out.push("READY".into());
    out.extend(lines("after select 1", after[0], "1|10.50|first"));
    out.extend(lines("after select 2", after[1], "2|20.00|NULL"));
    out.extend(lines("after insert 4", after[2], "4|40.75|fourth"));
    out.push("DONE".into());
    out
}

const ROWS_BEFORE_INSERT_4: &str = "1|10.50|first|\n2|20.00||\n3|30.25|third|";
const ROWS_WITH_INSERT_4: &str = "1|10.50|first|\n2|20.00||\n3|30.25|third|\n4|40.75|fourth|";

/// How pgheal pools the scripts' connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pooling {
    /// Session pooling (the default), and the run straight against PostgreSQL first.
    Session,
    /// Transaction pooling on a pool of 2: statements run on whichever server connection is
    /// free, under pool-wide names. The run straight against PostgreSQL is the session test's.
    Transaction,
    /// Transaction pooling on a pool of 2, and after the migration the statements run on the
    /// server connection the script did not use last: prepared there again, in the new shape,
    /// and projected onto the contract without any error to heal.
    TransactionOtherConnection,
}

async fn scenario(driver: Driver<DirectBehaviour>) {
    scenario_in(driver, Pooling::Session).await
}

async fn scenario_in(driver: Driver<DirectBehaviour>, pooling: Pooling) {
    if !driver.ready_or_skip().await {
        return;
    }

    let pg = start_cluster().await;

    if pooling == Pooling::Session {
        // Straight to PostgreSQL: the migration breaks the cached statements.
        reset_orders(&pg).await;
        let direct = run(
            &pg,
            &driver,
            pg.port(),
            "PostgreSQL directly",
            Steer::Anywhere,
        )
        .await;
        let (after, rows) = match driver.direct {
            DirectBehaviour::Errors => ([Shape::Error; 3], ROWS_BEFORE_INSERT_4),
            DirectBehaviour::ErrorThenNewShape => {
                ([Shape::Error, Shape::New, Shape::New], ROWS_WITH_INSERT_4)
            }
            DirectBehaviour::NewShape => ([Shape::New; 3], ROWS_WITH_INSERT_4),
        };
        direct.assert_ok(&expected(after), "");
        let table = admin_async(&pg, ROWS_SQL).await;
        assert_eq!(
            table,
            rows,
            "table after the direct run\n{}",
            direct.report()
        );
    }

    // Through pgheal: no error, the old shape, the right values, the insert exactly once.
    reset_orders(&pg).await;
    let proxy = start_proxy(&pg, |a| {
        if pooling != Pooling::Session {
            a.pool_mode = Some("transaction".into());
            a.pool_size = Some(2);
        }
    })
    .await;
    let target = match pooling {
        Pooling::Session => "pgheal",
        Pooling::Transaction => "pgheal (transaction pooling)",
        Pooling::TransactionOtherConnection => {
            "pgheal (transaction pooling, other server connection after the migration)"
        }
    };
    let steer = match pooling {
        Pooling::Session | Pooling::Transaction => Steer::Anywhere,
        Pooling::TransactionOtherConnection => Steer::OtherServerConnection,
    };
    let healed = run(&pg, &driver, proxy.addr.port(), target, steer).await;
    let counters = heal_counters(&proxy);
    if !healed.status.is_some_and(|s| s.success())
        || healed.transcript() != expected([Shape::Contract; 3])
    {
        eprintln!("{counters}");
    }
    healed.assert_ok(&expected([Shape::Contract; 3]), "");
    let table = admin_async(&pg, ROWS_SQL).await;
    assert_eq!(
        table,
        ROWS_WITH_INSERT_4,
        "table after the run through pgheal (row 4 exactly once, migration applied)\n{}",
        healed.report()
    );
    let fourth = admin_async(&pg, "SELECT count(*) FROM orders WHERE note = 'fourth'").await;
    assert_eq!(
        fourth, "1",
        "the insert through pgheal must land exactly once"
    );

    let fixed = heal_count(&proxy, Outcome::Projected) + heal_count(&proxy, Outcome::Healed);
    // On another server connection the statements are prepared after the migration: no
    // cached-plan error, nothing healed (and pgheal counts no projection there either; see
    // txn_heal::projection_after_a_lazy_prepare_is_counted).
    if pooling != Pooling::TransactionOtherConnection {
        assert!(fixed >= 1, "pgheal counted no heal; {counters}");
    }
    assert_eq!(
        heal_count(&proxy, Outcome::Refused),
        0,
        "pgheal refused a heal; {counters}"
    );
    assert_eq!(
        heal_count(&proxy, Outcome::ForwardedInTransaction),
        0,
        "pgheal forwarded the error; {counters}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_prepared_statement_heals() {
    scenario(psycopg()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_explicit_prepared_statement_heals() {
    scenario(asyncpg()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_named_query_heals() {
    scenario(node_postgres()).await;
}

/// Autocommit on: straight to PostgreSQL pgjdbc re-prepares and retries by itself, and the
/// application silently gets a fourth column; through pgheal it keeps its three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_autocommit_prepared_statement_keeps_contract() {
    scenario(pgjdbc(true)).await;
}

/// Autocommit off: pgjdbc sends BEGIN in the same batch as the statement; straight to
/// PostgreSQL the error aborts the transaction and reaches the application. Through pgheal the
/// batch began outside a transaction block, so it is rolled back and replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_transaction_prepared_statement_heals() {
    scenario(pgjdbc(false)).await;
}

// ---- The same scenarios through pgheal in transaction pooling (pool of 2). ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_prepared_statement_heals_in_transaction_pooling() {
    scenario_in(psycopg(), Pooling::Transaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_explicit_prepared_statement_heals_in_transaction_pooling() {
    scenario_in(asyncpg(), Pooling::Transaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_named_query_heals_in_transaction_pooling() {
    scenario_in(node_postgres(), Pooling::Transaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_autocommit_prepared_statement_keeps_contract_in_transaction_pooling() {
    scenario_in(pgjdbc(true), Pooling::Transaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_transaction_prepared_statement_heals_in_transaction_pooling() {
    scenario_in(pgjdbc(false), Pooling::Transaction).await;
}

// ---- Transaction pooling, the statements moved to the other server connection. ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_keeps_contract_on_another_server_connection() {
    scenario_in(psycopg(), Pooling::TransactionOtherConnection).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_keeps_contract_on_another_server_connection() {
    scenario_in(asyncpg(), Pooling::TransactionOtherConnection).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_keeps_contract_on_another_server_connection() {
    scenario_in(node_postgres(), Pooling::TransactionOtherConnection).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_autocommit_keeps_contract_on_another_server_connection() {
    scenario_in(pgjdbc(true), Pooling::TransactionOtherConnection).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc_transaction_keeps_contract_on_another_server_connection() {
    scenario_in(pgjdbc(false), Pooling::TransactionOtherConnection).await;
}
