//! Named statements in transaction pooling, driven message by message: a client's statements
//! follow it across server connections (lazy prepare in the same pipeline), names are the
//! client's own (duplicates fail like on PostgreSQL, two clients may use one name for different
//! SQL), Close / DEALLOCATE / DISCARD ALL act on the client's names only, and a lazy prepare
//! that fails passes the server's real error.

use crate::common;
use crate::txn_support;

use common::wire::*;
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::proxy::ProxyHandle;
use txn_support::*;

const PLUS_ONE: &str = "SELECT $1::int + 1";

async fn setup(pool_size: usize) -> (TempCluster, ProxyHandle) {
    let pg = start_pg();
    admin(
        &pg,
        "CREATE TABLE audit(id serial PRIMARY KEY, msg text);
         ALTER TABLE audit OWNER TO app;",
    );
    let proxy = txn_proxy(&pg, pool_size).await;
    (pg, proxy)
}

fn run_stmt(stmt: &str, params: &[&str]) -> Vec<pgheal::protocol::Frame> {
    vec![bind("", stmt, params, &[]), execute("")]
}

/// Statement "s1" prepared in one transaction runs in later ones on the other server
/// connection, prepared there on demand in the same pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_follows_the_client_to_another_server_connection() {
    let (_pg, proxy) = setup(2).await;
    let mut router = Router::new(&proxy).await;
    let mut a = wire(&proxy).await;

    // Prepared and run in one pipeline, on connection p1.
    let mut frames = vec![parse("s1", PLUS_ONE)];
    frames.extend(run_stmt("s1", &["41"]));
    let (p1, got) = with_pid(&mut a, &frames).await;
    assert_eq!(
        got,
        [vec![Msg::ParseComplete], one_row(vec![s("42")])].concat()
    );

    // Another client holds p1 in a transaction: A's next transaction runs on p2, where s1 was
    // never prepared.
    router.route_to(router.other(p1)).await;
    let (p2, got) = with_pid(&mut a, &run_stmt("s1", &["1"])).await;
    assert_ne!(p1, p2, "the second transaction ran on the other connection");
    assert_eq!(got, one_row(vec![s("2")]));

    // Alone in a pipeline (Bind / Execute / Sync), on each connection in turn.
    for (i, pid) in [p1, p2, p1, p2].into_iter().enumerate() {
        router.route_to(pid).await;
        assert_eq!(
            bind_execute(&mut a, "s1", &[&i.to_string()]).await,
            one_row(vec![s(&(i + 1).to_string())])
        );
    }
    // Describe 'S' answers on either connection.
    for pid in [p1, p2] {
        router.route_to(pid).await;
        assert_eq!(
            run_batch(&mut a, &[describe_stmt("s1")]).await,
            described(vec!["?column?".into()])
        );
    }
    router.release().await;
}

/// Straight to PostgreSQL, a Parse of a name the client already used fails with 42P05 and
/// the implicit transaction (with the INSERT before it) is rolled back. Same through pgheal,
/// where the name never reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_name_fails_and_rolls_back_the_batch() {
    let (pg, proxy) = setup(2).await;
    let ins = "INSERT INTO audit(msg) VALUES ($1)";
    let batch = |msg: &'static str| {
        vec![
            bind("", "ins", &[msg], &[]),
            execute(""),
            parse("s1", "SELECT 'other'"),
        ]
    };
    let mut transcripts = Vec::new();
    for (mut w, msg) in [
        (wire_direct(&pg).await, "direct"),
        (wire(&proxy).await, "pgheal"),
    ] {
        assert_eq!(
            run_batch(&mut w, &[parse("ins", ins), parse("s1", PLUS_ONE)]).await,
            vec![Msg::ParseComplete, Msg::ParseComplete, Msg::Ready('I')]
        );
        let got = run_batch(&mut w, &batch(msg)).await;
        assert_eq!(
            admin(
                &pg,
                &format!("SELECT count(*) FROM audit WHERE msg = '{msg}'")
            ),
            "0",
            "{msg}: the INSERT before the failed Parse is rolled back"
        );
        // s1 is still the first statement.
        let s1 = bind_execute(&mut w, "s1", &["1"]).await;
        assert_eq!(rows(&s1), vec![vec![s("2")]], "{msg}");
        transcripts.push(without_routines(&got));
    }
    assert_eq!(
        transcripts[1],
        vec![
            Msg::BindComplete,
            Msg::CommandComplete("INSERT 0 1".into()),
            Msg::Error {
                code: "42P05".into(),
                routine: String::new(),
                message: "prepared statement \"s1\" already exists".into(),
            },
            Msg::Ready('I'),
        ]
    );
    assert_eq!(
        transcripts[1], transcripts[0],
        "pgheal answers like PostgreSQL"
    );
}

