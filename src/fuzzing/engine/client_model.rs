//! The model of the client that the engine target puts in front of the [`Relay`]: what it
//! sent and still waits an answer for, what it was told of its statements' and portals'
//! shapes, and the checks on every frame it reads.
//!
//! This is the reference the engine is checked against, kept apart from the driver (`mod.rs`)
//! and the model of the server (`server_model.rs`) so that a change of what the client may
//! see (a new engine feature) is a change here alone. Each frame the client gets must answer
//! the oldest message still waiting (after an error, the messages the server skips up to Sync
//! get no answer): a frame that answers nothing, or answers out of order, panics. Each DataRow
//! must carry exactly the columns, by name and in order, of the last description the client
//! got for its portal (values name their column). A ParseComplete for a named statement the
//! client was told exists (and has not been told closed) panics: PostgreSQL answers `42P05`.
//!
//! [`Relay`]: crate::heal::Relay

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::BytesMut;

use super::{show, trace};
use crate::protocol::backend;
use crate::protocol::frame::split_frame;
use crate::protocol::frontend::Target;
use crate::protocol::Frame;

/// What the client sent and still waits an answer for.
#[derive(Debug, Clone)]
pub(super) enum Sent {
    Parse(Vec<u8>),
    Bind { portal: Vec<u8>, stmt: Vec<u8> },
    DescribeS { name: Vec<u8>, got_params: bool },
    DescribeP(Vec<u8>),
    Execute(Vec<u8>),
    Close(Target<'static>, Vec<u8>),
    Sync,
    Query { shape: Option<Vec<String>> },
}

/// The client: what it sent, what it knows of its statements' shapes, and the checks on what
/// it reads.
#[derive(Default)]
pub(super) struct Client {
    pub(super) sent: VecDeque<Sent>,
    skipping: bool,
    stmt_shape: HashMap<Vec<u8>, Vec<String>>,
    portal_shape: HashMap<Vec<u8>, Vec<String>>,
    /// The statement each portal was bound from.
    portal_stmt: HashMap<Vec<u8>, Vec<u8>>,
    /// The named statements the client was told exist (ParseComplete, not yet CloseComplete):
    /// PostgreSQL refuses a Parse of one with `42P05`, in a replay too.
    prepared: HashSet<Vec<u8>>,
    pub(super) input: BytesMut,
    pub(super) syncs: usize,
    pub(super) readies: usize,
}

fn names(f: &Frame) -> Vec<String> {
    backend::decode_row_description(f)
        .expect("RowDescription to the client decodes")
        .into_iter()
        .map(|c| String::from_utf8(c.name).expect("column names are ASCII"))
        .collect()
}

fn row_values(f: &Frame) -> Vec<String> {
    let mut ranges = Vec::new();
    backend::data_row_columns(f, &mut ranges).expect("DataRow to the client decodes");
    ranges
        .into_iter()
        .map(|r| String::from_utf8(f.bytes[r.start + 4..r.end].to_vec()).expect("ASCII value"))
        .collect()
}

impl Client {
    pub(super) fn send(&mut self, s: Sent) {
        if matches!(s, Sent::Sync) {
            self.syncs += 1;
        }
        self.sent.push_back(s);
    }

    pub(super) fn read(&mut self) {
        loop {
            let f = match split_frame(&mut self.input, 1 << 20) {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => panic!("the engine wrote a malformed frame to the client: {e}"),
            };
            self.frame(&f);
        }
    }

