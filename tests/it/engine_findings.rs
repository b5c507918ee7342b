//! The heal engine's findings, one scripted test each: the bugs that the engine property test
//! (tests/it/engine_property.rs) and the soak (tests/it/txn_contracts.rs) found, fixed in
//! commit 7361efa, written down as exact exchanges so that each stays fixed. Like
//! tests/it/engine_repairs.rs (and with its kit, tests/it/common/engine_kit.rs), each test
//! asserts the exact sequence the server receives and the exact sequence the client receives;
//! each doc comment says what the engine did before the fix.
//!
//! The schema is engine_repairs's: `orders(id int4, total numeric, note text)`. The migrations
//! here either add `discount_code text` at the end (the contract is kept by projection) or drop
//! `note` (a column the client was told of: the contract cannot be kept, and only a client that
//! asks for the new shape in the same batch, before its rows, may adopt it; any other gets
//! PostgreSQL's own `0A000`).

use std::sync::Arc;

use pgheal::heal::Outcome;
use pgheal::protocol::backend::{Field, TxStatus};
use pgheal::protocol::Frame;
use pgheal::statements::StatementNames;

use crate::common::engine_kit::*;

/// A second row-returning statement.
const COUNT: &str = "SELECT count(*)::int4 AS n FROM orders";

fn count_cols() -> Vec<Field> {
    vec![col("n", 0, INT4)]
}

/// After a migration that dropped `note`, a column the client was told of.
fn dropped_cols() -> Vec<Field> {
    old_cols()[..2].to_vec()
}

/// Transaction pooling: the client runs s1 on a connection where `pgheal_1` is prepared in a
/// shape that keeps its contract. The Bind goes straight to it, and the server's `row` reaches
/// the client in the contract's three columns.
fn runs_as_prepared(k: &mut Kit, row: Frame) {
    assert_eq!(
        k.client_briefs(&[bind("s1"), execute(), sync()]),
        lines(&["B pgheal_1", "E", "S"])
    );
    assert_eq!(
        k.server_briefs(&[bind_complete(), row, complete("SELECT 1"), ready_idle()]),
        lines(&["2", OLD_ROW, "C SELECT 1", "Z I"])
    );
    k.assert_settled();
}

/// The heal of s1's batch after `note` was dropped: the Bind fails with the cached-plan error,
/// the probe finds the contract cannot be kept, and, the client not describing s1 in this batch
/// before its rows, the window is replayed with healing off (`replay` reaches the server, no
/// re-prepare): the client gets PostgreSQL's own `0A000` and one ReadyForQuery.
fn refused_after_note_dropped(k: &mut Kit, replay: &[&str]) {
    assert_eq!(k.server_briefs(&[cached_plan(), ready_idle()]), lines(&[]));
    assert_eq!(briefs(&k.server_received()), probe(SQL));
    assert_eq!(
        k.server_briefs(&probe_answers(&dropped_cols(), TxStatus::Idle)),
        lines(&[])
    );
    assert_eq!(
        briefs(&k.server_received()),
        lines(replay),
        "replayed with healing off, not re-prepared"
    );
    assert_eq!(
        k.server_briefs(&[cached_plan(), ready_idle()]),
        lines(&["E 0A000", "Z I"])
    );
    assert_eq!(outcomes(k), vec![Outcome::Refused]);
}

/// The client's `frames` reach the server as `batch`, `note` has been dropped, and the heal is
/// refused (see `refused_after_note_dropped`).
fn refused_batch(k: &mut Kit, frames: &[Frame], batch: &[&str]) {
    assert_eq!(k.client_briefs(frames), lines(batch));
    refused_after_note_dropped(k, batch);
    k.assert_settled();
}

