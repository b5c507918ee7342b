//! The pipelined benchmark's load generator (`scripts/bench-pgbench.sh` runs it against
//! PostgreSQL, PgBouncer and pgheal in turn).
//!
//! pgbench cannot measure what pipelining drivers do: pgbench 15's pipeline mode sends many
//! statements and one Sync, where tokio-postgres, pgx, Npgsql multiplexing and libpq pipeline
//! mode keep many `Bind/Execute/Sync` segments in flight on one connection. This program does
//! exactly that with tokio-postgres: each connection prepares pgbench's select-only statement
//! once, then keeps `DEPTH` queries in flight (each one a Bind, Execute and Sync of its own),
//! issuing a new one as each answer arrives, for `SECONDS`. It prints one line:
//! `segments=<answered> seconds=<elapsed> rate=<segments per second>`.
//!
//! ```text
//! PGPASSWORD=... cargo run --release --example pipeline_bench -- \
//!     HOST PORT USER DBNAME SECONDS DEPTH CONNECTIONS SCALE
//! ```
//!
//! Every wait is bounded: connecting (10 s) and the drain of the last queries in flight
//! (30 s) fail with a message instead of hanging the benchmark script.

use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio_postgres::NoTls;

const SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
const DRAIN_LIMIT: Duration = Duration::from_secs(30);

struct Args {
    host: String,
    port: u16,
    user: String,
    dbname: String,
    seconds: u64,
    depth: usize,
    connections: usize,
    scale: i32,
}

fn parse_args() -> Result<Args, String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != 8 {
        return Err("usage: pipeline_bench HOST PORT USER DBNAME SECONDS DEPTH CONNECTIONS SCALE (password in PGPASSWORD)".into());
    }
    let num = |i: usize, what: &str| -> Result<u64, String> {
        a[i].parse::<u64>()
            .map_err(|_| format!("{what} must be a number, got {:?}", a[i]))
    };
    Ok(Args {
        host: a[0].clone(),
        port: u16::try_from(num(1, "PORT")?).map_err(|_| "PORT out of range".to_string())?,
        user: a[2].clone(),
        dbname: a[3].clone(),
        seconds: num(4, "SECONDS")?,
        depth: usize::try_from(num(5, "DEPTH")?.max(1)).unwrap_or(1),
        connections: usize::try_from(num(6, "CONNECTIONS")?.max(1)).unwrap_or(1),
        scale: i32::try_from(num(7, "SCALE")?.max(1)).map_err(|_| "SCALE out of range")?,
    })
}

/// One connection's run: the number of segments answered before `until`.
async fn drive(args: &Args, until: Instant, seed: u64) -> Result<u64, String> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&args.host)
        .port(args.port)
        .user(&args.user)
        .dbname(&args.dbname)
        .connect_timeout(Duration::from_secs(10));
    if let Some(pw) = std::env::var_os("PGPASSWORD") {
        config.password(pw.into_encoded_bytes());
    }
    let (client, connection) = tokio::time::timeout(Duration::from_secs(10), config.connect(NoTls))
        .await
        .map_err(|_| "connecting took over 10 s".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let conn = tokio::spawn(connection);
    let stmt = client
        .prepare(SQL)
        .await
        .map_err(|e| format!("prepare: {e}"))?;
    let accounts = args.scale * 100_000;
    // A small xorshift: the account ids need only be spread, not random.
    let mut x = seed | 1;
    let mut next_aid = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % accounts as u64) as i32 + 1
    };
    let answered = {
        let query = |aid: i32| {
            let client = &client;
            let stmt = &stmt;
            async move { client.query_one(stmt, &[&aid]).await }
        };
        let mut in_flight = FuturesUnordered::new();
        for _ in 0..args.depth {
            in_flight.push(query(next_aid()));
        }
        let mut answered = 0u64;
        let drain = async {
            while let Some(r) = in_flight.next().await {
                r.map_err(|e| format!("query: {e}"))?;
                if Instant::now() < until {
                    answered += 1;
                    in_flight.push(query(next_aid()));
                }
            }
            Ok::<(), String>(())
        };
        let limit = until.saturating_duration_since(Instant::now()) + DRAIN_LIMIT;
        tokio::time::timeout(limit, drain).await.map_err(|_| {
            "queries in flight were not answered within 30 s of the end".to_string()
        })??;
        answered
    };
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
    Ok(answered)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let start = Instant::now();
    let until = start + Duration::from_secs(args.seconds);
    let runs = (0..args.connections).map(|i| drive(&args, until, 0x9e37_79b9 + i as u64 * 7919));
    let results = futures_util::future::join_all(runs).await;
    let elapsed = start
        .elapsed()
        .as_secs_f64()
        .min(args.seconds as f64)
        .max(0.001);
    let mut total = 0u64;
    for r in results {
        match r {
            Ok(n) => total += n,
            Err(e) => {
                eprintln!("pipeline_bench: {e}");
                std::process::exit(1);
            }
        }
    }
    println!(
        "segments={total} seconds={elapsed:.3} rate={:.1}",
        total as f64 / elapsed
    );
}
