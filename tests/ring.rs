//! The ring: order, batches, ownership of the items (each dropped exactly once), disconnection,
//! and every wait strategy across two threads.

use kairos::ring::{ring, Disconnected, WaitStrategy, Waiter};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[test]
fn capacity_is_a_power_of_two() {
    assert_eq!(ring::<u8>(0, false, false).0.capacity(), 2);
    assert_eq!(ring::<u8>(5, false, false).0.capacity(), 8);
    assert_eq!(ring::<u8>(1024, false, false).1.capacity(), 1024);
}

#[test]
fn full_and_empty_are_reported() {
    let (mut tx, mut rx) = ring::<u32>(2, false, false);
    assert_eq!(rx.try_pop(), None);
    tx.try_push(1).unwrap();
    tx.try_push(2).unwrap();
    assert_eq!(tx.try_push(3), Err(3));
    assert_eq!(rx.try_pop(), Some(1));
    tx.try_push(3).unwrap();
    assert_eq!(rx.try_pop(), Some(2));
    assert_eq!(rx.try_pop(), Some(3));
    assert_eq!(rx.try_pop(), None);
}

#[test]
fn batches_move_what_fits_and_keep_the_rest() {
    let (mut tx, mut rx) = ring::<u32>(4, false, false);
    let mut items = 0..10;
    assert_eq!(tx.push_iter(&mut items), 4);
    assert_eq!(
        items.next(),
        Some(4),
        "the fifth item stays in the iterator"
    );
    let mut got = vec![];
    assert_eq!(rx.pop_batch(3, |v| got.push(v)), 3);
    assert_eq!(tx.push_iter(&mut (10..20)), 3);
    assert_eq!(rx.pop_batch(100, |v| got.push(v)), 4);
    assert_eq!(got, [0, 1, 2, 3, 10, 11, 12]);
}

/// Counts drops, to prove that every item is dropped exactly once.
struct Counted(Arc<AtomicUsize>);
impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn items_left_in_the_ring_are_dropped_once() {
    let drops = Arc::new(AtomicUsize::new(0));
    {
        let (mut tx, mut rx) = ring::<Counted>(8, false, false);
        for _ in 0..6 {
            assert!(tx.try_push(Counted(drops.clone())).is_ok());
        }
        drop(rx.try_pop());
        drop(rx.try_pop());
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }
    assert_eq!(drops.load(Ordering::SeqCst), 6);
}

#[test]
fn a_panicking_batch_consumer_loses_and_repeats_nothing() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (mut tx, mut rx) = ring::<Counted>(8, false, false);
    for _ in 0..5 {
        assert!(tx.try_push(Counted(drops.clone())).is_ok());
    }
    let mut seen = 0;
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rx.pop_batch(5, |_item| {
            seen += 1;
            if seen == 2 {
                panic!("consumer fails");
            }
        });
    }));
    assert!(r.is_err());
    // Two were taken (and dropped); three remain, readable once.
    assert_eq!(drops.load(Ordering::SeqCst), 2);
    let mut rest = 0;
    rx.pop_batch(10, |_| rest += 1);
    assert_eq!(rest, 3);
    drop((tx, rx));
    assert_eq!(drops.load(Ordering::SeqCst), 5);
}

#[test]
fn a_panicking_batch_producer_publishes_what_it_wrote() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (mut tx, mut rx) = ring::<Counted>(8, false, false);
    let made = drops.clone();
    let mut n = 0;
    let mut items = std::iter::from_fn(|| {
        n += 1;
        if n == 4 {
            panic!("producer fails");
        }
        Some(Counted(made.clone()))
    });
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tx.push_iter(&mut items)));
    assert!(r.is_err());
    // The three written before the panic are published, readable once, and dropped once.
    let mut got = 0;
    rx.pop_batch(10, |_| got += 1);
    assert_eq!(got, 3);
    assert_eq!(drops.load(Ordering::SeqCst), 3);
    assert!(tx.try_push(Counted(drops.clone())).is_ok());
    drop((tx, rx));
    assert_eq!(drops.load(Ordering::SeqCst), 4);
}

#[test]
fn disconnection_is_seen_by_both_sides() {
    let (mut tx, rx) = ring::<u32>(2, false, false);
    drop(rx);
    assert!(tx.is_disconnected());
    let mut w = Waiter::new(WaitStrategy::Spin);
    tx.try_push(1).unwrap();
    tx.try_push(2).unwrap();
    assert_eq!(tx.push(3, &mut w), Err(Disconnected(3)));

    let (mut tx, mut rx) = ring::<u32>(4, false, false);
    tx.try_push(7).unwrap();
    drop(tx);
    let mut w = Waiter::new(WaitStrategy::Spin);
    assert_eq!(
        rx.pop(&mut w),
        Some(7),
        "what was pushed before the producer left is read"
    );
    assert_eq!(rx.pop(&mut w), None);
    assert!(rx.is_finished());
}

/// Two threads, a small ring, many items: every item arrives, in order, under each strategy.
fn transfer(strategy: WaitStrategy, batched: bool) {
    // Under Miri, which interprets every step, a few hundred items cover the same paths.
    const N: u64 = if cfg!(miri) { 300 } else { 200_000 };
    let parks = matches!(strategy, WaitStrategy::Park { .. });
    let (mut tx, mut rx) = ring::<u64>(16, parks, parks);
    let producer = std::thread::spawn(move || {
        let mut w = Waiter::new(strategy);
        if batched {
            let mut items = (0..N).peekable();
            while items.peek().is_some() {
                if tx.push_iter(&mut items) == 0 {
                    let v = items.next().expect("peeked");
                    tx.push(v, &mut w).expect("consumer alive");
                }
            }
        } else {
            for i in 0..N {
                tx.push(i, &mut w).expect("consumer alive");
            }
        }
    });
    let mut w = Waiter::new(strategy);
    let mut expect = 0u64;
    if batched {
        while expect < N {
            let n = rx.pop_batch(7, |v| {
                assert_eq!(v, expect);
                expect += 1;
            });
            if n == 0 {
                match rx.pop(&mut w) {
                    Some(v) => {
                        assert_eq!(v, expect);
                        expect += 1;
                    }
                    None => break,
                }
            }
        }
    } else {
        while let Some(v) = rx.pop(&mut w) {
            assert_eq!(v, expect);
            expect += 1;
        }
    }
    producer.join().unwrap();
    assert_eq!(expect, N);
}

#[test]
fn spin_transfers_everything_in_order() {
    transfer(WaitStrategy::Spin, false);
    transfer(WaitStrategy::Spin, true);
}

#[test]
fn yield_transfers_everything_in_order() {
    transfer(WaitStrategy::Yield, false);
}

#[test]
fn park_transfers_everything_in_order() {
    transfer(WaitStrategy::Park { spins: 4 }, false);
    transfer(WaitStrategy::Park { spins: 0 }, true);
}

#[test]
fn wait_strategies_parse_and_default_by_cores() {
    assert_eq!(WaitStrategy::parse("spin"), Some(WaitStrategy::Spin));
    assert_eq!(WaitStrategy::parse("yield"), Some(WaitStrategy::Yield));
    assert!(matches!(
        WaitStrategy::parse("park"),
        Some(WaitStrategy::Park { .. })
    ));
    assert_eq!(WaitStrategy::parse("sleep"), None);
    assert_eq!(WaitStrategy::for_cores(2, 2), WaitStrategy::Spin);
    assert!(matches!(
        WaitStrategy::for_cores(2, 3),
        WaitStrategy::Park { .. }
    ));
}
