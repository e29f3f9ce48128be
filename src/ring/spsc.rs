//! A bounded single-producer, single-consumer ring.
//!
//! Two monotonically increasing positions, `head` (next to read, written only by the consumer)
//! and `tail` (next to write, written only by the producer), each on its own cache line. Each
//! side keeps a cached copy of the other's position and reloads it only when the ring looks full
//! (producer) or empty (consumer), so that in the steady state a push or a pop touches no cache
//! line the other side writes. Batches (`push_iter`, `pop_batch`) publish their position once.
//!
//! The memory-ordering argument, in one place: the producer writes a slot, then stores `tail`
//! with `Release`; the consumer loads `tail` with `Acquire` before reading slots below it, so it
//! sees the writes. Symmetrically the consumer reads a slot, then stores `head` with `Release`;
//! the producer loads `head` with `Acquire` before reusing slots below it, so the read happened
//! before the overwrite. `tests/loom_ring.rs` checks this under every interleaving loom explores.

use super::sync::{fence, Arc, AtomicBool, AtomicUsize, Cell, Ordering};
use super::wait::{Step, Waiter, PARK_TIMEOUT};
use crossbeam_utils::CachePadded;
use std::mem::MaybeUninit;
use std::sync::Mutex;
use std::thread::Thread;

struct Shared<T> {
    /// Next position the consumer reads. Written by the consumer only.
    head: CachePadded<AtomicUsize>,
    /// Next position the producer writes. Written by the producer only.
    tail: CachePadded<AtomicUsize>,
    slots: Box<[Cell<MaybeUninit<T>>]>,
    mask: usize,
    /// Set (by the layout) when the consumer may park, so that only then the producer pays for
    /// checking whether to wake it.
    consumer_parks: bool,
    producer_parks: bool,
    consumer_sleeping: CachePadded<AtomicBool>,
    producer_sleeping: CachePadded<AtomicBool>,
    consumer_thread: Mutex<Option<Thread>>,
    producer_thread: Mutex<Option<Thread>>,
    producer_alive: AtomicBool,
    consumer_alive: AtomicBool,
}

// SAFETY: the slots are only reached through one `Producer` and one `Consumer`, which hand
// values of `T` from one thread to the other; that needs `T: Send`, nothing more.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above: the protocol gives each slot to one side at a time.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    #[inline(always)]
    fn slot(&self, pos: usize) -> &Cell<MaybeUninit<T>> {
        &self.slots[pos & self.mask]
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // Both sides are gone: the items still between head and tail are ours to drop.
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let mut pos = head;
        while pos != tail {
            // SAFETY: positions in head..tail were written and not read; nobody else holds the
            // ring any more.
            unsafe { self.slot(pos).with_mut(|p| (*p).assume_init_drop()) };
            pos = pos.wrapping_add(1);
        }
    }
}

/// The writing end of a ring.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// The first slot and the index mask, copied out of `shared` so that reaching a slot costs
    /// no indirection and no bounds check.
    slots: *const Cell<MaybeUninit<T>>,
    mask: usize,
    tail: usize,
    cached_head: usize,
}

/// The reading end of a ring.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    slots: *const Cell<MaybeUninit<T>>,
    mask: usize,
    head: usize,
    cached_tail: usize,
}

// SAFETY: an end is used by one thread at a time (it is not `Sync`); `slots` points into the
// shared allocation that the end keeps alive through `shared`.
unsafe impl<T: Send> Send for Producer<T> {}
// SAFETY: as for `Producer`.
unsafe impl<T: Send> Send for Consumer<T> {}

/// The slot of position `pos`.
///
/// # Safety
/// `slots` must be the first slot of a live ring whose index mask is `mask`.
#[inline(always)]
unsafe fn slot_at<'a, T>(
    slots: *const Cell<MaybeUninit<T>>,
    mask: usize,
    pos: usize,
) -> &'a Cell<MaybeUninit<T>> {
    // SAFETY: `pos & mask` is below the ring's length, so the pointer stays in the allocation.
    unsafe { &*slots.add(pos & mask) }
}

/// The other end of the ring is gone; the value that could not be sent is handed back.
#[derive(Debug, PartialEq, Eq)]
pub struct Disconnected<T>(pub T);

