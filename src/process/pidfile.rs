//! `pidfile =`: PgBouncer's `check_pidfile` / `write_pidfile` / `remove_pidfile`. Before
//! starting, a pid file naming a live process stops the start (another instance runs); a stale
//! one is removed. Once listening, the file gets our pid; at exit it is removed if it still
//! names us.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    #[error("pidfile {0} names process {1}, which is running: is pgheal (or PgBouncer) already running?")]
    Running(PathBuf, i32),
    #[error("pidfile {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Refuses a pid file that names a running process (other than us); removes a stale one.
pub fn check(path: &Path) -> Result<(), PidFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PidFileError::Io(path.to_owned(), e)),
    };
    if let Ok(pid) = text.trim().parse::<i32>() {
        if pid > 0 && pid != std::process::id() as i32 && alive(pid) {
            return Err(PidFileError::Running(path.to_owned(), pid));
        }
    }
    std::fs::remove_file(path).map_err(|e| PidFileError::Io(path.to_owned(), e))
}

/// Writes our pid (the file must not exist: [`check`] removed a stale one).
pub fn write(path: &Path) -> Result<(), PidFileError> {
    use std::io::Write;
    let io = |e| PidFileError::Io(path.to_owned(), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io)?;
    writeln!(f, "{}", std::process::id()).map_err(io)
}

/// Writes our pid over the file of the process this one took over (`-R`): a new file renamed
/// into place, so the path never names nobody, and the old process (which removes the file
/// only if it still names it) leaves ours alone.
pub fn replace(path: &Path) -> Result<(), PidFileError> {
    let io = |e| PidFileError::Io(path.to_owned(), e);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.new", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{}\n", std::process::id())).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Removes the file if it still names this process.
pub fn remove(path: &Path) {
    let ours =
        std::fs::read_to_string(path).is_ok_and(|t| t.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_files_go_and_live_ones_stop_the_start() {
        let dir = std::env::temp_dir().join(format!("pgheal-pidfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.pid");

        check(&path).expect("no file is fine");
        write(&path).unwrap();
        // Our own pid is not "another instance".
        check(&path).expect("our own pid");
        write(&path).unwrap();
        assert!(write(&path).is_err(), "the file exists already");
        remove(&path);
        assert!(!path.exists());

        // pid 1 is always running.
        std::fs::write(&path, "1\n").unwrap();
        assert!(matches!(check(&path), Err(PidFileError::Running(_, 1))));
        remove(&path);
        assert!(path.exists(), "not ours: left alone");

        // Garbage and dead pids are stale.
        std::fs::write(&path, "not a pid").unwrap();
        check(&path).unwrap();
        assert!(!path.exists());
        std::fs::write(&path, format!("{}\n", i32::MAX)).unwrap();
        check(&path).unwrap();
        assert!(!path.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
