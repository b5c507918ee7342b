//! One server connection and the login to PostgreSQL.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::auth::md5_password_hash;
use crate::auth::scram_client::{
    Binding, Credential, PassthroughKeys, ScramClient, ScramClientError, SCRAM_SHA_256_PLUS,
};
use crate::auth::SCRAM_SHA_256;
use crate::config::tls::{ChannelBinding, ServerTls, SslMode};
use crate::net::stream::{self, MovableTcp, ServerRead, ServerWrite};
use crate::net::{FrameReader, FrameWriter, NetError, ServerReader, ServerWriter};
use crate::protocol::backend::{self, decode_auth_request, AuthRequest, ErrorFields};
use crate::protocol::cursor::Cursor;
use crate::protocol::{encode, Frame};
use crate::statements::ServerPrepared;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// Source of [`ServerConn::params_gen`] values: unique across connections.
static NEXT_PARAMS_GEN: AtomicU64 = AtomicU64::new(1);

/// How pgheal logs into the server. The password is never printed.
#[derive(Clone)]
pub struct ServerLogin {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub user: String,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    /// TCP keepalive and user timeout on the socket (`tcp_*`).
    pub keepalive: crate::config::keepalive::TcpKeepalive,
    pub max_message_len: usize,
    /// Cap of statements pgheal keeps prepared per connection (transaction pooling).
    pub max_prepared: usize,
    /// TLS to the server (`server_tls_*`, the URL's `sslmode`...).
    pub tls: ServerTls,
    /// SCRAM pass-through: the keys of the last client that logged into pgheal with SCRAM as
    /// this server user against a SCRAM verifier (shared by every clone of the login, that is
    /// by the pool). Used when the server asks for SCRAM and no password is configured.
    pub passthrough: PassthroughSlot,
    /// Several hosts in `host`, startup parameters and `connect_query` of the database (see
    /// [`super::hosts`]).
    pub extras: super::hosts::LoginExtras,
}

impl ServerLogin {
    /// Whether connections opened with `other` would be the same as with this login (same
    /// server, database, user, password, TLS and limits); the pass-through keys are not
    /// compared.
    pub fn same_server(&self, other: &ServerLogin) -> bool {
        self.host == other.host
            && self.port == other.port
            && self.dbname == other.dbname
            && self.user == other.user
            && self.password == other.password
            && self.connect_timeout == other.connect_timeout
            && self.keepalive == other.keepalive
            && self.max_message_len == other.max_message_len
            && self.max_prepared == other.max_prepared
            && self.tls == other.tls
            && self.extras == other.extras
    }
}

/// Where a pool keeps the credentials its latest client login brought
/// ([`ServerLogin::passthrough`]): the SCRAM pass-through keys, or the password / md5 hash of
/// a secret that may change (auth_query), which then wins over [`ServerLogin::password`].
#[derive(Clone, Default)]
pub struct PassthroughSlot(std::sync::Arc<std::sync::Mutex<SlotContent>>);

#[derive(Clone, Default)]
struct SlotContent {
    keys: Option<PassthroughKeys>,
    password: Option<String>,
}

impl PassthroughSlot {
    /// Keep the keys of a client that just logged in (replacing older ones: after a password
    /// change, the newest client knows the current one).
    pub fn store(&self, keys: PassthroughKeys) {
        if let Ok(mut slot) = self.0.lock() {
            slot.keys = Some(keys);
        }
    }

    /// Keep the password or md5 hash of a client's secret that just served a login.
    pub fn store_password(&self, password: String) {
        if let Ok(mut slot) = self.0.lock() {
            slot.password = Some(password);
        }
    }

    pub fn get(&self) -> Option<PassthroughKeys> {
        self.0.lock().ok().and_then(|k| k.keys.clone())
    }

    pub fn password(&self) -> Option<String> {
        self.0.lock().ok().and_then(|k| k.password.clone())
    }
}

impl std::fmt::Debug for PassthroughSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PassthroughSlot(<redacted>)")
    }
}

impl std::fmt::Debug for ServerLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{}:{}/{}",
            self.user, self.host, self.port, self.dbname
        )
    }
}

