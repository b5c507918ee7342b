//! PgBouncer's session timeouts against real PostgreSQL, with short values: `query_timeout`,
//! `idle_transaction_timeout`, `transaction_timeout`, `client_idle_timeout` and
//! `query_wait_notify`. Each checks what the client is told (PgBouncer's FATAL 08P01 and its
//! words), what the server connection is left as (pg_stat_activity, through a direct
//! connection), that another client of the same pool keeps working, and the counter
//! `pgheal_timeouts_total`. Changing a timeout with the console's `SET` is in
//! `set_idle_transaction_timeout_reaches_new_transactions`.

use crate::common;

use std::time::Duration;

use common::*;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;
use pgheal::proxy::ProxyHandle;
use tokio_postgres::AsyncMessage;

/// pgheal in `mode` with the timeouts `tweak` sets.
async fn proxy(
    pg: &pgheal::cluster::TempCluster,
    mode: &str,
    pool_size: usize,
    tweak: impl FnOnce(&mut pgheal::config::file::General),
) -> ProxyHandle {
    let mut file = FileConfig::default();
    tweak(&mut file.pgheal);
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(pg.url(USER, PASSWORD, DB)),
        pool_mode: Some(mode.into()),
        pool_size: Some(pool_size),
        ..Default::default()
    };
    start_proxy_with(file, &args).await
}

/// What the connection task of a client saw: its notices, and how it ended.
enum Seen {
    Notice(String),
    /// The connection ended; the (SQLSTATE, severity, message) of the error that ended it.
    Ended(Option<(String, String, String)>),
}

/// A client whose connection task reports notices and its end.
async fn client(
    url: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<Seen>,
) {
    let (client, mut conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notice(n))) => {
                    let _ = tx.send(Seen::Notice(n.message().to_owned()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = tx.send(Seen::Ended(db_error(&e)));
                    break;
                }
                None => {
                    let _ = tx.send(Seen::Ended(None));
                    break;
                }
            }
        }
    });
    (client, rx)
}

fn db_error(e: &tokio_postgres::Error) -> Option<(String, String, String)> {
    e.as_db_error().map(|d| {
        (
            d.code().code().to_owned(),
            d.severity().to_owned(),
            d.message().to_owned(),
        )
    })
}

/// The error that ends the connection, from the failed query or from the connection task
/// (tokio-postgres hands an unsolicited FATAL to whichever is waiting), within 15 s.
async fn fatal_of(
    query: Option<Result<(), tokio_postgres::Error>>,
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>,
) -> (String, String, String) {
    if let Some(Err(e)) = &query {
        if let Some(d) = db_error(e) {
            return d;
        }
    }
    if let Some(Ok(())) = query {
        panic!("the query succeeded; a timeout should have ended it");
    }
    loop {
        let got = tokio::time::timeout(Duration::from_secs(15), seen.recv())
            .await
            .expect("the connection ends within 15 s");
        match got {
            Some(Seen::Ended(Some(d))) => return d,
            Some(Seen::Ended(None)) | None => {
                panic!("the connection ended without an ErrorResponse")
            }
            Some(Seen::Notice(_)) => {}
        }
    }
}

fn assert_pgbouncer_fatal(got: &(String, String, String), message: &str) {
    assert_eq!(
        got,
        &("08P01".to_owned(), "FATAL".to_owned(), message.to_owned()),
        "PgBouncer's FATAL 08P01 {message}"
    );
}

/// Backends of the test user in `state` (pg_stat_activity), e.g. `active`.
async fn backends_in(admin: &tokio_postgres::Client, state: &str) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND datname = $2 AND state = $3",
            &[&USER, &DB, &state],
        )
        .await
        .expect("pg_stat_activity")
        .get(0)
}

/// Within 10 s, no backend of the test user is running a query or idle in a transaction.
async fn assert_servers_clean(admin: &tokio_postgres::Client) {
    let clean = eventually(Duration::from_secs(10), || async {
        backends_in(admin, "active").await == 0
            && backends_in(admin, "idle in transaction").await == 0
            && backends_in(admin, "idle in transaction (aborted)").await == 0
    })
    .await;
    assert!(
        clean,
        "a backend still runs the query or holds the transaction"
    );
}

