//! Prometheus metrics and the `/metrics` HTTP endpoint (`--metrics-listen ADDR`).
//!
//! The registry is owned by [`Metrics`] (no global registry), so tests can run several pgheal
//! instances in one process and read each one's counters.
//!
//! Process-wide counters live here; the per-pool figures are read at scrape time from the
//! pools' own accounting by [`pools::PoolCollector`], registered once the pools exist
//! ([`Metrics::register_pools`]). No label set grows without bound: databases are the
//! configured ones or `other`, users the configured ones or `other` (see [`pools`]), and
//! statement text is never a label. The same listener answers `/healthz` and `/readyz`
//! ([`health`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::heal::Outcome;

pub mod heal_log;
pub mod health;
pub mod oplog;
pub mod pools;

pub struct Metrics {
    pub registry: Registry,
    /// `pgheal_heal_events_total{database, outcome}`.
    pub heal_events: IntCounterVec,
    /// Configured databases: the `database` label values besides `other` (set at start and
    /// by each reload).
    databases: RwLock<BTreeSet<String>>,
    /// `pgheal_schema_watch_up{database}`: 1 while the schema watch of a database listens.
    pub schema_watch_up: IntGaugeVec,
    pub client_connections: IntGauge,
    pub server_connections: IntGauge,
    /// `pgheal_clients_refused_total{reason}`: auth_failed, unknown_database, max_client_conn,
    /// max_db_client_connections, max_user_client_connections,
    /// wait_timeout, server_unavailable, protocol, login_timeout (`client_login_timeout`), tls
    /// (a failed handshake or a plain client where TLS is required).
    pub clients_refused: IntCounterVec,
    /// `pgheal_cancel_requests_total{result}`: forwarded, to_peer, unknown, unknown_peer,
    /// ttl_exhausted (see `session::cancel::CancelOutcome`).
    pub cancel_requests: IntCounterVec,
    /// `pgheal_timeouts_total{database,user,timeout}`: sessions closed by a session timeout
    /// (`client_idle_timeout`, `query_timeout`, `idle_transaction_timeout`,
    /// `transaction_timeout`).
    pub timeouts: IntCounterVec,
    /// `pgheal_savepoint_guards_total`: Binds bracketed by the savepoint guard (each one a
    /// subtransaction on the server).
    pub savepoint_guards: IntCounter,
    /// `pgheal_savepoint_guard_heals_total`: stale plans caught by the guard and healed.
    pub savepoint_guard_heals: IntCounter,
    /// `pgheal_event_loop_sessions{event_loop}`: live client sessions on each event loop.
    pub event_loop_sessions: IntGaugeVec,
    /// `pgheal_server_connection_moves_total`: pooled server connections that moved to
    /// another event loop at checkout (two `epoll_ctl` calls each).
    pub server_connection_moves: IntCounter,
    /// `pgheal_pinned_clients`: transaction-pooling clients kept on their server connection
    /// because session state (temporary objects, WITH HOLD cursors, advisory locks, a LISTEN
    /// that reached the server) remains on it.
    pub pinned_clients: IntGauge,
    /// `pgheal_pins_total{state}`: clients pinned, by the state found (temp_objects,
    /// hold_cursor, advisory_lock, listen, unknown); a pin for two kinds counts under both.
    pub pins: IntCounterVec,
    /// `pgheal_listen_clients`: transaction-pooling clients with channels pgheal listens to
    /// for them.
    pub listen_clients: IntGauge,
    /// `pgheal_listen_channels`: channels pgheal's listening connections listen to.
    pub listen_channels: IntGauge,
    /// `pgheal_notifications_total`: notifications delivered to transaction-pooling clients.
    pub notifications: IntCounter,
    /// `pgheal_listen_clients_closed_total{reason}`: listening clients closed because a
    /// notification could not reach them (overflow, connection_lost, listen_failed).
    pub listen_clients_closed: IntCounterVec,
    /// The last heal events, for the admin console's `SHOW HEALS`.
    pub heals: heal_log::HealLog,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let heal_events = IntCounterVec::new(
            Opts::new(
                "pgheal_heal_events_total",
                "Cached-plan errors seen, by database and what pgheal did",
            ),
            &["database", "outcome"],
        )
        .expect("valid metric");
        let schema_watch_up = IntGaugeVec::new(
            Opts::new(
                "pgheal_schema_watch_up",
                "1 while the schema watch (schema_watch = \"listen\") of a database listens, 0 while it is down",
            ),
            &["database"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(schema_watch_up.clone()))
            .expect("unique metric");
        let client_connections =
            IntGauge::new("pgheal_client_connections", "Open client connections")
                .expect("valid metric");
        let server_connections =
            IntGauge::new("pgheal_server_connections", "Open server connections")
                .expect("valid metric");
        let clients_refused = IntCounterVec::new(
            Opts::new(
                "pgheal_clients_refused_total",
                "Client connections refused, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let cancel_requests = IntCounterVec::new(
            Opts::new(
                "pgheal_cancel_requests_total",
                "Cancel requests, by result: forwarded (to the server), to_peer, unknown, unknown_peer, ttl_exhausted",
            ),
            &["result"],
        )
        .expect("valid metric");
        let timeouts = IntCounterVec::new(
            Opts::new(
                "pgheal_timeouts_total",
                "Client sessions closed by a session timeout, by database, user and timeout",
            ),
            &["database", "user", "timeout"],
        )
        .expect("valid metric");
        let savepoint_guards = IntCounter::new(
            "pgheal_savepoint_guards_total",
            "Binds inside transaction blocks bracketed by the savepoint guard",
        )
        .expect("valid metric");
        let savepoint_guard_heals = IntCounter::new(
            "pgheal_savepoint_guard_heals_total",
            "Stale plans inside transaction blocks healed by rolling back to the savepoint guard",
        )
        .expect("valid metric");
        let event_loop_sessions = IntGaugeVec::new(
            Opts::new(
                "pgheal_event_loop_sessions",
                "Live client sessions, by event loop",
            ),
            &["event_loop"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(event_loop_sessions.clone()))
            .expect("unique metric");
        let server_connection_moves = IntCounter::new(
            "pgheal_server_connection_moves_total",
            "Pooled server connections moved to another event loop at checkout",
        )
        .expect("valid metric");
        let pinned_clients = IntGauge::new(
            "pgheal_pinned_clients",
            "Transaction-pooling clients kept on their server connection by session state",
        )
        .expect("valid metric");
        let pins = IntCounterVec::new(
            Opts::new(
                "pgheal_pins_total",
                "Clients pinned to their server connection, by the session state found",
            ),
            &["state"],
        )
        .expect("valid metric");
        let listen_clients = IntGauge::new(
            "pgheal_listen_clients",
            "Transaction-pooling clients with channels pgheal listens to for them",
        )
        .expect("valid metric");
        let listen_channels = IntGauge::new(
            "pgheal_listen_channels",
            "Channels pgheal's listening connections listen to",
        )
        .expect("valid metric");
        let notifications = IntCounter::new(
            "pgheal_notifications_total",
            "Notifications delivered to transaction-pooling clients",
        )
        .expect("valid metric");
        let listen_clients_closed = IntCounterVec::new(
            Opts::new(
                "pgheal_listen_clients_closed_total",
                "Listening clients closed because notifications could not reach them, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for g in [&pinned_clients, &listen_clients, &listen_channels] {
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
        }
        for c in [&pins, &listen_clients_closed] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        for c in [
            &savepoint_guards,
            &savepoint_guard_heals,
            &server_connection_moves,
            &notifications,
        ] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        for c in [&heal_events, &clients_refused, &cancel_requests, &timeouts] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        for g in [&client_connections, &server_connections] {
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
        }
        Arc::new(Metrics {
            registry,
            heal_events,
            databases: RwLock::new(BTreeSet::new()),
            schema_watch_up,
            client_connections,
            server_connections,
            clients_refused,
            cancel_requests,
            timeouts,
            savepoint_guards,
            savepoint_guard_heals,
            event_loop_sessions,
            server_connection_moves,
            pinned_clients,
            pins,
            listen_clients,
            listen_channels,
            notifications,
            listen_clients_closed,
            heals: heal_log::HealLog::default(),
        })
    }

    /// Name the configured databases (at start and after a reload): heal events of other databases (made
    /// from the `*` entry) count under `other`. Every outcome of every database is exported
    /// from the start, so dashboards see zeros rather than gaps.
    pub fn set_databases<'a>(&self, names: impl IntoIterator<Item = &'a String>) {
        let names: BTreeSet<String> = names.into_iter().cloned().collect();
        for db in names.iter().map(String::as_str).chain([pools::OTHER]) {
            for o in ALL_OUTCOMES {
                self.heal_events.with_label_values(&[db, o.label()]);
            }
        }
        *self.databases.write().unwrap_or_else(|p| p.into_inner()) = names;
    }

    /// The `database` label of a database: its name if configured, else `other`.
    pub fn database_label<'a>(&self, database: &'a str) -> &'a str {
        let known = self.databases.read().unwrap_or_else(|p| p.into_inner());
        if known.contains(database) {
            database
        } else {
            pools::OTHER
        }
    }