/// A Describe 'S' of s1 in the NEXT batch (pipelined after this batch's Sync, so deferred until
/// its ReadyForQuery) is a question the client has not asked yet: it does not let this batch's
/// stale Bind adopt a shape without `note`. The heal is refused (`0A000`); the Describe then
/// runs in its own batch, prepared again first, and tells the client the new shape.
///
/// Before 7361efa the heal counted the deferred Describe as this batch's (it looked through
/// the waiting messages up to the first Sync, and the first of them was the Describe): it
/// adopted the new shape and re-prepared s1, and rows without `note` reached a client told of
/// three columns.
#[test]
fn a_describe_of_the_next_batch_does_not_let_a_stale_bind_adopt_a_new_shape() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    assert_eq!(
        k.client_briefs(&[bind("s1"), execute(), sync(), describe_stmt("s1"), sync()]),
        lines(&["B s1", "E", "S"]),
        "the next batch waits for this one's ReadyForQuery"
    );
    refused_after_note_dropped(&mut k, &["B s1", "E", "S"]);
    // The next batch: s1 is stale (the error raised the schema epoch), so it is prepared again
    // before the client's Describe, which tells the client the shape it will now read.
    assert_eq!(
        briefs(&k.server_received()),
        lines(&["CS s1", &format!("P s1 {SQL}"), "DS s1", "H"])
    );
    assert_eq!(
        k.server_briefs(&[
            close_complete(),
            parse_complete(),
            param_desc(),
            row_desc(&dropped_cols())
        ]),
        lines(&[])
    );
    assert_eq!(briefs(&k.server_received()), lines(&["DS s1", "S"]));
    assert_eq!(
        k.server_briefs(&[param_desc(), row_desc(&dropped_cols()), ready_idle()]),
        lines(&["t", "T id,total", "Z I"])
    );
    k.assert_settled();
}

/// The unnamed portal is bound from stale s1, then bound again from another statement before
/// the client's Describe 'P' of it: that Describe describes the other statement's portal, not
/// s1. The heal is refused (`0A000`), nothing is adopted.
///
/// Before 7361efa a portal once bound from s1 counted as s1's for the rest of the batch: the
/// Describe 'P' let the heal adopt the shape without `note` and re-prepare s1.
#[test]
fn a_describe_of_a_portal_bound_again_from_another_statement_does_not_describe_the_stale_one() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    prepared(&mut k, "s2", COUNT, Some(&count_cols()));
    refused_batch(
        &mut k,
        &[
            bind("s1"),
            bind("s2"),
            describe_portal(""),
            execute(),
            sync(),
        ],
        &["B s1", "B s2", "DP ", "E", "S"],
    );
}

/// A Describe 'S' of s1 AFTER the Execute of its portal, in the same batch: the rows would reach
/// the client before the description, so it does not let the heal adopt the shape without
/// `note`. Refused (`0A000`).
///
/// Before 7361efa any Describe of s1 in the batch counted, wherever it stood: the heal adopted
/// the new shape and the client received rows of two columns under the three it was told of.
#[test]
fn a_describe_after_the_execute_of_its_portal_does_not_let_the_rows_take_a_new_shape() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    refused_batch(
        &mut k,
        &[bind("s1"), execute(), describe_stmt("s1"), sync()],
        &["B s1", "E", "DS s1", "S"],
    );
}

/// The client's batch: an error (division by zero), then a Close of s1, which the server skips
/// up to the Sync. `sent`: what the server receives of it.
fn close_skipped_after_an_error(k: &mut Kit, sent: &[&str]) {
    assert_eq!(
        k.client_briefs(&[division_by_zero().as_slice(), &[close_stmt("s1"), sync()]].concat()),
        lines(sent)
    );
    // No CloseComplete: the Close did not run.
    division_by_zero_answers(k);
    k.assert_settled();
}

/// Session pooling: a Close of s1 that the server skips (an error earlier in the same batch)
/// closes nothing, so s1 is still the client's statement with its contract. The next batch's
/// Bind of it (a migration, unseen by pgheal, added a column meanwhile) learns its shape first
/// (the server record of s1 is uncertain after the Close) and projects the rows onto the
/// contract.
///
/// Before 7361efa the Close removed s1 from the registry when it was sent: the next Bind of
/// s1 went to the server as a statement pgheal did not know, and its rows of the new shape
/// reached the client (or a cached-plan error, unhealed).
#[test]
fn a_close_skipped_after_an_error_keeps_the_statement_and_its_contract() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    close_skipped_after_an_error(&mut k, &["P  SELECT 1/0", "B ", "E", "CS s1", "S"]);
    // A migration pgheal does not see added a column meanwhile.
    bind_after_reprepare(&mut k, TxStatus::Idle);
}

