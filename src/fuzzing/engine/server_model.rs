//! The model of one PostgreSQL backend that the engine target puts behind the [`Relay`]: it
//! reads what the engine writes to the server and answers as PostgreSQL 15 does
//! (docs/heal-engine.md, "Protocol facts").
//!
//! Kept apart from the driver (`mod.rs`) and the model of the client (`client_model.rs`)
//! because it is the part that changes when the engine learns a new protocol feature: the
//! driver only decides what happens next, this decides what the server answers. It follows
//! PostgreSQL's input loop: after an error in extended protocol, messages up to Sync are
//! skipped; transaction blocks, failed blocks (`25P02`, only COMMIT/ROLLBACK run), savepoints,
//! DDL undone with its block, implicit transactions ending at Sync with their portals;
//! `42P05`/`42P03`/`26000`/`34000` for duplicate or missing names; and, for a statement whose
//! table changed since it was prepared, `0A000 cached plan must not change result type` at
//! Bind, and after ParameterDescription at Describe 'S'.
//!
//! Every frame it reads is decoded, skipped ones too: a malformed frame from the engine panics.
//!
//! [`Relay`]: crate::heal::Relay

use std::collections::{HashMap, VecDeque};

use bytes::BytesMut;

use super::{show, trace};
use crate::protocol::backend::{Field, TxStatus};
use crate::protocol::frame::split_frame;
use crate::protocol::frontend::{self, Bind, Parse, Target};
use crate::protocol::{encode, Frame};

pub(super) const TABLES: usize = 3;
const TEXT: u32 = 25;
const INT8: u32 = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Col {
    attnum: i16,
    type_oid: u32,
}

impl Col {
    fn name(&self) -> String {
        format!("c{}", self.attnum)
    }
}

/// What a statement text does, as the server model understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sql {
    Select(usize),
    Insert(usize),
    Alter(usize),
    Begin,
    Commit,
    Rollback,
    Savepoint(String),
    RollbackTo(String),
    Release(String),
    Deallocate(String),
}

/// What PostgreSQL still runs in a failed transaction block (`IsTransactionExitStmt`).
fn is_exit(sql: &Sql) -> bool {
    matches!(sql, Sql::Commit | Sql::Rollback | Sql::RollbackTo(_))
}

fn classify(sql: &[u8]) -> Option<Sql> {
    let s = std::str::from_utf8(sql).ok()?.trim();
    let table = |rest: &str| -> Option<usize> {
        let n: usize = rest.strip_prefix('t')?.parse().ok()?;
        (n < TABLES).then_some(n)
    };
    let up = s.to_ascii_uppercase();
    Some(if let Some(t) = s.strip_prefix("SELECT * FROM ") {
        Sql::Select(table(t)?)
    } else if let Some(t) = s.strip_prefix("INSERT INTO ") {
        Sql::Insert(table(t)?)
    } else if let Some(t) = s.strip_prefix("ALTER TABLE ") {
        Sql::Alter(table(t)?)
    } else if up == "BEGIN" {
        Sql::Begin
    } else if up == "COMMIT" {
        Sql::Commit
    } else if up == "ROLLBACK" {
        Sql::Rollback
    } else if let Some(n) = s.strip_prefix("ROLLBACK TO SAVEPOINT ") {
        Sql::RollbackTo(n.to_owned())
    } else if let Some(n) = s.strip_prefix("RELEASE SAVEPOINT ") {
        Sql::Release(n.to_owned())
    } else if let Some(n) = s.strip_prefix("SAVEPOINT ") {
        Sql::Savepoint(n.to_owned())
    } else if let Some(n) = s.strip_prefix("DEALLOCATE ") {
        Sql::Deallocate(n.trim_matches('"').to_owned())
    } else {
        return None;
    })
}

#[derive(Debug, Clone)]
struct Stmt {
    sql: Sql,
    /// The result columns when it was prepared (`None`: returns no rows).
    shape: Option<Vec<Col>>,
}

#[derive(Debug, Clone)]
struct ServerPortal {
    sql: Sql,
    shape: Option<Vec<Col>>,
}

