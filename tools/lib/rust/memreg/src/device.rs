// SPDX-License-Identifier: GPL-2.0

//! An open `/dev/memreg` file: a memreg context.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use memreg_sys as raw;

use crate::sys;
use crate::{einval, Access};

/// The path of memreg's character device.
pub const DEVICE_PATH: &str = "/dev/memreg";

/// The number of state words [`Device::map_state_words`] maps when asked for
/// its default (and what [`crate::Cache`] maps): 4096 slots, 32 KiB.
pub const DEFAULT_STATE_SLOTS: u32 = 4096;

/// An open memreg file, the context that owns registrations, queues, pools,
/// an event ring and peer handles.
///
/// Everything the file owns lasts until the file is released: when the
/// `Device` is dropped and the mappings made through it are gone. A
/// `Device` is `Send` and `Sync`; its calls may come from any thread of the
/// process that opened it (a child after `fork` gets `EPERM`).
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
    words: OnceLock<sys::Mmap>,
}

/// What [`Device::query`] reports of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryInfo {
    /// Its start address as registered.
    pub addr: u64,
    /// Its length in bytes as registered.
    pub length: u64,
    /// Its rights.
    pub access: Access,
    /// `MEMREG_STATE_*` bits: valid, parked, suspended.
    pub state: u32,
    /// The number of pinned pages.
    pub pages: u64,
    /// The number of physically contiguous extents.
    pub extents: u32,
    /// REGISTER calls not yet matched by DEREGISTER.
    pub refcount: u32,
}

impl QueryInfo {
    /// Whether data may move through the registration (`MEMREG_STATE_VALID`
    /// and not parked).
    pub fn is_usable(&self) -> bool {
        self.state & raw::MEMREG_STATE_VALID != 0 && self.state & raw::MEMREG_STATE_PARKED == 0
    }
}

/// The parking configuration of a context (`struct memreg_cache_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Whether the last DEREGISTER parks a registration rather than ending it.
    pub parking: bool,
    /// Parked registrations at most.
    pub max_parked: u64,
    /// Their pages at most.
    pub max_parked_pages: u64,
    /// Parked registrations end once the context made no call for this
    /// long, in milliseconds; 0: never.
    pub idle_ms: u64,
}

impl Device {
    /// Opens `/dev/memreg` (`O_RDWR | O_CLOEXEC`).
    pub fn open() -> io::Result<Device> {
        Device::open_path(DEVICE_PATH)
    }