/// Transaction pooling: pgheal answers a Close of s1 itself (the server statement `pgheal_1` is
/// the pool's), after the answers before it. The server skips to Sync after an earlier error,
/// so the CloseComplete is dropped with the rest and s1 stays: the next Bind of it is bound to
/// `pgheal_1`, still prepared on this connection.
///
/// Before 7361efa s1 was removed when the Close arrived: the next Bind went to the server
/// under the client's own name `s1`, which no server connection has (`26000`).
#[test]
fn a_locally_answered_close_skipped_after_an_error_keeps_the_statement() {
    let mut k = Kit::pooled(Arc::new(StatementNames::default()));
    prepared_pooled(&mut k, &old_cols());
    close_skipped_after_an_error(&mut k, &["P  SELECT 1/0", "B ", "E", "S"]);
    runs_as_prepared(&mut k, data_row(&[Some("1"), Some("9.50"), Some("first")]));
}

/// A cached-plan error (on s2's Bind) while a proactive re-prepare of s1 (stale by the schema
/// epoch) holds the client's Describe 'S' of s1, awaiting s1's shape. The server skips the
/// re-prepare with the rest of the batch; after the repair of s2 the held Describe goes (s1
/// prepared again first), then the client's Sync: the client gets s2's rows, s1's description
/// and one ReadyForQuery.
///
/// Before 7361efa the repair left the wait for s1's shape in place although its answer would
/// never come: the Describe and the Sync stayed held for ever and the client never got its
/// ReadyForQuery.
#[test]
fn a_cached_plan_error_during_a_proactive_reprepare_releases_the_held_describe() {
    const SQL2: &str = "SELECT * FROM orders WHERE id = 2";
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    // A migration through pgheal: s1 is stale. s2 is prepared after it, and a second migration
    // that pgheal does not see makes s2's plan stale too.
    k.epoch.bump("migration");
    prepared(&mut k, "s2", SQL2, Some(&old_cols()));
    assert_eq!(
        k.client_briefs(&[bind("s2"), execute(), describe_stmt("s1"), sync()]),
        lines(&["B s2", "E", "CS s1", &format!("P s1 {SQL}"), "DS s1", "H"]),
        "the Describe of s1 and the Sync wait for s1's shape"
    );
    // The Bind fails; the server skips the re-prepare and waits for a Sync: pgheal's own.
    assert_eq!(k.server_briefs(&[cached_plan()]), lines(&[]));
    assert_eq!(briefs(&k.server_received()), lines(&["S"]));
    k.server(&[ready_idle()]);
    assert_eq!(briefs(&k.server_received()), probe(SQL2));
    k.server(&probe_answers(&new_cols(), TxStatus::Idle));
    assert_eq!(briefs(&k.server_received()), reprepare("s2", SQL2));
    k.server(&reprepare_answers(&new_cols(), TxStatus::Idle));
    // The replay of s2, then the held Describe: s1 is prepared again first.
    assert_eq!(
        briefs(&k.server_received()),
        lines(&["B s2", "E", "CS s1", &format!("P s1 {SQL}"), "DS s1", "H"])
    );
    assert_eq!(
        k.server_briefs(&[
            bind_complete(),
            new_row(),
            complete("SELECT 1"),
            close_complete(),
            parse_complete(),
            param_desc(),
            row_desc(&new_cols()),
        ]),
        lines(&["2", OLD_ROW, "C SELECT 1"])
    );
    assert_eq!(briefs(&k.server_received()), lines(&["DS s1", "S"]));
    assert_eq!(
        k.server_briefs(&[param_desc(), row_desc(&new_cols()), ready_idle()]),
        lines(&["t", "T id,total,note", "Z I"]),
        "s1 described in its contract's terms, then one ReadyForQuery for the one Sync"
    );
    assert_eq!(outcomes(&mut k), vec![Outcome::Projected]);
    k.assert_settled();
}

