//! The session-side timeouts of PgBouncer (`client_idle_timeout`, `query_timeout`,
//! `idle_transaction_timeout`, `transaction_timeout`) in the relay loop.
//!
//! PgBouncer runs a janitor over every client and server once a second. pgheal keeps instead one
//! deadline per session, held by a single `tokio::time::Sleep` allocated the first time a
//! timeout is on, and polled in the relay loop's one `poll_fn` with the sockets: no task, no
//! scan of the client list, and a precision of the timer wheel (a millisecond) instead of a
//! second, which lets tests use half-second values. The hot path stays cheap:
//! - the session's *phase* ([`Phase`]: idle outside a transaction, idle inside one, a query in
//!   flight) is derived after each relay step from the engine's state; only a change of phase
//!   reads the clock;
//! - the Sleep is re-armed only when the new deadline is *earlier* than the armed one. A later
//!   deadline leaves it alone: when it fires early, [`Watch::expired`] finds nothing expired and
//!   re-arms it at the real deadline. So a client running many short queries re-arms the timer
//!   about once per timeout period, not once per query;
//! - with every timeout off (PgBouncer's defaults) nothing is computed but the phase, and the
//!   configuration is checked for a RELOAD only at a change of phase (one atomic load of
//!   [`LiveConfig::generation`]): a reload or the console's `SET` reaches running sessions at
//!   their next query or transaction.
//!
//! Which timeout applies in which phase (PgBouncer's `janitor.c`):
//! - idle outside a transaction: `client_idle_timeout`, from the phase's start (PgBouncer:
//!   the client's last request). PgBouncer applies it only to clients without a server link,
//!   i.e. never after the first query in session pooling; pgheal applies it in session pooling
//!   too (a client there holds its server connection from the login on), and gives the server
//!   connection, which is at rest, back to the pool;
//! - idle inside a transaction: `idle_transaction_timeout`, from the last ReadyForQuery;
//! - a query in flight: `query_timeout`, from the query's first message. A query still
//!   waiting for a server connection (transaction pooling) is bounded by the same value in
//!   `Conversation::attach`, which does not return to the loop while it waits
//!   ([`Timeout::QueryWait`]);
//! - in a transaction (idle or not) and during any query: `transaction_timeout`, from the
//!   transaction's first message.
//!
//! What happens when one fires is [`crate::session::relay_loop::Conversation::finish`]'s job:
//! the client gets PgBouncer's `FATAL 08P01` with PgBouncer's reason (see [`Timeout`]) and is
//! closed; a server connection in a transaction is closed (PostgreSQL rolls the transaction
//! back), one with a query in flight is first sent a cancel request (a backend blocked in a
//! long query does not notice a closed socket), as PgBouncer closes it; the connection is never
//! reused.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use crate::config::live::LiveConfig;
use crate::config::timeouts::{self, Timeouts};

/// A timeout that closed a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timeout {
    ClientIdle,
    Query,
    /// `query_timeout` passed while the query waited for a server connection (PgBouncer's
    /// `janitor.c` says `query_timeout` there, `query timeout` for a running query).
    QueryWait,
    IdleTransaction,
    Transaction,
}

impl Timeout {
    /// What the client is told and the operator log says ("closing because: ..."): PgBouncer's
    /// words.
    pub fn reason(self) -> &'static str {
        match self {
            Timeout::ClientIdle => "client_idle_timeout",
            Timeout::Query => "query timeout",
            Timeout::QueryWait => "query_timeout",
            Timeout::IdleTransaction => "idle transaction timeout",
            Timeout::Transaction => "transaction timeout",
        }
    }

    /// The `timeout` label of `pgheal_timeouts_total`: the configuration key.
    pub fn key(self) -> &'static str {
        match self {
            Timeout::ClientIdle => "client_idle_timeout",
            Timeout::Query | Timeout::QueryWait => "query_timeout",
            Timeout::IdleTransaction => "idle_transaction_timeout",
            Timeout::Transaction => "transaction_timeout",
        }
    }
}

impl std::fmt::Display for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

/// Where the session stands, as far as timeouts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Nothing in flight, no transaction open: the client may send its next query.
    Idle,
    /// Nothing in flight, a transaction open: the server waits for the client.
    IdleInTransaction,
    /// A query (or a pipeline of them) is being answered.
    InFlight,
}