/// How long one of pgheal's own queries on a server connection (restoring or reading a client's
/// settings, checking session state, resetting) may take before the connection is given up.
pub const INTERNAL_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a server connection could not be opened or failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot connect to the server: {0}")]
    Connect(std::io::Error),
    #[error("timed out connecting to the server")]
    Timeout,
    /// One of pgheal's own queries (settings, reset, state checks) got no answer in time.
    #[error("the server did not answer pgheal's own query within {0:?}")]
    QueryTimeout(std::time::Duration),
    /// The server refused the login; the frame is its ErrorResponse, fit to forward.
    #[error("the server refused the login: {message}")]
    Rejected { frame: Frame, message: String },
    #[error("the server asks for a password and none is configured for user {0:?}")]
    NoPassword(String),
    /// The server asks for SCRAM, pgheal has no password, and no client has logged in with
    /// SCRAM yet to lend its keys (connections opened for `min_pool_size` before any client).
    #[error(
        "the server asks for SCRAM and user {0:?} has no password configured; SCRAM \
         pass-through needs a client to log in with SCRAM against the auth_file's verifier first"
    )]
    NoPassthroughKeys(String),
    /// The auth_query failed on the server (its message; no secret).
    #[error("auth_query failed: {0}")]
    AuthQuery(String),
    /// An md5 hash cannot answer a SCRAM challenge.
    #[error("the server asks for SCRAM but user {0:?} has only an md5 hash configured")]
    Md5ForScram(String),
    #[error("the server asks for an unsupported authentication method ({0})")]
    UnsupportedAuth(i32),
    #[error("server login failed: {0}")]
    Net(#[from] NetError),
    #[error("SCRAM exchange with the server failed: {0}")]
    Scram(#[from] ScramClientError),
    /// `channel_binding=require`, and the login was not SCRAM-SHA-256-PLUS over TLS.
    #[error(
        "channel_binding is require, but the server did not authenticate with \
         SCRAM-SHA-256-PLUS over TLS"
    )]
    ChannelBindingRequired,

    /// The server answered `N` to SSLRequest while the sslmode requires TLS.
    #[error("the server does not support TLS, but sslmode is {0}")]
    TlsRefused(SslMode),
    /// The handshake failed: a certificate from an unknown CA, for another name, ...
    #[error("TLS handshake with the server failed: {0}")]
    Tls(std::io::Error),
    #[error("the server answered SSLRequest with {0:?} (expected S or N)")]
    TlsBadAnswer(u8),
    /// Every host of the database failed within `server_login_retry`: the latest error.
    #[error("server login has been failing, cached error: {0} (server_login_retry)")]
    LoginFailing(String),
    /// The database's `connect_query` failed on a new connection (the server's message).
    #[error("connect_query failed: {0}")]
    ConnectQuery(String),
}

impl ServerError {
    /// Whether the error says something about the host (it is down, refuses, is not what TLS
    /// expects, or refuses the login), rather than about pgheal's configuration of the login
    /// everywhere: a host list moves on to the next host then.
    pub fn host_failed(&self) -> bool {
        matches!(
            self,
            ServerError::Connect(_)
                | ServerError::Timeout
                | ServerError::Rejected { .. }
                | ServerError::Net(_)
                | ServerError::Tls(_)
                | ServerError::TlsRefused(_)
                | ServerError::TlsBadAnswer(_)
        )
    }
}

/// A logged-in server connection, ready for queries.
pub struct ServerConn {
    pub id: u64,
    pub reader: ServerReader,
    pub writer: ServerWriter,
    pub backend_pid: i32,
    pub backend_key: i32,
    /// The server's ParameterStatus values, kept current while relaying.
    pub params: BTreeMap<String, String>,
    /// Changes whenever `params` does; unique across connections, so one comparison tells a
    /// client whether the values it was last synced with are still these.
    pub params_gen: u64,
    pub addr: SocketAddr,
    pub created: Instant,
    pub idle_since: Instant,
    /// Statements prepared on this connection and their shapes.
    pub prepared: ServerPrepared,
    /// Fingerprint of the session settings this connection carries (see
    /// `session::settings`: 0 unknown, 1 none).
    pub applied_settings: u64,
    /// The thread whose runtime the socket is registered with (its event loop).
    home: std::thread::ThreadId,
}

impl std::fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "server#{} pid {}", self.id, self.backend_pid)
    }
}

