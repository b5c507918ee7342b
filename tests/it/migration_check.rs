//! `pgheal check-migration` against a real PostgreSQL: statements recorded through a running
//! pgheal (`--record-statements`) by a real client (tokio-postgres prepares them), then the
//! binary run with one migration per kind of change: ADD COLUMN, DROP COLUMN, ALTER TYPE,
//! RENAME, CREATE OR REPLACE VIEW, DROP/CREATE VIEW, and CREATE INDEX CONCURRENTLY (which
//! cannot run in a transaction: a scratch database). Each class (unchanged, healed by
//! re-prepare, healed by projection, breaks through pgheal, fails outright) comes up, and the
//! database is the same afterwards. Finally a migration is applied for real, to see that what
//! the check called healed by re-prepare is healed by the running pgheal and is 0A000 straight
//! to PostgreSQL.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::bin::pgheal_cmd;
use common::certs::Dir;
use common::{admin, connect, direct_url, proxy_url, sqlstate, start_pg, DB, PASSWORD, USER};
use pgheal::cluster::TempCluster;

const STAR: &str = "SELECT * FROM orders WHERE id = $1";
const COLS: &str = "SELECT id, customer FROM orders WHERE id = $1";
const NOTE: &str = "SELECT id, note FROM orders WHERE id = $1";
const CODE: &str = "SELECT id, code FROM orders WHERE id = $1";
const TOTALS: &str = "SELECT * FROM order_totals";
const CUSTOMERS: &str = "SELECT * FROM order_customers";
const ITEMS: &str = "SELECT * FROM items";
const INSERT: &str = "INSERT INTO items VALUES ($1, $2, $3)";

const SCHEMA: &str = "
    CREATE TABLE orders(id int PRIMARY KEY, customer text, total numeric, code varchar(10), note text);
    INSERT INTO orders VALUES (1, 'alice', 9.50, 'A1', 'first'), (2, 'bob', 20, 'B2', 'second');
    CREATE TABLE items(id int PRIMARY KEY, qty int, label text);
    CREATE VIEW order_totals AS SELECT id, total FROM orders;
    CREATE VIEW order_customers AS SELECT id, customer FROM orders;
    ALTER TABLE orders OWNER TO app;
    ALTER TABLE items OWNER TO app;
    ALTER VIEW order_totals OWNER TO app;
    ALTER VIEW order_customers OWNER TO app;
    ALTER ROLE app CREATEDB;";

/// What could change: columns, views, indexes, and the databases of the cluster.
fn schema_snapshot(pg: &TempCluster) -> String {
    let columns = admin(
        pg,
        "SELECT table_name, column_name, data_type, coalesce(character_maximum_length, 0), ordinal_position
         FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 5",
    );
    let views = admin(
        pg,
        "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1",
    );
    let indexes = admin(
        pg,
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
    );
    let dbs = admin(pg, "SELECT datname FROM pg_database ORDER BY 1");
    format!("{columns}\n--\n{views}\n--\n{indexes}\n--\n{dbs}")
}

struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

async fn check(pg: &TempCluster, statements: &Path, migration: &Path, format: &str) -> Run {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        pgheal_cmd()
            .arg("check-migration")
            .arg("--upstream")
            .arg(direct_url(pg))
            .arg("--statements")
            .arg(statements)
            .args(["--format", format])
            .arg(migration)
            .output(),
    )
    .await
    .expect("check-migration ends within 120 s")
    .expect("run pgheal check-migration");
    Run {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The JSON report: (mode, exit_status, verdict per statement text, the rows).
async fn check_json(
    pg: &TempCluster,
    statements: &Path,
    migration: &Path,
) -> (String, BTreeMap<String, serde_json::Value>, i32) {
    let run = check(pg, statements, migration, "json").await;
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): status {} stdout {} stderr {}",
            run.status, run.stdout, run.stderr
        )
    });
    assert_eq!(
        v["exit_status"].as_i64(),
        Some(run.status as i64),
        "exit status as reported: {}",
        run.stderr
    );
    let rows = v["statements"]
        .as_array()
        .expect("statements array")
        .iter()
        .map(|r| (r["sql"].as_str().unwrap().to_owned(), r.clone()))
        .collect();
    (v["mode"].as_str().unwrap().to_owned(), rows, run.status)
}

