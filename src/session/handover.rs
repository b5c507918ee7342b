//! A session's side of an online restart ([`crate::takeover`]): when it may move, what it
//! takes along, and its socket out of the split halves.
//!
//! A session moves only at a point where nothing is owed to anyone: transaction pooling,
//! between transactions with no server connection attached, nothing unread from the client
//! (a pipelined message would be lost with the buffer), no LISTEN or pinned session state
//! (they live on this process's connections), no SQL-level PREPARE or open portal, settings
//! pgheal knows (no untracked `set_config`), and a plain socket (rustls state cannot move).

use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;

use crate::config::PoolMode;
use crate::net::stream::{ClientRead, ClientWrite};
use crate::net::ClientReader;
use crate::takeover::state::{ClientState, Setting};

use super::clients::ClientTrack;
use super::kill::KillWatch;
use super::relay_loop::Conversation;

/// A future that completes at the next kill of the session (a kill after the hand-over request
/// that woke it): a session waiting for its boundary still ends when told to.
pub(super) fn rekill_watch(
    probe: &KillWatch<ClientTrack>,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let mut rx = probe.clone();
    rx.mark_seen();
    Box::pin(async move { rx.changed().await })
}

impl Conversation<'_> {
    /// Whether the session can move now (see the module docs).
    pub(super) fn movable(&self, client_r: &ClientReader) -> bool {
        self.mode == PoolMode::Transaction
            && self.attached.is_none()
            && self.engine.at_transaction_boundary()
            && !self.pin.is_active()
            && !self.listen.is_active()
            && !self.discard_pending
            && client_r.buffered() == 0
            && !client_r.get_ref().is_tls()
            && !self.engine.has_unmovable_state()
            && self.settings.untracked().is_none()
            && self.watch.untracked().is_none()
    }

    /// What goes with the client.
    pub(super) fn export(&self, application_name: &str, unix_port: Option<u16>) -> ClientState {
        ClientState {
            database: self.client.database.clone(),
            user: self.client.user.clone(),
            application_name: application_name.to_owned(),
            cancel_pid: self.cancel.pid,
            cancel_key: self.cancel.key.as_bytes().to_vec(),
            settings: self
                .settings
                .settings()
                .map(|(n, v)| Setting {
                    name: n.to_vec(),
                    value: v.to_vec(),
                })
                .collect(),
            session_authorization: self.settings.session_authorization().map(<[u8]>::to_vec),
            role: self.settings.role().map(<[u8]>::to_vec),
            custom_names: self.watch.custom_names().map(str::to_owned).collect(),
            reported: self.reported.told().clone(),
            statements: self.engine.export_statements(),
            unix_port,
        }
    }
}

/// The client's socket from its halves, out of the runtime, as a descriptor to send.
pub(super) fn into_fd(r: ClientRead, w: ClientWrite) -> std::io::Result<OwnedFd> {
    match (r, w) {
        (ClientRead::Plain(r), ClientWrite::Plain(w)) => {
            let s = r
                .reunite(w)
                .map_err(|_| std::io::Error::other("the halves of a client socket do not match"))?;
            Ok(OwnedFd::from(s.into_std()?))
        }
        (ClientRead::Unix(r), ClientWrite::Unix(w)) => {
            let s = r
                .reunite(w)
                .map_err(|_| std::io::Error::other("the halves of a client socket do not match"))?;
            Ok(OwnedFd::from(s.into_std()?))
        }
        _ => Err(std::io::Error::other("a TLS client cannot move")),
    }
}
