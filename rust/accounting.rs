// SPDX-License-Identifier: GPL-2.0

//! What pinning costs, in one place: the module's own budget of pinned pages
//! (`max_pinned_pages`) and the user's locked memory (`RLIMIT_MEMLOCK`,
//! charged to the user as io_uring does, and shown in the process's
//! `VmPin`).
//!
//! A registration charges each batch of pages as it pins it, so it never
//! holds a charge for pages it did not pin, and releases every charge only
//! after its pages are unpinned (its teardown, which may be deferred), as
//! io_uring and ib_umem do: a user can never hold more pinned pages than
//! charged. A pool's chunk is charged to the pool, which releases it once
//! the chunk's pages have left the mapping. Releasing is atomic arithmetic
//! only.

use crate::stats::GLOBAL_PINNED;
use kernel::{
    mm::pin::LockedMemory,
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
};

/// Pages the module may pin in all, `u64::MAX` for no limit.
fn budget_pages() -> u64 {
    match crate::max_pinned_pages() {
        0 => u64::MAX,
        n => n,
    }
}

/// Charges `pages` to `counter` unless that takes it past `limit`.
fn charge_counter(counter: &Atomic<u64>, pages: u64, limit: u64) -> Result {
    let mut cur = counter.load(Relaxed);
    loop {
        let new = cur
            .checked_add(pages)
            .filter(|&n| n <= limit)
            .ok_or(ENOSPC)?;
        match counter.cmpxchg(cur, new, Relaxed) {
            Ok(_) => return Ok(()),
            Err(old) => cur = old,
        }
    }
}

/// The charges of one registration: the module budget and the user's locked
/// memory. Released on drop if not before.
pub(crate) struct Charges {
    locked: LockedMemory,
    /// Pages charged to [`GLOBAL_PINNED`].
    budget: u64,
}

impl Charges {
    /// Creates empty charges for the calling task's user and address space.
    pub(crate) fn for_current() -> Result<Self> {
        Ok(Self {
            locked: LockedMemory::for_current()?,
            budget: 0,
        })
    }

    /// Creates empty charges for the same user and address space as `self`,
    /// for pages charged later by a worker on that task's behalf.
    pub(crate) fn new_like(&self) -> Self {
        Self {
            locked: self.locked.new_like(),
            budget: 0,
        }
    }

    /// Charges `pages` more pages: `ENOSPC` past the module budget, `ENOMEM`
    /// past `RLIMIT_MEMLOCK`. Nothing is charged on failure.
    pub(crate) fn charge(&mut self, pages: usize) -> Result {
        let n = pages as u64;
        charge_counter(&GLOBAL_PINNED, n, budget_pages())?;
        if let Err(e) = self.locked.charge(pages) {
            GLOBAL_PINNED.fetch_sub(n, Relaxed);
            return Err(e);
        }
        self.budget += n;
        Ok(())
    }

    /// The pages charged now.
    pub(crate) fn pages(&self) -> u64 {
        self.budget
    }

    /// Who the locked memory is charged to, as a number that tells users
    /// apart while the charges exist.
    pub(crate) fn user(&self) -> usize {
        self.locked.user_key()
    }

    /// Releases everything charged. Never sleeps.
    pub(crate) fn release(&mut self) {
        GLOBAL_PINNED.fetch_sub(core::mem::take(&mut self.budget), Relaxed);
        self.locked.release();
    }
}

impl Drop for Charges {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_accounting)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_is_charged_up_to_its_limit_exactly() {
        let c = Atomic::new(0u64);
        assert_eq!(charge_counter(&c, 6, 10), Ok(()));
        assert_eq!(charge_counter(&c, 4, 10), Ok(()));
        assert_eq!(charge_counter(&c, 1, 10), Err(ENOSPC));
        assert_eq!(c.load(Relaxed), 10);
        // Overflow is refused, not wrapped.
        assert_eq!(charge_counter(&c, u64::MAX, u64::MAX), Err(ENOSPC));
        assert_eq!(c.load(Relaxed), 10);
    }
}