/// A model of one PostgreSQL backend, answering what the engine writes to it.
pub(super) struct Server {
    tables: Vec<Vec<Col>>,
    next_attnum: i16,
    /// The schema as of BEGIN: DDL in a block that rolls back is undone.
    at_begin: Option<Vec<Vec<Col>>>,
    savepoints: Vec<(String, Vec<Vec<Col>>)>,
    status: TxStatus,
    stmts: HashMap<Vec<u8>, Stmt>,
    portals: HashMap<Vec<u8>, ServerPortal>,
    /// An error in extended protocol: skip to Sync.
    skipping: bool,
    pub(super) input: BytesMut,
    pub(super) output: VecDeque<Frame>,
    pub(super) rows: u8,
}

fn row_description(cols: &[Col]) -> Frame {
    let fields: Vec<Field> = cols
        .iter()
        .map(|c| Field {
            name: c.name().into_bytes(),
            table_oid: 16_000,
            column_attr: c.attnum,
            type_oid: c.type_oid,
            type_len: -1,
            type_mod: -1,
            format: 0,
        })
        .collect();
    encode::row_description(&fields)
}

fn data_row(cols: &[Col]) -> Frame {
    let mut body = Vec::new();
    body.extend_from_slice(&(cols.len() as i16).to_be_bytes());
    for c in cols {
        let v = c.name();
        body.extend_from_slice(&(v.len() as i32).to_be_bytes());
        body.extend_from_slice(v.as_bytes());
    }
    encode::raw(b'D', &body)
}

fn error(code: &str) -> Frame {
    encode::error_response("ERROR", code, "fuzz model error")
}

impl Server {
    pub(super) fn new() -> Server {
        let mut next = 1;
        let tables = (0..TABLES)
            .map(|_| {
                (0..2)
                    .map(|_| {
                        next += 1;
                        Col {
                            attnum: next - 1,
                            type_oid: TEXT,
                        }
                    })
                    .collect()
            })
            .collect();
        Server {
            tables,
            next_attnum: next,
            at_begin: None,
            savepoints: Vec::new(),
            status: TxStatus::Idle,
            stmts: HashMap::new(),
            portals: HashMap::new(),
            skipping: false,
            input: BytesMut::new(),
            output: VecDeque::new(),
            rows: 1,
        }
    }

    fn shape(&self, sql: &Sql) -> Option<Vec<Col>> {
        match sql {
            Sql::Select(t) => Some(self.tables[*t].clone()),
            _ => None,
        }
    }

    /// A migration: `kind` picks add-at-end, add-in-front, drop-last or retype-first.
    pub(super) fn migrate(&mut self, table: usize, kind: u8) {
        let t = &mut self.tables[table % TABLES];
        let attnum = self.next_attnum;
        match kind % 4 {
            0 => {
                t.push(Col {
                    attnum,
                    type_oid: TEXT,
                });
                self.next_attnum += 1;
            }
            1 => {
                t.insert(
                    0,
                    Col {
                        attnum,
                        type_oid: TEXT,
                    },
                );
                self.next_attnum += 1;
            }
            2 if t.len() > 1 => {
                t.pop();
            }
            _ => {
                if let Some(c) = t.first_mut() {
                    c.type_oid = if c.type_oid == TEXT { INT8 } else { TEXT };
                }
            }
        }
    }

    /// An error: in a block the transaction fails; in extended protocol skip to Sync.
    fn fail(&mut self, code: &str, extended: bool) {
        self.output.push_back(error(code));
        if self.status == TxStatus::InTransaction {
            self.status = TxStatus::Failed;
        }
        if extended {
            self.skipping = true;
        }
    }

    fn end_block(&mut self, commit: bool) {
        if !commit {
            if let Some(s) = self.at_begin.take() {
                self.tables = s;
            }
        }
        self.at_begin = None;
        self.savepoints.clear();
        self.portals.clear();
        self.status = TxStatus::Idle;
    }

