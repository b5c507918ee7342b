//! The relay engine alone, without PostgreSQL: scripted client and server frames go in, and the
//! tests check what the engine sends to each side. The engine does no I/O, so these run in
//! milliseconds; the same behaviours are tested against real PostgreSQL in
//! tests/it/pipeline_errors.rs and tests/it/vanished_clients.rs. The kit is
//! tests/it/common/engine_kit.rs; the repair paths are tested in tests/it/engine_repairs.rs.
//!
//! Covered here: the model of the server's input loop (skip to Sync after an error, COPY IN
//! ignoring Sync) and bringing a server connection to rest when its client leaves.

use pgheal::heal::Rest;
use pgheal::protocol::backend::TxStatus;
use pgheal::protocol::frontend::Target;
use pgheal::protocol::{encode, sqlstate};

use crate::common::engine_kit::*;

#[test]
fn after_an_error_in_a_flush_segment_the_server_skips_to_sync() {
    let mut k = Kit::session();
    assert_eq!(
        k.client_tags(&[parse("", "SELECT 1/x"), bind(""), execute(), flush()]),
        "PBEH"
    );
    assert_eq!(
        k.server_tags(&[parse_complete(), bind_complete(), error("22012")]),
        "12E"
    );
    // The rest of the batch: forwarded, answered by nothing but the Sync's ReadyForQuery.
    assert_eq!(
        k.client_tags(&[parse("s1", "SELECT 1"), bind("s1"), execute(), sync()]),
        "PBES"
    );
    assert_eq!(k.server_tags(&[ready(TxStatus::Idle)]), "Z");
    assert!(k.relay.is_quiet(), "{}", k.relay.debug_state());
    // s1 was never created: a Parse of it is pgheal's to track, with its Describe.
    assert_eq!(
        k.client_tags(&[parse("s1", "SELECT 2"), bind("s1"), execute(), sync()]),
        "PDBES"
    );
}

#[test]
fn several_flush_segments_and_a_query_are_skipped_up_to_one_sync() {
    let mut k = Kit::session();
    k.client_tags(&[parse("", "SELECT 1/x"), bind(""), execute(), flush()]);
    assert_eq!(
        k.server_tags(&[parse_complete(), bind_complete(), error("22012")]),
        "12E"
    );
    assert_eq!(k.client_tags(&[parse("a", "SELECT 1"), flush()]), "PH");
    assert_eq!(k.client_tags(&[encode::query("SELECT 7"), flush()]), "QH");
    assert_eq!(
        k.client_tags(&[encode::close(Target::Statement(b"a")), sync()]),
        "CS"
    );
    assert_eq!(k.server_tags(&[ready(TxStatus::Idle)]), "Z");
    assert!(k.relay.is_quiet(), "{}", k.relay.debug_state());
    assert_eq!(k.client_tags(&[encode::query("SELECT 3")]), "Q");
    assert_eq!(
        k.server_tags(&[complete("SELECT 1"), ready(TxStatus::Idle)]),
        "CZ"
    );
}

#[test]
fn an_error_while_later_segments_are_in_flight_skips_them_all() {
    let mut k = Kit::session();
    k.client_tags(&[
        parse("", "SELECT 1/x"),
        bind(""),
        execute(),
        flush(),
        parse("c", "SELECT 3"),
        bind("c"),
        execute(),
        flush(),
        sync(),
    ]);
    assert_eq!(
        k.server_tags(&[
            parse_complete(),
            bind_complete(),
            error("22012"),
            ready(TxStatus::Idle)
        ]),
        "12EZ"
    );
    assert!(k.relay.is_quiet(), "{}", k.relay.debug_state());
    assert_eq!(k.client_tags(&[bind("c"), execute(), sync()]), "BES");
    assert_eq!(
        k.server_tags(&[
            error(sqlstate::UNDEFINED_PREPARED_STATEMENT),
            ready(TxStatus::Idle)
        ]),
        "EZ"
    );
}

#[test]
fn a_sync_during_copy_in_is_not_answered() {
    let mut k = Kit::session();
    k.client_tags(&[parse("", "COPY t FROM STDIN"), bind(""), execute(), sync()]);
    assert_eq!(
        k.server_tags(&[parse_complete(), bind_complete(), copy_in_response()]),
        "12G"
    );
    assert_eq!(
        k.client_tags(&[encode::raw(b'd', b"1\n"), encode::raw(b'c', &[]), sync()]),
        "dcS"
    );
    assert_eq!(
        k.server_tags(&[complete("COPY 1"), ready(TxStatus::Idle)]),
        "CZ"
    );
    assert!(k.relay.is_quiet(), "{}", k.relay.debug_state());
}

