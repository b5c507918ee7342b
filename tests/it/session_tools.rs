//! PostgreSQL's own clients through pgheal: a psql script with `\copy` both ways, and pgbench
//! in its three query modes.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use common::pgbench::{assert_report, client_cmd, init, pgbench, run_ok};
use common::*;

/// A fresh scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pgheal-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sql_path(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "''"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_script_with_copy_in_and_out() {
    let pg = start_pg();
    let proxy = start_proxy(&pg, |_| {}).await;
    let scratch = Scratch::new("psql");

    // 1000 CSV rows to load with \copy (COPY FROM STDIN on the wire), quotes and NULLs included.
    let mut csv = String::new();
    for i in 1..=1000 {
        let label = if i % 100 == 0 {
            String::new()
        } else {
            format!("\"label, {i} \"\"q\"\"\"")
        };
        csv.push_str(&format!("{i},{label},{}.25\n", i * 2));
    }
    let input = scratch.path("in.csv");
    std::fs::write(&input, &csv).expect("write csv");
    let output = scratch.path("out.csv");

    let script = format!(
        "CREATE TABLE items (id int PRIMARY KEY, label text, price numeric(10,2));
\\copy items FROM {input} WITH (FORMAT csv)
BEGIN;
UPDATE items SET price = price + 1 WHERE id <= 10;
DELETE FROM items WHERE id > 990;
COMMIT;
SELECT count(*), count(label), sum(price) FROM items;
SELECT label FROM items WHERE id = 7;
PREPARE q(int) AS SELECT id * 10 FROM items WHERE id = $1;
EXECUTE q(42);
\\copy (SELECT id, label, price FROM items WHERE id % 97 = 0 ORDER BY id) TO {output} WITH (FORMAT csv)
SELECT current_user, current_database(), current_setting('application_name');
",
        input = sql_path(&input),
        output = sql_path(&output),
    );
    let script_path = scratch.path("script.sql");
    std::fs::write(&script_path, script).expect("write script");

    let mut c = client_cmd(&pg, "psql", proxy.addr.port());
    c.args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", DB, "-f"])
        .arg(&script_path);
    let stdout = run_ok(c, "psql through pgheal").await;
    let lines: Vec<&str> = stdout.lines().collect();
    // sum(price) over ids 1..=990 of 2*id + 0.25, plus 1 for each of the first ten.
    let sum: f64 = (1..=990).map(|i| (i * 2) as f64 + 0.25).sum::<f64>() + 10.0;
    assert_eq!(
        lines,
        vec![
            format!("990|981|{sum:.2}").as_str(),
            "label, 7 \"q\"",
            "420",
            "app|appdb|psql",
        ],
        "psql output"
    );

    // \copy TO wrote the rows the server has.
    let out = std::fs::read_to_string(&output).expect("read \\copy output");
    let expected: String = (1..=990)
        .filter(|i| i % 97 == 0)
        .map(|i| {
            let price = if i <= 10 { i * 2 + 1 } else { i * 2 };
            format!("{i},\"label, {i} \"\"q\"\"\",{price}.25\n")
        })
        .collect();
    assert_eq!(out, expected);
    assert_eq!(out.lines().count(), 10);

    // The server agrees, asked directly.
    assert_eq!(
        admin(&pg, "SELECT count(*), sum(id) FROM items"),
        format!("990|{}", (1..=990).sum::<i32>())
    );
}

async fn pgbench_through_pgheal(mode: &str) {
    let pg = start_pg();
    init(&pg).await;

    let proxy = start_proxy(&pg, |_| {}).await;
    let mut bench = pgbench(&pg, proxy.addr.port());
    bench.args(["-n", "-c", "4", "-j", "2", "-t", "50", "-M", mode, DB]);
    let stdout = run_ok(bench, &format!("pgbench -M {mode} through pgheal")).await;
    assert_report(&stdout, mode, 200, "pgbench output");
    // Every transaction left its row in pgbench_history, and the balances add up.
    assert_eq!(
        admin(
            &pg,
            "SELECT count(*), (SELECT sum(delta) FROM pgbench_history) = \
             (SELECT sum(abalance) FROM pgbench_accounts) FROM pgbench_history"
        ),
        "200|t"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_simple() {
    pgbench_through_pgheal("simple").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_extended() {
    pgbench_through_pgheal("extended").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_prepared() {
    pgbench_through_pgheal("prepared").await;
}
