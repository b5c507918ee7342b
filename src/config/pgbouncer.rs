//! A parsed `pgbouncer.ini` ([`super::ini`]) → the [`FileConfig`] a TOML file loads into, with
//! PgBouncer's meanings and defaults, so `pgheal /etc/pgbouncer/pgbouncer.ini` runs the same
//! pools PgBouncer would.
//!
//! - `[pgbouncer]`: each key is looked up in [`super::pgbouncer_keys::KEYS`], its value checked
//!   against its PgBouncer type, and then honoured, warned about or refused as the table says.
//!   A key PgBouncer 1.25 does not have is a warning (PgBouncer would refuse to start). Keys
//!   that are not in the file get PgBouncer's default, not pgheal's (`max_client_conn` 100,
//!   `auth_type` md5, ...). PgBouncer's zeros keep their meaning: `query_wait_timeout = 0` and
//!   `server_connect_timeout = 0` wait forever, `server_lifetime = 0` uses a connection once.
//! - `[databases]`: connection strings ([`super::connstr`]); `*` is the fallback database;
//!   `pgbouncer` is reserved; a parameter PgBouncer does not know is an error, one pgheal does
//!   not implement yet is a warning naming it.
//! - `[users]`: `pool_mode`, `pool_size`, `reserve_pool_size`, `max_user_connections`,
//!   `max_user_client_connections` and the session timeouts (`client_idle_timeout`,
//!   `query_timeout`, `idle_transaction_timeout`, `transaction_timeout`) per user; the other
//!   PgBouncer keys warn.
//! - `[peers]`: where cancel requests carrying another instance's `peer_id` are forwarded
//!   (see `session::cancel`).
//!
//! Every error names the key and carries `file:line`. Values are never echoed from
//! connection strings (passwords live there). Host names in `listen_addr` are resolved through
//! the `resolve` function given in, so this module stays free of I/O.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use crate::auth::AuthMethod;

use super::connstr;
use super::file::{FileConfig, FileDatabase, FileUserSettings, General, PgBouncerExtras};
use super::ini::{Entry, Ini, Location};
use super::pgbouncer_keys::{self as keys, parse_c_int, parse_seconds, Kind, Support};
use super::tls::SslMode;
use super::{AuthType, ConfigError, Peer, PoolMode};

/// Resolves `listen_addr` host names: (host, port) → addresses.
pub type Resolve<'a> = &'a dyn Fn(&str, u16) -> std::io::Result<Vec<SocketAddr>>;

const SECTIONS: &[&str] = &["pgbouncer", "databases", "users", "peers"];

/// PgBouncer's "0 = no limit" for a wait: a year, inside the range of tokio's timer (about
/// 2.2 years; longer sleeps are cut short there).
const FOREVER_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// Database connection-string keys pgheal reads but does not implement yet.
const DB_NOT_YET: &[&str] = &["query_wait_timeout", "server_lifetime"];
/// Of those, the ones PgBouncer reads as integers.
const DB_INTS: &[&str] = &["query_wait_timeout", "server_lifetime"];
const USER_NOT_YET: &[&str] = &["query_wait_timeout"];

fn bad(key: impl Into<String>, at: &Location, reason: impl Display) -> ConfigError {
    ConfigError::new(key, format!("{at}: {reason}"))
}

