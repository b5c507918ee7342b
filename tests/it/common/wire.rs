//! A raw protocol client for tests that must control every message: pipelines, Flush-terminated
//! segments, Describe 'S' of stale statements, names and SQL in any client encoding (builders
//! take bytes; [`Msg`] shows text lossily, [`Wire::until_ready_frames`] and [`raw_rows`] keep
//! the bytes). It speaks through pgheal's own codec.
#![allow(dead_code)]

use bytes::{BufMut, BytesMut};
use pgheal::protocol::backend::{self, AuthRequest, ErrorFields};
use pgheal::protocol::frontend::Target;
use pgheal::protocol::{encode, Frame};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A decoded backend message, in a form tests can compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    ParseComplete,
    BindComplete,
    CloseComplete,
    NoData,
    ParameterDescription,
    RowDescription(Vec<String>),
    DataRow(Vec<Option<String>>),
    CommandComplete(String),
    EmptyQuery,
    PortalSuspended,
    Error {
        code: String,
        routine: String,
        message: String,
    },
    Ready(char),
    Other(char),
}

impl Msg {
    pub fn is_error(&self) -> bool {
        matches!(self, Msg::Error { .. })
    }
}

pub struct Wire {
    stream: TcpStream,
    buf: BytesMut,
}

impl Wire {
    /// Connect and log in (SCRAM, md5, cleartext or trust) as `user`.
    pub async fn connect(port: u16, user: &str, password: &str, db: &str) -> Wire {
        Wire::connect_with(port, user, password, db, &[]).await
    }

