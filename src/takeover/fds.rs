//! The takeover socket's framing: a message is a 4-byte big-endian length and a JSON body,
//! sent with at most one file descriptor as `SCM_RIGHTS` ancillary data.
//!
//! Why a length prefix and blocking sockets: on a Unix stream socket, ancillary data travels
//! with the first byte of the `sendmsg` that carried it, and Linux never merges two sends that
//! carry descriptors into one `recvmsg`. Reading the 4 header bytes with `recvmsg` therefore
//! always picks up the descriptor of that message and nothing else; the body is then read with
//! plain reads. Both ends are short-lived, one connection each, so blocking I/O on a thread of
//! their own is simpler and safer than teaching tokio's buffered readers about ancillary data.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// The longest message accepted (a client with many prepared statements is the biggest).
pub const MAX_MESSAGE: usize = 64 << 20;

/// Send `body` with `fd` attached (if any).
pub fn send(sock: &UnixStream, body: &[u8], fd: Option<RawFd>) -> io::Result<()> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|l| (*l as usize) <= MAX_MESSAGE)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "takeover message too long"))?;
    let mut msg = Vec::with_capacity(4 + body.len());
    msg.extend_from_slice(&len.to_be_bytes());
    msg.extend_from_slice(body);
    let mut iov = libc::iovec {
        iov_base: msg.as_mut_ptr().cast(),
        iov_len: msg.len(),
    };
    // Room for one descriptor (aligned as the kernel wants it).
    let mut cbuf = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    if let Some(fd) = fd {
        // SAFETY: CMSG_SPACE is a pure computation.
        let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
        hdr.msg_control = cbuf.as_mut_ptr().cast();
        hdr.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` bytes (<= sizeof cbuf), so the first header
        // fits; its data area holds one RawFd.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&hdr);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<RawFd>(), fd);
        }
    }
    let sent = loop {
        // SAFETY: a valid socket and a msghdr whose pointers are valid for the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &hdr, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    // The descriptor went with the first byte; the rest (a short send) goes plainly.
    (&*sock).write_all(&msg[sent..])
}

/// Receive one message and its descriptor. `Ok(None)`: the peer closed the connection between
/// messages.
pub fn recv(sock: &UnixStream) -> io::Result<Option<(Vec<u8>, Option<OwnedFd>)>> {
    let mut head = [0u8; 4];
    let mut got = 0;
    let mut fd = None;
    while got < 4 {
        let mut iov = libc::iovec {
            iov_base: head[got..].as_mut_ptr().cast(),
            iov_len: 4 - got,
        };
        let mut cbuf = [0u64; 8];
        // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the call.
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = cbuf.as_mut_ptr().cast();
        hdr.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        // SAFETY: a valid socket and a msghdr whose pointers are valid for the call;
        // MSG_CMSG_CLOEXEC keeps received descriptors from leaking into children.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut hdr, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: the kernel filled msg_control with `msg_controllen` bytes of cmsghdrs;
        // CMSG_FIRSTHDR/NXTHDR stay within them.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&hdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c).cast::<RawFd>();
                    let n = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                        / std::mem::size_of::<RawFd>();
                    for i in 0..n {
                        let raw = std::ptr::read_unaligned(data.add(i));
                        // Every descriptor received is owned (closed if not the first).
                        let owned = OwnedFd::from_raw_fd(raw);
                        if fd.is_none() {
                            fd = Some(owned);
                        }
                    }
                }
                c = libc::CMSG_NXTHDR(&hdr, c);
            }
        }
        if hdr.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("takeover: descriptors were truncated"));
        }
        if n == 0 {
            return if got == 0 && fd.is_none() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n as usize;
    }
    let len = u32::from_be_bytes(head) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "takeover message too long",
        ));
    }
    let mut body = vec![0; len];
    (&*sock).read_exact(&mut body)?;
    Ok(Some((body, fd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_descriptor_and_only_theirs() {
        let (a, b) = UnixStream::pair().expect("pair");
        let (x, mut y) = UnixStream::pair().expect("pair");
        let x_fd = x.as_raw_fd();
        // A sender of its own: the big message does not fit in the socket buffer at once.
        let sender = std::thread::spawn(move || {
            send(&a, b"first", Some(x_fd)).expect("send");
            send(&a, b"second", None).expect("send");
            send(&a, &vec![7u8; 300_000], Some(x_fd)).expect("send");
        });
        let (body, fd) = recv(&b).expect("recv").expect("a message");
        assert_eq!(body, b"first");
        let passed = UnixStream::from(fd.expect("a descriptor"));
        (&passed).write_all(b"via the passed fd").expect("write");
        drop(passed);
        let (body, fd) = recv(&b).expect("recv").expect("a message");
        assert_eq!((body.as_slice(), fd.is_none()), (&b"second"[..], true));
        let (body, fd) = recv(&b).expect("recv").expect("a message");
        assert_eq!((body.len(), fd.is_some()), (300_000, true));
        drop(fd);
        sender.join().expect("the sender");
        drop(x);
        assert!(recv(&b).expect("eof").is_none());
        let mut s = String::new();
        y.read_to_string(&mut s).expect("read");
        assert_eq!(s, "via the passed fd");
    }
}
