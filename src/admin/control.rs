//! The console commands that change things, with PgBouncer's checks and messages.
//!
//! `PAUSE` and `WAIT_CLOSE` answer only once what they wait for is done, as in PgBouncer: the
//! console session waits (checking every 50 ms) and gives up if it is killed or pgheal stops.

use std::time::Duration;

use crate::pool::control::Control;
use crate::pool::Pool;
use crate::protocol::{encode, sqlstate, Frame};
use crate::proxy::{request_stop, Stop};
use crate::session::clients::ClientTrack;
use crate::session::Shared;

use super::command::{Command, ShutdownMode};
use super::is_console_database;

/// How often a waiting command looks again.
const POLL: Duration = Duration::from_millis(50);

/// Run a command other than `SHOW`. `Ok(frames)`: its answer without ReadyForQuery (empty
/// when the session is about to end: `SHUTDOWN`); `Err(message)`: a refusal.
pub async fn execute(
    cmd: Command,
    shared: &Shared,
    me: &ClientTrack,
) -> Result<Vec<Frame>, String> {
    let pools = &shared.pools;
    let controls = pools.controls();
    let global = controls.global();
    let done = |tag: &str| Ok(vec![encode::command_complete(tag)]);
    match cmd {
        Command::Show(_) => unreachable!("SHOW is answered by admin::show"),
        Command::SetIgnored => Ok(vec![
            encode::error_fields(
                b'N',
                &[
                    (b'S', b"NOTICE"),
                    (b'C', sqlstate::SUCCESSFUL_COMPLETION.as_bytes()),
                    (b'M', b"SET ignored"),
                ],
            ),
            encode::command_complete("SET"),
        ]),
        Command::Set { key, value } => {
            crate::reload::set(shared, &key, &value).map_err(|e| format!("SET failed: {e}"))?;
            done(&format!("SET {key}={value}"))
        }
        Command::Reload => {
            tracing::info!("RELOAD command issued");
            crate::reload::reload(shared).map_err(|e| format!("RELOAD failed: {e}"))?;
            done("RELOAD")
        }
        Command::Suspend => Err(
            "SUSPEND is not supported: pgheal's online restart (pgheal -R) moves each client at its own transaction boundary instead of suspending every client (see the README)"
                .into(),
        ),
        Command::Pause(None) => {
            if global.is_paused() {
                return Err("already suspended/paused".into());
            }
            tracing::info!("PAUSE command issued");
            global.set_paused(true);
            for p in pools.all() {
                p.close_idle();
            }
            wait_until(me, || pools.all().iter().all(|p| p.servers().is_empty())).await?;
            done("PAUSE")
        }
        Command::Pause(Some(db)) => {
            if global.is_paused() {
                return Err("already suspended/paused".into());
            }
            let control = database(shared, &db, "pause")?;
            tracing::info!(db = %db, "PAUSE command issued");
            control.set_paused(true);
            close_idle_of(pools.all(), &db);
            wait_until(me, || {
                pools_of(pools.all(), &db).all(|p| p.servers().is_empty())
            })
            .await?;
            done("PAUSE")
        }
        Command::Resume(None) => {
            if !global.is_paused() {
                return Err("pooler is not paused/suspended".into());
            }
            tracing::info!("RESUME command issued");
            global.set_paused(false);
            done("RESUME")
        }
        Command::Resume(Some(db)) => {
            let control = known_database(shared, &db)?;
            if !control.is_paused() {
                return Err(format!("database {db} is not paused"));
            }
            tracing::info!(db = %db, "RESUME command issued");
            control.set_paused(false);
            done("RESUME")
        }
        Command::Reconnect(None) => {
            tracing::info!("RECONNECT command issued");
            global.reconnect();
            for p in pools.all() {
                p.close_idle();
            }
            done("RECONNECT")
        }
        Command::Reconnect(Some(db)) => {
            let control = database(shared, &db, "reconnect")?;
            tracing::info!(db = %db, "RECONNECT command issued");
            control.reconnect();
            close_idle_of(pools.all(), &db);
            done("RECONNECT")
        }
        Command::Kill(None) => {
            if global.is_paused() {
                return Err("already suspended/paused".into());
            }
            tracing::info!("KILL command issued");
            for p in pools.all() {
                controls.database(&p.key.database).set_paused(true);
                p.close_idle();
            }
            for name in shared.cfg().databases.keys() {
                controls.database(name).set_paused(true);
            }
            shared.clients.kill_where(|c| !c.admin);
            done("KILL")
        }
        Command::Kill(Some(db)) => {
            if global.is_paused() {
                return Err("already suspended/paused".into());
            }
            let control = database(shared, &db, "kill")?;
            tracing::info!(db = %db, "KILL command issued");
            control.set_paused(true);
            close_idle_of(pools.all(), &db);
            shared.clients.kill_where(|c| !c.admin && c.database == db);
            done("KILL")
        }
        Command::KillClient(id) => {
            let client = shared.clients.get(id).ok_or("client not found")?;
            tracing::info!(client = id, "KILL_CLIENT command issued");
            client.kill();
            done("KILL_CLIENT")
        }
        Command::Disable(db) => {
            let control = database(shared, &db, "disable")?;
            tracing::info!(db = %db, "DISABLE command issued");
            control.set_disabled(true);
            done("DISABLE")
        }
        Command::Enable(db) => {
            let control = database(shared, &db, "enable")?;
            tracing::info!(db = %db, "ENABLE command issued");
            control.set_disabled(false);
            done("ENABLE")
        }
        Command::WaitClose(db) => {
            if let Some(db) = &db {
                database(shared, db, "wait in")?;
            }
            tracing::info!(db = ?db, "WAIT_CLOSE command issued");
            let stale_left = || {
                pools.all().iter().any(|p| {
                    db.as_ref().is_none_or(|d| &p.key.database == d)
                        && p.servers().iter().any(|s| p.control.is_stale(s.generation))
                })
            };
            wait_until(me, || !stale_left()).await?;
            done("WAIT_CLOSE")
        }
        Command::Shutdown(mode) => {
            let (how, name) = match mode {
                ShutdownMode::Immediate => (Stop::Immediate, "SHUTDOWN"),
                ShutdownMode::WaitForServers => {
                    (Stop::WaitForServers, "SHUTDOWN WAIT_FOR_SERVERS")
                }
                ShutdownMode::WaitForClients => {
                    (Stop::WaitForClients, "SHUTDOWN WAIT_FOR_CLIENTS")
                }
            };
            tracing::info!("{name} command issued");
            request_stop(&shared.stop, how);
            if mode == ShutdownMode::Immediate {
                // As PgBouncer: no answer; the connection closes as the process stops.
                return Ok(Vec::new());
            }
            done("SHUTDOWN")
        }
    }
}

