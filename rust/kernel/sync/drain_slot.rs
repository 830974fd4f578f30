// SPDX-License-Identifier: GPL-2.0

//! A value read without a lock through short, counted borrows, and taken out
//! only once the borrows in progress have drained.
//!
//! A borrower reads the value for a short section that does not sleep:
//! preemption is disabled for it, as under a spinlock. The owner takes the
//! value out with [`DrainSlot::take`], which waits for the borrows in
//! progress. Between the two, an owner that changed something its borrowers
//! check after they borrow (a flag, a generation) calls
//! [`DrainSlot::wait_borrows`] to know that every borrow that may have missed
//! the change has ended: counting a borrow is fully ordered before what the
//! borrower reads next, and the wait is fully ordered after what the owner
//! wrote before it. Unlike a lock, borrowers never wait for each other nor
//! for the owner, so a borrower of two slots needs no lock order.
//!
//! The kernel's `percpu_ref` and SRCU count their readers too; this is the
//! short-section case, where the owner waits by spinning instead of for a
//! grace period, so that it may wait in atomic context.

use crate::{
    bindings,
    processor::cpu_relax,
    sync::{
        atomic::{Acquire, Atomic, Full, Relaxed, Release},
        full_barrier::smp_mb_full,
    },
    types::NotThreadSafe,
};
use core::{cell::UnsafeCell, mem::MaybeUninit, ops::Deref};

/// Borrows in progress, counted: the part of a [`DrainSlot`] that does not
/// depend on its value's type.
struct BorrowCount {
    borrows: Atomic<u32>,
}

impl BorrowCount {
    /// A count of no borrows.
    const fn new() -> Self {
        Self {
            borrows: Atomic::new(0),
        }
    }

    /// Counts a borrow and disables preemption until [`BorrowCount::leave`].
    /// The count is fully ordered before what the caller reads next.
    fn enter(&self) {
        // SAFETY: Paired with `preempt_enable` in `leave`, which every caller of `enter` calls
        // once (`SlotRef`'s drop, or at once when the slot is not full).
        unsafe { bindings::preempt_disable() };
        self.borrows.fetch_add(1, Full);
    }

    /// Ends a borrow counted by [`BorrowCount::enter`] and enables
    /// preemption again. What the borrower did is ordered before.
    fn leave(&self) {
        self.borrows.fetch_sub(1, Release);
        // SAFETY: Paired with the `preempt_disable` of the `enter` this call ends.
        unsafe { bindings::preempt_enable() };
    }

    /// Whether no borrow is in progress, looked at after a full barrier: a
    /// borrow that began before the caller's previous writes has ended when
    /// this returns `true`.
    fn is_idle(&self) -> bool {
        smp_mb_full();
        self.borrows.load(Acquire) == 0
    }

    /// Waits, spinning, until no borrow is in progress, after a full barrier.
    /// See [`DrainSlot::wait_borrows`].
    fn wait(&self) {
        smp_mb_full();
        while self.borrows.load(Acquire) != 0 {
            cpu_relax();
        }
    }
}

/// No value.
const EMPTY: u32 = 0;
/// A value being put in by [`DrainSlot::fill`].
const FILLING: u32 = 1;
/// A value that may be borrowed.
const FULL: u32 = 2;
/// A value being taken out by [`DrainSlot::take`].
const TAKING: u32 = 3;

/// A slot of at most one value, borrowed without a lock and taken out only
/// once the borrows in progress have drained.
///
/// # Invariants
///
/// `value` is initialized while `state` is [`FULL`] or [`TAKING`], and while
/// it is [`FILLING`] after the filling call wrote it. Only the call that
/// moved `state` to [`FILLING`] or [`TAKING`] touches `value` until it moves
/// `state` on. A borrow reads `value` only while it is counted in `count`
/// after it saw `state` [`FULL`].
///
/// # Examples
///
/// ```
/// use kernel::sync::drain_slot::DrainSlot;
///
/// let slot = DrainSlot::new();
/// assert!(slot.borrow().is_none());
/// assert!(slot.fill(7u32).is_ok());
/// // A second value does not fit: it is given back.
/// assert_eq!(slot.fill(8u32), Err(8));
/// {
///     let a = slot.borrow().unwrap();
///     let b = slot.borrow().unwrap();
///     assert_eq!(*a + *b, 14);
///     assert!(!slot.is_idle());
/// }
/// assert!(slot.is_idle());
/// slot.wait_borrows();
/// assert_eq!(slot.take(), Some(7));
/// assert!(slot.borrow().is_none());
/// assert_eq!(slot.take(), None);
/// // Filled again after it was emptied.
/// assert!(slot.fill(9u32).is_ok());
/// assert_eq!(slot.borrow().map(|v| *v), Some(9));
/// ```
pub struct DrainSlot<T> {
    value: UnsafeCell<MaybeUninit<T>>,
    state: Atomic<u32>,
    count: BorrowCount,
}

