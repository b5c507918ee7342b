//! `postgres://user:password@host:port/dbname` URLs (`postgresql://` too).

use super::ConfigError;

/// A parsed upstream URL. The password is never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    pub user: String,
    pub password: Option<String>,
    pub host: String,
    pub port: u16,
    pub dbname: String,
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
        Ok(Upstream {
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
}
