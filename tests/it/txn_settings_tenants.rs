//! Session settings in transaction pooling as a security boundary between tenants: two clients
//! share a pool of two server connections, and [`Router`] decides which connection runs each
//! client's next transaction. Whatever one client sets (`SET ROLE`, `SET SESSION
//! AUTHORIZATION`, search_path, a custom `app.tenant`, ...) follows it to every connection and
//! never reaches the other client; only what PostgreSQL itself keeps is kept (not a rolled-back
//! `SET`, not `SET LOCAL`, not a `SET` the server rejected).

use crate::common;
use crate::txn_support;

use common::wire::*;
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::proxy::ProxyHandle;
use txn_support::*;

/// PostgreSQL with roles `tenant_a` and `tenant_b` that `app` may switch to, schemas
/// `a_schema` and `b_schema`, and pgheal in transaction pooling with two server connections.
async fn setup(extra_admin_sql: &str) -> (TempCluster, ProxyHandle) {
    let pg = start_pg();
    admin(
        &pg,
        &format!(
            "CREATE ROLE tenant_a; CREATE ROLE tenant_b; GRANT tenant_a, tenant_b TO app;
             CREATE SCHEMA a_schema AUTHORIZATION app; CREATE SCHEMA b_schema AUTHORIZATION app;
             {extra_admin_sql}"
        ),
    );
    let proxy = txn_proxy(&pg, 2).await;
    (pg, proxy)
}

/// `SELECT pg_backend_pid(), <exprs>` in a transaction of its own: the backend that ran it and
/// the values.
async fn seen(w: &mut Wire, exprs: &str) -> (i32, Vec<Option<String>>) {
    let sql = format!("SELECT pg_backend_pid(), {exprs}");
    let msgs = w.query(&sql).await;
    match rows(&msgs).as_slice() {
        [row] => (
            row[0].as_deref().unwrap().parse().unwrap(),
            row[1..].to_vec(),
        ),
        _ => panic!("{sql}: {msgs:?}"),
    }
}

/// Runs `sql` (a simple query) and checks it succeeded.
async fn ok(w: &mut Wire, sql: &str) {
    let msgs = w.query(sql).await;
    assert!(errors(&msgs).is_empty(), "{sql}: {msgs:?}");
}

