//! A result set of the admin console: typed columns and rows, encoded as RowDescription,
//! DataRows and CommandComplete. Column types are PgBouncer's (`text`, `int4`, `int8`,
//! `numeric`), so tools that read the console by type see what they see with PgBouncer.

use bytes::{BufMut, BytesMut};

use crate::protocol::backend::Field;
use crate::protocol::{encode, Frame};

/// A column type, with PgBouncer's type letters in its `admin.c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    /// `s` (and `T`, times shown as text).
    Text,
    /// `i`.
    Int4,
    /// `q`.
    Int8,
    /// `N`: counters shown as numeric.
    Numeric,
}

impl Col {
    fn oid_len(self) -> (u32, i16) {
        match self {
            Col::Text => (25, -1),
            Col::Int4 => (23, 4),
            Col::Int8 => (20, 8),
            Col::Numeric => (1700, -1),
        }
    }
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Text(String),
    Int(i64),
    UInt(u64),
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Text(s)
    }
}

impl From<Option<String>> for Value {
    fn from(s: Option<String>) -> Value {
        s.map_or(Value::Null, Value::Text)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<i32> for Value {
    fn from(v: i32) -> Value {
        Value::Int(i64::from(v))
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::UInt(v)
    }
}

impl From<usize> for Value {
    fn from(v: usize) -> Value {
        Value::UInt(v as u64)
    }
}

impl From<bool> for Value {
    /// PgBouncer shows flags as int4 0 or 1.
    fn from(v: bool) -> Value {
        Value::Int(i64::from(v))
    }
}

/// Builds one result set.
#[derive(Debug)]
pub struct Table {
    columns: Vec<(&'static str, Col)>,
    rows: Vec<Vec<Value>>,
}

impl Table {
    pub fn new(columns: &[(&'static str, Col)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Add a row; it must have one value per column.
    pub fn row(&mut self, values: Vec<Value>) {
        debug_assert_eq!(values.len(), self.columns.len(), "{:?}", self.columns);
        self.rows.push(values);
    }

    pub fn column_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.columns.iter().map(|(n, _)| *n)
    }

    pub fn rows(&self) -> &[Vec<Value>] {
        &self.rows
    }

    /// RowDescription, one DataRow per row and `CommandComplete` with `tag`.
    pub fn frames(&self, tag: &str) -> Vec<Frame> {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|(name, col)| {
                let (type_oid, type_len) = col.oid_len();
                Field {
                    name: name.as_bytes().to_vec(),
                    table_oid: 0,
                    column_attr: 0,
                    type_oid,
                    type_len,
                    type_mod: -1,
                    format: 0,
                }
            })
            .collect();
        let mut out = Vec::with_capacity(self.rows.len() + 2);
        out.push(encode::row_description(&fields));
        for row in &self.rows {
            out.push(data_row(row));
        }
        out.push(encode::command_complete(tag));
        out
    }
}

fn data_row(values: &[Value]) -> Frame {
    let mut body = BytesMut::new();
    body.put_i16(values.len() as i16);
    for v in values {
        let text = match v {
            Value::Null => {
                body.put_i32(-1);
                continue;
            }
            Value::Text(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
        };
        body.put_i32(text.len() as i32);
        body.put_slice(text.as_bytes());
    }
    encode::raw(b'D', &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::backend::decode_row_description;
    use crate::protocol::cursor::Cursor;

    #[test]
    fn encodes_types_and_nulls_as_postgresql_does() {
        let mut t = Table::new(&[
            ("name", Col::Text),
            ("n", Col::Int4),
            ("total", Col::Numeric),
        ]);
        t.row(vec!["a".into(), 3i32.into(), 12u64.into()]);
        t.row(vec![Value::Null, false.into(), 0u64.into()]);
        let frames = t.frames("SHOW");
        assert_eq!(frames.len(), 4);
        let fields = decode_row_description(&frames[0]).unwrap();
        let types: Vec<(u32, i16)> = fields.iter().map(|f| (f.type_oid, f.type_len)).collect();
        assert_eq!(types, [(25, -1), (23, 4), (1700, -1)]);
        let mut c = Cursor::new(frames[2].body());
        let n = c.count16("columns").unwrap();
        let cols: Vec<Option<Vec<u8>>> = (0..n)
            .map(|_| c.value("value").unwrap().map(<[u8]>::to_vec))
            .collect();
        assert_eq!(cols, [None, Some(b"0".to_vec()), Some(b"0".to_vec())]);
        assert_eq!(frames[3].body(), b"SHOW\0");
    }
}
