// SPDX-License-Identifier: GPL-2.0

//! The user ABI, the driver's one edge with user space: the constants and
//! structures bindgen generates from `include/uapi/linux/memreg.h` (the
//! kernel's `uapi` crate), wrapped as Rust Binder's `defs.rs` wraps
//! `abi::binder_*`, and the layout of every shared mapping, computed from the
//! header so that nothing is copied by hand.
//!
//! Everything user space hands the driver is decoded here or in [`crate::ioctl`]
//! into typed requests; the rest of the driver never sees a raw structure it
//! has not validated.

use core::marker::PhantomData;
use kernel::{
    prelude::*,
    transmute::{AsBytes, FromBytes},
    uaccess::{UserSliceReader, UserSliceWriter},
    uapi_wrapper,
};

mod req;

pub(crate) use req::*;

/// The structures and constants bindgen generates from the header, for the
/// few items that need no wrapper (an operation's `MEMREG_OP_*`).
pub(crate) use kernel::uapi as abi;

/// The ABI version answered by `MEMREG_IOC_GET_VERSION`.
pub(crate) const ABI_VERSION: u32 = abi::MEMREG_ABI_VERSION;
/// The type of every ioctl number of memreg (`MEMREG_IOC_MAGIC`).
pub(crate) const IOC_MAGIC: u32 = abi::MEMREG_IOC_MAGIC;

/// Largest length one registration may cover.
pub(crate) const MAX_LENGTH: u64 = abi::MEMREG_MAX_LENGTH;

pub(crate) const ACCESS_LOCAL_READ: u32 = abi::MEMREG_ACCESS_LOCAL_READ;
pub(crate) const ACCESS_LOCAL_WRITE: u32 = abi::MEMREG_ACCESS_LOCAL_WRITE;
pub(crate) const ACCESS_REMOTE_READ: u32 = abi::MEMREG_ACCESS_REMOTE_READ;
pub(crate) const ACCESS_REMOTE_WRITE: u32 = abi::MEMREG_ACCESS_REMOTE_WRITE;
/// The remote rights.
pub(crate) const ACCESS_REMOTE: u32 = ACCESS_REMOTE_READ | ACCESS_REMOTE_WRITE;
pub(crate) const ACCESS_ALL: u32 = abi::MEMREG_ACCESS_ALL;
pub(crate) const REGISTER_CACHED: u32 = abi::MEMREG_REGISTER_CACHED;
pub(crate) const REGISTER_REVIVED: u32 = abi::MEMREG_REGISTER_REVIVED;
pub(crate) const REGISTER_WATCH: u32 = abi::MEMREG_REGISTER_WATCH;
/// The local rights.
pub(crate) const ACCESS_LOCAL: u32 = ACCESS_LOCAL_READ | ACCESS_LOCAL_WRITE;
pub(crate) const STATE_VALID: u32 = abi::MEMREG_STATE_VALID;
pub(crate) const STATE_PARKED: u32 = abi::MEMREG_STATE_PARKED;
pub(crate) const STATE_SUSPENDED: u32 = abi::MEMREG_STATE_SUSPENDED;
pub(crate) const NO_SLOT: u32 = abi::MEMREG_NO_SLOT;
pub(crate) const MAX_SLOTS: usize = abi::MEMREG_MAX_SLOTS as usize;
pub(crate) const WORD_SUSPENDED: u64 = abi::MEMREG_WORD_SUSPENDED as u64;
pub(crate) const WORD_ENDED: u64 = abi::MEMREG_WORD_ENDED as u64;
pub(crate) const MMAP_STATE_WORDS: u64 = abi::MEMREG_MMAP_STATE_WORDS as u64;
pub(crate) const MMAP_EVENTS: u64 = abi::MEMREG_MMAP_EVENTS as u64;
pub(crate) const MMAP_EVENTS_HEAD: u64 = abi::MEMREG_MMAP_EVENTS_HEAD as u64;
pub(crate) const EVENT_SUSPENDED: u32 = abi::MEMREG_EVENT_SUSPENDED;
pub(crate) const EVENT_ENDED: u32 = abi::MEMREG_EVENT_ENDED;
pub(crate) const EVENT_EVICTED: u32 = abi::MEMREG_EVENT_EVICTED;
pub(crate) const EVENT_RESUMED: u32 = abi::MEMREG_EVENT_RESUMED;
pub(crate) const EVENTS_OVERFLOW: u32 = abi::MEMREG_EVENTS_OVERFLOW;
pub(crate) const EVENTS_OFFSET: usize = abi::MEMREG_EVENTS_OFFSET as usize;
pub(crate) const MAX_EVENTS: u32 = abi::MEMREG_MAX_EVENTS;