/// Maps a parsed pgbouncer.ini (`path` is the top file) onto a [`FileConfig`].
pub fn from_ini(ini: &Ini, path: &Path, resolve: Resolve<'_>) -> Result<FileConfig, ConfigError> {
    for (name, at) in &ini.sections {
        if !SECTIONS.contains(&name.as_str()) {
            return Err(bad(
                format!("[{name}]"),
                at,
                "unknown section (PgBouncer's are [pgbouncer], [databases], [users] and [peers])",
            ));
        }
    }
    if !ini.sections.iter().any(|(n, _)| n == "pgbouncer") {
        return Err(ConfigError::new(
            "[pgbouncer]",
            format!(
                "{}: no [pgbouncer] section (PgBouncer requires one)",
                path.display()
            ),
        ));
    }
    let mut warnings = Vec::new();
    let section = |name: &'static str| ini.entries.iter().filter(move |e| e.section == name);

    // [pgbouncer]: check every value; the last occurrence of a key wins, as in PgBouncer.
    let mut set: BTreeMap<&'static str, &Entry> = BTreeMap::new();
    for e in section("pgbouncer") {
        match keys::find(&e.key) {
            None => warnings.push(format!(
                "{}: unknown key `{}` in [pgbouncer] ignored (not a PgBouncer 1.25 setting)",
                e.at, e.key
            )),
            Some(k) => {
                k.kind.check(&e.value).map_err(|r| bad(k.name, &e.at, r))?;
                set.insert(k.name, e);
            }
        }
    }
    for (&name, e) in &set {
        let Some(k) = keys::find(name) else { continue };
        let same_as = |values: &[&str]| values.iter().any(|v| k.kind.same_value(v, &e.value));
        match k.support {
            Support::Yes(_) => {}
            Support::NotYet { refuse, note, .. } if same_as(refuse) => {
                return Err(bad(
                    name,
                    &e.at,
                    format!("{name} = {} is not supported by pgheal: {note}", e.value),
                ));
            }
            Support::NotYet { same, note, .. } if !same_as(same) => warnings.push(format!(
                "{}: `{name}` is not implemented by pgheal yet; ignored{}",
                e.at,
                if note.is_empty() {
                    String::new()
                } else {
                    format!(" ({note})")
                }
            )),
            Support::NotYet { .. } => {}
            Support::Differs { warn: true, note } => warnings.push(format!(
                "{}: `{name}` has no effect in pgheal: {note}",
                e.at
            )),
            Support::Differs { warn: false, .. } => {}
        }
    }
    let general = general(&set, path, resolve, &mut warnings)?;
    let verbose = match set.get("verbose") {
        Some(e) => int(e)?.clamp(0, 255) as u8,
        None => 0,
    };

    let mut databases = BTreeMap::new();
    for e in section("databases") {
        databases.insert(e.key.clone(), database(e, &mut warnings)?);
    }
    let mut user_settings = BTreeMap::new();
    for e in section("users") {
        user_settings.insert(e.key.clone(), user(e, &mut warnings)?);
    }
    let mut peers = BTreeMap::new();
    for e in section("peers") {
        let (id, p) = peer(e)?;
        peers.insert(id, p);
    }
    Ok(FileConfig {
        pgheal: general,
        heal: Default::default(),
        databases,
        users: BTreeMap::new(),
        user_settings,
        peers: BTreeMap::new(),
        pgbouncer: Some(PgBouncerExtras {
            warnings,
            peers,
            verbose,
        }),
    })
}

fn int(e: &Entry) -> Result<i64, ConfigError> {
    parse_c_int(&e.value).ok_or_else(|| bad(e.key.as_str(), &e.at, "expected an integer"))
}

fn seconds(e: &Entry) -> Result<f64, ConfigError> {
    parse_seconds(&e.value).ok_or_else(|| bad(e.key.as_str(), &e.at, "expected seconds ≥ 0"))
}

fn non_empty(e: Option<&&Entry>) -> Option<String> {
    e.filter(|e| !e.value.is_empty()).map(|e| e.value.clone())
}

