//! Every repair path of the heal engine, alone, without PostgreSQL: one test per path, each
//! asserting the exact sequence the server receives (the probe, the re-Parse, the replayed
//! Bind/Execute) and the exact sequence the client receives (no `0A000`, rows in the shape the
//! client was told, one ReadyForQuery per Sync). The server's answers are scripted as
//! PostgreSQL sends them; the same paths against real PostgreSQL are in tests/it/heal_wire.rs,
//! txn_heal.rs, savepoint_guard.rs and pipeline_errors.rs, which these mirror.
//!
//! The schema of every test: `orders(id int4, total numeric, note text)`; the migration adds
//! `discount_code text` at the end, so a statement prepared before it is stale, and its rows are
//! projected back onto the three columns the client was told of.

use std::sync::Arc;

use pgheal::heal::{Outcome, RelayConfig, SavepointGuard};
use pgheal::protocol::backend::TxStatus;
use pgheal::statements::StatementNames;

use crate::common::engine_kit::*;

const INSERT: &str = "INSERT INTO audit(msg) VALUES ('x')";

/// The lone stale Bind: swallowed error, probe, re-prepare, replay; the client gets its rows in
/// the old shape.
#[test]
fn a_lone_stale_bind_is_healed_and_projected() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    assert_eq!(
        k.client_briefs(&[bind("s1"), execute(), sync()]),
        lines(&["B s1", "E", "S"])
    );
    // PostgreSQL: the Bind fails, the Execute is skipped, the Sync answered.
    assert_eq!(k.server_briefs(&[cached_plan(), ready_idle()]), lines(&[]));
    assert_eq!(briefs(&k.server_received()), probe(SQL));
    assert_eq!(
        k.server_briefs(&probe_answers(&new_cols(), TxStatus::Idle)),
        lines(&[])
    );
    assert_eq!(briefs(&k.server_received()), reprepare("s1", SQL));
    assert_eq!(
        k.server_briefs(&reprepare_answers(&new_cols(), TxStatus::Idle)),
        lines(&[])
    );
    assert_eq!(
        briefs(&k.server_received()),
        lines(&["B s1", "E", "S"]),
        "the batch is replayed"
    );
    assert_eq!(
        k.server_briefs(&[
            bind_complete(),
            new_row(),
            complete("SELECT 1"),
            ready_idle()
        ]),
        lines(&["2", OLD_ROW, "C SELECT 1", "Z I"])
    );
    assert_eq!(outcomes(&mut k), vec![Outcome::Projected]);
    k.assert_settled();
}

/// The Executes of the INSERT among `sent`.
fn insert_executes(sent: &[String]) -> usize {
    sent.windows(2)
        .filter(|w| w[0] == "B ins" && w[1] == "E")
        .count()
}

/// A write pipelined before the stale statement: the server rolls it back with the failed
/// implicit transaction, the replay runs it again, once; the client is told of it once.
#[test]
fn a_pipelined_write_before_the_stale_statement_runs_exactly_once() {
    let mut k = Kit::session();
    prepared(&mut k, "ins", INSERT, None);
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    let first = k.client_briefs(&[bind("ins"), execute(), bind("s1"), execute(), sync()]);
    assert_eq!(first, lines(&["B ins", "E", "B s1", "E", "S"]));
    // The INSERT ran, then the Bind failed: the implicit transaction (and the INSERT with it)
    // is rolled back. Its "INSERT 0 1" was held back, not shown to the client.
    assert_eq!(
        k.server_briefs(&[
            bind_complete(),
            complete("INSERT 0 1"),
            cached_plan(),
            ready_idle()
        ]),
        lines(&[])
    );
    probe_and_reprepare(&mut k, TxStatus::Idle);
    let replay = briefs(&k.server_received());
    assert_eq!(replay, lines(&["B ins", "E", "B s1", "E", "S"]));
    assert_eq!(
        k.server_briefs(&[
            bind_complete(),
            complete("INSERT 0 1"),
            bind_complete(),
            new_row(),
            complete("SELECT 1"),
            ready_idle()
        ]),
        lines(&["2", "C INSERT 0 1", "2", OLD_ROW, "C SELECT 1", "Z I"])
    );
    // Two Executes reached the server: the first in the transaction the error rolled back,
    // the second in the one that committed.
    assert_eq!((insert_executes(&first), insert_executes(&replay)), (1, 1));
    k.assert_settled();
}

