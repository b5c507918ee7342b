//! LISTEN, UNLISTEN and notifications for one transaction-pooling client.
//!
//! A simple query made only of `LISTEN`/`UNLISTEN` statements ([`super::listen_sql`]) never
//! reaches a pooled server connection: pgheal answers it (`LISTEN` / `UNLISTEN` command tags,
//! as PostgreSQL does) and holds the LISTEN on the database's listening connection
//! ([`crate::pool::listen`]). Notifications wait in the client's mailbox and are written to it
//! between its transactions (right after the ReadyForQuery that ends one, or at once while it is
//! idle), in the order the server sent them: like PostgreSQL, which delivers notifications
//! only outside a transaction.
//!
//! Where the client is decides what happens (see [`Position`]):
//! - **Idle**: applied at once. LISTEN is answered only once the listening connection
//!   listens, so a NOTIFY committed after the client saw `LISTEN` complete always reaches it.
//! - **Inside a transaction block**: PostgreSQL applies LISTEN/UNLISTEN when the transaction
//!   commits, and forgets them when it rolls back. pgheal answers at once and keeps the
//!   statements until the block ends: applied when the server says `COMMIT`, dropped when the
//!   block ends any other way (ROLLBACK, a failed COMMIT, PREPARE TRANSACTION). Savepoints
//!   are not followed: a LISTEN rolled back to a savepoint is still applied if the block
//!   commits.
//! - **Anywhere else** (a failed block, or answers still in flight): the query goes to the
//!   server, which answers it exactly (`25P02` in a failed block); should a LISTEN take
//!   effect there, the session-state check of [`super::pin`] keeps the client on that
//!   connection.
//!
//! A client pinned to its connection ([`super::pin`]) may listen on it already (a LISTEN sent
//! through the extended protocol, or inside a longer query): its queries that hold an UNLISTEN
//! go to the server as well, and their UNLISTENs also apply to what pgheal holds for it.
//! `DISCARD ALL` unlistens everything, as in PostgreSQL. Disconnecting unlistens everything.
//!
//! A notification is never dropped while the client stays connected: when the mailbox
//! overflows or the listening connection is lost, the client gets the notifications already
//! queued and is then closed with an error saying why ([`Closing`]).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use crate::metrics::Metrics;
use crate::pool::listen::{next_client_id, ClientId, ListenError, Listener, Listeners};
use crate::pool::mailbox::{Broken, Mailbox, Notification, MAX_QUEUED_BYTES};
use crate::pool::Pool;
use crate::protocol::backend::{self, TxStatus};
use crate::protocol::{encode, sqlstate, Frame};

use super::listen_sql::{self, ListenOp};

/// Where the client stands when a LISTEN or UNLISTEN arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Between transactions, everything answered.
    Idle,
    /// Inside a transaction block that has not failed, everything answered.
    InBlock,
    /// A failed block, or answers in flight: the server must answer.
    Elsewhere,
}

/// Why a listening client is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Its mailbox overflowed ([`MAX_QUEUED_BYTES`]).
    Overflow,
    /// The listening connection was lost.
    ListenerLost,
    /// A LISTEN committed inside a transaction block could not be held.
    ListenFailed,
}

impl Closing {
    /// The `reason` label of `pgheal_listen_clients_closed_total`.
    pub fn label(self) -> &'static str {
        match self {
            Closing::Overflow => "overflow",
            Closing::ListenerLost => "connection_lost",
            Closing::ListenFailed => "listen_failed",
        }
    }

    /// The FATAL error the client gets before pgheal closes it.
    pub fn fatal(self) -> Frame {
        let (code, msg) = match self {
            Closing::Overflow => (
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "pgheal: more than {} MiB of notifications waited for this client; closing \
                     the connection so that none is lost unnoticed",
                    MAX_QUEUED_BYTES >> 20
                ),
            ),
            Closing::ListenerLost => (
                sqlstate::CONNECTION_FAILURE,
                "pgheal lost its listening connection to the server, so notifications may have \
                 been missed: reconnect and LISTEN again"
                    .to_owned(),
            ),
            Closing::ListenFailed => (
                sqlstate::CONNECTION_FAILURE,
                "pgheal could not LISTEN for the transaction that just committed, so \
                 notifications would be missed: reconnect and LISTEN again"
                    .to_owned(),
            ),
        };
        encode::error_response("FATAL", code, &msg)
    }
}

