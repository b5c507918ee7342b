//! Cancel keys. Each client gets pgheal's own BackendKeyData; a CancelRequest carrying it is
//! sent, with the server's own key, to the server connection that client is using. Unknown or
//! stale keys cancel nothing.
//!
//! A protocol 3.0 client gets a 4-byte secret, a 3.2 client (PostgreSQL 18's longer keys) a
//! 32-byte one, as PostgreSQL 18 gives. Server connections always speak 3.0, so the key pgheal
//! sends to a server is that server's own 4-byte key.
//!
//! Peering, as PgBouncer 1.25 does it (so pgheal and PgBouncer instances can even share a
//! fleet): with `peer_id` set, bytes 1 and 2 of the process id carry the instance's id (low
//! byte first) and the two low bits of the secret's last byte a time-to-live, 3 when issued. A
//! CancelRequest whose id is another instance's is forwarded to that `[peers]` entry with the
//! TTL one lower, and dropped once the TTL is 0 or the peer is unknown: a request is forwarded
//! a bounded number of times and never loops. Keys are compared with the TTL bits set, so a
//! forwarded request matches the key that was issued.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use rand::Rng;
use tokio::io::AsyncWriteExt;

use crate::config::Peer;
use crate::protocol::encode;

/// The low bits of the secret's last byte that count how often a request may still be
/// forwarded between peers (PgBouncer's CANCELLATION_TTL_MASK).
const TTL_MASK: u8 = 0x03;

/// The peer id a cancel request's process id carries (bytes 1 and 2, low byte first).
fn peer_of(pid: i32) -> u16 {
    let b = pid.to_be_bytes();
    u16::from(b[1]) | u16::from(b[2]) << 8
}

fn with_peer(pid: i32, id: u16) -> i32 {
    let mut b = pid.to_be_bytes();
    b[1] = (id & 0xff) as u8;
    b[2] = (id >> 8) as u8;
    i32::from_be_bytes(b)
}

/// What became of a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Sent to the server running the client's query.
    Forwarded,
    /// Sent on to the instance whose id the key carries.
    ToPeer(u16),
    /// No client of this instance has the key (or it has no query running).
    Unknown,
    /// The key names an instance that is not in `[peers]`.
    UnknownPeer(u16),
    /// The key was already forwarded as often as its TTL allows.
    TtlExhausted,
}

impl CancelOutcome {
    /// The `result` label of `pgheal_cancel_requests_total`.
    pub fn label(self) -> &'static str {
        match self {
            CancelOutcome::Forwarded => "forwarded",
            CancelOutcome::ToPeer(_) => "to_peer",
            CancelOutcome::Unknown => "unknown",
            CancelOutcome::UnknownPeer(_) => "unknown_peer",
            CancelOutcome::TtlExhausted => "ttl_exhausted",
        }
    }
}

/// Where a client's queries currently run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelTarget {
    pub addr: SocketAddr,
    pub pid: i32,
    pub key: i32,
}

/// The longest secret pgheal issues (PostgreSQL 18's length for protocol 3.2).
const LONG_SECRET: usize = 32;

/// A client's cancel secret: 4 bytes (protocol 3.0) or [`LONG_SECRET`] bytes (3.2), kept
/// inline so registering a client allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Secret {
    len: u8,
    bytes: [u8; LONG_SECRET],
}

impl Secret {
    fn random(len: usize, rng: &mut impl Rng) -> Secret {
        let mut bytes = [0; LONG_SECRET];
        rng.fill(&mut bytes[..len]);
        Secret {
            len: len as u8,
            bytes,
        }
    }

    /// The secret a CancelRequest carries; `None` for a length pgheal never issues.
    pub fn from_request(key: &[u8]) -> Option<Secret> {
        if key.len() != 4 && key.len() != LONG_SECRET {
            return None;
        }
        let mut bytes = [0; LONG_SECRET];
        bytes[..key.len()].copy_from_slice(key);
        Some(Secret {
            len: key.len() as u8,
            bytes,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.len)
    }
}

#[derive(Default)]
pub struct CancelRegistry {
    map: DashMap<(i32, Secret), Option<CancelTarget>>,
    /// This instance's `peer_id` (0: no peering). Fixed for the process's life: keys issued
    /// before a change would otherwise be forwarded to the wrong instance.
    peer_id: u16,
}

impl CancelRegistry {
    pub fn new(peer_id: u16) -> CancelRegistry {
        CancelRegistry {
            map: DashMap::new(),
            peer_id,
        }
    }

