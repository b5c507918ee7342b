//! A test kit for the relay engine alone, without PostgreSQL: scripted client and server frames
//! go in, and what the engine sends to each side comes out decoded, so a test can assert the
//! exact sequence the server receives (statement names, SQL) and the client receives (SQLSTATEs,
//! column names, row values).
//!
//! The engine does no I/O (see `pgheal::heal`), so a test plays both peers by hand: it sends the
//! client's frames, reads what reached the server, answers as PostgreSQL would, and reads what
//! reached the client. Nothing is answered automatically: every server answer is written in the
//! test, which is what makes the expected sequences exact.
//!
//! Bytes stay bytes: names, SQL, tags and values are kept as `Vec<u8>`; [`Brief`] renders a
//! message as one short line (bytes outside printable ASCII escaped), which is what tests
//! compare against.
#![allow(dead_code)]

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use pgheal::heal::relay::Naming;
use pgheal::heal::{HealEvent, Outbox, Outcome, Relay, RelayConfig, Rest, SchemaEpoch};
use pgheal::protocol::backend::{self, ErrorFields, Field, TxStatus};
use pgheal::protocol::frame::split_frame;
use pgheal::protocol::frontend::{self, Bind, Parse, Target};
use pgheal::protocol::{encode, Frame};
use pgheal::statements::{ServerPrepared, StatementNames};

/// One engine, the prepared statements of its server connection, the schema epoch it shares,
/// and what each side has received and not been read yet.
pub struct Kit {
    pub relay: Relay,
    pub srv: ServerPrepared,
    pub epoch: Arc<SchemaEpoch>,
    out: Outbox,
    to_server: Vec<ToServer>,
    to_client: Vec<ToClient>,
    events: Vec<HealEvent>,
}

/// A message as one short line, e.g. `B s1`, `Z I`, `E 0A000`, `D 1|9.50|first`.
pub trait Brief {
    fn brief(&self) -> String;
    /// The message tag.
    fn tag(&self) -> char;
}

/// The brief lines of a sequence of messages.
pub fn briefs<T: Brief>(msgs: &[T]) -> Vec<String> {
    msgs.iter().map(Brief::brief).collect()
}

/// The tags of a sequence of messages, e.g. `PDBES`.
pub fn tags<T: Brief>(msgs: &[T]) -> String {
    msgs.iter().map(Brief::tag).collect()
}

