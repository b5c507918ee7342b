//! LISTEN/NOTIFY in transaction pooling: pgheal holds a client's LISTEN on a listening
//! connection of its own, so notifications reach the client between its transactions even
//! though it has no server connection then, while other clients run transactions on the pooled
//! connections (which never listen). Raw protocol clients control every message; one scenario
//! runs node-postgres, a common LISTEN user, through pgheal and straight to PostgreSQL.

use crate::common;
use crate::txn_support;

use std::time::Duration;

use common::drivers::{run_script, Driver};
use common::wire::*;
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::protocol::backend;
use pgheal::proxy::ProxyHandle;
use txn_support::*;

async fn setup() -> (TempCluster, ProxyHandle) {
    let pg = start_pg();
    let proxy = txn_proxy(&pg, 2).await;
    (pg, proxy)
}

/// A notification as a client receives it: (channel, payload).
type Note = (String, String);

fn note(f: &pgheal::protocol::Frame) -> Note {
    let (_, channel, payload) = backend::decode_notification(f).expect("NotificationResponse");
    (
        String::from_utf8_lossy(channel).into_owned(),
        String::from_utf8_lossy(payload).into_owned(),
    )
}

fn n(channel: &str, payload: &str) -> Note {
    (channel.to_owned(), payload.to_owned())
}

/// The next message, which must be a notification (parameter statuses and notices skipped).
async fn next_note(w: &mut Wire) -> Note {
    loop {
        let f = w.frame().await;
        match f.tag {
            backend::NOTIFICATION_RESPONSE => return note(&f),
            backend::PARAMETER_STATUS | backend::NOTICE_RESPONSE => {}
            _ => panic!("expected a notification, got {:?}", decode(&f)),
        }
    }
}

/// A simple query's answer up to ReadyForQuery, and the notifications that came before it.
async fn query_noting(w: &mut Wire, sql: &str) -> (Vec<Msg>, Vec<Note>) {
    w.send(&[pgheal::protocol::encode::query(sql)]).await;
    let (mut msgs, mut notes) = (Vec::new(), Vec::new());
    loop {
        let f = w.frame().await;
        match f.tag {
            backend::NOTIFICATION_RESPONSE => notes.push(note(&f)),
            backend::PARAMETER_STATUS | backend::NOTICE_RESPONSE => {}
            _ => {
                let m = decode(&f);
                let done = matches!(m, Msg::Ready(_));
                msgs.push(m);
                if done {
                    return (msgs, notes);
                }
            }
        }
    }
}

/// `sql` through `w`, which must complete with `tag` (after its rows, if any) and leave status
/// `status`, with no notification before its ReadyForQuery.
async fn run_quiet(w: &mut Wire, sql: &str, tag: &str, status: char) {
    let (msgs, notes) = query_noting(w, sql).await;
    let end = msgs.len().saturating_sub(2);
    assert!(
        msgs[..end]
            .iter()
            .all(|m| matches!(m, Msg::RowDescription(_) | Msg::DataRow(_))),
        "{sql}: {msgs:?}"
    );
    assert_eq!(msgs[end..], complete(tag, status), "{sql}");
    assert!(notes.is_empty(), "{sql}: notifications inside: {notes:?}");
}

