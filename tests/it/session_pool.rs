//! The pool: many clients on few server connections, the reset between clients, the limits
//! (query_wait_timeout, max_client_conn) and the expiry of idle and old connections.

use crate::common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// Number of server backends logged in as `app` (pgheal's server user), seen by the superuser.
async fn app_backends(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
            &[],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_share_ten_server_connections() {
    let pg = start_pg();
    // trust: the test is about pooling; 200 SCRAM exchanges in a debug build would dominate.
    let proxy = start_proxy(&pg, |a| {
        a.pool_size = Some(10);
        a.auth_type = Some("trust".into());
    })
    .await;
    let setup = connect(&proxy_url(&proxy)).await;
    setup
        .batch_execute("CREATE TABLE hits (client int, n int)")
        .await
        .expect("create");
    drop(setup);

    // Watch the server side while the clients run.
    let su = admin_client(&pg).await;
    let stop = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicI64::new(0));
    let watcher = {
        let (stop, max_seen) = (stop.clone(), max_seen.clone());
        tokio::spawn(async move {
            let mut samples = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let n = app_backends(&su).await;
                max_seen.fetch_max(n, Ordering::SeqCst);
                samples += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            samples
        })
    };

    let url = proxy_url(&proxy);
    let mut tasks = Vec::new();
    for i in 0..200i32 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let c = connect(&url).await;
            let pid = backend_pid(&c).await;
            c.execute("INSERT INTO hits VALUES ($1, 1), ($1, 2)", &[&i])
                .await
                .expect("insert");
            let r = c
                .query_one(
                    "SELECT sum(n)::int, $1::int * 2 FROM hits WHERE client = $1",
                    &[&i],
                )
                .await
                .expect("select");
            assert_eq!(r.get::<_, i32>(0), 3);
            assert_eq!(r.get::<_, i32>(1), i * 2);
            let msgs = c
                .simple_query(&format!("SELECT {i} + 1"))
                .await
                .expect("simple");
            let v = msgs.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            });
            assert_eq!(v, Some((i + 1).to_string()));
            pid
        }));
    }
    let mut pids = HashSet::new();
    for t in tasks {
        pids.insert(t.await.expect("client task"));
    }
    stop.store(true, Ordering::SeqCst);
    let samples = watcher.await.expect("watcher");

    let total = admin(&pg, "SELECT count(*), count(DISTINCT client) FROM hits");
    assert_eq!(total, "400|200");
    assert!(
        pids.len() <= 10,
        "clients ran on {} different server backends",
        pids.len()
    );
    let max = max_seen.load(Ordering::SeqCst);
    assert!(samples > 0);
    assert!(
        (1..=10).contains(&max),
        "the server saw {max} backends of pgheal at once"
    );
    assert!(app_backends(&admin_client(&pg).await).await <= 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connection_is_reset_between_clients() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| a.pool_size = Some(1)).await;
    let url = proxy_url(&proxy);

    let c1 = connect(&url).await;
    let default_work_mem: String = c1
        .query_one("SHOW work_mem", &[])
        .await
        .expect("show")
        .get(0);
    assert_ne!(default_work_mem, "7MB");
    c1.batch_execute(
        "PREPARE p AS SELECT 1; SET work_mem = '7MB'; CREATE TEMP TABLE t(x int); \
         INSERT INTO t VALUES (1)",
    )
    .await
    .expect("leave state behind");
    let pid1 = backend_pid(&c1).await;
    let wm: String = c1
        .query_one("SHOW work_mem", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(wm, "7MB");
    drop(c1);

    let c2 = connect(&url).await;
    assert_eq!(
        backend_pid(&c2).await,
        pid1,
        "the pool re-used the connection"
    );
    let err = c2.batch_execute("EXECUTE p").await.expect_err("p is gone");
    assert_eq!(sqlstate(&err).as_deref(), Some("26000"));
    let wm: String = c2
        .query_one("SHOW work_mem", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(wm, default_work_mem);
    let err = c2
        .query("SELECT * FROM t", &[])
        .await
        .expect_err("temp table is gone");
    assert_eq!(sqlstate(&err).as_deref(), Some("42P01"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_inside_a_transaction_is_rolled_back() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| a.pool_size = Some(1)).await;
    let url = proxy_url(&proxy);
    admin(
        &pg,
        "CREATE TABLE ledger (v int); ALTER TABLE ledger OWNER TO app",
    );

    let c1 = connect(&url).await;
    let pid1 = backend_pid(&c1).await;
    c1.batch_execute("BEGIN; INSERT INTO ledger VALUES (1), (2)")
        .await
        .expect("open a transaction");
    let n: i64 = c1
        .query_one("SELECT count(*) FROM ledger", &[])
        .await
        .expect("count inside")
        .get(0);
    assert_eq!(n, 2);
    drop(c1);

    let c2 = connect(&url).await;
    assert_eq!(backend_pid(&c2).await, pid1, "the connection was re-used");
    let n: i64 = c2
        .query_one("SELECT count(*) FROM ledger", &[])
        .await
        .expect("count after")
        .get(0);
    assert_eq!(n, 0, "the abandoned transaction was rolled back");
    // Not inside a transaction any more: a new one can begin and commit.
    c2.batch_execute("BEGIN; INSERT INTO ledger VALUES (3); COMMIT")
        .await
        .expect("new transaction");
    assert_eq!(
        admin(&pg, "SELECT string_agg(v::text, ',') FROM ledger"),
        "3"
    );

    // An aborted transaction (error inside it) is rolled back too.
    c2.batch_execute("BEGIN; INSERT INTO ledger VALUES (4)")
        .await
        .expect("begin");
    let err = c2
        .batch_execute("SELECT 1/0")
        .await
        .expect_err("division by zero");
    assert_eq!(sqlstate(&err).as_deref(), Some("22012"));
    drop(c2);
    let c3 = connect(&url).await;
    assert_eq!(backend_pid(&c3).await, pid1);
    let n: i64 = c3
        .query_one("SELECT count(*) FROM ledger", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_timeout_refuses_with_pgbouncers_error() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| {
        a.pool_size = Some(1);
        a.query_wait_timeout = Some(1.0);
    })
    .await;
    let url = proxy_url(&proxy);
    let holder = connect(&url).await;
    let pid = backend_pid(&holder).await;

    let err = try_connect(&url)
        .await
        .expect_err("no server connection for a second client");
    assert_eq!(sqlstate(&err).as_deref(), Some("08P01"));
    let msg = err.as_db_error().expect("db error").message().to_owned();
    assert!(msg.contains("query_wait_timeout"), "message: {msg}");

    // The holder is unaffected; once it leaves, others get the connection.
    assert_eq!(backend_pid(&holder).await, pid);
    drop(holder);
    let next = connect(&url).await;
    assert_eq!(backend_pid(&next).await, pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_conn_refuses_the_third_client() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| a.max_client_conn = Some(2)).await;
    let url = proxy_url(&proxy);
    let a = connect(&url).await;
    let b = connect(&url).await;
    let err = try_connect(&url)
        .await
        .expect_err("third client is refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("08P01"));
    let msg = err.as_db_error().expect("db error").message().to_owned();
    assert!(msg.contains("max_client_conn"), "message: {msg}");

    // The two admitted clients work; when one leaves, a new one is admitted.
    assert_ne!(backend_pid(&a).await, backend_pid(&b).await);
    drop(a);
    let admitted = eventually(Duration::from_secs(20), || async {
        match try_connect(&url).await {
            Ok(c) => c.simple_query("SELECT 1").await.is_ok(),
            Err(e) => {
                assert_eq!(sqlstate(&e).as_deref(), Some("08P01"), "{e}");
                false
            }
        }
    })
    .await;
    assert!(admitted, "a slot frees up when a client leaves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_connections_expire() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| {
        a.pool_size = Some(1);
        a.server_idle_timeout = Some(1.0);
    })
    .await;
    let url = proxy_url(&proxy);
    let su = admin_client(&pg).await;

    let c1 = connect(&url).await;
    let pid1 = backend_pid(&c1).await;
    drop(c1);
    // pgheal closes the idle connection on its own: the backend goes away without any client.
    let closed = eventually(Duration::from_secs(20), || async {
        !backend_alive(&su, pid1).await
    })
    .await;
    assert!(closed, "idle server connection {pid1} was not closed");

    let c2 = connect(&url).await;
    let pid2 = backend_pid(&c2).await;
    assert_ne!(pid2, pid1, "a new server connection after the idle timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_server_connections_are_replaced() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| {
        a.pool_size = Some(1);
        a.server_lifetime = Some(1.0);
        a.server_idle_timeout = Some(0.0);
    })
    .await;
    let url = proxy_url(&proxy);
    let su = admin_client(&pg).await;

    let c1 = connect(&url).await;
    let pid1 = backend_pid(&c1).await;
    drop(c1);
    let closed = eventually(Duration::from_secs(20), || async {
        !backend_alive(&su, pid1).await
    })
    .await;
    assert!(closed, "server connection {pid1} outlived server_lifetime");
    let c2 = connect(&url).await;
    assert_ne!(backend_pid(&c2).await, pid1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_settings_apply_to_one_client_only() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| a.pool_size = Some(1)).await;
    admin(&pg, "CREATE SCHEMA shop AUTHORIZATION app");

    // application_name and `options=-c ...` from the startup packet.
    let url = format!(
        "{}?application_name=web-1&options=-c%20search_path%3Dshop%20-c%20statement_timeout%3D4321",
        proxy_url(&proxy)
    );
    let c1 = connect(&url).await;
    let pid = backend_pid(&c1).await;
    let r = c1
        .query_one(
            "SELECT current_setting('application_name'), current_setting('search_path'), \
             current_setting('statement_timeout'), current_schema()::text",
            &[],
        )
        .await
        .expect("settings");
    let got: Vec<String> = (0..4).map(|i| r.get(i)).collect();
    assert_eq!(got, ["web-1", "shop", "4321ms", "shop"]);
    c1.batch_execute("CREATE TABLE in_shop (x int)")
        .await
        .expect("created in search_path");
    drop(c1);

    // The next client on the same server connection has the defaults again.
    let c2 = connect(&proxy_url(&proxy)).await;
    assert_eq!(backend_pid(&c2).await, pid);
    let r = c2
        .query_one(
            "SELECT current_setting('application_name'), current_setting('statement_timeout'), \
             current_schema()::text",
            &[],
        )
        .await
        .expect("settings");
    let got: Vec<String> = (0..3).map(|i| r.get(i)).collect();
    assert_eq!(got, ["", "0", "public"]);
    assert_eq!(
        admin(
            &pg,
            "SELECT schemaname FROM pg_tables WHERE tablename = 'in_shop'"
        ),
        "shop"
    );

    drop(c2);

    // A setting the server rejects refuses the login with the server's error.
    let bad = format!("{}?options=-c%20work_mem%3Dlots", proxy_url(&proxy));
    let err = try_connect(&bad).await.expect_err("invalid work_mem");
    assert_eq!(sqlstate(&err).as_deref(), Some("22023"), "{err}");
    // And the connection it tried it on is still fine for others.
    let c3 = connect(&proxy_url(&proxy)).await;
    let wm: String = c3
        .query_one("SHOW work_mem", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(wm, "4MB");
}
