#!/usr/bin/env python3
"""Replays the pattern of tools/flink/pattern.cep over an input file under two emission rules,
to tell a semantic difference between Kairos and Flink CEP from a bug in either.

    python3 tools/flink/semantics.py --input bets.jsonl --within-ms 3600000 \
        [--kairos kairos.jsonl] [--flink flink.jsonl]

The pattern is `d -> b -> w within W, skip past last`, per user_id:
    d = type == "deposit" and amount >= 20
    b = type == "bet" and stake >= 10
    w = type == "withdrawal" and amount >= d.amount * 0.5

Both rules run the same partial matches (relaxed contiguity: a partial match waiting for b or w
ignores every other event; every d starts one; a partial match whose first event is `within` or
more before the current event has timed out). They differ in when a complete match is emitted,
and so in which partial matches the skip strategy drops:

  eager  (Kairos): a match is emitted on the event that completes it; `skip past last` then drops
         every partial match of the key that started at or before that event.
  held   (Flink CEP's operator, NFA.processMatchesAccordingToSkipStrategy): a complete match waits
         while a partial match of the key that started earlier is still open; matches are
         released oldest first, when every older partial match has completed, timed out or been
         dropped, and each released match's `skip past last` drops the partial matches AND the
         waiting complete matches that started at or before its last event. The end of the input
         (the final watermark) times out every partial match, which releases what still waits.

Prints the number of matches under each rule; with --kairos / --flink (match records written by
`kairos replay --output` and by KairosPeer --matches, which writes FILE, FILE.1, ... with
parallelism above 1), compares each engine's matches, one by one
(user, d.ts, b.ts, w.ts), with its rule, and exits with status 1 if either differs.
"""
import argparse
import collections
import json
import sys


def read_events(path):
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if not isinstance(e, dict) or not isinstance(e.get("ts"), int) or "user_id" not in e:
                continue
            yield n, e


def num(e, field):
    v = e.get(field)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def simulate(path, within_ms):
    """Returns (eager matches, held matches), each a list of (user, d_ts, b_ts, w_ts)."""
    eager_open = collections.defaultdict(list)  # user -> [partial]
    held_open = collections.defaultdict(list)
    held_done = collections.defaultdict(list)  # user -> [complete match waiting]
    eager, held = [], []

    # A partial match: [start line, start ts, d.amount, d.ts, b.ts or None].
    # A complete match: (start line, last line, (user, d_ts, b_ts, w_ts)).

    def release(user):
        opened, done = held_open[user], held_done[user]
        while done:
            first = min(done)
            if opened and min(p[0] for p in opened) < first[0]:
                return
            done.remove(first)
            held.append(first[2])
            last = first[1]
            opened[:] = [p for p in opened if p[0] > last]
            done[:] = [m for m in done if m[0] > last]

    def step(opened, n, ts, e, user):
        """Advances the partial matches over one event; returns the completions."""
        kind = e.get("type")
        amount, stake = num(e, "amount"), num(e, "stake")
        done = []
        for p in list(opened):
            if p[4] is None:
                if kind == "bet" and stake is not None and stake >= 10:
                    p[4] = ts
            elif kind == "withdrawal" and amount is not None and amount >= p[2] * 0.5:
                opened.remove(p)
                done.append((p[0], n, (user, p[3], p[4], ts)))
        return done

    def start(opened, n, ts, e):
        amount = num(e, "amount")
        if e.get("type") == "deposit" and amount is not None and amount >= 20:
            opened.append([n, ts, amount, ts, None])

    for n, e in read_events(path):
        ts, user = e["ts"], e["user_id"]

        # Kairos: time out, advance, emit at once (the oldest completion first), skip past last.
        opened = eager_open[user]
        opened[:] = [p for p in opened if ts - p[1] < within_ms]
        done = step(opened, n, ts, e, user)
        if done:
            first = min(done)
            eager.append(first[2])
            opened[:] = [p for p in opened if p[0] > first[1]]
        start(opened, n, ts, e)
        if not opened:
            del eager_open[user]

        # Flink: time out (which may release waiting matches), advance, queue, release.
        opened = held_open[user]
        before = len(opened)
        opened[:] = [p for p in opened if ts - p[1] < within_ms]
        if len(opened) != before:
            release(user)
        held_done[user].extend(step(opened, n, ts, e, user))
        start(opened, n, ts, e)
        release(user)

    # The end of the input: every window closes; what waited is released, oldest first.
    for user in list(held_open):
        held_open[user].clear()
        release(user)
    return eager, held


def read_matches(paths, kairos):
    out = collections.Counter()
    for path in paths:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    continue
                r = json.loads(line)
                v = r["value"] if kairos else r
                out[(v["user"], v["d_ts"], v["b_ts"], v["w_ts"])] += 1
    return out


def compare(name, got, expected, rule):
    if got == expected:
        print(f"  {name}: {sum(got.values())} matches, the same as the {rule} rule, one by one")
        return True
    missing, extra = expected - got, got - expected
    print(f"  {name}: {sum(got.values())} matches; the {rule} rule gives {sum(expected.values())}:"
          f" {sum(missing.values())} missing, {sum(extra.values())} not expected")
    for t in sorted(missing)[:5]:
        print(f"    missing      user {t[0]} d.ts {t[1]} b.ts {t[2]} w.ts {t[3]}")
    for t in sorted(extra)[:5]:
        print(f"    not expected user {t[0]} d.ts {t[1]} b.ts {t[2]} w.ts {t[3]}")
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True)
    ap.add_argument("--within-ms", type=int, required=True)
    ap.add_argument("--kairos", nargs="+", help="match records of kairos replay --output")
    ap.add_argument("--flink", nargs="+",
                    help="match records of KairosPeer --matches (one file per parallel sink)")
    a = ap.parse_args()
    eager, held = simulate(a.input, a.within_ms)
    eager_c, held_c = collections.Counter(eager), collections.Counter(held)
    both = sum((eager_c & held_c).values())
    print(f"  eager rule (Kairos): {len(eager)} matches; held rule (Flink CEP): {len(held)};"
          f" {both} in common")
    ok = True
    if a.kairos:
        ok &= compare("Kairos", read_matches(a.kairos, True), eager_c, "eager")
    if a.flink:
        ok &= compare("Flink CEP", read_matches(a.flink, False), held_c, "held")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
