// SPDX-License-Identifier: GPL-2.0

//! The only module of this crate with `unsafe` code.
//!
//! Everything else in the crate is built on the safe primitives here:
//!
//! - one wrapper per ioctl request, each passing a pointer to a Rust value
//!   of the structure the request number encodes, and, for the requests
//!   whose structure names a user buffer, taking that buffer as a slice so
//!   the kernel reads or writes only memory the caller lends for the call;
//! - [`Mmap`], an owned shared mapping of the device (rings, state words,
//!   the event ring) that hands out no reference to its contents: words are
//!   loaded and stored as atomics and structures copied in and out with
//!   volatile accesses, each after a bounds and alignment check, so that
//!   whatever the kernel or another thread writes into those pages cannot
//!   cause undefined behaviour here (a value read is only data, which the
//!   callers validate before they use it);
//! - [`AnonMapping`], a private anonymous mapping owned by one value, whose
//!   bytes are lent as slices like a `Vec`'s;
//! - [`PoolMapping`] and [`PoolBuf`]: a pool's mapping, and a buffer of it
//!   that `MEMREG_IOC_POOL_ALLOC` handed to this process, lent as a slice
//!   until it is given back;
//! - descriptor passing over unix sockets (`SCM_RIGHTS`), `poll(2)` and the
//!   page size.
//!
//! # What the kernel does to memory
//!
//! A registration lets the kernel move data into the memory it covers
//! (`MEMREG_IOC_COPY` towards the region, and COPY, READ and RECV requests
//! on the rings), as a device moves data by DMA. The crate lends a
//! registration memory only through an exclusive borrow when a write right
//! is asked ([`crate::Device::register`]), so safe code never observes such
//! a write through a live reference. The raw-range interfaces
//! ([`crate::Device::register_range`], [`crate::Cache::get`]) register
//! memory the crate never reads or writes itself; what a program then lets
//! the kernel write there is, like writing through `/proc/self/mem`, outside
//! what the type system sees, and is documented on those functions.

use std::ffi::c_void;
use std::io;
use std::mem::{align_of, size_of, MaybeUninit};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memreg_sys as raw;

/// The error of the last failed system call of this thread.
fn last_error() -> io::Error {
    io::Error::last_os_error()
}

/// Issues `ioctl(fd, request, arg)` and returns its nonnegative result.
///
/// # Safety
///
/// `arg` must be null for a request without argument, or point to a value
/// of the structure `request` encodes, valid for reads and writes for the
/// call; every user pointer inside that structure must be valid for what
/// the request does with it.
unsafe fn raw_ioctl(fd: BorrowedFd<'_>, request: u32, arg: *mut c_void) -> io::Result<i32> {
    // SAFETY: the caller guarantees `arg`; the descriptor is open for the
    // lifetime of the borrow.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) };
    if ret < 0 {
        Err(last_error())
    } else {
        Ok(ret)
    }
}

