// SPDX-License-Identifier: GPL-2.0

//! Peers: the contexts of other files this context was granted access to.
//!
//! A process grants access to its registrations by passing its
//! `/dev/memreg` descriptor; the receiver attaches it
//! (`MEMREG_IOC_PEER_ATTACH`) and gets a handle. The handle holds the peer's
//! context, never its file, so two files attached to each other are both
//! released when both are closed: the release of a file drops its own
//! handles, which breaks any cycle. Nothing else names another context: no
//! pid, no global key table.
//!
//! The grant is revocable. Each context has a grant epoch, recorded by every
//! attachment to it; `MEMREG_IOC_PEER_REVOKE` moves it on, and closing the
//! file marks the context closing. Either way every later request through an
//! older attachment fails with `ECONNRESET`, and the receiving queues drop
//! the senders connected to them.
//!
//! Handles count up from 1 and are never reused by a context, so a stale
//! handle never names a newer peer.

use crate::{context::ContextShared, error::MemregError, stats::GLOBAL_PEERS, uapi};
use kernel::{
    prelude::*,
    sync::{atomic::Relaxed, Arc},
};

/// One attachment: a peer's context, as of its grant epoch.
pub(crate) struct Peer {
    /// The handle, nonzero.
    pub(crate) handle: u32,
    /// The peer's context.
    pub(crate) ctx: Arc<ContextShared>,
    /// The peer's grant epoch when attached.
    pub(crate) epoch: u64,
}

/// Whether a grant of `ctx` made at `epoch` still holds: `ECONNRESET` once
/// its file is released or it revoked its grants.
pub(crate) fn check_grant(ctx: &ContextShared, epoch: u64) -> Result<(), MemregError> {
    if ctx.data.closing.load(Relaxed) || ctx.grant_epoch.load(Relaxed) != epoch {
        return Err(ECONNRESET.into());
    }
    Ok(())
}

/// A context's attachments, under `ContextShared::peers`.
pub(crate) struct Peers {
    /// The attachments; room for `MEMREG_MAX_PEERS` once one was made.
    list: KVec<Peer>,
    /// The next handle; 0 once they ran out.
    next: u32,
}

impl Peers {
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
    pub(crate) fn find(&self, handle: u32) -> Option<&Peer> {
        self.list.iter().find(|p| p.handle == handle)
    }

    /// Whether `room` must be given to [`Peers::attach`]: no room was made
    /// yet.
    pub(crate) fn needs_room(&self) -> bool {
        self.list.capacity() == 0
    }

    /// Adds an attachment to `ctx` as of `epoch` and returns its handle.
    /// `room` (empty, with capacity for `MEMREG_MAX_PEERS`) is used if no
    /// room was made yet. `ENOSPC` when full or out of handles. Never
    /// allocates.
    pub(crate) fn attach(
        &mut self,
        ctx: Arc<ContextShared>,
        epoch: u64,
        room: &mut KVec<Peer>,
    ) -> Result<u32, (Error, Arc<ContextShared>)> {
        if self.list.capacity() == 0 {
            core::mem::swap(&mut self.list, room);
        }
        let handle = self.next;
        if handle == 0 || self.list.len() >= uapi::MAX_PEERS {
            return Err((ENOSPC, ctx));
        }
        if let Err(e) = self.list.push_within_capacity(Peer { handle, ctx, epoch }) {
            return Err((ENOSPC, e.0.ctx));
        }
        GLOBAL_PEERS.add(1, Relaxed);
        self.next = handle.wrapping_add(1);
        Ok(handle)
    }

    /// Takes the attachment of `handle` out.
    pub(crate) fn detach(&mut self, handle: u32) -> Option<Peer> {
        let i = self.list.iter().position(|p| p.handle == handle)?;
        let peer = self.list.remove(i).ok()?;
        GLOBAL_PEERS.fetch_sub(1, Relaxed);
        Some(peer)
    }

    /// Takes every attachment out.
    pub(crate) fn take_all(&mut self) -> KVec<Peer> {
        let all = core::mem::replace(&mut self.list, KVec::new());
        GLOBAL_PEERS.fetch_sub(all.len() as u64, Relaxed);
        all
    }
}

/// Room for a context's attachments, allocated before its lock is taken.
pub(crate) fn room() -> Result<KVec<Peer>> {
    Ok(KVec::with_capacity(uapi::MAX_PEERS, GFP_KERNEL_ACCOUNT)?)
}

/// The attachment `handle` of `ctx`: the peer's context and the epoch of
/// the grant, checked. `ENOTCONN` for a handle `ctx` does not have,
/// `ECONNRESET` for a grant that no longer holds.
pub(crate) fn lookup(
    ctx: &ContextShared,
    handle: u32,
) -> Result<(Arc<ContextShared>, u64), MemregError> {
    let (peer, epoch) = {
        let peers = ctx.peers.lock();
        let p = peers.find(handle).ok_or(ENOTCONN)?;
        (p.ctx.clone(), p.epoch)
    };
    check_grant(&peer, epoch)?;
    Ok((peer, epoch))
}