/// Two clients name different statements "P_0": each gets its own results, on the same server
/// connection (pool of 1) and on a pool of 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_client_name_for_different_sql() {
    for pool_size in [1, 2] {
        let (_pg, proxy) = setup(pool_size).await;
        let mut a = wire(&proxy).await;
        let mut b = wire(&proxy).await;
        let a_sql = "SELECT 'a:' || $1::text AS a_col";
        assert_eq!(
            run_batch(&mut a, &[parse("P_0", a_sql), describe_stmt("P_0")]).await,
            parsed_and_described(vec!["a_col".into()])
        );
        let b_sql = "SELECT $1::int * 10 AS b_col, 'b' AS b_tag";
        assert_eq!(
            run_batch(&mut b, &[parse("P_0", b_sql), describe_stmt("P_0")]).await,
            parsed_and_described(vec!["b_col".into(), "b_tag".into()]),
            "pool_size {pool_size}: no \"already exists\""
        );
        for i in 0..5 {
            let n = i.to_string();
            // Both batches sent before either is answered.
            let frames = [
                bind("", "P_0", &[&n], &[]),
                describe_portal(""),
                execute(""),
                sync(),
            ];
            a.send(&frames).await;
            b.send(&frames).await;
            assert_eq!(
                a.until_ready().await,
                vec![
                    Msg::BindComplete,
                    Msg::RowDescription(vec!["a_col".into()]),
                    Msg::DataRow(vec![s(&format!("a:{i}"))]),
                    Msg::CommandComplete("SELECT 1".into()),
                    Msg::Ready('I'),
                ],
                "pool_size {pool_size}"
            );
            assert_eq!(
                b.until_ready().await,
                vec![
                    Msg::BindComplete,
                    Msg::RowDescription(vec!["b_col".into(), "b_tag".into()]),
                    Msg::DataRow(vec![s(&(i * 10).to_string()), s("b")]),
                    Msg::CommandComplete("SELECT 1".into()),
                    Msg::Ready('I'),
                ],
                "pool_size {pool_size}"
            );
        }
        drop((a, b));
        proxy.shutdown().await;
    }
}

fn does_not_exist(name: &str) -> Vec<(String, String)> {
    vec![(
        "26000".into(),
        format!("prepared statement \"{name}\" does not exist"),
    )]
}

/// Prepares `name` as `sql` and runs it with "1"; returns the rows.
async fn prepare_run(w: &mut Wire, name: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let got = run_batch(
        w,
        &[parse(name, sql), bind("", name, &["1"], &[]), execute("")],
    )
    .await;
    assert!(errors(&got).is_empty(), "{got:?}");
    rows(&got)
}

/// Runs statement `name` with "1"; the answer.
async fn run_named(w: &mut Wire, name: &str) -> Vec<Msg> {
    bind_execute(w, name, &["1"]).await
}

