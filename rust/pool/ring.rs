// SPDX-License-Identifier: GPL-2.0

//! A pool's free-buffer rings: one lock-free stack of buffer indexes per
//! class, in pages shared read-write with user space, so that ALLOC pops a
//! buffer and FREE pushes it back with one compare-and-swap and no system
//! call.
//!
//! The kernel lends the free buffers below a partition's limit to its ring
//! (they stay set in the partition's bitmap, and in `lent`), and takes the
//! ring's buffers back when it needs to know what is free: when an ALLOC
//! system call finds none of its own, and before its work looks at a
//! shrink. Taking back detaches the whole stack at once and walks it; every
//! index read there is untrusted and read once: the walk ends at an index
//! out of range or seen before (a cycle), an index the kernel never handed
//! out is dropped, and one reclaimed as a leak is freed (the FREE of a
//! reclaimed buffer, detected). User space that scribbles on its ring only
//! loses its own buffers. The kernel's compare-and-swap is tried a bounded
//! number of times: user space changing the top all the time only delays
//! its own buffers.
//!
//! All of it runs under `Pool::grow_lock`, in process context.

use super::{
    part::{div, set_bit, test_bit, Class},
    Pool,
};
use crate::uapi;
use kernel::{
    mm::{shared_pages::SharedPages, virt::VmaNew},
    page::PAGE_SIZE,
    prelude::*,
    sync::Arc,
};

/// Times the kernel tries its compare-and-swap of a ring's top before it
/// gives up for now.
const CAS_TRIES: usize = 16;

/// The index of no buffer.
const EMPTY: u32 = uapi::POOL_RING_EMPTY;

/// Bytes of a ring's head (`struct memreg_pool_ring_head`).
const HEAD_BYTES: usize = 64;

/// Bytes of an entry of a ring's chunk table (`struct memreg_pool_ring_chunk`).
const CHUNK_ENTRY_BYTES: usize = 16;

/// Where one class's ring lies in the pages, in bytes.
#[derive(Clone, Copy)]
struct Layout {
    head: usize,
    next: usize,
    chunks: usize,
    nr_chunks: usize,
}

/// The `top` word of a ring: a change count in the upper half, an index in
/// the lower.
fn top(tag: u32, index: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(index)
}

/// A pool's rings: the shared pages and where each class's ring lies.
pub(crate) struct Rings {
    pages: SharedPages,
    layout: KVec<Layout>,
}

impl Rings {
    /// Rings for `classes`, zeroed but for each top (empty) and limit (0).
    /// The pages are charged to the caller's memory cgroup.
    pub(super) fn new(classes: &[Class]) -> Result<Self> {
        let mut layout = KVec::with_capacity(classes.len(), GFP_KERNEL_ACCOUNT)?;
        let mut at = 0usize;
        for class in classes {
            let nr_chunks = div(class.max_buffers, class.chunk_buffers);
            let chunks = at + HEAD_BYTES;
            let next = chunks + nr_chunks * CHUNK_ENTRY_BYTES;
            layout.push(
                Layout {
                    head: at,
                    next,
                    chunks,
                    nr_chunks,
                },
                GFP_KERNEL_ACCOUNT,
            )?;
            at = (next + class.max_buffers * 4).next_multiple_of(PAGE_SIZE);
        }
        let this = Self {
            pages: SharedPages::new(at / PAGE_SIZE)?,
            layout,
        };
        for c in 0..classes.len() {
            this.set_top(c, top(0, EMPTY));
        }
        Ok(this)
    }

    /// Bytes of the mapping.
    pub(super) fn len(&self) -> usize {
        self.pages.len()
    }

    fn layout(&self, c: usize) -> Option<Layout> {
        self.layout.get(c).copied()
    }

    fn set_top(&self, c: usize, value: u64) {
        if let Some(l) = self.layout(c) {
            self.pages.store_u64(l.head / 8, value);
        }
    }

    /// Maps the rings into `vma`, read-write (once: the caller checks).
    pub(super) fn map_into(&self, vma: &VmaNew) -> Result {
        if vma.end() - vma.start() != self.len() {
            return Err(EINVAL);
        }
        self.pages.map_into(vma, 0, true)
    }

    /// Writes class `c`'s limit: buffers at or above it are not to be used.
    pub(super) fn set_limit(&self, c: usize, limit: usize) {
        if let Some(l) = self.layout(c) {
            self.pages.store_u32((l.head + 8) / 4, limit as u32);
        }
    }

    /// Writes what the buffers of chunk `chunk` of class `c` carry: `key`
    /// (0: not mapped) and the offset of the chunk's first buffer in its
    /// registration.
    pub(super) fn set_chunk(&self, c: usize, chunk: usize, key: u64, offset: u64) {
        let Some(l) = self.layout(c) else {
            return;
        };
        if chunk >= l.nr_chunks {
            return;
        }
        let at = (l.chunks + chunk * CHUNK_ENTRY_BYTES) / 8;
        self.pages.store_u64(at + 1, offset);
        self.pages.store_u64(at, key);
    }

