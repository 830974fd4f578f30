// SPDX-License-Identifier: GPL-2.0

//! The message unit: the context's worker, which takes requests from the
//! submission rings, executes them through the registrations' translation
//! entries only, and posts their completions.
//!
//! The worker is a work item of the context on the kernel's default unbound
//! workqueue for long work (a work item never runs twice at once, so the
//! rings have one consumer). A doorbell queues it. A run that has served
//! requests for [`RUN_BUDGET_US`] queues itself again and returns, so one
//! busy context never holds a worker of the shared workqueue for good (a
//! single COPY still runs to its end, rescheduling between its steps). It takes each queue's published
//! descriptors in batches whose size follows the backlog, and when it finds
//! nothing it keeps polling the rings for a while before it sleeps: that
//! while doubles when requests arrive during it and halves when it passes
//! with none, between [`MIN_POLL_US`] and [`MAX_POLL_US`]. Before it sleeps it
//! sets every queue's need-wakeup flag and looks once more (see
//! [`Queue::sleep`]).
//!
//! Keys resolve through a small shadow of hot translation entries (claim 2's
//! shadow MRT): a two-way set-associative table of recently used
//! registrations that skips the registration table's look-up. A registration leaves the shadow
//! when it leaves the table, under the table lock, so before the munmap
//! that ended it returns.
//!
//! Data moves page to page between two registrations, holding both their
//! locks (the second only tried, so two copies in opposite directions never
//! wait for each other), and through a bounce buffer, one lock at a time,
//! when the second is busy or the ranges overlap. Either way a registration
//! that ends is never written after the invalidation that ended it returned.
//!
//! One-sided WRITE and READ name a peer's registration by its remote key,
//! looked up in the peer's table on each request. A SEND takes the oldest
//! RECV posted on the queue its queue is connected to; when none is posted
//! it waits (its queue takes nothing else meanwhile) until the receiver's
//! worker posts one and wakes this one, or until the connection's timeout,
//! for which a delayed work item wakes the worker.
//!
//! # Lock order
//!
//! `DataPath::create` (mutex, creating a queue: allocates, copies to user
//! space) and `DataPath::worker` (mutex, held for a whole run, across
//! revalidation's `mmap_lock` and a DEREGISTER's teardown) are outermost and
//! never held together. Then `ContextShared::table` → `DataPath::shadow`
//! (spinlock) → `Registration::state`, as in `context.rs`;
//! `DataPath::queues` (spinlock) is a leaf. A peer's table lock is taken
//! on its own, never with this context's. The worker holds none of the
//! spinlocks across an operation that sleeps.

use crate::{
    context::ContextShared,
    defs,
    error::MemregError,
    peer,
    pool::{Buffer, Pool},
    queue::{Connection, Master, Next, PostedRecv, Queue, Receiver},
    registration::{Registration, Revalidated, Target},
};
use kernel::{
    new_mutex, new_spinlock,
    prelude::*,
    sync::{
        atomic::{Atomic, Full, Relaxed},
        Arc, Mutex, SetOnce, SpinLock,
    },
    task::resched::cond_resched,
    time::{jiffies, msecs_to_jiffies, Instant, Jiffies, Monotonic},
    workqueue::dfl,
};

/// The largest batch taken from one queue at a time.
pub(crate) const MAX_BATCH: u32 = 128;
/// The shortest polling window.
pub(crate) const MIN_POLL_US: u32 = 10;
/// The longest polling window.
pub(crate) const MAX_POLL_US: u32 = 1000;
/// The polling window of a new context.
const INITIAL_POLL_US: u32 = 50;
/// Bytes moved per step through the bounce buffer (its size).
const COPY_CHUNK: usize = 16 * 1024;
/// Bytes moved per step page to page, under both registrations' locks.
const DIRECT_CHUNK: usize = 64 * 1024;
/// Entries of the shadow translation table.
const SHADOW_ENTRIES: usize = 16;
/// Times a request revalidates a suspended registration before it gives up.
const USE_TRIES: u32 = 3;
/// How long one run serves requests before it queues itself again.
const RUN_BUDGET_US: i64 = 20000;

/// The data path's counters (`struct memreg_queue_stats`, where each is
/// described).
pub(crate) struct DataStats {
    /// Descriptors taken.
    requests: Atomic<u64>,
    /// Completions written.
    completions: Atomic<u64>,
    /// Completions with a nonzero status.
    errors: Atomic<u64>,
    /// DOORBELL calls.
    pub(crate) doorbells: Atomic<u64>,
    /// Runs of the worker.
    wakeups: Atomic<u64>,
    /// Batches taken.
    batches: Atomic<u64>,
    /// The largest batch.
    batch_max: Atomic<u64>,
    /// The batch size used last.
    batch_limit: Atomic<u64>,
    /// The polling window now.
    poll_us: Atomic<u64>,
    /// Keys the shadow resolved.
    shadow_hits: Atomic<u64>,
    /// Keys looked up in the table.
    shadow_misses: Atomic<u64>,
    /// Master ring entries not written.
    master_overflows: Atomic<u64>,
    /// Bytes moved by WRITE, READ and SEND.
    remote_bytes: Atomic<u64>,
    /// SENDs delivered to a RECV.
    messages: Atomic<u64>,
    /// SENDs that found no RECV in time.
    rnr_timeouts: Atomic<u64>,
}

