//! Contracts learned on one server connection, used on another that has not seen the schema
//! change (transaction pooling). A migration made straight on the server (pgheal sees no DDL,
//! so the schema epoch stays) leaves each server connection with the shape it last described;
//! a client that prepares after the migration gets the new shape as its contract on a fresh
//! connection. On a connection still holding the old shape, that contract is newer than what
//! the connection recorded: the record is stale, not the contract, and the statement must be
//! re-prepared there (as PostgreSQL itself would re-plan it), not refused. The soak test found
//! this: readers got `0A000` ("column ... is gone") right after the first change of an object
//! that only ever gains columns.

use crate::common;
use crate::txn_support;

use common::drivers::heal_counters;
use common::wire::*;
use common::*;
use pgheal::heal::Outcome;
use txn_support::*;
// The orders table's rows, columns and statement runs, as the transaction-pooling heal tests have them.
use crate::txn_heal::{expect_run, new_columns, new_row, old_columns, old_row, run, setup};

const SQL: &str = "SELECT * FROM orders WHERE id = $1";
const MIGRATION: &str = "ALTER TABLE orders ADD COLUMN discount_code varchar(50);
                         UPDATE orders SET discount_code = 'X' || id";

/// A prepares (and runs) on connection 1 before the migration; B prepares the same text after
/// it on connection 2, where it is new: B's contract has four columns. B then runs on
/// connection 1, which still records three: it must get its four columns, with or without
/// Describe, and A keeps its three on both connections. Nothing is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn a_contract_newer_than_the_connections_shape_is_kept() {
    let (pg, proxy) = setup().await;
    let mut router = Router::new(&proxy).await;

    let mut a = wire(&proxy).await;
    let mut frames = vec![parse("s1", SQL)];
    frames.extend(run("s1", 1));
    let (p1, got) = with_pid(&mut a, &frames).await;
    let mut expected = vec![Msg::ParseComplete];
    expected.extend(expect_run(old_columns(), old_row(1)));
    assert_eq!(got, expected);

    admin(&pg, MIGRATION);

    let p2 = router.other(p1);
    router.route_to(p2).await;
    let mut b = wire(&proxy).await;
    let (ran_on, got) = with_pid(&mut b, &[parse("s1", SQL), describe_stmt("s1")]).await;
    assert_eq!(ran_on, p2);
    assert_eq!(
        got,
        vec![
            Msg::ParseComplete,
            Msg::ParameterDescription,
            Msg::RowDescription(new_columns()),
            Msg::Ready('I'),
        ]
    );

    // B on connection 1, which prepared the statement before the migration.
    router.route_to(p1).await;
    let (ran_on, got) = with_pid(&mut b, &run("s1", 2)).await;
    assert_eq!(ran_on, p1);
    assert_eq!(
        got,
        expect_run(new_columns(), new_row(2)),
        "B on the connection that has not seen the migration; {}",
        heal_counters(&proxy)
    );
    for (pid, id) in [(p1, 1), (p2, 2), (p1, 2), (p2, 1)] {
        router.route_to(pid).await;
        let got = bind_execute(&mut b, "s1", &[&id.to_string()]).await;
        assert_eq!(rows(&got), vec![new_row(id)], "B on {pid}: {got:?}");
        router.route_to(pid).await;
        let (ran_on, got) = with_pid(&mut a, &run("s1", id)).await;
        assert_eq!(ran_on, pid);
        assert_eq!(
            got,
            expect_run(old_columns(), old_row(id)),
            "A on {pid}; {}",
            heal_counters(&proxy)
        );
    }
    router.release().await;
    assert_eq!(
        heal_count(&proxy, Outcome::Refused),
        0,
        "{}",
        heal_counters(&proxy)
    );
}
