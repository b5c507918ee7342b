//! `auth_type = hba` against a real PostgreSQL through pgheal: the method chosen per line
//! (per client network, database and user), `reject` and no matching line refused with
//! PostgreSQL's 28000 texts, `hostssl` lines never matching plain clients; and SASLprep of
//! passwords that need NFKC, both for a `Plain` secret pgheal derives SCRAM keys from and for a
//! cleartext password checked against a SCRAM secret.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::BytesMut;
use common::certs::Dir;
use common::wire::{decode, Msg};
use common::*;
use pgheal::auth::ScramSecret;
use pgheal::cluster::TempCluster;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::{FileConfig, FileDatabase};
use pgheal::protocol::backend::{self, AuthRequest};
use pgheal::protocol::encode;
use pgheal::proxy::ProxyHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(20);

/// What pgheal answers first to a startup packet from `host`: the authentication it asks
/// for, or its error.
async fn first_answer(host: &str, port: u16, user: &str, db: &str) -> String {
    let mut stream = tokio::time::timeout(WAIT, TcpStream::connect((host, port)))
        .await
        .expect("connect within 20 s")
        .expect("connect");
    stream
        .write_all(&encode::startup_message(&[
            ("user", user),
            ("database", db),
        ]))
        .await
        .expect("send startup");
    let mut buf = BytesMut::new();
    let frame = loop {
        if let Some(f) = pgheal::protocol::frame::split_frame(&mut buf, 1 << 20).expect("frame") {
            break f;
        }
        let n = tokio::time::timeout(WAIT, stream.read_buf(&mut buf))
            .await
            .expect("pgheal answered within 20 s")
            .expect("read");
        assert!(n > 0, "pgheal closed without an answer");
    };
    match frame.tag {
        backend::AUTHENTICATION => match backend::decode_auth_request(&frame).expect("auth") {
            AuthRequest::Ok => "trust".into(),
            AuthRequest::Cleartext => "password".into(),
            AuthRequest::Md5 { .. } => "md5".into(),
            AuthRequest::Sasl { mechanisms } => format!("sasl {}", mechanisms.join(",")),
            other => format!("{other:?}"),
        },
        _ => match decode(&frame) {
            Msg::Error { code, message, .. } => format!("{code} {message}"),
            other => format!("{other:?}"),
        },
    }
}

/// Log in with tokio-postgres from `host` (`127.0.0.1` or `::1`).
async fn try_login(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(host)
        .port(port)
        .user(user)
        .password(password)
        .dbname(db)
        .connect_timeout(WAIT);
    let (client, conn) = tokio::time::timeout(WAIT, cfg.connect(tokio_postgres::NoTls))
        .await
        .expect("login answered within 20 s")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Log in and check the session reaches the server; returns the server's current_user.
async fn login_works(host: &str, port: u16, user: &str, password: &str, db: &str) -> String {
    let c = try_login(host, port, user, password, db)
        .await
        .unwrap_or_else(|e| panic!("login as {user} from {host} failed: {e}"));
    let row = tokio::time::timeout(WAIT, c.query_one("SELECT current_user::text, 6 * 7", &[]))
        .await
        .expect("query answered within 20 s")
        .expect("query");
    assert_eq!(row.get::<_, i32>(1), 42);
    row.get(0)
}

async fn login_error(host: &str, port: u16, user: &str, password: &str, db: &str) -> String {
    match try_login(host, port, user, password, db).await {
        Ok(_) => panic!("login as {user} from {host} must fail"),
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("expected a server error, got {e}"));
            format!("{} {}", db.code().code(), db.message())
        }
    }
}