impl DataStats {
    fn new() -> Self {
        Self {
            requests: Atomic::new(0),
            completions: Atomic::new(0),
            errors: Atomic::new(0),
            doorbells: Atomic::new(0),
            wakeups: Atomic::new(0),
            batches: Atomic::new(0),
            batch_max: Atomic::new(0),
            batch_limit: Atomic::new(1),
            poll_us: Atomic::new(u64::from(INITIAL_POLL_US)),
            shadow_hits: Atomic::new(0),
            shadow_misses: Atomic::new(0),
            master_overflows: Atomic::new(0),
            remote_bytes: Atomic::new(0),
            messages: Atomic::new(0),
            rnr_timeouts: Atomic::new(0),
        }
    }

    /// The counters in the ABI's layout.
    pub(crate) fn to_abi(&self) -> defs::QueueStats {
        let mut out: defs::QueueStats = defs::zeroed();
        out.requests = self.requests.load(Relaxed);
        out.completions = self.completions.load(Relaxed);
        out.errors = self.errors.load(Relaxed);
        out.doorbells = self.doorbells.load(Relaxed);
        out.wakeups = self.wakeups.load(Relaxed);
        out.batches = self.batches.load(Relaxed);
        out.batch_max = self.batch_max.load(Relaxed);
        out.batch_limit = self.batch_limit.load(Relaxed);
        out.poll_us = self.poll_us.load(Relaxed);
        out.shadow_hits = self.shadow_hits.load(Relaxed);
        out.shadow_misses = self.shadow_misses.load(Relaxed);
        out.master_overflows = self.master_overflows.load(Relaxed);
        out.remote_bytes = self.remote_bytes.load(Relaxed);
        out.messages = self.messages.load(Relaxed);
        out.rnr_timeouts = self.rnr_timeouts.load(Relaxed);
        out
    }
}

/// Ways of a set of the shadow translation table.
const SHADOW_WAYS: usize = 2;

/// The shadow translation table: recently used registrations by key, in
/// sets of [`SHADOW_WAYS`] entries (so the source and destination of a COPY
/// never evict each other), the most recently inserted first.
pub(crate) struct Shadow {
    /// The sets, one after the other.
    entries: [Option<Arc<Registration>>; SHADOW_ENTRIES],
}

impl Shadow {
    /// The first entry of the set of `lkey`.
    fn set(lkey: u64) -> usize {
        // The key's random low bits spread the sets.
        (lkey as usize) % (SHADOW_ENTRIES / SHADOW_WAYS) * SHADOW_WAYS
    }

    /// The registration of `lkey`, if it is there and live.
    fn get(&self, lkey: u64) -> Option<&Arc<Registration>> {
        let set = Self::set(lkey);
        self.entries
            .get(set..set + SHADOW_WAYS)?
            .iter()
            .flatten()
            .find(|r| r.lkey() == lkey && r.is_live())
    }

    /// Inserts `r` first in its set; returns the entry pushed out (an
    /// ended entry of the same key, or the last way).
    fn insert(&mut self, r: Arc<Registration>) -> Option<Arc<Registration>> {
        let set = Self::set(r.lkey());
        let ways = self.entries.get_mut(set..set + SHADOW_WAYS)?;
        // A key is in a set at most once: an ended entry of it goes first.
        if let Some(i) = ways
            .iter()
            .position(|e| e.as_ref().is_some_and(|o| o.lkey() == r.lkey()))
        {
            ways.get_mut(i..)?.rotate_left(1);
            ways.rotate_right(1);
        } else {
            // The last way leaves; the others move down one.
            ways.rotate_right(1);
        }
        ways.first_mut().and_then(|e| e.replace(r))
    }

    /// Takes the registration of `lkey` out, if it is there.
    pub(crate) fn remove(&mut self, lkey: u64) -> Option<Arc<Registration>> {
        let set = Self::set(lkey);
        self.entries
            .get_mut(set..set + SHADOW_WAYS)?
            .iter_mut()
            .find(|e| e.as_ref().is_some_and(|r| r.lkey() == lkey))
            .and_then(|e| e.take())
    }

    /// Takes every entry out.
    pub(crate) fn clear(&mut self) -> [Option<Arc<Registration>>; SHADOW_ENTRIES] {
        core::mem::replace(&mut self.entries, [const { None }; SHADOW_ENTRIES])
    }
}