/// Write safety: once the client has been told "INSERT 0 1" (a Flush segment), the batch is
/// never replayed: the error reaches the client as PostgreSQL sent it, the INSERT is sent once.
#[test]
fn a_write_already_reported_to_the_client_is_never_replayed() {
    let mut k = Kit::session();
    prepared(&mut k, "ins", INSERT, None);
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    let mut sent = k.client_briefs(&[bind("ins"), execute(), flush()]);
    assert_eq!(
        k.server_briefs(&[bind_complete(), complete("INSERT 0 1")]),
        lines(&["2", "C INSERT 0 1"])
    );
    sent.extend(k.client_briefs(&[bind("s1"), execute(), sync()]));
    assert_eq!(
        k.server_briefs(&[cached_plan(), ready_idle()]),
        lines(&["E 0A000", "Z I"])
    );
    sent.extend(briefs(&k.server_received()));
    assert_eq!(sent, lines(&["B ins", "E", "H", "B s1", "E", "S"]));
    assert_eq!(insert_executes(&sent), 1);
    assert_eq!(outcomes(&mut k), vec![Outcome::Refused]);
    k.assert_settled();
}

/// Describe 'S' of a stale statement: PostgreSQL sends ParameterDescription, then the error.
/// Healed, the client gets the description in its contract's terms.
#[test]
fn a_stale_describe_statement_is_healed() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    assert_eq!(
        k.client_briefs(&[describe_stmt("s1"), sync()]),
        lines(&["DS s1", "S"])
    );
    assert_eq!(
        k.server_briefs(&[param_desc(), cached_plan(), ready_idle()]),
        lines(&[]),
        "the ParameterDescription is held back: the replay sends it again"
    );
    probe_and_reprepare(&mut k, TxStatus::Idle);
    assert_eq!(briefs(&k.server_received()), lines(&["DS s1", "S"]));
    assert_eq!(
        k.server_briefs(&[param_desc(), row_desc(&new_cols()), ready_idle()]),
        lines(&["t", "T id,total,note", "Z I"])
    );
    assert_eq!(outcomes(&mut k), vec![Outcome::Projected]);
    k.assert_settled();
}

/// A Flush-terminated segment (asyncpg): no Sync follows the error, so pgheal sends one to end
/// the failed implicit transaction; the rows arrive before the client sends any Sync.
#[test]
fn a_stale_bind_in_a_flush_segment_is_healed_before_any_sync() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    assert_eq!(
        k.client_briefs(&[bind("s1"), execute(), flush()]),
        lines(&["B s1", "E", "H"])
    );
    assert_eq!(k.server_briefs(&[cached_plan()]), lines(&[]));
    assert_eq!(
        briefs(&k.server_received()),
        lines(&["S"]),
        "pgheal's own Sync"
    );
    k.server(&[ready_idle()]);
    probe_and_reprepare(&mut k, TxStatus::Idle);
    assert_eq!(briefs(&k.server_received()), lines(&["B s1", "E", "H"]));
    assert_eq!(
        k.server_briefs(&[bind_complete(), new_row(), complete("SELECT 1")]),
        lines(&["2", OLD_ROW, "C SELECT 1"])
    );
    // The client's own Sync later: one ReadyForQuery, for it.
    assert_eq!(k.client_briefs(&[sync()]), lines(&["S"]));
    assert_eq!(k.server_briefs(&[ready_idle()]), lines(&["Z I"]));
    assert_eq!(outcomes(&mut k), vec![Outcome::Projected]);
    k.assert_settled();
}

