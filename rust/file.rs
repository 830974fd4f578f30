// SPDX-License-Identifier: GPL-2.0

//! One open file of `/dev/memreg`: it creates the subsystems, routes the
//! calls of [`crate::ioctl`], `mmap` and `poll` to them, and tears them down
//! in one written order ([`Context`]'s `Drop`). It holds no state of its own
//! besides them.

use crate::{
    cache::{inner::CacheConfig, Cache},
    datapath::{transfer, DataPath},
    error::OpResult,
    events::Waiters,
    pool::Pools,
    stats::{self, Stats, GLOBAL_CONTEXTS},
    uapi::{self, Reply},
};
use kernel::{
    fs::{File, LocalFile},
    miscdevice::MiscDeviceRegistration,
    mm::{shared_pages::vma_pgoff, virt::VmaNew},
    page::PAGE_SIZE,
    prelude::*,
    sync::{atomic::Relaxed, poll::PollTable, Arc},
};

/// One open file of `/dev/memreg`, bound to the address space of the
/// process that opened it.
pub(crate) struct Context {
    /// The registration cache.
    cache: Arc<Cache>,
    /// The buffer pools.
    pools: Arc<Pools>,
    /// The rings, the worker and the peers.
    data: Arc<DataPath>,
}

impl Context {
    /// Creates a context bound to the calling process's address space.
    pub(crate) fn new() -> Result<Self> {
        let current = kernel::current!();
        let mm = current.mm().ok_or(EINVAL)?;
        let waiters = Waiters::new()?;
        let cache = Cache::new(mm, crate::default_cache_config(), waiters.clone())?;
        let pools = Pools::new(cache.clone())?;
        let data = DataPath::new(cache.clone(), pools.clone(), waiters)?;
        GLOBAL_CONTEXTS.add(1, Relaxed);
        Ok(Self { cache, pools, data })
    }

    /// Records a use of the file, for idle eviction.
    pub(crate) fn touch(&self) {
        self.cache.touch();
    }

    /// Fails with `EPERM` unless the caller runs in the file's address
    /// space: a child that inherited the file, or a process it was passed to,
    /// cannot use it.
    pub(crate) fn check_owner(&self) -> Result {
        let current = kernel::current!();
        match current.mm() {
            Some(mm) if core::ptr::eq(mm.as_raw(), self.cache.mm().as_raw()) => Ok(()),
            _ => Err(EPERM),
        }
    }

    /// GET_VERSION: the ABI version this module implements.
    pub(crate) fn abi_version(&self) -> OpResult<u32> {
        Ok(uapi::ABI_VERSION)
    }

    /// GLOBAL_STATS: the module's counters.
    pub(crate) fn global_stats(&self) -> OpResult<uapi::GlobalStats> {
        Ok(stats::global())
    }

    /// REGISTER; the registration is undone when its keys cannot reach the
    /// caller.
    pub(crate) fn register_ioctl(
        &self,
        mut req: uapi::Register,
        mut reply: Reply<'_, uapi::Register>,
    ) -> OpResult {
        let done = Cache::register(&self.cache, &mut req)?;
        if let Err(e) = reply.send(&req) {
            Cache::undo_register(&self.cache, &done);
            return Err(e.into());
        }
        Ok(())
    }

    /// DEREGISTER.
    pub(crate) fn deregister(&self, req: uapi::Deregister) -> OpResult {
        uapi::check_reserved(&[req.reserved])?;
        Cache::deregister_key(&self.cache, req.key)
    }

    /// QUERY.
    pub(crate) fn query(&self, req: &mut uapi::Query) -> OpResult {
        self.cache.query(req)
    }

    /// STATS: the file's counters.
    pub(crate) fn stats_ioctl(&self) -> OpResult<uapi::Stats> {
        Ok(self.cache.stats().to_abi())
    }

    /// The file's counters, for fdinfo.
    pub(crate) fn stats(&self) -> Stats {
        self.cache.stats()
    }

