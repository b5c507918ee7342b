//! What the clients run and what they must get back: the six statements each client prepares
//! once (with their contracts, the columns before any migration), the expected rows of each,
//! and [`check_row`], which holds a received row to them.

use tokio_postgres::{Row, Statement};

/// A statement each client prepares once and keeps (cached: it goes stale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stmt {
    Item,
    View,
    Insert,
    Mine,
    Account,
    Credit,
}

impl Stmt {
    pub const ALL: [Stmt; 6] = [
        Stmt::Item,
        Stmt::View,
        Stmt::Insert,
        Stmt::Mine,
        Stmt::Account,
        Stmt::Credit,
    ];

    pub fn sql(self) -> &'static str {
        match self {
            Stmt::Item => "SELECT * FROM items WHERE id = $1",
            Stmt::View => "SELECT * FROM item_view WHERE id = $1",
            Stmt::Insert => "INSERT INTO ledger(client, seq, note) VALUES ($1, $2, $3) RETURNING *",
            Stmt::Mine => "SELECT * FROM ledger WHERE client = $1 AND seq = $2",
            Stmt::Account => "SELECT id, owner, balance FROM accounts WHERE id = $1",
            Stmt::Credit => {
                "UPDATE accounts SET balance = balance + $2 WHERE id = $1 RETURNING id, balance"
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Stmt::Item => "select items",
            Stmt::View => "select view",
            Stmt::Insert => "insert returning",
            Stmt::Mine => "select own write",
            Stmt::Account => "select account",
            Stmt::Credit => "update returning",
        }
    }

    /// The columns the statement has before any migration: its contract.
    pub fn contract(self) -> &'static [&'static str] {
        match self {
            Stmt::Item => &["id", "price", "label"],
            Stmt::View => &["id", "label", "double_price"],
            Stmt::Insert | Stmt::Mine => &["id", "client", "seq", "note"],
            Stmt::Account => &["id", "owner", "balance"],
            Stmt::Credit => &["id", "balance"],
        }
    }
}

/// One client's prepared statements, by [`Stmt`].
pub struct Prepared(pub Vec<Statement>);

impl Prepared {
    pub fn get(&self, s: Stmt) -> &Statement {
        &self.0[s as usize]
    }
}

/// An expected column value. Columns a statement has that are not listed must be NULL (they
/// were added by migrations, all `int`).
#[derive(Debug)]
pub enum V {
    I4(i32),
    I8(i64),
    Text(String),
    /// Any non-NULL bigint (the id `RETURNING` gives).
    AnyI8,
}

/// Whether `row` holds exactly `expected` (plus NULLs in the columns not listed), with a
/// DataRow of exactly the size those values take in binary.
pub fn check_row(row: &Row, expected: &[(&str, V)]) -> Result<(), String> {
    let mut size = 0;
    for (i, col) in row.columns().iter().enumerate() {
        size += 4;
        let Some((_, want)) = expected.iter().find(|(n, _)| *n == col.name()) else {
            match row.try_get::<_, Option<i32>>(i) {
                Ok(None) => continue,
                other => return Err(format!("added column {} is {other:?}", col.name())),
            }
        };
        let ok = match want {
            V::I4(x) => {
                size += 4;
                row.try_get::<_, i32>(i).map(|g| g == *x)
            }
            V::I8(x) => {
                size += 8;
                row.try_get::<_, i64>(i).map(|g| g == *x)
            }
            V::AnyI8 => {
                size += 8;
                row.try_get::<_, i64>(i).map(|_| true)
            }
            V::Text(x) => {
                size += x.len();
                row.try_get::<_, String>(i).map(|g| g == *x)
            }
        };
        if !matches!(ok, Ok(true)) {
            return Err(format!(
                "column {} should be {want:?}: {:?}",
                col.name(),
                row.try_get::<_, Option<String>>(i)
                    .map(|v| format!("{v:?}"))
                    .or_else(|_| row.try_get::<_, Option<i64>>(i).map(|v| format!("{v:?}")))
                    .or_else(|_| row.try_get::<_, Option<i32>>(i).map(|v| format!("{v:?}")))
            ));
        }
    }
    for (name, _) in expected {
        if !row.columns().iter().any(|c| c.name() == *name) {
            return Err(format!("no column {name}"));
        }
    }
    if row.raw_size_bytes() != size {
        return Err(format!(
            "DataRow of {} bytes, the statement's {} columns with these values take {size}",
            row.raw_size_bytes(),
            row.columns().len()
        ));
    }
    Ok(())
}

pub fn item_row(id: i32) -> Vec<(&'static str, V)> {
    vec![
        ("id", V::I4(id)),
        ("price", V::I8(i64::from(id) * 10)),
        ("label", V::Text(format!("item-{id}"))),
    ]
}

pub fn view_row(id: i32) -> Vec<(&'static str, V)> {
    vec![
        ("id", V::I4(id)),
        ("label", V::Text(format!("item-{id}"))),
        ("double_price", V::I8(i64::from(id) * 20)),
    ]
}

pub fn ledger_row(client: i32, seq: i32, id: Option<i64>) -> Vec<(&'static str, V)> {
    vec![
        ("id", id.map_or(V::AnyI8, V::I8)),
        ("client", V::I4(client)),
        ("seq", V::I4(seq)),
        ("note", V::Text(note(client, seq))),
    ]
}

pub fn note(client: i32, seq: i32) -> String {
    format!("client {client} write {seq}")
}