/// LISTEN/UNLISTEN statements waiting for their transaction block to end.
#[derive(Debug)]
enum Deferred {
    Nothing,
    /// Inside an open block: applied if it commits.
    InBlock(Vec<ListenOp>),
    /// The server answered `COMMIT`; applied once its ReadyForQuery arrives.
    CommitSeen(Vec<ListenOp>),
    /// Committed: applied before the client's next message.
    Committed(Vec<ListenOp>),
}

/// The client's channels on the database's listener.
struct Subscription {
    listener: Arc<Listener>,
    mailbox: Arc<Mailbox>,
    channels: HashSet<Arc<str>>,
}

/// One client's LISTENs (transaction pooling). Most clients never listen: their state is
/// created by their first LISTEN or UNLISTEN, so that the others carry three pointers for it
/// (issue 14: memory per idle client).
pub struct ClientListen {
    listeners: Arc<Listeners>,
    metrics: Arc<Metrics>,
    on: Option<Box<Listening>>,
}

impl ClientListen {
    pub fn new(listeners: Arc<Listeners>, metrics: Arc<Metrics>) -> Self {
        ClientListen {
            listeners,
            metrics,
            on: None,
        }
    }

    /// Anything to do between transactions (false for a client that never listened).
    pub fn is_active(&self) -> bool {
        self.on.as_ref().is_some_and(|l| l.is_active())
    }

    /// Notifications may arrive for this client.
    pub fn has_mailbox(&self) -> bool {
        self.on.as_ref().is_some_and(|l| l.has_mailbox())
    }

    /// Ready when notifications (or the news that the client must be closed) are waiting.
    pub fn poll_mail(&self, cx: &mut Context<'_>) -> Poll<()> {
        match &self.on {
            Some(l) => l.poll_mail(cx),
            None => Poll::Pending,
        }
    }

    /// Whether server messages must go through [`Self::observe_server`] (statements wait for
    /// the end of a block).
    pub fn watches_server(&self) -> bool {
        self.on.as_ref().is_some_and(|l| l.watches_server())
    }

    /// A message from the server while statements wait for their block to end.
    pub fn observe_server(&mut self, f: &Frame) {
        if let Some(l) = &mut self.on {
            l.observe_server(f);
        }
    }

    /// A simple query's text. When pgheal answers it (a LISTEN/UNLISTEN-only query), the
    /// answer is appended to `out` and the result is true; otherwise it goes to the server.
    /// Not cancel-safe (waits for the listening connection).
    pub async fn on_query(
        &mut self,
        sql: &[u8],
        at: Position,
        pinned: bool,
        pool: &Pool,
        out: &mut Vec<Bytes>,
    ) -> bool {
        // A client that never listened has nothing for a `DISCARD ALL` to unlisten.
        if self.on.is_none() && listen_sql::listen_ops(sql).is_none() {
            return false;
        }
        let (listeners, metrics) = (&self.listeners, &self.metrics);
        let on = self
            .on
            .get_or_insert_with(|| Box::new(Listening::new(listeners.clone(), metrics.clone())));
        on.on_query(sql, at, pinned, pool, out).await
    }

    /// Apply the statements of a block that committed. Not cancel-safe.
    pub async fn apply_committed(&mut self, pool: &Pool) {
        if let Some(l) = &mut self.on {
            l.apply_committed(pool).await;
        }
    }

    /// Move the notifications waiting for this client to `out`. `Err` when the client must be
    /// closed (after those notifications).
    pub fn deliver(&mut self, out: &mut Vec<Bytes>) -> Result<(), Closing> {
        match &mut self.on {
            Some(l) => l.deliver(out),
            None => Ok(()),
        }
    }
}

/// The LISTEN state of a client that sent a LISTEN or UNLISTEN.
struct Listening {
    listeners: Arc<Listeners>,
    metrics: Arc<Metrics>,
    id: ClientId,
    sub: Option<Subscription>,
    deferred: Deferred,
    /// A committed LISTEN failed: the client is closed at its next transaction boundary.
    failed: Option<Closing>,
    scratch: VecDeque<Notification>,
}

impl Listening {
    fn new(listeners: Arc<Listeners>, metrics: Arc<Metrics>) -> Self {
        Listening {
            listeners,
            metrics,
            id: next_client_id(),
            sub: None,
            deferred: Deferred::Nothing,
            failed: None,
            scratch: VecDeque::new(),
        }
    }

    /// Anything to do between transactions (false for a client that never listened).
    fn is_active(&self) -> bool {
        self.sub.is_some() || !matches!(self.deferred, Deferred::Nothing) || self.failed.is_some()
    }

