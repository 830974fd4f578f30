// SPDX-License-Identifier: GPL-2.0

//! The user ABI: thin wrappers over the structures and constants bindgen
//! generates from `include/uapi/linux/memreg.h` (the kernel's `uapi` crate),
//! as Rust Binder's `defs.rs` wraps `uapi::binder_*`.
//!
//! Each structure is copied in and out whole, with one user copy; ioctl
//! numbers are computed from the structures' sizes, so they match the
//! header's by construction.

use kernel::{
    ioctl::{_IO, _IOR, _IOW, _IOWR},
    prelude::*,
    transmute::FromBytes,
    uapi,
};

/// The ABI version answered by `MEMREG_IOC_GET_VERSION`.
pub(crate) const ABI_VERSION: u32 = uapi::MEMREG_ABI_VERSION;
const MAGIC: u32 = uapi::MEMREG_IOC_MAGIC;

/// Largest length one registration may cover.
pub(crate) const MAX_LENGTH: u64 = uapi::MEMREG_MAX_LENGTH;

pub(crate) const ACCESS_LOCAL_READ: u32 = uapi::MEMREG_ACCESS_LOCAL_READ;
pub(crate) const ACCESS_LOCAL_WRITE: u32 = uapi::MEMREG_ACCESS_LOCAL_WRITE;
pub(crate) const ACCESS_REMOTE_READ: u32 = uapi::MEMREG_ACCESS_REMOTE_READ;
pub(crate) const ACCESS_REMOTE_WRITE: u32 = uapi::MEMREG_ACCESS_REMOTE_WRITE;
/// The remote rights.
pub(crate) const ACCESS_REMOTE: u32 = ACCESS_REMOTE_READ | ACCESS_REMOTE_WRITE;
pub(crate) const ACCESS_ALL: u32 = uapi::MEMREG_ACCESS_ALL;
pub(crate) const REGISTER_CACHED: u32 = uapi::MEMREG_REGISTER_CACHED;
pub(crate) const REGISTER_REVIVED: u32 = uapi::MEMREG_REGISTER_REVIVED;
pub(crate) const STATE_VALID: u32 = uapi::MEMREG_STATE_VALID;
pub(crate) const STATE_PARKED: u32 = uapi::MEMREG_STATE_PARKED;
pub(crate) const STATE_SUSPENDED: u32 = uapi::MEMREG_STATE_SUSPENDED;
pub(crate) const NO_SLOT: u32 = uapi::MEMREG_NO_SLOT;
pub(crate) const MAX_SLOTS: usize = uapi::MEMREG_MAX_SLOTS as usize;
pub(crate) const WORD_SUSPENDED: u64 = uapi::MEMREG_WORD_SUSPENDED as u64;
pub(crate) const WORD_ENDED: u64 = uapi::MEMREG_WORD_ENDED as u64;
pub(crate) const MMAP_STATE_WORDS: u64 = uapi::MEMREG_MMAP_STATE_WORDS as u64;
pub(crate) const MMAP_EVENTS: u64 = uapi::MEMREG_MMAP_EVENTS as u64;
pub(crate) const MMAP_EVENTS_HEAD: u64 = uapi::MEMREG_MMAP_EVENTS_HEAD as u64;
pub(crate) const EVENT_SUSPENDED: u32 = uapi::MEMREG_EVENT_SUSPENDED;
pub(crate) const EVENT_ENDED: u32 = uapi::MEMREG_EVENT_ENDED;
pub(crate) const EVENT_EVICTED: u32 = uapi::MEMREG_EVENT_EVICTED;
pub(crate) const EVENTS_OVERFLOW: u32 = uapi::MEMREG_EVENTS_OVERFLOW;
pub(crate) const EVENTS_OFFSET: usize = uapi::MEMREG_EVENTS_OFFSET as usize;
pub(crate) const MAX_EVENTS: u32 = uapi::MEMREG_MAX_EVENTS;