    pub fn heal(&self, outcome: Outcome, database: &str) {
        self.heal_events
            .with_label_values(&[self.database_label(database), outcome.label()])
            .inc();
    }

    /// Heal events with this outcome, every database added up.
    pub fn heal_count(&self, outcome: Outcome) -> u64 {
        use prometheus::core::Collector;
        self.heal_events
            .collect()
            .iter()
            .flat_map(|mf| mf.get_metric())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.get_name() == "outcome" && l.get_value() == outcome.label())
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    /// Export the per-pool figures of `pools` (see [`pools::PoolCollector`]).
    pub fn register_pools(
        &self,
        pools: &Arc<crate::pool::Pools>,
        clients: Arc<crate::session::clients::ClientList>,
        config: Arc<crate::config::live::LiveConfig>,
    ) {
        let c = pools::PoolCollector::new(pools, clients, config);
        if let Err(e) = self.registry.register(Box::new(c)) {
            tracing::warn!(error = %e, "per-pool metrics not registered");
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

const ALL_OUTCOMES: [Outcome; 4] = [
    Outcome::Healed,
    Outcome::Projected,
    Outcome::Refused,
    Outcome::ForwardedInTransaction,
];

/// Serve `GET /metrics`, `/healthz` and `/readyz` (see [`health`]) on `listener` until the
/// task is dropped. Without `health`, `/readyz` answers as `/healthz`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Option<Arc<health::Health>>,
) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let mut req = [0u8; 2048];
            let n =
                match tokio::time::timeout(std::time::Duration::from_secs(5), sock.read(&mut req))
                    .await
                {
                    Ok(Ok(n)) => n,
                    _ => return,
                };
            let head = String::from_utf8_lossy(&req[..n]);
            // "GET /path?query HTTP/1.1"
            let target = head
                .strip_prefix("GET ")
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or("");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let (status, body) = match path {
                "/metrics" => ("200 OK", metrics.render()),
                "/healthz" => ("200 OK", "ok\n".to_owned()),
                "/readyz" => match &health {
                    None => ("200 OK", "ready\n".to_owned()),
                    Some(h) => match h.ready(&health::allow_down(query)).await {
                        Ok(()) => ("200 OK", "ready\n".to_owned()),
                        Err(why) => (
                            "503 Service Unavailable",
                            format!("not ready: {}\n", why.join("\nnot ready: ")),
                        ),
                    },
                },
                _ => (
                    "404 Not Found",
                    "see /metrics, /healthz, /readyz\n".to_owned(),
                ),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}

/// Bind the metrics endpoint.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
