// SPDX-License-Identifier: GPL-2.0

//! A context: one open file of `/dev/memreg`, bound to the address space of
//! the process that opened it, and its table of registrations.
//!
//! # Lock order
//!
//! 1. `ContextShared::table` (spinlock): the registration table and the
//!    context's counters; also guards each region's reference count.
//! 2. `Region::state` (spinlock): a region's pages; `live` changes under it.
//! 3. `ContextShared::queue` (spinlock): the teardown workqueue. Taken under
//!    the table lock when a region leaves the table for teardown and when the
//!    file's release takes the queue away, so no region is ever left behind.
//!
//! The MMU notifier callback takes these locks, and it runs under the memory
//! management code's locks (`mmap_lock`, `i_mmap_rwsem`, the notifier's own
//! lockdep map), so while one of them is held nothing may allocate with
//! `GFP_KERNEL`, sleep, fault on user memory or take `mmap_lock`. Everything a
//! registration needs is allocated before the table lock is taken; copies to
//! and from user memory happen outside the locks, through a bounce buffer.

use crate::{
    key::{self, KeyPair},
    region::{Pinned, Region, RegionInfo},
    uapi::{self, Stats},
    BudgetCharge, GLOBAL_CONTEXTS,
};
use kernel::{
    mm::{
        mmu_notifier::{Event, IntervalNotifier},
        pin::PinnedPages,
        Mm,
    },
    new_spinlock,
    page::PAGE_SIZE,
    prelude::*,
    random::get_random_u32,
    rbtree::{RBTree, RBTreeNodeReservation},
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        Arc, SpinLock,
    },
    uaccess::{UserPtr, UserSlice},
    workqueue::owned::OwnedQueue,
};

/// Times a registration is retried when an invalidation races with pinning.
const REGISTER_RETRIES: u32 = 3;

/// Bytes moved under the region lock at a time by COPY.
const COPY_CHUNK: usize = 16 * 1024;

/// The registration table of a context.
struct RegistrationTable {
    /// Live registrations by key sequence number.
    by_key: RBTree<u64, Arc<Region>>,
    /// Live registrations by (registered address, sequence number).
    by_addr: RBTree<(u64, u64), Arc<Region>>,
    /// The longest length ever registered: no registration starting more than
    /// this far below an address can cover it.
    max_length: u64,
    /// The context's counters.
    stats: Stats,
}

impl RegistrationTable {
    /// The live registration that serves `length` bytes at `addr` with
    /// `access`, if any.
    fn find_cover(&mut self, addr: u64, length: u64, access: u32) -> Option<Arc<Region>> {
        let end = addr.checked_add(length)?;
        let lowest = end.saturating_sub(self.max_length);
        let probe = (addr, u64::MAX);
        // Walk down from the last registration starting at or below `addr`.
        let mut cursor = match self.by_addr.cursor_lower_bound_mut(&probe) {
            Some(c) if *c.current().0 <= probe => c,
            Some(c) => c.move_prev()?,
            None => self.by_addr.cursor_back_mut()?,
        };
        loop {
            let (&(start, _), region) = cursor.current();
            if start < lowest {
                return None;
            }
            if region.info.covers(addr, length, access) && region.live.load(Relaxed) {
                return Some(region.clone());
            }
            cursor = cursor.move_prev()?;
        }
    }

    /// Removes the registration with sequence number `seq` from both indexes.
    fn remove(&mut self, seq: u64) -> Option<Arc<Region>> {
        let region = self.by_key.remove(&seq)?;
        self.by_addr.remove(&(region.info.addr, seq));
        self.stats.registrations = self.stats.registrations.saturating_sub(1);
        Some(region)
    }

    /// The live registration whose local key is `lkey`.
    fn get(&self, lkey: u64) -> Option<&Arc<Region>> {
        self.by_key
            .get(&key::seq_of(lkey))
            .filter(|r| r.info.keys.lkey == lkey)
    }
}

