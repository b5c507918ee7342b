//! Every `[pgbouncer]` key of PgBouncer 1.25 (the `bouncer_params` table of its `src/main.c`),
//! with its PgBouncer type and default, and what pgheal does with it. This one table drives the
//! loader ([`super::pgbouncer`]: value checks, warnings, refusals) and the key table in the
//! README's "Moving from PgBouncer" section (a unit test keeps the two identical).
//!
//! A key is either
//! - [`Support::Yes`]: honoured as PgBouncer documents it (mapped onto pgheal's own setting);
//! - [`Support::NotYet`]: not implemented yet. Present in a file, it is one warning line naming it,
//!   unless its value is one pgheal already behaves like (`same`, e.g. `syslog = 0`). A few
//!   values would silently weaken what the file asks for; those (`refuse`) stop the start
//!   instead;
//! - [`Support::Differs`]: deliberately different, because pgheal's design makes the knob moot or
//!   does the job another way; the note says how. `warn` says whether its presence is worth a
//!   warning line.
//!
//! Whatever the support, every value is checked against the key's PgBouncer type ([`Kind`]): an
//! invalid value is an error with file and line, as in PgBouncer.

/// The type PgBouncer parses a key's value as (`CF_INT`, `CF_TIME_USEC`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `strtol(value, 0)`: decimal, `0x` hex or `0` octal, optionally signed.
    Int,
    /// `strtoul(value, 0)`.
    UInt,
    /// Seconds as a non-negative decimal number (`2.5`).
    Time,
    /// Any text.
    Str,
    /// One of these words, compared case-insensitively.
    Lookup(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Honoured; the note says how it maps onto pgheal.
    Yes(&'static str),
    NotYet {
        /// Values pgheal already behaves like: no warning.
        same: &'static [&'static str],
        /// Values that would weaken what the file asks for: an error.
        refuse: &'static [&'static str],
        note: &'static str,
    },
    Differs {
        warn: bool,
        note: &'static str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub kind: Kind,
    /// PgBouncer's default, as PgBouncer shows it ("" = not set).
    pub default: &'static str,
    pub support: Support,
}

pub const AUTH_TYPES: &[&str] = &[
    "any",
    "trust",
    "plain",
    "md5",
    "cert",
    "hba",
    "ldap",
    "pam",
    "scram-sha-256",
];
pub const POOL_MODES: &[&str] = &["session", "transaction", "statement"];
const SSLMODES: &[&str] = &[
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

const fn yes(name: &'static str, kind: Kind, default: &'static str, note: &'static str) -> Key {
    Key {
        name,
        kind,
        default,
        support: Support::Yes(note),
    }
}

const fn not_yet(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    same: &'static [&'static str],
    note: &'static str,
) -> Key {
    Key {
        name,
        kind,
        default,
        support: Support::NotYet {
            same,
            refuse: &[],
            note,
        },
    }
}

const fn differs(
    name: &'static str,
    kind: Kind,
    default: &'static str,
    warn: bool,
    note: &'static str,
) -> Key {
    Key {
        name,
        kind,
        default,
        support: Support::Differs { warn, note },
    }
}

use Kind::{Int, Str, Time, UInt};

