//! Every logged-in client, as the admin console lists (`SHOW CLIENTS`) and ends
//! (`KILL_CLIENT`, `KILL db`) them.
//!
//! A session registers once its login succeeds and is removed when the registration is
//! dropped, however the session ends. What changes during the session (waiting for a server
//! connection, the connection it is linked to) is kept in atomics of its [`ClientTrack`], so
//! the relay never takes the list's lock; the lock is taken only to add, remove or list.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::net::PeerAddr;
use crate::pool::stats::unix_micros;

use super::kill::{HasKillSwitch, KillSwitch, KillWatch};

/// What a client is doing, as `SHOW CLIENTS` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Logged in, linked to a server connection or between transactions (`SHOW CLIENTS`
    /// says `idle` for an active client without a link, as PgBouncer does).
    Active,
    /// Waiting for a server connection.
    Waiting,
}

/// One logged-in client.
#[derive(Debug)]
pub struct ClientTrack {
    pub id: u64,
    pub user: String,
    pub database: String,
    pub addr: PeerAddr,
    pub local_addr: Option<PeerAddr>,
    pub application_name: String,
    /// `TLS` when the client is on TLS, else empty.
    pub tls: String,
    pub connect_time: SystemTime,
    /// An admin console session (listed under the `pgbouncer` database).
    pub admin: bool,
    waiting: AtomicBool,
    /// Microseconds since the epoch: when the current wait began, or the last request.
    since: AtomicU64,
    /// The server connection it is linked to, 0 for none.
    link: AtomicU64,
    prepared: AtomicU64,
    kill: KillSwitch,
    /// An online restart asked this session to move (see [`crate::takeover`]).
    handover: Mutex<Handover>,
}

/// Where a session stands in an online restart.
#[derive(Debug, Default)]
enum Handover {
    #[default]
    None,
    /// Asked to move at its next transaction boundary.
    Requested(Arc<crate::takeover::Hub>),
    /// Leaving its relay loop with a place to go.
    Claimed(crate::takeover::Claim),
}

impl ClientTrack {
    pub fn state(&self) -> ClientState {
        if self.waiting.load(Relaxed) {
            ClientState::Waiting
        } else {
            ClientState::Active
        }
    }

    /// The client starts waiting for a server connection.
    pub fn start_waiting(&self) {
        self.since.store(unix_micros(SystemTime::now()), Relaxed);
        self.waiting.store(true, Relaxed);
    }

    /// The client got server connection `server_id` (or gave up waiting: 0).
    pub fn linked(&self, server_id: u64) {
        self.waiting.store(false, Relaxed);
        self.link.store(server_id, Relaxed);
        self.since.store(unix_micros(SystemTime::now()), Relaxed);
    }

    /// The client gave its server connection back.
    pub fn unlinked(&self) {
        self.link.store(0, Relaxed);
    }

    pub fn link(&self) -> Option<u64> {
        match self.link.load(Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    /// When the current wait began (waiting) or the last request was served.
    pub fn request_time(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(self.since.load(Relaxed))
    }

    /// How long the client has been waiting for a server connection (zero when not).
    pub fn waited(&self) -> Duration {
        if self.state() != ClientState::Waiting {
            return Duration::ZERO;
        }
        SystemTime::now()
            .duration_since(self.request_time())
            .unwrap_or_default()
    }

    pub fn set_prepared(&self, n: usize) {
        self.prepared.store(n as u64, Relaxed);
    }

    pub fn prepared(&self) -> u64 {
        self.prepared.load(Relaxed)
    }

    /// End the session now (`KILL_CLIENT`, `KILL db`, shutdown). A pending hand-over request
    /// is withdrawn: the session ends where it is.
    pub fn kill(&self) {
        if let Ok(mut h) = self.handover.lock() {
            if matches!(*h, Handover::Requested(_)) {
                *h = Handover::None;
            }
        }
        self.kill.fire();
    }

    /// Online restart: move at the next transaction boundary. The session is woken as by a
    /// kill and finds the request (see [`Self::handover_requested`]).
    pub fn request_handover(&self, hub: Arc<crate::takeover::Hub>) {
        if let Ok(mut h) = self.handover.lock() {
            if matches!(*h, Handover::None) {
                *h = Handover::Requested(hub);
            }
        }
        self.kill.fire();
    }

    /// Whether an online restart asked this session to move.
    pub fn handover_requested(&self) -> bool {
        self.handover
            .lock()
            .is_ok_and(|h| matches!(*h, Handover::Requested(_)))
    }

    /// The session is at a point where it can move: claim a place. False when the hand-over
    /// is over (the session stays).
    pub fn claim_handover(&self) -> bool {
        let Ok(mut h) = self.handover.lock() else {
            return false;
        };
        let Handover::Requested(hub) = &*h else {
            return false;
        };
        match hub.claim() {
            Some(c) => {
                *h = Handover::Claimed(c);
                true
            }
            None => false,
        }
    }

    /// The place claimed by [`Self::claim_handover`].
    pub fn take_claim(&self) -> Option<crate::takeover::Claim> {
        let mut h = self.handover.lock().ok()?;
        match std::mem::take(&mut *h) {
            Handover::Claimed(c) => Some(c),
            other => {
                *h = other;
                None
            }
        }
    }

    /// Completes once the session was told to end (or to move, which an admin console session
    /// never is).
    pub async fn wait_killed(&self) {
        self.kill.wait_past(0).await;
    }

    /// Fires when the session must end or move; the relay watches it.
    pub fn killed(self: &Arc<Self>) -> KillWatch<ClientTrack> {
        KillWatch::new(self.clone())
    }
}

impl HasKillSwitch for ClientTrack {
    fn kill_switch(&self) -> &KillSwitch {
        &self.kill
    }
}

/// Who a new client is.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub user: String,
    pub database: String,
    pub addr: PeerAddr,
    pub local_addr: Option<PeerAddr>,
    pub application_name: String,
    pub tls: bool,
    pub admin: bool,
}

/// Every logged-in client.
#[derive(Debug, Default)]
pub struct ClientList {
    next_id: AtomicU64,
    clients: Mutex<BTreeMap<u64, Arc<ClientTrack>>>,
    /// Set once shutdown closes every session: clients registering later start killed.
    closing: AtomicBool,
    /// An online restart in progress: clients registering later are asked to move too.
    handover: Mutex<Option<Arc<crate::takeover::Hub>>>,
}

/// A client's place in the list; dropping it removes the client.
pub struct Registered {
    list: Arc<ClientList>,
    pub track: Arc<ClientTrack>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut m) = self.list.clients.lock() {
            m.remove(&self.track.id);
        }
    }
}