/// Channels the server connection with backend `pid` listens to, seen by `w` routed there.
async fn listening_on(router: &mut Router, w: &mut Wire, pid: i32) -> String {
    router.route_to(pid).await;
    let msgs = w
        .query("SELECT pg_backend_pid(), string_agg(c, ',') FROM pg_listening_channels() c")
        .await;
    let row = &rows(&msgs)[0];
    assert_eq!(row[0].as_deref(), Some(pid.to_string().as_str()));
    row[1].clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_a_listener_between_its_transactions() {
    let (pg, proxy) = setup().await;
    let mut router = Router::new(&proxy).await;
    let pids = router.pids;
    let mut listener = wire(&proxy).await;
    let mut other = wire(&proxy).await;
    let mut notifier = wire(&proxy).await;

    run_quiet(&mut listener, "LISTEN jobs", "LISTEN", 'I').await;
    // Other clients run transactions on both pooled connections; neither listens.
    for pid in pids {
        assert_eq!(
            listening_on(&mut router, &mut other, pid).await,
            "",
            "a pooled server connection listens"
        );
    }
    router.release().await;

    // Through pgheal (on whichever pooled connection), and straight to the server.
    run_quiet(&mut notifier, "NOTIFY jobs, 'via pgheal'", "NOTIFY", 'I').await;
    assert_eq!(next_note(&mut listener).await, n("jobs", "via pgheal"));
    let mut direct = wire_direct(&pg).await;
    direct.query("NOTIFY jobs, 'direct'").await;
    assert_eq!(next_note(&mut listener).await, n("jobs", "direct"));

    // Committed inside another client's transaction block: arrives at its commit.
    run_quiet(&mut notifier, "BEGIN", "BEGIN", 'T').await;
    run_quiet(
        &mut notifier,
        "SELECT pg_notify('jobs', 'from a block')",
        "SELECT 1",
        'T',
    )
    .await;
    run_quiet(&mut notifier, "COMMIT", "COMMIT", 'I').await;
    assert_eq!(next_note(&mut listener).await, n("jobs", "from a block"));

    // The listener runs transactions of its own on the pooled connections and keeps getting
    // them; a NOTIFY it sends itself comes back to it, as it would straight from PostgreSQL.
    for pid in [pids[0], pids[1]] {
        router.route_to(pid).await;
        let (msgs, _) = query_noting(&mut listener, "SELECT pg_backend_pid()").await;
        assert_eq!(rows(&msgs), vec![vec![s(&pid.to_string())]]);
    }
    router.release().await;
    run_quiet(&mut listener, "NOTIFY jobs, 'to myself'", "NOTIFY", 'I').await;
    assert_eq!(next_note(&mut listener).await, n("jobs", "to myself"));
    assert_eq!(proxy.metrics.listen_clients.get(), 1);
    assert_eq!(proxy.metrics.listen_channels.get(), 1);
}

/// PostgreSQL delivers notifications only outside a transaction: so does pgheal, right after
/// the ReadyForQuery that ends the listener's transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_wait_for_the_end_of_the_listeners_transaction() {
    let (_pg, proxy) = setup().await;
    let mut listener = wire(&proxy).await;
    let mut notifier = wire(&proxy).await;
    run_quiet(&mut listener, "LISTEN jobs", "LISTEN", 'I').await;
    run_quiet(&mut listener, "BEGIN", "BEGIN", 'T').await;
    run_quiet(&mut notifier, "NOTIFY jobs, 'during'", "NOTIFY", 'I').await;
    // Time for a wrong delivery to show up inside the block.
    let (msgs, notes) = query_noting(&mut listener, "SELECT pg_sleep(0.3)").await;
    assert_eq!(msgs.last(), Some(&Msg::Ready('T')));
    assert!(
        notes.is_empty(),
        "delivered inside a transaction: {notes:?}"
    );
    run_quiet(&mut listener, "SELECT 1", "SELECT 1", 'T').await;
    run_quiet(&mut listener, "COMMIT", "COMMIT", 'I').await;
    assert_eq!(next_note(&mut listener).await, n("jobs", "during"));
}