/// PgBouncer 1.25's `[pgbouncer]` keys, in its (alphabetical) order.
pub const KEYS: &[Key] = &[
    yes("admin_users", Str, "", "`admin_users`: users who may run every admin console command (the `pgbouncer` or `pgheal` database); they log in with their auth_file secret"),
    yes("application_name_add_host", Int, "0", "`application_name_add_host`: a client's `application_name` becomes `NAME - host:port` of the client (`app - ...` when it sent none), as the server connection's setting"),
    yes("auth_dbname", Str, "", "`auth_dbname`: the database auth_query runs in, global or per `[databases]` entry (default: the entry's database)"),
    yes("auth_file", Str, "", "`auth_file`: plain, md5 and SCRAM secrets; an unreadable file is a warning and no users, as in PgBouncer"),
    yes("auth_hba_file", Str, "", "`auth_hba_file`: the rules for `auth_type = hba` (local/host/hostssl/hostnossl; trust, reject, md5, password, scram-sha-256, cert, peer; `all`, `sameuser`, `@file`; CIDR or address and mask); an unreadable file or an unsupported line stops the start, naming the file and line"),
    not_yet("auth_ident_file", Str, "", &[""], "user name maps (`map=`) are not implemented yet"),
    not_yet("auth_ldap_options", Str, "", &[""], "auth_type = ldap is not implemented yet"),
    yes(
        "auth_query",
        Str,
        "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin",
        "`auth_query`, global or per `[databases]` entry, run with the user name as `$1` (a parameter) at each login of a user missing from the auth_file; pgheal's default is the classic `SELECT usename, passwd FROM pg_shadow WHERE usename=$1`",
    ),
    yes("auth_type", Kind::Lookup(AUTH_TYPES), "md5", "`auth_type`: `trust`, `plain`, `md5` (SCRAM for users with a SCRAM secret, as PgBouncer), `scram-sha-256`, `hba` (the method per connection from `auth_hba_file`); `any`, `cert`, `ldap`, `pam` stop the start (not implemented yet)"),
    yes("auth_user", Str, "", "`auth_user`, global or per `[databases]` entry: looks up users missing from the auth_file with auth_query; its own credentials come from the auth_file (plain or md5)"),
    not_yet("autodb_idle_timeout", Time, "3600", &[], "pools of `*` databases are kept"),
    yes("cancel_wait_timeout", Time, "10", "`cancel_wait_timeout`: forwarding a client's cancel request to the server (connect and send) is given up after this time, with a log line; 0 = no limit"),
    yes("client_idle_timeout", Time, "0", "`client_idle_timeout`: a client idle outside a transaction longer than this gets `FATAL 08P01 client_idle_timeout` and is closed (in session pooling too, where its server connection goes back to the pool); 0 = off"),
    yes("client_login_timeout", Time, "60", "`client_login_timeout`: the TLS handshake, startup packet and authentication must be over in this time, else the client gets `FATAL 08P01 client_login_timeout` (PgBouncer's words) and the connection is closed; 0 = no limit"),
    not_yet("client_tls13_ciphers", Str, "", &[""], "rustls' TLS 1.3 suites (AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305) are always offered"),
    yes("client_tls_ca_file", Str, "", "`client_tls_ca_file`: root certificates (PEM) client certificates must lead to (`verify-ca`/`verify-full`); reloaded on change"),
    yes("client_tls_cert_file", Str, "", "`client_tls_cert_file`: pgheal's certificate (PEM) for clients; reloaded on change and on SIGHUP"),
    yes("client_tls_ciphers", Str, "default", "`client_tls_ciphers`: `default`, `secure`, `fast`, `normal`, `all` and OpenSSL class words offer every rustls suite (all AEAD with forward secrecy); OpenSSL names of the TLS 1.2 ECDHE-GCM/ChaCha20 suites select those; an unknown name stops the start"),
    not_yet("client_tls_dheparams", Str, "auto", &["auto"], "rustls has no finite-field DHE suites; only `auto` is quiet"),
    not_yet("client_tls_ecdhcurve", Str, "auto", &["auto"], "rustls negotiates X25519, P-256 or P-384; only `auto` is quiet"),
    yes("client_tls_key_file", Str, "", "`client_tls_key_file`: pgheal's private key (PEM); reloaded with the certificate"),
    yes("client_tls_protocols", Str, "secure", "`client_tls_protocols`: TLS 1.2 and 1.3 (`secure`, `all`, `legacy`, `tlsv1.2`, `tlsv1.3`); `tlsv1.0`/`tlsv1.1` stop the start"),
    yes("client_tls_sslmode", Kind::Lookup(SSLMODES), "disable", "`client_tls_sslmode`, PgBouncer's meanings: `allow`/`prefer` TLS when the client asks, `require` refuses plain clients, `verify-ca`/`verify-full` (the same) also need a client certificate valid for `client_tls_ca_file`; PostgreSQL 17 direct TLS (ALPN `postgresql`) is accepted too"),
    differs("conffile", Str, "", true, "read-only in PgBouncer's console; the file is the one on the command line"),
    yes("default_pool_size", Int, "20", "`pool_size` (at least 1)"),
    not_yet("disable_pqexec", Int, "0", &["0"], ""),
    differs("dns_max_ttl", Time, "15", false, "pgheal resolves a host name at each new server connection (the system resolver's own caching applies; no cache of its own, SHOW DNS_HOSTS is empty)"),
    differs("dns_nxdomain_ttl", Time, "15", false, "pgheal resolves a host name at each new server connection (the system resolver's own caching applies; no cache of its own, SHOW DNS_HOSTS is empty)"),
    differs("dns_zone_check_period", Time, "0", false, "pgheal resolves a host name at each new server connection (the system resolver's own caching applies; no cache of its own, SHOW DNS_HOSTS is empty)"),
    yes("idle_transaction_timeout", Time, "0", "`idle_transaction_timeout`: a transaction whose client sends nothing for this long: the client gets `FATAL 08P01 idle transaction timeout`, the server connection is closed (its transaction rolls back); 0 = off"),
    differs("ignore_startup_parameters", Str, "", false, "pgheal refuses no startup parameter: each is applied to the server connection with SET"),
    differs("job_name", Str, "pgbouncer", false, "Windows service name"),
    yes("listen_addr", Str, "", "`listen`: every address listed (`*` = all IPv4 and IPv6 addresses, names resolved to all their addresses). Unset (PgBouncer: Unix socket only) is a warning and 127.0.0.1"),
    not_yet("listen_backlog", Int, "128", &[], "pgheal's backlog is 1024"),
    yes("listen_port", Int, "6432", "the port of `listen`"),
    yes("log_connections", Int, "1", "`log_connections`: `login attempt: db=... user=... tls=...` at info level"),
    yes("log_disconnections", Int, "1", "`log_disconnections`: `closing because: REASON (age=Ns)` at info level for each client session"),
    yes("log_pooler_errors", Int, "1", "`log_pooler_errors`: `pooler error: ...` at warning level for each error pgheal itself sends a client"),
    yes("log_stats", Int, "1", "`log_stats`: a `stats: ...` line per database every `stats_period`, PgBouncer's figures"),
    yes("logfile", Str, "", "log lines are appended to it (also to stderr unless `-q` or `-d`); reopened on SIGHUP for log rotation"),
    not_yet("login_notify_message", Str, "", &[""], ""),
    yes("max_client_conn", Int, "100", "`max_client_conn`"),
    yes("max_db_client_connections", Int, "0", "`max_db_client_connections` (also per database): a login over it is refused with 08P01 `client connections exceeded (max_db_client_connections)`"),
    yes("max_db_connections", Int, "0", "`max_db_connections` (also per database): server connections of every pool of the database; a client over it waits, and an idle connection of another pool of the database is closed to make room"),
    yes("max_packet_size", UInt, "2147483647", "`max_message_len` when set (at least 1024). Unset, pgheal keeps its own limit of 256 MiB: it holds a whole message in memory, and 2 GiB per client is an easy way to exhaust it"),
    yes("max_prepared_statements", Int, "200", "`max_prepared_statements`. 0 (PgBouncer: no prepared statement support in transaction pooling) is a warning: pgheal always tracks them and keeps 200"),
    yes("max_user_client_connections", Int, "0", "`max_user_client_connections` (also per user): a login over it is refused with 08P01 `client connections exceeded (max_user_client_connections)`"),
    yes("max_user_connections", Int, "0", "`max_user_connections` (also per user): server connections of every pool of the server user; a client over it waits, and an idle connection of another pool of the user is closed to make room"),
    yes("min_pool_size", Int, "0", "`min_pool_size`, capped at the pool size"),
    yes("peer_id", Int, "0", "`peer_id`: carried in cancel keys as PgBouncer does; a cancel request for another instance is forwarded to its `[peers]` entry (TTL 3, never in a loop). Restart only"),
    yes("pidfile", Str, "", "written once the listener is bound, removed at exit; required by `-d`"),
    differs("pkt_buf", Int, "4096", false, "pgheal sizes its buffers by the messages"),
    yes("pool_mode", Kind::Lookup(POOL_MODES), "session", "`pool_mode`: `session`, `transaction`, `statement` (a transaction block disconnects the client, as PgBouncer)"),
    not_yet("pool_idle_timeout", Time, "0", &["0"], ""),
    yes("query_timeout", Time, "0", "`query_timeout`: a query running longer than this: the client gets `FATAL 08P01 query timeout`, the query is cancelled and the server connection closed; 0 = off"),
    yes("query_wait_notify", Int, "5", "`query_wait_notify`: a client waiting this many seconds for a server connection gets one NOTICE, PgBouncer's words; 0 = never"),
    yes("query_wait_timeout", Time, "120", "`query_wait_timeout`; 0 = wait forever"),
    yes("reserve_pool_size", Int, "0", "`reserve_pool_size` (also per database and per user): extra server connections for a client that waited `reserve_pool_timeout`; each use is logged (`taking connection from reserve_pool`) and counted"),
    yes("reserve_pool_timeout", Time, "5", "`reserve_pool_timeout`; 0 disables the reserve, as in PgBouncer"),
    not_yet("resolv_conf", Str, "", &[""], ""),
    differs("sbuf_loopcnt", Int, "5", false, "the runtime's cooperative scheduling keeps one busy connection from stalling the others"),
    not_yet("scram_iterations", Int, "4096", &["4096"], "pgheal uses 4096"),
    yes("server_check_delay", Time, "30", "`server_check_delay`: an idle server connection unused for longer is checked with `server_check_query` before a client gets it (SHOW POOLS `sv_tested` while it is); a failed check closes it and the client gets another"),
    yes("server_check_query", Str, "<empty>", "`server_check_query`: `<empty>` (the default) sends an empty query, an empty value turns the check off; the socket is also checked before every reuse"),
    yes("server_connect_timeout", Time, "15", "`server_connect_timeout`"),
    yes("server_fast_close", Int, "0", "`server_fast_close`: session pooling; a session whose server connection RECONNECT or a reload made stale is closed at its next transaction boundary (checked every second) with `FATAL 08P01 database configuration changed`"),
    yes("server_idle_timeout", Time, "600", "`server_idle_timeout`; 0 = never"),
    yes("server_lifetime", Time, "3600", "`server_lifetime`; 0 = each connection is used once, as in PgBouncer"),
    yes("server_login_retry", Time, "15", "`server_login_retry`: in a database with several hosts, a host whose connect or login failed is skipped for this long, and while every host is so marked clients get `server login has been failing, cached error: ... (server_login_retry)` at once; a database with one host is tried again by each new server connection"),
    yes("server_reset_query", Str, "DISCARD ALL", "`server_reset_query`; empty = none"),
    yes("server_reset_query_always", Int, "0", "`server_reset_query_always`"),
    yes("server_round_robin", Int, "0", "`server_round_robin`: 0 reuses the most recently used idle server connection first (LIFO), 1 the oldest (FIFO)"),
    not_yet("server_tls13_ciphers", Str, "", &[""], "rustls' cipher suites are used"),
    yes("server_tls_ca_file", Str, "", "`server_tls_ca_file`: root certificates (PEM) for `verify-ca`/`verify-full`; with `require` the chain is checked too (libpq's rule)"),
    yes("server_tls_cert_file", Str, "", "`server_tls_cert_file`: pgheal's certificate for servers that ask for one"),
    not_yet("server_tls_ciphers", Str, "default", &["default"], "rustls' cipher suites are used"),
    yes("server_tls_key_file", Str, "", "`server_tls_key_file`"),
    yes("server_tls_protocols", Str, "secure", "`server_tls_protocols`: TLS 1.2 and 1.3 (`secure`, `all`, `legacy`, `tlsv1.2`, `tlsv1.3`); `tlsv1.0`/`tlsv1.1` stop the start (rustls does not speak them)"),
    yes("server_tls_sslmode", Kind::Lookup(SSLMODES), "prefer", "`server_tls_sslmode`, libpq's meanings; `allow` works as `prefer`; an upstream URL's `sslmode` wins"),
    differs("service_name", Str, "", false, "Windows service name"),
    yes("so_reuseport", Int, "0", "`so_reuseport`: a new pgheal can listen on the port while the old one drains (rolling restart); pgheal's event loops already use every CPU in one process"),
    yes("stats_period", Int, "60", "`stats_period`: the period of the averages in `SHOW STATS`, `SHOW STATS_AVERAGES` and `SHOW TOTALS`"),
    yes("stats_users", Str, "", "`stats_users`: users who may run the admin console's `SHOW` commands (but not `SHOW FDS`)"),
    differs("suspend_timeout", Time, "10", true, "pgheal has no SUSPEND: in an online restart (`-R`) each client moves at its own transaction boundary, within 10 s; a client not at one by then finishes on the old process"),
    not_yet("syslog", Int, "0", &["0"], ""),
    not_yet("syslog_facility", Str, "daemon", &["daemon"], ""),
    not_yet("syslog_ident", Str, "pgbouncer", &["pgbouncer"], ""),
    not_yet("tcp_defer_accept", Int, "1", &["0"], ""),
    yes("tcp_keepalive", Int, "1", "`tcp_keepalive`: TCP keepalive on client and server sockets, with the OS timings unless the keys below set them; a dead peer is noticed while its connection is quiet"),
    yes("tcp_keepcnt", Int, "0", "`tcp_keepcnt`: unanswered probes before the connection is dropped (0 = OS default)"),
    yes("tcp_keepidle", Int, "0", "`tcp_keepidle`: seconds of quiet before the first probe (0 = OS default)"),
    yes("tcp_keepintvl", Int, "0", "`tcp_keepintvl`: seconds between probes (0 = OS default)"),
    not_yet("tcp_socket_buffer", Int, "0", &["0"], ""),
    yes("tcp_user_timeout", Int, "0", "`tcp_user_timeout`: milliseconds sent data may stay unacknowledged (and, on Linux, probes unanswered) before the connection is dropped (0 = OS default)"),
    differs("track_extra_parameters", Str, "IntervalStyle", false, "in transaction pooling pgheal carries every startup parameter and `SET` across server connections"),
    yes("transaction_timeout", Time, "0", "`transaction_timeout`: a transaction open longer than this: the client gets `FATAL 08P01 transaction timeout`, a running query is cancelled and the server connection closed; 0 = off"),
    yes("unix_socket_dir", Str, "/tmp", "`unix_socket_dir`: clients may connect to `unix_socket_dir/.s.PGSQL.<listen_port>` (`\"\"` disables it; no TLS on it, as PostgreSQL); `peer` lines of `auth_hba_file` apply there, and the OS user pgheal runs as logs into the console as user `pgbouncer` without a password. The abstract namespace (`@dir`) stops the start (not implemented); server connections do not use it"),
    yes("unix_socket_group", Str, "", "`unix_socket_group`: the socket file's group"),
    yes("unix_socket_mode", Int, "0777", "`unix_socket_mode`: the socket file's mode"),
    yes("user", Str, "", "the OS user to switch to once the listener is bound (`-u` wins)"),
    yes("verbose", Int, "0", "the log level: 0 info, 1 debug, 2 or more trace (`-v` wins)"),
];

