//! The statements file: one JSON object per line, one line per distinct (database, text,
//! parameter types) a client prepared through pgheal, with the statement's result contract.
//!
//! ```json
//! {"database":"appdb","sql":"SELECT * FROM orders WHERE id = $1","param_types":[23],
//!  "columns":[{"name":"id","table_oid":16390,"column_attr":1,"type_oid":23,"type_len":4,
//!              "type_mod":-1,"format":0}]}
//! ```
//!
//! `columns` is the RowDescription the client was promised (empty: the statement returns no
//! rows, NoData). The file is appended to, so several pgheal runs (and restarts) can record into
//! one file; lines already there are not written again.
//!
//! [`Recorder`] is what the relay engine calls the first time a statement's contract becomes
//! known (`--record-statements FILE`). It is off the hot path: the engine asks for it once per
//! Parse whose description is new to the session, never per Bind, and a process-wide set skips
//! statements already written before any I/O. SQL texts that are not UTF-8 are not recorded
//! (JSON holds text; the check talks UTF-8).

use std::collections::HashSet;
use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::protocol::backend::Field;

/// One recorded statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// The database the client connected to (pgheal's name for it).
    #[serde(default)]
    pub database: String,
    pub sql: String,
    #[serde(default)]
    pub param_types: Vec<u32>,
    /// The contract: the statement's RowDescription when it was first prepared.
    #[serde(default)]
    pub columns: Vec<Column>,
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(default)]
    pub table_oid: u32,
    #[serde(default)]
    pub column_attr: i16,
    pub type_oid: u32,
    #[serde(default)]
    pub type_len: i16,
    #[serde(default = "minus_one")]
    pub type_mod: i32,
    #[serde(default)]
    pub format: i16,
}

fn minus_one() -> i32 {
    -1
}

impl Column {
    pub fn from_field(f: &Field) -> Column {
        Column {
            name: String::from_utf8_lossy(&f.name).into_owned(),
            table_oid: f.table_oid,
            column_attr: f.column_attr,
            type_oid: f.type_oid,
            type_len: f.type_len,
            type_mod: f.type_mod,
            format: f.format,
        }
    }

    pub fn to_field(&self) -> Field {
        Field {
            name: self.name.as_bytes().to_vec(),
            table_oid: self.table_oid,
            column_attr: self.column_attr,
            type_oid: self.type_oid,
            type_len: self.type_len,
            type_mod: self.type_mod,
            format: self.format,
        }
    }
}

impl Recorded {
    /// The contract as protocol fields.
    pub fn contract(&self) -> Vec<Field> {
        self.columns.iter().map(Column::to_field).collect()
    }

    /// What makes two records the same statement.
    fn key(&self) -> Key {
        (
            self.database.clone(),
            self.sql.clone(),
            self.param_types.clone(),
        )
    }
}

type Key = (String, String, Vec<u32>);

/// Errors reading a statements file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: not a recorded statement: {reason}")]
    Line {
        path: String,
        line: usize,
        reason: String,
    },
}

/// Read a statements file: JSON lines as [`Recorder`] writes them. Blank lines are skipped;
/// duplicates (same database, text and parameter types) keep the first line.
pub fn read_file(path: &Path) -> Result<Vec<Recorded>, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text).map_err(|(line, reason)| ReadError::Line {
        path: path.display().to_string(),
        line,
        reason,
    })
}

/// Parse the content of a statements file; the error is (line number, reason).
pub fn parse(text: &str) -> Result<Vec<Recorded>, (usize, String)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let r: Recorded = serde_json::from_str(line).map_err(|e| (i + 1, e.to_string()))?;
        if seen.insert(r.key()) {
            out.push(r);
        }
    }
    Ok(out)
}

/// Appends statements to the file given with `--record-statements`, once per distinct
/// (database, text, parameter types) over the life of the process and the lines the file held
/// when it was first written to. Shared by every session (`Arc`); a write error is logged once
/// and recording stops.
pub struct Recorder {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    seen: HashSet<Key>,
    file: Option<BufWriter<std::fs::File>>,
    opened: bool,
    failed: bool,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recorder({})", self.path.display())
    }
}

