//! One schema epoch for a fleet: two pgheal instances in front of the same database, both with
//! `schema_watch = listen` and no event trigger installed. DDL committed through instance A
//! (inside a transaction) advances instance B's epoch through PostgreSQL's notifications, so a
//! client of B, inside its own transaction with a statement prepared before the change, reads
//! its contract's shape without an error (B re-prepares before the Bind instead of meeting
//! `0A000`, which inside a transaction block could not be healed).

use crate::common;

use std::time::Duration;

use common::{eventually, first_order, proxy_url, start_pg_with_orders, start_proxy, DB};

fn texts(row: &tokio_postgres::Row) -> Vec<Option<String>> {
    (0..row.len())
        .map(|i| row.get::<_, Option<String>>(i))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_through_one_instance_advances_the_epoch_of_another() {
    let pg = start_pg_with_orders("");
    let listen = |a: &mut pgheal::config::cli::RunArgs| a.schema_watch = Some("listen".into());
    let a = start_proxy(&pg, listen).await;
    let b = start_proxy(&pg, listen).await;
    for (name, p) in [("A", &a), ("B", &b)] {
        assert!(
            eventually(Duration::from_secs(15), || async {
                let body = common::metrics::scrape(p).await;
                common::metrics::sample(
                    &body,
                    "pgheal_schema_watch_up",
                    &format!("database=\"{DB}\""),
                ) == Some(1.0)
            })
            .await,
            "instance {name}'s schema watch did not start listening within 15 s"
        );
    }

    // B's client prepares while the table has three columns, and uses it once.
    let client_b = common::connect(&proxy_url(&b)).await;
    let stmt = client_b
        .prepare("SELECT id::text, total::text, note FROM orders WHERE id = $1")
        .await
        .unwrap();
    let star = client_b
        .prepare("SELECT * FROM orders WHERE id = $1")
        .await
        .unwrap();
    client_b.query_one(&stmt, &[&1i32]).await.unwrap();
    client_b.query_one(&star, &[&1i32]).await.unwrap();
    let before = b.schema_epoch(DB);

    // A migration through instance A, in a transaction.
    let client_a = common::connect(&proxy_url(&a)).await;
    client_a
        .batch_execute("BEGIN; ALTER TABLE orders ADD COLUMN discount_code text; COMMIT;")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            b.schema_epoch(DB) > before
        })
        .await,
        "instance B's epoch did not advance within 10 s of the DDL committed through A"
    );

    // B's client, inside a transaction: the statement prepared before the change returns the
    // contract's three columns, no error.
    client_b.batch_execute("BEGIN").await.unwrap();
    let row = client_b
        .query_one(&star, &[&1i32])
        .await
        .expect("no cached-plan error inside the transaction");
    assert_eq!(row.len(), 3, "the rows keep the contract's shape");
    let row = client_b.query_one(&stmt, &[&1i32]).await.unwrap();
    assert_eq!(texts(&row), first_order());
    client_b.batch_execute("COMMIT").await.unwrap();

    drop((client_a, client_b));
    a.shutdown().await;
    b.shutdown().await;
}
