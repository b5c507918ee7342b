//! Fuzz targets: one plain function per decoder (and one for the heal engine), each taking
//! arbitrary bytes and checking invariants with `assert!`, so that a violated invariant is a
//! crash the fuzzer reports, just like a panic inside the decoder.
//!
//! Why here and not in the fuzz crate: the SCRAM grammar and a few other parsers are
//! `pub(crate)`, and keeping the bodies in the library lets `tests/it/fuzz_targets.rs` run every
//! target over its committed corpus (plus fixed-seed mutations) in the ordinary test suite, with
//! no AFL installed. The `fuzz/` crate (not a workspace member) only wraps each function in
//! `afl::fuzz!`. The module is `#[doc(hidden)]` rather than behind a cargo feature: it costs a
//! few kilobytes of code nobody calls, and a feature would make the test suite and the fuzz
//! crate build the library twice with different features.
//!
//! What each target checks, beyond "no panic on any input":
//! - [`frames`]: `split_frames` agrees with repeated `split_frame`; frames plus the leftover are
//!   the input byte for byte; a declared length over the cap, or under 4, is refused.
//! - [`startup`]: a packet is never read beyond its declared length; what decodes encodes back to
//!   the same packet (StartupMessage, CancelRequest, SSLRequest, GSSENCRequest).
//! - [`frontend`] / [`backend`]: every decoder on every frame; what decodes encodes back to the
//!   same bytes where pgheal has an encoder; decoded byte ranges lie inside the frame.
//! - [`scram`]: client-first/final parsing reassembles the message it came from; the server
//!   exchange and the client's parsing of server messages return typed errors only.
//! - [`auth_files`]: userlist.txt and pg_hba.conf parse into entries or an error naming a line
//!   that exists; md5 and secret parsing never panic.
//! - [`ini`] / [`toml`]: a pgbouncer.ini or TOML file either gives a `Config` or an error; ini
//!   syntax errors name a line of the file.
//! - [`engine`] (in [`engine`](mod@engine)): see that module.

pub mod engine;

use std::path::Path;

use bytes::BytesMut;

use crate::auth::scram_messages::{parse_client_final, parse_client_first};
use crate::auth::{ScramSecret, Secret};
use crate::protocol::backend::{self, Field, TxStatus};
use crate::protocol::frame::{needed, split_frame, split_frames, Header, HEADER_LEN};
use crate::protocol::frontend::{self, Bind, Parse, Target as DescribeTarget};
use crate::protocol::startup::{self, StartupPacket};
use crate::protocol::{encode, Frame, ProtocolError};

pub use engine::engine;

/// Splits `data` into frames with a small cap taken from the first byte (so the fuzzer reaches
/// the over-the-cap path) and checks the framing invariants. Returns the frames.
fn split_all(data: &[u8], max_len: usize) -> Vec<Frame> {
    let mut a = BytesMut::from(data);
    let mut one_by_one = Vec::new();
    let a_result = loop {
        let before = a.len();
        match split_frame(&mut a, max_len) {
            Ok(Some(f)) => {
                assert_eq!(before - a.len(), f.len(), "split_frame took its frame only");
                let h = Header::parse(&f.bytes, max_len)
                    .expect("a split frame has a valid header")
                    .expect("a split frame has a whole header");
                assert_eq!(h.frame_len(), f.len(), "frame length matches its header");
                assert!(h.len as usize <= max_len, "frame over the cap accepted");
                assert!(h.len >= 4);
                one_by_one.push(f);
            }
            Ok(None) => {
                assert_eq!(a.len(), before, "Ok(None) consumed nothing");
                assert!(needed(&a, max_len) > a.len() || a.len() < HEADER_LEN);
                break Ok(one_by_one.len());
            }
            Err(e) => {
                assert_eq!(a.len(), before, "an error consumed nothing");
                match e {
                    ProtocolError::BadLength(n) => assert!(n < 4),
                    ProtocolError::TooLong { len, max } => assert!(len > max && max == max_len),
                    other => panic!("framing error of an unexpected kind: {other:?}"),
                }
                break Err(e);
            }
        }
    };
    let mut b = BytesMut::from(data);
    let mut all = Vec::new();
    let b_result = split_frames(&mut b, max_len, &mut all);
    match (&a_result, &b_result) {
        (Ok(n), Ok(m)) => {
            assert_eq!(n, m);
            assert_eq!(one_by_one, all);
            assert_eq!(&a[..], &b[..]);
        }
        (Err(e), Err(f)) => assert_eq!(e, f),
        (x, y) => panic!("split_frame {x:?} but split_frames {y:?}"),
    }
    let mut joined: Vec<u8> = one_by_one.iter().flat_map(|f| f.bytes.to_vec()).collect();
    joined.extend_from_slice(&a);
    assert_eq!(joined, data, "frames and leftover are the input");
    one_by_one
}