/// Defines a safe wrapper of a request whose structure holds no user
/// pointer: the kernel reads and writes nothing but the structure itself.
macro_rules! plain_ioctl {
    ($(#[$doc:meta])* $name:ident, $request:path, $ty:ty) => {
        $(#[$doc])*
        pub(crate) fn $name(fd: BorrowedFd<'_>, arg: &mut $ty) -> io::Result<()> {
            // SAFETY: `arg` is a valid, exclusive `$ty`, the structure the
            // request number encodes, and it contains no user pointer
            // (REGISTER's `addr` is a range to pin, which the kernel never
            // reads or writes through the caller's page tables).
            unsafe { raw_ioctl(fd, $request, (arg as *mut $ty).cast()) }.map(drop)
        }
    };
}

plain_ioctl!(
    /// `MEMREG_IOC_GET_VERSION`.
    get_version, raw::MEMREG_IOC_GET_VERSION, u32
);
plain_ioctl!(
    /// `MEMREG_IOC_REGISTER`.
    register, raw::MEMREG_IOC_REGISTER, raw::memreg_register
);
plain_ioctl!(
    /// `MEMREG_IOC_DEREGISTER`.
    deregister, raw::MEMREG_IOC_DEREGISTER, raw::memreg_deregister
);
plain_ioctl!(
    /// `MEMREG_IOC_QUERY`.
    query, raw::MEMREG_IOC_QUERY, raw::memreg_query
);
plain_ioctl!(
    /// `MEMREG_IOC_STATS`.
    stats, raw::MEMREG_IOC_STATS, raw::memreg_stats
);
plain_ioctl!(
    /// `MEMREG_IOC_GLOBAL_STATS`.
    global_stats, raw::MEMREG_IOC_GLOBAL_STATS, raw::memreg_global_stats
);
plain_ioctl!(
    /// `MEMREG_IOC_GET_CACHE`.
    get_cache, raw::MEMREG_IOC_GET_CACHE, raw::memreg_cache_config
);
plain_ioctl!(
    /// `MEMREG_IOC_SET_CACHE`.
    set_cache, raw::MEMREG_IOC_SET_CACHE, raw::memreg_cache_config
);
plain_ioctl!(
    /// `MEMREG_IOC_FLUSH`.
    flush, raw::MEMREG_IOC_FLUSH, raw::memreg_flush
);
plain_ioctl!(
    /// `MEMREG_IOC_EVENTS_SETUP`.
    events_setup, raw::MEMREG_IOC_EVENTS_SETUP, raw::memreg_events_setup
);
plain_ioctl!(
    /// `MEMREG_IOC_QUEUE_CREATE`.
    queue_create, raw::MEMREG_IOC_QUEUE_CREATE, raw::memreg_queue_create
);
plain_ioctl!(
    /// `MEMREG_IOC_DOORBELL`.
    doorbell, raw::MEMREG_IOC_DOORBELL, raw::memreg_doorbell
);
plain_ioctl!(
    /// `MEMREG_IOC_QUEUE_STATS`.
    queue_stats, raw::MEMREG_IOC_QUEUE_STATS, raw::memreg_queue_stats
);
plain_ioctl!(
    /// `MEMREG_IOC_PEER_ATTACH`.
    peer_attach, raw::MEMREG_IOC_PEER_ATTACH, raw::memreg_peer_attach
);
plain_ioctl!(
    /// `MEMREG_IOC_PEER_DETACH`.
    peer_detach, raw::MEMREG_IOC_PEER_DETACH, raw::memreg_peer_detach
);
plain_ioctl!(
    /// `MEMREG_IOC_QUEUE_CONNECT`.
    queue_connect, raw::MEMREG_IOC_QUEUE_CONNECT, raw::memreg_queue_connect
);
plain_ioctl!(
    /// `MEMREG_IOC_POOL_DESTROY`.
    pool_destroy, raw::MEMREG_IOC_POOL_DESTROY, raw::memreg_pool_destroy
);

/// `MEMREG_IOC_PEER_REVOKE`, which takes no argument.
pub(crate) fn peer_revoke(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: the request takes no argument.
    unsafe { raw_ioctl(fd, raw::MEMREG_IOC_PEER_REVOKE, std::ptr::null_mut()) }.map(drop)
}

/// `MEMREG_IOC_COPY` of `length` bytes between user memory at `buf` and the
/// registration `key` at `offset`, in `direction`.
///
/// # Safety
///
/// `buf` must be valid for `length` bytes of reads (`MEMREG_COPY_TO_REGION`)
/// or of writes by the kernel, of any values (`MEMREG_COPY_FROM_REGION`),
/// for the duration of the call.
unsafe fn copy(
    fd: BorrowedFd<'_>,
    key: u64,
    offset: u64,
    buf: u64,
    length: u64,
    direction: u32,
) -> io::Result<()> {
    let mut c = raw::memreg_copy {
        key,
        offset,
        length,
        buf,
        direction,
        ..Default::default()
    };
    // SAFETY: `c` is a `memreg_copy` the call may read; the caller vouches
    // for `buf`.
    unsafe {
        raw_ioctl(
            fd,
            raw::MEMREG_IOC_COPY,
            (&mut c as *mut raw::memreg_copy).cast(),
        )
    }
    .map(drop)
}

/// `MEMREG_IOC_COPY` of `data` into the registration `key` at `offset`.
pub(crate) fn copy_to_region(
    fd: BorrowedFd<'_>,
    key: u64,
    offset: u64,
    data: &[u8],
) -> io::Result<()> {
    // SAFETY: the kernel reads `data.len()` bytes at `buf`, which `data`
    // lends for the call.
    unsafe {
        copy(
            fd,
            key,
            offset,
            data.as_ptr() as u64,
            data.len() as u64,
            raw::MEMREG_COPY_TO_REGION,
        )
    }
}

/// `MEMREG_IOC_COPY` from the registration `key` at `offset` into `out`.
pub(crate) fn copy_from_region(
    fd: BorrowedFd<'_>,
    key: u64,
    offset: u64,
    out: &mut [u8],
) -> io::Result<()> {
    // SAFETY: the kernel writes at most `out.len()` bytes at `buf`, which
    // `out` lends exclusively for the call; any byte values are valid `u8`.
    unsafe {
        copy(
            fd,
            key,
            offset,
            out.as_mut_ptr() as u64,
            out.len() as u64,
            raw::MEMREG_COPY_FROM_REGION,
        )
    }
}

/// The largest array `MEMREG_IOC_EVENTS_RESYNC` accepts.
const RESYNC_MAX_CAPACITY: usize = 1 << 20;

/// `MEMREG_IOC_EVENTS_RESYNC` into `entries`; returns the number of valid
/// registrations, which may exceed the number written (`entries.len()`).
pub(crate) fn events_resync(
    fd: BorrowedFd<'_>,
    entries: &mut [raw::memreg_resync_entry],
) -> io::Result<u32> {
    let capacity = entries.len().min(RESYNC_MAX_CAPACITY);
    let mut r = raw::memreg_events_resync {
        entries: if capacity == 0 {
            0
        } else {
            entries.as_mut_ptr() as u64
        },
        capacity: capacity as u32,
        ..Default::default()
    };
    // SAFETY: the kernel writes at most `capacity` entries at `entries`,
    // which the slice lends exclusively; every bit pattern is a valid entry.
    unsafe {
        raw_ioctl(
            fd,
            raw::MEMREG_IOC_EVENTS_RESYNC,
            (&mut r as *mut raw::memreg_events_resync).cast(),
        )
    }?;
    Ok(r.count)
}

/// `MEMREG_IOC_POOL_CREATE` of the classes in `classes` (whose out fields
/// the kernel fills); `arg.classes` and `arg.nr_classes` are set here.
pub(crate) fn pool_create(
    fd: BorrowedFd<'_>,
    classes: &mut [raw::memreg_pool_class],
    arg: &mut raw::memreg_pool_create,
) -> io::Result<()> {
    arg.classes = classes.as_mut_ptr() as u64;
    arg.nr_classes =
        u32::try_from(classes.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: the kernel reads and writes `nr_classes` classes at `classes`,
    // which the slice lends exclusively; every bit pattern is valid.
    unsafe {
        raw_ioctl(
            fd,
            raw::MEMREG_IOC_POOL_CREATE,
            (arg as *mut raw::memreg_pool_create).cast(),
        )
    }
    .map(drop)
}

/// `MEMREG_IOC_POOL_STATS` of `pool` into `out`; returns the pool's number
/// of classes (only `out.len()` of them are written).
pub(crate) fn pool_stats(
    fd: BorrowedFd<'_>,
    pool: u32,
    out: &mut [raw::memreg_pool_stats],
) -> io::Result<u32> {
    let mut info = raw::memreg_pool_info {
        pool,
        count: u32::try_from(out.len()).unwrap_or(u32::MAX),
        stats: out.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: the kernel writes at most `count` structures at `stats`,
    // which the slice lends exclusively; every bit pattern is valid.
    unsafe {
        raw_ioctl(
            fd,
            raw::MEMREG_IOC_POOL_STATS,
            (&mut info as *mut raw::memreg_pool_info).cast(),
        )
    }?;
    Ok(info.count)
}

/// `MEMREG_IOC_POOL_FREE` of the buffers at `addrs` (at most
/// `MEMREG_POOL_MAX_BATCH`).
fn pool_free_addrs(fd: BorrowedFd<'_>, pool: u32, addrs: &[u64]) -> io::Result<()> {
    let mut f = raw::memreg_pool_free {
        pool,
        count: u32::try_from(addrs.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        addrs: addrs.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: the kernel reads `count` addresses at `addrs`, which the slice
    // lends for the call.
    unsafe {
        raw_ioctl(
            fd,
            raw::MEMREG_IOC_POOL_FREE,
            (&mut f as *mut raw::memreg_pool_free).cast(),
        )
    }
    .map(drop)
}

/// Types for which every bit pattern is a valid value, and which hold no
/// pointer: what may be copied out of memory someone else writes.
///
/// # Safety
///
/// Implement only for `repr(C)` structures of integers (and integers).
pub(crate) unsafe trait Pod: Copy {}

// SAFETY: integers.
unsafe impl Pod for u32 {}
// SAFETY: integers.
unsafe impl Pod for u64 {}
// SAFETY: repr(C) structures of integers only.
unsafe impl Pod for raw::memreg_sqe {}
// SAFETY: repr(C) structures of integers only.
unsafe impl Pod for raw::memreg_cqe {}
// SAFETY: repr(C) structures of integers only.
unsafe impl Pod for raw::memreg_event {}

/// The error for an access outside a mapping or misaligned: a bug of the
/// caller, reported rather than acted on.
fn out_of_bounds() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "access outside the mapping")
}

/// A shared mapping of the device, unmapped on drop.
///
/// Its contents are never lent as references: the kernel (and other
/// threads) write them at any time. Every access checks that the object
/// lies within the mapping and is aligned for its type.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
}

// SAFETY: the mapping is plain memory owned by this value; all accesses to
// it are atomic or volatile copies, which any thread may make.
unsafe impl Send for Mmap {}
// SAFETY: as above: `&Mmap` allows no access that is not atomic or a
// volatile copy of a `Pod` value.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Maps `len` bytes of `fd` at `offset`, `MAP_SHARED`, readable, and
    /// writable when `writable`.
    pub(crate) fn map_shared(
        fd: BorrowedFd<'_>,
        len: usize,
        writable: bool,
        offset: u64,
    ) -> io::Result<Mmap> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a new mapping at an address the kernel chooses replaces
        // nothing; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(out_of_bounds)?;
        Ok(Mmap { ptr, len, writable })
    }

    /// The mapping's start address.
    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// The mapping's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A pointer to a `T` at byte `offset`, after checking that it lies
    /// within the mapping and is aligned.
    fn at<T>(&self, offset: usize) -> io::Result<*mut T> {
        let end = offset
            .checked_add(size_of::<T>())
            .ok_or_else(out_of_bounds)?;
        if end > self.len || (self.addr() + offset) % align_of::<T>() != 0 {
            return Err(out_of_bounds());
        }
        // SAFETY: `offset + size_of::<T>()` is within the mapping.
        Ok(unsafe { self.ptr.as_ptr().add(offset) }.cast())
    }

    fn writable_at<T>(&self, offset: usize) -> io::Result<*mut T> {
        if !self.writable {
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        self.at(offset)
    }

    fn atomic_u32(&self, offset: usize) -> io::Result<&AtomicU32> {
        let p = self.at::<u32>(offset)?;
        // SAFETY: `p` is aligned, within the mapping, which lives as long as
        // `&self`, and is only ever accessed atomically or by the kernel.
        Ok(unsafe { AtomicU32::from_ptr(p) })
    }

    fn atomic_u64(&self, offset: usize) -> io::Result<&AtomicU64> {
        let p = self.at::<u64>(offset)?;
        // SAFETY: as for `atomic_u32`.
        Ok(unsafe { AtomicU64::from_ptr(p) })
    }

    /// Loads the `u32` at byte `offset` atomically.
    pub(crate) fn load_u32(&self, offset: usize, order: Ordering) -> io::Result<u32> {
        Ok(self.atomic_u32(offset)?.load(order))
    }

    /// Loads the `u64` at byte `offset` atomically.
    pub(crate) fn load_u64(&self, offset: usize, order: Ordering) -> io::Result<u64> {
        Ok(self.atomic_u64(offset)?.load(order))
    }

    /// Stores the `u32` at byte `offset` atomically (writable mappings only).
    pub(crate) fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> io::Result<()> {
        self.writable_at::<u32>(offset)?;
        self.atomic_u32(offset)?.store(value, order);
        Ok(())
    }

    // The data path uses [`QueueMaps`]; the tests' fake worker uses this.
    #[cfg(test)]
    /// Stores the `u64` at byte `offset` atomically (writable mappings only).
    pub(crate) fn store_u64(&self, offset: usize, value: u64, order: Ordering) -> io::Result<()> {
        self.writable_at::<u64>(offset)?;
        self.atomic_u64(offset)?.store(value, order);
        Ok(())
    }

    // The data path uses [`QueueMaps`]; the tests' fake worker uses this.
    #[cfg(test)]
    /// Compare-and-swap of the `u64` at byte `offset` (writable mappings
    /// only): `Ok(Ok(current))` when it held `current` and now holds `new`,
    /// `Ok(Err(found))` otherwise.
    pub(crate) fn compare_exchange_u64(
        &self,
        offset: usize,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> io::Result<Result<u64, u64>> {
        self.writable_at::<u64>(offset)?;
        Ok(self
            .atomic_u64(offset)?
            .compare_exchange(current, new, success, failure))
    }

    /// Copies the `T` at byte `offset` out with a volatile read.
    pub(crate) fn read<T: Pod>(&self, offset: usize) -> io::Result<T> {
        let p = self.at::<T>(offset)?;
        // SAFETY: `p` is aligned and within the mapping; `T: Pod` is valid
        // for any bytes, whatever the kernel wrote.
        Ok(unsafe { std::ptr::read_volatile(p) })
    }

    // The data path uses [`QueueMaps`]; the tests' fake worker uses this.
    #[cfg(test)]
    /// Copies `value` in at byte `offset` with a volatile write (writable
    /// mappings only).
    pub(crate) fn write<T: Pod>(&self, offset: usize, value: &T) -> io::Result<()> {
        let p = self.writable_at::<T>(offset)?;
        // SAFETY: `p` is aligned, within a writable mapping, and never lent
        // as a reference.
        unsafe { std::ptr::write_volatile(p, *value) };
        Ok(())
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: the mapping is this value's, and no reference into it
        // outlives `&self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Offsets in a queue's two mappings.
const SQ_INSERT: usize = std::mem::offset_of!(raw::memreg_sq_user, insert);
const SQ_CQ_HEAD: usize = std::mem::offset_of!(raw::memreg_sq_user, cq_head);
const SQ_CQ_ARM: usize = std::mem::offset_of!(raw::memreg_sq_user, cq_arm);
const SLOT_SEQ: usize = std::mem::offset_of!(raw::memreg_sq_slot, seq);
const SLOT_SQE: usize = std::mem::offset_of!(raw::memreg_sq_slot, sqe);
const CQ_SQ_HEAD: usize = std::mem::offset_of!(raw::memreg_cq_ring, sq_head);
const CQ_TAIL: usize = std::mem::offset_of!(raw::memreg_cq_ring, cq_tail);
const CQ_FLAGS: usize = std::mem::offset_of!(raw::memreg_cq_ring, flags);

/// A queue's two mappings: the submission ring (`MEMREG_MMAP_SQ`,
/// writable) and the completion ring (`MEMREG_MMAP_CQ`).
///
/// The data path touches a handful of words per request, so instead of the
/// per-access checks of [`Mmap`] the layout is checked once, here: both
/// mappings are page-aligned, the first is writable, and they are long
/// enough for their headers, `sq_entries` slots and `cq_entries`
/// completions (powers of two). Every accessor masks its position into the
/// ring, so no access can leave the mappings or be misaligned, whatever the
/// positions (which callers may have read from the shared words). As with
/// [`Mmap`], the words are only accessed atomically and the descriptors only
/// copied with volatile accesses; nothing read is more than data.
#[derive(Debug)]
pub(crate) struct QueueMaps {
    sq: Mmap,
    cq: Mmap,
    sq_mask: u64,
    cq_mask: u32,
}

impl QueueMaps {
    /// Checks the layout described above (`EINVAL` otherwise).
    pub(crate) fn new(sq: Mmap, cq: Mmap, sq_entries: u32, cq_entries: u32) -> io::Result<Self> {
        let sq_need = (sq_entries as usize)
            .checked_mul(size_of::<raw::memreg_sq_slot>())
            .and_then(|n| n.checked_add(raw::MEMREG_SQ_SLOTS_OFFSET as usize));
        let cq_need = (cq_entries as usize)
            .checked_mul(size_of::<raw::memreg_cqe>())
            .and_then(|n| n.checked_add(raw::MEMREG_CQ_ENTRIES_OFFSET as usize));
        let aligned = |m: &Mmap| m.addr() % 64 == 0;
        let ok = sq_entries.is_power_of_two()
            && cq_entries.is_power_of_two()
            && sq.writable
            && aligned(&sq)
            && aligned(&cq)
            && sq_need.is_some_and(|n| n <= sq.len)
            && cq_need.is_some_and(|n| n <= cq.len)
            && size_of::<raw::memreg_cq_ring>() <= raw::MEMREG_CQ_ENTRIES_OFFSET as usize
            && size_of::<raw::memreg_sq_user>() <= raw::MEMREG_SQ_SLOTS_OFFSET as usize
            && raw::MEMREG_SQ_SLOTS_OFFSET as usize % 64 == 0
            && raw::MEMREG_CQ_ENTRIES_OFFSET as usize % 64 == 0;
        if !ok {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(QueueMaps {
            sq,
            cq,
            sq_mask: u64::from(sq_entries - 1),
            cq_mask: cq_entries - 1,
        })
    }

    /// The byte offset of slot `pos & (sq_entries - 1)`.
    #[inline]
    fn slot(&self, pos: u64) -> usize {
        raw::MEMREG_SQ_SLOTS_OFFSET as usize
            + (pos & self.sq_mask) as usize * size_of::<raw::memreg_sq_slot>()
    }

    /// The `u64` word at `offset` of the submission ring.
    ///
    /// Callers pass a header field's offset or a slot's `seq`: within the
    /// mapping (checked in `new`) and 8-aligned (the mapping is
    /// page-aligned, and so are the fields of the `repr(C)` structures).
    #[inline]
    fn sq_u64(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset + 8 <= self.sq.len && offset % 8 == 0);
        // SAFETY: as above; the mapping lives as long as `&self` and its
        // words are only ever accessed atomically (or by the kernel).
        unsafe { AtomicU64::from_ptr(self.sq.ptr.as_ptr().add(offset).cast()) }
    }

    /// The `u32` word at `offset` of the submission ring's header.
    #[inline]
    fn sq_u32(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= raw::MEMREG_SQ_SLOTS_OFFSET as usize && offset % 4 == 0);
        // SAFETY: as for `sq_u64`: a header field, within the mapping and
        // aligned.
        unsafe { AtomicU32::from_ptr(self.sq.ptr.as_ptr().add(offset).cast()) }
    }

    /// The `u32` word at `offset` of the completion ring's header.
    #[inline]
    fn cq_u32(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= raw::MEMREG_CQ_ENTRIES_OFFSET as usize && offset % 4 == 0);
        // SAFETY: a header field, within the mapping (checked in `new`) and
        // aligned; only ever loaded here (the mapping may be read-only).
        unsafe { AtomicU32::from_ptr(self.cq.ptr.as_ptr().add(offset).cast()) }
    }

    /// `insert`, the slots claimed by posters.
    #[inline]
    pub(crate) fn insert(&self) -> &AtomicU64 {
        self.sq_u64(SQ_INSERT)
    }

    /// `cq_head`, the completions the reader consumed.
    #[inline]
    pub(crate) fn cq_head(&self) -> &AtomicU32 {
        self.sq_u32(SQ_CQ_HEAD)
    }

    /// `cq_arm`.
    #[inline]
    pub(crate) fn cq_arm(&self) -> &AtomicU32 {
        self.sq_u32(SQ_CQ_ARM)
    }

    /// The `seq` of slot `pos & (sq_entries - 1)`.
    #[inline]
    pub(crate) fn slot_seq(&self, pos: u64) -> &AtomicU64 {
        self.sq_u64(self.slot(pos) + SLOT_SEQ)
    }

    /// Copies `sqe` into slot `pos & (sq_entries - 1)` with a volatile
    /// write.
    #[inline]
    pub(crate) fn write_sqe(&self, pos: u64, sqe: &raw::memreg_sqe) {
        let offset = self.slot(pos) + SLOT_SQE;
        // SAFETY: the slot lies within the writable mapping (checked in
        // `new`), 8-aligned like the mapping and the slot's fields, and is
        // never lent as a reference.
        unsafe {
            std::ptr::write_volatile(
                self.sq.ptr.as_ptr().add(offset).cast::<raw::memreg_sqe>(),
                *sqe,
            )
        };
    }

    /// Loads `sq_head`, the submissions the worker took.
    #[inline]
    pub(crate) fn sq_head(&self, order: Ordering) -> u64 {
        // SAFETY: a header field, within the mapping (checked in `new`),
        // 8-aligned, only ever loaded here.
        unsafe { AtomicU64::from_ptr(self.cq.ptr.as_ptr().add(CQ_SQ_HEAD).cast()) }.load(order)
    }

    /// Loads `cq_tail`, the completions written.
    #[inline]
    pub(crate) fn cq_tail(&self, order: Ordering) -> u32 {
        self.cq_u32(CQ_TAIL).load(order)
    }

    /// Loads the completion ring's `flags`.
    #[inline]
    pub(crate) fn flags(&self, order: Ordering) -> u32 {
        self.cq_u32(CQ_FLAGS).load(order)
    }

    /// Copies out completion `i & (cq_entries - 1)` with a volatile read.
    #[inline]
    pub(crate) fn read_cqe(&self, i: u32) -> raw::memreg_cqe {
        let offset = raw::MEMREG_CQ_ENTRIES_OFFSET as usize
            + (i & self.cq_mask) as usize * size_of::<raw::memreg_cqe>();
        // SAFETY: the entry lies within the mapping (checked in `new`) and
        // is 8-aligned; a `memreg_cqe` (`Pod`) is valid for any bytes.
        unsafe {
            std::ptr::read_volatile(self.cq.ptr.as_ptr().add(offset).cast::<raw::memreg_cqe>())
        }
    }
}

/// A private anonymous mapping, readable and writable, owned by this value
/// and unmapped on drop.
#[derive(Debug)]
pub(crate) struct AnonMapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is owned memory like a `Box<[u8]>`'s.
unsafe impl Send for AnonMapping {}
// SAFETY: `&AnonMapping` lends only `&[u8]`.
unsafe impl Sync for AnonMapping {}

impl AnonMapping {
    /// Maps `len` bytes of zeroed memory, at `addr` when given (and then
    /// only if nothing is mapped there: `EEXIST` otherwise).
    pub(crate) fn new(addr: Option<usize>, len: usize) -> io::Result<AnonMapping> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        if addr.is_some() {
            flags |= libc::MAP_FIXED_NOREPLACE;
        }
        let hint = addr.unwrap_or(0) as *mut c_void;
        // SAFETY: without MAP_FIXED, or with MAP_FIXED_NOREPLACE, the call
        // replaces no existing mapping.
        let p = unsafe { libc::mmap(hint, len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(last_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(out_of_bounds)?;
        let map = AnonMapping { ptr, len };
        if let Some(want) = addr {
            // Kernels before 4.17 ignore MAP_FIXED_NOREPLACE and treat the
            // address as a hint.
            if map.addr() != want {
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
        }
        Ok(map)
    }

    /// The mapping's start address.
    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// The mapping's length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The mapping's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `len` bytes of initialised (zero-filled) memory owned by
        // this value, shared for the borrow.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The mapping's bytes, exclusively.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `bytes`, borrowed exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AnonMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is this value's and nothing borrows it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A pool's mapping (`MEMREG_MMAP_POOL(pool)`), unmapped on drop.
#[derive(Debug)]
pub(crate) struct PoolMapping {
    map: Mmap,
    pool: u32,
}

/// A buffer `MEMREG_IOC_POOL_ALLOC` handed to this process: its bytes are
/// this value's until it is given back with [`PoolMapping::free`].
///
/// The kernel hands a buffer out once until it is freed; this type is
/// created only from the result of an ALLOC on its own pool's mapping, after
/// checking that the buffer lies within it, and is neither `Clone` nor
/// `Copy`, so the bytes it lends are lent once.
#[derive(Debug)]
pub(crate) struct PoolBuf<'m> {
    map: &'m PoolMapping,
    info: raw::memreg_pool_buf,
    offset: usize,
    len: usize,
}

impl PoolMapping {
    /// Maps pool `pool` of `fd`, `map_bytes` long, readable and writable.
    pub(crate) fn map(fd: BorrowedFd<'_>, pool: u32, map_bytes: usize) -> io::Result<Self> {
        let map = Mmap::map_shared(fd, map_bytes, true, raw::memreg_mmap_pool(pool))?;
        Ok(PoolMapping { map, pool })
    }

    /// The mapping's start address.
    pub(crate) fn addr(&self) -> usize {
        self.map.addr()
    }

    /// The mapping's length.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// `MEMREG_IOC_POOL_ALLOC` of up to `count` buffers of `size` bytes.
    ///
    /// A buffer the kernel answers with outside the mapping (which only a
    /// kernel bug could produce) fails the call with `EPROTO`, after giving
    /// every buffer of the answer back.
    pub(crate) fn alloc(
        &self,
        fd: BorrowedFd<'_>,
        size: u64,
        count: u32,
        flags: u32,
        timeout_ms: u32,
    ) -> io::Result<Vec<PoolBuf<'_>>> {
        if count == 0 || count > raw::MEMREG_POOL_MAX_BATCH {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut bufs = vec![raw::memreg_pool_buf::default(); count as usize];
        let mut a = raw::memreg_pool_alloc {
            pool: self.pool,
            flags,
            size,
            bufs: bufs.as_mut_ptr() as u64,
            count,
            timeout_ms,
            ..Default::default()
        };
        // SAFETY: the kernel writes at most `count` (<= bufs.len()) buffers
        // at `bufs`, which `bufs` owns; every bit pattern is valid.
        unsafe {
            raw_ioctl(
                fd,
                raw::MEMREG_IOC_POOL_ALLOC,
                (&mut a as *mut raw::memreg_pool_alloc).cast(),
            )
        }?;
        let given = (a.count as usize).min(bufs.len());
        bufs.truncate(given);
        let base = self.addr() as u64;
        let end = base + self.len() as u64;
        let valid = bufs.iter().all(|b| {
            b.addr >= base
                && u64::from(b.size) >= size
                && b.addr
                    .checked_add(u64::from(b.size))
                    .is_some_and(|e| e <= end)
        });
        let distinct = bufs
            .iter()
            .enumerate()
            .all(|(i, b)| bufs[..i].iter().all(|o| o.addr != b.addr));
        if !valid || !distinct || a.count as usize != given || given == 0 {
            let addrs: Vec<u64> = bufs.iter().map(|b| b.addr).collect();
            if !addrs.is_empty() {
                let _ = pool_free_addrs(fd, self.pool, &addrs);
            }
            return Err(io::Error::from_raw_os_error(libc::EPROTO));
        }
        Ok(bufs
            .into_iter()
            .map(|info| PoolBuf {
                map: self,
                offset: (info.addr - base) as usize,
                len: info.size as usize,
                info,
            })
            .collect())
    }

    /// `MEMREG_IOC_POOL_FREE` of `bufs` (at most `MEMREG_POOL_MAX_BATCH`),
    /// all or none: on an error other than `ESTALE` the buffers are
    /// returned, still allocated.
    pub(crate) fn free<'m>(
        &'m self,
        fd: BorrowedFd<'_>,
        bufs: Vec<PoolBuf<'m>>,
    ) -> Result<(), (io::Error, Vec<PoolBuf<'m>>)> {
        let addrs: Vec<u64> = bufs.iter().map(|b| b.info.addr).collect();
        match pool_free_addrs(fd, self.pool, &addrs) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) => Err((e, Vec::new())),
            Err(e) => Err((e, bufs)),
        }
    }
}

impl PoolBuf<'_> {
    /// What ALLOC answered for this buffer.
    pub(crate) fn info(&self) -> &raw::memreg_pool_buf {
        &self.info
    }

    /// The buffer's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the range lies within the pool's mapping (checked at
        // ALLOC), which outlives `'m`, and is this buffer's alone until it is
        // freed (the kernel hands it out once); the pool's pages are zeroed
        // when allocated, so the bytes are initialised.
        unsafe { std::slice::from_raw_parts(self.map.map.ptr.as_ptr().add(self.offset), self.len) }
    }

    /// The buffer's bytes, exclusively.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `bytes`, borrowed exclusively through `&mut self`.
        unsafe {
            std::slice::from_raw_parts_mut(self.map.map.ptr.as_ptr().add(self.offset), self.len)
        }
    }
}

