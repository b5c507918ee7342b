//! A network namespace joined to the host by a veth pair, where a test can make an address
//! silently drop every packet (a blackhole route). That is how a dead host, a partition or a
//! dropped NAT entry looks to TCP: no FIN, no RST, only silence — which a relay process on
//! loopback cannot imitate, since the kernel behind it keeps acknowledging.
//!
//! Sockets keep the namespace they were made in, so [`Netns::listen`] and [`Netns::connect`]
//! make theirs on a thread that has joined the namespace, and the test then uses them from
//! anywhere. Needs root and iproute2 (`ip`); [`Netns::require`] says what is missing. Every
//! `ip` command is bounded by the helper's own timeout; the namespace, the veth pair and the
//! routes are removed on drop.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

pub struct Netns {
    name: String,
    host_if: String,
    /// The host's end of the veth pair.
    pub host_ip: Ipv4Addr,
    /// The namespace's end.
    pub ns_ip: Ipv4Addr,
    /// Blackhole routes added (where, and for which address), removed on drop.
    routes: Mutex<Vec<(bool, Ipv4Addr)>>,
}

fn ip(args: &[&str], in_ns: Option<&str>) -> Result<(), String> {
    let mut cmd = match in_ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "ip"]);
            c
        }
        None => Command::new("ip"),
    };
    let out = cmd
        .args(args)
        .output()
        .map_err(|e| format!("run ip {args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    /// Whether this machine can run the tests (root and `ip`). In CI a missing piece is a
    /// failure (`.ci/setup` installs iproute2 and CI runs as root); elsewhere the caller skips.
    pub fn require() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let has_ip = Command::new("ip").arg("-V").output().is_ok();
        if root && has_ip {
            return true;
        }
        let why = format!("needs root and iproute2 (root: {root}, ip: {has_ip})");
        if std::env::var_os("CI").is_some() {
            panic!("the dead-peer tests {why}");
        }
        eprintln!("skipped: the dead-peer tests {why}");
        false
    }

    pub fn create() -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("pgh{pid}n{n}");
        let host_if = format!("ph{pid}h{n}");
        let ns_if = format!("ph{pid}n{n}");
        let third = ((pid % 250) + 1) as u8;
        let fourth = ((n * 4) % 252) as u8;
        let host_ip = Ipv4Addr::new(10, 231, third, fourth + 1);
        let ns_ip = Ipv4Addr::new(10, 231, third, fourth + 2);
        let ns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
            host_ip,
            ns_ip,
            routes: Mutex::new(Vec::new()),
        };
        let steps: Vec<(Vec<String>, bool)> = vec![
            (vec!["netns".into(), "add".into(), name.clone()], false),
            (
                vec![
                    "link".into(),
                    "add".into(),
                    host_if.clone(),
                    "type".into(),
                    "veth".into(),
                    "peer".into(),
                    "name".into(),
                    ns_if.clone(),
                ],
                false,
            ),
            (
                vec![
                    "link".into(),
                    "set".into(),
                    ns_if.clone(),
                    "netns".into(),
                    name.clone(),
                ],
                false,
            ),
            (
                vec![
                    "addr".into(),
                    "add".into(),
                    format!("{host_ip}/30"),
                    "dev".into(),
                    host_if.clone(),
                ],
                false,
            ),
            (
                vec!["link".into(), "set".into(), host_if.clone(), "up".into()],
                false,
            ),
            (
                vec![
                    "addr".into(),
                    "add".into(),
                    format!("{ns_ip}/30"),
                    "dev".into(),
                    ns_if.clone(),
                ],
                true,
            ),
            (vec!["link".into(), "set".into(), ns_if, "up".into()], true),
            (
                vec!["link".into(), "set".into(), "lo".into(), "up".into()],
                true,
            ),
        ];
        for (args, inside) in steps {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ip(&args, inside.then_some(name.as_str()))
                .unwrap_or_else(|e| panic!("set up network namespace {name}: {e}"));
        }
        ns
    }

    /// Run `f` on a thread inside the namespace (sockets it makes stay there).
    fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            // SAFETY: a valid namespace fd; only this short-lived thread changes namespace.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in the namespace")
    }

    /// A listener inside the namespace, on its veth address.
    pub fn listen(&self) -> TcpListener {
        let ip = self.ns_ip;
        let l = self.inside(move || TcpListener::bind((ip, 0)).expect("bind in the namespace"));
        l.set_nonblocking(true).unwrap();
        l
    }

    /// A connection made from inside the namespace.
    pub fn connect(&self, to: SocketAddr) -> TcpStream {
        let s = self.inside(move || {
            TcpStream::connect_timeout(&to, std::time::Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect to {to} from the namespace: {e}"))
        });
        s.set_nonblocking(true).unwrap();
        s
    }

    /// From now on the host silently drops what it sends to the namespace.
    pub fn blackhole_from_host(&self) {
        let dst = format!("{}/32", self.ns_ip);
        ip(&["route", "add", "blackhole", &dst], None).unwrap();
        self.routes.lock().unwrap().push((false, self.ns_ip));
    }

    /// From now on the namespace silently drops what it sends to the host.
    pub fn blackhole_from_ns(&self) {
        let dst = format!("{}/32", self.host_ip);
        ip(&["route", "add", "blackhole", &dst], Some(&self.name)).unwrap();
        self.routes.lock().unwrap().push((true, self.host_ip));
    }

    /// Remove the blackhole routes: packets flow again.
    pub fn heal(&self) {
        for (inside, addr) in self.routes.lock().unwrap().drain(..) {
            let dst = format!("{addr}/32");
            let _ = ip(
                &["route", "del", "blackhole", &dst],
                inside.then_some(self.name.as_str()),
            );
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.heal();
        let _ = ip(&["link", "del", &self.host_if], None);
        let _ = ip(&["netns", "del", &self.name], None);
    }
}
