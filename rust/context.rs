// SPDX-License-Identifier: GPL-2.0

//! A context: one open file of `/dev/memreg`, bound to the address space of
//! the process that opened it, its table of registrations and the operations
//! on them.
//!
//! # Lock order
//!
//! 1. `ContextShared::table` (spinlock): the registration table, the
//!    context's counters, the list of registrations awaiting teardown, and
//!    each registration's reference count (`LockedBy` the table).
//! 2. `DataPath::shadow` (spinlock): the data path's shadow translation
//!    table, which a registration leaves under the table lock.
//! 3. `Registration::state` (spinlock): a registration's pages, charges and
//!    notifier subscription; `live` and `suspended` change under it.
//!
//! The data path's mutexes (`DataPath::create`, `DataPath::worker`) come
//! before all of these, and its `queues` spinlock is a leaf; see
//! `worker.rs`.
//!
//! Under the table lock, writing an event wakes the `poll` waiters and
//! signals the eventfd: their wait-queue and eventfd locks nest inside it
//! (and never call back into memreg). The module's shrinker only try-locks
//! the table; the module-wide list of parked registrations (`parked.rs`)
//! nests inside it.
//!
//! The MMU notifier callback takes both, and it runs under the memory
//! management code's locks (`mmap_lock`, `i_mmap_rwsem`, the notifier's own
//! lockdep map), so while one of them is held nothing may allocate with
//! `GFP_KERNEL`, sleep, fault on user memory or take `mmap_lock`. Everything a
//! registration needs is allocated before the table lock is taken; copies to
//! and from user memory happen outside the locks, through a bounce buffer.
//!
//! # Deferred work
//!
//! The callback cannot unpin pages, remove a notifier or look at page tables,
//! so it puts the registration it ended on the table's pending list (or the
//! one it suspended on the list awaiting revalidation) and queues the
//! context's work item on the kernel's unbound workqueue (queueing an item
//! already queued does nothing, so a burst of invalidations costs one run).
//! A second, delayed, work item ends parked registrations once the context
//! has been idle for its `idle_ms`, and the module's shrinker ends them under
//! memory pressure (leaving the unpinning to the work item). The release of
//! the file cancels both items and tears down what is still pending itself,
//! so nothing of the context outlives it.

pub(crate) mod table;

use crate::{
    accounting::Charges,
    datapath::queue::{Connection, Queue},
    datapath::{
        transfer::{self, USE_TRIES},
        worker::{self, DataPath},
    },
    error::OpResult,
    events::{EventRing, Waiters},
    ioctl::Reply,
    key::KeyPair,
    parked,
    peer::{self, Peers},
    pool::{Buffer, Pool},
    registration::{push_teardown, teardown_list, Parts, Refused, Registration, RegistrationInfo},
    stats::{Stats, GLOBAL_CONTEXTS, GLOBAL_CONTEXTS_ALIVE, TOTALS},
    uapi,
};
use kernel::{
    bindings,
    eventfd::EventFd,
    fs::{File, LocalFile},
    impl_has_delayed_work, impl_has_work,
    list::List,
    miscdevice::MiscDeviceRegistration,
    mm::{
        memcg::MemCgroup,
        mmu_notifier::IntervalNotifier,
        pin::PinnedPages,
        shared_pages::{vma_pgoff, SharedPages},
        virt::{flags, VmaNew},
        Mm, MmWithUser,
    },
    new_delayed_work, new_spinlock, new_work,
    page::PAGE_SIZE,
    prelude::*,
    random::{get_random_u32, get_random_u64},
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        barrier::{smp_mb, Full},
        poll::PollTable,
        Arc, SpinLock,
    },
    task::resched::{cond_resched, fatal_signal_pending},
    time::{jiffies, msecs_to_jiffies},
    uaccess::{UserPtr, UserSlice},
    workqueue::{
        cancel::{cancel_delayed_sync, cancel_sync},
        dfl, DelayedWork, Work, WorkItem,
    },
};
use table::{CacheConfig, Nodes, RegistrationTable, Slots};

/// Times a registration is retried when an invalidation races with pinning.
const REGISTER_RETRIES: u32 = 3;

/// Most entries EVENTS_RESYNC lists at once.
const MAX_RESYNC: u32 = 1 << 20;

/// Registrations evicted under one hold of the table lock.
const EVICT_BATCH: usize = 64;

/// The part of a context that registrations, work items and peers refer to.
#[pin_data(PinnedDrop)]
pub(crate) struct ContextShared {
    /// The address space this context serves.
    pub(crate) mm: ARef<Mm>,
    #[pin]
    pub(crate) table: SpinLock<RegistrationTable>,
    /// The maintenance jobs pending: bits of [`job`].
    pending: Atomic<u32>,
    /// Runs the pending maintenance jobs.
    #[pin]
    work: Work<ContextShared, { work_id::MAINTENANCE }>,
    /// Ends parked registrations once the context has been idle long enough.
    #[pin]
    idle_work: DelayedWork<ContextShared, { work_id::IDLE }>,
    /// The jiffies counter at the context's last ioctl.
    last_use: Atomic<usize>,
    /// The opener's memory cgroup: what the worker allocates on the
    /// context's behalf (receive FIFOs, bounce buffers) is charged to it,
    /// each allocation in its scope (a scope around the whole run costs
    /// every request).
    pub(crate) memcg: MemCgroup,
    /// Those waiting in `poll` for events and completions.
    pub(crate) waiters: Arc<Waiters>,
    /// The data path: queues, master ring, worker state.
    #[pin]
    pub(crate) data: DataPath,
    /// The worker of the data path.
    #[pin]
    data_work: Work<ContextShared, { work_id::WORKER }>,
    /// Wakes the worker when a SEND waiting for a RECV times out.
    #[pin]
    data_timer: DelayedWork<ContextShared, { work_id::RNR_TIMER }>,
    /// The next key sequence number.
    pub(crate) next_seq: Atomic<u64>,
    /// The buffer pools by index; a destroyed one leaves its index empty.
    #[pin]
    pub(crate) pools: SpinLock<KVec<Option<Arc<Pool>>>>,
    /// The contexts this one attached (`peer.rs`).
    #[pin]
    pub(crate) peers: SpinLock<Peers>,
    /// The grant epoch: attachments made to this context before its last
    /// PEER_REVOKE no longer hold.
    pub(crate) grant_epoch: Atomic<u64>,
}

#[pinned_drop]
impl PinnedDrop for ContextShared {
    fn drop(self: Pin<&mut Self>) {
        GLOBAL_CONTEXTS_ALIVE.fetch_sub(1, Relaxed);
    }
}

/// The work items of a context, by ID.
pub(crate) mod work_id {
    /// The maintenance jobs of [`super::job`], on `system_dfl`.
    pub(crate) const MAINTENANCE: u64 = 0;
    /// Ends parked registrations once the context has been idle long
    /// enough (delayed, on `system_dfl`).
    pub(crate) const IDLE: u64 = 1;
    /// The data path's worker, on `system_dfl_long`.
    pub(crate) const WORKER: u64 = 2;
    /// Wakes the worker when a SEND waiting for a RECV times out (delayed,
    /// on `system_dfl_long`).
    pub(crate) const RNR_TIMER: u64 = 3;
}