fn fired(p: &ProxyHandle, timeout: &str) -> u64 {
    p.metrics
        .timeouts
        .with_label_values(&[DB, USER, timeout])
        .get()
}

/// Another client of the same pool works.
async fn assert_pool_works(p: &ProxyHandle) {
    let other = connect(&proxy_url(p)).await;
    let n: i32 = tokio::time::timeout(
        Duration::from_secs(15),
        other.query_one("SELECT 41 + 1", &[]),
    )
    .await
    .expect("another client is answered within 15 s")
    .expect("another client's query")
    .get(0);
    assert_eq!(n, 42);
}

async fn query_timeout_in(mode: &str) {
    let pg = start_pg();
    let admin = admin_client(&pg).await;
    let p = proxy(&pg, mode, 2, |g| g.query_timeout = Some(0.5)).await;
    let (c, mut seen) = client(&proxy_url(&p)).await;
    // A quick query is not touched.
    c.simple_query("SELECT 1").await.expect("a quick query");
    let slow = tokio::time::timeout(
        Duration::from_secs(15),
        c.batch_execute("SELECT pg_sleep(30)"),
    )
    .await
    .expect("the slow query ends within 15 s");
    assert_pgbouncer_fatal(&fatal_of(Some(slow), &mut seen).await, "query timeout");
    // The query was cancelled and its connection closed, not left running.
    assert_servers_clean(&admin).await;
    assert_eq!(fired(&p, "query_timeout"), 1);
    assert_pool_works(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_session_pooling() {
    query_timeout_in("session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_transaction_pooling() {
    query_timeout_in("transaction").await;
}

async fn idle_transaction_timeout_in(mode: &str) {
    let pg = start_pg();
    let admin = admin_client(&pg).await;
    let p = proxy(&pg, mode, 2, |g| g.idle_transaction_timeout = Some(0.5)).await;
    let (c, mut seen) = client(&proxy_url(&p)).await;
    c.batch_execute("BEGIN; CREATE TEMP TABLE held (n int)")
        .await
        .expect("open a transaction");
    assert_pgbouncer_fatal(&fatal_of(None, &mut seen).await, "idle transaction timeout");
    assert_servers_clean(&admin).await;
    assert_eq!(fired(&p, "idle_transaction_timeout"), 1);
    assert_eq!(fired(&p, "client_idle_timeout"), 0);
    assert_pool_works(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_timeout_session_pooling() {
    idle_transaction_timeout_in("session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_transaction_timeout_transaction_pooling() {
    idle_transaction_timeout_in("transaction").await;
}

/// A transaction that keeps its client busy (no idle moment long enough for anything else)
/// is ended by `transaction_timeout`; a query running at that moment is cancelled.
async fn transaction_timeout_in(mode: &str) {
    let pg = start_pg();
    let admin = admin_client(&pg).await;
    let p = proxy(&pg, mode, 2, |g| {
        g.transaction_timeout = Some(1.0);
        g.idle_transaction_timeout = Some(5.0);
        g.query_timeout = Some(5.0);
    })
    .await;
    let (c, mut seen) = client(&proxy_url(&p)).await;
    // Short transactions are not touched.
    for _ in 0..3 {
        c.batch_execute("BEGIN; SELECT 1; COMMIT")
            .await
            .expect("a short transaction");
    }
    c.batch_execute("BEGIN").await.expect("BEGIN");
    let slow = tokio::time::timeout(
        Duration::from_secs(15),
        c.batch_execute("SELECT pg_sleep(30)"),
    )
    .await
    .expect("the slow query ends within 15 s");
    assert_pgbouncer_fatal(
        &fatal_of(Some(slow), &mut seen).await,
        "transaction timeout",
    );
    assert_servers_clean(&admin).await;
    assert_eq!(fired(&p, "transaction_timeout"), 1);
    assert_eq!(fired(&p, "query_timeout"), 0);
    assert_pool_works(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_timeout_session_pooling() {
    transaction_timeout_in("session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_timeout_transaction_pooling() {
    transaction_timeout_in("transaction").await;
}

/// `client_idle_timeout` closes an idle client; its server connection, at rest, is kept (in
/// transaction pooling the client held none; in session pooling it goes back to the pool).
async fn client_idle_timeout_in(mode: &str) {
    let pg = start_pg();
    let admin = admin_client(&pg).await;
    let p = proxy(&pg, mode, 1, |g| g.client_idle_timeout = Some(0.5)).await;
    let (c, mut seen) = client(&proxy_url(&p)).await;
    let pid = backend_pid(&c).await;
    assert_pgbouncer_fatal(&fatal_of(None, &mut seen).await, "client_idle_timeout");
    assert_eq!(fired(&p, "client_idle_timeout"), 1);
    // The only server connection was not closed: the next client gets it.
    let other = connect(&proxy_url(&p)).await;
    assert_eq!(backend_pid(&other).await, pid, "the same server connection");
    assert!(backend_alive(&admin, pid).await);
    assert_servers_clean(&admin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_session_pooling() {
    client_idle_timeout_in("session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_transaction_pooling() {
    client_idle_timeout_in("transaction").await;
}

/// Busy clients are not idle: a client that keeps sending queries more often than
/// `client_idle_timeout` stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_idle_timeout_spares_an_active_client() {
    let pg = start_pg();
    let p = proxy(&pg, "transaction", 2, |g| g.client_idle_timeout = Some(1.0)).await;
    let c = connect(&proxy_url(&p)).await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.simple_query("SELECT 1")
            .await
            .expect("an active client stays");
    }
    assert_eq!(fired(&p, "client_idle_timeout"), 0);
}

/// `query_wait_notify`: a client queued behind the only server connection gets PgBouncer's
/// NOTICE once, then its answer when the connection frees up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_wait_notify_tells_a_queued_client() {
    let pg = start_pg();
    let p = proxy(&pg, "transaction", 1, |g| g.query_wait_notify = Some(1.0)).await;
    let holder = connect(&proxy_url(&p)).await;
    let (waiter, mut seen) = client(&proxy_url(&p)).await;
    holder.batch_execute("BEGIN").await.expect("BEGIN");
    let query = tokio::spawn(async move {
        let r: i32 = waiter
            .query_one("SELECT 7", &[])
            .await
            .expect("the queued query")
            .get(0);
        r
    });
    let notice = tokio::time::timeout(Duration::from_secs(15), seen.recv())
        .await
        .expect("a notice within 15 s");
    match notice {
        Some(Seen::Notice(m)) => assert_eq!(
            m,
            "No server connection available in postgres backend, client being queued"
        ),
        _ => panic!("expected PgBouncer's NOTICE"),
    }
    holder.batch_execute("COMMIT").await.expect("COMMIT");
    let got = tokio::time::timeout(Duration::from_secs(15), query)
        .await
        .expect("the queued query is answered within 15 s")
        .expect("the query task");
    assert_eq!(got, 7);
    // (The client was dropped with its task: its connection's end may follow.)
    while let Ok(m) = seen.try_recv() {
        assert!(!matches!(m, Seen::Notice(_)), "one notice only");
    }
}

/// The binary run with a pgbouncer.ini: `SET idle_transaction_timeout` in the console reaches
/// a session already logged in, at its next transaction; `SHOW CONFIG` shows the value, and the
/// operator log says why the client was closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_idle_transaction_timeout_reaches_new_transactions() {
    use common::bin::{pgheal_cmd, send_signal};
    use common::certs::Dir;
    use common::console::named_rows;

    let pg = start_pg();
    let admin = admin_client(&pg).await;
    let dir = Dir::new("timeouts-set");
    let port = free_port();
    let userlist = dir.write(
        "userlist.txt",
        &format!("\"{USER}\" \"{PASSWORD}\"\n\"admin\" \"admin-pw\"\n"),
    );
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\nappdb = host=127.0.0.1 port={} dbname=appdb user=app password=secret\n\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = md5\n\
             auth_file = {}\npool_mode = transaction\nadmin_users = admin\n",
            pg.port(),
            userlist.display()
        ),
    );
    let mut cmd = pgheal_cmd();
    cmd.arg(&ini);
    let (mut child, log) = spawn_logging(cmd);
    let url = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{DB}");
    let console_url = format!("postgres://admin:admin-pw@127.0.0.1:{port}/pgbouncer");
    let up = eventually(Duration::from_secs(20), || async {
        try_connect(&console_url).await.is_ok()
    })
    .await;
    assert!(up, "pgheal accepts connections");

    let (c, mut seen) = client(&url).await;
    // Off by default: a transaction may stay idle.
    c.batch_execute("BEGIN").await.expect("BEGIN");
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.batch_execute("COMMIT")
        .await
        .expect("COMMIT after an idle moment");

    let console = connect(&console_url).await;
    console
        .simple_query("SET idle_transaction_timeout = '0.5'")
        .await
        .expect("SET idle_transaction_timeout");
    let rows = named_rows(
        &console
            .simple_query("SHOW CONFIG")
            .await
            .expect("SHOW CONFIG"),
    );
    let row = rows
        .iter()
        .find(|r| {
            r.iter()
                .any(|(k, v)| k == "key" && v.as_deref() == Some("idle_transaction_timeout"))
        })
        .expect("SHOW CONFIG lists idle_transaction_timeout");
    let value = |name: &str| {
        row.iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(value("value"), "0.5");
    assert_eq!(value("changeable"), "yes");

    // The same session's next transaction is held to it.
    c.batch_execute("BEGIN").await.expect("BEGIN");
    assert_pgbouncer_fatal(&fatal_of(None, &mut seen).await, "idle transaction timeout");
    assert_servers_clean(&admin).await;
    let other = connect(&url).await;
    other
        .simple_query("SELECT 1")
        .await
        .expect("another client");

    send_signal(child.id().expect("pid"), "QUIT");
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("pgheal exits after SIGQUIT");
    let log = tokio::time::timeout(Duration::from_secs(5), log)
        .await
        .expect("the log is read")
        .expect("the log task");
    assert!(
        log.contains("closing because: idle transaction timeout"),
        "the operator log names the timeout:\n{log}"
    );
}

/// A user's own `idle_transaction_timeout` (`[user_settings.app]`, pgbouncer.ini `[users]`)
/// wins over the global one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_own_timeout_wins_over_the_global_one() {
    let pg = start_pg();
    let admin = admin_client(&pg).await;
    let mut file = FileConfig::default();
    file.pgheal.idle_transaction_timeout = Some(60.0);
    file.user_settings.insert(
        USER.into(),
        pgheal::config::file::FileUserSettings {
            idle_transaction_timeout: Some(0.5),
            ..Default::default()
        },
    );
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(pg.url(USER, PASSWORD, DB)),
        pool_mode: Some("transaction".into()),
        ..Default::default()
    };
    let p = start_proxy_with(file, &args).await;
    let (c, mut seen) = client(&proxy_url(&p)).await;
    c.batch_execute("BEGIN").await.expect("BEGIN");
    assert_pgbouncer_fatal(&fatal_of(None, &mut seen).await, "idle transaction timeout");
    assert_servers_clean(&admin).await;
    assert_eq!(fired(&p, "idle_transaction_timeout"), 1);
}

/// `query_timeout` also bounds a query that waits for a server connection (transaction
/// pooling, the pool busy): PgBouncer's `FATAL 08P01 query_timeout`, and the client holding the
/// connection is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_timeout_bounds_the_wait_for_a_server_connection() {
    let pg = start_pg();
    let p = proxy(&pg, "transaction", 1, |g| {
        g.query_timeout = Some(1.0);
        g.query_wait_timeout = Some(60.0);
    })
    .await;
    let holder = connect(&proxy_url(&p)).await;
    holder.batch_execute("BEGIN").await.expect("BEGIN");
    let (waiter, mut seen) = client(&proxy_url(&p)).await;
    let waited = tokio::time::timeout(Duration::from_secs(15), waiter.batch_execute("SELECT 1"))
        .await
        .expect("the queued query ends within 15 s");
    assert_pgbouncer_fatal(&fatal_of(Some(waited), &mut seen).await, "query_timeout");
    assert_eq!(fired(&p, "query_timeout"), 1);
    holder
        .batch_execute("SELECT 1; COMMIT")
        .await
        .expect("the holder's transaction goes on");
}
