// SPDX-License-Identifier: GPL-2.0

//! Buffer pools: partitions of kernel pages mapped below a moving boundary.
//!
//! A pool is a set of size classes. Each class is a partition: one range of
//! the pool's mapping, `max_buffers` buffers of one size, reserved in full
//! when the process maps the pool. Below the partition's boundary the
//! buffers are the kernel's own pages, mapped into the process and
//! published as registrations; above it nothing is mapped. The boundary
//! moves in chunks (at least 64 KiB, whole buffers and whole pages), each
//! chunk one registration owned by the pool, whose key the buffers in it
//! carry.
//!
//! A bitmap per partition says which buffers are allocated. ALLOC takes the
//! lowest free buffer below the partition's allocation limit (the boundary,
//! or one chunk less while that chunk is being given back), FREE gives it
//! back by address. When the free buffers fall to the low watermark the
//! pool's work maps another chunk (grow); when more than the high watermark
//! stay free for `shrink_ms`, or the module's shrinker asks, the work gives
//! the last chunk back (shrink): no buffer is handed out from it any more,
//! the allocated ones in it are waited for and, after the leak timeout,
//! reclaimed: quarantined (never handed out again until their holder FREEs
//! them) and, with the chunk, unmapped from the process and their key
//! ended.
//!
//! The mapping is the pool's own (`MappingOwner`): the pool zaps and
//! inserts only into the VMA it created, recognised by its owner, never by
//! address or offset. It stays one piece at one place with its access: a
//! partial `munmap` or `mprotect` and any `mremap` fail (`EINVAL`), an
//! `mprotect` of the whole mapping fails (`EACCES`). The pool watches it
//! with an interval notifier: an unmap (`munmap`, `MAP_FIXED` over it, the
//! address space's end), an `madvise` that clears any of its pages, or a
//! `mremap` refused part way kills the pool, and its work tears it down.
//! The mapping is not inherited by fork.
//!
//! Charges follow the pages. A chunk's pages are charged (`RLIMIT_MEMLOCK`,
//! `pinned_vm`, the module budget) to the pool, not to the chunk's
//! registration: they are released only once the registration has let go
//! of the pages and the pages have left the mapping (zapped, or the mapping
//! gone), so no event a user can cause frees a charge while a page is still
//! mapped. The pages are allocated in the memory cgroup of the process that
//! created the pool.
//!
//! # Lock order
//!
//! `Pool::grow_lock` (mutex: one growth or shrink at a time, across
//! `mmap_lock` and the context's table lock) comes first, then the address
//! space's `mmap_lock`, then `ContextShared::table`; `Pool::state`
//! (spinlock) is a leaf, never held across anything that sleeps or takes
//! another lock.

use crate::{
    accounting::Charges,
    context::{job, table::Nodes, ContextShared},
    key::KeyPair,
    parked,
    registration::{Parts, Registration, RegistrationInfo},
    stats::{GLOBAL_POOLS, GLOBAL_POOL_PAGES, GLOBAL_POOL_RECLAIMABLE},
    uapi,
};
use kernel::{
    impl_has_delayed_work, impl_has_work,
    mm::{
        memcg::MemCgroup,
        mmu_notifier::{
            impl_has_interval_notifier, Event, IntervalNotifier, IntervalNotifierOps, Range,
            Subscription,
        },
        owned_mapping::MappingOwner,
        pin::PinnedPages,
        shared_pages::SharedPages,
        virt::VmaNew,
        MmWithUser,
    },
    new_condvar, new_delayed_work, new_mutex, new_spinlock, new_work,
    page::{Page, PAGE_SIZE},
    prelude::*,
    random::{get_random_u32, get_random_u64},
    rbtree::RBTreeNodeReservation,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        Arc, CondVar, CondVarTimeoutResult, Mutex, SpinLock,
    },
    task::resched::cond_resched,
    time::{delay::fsleep, jiffies, msecs_to_jiffies, Delta, Jiffies},
    workqueue::{
        cancel::{cancel_delayed_sync, cancel_sync},
        dfl, DelayedWork, Work, WorkItem,
    },
};

/// Bytes of memory a chunk holds at least.
const MIN_CHUNK_BYTES: usize = 64 * 1024;

/// How long a teardown waits at most for a mapping someone else is taking
/// away to be gone.
const UNMAP_WAIT_MS: u32 = 5000;

/// How often it looks meanwhile.
const UNMAP_WAIT_STEP_MS: u32 = 5;

/// The longest the pool's timer waits before its work looks again at what
/// is pending (a shrink due, a leak timeout).
const MAX_TIMER_MS: u32 = 100;

/// One size class's fixed parameters.
pub(crate) struct Class {
    /// Bytes per buffer, a power of two.
    pub(crate) buffer_size: usize,
    /// Buffers in the partition.
    pub(crate) max_buffers: usize,
    /// Grow at this many free buffers or fewer.
    pub(crate) low: usize,
    /// Shrink when more stay free (0: never by use).
    pub(crate) high: usize,
    /// Buffers mapped at first.
    pub(crate) initial: usize,
    /// Buffers per chunk.
    pub(crate) chunk_buffers: usize,
    /// The partition's offset in the mapping.
    pub(crate) offset: usize,
}