/// Close 'S' is answered with CloseComplete; the statement is gone for this client only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_removes_only_the_clients_statement() {
    let (_pg, proxy) = setup(2).await;
    let mut a = wire(&proxy).await;
    let mut b = wire(&proxy).await;
    assert_eq!(
        prepare_run(&mut a, "s1", PLUS_ONE).await,
        vec![vec![s("2")]]
    );
    assert_eq!(
        prepare_run(&mut b, "s1", PLUS_ONE).await,
        vec![vec![s("2")]]
    );

    assert_eq!(
        run_batch(&mut a, &[close_stmt("s1")]).await,
        vec![Msg::CloseComplete, Msg::Ready('I')]
    );
    let got = run_named(&mut a, "s1").await;
    assert_eq!(error_texts(&got), does_not_exist("s1"), "{got:?}");
    assert_eq!(got.last(), Some(&Msg::Ready('I')));
    // Closing a name that does not exist is no error (as on PostgreSQL).
    assert_eq!(
        run_batch(&mut a, &[close_stmt("never")]).await,
        vec![Msg::CloseComplete, Msg::Ready('I')]
    );
    // B's statement, the same text under the same name, still works.
    assert_eq!(rows(&run_named(&mut b, "s1").await), vec![vec![s("2")]]);
    // A can prepare the name again.
    assert_eq!(
        prepare_run(&mut a, "s1", "SELECT $1::int + 100").await,
        vec![vec![s("101")]]
    );
    assert_eq!(rows(&run_named(&mut b, "s1").await), vec![vec![s("2")]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_and_discard_act_on_the_clients_names_only() {
    let (_pg, proxy) = setup(2).await;
    let mut a = wire(&proxy).await;
    let mut b = wire(&proxy).await;
    let two = "SELECT $1::int + 2";
    for w in [&mut a, &mut b] {
        prepare_run(w, "s1", PLUS_ONE).await;
        prepare_run(w, "s2", two).await;
    }

    // DEALLOCATE one name.
    assert_eq!(a.query("DEALLOCATE s1").await, complete("DEALLOCATE", 'I'));
    assert_eq!(
        error_texts(&run_named(&mut a, "s1").await),
        does_not_exist("s1")
    );
    assert_eq!(rows(&run_named(&mut a, "s2").await), vec![vec![s("3")]]);
    assert_eq!(rows(&run_named(&mut b, "s1").await), vec![vec![s("2")]]);

    // DEALLOCATE ALL.
    assert_eq!(
        a.query("DEALLOCATE ALL").await,
        complete("DEALLOCATE ALL", 'I')
    );
    assert_eq!(
        error_texts(&run_named(&mut a, "s2").await),
        does_not_exist("s2")
    );
    assert_eq!(rows(&run_named(&mut b, "s1").await), vec![vec![s("2")]]);
    assert_eq!(rows(&run_named(&mut b, "s2").await), vec![vec![s("3")]]);

    // DISCARD ALL.
    prepare_run(&mut a, "s1", PLUS_ONE).await;
    assert_eq!(a.query("DISCARD ALL").await, complete("DISCARD ALL", 'I'));
    assert_eq!(
        error_texts(&run_named(&mut a, "s1").await),
        does_not_exist("s1")
    );
    assert_eq!(rows(&run_named(&mut b, "s1").await), vec![vec![s("2")]]);
    assert_eq!(rows(&run_named(&mut b, "s2").await), vec![vec![s("3")]]);

    // After all that, A prepares the same names again.
    assert_eq!(
        prepare_run(&mut a, "s1", PLUS_ONE).await,
        vec![vec![s("2")]]
    );
    assert_eq!(prepare_run(&mut a, "s2", two).await, vec![vec![s("3")]]);
}

/// PostgreSQL refuses `DEALLOCATE` of a name that does not exist with 26000; so should pgheal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_of_an_unknown_name_fails_like_postgresql() {
    let (pg, proxy) = setup(2).await;
    let direct = wire_direct(&pg).await.query("DEALLOCATE nosuch").await;
    assert_eq!(error_texts(&direct), does_not_exist("nosuch"));
    let got = wire(&proxy).await.query("DEALLOCATE nosuch").await;
    assert_eq!(without_routines(&got), without_routines(&direct));
}

/// PostgreSQL's error for `DISCARD ALL` inside a transaction block.
fn discard_all_in_a_block() -> Vec<(String, String)> {
    vec![(
        "25001".into(),
        "DISCARD ALL cannot run inside a transaction block".into(),
    )]
}

/// `DISCARD ALL` inside a transaction block fails on the server (25001); the transaction is
/// aborted, and after ROLLBACK the client's statements are all still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_in_a_transaction_block_fails_and_keeps_statements() {
    let (pg, proxy) = setup(2).await;
    for (mut w, target) in [
        (wire_direct(&pg).await, "direct"),
        (wire(&proxy).await, "pgheal"),
    ] {
        prepare_run(&mut w, "s1", PLUS_ONE).await;
        assert_eq!(w.query("BEGIN").await, complete("BEGIN", 'T'));
        let got = w.query("DISCARD ALL").await;
        assert_eq!(
            error_texts(&got),
            discard_all_in_a_block(),
            "{target}: {got:?}"
        );
        assert_eq!(got.last(), Some(&Msg::Ready('E')), "{target}");
        assert_eq!(w.query("ROLLBACK").await, complete("ROLLBACK", 'I'));
        assert_eq!(
            rows(&run_named(&mut w, "s1").await),
            vec![vec![s("2")]],
            "{target}: s1 survives the failed DISCARD ALL"
        );
    }
}

