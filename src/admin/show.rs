//! Every `SHOW` of the admin console, with PgBouncer 1.25's columns, in its order and with its
//! types (its `admin.c` and `stats.c`), read from pgheal's accounting.
//!
//! Where pgheal has no counterpart of a PgBouncer structure, the columns are there and the
//! figures say so plainly: no cancel-request lists (pgheal forwards a cancel request at once),
//! no DNS cache (host names are resolved when a connection opens), no slab allocator
//! (`SHOW MEM` lists nothing), no file descriptors to hand over (`SHOW FDS` lists nothing: an
//! online restart does not pass sockets). The README's compatibility table lists these.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::PoolMode;
use crate::pool::stats::Totals;
use crate::pool::Pool;
use crate::protocol::{encode, sqlstate, Frame};
use crate::session::clients::{ClientState, ClientTrack};
use crate::session::Shared;

use super::command::Show;
use super::table::{Col, Table, Value};
use super::{Role, CONSOLE_DATABASES};

use Col::{Int4, Int8, Numeric, Text};

/// The console's own database and user, as PgBouncer lists them.
const CONSOLE: &str = "pgbouncer";

pub fn show(what: Show, shared: &Shared, _role: Role, _me: &ClientTrack) -> Vec<Frame> {
    let table = match what {
        Show::Help => return help(),
        Show::Fake(name, value) => {
            let mut t = Table::new(&[(name, Text)]);
            t.row(vec![value.into()]);
            t
        }
        Show::Version => {
            let mut t = Table::new(&[("version", Text)]);
            t.row(vec![super::version_string().into()]);
            t
        }
        Show::Config => config(shared),
        Show::Databases => databases(shared),
        Show::Pools => pools(shared),
        Show::Clients => sockets(shared, Sockets::Clients),
        Show::Servers => sockets(shared, Sockets::Servers),
        Show::Sockets => sockets(shared, Sockets::All { only_active: false }),
        Show::ActiveSockets => sockets(shared, Sockets::All { only_active: true }),
        Show::Users => users(shared),
        Show::Stats => stats(shared, StatsView::Both),
        Show::StatsTotals => stats(shared, StatsView::Totals),
        Show::StatsAverages => stats(shared, StatsView::Averages),
        Show::Totals => totals(shared),
        Show::Lists => lists(shared),
        Show::State => state(shared),
        Show::Fds => Table::new(&[
            ("fd", Int4),
            ("task", Text),
            ("user", Text),
            ("database", Text),
            ("addr", Text),
            ("port", Int4),
            ("cancel", Int8),
            ("link", Int4),
            ("client_encoding", Text),
            ("std_strings", Text),
            ("datestyle", Text),
            ("timezone", Text),
            ("password", Text),
            ("scram_client_key", Text),
            ("scram_server_key", Text),
        ]),
        Show::Mem => Table::new(&[
            ("name", Text),
            ("size", Int4),
            ("used", Int4),
            ("free", Int4),
            ("memtotal", Int4),
        ]),
        Show::DnsHosts => Table::new(&[("hostname", Text), ("ttl", Int8), ("addrs", Text)]),
        Show::DnsZones => Table::new(&[("zonename", Text), ("serial", Int8), ("count", Int4)]),
        Show::Peers => peers(shared),
        Show::PeerPools => Table::new(&[
            ("peer_id", Int4),
            ("cl_active_cancel_req", Int4),
            ("cl_waiting_cancel_req", Int4),
            ("sv_active_cancel", Int4),
            ("sv_login", Int4),
        ]),
        Show::Heals => heals(shared),
        Show::Statements => statements(shared),
        Show::SchemaEpoch => schema_epoch(shared),
    };
    table.frames("SHOW")
}