/// Transaction pooling, a migration pgheal does not see (the schema epoch stays): client A
/// prepares s1 on server connection 1 before it (three columns); client B prepares the same
/// text after it on connection 2, where it is new, so B's contract has four columns. B's next
/// transaction runs on connection 1, which still records three: the record is stale, not the
/// contract, so pgheal prepares `pgheal_1` again there (Close, Parse, Describe) before B's Bind,
/// and B gets its four columns. A, on connection 2 (four columns), keeps its three.
///
/// Before 7361efa only an older schema epoch made a connection's record stale: B's Bind was
/// refused against connection 1's three columns, with a made-up `0A000` (the soak's finding;
/// against real PostgreSQL: tests/it/txn_contracts.rs).
#[test]
fn a_contract_newer_than_the_connections_record_is_reprepared_there_not_refused() {
    let names = Arc::new(StatementNames::default());
    let mut a = Kit::pooled(names.clone());
    prepared_pooled(&mut a, &old_cols());
    let mut b = Kit::pooled(names);
    prepared_pooled(&mut b, &new_cols());
    // Between transactions, A and B swap server connections: B is on connection 1.
    b.swap_server_connection(&mut a.srv);
    assert_eq!(
        b.client_briefs(&[bind("s1"), execute(), sync()]),
        lines(&[
            "CS pgheal_1",
            &format!("P pgheal_1 {SQL}"),
            "DS pgheal_1",
            "H"
        ]),
        "pgheal_1 prepared again on connection 1 before B's Bind"
    );
    assert_eq!(
        b.server_briefs(&[
            close_complete(),
            parse_complete(),
            param_desc(),
            row_desc(&new_cols())
        ]),
        lines(&[])
    );
    assert_eq!(
        briefs(&b.server_received()),
        lines(&["B pgheal_1", "E", "S"])
    );
    assert_eq!(
        b.server_briefs(&[
            bind_complete(),
            new_row(),
            complete("SELECT 1"),
            ready_idle()
        ]),
        lines(&["2", "D 1|9.50|first|NULL", "C SELECT 1", "Z I"])
    );
    assert_eq!(outcomes(&mut b), vec![Outcome::Healed]);
    b.assert_settled();
    // A on connection 2, which records four columns: its rows are projected onto three.
    runs_as_prepared(&mut a, new_row());
}

/// The server skips a Close and then a Parse of the same name (an error earlier in the batch):
/// PostgreSQL still holds the old statement. Undoing the Close first and the Parse second
/// forgot both (the Close's statement could not take back a name the Parse held, then the
/// Parse's own statement went): the next Bind went out as a statement pgheal did not know.
/// Undone last first, s1 is the old statement again, with its contract.
#[test]
fn a_skipped_close_and_parse_of_one_name_leave_the_old_statement_session() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    let batch = [
        division_by_zero().as_slice(),
        &[close_stmt("s1"), parse("s1", COUNT), sync()],
    ]
    .concat();
    assert_eq!(
        k.client_briefs(&batch),
        lines(&[
            "P  SELECT 1/0",
            "B ",
            "E",
            "CS s1",
            &format!("P s1 {COUNT}"),
            "DS s1",
            "S"
        ])
    );
    division_by_zero_answers(&mut k);
    k.assert_settled();
    let s1 = k.relay.statements().by_name(b"s1").map(|s| s.sql.to_vec());
    assert_eq!(s1, Some(SQL.as_bytes().to_vec()), "s1 is the old statement");
    // What the server holds is uncertain after the skipped Close: learned again before use.
    bind_after_reprepare(&mut k, TxStatus::Idle);
}