/// `DISCARD ALL` inside a transaction block: the 25001 error, whatever the client prepared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_in_a_transaction_block_is_refused_by_the_server() {
    let (_pg, proxy) = setup(2).await;
    let mut a = wire(&proxy).await;
    assert_eq!(a.query("BEGIN").await, complete("BEGIN", 'T'));
    let got = a.query("DISCARD ALL").await;
    assert_eq!(error_texts(&got), discard_all_in_a_block(), "{got:?}");
    assert_eq!(got.last(), Some(&Msg::Ready('E')));
    assert_eq!(a.query("ROLLBACK").await, complete("ROLLBACK", 'I'));
    assert_eq!(rows(&a.query("SELECT 7").await), vec![vec![s("7")]]);
}

/// `DEALLOCATE s1` inside a transaction block succeeds on PostgreSQL and removes the client's
/// statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_in_a_transaction_block() {
    let (pg, proxy) = setup(2).await;
    let mut transcripts = Vec::new();
    for (mut w, target) in [
        (wire_direct(&pg).await, "direct"),
        (wire(&proxy).await, "pgheal"),
    ] {
        prepare_run(&mut w, "s1", PLUS_ONE).await;
        let mut t = w.query("BEGIN").await;
        t.extend(w.query("DEALLOCATE s1").await);
        t.extend(w.query("COMMIT").await);
        assert_eq!(
            error_texts(&run_named(&mut w, "s1").await),
            does_not_exist("s1"),
            "{target}"
        );
        transcripts.push(t);
    }
    assert_eq!(
        transcripts[0],
        [
            complete("BEGIN", 'T'),
            complete("DEALLOCATE", 'T'),
            complete("COMMIT", 'I'),
        ]
        .concat()
    );
    assert_eq!(transcripts[1], transcripts[0]);
}

/// `DEALLOCATE ALL` that reaches the server (inside a transaction block, or with another
/// statement in the same query) must not take other clients' statements with it: on a pool of
/// one connection, B's statement keeps working after each of A's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deallocate_all_reaching_the_server_leaves_other_clients_alone() {
    let (_pg, proxy) = setup(1).await;
    let mut a = wire(&proxy).await;
    let mut b = wire(&proxy).await;
    assert_eq!(
        prepare_run(&mut a, "s1", PLUS_ONE).await,
        vec![vec![s("2")]]
    );
    assert_eq!(
        prepare_run(&mut b, "s1", PLUS_ONE).await,
        vec![vec![s("2")]]
    );
    assert_eq!(
        prepare_run(&mut b, "s2", "SELECT $1::int + 2").await,
        vec![vec![s("3")]]
    );

    let mut t = a.query("BEGIN").await;
    t.extend(a.query("DEALLOCATE ALL").await);
    t.extend(a.query("COMMIT").await);
    assert_eq!(
        t,
        [
            complete("BEGIN", 'T'),
            complete("DEALLOCATE ALL", 'T'),
            complete("COMMIT", 'I'),
        ]
        .concat()
    );
    assert_eq!(
        error_texts(&run_named(&mut a, "s1").await),
        does_not_exist("s1")
    );
    let got = run_named(&mut b, "s1").await;
    assert_eq!(rows(&got), vec![vec![s("2")]], "B's s1: {got:?}");

    assert_eq!(
        prepare_run(&mut a, "s1", PLUS_ONE).await,
        vec![vec![s("2")]]
    );
    let got = a.query("DEALLOCATE ALL; SELECT 1").await;
    assert_eq!(
        got,
        vec![
            Msg::CommandComplete("DEALLOCATE ALL".into()),
            Msg::RowDescription(vec!["?column?".into()]),
            Msg::DataRow(vec![s("1")]),
            Msg::CommandComplete("SELECT 1".into()),
            Msg::Ready('I'),
        ]
    );
    assert_eq!(
        error_texts(&run_named(&mut a, "s1").await),
        does_not_exist("s1")
    );
    let got = run_named(&mut b, "s2").await;
    assert_eq!(rows(&got), vec![vec![s("3")]], "B's s2: {got:?}");
}

