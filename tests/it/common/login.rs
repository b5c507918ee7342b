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
