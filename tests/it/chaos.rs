//! Network fuzz (issue 14, point 5): real sessions — simple queries, extended protocol,
//! pipelines with an error inside, COPY, Flush segments, transaction blocks — mutated byte by
//! byte and frame by frame, sent by many clients at once to two running pgheal **processes**
//! (session and transaction pooling), while one canary client per process runs write
//! transactions that must never fail.
//!
//! A mutated client may get any error or be closed; what must hold is what the issue asks of
//! a shared choke point: no process dies or logs a panic, the canary never fails or waits
//! more than 10 s, every write it was told committed is in the table exactly once, no server
//! connection is left inside a transaction (a poisoned pool) once the clients are gone, and each
//! pool still serves as many concurrent clients as its size.
//!
//! `CHAOS_SECONDS` (default 10), `CHAOS_CLIENTS` (concurrent mutating clients per process,
//! default 6) and `CHAOS_SEED` make longer or other runs (`scripts/chaos.sh`).

use crate::common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::certs::Dir;
use common::load::{env_or, Rng};
use common::wire::*;
use common::*;
use pgheal::cluster::TempCluster;
use pgheal::protocol::{encode, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn copy_data(s: &str) -> Frame {
    encode::raw(b'd', s.as_bytes())
}

/// The sessions the mutations start from (after login), each a well-formed exchange.
fn templates() -> Vec<Vec<Frame>> {
    vec![
        // Simple protocol, several statements in one Query.
        vec![
            encode::query("SELECT 1; SELECT 'two'"),
            encode::query("INSERT INTO chaos_junk VALUES (1)"),
        ],
        // Extended protocol with a named statement, a portal and Describe.
        vec![
            encode::parse("s1", "SELECT $1::int + 1", &[23]),
            bind("p1", "s1", &["41"], &[]),
            describe_portal("p1"),
            execute("p1"),
            sync(),
            close_stmt("s1"),
            sync(),
        ],
        // A pipeline: three segments, the second fails.
        vec![
            parse("", "INSERT INTO chaos_junk VALUES (2)"),
            bind("", "", &[], &[]),
            execute(""),
            sync(),
            parse("", "SELECT 1/0"),
            bind("", "", &[], &[]),
            execute(""),
            sync(),
            parse("", "SELECT 3"),
            bind("", "", &[], &[]),
            execute(""),
            sync(),
        ],
        // COPY FROM STDIN.
        vec![
            encode::query("COPY chaos_junk FROM STDIN"),
            copy_data("4\n"),
            copy_data("5\n"),
            encode::raw(b'c', b""),
            encode::query("SELECT count(*) FROM chaos_junk"),
        ],
        // Flush-terminated segments, then Sync.
        vec![
            parse("a", "SELECT 6"),
            bind("", "a", &[], &[]),
            execute(""),
            flush(),
            parse("", "INSERT INTO chaos_junk VALUES (7)"),
            bind("", "", &[], &[]),
            execute(""),
            flush(),
            sync(),
        ],
        // A transaction block across messages.
        vec![
            encode::query("BEGIN"),
            parse("", "INSERT INTO chaos_junk VALUES (8)"),
            bind("", "", &[], &[]),
            execute(""),
            sync(),
            encode::query("COMMIT"),
        ],
    ]
}

/// One mutated session: the bytes to send, and whether to close right after them.
fn mutate(rng: &mut Rng, mut frames: Vec<Frame>) -> (Vec<u8>, bool) {
    let mut vanish = false;
    // Frame-level changes first.
    for _ in 0..=rng.below(2) {
        let n = frames.len() as u64;
        match rng.below(5) {
            0 if n > 1 => {
                frames.remove(rng.below(n) as usize);
            }
            1 => {
                let f = frames[rng.below(n) as usize].clone();
                frames.insert(rng.below(n) as usize, f);
            }
            2 if n > 1 => {
                let (a, b) = (rng.below(n) as usize, rng.below(n) as usize);
                frames.swap(a, b);
            }
            3 => {
                frames.truncate(rng.below(n) as usize + 1);
                vanish = true;
            }
            _ => {}
        }
    }
    let mut bytes: Vec<u8> = frames.iter().flat_map(|f| f.bytes.to_vec()).collect();
    // Then bytes: flips, garbage, a length field rewritten, a cut.
    for _ in 0..=rng.below(3) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.below(bytes.len() as u64) as usize;
        match rng.below(6) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.next() as u8,
            2 => {
                let junk: Vec<u8> = (0..=rng.below(16)).map(|_| rng.next() as u8).collect();
                bytes.splice(at..at, junk);
            }
            3 => {
                // A length field: 0, too small, huge, or random.
                let len: u32 = match rng.below(4) {
                    0 => 0,
                    1 => 3,
                    2 => 0x7fff_ffff,
                    _ => rng.next() as u32,
                };
                let end = (at + 4).min(bytes.len());
                bytes.splice(at..end, len.to_be_bytes());
            }
            4 => {
                bytes.truncate(at);
                vanish = true;
            }
            _ => {}
        }
    }
    if rng.below(4) == 0 {
        vanish = true;
    }
    (bytes, vanish)
}

