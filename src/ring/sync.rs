//! The atomics and cells the ring uses: std's, or loom's when model checking
//! (`--cfg kairos_loom`), so that the code loom explores is the code that ships. The cfg has
//! Kairos's own name because `RUSTFLAGS` reaches every crate, and under a plain `--cfg loom`
//! dependencies with a loom mode of their own (tokio, through rdkafka) stop compiling.

#[cfg(kairos_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
#[cfg(kairos_loom)]
pub(crate) use loom::sync::Arc;
#[cfg(not(kairos_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
#[cfg(not(kairos_loom))]
pub(crate) use std::sync::Arc;

/// An `UnsafeCell` whose accesses loom can track.
pub(crate) struct Cell<T> {
    #[cfg(kairos_loom)]
    inner: loom::cell::UnsafeCell<T>,
    #[cfg(not(kairos_loom))]
    inner: std::cell::UnsafeCell<T>,
}

impl<T> Cell<T> {
    pub(crate) fn new(v: T) -> Self {
        Cell {
            #[cfg(kairos_loom)]
            inner: loom::cell::UnsafeCell::new(v),
            #[cfg(not(kairos_loom))]
            inner: std::cell::UnsafeCell::new(v),
        }
    }

    /// # Safety
    /// No other access to the cell may happen at the same time.
    #[inline(always)]
    pub(crate) unsafe fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(kairos_loom)]
        {
            self.inner.with_mut(f)
        }
        #[cfg(not(kairos_loom))]
        {
            f(self.inner.get())
        }
    }
}