/// `SHOW HELP`: a notice with the command list, as PgBouncer sends it, plus pgheal's own.
fn help() -> Vec<Frame> {
    let detail = "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n\
        \tSHOW PEERS|PEER_POOLS\n\
        \tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n\
        \tSHOW DNS_HOSTS|DNS_ZONES\n\
        \tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n\
        \tSHOW HEALS|STATEMENTS|SCHEMA_EPOCH\n\
        \tSET key = arg\n\
        \tRELOAD\n\
        \tPAUSE [<db>]\n\
        \tRESUME [<db>]\n\
        \tDISABLE <db>\n\
        \tENABLE <db>\n\
        \tRECONNECT [<db>]\n\
        \tKILL [<db>]\n\
        \tKILL_CLIENT <client_id>\n\
        \tSUSPEND\n\
        \tSHUTDOWN\n\
        \tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS\n\
        \tWAIT_CLOSE [<db>]";
    vec![
        encode::error_fields(
            b'N',
            &[
                (b'S', b"NOTICE"),
                (b'C', sqlstate::SUCCESSFUL_COMPLETION.as_bytes()),
                (b'M', b"Console usage"),
                (b'D', detail.as_bytes()),
            ],
        ),
        encode::command_complete("SHOW"),
    ]
}

fn mode_name(m: PoolMode) -> &'static str {
    m.as_str()
}

/// `SHOW POOLS`.
fn pools(shared: &Shared) -> Table {
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
            0usize.into(),
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
fn in_pool(c: &ClientTrack, pool: &Pool) -> bool {
    c.database == pool.key.database
        && (c.user == pool.key.user || pool.login().user == pool.key.user)
}

/// `SHOW DATABASES`.
fn databases(shared: &Shared) -> Table {
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
    let cfg = &shared.cfg;
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
            0i64.into(),
            lifetime.into(),
            mode_name(db.pool_mode).into(),
            Value::Null,
            0i64.into(),
            connections.into(),
            0i64.into(),
            client_count.into(),
            control.as_ref().is_some_and(|c| c.is_paused()).into(),
            control.as_ref().is_some_and(|c| c.is_disabled()).into(),
        ]);
    }
    t
}

/// Configured databases, then those made from the `*` entry that have pools (the console's
/// own is not among them).
fn database_names(shared: &Shared, pools: &[Arc<Pool>]) -> Vec<String> {
    let mut names: Vec<String> = shared.cfg.databases.keys().cloned().collect();
    for p in pools {
        if !names.contains(&p.key.database) {
            names.push(p.key.database.clone());
        }
    }
    names.retain(|n| !CONSOLE_DATABASES.contains(&n.as_str()));
    names
}

/// Users of the auth file and `[users]`, and the console's, sorted.
fn user_names(cfg: &crate::config::Config) -> Vec<&str> {
    let mut names: Vec<&str> = cfg.users.keys().map(String::as_str).collect();
    names.extend(cfg.user_settings.keys().map(String::as_str));
    names.push(CONSOLE);
    names.sort_unstable();
    names.dedup();
    names
}

/// `SHOW USERS`: users of the auth file and `[users]`, and the console's.
fn users(shared: &Shared) -> Table {
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
    let cfg = &shared.cfg;
    let pools = shared.pools.all();
    let clients = shared.clients.all();
    for name in user_names(cfg) {
        let settings = cfg.user_settings.get(name);
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
            String::new().into(),
            settings
                .and_then(|s| s.pool_mode)
                .map(|m| mode_name(m).to_owned())
                .into(),
            0i64.into(),
            servers.into(),
            0i64.into(),
            clients.iter().filter(|c| c.user == name).count().into(),
        ]);
    }
    t
}

enum Sockets {
    Clients,
    Servers,
    /// `SHOW SOCKETS` / `SHOW ACTIVE_SOCKETS`: both, with PgBouncer's debug columns (pgheal
    /// has no per-socket buffers to report: zeros). Every socket is listed as active.
    All {
        only_active: bool,
    },
}

/// The columns of `SHOW CLIENTS` and `SHOW SERVERS` (and the debug ones of `SHOW SOCKETS`).
fn socket_table(debug: bool) -> Table {
    let mut cols = vec![
        ("type", Text),
        ("user", Text),
        ("database", Text),
        ("replication", Text),
        ("state", Text),
        ("addr", Text),
        ("port", Int4),
        ("local_addr", Text),
        ("local_port", Int4),
        ("connect_time", Text),
        ("request_time", Text),
        ("wait", Int4),
        ("wait_us", Int4),
        ("close_needed", Int4),
        ("ptr", Text),
        ("link", Text),
        ("remote_pid", Int4),
        ("tls", Text),
        ("application_name", Text),
        ("prepared_statements", Int4),
        ("id", Int8),
    ];
    if debug {
        for c in [
            "recv_pos",
            "pkt_pos",
            "pkt_remain",
            "send_pos",
            "send_remain",
            "pkt_avail",
            "send_avail",
        ] {
            cols.push((c, Int4));
        }
    }
    Table::new(&cols)
}