/// pgheal listening on `[::]` (so 127.0.0.1 and ::1 are two client networks) in front of
/// `pg`'s appdb, logging into the server as app, with `auth_type = hba`.
async fn hba_proxy(pg: &TempCluster, hba_file: &str, auth_file: &str) -> ProxyHandle {
    let mut databases = BTreeMap::new();
    databases.insert(
        DB.to_owned(),
        FileDatabase {
            url: Some(pg.url(USER, PASSWORD, DB)),
            ..Default::default()
        },
    );
    databases.insert(
        "otherdb".to_owned(),
        FileDatabase {
            url: Some(pg.url(USER, PASSWORD, DB)),
            ..Default::default()
        },
    );
    let file = FileConfig {
        databases,
        ..Default::default()
    };
    let args = RunArgs {
        listen: Some("[::]:0".into()),
        auth_type: Some("hba".into()),
        auth_hba_file: Some(hba_file.into()),
        auth_file: Some(auth_file.into()),
        ..Default::default()
    };
    start_proxy_with(file, &args).await
}

fn no_entry(host: &str, user: &str, db: &str) -> String {
    format!("28000 no pg_hba.conf entry for host \"{host}\", user \"{user}\", database \"{db}\", no encryption")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_rules_choose_the_method_per_line() {
    let pg = start_pg();
    let dir = Dir::new("hba-rules");
    let scram = ScramSecret::from_password("scram-pw", b"0123456789abcdef", 4096);
    let auth_file = dir.write(
        "userlist.txt",
        &format!(
            "\"app\" \"secret\"\n\"md5user\" \"md5-pw\"\n\"pwuser\" \"pw-pw\"\n\"scramuser\" \"{}\"\n\"tlsonly\" \"tls-pw\"\n\"rejected\" \"rej-pw\"\n",
            scram.to_verifier_string()
        ),
    );
    let hba = dir.write(
        "hba.conf",
        "# per network: trust on IPv4 loopback, SCRAM on IPv6 loopback\n\
         host    appdb   app        127.0.0.1/32   trust\n\
         host    appdb   app        ::1/128        scram-sha-256\n\
         host    appdb   md5user    all            md5\n\
         host    appdb   pwuser     all            password\n\
         # md5 with a SCRAM secret is SCRAM, as in PgBouncer\n\
         host    appdb   scramuser  0.0.0.0/0      md5\n\
         host    appdb   scramuser  ::/0           md5\n\
         hostssl all     all        all            trust\n\
         host    appdb   rejected   all            reject\n\
         host    otherdb app        127.0.0.1 255.255.255.255 trust\n\
         host    trustdb all        all            trust\n",
    );
    let proxy = hba_proxy(
        &pg,
        &hba.display().to_string(),
        &auth_file.display().to_string(),
    )
    .await;
    let port = proxy.addr.port();

    // The same user, two networks, two methods.
    assert_eq!(first_answer("127.0.0.1", port, "app", DB).await, "trust");
    assert_eq!(
        login_works("127.0.0.1", port, "app", "not-asked", DB).await,
        USER
    );
    assert_eq!(
        first_answer("::1", port, "app", DB).await,
        "sasl SCRAM-SHA-256"
    );
    assert_eq!(login_works("::1", port, "app", "secret", DB).await, USER);
    assert_eq!(
        login_error("::1", port, "app", "wrong", DB).await,
        "28P01 password authentication failed for user \"app\""
    );

    // md5, password, and md5 upgraded to SCRAM by a SCRAM secret.
    assert_eq!(first_answer("127.0.0.1", port, "md5user", DB).await, "md5");
    assert_eq!(first_answer("::1", port, "md5user", DB).await, "md5");
    login_works("127.0.0.1", port, "md5user", "md5-pw", DB).await;
    assert_eq!(
        first_answer("127.0.0.1", port, "pwuser", DB).await,
        "password"
    );
    login_works("::1", port, "pwuser", "pw-pw", DB).await;
    assert_eq!(
        login_error("::1", port, "pwuser", "md5-pw", DB).await,
        "28P01 password authentication failed for user \"pwuser\""
    );
    assert_eq!(
        first_answer("127.0.0.1", port, "scramuser", DB).await,
        "sasl SCRAM-SHA-256"
    );
    login_works("127.0.0.1", port, "scramuser", "scram-pw", DB).await;

    // hostssl never matches a plain client: tlsonly has no line; the address is shown as
    // PostgreSQL shows it (an IPv4 client of the dual-stack listener as IPv4).
    assert_eq!(
        first_answer("127.0.0.1", port, "tlsonly", DB).await,
        no_entry("127.0.0.1", "tlsonly", DB)
    );
    assert_eq!(
        login_error("::1", port, "tlsonly", "tls-pw", DB).await,
        no_entry("::1", "tlsonly", DB)
    );

    // reject.
    assert_eq!(
        login_error("127.0.0.1", port, "rejected", "rej-pw", DB).await,
        "28000 pg_hba.conf rejects connection for host \"127.0.0.1\", user \"rejected\", database \"appdb\", no encryption"
    );

    // The database is part of the match: otherdb only for app from 127.0.0.1 (address + mask).
    assert_eq!(
        login_works("127.0.0.1", port, "app", "not-asked", "otherdb").await,
        USER
    );
    assert_eq!(
        first_answer("::1", port, "app", "otherdb").await,
        no_entry("::1", "app", "otherdb")
    );
    assert_eq!(
        first_answer("127.0.0.1", port, "md5user", "otherdb").await,
        no_entry("127.0.0.1", "md5user", "otherdb")
    );
    // An unknown user on a trust line is still refused, as with auth_type = trust.
    assert_eq!(
        first_answer("127.0.0.1", port, "mallory", "trustdb").await,
        "28000 role \"mallory\" does not exist"
    );

    // pgheal still serves after the refusals.
    assert_eq!(login_works("::1", port, "app", "secret", DB).await, USER);
}

/// The pgbouncer.ini form: `auth_type = hba` with `auth_hba_file`, and a bad file stops the
/// start naming the file and line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_ini_with_auth_hba_file() {
    let pg = start_pg();
    let dir = Dir::new("hba-ini");
    let auth_file = dir.write("userlist.txt", "\"app\" \"secret\"\n\"bob\" \"bob-pw\"\n");
    let hba = dir.write(
        "hba.conf",
        "host all bob all reject\nhost appdb all 127.0.0.1/32 scram-sha-256\n",
    );
    let ini = dir.write(
        "pgbouncer.ini",
        &format!(
            "[databases]\nappdb = host=127.0.0.1 port={} dbname=appdb user=app password=secret\n\
             [pgbouncer]\nlisten_addr = 127.0.0.1\nauth_type = hba\n\
             auth_file = {}\nauth_hba_file = {}\n",
            pg.port(),
            auth_file.display(),
            hba.display()
        ),
    );
    let args = RunArgs {
        config: Some(ini.clone()),
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let cfg = pgheal::config::load(&args).unwrap_or_else(|e| panic!("{e}"));
    let proxy = pgheal::proxy::start(cfg).await.expect("start pgheal");
    let port = proxy.addr.port();
    assert_eq!(
        first_answer("127.0.0.1", port, "app", DB).await,
        "sasl SCRAM-SHA-256"
    );
    login_works("127.0.0.1", port, "app", "secret", DB).await;
    assert!(first_answer("127.0.0.1", port, "bob", DB)
        .await
        .starts_with("28000 pg_hba.conf rejects connection"));

    dir.write(
        "hba.conf",
        "host appdb all 127.0.0.1/32 trust\nhost appdb all samehost trust\n",
    );
    let e = pgheal::config::load(&args).expect_err("samehost is refused");
    assert_eq!(e.key, "auth_hba_file");
    assert_eq!(
        e.reason,
        format!(
            "{}:2: samehost is not supported (as in PgBouncer)",
            hba.display()
        )
    );
}

/// A password made of compatibility characters: full-width letters, a ligature and U+00AA,
/// which SASLprep (NFKC) turns into "passfia". The server stored the SCRAM secret of the
/// normalized password; pgheal must normalize the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saslprep_nfkc_passwords_against_real_postgres() {
    const RAW: &str = "\u{FF50}\u{FF41}\u{FF53}\u{FF53}\u{FB01}\u{00AA}";
    let pg = start_pg();
    pg.create_user("intl_a", RAW).expect("user intl_a");
    pg.create_user("intl_b", RAW).expect("user intl_b");
    // The server normalized before hashing: "passfia" logs in directly.
    let direct = try_login("127.0.0.1", pg.port(), "intl_a", "passfia", DB).await;
    assert!(direct.is_ok(), "server-side SASLprep: {:?}", direct.err());
    let stored = admin(
        &pg,
        "SELECT rolpassword FROM pg_authid WHERE rolname = 'intl_b'",
    );
    assert!(stored.starts_with("SCRAM-SHA-256$"), "{stored}");

    let dir = Dir::new("saslprep");
    let auth_file = dir.write(
        "userlist.txt",
        &format!("\"intl_a\" \"{RAW}\"\n\"intl_b\" \"{stored}\"\n"),
    );
    // intldb: no forced user, so pgheal logs into the server as intl_a with the Plain
    // secret; appdb logs into the server as app.
    let start = |auth_type: &str| {
        let mut databases = BTreeMap::new();
        databases.insert(
            "intldb".to_owned(),
            FileDatabase {
                host: Some("127.0.0.1".into()),
                port: Some(pg.port()),
                dbname: Some(DB.into()),
                ..Default::default()
            },
        );
        databases.insert(
            DB.to_owned(),
            FileDatabase {
                url: Some(pg.url(USER, PASSWORD, DB)),
                ..Default::default()
            },
        );
        let file = FileConfig {
            databases,
            ..Default::default()
        };
        let args = RunArgs {
            listen: Some("127.0.0.1:0".into()),
            auth_type: Some(auth_type.into()),
            auth_file: Some(auth_file.display().to_string()),
            ..Default::default()
        };
        async move { start_proxy_with(file, &args).await }
    };

    // SCRAM from the client against the Plain secret: pgheal derives the keys from the
    // normalized password, as the client (libpq's rules in postgres-protocol) does.
    let proxy = start("scram-sha-256").await;
    let port = proxy.addr.port();
    for typed in [RAW, "passfia"] {
        assert_eq!(
            login_works("127.0.0.1", port, "intl_a", typed, "intldb").await,
            "intl_a",
            "{typed:?}"
        );
    }
    assert!(login_error("127.0.0.1", port, "intl_a", "passfi", "intldb")
        .await
        .starts_with("28P01"));

    // Cleartext from the client against the server's SCRAM secret.
    let proxy = start("plain").await;
    let port = proxy.addr.port();
    for typed in [RAW, "passfia"] {
        assert_eq!(
            login_works("127.0.0.1", port, "intl_b", typed, DB).await,
            USER,
            "{typed:?}"
        );
    }
    assert!(login_error("127.0.0.1", port, "intl_b", "PASSFIA", DB)
        .await
        .starts_with("28P01"));
}

