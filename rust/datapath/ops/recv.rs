// SPDX-License-Identifier: GPL-2.0

//! RECV: posts a buffer of `length` bytes at `(key, offset)` for the next
//! SEND to its queue; the SEND completes it.

use super::{Fields, Issue, RingOp, Step};
use crate::{
    datapath::{connection::PostedRecv, transfer::check_range},
    error::{MemregError, OpResult},
    uapi,
};
use kernel::error::compat::ECANCELED;
use kernel::prelude::*;

/// `MEMREG_OP_RECV`.
pub(crate) struct Recv;

/// A decoded RECV.
pub(crate) struct RecvReq {
    user_data: u64,
    key: u64,
    offset: u64,
    length: u64,
}

impl RingOp for Recv {
    const OPCODE: u8 = uapi::opcode(uapi::abi::MEMREG_OP_RECV);
    const FIELDS: Fields = Fields::KEY.and(Fields::OFFSET).and(Fields::LENGTH);
    type Req = RecvReq;

    fn prep(sqe: &uapi::Sqe) -> OpResult<RecvReq> {
        Ok(RecvReq {
            user_data: sqe.user_data,
            key: sqe.key,
            offset: sqe.offset,
            length: sqe.length,
        })
    }

    fn issue(cx: &mut Issue<'_>, req: RecvReq) -> Step {
        let posted = (|| -> Result<PostedRecv, MemregError> {
            let registration = cx.resolve(req.key)?;
            if registration.info.access & uapi::ACCESS_LOCAL_WRITE == 0 {
                return Err(EACCES.into());
            }
            check_range(&registration, req.offset, req.length)?;
            // The receive FIFO is charged to the owner, not to the kworker's cgroup.
            cx.data.memcg.with_active(|| cx.queue.prepare_recv())?;
            Ok(PostedRecv {
                user_data: req.user_data,
                registration,
                offset: req.offset,
                length: req.length,
            })
        })();
        match posted {
            Ok(r) => match cx.queue.post_recv(r) {
                Ok(()) => Step::Posted,
                // Released meanwhile, or as many posted as the completion ring has room for.
                Err(_) if cx.data.is_closing() => Step::Done(Err(ECANCELED.into())),
                Err(_) => Step::Done(Err(ENOSPC.into())),
            },
            Err(e) => Step::Done(Err(e)),
        }
    }
}