/// Whose timeouts a session has: the client's user and its pool's server user (see
/// [`timeouts::for_session`]). Passed in at each change of phase rather than kept: the session
/// has both names already (issue 14: memory per idle client).
#[derive(Debug, Clone, Copy)]
pub struct Users<'a> {
    pub client: &'a str,
    pub server: &'a str,
}

impl Users<'_> {
    fn timeouts(&self, live: &LiveConfig) -> Timeouts {
        timeouts::for_session(&live.current(), self.client, self.server)
    }
}

/// One session's timeouts and its timer.
pub struct Watch {
    /// Where the timeouts come from (`None`: fixed, for unit tests).
    live: Option<Arc<LiveConfig>>,
    generation: u64,
    timeouts: Timeouts,
    phase: Phase,
    /// When the current phase began.
    phase_since: Instant,
    /// When the current transaction began (`None` in [`Phase::Idle`]).
    xact_since: Option<Instant>,
    /// The timer, allocated the first time a timeout is on.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Where the timer is set (`None`: not set).
    armed: Option<Instant>,
}

impl Watch {
    /// A session's watch, from its login on (idle, outside a transaction).
    pub fn new(live: Arc<LiveConfig>, users: Users<'_>) -> Watch {
        let generation = live.generation();
        let timeouts = users.timeouts(&live);
        Watch::start(Some(live), generation, timeouts)
    }

    fn start(live: Option<Arc<LiveConfig>>, generation: u64, timeouts: Timeouts) -> Watch {
        let mut w = Watch {
            live,
            generation,
            timeouts,
            phase: Phase::Idle,
            phase_since: Instant::now(),
            xact_since: None,
            sleep: None,
            armed: None,
        };
        if let Some(d) = w.deadline() {
            w.arm(d);
        }
        w
    }

    /// The timeouts in force for this session.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// After a relay step: note the session's phase, and set the timer if a deadline came
    /// nearer. A change of phase takes up a reloaded configuration, `users`' timeouts in it.
    pub fn step(&mut self, phase: Phase, users: Users<'_>) {
        if phase != self.phase {
            if let Some(live) = &self.live {
                let generation = live.generation();
                if generation != self.generation {
                    self.generation = generation;
                    self.timeouts = users.timeouts(live);
                }
            }
            self.change(phase, Instant::now);
        }
    }

    /// The phase changed; `now` is read only when a timeout is on.
    fn change(&mut self, phase: Phase, now: impl FnOnce() -> Instant) {
        let was = self.phase;
        self.phase = phase;
        if !self.timeouts.watches_relay() {
            return;
        }
        let now = now();
        self.phase_since = now;
        match (was, phase) {
            (_, Phase::Idle) => self.xact_since = None,
            (Phase::Idle, _) => self.xact_since = Some(now),
            _ => {
                self.xact_since.get_or_insert(now);
            }
        }
        if let Some(d) = self.deadline() {
            self.arm(d);
        }
    }

