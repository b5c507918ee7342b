//! The accounting of one pool: what the admin console's `SHOW POOLS`, `SHOW STATS` and
//! `SHOW SERVERS` read, and what per-pool metrics and limits are to read too, so that every
//! view of a pool counts the same things the same way.
//!
//! Two kinds of figures, kept apart because they are written at different rates:
//! - gauges (clients logged in and waiting, server connections by state) and counters
//!   ([`Totals`]: transactions, queries, bytes, times — PgBouncer's `SHOW STATS` columns) are
//!   atomics, written by sessions on their own event loops without a lock;
//! - one [`ServerTrack`] per open server connection, shared by the connection and the pool's
//!   list of them: its state and link change with atomics; the list changes (under a mutex)
//!   only when a connection opens or closes.
//!
//! Three fixed-bucket histograms (query and transaction durations, client wait) are kept the
//! same way, one atomic per bucket ([`Buckets`]), observed where the matching counter is
//! added; their sums and counts are the totals above, so the Prometheus histograms and
//! `SHOW STATS` can never disagree. The metrics endpoint reads them at scrape time
//! (`crate::metrics::pools`).
//!
//! Averages are PgBouncer's: per second (or per transaction/query for times) over the last
//! `stats_period`, from two snapshots of the totals the maintenance task rotates
//! ([`PoolStats::rotate`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Counters of one pool since start, as PgBouncer's `SHOW STATS_TOTALS` names them. Times
/// are microseconds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub server_assignment_count: u64,
    pub xact_count: u64,
    pub query_count: u64,
    /// Bytes received from clients.
    pub client_bytes: u64,
    /// Bytes received from servers (sent on to clients).
    pub server_bytes: u64,
    pub xact_time: u64,
    pub query_time: u64,
    pub wait_time: u64,
    pub client_parse_count: u64,
    pub server_parse_count: u64,
    pub bind_count: u64,
    pub client_login_count: u64,
}

impl Totals {
    /// Field-wise sum (a database's pools, or every pool).
    pub fn add(&mut self, o: &Totals) {
        self.server_assignment_count += o.server_assignment_count;
        self.xact_count += o.xact_count;
        self.query_count += o.query_count;
        self.client_bytes += o.client_bytes;
        self.server_bytes += o.server_bytes;
        self.xact_time += o.xact_time;
        self.query_time += o.query_time;
        self.wait_time += o.wait_time;
        self.client_parse_count += o.client_parse_count;
        self.server_parse_count += o.server_parse_count;
        self.bind_count += o.bind_count;
        self.client_login_count += o.client_login_count;
    }

    /// PgBouncer's averages between `older` and `self`, `over` apart: counts and bytes per
    /// second; transaction and query times per transaction and query; wait time per server
    /// assignment.
    pub fn averages(&self, older: &Totals, over: Duration) -> Totals {
        let us = over.as_micros() as u64;
        if us == 0 {
            return Totals::default();
        }
        let per_sec = |now: u64, then: u64| now.saturating_sub(then) * 1_000_000 / us;
        let per = |t_now: u64, t_then: u64, n_now: u64, n_then: u64| {
            t_now
                .saturating_sub(t_then)
                .checked_div(n_now.saturating_sub(n_then))
                .unwrap_or(0)
        };
        Totals {
            server_assignment_count: per_sec(
                self.server_assignment_count,
                older.server_assignment_count,
            ),
            xact_count: per_sec(self.xact_count, older.xact_count),
            query_count: per_sec(self.query_count, older.query_count),
            client_bytes: per_sec(self.client_bytes, older.client_bytes),
            server_bytes: per_sec(self.server_bytes, older.server_bytes),
            xact_time: per(
                self.xact_time,
                older.xact_time,
                self.xact_count,
                older.xact_count,
            ),
            query_time: per(
                self.query_time,
                older.query_time,
                self.query_count,
                older.query_count,
            ),
            wait_time: per(
                self.wait_time,
                older.wait_time,
                self.server_assignment_count,
                older.server_assignment_count,
            ),
            client_parse_count: per_sec(self.client_parse_count, older.client_parse_count),
            server_parse_count: per_sec(self.server_parse_count, older.server_parse_count),
            bind_count: per_sec(self.bind_count, older.bind_count),
            client_login_count: per_sec(self.client_login_count, older.client_login_count),
        }
    }
}