/// What only the worker touches, under a mutex held for its whole run.
pub(crate) struct WorkerState {
    /// The batch size now.
    batch_limit: u32,
    /// The polling window now.
    poll_us: u32,
    /// Bytes of a COPY on their way from one registration to the other.
    bounce: KVec<u8>,
    /// The queues this run serves.
    queues: KVec<Arc<Queue>>,
    /// Shadow hits and misses not yet added to the counters.
    shadow_hits: u64,
    shadow_misses: u64,
    /// Per queue, the SEND waiting for a RECV.
    waiting: [Option<WaitingSend>; defs::MAX_QUEUES as usize],
}

/// A SEND waiting for a RECV.
struct WaitingSend {
    /// The descriptor.
    sqe: defs::Sqe,
    /// When it started waiting (jiffies).
    since: Jiffies,
    /// How long it may wait, in milliseconds.
    timeout_ms: u32,
}

/// A context's data path: its queues, master ring and worker state.
#[pin_data]
pub(crate) struct DataPath {
    /// The queues by index; room for all of them is reserved up front.
    #[pin]
    pub(crate) queues: SpinLock<KVec<Arc<Queue>>>,
    /// Serializes the creation of queues.
    #[pin]
    pub(crate) create: Mutex<()>,
    /// The master ring, created with the first queue.
    pub(crate) master: SetOnce<Arc<Master>>,
    /// The worker's own state.
    #[pin]
    worker: Mutex<WorkerState>,
    /// The shadow translation table.
    #[pin]
    pub(crate) shadow: SpinLock<Shadow>,
    /// The counters.
    pub(crate) stats: DataStats,
    /// The file is being released: a COPY in progress stops.
    pub(crate) closing: Atomic<bool>,
    /// A `poll` found a submission ring full and waits for room.
    pub(crate) pollout_waiting: Atomic<bool>,
}

impl DataPath {
    /// Creates an empty data path, charged to the caller.
    pub(crate) fn new() -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            queues <- new_spinlock!(
                KVec::with_capacity(defs::MAX_QUEUES as usize, GFP_KERNEL_ACCOUNT)?,
                "memreg::DataPath::queues"
            ),
            create <- new_mutex!((), "memreg::DataPath::create"),
            master: SetOnce::new(),
            worker <- new_mutex!(
                WorkerState {
                    batch_limit: 1,
                    poll_us: INITIAL_POLL_US,
                    bounce: KVec::new(),
                    queues: KVec::with_capacity(defs::MAX_QUEUES as usize, GFP_KERNEL_ACCOUNT)?,
                    shadow_hits: 0,
                    shadow_misses: 0,
                    waiting: [const { None }; defs::MAX_QUEUES as usize],
                },
                "memreg::DataPath::worker"
            ),
            shadow <- new_spinlock!(
                Shadow {
                    entries: [const { None }; SHADOW_ENTRIES],
                },
                "memreg::DataPath::shadow"
            ),
            stats: DataStats::new(),
            closing: Atomic::new(false),
            pollout_waiting: Atomic::new(false),
        })
    }

    /// The counters, with the queues' stops for a full completion ring.
    pub(crate) fn stats(&self) -> defs::QueueStats {
        let mut out = self.stats.to_abi();
        out.cq_full_stalls = self
            .queues
            .lock()
            .iter()
            .fold(0u64, |n, q| n.saturating_add(q.stalls()));
        out
    }

    /// The queue with index `index`.
    pub(crate) fn queue(&self, index: u32) -> Option<Arc<Queue>> {
        self.queues.lock().get(index as usize).cloned()
    }

    /// The queues now.
    fn all_queues(&self) -> Result<KVec<Arc<Queue>>> {
        let mut out = KVec::with_capacity(defs::MAX_QUEUES as usize, GFP_KERNEL)?;
        for q in self.queues.lock().iter() {
            // Room for every queue was made above.
            let _ = out.push_within_capacity(q.clone());
        }
        Ok(out)
    }

    /// Disconnects the queues of `ctx` sending through attachment `handle`
    /// (all of them with `None`). Process context.
    pub(crate) fn disconnect(&self, ctx: &ContextShared, handle: Option<u32>) -> Result {
        for q in self.all_queues()?.iter() {
            let conn = {
                let mut send = q.send.lock();
                if send
                    .as_ref()
                    .is_some_and(|c| handle.is_none_or(|h| c.handle == h))
                {
                    send.take()
                } else {
                    None
                }
            };
            if let Some(conn) = conn {
                conn.queue.remove_sender(ctx, q.index);
            }
        }
        Ok(())
    }

    /// Disconnects every queue sending to this context's queues (the grants
    /// were revoked). Process context.
    pub(crate) fn remove_senders(&self) -> Result {
        for q in self.all_queues()?.iter() {
            q.remove_senders();
        }
        Ok(())
    }

    /// At release: no other context's worker may wake `ctx`'s from now on.
    /// Its queues leave the queues they send to, and its receiving sides
    /// close. Never fails: it walks the queues under the leaf lock, one at a
    /// time.
    pub(crate) fn close_queues(&self, ctx: &ContextShared) {
        let mut i = 0;
        loop {
            let Some(q) = self.queues.lock().get(i).cloned() else {
                break;
            };
            let conn = q.send.lock().take();
            if let Some(conn) = conn {
                conn.queue.remove_sender(ctx, q.index);
            }
            q.close_recv();
            i += 1;
        }
    }

    /// At release, once the worker no longer runs: drops what it kept.
    pub(crate) fn clear_worker(&self) {
        let mut ws = self.worker.lock();
        let waiting =
            core::mem::replace(&mut ws.waiting, [const { None }; defs::MAX_QUEUES as usize]);
        let queues = core::mem::take(&mut ws.queues);
        drop(ws);
        drop((waiting, queues));
    }
}