/// LISTEN inside a transaction block counts only if the block commits; inside a failed block
/// the server refuses it, as it would straight from PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_in_a_block_takes_effect_at_commit() {
    let (pg, proxy) = setup().await;
    let mut listener = wire(&proxy).await;
    let mut direct = wire_direct(&pg).await;

    run_quiet(&mut listener, "BEGIN", "BEGIN", 'T').await;
    run_quiet(&mut listener, "LISTEN rolled_back", "LISTEN", 'T').await;
    run_quiet(&mut listener, "ROLLBACK", "ROLLBACK", 'I').await;

    run_quiet(&mut listener, "BEGIN", "BEGIN", 'T').await;
    run_quiet(&mut listener, "LISTEN committed", "LISTEN", 'T').await;
    // Not yet: the block has not committed.
    direct.query("NOTIFY committed, 'too early'").await;
    run_quiet(&mut listener, "COMMIT", "COMMIT", 'I').await;

    run_quiet(&mut listener, "BEGIN", "BEGIN", 'T').await;
    let (msgs, _) = query_noting(&mut listener, "SELECT 1/0").await;
    assert_eq!(errors(&msgs), vec!["22012"]);
    let (msgs, _) = query_noting(&mut listener, "LISTEN failed_block").await;
    assert_eq!(errors(&msgs), vec!["25P02"], "{msgs:?}");
    assert_eq!(msgs.last(), Some(&Msg::Ready('E')));
    run_quiet(&mut listener, "ROLLBACK", "ROLLBACK", 'I').await;

    for ch in ["rolled_back", "failed_block", "committed"] {
        direct.query(&format!("NOTIFY {ch}, 'x'")).await;
    }
    // Only the committed channel's notification arrives (and nothing sent before the commit).
    assert_eq!(next_note(&mut listener).await, n("committed", "x"));
    // COMMIT AND CHAIN applies the block's LISTEN too.
    run_quiet(&mut listener, "BEGIN", "BEGIN", 'T').await;
    run_quiet(&mut listener, "LISTEN chained", "LISTEN", 'T').await;
    run_quiet(&mut listener, "COMMIT AND CHAIN", "COMMIT", 'T').await;
    run_quiet(&mut listener, "COMMIT", "COMMIT", 'I').await;
    direct.query("NOTIFY chained, 'y'").await;
    assert_eq!(next_note(&mut listener).await, n("chained", "y"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisten_and_disconnect_clean_up() {
    let (pg, proxy) = setup().await;
    let mut a = wire(&proxy).await;
    let mut b = wire(&proxy).await;
    let mut direct = wire_direct(&pg).await;

    let (msgs, _) = query_noting(&mut a, "LISTEN one; LISTEN \"Two\"").await;
    assert_eq!(
        msgs,
        vec![
            Msg::CommandComplete("LISTEN".into()),
            Msg::CommandComplete("LISTEN".into()),
            Msg::Ready('I')
        ]
    );
    run_quiet(&mut a, "UNLISTEN one", "UNLISTEN", 'I').await;
    direct.query("NOTIFY one, '1'").await;
    direct.query("NOTIFY \"Two\", '2'").await;
    assert_eq!(next_note(&mut a).await, n("Two", "2"));

    run_quiet(&mut a, "UNLISTEN *", "UNLISTEN", 'I').await;
    run_quiet(&mut b, "LISTEN \"Two\"", "LISTEN", 'I').await;
    direct.query("NOTIFY \"Two\", '3'").await;
    assert_eq!(next_note(&mut b).await, n("Two", "3"));
    // A unlistened: the next notification it gets is the one it listens to now.
    run_quiet(&mut a, "LISTEN three", "LISTEN", 'I').await;
    direct.query("NOTIFY three, '4'").await;
    assert_eq!(next_note(&mut a).await, n("three", "4"));
    assert_eq!(proxy.metrics.listen_clients.get(), 2);
    assert_eq!(proxy.metrics.listen_channels.get(), 2);

    // DISCARD ALL unlistens too.
    run_quiet(&mut a, "DISCARD ALL", "DISCARD ALL", 'I').await;
    assert_eq!(proxy.metrics.listen_clients.get(), 1);

    // Disconnecting unlistens: pgheal's listening connection ends up listening to nothing.
    drop(b);
    let metrics = proxy.metrics.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let m = metrics.clone();
            async move { m.listen_clients.get() == 0 && m.listen_channels.get() == 0 }
        })
        .await,
        "listen_clients={} listen_channels={}",
        metrics.listen_clients.get(),
        metrics.listen_channels.get()
    );
    // NOTIFY still works, for a new listener too.
    run_quiet(&mut a, "NOTIFY \"Two\", 'nobody'", "NOTIFY", 'I').await;
    let mut c = wire(&proxy).await;
    run_quiet(&mut c, "LISTEN \"Two\"", "LISTEN", 'I').await;
    direct.query("NOTIFY \"Two\", '5'").await;
    assert_eq!(next_note(&mut c).await, n("Two", "5"));
    // The listening connection is one, named for what it is; no pooled connection listens.
    let admin = admin_client(&pg).await;
    let listening: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgheal listen'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(listening, 1);
    let mut router = Router::new(&proxy).await;
    for pid in router.pids {
        let mut w = wire(&proxy).await;
        assert_eq!(listening_on(&mut router, &mut w, pid).await, "");
    }
    router.release().await;
}

