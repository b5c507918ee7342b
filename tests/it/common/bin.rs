//! The pgheal binary as a test runs it: no `PGHEAL_*` variable inherited, output piped, killed
//! when dropped; and signals sent to it.

use std::process::Stdio;

use tokio::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_pgheal");

/// The binary, with no `PGHEAL_*` (or systemd) variable inherited from the environment.
pub fn pgheal_cmd() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PGHEAL_") || k == "NOTIFY_SOCKET" {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Send `signal` (`TERM`, `INT`, `USR1`, ...) to process `pid`.
pub fn send_signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -{signal} {pid}");
}
