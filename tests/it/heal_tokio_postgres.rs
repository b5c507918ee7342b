//! Heal scenarios with tokio-postgres: cached statements, binary result formats,
//! Bind/Execute/Sync on the statement's columns (no Describe at execution).

use crate::common;

use common::*;
use pgheal::heal::Outcome;

fn setup_sql() -> &'static str {
    "CREATE TABLE orders(id int PRIMARY KEY, total bigint, note text);
     INSERT INTO orders VALUES (1, 950, 'first'), (2, 2000, 'second');
     ALTER TABLE orders OWNER TO app;"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_statement_survives_add_column_with_binary_rows() {
    let pg = start_pg();
    admin(&pg, setup_sql());
    let proxy = start_proxy(&pg, |_| {}).await;
    let direct = connect(&direct_url(&pg)).await;
    let healed = connect(&proxy_url(&proxy)).await;
    let sql = "SELECT * FROM orders WHERE id = $1";
    let ds = direct.prepare(sql).await.unwrap();
    let hs = healed.prepare(sql).await.unwrap();
    assert_eq!(healed.query(&hs, &[&1i32]).await.unwrap().len(), 1);

    admin(
        &pg,
        "ALTER TABLE orders ADD COLUMN discount_code varchar(50) DEFAULT 'NEW'",
    );

    let err = direct.query(&ds, &[&1i32]).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("0A000"));

    for (id, total, note) in [(1i32, 950i64, "first"), (2, 2000, "second")] {
        let rows = healed
            .query(&hs, &[&id])
            .await
            .expect("healed through pgheal");
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.len(), 3, "the contract has three columns");
        assert_eq!(r.get::<_, i32>("id"), id);
        assert_eq!(r.get::<_, i64>("total"), total);
        assert_eq!(r.get::<_, &str>("note"), note);
    }
    assert_eq!(heal_count(&proxy, Outcome::Projected), 1);
    // A statement prepared after the migration sees the new column.
    let fresh = healed.query_one(sql, &[&1i32]).await.unwrap();
    assert_eq!(fresh.get::<_, &str>("discount_code"), "NEW");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_returning_star_is_healed_and_written_once() {
    let pg = start_pg();
    admin(&pg, setup_sql());
    let proxy = start_proxy(&pg, |_| {}).await;
    let c = connect(&proxy_url(&proxy)).await;
    let ins = c
        .prepare("INSERT INTO orders(id, total, note) VALUES ($1, $2, 'w') RETURNING *")
        .await
        .unwrap();
    c.query(&ins, &[&10i32, &1i64]).await.unwrap();
    admin(
        &pg,
        "ALTER TABLE orders ADD COLUMN discount_code varchar(50)",
    );
    let rows = c
        .query(&ins, &[&11i32, &2i64])
        .await
        .expect("healed insert");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].len(), 3);
    assert_eq!(rows[0].get::<_, i64>("total"), 2);
    assert_eq!(admin(&pg, "SELECT count(*) FROM orders WHERE id = 11"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_contract_surfaces_the_original_error_with_its_fields() {
    let pg = start_pg();
    admin(&pg, setup_sql());
    let proxy = start_proxy(&pg, |_| {}).await;
    let c = connect(&proxy_url(&proxy)).await;
    let s = c
        .prepare("SELECT * FROM orders WHERE id = $1")
        .await
        .unwrap();
    c.query(&s, &[&1i32]).await.unwrap();
    admin(&pg, "ALTER TABLE orders DROP COLUMN note");
    let err = c.query(&s, &[&1i32]).await.unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "0A000");
    assert_eq!(db.message(), "cached plan must not change result type");
    assert!(db
        .routine()
        .unwrap_or("")
        .starts_with("RevalidateCachedQuery"));
    assert_eq!(heal_count(&proxy, Outcome::Refused), 1);
    // The session is still usable.
    assert_eq!(
        c.query_one("SELECT 7", &[]).await.unwrap().get::<_, i32>(0),
        7
    );
}
