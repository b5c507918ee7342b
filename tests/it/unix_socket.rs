//! The Unix socket listener against real PostgreSQL: psql and tokio-postgres over
//! `unix_socket_dir/.s.PGSQL.<port>` to a pool and to the admin console, the file's mode, a
//! stale file replaced and a live one refused, `peer` lines of `auth_hba_file` (the tests run
//! as root, so the peer is `root`), PgBouncer's own-OS-user console login, the file removed at
//! stop, and `unix_socket_dir = ""` meaning no socket.

use crate::common;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::bin::{pgheal_cmd, send_signal};
use common::certs::Dir;
use common::client_tls::psql;
use common::console::{named_rows, stop_now, Row};
use common::login::{current_user, login_error};
use common::*;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::FileConfig;
use pgheal::proxy::ProxyHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN_PW: &str = "admin-pw";
const ROOT_PW: &str = "root-pw";

/// pgheal in front of `pg` on 127.0.0.1:`port` (0: any), with `extra` added to `[pgheal]`;
/// users app, admin (an admin_user) and root are known.
async fn proxy(pg: &pgheal::cluster::TempCluster, port: u16, extra: &str) -> ProxyHandle {
    let file: FileConfig = toml::from_str(&format!(
        "[pgheal]\npool_size = 2\nadmin_users = [\"admin\"]\n{extra}\n\
         [users]\n{USER} = \"{PASSWORD}\"\nadmin = \"{ADMIN_PW}\"\nroot = \"{ROOT_PW}\"\n"
    ))
    .expect("test TOML");
    let args = RunArgs {
        listen: Some(format!("127.0.0.1:{port}")),
        upstream: Some(pg.url(USER, PASSWORD, DB)),
        ..Default::default()
    };
    start_proxy_with(file, &args).await
}

/// A tokio-postgres conninfo over the Unix socket in `dir`.
fn over_socket(dir: &Path, port: u16, user: &str, password: &str, db: &str) -> String {
    format!(
        "host={} port={port} user={user} password={password} dbname={db}",
        dir.display()
    )
}

/// The rows of a simple query, each as (column, value) pairs.
async fn rows(c: &tokio_postgres::Client, sql: &str) -> Vec<Row> {
    let msgs = tokio::time::timeout(Duration::from_secs(10), c.simple_query(sql))
        .await
        .unwrap_or_else(|_| panic!("{sql} did not answer within 10 s"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    named_rows(&msgs)
}

fn col<'a>(row: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    row.iter()
        .find(|(c, _)| c == name)
        .and_then(|(_, v)| v.as_deref())
}

fn socket_path(p: &ProxyHandle) -> PathBuf {
    p.unix_socket
        .clone()
        .expect("pgheal listens on a Unix socket")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_over_the_socket_to_a_pool_and_to_the_console() {
    let pg = start_pg();
    let dir = Dir::new("unix-psql");
    let p = proxy(
        &pg,
        0,
        &format!(
            "unix_socket_dir = \"{}\"\nunix_socket_mode = \"0770\"",
            dir.0.display()
        ),
    )
    .await;
    let port = p.addr.port();
    let path = socket_path(&p);
    assert_eq!(path, dir.0.join(format!(".s.PGSQL.{port}")));
    let meta = std::fs::metadata(&path).expect("the socket file");
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o770,
        "unix_socket_mode"
    );

    // psql to a pooled database.
    let host = dir.0.display().to_string();
    let (ok, out) = psql(
        &format!("host={host} port={port} user={USER} dbname={DB}"),
        PASSWORD,
        "SELECT 40 + 2",
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "42");

    // A client kept open over the socket, seen in SHOW CLIENTS as PgBouncer shows it.
    let app = connect(&over_socket(&dir.0, port, USER, PASSWORD, DB)).await;
    app.simple_query("SELECT 1").await.expect("a query");

    // psql to the admin console: SHOW POOLS.
    let (ok, out) = psql(
        &format!("host={host} port={port} user=admin dbname=pgbouncer"),
        ADMIN_PW,
        "SHOW POOLS",
    )
    .await;
    assert!(ok, "{out}");
    let pool = out
        .lines()
        .find(|l| l.starts_with(&format!("{DB}|{USER}|")))
        .unwrap_or_else(|| panic!("no pool {DB}/{USER} in SHOW POOLS: {out}"));
    // database|user|cl_active|...: the kept-open client is active.
    assert_eq!(pool.split('|').nth(2), Some("1"), "{out}");

    let console = connect(&over_socket(&dir.0, port, "admin", ADMIN_PW, "pgbouncer")).await;
    let clients = rows(&console, "SHOW CLIENTS").await;
    let row = clients
        .iter()
        .find(|r| col(r, "database") == Some(DB))
        .unwrap_or_else(|| panic!("the app client in SHOW CLIENTS: {clients:?}"));
    assert_eq!(col(row, "addr"), Some("unix"), "{row:?}");
    assert_eq!(col(row, "port"), Some(port.to_string().as_str()), "{row:?}");
    assert_eq!(col(row, "local_addr"), Some("unix"), "{row:?}");
    let config = rows(&console, "SHOW CONFIG").await;
    let value = |key: &str| {
        config
            .iter()
            .find(|r| col(r, "key") == Some(key))
            .and_then(|r| col(r, "value"))
            .map(str::to_owned)
    };
    assert_eq!(value("unix_socket_dir"), Some(host.clone()));
    assert_eq!(value("unix_socket_mode").as_deref(), Some("0770"));
    drop(console);
    drop(app);

    // No TLS on the socket: an SSLRequest gets `N`, as from PostgreSQL.
    let mut raw = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    raw.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .expect("SSLRequest");
    let mut answer = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), raw.read_exact(&mut answer))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    assert_eq!(&answer, b"N");
    drop(raw);

    stop_now(p).await;
    assert!(!path.exists(), "the socket file is removed at stop");
}

