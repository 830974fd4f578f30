// SPDX-License-Identifier: GPL-2.0

//! What a registration covers, fixed when it is created.

use super::key::KeyPair;
use crate::uapi;
use kernel::{page::PAGE_SIZE, prelude::*};

/// What a registration covers, fixed at creation.
#[derive(Clone, Copy)]
pub(crate) struct RegistrationInfo {
    /// Address as registered.
    pub(crate) addr: u64,
    /// Length in bytes as registered.
    pub(crate) length: u64,
    /// `MEMREG_ACCESS_*` bits.
    pub(crate) access: u32,
    /// Number of pages.
    pub(crate) npages: usize,
    /// The keys it was created with; `keys.seq` never changes, the keys
    /// themselves do at each revival ([`Registration::lkey`]).
    pub(crate) keys: KeyPair,
    /// A chunk of a buffer pool (`pool.rs`): its pages are the pool's, the
    /// pool alone ends it, and REGISTER never returns it.
    pub(crate) pool: bool,
    /// Watch-only: its pages are not pinned (their frames are recorded), and
    /// no data moves through it.
    pub(crate) watch: bool,
    /// The caller's value, reported with its events.
    pub(crate) user_data: u64,
}

impl RegistrationInfo {
    /// The first byte of the first page.
    pub(crate) fn page_addr(&self) -> usize {
        self.addr as usize & !(PAGE_SIZE - 1)
    }

    /// Whether this registration serves a request for `length` bytes at
    /// `addr` with `access`: it grants exactly the remote rights asked (a
    /// remote key never grants a peer more than the caller asked for), at
    /// least the local ones, and covers the range: exactly, when remote
    /// rights are asked (a peer given the keys reaches no byte outside the
    /// range the caller named), or with room around it otherwise.
    pub(crate) fn covers(&self, addr: u64, length: u64, access: u32) -> bool {
        let (Some(end), Some(my_end)) =
            (addr.checked_add(length), self.addr.checked_add(self.length))
        else {
            return false;
        };
        if (access ^ self.access) & uapi::ACCESS_REMOTE != 0 || access & !self.access != 0 {
            return false;
        }
        if access & uapi::ACCESS_REMOTE != 0 {
            return self.addr == addr && my_end == end;
        }
        self.addr <= addr && end <= my_end
    }

    /// Whether the pages must be pinned for writing.
    pub(crate) fn writable(&self) -> bool {
        self.access & (uapi::ACCESS_LOCAL_WRITE | uapi::ACCESS_REMOTE_WRITE) != 0
    }

    /// The registered bytes as a closed interval `(first, last)`. A
    /// registration is never empty and never wraps.
    pub(crate) fn interval(&self) -> (usize, usize) {
        let first = self.addr as usize;
        (
            first,
            first.saturating_add((self.length as usize).saturating_sub(1)),
        )
    }
}

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_registration_info)]
mod tests {
    use super::*;

    fn info(addr: u64, length: u64, access: u32) -> RegistrationInfo {
        RegistrationInfo {
            addr,
            length,
            access,
            npages: 0,
            keys: KeyPair {
                seq: 1,
                lkey: 1 << 24,
                rkey: 2 << 24,
            },
            pool: false,
            watch: false,
            user_data: 0,
        }
    }

    #[test]
    fn covers_needs_the_whole_range() {
        let r = info(0x1000, 0x3000, uapi::ACCESS_LOCAL_READ);
        assert!(r.covers(0x1000, 0x3000, uapi::ACCESS_LOCAL_READ));
        assert!(r.covers(0x2000, 0x10, uapi::ACCESS_LOCAL_READ));
        assert!(r.covers(0x3fff, 1, uapi::ACCESS_LOCAL_READ));
        // Partial overlaps at either end are not covered.
        assert!(!r.covers(0xfff, 2, uapi::ACCESS_LOCAL_READ));
        assert!(!r.covers(0x3fff, 2, uapi::ACCESS_LOCAL_READ));
        assert!(!r.covers(0x0, 0x8000, uapi::ACCESS_LOCAL_READ));
        // A range that wraps is never covered.
        assert!(!r.covers(u64::MAX, 2, uapi::ACCESS_LOCAL_READ));
        assert_eq!(r.interval(), (0x1000, 0x3fff));
    }

    #[test]
    fn covers_needs_at_least_the_access() {
        let rw = uapi::ACCESS_LOCAL_READ | uapi::ACCESS_LOCAL_WRITE;
        let r = info(0x1000, 0x1000, rw);
        assert!(r.covers(0x1000, 0x1000, uapi::ACCESS_LOCAL_READ));
        assert!(r.covers(0x1000, 0x1000, rw));
        assert!(!r.covers(0x1000, 0x1000, rw | uapi::ACCESS_REMOTE_WRITE));
        let ro = info(0x1000, 0x1000, uapi::ACCESS_LOCAL_READ);
        assert!(!ro.covers(0x1000, 0x1000, rw));
    }

    #[test]
    fn remote_rights_are_served_exactly() {
        let rw = uapi::ACCESS_LOCAL_READ | uapi::ACCESS_LOCAL_WRITE;
        let remote = rw | uapi::ACCESS_REMOTE_WRITE;
        let r = info(0x1000, 0x4000, remote);
        // The exact range and rights: served.
        assert!(r.covers(0x1000, 0x4000, remote));
        // Remote rights on part of it: a miss (a peer would reach more than was named).
        assert!(!r.covers(0x2000, 0x1000, remote));
        // Fewer remote rights, or none: a miss (a key grants exactly what was asked).
        assert!(!r.covers(0x1000, 0x4000, rw));
        assert!(!r.covers(0x2000, 0x1000, uapi::ACCESS_LOCAL_READ));
        // Other remote rights: a miss.
        assert!(!r.covers(0x1000, 0x4000, rw | uapi::ACCESS_REMOTE_READ));
        // Without remote rights, a wider range with more local rights serves.
        let l = info(0x1000, 0x4000, rw);
        assert!(l.covers(0x2000, 0x1000, uapi::ACCESS_LOCAL_READ));
        assert!(!l.covers(
            0x2000,
            0x1000,
            uapi::ACCESS_LOCAL_READ | uapi::ACCESS_REMOTE_READ
        ));
    }

    #[test]
    fn writable_follows_write_access() {
        assert!(!info(0, 1, uapi::ACCESS_LOCAL_READ).writable());
        assert!(info(0, 1, uapi::ACCESS_LOCAL_WRITE).writable());
        assert!(info(0, 1, uapi::ACCESS_REMOTE_WRITE).writable());
        assert!(!info(0, 1, uapi::ACCESS_LOCAL_READ | 1 << 2).writable());
    }
}
