//! Heals in transaction pooling: a migration (ADD COLUMN) made straight on the server while
//! clients hold prepared statements that run on two server connections in turn. Each client
//! keeps the shape it prepared with (its contract) on every connection: the one that prepared
//! before the migration keeps three columns, one that prepared after gets four. Nothing is
//! refused.

use crate::common;
use crate::txn_support;

use common::wire::*;
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::heal::Outcome;
use pgheal::proxy::ProxyHandle;
use txn_support::*;

const STALE_SQL: &str = "SELECT * FROM orders WHERE id = $1";
const MIGRATION: &str = "ALTER TABLE orders ADD COLUMN discount_code varchar(50);
                         UPDATE orders SET discount_code = 'X' || id";

pub(crate) async fn setup() -> (TempCluster, ProxyHandle) {
    let pg = start_pg();
    admin(
        &pg,
        "CREATE TABLE orders(id int PRIMARY KEY, total numeric, note text);
         INSERT INTO orders VALUES (1, 9.50, 'first'), (2, 20, 'second');
         ALTER TABLE orders OWNER TO app;",
    );
    let proxy = txn_proxy(&pg, 2).await;
    (pg, proxy)
}

pub(crate) fn old_row(id: u32) -> Vec<Option<String>> {
    match id {
        1 => vec![s("1"), s("9.50"), s("first")],
        _ => vec![s("2"), s("20"), s("second")],
    }
}

pub(crate) fn new_row(id: u32) -> Vec<Option<String>> {
    let mut r = old_row(id);
    r.push(s(&format!("X{id}")));
    r
}

pub(crate) fn old_columns() -> Vec<String> {
    vec!["id".into(), "total".into(), "note".into()]
}

pub(crate) fn new_columns() -> Vec<String> {
    vec![
        "id".into(),
        "total".into(),
        "note".into(),
        "discount_code".into(),
    ]
}

/// Bind / Describe portal / Execute of `stmt` for order `id`.
pub(crate) fn run(stmt: &str, id: u32) -> Vec<pgheal::protocol::Frame> {
    vec![
        bind("", stmt, &[&id.to_string()], &[]),
        describe_portal(""),
        execute(""),
    ]
}

/// Parse of [`STALE_SQL`] as `stmt`, then [`run`].
fn prepare_and_run(stmt: &str, id: u32) -> Vec<pgheal::protocol::Frame> {
    let mut frames = vec![parse(stmt, STALE_SQL)];
    frames.extend(run(stmt, id));
    frames
}

pub(crate) fn expect_run(columns: Vec<String>, row: Vec<Option<String>>) -> Vec<Msg> {
    vec![
        Msg::BindComplete,
        Msg::RowDescription(columns),
        Msg::DataRow(row),
        Msg::CommandComplete("SELECT 1".into()),
        Msg::Ready('I'),
    ]
}

fn counters(proxy: &ProxyHandle) -> String {
    format!(
        "healed={} projected={} refused={} forwarded_in_transaction={}",
        heal_count(proxy, Outcome::Healed),
        heal_count(proxy, Outcome::Projected),
        heal_count(proxy, Outcome::Refused),
        heal_count(proxy, Outcome::ForwardedInTransaction),
    )
}

fn assert_nothing_refused(proxy: &ProxyHandle) {
    assert_eq!(
        heal_count(proxy, Outcome::Refused),
        0,
        "{}",
        counters(proxy)
    );
    assert_eq!(
        heal_count(proxy, Outcome::ForwardedInTransaction),
        0,
        "{}",
        counters(proxy)
    );
}

