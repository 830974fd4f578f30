// SPDX-License-Identifier: GPL-2.0

//! Peers: the contexts of other files this context was granted access to.
//!
//! A process grants access to its registrations by passing its
//! `/dev/memreg` descriptor; the receiver attaches it
//! (`MEMREG_IOC_PEER_ATTACH`) and gets a handle. The handle holds the peer's
//! data path ([`Granter`]), never its file, so two files attached to each
//! other are both released when both are closed: the release of a file drops
//! its own handles, which breaks any cycle. Nothing else names another file:
//! no pid, no global key table.
//!
//! This module knows nothing of what it holds: [`Peers`] is generic over the
//! granter, so the data path uses it without the grants depending on the data
//! path.
//!
//! The grant is revocable. Each granter has a grant epoch, recorded by every
//! attachment to it; `MEMREG_IOC_PEER_REVOKE` moves it on, and closing the
//! file marks the context closing. Either way every later request through an
//! older attachment fails with `ECONNRESET`, and the receiving queues drop
//! the senders connected to them.
//!
//! Handles count up from 1 and are never reused by a context, so a stale
//! handle never names a newer peer.

use crate::{error::MemregError, stats::GLOBAL_PEERS, uapi};
use kernel::error::compat::{ECONNRESET, ENOTCONN};
use kernel::{
    prelude::*,
    sync::{atomic::Relaxed, Arc, SpinLock},
};

/// What grants access: the side a handle names.
pub(crate) trait Granter {
    /// Whether its file was released.
    fn is_closed(&self) -> bool;
    /// Its grant epoch now; PEER_REVOKE moves it on.
    fn grant_epoch(&self) -> u64;
}

/// One attachment: a granter, as of its grant epoch.
pub(crate) struct Peer<T> {
    /// The handle, nonzero.
    handle: u32,
    /// The granter.
    target: Arc<T>,
    /// The granter's grant epoch when attached.
    epoch: u64,
}

/// Whether a grant of `granter` made at `epoch` still holds: `ECONNRESET`
/// once its file is released or it revoked its grants.
pub(crate) fn check_grant<T: Granter>(granter: &T, epoch: u64) -> Result<(), MemregError> {
    if granter.is_closed() || granter.grant_epoch() != epoch {
        return Err(ECONNRESET.into());
    }
    Ok(())
}

/// A file's attachments, under its lock (level 5 of the lock order).
pub(crate) struct Peers<T> {
    /// The attachments; room for `MEMREG_MAX_PEERS` once one was made.
    list: KVec<Peer<T>>,
    /// The next handle; 0 once they ran out.
    next: u32,
}

impl<T> Peers<T> {
    /// No attachment.
    pub(crate) const fn new() -> Self {
        Self {
            list: KVec::new(),
            next: 1,
        }
    }

    /// Attachments now.
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// The attachment of `handle`.
    pub(crate) fn find(&self, handle: u32) -> Option<&Peer<T>> {
        self.list.iter().find(|p| p.handle == handle)
    }

    /// Whether `room` must be given to [`Peers::attach`]: no room was made
    /// yet.
    pub(crate) fn needs_room(&self) -> bool {
        self.list.capacity() == 0
    }

    /// Adds an attachment to `target` as of `epoch` and returns its handle.
    /// `room` (empty, with capacity for `MEMREG_MAX_PEERS`) is used if no
    /// room was made yet. `ENOSPC` when full or out of handles. Never
    /// allocates.
    pub(crate) fn attach(
        &mut self,
        target: Arc<T>,
        epoch: u64,
        room: &mut KVec<Peer<T>>,
    ) -> Result<u32, (Error, Arc<T>)> {
        if self.list.capacity() == 0 {
            core::mem::swap(&mut self.list, room);
        }
        let handle = self.next;
        if handle == 0 || self.list.len() >= uapi::MAX_PEERS {
            return Err((ENOSPC, target));
        }
        if let Err(e) = self.list.push_within_capacity(Peer {
            handle,
            target,
            epoch,
        }) {
            return Err((ENOSPC, e.0.target));
        }
        GLOBAL_PEERS.add(1, Relaxed);
        self.next = handle.wrapping_add(1);
        Ok(handle)
    }

    /// Takes the attachment of `handle` out.
    pub(crate) fn detach(&mut self, handle: u32) -> Option<Peer<T>> {
        let i = self.list.iter().position(|p| p.handle == handle)?;
        let peer = self.list.remove(i).ok()?;
        GLOBAL_PEERS.fetch_sub(1, Relaxed);
        Some(peer)
    }

    /// Takes every attachment out.
    pub(crate) fn take_all(&mut self) -> KVec<Peer<T>> {
        let all = core::mem::replace(&mut self.list, KVec::new());
        GLOBAL_PEERS.fetch_sub(all.len() as u64, Relaxed);
        all
    }
}

/// Room for a file's attachments, allocated before its lock is taken.
pub(crate) fn room<T>() -> Result<KVec<Peer<T>>> {
    Ok(KVec::with_capacity(uapi::MAX_PEERS, GFP_KERNEL_ACCOUNT)?)
}

/// The attachment `handle` in `peers`: the granter and the epoch of the
/// grant, checked. `ENOTCONN` for a handle that is not there, `ECONNRESET`
/// for a grant that no longer holds.
pub(crate) fn lookup<T: Granter>(
    peers: &SpinLock<Peers<T>>,
    handle: u32,
) -> Result<(Arc<T>, u64), MemregError> {
    let (target, epoch) = {
        let peers = peers.lock();
        let p = peers.find(handle).ok_or(ENOTCONN)?;
        (p.target.clone(), p.epoch)
    };
    check_grant(&*target, epoch)?;
    Ok((target, epoch))
}