/// A pointer-like name for a connection (PgBouncer prints addresses): `c<id>` for clients,
/// `s<id>` for server connections, so `link` names the other side.
fn client_ptr(id: u64) -> String {
    format!("c{id:x}")
}

fn server_ptr(id: u64) -> String {
    format!("s{id:x}")
}

fn sockets(shared: &Shared, which: Sockets) -> Table {
    let debug = matches!(which, Sockets::All { .. });
    let mut t = socket_table(debug);
    let extra = |row: &mut Vec<Value>| {
        if debug {
            row.extend(std::iter::repeat_n(Value::Int(0), 7));
        }
    };
    if !matches!(which, Sockets::Servers) {
        for c in shared.clients.all() {
            let waited = c.waited();
            let state = match (c.state(), c.link(), &which) {
                (ClientState::Waiting, _, Sockets::All { .. }) => "cl_waiting",
                (ClientState::Waiting, _, _) => "waiting",
                (ClientState::Active, _, Sockets::All { .. }) => "cl_active",
                (ClientState::Active, None, _) => "idle",
                (ClientState::Active, Some(_), _) => "active",
            };
            let mut row = vec![
                "C".into(),
                c.user.as_str().into(),
                if c.admin {
                    CONSOLE
                } else {
                    c.database.as_str()
                }
                .into(),
                "none".into(),
                state.into(),
                c.addr.ip().to_string().into(),
                i64::from(c.addr.port()).into(),
                c.local_addr.map(|a| a.ip().to_string()).into(),
                i64::from(c.local_addr.map_or(0, |a| a.port())).into(),
                format_time(c.connect_time).into(),
                format_time(c.request_time()).into(),
                (waited.as_secs() as i64).into(),
                i64::from(waited.subsec_micros()).into(),
                0i64.into(),
                client_ptr(c.id).into(),
                c.link().map(server_ptr).unwrap_or_default().into(),
                0i64.into(),
                c.tls.as_str().into(),
                c.application_name.as_str().into(),
                c.prepared().into(),
                c.id.into(),
            ];
            extra(&mut row);
            t.row(row);
        }
    }
    if !matches!(which, Sockets::Clients) {
        for pool in shared.pools.all() {
            for s in pool.servers() {
                let state = s.state().as_str();
                let state = match (&which, state) {
                    (Sockets::All { .. }, "new") => "sv_login".to_owned(),
                    (Sockets::All { .. }, st) => format!("sv_{st}"),
                    (_, st) => st.to_owned(),
                };
                let mut row = vec![
                    "S".into(),
                    pool.key.user.as_str().into(),
                    pool.key.database.as_str().into(),
                    "none".into(),
                    state.into(),
                    s.addr.ip().to_string().into(),
                    i64::from(s.addr.port()).into(),
                    s.local_addr.map(|a| a.ip().to_string()).into(),
                    i64::from(s.local_addr.map_or(0, |a| a.port())).into(),
                    format_time(s.connect_time).into(),
                    format_time(s.request_time()).into(),
                    0i64.into(),
                    0i64.into(),
                    pool.control.is_stale(s.generation).into(),
                    server_ptr(s.id).into(),
                    s.link().map(client_ptr).unwrap_or_default().into(),
                    s.backend_pid.into(),
                    s.tls.as_str().into(),
                    String::new().into(),
                    s.prepared().into(),
                    s.id.into(),
                ];
                extra(&mut row);
                t.row(row);
            }
        }
    }
    if let Sockets::All { only_active: true } = which {
        // Sockets with unsent or unparsed bytes: pgheal sends and parses as it reads, so
        // none are ever left waiting in a buffer between wake-ups.
        let mut empty = socket_table(true);
        std::mem::swap(&mut t, &mut empty);
    }
    t
}

enum StatsView {
    Both,
    Totals,
    Averages,
}