pub(crate) const MAX_QUEUES: u32 = abi::MEMREG_MAX_QUEUES;
pub(crate) const MAX_SQ_ENTRIES: u32 = abi::MEMREG_MAX_SQ_ENTRIES;
pub(crate) const MAX_CQ_ENTRIES: u32 = abi::MEMREG_MAX_CQ_ENTRIES;
pub(crate) const MASTER_ENTRIES: u32 = abi::MEMREG_MASTER_ENTRIES;
pub(crate) const MMAP_MASTER: u64 = abi::MEMREG_MMAP_MASTER as u64;
pub(crate) const MMAP_MASTER_USER: u64 = abi::MEMREG_MMAP_MASTER_USER as u64;
/// `MEMREG_MMAP_SQ(0)`: the read-write mapping of queue `q` is at this plus
/// `q << 24`.
pub(crate) const MMAP_SQ_BASE: u64 = abi::MEMREG_MMAP_SQ_BASE as u64;
/// `MEMREG_MMAP_CQ(0)`: the read-only mapping of queue `q` is at this plus
/// `q << 24`.
pub(crate) const MMAP_CQ_BASE: u64 = abi::MEMREG_MMAP_CQ_BASE as u64;
/// Bits of one queue's mmap offset range (`MEMREG_MMAP_QUEUE_SHIFT`).
pub(crate) const MMAP_QUEUE_SHIFT: u32 = abi::MEMREG_MMAP_QUEUE_SHIFT;
pub(crate) const SQ_SLOTS_OFFSET: usize = abi::MEMREG_SQ_SLOTS_OFFSET as usize;
pub(crate) const CQ_ENTRIES_OFFSET: usize = abi::MEMREG_CQ_ENTRIES_OFFSET as usize;
pub(crate) const MASTER_ENTRIES_OFFSET: usize = abi::MEMREG_MASTER_ENTRIES_OFFSET as usize;
/// One past the last opcode.
pub(crate) const OP_LAST: usize = abi::MEMREG_OP_LAST as usize;

/// The opcode `MEMREG_OP_*` value `op` as a descriptor holds it; fails to
/// compile for a value that does not fit.
pub(crate) const fn opcode(op: u32) -> u8 {
    assert!(op <= u8::MAX as u32);
    op as u8
}
pub(crate) const CQE_POOL: u32 = abi::MEMREG_CQE_POOL;
pub(crate) const SQE_IMM: u8 = abi::MEMREG_SQE_IMM as u8;
pub(crate) const CQE_IMM: u32 = abi::MEMREG_CQE_IMM;
pub(crate) const MAX_PEERS: usize = abi::MEMREG_MAX_PEERS as usize;
pub(crate) const MAX_SENDERS: usize = abi::MEMREG_MAX_SENDERS as usize;
pub(crate) const MAX_RNR_TIMEOUT_MS: u32 = abi::MEMREG_MAX_RNR_TIMEOUT_MS;
pub(crate) const MAX_POOLS: usize = abi::MEMREG_MAX_POOLS as usize;
pub(crate) const POOL_MAX_CLASSES: u32 = abi::MEMREG_POOL_MAX_CLASSES;
pub(crate) const POOL_MIN_BUFFER: u32 = abi::MEMREG_POOL_MIN_BUFFER;
pub(crate) const POOL_MAX_BUFFER: u32 = abi::MEMREG_POOL_MAX_BUFFER;
pub(crate) const POOL_MAX_BUFFERS: u32 = abi::MEMREG_POOL_MAX_BUFFERS;
pub(crate) const POOL_MAX_BATCH: u32 = abi::MEMREG_POOL_MAX_BATCH;
pub(crate) const POOL_MAX_TIMEOUT_MS: u32 = abi::MEMREG_POOL_MAX_TIMEOUT_MS;
pub(crate) const POOL_NO_FALLBACK: u32 = abi::MEMREG_POOL_NO_FALLBACK;
/// The first mmap offset of the pools (`MEMREG_MMAP_POOL(0)`).
pub(crate) const MMAP_POOL_BASE: u64 = abi::MEMREG_MMAP_POOL_BASE;
/// Bits of a pool's mmap offset range (`MEMREG_MMAP_POOL`).
pub(crate) const MMAP_POOL_SHIFT: u32 = abi::MEMREG_MMAP_POOL_SHIFT;

