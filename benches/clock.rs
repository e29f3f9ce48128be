//! The pipeline's clock against `Instant::now`: the cost of one reading. Every event is stamped
//! three times on its way through the pipeline (entering it, taken off its shard's ring,
//! leaving the shard), so this is paid three times per event.
//!
//! Run: `cargo bench --bench clock`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Instant;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("clock");
    // The first reading calibrates the counter; it is not part of what is measured.
    black_box(kairos::pipeline::now_ns());
    g.bench_function("kairos_now_ns", |b| {
        b.iter(|| black_box(kairos::pipeline::now_ns()))
    });
    g.bench_function("instant_now", |b| b.iter(|| black_box(Instant::now())));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
