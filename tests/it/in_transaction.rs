//! Healing inside explicit transactions: the schema epoch makes pgheal re-prepare stale
//! statements before they can fail, so the transaction is never aborted.

use crate::common;

use common::wire::*;
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::heal::Outcome;
use pgheal::proxy::ProxyHandle;

const SQL: &str = "SELECT * FROM orders WHERE id = $1";

fn setup_pg() -> TempCluster {
    start_pg_with_orders("")
}

/// Wait (bounded) until pgheal's schema epoch for appdb passes `than`.
async fn epoch_after(proxy: &ProxyHandle, than: u64) -> u64 {
    for _ in 0..200 {
        let e = proxy.schema_epoch(DB);
        if e > than {
            return e;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the schema epoch did not advance");
}

/// A client inside a transaction reads and writes with statements prepared before a migration.
async fn transaction_survives(proxy: &ProxyHandle, pg: &TempCluster, migrate: impl AsyncFnOnce()) {
    let mut a = Wire::connect(proxy.addr.port(), USER, PASSWORD, DB).await;
    let ins = "INSERT INTO orders(id, total, note) VALUES ($1, 1, 'tx') RETURNING *";
    a.send(&[parse("s1", SQL), parse("ins", ins), sync()]).await;
    a.until_ready().await;
    a.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
        .await;
    assert_eq!(rows(&a.until_ready().await), vec![first_order()]);
    assert_eq!(a.query("BEGIN").await.last(), Some(&Msg::Ready('T')));

    migrate().await;

    // Per-column result formats too: they must be re-mapped to the new shape before the Bind.
    a.send(&[bind("", "s1", &["1"], &[0, 0, 0]), execute(""), sync()])
        .await;
    let got = a.until_ready().await;
    assert_eq!(
        got,
        vec![
            Msg::BindComplete,
            Msg::DataRow(first_order()),
            Msg::CommandComplete("SELECT 1".into()),
            Msg::Ready('T')
        ]
    );
    a.send(&[
        bind("", "ins", &["50"], &[]),
        describe_portal(""),
        execute(""),
        sync(),
    ])
    .await;
    let got = a.until_ready().await;
    assert!(errors(&got).is_empty(), "{got:?}");
    assert_eq!(
        got[1],
        Msg::RowDescription(vec!["id".into(), "total".into(), "note".into()])
    );
    assert_eq!(
        rows(&got),
        vec![vec![Some("50".into()), Some("1".into()), Some("tx".into())]]
    );
    assert_eq!(a.query("COMMIT").await.last(), Some(&Msg::Ready('I')));
    assert_eq!(admin(pg, "SELECT count(*) FROM orders WHERE id = 50"), "1");
    assert_eq!(heal_count(proxy, Outcome::ForwardedInTransaction), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_through_pgheal_is_healed_inside_a_transaction() {
    for mode in ["session", "transaction"] {
        let pg = setup_pg();
        let proxy = start_proxy(&pg, |a| {
            a.pool_mode = Some(mode.into());
            a.pool_size = Some(3);
        })
        .await;
        let url = proxy_url(&proxy);
        let before = proxy.schema_epoch(DB);
        transaction_survives(&proxy, &pg, async || {
            let migrator = connect(&url).await;
            migrator
                .batch_execute("ALTER TABLE orders ADD COLUMN discount_code varchar(50)")
                .await
                .unwrap();
            assert!(
                proxy.schema_epoch(DB) > before,
                "{mode}: DDL through pgheal advances the epoch"
            );
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_straight_to_the_server_is_healed_with_the_schema_watch() {
    let pg = setup_pg();
    pgheal::watch::install(&pg.superuser_url(DB))
        .await
        .expect("install the schema watch");
    // Installing twice is fine.
    pgheal::watch::install(&pg.superuser_url(DB))
        .await
        .expect("install is idempotent");
    let proxy = start_proxy(&pg, |a| a.schema_watch = Some("listen".into())).await;
    // Wait (bounded) until the watch's LISTEN is in place.
    let mut listening_now = false;
    for _ in 0..200 {
        let n = admin(
            &pg,
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN pgheal_schema'",
        );
        if n == "1" {
            listening_now = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(listening_now, "the schema watch connects and listens");
    let listening = proxy.schema_epoch(DB);
    let pg_ref = &pg;
    let proxy_ref = &proxy;
    transaction_survives(&proxy, &pg, async || {
        admin(
            pg_ref,
            "ALTER TABLE orders ADD COLUMN discount_code varchar(50)",
        );
        epoch_after(proxy_ref, listening).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_table_ddl_does_not_advance_the_epoch() {
    let pg = setup_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let c = connect(&proxy_url(&proxy)).await;
    let before = proxy.schema_epoch(DB);
    c.batch_execute("CREATE TEMP TABLE scratch(x int)")
        .await
        .unwrap();
    assert_eq!(proxy.schema_epoch(DB), before);
    c.batch_execute("CREATE TABLE kept(x int)").await.unwrap();
    assert!(proxy.schema_epoch(DB) > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_plan_error_elsewhere_protects_transactions() {
    let pg = setup_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let mut a = Wire::connect(proxy.addr.port(), USER, PASSWORD, DB).await;
    let mut b = Wire::connect(proxy.addr.port(), USER, PASSWORD, DB).await;
    for w in [&mut a, &mut b] {
        w.send(&[parse("s1", SQL), sync()]).await;
        w.until_ready().await;
    }
    b.query("BEGIN").await;
    admin(
        &pg,
        "ALTER TABLE orders ADD COLUMN discount_code varchar(50)",
    );
    // A, outside a transaction, meets the error first: healed, and the epoch advances.
    a.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
        .await;
    assert_eq!(rows(&a.until_ready().await), vec![first_order()]);
    // B, inside its transaction, is re-prepared before its Bind: no error, no abort.
    b.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
        .await;
    let got = b.until_ready().await;
    assert_eq!(rows(&got), vec![first_order()]);
    assert_eq!(got.last(), Some(&Msg::Ready('T')));
    assert_eq!(heal_count(&proxy, Outcome::ForwardedInTransaction), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_contract_inside_a_transaction_fails_like_postgresql() {
    let pg = setup_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let mut a = Wire::connect(proxy.addr.port(), USER, PASSWORD, DB).await;
    let migrator = connect(&proxy_url(&proxy)).await;
    a.send(&[parse("s1", SQL), sync()]).await;
    a.until_ready().await;
    a.query("BEGIN").await;
    migrator
        .batch_execute("ALTER TABLE orders DROP COLUMN note")
        .await
        .unwrap();
    a.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
        .await;
    let got = a.until_ready().await;
    assert_eq!(
        got,
        vec![
            cached_plan_error(),
            Msg::Ready('E')
        ],
        "no rows of a shape the client does not hold; the transaction is aborted as PostgreSQL would"
    );
    a.query("ROLLBACK").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_transaction_with_cached_statements() {
    let pg = setup_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let mut c = connect(&proxy_url(&proxy)).await;
    let migrator = connect(&proxy_url(&proxy)).await;
    let sel = c.prepare(SQL).await.unwrap();
    let ins = c
        .prepare("INSERT INTO orders(id, total, note) VALUES ($1, 2, 'tp') RETURNING *")
        .await
        .unwrap();
    c.query(&sel, &[&1i32]).await.unwrap();
    let tx = c.transaction().await.unwrap();
    // Not touching `orders` yet: a lock on it would (rightly) make the migration wait.
    tx.query_one("SELECT 1", &[]).await.unwrap();
    migrator
        .batch_execute("ALTER TABLE orders ADD COLUMN discount_code varchar(50)")
        .await
        .unwrap();
    let r = tx
        .query_one(&sel, &[&2i32])
        .await
        .expect("no error inside the transaction");
    assert_eq!(r.len(), 3);
    assert_eq!(r.get::<_, &str>("note"), "second");
    let r = tx
        .query_one(&ins, &[&60i32])
        .await
        .expect("insert inside the transaction");
    assert_eq!(r.len(), 3);
    tx.commit().await.unwrap();
    assert_eq!(admin(&pg, "SELECT count(*) FROM orders WHERE id = 60"), "1");
}
