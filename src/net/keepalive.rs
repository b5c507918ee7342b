//! Applying [`TcpKeepalive`] to a socket (see [`crate::config::keepalive`] for why).
//!
//! socket2 sets the options: it is what tokio itself uses underneath, and it knows each
//! platform's names for them (`TCP_KEEPIDLE` vs `TCP_KEEPALIVE`, `TCP_USER_TIMEOUT`).

use std::os::fd::AsFd;

use socket2::SockRef;

use crate::config::keepalive::TcpKeepalive;

/// Set keepalive and the user timeout on a connected TCP socket. With `enabled` off, only
/// SO_KEEPALIVE is cleared (and the user timeout still applies when set, as in PgBouncer).
pub fn apply(socket: &impl AsFd, k: &TcpKeepalive) -> std::io::Result<()> {
    let sock = SockRef::from(socket);
    if k.enabled {
        let mut params = socket2::TcpKeepalive::new();
        if let Some(idle) = k.idle {
            params = params.with_time(idle);
        }
        if let Some(interval) = k.interval {
            params = params.with_interval(interval);
        }
        if let Some(count) = k.count {
            params = params.with_retries(count);
        }
        sock.set_tcp_keepalive(&params)?;
    } else {
        sock.set_keepalive(false)?;
    }
    if let Some(t) = k.user_timeout {
        sock.set_tcp_user_timeout(Some(t))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn options_reach_the_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let k = TcpKeepalive {
            enabled: true,
            idle: Some(Duration::from_secs(7)),
            interval: Some(Duration::from_secs(3)),
            count: Some(5),
            user_timeout: Some(Duration::from_millis(4500)),
        };
        apply(&s, &k).unwrap();
        let r = SockRef::from(&s);
        assert!(r.keepalive().unwrap());
        assert_eq!(r.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
        assert_eq!(r.tcp_keepalive_interval().unwrap(), Duration::from_secs(3));
        assert_eq!(r.tcp_keepalive_retries().unwrap(), 5);
        assert_eq!(
            r.tcp_user_timeout().unwrap(),
            Some(Duration::from_millis(4500))
        );

        apply(
            &s,
            &TcpKeepalive {
                enabled: false,
                ..TcpKeepalive::default()
            },
        )
        .unwrap();
        assert!(!r.keepalive().unwrap());
    }
}
