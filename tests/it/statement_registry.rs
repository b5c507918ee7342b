//! The transaction-pooling statement registry stays bounded: an app that prepares a new text
//! for every query (ids inlined) makes the pool forget the texts nobody holds once it holds
//! more than `max_pool_statements`, while a statement a client keeps prepared survives and
//! keeps working on every server connection, and a forgotten text prepared again works.

use crate::common;

use common::metrics::{sample, scrape};
use common::{proxy_url, start_pg, start_proxy_with, DB, PASSWORD, USER};
use pgheal::config::cli::RunArgs;
use pgheal::config::file::{FileConfig, General};
use pgheal::pool::PoolKey;

const CAP: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_nobody_holds_are_forgotten_and_held_statements_keep_working() {
    let pg = start_pg();
    let file = FileConfig {
        pgheal: General {
            max_pool_statements: Some(CAP),
            ..Default::default()
        },
        ..Default::default()
    };
    let args = RunArgs {
        listen: Some("127.0.0.1:0".into()),
        upstream: Some(pg.url(USER, PASSWORD, DB)),
        metrics_listen: Some("127.0.0.1:0".into()),
        pool_mode: Some("transaction".into()),
        pool_size: Some(2),
        max_prepared_statements: Some(20),
        ..Default::default()
    };
    let p = start_proxy_with(file, &args).await;
    let keeper = common::connect(&proxy_url(&p)).await;
    let kept = keeper.prepare("SELECT $1::int + 1").await.unwrap();
    let v: i32 = keeper.query_one(&kept, &[&1i32]).await.unwrap().get(0);
    assert_eq!(v, 2);

    // 500 texts, each prepared, run once and closed (the driver's Close when dropped).
    let churn = common::connect(&proxy_url(&p)).await;
    for i in 0..500 {
        let s = churn.prepare(&format!("SELECT {i}::int")).await.unwrap();
        let v: i32 = churn.query_one(&s, &[]).await.unwrap().get(0);
        assert_eq!(v, i);
    }
    let names = p
        .pools
        .names_if_any(&PoolKey {
            database: DB.into(),
            user: USER.into(),
        })
        .expect("the pool's statement names");
    // At most the cap, plus what is held: the kept statement and what the two server
    // connections have prepared (20 each at most).
    assert!(
        names.len() <= CAP + 1 + 2 * 20,
        "the registry holds {} texts",
        names.len()
    );
    let body = scrape(&p).await;
    let evicted = sample(
        &body,
        "pgheal_pool_statements_evicted_total",
        &format!("database=\"{DB}\",user=\"{USER}\""),
    )
    .expect("the eviction counter");
    assert!(evicted >= 400.0, "forgotten texts are counted: {evicted}");

    // The kept statement still works, whichever server connection runs it.
    for i in 0..10 {
        let v: i32 = keeper.query_one(&kept, &[&i]).await.unwrap().get(0);
        assert_eq!(v, i + 1);
    }
    // A forgotten text prepared again works.
    let again = churn.prepare("SELECT 3::int").await.unwrap();
    let v: i32 = churn.query_one(&again, &[]).await.unwrap().get(0);
    assert_eq!(v, 3);
    drop((keeper, churn));
    p.shutdown().await;
}