impl Class {
    /// Bytes per chunk.
    fn chunk_bytes(&self) -> usize {
        self.chunk_buffers * self.buffer_size
    }

    /// The class described by `c` at `offset` of the mapping, validated
    /// against the previous class's buffer size `prev` (`EINVAL`).
    fn from_abi(c: &uapi::PoolClass, offset: usize, prev: usize) -> Result<Self> {
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
    fn bytes(&self) -> usize {
        self.max_buffers * self.buffer_size
    }
}

/// A partition's counters (`struct memreg_pool_stats`).
#[derive(Default, Clone, Copy)]
pub(crate) struct PartStats {
    pub(crate) grows: u64,
    pub(crate) shrinks: u64,
    pub(crate) waits: u64,
    pub(crate) timeouts: u64,
    pub(crate) fallbacks: u64,
    pub(crate) leaks_reclaimed: u64,
}

/// One mapped chunk: its registration, and the charges of its pages, which
/// stay with the pool until the pages have left the mapping.
struct Chunk {
    registration: Arc<Registration>,
    charges: Charges,
}

impl Chunk {
    /// Whether its buffers may be handed out: not ended, nor suspended
    /// while a "clear" is looked at.
    fn is_usable(&self) -> bool {
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
struct PartState {
    /// One bit per buffer: allocated (or quarantined).
    bitmap: KVVec<u64>,
    /// One bit per buffer: reclaimed as a leak, not yet freed by its holder.
    quarantine: KVVec<u64>,
    /// Buffers below the boundary (mapped).
    boundary: usize,
    /// Buffers ALLOC may hand out: the boundary, or a chunk less while that
    /// chunk is being given back.
    limit: usize,
    /// Free buffers below `limit`.
    free: usize,
    /// Allocated buffers (not counting the quarantined).
    allocated: usize,
    /// Quarantined buffers.
    quarantined: usize,
    /// Each mapped chunk, by chunk index.
    chunks: KVVec<Option<Chunk>>,
    /// Since when more than the high watermark were free (jiffies).
    above_high_since: Option<Jiffies>,
    /// Since when the chunk above `limit` waits for its buffers (jiffies).
    shrink_since: Option<Jiffies>,
    /// The last growth failed for a limit: grow only after a shrink or FREE.
    grow_failed: bool,
    /// Where the search for a free buffer starts (a word index).
    hint: usize,
    stats: PartStats,
}

/// `a / b`, and 0 when `b` is 0 (never the case here: no panic path).
fn div(a: usize, b: usize) -> usize {
    a.checked_div(b).unwrap_or(0)
}

/// `a % b`, and 0 when `b` is 0 (never the case here: no panic path).
fn rem(a: usize, b: usize) -> usize {
    a.checked_rem(b).unwrap_or(0)
}

/// Whether bit `i` of `bits` is set.
fn test_bit(bits: &[u64], i: usize) -> bool {
    bits.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// Sets bit `i` of `bits` to `on`.
fn set_bit(bits: &mut [u64], i: usize, on: bool) {
    if let Some(w) = bits.get_mut(i / 64) {
        if on {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }
}

/// Bits set among `first..end` of `bits`.
fn count_bits(bits: &[u64], first: usize, end: usize) -> usize {
    (first..end).filter(|&i| test_bit(bits, i)).count()
}

impl PartState {
    fn new(class: &Class) -> Result<Self> {
        let words = class.max_buffers.div_ceil(64);
        let chunks = div(class.max_buffers, class.chunk_buffers);
        let mut chunk_slots = KVVec::with_capacity(chunks, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..chunks {
            chunk_slots.push(None, GFP_KERNEL_ACCOUNT)?;
        }
        Ok(Self {
            bitmap: KVVec::from_elem(0u64, words, GFP_KERNEL_ACCOUNT)?,
            quarantine: KVVec::from_elem(0u64, words, GFP_KERNEL_ACCOUNT)?,
            boundary: 0,
            limit: 0,
            free: 0,
            allocated: 0,
            quarantined: 0,
            chunks: chunk_slots,
            above_high_since: None,
            shrink_since: None,
            grow_failed: false,
            hint: 0,
            stats: PartStats::default(),
        })
    }

    /// Takes the lowest free buffer below the limit whose chunk is live.
    fn take(&mut self, class: &Class) -> Option<usize> {
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
                if !self
                    .chunks
                    .get(chunk)
                    .and_then(Option::as_ref)
                    .is_some_and(Chunk::is_usable)
                {
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

    /// Whether the partition should grow: few free, and a chunk being given
    /// back (which is kept instead) or room left and no limit hit.
    fn wants_growth(&self, class: &Class) -> bool {
        self.free <= class.low
            && (self.limit < self.boundary
                || (self.boundary < class.max_buffers && !self.grow_failed))
    }

    /// Keeps the chunk being given back, if any: its free buffers are handed
    /// out again. Returns whether there was one.
    fn cancel_shrink(&mut self, class: &Class) -> bool {
        if self.limit >= self.boundary {
            return false;
        }
        let free =
            class
                .chunk_buffers
                .saturating_sub(count_bits(&self.bitmap, self.limit, self.boundary));
        self.free = self.free.saturating_add(free);
        self.limit = self.boundary;
        self.shrink_since = None;
        true
    }
}

/// A pool's changing state.
struct PoolState {
    /// The partitions, by class.
    parts: KVec<PartState>,
    /// Where the pool is mapped, once it is.
    mapped_at: Option<usize>,
    /// The range the pool's work is zapping now: the "clear" it causes
    /// there is its own, not user space's.
    zapping: Option<(usize, usize)>,
    /// The mapping went (or the pool was destroyed): nothing more is handed
    /// out or grown, and the work tears it down.
    dead: bool,
    /// Memory pressure asked for free chunks back.
    pressure: bool,
}

/// A buffer handed out, as user space gets it: address, key, offset in the
/// key's registration, size and class.
pub(crate) type Buffer = uapi::PoolBuf;

/// One pool.
#[pin_data(PinnedDrop)]
pub(crate) struct Pool {
    /// Its index in the context.
    pub(crate) index: u32,
    /// The size classes.
    classes: KVec<Class>,
    /// Access rights of the chunks' registrations.
    access: u32,
    /// How long a shrink waits for an allocated buffer.
    leak_timeout_ms: u32,
    /// How long a partition stays above its high watermark before it shrinks.
    shrink_ms: u32,
    /// Bytes of the mapping.
    pub(crate) map_bytes: usize,
    /// The context, for its table and address space.
    ctx: Arc<ContextShared>,
    /// What the chunks are charged to (the creator's user and address
    /// space); each chunk gets charges like it.
    charges: Charges,
    /// The creator's memory cgroup, which the chunks' pages are charged to.
    memcg: MemCgroup,
    /// Owns the mapping: the pool acts on no other VMA.
    owner: Arc<MappingOwner>,
    #[pin]
    state: SpinLock<PoolState>,
    /// Woken by growth, FREE and the pool's death.
    #[pin]
    changed: CondVar,
    /// One growth or shrink at a time.
    #[pin]
    grow_lock: Mutex<()>,
    /// Watches the whole mapping.
    #[pin]
    notifier: IntervalNotifier<Pool>,
    /// The notifier's subscription, once mapped.
    #[pin]
    subscription: Mutex<Option<Subscription<Pool>>>,
    /// Grows, shrinks and tears down.
    #[pin]
    work: Work<Pool>,
    /// Looks again at shrinks when their time comes.
    #[pin]
    timer: DelayedWork<Pool, 1>,
    /// Pages of free chunks, for the shrinker.
    pub(crate) reclaimable: Atomic<u64>,
    /// The memory of its entry in the shrinker's list of pools, until it is
    /// put there.
    #[pin]
    registry_node: SpinLock<Option<RBTreeNodeReservation<usize, Arc<Pool>>>>,
}

#[pinned_drop]
impl PinnedDrop for Pool {
    fn drop(self: Pin<&mut Self>) {
        GLOBAL_POOLS.fetch_sub(1, Relaxed);
    }
}

impl_has_interval_notifier! { impl HasIntervalNotifier<Self> for Pool { self.notifier } }
impl_has_work! { impl HasWork<Self> for Pool { self.work } }
impl_has_delayed_work! { impl HasDelayedWork<Self, 1> for Pool { self.timer } }

impl WorkItem for Pool {
    type Pointer = Arc<Pool>;

    fn run(this: Arc<Pool>) {
        Pool::run(&this);
    }
}

impl WorkItem<1> for Pool {
    type Pointer = Arc<Pool>;

    fn run(this: Arc<Pool>) {
        Pool::queue(&this);
    }
}

impl IntervalNotifierOps for Pool {
    /// An unmap of the mapping (or the address space's end), the move of a
    /// refused `mremap`, and a "clear" the pool did not cause itself
    /// (`madvise`) kill the pool, and the context's deferred work destroys
    /// it: every page leaves the mapping and its charges go. The chunks' own
    /// notifiers end their keys meanwhile. (The kernel's clear of a whole
    /// 2 MiB block around a split lies in the mapping being split, never in
    /// a pool's, which cannot split.) Write protection and soft-dirty
    /// tracking leave the pages in place. Neither allocates nor sleeps.
    fn invalidate(this: &Self, range: &Range<'_>, _cur_seq: u64) -> bool {
        let kills = match range.event() {
            Event::ProtectionPage | Event::SoftDirty => false,
            Event::Clear => {
                // Its own zap is of a range it chose; anything else is user space's.
                !this
                    .state
                    .lock()
                    .zapping
                    .is_some_and(|(start, end)| range.start() >= start && range.end() <= end)
            }
            _ => true,
        };
        if kills {
            this.state.lock().dead = true;
            this.changed.notify_all();
            ContextShared::defer(&this.ctx, job::REAP_POOLS);
        }
        true
    }
}

impl Pool {
    /// Creates pool `index` from `req` and the classes `classes` (validated:
    /// `EINVAL`). Nothing is mapped or charged yet.
    pub(crate) fn new(
        ctx: Arc<ContextShared>,
        index: u32,
        req: &uapi::PoolCreate,
        classes: &mut [uapi::PoolClass],
    ) -> Result<Arc<Self>> {
        let access = req.access;
        if access & !uapi::ACCESS_ALL != 0 || access & uapi::ACCESS_LOCAL_WRITE == 0 {
            return Err(EINVAL);
        }
        if req.leak_timeout_ms == 0
            || req.leak_timeout_ms > uapi::POOL_MAX_TIMEOUT_MS
            || req.shrink_ms > uapi::POOL_MAX_TIMEOUT_MS
        {
            return Err(EINVAL);
        }
        let mut parsed = KVec::with_capacity(classes.len(), GFP_KERNEL_ACCOUNT)?;
        let mut parts = KVec::with_capacity(classes.len(), GFP_KERNEL_ACCOUNT)?;
        let mut offset = 0usize;
        let mut prev = 0usize;
        for c in classes.iter_mut() {
            let class = Class::from_abi(c, offset, prev)?;
            prev = class.buffer_size;
            c.chunk_buffers = class.chunk_buffers as u32;
            c.offset = offset as u64;
            offset = offset
                .checked_add(class.bytes().next_multiple_of(PAGE_SIZE))
                .ok_or(EINVAL)?;
            parts.push(PartState::new(&class)?, GFP_KERNEL_ACCOUNT)?;
            parsed.push(class, GFP_KERNEL_ACCOUNT)?;
        }
        if offset == 0 || offset as u64 > (1u64 << 36) {
            return Err(EINVAL);
        }
        let pool = Arc::pin_init(
            try_pin_init!(Self {
                index,
                classes: parsed,
                access,
                leak_timeout_ms: req.leak_timeout_ms,
                shrink_ms: req.shrink_ms,
                map_bytes: offset,
                ctx,
                charges: Charges::for_current()?,
                memcg: MemCgroup::of_current(),
                owner: MappingOwner::new()?,
                state <- new_spinlock!(
                    PoolState {
                        parts,
                        mapped_at: None,
                        zapping: None,
                        dead: false,
                        pressure: false,
                    },
                    "memreg::Pool::state"
                ),
                changed <- new_condvar!("memreg::Pool::changed"),
                grow_lock <- new_mutex!((), "memreg::Pool::grow_lock"),
                notifier <- IntervalNotifier::new(),
                subscription <- new_mutex!(None, "memreg::Pool::subscription"),
                work <- new_work!("memreg::Pool::work"),
                timer <- new_delayed_work!("memreg::Pool::timer"),
                reclaimable: Atomic::new(0),
                registry_node <- new_spinlock!(
                    Some(RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?),
                    "memreg::Pool::registry_node"
                ),
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        GLOBAL_POOLS.add(1, Relaxed);
        Ok(pool)
    }

    /// Whether the pool's mapping went or it was destroyed.
    pub(crate) fn is_dead(&self) -> bool {
        self.state.lock().dead
    }

    /// The number of classes.
    pub(crate) fn nr_classes(&self) -> usize {
        self.classes.len()
    }

    /// Maps the pool into `vma` (its `mmap`): `EINVAL` for a wrong length
    /// or a private mapping, `EBUSY` when it was mapped before. The first
    /// buffers are mapped by the pool's work right after. The mapping is the
    /// pool's own from then on: it cannot be split, moved or given other
    /// access, the slow `get_user_pages` refuses it (`VM_IO`; REGISTER
    /// refuses it explicitly, as `VM_IO` does not stop the fast path), and it
    /// is not inherited by fork.
    pub(crate) fn mmap(this: &Arc<Self>, vma: &VmaNew) -> Result {
        if vma.end() - vma.start() != this.map_bytes {
            return Err(EINVAL);
        }
        SharedPages::check_mapping(vma, true)?;
        {
            let st = this.state.lock();
            if st.mapped_at.is_some() || st.dead {
                return Err(EBUSY);
            }
        }
        vma.try_clear_mayexec()?;
        let subscription =
            IntervalNotifier::insert_locked(this.clone(), vma, vma.start(), this.map_bytes)?;
        // Nothing fails from here on: the kernel does not close a VMA whose `mmap` failed, so
        // the owner is attached last.
        this.owner.attach(vma)?;
        vma.set_io();
        vma.set_dontcopy();
        vma.set_dontexpand();
        vma.set_dontdump();
        vma.set_mixedmap();
        *this.subscription.lock() = Some(subscription);
        this.state.lock().mapped_at = Some(vma.start());
        Self::queue(this);
        Ok(())
    }

    /// Queues the pool's work. Neither allocates nor sleeps.
    pub(crate) fn queue(this: &Arc<Self>) {
        let _ = dfl::system_dfl().enqueue::<_, 0>(this.clone());
    }

    /// The class whose buffers fit `size`, if any.
    fn class_for(&self, size: u64) -> Option<usize> {
        self.classes
            .iter()
            .position(|c| c.buffer_size as u64 >= size)
    }

    /// Hands out up to `out.len()` buffers of at least `size` bytes; returns
    /// how many (at least one), waiting up to `timeout_ms` when none is
    /// free. See `struct memreg_pool_alloc` for the errors.
    pub(crate) fn alloc(
        this: &Arc<Self>,
        size: u64,
        fallback: bool,
        timeout_ms: u32,
        out: &mut [Buffer],
    ) -> Result<usize> {
        if size == 0 || out.is_empty() {
            return Err(EINVAL);
        }
        let first = this.class_for(size).ok_or(EINVAL)?;
        let last = if fallback {
            this.classes.len()
        } else {
            first + 1
        };
        let mut left = msecs_to_jiffies(timeout_ms);
        let mut waited = false;
        let mut st = this.state.lock();
        loop {
            let base = match (st.dead, st.mapped_at) {
                (false, Some(base)) => base,
                _ => return Err(ENXIO),
            };
            let mut n = 0;
            let mut grow = false;
            for c in first..last {
                let (Some(class), Some(part)) = (this.classes.get(c), st.parts.get_mut(c)) else {
                    break;
                };
                while n < out.len() {
                    let Some(i) = part.take(class) else {
                        break;
                    };
                    let chunk = div(i, class.chunk_buffers);
                    let key = part
                        .chunks
                        .get(chunk)
                        .and_then(Option::as_ref)
                        .map_or(0, |k| k.registration.lkey());
                    if let Some(b) = out.get_mut(n) {
                        b.addr = (base + class.offset + i * class.buffer_size) as u64;
                        b.key = key;
                        b.offset = (rem(i, class.chunk_buffers) * class.buffer_size) as u64;
                        b.class = c as u32;
                        b.size = class.buffer_size as u32;
                    }
                    n += 1;
                    if c != first {
                        part.stats.fallbacks += 1;
                    }
                }
                grow |= part.wants_growth(class);
                // A growing class is waited for rather than fallen back from.
                if n > 0 || (c == first && part.wants_growth(class)) {
                    break;
                }
            }
            if grow {
                Self::queue(this);
            }
            if n > 0 {
                if waited {
                    // Counted once per ALLOC that had to wait.
                    if let Some(p) = st.parts.get_mut(first) {
                        p.stats.waits += 1;
                    }
                }
                return Ok(n);
            }
            if left == 0 {
                if waited {
                    if let Some(p) = st.parts.get_mut(first) {
                        p.stats.waits += 1;
                        p.stats.timeouts += 1;
                    }
                    return Err(ETIMEDOUT);
                }
                return Err(EAGAIN);
            }
            waited = true;
            match this.changed.wait_interruptible_timeout(&mut st, left) {
                CondVarTimeoutResult::Signal { .. } => return Err(EINTR),
                CondVarTimeoutResult::Timeout => left = 0,
                CondVarTimeoutResult::Woken { jiffies } => left = jiffies,
            }
        }
    }

    /// Gives back the buffers at `addrs`, all or none: `EINVAL` when one is
    /// not an allocated buffer of the pool or appears twice. `ESTALE` when
    /// one had been reclaimed as a leak (all are freed).
    pub(crate) fn free(this: &Arc<Self>, addrs: &[u64]) -> Result {
        // Where each address is, `class << 16 | buffer`, on the stack (at most a batch).
        let mut slots = [0u32; uapi::POOL_MAX_BATCH as usize];
        let found = slots.get_mut(..addrs.len()).ok_or(EINVAL)?;
        let mut st = this.state.lock();
        let base = st.mapped_at.ok_or(EINVAL)? as u64;
        for (k, &addr) in addrs.iter().enumerate() {
            let rel = addr.checked_sub(base).ok_or(EINVAL)? as usize;
            let (c, class) = this
                .classes
                .iter()
                .enumerate()
                .find(|(_, c)| rel >= c.offset && rel < c.offset + c.bytes())
                .ok_or(EINVAL)?;
            let within = rel - class.offset;
            if rem(within, class.buffer_size) != 0 {
                return Err(EINVAL);
            }
            let i = div(within, class.buffer_size);
            let part = st.parts.get(c).ok_or(EINVAL)?;
            // Classes are fewer than 256 and buffers than 65536 per class.
            let packed = ((c as u32) << 16) | i as u32;
            let seen = found.get(..k).ok_or(EINVAL)?;
            if !test_bit(&part.bitmap, i) || seen.contains(&packed) {
                return Err(EINVAL);
            }
            if let Some(slot) = found.get_mut(k) {
                *slot = packed;
            }
        }
        let mut stale = false;
        let mut shrink_check = false;
        let mut finish_check = false;
        for &packed in found.iter() {
            let (c, i) = ((packed >> 16) as usize, (packed & 0xffff) as usize);
            let (Some(class), Some(part)) = (this.classes.get(c), st.parts.get_mut(c)) else {
                continue;
            };
            set_bit(&mut part.bitmap, i, false);
            if test_bit(&part.quarantine, i) {
                set_bit(&mut part.quarantine, i, false);
                part.quarantined = part.quarantined.saturating_sub(1);
                stale = true;
            } else {
                part.allocated = part.allocated.saturating_sub(1);
            }
            if i < part.limit {
                part.free = part.free.saturating_add(1);
                part.hint = part.hint.min(i / 64);
            }
            part.grow_failed = false;
            if class.high != 0 && part.free > class.high && part.above_high_since.is_none() {
                part.above_high_since = Some(jiffies::now());
                shrink_check = true;
            }
            // A chunk waiting for its buffers may be done now.
            if i >= part.limit && i < part.boundary {
                finish_check = true;
            }
        }
        this.set_reclaimable(this.reclaimable_of(&st));
        drop(st);
        this.changed.notify_all();
        if finish_check {
            Self::queue(this);
        } else if shrink_check {
            Self::arm(this, this.shrink_ms);
        }
        if stale {
            Err(ESTALE)
        } else {
            Ok(())
        }
    }

    /// Runs the work again in `ms` milliseconds, or sooner: at most
    /// [`MAX_TIMER_MS`] from now (a timer armed already is not moved earlier,
    /// so one never waits for longer than that to look again).
    fn arm(this: &Arc<Self>, ms: u32) {
        let ms = ms.min(MAX_TIMER_MS);
        let _ = dfl::system_dfl().enqueue_delayed::<_, 1>(this.clone(), msecs_to_jiffies(ms));
    }

    /// The counters of class `c`, in the ABI's layout.
    pub(crate) fn stats(&self, c: usize) -> Option<uapi::PoolStats> {
        let st = self.state.lock();
        let part = st.parts.get(c)?;
        let mut out: uapi::PoolStats = uapi::zeroed();
        out.boundary = part.boundary as u64;
        out.allocated = part.allocated as u64;
        out.free = part.free as u64;
        out.grows = part.stats.grows;
        out.shrinks = part.stats.shrinks;
        out.waits = part.stats.waits;
        out.timeouts = part.stats.timeouts;
        out.fallbacks = part.stats.fallbacks;
        out.leaks_reclaimed = part.stats.leaks_reclaimed;
        out.quarantined = part.quarantined as u64;
        Some(out)
    }

    /// Asks for free chunks back (memory pressure).
    ///
    /// TODO(pool-shrinker-async): the shrinker only asks; the work gives the
    /// chunks back later, as it needs `mmap_lock`.
    pub(crate) fn press(this: &Arc<Self>) {
        this.state.lock().pressure = true;
        Self::queue(this);
    }

    /// The work: tears the pool down once dead; otherwise grows the
    /// partitions that want it and gives chunks back where they are due.
    fn run(this: &Arc<Self>) {
        let _serial = this.grow_lock.lock();
        if this.state.lock().dead {
            Self::teardown(this);
            return;
        }
        let mut again: Option<u32> = None;
        for c in 0..this.classes.len() {
            let Some(class) = this.classes.get(c) else {
                break;
            };
            // Up to the initial size, then to above the low watermark.
            loop {
                let want = {
                    let mut st = this.state.lock();
                    let dead = st.dead;
                    let Some(part) = st.parts.get_mut(c) else {
                        break;
                    };
                    // A chunk on its way out is kept rather than a new one mapped.
                    if part.wants_growth(class) && part.cancel_shrink(class) {
                        continue;
                    }
                    !dead
                        && part.boundary < class.max_buffers
                        && (part.boundary < class.initial || part.wants_growth(class))
                };
                if !want {
                    break;
                }
                if let Err(e) = Self::grow(this, c) {
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
                    break;
                }
                this.changed.notify_all();
                cond_resched();
            }
            if let Some(ms) = Self::shrink_step(this, c) {
                again = Some(again.map_or(ms, |a| a.min(ms)));
            }
        }
        this.state.lock().pressure = false;
        this.update_reclaimable();
        if let Some(ms) = again {
            Self::arm(this, ms.max(1));
        }
    }

    /// Counts the pages of fully free chunks, for the shrinker.
    fn update_reclaimable(&self) {
        let st = self.state.lock();
        self.set_reclaimable(self.reclaimable_of(&st));
    }

    /// Sets the pages memory pressure may take back, in the module-wide sum
    /// too. Never sleeps.
    fn set_reclaimable(&self, pages: u64) {
        let old = self.reclaimable.xchg(pages, Relaxed);
        // Wrapping: the sum is of the values each pool set last.
        GLOBAL_POOL_RECLAIMABLE.add(pages.wrapping_sub(old), Relaxed);
    }

    /// The pages the free buffers beyond each class's low watermark make up,
    /// in whole chunks: what memory pressure may take back.
    fn reclaimable_of(&self, st: &PoolState) -> u64 {
        let mut pages = 0u64;
        for (class, part) in self.classes.iter().zip(st.parts.iter()) {
            let spare = div(part.free.saturating_sub(class.low), class.chunk_buffers);
            pages = pages.saturating_add((spare * class.chunk_bytes() / PAGE_SIZE) as u64);
        }
        pages
    }

    /// Maps one more chunk of class `c`: allocates and charges its pages,
    /// publishes its registration and inserts the pages into the mapping,
    /// then moves the boundary up. Work only, under `grow_lock`.
    fn grow(this: &Arc<Self>, c: usize) -> Result {
        let ctx = &this.ctx;
        let class = this.classes.get(c).ok_or(EINVAL)?;
        let (boundary, base) = {
            let st = this.state.lock();
            let part = st.parts.get(c).ok_or(EINVAL)?;
            (part.boundary, st.mapped_at.ok_or(ENXIO)?)
        };
        let addr = base + class.offset + boundary * class.buffer_size;
        let bytes = class.chunk_bytes();
        let npages = bytes.div_ceil(PAGE_SIZE);
        let mm: ARef<MmWithUser> = ctx.mm.mmget_not_zero().ok_or(ENXIO)?;
        // The pages' charges: the pool keeps them until the pages have left the mapping. Past a
        // limit, parked registrations make room first.
        let mut charges = this.charges.new_like();
        parked::charge(&mut charges, npages)?;
        // The pages and the registration are the creator's, not the worker's.
        let mut pages = this.memcg.with_active(|| -> Result<KVec<Page>> {
            let mut pages = KVec::with_capacity(npages, GFP_KERNEL_ACCOUNT)?;
            for _ in 0..npages {
                pages.push(
                    Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?,
                    GFP_KERNEL_ACCOUNT,
                )?;
            }
            Ok(pages)
        })?;
        let seq = ctx.next_seq.fetch_add(1, Relaxed);
        let keys = KeyPair::new(seq, get_random_u32(), get_random_u64()).ok_or(ENOSPC)?;
        let info = RegistrationInfo {
            addr: addr as u64,
            length: bytes as u64,
            access: this.access,
            npages,
            keys,
            pool: true,
        };
        let (nodes, registration) = this.memcg.with_active(|| -> Result<_> {
            Ok((Nodes::new()?, Registration::new(ctx.clone(), info)?))
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
            for page in pages.iter_mut() {
                mixed.vm_insert_page(addr + inserted * PAGE_SIZE, page)?;
                inserted += 1;
            }
            Ok(())
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
        let parts = Parts {
            pages: PinnedPages::from_pages(pages)?,
            // Nothing: the pool holds the pages' charges.
            charges: this.charges.new_like(),
            subscription,
            nodes,
        };
        let published =
            Registration::publish(&registration, &mut ctx.table.lock(), seq, u64::MAX, parts);
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
        let mut st = this.state.lock();
        let dead = st.dead;
        let Some(slot) = st
            .parts
            .get_mut(c)
            .and_then(|part| part.chunks.get_mut(div(boundary, class.chunk_buffers)))
        else {
            // Never the case (`c` and the boundary were checked): the chunk ends here, its
            // pages leave the mapping, and only then do its charges go.
            drop(st);
            this.end_chunk(chunk);
            return Err(EINVAL);
        };
        // Kept even when the pool died meanwhile: its teardown, which follows, ends it and
        // takes its pages out of the mapping.
        *slot = Some(chunk);
        let Some(part) = st.parts.get_mut(c) else {
            return Err(EINVAL);
        };
        if dead {
            return Err(ENXIO);
        }
        // The new buffers are free unless some were quarantined there before.
        let end = boundary + class.chunk_buffers;
        let taken = count_bits(&part.bitmap, boundary, end);
        if part.limit == part.boundary {
            part.limit = end;
            part.free = part
                .free
                .saturating_add(class.chunk_buffers.saturating_sub(taken));
        }
        part.boundary = end;
        part.stats.grows += 1;
        Ok(())
    }

    /// Ends a chunk: its key dies, the registration lets go of its pages,
    /// the pages leave the mapping (if it is still there) and are freed,
    /// and only then do their charges go. Process context, no lock held.
    fn end_chunk(&self, chunk: Chunk) {
        let registration = &chunk.registration;
        let ended = Registration::unpublish(&mut self.ctx.table.lock(), registration.info.keys.seq);
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
    fn zap(&self, addr: usize, len: usize) {
        let Some(base) = self.state.lock().mapped_at else {
            return;
        };
        if !self.owner.is_mapped() {
            return;
        }
        let Some(mm) = self.ctx.mm.mmget_not_zero() else {
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
    fn wait_unmapped(&self) {
        let mut waited = 0;
        while self.owner.is_mapped() && waited < UNMAP_WAIT_MS {
            fsleep(Delta::from_millis(i64::from(UNMAP_WAIT_STEP_MS)));
            waited += UNMAP_WAIT_STEP_MS;
        }
    }

    /// Moves class `c`'s boundary down by one chunk when due: starts it (the
    /// limit goes down) and finishes it once its buffers are free or their
    /// leak timeout passed. Returns in how many milliseconds to look again.
    fn shrink_step(this: &Arc<Self>, c: usize) -> Option<u32> {
        let class = this.classes.get(c)?;
        let chunk = class.chunk_buffers;
        let (start, finish, retry) = {
            let mut st = this.state.lock();
            let pressure = st.pressure;
            let part = st.parts.get_mut(c)?;
            if part.boundary == 0 {
                return None;
            }
            let first = part.boundary.saturating_sub(chunk);
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
                    chunk.saturating_sub(count_bits(&part.bitmap, first, part.boundary));
                // Never below the initial size.
                let due_by_use = above
                    && part.boundary > class.initial
                    && part
                        .above_high_since
                        .is_some_and(|s| jiffies::elapsed_ms(s) >= u64::from(this.shrink_ms));
                // Under pressure, a fully free chunk beyond the low watermark goes.
                let due_by_pressure = pressure
                    && free_in_last == chunk
                    && part.free >= class.low.saturating_add(chunk)
                    && part.boundary > class.initial;
                if due_by_use || due_by_pressure {
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
                let busy = count_bits(&part.bitmap, first, part.boundary)
                    .saturating_sub(count_bits(&part.quarantine, first, part.boundary));
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
        }
        if finish {
            Self::finish_shrink(this, c);
            // Perhaps another chunk is due.
            return Some(1);
        }
        retry
    }

    /// Gives class `c`'s last chunk back: its allocated buffers are
    /// quarantined as leaks, its registration ends, its pages leave the
    /// mapping and are freed, and the boundary moves down.
    fn finish_shrink(this: &Arc<Self>, c: usize) {
        let Some(class) = this.classes.get(c) else {
            return;
        };
        let chunk = class.chunk_buffers;
        let ending = {
            let mut st = this.state.lock();
            let Some(part) = st.parts.get_mut(c) else {
                return;
            };
            let Some(first) = part.boundary.checked_sub(chunk) else {
                return;
            };
            let mut leaks = 0;
            for i in first..part.boundary {
                if test_bit(&part.bitmap, i) && !test_bit(&part.quarantine, i) {
                    set_bit(&mut part.quarantine, i, true);
                    leaks += 1;
                }
            }
            part.allocated = part.allocated.saturating_sub(leaks);
            part.quarantined = part.quarantined.saturating_add(leaks);
            part.stats.leaks_reclaimed += leaks as u64;
            part.chunks
                .get_mut(div(first, chunk))
                .and_then(Option::take)
                .map(|k| (k, first))
        };
        let Some((ending, first)) = ending else {
            return;
        };
        // The key dies before the pages leave the mapping, and they are freed after; the
        // boundary is seen to move once both are done.
        this.end_chunk(ending);
        let mut st = this.state.lock();
        if let Some(part) = st.parts.get_mut(c) {
            part.boundary = first;
            part.limit = first;
            part.shrink_since = None;
            part.stats.shrinks += 1;
            part.above_high_since = None;
            // Its charges came back: growth may succeed again.
            part.grow_failed = false;
        }
        drop(st);
        this.update_reclaimable();
    }

    /// Marks the pool dead and wakes its waiters; the work then tears it
    /// down.
    pub(crate) fn kill(this: &Arc<Self>) {
        this.state.lock().dead = true;
        this.changed.notify_all();
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

    /// Makes the pool known to the module's shrinker (its creation), in the
    /// memory reserved when it was created. Never sleeps.
    pub(crate) fn register(this: &Arc<Self>) {
        if let Some(node) = this.registry_node.lock().take() {
            parked::add_pool(node, this.clone());
        }
    }

    /// Destroys the pool for good (POOL_DESTROY, the file's release): tears
    /// it down and waits for its work. Process context.
    pub(crate) fn destroy(this: &Arc<Self>) {
        // The shrinker no longer asks it for anything.
        drop(parked::remove_pool(this));
        Self::kill(this);
        cancel_delayed_sync::<_, 1>(this);
        cancel_sync::<_, 0>(this);
        {
            let _serial = this.grow_lock.lock();
            Self::teardown(this);
        }
        // The notifier may have queued the work again.
        cancel_delayed_sync::<_, 1>(this);
        cancel_sync::<_, 0>(this);
    }
}

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_pool)]
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
    fn a_shrinking_chunk_is_kept_when_buffers_run_low() -> Result {
        let c = Class::from_abi(&class(4096, 64, 4, 40, 16), 0, 0)?;
        let mut part = PartState::new(&c)?;
        part.boundary = 32;
        part.limit = 16;
        part.free = 2;
        set_bit(&mut part.bitmap, 20, true);
        assert!(part.wants_growth(&c));
        assert!(part.cancel_shrink(&c));
        assert_eq!((part.limit, part.free), (32, 17));
        assert!(!part.cancel_shrink(&c));
        Ok(())
    }
}