/// The `[pgbouncer]` keys pgheal implements, with PgBouncer's defaults for the missing ones.
fn general(
    set: &BTreeMap<&'static str, &Entry>,
    path: &Path,
    resolve: Resolve<'_>,
    warnings: &mut Vec<String>,
) -> Result<General, ConfigError> {
    let get = |k: &str| set.get(k).copied();
    let int_or = |k: &str, default: i64| get(k).map_or(Ok(default), int);
    let secs_or = |k: &str, default: f64| get(k).map_or(Ok(default), seconds);
    let at_least = |k: &str, v: i64, min: i64| match get(k) {
        Some(e) if v < min => Err(bad(k, &e.at, format!("must be at least {min}"))),
        _ => Ok(v),
    };

    let port = at_least("listen_port", int_or("listen_port", 6432)?, 1)?;
    let port = match u16::try_from(port) {
        Ok(p) => p,
        Err(_) => {
            let at = get("listen_port").map(|e| &e.at);
            return Err(match at {
                Some(at) => bad("listen_port", at, "must be at most 65535"),
                None => ConfigError::new("listen_port", "must be at most 65535"),
            });
        }
    };
    let listen = listen(get("listen_addr"), port, path, resolve, warnings)?;

    let auth_type = match get("auth_type") {
        None => AuthType::Method(AuthMethod::Md5),
        Some(e) => match e.value.to_ascii_lowercase().as_str() {
            "trust" => AuthType::Method(AuthMethod::Trust),
            "plain" => AuthType::Method(AuthMethod::Plain),
            "md5" => AuthType::Method(AuthMethod::Md5),
            "scram-sha-256" => AuthType::Method(AuthMethod::ScramSha256),
            "hba" => AuthType::Hba,
            other => {
                return Err(bad(
                    "auth_type",
                    &e.at,
                    format!("auth_type = {other} is not supported by pgheal yet (trust, plain, md5, scram-sha-256 and hba are)"),
                ))
            }
        },
    };
    let pool_mode = match get("pool_mode") {
        None => PoolMode::Session,
        Some(e) => pool_mode(&e.value),
    };
    let pool_size = at_least("default_pool_size", int_or("default_pool_size", 20)?, 1)?;
    let min_pool_size = at_least("min_pool_size", int_or("min_pool_size", 0)?, 0)?;
    let max_client_conn = at_least("max_client_conn", int_or("max_client_conn", 100)?, 0)?;
    let zero_is_forever = |v: f64| if v == 0.0 { FOREVER_SECS } else { v };

    let max_prepared_statements = match get("max_prepared_statements") {
        None => Some(200),
        Some(e) => match at_least("max_prepared_statements", int(e)?, 0)? {
            0 => {
                warnings.push(format!(
                    "{}: `max_prepared_statements = 0` (no prepared statement support) is not how pgheal works: it always tracks prepared statements in transaction pooling; keeping 200 per server connection",
                    e.at
                ));
                Some(200)
            }
            n => Some(n as usize),
        },
    };
    let max_message_len = match get("max_packet_size") {
        None => None,
        Some(e) => Some(at_least("max_packet_size", int(e)?, 1024)? as usize),
    };
    let server_tls_sslmode = match get("server_tls_sslmode") {
        None => SslMode::Prefer,
        Some(e) => SslMode::parse(&e.value).ok_or_else(|| {
            bad(
                "server_tls_sslmode",
                &e.at,
                format!("expected {}", SslMode::NAMES),
            )
        })?,
    };
    let client_tls_sslmode = match get("client_tls_sslmode") {
        None => SslMode::Disable,
        Some(e) => {
            let mode = SslMode::parse(&e.value).ok_or_else(|| {
                bad(
                    "client_tls_sslmode",
                    &e.at,
                    format!("expected {}", SslMode::NAMES),
                )
            })?;
            if mode != SslMode::Disable
                && (non_empty(set.get("client_tls_cert_file")).is_none()
                    || non_empty(set.get("client_tls_key_file")).is_none())
            {
                return Err(bad(
                    "client_tls_sslmode",
                    &e.at,
                    format!("client_tls_sslmode = {mode} needs client_tls_cert_file and client_tls_key_file"),
                ));
            }
            mode
        }
    };
    Ok(General {
        client_tls_sslmode: Some(client_tls_sslmode),
        client_tls_cert_file: non_empty(set.get("client_tls_cert_file")),
        client_tls_key_file: non_empty(set.get("client_tls_key_file")),
        client_tls_ca_file: non_empty(set.get("client_tls_ca_file")),
        client_tls_protocols: non_empty(set.get("client_tls_protocols")),
        client_tls_ciphers: non_empty(set.get("client_tls_ciphers")),
        unix_socket_dir: Some(get("unix_socket_dir").map_or_else(
            || super::unix_socket::DEFAULT_DIR.to_owned(),
            |e| e.value.clone(),
        )),
        unix_socket_mode: get("unix_socket_mode")
            .map(|e| super::unix_socket::SocketMode::Text(e.value.clone())),
        unix_socket_group: non_empty(set.get("unix_socket_group")),
        server_tls_sslmode: Some(server_tls_sslmode),
        server_tls_ca_file: non_empty(set.get("server_tls_ca_file")),
        server_tls_cert_file: non_empty(set.get("server_tls_cert_file")),
        server_tls_key_file: non_empty(set.get("server_tls_key_file")),
        server_tls_protocols: non_empty(set.get("server_tls_protocols")),
        listen: Some(
            listen
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
        upstream: None,
        peer_id: match get("peer_id") {
            None => None,
            Some(e) => Some(
                u16::try_from(int(e)?)
                    .map_err(|_| bad("peer_id", &e.at, "a peer id is a number from 0 to 65535"))?,
            ),
        },
        pool_mode: Some(pool_mode),
        pool_size: Some(pool_size as usize),
        min_pool_size: Some(min_pool_size.min(pool_size) as usize),
        max_client_conn: Some(max_client_conn as usize),
        reserve_pool_size: Some(
            at_least("reserve_pool_size", int_or("reserve_pool_size", 0)?, 0)? as usize,
        ),
        reserve_pool_timeout: Some(secs_or("reserve_pool_timeout", 5.0)?),
        max_db_connections: Some(at_least(
            "max_db_connections",
            int_or("max_db_connections", 0)?,
            0,
        )? as usize),
        max_user_connections: Some(at_least(
            "max_user_connections",
            int_or("max_user_connections", 0)?,
            0,
        )? as usize),
        max_db_client_connections: Some(at_least(
            "max_db_client_connections",
            int_or("max_db_client_connections", 0)?,
            0,
        )? as usize),
        max_user_client_connections: Some(at_least(
            "max_user_client_connections",
            int_or("max_user_client_connections", 0)?,
            0,
        )? as usize),
        auth_type: Some(auth_type),
        auth_file: non_empty(set.get("auth_file")),
        auth_hba_file: non_empty(set.get("auth_hba_file")),
        auth_user: non_empty(set.get("auth_user")),
        auth_query: get("auth_query").map(|e| e.value.clone()),
        auth_dbname: non_empty(set.get("auth_dbname")),
        query_wait_timeout: Some(zero_is_forever(secs_or("query_wait_timeout", 120.0)?)),
        server_connect_timeout: Some(zero_is_forever(secs_or("server_connect_timeout", 15.0)?)),
        server_lifetime: Some(match secs_or("server_lifetime", 3600.0)? {
            // PgBouncer: "0 means the connection is to be used only once". pgheal's 0 means
            // never; the shortest lifetime closes each connection before its next use.
            0.0 => 1e-9,
            v => v,
        }),
        server_idle_timeout: Some(secs_or("server_idle_timeout", 600.0)?),
        server_reset_query: Some(
            get("server_reset_query").map_or_else(|| "DISCARD ALL".to_owned(), |e| e.value.clone()),
        ),
        server_reset_query_always: Some(int_or("server_reset_query_always", 0)? != 0),
        max_message_len,
        max_prepared_statements,
        max_pool_statements: None,
        shutdown_timeout: None,
        client_login_timeout: Some(secs_or("client_login_timeout", 60.0)?),
        client_idle_timeout: Some(secs_or("client_idle_timeout", 0.0)?),
        query_timeout: Some(secs_or("query_timeout", 0.0)?),
        idle_transaction_timeout: Some(secs_or("idle_transaction_timeout", 0.0)?),
        transaction_timeout: Some(secs_or("transaction_timeout", 0.0)?),
        query_wait_notify: Some(
            at_least("query_wait_notify", int_or("query_wait_notify", 5)?, 0)? as f64,
        ),
        cancel_wait_timeout: Some(secs_or("cancel_wait_timeout", 10.0)?),
        threads: None,
        log_format: None,
        metrics_listen: None,
        schema_watch: None,
        logfile: non_empty(set.get("logfile")),
        pidfile: non_empty(set.get("pidfile")),
        user: non_empty(set.get("user")),
        so_reuseport: Some(int_or("so_reuseport", 0)? != 0),
        tcp_keepalive: Some(int_or("tcp_keepalive", 1)? != 0),
        tcp_keepidle: Some(at_least("tcp_keepidle", int_or("tcp_keepidle", 0)?, 0)? as u64),
        tcp_keepintvl: Some(at_least("tcp_keepintvl", int_or("tcp_keepintvl", 0)?, 0)? as u64),
        tcp_keepcnt: Some(at_least("tcp_keepcnt", int_or("tcp_keepcnt", 0)?, 0)? as u64),
        tcp_user_timeout: Some(
            at_least("tcp_user_timeout", int_or("tcp_user_timeout", 0)?, 0)? as u64,
        ),
        admin_users: set.get("admin_users").map(|e| name_list(&e.value)),
        stats_users: set.get("stats_users").map(|e| name_list(&e.value)),
        stats_period: Some(at_least("stats_period", int_or("stats_period", 60)?, 1)? as f64),
        log_connections: Some(int_or("log_connections", 1)? != 0),
        log_disconnections: Some(int_or("log_disconnections", 1)? != 0),
        log_pooler_errors: Some(int_or("log_pooler_errors", 1)? != 0),
        log_stats: Some(int_or("log_stats", 1)? != 0),
        server_login_retry: Some(secs_or("server_login_retry", 15.0)?),
        server_check_delay: Some(secs_or("server_check_delay", 30.0)?),
        server_check_query: Some(
            get("server_check_query").map_or_else(|| "<empty>".to_owned(), |e| e.value.clone()),
        ),
        server_round_robin: Some(int_or("server_round_robin", 0)? != 0),
        server_fast_close: Some(int_or("server_fast_close", 0)? != 0),
        application_name_add_host: Some(int_or("application_name_add_host", 0)? != 0),
    })
}

/// A comma-separated list of user names (`admin_users`, `stats_users`), blanks around names
/// ignored, as PgBouncer's `strlist` parses it.
fn name_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `listen_addr` (a comma-separated list; `*` = every IPv4 and IPv6 address; names are resolved
/// to all their addresses) and `listen_port` → the addresses pgheal listens on, as PgBouncer.
fn listen(
    addr: Option<&Entry>,
    port: u16,
    path: &Path,
    resolve: Resolve<'_>,
    warnings: &mut Vec<String>,
) -> Result<Vec<SocketAddr>, ConfigError> {
    let list: Vec<&str> = addr
        .map(|e| {
            e.value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let Some(e) = addr.filter(|_| !list.is_empty()) else {
        let at = addr.map_or_else(|| path.display().to_string(), |e| e.at.to_string());
        warnings.push(format!(
            "{at}: `listen_addr` is not set: PgBouncer would accept Unix socket connections only; pgheal listens on 127.0.0.1:{port} as well (a TCP listener is required)"
        ));
        return Ok(vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)]);
    };
    let mut all: Vec<SocketAddr> = Vec::new();
    for item in list {
        let found: Vec<SocketAddr> = if item == "*" {
            vec![
                SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
                SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port),
            ]
        } else {
            let bare = item.trim_start_matches('[').trim_end_matches(']');
            match bare.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                Err(_) => resolve(bare, port).map_err(|err| {
                    bad(
                        "listen_addr",
                        &e.at,
                        format!("cannot resolve {bare:?}: {err}"),
                    )
                })?,
            }
        };
        if found.is_empty() {
            return Err(bad(
                "listen_addr",
                &e.at,
                format!("{item:?} resolves to no address"),
            ));
        }
        for a in found {
            if !all.contains(&a) {
                all.push(a);
            }
        }
    }
    Ok(all)
}