/// The framing layer alone.
pub fn frames(data: &[u8]) {
    let Some((&cap, rest)) = data.split_first() else {
        return;
    };
    split_all(rest, 4 + cap as usize * 4);
    split_all(rest, 1 << 20);
}

/// Startup packets: `split_startup` on the input, several packets in a row.
pub fn startup(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.len();
        let declared = (before >= 4).then(|| i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        match startup::split_startup(&mut buf) {
            Ok(None) => {
                assert_eq!(buf.len(), before);
                return;
            }
            Err(e) => {
                let declared = declared.expect("an error needs a length");
                match e {
                    ProtocolError::BadLength(_) => assert!(declared < 8),
                    ProtocolError::TooLong { len, .. } => {
                        assert!(len > startup::MAX_STARTUP_LEN && len == declared as usize)
                    }
                    _ => {
                        // A body error: the packet was consumed, its bytes only.
                        assert_eq!(before - buf.len(), declared as usize);
                    }
                }
                return;
            }
            Ok(Some(p)) => {
                let declared = declared.expect("a packet has a length") as usize;
                assert_eq!(before - buf.len(), declared, "read beyond the packet");
                let packet = &data[data.len() - before..][..declared];
                check_startup_round_trip(&p, packet);
            }
        }
    }
}

fn check_startup_round_trip(p: &StartupPacket, packet: &[u8]) {
    let mut body = Vec::new();
    match p {
        StartupPacket::SslRequest => body.extend_from_slice(&startup::SSL_REQUEST.to_be_bytes()),
        StartupPacket::GssEncRequest => {
            body.extend_from_slice(&startup::GSSENC_REQUEST.to_be_bytes())
        }
        StartupPacket::Cancel {
            process_id,
            secret_key,
        } => {
            assert!((4..=startup::MAX_CANCEL_KEY_LEN).contains(&secret_key.len()));
            body.extend_from_slice(&startup::CANCEL_REQUEST.to_be_bytes());
            body.extend_from_slice(&process_id.to_be_bytes());
            body.extend_from_slice(secret_key);
        }
        StartupPacket::Startup(params) => {
            // Re-encoded with the options after the parameters: decoding it again must give the
            // same value (the order between the two lists is not kept, by design).
            let code = (3i32 << 16) | i32::from(params.minor);
            body.extend_from_slice(&code.to_be_bytes());
            for (k, v) in &params.params {
                assert!(!k.starts_with("_pq_."), "an option among the parameters");
                assert!(!k.is_empty(), "an empty parameter name ends the list");
                body.extend_from_slice(k.as_bytes());
                body.push(0);
                body.extend_from_slice(v.as_bytes());
                body.push(0);
            }
            for o in &params.protocol_options {
                body.extend_from_slice(o.as_bytes());
                body.extend_from_slice(b"\0x\0");
            }
            body.push(0);
            assert!(params.negotiated_minor() <= startup::NEWEST_MINOR);
            // A repeated key keeps its last value (as PostgreSQL), so the packet's bytes are
            // not kept when keys repeat; each key appears once in what was decoded.
            let mut keys: Vec<&str> = params.params.iter().map(|(k, _)| k.as_str()).collect();
            keys.sort_unstable();
            let n = keys.len();
            keys.dedup();
            assert_eq!(keys.len(), n, "a repeated startup key kept twice");
        }
    }
    let again = startup::parse_startup(&body).expect("a re-encoded packet decodes");
    assert_eq!(&again, p, "startup round trip");
    if !matches!(p, StartupPacket::Startup(_)) {
        assert_eq!(&packet[4..], &body[..], "startup round trip (bytes)");
    }
}

