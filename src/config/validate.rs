//! File + flags → a validated [`Config`]. Every check names the key it is about. Reading the
//! file itself (TOML or pgbouncer.ini, `SET` values on top) is [`super::load`]; the TLS keys,
//! whose certificate and key files are read while checking them, are in
//! [`super::validate_tls`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{hba, parse_userlist, AuthMethod, Secret};
use crate::heal::RelayConfig;

use super::cli::RunArgs;
use super::file::{FileConfig, FileDatabase};
use super::upstream::Upstream;
use super::validate_tls::{client_tls, server_tls_options, ServerTlsSet};
use super::DEFAULT_AUTH_QUERY;
use super::{
    AuthType, Config, ConfigError, Database, FallbackDatabase, LogFormat, PoolDefaults, PoolMode,
    ProcessSettings, SchemaWatch, UserSettings,
};

/// More event loops than this is a typo, not a machine.
const MAX_THREADS: usize = 1024;

/// Event loops when `threads` is not set: the CPUs available to pgheal (its cgroup quota
/// included) when every database uses session pooling, else one. In transaction pooling a
/// server connection goes to whichever session asks next, on any loop, and moving its socket
/// between loops at every transaction costs more than a second loop gains (measured in
/// docs/benchmarks.md); one loop keeps it where it is.
fn default_threads(
    databases: &BTreeMap<String, Database>,
    fallback: Option<&FallbackDatabase>,
    user_settings: &BTreeMap<String, UserSettings>,
) -> usize {
    let transaction = databases
        .values()
        .chain(fallback.map(|f| &f.template))
        .any(|d| d.pool_mode.per_transaction())
        || user_settings
            .values()
            .any(|u| u.pool_mode.is_some_and(PoolMode::per_transaction));
    if transaction {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn parse_enum<T: serde::de::DeserializeOwned>(
    key: &str,
    value: &str,
    expected: &str,
) -> Result<T, ConfigError> {
    T::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(value))
        .map_err(|_| ConfigError::new(key, format!("expected {expected}, got {value:?}")))
}

/// Reads and parses `auth_hba_file` and its `@file` includes. Unlike PgBouncer, which logs a
/// bad line and skips it, a bad line (or an unreadable file) stops the start: a skipped
/// `reject` line would let a later, more permissive line match.
fn load_hba(path: &Path) -> Result<hba::HbaRules, ConfigError> {
    let text = std::fs::read(path).map_err(|e| {
        ConfigError::new(
            "auth_hba_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let mut read = |p: &Path| std::fs::read(p).map_err(|e| e.to_string());
    hba::parse(&text, path, &mut read).map_err(|e| ConfigError::new("auth_hba_file", e.to_string()))
}

fn seconds(key: &str, v: Option<f64>, default: f64) -> Result<Duration, ConfigError> {
    let v = v.unwrap_or(default);
    if !(v.is_finite() && v >= 0.0) {
        return Err(ConfigError::new(key, "must be a number of seconds ≥ 0"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("expected host:port with an IP address, got {v:?}"),
        )
    })
}

/// Merge and validate.
///
/// A file that was a pgbouncer.ini ([`FileConfig::pgbouncer`]) is held to PgBouncer's leniency:
/// no database, an unreadable `auth_file` or no users are warnings, not errors (PgBouncer starts
/// and refuses the clients).
pub fn build(file: FileConfig, args: &RunArgs) -> Result<Config, ConfigError> {
    let g = file.pgheal;
    let lenient = file.pgbouncer.is_some();
    let extras = file.pgbouncer.unwrap_or_default();
    let mut warnings = extras.warnings;
    // One address or a comma-separated list; the first is the main one.
    let mut listen_all = args
        .listen
        .as_deref()
        .or(g.listen.as_deref())
        .unwrap_or("127.0.0.1:6432")
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| addr("listen", a))
        .collect::<Result<Vec<_>, _>>()?;
    if listen_all.is_empty() {
        return Err(ConfigError::new("listen", "no address given"));
    }
    let listen = listen_all.remove(0);
    let pool_mode = match args.pool_mode.as_deref() {
        Some(m) => parse_enum("pool_mode", m, "session, transaction or statement")?,
        None => g.pool_mode.unwrap_or(PoolMode::Session),
    };
    let pool_size = args.pool_size.or(g.pool_size).unwrap_or(20);
    if pool_size == 0 {
        return Err(ConfigError::new("pool_size", "must be at least 1"));
    }
    let min_pool_size = args.min_pool_size.or(g.min_pool_size).unwrap_or(0);
    if min_pool_size > pool_size {
        return Err(ConfigError::new(
            "min_pool_size",
            "must not exceed pool_size",
        ));
    }
    let limits = super::limits::Limits {
        reserve_pool_size: g.reserve_pool_size.unwrap_or(0),
        reserve_pool_timeout: seconds("reserve_pool_timeout", g.reserve_pool_timeout, 5.0)?,
        max_db_connections: g.max_db_connections.unwrap_or(0),
        max_user_connections: g.max_user_connections.unwrap_or(0),
        max_db_client_connections: g.max_db_client_connections.unwrap_or(0),
        max_user_client_connections: g.max_user_client_connections.unwrap_or(0),
    };
    let auth_setting = match args.auth_type.as_deref() {
        Some(a) => parse_enum("auth_type", a, "scram-sha-256, md5, plain, trust or hba")?,
        None => g
            .auth_type
            .unwrap_or(AuthType::Method(AuthMethod::ScramSha256)),
    };
    let (auth_type, hba) = match auth_setting {
        AuthType::Method(m) => (m, None),
        AuthType::Hba => {
            let path = args
                .auth_hba_file
                .as_deref()
                .or(g.auth_hba_file.as_deref())
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    ConfigError::new("auth_hba_file", "auth_type = hba needs auth_hba_file")
                })?;
            // `md5` is PgBouncer's default; unused, as every connection's method comes from
            // the rules.
            (AuthMethod::Md5, Some(Arc::new(load_hba(Path::new(path))?)))
        }
    };
    let log_format = match args.log_format.as_deref() {
        Some(f) => parse_enum("log_format", f, "human or json")?,
        None => g.log_format.unwrap_or(LogFormat::Human),
    };
    let metrics_listen = args
        .metrics_listen
        .as_deref()
        .or(g.metrics_listen.as_deref())
        .map(|a| addr("metrics_listen", a))
        .transpose()?;
    let max_message_len = args
        .max_message_len
        .or(g.max_message_len)
        .unwrap_or(256 << 20);
    if max_message_len < 1024 {
        return Err(ConfigError::new(
            "max_message_len",
            "must be at least 1024 bytes",
        ));
    }

    // TLS to the servers: server_tls_*, with an upstream URL's parameters winning; each
    // distinct setting is built (its files read) once, here, so a bad file stops the start.
    let mut server_tls = ServerTlsSet::new(server_tls_options(&g, args)?);

    // Databases: [databases.*] plus the --upstream shortcut.
    let mut databases = BTreeMap::new();
    let mut users: BTreeMap<String, Secret> = BTreeMap::new();
    let mut db_from = |name: &str, d: &FileDatabase| -> Result<Database, ConfigError> {
        let key = |k: &str| format!("databases.{name}.{k}");
        let from_url = d
            .url
            .as_deref()
            .map(|u| Upstream::parse(&key("url"), u))
            .transpose()?;
        let pool_size = d.pool_size.unwrap_or(pool_size);
        if pool_size == 0 {
            return Err(ConfigError::new(key("pool_size"), "must be at least 1"));
        }
        let tls = server_tls.for_url(&key("url"), from_url.as_ref().map(|u| &u.tls))?;
        let connect = super::servers::DbConnect::new(
            d.load_balance_hosts
                .as_deref()
                .map(|v| super::servers::LoadBalanceHosts::parse(&key("load_balance_hosts"), v))
                .transpose()?
                .unwrap_or_default(),
            d.connect_query.clone(),
            d.client_encoding.clone(),
            d.datestyle.clone(),
            d.timezone.clone(),
            d.application_name.clone(),
        );
        let mut connect = connect;
        if let Some(h) = &d.host {
            let hosts = super::servers::host_list(&key("host"), h)?;
            if let Some(ports) = &d.ports {
                super::servers::check_ports(&key("ports"), hosts.len(), ports)?;
                if d.port.is_some() {
                    return Err(ConfigError::new(
                        key("ports"),
                        "give port or ports, not both",
                    ));
                }
                if ports.len() > 1 {
                    connect.ports = ports.clone();
                }
            }
        }
        Ok(Database {
            name: name.to_owned(),
            host: d
                .host
                .clone()
                .or(from_url.as_ref().map(|u| u.host.clone()))
                .unwrap_or_else(|| "127.0.0.1".into()),
            port: d
                .port
                .or(d.ports.as_ref().and_then(|p| p.first().copied()))
                .or(from_url.as_ref().map(|u| u.port))
                .unwrap_or(5432),
            dbname: d
                .dbname
                .clone()
                .or(from_url.as_ref().map(|u| u.dbname.clone()))
                .unwrap_or_else(|| name.to_owned()),
            user: d.user.clone().or(from_url.as_ref().map(|u| u.user.clone())),
            password: d.password.clone().or(from_url.and_then(|u| u.password)),
            pool_size,
            min_pool_size: d.min_pool_size.unwrap_or(min_pool_size).min(pool_size),
            pool_mode: d.pool_mode.unwrap_or(pool_mode),
            tls,
            auth_user: d.auth_user.clone().or_else(|| g.auth_user.clone()),
            auth_query: d
                .auth_query
                .clone()
                .or_else(|| g.auth_query.clone())
                .unwrap_or_else(|| DEFAULT_AUTH_QUERY.to_owned()),
            auth_dbname: d.auth_dbname.clone().or_else(|| g.auth_dbname.clone()),
            limits: limits.for_database(
                d.reserve_pool_size,
                d.max_db_connections,
                d.max_db_client_connections,
            ),
            connect,
        })
    };
    let mut fallback = None;
    for (name, d) in &file.databases {
        let db = db_from(name, d)?;
        if name == "*" {
            let url_names_db = d.url.as_deref().is_some_and(|u| {
                url::Url::parse(u).is_ok_and(|u| !u.path().trim_start_matches('/').is_empty())
            });
            fallback = Some(FallbackDatabase {
                template: db,
                dbname_given: d.dbname.is_some() || url_names_db,
            });
        } else {
            databases.insert(name.clone(), db);
        }
    }
    if let Some(u) = args.upstream.as_deref().or(g.upstream.as_deref()) {
        let up = Upstream::parse("upstream", u)?;
        let password = up.password.clone();
        let tls = server_tls.for_url("upstream", Some(&up.tls))?;
        let db = Database {
            name: up.dbname.clone(),
            host: up.host.clone(),
            port: up.port,
            dbname: up.dbname.clone(),
            user: Some(up.user.clone()),
            password: password.clone(),
            pool_size,
            min_pool_size,
            pool_mode,
            tls,
            auth_user: g.auth_user.clone(),
            auth_query: g
                .auth_query
                .clone()
                .unwrap_or_else(|| DEFAULT_AUTH_QUERY.to_owned()),
            auth_dbname: g.auth_dbname.clone(),
            limits: limits.for_database(None, None, None),
            connect: Default::default(),
        };
        databases.insert(up.dbname.clone(), db);
        // With no users configured, clients log in with the upstream's credentials.
        if file.users.is_empty() && args.auth_file.is_none() && g.auth_file.is_none() {
            if let Some(p) = password {
                users.insert(up.user.clone(), Secret::Plain(p));
            }
        }
    }
    if databases.is_empty() && fallback.is_none() {
        let why = "no database configured: give --upstream postgres://user:password@host:port/db or a [databases] section";
        if !lenient {
            return Err(ConfigError::new("databases", why));
        }
        warnings.push(format!(
            "{why}; every client will get 3D000 database does not exist"
        ));
    }
    for (name, secret) in &file.users {
        let s = Secret::parse(secret)
            .map_err(|e| ConfigError::new(format!("users.{name}"), e.to_string()))?;
        users.insert(name.clone(), s);
    }
    if let Some(path) = args.auth_file.as_deref().or(g.auth_file.as_deref()) {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for (name, s) in parse_userlist(&text)
                    .map_err(|e| ConfigError::new("auth_file", format!("{path}: {e}")))?
                {
                    users.insert(name, s);
                }
            }
            // PgBouncer logs the error and starts without users.
            Err(e) if lenient => warnings.push(format!(
                "auth_file: cannot read {path}: {e}; no users loaded from it"
            )),
            Err(e) => {
                return Err(ConfigError::new(
                    "auth_file",
                    format!("cannot read {path}: {e}"),
                ))
            }
        }
    }
    if hba.is_none() && auth_type != AuthMethod::Trust && users.is_empty() {
        let why = format!("auth_type is {auth_type} but no users are configured ([users], auth_file, or a password in --upstream)");
        if !lenient {
            return Err(ConfigError::new("users", why));
        }
        warnings.push(format!("{why}; every login will fail"));
    }
    // A database with a user but no password logs in with that user's secret from the user
    // list, as PgBouncer does (plain text, or an md5 hash for md5 servers).
    for db in databases
        .values_mut()
        .chain(fallback.as_mut().map(|f| &mut f.template))
    {
        if let (Some(user), None) = (&db.user, &db.password) {
            db.password = match users.get(user) {
                Some(Secret::Plain(p)) => Some(p.clone()),
                Some(Secret::Md5(h)) => Some(h.clone()),
                _ => None,
            };
        }
    }
    let mut user_settings = BTreeMap::new();
    for (name, u) in file.user_settings {
        if u.pool_size == Some(0) {
            return Err(ConfigError::new(
                format!("user_settings.{name}.pool_size"),
                "must be at least 1",
            ));
        }
        user_settings.insert(
            name.clone(),
            UserSettings {
                pool_mode: u.pool_mode,
                pool_size: u.pool_size,
                reserve_pool_size: u.reserve_pool_size,
                max_user_connections: u.max_user_connections,
                max_user_client_connections: u.max_user_client_connections,
                timeouts: super::timeouts::UserTimeouts::build(
                    &name,
                    u.client_idle_timeout,
                    u.query_timeout,
                    u.idle_transaction_timeout,
                    u.transaction_timeout,
                )?,
            },
        );
    }
    let h = file.heal;
    let heal = RelayConfig {
        enabled: h.enabled.unwrap_or(true) && !args.no_heal,
        holdback_bytes: h.holdback_bytes.unwrap_or(1 << 20),
        replay_bytes: h.replay_bytes.unwrap_or(8 << 20),
        max_heals: h.max_heals.unwrap_or(3),
        savepoint_guard: match args.savepoint_guard.as_deref() {
            Some(g) => parse_enum("savepoint_guard", g, "off, after-schema-change or always")?,
            None => h.savepoint_guard.unwrap_or_default(),
        },
        savepoint_guard_window: seconds(
            "savepoint_guard_window",
            args.savepoint_guard_window.or(h.savepoint_guard_window),
            60.0,
        )?,
        record_statements: args
            .record_statements
            .clone()
            .or(h.record_statements)
            .filter(|p| !p.trim().is_empty())
            .map(|p| std::sync::Arc::new(crate::migration_check::Recorder::new(p))),
    };
    let threads = {
        let n = args
            .threads
            .or(g.threads)
            .unwrap_or_else(|| default_threads(&databases, fallback.as_ref(), &user_settings));
        if !(1..=MAX_THREADS).contains(&n) {
            return Err(ConfigError::new(
                "threads",
                format!("must be between 1 and {MAX_THREADS}"),
            ));
        }
        n
    };
    let client_tls = client_tls(&g, args)?;
    let unix_socket = super::unix_socket::unix_socket(&g, args, listen.port())?;
    let path = |p: Option<String>| p.filter(|p| !p.is_empty()).map(PathBuf::from);
    let process = ProcessSettings {
        logfile: path(g.logfile),
        pidfile: path(g.pidfile),
        user: args.user.clone().or(g.user).filter(|u| !u.is_empty()),
        verbose: extras.verbose,
    };
    Ok(Config {
        listen,
        defaults: PoolDefaults {
            pool_size,
            min_pool_size,
            pool_mode,
        },
        databases,
        fallback_database: fallback,
        user_settings,
        peers: peers(extras.peers, &file.peers)?,
        peer_id: g.peer_id.unwrap_or(0),
        users,
        auth_type,
        hba,
        max_client_conn: args.max_client_conn.or(g.max_client_conn).unwrap_or(1000),
        limits,
        query_wait_timeout: seconds(
            "query_wait_timeout",
            args.query_wait_timeout.or(g.query_wait_timeout),
            120.0,
        )?,
        server_connect_timeout: seconds("server_connect_timeout", g.server_connect_timeout, 15.0)?,
        server_lifetime: seconds(
            "server_lifetime",
            args.server_lifetime.or(g.server_lifetime),
            3600.0,
        )?,
        server_idle_timeout: seconds(
            "server_idle_timeout",
            args.server_idle_timeout.or(g.server_idle_timeout),
            600.0,
        )?,
        server_reset_query: args
            .server_reset_query
            .clone()
            .or(g.server_reset_query)
            .unwrap_or_else(|| "DISCARD ALL".into()),
        server_reset_query_always: g.server_reset_query_always.unwrap_or(false),
        max_message_len,
        max_prepared_statements: {
            let n = args
                .max_prepared_statements
                .or(g.max_prepared_statements)
                .unwrap_or(200);
            if n == 0 {
                return Err(ConfigError::new(
                    "max_prepared_statements",
                    "must be at least 1",
                ));
            }
            n
        },
        max_pool_statements: match g
            .max_pool_statements
            .unwrap_or(crate::statements::names::DEFAULT_MAX_POOL_STATEMENTS)
        {
            0 => {
                return Err(ConfigError::new(
                    "max_pool_statements",
                    "must be at least 1",
                ))
            }
            n => n,
        },
        client_login_timeout: match seconds("client_login_timeout", g.client_login_timeout, 60.0)? {
            // PgBouncer's 0: no limit (a year, inside tokio's timer range).
            d if d.is_zero() => Duration::from_secs(365 * 24 * 3600),
            d => d,
        },
        timeouts: super::timeouts::Timeouts::build(&super::timeouts::RawTimeouts {
            client_idle_timeout: g.client_idle_timeout,
            query_timeout: g.query_timeout,
            idle_transaction_timeout: g.idle_transaction_timeout,
            transaction_timeout: g.transaction_timeout,
            query_wait_notify: g.query_wait_notify,
            cancel_wait_timeout: g.cancel_wait_timeout,
        })?,
        shutdown_timeout: seconds(
            "shutdown_timeout",
            args.shutdown_timeout.or(g.shutdown_timeout),
            30.0,
        )?,
        listen_also: listen_all,
        servers: super::servers::ServerSettings {
            login_retry: seconds("server_login_retry", g.server_login_retry, 15.0)?,
            check_delay: seconds("server_check_delay", g.server_check_delay, 30.0)?,
            check_query: g.server_check_query.as_deref().map_or(
                super::servers::CheckQuery::Empty,
                super::servers::CheckQuery::parse,
            ),
            round_robin: g.server_round_robin.unwrap_or(false),
            application_name_add_host: g.application_name_add_host.unwrap_or(false),
            fast_close: g.server_fast_close.unwrap_or(false),
        },
        so_reuseport: g.so_reuseport.unwrap_or(false),
        keepalive: super::keepalive::TcpKeepalive::from_keys(super::keepalive::KeepaliveKeys {
            tcp_keepalive: g.tcp_keepalive,
            tcp_keepidle: g.tcp_keepidle,
            tcp_keepintvl: g.tcp_keepintvl,
            tcp_keepcnt: g.tcp_keepcnt,
            tcp_user_timeout: g.tcp_user_timeout,
        })?,
        admin_users: g.admin_users.unwrap_or_default(),
        stats_users: g.stats_users.unwrap_or_default(),
        stats_period: seconds("stats_period", g.stats_period, 60.0)?,
        log: crate::config::LogSettings {
            connections: g.log_connections.unwrap_or(true),
            disconnections: g.log_disconnections.unwrap_or(true),
            pooler_errors: g.log_pooler_errors.unwrap_or(true),
            stats: g.log_stats.unwrap_or(true),
        },
        threads,
        log_format,
        metrics_listen,
        schema_watch: match args.schema_watch.as_deref() {
            Some(w) => parse_enum("schema_watch", w, "off or listen")?,
            None => g.schema_watch.unwrap_or(SchemaWatch::Off),
        },
        heal,
        source: args.config.clone(),
        process,
        warnings,
        client_tls,
        unix_socket,
    })
}

