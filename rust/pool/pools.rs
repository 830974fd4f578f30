// SPDX-License-Identifier: GPL-2.0

//! The pools of one open file ([`Pools`]): their indexes, the ioctls that
//! create, use and destroy them, and the reaping of pools whose mapping
//! went; and the module-wide list of live pools the shrinker asks for free
//! chunks.

use super::{Buffer, Pool};
use crate::{cache::Cache, error::OpResult, stats::GLOBAL_POOL_RECLAIMABLE, uapi};
use kernel::{
    impl_has_work, new_mutex, new_spinlock, new_work,
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
    sync::{atomic::Relaxed, Arc, Mutex, SpinLock},
    transmute::AsBytes,
    uaccess::{UserPtr, UserSlice},
    workqueue::{cancel::cancel_sync, dfl, Work, WorkItem},
};

kernel::lazy_global_lock! {
    /// The live pools of every file, for the shrinker, by address. Level 6:
    /// a pool's `state` is taken under it, nothing else.
    static REGISTRY: SpinLock<Option<RBTree<usize, Arc<Pool>>>> = None;
}

/// Makes `pool` known to the shrinker, in the memory of `node`. Neither
/// allocates nor sleeps.
pub(super) fn register(node: RBTreeNodeReservation<usize, Arc<Pool>>, pool: Arc<Pool>) {
    let key = Arc::as_ptr(&pool) as usize;
    let _ = REGISTRY
        .lock()
        .get_or_insert_with(RBTree::new)
        .insert(node.into_node(key, pool));
}

/// Forgets `pool` (its end). Neither allocates nor sleeps.
pub(super) fn unregister(pool: &Arc<Pool>) -> Option<Arc<Pool>> {
    let key = Arc::as_ptr(pool) as usize;
    REGISTRY.lock().as_mut()?.remove(&key)
}

/// Pages of the pools' free chunks, module-wide: what [`press_all`] may
/// give back. Reads an atomic only.
pub(crate) fn reclaimable_pages() -> u64 {
    GLOBAL_POOL_RECLAIMABLE.load(Relaxed)
}

/// Asks every pool with free chunks for them, for the module's shrinker:
/// their work gives them back (it needs `mmap_lock`). Neither allocates nor
/// sleeps.
pub(crate) fn press_all() {
    if reclaimable_pages() == 0 {
        return;
    }
    let registry = REGISTRY.lock();
    if let Some(pools) = registry.as_ref() {
        for (_, pool) in pools.iter() {
            if pool.reclaimable.load(Relaxed) > 0 {
                Pool::press(pool);
            }
        }
    }
}

/// The pools of one open file.
#[pin_data]
pub(crate) struct Pools {
    /// The file's cache, which the chunks' registrations join.
    cache: Arc<Cache>,
    /// The pools by index; a destroyed one leaves its index empty. Level 6
    /// of the lock order (a leaf).
    #[pin]
    list: SpinLock<KVec<Option<Arc<Pool>>>>,
    /// Serializes the creation of pools. Level 1.
    #[pin]
    create: Mutex<()>,
    /// Destroys the pools whose mapping went.
    #[pin]
    reap: Work<Pools>,
}

impl_has_work! {
    impl HasWork<Self> for Pools { self.reap }
}

impl WorkItem for Pools {
    type Pointer = Arc<Pools>;

    fn run(this: Arc<Pools>) {
        this.reap_dead();
    }
}

impl Pools {
    /// No pool yet; room for `MEMREG_MAX_POOLS` is reserved.
    pub(crate) fn new(cache: Arc<Cache>) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                cache,
                list <- new_spinlock!(
                    KVec::with_capacity(uapi::MAX_POOLS, GFP_KERNEL_ACCOUNT)?,
                    "memreg::Pools::list"
                ),
                create <- new_mutex!((), "memreg::Pools::create"),
                reap <- new_work!("memreg::Pools::reap"),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Queues the reaping of dead pools. Neither allocates nor sleeps:
    /// callable from a pool's notifier callback.
    pub(super) fn defer_reap(this: &Arc<Self>) {
        // Already queued: the queued run sees this pool too.
        let _ = dfl::system_dfl().enqueue::<_, 0>(this.clone());
    }