/// Every frontend decoder on every frame of the input; encode(decode(x)) == x where pgheal has
/// an encoder for the message.
pub fn frontend(data: &[u8]) {
    for f in split_all(data, 1 << 16) {
        frontend_frame(&f);
    }
}

fn frontend_frame(f: &Frame) {
    if let Ok(p) = Parse::decode(f) {
        let again = encode::parse(p.name, p.query, &p.param_types);
        assert_eq!(again.bytes[1..], f.bytes[1..], "Parse round trip");
    }
    if let Ok(b) = Bind::decode(f) {
        assert!(b.result_formats_at + 2 + 2 * b.result_format_count() <= f.body().len());
        assert_eq!(frontend::bind_statement(f).ok(), Some(b.statement));
        let again = encode::bind_with_result_formats(f, b.result_formats_at, &b.result_formats());
        assert_eq!(again.bytes[1..], f.bytes[1..], "Bind round trip");
    }
    for (decoded, is_describe) in [
        (frontend::decode_describe(f), true),
        (frontend::decode_close(f), false),
    ] {
        if let Ok(t) = decoded {
            let again = if is_describe {
                encode::describe(t)
            } else {
                encode::close(t)
            };
            assert_eq!(again.bytes[1..], f.bytes[1..], "Describe/Close round trip");
            match t {
                DescribeTarget::Statement(n) | DescribeTarget::Portal(n) => {
                    assert!(!n.contains(&0))
                }
            }
        }
    }
    if let Ok((portal, max_rows)) = frontend::decode_execute(f) {
        let again = encode::execute(portal, max_rows);
        assert_eq!(again.bytes[1..], f.bytes[1..], "Execute round trip");
    }
    if let Ok(sql) = frontend::decode_query(f) {
        let again = encode::query(sql);
        assert_eq!(again.bytes[1..], f.bytes[1..], "Query round trip");
    }
    if let Ok((mechanism, data)) = frontend::decode_sasl_initial(f) {
        let again = encode::sasl_initial_response(mechanism, data);
        assert_eq!(
            again.bytes[1..],
            f.bytes[1..],
            "SASLInitialResponse round trip"
        );
    }
    if let Ok(pw) = frontend::decode_password(f) {
        assert!(pw.len() < f.body().len(), "password inside the frame");
    }
    assert_eq!(frontend::password_body(f), f.body());
}

/// Every backend decoder on every frame of the input.
pub fn backend(data: &[u8]) {
    let mut ranges = Vec::new();
    for f in split_all(data, 1 << 16) {
        backend_frame(&f, &mut ranges);
    }
}

