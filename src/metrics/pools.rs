//! Per-pool metrics, read at scrape time from the accounting the admin console reads
//! ([`crate::pool::stats`], the client list, the pause and disable controls), so `/metrics`
//! and `SHOW POOLS` / `SHOW STATS` count the same things the same way and the hot path keeps
//! one set of counters. A custom [`Collector`]: every scrape walks the pools once.
//!
//! Label sets stay bounded: `database` is a configured database or `other` (pools made from
//! the `*` fallback entry, whose names the clients choose), `user` a user pgheal knows from its
//! configuration (auth_file, `[users]`, a database's `user`) or `other` (users found by
//! auth_query). Pools falling under the same labels are added up (gauges and counters summed,
//! the longest wait kept). Statement text, server connection ids and client addresses are never
//! labels: prepared statements per server connection are exported as the pool's sum and its
//! largest single connection.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};

use crate::config::live::LiveConfig;
use crate::config::Config;
use crate::pool::stats::{Totals, BUCKET_BOUNDS_US};
use crate::pool::{Pool, Pools};
use crate::session::clients::{ClientList, ClientState, ClientTrack};

/// The label value for databases and users outside the configuration.
pub const OTHER: &str = "other";

/// The labels a pool is exported under (see the module docs).
pub fn pool_labels(cfg: &Config, database: &str, user: &str) -> (String, String) {
    let db = if cfg.databases.contains_key(database) {
        database
    } else {
        OTHER
    };
    let known_user = cfg.users.contains_key(user)
        || cfg.user_settings.contains_key(user)
        || cfg
            .databases
            .values()
            .any(|d| d.user.as_deref() == Some(user));
    let user = if known_user { user } else { OTHER };
    (db.to_owned(), user.to_owned())
}

/// The figures of one label set (one pool, or several added up).
#[derive(Default)]
struct Figures {
    cl_active: u64,
    cl_waiting: u64,
    cl_idle: u64,
    sv_active: u64,
    sv_idle: u64,
    sv_used: u64,
    sv_login: u64,
    sv_tested: u64,
    checks: u64,
    check_failures: u64,
    maxwait: Duration,
    pool_size: u64,
    reserve_size: u64,
    reserve_active: u64,
    reserve_used: u64,
    prepared: u64,
    prepared_max: u64,
    /// Statement texts the pool's registry remembers, and those it forgot (transaction pooling).
    statements: u64,
    statements_evicted: u64,
    guards: u64,
    guard_heals: u64,
    totals: Totals,
    query_hist: [u64; BUCKET_BOUNDS_US.len() + 1],
    xact_hist: [u64; BUCKET_BOUNDS_US.len() + 1],
    wait_hist: [u64; BUCKET_BOUNDS_US.len() + 1],
}

fn add_hist(into: &mut [u64; BUCKET_BOUNDS_US.len() + 1], from: [u64; BUCKET_BOUNDS_US.len() + 1]) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

/// Whether a client belongs to `pool` (as `SHOW POOLS` decides it).
fn in_pool(c: &ClientTrack, pool: &Pool) -> bool {
    !c.admin
        && c.database == pool.key.database
        && (c.user == pool.key.user || pool.login().user == pool.key.user)
}

