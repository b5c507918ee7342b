//! When things go wrong: query cancellation (real and forged keys), server connections killed
//! or restarted under pgheal, and pgheal's own graceful shutdown.

use crate::common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_postgres::NoTls;

/// Wait until a backend runs a query containing `needle` (seen by the superuser).
async fn wait_running(su: &tokio_postgres::Client, needle: &str) -> i32 {
    for _ in 0..150 {
        let rows = su
            .query(
                "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 \
                 AND pid <> pg_backend_pid()",
                &[&format!("%{needle}%")],
            )
            .await
            .expect("pg_stat_activity");
        if let Some(r) = rows.first() {
            return r.get(0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no backend is running {needle}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_cancels_the_running_query() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let su = admin_client(&pg).await;
    let client = connect(&proxy_url(&proxy)).await;
    let pid = backend_pid(&client).await;
    let token = client.cancel_token();

    let sleeper = tokio::spawn(async move {
        let r = client
            .simple_query("SELECT pg_sleep(30) /* cancel-me */")
            .await;
        (client, r)
    });
    assert_eq!(wait_running(&su, "cancel-me").await, pid);
    token.cancel_query(NoTls).await.expect("send cancel");

    let (client, r) = tokio::time::timeout(Duration::from_secs(20), sleeper)
        .await
        .expect("the cancelled query returns long before 30 s")
        .expect("task");
    let err = r.expect_err("the query was cancelled");
    assert_eq!(sqlstate(&err).as_deref(), Some("57014"));
    // The session goes on, on the same server connection.
    assert_eq!(backend_pid(&client).await, pid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_with_a_wrong_key_cancels_nothing() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let su = admin_client(&pg).await;
    let client = connect(&proxy_url(&proxy)).await;

    let sleeper = tokio::spawn(async move {
        client
            .query_one("SELECT 'slept'::text FROM pg_sleep(2) /* keep-me */", &[])
            .await
            .map(|r| r.get::<_, String>(0))
    });
    wait_running(&su, "keep-me").await;

    // Forged CancelRequests: random keys, sent while the query runs.
    for (pid, key) in [(rand_i32(), rand_i32()), (1, 1), (0, 0), (i32::MAX, -1)] {
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        let mut packet = Vec::with_capacity(16);
        packet.extend_from_slice(&16i32.to_be_bytes());
        packet.extend_from_slice(&80_877_102i32.to_be_bytes());
        packet.extend_from_slice(&pid.to_be_bytes());
        packet.extend_from_slice(&key.to_be_bytes());
        s.write_all(&packet).await.expect("send cancel request");
        // pgheal closes the cancel connection without an answer.
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(10), async {
            use tokio::io::AsyncReadExt;
            s.read(&mut buf).await
        })
        .await
        .expect("pgheal closes the cancel connection")
        .unwrap_or(0);
        assert_eq!(n, 0, "a CancelRequest gets no answer");
    }

    let r = sleeper.await.expect("task");
    assert_eq!(r.expect("the query was not cancelled"), "slept");
}

fn rand_i32() -> i32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as i32
}

/// A backend terminated while the client's messages stream towards it closes with unread
/// input, so PostgreSQL resets the connection after its FATAL; pgheal may then fail a write
/// before it reads the FATAL. The client must still get the server's `57P01`, not a bare
/// close. Timing decides which of the two pgheal meets first, so the race is run many times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_mid_stream_still_passes_the_servers_fatal() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| a.pool_size = Some(4)).await;
    let su = admin_client(&pg).await;
    let url = proxy_url(&proxy);
    for round in 0..25 {
        let (c, conn) = connect_watched(&url).await;
        let c = std::sync::Arc::new(c);
        let pid = backend_pid(&c).await;
        // Four queries in flight at all times until the connection fails.
        let stream = {
            let c = c.clone();
            tokio::spawn(async move {
                loop {
                    let batch = (0..4).map(|_| c.simple_query("SELECT 1"));
                    for r in futures_util::future::join_all(batch).await {
                        if let Err(e) = r {
                            return e;
                        }
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(20 + 7 * round)).await;
        su.query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .expect("terminate");
        let first = tokio::time::timeout(Duration::from_secs(15), stream)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the client's queries never failed"))
            .expect("task");
        let ended = tokio::time::timeout(Duration::from_secs(15), conn)
            .await
            .unwrap_or_else(|_| panic!("round {round}: the client's connection never ended"))
            .expect("task");
        // The FATAL reaches either a query in flight or the connection task.
        let codes = [sqlstate(&first), ended.err().as_ref().and_then(sqlstate)];
        assert!(
            codes.iter().any(|c| c.as_deref() == Some("57P01")),
            "round {round}: the client never saw the server's 57P01 (query: {first}; \
             connection: {codes:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_server_connection_ends_the_client_cleanly() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| a.pool_size = Some(2)).await;
    let su = admin_client(&pg).await;
    let url = proxy_url(&proxy);

    let (a, a_conn) = connect_watched(&url).await;
    let a_pid = backend_pid(&a).await;
    // tokio-postgres closes the statement behind `backend_pid` after the call returns; a FATAL
    // that met that Close would go to its (abandoned) answer instead of ending the connection
    // with an error, with or without pgheal. A simple query behind it waits for that answer.
    a.simple_query("SELECT 1").await.expect("A is idle");
    su.query_one("SELECT pg_terminate_backend($1)", &[&a_pid])
        .await
        .expect("terminate");

    // pgheal forwards the server's FATAL and closes A: A's connection ends with 57P01 and its
    // next query fails.
    let ended = tokio::time::timeout(Duration::from_secs(15), a_conn)
        .await
        .expect("client A's connection ends")
        .expect("task");
    let e = ended.expect_err("A gets the server's FATAL before the close");
    assert_eq!(sqlstate(&e).as_deref(), Some("57P01"), "{e}");
    let err = a
        .simple_query("SELECT 1")
        .await
        .expect_err("A is disconnected");
    assert!(
        err.is_closed() || sqlstate(&err).as_deref() == Some("57P01"),
        "{err}"
    );

    // B gets a fresh, working server connection.
    let b = connect(&url).await;
    let b_pid = backend_pid(&b).await;
    assert_ne!(b_pid, a_pid);
    let n: i64 = b
        .query_one("SELECT count(*) FROM generate_series(1, 10)", &[])
        .await
        .expect("B works")
        .get(0);
    assert_eq!(n, 10);

    // An idle pooled connection that the server kills is not handed out.
    drop(b);
    let idle_ok = eventually(Duration::from_secs(20), || async {
        su.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'idle' \
             AND query = 'DISCARD ALL'",
            &[&b_pid],
        )
        .await
        .map(|r| r.get::<_, i64>(0) == 1)
        .unwrap_or(false)
    })
    .await;
    assert!(
        idle_ok,
        "B's connection went back to the pool after DISCARD ALL"
    );
    su.query_one("SELECT pg_terminate_backend($1)", &[&b_pid])
        .await
        .expect("terminate idle");
    let gone = eventually(Duration::from_secs(20), || async {
        !backend_alive(&su, b_pid).await
    })
    .await;
    assert!(gone);
    let c = connect(&url).await;
    let c_pid = backend_pid(&c).await;
    assert_ne!(c_pid, b_pid);
    assert_eq!(
        c.query_one("SELECT 'ok'::text", &[])
            .await
            .expect("C works")
            .get::<_, String>(0),
        "ok"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_work_after_a_server_restart() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| a.pool_size = Some(3)).await;
    let url = proxy_url(&proxy);

    let (a, a_conn) = connect_watched(&url).await;
    let before = backend_pid(&a).await;
    // Also leave an idle connection in the pool.
    let idle = connect(&url).await;
    let idle_pid = backend_pid(&idle).await;
    drop(idle);
    a.batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before restart')")
        .await
        .expect("write before restart");

    pg.restart().expect("restart the server");

    // A was connected through the restart: its connection ends (57P01 or closed).
    let ended = tokio::time::timeout(Duration::from_secs(15), a_conn)
        .await
        .expect("client A's connection ends")
        .expect("task");
    if let Err(e) = ended {
        assert!(
            e.is_closed() || sqlstate(&e).as_deref() == Some("57P01"),
            "{e}"
        );
    }
    assert!(a.simple_query("SELECT 1").await.is_err());

    // New clients work, on new server connections, with the data intact.
    for _ in 0..3 {
        let c = connect(&url).await;
        let pid = backend_pid(&c).await;
        assert!(
            pid != before && pid != idle_pid,
            "a pre-restart connection was reused"
        );
        let v: String = c
            .query_one("SELECT v FROM kept", &[])
            .await
            .expect("read after restart")
            .get(0);
        assert_eq!(v, "before restart");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_idle_clients_and_stops_accepting() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| a.shutdown_timeout = Some(1.0)).await;
    let addr = proxy.addr;
    let url = proxy_url(&proxy);
    let su = admin_client(&pg).await;

    let (a, a_conn) = connect_watched(&url).await;
    let a_pid = backend_pid(&a).await;
    // A client that leaves during the grace period is not disturbed.
    let b = connect(&url).await;
    assert_eq!(backend_pid(&b).await, backend_pid(&b).await);

    let shutdown = tokio::spawn(proxy.shutdown());
    // New connections are refused once the listener is closed.
    let refused = eventually(Duration::from_secs(20), || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(
        refused,
        "pgheal still accepts connections while shutting down"
    );
    drop(b);

    tokio::time::timeout(Duration::from_secs(30), shutdown)
        .await
        .expect("shutdown completes")
        .expect("task");
    // A stayed idle past shutdown_timeout: pgheal ended it with 57P01.
    let ended = tokio::time::timeout(Duration::from_secs(10), a_conn)
        .await
        .expect("client A's connection ends")
        .expect("task");
    match ended {
        Err(e) => assert_eq!(sqlstate(&e).as_deref(), Some("57P01"), "{e}"),
        Ok(()) => panic!("the client connection ended without the shutdown message"),
    }
    let err = a.simple_query("SELECT 1").await.expect_err("A is closed");
    assert!(err.is_closed(), "{err}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "connection refused"
    );

    // pgheal closed its server connections.
    let closed = eventually(Duration::from_secs(20), || async {
        !backend_alive(&su, a_pid).await
    })
    .await;
    assert!(
        closed,
        "server connection {a_pid} still open after shutdown"
    );
    let none_left = eventually(Duration::from_secs(20), || async {
        su.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
            &[],
        )
        .await
        .map(|r| r.get::<_, i64>(0) == 0)
        .unwrap_or(false)
    })
    .await;
    assert!(
        none_left,
        "pgheal left server connections open after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_cancel_key_of_a_departed_client_cancels_nothing() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| a.pool_size = Some(1)).await;
    let su = admin_client(&pg).await;
    let url = proxy_url(&proxy);

    // A leaves, keeping its cancel key; B gets the very same server connection.
    let a = connect(&url).await;
    let a_pid = backend_pid(&a).await;
    let stale = a.cancel_token();
    drop(a);
    let b = connect(&url).await;
    assert_eq!(
        backend_pid(&b).await,
        a_pid,
        "B re-uses A's server connection"
    );

    let sleeper = tokio::spawn(async move {
        b.query_one(
            "SELECT 'done'::text FROM pg_sleep(2) /* not-a-target */",
            &[],
        )
        .await
        .map(|r| r.get::<_, String>(0))
    });
    wait_running(&su, "not-a-target").await;
    stale.cancel_query(NoTls).await.expect("send stale cancel");
    let r = sleeper.await.expect("task");
    assert_eq!(r.expect("B's query must not be cancelled"), "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_gives_08001() {
    // Nothing listens on port 1.
    let args = pgheal::config::cli::RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some("postgres://app:secret@127.0.0.1:1/appdb".into()),
        ..Default::default()
    };
    let proxy = start_proxy_with(Default::default(), &args).await;
    let err = try_connect(&proxy_url(&proxy))
        .await
        .expect_err("no server to connect to");
    assert_eq!(sqlstate(&err).as_deref(), Some("08001"), "{err}");
    let msg = err.as_db_error().expect("db error").message().to_owned();
    assert!(!msg.contains("secret"), "message leaks the password: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refusing_pgheals_login_is_reported_to_the_client() {
    let pg = start_pg();
    // pgheal logs into the server as app with a wrong password; clients log into pgheal with it.
    let proxy = start_proxy(&pg, |a| {
        a.upstream = Some(pg.url(USER, "not-the-password", DB))
    })
    .await;
    let err = try_connect(&proxy_url_as(&proxy, USER, "not-the-password", DB))
        .await
        .expect_err("the server refuses pgheal");
    // The pooler's failure (08001, issue 14 point 7), with the server's reason, not a 28P01
    // that would blame the client's own password.
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "08001");
    assert_eq!(
        db.message(),
        "pgheal could not log in to the server: password authentication failed for user \"app\""
    );
    // A database the server does not have (pgheal knows it, the server does not).
    let proxy = start_proxy(&pg, |a| a.upstream = Some(pg.url(USER, PASSWORD, "gone"))).await;
    let err = try_connect(&proxy_url_as(&proxy, USER, PASSWORD, "gone"))
        .await
        .expect_err("the server has no such database");
    assert_eq!(sqlstate(&err).as_deref(), Some("3D000"), "{err}");
}