pub(crate) const MAX_QUEUES: u32 = uapi::MEMREG_MAX_QUEUES;
pub(crate) const MAX_SQ_ENTRIES: u32 = uapi::MEMREG_MAX_SQ_ENTRIES;
pub(crate) const MAX_CQ_ENTRIES: u32 = uapi::MEMREG_MAX_CQ_ENTRIES;
pub(crate) const MASTER_ENTRIES: u32 = uapi::MEMREG_MASTER_ENTRIES;
pub(crate) const MMAP_MASTER: u64 = uapi::MEMREG_MMAP_MASTER as u64;
pub(crate) const MMAP_MASTER_USER: u64 = uapi::MEMREG_MMAP_MASTER_USER as u64;
/// `MEMREG_MMAP_SQ(0)`: the read-write mapping of queue `q` is at this plus
/// `q << 24`.
pub(crate) const MMAP_SQ_BASE: u64 = 0x4000_0000;
/// `MEMREG_MMAP_CQ(0)`: the read-only mapping of queue `q` is at this plus
/// `q << 24`.
pub(crate) const MMAP_CQ_BASE: u64 = 0x8000_0000;
pub(crate) const SQ_SLOTS_OFFSET: usize = uapi::MEMREG_SQ_SLOTS_OFFSET as usize;
pub(crate) const CQ_ENTRIES_OFFSET: usize = uapi::MEMREG_CQ_ENTRIES_OFFSET as usize;
pub(crate) const MASTER_ENTRIES_OFFSET: usize = uapi::MEMREG_MASTER_ENTRIES_OFFSET as usize;
pub(crate) const OP_NOP: u8 = uapi::MEMREG_OP_NOP as u8;
pub(crate) const OP_COPY: u8 = uapi::MEMREG_OP_COPY as u8;
pub(crate) const OP_FENCE: u8 = uapi::MEMREG_OP_FENCE as u8;
pub(crate) const OP_DEREGISTER: u8 = uapi::MEMREG_OP_DEREGISTER as u8;
pub(crate) const OP_WRITE: u8 = uapi::MEMREG_OP_WRITE as u8;
pub(crate) const OP_READ: u8 = uapi::MEMREG_OP_READ as u8;
pub(crate) const OP_SEND: u8 = uapi::MEMREG_OP_SEND as u8;
pub(crate) const OP_RECV: u8 = uapi::MEMREG_OP_RECV as u8;
pub(crate) const OP_POOL_ALLOC: u8 = uapi::MEMREG_OP_POOL_ALLOC as u8;
pub(crate) const OP_POOL_FREE: u8 = uapi::MEMREG_OP_POOL_FREE as u8;
pub(crate) const CQE_POOL: u32 = uapi::MEMREG_CQE_POOL;
pub(crate) const SQE_IMM: u8 = uapi::MEMREG_SQE_IMM as u8;
pub(crate) const CQE_IMM: u32 = uapi::MEMREG_CQE_IMM;
pub(crate) const MAX_PEERS: usize = uapi::MEMREG_MAX_PEERS as usize;
pub(crate) const MAX_SENDERS: usize = uapi::MEMREG_MAX_SENDERS as usize;
pub(crate) const MAX_RNR_TIMEOUT_MS: u32 = uapi::MEMREG_MAX_RNR_TIMEOUT_MS;
pub(crate) const MAX_POOLS: usize = uapi::MEMREG_MAX_POOLS as usize;
pub(crate) const POOL_MAX_CLASSES: u32 = uapi::MEMREG_POOL_MAX_CLASSES;
pub(crate) const POOL_MIN_BUFFER: u32 = uapi::MEMREG_POOL_MIN_BUFFER;
pub(crate) const POOL_MAX_BUFFER: u32 = uapi::MEMREG_POOL_MAX_BUFFER;
pub(crate) const POOL_MAX_BUFFERS: u32 = uapi::MEMREG_POOL_MAX_BUFFERS;
pub(crate) const POOL_MAX_BATCH: u32 = uapi::MEMREG_POOL_MAX_BATCH;
pub(crate) const POOL_MAX_TIMEOUT_MS: u32 = uapi::MEMREG_POOL_MAX_TIMEOUT_MS;
pub(crate) const POOL_NO_FALLBACK: u32 = uapi::MEMREG_POOL_NO_FALLBACK;
/// The first mmap offset of the pools (`MEMREG_MMAP_POOL(0)`).
pub(crate) const MMAP_POOL_BASE: u64 = 1 << 40;
/// Bits of a pool's mmap offset range (`MEMREG_MMAP_POOL`).
pub(crate) const MMAP_POOL_SHIFT: u32 = 36;

