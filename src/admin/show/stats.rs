//! `SHOW STATS`, `SHOW STATS_TOTALS`, `SHOW STATS_AVERAGES`, `SHOW TOTALS`: PgBouncer's
//! counters, per database and in all, and their averages over the last `stats_period`.

use std::sync::Arc;
use std::time::Duration;

use crate::pool::stats::Totals;
use crate::pool::Pool;
use crate::session::Shared;

use super::super::table::{Col, Table, Value};

use Col::{Numeric, Text};

pub(super) enum StatsView {
    Both,
    Totals,
    Averages,
}

/// Per database: the sum of its pools' totals, and of their totals a period ago.
pub(super) fn per_database(pools: &[Arc<Pool>]) -> Vec<(String, Totals, Totals, Duration)> {
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

pub(super) fn values(t: &Totals) -> [u64; 12] {
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
pub(super) fn stats(shared: &Shared, view: StatsView) -> Table {
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
pub(super) fn totals(shared: &Shared) -> Table {
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
