// SPDX-License-Identifier: GPL-2.0

//! A pool's size classes and their partitions: a bitmap of allocated
//! buffers, the boundary below which the buffers are mapped, the chunks the
//! boundary moves by, and the quarantine of reclaimed buffers.

use super::ring::RingStats;
use crate::{
    accounting::Charges, cache::registration::Registration, stats::GLOBAL_POOL_PAGES, uapi,
};
use kernel::{
    prelude::*,
    sync::{atomic::Relaxed, Arc},
    time::Jiffies,
};

/// Bytes of memory a chunk holds at least.
const MIN_CHUNK_BYTES: usize = 64 * 1024;

/// Bytes one growth maps at most: one registration, one notifier, pages in
/// runs of up to this size when the allocator has them.
pub(super) const MAX_EXTENT_BYTES: usize = 2 * 1024 * 1024;

/// One size class's fixed parameters.
pub(crate) struct Class {
    /// Bytes per buffer, a power of two.
    pub(super) buffer_size: usize,
    /// Buffers in the partition.
    pub(super) max_buffers: usize,
    /// Grow at this many free buffers or fewer.
    pub(super) low: usize,
    /// Shrink when more stay free (0: never by use).
    pub(super) high: usize,
    /// Buffers mapped at first.
    pub(super) initial: usize,
    /// Buffers per chunk.
    pub(super) chunk_buffers: usize,
    /// The partition's offset in the mapping.
    pub(super) offset: usize,
}

impl Class {
    /// Bytes per chunk.
    pub(super) fn chunk_bytes(&self) -> usize {
        self.chunk_buffers * self.buffer_size
    }

    /// The class described by `c` at `offset` of the mapping, validated
    /// against the previous class's buffer size `prev` (`EINVAL`).
    pub(super) fn from_abi(c: &uapi::PoolClass, offset: usize, prev: usize) -> Result<Self> {
        let size = c.buffer_size as usize;
        if !size.is_power_of_two()
            || size < uapi::POOL_MIN_BUFFER as usize
            || size > uapi::POOL_MAX_BUFFER as usize
            || size <= prev
        {
            return Err(EINVAL);
        }
        let chunk_buffers = div(MIN_CHUNK_BYTES, size).max(1);
        let max = c.max_buffers as usize;
        let low = c.low_watermark as usize;
        let high = c.high_watermark as usize;
        let initial = c.initial as usize;
        if max == 0
            || max > uapi::POOL_MAX_BUFFERS as usize
            || rem(max, chunk_buffers) != 0
            || low >= max
            || (high != 0 && high < low + chunk_buffers)
            || initial > max
            || rem(initial, chunk_buffers) != 0
        {
            return Err(EINVAL);
        }
        Ok(Self {
            buffer_size: size,
            max_buffers: max,
            low,
            high,
            initial,
            chunk_buffers,
            offset,
        })
    }

    /// Bytes of the partition in the mapping.
    pub(super) fn bytes(&self) -> usize {
        self.max_buffers * self.buffer_size
    }
}

/// A partition's counters (`struct memreg_pool_stats`).
#[derive(Default, Clone, Copy)]
pub(crate) struct PartStats {
    pub(super) grows: u64,
    pub(super) shrinks: u64,
    pub(super) waits: u64,
    pub(super) timeouts: u64,
    pub(super) fallbacks: u64,
    pub(super) leaks_reclaimed: u64,
}

/// One mapped extent: a run of chunks mapped by one growth (up to
/// [`MAX_EXTENT_BYTES`]), its registration, and the charges of its pages,
/// which stay with the pool until the pages have left the mapping.
pub(super) struct Chunk {
    pub(super) registration: Arc<Registration>,
    pub(super) charges: Charges,
}

impl Chunk {
    /// Whether its buffers may be handed out: not ended, nor suspended
    /// while a "clear" is looked at.
    pub(super) fn is_usable(&self) -> bool {
        self.registration.is_live() && !self.registration.is_suspended()
    }
}

impl Drop for Chunk {
    /// The pages left the mapping and the registration let go of them: they
    /// are freed, and their charges go with them.
    fn drop(&mut self) {
        GLOBAL_POOL_PAGES.fetch_sub(self.charges.pages(), Relaxed);
    }
}