/// `MEMREG_MMAP_POOL(pool)`.
pub(crate) const fn mmap_pool(pool: u32) -> u64 {
    MMAP_POOL_BASE + ((pool as u64) << MMAP_POOL_SHIFT)
}
/// The first mmap offset of the pools' rings (`MEMREG_MMAP_POOL_RING(0)`).
pub(crate) const MMAP_POOL_RING_BASE: u64 = abi::MEMREG_MMAP_POOL_RING_BASE;
/// Bits of a pool's rings' mmap offset range (`MEMREG_MMAP_POOL_RING`).
pub(crate) const MMAP_POOL_RING_SHIFT: u32 = abi::MEMREG_MMAP_POOL_RING_SHIFT;
/// The index of no buffer on a pool's ring.
pub(crate) const POOL_RING_EMPTY: u32 = abi::MEMREG_POOL_RING_EMPTY;
pub(crate) const QUEUE_NEED_WAKEUP: u32 = abi::MEMREG_QUEUE_NEED_WAKEUP;
pub(crate) const QUEUE_CQ_FULL: u32 = abi::MEMREG_QUEUE_CQ_FULL;
pub(crate) const MAX_IDLE_MS: u64 = abi::MEMREG_MAX_IDLE_MS as u64;
pub(crate) const COPY_TO_REGION: u32 = abi::MEMREG_COPY_TO_REGION;
pub(crate) const COPY_FROM_REGION: u32 = abi::MEMREG_COPY_FROM_REGION;

/// Causes of invalidation, indexes into the statistics' `invalidations`.
pub(crate) const INVAL_UNMAP: usize = abi::memreg_inval_cause_MEMREG_INVAL_UNMAP as usize;
pub(crate) const INVAL_CLEAR: usize = abi::memreg_inval_cause_MEMREG_INVAL_CLEAR as usize;
pub(crate) const INVAL_PROTECTION_VMA: usize =
    abi::memreg_inval_cause_MEMREG_INVAL_PROTECTION_VMA as usize;
pub(crate) const INVAL_RELEASE: usize = abi::memreg_inval_cause_MEMREG_INVAL_RELEASE as usize;
pub(crate) const INVAL_MIGRATE: usize = abi::memreg_inval_cause_MEMREG_INVAL_MIGRATE as usize;
pub(crate) const INVAL_EXCLUSIVE: usize = abi::memreg_inval_cause_MEMREG_INVAL_EXCLUSIVE as usize;
pub(crate) const INVAL_OTHER: usize = abi::memreg_inval_cause_MEMREG_INVAL_OTHER as usize;
pub(crate) const INVAL_NR_CAUSES: usize = abi::memreg_inval_cause_MEMREG_INVAL_NR_CAUSES as usize;

/// Reasons of eviction, indexes into the statistics' `evictions`.
pub(crate) const EVICT_IDLE: usize = abi::memreg_evict_reason_MEMREG_EVICT_IDLE as usize;
pub(crate) const EVICT_PIN_LIMIT: usize = abi::memreg_evict_reason_MEMREG_EVICT_PIN_LIMIT as usize;
pub(crate) const EVICT_PARK_LIMIT: usize =
    abi::memreg_evict_reason_MEMREG_EVICT_PARK_LIMIT as usize;
pub(crate) const EVICT_SHRINKER: usize = abi::memreg_evict_reason_MEMREG_EVICT_SHRINKER as usize;
pub(crate) const EVICT_FLUSH: usize = abi::memreg_evict_reason_MEMREG_EVICT_FLUSH as usize;
pub(crate) const EVICT_NR_REASONS: usize =
    abi::memreg_evict_reason_MEMREG_EVICT_NR_REASONS as usize;

