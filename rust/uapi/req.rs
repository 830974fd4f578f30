// SPDX-License-Identifier: GPL-2.0

//! Typed requests: ioctl arguments decoded and validated once, at the edge,
//! into what the subsystems take.

use super::*;

/// A REGISTER, decoded and validated: `EINVAL` for an unknown flag, a
/// nonzero reserved field, no access, an unknown access bit, a remote right
/// on a watch, a zero length or a range that wraps; `E2BIG` past
/// `MEMREG_MAX_LENGTH`; `EFAULT` for a range no address can hold.
#[derive(Clone, Copy)]
pub(crate) struct RegisterReq {
    /// The registered address.
    pub(crate) addr: u64,
    /// The registered length, nonzero.
    pub(crate) length: u64,
    /// `MEMREG_ACCESS_*`, nonzero.
    pub(crate) access: u32,
    /// The first byte.
    pub(crate) first: usize,
    /// The last byte.
    pub(crate) last: usize,
    /// Watch the range without pinning it (`MEMREG_REGISTER_WATCH`).
    pub(crate) watch: bool,
    /// Reported with the events of the registration a miss creates.
    pub(crate) user_data: u64,
}

impl TryFrom<&Register> for RegisterReq {
    type Error = Error;

    fn try_from(req: &Register) -> Result<Self> {
        if req.flags & !REGISTER_WATCH != 0 || req.reserved != 0 {
            return Err(EINVAL);
        }
        let watch = req.flags & REGISTER_WATCH != 0;
        let (addr, length, access) = (req.addr, req.length, req.access);
        if access == 0 || access & !ACCESS_ALL != 0 || length == 0 {
            return Err(EINVAL);
        }
        // A watch never moves data, so no peer may be granted anything through it.
        if watch && access & !ACCESS_LOCAL != 0 {
            return Err(EINVAL);
        }
        if length > MAX_LENGTH {
            return Err(E2BIG);
        }
        let end = addr.checked_add(length).ok_or(EINVAL)?;
        Ok(Self {
            addr,
            length,
            access,
            first: usize::try_from(addr).map_err(|_| EFAULT)?,
            last: usize::try_from(end - 1).map_err(|_| EFAULT)?,
            watch,
            user_data: req.user_data,
        })
    }
}

/// What a REGISTER answers, in the fields of `struct memreg_register` it
/// fills in.
#[derive(Clone, Copy)]
pub(crate) struct RegisterReply {
    /// The local key.
    pub(crate) lkey: u64,
    /// The remote key, 0 without remote rights.
    pub(crate) rkey: u64,
    /// The rights the keys carry.
    pub(crate) access: u32,
    /// The registration's own range.
    pub(crate) region_addr: u64,
    /// Its length.
    pub(crate) region_length: u64,
    /// `MEMREG_REGISTER_*`.
    pub(crate) flags: u32,
    /// The state word's slot and generation.
    pub(crate) slot: (u32, u64),
}

impl RegisterReply {
    /// Writes the answer into the caller's structure.
    pub(crate) fn encode(&self, req: &mut Register) {
        req.lkey = self.lkey;
        req.rkey = self.rkey;
        req.access = self.access;
        req.region_addr = self.region_addr;
        req.region_length = self.region_length;
        req.flags = self.flags;
        (req.slot, req.generation) = self.slot;
    }
}

/// A COPY, decoded and validated: `EINVAL` for a nonzero flag or reserved
/// field or an unknown direction.
#[derive(Clone, Copy)]
pub(crate) struct CopyReq {
    /// The registration's local key.
    pub(crate) key: u64,
    /// The offset in the registration.
    pub(crate) offset: u64,
    /// Bytes to move.
    pub(crate) length: u64,
    /// The user buffer.
    pub(crate) buf: usize,
    /// Into the registration (`MEMREG_COPY_TO_REGION`) or out of it.
    pub(crate) to_registration: bool,
}

impl TryFrom<&Copy> for CopyReq {
    type Error = Error;

    fn try_from(req: &Copy) -> Result<Self> {
        check_reserved(&[req.reserved])?;
        if req.flags != 0 || (req.direction != COPY_TO_REGION && req.direction != COPY_FROM_REGION)
        {
            return Err(EINVAL);
        }
        Ok(Self {
            key: req.key,
            offset: req.offset,
            length: req.length,
            buf: usize::try_from(req.buf).map_err(|_| EFAULT)?,
            to_registration: req.direction == COPY_TO_REGION,
        })
    }
}

/// A DOORBELL, decoded: `EINVAL` for a nonzero reserved field.
#[derive(Clone, Copy)]
pub(crate) struct DoorbellReq {
    /// The queue whose requests are ready.
    pub(crate) queue: u32,
}

impl TryFrom<&Doorbell> for DoorbellReq {
    type Error = Error;

    fn try_from(req: &Doorbell) -> Result<Self> {
        if req.reserved != 0 {
            return Err(EINVAL);
        }
        Ok(Self { queue: req.queue })
    }
}

/// A PEER_DETACH, decoded: `EINVAL` for a nonzero reserved field.
#[derive(Clone, Copy)]
pub(crate) struct PeerDetachReq {
    /// The handle to drop.
    pub(crate) peer: u32,
}

impl TryFrom<&PeerDetach> for PeerDetachReq {
    type Error = Error;

    fn try_from(req: &PeerDetach) -> Result<Self> {
        if req.reserved != 0 {
            return Err(EINVAL);
        }
        Ok(Self { peer: req.peer })
    }
}