/// The control of a database the console may act on: it must exist (configured, or served by
/// the `*` entry) and not be the console itself (PgBouncer's messages).
fn database(shared: &Shared, db: &str, verb: &str) -> Result<std::sync::Arc<Control>, String> {
    if is_console_database(db) {
        return Err(format!("cannot {verb} admin db: {db}"));
    }
    if shared.cfg().database_for(db, "").is_none() {
        return Err(format!("no such database: {db}"));
    }
    Ok(shared.pools.controls().database(db))
}

/// `RESUME db` looks the database up without registering it, as PgBouncer's `find_database`.
fn known_database(shared: &Shared, db: &str) -> Result<std::sync::Arc<Control>, String> {
    shared
        .pools
        .controls()
        .database_if_known(db)
        .ok_or_else(|| format!("no such database: {db}"))
}

fn pools_of(
    pools: Vec<std::sync::Arc<Pool>>,
    db: &str,
) -> impl Iterator<Item = std::sync::Arc<Pool>> + '_ {
    pools.into_iter().filter(move |p| p.key.database == db)
}

fn close_idle_of(pools: Vec<std::sync::Arc<Pool>>, db: &str) {
    for p in pools_of(pools, db) {
        p.close_idle();
    }
}

/// Wait until `done` holds; a console session that is killed (or pgheal stopping) stops
/// waiting with an error.
async fn wait_until(me: &ClientTrack, done: impl Fn() -> bool) -> Result<(), String> {
    while !done() {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = me.wait_killed() => {
                return Err("the console session is ending".into());
            }
        }
    }
    Ok(())
}