/// What a session reports at the end of a query or transaction, added to the pool at once.
#[derive(Debug, Default, Clone, Copy)]
pub struct Activity {
    pub queries: u64,
    pub query_time: Duration,
    pub transactions: u64,
    pub xact_time: Duration,
    pub client_bytes: u64,
    pub server_bytes: u64,
    pub client_parses: u64,
    pub binds: u64,
}

impl Activity {
    pub fn is_empty(&self) -> bool {
        self.queries == 0
            && self.transactions == 0
            && self.client_bytes == 0
            && self.server_bytes == 0
    }
}

/// Two snapshots of the totals, for averages over the last period.
#[derive(Debug)]
struct Periods {
    older: (Instant, Totals),
    newer: (Instant, Totals),
}

/// The live figures of one pool.
#[derive(Debug)]
pub struct PoolStats {
    server_assignment_count: AtomicU64,
    xact_count: AtomicU64,
    query_count: AtomicU64,
    client_bytes: AtomicU64,
    server_bytes: AtomicU64,
    xact_time: AtomicU64,
    query_time: AtomicU64,
    wait_time: AtomicU64,
    client_parse_count: AtomicU64,
    server_parse_count: AtomicU64,
    bind_count: AtomicU64,
    client_login_count: AtomicU64,
    /// Clients given a connection of the reserve pool (`reserve_pool_timeout`).
    reserve_used: AtomicU64,
    /// Clients logged in to this pool (waiting ones included).
    clients: AtomicI64,
    /// Clients waiting for a server connection.
    waiting: AtomicI64,
    /// Server connections being opened.
    logging_in: AtomicI64,
    /// Server connections checked out by a client.
    active: AtomicI64,
    /// Server connections given back and being reset before they are idle.
    resetting: AtomicI64,
    /// Idle server connections running `server_check_query` (`sv_tested`).
    testing: AtomicI64,
    /// `server_check_query` runs, and those that failed.
    checks: AtomicU64,
    check_failures: AtomicU64,
    periods: Mutex<Periods>,
    /// Query durations.
    pub query_hist: Buckets,
    /// Transaction durations.
    pub xact_hist: Buckets,
    /// Waits for a server connection (one per server assignment).
    pub wait_hist: Buckets,
    /// Binds bracketed by the savepoint guard.
    savepoint_guards: AtomicU64,
    /// Stale plans healed behind the savepoint guard.
    savepoint_guard_heals: AtomicU64,
}

/// Upper bounds of the histogram buckets, in microseconds (100 µs to one minute); a last,
/// unbounded bucket takes the rest.
pub const BUCKET_BOUNDS_US: [u64; 13] = [
    100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000, 10_000_000,
    30_000_000, 60_000_000,
];

/// A histogram's counts, one per bucket of [`BUCKET_BOUNDS_US`] plus the unbounded one (not
/// cumulative; the exporter adds them up).
#[derive(Debug, Default)]
pub struct Buckets([AtomicU64; BUCKET_BOUNDS_US.len() + 1]);

impl Buckets {
    /// `n` observations of `us` microseconds each.
    pub fn observe(&self, us: u64, n: u64) {
        let i = BUCKET_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BUCKET_BOUNDS_US.len());
        self.0[i].fetch_add(n, Relaxed);
    }

    /// The count of each bucket, not cumulative.
    pub fn counts(&self) -> [u64; BUCKET_BOUNDS_US.len() + 1] {
        std::array::from_fn(|i| self.0[i].load(Relaxed))
    }
}

impl Default for PoolStats {
    fn default() -> Self {
        let now = Instant::now();
        PoolStats {
            server_assignment_count: AtomicU64::new(0),
            xact_count: AtomicU64::new(0),
            query_count: AtomicU64::new(0),
            client_bytes: AtomicU64::new(0),
            server_bytes: AtomicU64::new(0),
            xact_time: AtomicU64::new(0),
            query_time: AtomicU64::new(0),
            wait_time: AtomicU64::new(0),
            client_parse_count: AtomicU64::new(0),
            server_parse_count: AtomicU64::new(0),
            bind_count: AtomicU64::new(0),
            client_login_count: AtomicU64::new(0),
            reserve_used: AtomicU64::new(0),
            clients: AtomicI64::new(0),
            waiting: AtomicI64::new(0),
            logging_in: AtomicI64::new(0),
            active: AtomicI64::new(0),
            resetting: AtomicI64::new(0),
            testing: AtomicI64::new(0),
            checks: AtomicU64::new(0),
            check_failures: AtomicU64::new(0),
            // PgBouncer starts with the older stamp one second back.
            periods: Mutex::new(Periods {
                older: (now - Duration::from_secs(1), Totals::default()),
                newer: (now, Totals::default()),
            }),
            query_hist: Buckets::default(),
            xact_hist: Buckets::default(),
            wait_hist: Buckets::default(),
            savepoint_guards: AtomicU64::new(0),
            savepoint_guard_heals: AtomicU64::new(0),
        }
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// A gauge of the pool held up while the guard lives.
pub struct GaugeGuard<'a>(&'a AtomicI64);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// One client counted in its pool while it lives (a session keeps it for its whole life).
pub struct ClientCount(Arc<PoolStats>);

impl Drop for ClientCount {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Relaxed);
    }
}