/// Printable ASCII as it is, any other byte as `\xNN` (no UTF-8 assumed).
fn show(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if (0x20..0x7f).contains(&c) && c != b'\\' {
            s.push(char::from(c));
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

/// A frontend message as the server receives it from the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToServer {
    Parse { name: Vec<u8>, sql: Vec<u8> },
    Bind { portal: Vec<u8>, stmt: Vec<u8> },
    DescribeStatement(Vec<u8>),
    DescribePortal(Vec<u8>),
    Execute(Vec<u8>),
    CloseStatement(Vec<u8>),
    ClosePortal(Vec<u8>),
    Sync,
    Flush,
    Query(Vec<u8>),
    CopyData,
    CopyDone,
    CopyFail,
    Other(u8),
}

impl ToServer {
    pub fn decode(f: &Frame) -> ToServer {
        let bad = |what: &str| -> ! { panic!("the engine wrote a malformed {what}") };
        match f.tag {
            frontend::PARSE => {
                let p = Parse::decode(f).unwrap_or_else(|_| bad("Parse"));
                ToServer::Parse {
                    name: p.name.to_vec(),
                    sql: p.query.to_vec(),
                }
            }
            frontend::BIND => {
                let b = Bind::decode(f).unwrap_or_else(|_| bad("Bind"));
                ToServer::Bind {
                    portal: b.portal.to_vec(),
                    stmt: b.statement.to_vec(),
                }
            }
            frontend::DESCRIBE => match frontend::decode_describe(f) {
                Ok(Target::Statement(n)) => ToServer::DescribeStatement(n.to_vec()),
                Ok(Target::Portal(n)) => ToServer::DescribePortal(n.to_vec()),
                Err(_) => bad("Describe"),
            },
            frontend::CLOSE => match frontend::decode_close(f) {
                Ok(Target::Statement(n)) => ToServer::CloseStatement(n.to_vec()),
                Ok(Target::Portal(n)) => ToServer::ClosePortal(n.to_vec()),
                Err(_) => bad("Close"),
            },
            frontend::EXECUTE => {
                let (portal, _) = frontend::decode_execute(f).unwrap_or_else(|_| bad("Execute"));
                ToServer::Execute(portal.to_vec())
            }
            frontend::SYNC => ToServer::Sync,
            frontend::FLUSH => ToServer::Flush,
            frontend::QUERY => ToServer::Query(
                frontend::decode_query(f)
                    .unwrap_or_else(|_| bad("Query"))
                    .to_vec(),
            ),
            frontend::COPY_DATA => ToServer::CopyData,
            frontend::COPY_DONE => ToServer::CopyDone,
            frontend::COPY_FAIL => ToServer::CopyFail,
            t => ToServer::Other(t),
        }
    }
}

impl Brief for ToServer {
    fn brief(&self) -> String {
        match self {
            ToServer::Parse { name, sql } => format!("P {} {}", show(name), show(sql)),
            ToServer::Bind { portal, stmt } if portal.is_empty() => format!("B {}", show(stmt)),
            ToServer::Bind { portal, stmt } => format!("B {}>{}", show(stmt), show(portal)),
            ToServer::DescribeStatement(n) => format!("DS {}", show(n)),
            ToServer::DescribePortal(n) => format!("DP {}", show(n)),
            ToServer::Execute(p) if p.is_empty() => "E".into(),
            ToServer::Execute(p) => format!("E {}", show(p)),
            ToServer::CloseStatement(n) => format!("CS {}", show(n)),
            ToServer::ClosePortal(n) => format!("CP {}", show(n)),
            ToServer::Sync => "S".into(),
            ToServer::Flush => "H".into(),
            ToServer::Query(sql) => format!("Q {}", show(sql)),
            ToServer::CopyData => "d".into(),
            ToServer::CopyDone => "c".into(),
            ToServer::CopyFail => "f".into(),
            ToServer::Other(t) => format!("? {}", char::from(*t)),
        }
    }
    fn tag(&self) -> char {
        char::from(match self {
            ToServer::Parse { .. } => b'P',
            ToServer::Bind { .. } => b'B',
            ToServer::DescribeStatement(_) | ToServer::DescribePortal(_) => b'D',
            ToServer::Execute(_) => b'E',
            ToServer::CloseStatement(_) | ToServer::ClosePortal(_) => b'C',
            ToServer::Sync => b'S',
            ToServer::Flush => b'H',
            ToServer::Query(_) => b'Q',
            ToServer::CopyData => b'd',
            ToServer::CopyDone => b'c',
            ToServer::CopyFail => b'f',
            ToServer::Other(t) => *t,
        })
    }
}

/// A backend message as the client receives it from the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToClient {
    ParseComplete,
    BindComplete,
    CloseComplete,
    ParameterDescription,
    /// Column names.
    RowDescription(Vec<Vec<u8>>),
    NoData,
    DataRow(Vec<Option<Vec<u8>>>),
    CommandComplete(Vec<u8>),
    EmptyQuery,
    PortalSuspended,
    /// SQLSTATE.
    Error(Vec<u8>),
    Ready(TxStatus),
    CopyIn,
    Other(u8),
}