/// As above in transaction pooling, where pgheal answers the Close itself: the Bind still goes
/// to the pool-wide name (it went out under the client's own name, which the server does not
/// have).
#[test]
fn a_skipped_close_and_parse_of_one_name_leave_the_old_statement_pooled() {
    let mut k = Kit::pooled(Arc::new(StatementNames::default()));
    prepared_pooled(&mut k, &old_cols());
    let batch = [
        division_by_zero().as_slice(),
        &[close_stmt("s1"), parse("s1", COUNT), sync()],
    ]
    .concat();
    let sent = k.client_briefs(&batch);
    assert_eq!(&sent[..3], &lines(&["P  SELECT 1/0", "B ", "E"])[..]);
    assert_eq!(sent.last().map(String::as_str), Some("S"));
    let got = k.server_briefs(&[
        parse_complete(),
        bind_complete(),
        error("22012"),
        ready_idle(),
    ]);
    assert_eq!(
        got,
        lines(&["1", "2", "E 22012", "Z I"]),
        "no answer to the skipped Close or Parse"
    );
    k.assert_settled();
    let s1 = k.relay.statements().by_name(b"s1").map(|s| s.sql.to_vec());
    assert_eq!(s1, Some(SQL.as_bytes().to_vec()), "s1 is the old statement");
    runs_as_prepared(&mut k, data_row(&[Some("1"), Some("9.50"), Some("first")]));
}

/// Transaction pooling: a Parse of a statement already on the connection is answered by
/// pgheal. When the server skips the rest of the batch (an earlier error), that Parse created
/// nothing, as PostgreSQL's own would not have: parsing the name again later succeeds (it used
/// to fail with a made-up 42P05).
#[test]
fn a_parse_answered_locally_and_skipped_creates_no_statement() {
    let mut k = Kit::pooled(Arc::new(StatementNames::default()));
    prepared_pooled(&mut k, &old_cols());
    let batch = [division_by_zero().as_slice(), &[parse("s2", SQL), sync()]].concat();
    assert_eq!(
        k.client_briefs(&batch),
        lines(&["P  SELECT 1/0", "B ", "E", "S"]),
        "pgheal_1 is on the connection: the Parse is answered here"
    );
    division_by_zero_answers(&mut k);
    k.assert_settled();
    assert!(
        k.relay.statements().id(b"s2").is_none(),
        "the skipped Parse created s2"
    );
    assert_eq!(
        k.client_briefs(&[parse("s2", SQL), sync()]),
        lines(&["S"]),
        "a Parse again, answered here again"
    );
    assert_eq!(k.server_briefs(&[ready_idle()]), lines(&["1", "Z I"]));
    assert!(k.relay.statements().id(b"s2").is_some());
}

/// Two portals bound from stale s1 in one batch, and the client describes only the first:
/// `Bind p1 s1, Bind '' s1, Describe 'P' p1, Execute '', Sync` after `note` was dropped. The
/// unnamed portal was bound before the client read any description and is never described, so
/// its rows must not take the new shape: the heal is refused (`0A000`).
///
/// Before 78cfb48 a Describe of any portal bound from s1 counted: the heal adopted the shape
/// without `note` and the unnamed portal's rows had two columns under the three the client was
/// told of (finding 14 of docs/fuzzing.md).
#[test]
fn a_describe_of_one_portal_does_not_let_another_portal_of_the_statement_take_a_new_shape() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    refused_batch(
        &mut k,
        &[
            bind_portal("p1", "s1"),
            bind("s1"),
            describe_portal("p1"),
            execute(),
            sync(),
        ],
        &["B s1>p1", "B s1", "DP p1", "E", "S"],
    );
}