    /// Runs one statement; its CommandComplete (and rows) or error go out. `Err` after an error.
    fn run(&mut self, sql: &Sql, shape: Option<&[Col]>, extended: bool) -> Result<(), ()> {
        if self.status == TxStatus::Failed && !is_exit(sql) {
            self.fail("25P02", extended);
            return Err(());
        }
        let tag: String = match sql {
            Sql::Select(_) => {
                let cols = shape.unwrap_or_default();
                for _ in 0..self.rows {
                    self.output.push_back(data_row(cols));
                }
                format!("SELECT {}", self.rows)
            }
            Sql::Insert(_) => "INSERT 0 1".into(),
            Sql::Alter(t) => {
                self.migrate(*t, 0);
                "ALTER TABLE".into()
            }
            Sql::Begin => {
                if self.status == TxStatus::Idle {
                    self.status = TxStatus::InTransaction;
                    self.at_begin = Some(self.tables.clone());
                }
                "BEGIN".into()
            }
            Sql::Commit => {
                let failed = self.status == TxStatus::Failed;
                self.end_block(!failed);
                if failed { "ROLLBACK" } else { "COMMIT" }.into()
            }
            Sql::Rollback => {
                self.end_block(false);
                "ROLLBACK".into()
            }
            Sql::Savepoint(n) => {
                if self.status == TxStatus::Idle {
                    self.fail("25P01", extended);
                    return Err(());
                }
                self.savepoints.push((n.clone(), self.tables.clone()));
                "SAVEPOINT".into()
            }
            Sql::RollbackTo(n) | Sql::Release(n) => {
                let Some(i) = self.savepoints.iter().rposition(|(s, _)| s == n) else {
                    self.fail("3B001", extended);
                    return Err(());
                };
                if matches!(sql, Sql::RollbackTo(_)) {
                    self.tables = self.savepoints[i].1.clone();
                    self.savepoints.truncate(i + 1);
                    self.status = TxStatus::InTransaction;
                    "ROLLBACK".into()
                } else {
                    self.savepoints.truncate(i);
                    "RELEASE".into()
                }
            }
            Sql::Deallocate(n) => {
                if self.stmts.remove(n.as_bytes()).is_none() {
                    self.fail("26000", extended);
                    return Err(());
                }
                "DEALLOCATE".into()
            }
        };
        self.output.push_back(encode::command_complete(tag));
        Ok(())
    }

    fn ready(&mut self) {
        if self.status == TxStatus::Idle {
            // The implicit transaction ends: its portals go.
            self.portals.clear();
        }
        self.output.push_back(encode::ready_for_query(self.status));
    }

    /// Reads and answers every whole frame the engine wrote.
    pub(super) fn read(&mut self) {
        loop {
            let f = match split_frame(&mut self.input, 1 << 20) {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => panic!("the engine wrote a malformed frame to the server: {e}"),
            };
            self.message(&f);
        }
    }

