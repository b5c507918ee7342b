//! The savepoint guard (`--savepoint-guard`): inside a transaction block, a Bind that was
//! already on its way when a migration committed — typically one waiting for the migration's
//! table lock, which pgheal's schema epoch cannot know about yet — fails with the cached-plan
//! error. With the guard, pgheal rolls back to the savepoint it set before the Bind,
//! re-prepares and replays, so the client's transaction goes on; without it, the client gets
//! PostgreSQL's error and its transaction is aborted.

use crate::common;

use std::time::Duration;

use common::wire::*;
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::heal::Outcome;
use pgheal::proxy::ProxyHandle;

const SQL: &str = "SELECT * FROM orders WHERE id = $1";
const INS: &str = "INSERT INTO orders(id, total, note) VALUES ($1, 1, 'tx') RETURNING *";
const LOG: &str = "INSERT INTO log(what) VALUES ($1)";

fn setup_pg() -> TempCluster {
    start_pg_with_orders("CREATE TABLE log(what text); ALTER TABLE log OWNER TO app;")
}

async fn proxy(pg: &TempCluster, mode: &str, guard: &str) -> ProxyHandle {
    start_proxy(pg, |a| {
        a.pool_mode = Some(mode.into());
        a.pool_size = Some(3);
        a.savepoint_guard = Some(guard.into());
    })
    .await
}

/// A client with `s1`, `ins` and `log` prepared (and used once), inside a transaction block.
async fn client_in_transaction(proxy: &ProxyHandle) -> Wire {
    let mut a = Wire::connect(proxy.addr.port(), USER, PASSWORD, DB).await;
    a.send(&[
        parse("s1", SQL),
        parse("ins", INS),
        parse("log", LOG),
        sync(),
    ])
    .await;
    a.until_ready().await;
    a.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
        .await;
    assert_eq!(rows(&a.until_ready().await), vec![first_order()]);
    assert_eq!(a.query("BEGIN").await.last(), Some(&Msg::Ready('T')));
    a
}

