//! `pgheal check-migration`: what a migration will do to the statements an app prepares, told
//! before it runs in production.
//!
//! The statements come from a file pgheal recorded while the app ran through it
//! (`--record-statements`, [`record`]): text, parameter types and result contract. The check
//! runs the migration where it cannot change anything, describes every statement again, and
//! [`classify`] sorts each one by the heal engine's own rules: unchanged, healed by pgheal
//! (re-prepare, or projection onto the contract), broken even through pgheal (a contract column
//! dropped or retyped: deploy the code first), or failing outright (the text no longer parses).
//! [`report`] prints the table as text, Markdown or JSON.
//!
//! Where the migration runs:
//! - **In a transaction that is rolled back** (`BEGIN`, the migration, the descriptions, each
//!   under a savepoint, `ROLLBACK`), on one connection to the upstream database. This takes the
//!   migration's locks for the few moments the check lasts: a development or CI database.
//! - **In a scratch database** when the migration cannot run in a transaction block (PostgreSQL
//!   answers 25001, e.g. `CREATE INDEX CONCURRENTLY`), or when it contains transaction control of
//!   its own (`BEGIN`/`COMMIT`..., which would end the check's transaction): a database created
//!   beside the upstream (`CREATE DATABASE`, so the user needs CREATEDB), filled with
//!   `pg_dump --schema-only | psql`, migrated with `psql -f`, described, and dropped. The
//!   upstream is only read. `CREATE DATABASE ... TEMPLATE upstream` would be quicker but fails
//!   while anyone else is connected to the upstream; the dump has no such condition.
//!
//! In a scratch database the tables have other OIDs than in the recording, so each contract
//! column takes its origin (table OID, attribute number) from the statement's description there
//! before the migration, when name and type agree.

pub mod classify;
pub mod describe;
pub mod record;
pub mod report;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::config::upstream::Upstream;
use crate::protocol::backend::{Field, TxStatus};
use crate::protocol::sqlstate;

use classify::{After, Classification};
use describe::Conn;
use record::Recorded;

pub use record::Recorder;

/// Why the check could not give an answer (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("connection failed: {0}")]
    Connection(String),
    #[error("{what:?} failed: {error}")]
    Command { what: String, error: String },
    #[error("the migration failed: {0}")]
    Migration(String),
    #[error("{0}")]
    Scratch(String),
    #[error(transparent)]
    Read(#[from] record::ReadError),
}

/// Where the migration was run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In a transaction on the upstream, rolled back.
    RolledBack,
    /// In a scratch database created from the upstream's schema, then dropped.
    ScratchDatabase,
}

impl Mode {
    pub fn key(self) -> &'static str {
        match self {
            Mode::RolledBack => "rolled_back_transaction",
            Mode::ScratchDatabase => "scratch_database",
        }
    }
}

/// One statement's line in the report.
#[derive(Debug, Clone)]
pub struct Row {
    pub statement: Recorded,
    pub class: Classification,
    /// Before the migration the statement already had another result type than recorded (or
    /// did not prepare): the recording is older than the schema, and the verdict covers both.
    pub already_differs: bool,
}

/// The result of a check.
#[derive(Debug, Clone)]
pub struct Report {
    pub mode: Mode,
    /// Why the scratch database was needed.
    pub mode_reason: Option<String>,
    pub rows: Vec<Row>,
}

impl Report {
    /// 0: nothing breaks through pgheal; 1: something does (breaks or fails outright).
    pub fn exit_status(&self) -> u8 {
        if self.rows.iter().any(|r| r.class.verdict.is_failure()) {
            1
        } else {
            0
        }
    }
}

/// Statements of a file, or those recorded for one database.
pub fn load_statements(path: &Path, database: Option<&str>) -> Result<Vec<Recorded>, CheckError> {
    let mut all = record::read_file(path)?;
    if let Some(db) = database {
        all.retain(|r| r.database == db);
    }
    Ok(all)
}

/// Does the migration contain transaction control of its own? A conservative look at the first
/// word of each `;`-separated piece: a false alarm (a function body's `BEGIN`) only sends the
/// check to a scratch database.
pub fn has_transaction_control(sql: &str) -> bool {
    sql.split(';').any(|piece| {
        let mut rest = piece.trim_start();
        // skip line comments before the statement
        while let Some(r) = rest.strip_prefix("--") {
            rest = r
                .split_once('\n')
                .map_or("", |(_, after)| after)
                .trim_start();
        }
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect::<String>()
            .to_ascii_uppercase();
        match word.as_str() {
            "BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "ABORT" | "START" => true,
            "PREPARE" => rest.to_ascii_uppercase().contains("TRANSACTION"),
            _ => false,
        }
    })
}

