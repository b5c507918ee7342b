//! Session settings in transaction pooling: `SET`/`RESET` sent outside a transaction block
//! follow the client to whichever server connection runs its next transaction, other clients
//! keep their own values, and statement texts are told apart by search_path.

use crate::common;
use crate::txn_support;

use common::wire::*;
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::proxy::ProxyHandle;
use txn_support::*;

async fn setup() -> (TempCluster, ProxyHandle) {
    let pg = start_pg();
    let proxy = txn_proxy(&pg, 2).await;
    (pg, proxy)
}

const WHO: &str = "SELECT pg_backend_pid(), current_setting('application_name')";

/// (backend pid, application_name) seen by a raw client in one transaction.
async fn app_name(w: &mut Wire) -> (i32, String) {
    let msgs = w.query(WHO).await;
    match rows(&msgs).as_slice() {
        [row] => (
            row[0].as_deref().unwrap().parse().unwrap(),
            row[1].clone().unwrap_or_default(),
        ),
        _ => panic!("{WHO}: {msgs:?}"),
    }
}

/// (backend pid, application_name) seen by tokio-postgres in one transaction.
async fn app_name_tp(c: &tokio_postgres::Client) -> (i32, String) {
    let r = c.query_one(WHO, &[]).await.expect(WHO);
    (r.get(0), r.get(1))
}

/// C, a client with the same startup parameters as A that never set anything, sees the
/// default application_name on every server connection: A's SET did not reach it.
async fn assert_default_everywhere(router: &mut Router, c: &mut Wire) {
    for p in router.pids {
        router.route_to(p).await;
        assert_eq!(app_name(c).await, (p, String::new()), "A's SET reached C");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_follows_the_client_to_every_server_connection() {
    let (_pg, proxy) = setup().await;
    let mut router = Router::new(&proxy).await;
    let pids = router.pids;
    let mut a = wire(&proxy).await;
    // Another client with its own application_name from the startup packet, and one without.
    let b = connect(&format!(
        "{}?application_name=other-client",
        proxy_url(&proxy)
    ))
    .await;
    let mut c = wire(&proxy).await;

    assert_eq!(
        a.query("SET application_name = 'txn-test'").await,
        complete("SET", 'I')
    );
    for pid in [pids[0], pids[1], pids[0], pids[1]] {
        router.route_to(pid).await;
        assert_eq!(app_name(&mut a).await, (pid, "txn-test".to_owned()));
        assert_eq!(app_name_tp(&b).await, (pid, "other-client".to_owned()));
        assert_eq!(app_name(&mut c).await, (pid, String::new()));
        let show = a.query("SHOW application_name").await;
        assert_eq!(rows(&show), vec![vec![s("txn-test")]]);
    }

    // SET again (the later value wins), then RESET: back to the default everywhere.
    a.query("SET application_name TO 'txn-test-2'").await;
    for pid in pids {
        router.route_to(pid).await;
        assert_eq!(app_name(&mut a).await, (pid, "txn-test-2".to_owned()));
    }
    assert_eq!(
        a.query("RESET application_name").await,
        complete("RESET", 'I')
    );
    for pid in pids {
        router.route_to(pid).await;
        assert_eq!(app_name(&mut a).await, (pid, String::new()));
        assert_eq!(app_name_tp(&b).await, (pid, "other-client".to_owned()));
    }
    router.release().await;
}

/// Several settings at once, among them one with a unit, survive a change of connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_settings_are_carried_together() {
    let (_pg, proxy) = setup().await;
    let mut router = Router::new(&proxy).await;
    let pids = router.pids;
    let mut a = wire(&proxy).await;
    let mut c = wire(&proxy).await;
    for sql in [
        "SET statement_timeout = '7s'",
        "SET TIME ZONE 'Asia/Tokyo'",
        "SET datestyle TO 'German'",
    ] {
        let got = a.query(sql).await;
        assert!(errors(&got).is_empty(), "{sql}: {got:?}");
    }
    let show = "SELECT current_setting('statement_timeout'), current_setting('TimeZone'), \
                current_setting('DateStyle')";
    for pid in [pids[0], pids[1], pids[1], pids[0]] {
        router.route_to(pid).await;
        assert_eq!(
            rows(&a.query(show).await),
            vec![vec![s("7s"), s("Asia/Tokyo"), s("German, DMY")]],
            "on {pid}"
        );
        let other = rows(&c.query(show).await);
        assert_eq!(other[0][0], s("0"), "C has no statement_timeout on {pid}");
        assert_ne!(
            other[0][1],
            s("Asia/Tokyo"),
            "C keeps its time zone on {pid}"
        );
    }
    router.release().await;
}

/// The same statement text means different tables under different search_paths: each client's
/// statement runs against its own schema, on every connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_are_told_apart_by_search_path() {
    let (pg, proxy) = setup().await;
    admin(
        &pg,
        "CREATE SCHEMA a_schema AUTHORIZATION app; CREATE SCHEMA b_schema AUTHORIZATION app;
         CREATE TABLE a_schema.items(v text); INSERT INTO a_schema.items VALUES ('from a');
         CREATE TABLE b_schema.items(v text, n int); INSERT INTO b_schema.items VALUES ('from b', 2);
         ALTER TABLE a_schema.items OWNER TO app; ALTER TABLE b_schema.items OWNER TO app;",
    );
    let mut router = Router::new(&proxy).await;
    let pids = router.pids;
    let mut a = wire(&proxy).await;
    let mut b = wire(&proxy).await;
    a.query("SET search_path TO a_schema").await;
    b.query("SET search_path = b_schema, public").await;
    let sql = "SELECT * FROM items";
    for (w, columns) in [
        (&mut a, vec!["v".to_owned()]),
        (&mut b, vec!["v".to_owned(), "n".to_owned()]),
    ] {
        assert_eq!(
            run_batch(w, &[parse("P_0", sql), describe_stmt("P_0")]).await,
            parsed_and_described(columns)
        );
    }
    for pid in [pids[0], pids[1], pids[0], pids[1]] {
        router.route_to(pid).await;
        for (w, row) in [
            (&mut a, vec![s("from a")]),
            (&mut b, vec![s("from b"), s("2")]),
        ] {
            let (ran_on, got) = with_pid(w, &[bind("", "P_0", &[], &[]), execute("")]).await;
            assert_eq!(ran_on, pid);
            assert_eq!(rows(&got), vec![row], "{got:?}");
        }
    }
    router.release().await;
}