impl Figures {
    fn add_pool(&mut self, pool: &Pool, clients: &[Arc<ClientTrack>]) {
        let s = &pool.stats;
        let waiting = s.waiting() as u64;
        self.cl_waiting += waiting;
        self.cl_active += (s.clients() as u64).saturating_sub(waiting);
        let mine = clients.iter().filter(|c| in_pool(c, pool));
        for c in mine {
            if c.state() == ClientState::Active && c.link().is_none() {
                self.cl_idle += 1;
            }
            self.maxwait = self.maxwait.max(c.waited());
        }
        self.sv_active += s.active() as u64;
        self.sv_idle += pool.idle_count() as u64;
        self.sv_used += s.resetting_count() as u64;
        self.sv_login += s.logging_in() as u64;
        self.sv_tested += s.testing_count() as u64;
        let (checks, failed) = s.check_counts();
        self.checks += checks;
        self.check_failures += failed;
        self.pool_size += pool.settings().size as u64;
        self.reserve_size += pool.settings().reserve_size as u64;
        self.reserve_active += pool.reserve_in_use() as u64;
        self.reserve_used += s.reserve_used_count();
        for server in pool.servers() {
            let n = server.prepared() as u64;
            self.prepared += n;
            self.prepared_max = self.prepared_max.max(n);
        }
        let (guards, heals) = s.guard_counts();
        self.guards += guards;
        self.guard_heals += heals;
        self.totals.add(&s.totals());
        add_hist(&mut self.query_hist, s.query_hist.counts());
        add_hist(&mut self.xact_hist, s.xact_hist.counts());
        add_hist(&mut self.wait_hist, s.wait_hist.counts());
    }
}

/// What a family holds.
#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
    Histogram,
}

/// One family of the collector: name, help, type, labels.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
}

const POOL: &[&str] = &["database", "user"];
const DATABASE: &[&str] = &["database"];

macro_rules! fam {
    ($name:literal, $kind:ident, $labels:expr, $help:literal) => {
        Family {
            name: $name,
            help: $help,
            kind: Kind::$kind,
            labels: $labels,
        }
    };
}