uapi_wrapper! {
    /// `struct memreg_register`.
    pub(crate) struct Register(abi::memreg_register) {
        addr, length, access, flags, lkey, rkey, region_addr, region_length, slot, reserved,
        generation, user_data,
    }
    /// `struct memreg_deregister`.
    pub(crate) struct Deregister(abi::memreg_deregister) { key, reserved }
    /// `struct memreg_query`.
    pub(crate) struct Query(abi::memreg_query) {
        key, addr, length, access, state, pages, extents, refcount, reserved,
    }
    /// `struct memreg_stats`.
    pub(crate) struct Stats(abi::memreg_stats) {
        registrations, cache_hits, cache_misses, pages_pinned, pages_pinned_peak,
        deregistrations, invalidations, parked, parked_pages, parks, revives, evictions,
        suspensions, resumptions, revalidation_failures, watches, watch_pages, reserved,
    }
    /// `struct memreg_global_stats`.
    pub(crate) struct GlobalStats(abi::memreg_global_stats) {
        contexts, regions, pages_pinned, budget_pages, max_registrations, peers, contexts_alive,
        watches,
    }
    /// `struct memreg_copy`.
    pub(crate) struct Copy(abi::memreg_copy) {
        key, offset, length, buf, direction, flags, reserved,
    }
    /// `struct memreg_cache_config`.
    pub(crate) struct CacheConfig(abi::memreg_cache_config) {
        parking, reserved0, max_parked, max_parked_pages, idle_ms, reserved,
    }
    /// `struct memreg_flush`.
    pub(crate) struct Flush(abi::memreg_flush) { evicted, pages, reserved }
    /// `struct memreg_event`.
    pub(crate) struct Event(abi::memreg_event) { key, addr, length, kind, cause }
    /// `struct memreg_event_ring`.
    pub(crate) struct EventRing(abi::memreg_event_ring) {
        tail, entries, flags, reserved0, overflows, user_data_offset, reserved,
    }
    /// `struct memreg_events_setup`.
    pub(crate) struct EventsSetup(abi::memreg_events_setup) {
        entries, eventfd, ring_bytes, reserved,
    }
    /// `struct memreg_resync_entry`.
    pub(crate) struct ResyncEntry(abi::memreg_resync_entry) { key, addr, length, state, slot }
    /// `struct memreg_events_resync`.
    pub(crate) struct EventsResync(abi::memreg_events_resync) {
        entries, capacity, count, reserved,
    }
    /// `struct memreg_sqe`.
    pub(crate) struct Sqe(abi::memreg_sqe) {
        opcode, flags, reserved0, peer, user_data, key, offset, src_key, src_offset, length,
    }
    /// `struct memreg_sq_slot`.
    pub(crate) struct SqSlot(abi::memreg_sq_slot) { seq, sqe: Sqe }
    /// `struct memreg_sq_user`.
    pub(crate) struct SqUser(abi::memreg_sq_user) { insert, cq_head, cq_arm, reserved }
    /// `struct memreg_cq_ring`.
    pub(crate) struct CqRing(abi::memreg_cq_ring) {
        sq_head, cq_tail, flags, sq_entries, cq_entries, reserved,
    }
    /// `struct memreg_cqe`.
    pub(crate) struct Cqe(abi::memreg_cqe) { user_data, bytes, status, flags, imm_data }
    /// `struct memreg_master_ring`.
    pub(crate) struct MasterRing(abi::memreg_master_ring) { tail, flags, overflows, reserved }
    /// `struct memreg_master_user`.
    pub(crate) struct MasterUser(abi::memreg_master_user) { head, arm, reserved }
    /// `struct memreg_queue_create`.
    pub(crate) struct QueueCreate(abi::memreg_queue_create) {
        sq_entries, cq_entries, eventfd, queue, sq_bytes, cq_bytes, reserved,
    }
    /// `struct memreg_doorbell`.
    pub(crate) struct Doorbell(abi::memreg_doorbell) { queue, reserved }
    /// `struct memreg_queue_stats`.
    pub(crate) struct QueueStats(abi::memreg_queue_stats) {
        requests, completions, errors, doorbells, wakeups, batches, batch_max, batch_limit,
        poll_us, cq_full_stalls, shadow_hits, shadow_misses, master_overflows, remote_bytes,
        messages, rnr_timeouts,
    }
    /// `struct memreg_peer_attach`.
    pub(crate) struct PeerAttach(abi::memreg_peer_attach) { fd, peer, reserved }
    /// `struct memreg_peer_detach`.
    pub(crate) struct PeerDetach(abi::memreg_peer_detach) { peer, reserved }
    /// `struct memreg_queue_connect`.
    pub(crate) struct QueueConnect(abi::memreg_queue_connect) {
        queue, peer, remote_queue, rnr_timeout_ms, reserved,
    }
    /// `struct memreg_pool_class`.
    pub(crate) struct PoolClass(abi::memreg_pool_class) {
        buffer_size, max_buffers, low_watermark, high_watermark, initial, chunk_buffers, offset,
    }
    /// `struct memreg_pool_create`.
    pub(crate) struct PoolCreate(abi::memreg_pool_create) {
        classes, nr_classes, access, leak_timeout_ms, shrink_ms, pool, reserved0, map_bytes,
        reserved,
    }
    /// `struct memreg_pool_buf`.
    pub(crate) struct PoolBuf(abi::memreg_pool_buf) { addr, key, offset, size, class }
    /// `struct memreg_pool_alloc`.
    pub(crate) struct PoolAlloc(abi::memreg_pool_alloc) {
        pool, flags, size, bufs, count, timeout_ms, reserved,
    }
    /// `struct memreg_pool_free`.
    pub(crate) struct PoolFree(abi::memreg_pool_free) { pool, count, addrs, reserved }
    /// `struct memreg_pool_stats`.
    pub(crate) struct PoolStats(abi::memreg_pool_stats) {
        boundary, allocated, free, grows, shrinks, waits, timeouts, fallbacks, leaks_reclaimed,
        quarantined,
    }
    /// `struct memreg_pool_info`.
    pub(crate) struct PoolInfo(abi::memreg_pool_info) { pool, count, stats, reserved }
    /// `struct memreg_pool_destroy`.
    pub(crate) struct PoolDestroy(abi::memreg_pool_destroy) { pool, reserved }
    /// `struct memreg_pool_ring_class`.
    pub(crate) struct PoolRingClass(abi::memreg_pool_ring_class) {
        head_offset, next_offset, chunks_offset, nr_chunks, reserved0, lent, stale, rejected,
    }
    /// `struct memreg_pool_ring`.
    pub(crate) struct PoolRing(abi::memreg_pool_ring) { pool, count, classes, map_bytes, reserved }
    /// `struct memreg_revalidate`.
    pub(crate) struct Revalidate(abi::memreg_revalidate) { key, reserved }
}