/// The same with the roles swapped: `Bind p1 s1, Bind '' s1, Describe 'P' '', Execute p1,
/// Sync`. The unnamed portal is the one bound last and the one described, but p1, bound
/// earlier and never described, would return its rows in the new shape: refused (`0A000`).
///
/// Before this fix only the portal bound last was looked at: its Describe let the heal adopt
/// the shape, and p1's rows had two columns (finding 15 of docs/fuzzing.md).
#[test]
fn a_describe_of_the_last_portal_does_not_let_an_earlier_portal_take_a_new_shape() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    refused_batch(
        &mut k,
        &[
            bind_portal("p1", "s1"),
            bind("s1"),
            describe_portal(""),
            execute_portal("p1"),
            sync(),
        ],
        &["B s1>p1", "B s1", "DP ", "E p1", "S"],
    );
}

/// A batch whose stale Bind is refused also closed and parsed again another statement:
/// `Bind s1, Close s2, Parse s2 <orders>, Describe 'S' s2, Sync` after `note` was dropped. The
/// server skipped the Close and the Parse (twice: in the batch and in its refused replay), so
/// s2 is still the count. When s2 is next bound (stale now: the error raised the schema epoch),
/// it is prepared again as the count, not as the text of the Parse that never ran.
///
/// Before this fix the heal undid only the skipped Close: the Parse stayed recorded, s2 became
/// `SELECT * FROM orders` in pgheal's registry, and the client, told s2 returns `n`, got rows
/// of orders (finding 16 of docs/fuzzing.md).
#[test]
fn a_parse_skipped_in_a_refused_heal_does_not_redefine_the_statement() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    prepared(&mut k, "s2", COUNT, Some(&count_cols()));
    // pgheal describes the parsed s2 for itself too (its shape, for the contract).
    let sent = [
        "B s1",
        "CS s2",
        &format!("P s2 {SQL}"),
        "DS s2",
        "DS s2",
        "S",
    ];
    assert_eq!(
        k.client_briefs(&[
            bind("s1"),
            close_stmt("s2"),
            parse("s2", SQL),
            describe_stmt("s2"),
            sync(),
        ]),
        lines(&sent)
    );
    refused_after_note_dropped(&mut k, &sent);
    k.assert_settled();
    let sent = k.client_briefs(&[bind("s2"), execute(), sync()]);
    assert_eq!(
        sent,
        lines(&["CS s2", &format!("P s2 {COUNT}"), "DS s2", "H"]),
        "s2 is prepared again as the count it still is"
    );
}

/// A statement parsed and described in the window of a heal, its portal executed after the
/// client closed it: `Parse s1, Describe 'S' s1, Flush` (answered: three columns), then
/// `Bind s1, Flush` failing after `discount_code` was added, healed (the replay parses s1
/// again, its shape learned from the replay's own description), then `Close s1, Execute, Sync`.
/// The portal keeps the shape of its Bind: its rows are projected onto the three columns the
/// client was told, though the statement is closed when they come.
///
/// Before this fix the portal's shaping waited for its first response, and by then the Close
/// had removed the statement and its contract: the rows went out four columns wide (finding
/// 17 of docs/fuzzing.md).
#[test]
fn a_portal_bound_in_a_replay_keeps_its_projection_after_its_statement_is_closed() {
    let mut k = Kit::session();
    let parsed = [&format!("P s1 {SQL}"), "DS s1", "DS s1", "H"];
    assert_eq!(
        k.client_briefs(&[parse("s1", SQL), describe_stmt("s1"), flush()]),
        lines(&parsed)
    );
    assert_eq!(
        k.server_briefs(&[
            parse_complete(),
            param_desc(),
            row_desc(&old_cols()),
            param_desc(),
            row_desc(&old_cols()),
        ]),
        lines(&["1", "t", "T id,total,note"])
    );
    assert_eq!(
        k.client_briefs(&[bind("s1"), flush()]),
        lines(&["B s1", "H"])
    );
    // `discount_code` was added: the Bind fails; pgheal ends the batch with a Sync of its
    // own, probes, prepares s1 again, and replays the window (its Parse prepares s1 afresh).
    assert_eq!(k.server_briefs(&[cached_plan(), ready_idle()]), lines(&[]));
    let mut sync_and_probe = lines(&["S"]);
    sync_and_probe.extend(probe(SQL));
    assert_eq!(briefs(&k.server_received()), sync_and_probe);
    k.server(&probe_answers(&new_cols(), TxStatus::Idle));
    assert_eq!(briefs(&k.server_received()), reprepare("s1", SQL));
    k.server(&reprepare_answers(&new_cols(), TxStatus::Idle));
    let mut replay = lines(&["CS s1"]);
    replay.extend(lines(&parsed[..]));
    replay.extend(lines(&["B s1", "H"]));
    assert_eq!(briefs(&k.server_received()), replay);
    assert_eq!(
        k.server_briefs(&[
            close_complete(),
            parse_complete(),
            param_desc(),
            row_desc(&new_cols()),
            param_desc(),
            row_desc(&new_cols()),
            bind_complete(),
        ]),
        lines(&["2"]),
        "the replayed Parse and Describe were answered before: only the Bind's answer is new"
    );
    assert_eq!(
        k.client_briefs(&[close_stmt("s1"), execute(), sync()]),
        lines(&["CS s1", "E", "S"])
    );
    assert_eq!(
        k.server_briefs(&[
            close_complete(),
            new_row(),
            complete("SELECT 1"),
            ready_idle()
        ]),
        lines(&["3", OLD_ROW, "C SELECT 1", "Z I"]),
        "rows in the three columns the client was told, after its statement was closed"
    );
    k.assert_settled();
}

