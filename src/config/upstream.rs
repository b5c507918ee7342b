//! `postgres://user:password@host:port/dbname?sslmode=...` URLs (`postgresql://` too).
//!
//! Query parameters: `sslmode`, `sslrootcert`, `sslcert` and `sslkey`, as libpq spells them.
//! Any other parameter is an error naming it: a URL from a cloud console carries what its
//! owner needs (`sslmode=require`), and silently dropping a parameter pgheal does not
//! understand would send credentials in plain text while the URL says otherwise.

use super::tls::SslMode;
use super::ConfigError;

/// The URL parameters pgheal understands.
pub const URL_PARAMS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "channel_binding",
];

/// The TLS parameters of an upstream URL (each `None` when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    pub sslmode: Option<SslMode>,
    pub sslrootcert: Option<String>,
    pub sslcert: Option<String>,
    pub sslkey: Option<String>,
    /// libpq's `channel_binding` (SCRAM to the server).
    pub channel_binding: Option<super::tls::ChannelBinding>,
}

/// A parsed upstream URL. The password is never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    pub user: String,
    pub password: Option<String>,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub tls: UpstreamTls,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.dbname
        )
    }
}

impl Upstream {
    pub fn parse(key: &str, s: &str) -> Result<Upstream, ConfigError> {
        // Never echo the URL back: it carries a password.
        let err = |reason: &str| ConfigError::new(key, reason);
        let url = url::Url::parse(s)
            .map_err(|_| err("not a URL (expected postgres://user:password@host:port/dbname)"))?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            return Err(err("the scheme must be postgres:// or postgresql://"));
        }
        let decode = |v: &str| {
            url::form_urlencoded::parse(format!("x={v}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let user = decode(url.username());
        if user.is_empty() {
            return Err(err("the URL needs a user name"));
        }
        let password = url.password().map(|p| decode(&p.replace('+', "%2B")));
        let host = url.host_str().ok_or_else(|| err("the URL needs a host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let dbname = decode(url.path().trim_start_matches('/'));
        let mut tls = UpstreamTls::default();
        for (name, value) in url.query_pairs() {
            let slot = match name.as_ref() {
                "sslmode" => {
                    if tls.sslmode.is_some() {
                        return Err(err("the URL parameter `sslmode` is given twice"));
                    }
                    tls.sslmode = Some(SslMode::parse(&value).ok_or_else(|| {
                        err(&format!(
                            "the URL parameter `sslmode` must be {}, got {value:?}",
                            SslMode::NAMES
                        ))
                    })?);
                    continue;
                }
                "channel_binding" => {
                    if tls.channel_binding.is_some() {
                        return Err(err("the URL parameter `channel_binding` is given twice"));
                    }
                    tls.channel_binding =
                        Some(super::tls::ChannelBinding::parse(&value).ok_or_else(|| {
                            err(&format!(
                                "the URL parameter `channel_binding` must be {}, got {value:?}",
                                super::tls::ChannelBinding::NAMES
                            ))
                        })?);
                    continue;
                }
                "sslrootcert" => &mut tls.sslrootcert,
                "sslcert" => &mut tls.sslcert,
                "sslkey" => &mut tls.sslkey,
                other => {
                    return Err(err(&format!(
                        "unknown URL parameter `{other}` (pgheal understands {})",
                        URL_PARAMS.join(", ")
                    )))
                }
            };
            if slot.is_some() {
                return Err(err(&format!("the URL parameter `{name}` is given twice")));
            }
            if value.is_empty() {
                return Err(err(&format!("the URL parameter `{name}` is empty")));
            }
            if name == "sslrootcert" && value == "system" {
                return Err(err(
                    "`sslrootcert=system` is not supported: give the path of a PEM file",
                ));
            }
            *slot = Some(value.into_owned());
        }
        Ok(Upstream {
            tls,
            dbname: if dbname.is_empty() {
                user.clone()
            } else {
                dbname
            },
            user,
            password,
            host,
            port: url.port().unwrap_or(5432),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_url() {
        let u =
            Upstream::parse("upstream", "postgres://app:s%40cret@127.0.0.1:5433/appdb").unwrap();
        assert_eq!(u.user, "app");
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 5433);
        assert_eq!(u.dbname, "appdb");
        assert!(!format!("{u:?}").contains("cret"));
    }

    #[test]
    fn defaults_and_errors() {
        let u = Upstream::parse("upstream", "postgresql://app@db").unwrap();
        assert_eq!((u.port, u.dbname.as_str(), u.password), (5432, "app", None));
        let e = Upstream::parse("upstream", "mysql://a:secret@h/d").unwrap_err();
        assert_eq!(e.key, "upstream");
        assert!(!e.to_string().contains("secret"));
        assert!(Upstream::parse("upstream", "postgres://h/d").is_err());
    }

    #[test]
    fn tls_parameters() {
        let u = Upstream::parse(
            "upstream",
            "postgres://app:pw@db.example.com/appdb?sslmode=verify-full&sslrootcert=/etc/ca.pem&sslcert=/c.pem&sslkey=/k%20ey.pem&channel_binding=require",
        )
        .unwrap();
        assert_eq!(
            u.tls,
            UpstreamTls {
                sslmode: Some(SslMode::VerifyFull),
                sslrootcert: Some("/etc/ca.pem".into()),
                sslcert: Some("/c.pem".into()),
                sslkey: Some("/k ey.pem".into()),
                channel_binding: Some(crate::config::tls::ChannelBinding::Require),
            }
        );
        let plain = Upstream::parse("upstream", "postgres://app:pw@db/appdb").unwrap();
        assert_eq!(plain.tls, UpstreamTls::default());
    }

    #[test]
    fn unknown_or_bad_parameters_are_errors_naming_them() {
        for (url, word) in [
            (
                "postgres://app:s3cret@db/appdb?sslmode=require&target_session_attrs=any",
                "`target_session_attrs`",
            ),
            (
                "postgres://app:s3cret@db/appdb?application_name=x",
                "`application_name`",
            ),
            ("postgres://app:s3cret@db/appdb?ssl=true", "`ssl`"),
            ("postgres://app:s3cret@db/appdb?sslmode=on", "`sslmode`"),
            (
                "postgres://app:s3cret@db/appdb?channel_binding=maybe",
                "`channel_binding`",
            ),
            (
                "postgres://app:s3cret@db/appdb?channel_binding=require&channel_binding=disable",
                "`channel_binding`",
            ),
            (
                "postgres://app:s3cret@db/appdb?sslmode=require&sslmode=disable",
                "`sslmode`",
            ),
            (
                "postgres://app:s3cret@db/appdb?sslrootcert=",
                "`sslrootcert`",
            ),
            (
                "postgres://app:s3cret@db/appdb?sslrootcert=system",
                "sslrootcert=system",
            ),
        ] {
            let e = Upstream::parse("upstream", url).unwrap_err();
            assert_eq!(e.key, "upstream");
            assert!(e.reason.contains(word), "{url}: {e}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
    }
}