    /// Takes the whole stack of class `c` off its ring; returns its first
    /// index (untrusted), `None` when empty, or `Err` when not taken.
    fn detach(&self, c: usize) -> Result<Option<u32>, ()> {
        let l = self.layout(c).ok_or(())?;
        for _ in 0..CAS_TRIES {
            let old = self.pages.load_u64(l.head / 8).ok_or(())?;
            let first = old as u32;
            if first == EMPTY {
                return Ok(None);
            }
            let tag = (old >> 32) as u32;
            if let Some(Ok(_)) =
                self.pages
                    .cmpxchg_u64(l.head / 8, old, top(tag.wrapping_add(1), EMPTY))
            {
                return Ok(Some(first));
            }
        }
        Err(())
    }

    /// The index after `i` on class `c`'s stack, read once (untrusted).
    fn next(&self, c: usize, i: usize) -> u32 {
        self.layout(c)
            .and_then(|l| self.pages.load_u32(l.next / 4 + i))
            .unwrap_or(EMPTY)
    }

    /// Pushes `chain` onto class `c`'s stack, in order; returns whether it
    /// is there.
    fn push(&self, c: usize, chain: &[u32]) -> bool {
        let (Some(l), Some(&first), Some(&last)) = (self.layout(c), chain.first(), chain.last())
        else {
            return false;
        };
        for pair in chain.windows(2) {
            if let [a, b] = pair {
                self.pages.store_u32(l.next / 4 + *a as usize, *b);
            }
        }
        for _ in 0..CAS_TRIES {
            let Some(old) = self.pages.load_u64(l.head / 8) else {
                return false;
            };
            self.pages.store_u32(l.next / 4 + last as usize, old as u32);
            let tag = (old >> 32) as u32;
            if let Some(Ok(_)) =
                self.pages
                    .cmpxchg_u64(l.head / 8, old, top(tag.wrapping_add(1), first))
            {
                return true;
            }
        }
        false
    }

    /// Class `c`'s layout in the ABI's terms.
    fn describe(&self, c: usize, out: &mut uapi::PoolRingClass) {
        if let Some(l) = self.layout(c) {
            out.head_offset = l.head as u64;
            out.next_offset = l.next as u64;
            out.chunks_offset = l.chunks as u64;
            out.nr_chunks = l.nr_chunks as u32;
        }
    }
}

/// A partition's ring counters.
#[derive(Default, Clone, Copy)]
pub(super) struct RingStats {
    /// Reclaimed buffers found pushed back, and freed.
    pub(super) stale: u64,
    /// Indexes found on the ring and dropped.
    pub(super) rejected: u64,
}

impl Pool {
    /// The rings, once mapped.
    fn mapped_rings(&self) -> Option<Arc<Rings>> {
        let st = self.state.lock();
        if st.rings_mapped {
            st.rings.clone()
        } else {
            None
        }
    }

    /// POOL_RING: creates the rings on the first call (charged to the
    /// caller) and describes them in `out` (one per class, as many as fit);
    /// returns the mapping's length.
    pub(crate) fn rings(this: &Arc<Self>, out: &mut [uapi::PoolRingClass]) -> Result<usize> {
        let _serial = this.grow_lock.lock();
        let existing = this.state.lock().rings.clone();
        let rings = match existing {
            Some(r) => r,
            None => {
                let r = Arc::new(Rings::new(&this.classes)?, GFP_KERNEL_ACCOUNT)?;
                // What is mapped already, before anyone can see the rings.
                let st = this.state.lock();
                for (c, (class, part)) in this.classes.iter().zip(st.parts.iter()).enumerate() {
                    let mut chunk = 0;
                    while chunk < div(part.boundary, class.chunk_buffers) {
                        let (first, key) = part
                            .extent(chunk)
                            .map_or((chunk, 0), |(f, e)| (f, e.registration.lkey()));
                        let offset = chunk.saturating_sub(first) * class.chunk_bytes();
                        r.set_chunk(c, chunk, key, offset as u64);
                        chunk += 1;
                    }
                    r.set_limit(c, part.limit);
                }
                drop(st);
                this.state.lock().rings = Some(r.clone());
                r
            }
        };
        let st = this.state.lock();
        for (c, o) in out.iter_mut().enumerate() {
            *o = uapi::zeroed();
            rings.describe(c, o);
            if let Some(part) = st.parts.get(c) {
                o.lent = part.lent_count as u64;
                o.stale = part.ring.stale;
                o.rejected = part.ring.rejected;
            }
        }
        Ok(rings.len())
    }

    /// Maps the rings into `vma` (their `mmap`): `EINVAL` before POOL_RING
    /// or for a wrong length or access, `EBUSY` when mapped before. The
    /// pool's work lends the free buffers right after.
    pub(crate) fn mmap_rings(this: &Arc<Self>, vma: &VmaNew) -> Result {
        let rings = {
            let st = this.state.lock();
            if st.rings_mapped || st.dead {
                return Err(EBUSY);
            }
            st.rings.clone().ok_or(EINVAL)?
        };
        rings.map_into(vma)?;
        let mut st = this.state.lock();
        if st.rings_mapped {
            return Err(EBUSY);
        }
        st.rings_mapped = true;
        drop(st);
        Self::queue(this);
        Ok(())
    }