/// A completion's status and bytes.
type Outcome = core::result::Result<u64, MemregError>;

/// Resolves a local key to its registration, through the shadow first.
fn resolve(ctx: &ContextShared, ws: &mut WorkerState, lkey: u64) -> Result<Target> {
    let data = &ctx.data;
    {
        let shadow = data.shadow.lock();
        if let Some(r) = shadow.get(lkey) {
            ws.shadow_hits += 1;
            // Under the shadow's lock: parking takes a registration out of it before it moves
            // to a new generation.
            return Ok(Target::new(r.clone()));
        }
    }
    ws.shadow_misses += 1;
    let (found, old) = {
        let t = ctx.table.lock();
        let target = t.get_target(lkey).ok_or(ENOENT)?;
        // Under the table lock, so that a registration that leaves the table (or is parked)
        // also leaves the shadow.
        let old = data.shadow.lock().insert(target.registration().clone());
        (target, old)
    };
    // The entry it replaced is dropped outside the locks.
    drop(old);
    Ok(found)
}

/// Moves `buf.len()` bytes at `offset` of `r`, revalidating it if it is
/// suspended.
fn move_chunk(r: &Target, offset: u64, buf: &mut [u8], to: bool) -> Result {
    let mut tries = 0;
    loop {
        match r.copy_chunk(offset, buf, to) {
            Err(e) if e == EAGAIN && tries < USE_TRIES => {
                tries += 1;
                if Registration::revalidate(r.registration())? == Revalidated::Ended {
                    return Err(ENOENT);
                }
            }
            result => return result,
        }
    }
}

/// Copies `n` bytes page to page, revalidating a suspended side. `EBUSY`
/// when the destination's lock is taken.
fn copy_direct(src: &Target, src_at: u64, dst: &Target, dst_at: u64, n: usize) -> Result {
    let mut tries = 0;
    loop {
        match src.copy_to(src_at, dst, dst_at, n) {
            Err(e) if e == EAGAIN && tries < USE_TRIES => {
                tries += 1;
                for r in [src, dst] {
                    if Registration::revalidate(r.registration())? == Revalidated::Ended {
                        return Err(ENOENT);
                    }
                }
            }
            result => return result,
        }
    }
}

/// A grant a transfer goes through: the peer's context and the epoch of the
/// attachment.
type Grant<'a> = Option<(&'a ContextShared, u64)>;

/// Moves `length` bytes from `(src, src_offset)` to `(dst, dst_offset)`,
/// both checked to lie within their registrations, in steps between which
/// the file's release and, through `grant`, the peer's revocation are
/// looked at.
#[allow(clippy::too_many_arguments)]
fn transfer(
    ctx: &ContextShared,
    ws: &mut WorkerState,
    src: &Target,
    src_offset: u64,
    dst: &Target,
    dst_offset: u64,
    length: u64,
    grant: Grant<'_>,
) -> Result<(), MemregError> {
    let overlap = src.same(dst)
        && src_offset < dst_offset.saturating_add(length)
        && dst_offset < src_offset.saturating_add(length);
    let mut done = 0u64;
    while done < length {
        if ctx.data.closing.load(Relaxed) {
            return Err(ECANCELED.into());
        }
        if let Some((peer, epoch)) = grant {
            peer::check_grant(peer, epoch)?;
        }
        let left = length.checked_sub(done).ok_or(EINVAL)?;
        let src_at = src_offset.checked_add(done).ok_or(EOVERFLOW)?;
        let dst_at = dst_offset.checked_add(done).ok_or(EOVERFLOW)?;
        if !overlap {
            let n = left.min(DIRECT_CHUNK as u64) as usize;
            match copy_direct(src, src_at, dst, dst_at, n) {
                Ok(()) => {
                    done = done.checked_add(n as u64).ok_or(EOVERFLOW)?;
                    cond_resched();
                    continue;
                }
                // The destination is busy: this step goes through the bounce buffer.
                Err(e) if e == EBUSY => {}
                Err(e) => return Err(e.into()),
            }
        }
        if ws.bounce.is_empty() {
            // Charged to the owner, not to whatever cgroup the kworker is in.
            ws.bounce = ctx
                .memcg
                .with_active(|| KVec::from_elem(0u8, COPY_CHUNK, GFP_KERNEL_ACCOUNT))?;
        }
        let n = left.min(COPY_CHUNK as u64) as usize;
        let buf = ws.bounce.get_mut(..n).ok_or(EINVAL)?;
        move_chunk(src, src_at, buf, false)?;
        move_chunk(dst, dst_at, buf, true)?;
        done = done.checked_add(n as u64).ok_or(EOVERFLOW)?;
        cond_resched();
    }
    Ok(())
}

