// SPDX-License-Identifier: GPL-2.0

//! The operations a request on a submission ring may ask for, one file each,
//! in a table indexed by opcode (io_uring's `opdef` table in Rust's shape).
//!
//! Each operation is a type implementing [`RingOp`]: its opcode, the
//! descriptor fields it reads (every other field must be zero), the flags it
//! accepts, `prep`, which decodes and validates the descriptor once into a
//! typed request, and `issue`, which executes it. [`OPS`] has exactly
//! `MEMREG_OP_LAST` entries, each checked at compile time to sit at its own
//! opcode, so a new opcode in the header fails to build until it has its
//! line; an opcode at or past `MEMREG_OP_LAST` is refused by the table with
//! `-EINVAL`, never run as another operation.
//!
//! Adding an operation: its `MEMREG_OP_*` in the header (and `MEMREG_OP_LAST`
//! moved past it), one file here implementing [`RingOp`] (its opcode taken
//! from the header through [`uapi::abi`]), one line in [`OPS`], tests, and its
//! line in the documentation's list of opcodes.

mod copy;
mod deregister;
mod fence;
mod nop;
mod pool_alloc;
mod pool_free;
mod read;
mod recv;
pub(crate) mod send;
mod write;

use super::{queue::Queue, worker::WorkerState, DataPath};
use crate::{
    cache::target::Target,
    error::{MemregError, OpResult},
    pool::Buffer,
    uapi,
};
use kernel::{prelude::*, sync::Arc, time::Jiffies};

/// A completion's status and bytes.
pub(crate) type Outcome = core::result::Result<u64, MemregError>;

/// What executing a request led to.
pub(crate) enum Step {
    /// It completes now.
    Done(Outcome),
    /// A POOL_ALLOC completes now with this buffer.
    Pool(Buffer),
    /// A RECV was posted: a SEND completes it later.
    Posted,
    /// A SEND waits for a RECV, since this time (jiffies), at most this many
    /// milliseconds.
    Waiting(Jiffies, u32),
}

impl From<Outcome> for Step {
    fn from(outcome: Outcome) -> Self {
        Step::Done(outcome)
    }
}

/// What an operation runs with: the data path, the worker's state and the
/// queue the request came from.
pub(crate) struct Issue<'a> {
    /// The data path whose worker runs the request.
    pub(crate) data: &'a Arc<DataPath>,
    /// The worker's state.
    pub(crate) ws: &'a mut WorkerState,
    /// The queue the request was taken from.
    pub(crate) queue: &'a Queue,
}

impl Issue<'_> {
    /// Resolves a local key to its registration, through the cache's shadow
    /// translation cache first.
    pub(crate) fn resolve(&mut self, lkey: u64) -> Result<Target> {
        let (target, hit) = self.data.cache.resolve(lkey)?;
        self.ws.count_shadow(hit);
        Ok(target)
    }
}

/// The descriptor fields an operation reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fields(u8);

impl Fields {
    /// None of them.
    pub(crate) const NONE: Self = Self(0);
    /// `key`.
    pub(crate) const KEY: Self = Self(1 << 0);
    /// `offset`.
    pub(crate) const OFFSET: Self = Self(1 << 1);
    /// `src_key`.
    pub(crate) const SRC_KEY: Self = Self(1 << 2);
    /// `src_offset`.
    pub(crate) const SRC_OFFSET: Self = Self(1 << 3);
    /// `length`.
    pub(crate) const LENGTH: Self = Self(1 << 4);
    /// `peer`.
    pub(crate) const PEER: Self = Self(1 << 5);

    /// These and `other`.
    pub(crate) const fn and(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether every field of `sqe` not among these is zero.
    fn others_are_zero(self, sqe: &uapi::Sqe) -> bool {
        let fields = [
            (Self::KEY, sqe.key),
            (Self::OFFSET, sqe.offset),
            (Self::SRC_KEY, sqe.src_key),
            (Self::SRC_OFFSET, sqe.src_offset),
            (Self::LENGTH, sqe.length),
            (Self::PEER, sqe.peer.into()),
        ];
        fields
            .iter()
            .all(|&(f, value)| self.0 & f.0 != 0 || value == 0)
    }
}

/// An operation of the submission rings.
pub(crate) trait RingOp {
    /// Its `MEMREG_OP_*`.
    const OPCODE: u8;
    /// The descriptor fields it reads; the others must be zero.
    const FIELDS: Fields;
    /// The `MEMREG_SQE_*` flags it accepts.
    const FLAGS: u8 = 0;
    /// The request, decoded from the descriptor.
    type Req;

    /// Decodes and validates the descriptor, once; the fields and flags it
    /// may not use were checked.
    fn prep(sqe: &uapi::Sqe) -> OpResult<Self::Req>;