    /// COPY: moves data between a user buffer and a registered range, through
    /// the registration's translation entries only (see
    /// [`transfer::copy_user`]).
    pub(crate) fn copy(&self, req: uapi::Copy) -> OpResult {
        uapi::check_reserved(&[req.reserved])?;
        if req.flags != 0
            || (req.direction != uapi::COPY_TO_REGION && req.direction != uapi::COPY_FROM_REGION)
        {
            return Err(EINVAL.into());
        }
        let registration = self.cache.get_target(req.key).ok_or(ENOENT)?;
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

    /// GET_CACHE.
    pub(crate) fn get_cache(&self) -> OpResult<uapi::CacheConfig> {
        Ok(self.cache.config().to_abi())
    }

    /// The cache configuration, for fdinfo.
    pub(crate) fn cache_config(&self) -> CacheConfig {
        self.cache.config()
    }

    /// SET_CACHE.
    pub(crate) fn set_cache_config(&self, req: uapi::CacheConfig) -> OpResult {
        Cache::set_cache_config(&self.cache, req)
    }

    /// FLUSH.
    pub(crate) fn flush(&self, req: &mut uapi::Flush) -> OpResult {
        self.cache.flush(req)
    }

    /// EVENTS_SETUP.
    pub(crate) fn events_setup(
        &self,
        req: uapi::EventsSetup,
        mut reply: Reply<'_, uapi::EventsSetup>,
    ) -> OpResult {
        self.cache.events_setup(req, |r| reply.send(r))
    }

    /// EVENTS_RESYNC.
    pub(crate) fn events_resync(&self, req: &mut uapi::EventsResync) -> OpResult {
        self.cache.events_resync(req)
    }

    /// QUEUE_CREATE.
    pub(crate) fn queue_create(
        &self,
        req: uapi::QueueCreate,
        mut reply: Reply<'_, uapi::QueueCreate>,
    ) -> OpResult {
        self.data.queue_create(req, |r| reply.send(r))
    }

    /// DOORBELL.
    pub(crate) fn doorbell(&self, req: uapi::Doorbell) -> OpResult {
        DataPath::doorbell(&self.data, req)
    }

    /// QUEUE_STATS.
    pub(crate) fn queue_stats_ioctl(&self) -> OpResult<uapi::QueueStats> {
        Ok(self.data.stats())
    }

    /// PEER_ATTACH: attaches the data path of the memreg file behind
    /// descriptor `req.fd`. `EBADF` for a descriptor that is not open,
    /// `EINVAL` for a file that is not memreg's.
    pub(crate) fn peer_attach(
        &self,
        req: uapi::PeerAttach,
        mut reply: Reply<'_, uapi::PeerAttach>,
    ) -> OpResult {
        uapi::check_reserved(&req.reserved)?;
        let fd = u32::try_from(req.fd).map_err(|_| EBADF)?;
        let peer = {
            let file = LocalFile::fget(fd).map_err(|_| EBADF)?;
            MiscDeviceRegistration::<Context>::device_of(&file)
                .ok_or(EINVAL)?
                .data
                .clone()
        };
        self.data.peer_attach(req, peer, |r| reply.send(r))
    }

    /// PEER_DETACH.
    pub(crate) fn peer_detach(&self, req: uapi::PeerDetach) -> OpResult {
        DataPath::peer_detach(&self.data, req)
    }

    /// PEER_REVOKE.
    pub(crate) fn peer_revoke(&self) -> OpResult {
        self.data.peer_revoke()
    }

    /// QUEUE_CONNECT.
    pub(crate) fn queue_connect(&self, req: uapi::QueueConnect) -> OpResult {
        DataPath::queue_connect(&self.data, req)
    }

    /// The number of attachments, for fdinfo.
    pub(crate) fn peer_count(&self) -> usize {
        self.data.peer_count()
    }

    /// POOL_CREATE.
    pub(crate) fn pool_create(&self, req: &mut uapi::PoolCreate) -> OpResult {
        Pools::create(&self.pools, req)
    }

    /// POOL_ALLOC.
    pub(crate) fn pool_alloc(&self, req: &mut uapi::PoolAlloc) -> OpResult {
        self.pools.alloc(req)
    }

    /// POOL_FREE.
    pub(crate) fn pool_free(&self, req: uapi::PoolFree) -> OpResult {
        self.pools.free(req)
    }

    /// POOL_STATS.
    pub(crate) fn pool_stats(&self, req: &mut uapi::PoolInfo) -> OpResult {
        self.pools.stats(req)
    }

    /// POOL_DESTROY.
    pub(crate) fn pool_destroy(&self, req: uapi::PoolDestroy) -> OpResult {
        self.pools.destroy(req)
    }

    /// The pools' counters, for fdinfo.
    pub(crate) fn pool_lines(&self, f: impl FnMut(u32, usize, &uapi::PoolStats)) {
        self.pools.lines(f)
    }

    /// `mmap`: maps the area the offset names (see [`uapi::MmapArea`]) into
    /// the process, each as its owner decides. `EINVAL` for an offset that
    /// names none or an area that does not exist.
    pub(crate) fn mmap(&self, vma: &VmaNew) -> Result {
        self.check_owner()?;
        let offset = (vma_pgoff(vma) as u64)
            .checked_mul(PAGE_SIZE as u64)
            .ok_or(EINVAL)?;
        match uapi::MmapArea::decode(offset)? {
            uapi::MmapArea::StateWords => self.cache.map_state_words(vma),
            uapi::MmapArea::Events => self.cache.map_events(vma, false),
            uapi::MmapArea::EventsHead => self.cache.map_events(vma, true),
            uapi::MmapArea::Master => self.data.map(vma, None, false),
            uapi::MmapArea::MasterUser => self.data.map(vma, None, true),
            uapi::MmapArea::Completion(q) => self.data.map(vma, Some(q), false),
            uapi::MmapArea::Submission(q) => self.data.map(vma, Some(q), true),
            uapi::MmapArea::Pool(p) => self.pools.mmap(p, vma),
        }
    }

    /// `poll`: readable when the event ring has unread events or overflowed,
    /// a completion ring has unread completions or the master ring unread
    /// entries; writable when no submission ring is full.
    pub(crate) fn poll(&self, file: &File, table: PollTable<'_>) -> u32 {
        self.data.poll_wait(file, table);
        let mut mask = self.data.poll_mask();
        if self.cache.events_readable() {
            mask |= kernel::bindings::POLLIN | kernel::bindings::POLLRDNORM;
        }
        mask
    }
}

impl Drop for Context {
    /// Releases the file, in this order: the data path stops (its worker,
    /// its timer, the wake-ups from other files, its attachments), the pools
    /// go (their pages leave the mapping before anything else ends), and the
    /// cache ends every registration and cancels its work; nothing of the
    /// file remains afterwards.
    fn drop(&mut self) {
        DataPath::stop(&self.data);
        Pools::release(&self.pools);
        Cache::release(&self.cache);
        GLOBAL_CONTEXTS.fetch_sub(1, Relaxed);
    }
}