/// What an mmap offset of the file names, decoded once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MmapArea {
    /// `MEMREG_MMAP_STATE_WORDS`.
    StateWords,
    /// `MEMREG_MMAP_EVENTS`: the event ring, read-only.
    Events,
    /// `MEMREG_MMAP_EVENTS_HEAD`: the event ring's head page, read-write.
    EventsHead,
    /// `MEMREG_MMAP_MASTER`: the master ring, read-only.
    Master,
    /// `MEMREG_MMAP_MASTER_USER`: the master ring's read-write page.
    MasterUser,
    /// `MEMREG_MMAP_SQ(q)`: a queue's read-write mapping.
    Submission(u32),
    /// `MEMREG_MMAP_CQ(q)`: a queue's read-only mapping.
    Completion(u32),
    /// `MEMREG_MMAP_POOL(p)`: a pool's mapping.
    Pool(u32),
    /// `MEMREG_MMAP_POOL_RING(p)`: a pool's free-buffer rings, read-write.
    PoolRing(u32),
}

impl MmapArea {
    /// The area at byte offset `offset`; `EINVAL` for an offset that names
    /// none (whether the area exists is for its owner to say).
    pub(crate) fn decode(offset: u64) -> Result<Self> {
        let queue = |base: u64| -> Option<u32> {
            let rel = offset.checked_sub(base)?;
            let q = rel >> MMAP_QUEUE_SHIFT;
            (rel & ((1 << MMAP_QUEUE_SHIFT) - 1) == 0 && q < u64::from(MAX_QUEUES))
                .then_some(q as u32)
        };
        Ok(match offset {
            MMAP_STATE_WORDS => Self::StateWords,
            MMAP_EVENTS => Self::Events,
            MMAP_EVENTS_HEAD => Self::EventsHead,
            MMAP_MASTER => Self::Master,
            MMAP_MASTER_USER => Self::MasterUser,
            o if o >= MMAP_POOL_RING_BASE => {
                let rel = o - MMAP_POOL_RING_BASE;
                let index = rel >> MMAP_POOL_RING_SHIFT;
                if rel & ((1 << MMAP_POOL_RING_SHIFT) - 1) != 0 || index >= MAX_POOLS as u64 {
                    return Err(EINVAL);
                }
                Self::PoolRing(index as u32)
            }
            o if o >= MMAP_POOL_BASE => {
                let index = (o - MMAP_POOL_BASE) >> MMAP_POOL_SHIFT;
                let index = u32::try_from(index).map_err(|_| EINVAL)?;
                if o != mmap_pool(index) {
                    return Err(EINVAL);
                }
                Self::Pool(index)
            }
            _ => {
                if let Some(q) = queue(MMAP_CQ_BASE) {
                    Self::Completion(q)
                } else if let Some(q) = queue(MMAP_SQ_BASE) {
                    Self::Submission(q)
                } else {
                    return Err(EINVAL);
                }
            }
        })
    }
}

