// SPDX-License-Identifier: GPL-2.0

//! Buffer pools: partitions of kernel pages mapped below a moving boundary.
//!
//! A pool is a set of size classes. Each class is a partition: one range of
//! the pool's mapping, `max_buffers` buffers of one size, reserved in full
//! when the process maps the pool. Below the partition's boundary the
//! buffers are the kernel's own pages, mapped into the process and
//! published as registrations; above it nothing is mapped. The boundary
//! moves in chunks (at least 64 KiB, whole buffers and whole pages); one
//! growth maps an extent of chunks (up to 2 MiB, from pages in contiguous
//! runs when the allocator has them), one registration owned by the pool,
//! whose key the buffers in it carry, and a shrink gives back the last
//! extent whole.
//!
//! A bitmap per partition says which buffers are allocated. ALLOC takes the
//! lowest free buffer below the partition's allocation limit (the boundary,
//! or one extent less while that extent is being given back), FREE gives it
//! back by address. When the free buffers fall to the low watermark the
//! pool's work maps another extent (grow), or the ALLOC that would wait for
//! it does; when more than the high watermark stay free for `shrink_ms`, or
//! the module's shrinker asks, the work gives the last extent back
//! (shrink): no buffer is handed out from it any more, the allocated ones in
//! it are waited for and, after the leak timeout, reclaimed: quarantined
//! (never handed out again until their holder FREEs them) and, with the
//! extent, unmapped from the process and their key ended. With the rings
//! mapped, the free buffers are lent to them (see [`ring`]).
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
//! - [`part`]: the size classes and their partitions (bitmaps, boundaries,
//!   chunks, quarantine);
//! - [`grow`]: the pool's work (growth, shrinks, teardown);
//! - [`pools`]: the pools of a file, their ioctls, and the module-wide list
//!   the shrinker asks for free chunks;
//! - [`ring`]: the free-buffer rings shared with user space, which ALLOC
//!   and FREE without a system call.
//!
//! Locks: `Pool::grow_lock` (level 1 of the crate's order), then the address
//! space's `mmap_lock`, then the cache's lock; `Pool::state` is a leaf.

mod grow;
mod part;
mod pools;
mod ring;

pub(crate) use pools::{press_all, reclaimable_pages, Pools};

use crate::{accounting::Charges, stats::GLOBAL_POOLS, uapi};
use kernel::error::compat::ESTALE;
use kernel::{
    impl_has_delayed_work, impl_has_work,
    mm::{
        memcg::MemCgroup,
        mmu_notifier::{
            impl_has_interval_notifier, Event, IntervalNotifier, IntervalNotifierOps, Range,
            Subscription,
        },
        owned_mapping::MappingOwner,
        shared_pages::SharedPages,
        virt::VmaNew,
    },
    new_condvar, new_delayed_work, new_mutex, new_spinlock, new_work,
    page::PAGE_SIZE,
    prelude::*,
    rbtree::RBTreeNodeReservation,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, CondVar, CondVarTimeoutResult, Mutex, MutexGuard, SpinLock,
    },
    time::{jiffies, msecs_to_jiffies},
    workqueue::{
        cancel::{cancel_delayed_sync, cancel_sync},
        dfl, DelayedWork, Work, WorkItem,
    },
};
use part::{div, rem, set_bit, test_bit, Class, PartState};

/// The longest the pool's timer waits before its work looks again at what
/// is pending (a shrink due, a leak timeout).
const MAX_TIMER_MS: u32 = 100;

/// How long an ALLOC waits at a time, with rings, before it takes them back
/// again (a push onto a ring wakes nobody).
const RING_WAIT_SLICE_MS: u32 = 10;

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
    /// The free-buffer rings, once POOL_RING asked for them.
    rings: Option<Arc<ring::Rings>>,
    /// Whether the rings are mapped: the kernel lends buffers to them.
    rings_mapped: bool,
}

/// A buffer handed out, as user space gets it: address, key, offset in the
/// key's registration, size and class.
pub(crate) type Buffer = uapi::PoolBuf;

/// One pool.
#[pin_data(PinnedDrop)]
pub(crate) struct Pool {
    /// Its index in the file.
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
    /// The file's pools, which reap this one when its mapping goes, and
    /// through them the cache its chunks join.
    pools: Arc<Pools>,
    /// What the chunks are charged to (the creator's user and address
    /// space); each chunk gets charges like it.
    charges: Charges,
    /// The creator's memory cgroup, which the chunks' pages are charged to.
    memcg: MemCgroup,
    /// Owns the mapping: the pool acts on no other VMA.
    owner: Arc<MappingOwner>,
    /// The bitmaps and counters; level 6 of the crate's lock order (a leaf).
    #[pin]
    state: SpinLock<PoolState>,
    /// Woken by growth, FREE and the pool's death.
    #[pin]
    changed: CondVar,
    /// One growth or shrink at a time; level 1 (taken before `mmap_lock`).
    #[pin]
    grow_lock: Mutex<()>,
    /// Watches the whole mapping.
    #[pin]
    notifier: IntervalNotifier<Pool>,
    /// The notifier's subscription, once mapped; level 2 (taken under
    /// `mmap_lock` by `mmap`, holding nothing else).
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
    /// (`madvise`) kill the pool, and the file's pools reap it
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
            Pools::defer_reap(&this.pools);
        }
        true
    }
}

