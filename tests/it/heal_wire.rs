//! Heal scenarios driven message by message with a raw protocol client, each run straight
//! against PostgreSQL (showing the error) and through pgheal (healed).

use crate::common;

use common::wire::*;
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::heal::Outcome;
use pgheal::proxy::ProxyHandle;

const STALE_SQL: &str = "SELECT * FROM orders WHERE id = $1";

async fn setup() -> (TempCluster, ProxyHandle) {
    let pg = start_pg();
    admin(
        &pg,
        "CREATE TABLE orders(id int PRIMARY KEY, total numeric, note text);
         INSERT INTO orders VALUES (1, 9.50, 'first'), (2, 20, 'second');
         CREATE TABLE audit(id serial PRIMARY KEY, msg text);
         ALTER TABLE orders OWNER TO app; ALTER TABLE audit OWNER TO app;",
    );
    let proxy = start_proxy(&pg, |_| {}).await;
    (pg, proxy)
}

async fn both(pg: &TempCluster, proxy: &ProxyHandle) -> (Wire, Wire) {
    let direct = Wire::connect(pg.port(), USER, PASSWORD, DB).await;
    let healed = Wire::connect(proxy.addr.port(), USER, PASSWORD, DB).await;
    (direct, healed)
}

/// Prepare `name` as `sql` and run it once with parameter "1".
async fn prepare_and_run(w: &mut Wire, name: &str, sql: &str) -> Vec<Msg> {
    w.send(&[parse(name, sql), sync()]).await;
    assert_eq!(
        w.until_ready().await,
        vec![Msg::ParseComplete, Msg::Ready('I')]
    );
    w.send(&[bind("", name, &["1"], &[]), execute(""), sync()])
        .await;
    w.until_ready().await
}

