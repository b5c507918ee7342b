//! The heal engine fuzzed: a [`Relay`] between a scripted client and a model of PostgreSQL's
//! extended-protocol server, both driven by the fuzzer's bytes.
//!
//! The bytes choose, step by step, what happens next: the client sends a message (Parse, Bind,
//! Describe, Execute, Close, Sync, Flush, Query; named and unnamed; typical driver bundles), the
//! server reads what the engine sent it, some of the server's answers reach the engine, or a
//! migration changes a table behind pgheal's back (a column added in front or at the end,
//! dropped, or retyped), so statements go stale and the server answers `0A000 cached plan must
//! not change result type` as PostgreSQL does (at Bind; at Describe 'S' after
//! ParameterDescription). The model follows PostgreSQL's input loop: after an error, messages
//! up to Sync are skipped; transaction blocks, failed blocks (`25P02`), savepoints, DDL rolled
//! back with its block, implicit transactions ending at Sync with their portals.
//!
//! Invariants checked (a violation panics, which the fuzzer reports as a crash):
//! - the engine never panics and never returns an error for well-formed traffic;
//! - every frame it writes to either side is well-framed and decodes (the server model decodes
//!   each one; the client side splits and decodes what it reads);
//! - the client sees a valid response sequence for what it sent, in order: every Sync gets
//!   exactly one ReadyForQuery, every Query ends with one, nothing is answered twice and nothing
//!   arrives that was not asked for (a duplicate would have no message left to answer);
//! - every DataRow the client gets has the shape of the last RowDescription it received for that
//!   portal or statement, column by column (values name their column, so a projection that
//!   picks the wrong column is caught, not only a wrong count);
//! - a Parse of a named statement the client was told exists does not succeed (PostgreSQL
//!   answers `42P05`, in a replay too);
//! - at the end, after a final Sync and draining both sides, the engine is quiet.
//!
//! Three files, so that a change of the protocol the engine speaks touches the models alone:
//! - this one, the target and its driver: how the bytes become steps ([`Choices`], the
//!   client's message bundles), the harness that moves frames between the client, the
//!   [`Relay`] and the server, and the final checks;
//! - `server_model.rs`, the model of PostgreSQL's backend: what it answers to what the
//!   engine wrote, and the migrations behind pgheal's back;
//! - `client_model.rs`, the model of the client: what it sent and still waits for, what it
//!   was told of each shape, and the checks on every frame it reads.

mod client_model;
mod server_model;

use bytes::Bytes;

use crate::heal::relay::Naming;
use crate::heal::{Outbox, Relay, RelayConfig, SavepointGuard};
use crate::protocol::encode;
use crate::protocol::frontend::Target;
use crate::protocol::Frame;
use crate::statements::ServerPrepared;
use client_model::{Client, Sent};
use server_model::{Server, TABLES};

/// `PGHEAL_FUZZ_TRACE=1` prints every message each side sends (to debug a crash input).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("PGHEAL_FUZZ_TRACE").is_some())
}

fn show(f: &Frame) -> String {
    format!(
        "{}{:?}",
        char::from(f.tag),
        String::from_utf8_lossy(f.body())
    )
}

/// The fuzzer's bytes, read as choices; 0 once exhausted.
struct Choices<'a> {
    data: &'a [u8],
}

impl Choices<'_> {
    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.u8() as usize % from.len()]
    }
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

struct Harness {
    relay: Relay,
    srv: ServerPrepared,
    out: Outbox,
    server: Server,
    client: Client,
}

impl Harness {
    fn flush_out(&mut self) {
        for b in self.out.to_server.drain(..) {
            self.server.input.extend_from_slice(&b);
        }
        for b in self.out.to_client.drain(..) {
            self.client.input.extend_from_slice(&b);
        }
        self.out.events.clear();
        self.client.read();
    }

    fn client_sends(&mut self, frame: Frame, sent: Option<Sent>) {
        if trace() {
            eprintln!("client -> engine {}", show(&frame));
        }
        if let Some(s) = sent {
            self.client.send(s);
        }
        self.relay
            .on_client(frame, &mut self.srv, &mut self.out)
            .expect("the engine accepts a well-formed client message");
        self.flush_out();
    }

    /// Delivers up to `n` of the server's answers to the engine.
    fn deliver(&mut self, n: usize) -> bool {
        let mut moved = false;
        for _ in 0..n {
            let Some(f) = self.server.output.pop_front() else {
                break;
            };
            moved = true;
            if trace() {
                eprintln!("server -> engine {}", show(&f));
            }
            self.relay
                .on_server(f, &mut self.srv, &mut self.out)
                .expect("the engine accepts a well-formed server message");
            self.flush_out();
        }
        moved
    }

    fn server_reads(&mut self) -> bool {
        let had = !self.server.input.is_empty();
        self.server.read();
        had
    }

    fn drain(&mut self) {
        for _ in 0..10_000 {
            let a = self.server_reads();
            let b = self.deliver(usize::MAX);
            if !a && !b {
                return;
            }
        }
        panic!("the engine and the server never settle");
    }
}

