//! How pgheal treats its server connections beyond the login itself: retrying a server whose
//! login failed, checking a connection that sat idle before handing it out, the order idle
//! connections are reused in, and what a database entry adds to each new connection (several
//! hosts, startup parameters, a query run after login).
//!
//! The global keys are PgBouncer's (`server_login_retry`, `server_check_delay`,
//! `server_check_query`, `server_round_robin`, `application_name_add_host`) with its defaults;
//! the per-database ones ([`DbConnect`]) are the `[databases]` connection-string keys
//! `load_balance_hosts`, `connect_query`, `client_encoding`, `datestyle`, `timezone` and
//! `application_name`. All change with RELOAD.

use std::time::Duration;

use super::ConfigError;

/// What an idle connection is checked with before it is handed out again (PgBouncer's
/// `server_check_query`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckQuery {
    /// No check (`server_check_query = ` set to an empty value).
    Off,
    /// An empty query (PgBouncer 1.25's default, `<empty>`): a round trip without parsing.
    Empty,
    /// This query.
    Query(String),
}

impl CheckQuery {
    /// PgBouncer's reading of the value: `<empty>` (its default) sends an empty query, an empty
    /// value turns the check off.
    pub fn parse(v: &str) -> CheckQuery {
        match v.trim() {
            "<empty>" => CheckQuery::Empty,
            "" => CheckQuery::Off,
            q => CheckQuery::Query(q.to_owned()),
        }
    }

    /// The SQL sent (`""` for the empty query); `None` when checks are off.
    pub fn sql(&self) -> Option<&str> {
        match self {
            CheckQuery::Off => None,
            CheckQuery::Empty => Some(""),
            CheckQuery::Query(q) => Some(q),
        }
    }
}

/// The global server-connection settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// `server_login_retry`: a host whose connect or login failed is skipped for this long
    /// (when a database lists several hosts), and clients asking while every host is marked
    /// failed get PgBouncer's "server login has been failing" error at once.
    pub login_retry: Duration,
    /// `server_check_delay`: an idle connection unused for longer is checked before reuse.
    pub check_delay: Duration,
    /// `server_check_query`.
    pub check_query: CheckQuery,
    /// `server_round_robin`: reuse idle connections oldest first (FIFO) instead of the most
    /// recently used first (LIFO).
    pub round_robin: bool,
    /// `application_name_add_host`: append ` - host:port` of the client to its
    /// `application_name` (`app` when it sent none).
    pub application_name_add_host: bool,
    /// `server_fast_close`: in session pooling, a session whose server connection a RECONNECT
    /// (or a reload that changes the login) made stale ends at its next transaction boundary
    /// (FATAL 08P01 "database configuration changed") instead of keeping the old connection
    /// to the session's end.
    pub fast_close: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            login_retry: Duration::from_secs(15),
            check_delay: Duration::from_secs(30),
            check_query: CheckQuery::Empty,
            round_robin: false,
            application_name_add_host: false,
            fast_close: false,
        }
    }
}

/// How a database with several hosts picks the host of a new connection
/// (`load_balance_hosts`, PgBouncer 1.24+).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalanceHosts {
    /// Each new connection takes the next host of the list (PgBouncer's default).
    #[default]
    RoundRobin,
    /// Stay on one host until connecting to it fails, then move to the next.
    Disable,
}

impl LoadBalanceHosts {
    pub fn parse(key: &str, v: &str) -> Result<Self, ConfigError> {
        if v.eq_ignore_ascii_case("round-robin") {
            Ok(LoadBalanceHosts::RoundRobin)
        } else if v.eq_ignore_ascii_case("disable") {
            Ok(LoadBalanceHosts::Disable)
        } else {
            Err(ConfigError::new(key, "expected disable or round-robin"))
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LoadBalanceHosts::RoundRobin => "round-robin",
            LoadBalanceHosts::Disable => "disable",
        }
    }
}

/// What a `[databases]` entry adds to each new server connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbConnect {
    pub load_balance_hosts: LoadBalanceHosts,
    /// One port per host of the list (libpq's `port=5432,5433`, a pgheal extension:
    /// PgBouncer takes one port for every host); empty: every host uses `Database::port`.
    pub ports: Vec<u16>,
    /// Run once on each new server connection after login; an error fails that connection.
    pub connect_query: Option<String>,
    /// Startup parameters of new server connections, in PgBouncer's order: `client_encoding`,
    /// `datestyle`, `timezone`, `application_name`.
    pub startup_params: Vec<(String, String)>,
}