/// Log in, send one mutated session, read what comes back until pgheal closes or goes quiet
/// for a second, then leave.
async fn one_mutant(port: u16, rng: &mut Rng, templates: &[Vec<Frame>]) -> Outcome {
    let w = Wire::connect(port, USER, PASSWORD, DB).await;
    let mut s = w.into_stream();
    let t = templates[rng.below(templates.len() as u64) as usize].clone();
    let (bytes, vanish) = mutate(rng, t);
    if s.write_all(&bytes).await.is_err() {
        return Outcome::Closed;
    }
    if vanish {
        return Outcome::Vanished;
    }
    let mut buf = BytesMut::with_capacity(8192);
    loop {
        buf.clear();
        match tokio::time::timeout(Duration::from_secs(1), s.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Outcome::Closed,
            Ok(Ok(_)) => continue,
            Err(_) => return Outcome::Left,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// pgheal closed the connection (a FATAL for bad input, or the session ended).
    Closed,
    /// pgheal went quiet (waiting for the rest of a batch); the client left.
    Left,
    /// The client closed right after its bytes (mid-batch, mid-COPY, mid-transaction).
    Vanished,
}

#[derive(Default)]
struct Tally {
    sessions: AtomicU64,
    closed: AtomicU64,
    left: AtomicU64,
    vanished: AtomicU64,
}

/// The canary: write transactions through `url` until `until`; every one must commit within
/// 10 s. Returns the ids it was told were committed.
async fn canary(url: String, tag: &'static str, until: Instant) -> Result<Vec<i64>, String> {
    let mut c = try_connect(&url)
        .await
        .map_err(|e| format!("{tag} canary login: {e}"))?;
    let insert = c
        .prepare("INSERT INTO chaos_canary(tag, n) VALUES ($1, $2) RETURNING n")
        .await
        .map_err(|e| format!("{tag} canary prepare: {e}"))?;
    let mut acked = Vec::new();
    let mut n: i64 = 0;
    while Instant::now() < until {
        n += 1;
        let step = async {
            let tx = c.transaction().await?;
            let row = tx.query_one(&insert, &[&tag, &n]).await?;
            let echoed: i64 = row.get(0);
            tx.commit().await?;
            Ok::<i64, tokio_postgres::Error>(echoed)
        };
        match tokio::time::timeout(Duration::from_secs(10), step).await {
            Ok(Ok(echoed)) if echoed == n => acked.push(n),
            Ok(Ok(other)) => return Err(format!("{tag} canary: wrote {n}, got {other} back")),
            Ok(Err(e)) => return Err(format!("{tag} canary transaction {n} failed: {e}")),
            Err(_) => return Err(format!("{tag} canary transaction {n} waited 10 s")),
        }
    }
    Ok(acked)
}

fn start_binary(
    pg: &TempCluster,
    dir: &Dir,
    name: &str,
    mode: &str,
    port: u16,
) -> (tokio::process::Child, tokio::task::JoinHandle<String>) {
    let cfg = dir.write(
        &format!("{name}.toml"),
        &format!(
            "[pgheal]\nlisten = \"127.0.0.1:{port}\"\npool_mode = \"{mode}\"\npool_size = 4\n\
             [databases.{DB}]\nurl = \"{}\"\n[users]\n{USER} = \"{PASSWORD}\"\n",
            pg.url(USER, PASSWORD, DB)
        ),
    );
    let mut c = common::bin::pgheal_cmd();
    c.arg("--config").arg(&cfg);
    spawn_logging(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutated_sessions_harm_no_one_else() {
    let seconds: u64 = env_or("CHAOS_SECONDS", 10);
    let clients: u64 = env_or("CHAOS_CLIENTS", 6);
    let seed: u64 = env_or("CHAOS_SEED", 0x5eed);
    let pg = start_pg();
    admin(
        &pg,
        "CREATE TABLE chaos_junk(id int); ALTER TABLE chaos_junk OWNER TO app;
         CREATE TABLE chaos_canary(tag text, n bigint, PRIMARY KEY (tag, n));
         ALTER TABLE chaos_canary OWNER TO app;",
    );
    let dir = Dir::new("chaos");
    let mut procs = Vec::new();
    for (tag, mode) in [("session", "session"), ("transaction", "transaction")] {
        let port = free_port();
        let (child, log) = start_binary(&pg, &dir, tag, mode, port);
        let url = format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{port}/{DB}");
        assert!(
            eventually(Duration::from_secs(20), || async {
                try_connect(&url).await.is_ok()
            })
            .await,
            "pgheal ({mode}) accepts clients"
        );
        procs.push((tag, port, url, child, log));
    }

    let until = Instant::now() + Duration::from_secs(seconds);
    let tally = Arc::new(Tally::default());
    let mut mutants = Vec::new();
    let mut canaries = Vec::new();
    for (i, (tag, port, url, _, _)) in procs.iter().enumerate() {
        canaries.push(tokio::spawn(canary(url.clone(), tag, until)));
        for k in 0..clients {
            let port = *port;
            let tally = tally.clone();
            let mut rng = Rng(seed ^ ((i as u64 + 1) << 32) ^ (k + 1).wrapping_mul(0x9E37_79B9));
            mutants.push(tokio::spawn(async move {
                let templates = templates();
                while Instant::now() < until {
                    let o = one_mutant(port, &mut rng, &templates).await;
                    tally.sessions.fetch_add(1, Ordering::Relaxed);
                    match o {
                        Outcome::Closed => &tally.closed,
                        Outcome::Left => &tally.left,
                        Outcome::Vanished => &tally.vanished,
                    }
                    .fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    for m in mutants {
        tokio::time::timeout(Duration::from_secs(seconds + 60), m)
            .await
            .expect("the mutating clients finish (every read is bounded)")
            .expect("a mutating client panicked");
    }
    let mut acked = Vec::new();
    for c in canaries {
        let r = tokio::time::timeout(Duration::from_secs(seconds + 60), c)
            .await
            .expect("the canaries finish")
            .expect("a canary panicked");
        acked.push(r.unwrap_or_else(|e| panic!("seed {seed:#x}: {e}")));
    }
    eprintln!(
        "chaos: {} mutated sessions in {seconds} s (closed by pgheal {}, left waiting {}, vanished {}); canary transactions {:?}",
        tally.sessions.load(Ordering::Relaxed),
        tally.closed.load(Ordering::Relaxed),
        tally.left.load(Ordering::Relaxed),
        tally.vanished.load(Ordering::Relaxed),
        acked.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert!(
        tally.sessions.load(Ordering::Relaxed) > clients,
        "the mutants ran"
    );

    // Every acknowledged canary write is there exactly once.
    let check = admin_client(&pg).await;
    for ((tag, ..), ids) in procs.iter().zip(&acked) {
        assert!(!ids.is_empty(), "the {tag} canary committed nothing");
        let rows = check
            .query(
                "SELECT n FROM chaos_canary WHERE tag = $1 ORDER BY n",
                &[tag],
            )
            .await
            .unwrap();
        let stored: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let expected: BTreeSet<i64> = ids.iter().copied().collect();
        assert_eq!(
            stored,
            expected.into_iter().collect::<Vec<_>>(),
            "{tag} canary writes"
        );
    }

    // No server connection is left inside a transaction once every client is gone.
    let settled = eventually(Duration::from_secs(30), || async {
        let r = check
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' \
                 AND state IN ('idle in transaction', 'idle in transaction (aborted)', 'active')",
                &[],
            )
            .await
            .unwrap();
        r.get::<_, i64>(0) == 0
    })
    .await;
    if !settled {
        let rows = check
            .query(
                "SELECT pid, state, left(query, 200), (now() - state_change)::text \
                 FROM pg_stat_activity WHERE usename = 'app'",
                &[],
            )
            .await
            .unwrap();
        let rows: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "pid {} {:?} for {:?}: {:?}",
                    r.get::<_, i32>(0),
                    r.get::<_, Option<String>>(1),
                    r.get::<_, Option<String>>(3),
                    r.get::<_, Option<String>>(2)
                )
            })
            .collect();
        for (tag, _, _, child, _) in procs.iter_mut() {
            let _ = child.start_kill();
            eprintln!("stopping {tag}");
        }
        let mut logs = String::new();
        for (tag, _, _, _, log) in procs {
            if let Ok(Ok(l)) = tokio::time::timeout(Duration::from_secs(10), log).await {
                let tail: Vec<&str> = l.lines().rev().take(40).collect();
                logs.push_str(&format!("--- {tag} pgheal, last lines:\n"));
                for line in tail.into_iter().rev() {
                    logs.push_str(line);
                    logs.push('\n');
                }
            }
        }
        panic!(
            "seed {seed:#x}: a server connection stayed in a transaction or busy:\n{}\n{logs}",
            rows.join("\n")
        );
    }

    // Each pool still serves as many concurrent clients as its size, and no process died.
    for (tag, _, url, child, _) in procs.iter_mut() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "seed {seed:#x}: the {tag} pgheal process died"
        );
        let mut held = Vec::new();
        for _ in 0..4 {
            let c = tokio::time::timeout(Duration::from_secs(20), try_connect(url))
                .await
                .unwrap_or_else(|_| panic!("{tag}: login waited 20 s after the chaos"))
                .unwrap_or_else(|e| panic!("{tag}: login after the chaos: {e}"));
            c.batch_execute("BEGIN; SELECT 1").await.unwrap();
            held.push(c);
        }
        for c in &held {
            c.batch_execute("COMMIT").await.unwrap();
        }
    }
    for (tag, _, _, mut child, log) in procs {
        let _ = child.start_kill();
        let _ = child.wait().await;
        let log = tokio::time::timeout(Duration::from_secs(10), log)
            .await
            .expect("log closed")
            .unwrap();
        assert!(
            !log.contains("panicked"),
            "seed {seed:#x}: the {tag} pgheal logged a panic:\n{log}"
        );
    }
}
