// SPDX-License-Identifier: GPL-2.0

//! SEND: `length` bytes at `(src_key, src_offset)` into the oldest RECV
//! posted on the queue its queue is connected to, with `key` as immediate
//! data under `MEMREG_SQE_IMM`. When none is posted it waits (its queue takes
//! nothing else meanwhile) until the receiver's worker posts one and wakes
//! this one, or until the connection's timeout, for which a delayed work
//! item wakes the worker.

use super::{Fields, Issue, RingOp, Step};
use crate::{
    cache::target::Target,
    datapath::{
        connection::{Connection, Receiver},
        transfer::{check_range, transfer, Side},
    },
    error::{MemregError, OpResult},
    peer, uapi,
};
use kernel::error::compat::{ECONNRESET, ENOBUFS, ENOTCONN};
use kernel::{
    prelude::*,
    sync::atomic::Relaxed,
    time::{jiffies, Jiffies},
};

/// `MEMREG_OP_SEND`.
pub(crate) struct Send;

/// A decoded SEND.
pub(crate) struct SendReq {
    src_key: u64,
    src_offset: u64,
    length: u64,
    /// The immediate data, under `MEMREG_SQE_IMM`.
    pub(super) imm: Option<u64>,
}

impl RingOp for Send {
    const OPCODE: u8 = uapi::opcode(uapi::abi::MEMREG_OP_SEND);
    const FIELDS: Fields = Fields::KEY
        .and(Fields::SRC_KEY)
        .and(Fields::SRC_OFFSET)
        .and(Fields::LENGTH);
    const FLAGS: u8 = uapi::SQE_IMM;
    type Req = SendReq;

    fn prep(sqe: &uapi::Sqe) -> OpResult<SendReq> {
        let imm = sqe.flags & uapi::SQE_IMM != 0;
        // `key` carries the immediate data; without it, it must be zero.
        if !imm && sqe.key != 0 {
            return Err(EINVAL.into());
        }
        Ok(SendReq {
            src_key: sqe.src_key,
            src_offset: sqe.src_offset,
            length: sqe.length,
            imm: imm.then_some(sqe.key),
        })
    }

    fn issue(cx: &mut Issue<'_>, req: SendReq) -> Step {
        send(cx, &req, None)
    }
}

/// Tries again a SEND that has waited for a RECV since `since`.
pub(crate) fn resume(cx: &mut Issue<'_>, sqe: &uapi::Sqe, since: Jiffies) -> Step {
    match Send::prep(sqe) {
        Ok(req) => send(cx, &req, Some(since)),
        Err(e) => Step::Done(Err(e)),
    }
}

/// Completes a RECV of the receiving queue of `conn` with `cqe`, counted in
/// the receiver's counters.
fn deliver(conn: &Connection, cqe: uapi::Cqe) {
    let failed = cqe.status != 0;
    if let Some(overflowed) = conn.queue.finish_recv(&conn.data, cqe) {
        let stats = &conn.data.stats;
        stats.completions.add(1, Relaxed);
        if failed {
            stats.errors.add(1, Relaxed);
        }
        if overflowed {
            stats.master_overflows.add(1, Relaxed);
        }
    }
}

/// Fills the oldest RECV posted on the queue the request's queue is
/// connected to, or waits for one (`since`: it has been waiting since then).
fn send(cx: &mut Issue<'_>, req: &SendReq, since: Option<Jiffies>) -> Step {
    let conn = cx.queue.send.lock().clone();
    let Some(conn) = conn else {
        return Step::Done(Err(ENOTCONN.into()));
    };
    let src = (|| -> Result<Target, MemregError> {
        peer::check_grant(&*conn.data, conn.epoch)?;
        let src = cx.resolve(req.src_key)?;
        if src.info.access & uapi::ACCESS_LOCAL_READ == 0 {
            return Err(EACCES.into());
        }
        check_range(&src, req.src_offset, req.length)?;
        Ok(src)
    })();
    let src = match src {
        Ok(src) => src,
        Err(e) => return Step::Done(Err(e)),
    };
    let data = cx.data;
    loop {
        let r = match conn.queue.take_recv(data, cx.queue.index) {
            Receiver::Posted(r) => r,
            Receiver::Closed => return Step::Done(Err(ECONNRESET.into())),
            Receiver::Waiting => {
                let since = since.unwrap_or_else(jiffies::now);
                if jiffies::elapsed_ms(since) >= u64::from(conn.rnr_timeout_ms) {
                    data.stats.rnr_timeouts.add(1, Relaxed);
                    return Step::Done(Err(ENOBUFS.into()));
                }
                return Step::Waiting(since, conn.rnr_timeout_ms);
            }
        };
        let mut cqe: uapi::Cqe = uapi::zeroed();
        cqe.user_data = r.user_data;
        let moved = if req.length > r.length {
            Err(EMSGSIZE.into())
        } else {
            transfer(
                data,
                cx.ws,
                Side {
                    target: &src,
                    offset: req.src_offset,
                },
                Side {
                    target: &r.registration,
                    offset: r.offset,
                },
                req.length,
                Some((&*conn.data, conn.epoch)),
            )
        };
        match moved {
            Ok(()) => {
                cqe.bytes = req.length;
                if let Some(imm) = req.imm {
                    cqe.flags = uapi::CQE_IMM;
                    cqe.imm_data = imm;
                }
                deliver(&conn, cqe);
                data.stats.messages.add(1, Relaxed);
                data.stats.remote_bytes.add(req.length, Relaxed);
                return Step::Done(Ok(req.length));
            }
            // The receiver's buffer ended: that RECV fails, the SEND takes the next one.
            Err(_) if !r.registration.is_live() => {
                cqe.status = MemregError::from(ENOENT).status();
                deliver(&conn, cqe);
            }
            Err(e) => {
                cqe.status = e.status();
                deliver(&conn, cqe);
                return Step::Done(Err(e));
            }
        }
    }
}