/// Per database: the sum of its pools' totals, and of their totals a period ago.
fn per_database(pools: &[Arc<Pool>]) -> Vec<(String, Totals, Totals, Duration)> {
    let mut out: Vec<(String, Totals, Totals, Duration)> = Vec::new();
    for p in pools {
        let now = p.stats.totals();
        let (older, ago) = p.stats.older();
        match out.last_mut() {
            Some((db, t, o, a)) if *db == p.key.database => {
                t.add(&now);
                o.add(&older);
                *a = (*a).max(ago);
            }
            _ => out.push((p.key.database.clone(), now, older, ago)),
        }
    }
    out
}

const TOTAL_NAMES: [&str; 12] = [
    "server_assignment_count",
    "xact_count",
    "query_count",
    "received",
    "sent",
    "xact_time",
    "query_time",
    "wait_time",
    "client_parse_count",
    "server_parse_count",
    "bind_count",
    "client_login_count",
];

fn values(t: &Totals) -> [u64; 12] {
    [
        t.server_assignment_count,
        t.xact_count,
        t.query_count,
        t.client_bytes,
        t.server_bytes,
        t.xact_time,
        t.query_time,
        t.wait_time,
        t.client_parse_count,
        t.server_parse_count,
        t.bind_count,
        t.client_login_count,
    ]
}

/// `SHOW STATS`, `SHOW STATS_TOTALS`, `SHOW STATS_AVERAGES`.
fn stats(shared: &Shared, view: StatsView) -> Table {
    // Column names exactly as PgBouncer 1.25 spells them in each view.
    const STATS: [&str; 24] = [
        "total_server_assignment_count",
        "total_xact_count",
        "total_query_count",
        "total_received",
        "total_sent",
        "total_xact_time",
        "total_query_time",
        "total_wait_time",
        "total_client_parse_count",
        "total_server_parse_count",
        "total_bind_count",
        "total_client_login_count",
        "avg_server_assignment_count",
        "avg_xact_count",
        "avg_query_count",
        "avg_recv",
        "avg_sent",
        "avg_xact_time",
        "avg_query_time",
        "avg_wait_time",
        "avg_client_parse_count",
        "avg_server_parse_count",
        "avg_bind_count",
        "avg_client_login_count",
    ];
    const TOTALS: [&str; 12] = [
        "server_assignment_count",
        "xact_count",
        "query_count",
        "bytes_received",
        "bytes_sent",
        "xact_time",
        "query_time",
        "wait_time",
        "client_parse_count",
        "server_parse_count",
        "bind_count",
        "client_login_count",
    ];
    const AVERAGES: [&str; 12] = [
        "server_assignment_count",
        "xact_count",
        "query_count",
        "bytes_received",
        "bytes_sent",
        "xact_time",
        "query_time",
        "wait_time",
        "avg_client_parse_count",
        "avg_server_parse_count",
        "avg_bind_count",
        "avg_client_login_count",
    ];
    let names: &[&'static str] = match view {
        StatsView::Both => &STATS,
        StatsView::Totals => &TOTALS,
        StatsView::Averages => &AVERAGES,
    };
    let mut cols = vec![("database", Text)];
    cols.extend(names.iter().map(|n| (*n, Numeric)));
    let mut t = Table::new(&cols);
    for (db, now, older, ago) in per_database(&shared.pools.all()) {
        let avg = now.averages(&older, ago);
        let mut row: Vec<Value> = vec![db.into()];
        match view {
            StatsView::Both => {
                row.extend(values(&now).map(Value::from));
                row.extend(values(&avg).map(Value::from));
            }
            StatsView::Totals => row.extend(values(&now).map(Value::from)),
            StatsView::Averages => row.extend(values(&avg).map(Value::from)),
        }
        t.row(row);
    }
    t
}

/// `SHOW TOTALS`: every pool together, one row per figure.
fn totals(shared: &Shared) -> Table {
    let mut now = Totals::default();
    let mut older = Totals::default();
    let mut ago = Duration::ZERO;
    for p in shared.pools.all() {
        now.add(&p.stats.totals());
        let (o, a) = p.stats.older();
        older.add(&o);
        ago = ago.max(a);
    }
    let avg = now.averages(&older, ago);
    // PgBouncer names the byte counters by their fields here.
    let mut names = TOTAL_NAMES;
    names[3] = "client_bytes";
    names[4] = "server_bytes";
    names[8] = "ps_client_parse_count";
    names[9] = "ps_server_parse_count";
    names[10] = "ps_bind_count";
    let mut t = Table::new(&[("name", Text), ("value", Numeric)]);
    for (prefix, v) in [("total", values(&now)), ("avg", values(&avg))] {
        for (name, value) in names.iter().zip(v) {
            t.row(vec![format!("{prefix}_{name}").into(), value.into()]);
        }
    }
    t
}