/// Every family the collector exports, in output order.
const FAMILIES: &[Family] = &[
    fam!("pgheal_pool_client_active_connections", Gauge, POOL, "Clients logged in and not waiting for a server connection (SHOW POOLS cl_active)"),
    fam!("pgheal_pool_client_waiting_connections", Gauge, POOL, "Clients waiting for a server connection (SHOW POOLS cl_waiting)"),
    fam!("pgheal_pool_client_idle_connections", Gauge, POOL, "Active clients without a server connection linked (between transactions)"),
    fam!("pgheal_pool_client_maxwait_seconds", Gauge, POOL, "How long the longest-waiting client has waited for a server connection (SHOW POOLS maxwait)"),
    fam!("pgheal_pool_server_active_connections", Gauge, POOL, "Server connections linked to a client (SHOW POOLS sv_active)"),
    fam!("pgheal_pool_server_idle_connections", Gauge, POOL, "Server connections idle and ready (SHOW POOLS sv_idle)"),
    fam!("pgheal_pool_server_used_connections", Gauge, POOL, "Server connections given back and being reset (SHOW POOLS sv_used)"),
    fam!("pgheal_pool_server_testing_connections", Gauge, POOL, "Idle server connections running server_check_query before reuse (SHOW POOLS sv_tested)"),
    fam!("pgheal_pool_server_login_connections", Gauge, POOL, "Server connections logging in (SHOW POOLS sv_login)"),
    fam!("pgheal_pool_size", Gauge, POOL, "Largest number of server connections of the pool (pool_size)"),
    fam!("pgheal_pool_reserve_size", Gauge, POOL, "Connections the pool may open beyond pool_size for clients that waited reserve_pool_timeout (reserve_pool_size)"),
    fam!("pgheal_pool_reserve_active_connections", Gauge, POOL, "Server connections of the reserve pool in use"),
    fam!("pgheal_pool_reserve_used_total", Counter, POOL, "Clients given a connection of the reserve pool (\"taking connection from reserve_pool\")"),
    fam!("pgheal_pool_server_prepared_statements", Gauge, POOL, "Prepared statements held on the pool's server connections, all added up"),
    fam!("pgheal_pool_server_prepared_statements_max", Gauge, POOL, "Prepared statements held by the pool's server connection that holds the most"),
    fam!("pgheal_pool_statements", Gauge, POOL, "Statement texts the pool's registry remembers (transaction pooling; bounded by max_pool_statements)"),
    fam!("pgheal_pool_statements_evicted_total", Counter, POOL, "Statement texts forgotten because no client and no server connection held them"),
    fam!("pgheal_pool_server_checks_total", Counter, POOL, "server_check_query runs on server connections idle longer than server_check_delay"),
    fam!("pgheal_pool_server_check_failures_total", Counter, POOL, "server_check_query runs that failed (the connection was closed)"),
    fam!("pgheal_pool_server_assignments_total", Counter, POOL, "Server connections assigned to clients"),
    fam!("pgheal_pool_transactions_total", Counter, POOL, "Transactions pooled (SHOW STATS total_xact_count)"),
    fam!("pgheal_pool_queries_total", Counter, POOL, "Queries pooled (SHOW STATS total_query_count)"),
    fam!("pgheal_pool_received_bytes_total", Counter, POOL, "Bytes received from clients (SHOW STATS total_received)"),
    fam!("pgheal_pool_sent_bytes_total", Counter, POOL, "Bytes sent to clients (SHOW STATS total_sent)"),
    fam!("pgheal_pool_client_parses_total", Counter, POOL, "Parse messages received from clients"),
    fam!("pgheal_pool_server_parses_total", Counter, POOL, "Parse messages pgheal sent to servers"),
    fam!("pgheal_pool_binds_total", Counter, POOL, "Bind messages received from clients"),
    fam!("pgheal_pool_client_logins_total", Counter, POOL, "Client logins"),
    fam!("pgheal_pool_savepoint_guards_total", Counter, POOL, "Binds inside transaction blocks bracketed by the savepoint guard"),
    fam!("pgheal_pool_savepoint_guard_heals_total", Counter, POOL, "Stale plans inside transaction blocks healed behind the savepoint guard"),
    fam!("pgheal_pool_query_duration_seconds", Histogram, POOL, "Query durations, from the client's query to the server's ReadyForQuery"),
    fam!("pgheal_pool_transaction_duration_seconds", Histogram, POOL, "Transaction durations, idle in transaction included"),
    fam!("pgheal_pool_client_wait_seconds", Histogram, POOL, "Time clients waited for a server connection, one observation per assignment"),
    fam!("pgheal_schema_epoch", Gauge, DATABASE, "Schema epoch of the database: goes up with every schema change pgheal learns of"),
    fam!("pgheal_database_paused", Gauge, DATABASE, "1 if the database is paused (PAUSE db, or the whole process paused)"),
    fam!("pgheal_database_disabled", Gauge, DATABASE, "1 if the database is disabled (DISABLE db)"),
    fam!("pgheal_database_max_connections", Gauge, DATABASE, "max_db_connections of the database (0 = no limit)"),
    fam!("pgheal_database_server_connections", Gauge, DATABASE, "Open server connections of every pool of the database (counted against max_db_connections)"),
    fam!("pgheal_database_max_client_connections", Gauge, DATABASE, "max_db_client_connections of the database (0 = no limit)"),
    fam!("pgheal_database_client_connections", Gauge, DATABASE, "Clients logged in to the database (counted against max_db_client_connections)"),
    fam!("pgheal_paused", Gauge, &[], "1 if the whole process is paused (PAUSE, SIGUSR1)"),
    fam!("pgheal_config_max_client_connections", Gauge, &[], "max_client_conn"),
    fam!("pgheal_pools", Gauge, &[], "Pools (database, server user) in use"),
];

/// The per-pool collector, registered in [`super::Metrics`] once the pools exist.
pub struct PoolCollector {
    /// Weak: the pools hold the metrics, which hold this.
    pools: Weak<Pools>,
    clients: Arc<ClientList>,
    /// The configuration in force (a reload changes the label sets).
    config: Arc<LiveConfig>,
    descs: Vec<Desc>,
}

impl PoolCollector {
    pub fn new(
        pools: &Arc<Pools>,
        clients: Arc<ClientList>,
        config: Arc<LiveConfig>,
    ) -> PoolCollector {
        let descs = FAMILIES
            .iter()
            .map(|f| {
                Desc::new(
                    f.name.into(),
                    f.help.into(),
                    f.labels.iter().map(|l| (*l).to_owned()).collect(),
                    Default::default(),
                )
                .expect("valid metric")
            })
            .collect();
        PoolCollector {
            pools: Arc::downgrade(pools),
            clients,
            config,
            descs,
        }
    }