/// A window that closes and parses s1 again, described (answered through a Flush), then binds
/// it: `Close s1, Parse s1, Describe 'S' s1, Flush`, then `Bind s1, Execute, Sync` failing
/// after `discount_code` was added. The replay parses s1 afresh, and the new statement keeps
/// the contract the client was told by its Describe: the rows are projected onto three
/// columns.
///
/// Before this fix the replayed Parse created a statement with no contract, the replay's own
/// description (four columns) became its contract, and the rows went out four columns wide
/// under the three the client was told of (finding 18 of docs/fuzzing.md).
#[test]
fn a_statement_parsed_again_in_a_replay_keeps_the_contract_the_client_was_told() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    let parsed = format!("P s1 {SQL}");
    let window = ["CS s1", &parsed, "DS s1", "DS s1", "H"];
    assert_eq!(
        k.client_briefs(&[
            close_stmt("s1"),
            parse("s1", SQL),
            describe_stmt("s1"),
            flush()
        ]),
        lines(&window)
    );
    assert_eq!(
        k.server_briefs(&[
            close_complete(),
            parse_complete(),
            param_desc(),
            row_desc(&old_cols()),
            param_desc(),
            row_desc(&old_cols()),
        ]),
        lines(&["3", "1", "t", "T id,total,note"])
    );
    assert_eq!(
        k.client_briefs(&[bind("s1"), execute(), sync()]),
        lines(&["B s1", "E", "S"])
    );
    assert_eq!(k.server_briefs(&[cached_plan(), ready_idle()]), lines(&[]));
    probe_and_reprepare(&mut k, TxStatus::Idle);
    let mut replay = lines(&window);
    replay.extend(lines(&["B s1", "E", "S"]));
    assert_eq!(briefs(&k.server_received()), replay);
    assert_eq!(
        k.server_briefs(&[
            close_complete(),
            parse_complete(),
            param_desc(),
            row_desc(&new_cols()),
            param_desc(),
            row_desc(&new_cols()),
            bind_complete(),
            new_row(),
            complete("SELECT 1"),
            ready_idle(),
        ]),
        lines(&["2", OLD_ROW, "C SELECT 1", "Z I"]),
        "rows in the three columns the client was told, from the statement the replay parsed"
    );
    k.assert_settled();
}