/// Run the check: `upstream` is a postgres:// URL, `migration` the SQL text and its file.
pub async fn check(
    upstream: &str,
    statements: Vec<Recorded>,
    migration: &str,
    migration_file: &Path,
) -> Result<Report, CheckError> {
    let up =
        Upstream::parse("--upstream", upstream).map_err(|e| CheckError::Usage(e.to_string()))?;
    if has_transaction_control(migration) {
        let why = "the migration has transaction control of its own".to_owned();
        return in_scratch(&up, statements, migration_file, why).await;
    }
    let mut conn = Conn::connect(&describe::login(&up, &up.dbname)?).await?;
    let before = describe_all(&mut conn, &statements).await?;
    conn.command("BEGIN").await?;
    conn.in_block = true;
    let ran = conn.simple(migration, describe::MIGRATION).await?;
    if let Some(e) = ran.error {
        let _ = conn.command("ROLLBACK").await;
        conn.close().await;
        if e.sqlstate == sqlstate::ACTIVE_SQL_TRANSACTION {
            let why = format!("it cannot run in a transaction block ({e})");
            return in_scratch(&up, statements, migration_file, why).await;
        }
        return Err(CheckError::Migration(e.to_string()));
    }
    if ran.status != TxStatus::InTransaction {
        conn.close().await;
        return Err(CheckError::Migration(
            "the migration ended the check's transaction".into(),
        ));
    }
    let after = describe_all(&mut conn, &statements).await;
    let rolled_back = conn.command("ROLLBACK").await;
    conn.close().await;
    let after = after?;
    rolled_back?;
    Ok(Report {
        mode: Mode::RolledBack,
        mode_reason: None,
        rows: rows(statements, before, after),
    })
}

async fn describe_all(conn: &mut Conn, statements: &[Recorded]) -> Result<Vec<After>, CheckError> {
    let mut out = Vec::with_capacity(statements.len());
    for s in statements {
        out.push(conn.describe(&s.sql, &s.param_types).await?);
    }
    Ok(out)
}

/// The contract with each column's origin taken from the description `before` the migration
/// where name and type agree (a scratch database has other OIDs than the recording's).
fn contract_here(recorded: &Recorded, before: &After) -> Vec<Field> {
    let mut contract = recorded.contract();
    if let After::Described(here) = before {
        for (c, h) in contract.iter_mut().zip(here) {
            if c.name == h.name && c.type_oid == h.type_oid {
                c.table_oid = h.table_oid;
                c.column_attr = h.column_attr;
            }
        }
    }
    contract
}

fn rows(statements: Vec<Recorded>, before: Vec<After>, after: Vec<After>) -> Vec<Row> {
    statements
        .into_iter()
        .zip(before.iter().zip(after.iter()))
        .map(|(statement, (b, a))| {
            let contract = contract_here(&statement, b);
            let already_differs = match b {
                After::Described(here) => classify::result_type_changed(&contract, here),
                After::Error { .. } => true,
            };
            Row {
                class: classify::classify(&contract, a),
                statement,
                already_differs,
            }
        })
        .collect()
}

/// The directory of `psql` and `pg_dump`: next to the server binaries pgheal finds, else PATH.
fn client_bin(name: &str) -> PathBuf {
    match crate::cluster::find_bin_dir() {
        Ok(dir) if dir.join(name).exists() => dir.join(name),
        _ => PathBuf::from(name),
    }
}

/// A libpq client command for `dbname` on the upstream's server; the password goes by the
/// environment, never on the command line.
fn libpq_command(up: &Upstream, bin: &str, dbname: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(client_bin(bin));
    cmd.arg("--host")
        .arg(&up.host)
        .arg("--port")
        .arg(up.port.to_string())
        .arg("--username")
        .arg(&up.user)
        .arg("--dbname")
        .arg(dbname)
        .arg("--no-password")
        .env_remove("PGSERVICE")
        .env_remove("PGOPTIONS")
        .kill_on_drop(true);
    match &up.password {
        Some(p) => cmd.env("PGPASSWORD", p),
        None => cmd.env_remove("PGPASSWORD"),
    };
    if let Some(m) = up.tls.sslmode {
        cmd.env("PGSSLMODE", m.as_str());
    }
    for (var, v) in [
        ("PGSSLROOTCERT", &up.tls.sslrootcert),
        ("PGSSLCERT", &up.tls.sslcert),
        ("PGSSLKEY", &up.tls.sslkey),
    ] {
        if let Some(v) = v {
            cmd.env(var, v);
        }
    }
    cmd
}