/// Run `send` while a migration holds its lock on `orders` and commit the migration once a
/// backend waits for that lock: the waiting Bind then finds its plan stale.
async fn behind_a_migration(
    pg: &TempCluster,
    migrator: &tokio_postgres::Client,
    ddl: &str,
    send: impl AsyncFnOnce(),
) {
    migrator
        .batch_execute(&format!("BEGIN; {ddl}"))
        .await
        .unwrap();
    send().await;
    let watcher = admin_client(pg).await;
    let waiting = eventually(Duration::from_secs(20), async || {
        let n: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        n >= 1
    })
    .await;
    assert!(waiting, "the client's Bind waits for the migration's lock");
    migrator.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_waiting_for_a_migration_is_healed_behind_a_savepoint() {
    for mode in ["session", "transaction"] {
        let pg = setup_pg();
        let proxy = proxy(&pg, mode, "always").await;
        let mut a = client_in_transaction(&proxy).await;
        let migrator = admin_client(&pg).await;
        // One batch: a write that must stay (before the guard), the stale read, and a stale
        // INSERT ... RETURNING after it. Both stale Binds are guarded; each is healed in turn.
        behind_a_migration(
            &pg,
            &migrator,
            "ALTER TABLE orders ADD COLUMN discount_code varchar(50)",
            async || {
                a.send(&[
                    bind("", "log", &["before"], &[]),
                    execute(""),
                    bind("", "s1", &["1"], &[0, 0, 0]),
                    execute(""),
                    bind("", "ins", &["50"], &[]),
                    execute(""),
                    sync(),
                ])
                .await;
            },
        )
        .await;
        let got = a.until_ready().await;
        assert_eq!(
            got,
            vec![
                Msg::BindComplete,
                Msg::CommandComplete("INSERT 0 1".into()),
                Msg::BindComplete,
                Msg::DataRow(first_order()),
                Msg::CommandComplete("SELECT 1".into()),
                Msg::BindComplete,
                Msg::DataRow(vec![Some("50".into()), Some("1".into()), Some("tx".into())]),
                Msg::CommandComplete("INSERT 0 1".into()),
                Msg::Ready('T'),
            ],
            "{mode}: rows in the contract's shape, each result once, the transaction alive"
        );
        assert_eq!(a.query("COMMIT").await.last(), Some(&Msg::Ready('I')));
        assert_eq!(admin(&pg, "SELECT count(*) FROM log"), "1", "{mode}");
        assert_eq!(
            admin(&pg, "SELECT count(*) FROM orders WHERE id = 50"),
            "1",
            "{mode}: the guarded write happened exactly once"
        );
        assert!(heal_count(&proxy, Outcome::Projected) >= 2, "{mode}");
        assert_eq!(heal_count(&proxy, Outcome::ForwardedInTransaction), 0);
        assert!(proxy.metrics.savepoint_guards.get() >= 2, "{mode}");
        assert_eq!(proxy.metrics.savepoint_guard_heals.get(), 2, "{mode}");
        // No savepoint is left behind: the transaction committed at the top level.
        assert_eq!(
            admin(
                &pg,
                "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'"
            ),
            "0"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_guard_the_error_reaches_the_client_and_is_counted() {
    let pg = setup_pg();
    let proxy = proxy(&pg, "session", "off").await;
    let mut a = client_in_transaction(&proxy).await;
    let migrator = admin_client(&pg).await;
    behind_a_migration(
        &pg,
        &migrator,
        "ALTER TABLE orders ADD COLUMN discount_code varchar(50)",
        async || {
            a.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
                .await;
        },
    )
    .await;
    let got = a.until_ready().await;
    assert_eq!(got, vec![cached_plan_error(), Msg::Ready('E')]);
    assert_eq!(heal_count(&proxy, Outcome::ForwardedInTransaction), 1);
    assert_eq!(proxy.metrics.savepoint_guards.get(), 0);
    assert_eq!(proxy.metrics.savepoint_guard_heals.get(), 0);
    assert_eq!(a.query("ROLLBACK").await.last(), Some(&Msg::Ready('I')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_schema_change_guards_while_a_migration_through_pgheal_is_open() {
    for mode in ["session", "transaction"] {
        let pg = setup_pg();
        let proxy = proxy(&pg, mode, "after-schema-change").await;
        let mut a = client_in_transaction(&proxy).await;
        // No schema change yet: no savepoints.
        a.send(&[bind("", "s1", &["2"], &[]), execute(""), sync()])
            .await;
        assert_eq!(rows(&a.until_ready().await).len(), 1);
        assert_eq!(proxy.metrics.savepoint_guards.get(), 0, "{mode}");
        // (That transaction's lock on orders would make the migration wait for it.)
        a.query("COMMIT").await;
        a.query("BEGIN").await;
        // A migration through pgheal: its DDL is seen before it commits.
        let migrator = connect(&proxy_url(&proxy)).await;
        behind_a_migration(
            &pg,
            &migrator,
            "CREATE OR REPLACE VIEW v AS SELECT 1 AS x; ALTER TABLE orders ADD COLUMN c int",
            async || {
                a.send(&[bind("", "s1", &["1"], &[]), execute(""), sync()])
                    .await;
            },
        )
        .await;
        let got = a.until_ready().await;
        assert_eq!(rows(&got), vec![first_order()], "{mode}: {got:?}");
        assert_eq!(got.last(), Some(&Msg::Ready('T')));
        assert!(proxy.metrics.savepoint_guards.get() >= 1, "{mode}");
        assert_eq!(heal_count(&proxy, Outcome::ForwardedInTransaction), 0);
        assert_eq!(a.query("COMMIT").await.last(), Some(&Msg::Ready('I')));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_errors_at_a_guarded_bind_pass_through_unchanged() {
    let pg = setup_pg();
    let proxy = proxy(&pg, "session", "always").await;
    let mut a = client_in_transaction(&proxy).await;
    a.send(&[bind("", "s1", &["not a number"], &[]), execute(""), sync()])
        .await;
    let got = a.until_ready().await;
    assert_eq!(
        errors(&got),
        vec!["22P02".to_string()],
        "the client's own error, as PostgreSQL sends it: {got:?}"
    );
    assert_eq!(got.last(), Some(&Msg::Ready('E')));
    assert_eq!(a.query("ROLLBACK").await.last(), Some(&Msg::Ready('I')));
    // The client's own savepoints keep working around guarded statements.
    a.query("BEGIN").await;
    a.query("SAVEPOINT mine").await;
    a.send(&[bind("", "ins", &["60"], &[]), execute(""), sync()])
        .await;
    assert_eq!(rows(&a.until_ready().await).len(), 1);
    assert_eq!(
        a.query("ROLLBACK TO SAVEPOINT mine").await.last(),
        Some(&Msg::Ready('T'))
    );
    a.send(&[bind("", "ins", &["61"], &[]), execute(""), sync()])
        .await;
    assert_eq!(rows(&a.until_ready().await).len(), 1);
    assert_eq!(
        a.query("RELEASE SAVEPOINT mine").await.last(),
        Some(&Msg::Ready('T'))
    );
    assert_eq!(a.query("COMMIT").await.last(), Some(&Msg::Ready('I')));
    assert_eq!(
        admin(
            &pg,
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM orders WHERE id >= 60"
        ),
        "61"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_after_a_commit_in_the_same_batch_are_not_guarded() {
    let pg = setup_pg();
    let proxy = proxy(&pg, "session", "always").await;
    let mut a = client_in_transaction(&proxy).await;
    // After COMMIT the rest of the batch runs outside a transaction block, where SAVEPOINT is
    // an error: the guard must stay away.
    a.send(&[
        parse("", "COMMIT"),
        bind("", "", &[], &[]),
        execute(""),
        bind("", "s1", &["1"], &[]),
        execute(""),
        sync(),
    ])
    .await;
    let got = a.until_ready().await;
    assert!(errors(&got).is_empty(), "{got:?}");
    assert_eq!(rows(&got), vec![first_order()]);
    assert_eq!(got.last(), Some(&Msg::Ready('I')));
}