/// Creates a ring of at least `capacity` slots (rounded up to a power of two, at least 2). The
/// flags say whether each side may park, so that the other side knows to wake it.
///
/// ```
/// let (mut tx, mut rx) = kairos::ring::ring::<u32>(4, false, false);
/// tx.try_push(1).unwrap();
/// tx.push_iter(&mut [2, 3].into_iter());
/// let mut got = vec![];
/// rx.pop_batch(8, |v| got.push(v));
/// assert_eq!(got, [1, 2, 3]);
/// ```
pub fn ring<T>(
    capacity: usize,
    producer_parks: bool,
    consumer_parks: bool,
) -> (Producer<T>, Consumer<T>) {
    let cap = capacity.max(2).next_power_of_two();
    let slots = (0..cap).map(|_| Cell::new(MaybeUninit::uninit())).collect();
    let shared = Arc::new(Shared {
        head: CachePadded::new(AtomicUsize::new(0)),
        tail: CachePadded::new(AtomicUsize::new(0)),
        slots,
        mask: cap - 1,
        consumer_parks,
        producer_parks,
        consumer_sleeping: CachePadded::new(AtomicBool::new(false)),
        producer_sleeping: CachePadded::new(AtomicBool::new(false)),
        consumer_thread: Mutex::new(None),
        producer_thread: Mutex::new(None),
        producer_alive: AtomicBool::new(true),
        consumer_alive: AtomicBool::new(true),
    });
    let (slots, mask) = (shared.slots.as_ptr(), shared.mask);
    (
        Producer {
            shared: shared.clone(),
            slots,
            mask,
            tail: 0,
            cached_head: 0,
        },
        Consumer {
            shared,
            slots,
            mask,
            head: 0,
            cached_tail: 0,
        },
    )
}

/// Wakes the thread registered in `slot` if its `sleeping` flag is up. The fence orders our
/// position store before the flag load (a store-load order that `Release`/`Acquire` alone does
/// not give); the sleeper sets its flag, fences, then re-checks the position: one of the two
/// sees the other.
#[inline]
fn wake(sleeping: &AtomicBool, slot: &Mutex<Option<Thread>>) {
    fence(Ordering::SeqCst);
    if sleeping.load(Ordering::Relaxed) {
        if let Ok(t) = slot.lock() {
            if let Some(t) = t.as_ref() {
                t.unpark();
            }
        }
    }
}

/// Parks the current thread until woken or `PARK_TIMEOUT` passes, unless `still_blocked` says
/// the wait is over after the flag went up.
fn park(sleeping: &AtomicBool, slot: &Mutex<Option<Thread>>, still_blocked: impl FnOnce() -> bool) {
    if let Ok(mut t) = slot.lock() {
        if t.is_none() {
            *t = Some(std::thread::current());
        }
    }
    sleeping.store(true, Ordering::Relaxed);
    fence(Ordering::SeqCst);
    if still_blocked() {
        std::thread::park_timeout(PARK_TIMEOUT);
    }
    sleeping.store(false, Ordering::Relaxed);
}

impl<T> Producer<T> {
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Free slots, reloading the consumer's position only when the cached one says none.
    #[inline]
    fn free(&mut self) -> usize {
        let cap = self.mask + 1;
        let free = cap - self.tail.wrapping_sub(self.cached_head);
        if free != 0 {
            return free;
        }
        self.cached_head = self.shared.head.load(Ordering::Acquire);
        cap - self.tail.wrapping_sub(self.cached_head)
    }

    /// Makes the items before `tail` visible to the consumer.
    ///
    /// The shared position is stored before this end's own copy: with the copy stored first,
    /// the ping-pong round trip was 50 to 70 ns slower (about 370 against 310 ns on the machine
    /// of BENCHMARKS.md), every time, and only in the direction where this thread's stores
    /// were the ones the other core waited for.
    #[inline]
    fn publish(&mut self, tail: usize) {
        self.shared.tail.store(tail, Ordering::Release);
        self.tail = tail;
        if self.shared.consumer_parks {
            wake(&self.shared.consumer_sleeping, &self.shared.consumer_thread);
        }
    }

    /// Pushes one value, or hands it back when the ring is full.
    // HOT PATH
    #[inline]
    pub fn try_push(&mut self, v: T) -> Result<(), T> {
        if self.free() == 0 {
            return Err(v);
        }
        // SAFETY: `free() > 0` means the consumer's head (loaded with Acquire) is past this
        // slot's previous use, so nobody reads it; only this producer writes slots. `slots` and
        // `mask` are this ring's.
        unsafe { slot_at(self.slots, self.mask, self.tail).with_mut(|p| (*p).write(v)) };
        self.publish(self.tail.wrapping_add(1));
        Ok(())
    }