/// A `SET` inside a transaction block that commits stays in effect on PostgreSQL. Wherever
/// pgheal carries it, it must not reach another client that shares the server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_in_a_committed_transaction_block_does_not_leak_to_other_clients() {
    let (_pg, proxy) = setup().await;
    let mut router = Router::new(&proxy).await;
    let pids = router.pids;
    let mut a = wire(&proxy).await;
    let mut c = wire(&proxy).await;
    for pid in pids {
        router.route_to(pid).await;
        a.query("BEGIN").await;
        let got = a.query("SET application_name = 'leaky'").await;
        assert_eq!(got.last(), Some(&Msg::Ready('T')), "{got:?}");
        assert_eq!(a.query("COMMIT").await, complete("COMMIT", 'I'));
        assert_default_everywhere(&mut router, &mut c).await;
    }
    router.release().await;
}

/// The same with `SET` sent through the extended protocol (Parse/Bind/Execute), as some
/// drivers send everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_through_the_extended_protocol_does_not_leak_to_other_clients() {
    let (_pg, proxy) = setup().await;
    let mut router = Router::new(&proxy).await;
    let pids = router.pids;
    let mut a = wire(&proxy).await;
    let mut c = wire(&proxy).await;
    for pid in pids {
        router.route_to(pid).await;
        let set = [
            parse("", "SET application_name = 'leaky-ext'"),
            bind("", "", &[], &[]),
            execute(""),
        ];
        assert_eq!(
            run_batch(&mut a, &set).await,
            vec![
                Msg::ParseComplete,
                Msg::BindComplete,
                Msg::CommandComplete("SET".into()),
                Msg::Ready('I'),
            ]
        );
        assert_default_everywhere(&mut router, &mut c).await;
    }
    router.release().await;
}