/// pgheal with client TLS (`mode`, pgheal's certificate for localhost from `ca`, client
/// certificates checked against `ca` when `mode` verifies them) and the HBA `rules`; the user
/// list holds app's password.
async fn tls_hba_proxy(
    pg: &TempCluster,
    dir: &Dir,
    ca: &common::certs::Ca,
    mode: pgheal::config::tls::SslMode,
    rules: &str,
) -> ProxyHandle {
    let (cert, key) = ca.issue(&["localhost"]);
    let hba = dir.write("hba.conf", rules);
    let users = dir.write("users.txt", &format!("\"{USER}\" \"{PASSWORD}\"\n"));
    let mut file = FileConfig::default();
    file.pgheal.client_tls_sslmode = Some(mode);
    file.pgheal.client_tls_cert_file = Some(dir.write("pgheal.crt", &cert).display().to_string());
    file.pgheal.client_tls_key_file = Some(dir.write("pgheal.key", &key).display().to_string());
    file.pgheal.client_tls_ca_file =
        Some(dir.write("ca.crt", &ca.cert.pem()).display().to_string());
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(pg.url(USER, PASSWORD, DB)),
        auth_type: Some("hba".into()),
        auth_hba_file: Some(hba.display().to_string()),
        auth_file: Some(users.display().to_string()),
        ..Default::default()
    };
    start_proxy_with(file, &args).await
}

