// SPDX-License-Identifier: GPL-2.0

//! A pool's work: growth of partitions below their low watermark, shrinks
//! above their high one or under memory pressure (waiting for the buffers
//! still allocated, then reclaiming them after the leak timeout), and the
//! teardown of a dead pool. All under `Pool::grow_lock`, one at a time.

use super::{
    part::{count_bits, div, set_bit, test_bit, Chunk, MAX_EXTENT_BYTES},
    Pool, PoolState, MAX_TIMER_MS,
};
use crate::{
    cache::{
        info::RegistrationInfo,
        inner::Nodes,
        key::KeyPair,
        parked,
        registration::{Backing, Parts, Registration},
    },
    stats::{GLOBAL_POOL_PAGES, GLOBAL_POOL_RECLAIMABLE},
};
use kernel::{
    mm::{mmu_notifier::IntervalNotifier, pin::PinnedPages, MmWithUser},
    page::PAGE_SIZE,
    prelude::*,
    random::{get_random_u32, get_random_u64},
    sync::{aref::ARef, atomic::Relaxed, Arc},
    task::resched::cond_resched,
    time::{delay::fsleep, jiffies, Delta},
};

/// How long a teardown waits at most for a mapping someone else is taking
/// away to be gone.
const UNMAP_WAIT_MS: u32 = 5000;

/// How often it looks meanwhile.
const UNMAP_WAIT_STEP_MS: u32 = 5;

/// The largest run of contiguous pages a growth asks for: a whole extent.
const RUN_ORDER: u32 = (MAX_EXTENT_BYTES / PAGE_SIZE).trailing_zeros();

impl Pool {
    /// The work: tears the pool down once dead; otherwise grows the
    /// partitions that want it, gives extents back where they are due, and
    /// lends the free buffers to the rings, if mapped.
    pub(super) fn run(this: &Arc<Self>) {
        let _serial = this.grow_lock.lock();
        {
            let st = this.state.lock();
            if st.dead {
                drop(st);
                Self::teardown(this);
                return;
            }
            // The rings may be mapped first: nothing to grow or lend before the pool is.
            if st.mapped_at.is_none() {
                return;
            }
        }
        let rings = this.has_rings();
        let mut again: Option<u32> = None;
        for c in 0..this.classes.len() {
            let Some(class) = this.classes.get(c) else {
                break;
            };
            // What the ring holds is counted before a shrink is looked at: under pressure, or
            // while the class may shrink by use (looked at again every `MAX_TIMER_MS`).
            let watch = rings && {
                let st = this.state.lock();
                st.pressure
                    || (class.high != 0
                        && st.parts.get(c).is_some_and(|p| p.boundary > class.initial))
            };
            // Without knowing what the ring holds, no shrink starts this time.
            let counted = !watch || this.drain(c);
            if watch {
                again = Some(again.map_or(MAX_TIMER_MS, |a| a.min(MAX_TIMER_MS)));
            }
            Self::grow_class(this, c, true);
            if let Some(ms) = Self::shrink_step(this, c, counted) {
                again = Some(again.map_or(ms, |a| a.min(ms)));
            }
            if rings {
                this.publish_limit(c);
                this.lend(c);
            }
        }
        this.state.lock().pressure = false;
        this.update_reclaimable();
        if let Some(ms) = again {
            Self::arm(this, ms.max(1));
        }
    }

