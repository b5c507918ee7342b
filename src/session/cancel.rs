//! Cancel keys. Each client gets pgheal's own BackendKeyData; a CancelRequest carrying it is
//! sent, with the server's own key, to the server connection that client is using. Unknown or
//! stale keys cancel nothing.

use std::net::SocketAddr;
use std::sync::Arc;

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

    /// Forward a client's CancelRequest. Returns whether the key was known.
    pub async fn cancel(&self, pid: i32, key: i32) -> bool {
        let Some(t) = self.target(pid, key) else {
            return false;
        };
        match tokio::net::TcpStream::connect(t.addr).await {
            Ok(mut s) => {
                let _ = s.write_all(&encode::cancel_request(t.pid, t.key)).await;
            }
            Err(e) => tracing::warn!(error = %e, "cannot reach the server to cancel a query"),
        }
        true
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