/// A partition's changing state, under `Pool::state`.
pub(super) struct PartState {
    /// One bit per buffer: allocated (or quarantined).
    pub(super) bitmap: KVVec<u64>,
    /// One bit per buffer: reclaimed as a leak, not yet freed by its holder.
    pub(super) quarantine: KVVec<u64>,
    /// Buffers below the boundary (mapped).
    pub(super) boundary: usize,
    /// Buffers ALLOC may hand out: the boundary, or a chunk less while that
    /// chunk is being given back.
    pub(super) limit: usize,
    /// Free buffers below `limit`.
    pub(super) free: usize,
    /// Allocated buffers (not counting the quarantined).
    pub(super) allocated: usize,
    /// Quarantined buffers.
    pub(super) quarantined: usize,
    /// Each mapped extent, at the index of its first chunk.
    pub(super) chunks: KVVec<Option<Chunk>>,
    /// For each chunk below the boundary, the index of its extent's first
    /// chunk.
    pub(super) extent_of: KVVec<u32>,
    /// One bit per buffer: lent to the free-buffer ring (also set in
    /// `bitmap`).
    pub(super) lent: KVVec<u64>,
    /// Buffers lent to the ring.
    pub(super) lent_count: usize,
    /// What the kernel found on the ring.
    pub(super) ring: RingStats,
    /// Since when more than the high watermark were free (jiffies).
    pub(super) above_high_since: Option<Jiffies>,
    /// Since when the chunk above `limit` waits for its buffers (jiffies).
    pub(super) shrink_since: Option<Jiffies>,
    /// The last growth failed for a limit: grow only after a shrink or FREE.
    pub(super) grow_failed: bool,
    /// An ALLOC found no buffer here, its ring taken back: the work grows
    /// the class even though buffers are lent (all of them are in use).
    pub(super) starved: bool,
    /// Where the search for a free buffer starts (a word index).
    pub(super) hint: usize,
    pub(super) stats: PartStats,
}

/// `a / b`, and 0 when `b` is 0 (never the case here: no panic path).
pub(super) fn div(a: usize, b: usize) -> usize {
    a.checked_div(b).unwrap_or(0)
}

/// `a % b`, and 0 when `b` is 0 (never the case here: no panic path).
pub(super) fn rem(a: usize, b: usize) -> usize {
    a.checked_rem(b).unwrap_or(0)
}

