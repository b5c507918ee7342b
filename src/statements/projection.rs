//! Mapping a statement's new server-side shape onto the client's contract.
//!
//! For each contract column pgheal looks for the new column with the same identity: the same
//! table OID and attribute number when the column comes from a table or view, else the same
//! name. The type OID must be equal too. The result rewrites three things:
//! Bind result formats (client codes per contract column → codes per server column),
//! RowDescription (answered with the contract's names and types), and DataRow (cut down to the
//! contract columns in contract order, re-using the column bytes without copying them).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::backend::{data_row_columns, Field};
use crate::protocol::{encode, Frame, ProtocolError};

/// Why a contract cannot be kept on a new shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    #[error("column \"{0}\" is gone")]
    ColumnGone(String),
    #[error(
        "column \"{name}\" changed type: {} → {}",
        super::type_names::display(*.from),
        super::type_names::display(*.to)
    )]
    TypeChanged { name: String, from: u32, to: u32 },
}

/// A column name (bytes in the client's encoding) for an error text.
fn display(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// How rows of the server shape are turned into rows of the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Projection {
    /// The server shape is the contract (possibly with other column names).
    Identity,
    /// `columns[i]` is the server column that carries contract column `i`.
    Select {
        columns: Arc<[usize]>,
        server_width: usize,
    },
}

impl Projection {
    /// Compute the projection of `shape` onto `contract`.
    pub fn compute(contract: &[Field], shape: &[Field]) -> Result<Projection, ProjectionError> {
        let mut columns = Vec::with_capacity(contract.len());
        let mut used = vec![false; shape.len()];
        for c in contract {
            let by_identity = |s: &Field| {
                if c.table_oid != 0 && c.column_attr > 0 {
                    s.table_oid == c.table_oid && s.column_attr == c.column_attr
                } else {
                    s.name == c.name
                }
            };
            // A dropped and recreated table keeps its columns under a new OID: fall back to
            // the name, as PostgreSQL's own result-type check compares names and types.
            let found = shape
                .iter()
                .enumerate()
                .find(|(j, s)| !used[*j] && by_identity(s))
                .or_else(|| {
                    shape
                        .iter()
                        .enumerate()
                        .find(|(j, s)| !used[*j] && s.name == c.name)
                })
                .ok_or_else(|| ProjectionError::ColumnGone(display(&c.name)))?;
            if found.1.type_oid != c.type_oid {
                return Err(ProjectionError::TypeChanged {
                    name: display(&c.name),
                    from: c.type_oid,
                    to: found.1.type_oid,
                });
            }
            used[found.0] = true;
            columns.push(found.0);
        }
        let identity =
            shape.len() == contract.len() && columns.iter().enumerate().all(|(i, &j)| i == j);
        if identity {
            Ok(Projection::Identity)
        } else {
            Ok(Projection::Select {
                columns: columns.into(),
                server_width: shape.len(),
            })
        }
    }

    pub fn is_identity(&self) -> bool {
        matches!(self, Projection::Identity)
    }

    /// Result format codes for the server shape, given the client's codes for the contract.
    /// Zero or one code applies to every column and needs no rewrite (`None`).
    pub fn remap_result_formats(&self, client: &[i16]) -> Option<Vec<i16>> {
        match self {
            Projection::Identity => None,
            Projection::Select { .. } if client.len() <= 1 => None,
            Projection::Select {
                columns,
                server_width,
            } => {
                let mut out = vec![0i16; *server_width];
                for (i, &j) in columns.iter().enumerate() {
                    out[j] = client.get(i).copied().unwrap_or(0);
                }
                Some(out)
            }
        }
    }