/// A named Parse that fails on the server (missing relation, syntax error) gets the server's
/// error, exactly as straight to PostgreSQL, and the name stays free. The failed text does not
/// poison the pool: once the table exists, it prepares and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_parse_reaches_the_client() {
    let (pg, proxy) = setup(1).await;
    let missing = "SELECT * FROM later_table";
    let mut transcripts = Vec::new();
    for mut w in [wire_direct(&pg).await, wire(&proxy).await] {
        let t = [
            run_batch(&mut w, &[parse("s1", missing)]).await,
            bind_execute(&mut w, "s1", &[]).await,
            run_batch(
                &mut w,
                &[
                    parse("s2", "SELEC 1"),
                    bind("", "s2", &[], &[]),
                    execute(""),
                ],
            )
            .await,
        ];
        transcripts.push(t.iter().map(|m| without_routines(m)).collect::<Vec<_>>());
    }
    assert_eq!(
        transcripts[0]
            .iter()
            .map(|m| error_texts(m))
            .collect::<Vec<_>>(),
        vec![
            vec![(
                "42P01".to_owned(),
                "relation \"later_table\" does not exist".to_owned()
            )],
            does_not_exist("s1"),
            vec![(
                "42601".to_owned(),
                "syntax error at or near \"SELEC\"".to_owned()
            )],
        ]
    );
    assert_eq!(
        transcripts[1], transcripts[0],
        "pgheal answers like PostgreSQL"
    );

    // The table appears: the same text prepares and runs, for this client and another one.
    admin(
        &pg,
        "CREATE TABLE later_table(x int); INSERT INTO later_table VALUES (5);
         ALTER TABLE later_table OWNER TO app;",
    );
    for mut w in [wire(&proxy).await, wire(&proxy).await] {
        let got = run_batch(
            &mut w,
            &[parse("s1", missing), bind("", "s1", &[], &[]), execute("")],
        )
        .await;
        assert_eq!(rows(&got), vec![vec![s("5")]], "{got:?}");
    }
}

/// A statement prepared while its table existed, bound on a server connection where it was
/// never prepared after the table was dropped: the lazy Parse fails and the client gets the
/// server's own error. Once the table is back, the statement works there, for this client and
/// for another that prepares the same text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_lazy_prepare_passes_the_real_error() {
    let (pg, proxy) = setup(2).await;
    admin(
        &pg,
        "CREATE TABLE t_tmp(id int, v text); INSERT INTO t_tmp VALUES (1, 'one');
         ALTER TABLE t_tmp OWNER TO app;",
    );
    let mut router = Router::new(&proxy).await;
    let mut a = wire(&proxy).await;
    let sql = "SELECT * FROM t_tmp";
    let (p1, got) = with_pid(
        &mut a,
        &[parse("s1", sql), bind("", "s1", &[], &[]), execute("")],
    )
    .await;
    assert_eq!(rows(&got), vec![vec![s("1"), s("one")]], "{got:?}");

    // Straight to PostgreSQL, for comparison.
    let mut d = wire_direct(&pg).await;
    run_batch(&mut d, &[parse("s1", sql)]).await;

    admin(&pg, "DROP TABLE t_tmp");
    let direct = bind_execute(&mut d, "s1", &[]).await;
    let relation_missing = vec![(
        "42P01".to_owned(),
        "relation \"t_tmp\" does not exist".to_owned(),
    )];
    assert_eq!(error_texts(&direct), relation_missing);
    assert_eq!(direct.last(), Some(&Msg::Ready('I')));

    let p2 = router.other(p1);
    router.route_to(p2).await;
    let (pid, got) = with_pid(&mut a, &[bind("", "s1", &[], &[]), execute("")]).await;
    assert_eq!(pid, p2);
    assert_eq!(
        without_routines(&got),
        without_routines(&direct),
        "the server's error for the lazy Parse"
    );
    // Alone in its pipeline, too.
    let got = run_named(&mut a, "s1").await;
    assert_eq!(without_routines(&got), without_routines(&direct));

    // The table comes back: the statement works on p2 (nothing stale left behind).
    admin(
        &pg,
        "CREATE TABLE t_tmp(id int, v text); INSERT INTO t_tmp VALUES (2, 'two');
         ALTER TABLE t_tmp OWNER TO app;",
    );
    let (pid, got) = with_pid(&mut a, &[bind("", "s1", &[], &[]), execute("")]).await;
    assert_eq!(pid, p2);
    assert_eq!(rows(&got), vec![vec![s("2"), s("two")]], "{got:?}");
    let mut b = wire(&proxy).await;
    let (pid, got) = with_pid(
        &mut b,
        &[parse("q", sql), bind("", "q", &[], &[]), execute("")],
    )
    .await;
    assert_eq!(pid, p2);
    assert_eq!(rows(&got), vec![vec![s("2"), s("two")]], "{got:?}");
    router.release().await;
}

