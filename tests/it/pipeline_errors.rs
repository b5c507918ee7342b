//! Errors inside Flush-driven pipelines (libpq pipeline mode, psycopg 3, pgx batches): after an
//! error in an extended-protocol message PostgreSQL discards every message up to the next Sync
//! and answers that Sync with ReadyForQuery alone. The client may send those messages after it
//! read the error, before it, or spread over several Flush segments.
//!
//! Each scenario runs straight against PostgreSQL and through pgheal in session and in
//! transaction pooling (one server connection, so the next client gets the same one), and the
//! client must receive exactly the same messages every time. Then another client must be served
//! normally on that server connection.

use crate::common;
use crate::txn_support;

use common::wire::*;
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::protocol::{encode, Frame};

/// One step of a scenario: what the client sends, then how much it reads.
struct Step {
    send: Vec<Frame>,
    read: Read,
}

enum Read {
    /// Up to and including ReadyForQuery.
    UntilReady,
    /// Exactly this many messages (a Flush-terminated segment).
    Take(usize),
    /// Nothing: the server discards these messages and answers none of them.
    Nothing,
}

fn step(send: Vec<Frame>, read: Read) -> Step {
    Step { send, read }
}

/// Division by zero at execution (a constant `1/0` would fail at Bind, when it is planned).
const FAILS_AT_EXECUTE: &str = "SELECT 1/(random()*0)::int";

/// Parse, Bind, Execute of an unnamed statement that fails at execution (division by zero).
fn failing_segment() -> Vec<Frame> {
    vec![
        parse("", FAILS_AT_EXECUTE),
        bind("", "", &[], &[]),
        execute(""),
    ]
}

fn with(mut frames: Vec<Frame>, more: &[Frame]) -> Vec<Frame> {
    frames.extend_from_slice(more);
    frames
}

fn scenarios() -> Vec<(&'static str, Vec<Step>)> {
    let skipped_then_sync = |sql: &'static str| {
        vec![
            parse("s1", sql),
            bind("", "s1", &[], &[]),
            execute(""),
            sync(),
        ]
    };
    vec![
        (
            "the error is read after Flush, then the rest of the batch and its Sync",
            vec![
                step(
                    vec![
                        parse("", FAILS_AT_EXECUTE),
                        bind("", "", &[], &[]),
                        describe_portal(""),
                        execute(""),
                        flush(),
                    ],
                    Read::Take(4),
                ),
                step(skipped_then_sync("SELECT 1"), Read::UntilReady),
                // s1 was never created: it can be prepared now.
                step(skipped_then_sync("SELECT 2"), Read::UntilReady),
            ],
        ),
        (
            "several Flush segments are skipped before one Sync",
            vec![
                step(with(failing_segment(), &[flush()]), Read::Take(3)),
                step(
                    vec![
                        parse("a", "SELECT 1"),
                        bind("", "a", &[], &[]),
                        execute(""),
                        flush(),
                    ],
                    Read::Nothing,
                ),
                step(vec![parse("b", "SELECT 2"), flush()], Read::Nothing),
                step(vec![close_stmt("a"), sync()], Read::UntilReady),
                // Neither statement exists.
                step(
                    vec![bind("", "a", &[], &[]), execute(""), sync()],
                    Read::UntilReady,
                ),
                step(
                    vec![bind("", "b", &[], &[]), execute(""), sync()],
                    Read::UntilReady,
                ),
            ],
        ),
        (
            "the error arrives while later segments are already in flight",
            vec![
                step(
                    with(
                        failing_segment(),
                        &[
                            flush(),
                            parse("c", "SELECT 3"),
                            bind("", "c", &[], &[]),
                            execute(""),
                            flush(),
                            sync(),
                        ],
                    ),
                    Read::UntilReady,
                ),
                step(
                    vec![bind("", "c", &[], &[]), execute(""), sync()],
                    Read::UntilReady,
                ),
            ],
        ),
        (
            "a prepare fails, the pipeline goes on to its Sync",
            vec![
                step(vec![parse("bad", "SELEC 1"), flush()], Read::Take(1)),
                step(
                    vec![bind("", "bad", &[], &[]), execute(""), sync()],
                    Read::UntilReady,
                ),
                step(
                    vec![
                        parse("bad", "SELECT 5"),
                        bind("", "bad", &[], &[]),
                        execute(""),
                        sync(),
                    ],
                    Read::UntilReady,
                ),
            ],
        ),
        (
            "inside a transaction block the Sync reports the failed transaction",
            vec![
                step(vec![encode::query("BEGIN")], Read::UntilReady),
                step(with(failing_segment(), &[flush()]), Read::Take(3)),
                step(
                    vec![
                        parse("", "SELECT 1"),
                        bind("", "", &[], &[]),
                        execute(""),
                        sync(),
                    ],
                    Read::UntilReady,
                ),
                step(vec![encode::query("ROLLBACK")], Read::UntilReady),
            ],
        ),
        (
            "a simple Query sent before the Sync is discarded too",
            vec![
                step(with(failing_segment(), &[flush()]), Read::Take(3)),
                step(vec![encode::query("SELECT 7"), sync()], Read::UntilReady),
            ],
        ),
    ]
}

