//! pgbench through pgheal in transaction pooling: 30 clients on a pool of 3 server
//! connections, the select-only script and the TPC-B-like script, in the three query modes
//! (`-M prepared` is the one that needs pgheal's pool-wide statement names). Zero failed
//! transactions, every transaction processed, the balances add up, and the server never saw
//! more than 3 connections from pgheal.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::pgbench::{assert_report, init, pgbench, run_ok};
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::proxy::ProxyHandle;

const POOL_SIZE: usize = 3;
const CLIENTS: u32 = 30;

/// Number of server backends logged in as `app` (pgheal's server user).
async fn app_backends(su: &tokio_postgres::Client) -> i64 {
    su.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'",
        &[],
    )
    .await
    .expect("pg_stat_activity")
    .get(0)
}

/// Samples the number of `app` backends every 20 ms until stopped; the maximum seen.
struct Watcher {
    stop: Arc<AtomicBool>,
    max_seen: Arc<AtomicI64>,
    task: tokio::task::JoinHandle<u32>,
}

impl Watcher {
    async fn start(pg: &TempCluster) -> Watcher {
        let su = admin_client(pg).await;
        let stop = Arc::new(AtomicBool::new(false));
        let max_seen = Arc::new(AtomicI64::new(0));
        let task = {
            let (stop, max_seen) = (stop.clone(), max_seen.clone());
            tokio::spawn(async move {
                let mut samples = 0u32;
                while !stop.load(Ordering::SeqCst) {
                    max_seen.fetch_max(app_backends(&su).await, Ordering::SeqCst);
                    samples += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                samples
            })
        };
        Watcher {
            stop,
            max_seen,
            task,
        }
    }

    /// (maximum seen, number of samples)
    async fn finish(self) -> (i64, u32) {
        self.stop.store(true, Ordering::SeqCst);
        let samples = self.task.await.expect("watcher");
        (self.max_seen.load(Ordering::SeqCst), samples)
    }
}

async fn setup() -> (TempCluster, ProxyHandle) {
    let pg = start_pg();
    init(&pg).await;
    let proxy = start_proxy(&pg, |a| {
        a.pool_mode = Some("transaction".into());
        a.pool_size = Some(POOL_SIZE);
    })
    .await;
    (pg, proxy)
}

/// Runs pgbench through pgheal with `extra` arguments; checks the report and the server-side
/// connection count; returns pgbench's output.
async fn bench(pg: &TempCluster, proxy: &ProxyHandle, mode: &str, extra: &[&str], txns: u32) {
    let watcher = Watcher::start(pg).await;
    let mut c = pgbench(pg, proxy.addr.port());
    c.args(["-n", "-c", &CLIENTS.to_string(), "-j", "2", "-M", mode])
        .args(extra)
        .args(["-t", &txns.to_string(), DB]);
    let what = format!("pgbench -M {mode} {} through pgheal", extra.join(" "));
    let stdout = run_ok(c, &what).await;
    let (max_seen, samples) = watcher.finish().await;

    assert_report(&stdout, mode, CLIENTS * txns, &what);
    assert!(
        stdout.contains(&format!("number of clients: {CLIENTS}")),
        "{what}:\n{stdout}"
    );
    assert!(samples > 0, "the watcher took no sample");
    assert!(
        max_seen <= POOL_SIZE as i64,
        "{what}: the server saw {max_seen} connections from pgheal at once (pool_size {POOL_SIZE})"
    );
    // pgbench has gone; pgheal still holds its idle server connections, no more than the pool.
    let su = admin_client(pg).await;
    let after = app_backends(&su).await;
    assert!(
        (1..=POOL_SIZE as i64).contains(&after),
        "{what}: {after} server connections after the run"
    );
}

async fn select_only(mode: &str) {
    let (pg, proxy) = setup().await;
    bench(&pg, &proxy, mode, &["-S"], 100).await;
    // Select-only: nothing written.
    assert_eq!(admin(&pg, "SELECT count(*) FROM pgbench_history"), "0");
    proxy.shutdown().await;
}

async fn tpcb(mode: &str) {
    let (pg, proxy) = setup().await;
    bench(&pg, &proxy, mode, &[], 30).await;
    // Every transaction left its row in pgbench_history, and the balances add up.
    let total = CLIENTS * 30;
    assert_eq!(
        admin(
            &pg,
            "SELECT count(*), (SELECT sum(delta) FROM pgbench_history) = \
             (SELECT sum(abalance) FROM pgbench_accounts), \
             (SELECT sum(delta) FROM pgbench_history) = \
             (SELECT sum(bbalance) FROM pgbench_branches), \
             (SELECT sum(delta) FROM pgbench_history) = \
             (SELECT sum(tbalance) FROM pgbench_tellers) FROM pgbench_history"
        ),
        format!("{total}|t|t|t")
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_only_prepared_30_clients_on_3() {
    select_only("prepared").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_only_extended_30_clients_on_3() {
    select_only("extended").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_only_simple_30_clients_on_3() {
    select_only("simple").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcb_prepared_30_clients_on_3() {
    tpcb("prepared").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcb_extended_30_clients_on_3() {
    tpcb("extended").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpcb_simple_30_clients_on_3() {
    tpcb("simple").await;
}
