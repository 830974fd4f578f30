// SPDX-License-Identifier: GPL-2.0

//! How a registration follows the memory under it: the MMU interval
//! notifier's callback, which ends it or suspends it, and the revalidation
//! of a suspended one against the page tables.

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

impl Registration {
    /// Suspends the registration after an invalidation that may have left
    /// its pages where they were: no data moves through it until it is
    /// revalidated, which the context's deferred work does soon (and any use
    /// before). Called from the notifier callback: neither allocates nor
    /// sleeps.
    fn suspend(this: &Self, range: &Range<'_>, cur_seq: u64) {
        let newly = {
            // Taking the lock waits for a copy in progress; once `suspended` is set no copy
            // starts.
            let mut st = this.state.lock();
            this.notifier.set_seq(cur_seq);
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
        t.emit(&me, uapi::EVENT_SUSPENDED, uapi::INVAL_CLEAR);
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
            {
                let st = self.state.lock();
                match &st.pinned {
                    Some(p) => p.pfns(at, expected)?,
                    None => return Ok(false),
                }
            }
            self.notifier
                .snapshot(&mm, seq, start + at * PAGE_SIZE, seen)?;
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
            {
                let mut st = this.state.lock();
                if !this.is_live() {
                    return Ok(Revalidated::Ended);
                }
                if this.notifier.read_retry(seq) {
                    continue;
                }
                if intact {
                    st.unchecked = None;
                    if this.suspended.xchg(false, Relaxed) {
                        bump(&mut t.stats.resumptions, &TOTALS.resumptions, 1);
                        this.set_word(&t, 0);
                    }
                    drop(st);
                    return Ok(Revalidated::Usable);
                }
            }
            let ended = Self::unpublish(&mut t, this.info.keys.seq);
            if ended.is_some() {
                if let Some(n) = t.stats.invalidations.get_mut(uapi::INVAL_CLEAR) {
                    *n += 1;
                }
                bump(
                    &mut t.stats.revalidation_failures,
                    &TOTALS.revalidation_failures,
                    1,
                );
                t.emit(this, uapi::EVENT_ENDED, uapi::INVAL_CLEAR);
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
        if cause == uapi::INVAL_CLEAR {
            // Many clears leave the pinned pages mapped where they were (a mapping split
            // anywhere in the same 2 MiB block, `MADV_DONTFORK` or `mlock` of the range, fork
            // of a PMD-mapped THP, failed compaction of pinned shmem): look again before ending
            // it.
            Self::suspend(this, range, cur_seq);
            return true;
        }
        {
            // Taking the lock waits for a copy in progress; once `live` is clear no copy starts.
            let _st = this.state.lock();
            this.notifier.set_seq(cur_seq);
            this.live.store(false, Relaxed);
        }
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
