#!/usr/bin/env bash
# End-to-end replay figures: generates a 1,000,000-line betting stream of 10,000 customers with
# kairos-gen, then replays the 3-step pattern of benches/data over it (JSON decoding included),
# with a 1-second and a 1-hour window, and reports events/s and peak RSS.
#
#   bash tools/bench-replay.sh [EVENTS] [KEYS] [RUNS]
#
# Two builds of the same code run side by side, alternating, RUNS times each (5 by default):
# the plain release build (`cargo build --release`) and the profile-guided one of
# tools/build-pgo.sh. The machine's speed drifts with outside load by 20% and more from one
# hour to the next, so only figures of one series compare; the medians are the figures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
events=${1:-1000000}
keys=${2:-10000}
runs=${3:-5}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet --bin kairos --bin kairos-gen
bash tools/build-pgo.sh >/dev/null
cp target/release/kairos "$work/release"
cp target/pgo/release/kairos "$work/pgo"
./target/release/kairos-gen betting --events "$events" --keys "$keys" --seed 7 --out "$work/bets.jsonl"
sed 's/within 1h/within 1s/' benches/data/deposit_bet_withdraw.cep >"$work/within_1s.cep"
cp benches/data/deposit_bet_withdraw.cep "$work/within_1h.cep"

median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

printf '%-8s %-8s %12s %9s %15s   %s\n' window build "median ev/s" matches "peak RSS (KiB)" "runs (events/s)"
for window in 1s 1h; do
    declare -A rates=() matches=() rss=()
    for ((run = 1; run <= runs; run++)); do
        for build in release pgo; do
            stats=$( { /usr/bin/time -f 'RSS %M' "$work/$build" replay \
                --patterns "$work/within_$window.cep" --input "$work/bets.jsonl" \
                --output "$work/out-$build.jsonl"; } 2>&1 )
            rates[$build]+=" $(sed -n 's/.* \([0-9]*\) events\/s.*/\1/p' <<<"$stats")"
            matches[$build]=$(sed -n 's/.*matches \([0-9]*\) .*/\1/p' <<<"$stats")
            rss[$build]+=" $(sed -n 's/^RSS \([0-9]*\)/\1/p' <<<"$stats")"
        done
        if ! cmp -s "$work/out-release.jsonl" "$work/out-pgo.jsonl"; then
            echo "bench-replay: the two builds wrote different matches (within $window)" >&2
            exit 1
        fi
    done
    for build in release pgo; do
        printf '%-8s %-8s %12s %9s %15s  %s\n' "$window" "$build" \
            "$(median <<<"${rates[$build]}")" "${matches[$build]}" \
            "$(tr ' ' '\n' <<<"${rss[$build]}" | sort -n | tail -n 1)" "${rates[$build]}"
    done
    unset rates matches rss
done
echo "input: $(du -k "$work/bets.jsonl" | cut -f1) KiB (mapped and counted in RSS)"
