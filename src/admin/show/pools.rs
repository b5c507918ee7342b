//! `SHOW POOLS`, `SHOW DATABASES`, `SHOW USERS`, `SHOW LISTS`, `SHOW STATE`, `SHOW PEERS`:
//! the pools, databases and users and their figures.

use std::sync::Arc;
use std::time::Duration;

use crate::pool::Pool;
use crate::session::clients::ClientTrack;
use crate::session::Shared;

use super::super::table::{Col, Table, Value};
use super::{mode_name, CONSOLE};
use crate::admin::CONSOLE_DATABASES;

use Col::{Int4, Text};

/// `SHOW POOLS`.
pub(super) fn pools(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("database", Text),
        ("user", Text),
        ("cl_active", Int4),
        ("cl_waiting", Int4),
        ("cl_active_cancel_req", Int4),
        ("cl_waiting_cancel_req", Int4),
        ("sv_active", Int4),
        ("sv_active_cancel", Int4),
        ("sv_being_canceled", Int4),
        ("sv_idle", Int4),
        ("sv_used", Int4),
        ("sv_tested", Int4),
        ("sv_login", Int4),
        ("maxwait", Int4),
        ("maxwait_us", Int4),
        ("pool_mode", Text),
        ("load_balance_hosts", Text),
    ]);
    let clients = shared.clients.all();
    let console_clients = clients.iter().filter(|c| c.admin).count();
    t.row(vec![
        CONSOLE.into(),
        CONSOLE.into(),
        console_clients.into(),
        0usize.into(),
        0usize.into(),
        0usize.into(),
        0usize.into(),
        0usize.into(),
        0usize.into(),
        0usize.into(),
        0usize.into(),
        0usize.into(),
        0usize.into(),
        0usize.into(),
        0usize.into(),
        "statement".into(),
        Value::Null,
    ]);
    for pool in shared.pools.all() {
        let s = &pool.stats;
        let waiting = s.waiting();
        let maxwait = clients
            .iter()
            .filter(|c| !c.admin && c.database == pool.key.database && in_pool(c, &pool))
            .map(|c| c.waited())
            .max()
            .unwrap_or(Duration::ZERO);
        t.row(vec![
            pool.key.database.as_str().into(),
            pool.key.user.as_str().into(),
            s.clients().saturating_sub(waiting).into(),
            waiting.into(),
            0usize.into(),
            0usize.into(),
            s.active().into(),
            0usize.into(),
            0usize.into(),
            pool.idle_count().into(),
            s.resetting_count().into(),
            s.testing_count().into(),
            s.logging_in().into(),
            (maxwait.as_secs() as i64).into(),
            i64::from(maxwait.subsec_micros()).into(),
            mode_name(pool.settings().mode).into(),
            Value::Null,
        ]);
    }
    t
}

/// Whether a client belongs to `pool`: same database, and the pool's user is the client's
/// (or the database logs in as one configured user).
pub(super) fn in_pool(c: &ClientTrack, pool: &Pool) -> bool {
    c.database == pool.key.database
        && (c.user == pool.key.user || pool.login().user == pool.key.user)
}

/// `SHOW DATABASES`.
pub(super) fn databases(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("name", Text),
        ("host", Text),
        ("port", Int4),
        ("database", Text),
        ("force_user", Text),
        ("pool_size", Int4),
        ("min_pool_size", Int4),
        ("reserve_pool_size", Int4),
        ("server_lifetime", Int4),
        ("pool_mode", Text),
        ("load_balance_hosts", Text),
        ("max_connections", Int4),
        ("current_connections", Int4),
        ("max_client_connections", Int4),
        ("current_client_connections", Int4),
        ("paused", Int4),
        ("disabled", Int4),
    ]);
    let cfg = shared.cfg();
    let pools = shared.pools.all();
    let clients = shared.clients.all();
    let lifetime = cfg.server_lifetime.as_secs() as i64;
    t.row(vec![
        CONSOLE.into(),
        Value::Null,
        i64::from(cfg.listen.port()).into(),
        CONSOLE.into(),
        CONSOLE.into(),
        2i64.into(),
        0i64.into(),
        0i64.into(),
        lifetime.into(),
        "statement".into(),
        Value::Null,
        0i64.into(),
        0i64.into(),
        0i64.into(),
        clients.iter().filter(|c| c.admin).count().into(),
        false.into(),
        false.into(),
    ]);
    for name in database_names(shared, &pools) {
        let Some(db) = cfg.database_for(&name, "") else {
            continue;
        };
        let connections: usize = pools
            .iter()
            .filter(|p| p.key.database == name)
            .map(|p| p.servers().len())
            .sum();
        let client_count = clients
            .iter()
            .filter(|c| !c.admin && c.database == name)
            .count();
        let control = shared.pools.controls().database_if_known(&name);
        t.row(vec![
            name.as_str().into(),
            db.host.as_str().into(),
            i64::from(db.port).into(),
            db.dbname.as_str().into(),
            db.user.clone().into(),
            db.pool_size.into(),
            db.min_pool_size.into(),
            db.limits.reserve_pool_size.into(),
            lifetime.into(),
            mode_name(db.pool_mode).into(),
            // As PgBouncer: only for a host list.
            match db.host.contains(',') {
                true => db.connect.load_balance_hosts.as_str().into(),
                false => Value::Null,
            },
            db.limits.max_db_connections.into(),
            connections.into(),
            db.limits.max_db_client_connections.into(),
            client_count.into(),
            control.as_ref().is_some_and(|c| c.is_paused()).into(),
            control.as_ref().is_some_and(|c| c.is_disabled()).into(),
        ]);
    }
    t
}

