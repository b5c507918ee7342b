//! Session state in transaction pooling: a temporary table, a WITH HOLD cursor, a session
//! advisory lock or a LISTEN that reached the server keeps its client on the server connection
//! that holds it (pinned) until the client releases it; no other client ever gets that
//! connection meanwhile, and a session that ends pinned closes it.

use crate::common;
use crate::txn_support;

use std::time::Duration;

use common::wire::*;
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::protocol::backend;
use pgheal::proxy::ProxyHandle;
use txn_support::*;

/// Pool of 2; a client waits at most 2 s for a server connection.
async fn setup() -> (TempCluster, ProxyHandle) {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| {
        a.pool_mode = Some("transaction".into());
        a.pool_size = Some(2);
        a.query_wait_timeout = Some(2.0);
    })
    .await;
    (pg, proxy)
}

/// `pgheal_pinned_clients` once the check after `w`'s last transaction is done: pgheal checks
/// the connection right after the client has its answer, and before it reads the client's next
/// message, so one more round trip of `w` is enough.
async fn pinned(p: &ProxyHandle, w: &mut Wire) -> i64 {
    assert_eq!(w.query("SELECT 1").await.last(), Some(&Msg::Ready('I')));
    p.metrics.pinned_clients.get()
}

fn pins(p: &ProxyHandle, state: &str) -> u64 {
    p.metrics.pins.with_label_values(&[state]).get()
}

/// The single row of a query's answer.
async fn row(w: &mut Wire, sql: &str) -> Vec<Option<String>> {
    let msgs = w.query(sql).await;
    match rows(&msgs).as_slice() {
        [r] => r.clone(),
        _ => panic!("{sql}: expected one row, got {msgs:?}"),
    }
}