/// The part of a context that registrations refer to.
#[pin_data]
pub(crate) struct ContextShared {
    /// The address space this context serves.
    mm: ARef<Mm>,
    #[pin]
    table: SpinLock<RegistrationTable>,
    /// Runs region teardown; taken out and drained when the file is released.
    #[pin]
    queue: SpinLock<Option<OwnedQueue>>,
    /// The next key sequence number.
    next_seq: Atomic<u64>,
}

impl ContextShared {
    /// Takes `region` out of the table after an invalidation and queues its
    /// teardown. Called from the notifier callback: neither allocates nor
    /// sleeps. Does nothing if the region already left the table.
    pub(crate) fn retire(&self, region: &Region, event: Event) {
        let mut t = self.table.lock();
        let Some(region) = t.remove(region.info.keys.seq) else {
            return;
        };
        if let Some(n) = t.stats.invalidations.get_mut(event.as_raw() as usize) {
            *n += 1;
        }
        // Queue it while still holding the table lock: `Context::drop` takes the queue away
        // under the same lock once the table is empty, so a region that left the table is
        // either queued before the queue is drained, or torn down by `drop` itself.
        let queue = self.queue.lock();
        if let Some(q) = queue.as_ref() {
            // A region is queued at most once: it left the table just now.
            let _ = q.enqueue(region);
        } else {
            // The queue only goes away with an empty table, and the region was in it.
            kernel::warn_on!(true);
        }
    }

    /// Accounts `pages` unpinned by a region's teardown.
    pub(crate) fn pages_unpinned(&self, pages: usize) {
        let mut t = self.table.lock();
        t.stats.pages_pinned = t.stats.pages_pinned.saturating_sub(pages as u64);
    }
}

/// One open file of `/dev/memreg`.
pub(crate) struct Context {
    shared: Arc<ContextShared>,
}

impl Context {
    /// Creates a context bound to the calling process's address space.
    pub(crate) fn new() -> Result<Self> {
        let current = kernel::current!();
        let mm = current.mm().ok_or(EINVAL)?;
        let queue = OwnedQueue::new(c"memreg", OwnedQueue::UNBOUND, 0)?;
        let shared = Arc::pin_init(
            pin_init!(ContextShared {
                mm: ARef::from(&**mm),
                table <- new_spinlock!(RegistrationTable {
                    by_key: RBTree::new(),
                    by_addr: RBTree::new(),
                    max_length: 0,
                    stats: Stats::default(),
                }, "memreg::ContextShared::table"),
                queue <- new_spinlock!(Some(queue), "memreg::ContextShared::queue"),
                next_seq: Atomic::new(1),
            }),
            GFP_KERNEL,
        )?;
        GLOBAL_CONTEXTS.add(1, Relaxed);
        Ok(Self { shared })
    }

    /// Fails with `EPERM` unless the caller runs in the context's address
    /// space: a child that inherited the file, or a process it was passed to,
    /// cannot use it.
    pub(crate) fn check_owner(&self) -> Result {
        let current = kernel::current!();
        match current.mm() {
            Some(mm) if core::ptr::eq(mm.as_raw(), self.shared.mm.as_raw()) => Ok(()),
            _ => Err(EPERM),
        }
    }