    /// Pushes values from `items` while there is room, publishing them with one store. Returns
    /// how many were pushed; the rest stay in the iterator.
    pub fn push_iter(&mut self, items: &mut impl Iterator<Item = T>) -> usize {
        self.cached_head = self.shared.head.load(Ordering::Acquire);
        let room = self.free();
        /// Publishes the items written so far even if the iterator panics, so that none is
        /// left written but unpublished.
        struct Publish<'a, T> {
            producer: &'a mut Producer<T>,
            written: usize,
        }
        impl<T> Drop for Publish<'_, T> {
            fn drop(&mut self) {
                if self.written > 0 {
                    let tail = self.producer.tail.wrapping_add(self.written);
                    self.producer.publish(tail);
                }
            }
        }
        let mut guard = Publish {
            producer: self,
            written: 0,
        };
        while guard.written < room {
            let Some(v) = items.next() else { break };
            let p = &*guard.producer;
            // SAFETY: as in `try_push`, for each of the `room` free slots.
            unsafe {
                slot_at(p.slots, p.mask, p.tail.wrapping_add(guard.written))
                    .with_mut(|s| (*s).write(v))
            };
            guard.written += 1;
        }
        guard.written
    }

    /// Pushes one value, waiting while the ring is full. Fails only when the consumer is gone.
    pub fn push(&mut self, v: T, waiter: &mut Waiter) -> Result<(), Disconnected<T>> {
        let mut v = v;
        loop {
            match self.try_push(v) {
                Ok(()) => {
                    waiter.reset();
                    return Ok(());
                }
                Err(back) => v = back,
            }
            if !self.shared.consumer_alive.load(Ordering::Acquire) {
                return Err(Disconnected(v));
            }
            if waiter.step() == Step::Park {
                let shared = self.shared.clone();
                park(&shared.producer_sleeping, &shared.producer_thread, || {
                    self.free() == 0 && shared.consumer_alive.load(Ordering::Acquire)
                });
            }
        }
    }

    /// Whether the consumer has been dropped.
    pub fn is_disconnected(&self) -> bool {
        !self.shared.consumer_alive.load(Ordering::Acquire)
    }
}

impl<T> Drop for Producer<T> {
    fn drop(&mut self) {
        self.shared.producer_alive.store(false, Ordering::Release);
        wake(&self.shared.consumer_sleeping, &self.shared.consumer_thread);
    }
}

impl<T> Consumer<T> {
    pub fn capacity(&self) -> usize {
        self.shared.mask + 1
    }

    /// Items ready, reloading the producer's position only when the cached one says none.
    #[inline]
    fn available(&mut self) -> usize {
        let n = self.cached_tail.wrapping_sub(self.head);
        if n != 0 {
            return n;
        }
        self.cached_tail = self.shared.tail.load(Ordering::Acquire);
        self.cached_tail.wrapping_sub(self.head)
    }

    /// Gives the slots before `head` back to the producer. The shared position is stored
    /// before this end's own copy, as in [`Producer::publish`].
    #[inline]
    fn release(&mut self, head: usize) {
        self.shared.head.store(head, Ordering::Release);
        self.head = head;
        if self.shared.producer_parks {
            wake(&self.shared.producer_sleeping, &self.shared.producer_thread);
        }
    }

    /// Pops one value if there is one.
    // HOT PATH
    #[inline]
    pub fn try_pop(&mut self) -> Option<T> {
        if self.available() == 0 {
            return None;
        }
        // SAFETY: `available() > 0` means the producer's tail (loaded with Acquire) is past
        // this slot, so it was written and published; only this consumer reads slots.
        let v = unsafe {
            self.shared
                .slot(self.head)
                .with_mut(|p| (*p).assume_init_read())
        };
        self.release(self.head.wrapping_add(1));
        Some(v)
    }

    /// Pops up to `max` values into `f`, releasing their slots with one store. Returns how many.
    pub fn pop_batch(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        self.cached_tail = self.shared.tail.load(Ordering::Acquire);
        let n = self.available().min(max);
        if n == 0 {
            return 0;
        }
        /// Releases the items taken so far even if `f` panics, so that none is read twice.
        struct Release<'a, T> {
            consumer: &'a mut Consumer<T>,
            taken: usize,
        }
        impl<T> Drop for Release<'_, T> {
            fn drop(&mut self) {
                let head = self.consumer.head.wrapping_add(self.taken);
                self.consumer.release(head);
            }
        }
        let mut guard = Release {
            consumer: self,
            taken: 0,
        };
        for _ in 0..n {
            let c = &*guard.consumer;
            let pos = c.head.wrapping_add(guard.taken);
            // SAFETY: as in `try_pop`, for each of the `n` published slots.
            let v = unsafe { slot_at(c.slots, c.mask, pos).with_mut(|p| (*p).assume_init_read()) };
            guard.taken += 1;
            f(v);
        }
        drop(guard);
        n
    }

    /// Pops one value, waiting while the ring is empty. `None` once the producer is gone and
    /// everything it pushed has been read.
    pub fn pop(&mut self, waiter: &mut Waiter) -> Option<T> {
        loop {
            if let Some(v) = self.try_pop() {
                waiter.reset();
                return Some(v);
            }
            if !self.shared.producer_alive.load(Ordering::Acquire) {
                // Its last pushes happened before it marked itself gone.
                return self.try_pop();
            }
            if waiter.step() == Step::Park {
                let shared = self.shared.clone();
                park(&shared.consumer_sleeping, &shared.consumer_thread, || {
                    self.available() == 0 && shared.producer_alive.load(Ordering::Acquire)
                });
            }
        }
    }

    /// Whether the producer is gone and nothing is left to read.
    pub fn is_finished(&mut self) -> bool {
        !self.shared.producer_alive.load(Ordering::Acquire) && self.available() == 0
    }
}

impl<T> Drop for Consumer<T> {
    fn drop(&mut self) {
        self.shared.consumer_alive.store(false, Ordering::Release);
        wake(&self.shared.producer_sleeping, &self.shared.producer_thread);
    }
}
