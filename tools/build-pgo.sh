#!/usr/bin/env bash
# Builds `kairos` with profile-guided optimisation (PGO) into target/pgo/release/kairos.
#
#   bash tools/build-pgo.sh
#
# Three steps: an instrumented build; a training run that replays a generated betting stream
# with the 3-step pattern of benches/data (windows of 1s and 1h) and every pattern of patterns/
# over its sample input; and a build that lays out and inlines the code by the counts of that
# run. The training stream is not the benchmark's (seed 11, 300,000 events; the benchmark's is
# seed 7, 1,000,000 events), so the figures of tools/bench-replay.sh measure a stream the
# profile has not seen.
#
# The counts shape branch layout and inlining and change no result; the script checks that the
# binary writes each example's expected matches byte for byte.
#
# Needs `llvm-profdata` of the toolchain's own LLVM: rustup's `llvm-tools` component, which this
# script adds where it is missing, or the one LLVM_PROFDATA names. Extra compiler flags for both
# builds come from KAIROS_PGO_RUSTFLAGS (for instance `-Ctarget-cpu=native`, for a binary that
# runs on this kind of CPU only).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

extra=${KAIROS_PGO_RUSTFLAGS:-}
sysroot=$(rustc --print sysroot)
find_profdata() { find "$sysroot" -name llvm-profdata -type f -print -quit 2>/dev/null || true; }
profdata=${LLVM_PROFDATA:-$(find_profdata)}
if [[ -z $profdata ]] && command -v rustup >/dev/null; then
    echo "build-pgo: installing rustup's llvm-tools (for llvm-profdata)" >&2
    rustup component add llvm-tools >&2
    profdata=$(find_profdata)
fi
if [[ ! -x $profdata ]]; then
    llvm=$(rustc -vV | sed -n 's/^LLVM version: //p')
    echo "build-pgo: no llvm-profdata for this toolchain (LLVM $llvm): run \`rustup component add llvm-tools\`, or set LLVM_PROFDATA to an llvm-profdata of LLVM $llvm" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet --bin kairos-gen
RUSTFLAGS="$extra -Cprofile-generate=$work/raw" \
    cargo build --release --quiet --target-dir target/pgo-instrumented --bin kairos
trained=target/pgo-instrumented/release/kairos

./target/release/kairos-gen betting --events 300000 --keys 10000 --seed 11 --out "$work/train.jsonl"
cp benches/data/deposit_bet_withdraw.cep "$work/within_1h.cep"
sed 's/within 1h/within 1s/' benches/data/deposit_bet_withdraw.cep >"$work/within_1s.cep"
for window in 1s 1h; do
    "$trained" replay -q --patterns "$work/within_$window.cep" \
        --input "events=$work/train.jsonl" --output /dev/null
done
# Replays each example pattern with BINARY over its sample files, one input per stream (the
# file's name), writing the matches to standard output.
replay_example() {
    local binary=$1 dir=$2 inputs=() file stream
    for file in "$dir"*.jsonl; do
        stream=$(basename "$file" .jsonl)
        [[ $stream == expected ]] || inputs+=(--input "$stream=$file")
    done
    "$binary" replay -q --patterns "patterns/$(basename "$dir").cep" "${inputs[@]}"
}
for dir in tests/examples/*/; do
    replay_example "$trained" "$dir" >/dev/null
done

"$profdata" merge -o "$work/kairos.profdata" "$work/raw"
RUSTFLAGS="$extra -Cprofile-use=$work/kairos.profdata -Cllvm-args=-pgo-warn-missing-function=false" \
    cargo build --release --quiet --target-dir target/pgo --bin kairos
# The profile changes no result: the examples' matches, byte for byte.
for dir in tests/examples/*/; do
    if ! replay_example target/pgo/release/kairos "$dir" | cmp -s - "${dir}expected.jsonl"; then
        echo "build-pgo: target/pgo/release/kairos differs from ${dir}expected.jsonl" >&2
        exit 1
    fi
done
echo "target/pgo/release/kairos"
