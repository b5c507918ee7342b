//! What a client is told about its settings in transaction pooling: a `SET` of a reported
//! parameter reaches it as ParameterStatus and stays true on every server connection it is
//! moved to (libpq escapes strings for the `standard_conforming_strings` it was told: a wrong
//! value is an injection risk); a client moved to a connection that reports other values is
//! told before its answers; a startup parameter the server rejects refuses the login with
//! FATAL, as PostgreSQL does.

use crate::common;
use crate::txn_support;

use std::str::FromStr;

use common::drivers::{run_script, Driver};
use common::login::options_error;
use common::wire::*;
use common::*;
use pgheal::protocol::{backend, encode};
use txn_support::*;

/// A message of an answer, ParameterStatus included.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Status(String, String),
    Msg(Msg),
}

/// A simple query's whole answer, ParameterStatus included, up to ReadyForQuery.
async fn answer(w: &mut Wire, sql: &str) -> Vec<Seen> {
    w.send(&[encode::query(sql)]).await;
    let mut out = Vec::new();
    loop {
        let f = w.frame().await;
        let seen = match f.tag {
            backend::PARAMETER_STATUS => {
                let (k, v) = backend::decode_parameter_status(&f).unwrap();
                Seen::Status(
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            }
            backend::NOTICE_RESPONSE => continue,
            _ => Seen::Msg(decode(&f)),
        };
        let done = matches!(seen, Seen::Msg(Msg::Ready(_)));
        out.push(seen);
        if done {
            return out;
        }
    }
}

fn statuses(seen: &[Seen]) -> Vec<(String, String)> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Status(k, v) => Some((k.clone(), v.clone())),
            Seen::Msg(_) => None,
        })
        .collect()
}

fn scs(v: &str) -> (String, String) {
    ("standard_conforming_strings".to_owned(), v.to_owned())
}

/// The rows of an answer.
fn data(seen: &[Seen]) -> Vec<Vec<Option<String>>> {
    let msgs: Vec<Msg> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Msg(m) => Some(m.clone()),
            Seen::Status(..) => None,
        })
        .collect();
    rows(&msgs)
}

/// pid, standard_conforming_strings, and the literal 'a\\b' (two backslashes in the SQL): `a\b`
/// when standard_conforming_strings is off, `a\\b` when on.
const PROBE: &str =
    "SELECT pg_backend_pid(), current_setting('standard_conforming_strings'), 'a\\\\b'";

