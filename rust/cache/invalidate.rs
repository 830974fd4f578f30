// SPDX-License-Identifier: GPL-2.0

//! How a registration follows the memory under it: the MMU interval
//! notifier's callback, which ends it or suspends it, and the revalidation
//! of a suspended one against the page tables; for a watch-only
//! registration, the page frames it records when it is created.

use super::{
    job,
    registration::{Registration, Revalidated},
    Cache,
};
use crate::{
    stats::{bump, TOTALS},
    uapi,
};
use kernel::{
    mm::{
        hmm::PageState,
        mmu_notifier::{Event, IntervalNotifierOps, Range},
        pin::{Extents, PinnedPages},
        virt::flags,
        MmWithUser,
    },
    page::PAGE_SIZE,
    prelude::*,
    sync::{atomic::Relaxed, Arc},
    task::resched::{cond_resched, fatal_signal_pending},
};

/// Pages compared per look at the page tables when revalidating: a page
/// table's worth.
const REVALIDATE_BATCH: usize = 512;

/// Looks at the page tables a suspended registration makes before giving up
/// for now (each is restarted by an invalidation of its range).
const REVALIDATE_TRIES: u32 = 4;

/// The block a "clear" covers when the kernel splits a huge page mapping or
/// a mapping that could hold one (2 MiB on x86-64).
const HUGE_BLOCK: usize = 512 * PAGE_SIZE;

/// Fills `out` with the page frames `frames` records for the pages from
/// index `first` on; `EINVAL` when it records fewer.
fn recorded_pfns(frames: &Extents, first: usize, out: &mut [u64]) -> Result {
    let extents = frames.as_slice();
    let mut idx = frames
        .find(u32::try_from(first).map_err(|_| EINVAL)?)
        .ok_or(EINVAL)?;
    for (i, slot) in out.iter_mut().enumerate() {
        let index = u32::try_from(first + i).map_err(|_| EINVAL)?;
        let mut e = extents.get(idx).ok_or(EINVAL)?;
        if index - e.first >= e.pages {
            idx += 1;
            e = extents.get(idx).ok_or(EINVAL)?;
        }
        *slot = e.pfn + u64::from(index - e.first);
    }
    Ok(())
}

impl Registration {
    /// Suspends the registration after an invalidation that may have left
    /// its pages where they were: no data moves through it until it is
    /// revalidated, which the context's deferred work does soon (and any use
    /// before). Called from the notifier callback: neither allocates nor
    /// sleeps.
    fn suspend(this: &Self, range: &Range<'_>, cur_seq: u64, cause: usize) {
        let newly = {
            let mut st = this.state.lock();
            this.notifier.set_seq(cur_seq);
            // A protection change since the last look outweighs a clear: it is what a failed
            // revalidation then ends it for.
            if !this.is_suspended() || cause == uapi::INVAL_PROTECTION_VMA {
                st.suspended_by = cause;
            }
            // The pages of the registration the clear covers.
            let base = this.info.page_addr();
            let first = range.start().saturating_sub(base) / PAGE_SIZE;
            let end = range
                .end()
                .saturating_sub(base)
                .div_ceil(PAGE_SIZE)
                .min(this.info.npages);
            let first = first.min(end);
            st.unchecked = Some(match st.unchecked {
                Some((f, e)) => (f.min(first), e.max(end)),
                None => (first, end),
            });
            this.is_live() && !this.suspended.xchg(true, Relaxed)
        };
        // A copy in progress has ended once this returns; once `suspended` is set none starts.
        this.pages.wait_borrows();
        if !newly {
            // Ended, or suspended and queued for revalidation already.
            return;
        }
        let cache = &this.cache;
        let mut t = cache.inner.lock();
        let Some(me) = t.get_seq(this.info.keys.seq).cloned() else {
            return;
        };
        bump(&mut t.stats.suspensions, &TOTALS.suspensions, 1);
        me.set_word(&t, uapi::WORD_SUSPENDED);
        t.emit(&me, uapi::EVENT_SUSPENDED, cause);
        t.queue_revalidation(me);
        Cache::defer(cache, job::REVALIDATE);
        drop(t);
    }

