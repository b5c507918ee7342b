//! Logging in through pgheal and reading the answer: who the server says the session is, or
//! the error the login got.

use std::time::Duration;

use super::try_connect;

/// Log in with `url` and return the server's `current_user`. Bounded: pgheal must answer.
pub async fn current_user(url: &str) -> Result<String, tokio_postgres::Error> {
    let c = tokio::time::timeout(Duration::from_secs(20), try_connect(url))
        .await
        .expect("pgheal must answer, not hang")?;
    let r = c.query_one("SELECT current_user::text", &[]).await?;
    Ok(r.get(0))
}

/// A login that must fail: its (SQLSTATE, message).
pub async fn login_error(url: &str) -> (String, String) {
    let e = current_user(url).await.expect_err("login must fail");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an ErrorResponse, got {e}"));
    (db.code().code().to_owned(), db.message().to_owned())
}

/// Log in with `url` and startup `options` (`-c key=value`): None if it worked, else the
/// refusal's (severity, SQLSTATE, message). Bounded: pgheal must answer.
pub async fn options_error(url: &str, options: &str) -> Option<(String, String, String)> {
    let mut cfg: tokio_postgres::Config = url.parse().unwrap();
    cfg.options(options);
    let connected =
        tokio::time::timeout(Duration::from_secs(20), cfg.connect(tokio_postgres::NoTls))
            .await
            .expect("login answered within 20 s");
    match connected {
        Ok(_) => None,
        Err(e) => {
            let db = e
                .as_db_error()
                .unwrap_or_else(|| panic!("not a server error: {e}"));
            Some((
                db.severity().to_owned(),
                db.code().code().to_owned(),
                db.message().to_owned(),
            ))
        }
    }
}
