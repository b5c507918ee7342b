#!/usr/bin/env bash
# The long fuzz run: each target of pgheal::fuzzing under AFL++ (cargo-afl, stable Rust), one
# after the other, then a table of the figures (executions, executions/s, corpus size, edges,
# crashes, hangs) for docs/fuzzing.md.
#
#   scripts/fuzz-long.sh                    # every target, 600 s each
#   FUZZ_SECONDS=60 scripts/fuzz-long.sh engine frames
#   FUZZ_EXECS=10000000 scripts/fuzz-long.sh frames   # stop each target after that many runs
#
# Needs `cargo install cargo-afl` (it builds AFL++ from the source bundled in the crate on
# first use: gcc and make suffice). Runs at nice 19. Output: fuzz/out/<target>/ (ignored by
# git); crashes land in fuzz/out/<target>/default/crashes/ and are replayed with
# `fuzz/target/release/replay <target> <file>`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

all=(frames startup frontend backend scram auth_files ini toml engine)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
seconds=${FUZZ_SECONDS:-600}

command -v cargo-afl >/dev/null || { echo "cargo-afl missing: cargo install cargo-afl" >&2; exit 1; }
nice -n 19 cargo afl build --release >&2

export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
export AFL_NO_AFFINITY=1 AFL_SKIP_CRASHES=1

stat() { awk -F' *: *' -v k="$2" '$1 == k { print $2 }' "$1"; }

mkdir -p out
rows=()
for t in "${targets[@]}"; do
    out=out/$t
    rm -rf "$out"
    limit=(-V "$seconds")
    [ -n "${FUZZ_EXECS:-}" ] && limit=(-E "$FUZZ_EXECS")
    echo "== $t: ${limit[*]}" >&2
    nice -n 19 cargo afl fuzz -i "corpus/$t" -o "$out" "${limit[@]}" -- "target/release/$t" \
        >"out-$t.log" 2>&1 || { echo "afl-fuzz failed for $t (see fuzz/out-$t.log)" >&2; continue; }
    s=$out/default/fuzzer_stats
    rows+=("| $t | $(stat "$s" execs_done) | $(stat "$s" execs_per_sec) | $(stat "$s" run_time) | $(stat "$s" corpus_count) | $(stat "$s" edges_found) | $(stat "$s" saved_crashes) | $(stat "$s" saved_hangs) |")
done

echo "| target | executions | execs/s | seconds | corpus | edges | crashes | hangs |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
total=0
for t in "${targets[@]}"; do
    s=out/$t/default/fuzzer_stats
    [ -f "$s" ] && total=$((total + $(stat "$s" execs_done)))
done
echo
echo "total executions: $total"
