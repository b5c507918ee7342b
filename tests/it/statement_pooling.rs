//! `pool_mode = statement` against real PostgreSQL: the server connection goes back to the
//! pool after every statement, and a transaction block is refused as PgBouncer refuses it —
//! the client is disconnected, the block is rolled back, other clients are unharmed.

use crate::common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_share_one_connection_and_transaction_blocks_are_refused() {
    let pg = start_pg_with_orders("");
    let p = start_proxy(&pg, |a| {
        a.pool_mode = Some("statement".into());
        a.pool_size = Some(1);
    })
    .await;
    let a = connect(&proxy_url(&p)).await;
    let b = connect(&proxy_url(&p)).await;
    // One server connection serves both clients, statement by statement, prepared
    // statements included.
    let pid_a = backend_pid(&a).await;
    let pid_b = backend_pid(&b).await;
    assert_eq!(
        pid_a, pid_b,
        "both clients ran on the pool's one connection"
    );
    for c in [&a, &b] {
        let r = c
            .query_one("SELECT total::text FROM orders WHERE id = $1", &[&1i32])
            .await
            .expect("a prepared statement in statement pooling");
        assert_eq!(r.get::<_, String>(0), first_order()[1].clone().unwrap());
    }

    // A transaction block: refused, rolled back, the client disconnected.
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        a.batch_execute("BEGIN; UPDATE orders SET note = 'in a block' WHERE id = 1"),
    )
    .await
    .expect("an answer within 10 s")
    .expect_err("a transaction block is refused");
    let db = e.as_db_error().expect("an ErrorResponse");
    assert_eq!(
        (db.code().code(), db.message()),
        (
            "08P01",
            "transaction blocks not allowed in statement pooling mode"
        )
    );
    assert!(
        a.simple_query("SELECT 1").await.is_err(),
        "the client was disconnected"
    );
    let admin = admin_client(&pg).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            !backend_alive(&admin, pid_a).await
        })
        .await,
        "the server connection that saw the block is closed"
    );
    let note: Option<String> = admin
        .query_one("SELECT note FROM orders WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_ne!(
        note.as_deref(),
        Some("in a block"),
        "the block's update was rolled back"
    );
    // The other client goes on, on a new connection.
    let r = b
        .simple_query("SELECT 42")
        .await
        .expect("the other client is unharmed");
    assert!(!r.is_empty());
    assert_ne!(backend_pid(&b).await, pid_a);
    drop((a, b));
    p.shutdown().await;
}
