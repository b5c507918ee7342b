//! Any client encoding through pgheal (issue 10, point 3): query text, statement and portal
//! names, parameters and COPY data are bytes in the client's encoding (LATIN9, EUC_JP,
//! SQL_ASCII, ...), forwarded untouched; where pgheal reads them (SQL-level PREPARE/EXECUTE,
//! statement names, heals) it reads bytes.
//!
//! Each scenario runs through pgheal in session and in transaction pooling, with names, text,
//! parameters and COPY data that are not UTF-8, and what it wrote is then read back straight
//! from PostgreSQL in UTF-8, so the server must have understood every byte in the client's
//! encoding. Before pgheal kept bytes as bytes, the first such message ended the session with
//! `08P01 invalid frontend message: string field is not valid UTF-8`.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::pgbench::client_cmd;
use common::wire::*;
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::{FileConfig, FileDatabase};
use pgheal::config::PoolMode;
use pgheal::heal::Outcome;
use pgheal::protocol::{encode, Frame};
use pgheal::proxy::ProxyHandle;
use tokio::io::AsyncWriteExt;

/// One client encoding and a word in it.
struct Case {
    /// The database, created with `encoding` (None: the cluster's UTF-8 `appdb`).
    db: &'static str,
    encoding: Option<&'static str>,
    client_encoding: &'static str,
    /// The client sets its encoding with `SET client_encoding` after login, not at startup.
    set_after_login: bool,
    /// Lower-case letters with bytes >= 0x80, in the client's encoding (so that the word is
    /// the same identifier quoted or not).
    word: &'static [u8],
    /// The same word in UTF-8, as a UTF-8 client reads it back (SQL_ASCII: the same bytes,
    /// the server converts nothing).
    utf8: &'static [u8],
}

/// "café€ü" in LATIN9 (€ is 0xA4, which LATIN1 reads as ¤).
const LATIN9: Case = Case {
    db: "latin9db",
    encoding: Some("LATIN9"),
    client_encoding: "LATIN9",
    set_after_login: false,
    word: b"caf\xe9\xa4\xfc",
    utf8: "caf\u{e9}\u{20ac}\u{fc}".as_bytes(),
};

/// "日本語" in EUC_JP.
const EUC_JP: Case = Case {
    db: "eucjpdb",
    encoding: Some("EUC_JP"),
    client_encoding: "EUC_JP",
    set_after_login: false,
    word: b"\xc6\xfc\xcb\xdc\xb8\xec",
    utf8: "\u{65e5}\u{672c}\u{8a9e}".as_bytes(),
};

/// Bytes that are no character in any encoding: SQL_ASCII stores them as they come.
const SQL_ASCII: Case = Case {
    db: "asciidb",
    encoding: Some("SQL_ASCII"),
    client_encoding: "SQL_ASCII",
    set_after_login: false,
    word: b"x\xe9\xff\x80",
    utf8: b"x\xe9\xff\x80",
};

/// The issue's own example: a UTF-8 database, `SET client_encoding TO latin9`.
const UTF8_DB_LATIN9_CLIENT: Case = Case {
    db: DB,
    encoding: None,
    client_encoding: "LATIN9",
    set_after_login: true,
    word: b"caf\xe9\xa4\xfc",
    utf8: "caf\u{e9}\u{20ac}\u{fc}".as_bytes(),
};

/// A cluster with the databases of `cases` (owned by `app`, C collation).
fn start_cluster(cases: &[&Case]) -> TempCluster {
    let pg = start_pg();
    for c in cases {
        if let Some(enc) = c.encoding {
            pg.psql(
                "postgres",
                &format!(
                    "CREATE DATABASE {} OWNER {USER} ENCODING '{enc}' LC_COLLATE 'C' LC_CTYPE 'C' \
                     TEMPLATE template0",
                    c.db
                ),
            )
            .expect("create database");
        }
    }
    pg
}

/// pgheal in `mode` in front of the databases of `cases`.
async fn start(pg: &TempCluster, mode: PoolMode, cases: &[&Case]) -> ProxyHandle {
    let mut file = FileConfig::default();
    for c in cases {
        file.databases.insert(
            c.db.to_owned(),
            FileDatabase {
                url: Some(pg.url(USER, PASSWORD, c.db)),
                pool_mode: Some(mode),
                pool_size: Some(2),
                ..Default::default()
            },
        );
    }
    file.users.insert(USER.to_owned(), PASSWORD.to_owned());
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        metrics_listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    start_proxy_with(file, &args).await
}

