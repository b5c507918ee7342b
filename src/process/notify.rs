//! systemd's readiness protocol (`sd_notify`), without libsystemd: one datagram to the socket in
//! `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). PgBouncer's unit file uses
//! `Type=notify`; without `READY=1` systemd would kill pgheal after its start timeout.

/// Sends `state` (`READY=1`, `STOPPING=1`, ...) if pgheal runs under systemd with a notify
/// socket; does nothing otherwise. Failures are returned for the log, never fatal.
pub fn notify(state: &str) -> std::io::Result<()> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(target) => send(&target.to_string_lossy(), state),
        None => Ok(()),
    }
}

/// Sends `state` to the notify socket `target`.
fn send(target: &str, state: &str) -> std::io::Result<()> {
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(state.as_bytes(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn sends_one_datagram_to_a_path_or_an_abstract_name() {
        let path = std::env::temp_dir().join(format!("pgheal-notify-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        send(&path.to_string_lossy(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_file(&path);

        use std::os::linux::net::SocketAddrExt;
        let name = format!("pgheal-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        send(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