/// PgBouncer's rule: the OS user pgheal runs as (root here, and so is this test) logs into the
/// console as user `pgbouncer` over the socket without a password; over TCP it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_os_user_logs_into_the_console_as_pgbouncer_without_a_password() {
    let pg = start_pg();
    let dir = Dir::new("unix-own");
    let p = proxy(
        &pg,
        0,
        &format!("unix_socket_dir = \"{}\"", dir.0.display()),
    )
    .await;
    let port = p.addr.port();
    let host = dir.0.display().to_string();
    let (ok, out) = psql(
        &format!("host={host} port={port} user=pgbouncer dbname=pgbouncer"),
        "",
        "SHOW POOLS",
    )
    .await;
    assert!(ok, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("pgbouncer|pgbouncer|")),
        "{out}"
    );
    // Admin rights: RELOAD-free admin commands work, e.g. PAUSE and RESUME of a database.
    let (ok, out) = psql(
        &format!("host={host} port={port} user=pgbouncer dbname=pgbouncer"),
        "",
        &format!("PAUSE {DB}"),
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = psql(
        &format!("host={host} port={port} user=pgbouncer dbname=pgbouncer"),
        "",
        &format!("RESUME {DB}"),
    )
    .await;
    assert!(ok, "{out}");
    // Over TCP, the same user has no password to give.
    let (ok, out) = psql(
        &format!("host=127.0.0.1 port={port} user=pgbouncer dbname=pgbouncer"),
        "",
        "SHOW POOLS",
    )
    .await;
    assert!(!ok, "{out}");
    stop_now(p).await;
}

/// `local … peer` lines: the client's OS user (root) must be the user it logs in as.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_lines_compare_the_os_user_with_the_user_name() {
    let pg = start_pg();
    let dir = Dir::new("unix-peer");
    let hba = dir.write(
        "hba.conf",
        "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n",
    );
    let p = proxy(
        &pg,
        0,
        &format!(
            "unix_socket_dir = \"{}\"\nauth_type = \"hba\"\nauth_hba_file = \"{}\"",
            dir.0.display(),
            hba.display()
        ),
    )
    .await;
    let port = p.addr.port();
    // root over the socket: no password asked (a wrong one is not looked at); the server
    // session is the database's user.
    let as_root = over_socket(&dir.0, port, "root", "not-the-password", DB);
    assert_eq!(
        current_user(&as_root).await.expect("root logs in by peer"),
        USER
    );
    // Another user over the socket is refused with PostgreSQL's text.
    let (code, msg) = login_error(&over_socket(&dir.0, port, USER, PASSWORD, DB)).await;
    assert_eq!(code, "28000");
    assert_eq!(
        msg,
        format!("Peer authentication failed for user \"{USER}\"")
    );
    // psql sees the same refusal.
    let (ok, out) = psql(
        &format!(
            "host={} port={port} user={USER} dbname={DB}",
            dir.0.display()
        ),
        PASSWORD,
        "SELECT 1",
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("Peer authentication failed for user \"{USER}\"")),
        "{out}"
    );
    // Over TCP the host line applies: a password.
    assert_eq!(
        current_user(&proxy_url(&p)).await.expect("app over TCP"),
        USER
    );
    stop_now(p).await;
}

