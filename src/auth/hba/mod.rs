//! `auth_hba_file`: PgBouncer's subset of PostgreSQL's `pg_hba.conf`, parsed and evaluated.
//!
//! With `auth_type = hba` the authentication method is chosen per connection: the first line
//! whose connection type, database, user and client address match gives the method; no matching
//! line refuses the connection, as in PostgreSQL. This lets an operator require TLS (`hostssl`)
//! or certificates on some networks and passwords or `trust` on others.
//!
//! This module is pure: no sockets and no file system. [`fn@parse`] takes the file's bytes
//! and a closure that reads `@file` includes, so every rule can be tested from strings. The
//! parser is in [`mod@parse`], the rules and their matching in [`rules`]; the tests below go
//! through both, from a file's text to the method a client gets.
//!
//! What is accepted (PgBouncer's doc/config.md "HBA file format" and its src/hba.c), and what
//! is refused with the file and line — never silently skipped, because skipping a `reject`
//! line would let a later, more permissive line match:
//! - connection types `local`, `host`, `hostssl`, `hostnossl` (`local` is for Unix sockets,
//!   which pgheal does not listen on yet: such lines never match a TCP client);
//! - database: `all`, `sameuser`, `replication` (matches only replication connections, which
//!   pgheal does not accept: never matches), names, quoted names (a quoted keyword is a plain
//!   name), comma lists, `@file` includes; refused: `samerole`, `samegroup`, regular
//!   expressions (`/…`);
//! - user: `all`, names, quoted names, comma lists, `@file`; refused: `+group`, regular
//!   expressions;
//! - address: `all`, an IPv4 or IPv6 address with a CIDR length, or an address followed by a
//!   mask; refused: `samehost`, `samenet`, host names and domain suffixes;
//! - method: `trust`, `reject`, `md5` (SCRAM for users whose stored secret is SCRAM, as
//!   PgBouncer's `auth_type = md5`), `password`, `scram-sha-256`, `cert` (`hostssl` only, as
//!   PostgreSQL) and `peer` (`local` only); any other method, and any option (`map=`,
//!   `clientcert=`, …), is refused: pgheal has no `auth_ident_file`;
//! - `#` comments outside quotes, `""` inside quotes for a quote, and PostgreSQL's backslash
//!   line continuation.
//!
//! Names are bytes: the file is not required to be UTF-8 and names compare byte for byte.
//!
//! A client address that is an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a dual-stack
//! listener reports IPv4 clients) is matched as the IPv4 address it is.

mod parse;
mod rules;