/// Runs a scenario on one connection and returns every message it received, step by step,
/// followed by the answer to a plain query that proves the session still works.
async fn run(w: &mut Wire, steps: &[Step]) -> Vec<Vec<Msg>> {
    let mut transcript = Vec::new();
    for s in steps {
        if std::env::var_os("PIPELINE_TRACE").is_some() {
            eprintln!("so far: {transcript:?}");
        }
        w.send(&s.send).await;
        transcript.push(match s.read {
            Read::UntilReady => w.until_ready().await,
            Read::Take(n) => w.take(n).await,
            Read::Nothing => Vec::new(),
        });
    }
    transcript.push(w.query("SELECT 42").await);
    transcript
}

fn assert_healthy_end(transcript: &[Vec<Msg>], what: &str) {
    let last = transcript.last().expect("a transcript");
    assert_eq!(
        rows(last),
        vec![vec![Some("42".to_string())]],
        "{what}: the session works after the pipeline: {transcript:?}"
    );
}

async fn check_all(pg: &TempCluster, mode: &str) {
    let proxy = start_proxy(pg, |a| {
        a.pool_mode = Some(mode.into());
        a.pool_size = Some(1);
    })
    .await;
    for (name, steps) in scenarios() {
        let mut direct = txn_support::wire_direct(pg).await;
        let expected = run(&mut direct, &steps).await;
        assert_healthy_end(&expected, name);
        let mut w = txn_support::wire(&proxy).await;
        let got = run(&mut w, &steps).await;
        assert_eq!(
            got, expected,
            "{mode} pooling, {name}: pgheal's answers differ from PostgreSQL's"
        );
        drop(w);
        // The only server connection serves the next client normally.
        let mut next = txn_support::wire(&proxy).await;
        assert_eq!(
            rows(&next.query("SELECT 1").await),
            vec![vec![Some("1".to_string())]],
            "{mode} pooling, {name}: the next client is served"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_errors_session_pooling() {
    let pg = start_pg();
    check_all(&pg, "session").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_errors_transaction_pooling() {
    let pg = start_pg();
    check_all(&pg, "transaction").await;
}

/// The expected answers, spelled out once, so the scenarios cannot pass by both sides being
/// equally wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_messages_get_only_ready_for_query() {
    common::load::log_from_env();
    let pg = start_pg();
    let proxy = txn_support::txn_proxy(&pg, 1).await;
    let mut w = txn_support::wire(&proxy).await;
    let steps = &scenarios()[0].1;
    let t = run(&mut w, steps).await;
    assert!(
        matches!(t[0].as_slice(), [Msg::ParseComplete, Msg::BindComplete, Msg::RowDescription(_), Msg::Error { code, .. }] if code == "22012"),
        "{t:?}"
    );
    assert_eq!(t[1], vec![Msg::Ready('I')], "skipped up to Sync: {t:?}");
    assert_eq!(
        t[2],
        vec![
            Msg::ParseComplete,
            Msg::BindComplete,
            Msg::DataRow(vec![Some("2".into())]),
            Msg::CommandComplete("SELECT 1".into()),
            Msg::Ready('I')
        ],
        "{t:?}"
    );
}
