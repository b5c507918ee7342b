//! AFL target: `pgheal::fuzzing::scram` (see src/fuzzing in the main crate for its invariants).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        pgheal::fuzzing::scram(data);
    });
}