fn pool_mode(value: &str) -> PoolMode {
    match value.to_ascii_lowercase().as_str() {
        "transaction" => PoolMode::Transaction,
        "statement" => PoolMode::Statement,
        _ => PoolMode::Session,
    }
}

/// A whole decimal number from a connection string (PgBouncer reads them with `atoi`).
fn cs_int(key: &str, value: &str, at: &Location, min: i64) -> Result<i64, ConfigError> {
    match value.parse::<i64>() {
        Ok(v) if v >= min => Ok(v),
        Ok(_) => Err(bad(key, at, format!("must be at least {min}"))),
        Err(_) => Err(bad(key, at, "expected a whole number")),
    }
}

fn cs_pool_mode(key: &str, value: &str, at: &Location) -> Result<(), ConfigError> {
    Kind::Lookup(keys::POOL_MODES)
        .check(value)
        .map_err(|r| bad(key, at, r))
}

/// One `[databases]` line.
fn database(e: &Entry, warnings: &mut Vec<String>) -> Result<FileDatabase, ConfigError> {
    let name = &e.key;
    let key = |k: &str| format!("databases.{name}.{k}");
    if name == "pgbouncer" {
        return Err(bad(
            "databases.pgbouncer",
            &e.at,
            "the database name pgbouncer is reserved for the admin console",
        ));
    }
    let pairs = connstr::parse(&e.value).map_err(|r| bad(format!("databases.{name}"), &e.at, r))?;
    let mut d = FileDatabase::default();
    let mut not_yet: Vec<&str> = Vec::new();
    for p in &pairs {
        let (k, v) = (p.key.as_str(), p.value.as_str());
        match k {
            "host" => d.host = Some(v.to_owned()),
            "port" if v.contains(',') => {
                d.ports = Some(
                    super::servers::port_list(&key(k), v)
                        .map_err(|err| bad(key(k), &e.at, err.reason))?,
                );
            }
            "port" => {
                let port = cs_int(&key(k), v, &e.at, 1)?;
                d.port = Some(
                    u16::try_from(port).map_err(|_| bad(key(k), &e.at, "must be at most 65535"))?,
                );
            }
            "dbname" => d.dbname = Some(v.to_owned()),
            "user" => d.user = Some(v.to_owned()),
            "password" => d.password = Some(v.to_owned()),
            "auth_user" => d.auth_user = Some(v.to_owned()),
            "auth_query" => d.auth_query = Some(v.to_owned()),
            "auth_dbname" => d.auth_dbname = Some(v.to_owned()),
            "connect_query" => d.connect_query = Some(v.to_owned()),
            "client_encoding" => d.client_encoding = Some(v.to_owned()),
            "datestyle" => d.datestyle = Some(v.to_owned()),
            "timezone" => d.timezone = Some(v.to_owned()),
            "application_name" => d.application_name = Some(v.to_owned()),
            "load_balance_hosts" => {
                super::servers::LoadBalanceHosts::parse(&key(k), v)
                    .map_err(|err| bad(key(k), &e.at, err.reason))?;
                d.load_balance_hosts = Some(v.to_ascii_lowercase());
            }
            "pool_size" => d.pool_size = Some(cs_int(&key(k), v, &e.at, 1)? as usize),
            "min_pool_size" => d.min_pool_size = Some(cs_int(&key(k), v, &e.at, 0)? as usize),
            // `reserve_pool` is PgBouncer's older spelling, still read.
            "reserve_pool" | "reserve_pool_size" => {
                d.reserve_pool_size = Some(cs_int(&key(k), v, &e.at, 0)? as usize)
            }
            "max_db_connections" => {
                d.max_db_connections = Some(cs_int(&key(k), v, &e.at, 0)? as usize)
            }
            "max_db_client_connections" => {
                d.max_db_client_connections = Some(cs_int(&key(k), v, &e.at, 0)? as usize)
            }
            "pool_mode" => {
                cs_pool_mode(&key(k), v, &e.at)?;
                d.pool_mode = Some(pool_mode(v));
            }
            _ if DB_NOT_YET.contains(&k) => {
                if DB_INTS.contains(&k) {
                    cs_int(&key(k), v, &e.at, i64::MIN)?;
                }
                if !not_yet.contains(&k) {
                    not_yet.push(k);
                }
            }
            _ => {
                return Err(bad(
                    key(k),
                    &e.at,
                    format!("unknown connection parameter `{k}` (PgBouncer refuses it too)"),
                ))
            }
        }
    }
    match d.host.as_deref() {
        None => warnings.push(format!(
            "{}: database `{name}` has no host: PgBouncer would use the Unix socket in unix_socket_dir, which pgheal does not implement yet; connecting to 127.0.0.1",
            e.at
        )),
        Some(h) if h.starts_with('/') || h.starts_with('@') => {
            warnings.push(format!(
                "{}: database `{name}`: host is a Unix socket, which pgheal does not implement yet; connecting to 127.0.0.1",
                e.at
            ));
            d.host = None;
        }
        Some(h) if h.contains(',') => {
            let hosts = super::servers::host_list(&key("host"), h)
                .map_err(|err| bad(key("host"), &e.at, err.reason))?;
            if hosts.iter().any(|h| h.starts_with('/') || h.starts_with('@')) {
                return Err(bad(
                    key("host"),
                    &e.at,
                    "a Unix socket in a host list: pgheal does not implement Unix sockets to servers yet",
                ));
            }
            d.host = Some(hosts.join(","));
        }
        Some(_) => {}
    }
    if !not_yet.is_empty() {
        warnings.push(format!(
            "{}: database `{name}`: {} not implemented by pgheal yet; ignored",
            e.at,
            not_yet.join(", ")
        ));
    }
    Ok(d)
}

