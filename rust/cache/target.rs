// SPDX-License-Identifier: GPL-2.0

//! Moving bytes through one registration's translation entries, and
//! [`Target`], a registration as a data request found it.

use super::registration::Registration;
use kernel::{
    mm::pin::PinnedPages,
    page::PAGE_SIZE,
    prelude::*,
    sync::{drain_slot::SlotRef, Arc},
};

impl Registration {
    /// Copies `buf.len()` bytes of the registered range from byte `offset`
    /// (relative to the registered address) into `buf`, or from `buf` into the
    /// range when `to_registration`, if the registration is still at
    /// `generation`. Fails with `ENOENT` when the registration is no longer
    /// live or was parked since, and `EAGAIN` while it is suspended; nothing
    /// moves then.
    fn copy_chunk(
        &self,
        generation: u64,
        offset: u64,
        buf: &mut [u8],
        to_registration: bool,
    ) -> Result {
        let at = self.byte_index(offset)?;
        let pinned = self.usable(generation)?;
        if to_registration {
            pinned.write(at, buf)
        } else {
            pinned.read(at, buf)
        }
    }

    /// Copies `len` bytes at byte `offset` of this registration to byte
    /// `dst_offset` of `dst`, page to page through both registrations'
    /// translation entries, with no lock: each side's pages are borrowed
    /// (see [`Registration::usable`]), so neither can end during the copy
    /// and two copies never wait for each other. Fails as
    /// [`Registration::copy_chunk`] does, for either.
    fn copy_to(
        &self,
        generation: u64,
        offset: u64,
        dst: &Target,
        dst_offset: u64,
        len: usize,
    ) -> Result {
        let at = self.byte_index(offset)?;
        let dst_at = dst.byte_index(dst_offset)?;
        let src_pages = self.usable(generation)?;
        if core::ptr::eq(self, &*dst.registration) {
            if dst.generation != generation {
                return Err(ENOENT);
            }
            return src_pages.copy_to(at, &src_pages, dst_at, len);
        }
        let dst_pages = dst.usable(dst.generation)?;
        src_pages.copy_to(at, &dst_pages, dst_at, len)
    }

    /// The index into the pinned pages' bytes of byte `offset` of the
    /// registered range.
    fn byte_index(&self, offset: u64) -> Result<usize> {
        let page_offset = (self.info.addr as usize) % PAGE_SIZE;
        usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(page_offset))
            .ok_or(EINVAL)
    }

    /// Borrows the pinned pages, if data may move through them for a
    /// request that found the registration at `generation`: `EAGAIN` while
    /// suspended, `ENOENT` once ended or parked since. The borrow is counted
    /// before the state is read, and whatever ends, parks or suspends the
    /// registration changes the state first and then waits for the borrows
    /// in progress: no data moves through the pages after that returned. A
    /// short section that must not sleep.
    fn usable(&self, generation: u64) -> Result<SlotRef<'_, PinnedPages>> {
        let pages = self.pages.borrow().ok_or(ENOENT)?;
        if !self.is_live() || self.generation() != generation {
            return Err(ENOENT);
        }
        if self.is_suspended() {
            return Err(EAGAIN);
        }
        Ok(pages)
    }
}

/// A registration as a data request found it by key: data moves through it
/// only while it is at the generation it was found at, so nothing moves
/// through keys that a DEREGISTER ended (parking) after the look-up, even if
/// a REGISTER revived the registration with new keys since.
#[derive(Clone)]
pub(crate) struct Target {
    registration: Arc<Registration>,
    generation: u64,
}

impl Target {
    /// `registration` at its generation now: call it under the lock its
    /// look-up was made under (the cache's, or its shadow's), which
    /// parking takes before it moves to a new generation.
    pub(crate) fn new(registration: Arc<Registration>) -> Self {
        let generation = registration.generation();
        Self {
            registration,
            generation,
        }
    }

    /// The registration.
    pub(crate) fn registration(&self) -> &Arc<Registration> {
        &self.registration
    }

    /// Whether `self` and `other` are the same registration.
    pub(crate) fn same(&self, other: &Target) -> bool {
        Arc::ptr_eq(&self.registration, &other.registration)
    }

    /// Copies between `buf` and the registered range as
    /// [`Registration::copy_chunk`] does, at the generation it was found at.
    pub(crate) fn copy_chunk(&self, offset: u64, buf: &mut [u8], to_registration: bool) -> Result {
        self.registration
            .copy_chunk(self.generation, offset, buf, to_registration)
    }

    /// Copies page to page to `dst` as [`Registration::copy_to`] does, each
    /// side at the generation it was found at.
    pub(crate) fn copy_to(&self, offset: u64, dst: &Target, dst_offset: u64, len: usize) -> Result {
        self.registration
            .copy_to(self.generation, offset, dst, dst_offset, len)
    }
}

impl core::ops::Deref for Target {
    type Target = Registration;

    fn deref(&self) -> &Registration {
        &self.registration
    }
}
