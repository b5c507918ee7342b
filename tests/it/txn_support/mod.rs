//! Helpers shared by the transaction-pooling tests (`tests/txn_*.rs`): pgheal in transaction
//! mode, raw clients, and [`Router`], which steers a client's next transaction onto a chosen
//! server connection by holding the other one in an open transaction.
#![allow(dead_code)]

use crate::common::wire::*;
use crate::common::*;
use pgheal::proxy::ProxyHandle;

/// pgheal in transaction pooling with `pool_size` server connections.
pub async fn txn_proxy(pg: &pgheal::cluster::TempCluster, pool_size: usize) -> ProxyHandle {
    start_proxy(pg, |a| {
        a.pool_mode = Some("transaction".into());
        a.pool_size = Some(pool_size);
    })
    .await
}

/// A raw protocol client logged in to pgheal.
pub async fn wire(proxy: &ProxyHandle) -> Wire {
    Wire::connect(proxy.addr.port(), USER, PASSWORD, DB).await
}

/// A raw protocol client logged in straight to PostgreSQL.
pub async fn wire_direct(pg: &pgheal::cluster::TempCluster) -> Wire {
    Wire::connect(pg.port(), USER, PASSWORD, DB).await
}

fn single_value(msgs: &[Msg], what: &str) -> String {
    match rows(msgs).as_slice() {
        [row] if row.len() == 1 => row[0].clone().unwrap_or_default(),
        _ => panic!("{what}: expected one row with one value, got {msgs:?}"),
    }
}

/// `pg_backend_pid()` in a simple query of its own (its own transaction).
pub async fn pid_alone(w: &mut Wire) -> i32 {
    let msgs = w.query("SELECT pg_backend_pid()").await;
    single_value(&msgs, "SELECT pg_backend_pid()")
        .parse()
        .unwrap()
}

/// Runs `frames` as one pipeline (one implicit transaction, hence one server connection),
/// preceded by an unnamed `SELECT pg_backend_pid()` and followed by Sync. Returns the backend
/// pid that ran it and the messages that answer `frames` (without the pid's four).
pub async fn with_pid(w: &mut Wire, frames: &[pgheal::protocol::Frame]) -> (i32, Vec<Msg>) {
    let mut all = vec![
        parse("", "SELECT pg_backend_pid()"),
        bind("", "", &[], &[]),
        execute(""),
    ];
    all.extend(frames.iter().cloned());
    all.push(sync());
    w.send(&all).await;
    let msgs = w.until_ready().await;
    assert!(
        msgs.len() >= 5
            && msgs[0] == Msg::ParseComplete
            && msgs[1] == Msg::BindComplete
            && msgs[3] == Msg::CommandComplete("SELECT 1".into()),
        "pid prefix: {msgs:?}"
    );
    let pid = match &msgs[2] {
        Msg::DataRow(r) => r[0].as_deref().unwrap().parse().unwrap(),
        m => panic!("pid row expected, got {m:?} in {msgs:?}"),
    };
    (pid, msgs[4..].to_vec())
}

/// Sends `frames` and a Sync (one batch) and returns the answer, up to and including
/// ReadyForQuery.
pub async fn run_batch(w: &mut Wire, frames: &[pgheal::protocol::Frame]) -> Vec<Msg> {
    let mut all = frames.to_vec();
    all.push(sync());
    w.send(&all).await;
    w.until_ready().await
}

/// Bind (text parameters and results) and Execute of statement `stmt`, alone in a batch; the
/// answer.
pub async fn bind_execute(w: &mut Wire, stmt: &str, params: &[&str]) -> Vec<Msg> {
    run_batch(w, &[bind("", stmt, params, &[]), execute("")]).await
}

/// The answer to a simple query that completes with `tag` and leaves transaction status
/// `status` ('I', 'T' or 'E').
pub fn complete(tag: &str, status: char) -> Vec<Msg> {
    vec![Msg::CommandComplete(tag.into()), Msg::Ready(status)]
}

/// The answer to Describe 'S' and Sync of a statement whose rows have `columns`.
pub fn described(columns: Vec<String>) -> Vec<Msg> {
    vec![
        Msg::ParameterDescription,
        Msg::RowDescription(columns),
        Msg::Ready('I'),
    ]
}