    /// Whether every page the invalidations since the suspension may have
    /// changed still maps its pinned page with the registered access, as of
    /// the notifier's read sequence `seq`. `EBUSY` when an invalidation began
    /// since, `EINTR` on a fatal signal between page tables. May sleep; no
    /// lock held.
    fn pages_in_place(&self, seq: u64) -> Result<bool> {
        let Some(mm) = self.cache.mm.mmget_not_zero() else {
            // The address space is being torn down.
            return Ok(false);
        };
        if self.info.watch && !self.mappings_grant_access(&mm) {
            return Ok(false);
        }
        let (first, end) = self.state.lock().unchecked.unwrap_or((0, self.info.npages));
        let writable = self.info.writable();
        let start = self.info.page_addr();
        let mut expected = KVec::from_elem(0u64, REVALIDATE_BATCH, GFP_KERNEL)?;
        let mut seen = KVec::from_elem(PageState::default(), REVALIDATE_BATCH, GFP_KERNEL)?;
        let mut at = first;
        while at < end {
            let n = (end - at).min(REVALIDATE_BATCH);
            let (Some(expected), Some(seen)) = (expected.get_mut(..n), seen.get_mut(..n)) else {
                return Err(EINVAL);
            };
            if let Some(p) = self.pages.borrow() {
                p.pfns(at, expected)?;
            } else {
                let st = self.state.lock();
                match &st.frames {
                    Some(f) => recorded_pfns(f, at, expected)?,
                    None => return Ok(false),
                }
            }
            self.notifier
                .snapshot(&mm, seq, start + at * PAGE_SIZE, seen)?;
            // A watch follows the frames only: write protection (fork's, for one) leaves the
            // memory where it was, and a write that copies the page is a "clear" of its own.
            let writable = writable && !self.info.watch;
            let intact = expected
                .iter()
                .zip(seen.iter())
                .all(|(&pfn, s)| s.pfn() == Some(pfn) && (!writable || s.writable()));
            if !intact {
                return Ok(false);
            }
            at += n;
            if fatal_signal_pending() {
                return Err(EINTR);
            }
            cond_resched();
        }
        Ok(true)
    }

    /// Whether every page of the range lies in a mapping that still grants
    /// the access the watch watches (reading; writing with a local write
    /// right). Takes `mm`'s `mmap_lock` for reading; may sleep.
    fn mappings_grant_access(&self, mm: &MmWithUser) -> bool {
        let need = if self.info.access & uapi::ACCESS_LOCAL_WRITE != 0 {
            flags::READ | flags::WRITE
        } else {
            flags::READ
        };
        let start = self.info.page_addr();
        let end = start + self.info.npages * PAGE_SIZE;
        let guard = mm.mmap_read_lock();
        let mut at = start;
        while at < end {
            let Some(vma) = guard.vma_lookup(at) else {
                return false;
            };
            if vma.flags() & need != need {
                return false;
            }
            at = vma.end();
            cond_resched();
        }
        true
    }

    /// Revalidates a suspended registration: waits for the invalidation to
    /// finish, then looks at the page tables. It resumes when every page
    /// still maps its pinned page with the registered access, and ends
    /// otherwise (counted as a revalidation failure and under the "clear"
    /// cause). `EAGAIN` when invalidations kept restarting the look (it stays
    /// suspended). Process context, no lock held; may sleep.
    pub(crate) fn revalidate(this: &Arc<Self>) -> Result<Revalidated> {
        for _ in 0..REVALIDATE_TRIES {
            if !this.is_live() {
                return Ok(Revalidated::Ended);
            }
            if !this.is_suspended() {
                return Ok(Revalidated::Usable);
            }
            let seq = this.notifier.read_begin();
            let intact = match this.pages_in_place(seq) {
                Ok(intact) => intact,
                Err(e) if e == EBUSY => continue,
                // Ended meanwhile (its notifier removed), or part of the range is a mapping
                // whose page tables cannot be read (`EFAULT`: not the pinned pages).
                Err(_) if !this.is_live() => return Ok(Revalidated::Ended),
                Err(e) if e == EFAULT => false,
                Err(e) => return Err(e),
            };
            let cache = &this.cache;
            let mut t = cache.inner.lock();
            let cause;
            {
                let mut st = this.state.lock();
                if !this.is_live() {
                    return Ok(Revalidated::Ended);
                }
                if this.notifier.read_retry(seq) {
                    continue;
                }
                cause = st.suspended_by;
                if intact {
                    st.unchecked = None;
                    st.suspended_by = uapi::INVAL_CLEAR;
                    if this.suspended.xchg(false, Relaxed) {
                        bump(&mut t.stats.resumptions, &TOTALS.resumptions, 1);
                        this.set_word(&t, 0);
                        // Only for a watch: readers of the event ring built before version 4,
                        // which cannot make watches, never see an event they did not know.
                        if this.info.watch {
                            t.emit(this, uapi::EVENT_RESUMED, cause);
                        }
                    }
                    drop(st);
                    return Ok(Revalidated::Usable);
                }
            }
            let ended = Self::unpublish(&mut t, this.info.keys.seq);
            if ended.is_some() {
                if let Some(n) = t.stats.invalidations.get_mut(cause) {
                    *n += 1;
                }
                bump(
                    &mut t.stats.revalidation_failures,
                    &TOTALS.revalidation_failures,
                    1,
                );
                t.emit(this, uapi::EVENT_ENDED, cause);
            }
            drop(t);
            if let Some(r) = ended {
                r.teardown();
            }
            return Ok(Revalidated::Ended);
        }
        Err(EAGAIN)
    }
}