impl DbConnect {
    /// From the entry's optional keys.
    pub fn new(
        load_balance_hosts: LoadBalanceHosts,
        connect_query: Option<String>,
        client_encoding: Option<String>,
        datestyle: Option<String>,
        timezone: Option<String>,
        application_name: Option<String>,
    ) -> DbConnect {
        let startup_params = [
            ("client_encoding", client_encoding),
            ("datestyle", datestyle),
            ("timezone", timezone),
            ("application_name", application_name),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
        .collect();
        DbConnect {
            load_balance_hosts,
            ports: Vec::new(),
            connect_query: connect_query.filter(|q| !q.trim().is_empty()),
            startup_params,
        }
    }
}

/// The hosts of a `host=` value: comma-separated, blanks trimmed. An empty item is an error
/// (PgBouncer would try to connect to it).
pub fn host_list(key: &str, host: &str) -> Result<Vec<String>, ConfigError> {
    let hosts: Vec<String> = host.split(',').map(|h| h.trim().to_owned()).collect();
    if hosts.iter().any(String::is_empty) {
        return Err(ConfigError::new(
            key,
            format!("{host:?}: an empty host in the list"),
        ));
    }
    Ok(hosts)
}

/// `application_name_add_host`: the client's `application_name` (`app` when it sent none)
/// followed by ` - ` and its address (`1.2.3.4:5678`, `[::1]:5678`), as PgBouncer's
/// `set_appname`. The setting is replaced in place, or added.
pub fn add_host_to_application_name(settings: &mut Vec<(String, String)>, peer: &str) {
    match settings.iter_mut().rfind(|(k, _)| k == "application_name") {
        Some((_, v)) => *v = format!("{v} - {peer}"),
        None => settings.push(("application_name".into(), format!("app - {peer}"))),
    }
}

/// A `port` value: one port, or one per host separated by commas (as libpq).
pub fn port_list(key: &str, v: &str) -> Result<Vec<u16>, ConfigError> {
    v.split(',')
        .map(|p| match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(ConfigError::new(
                key,
                format!("{p:?} is not a port (1 to 65535)"),
            )),
        })
        .collect()
}

/// Checks that a list of ports fits the host list: one port, or as many as hosts.
pub fn check_ports(key: &str, hosts: usize, ports: &[u16]) -> Result<(), ConfigError> {
    if ports.len() > 1 && ports.len() != hosts {
        return Err(ConfigError::new(
            key,
            format!(
                "{} ports for {hosts} hosts: give one port for every host, or one for all",
                ports.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn application_name_gets_the_client_address() {
        let mut s = vec![("application_name".to_owned(), "web".to_owned())];
        add_host_to_application_name(&mut s, "10.0.0.1:5000");
        assert_eq!(s[0].1, "web - 10.0.0.1:5000");
        let mut s = vec![];
        add_host_to_application_name(&mut s, "[::1]:5000");
        assert_eq!(
            s,
            [("application_name".to_owned(), "app - [::1]:5000".to_owned())]
        );
    }

    #[test]
    fn check_query_reads_as_pgbouncer() {
        assert_eq!(CheckQuery::parse("<empty>"), CheckQuery::Empty);
        assert_eq!(CheckQuery::parse(""), CheckQuery::Off);
        assert_eq!(
            CheckQuery::parse("select 1"),
            CheckQuery::Query("select 1".into())
        );
        assert_eq!(CheckQuery::Empty.sql(), Some(""));
        assert_eq!(CheckQuery::Off.sql(), None);
    }

    #[test]
    fn port_lists() {
        assert_eq!(port_list("p", "5432, 5433").unwrap(), [5432, 5433]);
        assert!(port_list("p", "5432,x").is_err());
        assert!(check_ports("p", 3, &[1, 2]).is_err());
        assert!(check_ports("p", 3, &[1]).is_ok());
    }

    #[test]
    fn host_lists() {
        assert_eq!(host_list("h", "a, b,c").unwrap(), ["a", "b", "c"]);
        assert_eq!(host_list("h", "a").unwrap(), ["a"]);
        assert!(host_list("h", "a,,b").is_err());
    }

    #[test]
    fn load_balance_words() {
        assert_eq!(
            LoadBalanceHosts::parse("k", "Round-Robin").unwrap(),
            LoadBalanceHosts::RoundRobin
        );
        assert_eq!(
            LoadBalanceHosts::parse("k", "disable").unwrap(),
            LoadBalanceHosts::Disable
        );
        assert!(LoadBalanceHosts::parse("k", "random").is_err());
    }

    #[test]
    fn startup_params_keep_pgbouncer_order() {
        let c = DbConnect::new(
            LoadBalanceHosts::Disable,
            Some("  ".into()),
            None,
            Some("ISO".into()),
            Some("UTC".into()),
            None,
        );
        assert_eq!(c.connect_query, None);
        assert_eq!(
            c.startup_params,
            [
                ("datestyle".to_owned(), "ISO".to_owned()),
                ("timezone".into(), "UTC".into())
            ]
        );
    }
}