pub use parse::{parse, HbaError, ReadInclude};
pub use rules::{ConnType, HbaClient, HbaMethod, HbaRule, HbaRules};

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::{Path, PathBuf};

    fn no_includes(p: &Path) -> Result<Vec<u8>, String> {
        Err(format!("unexpected include {}", p.display()))
    }

    fn rules(text: &str) -> HbaRules {
        parse(
            text.as_bytes(),
            Path::new("/etc/hba.conf"),
            &mut no_includes,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> HbaError {
        match parse(
            text.as_bytes(),
            Path::new("/etc/hba.conf"),
            &mut no_includes,
        ) {
            Ok(r) => panic!("parsed: {r:?}"),
            Err(e) => e,
        }
    }

    fn client<'a>(addr: &str, tls: bool, db: &'a str, user: &'a str) -> HbaClient<'a> {
        HbaClient {
            addr: Some(addr.parse().expect("test address")),
            tls,
            replication: false,
            database: db.as_bytes(),
            user: user.as_bytes(),
        }
    }

    /// The method and line of the first match.
    fn eval(r: &HbaRules, c: HbaClient<'_>) -> Option<(HbaMethod, usize)> {
        r.evaluate(&c).map(|rule| (rule.method, rule.line))
    }

    #[test]
    fn first_match_wins_and_no_match_is_none() {
        let r = rules(
            "# comment\n\nhost app alice 10.0.0.0/8 trust\nhost all all 10.1.0.0/16 reject\nhost all all 0.0.0.0/0 scram-sha-256 # tail\n",
        );
        assert_eq!(
            eval(&r, client("10.1.2.3", false, "app", "alice")),
            Some((HbaMethod::Trust, 3))
        );
        assert_eq!(
            eval(&r, client("10.1.2.3", false, "app", "bob")),
            Some((HbaMethod::Reject, 4))
        );
        assert_eq!(
            eval(&r, client("192.168.0.1", false, "x", "y")),
            Some((HbaMethod::ScramSha256, 5))
        );
        // 0.0.0.0/0 is IPv4 only.
        assert_eq!(eval(&r, client("::1", false, "x", "y")), None);
    }

    #[test]
    fn connection_types() {
        let r = rules(
            "local all all peer\nhostssl all tls 0.0.0.0/0 md5\nhostnossl all plain 0.0.0.0/0 password\nhost all all ::/0 md5\n",
        );
        assert_eq!(eval(&r, client("1.2.3.4", false, "d", "tls")), None);
        assert_eq!(
            eval(&r, client("1.2.3.4", true, "d", "tls")),
            Some((HbaMethod::Md5, 2))
        );
        assert_eq!(
            eval(&r, client("1.2.3.4", false, "d", "plain")),
            Some((HbaMethod::Password, 3))
        );
        assert_eq!(eval(&r, client("1.2.3.4", true, "d", "plain")), None);
        let unix = HbaClient {
            addr: None,
            tls: false,
            replication: false,
            database: b"d",
            user: b"u",
        };
        assert_eq!(eval(&r, unix), Some((HbaMethod::Peer, 1)));
        // A local line never matches TCP.
        assert_eq!(
            eval(&r, client("::1", false, "d", "u")),
            Some((HbaMethod::Md5, 4))
        );
    }

    #[test]
    fn addresses_cidr_mask_all_and_mapped() {
        let r = rules(
            "host all a 127.0.0.1/32 trust\nhost all b 192.168.1.0 255.255.255.0 trust\nhost all c ::1/128 trust\nhost all d all trust\nhost all e 192.168.1.77/24 trust\nhost all f fe80::/10 trust\nhost all g 10.0.0.0/0 trust\n",
        );
        let m = |a: &str, u: &str| eval(&r, client(a, false, "db", u)).map(|x| x.1);
        assert_eq!(m("127.0.0.1", "a"), Some(1));
        assert_eq!(m("127.0.0.2", "a"), None);
        assert_eq!(m("::ffff:127.0.0.1", "a"), Some(1));
        assert_eq!(m("::1", "a"), None);
        assert_eq!(m("192.168.1.200", "b"), Some(2));
        assert_eq!(m("192.168.2.1", "b"), None);
        assert_eq!(m("::1", "c"), Some(3));
        assert_eq!(m("127.0.0.1", "c"), None);
        assert_eq!(m("::1", "d"), Some(4));
        assert_eq!(m("8.8.8.8", "d"), Some(4));
        // Host bits in the address are ignored, as PostgreSQL does.
        assert_eq!(m("192.168.1.3", "e"), Some(5));
        assert_eq!(m("fe80::1234", "f"), Some(6));
        assert_eq!(m("fec0::1", "f"), None);
        assert_eq!(m("1.2.3.4", "g"), Some(7));
    }

    #[test]
    fn database_and_user_lists() {
        let r = rules(
            "host \"all\",sameuser all all trust\nhost a , b \"c d\",\"e\"\"f\" all md5\nhost replication all all password\n",
        );
        let m = |db: &str, u: &str| eval(&r, client("1.1.1.1", false, db, u)).map(|x| x.1);
        // A quoted keyword is a name.
        assert_eq!(m("all", "x"), Some(1));
        assert_eq!(m("bob", "bob"), Some(1));
        assert_eq!(m("bob", "alice"), None);
        assert_eq!(m("a", "c d"), Some(2));
        assert_eq!(m("b", "e\"f"), Some(2));
        assert_eq!(m("b", "c"), None);
        // `replication` matches only replication connections.
        assert_eq!(m("replication", "x"), None);
        let repl = HbaClient {
            replication: true,
            ..client("1.1.1.1", false, "whatever", "x")
        };
        assert_eq!(eval(&r, repl).map(|x| x.1), Some(3));
        // `all` does not match a replication connection, as in PostgreSQL.
        let r2 = rules("host all all all trust\n");
        assert_eq!(eval(&r2, repl), None);
    }

    #[test]
    fn names_are_bytes() {
        let text = b"host caf\xe9 \"\xff\" all trust\n";
        let r = parse(text, Path::new("h"), &mut no_includes).expect("bytes");
        let c = HbaClient {
            addr: Some("1.1.1.1".parse().expect("ip")),
            tls: false,
            replication: false,
            database: b"caf\xe9",
            user: b"\xff",
        };
        assert_eq!(eval(&r, c).map(|x| x.1), Some(1));
        let c2 = HbaClient {
            database: "café".as_bytes(),
            ..c
        };
        assert_eq!(eval(&r, c2), None);
    }

    #[test]
    fn continuation_and_crlf() {
        let r = rules("host all \\\n  alice \\\n 10.0.0.0/8 md5\r\nhost all all all reject\r\n");
        assert_eq!(
            eval(&r, client("10.9.9.9", false, "d", "alice")),
            Some((HbaMethod::Md5, 1))
        );
        assert_eq!(
            eval(&r, client("10.9.9.9", false, "d", "bob")),
            Some((HbaMethod::Reject, 4))
        );
        // A '#' inside quotes is part of the name.
        let r = rules("host \"a#b\" all all trust\n");
        assert_eq!(
            eval(&r, client("1.1.1.1", false, "a#b", "u")).map(|x| x.1),
            Some(1)
        );
    }

    #[test]
    fn includes_relative_nested_and_looping() {
        let files: HashMap<PathBuf, &str> = [
            ("/etc/pg/dbs.txt", "app1, app2\n# comment\napp3 @more.txt\n"),
            ("/etc/pg/more.txt", "app4\n"),
            ("/abs/users", "\"quoted user\" alice\n"),
            ("/etc/pg/loop", "@loop\n"),
            ("/etc/pg/bad", "+group\n"),
        ]
        .into_iter()
        .map(|(k, v)| (PathBuf::from(k), v))
        .collect();
        let mut read = |p: &Path| {
            files
                .get(p)
                .map(|t| t.as_bytes().to_vec())
                .ok_or_else(|| "No such file or directory".to_owned())
        };
        let r = parse(
            b"host @dbs.txt @/abs/users all trust\n",
            Path::new("/etc/pg/hba.conf"),
            &mut read,
        )
        .expect("parse");
        for db in ["app1", "app2", "app3", "app4"] {
            assert!(
                r.evaluate(&client("1.1.1.1", false, db, "alice")).is_some(),
                "{db}"
            );
        }
        assert!(r
            .evaluate(&client("1.1.1.1", false, "app4", "quoted user"))
            .is_some());
        assert!(r
            .evaluate(&client("1.1.1.1", false, "app5", "alice"))
            .is_none());
        let e = parse(
            b"\nhost @missing all all trust\n",
            Path::new("/etc/pg/hba.conf"),
            &mut read,
        )
        .expect_err("missing include");
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("/etc/pg/missing"), "{e}");
        let e = parse(
            b"host @loop all all trust\n",
            Path::new("/etc/pg/hba.conf"),
            &mut read,
        )
        .expect_err("loop");
        assert!(e.reason.contains("nested"), "{e}");
        let e = parse(
            b"host all @bad all trust\n",
            Path::new("/etc/pg/hba.conf"),
            &mut read,
        )
        .expect_err("group in include");
        assert!(e.reason.contains("/etc/pg/bad:1"), "{e}");
    }

    #[test]
    fn unsupported_is_an_error_with_line() {
        let cases = [
            ("host samerole all all trust", "samerole"),
            ("host samegroup all all trust", "samegroup"),
            ("host all +admins all trust", "group"),
            ("host all /^a all trust", "regular expressions"),
            ("host all all samehost trust", "samehost"),
            ("host all all samenet trust", "samenet"),
            ("host all all db.example.com trust", "host names"),
            ("host all all .example.com trust", "host names"),
            ("host all all 10.0.0.0/33 trust", "CIDR"),
            ("host all all ::/129 trust", "CIDR"),
            ("host all all 10.0.0.0/x trust", "CIDR"),
            ("host all all 10.0.0.0 trust", "mask"),
            ("host all all 10.0.0.0 ffff:: trust", "family"),
            ("host all all all gss", "gss"),
            ("host all all all ldap", "ldap"),
            ("host all all all ident", "ident"),
            ("host all all all pam", "pam"),
            ("host all all all", "missing authentication method"),
            ("host all all all md5 clientcert=verify-full", "clientcert"),
            ("hostssl all all all cert map=omicron", "auth_ident_file"),
            ("host all all all peer", "local sockets"),
            ("host all all all cert", "hostssl"),
            ("hostgssenc all all all trust", "hostgssenc"),
            ("include other.conf", "include"),
            ("hots all all all trust", "unknown connection type"),
            ("host \"all", "unterminated"),
            ("host all", "missing user"),
            ("host , all all trust", "empty database"),
            (
                "host all all \"10.0.0.0/8\" trust",
                "expected a client address",
            ),
            ("local all all 127.0.0.1/32 trust", "not supported"),
        ];
        for (line, expect) in cases {
            let e = error(&format!("# first\nhost all all all trust\n{line}\n"));
            assert_eq!(e.line, 3, "{line}: {e}");
            assert!(e.reason.contains(expect), "{line}: {e}");
            assert!(e.to_string().starts_with("/etc/hba.conf:3: "), "{e}");
        }
    }

    #[test]
    fn local_lines_have_no_address() {
        let r = rules("local all all trust\n");
        assert_eq!(r.rules().len(), 1);
        assert_eq!(r.rules()[0].conn_type, ConnType::Local);
        assert_eq!(eval(&r, client("127.0.0.1", false, "d", "u")), None);
    }

    #[test]
    fn every_method_parses() {
        let r = rules(
            "host all a all trust\nhost all b all reject\nhost all c all md5\nhost all d all password\nhost all e all scram-sha-256\nhostssl all f all cert\nlocal all g peer\n",
        );
        let methods: Vec<_> = r.rules().iter().map(|r| r.method).collect();
        assert_eq!(
            methods,
            [
                HbaMethod::Trust,
                HbaMethod::Reject,
                HbaMethod::Md5,
                HbaMethod::Password,
                HbaMethod::ScramSha256,
                HbaMethod::Cert,
                HbaMethod::Peer
            ]
        );
    }
}
