//! PostgreSQL's client programs (pgbench, psql) run against pgheal or the server: a hermetic
//! libpq environment, the password in PGPASSWORD, and pgbench's report checked.
#![allow(dead_code)]

use std::process::Output;

use pgheal::cluster::TempCluster;

use super::{DB, PASSWORD, USER};

/// Libpq variables that must not leak from the environment into the programs we run.
pub const LIBPQ_ENV: &[&str] = &[
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGCLIENTENCODING",
    "PGAPPNAME",
    "PSQLRC",
];

/// A client program of the cluster, as `app` on `port`, password in PGPASSWORD.
pub fn client_cmd(pg: &TempCluster, program: &str, port: u16) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(pg.bin_dir().join(program));
    for v in LIBPQ_ENV {
        c.env_remove(v);
    }
    c.env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "30")
        .args(["-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(["-U", USER])
        .kill_on_drop(true);
    c
}

/// pgbench of the cluster, as `app` on `port`, the password in PGPASSWORD.
pub fn pgbench(pg: &TempCluster, port: u16) -> tokio::process::Command {
    client_cmd(pg, "pgbench", port)
}

/// Runs `c` to the end; its stdout. Panics with both outputs if it fails.
pub async fn run_ok(mut c: tokio::process::Command, what: &str) -> String {
    let out: Output = c
        .output()
        .await
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        out.status
    );
    stdout
}

/// `pgbench -i -s 1` straight on the server, into appdb.
pub async fn init(pg: &TempCluster) {
    let mut init = pgbench(pg, pg.port());
    init.args(["-i", "-s", "1", "-q", DB]);
    run_ok(init, "pgbench -i directly on the server").await;
}

/// pgbench's report says it ran in `mode`, processed all of `total` transactions, and none
/// failed. `what` labels the failure messages.
pub fn assert_report(stdout: &str, mode: &str, total: u32, what: &str) {
    assert!(
        stdout.contains(&format!("query mode: {mode}")),
        "{what}:\n{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "number of transactions actually processed: {total}/{total}"
        )),
        "{what}:\n{stdout}"
    );
    assert!(
        stdout.contains("number of failed transactions: 0 "),
        "{what}:\n{stdout}"
    );
}