fn verdict(rows: &BTreeMap<String, serde_json::Value>, sql: &str) -> String {
    rows.get(sql)
        .unwrap_or_else(|| panic!("{sql} is in the report: {rows:?}"))["verdict"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn direct_0a000(rows: &BTreeMap<String, serde_json::Value>, sql: &str) -> bool {
    rows[sql]["direct_0a000"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classifies_each_kind_of_migration_and_changes_nothing() {
    let pg = start_pg();
    admin(&pg, SCHEMA);
    let dir = Dir::new("migcheck");
    let recorded: PathBuf = dir.0.join("statements.jsonl");

    // Record: the app prepares its statements through pgheal.
    let proxy = common::start_proxy(&pg, |a| {
        a.record_statements = Some(recorded.display().to_string());
    })
    .await;
    let app = connect(&proxy_url(&proxy)).await;
    let all = [STAR, COLS, NOTE, CODE, TOTALS, CUSTOMERS, ITEMS, INSERT];
    let mut prepared = Vec::new();
    for sql in all {
        prepared.push(
            app.prepare(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        );
    }
    // Preparing again (another session too) adds nothing.
    let again = connect(&proxy_url(&proxy)).await;
    again.prepare(STAR).await.expect("prepare again");
    let text = std::fs::read_to_string(&recorded).expect("the statements file is written");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), all.len(), "{text}");
    let star = lines
        .iter()
        .find(|l| l["sql"] == STAR)
        .expect("STAR recorded");
    assert_eq!(star["database"], DB);
    let names: Vec<&str> = star["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["id", "customer", "total", "code", "note"]);
    assert_eq!(star["columns"][3]["type_mod"], 14, "varchar(10)");
    let insert = lines.iter().find(|l| l["sql"] == INSERT).unwrap();
    assert_eq!(insert["columns"].as_array().unwrap().len(), 0, "NoData");

    let before = schema_snapshot(&pg);

    // ADD COLUMN: SELECT * is projected; named columns are unchanged.
    let m = dir.write("add.sql", "ALTER TABLE orders ADD COLUMN discount int;");
    let (mode, rows, status) = check_json(&pg, &recorded, &m).await;
    assert_eq!(mode, "rolled_back_transaction");
    assert_eq!(status, 0);
    assert_eq!(verdict(&rows, STAR), "healed_projection");
    assert!(direct_0a000(&rows, STAR));
    for sql in [COLS, NOTE, CODE, TOTALS, CUSTOMERS, ITEMS, INSERT] {
        assert_eq!(verdict(&rows, sql), "unchanged", "{sql}");
        assert!(!direct_0a000(&rows, sql));
    }
    assert!(
        rows.values().all(|r| r["already_differs"] == false),
        "{rows:?}"
    );

    // DROP COLUMN: a contract column gone breaks SELECT *; naming it fails outright.
    let m = dir.write("drop.sql", "ALTER TABLE orders DROP COLUMN note;");
    let (_, rows, status) = check_json(&pg, &recorded, &m).await;
    assert_eq!(status, 1, "something breaks: CI must stop");
    assert_eq!(verdict(&rows, STAR), "breaks");
    assert!(direct_0a000(&rows, STAR));
    assert!(
        rows[STAR]["reason"]
            .as_str()
            .unwrap()
            .contains("\"note\" is gone"),
        "{:?}",
        rows[STAR]
    );
    assert_eq!(verdict(&rows, NOTE), "fails");
    assert_eq!(rows[NOTE]["sqlstate"], "42703");
    assert!(!direct_0a000(&rows, NOTE));
    assert_eq!(verdict(&rows, COLS), "unchanged");

    // ALTER TYPE: a wider varchar is the same column for pgheal (re-prepare; PostgreSQL's
    // check includes the typmod); int to bigint breaks the contract.
    let m = dir.write(
        "type.sql",
        "ALTER TABLE orders ALTER COLUMN code TYPE varchar(20);
         ALTER TABLE items ALTER COLUMN qty TYPE bigint;",
    );
    let (_, rows, status) = check_json(&pg, &recorded, &m).await;
    assert_eq!(status, 1);
    assert_eq!(verdict(&rows, CODE), "healed_reprepare");
    assert!(direct_0a000(&rows, CODE));
    assert_eq!(verdict(&rows, STAR), "healed_reprepare");
    assert_eq!(verdict(&rows, ITEMS), "breaks");
    assert!(rows[ITEMS]["reason"]
        .as_str()
        .unwrap()
        .contains("changed type"));
    assert_eq!(verdict(&rows, INSERT), "unchanged");

    // RENAME: SELECT * gets the column under its new name (same table column: re-prepare);
    // a statement naming it fails outright; the view keeps its own column name.
    let m = dir.write(
        "rename.sql",
        "ALTER TABLE orders RENAME COLUMN customer TO client;",
    );
    let (_, rows, status) = check_json(&pg, &recorded, &m).await;
    assert_eq!(status, 1);
    assert_eq!(verdict(&rows, STAR), "healed_reprepare");
    assert!(direct_0a000(&rows, STAR));
    assert_eq!(verdict(&rows, COLS), "fails");
    assert_eq!(rows[COLS]["sqlstate"], "42703");
    assert_eq!(verdict(&rows, CUSTOMERS), "unchanged");

    // CREATE OR REPLACE VIEW with a column added at the end: projected.
    let m = dir.write(
        "replace_view.sql",
        "CREATE OR REPLACE VIEW order_totals AS SELECT id, total, total * 2 AS doubled FROM orders;",
    );
    let (_, rows, status) = check_json(&pg, &recorded, &m).await;
    assert_eq!(status, 0);
    assert_eq!(verdict(&rows, TOTALS), "healed_projection");
    assert_eq!(verdict(&rows, STAR), "unchanged");

    // DROP VIEW / CREATE VIEW: the same columns again are unchanged (PostgreSQL re-plans
    // silently); a column retyped breaks.
    let m = dir.write(
        "recreate_view.sql",
        "DROP VIEW order_customers; CREATE VIEW order_customers AS SELECT id, customer FROM orders;
         DROP VIEW order_totals; CREATE VIEW order_totals AS SELECT id, total::text AS total FROM orders;",
    );
    let (_, rows, status) = check_json(&pg, &recorded, &m).await;
    assert_eq!(status, 1);
    assert_eq!(verdict(&rows, CUSTOMERS), "unchanged");
    assert!(!direct_0a000(&rows, CUSTOMERS));
    assert_eq!(verdict(&rows, TOTALS), "breaks");
    assert!(direct_0a000(&rows, TOTALS));

    // CREATE INDEX CONCURRENTLY cannot run in a transaction: a scratch database.
    let m = dir.write(
        "concurrently.sql",
        "CREATE INDEX CONCURRENTLY orders_customer ON orders(customer);
         ALTER TABLE orders ADD COLUMN discount int;",
    );
    let (mode, rows, status) = check_json(&pg, &recorded, &m).await;
    assert_eq!(mode, "scratch_database");
    assert_eq!(status, 0);
    assert_eq!(verdict(&rows, STAR), "healed_projection");
    for sql in [COLS, NOTE, CODE, TOTALS, CUSTOMERS, ITEMS, INSERT] {
        assert_eq!(verdict(&rows, sql), "unchanged", "{sql}");
    }

    // A migration with its own COMMIT must not commit on the upstream: a scratch database too.
    let m = dir.write(
        "own_transaction.sql",
        "BEGIN; ALTER TABLE items ADD COLUMN extra int; COMMIT;",
    );
    let (mode, rows, status) = check_json(&pg, &recorded, &m).await;
    assert_eq!(mode, "scratch_database");
    assert_eq!(status, 0);
    assert_eq!(verdict(&rows, ITEMS), "healed_projection");

    // Text and Markdown carry the same table.
    let m = dir.write("drop2.sql", "ALTER TABLE orders DROP COLUMN note;");
    let run = check(&pg, &recorded, &m, "text").await;
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stdout.contains("BREAKS even through pgheal"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("FAILS outright"), "{}", run.stdout);
    assert!(run.stdout.contains(STAR), "{}", run.stdout);
    let run = check(&pg, &recorded, &m, "markdown").await;
    assert_eq!(run.status, 1);
    assert!(
        run.stdout
            .contains("| # | statement | result | how | without pgheal |"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&format!("`{NOTE}`")), "{}", run.stdout);

    // A migration that fails is no verdict: exit status 2.
    let m = dir.write("bad.sql", "ALTER TABLE nowhere ADD COLUMN x int;");
    let run = check(&pg, &recorded, &m, "text").await;
    assert_eq!(run.status, 2, "{} {}", run.stdout, run.stderr);
    assert!(run.stderr.contains("42P01"), "{}", run.stderr);

    assert_eq!(schema_snapshot(&pg), before, "the database is unchanged");

    // What the check calls healed by re-prepare is what the running pgheal does, and a direct
    // client gets 0A000: a wider varchar and a renamed column, applied for real.
    let direct = connect(&direct_url(&pg)).await;
    let direct_star = direct.prepare(STAR).await.expect("prepare directly");
    let direct_code = direct.prepare(CODE).await.expect("prepare directly");
    let m = dir.write(
        "real.sql",
        "ALTER TABLE orders ALTER COLUMN code TYPE varchar(20);
         ALTER TABLE orders RENAME COLUMN customer TO client;",
    );
    let (_, rows, _) = check_json(&pg, &recorded, &m).await;
    assert_eq!(verdict(&rows, STAR), "healed_reprepare");
    assert_eq!(verdict(&rows, CODE), "healed_reprepare");
    assert_eq!(verdict(&rows, COLS), "fails");
    admin(&pg, &std::fs::read_to_string(&m).unwrap());
    for (i, sql) in [(0, STAR), (3, CODE)] {
        let rows = app
            .query(&prepared[i], &[&1i32])
            .await
            .unwrap_or_else(|e| panic!("{sql} through pgheal after the migration: {e}"));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<_, i32>(0), 1);
    }
    let star_row = app.query_one(&prepared[0], &[&1i32]).await.unwrap();
    assert_eq!(star_row.get::<_, String>(1), "alice");
    for stmt in [&direct_star, &direct_code] {
        let e = direct
            .query(stmt, &[&1i32])
            .await
            .expect_err("a direct client gets the error");
        assert_eq!(sqlstate(&e).as_deref(), Some("0A000"), "{e}");
    }
    let e = app
        .query(&prepared[1], &[&1i32])
        .await
        .expect_err("the renamed column fails outright through pgheal too");
    assert_eq!(sqlstate(&e).as_deref(), Some("42703"), "{e}");

    // The recording is now older than the schema: the check says so.
    let m = dir.write("later.sql", "ALTER TABLE items ADD COLUMN extra int;");
    let (_, rows, _) = check_json(&pg, &recorded, &m).await;
    assert_eq!(rows[STAR]["already_differs"], true);
    assert_eq!(rows[ITEMS]["already_differs"], false);
    assert_eq!(verdict(&rows, ITEMS), "healed_projection");
    let _ = (USER, PASSWORD);
}

/// In transaction pooling a statement can get its contract from the pool's cache (another
/// client prepared the same text): it is recorded once all the same, and statements that return
/// no rows are recorded with no columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_once_in_transaction_pooling() {
    let pg = start_pg();
    admin(&pg, SCHEMA);
    let dir = Dir::new("migcheck-txn");
    let recorded: PathBuf = dir.0.join("statements.jsonl");
    let proxy = common::start_proxy(&pg, |a| {
        a.pool_mode = Some("transaction".into());
        a.record_statements = Some(recorded.display().to_string());
    })
    .await;
    let one = connect(&proxy_url(&proxy)).await;
    let two = connect(&proxy_url(&proxy)).await;
    let a = one.prepare(STAR).await.expect("prepare");
    let b = two.prepare(STAR).await.expect("prepare in another session");
    two.prepare(INSERT).await.expect("prepare an INSERT");
    assert_eq!(one.query(&a, &[&1i32]).await.expect("run").len(), 1);
    assert_eq!(two.query(&b, &[&2i32]).await.expect("run").len(), 1);
    let text = std::fs::read_to_string(&recorded).expect("the statements file is written");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["sql"], STAR);
    assert_eq!(lines[0]["columns"].as_array().unwrap().len(), 5);
    assert_eq!(lines[1]["sql"], INSERT);
    assert_eq!(lines[1]["columns"].as_array().unwrap().len(), 0);

    // The file is enough for a check (the database name recorded is pgheal's).
    let m = dir.write("add.sql", "ALTER TABLE orders ADD COLUMN discount int;");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        pgheal_cmd()
            .arg("check-migration")
            .args(["--upstream", &direct_url(&pg)])
            .arg("--statements")
            .arg(&recorded)
            .args(["--database", DB, "--format", "json"])
            .arg(&m)
            .output(),
    )
    .await
    .expect("check-migration ends within 120 s")
    .expect("run pgheal check-migration");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(v["summary"]["healed_projection"], 1, "{v}");
    assert_eq!(v["summary"]["unchanged"], 1, "{v}");
}