    /// The cache the chunks' registrations join.
    pub(super) fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// Destroys the pools whose mapping went. Process context.
    fn reap_dead(&self) {
        loop {
            let dead = {
                let mut list = self.list.lock();
                list.iter_mut()
                    .find(|p| p.as_ref().is_some_and(|p| p.is_dead()))
                    .and_then(Option::take)
            };
            let Some(pool) = dead else {
                break;
            };
            Pool::destroy(&pool);
        }
    }

    /// The pool of index `index`; `EINVAL` for none.
    pub(crate) fn get(&self, index: u32) -> OpResult<Arc<Pool>> {
        Ok(self
            .list
            .lock()
            .get(index as usize)
            .and_then(Option::clone)
            .ok_or(EINVAL)?)
    }

    /// POOL_CREATE: creates a pool from `req` and its classes at
    /// `req.classes`, and writes back both.
    pub(crate) fn create(this: &Arc<Self>, req: &mut uapi::PoolCreate) -> OpResult {
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
        let _serial = this.create.lock();
        // TODO(pool-index-reuse): an index is never reused, so a file creates at most
        // `MEMREG_MAX_POOLS` pools in its life.
        let index = this.list.lock().len();
        if index >= uapi::MAX_POOLS {
            return Err(ENOSPC.into());
        }
        let pool = Pool::new(this.clone(), index as u32, req, &mut classes)?;
        for c in classes.iter() {
            writer.write(c)?;
        }
        req.pool = index as u32;
        req.map_bytes = pool.map_bytes as u64;
        // Known to the shrinker before anything can destroy it, which forgets it.
        Pool::register(&pool);
        // Room for every pool was reserved; creation is serialized, so this is `index`.
        if this
            .list
            .lock()
            .push_within_capacity(Some(pool.clone()))
            .is_err()
        {
            Pool::destroy(&pool);
            return Err(ENOSPC.into());
        }
        Ok(())
    }

    /// POOL_ALLOC: hands out buffers into the user array `req.bufs`;
    /// returns how many.
    pub(crate) fn alloc(&self, req: &uapi::PoolAllocReq) -> OpResult<u32> {
        let pool = self.get(req.pool)?;
        // One buffer, the common case, without clearing room for a whole batch.
        if req.count == 1 {
            let mut one: [Buffer; 1] = uapi::zeroed();
            return Self::alloc_into(&pool, req, &mut one);
        }
        let mut bufs: [Buffer; uapi::POOL_MAX_BATCH as usize] = uapi::zeroed();
        let want = bufs.get_mut(..req.count).ok_or(EINVAL)?;
        Self::alloc_into(&pool, req, want)
    }

    /// Hands out `want.len()` buffers of `pool` at most and copies them to
    /// `req.bufs` in one go; returns how many.
    fn alloc_into(
        pool: &Arc<Pool>,
        req: &uapi::PoolAllocReq,
        want: &mut [Buffer],
    ) -> OpResult<u32> {
        let n = Pool::alloc(pool, req.size, req.fallback, req.timeout_ms, want)?;
        let got = want.get(..n).ok_or(EINVAL)?;
        let bytes = got.as_bytes();
        let mut writer = UserSlice::new(UserPtr::from_addr(req.bufs), bytes.len()).writer();
        if let Err(e) = writer.write_slice(bytes) {
            // The caller cannot learn them: they go back.
            let mut addrs = [0u64; uapi::POOL_MAX_BATCH as usize];
            for (a, b) in addrs.iter_mut().zip(got.iter()) {
                *a = b.addr;
            }
            let _ = Pool::free(pool, addrs.get(..n).unwrap_or(&[]));
            return Err(e.into());
        }
        Ok(n as u32)
    }

