//! Cancel requests across a fleet (PgBouncer's peering): three pgheal processes on loopback
//! ports, each started from its own pgbouncer.ini with its own `peer_id` and a `[peers]` list.
//! A client of the first instance has its query cancelled by a CancelRequest sent to the third
//! (as a load balancer would send it), which forwards it over the first one's Unix socket; a
//! wrong key sent to the second is forwarded over TCP and cancels nothing; a key naming an
//! instance that is not in `[peers]`, or whose time-to-live is spent, is dropped.

use crate::common;

use std::process::Stdio;
use std::time::Duration;

use common::bin::pgheal_cmd;
use common::certs::Dir;
use common::metrics::{http_get, sample};
use common::{free_port, start_pg, DB, USER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One instance of the fleet: its process, client port and metrics port.
struct Instance {
    _process: tokio::process::Child,
    metrics: u16,
}

/// Start instance `id` (1-based) of a fleet whose instances listen on `ports`. Instance 1 also
/// listens on a Unix socket in `dir`; instance 3 reaches it there, the others over TCP.
async fn instance(dir: &Dir, pg_port: u16, ports: &[u16], id: usize) -> Instance {
    let socket_dir = dir.0.join("sockets");
    std::fs::create_dir_all(&socket_dir).unwrap();
    let peers: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i == 0 && id == 3 {
                format!("1 = host={} port={p}\n", socket_dir.display())
            } else {
                format!("{} = host=127.0.0.1 port={p}\n", i + 1)
            }
        })
        .collect();
    let unix = if id == 1 {
        format!("unix_socket_dir = {}", socket_dir.display())
    } else {
        "unix_socket_dir =".to_owned()
    };
    let ini = format!(
        "[databases]\n{DB} = host=127.0.0.1 port={pg_port} dbname={DB} user={USER} password={}\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {}\n{unix}\n\
         auth_type = trust\npeer_id = {id}\n[peers]\n{peers}",
        common::PASSWORD,
        ports[id - 1]
    );
    let path = dir.0.join(format!("peer{id}.ini"));
    std::fs::write(&path, ini).unwrap();
    let log = std::fs::File::create(dir.0.join(format!("peer{id}.log"))).unwrap();
    let metrics = free_port();
    let process = pgheal_cmd()
        .arg("--metrics-listen")
        .arg(format!("127.0.0.1:{metrics}"))
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start pgheal");
    let up = common::eventually(Duration::from_secs(20), || async {
        TcpStream::connect(("127.0.0.1", ports[id - 1]))
            .await
            .is_ok()
    })
    .await;
    assert!(
        up,
        "instance {id} did not listen within 20 s: {}",
        std::fs::read_to_string(dir.0.join(format!("peer{id}.log"))).unwrap_or_default()
    );
    Instance {
        _process: process,
        metrics,
    }
}

async fn cancels(p: &Instance, result: &str) -> f64 {
    let (status, body) = http_get(([127, 0, 0, 1], p.metrics).into(), "/metrics").await;
    assert_eq!(status, 200);
    sample(
        &body,
        "pgheal_cancel_requests_total",
        &format!("result=\"{result}\""),
    )
    .unwrap_or(0.0)
}

/// A CancelRequest with any process id and key, sent to `port`; waits for pgheal to close it.
async fn raw_cancel(port: u16, pid: i32, key: &[u8]) {
    let mut packet = Vec::new();
    packet.extend_from_slice(&(12 + key.len() as i32).to_be_bytes());
    packet.extend_from_slice(&80_877_102i32.to_be_bytes());
    packet.extend_from_slice(&pid.to_be_bytes());
    packet.extend_from_slice(key);
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(&packet).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_to_another_instance_of_the_fleet_cancels_the_query() {
    let pg = start_pg();
    let dir = Dir::new("peers");
    let ports = [free_port(), free_port(), free_port()];
    let mut fleet = Vec::new();
    for id in 1..=3 {
        fleet.push(instance(&dir, pg.port(), &ports, id).await);
    }
    let url = format!("postgres://{USER}@127.0.0.1:{}/{DB}", ports[0]);
    let client = common::connect(&url).await;
    let token = client.cancel_token();

    // A wrong secret with the first instance's id, sent to the second: forwarded over TCP,
    // matches nothing, the query finishes by itself.
    // (peer id 1 in bytes 1 and 2 of the process id, low byte first; TTL 3.)
    let pid = i32::from_be_bytes([0x11, 1, 0, 0x22]);
    let key = [1u8, 2, 3, 0x13];
    let slow = client.query_one("SELECT pg_sleep(1.5)::text", &[]);
    let wrong = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        raw_cancel(ports[1], pid, &key).await;
    };
    let (row, ()) = tokio::join!(slow, wrong);
    row.expect("a wrong key cancelled nothing");
    assert_eq!(cancels(&fleet[1], "to_peer").await, 1.0);
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            cancels(&fleet[0], "unknown").await == 1.0
        })
        .await,
        "the first instance got the forwarded request and found no such key"
    );

    // The real key, sent to the third instance: forwarded to the first over its Unix socket,
    // which cancels.
    let long = client.query_one("SELECT pg_sleep(30)::text", &[]);
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = TcpStream::connect(("127.0.0.1", ports[2])).await.unwrap();
        token
            .cancel_query_raw(s, tokio_postgres::NoTls)
            .await
            .expect("send the cancel request to the third instance");
    };
    let (result, ()) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(long, cancel)
    })
    .await
    .expect("the cancelled query ended within 20 s");
    let err = result.expect_err("the query was cancelled");
    assert_eq!(common::sqlstate(&err).as_deref(), Some("57014"), "{err}");
    assert_eq!(cancels(&fleet[2], "to_peer").await, 1.0);
    assert!(
        common::eventually(Duration::from_secs(5), || async {
            cancels(&fleet[0], "forwarded").await >= 1.0
        })
        .await
    );
    // The session goes on.
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);

    // An instance that is not in [peers] (id 9): dropped, not forwarded anywhere.
    raw_cancel(ports[1], i32::from_be_bytes([0x11, 9, 0, 0x22]), &key).await;
    assert_eq!(cancels(&fleet[1], "unknown_peer").await, 1.0);
    // TTL exhausted (the low bits of the last byte are 0): dropped.
    raw_cancel(ports[1], pid, &[1, 2, 3, 0x10]).await;
    assert_eq!(cancels(&fleet[1], "ttl_exhausted").await, 1.0);

    drop(client);
    drop(fleet);
}