    /// The next instant a timeout can fire in the current phase.
    fn deadline(&self) -> Option<Instant> {
        let t = &self.timeouts;
        let after = |since: Instant, d: Option<Duration>| d.map(|d| since + d);
        let xact = self
            .xact_since
            .and_then(|since| after(since, t.transaction_timeout));
        let own = match self.phase {
            Phase::Idle => after(self.phase_since, t.client_idle_timeout),
            Phase::IdleInTransaction => after(self.phase_since, t.idle_transaction_timeout),
            Phase::InFlight => after(self.phase_since, t.query_timeout),
        };
        match (own, xact) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The timeout that has passed at `now`, PgBouncer's order first (query, idle
    /// transaction, transaction).
    fn passed(&self, now: Instant) -> Option<Timeout> {
        let t = &self.timeouts;
        let over = |since: Instant, d: Option<Duration>| d.is_some_and(|d| now >= since + d);
        let own = match self.phase {
            Phase::Idle => {
                over(self.phase_since, t.client_idle_timeout).then_some(Timeout::ClientIdle)
            }
            Phase::IdleInTransaction => over(self.phase_since, t.idle_transaction_timeout)
                .then_some(Timeout::IdleTransaction),
            Phase::InFlight => over(self.phase_since, t.query_timeout).then_some(Timeout::Query),
        };
        own.or_else(|| {
            self.xact_since
                .filter(|&since| over(since, t.transaction_timeout))
                .map(|_| Timeout::Transaction)
        })
    }

    fn arm(&mut self, at: Instant) {
        if self.armed.is_some_and(|a| a <= at) {
            return;
        }
        self.armed = Some(at);
        match &mut self.sleep {
            Some(s) => s.as_mut().reset(at),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Poll the timer (inside the relay loop's `poll_fn`): `Ready` when it fired.
    pub fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.armed.is_none() {
            return Poll::Pending;
        }
        match &mut self.sleep {
            Some(s) => s.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    /// The timer fired: the timeout that passed, if one did; otherwise the timer is set again
    /// at the real deadline (it was set for an earlier one).
    pub fn expired(&mut self) -> Option<Timeout> {
        self.expired_at(Instant::now())
    }

    fn expired_at(&mut self, now: Instant) -> Option<Timeout> {
        self.armed = None;
        if let Some(t) = self.passed(now) {
            return Some(t);
        }
        if let Some(d) = self.deadline() {
            self.arm(d);
        }
        None
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(t: Timeouts) -> Watch {
        Watch::start(None, 0, t)
    }

    fn off() -> Timeouts {
        Timeouts {
            query_wait_notify: None,
            cancel_wait_timeout: None,
            ..Timeouts::default()
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[tokio::test]
    async fn each_phase_has_its_timeout() {
        let mut w = watch(Timeouts {
            client_idle_timeout: Some(secs(10.0)),
            query_timeout: Some(secs(3.0)),
            idle_transaction_timeout: Some(secs(2.0)),
            transaction_timeout: Some(secs(5.0)),
            ..off()
        });
        let t0 = Instant::now();
        w.change(Phase::InFlight, || t0);
        assert_eq!(w.armed, Some(t0 + secs(3.0)));
        // Idle in the transaction from 1 s on: its deadline (3 s) is not earlier.
        w.change(Phase::IdleInTransaction, || t0 + secs(1.0));
        assert_eq!(w.armed, Some(t0 + secs(3.0)));
        w.change(Phase::InFlight, || t0 + secs(2.5));
        // At 3 s: the first query's deadline, which no longer applies; re-armed at the
        // transaction's end (5 s), earlier than the second query's (5.5 s).
        assert_eq!(w.expired_at(t0 + secs(3.0)), None);
        assert_eq!(w.armed, Some(t0 + secs(5.0)));
        assert_eq!(w.expired_at(t0 + secs(5.0)), Some(Timeout::Transaction));
    }

    #[tokio::test]
    async fn query_timeout_wins_over_transaction_timeout() {
        let mut w = watch(Timeouts {
            query_timeout: Some(secs(1.0)),
            transaction_timeout: Some(secs(1.0)),
            ..off()
        });
        let t0 = Instant::now();
        w.change(Phase::InFlight, || t0);
        assert_eq!(w.expired_at(t0 + secs(1.0)), Some(Timeout::Query));
    }

    #[tokio::test]
    async fn idle_client_and_idle_transaction() {
        let mut w = watch(Timeouts {
            client_idle_timeout: Some(secs(10.0)),
            idle_transaction_timeout: Some(secs(2.0)),
            ..off()
        });
        let t0 = Instant::now();
        w.change(Phase::InFlight, || t0);
        w.change(Phase::IdleInTransaction, || t0);
        assert_eq!(w.expired_at(t0 + secs(1.9)), None);
        assert_eq!(w.expired_at(t0 + secs(2.0)), Some(Timeout::IdleTransaction));
        w.change(Phase::Idle, || t0 + secs(3.0));
        assert_eq!(w.expired_at(t0 + secs(12.9)), None);
        assert_eq!(w.expired_at(t0 + secs(13.0)), Some(Timeout::ClientIdle));
    }

    #[tokio::test]
    async fn client_idle_timeout_counts_from_the_login() {
        let w = watch(Timeouts {
            client_idle_timeout: Some(secs(10.0)),
            ..off()
        });
        assert!(w.armed.is_some());
    }

    #[tokio::test]
    async fn nothing_is_armed_when_off() {
        let mut w = watch(off());
        let users = Users {
            client: "app",
            server: "app",
        };
        w.step(Phase::InFlight, users);
        w.step(Phase::Idle, users);
        assert!(w.sleep.is_none());
        assert_eq!(w.expired(), None);
    }
}