/// Whether `range` is exactly one aligned huge page block: what the kernel
/// clears when it splits a huge page mapping, or a mapping that could hold
/// one, leaving the pages where they were.
fn is_huge_block(range: &Range<'_>) -> bool {
    range.start() % HUGE_BLOCK == 0 && range.end().checked_sub(range.start()) == Some(HUGE_BLOCK)
}

impl Registration {
    /// Whether a page the watch would record is absent: no frame, or not
    /// writable when the watch has a local write right.
    fn absent(&self, s: &PageState) -> bool {
        s.pfn().is_none() || (self.info.writable() && !s.writable())
    }

    /// Faults in the watch's absent pages as a pin would (with write access
    /// when it has a local write right), a batch at a time, without keeping
    /// them pinned or charged. Done outside any read sequence of the
    /// notifier: a fault may invalidate the range itself (a copy on write, a
    /// migration), which would make a recording under a sequence fail.
    /// `EINTR` on a fatal signal. Process context of the address space's
    /// owner, no lock held; may sleep.
    pub(super) fn fault_in(&self, mm: &MmWithUser) -> Result {
        let npages = self.info.npages;
        let start = self.info.page_addr();
        let mut seen = KVec::from_elem(
            PageState::default(),
            npages.min(REVALIDATE_BATCH),
            GFP_KERNEL,
        )?;
        let mut at = 0;
        while at < npages {
            let n = (npages - at).min(REVALIDATE_BATCH);
            let seen = seen.get_mut(..n).ok_or(EINVAL)?;
            let addr = start + at * PAGE_SIZE;
            let seq = self.notifier.read_begin();
            // A batch that changed while it was looked at is faulted in too.
            let present = self.notifier.snapshot(mm, seq, addr, seen).is_ok()
                && !seen.iter().any(|s| self.absent(s));
            if !present {
                drop(PinnedPages::pin_current(
                    addr,
                    n,
                    self.info.writable(),
                    &mut |_| Ok(()),
                )?);
            }
            at += n;
            if fatal_signal_pending() {
                return Err(EINTR);
            }
            cond_resched();
        }
        Ok(())
    }

    /// Records the page frames mapped at the watch's pages as of the
    /// notifier's read sequence `seq`. `EBUSY` when an invalidation began
    /// since `seq`, `EAGAIN` when a page is absent (see
    /// [`Registration::fault_in`]), `EINTR` on a fatal signal. Process
    /// context, no lock held; may sleep.
    pub(super) fn record_frames(&self, mm: &MmWithUser, seq: u64) -> Result<Extents> {
        let npages = self.info.npages;
        let start = self.info.page_addr();
        let mut seen = KVec::from_elem(
            PageState::default(),
            npages.min(REVALIDATE_BATCH),
            GFP_KERNEL,
        )?;
        let mut frames = Extents::new();
        let mut at = 0;
        while at < npages {
            let n = (npages - at).min(REVALIDATE_BATCH);
            let seen = seen.get_mut(..n).ok_or(EINVAL)?;
            let addr = start + at * PAGE_SIZE;
            self.notifier.snapshot(mm, seq, addr, seen)?;
            for s in seen.iter() {
                if self.absent(s) {
                    return Err(EAGAIN);
                }
                frames.push_page(s.pfn().ok_or(EAGAIN)?)?;
            }
            at += n;
            if fatal_signal_pending() {
                return Err(EINTR);
            }
            cond_resched();
        }
        frames.shrink();
        Ok(frames)
    }
}

