//! Clients that vanish mid-batch: after an error with no Sync, in the middle of COPY, inside a
//! transaction block, with a portal open or a write in a segment no Sync ended, by closing the
//! socket or by sending Terminate.
//!
//! pgheal has one server connection (pool_size 1) in each pool mode. After each client leaves,
//! the next client must be served on that same backend (not a leaked or closed one), in a clean
//! state, and what the vanished client left uncommitted must be rolled back — exactly as when
//! the client talks straight to PostgreSQL, whose session would have ended.

use crate::common;
use crate::txn_support;

use std::time::Duration;

use common::wire::*;
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::protocol::{encode, Frame};

/// How a client leaves.
#[derive(Debug, Clone, Copy)]
enum Leave {
    CloseSocket,
    Terminate,
}

/// One way to be in the middle of something.
struct Case {
    name: &'static str,
    /// Sent (and read) before leaving.
    steps: Vec<(Vec<Frame>, usize)>,
}

fn copy_data(s: &str) -> Frame {
    encode::raw(b'd', s.as_bytes())
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "after an error with no Sync",
            steps: vec![(
                vec![
                    parse(
                        "",
                        "INSERT INTO left_behind VALUES (1) RETURNING 1/(random()*0)::int",
                    ),
                    bind("", "", &[], &[]),
                    execute(""),
                    flush(),
                ],
                3,
            )],
        },
        Case {
            name: "in the middle of COPY FROM STDIN",
            steps: vec![
                (vec![encode::query("COPY left_behind FROM STDIN")], 1),
                (vec![copy_data("2\n"), copy_data("3\n")], 0),
            ],
        },
        Case {
            name: "in the middle of COPY through the extended protocol",
            steps: vec![
                (
                    vec![
                        parse("", "COPY left_behind FROM STDIN"),
                        bind("", "", &[], &[]),
                        execute(""),
                        sync(),
                    ],
                    3,
                ),
                (vec![copy_data("4\n")], 0),
            ],
        },
        Case {
            name: "inside a transaction block",
            steps: vec![
                (vec![encode::query("BEGIN")], 2),
                (
                    vec![encode::query(
                        "INSERT INTO left_behind VALUES (5); SET LOCAL work_mem = '8MB'",
                    )],
                    3,
                ),
            ],
        },
        Case {
            name: "with a write in a segment no Sync ended",
            steps: vec![(
                vec![
                    parse("", "INSERT INTO left_behind VALUES (6)"),
                    bind("", "", &[], &[]),
                    execute(""),
                    flush(),
                ],
                3,
            )],
        },
        Case {
            name: "with an extended-protocol portal open",
            steps: vec![(
                vec![
                    parse("", "SELECT g FROM generate_series(1, 10) g"),
                    bind("p", "", &[], &[]),
                    encode::execute("p", 2),
                    flush(),
                ],
                5,
            )],
        },
        Case {
            name: "with answers still in flight",
            steps: vec![(
                vec![
                    parse("", "SELECT pg_sleep(0.5), 7"),
                    bind("", "", &[], &[]),
                    execute(""),
                    sync(),
                ],
                0,
            )],
        },
    ]
}

/// Backend pid, rows of `left_behind` and the transaction status, seen by a fresh client.
async fn look(w: &mut Wire) -> (i32, Vec<Vec<Option<String>>>, Vec<Msg>) {
    let pid = txn_support::pid_alone(w).await;
    let rows = rows(&w.query("SELECT id FROM left_behind ORDER BY id").await);
    // Nothing of the vanished session is in force: not its transaction, not its settings.
    let state = w.query("SHOW work_mem").await;
    (pid, rows, state)
}

async fn vanish(mut w: Wire, case: &Case, how: Leave) {
    for (frames, n) in &case.steps {
        w.send(frames).await;
        let got = w.take(*n).await;
        assert!(
            !got.iter()
                .any(|m| matches!(m, Msg::Error { code, .. } if code != "22012")),
            "{}: unexpected error before leaving: {got:?}",
            case.name
        );
    }
    if let Leave::Terminate = how {
        w.send(&[encode::terminate()]).await;
    }
    drop(w);
}

async fn check_mode(pg: &TempCluster, mode: &str) {
    common::load::log_from_env();
    admin(
        pg,
        "DROP TABLE IF EXISTS left_behind; CREATE TABLE left_behind(id int); \
         ALTER TABLE left_behind OWNER TO app",
    );
    let proxy = start_proxy(pg, |a| {
        a.pool_mode = Some(mode.into());
        a.pool_size = Some(1);
        // A leaked server connection makes the next client fail quickly instead of hanging.
        a.query_wait_timeout = Some(15.0);
    })
    .await;
    let mut first = txn_support::wire(&proxy).await;
    let (pid, before, default_state) = look(&mut first).await;
    drop(first);
    for case in cases() {
        for how in [Leave::CloseSocket, Leave::Terminate] {
            let what = format!("{mode} pooling, {} ({how:?})", case.name);
            // Straight to PostgreSQL: what the server does when such a session ends.
            vanish(txn_support::wire_direct(pg).await, &case, how).await;
            // Through pgheal.
            vanish(txn_support::wire(&proxy).await, &case, how).await;
            let next = tokio::time::timeout(Duration::from_secs(30), async {
                let mut w = txn_support::wire(&proxy).await;
                let seen = look(&mut w).await;
                (w, seen)
            })
            .await
            .unwrap_or_else(|_| panic!("{what}: the next client was not served within 30 s"));
            let (got_pid, rows, state) = next.1;
            assert_eq!(
                got_pid, pid,
                "{what}: the next client runs on the same server connection"
            );
            assert_eq!(
                rows, before,
                "{what}: nothing the vanished client left uncommitted survives"
            );
            assert_eq!(
                state, default_state,
                "{what}: no setting of the vanished client"
            );
            drop(next.0);
        }
    }
    // Straight to PostgreSQL nothing survived either (the comparison above is with `before`).
    let direct = rows(
        &txn_support::wire_direct(pg)
            .await
            .query("SELECT id FROM left_behind")
            .await,
    );
    assert_eq!(
        direct, before,
        "straight to PostgreSQL nothing survives either"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_clients_session_pooling() {
    let pg = start_pg();
    check_mode(&pg, "session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vanished_clients_transaction_pooling() {
    let pg = start_pg();
    check_mode(&pg, "transaction").await;
}
