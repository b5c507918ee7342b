//! psycopg 3 in pipeline mode (libpq pipeline mode) with errors, straight to PostgreSQL and
//! through pgheal in both pool modes: the driver must see exactly the same results, errors and
//! table contents. This is the driver that showed pgheal losing track of its responses after an
//! error in a Flush-terminated segment (tests/pipeline_errors.rs has the same at the protocol
//! level).
//!
//! The script (tests/drivers/python/psycopg_pipeline.py) reports; this file judges.

mod common;

use std::sync::Arc;

use common::drivers::{admin_async, run_script, start_cluster, Driver, Run};
use common::start_proxy;
use pgheal::cluster::TempCluster;

fn psycopg_pipeline() -> Driver<()> {
    Driver::python(
        "psycopg 3 pipeline mode",
        "psycopg",
        "tests/drivers/python/psycopg_pipeline.py",
        (),
    )
}

/// What the scenarios must show straight against PostgreSQL (so a transcript that is wrong on
/// both sides cannot pass).
const EXPECTED_FACTS: &[&str] = &[
    "aborted: first error UndefinedTable 42P01",
    "aborted: later statement: PipelineAborted",
    "aborted: c1=1",
    "aborted: c2=2",
    "commit: error at commit UndefinedTable 42P01",
    "commit: cur1=1",
    "commit: cur2=2",
    "prepare: error UndefinedColumn 42703",
    "prepare: after sync=42",
    "prepare: again 2=3",
    "segments: before=[0, 10, 20, 30, 40]",
    "segments: error UniqueViolation 23505",
    "segments: PipelineAborted",
    "segments: after=99",
    // Only the insert after a Sync survives: the others shared an implicit transaction (or
    // the transaction) with an error.
    "table: ids=[3]",
    "DONE",
];

async fn run_against(pg: &Arc<TempCluster>, port: u16, target: &str) -> Run {
    admin_async(pg, "TRUNCATE pipe").await;
    let (run, _) = run_script(&psycopg_pipeline(), port, target.into(), async || ()).await;
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_pipeline_mode_with_errors() {
    let driver = psycopg_pipeline();
    if !driver.ready_or_skip().await {
        return;
    }
    let pg = start_cluster().await;
    admin_async(
        &pg,
        "CREATE TABLE pipe(id int PRIMARY KEY); ALTER TABLE pipe OWNER TO app",
    )
    .await;
    let direct = run_against(&pg, pg.port(), "PostgreSQL").await;
    assert!(direct.succeeded(), "{}", direct.report());
    let expected = direct.transcript();
    for fact in EXPECTED_FACTS {
        assert!(
            expected.iter().any(|l| l == fact),
            "straight to PostgreSQL, expected {fact:?}\n{}",
            direct.report()
        );
    }
    for mode in ["session", "transaction"] {
        let proxy = start_proxy(&pg, |a| {
            a.pool_mode = Some(mode.into());
            a.pool_size = Some(1);
        })
        .await;
        let through = run_against(&pg, proxy.addr.port(), &format!("pgheal ({mode})")).await;
        through.assert_ok(&expected, &format!("{mode} pooling"));
    }
}