fn probe_row(pid: i32, scs: &str, literal: &str) -> Vec<Vec<Option<String>>> {
    vec![vec![s(&pid.to_string()), s(scs), s(literal)]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_setting_reaches_the_client_and_stays_true_on_every_connection() {
    let pg = start_pg();
    let proxy = txn_proxy(&pg, 2).await;
    let mut router = Router::new(&proxy).await;
    let [p0, p1] = router.pids;
    let mut a = wire(&proxy).await;
    let mut b = wire(&proxy).await;

    router.route_to(p0).await;
    // In a transaction block that commits: PostgreSQL keeps it, and reports it.
    let got = answer(
        &mut a,
        "BEGIN; SET standard_conforming_strings = off; COMMIT",
    )
    .await;
    assert_eq!(statuses(&got), vec![scs("off")], "{got:?}");
    for pid in [p1, p0, p1] {
        router.route_to(pid).await;
        let got = answer(&mut a, PROBE).await;
        assert_eq!(data(&got), probe_row(pid, "off", "a\\b"), "{got:?}");
        assert_eq!(statuses(&got), vec![], "nothing changed for A: {got:?}");
        // B shares the connection and keeps the default, without being told anything new.
        let got = answer(&mut b, PROBE).await;
        assert_eq!(data(&got), probe_row(pid, "on", "a\\\\b"), "{got:?}");
        assert_eq!(statuses(&got), vec![], "nothing changed for B: {got:?}");
    }
    let got = answer(&mut a, "RESET standard_conforming_strings").await;
    assert_eq!(statuses(&got), vec![scs("on")], "{got:?}");
    for pid in [p0, p1] {
        router.route_to(pid).await;
        let got = answer(&mut a, PROBE).await;
        assert_eq!(data(&got), probe_row(pid, "on", "a\\\\b"), "{got:?}");
    }
    router.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_moved_to_a_connection_that_reports_other_values_is_told_first() {
    let pg = start_pg();
    let proxy = txn_proxy(&pg, 2).await;
    // A logs in while the server's default is on (one server connection is opened)...
    let mut a = wire(&proxy).await;
    assert_eq!(data(&answer(&mut a, PROBE).await)[0][1], s("on"));
    // ...then the default changes: only connections opened from now on have it.
    admin(
        &pg,
        "ALTER DATABASE appdb SET standard_conforming_strings = off",
    );
    let mut router = Router::new(&proxy).await;
    let mut reported = Vec::new();
    for pid in router.pids {
        router.route_to(pid).await;
        let got = answer(&mut a, PROBE).await;
        let row = &data(&got)[0];
        assert_eq!(row[0], s(&pid.to_string()));
        // Whatever the connection has, A was told it before the answer.
        let value = row[1].clone().unwrap();
        match statuses(&got).as_slice() {
            [] => assert_eq!(value, "on", "A was never told about {value}: {got:?}"),
            [status] => {
                assert_eq!(*status, scs(&value), "{got:?}");
                assert!(
                    matches!(got.first(), Some(Seen::Status(..))),
                    "before the answer: {got:?}"
                );
            }
            more => panic!("{more:?}"),
        }
        reported.push(value);
    }
    reported.sort();
    assert_eq!(reported, ["off", "on"], "one old and one new connection");
    router.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_parameter_the_server_rejects_refuses_the_login() {
    let pg = start_pg();
    let proxy = txn_proxy(&pg, 2).await;
    // A first client: the pool has a server connection and knows the server's parameters.
    let first = connect(&proxy_url(&proxy)).await;
    first.simple_query("SELECT 1").await.unwrap();

    let expected = Some((
        "FATAL".to_owned(),
        "22023".to_owned(),
        "invalid value for parameter \"statement_timeout\": \"abc\"".to_owned(),
    ));
    let bad = "-c statement_timeout=abc";
    assert_eq!(
        options_error(&direct_url(&pg), bad).await,
        expected,
        "PostgreSQL"
    );
    for attempt in 0..2 {
        assert_eq!(
            options_error(&proxy_url(&proxy), bad).await,
            expected,
            "pgheal, attempt {attempt}"
        );
    }

    // An accepted one is kept on every server connection, and so is the first client's.
    let mut cfg = tokio_postgres::Config::from_str(&proxy_url(&proxy)).unwrap();
    cfg.options("-c statement_timeout=5s");
    let (good, conn) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let mut router = Router::new(&proxy).await;
    for pid in router.pids {
        router.route_to(pid).await;
        let sql = "SELECT pg_backend_pid(), current_setting('statement_timeout')";
        let r = good.query_one(sql, &[]).await.unwrap();
        assert_eq!(
            (r.get::<_, i32>(0), r.get::<_, String>(1)),
            (pid, "5s".into())
        );
        let r = first.query_one(sql, &[]).await.unwrap();
        assert_eq!(
            (r.get::<_, i32>(0), r.get::<_, String>(1)),
            (pid, "0".into())
        );
    }
    router.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_escapes_for_the_server_it_talks_to() {
    let driver = Driver::python(
        "psycopg 3",
        "psycopg",
        "tests/drivers/python/psycopg_settings.py",
        (),
    );
    if !driver.ready_or_skip().await {
        return;
    }
    let pg = start_pg();
    let proxy = txn_proxy(&pg, 2).await;
    let mut router = Router::new(&proxy).await;
    let [p0, p1] = router.pids;
    router.route_to(p0).await;
    let router_ref = &mut router;
    let (run, _) = run_script(&driver, proxy.addr.port(), "pgheal".into(), async || {
        router_ref.route_to(p1).await;
    })
    .await;
    router.release().await;
    run.assert_ok(
        &[
            "READY".to_owned(),
            "moved to another server connection: True".to_owned(),
            "told standard_conforming_strings=off".to_owned(),
            "server standard_conforming_strings=off".to_owned(),
            "round trip: ok".to_owned(),
        ],
        "",
    );
}