    /// POOL_FREE: gives back the buffers whose addresses are at
    /// `req.addrs`.
    pub(crate) fn free(&self, req: &uapi::PoolFreeReq) -> OpResult {
        let pool = self.get(req.pool)?;
        let n = req.count;
        let mut one = [0u64; 1];
        let mut batch = [0u64; 0];
        let mut many;
        let addrs: &mut [u64] = if n == 1 {
            &mut one
        } else {
            many = [0u64; uapi::POOL_MAX_BATCH as usize];
            many.get_mut(..n).unwrap_or(&mut batch)
        };
        UserSlice::new(UserPtr::from_addr(req.addrs), n * 8)
            .reader()
            .read_slice(AsBytes::as_bytes_mut(addrs))?;
        Pool::free(&pool, addrs)?;
        Ok(())
    }

    /// POOL_STATS: the counters of each class of pool `req.pool`; returns
    /// the pool's number of classes.
    pub(crate) fn stats(&self, req: &uapi::PoolStatsReq) -> OpResult<u32> {
        let pool = self.get(req.pool)?;
        let n = pool.nr_classes().min(req.count);
        let size = core::mem::size_of::<uapi::PoolStats>();
        let mut writer = UserSlice::new(UserPtr::from_addr(req.stats), n * size).writer();
        for c in 0..n {
            writer.write(&pool.stats(c).ok_or(EINVAL)?)?;
        }
        Ok(pool.nr_classes() as u32)
    }

    /// POOL_RING: describes the rings of pool `req.pool` (creating them on
    /// the first call) into the user array `req.classes`; returns the
    /// pool's number of classes and the mapping's length.
    pub(crate) fn rings(&self, req: &uapi::PoolRingReq) -> OpResult<(u32, u64)> {
        let pool = self.get(req.pool)?;
        let n = pool.nr_classes().min(req.count);
        let mut out: [uapi::PoolRingClass; uapi::POOL_MAX_CLASSES as usize] = uapi::zeroed();
        let filled = out.get_mut(..n).ok_or(EINVAL)?;
        let bytes = Pool::rings(&pool, filled)?;
        let data = AsBytes::as_bytes(&*filled);
        UserSlice::new(UserPtr::from_addr(req.classes), data.len())
            .writer()
            .write_slice(data)?;
        Ok((pool.nr_classes() as u32, bytes as u64))
    }

    /// Maps the rings of pool `index` into `vma`; see [`Pool::mmap_rings`].
    /// `EINVAL` for no pool.
    pub(crate) fn mmap_rings(&self, index: u32, vma: &kernel::mm::virt::VmaNew) -> Result {
        let pool = self.get(index)?;
        Pool::mmap_rings(&pool, vma)
    }

    /// POOL_DESTROY: ends pool `req.pool` for good.
    pub(crate) fn destroy(&self, req: &uapi::PoolDestroyReq) -> OpResult {
        let pool = self
            .list
            .lock()
            .get_mut(req.pool as usize)
            .and_then(Option::take)
            .ok_or(EINVAL)?;
        Pool::destroy(&pool);
        Ok(())
    }

    /// The pools' counters, for fdinfo: `(pool, class, counters)`.
    pub(crate) fn lines(&self, mut f: impl FnMut(u32, usize, &uapi::PoolStats)) {
        let pools: KVec<Arc<Pool>> = {
            let mut out = KVec::new();
            let list = self.list.lock();
            if out.reserve(list.len(), GFP_ATOMIC).is_ok() {
                for p in list.iter().flatten() {
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

    /// Maps pool `index` into `vma`; see [`Pool::mmap`]. `EINVAL` for none.
    pub(crate) fn mmap(&self, index: u32, vma: &kernel::mm::virt::VmaNew) -> Result {
        let pool = self.get(index)?;
        Pool::mmap(&pool, vma)
    }

    /// Destroys every pool (the file's release): their chunks end and their
    /// pages leave the mapping (when the address space is still there)
    /// before anything else of the file ends. Process context.
    pub(crate) fn release(this: &Arc<Self>) {
        loop {
            let next = this.list.lock().iter_mut().find_map(Option::take);
            let Some(pool) = next else {
                break;
            };
            Pool::destroy(&pool);
        }
        cancel_sync::<_, 0>(this);
        // A pool killed meanwhile may have queued the reaping again: nothing is left for it.
        cancel_sync::<_, 0>(this);
    }
}