/// The key named `name` (case-sensitive, as in PgBouncer).
pub fn find(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// `strtol(s, &end, 0)` accepting only a full parse: `12`, `-3`, `0x1F`, `0777` (octal).
pub fn parse_c_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, body) = if let Some(hex) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, hex)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = i64::from_str_radix(body, radix).ok()?;
    Some(if negative { -v } else { v })
}

/// PgBouncer's time values: seconds as a non-negative, finite decimal number.
pub fn parse_seconds(s: &str) -> Option<f64> {
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

impl Kind {
    /// Checks `value` against the type; the reason names what was expected.
    pub fn check(self, value: &str) -> Result<(), String> {
        let ok = match self {
            Kind::Int => parse_c_int(value).is_some_and(|v| i32::try_from(v).is_ok()),
            Kind::UInt => parse_c_int(value).is_some_and(|v| u32::try_from(v).is_ok()),
            Kind::Time => parse_seconds(value).is_some(),
            Kind::Str => true,
            Kind::Lookup(words) => words.iter().any(|w| w.eq_ignore_ascii_case(value)),
        };
        if ok {
            return Ok(());
        }
        Err(match self {
            Kind::Int => format!("expected an integer, got {value:?}"),
            Kind::UInt => format!("expected a non-negative integer, got {value:?}"),
            Kind::Time => format!("expected a number of seconds ≥ 0, got {value:?}"),
            Kind::Str => unreachable!("any text is a string"),
            Kind::Lookup(words) => format!("expected one of {}, got {value:?}", words.join(", ")),
        })
    }

    /// Whether two valid values mean the same (numbers compared as numbers).
    pub fn same_value(self, a: &str, b: &str) -> bool {
        match self {
            Kind::Int | Kind::UInt => parse_c_int(a).is_some() && parse_c_int(a) == parse_c_int(b),
            Kind::Time => parse_seconds(a).is_some() && parse_seconds(a) == parse_seconds(b),
            Kind::Str => a == b,
            Kind::Lookup(_) => a.eq_ignore_ascii_case(b),
        }
    }
}

/// The README's key table (between the `pgbouncer-keys` markers of "Moving from PgBouncer").
pub fn markdown_table() -> String {
    let mut out =
        String::from("| `[pgbouncer]` key | PgBouncer default | in pgheal |\n|---|---|---|\n");
    for k in KEYS {
        let default = if k.default.is_empty() {
            "not set".to_owned()
        } else if k.default.len() > 24 {
            "(long)".to_owned()
        } else {
            format!("`{}`", k.default)
        };
        let what = match k.support {
            Support::Yes(note) => format!("**supported**: {note}"),
            Support::NotYet { note: "", .. } => "not yet (warning)".to_owned(),
            Support::NotYet { note, .. } => format!("not yet (warning): {note}"),
            Support::Differs { warn: true, note } => format!("differs (warning): {note}"),
            Support::Differs { warn: false, note } => format!("differs: {note}"),
        };
        out.push_str(&format!("| `{}` | {default} | {what} |\n", k.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_integers() {
        assert_eq!(parse_c_int("12"), Some(12));
        assert_eq!(parse_c_int("-3"), Some(-3));
        assert_eq!(parse_c_int("+3"), Some(3));
        assert_eq!(parse_c_int("0"), Some(0));
        assert_eq!(parse_c_int("0x1F"), Some(31));
        assert_eq!(parse_c_int("0777"), Some(0o777));
        for bad in [
            "",
            "-",
            "0x",
            "08",
            "1.5",
            "12 ",
            "abc",
            "1e3",
            "99999999999999999999",
        ] {
            assert_eq!(parse_c_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn kinds_check_values() {
        assert!(Kind::Int.check("20").is_ok());
        assert!(Kind::Int.check("3000000000").is_err());
        assert!(Kind::UInt.check("2147483647").is_ok());
        assert!(Kind::UInt.check("-1").is_err());
        assert!(Kind::Time.check("2.5").is_ok());
        assert!(Kind::Time.check("-1").is_err());
        assert!(Kind::Time.check("inf").is_err());
        assert!(Kind::Time.check("10s").is_err());
        assert!(Kind::Lookup(POOL_MODES).check("Transaction").is_ok());
        let e = Kind::Lookup(POOL_MODES).check("txn").unwrap_err();
        assert!(e.contains("session, transaction, statement"), "{e}");
        assert!(Kind::Time.same_value("0.0", "0"));
        assert!(Kind::Int.same_value("0x10", "16"));
        assert!(!Kind::Int.same_value("1", "0"));
    }

    /// The table covers PgBouncer 1.25.2's keys exactly (its `bouncer_params`, plus the Windows
    /// alias `service_name`), in order, once each, and its defaults are valid values.
    #[test]
    fn the_table_is_pgbouncer_1_25() {
        let names: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), names.len(), "a key is listed twice");
        assert_eq!(names.len(), 101);
        for k in KEYS {
            if !k.default.is_empty() {
                assert!(k.kind.check(k.default).is_ok(), "{}", k.name);
            }
            if let Support::NotYet { same, refuse, .. } = k.support {
                for v in same.iter().chain(refuse) {
                    assert!(k.kind.check(v).is_ok(), "{}: {v}", k.name);
                }
            }
        }
        for name in [
            "pool_idle_timeout",
            "login_notify_message",
            "transaction_timeout",
            "max_user_client_connections",
            "client_tls13_ciphers",
        ] {
            assert!(find(name).is_some(), "{name}");
        }
        assert!(find("Pool_Mode").is_none());
    }

    /// The README's table is generated from [`KEYS`]. `PGHEAL_BLESS=1 cargo test --lib
    /// readme_key_table` rewrites it after a change here.
    #[test]
    fn readme_key_table() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).expect("read README.md");
        let (start, end) = (
            "<!-- pgbouncer-keys:start -->\n",
            "<!-- pgbouncer-keys:end -->",
        );
        let (Some(a), Some(b)) = (readme.find(start), readme.find(end)) else {
            panic!("README.md lacks the {start:?} and {end:?} markers");
        };
        let current = &readme[a + start.len()..b];
        let table = markdown_table();
        if current != table {
            if std::env::var_os("PGHEAL_BLESS").is_some() {
                let updated = format!("{}{table}{}", &readme[..a + start.len()], &readme[b..]);
                std::fs::write(path, updated).expect("write README.md");
            } else {
                panic!("README.md's key table is out of date; run PGHEAL_BLESS=1 cargo test --lib readme_key_table\n{table}");
            }
        }
    }
}
