// SPDX-License-Identifier: GPL-2.0

//! A registration: pinned pages of one user range, their translation entries,
//! and the interval notifier that invalidates them.
//!
//! A region's life: created with its notifier inserted, pinned, then
//! published (`live`) into its context's table under the table lock. It ends
//! by deregistration (last reference), by invalidation (the notifier), or when
//! its context is released. Ending is in two steps: first `live` is cleared
//! under the region lock (no data moves through the region afterwards), then
//! in process context the notifier is removed and the pages are unpinned
//! ([`Region::teardown`]). The notifier callback only does the first step and
//! queues the second on the context's workqueue.
//!
//! Locks: `Region::state` nests inside `ContextShared::table`; see
//! `context.rs` for the whole order.

use crate::{context::ContextShared, key::KeyPair, uapi, BudgetCharge, GLOBAL_REGIONS};
use kernel::{
    mm::{
        mmu_notifier::{
            impl_has_interval_notifier, Event, IntervalNotifier, IntervalNotifierOps, Range,
        },
        pin::PinnedPages,
    },
    new_spinlock, new_work,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, SpinLock,
    },
    workqueue::{impl_has_work, Work, WorkItem},
};

/// Pages pinned for a region, with the budget they are charged to.
pub(crate) struct Pinned {
    pub(crate) pages: PinnedPages,
    pub(crate) _budget: BudgetCharge,
}

/// The pages of a region, under `Region::state`.
pub(crate) struct RegionState {
    /// The pinned pages; taken out at teardown.
    pub(crate) pinned: Option<Pinned>,
}

/// What a registration covers, fixed at creation.
#[derive(Clone, Copy)]
pub(crate) struct RegionInfo {
    /// Address as registered.
    pub(crate) addr: u64,
    /// Length in bytes as registered.
    pub(crate) length: u64,
    /// `MEMREG_ACCESS_*` bits.
    pub(crate) access: u32,
    /// First address of the first page.
    pub(crate) page_addr: usize,
    /// Number of pages.
    pub(crate) npages: usize,
    /// The keys.
    pub(crate) keys: KeyPair,
}

impl RegionInfo {
    /// Whether this registration serves a request for `length` bytes at
    /// `addr` with `access`: it covers the range and grants at least that
    /// access.
    pub(crate) fn covers(&self, addr: u64, length: u64, access: u32) -> bool {
        let (Some(end), Some(my_end)) =
            (addr.checked_add(length), self.addr.checked_add(self.length))
        else {
            return false;
        };
        self.addr <= addr && end <= my_end && access & !self.access == 0
    }

    /// Whether the pages must be pinned for writing.
    pub(crate) fn writable(&self) -> bool {
        self.access & (uapi::ACCESS_LOCAL_WRITE | uapi::ACCESS_REMOTE_WRITE) != 0
    }
}

/// One registration.
#[pin_data(PinnedDrop)]
pub(crate) struct Region {
    #[pin]
    notifier: IntervalNotifier<Region>,
    #[pin]
    work: Work<Region>,
    #[pin]
    pub(crate) state: SpinLock<RegionState>,
    /// Data may move through the region. Set once when the region is
    /// published and cleared once when it ends, both under `state`; read under
    /// `state` by the data path, and without it by the cache look-up.
    pub(crate) live: Atomic<bool>,
    /// REGISTER calls not yet matched by DEREGISTER; changed only under the
    /// context's table lock.
    pub(crate) refs: Atomic<u32>,
    pub(crate) info: RegionInfo,
    ctx: Arc<ContextShared>,
}

impl_has_interval_notifier! { impl HasIntervalNotifier<Self> for Region { self.notifier } }
impl_has_work! { impl HasWork<Self> for Region { self.work } }

impl Region {
    /// Creates a region that is not live, holds no pages and has no notifier
    /// inserted yet.
    pub(crate) fn new(ctx: Arc<ContextShared>, info: RegionInfo) -> Result<Arc<Self>> {
        let region = Arc::pin_init(
            pin_init!(Self {
                notifier <- IntervalNotifier::new(),
                work <- new_work!("memreg::Region::work"),
                state <- new_spinlock!(RegionState { pinned: None }, "memreg::Region::state"),
                live: Atomic::new(false),
                refs: Atomic::new(0),
                info,
                ctx,
            }),
            GFP_KERNEL,
        )?;
        GLOBAL_REGIONS.add(1, Relaxed);
        Ok(region)
    }

    /// The interval notifier.
    pub(crate) fn notifier(&self) -> &IntervalNotifier<Region> {
        &self.notifier
    }

