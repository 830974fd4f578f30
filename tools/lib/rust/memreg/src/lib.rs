// SPDX-License-Identifier: GPL-2.0

//! A safe user-space interface to memreg, the kernel module that registers
//! user memory once for many zero-copy requests and ends a registration by
//! itself when the memory under it changes.
//!
//! The user API is documented in `Documentation/userspace-api/memreg/`; this
//! crate follows it and the kselftests in `tools/testing/selftests/memreg/`.
//!
//! - [`Device`]: an open `/dev/memreg` file (a context), with its ioctls.
//! - [`Registration`]: a registered buffer, borrowed while registered.
//! - [`Cache`]: a registration cache in user space, checking its entries with
//!   the state words and dropping them on the event ring's events.
//! - [`Queue`]: the data path's submission and completion rings, with
//!   typed [`Request`]s; [`MasterRing`].
//! - [`Pool`]: buffer pools, and [`PoolBuffer`]s lent as byte slices.
//! - [`EventRing`]: what ended or was suspended.
//! - Peers: [`send_fd`], [`recv_fd`], [`Device::attach_peer`],
//!   [`Queue::connect`].
//!
//! Errors are [`std::io::Error`]s carrying the errno the kernel answered
//! (see `errors.rst`), so `err.raw_os_error()` tells them apart.
//!
//! # Safety
//!
//! All `unsafe` code is in one private module, `sys`, whose documentation
//! states what it guarantees. Values read from memory the kernel shares
//! (ring indexes, counts, entries) are validated before use and never make
//! this crate panic or access memory out of bounds: a ring whose words make
//! no sense reads as empty or full. The kernel moves data into registered
//! memory by key, as a device does by DMA; the borrowing interfaces
//! ([`Device::register`], [`Device::register_ro`], [`Pool`]) make sure safe
//! code holds no reference to memory the kernel may write: a borrowing
//! registration names exactly the borrowed bytes, and neither it nor a pool
//! lets peers write. The raw-range ones ([`Device::register_range`],
//! [`Cache::get`]) document what they leave to the program.
//!
//! A key, though, is a number that outlives any borrow (a registration may
//! be `mem::forget`ten, a pool buffer given back by a request while its
//! [`PoolBuffer`] lives). So, as in the tokio-rs `io-uring` crate, handing
//! requests or raw keys to the kernel is `unsafe`: [`Queue::try_submit`],
//! [`Queue::submit`], [`Queue::submit_timeout`] and [`Device::copy_to_key`]
//! state in their `# Safety` sections what the caller vouches for. Their
//! declarations are the only `unsafe` outside `sys`; they contain none.

#![deny(unsafe_code)]
#![warn(missing_docs)]

#[allow(unsafe_code)]
mod sys;

mod anon;
mod cache;
mod device;
mod events;
mod peer;
mod pool;
mod queue;
mod registration;

pub use anon::AnonMap;
pub use cache::{Cache, CachedMr, InvalidateInfo};
pub use device::{CacheConfig, Device, QueryInfo, DEFAULT_STATE_SLOTS, DEVICE_PATH};
pub use events::{Event, EventIter, EventKind, EventRing, ResyncEntry};
pub use memreg_sys as raw;
pub use peer::{recv_fd, send_fd, Peer};
pub use pool::{Pool, PoolBuffer, PoolClass};
pub use queue::{Completion, Completions, MasterRing, Queue, Request};
pub use registration::{Registration, WordState};

use std::io;
use std::ops::{BitOr, BitOrAssign};

/// Access rights of a registration (`MEMREG_ACCESS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Access(u32);

impl Access {
    /// The owner's calls and requests may read it.
    pub const LOCAL_READ: Access = Access(raw::MEMREG_ACCESS_LOCAL_READ);
    /// The owner's calls and requests may write it.
    pub const LOCAL_WRITE: Access = Access(raw::MEMREG_ACCESS_LOCAL_WRITE);
    /// Peers may read it by its remote key.
    pub const REMOTE_READ: Access = Access(raw::MEMREG_ACCESS_REMOTE_READ);
    /// Peers may write it by its remote key.
    pub const REMOTE_WRITE: Access = Access(raw::MEMREG_ACCESS_REMOTE_WRITE);
    /// Local read and write.
    pub const LOCAL: Access =
        Access(raw::MEMREG_ACCESS_LOCAL_READ | raw::MEMREG_ACCESS_LOCAL_WRITE);
    /// Every right.
    pub const ALL: Access = Access(raw::MEMREG_ACCESS_ALL);

    /// The rights in `bits`; bits outside `MEMREG_ACCESS_ALL` are kept, for
    /// the kernel to refuse.
    pub const fn from_bits(bits: u32) -> Access {
        Access(bits)
    }

    /// The `MEMREG_ACCESS_*` bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every right of `other` is in `self`.
    pub const fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether a write right (local or remote) is in `self`.
    pub const fn writes(self) -> bool {
        self.0 & (raw::MEMREG_ACCESS_LOCAL_WRITE | raw::MEMREG_ACCESS_REMOTE_WRITE) != 0
    }
}

impl BitOr for Access {
    type Output = Access;

    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

impl BitOrAssign for Access {
    fn bitor_assign(&mut self, rhs: Access) {
        self.0 |= rhs.0;
    }
}

/// An `EINVAL` error.
pub(crate) fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// An error for values read from shared memory or answered by the kernel
/// that make no sense.
pub(crate) fn eproto() -> io::Error {
    io::Error::from_raw_os_error(libc::EPROTO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_bits() {
        let rw = Access::LOCAL_READ | Access::LOCAL_WRITE;
        assert_eq!(rw, Access::LOCAL);
        assert!(Access::ALL.contains(rw));
        assert!(!Access::LOCAL_READ.contains(rw));
        assert!(rw.writes());
        assert!(!(Access::LOCAL_READ | Access::REMOTE_READ).writes());
        assert_eq!(Access::ALL.bits(), 0xf);
    }

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn handles_are_send_and_sync() {
        send_sync::<Device>();
        send_sync::<Registration<'static>>();
        send_sync::<Cache<'static>>();
        send_sync::<CachedMr<'static, 'static>>();
        send_sync::<Queue<'static>>();
        send_sync::<MasterRing<'static>>();
        send_sync::<EventRing<'static>>();
        send_sync::<Pool<'static>>();
        send_sync::<PoolBuffer<'static>>();
        send_sync::<AnonMap>();
    }
}