impl ToClient {
    pub fn decode(f: &Frame) -> ToClient {
        match f.tag {
            b'1' => ToClient::ParseComplete,
            b'2' => ToClient::BindComplete,
            b'3' => ToClient::CloseComplete,
            b't' => ToClient::ParameterDescription,
            b'T' => ToClient::RowDescription(
                backend::decode_row_description(f)
                    .expect("RowDescription to the client decodes")
                    .into_iter()
                    .map(|c| c.name)
                    .collect(),
            ),
            b'n' => ToClient::NoData,
            b'D' => {
                let mut ranges = Vec::new();
                backend::data_row_columns(f, &mut ranges).expect("DataRow to the client decodes");
                ToClient::DataRow(
                    ranges
                        .into_iter()
                        .map(|r| {
                            let len = i32::from_be_bytes(
                                f.bytes[r.start..r.start + 4].try_into().expect("4 bytes"),
                            );
                            (len >= 0).then(|| f.bytes[r.start + 4..r.end].to_vec())
                        })
                        .collect(),
                )
            }
            b'C' => ToClient::CommandComplete(
                backend::decode_command_complete(f)
                    .expect("CommandComplete decodes")
                    .to_vec(),
            ),
            b'I' => ToClient::EmptyQuery,
            b's' => ToClient::PortalSuspended,
            b'E' => ToClient::Error(
                ErrorFields::decode(f)
                    .expect("ErrorResponse to the client decodes")
                    .code()
                    .unwrap_or("")
                    .as_bytes()
                    .to_vec(),
            ),
            b'Z' => ToClient::Ready(
                backend::decode_ready_for_query(f).expect("ReadyForQuery to the client decodes"),
            ),
            b'G' => ToClient::CopyIn,
            t => ToClient::Other(t),
        }
    }
}

impl Brief for ToClient {
    fn brief(&self) -> String {
        match self {
            ToClient::ParseComplete => "1".into(),
            ToClient::BindComplete => "2".into(),
            ToClient::CloseComplete => "3".into(),
            ToClient::ParameterDescription => "t".into(),
            ToClient::RowDescription(names) => format!(
                "T {}",
                names.iter().map(|n| show(n)).collect::<Vec<_>>().join(",")
            ),
            ToClient::NoData => "n".into(),
            ToClient::DataRow(values) => format!(
                "D {}",
                values
                    .iter()
                    .map(|v| v.as_deref().map_or("NULL".into(), show))
                    .collect::<Vec<_>>()
                    .join("|")
            ),
            ToClient::CommandComplete(tag) => format!("C {}", show(tag)),
            ToClient::EmptyQuery => "I".into(),
            ToClient::PortalSuspended => "s".into(),
            ToClient::Error(code) => format!("E {}", show(code)),
            ToClient::Ready(s) => format!("Z {}", char::from(s.byte())),
            ToClient::CopyIn => "G".into(),
            ToClient::Other(t) => format!("? {}", char::from(*t)),
        }
    }
    fn tag(&self) -> char {
        char::from(match self {
            ToClient::ParseComplete => b'1',
            ToClient::BindComplete => b'2',
            ToClient::CloseComplete => b'3',
            ToClient::ParameterDescription => b't',
            ToClient::RowDescription(_) => b'T',
            ToClient::NoData => b'n',
            ToClient::DataRow(_) => b'D',
            ToClient::CommandComplete(_) => b'C',
            ToClient::EmptyQuery => b'I',
            ToClient::PortalSuspended => b's',
            ToClient::Error(_) => b'E',
            ToClient::Ready(_) => b'Z',
            ToClient::CopyIn => b'G',
            ToClient::Other(t) => *t,
        })
    }
}

/// Frames written as parts (a renamed Bind is several parts): joined and split again, as the
/// other side reads them.
fn split(parts: &mut Vec<Bytes>) -> Vec<Frame> {
    let mut joined = BytesMut::new();
    for p in parts.drain(..) {
        joined.extend_from_slice(&p);
    }
    let mut frames = Vec::new();
    while let Some(f) = split_frame(&mut joined, 1 << 20).expect("well-framed output") {
        frames.push(f);
    }
    assert!(joined.is_empty(), "a partial frame in the output");
    frames
}