/// On each server connection in turn, `w` sees `expected` for `exprs`.
async fn everywhere(
    router: &mut Router,
    w: &mut Wire,
    exprs: &str,
    expected: &[Option<&str>],
    what: &str,
) {
    let expected: Vec<Option<String>> = expected.iter().map(|v| v.map(str::to_owned)).collect();
    for pid in router.pids {
        router.route_to(pid).await;
        assert_eq!(seen(w, exprs).await, (pid, expected.clone()), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_role_stays_with_its_client_and_never_reaches_another() {
    let (_pg, proxy) = setup("").await;
    let mut router = Router::new(&proxy).await;
    let [p0, _] = router.pids;
    let mut a = wire(&proxy).await;
    let mut b = wire(&proxy).await;

    router.route_to(p0).await;
    assert_eq!(a.query("SET ROLE tenant_a").await, complete("SET", 'I'));
    // B's next transaction runs on the very connection A switched to tenant_a.
    router.route_to(p0).await;
    assert_eq!(
        seen(&mut b, "current_user, session_user").await,
        (p0, vec![s("app"), s("app")]),
        "tenant B runs as tenant A's role"
    );
    let who = "current_user, session_user";
    everywhere(
        &mut router,
        &mut a,
        who,
        &[Some("tenant_a"), Some("app")],
        "A's role",
    )
    .await;
    everywhere(
        &mut router,
        &mut b,
        who,
        &[Some("app"), Some("app")],
        "B's role",
    )
    .await;

    // As in PostgreSQL, RESET ALL leaves the role alone; RESET ROLE does not.
    ok(&mut a, "RESET ALL").await;
    everywhere(
        &mut router,
        &mut a,
        who,
        &[Some("tenant_a"), Some("app")],
        "after RESET ALL",
    )
    .await;
    ok(&mut b, "SET ROLE tenant_b").await;
    everywhere(
        &mut router,
        &mut b,
        who,
        &[Some("tenant_b"), Some("app")],
        "B's own role",
    )
    .await;
    ok(&mut a, "RESET ROLE").await;
    everywhere(
        &mut router,
        &mut a,
        who,
        &[Some("app"), Some("app")],
        "after RESET ROLE",
    )
    .await;
    everywhere(
        &mut router,
        &mut b,
        who,
        &[Some("tenant_b"), Some("app")],
        "B keeps its role",
    )
    .await;
    router.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_session_authorization_stays_with_its_client() {
    // SET SESSION AUTHORIZATION needs the user pgheal logs in as to be a superuser.
    let (_pg, proxy) = setup("ALTER ROLE app SUPERUSER; GRANT tenant_a TO tenant_b;").await;
    let mut router = Router::new(&proxy).await;
    let [p0, _] = router.pids;
    let mut a = wire(&proxy).await;
    let mut b = wire(&proxy).await;
    let who = "session_user, current_user, current_setting('is_superuser')";

    router.route_to(p0).await;
    ok(&mut a, "SET SESSION AUTHORIZATION tenant_b").await;
    router.route_to(p0).await;
    assert_eq!(
        seen(&mut b, who).await,
        (p0, vec![s("app"), s("app"), s("on")]),
        "tenant B runs as tenant A's session user"
    );
    let a_view = [Some("tenant_b"), Some("tenant_b"), Some("off")];
    everywhere(&mut router, &mut a, who, &a_view, "A's session user").await;
    // A role on top of the session user, then both reset.
    ok(&mut a, "BEGIN; SET ROLE tenant_a; COMMIT").await;
    let a_view = [Some("tenant_b"), Some("tenant_a"), Some("off")];
    everywhere(
        &mut router,
        &mut a,
        who,
        &a_view,
        "A's role and session user",
    )
    .await;
    let app = [Some("app"), Some("app"), Some("on")];
    everywhere(&mut router, &mut b, who, &app, "B").await;
    ok(&mut a, "RESET SESSION AUTHORIZATION").await;
    everywhere(&mut router, &mut a, who, &app, "A after RESET").await;
    router.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_path_and_other_settings_follow_their_client_only() {
    let (_pg, proxy) = setup("").await;
    let mut router = Router::new(&proxy).await;
    let mut a = wire(&proxy).await;
    let mut b = wire(&proxy).await;
    let show = "current_setting('search_path'), current_setting('statement_timeout'), \
                current_setting('DateStyle')";
    let defaults = seen(&mut b, show).await.1;
    let defaults: Vec<Option<&str>> = defaults.iter().map(|v| v.as_deref()).collect();

    // In a transaction block that commits (PostgreSQL keeps such a SET) and through the
    // extended protocol.
    ok(
        &mut a,
        "BEGIN; SET search_path TO a_schema, public; SET statement_timeout = '7s'; COMMIT",
    )
    .await;
    let set = [
        parse("", "SET datestyle TO 'German'"),
        bind("", "", &[], &[]),
        execute(""),
    ];
    assert_eq!(
        run_batch(&mut a, &set).await,
        vec![
            Msg::ParseComplete,
            Msg::BindComplete,
            Msg::CommandComplete("SET".into()),
            Msg::Ready('I'),
        ]
    );
    let a_view = [Some("a_schema, public"), Some("7s"), Some("German, DMY")];
    everywhere(&mut router, &mut a, show, &a_view, "A's settings").await;
    everywhere(&mut router, &mut b, show, &defaults, "B's defaults").await;

    // B sets its own; each keeps its own.
    ok(
        &mut b,
        "SELECT set_config('search_path', 'b_schema', false)",
    )
    .await;
    let b_view = [Some("b_schema"), defaults[1], defaults[2]];
    everywhere(&mut router, &mut b, show, &b_view, "B's search_path").await;
    everywhere(&mut router, &mut a, show, &a_view, "A's settings again").await;
    router.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_postgresql_keeps_is_carried() {
    let (_pg, proxy) = setup("").await;
    let mut router = Router::new(&proxy).await;
    let mut a = wire(&proxy).await;
    let mut b = wire(&proxy).await;
    let show = "current_setting('application_name'), current_setting('statement_timeout')";

    ok(&mut b, "SET application_name = 'b-app'").await;
    ok(&mut a, "SET application_name = 'a-app'").await;
    // Rolled back: gone, as in PostgreSQL.
    ok(
        &mut a,
        "BEGIN; SET application_name = 'rolled-back'; ROLLBACK",
    )
    .await;
    // SET LOCAL: never kept.
    ok(&mut a, "BEGIN; SET LOCAL statement_timeout = '9s'; COMMIT").await;
    everywhere(&mut router, &mut a, show, &[Some("a-app"), Some("0")], "A").await;

    // A SET the server rejects changes nothing, and does not break the next restores.
    let msgs = a.query("SET statement_timeout = 'abc'").await;
    assert_eq!(errors(&msgs), vec!["22023".to_owned()], "{msgs:?}");
    for _ in 0..2 {
        everywhere(&mut router, &mut a, show, &[Some("a-app"), Some("0")], "A").await;
        everywhere(&mut router, &mut b, show, &[Some("b-app"), Some("0")], "B").await;
    }

    // RESET one, then RESET ALL.
    ok(&mut a, "SET statement_timeout = '8s'").await;
    everywhere(&mut router, &mut a, show, &[Some("a-app"), Some("8s")], "A").await;
    ok(&mut a, "RESET application_name").await;
    everywhere(&mut router, &mut a, show, &[Some(""), Some("8s")], "A").await;
    ok(&mut a, "SET application_name = 'again'; RESET ALL").await;
    everywhere(&mut router, &mut a, show, &[Some(""), Some("0")], "A").await;
    everywhere(&mut router, &mut b, show, &[Some("b-app"), Some("0")], "B").await;
    router.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_settings_follow_their_client_only() {
    let (_pg, proxy) = setup("").await;
    let mut router = Router::new(&proxy).await;
    let [p0, p1] = router.pids;
    let mut a = wire(&proxy).await;
    let mut b = wire(&proxy).await;
    let mut c = wire(&proxy).await;
    let show = "current_setting('app.tenant', true)";

    router.route_to(p0).await;
    ok(&mut a, "SET app.tenant = 'tenant-a'").await;
    router.route_to(p1).await;
    ok(&mut b, "SELECT set_config('app.tenant', 'tenant-b', false)").await;
    everywhere(&mut router, &mut a, show, &[Some("tenant-a")], "A's tenant").await;
    everywhere(&mut router, &mut b, show, &[Some("tenant-b")], "B's tenant").await;
    // C never set it: on a connection where another client defined the name it reads '' (as
    // after a RESET in PostgreSQL), never another tenant's value.
    for pid in [p0, p1] {
        router.route_to(pid).await;
        let (ran_on, got) = seen(&mut c, show).await;
        assert_eq!(ran_on, pid);
        assert!(
            matches!(got[0].as_deref(), None | Some("")),
            "C sees {got:?}"
        );
    }

    // A name pgheal cannot see (a parameter of set_config) is kept from every other client.
    router.route_to(p0).await;
    let set = [
        parse("", "SELECT set_config($1, $2, false)"),
        bind("", "", &["app.tenant", "tenant-c"], &[]),
        execute(""),
    ];
    let msgs = run_batch(&mut c, &set).await;
    assert_eq!(rows(&msgs), vec![vec![s("tenant-c")]], "{msgs:?}");
    for pid in [p0, p1, p0] {
        router.route_to(pid).await;
        assert_eq!(seen(&mut a, show).await, (pid, vec![s("tenant-a")]));
        assert_eq!(seen(&mut b, show).await, (pid, vec![s("tenant-b")]));
    }
    router.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_all_resets_the_clients_settings_everywhere() {
    let (_pg, proxy) = setup("").await;
    let mut router = Router::new(&proxy).await;
    let mut a = wire(&proxy).await;
    let show = "current_user, current_setting('search_path'), \
                current_setting('app.tenant', true) IS DISTINCT FROM 'tenant-a'";
    let defaults = seen(&mut a, "current_setting('search_path')").await.1;
    for sql in [
        "SET ROLE tenant_a",
        "SET search_path = a_schema",
        "SET app.tenant = 'tenant-a'",
    ] {
        ok(&mut a, sql).await;
    }
    let a_view = [Some("tenant_a"), Some("a_schema"), Some("f")];
    everywhere(&mut router, &mut a, show, &a_view, "A's settings").await;
    // Answered by pgheal (pgheal's prepared statements stay on the server), and like
    // PostgreSQL's DISCARD ALL it resets the session's settings, role included.
    assert_eq!(a.query("DISCARD ALL").await, complete("DISCARD ALL", 'I'));
    let reset = [Some("app"), defaults[0].as_deref(), Some("t")];
    everywhere(&mut router, &mut a, show, &reset, "after DISCARD ALL").await;
    router.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_changed_in_a_do_block_follow_their_client_only() {
    let (_pg, proxy) = setup("").await;
    let mut router = Router::new(&proxy).await;
    let [p0, _] = router.pids;
    let mut a = wire(&proxy).await;
    let mut b = wire(&proxy).await;
    let show = "current_setting('statement_timeout'), current_user";
    router.route_to(p0).await;
    ok(
        &mut a,
        "DO $$ BEGIN SET statement_timeout = '6s'; SET ROLE tenant_a; END $$",
    )
    .await;
    router.route_to(p0).await;
    assert_eq!(
        seen(&mut b, show).await,
        (p0, vec![s("0"), s("app")]),
        "A's DO block reached B"
    );
    let a_view = [Some("6s"), Some("tenant_a")];
    everywhere(&mut router, &mut a, show, &a_view, "A's DO block").await;
    everywhere(&mut router, &mut b, show, &[Some("0"), Some("app")], "B").await;
    router.release().await;
}
