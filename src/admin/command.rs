//! The admin console's grammar, as PgBouncer parses it: `CMD [arg] [;]`, `SET key = value`
//! and `SET key TO 'value'`. A word is `[0-9a-z_]+` (any case) or a double-quoted name (`""`
//! for a quote); a string value is single-quoted (`''` for a quote). Commands and `SHOW`
//! subjects match without regard to case; a quoted argument keeps its case.
//!
//! Pure: text in, a [`Command`] or a [`CommandError`] out. What each command does is in
//! [`super::console`]; who may run it is [`Command::needs_admin`].

/// What `SHOW` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Help,
    Config,
    Databases,
    Pools,
    Clients,
    Servers,
    Users,
    Version,
    Stats,
    StatsTotals,
    StatsAverages,
    Totals,
    Lists,
    State,
    Fds,
    Sockets,
    ActiveSockets,
    Mem,
    DnsHosts,
    DnsZones,
    Peers,
    PeerPools,
    /// pgheal's own: recent heal events.
    Heals,
    /// pgheal's own: statements tracked per pool.
    Statements,
    /// pgheal's own: the schema epoch of each database.
    SchemaEpoch,
    /// A server parameter some clients ask for on connect (`SHOW client_encoding`): a fixed
    /// answer, as PgBouncer gives.
    Fake(&'static str, &'static str),
}

/// PgBouncer's `SHOW` subjects and pgheal's own, by the name typed.
const SHOWS: &[(&str, Show)] = &[
    ("clients", Show::Clients),
    ("config", Show::Config),
    ("databases", Show::Databases),
    ("fds", Show::Fds),
    ("help", Show::Help),
    ("lists", Show::Lists),
    ("peers", Show::Peers),
    ("peer_pools", Show::PeerPools),
    ("pools", Show::Pools),
    ("servers", Show::Servers),
    ("sockets", Show::Sockets),
    ("active_sockets", Show::ActiveSockets),
    ("stats", Show::Stats),
    ("stats_totals", Show::StatsTotals),
    ("stats_averages", Show::StatsAverages),
    ("users", Show::Users),
    ("version", Show::Version),
    ("totals", Show::Totals),
    ("mem", Show::Mem),
    ("dns_hosts", Show::DnsHosts),
    ("dns_zones", Show::DnsZones),
    ("state", Show::State),
    ("heals", Show::Heals),
    ("statements", Show::Statements),
    ("schema_epoch", Show::SchemaEpoch),
];

/// Parameters drivers read or set on connect; the console answers them without effect.
pub const FAKE_PARAMS: &[(&str, &str)] = &[
    ("client_encoding", "UTF-8"),
    ("default_transaction_isolation", "read committed"),
    ("standard_conforming_strings", "on"),
    ("datestyle", "ISO"),
    ("timezone", "GMT"),
];

/// How `SHUTDOWN` ends the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Now: every connection is closed.
    Immediate,
    /// Stop listening; exit once no server connection is in use (pools paused).
    WaitForServers,
    /// Stop listening; exit once every client has left.
    WaitForClients,
}

/// One admin console command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Show(Show),
    /// `SET key = value` for a setting changeable at run time.
    Set {
        key: String,
        value: String,
    },
    /// `SET` of one of [`FAKE_PARAMS`]: ignored with a notice.
    SetIgnored,
    Reload,
    Pause(Option<String>),
    Resume(Option<String>),
    Reconnect(Option<String>),
    Kill(Option<String>),
    KillClient(u64),
    Disable(String),
    Enable(String),
    Suspend,
    Shutdown(ShutdownMode),
    WaitClose(Option<String>),
}

impl Command {
    /// Whether only `admin_users` may run it (`stats_users` may only look).
    pub fn needs_admin(&self) -> bool {
        match self {
            // SHOW FDS exposes cancel keys; PgBouncer keeps it for admins.
            Command::Show(s) => *s == Show::Fds,
            Command::SetIgnored => false,
            _ => true,
        }
    }
}

