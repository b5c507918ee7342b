//! Clients that talk TLS to pgheal: psql (libpq) with any conninfo, and a raw rustls client
//! for what libpq 15 cannot do (PostgreSQL 17's direct TLS, ALPN) or for a session kept open
//! across a certificate reload.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use pgheal::protocol::backend::{self, AuthRequest};
use pgheal::protocol::{encode, Frame};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::certs::Ca;

/// Run psql with `conninfo` (password in PGPASSWORD) and one query. Returns whether it
/// succeeded and its output (stdout then stderr). Bounded by 30 s.
pub async fn psql(conninfo: &str, password: &str, sql: &str) -> (bool, String) {
    let mut cmd = tokio::process::Command::new("psql");
    cmd.args(["-X", "-A", "-t", "-d", conninfo, "-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "20")
        .env_remove("PGSSLMODE")
        .env_remove("PGSERVICE")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("psql finished within 30 s")
        .expect("run psql");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A certificate of `ca` for `names` whose validity ended in 2021.
pub fn issue_expired(ca: &Ca, names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .expect("sign the certificate");
    (cert.pem(), key.serialize_pem())
}

/// A rustls client configuration trusting `ca_pem`, offering the ALPN protocols `alpn`.
pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("add CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(config)
}

/// How the TLS session starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// SSLRequest, `S`, then the handshake.
    SslRequest,
    /// PostgreSQL 17's direct TLS: the handshake first.
    Direct,
}

/// Connect to pgheal on `port` with TLS (certificate checked for `localhost`).
pub async fn tls_connect(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    start: Start,
) -> std::io::Result<TlsStream<TcpStream>> {
    let work = async {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        if start == Start::SslRequest {
            tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]).await?;
            let mut answer = [0u8; 1];
            tcp.read_exact(&mut answer).await?;
            if answer[0] != b'S' {
                return Err(std::io::Error::other(format!(
                    "SSLRequest answered {:?}",
                    answer[0] as char
                )));
            }
        }
        let name = ServerName::try_from("localhost").expect("name");
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    };
    tokio::time::timeout(Duration::from_secs(20), work)
        .await
        .map_err(|_| std::io::Error::other("TLS connect timed out"))?
}

/// A logged-in session over TLS.
pub struct TlsWire {
    pub stream: TlsStream<TcpStream>,
    buf: BytesMut,
    /// The SASL mechanisms pgheal offered.
    pub mechanisms: Vec<String>,
}

/// The `tls-server-end-point` data a client computes from the certificate it was shown
/// (SHA-256: the test certificates are ECDSA with SHA-256).
pub fn end_point_of(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let certs = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate");
    sha2::Sha256::digest(certs[0].as_ref()).to_vec()
}

impl TlsWire {
    /// Log in with SCRAM (with channel binding when `plus`). `Err`: the server's error
    /// message, or why the connection ended.
    pub async fn login(
        stream: TlsStream<TcpStream>,
        user: &str,
        password: &str,
        db: &str,
        plus: bool,
    ) -> Result<TlsWire, String> {
        let end_point = end_point_of(&stream);
        let mut w = TlsWire {
            stream,
            buf: BytesMut::new(),
            mechanisms: Vec::new(),
        };
        let startup = encode::startup_message(&[("user", user), ("database", db)]);
        w.stream
            .write_all(&startup)
            .await
            .map_err(|e| e.to_string())?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let f = w.frame().await?;
            match f.tag {
                backend::AUTHENTICATION => match backend::decode_auth_request(&f).unwrap() {
                    AuthRequest::Ok => {}
                    AuthRequest::Sasl { mechanisms } => {
                        w.mechanisms = mechanisms.iter().map(|m| m.to_string()).collect();
                        let (mechanism, cb) = if plus {
                            (
                                "SCRAM-SHA-256-PLUS",
                                ChannelBinding::tls_server_end_point(end_point.clone()),
                            )
                        } else {
                            ("SCRAM-SHA-256", ChannelBinding::unsupported())
                        };
                        let s = ScramSha256::new(password.as_bytes(), cb);
                        w.send(&[encode::sasl_initial_response(mechanism, s.message())])
                            .await?;
                        scram = Some(s);
                    }
                    AuthRequest::SaslContinue(d) => {
                        let s = scram.as_mut().ok_or("SASLContinue out of order")?;
                        s.update(d).map_err(|e| e.to_string())?;
                        let m = s.message().to_vec();
                        w.send(&[encode::sasl_response(&m)]).await?;
                    }
                    AuthRequest::SaslFinal(d) => scram
                        .take()
                        .ok_or("SASLFinal out of order")?
                        .finish(d)
                        .map_err(|e| e.to_string())?,
                    other => return Err(format!("unexpected authentication request {other:?}")),
                },
                backend::READY_FOR_QUERY => return Ok(w),
                backend::ERROR_RESPONSE => return Err(error_message(&f)),
                _ => {}
            }
        }
    }

    async fn send(&mut self, frames: &[Frame]) -> Result<(), String> {
        let mut b = BytesMut::new();
        for f in frames {
            b.put_slice(&f.bytes);
        }
        self.stream.write_all(&b).await.map_err(|e| e.to_string())?;
        self.stream.flush().await.map_err(|e| e.to_string())
    }

    async fn frame(&mut self) -> Result<Frame, String> {
        loop {
            if let Some(f) = pgheal::protocol::frame::split_frame(&mut self.buf, 1 << 30)
                .map_err(|e| e.to_string())?
            {
                return Ok(f);
            }
            let n =
                tokio::time::timeout(Duration::from_secs(20), self.stream.read_buf(&mut self.buf))
                    .await
                    .map_err(|_| "no answer within 20 s".to_string())?
                    .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
        }
    }

    /// One simple query returning one value (as text).
    pub async fn value(&mut self, sql: &str) -> Result<String, String> {
        self.send(&[encode::query(sql)]).await?;
        let mut value = None;
        loop {
            let f = self.frame().await?;
            match f.tag {
                b'D' => {
                    let body = f.body();
                    // int16 count, int32 length, bytes
                    let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
                    value = Some(String::from_utf8_lossy(&body[6..6 + len as usize]).into_owned());
                }
                backend::ERROR_RESPONSE => return Err(error_message(&f)),
                backend::READY_FOR_QUERY => return value.ok_or_else(|| "no row".into()),
                _ => {}
            }
        }
    }
}

/// The `M` field of an ErrorResponse, with its SQLSTATE.
pub fn error_message(f: &Frame) -> String {
    let mut code = String::new();
    let mut message = String::new();
    for field in f.body().split(|&b| b == 0) {
        match field.split_first() {
            Some((b'C', v)) => code = String::from_utf8_lossy(v).into_owned(),
            Some((b'M', v)) => message = String::from_utf8_lossy(v).into_owned(),
            _ => {}
        }
    }
    format!("{code}: {message}")
}

/// Write a file in place (same path, new contents), as a certificate renewal does.
pub fn rewrite(path: &Path, text: &str) {
    std::fs::write(path, text).expect("rewrite file");
}
