//! Locating the PostgreSQL server binaries (`initdb`, `pg_ctl`, `postgres`, `psql`, `pgbench`).
//!
//! The search order is the one `.ci/setup` uses to decide whether PostgreSQL must be installed:
//! 1. `$PGHEAL_PG_BINDIR` (an explicit choice: it must contain `initdb`, no silent fallback);
//! 2. `pg_config --bindir`, when that directory contains `initdb`;
//! 3. the highest-numbered `/usr/lib/postgresql/*/bin` containing `initdb` (Debian/Ubuntu layout,
//!    where `/usr/bin` only holds the `pg_wrapper` client scripts and no `initdb`);
//! 4. `initdb` on `PATH`, symlinks resolved, so that `pg_ctl` is looked up next to the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::ClusterError;

/// Environment variable that overrides the binary search.
pub const BINDIR_ENV: &str = "PGHEAL_PG_BINDIR";

/// The directory found by [`find_bin_dir`], cached for the life of the process (only successes are
/// cached, so a failed search is repeated and reports the current state).
static BIN_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Finds (once per process) the directory holding `initdb` and `pg_ctl`.
pub fn bin_dir() -> Result<PathBuf, ClusterError> {
    if let Some(dir) = BIN_DIR.get() {
        return Ok(dir.clone());
    }
    let dir = find_bin_dir()?;
    Ok(BIN_DIR.get_or_init(|| dir).clone())
}

/// Runs the search described in the module docs without caching.
pub fn find_bin_dir() -> Result<PathBuf, ClusterError> {
    let mut searched = Vec::new();

    if let Some(dir) = std::env::var_os(BINDIR_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        if is_server_bin_dir(&dir) {
            return Ok(dir);
        }
        return Err(ClusterError::BinariesNotFound {
            searched: format!("${BINDIR_ENV}={} has no initdb and pg_ctl", dir.display()),
        });
    }
    searched.push(format!("${BINDIR_ENV} (unset)"));

    match pg_config_bindir() {
        Some(dir) if is_server_bin_dir(&dir) => return Ok(dir),
        Some(dir) => searched.push(format!("pg_config --bindir ({})", dir.display())),
        None => searched.push("pg_config --bindir (no pg_config)".to_string()),
    }

    if let Some(dir) = highest_debian_bin_dir(Path::new("/usr/lib/postgresql")) {
        return Ok(dir);
    }
    searched.push("/usr/lib/postgresql/*/bin".to_string());

    if let Some(dir) = path_bin_dir() {
        return Ok(dir);
    }
    searched.push("PATH".to_string());

    Err(ClusterError::BinariesNotFound {
        searched: searched.join(", "),
    })
}

/// True when `dir` holds the two programs the cluster needs from the server package.
fn is_server_bin_dir(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

fn pg_config_bindir() -> Option<PathBuf> {
    let output = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| PathBuf::from(text))
}

/// `/usr/lib/postgresql/<version>/bin` with the highest version that has `initdb`.
fn highest_debian_bin_dir(root: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    let mut best: Option<(Vec<u64>, PathBuf)> = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(version) = parse_version(&name.to_string_lossy()) else {
            continue;
        };
        let dir = entry.path().join("bin");
        if !is_server_bin_dir(&dir) {
            continue;
        }
        let better = match &best {
            Some((v, _)) => version > *v,
            None => true,
        };
        if better {
            best = Some((version, dir));
        }
    }
    best.map(|(_, dir)| dir)
}

/// "15" → [15], "9.6" → [9, 6]; anything else → None.
fn parse_version(name: &str) -> Option<Vec<u64>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn path_bin_dir() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("initdb");
        if !candidate.is_file() {
            continue;
        }
        let real = std::fs::canonicalize(&candidate).unwrap_or(candidate);
        if let Some(parent) = real.parent() {
            if is_server_bin_dir(parent) {
                return Some(parent.to_path_buf());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(parse_version("15"), Some(vec![15]));
        assert_eq!(parse_version("9.6"), Some(vec![9, 6]));
        assert_eq!(parse_version("common"), None);
        assert!(parse_version("16").unwrap_or_default() > parse_version("9.6").unwrap_or_default());
    }
}