/// `poll(2)` of one descriptor for `events`, for at most `timeout_ms`
/// (negative: no limit); returns the events reported, 0 on timeout.
pub(crate) fn poll(fd: BorrowedFd<'_>, events: i16, timeout_ms: i32) -> io::Result<i16> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    match n {
        n if n < 0 => Err(last_error()),
        0 => Ok(0),
        _ => Ok(p.revents),
    }
}

/// The base page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// Room for one descriptor's control message.
const FD_CMSG_SPACE: usize = 64;

/// Sends the descriptor `fd` with one byte over the unix socket `sock`
/// (`SCM_RIGHTS`).
pub(crate) fn send_fd(sock: &UnixStream, fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut byte = [b'F'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf = [0u64; FD_CMSG_SPACE / 8];
    // SAFETY: a zeroed msghdr is valid; its pointers are set below.
    let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) } as usize;
    if space > FD_CMSG_SPACE {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer has room for one header and one int
    // (checked above), and is aligned for cmsghdr (u64 array).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), fd.as_raw_fd());
    }
    // SAFETY: `msg` and everything it points to are valid for the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    match n {
        1 => Ok(()),
        n if n < 0 => Err(last_error()),
        _ => Err(io::Error::from_raw_os_error(libc::EIO)),
    }
}

