// SPDX-License-Identifier: GPL-2.0

//! POOL_ALLOC: one buffer of at least `length` bytes from pool `peer`,
//! without waiting. The completion carries its address and key.
//!
//! TODO(ring-pool-wait): a request that waited for a growth would stall its
//! queue, as a waiting SEND does; it fails with `-EAGAIN` instead.

use super::{Fields, Issue, RingOp, Step};
use crate::{
    error::{MemregError, OpResult},
    pool::{Buffer, Pool},
    uapi,
};

/// `MEMREG_OP_POOL_ALLOC`.
pub(crate) struct PoolAlloc;

/// A decoded POOL_ALLOC.
pub(crate) struct PoolAllocReq {
    pool: u32,
    length: u64,
}

impl RingOp for PoolAlloc {
    const OPCODE: u8 = uapi::opcode(uapi::abi::MEMREG_OP_POOL_ALLOC);
    const FIELDS: Fields = Fields::LENGTH.and(Fields::PEER);
    type Req = PoolAllocReq;

    fn prep(sqe: &uapi::Sqe) -> OpResult<PoolAllocReq> {
        Ok(PoolAllocReq {
            pool: sqe.peer,
            length: sqe.length,
        })
    }

    fn issue(cx: &mut Issue<'_>, req: PoolAllocReq) -> Step {
        let taken = (|| -> Result<Buffer, MemregError> {
            let pool = cx.data.pools.get(req.pool)?;
            let mut one: [Buffer; 1] = uapi::zeroed();
            Pool::alloc(&pool, req.length, true, 0, &mut one)?;
            Ok(one[0])
        })();
        match taken {
            Ok(b) => Step::Pool(b),
            Err(e) => Step::Done(Err(e)),
        }
    }
}
