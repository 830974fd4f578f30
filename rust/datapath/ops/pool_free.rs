// SPDX-License-Identifier: GPL-2.0

//! POOL_FREE: gives back the buffer at address `offset` of pool `peer`.

use super::{Fields, Issue, RingOp, Step};
use crate::{error::OpResult, pool::Pool, uapi};

/// `MEMREG_OP_POOL_FREE`.
pub(crate) struct PoolFree;

/// A decoded POOL_FREE.
pub(crate) struct PoolFreeReq {
    pool: u32,
    addr: u64,
}

impl RingOp for PoolFree {
    const OPCODE: u8 = uapi::opcode(uapi::abi::MEMREG_OP_POOL_FREE);
    const FIELDS: Fields = Fields::OFFSET.and(Fields::PEER);
    type Req = PoolFreeReq;

    fn prep(sqe: &uapi::Sqe) -> OpResult<PoolFreeReq> {
        Ok(PoolFreeReq {
            pool: sqe.peer,
            addr: sqe.offset,
        })
    }

    fn issue(cx: &mut Issue<'_>, req: PoolFreeReq) -> Step {
        let freed = cx
            .data
            .pools
            .get(req.pool)
            .and_then(|pool| Ok(Pool::free(&pool, &[req.addr])?));
        freed.map(|()| 0).into()
    }
}