    /// Executes the request.
    fn issue(cx: &mut Issue<'_>, req: Self::Req) -> Step;
}

/// One line of the table.
pub(crate) struct OpDef {
    /// The opcode it serves, checked to be its index.
    opcode: u8,
    /// Validates and executes a descriptor.
    run: fn(&mut Issue<'_>, &uapi::Sqe) -> Step,
}

/// Validates `sqe` for `O` and executes it.
fn run<O: RingOp>(cx: &mut Issue<'_>, sqe: &uapi::Sqe) -> Step {
    if sqe.flags & !O::FLAGS != 0 || sqe.reserved0 != 0 || !O::FIELDS.others_are_zero(sqe) {
        return Step::Done(Err(EINVAL.into()));
    }
    match O::prep(sqe) {
        Ok(req) => O::issue(cx, req),
        Err(e) => Step::Done(Err(e)),
    }
}

/// The line of `O`.
const fn def<O: RingOp>() -> OpDef {
    OpDef {
        opcode: O::OPCODE,
        run: run::<O>,
    }
}

/// Every operation, at the index of its opcode.
const OPS: [OpDef; uapi::OP_LAST] = [
    def::<nop::Nop>(),
    def::<copy::Copy>(),
    def::<fence::Fence>(),
    def::<deregister::Deregister>(),
    def::<write::Write>(),
    def::<read::Read>(),
    def::<send::Send>(),
    def::<recv::Recv>(),
    def::<pool_alloc::PoolAlloc>(),
    def::<pool_free::PoolFree>(),
];

const _: () = {
    let mut i = 0;
    while i < OPS.len() {
        assert!(
            OPS[i].opcode as usize == i,
            "an operation is not at its opcode"
        );
        i += 1;
    }
};

/// Validates the copy of a descriptor and executes it; an opcode that names
/// no operation fails with `-EINVAL`.
pub(crate) fn execute(cx: &mut Issue<'_>, sqe: &uapi::Sqe) -> Step {
    match OPS.get(usize::from(sqe.opcode)) {
        // The guard holds by construction (checked at compile time); it keeps an opcode from
        // ever reaching another operation's line.
        Some(op) if op.opcode == sqe.opcode => (op.run)(cx, sqe),
        _ => Step::Done(Err(EINVAL.into())),
    }
}

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_ops)]
mod tests {
    use super::*;

    /// A descriptor of `opcode` with every field set to `v`.
    fn full(opcode: u8, v: u64) -> uapi::Sqe {
        let mut sqe: uapi::Sqe = uapi::zeroed();
        sqe.opcode = opcode;
        sqe.key = v;
        sqe.offset = v;
        sqe.src_key = v;
        sqe.src_offset = v;
        sqe.length = v;
        sqe.peer = v as u32;
        sqe
    }

    #[test]
    fn only_the_fields_an_operation_reads_may_be_set() {
        let zero: uapi::Sqe = uapi::zeroed();
        for fields in [
            Fields::NONE,
            Fields::KEY,
            nop::Nop::FIELDS,
            write::REMOTE_FIELDS,
        ] {
            assert!(fields.others_are_zero(&zero));
        }
        // NOP reads nothing: any field set is refused.
        assert!(!nop::Nop::FIELDS.others_are_zero(&full(nop::Nop::OPCODE, 1)));
        // WRITE and READ read all six.
        assert!(write::REMOTE_FIELDS.others_are_zero(&full(write::Write::OPCODE, 1)));
        // POOL_ALLOC reads the length and the pool (`peer`) only.
        let mut sqe: uapi::Sqe = uapi::zeroed();
        sqe.length = 64;
        sqe.peer = 1;
        assert!(pool_alloc::PoolAlloc::FIELDS.others_are_zero(&sqe));
        sqe.offset = 4096;
        assert!(!pool_alloc::PoolAlloc::FIELDS.others_are_zero(&sqe));
        // POOL_FREE reads the address (`offset`) and the pool, not the length.
        assert!(!pool_free::PoolFree::FIELDS.others_are_zero(&full(pool_free::PoolFree::OPCODE, 1)));
    }

    #[test]
    fn every_opcode_has_its_own_line() {
        assert_eq!(OPS.len(), uapi::OP_LAST);
        for (i, op) in OPS.iter().enumerate() {
            assert_eq!(usize::from(op.opcode), i);
        }
        assert_eq!(usize::from(pool_free::PoolFree::OPCODE) + 1, uapi::OP_LAST);
    }

    #[test]
    fn send_carries_immediate_data_only_when_asked() {
        let mut sqe: uapi::Sqe = uapi::zeroed();
        sqe.opcode = send::Send::OPCODE;
        sqe.key = 7;
        // The key is immediate data: without MEMREG_SQE_IMM it must be zero.
        assert!(send::Send::prep(&sqe).is_err());
        sqe.flags = uapi::SQE_IMM;
        assert!(send::Send::prep(&sqe).is_ok_and(|r| r.imm == Some(7)));
        sqe.key = 0;
        sqe.flags = 0;
        assert!(send::Send::prep(&sqe).is_ok_and(|r| r.imm.is_none()));
        // The flag is SEND's alone.
        assert_eq!(send::Send::FLAGS, uapi::SQE_IMM);
        assert_eq!(copy::Copy::FLAGS, 0);
    }
}