/// Checks that `length` bytes at `offset` lie within `r`.
fn check_range(r: &Registration, offset: u64, length: u64) -> Result<(), MemregError> {
    let end = offset.checked_add(length).ok_or(EOVERFLOW)?;
    if end > r.info.length {
        return Err(EINVAL.into());
    }
    Ok(())
}

/// COPY: `length` bytes from `(src_key, src_offset)` to `(key, offset)`.
fn copy(ctx: &ContextShared, ws: &mut WorkerState, sqe: &defs::Sqe) -> Outcome {
    let dst = resolve(ctx, ws, sqe.key)?;
    let src = resolve(ctx, ws, sqe.src_key)?;
    if src.info.access & defs::ACCESS_LOCAL_READ == 0
        || dst.info.access & defs::ACCESS_LOCAL_WRITE == 0
    {
        return Err(EACCES.into());
    }
    check_range(&src, sqe.src_offset, sqe.length)?;
    check_range(&dst, sqe.offset, sqe.length)?;
    transfer(
        ctx,
        ws,
        &src,
        sqe.src_offset,
        &dst,
        sqe.offset,
        sqe.length,
        None,
    )?;
    Ok(sqe.length)
}

/// WRITE (`write`) or READ: between a local registration and a peer's,
/// named by its remote key.
fn remote(ctx: &ContextShared, ws: &mut WorkerState, sqe: &defs::Sqe, write: bool) -> Outcome {
    let (peer_ctx, epoch) = peer::lookup(ctx, sqe.peer)?;
    let (lkey, loffset, rkey, roffset) = if write {
        (sqe.src_key, sqe.src_offset, sqe.key, sqe.offset)
    } else {
        (sqe.key, sqe.offset, sqe.src_key, sqe.src_offset)
    };
    let local = resolve(ctx, ws, lkey)?;
    // TODO(peer-rkey-cache): remote keys are looked up under the peer's table lock on every
    // request; a shadow of hot remote keys, like the local one, would spare it.
    let remote = peer_ctx.table.lock().get_remote(rkey).ok_or(ENOENT)?;
    let (local_right, remote_right) = if write {
        (defs::ACCESS_LOCAL_READ, defs::ACCESS_REMOTE_WRITE)
    } else {
        (defs::ACCESS_LOCAL_WRITE, defs::ACCESS_REMOTE_READ)
    };
    if local.info.access & local_right == 0 || remote.info.access & remote_right == 0 {
        return Err(EACCES.into());
    }
    check_range(&local, loffset, sqe.length)?;
    check_range(&remote, roffset, sqe.length)?;
    let grant = Some((&*peer_ctx, epoch));
    if write {
        transfer(
            ctx, ws, &local, loffset, &remote, roffset, sqe.length, grant,
        )?;
    } else {
        transfer(
            ctx, ws, &remote, roffset, &local, loffset, sqe.length, grant,
        )?;
    }
    ctx.data.stats.remote_bytes.add(sqe.length, Relaxed);
    Ok(sqe.length)
}

/// The pool of index `index` of the context.
fn pool_of(ctx: &ContextShared, index: u32) -> Result<Arc<Pool>, MemregError> {
    Ok(ctx
        .pools
        .lock()
        .get(index as usize)
        .and_then(Option::clone)
        .ok_or(EINVAL)?)
}

/// POOL_ALLOC on a ring: one buffer, without waiting. The completion
/// carries its address and key.
///
/// TODO(ring-pool-wait): a request that waited for a growth would stall its
/// queue, as a waiting SEND does; it fails with `-EAGAIN` instead.
fn pool_alloc(ctx: &ContextShared, sqe: &defs::Sqe) -> Step {
    let taken = (|| -> Result<Buffer, MemregError> {
        let pool = pool_of(ctx, sqe.peer)?;
        let mut one: [Buffer; 1] = defs::zeroed();
        Pool::alloc(&pool, sqe.length, true, 0, &mut one)?;
        Ok(one[0])
    })();
    match taken {
        Ok(b) => Step::Pool(b),
        Err(e) => Step::Done(Err(e)),
    }
}

/// POOL_FREE on a ring: gives back the buffer at address `sqe.offset`.
fn pool_free(ctx: &ContextShared, sqe: &defs::Sqe) -> Outcome {
    let pool = pool_of(ctx, sqe.peer)?;
    Pool::free(&pool, &[sqe.offset])?;
    Ok(0)
}