impl PoolStats {
    pub fn totals(&self) -> Totals {
        Totals {
            server_assignment_count: self.server_assignment_count.load(Relaxed),
            xact_count: self.xact_count.load(Relaxed),
            query_count: self.query_count.load(Relaxed),
            client_bytes: self.client_bytes.load(Relaxed),
            server_bytes: self.server_bytes.load(Relaxed),
            xact_time: self.xact_time.load(Relaxed),
            query_time: self.query_time.load(Relaxed),
            wait_time: self.wait_time.load(Relaxed),
            client_parse_count: self.client_parse_count.load(Relaxed),
            server_parse_count: self.server_parse_count.load(Relaxed),
            bind_count: self.bind_count.load(Relaxed),
            client_login_count: self.client_login_count.load(Relaxed),
        }
    }

    /// The totals at the start of the last complete period and how long ago that was (the
    /// base of [`Totals::averages`]).
    pub fn older(&self) -> (Totals, Duration) {
        match self.periods.lock() {
            Ok(p) => (p.older.1, p.older.0.elapsed()),
            Err(_) => (Totals::default(), Duration::ZERO),
        }
    }

    /// Start a new period (every `stats_period`).
    pub fn rotate(&self) {
        let now = (Instant::now(), self.totals());
        if let Ok(mut p) = self.periods.lock() {
            p.older = std::mem::replace(&mut p.newer, now);
        }
    }

    /// A client got a server connection after waiting `wait`.
    pub fn assigned(&self, wait: Duration) {
        self.server_assignment_count.fetch_add(1, Relaxed);
        self.wait_time.fetch_add(micros(wait), Relaxed);
        self.wait_hist.observe(micros(wait), 1);
    }

    /// A client was given a connection of the reserve pool.
    pub fn reserve_used(&self) {
        self.reserve_used.fetch_add(1, Relaxed);
    }

    /// How many times the reserve pool was used.
    pub fn reserve_used_count(&self) -> u64 {
        self.reserve_used.load(Relaxed)
    }

    pub fn login(&self) {
        self.client_login_count.fetch_add(1, Relaxed);
    }

    /// A session's queries, transactions and traffic since its last report.
    pub fn record(&self, a: &Activity) {
        if a.queries > 0 {
            self.query_count.fetch_add(a.queries, Relaxed);
            self.query_time.fetch_add(micros(a.query_time), Relaxed);
            // Sessions report each query on its own; a report of several counts their mean.
            self.query_hist
                .observe(micros(a.query_time) / a.queries, a.queries);
        }
        if a.transactions > 0 {
            self.xact_count.fetch_add(a.transactions, Relaxed);
            self.xact_time.fetch_add(micros(a.xact_time), Relaxed);
            self.xact_hist
                .observe(micros(a.xact_time) / a.transactions, a.transactions);
        }
        if a.client_bytes > 0 {
            self.client_bytes.fetch_add(a.client_bytes, Relaxed);
        }
        if a.server_bytes > 0 {
            self.server_bytes.fetch_add(a.server_bytes, Relaxed);
        }
        if a.client_parses > 0 {
            self.client_parse_count.fetch_add(a.client_parses, Relaxed);
        }
        if a.binds > 0 {
            self.bind_count.fetch_add(a.binds, Relaxed);
        }
    }

    /// Binds bracketed by the savepoint guard, and stale plans healed behind it.
    pub fn guarded(&self, guards: u64, heals: u64) {
        self.savepoint_guards.fetch_add(guards, Relaxed);
        self.savepoint_guard_heals.fetch_add(heals, Relaxed);
    }