/// `SHOW LISTS`.
fn lists(shared: &Shared) -> Table {
    let mut t = Table::new(&[("list", Text), ("items", Int4)]);
    let cfg = &shared.cfg;
    let pools = shared.pools.all();
    let servers: usize = pools.iter().map(|p| p.servers().len()).sum();
    for (name, n) in [
        // The console's own database counts, as in PgBouncer.
        ("databases", database_names(shared, &pools).len() + 1),
        ("users", user_names(cfg).len()),
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
fn state(shared: &Shared) -> Table {
    let paused = shared.pools.controls().global().is_paused();
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let mut t = Table::new(&[("key", Text), ("value", Text)]);
    t.row(vec!["active".into(), yes_no(!paused).into()]);
    t.row(vec!["paused".into(), yes_no(paused).into()]);
    t.row(vec!["suspended".into(), "no".into()]);
    t
}

/// `SHOW PEERS`.
fn peers(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("peer_id", Int4),
        ("host", Text),
        ("port", Int4),
        ("pool_size", Int4),
    ]);
    for (id, p) in &shared.cfg.peers {
        t.row(vec![
            i64::from(*id).into(),
            p.host.as_str().into(),
            i64::from(p.port).into(),
            p.pool_size.unwrap_or(0).into(),
        ]);
    }
    t
}

/// `SHOW CONFIG`: every PgBouncer 1.25 key, with pgheal's value where it has the setting.
/// `changeable` is `no` for every key: settings change by restarting pgheal for now.
fn config(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("key", Text),
        ("value", Text),
        ("default", Text),
        ("changeable", Text),
    ]);
    for key in crate::config::pgbouncer_keys::KEYS {
        let value = config_value(&shared.cfg, key.name).unwrap_or_else(|| key.default.to_owned());
        t.row(vec![
            key.name.into(),
            value.into(),
            key.default.into(),
            "no".into(),
        ]);
    }
    t
}

/// The value of a PgBouncer key in pgheal's configuration, for the keys pgheal maps.
fn config_value(cfg: &crate::config::Config, key: &str) -> Option<String> {
    let secs = |d: Duration| format!("{}", d.as_secs_f64());
    let list = |v: &[String]| v.join(",");
    Some(match key {
        "listen_addr" => cfg.listen.ip().to_string(),
        "listen_port" => cfg.listen.port().to_string(),
        "max_client_conn" => cfg.max_client_conn.to_string(),
        "auth_type" => cfg.auth_type.as_str().to_owned(),
        "query_wait_timeout" => secs(cfg.query_wait_timeout),
        "server_connect_timeout" => secs(cfg.server_connect_timeout),
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
        _ => return None,
    })
}

/// `SHOW HEALS`: pgheal's recent heal events, newest last.
fn heals(shared: &Shared) -> Table {
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
fn statements(shared: &Shared) -> Table {
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
fn schema_epoch(shared: &Shared) -> Table {
    let mut t = Table::new(&[("database", Text), ("schema_epoch", Int8)]);
    for name in database_names(shared, &shared.pools.all()) {
        let epoch = shared.pools.epoch_for(&name).current();
        t.row(vec![name.into(), epoch.into()]);
    }
    t
}

/// `2026-11-30 22:17:04 UTC` (PgBouncer prints local time with the zone's name; pgheal
/// prints UTC, whatever the machine's zone).
pub fn format_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc_dates() {
        assert_eq!(
            format_time(SystemTime::UNIX_EPOCH),
            "1970-01-01 00:00:00 UTC"
        );
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_076_224);
        assert_eq!(format_time(t), "2026-11-30 22:03:44 UTC");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(format_time(leap), "2000-02-29 00:00:00 UTC");
    }
}