/// Raw client A prepares on both server connections before the migration; it heals on each,
/// where its statement fails. Client B prepares the same text (same name, too) after the
/// migration and gets the new shape. Then both alternate over both connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contracts_hold_across_server_connections() {
    let (pg, proxy) = setup().await;
    let mut router = Router::new(&proxy).await;
    let pids = router.pids;
    let mut a = wire(&proxy).await;

    let (p, got) = with_pid(&mut a, &prepare_and_run("s1", 1)).await;
    let mut expected = vec![Msg::ParseComplete];
    expected.extend(expect_run(old_columns(), old_row(1)));
    assert_eq!(got, expected);
    // And on the other connection too: stale on both after the migration.
    router.route_to(router.other(p)).await;
    let (q, got) = with_pid(&mut a, &run("s1", 2)).await;
    assert_eq!(q, router.other(p));
    assert_eq!(got, expect_run(old_columns(), old_row(2)));

    admin(&pg, MIGRATION);

    // A heals on each connection in turn, keeping its three columns.
    for pid in [pids[0], pids[1], pids[0], pids[1]] {
        router.route_to(pid).await;
        let (ran_on, got) = with_pid(&mut a, &run("s1", 1)).await;
        assert_eq!(ran_on, pid);
        assert_eq!(
            got,
            expect_run(old_columns(), old_row(1)),
            "A on {pid}; {}",
            counters(&proxy)
        );
    }
    let fixed = heal_count(&proxy, Outcome::Projected) + heal_count(&proxy, Outcome::Healed);
    assert!(fixed >= 1, "no heal counted: {}", counters(&proxy));

    // B prepares the same text after the migration: the new shape is its contract.
    let mut b = wire(&proxy).await;
    assert_eq!(
        run_batch(&mut b, &[parse("s1", STALE_SQL), describe_stmt("s1")]).await,
        parsed_and_described(new_columns())
    );
    for i in 0..6 {
        let pid = pids[i % 2];
        let id = 1 + (i as u32 % 2);
        router.route_to(pid).await;
        let (ran_on, got) = with_pid(&mut b, &run("s1", id)).await;
        assert_eq!(ran_on, pid);
        assert_eq!(got, expect_run(new_columns(), new_row(id)), "B on {pid}");
        let (ran_on, got) = with_pid(&mut a, &run("s1", id)).await;
        assert_eq!(ran_on, pid);
        assert_eq!(got, expect_run(old_columns(), old_row(id)), "A on {pid}");
        // Without Describe, as drivers with cached statements do.
        let got = bind_execute(&mut a, "s1", &[&id.to_string()]).await;
        assert_eq!(rows(&got), vec![old_row(id)]);
    }
    // Describe 'S' still answers each with its own contract.
    for (w, columns) in [(&mut a, old_columns()), (&mut b, new_columns())] {
        for pid in pids {
            router.route_to(pid).await;
            assert_eq!(
                run_batch(w, &[describe_stmt("s1")]).await,
                described(columns.clone())
            );
        }
    }
    router.release().await;
    assert_nothing_refused(&proxy);
}

/// A statement prepared (and run) on one server connection only, before the migration, then
/// bound on the other one: pgheal prepares it there in the new shape and projects the rows onto
/// the client's three columns, whatever the client asks (Describe or not, per-column result
/// formats, binary). Back on the first connection, where it is stale, it heals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_prepare_after_the_migration_keeps_the_contract() {
    let (pg, proxy) = setup().await;
    let mut router = Router::new(&proxy).await;
    let mut a = wire(&proxy).await;
    let (p1, got) = with_pid(&mut a, &prepare_and_run("s1", 1)).await;
    assert_eq!(got[1..], expect_run(old_columns(), old_row(1))[..]);
    // Binary rows before the migration, to compare with after.
    router.route_to(p1).await;
    let binary_before = run_batch(&mut a, &[bind("", "s1", &["2"], &[1]), execute("")]).await;
    assert_eq!(rows(&binary_before).len(), 1, "{binary_before:?}");

    admin(&pg, MIGRATION);

    let p2 = router.other(p1);
    router.route_to(p2).await;
    let (ran_on, got) = with_pid(&mut a, &run("s1", 1)).await;
    assert_eq!(ran_on, p2);
    assert_eq!(
        got,
        expect_run(old_columns(), old_row(1)),
        "{}",
        counters(&proxy)
    );
    // Without Describe, and with one result format per contract column.
    for formats in [&[][..], &[0, 0, 0][..]] {
        let (ran_on, got) = with_pid(&mut a, &[bind("", "s1", &["2"], formats), execute("")]).await;
        assert_eq!(ran_on, p2);
        assert_eq!(
            got,
            one_row(old_row(2)),
            "formats {formats:?}; {}",
            counters(&proxy)
        );
    }
    let got = run_batch(&mut a, &[bind("", "s1", &["2"], &[1]), execute("")]).await;
    assert_eq!(got, binary_before, "binary rows");

    // Back on p1, where the statement is stale: healed.
    router.route_to(p1).await;
    let (ran_on, got) = with_pid(&mut a, &run("s1", 2)).await;
    assert_eq!(ran_on, p1);
    assert_eq!(
        got,
        expect_run(old_columns(), old_row(2)),
        "{}",
        counters(&proxy)
    );
    router.route_to(p1).await;
    let got = run_batch(&mut a, &[bind("", "s1", &["2"], &[1]), execute("")]).await;
    assert_eq!(got, binary_before, "binary rows on p1");
    router.release().await;
    assert_nothing_refused(&proxy);
}

/// The design: every heal, refusal and projection is a log event and a counter. A statement
/// prepared in the new shape on another server connection and projected onto the client's
/// contract is a projection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projection_after_a_lazy_prepare_is_counted() {
    let (pg, proxy) = setup().await;
    let mut router = Router::new(&proxy).await;
    let mut a = wire(&proxy).await;
    let (p1, _) = with_pid(&mut a, &prepare_and_run("s1", 1)).await;
    admin(&pg, MIGRATION);
    router.route_to(router.other(p1)).await;
    let (_, got) = with_pid(&mut a, &run("s1", 1)).await;
    assert_eq!(got, expect_run(old_columns(), old_row(1)));
    router.release().await;
    assert!(
        heal_count(&proxy, Outcome::Projected) >= 1,
        "{}",
        counters(&proxy)
    );
}

