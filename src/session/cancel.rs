//! Cancel keys. Each client gets pgheal's own BackendKeyData; a CancelRequest carrying it is
//! sent, with the server's own key, to the server connection that client is using. Unknown or
//! stale keys cancel nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use rand::Rng;
use tokio::io::AsyncWriteExt;

use crate::protocol::encode;

/// Where a client's queries currently run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelTarget {
    pub addr: SocketAddr,
    pub pid: i32,
    pub key: i32,
}

#[derive(Default)]
pub struct CancelRegistry {
    map: DashMap<(i32, i32), Option<CancelTarget>>,
}

impl CancelRegistry {
    /// A fresh (process id, secret key) pair for a client, registered until the guard drops.
    pub fn register(self: &Arc<Self>) -> CancelKey {
        let mut rng = rand::thread_rng();
        loop {
            let pid = rng.gen_range(1..i32::MAX);
            let key = rng.gen::<i32>();
            if let dashmap::mapref::entry::Entry::Vacant(v) = self.map.entry((pid, key)) {
                v.insert(None);
                return CancelKey {
                    pid,
                    key,
                    registry: self.clone(),
                };
            }
        }
    }

    pub fn target(&self, pid: i32, key: i32) -> Option<CancelTarget> {
        self.map.get(&(pid, key)).and_then(|t| *t)
    }

    /// Forward a client's CancelRequest, within `limit` (`cancel_wait_timeout`). Returns
    /// whether the key was known.
    pub async fn cancel(&self, pid: i32, key: i32, limit: Option<Duration>) -> bool {
        let Some(t) = self.target(pid, key) else {
            return false;
        };
        send_cancel(t, limit).await;
        true
    }
}

/// Send a CancelRequest to a server over a new connection, connect and send within `limit`
/// (`cancel_wait_timeout`, `None` = no limit). Failures are logged, not returned: a cancel is
/// best effort, for PostgreSQL as for pgheal.
pub async fn send_cancel(t: CancelTarget, limit: Option<Duration>) {
    let send = async {
        let mut s = tokio::net::TcpStream::connect(t.addr).await?;
        s.write_all(&encode::cancel_request(t.pid, t.key)).await?;
        s.flush().await
    };
    let sent = match limit {
        Some(d) => tokio::time::timeout(d, send).await,
        None => Ok(send.await),
    };
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot reach the server to cancel a query"),
        Err(_) => tracing::warn!(
            server = %t.addr,
            timeout = ?limit.unwrap_or_default(),
            "closing because: cancel_wait_timeout (the cancel request could not be forwarded in time)"
        ),
    }
}

/// A client's registered cancel key; unregistered on drop.
pub struct CancelKey {
    pub pid: i32,
    pub key: i32,
    registry: Arc<CancelRegistry>,
}

impl CancelKey {
    pub fn set_target(&self, target: Option<CancelTarget>) {
        if let Some(mut t) = self.registry.map.get_mut(&(self.pid, self.key)) {
            *t = target;
        }
    }
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.registry.map.remove(&(self.pid, self.key));
    }
}