/// Starts a transaction block on `w` and returns its backend pid (the connection stays held).
async fn hold(w: &mut Wire) -> i32 {
    assert_eq!(w.query("BEGIN").await, complete("BEGIN", 'T'));
    row(w, "SELECT pg_backend_pid()").await[0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

async fn commit(w: &mut Wire) {
    assert_eq!(w.query("COMMIT").await, complete("COMMIT", 'I'));
}

/// While `pid` is pinned and another client holds the pool's other connection, a third
/// client cannot get a server connection: the pinned one is not handed out.
async fn pinned_connection_is_not_handed_out(proxy: &ProxyHandle) {
    let mut third = wire(proxy).await;
    third
        .send(&[pgheal::protocol::encode::query("SELECT 1")])
        .await;
    // The FATAL error is the last message: pgheal closes the connection after it.
    let m = third.recv().await;
    assert!(
        matches!(&m, Msg::Error { code, .. } if code == "08P01"),
        "a third client got a server connection: {m:?}"
    );
}

/// Both server connections of the pool are free (two clients hold them at once), and the
/// pool's connections are `expect` if given.
async fn both_connections_free(proxy: &ProxyHandle, expect: Option<i32>) -> [i32; 2] {
    let router = Router::new(proxy).await;
    if let Some(pid) = expect {
        assert!(router.pids.contains(&pid), "{pid} not in {:?}", router.pids);
    }
    router.pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_table_pins_its_client_until_dropped() {
    let (_pg, proxy) = setup().await;
    let mut a = wire(&proxy).await;
    let mut b = wire(&proxy).await;

    // A temporary table that ends with its transaction pins nothing.
    a.query("BEGIN").await;
    a.query("CREATE TEMP TABLE gone(v int) ON COMMIT DROP")
        .await;
    commit(&mut a).await;
    assert_eq!(pinned(&proxy, &mut a).await, 0);

    let msgs = a
        .query("CREATE TEMP TABLE scratch AS SELECT pg_backend_pid() AS pid")
        .await;
    assert_eq!(msgs, complete("SELECT 1", 'I'));
    assert_eq!(pinned(&proxy, &mut a).await, 1);
    assert_eq!(pins(&proxy, "temp_objects"), 1);
    let pid_a: i32 = row(&mut a, "SELECT pid FROM scratch").await[0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();

    // B runs on the other connection, where the table does not exist.
    let pid_b = hold(&mut b).await;
    assert_ne!(pid_b, pid_a, "B got A's pinned connection");
    assert_eq!(
        row(&mut b, "SELECT to_regclass('pg_temp.scratch') IS NULL").await,
        vec![s("t")]
    );
    // A keeps its table in its next transactions.
    a.query("INSERT INTO scratch VALUES (0)").await;
    assert_eq!(
        row(&mut a, "SELECT count(*) FROM scratch").await,
        vec![s("2")]
    );
    assert_eq!(
        row(&mut a, "SELECT pg_backend_pid()").await,
        vec![s(&pid_a.to_string())]
    );
    pinned_connection_is_not_handed_out(&proxy).await;
    commit(&mut b).await;
    // A statement pgheal answers itself, then the server again: the pinned connection is
    // checked in between and still relays.
    assert_eq!(
        a.query("DEALLOCATE ALL").await,
        complete("DEALLOCATE ALL", 'I')
    );
    assert_eq!(
        row(&mut a, "SELECT count(*) FROM scratch").await,
        vec![s("2")]
    );

    assert_eq!(
        a.query("DROP TABLE scratch").await,
        complete("DROP TABLE", 'I')
    );
    assert_eq!(pinned(&proxy, &mut a).await, 0);
    both_connections_free(&proxy, Some(pid_a)).await;

    // DISCARD TEMP releases too.
    a.query("CREATE TEMP TABLE again(v int)").await;
    assert_eq!(pinned(&proxy, &mut a).await, 1);
    assert_eq!(a.query("DISCARD TEMP").await, complete("DISCARD TEMP", 'I'));
    assert_eq!(pinned(&proxy, &mut a).await, 0);
    assert_eq!(pins(&proxy, "temp_objects"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_with_hold_cursor_pins_its_client_until_closed() {
    let (_pg, proxy) = setup().await;
    let mut a = wire(&proxy).await;
    let mut b = wire(&proxy).await;
    let msgs = a
        .query("DECLARE c CURSOR WITH HOLD FOR SELECT g, pg_backend_pid() FROM generate_series(1, 5) g")
        .await;
    assert_eq!(msgs, complete("DECLARE CURSOR", 'I'));
    assert_eq!(pinned(&proxy, &mut a).await, 1);
    assert_eq!(pins(&proxy, "hold_cursor"), 1);
    let first = rows(&a.query("FETCH 2 FROM c").await);
    assert_eq!(first.len(), 2);
    let pid_a: i32 = first[0][1].as_deref().unwrap().parse().unwrap();

    let pid_b = hold(&mut b).await;
    assert_ne!(pid_b, pid_a);
    assert_eq!(
        row(&mut b, "SELECT count(*) FROM pg_cursors").await,
        vec![s("0")]
    );
    let next: Vec<Option<String>> = rows(&a.query("FETCH 2 FROM c").await)
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(next, vec![s("3"), s("4")]);
    commit(&mut b).await;

    assert_eq!(a.query("CLOSE c").await, complete("CLOSE CURSOR", 'I'));
    assert_eq!(pinned(&proxy, &mut a).await, 0);
    both_connections_free(&proxy, Some(pid_a)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advisory_lock_pins_its_client_until_unlocked() {
    let (_pg, proxy) = setup().await;
    let mut a = wire(&proxy).await;
    let mut b = wire(&proxy).await;
    assert_eq!(
        row(&mut a, "SELECT pg_advisory_lock(42), pg_backend_pid()").await[0],
        s("")
    );
    assert_eq!(pinned(&proxy, &mut a).await, 1);
    assert_eq!(pins(&proxy, "advisory_lock"), 1);
    // Another client cannot take it: it never runs on the connection that holds it.
    assert_eq!(
        row(&mut b, "SELECT pg_try_advisory_lock(42)").await,
        vec![s("f")]
    );
    assert_eq!(
        row(&mut a, "SELECT pg_advisory_unlock(42)").await,
        vec![s("t")]
    );
    assert_eq!(pinned(&proxy, &mut a).await, 0);
    assert_eq!(
        row(
            &mut b,
            "SELECT pg_try_advisory_lock(42), pg_advisory_unlock(42)"
        )
        .await,
        vec![s("t"), s("t")]
    );

    // Through the extended protocol, with the statement prepared in an earlier batch.
    let msgs = run_batch(
        &mut a,
        &[parse("lk", "SELECT pg_advisory_lock($1::bigint)")],
    )
    .await;
    assert_eq!(msgs, vec![Msg::ParseComplete, Msg::Ready('I')]);
    assert_eq!(pinned(&proxy, &mut a).await, 0, "preparing takes no lock");
    let msgs = bind_execute(&mut a, "lk", &["7"]).await;
    assert_eq!(msgs, one_row(vec![s("")]));
    assert_eq!(pinned(&proxy, &mut a).await, 1);
    assert_eq!(
        row(&mut b, "SELECT pg_try_advisory_lock(7)").await,
        vec![s("f")]
    );
    // DISCARD ALL, which pgheal answers itself, releases the lock on the server too.
    assert_eq!(a.query("DISCARD ALL").await, complete("DISCARD ALL", 'I'));
    assert_eq!(pinned(&proxy, &mut a).await, 0);
    assert_eq!(
        row(
            &mut b,
            "SELECT pg_try_advisory_lock(7), pg_advisory_unlock(7)"
        )
        .await,
        vec![s("t"), s("t")]
    );
}

/// A client that leaves while pinned: its connection is closed, so no one inherits its
/// temporary table or lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_ends_pinned_closes_its_connection() {
    let (_pg, proxy) = setup().await;
    let mut a = wire(&proxy).await;
    let pid_a: i32 = row(
        &mut a,
        "CREATE TEMP TABLE leftover AS SELECT pg_backend_pid() AS pid; SELECT pid FROM leftover",
    )
    .await[0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    row(&mut a, "SELECT pg_advisory_lock(9)").await;
    assert_eq!(pinned(&proxy, &mut a).await, 1);
    a.send(&[pgheal::protocol::encode::terminate()]).await;
    drop(a);
    let metrics = proxy.metrics.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let m = metrics.clone();
            async move { m.pinned_clients.get() == 0 }
        })
        .await
    );
    let mut router = Router::new(&proxy).await;
    assert!(
        !router.pids.contains(&pid_a),
        "A's connection went back to the pool"
    );
    let mut b = wire(&proxy).await;
    for pid in router.pids {
        router.route_to(pid).await;
        assert_eq!(
            row(
                &mut b,
                "SELECT pg_backend_pid(), to_regclass('pg_temp.leftover') IS NULL, \
                 pg_try_advisory_lock(9), pg_advisory_unlock(9)"
            )
            .await,
            vec![s(&pid.to_string()), s("t"), s("t"), s("t")]
        );
    }
    router.release().await;
    assert_eq!(pinned(&proxy, &mut b).await, 0);
}

/// LISTEN through the extended protocol (as pgjdbc sends it) reaches the server: the client
/// keeps that connection and gets its notifications from it, until it unlistens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_on_the_server_pins_and_delivers() {
    let (pg, proxy) = setup().await;
    let mut a = wire(&proxy).await;
    let extended = |sql: &str| vec![parse("", sql), bind("", "", &[], &[]), execute("")];
    let msgs = run_batch(&mut a, &extended("LISTEN ext")).await;
    assert_eq!(
        msgs,
        vec![
            Msg::ParseComplete,
            Msg::BindComplete,
            Msg::CommandComplete("LISTEN".into()),
            Msg::Ready('I')
        ]
    );
    assert_eq!(pinned(&proxy, &mut a).await, 1);
    assert_eq!(pins(&proxy, "listen"), 1);
    let mut direct = wire_direct(&pg).await;
    direct.query("NOTIFY ext, 'from the server'").await;
    let f = loop {
        let f = a.frame().await;
        if f.tag != backend::PARAMETER_STATUS && f.tag != backend::NOTICE_RESPONSE {
            break f;
        }
    };
    assert_eq!(f.tag, backend::NOTIFICATION_RESPONSE, "{:?}", decode(&f));
    let (_, channel, payload) = backend::decode_notification(&f).unwrap();
    assert_eq!((channel, payload), (&b"ext"[..], &b"from the server"[..]));

    let msgs = run_batch(&mut a, &extended("UNLISTEN ext")).await;
    assert_eq!(msgs.last(), Some(&Msg::Ready('I')));
    assert_eq!(pinned(&proxy, &mut a).await, 0);
    both_connections_free(&proxy, None).await;
}
