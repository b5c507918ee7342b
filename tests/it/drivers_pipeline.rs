//! psycopg 3 in pipeline mode (libpq pipeline mode) with errors, straight to PostgreSQL and
//! through pgheal in both pool modes: the driver must see exactly the same results, errors and
//! table contents. This is the driver that showed pgheal losing track of its responses after an
//! error in a Flush-terminated segment (tests/it/pipeline_errors.rs has the same at the protocol
//! level).
//!
//! The script (tests/drivers/python/psycopg_pipeline.py) reports; this file judges.

use crate::common;

use common::drivers::{admin_async, same_straight_and_through, start_cluster, Driver};

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
    same_straight_and_through(&driver, &pg, EXPECTED_FACTS, async || {
        admin_async(&pg, "TRUNCATE pipe").await;
    })
    .await;
}
