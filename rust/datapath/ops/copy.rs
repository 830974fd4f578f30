// SPDX-License-Identifier: GPL-2.0

//! COPY: `length` bytes from `(src_key, src_offset)` to `(key, offset)`, two
//! registrations of the context.

use super::{Fields, Issue, Outcome, RingOp, Step};
use crate::{
    datapath::transfer::{check_range, transfer, Side},
    error::OpResult,
    uapi,
};
use kernel::prelude::*;

/// `MEMREG_OP_COPY`.
pub(crate) struct Copy;

/// A decoded COPY.
pub(crate) struct CopyReq {
    dst_key: u64,
    dst_offset: u64,
    src_key: u64,
    src_offset: u64,
    length: u64,
}

impl RingOp for Copy {
    const OPCODE: u8 = uapi::opcode(uapi::abi::MEMREG_OP_COPY);
    const FIELDS: Fields = Fields::KEY
        .and(Fields::OFFSET)
        .and(Fields::SRC_KEY)
        .and(Fields::SRC_OFFSET)
        .and(Fields::LENGTH);
    type Req = CopyReq;

    fn prep(sqe: &uapi::Sqe) -> OpResult<CopyReq> {
        Ok(CopyReq {
            dst_key: sqe.key,
            dst_offset: sqe.offset,
            src_key: sqe.src_key,
            src_offset: sqe.src_offset,
            length: sqe.length,
        })
    }

    fn issue(cx: &mut Issue<'_>, req: CopyReq) -> Step {
        copy(cx, &req).into()
    }
}

fn copy(cx: &mut Issue<'_>, req: &CopyReq) -> Outcome {
    let dst = cx.resolve(req.dst_key)?;
    let src = cx.resolve(req.src_key)?;
    if src.info.access & uapi::ACCESS_LOCAL_READ == 0
        || dst.info.access & uapi::ACCESS_LOCAL_WRITE == 0
    {
        return Err(EACCES.into());
    }
    check_range(&src, req.src_offset, req.length)?;
    check_range(&dst, req.dst_offset, req.length)?;
    transfer(
        cx.data,
        cx.ws,
        Side {
            target: &src,
            offset: req.src_offset,
        },
        Side {
            target: &dst,
            offset: req.dst_offset,
        },
        req.length,
        None,
    )?;
    Ok(req.length)
}