// SAFETY: Borrows hand out `&T` to whichever thread borrows (`T: Sync`), and `fill` and `take`
// move a `T` in from and out to whichever thread calls them (`T: Send`); `state` and `count`
// are atomics.
unsafe impl<T: Send + Sync> Sync for DrainSlot<T> {}
// SAFETY: Moving the slot moves its value, if any, with it (`T: Send`).
unsafe impl<T: Send> Send for DrainSlot<T> {}

impl<T> DrainSlot<T> {
    /// An empty slot.
    pub const fn new() -> Self {
        // INVARIANT: `EMPTY`: the value is not initialized.
        Self {
            value: UnsafeCell::new(MaybeUninit::uninit()),
            state: Atomic::new(EMPTY),
            count: BorrowCount::new(),
        }
    }

    /// Puts `value` in the slot; gives it back when the slot is not empty.
    pub fn fill(&self, value: T) -> Result<(), T> {
        if self.state.cmpxchg(EMPTY, FILLING, Acquire).is_err() {
            return Err(value);
        }
        // SAFETY: `FILLING` was set by this call: by the type invariant nothing else touches
        // `value` until `state` moves on, and the slot was empty, so nothing is overwritten.
        unsafe { (*self.value.get()).write(value) };
        // INVARIANT: The value was written before `FULL` is published.
        self.state.store(FULL, Release);
        Ok(())
    }

    /// Borrows the value, if the slot holds one, until the returned
    /// reference is dropped: a short section that must not sleep, with
    /// preemption disabled. Counting the borrow is fully ordered before what
    /// the caller reads next.
    pub fn borrow(&self) -> Option<SlotRef<'_, T>> {
        self.count.enter();
        if self.state.load(Acquire) != FULL {
            self.count.leave();
            return None;
        }
        // INVARIANT: The borrow is counted and saw `FULL`.
        Some(SlotRef {
            slot: self,
            _not_send: NotThreadSafe,
        })
    }

    /// Waits until every borrow in progress has ended, after a full barrier
    /// that orders the caller's writes before: a borrow that began before
    /// them has ended on return, and one that begins after sees them.
    ///
    /// Spins: borrows neither sleep nor get preempted, so the wait is short
    /// as long as borrows that begin after the caller's change give up at
    /// once on seeing it (a new borrow counts while it looks), and it may be
    /// called in process context with preemption disabled or a spinlock
    /// held. Not in interrupt context (the borrow it waits for may be the
    /// one it interrupted), and not while holding a borrow.
    pub fn wait_borrows(&self) {
        self.count.wait();
    }

    /// Whether no borrow is in progress, as [`DrainSlot::wait_borrows`]
    /// would have found without waiting.
    pub fn is_idle(&self) -> bool {
        self.count.is_idle()
    }

    /// Takes the value out, once every borrow in progress has ended; a
    /// borrow that begins meanwhile finds the slot empty. `None` when the
    /// slot holds no value (or another call is taking it). Spins as
    /// [`DrainSlot::wait_borrows`] does.
    pub fn take(&self) -> Option<T> {
        self.state.cmpxchg(FULL, TAKING, Full).ok()?;
        self.count.wait();
        // SAFETY: `TAKING` was set by this call from `FULL`: by the type invariant the value is
        // initialized and nothing else touches it; borrows that saw `FULL` have ended (the
        // wait) and later ones see `TAKING` and do not read it. It is read out once: the slot
        // is marked empty below.
        let value = unsafe { (*self.value.get()).assume_init_read() };
        // INVARIANT: The value was moved out.
        self.state.store(EMPTY, Release);
        Some(value)
    }
}

impl<T> Default for DrainSlot<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Drop for DrainSlot<T> {
    fn drop(&mut self) {
        // No borrow outlives the slot and no other call runs: `&mut self`.
        if self.state.load(Relaxed) == FULL {
            // SAFETY: `FULL`: by the type invariant the value is initialized; it is dropped once,
            // as the slot itself goes.
            unsafe { (*self.value.get()).assume_init_drop() };
        }
    }
}

/// A borrow of a [`DrainSlot`]'s value; ends when dropped. Not [`Send`]:
/// preemption stays disabled on the borrowing CPU until then.
///
/// # Invariants
///
/// The borrow is counted in `slot`'s count and saw its state full.
pub struct SlotRef<'a, T> {
    slot: &'a DrainSlot<T>,
    _not_send: NotThreadSafe,
}

impl<T> Deref for SlotRef<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: By the type invariant the borrow is counted after it saw `FULL`, so the value is
        // initialized and `take` waits for this borrow's end before it moves it out.
        unsafe { (*self.slot.value.get()).assume_init_ref() }
    }
}

impl<T> Drop for SlotRef<'_, T> {
    fn drop(&mut self) {
        self.slot.count.leave();
    }
}
