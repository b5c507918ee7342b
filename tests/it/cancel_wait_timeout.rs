//! `cancel_wait_timeout` bounds how long pgheal spends forwarding a cancel request. The other
//! end here is a peer that takes no connection: a listener with a backlog of 1 whose queue is
//! full, so a connect to it hangs (the kernel drops the SYNs). With `cancel_wait_timeout = 1`
//! pgheal gives up after a second, counts the request and closes the requester's connection;
//! without a limit it would wait for TCP's own retries (minutes).

use crate::common;

use std::time::Duration;

use common::certs::Dir;
use common::{start_pg, DB, USER};
use pgheal::config::cli::RunArgs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_that_cannot_be_forwarded_gives_up_after_cancel_wait_timeout() {
    let pg = start_pg();
    // A peer that accepts nothing: backlog 1, its queue filled by connections never accepted.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let peer = socket.listen(1).unwrap();
    let peer_port = peer.local_addr().unwrap().port();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(300),
            TcpStream::connect(("127.0.0.1", peer_port)),
        )
        .await
        {
            fillers.push(s);
        }
    }
    assert!(
        tokio::time::timeout(
            Duration::from_millis(500),
            TcpStream::connect(("127.0.0.1", peer_port))
        )
        .await
        .is_err(),
        "the peer's queue is full: a connect to it hangs"
    );

    let dir = Dir::new("cancel-wait");
    let ini = format!(
        "[databases]\n{DB} = host=127.0.0.1 port={} dbname={DB} user={USER} password={}\n\
         [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {}\nunix_socket_dir =\n\
         auth_type = trust\npeer_id = 1\ncancel_wait_timeout = 1\n\
         [peers]\n2 = host=127.0.0.1 port={peer_port}\n",
        pg.port(),
        common::PASSWORD,
        common::free_port()
    );
    let path = dir.0.join("pgbouncer.ini");
    std::fs::write(&path, ini).unwrap();
    let args = RunArgs {
        config: Some(path),
        metrics_listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    };
    let cfg = pgheal::config::load::load(&args).expect("the ini loads");
    let p = pgheal::proxy::start(cfg).await.expect("start pgheal");

    // A cancel key naming peer 2 (bytes 1-2 of the process id), TTL 3.
    let mut packet = Vec::new();
    packet.extend_from_slice(&16i32.to_be_bytes());
    packet.extend_from_slice(&80_877_102i32.to_be_bytes());
    packet.extend_from_slice(&[0x11, 2, 0, 0x22]);
    packet.extend_from_slice(&[1, 2, 3, 0x13]);
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(&packet).await.unwrap();
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut sink))
        .await
        .expect("pgheal gave up forwarding and closed the cancel connection within 10 s")
        .unwrap();
    assert_eq!(
        p.metrics
            .cancel_requests
            .with_label_values(&["to_peer"])
            .get(),
        1,
        "the request was handled (forwarding given up) and counted"
    );
    drop(fillers);
    common::console::stop_now(p).await;
}