    /// Notifications may arrive for this client.
    fn has_mailbox(&self) -> bool {
        self.sub.is_some()
    }

    /// Ready when notifications (or the news that the client must be closed) are waiting.
    fn poll_mail(&self, cx: &mut Context<'_>) -> Poll<()> {
        match &self.sub {
            Some(s) => s.mailbox.poll_ready(cx),
            None => Poll::Pending,
        }
    }

    /// Whether server messages must go through [`Self::observe_server`] (statements wait for
    /// the end of a block).
    fn watches_server(&self) -> bool {
        matches!(
            self.deferred,
            Deferred::InBlock(_) | Deferred::CommitSeen(_)
        )
    }

    /// A message from the server while statements wait for their block to end.
    fn observe_server(&mut self, f: &Frame) {
        match f.tag {
            backend::COMMAND_COMPLETE
                if backend::decode_command_complete(f).is_ok_and(|t| t == b"COMMIT") =>
            {
                self.deferred = match std::mem::replace(&mut self.deferred, Deferred::Nothing) {
                    Deferred::InBlock(ops) => Deferred::CommitSeen(ops),
                    other => other,
                };
            }
            backend::READY_FOR_QUERY => {
                let status = backend::decode_ready_for_query(f).ok();
                self.deferred = match std::mem::replace(&mut self.deferred, Deferred::Nothing) {
                    Deferred::CommitSeen(ops) => Deferred::Committed(ops),
                    // The block ended without COMMIT: rolled back, failed, or prepared.
                    Deferred::InBlock(_) if status == Some(TxStatus::Idle) => Deferred::Nothing,
                    other => other,
                };
            }
            _ => {}
        }
    }

    /// A simple query's text. When pgheal answers it (a LISTEN/UNLISTEN-only query), the
    /// answer is appended to `out` and the result is true; otherwise it goes to the server.
    /// Not cancel-safe (waits for the listening connection).
    async fn on_query(
        &mut self,
        sql: &[u8],
        at: Position,
        pinned: bool,
        pool: &Pool,
        out: &mut Vec<Bytes>,
    ) -> bool {
        let Some(ops) = listen_sql::listen_ops(sql) else {
            if at == Position::Idle && listen_sql::is_discard_all(sql) {
                self.unlisten_all();
            }
            return false;
        };
        self.apply_committed(pool).await;
        let is_unlisten = |op: &ListenOp| !matches!(op, ListenOp::Listen(_));
        let forward = pinned && ops.iter().any(is_unlisten);
        match at {
            Position::Elsewhere => false,
            Position::InBlock => {
                let keep: Vec<ListenOp> = if forward {
                    ops.iter().filter(|op| is_unlisten(op)).cloned().collect()
                } else {
                    ops.clone()
                };
                match &mut self.deferred {
                    Deferred::InBlock(waiting) => waiting.extend(keep),
                    d => *d = Deferred::InBlock(keep),
                }
                if forward {
                    return false;
                }
                for op in &ops {
                    out.push(encode::command_complete(op.tag()).bytes);
                }
                out.push(encode::ready_for_query(TxStatus::InTransaction).bytes);
                true
            }
            Position::Idle if forward => {
                for op in ops.iter().filter(|op| is_unlisten(op)) {
                    let _ = self.apply(op, pool).await;
                }
                false
            }
            Position::Idle => {
                for op in &ops {
                    match self.apply(op, pool).await {
                        Ok(()) => out.push(encode::command_complete(op.tag()).bytes),
                        Err(e) => {
                            out.push(e.bytes);
                            break;
                        }
                    }
                }
                out.push(encode::ready_for_query(TxStatus::Idle).bytes);
                true
            }
        }
    }

    /// Apply the statements of a block that committed. Not cancel-safe.
    async fn apply_committed(&mut self, pool: &Pool) {
        if !matches!(self.deferred, Deferred::Committed(_)) {
            return;
        }
        let Deferred::Committed(ops) = std::mem::replace(&mut self.deferred, Deferred::Nothing)
        else {
            return;
        };
        for op in &ops {
            if let Err(e) = self.apply(op, pool).await {
                let e = backend::ErrorFields::decode(&e)
                    .ok()
                    .and_then(|f| f.message().map(|m| String::from_utf8_lossy(m).into_owned()))
                    .unwrap_or_default();
                tracing::warn!(error = %e, "a LISTEN committed in a transaction block could not be held; closing the client");
                self.failed = Some(Closing::ListenFailed);
            }
        }
    }

