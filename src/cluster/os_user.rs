//! Who runs the server: PostgreSQL refuses to run as root.
//!
//! `initdb`, `pg_ctl` and `postgres` all exit with "cannot be run as root". CI machines and
//! containers usually run the test suite as root, so in that case the server programs are spawned
//! as the `postgres` OS user (created by the Debian `postgresql` package) through
//! [`std::os::unix::process::CommandExt::uid`]/`gid`, and the cluster directory is chowned to it.
//! Both lookups avoid `libc` and new dependencies: the effective uid comes from
//! `/proc/self/status` (or `id -u`), the `postgres` account from `/etc/passwd`.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

/// A numeric uid/gid pair the server programs run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OsUser {
    pub uid: u32,
    pub gid: u32,
}

/// The OS account name the server runs as when the tests run as root.
pub const SERVER_USER: &str = "postgres";

/// The effective uid of this process, or None when it cannot be determined.
pub fn effective_uid() -> Option<u32> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(uid) = parse_status_euid(&status) {
            return Some(uid);
        }
    }
    let output = Command::new("id")
        .arg("-u")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().ok()
}

/// `Uid:\treal\teffective\tsaved\tfs` → effective.
fn parse_status_euid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// True when this process runs as root.
pub fn is_root() -> bool {
    effective_uid() == Some(0)
}

/// Looks `name` up in `/etc/passwd`.
pub fn lookup(name: &str) -> Option<OsUser> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    parse_passwd(&passwd, name)
}

fn parse_passwd(passwd: &str, name: &str) -> Option<OsUser> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(OsUser { uid, gid })
    })
}

/// True when `user` may search (traverse) every directory from `/` down to and including `dir`.
pub fn can_traverse(user: OsUser, dir: &Path) -> bool {
    dir.ancestors().all(|d| match std::fs::metadata(d) {
        Ok(meta) => has_search_permission(user, &meta),
        Err(_) => false,
    })
}

fn has_search_permission(user: OsUser, meta: &Metadata) -> bool {
    let mode = meta.mode();
    if meta.uid() == user.uid {
        mode & 0o100 != 0
    } else if meta.gid() == user.gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_effective_uid() {
        let status =
            "Name:\tcargo\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_status_euid(status), Some(0));
    }

    #[test]
    fn parses_passwd_entry() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(
            parse_passwd(passwd, "postgres"),
            Some(OsUser { uid: 101, gid: 104 })
        );
        assert_eq!(parse_passwd(passwd, "post"), None);
    }
}