    /// Grows class `c` up to its initial size, then to above its low
    /// watermark (counting the buffers lent to the ring as free when
    /// `lent_free`), one extent at a time. Under `grow_lock`.
    fn grow_class(this: &Arc<Self>, c: usize, lent_free: bool) {
        let Some(class) = this.classes.get(c) else {
            return;
        };
        loop {
            let (want, chunks) = {
                let mut st = this.state.lock();
                let dead = st.dead;
                let Some(part) = st.parts.get_mut(c) else {
                    return;
                };
                // Lent buffers are not counted as free once an ALLOC found the ring empty.
                let lent_free = lent_free && !part.starved;
                let short = if lent_free {
                    part.wants_growth(class)
                } else {
                    part.free <= class.low
                };
                // An extent on its way out is kept rather than a new one mapped: a growth
                // never starts while a shrink is pending.
                if short && part.cancel_shrink() {
                    continue;
                }
                let low = short && !part.grow_failed;
                (
                    !dead
                        && part.boundary < class.max_buffers
                        && (part.boundary < class.initial || low),
                    part.chunks_to_grow(class, lent_free),
                )
            };
            if !want {
                return;
            }
            if let Err(e) = Self::grow(this, c, chunks) {
                let mut st = this.state.lock();
                if let Some(part) = st.parts.get_mut(c) {
                    part.grow_failed = true;
                }
                drop(st);
                pr_debug!(
                    "memreg: pool {} class {} cannot grow: {:?}\n",
                    this.index,
                    c,
                    e
                );
                return;
            }
            this.changed.notify_all();
            if !lent_free {
                // One extent for the ALLOC that asked.
                return;
            }
            cond_resched();
        }
    }

    /// Grows class `c` by one extent now, for an ALLOC that found none free
    /// (its rings, if any, taken back already) and would otherwise wait for
    /// the work. Process context, no lock held.
    pub(super) fn grow_now(this: &Arc<Self>, c: usize) {
        let _serial = this.grow_lock.lock();
        Self::grow_class(this, c, false);
        this.publish_limit(c);
    }

    /// Counts the pages of fully free chunks, for the shrinker.
    pub(super) fn update_reclaimable(&self) {
        let st = self.state.lock();
        self.set_reclaimable(self.reclaimable_of(&st));
    }

    /// Sets the pages memory pressure may take back, in the module-wide sum
    /// too. Never sleeps.
    pub(super) fn set_reclaimable(&self, pages: u64) {
        let old = self.reclaimable.xchg(pages, Relaxed);
        // Wrapping: the sum is of the values each pool set last.
        GLOBAL_POOL_RECLAIMABLE.add(pages.wrapping_sub(old), Relaxed);
    }

    /// The pages the free buffers beyond each class's low watermark make up,
    /// in whole chunks: what memory pressure may take back. Buffers lent to
    /// a ring count as free (the work finds out when it takes them back).
    pub(super) fn reclaimable_of(&self, st: &PoolState) -> u64 {
        let mut pages = 0u64;
        for (class, part) in self.classes.iter().zip(st.parts.iter()) {
            let free = part.free.saturating_add(part.lent_count);
            let spare = div(free.saturating_sub(class.low), class.chunk_buffers);
            pages = pages.saturating_add((spare * class.chunk_bytes() / PAGE_SIZE) as u64);
        }
        pages
    }