impl Kit {
    pub fn new(cfg: RelayConfig, naming: Naming) -> Kit {
        let epoch = Arc::new(SchemaEpoch::default());
        Kit {
            relay: Relay::new(cfg, naming).with_epoch(epoch.clone()),
            srv: ServerPrepared::new(100),
            epoch,
            out: Outbox::default(),
            to_server: Vec::new(),
            to_client: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Session pooling, default heal settings.
    pub fn session() -> Kit {
        Kit::new(RelayConfig::default(), Naming::Session)
    }

    /// Session pooling with these settings.
    pub fn session_with(cfg: RelayConfig) -> Kit {
        Kit::new(cfg, Naming::Session)
    }

    /// Transaction pooling: pool-wide statement names (`pgheal_1`, ...) from `names`.
    pub fn pooled(names: Arc<StatementNames>) -> Kit {
        Kit::new(
            RelayConfig::default(),
            Naming::Pooled {
                names,
                search_path: None,
            },
        )
    }

    /// The client moves to another server connection, one that has prepared nothing yet
    /// (transaction pooling between transactions).
    pub fn new_server_connection(&mut self) {
        self.swap_server_connection(&mut ServerPrepared::new(100));
    }

    /// The client moves to server connection `srv` (transaction pooling between transactions),
    /// and `srv` becomes the one it leaves, for another client to use.
    pub fn swap_server_connection(&mut self, srv: &mut ServerPrepared) {
        assert!(
            self.relay.at_transaction_boundary(),
            "moved between server connections mid-transaction: {}",
            self.relay.debug_state()
        );
        std::mem::swap(&mut self.srv, srv);
    }

    /// Collect what one engine step put in the outbox.
    fn collect(&mut self) {
        let to_server = split(&mut self.out.to_server);
        self.to_server
            .extend(to_server.iter().map(ToServer::decode));
        let to_client = split(&mut self.out.to_client);
        self.to_client
            .extend(to_client.iter().map(ToClient::decode));
        self.events.append(&mut self.out.events);
    }

    /// Client frames in; everything the server has received since it was last read.
    pub fn client(&mut self, frames: &[Frame]) -> Vec<ToServer> {
        for f in frames {
            self.relay
                .on_client(f.clone(), &mut self.srv, &mut self.out)
                .expect("client frame accepted");
            self.collect();
        }
        self.server_received()
    }

    /// Server frames in; everything the client has received since it was last read.
    pub fn server(&mut self, frames: &[Frame]) -> Vec<ToClient> {
        for f in frames {
            self.relay
                .on_server(f.clone(), &mut self.srv, &mut self.out)
                .expect("server frame accepted");
            self.collect();
        }
        self.client_received()
    }

    /// [`Kit::client`] as brief lines.
    pub fn client_briefs(&mut self, frames: &[Frame]) -> Vec<String> {
        briefs(&self.client(frames))
    }

    /// [`Kit::server`] as brief lines.
    pub fn server_briefs(&mut self, frames: &[Frame]) -> Vec<String> {
        briefs(&self.server(frames))
    }

    /// [`Kit::client`] as tags.
    pub fn client_tags(&mut self, frames: &[Frame]) -> String {
        tags(&self.client(frames))
    }

    /// [`Kit::server`] as tags.
    pub fn server_tags(&mut self, frames: &[Frame]) -> String {
        tags(&self.server(frames))
    }

    /// What the server received and was not read yet.
    pub fn server_received(&mut self) -> Vec<ToServer> {
        std::mem::take(&mut self.to_server)
    }

    /// What the client received and was not read yet.
    pub fn client_received(&mut self) -> Vec<ToClient> {
        std::mem::take(&mut self.to_client)
    }

    /// Heal events reported since last read.
    pub fn events(&mut self) -> Vec<HealEvent> {
        std::mem::take(&mut self.events)
    }

    /// One step of winding down (the client has left); the tags it sent to the server.
    pub fn wind_down(&mut self) -> (Rest, String) {
        let rest = self
            .relay
            .wind_down(&mut self.srv, &mut self.out)
            .expect("wind down");
        self.collect();
        self.to_client.clear();
        (rest, tags(&self.server_received()))
    }

    /// Server frames in while the client is gone; what the client would have got is dropped.
    pub fn server_unheard(&mut self, frames: &[Frame]) {
        self.server(frames);
    }

    /// Nothing in flight and nothing unread on either side.
    pub fn assert_settled(&mut self) {
        assert!(self.relay.is_quiet(), "{}", self.relay.debug_state());
        assert_eq!(briefs(&self.server_received()), Vec::<String>::new());
        assert_eq!(briefs(&self.client_received()), Vec::<String>::new());
    }
}

// Frontend messages.
pub fn parse(name: &str, sql: &str) -> Frame {
    encode::parse(name, sql, &[])
}
/// Bind of `stmt` to the unnamed portal, no parameters.
pub fn bind(stmt: &str) -> Frame {
    encode::bind_no_params("", stmt)
}
pub fn bind_portal(portal: &str, stmt: &str) -> Frame {
    encode::bind_no_params(portal, stmt)
}
/// Execute of the unnamed portal.
pub fn execute() -> Frame {
    encode::execute("", 0)
}
/// Execute of a named portal.
pub fn execute_portal(portal: &str) -> Frame {
    encode::execute(portal, 0)
}
pub fn describe_stmt(name: &str) -> Frame {
    encode::describe(Target::Statement(name.as_bytes()))
}
pub fn describe_portal(name: &str) -> Frame {
    encode::describe(Target::Portal(name.as_bytes()))
}
pub fn close_stmt(name: &str) -> Frame {
    encode::close(Target::Statement(name.as_bytes()))
}
pub fn flush() -> Frame {
    encode::raw(frontend::FLUSH, &[])
}
pub fn sync() -> Frame {
    encode::sync()
}
pub fn query(sql: &str) -> Frame {
    encode::query(sql)
}

// Backend messages.
pub fn parse_complete() -> Frame {
    encode::parse_complete()
}
pub fn bind_complete() -> Frame {
    encode::raw(b'2', &[])
}
pub fn close_complete() -> Frame {
    encode::close_complete()
}
pub fn param_desc() -> Frame {
    encode::raw(b't', &[0, 0])
}
pub fn no_data() -> Frame {
    encode::raw(b'n', &[])
}
pub fn complete(tag: &str) -> Frame {
    encode::command_complete(tag)
}
pub fn error(code: &str) -> Frame {
    encode::error_response("ERROR", code, "scripted error")
}
/// `0A000 cached plan must not change result type`, as PostgreSQL sends it.
pub fn cached_plan() -> Frame {
    pgheal::heal::recognize::cached_plan_error()
}
pub fn ready(status: TxStatus) -> Frame {
    encode::ready_for_query(status)
}
pub fn ready_idle() -> Frame {
    ready(TxStatus::Idle)
}
pub fn ready_in_block() -> Frame {
    ready(TxStatus::InTransaction)
}
pub fn copy_in_response() -> Frame {
    encode::raw(b'G', &[0, 0, 1, 0, 0])
}

pub const INT4: u32 = 23;
pub const TEXT: u32 = 25;
pub const NUMERIC: u32 = 1700;
/// The table of the scripted columns.
pub const TABLE_OID: u32 = 16_384;

/// A table column: name, attribute number and type.
pub fn col(name: &str, attnum: i16, type_oid: u32) -> Field {
    Field {
        name: name.as_bytes().to_vec(),
        table_oid: TABLE_OID,
        column_attr: attnum,
        type_oid,
        type_len: -1,
        type_mod: -1,
        format: 0,
    }
}

pub fn row_desc(cols: &[Field]) -> Frame {
    encode::row_description(cols)
}

/// A DataRow of text values (`None`: NULL).
pub fn data_row(values: &[Option<&str>]) -> Frame {
    let mut body = Vec::new();
    body.extend_from_slice(&(values.len() as i16).to_be_bytes());
    for v in values {
        match v {
            Some(v) => {
                body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                body.extend_from_slice(v.as_bytes());
            }
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    encode::raw(b'D', &body)
}

/// The brief lines of `lines` (for `assert_eq!` against [`Kit::client_briefs`] and friends).
pub fn lines(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|s| s.to_string()).collect()
}

// The orders schema of the repair tests (tests/it/engine_repairs.rs, engine_findings.rs): a
// migration adds `discount_code text` at the end of `orders`.

/// The statement of the scripted tests: a row of `orders`.
pub const SQL: &str = "SELECT * FROM orders WHERE id = 1";

/// `orders(id int4, total numeric, note text)`, the shape before the migration.
pub fn old_cols() -> Vec<Field> {
    vec![
        col("id", 1, INT4),
        col("total", 2, NUMERIC),
        col("note", 3, TEXT),
    ]
}

/// After the migration: a column added at the end.
pub fn new_cols() -> Vec<Field> {
    let mut c = old_cols();
    c.push(col("discount_code", 4, TEXT));
    c
}

/// The row as the server sends it after the migration.
pub fn new_row() -> Frame {
    data_row(&[Some("1"), Some("9.50"), Some("first"), None])
}

/// The row in the client's contract.
pub const OLD_ROW: &str = "D 1|9.50|first";

/// What the server receives when pgheal probes the new shape of `sql`.
pub fn probe(sql: &str) -> Vec<String> {
    lines(&[
        &format!("P pgheal_probe {sql}"),
        "DS pgheal_probe",
        "CS pgheal_probe",
        "S",
    ])
}

/// The server's answers to [`probe`] of a row-returning statement with columns `cols`.
pub fn probe_answers(cols: &[Field], status: TxStatus) -> Vec<Frame> {
    vec![
        parse_complete(),
        param_desc(),
        row_desc(cols),
        close_complete(),
        ready(status),
    ]
}

/// What the server receives when pgheal prepares `name` again after a probe.
pub fn reprepare(name: &str, sql: &str) -> Vec<String> {
    lines(&[
        &format!("CS {name}"),
        &format!("P {name} {sql}"),
        &format!("DS {name}"),
        "S",
    ])
}

/// The server's answers to [`reprepare`] of a statement with columns `cols`.
pub fn reprepare_answers(cols: &[Field], status: TxStatus) -> Vec<Frame> {
    vec![
        close_complete(),
        parse_complete(),
        param_desc(),
        row_desc(cols),
        ready(status),
    ]
}

/// The repair's exchange for statement s1 after the migration to [`new_cols`]: pgheal probes
/// the shape, then prepares s1 again; the server answers each, in transaction state `status`.
pub fn probe_and_reprepare(k: &mut Kit, status: TxStatus) {
    assert_eq!(briefs(&k.server_received()), probe(SQL));
    k.server(&probe_answers(&new_cols(), status));
    assert_eq!(briefs(&k.server_received()), reprepare("s1", SQL));
    k.server(&reprepare_answers(&new_cols(), status));
}

/// A driver prepares `name` (Parse, Describe 'S', Sync) in session pooling; `cols`: its
/// columns (`None`: no rows).
pub fn prepared(k: &mut Kit, name: &str, sql: &str, cols: Option<&[Field]>) {
    assert_eq!(
        k.client_briefs(&[parse(name, sql), describe_stmt(name), sync()]),
        lines(&[
            &format!("P {name} {sql}"),
            // pgheal's own Describe: the statement's contract.
            &format!("DS {name}"),
            &format!("DS {name}"),
            "S",
        ])
    );
    let desc = || match cols {
        Some(c) => row_desc(c),
        None => no_data(),
    };
    let got = k.server_briefs(&[
        parse_complete(),
        param_desc(),
        desc(),
        param_desc(),
        desc(),
        ready_idle(),
    ]);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!((got[0].as_str(), got[3].as_str()), ("1", "Z I"));
    k.assert_settled();
}

/// The outcomes of the heal events reported since last read.
pub fn outcomes(k: &mut Kit) -> Vec<Outcome> {
    k.events().into_iter().map(|e| e.outcome).collect()
}

/// A driver prepares s1 ([`SQL`]: Parse, Describe 'S', Sync) in transaction pooling, on a server
/// connection that has not prepared it: pgheal prepares it under the pool-wide name `pgheal_1`
/// and describes it (the contract) before the client's Describe; the server answers with
/// columns `cols`, which the client is told.
pub fn prepared_pooled(k: &mut Kit, cols: &[Field]) {
    assert_eq!(
        k.client_briefs(&[parse("s1", SQL), describe_stmt("s1"), sync()]),
        lines(&[
            "CS pgheal_1",
            &format!("P pgheal_1 {SQL}"),
            "DS pgheal_1",
            "DS pgheal_1",
            "S"
        ])
    );
    let names: Vec<&[u8]> = cols.iter().map(|c| c.name.as_slice()).collect();
    let described = format!("T {}", String::from_utf8_lossy(&names.join(&b","[..])));
    assert_eq!(
        k.server_briefs(&[
            close_complete(),
            parse_complete(),
            param_desc(),
            row_desc(cols),
            param_desc(),
            row_desc(cols),
            ready_idle(),
        ]),
        lines(&["1", "t", &described, "Z I"])
    );
    assert_eq!(outcomes(k), vec![], "a first prepare is no heal");
    k.assert_settled();
}

/// The client runs s1 (Bind, Execute, Sync) while pgheal must learn its shape on this server
/// connection first: s1 is prepared again (Close, Parse, Describe, Flush) and the Bind waits;
/// the server describes the migration's [`new_cols`]; then the Bind goes, and the row reaches
/// the client projected onto the contract's three columns, with the ReadyForQuery of `status`.
pub fn bind_after_reprepare(k: &mut Kit, status: TxStatus) {
    assert_eq!(
        k.client_briefs(&[bind("s1"), execute(), sync()]),
        lines(&["CS s1", &format!("P s1 {SQL}"), "DS s1", "H"]),
        "the client's Bind waits for the new shape"
    );
    assert_eq!(
        k.server_briefs(&[
            close_complete(),
            parse_complete(),
            param_desc(),
            row_desc(&new_cols())
        ]),
        lines(&[])
    );
    assert_eq!(briefs(&k.server_received()), lines(&["B s1", "E", "S"]));
    assert_eq!(
        k.server_briefs(&[
            bind_complete(),
            new_row(),
            complete("SELECT 1"),
            ready(status)
        ]),
        lines(&[
            "2",
            OLD_ROW,
            "C SELECT 1",
            &format!("Z {}", char::from(status.byte()))
        ])
    );
    assert_eq!(outcomes(k), vec![Outcome::Projected]);
    k.assert_settled();
}

/// The first messages of a batch that fails: an unnamed statement dividing by zero, bound and
/// executed. See [`division_by_zero_answers`].
pub fn division_by_zero() -> [Frame; 3] {
    [parse("", "SELECT 1/0"), bind(""), execute()]
}

/// The server runs [`division_by_zero`]: it answers the Parse and the Bind, fails the Execute
/// and skips the rest of the batch up to its Sync. The client gets each answer.
pub fn division_by_zero_answers(k: &mut Kit) {
    assert_eq!(
        k.server_briefs(&[
            parse_complete(),
            bind_complete(),
            error("22012"),
            ready_idle()
        ]),
        lines(&["1", "2", "E 22012", "Z I"])
    );
}
