#!/usr/bin/env bash
# Kairos against Apache Flink's CEP library, side by side, on the same input file.
#
#   bash tools/flink/run.sh [--events N] [--keys K] [--seed S] [--runs R]
#                           [--windows "1h 1s"] [--parallelism P] [--topology keyby|chained]
#
# Installs Flink (pip install apache-flink-libraries into target/flink-peer/venv), compiles
# tools/flink/src/kairos/flink/KairosPeer.java against its jars, builds kairos and kairos-gen,
# generates one betting stream with kairos-gen, then for each window runs `kairos replay` with
# tools/flink/pattern.cep and KairosPeer with the same pattern written with Flink's Pattern API,
# R times each, alternating. Prints the median throughput of each, their ratio, and the match
# counts, and checks the matches of each engine, one by one, against its emission rule
# (tools/flink/semantics.py). Exits with status 1 if a check fails. See tools/flink/README.md.
#
# Environment: FLINK_VERSION (default 2.3.0), FLINK_JVM_OPTS (extra JVM options for the Flink
# side), PYTHON (default python3), CARGO_TARGET_DIR (where kairos is built; default target).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$(pwd)

events=1000000
keys=10000
seed=7
runs=3
windows="1h 1s"
parallelism=1
topology=keyby
usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage
    case "$1" in
    --events) events=$2 ;;
    --keys) keys=$2 ;;
    --seed) seed=$2 ;;
    --runs) runs=$2 ;;
    --windows) windows=$2 ;;
    --parallelism) parallelism=$2 ;;
    --topology) topology=$2 ;;
    *) usage ;;
    esac
    shift 2
done
for n in "$events" "$keys" "$seed" "$runs" "$parallelism"; do
    [[ $n =~ ^[0-9]+$ ]] || { echo "run.sh: '$n' is not a number" >&2; exit 2; }
done
[ "$runs" -ge 1 ] || { echo "run.sh: --runs must be at least 1" >&2; exit 2; }

flink_version=${FLINK_VERSION:-2.3.0}
python=${PYTHON:-python3}
work=$root/target/flink-peer
venv=$work/venv
out=$work/out
mkdir -p "$work/data" "$out"

fail() {
    echo >&2
    echo "run.sh: FAILED: $*" >&2
    exit 1
}

# --- (a) Flink: apache-flink-libraries ships Flink's jars (lib/ holds flink-dist and flink-cep).
# Nothing installed yet is not an error (`set -e` with `pipefail` would end the script here).
flink_lib() { ls -d "$venv"/lib/python*/site-packages/pyflink/lib 2>/dev/null | head -n 1 || true; }
lib=$(flink_lib)
if [ -z "$lib" ] || [ ! -f "$lib/flink-cep-$flink_version.jar" ]; then
    echo "== installing apache-flink-libraries==$flink_version into $venv (about 360 MB)"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "apache-flink-libraries==$flink_version"
    lib=$(flink_lib)
fi
[ -f "$lib/flink-cep-$flink_version.jar" ] || fail "no flink-cep-$flink_version.jar in $lib"
cp_jars=$lib/flink-dist-$flink_version.jar:$lib/flink-cep-$flink_version.jar
for j in log4j-api log4j-core log4j-slf4j-impl log4j-1.2-api; do
    jar=$(ls "$lib"/$j-[0-9]*.jar | head -n 1)
    cp_jars=$cp_jars:$jar
done

# --- (b) The Flink program.
src=tools/flink/src/kairos/flink/KairosPeer.java
classes=$work/classes-$flink_version
if [ ! -f "$classes/kairos/flink/KairosPeer.class" ] || [ "$src" -nt "$classes/kairos/flink/KairosPeer.class" ]; then
    echo "== compiling $src"
    rm -rf "$classes"
    mkdir -p "$classes"
    javac -nowarn -Xlint:-deprecation -d "$classes" -cp "$cp_jars" "$src" 2>&1 | grep -v '^Note:' >&2 || true
    [ -f "$classes/kairos/flink/KairosPeer.class" ] || fail "javac did not compile $src"
fi
# Flink on Java 17 needs these (the list Flink's own scripts pass).
jvm_opens="--add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
--add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED --add-opens=java.base/java.io=ALL-UNNAMED
--add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
--add-opens=java.base/java.net=ALL-UNNAMED --add-opens=java.base/java.text=ALL-UNNAMED
--add-opens=java.base/java.time=ALL-UNNAMED"