    fn message(&mut self, f: &Frame) {
        if trace() {
            eprintln!(
                "  engine -> server {}{}",
                show(f),
                if self.skipping { " (skipped)" } else { "" }
            );
        }
        if self.skipping && f.tag != b'S' {
            // Still decoded: a malformed frame is a bug even when skipped.
            check_frontend(f);
            return;
        }
        match f.tag {
            b'P' => {
                let p = Parse::decode(f).expect("engine's Parse decodes");
                let Some(sql) = classify(p.query) else {
                    return self.fail("42601", true);
                };
                if self.status == TxStatus::Failed && !is_exit(&sql) {
                    return self.fail("25P02", true);
                }
                if !p.name.is_empty() && self.stmts.contains_key(p.name) {
                    return self.fail("42P05", true);
                }
                let shape = self.shape(&sql);
                self.stmts.insert(p.name.to_vec(), Stmt { sql, shape });
                self.output.push_back(encode::parse_complete());
            }
            b'B' => {
                let b = Bind::decode(f).expect("engine's Bind decodes");
                let Some(s) = self.stmts.get(b.statement).cloned() else {
                    return self.fail("26000", true);
                };
                if self.status == TxStatus::Failed && !is_exit(&s.sql) {
                    return self.fail("25P02", true);
                }
                if !b.portal.is_empty() && self.portals.contains_key(b.portal) {
                    // A named portal is not replaced: PostgreSQL refuses the Bind (before it
                    // re-plans the statement).
                    return self.fail("42P03", true);
                }
                if s.shape != self.shape(&s.sql) {
                    return self.output_cached_plan_error();
                }
                let nres = b.result_format_count();
                let ncols = s.shape.as_ref().map_or(0, Vec::len);
                if nres > 1 && nres != ncols {
                    return self.fail("08P01", true);
                }
                self.portals.insert(
                    b.portal.to_vec(),
                    ServerPortal {
                        sql: s.sql,
                        shape: s.shape,
                    },
                );
                self.output.push_back(encode::raw(b'2', &[]));
            }
            b'D' => {
                let t = frontend::decode_describe(f).expect("engine's Describe decodes");
                if self.status == TxStatus::Failed {
                    return self.fail("25P02", true);
                }
                let shape = match t {
                    Target::Statement(n) => {
                        let Some(s) = self.stmts.get(n).cloned() else {
                            return self.fail("26000", true);
                        };
                        self.output.push_back(encode::raw(b't', &[0, 0]));
                        if s.shape != self.shape(&s.sql) {
                            return self.output_cached_plan_error();
                        }
                        s.shape
                    }
                    Target::Portal(n) => {
                        let Some(p) = self.portals.get(n) else {
                            return self.fail("34000", true);
                        };
                        p.shape.clone()
                    }
                };
                self.output.push_back(match shape {
                    Some(cols) => row_description(&cols),
                    None => encode::raw(b'n', &[]),
                });
            }
            b'E' => {
                let (portal, _) = frontend::decode_execute(f).expect("engine's Execute decodes");
                let Some(p) = self.portals.get(portal).cloned() else {
                    return self.fail("34000", true);
                };
                let _ = self.run(&p.sql, p.shape.as_deref(), true);
            }
            b'C' => {
                let t = frontend::decode_close(f).expect("engine's Close decodes");
                match t {
                    Target::Statement(n) => {
                        self.stmts.remove(n);
                    }
                    Target::Portal(n) => {
                        self.portals.remove(n);
                    }
                }
                self.output.push_back(encode::close_complete());
            }
            b'S' => {
                self.skipping = false;
                self.ready();
            }
            b'H' => {}
            b'Q' => {
                let sql = frontend::decode_query(f).expect("engine's Query decodes");
                self.stmts.remove(&b""[..]);
                if sql.iter().all(u8::is_ascii_whitespace) {
                    self.output.push_back(encode::raw(b'I', &[]));
                }
                for part in sql.split(|&b| b == b';') {
                    if part.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let Some(s) = classify(part) else {
                        self.fail("42601", false);
                        break;
                    };
                    let shape = self.shape(&s);
                    if let Some(cols) = &shape {
                        if self.status != TxStatus::Failed {
                            self.output.push_back(row_description(cols));
                        }
                    }
                    if self.run(&s, shape.as_deref(), false).is_err() {
                        break;
                    }
                }
                if self.status == TxStatus::Idle {
                    self.end_block(true);
                }
                self.ready();
            }
            b'f' | b'd' | b'c' => {}
            b'X' => {}
            other => panic!(
                "the engine sent an unexpected message {:?}",
                char::from(other)
            ),
        }
    }

    fn output_cached_plan_error(&mut self) {
        self.output
            .push_back(crate::heal::recognize::cached_plan_error());
        if self.status == TxStatus::InTransaction {
            self.status = TxStatus::Failed;
        }
        self.skipping = true;
    }
}

fn check_frontend(f: &Frame) {
    let ok = match f.tag {
        b'P' => Parse::decode(f).is_ok(),
        b'B' => Bind::decode(f).is_ok(),
        b'D' => frontend::decode_describe(f).is_ok(),
        b'C' => frontend::decode_close(f).is_ok(),
        b'E' => frontend::decode_execute(f).is_ok(),
        b'Q' => frontend::decode_query(f).is_ok(),
        b'S' | b'H' => f.body().is_empty(),
        _ => true,
    };
    assert!(ok, "the engine wrote a malformed {:?}", char::from(f.tag));
}
