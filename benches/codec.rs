//! Micro benchmarks of the hot path: framing, the relay engine forwarding a result set, and the
//! cost of projecting rows onto a statement's contract after a migration.
//!
//! ```text
//! cargo bench --bench codec                      # full run
//! cargo bench --bench codec -- --quick           # a quick look
//! cargo bench --bench codec -- relay             # one group
//! ```
//!
//! Results are recorded in `docs/benchmarks.md`. `benches/alloc_count.rs` counts the
//! allocations of the same relay scenario.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, BatchSize, Criterion, Throughput};

use pgheal::config::PoolMode;
use pgheal::heal::relay::Naming;
use pgheal::heal::{Outbox, Relay, RelayConfig};
use pgheal::protocol::backend::{Field, TxStatus};
use pgheal::protocol::frame::split_frame;
use pgheal::protocol::frontend::Target;
use pgheal::protocol::{encode, Frame};
use pgheal::statements::{Projection, ServerPrepared, StatementNames};

mod fixtures;

use fixtures::*;

const MAX_LEN: usize = 256 << 20;
// ---- the relay scenario -------------------------------------------------------------------

/// One cached-statement round trip as drivers send it: Bind/Execute/Sync, answered by
/// BindComplete, `rows` DataRows, CommandComplete and ReadyForQuery.
struct Batch {
    client: Vec<Frame>,
    server: Vec<Frame>,
}

impl Batch {
    fn new(rows: usize, row_columns: usize) -> Batch {
        let mut server = vec![encode::raw(b'2', b"")];
        let row = data_row(row_columns);
        server.extend((0..rows).map(|_| row.clone()));
        server.push(encode::command_complete(format!("SELECT {rows}")));
        server.push(encode::ready_for_query(TxStatus::Idle));
        Batch {
            client: vec![bind("s1"), execute(), encode::sync()],
            server,
        }
    }

    fn messages(&self) -> u64 {
        (self.client.len() + self.server.len()) as u64
    }

    /// Relay the batch once. Returns the number of parts written to the client.
    fn run(&self, side: &mut Engine) -> usize {
        side.exchange(&self.client, &self.server)
    }
}

/// The relay engine with the prepared-statement state of its server connection, and a reused
/// outbox (cleared after each exchange, as the session loop does after writing it).
struct Engine {
    relay: Relay,
    srv: ServerPrepared,
    out: Outbox,
}

impl Engine {
    fn new(pool_mode: PoolMode) -> Engine {
        let (naming, srv) = match pool_mode {
            PoolMode::Session => (Naming::Session, ServerPrepared::new(usize::MAX)),
            PoolMode::Transaction | PoolMode::Statement => (
                Naming::Pooled {
                    names: Arc::new(StatementNames::default()),
                    search_path: None,
                },
                ServerPrepared::new(200),
            ),
        };
        Engine {
            relay: Relay::new(RelayConfig::default(), naming),
            srv,
            out: Outbox::default(),
        }
    }

    /// Client messages, then server messages. Returns the number of parts written to the client.
    fn exchange(&mut self, client: &[Frame], server: &[Frame]) -> usize {
        for f in client {
            self.relay
                .on_client(f.clone(), &mut self.srv, &mut self.out)
                .expect("client frame");
        }
        for f in server {
            self.relay
                .on_server(f.clone(), &mut self.srv, &mut self.out)
                .expect("server frame");
        }
        let n = self.out.to_client.len();
        self.out.to_server.clear();
        self.out.to_client.clear();
        self.out.events.clear();
        n
    }
}

/// An engine on which the client prepared `s1` (Parse + Sync; pgheal adds a Describe, whose
/// RowDescription becomes the contract). With `server_shape`, the client later described the
/// statement again and the server answered with that shape (as after a re-prepare following
/// `ADD COLUMN`): rows are then projected onto the contract.
fn prepared_engine(pool_mode: PoolMode, server_shape: Option<&[Field]>) -> Engine {
    let mut e = Engine::new(pool_mode);
    e.exchange(
        &[
            encode::parse("s1", "SELECT * FROM orders WHERE id = $1", &[INT4]),
            encode::sync(),
        ],
        &[
            encode::parse_complete(),
            parameter_description(&[INT4]),
            encode::row_description(&contract()),
            encode::ready_for_query(TxStatus::Idle),
        ],
    );
    if let Some(shape) = server_shape {
        e.exchange(
            &[encode::describe(Target::Statement(b"s1")), encode::sync()],
            &[
                parameter_description(&[INT4]),
                encode::row_description(shape),
                encode::ready_for_query(TxStatus::Idle),
            ],
        );
    }
    e
}

// ---- benchmarks ---------------------------------------------------------------------------