/// A replayed Parse of a name the client had prepared before the window: `Bind s1, Execute,
/// Parse s2 <count>, Sync`, where s1 fails after `discount_code` was added and s2 exists. The
/// server skipped the Parse; healed, the replay runs it, and the server answers `42P05` as
/// PostgreSQL would have had it run: the client gets its row, then the error.
///
/// Before this fix the replay made the Parse succeed (a ParseComplete of pgheal's own, s2
/// closed and prepared again with its old text): a reply PostgreSQL never gives, and s2 was
/// prepared again mid-replay with no probe of its shape (finding 19 of docs/fuzzing.md).
#[test]
fn a_replayed_parse_of_a_statement_that_existed_before_the_window_fails_with_42p05() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    prepared(&mut k, "s2", COUNT, Some(&count_cols()));
    let batch = ["B s1", "E", &format!("P s2 {COUNT}"), "S"];
    assert_eq!(
        k.client_briefs(&[bind("s1"), execute(), parse("s2", COUNT), sync()]),
        lines(&batch)
    );
    assert_eq!(k.server_briefs(&[cached_plan(), ready_idle()]), lines(&[]));
    probe_and_reprepare(&mut k, TxStatus::Idle);
    assert_eq!(
        briefs(&k.server_received()),
        lines(&batch),
        "the replayed Parse goes as the client sent it"
    );
    assert_eq!(
        k.server_briefs(&[
            bind_complete(),
            new_row(),
            complete("SELECT 1"),
            error("42P05"),
            ready_idle(),
        ]),
        lines(&["2", OLD_ROW, "C SELECT 1", "E 42P05", "Z I"])
    );
    k.assert_settled();
    let s2 = k.relay.statements().by_name(b"s2").map(|s| s.sql.to_vec());
    assert_eq!(s2, Some(COUNT.as_bytes().to_vec()), "s2 is still the count");
}

/// In a failed transaction block, a Bind of s1 (stale by the schema epoch) makes pgheal prepare
/// it again first: its Close runs (PostgreSQL runs a Close in a failed block) and its Parse
/// fails with `25P02`, so s1 is gone from the server though the client never closed it. After
/// ROLLBACK the client parses s1 again: PostgreSQL would answer `42P05`, and so does pgheal,
/// with a Parse bound to fail in the client's Parse's place.
///
/// Before this fix the client's Parse was forwarded as if the server still held s1, and it
/// succeeded (finding 20 of docs/fuzzing.md).
#[test]
fn a_parse_of_a_statement_its_re_prepare_lost_in_a_failed_block_fails_with_42p05() {
    let mut k = Kit::session();
    prepared(&mut k, "s1", SQL, Some(&old_cols()));
    k.epoch.bump("migration");
    assert_eq!(k.client_briefs(&[query("BEGIN")]), lines(&["Q BEGIN"]));
    k.server(&[complete("BEGIN"), ready_in_block()]);
    let failing = [division_by_zero().as_slice(), &[sync()]].concat();
    k.client(&failing);
    k.server(&[
        parse_complete(),
        bind_complete(),
        error("22012"),
        ready(TxStatus::Failed),
    ]);
    assert_eq!(
        k.client_briefs(&[bind("s1"), execute(), sync()]),
        lines(&["CS s1", &format!("P s1 {SQL}"), "DS s1", "H"]),
        "s1 is prepared again before its Bind"
    );
    assert_eq!(
        k.server_briefs(&[close_complete(), error("25P02")]),
        lines(&["E 25P02"])
    );
    assert_eq!(
        briefs(&k.server_received()),
        lines(&["S"]),
        "the Bind and Execute the server would skip are not sent"
    );
    assert_eq!(k.server_briefs(&[ready(TxStatus::Failed)]), lines(&["Z E"]));
    k.client(&[query("ROLLBACK")]);
    k.server(&[complete("ROLLBACK"), ready_idle()]);
    k.assert_settled();
    assert_eq!(
        k.client_briefs(&[parse("s1", SQL), sync()]),
        lines(&["P s1 pgheal: duplicate prepared statement", "S"]),
        "s1 is gone from the server: a Parse of it would succeed"
    );
    assert_eq!(
        k.server_briefs(&[error("42601"), ready_idle()]),
        lines(&["E 42P05", "Z I"])
    );
    k.assert_settled();
}