/// `MEMREG_MMAP_POOL(pool)`.
pub(crate) const fn mmap_pool(pool: u32) -> u64 {
    MMAP_POOL_BASE + ((pool as u64) << MMAP_POOL_SHIFT)
}
pub(crate) const QUEUE_NEED_WAKEUP: u32 = uapi::MEMREG_QUEUE_NEED_WAKEUP;
pub(crate) const QUEUE_CQ_FULL: u32 = uapi::MEMREG_QUEUE_CQ_FULL;
pub(crate) const MAX_IDLE_MS: u64 = uapi::MEMREG_MAX_IDLE_MS as u64;
pub(crate) const COPY_TO_REGION: u32 = uapi::MEMREG_COPY_TO_REGION;
pub(crate) const COPY_FROM_REGION: u32 = uapi::MEMREG_COPY_FROM_REGION;

/// Causes of invalidation, indexes into the statistics' `invalidations`.
pub(crate) const INVAL_UNMAP: usize = uapi::memreg_inval_cause_MEMREG_INVAL_UNMAP as usize;
pub(crate) const INVAL_CLEAR: usize = uapi::memreg_inval_cause_MEMREG_INVAL_CLEAR as usize;
pub(crate) const INVAL_PROTECTION_VMA: usize =
    uapi::memreg_inval_cause_MEMREG_INVAL_PROTECTION_VMA as usize;
pub(crate) const INVAL_RELEASE: usize = uapi::memreg_inval_cause_MEMREG_INVAL_RELEASE as usize;
pub(crate) const INVAL_MIGRATE: usize = uapi::memreg_inval_cause_MEMREG_INVAL_MIGRATE as usize;
pub(crate) const INVAL_EXCLUSIVE: usize = uapi::memreg_inval_cause_MEMREG_INVAL_EXCLUSIVE as usize;
pub(crate) const INVAL_OTHER: usize = uapi::memreg_inval_cause_MEMREG_INVAL_OTHER as usize;
pub(crate) const INVAL_NR_CAUSES: usize = uapi::memreg_inval_cause_MEMREG_INVAL_NR_CAUSES as usize;

/// Reasons of eviction, indexes into the statistics' `evictions`.
pub(crate) const EVICT_IDLE: usize = uapi::memreg_evict_reason_MEMREG_EVICT_IDLE as usize;
pub(crate) const EVICT_PIN_LIMIT: usize = uapi::memreg_evict_reason_MEMREG_EVICT_PIN_LIMIT as usize;
pub(crate) const EVICT_PARK_LIMIT: usize =
    uapi::memreg_evict_reason_MEMREG_EVICT_PARK_LIMIT as usize;
pub(crate) const EVICT_SHRINKER: usize = uapi::memreg_evict_reason_MEMREG_EVICT_SHRINKER as usize;
pub(crate) const EVICT_FLUSH: usize = uapi::memreg_evict_reason_MEMREG_EVICT_FLUSH as usize;
pub(crate) const EVICT_NR_REASONS: usize =
    uapi::memreg_evict_reason_MEMREG_EVICT_NR_REASONS as usize;

