// SPDX-License-Identifier: GPL-2.0

//! One open file of `/dev/memreg`: it creates the subsystems, routes the
//! calls of [`crate::ioctl`], `mmap` and `poll` to them, and tears them down
//! in one written order ([`Context`]'s `Drop`). It holds no state of its own
//! besides them.

use crate::{
    cache::Cache,
    datapath::{transfer, DataPath},
    error::OpResult,
    events::Waiters,
    pool::Pools,
    stats::GLOBAL_CONTEXTS,
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

    /// The registration cache.
    pub(crate) fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    /// The rings, the worker and the peers.
    pub(crate) fn data(&self) -> &Arc<DataPath> {
        &self.data
    }

    /// The buffer pools.
    pub(crate) fn pools(&self) -> &Arc<Pools> {
        &self.pools
    }

    /// REGISTER; the registration is undone when its keys cannot reach the
    /// caller.
    pub(crate) fn register(
        &self,
        mut req: uapi::Register,
        reply: Reply<'_, uapi::Register>,
    ) -> OpResult {
        let done = Cache::register(&self.cache, &uapi::RegisterReq::try_from(&req)?)?;
        done.reply.encode(&mut req);
        if let Err(e) = reply.send(&req) {
            Cache::undo_register(&self.cache, &done);
            return Err(e.into());
        }
        Ok(())
    }

    /// COPY: moves data between a user buffer and a registered range, through
    /// the registration's translation entries only (see
    /// [`transfer::copy_user`]).
    pub(crate) fn copy(&self, req: uapi::Copy) -> OpResult {
        let req = uapi::CopyReq::try_from(&req)?;
        let registration = self.cache.get_target(req.key)?;
        let to_registration = req.to_registration;
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
        Ok(transfer::copy_user(
            &registration,
            req.offset,
            req.buf,
            length,
            to_registration,
        )?)
    }

    /// PEER_ATTACH: attaches the data path of the memreg file behind
    /// descriptor `req.fd`. `EBADF` for a descriptor that is not open,
    /// `EINVAL` for a file that is not memreg's.
    pub(crate) fn peer_attach(
        &self,
        req: uapi::PeerAttach,
        reply: Reply<'_, uapi::PeerAttach>,
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
            uapi::MmapArea::PoolRing(p) => self.pools.mmap_rings(p, vma),
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
