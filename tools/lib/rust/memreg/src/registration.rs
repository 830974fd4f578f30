// SPDX-License-Identifier: GPL-2.0

//! Registrations made by `MEMREG_IOC_REGISTER`.

use std::io;
use std::marker::PhantomData;

use memreg_sys as raw;

use crate::{einval, sys, Access, Device};

/// What a registration's state word says (see `state-and-events.rst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordState {
    /// The word equals the generation: the registration is live or parked.
    Valid,
    /// Suspended: REGISTER of its range again revalidates it.
    Suspended,
    /// Ended (or its slot was reused by a later registration).
    Ended,
}

impl WordState {
    /// Classifies the state word `word` of a registration of `generation`.
    pub fn from_word(word: u64, generation: u64) -> WordState {
        if word == generation {
            WordState::Valid
        } else if word == generation | u64::from(raw::MEMREG_WORD_SUSPENDED) {
            WordState::Suspended
        } else {
            WordState::Ended
        }
    }
}

/// Whether the region REGISTER answered with holds the range asked for.
pub(crate) fn region_holds(r: &raw::memreg_register, addr: u64, len: u64) -> bool {
    r.region_addr <= addr
        && r.region_addr
            .checked_add(r.region_length)
            .is_some_and(|end| end >= addr.saturating_add(len))
}

/// A registration, deregistered when dropped.
///
/// It borrows the device and, when made by [`Device::register`] or
/// [`Device::register_ro`], the buffer, for `'a`.
#[derive(Debug)]
pub struct Registration<'a> {
    dev: &'a Device,
    r: raw::memreg_register,
    /// The range asked for: `[addr, addr + len)`.
    addr: u64,
    len: u64,
    /// Whether the crate may let the kernel write the range.
    writable: bool,
    _buf: PhantomData<&'a mut [u8]>,
}

impl<'a> Registration<'a> {
    pub(crate) fn new(
        dev: &'a Device,
        addr: u64,
        len: u64,
        access: Access,
        writable: bool,
    ) -> io::Result<Registration<'a>> {
        let mut r = raw::memreg_register {
            addr,
            length: len,
            access: access.bits(),
            ..Default::default()
        };
        sys::register(dev.fd(), &mut r)?;
        let reg = Registration {
            dev,
            r,
            addr,
            len,
            writable,
            _buf: PhantomData,
        };
        // The keys name a region holding the range asked for; anything else
        // is a kernel bug, refused rather than used.
        if !region_holds(&r, addr, len) {
            return Err(crate::eproto());
        }
        Ok(reg)
    }

    /// The local key, for this context's calls and requests.
    pub fn lkey(&self) -> u64 {
        self.r.lkey
    }

    /// The remote key, for peers (0 without remote rights).
    pub fn rkey(&self) -> u64 {
        self.r.rkey
    }

    /// The registration the keys name, `(region_addr, region_length)`: the
    /// range asked for on a miss, possibly a wider one on a local-only
    /// cache hit of the kernel. Offsets in requests count from
    /// `region_addr`.
    pub fn region(&self) -> (u64, u64) {
        (self.r.region_addr, self.r.region_length)
    }

    /// The offset of the registered buffer's first byte in the region, to
    /// add to buffer offsets in requests naming [`Registration::lkey`].
    pub fn buffer_offset(&self) -> u64 {
        self.addr - self.r.region_addr
    }

    /// The length of the buffer asked for.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the buffer asked for is empty (REGISTER refuses one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The rights the keys carry.
    pub fn access(&self) -> Access {
        Access::from_bits(self.r.access)
    }

    /// Whether the kernel answered with an existing registration
    /// (`MEMREG_REGISTER_CACHED`).
    pub fn was_cached(&self) -> bool {
        self.r.flags & raw::MEMREG_REGISTER_CACHED != 0
    }

    /// The index of the registration's state word, `None` with
    /// `MEMREG_NO_SLOT` (the state words were not mapped when it was
    /// created, or every slot was taken).
    pub fn slot(&self) -> Option<u32> {
        (self.r.slot != raw::MEMREG_NO_SLOT).then_some(self.r.slot)
    }

    /// The state word's value while the registration is usable (0 without
    /// a slot).
    pub fn generation(&self) -> u64 {
        self.r.generation
    }

    /// What the state word says now (one acquire load), `None` without a
    /// slot or when this `Device` has not mapped the words.
    pub fn word_state(&self) -> Option<WordState> {
        let slot = self.slot()?;
        let w = self.dev.state_word(slot)?;
        Some(WordState::from_word(w, self.r.generation))
    }

    /// Whether the registration is usable now.
    ///
    /// With a state word this is one acquire load and no system call (map
    /// the words with [`Device::map_state_words`] before registering);
    /// otherwise it asks the kernel with `MEMREG_IOC_QUERY`. A suspended
    /// registration is not usable until revalidated. The answer may change
    /// right after: a COPY with a key that ended fails with `ENOENT`, never
    /// reaching other memory.
    pub fn is_valid(&self) -> io::Result<bool> {
        if let Some(state) = self.word_state() {
            return Ok(state == WordState::Valid);
        }
        match self.dev.query(self.r.lkey) {
            Ok(q) => Ok(q.is_usable() && q.state & raw::MEMREG_STATE_SUSPENDED == 0),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Describes the registration (`MEMREG_IOC_QUERY`).
    pub fn query(&self) -> io::Result<crate::QueryInfo> {
        self.dev.query(self.r.lkey)
    }

    /// Translates `[offset, offset + len)` of the buffer into an offset in
    /// the region, checking that it lies within the buffer.
    fn region_offset(&self, offset: u64, len: usize) -> io::Result<u64> {
        let end = offset.checked_add(len as u64).ok_or_else(einval)?;
        if end > self.len {
            return Err(einval());
        }
        Ok(self.buffer_offset() + offset)
    }

    /// Copies `data` into the registered buffer at `offset` through the
    /// kernel (`MEMREG_IOC_COPY`), which reaches the pages only through the
    /// registration: `ENOENT` once it ended.
    ///
    /// Offsets count from the buffer's start; a range past its end is
    /// `EINVAL`. A registration of a shared borrow refuses (`EACCES`).
    pub fn copy_to(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        let off = self.region_offset(offset, data.len())?;
        sys::copy_to_region(self.dev.fd(), self.r.lkey, off, data)
    }

    /// Copies from the registered buffer at `offset` into `out` through the
    /// kernel (`MEMREG_IOC_COPY`).
    pub fn copy_from(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let off = self.region_offset(offset, out.len())?;
        sys::copy_from_region(self.dev.fd(), self.r.lkey, off, out)
    }

    /// Deregisters now, reporting the kernel's answer (dropping does the
    /// same and ignores it). `ENOENT` when the registration had ended.
    pub fn deregister(self) -> io::Result<()> {
        let key = self.r.lkey;
        let dev = self.dev;
        std::mem::forget(self);
        dev.deregister_key(key)
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        // ENOENT: it ended by itself; nothing else can fail for our key.
        let _ = self.dev.deregister_key(self.r.lkey);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_states() {
        let g = 8;
        assert_eq!(WordState::from_word(8, g), WordState::Valid);
        assert_eq!(WordState::from_word(9, g), WordState::Suspended);
        assert_eq!(WordState::from_word(10, g), WordState::Ended);
        assert_eq!(WordState::from_word(12, g), WordState::Ended);
        assert_eq!(WordState::from_word(0, g), WordState::Ended);
        assert_eq!(WordState::from_word(u64::MAX, g), WordState::Ended);
    }
}
