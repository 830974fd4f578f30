// SPDX-License-Identifier: GPL-2.0

//! Looking at what an address space maps, without faulting anything in
//! (heterogeneous memory management).
//!
//! A driver that keeps pages of a user range (pinned, or mirrored in a
//! device) learns from its [`IntervalNotifier`] that the range may have
//! changed. Many events leave the pages exactly where they were, so the driver
//! can look again: [`IntervalNotifier::snapshot`] reports, for each page,
//! which page frame the page tables map there and with which access, as of a
//! read sequence of the notifier, and fails with `EBUSY` when an invalidation
//! began meanwhile.
//!
//! C header: [`include/linux/hmm.h`](srctree/include/linux/hmm.h)
#![cfg(CONFIG_HMM_MIRROR)]

use crate::{
    bindings,
    error::to_result,
    mm::{
        mmu_notifier::{IntervalNotifier, IntervalNotifierOps},
        MmWithUser,
    },
    page::PAGE_SIZE,
    prelude::*,
};

const VALID: usize = bindings::hmm_pfn_flags_HMM_PFN_VALID;
const WRITE: usize = bindings::hmm_pfn_flags_HMM_PFN_WRITE;
const ERROR: usize = bindings::hmm_pfn_flags_HMM_PFN_ERROR;
const FLAGS: usize = bindings::hmm_pfn_flags_HMM_PFN_FLAGS;

/// What the page tables map at one page, as `hmm_range_fault` reports it.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub struct PageState(usize);

impl PageState {
    /// The page frame mapped there, if any.
    pub fn pfn(self) -> Option<u64> {
        (self.0 & VALID != 0 && self.0 & ERROR == 0).then_some((self.0 & !FLAGS) as u64)
    }

    /// Whether the mapping allows writing (without a fault).
    pub fn writable(self) -> bool {
        self.pfn().is_some() && self.0 & WRITE != 0
    }
}

impl<T: IntervalNotifierOps> IntervalNotifier<T> {
    /// Fills `out` with what `mm` maps at the `out.len()` pages from the
    /// page-aligned address `start`, as of `seq` (from
    /// [`IntervalNotifier::read_begin`]), faulting nothing in: a page that is
    /// not present, or not mapped at all, is reported without a frame.
    ///
    /// Takes `mm`'s `mmap_lock` for reading, so the caller holds no lock the
    /// notifier callback takes. The result is only good until the next
    /// invalidation: check [`IntervalNotifier::read_retry`] under the lock the
    /// callback takes before relying on it.
    ///
    /// Errors: `EBUSY` when an invalidation of the interval began since
    /// `seq` (read again); `EFAULT` when part of the range is a mapping whose
    /// page tables cannot be read from (`VM_IO`, `VM_PFNMAP`);
    /// `EINVAL` when the notifier is not inserted, `mm` is not the address
    /// space it watches, `start` is not aligned or the range wraps. May sleep.
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::kunit_mm::UserMapping;
    /// use kernel::mm::hmm::PageState;
    /// use kernel::mm::mmu_notifier::{
    ///     impl_has_interval_notifier, IntervalNotifier, IntervalNotifierOps, Range,
    /// };
    /// use kernel::mm::pin::PinnedPages;
    /// use kernel::page::PAGE_SIZE;
    /// use kernel::sync::Arc;
    ///
    /// #[pin_data]
    /// struct Watch {
    ///     #[pin]
    ///     notifier: IntervalNotifier<Watch>,
    /// }
    /// impl_has_interval_notifier! { impl HasIntervalNotifier<Self> for Watch { self.notifier } }
    /// impl IntervalNotifierOps for Watch {
    ///     fn invalidate(this: &Self, _range: &Range<'_>, cur_seq: u64) -> bool {
    ///         this.notifier.set_seq(cur_seq);
    ///         true
    ///     }
    /// }
    ///
    /// let map = UserMapping::anonymous(4 * PAGE_SIZE)?;
    /// let current = kernel::current!();
    /// let mm = current.mm().ok_or(EINVAL)?;
    /// let watch = Arc::pin_init(pin_init!(Watch { notifier <- IntervalNotifier::new() }),
    ///                           GFP_KERNEL)?;
    /// let sub = IntervalNotifier::insert(watch.clone(), mm, map.addr(), 4 * PAGE_SIZE)?;
    /// // Two pages are pinned (so present); the other two were never touched.
    /// let pinned = PinnedPages::pin_current(map.addr(), 2, true, &mut |_| Ok(()))?;
    /// let seq = watch.notifier.read_begin();
    /// let mut seen = [PageState::default(); 4];
    /// watch.notifier.snapshot(mm, seq, map.addr(), &mut seen)?;
    /// assert_eq!(seen[0].pfn(), Some(pinned.extents()[0].pfn));
    /// assert!(seen[0].writable());
    /// assert_eq!(seen[3].pfn(), None);
    /// // An invalidation since `seq` makes the snapshot fail.
    /// map.unmap(3 * PAGE_SIZE, PAGE_SIZE)?;
    /// assert_eq!(watch.notifier.snapshot(mm, seq, map.addr(), &mut seen), Err(EBUSY));
    /// // A fresh look finds no page there any more.
    /// let seq = watch.notifier.read_begin();
    /// watch.notifier.snapshot(mm, seq, map.addr(), &mut seen)?;
    /// assert_eq!(seen[0].pfn(), Some(pinned.extents()[0].pfn));
    /// assert_eq!(seen[3].pfn(), None);
    /// drop(pinned);
    /// drop(sub);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn snapshot(
        &self,
        mm: &MmWithUser,
        seq: u64,
        start: usize,
        out: &mut [PageState],
    ) -> Result {
        if !self.is_inserted() || !self.watches(mm) || start % PAGE_SIZE != 0 {
            return Err(EINVAL);
        }
        let end = out
            .len()
            .checked_mul(PAGE_SIZE)
            .and_then(|len| start.checked_add(len))
            .ok_or(EINVAL)?;
        if out.is_empty() {
            return Ok(());
        }
        let mut range = bindings::hmm_range {
            notifier: self.as_raw(),
            notifier_seq: seq as usize,
            start,
            end,
            // CAST: `PageState` is a transparent `usize`, which is `unsigned long`.
            hmm_pfns: out.as_mut_ptr().cast(),
            // Nothing is required of a page, so nothing is faulted in.
            default_flags: 0,
            pfn_flags_mask: 0,
            dev_private_owner: core::ptr::null_mut(),
        };
        let _lock = mm.mmap_read_lock();
        // SAFETY: `range` describes `out.len()` pages and points at `out.len()` writable
        // entries. Its notifier's memory lives as long as `self`; the notifier was inserted into
        // `mm` (checked above), so `hmm_range_fault` walks `mm`, which has users (the caller's
        // `MmWithUser`) and whose `mmap_lock` is held for reading. If the notifier is removed
        // meanwhile, its subscription still names `mm` and its sequence only compares, which
        // `hmm_range_fault` reports as `EBUSY` when it moved.
        to_result(unsafe { bindings::hmm_range_fault(&mut range) })
    }
}