impl Pool {
    /// Creates pool `index` from `req` and the classes `classes` (validated:
    /// `EINVAL`). Nothing is mapped or charged yet.
    pub(crate) fn new(
        pools: Arc<Pools>,
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
                pools,
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
                        rings: None,
                        rings_mapped: false,
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
    ///
    /// With none of its own free, it takes back the rings' buffers first;
    /// then, when it may wait, it grows the smallest class itself rather
    /// than waiting for the pool's work, and lends what is left of the new
    /// buffers to the rings before it returns.
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
        // The wait ends at a deadline: time spent taking rings back or growing counts.
        let start = jiffies::now();
        let total = msecs_to_jiffies(timeout_ms);
        let mut waited = false;
        let mut grown = false;
        // Not when a ring could not be looked at: its buffers may be free.
        let mut may_grow = true;
        let mut st = this.state.lock();
        let rings = st.rings_mapped;
        let mut drained = !rings;
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
                    let (start, key) = part.extent(chunk).map_or((chunk, 0), |(f, e)| {
                        (f * class.chunk_buffers, e.registration.lkey())
                    });
                    if let Some(b) = out.get_mut(n) {
                        b.addr = (base + class.offset + i * class.buffer_size) as u64;
                        b.key = key;
                        b.offset = (i.saturating_sub(start) * class.buffer_size) as u64;
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
            if n > 0 {
                if waited {
                    // Counted once per ALLOC that had to wait.
                    if let Some(p) = st.parts.get_mut(first) {
                        p.stats.waits += 1;
                    }
                }
                drop(st);
                if grown || (drained && rings) {
                    // The rings ran dry: what is free goes back to them now (or soon, by the
                    // work, for a caller that may not wait).
                    match this.serialize(timeout_ms) {
                        Some(_serial) => {
                            for c in first..last {
                                this.lend(c);
                            }
                        }
                        None => grow = true,
                    }
                }
                if grow {
                    Self::queue(this);
                }
                return Ok(n);
            }
            if !drained {
                // The rings' buffers are the kernel's again, for this ALLOC and the next.
                drop(st);
                if let Some(_serial) = this.serialize(timeout_ms) {
                    for c in first..last {
                        may_grow &= this.drain(c);
                    }
                }
                drained = true;
                st = this.state.lock();
                continue;
            }
            let growable = st
                .parts
                .get(first)
                .zip(this.classes.get(first))
                .is_some_and(|(part, class)| {
                    part.boundary < class.max_buffers && !part.grow_failed
                });
            let left = total.saturating_sub(jiffies::now().wrapping_sub(start));
            if timeout_ms != 0 && !grown && may_grow && growable {
                // About to wait for a growth: do it here, in the caller's time.
                drop(st);
                Self::grow_now(this, first);
                grown = true;
                st = this.state.lock();
                continue;
            }
            if rings && growable {
                // Every buffer lent is in use: the work grows the class all the same.
                if let Some(part) = st.parts.get_mut(first) {
                    part.starved = true;
                }
                grow = true;
            }
            if grow {
                Self::queue(this);
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
            // A push onto a ring wakes nobody: with rings, the ring is taken back again after
            // each slice of the wait.
            let slice = if rings {
                left.min(msecs_to_jiffies(RING_WAIT_SLICE_MS))
            } else {
                left
            };
            if let CondVarTimeoutResult::Signal { .. } =
                this.changed.wait_interruptible_timeout(&mut st, slice)
            {
                return Err(EINTR);
            }
            drained = !rings;
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
            } else if test_bit(&part.lent, i) {
                // Popped from the ring, given back by the system call.
                set_bit(&mut part.lent, i, false);
                part.lent_count = part.lent_count.saturating_sub(1);
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

    /// Takes `grow_lock` for an ALLOC: waits for it only when the ALLOC may
    /// wait (`timeout_ms` above 0).
    fn serialize(&self, timeout_ms: u32) -> Option<MutexGuard<'_, ()>> {
        if timeout_ms == 0 {
            self.grow_lock.try_lock()
        } else {
            Some(self.grow_lock.lock())
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

    /// Marks the pool dead and wakes its waiters; the work then tears it
    /// down.
    pub(crate) fn kill(this: &Arc<Self>) {
        this.state.lock().dead = true;
        this.changed.notify_all();
    }

    /// Makes the pool known to the module's shrinker (its creation), in the
    /// memory reserved when it was created. Never sleeps.
    pub(crate) fn register(this: &Arc<Self>) {
        if let Some(node) = this.registry_node.lock().take() {
            pools::register(node, this.clone());
        }
    }

    /// Destroys the pool for good (POOL_DESTROY, the file's release): tears
    /// it down and waits for its work. Process context.
    pub(crate) fn destroy(this: &Arc<Self>) {
        // The shrinker no longer asks it for anything.
        drop(pools::unregister(this));
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
