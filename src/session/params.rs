//! A client's startup parameters (application_name, client_encoding, DateStyle, `options`
//! with `-c name=value`, ...) applied to its server connection with `SET`, since pooled
//! connections were opened with pgheal's own startup packet.

use crate::pool::ServerConn;
use crate::protocol::startup::StartupParams;

use super::SessionError;

/// Startup keys that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication"];

/// The settings a startup packet asks for, including `-c name=value` / `--name=value` from
/// `options`.
pub fn requested_settings(p: &StartupParams) -> Result<Vec<(String, String)>, SessionError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in &p.params {
        if k == "replication" {
            return Err(SessionError::UnsupportedParam(k.clone()));
        }
        if !NOT_SETTINGS.contains(&k.as_str()) {
            out.push((k.clone(), v.clone()));
        }
    }
    if let Some(options) = p.get("options") {
        let mut words = options.split_whitespace();
        while let Some(w) = words.next() {
            let setting = if w == "-c" {
                words.next()
            } else {
                w.strip_prefix("--").or_else(|| w.strip_prefix("-c"))
            };
            match setting.and_then(|s| s.split_once('=')) {
                Some((k, v)) => out.push((k.replace('-', "_"), v.to_owned())),
                None => return Err(SessionError::UnsupportedParam("options".into())),
            }
        }
    }
    Ok(out)
}

fn quote_literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// Bring the server connection's settings to what the client asked for. Settings the server
/// already reports with the same value are skipped. Not cancel-safe.
pub async fn apply(
    conn: &mut ServerConn,
    settings: &[(String, String)],
) -> Result<(), SessionError> {
    let mut sql = String::new();
    for (k, v) in settings {
        if conn.params.get(k).is_some_and(|cur| cur == v) {
            continue;
        }
        sql.push_str(&format!(
            "SET {} = {};",
            crate::statements::sql_prepare::quote_ident(k),
            quote_literal(v)
        ));
    }
    if sql.is_empty() {
        return Ok(());
    }
    match conn
        .simple_query(&sql)
        .await
        .map_err(crate::pool::PoolError::from)?
    {
        None => Ok(()),
        Some(err) => Err(SessionError::ParamRejected(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> StartupParams {
        StartupParams {
            params: kv
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn settings_from_params_and_options() {
        let p = params(&[
            ("user", "app"),
            ("database", "db"),
            ("application_name", "web"),
            (
                "options",
                "-c search_path=shop --statement-timeout=5s -cwork_mem=8MB",
            ),
        ]);
        assert_eq!(
            requested_settings(&p).unwrap(),
            vec![
                ("application_name".to_string(), "web".to_string()),
                ("search_path".to_string(), "shop".to_string()),
                ("statement_timeout".to_string(), "5s".to_string()),
                ("work_mem".to_string(), "8MB".to_string()),
            ]
        );
        assert!(requested_settings(&params(&[("replication", "true")])).is_err());
        assert!(requested_settings(&params(&[("options", "-x")])).is_err());
    }
}