/// With client TLS, `hostssl` lines match TLS clients and `hostnossl` lines plain ones: an
/// operator can require TLS per network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostssl_lines_match_tls_clients_only() {
    use common::certs::{Ca, Dir};
    use common::client_tls::psql;
    let pg = start_pg();
    let dir = Dir::new("hba-hostssl");
    let ca = Ca::new("hba test CA");
    let p = tls_hba_proxy(
        &pg,
        &dir,
        &ca,
        pgheal::config::tls::SslMode::Prefer,
        "hostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n",
    )
    .await;
    let conninfo = |mode: &str| {
        format!(
            "host=127.0.0.1 port={} user={USER} dbname={DB} sslmode={mode}",
            p.addr.port()
        )
    };
    let (ok, out) = psql(&conninfo("require"), PASSWORD, "SELECT 'over tls'").await;
    assert!(
        ok && out.contains("over tls"),
        "a TLS client matches hostssl: {out}"
    );
    let (ok, out) = psql(&conninfo("disable"), PASSWORD, "SELECT 1").await;
    assert!(!ok, "a plain client matches the hostnossl reject line");
    assert!(
        out.contains(&format!(
            "pg_hba.conf rejects connection for host \"127.0.0.1\", user \"{USER}\", database \"{DB}\", no encryption"
        )),
        "{out}"
    );
    p.shutdown().await;
}