/// Why a command was refused before it ran; the texts are PgBouncer's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Not a command of the console (the text is echoed, as PgBouncer does).
    #[error("invalid command '{0}', use SHOW HELP;")]
    Invalid(String),
    /// A name or value longer than the console accepts.
    #[error("bad arguments")]
    BadArguments,
    #[error("a database is required")]
    DatabaseRequired,
    #[error("invalid client pointer supplied")]
    BadClientId,
}

// PgBouncer's buffer sizes: longer words are "bad arguments".
const MAX_CMD: usize = 15;
const MAX_ARG: usize = 63;
const MAX_VAL: usize = 255;

/// Parse one query sent to the console.
pub fn parse(query: &[u8]) -> Result<Command, CommandError> {
    let invalid = || CommandError::Invalid(String::from_utf8_lossy(query).into_owned());
    let mut s = Scanner { text: query, at: 0 };
    s.skip_ws();
    let first = s.word().ok_or_else(invalid)?;
    if first.eq_ignore_ascii_case(b"set") && !first.quoted {
        if let Some(cmd) = parse_set(&mut s) {
            return cmd;
        }
        // `SET x` alone is a command named set, which does not exist.
        return Err(invalid());
    }
    let had_ws = s.skip_ws();
    let arg = if had_ws { s.word() } else { None };
    s.skip_ws();
    s.end_of_command().then_some(()).ok_or_else(invalid)?;
    if first.text.len() > MAX_CMD || arg.as_ref().is_some_and(|a| a.text.len() > MAX_ARG) {
        return Err(CommandError::BadArguments);
    }
    let cmd = first.lowercase();
    let arg_text = arg.map(|a| a.text).unwrap_or_default();
    let db = || (!arg_text.is_empty()).then(|| arg_text.clone());
    let no_arg = |c: Command| {
        if arg_text.is_empty() {
            Ok(c)
        } else {
            Err(invalid())
        }
    };
    match cmd.as_str() {
        "show" | "select" => {
            let subject = arg_text.to_ascii_lowercase();
            if let Some((name, value)) = FAKE_PARAMS.iter().find(|(n, _)| *n == subject) {
                return Ok(Command::Show(Show::Fake(name, value)));
            }
            SHOWS
                .iter()
                .find(|(n, _)| *n == subject)
                .map(|(_, s)| Command::Show(*s))
                .ok_or_else(invalid)
        }
        "reload" => no_arg(Command::Reload),
        "suspend" => no_arg(Command::Suspend),
        "pause" => Ok(Command::Pause(db())),
        "resume" => Ok(Command::Resume(db())),
        "reconnect" => Ok(Command::Reconnect(db())),
        "kill" => Ok(Command::Kill(db())),
        "wait_close" => Ok(Command::WaitClose(db())),
        "disable" => db()
            .map(Command::Disable)
            .ok_or(CommandError::DatabaseRequired),
        "enable" => db()
            .map(Command::Enable)
            .ok_or(CommandError::DatabaseRequired),
        "kill_client" => arg_text
            .parse::<u64>()
            .map(Command::KillClient)
            .map_err(|_| CommandError::BadClientId),
        "shutdown" => match arg_text.to_ascii_lowercase().as_str() {
            "" => Ok(Command::Shutdown(ShutdownMode::Immediate)),
            "wait_for_servers" => Ok(Command::Shutdown(ShutdownMode::WaitForServers)),
            "wait_for_clients" => Ok(Command::Shutdown(ShutdownMode::WaitForClients)),
            _ => Err(invalid()),
        },
        _ => Err(invalid()),
    }
}

/// `key (=|TO) value [;]` after `SET`; `None` when it does not have that shape.
fn parse_set(s: &mut Scanner<'_>) -> Option<Result<Command, CommandError>> {
    if !s.skip_ws() {
        return None;
    }
    let key = s.word()?;
    s.skip_ws();
    if !s.eat(b"=") && !s.eat_keyword(b"to") {
        return None;
    }
    s.skip_ws();
    let value = match s.string() {
        Some(v) => v,
        None => s.word()?.text,
    };
    s.skip_ws();
    if !s.end_of_command() {
        return None;
    }
    if key.text.is_empty() || key.text.len() > MAX_ARG || value.len() > MAX_VAL {
        return Some(Err(CommandError::BadArguments));
    }
    if FAKE_PARAMS
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(&key.text))
    {
        return Some(Ok(Command::SetIgnored));
    }
    Some(Ok(Command::Set {
        key: key.text.to_ascii_lowercase(),
        value,
    }))
}

