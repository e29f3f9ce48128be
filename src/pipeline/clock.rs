//! The pipeline's clock: nanoseconds since its first reading, the same for every thread.
//!
//! Every event is stamped as it enters the pipeline, and each stage reads the clock again as the
//! event leaves it: three readings per event on the hot path. `Instant::now` costs about 17 ns
//! on the machine of BENCHMARKS.md, a reading of this clock 9 ns (`cargo bench --bench clock`).
//! Where the CPU's time-stamp counter is invariant (it ticks at one rate in every power state
//! and on every core: x86_64 with CPUID leaf 8000_0007h, EDX bit 8), the clock reads it, scaled
//! by its rate as measured against `Instant` over the first 2 ms; elsewhere it reads `Instant`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

enum Source {
    /// Counter value at time 0, and nanoseconds per tick in 32.32 fixed point.
    Tsc {
        base: u64,
        ns_per_tick: u64,
    },
    Instant(Instant),
}

fn source() -> &'static Source {
    static SOURCE: OnceLock<Source> = OnceLock::new();
    SOURCE.get_or_init(calibrate)
}

/// Nanoseconds since the first reading, on a clock shared by every thread of the process.
// HOT PATH: three readings per event.
#[inline]
pub fn now_ns() -> u64 {
    match source() {
        Source::Tsc { base, ns_per_tick } => {
            let ticks = tsc().wrapping_sub(*base);
            ((ticks as u128 * *ns_per_tick as u128) >> 32) as u64
        }
        Source::Instant(start) => start.elapsed().as_nanos() as u64,
    }
}

/// How long the counter's rate is measured. The error of the two `Instant` readings, tens of
/// nanoseconds, is then some parts in a million of each interval the clock measures.
const CALIBRATION: Duration = Duration::from_millis(2);

fn calibrate() -> Source {
    // CPUID first: in a virtual machine it traps to the hypervisor, tens of microseconds that
    // must not fall between the two clocks' first readings.
    if !invariant_tsc() {
        return Source::Instant(Instant::now());
    }
    let (start, c0) = paired_reading();
    let (mut end, mut c1) = paired_reading();
    while end.duration_since(start) < CALIBRATION {
        std::hint::spin_loop();
        (end, c1) = paired_reading();
    }
    let ns = end.duration_since(start).as_nanos() as u64;
    let ticks = c1.wrapping_sub(c0);
    // A counter between 100 MHz and 20 GHz is believable; anything else falls back.
    if ticks < ns / 10 || ticks > ns.saturating_mul(20) {
        return Source::Instant(start);
    }
    Source::Tsc {
        base: c0,
        ns_per_tick: (((ns as u128) << 32) / ticks as u128) as u64,
    }
}

/// An `Instant` and the counter at the same moment: the counter is read on both sides of the
/// `Instant`, and the pair is taken again while the thread was interrupted in between (a
/// preemption there would skew the rate by its length over the 2 ms measured).
fn paired_reading() -> (Instant, u64) {
    // 1 to 4 us at the usual 1 to 4 GHz, against some tens of nanoseconds for a reading.
    const TIGHT: u64 = 4_000;
    let mut best = None;
    for _ in 0..16 {
        let before = tsc();
        let at = Instant::now();
        let after = tsc();
        let spread = after.wrapping_sub(before);
        let mid = before.wrapping_add(spread / 2);
        if spread <= TIGHT {
            return (at, mid);
        }
        if best.is_none_or(|(_, _, s)| spread < s) {
            best = Some((at, mid, spread));
        }
    }
    let (at, mid, _) = best.expect("at least one reading");
    (at, mid)
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn tsc() -> u64 {
    // SAFETY: RDTSC is part of the x86_64 baseline and reads a counter; it has no memory
    // effects. Not serializing: a reading may move by a few cycles against the instructions
    // around it, which is below what the latency histograms resolve.
    unsafe { std::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn tsc() -> u64 {
    0
}

#[cfg(all(target_arch = "x86_64", not(miri)))]
fn invariant_tsc() -> bool {
    use std::arch::x86_64::__cpuid;
    // SAFETY: CPUID is part of the x86_64 baseline; leaf 8000_0000h gives the highest
    // extended leaf, so 8000_0007h is read only where it exists.
    #[allow(unused_unsafe)]
    unsafe {
        __cpuid(0x8000_0000).eax >= 0x8000_0007 && __cpuid(0x8000_0007).edx & (1 << 8) != 0
    }
}

/// Elsewhere, and under Miri (which has no time-stamp counter), the clock reads `Instant`.
#[cfg(any(not(target_arch = "x86_64"), miri))]
fn invariant_tsc() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_time_with_instant_and_never_goes_back() {
        let t0 = now_ns();
        let i0 = Instant::now();
        let mut last = t0;
        while i0.elapsed() < Duration::from_millis(50) {
            let t = now_ns();
            assert!(t >= last, "{t} after {last}");
            last = t;
        }
        let clock = now_ns() - t0;
        let real = i0.elapsed().as_nanos() as u64;
        // Within 1% and 50 us of `Instant` over 50 ms.
        let diff = clock.abs_diff(real);
        assert!(
            diff < real / 100 + 50_000,
            "clock {clock} ns, Instant {real} ns"
        );
    }

    #[test]
    fn threads_share_the_clock() {
        let before = now_ns();
        let other = std::thread::spawn(now_ns).join().expect("thread");
        let after = now_ns();
        assert!(
            before <= other && other <= after,
            "{before} {other} {after}"
        );
    }
}