    fn frame(&mut self, f: &Frame) {
        if trace() {
            eprintln!("  engine -> client {}", show(f));
        }
        let tag = f.tag;
        if matches!(tag, b'N' | b'S' | b'A') {
            return;
        }
        if tag == b'E' {
            backend::ErrorFields::decode(f).expect("ErrorResponse to the client decodes");
        }
        // Messages the server skipped after an error get no answer.
        while self.skipping && !matches!(self.sent.front(), Some(Sent::Sync) | None) {
            self.sent.pop_front();
        }
        let Some(front) = self.sent.front_mut() else {
            panic!(
                "the client got {:?} it did not ask for (a duplicate?)",
                char::from(tag)
            );
        };
        let done = match (front, tag) {
            (Sent::Sync, b'Z') => {
                backend::decode_ready_for_query(f).expect("ReadyForQuery decodes");
                self.skipping = false;
                self.readies += 1;
                true
            }
            (Sent::Query { .. }, b'Z') => {
                backend::decode_ready_for_query(f).expect("ReadyForQuery decodes");
                true
            }
            (Sent::Query { shape }, b'T') => {
                *shape = Some(names(f));
                false
            }
            (Sent::Query { shape }, b'D') => {
                let values = row_values(f);
                let shape = shape.as_ref().expect("a DataRow before its RowDescription");
                assert_eq!(&values, shape, "a row of another shape in a simple query");
                false
            }
            (Sent::Query { .. }, b'C' | b'I' | b'E') => false,
            (Sent::Parse(name), b'1') => {
                let name = std::mem::take(name);
                assert!(
                    name.is_empty() || self.prepared.insert(name.clone()),
                    "a Parse of existing statement {:?} succeeded (PostgreSQL answers 42P05)",
                    String::from_utf8_lossy(&name)
                );
                self.stmt_shape.remove(&name);
                // Portals bound from the old statement keep their shape but are no longer
                // the new statement's: describing one tells nothing about the new statement.
                self.portal_stmt.retain(|_, s| *s != name);
                true
            }
            (Sent::Bind { portal, stmt }, b'2') => {
                self.portal_stmt.insert(portal.clone(), stmt.clone());
                match self.stmt_shape.get(stmt.as_slice()) {
                    Some(s) => self.portal_shape.insert(portal.clone(), s.clone()),
                    None => self.portal_shape.remove(portal.as_slice()),
                };
                true
            }
            (Sent::DescribeS { got_params, .. }, b't') if !*got_params => {
                *got_params = true;
                false
            }
            (Sent::DescribeS { name, got_params }, b'T' | b'n') if *got_params => {
                let shape = if tag == b'T' { names(f) } else { Vec::new() };
                self.stmt_shape.insert(name.clone(), shape);
                true
            }
            (Sent::DescribeP(portal), b'T' | b'n') => {
                let shape = if tag == b'T' { names(f) } else { Vec::new() };
                // The engine's assumption (src/heal/repair.rs `describes`): a client that
                // describes a portal bound from a statement reads the statement's new shape
                // from then on. Modelled here so the target checks everything else; see
                // docs/fuzzing.md (findings) for why this is a question, not a given.
                if let Some(stmt) = self.portal_stmt.get(portal.as_slice()) {
                    self.stmt_shape.insert(stmt.clone(), shape.clone());
                }
                self.portal_shape.insert(portal.clone(), shape);
                true
            }
            (Sent::Execute(portal), b'D') => {
                let values = row_values(f);
                if let Some(shape) = self.portal_shape.get(portal.as_slice()) {
                    assert_eq!(
                        &values, shape,
                        "a DataRow whose shape is not what the client was told"
                    );
                }
                false
            }
            (Sent::Execute(_), b'C' | b'I' | b's') => true,
            (Sent::Close(t, name), b'3') => {
                match t {
                    Target::Statement(_) => {
                        self.prepared.remove(name.as_slice());
                        self.portal_stmt.retain(|_, s| s != name);
                        self.stmt_shape.remove(name.as_slice())
                    }
                    Target::Portal(_) => self.portal_shape.remove(name.as_slice()),
                };
                true
            }
            (Sent::Sync, b'E') => panic!("an error answered a Sync"),
            (_, b'E') => {
                self.skipping = true;
                true
            }
            (front, _) => panic!(
                "the client got {:?} while waiting for the answer to {front:?}",
                char::from(tag)
            ),
        };
        if done {
            self.sent.pop_front();
        }
    }
}