/// SQL-level `EXECUTE` of a `PREPARE`d statement: DEALLOCATE and PREPARE again, then replay.
/// The simple protocol describes every result, so the client gets the new shape.
#[test]
fn a_stale_sql_level_execute_is_healed() {
    let mut k = Kit::session();
    let prepare = "PREPARE q AS SELECT * FROM orders WHERE id = 1";
    assert_eq!(
        k.client_briefs(&[query(prepare)]),
        lines(&[&format!("Q {prepare}")])
    );
    assert_eq!(
        k.server_briefs(&[complete("PREPARE"), ready_idle()]),
        lines(&["C PREPARE", "Z I"])
    );
    assert_eq!(
        k.client_briefs(&[query("EXECUTE q")]),
        lines(&["Q EXECUTE q"])
    );
    assert_eq!(k.server_briefs(&[cached_plan(), ready_idle()]), lines(&[]));
    assert_eq!(
        briefs(&k.server_received()),
        lines(&[&format!("Q DEALLOCATE \"q\"; {prepare};")])
    );
    k.server(&[complete("DEALLOCATE"), complete("PREPARE"), ready_idle()]);
    assert_eq!(briefs(&k.server_received()), lines(&["Q EXECUTE q"]));
    assert_eq!(
        k.server_briefs(&[
            row_desc(&new_cols()),
            new_row(),
            complete("SELECT 1"),
            ready_idle()
        ]),
        lines(&[
            "T id,total,note,discount_code",
            "D 1|9.50|first|NULL",
            "C SELECT 1",
            "Z I"
        ])
    );
    assert_eq!(outcomes(&mut k), vec![Outcome::Healed]);
    k.assert_settled();
}

/// Refusal: the contract cannot be kept (a column the client reads changed type). After the
/// probe, the batch is replayed with healing off and the client gets PostgreSQL's own error;
/// the statement is not re-prepared behind the client's back.
#[test]
fn a_broken_contract_is_refused_with_the_servers_own_error() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    let retyped = vec![
        col("id", 1, INT4),
        col("total", 2, TEXT),
        col("note", 3, TEXT),
    ];
    k.client(&[bind("s1"), execute(), sync()]);
    assert_eq!(k.server_briefs(&[cached_plan(), ready_idle()]), lines(&[]));
    assert_eq!(briefs(&k.server_received()), probe(SQL));
    k.server(&probe_answers(&retyped, TxStatus::Idle));
    assert_eq!(
        briefs(&k.server_received()),
        lines(&["B s1", "E", "S"]),
        "replayed without re-preparing"
    );
    assert_eq!(
        k.server_briefs(&[cached_plan(), ready_idle()]),
        lines(&["E 0A000", "Z I"])
    );
    let events = k.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].outcome, Outcome::Refused);
    assert!(events[0].detail.contains("total"), "{}", events[0].detail);
    k.assert_settled();
    // The next use: the statement is re-prepared before its Bind (the stale plan raised the
    // schema epoch), its shape still breaks the contract, and the Bind is failed by pgheal with
    // the same error, through a Parse bound to fail so the server skips to Sync.
    assert_eq!(
        k.client_briefs(&[bind("s1"), execute(), sync()]),
        lines(&["CS s1", &format!("P s1 {SQL}"), "DS s1", "H"])
    );
    k.server(&[
        close_complete(),
        parse_complete(),
        param_desc(),
        row_desc(&retyped),
    ]);
    assert_eq!(
        briefs(&k.server_received()),
        lines(&["P  pgheal: contract cannot be kept", "E", "S"])
    );
    assert_eq!(
        k.server_briefs(&[error("42601"), ready_idle()]),
        lines(&["E 0A000", "Z I"])
    );
    assert_eq!(outcomes(&mut k), vec![Outcome::Refused]);
    k.assert_settled();
}