/// A word as typed: its text (unquoted) and whether it was quoted.
struct Word {
    text: String,
    quoted: bool,
}

impl Word {
    fn eq_ignore_ascii_case(&self, other: &[u8]) -> bool {
        self.text.as_bytes().eq_ignore_ascii_case(other)
    }

    /// Command names compare without case; a quoted one keeps it, as PgBouncer's
    /// `strcasecmp` on the unquoted text does not (so `"SHOW"` works too).
    fn lowercase(&self) -> String {
        self.text.to_ascii_lowercase()
    }
}

struct Scanner<'a> {
    text: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    /// Skips blanks; whether there were any.
    fn skip_ws(&mut self) -> bool {
        let start = self.at;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
        self.at > start
    }

    fn eat(&mut self, token: &[u8]) -> bool {
        if self.text[self.at..].starts_with(token) {
            self.at += token.len();
            true
        } else {
            false
        }
    }

    /// A keyword followed by something that cannot continue a word.
    fn eat_keyword(&mut self, kw: &[u8]) -> bool {
        let end = self.at + kw.len();
        let matches = self
            .text
            .get(self.at..end)
            .is_some_and(|t| t.eq_ignore_ascii_case(kw));
        let boundary = !self.text.get(end).copied().is_some_and(is_word_byte);
        if matches && boundary {
            self.at = end;
            true
        } else {
            false
        }
    }

    /// `[0-9a-zA-Z_]+` or `"…"` with `""` for a quote. Quoted text must be UTF-8 (names
    /// are shown back and compared with configured names, which are).
    fn word(&mut self) -> Option<Word> {
        if self.peek() == Some(b'"') {
            let text = self.quoted(b'"')?;
            return Some(Word { text, quoted: true });
        }
        let start = self.at;
        while self.peek().is_some_and(is_word_byte) {
            self.at += 1;
        }
        (self.at > start).then(|| Word {
            // ASCII by construction.
            text: String::from_utf8_lossy(&self.text[start..self.at]).into_owned(),
            quoted: false,
        })
    }

    /// `'…'` with `''` for a quote.
    fn string(&mut self) -> Option<String> {
        if self.peek() == Some(b'\'') {
            self.quoted(b'\'')
        } else {
            None
        }
    }

    fn quoted(&mut self, q: u8) -> Option<String> {
        let start = self.at;
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => {
                    self.at = start;
                    return None;
                }
                Some(c) if c == q => {
                    if self.text.get(self.at + 1) == Some(&q) {
                        out.push(q);
                        self.at += 2;
                    } else {
                        self.at += 1;
                        break;
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
        String::from_utf8(out).ok().or_else(|| {
            self.at = start;
            None
        })
    }

    /// At the end, after an optional `;` and blanks.
    fn end_of_command(&mut self) -> bool {
        if self.eat(b";") {
            self.skip_ws();
        }
        self.at == self.text.len()
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(q: &str) -> Command {
        parse(q.as_bytes()).unwrap_or_else(|e| panic!("{q:?}: {e}"))
    }

    #[test]
    fn show_subjects_in_any_case_with_or_without_semicolon() {
        assert_eq!(ok("SHOW POOLS;"), Command::Show(Show::Pools));
        assert_eq!(ok("show pools"), Command::Show(Show::Pools));
        assert_eq!(
            ok("  Show\tStats_Totals ;  "),
            Command::Show(Show::StatsTotals)
        );
        assert_eq!(ok("show \"pools\""), Command::Show(Show::Pools));
        assert_eq!(ok("SHOW HEALS"), Command::Show(Show::Heals));
        assert_eq!(ok("select version"), Command::Show(Show::Version));
        assert_eq!(
            ok("show client_encoding"),
            Command::Show(Show::Fake("client_encoding", "UTF-8"))
        );
    }

    #[test]
    fn commands_with_databases_keep_quoted_case() {
        assert_eq!(ok("PAUSE"), Command::Pause(None));
        assert_eq!(ok("pause appdb;"), Command::Pause(Some("appdb".into())));
        assert_eq!(
            ok("RECONNECT \"App\"\"Db\""),
            Command::Reconnect(Some("App\"Db".into()))
        );
        assert_eq!(ok("RESUME"), Command::Resume(None));
        assert_eq!(ok("KILL db1"), Command::Kill(Some("db1".into())));
        assert_eq!(ok("KILL_CLIENT 42"), Command::KillClient(42));
        assert_eq!(ok("WAIT_CLOSE"), Command::WaitClose(None));
        assert_eq!(ok("DISABLE db1"), Command::Disable("db1".into()));
        assert_eq!(
            ok("shutdown wait_for_clients"),
            Command::Shutdown(ShutdownMode::WaitForClients)
        );
        assert_eq!(ok("SHUTDOWN"), Command::Shutdown(ShutdownMode::Immediate));
        assert_eq!(ok("reload;"), Command::Reload);
    }

    #[test]
    fn set_forms() {
        assert_eq!(
            ok("SET default_pool_size = 30"),
            Command::Set {
                key: "default_pool_size".into(),
                value: "30".into()
            }
        );
        assert_eq!(
            ok("set server_reset_query to 'DISCARD ALL; SELECT ''x'''"),
            Command::Set {
                key: "server_reset_query".into(),
                value: "DISCARD ALL; SELECT 'x'".into()
            }
        );
        assert_eq!(ok("SET client_encoding = 'UTF8'"), Command::SetIgnored);
        assert_eq!(ok("set timezone to utc;"), Command::SetIgnored);
    }

    #[test]
    fn refusals_use_pgbouncers_words() {
        let err = |q: &str| parse(q.as_bytes()).unwrap_err().to_string();
        assert_eq!(err("SHOW"), "invalid command 'SHOW', use SHOW HELP;");
        assert_eq!(
            err("SHOW NOTHING"),
            "invalid command 'SHOW NOTHING', use SHOW HELP;"
        );
        assert_eq!(
            err("SELECT 1 + 1"),
            "invalid command 'SELECT 1 + 1', use SHOW HELP;"
        );
        assert_eq!(
            err("RELOAD now"),
            "invalid command 'RELOAD now', use SHOW HELP;"
        );
        assert_eq!(
            err("pause a b"),
            "invalid command 'pause a b', use SHOW HELP;"
        );
        assert_eq!(err("SET x"), "invalid command 'SET x', use SHOW HELP;");
        assert_eq!(
            err("SHUTDOWN later"),
            "invalid command 'SHUTDOWN later', use SHOW HELP;"
        );
        assert_eq!(err("DISABLE"), "a database is required");
        assert_eq!(err("KILL_CLIENT abc"), "invalid client pointer supplied");
        assert_eq!(err(&format!("PAUSE {}", "d".repeat(64))), "bad arguments");
        assert_eq!(
            err("RECONNECT \"unterminated"),
            "invalid command 'RECONNECT \"unterminated', use SHOW HELP;"
        );
    }

    #[test]
    fn only_show_is_open_to_stats_users() {
        assert!(!ok("SHOW POOLS").needs_admin());
        assert!(ok("SHOW FDS").needs_admin());
        assert!(ok("PAUSE").needs_admin());
        assert!(ok("SET default_pool_size = 3").needs_admin());
        assert!(!ok("SET datestyle = ISO").needs_admin());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        for q in [
            &b"\xff\xfe"[..],
            b"SHOW \"\xff\"",
            b"",
            b";",
            b"SET \"",
            b"SET a = '",
        ] {
            assert!(parse(q).is_err());
        }
    }
}