# --- Kairos.
echo "== building kairos and kairos-gen (release)"
cargo build --release --quiet --bin kairos --bin kairos-gen
bin=${CARGO_TARGET_DIR:-target}/release

# --- (c) The input.
input=$work/data/bets-$events-$keys-$seed.jsonl
if [ ! -s "$input" ]; then
    echo "== generating $input"
    "$bin/kairos-gen" betting --events "$events" --keys "$keys" --seed "$seed" --out "$input.tmp"
    mv "$input.tmp" "$input"
fi

window_ms() {
    local w=$1 n=${1%[smh]}
    case "$w" in
    *ms) echo "${w%ms}" ;;
    *s) echo $((n * 1000)) ;;
    *m) echo $((n * 60000)) ;;
    *h) echo $((n * 3600000)) ;;
    *) fail "window '$w': give it as Ns, Nm or Nh" ;;
    esac
}
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.0f\n", (a[NR/2]+a[NR/2+1])/2}'; }
field() { sed -n "s/.*[[:space:]]$1 \([0-9.]*\).*/\1/p" <<<" $2"; } # field NAME "k v k v ..."

# Both sides read the file inside their measure: have it in the page cache for every run.
cat "$input" >/dev/null

have_time=0
[ -x /usr/bin/time ] && have_time=1

echo
echo "== Kairos vs Apache Flink CEP $flink_version: $events events, $keys keys, seed $seed, $runs run(s) each"
echo "machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1); $(java -version 2>&1 | head -n 1)"
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min; other work on the machine disturbs the figures)"
echo "input:   $input ($(du -m "$input" | cut -f1) MiB)"
echo "Flink:   local StreamExecutionEnvironment, parallelism $parallelism, topology $topology, event time"
echo