/// One `[users]` line.
fn user(e: &Entry, warnings: &mut Vec<String>) -> Result<FileUserSettings, ConfigError> {
    let name = &e.key;
    let key = |k: &str| format!("users.{name}.{k}");
    let pairs = connstr::parse(&e.value).map_err(|r| bad(format!("users.{name}"), &e.at, r))?;
    let mut u = FileUserSettings::default();
    let mut not_yet: Vec<&str> = Vec::new();
    for p in &pairs {
        let (k, v) = (p.key.as_str(), p.value.as_str());
        match k {
            "pool_mode" => {
                cs_pool_mode(&key(k), v, &e.at)?;
                u.pool_mode = Some(pool_mode(v));
            }
            "pool_size" => u.pool_size = Some(cs_int(&key(k), v, &e.at, 1)? as usize),
            "reserve_pool_size" => {
                u.reserve_pool_size = Some(cs_int(&key(k), v, &e.at, 0)? as usize)
            }
            "max_user_connections" => {
                u.max_user_connections = Some(cs_int(&key(k), v, &e.at, 0)? as usize)
            }
            "max_user_client_connections" => {
                u.max_user_client_connections = Some(cs_int(&key(k), v, &e.at, 0)? as usize)
            }
            // Whole seconds, as PgBouncer reads them (`atoi`); 0 = the global value.
            "client_idle_timeout" => {
                u.client_idle_timeout = Some(cs_int(&key(k), v, &e.at, 0)? as f64)
            }
            "query_timeout" => u.query_timeout = Some(cs_int(&key(k), v, &e.at, 0)? as f64),
            "idle_transaction_timeout" => {
                u.idle_transaction_timeout = Some(cs_int(&key(k), v, &e.at, 0)? as f64)
            }
            "transaction_timeout" => {
                u.transaction_timeout = Some(cs_int(&key(k), v, &e.at, 0)? as f64)
            }
            _ if USER_NOT_YET.contains(&k) => {
                cs_int(&key(k), v, &e.at, i64::MIN)?;
                if !not_yet.contains(&k) {
                    not_yet.push(k);
                }
            }
            _ => {
                return Err(bad(
                    key(k),
                    &e.at,
                    format!("unknown user parameter `{k}` (PgBouncer refuses it too)"),
                ))
            }
        }
    }
    if !not_yet.is_empty() {
        warnings.push(format!(
            "{}: user `{name}`: {} not implemented by pgheal yet; ignored",
            e.at,
            not_yet.join(", ")
        ));
    }
    Ok(u)
}

