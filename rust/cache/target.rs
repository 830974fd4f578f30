// SPDX-License-Identifier: GPL-2.0

//! Moving bytes through one registration's translation entries, and
//! [`Target`], a registration as a data request found it.

use super::registration::{Registration, RegistrationState};
use kernel::{mm::pin::PinnedPages, page::PAGE_SIZE, prelude::*, sync::Arc};

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
        let st = self.state.lock();
        let pinned = self.usable(&st, generation)?;
        if to_registration {
            pinned.write(at, buf)
        } else {
            pinned.read(at, buf)
        }
    }

    /// Copies `len` bytes at byte `offset` of this registration to byte
    /// `dst_offset` of `dst`, page to page through both registrations'
    /// translation entries, holding both registrations' locks (so neither
    /// can end during the copy). Fails with `EBUSY`, moving nothing, when
    /// `dst`'s lock is taken (it is only tried: two copies in opposite
    /// directions never wait for each other); the caller then goes through a
    /// bounce buffer. Otherwise as [`Registration::copy_chunk`], for either.
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
        let st = self.state.lock();
        let src_pages = self.usable(&st, generation)?;
        if core::ptr::eq(self, &*dst.registration) {
            if dst.generation != generation {
                return Err(ENOENT);
            }
            return src_pages.copy_to(at, src_pages, dst_at, len);
        }
        let dst_st = dst.state.try_lock().ok_or(EBUSY)?;
        let dst_pages = dst.usable(&dst_st, dst.generation)?;
        src_pages.copy_to(at, dst_pages, dst_at, len)
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

    /// The pinned pages, if data may move through them for a request that
    /// found the registration at `generation`: `EAGAIN` while suspended,
    /// `ENOENT` once ended or parked since.
    fn usable<'a>(&self, st: &'a RegistrationState, generation: u64) -> Result<&'a PinnedPages> {
        match &st.pinned {
            Some(_) if !self.is_live() || self.generation() != generation => Err(ENOENT),
            Some(_) if self.is_suspended() => Err(EAGAIN),
            Some(p) => Ok(p),
            _ => Err(ENOENT),
        }
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