    /// A RowDescription for the client: the contract's columns, with the format codes the
    /// server reported for the columns that carry them (a portal Describe reports formats).
    pub fn describe(&self, contract: &[Field], server: &[Field]) -> Frame {
        let fields: Vec<Field> = contract
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let j = match self {
                    Projection::Identity => i,
                    Projection::Select { columns, .. } => columns[i],
                };
                Field {
                    format: server.get(j).map_or(c.format, |s| s.format),
                    ..c.clone()
                }
            })
            .collect();
        encode::row_description(&fields)
    }

    /// Cut a DataRow down to the contract columns. Pushes a 7-byte header followed by slices
    /// of the original row (adjacent columns merged), so no column value is copied.
    pub fn project_row(
        &self,
        row: &Frame,
        scratch: &mut Vec<std::ops::Range<usize>>,
        out: &mut Vec<Bytes>,
    ) -> Result<(), ProtocolError> {
        let Projection::Select { columns, .. } = self else {
            out.push(row.bytes.clone());
            return Ok(());
        };
        data_row_columns(row, scratch)?;
        let mut len = 4 + 2;
        for &j in columns.iter() {
            let r = scratch
                .get(j)
                .ok_or(ProtocolError::Truncated("projected column"))?;
            len += r.len();
        }
        let mut header = BytesMut::with_capacity(7);
        header.put_u8(b'D');
        header.put_i32(len as i32);
        header.put_i16(columns.len() as i16);
        out.push(header.freeze());
        let mut run: Option<std::ops::Range<usize>> = None;
        for &j in columns.iter() {
            let r = scratch[j].clone();
            run = match run {
                Some(cur) if cur.end == r.start => Some(cur.start..r.end),
                Some(cur) => {
                    out.push(row.bytes.slice(cur));
                    Some(r)
                }
                None => Some(r),
            };
        }
        if let Some(cur) = run {
            out.push(row.bytes.slice(cur));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, attr: i16, ty: u32) -> Field {
        Field {
            name: name.into(),
            table_oid: 100,
            column_attr: attr,
            type_oid: ty,
            type_len: -1,
            type_mod: -1,
            format: 0,
        }
    }

    fn concat(parts: &[Bytes]) -> Vec<u8> {
        parts.iter().flat_map(|b| b.iter().copied()).collect()
    }

    #[test]
    fn added_column_is_cut_off() {
        let contract = vec![f("id", 1, 23), f("total", 2, 1700)];
        let shape = vec![
            f("id", 1, 23),
            f("total", 2, 1700),
            f("discount_code", 3, 1043),
        ];
        let p = Projection::compute(&contract, &shape).unwrap();
        assert_eq!(
            p,
            Projection::Select {
                columns: vec![0, 1].into(),
                server_width: 3
            }
        );
        let row = encode::raw(b'D', b"\0\x03\0\0\0\x011\0\0\0\x0212\xff\xff\xff\xff");
        let mut out = Vec::new();
        p.project_row(&row, &mut Vec::new(), &mut out).unwrap();
        let expect = encode::raw(b'D', b"\0\x02\0\0\0\x011\0\0\0\x0212");
        assert_eq!(concat(&out), expect.bytes.to_vec());
        assert_eq!(out.len(), 2, "header plus one merged slice");
        assert_eq!(p.remap_result_formats(&[1, 0]), Some(vec![1, 0, 0]));
        assert_eq!(p.remap_result_formats(&[1]), None);
    }

    #[test]
    fn reordered_and_renamed_columns() {
        let contract = vec![f("a", 1, 23), f("b", 2, 25)];
        // b renamed to c (same attnum), a new column x inserted before by a view
        let shape = vec![f("x", 3, 23), f("c", 2, 25), f("a", 1, 23)];
        let p = Projection::compute(&contract, &shape).unwrap();
        let row = encode::raw(b'D', b"\0\x03\0\0\0\x01X\0\0\0\x01B\0\0\0\x01A");
        let mut out = Vec::new();
        p.project_row(&row, &mut Vec::new(), &mut out).unwrap();
        assert_eq!(
            concat(&out),
            encode::raw(b'D', b"\0\x02\0\0\0\x01A\0\0\0\x01B")
                .bytes
                .to_vec()
        );
        let d = p.describe(&contract, &shape);
        let back = crate::protocol::backend::decode_row_description(&d).unwrap();
        assert_eq!(back[1].name, b"b");
        // a rename alone keeps the rows as they are
        let renamed = vec![f("a", 1, 23), f("c", 2, 25)];
        assert_eq!(
            Projection::compute(&contract, &renamed),
            Ok(Projection::Identity)
        );
    }

    #[test]
    fn dropped_or_retyped_columns_break_the_contract() {
        let contract = vec![f("a", 1, 23), f("b", 2, 25)];
        assert_eq!(
            Projection::compute(&contract, &[f("a", 1, 23)]),
            Err(ProjectionError::ColumnGone("b".into()))
        );
        assert!(matches!(
            Projection::compute(&contract, &[f("a", 1, 20), f("b", 2, 25)]),
            Err(ProjectionError::TypeChanged {
                from: 23,
                to: 20,
                ..
            })
        ));
    }

    #[test]
    fn computed_columns_match_by_name() {
        let mut c = f("n", 0, 20);
        c.table_oid = 0;
        let contract = vec![c.clone()];
        let mut other = c.clone();
        other.name = "m".into();
        let shape = vec![other, c];
        assert_eq!(
            Projection::compute(&contract, &shape).unwrap(),
            Projection::Select {
                columns: vec![1].into(),
                server_width: 2
            }
        );
    }

    #[test]
    fn malformed_row_is_an_error() {
        let p = Projection::Select {
            columns: vec![2].into(),
            server_width: 3,
        };
        let row = encode::raw(b'D', b"\0\x01\0\0\0\x011");
        assert!(p
            .project_row(&row, &mut Vec::new(), &mut Vec::new())
            .is_err());
    }
}
