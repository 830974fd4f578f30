// SPDX-License-Identifier: GPL-2.0

//! The registration cache of one open file: its registrations, how they are
//! found, reused, parked and ended, and what user space sees of them without
//! a system call (state words and the event ring).
//!
//! - [`inner`]: the fields under the cache's lock ([`CacheInner`]);
//! - [`register`]: REGISTER, its undoing and DEREGISTER;
//! - [`evict`]: eviction of parked registrations (limits, idle, FLUSH,
//!   SET_CACHE);
//! - [`state`]: the state words and the event ring;
//! - [`registration`], [`info`], [`invalidate`], [`target`]: one
//!   registration's life, what it covers, how it follows the memory under
//!   it, and how bytes move through it;
//! - [`parked`]: the module-wide list of parked registrations;
//! - [`shadow`]: the shadow translation cache the data path resolves keys
//!   through; [`slots`]: the state words; [`key`]: the keys.
//!
//! # Deferred work
//!
//! The notifier callback cannot unpin pages, remove a notifier or look at
//! page tables, so it puts the registration it ended on the pending list (or
//! the one it suspended on the list awaiting revalidation) and defers a job
//! to the cache's maintenance work item ([`Cache::defer`]): one item, a bit
//! per job, queued only when the word of pending jobs goes from zero to
//! non-zero, so a burst of invalidations costs one run. A second, delayed,
//! item ends parked registrations once the file has been idle for its
//! `idle_ms`, and the module's shrinker ends them under memory pressure
//! (leaving the unpinning to the maintenance item). [`Cache::release`]
//! cancels both items and tears down what is still pending itself, so
//! nothing of the cache outlives the file.

mod evict;
pub(crate) mod info;
pub(crate) mod inner;
mod invalidate;
pub(crate) mod key;
pub(crate) mod parked;
pub(crate) mod register;
pub(crate) mod registration;
mod shadow;
mod slots;
mod state;
pub(crate) mod target;

use crate::{
    error::OpResult,
    events::Waiters,
    stats::{Stats, GLOBAL_CONTEXTS_ALIVE},
    uapi,
};
use inner::{CacheConfig, CacheInner};
use kernel::{
    impl_has_delayed_work, impl_has_work,
    mm::Mm,
    new_delayed_work, new_spinlock, new_work,
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Full, Relaxed},
        Arc, SpinLock,
    },
    task::resched::cond_resched,
    time::jiffies,
    workqueue::{
        cancel::{cancel_delayed_sync, cancel_sync},
        dfl, DelayedWork, Work, WorkItem,
    },
};
use registration::{Parts, Refused, Registration};
use shadow::Shadow;
use target::Target;

/// The work items of a cache, by ID.
pub(crate) mod work_id {
    /// The maintenance jobs of [`super::job`], on `system_dfl`.
    pub(crate) const MAINTENANCE: u64 = 0;
    /// Ends parked registrations once the file has been idle long enough
    /// (delayed, on `system_dfl`).
    pub(crate) const IDLE: u64 = 1;
}

/// The maintenance jobs, bits of the word [`Cache::defer`] sets: the work
/// item is queued only when the word goes from zero to non-zero, and a run
/// takes every bit at once (Binder's `defer_work`).
pub(crate) mod job {
    /// Tear down the registrations that ended.
    pub(crate) const TEARDOWN: u32 = 1 << 0;
    /// Revalidate the registrations suspended since the last run.
    pub(crate) const REVALIDATE: u32 = 1 << 1;
}

/// The registration cache of one open file.
#[pin_data(PinnedDrop)]
pub(crate) struct Cache {
    /// The address space the cache serves.
    mm: ARef<Mm>,
    /// The cache's lock, level 2 of the crate's lock order: everything
    /// [`CacheInner`] holds, and each registration's references
    /// (`LockedBy` it).
    #[pin]
    inner: SpinLock<CacheInner>,
    /// The shadow translation cache, level 3: a registration leaves it under
    /// `inner`.
    #[pin]
    shadow: SpinLock<Shadow>,
    /// The maintenance jobs pending: bits of [`job`].
    pending: Atomic<u32>,
    /// Runs the pending maintenance jobs.
    #[pin]
    work: Work<Cache, { work_id::MAINTENANCE }>,
    /// Ends parked registrations once the file has been idle long enough.
    #[pin]
    idle_work: DelayedWork<Cache, { work_id::IDLE }>,
    /// The jiffies counter at the file's last ioctl.
    last_use: Atomic<usize>,
    /// The next key sequence number.
    next_seq: Atomic<u64>,
    /// Those waiting in `poll` for events.
    waiters: Arc<Waiters>,
}

#[pinned_drop]
impl PinnedDrop for Cache {
    fn drop(self: Pin<&mut Self>) {
        GLOBAL_CONTEXTS_ALIVE.fetch_sub(1, Relaxed);
    }
}

impl_has_work! {
    impl HasWork<Self, { work_id::MAINTENANCE }> for Cache { self.work }
}
impl_has_delayed_work! {
    impl HasDelayedWork<Self, { work_id::IDLE }> for Cache { self.idle_work }
}

impl WorkItem<{ work_id::MAINTENANCE }> for Cache {
    type Pointer = Arc<Cache>;

    fn run(this: Arc<Cache>) {
        // Every bit at once: a job deferred from here on queues the item again.
        let jobs = this.pending.xchg(0, Full);
        if jobs & job::TEARDOWN != 0 {
            this.drain_deferred();
        }
        if jobs & job::REVALIDATE != 0 {
            this.revalidate_suspended();
        }
    }
}

impl WorkItem<{ work_id::IDLE }> for Cache {
    type Pointer = Arc<Cache>;