    /// What [`Self::guarded`] added up: (guarded Binds, heals behind the guard).
    pub fn guard_counts(&self) -> (u64, u64) {
        (
            self.savepoint_guards.load(Relaxed),
            self.savepoint_guard_heals.load(Relaxed),
        )
    }

    /// A statement was prepared on one of the pool's server connections by pgheal.
    pub fn server_parse(&self) {
        self.server_parse_count.fetch_add(1, Relaxed);
    }

    /// A client of this pool, counted while the returned value lives.
    pub fn client(self: &Arc<Self>) -> ClientCount {
        self.clients.fetch_add(1, Relaxed);
        ClientCount(self.clone())
    }

    /// A client waiting for a server connection, while the guard lives.
    pub fn waiter(&self) -> GaugeGuard<'_> {
        self.waiting.fetch_add(1, Relaxed);
        GaugeGuard(&self.waiting)
    }

    /// A server connection being opened, while the guard lives.
    pub fn connecting(&self) -> GaugeGuard<'_> {
        self.logging_in.fetch_add(1, Relaxed);
        GaugeGuard(&self.logging_in)
    }

    pub(super) fn checked_out(&self) {
        self.active.fetch_add(1, Relaxed);
    }

    pub(super) fn given_back(&self) {
        self.active.fetch_sub(1, Relaxed);
    }

    /// A connection being reset, while the guard lives.
    pub(super) fn resetting(&self) -> GaugeGuard<'_> {
        self.resetting.fetch_add(1, Relaxed);
        GaugeGuard(&self.resetting)
    }

    /// A connection running `server_check_query`, while the guard lives.
    pub(super) fn testing(&self) -> GaugeGuard<'_> {
        self.testing.fetch_add(1, Relaxed);
        GaugeGuard(&self.testing)
    }

    /// A `server_check_query` ran; `ok`: it passed.
    pub(super) fn checked(&self, ok: bool) {
        self.checks.fetch_add(1, Relaxed);
        if !ok {
            self.check_failures.fetch_add(1, Relaxed);
        }
    }

    /// `sv_tested`.
    pub fn testing_count(&self) -> usize {
        self.testing.load(Relaxed).max(0) as usize
    }

    /// `server_check_query` runs so far, and how many failed.
    pub fn check_counts(&self) -> (u64, u64) {
        (self.checks.load(Relaxed), self.check_failures.load(Relaxed))
    }

    /// Clients logged in (`cl_active` + `cl_waiting`).
    pub fn clients(&self) -> usize {
        self.clients.load(Relaxed).max(0) as usize
    }

    /// `cl_waiting`.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Relaxed).max(0) as usize
    }

    /// `sv_login`.
    pub fn logging_in(&self) -> usize {
        self.logging_in.load(Relaxed).max(0) as usize
    }

    /// `sv_active`.
    pub fn active(&self) -> usize {
        self.active.load(Relaxed).max(0) as usize
    }

    /// `sv_used`: connections given back and being reset (PgBouncer's "used" connections
    /// wait for a check before reuse; pgheal's wait for their reset).
    pub fn resetting_count(&self) -> usize {
        self.resetting.load(Relaxed).max(0) as usize
    }
}

/// What a server connection is doing, as `SHOW SERVERS` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ServerState {
    /// Logging in.
    New = 0,
    /// Linked to a client.
    Active = 1,
    /// In the pool, ready.
    Idle = 2,
    /// Given back, being reset.
    Used = 3,
    /// Idle, running `server_check_query` before a client gets it.
    Tested = 4,
}

impl ServerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerState::New => "new",
            ServerState::Active => "active",
            ServerState::Idle => "idle",
            ServerState::Used => "used",
            ServerState::Tested => "tested",
        }
    }

    fn from_u8(v: u8) -> ServerState {
        match v {
            1 => ServerState::Active,
            2 => ServerState::Idle,
            3 => ServerState::Used,
            4 => ServerState::Tested,
            _ => ServerState::New,
        }
    }
}

/// One open server connection as the admin console lists it. Shared by the connection and its
/// pool's list; everything that changes is an atomic.
#[derive(Debug)]
pub struct ServerTrack {
    pub id: u64,
    pub addr: SocketAddr,
    pub local_addr: Option<SocketAddr>,
    pub backend_pid: i32,
    /// `TLSv1.3/TLS_AES_256_GCM_SHA384` or empty.
    pub tls: String,
    pub connect_time: SystemTime,
    /// The `RECONNECT` generation of its database when it was opened.
    pub generation: u64,
    state: AtomicU8,
    /// The id of the client it serves, 0 for none.
    link: AtomicU64,
    /// Microseconds since the epoch of the last checkout.
    request_time: AtomicU64,
    prepared: AtomicUsize,
}

