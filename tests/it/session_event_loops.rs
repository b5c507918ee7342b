//! Event loops (`--threads`): sessions are spread over the loops, and a pooled server
//! connection moves to the loop of whichever session checks it out, in both pool modes, with
//! its prepared statements, its buffered state and healing intact.

use crate::common;

use std::time::Duration;

use common::*;
use pgheal::heal::Outcome;

fn loop_sessions(proxy: &pgheal::proxy::ProxyHandle) -> Vec<i64> {
    (0..2)
        .map(|n| {
            proxy
                .metrics
                .event_loop_sessions
                .with_label_values(&[&n.to_string()])
                .get()
        })
        .collect()
}

fn moves(proxy: &pgheal::proxy::ProxyHandle) -> u64 {
    proxy.metrics.server_connection_moves.get()
}

/// Session pooling, one server connection, two loops: the second client lands on the other
/// loop, waits for the connection, and gets it (same backend) once the first client leaves.
/// Its prepared statement is healed after a migration on the moved connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_connection_moves_to_the_waiting_clients_loop() {
    let pg = start_pg_with_orders("");
    let proxy = start_proxy(&pg, |a| {
        a.threads = Some(2);
        a.pool_size = Some(1);
    })
    .await;
    let url = proxy_url(&proxy);

    let first = connect(&url).await;
    let pid = backend_pid(&first).await;
    assert_eq!(loop_sessions(&proxy), vec![1, 0]);

    // The second client's login waits for the only server connection.
    let second = tokio::spawn({
        let url = url.clone();
        async move { connect(&url).await }
    });
    assert!(
        eventually(Duration::from_secs(5), || async {
            loop_sessions(&proxy) == vec![1, 1]
        })
        .await,
        "the second client went to the other loop: {:?}",
        loop_sessions(&proxy)
    );
    assert_eq!(moves(&proxy), 0);
    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("the second client got the connection")
        .expect("task");
    assert_eq!(
        backend_pid(&second).await,
        pid,
        "the same server connection"
    );
    assert_eq!(moves(&proxy), 1, "it moved to the second client's loop");
    assert_eq!(loop_sessions(&proxy), vec![0, 1]);

    let stmt = second
        .prepare("SELECT * FROM orders WHERE id = $1")
        .await
        .unwrap();
    let row = second.query_one(&stmt, &[&1i32]).await.unwrap();
    assert_eq!(row.get::<_, &str>("note"), "first");
    // A value far larger than one read: the moved socket streams it whole.
    let big: String = second
        .query_one("SELECT repeat('x', 3000000)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(big.len(), 3_000_000);

    admin(
        &pg,
        "ALTER TABLE orders ADD COLUMN region text DEFAULT 'eu'",
    );
    let row = second
        .query_one(&stmt, &[&2i32])
        .await
        .expect("healed on the moved connection");
    assert_eq!(row.len(), 3, "rows keep the shape the client prepared");
    assert_eq!(row.get::<_, i32>("id"), 2);
    assert_eq!(row.get::<_, &str>("note"), "second");
    assert_eq!(heal_count(&proxy, Outcome::Projected), 1);
}

/// Transaction pooling, one server connection, two clients on two loops taking turns: the
/// connection moves back and forth with every turn, its statements stay prepared (pgheal keeps
/// the record with the connection), and writes land exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_mode_connection_follows_the_clients_between_loops() {
    let pg = start_pg_with_orders(
        "CREATE TABLE ledger(id serial PRIMARY KEY, who text);
         ALTER TABLE ledger OWNER TO app;",
    );
    let proxy = start_proxy(&pg, |a| {
        a.threads = Some(2);
        a.pool_size = Some(1);
        a.pool_mode = Some("transaction".into());
    })
    .await;
    let url = proxy_url(&proxy);
    let a = connect(&url).await;
    let b = connect(&url).await;
    assert_eq!(loop_sessions(&proxy), vec![1, 1]);

    let read = "SELECT * FROM orders WHERE id = $1";
    let write = "INSERT INTO ledger(who) VALUES ($1) RETURNING id";
    let (ra, wa) = (
        a.prepare(read).await.unwrap(),
        a.prepare(write).await.unwrap(),
    );
    let (rb, wb) = (
        b.prepare(read).await.unwrap(),
        b.prepare(write).await.unwrap(),
    );
    let mut pids = std::collections::HashSet::new();
    for turn in 0..20 {
        let (client, r, w, who) = if turn % 2 == 0 {
            (&a, &ra, &wa, "a")
        } else {
            (&b, &rb, &wb, "b")
        };
        if turn == 10 {
            admin(
                &pg,
                "ALTER TABLE orders ADD COLUMN region text DEFAULT 'eu'",
            );
        }
        let row = client.query_one(r, &[&1i32]).await.expect("read");
        assert_eq!(row.len(), 3, "turn {turn}: rows keep the prepared shape");
        assert_eq!(row.get::<_, &str>("note"), "first");
        client.query_one(w, &[&who]).await.expect("write");
        pids.insert(backend_pid(client).await);
    }
    assert_eq!(pids.len(), 1, "one server connection served both clients");
    assert!(
        moves(&proxy) >= 19,
        "the connection moved at (nearly) every turn: {}",
        moves(&proxy)
    );
    let admin_client = admin_client(&pg).await;
    let counts: Vec<(String, i64)> = admin_client
        .query(
            "SELECT who, count(*) FROM ledger GROUP BY who ORDER BY who",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(counts, vec![("a".into(), 10), ("b".into(), 10)]);
    assert!(heal_count(&proxy, Outcome::Projected) + heal_count(&proxy, Outcome::Healed) >= 1);
}