    /// Maps `chunks` more chunks of class `c` as one extent: allocates and
    /// charges its pages (zeroed, in runs of up to 2 MiB when the allocator
    /// has them), publishes its one registration and inserts the pages into
    /// the mapping, then moves the boundary up. Under `grow_lock` (the work,
    /// or an ALLOC that would otherwise wait for it).
    pub(super) fn grow(this: &Arc<Self>, c: usize, chunks: usize) -> Result {
        let cache = this.pools.cache();
        let class = this.classes.get(c).ok_or(EINVAL)?;
        let (boundary, base) = {
            let st = this.state.lock();
            let part = st.parts.get(c).ok_or(EINVAL)?;
            // Never above an extent being given back: its shrink is cancelled first.
            if part.limit != part.boundary {
                return Err(EBUSY);
            }
            (part.boundary, st.mapped_at.ok_or(ENXIO)?)
        };
        let buffers = chunks.checked_mul(class.chunk_buffers).ok_or(EINVAL)?;
        if chunks == 0 || boundary + buffers > class.max_buffers {
            return Err(EINVAL);
        }
        let addr = base + class.offset + boundary * class.buffer_size;
        let bytes = chunks * class.chunk_bytes();
        let npages = bytes.div_ceil(PAGE_SIZE);
        let mm: ARef<MmWithUser> = cache.mm().mmget_not_zero().ok_or(ENXIO)?;
        // The pages' charges: the pool keeps them until the pages have left the mapping. Past a
        // limit, parked registrations make room first.
        let mut charges = this.charges.new_like();
        parked::charge(&mut charges, npages)?;
        // The pages and the registration are the creator's, not the worker's.
        let pages = this.memcg.with_active(|| {
            PinnedPages::alloc_owned(npages, GFP_KERNEL_ACCOUNT | __GFP_ZERO, RUN_ORDER)
        })?;
        let seq = cache.next_seq();
        let keys = KeyPair::new(seq, get_random_u32(), get_random_u64()).ok_or(ENOSPC)?;
        let info = RegistrationInfo {
            addr: addr as u64,
            length: bytes as u64,
            access: this.access,
            npages,
            keys,
            pool: true,
            watch: false,
            user_data: 0,
        };
        let (nodes, registration) = this.memcg.with_active(|| -> Result<_> {
            Ok((Nodes::new(true)?, Registration::new(cache.clone(), info)?))
        })?;
        let subscription = IntervalNotifier::insert(registration.clone(), &mm, addr, bytes)?;
        let seq = registration.notifier().read_begin();
        let mut inserted = 0;
        let inserting = (|| {
            let guard = mm.mmap_read_lock();
            // The pool's own mapping, never whatever lies at its address now.
            let vma = guard
                .vma_lookup(base)
                .filter(|vma| this.owner.owns(vma))
                .ok_or(ENXIO)?;
            let mixed = vma.as_mixedmap_vma().ok_or(ENXIO)?;
            pages.for_each_owned_page(|i, page| {
                mixed.vm_insert_page(addr + i * PAGE_SIZE, page)?;
                inserted += 1;
                Ok(())
            })
        })();
        if let Err(e) = inserting {
            if inserted > 0 {
                this.zap(addr, inserted * PAGE_SIZE);
            }
            // The pages are freed, unmapped, before their charges go.
            drop(pages);
            drop(charges);
            return Err(e);
        }
        let lkey = registration.lkey();
        let parts = Parts {
            backing: Backing::Pinned {
                pages,
                // Nothing: the pool holds the pages' charges.
                charges: this.charges.new_like(),
            },
            subscription,
            nodes,
        };
        let published = cache.publish_chunk(&registration, seq, parts);
        let chunk = Chunk {
            registration,
            charges,
        };
        GLOBAL_POOL_PAGES.add(npages as u64, Relaxed);
        if published.is_err() {
            // The range was invalidated meanwhile (and the pool died, which is the only way):
            // the chunk leaves the mapping again.
            drop(published);
            this.zap(addr, bytes);
            return Err(EAGAIN);
        }
        let first = div(boundary, class.chunk_buffers);
        let mut st = this.state.lock();
        let dead = st.dead;
        let Some(part) = st.parts.get_mut(c) else {
            drop(st);
            this.end_chunk(chunk);
            return Err(EINVAL);
        };
        for k in first..first + chunks {
            if let Some(e) = part.extent_of.get_mut(k) {
                *e = first as u32;
            }
        }
        let Some(slot) = part.chunks.get_mut(first) else {
            // Never the case (`c` and the boundary were checked): the extent ends here, its
            // pages leave the mapping, and only then do its charges go.
            drop(st);
            this.end_chunk(chunk);
            return Err(EINVAL);
        };
        // Kept even when the pool died meanwhile: its teardown, which follows, ends it and
        // takes its pages out of the mapping.
        *slot = Some(chunk);
        if dead {
            return Err(ENXIO);
        }
        // The new buffers are free unless some were quarantined there before.
        let end = boundary + buffers;
        let taken = count_bits(&part.bitmap, boundary, end);
        if part.limit == part.boundary {
            part.limit = end;
            part.free = part.free.saturating_add(buffers.saturating_sub(taken));
        }
        part.boundary = end;
        part.stats.grows += chunks as u64;
        part.grow_failed = false;
        part.starved = false;
        drop(st);
        this.publish_chunks(c, first, chunks, lkey);
        Ok(())
    }

    /// Ends a chunk: its key dies, the registration lets go of its pages,
    /// the pages leave the mapping (if it is still there) and are freed,
    /// and only then do their charges go. Process context, no lock held.
    pub(super) fn end_chunk(&self, chunk: Chunk) {
        let registration = &chunk.registration;
        let ended = self.pools.cache().end_chunk(registration.info.keys.seq);
        drop(ended);
        // Idempotent: whoever ended it first may not have torn it down yet.
        registration.teardown();
        self.zap(
            registration.info.addr as usize,
            registration.info.length as usize,
        );
        drop(chunk);
    }