fn cached_plan_error(msgs: &[Msg]) -> bool {
    msgs.iter().any(|m| {
        matches!(m, Msg::Error { code, routine, .. } if code == "0A000" && routine.starts_with("RevalidateCachedQuery"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_column_is_healed_and_projected() {
    let (pg, proxy) = setup().await;
    let (mut d, mut h) = both(&pg, &proxy).await;
    let before = prepare_and_run(&mut h, "s1", STALE_SQL).await;
    prepare_and_run(&mut d, "s1", STALE_SQL).await;
    admin(
        &pg,
        "ALTER TABLE orders ADD COLUMN discount_code varchar(50)",
    );
    admin(&pg, "UPDATE orders SET discount_code = 'X'");

    d.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
        .await;
    let direct = d.until_ready().await;
    assert!(cached_plan_error(&direct), "direct: {direct:?}");

    h.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
        .await;
    let healed = h.until_ready().await;
    assert_eq!(
        healed, before,
        "the client receives what it would have before the migration"
    );
    assert_eq!(
        rows(&healed),
        vec![vec![
            Some("1".into()),
            Some("9.50".into()),
            Some("first".into())
        ]]
    );
    // And again: the statement stays healed.
    h.send(&[bind("", "s1", &["2"], &[]), execute(""), sync()])
        .await;
    assert_eq!(
        rows(&h.until_ready().await),
        vec![vec![
            Some("2".into()),
            Some("20".into()),
            Some("second".into())
        ]]
    );
    assert_eq!(heal_count(&proxy, Outcome::Projected), 1);
    assert_eq!(heal_count(&proxy, Outcome::Refused), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_column_result_formats_are_remapped() {
    let (pg, proxy) = setup().await;
    let mut h = Wire::connect(proxy.addr.port(), USER, PASSWORD, DB).await;
    h.send(&[parse("s1", STALE_SQL), sync()]).await;
    h.until_ready().await;
    // Three per-column codes for the three contract columns (all text).
    h.send(&[bind("", "s1", &["1"], &[0, 0, 0]), execute(""), sync()])
        .await;
    let before = h.until_ready().await;
    admin(&pg, "ALTER TABLE orders ADD COLUMN a int, ADD COLUMN b int");
    h.send(&[bind("", "s1", &["1"], &[0, 0, 0]), execute(""), sync()])
        .await;
    let after = h.until_ready().await;
    assert!(errors(&after).is_empty(), "{after:?}");
    assert_eq!(after, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_column_keeps_the_contract_names() {
    let (pg, proxy) = setup().await;
    let (mut d, mut h) = both(&pg, &proxy).await;
    prepare_and_run(&mut d, "s1", STALE_SQL).await;
    h.send(&[parse("s1", STALE_SQL), sync()]).await;
    h.until_ready().await;
    admin(&pg, "ALTER TABLE orders RENAME COLUMN note TO remark");
    d.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
        .await;
    assert!(cached_plan_error(&d.until_ready().await));
    // libpq style: Bind / Describe P / Execute / Sync.
    h.send(&[
        bind("", "s1", &["1"], &[]),
        describe_portal(""),
        execute(""),
        sync(),
    ])
    .await;
    let got = h.until_ready().await;
    assert_eq!(
        got,
        vec![
            Msg::BindComplete,
            Msg::RowDescription(vec!["id".into(), "total".into(), "note".into()]),
            Msg::DataRow(vec![
                Some("1".into()),
                Some("9.50".into()),
                Some("first".into())
            ]),
            Msg::CommandComplete("SELECT 1".into()),
            Msg::Ready('I'),
        ]
    );
    // Describe 'S' answers with the contract too.
    h.send(&[describe_stmt("s1"), sync()]).await;
    let got = h.until_ready().await;
    assert_eq!(
        got[1],
        Msg::RowDescription(vec!["id".into(), "total".into(), "note".into()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_column_is_refused_unless_the_client_describes() {
    let (pg, proxy) = setup().await;
    let (mut d, mut h) = both(&pg, &proxy).await;
    prepare_and_run(&mut d, "s1", STALE_SQL).await;
    prepare_and_run(&mut h, "s1", STALE_SQL).await;
    h.send(&[parse("s2", STALE_SQL), sync()]).await;
    h.until_ready().await;
    admin(&pg, "ALTER TABLE orders DROP COLUMN note");

    d.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
        .await;
    let direct = d.until_ready().await;
    assert!(cached_plan_error(&direct));
    // No Describe in the batch: the client holds the old shape, so PostgreSQL's own error
    // reaches it, fields intact.
    h.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
        .await;
    let refused = h.until_ready().await;
    assert_eq!(refused, direct, "the original error, unchanged");
    assert_eq!(heal_count(&proxy, Outcome::Refused), 1);
    // The statement keeps failing the same way, as it would on PostgreSQL: no rows of a shape
    // the client does not know.
    h.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
        .await;
    let again = h.until_ready().await;
    assert!(cached_plan_error(&again), "{again:?}");

    // With a Describe in the batch the client reads the new shape: healed.
    h.send(&[
        bind("", "s2", &["1"], &[]),
        describe_portal(""),
        execute(""),
        sync(),
    ])
    .await;
    let got = h.until_ready().await;
    assert_eq!(
        got,
        vec![
            Msg::BindComplete,
            Msg::RowDescription(vec!["id".into(), "total".into()]),
            Msg::DataRow(vec![Some("1".into()), Some("9.50".into())]),
            Msg::CommandComplete("SELECT 1".into()),
            Msg::Ready('I'),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retyped_column_is_refused() {
    let (pg, proxy) = setup().await;
    let mut h = Wire::connect(proxy.addr.port(), USER, PASSWORD, DB).await;
    prepare_and_run(&mut h, "s1", STALE_SQL).await;
    admin(&pg, "ALTER TABLE orders ALTER COLUMN total TYPE text");
    h.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
        .await;
    let got = h.until_ready().await;
    assert!(cached_plan_error(&got), "{got:?}");
    assert!(rows(&got).is_empty());
    assert_eq!(heal_count(&proxy, Outcome::Refused), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_view_with_appended_columns_is_projected() {
    let (pg, proxy) = setup().await;
    admin(&pg, "CREATE VIEW order_view AS SELECT id, total FROM orders; ALTER VIEW order_view OWNER TO app");
    let (mut d, mut h) = both(&pg, &proxy).await;
    let sql = "SELECT * FROM order_view WHERE id = $1";
    prepare_and_run(&mut d, "v", sql).await;
    let before = prepare_and_run(&mut h, "v", sql).await;
    admin(
        &pg,
        "CREATE OR REPLACE VIEW order_view AS SELECT id, total, note FROM orders",
    );
    d.send(&[bind("", "v", &["1"], &[]), execute(""), sync()])
        .await;
    assert!(cached_plan_error(&d.until_ready().await));
    h.send(&[bind("", "v", &["1"], &[]), execute(""), sync()])
        .await;
    assert_eq!(h.until_ready().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_returning_star_writes_exactly_once() {
    let (pg, proxy) = setup().await;
    let mut h = Wire::connect(proxy.addr.port(), USER, PASSWORD, DB).await;
    let sql = "INSERT INTO orders(id, total, note) VALUES ($1, 5, 'new') RETURNING *";
    h.send(&[parse("ins", sql), sync()]).await;
    h.until_ready().await;
    h.send(&[bind("", "ins", &["10"], &[]), execute(""), sync()])
        .await;
    assert_eq!(rows(&h.until_ready().await).len(), 1);
    admin(
        &pg,
        "ALTER TABLE orders ADD COLUMN discount_code varchar(50)",
    );
    h.send(&[bind("", "ins", &["11"], &[]), execute(""), sync()])
        .await;
    let got = h.until_ready().await;
    assert_eq!(
        got,
        vec![
            Msg::BindComplete,
            Msg::DataRow(vec![
                Some("11".into()),
                Some("5".into()),
                Some("new".into())
            ]),
            Msg::CommandComplete("INSERT 0 1".into()),
            Msg::Ready('I'),
        ]
    );
    assert_eq!(admin(&pg, "SELECT count(*) FROM orders WHERE id = 11"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_before_the_stale_statement_is_neither_lost_nor_doubled() {
    let (pg, proxy) = setup().await;
    let (mut d, mut h) = both(&pg, &proxy).await;
    let ins = "INSERT INTO audit(msg) VALUES ($1)";
    for w in [&mut d, &mut h] {
        w.send(&[parse("ins", ins), parse("s1", STALE_SQL), sync()])
            .await;
        w.until_ready().await;
        w.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
            .await;
        w.until_ready().await;
    }
    admin(
        &pg,
        "ALTER TABLE orders ADD COLUMN discount_code varchar(50)",
    );
    let batch = |msg: &'static str| {
        vec![
            bind("", "ins", &[msg], &[]),
            execute(""),
            bind("", "s1", &["2"], &[]),
            execute(""),
            sync(),
        ]
    };
    // Straight to PostgreSQL: the client is told "INSERT 0 1", then the error rolls it back.
    d.send(&batch("direct")).await;
    let direct = d.until_ready().await;
    assert_eq!(direct[0], Msg::BindComplete);
    assert_eq!(direct[1], Msg::CommandComplete("INSERT 0 1".into()));
    assert!(cached_plan_error(&direct));
    assert_eq!(
        admin(&pg, "SELECT count(*) FROM audit WHERE msg = 'direct'"),
        "0",
        "the write was lost"
    );

    h.send(&batch("healed")).await;
    let healed = h.until_ready().await;
    assert_eq!(
        healed,
        vec![
            Msg::BindComplete,
            Msg::CommandComplete("INSERT 0 1".into()),
            Msg::BindComplete,
            Msg::DataRow(vec![
                Some("2".into()),
                Some("20".into()),
                Some("second".into())
            ]),
            Msg::CommandComplete("SELECT 1".into()),
            Msg::Ready('I'),
        ]
    );
    assert_eq!(
        admin(&pg, "SELECT count(*) FROM audit WHERE msg = 'healed'"),
        "1",
        "written exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_describe_statement_is_healed() {
    let (pg, proxy) = setup().await;
    let (mut d, mut h) = both(&pg, &proxy).await;
    for w in [&mut d, &mut h] {
        w.send(&[parse("s1", STALE_SQL), describe_stmt("s1"), sync()])
            .await;
        w.until_ready().await;
    }
    admin(
        &pg,
        "ALTER TABLE orders ADD COLUMN discount_code varchar(50)",
    );
    d.send(&[describe_stmt("s1"), sync()]).await;
    let direct = d.until_ready().await;
    assert_eq!(
        direct[0],
        Msg::ParameterDescription,
        "PostgreSQL sends t before the error"
    );
    assert!(cached_plan_error(&direct));
    h.send(&[describe_stmt("s1"), sync()]).await;
    assert_eq!(
        h.until_ready().await,
        vec![
            Msg::ParameterDescription,
            Msg::RowDescription(vec!["id".into(), "total".into(), "note".into()]),
            Msg::Ready('I'),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_terminated_segments_are_healed() {
    let (pg, proxy) = setup().await;
    let (mut d, mut h) = both(&pg, &proxy).await;
    // asyncpg prepares with Parse / Describe / Flush.
    for w in [&mut d, &mut h] {
        w.send(&[parse("s1", STALE_SQL), describe_stmt("s1"), flush()])
            .await;
        let got = w.take(3).await;
        assert_eq!(got[0], Msg::ParseComplete);
        assert_eq!(
            got[2],
            Msg::RowDescription(vec!["id".into(), "total".into(), "note".into()])
        );
        w.send(&[sync()]).await;
        w.until_ready().await;
    }
    admin(
        &pg,
        "ALTER TABLE orders ADD COLUMN discount_code varchar(50)",
    );
    d.send(&[bind("", "s1", &["1"], &[]), execute(""), flush()])
        .await;
    assert!(d.recv().await.is_error());
    // Through pgheal the rows arrive before any Sync is sent.
    h.send(&[bind("", "s1", &["1"], &[]), execute(""), flush()])
        .await;
    assert_eq!(
        h.take(3).await,
        vec![
            Msg::BindComplete,
            Msg::DataRow(vec![
                Some("1".into()),
                Some("9.50".into()),
                Some("first".into())
            ]),
            Msg::CommandComplete("SELECT 1".into()),
        ]
    );
    h.send(&[sync()]).await;
    assert_eq!(h.until_ready().await, vec![Msg::Ready('I')]);
    // A fresh prepare through a Flush segment after the migration also works.
    h.send(&[parse("s2", STALE_SQL), describe_stmt("s2"), flush()])
        .await;
    let got = h.take(3).await;
    assert_eq!(
        got[2],
        Msg::RowDescription(vec![
            "id".into(),
            "total".into(),
            "note".into(),
            "discount_code".into()
        ])
    );
    h.send(&[sync()]).await;
    h.until_ready().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_level_execute_is_healed() {
    let (pg, proxy) = setup().await;
    let (mut d, mut h) = both(&pg, &proxy).await;
    for w in [&mut d, &mut h] {
        let got = w
            .query("PREPARE q(int) AS SELECT * FROM orders WHERE id = $1")
            .await;
        assert!(errors(&got).is_empty());
        w.query("EXECUTE q(1)").await;
    }
    admin(
        &pg,
        "ALTER TABLE orders ADD COLUMN discount_code varchar(50)",
    );
    assert!(cached_plan_error(&d.query("EXECUTE q(1)").await));
    let got = h.query("EXECUTE q(1)").await;
    assert_eq!(
        got,
        vec![
            Msg::RowDescription(vec![
                "id".into(),
                "total".into(),
                "note".into(),
                "discount_code".into()
            ]),
            Msg::DataRow(vec![
                Some("1".into()),
                Some("9.50".into()),
                Some("first".into()),
                None
            ]),
            Msg::CommandComplete("SELECT 1".into()),
            Msg::Ready('I'),
        ]
    );
    assert_eq!(heal_count(&proxy, Outcome::Healed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn begin_inside_the_batch_is_rolled_back_and_replayed() {
    let (pg, proxy) = setup().await;
    let (mut d, mut h) = both(&pg, &proxy).await;
    for w in [&mut d, &mut h] {
        w.send(&[
            parse("ins", "INSERT INTO audit(msg) VALUES ($1)"),
            parse("s1", STALE_SQL),
            sync(),
        ])
        .await;
        w.until_ready().await;
        w.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
            .await;
        w.until_ready().await;
    }
    admin(
        &pg,
        "ALTER TABLE orders ADD COLUMN discount_code varchar(50)",
    );
    let batch = |msg: &'static str| {
        vec![
            parse("", "BEGIN"),
            bind("", "", &[], &[]),
            execute(""),
            bind("", "ins", &[msg], &[]),
            execute(""),
            bind("", "s1", &["1"], &[]),
            execute(""),
            parse("", "COMMIT"),
            bind("", "", &[], &[]),
            execute(""),
            sync(),
        ]
    };
    d.send(&batch("direct")).await;
    let direct = d.until_ready().await;
    assert!(cached_plan_error(&direct));
    assert_eq!(direct.last(), Some(&Msg::Ready('E')));
    d.query("ROLLBACK").await;

    h.send(&batch("healed")).await;
    let healed = h.until_ready().await;
    assert!(errors(&healed).is_empty(), "{healed:?}");
    assert_eq!(
        rows(&healed),
        vec![vec![
            Some("1".into()),
            Some("9.50".into()),
            Some("first".into())
        ]]
    );
    assert!(healed.contains(&Msg::CommandComplete("COMMIT".into())));
    assert_eq!(healed.last(), Some(&Msg::Ready('I')));
    assert_eq!(
        admin(&pg, "SELECT count(*) FROM audit WHERE msg = 'healed'"),
        "1"
    );
    assert_eq!(
        admin(&pg, "SELECT count(*) FROM audit WHERE msg = 'direct'"),
        "0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_begin_with_sql_execute_is_healed() {
    let (pg, proxy) = setup().await;
    let mut h = Wire::connect(proxy.addr.port(), USER, PASSWORD, DB).await;
    h.query("PREPARE q(int) AS SELECT * FROM orders WHERE id = $1")
        .await;
    h.query("EXECUTE q(1)").await;
    admin(
        &pg,
        "ALTER TABLE orders ADD COLUMN discount_code varchar(50)",
    );
    let got = h
        .query("BEGIN; INSERT INTO audit(msg) VALUES ('simple'); EXECUTE q(2); COMMIT")
        .await;
    assert!(errors(&got).is_empty(), "{got:?}");
    assert_eq!(got.last(), Some(&Msg::Ready('I')));
    assert_eq!(
        admin(&pg, "SELECT count(*) FROM audit WHERE msg = 'simple'"),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_feature_not_supported_errors_pass_through() {
    let (pg, proxy) = setup().await;
    let (mut d, mut h) = both(&pg, &proxy).await;
    let sql = "SELECT count(*) FROM orders FOR UPDATE";
    let direct = d.query(sql).await;
    let through = h.query(sql).await;
    assert_eq!(errors(&direct), vec!["0A000".to_string()]);
    assert_eq!(through, direct);
    for o in [
        Outcome::Healed,
        Outcome::Projected,
        Outcome::Refused,
        Outcome::ForwardedInTransaction,
    ] {
        assert_eq!(heal_count(&proxy, o), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_an_earlier_transaction_the_error_is_forwarded_and_counted() {
    let (pg, proxy) = setup().await;
    let mut h = Wire::connect(proxy.addr.port(), USER, PASSWORD, DB).await;
    prepare_and_run(&mut h, "s1", STALE_SQL).await;
    assert_eq!(h.query("BEGIN").await.last(), Some(&Msg::Ready('T')));
    admin(
        &pg,
        "ALTER TABLE orders ADD COLUMN discount_code varchar(50)",
    );
    h.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
        .await;
    let got = h.until_ready().await;
    assert!(cached_plan_error(&got));
    assert_eq!(got.last(), Some(&Msg::Ready('E')));
    assert_eq!(heal_count(&proxy, Outcome::ForwardedInTransaction), 1);
    h.query("ROLLBACK").await;
    // Outside the transaction the next use heals.
    h.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
        .await;
    assert!(errors(&h.until_ready().await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_reports_heals() {
    let (pg, proxy) = setup().await;
    let mut h = Wire::connect(proxy.addr.port(), USER, PASSWORD, DB).await;
    prepare_and_run(&mut h, "s1", STALE_SQL).await;
    admin(
        &pg,
        "ALTER TABLE orders ADD COLUMN discount_code varchar(50)",
    );
    h.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
        .await;
    h.until_ready().await;
    let addr = proxy.metrics_addr.expect("metrics endpoint");
    let body = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    })
    .await
    .unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains("pgheal_heal_events_total{database=\"appdb\",outcome=\"projected\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("pgheal_heal_events_total{database=\"appdb\",outcome=\"refused\"} 0"),
        "{body}"
    );
}