    fn run(this: Arc<Cache>) {
        Cache::idle_check(this);
    }
}

impl Cache {
    /// Creates the cache of a file opened in address space `mm`, with
    /// `config`; events wake `waiters`.
    pub(crate) fn new(mm: &Mm, config: CacheConfig, waiters: Arc<Waiters>) -> Result<Arc<Self>> {
        let cache = Arc::pin_init(
            try_pin_init!(Self {
                mm: ARef::from(mm),
                inner <- new_spinlock!(CacheInner::new(config), "memreg::Cache::inner"),
                shadow <- new_spinlock!(Shadow::new(), "memreg::Cache::shadow"),
                pending: Atomic::new(0),
                work <- new_work!("memreg::Cache::work"),
                idle_work <- new_delayed_work!("memreg::Cache::idle_work"),
                last_use: Atomic::new(jiffies::now()),
                next_seq: Atomic::new(1),
                waiters,
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        GLOBAL_CONTEXTS_ALIVE.add(1, Relaxed);
        Ok(cache)
    }

    /// The address space the cache serves.
    pub(crate) fn mm(&self) -> &Mm {
        &self.mm
    }

    /// A new key sequence number.
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Relaxed)
    }

    /// Defers the maintenance `jobs` (bits of [`job`]) to the cache's work.
    /// Neither allocates nor sleeps: callable from a notifier callback and
    /// under the cache's lock.
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
            let next = self.inner.lock().next_deferred();
            let Some(registration) = next else {
                break;
            };
            registration.teardown();
            cond_resched();
        }
    }

    /// Revalidates every registration suspended since the last run: those
    /// whose pages are in place resume, the others end. Process context.
    fn revalidate_suspended(&self) {
        loop {
            let next = self.inner.lock().next_suspended();
            let Some(registration) = next else {
                break;
            };
            // One that invalidations keep restarting stays suspended; its next use looks again.
            let _ = Registration::revalidate(&registration);
            cond_resched();
        }
    }

    /// Records a use of the file, for idle eviction: a read of the jiffies
    /// counter and at most one store per tick, no clock source read.
    pub(crate) fn touch(&self) {
        let now = jiffies::now();
        if self.last_use.load(Relaxed) != now {
            self.last_use.store(now, Relaxed);
        }
    }

    /// The registration data may move through by local key `lkey` (see
    /// [`CacheInner::get_target`]).
    pub(crate) fn get_target(&self, lkey: u64) -> Result<Target> {
        self.inner.lock().get_target(lkey)
    }

    /// The registration a peer names by remote key `rkey` (see
    /// [`CacheInner::get_remote`]).
    pub(crate) fn get_remote(&self, rkey: u64) -> Option<Target> {
        self.inner.lock().get_remote(rkey)
    }

    /// Resolves local key `lkey` for the data path, through the shadow
    /// translation cache first; the flag says whether the shadow had it.
    pub(crate) fn resolve(&self, lkey: u64) -> Result<(Target, bool)> {
        {
            // Under the shadow's lock: parking takes a registration out of it before it moves
            // to a new generation.
            let shadow = self.shadow.lock();
            if let Some(r) = shadow.get(lkey) {
                return Ok((Target::new(r.clone()), true));
            }
        }
        let (found, old) = {
            let t = self.inner.lock();
            let target = t.get_target(lkey)?;
            // Under the cache's lock, so that a registration that leaves the table (or is
            // parked) also leaves the shadow.
            let old = self.shadow.lock().insert(target.registration().clone());
            (target, old)
        };
        // The entry it replaced is dropped outside the locks.
        drop(old);
        Ok((found, false))
    }

    /// QUERY: describes the registration whose local key is `req.key`.
    pub(crate) fn query(&self, req: &mut uapi::Query) -> OpResult {
        uapi::check_reserved(&req.reserved)?;
        let (registration, refcount, parked) = {
            let t = self.inner.lock();
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

    /// The cache's counters.
    pub(crate) fn stats(&self) -> Stats {
        self.inner.lock().stats.clone()
    }

    /// The cache's configuration.
    pub(crate) fn config(&self) -> CacheConfig {
        self.inner.lock().config
    }

    /// Publishes the registration of a pool's chunk, pinned by the pool, in
    /// the memory of `parts`; see [`Registration::publish`].
    pub(crate) fn publish_chunk(
        &self,
        registration: &Arc<Registration>,
        seq: u64,
        parts: Parts,
    ) -> core::result::Result<(), Refused> {
        Registration::publish(registration, &mut self.inner.lock(), seq, u64::MAX, parts)
    }

    /// Takes the registration of a pool's chunk out of the cache, for its
    /// teardown.
    pub(crate) fn end_chunk(&self, seq: u64) -> Option<Arc<Registration>> {
        Registration::unpublish(&mut self.inner.lock(), seq)
    }

    /// Ends every registration of the cache and tears it down, tears down
    /// those still awaiting teardown and cancels the cache's work, so that
    /// nothing of it remains: the release of the file, after the data path
    /// and the pools stopped.
    pub(crate) fn release(this: &Arc<Self>) {
        cancel_delayed_sync::<_, { work_id::IDLE }>(this);
        loop {
            let ended = {
                let mut t = this.inner.lock();
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
        // more. The queued entries hold references on the cache through their registrations.
        loop {
            let next = this.inner.lock().next_suspended();
            if next.is_none() {
                break;
            }
        }
        this.drain_deferred();
        cancel_sync::<_, { work_id::MAINTENANCE }>(this);
        this.drain_deferred();
        // The shadow's references on registrations would keep the cache alive.
        let shadowed = this.shadow.lock().clear();
        drop(shadowed);
    }
}
