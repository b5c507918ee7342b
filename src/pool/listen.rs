//! The listening connection of each database, for LISTEN in transaction pooling.
//!
//! In transaction pooling a client has no server connection between its transactions, which is
//! exactly when PostgreSQL delivers notifications; and a LISTEN run on a pooled connection
//! would stay with that connection and reach whichever client uses it next. So pgheal holds
//! the client's LISTEN itself: one [`Listener`] per database (created on the first LISTEN) owns
//! one server connection outside the pool, which listens to the union of the channels its
//! clients listen to, reads NotificationResponse frames and puts each into the
//! [`Mailbox`] of every client listening on that channel. The session hands them to its client
//! between transactions (`session::listen`).
//!
//! - **When a LISTEN counts**: a client's LISTEN is acknowledged only once the listening
//!   connection listens (its `LISTEN` answered, or the channel already listened to), so a
//!   NOTIFY committed after the client saw `LISTEN` complete always reaches it. UNLISTEN needs
//!   no round trip: the session stops delivering that channel at once, and the listening
//!   connection unlistens when no client is left on the channel.
//! - **Order**: one connection, one task, one queue per client: notifications reach each
//!   client in the order the server sent them.
//! - **Losing the connection**: the notifications committed while pgheal is not listening
//!   cannot be recovered, and a client that keeps its connection would never know it missed
//!   some. So every client listening through a lost connection is closed (at its next
//!   transaction boundary, with `08006` saying why), as a direct connection to a restarted
//!   server would be; the next LISTEN opens a new listening connection. This is stricter than
//!   re-listening quietly, and it keeps the promise that a notification is never lost while
//!   the client is connected.
//! - The connection logs in like the pool that first needed it (LISTEN needs no privilege, and
//!   notifications are per database, not per user); `application_name` is `pgheal listen`.
//!   It stays open, listening to nothing, once its last client has gone, until pgheal stops.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::net::NetError;
use crate::protocol::{backend, encode, Frame};
use crate::statements::sql_prepare::quote_ident;

use super::mailbox::{Broken, Mailbox, Notification};
use super::server::{ServerConn, ServerLogin};

/// Identifies a client to the listeners.
pub type ClientId = u64;

static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// A fresh client id.
pub fn next_client_id() -> ClientId {
    NEXT_CLIENT.fetch_add(1, Ordering::Relaxed)
}

/// Why a LISTEN could not be held.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ListenError {
    /// The listening connection could not be opened (the message names no secret).
    #[error("cannot open the listening connection: {0}")]
    Connect(String),
    /// The server refused the LISTEN: its ErrorResponse, fit to forward.
    #[error("the server refused LISTEN")]
    Rejected(Frame),
    #[error("the listening connection was lost")]
    Lost,
    #[error("pgheal is shutting down")]
    Closed,
}

/// The listeners of every database, created on first use.
pub struct Listeners {
    by_db: Mutex<HashMap<String, Arc<Listener>>>,
    metrics: Arc<Metrics>,
}