/// A QUEUE_CONNECT, decoded: `EINVAL` for a nonzero reserved field or a
/// timeout past `MEMREG_MAX_RNR_TIMEOUT_MS`.
#[derive(Clone, Copy)]
pub(crate) struct QueueConnectReq {
    /// The sending queue.
    pub(crate) queue: u32,
    /// The peer handle.
    pub(crate) peer: u32,
    /// The peer's receiving queue.
    pub(crate) remote_queue: u32,
    /// How long a SEND waits for a RECV, in milliseconds.
    pub(crate) rnr_timeout_ms: u32,
}

impl TryFrom<&QueueConnect> for QueueConnectReq {
    type Error = Error;

    fn try_from(req: &QueueConnect) -> Result<Self> {
        check_reserved(&req.reserved)?;
        if req.rnr_timeout_ms > MAX_RNR_TIMEOUT_MS {
            return Err(EINVAL);
        }
        Ok(Self {
            queue: req.queue,
            peer: req.peer,
            remote_queue: req.remote_queue,
            rnr_timeout_ms: req.rnr_timeout_ms,
        })
    }
}

/// A POOL_ALLOC, decoded: `EINVAL` for a nonzero reserved field, an unknown
/// flag, a count of 0 or past `MEMREG_POOL_MAX_BATCH`, or a timeout past
/// `MEMREG_POOL_MAX_TIMEOUT_MS`.
#[derive(Clone, Copy)]
pub(crate) struct PoolAllocReq {
    /// The pool.
    pub(crate) pool: u32,
    /// Bytes each buffer holds at least.
    pub(crate) size: u64,
    /// A larger class may serve it (no `MEMREG_POOL_NO_FALLBACK`).
    pub(crate) fallback: bool,
    /// Buffers wanted, `1..=MEMREG_POOL_MAX_BATCH`.
    pub(crate) count: usize,
    /// How long to wait for one, in milliseconds.
    pub(crate) timeout_ms: u32,
    /// The user array the buffers go to.
    pub(crate) bufs: usize,
}

impl TryFrom<&PoolAlloc> for PoolAllocReq {
    type Error = Error;

    fn try_from(req: &PoolAlloc) -> Result<Self> {
        check_reserved(&req.reserved)?;
        if req.flags & !POOL_NO_FALLBACK != 0
            || req.count == 0
            || req.count > POOL_MAX_BATCH
            || req.timeout_ms > POOL_MAX_TIMEOUT_MS
        {
            return Err(EINVAL);
        }
        Ok(Self {
            pool: req.pool,
            size: req.size,
            fallback: req.flags & POOL_NO_FALLBACK == 0,
            count: req.count as usize,
            timeout_ms: req.timeout_ms,
            bufs: usize::try_from(req.bufs).map_err(|_| EFAULT)?,
        })
    }
}

/// A POOL_FREE, decoded: `EINVAL` for a nonzero reserved field or a count
/// of 0 or past `MEMREG_POOL_MAX_BATCH`.
#[derive(Clone, Copy)]
pub(crate) struct PoolFreeReq {
    /// The pool.
    pub(crate) pool: u32,
    /// Buffers to give back, `1..=MEMREG_POOL_MAX_BATCH`.
    pub(crate) count: usize,
    /// The user array of their addresses.
    pub(crate) addrs: usize,
}

impl TryFrom<&PoolFree> for PoolFreeReq {
    type Error = Error;

    fn try_from(req: &PoolFree) -> Result<Self> {
        check_reserved(&req.reserved)?;
        if req.count == 0 || req.count > POOL_MAX_BATCH {
            return Err(EINVAL);
        }
        Ok(Self {
            pool: req.pool,
            count: req.count as usize,
            addrs: usize::try_from(req.addrs).map_err(|_| EFAULT)?,
        })
    }
}

/// A POOL_STATS, decoded: `EINVAL` for a nonzero reserved field.
#[derive(Clone, Copy)]
pub(crate) struct PoolStatsReq {
    /// The pool.
    pub(crate) pool: u32,
    /// Room in the user array, in classes.
    pub(crate) count: usize,
    /// The user array.
    pub(crate) stats: usize,
}

impl TryFrom<&PoolInfo> for PoolStatsReq {
    type Error = Error;

    fn try_from(req: &PoolInfo) -> Result<Self> {
        check_reserved(&req.reserved)?;
        Ok(Self {
            pool: req.pool,
            count: req.count as usize,
            stats: usize::try_from(req.stats).map_err(|_| EFAULT)?,
        })
    }
}

/// A POOL_RING, decoded: `EINVAL` for a nonzero reserved field.
#[derive(Clone, Copy)]
pub(crate) struct PoolRingReq {
    /// The pool.
    pub(crate) pool: u32,
    /// Room in the user array, in classes.
    pub(crate) count: usize,
    /// The user array.
    pub(crate) classes: usize,
}

impl TryFrom<&PoolRing> for PoolRingReq {
    type Error = Error;

    fn try_from(req: &PoolRing) -> Result<Self> {
        check_reserved(&req.reserved)?;
        Ok(Self {
            pool: req.pool,
            count: req.count as usize,
            classes: usize::try_from(req.classes).map_err(|_| EFAULT)?,
        })
    }
}

/// A POOL_DESTROY, decoded: `EINVAL` for a nonzero reserved field.
#[derive(Clone, Copy)]
pub(crate) struct PoolDestroyReq {
    /// The pool.
    pub(crate) pool: u32,
}

impl TryFrom<&PoolDestroy> for PoolDestroyReq {
    type Error = Error;

    fn try_from(req: &PoolDestroy) -> Result<Self> {
        if req.reserved != 0 {
            return Err(EINVAL);
        }
        Ok(Self { pool: req.pool })
    }
}
