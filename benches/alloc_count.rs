//! Does the hot path allocate per message? A counting global allocator around the system one,
//! and the relay engine forwarding 10,000 DataRows in steady state, as the session loop drives
//! it: the bytes of each batch land in a reused read buffer (as a socket read would put them),
//! are split into frames, fed to [`Relay::on_client`] / [`Relay::on_server`], and the outbox is
//! cleared (as after the vectored write).
//!
//! ```text
//! cargo bench --bench alloc_count
//! ```
//!
//! Prints `allocations per forwarded message: X` for the steady state (identity rows), and the
//! same for rows projected onto a contract after `ADD COLUMN`. Results are recorded in
//! `docs/benchmarks.md`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::BytesMut;

use pgheal::config::PoolMode;
use pgheal::heal::relay::Naming;
use pgheal::heal::{Outbox, Relay, RelayConfig};
use pgheal::protocol::backend::{Field, TxStatus};
use pgheal::protocol::frame::split_frame;
use pgheal::protocol::frontend::Target;
use pgheal::protocol::{encode, Frame};
use pgheal::statements::{ServerPrepared, StatementNames};

// ---- the counting allocator -----------------------------------------------------------------

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static REALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        REALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size.saturating_sub(layout.size()) as u64, Relaxed);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Counts {
    allocs: u64,
    reallocs: u64,
    bytes: u64,
}

fn counts() -> Counts {
    Counts {
        allocs: ALLOCS.load(Relaxed),
        reallocs: REALLOCS.load(Relaxed),
        bytes: BYTES.load(Relaxed),
    }
}

// ---- messages -------------------------------------------------------------------------------

mod fixtures;

use fixtures::*;

// ---- the scenario ---------------------------------------------------------------------------

const ROWS_PER_BATCH: usize = 100;
const BATCHES: usize = 100; // 10,000 DataRows

/// A relay between a client and a server, with reused read buffers and outbox.
struct Pipe {
    relay: Relay,
    srv: ServerPrepared,
    out: Outbox,
    client_buf: BytesMut,
    server_buf: BytesMut,
    frames: Vec<Frame>,
}

impl Pipe {
    fn new(pool_mode: PoolMode) -> Pipe {
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
        Pipe {
            relay: Relay::new(RelayConfig::default(), naming),
            srv,
            out: Outbox::default(),
            client_buf: BytesMut::with_capacity(16 * 1024),
            server_buf: BytesMut::with_capacity(16 * 1024),
            frames: Vec::with_capacity(256),
        }
    }

    /// Client bytes, then server bytes: returns (messages relayed, messages to the client).
    fn exchange(&mut self, client: &[u8], server: &[u8]) -> (usize, usize) {
        let mut relayed = 0;
        self.client_buf.extend_from_slice(client);
        while let Some(f) = split_frame(&mut self.client_buf, 1 << 28).expect("client frame") {
            self.frames.push(f);
        }
        for f in self.frames.drain(..) {
            self.relay
                .on_client(f, &mut self.srv, &mut self.out)
                .expect("relay client");
            relayed += 1;
        }
        self.server_buf.extend_from_slice(server);
        while let Some(f) = split_frame(&mut self.server_buf, 1 << 28).expect("server frame") {
            self.frames.push(f);
        }
        for f in self.frames.drain(..) {
            self.relay
                .on_server(f, &mut self.srv, &mut self.out)
                .expect("relay server");
            relayed += 1;
        }
        let to_client = self.out.to_client.len();
        self.out.to_server.clear();
        self.out.to_client.clear();
        self.out.events.clear();
        (relayed, to_client)
    }
}

struct Report {
    relayed: usize,
    to_client: usize,
    before: Counts,
    after: Counts,
}

