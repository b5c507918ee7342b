//! The short fuzz run of CI: every target of `pgheal::fuzzing` over its committed corpus
//! (`fuzz/corpus/<target>/`) and a bounded number of cheap, deterministic mutations of it
//! (a fixed-seed generator: bit flips, byte changes, insertions, deletions, truncations,
//! splices of two inputs). No AFL is needed; a crash is a failing test that names the target and
//! prints the input, which then goes into the corpus with the fix. The long coverage-guided runs
//! are `scripts/fuzz-long.sh` (see docs/fuzzing.md).

use std::path::{Path, PathBuf};

use pgheal::fuzzing::TARGETS;

/// Mutations per corpus input (the engine's inputs are costlier: fewer).
const MUTATIONS: usize = 400;
const ENGINE_MUTATIONS: usize = 150;

/// xorshift64*: fixed seed, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = [0, 1, 0x7f, 0x80, 0xff, b'\n', b',', b'='][rng.below(8)];
            }
            2 => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
            3 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = 1 + rng.below(8.min(v.len() - i));
                v.drain(i..i + n);
            }
            4 => v.truncate(rng.below(v.len() + 1)),
            5 if !other.is_empty() => {
                let i = rng.below(v.len() + 1);
                let j = rng.below(other.len());
                let n = 1 + rng.below(other.len() - j);
                v.splice(i..i, other[j..j + n].iter().copied());
            }
            _ if v.len() >= 4 => {
                // A 32-bit field (a length, a count) set to an edge value.
                let i = rng.below(v.len() - 3);
                let x: i32 = [0, -1, 3, 4, 5, i32::MAX, 0x10000][rng.below(7)];
                v[i..i + 4].copy_from_slice(&x.to_be_bytes());
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).expect("read corpus file");
            (p, data)
        })
        .collect()
}

/// Runs `f` on `input`; on a panic, fails with the target, what the input is and its bytes.
fn run_one(target: &str, f: fn(&[u8]), what: &str, input: &[u8]) {
    if let Err(e) = std::panic::catch_unwind(|| f(input)) {
        let msg = e
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| e.downcast_ref::<&str>().copied())
            .unwrap_or("?");
        panic!("fuzz target {target} failed on {what}: {msg}\ninput: {input:?}");
    }
}

fn run_target(name: &str) {
    let f = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("target exists")
        .1;
    let inputs = corpus(name);
    assert!(!inputs.is_empty(), "no corpus for {name}");
    let per_input = if name == "engine" {
        ENGINE_MUTATIONS
    } else {
        MUTATIONS
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    for (i, (path, data)) in inputs.iter().enumerate() {
        run_one(name, f, &path.display().to_string(), data);
        let other = &inputs[(i + 1) % inputs.len()].1;
        for m in 0..per_input {
            let mutated = mutate(&mut rng, data, other);
            run_one(
                name,
                f,
                &format!("mutation {m} of {}", path.display()),
                &mutated,
            );
        }
    }
}

#[test]
fn every_target_has_a_corpus() {
    for (name, _) in TARGETS {
        assert!(corpus_dir(name).is_dir(), "fuzz/corpus/{name} is missing");
    }
}

#[test]
fn frames() {
    run_target("frames");
}

#[test]
fn startup() {
    run_target("startup");
}

#[test]
fn frontend() {
    run_target("frontend");
}

#[test]
fn backend() {
    run_target("backend");
}

#[test]
fn scram() {
    run_target("scram");
}

#[test]
fn auth_files() {
    run_target("auth_files");
}

#[test]
fn ini() {
    run_target("ini");
}

#[test]
fn toml() {
    run_target("toml");
}

#[test]
fn engine() {
    run_target("engine");
}

/// The engine on plain random bytes too (the corpus seeds favour the stale-statement paths).
#[test]
fn engine_random() {
    let mut rng = Rng(0x5eed);
    for i in 0..300 {
        let len = 16 + rng.below(200);
        let input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        run_one(
            "engine",
            pgheal::fuzzing::engine,
            &format!("random input {i}"),
            &input,
        );
    }
}

/// `PGHEAL_FUZZ_INPUT=<file> PGHEAL_FUZZ_TARGET=<target>` runs one input (a crash from AFL),
/// with `PGHEAL_FUZZ_TRACE=1` for the engine's message log. Without them it does nothing.
#[test]
fn replay_one_input() {
    let (Some(file), Some(target)) = (
        std::env::var_os("PGHEAL_FUZZ_INPUT"),
        std::env::var("PGHEAL_FUZZ_TARGET").ok(),
    ) else {
        return;
    };
    let f = TARGETS
        .iter()
        .find(|(n, _)| *n == target)
        .expect("target exists")
        .1;
    f(&std::fs::read(file).expect("read input"));
}
