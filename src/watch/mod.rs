//! The schema watch (`schema_watch = "listen"`): an event trigger in the database notifies
//! channel `pgheal_schema` when DDL on non-temporary objects commits, and pgheal, listening on a
//! connection of its own per database, advances that database's schema epoch
//! ([`crate::heal::SchemaEpoch`]). This catches migrations that run straight on the server,
//! not through pgheal, so statements are re-prepared before they can fail inside a
//! transaction.
//!
//! `pgheal install-schema-watch --upstream URL` installs the trigger idempotently (it needs a
//! superuser); `--print` prints the SQL for a DBA instead.
//!
//! A fleet shares its schema epoch through the same channel: when DDL commits through this
//! instance, the watch connection sends `pg_notify` itself (payload: this process's tag), so
//! every other instance listening on the database advances its epoch even where the event
//! trigger is not installed. A watch ignores its own notifications (its instance advanced when
//! the DDL committed).

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::AsyncMessage;

use crate::config::Database;
use crate::heal::SchemaEpoch;

/// The notification channel.
pub const CHANNEL: &str = "pgheal_schema";

/// The payload a watch sends after DDL committed through its instance: unique per watch (so
/// per instance and database, even with several instances in one process), so it can tell
/// its own notifications from the fleet's.
fn new_tag() -> String {
    format!(
        "pgheal instance {}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    )
}

/// SQL that installs (or re-installs) the event triggers. Idempotent.
pub fn install_sql() -> String {
    format!(
        r#"CREATE OR REPLACE FUNCTION public.pgheal_schema_changed() RETURNS event_trigger
LANGUAGE plpgsql AS $pgheal$
BEGIN
  IF TG_EVENT = 'sql_drop' THEN
    IF EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() WHERE NOT is_temporary) THEN
      PERFORM pg_notify('{CHANNEL}', TG_TAG);
    END IF;
  ELSIF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands()
                WHERE schema_name IS NULL OR schema_name NOT LIKE 'pg\_temp%') THEN
    PERFORM pg_notify('{CHANNEL}', TG_TAG);
  END IF;
END
$pgheal$;
DROP EVENT TRIGGER IF EXISTS pgheal_schema_ddl;
CREATE EVENT TRIGGER pgheal_schema_ddl ON ddl_command_end
  EXECUTE FUNCTION public.pgheal_schema_changed();
DROP EVENT TRIGGER IF EXISTS pgheal_schema_drop;
CREATE EVENT TRIGGER pgheal_schema_drop ON sql_drop
  EXECUTE FUNCTION public.pgheal_schema_changed();
"#
    )
}

fn pg_config(db: &Database) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    // A host list: tokio-postgres tries the hosts in order, with one port each (or one for all).
    for h in crate::pool::hosts::split(&db.host) {
        c.host(h);
    }
    if db.connect.ports.is_empty() {
        c.port(db.port);
    }
    for p in &db.connect.ports {
        c.port(*p);
    }
    c.dbname(&db.dbname).application_name("pgheal schema watch");
    if let Some(u) = &db.user {
        c.user(u);
    }
    if let Some(p) = &db.password {
        c.password(p);
    }
    c.connect_timeout(Duration::from_secs(10));
    c
}

/// Install the event triggers through `url`.
pub async fn install(url: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(conn);
    let r = client.batch_execute(&install_sql()).await;
    drop(client);
    let _ = driver.await;
    r
}

/// Listen for schema changes of `db` until the task is dropped, advancing `epoch` on each.
/// Reconnects with backoff (1 s doubling to 30 s) and logs while the watch is down;
/// `up` (`pgheal_schema_watch_up{database}`) is 1 while it listens.
pub async fn watch_forever(db: Database, epoch: Arc<SchemaEpoch>, up: prometheus::IntGauge) {
    let mut backoff = Duration::from_secs(1);
    let tag = new_tag();
    loop {
        up.set(0);
        match watch_once(&db, &epoch, &up, &tag).await {
            Ok(()) => tracing::warn!(db = %db.name, "schema watch connection closed; reconnecting"),
            Err(e) => {
                tracing::warn!(db = %db.name, error = %e, retry_in = ?backoff, "schema watch is down")
            }
        }
        // Changes may have been missed while down: treat the schema as changed.
        epoch.bump("schema watch reconnecting");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

async fn watch_once(
    db: &Database,
    epoch: &Arc<SchemaEpoch>,
    up: &prometheus::IntGauge,
    own_tag: &str,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut conn) = pg_config(db).connect(tokio_postgres::NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    tracing::info!(db = %db.name, "schema watch is listening");
    up.set(1);
    loop {
        tokio::select! {
            tag = rx.recv() => match tag {
                None => break,
                Some(tag) if tag == own_tag => {}
                Some(tag) => {
                    let e = epoch.bump("schema watch notification");
                    tracing::info!(db = %db.name, command = %tag, epoch = e, "schema change seen; statements will be re-prepared");
                }
            },
            () = epoch.ddl_committed_here_since() => {
                client
                    .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &own_tag])
                    .await?;
                tracing::debug!(db = %db.name, "told the fleet of DDL committed through this instance");
            }
        }
    }
    drop(client);
    driver.await.unwrap_or(Ok(()))
}
