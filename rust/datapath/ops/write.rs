// SPDX-License-Identifier: GPL-2.0

//! WRITE: one-sided, `length` bytes from a local registration
//! `(src_key, src_offset)` to a peer's, named by its remote key
//! `(key, offset)`. READ shares [`remote`].

use super::{Fields, Issue, Outcome, RingOp, Step};
use crate::{
    datapath::transfer::{check_range, transfer, Side},
    error::OpResult,
    uapi,
};
use kernel::{prelude::*, sync::atomic::Relaxed};

/// `MEMREG_OP_WRITE`.
pub(crate) struct Write;

/// A decoded WRITE or READ.
pub(crate) struct RemoteReq {
    /// The peer handle.
    pub(super) peer: u32,
    /// The local registration and offset.
    pub(super) local: (u64, u64),
    /// The peer's remote key and offset.
    pub(super) remote: (u64, u64),
    /// Bytes to move.
    pub(super) length: u64,
}

/// The fields WRITE and READ read: all of them.
pub(super) const REMOTE_FIELDS: Fields = Fields::KEY
    .and(Fields::OFFSET)
    .and(Fields::SRC_KEY)
    .and(Fields::SRC_OFFSET)
    .and(Fields::LENGTH)
    .and(Fields::PEER);

impl RingOp for Write {
    const OPCODE: u8 = uapi::opcode(uapi::abi::MEMREG_OP_WRITE);
    const FIELDS: Fields = REMOTE_FIELDS;
    type Req = RemoteReq;

    fn prep(sqe: &uapi::Sqe) -> OpResult<RemoteReq> {
        Ok(RemoteReq {
            peer: sqe.peer,
            local: (sqe.src_key, sqe.src_offset),
            remote: (sqe.key, sqe.offset),
            length: sqe.length,
        })
    }

    fn issue(cx: &mut Issue<'_>, req: RemoteReq) -> Step {
        remote(cx, &req, true).into()
    }
}

/// WRITE (`write`) or READ: between a local registration and a peer's,
/// named by its remote key.
pub(super) fn remote(cx: &mut Issue<'_>, req: &RemoteReq, write: bool) -> Outcome {
    let (peer, epoch) = cx.data.peer(req.peer)?;
    let local = cx.resolve(req.local.0)?;
    // TODO(peer-rkey-cache): remote keys are looked up under the peer's cache lock on every
    // request; a shadow of hot remote keys, like the local one, would spare it.
    let remote = peer.cache().get_remote(req.remote.0).ok_or(ENOENT)?;
    let (local_right, remote_right) = if write {
        (uapi::ACCESS_LOCAL_READ, uapi::ACCESS_REMOTE_WRITE)
    } else {
        (uapi::ACCESS_LOCAL_WRITE, uapi::ACCESS_REMOTE_READ)
    };
    if local.info.access & local_right == 0 || remote.info.access & remote_right == 0 {
        return Err(EACCES.into());
    }
    check_range(&local, req.local.1, req.length)?;
    check_range(&remote, req.remote.1, req.length)?;
    let local = Side {
        target: &local,
        offset: req.local.1,
    };
    let remote = Side {
        target: &remote,
        offset: req.remote.1,
    };
    let (src, dst) = if write {
        (local, remote)
    } else {
        (remote, local)
    };
    transfer(cx.data, cx.ws, src, dst, req.length, Some((&*peer, epoch)))?;
    cx.data.stats.remote_bytes.add(req.length, Relaxed);
    Ok(req.length)
}