async fn run_tool(
    mut cmd: tokio::process::Command,
    what: &str,
    stdin: Option<Vec<u8>>,
) -> Result<Vec<u8>, CheckError> {
    use tokio::io::AsyncWriteExt;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| CheckError::Scratch(format!("{what}: cannot start: {e}")))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let writer = tokio::spawn(async move {
            let _ = pipe.write_all(&input).await;
            let _ = pipe.shutdown().await;
        });
        let out = tokio::time::timeout(describe::MIGRATION, child.wait_with_output()).await;
        let _ = writer.await;
        return finish(out, what);
    }
    let out = tokio::time::timeout(describe::MIGRATION, child.wait_with_output()).await;
    finish(out, what)
}

fn finish(
    out: Result<std::io::Result<std::process::Output>, tokio::time::error::Elapsed>,
    what: &str,
) -> Result<Vec<u8>, CheckError> {
    let out = out
        .map_err(|_| {
            CheckError::Scratch(format!("{what}: no end within {:?}", describe::MIGRATION))
        })?
        .map_err(|e| CheckError::Scratch(format!("{what}: {e}")))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(CheckError::Scratch(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A quoted identifier.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

async fn in_scratch(
    up: &Upstream,
    statements: Vec<Recorded>,
    migration_file: &Path,
    why: String,
) -> Result<Report, CheckError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let scratch = format!("pgheal_check_{}_{nanos}", std::process::id());
    let mut admin = Conn::connect(&describe::login(up, &up.dbname)?).await?;
    admin
        .command(&format!(
            "CREATE DATABASE {} TEMPLATE template0",
            ident(&scratch)
        ))
        .await
        .map_err(|e| CheckError::Scratch(format!("creating a scratch database: {e}")))?;
    let result = scratch_run(up, &scratch, statements, migration_file, why).await;
    let dropped = admin
        .command(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            ident(&scratch)
        ))
        .await;
    admin.close().await;
    let report = result?;
    dropped.map_err(|e| {
        CheckError::Scratch(format!("dropping the scratch database {scratch}: {e}"))
    })?;
    Ok(report)
}

async fn scratch_run(
    up: &Upstream,
    scratch: &str,
    statements: Vec<Recorded>,
    migration_file: &Path,
    why: String,
) -> Result<Report, CheckError> {
    let mut dump = libpq_command(up, "pg_dump", &up.dbname);
    dump.args(["--schema-only", "--no-owner", "--no-privileges"]);
    let schema = run_tool(dump, "pg_dump --schema-only of the upstream", None).await?;
    let mut restore = libpq_command(up, "psql", scratch);
    restore.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]);
    run_tool(
        restore,
        "restoring the schema into the scratch database",
        Some(schema),
    )
    .await?;
    let login = describe::login(up, scratch)?;
    let mut conn = Conn::connect(&login).await?;
    let before = describe_all(&mut conn, &statements).await?;
    conn.close().await;
    let mut migrate = libpq_command(up, "psql", scratch);
    migrate
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(migration_file);
    run_tool(migrate, "the migration (psql -f)", None)
        .await
        .map_err(|e| CheckError::Migration(e.to_string()))?;
    let mut conn = Conn::connect(&login).await?;
    let after = describe_all(&mut conn, &statements).await?;
    conn.close().await;
    Ok(Report {
        mode: Mode::ScratchDatabase,
        mode_reason: Some(why),
        rows: rows(statements, before, after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_control_is_noticed() {
        assert!(has_transaction_control(
            "BEGIN; ALTER TABLE t ADD c int; COMMIT;"
        ));
        assert!(has_transaction_control(
            "alter table t add c int;\n-- done\ncommit"
        ));
        assert!(has_transaction_control("START TRANSACTION; SELECT 1"));
        assert!(has_transaction_control("PREPARE TRANSACTION 'x'"));
        assert!(!has_transaction_control("PREPARE q AS SELECT 1"));
        assert!(!has_transaction_control(
            "ALTER TABLE t ADD c int; CREATE INDEX CONCURRENTLY i ON t(c);"
        ));
        assert!(!has_transaction_control("-- comment\nALTER TABLE t DROP c"));
    }

    #[test]
    fn contract_takes_origins_from_the_scratch_database() {
        let rec = Recorded {
            database: "db".into(),
            sql: "SELECT * FROM t".into(),
            param_types: vec![],
            columns: vec![record::Column {
                name: "a".into(),
                table_oid: 100,
                column_attr: 3,
                type_oid: 23,
                type_len: 4,
                type_mod: -1,
                format: 0,
            }],
        };
        let mut here = rec.contract();
        here[0].table_oid = 7;
        here[0].column_attr = 1;
        let c = contract_here(&rec, &After::Described(here));
        assert_eq!((c[0].table_oid, c[0].column_attr), (7, 1));
        let c = contract_here(
            &rec,
            &After::Error {
                sqlstate: "42P01".into(),
                message: String::new(),
            },
        );
        assert_eq!((c[0].table_oid, c[0].column_attr), (100, 3));
    }
}
