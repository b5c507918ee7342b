//! `SHOW CONFIG`, and pgheal's own: `SHOW HEALS`, `SHOW STATEMENTS`, `SHOW SCHEMA_EPOCH`.

use std::time::Duration;

use crate::session::Shared;

use super::super::table::{Col, Table, Value};
use super::format_time;
use super::pools::database_names;

use Col::{Int4, Int8, Text};

/// `SHOW CONFIG`: every PgBouncer 1.25 key, with pgheal's value where it has the setting.
/// `changeable` is `yes` for the keys `SET` may change (implemented, and not restart-only).
pub(super) fn config(shared: &Shared) -> Table {
    let cfg = shared.cfg();
    let mut t = Table::new(&[
        ("key", Text),
        ("value", Text),
        ("default", Text),
        ("changeable", Text),
    ]);
    for key in crate::config::pgbouncer_keys::KEYS {
        let value = config_value(&cfg, key.name).unwrap_or_else(|| key.default.to_owned());
        t.row(vec![
            key.name.into(),
            value.into(),
            key.default.into(),
            if crate::config::live::changeable(key.name) {
                "yes"
            } else {
                "no"
            }
            .into(),
        ]);
    }
    t
}

/// The value of a PgBouncer key in pgheal's configuration, for the keys pgheal maps.
pub(super) fn config_value(cfg: &crate::config::Config, key: &str) -> Option<String> {
    let secs = |d: Duration| format!("{}", d.as_secs_f64());
    let list = |v: &[String]| v.join(",");
    let opt_secs = |d: Option<Duration>| d.map_or_else(|| "0".to_owned(), secs);
    Some(match key {
        "listen_addr" => cfg.listen.ip().to_string(),
        "listen_port" => cfg.listen.port().to_string(),
        "max_client_conn" => cfg.max_client_conn.to_string(),
        "default_pool_size" => cfg.defaults.pool_size.to_string(),
        "min_pool_size" => cfg.defaults.min_pool_size.to_string(),
        "pool_mode" => cfg.defaults.pool_mode.as_str().to_owned(),
        "auth_type" => cfg.auth_type.as_str().to_owned(),
        "query_wait_timeout" => secs(cfg.query_wait_timeout),
        "server_connect_timeout" => secs(cfg.server_connect_timeout),
        "client_login_timeout" => secs(cfg.client_login_timeout),
        "client_idle_timeout" => opt_secs(cfg.timeouts.client_idle_timeout),
        "query_timeout" => opt_secs(cfg.timeouts.query_timeout),
        "idle_transaction_timeout" => opt_secs(cfg.timeouts.idle_transaction_timeout),
        "transaction_timeout" => opt_secs(cfg.timeouts.transaction_timeout),
        "query_wait_notify" => cfg
            .timeouts
            .query_wait_notify
            .map_or(0, |d| d.as_secs())
            .to_string(),
        "cancel_wait_timeout" => opt_secs(cfg.timeouts.cancel_wait_timeout),
        "server_lifetime" => secs(cfg.server_lifetime),
        "server_idle_timeout" => secs(cfg.server_idle_timeout),
        "server_reset_query" => cfg.server_reset_query.clone(),
        "server_reset_query_always" => u8::from(cfg.server_reset_query_always).to_string(),
        "max_packet_size" => cfg.max_message_len.to_string(),
        "max_prepared_statements" => cfg.max_prepared_statements.to_string(),
        "admin_users" => list(&cfg.admin_users),
        "stats_users" => list(&cfg.stats_users),
        "stats_period" => cfg.stats_period.as_secs().to_string(),
        "logfile" => cfg
            .process
            .logfile
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        "pidfile" => cfg
            .process
            .pidfile
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        "verbose" => cfg.process.verbose.to_string(),
        "unix_socket_dir" => cfg
            .unix_socket
            .as_ref()
            .map(|u| u.dir.display().to_string())
            .unwrap_or_default(),
        "unix_socket_mode" => format!(
            "0{:o}",
            cfg.unix_socket
                .as_ref()
                .map_or(crate::config::unix_socket::DEFAULT_MODE, |u| u.mode)
        ),
        "unix_socket_group" => cfg
            .unix_socket
            .as_ref()
            .and_then(|u| u.group.clone())
            .unwrap_or_default(),
        _ => return None,
    })
}

/// `SHOW HEALS`: pgheal's recent heal events, newest last.
pub(super) fn heals(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("time", Text),
        ("database", Text),
        ("user", Text),
        ("outcome", Text),
        ("statement", Text),
        ("sql", Text),
        ("change", Text),
        ("server_pid", Int4),
    ]);
    for h in shared.metrics.heals.recent() {
        t.row(vec![
            format_time(h.time).into(),
            h.database.into(),
            h.user.into(),
            h.outcome.label().into(),
            h.statement.into(),
            h.sql.into(),
            h.detail.into(),
            h.server_pid.into(),
        ]);
    }
    t
}

/// `SHOW STATEMENTS`: the statements of transaction-pooling pools (prepared under names
/// shared by the pool's clients), with the shape the server described and the schema epoch
/// it was described in. Session-pooling clients keep their statements on their own server
/// connection and are not listed.
pub(super) fn statements(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("database", Text),
        ("user", Text),
        ("name", Text),
        ("sql", Text),
        ("parameter_types", Text),
        ("result_columns", Text),
        ("idle_servers_holding", Int4),
        ("schema_epoch", Int8),
    ]);
    for pool in shared.pools.all() {
        if !pool.settings().mode.per_transaction() {
            continue;
        }
        let names = shared.pools.names_for(&pool.key);
        for s in names.list() {
            let described = names.described(&s.name);
            let columns = described
                .as_ref()
                .map(|d| {
                    d.shape
                        .iter()
                        .map(|f| format!("{} {}", String::from_utf8_lossy(&f.name), f.type_oid))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            t.row(vec![
                pool.key.database.as_str().into(),
                pool.key.user.as_str().into(),
                String::from_utf8_lossy(&s.name).into_owned().into(),
                crate::heal::truncate_sql(&s.sql).into(),
                s.param_types
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
                    .into(),
                columns.into(),
                pool.idle_holding(&s.name).into(),
                described.map_or(Value::Null, |d| d.epoch.into()),
            ]);
        }
    }
    t
}

/// `SHOW SCHEMA_EPOCH`: each database's schema epoch (it advances with every schema change
/// pgheal learns of; statements described in an older epoch are re-described before use).
pub(super) fn schema_epoch(shared: &Shared) -> Table {
    let mut t = Table::new(&[("database", Text), ("schema_epoch", Int8)]);
    for name in database_names(shared, &shared.pools.all()) {
        let epoch = shared.pools.epoch_for(&name).current();
        t.row(vec![name.into(), epoch.into()]);
    }
    t
}
