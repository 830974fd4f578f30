// SPDX-License-Identifier: GPL-2.0

//! READ: one-sided, `length` bytes from a peer's registration, named by its
//! remote key `(src_key, src_offset)`, to a local one `(key, offset)`.

use super::{
    write::{remote, RemoteReq, REMOTE_FIELDS},
    Fields, Issue, RingOp, Step,
};
use crate::{error::OpResult, uapi};

/// `MEMREG_OP_READ`.
pub(crate) struct Read;

impl RingOp for Read {
    const OPCODE: u8 = uapi::opcode(uapi::abi::MEMREG_OP_READ);
    const FIELDS: Fields = REMOTE_FIELDS;
    type Req = RemoteReq;

    fn prep(sqe: &uapi::Sqe) -> OpResult<RemoteReq> {
        Ok(RemoteReq {
            peer: sqe.peer,
            local: (sqe.key, sqe.offset),
            remote: (sqe.src_key, sqe.src_offset),
            length: sqe.length,
        })
    }

    fn issue(cx: &mut Issue<'_>, req: RemoteReq) -> Step {
        remote(cx, &req, false).into()
    }
}