/// One `[peers]` line: `ID = host=... port=... pool_size=...`.
fn peer(e: &Entry) -> Result<(u16, Peer), ConfigError> {
    let key = format!("peers.{}", e.key);
    let id = e
        .key
        .parse::<u16>()
        .ok()
        .filter(|&id| id > 0)
        .ok_or_else(|| bad(key.as_str(), &e.at, "a peer id is a number from 1 to 65535"))?;
    let mut peer = Peer {
        host: String::new(),
        port: 6432,
        pool_size: None,
    };
    for p in connstr::parse(&e.value).map_err(|r| bad(key.as_str(), &e.at, r))? {
        match p.key.as_str() {
            "host" => peer.host = p.value,
            "port" => {
                peer.port = u16::try_from(cs_int(&key, &p.value, &e.at, 1)?)
                    .map_err(|_| bad(key.as_str(), &e.at, "port must be at most 65535"))?
            }
            "pool_size" => peer.pool_size = Some(cs_int(&key, &p.value, &e.at, 0)? as usize),
            other => {
                return Err(bad(
                    key.as_str(),
                    &e.at,
                    format!("unknown peer parameter `{other}`"),
                ))
            }
        }
    }
    if peer.host.is_empty() {
        return Err(bad(key.as_str(), &e.at, "a peer needs host="));
    }
    Ok((id, peer))
}

#[cfg(test)]
#[path = "pgbouncer_tests.rs"]
mod tests;