status=0
summary=()
for w in $windows; do
    ms=$(window_ms "$w")
    pattern=$out/pattern-$w.cep
    sed "s/within 1h/within $w/" tools/flink/pattern.cep >"$pattern"
    grep -q "within $w\$" "$pattern" || fail "could not set the window of $pattern"
    k_rates="" f_rates="" k_matches="" f_matches=""
    printf '%-7s %-4s %-7s %14s %10s %8s %9s   %s\n' window run engine "events/s" elapsed_s cpu_s matches "(other)"
    for r in $(seq 1 "$runs"); do
        # Kairos: its own summary line (stderr) gives events, matches and events/s.
        kout=$out/kairos-$w.jsonl
        if [ $have_time = 1 ]; then
            /usr/bin/time -f '%U %S' -o "$out/kairos.time" "$bin/kairos" replay --patterns "$pattern" \
                --input "$input" --output "$kout" 2>"$out/kairos.err" || { cat "$out/kairos.err" >&2; fail "kairos replay"; }
            kcpu=$(awk '{printf "%.3f", $1 + $2}' "$out/kairos.time")
        else
            "$bin/kairos" replay --patterns "$pattern" --input "$input" --output "$kout" \
                2>"$out/kairos.err" || { cat "$out/kairos.err" >&2; fail "kairos replay"; }
            kcpu=n/a
        fi
        ks=$(grep '^events ' "$out/kairos.err" | tail -n 1)
        [ -n "$ks" ] || { cat "$out/kairos.err" >&2; fail "no summary from kairos replay"; }
        kev=$(field events "$ks")
        krate=$(sed -n 's/.* \([0-9]*\) events\/s.*/\1/p' <<<"$ks")
        kel=$(sed -n 's/.*elapsed \([0-9.]*\)s.*/\1/p' <<<"$ks")
        km=$(field matches "$ks")
        [ "$kev" = "$events" ] && [ "$(field malformed "$ks")" = 0 ] && [ "$(field late "$ks")" = 0 ] ||
            fail "kairos read $kev events of $events (malformed $(field malformed "$ks"), late $(field late "$ks"))"
        printf '%-7s %-4s %-7s %14s %10s %8s %9s   %s\n' "$w" "$r" kairos "$krate" "$kel" "$kcpu" "$km" \
            "timeouts $(field timeouts "$ks") (partial matches still open when their window closed)"
        k_rates="$k_rates $krate"
        k_matches="$k_matches $km"

        # Flink: KairosPeer's summary line (stdout); its log goes to a file.
        fout=$out/flink-$w.jsonl
        rm -f "$fout" "$fout".*
        # shellcheck disable=SC2086
        fs=$(java $jvm_opens ${FLINK_JVM_OPTS:-} -Dlog4j.configurationFile=tools/flink/log4j2.properties \
            -cp "$classes:$cp_jars" kairos.flink.KairosPeer --input "$input" --within-ms "$ms" \
            --parallelism "$parallelism" --topology "$topology" --matches "$fout" \
            2>"$out/flink-$w-$r.log" | grep '^events ' | tail -n 1) || true
        [ -n "$fs" ] || { tail -n 30 "$out/flink-$w-$r.log" >&2; fail "no summary from KairosPeer (log: $out/flink-$w-$r.log)"; }
        fev=$(field events "$fs")
        frate=$(field events_per_s "$fs")
        fm=$(field matches "$fs")
        [ "$fev" = "$events" ] && [ "$(field malformed "$fs")" = 0 ] && [ "$(field late "$fs")" = 0 ] ||
            fail "KairosPeer read $fev events of $events (malformed $(field malformed "$fs"), late $(field late "$fs"))"
        printf '%-7s %-4s %-7s %14s %10s %8s %9s   %s\n' "$w" "$r" flink "$frate" "$(field elapsed_s "$fs")" \
            "$(field cpu_s "$fs")" "$fm" "last match at $(field last_match_s "$fs") s; execute() $(field job_s "$fs") s"
        f_rates="$f_rates $frate"
        f_matches="$f_matches $fm"
        flink_reported=$(sed -n 's/.* flink \([^ ]*\).*/\1/p' <<<"$fs")
    done
    [ "$(tr ' ' '\n' <<<"$k_matches" | grep . | sort -u | wc -l)" = 1 ] || fail "kairos found$k_matches matches over the runs"
    [ "$(tr ' ' '\n' <<<"$f_matches" | grep . | sort -u | wc -l)" = 1 ] || fail "Flink found$f_matches matches over the runs"
    km=$(tr ' ' '\n' <<<"$k_matches" | grep . | head -n 1)
    fm=$(tr ' ' '\n' <<<"$f_matches" | grep . | head -n 1)
    kmed=$(median <<<"$k_rates")
    fmed=$(median <<<"$f_rates")
    ratio=$(awk -v a="$kmed" -v b="$fmed" 'BEGIN {printf "%.1f", a / b}')
    echo
    echo "within $w: matches: Kairos $km, Flink CEP $fm"
    if [ "$km" = "$fm" ]; then
        echo "  the same count; checking each engine's matches one by one against its emission rule:"
    else
        echo "  the counts DIFFER. Kairos emits a match the moment it completes and its skip strategy"
        echo "  (skip past last) then drops the older partial matches of the key; Flink CEP holds a"
        echo "  complete match while an older partial match of the key is open, and if that one completes"
        echo "  later, it is emitted first and its skip strategy drops the held match instead. Checking that"
        echo "  this rule, and nothing else, makes the difference (tools/flink/semantics.py):"
    fi
    if ! "$python" tools/flink/semantics.py --input "$input" --within-ms "$ms" --kairos "$out/kairos-$w.jsonl" \
        --flink "$out/flink-$w.jsonl"*; then
        echo "  FAILED: an engine's matches are not those of its emission rule (above); this is a bug in" >&2
        echo "  that engine or in this comparison, not a difference of semantics." >&2
        status=1
    fi
    echo
    summary+=("$(printf '%-7s %16s %16s %9s %10s %10s' "$w" "$kmed" "$fmed" "${ratio}x" "$km" "$fm")")
done

echo "== medians of $runs run(s); Flink CEP $flink_reported, parallelism $parallelism ($topology); load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-7s %16s %16s %9s %10s %10s\n' window "Kairos events/s" "Flink events/s" ratio "Kairos m." "Flink m."
printf '%s\n' "${summary[@]}"
echo
echo "Kairos: events / elapsed of its summary: from opening the input (mapped and read in) to the"
echo "        last match written and the output flushed, after the end of input closed every window."
echo "Flink:  events / elapsed_s of KairosPeer: from the source opening the input file to the sink"
echo "        receiving the end of input, after the final watermark flushed every window and every"
echo "        match was written. Excludes the JVM's start and the local cluster's start and shutdown."
exit $status
