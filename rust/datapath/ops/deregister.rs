// SPDX-License-Identifier: GPL-2.0

//! DEREGISTER: drops a reference on a registration, as the ioctl does.

use super::{Fields, Issue, RingOp, Step};
use crate::{cache::Cache, error::OpResult, uapi};

/// `MEMREG_OP_DEREGISTER`.
pub(crate) struct Deregister;

impl RingOp for Deregister {
    const OPCODE: u8 = uapi::opcode(uapi::abi::MEMREG_OP_DEREGISTER);
    const FIELDS: Fields = Fields::KEY;
    /// The local key.
    type Req = u64;

    fn prep(sqe: &uapi::Sqe) -> OpResult<u64> {
        Ok(sqe.key)
    }

    fn issue(cx: &mut Issue<'_>, key: u64) -> Step {
        Cache::deregister_key(cx.data.cache(), key)
            .map(|()| 0)
            .into()
    }
}