    /// Unmaps `len` bytes at `addr` of the pool's mapping from the process,
    /// if the mapping is still there: the pool's own VMA, recognised by its
    /// owner, never another one at the same address. Process context.
    pub(super) fn zap(&self, addr: usize, len: usize) {
        let Some(base) = self.state.lock().mapped_at else {
            return;
        };
        if !self.owner.is_mapped() {
            return;
        }
        let Some(mm) = self.pools.cache().mm().mmget_not_zero() else {
            // The address space is exiting, and its teardown unmaps the pages.
            self.wait_unmapped();
            return;
        };
        let guard = mm.mmap_read_lock();
        let Some(vma) = guard.vma_lookup(base).filter(|vma| self.owner.owns(vma)) else {
            // A `munmap` (or `MAP_FIXED`) is taking the mapping away and unmaps the pages.
            drop(guard);
            self.wait_unmapped();
            return;
        };
        let end = addr.saturating_add(len);
        self.state.lock().zapping = Some((addr, end));
        // Refused (and nothing zapped) unless the range lies in the pool's own VMA.
        let _ = self.owner.zap(vma, addr, len);
        self.state.lock().zapping = None;
    }

    /// Waits until the pool's mapping, which something else is tearing down
    /// (an `munmap`, the address space's exit), is gone: its pages are
    /// unmapped by then, and only then may their charges go. Bounded: it
    /// gives up after [`UNMAP_WAIT_MS`]. Process context, no lock held.
    pub(super) fn wait_unmapped(&self) {
        let mut waited = 0;
        while self.owner.is_mapped() && waited < UNMAP_WAIT_MS {
            fsleep(Delta::from_millis(i64::from(UNMAP_WAIT_STEP_MS)));
            waited += UNMAP_WAIT_STEP_MS;
        }
    }

    /// Moves class `c`'s boundary down by its last extent when due: starts
    /// it (the limit goes down) and finishes it once its buffers are free or
    /// their leak timeout passed. Returns in how many milliseconds to look
    /// again.
    ///
    /// A shrink starts only when `may_start` (the kernel knows what the
    /// class's ring holds).
    pub(super) fn shrink_step(this: &Arc<Self>, c: usize, may_start: bool) -> Option<u32> {
        let class = this.classes.get(c)?;
        let (start, finish, retry) = {
            let mut st = this.state.lock();
            let pressure = st.pressure;
            let part = st.parts.get_mut(c)?;
            if part.boundary == 0 {
                return None;
            }
            let first = part.last_extent_start(class);
            let size = part.boundary.saturating_sub(first);
            let mut start = false;
            let mut retry = None;
            if part.limit == part.boundary {
                // Not shrinking yet: is it due?
                let above = class.high != 0 && part.free > class.high;
                if !above {
                    part.above_high_since = None;
                } else if part.above_high_since.is_none() {
                    part.above_high_since = Some(jiffies::now());
                }
                let free_in_last =
                    size.saturating_sub(count_bits(&part.bitmap, first, part.boundary));
                // Never below the initial size (extents never straddle it), nor so far that
                // the free buffers left fall to the low watermark.
                let due_by_use = above
                    && first >= class.initial
                    && part.free.saturating_sub(free_in_last) > class.low
                    && part
                        .above_high_since
                        .is_some_and(|s| jiffies::elapsed_ms(s) >= u64::from(this.shrink_ms));
                // Under pressure, a fully free extent beyond the low watermark goes.
                let due_by_pressure = pressure
                    && free_in_last == size
                    && part.free >= class.low.saturating_add(size)
                    && first >= class.initial;
                if may_start && (due_by_use || due_by_pressure) {
                    part.limit = first;
                    part.free = part.free.saturating_sub(free_in_last);
                    part.shrink_since = Some(jiffies::now());
                    start = true;
                } else if above {
                    let waited = part.above_high_since.map_or(0, jiffies::elapsed_ms);
                    retry = Some(u64::from(this.shrink_ms).saturating_sub(waited) as u32);
                }
            }
            let mut finish = false;
            if part.limit < part.boundary {
                let busy = count_bits(&part.bitmap, part.limit, part.boundary)
                    .saturating_sub(count_bits(&part.quarantine, part.limit, part.boundary));
                let waited = part.shrink_since.map_or(0, jiffies::elapsed_ms);
                if busy == 0 || waited >= u64::from(this.leak_timeout_ms) {
                    finish = true;
                } else {
                    retry = Some(u64::from(this.leak_timeout_ms).saturating_sub(waited) as u32);
                }
            }
            (start, finish, retry)
        };
        if start {
            this.update_reclaimable();
            this.publish_limit(c);
        }
        if finish && Self::finish_shrink(this, c) {
            // Perhaps another extent is due.
            return Some(1);
        }
        retry
    }