    /// Move the notifications waiting for this client to `out`. `Err` when the client must be
    /// closed (after those notifications).
    fn deliver(&mut self, out: &mut Vec<Bytes>) -> Result<(), Closing> {
        let Some(sub) = &self.sub else {
            return self.failed.map_or(Ok(()), Err);
        };
        let broken = sub.mailbox.take(&mut self.scratch);
        let mut delivered = 0;
        for n in self.scratch.drain(..) {
            // Notifications of channels unlistened since they were queued are not the client's.
            if sub.channels.contains(&n.channel) {
                out.push(n.frame);
                delivered += 1;
            }
        }
        self.metrics.notifications.inc_by(delivered);
        if let Some(why) = self.failed {
            return Err(why);
        }
        match broken {
            None => Ok(()),
            Some(Broken::Overflow) => Err(Closing::Overflow),
            Some(Broken::ListenerLost) if sub.channels.is_empty() => {
                // It listened to nothing when the connection was lost: nothing was missed.
                self.sub = None;
                Ok(())
            }
            Some(Broken::ListenerLost) => Err(Closing::ListenerLost),
        }
    }

    /// Apply one statement now. The error is an ErrorResponse for the client.
    async fn apply(&mut self, op: &ListenOp, pool: &Pool) -> Result<(), Frame> {
        match op {
            ListenOp::Listen(name) => {
                let (id, metrics) = (self.id, self.metrics.clone());
                let sub = self.subscription(pool);
                if sub.channels.contains(name.as_str()) {
                    return Ok(());
                }
                let channel: Arc<str> = Arc::from(name.as_str());
                let wait = pool.login().connect_timeout + Duration::from_secs(15);
                let listen = sub
                    .listener
                    .listen(id, channel.clone(), sub.mailbox.clone());
                match tokio::time::timeout(wait, listen).await {
                    Ok(Ok(())) => {
                        sub.channels.insert(channel);
                        if sub.channels.len() == 1 {
                            metrics.listen_clients.inc();
                        }
                        Ok(())
                    }
                    Ok(Err(e)) => Err(listen_error(e)),
                    Err(_) => {
                        sub.listener.unlisten(id, channel);
                        Err(encode::error_response(
                            "ERROR",
                            sqlstate::CONNECTION_FAILURE,
                            "pgheal: timed out waiting for its listening connection",
                        ))
                    }
                }
            }
            ListenOp::Unlisten(name) => {
                if let Some(sub) = &mut self.sub {
                    if let Some(channel) = sub.channels.take(name.as_str()) {
                        sub.listener.unlisten(self.id, channel);
                        if sub.channels.is_empty() {
                            self.metrics.listen_clients.dec();
                        }
                    }
                }
                Ok(())
            }
            ListenOp::UnlistenAll => {
                self.unlisten_all();
                Ok(())
            }
        }
    }

    fn unlisten_all(&mut self) {
        if let Some(sub) = &mut self.sub {
            if !sub.channels.is_empty() {
                sub.channels.clear();
                sub.listener.unlisten_all(self.id);
                self.metrics.listen_clients.dec();
            }
        }
    }

    /// The client's subscription, created with the database's listener on first use.
    fn subscription(&mut self, pool: &Pool) -> &mut Subscription {
        let sub = self.sub.get_or_insert_with(|| Subscription {
            listener: self.listeners.listener(&pool.key.database, &pool.login()),
            mailbox: Mailbox::new(MAX_QUEUED_BYTES),
            channels: HashSet::new(),
        });
        if sub.listener.is_closed() && sub.channels.is_empty() {
            sub.listener = self.listeners.listener(&pool.key.database, &pool.login());
        }
        sub
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.unlisten_all();
    }
}

/// The ErrorResponse a client gets for a LISTEN pgheal could not hold.
fn listen_error(e: ListenError) -> Frame {
    match e {
        ListenError::Rejected(frame) => frame,
        ListenError::Connect(why) => encode::error_response(
            "ERROR",
            sqlstate::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            format!("pgheal could not open its listening connection: {why}"),
        ),
        ListenError::Lost => encode::error_response(
            "ERROR",
            sqlstate::CONNECTION_FAILURE,
            "pgheal lost its listening connection to the server",
        ),
        ListenError::Closed => encode::error_response(
            "ERROR",
            sqlstate::CANNOT_CONNECT_NOW,
            "pgheal is shutting down",
        ),
    }
}