fn backend_frame(f: &Frame, ranges: &mut Vec<std::ops::Range<usize>>) {
    let _ = backend::is_async(f.tag);
    if let Ok(s) = backend::decode_ready_for_query(f) {
        let again = encode::ready_for_query(s);
        assert_eq!(again.bytes[1..], f.bytes[1..], "ReadyForQuery round trip");
        assert!(matches!(
            s,
            TxStatus::Idle | TxStatus::InTransaction | TxStatus::Failed
        ));
    }
    if let Ok(e) = backend::ErrorFields::decode(f) {
        let fields: Vec<(u8, &[u8])> = e.fields.clone();
        let again = encode::error_fields(f.tag, &fields);
        assert_eq!(again.bytes[1..], f.bytes[1..], "ErrorResponse round trip");
        let _ = (e.code(), e.message(), e.routine(), e.severity());
        let _ = crate::heal::recognize::is_cached_plan_error(&e);
    }
    if let Ok(fields) = backend::decode_row_description(f) {
        let again = encode::row_description(&fields);
        assert_eq!(again.bytes[1..], f.bytes[1..], "RowDescription round trip");
        let _: &[Field] = &fields;
    }
    if backend::data_row_columns(f, ranges).is_ok() {
        let mut end = HEADER_LEN + 2;
        for r in ranges.iter() {
            assert_eq!(r.start, end, "columns are contiguous");
            assert!(r.end <= f.len(), "a column beyond the frame");
            assert!(r.end - r.start >= 4);
            end = r.end;
        }
        assert_eq!(end, f.len(), "DataRow ends with its last column");
    }
    if let Ok(a) = backend::decode_auth_request(f) {
        match a {
            backend::AuthRequest::Ok => assert_eq!(f.bytes[1..], encode::auth_ok().bytes[1..]),
            backend::AuthRequest::Md5 { salt } => {
                assert_eq!(f.bytes[1..], encode::auth_md5(salt).bytes[1..])
            }
            backend::AuthRequest::SaslContinue(d) => {
                assert_eq!(f.bytes[1..], encode::auth_sasl_continue(d).bytes[1..])
            }
            backend::AuthRequest::SaslFinal(d) => {
                assert_eq!(f.bytes[1..], encode::auth_sasl_final(d).bytes[1..])
            }
            _ => {}
        }
    }
    if let Ok((pid, key)) = backend::decode_backend_key(f) {
        let again = encode::backend_key_data(pid, &key.to_be_bytes());
        assert_eq!(again.bytes[1..], f.bytes[1..], "BackendKeyData round trip");
    }
    if let Ok((name, value)) = backend::decode_parameter_status(f) {
        assert!(name.len() + value.len() + 2 == f.body().len());
    }
    if let Ok(tag) = backend::decode_command_complete(f) {
        let again = encode::command_complete(tag);
        assert_eq!(again.bytes[1..], f.bytes[1..], "CommandComplete round trip");
    }
    if let Ok((_pid, channel, payload)) = backend::decode_notification(f) {
        assert!(4 + channel.len() + payload.len() + 2 == f.body().len());
    }
}

/// A fixed verifier (computed once) for the SCRAM server exchange.
fn scram_secret() -> &'static ScramSecret {
    static SECRET: std::sync::OnceLock<ScramSecret> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| ScramSecret::from_password("fuzz", b"fuzz-salt-16byte", 4096))
}

/// SCRAM: the input is split at the first two NUL-free `\n` into client-first, client-final
/// and a server message (the client side parses server-first and server-final).
pub fn scram(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let first = parts.next().unwrap_or_default();
    let fin = parts.next().unwrap_or_default();
    let server = parts.next().unwrap_or_default();

    if let Ok(cf) = parse_client_first(first) {
        let mut whole = cf.gs2_header.to_vec();
        whole.extend_from_slice(cf.bare);
        assert_eq!(whole, first, "client-first = GS2 header + bare");
        assert!(!cf.nonce.is_empty() && cf.nonce.iter().all(|&b| b > 0x20 && b != b','));
        assert!(cf.bare.windows(cf.nonce.len()).any(|w| w == cf.nonce));
    }
    if let Ok(cl) = parse_client_final(fin) {
        use base64::Engine;
        let mut whole = cl.without_proof.to_vec();
        whole.extend_from_slice(b",p=");
        whole.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(cl.proof)
                .as_bytes(),
        );
        assert_eq!(whole, fin, "client-final = without-proof + proof");
        assert!(cl.without_proof.starts_with(b"c="));
    }
    let secret = Secret::Scram(scram_secret().clone());
    if let Ok((server_state, server_first)) = crate::auth::scram::ScramServer::start(&secret, first)
    {
        assert!(server_first.starts_with(b"r="));
        let _ = server_state.finish(fin);
        let _ = crate::auth::scram_client::recover_client_key(
            scram_secret(),
            first,
            &server_first,
            fin,
        );
    }
    let _ = crate::auth::scram::ScramServer::start_for_unknown_user("u", b"seed", first)
        .map(|(s, _)| s.finish(fin));
    // The client side: server-first then server-final, with keys (no PBKDF2 per input).
    let keys = crate::auth::scram_client::PassthroughKeys {
        client_key: [7; 32],
        secret: scram_secret().clone(),
    };
    let mut client = crate::auth::scram_client::ScramClient::new(
        crate::auth::scram_client::Credential::Keys(&keys),
        crate::auth::scram_client::Binding::Unsupported,
    );
    if client.update(server).is_ok() {
        let _ = client.finish(fin);
    }
}

