//! A property test of the heal engine: random interleavings of client batches, server answers,
//! migrations behind pgheal's back and errors at any point, checked against a reference model
//! of the protocol. The driver and the model are `pgheal::fuzzing::engine` (see its module
//! docs): the bytes choose each step, the model of PostgreSQL answers what the engine sent, and
//! the model of the client checks that nothing it receives is out of order, duplicated or
//! missing (at the end every message it sent has been answered, one ReadyForQuery per Sync),
//! and that every row has the shape it was told. No PostgreSQL is needed.
//!
//! Deterministic: a fixed-seed generator and no failure persistence, so a run is repeatable
//! and CI never depends on a file left by an earlier run. `PROPTEST_CASES=50000` runs more; a
//! failure prints the shrunk input as hex, which goes into `fuzz/corpus/engine/` with its fix.

use proptest::collection::vec;
use proptest::prelude::any;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// Cases of a default run (a few seconds in a release build).
const CASES: u32 = 2000;
/// The longest input: the target reads one byte or three per step and stops at 256 steps.
const MAX_LEN: usize = 512;

thread_local! {
    /// This thread is running the property: its panics are expected while shrinking.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Panics of the property's own thread print nothing (shrinking panics hundreds of times; the
/// shrunk input is reported at the end); other threads' panics print as before.
fn quiet_panics_here() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info)
            }
        }));
    });
    QUIET.with(|q| q.set(true));
}

fn runner() -> TestRunner {
    let mut config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CASES;
    }
    let rng = TestRng::deterministic_rng(RngAlgorithm::ChaCha);
    TestRunner::new_with_rng(config, rng)
}

#[test]
fn engine_keeps_every_answer_in_order_exactly_once() {
    let mut runner = runner();
    quiet_panics_here();
    let result = runner.run(&vec(any::<u8>(), 0..=MAX_LEN), |input| {
        std::panic::catch_unwind(|| pgheal::fuzzing::engine(&input)).map_err(|e| {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            TestCaseError::fail(why)
        })
    });
    QUIET.with(|q| q.set(false));
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, input)) => {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            panic!(
                "the engine broke an invariant: {why}\nshrunk input ({} bytes, hex): {hex}\n\
                 (write these bytes to a file and run the fuzz_targets::replay_one_input test \
                 with PGHEAL_FUZZ_INPUT=<file> PGHEAL_FUZZ_TARGET=engine PGHEAL_FUZZ_TRACE=1 for \
                 the message log)",
                input.len()
            );
        }
        Err(e) => panic!("{e}"),
    }
}
