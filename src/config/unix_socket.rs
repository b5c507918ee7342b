//! The Unix-domain socket clients may connect to: `unix_socket_dir/.s.PGSQL.<port>` (the name
//! libpq and every driver build from a directory and a port), `unix_socket_mode`,
//! `unix_socket_group`. PgBouncer's keys and defaults, with one rule of pgheal's own:
//!
//! - `unix_socket_dir` set (TOML, pgbouncer.ini, `--unix-socket-dir`, `PGHEAL_UNIX_SOCKET_DIR`):
//!   that directory; the empty string disables the socket, as in PgBouncer;
//! - not set: PgBouncer's default `/tmp`, but only when the TCP port is fixed. With `listen`
//!   on port 0 (a port the system picks, as the test suite and embedders do) there is no
//!   well-known socket name to create in a shared directory, so there is none. An explicit
//!   directory with port 0 gets the socket of the port actually bound.
//!
//! A pgbouncer.ini always has a fixed `listen_port`, so it behaves exactly as PgBouncer.
//! The socket itself (stale files, the mode, the group, removal at stop) is made by
//! [`crate::net::unix`].

use std::path::PathBuf;

use serde::Deserialize;

use super::cli::RunArgs;
use super::file::General;
use super::pgbouncer_keys::parse_c_int;
use super::ConfigError;

/// PgBouncer's default directory on Unix.
pub const DEFAULT_DIR: &str = "/tmp";
/// PgBouncer's default `unix_socket_mode`.
pub const DEFAULT_MODE: u32 = 0o777;

/// Where and how to make the Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocket {
    /// The directory the socket file `.s.PGSQL.<port>` is made in.
    pub dir: PathBuf,
    /// The file's permission bits (`unix_socket_mode`).
    pub mode: u32,
    /// The group the file is given (`unix_socket_group`); `None` leaves the process's.
    pub group: Option<String>,
}

impl UnixSocket {
    /// The socket file for the TCP port `port`, as libpq names it.
    pub fn path(&self, port: u16) -> PathBuf {
        self.dir.join(format!(".s.PGSQL.{port}"))
    }
}

/// `unix_socket_mode` in a TOML file: an integer (`0o770`) or PgBouncer's text (`"0770"`, C
/// integer syntax: a leading `0` is octal).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SocketMode {
    Int(i64),
    Text(String),
}

/// The Unix socket settings from the file and the command line (see the module docs for the
/// rule without `unix_socket_dir`). `listen_port` is the port of the first `listen` address.
pub fn unix_socket(
    g: &General,
    args: &RunArgs,
    listen_port: u16,
) -> Result<Option<UnixSocket>, ConfigError> {
    let dir = match args
        .unix_socket_dir
        .as_deref()
        .or(g.unix_socket_dir.as_deref())
    {
        Some("") => return Ok(None),
        Some(d) => d,
        None if listen_port == 0 => return Ok(None),
        None => DEFAULT_DIR,
    };
    if dir.starts_with('@') {
        return Err(ConfigError::new(
            "unix_socket_dir",
            format!("{dir}: sockets in the abstract namespace are not supported by pgheal yet"),
        ));
    }
    let mode = match &g.unix_socket_mode {
        None => DEFAULT_MODE,
        Some(m) => {
            let v = match m {
                SocketMode::Int(i) => Some(*i),
                SocketMode::Text(t) => parse_c_int(t),
            };
            match v
                .and_then(|v| u32::try_from(v).ok())
                .filter(|v| *v <= 0o7777)
            {
                Some(v) => v,
                None => {
                    return Err(ConfigError::new(
                        "unix_socket_mode",
                        format!("{m:?} is not a file mode (an octal number such as 0777)"),
                    ))
                }
            }
        }
    };
    Ok(Some(UnixSocket {
        dir: PathBuf::from(dir),
        mode,
        group: g.unix_socket_group.clone().filter(|g| !g.is_empty()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn general(dir: Option<&str>, mode: Option<SocketMode>) -> General {
        General {
            unix_socket_dir: dir.map(str::to_owned),
            unix_socket_mode: mode,
            ..Default::default()
        }
    }

    #[test]
    fn default_dir_only_with_a_fixed_port() {
        let args = RunArgs::default();
        let s = unix_socket(&general(None, None), &args, 6432)
            .expect("valid")
            .expect("a socket");
        assert_eq!(s.path(6432), PathBuf::from("/tmp/.s.PGSQL.6432"));
        assert_eq!(s.mode, 0o777);
        assert_eq!(
            unix_socket(&general(None, None), &args, 0).expect("valid"),
            None
        );
        let explicit = unix_socket(&general(Some("/run/x"), None), &args, 0)
            .expect("valid")
            .expect("a socket");
        assert_eq!(explicit.dir, PathBuf::from("/run/x"));
        assert_eq!(
            unix_socket(&general(Some(""), None), &args, 6432).expect("valid"),
            None
        );
    }

    #[test]
    fn the_flag_wins_and_empty_disables() {
        let args = RunArgs {
            unix_socket_dir: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(
            unix_socket(&general(Some("/run/x"), None), &args, 6432).expect("valid"),
            None
        );
        let args = RunArgs {
            unix_socket_dir: Some("/run/y".into()),
            ..Default::default()
        };
        let s = unix_socket(&general(None, None), &args, 0)
            .expect("valid")
            .expect("a socket");
        assert_eq!(s.dir, PathBuf::from("/run/y"));
    }

    #[test]
    fn modes_are_octal_as_in_pgbouncer() {
        let args = RunArgs::default();
        let mode =
            |m| unix_socket(&general(None, Some(m)), &args, 1).map(|s| s.expect("a socket").mode);
        assert_eq!(mode(SocketMode::Text("0770".into())).ok(), Some(0o770));
        assert_eq!(mode(SocketMode::Text("511".into())).ok(), Some(0o777));
        assert_eq!(mode(SocketMode::Int(0o700)).ok(), Some(0o700));
        assert!(mode(SocketMode::Text("rwx".into())).is_err());
        assert!(mode(SocketMode::Int(0o17777)).is_err());
        assert!(unix_socket(&general(Some("@abstract"), None), &args, 1).is_err());
    }
}