    /// [`Wire::connect`] with more startup parameters (`client_encoding`, ...).
    pub async fn connect_with(
        port: u16,
        user: &str,
        password: &str,
        db: &str,
        params: &[(&str, &str)],
    ) -> Wire {
        Wire::try_connect_with(port, user, password, db, params)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Wire::connect`] that says why it failed instead of panicking, for clients that expect
    /// refusals (the server restarting, backends terminated during login).
    pub async fn try_connect(
        port: u16,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<Wire, String> {
        Wire::try_connect_with(port, user, password, db, &[]).await
    }

    /// [`Wire::connect_with`] that says why it failed instead of panicking.
    pub async fn try_connect_with(
        port: u16,
        user: &str,
        password: &str,
        db: &str,
        params: &[(&str, &str)],
    ) -> Result<Wire, String> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut w = Wire {
            stream,
            buf: BytesMut::new(),
        };
        let mut startup_params = vec![("user", user), ("database", db)];
        startup_params.extend_from_slice(params);
        let startup = encode::startup_message(&startup_params);
        w.stream
            .write_all(&startup)
            .await
            .map_err(|e| format!("send the startup packet: {e}"))?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let f = w.try_frame().await?;
            match f.tag {
                backend::AUTHENTICATION => match backend::decode_auth_request(&f)
                    .map_err(|e| format!("authentication request: {e}"))?
                {
                    AuthRequest::Ok => {}
                    AuthRequest::Cleartext => {
                        w.try_send(&[encode::password(password.as_bytes())]).await?
                    }
                    AuthRequest::Md5 { .. } => return Err("md5 not needed in tests".into()),
                    AuthRequest::Sasl { .. } => {
                        let s =
                            ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                        w.try_send(&[encode::sasl_initial_response("SCRAM-SHA-256", s.message())])
                            .await?;
                        scram = Some(s);
                    }
                    AuthRequest::SaslContinue(d) => {
                        let s = scram.as_mut().ok_or("SASLContinue before SASL")?;
                        s.update(d).map_err(|e| format!("SCRAM: {e}"))?;
                        let m = s.message().to_vec();
                        w.try_send(&[encode::sasl_response(&m)]).await?;
                    }
                    AuthRequest::SaslFinal(d) => scram
                        .take()
                        .ok_or("SASLFinal before SASL")?
                        .finish(d)
                        .map_err(|e| format!("SCRAM: {e}"))?,
                    AuthRequest::Other(c) => return Err(format!("auth {c}")),
                },
                backend::READY_FOR_QUERY => return Ok(w),
                backend::ERROR_RESPONSE => return Err(format!("login failed: {:?}", decode(&f))),
                _ => {}
            }
        }
    }

    /// The socket, for tests that write raw (even malformed) bytes after logging in.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    pub async fn send(&mut self, frames: &[Frame]) {
        self.try_send(frames).await.unwrap();
    }

    /// [`Wire::send`] that returns the write error.
    pub async fn try_send(&mut self, frames: &[Frame]) -> Result<(), String> {
        let mut b = BytesMut::new();
        for f in frames {
            b.put_slice(&f.bytes);
        }
        self.stream
            .write_all(&b)
            .await
            .map_err(|e| format!("send: {e}"))
    }

    pub async fn frame(&mut self) -> Frame {
        self.try_frame().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// The next frame, or why none came: the connection closed or failed, or 20 s of silence.
    pub async fn try_frame(&mut self) -> Result<Frame, String> {
        loop {
            if let Some(f) = pgheal::protocol::frame::split_frame(&mut self.buf, 1 << 30)
                .map_err(|e| format!("bad frame: {e}"))?
            {
                return Ok(f);
            }
            let n = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                self.stream.read_buf(&mut self.buf),
            )
            .await
            .map_err(|_| "the server did not answer within 20 s".to_string())?
            .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed".into());
            }
        }
    }

    /// The next message that is not a notice or parameter status.
    pub async fn recv(&mut self) -> Msg {
        loop {
            let f = self.frame().await;
            if !backend::is_async(f.tag) {
                return decode(&f);
            }
        }
    }

    /// Messages up to and including ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        loop {
            let m = self.recv().await;
            let done = matches!(m, Msg::Ready(_));
            out.push(m);
            if done {
                return out;
            }
        }
    }

    /// `n` messages (for Flush-terminated segments, which end without ReadyForQuery).
    pub async fn take(&mut self, n: usize) -> Vec<Msg> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.recv().await);
        }
        out
    }

    /// Frames up to and including ReadyForQuery, notices and parameter status left out.
    pub async fn until_ready_frames(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        loop {
            let f = self.frame().await;
            if backend::is_async(f.tag) {
                continue;
            }
            let done = f.tag == backend::READY_FOR_QUERY;
            out.push(f);
            if done {
                return out;
            }
        }
    }

    /// A simple query, all of its messages.
    pub async fn query(&mut self, sql: impl AsRef<[u8]>) -> Vec<Msg> {
        self.send(&[encode::query(sql)]).await;
        self.until_ready().await
    }

    /// A simple query; its frames, for the bytes of its rows ([`raw_rows`]).
    pub async fn query_frames(&mut self, sql: impl AsRef<[u8]>) -> Vec<Frame> {
        self.send(&[encode::query(sql)]).await;
        self.until_ready_frames().await
    }
}

pub fn decode(f: &Frame) -> Msg {
    match f.tag {
        b'1' => Msg::ParseComplete,
        b'2' => Msg::BindComplete,
        b'3' => Msg::CloseComplete,
        b'n' => Msg::NoData,
        b't' => Msg::ParameterDescription,
        b'I' => Msg::EmptyQuery,
        b's' => Msg::PortalSuspended,
        b'T' => Msg::RowDescription(
            backend::decode_row_description(f)
                .unwrap()
                .into_iter()
                .map(|c| String::from_utf8_lossy(&c.name).into_owned())
                .collect(),
        ),
        b'D' => {
            let mut cols = Vec::new();
            backend::data_row_columns(f, &mut cols).unwrap();
            Msg::DataRow(
                cols.into_iter()
                    .map(|r| {
                        let v = &f.bytes[r];
                        let len = i32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                        (len >= 0).then(|| String::from_utf8_lossy(&v[4..]).into_owned())
                    })
                    .collect(),
            )
        }
        b'C' => Msg::CommandComplete(
            String::from_utf8_lossy(backend::decode_command_complete(f).unwrap()).into_owned(),
        ),
        b'E' => {
            let e = ErrorFields::decode(f).unwrap();
            let text = |v: Option<&[u8]>| String::from_utf8_lossy(v.unwrap_or(b"")).into_owned();
            Msg::Error {
                code: e.code().unwrap_or("").into(),
                routine: text(e.routine()),
                message: text(e.message()),
            }
        }
        b'Z' => Msg::Ready(char::from(f.body()[0])),
        t => Msg::Other(char::from(t)),
    }
}

// Message builders for tests (text formats unless given). Names and SQL are bytes (`&str`
// works too).
pub fn parse(name: impl AsRef<[u8]>, sql: impl AsRef<[u8]>) -> Frame {
    encode::parse(name, sql, &[])
}

/// Bind with text parameters and the given result format codes.
pub fn bind(portal: &str, stmt: &str, params: &[&str], result_formats: &[i16]) -> Frame {
    let params: Vec<&[u8]> = params.iter().map(|p| p.as_bytes()).collect();
    bind_bytes(portal.as_bytes(), stmt.as_bytes(), &params, result_formats)
}

/// [`bind`] with names and text parameters as bytes (in the client's encoding).
pub fn bind_bytes(portal: &[u8], stmt: &[u8], params: &[&[u8]], result_formats: &[i16]) -> Frame {
    let mut b = BytesMut::new();
    b.put_slice(portal);
    b.put_u8(0);
    b.put_slice(stmt);
    b.put_u8(0);
    b.put_i16(0);
    b.put_i16(params.len() as i16);
    for p in params {
        b.put_i32(p.len() as i32);
        b.put_slice(p);
    }
    b.put_i16(result_formats.len() as i16);
    for f in result_formats {
        b.put_i16(*f);
    }
    encode::raw(b'B', &b)
}

pub fn execute(portal: impl AsRef<[u8]>) -> Frame {
    encode::execute(portal, 0)
}

pub fn describe_stmt(name: impl AsRef<[u8]>) -> Frame {
    encode::describe(Target::Statement(name.as_ref()))
}

pub fn describe_portal(name: impl AsRef<[u8]>) -> Frame {
    encode::describe(Target::Portal(name.as_ref()))
}

pub fn close_stmt(name: impl AsRef<[u8]>) -> Frame {
    encode::close(Target::Statement(name.as_ref()))
}

pub fn sync() -> Frame {
    encode::sync()
}

pub fn flush() -> Frame {
    encode::raw(b'H', &[])
}

/// Data rows of a frame list, each column's bytes as the server sent them.
pub fn raw_rows(frames: &[Frame]) -> Vec<Vec<Option<Vec<u8>>>> {
    let mut cols = Vec::new();
    frames
        .iter()
        .filter(|f| f.tag == backend::DATA_ROW)
        .map(|f| {
            backend::data_row_columns(f, &mut cols).unwrap();
            cols.iter()
                .map(|r| {
                    let v = &f.bytes[r.clone()];
                    let len = i32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                    (len >= 0).then(|| v[4..].to_vec())
                })
                .collect()
        })
        .collect()
}

/// Column names of the first RowDescription in a frame list, as bytes.
pub fn raw_columns(frames: &[Frame]) -> Vec<Vec<u8>> {
    frames
        .iter()
        .find(|f| f.tag == backend::ROW_DESCRIPTION)
        .map(|f| {
            backend::decode_row_description(f)
                .unwrap()
                .into_iter()
                .map(|c| c.name)
                .collect()
        })
        .unwrap_or_default()
}

/// Errors in a frame list: (SQLSTATE, message bytes).
pub fn raw_errors(frames: &[Frame]) -> Vec<(String, Vec<u8>)> {
    frames
        .iter()
        .filter(|f| f.tag == backend::ERROR_RESPONSE)
        .map(|f| {
            let e = ErrorFields::decode(f).unwrap();
            (
                e.code().unwrap_or("").to_owned(),
                e.message().unwrap_or(b"").to_vec(),
            )
        })
        .collect()
}

/// Data rows of a message list.
pub fn rows(msgs: &[Msg]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            Msg::DataRow(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

/// PostgreSQL's `cached plan must not change result type`, as a client receives it.
pub fn cached_plan_error() -> Msg {
    Msg::Error {
        code: "0A000".into(),
        routine: "RevalidateCachedQuery".into(),
        message: "cached plan must not change result type".into(),
    }
}

pub fn errors(msgs: &[Msg]) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| match m {
            Msg::Error { code, .. } => Some(code.clone()),
            _ => None,
        })
        .collect()
}