    /// Ends the region for good: clears `live` (waiting for a copy in
    /// progress under the lock), removes the notifier (waiting for callbacks
    /// in flight) and unpins the pages. Idempotent. Process context, no locks
    /// held.
    pub(crate) fn teardown(&self) {
        let pinned = {
            let mut st = self.state.lock();
            self.live.store(false, Relaxed);
            st.pinned.take()
        };
        IntervalNotifier::remove(self);
        if let Some(pinned) = pinned {
            let pages = pinned.pages.pages();
            drop(pinned);
            self.ctx.pages_unpinned(pages);
        }
    }

    /// Copies `buf.len()` bytes of the registered range from byte `offset`
    /// (relative to the registered address) into `buf`, or from `buf` into the
    /// range when `to_region`. Fails with `ENOENT` when the region is no longer
    /// live; nothing moves then.
    pub(crate) fn copy_chunk(&self, offset: u64, buf: &mut [u8], to_region: bool) -> Result {
        let page_offset = (self.info.addr as usize) % kernel::page::PAGE_SIZE;
        let at = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(page_offset))
            .ok_or(EINVAL)?;
        let st = self.state.lock();
        let pinned = match &st.pinned {
            Some(p) if self.live.load(Relaxed) => p,
            _ => return Err(ENOENT),
        };
        if to_region {
            pinned.pages.write(at, buf)
        } else {
            pinned.pages.read(at, buf)
        }
    }
}

impl IntervalNotifierOps for Region {
    fn invalidate(this: &Self, range: &Range<'_>, cur_seq: u64) -> bool {
        let event = range.event();
        match event {
            // The pinned pages stay mapped where they were: fork's write protection of a
            // copy-on-write mapping (pinned anonymous pages are copied for the child, the parent
            // keeps them), writeback cleaning, soft-dirty tracking.
            Event::ProtectionPage | Event::SoftDirty => return true,
            _ => {}
        }
        {
            // Taking the lock waits for a copy in progress; once `live` is clear no copy starts.
            let _st = this.state.lock();
            this.notifier.set_seq(cur_seq);
            this.live.store(false, Relaxed);
        }
        // Leave the table and queue the unpinning; neither allocates nor sleeps.
        this.ctx.retire(this, event);
        true
    }
}

impl WorkItem for Region {
    type Pointer = Arc<Region>;

    fn run(this: Arc<Region>) {
        this.teardown();
    }
}

#[pinned_drop]
impl PinnedDrop for Region {
    fn drop(self: Pin<&mut Self>) {
        GLOBAL_REGIONS.fetch_sub(1, Relaxed);
    }
}

#[kunit_tests(memreg_region)]
mod tests {
    use super::*;

    fn info(addr: u64, length: u64, access: u32) -> RegionInfo {
        RegionInfo {
            addr,
            length,
            access,
            page_addr: 0,
            npages: 0,
            keys: KeyPair {
                seq: 1,
                lkey: 1 << 24,
                rkey: 2 << 24,
            },
        }
    }

    #[test]
    fn covers_needs_the_whole_range() {
        let r = info(0x1000, 0x3000, uapi::ACCESS_LOCAL_READ);
        assert!(r.covers(0x1000, 0x3000, uapi::ACCESS_LOCAL_READ));
        assert!(r.covers(0x2000, 0x10, uapi::ACCESS_LOCAL_READ));
        assert!(r.covers(0x3fff, 1, uapi::ACCESS_LOCAL_READ));
        // Partial overlaps at either end are not covered.
        assert!(!r.covers(0xfff, 2, uapi::ACCESS_LOCAL_READ));
        assert!(!r.covers(0x3fff, 2, uapi::ACCESS_LOCAL_READ));
        assert!(!r.covers(0x0, 0x8000, uapi::ACCESS_LOCAL_READ));
        // A range that wraps is never covered.
        assert!(!r.covers(u64::MAX, 2, uapi::ACCESS_LOCAL_READ));
    }

    #[test]
    fn covers_needs_at_least_the_access() {
        let rw = uapi::ACCESS_LOCAL_READ | uapi::ACCESS_LOCAL_WRITE;
        let r = info(0x1000, 0x1000, rw);
        assert!(r.covers(0x1000, 0x1000, uapi::ACCESS_LOCAL_READ));
        assert!(r.covers(0x1000, 0x1000, rw));
        assert!(!r.covers(0x1000, 0x1000, rw | uapi::ACCESS_REMOTE_WRITE));
        let ro = info(0x1000, 0x1000, uapi::ACCESS_LOCAL_READ);
        assert!(!ro.covers(0x1000, 0x1000, rw));
    }

    #[test]
    fn writable_follows_write_access() {
        assert!(!info(0, 1, uapi::ACCESS_LOCAL_READ).writable());
        assert!(info(0, 1, uapi::ACCESS_LOCAL_WRITE).writable());
        assert!(info(0, 1, uapi::ACCESS_REMOTE_WRITE).writable());
        assert!(!info(0, 1, uapi::ACCESS_LOCAL_READ | 1 << 2).writable());
    }
}
