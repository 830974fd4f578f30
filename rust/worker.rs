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
//! # Lock order
//!
//! `DataPath::create` (mutex, creating a queue: allocates, copies to user
//! space) and `DataPath::worker` (mutex, held for a whole run, across
//! revalidation's `mmap_lock` and a DEREGISTER's teardown) are outermost and
//! never held together. Then `ContextShared::table` → `DataPath::shadow`
//! (spinlock) → `Registration::state`, as in `context.rs`;
//! `DataPath::queues` (spinlock) is a leaf. The worker holds none of the
//! spinlocks across an operation that sleeps.

use crate::{
    context::ContextShared,
    defs,
    error::MemregError,
    queue::{Master, Next, Queue},
    registration::{Registration, Revalidated},
};
use kernel::{
    new_mutex, new_spinlock,
    prelude::*,
    sync::{
        atomic::{Atomic, Full, Relaxed},
        Arc, Mutex, SetOnce, SpinLock,
    },
    task::resched::cond_resched,
    time::{Instant, Monotonic},
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
/// Bytes moved per step of a COPY (the bounce buffer's size).
const COPY_CHUNK: usize = 16 * 1024;
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
            .find(|r| r.info.keys.lkey == lkey && r.is_live())
    }

    /// Inserts `r` first in its set; returns the entry pushed out (an
    /// ended entry of the same key, or the last way).
    fn insert(&mut self, r: Arc<Registration>) -> Option<Arc<Registration>> {
        let set = Self::set(r.info.keys.lkey);
        let ways = self.entries.get_mut(set..set + SHADOW_WAYS)?;
        // A key is in a set at most once: an ended entry of it goes first.
        if let Some(i) = ways.iter().position(|e| {
            e.as_ref()
                .is_some_and(|o| o.info.keys.lkey == r.info.keys.lkey)
        }) {
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
            .find(|e| e.as_ref().is_some_and(|r| r.info.keys.lkey == lkey))
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
}

/// A completion's status and bytes.
type Outcome = core::result::Result<u64, MemregError>;

/// Resolves a local key to its registration, through the shadow first.
fn resolve(ctx: &ContextShared, ws: &mut WorkerState, lkey: u64) -> Result<Arc<Registration>> {
    let data = &ctx.data;
    if let Some(r) = data.shadow.lock().get(lkey).cloned() {
        ws.shadow_hits += 1;
        return Ok(r);
    }
    ws.shadow_misses += 1;
    let (found, old) = {
        let t = ctx.table.lock();
        let r = t.get(lkey).ok_or(ENOENT)?.clone();
        // Under the table lock, so that a registration that leaves the table also leaves the
        // shadow.
        let old = data.shadow.lock().insert(r.clone());
        (r, old)
    };
    // The entry it replaced is dropped outside the locks.
    drop(old);
    Ok(found)
}

/// Moves `buf.len()` bytes at `offset` of `r`, revalidating it if it is
/// suspended.
fn move_chunk(r: &Arc<Registration>, offset: u64, buf: &mut [u8], to: bool) -> Result {
    let mut tries = 0;
    loop {
        match r.copy_chunk(offset, buf, to) {
            Err(e) if e == EAGAIN && tries < USE_TRIES => {
                tries += 1;
                if Registration::revalidate(r)? == Revalidated::Ended {
                    return Err(ENOENT);
                }
            }
            result => return result,
        }
    }
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
    let src_end = sqe.src_offset.checked_add(sqe.length).ok_or(EOVERFLOW)?;
    let dst_end = sqe.offset.checked_add(sqe.length).ok_or(EOVERFLOW)?;
    if src_end > src.info.length || dst_end > dst.info.length {
        return Err(EINVAL.into());
    }
    if sqe.length == 0 {
        return Ok(0);
    }
    if ws.bounce.is_empty() {
        ws.bounce = KVec::from_elem(0u8, COPY_CHUNK, GFP_KERNEL_ACCOUNT)?;
    }
    let mut done = 0u64;
    while done < sqe.length {
        if ctx.data.closing.load(Relaxed) {
            return Err(ECANCELED.into());
        }
        let left = sqe.length.checked_sub(done).ok_or(EINVAL)?;
        let n = left.min(COPY_CHUNK as u64) as usize;
        let buf = ws.bounce.get_mut(..n).ok_or(EINVAL)?;
        // Both within their registrations: checked above.
        let src_at = sqe.src_offset.checked_add(done).ok_or(EOVERFLOW)?;
        let dst_at = sqe.offset.checked_add(done).ok_or(EOVERFLOW)?;
        move_chunk(&src, src_at, buf, false)?;
        move_chunk(&dst, dst_at, buf, true)?;
        done = done.checked_add(n as u64).ok_or(EOVERFLOW)?;
        cond_resched();
    }
    Ok(sqe.length)
}

/// Validates the copy of a descriptor and executes it.
fn execute(ctx: &Arc<ContextShared>, ws: &mut WorkerState, sqe: &defs::Sqe) -> Outcome {
    if sqe.flags != 0 || sqe.reserved0 != 0 || sqe.reserved1 != 0 {
        return Err(EINVAL.into());
    }
    // The fields an operation does not use must be zero.
    let unused = match sqe.opcode {
        defs::OP_NOP | defs::OP_FENCE => {
            [sqe.key, sqe.offset, sqe.src_key, sqe.src_offset, sqe.length]
        }
        defs::OP_DEREGISTER => [0, sqe.offset, sqe.src_key, sqe.src_offset, sqe.length],
        defs::OP_COPY => [0; 5],
        _ => return Err(EINVAL.into()),
    };
    defs::check_reserved(&unused)?;
    match sqe.opcode {
        // The worker executes a queue's requests in order, one at a time: everything posted
        // before a fence has completed when it is reached.
        defs::OP_NOP | defs::OP_FENCE => Ok(0),
        defs::OP_DEREGISTER => ContextShared::deregister_key(ctx, sqe.key).map(|()| 0),
        _ => copy(ctx, ws, sqe),
    }
}

/// Takes a batch from `q` and completes it. Returns how many were taken.
fn serve(ctx: &Arc<ContextShared>, ws: &mut WorkerState, q: &Queue) -> u32 {
    let data = &ctx.data;
    // The batch follows the backlog.
    let limit = q.backlog().clamp(1, MAX_BATCH);
    ws.batch_limit = limit;
    let mut taken = 0;
    let mut errors = 0;
    while taken < limit {
        if data.closing.load(Relaxed) {
            // The file is being released: the rest stays untaken.
            break;
        }
        match q.take() {
            Next::Taken(sqe) => {
                let outcome = execute(ctx, ws, &sqe);
                let mut cqe: defs::Cqe = defs::zeroed();
                cqe.user_data = sqe.user_data;
                match outcome {
                    Ok(bytes) => cqe.bytes = bytes,
                    Err(e) => {
                        cqe.status = e.status();
                        errors += 1;
                    }
                }
                q.complete(&cqe);
                taken += 1;
            }
            Next::Empty => break,
            // Counted by the queue when it set the flag.
            Next::CqFull => break,
        }
    }
    if taken > 0 {
        // Counted before the completions are seen, so a reader that saw them sees the counts.
        data.stats.requests.add(u64::from(taken), Relaxed);
        data.stats.completions.add(u64::from(taken), Relaxed);
        data.stats.errors.add(errors, Relaxed);
        data.stats.batches.add(1, Relaxed);
        data.stats
            .shadow_hits
            .add(core::mem::take(&mut ws.shadow_hits), Relaxed);
        data.stats
            .shadow_misses
            .add(core::mem::take(&mut ws.shadow_misses), Relaxed);
        if u64::from(taken) > data.stats.batch_max.load(Relaxed) {
            data.stats.batch_max.store(u64::from(taken), Relaxed);
        }
        // One publication, one barrier and one look at the arm word per batch.
        q.publish(&ctx.waiters);
        if let Some(master) = data.master.as_ref() {
            if master.push(q.index, &ctx.waiters) {
                data.stats.master_overflows.add(1, Relaxed);
            }
        }
        // Fully ordered after the new head was published: pairs with `poll` setting the flag
        // before it looks at the ring.
        if data.pollout_waiting.xchg(false, Full) {
            ctx.waiters.cv.notify_all();
        }
    }
    taken
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
            break;
        }
    }
    data.stats.poll_us.store(u64::from(ws.poll_us), Relaxed);
}

/// The master ring of `data`, creating it (before the first queue).
pub(crate) fn master(data: &DataPath) -> Result<&Arc<Master>> {
    if data.master.as_ref().is_none() {
        let master = Arc::new(Master::new()?, GFP_KERNEL_ACCOUNT)?;
        // Only the creation of queues, serialized, gets here.
        data.master.populate(master);
    }
    data.master.as_ref().ok_or(ENOMEM)
}
