// SPDX-License-Identifier: GPL-2.0

//! Moving bytes through registrations: the one place that copies, for the
//! worker's operations and for the COPY ioctl.
//!
//! Data moves page to page between two registrations, one copy, with no
//! lock: each step borrows both registrations' pages (a counted, short
//! section that does not sleep), so copies never wait for each other nor
//! for a lock order. Overlapping ranges of one registration go through a
//! bounce buffer. Whatever ends, parks or suspends a registration waits for
//! the borrows in progress, so a registration that ends is never written
//! after the invalidation that ended it returned. A suspended registration
//! is revalidated before it is used, at most [`USE_TRIES`] times per step.

use super::{worker::WorkerState, DataPath};
use crate::{
    cache::{
        registration::{Registration, Revalidated},
        target::Target,
    },
    error::MemregError,
    peer,
};
use kernel::error::compat::ECANCELED;
use kernel::{
    prelude::*,
    task::resched::{cond_resched, fatal_signal_pending},
    uaccess::{UserPtr, UserSlice},
};

/// Bytes moved per step through a bounce buffer (its size).
pub(crate) const COPY_CHUNK: usize = 16 * 1024;
/// Bytes moved per step page to page, under borrows of both registrations'
/// pages (the longest an invalidation waits for a copy).
const DIRECT_CHUNK: usize = 64 * 1024;
/// Times a step (or a REGISTER that found a suspended registration)
/// revalidates a suspended registration before it gives up.
pub(crate) const USE_TRIES: u32 = 3;

/// Runs `step` on `targets`, revalidating them when it finds one suspended
/// (`EAGAIN`). `ENOENT` when one of them ended.
fn with_revalidation<T>(targets: &[&Target], mut step: impl FnMut() -> Result<T>) -> Result<T> {
    let mut tries = 0;
    loop {
        match step() {
            Err(e) if e == EAGAIN && tries < USE_TRIES => {
                tries += 1;
                for r in targets {
                    if Registration::revalidate(r.registration())? == Revalidated::Ended {
                        return Err(ENOENT);
                    }
                }
            }
            result => return result,
        }
    }
}

/// Moves `buf.len()` bytes at `offset` of `r` into `buf` or, with `to`, out
/// of it.
fn move_chunk(r: &Target, offset: u64, buf: &mut [u8], to: bool) -> Result {
    with_revalidation(&[r], || r.copy_chunk(offset, buf, to))
}

/// Copies `n` bytes page to page.
fn copy_direct(src: &Target, src_at: u64, dst: &Target, dst_at: u64, n: usize) -> Result {
    with_revalidation(&[src, dst], || src.copy_to(src_at, dst, dst_at, n))
}

/// Checks that `length` bytes at `offset` lie within `r`.
pub(crate) fn check_range(r: &Registration, offset: u64, length: u64) -> Result<(), MemregError> {
    let end = offset.checked_add(length).ok_or(EOVERFLOW)?;
    if end > r.info.length {
        return Err(EINVAL.into());
    }
    Ok(())
}

/// A grant a transfer goes through: the peer's context and the epoch of the
/// attachment.
pub(crate) type Grant<'a> = Option<(&'a DataPath, u64)>;

/// One side of a transfer: a registration and an offset in it, checked to
/// lie within it for the transfer's length.
pub(crate) struct Side<'a> {
    /// The registration.
    pub(crate) target: &'a Target,
    /// The offset in it.
    pub(crate) offset: u64,
}

/// Moves `length` bytes from `src` to `dst`, in steps between which the
/// file's release and, through `grant`, the peer's revocation are looked at.
pub(crate) fn transfer(
    data: &DataPath,
    ws: &mut WorkerState,
    src: Side<'_>,
    dst: Side<'_>,
    length: u64,
    grant: Grant<'_>,
) -> Result<(), MemregError> {
    let overlap = src.target.same(dst.target)
        && src.offset < dst.offset.saturating_add(length)
        && dst.offset < src.offset.saturating_add(length);
    let mut done = 0u64;
    while done < length {
        if data.is_closing() {
            return Err(ECANCELED.into());
        }
        // A DOORBELL's caller being killed stops a transfer it serves.
        if ws.interrupted() {
            return Err(EINTR.into());
        }
        if let Some((peer, epoch)) = grant {
            peer::check_grant(peer, epoch)?;
        }
        let left = length.checked_sub(done).ok_or(EINVAL)?;
        let src_at = src.offset.checked_add(done).ok_or(EOVERFLOW)?;
        let dst_at = dst.offset.checked_add(done).ok_or(EOVERFLOW)?;
        if !overlap {
            let n = left.min(DIRECT_CHUNK as u64) as usize;
            copy_direct(src.target, src_at, dst.target, dst_at, n)?;
            done = done.checked_add(n as u64).ok_or(EOVERFLOW)?;
            cond_resched();
            continue;
        }
        let n = left.min(COPY_CHUNK as u64) as usize;
        let buf = ws.bounce(&data.memcg)?.get_mut(..n).ok_or(EINVAL)?;
        move_chunk(src.target, src_at, buf, false)?;
        move_chunk(dst.target, dst_at, buf, true)?;
        done = done.checked_add(n as u64).ok_or(EOVERFLOW)?;
        cond_resched();
    }
    Ok(())
}

/// Moves `length` bytes between the user buffer at `buf` and `offset` of
/// `r`: into the registration with `to_registration`, out of it otherwise.
/// The range was checked to lie within `r`. Stops with `EINTR` on a fatal
/// signal.
pub(crate) fn copy_user(
    r: &Target,
    offset: u64,
    buf: usize,
    length: usize,
    to_registration: bool,
) -> Result {
    if length == 0 {
        return Ok(());
    }
    let mut bounce = KVVec::from_elem(0u8, length.min(COPY_CHUNK), GFP_KERNEL)?;
    let user = UserSlice::new(UserPtr::from_addr(buf), length);
    let (mut reader, mut writer) = user.reader_writer();
    let mut done = 0usize;
    while done < length {
        if fatal_signal_pending() {
            return Err(EINTR);
        }
        let n = (length - done).min(COPY_CHUNK);
        let chunk = bounce.get_mut(..n).ok_or(EINVAL)?;
        let at = offset.checked_add(done as u64).ok_or(EOVERFLOW)?;
        if to_registration {
            reader.read_slice(chunk)?;
        }
        move_chunk(r, at, chunk, to_registration)?;
        if !to_registration {
            writer.write_slice(chunk)?;
        }
        done += n;
        cond_resched();
    }
    Ok(())
}
