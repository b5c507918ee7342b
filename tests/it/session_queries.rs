//! Queries through pgheal return exactly what PostgreSQL returns directly: simple and extended
//! protocol, binary parameters of many types, COPY both ways, LISTEN/NOTIFY, a 20 MiB value,
//! and an error in the middle of a streamed result.

use crate::common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::{pin_mut, SinkExt, StreamExt, TryStreamExt};
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, Client, SimpleQueryMessage};

/// Every row of every statement of a simple query, as text (NULL = None), with the
/// CommandComplete row counts in between.
async fn simple_rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let msgs = client.simple_query(sql).await.expect("simple query");
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            SimpleQueryMessage::CommandComplete(n) => Some(vec![Some(format!("complete {n}"))]),
            _ => None,
        })
        .collect()
}

const SIMPLE_SCRIPT: &str = "
    SELECT 1 AS a, 'two' AS b, NULL::int AS c, 3.5::float8 AS d, true AS e;
    SELECT g, g * g, repeat('x', g), (g % 2 = 0) FROM generate_series(1, 50) g;
    SELECT '2024-02-29 12:34:56.789+00'::timestamptz, '1.5 days'::interval, '{1,2,NULL}'::int[],
           '\\xdeadbeef'::bytea, '{\"k\": [1, 2]}'::jsonb, 12345678901234567890.123::numeric,
           'a''quote'::text, E'tab\\there', '11111111-2222-3333-4444-555555555555'::uuid;
    SELECT * FROM (VALUES (1, 'x'), (2, NULL)) v(i, t) WHERE false;
    SET LOCAL work_mem = '4MB';
    SHOW TimeZone;
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_protocol_matches_direct() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let direct = connect(&direct_url(&pg)).await;
    let via = connect(&proxy_url(&proxy)).await;

    let expected = simple_rows(&direct, SIMPLE_SCRIPT).await;
    let got = simple_rows(&via, SIMPLE_SCRIPT).await;
    assert_eq!(got, expected);
    // Spot-check the data itself, not only the equality.
    assert_eq!(
        got[0],
        vec![
            Some("1".into()),
            Some("two".into()),
            None,
            Some("3.5".into()),
            Some("t".into())
        ]
    );
    assert_eq!(got.iter().filter(|r| r.len() == 4).count(), 50);
    assert!(got.contains(&vec![Some("complete 50".into())]));
}

/// One row of the typed table, read in binary format.
#[derive(Debug, PartialEq, Clone)]
struct Typed {
    id: i32,
    small: i16,
    big: i64,
    real: f32,
    double: f64,
    flag: bool,
    txt: String,
    raw: Vec<u8>,
    maybe: Option<i64>,
    arr: Vec<i32>,
    at: SystemTime,
    ch: i8,
    oid: u32,
}

fn sample(i: i32) -> Typed {
    Typed {
        id: i,
        small: (i * 7 - 300) as i16,
        big: i64::MAX - i as i64,
        real: i as f32 * 0.25,
        double: -1.0e300 / (i as f64 + 1.0),
        flag: i % 3 == 0,
        txt: format!("row {i}: ünïcödé ✓ 'quoted' \"double\" \\ back"),
        raw: (0..=255u8)
            .cycle()
            .skip(i as usize)
            .take(300 + i as usize)
            .collect(),
        maybe: if i % 2 == 0 { Some(-(i as i64)) } else { None },
        arr: (0..i).collect(),
        at: UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_000 + i as u64 * 1_000_001),
        ch: (b'a' + (i % 26) as u8) as i8,
        oid: 4_000_000_000 + i as u32,
    }
}