/// Receives a descriptor sent by [`send_fd`] over `sock`.
pub(crate) fn recv_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut cbuf = [0u64; FD_CMSG_SPACE / 8];
    // SAFETY: a zeroed msghdr is valid; its pointers are set below.
    let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = FD_CMSG_SPACE as _;
    // SAFETY: `msg` and everything it points to are valid for the call;
    // MSG_CMSG_CLOEXEC gives the received descriptor O_CLOEXEC.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(last_error());
    }
    let mut received = None;
    // SAFETY: the kernel wrote `msg_controllen` bytes of control messages
    // into `cbuf`; the CMSG_* walk stays within them.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let bytes = ((*c).cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                let mut i = 0;
                while i + size_of::<libc::c_int>() <= bytes {
                    let fd = std::ptr::read_unaligned(data.add(i).cast::<libc::c_int>());
                    // Take ownership of every descriptor received, so
                    // that extra ones are closed rather than leaked.
                    let owned = OwnedFd::from_raw_fd(fd);
                    if received.is_none() {
                        received = Some(owned);
                    }
                    i += size_of::<libc::c_int>();
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::from_raw_os_error(libc::EPROTO));
    }
    match (n, received) {
        (0, _) => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
        (_, Some(fd)) => Ok(fd),
        (_, None) => Err(io::Error::from_raw_os_error(libc::EPROTO)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_mapping_bounds_and_bytes() {
        let mut m = AnonMapping::new(None, 8192).expect("mmap");
        assert_eq!(m.len(), 8192);
        assert!(m.bytes().iter().all(|&b| b == 0));
        m.bytes_mut()[8191] = 7;
        assert_eq!(m.bytes()[8191], 7);
        // A second mapping at the same address is refused.
        let again = AnonMapping::new(Some(m.addr()), 4096);
        assert_eq!(again.unwrap_err().raw_os_error(), Some(libc::EEXIST));
    }

    #[test]
    fn mmap_accessors_check_bounds_alignment_and_access() {
        // A shared mapping of a memfd stands in for a ring.
        let f = OwnedFd::from(tempfile_like());
        let m = Mmap::map_shared(f.as_fd(), 4096, true, 0).expect("mmap");
        m.store_u64(8, u64::MAX, Ordering::Release).expect("store");
        assert_eq!(m.load_u64(8, Ordering::Acquire).expect("load"), u64::MAX);
        assert_eq!(m.load_u32(8, Ordering::Relaxed).expect("load"), u32::MAX);
        assert!(m.load_u64(4089, Ordering::Relaxed).is_err(), "past the end");
        assert!(m.load_u64(4, Ordering::Relaxed).is_err(), "misaligned");
        assert!(
            m.load_u64(usize::MAX - 3, Ordering::Relaxed).is_err(),
            "wraps"
        );
        assert!(m.read::<raw::memreg_cqe>(4096 - 16).is_err());
        let cqe = raw::memreg_cqe {
            user_data: 1,
            bytes: 2,
            status: -3,
            flags: 4,
            imm_data: 5,
        };
        m.write(64, &cqe).expect("write");
        assert_eq!(m.read::<raw::memreg_cqe>(64).expect("read"), cqe);
        assert_eq!(
            m.compare_exchange_u64(8, 0, 1, Ordering::Relaxed, Ordering::Relaxed)
                .expect("cas"),
            Err(u64::MAX)
        );
        let ro = Mmap::map_shared(f.as_fd(), 4096, false, 0).expect("mmap");
        assert_eq!(ro.load_u32(64, Ordering::Acquire).expect("load"), 1);
        let err = ro.store_u32(0, 1, Ordering::Relaxed).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EACCES));
    }

    /// The queue view refuses mappings too short for its rings, a read-only
    /// submission ring and sizes not powers of two; its accessors mask any
    /// position into the ring.
    #[test]
    fn queue_maps_check_the_layout_once() {
        let f = OwnedFd::from(tempfile_like());
        let map = |w| Mmap::map_shared(f.as_fd(), 4096, w, 0).expect("mmap");
        // 64 + 64 * 64 slots > 4096.
        assert!(QueueMaps::new(map(true), map(false), 64, 64).is_err());
        // 64 + 32 * 128 completions > 4096.
        assert!(QueueMaps::new(map(true), map(false), 4, 128).is_err());
        assert!(QueueMaps::new(map(false), map(false), 4, 4).is_err());
        assert!(QueueMaps::new(map(true), map(false), 3, 4).is_err());
        let q = QueueMaps::new(map(true), map(false), 32, 64).expect("fits");
        let w = map(true);
        q.slot_seq(u64::MAX).store(7, Ordering::Relaxed);
        let last = raw::MEMREG_SQ_SLOTS_OFFSET as usize + 31 * 64;
        assert_eq!(w.load_u64(last, Ordering::Relaxed).expect("seq"), 7);
        let cqe = raw::memreg_cqe {
            user_data: 9,
            ..Default::default()
        };
        w.write(raw::MEMREG_CQ_ENTRIES_OFFSET as usize + 63 * 32, &cqe)
            .expect("cqe");
        assert_eq!(q.read_cqe(u32::MAX), cqe);
    }

    /// A 4 KiB anonymous shared file for the tests.
    fn tempfile_like() -> std::fs::File {
        let f = tempfile_path();
        f.set_len(4096).expect("set_len");
        f
    }

    fn tempfile_path() -> std::fs::File {
        let dir = std::env::temp_dir();
        let path = dir.join(format!(
            "memreg-sys-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("temp file");
        let _ = std::fs::remove_file(&path);
        f
    }

    use std::os::fd::AsFd;

    #[test]
    fn descriptors_travel_over_a_socket_pair() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let f = tempfile_like();
        send_fd(&a, f.as_fd()).expect("send");
        let got = recv_fd(&b).expect("recv");
        let got = std::fs::File::from(got);
        assert_eq!(got.metadata().expect("stat").len(), 4096);
        drop(a);
        let eof = recv_fd(&b).unwrap_err();
        assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn poll_times_out_and_page_size_is_sane() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        assert_eq!(poll(a.as_fd(), libc::POLLIN, 0).expect("poll"), 0);
        assert!(poll(a.as_fd(), libc::POLLOUT, 0).expect("poll") & libc::POLLOUT != 0);
        assert!(page_size().is_power_of_two());
    }
}
