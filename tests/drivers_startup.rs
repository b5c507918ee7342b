//! node-postgres ending a client while it is still connecting writes Terminate before its
//! startup packet. PostgreSQL closes such a connection without an answer, and node-postgres
//! ends quietly; a FATAL from the pooler instead reaches node-postgres as an error event, which
//! crashes applications that do not listen for it. The script runs straight to PostgreSQL and
//! through pgheal; the transcripts must be the same (tests/session_protocol.rs checks the same
//! at the byte level).

mod common;

use common::drivers::{crate_dir, run_script, start_cluster, Driver};
use common::start_proxy;

fn node_end_before_startup() -> Driver<()> {
    Driver {
        name: "node-postgres (end while connecting)",
        program: "node",
        args: vec!["tests/drivers/node/end_before_startup.js".into()],
        env: vec![],
        probe: (
            "node",
            vec!["-e".into(), "require('pg')".into()],
            crate_dir().join("tests/drivers/node"),
        ),
        needs_file: None,
        install_hint: ".ci/setup installs it",
        informational: &["driver: "],
        direct: (),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_ending_while_connecting_sees_no_error() {
    let driver = node_end_before_startup();
    if !driver.ready_or_skip().await {
        return;
    }
    let pg = start_cluster().await;
    let (direct, _) = run_script(&driver, pg.port(), "PostgreSQL".into(), async || ()).await;
    assert!(direct.succeeded(), "{}", direct.report());
    let expected = direct.transcript();
    assert!(
        expected.iter().any(|l| l == "after: answer=42")
            && expected.last().map(String::as_str) == Some("DONE"),
        "{}",
        direct.report()
    );
    assert!(
        !expected.iter().any(|l| l.contains("error event")),
        "straight to PostgreSQL node-postgres sees no error event:\n{}",
        direct.report()
    );
    for mode in ["session", "transaction"] {
        let proxy = start_proxy(&pg, |a| a.pool_mode = Some(mode.into())).await;
        let (through, _) = run_script(
            &driver,
            proxy.addr.port(),
            format!("pgheal ({mode})"),
            async || (),
        )
        .await;
        through.assert_ok(&expected, &format!("{mode} pooling"));
    }
}
