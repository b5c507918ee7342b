//! Transaction pooling maps a client's statement to a pool-wide server statement by its text.
//! When the client drops and re-creates a type (or a table) inside its own transaction, a server
//! statement prepared before holds the old type's OID among its inferred parameter types, and
//! every Bind of it fails with `XX000 cache lookup failed for type N` — where the client's fresh
//! Parse, straight to PostgreSQL, works. DDL seen in the transaction makes later prepares on that
//! server connection fresh, and a statement that fails this way is prepared again, not reused.
//! psycopg 3's own `test_change_type` scenarios are the model.

use crate::common;
use crate::txn_support;

use common::drivers::{admin_async, same_straight_and_through, start_cluster, Driver};
use common::wire::*;
use common::*;

const INSERT: &str = "INSERT INTO preptable (bar) VALUES ($1::prepenum[])";
const CREATE: &str = "CREATE TYPE prepenum AS ENUM ('foo', 'bar'); \
                      CREATE TABLE preptable(id int, bar prepenum[])";

/// The scenario at the protocol level, as psycopg sends it: returns every answer.
async fn scenario(w: &mut Wire) -> Vec<Vec<Msg>> {
    let mut t = Vec::new();
    t.push(w.query(&format!("BEGIN; {CREATE}")).await);
    let insert = |name: &str| {
        vec![
            parse(name, INSERT),
            bind("", name, &["{foo}"], &[]),
            execute(""),
        ]
    };
    t.push(txn_support::run_batch(w, &insert("s1")).await);
    t.push(
        w.query(&format!(
            "DROP TABLE preptable; DROP TYPE prepenum; {CREATE}"
        ))
        .await,
    );
    t.push(w.query("DEALLOCATE ALL").await);
    t.push(txn_support::run_batch(w, &insert("s2")).await);
    t.push(w.query("SELECT bar::text FROM preptable").await);
    t.push(w.query("ROLLBACK").await);
    // After the transaction, on the same server connection: the statement works again.
    t.push(w.query(CREATE).await);
    t.push(txn_support::run_batch(w, &insert("s3")).await);
    t.push(w.query("DROP TABLE preptable; DROP TYPE prepenum").await);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_recreated_in_the_transaction_gets_a_fresh_prepare() {
    let pg = start_pg();
    let proxy = txn_support::txn_proxy(&pg, 1).await;
    let expected = scenario(&mut txn_support::wire_direct(&pg).await).await;
    assert_eq!(
        errors(&expected.concat()),
        Vec::<String>::new(),
        "straight to PostgreSQL: {expected:?}"
    );
    assert_eq!(rows(&expected[5]), vec![vec![Some("{foo}".to_string())]]);
    let got = scenario(&mut txn_support::wire(&proxy).await).await;
    assert_eq!(got, expected, "through pgheal (transaction pooling)");
    // A client that prepared the statement before the type changed, on the same server
    // connection, prepares it afresh after the change committed.
    let mut a = txn_support::wire(&proxy).await;
    a.query(CREATE).await;
    let first = txn_support::run_batch(
        &mut a,
        &[
            parse("x", INSERT),
            bind("", "x", &["{bar}"], &[]),
            execute(""),
        ],
    )
    .await;
    assert_eq!(errors(&first), Vec::<String>::new(), "{first:?}");
    let mut b = txn_support::wire(&proxy).await;
    b.query(&format!(
        "DROP TABLE preptable; DROP TYPE prepenum; {CREATE}"
    ))
    .await;
    a.query("DEALLOCATE ALL").await;
    let again = txn_support::run_batch(
        &mut a,
        &[
            parse("y", INSERT),
            bind("", "y", &["{foo}"], &[]),
            execute(""),
        ],
    )
    .await;
    assert!(
        again.contains(&Msg::CommandComplete("INSERT 0 1".into())),
        "a fresh Parse after the type changed works: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_change_type_scenarios() {
    let driver = Driver::python(
        "psycopg 3 (change type)",
        "psycopg",
        "tests/drivers/python/psycopg_change_type.py",
        (),
    );
    if !driver.ready_or_skip().await {
        return;
    }
    let pg = start_cluster().await;
    admin_async(&pg, "ALTER DATABASE appdb OWNER TO app").await;
    let facts = [
        "change_type first: 1",
        "change_type second: 1",
        "change_type rows: [('{foo}',)]",
        "execute 2: 1",
        "executemany 2 rows: 2",
        "DONE",
    ];
    same_straight_and_through(&driver, &pg, &facts, async || ()).await;
}