/// The fleet's other instances: a pgbouncer.ini's `[peers]`, or TOML's `[peers.ID]`.
fn peers(
    from_ini: BTreeMap<u16, super::Peer>,
    from_toml: &BTreeMap<String, super::file::FilePeer>,
) -> Result<BTreeMap<u16, super::Peer>, ConfigError> {
    let mut out = from_ini;
    for (id, p) in from_toml {
        let key = format!("peers.{id}");
        let id = id
            .parse::<u16>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| ConfigError::new(&key, "a peer id is a number from 1 to 65535"))?;
        if p.host.is_empty() {
            return Err(ConfigError::new(&key, "a peer needs a host"));
        }
        out.insert(
            id,
            super::Peer {
                host: p.host.clone(),
                port: p.port.unwrap_or(6432),
                pool_size: None,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(upstream: &str) -> RunArgs {
        RunArgs {
            upstream: Some(upstream.into()),
            ..Default::default()
        }
    }

    #[test]
    fn upstream_shortcut_gives_a_database_and_a_user() {
        let c = build(
            FileConfig::default(),
            &args("postgres://app:secret@127.0.0.1:5432/appdb"),
        )
        .unwrap();
        let db = c.database("appdb").unwrap();
        assert_eq!(
            (db.host.as_str(), db.port, db.user.as_deref()),
            ("127.0.0.1", 5432, Some("app"))
        );
        assert!(matches!(c.users.get("app"), Some(Secret::Plain(p)) if p == "secret"));
        assert_eq!(c.server_reset_query, "DISCARD ALL");
        assert_eq!(c.auth_type, AuthMethod::ScramSha256);
    }

    #[test]
    fn flags_override_the_file() {
        let file: FileConfig = toml::from_str(
            "[pgheal]\npool_size = 5\npool_mode = \"transaction\"\n[databases.shop]\nhost = \"db\"\n[users]\napp = \"pw\"\n",
        )
        .unwrap();
        let a = RunArgs {
            pool_size: Some(7),
            ..Default::default()
        };
        let c = build(file, &a).unwrap();
        let db = c.database("shop").unwrap();
        assert_eq!(db.pool_size, 7);
        assert_eq!(db.pool_mode, PoolMode::Transaction);
    }

    #[test]
    fn invalid_settings_name_their_key() {
        let mut a = args("postgres://app:pw@h/d");
        a.pool_size = Some(0);
        assert_eq!(
            build(FileConfig::default(), &a).unwrap_err().key,
            "pool_size"
        );
        let mut a = args("postgres://app:pw@h/d");
        a.pool_mode = Some("per-query".into());
        assert_eq!(
            build(FileConfig::default(), &a).unwrap_err().key,
            "pool_mode"
        );
        let mut a = args("postgres://app:pw@h/d");
        a.listen = Some("localhost".into());
        assert_eq!(build(FileConfig::default(), &a).unwrap_err().key, "listen");
        assert_eq!(
            build(FileConfig::default(), &RunArgs::default())
                .unwrap_err()
                .key,
            "databases"
        );
        let e = toml::from_str::<FileConfig>("[pgheal]\npool_sise = 3\n").unwrap_err();
        assert!(e.message().contains("pool_sise"));
    }

    #[test]
    fn event_loops_default_to_the_cpus_in_session_pooling_and_one_in_transaction_pooling() {
        let url = "postgres://app:pw@h/d";
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            build(FileConfig::default(), &args(url)).unwrap().threads,
            cpus
        );
        let mut a = args(url);
        a.pool_mode = Some("transaction".into());
        assert_eq!(build(FileConfig::default(), &a).unwrap().threads, 1);
        // One database in transaction pooling is enough.
        let file: FileConfig = toml::from_str(
            "[databases.a]\nhost = \"db\"\n[databases.b]\nhost = \"db\"\npool_mode = \"transaction\"\n[users]\napp = \"pw\"\n",
        )
        .unwrap();
        assert_eq!(build(file, &RunArgs::default()).unwrap().threads, 1);
        // Set, it is taken as is; the file's value too.
        a.threads = Some(3);
        assert_eq!(build(FileConfig::default(), &a).unwrap().threads, 3);
        let file: FileConfig = toml::from_str(
            "[pgheal]\nthreads = 2\n[databases.a]\nhost = \"db\"\n[users]\napp = \"pw\"\n",
        )
        .unwrap();
        assert_eq!(build(file, &RunArgs::default()).unwrap().threads, 2);
        a.threads = Some(0);
        assert_eq!(build(FileConfig::default(), &a).unwrap_err().key, "threads");
    }
}
