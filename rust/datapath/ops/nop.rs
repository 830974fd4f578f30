// SPDX-License-Identifier: GPL-2.0

//! NOP: completes with status 0 and moves nothing.

use super::{Fields, Issue, RingOp, Step};
use crate::{error::OpResult, uapi};

/// `MEMREG_OP_NOP`.
pub(crate) struct Nop;

impl RingOp for Nop {
    const OPCODE: u8 = uapi::opcode(uapi::abi::MEMREG_OP_NOP);
    const FIELDS: Fields = Fields::NONE;
    type Req = ();

    fn prep(_sqe: &uapi::Sqe) -> OpResult {
        Ok(())
    }

    fn issue(_cx: &mut Issue<'_>, (): ()) -> Step {
        Step::Done(Ok(0))
    }
}
