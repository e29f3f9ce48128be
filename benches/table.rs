//! Lookup tables against in-memory hash maps holding the same data, in the same run.
//!
//! - `lookup_int/{N}/{impl}_{hit,miss}`: one lookup by a random int key in a table of N rows
//!   (1 thousand, 1 million, 10 million) and, on a hit, a read of three columns (a float, an
//!   int and the first byte of a string). `impl` is `kairos` (the memory-mapped table),
//!   `std` (`std::collections::HashMap<i64, Rec>`, SipHash) or `hashbrown`
//!   (`hashbrown::HashMap<i64, Rec>`, foldhash).
//! - `lookup_int/{N}/kairos_lookup_only_hit`: the table's lookup of a present key alone, without
//!   reading its columns.
//! - `lookup_str/1000000/...`: the same with string keys.
//! - `open/{N}/{verified,unverified}`: `Table::open` with and without the checksum pass.
//!
//! Keys come from a pre-generated array of random present (or absent) keys, larger than the
//! caches for the big tables, so the figures are random access, not a hot loop over a few rows.
//! Setup writes the CSV inputs and builds the tables into a temporary directory, printing each
//! build's time and file size on stderr.
//!
//! Run: `cargo bench --bench table`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use kairos::table::{build, BuildOptions, ColumnId, OpenOptions, Row, Table};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SEGMENTS: [&str; 5] = ["regular", "vip", "new", "dormant", "high-roller"];

/// The in-memory row the maps hold: the table's non-key columns.
#[allow(dead_code)]
struct Rec {
    segment: String,
    limit: f64,
    score: i64,
    vip: bool,
}

/// A bijection on u64: distinct inputs give distinct keys, so present and absent keys are
/// `mix(0..n)` and `mix(n..)`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn int_key(i: u64) -> i64 {
    mix(i) as i64
}

fn str_key(i: u64) -> String {
    format!("user-{:016x}", mix(i))
}

fn rec(i: u64) -> Rec {
    let m = mix(i ^ 0x5555);
    Rec {
        segment: SEGMENTS[(m % 5) as usize].to_string(),
        limit: (m % 100_000) as f64 / 4.0,
        score: (m >> 20) as i64 % 1000,
        vip: m % 5 == 1,
    }
}

/// Writes an N-row CSV with int or string keys and builds it; returns the table path.
fn build_table(dir: &Path, n: u64, string_keys: bool) -> PathBuf {
    let name = format!("{}{}", if string_keys { "s" } else { "i" }, n);
    let csv = dir.join(format!("{name}.csv"));
    let out = dir.join(format!("{name}.tbl"));
    let t0 = Instant::now();
    let mut w = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&csv).unwrap());
    writeln!(w, "id,segment,limit,score,vip").unwrap();
    for i in 0..n {
        let r = rec(i);
        if string_keys {
            write!(w, "{}", str_key(i)).unwrap();
        } else {
            write!(w, "{}", int_key(i)).unwrap();
        }
        writeln!(w, ",{},{:?},{},{}", r.segment, r.limit, r.score, r.vip).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let csv_bytes = std::fs::metadata(&csv).unwrap().len();
    let gen = t0.elapsed();
    let stats = build(&BuildOptions::new(&csv, "id", &out)).unwrap();
    eprintln!(
        "table {name}: {n} rows, CSV {:.1} MB written in {:.2}s; built in {:.2}s into {:.1} MB ({:.1} bytes/row)",
        csv_bytes as f64 / 1e6,
        gen.as_secs_f64(),
        stats.elapsed.as_secs_f64(),
        stats.bytes as f64 / 1e6,
        stats.bytes as f64 / n as f64,
    );
    std::fs::remove_file(&csv).unwrap();
    out
}

/// `count` random indices below `n` (present keys) or at or above `n` (absent keys).
fn sample(n: u64, count: usize, present: bool, seed: u64) -> Vec<u64> {
    (0..count as u64)
        .map(|j| {
            let r = mix(j.wrapping_add(seed));
            if present {
                r % n
            } else {
                n + r % (n.max(1 << 20))
            }
        })
        .collect()
}

/// Key arrays: small for the small table (it lives in cache anyway), larger than the caches for
/// the big ones.
fn sample_len(n: u64) -> usize {
    if n <= 10_000 {
        4096
    } else {
        1 << 22
    }
}

struct Cols {
    segment: ColumnId,
    limit: ColumnId,
    score: ColumnId,
}

impl Cols {
    fn of(t: &Table) -> Cols {
        Cols {
            segment: t.column("segment").unwrap(),
            limit: t.column("limit").unwrap(),
            score: t.column("score").unwrap(),
        }
    }
}

/// What a hit reads: the same three fields from every implementation.
#[inline(always)]
fn use_row(limit: f64, score: i64, segment: &str) -> f64 {
    limit + score as f64 + segment.as_bytes().first().copied().unwrap_or(0) as f64
}