pub(crate) type Register = uapi::memreg_register;
pub(crate) type Deregister = uapi::memreg_deregister;
pub(crate) type Query = uapi::memreg_query;
pub(crate) type Stats = uapi::memreg_stats;
pub(crate) type GlobalStats = uapi::memreg_global_stats;
pub(crate) type Copy = uapi::memreg_copy;
pub(crate) type CacheConfig = uapi::memreg_cache_config;
pub(crate) type Flush = uapi::memreg_flush;
pub(crate) type Event = uapi::memreg_event;
pub(crate) type EventsSetup = uapi::memreg_events_setup;
pub(crate) type ResyncEntry = uapi::memreg_resync_entry;
pub(crate) type EventsResync = uapi::memreg_events_resync;
pub(crate) type Sqe = uapi::memreg_sqe;
pub(crate) type SqSlot = uapi::memreg_sq_slot;
pub(crate) type Cqe = uapi::memreg_cqe;
pub(crate) type QueueCreate = uapi::memreg_queue_create;
pub(crate) type Doorbell = uapi::memreg_doorbell;
pub(crate) type QueueStats = uapi::memreg_queue_stats;
pub(crate) type PeerAttach = uapi::memreg_peer_attach;
pub(crate) type PeerDetach = uapi::memreg_peer_detach;
pub(crate) type QueueConnect = uapi::memreg_queue_connect;
pub(crate) type PoolClass = uapi::memreg_pool_class;
pub(crate) type PoolCreate = uapi::memreg_pool_create;
pub(crate) type PoolBuf = uapi::memreg_pool_buf;
pub(crate) type PoolAlloc = uapi::memreg_pool_alloc;
pub(crate) type PoolFree = uapi::memreg_pool_free;
pub(crate) type PoolStats = uapi::memreg_pool_stats;
pub(crate) type PoolInfo = uapi::memreg_pool_info;
pub(crate) type PoolDestroy = uapi::memreg_pool_destroy;

pub(crate) const IOC_GET_VERSION: u32 = _IOR::<u32>(MAGIC, 0x00);
pub(crate) const IOC_REGISTER: u32 = _IOWR::<Register>(MAGIC, 0x01);
pub(crate) const IOC_DEREGISTER: u32 = _IOW::<Deregister>(MAGIC, 0x02);
pub(crate) const IOC_QUERY: u32 = _IOWR::<Query>(MAGIC, 0x03);
pub(crate) const IOC_STATS: u32 = _IOR::<Stats>(MAGIC, 0x04);
pub(crate) const IOC_COPY: u32 = _IOW::<Copy>(MAGIC, 0x05);
pub(crate) const IOC_GLOBAL_STATS: u32 = _IOR::<GlobalStats>(MAGIC, 0x06);
pub(crate) const IOC_GET_CACHE: u32 = _IOR::<CacheConfig>(MAGIC, 0x07);
pub(crate) const IOC_SET_CACHE: u32 = _IOW::<CacheConfig>(MAGIC, 0x08);
pub(crate) const IOC_FLUSH: u32 = _IOWR::<Flush>(MAGIC, 0x09);
pub(crate) const IOC_EVENTS_SETUP: u32 = _IOWR::<EventsSetup>(MAGIC, 0x0a);
pub(crate) const IOC_EVENTS_RESYNC: u32 = _IOWR::<EventsResync>(MAGIC, 0x0b);
pub(crate) const IOC_QUEUE_CREATE: u32 = _IOWR::<QueueCreate>(MAGIC, 0x0c);
pub(crate) const IOC_DOORBELL: u32 = _IOW::<Doorbell>(MAGIC, 0x0d);
pub(crate) const IOC_QUEUE_STATS: u32 = _IOR::<QueueStats>(MAGIC, 0x0e);
pub(crate) const IOC_PEER_ATTACH: u32 = _IOWR::<PeerAttach>(MAGIC, 0x0f);
pub(crate) const IOC_PEER_DETACH: u32 = _IOW::<PeerDetach>(MAGIC, 0x10);
pub(crate) const IOC_PEER_REVOKE: u32 = _IO(MAGIC, 0x11);
pub(crate) const IOC_QUEUE_CONNECT: u32 = _IOW::<QueueConnect>(MAGIC, 0x12);
pub(crate) const IOC_POOL_CREATE: u32 = _IOWR::<PoolCreate>(MAGIC, 0x13);
pub(crate) const IOC_POOL_ALLOC: u32 = _IOWR::<PoolAlloc>(MAGIC, 0x14);
pub(crate) const IOC_POOL_FREE: u32 = _IOW::<PoolFree>(MAGIC, 0x15);
pub(crate) const IOC_POOL_STATS: u32 = _IOWR::<PoolInfo>(MAGIC, 0x16);
pub(crate) const IOC_POOL_DESTROY: u32 = _IOW::<PoolDestroy>(MAGIC, 0x17);

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

