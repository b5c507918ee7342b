//! Tests of [`super`] (pgbouncer.ini → FileConfig → Config), with files in memory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::from_ini;
use crate::auth::{AuthMethod, Secret};
use crate::config::cli::RunArgs;
use crate::config::file::FileConfig;
use crate::config::ini::{self, Files};
use crate::config::load::{detect_format, FileFormat};
use crate::config::validate::build;
use crate::config::{Config, ConfigError, PoolMode};

#[derive(Default)]
struct Mem(BTreeMap<PathBuf, String>);

impl Files for Mem {
    fn read(&mut self, path: &Path) -> std::io::Result<String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
    fn exists(&self, path: &Path) -> bool {
        self.0.contains_key(path)
    }
}

/// `localhost` resolves as on a typical Linux machine; other names do not resolve.
fn resolve(host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    match host {
        "localhost" => Ok(vec![
            SocketAddr::from(([127, 0, 0, 1], port)),
            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), port),
        ]),
        _ => Err(std::io::Error::other("name not known")),
    }
}

const INI: &str = "/etc/pgbouncer/pgbouncer.ini";

fn map_with(text: &str, files: &[(&str, &str)]) -> Result<FileConfig, ConfigError> {
    let mut mem = Mem(files
        .iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect());
    let parsed = ini::parse(Path::new(INI), text, &mut mem)
        .map_err(|e| ConfigError::new("config", e.to_string()))?;
    from_ini(&parsed, Path::new(INI), &resolve)
}

fn map(text: &str) -> Result<FileConfig, ConfigError> {
    map_with(text, &[])
}