    /// The figures of every label set.
    fn figures(&self, pools: &Pools) -> BTreeMap<(String, String), Figures> {
        let clients = self.clients.all();
        let cfg = self.config.current();
        let mut out: BTreeMap<(String, String), Figures> = BTreeMap::new();
        for pool in pools.all() {
            let labels = pool_labels(&cfg, &pool.key.database, &pool.key.user);
            let figures = out.entry(labels).or_default();
            figures.add_pool(&pool, &clients);
            if let Some(names) = pools.names_if_any(&pool.key) {
                figures.statements += names.len() as u64;
                figures.statements_evicted += names.evicted();
            }
        }
        out
    }
}

fn labels(names: &[&str], values: &[&str]) -> Vec<LabelPair> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| {
            let mut l = LabelPair::default();
            l.set_name((*n).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

fn gauge(names: &[&str], values: &[&str], v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = Metric::default();
    m.set_label(labels(names, values));
    m.set_gauge(g);
    m
}

fn counter(names: &[&str], values: &[&str], v: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v);
    let mut m = Metric::default();
    m.set_label(labels(names, values));
    m.set_counter(c);
    m
}

/// A histogram from per-bucket counts (not cumulative) and the sum in microseconds.
fn histogram(
    names: &[&str],
    values: &[&str],
    counts: &[u64; BUCKET_BOUNDS_US.len() + 1],
    sum_us: u64,
) -> Metric {
    let mut h = Histogram::default();
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(BUCKET_BOUNDS_US.len());
    for (bound, n) in BUCKET_BOUNDS_US.iter().zip(counts) {
        cumulative += n;
        let mut b = Bucket::default();
        b.set_upper_bound(*bound as f64 / 1e6);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    cumulative += counts[BUCKET_BOUNDS_US.len()];
    h.set_bucket(buckets);
    h.set_sample_count(cumulative);
    h.set_sample_sum(sum_us as f64 / 1e6);
    let mut m = Metric::default();
    m.set_label(labels(names, values));
    m.set_histogram(h);
    m
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(pools) = self.pools.upgrade() else {
            return Vec::new();
        };
        let figures = self.figures(&pools);
        let controls = pools.controls();
        let global_paused = controls.global().is_paused();
        // Configured databases, plus `other` when fallback pools exist.
        let cfg = self.config.current();
        let mut databases: BTreeSet<&str> = cfg.databases.keys().map(String::as_str).collect();
        if figures.keys().any(|(d, _)| d == OTHER) {
            databases.insert(OTHER);
        }
        let pool_count = pools.all().len() as f64;
        FAMILIES
            .iter()
            .map(|f| {
                let mut metrics = Vec::new();
                if f.labels == POOL {
                    for ((db, user), x) in &figures {
                        let v = [db.as_str(), user.as_str()];
                        let t = &x.totals;
                        let g = |n: u64| gauge(POOL, &v, n as f64);
                        let c = |n: u64| counter(POOL, &v, n as f64);
                        metrics.push(match f.name {
                            "pgheal_pool_client_active_connections" => g(x.cl_active),
                            "pgheal_pool_client_waiting_connections" => g(x.cl_waiting),
                            "pgheal_pool_client_idle_connections" => g(x.cl_idle),
                            "pgheal_pool_client_maxwait_seconds" => {
                                gauge(POOL, &v, x.maxwait.as_secs_f64())
                            }
                            "pgheal_pool_server_active_connections" => g(x.sv_active),
                            "pgheal_pool_server_idle_connections" => g(x.sv_idle),
                            "pgheal_pool_server_used_connections" => g(x.sv_used),
                            "pgheal_pool_server_testing_connections" => g(x.sv_tested),
                            "pgheal_pool_server_checks_total" => c(x.checks),
                            "pgheal_pool_server_check_failures_total" => c(x.check_failures),
                            "pgheal_pool_server_login_connections" => g(x.sv_login),
                            "pgheal_pool_size" => g(x.pool_size),
                            "pgheal_pool_reserve_size" => g(x.reserve_size),
                            "pgheal_pool_reserve_active_connections" => g(x.reserve_active),
                            "pgheal_pool_reserve_used_total" => c(x.reserve_used),
                            "pgheal_pool_server_prepared_statements" => g(x.prepared),
                            "pgheal_pool_server_prepared_statements_max" => g(x.prepared_max),
                            "pgheal_pool_statements" => g(x.statements),
                            "pgheal_pool_statements_evicted_total" => c(x.statements_evicted),
                            "pgheal_pool_server_assignments_total" => c(t.server_assignment_count),
                            "pgheal_pool_transactions_total" => c(t.xact_count),
                            "pgheal_pool_queries_total" => c(t.query_count),
                            "pgheal_pool_received_bytes_total" => c(t.client_bytes),
                            "pgheal_pool_sent_bytes_total" => c(t.server_bytes),
                            "pgheal_pool_client_parses_total" => c(t.client_parse_count),
                            "pgheal_pool_server_parses_total" => c(t.server_parse_count),
                            "pgheal_pool_binds_total" => c(t.bind_count),
                            "pgheal_pool_client_logins_total" => c(t.client_login_count),
                            "pgheal_pool_savepoint_guards_total" => c(x.guards),
                            "pgheal_pool_savepoint_guard_heals_total" => c(x.guard_heals),
                            "pgheal_pool_query_duration_seconds" => {
                                histogram(POOL, &v, &x.query_hist, t.query_time)
                            }
                            "pgheal_pool_transaction_duration_seconds" => {
                                histogram(POOL, &v, &x.xact_hist, t.xact_time)
                            }
                            "pgheal_pool_client_wait_seconds" => {
                                histogram(POOL, &v, &x.wait_hist, t.wait_time)
                            }
                            other => unreachable!("pool family {other} not exported"),
                        });
                    }
                } else if f.labels == DATABASE {
                    for db in &databases {
                        let v = [*db];
                        let control = controls.database_if_known(db);
                        let value = match f.name {
                            "pgheal_schema_epoch" if *db != OTHER => {
                                pools.epoch_for(db).current() as f64
                            }
                            "pgheal_database_paused" => f64::from(
                                global_paused || control.as_ref().is_some_and(|c| c.is_paused()),
                            ),
                            "pgheal_database_disabled" => {
                                f64::from(control.as_ref().is_some_and(|c| c.is_disabled()))
                            }
                            "pgheal_database_max_connections" if *db != OTHER => cfg
                                .database_for(db, "")
                                .map_or(0, |d| d.limits.max_db_connections)
                                as f64,
                            "pgheal_database_server_connections" if *db != OTHER => {
                                pools.db_limit(db).map_or(0, |l| l.in_use()) as f64
                            }
                            "pgheal_database_max_client_connections" if *db != OTHER => cfg
                                .database_for(db, "")
                                .map_or(0, |d| d.limits.max_db_client_connections)
                                as f64,
                            "pgheal_database_client_connections" if *db != OTHER => {
                                pools.db_client_count(db) as f64
                            }
                            _ => continue,
                        };
                        metrics.push(gauge(DATABASE, &v, value));
                    }
                } else {
                    let value = match f.name {
                        "pgheal_paused" => f64::from(global_paused),
                        "pgheal_config_max_client_connections" => cfg.max_client_conn as f64,
                        "pgheal_pools" => pool_count,
                        other => unreachable!("family {other} not exported"),
                    };
                    metrics.push(gauge(&[], &[], value));
                }
                let mut mf = MetricFamily::default();
                mf.set_name(f.name.to_owned());
                mf.set_help(f.help.to_owned());
                mf.set_field_type(match f.kind {
                    Kind::Gauge => MetricType::GAUGE,
                    Kind::Counter => MetricType::COUNTER,
                    Kind::Histogram => MetricType::HISTOGRAM,
                });
                mf.set_metric(metrics);
                mf
            })
            .collect()
    }
}