/// The answer to Parse, Describe 'S' and Sync of a statement whose rows have `columns`.
pub fn parsed_and_described(columns: Vec<String>) -> Vec<Msg> {
    let mut msgs = vec![Msg::ParseComplete];
    msgs.extend(described(columns));
    msgs
}

/// The answer to Bind, Execute and Sync of a query that returns the one row `row`.
pub fn one_row(row: Vec<Option<String>>) -> Vec<Msg> {
    vec![
        Msg::BindComplete,
        Msg::DataRow(row),
        Msg::CommandComplete("SELECT 1".into()),
        Msg::Ready('I'),
    ]
}

/// Steers transactions onto one of the two server connections of a pool of 2: two blocker
/// clients learn both backend pids, then one of them holds the other connection in an open
/// transaction block, so a client's next transaction can only run on the chosen one.
pub struct Router {
    blockers: [Wire; 2],
    holding: [bool; 2],
    pub pids: [i32; 2],
}

impl Router {
    /// Learns the two server connections of a pool of 2. Call while no other client is in a
    /// transaction.
    pub async fn new(proxy: &ProxyHandle) -> Router {
        let mut blockers = [wire(proxy).await, wire(proxy).await];
        let mut pids = [0; 2];
        for (i, b) in blockers.iter_mut().enumerate() {
            pids[i] = begin_and_pid(b).await;
        }
        assert_ne!(
            pids[0], pids[1],
            "two open transactions on two server connections"
        );
        let mut r = Router {
            blockers,
            holding: [true, true],
            pids,
        };
        r.release().await;
        r
    }

    /// The other server connection's pid.
    pub fn other(&self, pid: i32) -> i32 {
        assert!(
            self.pids.contains(&pid),
            "{pid} is not one of {:?}",
            self.pids
        );
        if self.pids[0] == pid {
            self.pids[1]
        } else {
            self.pids[0]
        }
    }

    /// Ends the blockers' transactions: both connections are free again.
    pub async fn release(&mut self) {
        for i in 0..2 {
            if self.holding[i] {
                let msgs = self.blockers[i].query("COMMIT").await;
                assert_eq!(msgs, complete("COMMIT", 'I'));
                self.holding[i] = false;
            }
        }
    }

    /// Holds every server connection except the one with backend `pid`: the next transaction
    /// of any other client runs there.
    pub async fn route_to(&mut self, pid: i32) {
        let avoid = self.other(pid);
        self.release().await;
        for i in 0..2 {
            let got = begin_and_pid(&mut self.blockers[i]).await;
            self.holding[i] = true;
            if got == avoid {
                // Let go of the one taken before, if any: it is the wanted connection.
                for j in 0..i {
                    let msgs = self.blockers[j].query("COMMIT").await;
                    assert_eq!(msgs.last(), Some(&Msg::Ready('I')));
                    self.holding[j] = false;
                }
                return;
            }
            assert_eq!(
                got, pid,
                "the pool has server connections {:?}, got {got}",
                self.pids
            );
        }
        panic!("could not hold server connection {avoid}");
    }
}

async fn begin_and_pid(w: &mut Wire) -> i32 {
    let msgs = w.query("BEGIN").await;
    assert_eq!(msgs, complete("BEGIN", 'T'));
    let msgs = w.query("SELECT pg_backend_pid()").await;
    assert_eq!(msgs.last(), Some(&Msg::Ready('T')), "{msgs:?}");
    single_value(&msgs, "pg_backend_pid()").parse().unwrap()
}

/// The error messages (code and message) of a message list.
pub fn error_texts(msgs: &[Msg]) -> Vec<(String, String)> {
    msgs.iter()
        .filter_map(|m| match m {
            Msg::Error { code, message, .. } => Some((code.clone(), message.clone())),
            _ => None,
        })
        .collect()
}

/// The messages with error routines blanked (pgheal's own errors carry none): for comparing
/// what pgheal says with what PostgreSQL says.
pub fn without_routines(msgs: &[Msg]) -> Vec<Msg> {
    msgs.iter()
        .map(|m| match m {
            Msg::Error { code, message, .. } => Msg::Error {
                code: code.clone(),
                routine: String::new(),
                message: message.clone(),
            },
            m => m.clone(),
        })
        .collect()
}

pub fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}
