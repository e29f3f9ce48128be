#!/usr/bin/env bash
# End-to-end replay figures: generates a 1,000,000-line betting stream of 10,000 customers with
# kairos-gen, then replays the 3-step pattern of benches/data over it (JSON decoding included),
# with a 1-second and a 1-hour window, three runs each, and reports events/s and peak RSS.
#
#   bash tools/bench-replay.sh [EVENTS] [KEYS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
events=${1:-1000000}
keys=${2:-10000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet --bin kairos --bin kairos-gen
./target/release/kairos-gen betting --events "$events" --keys "$keys" --seed 7 --out "$work/bets.jsonl"
sed 's/within 1h/within 1s/' benches/data/deposit_bet_withdraw.cep > "$work/within_1s.cep"
cp benches/data/deposit_bet_withdraw.cep "$work/within_1h.cep"

printf '%-10s %-6s %14s %12s %16s\n' window run "events/s" matches "peak RSS (KiB)"
for window in 1s 1h; do
    for run in 1 2 3; do
        stats=$( { /usr/bin/time -f 'RSS %M' ./target/release/kairos replay \
            --patterns "$work/within_$window.cep" --input "$work/bets.jsonl" \
            --output "$work/out.jsonl"; } 2>&1 )
        rate=$(sed -n 's/.* \([0-9]*\) events\/s.*/\1/p' <<<"$stats")
        matches=$(sed -n 's/.*matches \([0-9]*\) .*/\1/p' <<<"$stats")
        rss=$(sed -n 's/^RSS \([0-9]*\)/\1/p' <<<"$stats")
        printf '%-10s %-6s %14s %12s %16s\n' "$window" "$run" "$rate" "$matches" "$rss"
    done
done
echo "input: $(du -k "$work/bets.jsonl" | cut -f1) KiB (mapped and counted in RSS)"