    /// Gives class `c`'s last extent back: its allocated buffers are
    /// quarantined as leaks, its registration ends, its pages leave the
    /// mapping and are freed, and the boundary moves down. Returns whether
    /// it did.
    pub(super) fn finish_shrink(this: &Arc<Self>, c: usize) -> bool {
        let Some(class) = this.classes.get(c) else {
            return false;
        };
        let ending = {
            let mut st = this.state.lock();
            let Some(part) = st.parts.get_mut(c) else {
                return false;
            };
            let first = part.limit;
            // The limit went down to the last extent's start when the shrink started.
            if first >= part.boundary || first != part.last_extent_start(class) {
                return false;
            }
            let mut leaks = 0usize;
            let mut lent = 0usize;
            for i in first..part.boundary {
                if test_bit(&part.bitmap, i) && !test_bit(&part.quarantine, i) {
                    set_bit(&mut part.quarantine, i, true);
                    if test_bit(&part.lent, i) {
                        // Popped from the ring and never seen back: a leak like any other.
                        set_bit(&mut part.lent, i, false);
                        lent += 1;
                    }
                    leaks += 1;
                }
            }
            part.allocated = part.allocated.saturating_sub(leaks.saturating_sub(lent));
            part.lent_count = part.lent_count.saturating_sub(lent);
            part.quarantined = part.quarantined.saturating_add(leaks);
            part.stats.leaks_reclaimed += leaks as u64;
            part.chunks
                .get_mut(div(first, class.chunk_buffers))
                .and_then(Option::take)
                .map(|k| (k, first))
        };
        let Some((ending, first)) = ending else {
            return false;
        };
        let chunks = div(
            ending.registration.info.length as usize,
            class.chunk_bytes(),
        );
        this.publish_chunks(c, div(first, class.chunk_buffers), chunks, 0);
        // The key dies before the pages leave the mapping, and they are freed after; the
        // boundary is seen to move once both are done.
        this.end_chunk(ending);
        let mut st = this.state.lock();
        if let Some(part) = st.parts.get_mut(c) {
            part.boundary = first;
            part.limit = first;
            part.shrink_since = None;
            part.stats.shrinks += chunks as u64;
            part.above_high_since = None;
            // Its charges came back: growth may succeed again.
            part.grow_failed = false;
        }
        drop(st);
        this.update_reclaimable();
        true
    }

    /// Tears the pool down: every chunk's registration ends, the pages leave
    /// the mapping (if it is still there) and are freed, the notifier is
    /// removed. Idempotent. Process context, no lock held.
    pub(crate) fn teardown(this: &Arc<Self>) {
        Self::kill(this);
        for c in 0..this.classes.len() {
            loop {
                let next = {
                    let mut st = this.state.lock();
                    let Some(part) = st.parts.get_mut(c) else {
                        break;
                    };
                    part.chunks.iter_mut().find_map(Option::take)
                };
                let Some(chunk) = next else { break };
                this.end_chunk(chunk);
                cond_resched();
            }
        }
        let subscription = this.subscription.lock().take();
        drop(subscription);
        let mut st = this.state.lock();
        for part in st.parts.iter_mut() {
            part.boundary = 0;
            part.limit = 0;
            part.free = 0;
        }
        drop(st);
        this.set_reclaimable(0);
    }
}