    /// Publishes `chunks` chunks of class `c` from chunk `first`, one
    /// extent with key `key` (0: gone), and the class's limit. Under
    /// `grow_lock`.
    pub(super) fn publish_chunks(&self, c: usize, first: usize, chunks: usize, key: u64) {
        let Some(rings) = self.state.lock().rings.clone() else {
            return;
        };
        let Some(class) = self.classes.get(c) else {
            return;
        };
        for k in 0..chunks {
            let offset = if key == 0 { 0 } else { k * class.chunk_bytes() };
            rings.set_chunk(c, first + k, key, offset as u64);
        }
        self.publish_limit(c);
    }

    /// Publishes class `c`'s limit to its ring.
    pub(super) fn publish_limit(&self, c: usize) {
        let (rings, limit) = {
            let st = self.state.lock();
            (st.rings.clone(), st.parts.get(c).map_or(0, |p| p.limit))
        };
        if let Some(rings) = rings {
            rings.set_limit(c, limit);
        }
    }

    /// Takes class `c`'s ring back: every buffer on it is the kernel's
    /// again (free, or freed when it had been reclaimed). Returns whether
    /// the ring was looked at (without rings, or empty, it was): `false`
    /// when memory for the walk was short or user space kept changing the
    /// top. Under `grow_lock`.
    pub(super) fn drain(&self, c: usize) -> bool {
        let (Some(rings), Some(class)) = (self.mapped_rings(), self.classes.get(c)) else {
            return true;
        };
        let max = class.max_buffers;
        // The walk's memory, before anything is taken off the ring.
        let Ok(mut seen) = KVVec::from_elem(0u64, max.div_ceil(64), GFP_KERNEL) else {
            return false;
        };
        let Ok(mut found) = KVVec::<u32>::with_capacity(max, GFP_KERNEL) else {
            return false;
        };
        let mut index = match rings.detach(c) {
            Ok(Some(first)) => first,
            Ok(None) => return true,
            Err(()) => return false,
        };
        let mut bad = 0u64;
        while index != EMPTY {
            let i = index as usize;
            if i >= max || test_bit(&seen, i) {
                bad += 1;
                break;
            }
            set_bit(&mut seen, i, true);
            if found.push_within_capacity(index).is_err() {
                break;
            }
            index = rings.next(c, i);
        }
        let mut st = self.state.lock();
        let Some(part) = st.parts.get_mut(c) else {
            return true;
        };
        part.ring.rejected += bad;
        for &index in found.iter() {
            let i = index as usize;
            if test_bit(&part.quarantine, i) {
                // The FREE of a reclaimed buffer: free again from now on.
                set_bit(&mut part.quarantine, i, false);
                part.quarantined = part.quarantined.saturating_sub(1);
                part.ring.stale += 1;
            } else if !test_bit(&part.bitmap, i) {
                // Never handed out: not the ring's to give.
                part.ring.rejected += 1;
                continue;
            } else if test_bit(&part.lent, i) {
                set_bit(&mut part.lent, i, false);
                part.lent_count = part.lent_count.saturating_sub(1);
            } else {
                // Allocated by the system call, freed through the ring.
                part.allocated = part.allocated.saturating_sub(1);
            }
            set_bit(&mut part.bitmap, i, false);
            if i < part.limit {
                part.free = part.free.saturating_add(1);
                part.hint = part.hint.min(i / 64);
            }
        }
        true
    }

    /// Lends class `c`'s free buffers to its ring. Under `grow_lock`.
    pub(super) fn lend(&self, c: usize) {
        let (Some(rings), Some(class)) = (self.mapped_rings(), self.classes.get(c)) else {
            return;
        };
        let Ok(mut chain) = KVVec::<u32>::with_capacity(class.max_buffers, GFP_KERNEL) else {
            return;
        };
        {
            let mut st = self.state.lock();
            let Some(part) = st.parts.get_mut(c) else {
                return;
            };
            while chain.len() < class.max_buffers {
                let Some(i) = part.take(class) else {
                    break;
                };
                set_bit(&mut part.lent, i, true);
                part.allocated = part.allocated.saturating_sub(1);
                part.lent_count += 1;
                let _ = chain.push_within_capacity(i as u32);
            }
        }
        if chain.is_empty() || rings.push(c, &chain) {
            return;
        }
        // Not pushed (user space kept changing the top): they are the kernel's again.
        let mut st = self.state.lock();
        let Some(part) = st.parts.get_mut(c) else {
            return;
        };
        for &index in chain.iter() {
            let i = index as usize;
            // A FREE of it by the system call may have come first.
            if !test_bit(&part.lent, i) {
                continue;
            }
            set_bit(&mut part.lent, i, false);
            set_bit(&mut part.bitmap, i, false);
            part.lent_count = part.lent_count.saturating_sub(1);
            if i < part.limit {
                part.free = part.free.saturating_add(1);
                part.hint = part.hint.min(i / 64);
            }
        }
    }

    /// Whether the pool's rings are mapped.
    pub(super) fn has_rings(&self) -> bool {
        self.state.lock().rings_mapped
    }
}
