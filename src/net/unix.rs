//! The Unix-domain socket clients may connect to (`unix_socket_dir/.s.PGSQL.<port>`), made as
//! PgBouncer makes it, with one safety PgBouncer leaves out.
//!
//! - A file left at the path by a process that died (nothing accepts on it: `connect` is
//!   refused) is replaced. PgBouncer unlinks whatever is there; pgheal first tries to connect,
//!   and a socket some process still listens on is an error (`another process is listening`),
//!   unless `so_reuseport` is on: then, as PgBouncer, the new process takes the name over
//!   (rolling restart) and the old one keeps serving the clients it has.
//! - Something at the path that is not a socket is never removed: an error.
//! - `unix_socket_mode` and `unix_socket_group` are applied to the file once it is bound.
//! - [`SocketFile`] removes the file when dropped (the listener stops), but only if it is still
//!   the file this process made (same device and inode): after a takeover, the old process must
//!   not remove the new one's socket.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::config::unix_socket::UnixSocket;

/// The socket file this process made; removed on drop if it is still there.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The socket file of a listener handed over by an old process (online restart): this
    /// process removes it when it stops, as if it had made it.
    pub fn adopt(path: PathBuf) -> io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(&path)?;
        Ok(SocketFile {
            path,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Leave the file in place: a new process took the listener over (online restart).
    pub fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the Unix socket file");
                }
            }
            // Gone, or another process's socket now (a takeover): leave it.
            _ => {}
        }
    }
}

/// Listen on `settings.path(port)`. Errors name the path.
pub fn bind(
    settings: &UnixSocket,
    port: u16,
    take_over: bool,
) -> io::Result<(UnixListener, SocketFile)> {
    let path = settings.path(port);
    let fail = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", path.display()),
        )
    };
    clear_path(&path, take_over).map_err(fail)?;
    let listener = UnixListener::bind(&path).map_err(fail)?;
    let meta = std::fs::symlink_metadata(&path).map_err(fail)?;
    let file = SocketFile {
        path: path.clone(),
        dev: meta.dev(),
        ino: meta.ino(),
    };
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(settings.mode))
        .map_err(|e| fail(io::Error::new(e.kind(), format!("unix_socket_mode: {e}"))))?;
    if let Some(group) = &settings.group {
        let gid = group_id(group).map_err(fail)?;
        chown_group(&path, gid).map_err(|e| {
            fail(io::Error::new(
                e.kind(),
                format!("unix_socket_group {group:?}: {e}"),
            ))
        })?;
    }
    Ok((listener, file))
}

/// Make room for the socket at `path` (see the module docs).
fn clear_path(path: &Path, take_over: bool) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a file that is not a socket is in the way",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) if take_over => {
            tracing::info!(path = %path.display(), "so_reuseport: taking over the Unix socket of the process listening on it");
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "another process is listening",
            ))
        }
        Err(e) => {
            tracing::info!(path = %path.display(), error = %e, "replacing a stale Unix socket file");
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The id of the OS group `name` (or a number).
fn group_id(name: &str) -> io::Result<libc::gid_t> {
    let not_found = || {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("unix_socket_group: no OS group named {name:?}"),
        )
    };
    let c_name = CString::new(name).map_err(|_| not_found())?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero group is a valid value to be overwritten by getgrnam_r.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call; only the numeric id is read.
    let r = unsafe {
        libc::getgrnam_r(
            c_name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if r == 0 && !found.is_null() {
        return Ok(grp.gr_gid);
    }
    name.parse().map_err(|_| not_found())
}

/// Give `path` the group `gid` (the owner stays).
fn chown_group(path: &Path, gid: libc::gid_t) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
    // SAFETY: a valid C string; uid -1 leaves the owner unchanged.
    let r = unsafe { libc::chown(c_path.as_ptr(), libc::uid_t::MAX, gid) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The OS user name of `uid` (a peer's, from SO_PEERCRED), from the system's user database.
pub fn user_name(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value to be overwritten by getpwuid_r.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call; `pw_name` points into `buf`,
    // which outlives its use below.
    let r = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if r != 0 || found.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: getpwuid_r succeeded: pw_name is a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// The real user id of this process (PgBouncer compares a console client's with it).
pub fn own_uid() -> libc::uid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> UnixSocket {
        UnixSocket {
            dir: dir.to_owned(),
            mode: 0o700,
            group: None,
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pgheal-unix-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[tokio::test]
    async fn stale_files_are_replaced_live_ones_refused_and_removed_when_dropped() {
        let dir = temp_dir("bind");
        let s = settings(&dir);
        // A stale socket: bound, then its listener closed without removing the file.
        drop(std::os::unix::net::UnixListener::bind(s.path(1)).expect("bind"));
        let (live, file) = bind(&s, 1, false).expect("the stale file is replaced");
        let meta = std::fs::metadata(file.path()).expect("socket file");
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
        let e = bind(&s, 1, false).expect_err("a live socket");
        assert!(
            e.to_string().contains("another process is listening"),
            "{e}"
        );
        // A takeover: the old file must survive the old owner's drop.
        let (_new, new_file) = bind(&s, 1, true).expect("takeover");
        drop(file);
        drop(live);
        assert!(new_file.path().exists());
        drop(new_file);
        assert!(!s.path(1).exists());
        std::fs::write(s.path(2), b"x").expect("a plain file");
        let e = bind(&s, 2, false).expect_err("not a socket");
        assert!(e.to_string().contains("not a socket"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_of_users_and_groups() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(group_id("root").ok(), Some(0));
        assert!(group_id("pgheal-no-such-group").is_err());
    }
}