fn lookups(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();

    for n in [1_000u64, 1_000_000, 10_000_000] {
        let path = build_table(dir.path(), n, false);
        let table = Table::open(&path, &OpenOptions::default()).unwrap();
        let cols = Cols::of(&table);
        let t0 = Instant::now();
        let mut std_map = std::collections::HashMap::with_capacity(n as usize);
        let mut hb_map = hashbrown::HashMap::with_capacity(n as usize);
        for i in 0..n {
            std_map.insert(int_key(i), rec(i));
            hb_map.insert(int_key(i), rec(i));
        }
        eprintln!(
            "maps of {n} rows filled in {:.2}s",
            t0.elapsed().as_secs_f64()
        );
        let len = sample_len(n);
        let hits: Vec<i64> = sample(n, len, true, 1).into_iter().map(int_key).collect();
        let misses: Vec<i64> = sample(n, len, false, 2).into_iter().map(int_key).collect();
        lookup_group(
            c,
            &format!("lookup_int/{n}"),
            [&hits, &misses],
            &table,
            &cols,
            (&std_map, &hb_map),
            |t, k| t.get_int(*k),
        );
        drop((std_map, hb_map));

        let mut g = c.benchmark_group(format!("open/{n}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(2));
        for (what, verify_checksum) in [("verified", true), ("unverified", false)] {
            let opts = OpenOptions {
                verify_checksum,
                ..OpenOptions::default()
            };
            g.bench_function(what, |b| b.iter(|| Table::open(&path, &opts).unwrap()));
        }
        g.finish();
        drop(table);
        std::fs::remove_file(&path).unwrap();
    }

    let n = 1_000_000u64;
    let path = build_table(dir.path(), n, true);
    let table = Table::open(&path, &OpenOptions::default()).unwrap();
    let cols = Cols::of(&table);
    let mut std_map = std::collections::HashMap::with_capacity(n as usize);
    let mut hb_map = hashbrown::HashMap::with_capacity(n as usize);
    for i in 0..n {
        std_map.insert(str_key(i), rec(i));
        hb_map.insert(str_key(i), rec(i));
    }
    let len = sample_len(n);
    let hits: Vec<String> = sample(n, len, true, 3).into_iter().map(str_key).collect();
    let misses: Vec<String> = sample(n, len, false, 4).into_iter().map(str_key).collect();
    lookup_group(
        c,
        &format!("lookup_str/{n}"),
        [&hits, &misses],
        &table,
        &cols,
        (&std_map, &hb_map),
        |t, k| t.get_str(k),
    );
}

/// One group of lookups: hits then misses, in the mapped table, `std` and hashbrown, each hit
/// reading the same three fields; and, on hits, the table's lookup alone (`kairos_lookup_only`),
/// which shows what reading the columns adds.
fn lookup_group<K: Eq + std::hash::Hash>(
    c: &mut Criterion,
    name: &str,
    [hits, misses]: [&Vec<K>; 2],
    table: &Table,
    cols: &Cols,
    (std_map, hb_map): (
        &std::collections::HashMap<K, Rec>,
        &hashbrown::HashMap<K, Rec>,
    ),
    get: impl for<'t> Fn(&'t Table, &K) -> Option<Row<'t>>,
) {
    let mask = hits.len() - 1;
    let mut g = c.benchmark_group(name);
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (what, keys) in [("hit", hits), ("miss", misses)] {
        g.bench_function(BenchmarkId::new("kairos", what), |b| {
            let mut i = 0usize;
            b.iter(|| {
                let k = &keys[i & mask];
                i += 1;
                get(table, black_box(k)).map(|r| {
                    use_row(
                        r.float(cols.limit).unwrap_or(0.0),
                        r.int(cols.score).unwrap_or(0),
                        r.str(cols.segment).unwrap_or(""),
                    )
                })
            })
        });
        if what == "hit" {
            g.bench_function(BenchmarkId::new("kairos_lookup_only", what), |b| {
                let mut i = 0usize;
                b.iter(|| {
                    let k = &keys[i & mask];
                    i += 1;
                    get(table, black_box(k)).map(|r| r.index())
                })
            });
        }
        g.bench_function(BenchmarkId::new("std", what), |b| {
            let mut i = 0usize;
            b.iter(|| {
                let k = &keys[i & mask];
                i += 1;
                std_map
                    .get(black_box(k))
                    .map(|r| use_row(r.limit, r.score, &r.segment))
            })
        });
        g.bench_function(BenchmarkId::new("hashbrown", what), |b| {
            let mut i = 0usize;
            b.iter(|| {
                let k = &keys[i & mask];
                i += 1;
                hb_map
                    .get(black_box(k))
                    .map(|r| use_row(r.limit, r.score, &r.segment))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