/// The `MEMREG_INVAL_*` cause a notifier event ends a registration with, or
/// `None` for events that leave its pages where they are. The mapping is
/// explicit so the ABI does not follow the kernel's enum order; events this
/// ABI does not name are counted as "other".
pub(crate) fn inval_cause(event: Event) -> Option<usize> {
    match event {
        // The pinned pages stay mapped where they were: fork's write protection of a
        // copy-on-write mapping (pinned anonymous pages are copied for the child, the parent
        // keeps them), writeback cleaning, soft-dirty tracking.
        Event::ProtectionPage | Event::SoftDirty => None,
        Event::Unmap => Some(uapi::INVAL_UNMAP),
        Event::Clear => Some(uapi::INVAL_CLEAR),
        Event::ProtectionVma => Some(uapi::INVAL_PROTECTION_VMA),
        Event::Release => Some(uapi::INVAL_RELEASE),
        Event::Migrate => Some(uapi::INVAL_MIGRATE),
        Event::Exclusive => Some(uapi::INVAL_EXCLUSIVE),
        Event::Other(_) => Some(uapi::INVAL_OTHER),
    }
}

impl IntervalNotifierOps for Registration {
    fn invalidate(this: &Self, range: &Range<'_>, cur_seq: u64) -> bool {
        let Some(cause) = inval_cause(range.event()) else {
            return true;
        };
        // A copy through the pages is in progress, and the caller (the OOM reaper) may not wait
        // for it: it tries again later. Nothing changed yet. A copy that begins after this look
        // is waited for below; it is short and does not sleep.
        if !range.may_block() && !this.pages.is_idle() {
            return false;
        }
        // Many clears leave the pinned pages mapped where they were (a mapping split anywhere
        // in the same 2 MiB block, `MADV_DONTFORK` or `mlock` of the range, fork of a
        // PMD-mapped THP, failed compaction of pinned shmem): look again before ending it. A
        // watch's pages are not pinned, so a clear of some of its pages (`MADV_DONTNEED`,
        // `MADV_FREE`, a copy on write) is taken at its word; only one over a whole huge page
        // block, which splits leave in place, is looked at again.
        if cause == uapi::INVAL_CLEAR && (!this.info.watch || is_huge_block(range)) {
            Self::suspend(this, range, cur_seq, cause);
            return true;
        }
        // A protection change leaves a watch's frames in place: it ends only if its mapping no
        // longer grants what it watches, which its revalidation looks at.
        if cause == uapi::INVAL_PROTECTION_VMA && this.info.watch {
            Self::suspend(this, range, cur_seq, cause);
            return true;
        }
        {
            let _st = this.state.lock();
            this.notifier.set_seq(cur_seq);
            this.live.store(false, Relaxed);
        }
        // A copy in progress has ended once this returns; once `live` is clear none starts.
        this.pages.wait_borrows();
        // Leave the table and queue the teardown; neither allocates nor sleeps.
        Self::retire(this, cause);
        true
    }
}

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_invalidate)]
mod tests {
    use super::*;

    #[test]
    fn every_event_has_an_explicit_cause() {
        assert_eq!(inval_cause(Event::Unmap), Some(uapi::INVAL_UNMAP));
        assert_eq!(inval_cause(Event::Clear), Some(uapi::INVAL_CLEAR));
        assert_eq!(
            inval_cause(Event::ProtectionVma),
            Some(uapi::INVAL_PROTECTION_VMA)
        );
        assert_eq!(inval_cause(Event::Release), Some(uapi::INVAL_RELEASE));
        assert_eq!(inval_cause(Event::Migrate), Some(uapi::INVAL_MIGRATE));
        assert_eq!(inval_cause(Event::Exclusive), Some(uapi::INVAL_EXCLUSIVE));
        assert_eq!(inval_cause(Event::ProtectionPage), None);
        assert_eq!(inval_cause(Event::SoftDirty), None);
        // A kernel event this ABI does not know lands in "other", never out of bounds.
        assert_eq!(inval_cause(Event::Other(1000)), Some(uapi::INVAL_OTHER));
    }
}
