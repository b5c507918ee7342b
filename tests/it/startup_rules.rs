//! Startup like PostgreSQL (issue 14, point 7): a startup parameter the server rejects is FATAL
//! in every pooling mode, with PostgreSQL's own error; with duplicate keys the last one wins;
//! and when pgheal's own login to the server fails, the client is told the pooler could not
//! log in (08001), never the `28P01` that would say its own password was wrong.

use crate::common;

use std::collections::BTreeMap;

use common::login::options_error;
use common::wire::{rows, Wire};
use common::*;
use pgheal::config::cli::RunArgs;
use pgheal::config::file::{FileConfig, FileDatabase};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_startup_parameter_is_fatal_in_every_mode() {
    let pg = start_pg();
    let bad = "-c work_mem=lots";
    let direct = options_error(&direct_url(&pg), bad).await;
    let Some((severity, code, message)) = direct.clone() else {
        panic!("PostgreSQL accepted work_mem=lots");
    };
    assert_eq!(
        (severity.as_str(), code.as_str()),
        ("FATAL", "22023"),
        "{message}"
    );
    for mode in ["session", "transaction", "statement"] {
        let p = start_proxy(&pg, |a| a.pool_mode = Some(mode.into())).await;
        assert_eq!(options_error(&proxy_url(&p), bad).await, direct, "{mode}");
        // The refusal harmed nothing: the next client logs in and works.
        let c = connect(&proxy_url(&p)).await;
        let v: i32 = c.query_one("SELECT 7", &[]).await.unwrap().get(0);
        assert_eq!(v, 7, "{mode}");
    }
}

/// `application_name` as the server sees it after a startup packet that sends it twice.
async fn application_name_sent_twice(port: u16) -> Vec<Vec<Option<String>>> {
    let mut w = Wire::connect_with(
        port,
        USER,
        PASSWORD,
        DB,
        &[("application_name", "first"), ("application_name", "last")],
    )
    .await;
    rows(&w.query("SHOW application_name").await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_duplicate_startup_keys_the_last_wins() {
    let pg = start_pg();
    let last = vec![vec![Some("last".to_owned())]];
    // As PostgreSQL itself does.
    assert_eq!(
        application_name_sent_twice(pg.port()).await,
        last,
        "PostgreSQL"
    );
    for mode in ["session", "transaction"] {
        let p = start_proxy(&pg, |a| a.pool_mode = Some(mode.into())).await;
        assert_eq!(
            application_name_sent_twice(p.addr.port()).await,
            last,
            "{mode}"
        );
    }
}

/// pgheal logs into the server with a password the server refuses; the client's own login to
/// pgheal is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgheals_own_failed_login_is_08001_not_the_clients_28p01() {
    let pg = start_pg();
    let dir = common::certs::Dir::new("startup-rules");
    let userlist = dir.write("userlist.txt", &format!("\"{USER}\" \"{PASSWORD}\"\n"));
    for mode in ["session", "transaction"] {
        let mut databases = BTreeMap::new();
        databases.insert(
            DB.to_owned(),
            FileDatabase {
                url: Some(pg.url(USER, "not-the-password", DB)),
                ..Default::default()
            },
        );
        let file = FileConfig {
            databases,
            ..Default::default()
        };
        let args = RunArgs {
            listen: Some("127.0.0.1:0".into()),
            auth_type: Some("plain".into()),
            auth_file: Some(userlist.display().to_string()),
            pool_mode: Some(mode.into()),
            ..Default::default()
        };
        let p = start_proxy_with(file, &args).await;
        let (severity, code, message) = options_error(&proxy_url(&p), "")
            .await
            .expect("the login must fail: pgheal cannot log into the server");
        assert_eq!(
            (severity.as_str(), code.as_str()),
            ("FATAL", "08001"),
            "{mode}: {message}"
        );
        assert!(
            message.contains("pgheal could not log in to the server"),
            "{mode}: {message}"
        );
        // The server's reason is kept, the password is not.
        assert!(
            message.contains("password authentication failed"),
            "{mode}: {message}"
        );
        assert!(!message.contains("not-the-password"), "{mode}: {message}");

        // A client whose own password is wrong still gets 28P01 from pgheal itself.
        let wrong = proxy_url_as(&p, USER, "wrong", DB);
        let (_, code, _) = options_error(&wrong, "")
            .await
            .expect("wrong password refused");
        assert_eq!(code, "28P01", "{mode}");
    }
}