/// userlist.txt, pg_hba.conf, md5 and stored secrets.
pub fn auth_files(data: &[u8]) {
    let lines = data.split(|&b| b == b'\n').count();
    if let Ok(text) = std::str::from_utf8(data) {
        match crate::auth::userlist::parse_userlist(text) {
            Ok(entries) => {
                for (user, _) in &entries {
                    assert!(!user.is_empty());
                }
            }
            Err(crate::auth::AuthError::BadAuthFile { line, .. }) => {
                assert!((1..=lines).contains(&line), "line {line} of {lines}")
            }
            Err(_) => {}
        }
        if let Ok(secret) = Secret::parse(text) {
            let _ = crate::auth::md5::md5_response_matches(&secret, "u", [1, 2, 3, 4], data);
        }
    }
    let mut no_includes =
        |p: &Path| -> Result<Vec<u8>, String> { Err(format!("no include {}", p.display())) };
    match crate::auth::hba::parse(data, Path::new("/fuzz/pg_hba.conf"), &mut no_includes) {
        Ok(rules) => {
            let client = crate::auth::hba::HbaClient {
                addr: Some(std::net::IpAddr::from([127, 0, 0, 1])),
                tls: false,
                replication: false,
                database: b"db",
                user: b"u",
            };
            let _ = rules.evaluate(&client);
            let _ = rules.evaluate(&crate::auth::hba::HbaClient {
                addr: None,
                ..client
            });
        }
        Err(e) => assert!(
            (1..=lines).contains(&e.line),
            "hba line {} of {lines}",
            e.line
        ),
    }
}

/// In-memory includes for the ini target: `%include a.ini` reads a fixed small file.
struct FuzzFiles;

impl crate::config::ini::Files for FuzzFiles {
    fn read(&mut self, path: &Path) -> std::io::Result<String> {
        if path.ends_with("a.ini") {
            Ok("[databases]\nincluded = host=127.0.0.1\n".to_owned())
        } else {
            Err(std::io::Error::from(std::io::ErrorKind::NotFound))
        }
    }
    fn exists(&self, path: &Path) -> bool {
        path.ends_with("a.ini")
    }
}

fn no_resolve(_host: &str, port: u16) -> std::io::Result<Vec<std::net::SocketAddr>> {
    Ok(vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))])
}

/// pgbouncer.ini: parse, map onto the file config, validate.
pub fn ini(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/fuzz/pgbouncer.ini");
    let lines = text.split('\n').count();
    match crate::config::ini::parse(path, text, &mut FuzzFiles) {
        Err(e) => {
            let at = e.location();
            if at.file == path {
                assert!(
                    (1..=lines).contains(&at.line),
                    "ini line {} of {lines}",
                    at.line
                );
            }
        }
        Ok(parsed) => {
            for e in &parsed.entries {
                if e.at.file == path {
                    assert!((1..=lines).contains(&e.at.line));
                }
            }
            if let Ok(file) = crate::config::pgbouncer::from_ini(&parsed, path, &no_resolve) {
                let _ = crate::config::validate::build(file, &Default::default());
            }
        }
    }
}

/// pgheal.toml: deserialize, validate.
pub fn toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ::toml::from_str::<crate::config::file::FileConfig>(text) {
        Ok(file) => {
            let _ = crate::config::validate::build(file, &Default::default());
        }
        Err(e) => {
            if let Some(span) = e.span() {
                assert!(span.start <= text.len() && span.end <= text.len());
            }
        }
    }
}

/// A fuzz target: arbitrary bytes in, a panic when an invariant does not hold.
pub type Target = fn(&[u8]);

/// Every target by name, for the corpus runner and the fuzz binaries.
pub const TARGETS: &[(&str, Target)] = &[
    ("frames", frames),
    ("startup", startup),
    ("frontend", frontend),
    ("backend", backend),
    ("scram", scram),
    ("auth_files", auth_files),
    ("ini", ini),
    ("toml", toml),
    ("engine", engine),
];