const STMT_NAMES: &[&[u8]] = &[b"", b"s0", b"s1", b"s2"];
const PORTALS: &[&[u8]] = &[b"", b"p1"];
const STMT_SQL: &[&str] = &[
    "SELECT * FROM t0",
    "SELECT * FROM t1",
    "SELECT * FROM t2",
    "INSERT INTO t0",
];
const QUERY_SQL: &[&str] = &[
    "SELECT * FROM t0",
    "SELECT * FROM t1",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "ALTER TABLE t0",
    "ALTER TABLE t1",
    "INSERT INTO t2",
    "SELECT * FROM t0; SELECT * FROM t2",
    "bogus",
    "",
];

fn client_step(h: &mut Harness, c: &mut Choices<'_>) {
    let kind = c.u8() % 13;
    let name = c.pick(STMT_NAMES);
    let portal = c.pick(PORTALS);
    let parse = |h: &mut Harness, name: &[u8], sql: &str| {
        h.client_sends(
            encode::parse(name, sql, &[]),
            Some(Sent::Parse(name.to_vec())),
        )
    };
    let bind = |h: &mut Harness, portal: &[u8], name: &[u8]| {
        h.client_sends(
            encode::bind_no_params(portal, name),
            Some(Sent::Bind {
                portal: portal.to_vec(),
                stmt: name.to_vec(),
            }),
        )
    };
    let describe_s = |h: &mut Harness, name: &[u8]| {
        h.client_sends(
            encode::describe(Target::Statement(name)),
            Some(Sent::DescribeS {
                name: name.to_vec(),
                got_params: false,
            }),
        )
    };
    let describe_p = |h: &mut Harness, portal: &[u8]| {
        h.client_sends(
            encode::describe(Target::Portal(portal)),
            Some(Sent::DescribeP(portal.to_vec())),
        )
    };
    let execute = |h: &mut Harness, portal: &[u8]| {
        h.client_sends(
            encode::execute(portal, 0),
            Some(Sent::Execute(portal.to_vec())),
        )
    };
    let sync = |h: &mut Harness| h.client_sends(encode::sync(), Some(Sent::Sync));
    match kind {
        0 => parse(h, name, c.pick(STMT_SQL)),
        1 => bind(h, portal, name),
        2 => describe_s(h, name),
        3 => describe_p(h, portal),
        4 => execute(h, portal),
        5 => sync(h),
        6 => h.client_sends(encode::raw(b'H', &[]), None),
        7 => h.client_sends(
            encode::query(c.pick(QUERY_SQL)),
            Some(Sent::Query { shape: None }),
        ),
        8 => h.client_sends(
            encode::close(Target::Statement(name)),
            Some(Sent::Close(Target::Statement(b""), name.to_vec())),
        ),
        9 => h.client_sends(
            encode::close(Target::Portal(portal)),
            Some(Sent::Close(Target::Portal(b""), portal.to_vec())),
        ),
        10 => {
            // A driver preparing a statement: Parse, Describe S, Sync.
            parse(h, name, c.pick(STMT_SQL));
            describe_s(h, name);
            sync(h);
        }
        11 => {
            // A cached statement reused: Bind, Execute, Sync (the usual stale case).
            bind(h, portal, name);
            if c.u8() % 2 == 0 {
                describe_p(h, portal);
            }
            execute(h, portal);
            sync(h);
        }
        _ => {
            // One-shot unnamed: Parse, Bind, Describe P, Execute, Sync.
            parse(h, b"", c.pick(STMT_SQL));
            bind(h, b"", b"");
            describe_p(h, b"");
            execute(h, b"");
            sync(h);
        }
    }
}

/// The engine target (see the module docs).
pub fn engine(data: &[u8]) {
    let mut c = Choices { data };
    let setup = c.u8();
    let cfg = RelayConfig {
        savepoint_guard: match setup % 3 {
            0 => SavepointGuard::Off,
            1 => SavepointGuard::AfterSchemaChange,
            _ => SavepointGuard::Always,
        },
        holdback_bytes: if setup & 4 != 0 { 64 } else { 1 << 20 },
        replay_bytes: if setup & 8 != 0 { 256 } else { 8 << 20 },
        max_heals: 1 + (setup >> 4) % 3,
        ..RelayConfig::default()
    };
    let mut h = Harness {
        relay: Relay::new(cfg, Naming::Session),
        srv: ServerPrepared::new(100),
        out: Outbox::default(),
        server: Server::new(),
        client: Client::default(),
    };
    h.server.rows = 1 + setup % 2;
    let mut steps = 0;
    while !c.is_empty() && steps < 256 {
        steps += 1;
        match c.u8() % 8 {
            0..=3 => client_step(&mut h, &mut c),
            4 => {
                h.server_reads();
            }
            5 => {
                let n = c.u8() as usize % 4 + 1;
                h.deliver(n);
            }
            6 => {
                let (t, kind) = (c.u8() as usize, c.u8());
                if trace() {
                    eprintln!("migration of t{} ({kind})", t % TABLES);
                }
                h.server.migrate(t, kind);
            }
            _ => h.drain(),
        }
    }
    h.drain();
    h.client_sends(encode::sync(), Some(Sent::Sync));
    h.drain();
    assert!(
        h.client.sent.is_empty(),
        "the client still waits for answers to {:?} ({})",
        h.client.sent,
        h.relay.debug_state()
    );
    assert_eq!(
        h.client.syncs, h.client.readies,
        "one ReadyForQuery per Sync"
    );
    assert!(h.relay.is_quiet(), "not quiet: {}", h.relay.debug_state());
    let _: Bytes = Bytes::new();
}