/// Prepare `s1`, optionally re-describe it with a wider shape, warm up, then count.
fn run(pool_mode: PoolMode, server_shape: Option<Vec<Field>>, row_columns: usize) -> Report {
    let mut pipe = Pipe::new(pool_mode);
    pipe.exchange(
        &wire(&[
            encode::parse("s1", "SELECT * FROM orders WHERE id = $1", &[INT4]),
            encode::sync(),
        ]),
        &wire(&[
            encode::parse_complete(),
            parameter_description(&[INT4]),
            encode::row_description(&contract()),
            encode::ready_for_query(TxStatus::Idle),
        ]),
    );
    if let Some(shape) = &server_shape {
        pipe.exchange(
            &wire(&[encode::describe(Target::Statement(b"s1")), encode::sync()]),
            &wire(&[
                parameter_description(&[INT4]),
                encode::row_description(shape),
                encode::ready_for_query(TxStatus::Idle),
            ]),
        );
    }

    let client = wire(&[bind("s1"), encode::raw(b'E', b"\0\0\0\0\0"), encode::sync()]);
    let row = data_row(row_columns);
    let mut server = vec![encode::raw(b'2', b"")];
    server.extend((0..ROWS_PER_BATCH).map(|_| row.clone()));
    server.push(encode::command_complete(format!("SELECT {ROWS_PER_BATCH}")));
    server.push(encode::ready_for_query(TxStatus::Idle));
    let server = wire(&server);

    // Warm-up: buffers, queues and maps reach their steady-state capacity.
    for _ in 0..3 {
        pipe.exchange(&client, &server);
    }

    let mut relayed = 0;
    let mut to_client = 0;
    let before = counts();
    for _ in 0..BATCHES {
        let (r, c) = pipe.exchange(&client, &server);
        relayed += r;
        to_client += c;
    }
    let after = counts();
    Report {
        relayed,
        to_client,
        before,
        after,
    }
}

fn print(title: &str, r: &Report) {
    let allocs = r.after.allocs - r.before.allocs;
    let reallocs = r.after.reallocs - r.before.reallocs;
    let bytes = r.after.bytes - r.before.bytes;
    let rows = (BATCHES * ROWS_PER_BATCH) as f64;
    println!("{title}");
    println!(
        "  {BATCHES} batches of Bind/Execute/Sync -> BindComplete, {ROWS_PER_BATCH} DataRow, CommandComplete, ReadyForQuery"
    );
    println!(
        "  messages relayed: {} ({} DataRows), parts written to the client: {}",
        r.relayed,
        BATCHES * ROWS_PER_BATCH,
        r.to_client
    );
    println!("  allocations: {allocs} (+ {reallocs} reallocations), {bytes} bytes");
    println!(
        "  allocations per forwarded message: {:.4}",
        allocs as f64 / r.relayed as f64
    );
    println!(
        "  allocations per DataRow: {:.4}, per batch: {:.2}",
        allocs as f64 / rows,
        allocs as f64 / BATCHES as f64
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, which is fine.
    let relayed = BATCHES * (3 + ROWS_PER_BATCH + 3);
    let identity = run(PoolMode::Session, None, 5);
    assert_eq!(identity.relayed, relayed);
    assert_eq!(identity.to_client, BATCHES * (ROWS_PER_BATCH + 3));
    print(
        "session pooling, steady state, rows forwarded untouched (contract = server shape):",
        &identity,
    );

    let pooled = run(PoolMode::Transaction, None, 5);
    assert_eq!(pooled.relayed, relayed);
    assert_eq!(pooled.to_client, BATCHES * (ROWS_PER_BATCH + 3));
    print(
        "transaction pooling (pool-wide statement names), steady state, rows untouched:",
        &pooled,
    );

    let mut shape = contract();
    shape.push(field("discount_code", 6, TEXT));
    let projected = run(PoolMode::Session, Some(shape), 6);
    assert_eq!(projected.relayed, relayed);
    // Each projected row is a 7-byte header plus one slice of the original row.
    assert_eq!(projected.to_client, BATCHES * (2 * ROWS_PER_BATCH + 3));
    print(
        "session pooling after ADD COLUMN, rows projected from 6 columns onto the 5-column contract:",
        &projected,
    );
}
