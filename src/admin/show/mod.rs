//! Every `SHOW` of the admin console, with PgBouncer 1.25's columns, in its order and with its
//! types (its `admin.c` and `stats.c`), read from pgheal's accounting.
//!
//! Where pgheal has no counterpart of a PgBouncer structure, the columns are there and the
//! figures say so plainly: no cancel-request lists (pgheal forwards a cancel request at once),
//! no DNS cache (host names are resolved when a connection opens), no slab allocator
//! (`SHOW MEM` lists nothing), no file descriptors to hand over (`SHOW FDS` lists nothing: an
//! online restart does not pass sockets). The README's compatibility table lists these.

use std::time::SystemTime;

use crate::config::PoolMode;
use crate::protocol::{encode, sqlstate, Frame};
use crate::session::clients::ClientTrack;
use crate::session::Shared;

use super::command::Show;
use super::table::{Col, Table};
use super::Role;

mod own;
mod pools;
mod sockets;
mod stats;

use own::{config, heals, schema_epoch, statements};
use pools::{databases, lists, peers, pools, state, users};
use sockets::{sockets, Sockets};
use stats::{stats, totals, StatsView};

use Col::{Int4, Int8, Text};

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
    use std::time::Duration;

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
