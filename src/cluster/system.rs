//! The operating-system chores of a throwaway cluster: its private directory, the watchdog
//! that cleans up after a process that died without dropping its cluster, a free port,
//! running PostgreSQL's programs, and reading and writing the cluster's files as the server's
//! OS user. [`super::TempCluster`] calls these; none of them knows about PostgreSQL settings.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::os_user::{self, OsUser};
use super::{ClusterError, HOST};

/// Unix socket paths are limited to 107 bytes; keep room for `/.s.PGSQL.65535`.
const MAX_SOCKET_DIR_LEN: usize = 90;

/// Counter making directory names unique within the process.
static DIR_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates `$TMPDIR/pgheal-<pid>-<counter>-<nanos>` (mode 0700, owned by the server user).
pub(super) fn create_cluster_dir(server_user: Option<OsUser>) -> Result<PathBuf, ClusterError> {
    let mut base = std::env::temp_dir();
    let fallback = Path::new("/tmp");
    if let Some(user) = server_user {
        if !os_user::can_traverse(user, &base) {
            if os_user::can_traverse(user, fallback) {
                base = fallback.to_path_buf();
            } else {
                return Err(ClusterError::TempDirNotReachable(base));
            }
        }
    }
    // The Unix socket lives in this directory and its path has a hard length limit.
    if base.as_os_str().len() + 40 > MAX_SOCKET_DIR_LEN && fallback.is_dir() {
        base = fallback.to_path_buf();
    }
    let pid = std::process::id();
    let mut last_err = None;
    for _ in 0..100 {
        let counter = DIR_COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("pgheal-{pid}-{counter}-{nanos}"));
        match fs::create_dir(&dir) {
            Ok(()) => {
                let owned = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .and_then(|()| chown_to(&dir, server_user));
                if let Err(e) = owned {
                    let _ = fs::remove_dir_all(&dir);
                    return Err(ClusterError::io(format!("preparing {}", dir.display()), e));
                }
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => {
                return Err(ClusterError::io(format!("creating {}", dir.display()), e));
            }
        }
    }
    Err(ClusterError::io(
        format!("creating a cluster directory in {}", base.display()),
        last_err.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
    ))
}

/// Shell script run by the watchdog: `$1` owning pid, `$2` cluster dir, `$3` data dir.
/// Waits while the owner lives and the directory exists; if the owner died first, stops the
/// postmaster (SIGQUIT = immediate shutdown) and deletes the directory.
const WATCHDOG_SCRIPT: &str = r#"
trap '' INT HUP PIPE
owner=$1 dir=$2 data=$3
while kill -0 "$owner" 2>/dev/null && [ -d "$dir" ]; do sleep 1; done
[ -d "$dir" ] || exit 0
if [ -f "$data/postmaster.pid" ]; then
  pid=$(head -n 1 "$data/postmaster.pid")
  if [ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null; then
    i=0
    while [ "$i" -lt 30 ] && kill -0 "$pid" 2>/dev/null; do sleep 1; i=$((i + 1)); done
  fi
fi
rm -rf "$dir"
"#;

/// Starts the watchdog in its own process group (so a terminal's Ctrl-C does not reach it).
/// It runs as the current user: as root it may signal the postmaster and delete the directory.
/// A failure to start it only loses the crash cleanup, so it is not an error.
pub(super) fn spawn_watchdog(dir: &Path, data_dir: &Path) -> Option<Child> {
    Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("pgheal-cluster-watchdog")
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()
}

/// A port the kernel considers free right now on 127.0.0.1.
pub(super) fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind((HOST, 0))
        .map_err(|e| ClusterError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| ClusterError::io("reading the probe socket's port", e))?
        .port();
    Ok(port)
}

/// True when the server log says the listen address was taken.
pub(super) fn is_port_clash(log: &str) -> bool {
    log.contains("Address already in use")
        || log.contains("could not bind IPv4 address")
        || log.contains("could not create any TCP/IP sockets")
}

/// Runs a PostgreSQL program to completion; a non-zero exit becomes [`ClusterError::CommandFailed`]
/// with its stderr and stdout.
pub(super) fn run(mut command: Command, program: &str) -> Result<Output, ClusterError> {
    let output = command
        .output()
        .map_err(|e| ClusterError::io(format!("running {program}"), e))?;
    if output.status.success() {
        return Ok(output);
    }
    let mut text = String::from_utf8_lossy(&output.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stdout.trim());
    }
    Err(ClusterError::CommandFailed {
        program: program.to_string(),
        status: output.status.to_string(),
        output: text,
    })
}

/// Writes a file with `mode`, owned by the server user when there is one.
pub(super) fn write_owned(
    path: &Path,
    contents: &[u8],
    mode: u32,
    owner: Option<OsUser>,
) -> Result<(), ClusterError> {
    fs::write(path, contents)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
        .and_then(|()| chown_to(path, owner))
        .map_err(|e| ClusterError::io(format!("writing {}", path.display()), e))
}

pub(super) fn chown_to(path: &Path, owner: Option<OsUser>) -> io::Result<()> {
    match owner {
        Some(user) => std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)),
        None => Ok(()),
    }
}

pub(super) fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The file's contents from byte `offset` on, lossily decoded; empty when unreadable.
pub(super) fn read_lossy(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    let read = fs::File::open(path).and_then(|mut file| {
        file.seek(SeekFrom::Start(offset))?;
        file.read_to_end(&mut bytes)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

pub(super) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_port_clash_in_log() {
        let log = "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use\n\
                   WARNING:  could not create listen socket for \"127.0.0.1\"\n\
                   FATAL:  could not create any TCP/IP sockets\n";
        assert!(is_port_clash(log));
        assert!(!is_port_clash("FATAL:  data directory has wrong ownership"));
    }
}
