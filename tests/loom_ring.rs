//! Model check of the ring's memory ordering: under every interleaving loom explores, the
//! consumer reads exactly what the producer wrote, in order, and nothing is dropped twice.
//!
//! Run: `RUSTFLAGS="--cfg kairos_loom" cargo test --release --test loom_ring`
#![cfg(kairos_loom)]

use kairos::ring::ring;

#[test]
fn values_cross_in_order_through_a_wrapping_ring() {
    loom::model(|| {
        let (mut tx, mut rx) = ring::<usize>(2, false, false);
        let producer = loom::thread::spawn(move || {
            let mut sent = 0;
            while sent < 3 {
                if tx.try_push(sent).is_ok() {
                    sent += 1;
                } else {
                    loom::thread::yield_now();
                }
            }
        });
        let mut next = 0;
        while next < 3 {
            match rx.try_pop() {
                Some(v) => {
                    assert_eq!(v, next);
                    next += 1;
                }
                None => loom::thread::yield_now(),
            }
        }
        producer.join().unwrap();
    });
}

#[test]
fn batches_cross_in_order() {
    loom::model(|| {
        let (mut tx, mut rx) = ring::<usize>(2, false, false);
        let producer = loom::thread::spawn(move || {
            let mut items = 0..3;
            let mut pushed = 0;
            while pushed < 3 {
                let n = tx.push_iter(&mut items);
                if n == 0 {
                    loom::thread::yield_now();
                }
                pushed += n;
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            if rx.pop_batch(2, |v| got.push(v)) == 0 {
                loom::thread::yield_now();
            }
        }
        assert_eq!(got, [0, 1, 2]);
        producer.join().unwrap();
    });
}

#[test]
fn boxed_values_are_dropped_once_when_left_in_the_ring() {
    loom::model(|| {
        let (mut tx, rx) = ring::<Box<usize>>(2, false, false);
        let producer = loom::thread::spawn(move || {
            let _ = tx.try_push(Box::new(1));
        });
        drop(rx);
        producer.join().unwrap();
    });
}
