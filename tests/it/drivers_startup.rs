//! node-postgres ending a client while it is still connecting writes Terminate before its
//! startup packet. PostgreSQL closes such a connection without an answer, and node-postgres
//! ends quietly; a FATAL from the pooler instead reaches node-postgres as an error event, which
//! crashes applications that do not listen for it. The script runs straight to PostgreSQL and
//! through pgheal; the transcripts must be the same (tests/it/session_protocol.rs checks the same
//! at the byte level).

use crate::common;

use common::drivers::{same_straight_and_through, start_cluster, Driver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_ending_while_connecting_sees_no_error() {
    let driver = Driver::node(
        "node-postgres (end while connecting)",
        "tests/drivers/node/end_before_startup.js",
        (),
    );
    if !driver.ready_or_skip().await {
        return;
    }
    let pg = start_cluster().await;
    // No "error event" line: node-postgres saw no error straight to PostgreSQL, and the
    // transcripts through pgheal must be the same.
    let facts = [
        "run 0: end resolved",
        "run 1: end resolved",
        "run 2: end resolved",
        "after: answer=42",
        "DONE",
    ];
    same_straight_and_through(&driver, &pg, &facts, async || ()).await;
}