async fn read_typed(client: &Client) -> Vec<Typed> {
    let stmt = client
        .prepare(
            "SELECT id, small, big, real, double, flag, txt, raw, maybe, arr, at, ch, o \
             FROM typed WHERE id >= $1 ORDER BY id",
        )
        .await
        .expect("prepare select");
    let rows = client.query(&stmt, &[&0i32]).await.expect("select typed");
    rows.iter()
        .map(|r| Typed {
            id: r.get(0),
            small: r.get(1),
            big: r.get(2),
            real: r.get(3),
            double: r.get(4),
            flag: r.get(5),
            txt: r.get(6),
            raw: r.get(7),
            maybe: r.get(8),
            arr: r.get(9),
            at: r.get(10),
            ch: r.get(11),
            oid: r.get(12),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_binary_params_match_direct() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let via = connect(&proxy_url(&proxy)).await;
    via.batch_execute(
        "CREATE TABLE typed (id int PRIMARY KEY, small int2, big int8, real float4, \
         double float8, flag bool, txt text, raw bytea, maybe int8, arr int4[], \
         at timestamp, ch \"char\", o oid)",
    )
    .await
    .expect("create table via pgheal");

    // One prepared statement executed many times with binary parameters, through pgheal.
    let insert = via
        .prepare(
            "INSERT INTO typed VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .await
        .expect("prepare insert");
    let rows: Vec<Typed> = (0..40).map(sample).collect();
    for t in &rows {
        let params: [&(dyn ToSql + Sync); 13] = [
            &t.id, &t.small, &t.big, &t.real, &t.double, &t.flag, &t.txt, &t.raw, &t.maybe, &t.arr,
            &t.at, &t.ch, &t.oid,
        ];
        assert_eq!(via.execute(&insert, &params).await.expect("insert"), 1);
    }

    let through = read_typed(&via).await;
    let direct = read_typed(&connect(&direct_url(&pg)).await).await;
    assert_eq!(through, rows, "values read through pgheal");
    assert_eq!(direct, rows, "values read directly");

    // Unnamed statements, text-format results of an expression, parameters of other types.
    let r = via
        .query_one(
            "SELECT $1::text || '!', $2::int8 + 1, $3::float8 * 2, $4::bool, $5::bytea, \
             array_length($6::text[], 1)",
            &[
                &"hé",
                &41i64,
                &1.25f64,
                &false,
                &vec![0u8, 1, 2],
                &vec!["a", "b", "c"],
            ],
        )
        .await
        .expect("query_one");
    assert_eq!(r.get::<_, String>(0), "hé!");
    assert_eq!(r.get::<_, i64>(1), 42);
    assert_eq!(r.get::<_, f64>(2), 2.5);
    assert!(!r.get::<_, bool>(3));
    assert_eq!(r.get::<_, Vec<u8>>(4), vec![0, 1, 2]);
    assert_eq!(r.get::<_, i32>(5), 3);

    // An error in the extended protocol leaves the session usable.
    let err = via
        .query("SELECT 1 FROM no_such_table", &[])
        .await
        .expect_err("missing table");
    assert_eq!(sqlstate(&err).as_deref(), Some("42P01"));
    let n: i64 = via
        .query_one("SELECT count(*) FROM typed", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out_through_pgheal() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let via = connect(&proxy_url(&proxy)).await;
    via.batch_execute("CREATE TABLE c (id int, name text, note text)")
        .await
        .expect("create");

    let mut data = String::new();
    for i in 0..5000 {
        let note = if i % 10 == 0 {
            "\\N".to_owned()
        } else {
            format!("n\\t{i}")
        };
        data.push_str(&format!("{i}\tname-{i}\t{note}\n"));
    }
    let sink = via
        .copy_in("COPY c (id, name, note) FROM STDIN")
        .await
        .expect("copy in");
    pin_mut!(sink);
    // Several chunks, split in the middle of lines.
    for chunk in data.as_bytes().chunks(7777) {
        sink.send(bytes::Bytes::copy_from_slice(chunk))
            .await
            .expect("send copy data");
    }
    assert_eq!(sink.finish().await.expect("finish copy"), 5000);

    let stats = via
        .query_one(
            "SELECT count(*), sum(id), count(note), max(name) FROM c",
            &[],
        )
        .await
        .expect("stats");
    assert_eq!(stats.get::<_, i64>(0), 5000);
    assert_eq!(stats.get::<_, i64>(1), (0..5000i64).sum::<i64>());
    assert_eq!(stats.get::<_, i64>(2), 4500);
    assert_eq!(stats.get::<_, String>(3), "name-999");

    async fn copy_out(client: &Client) -> Vec<u8> {
        let stream = client
            .copy_out("COPY (SELECT * FROM c ORDER BY id) TO STDOUT")
            .await
            .expect("copy out");
        let chunks: Vec<bytes::Bytes> = stream.try_collect().await.expect("copy out data");
        chunks.concat()
    }
    let through = copy_out(&via).await;
    let direct = copy_out(&connect(&direct_url(&pg)).await).await;
    assert_eq!(through.len(), data.len());
    assert_eq!(
        through,
        data.as_bytes(),
        "COPY TO STDOUT gives back what went in"
    );
    assert_eq!(through, direct);

    // A COPY FROM STDIN that fails on bad data reports 22P02 and the session goes on.
    let sink = via.copy_in("COPY c FROM STDIN").await.expect("copy in 2");
    pin_mut!(sink);
    let sent = sink
        .send(bytes::Bytes::from_static(b"1\ta\tb\nnot-a-number\tb\tc\n"))
        .await;
    let err = match sent {
        Err(e) => e,
        Ok(()) => sink.finish().await.expect_err("bad copy data must fail"),
    };
    assert_eq!(sqlstate(&err).as_deref(), Some("22P02"));
    let n: i64 = via
        .query_one("SELECT count(*) FROM c", &[])
        .await
        .expect("count after failed copy")
        .get(0);
    assert_eq!(n, 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_through_pgheal() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let (listener, mut conn) = tokio_postgres::connect(&proxy_url(&proxy), tokio_postgres::NoTls)
        .await
        .expect("connect listener");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(m) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send((
                        n.channel().to_owned(),
                        n.payload().to_owned(),
                        n.process_id(),
                    ));
                }
                Ok(AsyncMessage::Notice(n)) => {
                    let _ = tx.send(("notice".to_owned(), n.message().to_owned(), 0));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    listener.batch_execute("LISTEN jobs").await.expect("LISTEN");

    // One NOTIFY straight on the server, one through pgheal.
    let direct = connect(&direct_url(&pg)).await;
    let direct_pid = backend_pid(&direct).await;
    direct
        .batch_execute("NOTIFY jobs, 'direct payload ✓'")
        .await
        .expect("NOTIFY direct");
    let via = connect(&proxy_url(&proxy)).await;
    let via_pid = backend_pid(&via).await;
    via.execute("SELECT pg_notify('jobs', $1)", &[&"via pgheal"])
        .await
        .expect("pg_notify via pgheal");

    // A NOTICE raised in the listener's own session arrives too.
    listener
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'note %', 7; END $$")
        .await
        .expect("RAISE NOTICE");

    let mut got = Vec::new();
    for _ in 0..3 {
        let n = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("a notification arrives")
            .expect("listener connection alive");
        got.push(n);
    }
    assert_eq!(
        got,
        vec![
            ("jobs".to_owned(), "direct payload ✓".to_owned(), direct_pid),
            ("jobs".to_owned(), "via pgheal".to_owned(), via_pid),
            ("notice".to_owned(), "note 7".to_owned(), 0),
        ]
    );
    // The listener still answers queries.
    let one: i32 = listener
        .query_one("SELECT 1", &[])
        .await
        .expect("query after notifications")
        .get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_mib_values_round_trip() {
    const LEN: usize = 20 << 20;
    let pg = start_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let via = connect(&proxy_url(&proxy)).await;
    via.batch_execute("CREATE TABLE big (id int, t text, b bytea)")
        .await
        .expect("create");

    let text: String = (0..LEN)
        .map(|i| char::from(b'a' + ((i * 7 + i / 1000) % 26) as u8))
        .collect();
    let bin: Vec<u8> = (0..LEN).map(|i| (i * 31 + i / 4096) as u8).collect();
    let n = via
        .execute("INSERT INTO big VALUES (1, $1, $2)", &[&text, &bin])
        .await
        .expect("insert 20 MiB values");
    assert_eq!(n, 1);

    // The server got every byte.
    let r = via
        .query_one(
            "SELECT length(t), length(b), md5(t), md5(b) FROM big WHERE id = 1",
            &[],
        )
        .await
        .expect("server-side lengths");
    assert_eq!(r.get::<_, i32>(0) as usize, LEN);
    assert_eq!(r.get::<_, i32>(1) as usize, LEN);
    let md5_hex = |data: &[u8]| {
        use md5::{Digest, Md5};
        Md5::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    assert_eq!(r.get::<_, String>(2), md5_hex(text.as_bytes()));
    assert_eq!(r.get::<_, String>(3), md5_hex(&bin));

    // And they come back whole, in binary (extended) and text (simple) format.
    let r = via
        .query_one("SELECT t, b FROM big WHERE id = 1", &[])
        .await
        .expect("read back");
    assert!(r.get::<_, String>(0) == text, "text value differs");
    assert!(r.get::<_, Vec<u8>>(1) == bin, "bytea value differs");
    let msgs = via
        .simple_query("SELECT t FROM big WHERE id = 1")
        .await
        .expect("simple read back");
    let row = msgs
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("one row");
    assert!(row == text, "text value differs (simple protocol)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_in_the_middle_of_a_result_keeps_the_session() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let via = connect(&proxy_url(&proxy)).await;
    let pid = backend_pid(&via).await;
    const SQL: &str = "SELECT 1/(g-500) FROM generate_series(1,1000) g";

    // Simple protocol.
    let err = via.simple_query(SQL).await.expect_err("division by zero");
    assert_eq!(sqlstate(&err).as_deref(), Some("22012"));

    // Extended protocol, streamed: the rows before the error arrive, then the error.
    let stream = via
        .query_raw(SQL, std::iter::empty::<i32>())
        .await
        .expect("query_raw");
    pin_mut!(stream);
    let mut rows = 0;
    let err = loop {
        match stream.next().await {
            Some(Ok(row)) => {
                rows += 1;
                assert_eq!(row.get::<_, i32>(0), 1 / (rows - 500));
            }
            Some(Err(e)) => break e,
            None => panic!("the query must fail"),
        }
    };
    assert_eq!(rows, 499, "rows streamed before the error");
    assert_eq!(sqlstate(&err).as_deref(), Some("22012"));

    // Same session, same server connection, still working.
    let r = via
        .query_one("SELECT 42, pg_backend_pid()", &[])
        .await
        .expect("query after the error");
    assert_eq!(r.get::<_, i32>(0), 42);
    assert_eq!(r.get::<_, i32>(1), pid);
    let msgs = simple_rows(&via, "SELECT 'still here'").await;
    assert_eq!(msgs[0], vec![Some("still here".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_come_back_in_order() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let via = connect(&proxy_url(&proxy)).await;
    let stmt = via
        .prepare("SELECT $1::int * 2, repeat('y', $1)")
        .await
        .expect("prepare");
    // tokio-postgres pipelines concurrent queries of one client on its connection.
    let queries = (0..200).map(|i: i32| {
        let (via, stmt) = (&via, &stmt);
        async move {
            if i % 50 == 7 {
                // An error inside the pipeline fails only its own query.
                let e = via
                    .query_one("SELECT 1/0", &[])
                    .await
                    .expect_err("division by zero");
                assert_eq!(sqlstate(&e).as_deref(), Some("22012"));
                return (i, -1, 0);
            }
            let r = via.query_one(stmt, &[&i]).await.expect("pipelined query");
            (i, r.get::<_, i32>(0), r.get::<_, String>(1).len())
        }
    });
    let results = futures_util::future::join_all(queries).await;
    for (i, doubled, len) in results {
        if i % 50 == 7 {
            assert_eq!((doubled, len), (-1, 0));
        } else {
            assert_eq!((doubled, len), (i * 2, i as usize), "query {i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_batches_of_unprepared_statements_and_empty_queries() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let via = connect(&proxy_url(&proxy)).await;
    // Concurrent simple queries of one client are pipelined on its connection.
    let queries = (0..100).map(|i: i32| {
        let via = &via;
        async move {
            let msgs = via
                .simple_query(&format!("SELECT {i} * 2; SELECT repeat('y', {i})"))
                .await
                .expect("pipelined simple query");
            let vals: Vec<String> = msgs
                .iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .collect();
            (i, vals)
        }
    });
    for (i, vals) in futures_util::future::join_all(queries).await {
        assert_eq!(vals, vec![(i * 2).to_string(), "y".repeat(i as usize)]);
    }
    // The empty query is answered too.
    let msgs = via.simple_query("").await.expect("empty query");
    assert!(msgs
        .iter()
        .all(|m| !matches!(m, SimpleQueryMessage::Row(_))));
    via.batch_execute(";;").await.expect("only semicolons");
    assert_eq!(backend_pid(&via).await, backend_pid(&via).await);
}