fn load(text: &str) -> Config {
    let file = map(text).unwrap_or_else(|e| panic!("{e}"));
    build(file, &RunArgs::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn fixture(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pgbouncer/");
    std::fs::read_to_string(format!("{path}{name}")).expect("read the fixture")
}

/// PgBouncer's own sample loads with warnings only: the ones it earns here (no databases, and
/// the user list of this machine). `listen_addr = localhost` listens on both of its addresses.
#[test]
fn pgbouncer_sample_loads_with_warnings_only() {
    let file = map(&fixture("pgbouncer.ini")).unwrap_or_else(|e| panic!("{e}"));
    let mapped = file.pgbouncer.as_ref().unwrap().warnings.clone();
    assert!(mapped.is_empty(), "{mapped:?}");
    let c = build(file, &RunArgs::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listen, "127.0.0.1:6432".parse().unwrap());
    assert_eq!(c.listen_also, ["[::1]:6432".parse().unwrap()]);
    assert_eq!(c.auth_type, AuthMethod::Md5);
    assert_eq!(c.max_client_conn, 100);
    assert_eq!(
        c.process.logfile.as_deref(),
        Some(Path::new("/var/log/pgbouncer/pgbouncer.log"))
    );
    assert_eq!(
        c.process.pidfile.as_deref(),
        Some(Path::new("/var/run/pgbouncer/pgbouncer.pid"))
    );
    assert!(c.databases.is_empty() && c.fallback_database.is_none());
    assert!(
        c.warnings[0].starts_with("no database configured"),
        "{:?}",
        c.warnings
    );
    // /etc/pgbouncer/userlist.txt is missing, or empty where Debian's pgbouncer is installed.
    assert!(
        c.warnings[1..]
            .iter()
            .all(|w| w.starts_with("auth_file: cannot read")
                || w.starts_with("auth_type is md5 but no users")),
        "{:?}",
        c.warnings
    );

    let c = load(&fixture("pgbouncer-minimal.ini"));
    assert_eq!(c.listen, "127.0.0.1:6432".parse().unwrap());
    assert!(
        c.warnings[0].contains("`listen_addr` is not set"),
        "{:?}",
        c.warnings
    );
}

/// Keys absent from a pgbouncer.ini get PgBouncer's defaults, not pgheal's.
#[test]
fn pgbouncer_defaults_where_pgheal_differs() {
    let c =
        load("[pgbouncer]\nlisten_addr = 127.0.0.1\nauth_type = trust\n[databases]\nd = host=h\n");
    assert_eq!(c.max_client_conn, 100);
    assert_eq!(c.listen.port(), 6432);
    assert_eq!(c.query_wait_timeout, Duration::from_secs(120));
    assert_eq!(c.server_lifetime, Duration::from_secs(3600));
    assert_eq!(c.server_idle_timeout, Duration::from_secs(600));
    assert_eq!(c.server_connect_timeout, Duration::from_secs(15));
    assert_eq!(c.server_reset_query, "DISCARD ALL");
    assert_eq!(c.max_prepared_statements, 200);
    let db = c.database("d").unwrap();
    assert_eq!(
        (db.pool_size, db.min_pool_size, db.pool_mode),
        (20, 0, PoolMode::Session)
    );
    assert_eq!(
        (db.host.as_str(), db.port, db.dbname.as_str()),
        ("h", 5432, "d")
    );
    // pgheal's own default auth is SCRAM; PgBouncer's is md5.
    let c = load("[pgbouncer]\nlisten_addr = 127.0.0.1\n[databases]\n");
    assert_eq!(c.auth_type, AuthMethod::Md5);

    // PgBouncer's zeros: wait forever, use a connection once.
    let c = load(
        "[pgbouncer]\nlisten_addr=*\nauth_type=trust\nquery_wait_timeout=0\nserver_connect_timeout=0\nserver_lifetime=0\nserver_idle_timeout=0\n",
    );
    assert_eq!(c.query_wait_timeout, Duration::from_secs(365 * 24 * 3600));
    assert_eq!(
        c.server_connect_timeout,
        Duration::from_secs(365 * 24 * 3600)
    );
    assert_eq!(c.server_lifetime, Duration::from_nanos(1));
    assert_eq!(c.server_idle_timeout, Duration::ZERO);
    assert_eq!(c.listen, "0.0.0.0:6432".parse().unwrap());
    assert_eq!(
        c.listen_also,
        ["[::]:6432".parse().unwrap()],
        "`*` is IPv4 and IPv6"
    );
}

/// A production-style file: includes, two databases, the `*` fallback, `[users]`, `[peers]`,
/// every implemented key, and keys pgheal does not implement.
#[test]
fn production_file_maps_onto_config() {
    let main = r#"
[pgbouncer]
listen_addr = 10.0.0.5, 10.0.0.6
listen_port = 6543
auth_type = scram-sha-256
auth_file = /nonexistent/pgheal-test-userlist.txt
pool_mode = transaction
default_pool_size = 30
min_pool_size = 50
max_client_conn = 2000
query_wait_timeout = 2.5
server_connect_timeout = 3
server_lifetime = 1800
server_idle_timeout = 60
server_reset_query = DEALLOCATE ALL
server_reset_query_always = 1
max_prepared_statements = 0x40
max_packet_size = 1048576
logfile = /var/log/pgheal.log
pidfile = /run/pgheal.pid
user = postgres
verbose = 2
; implemented by PgBouncer, not (yet) by pgheal:
admin_users = admin
syslog = 0
tcp_defer_accept = 1
ignore_startup_parameters = extra_float_digits
server_check_query = select 1
frobnicate = 3

%include conf.d/databases.ini
"#;
    let dbs = r#"[databases]
appdb = host=db1.internal port=5433 dbname=app_production user=app password='it''s secret' pool_size=5 min_pool_size=2 reserve_pool=2 max_db_connections=7
reports = host=db2.internal,db3.internal dbname=reports pool_mode=session connect_query='SELECT 1' application_name=rep
* = host=db1.internal port=5433 user=app password=pw
[users]
bob = pool_mode=session pool_size=3 max_user_connections=10
[peers]
1 = host=/tmp/pgbouncer1
2 = host=10.0.0.6 port=6544 pool_size=4
"#;
    let file = map_with(main, &[("/etc/pgbouncer/conf.d/databases.ini", dbs)])
        .unwrap_or_else(|e| panic!("{e}"));
    let c = build(file, &RunArgs::default()).unwrap_or_else(|e| panic!("{e}"));

    assert_eq!(c.listen, "10.0.0.5:6543".parse().unwrap());
    assert_eq!(c.listen_also, ["10.0.0.6:6543".parse().unwrap()]);
    assert_eq!(c.auth_type, AuthMethod::ScramSha256);
    assert_eq!(c.max_client_conn, 2000);
    assert_eq!(c.query_wait_timeout, Duration::from_millis(2500));
    assert_eq!(c.server_connect_timeout, Duration::from_secs(3));
    assert_eq!(c.server_lifetime, Duration::from_secs(1800));
    assert_eq!(c.server_idle_timeout, Duration::from_secs(60));
    assert_eq!(c.server_reset_query, "DEALLOCATE ALL");
    assert!(c.server_reset_query_always);
    assert_eq!(c.max_prepared_statements, 64);
    assert_eq!(c.admin_users, ["admin"]);
    assert_eq!(c.max_message_len, 1 << 20);
    assert_eq!(c.threads, 1, "transaction pooling runs one event loop");
    assert_eq!(
        c.process.logfile.as_deref(),
        Some(Path::new("/var/log/pgheal.log"))
    );
    assert_eq!(
        c.process.pidfile.as_deref(),
        Some(Path::new("/run/pgheal.pid"))
    );
    assert_eq!(c.process.user.as_deref(), Some("postgres"));
    assert_eq!(c.process.verbose, 2);

    let app = c.database("appdb").unwrap();
    assert_eq!(
        (app.host.as_str(), app.port, app.dbname.as_str()),
        ("db1.internal", 5433, "app_production")
    );
    assert_eq!(app.user.as_deref(), Some("app"));
    assert_eq!(app.password.as_deref(), Some("it's secret"));
    assert_eq!((app.pool_size, app.min_pool_size), (5, 2));
    assert_eq!(app.pool_mode, PoolMode::Transaction);
    let reports = c.database("reports").unwrap();
    assert_eq!(reports.host, "db2.internal,db3.internal");
    assert_eq!(reports.connect.connect_query.as_deref(), Some("SELECT 1"));
    assert_eq!(
        reports.connect.startup_params,
        [("application_name".to_owned(), "rep".to_owned())]
    );
    assert_eq!(
        c.servers.check_query,
        crate::config::servers::CheckQuery::Query("select 1".into())
    );
    assert_eq!((reports.pool_size, reports.min_pool_size), (30, 30));
    assert_eq!(reports.pool_mode, PoolMode::Session);

    // The fallback: the client's database name, the entry's server and credentials.
    let other = c.database_for("analytics", "alice").unwrap();
    assert_eq!(
        (other.name.as_str(), other.dbname.as_str()),
        ("analytics", "analytics")
    );
    assert_eq!((other.host.as_str(), other.port), ("db1.internal", 5433));
    assert_eq!(other.password.as_deref(), Some("pw"));
    assert!(c.database("analytics").is_none());

    // [users] wins over the database for pools of that server user.
    assert_eq!(
        c.database_for("appdb", "bob").unwrap().pool_mode,
        PoolMode::Transaction,
        "appdb logs in as app"
    );
    let c2 = load("[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type=trust\npool_mode=transaction\n[databases]\nd = host=h pool_size=9 min_pool_size=8\n[users]\nbob = pool_mode=session pool_size=3\n");
    let for_bob = c2.database_for("d", "bob").unwrap();
    assert_eq!(
        (for_bob.pool_mode, for_bob.pool_size, for_bob.min_pool_size),
        (PoolMode::Session, 3, 3)
    );
    let for_carol = c2.database_for("d", "carol").unwrap();
    assert_eq!(
        (for_carol.pool_mode, for_carol.pool_size),
        (PoolMode::Transaction, 9)
    );

    assert_eq!(c.peers.len(), 2);
    assert_eq!(
        (
            c.peers[&2].host.as_str(),
            c.peers[&2].port,
            c.peers[&2].pool_size
        ),
        ("10.0.0.6", 6544, Some(4))
    );
    assert_eq!(c.peers[&1].port, 6432);
    // The limits: per database (`reserve_pool` is the old spelling), per user, else global.
    let appdb = c.database("appdb").unwrap();
    assert_eq!(appdb.limits.reserve_pool_size, 2);
    assert_eq!(appdb.limits.max_db_connections, 7);
    assert_eq!(c.database("reports").unwrap().limits.max_db_connections, 0);
    assert_eq!(c.user_limits("bob").max_user_connections, 10);
    assert_eq!(c.user_limits("alice").max_user_connections, 0);
    assert_eq!(c.limits.reserve_pool_timeout, Duration::from_secs(5));
    // Keepalive: on, with the OS timings, as PgBouncer's defaults.
    assert_eq!(
        c.keepalive,
        crate::config::keepalive::TcpKeepalive::default()
    );

    let expected = [
        format!("{INI}:29: unknown key `frobnicate` in [pgbouncer] ignored (not a PgBouncer 1.25 setting)"),
        format!("{INI}:26: `tcp_defer_accept` is not implemented by pgheal yet; ignored"),
    ];
    let w = &c.warnings;
    assert_eq!(&w[..2], &expected[..], "{w:#?}");
    assert_eq!(
        &w[2..],
        [
            "auth_file: cannot read /nonexistent/pgheal-test-userlist.txt: No such file or directory (os error 2); no users loaded from it".to_owned(),
            "auth_type is scram-sha-256 but no users are configured ([users], auth_file, or a password in --upstream); every login will fail".to_owned(),
        ],
        "{w:#?}"
    );
    // No value of a connection string shows up anywhere.
    assert!(!format!("{c:?} {w:?}").contains("it's secret"));
}

/// A database with a user but no password logs in with that user's secret from auth_file.
#[test]
fn forced_user_password_comes_from_the_user_list() {
    let dir = std::env::temp_dir().join(format!("pgheal-ini-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("userlist.txt");
    std::fs::write(
        &list,
        "\"app\" \"plain-pw\"\n\"md5user\" \"md53175bce1d3201d16594cebf9d7eb3f9d\"\n",
    )
    .unwrap();
    let c = load(&format!(
        "[pgbouncer]\nlisten_addr=127.0.0.1\nauth_file = {}\n[databases]\na = host=h user=app\nb = host=h user=md5user\nc = host=h user=app password=own\n",
        list.display()
    ));
    assert_eq!(
        c.database("a").unwrap().password.as_deref(),
        Some("plain-pw")
    );
    assert_eq!(
        c.database("b").unwrap().password.as_deref(),
        Some("md53175bce1d3201d16594cebf9d7eb3f9d")
    );
    assert_eq!(c.database("c").unwrap().password.as_deref(), Some("own"));
    assert!(matches!(c.users.get("app"), Some(Secret::Plain(_))));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn statement_pooling_is_its_own_mode_in_any_case() {
    let c = load("[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type=trust\npool_mode = Statement\n[databases]\nd = host=h\ne = host=h pool_mode=transaction\n");
    assert_eq!(c.database("d").unwrap().pool_mode, PoolMode::Statement);
    assert_eq!(c.database("e").unwrap().pool_mode, PoolMode::Transaction);
    assert!(
        c.warnings.iter().all(|w| !w.contains("pool_mode")),
        "{:?}",
        c.warnings
    );
}

/// Invalid values stop the load, naming the key with file and line; passwords never appear.
#[test]
fn invalid_values_are_errors_with_file_and_line() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[pgbouncer]\nlisten_port = abc\n",
            "listen_port",
            ":2: expected an integer",
        ),
        (
            "[pgbouncer]\n\nlisten_port = 70000\n",
            "listen_port",
            ":3: must be at most 65535",
        ),
        (
            "[pgbouncer]\nquery_wait_timeout = 10s\n",
            "query_wait_timeout",
            ":2: expected a number of seconds",
        ),
        (
            "[pgbouncer]\npool_mode = txn\n",
            "pool_mode",
            ":2: expected one of session, transaction, statement",
        ),
        (
            "[pgbouncer]\ndefault_pool_size = 0\n",
            "default_pool_size",
            ":2: must be at least 1",
        ),
        (
            "[pgbouncer]\nmax_packet_size = 100\n",
            "max_packet_size",
            ":2: must be at least 1024",
        ),
        (
            "[pgbouncer]\nsyslog = yes\n",
            "syslog",
            ":2: expected an integer",
        ),
        (
            "[pgbouncer]\nauth_type = ldap\n",
            "auth_type",
            ":2: auth_type = ldap is not supported by pgheal yet",
        ),
        (
            "[pgbouncer]\nclient_tls_sslmode = require\n",
            "client_tls_sslmode",
            ":2: client_tls_sslmode = require needs client_tls_cert_file and client_tls_key_file",
        ),
        (
            "[pgbouncer]\nserver_tls_sslmode = verify-fuller\n",
            "server_tls_sslmode",
            ":2: ",
        ),
        (
            "[pgbouncer]\nlisten_addr = db.invalid\n",
            "listen_addr",
            ":2: cannot resolve",
        ),
        (
            "[pgbouncer]\n[databases]\nd = host=h pool_size=many password=topsecret\n",
            "databases.d.pool_size",
            ":3: expected a whole number",
        ),
        (
            "[pgbouncer]\n[databases]\nd = host=h port=0\n",
            "databases.d.port",
            ":3: must be at least 1",
        ),
        (
            "[pgbouncer]\n[databases]\nd = host=h password='topsecret\n",
            "databases.d",
            ":3: syntax error in the connection string",
        ),
        (
            "[pgbouncer]\n[databases]\nd = host=h sslmode=require password=topsecret\n",
            "databases.d.sslmode",
            ":3: unknown connection parameter `sslmode`",
        ),
        (
            "[pgbouncer]\n[databases]\nd = host=h max_db_connections=lots\n",
            "databases.d.max_db_connections",
            ":3: expected a whole number",
        ),
        (
            "[pgbouncer]\n[databases]\npgbouncer = host=h\n",
            "databases.pgbouncer",
            ":3: the database name pgbouncer is reserved",
        ),
        (
            "[pgbouncer]\n[users]\nbob = pool_mode=never\n",
            "users.bob.pool_mode",
            ":3: expected one of",
        ),
        (
            "[pgbouncer]\n[users]\nbob = pool_size=0\n",
            "users.bob.pool_size",
            ":3: must be at least 1",
        ),
        (
            "[pgbouncer]\n[users]\nbob = max_connections=3\n",
            "users.bob.max_connections",
            ":3: unknown user parameter",
        ),
        (
            "[pgbouncer]\n[peers]\n0 = host=h\n",
            "peers.0",
            ":3: a peer id is a number from 1 to 65535",
        ),
        (
            "[pgbouncer]\n[peers]\n1 = port=6432\n",
            "peers.1",
            ":3: a peer needs host=",
        ),
        ("[pgbouncer]\n[pgheal]\n", "[pgheal]", ":2: unknown section"),
        (
            "[databases]\nd = host=h\n",
            "[pgbouncer]",
            "no [pgbouncer] section",
        ),
        (
            "[pgbouncer]\nlisten_port 6432\n",
            "config",
            ":2: syntax error: expected '='",
        ),
    ];
    for (text, key, reason) in cases {
        let e = match map(text) {
            Ok(_) => panic!("{text:?} loaded"),
            Err(e) => e,
        };
        assert_eq!(&e.key, key, "{text:?}: {e}");
        let shown = e.to_string();
        assert!(shown.contains(INI), "{text:?}: {shown}");
        assert!(shown.contains(reason), "{text:?}: {shown}");
        assert!(!shown.contains("topsecret"), "{shown}");
    }
}

/// Keys pgheal does not implement are silent when set to what pgheal does anyway.
#[test]
fn no_warning_for_values_pgheal_already_behaves_like() {
    let c = load("[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type=trust\nsyslog = 0\nclient_tls_sslmode = disable\nserver_tls_sslmode = disable\nclient_idle_timeout = 0.0\nunix_socket_dir =\nadmin_users =\nmax_db_connections = 0\npkt_buf = 8192\nscram_iterations = 4096\n[databases]\nd = host=h\n");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let c = load("[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type=trust\nserver_tls_ciphers = HIGH\nunix_socket_dir = /var/run/postgresql\n[databases]\nd = host=h\n");
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("`server_tls_ciphers`"));
    assert_eq!(
        c.unix_socket.map(|u| u.path(6432)),
        Some("/var/run/postgresql/.s.PGSQL.6432".into())
    );
}

/// `unix_socket_dir` is /tmp unless set, `""` disables it, and `unix_socket_mode` is read as
/// PgBouncer reads it (a leading 0 is octal).
#[test]
fn unix_socket_keys() {
    let c = load("[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type=trust\nunix_socket_mode = 0770\nunix_socket_group = wheel\n[databases]\nd = host=h\n");
    let u = c.unix_socket.expect("the default socket");
    assert_eq!(u.path(6432), std::path::PathBuf::from("/tmp/.s.PGSQL.6432"));
    assert_eq!(u.mode, 0o770);
    assert_eq!(u.group.as_deref(), Some("wheel"));
    let c = load("[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type=trust\nunix_socket_dir =\n[databases]\nd = host=h\n");
    assert_eq!(c.unix_socket, None);
}

#[test]
fn listen_addr_forms() {
    let listen = |v: &str| {
        load(&format!(
            "[pgbouncer]\nauth_type=trust\nlisten_port=7000\nlisten_addr = {v}\n"
        ))
        .listen
    };
    assert_eq!(listen("::1"), "[::1]:7000".parse().unwrap());
    assert_eq!(listen("[::1]"), "[::1]:7000".parse().unwrap());
    assert_eq!(listen("localhost"), "127.0.0.1:7000".parse().unwrap());
    assert_eq!(listen("*"), "0.0.0.0:7000".parse().unwrap());
    assert_eq!(listen("  127.0.0.2 ,"), "127.0.0.2:7000".parse().unwrap());
}

#[test]
fn format_detection() {
    let p = Path::new;
    assert_eq!(
        detect_format(p("/etc/pgbouncer/pgbouncer.ini"), ""),
        FileFormat::PgBouncerIni
    );
    assert_eq!(detect_format(p("x.INI"), ""), FileFormat::PgBouncerIni);
    assert_eq!(
        detect_format(p("pgheal.toml"), "[pgbouncer]\n"),
        FileFormat::Toml
    );
    assert_eq!(
        detect_format(p("/etc/pgbouncer/config"), ";; x\n  [pgbouncer] ; main\n"),
        FileFormat::PgBouncerIni
    );
    assert_eq!(
        detect_format(p("/etc/pgheal/config"), "[pgheal]\nlisten = \"x\"\n"),
        FileFormat::Toml
    );
}

/// TOML gets the fallback and per-user settings too.
#[test]
fn toml_fallback_database_and_user_settings() {
    let file: FileConfig = toml::from_str(
        "[databases.\"*\"]\nhost = \"db\"\nuser = \"app\"\npassword = \"pw\"\n[user_settings.app]\npool_mode = \"transaction\"\n[users]\nalice = \"pw\"\n",
    )
    .unwrap();
    let c = build(file, &RunArgs::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.databases.is_empty());
    let d = c.database_for("shop", "alice").unwrap();
    assert_eq!(
        (d.dbname.as_str(), d.host.as_str(), d.pool_mode),
        ("shop", "db", PoolMode::Transaction)
    );
    assert_eq!(c.threads, 1);
    // TOML stays strict: no database at all is still an error.
    let e = build(FileConfig::default(), &RunArgs::default()).unwrap_err();
    assert_eq!(e.key, "databases");
}

/// `server_tls_*` are honoured: the mode and files reach every database's TLS settings, and a
/// verify mode without a root certificate stops the start.
#[test]
fn server_tls_keys_are_supported() {
    use crate::config::tls::{SslMode, TlsProtocols};
    let c = load("[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type=trust\nserver_tls_sslmode = Require\nserver_tls_protocols = tlsv1.3\n[databases]\nd = host=h\n");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let tls = &c.databases["d"].tls;
    assert_eq!(tls.options.mode, SslMode::Require);
    assert_eq!(
        tls.options.protocols,
        TlsProtocols {
            tls12: false,
            tls13: true
        }
    );
    assert!(tls.config.is_some());
    // PgBouncer's default is prefer too.
    let c = load("[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type=trust\n[databases]\nd = host=h\n");
    assert_eq!(c.databases["d"].tls.options.mode, SslMode::Prefer);
    let file = map("[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type=trust\nserver_tls_sslmode = verify-full\n[databases]\nd = host=h\n").expect("maps");
    let e = build(file, &RunArgs::default()).unwrap_err();
    assert_eq!(e.key, "server_tls_sslmode");
    assert!(e.reason.contains("root certificate"), "{e}");
    // The same keys in pgheal's TOML.
    let file: FileConfig = toml::from_str(
        "[pgheal]\nserver_tls_sslmode = \"disable\"\n[databases.d]\nhost = \"h\"\n[users]\napp = \"pw\"\n",
    )
    .expect("toml");
    let c = build(file, &RunArgs::default()).expect("valid");
    assert_eq!(c.databases["d"].tls.options.mode, SslMode::Disable);
    assert!(c.databases["d"].tls.config.is_none());
}

/// `auth_type = hba` loads `auth_hba_file`; a bad line or a missing file stops the start with
/// the file and line; `hba` without a file is an error.
#[test]
fn auth_type_hba_loads_the_rules() {
    let dir = std::env::temp_dir().join(format!("pgheal-hba-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("good.conf");
    std::fs::write(
        &good,
        "host all all 127.0.0.1/32 trust\nhostssl all all all md5\n",
    )
    .expect("write");
    let bad = dir.join("bad.conf");
    std::fs::write(&bad, "# rules\nhost all all samenet trust\n").expect("write");
    let ini = |file: &Path| {
        format!(
            "[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type = hba\nauth_hba_file = {}\n[databases]\nd = host=h\n",
            file.display()
        )
    };
    let c = load(&ini(&good));
    let rules = c.hba.as_ref().expect("hba rules");
    assert_eq!(rules.rules().len(), 2);
    assert!(
        c.warnings.iter().all(|w| !w.contains("auth_hba_file")),
        "{:?}",
        c.warnings
    );

    let file = map(&ini(&bad)).unwrap_or_else(|e| panic!("{e}"));
    let e = build(file, &RunArgs::default()).expect_err("bad hba line");
    assert_eq!(e.key, "auth_hba_file");
    assert_eq!(
        e.reason,
        format!(
            "{}:2: samenet is not supported (as in PgBouncer)",
            bad.display()
        )
    );

    let missing = dir.join("missing.conf");
    let file = map(&ini(&missing)).unwrap_or_else(|e| panic!("{e}"));
    let e = build(file, &RunArgs::default()).expect_err("missing hba file");
    assert!(e.reason.starts_with("cannot read"), "{e}");

    let file =
        map("[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type = hba\n[databases]\nd = host=h\n")
            .unwrap_or_else(|e| panic!("{e}"));
    let e = build(file, &RunArgs::default()).expect_err("no hba file");
    assert_eq!(e.key, "auth_hba_file");

    // The TOML form and the flag.
    let toml: FileConfig = toml::from_str(&format!(
        "[pgheal]\nauth_type = \"hba\"\nauth_hba_file = \"{}\"\n[databases.d]\nhost = \"h\"\n",
        good.display()
    ))
    .expect("toml");
    let c = build(toml, &RunArgs::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.hba.is_some());
    let c =
        load("[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type = trust\n[databases]\nd = host=h\n");
    assert!(c.hba.is_none());
    assert_eq!(c.auth_type, AuthMethod::Trust);
    let args = RunArgs {
        auth_type: Some("hba".into()),
        auth_hba_file: Some(good.display().to_string()),
        ..Default::default()
    };
    let c = build(
        map("[pgbouncer]\nlisten_addr=127.0.0.1\n[databases]\nd = host=h\n").expect("map"),
        &args,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.hba.is_some());
    let bad_toml =
        toml::from_str::<FileConfig>("[pgheal]\nauth_type = \"hab\"\n").expect_err("typo");
    assert!(
        bad_toml
            .to_string()
            .contains("expected scram-sha-256, md5, plain, trust or hba"),
        "{bad_toml}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `client_tls_*` are honoured in pgbouncer.ini and in pgheal's TOML; each problem stops the
/// start naming its key.
#[test]
fn client_tls_keys_are_supported() {
    use crate::config::tls::{SslMode, TlsCiphers, TlsProtocols};
    let dir = std::env::temp_dir().join(format!("pgheal-client-tls-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (dir.join("c.crt"), dir.join("c.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let (c, k) = (cert_file.display(), key_file.display());
    let base = "[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type=trust\n";

    let cfg = load(&format!("{base}client_tls_sslmode = require\nclient_tls_cert_file = {c}\nclient_tls_key_file = {k}\nclient_tls_protocols = tlsv1.3\nclient_tls_ciphers = HIGH:!aNULL\n[databases]\nd = host=h\n"));
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let o = &cfg.client_tls.options;
    assert_eq!(o.mode, SslMode::Require);
    assert_eq!(
        o.protocols,
        TlsProtocols {
            tls12: false,
            tls13: true
        }
    );
    assert_eq!(o.ciphers, TlsCiphers::All);
    assert!(cfg.client_tls.state.is_some() && cfg.client_tls.requires_tls());
    // Default: disable, nothing loaded.
    let cfg = load(&format!("{base}[databases]\nd = host=h\n"));
    assert_eq!(cfg.client_tls.options.mode, SslMode::Disable);
    assert!(cfg.client_tls.state.is_none());

    let err = |text: String| {
        let file = map(&text).unwrap_or_else(|e| panic!("{e}"));
        build(file, &RunArgs::default()).unwrap_err()
    };
    let e = err(format!("{base}client_tls_sslmode = verify-ca\nclient_tls_cert_file = {c}\nclient_tls_key_file = {k}\n[databases]\nd = host=h\n"));
    assert_eq!(e.key, "client_tls_ca_file", "{e}");
    let e = err(format!("{base}client_tls_sslmode = prefer\nclient_tls_cert_file = {c}\nclient_tls_key_file = {k}\nclient_tls_ciphers = RC4-MD5\n[databases]\nd = host=h\n"));
    assert_eq!(e.key, "client_tls_ciphers", "{e}");
    let e = err(format!("{base}client_tls_sslmode = prefer\nclient_tls_cert_file = {c}\nclient_tls_key_file = {k}\nclient_tls_protocols = tlsv1.1\n[databases]\nd = host=h\n"));
    assert_eq!(e.key, "client_tls_protocols", "{e}");
    let e = err(format!("{base}client_tls_sslmode = prefer\nclient_tls_cert_file = {}/absent.crt\nclient_tls_key_file = {k}\n[databases]\nd = host=h\n", dir.display()));
    assert_eq!(e.key, "client_tls_cert_file", "{e}");
    // A key that does not fit the certificate.
    let other = rcgen::KeyPair::generate().unwrap();
    let other_file = dir.join("other.key");
    std::fs::write(&other_file, other.serialize_pem()).unwrap();
    let e = err(format!("{base}client_tls_sslmode = prefer\nclient_tls_cert_file = {c}\nclient_tls_key_file = {}\n[databases]\nd = host=h\n", other_file.display()));
    assert!(e.reason.contains("do not fit"), "{e}");
    // Without the files, the ini loader says so at the line.
    let e = map(&format!("{base}client_tls_sslmode = require\n")).unwrap_err();
    assert!(e.to_string().contains("needs client_tls_cert_file"), "{e}");
    // dheparams/ecdhcurve: PgBouncer's defaults are quiet, others a warning.
    let cfg = load(&format!("{base}client_tls_dheparams = auto\nclient_tls_ecdhcurve = secp384r1\n[databases]\nd = host=h\n"));
    assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
    assert!(cfg.warnings[0].contains("client_tls_ecdhcurve"));

    // The same keys in pgheal's TOML.
    let file: FileConfig = toml::from_str(&format!(
        "[pgheal]\nclient_tls_sslmode = \"verify-full\"\nclient_tls_cert_file = \"{c}\"\nclient_tls_key_file = \"{k}\"\nclient_tls_ca_file = \"{c}\"\nclient_tls_ciphers = \"ECDHE-ECDSA-AES128-GCM-SHA256\"\n[databases.d]\nhost = \"h\"\n[users]\napp = \"pw\"\n",
    ))
    .expect("toml");
    let cfg = build(file, &RunArgs::default()).expect("valid");
    assert_eq!(cfg.client_tls.options.mode, SslMode::VerifyFull);
    assert_eq!(
        cfg.client_tls.options.ciphers,
        TlsCiphers::Tls12(vec!["ECDHE-ECDSA-AES128-GCM-SHA256"])
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The session timeouts, global and per `[users]` entry (whole seconds there, as PgBouncer's
/// `atoi`), and who gets which: a user's value wins; 0 is the global one.
#[test]
fn session_timeouts_global_and_per_user() {
    let c = load(
        "[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type=trust\nquery_timeout = 2.5\n\
         client_idle_timeout = 60\nidle_transaction_timeout = 0\nquery_wait_notify = 0\n\
         cancel_wait_timeout = 3\n[databases]\nd = host=h\n\
         [users]\nbob = query_timeout=7 idle_transaction_timeout=4 client_idle_timeout=0\n",
    );
    let t = c.timeouts;
    assert_eq!(t.query_timeout, Some(Duration::from_millis(2500)));
    assert_eq!(t.client_idle_timeout, Some(Duration::from_secs(60)));
    assert_eq!(t.idle_transaction_timeout, None);
    assert_eq!(t.transaction_timeout, None);
    assert_eq!(t.query_wait_notify, None);
    assert_eq!(t.cancel_wait_timeout, Some(Duration::from_secs(3)));
    let bob = crate::config::timeouts::for_session(&c, "bob", "bob");
    assert_eq!(bob.query_timeout, Some(Duration::from_secs(7)));
    assert_eq!(bob.idle_transaction_timeout, Some(Duration::from_secs(4)));
    assert_eq!(bob.client_idle_timeout, Some(Duration::from_secs(60)));
    assert_eq!(
        crate::config::timeouts::for_session(&c, "carol", "carol"),
        t
    );
    // The server user's query_timeout, the client user's client_idle_timeout.
    let via_bob = crate::config::timeouts::for_session(&c, "carol", "bob");
    assert_eq!(via_bob.query_timeout, Some(Duration::from_secs(7)));
    let defaults =
        load("[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type=trust\n[databases]\nd = host=h\n");
    assert_eq!(
        defaults.timeouts,
        crate::config::timeouts::Timeouts::default()
    );
    for bad in ["query_timeout = -1", "query_wait_notify = 1.5"] {
        let text = format!("[pgbouncer]\nlisten_addr=127.0.0.1\n{bad}\n[databases]\nd = host=h\n");
        assert!(
            map(&text)
                .and_then(|f| build(f, &RunArgs::default()))
                .is_err(),
            "{bad}"
        );
    }
    let bad_user = "[pgbouncer]\nlisten_addr=127.0.0.1\n[databases]\nd = host=h\n[users]\nbob = query_timeout=1.5\n";
    assert!(map(bad_user).is_err(), "whole seconds in [users]");
}

/// Host lists, one port per host, load_balance_hosts and the server-connection keys.
#[test]
fn host_lists_and_server_connection_keys() {
    let c = load("[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type=trust\nserver_login_retry=3\nserver_check_delay=0\nserver_check_query=\nserver_round_robin=1\napplication_name_add_host=1\n[databases]\nd = host=a,b port=5432,5433 load_balance_hosts=Disable timezone=UTC datestyle=ISO client_encoding=LATIN1\ne = host=a,b\n");
    let d = c.database("d").unwrap();
    assert_eq!((d.host.as_str(), d.port), ("a,b", 5432));
    assert_eq!(d.connect.ports, [5432, 5433]);
    assert_eq!(
        d.connect.load_balance_hosts,
        crate::config::servers::LoadBalanceHosts::Disable
    );
    assert_eq!(
        d.connect.startup_params,
        [
            ("client_encoding".to_owned(), "LATIN1".to_owned()),
            ("datestyle".into(), "ISO".into()),
            ("timezone".into(), "UTC".into())
        ]
    );
    let e = c.database("e").unwrap();
    assert!(e.connect.ports.is_empty());
    assert_eq!(
        e.connect.load_balance_hosts,
        crate::config::servers::LoadBalanceHosts::RoundRobin
    );
    let s = &c.servers;
    assert_eq!(s.login_retry, std::time::Duration::from_secs(3));
    assert_eq!(s.check_delay, std::time::Duration::ZERO);
    assert_eq!(s.check_query, crate::config::servers::CheckQuery::Off);
    assert!(s.round_robin && s.application_name_add_host);
    assert!(
        c.warnings
            .iter()
            .all(|w| !w.contains("server_") && !w.contains("host")),
        "{:#?}",
        c.warnings
    );

    for bad in [
        "d = host=a,,b",
        "d = host=a,b,c port=1,2",
        "d = host=a,b load_balance_hosts=random",
        "d = host=a,/tmp",
    ] {
        let text =
            format!("[pgbouncer]\nlisten_addr=127.0.0.1\nauth_type=trust\n[databases]\n{bad}\n");
        let err = map(&text).and_then(|f| build(f, &RunArgs::default()));
        assert!(err.is_err(), "{bad} must be refused");
    }
}