/// The maintenance jobs, bits of [`ContextShared::defer`]'s word: the work
/// item is queued only when the word goes from zero to non-zero, and a run
/// takes every bit at once (Binder's `defer_work`).
pub(crate) mod job {
    /// Tear down the registrations that ended.
    pub(crate) const TEARDOWN: u32 = 1 << 0;
    /// Revalidate the registrations suspended since the last run.
    pub(crate) const REVALIDATE: u32 = 1 << 1;
    /// Destroy the pools whose mapping went.
    pub(crate) const REAP_POOLS: u32 = 1 << 2;
}

impl_has_work! {
    impl HasWork<Self, { work_id::MAINTENANCE }> for ContextShared { self.work }
}
impl_has_delayed_work! {
    impl HasDelayedWork<Self, { work_id::IDLE }> for ContextShared { self.idle_work }
}
impl_has_work! {
    impl HasWork<Self, { work_id::WORKER }> for ContextShared { self.data_work }
}
impl_has_delayed_work! {
    impl HasDelayedWork<Self, { work_id::RNR_TIMER }> for ContextShared { self.data_timer }
}

impl WorkItem<{ work_id::RNR_TIMER }> for ContextShared {
    type Pointer = Arc<ContextShared>;

    fn run(this: Arc<ContextShared>) {
        // The release cancels this item, then the worker again.
        if !this.data.closing.load(Relaxed) {
            let _ = dfl::system_dfl_long().enqueue::<_, { work_id::WORKER }>(this);
        }
    }
}

impl WorkItem<{ work_id::WORKER }> for ContextShared {
    type Pointer = Arc<ContextShared>;

    fn run(this: Arc<ContextShared>) {
        worker::run(this);
    }
}

impl WorkItem<{ work_id::MAINTENANCE }> for ContextShared {
    type Pointer = Arc<ContextShared>;

    fn run(this: Arc<ContextShared>) {
        // Every bit at once: a job deferred from here on queues the item again.
        let jobs = this.pending.xchg(0, Full);
        if jobs & job::TEARDOWN != 0 {
            this.drain_deferred();
        }
        if jobs & job::REVALIDATE != 0 {
            this.revalidate_suspended();
        }
        if jobs & job::REAP_POOLS != 0 {
            this.reap_dead_pools();
        }
    }
}

impl WorkItem<{ work_id::IDLE }> for ContextShared {
    type Pointer = Arc<ContextShared>;

    fn run(this: Arc<ContextShared>) {
        ContextShared::idle_check(this);
    }
}

impl ContextShared {
    /// Defers the maintenance `jobs` (bits of [`job`]) to the context's
    /// work. Neither allocates nor sleeps: callable from a notifier callback
    /// and under the table lock.
    pub(crate) fn defer(this: &Arc<Self>, jobs: u32) {
        let mut old = this.pending.load(Relaxed);
        loop {
            match this.pending.cmpxchg(old, old | jobs, Full) {
                Ok(_) => break,
                Err(now) => old = now,
            }
        }
        if old == 0 {
            // From zero: no run is queued that would see these jobs.
            let _ = dfl::system_dfl().enqueue::<_, { work_id::MAINTENANCE }>(this.clone());
        }
    }

    /// Tears down every registration awaiting it. Process context.
    fn drain_deferred(&self) {
        loop {
            let next = self.table.lock().next_deferred();
            let Some(registration) = next else {
                break;
            };
            registration.teardown();
            cond_resched();
        }
    }

    /// Destroys the pools whose mapping went. Process context.
    fn reap_dead_pools(&self) {
        loop {
            let dead = {
                let mut pools = self.pools.lock();
                pools
                    .iter_mut()
                    .find(|p| p.as_ref().is_some_and(|p| p.is_dead()))
                    .and_then(Option::take)
            };
            let Some(pool) = dead else {
                break;
            };
            Pool::destroy(&pool);
        }
    }

    /// Takes the next pool out (the file's release), without allocating.
    fn take_pool(&self) -> Option<Arc<Pool>> {
        self.pools.lock().iter_mut().find_map(Option::take)
    }

    /// Revalidates every registration suspended since the last run: those
    /// whose pages are in place resume, the others end. Process context.
    fn revalidate_suspended(&self) {
        loop {
            let next = self.table.lock().next_suspended();
            let Some(registration) = next else {
                break;
            };
            // One that invalidations keep restarting stays suspended; its next use looks again.
            let _ = Registration::revalidate(&registration);
            cond_resched();
        }
    }

    /// The pool of index `index`; `EINVAL` for none.
    pub(crate) fn pool(&self, index: u32) -> OpResult<Arc<Pool>> {
        Ok(self
            .pools
            .lock()
            .get(index as usize)
            .and_then(Option::clone)
            .ok_or(EINVAL)?)
    }

    /// Drops one reference on the registration of `key` (DEREGISTER, from
    /// the ioctl or a ring); the last one parks it or, when it may not be
    /// parked, ends it. `ENOENT` for an unknown key, `EINVAL` for a parked
    /// one: there is no reference to drop. Process context.
    pub(crate) fn deregister_key(this: &Arc<Self>, key: u64) -> OpResult {
        // Parking may evict others to stay within the limits.
        let mut evicted = List::new();
        let (ended, idle_ms) = {
            let mut t = this.table.lock();
            let registration = t.get(key).ok_or(ENOENT)?.clone();
            // No reference to drop on a parked one; a pool's chunk belongs to the pool.
            if registration.refs(&t) == 0 || registration.info.pool {
                return Err(EINVAL.into());
            }
            if registration.put(&mut t) > 0 {
                return Ok(());
            }
            if Registration::park(&registration, &mut t, &mut evicted) {
                (None, Some(t.config.idle_ms))
            } else {
                t.stats.deregistrations += 1;
                (
                    Registration::unpublish(&mut t, registration.info.keys.seq),
                    None,
                )
            }
        };
        if let Some(r) = ended {
            r.teardown();
        }
        teardown_list(&mut evicted);
        if let Some(idle_ms) = idle_ms {
            Self::arm_idle(this, idle_ms);
        }
        Ok(())
    }

    /// Records a use of the context, for idle eviction: a read of the
    /// jiffies counter and at most one store per tick, no clock source read.
    pub(crate) fn touch(&self) {
        let now = jiffies::now();
        if self.last_use.load(Relaxed) != now {
            self.last_use.store(now, Relaxed);
        }
    }

    /// Ends parked registrations with `reason`, least recently parked first,
    /// until `keep` says the rest may stay (or none is left), and tears them
    /// down: their pages are unpinned when this returns. Returns how many
    /// ended and their pages. Process context.
    fn evict_while(&self, reason: usize, keep: impl Fn(&RegistrationTable) -> bool) -> (u64, u64) {
        let (mut n, mut pages) = (0u64, 0u64);
        loop {
            let mut evicted = List::new();
            let mut done = false;
            {
                let mut t = self.table.lock();
                for _ in 0..EVICT_BATCH {
                    if keep(&t) {
                        done = true;
                        break;
                    }
                    match Registration::evict_oldest(&mut t, reason) {
                        Some(r) => {
                            n += 1;
                            pages += r.info.npages as u64;
                            push_teardown(&mut evicted, r);
                        }
                        None => {
                            done = true;
                            break;
                        }
                    }
                }
            }
            teardown_list(&mut evicted);
            if done {
                return (n, pages);
            }
        }
    }