/// Configured databases, then those made from the `*` entry that have pools (the console's
/// own is not among them).
pub(super) fn database_names(shared: &Shared, pools: &[Arc<Pool>]) -> Vec<String> {
    let mut names: Vec<String> = shared.cfg().databases.keys().cloned().collect();
    for p in pools {
        if !names.contains(&p.key.database) {
            names.push(p.key.database.clone());
        }
    }
    names.retain(|n| !CONSOLE_DATABASES.contains(&n.as_str()));
    names
}

/// Users of the auth file and `[users]`, and the console's, sorted.
pub(super) fn user_names(cfg: &crate::config::Config) -> Vec<&str> {
    let mut names: Vec<&str> = cfg.users.keys().map(String::as_str).collect();
    names.extend(cfg.user_settings.keys().map(String::as_str));
    names.push(CONSOLE);
    names.sort_unstable();
    names.dedup();
    names
}

/// `SHOW USERS`: users of the auth file and `[users]`, and the console's.
pub(super) fn users(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("name", Text),
        ("pool_size", Text),
        ("reserve_pool_size", Text),
        ("pool_mode", Text),
        ("max_user_connections", Int4),
        ("current_connections", Int4),
        ("max_user_client_connections", Int4),
        ("current_client_connections", Int4),
    ]);
    let cfg = shared.cfg();
    let pools = shared.pools.all();
    let clients = shared.clients.all();
    for name in user_names(&cfg) {
        let settings = cfg.user_settings.get(name);
        let limits = cfg.user_limits(name);
        let servers: usize = pools
            .iter()
            .filter(|p| p.key.user == name)
            .map(|p| p.servers().len())
            .sum();
        t.row(vec![
            name.into(),
            // PgBouncer prints a set size right-aligned in 9 characters, an unset one empty.
            settings
                .and_then(|s| s.pool_size)
                .map_or_else(String::new, |n| format!("{n:9}"))
                .into(),
            settings
                .and_then(|s| s.reserve_pool_size)
                .map_or_else(String::new, |n| format!("{n:9}"))
                .into(),
            settings
                .and_then(|s| s.pool_mode)
                .map(|m| mode_name(m).to_owned())
                .into(),
            limits.max_user_connections.into(),
            servers.into(),
            limits.max_user_client_connections.into(),
            clients.iter().filter(|c| c.user == name).count().into(),
        ]);
    }
    t
}

/// `SHOW LISTS`.
pub(super) fn lists(shared: &Shared) -> Table {
    let mut t = Table::new(&[("list", Text), ("items", Int4)]);
    let cfg = shared.cfg();
    let pools = shared.pools.all();
    let servers: usize = pools.iter().map(|p| p.servers().len()).sum();
    for (name, n) in [
        // The console's own database counts, as in PgBouncer.
        ("databases", database_names(shared, &pools).len() + 1),
        ("users", user_names(&cfg).len()),
        ("peers", cfg.peers.len()),
        ("pools", pools.len() + 1),
        ("peer_pools", 0),
        ("free_clients", 0),
        ("used_clients", shared.clients.len()),
        ("login_clients", 0),
        ("free_servers", 0),
        ("used_servers", servers),
        ("dns_names", 0),
        ("dns_zones", 0),
        ("dns_queries", 0),
        ("dns_pending", 0),
    ] {
        t.row(vec![name.into(), n.into()]);
    }
    t
}

/// `SHOW STATE`.
pub(super) fn state(shared: &Shared) -> Table {
    let paused = shared.pools.controls().global().is_paused();
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let mut t = Table::new(&[("key", Text), ("value", Text)]);
    t.row(vec!["active".into(), yes_no(!paused).into()]);
    t.row(vec!["paused".into(), yes_no(paused).into()]);
    t.row(vec!["suspended".into(), "no".into()]);
    t
}

/// `SHOW PEERS`.
pub(super) fn peers(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("peer_id", Int4),
        ("host", Text),
        ("port", Int4),
        ("pool_size", Int4),
    ]);
    for (id, p) in &shared.cfg().peers {
        t.row(vec![
            i64::from(*id).into(),
            p.host.as_str().into(),
            i64::from(p.port).into(),
            p.pool_size.unwrap_or(0).into(),
        ]);
    }
    t
}