    /// REGISTER: returns the registration serving the range, pinning a new one
    /// if none does.
    pub(crate) fn register(&self, req: &mut uapi::Register) -> Result {
        if req.access == 0 || req.access & !uapi::ACCESS_ALL != 0 || req.length == 0 {
            return Err(EINVAL);
        }
        if req.length > uapi::MAX_LENGTH {
            return Err(E2BIG);
        }
        let end = req.addr.checked_add(req.length).ok_or(EINVAL)?;

        // The cache: a live registration covering the range with enough access.
        {
            let mut t = self.shared.table.lock();
            if let Some(region) = t.find_cover(req.addr, req.length, req.access) {
                let keys = region.info.keys;
                let refs = region.refs.load(Relaxed).checked_add(1).ok_or(EOVERFLOW)?;
                region.refs.store(refs, Relaxed);
                t.stats.cache_hits += 1;
                req.lkey = keys.lkey;
                req.rkey = keys.rkey;
                req.region_addr = region.info.addr;
                req.region_length = region.info.length;
                req.flags = uapi::REGISTER_CACHED;
                return Ok(());
            }
        }

        let page_addr = (req.addr as usize) & !(PAGE_SIZE - 1);
        let page_end = usize::try_from(end)
            .ok()
            .and_then(|e| e.checked_next_multiple_of(PAGE_SIZE))
            .ok_or(EFAULT)?;
        let npages = (page_end - page_addr) / PAGE_SIZE;
        let seq = self.shared.next_seq.fetch_add(1, Relaxed);
        let keys = KeyPair::new(seq, get_random_u32(), get_random_u32()).ok_or(ENOSPC)?;
        let info = RegionInfo {
            addr: req.addr,
            length: req.length,
            access: req.access,
            page_addr,
            npages,
            keys,
        };

        // Everything the table needs is allocated before its lock is taken.
        let by_key_node = RBTreeNodeReservation::new(GFP_KERNEL)?;
        let by_addr_node = RBTreeNodeReservation::new(GFP_KERNEL)?;
        let budget = BudgetCharge::new(npages)?;
        let region = Region::new(self.shared.clone(), info)?;
        let current = kernel::current!();
        let mm = current.mm().ok_or(EPERM)?;
        // The notifier goes in before the pages are pinned, so that an invalidation racing
        // with pinning is seen by the sequence check below.
        IntervalNotifier::insert(region.clone(), mm, page_addr, npages * PAGE_SIZE)?;

        let result = self.pin_and_publish(&region, budget, by_key_node, by_addr_node);
        if result.is_err() {
            region.teardown();
            return result;
        }
        req.lkey = keys.lkey;
        req.rkey = keys.rkey;
        req.region_addr = req.addr;
        req.region_length = req.length;
        req.flags = 0;
        Ok(())
    }

    /// Pins the region's pages and publishes it, retrying when an invalidation
    /// raced with pinning.
    fn pin_and_publish(
        &self,
        region: &Arc<Region>,
        budget: BudgetCharge,
        by_key_node: RBTreeNodeReservation<u64, Arc<Region>>,
        by_addr_node: RBTreeNodeReservation<(u64, u64), Arc<Region>>,
    ) -> Result {
        let info = region.info;
        let mut budget = Some(budget);
        let mut nodes = Some((by_key_node, by_addr_node));
        for _ in 0..REGISTER_RETRIES {
            let seq = region.notifier().read_begin();
            let pages = PinnedPages::pin_current(info.page_addr, info.npages, info.writable())?;
            let npages = pages.pages() as u64;
            let mut t = self.shared.table.lock();
            let mut st = region.state.lock();
            if region.notifier().read_retry(seq) {
                // Something changed the range while we pinned it: pin again.
                drop(st);
                drop(t);
                drop(pages);
                continue;
            }
            let (Some(budget), Some((key_node, addr_node))) = (budget.take(), nodes.take()) else {
                return Err(EINVAL);
            };
            st.pinned = Some(Pinned {
                pages,
                _budget: budget,
            });
            region.live.store(true, Relaxed);
            region.refs.store(1, Relaxed);
            drop(st);
            t.by_key
                .insert(key_node.into_node(info.keys.seq, region.clone()));
            t.by_addr
                .insert(addr_node.into_node((info.addr, info.keys.seq), region.clone()));
            t.max_length = t.max_length.max(info.length);
            t.stats.registrations += 1;
            t.stats.cache_misses += 1;
            t.stats.pages_pinned += npages;
            t.stats.pages_pinned_peak = t.stats.pages_pinned_peak.max(t.stats.pages_pinned);
            return Ok(());
        }
        Err(EAGAIN)
    }

