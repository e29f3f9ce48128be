#!/usr/bin/env bash
# Who takes the cores from the pipeline's stages: runs kairos-latency at a fixed rate while
# `perf` records every context switch on the machine, then lists each thread that took a core
# from a Kairos thread, how often, and how long it kept it (until a Kairos thread ran again on
# that core). Needs `perf` and the permission to trace scheduler events (root, or
# kernel.perf_event_paranoid <= -1).
#
#   bash tools/preemptions.sh [RATE] [SECONDS]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rate=${1:-500000}
seconds=${2:-4}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --quiet --bin kairos-latency
./target/release/kairos-latency --rate "$rate" --seconds "$seconds" --shards 1 >"$work/latency.txt" &
latency=$!
sleep 0.5
perf record -q -e sched:sched_switch -a -o "$work/sched.data" -- sleep "$((seconds - 1))" 2>/dev/null
wait "$latency"
cat "$work/latency.txt"
echo
perf script -i "$work/sched.data" 2>/dev/null | awk '
    {
        cpu = $3; t = $4 + 0; prev = ""; next_ = ""
        for (i = 1; i <= NF; i++) {
            if ($i ~ /^prev_comm=/) prev = substr($i, 11)
            if ($i ~ /^next_comm=/) next_ = substr($i, 11)
        }
        if (prev ~ /^kairos/ && next_ !~ /^kairos/) { since[cpu] = t; who[cpu] = next_ }
        else if (next_ ~ /^kairos/ && (cpu in since)) {
            us = (t - since[cpu]) * 1e6
            n[who[cpu]]++; sum[who[cpu]] += us
            if (us > max[who[cpu]]) max[who[cpu]] = us
            delete since[cpu]
        }
    }
    END {
        printf "%-28s %8s %12s %12s\n", "thread", "times", "mean (us)", "longest (us)"
        for (w in n) printf "%-28s %8d %12.0f %12.0f\n", w, n[w], sum[w] / n[w], max[w]
    }' | { read -r header; echo "$header"; sort -k4 -n -r; }