/// Word indexes of the shared mappings' headers, from the header's layout: the
/// index of a field in an array of words of its own size.
pub(crate) mod layout {
    use super::abi;
    use core::mem::{offset_of, size_of};

    /// The index of the field at byte `offset` among words of `width` bytes.
    const fn word(offset: usize, width: usize) -> usize {
        assert!(offset % width == 0);
        offset / width
    }

    /// `struct memreg_event_ring.tail`, a `u32`.
    pub(crate) const EVENTS_TAIL: usize = word(offset_of!(abi::memreg_event_ring, tail), 4);
    /// `struct memreg_event_ring.entries`, a `u32`.
    pub(crate) const EVENTS_ENTRIES: usize = word(offset_of!(abi::memreg_event_ring, entries), 4);
    /// `struct memreg_event_ring.flags`, a `u32`.
    pub(crate) const EVENTS_FLAGS: usize = word(offset_of!(abi::memreg_event_ring, flags), 4);
    /// `struct memreg_event_ring.overflows`, a `u64`.
    pub(crate) const EVENTS_OVERFLOWS: usize =
        word(offset_of!(abi::memreg_event_ring, overflows), 8);
    /// `struct memreg_event_ring.user_data_offset`, a `u64`.
    pub(crate) const EVENTS_USER_DATA_OFFSET: usize =
        word(offset_of!(abi::memreg_event_ring, user_data_offset), 8);

    /// `struct memreg_sq_user.insert`, a `u64`.
    pub(crate) const SQ_INSERT: usize = word(offset_of!(abi::memreg_sq_user, insert), 8);
    /// `struct memreg_sq_user.cq_head`, a `u32`.
    pub(crate) const SQ_CQ_HEAD: usize = word(offset_of!(abi::memreg_sq_user, cq_head), 4);
    /// `struct memreg_sq_user.cq_arm`, a `u32`.
    pub(crate) const SQ_CQ_ARM: usize = word(offset_of!(abi::memreg_sq_user, cq_arm), 4);

    /// `struct memreg_cq_ring.sq_head`, a `u64`.
    pub(crate) const CQ_SQ_HEAD: usize = word(offset_of!(abi::memreg_cq_ring, sq_head), 8);
    /// `struct memreg_cq_ring.cq_tail`, a `u32`.
    pub(crate) const CQ_TAIL: usize = word(offset_of!(abi::memreg_cq_ring, cq_tail), 4);
    /// `struct memreg_cq_ring.flags`, a `u32`.
    pub(crate) const CQ_FLAGS: usize = word(offset_of!(abi::memreg_cq_ring, flags), 4);
    /// `struct memreg_cq_ring.sq_entries`, a `u32`.
    pub(crate) const CQ_SQ_ENTRIES: usize = word(offset_of!(abi::memreg_cq_ring, sq_entries), 4);
    /// `struct memreg_cq_ring.cq_entries`, a `u32`.
    pub(crate) const CQ_CQ_ENTRIES: usize = word(offset_of!(abi::memreg_cq_ring, cq_entries), 4);

    /// `struct memreg_master_ring.tail`, a `u32` of the read-only page.
    pub(crate) const MASTER_TAIL: usize = word(offset_of!(abi::memreg_master_ring, tail), 4);
    /// `struct memreg_master_ring.flags`, a `u32` of the read-only page.
    pub(crate) const MASTER_FLAGS: usize = word(offset_of!(abi::memreg_master_ring, flags), 4);
    /// `struct memreg_master_ring.overflows`, a `u64` of the read-only page.
    pub(crate) const MASTER_OVERFLOWS: usize =
        word(offset_of!(abi::memreg_master_ring, overflows), 8);
    /// `struct memreg_master_user.head`, a `u32` of the read-write page.
    pub(crate) const MASTER_HEAD: usize = word(offset_of!(abi::memreg_master_user, head), 4);
    /// `struct memreg_master_user.arm`, a `u32` of the read-write page.
    pub(crate) const MASTER_ARM: usize = word(offset_of!(abi::memreg_master_user, arm), 4);

    /// `struct memreg_sq_slot.seq`, as a `u64` of the slot.
    pub(crate) const SLOT_SEQ: usize = word(offset_of!(abi::memreg_sq_slot, seq), 8);