    /// DEREGISTER: drops one reference; the last one ends the registration.
    pub(crate) fn deregister(&self, lkey: u64) -> Result {
        let region = {
            let mut t = self.shared.table.lock();
            let region = t.get(lkey).ok_or(ENOENT)?;
            let refs = region.refs.load(Relaxed).saturating_sub(1);
            region.refs.store(refs, Relaxed);
            if refs > 0 {
                return Ok(());
            }
            let region = t.remove(key::seq_of(lkey)).ok_or(ENOENT)?;
            t.stats.deregistrations += 1;
            region
        };
        region.teardown();
        Ok(())
    }

    /// QUERY: describes the registration whose local key is `lkey`.
    pub(crate) fn query(&self, lkey: u64) -> Result<uapi::Query> {
        let t = self.shared.table.lock();
        let region = t.get(lkey).ok_or(ENOENT)?;
        let st = region.state.lock();
        let extents = st
            .pinned
            .as_ref()
            .map_or(0, |p| p.pages.extents().len() as u32);
        Ok(uapi::Query {
            key: lkey,
            addr: region.info.addr,
            length: region.info.length,
            access: region.info.access,
            state: if region.live.load(Relaxed) {
                uapi::STATE_VALID
            } else {
                0
            },
            pages: region.info.npages as u64,
            extents,
            refcount: region.refs.load(Relaxed),
        })
    }

    /// STATS: the context's counters.
    pub(crate) fn stats(&self) -> Stats {
        self.shared.table.lock().stats.clone()
    }

    /// COPY: moves data between a user buffer and a registered range, through
    /// the registration's translation entries only.
    pub(crate) fn copy(&self, req: &uapi::Copy) -> Result {
        let region = {
            let t = self.shared.table.lock();
            t.get(req.key).ok_or(ENOENT)?.clone()
        };
        let to_region = req.direction == uapi::COPY_TO_REGION;
        let need = if to_region {
            uapi::ACCESS_LOCAL_WRITE
        } else {
            uapi::ACCESS_LOCAL_READ
        };
        if region.info.access & need == 0 {
            return Err(EACCES);
        }
        let end = req.offset.checked_add(req.length).ok_or(EINVAL)?;
        if end > region.info.length {
            return Err(EINVAL);
        }
        let length = usize::try_from(req.length).map_err(|_| EINVAL)?;
        if length == 0 {
            return Ok(());
        }
        let buf = usize::try_from(req.buf).map_err(|_| EFAULT)?;
        let mut bounce = KVVec::from_elem(0u8, length.min(COPY_CHUNK), GFP_KERNEL)?;
        let user = UserSlice::new(UserPtr::from_addr(buf), length);
        let mut done = 0usize;
        if to_region {
            let mut reader = user.reader();
            while done < length {
                let n = (length - done).min(COPY_CHUNK);
                let chunk = &mut bounce[..n];
                reader.read_slice(chunk)?;
                region.copy_chunk(req.offset + done as u64, chunk, true)?;
                done += n;
            }
        } else {
            let mut writer = user.writer();
            while done < length {
                let n = (length - done).min(COPY_CHUNK);
                let chunk = &mut bounce[..n];
                region.copy_chunk(req.offset + done as u64, chunk, false)?;
                writer.write_slice(chunk)?;
                done += n;
            }
        }
        Ok(())
    }
}

impl Drop for Context {
    /// Releases the file: ends every registration, then drains the teardown
    /// queue so no work item of this context remains.
    fn drop(&mut self) {
        let queue = loop {
            let mut t = self.shared.table.lock();
            let seq = t.by_key.cursor_front().map(|c| *c.current().0);
            match seq.and_then(|seq| t.remove(seq)) {
                Some(region) => {
                    drop(t);
                    region.teardown();
                }
                // Empty: take the queue under the table lock, see `ContextShared::retire`.
                None => break self.shared.queue.lock().take(),
            }
        };
        // Destroying the queue waits for the teardowns it holds.
        drop(queue);
        GLOBAL_CONTEXTS.fetch_sub(1, Relaxed);
    }
}