/// A socket file left by a dead process is replaced; one another process listens on stops
/// the start with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_file_is_replaced_and_a_live_one_refused() {
    let pg = start_pg();
    let dir = Dir::new("unix-stale");
    let dir_line = format!("unix_socket_dir = \"{}\"", dir.0.display());

    let port = free_port();
    let stale = dir.0.join(format!(".s.PGSQL.{port}"));
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind a socket"));
    assert!(stale.exists(), "a stale socket file");
    let p = proxy(&pg, port, &dir_line).await;
    assert_eq!(socket_path(&p), stale);
    assert_eq!(
        current_user(&over_socket(&dir.0, port, USER, PASSWORD, DB))
            .await
            .expect("a login through the replaced socket"),
        USER
    );
    stop_now(p).await;
    assert!(!stale.exists());

    let port = free_port();
    let live_path = dir.0.join(format!(".s.PGSQL.{port}"));
    let live = std::os::unix::net::UnixListener::bind(&live_path).expect("bind a socket");
    let file: FileConfig = toml::from_str(&format!("[pgheal]\n{dir_line}\n")).expect("TOML");
    let args = RunArgs {
        listen: Some(format!("127.0.0.1:{port}")),
        upstream: Some(pg.url(USER, PASSWORD, DB)),
        ..Default::default()
    };
    let cfg = pgheal::config::validate::build(file, &args).expect("valid config");
    let e = match pgheal::proxy::start(cfg).await {
        Ok(p) => {
            stop_now(p).await;
            panic!("pgheal started beside a live socket")
        }
        Err(e) => e.to_string(),
    };
    assert_eq!(
        e,
        format!(
            "cannot listen on {}: another process is listening",
            live_path.display()
        )
    );
    assert!(live_path.exists(), "the live socket is left alone");
    drop(live);
}

/// Without `unix_socket_dir`, a fixed port gets PgBouncer's /tmp socket; `""` means none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_dir_with_a_fixed_port_and_empty_means_none() {
    let pg = start_pg();
    let port = free_port();
    let p = proxy(&pg, port, "").await;
    let path = PathBuf::from(format!("/tmp/.s.PGSQL.{port}"));
    assert_eq!(socket_path(&p), path);
    assert_eq!(
        current_user(&over_socket(Path::new("/tmp"), port, USER, PASSWORD, DB))
            .await
            .expect("a login through /tmp"),
        USER
    );
    stop_now(p).await;
    assert!(!path.exists(), "the socket file is removed at stop");

    let port = free_port();
    let p = proxy(&pg, port, "unix_socket_dir = \"\"").await;
    assert_eq!(p.unix_socket, None);
    assert!(!Path::new(&format!("/tmp/.s.PGSQL.{port}")).exists());
    stop_now(p).await;

    // Port 0 without a directory: no socket either.
    let p = proxy(&pg, 0, "").await;
    assert_eq!(p.unix_socket, None);
    stop_now(p).await;
}

/// With `user`, the socket is made before the switch and given to that user, so the switched
/// process removes it at stop from the sticky /tmp (as PgBouncer's, made after its switch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_belongs_to_the_user_switched_to_and_is_removed_at_stop() {
    let dir = Dir::new("unix-user");
    let port = free_port();
    let ini = dir.write(
        "pgbouncer.ini",
        &format!("[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nauth_type = trust\n[databases]\nd = host=127.0.0.1\n"),
    );
    let postgres_uid: u32 = std::fs::read_to_string("/etc/passwd")
        .expect("passwd")
        .lines()
        .find_map(|l| {
            l.strip_prefix("postgres:")
                .and_then(|r| r.split(':').nth(1))
                .and_then(|u| u.parse().ok())
        })
        .expect("a postgres OS user (installed with PostgreSQL)");
    let mut c = pgheal_cmd();
    c.args(["-u", "postgres"]).arg(&ini);
    let (mut child, stderr) = spawn_logging(c);
    let path = PathBuf::from(format!("/tmp/.s.PGSQL.{port}"));
    let owned = eventually(Duration::from_secs(20), || async {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&path).is_ok_and(|m| m.uid() == postgres_uid)
    })
    .await;
    assert!(owned, "the socket file is the postgres user's");
    send_signal(child.id().expect("pid"), "TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("pgheal exits within 30 s")
        .expect("wait");
    let log = stderr.await.expect("stderr");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!path.exists(), "the socket file is removed at stop: {log}");
}

/// `client_tls_sslmode = require` asks TCP clients for TLS, not those on the Unix socket (which
/// cannot have it), as in PgBouncer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_on_tcp_is_not_asked_of_the_unix_socket() {
    let pg = start_pg();
    let dir = Dir::new("unix-tls");
    let ca = common::certs::Ca::new("pgheal unix-socket test CA");
    let (cert, key) = ca.issue(&["localhost"]);
    let cert_file = dir.write("server.crt", &cert);
    let key_file = dir.write("server.key", &key);
    let p = proxy(
        &pg,
        0,
        &format!(
            "unix_socket_dir = \"{}\"\nclient_tls_sslmode = \"require\"\nclient_tls_cert_file = \"{}\"\nclient_tls_key_file = \"{}\"",
            dir.0.display(),
            cert_file.display(),
            key_file.display()
        ),
    )
    .await;
    let port = p.addr.port();
    assert_eq!(
        current_user(&over_socket(&dir.0, port, USER, PASSWORD, DB))
            .await
            .expect("a login over the Unix socket without TLS"),
        USER
    );
    let (code, msg) = login_error(&format!("{}?sslmode=disable", proxy_url(&p))).await;
    assert_eq!(code, "28000", "{msg}");
    assert!(msg.contains("requires TLS"), "{msg}");
    stop_now(p).await;
}
