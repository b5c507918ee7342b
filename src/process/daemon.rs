//! `-d`: run in the background, as PgBouncer's `go_daemon` does (fork, `setsid`, fork again,
//! standard streams to `/dev/null`), with one addition: the first process waits on a pipe until
//! the background one reports that it is listening, so its exit code tells the truth about the
//! start (PgBouncer's parent exits 0 before it even binds).
//!
//! [`detach`] must run before any other thread exists: `fork` copies only the calling thread.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

/// Which side of [`detach`] this process is on.
pub enum Detached {
    /// The process that was started: exit with this code (0 once the daemon is listening).
    Parent(u8),
    /// The background process: carry on, and say how the start went through the pipe.
    Daemon(Readiness),
}

/// The background process's end of the readiness pipe.
pub struct Readiness {
    pipe: File,
}

const READY: &[u8] = b"ready\n";

impl Readiness {
    /// The listener is bound: the waiting parent exits 0.
    pub fn ready(mut self) {
        let _ = self.pipe.write_all(READY);
    }

    /// The start failed: the waiting parent prints `message` and exits 1.
    pub fn failed(mut self, message: &str) {
        let _ = self.pipe.write_all(message.as_bytes());
    }
}

fn last_os_error(what: &str) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Forks into the background. Call it while the process has a single thread.
pub fn detach() -> std::io::Result<Detached> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, which has room for them.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(last_os_error("pipe"));
    }
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the caller guarantees a single thread; the child only calls async-signal-safe
    // functions (setsid, fork, open, dup2, _exit) before returning to ordinary code.
    match unsafe { libc::fork() } {
        -1 => Err(last_os_error("fork")),
        0 => {
            drop(read_end);
            // SAFETY: see above.
            unsafe {
                if libc::setsid() < 0 {
                    libc::_exit(1);
                }
                match libc::fork() {
                    -1 => libc::_exit(1),
                    0 => {}
                    _ => libc::_exit(0),
                }
                let devnull = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
                if devnull >= 0 {
                    libc::dup2(devnull, 0);
                    libc::dup2(devnull, 1);
                    libc::dup2(devnull, 2);
                    if devnull > 2 {
                        libc::close(devnull);
                    }
                }
            }
            Ok(Detached::Daemon(Readiness {
                pipe: File::from(write_end),
            }))
        }
        child => {
            drop(write_end);
            let mut status = 0;
            // SAFETY: `child` is our child; the intermediate process exits at once.
            unsafe { libc::waitpid(child, &mut status, 0) };
            let mut said = Vec::new();
            let _ = File::from(read_end).read_to_end(&mut said);
            if said == READY {
                return Ok(Detached::Parent(0));
            }
            let said = String::from_utf8_lossy(&said);
            if said.trim().is_empty() {
                eprintln!("pgheal: the background process exited before it was listening (see the logfile)");
            } else {
                eprintln!("pgheal: {}", said.trim_end());
            }
            Ok(Detached::Parent(1))
        }
    }
}