    /// A fresh (process id, secret) pair for a client speaking protocol 3.`minor`, registered
    /// until the guard drops.
    pub fn register(self: &Arc<Self>, minor: u16) -> CancelKey {
        let len = if minor >= 2 { LONG_SECRET } else { 4 };
        let mut rng = rand::thread_rng();
        loop {
            let mut pid = rng.gen_range(1..i32::MAX);
            let mut key = Secret::random(len, &mut rng);
            if self.peer_id != 0 {
                pid = with_peer(pid, self.peer_id);
                key.bytes[len - 1] |= TTL_MASK;
            }
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

    /// Register the key a client got from an old process (online restart), so the cancel
    /// requests it sends with it keep working. `None` for a malformed or taken key.
    pub fn adopt(self: &Arc<Self>, pid: i32, key: &[u8]) -> Option<CancelKey> {
        let key = Secret::from_request(key)?;
        match self.map.entry((pid, key)) {
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(None);
                Some(CancelKey {
                    pid,
                    key,
                    registry: self.clone(),
                })
            }
            dashmap::mapref::entry::Entry::Occupied(_) => None,
        }
    }

    pub fn target(&self, pid: i32, key: &[u8]) -> Option<CancelTarget> {
        let mut key = Secret::from_request(key)?;
        if self.peer_id != 0 {
            // Issued with the TTL bits set; a forwarded request has fewer of them.
            key.bytes[usize::from(key.len) - 1] |= TTL_MASK;
        }
        self.map.get(&(pid, key)).and_then(|t| *t)
    }

    /// Handle a client's CancelRequest: send it to the server running the query of the
    /// client holding the key, or on to the peer instance the key names; either within
    /// `limit` (`cancel_wait_timeout`, `None` = no limit).
    pub async fn cancel(
        &self,
        pid: i32,
        key: &[u8],
        peers: &BTreeMap<u16, Peer>,
        limit: Option<Duration>,
    ) -> CancelOutcome {
        let owner = peer_of(pid);
        if self.peer_id != 0 && owner != self.peer_id {
            return forward_to_peer(owner, pid, key, peers, limit).await;
        }
        let Some(t) = self.target(pid, key) else {
            return CancelOutcome::Unknown;
        };
        send_cancel(t, limit).await;
        CancelOutcome::Forwarded
    }
}

/// Send a CancelRequest on to the peer whose id its key carries, one TTL step lower.
async fn forward_to_peer(
    id: u16,
    pid: i32,
    key: &[u8],
    peers: &BTreeMap<u16, Peer>,
    limit: Option<Duration>,
) -> CancelOutcome {
    let Some(last) = key.last() else {
        return CancelOutcome::Unknown;
    };
    if last & TTL_MASK == 0 {
        tracing::info!(
            peer = id,
            "cancel request not forwarded: its TTL is exhausted"
        );
        return CancelOutcome::TtlExhausted;
    }
    let Some(peer) = peers.get(&id) else {
        tracing::info!(
            peer = id,
            "cancel request for a peer that is not in [peers]"
        );
        return CancelOutcome::UnknownPeer(id);
    };
    let mut key = key.to_vec();
    let n = key.len() - 1;
    key[n] -= 1;
    let mut packet = Vec::with_capacity(12 + key.len());
    packet.extend_from_slice(&(12 + key.len() as i32).to_be_bytes());
    packet.extend_from_slice(&crate::protocol::startup::CANCEL_REQUEST.to_be_bytes());
    packet.extend_from_slice(&pid.to_be_bytes());
    packet.extend_from_slice(&key);
    let send = async {
        if peer.host.starts_with('/') {
            let path = format!("{}/.s.PGSQL.{}", peer.host, peer.port);
            let mut s = tokio::net::UnixStream::connect(path).await?;
            s.write_all(&packet).await
        } else {
            let mut s = tokio::net::TcpStream::connect((peer.host.as_str(), peer.port)).await?;
            s.write_all(&packet).await
        }
    };
    let sent = match limit {
        Some(d) => tokio::time::timeout(d, send).await,
        None => Ok(send.await),
    };
    match sent {
        Ok(Ok(())) => tracing::debug!(peer = id, "cancel request forwarded to a peer"),
        Ok(Err(e)) => {
            tracing::warn!(peer = id, error = %e, "cannot reach a peer to forward a cancel request")
        }
        Err(_) => tracing::warn!(
            peer = id,
            "closing because: cancel_wait_timeout (the cancel request could not be forwarded to the peer in time)"
        ),
    }
    CancelOutcome::ToPeer(id)
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
    pub key: Secret,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_as_long_as_the_clients_protocol_and_only_exact_keys_match() {
        let reg = Arc::new(CancelRegistry::new(0));
        let old = reg.register(0);
        let new = reg.register(2);
        assert_eq!(old.key.as_bytes().len(), 4);
        assert_eq!(new.key.as_bytes().len(), 32);
        let t = CancelTarget {
            addr: "127.0.0.1:5432".parse().unwrap(),
            pid: 42,
            key: 7,
        };
        new.set_target(Some(t));
        assert_eq!(reg.target(new.pid, new.key.as_bytes()), Some(t));
        // A prefix, a longer key or another pid cancels nothing.
        assert_eq!(reg.target(new.pid, &new.key.as_bytes()[..4]), None);
        let mut longer = new.key.as_bytes().to_vec();
        longer.push(0);
        assert_eq!(reg.target(new.pid, &longer), None);
        assert_eq!(reg.target(new.pid ^ 1, new.key.as_bytes()), None);
        let pid = new.pid;
        let key = new.key;
        drop(new);
        assert_eq!(
            reg.target(pid, key.as_bytes()),
            None,
            "dropped keys are gone"
        );
        assert_eq!(
            reg.target(old.pid, old.key.as_bytes()),
            None,
            "no target yet"
        );
    }

    #[test]
    fn peered_keys_carry_the_instance_and_a_ttl() {
        let reg = Arc::new(CancelRegistry::new(0x0203));
        for minor in [0, 2] {
            let k = reg.register(minor);
            assert_eq!(peer_of(k.pid), 0x0203);
            assert!(k.pid > 0);
            let last = *k.key.as_bytes().last().unwrap();
            assert_eq!(last & TTL_MASK, TTL_MASK, "issued with the whole TTL");
            let t = CancelTarget {
                addr: "127.0.0.1:5432".parse().unwrap(),
                pid: 1,
                key: 2,
            };
            k.set_target(Some(t));
            // A request forwarded once or twice (fewer TTL bits) still matches.
            let mut forwarded = k.key.as_bytes().to_vec();
            *forwarded.last_mut().unwrap() -= 2;
            assert_eq!(reg.target(k.pid, &forwarded), Some(t));
        }
    }

    #[tokio::test]
    async fn requests_for_other_instances_are_forwarded_a_bounded_number_of_times() {
        let reg = Arc::new(CancelRegistry::new(1));
        let mut peers = BTreeMap::new();
        // A peer that takes the request: a listener on a free loopback port.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        peers.insert(
            2,
            Peer {
                host: "127.0.0.1".into(),
                port: l.local_addr().unwrap().port(),
                pool_size: None,
            },
        );
        let pid = with_peer(0x0011_2233, 2);
        let key = [9, 9, 9, 0x13];
        assert_eq!(
            reg.cancel(pid, &key, &peers, None).await,
            CancelOutcome::ToPeer(2)
        );
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut got)
            .await
            .unwrap();
        assert_eq!(&got[8..12], &pid.to_be_bytes());
        assert_eq!(&got[12..], &[9, 9, 9, 0x12], "one TTL step lower");
        // TTL 0: dropped; an id with no [peers] entry: dropped.
        assert_eq!(
            reg.cancel(pid, &[9, 9, 9, 0x10], &peers, None).await,
            CancelOutcome::TtlExhausted
        );
        assert_eq!(
            reg.cancel(with_peer(pid, 7), &key, &peers, None).await,
            CancelOutcome::UnknownPeer(7)
        );
        // Its own id: looked up here (and unknown).
        assert_eq!(
            reg.cancel(with_peer(pid, 1), &key, &peers, None).await,
            CancelOutcome::Unknown
        );
    }
}