/// A client certificate from `ca` whose subject common name is `cn`, in PEM (cert, key).
fn client_cert(ca: &common::certs::Ca, cn: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .expect("sign the client certificate");
    (cert.pem(), key.serialize_pem())
}

/// `cert` lines: a client whose verified certificate names the user logs in without a
/// password; a certificate naming someone else is refused with PostgreSQL's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_lines_log_in_by_the_certificates_common_name() {
    use common::certs::Ca;
    use common::client_tls::psql;
    let pg = start_pg();
    let dir = Dir::new("hba-cert");
    let ca = Ca::new("hba cert CA");
    let p = tls_hba_proxy(
        &pg,
        &dir,
        &ca,
        pgheal::config::tls::SslMode::VerifyCa,
        "hostssl all all 127.0.0.1/32 cert\n",
    )
    .await;
    let ca_file = dir.0.join("ca.crt");
    let (app_cert, app_key) = client_cert(&ca, USER);
    let (other_cert, other_key) = client_cert(&ca, "someone_else");
    let app_cert = dir.write("app.crt", &app_cert);
    let app_key = dir.write("app.key", &app_key);
    let other_cert = dir.write("other.crt", &other_cert);
    let other_key = dir.write("other.key", &other_key);
    for k in [&app_key, &other_key] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(k, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let conninfo = |cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "host=localhost port={} user={USER} dbname={DB} sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
            p.addr.port(),
            ca_file.display(),
            cert.display(),
            key.display()
        )
    };
    // No password is asked: a wrong one in PGPASSWORD changes nothing.
    let (ok, out) = psql(
        &conninfo(&app_cert, &app_key),
        "not-the-password",
        "SELECT 'by certificate'",
    )
    .await;
    assert!(
        ok && out.contains("by certificate"),
        "the certificate naming the user logs in: {out}"
    );
    let (ok, out) = psql(&conninfo(&other_cert, &other_key), PASSWORD, "SELECT 1").await;
    assert!(!ok, "a certificate naming another user is refused");
    assert!(
        out.contains(&format!(
            "certificate authentication failed for user \"{USER}\""
        )),
        "{out}"
    );
    p.shutdown().await;
}