/// Two Sync-terminated batches in one write (what tokio-postgres sends when two tasks query on
/// one client at once, and what pipelining drivers do): both are answered, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_syncs_in_one_write_are_both_answered() {
    let (_pg, proxy) = setup(2).await;
    let mut a = wire(&proxy).await;
    assert_eq!(
        run_batch(&mut a, &[parse("s1", PLUS_ONE)]).await,
        vec![Msg::ParseComplete, Msg::Ready('I')]
    );
    a.send(&[
        bind("", "s1", &["1"], &[]),
        execute(""),
        sync(),
        bind("", "s1", &["2"], &[]),
        execute(""),
        sync(),
    ])
    .await;
    let answers = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        (a.until_ready().await, a.until_ready().await)
    })
    .await
    .expect("both batches answered within 10 s");
    assert_eq!(answers, (one_row(vec![s("2")]), one_row(vec![s("3")])));

    // tokio-postgres: one client, two tasks querying at once.
    let c = std::sync::Arc::new(connect(&proxy_url(&proxy)).await);
    let st = c.prepare(PLUS_ONE).await.expect("prepare");
    let mut tasks = Vec::new();
    for t in 0..2i32 {
        let (c, st) = (c.clone(), st.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..20i32 {
                let r = c.query_one(&st, &[&(t * 100 + i)]).await.expect("query");
                assert_eq!(r.get::<_, i32>(0), t * 100 + i + 1);
            }
        }));
    }
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        for t in tasks {
            t.await.expect("task");
        }
    })
    .await
    .expect("concurrent queries on one client finish");
}

/// With `max_prepared_statements = 2`, a client using five statements in rotation on one server
/// connection makes pgheal evict (Close) and prepare again all the time: every result is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_every_statement_working() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| {
        a.pool_mode = Some("transaction".into());
        a.pool_size = Some(1);
        a.max_prepared_statements = Some(2);
    })
    .await;
    let mut a = wire(&proxy).await;
    let mut b = wire(&proxy).await;
    for k in 0..5 {
        let sql = format!("SELECT $1::int + {k}");
        assert_eq!(
            prepare_run(&mut a, &format!("s{k}"), &sql).await,
            vec![vec![s(&(1 + k).to_string())]]
        );
    }
    for round in 0..3 {
        for k in 0..5 {
            let name = format!("s{k}");
            // B interleaves its own statement, so the connection's set keeps changing.
            if k % 2 == 0 {
                let times_three = [
                    parse("", "SELECT $1::int * 3"),
                    bind("", "", &[&round.to_string()], &[]),
                    execute(""),
                ];
                assert_eq!(
                    rows(&run_batch(&mut b, &times_three).await),
                    vec![vec![s(&(round * 3).to_string())]]
                );
            }
            let got = bind_execute(&mut a, &name, &[&round.to_string()]).await;
            assert_eq!(
                rows(&got),
                vec![vec![s(&(round + k).to_string())]],
                "round {round}, {name}: {got:?}"
            );
        }
    }
}

/// A lazy prepare (and the Close of the statement it evicts) that the server skips because an
/// earlier message of the batch failed: the record must not claim the statement is there, or
/// the next use fails with "prepared statement does not exist" (or 42P05 on a re-Parse).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_prepare_skipped_after_an_error_is_redone() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| {
        a.pool_mode = Some("transaction".into());
        a.pool_size = Some(1);
        a.max_prepared_statements = Some(1);
    })
    .await;
    let mut a = wire(&proxy).await;
    assert_eq!(
        prepare_run(&mut a, "one", "SELECT $1::int + 1").await,
        vec![vec![s("2")]]
    );
    // "two" evicts "one" from the only server connection.
    assert_eq!(
        prepare_run(&mut a, "two", "SELECT $1::int + 2").await,
        vec![vec![s("3")]]
    );
    // "two" fails at Bind; the lazy re-prepare of "one" (and the eviction of "two") after it
    // are skipped by the server.
    let mut batch = run_stmt("two", &["not a number"]);
    batch.extend(run_stmt("one", &["5"]));
    let got = run_batch(&mut a, &batch).await;
    assert_eq!(errors(&got), vec!["22P02".to_string()], "{got:?}");
    for (name, arg, want) in [("one", "10", "11"), ("two", "10", "12"), ("one", "1", "2")] {
        let got = bind_execute(&mut a, name, &[arg]).await;
        assert_eq!(rows(&got), vec![vec![s(want)]], "{name}: {got:?}");
    }
}