#[test]
fn leaving_with_an_open_write_segment_rolls_it_back() {
    let mut k = Kit::session();
    k.client_tags(&[
        parse("", "INSERT INTO t VALUES (1)"),
        bind(""),
        execute(),
        flush(),
    ]);
    k.server_unheard(&[parse_complete(), bind_complete(), complete("INSERT 0 1")]);
    // A bare Sync would commit the INSERT: a Parse that must fail goes first.
    assert_eq!(k.wind_down(), (Rest::Waiting, "PS".into()));
    k.server_unheard(&[error("42601"), ready(TxStatus::Idle)]);
    assert_eq!(k.wind_down(), (Rest::Ready(TxStatus::Idle), String::new()));
}

#[test]
fn leaving_after_an_error_needs_only_a_sync() {
    let mut k = Kit::session();
    k.client_tags(&[parse("", "SELECT 1/x"), bind(""), execute(), flush()]);
    k.server_unheard(&[parse_complete(), bind_complete(), error("22012")]);
    assert_eq!(k.wind_down(), (Rest::Waiting, "S".into()));
    k.server_unheard(&[ready(TxStatus::Idle)]);
    assert_eq!(k.wind_down(), (Rest::Ready(TxStatus::Idle), String::new()));
}

#[test]
fn leaving_mid_copy_fails_the_copy() {
    // Extended protocol: the client's Sync was ignored during COPY; pgheal's own ends it.
    let mut k = Kit::session();
    k.client_tags(&[parse("", "COPY t FROM STDIN"), bind(""), execute(), sync()]);
    k.server_unheard(&[parse_complete(), bind_complete(), copy_in_response()]);
    k.client_tags(&[encode::raw(b'd', b"1\n")]);
    assert_eq!(k.wind_down(), (Rest::Waiting, "f".into()));
    k.server_unheard(&[error(sqlstate::QUERY_CANCELED)]);
    assert_eq!(k.wind_down(), (Rest::Waiting, "S".into()));
    k.server_unheard(&[ready(TxStatus::Idle)]);
    assert_eq!(k.wind_down(), (Rest::Ready(TxStatus::Idle), String::new()));

    // Simple protocol: the query's own ReadyForQuery follows the failed COPY.
    let mut k = Kit::session();
    k.client_tags(&[encode::query("COPY t FROM STDIN")]);
    k.server_unheard(&[copy_in_response()]);
    assert_eq!(k.wind_down(), (Rest::Waiting, "f".into()));
    k.server_unheard(&[error(sqlstate::QUERY_CANCELED), ready(TxStatus::Idle)]);
    assert_eq!(k.wind_down(), (Rest::Ready(TxStatus::Idle), String::new()));
}

#[test]
fn leaving_with_answers_in_flight_waits_for_them() {
    let mut k = Kit::session();
    // One implicit transaction in flight at a time: the second query waits for the first's
    // ReadyForQuery, and still runs after the client has gone (PostgreSQL had received it).
    assert_eq!(
        k.client_tags(&[encode::query("BEGIN"), encode::query("SELECT pg_sleep(1)")]),
        "Q"
    );
    // While answers are due, a Flush makes the server send what it may still buffer (a
    // batch the client ended with neither Flush nor Sync); it has no answer of its own.
    assert_eq!(k.wind_down(), (Rest::Waiting, "H".into()));
    k.server_unheard(&[complete("BEGIN"), ready(TxStatus::InTransaction)]);
    assert_eq!(k.wind_down(), (Rest::Waiting, "QH".into()));
    k.server_unheard(&[complete("SELECT 1"), ready(TxStatus::InTransaction)]);
    // At rest inside the transaction block: the pool rolls it back.
    assert_eq!(
        k.wind_down(),
        (Rest::Ready(TxStatus::InTransaction), String::new())
    );
}

#[test]
fn a_query_pipelined_after_a_failing_message_is_skipped_with_it() {
    // Found by the engine fuzz target (fuzz/corpus/engine/query-after-error): the server skips
    // a simple Query that follows a failed extended-protocol message before the Sync, so the
    // engine must not wait for its ReadyForQuery (the client's Sync would wait for ever).
    let mut k = Kit::session();
    assert_eq!(
        k.client_tags(&[
            encode::describe(Target::Portal(b"p1")),
            encode::close(Target::Statement(b"s1")),
            encode::query("BEGIN"),
        ]),
        "DCQ"
    );
    assert_eq!(k.server_tags(&[error("34000")]), "E");
    assert_eq!(k.client_tags(&[sync()]), "S");
    assert_eq!(k.server_tags(&[ready(TxStatus::Idle)]), "Z");
    assert!(k.relay.is_quiet(), "{}", k.relay.debug_state());
}