/// Whether bit `i` of `bits` is set.
pub(super) fn test_bit(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// Sets bit `i` of `bits` to `on`.
pub(super) fn set_bit(bits: &mut [u64], i: usize, on: bool) {
    if let Some(w) = bits.get_mut(i / 64) {
        if on {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }
}

/// Bits set among `first..end` of `bits`.
pub(super) fn count_bits(bits: &[u64], first: usize, end: usize) -> usize {
    (first..end).filter(|&i| test_bit(bits, i)).count()
}

impl PartState {
    pub(super) fn new(class: &Class) -> Result<Self> {
        let words = class.max_buffers.div_ceil(64);
        let chunks = div(class.max_buffers, class.chunk_buffers);
        let mut chunk_slots = KVVec::with_capacity(chunks, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..chunks {
            chunk_slots.push(None, GFP_KERNEL_ACCOUNT)?;
        }
        let extent_of = KVVec::from_elem(0u32, chunks, GFP_KERNEL_ACCOUNT)?;
        Ok(Self {
            bitmap: KVVec::from_elem(0u64, words, GFP_KERNEL_ACCOUNT)?,
            quarantine: KVVec::from_elem(0u64, words, GFP_KERNEL_ACCOUNT)?,
            boundary: 0,
            limit: 0,
            free: 0,
            allocated: 0,
            quarantined: 0,
            chunks: chunk_slots,
            extent_of,
            lent: KVVec::from_elem(0u64, words, GFP_KERNEL_ACCOUNT)?,
            lent_count: 0,
            ring: RingStats::default(),
            above_high_since: None,
            shrink_since: None,
            grow_failed: false,
            starved: false,
            hint: 0,
            stats: PartStats::default(),
        })
    }

    /// Takes the lowest free buffer below the limit whose chunk is live.
    pub(super) fn take(&mut self, class: &Class) -> Option<usize> {
        if self.free == 0 {
            return None;
        }
        let words = self.limit.div_ceil(64);
        for n in 0..words {
            let w = rem(self.hint + n, words);
            let word = *self.bitmap.get(w)?;
            if word == u64::MAX {
                continue;
            }
            let mut bits = !word;
            while bits != 0 {
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if i >= self.limit {
                    break;
                }
                let chunk = div(i, class.chunk_buffers);
                if !self.extent(chunk).is_some_and(|(_, e)| e.is_usable()) {
                    // Skip the rest of this chunk's buffers in this word: one look per chunk
                    // and word.
                    let end = chunk.saturating_add(1).saturating_mul(class.chunk_buffers);
                    let first_after = end.saturating_sub(w.saturating_mul(64));
                    bits = if first_after >= 64 {
                        0
                    } else {
                        bits & !((1u64 << first_after) - 1)
                    };
                    continue;
                }
                set_bit(&mut self.bitmap, i, true);
                self.free = self.free.saturating_sub(1);
                self.allocated = self.allocated.saturating_add(1);
                self.hint = w;
                return Some(i);
            }
        }
        None
    }

    /// The extent chunk `chunk` lies in, and the index of its first chunk.
    pub(super) fn extent(&self, chunk: usize) -> Option<(usize, &Chunk)> {
        let first = *self.extent_of.get(chunk)? as usize;
        Some((first, self.chunks.get(first)?.as_ref()?))
    }

    /// The first buffer of the last extent below the boundary (the boundary
    /// itself when nothing is mapped).
    pub(super) fn last_extent_start(&self, class: &Class) -> usize {
        let Some(last) = div(self.boundary, class.chunk_buffers).checked_sub(1) else {
            return self.boundary;
        };
        self.extent_of.get(last).map_or(self.boundary, |&f| {
            (f as usize).saturating_mul(class.chunk_buffers)
        })
    }

    /// The buffers to map next, in chunks: up to the initial size first,
    /// then enough to lift the free ones (with those lent to the ring when
    /// `lent_free`) above the low watermark; at least one chunk, at most
    /// [`MAX_EXTENT_BYTES`] and what is left.
    pub(super) fn chunks_to_grow(&self, class: &Class, lent_free: bool) -> usize {
        let cb = class.chunk_buffers;
        let lent = if lent_free { self.lent_count } else { 0 };
        let want = if self.boundary < class.initial {
            class.initial - self.boundary
        } else {
            (class.low + 1).saturating_sub(self.free.saturating_add(lent))
        };
        let most = div(MAX_EXTENT_BYTES, class.chunk_bytes()).max(1);
        let left = div(class.max_buffers.saturating_sub(self.boundary), cb);
        want.div_ceil(cb.max(1)).max(1).min(most).min(left)
    }

    /// Whether the partition should grow: few free (counting those lent to
    /// the ring, which the kernel cannot see being used), and a chunk being
    /// given back (which is kept instead) or room left and no limit hit.
    pub(super) fn wants_growth(&self, class: &Class) -> bool {
        self.free.saturating_add(self.lent_count) <= class.low
            && (self.limit < self.boundary
                || (self.boundary < class.max_buffers && !self.grow_failed))
    }

    /// Keeps the chunk being given back, if any: its free buffers are handed
    /// out again. Returns whether there was one.
    pub(super) fn cancel_shrink(&mut self) -> bool {
        if self.limit >= self.boundary {
            return false;
        }
        let free = (self.boundary - self.limit).saturating_sub(count_bits(
            &self.bitmap,
            self.limit,
            self.boundary,
        ));
        self.free = self.free.saturating_add(free);
        self.limit = self.boundary;
        self.shrink_since = None;
        true
    }
}

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_pool_part)]
mod tests {
    use super::*;

    fn class(size: u32, max: u32, low: u32, high: u32, initial: u32) -> uapi::PoolClass {
        let mut c: uapi::PoolClass = uapi::zeroed();
        c.buffer_size = size;
        c.max_buffers = max;
        c.low_watermark = low;
        c.high_watermark = high;
        c.initial = initial;
        c
    }

    #[test]
    fn classes_are_validated() {
        // 4 KiB buffers: 16 to a 64 KiB chunk.
        let ok = Class::from_abi(&class(4096, 64, 4, 40, 16), 0, 0);
        assert!(ok
            .as_ref()
            .is_ok_and(|c| c.chunk_buffers == 16 && c.chunk_bytes() == 65536));
        // 1 MiB buffers: one to a chunk.
        assert!(
            Class::from_abi(&class(1 << 20, 4, 0, 0, 1), 0, 0).is_ok_and(|c| c.chunk_buffers == 1)
        );
        // Not a power of two, too small, too large, not increasing.
        assert!(Class::from_abi(&class(3000, 64, 4, 40, 16), 0, 0).is_err());
        assert!(Class::from_abi(&class(32, 4096, 4, 0, 0), 0, 0).is_err());
        assert!(Class::from_abi(&class(1 << 22, 4, 0, 0, 0), 0, 0).is_err());
        assert!(Class::from_abi(&class(4096, 64, 4, 40, 16), 0, 4096).is_err());
        // Max not a multiple of the chunk, low not below max, high too close to low, initial not
        // a multiple of the chunk.
        assert!(Class::from_abi(&class(4096, 40, 4, 0, 0), 0, 0).is_err());
        assert!(Class::from_abi(&class(4096, 64, 64, 0, 0), 0, 0).is_err());
        assert!(Class::from_abi(&class(4096, 64, 4, 19, 16), 0, 0).is_err());
        assert!(Class::from_abi(&class(4096, 64, 4, 20, 16), 0, 0).is_ok());
        assert!(Class::from_abi(&class(4096, 64, 4, 40, 8), 0, 0).is_err());
        assert!(Class::from_abi(&class(4096, 0, 0, 0, 0), 0, 0).is_err());
    }

    #[test]
    fn bits_are_counted_where_set() {
        let mut bits = [0u64; 2];
        set_bit(&mut bits, 3, true);
        set_bit(&mut bits, 64, true);
        set_bit(&mut bits, 127, true);
        assert!(test_bit(&bits, 3) && test_bit(&bits, 64) && !test_bit(&bits, 4));
        assert_eq!(count_bits(&bits, 0, 128), 3);
        assert_eq!(count_bits(&bits, 4, 127), 1);
        set_bit(&mut bits, 64, false);
        assert_eq!(count_bits(&bits, 0, 128), 2);
        // Past the end: never set, never counted.
        set_bit(&mut bits, 500, true);
        assert!(!test_bit(&bits, 500));
    }

    #[test]
    fn growth_is_sized_in_chunks_up_to_an_extent() -> Result {
        // 4 KiB buffers: 16 to a 64 KiB chunk, 32 chunks to a 2 MiB extent.
        let c = Class::from_abi(&class(4096, 4096, 4, 0, 1024), 0, 0)?;
        let mut part = PartState::new(&c)?;
        // The initial 4 MiB: 2 MiB at a time.
        assert_eq!(part.chunks_to_grow(&c, true), 32);
        part.boundary = 512;
        part.limit = 512;
        assert_eq!(part.chunks_to_grow(&c, true), 32);
        // Then what lifts the free buffers above the low watermark: 2 free, one chunk.
        part.boundary = 1024;
        part.limit = 1024;
        part.free = 2;
        assert_eq!(part.chunks_to_grow(&c, true), 1);
        assert!(part.wants_growth(&c));
        // Lent buffers count as free for the work, not for an ALLOC whose ring ran dry.
        part.lent_count = 10;
        assert!(!part.wants_growth(&c));
        assert_eq!(part.chunks_to_grow(&c, false), 1);
        // Never past the maximum.
        part.boundary = 4096 - 16;
        part.limit = part.boundary;
        assert_eq!(part.chunks_to_grow(&c, false), 1);
        part.boundary = 4096;
        assert_eq!(part.chunks_to_grow(&c, false), 0);
        Ok(())
    }

    #[test]
    fn the_last_extent_is_found_from_the_boundary() -> Result {
        let c = Class::from_abi(&class(4096, 256, 4, 0, 0), 0, 0)?;
        let mut part = PartState::new(&c)?;
        assert_eq!(part.last_extent_start(&c), 0);
        // Chunks 0..4 one extent, 4..6 another.
        for (k, e) in part.extent_of.iter_mut().enumerate().take(6) {
            *e = if k < 4 { 0 } else { 4 };
        }
        part.boundary = 6 * 16;
        assert_eq!(part.last_extent_start(&c), 64);
        part.boundary = 4 * 16;
        assert_eq!(part.last_extent_start(&c), 0);
        Ok(())
    }

    #[test]
    fn a_shrinking_chunk_is_kept_when_buffers_run_low() -> Result {
        let c = Class::from_abi(&class(4096, 64, 4, 40, 16), 0, 0)?;
        let mut part = PartState::new(&c)?;
        part.boundary = 32;
        part.limit = 16;
        part.free = 2;
        set_bit(&mut part.bitmap, 20, true);
        assert!(part.wants_growth(&c));
        assert!(part.cancel_shrink());
        assert_eq!((part.limit, part.free), (32, 17));
        assert!(!part.cancel_shrink());
        Ok(())
    }
}
