//! `pgheal demo`: the classic incident, replayed and healed, in a few seconds with no input.
//!
//! It starts a throwaway PostgreSQL from the system binaries ([`crate::cluster`]), starts pgheal
//! in-process in front of it, and plays an app that prepared
//! `SELECT * FROM orders WHERE id = $1` before the migration
//! `ALTER TABLE orders ADD COLUMN discount_code varchar(50)`: once straight to PostgreSQL (the
//! error), once through pgheal (healed, same rows). It ends with the table
//! `pgheal check-migration` gave for that migration, from the statements pgheal recorded before
//! it ran. Everything is removed on exit.

use anyhow::Context;

use crate::cluster::TempCluster;
use crate::config::cli::RunArgs;
use crate::config::file::FileConfig;
use crate::heal::Outcome;

const QUERY: &str = "SELECT * FROM orders WHERE id = $1";
const MIGRATION: &str = "ALTER TABLE orders ADD COLUMN discount_code varchar(50)";
/// Another statement of the app, which the migration does not touch (for the check's table).
const OTHER_QUERY: &str = "SELECT customer, total FROM orders WHERE id = $1";

/// What one connection saw when it ran the prepared statement.
enum Seen {
    Rows(Vec<String>),
    Error(String),
}

async fn run_app_query(client: &tokio_postgres::Client, stmt: &tokio_postgres::Statement) -> Seen {
    let mut lines = Vec::new();
    for id in [1i32, 2] {
        match client.query(stmt, &[&id]).await {
            Ok(rows) => {
                for r in rows {
                    let cols: Vec<String> = r
                        .columns()
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            let v = match c.type_() {
                                &tokio_postgres::types::Type::INT4 => {
                                    r.get::<_, i32>(i).to_string()
                                }
                                _ => r
                                    .get::<_, Option<String>>(i)
                                    .unwrap_or_else(|| "NULL".into()),
                            };
                            format!("{}={}", c.name(), v)
                        })
                        .collect();
                    lines.push(cols.join(" "));
                }
            }
            Err(e) => {
                let msg = match e.as_db_error() {
                    Some(db) => format!("ERROR {}: {}", db.code().code(), db.message()),
                    None => format!("error: {e}"),
                };
                return Seen::Error(msg);
            }
        }
    }
    Seen::Rows(lines)
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Run the demo and print the report. Returns an error when the demo could not show a heal.
pub async fn run() -> anyhow::Result<()> {
    println!("pgheal demo: a migration breaks a prepared statement; pgheal heals it\n");
    let pg = tokio::task::spawn_blocking(|| -> anyhow::Result<TempCluster> {
        let pg = TempCluster::start().context("starting a throwaway PostgreSQL")?;
        pg.create_user("app", "app-demo-password")?;
        pg.create_database("shop", "app")?;
        pg.psql(
            "shop",
            "CREATE TABLE orders(id int PRIMARY KEY, customer text, total text);
             INSERT INTO orders VALUES (1, 'alice', '19.90'), (2, 'bob', '5.00');
             ALTER TABLE orders OWNER TO app;",
        )?;
        Ok(pg)
    })
    .await??;
    let direct_url = pg.url("app", "app-demo-password", "shop");
    let recorded = pg.dir().join("statements.jsonl");
    let migration_file = pg.dir().join("migration.sql");
    std::fs::write(&migration_file, format!("{MIGRATION};\n"))?;
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(direct_url.clone()),
        record_statements: Some(recorded.display().to_string()),
        ..Default::default()
    };
    let cfg = crate::config::validate::build(FileConfig::default(), &args)?;
    let proxy = crate::proxy::start(cfg).await?;
    println!(
        "  PostgreSQL 127.0.0.1:{} (throwaway)   pgheal 127.0.0.1:{}\n",
        pg.port(),
        proxy.addr.port()
    );
    let proxy_url = format!(
        "postgres://app:app-demo-password@127.0.0.1:{}/shop",
        proxy.addr.port()
    );

    let direct = connect(&direct_url)
        .await
        .context("connecting to PostgreSQL")?;
    let healed = connect(&proxy_url)
        .await
        .context("connecting through pgheal")?;
    let d_stmt = direct.prepare(QUERY).await?;
    let h_stmt = healed.prepare(QUERY).await?;
    healed.prepare(OTHER_QUERY).await?;
    println!("1. the app prepares     {QUERY}");
    // Checked now, before the migration runs (in a transaction that is rolled back); shown last.
    let statements = crate::migration_check::load_statements(&recorded, None)?;
    let check =
        crate::migration_check::check(&direct_url, statements, MIGRATION, &migration_file).await;
    let before = run_app_query(&healed, &h_stmt).await;
    run_app_query(&direct, &d_stmt).await;
    println!("2. the migration runs   {MIGRATION}");
    {
        let pg = &pg;
        pg.psql("shop", MIGRATION)?;
    }
    println!("3. the app runs its prepared statement again:\n");
    let d_after = run_app_query(&direct, &d_stmt).await;
    let h_after = run_app_query(&healed, &h_stmt).await;

    let left: Vec<String> = match &d_after {
        Seen::Rows(r) => r.clone(),
        Seen::Error(e) => vec![e.clone()],
    };
    let right: Vec<String> = match &h_after {
        Seen::Rows(r) => r.clone(),
        Seen::Error(e) => vec![e.clone()],
    };
    let width = left
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
        .max(26);
    println!("   {:<width$}   through pgheal", "straight to PostgreSQL");
    println!("   {:<width$}   {}", "-".repeat(22), "-".repeat(14));
    for i in 0..left.len().max(right.len()) {
        println!(
            "   {:<width$}   {}",
            left.get(i).map(String::as_str).unwrap_or(""),
            right.get(i).map(String::as_str).unwrap_or("")
        );
    }
    let m = &proxy.metrics;
    println!(
        "\n   pgheal: healed={} projected={} refused={}",
        m.heal_count(Outcome::Healed),
        m.heal_count(Outcome::Projected),
        m.heal_count(Outcome::Refused)
    );
    println!("\n4. what `pgheal check-migration` said of the recorded statements before step 2:\n");
    match &check {
        Ok(report) => {
            for line in crate::migration_check::report::text(report).lines() {
                if line.is_empty() {
                    println!();
                } else {
                    println!("   {line}");
                }
            }
        }
        Err(e) => println!("   the check failed: {e}"),
    }
    drop(direct);
    drop(healed);
    proxy.shutdown().await;
    drop(pg);
    check.context("pgheal check-migration")?;

    let same = matches!((&before, &h_after), (Seen::Rows(a), Seen::Rows(b)) if a == b);
    match (&d_after, same) {
        (Seen::Error(_), true) => {
            println!("\nPostgreSQL refused the stale statement; through pgheal the app got the same rows as before the migration.");
            Ok(())
        }
        (Seen::Rows(_), _) => {
            anyhow::bail!("PostgreSQL did not reject the stale statement; nothing to heal")
        }
        (_, false) => {
            anyhow::bail!("pgheal did not return the rows the app saw before the migration")
        }
    }
}