    // Every header fits before the entries that follow it.
    const _: () = assert!(size_of::<abi::memreg_event_ring>() <= super::EVENTS_OFFSET);
    const _: () = assert!(size_of::<abi::memreg_sq_user>() <= super::SQ_SLOTS_OFFSET);
    const _: () = assert!(size_of::<abi::memreg_cq_ring>() <= super::CQ_ENTRIES_OFFSET);
    const _: () = assert!(size_of::<abi::memreg_master_ring>() <= super::MASTER_ENTRIES_OFFSET);
    // A slot is its sequence word followed by the descriptor.
    const _: () = assert!(SLOT_SEQ == 0 && offset_of!(abi::memreg_sq_slot, sqe) == 8);
    const _: () = assert!(size_of::<abi::memreg_sq_slot>() == 8 + size_of::<abi::memreg_sqe>());
}

/// Bytes checked at a time in the zero tail of a larger structure.
const TAIL_CHUNK: usize = 64;

/// Reads an argument of `size` bytes into a `T`, under the rules of
/// [`crate::ioctl`]: what the caller gave, the rest zero; `E2BIG` when a
/// larger argument's extra bytes are not all zero.
pub(crate) fn read_arg<T: FromBytes + AsBytes + Zeroable>(
    reader: &mut UserSliceReader,
    size: usize,
) -> Result<T> {
    let mut value: T = pin_init::zeroed();
    let n = size.min(core::mem::size_of::<T>());
    let bytes = value.as_bytes_mut();
    reader.read_slice(bytes.get_mut(..n).ok_or(EINVAL)?)?;
    let mut left = size - n;
    let mut tail = [0u8; TAIL_CHUNK];
    while left > 0 {
        let k = left.min(TAIL_CHUNK);
        let chunk = tail.get_mut(..k).ok_or(EINVAL)?;
        reader.read_slice(chunk)?;
        if chunk.iter().any(|&b| b != 0) {
            return Err(E2BIG);
        }
        left -= k;
    }
    Ok(value)
}

/// Writes `value` as an argument of `size` bytes.
pub(crate) fn write_arg<T: AsBytes>(
    writer: &mut UserSliceWriter,
    size: usize,
    value: &T,
) -> Result {
    let bytes = value.as_bytes();
    let n = size.min(bytes.len());
    writer.write_slice(bytes.get(..n).ok_or(EINVAL)?)?;
    let mut left = size - n;
    let zeros = [0u8; TAIL_CHUNK];
    while left > 0 {
        let k = left.min(TAIL_CHUNK);
        writer.write_slice(zeros.get(..k).ok_or(EINVAL)?)?;
        left -= k;
    }
    Ok(())
}

/// The write-back of a read-write call, for a handler that must write its
/// result before it makes it visible or undo its work when the write fails.
pub(crate) struct Reply<'a, T> {
    writer: UserSliceWriter,
    size: usize,
    _arg: PhantomData<&'a T>,
}

impl<T: AsBytes> Reply<'_, T> {
    /// The write-back of `size` bytes through `writer`.
    pub(crate) fn new(writer: UserSliceWriter, size: usize) -> Self {
        Self {
            writer,
            size,
            _arg: PhantomData,
        }
    }

    /// Writes `value` back to the caller, once.
    pub(crate) fn send(mut self, value: &T) -> Result {
        write_arg(&mut self.writer, self.size, value)
    }
}

/// Fails with `EINVAL` unless every reserved word is zero.
pub(crate) fn check_reserved(words: &[u64]) -> Result {
    if words.iter().all(|&w| w == 0) {
        Ok(())
    } else {
        Err(EINVAL)
    }
}

/// The descriptor whose bytes are the seven words `words`, as they lie in
/// memory (a submission slot after its sequence).
pub(crate) fn sqe_from_words(words: &[u64; 7]) -> Sqe {
    const _: () = assert!(core::mem::size_of::<Sqe>() == 56);
    let mut bytes = [0u8; 56];
    for (i, w) in words.iter().enumerate() {
        if let Some(chunk) = bytes.get_mut(i * 8..i * 8 + 8) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
    }
    Sqe::from_bytes_copy(&bytes).unwrap_or_else(zeroed)
}

/// A zeroed structure of the ABI, to fill in before copying it out.
pub(crate) fn zeroed<T: Zeroable>() -> T {
    pin_init::zeroed()
}

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_defs)]
mod tests {
    use super::*;