impl ClientList {
    /// Add a client; it stays listed while the returned value lives.
    pub fn register(self: &Arc<Self>, info: ClientInfo) -> Registered {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let now = SystemTime::now();
        let track = Arc::new(ClientTrack {
            id,
            user: info.user,
            database: info.database,
            addr: info.addr,
            local_addr: info.local_addr,
            application_name: info.application_name,
            tls: if info.tls {
                "TLS".into()
            } else {
                String::new()
            },
            connect_time: now,
            admin: info.admin,
            waiting: AtomicBool::new(false),
            since: AtomicU64::new(unix_micros(now)),
            link: AtomicU64::new(0),
            prepared: AtomicU64::new(0),
            kill: KillSwitch::new(self.closing.load(Relaxed)),
            handover: Mutex::new(Handover::None),
        });
        if !track.admin {
            if let Some(hub) = self.handover.lock().ok().and_then(|h| h.clone()) {
                track.request_handover(hub);
            }
        }
        if let Ok(mut m) = self.clients.lock() {
            m.insert(id, track.clone());
        }
        Registered {
            list: self.clone(),
            track,
        }
    }

    /// Every client, in login order.
    pub fn all(&self) -> Vec<Arc<ClientTrack>> {
        self.clients
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, id: u64) -> Option<Arc<ClientTrack>> {
        self.clients.lock().ok()?.get(&id).cloned()
    }

    /// End the sessions of every client `which` selects; how many.
    pub fn kill_where(&self, which: impl Fn(&ClientTrack) -> bool) -> usize {
        let victims: Vec<_> = self.all().into_iter().filter(|c| which(c)).collect();
        for c in &victims {
            c.kill();
        }
        victims.len()
    }

    /// End every session, and every one that logs in from now on (shutdown).
    pub fn kill_all(&self) {
        self.closing.store(true, Relaxed);
        self.kill_where(|_| true);
    }

    /// Online restart: ask every client session (not the console's) to move, now and as they
    /// log in.
    pub fn hand_over_all(&self, hub: Arc<crate::takeover::Hub>) {
        if let Ok(mut h) = self.handover.lock() {
            *h = Some(hub.clone());
        }
        for c in self.all().into_iter().filter(|c| !c.admin) {
            c.request_handover(hub.clone());
        }
    }

    pub fn len(&self) -> usize {
        self.clients.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(db: &str) -> ClientInfo {
        ClientInfo {
            user: "app".into(),
            database: db.into(),
            addr: PeerAddr::Tcp("127.0.0.1:5000".parse().unwrap()),
            local_addr: None,
            application_name: String::new(),
            tls: false,
            admin: false,
        }
    }

    #[test]
    fn clients_leave_the_list_when_their_registration_drops() {
        let list = Arc::new(ClientList::default());
        let a = list.register(info("a"));
        let b = list.register(info("b"));
        assert_eq!(list.len(), 2);
        assert_ne!(a.track.id, b.track.id);
        drop(a);
        assert_eq!(list.all().len(), 1);
        assert_eq!(list.all()[0].database, "b");
    }

    #[test]
    fn kill_reaches_the_selected_sessions_and_later_logins_after_kill_all() {
        let list = Arc::new(ClientList::default());
        let a = list.register(info("a"));
        let b = list.register(info("b"));
        let (ka, kb) = (a.track.killed(), b.track.killed());
        assert_eq!(list.kill_where(|c| c.database == "a"), 1);
        assert!(ka.fired() && !kb.fired());
        list.kill_all();
        assert!(kb.fired());
        let late = list.register(info("c"));
        assert!(
            late.track.killed().fired(),
            "a login after shutdown starts killed"
        );
    }

    #[test]
    fn waiting_state_and_link() {
        let list = Arc::new(ClientList::default());
        let a = list.register(info("a"));
        a.track.start_waiting();
        assert_eq!(a.track.state(), ClientState::Waiting);
        a.track.linked(7);
        assert_eq!(
            (a.track.state(), a.track.link()),
            (ClientState::Active, Some(7))
        );
        assert_eq!(a.track.waited(), Duration::ZERO);
        a.track.unlinked();
        assert_eq!(a.track.link(), None);
    }
}