    /// Ends parked registrations until a registration `info` fits the
    /// context's cap and overlap bound: the least recently parked for the
    /// cap, those it overlaps for the bound. Returns whether it fits, the
    /// evicted ones on `evicted` for teardown. Neither allocates nor sleeps.
    fn make_room(
        t: &mut RegistrationTable,
        first: usize,
        last: usize,
        max: u64,
        evicted: &mut List<Registration>,
    ) -> bool {
        while t.len() >= max {
            match Registration::evict_oldest(t, uapi::EVICT_PIN_LIMIT) {
                Some(r) => push_teardown(evicted, r),
                None => break,
            }
        }
        while !t.may_overlap_span(first, last) {
            let Some(seq) = t.parked_overlapping(first, last) else {
                break;
            };
            if let Some(r) = Registration::evict(t, seq, uapi::EVICT_PIN_LIMIT) {
                push_teardown(evicted, r);
            }
        }
        t.len() < max && t.may_overlap_span(first, last)
    }

    /// Arms the idle eviction `delay_ms` from now if the configuration asks
    /// for it, unless it is armed already (it then looks at the last use when
    /// it fires).
    fn arm_idle(this: &Arc<Self>, delay_ms: u64) {
        if delay_ms == 0 {
            return;
        }
        let delay = msecs_to_jiffies(u32::try_from(delay_ms).unwrap_or(u32::MAX));
        // Already armed: it looks again when it fires.
        let _ = dfl::system_dfl().enqueue_delayed::<_, { work_id::IDLE }>(this.clone(), delay);
    }

    /// The idle eviction: ends every parked registration if the context made
    /// no ioctl for `idle_ms` (to the tick), or looks again when it will have.
    fn idle_check(this: Arc<Self>) {
        let (idle_ms, parked) = {
            let t = this.table.lock();
            (t.config.idle_ms, t.stats.parked)
        };
        if idle_ms == 0 || parked == 0 {
            return;
        }
        let idle_for = jiffies::elapsed_ms(this.last_use.load(Relaxed));
        if idle_for >= idle_ms {
            this.evict_while(uapi::EVICT_IDLE, |_| false);
        } else {
            Self::arm_idle(&this, idle_ms - idle_for);
        }
    }
}

/// How a REGISTER was served.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Served {
    /// A new registration was pinned.
    Miss,
    /// A live registration in use served it.
    Hit,
    /// A parked registration was revived; the local key it had while
    /// parked.
    Revived(u64),
}

/// What undoing a REGISTER needs ([`Context::unregister`]). Small, so that
/// returning it moves little: the hit path is dominated by copies.
pub(crate) struct Registered {
    lkey: u64,
    served: Served,
    /// The context's peak of pinned pages before a miss, to roll back to.
    peak_before: u64,
}

impl Registered {
    /// Fills in the result of a REGISTER served by `registration` and
    /// returns what undoing it needs.
    fn fill(
        req: &mut uapi::Register,
        registration: &Registration,
        t: &RegistrationTable,
        served: Served,
        peak_before: u64,
    ) -> Self {
        let info = &registration.info;
        req.lkey = registration.lkey();
        req.rkey = registration.rkey();
        // The rights the keys carry: exactly the remote ones asked, at least the local ones.
        req.access = info.access;
        req.region_addr = info.addr;
        req.region_length = info.length;
        req.flags = match served {
            Served::Miss => 0,
            Served::Hit => uapi::REGISTER_CACHED,
            Served::Revived(_) => uapi::REGISTER_CACHED | uapi::REGISTER_REVIVED,
        };
        (req.slot, req.generation) = registration.slot(t);
        Self {
            lkey: registration.lkey(),
            served,
            peak_before,
        }
    }
}