    /// The sizes of the structures that live in shared mappings, as the
    /// header's protocol describes them.
    #[test]
    fn shared_structures_have_their_sizes() {
        assert_eq!(core::mem::size_of::<Cqe>(), 32);
        assert_eq!(core::mem::size_of::<Sqe>(), 56);
        assert_eq!(core::mem::size_of::<SqSlot>(), 64);
        assert_eq!(core::mem::size_of::<PoolClass>(), 32);
        assert_eq!(core::mem::size_of::<PoolBuf>(), 32);
        assert_eq!(core::mem::size_of::<Event>(), 32);
        assert_eq!(core::mem::size_of::<EventRing>(), EVENTS_OFFSET);
        assert_eq!(mmap_pool(1), (1 << 40) + (1 << 36));
    }

    #[test]
    fn mmap_offsets_are_decoded() {
        assert_eq!(MmapArea::decode(0), Ok(MmapArea::StateWords));
        assert_eq!(MmapArea::decode(MMAP_EVENTS), Ok(MmapArea::Events));
        assert_eq!(MmapArea::decode(MMAP_EVENTS_HEAD), Ok(MmapArea::EventsHead));
        assert_eq!(MmapArea::decode(MMAP_MASTER), Ok(MmapArea::Master));
        assert_eq!(MmapArea::decode(MMAP_MASTER_USER), Ok(MmapArea::MasterUser));
        assert_eq!(
            MmapArea::decode(0x4000_0000 + (3 << 24)),
            Ok(MmapArea::Submission(3))
        );
        assert_eq!(
            MmapArea::decode(0x8000_0000 + (63 << 24)),
            Ok(MmapArea::Completion(63))
        );
        assert_eq!(MmapArea::decode(0x8000_0000 + (64 << 24)), Err(EINVAL));
        assert_eq!(MmapArea::decode(0x4000_0000 + 4096), Err(EINVAL));
        assert_eq!(MmapArea::decode(mmap_pool(15)), Ok(MmapArea::Pool(15)));
        assert_eq!(MmapArea::decode(mmap_pool(2) + 4096), Err(EINVAL));
        // The rings follow the pools: 2^41 is pool 16's offset, which is none.
        assert_eq!(mmap_pool(16), MMAP_POOL_RING_BASE);
        assert_eq!(
            MmapArea::decode(MMAP_POOL_RING_BASE),
            Ok(MmapArea::PoolRing(0))
        );
        assert_eq!(
            MmapArea::decode(MMAP_POOL_RING_BASE + (15 << 32)),
            Ok(MmapArea::PoolRing(15))
        );
        assert_eq!(
            MmapArea::decode(MMAP_POOL_RING_BASE + (16 << 32)),
            Err(EINVAL)
        );
        assert_eq!(MmapArea::decode(MMAP_POOL_RING_BASE + 4096), Err(EINVAL));
        assert_eq!(MmapArea::decode(4096), Err(EINVAL));
    }

    #[test]
    fn causes_have_their_abi_values() {
        assert_eq!(INVAL_UNMAP, 0);
        assert_eq!(INVAL_CLEAR, 1);
        assert_eq!(INVAL_PROTECTION_VMA, 2);
        assert_eq!(INVAL_RELEASE, 5);
        assert_eq!(INVAL_MIGRATE, 6);
        assert_eq!(INVAL_EXCLUSIVE, 7);
        assert_eq!(INVAL_OTHER, 8);
        assert_eq!(INVAL_NR_CAUSES, 9);
        assert_eq!(EVICT_IDLE, 0);
        assert_eq!(EVICT_PIN_LIMIT, 1);
        assert_eq!(EVICT_PARK_LIMIT, 2);
        assert_eq!(EVICT_SHRINKER, 3);
        assert_eq!(EVICT_FLUSH, 4);
        assert_eq!(EVICT_NR_REASONS, 5);
    }

    #[test]
    fn a_descriptor_is_read_from_its_words() {
        let mut first = [0u8; 8];
        first[0] = opcode(abi::MEMREG_OP_COPY);
        let words = [u64::from_ne_bytes(first), 7, 1, 2, 3, 4, 5];
        let sqe = sqe_from_words(&words);
        assert_eq!(sqe.opcode, opcode(abi::MEMREG_OP_COPY));
        assert_eq!(sqe.flags, 0);
        assert_eq!(sqe.user_data, 7);
        assert_eq!(sqe.key, 1);
        assert_eq!(sqe.length, 5);
    }

    #[test]
    fn reserved_words_must_be_zero() {
        assert_eq!(check_reserved(&[0, 0]), Ok(()));
        assert_eq!(check_reserved(&[0, 1]), Err(EINVAL));
    }
}