/// Many notifications at once, from one transaction and from many, all arrive in order, also
/// when they pile up while the listener is inside a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_arrives_complete_and_in_order() {
    let (pg, proxy) = setup().await;
    let mut listener = wire(&proxy).await;
    let mut notifier = wire(&proxy).await;
    run_quiet(&mut listener, "LISTEN burst", "LISTEN", 'I').await;

    let (msgs, _) = query_noting(
        &mut notifier,
        "SELECT count(pg_notify('burst', g::text)) FROM generate_series(1, 5000) g",
    )
    .await;
    assert_eq!(rows(&msgs), vec![vec![s("5000")]]);
    let mut direct = wire_direct(&pg).await;
    for i in 5001..=5200 {
        direct.query(&format!("NOTIFY burst, '{i}'")).await;
    }
    for i in 1..=5200 {
        assert_eq!(next_note(&mut listener).await, n("burst", &i.to_string()));
    }

    run_quiet(&mut listener, "BEGIN", "BEGIN", 'T').await;
    query_noting(
        &mut notifier,
        "SELECT count(pg_notify('burst', 'late ' || g)) FROM generate_series(1, 3000) g",
    )
    .await;
    run_quiet(&mut listener, "SELECT 1", "SELECT 1", 'T').await;
    run_quiet(&mut listener, "COMMIT", "COMMIT", 'I').await;
    for i in 1..=3000 {
        assert_eq!(
            next_note(&mut listener).await,
            n("burst", &format!("late {i}"))
        );
    }
    assert!(proxy.metrics.notifications.get() >= 8200);
}

/// When the listening connection dies, notifications may be lost: its clients are closed with
/// an error saying so (never left connected and silently missing some), and the next LISTEN
/// opens a new listening connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_listening_connection_closes_its_clients() {
    let (pg, proxy) = setup().await;
    let mut listener = wire(&proxy).await;
    let mut bystander = wire(&proxy).await;
    run_quiet(&mut listener, "LISTEN jobs", "LISTEN", 'I').await;
    let admin = admin_client(&pg).await;
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'pgheal listen'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    let f = listener.frame().await;
    match decode(&f) {
        Msg::Error { code, message, .. } => {
            assert_eq!(code, "08006");
            assert!(
                message.contains("notifications may have been missed"),
                "{message}"
            );
        }
        m => panic!("expected a FATAL error, got {m:?}"),
    }
    assert_eq!(
        proxy
            .metrics
            .listen_clients_closed
            .with_label_values(&["connection_lost"])
            .get(),
        1
    );
    // A client that never listened is not affected.
    run_quiet(&mut bystander, "SELECT 1", "SELECT 1", 'I').await;
    // A new listener gets a new listening connection.
    let mut again = wire(&proxy).await;
    run_quiet(&mut again, "LISTEN jobs", "LISTEN", 'I').await;
    run_quiet(&mut bystander, "NOTIFY jobs, 'after'", "NOTIFY", 'I').await;
    assert_eq!(next_note(&mut again).await, n("jobs", "after"));
}

fn node_listen() -> Driver<()> {
    Driver {
        env: vec![("EXPECTED", "3")],
        ..Driver::node("node-postgres", "tests/drivers/node/pg_listen.js", ())
    }
}

/// node-postgres (`client.on('notification')`) gets the same notifications, in the same order,
/// through pgheal in transaction pooling as straight from PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_listens_through_transaction_pooling() {
    let driver = node_listen();
    if !driver.ready_or_skip().await {
        return;
    }
    let pg = std::sync::Arc::new(start_pg());
    let proxy = txn_proxy(&pg, 2).await;
    let expected: Vec<String> = [
        "listen: ok",
        "READY",
        "notification: jobs one",
        "notification: jobs two",
        "notification: Mixed Case three",
        "query: 42",
        "unlisten: ok",
        "DONE",
    ]
    .map(String::from)
    .to_vec();
    for (target, port) in [
        ("PostgreSQL", pg.port()),
        ("pgheal (transaction pooling)", proxy.addr.port()),
    ] {
        let (run, _) = run_script(&driver, port, target.into(), async || {
            let mut same = Wire::connect(port, USER, PASSWORD, DB).await;
            same.query("NOTIFY jobs, 'one'").await;
            let mut direct = wire_direct(&pg).await;
            direct.query("NOTIFY jobs, 'two'").await;
            same.query("BEGIN").await;
            same.query("SELECT pg_notify('Mixed Case', 'three')").await;
            same.query("COMMIT").await;
        })
        .await;
        run.assert_ok(&expected, target);
    }
    assert_eq!(proxy.metrics.notifications.get(), 3);
}