impl Recorder {
    /// A recorder for `path`. Nothing is opened until the first statement arrives.
    pub fn new(path: impl Into<PathBuf>) -> Recorder {
        Recorder {
            path: path.into(),
            state: Mutex::new(State::default()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record a statement whose contract just became known. `shape` empty: NoData.
    pub fn record(&self, database: &str, sql: &[u8], param_types: &[u32], shape: &[Field]) {
        let Ok(sql) = std::str::from_utf8(sql) else {
            return;
        };
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if st.failed {
            return;
        }
        let key = (database.to_owned(), sql.to_owned(), param_types.to_vec());
        if !st.opened {
            st.opened = true;
            match self.open(&mut st.seen) {
                Ok(f) => st.file = Some(f),
                Err(e) => {
                    st.failed = true;
                    tracing::error!(file = %self.path.display(), error = %e, "cannot record statements");
                    return;
                }
            }
        }
        if st.seen.contains(&key) {
            return;
        }
        let rec = Recorded {
            database: key.0.clone(),
            sql: key.1.clone(),
            param_types: key.2.clone(),
            columns: shape.iter().map(Column::from_field).collect(),
        };
        st.seen.insert(key);
        let written = match (serde_json::to_string(&rec), st.file.as_mut()) {
            (Ok(line), Some(f)) => writeln!(f, "{line}").and_then(|()| f.flush()),
            (Err(e), _) => Err(std::io::Error::other(e)),
            (_, None) => Ok(()),
        };
        if let Err(e) = written {
            st.failed = true;
            tracing::error!(file = %self.path.display(), error = %e, "recording statements stopped");
        }
    }

    /// Open for appending, learning the statements already in the file.
    fn open(&self, seen: &mut HashSet<Key>) -> std::io::Result<BufWriter<std::fs::File>> {
        if let Ok(f) = std::fs::File::open(&self.path) {
            for line in std::io::BufReader::new(f).lines() {
                if let Ok(r) = serde_json::from_str::<Recorded>(&line?) {
                    seen.insert(r.key());
                }
            }
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        Ok(BufWriter::new(f))
    }
}

/// A shared recorder, as the relay configuration holds it.
pub type SharedRecorder = Arc<Recorder>;

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, ty: u32) -> Field {
        Field {
            name: name.into(),
            table_oid: 42,
            column_attr: 1,
            type_oid: ty,
            type_len: 4,
            type_mod: -1,
            format: 0,
        }
    }

    #[test]
    fn records_each_statement_once_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("pgheal-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("statements.jsonl");
        let _ = std::fs::remove_file(&path);
        let r = Recorder::new(&path);
        r.record("db", b"SELECT 1", &[], &[field("x", 23)]);
        r.record("db", b"SELECT 1", &[], &[field("x", 23)]);
        r.record("db", b"SELECT $1", &[23], &[]);
        r.record("db", b"SELECT '\xff'", &[], &[]);
        // A second recorder (a restart) does not repeat what the file holds.
        let again = Recorder::new(&path);
        again.record("db", b"SELECT 1", &[], &[field("x", 23)]);
        again.record("other", b"SELECT 1", &[], &[field("x", 23)]);
        let back = read_file(&path).unwrap();
        assert_eq!(back.len(), 3, "{back:?}");
        assert_eq!(back[0].contract(), vec![field("x", 23)]);
        assert_eq!(back[1].param_types, vec![23]);
        assert!(back[1].columns.is_empty());
        assert_eq!(back[2].database, "other");
        let raw = std::fs::read_to_string(&path).unwrap();
        assert_eq!(raw.lines().count(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        let text = "{\"sql\":\"SELECT 1\"}\n\n{\"sql\": 3}\n";
        assert_eq!(parse(text).unwrap_err().0, 3);
        let ok = parse("{\"sql\":\"SELECT 1\"}\n{\"sql\":\"SELECT 1\"}").unwrap();
        assert_eq!(ok.len(), 1);
    }
}