#[kunit_tests(memreg_defs)]
mod tests {
    use super::*;

    /// The ioctl numbers are the ones `<linux/memreg.h>` computes with the
    /// generic `_IOC` encoding: direction in bits 30-31 (1 write, 2 read),
    /// size in 16-29, type in 8-15 and number in 0-7; the sizes are the
    /// header's.
    #[test]
    fn ioctl_numbers_match_the_header() {
        let ioc = |dir: u32, size: u32, nr: u32| (dir << 30) | (size << 16) | (0xB9 << 8) | nr;
        assert_eq!(IOC_GET_VERSION, ioc(2, 4, 0));
        assert_eq!(IOC_REGISTER, ioc(3, 72, 1));
        assert_eq!(IOC_DEREGISTER, ioc(1, 16, 2));
        assert_eq!(IOC_QUERY, ioc(3, 64, 3));
        assert_eq!(IOC_STATS, ioc(2, 248, 4));
        assert_eq!(IOC_COPY, ioc(1, 48, 5));
        assert_eq!(IOC_GLOBAL_STATS, ioc(2, 64, 6));
        assert_eq!(IOC_GET_CACHE, ioc(2, 64, 7));
        assert_eq!(IOC_SET_CACHE, ioc(1, 64, 8));
        assert_eq!(IOC_FLUSH, ioc(3, 32, 9));
        assert_eq!(IOC_EVENTS_SETUP, ioc(3, 32, 10));
        assert_eq!(IOC_EVENTS_RESYNC, ioc(3, 24, 11));
        assert_eq!(IOC_PEER_ATTACH, ioc(3, 24, 15));
        assert_eq!(IOC_PEER_DETACH, ioc(1, 8, 16));
        assert_eq!(IOC_PEER_REVOKE, ioc(0, 0, 17));
        assert_eq!(IOC_QUEUE_CONNECT, ioc(1, 32, 18));
        assert_eq!(core::mem::size_of::<Cqe>(), 32);
        assert_eq!(core::mem::size_of::<Sqe>(), 56);
        assert_eq!(IOC_POOL_CREATE, ioc(3, 56, 0x13));
        assert_eq!(IOC_POOL_ALLOC, ioc(3, 48, 0x14));
        assert_eq!(IOC_POOL_FREE, ioc(1, 32, 0x15));
        assert_eq!(IOC_POOL_STATS, ioc(3, 32, 0x16));
        assert_eq!(IOC_POOL_DESTROY, ioc(1, 8, 0x17));
        assert_eq!(core::mem::size_of::<PoolClass>(), 32);
        assert_eq!(core::mem::size_of::<PoolBuf>(), 32);
        assert_eq!(mmap_pool(1), (1 << 40) + (1 << 36));
        assert_eq!(core::mem::size_of::<Event>(), 32);
        assert_eq!(
            core::mem::size_of::<uapi::memreg_event_ring>(),
            EVENTS_OFFSET
        );
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
        first[0] = OP_COPY;
        let words = [u64::from_ne_bytes(first), 7, 1, 2, 3, 4, 5];
        let sqe = sqe_from_words(&words);
        assert_eq!(sqe.opcode, OP_COPY);
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