/// A client of `port` speaking the case's encoding.
async fn client(port: u16, case: &Case) -> Wire {
    if case.set_after_login {
        let mut w = Wire::connect(port, USER, PASSWORD, case.db).await;
        let set = format!("SET client_encoding TO {}", case.client_encoding);
        assert!(errors(&w.query(set).await).is_empty());
        w
    } else {
        let params = [("client_encoding", case.client_encoding)];
        Wire::connect_with(port, USER, PASSWORD, case.db, &params).await
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Bytes shown as escaped ASCII, for readable assertions (the escape is one-to-one).
fn esc(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

fn esc_rows(rows: Vec<Vec<Option<Vec<u8>>>>) -> Vec<Vec<Option<String>>> {
    rows.into_iter()
        .map(|r| r.into_iter().map(|c| c.as_deref().map(esc)).collect())
        .collect()
}

fn row(cols: &[&[u8]]) -> Vec<Option<String>> {
    cols.iter().map(|c| Some(esc(c))).collect()
}

/// Error SQLSTATEs and messages (escaped) of a frame list.
fn errs(frames: &[Frame]) -> Vec<(String, String)> {
    raw_errors(frames)
        .into_iter()
        .map(|(code, msg)| (code, esc(&msg)))
        .collect()
}

/// A simple query that must succeed.
async fn ok(w: &mut Wire, sql: &[u8]) -> Vec<Frame> {
    let f = w.query_frames(sql).await;
    assert!(errs(&f).is_empty(), "{}: {:?}", esc(sql), errs(&f));
    f
}

/// Send an extended-protocol batch ending in Sync; its frames, which must hold no error.
async fn batch(w: &mut Wire, frames: &[Frame]) -> Vec<Frame> {
    w.send(frames).await;
    let f = w.until_ready_frames().await;
    assert!(errs(&f).is_empty(), "{:?}", errs(&f));
    f
}

/// Everything the issue lists, through pgheal (`port`) in one pool mode (`tag` keeps the
/// modes' tables apart), then read back straight from PostgreSQL.
async fn scenario(pg: &TempCluster, proxy: &ProxyHandle, case: &Case, tag: &[u8]) {
    let w = case.word;
    let mut c = client(proxy.addr.port(), case).await;
    let table = cat(&[b"t", tag, b"_", w]);
    let col = cat(&[b"c_", w]);

    // Simple queries with such bytes in identifiers and literals.
    ok(
        &mut c,
        &cat(&[b"CREATE TABLE ", &table, b" (n int, ", &col, b" text)"]),
    )
    .await;
    ok(
        &mut c,
        &cat(&[b"INSERT INTO ", &table, b" VALUES (1, '", w, b"')"]),
    )
    .await;
    let f = ok(
        &mut c,
        &cat(&[b"SELECT n, ", &col, b" FROM ", &table, b" WHERE n = 1"]),
    )
    .await;
    assert_eq!(
        raw_columns(&f).iter().map(|n| esc(n)).collect::<Vec<_>>(),
        vec![esc(b"n"), esc(&col)]
    );
    assert_eq!(esc_rows(raw_rows(&f)), vec![row(&[b"1", w])]);

    // A named statement whose name and SQL are not UTF-8, bound with a parameter in the
    // client's encoding into a portal whose name is not UTF-8 either.
    let ins = cat(&[b"ins_", w]);
    let portal = cat(&[b"p_", w]);
    let f = batch(
        &mut c,
        &[
            parse(
                &ins,
                cat(&[b"INSERT INTO ", &table, b" VALUES ($1, $2 || '", w, b"')"]),
            ),
            bind_bytes(&portal, &ins, &[b"2", w], &[]),
            execute(&portal),
            sync(),
        ],
    )
    .await;
    let msgs: Vec<Msg> = f.iter().map(decode).collect();
    assert_eq!(
        msgs,
        vec![
            Msg::ParseComplete,
            Msg::BindComplete,
            Msg::CommandComplete("INSERT 0 1".into()),
            Msg::Ready('I')
        ]
    );
    // A row-returning one, described by name and through its portal, bound twice.
    let sel = cat(&[b"sel_", w]);
    batch(
        &mut c,
        &[
            parse(
                &sel,
                cat(&[b"SELECT ", &col, b" FROM ", &table, b" WHERE n = $1"]),
            ),
            describe_stmt(&sel),
            sync(),
        ],
    )
    .await;
    for _ in 0..2 {
        let f = batch(
            &mut c,
            &[
                bind_bytes(&portal, &sel, &[b"2"], &[]),
                describe_portal(&portal),
                execute(&portal),
                sync(),
            ],
        )
        .await;
        assert_eq!(raw_columns(&f), vec![col.clone()]);
        assert_eq!(esc_rows(raw_rows(&f)), vec![row(&[&cat(&[w, w])])]);
    }

    // SQL-level PREPARE/EXECUTE/DEALLOCATE with such names, unquoted and quoted (one query:
    // in transaction pooling SQL-level statements live on one server connection).
    let x = cat(&[b"x_", w]);
    let quoted = cat(&[b"\"X_", w, b"\""]);
    let f = ok(
        &mut c,
        &cat(&[
            b"PREPARE ",
            &x,
            b" (int) AS INSERT INTO ",
            &table,
            b" VALUES ($1, '",
            w,
            w,
            b"'); ",
            b"EXECUTE ",
            &x,
            b" (3); DEALLOCATE ",
            &x,
            b"; ",
            b"PREPARE ",
            &quoted,
            b" AS SELECT '",
            w,
            b"'::text; EXECUTE ",
            &quoted,
            b"; ",
            b"DEALLOCATE PREPARE ",
            &quoted,
        ]),
    )
    .await;
    assert_eq!(esc_rows(raw_rows(&f)), vec![row(&[w])]);

    // COPY FROM STDIN with data in the client's encoding.
    c.send(&[encode::query(cat(&[b"COPY ", &table, b" FROM STDIN"]))])
        .await;
    assert_eq!(c.recv().await, Msg::Other('G'), "CopyInResponse");
    c.send(&[
        encode::raw(b'd', &cat(&[b"4\t", w, b"\n"])),
        encode::raw(b'c', b""),
    ])
    .await;
    assert_eq!(
        c.until_ready().await,
        vec![Msg::CommandComplete("COPY 1".into()), Msg::Ready('I')]
    );

    // The server's error quotes the name in the client's encoding; the session goes on.
    let f = c.query_frames(cat(&[b"SELECT * FROM nope_", w])).await;
    let e = raw_errors(&f);
    assert_eq!(e.len(), 1, "{:?}", errs(&f));
    assert_eq!(e[0].0, "42P01");
    assert!(
        e[0].1
            .windows(w.len() + 5)
            .any(|m| m == cat(&[b"nope_", w])),
        "{:?}",
        errs(&f)
    );

    // A heal: ADD COLUMN under a cached statement whose name is not UTF-8 (and, in session
    // pooling, under an SQL-level one too).
    let stale = cat(&[b"stale_", w]);
    let run = [bind_bytes(b"", &stale, &[b"1"], &[]), execute(""), sync()];
    batch(
        &mut c,
        &[
            parse(&stale, cat(&[b"SELECT * FROM ", &table, b" WHERE n = $1"])),
            sync(),
        ],
    )
    .await;
    let before = batch(&mut c, &run).await;
    assert_eq!(esc_rows(raw_rows(&before)), vec![row(&[b"1", w])]);
    let sql_level = tag == b"s";
    let q = cat(&[b"q_", w]);
    if sql_level {
        ok(
            &mut c,
            &cat(&[
                b"PREPARE ",
                &q,
                b" AS SELECT * FROM ",
                &table,
                b" WHERE n = 1",
            ]),
        )
        .await;
        ok(&mut c, &cat(&[b"EXECUTE ", &q])).await;
    }
    let healed_before = heal_count(proxy, Outcome::Projected) + heal_count(proxy, Outcome::Healed);
    let mut direct = client(pg.port(), case).await;
    ok(
        &mut direct,
        &cat(&[b"ALTER TABLE ", &table, b" ADD COLUMN extra int DEFAULT 7"]),
    )
    .await;
    let after = batch(&mut c, &run).await;
    assert_eq!(
        esc_rows(raw_rows(&after)),
        vec![row(&[b"1", w])],
        "the rows keep their shape"
    );
    if sql_level {
        // The simple protocol describes every result: the new column shows.
        let f = ok(&mut c, &cat(&[b"EXECUTE ", &q])).await;
        assert_eq!(esc_rows(raw_rows(&f)), vec![row(&[b"1", w, b"7"])]);
    }
    let healed = heal_count(proxy, Outcome::Projected) + heal_count(proxy, Outcome::Healed);
    assert!(
        healed >= healed_before + 1 + u64::from(sql_level),
        "{healed_before} -> {healed}"
    );
    assert_eq!(heal_count(proxy, Outcome::Refused), 0);
    assert_eq!(
        esc_rows(raw_rows(&ok(&mut c, b"SELECT 1").await)),
        vec![row(&[b"1"])]
    );

    // Straight from PostgreSQL, in UTF-8: the server understood every byte. (A SQL_ASCII
    // database converts nothing, and its bytes are no UTF-8: read them as they are.)
    let u = case.utf8;
    let read_as = match case.encoding {
        Some("SQL_ASCII") => "SQL_ASCII",
        _ => "UTF8",
    };
    let mut d = Wire::connect_with(
        pg.port(),
        USER,
        PASSWORD,
        case.db,
        &[("client_encoding", read_as)],
    )
    .await;
    let f = ok(
        &mut d,
        &cat(&[b"SELECT n, c_", u, b" FROM t", tag, b"_", u, b" ORDER BY n"]),
    )
    .await;
    assert_eq!(
        esc_rows(raw_rows(&f)),
        vec![
            row(&[b"1", u]),
            row(&[b"2", &cat(&[u, u])]),
            row(&[b"3", &cat(&[u, u])]),
            row(&[b"4", u]),
        ]
    );
}

/// Run the scenario of each case through pgheal in both pool modes.
async fn both_modes(cases: &[&Case]) {
    let pg = start_cluster(cases);
    for (mode, tag) in [(PoolMode::Session, b"s"), (PoolMode::Transaction, b"t")] {
        let proxy = start(&pg, mode, cases).await;
        for case in cases {
            scenario(&pg, &proxy, case, tag).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latin9_database() {
    both_modes(&[&LATIN9]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn euc_jp_and_sql_ascii_databases() {
    both_modes(&[&EUC_JP, &SQL_ASCII]).await;
}

/// The example, and psql with `PGCLIENTENCODING=LATIN9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_client_encoding_latin9_in_a_utf8_database() {
    let case = &UTF8_DB_LATIN9_CLIENT;
    let pg = start_cluster(&[case]);
    for (mode, tag) in [(PoolMode::Session, "s"), (PoolMode::Transaction, "t")] {
        let proxy = start(&pg, mode, &[case]).await;
        scenario(&pg, &proxy, case, tag.as_bytes()).await;

        let script = cat(&[
            b"CREATE TABLE psql_",
            tag.as_bytes(),
            b" (v text);\n",
            b"INSERT INTO psql_",
            tag.as_bytes(),
            b" VALUES ('",
            case.word,
            b"');\n",
            b"PREPARE p\xe9 AS SELECT v FROM psql_",
            tag.as_bytes(),
            b";\n",
            b"EXECUTE p\xe9;\n",
        ]);
        let out = psql(&pg, proxy.addr.port(), "LATIN9", &script).await;
        assert_eq!(esc(&out), esc(case.word));
        let mut d = Wire::connect(pg.port(), USER, PASSWORD, DB).await;
        let f = ok(&mut d, format!("SELECT v FROM psql_{tag}").as_bytes()).await;
        assert_eq!(esc_rows(raw_rows(&f)), vec![row(&[case.utf8])]);
    }
}

/// psql of the cluster through `port` with `PGCLIENTENCODING`, the script on stdin; its output
/// (`-At`) as bytes.
async fn psql(pg: &TempCluster, port: u16, encoding: &str, script: &[u8]) -> Vec<u8> {
    let mut cmd = client_cmd(pg, "psql", port);
    cmd.env("PGCLIENTENCODING", encoding)
        .args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            DB,
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn psql");
    let mut stdin = child.stdin.take().expect("psql stdin");
    stdin.write_all(script).await.expect("write the script");
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("psql finished within 60 s")
        .expect("psql output");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut stdout = out.stdout;
    while stdout.last() == Some(&b'\n') {
        stdout.pop();
    }
    stdout
}

/// Transaction pooling shares statements between clients by their text, and the same bytes
/// mean other characters in another client encoding: `'\xc3\xa9'` is one character ("é") in
/// UTF-8 and two ("Ã©") in LATIN9. Two clients on one server connection each get their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_pooling_tells_client_encodings_apart() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |a| {
        a.pool_mode = Some("transaction".into());
        a.pool_size = Some(1);
    })
    .await;
    let port = proxy.addr.port();
    let mut utf8 = Wire::connect(port, USER, PASSWORD, DB).await;
    let mut latin9 =
        Wire::connect_with(port, USER, PASSWORD, DB, &[("client_encoding", "LATIN9")]).await;
    let sql: &[u8] = b"SELECT length('\xc3\xa9')";
    for w in [&mut utf8, &mut latin9] {
        batch(w, &[parse("len", sql), sync()]).await;
    }
    for _ in 0..2 {
        for (w, expected) in [(&mut utf8, "1"), (&mut latin9, "2")] {
            let f = batch(w, &[bind("", "len", &[], &[]), execute(""), sync()]).await;
            assert_eq!(esc_rows(raw_rows(&f)), vec![row(&[expected.as_bytes()])]);
        }
    }
}