    /// Opens the memreg device at `path` (`O_RDWR | O_CLOEXEC`).
    pub fn open_path(path: impl AsRef<Path>) -> io::Result<Device> {
        // The standard library opens with O_CLOEXEC.
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Device::from_fd(OwnedFd::from(file)))
    }

    /// Takes ownership of `fd`, an open memreg file (a descriptor received
    /// from another process is a grant to attach as a peer, not a context to
    /// use: its calls fail with `EPERM`).
    pub fn from_fd(fd: OwnedFd) -> Device {
        Device {
            fd,
            words: OnceLock::new(),
        }
    }

    /// The file's raw descriptor, for `poll`, `epoll` or passing to a peer.
    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The ABI version of the running module (`MEMREG_IOC_GET_VERSION`).
    pub fn version(&self) -> io::Result<u32> {
        let mut v = 0u32;
        sys::get_version(self.fd(), &mut v)?;
        Ok(v)
    }

    /// Maps the context's state words, `slots` of them (rounded up to whole
    /// pages; at most [`raw::MEMREG_MAX_SLOTS`]), unless this `Device`
    /// mapped them already; returns the number of slots mapped.
    ///
    /// Only registrations created after the words exist get a slot, so call
    /// this before registering: [`crate::Registration::is_valid`] and the
    /// [`crate::Cache`] then check a registration with one load and no
    /// system call. The first mapping of a file decides how many words it
    /// has; a later, longer one fails with `EINVAL`.
    pub fn map_state_words(&self, slots: u32) -> io::Result<u32> {
        if let Some(w) = self.words.get() {
            return Ok((w.len() / 8) as u32);
        }
        if slots == 0 || slots > raw::MEMREG_MAX_SLOTS {
            return Err(einval());
        }
        let page = sys::page_size();
        let len = (slots as usize * 8).div_ceil(page) * page;
        let map =
            sys::Mmap::map_shared(self.fd(), len, false, raw::MEMREG_MMAP_STATE_WORDS.into())?;
        // Another thread may have won the race; its mapping stays.
        let w = self.words.get_or_init(|| map);
        Ok((w.len() / 8) as u32)
    }

    /// The state word of `slot` (an acquire load), or `None` when the words
    /// are not mapped or the slot lies beyond them.
    pub fn state_word(&self, slot: u32) -> Option<u64> {
        let words = self.words.get()?;
        words.load_u64(slot as usize * 8, Ordering::Acquire).ok()
    }

    /// Registers `buf` for `access` and borrows it exclusively until the
    /// registration is dropped (which deregisters it).
    ///
    /// See `MEMREG_IOC_REGISTER`. The buffer cannot be moved, freed or used
    /// while registered; data moves through the registration with
    /// [`crate::Registration::copy_to`], [`crate::Registration::copy_from`]
    /// and requests on a [`crate::Queue`] naming its keys.
    ///
    /// `access` may not hold `REMOTE_WRITE` (`EINVAL`, before any system
    /// call): a peer could write the buffer at any time, also while the
    /// program reads it after the registration ended for the borrow
    /// checker. Memory peers write is a mapping of the crate's own: an
    /// [`crate::AnonMap`] registered with [`Device::register_range`].
    ///
    /// The registration names exactly the borrowed bytes, with no remote
    /// write right. When the kernel answers with an existing registration of
    /// a wider range (a local-only cache hit, typically on a parked
    /// registration of a larger buffer that covers this one), this drops the
    /// reference it was given and fails with `EEXIST`: the keys would reach
    /// bytes outside the borrow. [`Device::flush`] ends parked
    /// registrations.
    pub fn register<'a>(
        &'a self,
        buf: &'a mut [u8],
        access: Access,
    ) -> io::Result<crate::Registration<'a>> {
        if access.contains(Access::REMOTE_WRITE) {
            return Err(einval());
        }
        let (addr, len) = (buf.as_mut_ptr() as u64, buf.len() as u64);
        let reg = crate::Registration::new(self, addr, len, access, true)?;
        borrowed_exactly(reg, addr, len, Access::REMOTE_WRITE)
    }

    /// Registers `buf` for reading only, and borrows it until the
    /// registration is dropped.
    ///
    /// `access` may hold only `LOCAL_READ` and `REMOTE_READ` (`EINVAL`
    /// otherwise, before any system call): nothing may write memory lent as
    /// shared. [`crate::Registration::copy_to`] refuses to write through a
    /// registration made here (`EACCES`).
    ///
    /// The registration names exactly the borrowed bytes and carries no
    /// write right. When the kernel answers with an existing registration of
    /// a wider range, or one whose keys carry a write right (a local-only
    /// cache hit may carry more local rights than asked, such as a parked
    /// read-write registration of the same buffer), this drops the reference
    /// it was given and fails with `EEXIST`. [`Device::flush`] ends parked
    /// registrations.
    pub fn register_ro<'a>(
        &'a self,
        buf: &'a [u8],
        access: Access,
    ) -> io::Result<crate::Registration<'a>> {
        if !(Access::LOCAL_READ | Access::REMOTE_READ).contains(access) {
            return Err(einval());
        }
        let (addr, len) = (buf.as_ptr() as u64, buf.len() as u64);
        let reg = crate::Registration::new(self, addr, len, access, false)?;
        borrowed_exactly(reg, addr, len, Access::LOCAL_WRITE | Access::REMOTE_WRITE)
    }

    /// Registers the `len` bytes at `addr` without borrowing them.
    ///
    /// The crate never reads or writes the range; the kernel pins it, and
    /// ends the registration by itself when the memory under it changes
    /// (`munmap`, `mprotect`, ...), so the call is memory safe whatever the
    /// range. What a program then lets the kernel write there changes that
    /// memory behind the type system's back, as writing through
    /// `/proc/self/mem` would: use it for memory the program does not hold
    /// references to while it may be written, such as an
    /// [`crate::AnonMap`] it only reaches through the keys, or for read-only
    /// registrations. Requests and [`Device::copy_to_key`] writing by key
    /// are `unsafe` for that reason; [`crate::Registration::copy_to`] writes
    /// the range as asked for, and a registration with `REMOTE_WRITE` lets
    /// peers write it at any time.
    pub fn register_range(
        &self,
        addr: usize,
        len: usize,
        access: Access,
    ) -> io::Result<crate::Registration<'_>> {
        crate::Registration::new(self, addr as u64, len as u64, access, true)
    }

    /// Drops one reference to the registration `key` names
    /// (`MEMREG_IOC_DEREGISTER`).
    pub fn deregister_key(&self, key: u64) -> io::Result<()> {
        let mut d = raw::memreg_deregister {
            key,
            ..Default::default()
        };
        sys::deregister(self.fd(), &mut d)
    }

    /// Describes the registration the local key `key` names
    /// (`MEMREG_IOC_QUERY`).
    pub fn query(&self, key: u64) -> io::Result<QueryInfo> {
        let mut q = raw::memreg_query {
            key,
            ..Default::default()
        };
        sys::query(self.fd(), &mut q)?;
        Ok(QueryInfo {
            addr: q.addr,
            length: q.length,
            access: Access::from_bits(q.access),
            state: q.state,
            pages: q.pages,
            extents: q.extents,
            refcount: q.refcount,
        })
    }

    /// Copies `data` into the registration `key` names, at byte `offset`
    /// from its `region_addr` (`MEMREG_IOC_COPY`, `MEMREG_COPY_TO_REGION`).
    ///
    /// [`crate::Registration::copy_to`] is the safe form, which writes only
    /// the bytes its registration holds the borrow of.
    ///
    /// # Safety
    ///
    /// This writes the registered memory by key, as a device would by DMA,
    /// and a key is only a number: `[offset, offset + data.len())` of the
    /// registration `key` names must be memory that no Rust reference
    /// borrows during the call (for example not the buffer of a
    /// [`crate::Registration`] that was `mem::forget`ten, nor a
    /// [`crate::PoolBuffer`] whose bytes are borrowed as a slice). A key
    /// that names no registration is fine: the call fails with `ENOENT`.
    #[allow(unsafe_code)] // An `unsafe fn` declaration; it contains no unsafe code.
    pub unsafe fn copy_to_key(&self, key: u64, offset: u64, data: &[u8]) -> io::Result<()> {
        sys::copy_to_region(self.fd(), key, offset, data)
    }

    /// Copies from the registration `key` names, at byte `offset` from its
    /// `region_addr`, into `out` (`MEMREG_IOC_COPY`,
    /// `MEMREG_COPY_FROM_REGION`).
    pub fn copy_from_key(&self, key: u64, offset: u64, out: &mut [u8]) -> io::Result<()> {
        sys::copy_from_region(self.fd(), key, offset, out)
    }

    /// The context's counters (`MEMREG_IOC_STATS`).
    pub fn stats(&self) -> io::Result<raw::memreg_stats> {
        let mut s = raw::memreg_stats::default();
        sys::stats(self.fd(), &mut s)?;
        Ok(s)
    }

    /// The module-wide counters (`MEMREG_IOC_GLOBAL_STATS`).
    pub fn global_stats(&self) -> io::Result<raw::memreg_global_stats> {
        let mut s = raw::memreg_global_stats::default();
        sys::global_stats(self.fd(), &mut s)?;
        Ok(s)
    }

    /// The data path's counters (`MEMREG_IOC_QUEUE_STATS`).
    pub fn queue_stats(&self) -> io::Result<raw::memreg_queue_stats> {
        let mut s = raw::memreg_queue_stats::default();
        sys::queue_stats(self.fd(), &mut s)?;
        Ok(s)
    }

    /// The context's parking configuration (`MEMREG_IOC_GET_CACHE`).
    pub fn cache_config(&self) -> io::Result<CacheConfig> {
        let mut c = raw::memreg_cache_config::default();
        sys::get_cache(self.fd(), &mut c)?;
        Ok(CacheConfig {
            parking: c.parking != 0,
            max_parked: c.max_parked,
            max_parked_pages: c.max_parked_pages,
            idle_ms: c.idle_ms,
        })
    }

    /// Replaces the context's parking configuration (`MEMREG_IOC_SET_CACHE`).
    pub fn set_cache_config(&self, config: &CacheConfig) -> io::Result<()> {
        let mut c = raw::memreg_cache_config {
            parking: config.parking.into(),
            max_parked: config.max_parked,
            max_parked_pages: config.max_parked_pages,
            idle_ms: config.idle_ms,
            ..Default::default()
        };
        sys::set_cache(self.fd(), &mut c)
    }

    /// Ends every parked registration (`MEMREG_IOC_FLUSH`); returns how many
    /// ended and their pages.
    pub fn flush(&self) -> io::Result<(u64, u64)> {
        let mut f = raw::memreg_flush::default();
        sys::flush(self.fd(), &mut f)?;
        Ok((f.evicted, f.pages))
    }

    /// Lists the registrations valid now into `out` after discarding the
    /// event ring's unread events and clearing its overflow flag
    /// (`MEMREG_IOC_EVENTS_RESYNC`); works without an event ring too.
    pub fn resync(&self, out: &mut Vec<crate::ResyncEntry>) -> io::Result<()> {
        crate::events::resync(self, out)
    }

    /// Creates the context's event ring of `entries` entries (a power of
    /// two, at most [`raw::MEMREG_MAX_EVENTS`]) and maps it; the kernel
    /// signals `eventfd`, if given, with each event. Once per file (`EBUSY`).
    pub fn setup_events(
        &self,
        entries: u32,
        eventfd: Option<BorrowedFd<'_>>,
    ) -> io::Result<crate::EventRing<'_>> {
        crate::EventRing::setup(self, entries, eventfd)
    }

    /// Creates a queue with `sq_entries` submission slots and `cq_entries`
    /// completion entries (powers of two, `2 <= sq_entries <= cq_entries`)
    /// and maps its rings; armed completions signal `eventfd`, if given.
    pub fn create_queue(
        &self,
        sq_entries: u32,
        cq_entries: u32,
        eventfd: Option<BorrowedFd<'_>>,
    ) -> io::Result<crate::Queue<'_>> {
        crate::Queue::create(self, sq_entries, cq_entries, eventfd)
    }

    /// Creates a buffer pool of `classes` whose buffers' keys carry `access`
    /// (with `LOCAL_WRITE`), and maps it. See [`crate::Pool`].
    ///
    /// `access` may not hold `REMOTE_WRITE` (`EINVAL`, before any system
    /// call): the pool lends its buffers as byte slices, which a peer could
    /// write at any time. Remote-writable pools are not offered yet.
    ///
    /// `leak_timeout_ms` (1 to [`raw::MEMREG_POOL_MAX_TIMEOUT_MS`]) must be
    /// longer than the program holds any buffer: a shrink reclaims a buffer
    /// held past it, taking its pages from under the [`crate::PoolBuffer`]
    /// (see [`crate::Pool`]). Without a reason for less, pass
    /// [`raw::MEMREG_POOL_MAX_TIMEOUT_MS`].
    pub fn create_pool(
        &self,
        classes: &[crate::PoolClass],
        access: Access,
        leak_timeout_ms: u32,
        shrink_ms: u32,
    ) -> io::Result<crate::Pool<'_>> {
        crate::Pool::create(self, classes, access, leak_timeout_ms, shrink_ms)
    }

    /// Attaches the memreg file `fd` as a peer (`MEMREG_IOC_PEER_ATTACH`);
    /// `fd` may be this file itself (loopback) or another's, received with
    /// [`crate::recv_fd`]. The handle holds the peer's context: `fd` may be
    /// closed right after.
    pub fn attach_peer(&self, fd: BorrowedFd<'_>) -> io::Result<crate::Peer> {
        let mut a = raw::memreg_peer_attach {
            fd: fd.as_raw_fd(),
            ..Default::default()
        };
        sys::peer_attach(self.fd(), &mut a)?;
        Ok(crate::Peer(a.peer))
    }

    /// Drops a peer handle (`MEMREG_IOC_PEER_DETACH`).
    pub fn detach_peer(&self, peer: crate::Peer) -> io::Result<()> {
        let mut d = raw::memreg_peer_detach {
            peer: peer.0,
            ..Default::default()
        };
        sys::peer_detach(self.fd(), &mut d)
    }

    /// Revokes every grant of this file: every handle attached to it, in
    /// any process, stops working (`MEMREG_IOC_PEER_REVOKE`).
    pub fn revoke_peers(&self) -> io::Result<()> {
        sys::peer_revoke(self.fd())
    }
}

/// Keeps `reg`, a registration of the borrowed `[addr, addr + len)`, only if
/// its keys name exactly those bytes and carry none of the rights in
/// `refused`; otherwise drops it (deregistering the reference REGISTER gave)
/// and fails with `EEXIST`.
fn borrowed_exactly<'a>(
    reg: crate::Registration<'a>,
    addr: u64,
    len: u64,
    refused: Access,
) -> io::Result<crate::Registration<'a>> {
    if reg.region() != (addr, len) || reg.access().bits() & refused.bits() != 0 {
        drop(reg);
        return Err(io::Error::from_raw_os_error(libc::EEXIST));
    }
    Ok(reg)
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Device {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