/// Client B prepares the text after the migration, before any server connection has reported
/// the statement stale: straight to PostgreSQL it would see four columns, and so it must
/// through pgheal, even though the pool knows the text's old description.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_after_the_migration_sees_the_new_shape() {
    let (pg, proxy) = setup().await;
    let mut a = wire(&proxy).await;
    assert_eq!(
        run_batch(&mut a, &[parse("s1", STALE_SQL)]).await,
        vec![Msg::ParseComplete, Msg::Ready('I')]
    );
    assert_eq!(
        rows(&bind_execute(&mut a, "s1", &["1"]).await),
        vec![old_row(1)]
    );

    admin(&pg, MIGRATION);

    let mut b = wire(&proxy).await;
    assert_eq!(
        run_batch(&mut b, &[parse("P_0", STALE_SQL), describe_stmt("P_0")]).await,
        parsed_and_described(new_columns())
    );
    assert_eq!(
        rows(&bind_execute(&mut b, "P_0", &["2"]).await),
        vec![new_row(2)]
    );
    // tokio-postgres prepares the same way (Parse, Describe 'S', Sync).
    let c = connect(&proxy_url(&proxy)).await;
    let st = c.prepare(STALE_SQL).await.expect("prepare");
    assert_eq!(
        st.columns().iter().map(|c| c.name()).collect::<Vec<_>>(),
        new_columns()
    );
    // A keeps its contract.
    assert_eq!(
        rows(&bind_execute(&mut a, "s1", &["1"]).await),
        vec![old_row(1)]
    );
    assert_nothing_refused(&proxy);
}

/// tokio-postgres with a cached statement, run on both server connections before and after the
/// migration (binary rows, Bind/Execute/Sync without Describe); a second tokio-postgres client
/// prepares after the first has healed and reads four columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_cached_statement_heals_on_both_connections() {
    let (pg, proxy) = setup().await;
    let mut router = Router::new(&proxy).await;
    let pids = router.pids;
    let c1 = connect(&proxy_url(&proxy)).await;
    let st = c1.prepare(STALE_SQL).await.expect("prepare");
    for pid in pids {
        router.route_to(pid).await;
        let r = c1.query_one(&st, &[&1i32]).await.expect("before");
        assert_eq!(r.len(), 3);
    }
    router.release().await;

    admin(&pg, MIGRATION);

    for i in 0..6 {
        let id = 1 + (i % 2) as i32;
        router.route_to(pids[i % 2]).await;
        let r = c1
            .query_one(&st, &[&id])
            .await
            .unwrap_or_else(|e| panic!("c1 after the migration: {e}; {}", counters(&proxy)));
        assert_eq!(r.len(), 3, "the contract has three columns");
        assert_eq!(r.get::<_, i32>("id"), id);
        assert_eq!(
            r.get::<_, &str>("note"),
            if id == 1 { "first" } else { "second" }
        );
    }
    let fixed = heal_count(&proxy, Outcome::Projected) + heal_count(&proxy, Outcome::Healed);
    assert!(fixed >= 1, "no heal counted: {}", counters(&proxy));

    let c2 = connect(&proxy_url(&proxy)).await;
    let st2 = c2.prepare(STALE_SQL).await.expect("prepare after");
    assert_eq!(
        st2.columns().iter().map(|c| c.name()).collect::<Vec<_>>(),
        new_columns()
    );
    for i in 0..6 {
        let id = 1 + (i % 2) as i32;
        router.route_to(pids[i % 2]).await;
        let r = c2.query_one(&st2, &[&id]).await.expect("c2");
        assert_eq!(r.len(), 4);
        assert_eq!(r.get::<_, &str>("discount_code"), format!("X{id}"));
        let r = c1.query_one(&st, &[&id]).await.expect("c1");
        assert_eq!(r.len(), 3);
        assert_eq!(r.get::<_, i32>("id"), id);
    }
    router.release().await;
    // Concurrently, without steering: two tasks share both clients, so each client pipelines
    // the two tasks' Bind/Execute/Sync batches.
    let (c1, c2) = (std::sync::Arc::new(c1), std::sync::Arc::new(c2));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (c1, c2, st, st2) = (c1.clone(), c2.clone(), st.clone(), st2.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let id = 1 + (i % 2);
                let r = c1.query_one(&st, &[&id]).await.expect("c1");
                assert_eq!((r.len(), r.get::<_, i32>("id")), (3, id));
                let r = c2.query_one(&st2, &[&id]).await.expect("c2");
                assert_eq!((r.len(), r.get::<_, i32>("id")), (4, id));
            }
        }));
    }
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        for t in tasks {
            t.await.expect("task");
        }
    })
    .await
    .expect("the concurrent queries finish");
    assert_nothing_refused(&proxy);
}
