//! `SHOW CLIENTS`, `SHOW SERVERS`, `SHOW SOCKETS`, `SHOW ACTIVE_SOCKETS`: one row per
//! connection, with PgBouncer's columns.

use crate::session::clients::ClientState;
use crate::session::Shared;

use super::super::table::{Col, Table, Value};
use super::{format_time, CONSOLE};

use Col::{Int4, Int8, Text};

pub(super) enum Sockets {
    Clients,
    Servers,
    /// `SHOW SOCKETS` / `SHOW ACTIVE_SOCKETS`: both, with PgBouncer's debug columns (pgheal
    /// has no per-socket buffers to report: zeros). Every socket is listed as active.
    All {
        only_active: bool,
    },
}

/// The columns of `SHOW CLIENTS` and `SHOW SERVERS` (and the debug ones of `SHOW SOCKETS`).
pub(super) fn socket_table(debug: bool) -> Table {
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
pub(super) fn client_ptr(id: u64) -> String {
    format!("c{id:x}")
}

pub(super) fn server_ptr(id: u64) -> String {
    format!("s{id:x}")
}

pub(super) fn sockets(shared: &Shared, which: Sockets) -> Table {
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
                c.addr.host().into(),
                i64::from(c.addr.port()).into(),
                c.local_addr.map(|a| a.host()).into(),
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