impl Listeners {
    pub fn new(metrics: Arc<Metrics>) -> Arc<Listeners> {
        Arc::new(Listeners {
            by_db: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// The listener of `database`, started (on the calling runtime) if there is none yet.
    /// `login` is used only when it starts.
    pub fn listener(&self, database: &str, login: &ServerLogin) -> Arc<Listener> {
        let mut map = self.by_db.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = map.get(database) {
            if !l.cmds.is_closed() {
                return l.clone();
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let task = Task {
            login: login.clone(),
            database: database.to_owned(),
            metrics: self.metrics.clone(),
            conn: None,
            channels: HashMap::new(),
            sent: VecDeque::new(),
            outgoing: Vec::new(),
        };
        tokio::spawn(task.run(rx));
        let l = Arc::new(Listener { cmds: tx });
        map.insert(database.to_owned(), l.clone());
        l
    }

    /// Close every listening connection (shutdown).
    pub fn close_all(&self) {
        let map = std::mem::take(&mut *self.by_db.lock().unwrap_or_else(|e| e.into_inner()));
        for l in map.values() {
            let _ = l.cmds.send(Command::Close);
        }
    }
}

/// The handle of one database's listening connection.
pub struct Listener {
    cmds: mpsc::UnboundedSender<Command>,
}

enum Command {
    Listen {
        client: ClientId,
        channel: Arc<str>,
        mailbox: Arc<Mailbox>,
        done: oneshot::Sender<Result<(), ListenError>>,
    },
    Unlisten {
        client: ClientId,
        channel: Arc<str>,
    },
    UnlistenAll {
        client: ClientId,
    },
    Close,
}

impl Listener {
    /// Deliver `channel`'s notifications to `mailbox` from now on; returns once the listening
    /// connection listens. Cancel-safe in effect: a cancelled wait leaves the subscription in
    /// place, and the client's [`Listener::unlisten_all`] at disconnect removes it.
    pub async fn listen(
        &self,
        client: ClientId,
        channel: Arc<str>,
        mailbox: Arc<Mailbox>,
    ) -> Result<(), ListenError> {
        let (done, answer) = oneshot::channel();
        self.cmds
            .send(Command::Listen {
                client,
                channel,
                mailbox,
                done,
            })
            .map_err(|_| ListenError::Closed)?;
        answer.await.unwrap_or(Err(ListenError::Closed))
    }

    pub fn unlisten(&self, client: ClientId, channel: Arc<str>) {
        let _ = self.cmds.send(Command::Unlisten { client, channel });
    }

    pub fn unlisten_all(&self, client: ClientId) {
        let _ = self.cmds.send(Command::UnlistenAll { client });
    }

    /// The task has ended (shutdown).
    pub fn is_closed(&self) -> bool {
        self.cmds.is_closed()
    }
}

/// The task that owns a listening connection and the subscriptions.
struct Task {
    login: ServerLogin,
    database: String,
    metrics: Arc<Metrics>,
    conn: Option<ServerConn>,
    /// Channel → the clients listening on it.
    channels: HashMap<Arc<str>, HashMap<ClientId, Arc<Mailbox>>>,
    /// Commands sent to the server and not yet answered by ReadyForQuery, in order.
    sent: VecDeque<Sent>,
    /// Commands to write at the end of this step.
    outgoing: Vec<Frame>,
}

enum Sent {
    /// `LISTEN channel`: the clients waiting for it, and the server's error if it refused.
    Listen {
        channel: Arc<str>,
        waiters: Vec<(ClientId, oneshot::Sender<Result<(), ListenError>>)>,
        error: Option<Frame>,
    },
    /// `UNLISTEN channel`.
    Unlisten,
}

enum Event {
    Command(Option<Command>),
    Read(Result<bool, NetError>),
}

impl Task {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut frames = Vec::new();
        loop {
            let event = match self.conn.as_mut() {
                Some(conn) => tokio::select! {
                    cmd = rx.recv() => Event::Command(cmd),
                    r = conn.reader.read_frames(&mut frames) => Event::Read(r),
                },
                None => Event::Command(rx.recv().await),
            };
            match event {
                Event::Command(None) | Event::Command(Some(Command::Close)) => break,
                Event::Command(Some(cmd)) => self.command(cmd).await,
                Event::Read(Ok(true)) => {
                    for f in frames.drain(..) {
                        self.on_frame(f);
                    }
                }
                Event::Read(Ok(false)) => self.lost("the server closed the connection"),
                Event::Read(Err(e)) => self.lost(&e.to_string()),
            }
            self.flush().await;
        }
        rx.close();
        if let Some(c) = self.conn.take() {
            let mut w = c.writer.into_inner();
            let _ = w.try_write(&encode::terminate().bytes);
            self.metrics.server_connections.dec();
        }
        self.metrics.listen_channels.sub(self.channels.len() as i64);
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Listen {
                client,
                channel,
                mailbox,
                done,
            } => {
                if self.conn.is_none() {
                    if let Err(e) = self.connect().await {
                        let _ = done.send(Err(e));
                        return;
                    }
                }
                match self.channels.get_mut(&channel) {
                    Some(subscribers) => {
                        subscribers.insert(client, mailbox);
                        // Listened to already, or about to be: answer with that LISTEN.
                        match self.sent.iter_mut().rev().find_map(|s| match s {
                            Sent::Listen {
                                channel: c,
                                waiters,
                                ..
                            } if *c == channel => Some(waiters),
                            _ => None,
                        }) {
                            Some(waiters) => waiters.push((client, done)),
                            None => {
                                let _ = done.send(Ok(()));
                            }
                        }
                    }
                    None => {
                        self.channels
                            .insert(channel.clone(), HashMap::from([(client, mailbox)]));
                        self.metrics.listen_channels.inc();
                        self.outgoing
                            .push(encode::query(format!("LISTEN {}", quote_ident(&channel))));
                        self.sent.push_back(Sent::Listen {
                            channel,
                            waiters: vec![(client, done)],
                            error: None,
                        });
                    }
                }
            }
            Command::Unlisten { client, channel } => {
                if let Some(subscribers) = self.channels.get_mut(&channel) {
                    subscribers.remove(&client);
                    self.unlisten_if_unused(&channel);
                }
            }
            Command::UnlistenAll { client } => {
                let mine: Vec<Arc<str>> = self
                    .channels
                    .iter_mut()
                    .filter_map(|(c, subscribers)| subscribers.remove(&client).map(|_| c.clone()))
                    .collect();
                for c in mine {
                    self.unlisten_if_unused(&c);
                }
            }
            Command::Close => {}
        }
    }

    /// UNLISTEN a channel no client listens to, unless its LISTEN is still unanswered (it is
    /// checked again then).
    fn unlisten_if_unused(&mut self, channel: &Arc<str>) {
        let unused = self.channels.get(channel).is_some_and(|s| s.is_empty());
        let in_flight = self
            .sent
            .iter()
            .any(|s| matches!(s, Sent::Listen { channel: c, .. } if c == channel));
        if unused && !in_flight {
            self.channels.remove(channel);
            self.metrics.listen_channels.dec();
            if self.conn.is_some() {
                self.outgoing
                    .push(encode::query(format!("UNLISTEN {}", quote_ident(channel))));
                self.sent.push_back(Sent::Unlisten);
            }
        }
    }

    fn on_frame(&mut self, f: Frame) {
        match f.tag {
            backend::NOTIFICATION_RESPONSE => {
                let Ok((_, channel, _)) = backend::decode_notification(&f) else {
                    tracing::warn!(db = %self.database, "malformed NotificationResponse from the server; ignored");
                    return;
                };
                // Channels pgheal holds are the names clients LISTENed to as UTF-8 text (see
                // session/listen_sql.rs); any other name is not one of them.
                let Ok(channel) = std::str::from_utf8(channel) else {
                    return;
                };
                if let Some((name, subscribers)) = self.channels.get_key_value(channel) {
                    for mailbox in subscribers.values() {
                        mailbox.push(Notification {
                            channel: name.clone(),
                            frame: f.bytes.clone(),
                        });
                    }
                }
            }
            backend::ERROR_RESPONSE => match self.sent.front_mut() {
                Some(Sent::Listen { error, .. }) => {
                    error.get_or_insert(f);
                }
                _ => {
                    let e = backend::ErrorFields::decode(&f).ok();
                    tracing::warn!(
                        db = %self.database,
                        error = %String::from_utf8_lossy(e.and_then(|e| e.message()).unwrap_or(b"")),
                        "error on the listening connection"
                    );
                }
            },
            backend::READY_FOR_QUERY => {
                if let Some(Sent::Listen {
                    channel,
                    waiters,
                    error,
                }) = self.sent.pop_front()
                {
                    if let Some(frame) = error {
                        if let Some(subscribers) = self.channels.get_mut(&channel) {
                            for (client, _) in &waiters {
                                subscribers.remove(client);
                            }
                        }
                        for (_, done) in waiters {
                            let _ = done.send(Err(ListenError::Rejected(frame.clone())));
                        }
                    } else {
                        for (_, done) in waiters {
                            let _ = done.send(Ok(()));
                        }
                    }
                    // Everyone may have left (or failed) while it was in flight.
                    self.unlisten_if_unused(&channel);
                }
            }
            _ => {}
        }
    }

    async fn connect(&mut self) -> Result<(), ListenError> {
        let mut conn = ServerConn::connect(&self.login)
            .await
            .map_err(|e| ListenError::Connect(e.to_string()))?;
        self.metrics.server_connections.inc();
        match conn
            .simple_query("SET application_name = 'pgheal listen'")
            .await
        {
            Ok(_) => {}
            Err(e) => {
                self.metrics.server_connections.dec();
                return Err(ListenError::Connect(e.to_string()));
            }
        }
        tracing::info!(db = %self.database, server = conn.id, pid = conn.backend_pid, "opened the listening connection");
        self.conn = Some(conn);
        Ok(())
    }

    async fn flush(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            self.outgoing.clear();
            return;
        };
        let mut parts: Vec<bytes::Bytes> = self.outgoing.drain(..).map(|f| f.bytes).collect();
        if let Err(e) = conn.writer.write_parts(&mut parts).await {
            self.lost(&e.to_string());
        }
    }

    /// The connection is gone: every client listening through it is told (see the module
    /// docs), and the next LISTEN opens a new one.
    fn lost(&mut self, why: &str) {
        let clients: usize = self.channels.values().map(HashMap::len).sum();
        tracing::warn!(
            db = %self.database,
            reason = why,
            clients,
            "lost the listening connection: its clients will be closed, since notifications may have been missed"
        );
        if self.conn.take().is_some() {
            self.metrics.server_connections.dec();
        }
        for (_, subscribers) in self.channels.drain() {
            for mailbox in subscribers.values() {
                mailbox.break_with(Broken::ListenerLost);
            }
            self.metrics.listen_channels.dec();
        }
        for s in self.sent.drain(..) {
            if let Sent::Listen { waiters, .. } = s {
                for (_, done) in waiters {
                    let _ = done.send(Err(ListenError::Lost));
                }
            }
        }
        self.outgoing.clear();
    }
}
