//! What travels with a moved client, as JSON: bytes (statement texts, setting values, the
//! cancel secret) are hex strings, since nothing guarantees they are UTF-8.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::heal::relay::Naming;
use crate::heal::Relay;

/// Bytes as a lowercase hex string.
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn encode(b: &[u8]) -> String {
        let mut s = String::with_capacity(b.len() * 2);
        for x in b {
            s.push_str(&format!("{x:02x}"));
        }
        s
    }

    pub fn decode(s: &str) -> Option<Vec<u8>> {
        if s.len() % 2 != 0 || !s.is_ascii() {
            return None;
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
            .collect()
    }

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        decode(&s).ok_or_else(|| serde::de::Error::custom("not a hex string"))
    }
}

/// Optional bytes as hex.
mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => s.serialize_some(&super::hex_bytes::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => super::hex_bytes::decode(&s)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom("not a hex string")),
        }
    }
}

/// A session setting (name and value as the server's bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    #[serde(with = "hex_bytes")]
    pub name: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
}

/// A named prepared statement of the client (prepared again lazily on the new side, as
/// transaction pooling does for every new server connection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(with = "hex_bytes")]
    pub name: Vec<u8>,
    #[serde(with = "hex_bytes")]
    pub sql: Vec<u8>,
    pub param_types: Vec<u32>,
}

/// A client between two transactions, as the old process hands it over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientState {
    pub database: String,
    pub user: String,
    pub application_name: String,
    /// The cancel key the client was given at login: it keeps working on the new side.
    pub cancel_pid: i32,
    #[serde(with = "hex_bytes")]
    pub cancel_key: Vec<u8>,
    /// The client's session settings (see `session::settings`).
    pub settings: Vec<Setting>,
    #[serde(with = "hex_opt")]
    pub session_authorization: Option<Vec<u8>>,
    #[serde(with = "hex_opt")]
    pub role: Option<Vec<u8>>,
    /// Custom setting names the client used (so the new side reads them back too).
    pub custom_names: Vec<String>,
    /// The ParameterStatus values the client was told.
    pub reported: BTreeMap<String, String>,
    pub statements: Vec<Statement>,
    /// A Unix-socket client: the listen port it connected to.
    pub unix_port: Option<u16>,
}

/// Every message of the takeover socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// New → old: hand everything over.
    Takeover { version: u32, pid: u32 },
    /// Old → new: a listening TCP socket (its descriptor attached).
    TcpListener { addr: String },
    /// Old → new: the listening Unix socket of `port` (its descriptor attached).
    UnixListener { port: u16, path: String },
    /// Old → new: every listener was sent; the old process no longer accepts.
    ListenersDone { old_pid: u32 },
    /// Old → new: a client (its socket attached).
    Client(Box<ClientState>),
    /// Old → new: no more clients will move; the rest finish on the old process.
    Done { staying: usize },
    /// Old → new: the takeover is refused (the text says why).
    Refused { reason: String },
}

/// The version of this protocol.
pub const VERSION: u32 = 1;

impl Message {
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(b: &[u8]) -> Result<Message, serde_json::Error> {
        serde_json::from_slice(b)
    }
}

impl Relay {
    /// The client's named statements, for a hand-over.
    pub(crate) fn export_statements(&self) -> Vec<Statement> {
        let mut v: Vec<Statement> = self
            .stmts
            .iter()
            .map(|s| Statement {
                name: s.name.clone(),
                sql: s.sql.to_vec(),
                param_types: s.param_types.to_vec(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Whether the engine holds state that does not move (SQL-level PREPAREs).
    pub(crate) fn has_unmovable_state(&self) -> bool {
        !self.sql_prepared.is_empty() || !self.portals.is_empty()
    }

    /// A statement the client prepared in the old process: known by name, with its
    /// pool-wide server name; it is prepared on a server connection at its first use.
    pub(crate) fn adopt_statement(&mut self, s: &Statement) {
        let sql: Arc<[u8]> = s.sql.clone().into();
        let types: Arc<[u32]> = s.param_types.clone().into();
        let server_name = match &self.naming {
            Naming::Pooled { names, search_path } => {
                names.name_for(&sql, &types, search_path.as_ref())
            }
            Naming::Session => s.name.clone().into(),
        };
        self.stmts.parsed(&s.name, sql, types, server_name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_utf8_bytes_round_trip() {
        let st = ClientState {
            database: "db".into(),
            user: "u".into(),
            application_name: String::new(),
            cancel_pid: 42,
            cancel_key: vec![0xff, 0, 1, 2],
            settings: vec![Setting {
                name: b"search_path".to_vec(),
                value: vec![0xe9, b'x'],
            }],
            session_authorization: None,
            role: Some(vec![0x80]),
            custom_names: vec!["app.x".into()],
            reported: BTreeMap::from([("TimeZone".into(), "UTC".into())]),
            statements: vec![Statement {
                name: b"s0".to_vec(),
                sql: vec![b'S', 0xfe],
                param_types: vec![23],
            }],
            unix_port: None,
        };
        let m = Message::Client(Box::new(st));
        assert_eq!(Message::from_json(&m.to_json()).expect("json"), m);
        assert_eq!(hex_bytes::decode("0g"), None);
    }
}