/// What executing a request led to.
enum Step {
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

/// RECV on `q`: posts the buffer for the next SEND to `q`.
fn recv(ctx: &ContextShared, ws: &mut WorkerState, q: &Queue, sqe: &defs::Sqe) -> Step {
    let posted = (|| -> Result<PostedRecv, MemregError> {
        let registration = resolve(ctx, ws, sqe.key)?;
        if registration.info.access & defs::ACCESS_LOCAL_WRITE == 0 {
            return Err(EACCES.into());
        }
        check_range(&registration, sqe.offset, sqe.length)?;
        // The receive FIFO is charged to the owner, not to the kworker's cgroup.
        ctx.memcg.with_active(|| q.prepare_recv())?;
        Ok(PostedRecv {
            user_data: sqe.user_data,
            registration,
            offset: sqe.offset,
            length: sqe.length,
        })
    })();
    match posted {
        Ok(r) => match q.post_recv(r) {
            Ok(()) => Step::Posted,
            // Released meanwhile, or as many posted as the completion ring has room for.
            Err(_) if ctx.data.closing.load(Relaxed) => Step::Done(Err(ECANCELED.into())),
            Err(_) => Step::Done(Err(ENOSPC.into())),
        },
        Err(e) => Step::Done(Err(e)),
    }
}

/// Completes a RECV of the receiving queue of `conn` with `cqe`, counted in
/// the receiver's counters.
fn deliver(conn: &Connection, cqe: defs::Cqe) {
    let failed = cqe.status != 0;
    if let Some(overflowed) = conn.queue.finish_recv(&conn.ctx, cqe) {
        let stats = &conn.ctx.data.stats;
        stats.completions.add(1, Relaxed);
        if failed {
            stats.errors.add(1, Relaxed);
        }
        if overflowed {
            stats.master_overflows.add(1, Relaxed);
        }
    }
}

/// SEND on `q`: fills the oldest RECV posted on the queue `q` is connected
/// to, or waits for one (`since`: it has been waiting since then).
fn send(
    ctx: &ContextShared,
    ws: &mut WorkerState,
    q: &Queue,
    sqe: &defs::Sqe,
    since: Option<Jiffies>,
) -> Step {
    let conn = q.send.lock().clone();
    let Some(conn) = conn else {
        return Step::Done(Err(ENOTCONN.into()));
    };
    let src = (|| -> Result<Target, MemregError> {
        peer::check_grant(&conn.ctx, conn.epoch)?;
        let src = resolve(ctx, ws, sqe.src_key)?;
        if src.info.access & defs::ACCESS_LOCAL_READ == 0 {
            return Err(EACCES.into());
        }
        check_range(&src, sqe.src_offset, sqe.length)?;
        Ok(src)
    })();
    let src = match src {
        Ok(src) => src,
        Err(e) => return Step::Done(Err(e)),
    };
    loop {
        let r = match conn.queue.take_recv(ctx, q.index) {
            Receiver::Posted(r) => r,
            Receiver::Closed => return Step::Done(Err(ECONNRESET.into())),
            Receiver::Waiting => {
                let since = since.unwrap_or_else(jiffies::now);
                if jiffies::elapsed_ms(since) >= u64::from(conn.rnr_timeout_ms) {
                    ctx.data.stats.rnr_timeouts.add(1, Relaxed);
                    return Step::Done(Err(ENOBUFS.into()));
                }
                return Step::Waiting(since, conn.rnr_timeout_ms);
            }
        };
        let mut cqe: defs::Cqe = defs::zeroed();
        cqe.user_data = r.user_data;
        let moved = if sqe.length > r.length {
            Err(EMSGSIZE.into())
        } else {
            transfer(
                ctx,
                ws,
                &src,
                sqe.src_offset,
                &r.registration,
                r.offset,
                sqe.length,
                Some((&*conn.ctx, conn.epoch)),
            )
        };
        match moved {
            Ok(()) => {
                cqe.bytes = sqe.length;
                if sqe.flags & defs::SQE_IMM != 0 {
                    cqe.flags = defs::CQE_IMM;
                    cqe.imm_data = sqe.key;
                }
                deliver(&conn, cqe);
                ctx.data.stats.messages.add(1, Relaxed);
                ctx.data.stats.remote_bytes.add(sqe.length, Relaxed);
                return Step::Done(Ok(sqe.length));
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

/// Validates the copy of a descriptor and executes it.
fn execute(ctx: &Arc<ContextShared>, ws: &mut WorkerState, q: &Queue, sqe: &defs::Sqe) -> Step {
    let imm = sqe.opcode == defs::OP_SEND && sqe.flags == defs::SQE_IMM;
    if (sqe.flags != 0 && !imm) || sqe.reserved0 != 0 {
        return Err(EINVAL.into()).into();
    }
    // The fields an operation does not use must be zero.
    let unused = match sqe.opcode {
        defs::OP_NOP | defs::OP_FENCE => [
            sqe.key,
            sqe.offset,
            sqe.src_key,
            sqe.src_offset,
            sqe.length,
            sqe.peer.into(),
        ],
        defs::OP_DEREGISTER => [
            0,
            sqe.offset,
            sqe.src_key,
            sqe.src_offset,
            sqe.length,
            sqe.peer.into(),
        ],
        defs::OP_COPY => [0, 0, 0, 0, 0, sqe.peer.into()],
        defs::OP_WRITE | defs::OP_READ => [0; 6],
        defs::OP_SEND => [
            if imm { 0 } else { sqe.key },
            sqe.offset,
            0,
            0,
            0,
            sqe.peer.into(),
        ],
        defs::OP_RECV => [0, 0, sqe.src_key, sqe.src_offset, 0, sqe.peer.into()],
        defs::OP_POOL_ALLOC => [sqe.key, sqe.offset, sqe.src_key, sqe.src_offset, 0, 0],
        defs::OP_POOL_FREE => [sqe.key, 0, sqe.src_key, sqe.src_offset, sqe.length, 0],
        _ => return Err(EINVAL.into()).into(),
    };
    if let Err(e) = defs::check_reserved(&unused) {
        return Err(e.into()).into();
    }
    match sqe.opcode {
        // The worker executes a queue's requests in order, one at a time: everything posted
        // before a fence has completed when it is reached.
        defs::OP_NOP | defs::OP_FENCE => Ok(0).into(),
        defs::OP_DEREGISTER => ContextShared::deregister_key(ctx, sqe.key)
            .map(|()| 0)
            .into(),
        defs::OP_WRITE => remote(ctx, ws, sqe, true).into(),
        defs::OP_READ => remote(ctx, ws, sqe, false).into(),
        defs::OP_SEND => send(ctx, ws, q, sqe, None),
        defs::OP_RECV => recv(ctx, ws, q, sqe),
        defs::OP_POOL_ALLOC => pool_alloc(ctx, sqe),
        defs::OP_POOL_FREE => pool_free(ctx, sqe).into(),
        _ => copy(ctx, ws, sqe).into(),
    }
}

/// A completion of `user_data` with `outcome`; counts an error in `errors`.
fn cqe_of(user_data: u64, outcome: Outcome, errors: &mut u64) -> defs::Cqe {
    let mut cqe: defs::Cqe = defs::zeroed();
    cqe.user_data = user_data;
    match outcome {
        Ok(bytes) => cqe.bytes = bytes,
        Err(e) => {
            cqe.status = e.status();
            *errors += 1;
        }
    }
    cqe
}

/// Publishes what [`serve`] did on `q` and counts it.
fn account(
    ctx: &ContextShared,
    ws: &mut WorkerState,
    q: &Queue,
    taken: u32,
    written: u32,
    errors: u64,
) {
    let data = &ctx.data;
    if taken == 0 && written == 0 {
        return;
    }
    // Counted before the completions are seen, so a reader that saw them sees the counts.
    data.stats.requests.add(u64::from(taken), Relaxed);
    data.stats.completions.add(u64::from(written), Relaxed);
    data.stats.errors.add(errors, Relaxed);
    if taken > 0 {
        data.stats.batches.add(1, Relaxed);
        if u64::from(taken) > data.stats.batch_max.load(Relaxed) {
            data.stats.batch_max.store(u64::from(taken), Relaxed);
        }
    }
    data.stats
        .shadow_hits
        .add(core::mem::take(&mut ws.shadow_hits), Relaxed);
    data.stats
        .shadow_misses
        .add(core::mem::take(&mut ws.shadow_misses), Relaxed);
    if written > 0 {
        // One publication, one barrier and one look at the arm word per batch.
        q.publish(&ctx.waiters);
        if let Some(master) = data.master.as_ref() {
            if master.push(q.index, &ctx.waiters) {
                data.stats.master_overflows.add(1, Relaxed);
            }
        }
    }
    // Fully ordered after the new head was published: pairs with `poll` setting the flag
    // before it looks at the ring.
    if taken > 0 && data.pollout_waiting.xchg(false, Full) {
        ctx.waiters.cv.notify_all();
    }
}

/// Takes a batch from `q` and completes it, after the completions of RECVs
/// that senders finished and the SEND that waits, if any. Returns how many
/// requests were taken or completed.
fn serve(ctx: &Arc<ContextShared>, ws: &mut WorkerState, q: &Queue) -> u32 {
    let data = &ctx.data;
    let mut written = 0;
    let mut taken = 0;
    let mut errors = 0;
    let slot = q.index as usize;
    // The queue's waiting SEND first: until it completes nothing else is taken.
    if let Some(w) = ws.waiting.get_mut(slot).and_then(Option::take) {
        match send(ctx, ws, q, &w.sqe, Some(w.since)) {
            Step::Waiting(..) => {
                if let Some(entry) = ws.waiting.get_mut(slot) {
                    *entry = Some(w);
                }
                account(ctx, ws, q, 0, written, 0);
                return written;
            }
            Step::Done(outcome) => {
                q.complete(&cqe_of(w.sqe.user_data, outcome, &mut errors));
                written += 1;
            }
            // A SEND never posts nor allocates.
            Step::Posted | Step::Pool(_) => {}
        }
        q.stalled.store(false, Relaxed);
    }
    // The batch follows the backlog.
    let limit = q.backlog().clamp(1, MAX_BATCH);
    ws.batch_limit = limit;
    while taken < limit {
        if data.closing.load(Relaxed) {
            // The file is being released: the rest stays untaken.
            break;
        }
        match q.take() {
            Next::Taken(sqe) => {
                taken += 1;
                match execute(ctx, ws, q, &sqe) {
                    Step::Done(outcome) => {
                        q.complete(&cqe_of(sqe.user_data, outcome, &mut errors));
                        written += 1;
                    }
                    Step::Pool(b) => {
                        let mut cqe = cqe_of(sqe.user_data, Ok(b.addr), &mut errors);
                        cqe.flags = defs::CQE_POOL;
                        cqe.imm_data = b.key;
                        q.complete(&cqe);
                        written += 1;
                    }
                    Step::Posted => {}
                    Step::Waiting(since, timeout_ms) => {
                        if let Some(entry) = ws.waiting.get_mut(slot) {
                            *entry = Some(WaitingSend {
                                sqe,
                                since,
                                timeout_ms,
                            });
                        }
                        q.stalled.store(true, Relaxed);
                        break;
                    }
                }
            }
            Next::Empty => break,
            // Counted by the queue when it set the flag.
            Next::CqFull => break,
        }
    }
    account(ctx, ws, q, taken, written, errors);
    taken + written
}

/// Arms the timer for the SEND that stops waiting first, if any.
fn arm_timer(ctx: &Arc<ContextShared>, ws: &WorkerState) {
    let left = ws
        .waiting
        .iter()
        .flatten()
        .map(|w| u64::from(w.timeout_ms).saturating_sub(jiffies::elapsed_ms(w.since)))
        .min();
    if let Some(ms) = left {
        let delay = msecs_to_jiffies(u32::try_from(ms.max(1)).unwrap_or(u32::MAX));
        // Already armed: the run it starts arms it again for the SENDs still waiting.
        let _ = dfl::system_dfl_long().enqueue_delayed::<_, 3>(ctx.clone(), delay);
    }
}

/// One run of the worker: serves the queues until they stay empty for the
/// polling window, then sleeps.
pub(crate) fn run(ctx: Arc<ContextShared>) {
    let data = &ctx.data;
    data.stats.wakeups.add(1, Relaxed);
    let mut guard = data.worker.lock();
    let ws = &mut *guard;
    let mut seen_queues = usize::MAX;
    let mut idle_since: Option<Instant<Monotonic>> = None;
    let started = Instant::<Monotonic>::now();
    loop {
        if data.closing.load(Relaxed) {
            break;
        }
        // Queues created since the last look join this run.
        {
            let queues = data.queues.lock();
            if queues.len() != seen_queues {
                seen_queues = queues.len();
                ws.queues.clear();
                for q in queues.iter() {
                    // Room for every queue was reserved.
                    let _ = ws.queues.push_within_capacity(q.clone());
                }
            }
        }
        let mut took = 0;
        for i in 0..ws.queues.len() {
            let Some(q) = ws.queues.get(i).cloned() else {
                break;
            };
            q.wake();
            took += serve(&ctx, ws, &q);
        }
        data.stats
            .batch_limit
            .store(u64::from(ws.batch_limit), Relaxed);
        if took > 0 {
            if idle_since.take().is_some() {
                // Requests arrived while polling: poll longer next time.
                ws.poll_us = (ws.poll_us * 2).min(MAX_POLL_US);
            }
            if started.elapsed().as_micros_ceil() >= RUN_BUDGET_US {
                // Served long enough: let the workqueue's other items run, and go on in a new
                // run (the queues stay awake, so no doorbell is needed meanwhile).
                //
                // TODO(worker-cpu): a kworker runs this, so the CPU time a process's requests
                // cost is charged to no CPU cgroup of the process's; a process that keeps
                // posting keeps a worker busy (in runs of `RUN_BUDGET_US`, each followed by a
                // reschedule). Running the requests in the caller (issue 20) would charge it.
                let _ = dfl::system_dfl_long().enqueue::<_, 2>(ctx.clone());
                break;
            }
            cond_resched();
            continue;
        }
        let since = *idle_since.get_or_insert_with(Instant::now);
        if since.elapsed().as_micros_ceil() < i64::from(ws.poll_us) {
            cond_resched();
            continue;
        }
        // The window passed with nothing: poll less next time, and sleep unless a request
        // slipped in as the flags were set.
        ws.poll_us = (ws.poll_us / 2).max(MIN_POLL_US);
        idle_since = None;
        let mut again = false;
        for q in ws.queues.iter() {
            again |= q.sleep();
        }
        if !again {
            arm_timer(&ctx, ws);
            break;
        }
    }
    data.stats.poll_us.store(u64::from(ws.poll_us), Relaxed);
}

/// The master ring of `data`, creating it (before the first queue).
pub(crate) fn master(data: &DataPath) -> Result<&Arc<Master>> {
    if data.master.as_ref().is_none() {
        let master = Master::new()?;
        // Only the creation of queues, serialized, gets here.
        data.master.populate(master);
    }
    data.master.as_ref().ok_or(ENOMEM)
}