/// The eventfd an argument names: none for -1.
fn eventfd_arg(fd: i32) -> Result<Option<EventFd>> {
    match fd {
        -1 => Ok(None),
        fd => EventFd::from_fd(fd).map(Some),
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
        let config = crate::default_cache_config();
        let waiters = Waiters::new()?;
        let shared = Arc::pin_init(
            try_pin_init!(ContextShared {
                mm: ARef::from(&**mm),
                table <- new_spinlock!(
                    RegistrationTable::new(config),
                    "memreg::ContextShared::table"
                ),
                work <- new_work!("memreg::ContextShared::work"),
                idle_work <- new_delayed_work!("memreg::ContextShared::idle_work"),
                last_use: Atomic::new(jiffies::now()),
                memcg: MemCgroup::of_current(),
                waiters,
                data <- DataPath::new(),
                data_work <- new_work!("memreg::ContextShared::data_work"),
                data_timer <- new_delayed_work!("memreg::ContextShared::data_timer"),
                pending: Atomic::new(0),
                next_seq: Atomic::new(1),
                peers <- new_spinlock!(Peers::new(), "memreg::ContextShared::peers"),
                pools <- new_spinlock!(
                    KVec::with_capacity(uapi::MAX_POOLS, GFP_KERNEL_ACCOUNT)?,
                    "memreg::ContextShared::pools"
                ),
                grant_epoch: Atomic::new(0),
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        GLOBAL_CONTEXTS_ALIVE.add(1, Relaxed);
        GLOBAL_CONTEXTS.add(1, Relaxed);
        Ok(Self { shared })
    }

    /// Records a use of the context, for idle eviction.
    pub(crate) fn touch(&self) {
        self.shared.touch();
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

    /// REGISTER: fills in the keys of the registration serving the range,
    /// pinning a new one if none does. Returns what to pass to
    /// [`Context::unregister`] if the result cannot reach the caller.
    pub(crate) fn register_ioctl(
        &self,
        mut req: uapi::Register,
        mut reply: Reply<'_, uapi::Register>,
    ) -> OpResult {
        if req.flags != 0 {
            return Err(EINVAL.into());
        }
        if req.reserved != 0 {
            return Err(EINVAL.into());
        }
        let done = self.register(&mut req)?;
        if let Err(e) = reply.send(&req) {
            // The caller cannot learn the keys: undo the call.
            self.unregister(&done);
            return Err(e.into());
        }
        Ok(())
    }

    /// Undoes a REGISTER whose result could not reach the caller: drops the
    /// reference it took and takes back the counters it moved, so that the
    /// failed call changed nothing.
    pub(crate) fn unregister(&self, done: &Registered) {
        let mut evicted = List::new();
        let mut idle_ms = None;
        let ended = 'ended: {
            let mut t = self.shared.table.lock();
            match done.served {
                Served::Revived(_) => {
                    t.stats.revives = t.stats.revives.saturating_sub(1);
                    TOTALS.revives.fetch_sub(1, Relaxed);
                }
                Served::Hit => t.stats.cache_hits = t.stats.cache_hits.saturating_sub(1),
                Served::Miss => {}
            }
            let Some(registration) = t.get(done.lkey).cloned() else {
                // An invalidation ended it meanwhile: its counters are the invalidation's.
                if done.served == Served::Miss {
                    t.stats.cache_misses = t.stats.cache_misses.saturating_sub(1);
                }
                break 'ended None;
            };
            if registration.put(&mut t) > 0 {
                break 'ended None;
            }
            if done.served != Served::Miss
                && Registration::park(&registration, &mut t, &mut evicted)
            {
                // Parked, as the DEREGISTER it stands for would have; a revived one is back
                // where it was, with the key it had there (the caller never learnt the new
                // ones), not counted as a new parking.
                if let Served::Revived(parked_lkey) = done.served {
                    t.stats.parks = t.stats.parks.saturating_sub(1);
                    TOTALS.parks.fetch_sub(1, Relaxed);
                    Registration::restore_lkey(&registration, &t, parked_lkey);
                }
                idle_ms = Some(t.config.idle_ms);
                break 'ended None;
            }
            let ended = Registration::unpublish(&mut t, registration.info.keys.seq);
            if done.served == Served::Miss {
                t.stats.cache_misses = t.stats.cache_misses.saturating_sub(1);
                t.stats.pages_pinned_peak = done.peak_before.max(t.stats.pages_pinned);
            }
            ended
        };
        if let Some(r) = ended {
            r.teardown();
        }
        teardown_list(&mut evicted);
        if let Some(idle_ms) = idle_ms {
            // The idle eviction may have stopped looking while it was revived.
            ContextShared::arm_idle(&self.shared, idle_ms);
        }
    }

    fn register(&self, req: &mut uapi::Register) -> OpResult<Registered> {
        let (addr, length, access) = (req.addr, req.length, req.access);
        if access == 0 || access & !uapi::ACCESS_ALL != 0 || length == 0 {
            return Err(EINVAL.into());
        }
        if length > uapi::MAX_LENGTH {
            return Err(E2BIG.into());
        }
        let end = addr.checked_add(length).ok_or(EINVAL)?;
        let first = usize::try_from(addr).map_err(|_| EFAULT)?;
        let last = usize::try_from(end - 1).map_err(|_| EFAULT)?;
        let max = crate::max_registrations();

        // The cache: a live registration covering the range with enough access, revived if
        // parked, revalidated if suspended.
        let mut tries = 0;
        let peak_before = loop {
            let mut evicted = List::new();
            let found = {
                let mut t = self.shared.table.lock();
                match t.find_cover(addr, length, access).cloned() {
                    Some(r) if !r.is_suspended() => {
                        let served = match Registration::take_ref(&r, &mut t)? {
                            Some(parked_lkey) => Served::Revived(parked_lkey),
                            None => Served::Hit,
                        };
                        return Ok(Registered::fill(req, &r, &t, served, 0));
                    }
                    Some(r) => Some(r),
                    None => {
                        // Make room by evicting parked registrations.
                        if !ContextShared::make_room(&mut t, first, last, max, &mut evicted) {
                            drop(t);
                            teardown_list(&mut evicted);
                            return Err(EDQUOT.into());
                        }
                        None
                    }
                }
            };
            teardown_list(&mut evicted);
            let Some(suspended) = found else {
                break self.shared.table.lock().stats.pages_pinned_peak;
            };
            // Suspended by an invalidation: look at its pages, then look the range up again.
            // Bounded: invalidations may keep suspending it.
            tries += 1;
            if tries > USE_TRIES {
                return Err(EAGAIN.into());
            }
            if fatal_signal_pending() {
                return Err(EINTR.into());
            }
            if let Err(e) = Registration::revalidate(&suspended) {
                if tries >= USE_TRIES {
                    return Err(e.into());
                }
            }
        };
        // Registrations ended by invalidation no longer count against any limit but stay
        // pinned until torn down: tear this context's down now, so that a loop of REGISTER
        // and munmap cannot pin more than its limits allow while the worker catches up.
        self.shared.drain_deferred();

        let page_addr = usize::try_from(addr).map_err(|_| EFAULT)? & !(PAGE_SIZE - 1);
        let page_end = usize::try_from(end)
            .ok()
            .and_then(|e| e.checked_next_multiple_of(PAGE_SIZE))
            .ok_or(EFAULT)?;
        let npages = (page_end - page_addr) / PAGE_SIZE;
        let seq = self.shared.next_seq.fetch_add(1, Relaxed);
        let keys = KeyPair::new(seq, get_random_u32(), get_random_u64()).ok_or(ENOSPC)?;
        let info = RegistrationInfo {
            addr,
            length,
            access,
            npages,
            keys,
            pool: false,
        };

        // Everything the table needs is allocated before its lock is taken.
        let mut nodes = Nodes::new()?;
        let mut charges = Charges::for_current()?;
        let registration = Registration::new(self.shared.clone(), info)?;
        let current = kernel::current!();
        let mm = current.mm().ok_or(EPERM)?;
        // The notifier goes in before the pages are pinned, so that an invalidation racing
        // with pinning is seen by the sequence check when publishing.
        let mut subscription =
            IntervalNotifier::insert(registration.clone(), mm, page_addr, npages * PAGE_SIZE)?;

        for _ in 0..REGISTER_RETRIES {
            let seq = registration.notifier().read_begin();
            // After the sequence is read: a mapping that replaces a checked one is an unmap of
            // it, which makes the publication below retry.
            Self::check_pinnable(mm, page_addr, page_end)?;
            // Past the module budget or RLIMIT_MEMLOCK, parked registrations go first,
            // module-wide or the user's, oldest first.
            let pages = PinnedPages::pin_current(page_addr, npages, info.writable(), &mut |n| {
                parked::charge(&mut charges, n)
            })?;
            let parts = Parts {
                pages,
                charges,
                subscription,
                nodes,
            };
            let mut evicted = List::new();
            let refused = {
                let mut t = self.shared.table.lock();
                // Registrations parked since the look-up may be in the way: they go first.
                ContextShared::make_room(&mut t, first, last, max, &mut evicted);
                match Registration::publish(&registration, &mut t, seq, max, parts) {
                    Ok(()) => {
                        let done =
                            Registered::fill(req, &registration, &t, Served::Miss, peak_before);
                        drop(t);
                        teardown_list(&mut evicted);
                        return Ok(done);
                    }
                    Err(Refused::Covered(winner, revived, parts)) => {
                        // A concurrent REGISTER published a registration serving ours, and a
                        // reference was taken on it (a hit, or a revival): use it.
                        let served = match revived {
                            Some(parked_lkey) => Served::Revived(parked_lkey),
                            None => Served::Hit,
                        };
                        let done = Registered::fill(req, &winner, &t, served, 0);
                        drop(t);
                        // Our parts go outside the locks: unpinned, uncharged, the notifier
                        // removed.
                        drop(parts);
                        teardown_list(&mut evicted);
                        return Ok(done);
                    }
                    Err(refused) => refused,
                }
            };
            teardown_list(&mut evicted);
            match refused {
                Refused::Raced(parts) => {
                    // Something changed the range while we pinned it: pin again.
                    let Parts {
                        pages,
                        charges: mut c,
                        subscription: s,
                        nodes: n,
                    } = parts;
                    // Unpinned before uncharged.
                    drop(pages);
                    c.release();
                    charges = c;
                    subscription = s;
                    nodes = n;
                }
                Refused::Quota(parts) => {
                    drop(parts);
                    return Err(EDQUOT.into());
                }
                Refused::Overflow(parts) => {
                    drop(parts);
                    return Err(EOVERFLOW.into());
                }
                Refused::Covered(_, _, parts) => {
                    drop(parts);
                    return Err(EAGAIN.into());
                }
            }
        }
        Err(EAGAIN.into())
    }

    /// Refuses (`EFAULT`) a range that is not wholly mapped or that holds a
    /// driver's mapping of its own pages (`VM_IO`, `VM_PFNMAP`,
    /// `VM_MIXEDMAP`): memreg's rings, state words, event ring and pools
    /// among them, which `VM_IO` does not keep from `get_user_pages_fast`.
    /// Registering them would pin pages the driver frees or hands out by
    /// itself.
    fn check_pinnable(mm: &MmWithUser, start: usize, end: usize) -> Result {
        let guard = mm.mmap_read_lock();
        let mut at = start;
        while at < end {
            let vma = guard.vma_lookup(at).ok_or(EFAULT)?;
            if vma.flags() & (flags::IO | flags::PFNMAP | flags::MIXEDMAP) != 0 {
                return Err(EFAULT);
            }
            at = vma.end();
            cond_resched();
        }
        Ok(())
    }

    /// DEREGISTER: drops one reference; the last one parks the registration
    /// or, when it may not be parked, ends it. `EINVAL` for a parked one:
    /// there is no reference to drop.
    pub(crate) fn deregister(&self, req: uapi::Deregister) -> OpResult {
        uapi::check_reserved(&[req.reserved])?;
        ContextShared::deregister_key(&self.shared, req.key)
    }

    /// `mmap`: maps an area of the context into the process, read-only.
    /// `MEMREG_MMAP_STATE_WORDS` maps the state words; the first such mapping
    /// creates one word per 8 bytes of its length (up to `MEMREG_MAX_SLOTS`),
    /// and registrations made afterwards get a slot. Later mappings may be no
    /// longer. `EINVAL` for any other offset or a bad length.
    pub(crate) fn mmap(&self, vma: &VmaNew) -> Result {
        self.check_owner()?;
        let offset = (vma_pgoff(vma) as u64)
            .checked_mul(PAGE_SIZE as u64)
            .ok_or(EINVAL)?;
        let data = &self.shared.data;
        let (pages, writable) = match uapi::MmapArea::decode(offset)? {
            uapi::MmapArea::Pool(index) => {
                let pool = self.pool(index).ok_or(EINVAL)?;
                return Pool::mmap(&pool, vma);
            }
            uapi::MmapArea::StateWords => return self.map_state_words(vma),
            area @ (uapi::MmapArea::Events | uapi::MmapArea::EventsHead) => {
                let head = area == uapi::MmapArea::EventsHead;
                let t = self.shared.table.lock();
                let ring = t.events.as_ref().ok_or(EINVAL)?;
                (
                    if head {
                        ring.head.clone()
                    } else {
                        ring.ring.clone()
                    },
                    head,
                )
            }
            uapi::MmapArea::Master => (data.master.as_ref().ok_or(EINVAL)?.ring.clone(), false),
            uapi::MmapArea::MasterUser => (data.master.as_ref().ok_or(EINVAL)?.user.clone(), true),
            uapi::MmapArea::Completion(q) => (data.queue(q).ok_or(EINVAL)?.kernel.clone(), false),
            uapi::MmapArea::Submission(q) => (data.queue(q).ok_or(EINVAL)?.user.clone(), true),
        };
        pages.map_into(vma, 0, writable)
    }

    /// Maps the state words (see [`Context::mmap`]).
    fn map_state_words(&self, vma: &VmaNew) -> Result {
        let nslots = (vma.end() - vma.start()) / 8;
        if nslots == 0 || nslots > uapi::MAX_SLOTS {
            return Err(EINVAL);
        }
        // A refused mapping creates nothing.
        SharedPages::check_mapping(vma, false)?;
        let existing = self
            .shared
            .table
            .lock()
            .slots
            .as_ref()
            .map(|s| s.words.clone());
        let words = match existing {
            Some(words) => words,
            None => {
                let new = Slots::new(nslots)?;
                let mut t = self.shared.table.lock();
                match &t.slots {
                    // Another mapping won the race: ours is freed outside the lock.
                    Some(s) => {
                        let words = s.words.clone();
                        drop(t);
                        drop(new);
                        words
                    }
                    None => {
                        let words = new.words.clone();
                        t.slots = Some(new);
                        words
                    }
                }
            }
        };
        words.map_into(vma, 0, false)
    }

    /// EVENTS_SETUP: creates the event ring. `EBUSY` when there is one.
    /// The result is written back before the ring is installed, so a call
    /// that fails changes nothing.
    pub(crate) fn events_setup(
        &self,
        mut req: uapi::EventsSetup,
        mut reply: Reply<'_, uapi::EventsSetup>,
    ) -> OpResult {
        uapi::check_reserved(&req.reserved)?;
        if !req.entries.is_power_of_two() || req.entries > uapi::MAX_EVENTS {
            return Err(EINVAL.into());
        }
        let eventfd = eventfd_arg(req.eventfd)?;
        let ring = EventRing::new(req.entries, eventfd, self.shared.waiters.clone())?;
        if self.shared.table.lock().events.is_some() {
            return Err(EBUSY.into());
        }
        req.ring_bytes = EventRing::ring_bytes(req.entries) as u64;
        reply.send(&req)?;
        let refused = {
            let mut t = self.shared.table.lock();
            if t.events.is_some() {
                Some(ring)
            } else {
                t.events = Some(ring);
                None
            }
        };
        if refused.is_some() {
            // A concurrent EVENTS_SETUP won. Freed outside the lock.
            drop(refused);
            return Err(EBUSY.into());
        }
        Ok(())
    }

    /// EVENTS_RESYNC: discards unread events, clears the overflow flag and
    /// lists the registrations valid now, in one step.
    pub(crate) fn events_resync(&self, req: &mut uapi::EventsResync) -> OpResult {
        uapi::check_reserved(&[req.reserved])?;
        if req.capacity > MAX_RESYNC {
            return Err(EINVAL.into());
        }
        let capacity = (req.capacity as usize).min(crate::max_registrations() as usize);
        let mut list = KVVec::<uapi::ResyncEntry>::with_capacity(capacity, GFP_KERNEL_ACCOUNT)?;
        let count = {
            let mut t = self.shared.table.lock();
            if let Some(ring) = t.events.as_mut() {
                ring.resync();
            }
            for r in t.iter() {
                let mut e: uapi::ResyncEntry = uapi::zeroed();
                e.key = r.lkey();
                e.addr = r.info.addr;
                e.length = r.info.length;
                e.state = if r.is_suspended() {
                    uapi::STATE_SUSPENDED
                } else {
                    uapi::STATE_VALID
                };
                if r.is_parked(&t) {
                    e.state |= uapi::STATE_PARKED;
                }
                e.slot = r.slot(&t).0;
                if list.push_within_capacity(e).is_err() {
                    break;
                }
            }
            t.len()
        };
        let buf = usize::try_from(req.entries).map_err(|_| EFAULT)?;
        let bytes = list.len() * core::mem::size_of::<uapi::ResyncEntry>();
        let mut writer = UserSlice::new(UserPtr::from_addr(buf), bytes).writer();
        for e in list.iter() {
            writer.write(e)?;
        }
        req.count = u32::try_from(count).unwrap_or(u32::MAX);
        Ok(())
    }

    /// `poll`: readable when the event ring has unread events or overflowed,
    /// a completion ring has unread completions or the master ring unread
    /// entries; writable when no submission ring is full.
    pub(crate) fn poll(&self, file: &File, table: PollTable<'_>) -> u32 {
        // Registered even before EVENTS_SETUP, which wakes it.
        table.register_wait(file, &self.shared.waiters.cv);
        let data = &self.shared.data;
        let mut readable = self
            .shared
            .table
            .lock()
            .events
            .as_ref()
            .is_some_and(|r| r.readable());
        let any_full = || data.queues.lock().iter().any(|q| q.sq_full());
        readable |= data.queues.lock().iter().any(|q| q.cq_pending());
        readable |= data.master.as_ref().is_some_and(|m| m.pending());
        let mut writable = !any_full();
        if !writable {
            // Only the worker clears the flag. Set, then look again: the worker, after it
            // frees a slot, either sees the flag and wakes us, or we see the slot free.
            data.pollout_waiting.store(true, Relaxed);
            smp_mb(Full);
            writable = !any_full();
        }
        let mut mask = 0;
        if readable {
            mask |= bindings::POLLIN | bindings::POLLRDNORM;
        }
        if writable {
            mask |= bindings::POLLOUT | bindings::POLLWRNORM;
        }
        mask
    }

    /// QUEUE_CREATE: creates a queue (and the master ring with the first).
    /// The result is written back before the queue is installed, so a call
    /// that fails changes nothing.
    pub(crate) fn queue_create(
        &self,
        mut req: uapi::QueueCreate,
        mut reply: Reply<'_, uapi::QueueCreate>,
    ) -> OpResult {
        uapi::check_reserved(&req.reserved)?;
        let eventfd = eventfd_arg(req.eventfd)?;
        let data = &self.shared.data;
        let _create = data.create.lock();
        let index = u32::try_from(data.queues.lock().len()).map_err(|_| ENOSPC)?;
        if index >= uapi::MAX_QUEUES {
            return Err(ENOSPC.into());
        }
        let queue = Queue::new(index, req.sq_entries, req.cq_entries, eventfd)?;
        worker::master(data)?;
        req.queue = index;
        req.sq_bytes = Queue::sq_bytes(req.sq_entries) as u64;
        req.cq_bytes = Queue::cq_bytes(req.cq_entries) as u64;
        reply.send(&req)?;
        // Room for every queue was reserved; creation is serialized, so this is index.
        data.queues
            .lock()
            .push_within_capacity(queue)
            .map_err(|_| ENOSPC)?;
        Ok(())
    }

    /// DOORBELL: wakes the worker for queue `req.queue`.
    pub(crate) fn doorbell(&self, req: uapi::Doorbell) -> OpResult {
        if req.reserved != 0 || self.shared.data.queue(req.queue).is_none() {
            return Err(EINVAL.into());
        }
        self.shared.data.stats.doorbells.add(1, Relaxed);
        // Already queued: the queued run sees this queue too. Running: it runs again.
        let _ = dfl::system_dfl_long().enqueue::<_, { work_id::WORKER }>(self.shared.clone());
        Ok(())
    }

    /// The part of the context that peers hold.
    pub(crate) fn shared(&self) -> Arc<ContextShared> {
        self.shared.clone()
    }

    /// PEER_ATTACH: attaches the context of the memreg file behind
    /// descriptor `req.fd` and returns its handle in `req.peer`. `EBADF` for
    /// a descriptor that is not open, `EINVAL` for a file that is not
    /// memreg's.
    pub(crate) fn peer_attach(
        &self,
        mut req: uapi::PeerAttach,
        mut reply: Reply<'_, uapi::PeerAttach>,
    ) -> OpResult {
        uapi::check_reserved(&req.reserved)?;
        let fd = u32::try_from(req.fd).map_err(|_| EBADF)?;
        let peer = {
            let file = LocalFile::fget(fd).map_err(|_| EBADF)?;
            MiscDeviceRegistration::<Context>::device_of(&file)
                .ok_or(EINVAL)?
                .shared()
        };
        // Read once the file was found open: a revocation afterwards ends this attachment.
        let epoch = peer.grant_epoch.load(Relaxed);
        let mut room = if self.shared.peers.lock().needs_room() {
            peer::room()?
        } else {
            KVec::new()
        };
        let attached = self.shared.peers.lock().attach(peer, epoch, &mut room);
        // Outside the lock: a refused attachment may hold the last reference to the peer.
        drop(room);
        match attached {
            Ok(handle) => {
                req.peer = handle;
                if let Err(e) = reply.send(&req) {
                    // The caller cannot learn the handle: undo the call.
                    self.peer_undo_attach(handle);
                    return Err(e.into());
                }
                Ok(())
            }
            Err((e, peer)) => {
                drop(peer);
                Err(e.into())
            }
        }
    }

    /// Undoes a PEER_ATTACH whose result could not reach the caller.
    fn peer_undo_attach(&self, handle: u32) {
        let peer = self.shared.peers.lock().detach(handle);
        drop(peer);
    }

    /// PEER_DETACH: drops handle `req.peer` and disconnects the queues
    /// connected through it.
    pub(crate) fn peer_detach(&self, req: uapi::PeerDetach) -> OpResult {
        if req.reserved != 0 {
            return Err(EINVAL.into());
        }
        let data = &self.shared.data;
        let _serial = data.create.lock();
        // Checked before the fallible disconnection, so that nothing changed when it fails.
        // Another thread may detach the same handle meanwhile: then there is nothing to drop.
        if self.shared.peers.lock().find(req.peer).is_none() {
            return Err(ENOENT.into());
        }
        data.disconnect(&self.shared, Some(req.peer))?;
        let peer = self.shared.peers.lock().detach(req.peer);
        drop(peer);
        // A SEND waiting on a queue it disconnected completes now.
        let _ = dfl::system_dfl_long().enqueue::<_, { work_id::WORKER }>(self.shared.clone());
        Ok(())
    }

    /// PEER_REVOKE: every attachment made to this context so far stops
    /// working, and the queues connected to its queues are disconnected.
    pub(crate) fn peer_revoke(&self) -> OpResult {
        let data = &self.shared.data;
        let _serial = data.create.lock();
        self.shared.grant_epoch.add(1, Relaxed);
        data.remove_senders()?;
        Ok(())
    }

    /// QUEUE_CONNECT: SENDs on queue `req.queue` go to the RECVs posted on
    /// queue `req.remote_queue` of the peer `req.peer`.
    pub(crate) fn queue_connect(&self, req: uapi::QueueConnect) -> OpResult {
        uapi::check_reserved(&req.reserved)?;
        if req.rnr_timeout_ms > uapi::MAX_RNR_TIMEOUT_MS {
            return Err(EINVAL.into());
        }
        let data = &self.shared.data;
        // Connections, detaching and revoking are serialized with the creation of queues.
        let _serial = data.create.lock();
        let queue = data.queue(req.queue).ok_or(EINVAL)?;
        let (peer, epoch) = peer::lookup(&self.shared, req.peer)?;
        let remote = peer.data.queue(req.remote_queue).ok_or(EINVAL)?;
        if queue.send.lock().is_some() {
            return Err(EISCONN.into());
        }
        remote.add_sender(self.shared.clone(), req.queue)?;
        let conn = Connection {
            handle: req.peer,
            ctx: peer,
            epoch,
            queue: remote,
            rnr_timeout_ms: req.rnr_timeout_ms,
        };
        *queue.send.lock() = Some(conn);
        Ok(())
    }

    /// The live pool of index `index`.
    fn pool(&self, index: u32) -> Option<Arc<Pool>> {
        self.shared.pool(index).ok()
    }

    /// POOL_CREATE: creates a pool from `req` and its classes at
    /// `req.classes`, and writes back both.
    pub(crate) fn pool_create(&self, req: &mut uapi::PoolCreate) -> OpResult {
        if req.reserved0 != 0 {
            return Err(EINVAL.into());
        }
        uapi::check_reserved(&req.reserved)?;
        if req.nr_classes == 0 || req.nr_classes > uapi::POOL_MAX_CLASSES {
            return Err(EINVAL.into());
        }
        let n = req.nr_classes as usize;
        let size = core::mem::size_of::<uapi::PoolClass>();
        let slice = UserSlice::new(UserPtr::from_addr(req.classes as usize), n * size);
        let (mut reader, mut writer) = slice.reader_writer();
        let mut classes = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            classes.push(reader.read::<uapi::PoolClass>()?, GFP_KERNEL)?;
        }
        let data = &self.shared.data;
        // Creations are serialized with those of queues.
        let _serial = data.create.lock();
        // TODO(pool-index-reuse): an index is never reused, so a file creates at most
        // `MEMREG_MAX_POOLS` pools in its life.
        let index = self.shared.pools.lock().len();
        if index >= uapi::MAX_POOLS {
            return Err(ENOSPC.into());
        }
        let pool = Pool::new(self.shared.clone(), index as u32, req, &mut classes)?;
        for c in classes.iter() {
            writer.write(c)?;
        }
        req.pool = index as u32;
        req.map_bytes = pool.map_bytes as u64;
        // Known to the shrinker before anything can destroy it, which forgets it.
        Pool::register(&pool);
        // Room for every pool was reserved; creation is serialized, so this is `index`.
        if self
            .shared
            .pools
            .lock()
            .push_within_capacity(Some(pool.clone()))
            .is_err()
        {
            Pool::destroy(&pool);
            return Err(ENOSPC.into());
        }
        Ok(())
    }

    /// POOL_ALLOC: hands out buffers into the user array `req.bufs`.
    pub(crate) fn pool_alloc(&self, req: &mut uapi::PoolAlloc) -> OpResult {
        uapi::check_reserved(&req.reserved)?;
        if req.flags & !uapi::POOL_NO_FALLBACK != 0
            || req.count == 0
            || req.count > uapi::POOL_MAX_BATCH
            || req.timeout_ms > uapi::POOL_MAX_TIMEOUT_MS
        {
            return Err(EINVAL.into());
        }
        let pool = self.pool(req.pool).ok_or(EINVAL)?;
        // One buffer, the common case, without clearing room for a whole batch.
        if req.count == 1 {
            let mut one: [Buffer; 1] = uapi::zeroed();
            return Self::pool_alloc_into(&pool, req, &mut one);
        }
        let mut bufs: [Buffer; uapi::POOL_MAX_BATCH as usize] = uapi::zeroed();
        let want = bufs.get_mut(..req.count as usize).ok_or(EINVAL)?;
        Self::pool_alloc_into(&pool, req, want)
    }

    /// Hands out `want.len()` buffers of `pool` at most and copies them to
    /// `req.bufs` in one go.
    fn pool_alloc_into(
        pool: &Arc<Pool>,
        req: &mut uapi::PoolAlloc,
        want: &mut [Buffer],
    ) -> OpResult {
        let fallback = req.flags & uapi::POOL_NO_FALLBACK == 0;
        let n = Pool::alloc(pool, req.size, fallback, req.timeout_ms, want)?;
        let got = want.get(..n).ok_or(EINVAL)?;
        let bytes = kernel::transmute::AsBytes::as_bytes(got);
        let mut writer =
            UserSlice::new(UserPtr::from_addr(req.bufs as usize), bytes.len()).writer();
        if let Err(e) = writer.write_slice(bytes) {
            // The caller cannot learn them: they go back.
            let mut addrs = [0u64; uapi::POOL_MAX_BATCH as usize];
            for (a, b) in addrs.iter_mut().zip(got.iter()) {
                *a = b.addr;
            }
            let _ = Pool::free(pool, addrs.get(..n).unwrap_or(&[]));
            return Err(e.into());
        }
        req.count = n as u32;
        Ok(())
    }

    /// POOL_FREE: gives back the buffers whose addresses are at
    /// `req.addrs`.
    pub(crate) fn pool_free(&self, req: uapi::PoolFree) -> OpResult {
        uapi::check_reserved(&req.reserved)?;
        if req.count == 0 || req.count > uapi::POOL_MAX_BATCH {
            return Err(EINVAL.into());
        }
        let pool = self.pool(req.pool).ok_or(EINVAL)?;
        let n = req.count as usize;
        let mut one = [0u64; 1];
        let mut batch = [0u64; 0];
        let mut many;
        let addrs: &mut [u64] = if n == 1 {
            &mut one
        } else {
            many = [0u64; uapi::POOL_MAX_BATCH as usize];
            many.get_mut(..n).unwrap_or(&mut batch)
        };
        UserSlice::new(UserPtr::from_addr(req.addrs as usize), n * 8)
            .reader()
            .read_slice(kernel::transmute::AsBytes::as_bytes_mut(addrs))?;
        Pool::free(&pool, addrs)?;
        Ok(())
    }

    /// POOL_STATS: the counters of each class of pool `req.pool`.
    pub(crate) fn pool_stats(&self, req: &mut uapi::PoolInfo) -> OpResult {
        uapi::check_reserved(&req.reserved)?;
        let pool = self.pool(req.pool).ok_or(EINVAL)?;
        let n = pool.nr_classes().min(req.count as usize);
        let size = core::mem::size_of::<uapi::PoolStats>();
        let mut writer = UserSlice::new(UserPtr::from_addr(req.stats as usize), n * size).writer();
        for c in 0..n {
            writer.write(&pool.stats(c).ok_or(EINVAL)?)?;
        }
        req.count = pool.nr_classes() as u32;
        Ok(())
    }

    /// POOL_DESTROY: ends pool `req.pool` for good.
    pub(crate) fn pool_destroy(&self, req: uapi::PoolDestroy) -> OpResult {
        if req.reserved != 0 {
            return Err(EINVAL.into());
        }
        let pool = self
            .shared
            .pools
            .lock()
            .get_mut(req.pool as usize)
            .and_then(Option::take)
            .ok_or(EINVAL)?;
        Pool::destroy(&pool);
        Ok(())
    }

    /// The pools' counters, for fdinfo: `(pool, class, counters)`.
    pub(crate) fn pool_lines(&self, mut f: impl FnMut(u32, usize, &uapi::PoolStats)) {
        let pools: KVec<Arc<Pool>> = {
            let mut out = KVec::new();
            let pools = self.shared.pools.lock();
            if out.reserve(pools.len(), GFP_ATOMIC).is_ok() {
                for p in pools.iter().flatten() {
                    let _ = out.push_within_capacity(p.clone());
                }
            }
            out
        };
        for p in pools.iter() {
            for c in 0..p.nr_classes() {
                if let Some(s) = p.stats(c) {
                    f(p.index, c, &s);
                }
            }
        }
    }

    /// Attachments this context holds.
    pub(crate) fn peer_count(&self) -> usize {
        self.shared.peers.lock().len()
    }

    /// QUEUE_STATS: the data path's counters.
    pub(crate) fn queue_stats(&self) -> uapi::QueueStats {
        self.shared.data.stats()
    }

    /// QUEUE_STATS.
    pub(crate) fn queue_stats_ioctl(&self) -> OpResult<uapi::QueueStats> {
        Ok(self.queue_stats())
    }

    /// GET_VERSION: the ABI version this module implements.
    pub(crate) fn abi_version(&self) -> OpResult<u32> {
        Ok(uapi::ABI_VERSION)
    }

    /// GLOBAL_STATS: the module's counters.
    pub(crate) fn global_stats(&self) -> OpResult<uapi::GlobalStats> {
        Ok(crate::stats::global())
    }

    /// STATS: the context's counters.
    pub(crate) fn stats_ioctl(&self) -> OpResult<uapi::Stats> {
        Ok(self.stats().to_abi())
    }

    /// GET_CACHE: the context's cache configuration.
    pub(crate) fn get_cache(&self) -> OpResult<uapi::CacheConfig> {
        Ok(self.cache_config())
    }

    /// FLUSH: ends every parked registration; their pages are uncharged when
    /// this returns.
    pub(crate) fn flush(&self, req: &mut uapi::Flush) -> OpResult {
        uapi::check_reserved(&req.reserved)?;
        let (evicted, pages) = self.shared.evict_while(uapi::EVICT_FLUSH, |_| false);
        *req = uapi::zeroed();
        req.evicted = evicted;
        req.pages = pages;
        Ok(())
    }

    /// GET_CACHE: the context's cache configuration.
    pub(crate) fn cache_config(&self) -> uapi::CacheConfig {
        self.shared.table.lock().config.to_abi()
    }

    /// SET_CACHE: replaces the context's cache configuration and ends the
    /// parked registrations past its limits.
    pub(crate) fn set_cache_config(&self, req: uapi::CacheConfig) -> OpResult {
        let config = CacheConfig::from_abi(&req)?;
        self.shared.table.lock().config = config;
        if !config.parking {
            self.shared.evict_while(uapi::EVICT_FLUSH, |_| false);
        } else {
            self.shared.evict_while(uapi::EVICT_PARK_LIMIT, |t| {
                t.stats.parked <= config.max_parked
                    && t.stats.parked_pages <= config.max_parked_pages
            });
        }
        // The idle eviction follows the new delay.
        cancel_delayed_sync::<_, { work_id::IDLE }>(&self.shared);
        ContextShared::arm_idle(&self.shared, config.idle_ms);
        Ok(())
    }

    /// QUERY: describes the registration whose local key is `req.key`.
    pub(crate) fn query(&self, req: &mut uapi::Query) -> OpResult {
        uapi::check_reserved(&req.reserved)?;
        let (registration, refcount, parked) = {
            let t = self.shared.table.lock();
            let r = t.get(req.key).ok_or(ENOENT)?.clone();
            let refs = r.refs(&t);
            let parked = r.is_parked(&t);
            (r, refs, parked)
        };
        let info = registration.info;
        let key = req.key;
        *req = uapi::zeroed();
        req.key = key;
        req.addr = info.addr;
        req.length = info.length;
        req.access = info.access;
        if registration.is_live() {
            req.state |= if registration.is_suspended() {
                uapi::STATE_SUSPENDED
            } else {
                uapi::STATE_VALID
            };
        }
        if parked {
            req.state |= uapi::STATE_PARKED;
        }
        req.pages = info.npages as u64;
        req.extents = registration.extents();
        req.refcount = refcount;
        Ok(())
    }

    /// STATS: the context's counters.
    pub(crate) fn stats(&self) -> Stats {
        self.shared.table.lock().stats.clone()
    }

    /// COPY: moves data between a user buffer and a registered range, through
    /// the registration's translation entries only.
    ///
    /// Data moves in order, [`transfer::COPY_CHUNK`] bytes at a time. When the user
    /// buffer faults (`EFAULT`), the registration ends (`ENOENT`) or a fatal
    /// signal arrives (`EINTR`) part way, the chunks before the failing one
    /// have moved and nothing after it has; the failing chunk itself may have
    /// moved in part when copying to the user buffer.
    pub(crate) fn copy(&self, req: uapi::Copy) -> OpResult {
        uapi::check_reserved(&[req.reserved])?;
        if req.flags != 0
            || (req.direction != uapi::COPY_TO_REGION && req.direction != uapi::COPY_FROM_REGION)
        {
            return Err(EINVAL.into());
        }
        let registration = self.shared.table.lock().get_target(req.key).ok_or(ENOENT)?;
        let to_registration = req.direction == uapi::COPY_TO_REGION;
        let need = if to_registration {
            uapi::ACCESS_LOCAL_WRITE
        } else {
            uapi::ACCESS_LOCAL_READ
        };
        if registration.info.access & need == 0 {
            return Err(EACCES.into());
        }
        let end = req.offset.checked_add(req.length).ok_or(EINVAL)?;
        if end > registration.info.length {
            return Err(EINVAL.into());
        }
        let length = usize::try_from(req.length).map_err(|_| EINVAL)?;
        let buf = usize::try_from(req.buf).map_err(|_| EFAULT)?;
        Ok(transfer::copy_user(
            &registration,
            req.offset,
            buf,
            length,
            to_registration,
        )?)
    }
}

impl Drop for Context {
    /// Releases the file: ends every registration, tears down those still
    /// awaiting deferred teardown and cancels the deferred work, so nothing of
    /// this context remains.
    fn drop(&mut self) {
        // The worker stops (a COPY in progress gives up at its next step) and is not queued
        // again: no doorbell can come any more.
        self.shared.data.closing.store(true, Relaxed);
        // No other context's worker wakes this one's from now on: its receiving queues close,
        // and its queues leave the receiving queues they were connected to (both under the
        // locks those wake-ups happen under).
        self.shared.data.close_queues(&self.shared);
        cancel_sync::<_, { work_id::WORKER }>(&self.shared);
        // The timer may have queued the worker again before it was cancelled.
        cancel_delayed_sync::<_, { work_id::RNR_TIMER }>(&self.shared);
        cancel_sync::<_, { work_id::WORKER }>(&self.shared);
        // The pools go: their chunks end and their pages leave the mapping (when the address
        // space is still there) before everything else ends.
        while let Some(pool) = self.shared.take_pool() {
            Pool::destroy(&pool);
        }
        // The handles' references on other contexts go (the cycle of two files attached to
        // each other breaks here), and what the worker kept of waiting SENDs.
        let peers = self.shared.peers.lock().take_all();
        drop(peers);
        self.shared.data.clear_worker();
        cancel_delayed_sync::<_, { work_id::IDLE }>(&self.shared);
        loop {
            let ended = {
                let mut t = self.shared.table.lock();
                match t.any() {
                    Some(seq) => Registration::unpublish(&mut t, seq),
                    None => break,
                }
            };
            if let Some(r) = ended {
                r.teardown();
            }
            cond_resched();
        }
        // Every notifier is removed now, so nothing is queued for teardown or revalidation any
        // more. The queued entries hold references on the context through their registrations.
        loop {
            let next = self.shared.table.lock().next_suspended();
            if next.is_none() {
                break;
            }
        }
        self.shared.drain_deferred();
        cancel_sync::<_, { work_id::MAINTENANCE }>(&self.shared);
        self.shared.drain_deferred();
        // The shadow's references on registrations would keep the context alive.
        let shadowed = self.shared.data.shadow.lock().clear();
        drop(shadowed);
        GLOBAL_CONTEXTS.fetch_sub(1, Relaxed);
    }
}