impl ServerConn {
    /// Connect and log in. Not cancel-safe (a half-open connection is dropped).
    ///
    /// With several hosts (`host=a,b`), tries them in the order [`super::hosts::HostChoice`]
    /// gives, each within `connect_timeout`, skipping hosts that failed lately.
    pub async fn connect(login: &ServerLogin) -> Result<ServerConn, ServerError> {
        let hosts = super::hosts::split(&login.host);
        if hosts.len() <= 1 {
            return Self::connect_host(login, login.host.trim(), login.port).await;
        }
        let choice = &login.extras.choice;
        let order = choice
            .plan(hosts.len(), Instant::now())
            .map_err(|e| ServerError::LoginFailing(e.0))?;
        let mut last = None;
        for i in order {
            let port = login.extras.ports.get(i).copied().unwrap_or(login.port);
            match Self::connect_host(login, hosts[i], port).await {
                Ok(c) => {
                    choice.succeeded(hosts.len(), i);
                    return Ok(c);
                }
                Err(e) if e.host_failed() => {
                    tracing::warn!(host = hosts[i], port, error = %e, retry_after = ?choice.login_retry, "server host failed; trying the next host of the list");
                    choice.failed(hosts.len(), i, e.to_string(), Instant::now());
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(ServerError::Timeout))
    }

    /// Connect to one host and log in, within `connect_timeout`.
    async fn connect_host(
        login: &ServerLogin,
        host: &str,
        port: u16,
    ) -> Result<ServerConn, ServerError> {
        tokio::time::timeout(
            login.connect_timeout,
            Self::connect_inner(login, host, port),
        )
        .await
        .map_err(|_| ServerError::Timeout)?
    }

    async fn connect_inner(
        login: &ServerLogin,
        host: &str,
        port: u16,
    ) -> Result<ServerConn, ServerError> {
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(ServerError::Connect)?;
        stream.set_nodelay(true).map_err(ServerError::Connect)?;
        if let Err(e) = crate::net::keepalive::apply(&stream, &login.keepalive) {
            tracing::warn!(error = %e, "cannot set TCP keepalive on a server socket");
        }
        let addr = stream.peer_addr().map_err(ServerError::Connect)?;
        let (r, w, end_point) = negotiate_tls(login, host, stream).await?;
        let mut reader = FrameReader::new(r, login.max_message_len);
        let mut writer = FrameWriter::new(w);
        let mut params = vec![
            ("user", login.user.as_str()),
            ("database", login.dbname.as_str()),
        ];
        params.extend(
            login
                .extras
                .startup_params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        );
        let startup = encode::startup_message(&params);
        writer.write_raw(&startup).await.map_err(NetError::from)?;
        authenticate(login, end_point, &mut reader, &mut writer).await?;
        let mut conn = ServerConn {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            reader,
            writer,
            backend_pid: 0,
            backend_key: 0,
            params: BTreeMap::new(),
            params_gen: NEXT_PARAMS_GEN.fetch_add(1, Ordering::Relaxed),
            addr,
            created: Instant::now(),
            idle_since: Instant::now(),
            prepared: ServerPrepared::new(login.max_prepared),
            // Logged in with no settings but user and database.
            applied_settings: 1,
            home: std::thread::current().id(),
        };
        loop {
            let f = conn.reader.read_frame().await?;
            match f.tag {
                backend::PARAMETER_STATUS => conn.note_parameter(&f),
                backend::BACKEND_KEY_DATA => {
                    let (pid, key) = backend::decode_backend_key(&f).map_err(NetError::from)?;
                    conn.backend_pid = pid;
                    conn.backend_key = key;
                }
                backend::READY_FOR_QUERY => break,
                backend::ERROR_RESPONSE => return Err(rejected(f)),
                _ => {}
            }
        }
        if let Some(q) = &login.extras.connect_query {
            if let Err(f) = conn.query_rows_unbounded(q).await? {
                let message = error_message(&f);
                tracing::warn!(server = conn.id, pid = conn.backend_pid, error = %message, "connect_query failed; closing the new server connection");
                return Err(ServerError::ConnectQuery(message));
            }
        }
        Ok(conn)
    }

    /// Record a ParameterStatus message. A value that is not UTF-8 (the client's encoding is
    /// not, and the value is not ASCII) is not kept: the parameter's value is unknown then.
    pub fn note_parameter(&mut self, f: &Frame) {
        if let Ok((k, v)) = backend::decode_parameter_status(f) {
            let Ok(k) = std::str::from_utf8(k) else {
                return;
            };
            let v = std::str::from_utf8(v).ok();
            if self.params.get(k).map(String::as_str) != v {
                match v {
                    Some(v) => self.params.insert(k.to_owned(), v.to_owned()),
                    None => self.params.remove(k),
                };
                self.params_gen = NEXT_PARAMS_GEN.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Run one simple query, discarding its results. Returns the first error's frame, if any.
    /// Not cancel-safe.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Option<Frame>, ServerError> {
        Ok(self.query_rows(sql).await?.err())
    }

    /// Run one simple query and return the rows of its results (text columns, None for
    /// NULL), or the first error's frame. pgheal's own queries are short: one that takes
    /// longer than [`INTERNAL_QUERY_TIMEOUT`] fails with [`ServerError::QueryTimeout`], and the
    /// caller closes the connection. Not cancel-safe.
    pub async fn query_rows(
        &mut self,
        sql: &str,
    ) -> Result<Result<Vec<Vec<Option<Vec<u8>>>>, Frame>, ServerError> {
        tokio::time::timeout(INTERNAL_QUERY_TIMEOUT, self.query_rows_unbounded(sql))
            .await
            .unwrap_or(Err(ServerError::QueryTimeout(INTERNAL_QUERY_TIMEOUT)))
    }

    async fn query_rows_unbounded(
        &mut self,
        sql: &str,
    ) -> Result<Result<Vec<Vec<Option<Vec<u8>>>>, Frame>, ServerError> {
        self.writer
            .write_frame(&encode::query(sql))
            .await
            .map_err(NetError::from)?;
        self.collect_rows().await
    }

    /// Run one statement with text parameters over the extended protocol (never by splicing
    /// values into the SQL), bounded by [`INTERNAL_QUERY_TIMEOUT`]; returns its rows or the
    /// error's frame. Not cancel-safe.
    pub async fn query_params(
        &mut self,
        sql: &str,
        params: &[&str],
    ) -> Result<Result<Vec<Vec<Option<Vec<u8>>>>, Frame>, ServerError> {
        let mut bind = Vec::new();
        bind.extend_from_slice(b"\0\0"); // unnamed portal, unnamed statement
        bind.extend_from_slice(&0i16.to_be_bytes()); // parameters in text
        bind.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            bind.extend_from_slice(&(p.len() as i32).to_be_bytes());
            bind.extend_from_slice(p.as_bytes());
        }
        bind.extend_from_slice(&0i16.to_be_bytes()); // results in text
        let frames = [
            encode::parse("", sql, &[]),
            encode::raw(b'B', &bind),
            encode::execute("", 0),
            encode::sync(),
        ];
        let run = async {
            for f in &frames {
                self.writer.write_frame(f).await.map_err(NetError::from)?;
            }
            self.collect_rows().await
        };
        tokio::time::timeout(INTERNAL_QUERY_TIMEOUT, run)
            .await
            .unwrap_or(Err(ServerError::QueryTimeout(INTERNAL_QUERY_TIMEOUT)))
    }

    /// Reads until ReadyForQuery: the DataRows, or the first ErrorResponse.
    async fn collect_rows(
        &mut self,
    ) -> Result<Result<Vec<Vec<Option<Vec<u8>>>>, Frame>, ServerError> {
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let f = self.reader.read_frame().await?;
            match f.tag {
                backend::READY_FOR_QUERY => return Ok(error.map_or(Ok(rows), Err)),
                backend::ERROR_RESPONSE if error.is_none() => error = Some(f),
                backend::PARAMETER_STATUS => self.note_parameter(&f),
                backend::DATA_ROW => rows.push(data_row(&f).map_err(NetError::from)?),
                _ => {}
            }
        }
    }

    /// The thread whose event loop the socket is registered with.
    pub fn home(&self) -> std::thread::ThreadId {
        self.home
    }

    /// The connection with its socket registered with the calling thread's event loop (see
    /// [`crate::event_loops`]): a pooled connection is polled by whichever session checks it out,
    /// and readiness events are cheapest where the task runs. Two `epoll_ctl` calls when it
    /// moves; nothing when it is home already. Bytes buffered but not framed stay buffered.
    /// Also says whether it moved.
    pub fn at_home(self) -> std::io::Result<(ServerConn, bool)> {
        let here = std::thread::current().id();
        if self.home == here {
            return Ok((self, false));
        }
        let max_len = self.reader.max_len();
        let (r, buf) = self.reader.into_parts();
        let (r, w) = stream::rehome(r, self.writer.into_inner())?;
        let moved = ServerConn {
            reader: FrameReader::with_buffer(r, buf, max_len),
            writer: FrameWriter::new(w),
            home: here,
            ..self
        };
        Ok((moved, true))
    }

    /// Whether the server closed the connection or sent something unasked while idle (a
    /// FATAL after `pg_terminate_backend`, say).
    pub fn is_broken_while_idle(&self) -> bool {
        self.reader.buffered() > 0 || self.reader.get_ref().has_unasked_input()
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.reader.get_ref().is_tls()
    }
}

/// The columns of a DataRow as owned bytes (None for NULL).
fn data_row(f: &Frame) -> Result<Vec<Option<Vec<u8>>>, crate::protocol::ProtocolError> {
    let mut c = Cursor::new(f.body());
    let n = c.count16("column count")?;
    let mut row = Vec::with_capacity(n.min(c.remaining().len() / 4));
    for _ in 0..n {
        row.push(c.value("column value")?.map(<[u8]>::to_vec));
    }
    c.finish("DataRow")?;
    Ok(row)
}

/// The message of an ErrorResponse (empty if it has none).
fn error_message(f: &Frame) -> String {
    ErrorFields::decode(f)
        .ok()
        .and_then(|e| e.message().map(|m| String::from_utf8_lossy(m).into_owned()))
        .unwrap_or_default()
}

fn rejected(f: Frame) -> ServerError {
    let message = error_message(&f);
    ServerError::Rejected { frame: f, message }
}

/// The login exchange the server asks for. `end_point` is the `tls-server-end-point` binding
/// data when the connection is TLS.
///
/// SCRAM uses the configured password if there is one (an md5 hash cannot answer SCRAM), else
/// the pool's pass-through keys; over TLS it binds to the channel when the server offers
/// `SCRAM-SHA-256-PLUS`, as libpq's `channel_binding` says (`prefer` by default; `require`
/// refuses any other login, as libpq does, before sending a password).
async fn authenticate(
    login: &ServerLogin,
    end_point: Option<Vec<u8>>,
    reader: &mut FrameReader<ServerRead>,
    writer: &mut FrameWriter<ServerWrite>,
) -> Result<(), ServerError> {
    let latest = login.passthrough.password();
    let configured = latest.as_deref().or(login.password.as_deref());
    let password = || configured.ok_or_else(|| ServerError::NoPassword(login.user.clone()));
    let keys = login.passthrough.get();
    let cb = login.tls.options.channel_binding;
    let require = cb == ChannelBinding::Require;
    let end_point = end_point.filter(|_| cb != ChannelBinding::Disable);
    let mut bound = false;
    let mut scram: Option<ScramClient<'_>> = None;
    loop {
        let f = reader.read_frame().await?;
        if f.tag == backend::ERROR_RESPONSE {
            return Err(rejected(f));
        }
        if f.tag != backend::AUTHENTICATION {
            return Err(
                NetError::Protocol(crate::protocol::ProtocolError::UnexpectedMessage(
                    char::from(f.tag),
                ))
                .into(),
            );
        }
        match decode_auth_request(&f).map_err(NetError::from)? {
            AuthRequest::Ok if require && !bound => {
                return Err(ServerError::ChannelBindingRequired)
            }
            AuthRequest::Ok => return Ok(()),
            AuthRequest::Cleartext | AuthRequest::Md5 { .. } if require => {
                return Err(ServerError::ChannelBindingRequired)
            }
            AuthRequest::Cleartext => {
                writer
                    .write_frame(&encode::password(password()?.as_bytes()))
                    .await
                    .map_err(NetError::from)?;
            }
            AuthRequest::Md5 { salt } => {
                let pw = password()?;
                // A configured md5 hash ("md5...") can answer the md5 challenge directly.
                let inner = if is_md5_hash(pw) {
                    pw.to_owned()
                } else {
                    md5_password_hash(&login.user, pw)
                };
                let outer = md5_salted(&inner[3..], salt);
                writer
                    .write_frame(&encode::password(outer.as_bytes()))
                    .await
                    .map_err(NetError::from)?;
            }
            AuthRequest::Sasl { mechanisms } => {
                if !mechanisms.contains(&SCRAM_SHA_256) {
                    return Err(ServerError::UnsupportedAuth(10));
                }
                let credential = match (configured, keys.as_ref()) {
                    (Some(pw), _) if is_md5_hash(pw) => {
                        return Err(ServerError::Md5ForScram(login.user.clone()))
                    }
                    (Some(pw), _) => Credential::Password(pw.as_bytes()),
                    (None, Some(k)) => Credential::Keys(k),
                    (None, None) => return Err(ServerError::NoPassthroughKeys(login.user.clone())),
                };
                let binding = match &end_point {
                    None => Binding::Unsupported,
                    Some(data) if mechanisms.contains(&SCRAM_SHA_256_PLUS) => {
                        Binding::TlsServerEndPoint(data.clone())
                    }
                    Some(_) => Binding::Unrequested,
                };
                if require && !matches!(binding, Binding::TlsServerEndPoint(_)) {
                    return Err(ServerError::ChannelBindingRequired);
                }
                let s = ScramClient::new(credential, binding);
                tracing::debug!(
                    mechanism = s.mechanism(),
                    passthrough = configured.is_none(),
                    "SCRAM login to the server"
                );
                writer
                    .write_frame(&encode::sasl_initial_response(s.mechanism(), s.message()))
                    .await
                    .map_err(NetError::from)?;
                scram = Some(s);
            }
            AuthRequest::SaslContinue(data) => {
                let s = scram.as_mut().ok_or(ScramClientError::OutOfOrder)?;
                s.update(data)?;
                writer
                    .write_frame(&encode::sasl_response(s.message()))
                    .await
                    .map_err(NetError::from)?;
            }
            AuthRequest::SaslFinal(data) => {
                let s = scram.take().ok_or(ScramClientError::OutOfOrder)?;
                bound = s.mechanism() == SCRAM_SHA_256_PLUS;
                s.finish(data)?;
            }
            AuthRequest::Other(code) => return Err(ServerError::UnsupportedAuth(code)),
        }
    }
}

/// Whether a configured password is an md5 hash (`md5` and 32 hex digits).
fn is_md5_hash(pw: &str) -> bool {
    pw.len() == 35 && pw.starts_with("md5") && pw[3..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// SSLRequest's request code (PostgreSQL's `NEGOTIATE_SSL_CODE`).
const SSL_REQUEST_CODE: i32 = 80877103;

/// SSLRequest and the handshake, as libpq does for the login's sslmode: `disable` sends no
/// SSLRequest; on `N`, `allow`/`prefer` go on in plain text and the others stop.
///
/// The one-byte answer is read straight from the socket, so bytes a man in the middle might
/// append after it cannot end up in the TLS stream or be taken for the server's (the
/// CVE-2021-23222 lesson).
///
/// Over TLS, also returns the `tls-server-end-point` channel-binding data of the server's
/// certificate.
async fn negotiate_tls(
    login: &ServerLogin,
    host: &str,
    mut tcp: TcpStream,
) -> Result<(ServerRead, ServerWrite, Option<Vec<u8>>), ServerError> {
    let plain = |tcp| {
        let (r, w) = stream::split_plain(tcp);
        (r, w, None)
    };
    let Some(config) = login.tls.config.clone() else {
        return Ok(plain(tcp));
    };
    let mode = login.tls.options.mode;
    let mut request = [0u8; 8];
    request[..4].copy_from_slice(&8i32.to_be_bytes());
    request[4..].copy_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
    tcp.write_all(&request).await.map_err(NetError::from)?;
    let answer = tcp.read_u8().await.map_err(NetError::from)?;
    match answer {
        b'S' => {}
        b'N' if mode.requires_tls() => return Err(ServerError::TlsRefused(mode)),
        b'N' => return Ok(plain(tcp)),
        other => return Err(ServerError::TlsBadAnswer(other)),
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|_| {
        ServerError::Tls(std::io::Error::other(format!(
            "{host:?} is not a valid host name for TLS"
        )))
    })?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, MovableTcp::new(tcp))
        .await
        .map_err(ServerError::Tls)?;
    let end_point = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| crate::net::x509::tls_server_end_point(cert.as_ref()));
    let (r, w) = stream::split_tls(tls).map_err(ServerError::Connect)?;
    Ok((r, w, end_point))
}

/// "md5" + hex(md5(md5hex + salt)).
fn md5_salted(md5hex: &str, salt: [u8; 4]) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(md5hex.as_bytes());
    h.update(salt);
    let d = h.finalize();
    let mut s = String::with_capacity(35);
    s.push_str("md5");
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}
