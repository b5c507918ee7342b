//! `-u USER` / `user = USER`: become that OS user (its uid, primary gid and supplementary
//! groups) once the listener is bound. PgBouncer switches before binding; switching after lets
//! pgheal bind a privileged port first and loses nothing. Like PgBouncer, it only works when
//! started as root, or as that user already.
//!
//! glibc and musl apply `setuid`/`setgid` to every thread of the process, so the event loops
//! started before the switch run as the new user too.

use std::ffi::CString;

#[derive(Debug, thiserror::Error)]
pub enum SwitchUserError {
    #[error("no OS user named {0:?}")]
    NoSuchUser(String),
    #[error("cannot switch to OS user {0:?}: only root can (running as uid {1})")]
    NotRoot(String, u32),
    #[error("cannot switch to OS user {0:?}: {1}: {2}")]
    Failed(String, &'static str, std::io::Error),
}

/// (uid, gid) of `name` from the system's user database.
fn lookup(name: &str) -> Result<(libc::uid_t, libc::gid_t), SwitchUserError> {
    let no_such = || SwitchUserError::NoSuchUser(name.to_owned());
    let c_name = CString::new(name).map_err(|_| no_such())?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value to be overwritten by getpwnam_r.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the duration of the call; `buf` outlives the use of
    // `pwd`'s string fields (we only read the numeric ids).
    let r = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if r != 0 || found.is_null() {
        return Err(no_such());
    }
    Ok((pwd.pw_uid, pwd.pw_gid))
}

/// Switches the whole process to OS user `name`.
pub fn switch_to(name: &str) -> Result<(), SwitchUserError> {
    let (uid, gid) = lookup(name)?;
    // SAFETY: plain system calls without pointers.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if euid == uid && egid == gid {
        return Ok(());
    }
    if euid != 0 {
        return Err(SwitchUserError::NotRoot(name.to_owned(), euid));
    }
    let failed =
        |what| SwitchUserError::Failed(name.to_owned(), what, std::io::Error::last_os_error());
    let c_name = CString::new(name).map_err(|_| SwitchUserError::NoSuchUser(name.to_owned()))?;
    // SAFETY: c_name is a valid C string; the others take plain ids. Group first: after setuid
    // we could no longer change it.
    unsafe {
        if libc::initgroups(c_name.as_ptr(), gid) != 0 {
            return Err(failed("initgroups"));
        }
        if libc::setgid(gid) != 0 {
            return Err(failed("setgid"));
        }
        if libc::setuid(uid) != 0 {
            return Err(failed("setuid"));
        }
    }
    Ok(())
}

/// Give `path` (the Unix socket file, made before the switch) to OS user `name`, as if that
/// user had made it, as PgBouncer's socket is (it switches before binding): the owner only, so
/// `unix_socket_group` stays. Lets the switched process remove the file at stop, even from a
/// sticky directory such as /tmp.
pub fn give_to(path: &std::path::Path, name: &str) -> Result<(), SwitchUserError> {
    use std::os::unix::ffi::OsStrExt;
    let (uid, _) = lookup(name)?;
    // SAFETY: a plain system call without pointers.
    if unsafe { libc::geteuid() } == uid {
        return Ok(());
    }
    let failed = |e| SwitchUserError::Failed(name.to_owned(), "chown of the Unix socket", e);
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a NUL byte in the path",
        ))
    })?;
    // SAFETY: a valid C string; gid -1 leaves the group unchanged.
    if unsafe { libc::chown(c_path.as_ptr(), uid, libc::gid_t::MAX) } != 0 {
        return Err(failed(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_users_are_refused_by_name() {
        let e = switch_to("pgheal-no-such-user").unwrap_err();
        assert!(matches!(e, SwitchUserError::NoSuchUser(_)));
        assert!(e.to_string().contains("pgheal-no-such-user"));
        assert!(lookup("root").is_ok_and(|(uid, gid)| uid == 0 && gid == 0));
    }
}
