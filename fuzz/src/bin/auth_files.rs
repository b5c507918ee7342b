//! AFL target: `pgheal::fuzzing::auth_files` (see src/fuzzing in the main crate for its invariants).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        pgheal::fuzzing::auth_files(data);
    });
}