/// The savepoint guard (inside a transaction block): the Bind is bracketed by SAVEPOINT and
/// RELEASE; when it meets the stale plan (a migration committed while it waited for a lock),
/// pgheal rolls back to the savepoint, re-prepares, and replays from the Bind. The client's
/// transaction survives and it never sees the error.
#[test]
fn a_stale_bind_behind_the_savepoint_guard_is_healed_in_the_transaction() {
    let mut k = Kit::session_with(RelayConfig {
        savepoint_guard: SavepointGuard::Always,
        ..RelayConfig::default()
    });
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    k.client(&[query("BEGIN")]);
    assert_eq!(
        k.server_briefs(&[complete("BEGIN"), ready_in_block()]),
        lines(&["C BEGIN", "Z T"])
    );
    let bracket = |which: &str| {
        lines(&[
            &format!("B pgheal_guard_{which}>pgheal_guard"),
            "E pgheal_guard",
            "CP pgheal_guard",
        ])
    };
    let mut expected = lines(&[
        "CS pgheal_guard_savepoint",
        "P pgheal_guard_savepoint SAVEPOINT pgheal_guard",
        "CS pgheal_guard_release",
        "P pgheal_guard_release RELEASE SAVEPOINT pgheal_guard",
    ]);
    expected.extend(bracket("savepoint"));
    expected.push("B s1".into());
    expected.extend(bracket("release"));
    expected.extend(lines(&["E", "S"]));
    assert_eq!(k.client_briefs(&[bind("s1"), execute(), sync()]), expected);
    // The savepoint is set; the Bind fails; the rest is skipped; the block is failed.
    assert_eq!(
        k.server_briefs(&[
            close_complete(),
            parse_complete(),
            close_complete(),
            parse_complete(),
            bind_complete(),
            complete("SAVEPOINT"),
            close_complete(),
            cached_plan(),
            ready(TxStatus::Failed),
        ]),
        lines(&[])
    );
    assert_eq!(
        briefs(&k.server_received()),
        lines(&["Q ROLLBACK TO SAVEPOINT pgheal_guard"])
    );
    k.server(&[complete("ROLLBACK"), ready_in_block()]);
    probe_and_reprepare(&mut k, TxStatus::InTransaction);
    let mut replay =
        lines(&["Q ROLLBACK TO SAVEPOINT pgheal_guard; RELEASE SAVEPOINT pgheal_guard"]);
    replay.extend(bracket("savepoint"));
    replay.push("B s1".into());
    replay.extend(bracket("release"));
    replay.extend(lines(&["E", "S"]));
    assert_eq!(briefs(&k.server_received()), replay);
    assert_eq!(
        k.server_briefs(&[
            complete("ROLLBACK"),
            complete("RELEASE"),
            ready_in_block(),
            bind_complete(),
            complete("SAVEPOINT"),
            close_complete(),
            bind_complete(),
            bind_complete(),
            complete("RELEASE"),
            close_complete(),
            new_row(),
            complete("SELECT 1"),
            ready_in_block(),
        ]),
        lines(&["2", OLD_ROW, "C SELECT 1", "Z T"])
    );
    assert_eq!(outcomes(&mut k), vec![Outcome::Projected]);
    k.assert_settled();
    k.client(&[query("COMMIT")]);
    assert_eq!(
        k.server_briefs(&[complete("COMMIT"), ready_idle()]),
        lines(&["C COMMIT", "Z I"])
    );
}

/// Proactive re-prepare (the schema epoch): pgheal learned of the schema change before the
/// Bind, so inside a transaction block it re-prepares the statement first and holds the
/// client's messages until the new shape is known. No error happens at all.
#[test]
fn a_statement_from_an_older_schema_epoch_is_reprepared_before_its_bind() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    k.client(&[query("BEGIN")]);
    k.server(&[complete("BEGIN"), ready_in_block()]);
    // E.g. DDL committed through pgheal, or the schema watch's NOTIFY.
    k.epoch.bump("migration");
    bind_after_reprepare(&mut k, TxStatus::InTransaction);
}