/// (a) Framing: split 1000 DataRows of ~100 bytes off a read buffer.
fn framing(c: &mut Criterion) {
    let row = data_row(6);
    let mut src = BytesMut::new();
    for _ in 0..1000 {
        src.put_slice(&row.bytes);
    }
    let src: Bytes = src.freeze();
    let mut g = c.benchmark_group("framing");
    g.throughput(Throughput::Bytes(src.len() as u64));
    g.bench_function(
        format!("split_frame/1000_datarows_of_{}B", row.len()),
        |b| {
            b.iter_batched(
                || BytesMut::from(&src[..]),
                |mut buf| {
                    let mut n = 0usize;
                    while let Some(frame) = split_frame(&mut buf, MAX_LEN).expect("valid frames") {
                        black_box(&frame);
                        n += 1;
                    }
                    assert_eq!(n, 1000);
                    buf
                },
                BatchSize::SmallInput,
            )
        },
    );
    g.finish();
}

/// (b) The relay engine forwarding Bind/Execute/Sync and its 103 responses (100 DataRows), in
/// both pool modes, and with rows projected onto the contract after `ADD COLUMN`.
fn relay(c: &mut Criterion) {
    let mut g = c.benchmark_group("relay");

    let batch = Batch::new(100, 5);
    g.throughput(Throughput::Elements(batch.messages()));
    for (mode, label) in [
        (PoolMode::Session, "session"),
        (PoolMode::Transaction, "transaction"),
    ] {
        let mut engine = prepared_engine(mode, None);
        // BindComplete, 100 DataRows, CommandComplete, ReadyForQuery.
        assert_eq!(batch.run(&mut engine), 103, "{label}: identity");
        g.bench_function(
            format!("bind_execute_sync_100_rows/identity/{label}"),
            |b| b.iter(|| black_box(batch.run(&mut engine))),
        );
    }

    // After ADD COLUMN: the server sends 6 columns, the client gets its 5.
    let batch = Batch::new(100, 6);
    let shape = shape_after_add_column();
    let mut engine = prepared_engine(PoolMode::Session, Some(&shape));
    // 1 + 100 * (header + one merged slice) + 2.
    assert_eq!(batch.run(&mut engine), 203, "projected rows");
    g.bench_function("bind_execute_sync_100_rows/projected_5_of_6/session", |b| {
        b.iter(|| black_box(batch.run(&mut engine)))
    });
    g.finish();
}

/// (c) Projection: computing it once per re-prepare, then its cost per DataRow.
fn projection(c: &mut Criterion) {
    let contract5 = contract();
    let shape6 = shape_after_add_column();
    let mut g = c.benchmark_group("projection");
    g.bench_function("compute/contract_5_on_shape_6", |b| {
        b.iter(|| Projection::compute(black_box(&contract5), black_box(&shape6)))
    });

    let row6 = data_row(6);
    let mut scratch = Vec::new();
    let mut parts: Vec<Bytes> = Vec::with_capacity(8);
    g.throughput(Throughput::Elements(1));

    let select = Projection::compute(&contract5, &shape6).expect("projectable");
    assert!(!select.is_identity());
    g.bench_function("project_row/5_of_6_per_row", |b| {
        b.iter(|| {
            parts.clear();
            select
                .project_row(black_box(&row6), &mut scratch, &mut parts)
                .expect("valid row");
            black_box(parts.len())
        })
    });

    // The new column in the middle (e.g. a view recreated with an extra column): two slices.
    let mut middle = contract5.clone();
    middle.insert(2, field("discount_code", 6, TEXT));
    let split = Projection::compute(&contract5, &middle).expect("projectable");
    g.bench_function("project_row/5_of_6_middle_per_row", |b| {
        b.iter(|| {
            parts.clear();
            split
                .project_row(black_box(&row6), &mut scratch, &mut parts)
                .expect("valid row");
            black_box(parts.len())
        })
    });

    let identity = Projection::compute(&shape6, &shape6).expect("projectable");
    assert!(identity.is_identity());
    g.bench_function("project_row/identity_per_row", |b| {
        b.iter(|| {
            parts.clear();
            identity
                .project_row(black_box(&row6), &mut scratch, &mut parts)
                .expect("valid row");
            black_box(parts.len())
        })
    });
    g.finish();
}

criterion_group!(benches, framing, relay, projection);

/// `criterion_main!(benches)`, except when run by `cargo test`: the CI command
/// (`cargo test --release --all-targets -- --test-threads=4`) passes libtest options to every
/// target, bench binaries included, and Criterion rejects `--test-threads`. Without `--bench`
/// (which only `cargo bench` passes), every scenario is run once with a token measurement, so
/// its assertions are still checked by the test suite.
fn main() {
    if std::env::args().skip(1).any(|a| a == "--bench") {
        benches();
        Criterion::default().configure_from_args().final_summary();
    } else {
        let mut c = Criterion::default()
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_millis(5))
            .sample_size(10)
            .without_plots()
            // Keep these token numbers away from the `base` baseline that `cargo bench` compares to.
            .save_baseline("cargo-test".into());
        framing(&mut c);
        relay(&mut c);
        projection(&mut c);
    }
}