impl ServerTrack {
    pub fn new(
        id: u64,
        addr: SocketAddr,
        local_addr: Option<SocketAddr>,
        backend_pid: i32,
        tls: String,
        generation: u64,
    ) -> Arc<ServerTrack> {
        let now = SystemTime::now();
        Arc::new(ServerTrack {
            id,
            addr,
            local_addr,
            backend_pid,
            tls,
            connect_time: now,
            generation,
            state: AtomicU8::new(ServerState::New as u8),
            link: AtomicU64::new(0),
            request_time: AtomicU64::new(unix_micros(now)),
            prepared: AtomicUsize::new(0),
        })
    }

    pub fn state(&self) -> ServerState {
        ServerState::from_u8(self.state.load(Relaxed))
    }

    pub fn set_state(&self, s: ServerState) {
        self.state.store(s as u8, Relaxed);
        if s == ServerState::Active {
            self.request_time
                .store(unix_micros(SystemTime::now()), Relaxed);
        }
        if s != ServerState::Active {
            self.link.store(0, Relaxed);
        }
    }

    /// The client this connection now serves.
    pub fn link_to(&self, client_id: u64) {
        self.link.store(client_id, Relaxed);
    }

    pub fn link(&self) -> Option<u64> {
        match self.link.load(Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    pub fn request_time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(self.request_time.load(Relaxed))
    }

    pub fn set_prepared(&self, n: usize) {
        self.prepared.store(n, Relaxed);
    }

    pub fn prepared(&self) -> usize {
        self.prepared.load(Relaxed)
    }
}

pub fn unix_micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(micros)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_follow_pgbouncers_definitions() {
        let older = Totals {
            xact_count: 100,
            xact_time: 10_000,
            query_count: 200,
            query_time: 30_000,
            server_assignment_count: 50,
            wait_time: 5_000,
            client_bytes: 1_000,
            ..Totals::default()
        };
        let now = Totals {
            xact_count: 300,
            xact_time: 50_000,
            query_count: 600,
            query_time: 110_000,
            server_assignment_count: 150,
            wait_time: 25_000,
            client_bytes: 21_000,
            ..Totals::default()
        };
        let avg = now.averages(&older, Duration::from_secs(10));
        assert_eq!(avg.xact_count, 20, "transactions per second");
        assert_eq!(avg.query_count, 40);
        assert_eq!(avg.xact_time, 200, "microseconds per transaction");
        assert_eq!(avg.query_time, 200);
        assert_eq!(avg.wait_time, 200, "microseconds per assignment");
        assert_eq!(avg.client_bytes, 2_000, "bytes per second");
        assert_eq!(now.averages(&now, Duration::from_secs(10)).xact_time, 0);
        assert_eq!(now.averages(&older, Duration::ZERO), Totals::default());
    }

    #[test]
    fn gauges_fall_back_when_guards_drop() {
        let s = Arc::new(PoolStats::default());
        {
            let _c = s.client();
            let _w = s.waiter();
            assert_eq!((s.clients(), s.waiting()), (1, 1));
        }
        assert_eq!((s.clients(), s.waiting()), (0, 0));
        s.record(&Activity {
            queries: 2,
            query_time: Duration::from_micros(30),
            transactions: 1,
            xact_time: Duration::from_micros(40),
            ..Activity::default()
        });
        let t = s.totals();
        assert_eq!(
            (t.query_count, t.query_time, t.xact_count, t.xact_time),
            (2, 30, 1, 40)
        );
        // Two queries of 15 µs on average, one transaction of 40 µs: the first bucket.
        assert_eq!(s.query_hist.counts()[0], 2);
        assert_eq!(s.xact_hist.counts()[0], 1);
    }

    #[test]
    fn buckets_take_each_value_in_the_first_bound_not_below_it() {
        let b = Buckets::default();
        b.observe(100, 1);
        b.observe(101, 2);
        b.observe(60_000_000, 1);
        b.observe(u64::MAX, 3);
        let c = b.counts();
        assert_eq!((c[0], c[1]), (1, 2));
        assert_eq!(c[BUCKET_BOUNDS_US.len() - 1], 1);
        assert_eq!(c[BUCKET_BOUNDS_US.len()], 3);
        assert_eq!(c.iter().sum::<u64>(), 7);
    }
}