/// Transaction pooling, lazy prepare: the client's statement was prepared on one server
/// connection; on another, pgheal prepares it (under the pool-wide name) in the same pipeline as
/// the client's Bind. A migration happened in between: the new shape is learned from that
/// Describe and the rows are projected onto the client's contract.
#[test]
fn a_lazy_prepare_on_another_server_connection_keeps_the_contract() {
    let names = Arc::new(StatementNames::default());
    let mut k = Kit::pooled(names);
    prepared_pooled(&mut k, &old_cols());
    // The migration, unseen by pgheal; the client's next transaction runs elsewhere.
    k.new_server_connection();
    assert_eq!(
        k.client_briefs(&[bind("s1"), execute(), sync()]),
        lines(&[
            "CS pgheal_1",
            &format!("P pgheal_1 {SQL}"),
            "DS pgheal_1",
            "B pgheal_1",
            "E",
            "S"
        ])
    );
    assert_eq!(
        k.server_briefs(&[
            close_complete(),
            parse_complete(),
            param_desc(),
            row_desc(&new_cols()),
            bind_complete(),
            new_row(),
            complete("SELECT 1"),
            ready_idle(),
        ]),
        lines(&["2", OLD_ROW, "C SELECT 1", "Z I"])
    );
    assert_eq!(outcomes(&mut k), vec![Outcome::Projected]);
    k.assert_settled();
}

/// Error, skip to Sync: an ordinary error before a stale statement in the same batch. The
/// server skips the stale Bind (it never runs, so there is nothing to heal): the client gets the
/// first error and one ReadyForQuery, pgheal sends no probe, and the next batch heals.
#[test]
fn an_error_before_a_stale_bind_skips_it_to_sync_without_a_heal() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    assert_eq!(
        k.client_briefs(
            &[
                division_by_zero().as_slice(),
                &[bind("s1"), execute(), sync()]
            ]
            .concat()
        ),
        lines(&["P  SELECT 1/0", "B ", "E", "B s1", "E", "S"])
    );
    division_by_zero_answers(&mut k);
    assert_eq!(outcomes(&mut k), vec![]);
    k.assert_settled();
    // The stale statement's own batch is healed as usual.
    k.client(&[bind("s1"), execute(), sync()]);
    k.server(&[cached_plan(), ready_idle()]);
    assert_eq!(briefs(&k.server_received()), probe(SQL));
    k.server(&probe_answers(&new_cols(), TxStatus::Idle));
    k.server(&reprepare_answers(&new_cols(), TxStatus::Idle));
    assert_eq!(
        briefs(&k.server_received()),
        [reprepare("s1", SQL), lines(&["B s1", "E", "S"])].concat()
    );
    assert_eq!(
        k.server_briefs(&[
            bind_complete(),
            new_row(),
            complete("SELECT 1"),
            ready_idle()
        ]),
        lines(&["2", OLD_ROW, "C SELECT 1", "Z I"])
    );
    k.assert_settled();
}

/// Refusal when the replay fails earlier than the original batch did: a Bind the client was
/// already told succeeded (a Flush segment) meets the stale plan in the replay. The client still
/// gets the error, then its ReadyForQuery (found by tests/it/engine_property.rs: the error was
/// taken for a response the client already had, and swallowed).
#[test]
fn a_refused_replay_failing_at_an_answered_bind_still_reports_the_error() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    k.client(&[bind("s1"), flush()]);
    assert_eq!(k.server_briefs(&[bind_complete()]), lines(&["2"]));
    // A migration drops a column the client reads.
    let dropped = &old_cols()[..2];
    k.client(&[bind("s1"), execute(), sync()]);
    assert_eq!(k.server_briefs(&[cached_plan(), ready_idle()]), lines(&[]));
    assert_eq!(briefs(&k.server_received()), probe(SQL));
    k.server(&probe_answers(dropped, TxStatus::Idle));
    assert_eq!(
        briefs(&k.server_received()),
        lines(&["B s1", "H", "B s1", "E", "S"]),
        "replayed with healing off"
    );
    // Now the first Bind fails: the server skips the rest.
    assert_eq!(
        k.server_briefs(&[cached_plan(), ready_idle()]),
        lines(&["E 0A000", "Z I"])
    );
    assert_eq!(outcomes(&mut k), vec![Outcome::Refused]);
    k.assert_settled();
}
