// SPDX-License-Identifier: GPL-2.0

//! FENCE: completes after everything posted before it on its queue.
//!
//! The worker executes a queue's requests in order, one at a time, so
//! everything posted before a fence has completed when it is reached.

use super::{Fields, Issue, RingOp, Step};
use crate::{error::OpResult, uapi};

/// `MEMREG_OP_FENCE`.
pub(crate) struct Fence;

impl RingOp for Fence {
    const OPCODE: u8 = uapi::opcode(uapi::abi::MEMREG_OP_FENCE);
    const FIELDS: Fields = Fields::NONE;
    type Req = ();

    fn prep(_sqe: &uapi::Sqe) -> OpResult {
        Ok(())
    }

    fn issue(_cx: &mut Issue<'_>, (): ()) -> Step {
        Step::Done(Ok(0))
    }
}
