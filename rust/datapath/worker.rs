// SPDX-License-Identifier: GPL-2.0

//! The context's worker, which takes requests from the submission rings,
//! executes them through the registrations' translation entries only (see
//! [`ops`](crate::datapath::ops)), and posts their completions.
//!
//! The worker is a work item of the context on the kernel's default unbound
//! workqueue for long work (a work item never runs twice at once, so the
//! rings have one consumer). A doorbell queues it. A run that has served
//! requests for [`RUN_BUDGET_US`] queues itself again and returns, so one
//! busy context never holds a worker of the shared workqueue for good (a
//! single COPY still runs to its end, rescheduling between its steps). It
//! takes each queue's published descriptors in batches whose size follows the backlog, and when it finds
//! nothing it keeps polling the rings for a while before it sleeps: that
//! while doubles when requests arrive during it and halves when it passes
//! with none, between [`MIN_POLL_US`] and [`MAX_POLL_US`]. Before it sleeps it
//! sets every queue's need-wakeup flag and looks once more (see
//! [`Queue::sleep`]).
//!
//! Keys resolve through the shadow translation cache: a two-way
//! set-associative table of recently used registrations that skips the
//! registration table's look-up. A registration leaves the shadow
//! when it leaves the table, under the table lock, so before the munmap
//! that ended it returns.
//!
//! Data moves as [`transfer`](crate::datapath::transfer) describes; each
//! operation's file says what it does.
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
    context::{work_id, ContextShared},
    datapath::{
        ops::{self, send, Issue, Outcome, Step},
        queue::{Master, Next, Queue},
        transfer::COPY_CHUNK,
    },
    registration::{Registration, Target},
    uapi,
};
use kernel::{
    mm::memcg::MemCgroup,
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
/// Entries of the shadow translation table.
const SHADOW_ENTRIES: usize = 16;
/// How long one run serves requests before it queues itself again.
const RUN_BUDGET_US: i64 = 20000;

/// The data path's counters (`struct memreg_queue_stats`, where each is
/// described).
pub(crate) struct DataStats {
    /// Descriptors taken.
    pub(crate) requests: Atomic<u64>,
    /// Completions written.
    pub(crate) completions: Atomic<u64>,
    /// Completions with a nonzero status.
    pub(crate) errors: Atomic<u64>,
    /// DOORBELL calls.
    pub(crate) doorbells: Atomic<u64>,
    /// Runs of the worker.
    pub(crate) wakeups: Atomic<u64>,
    /// Batches taken.
    pub(crate) batches: Atomic<u64>,
    /// The largest batch.
    pub(crate) batch_max: Atomic<u64>,
    /// The batch size used last.
    pub(crate) batch_limit: Atomic<u64>,
    /// The polling window now.
    pub(crate) poll_us: Atomic<u64>,
    /// Keys the shadow resolved.
    pub(crate) shadow_hits: Atomic<u64>,
    /// Keys looked up in the table.
    pub(crate) shadow_misses: Atomic<u64>,
    /// Master ring entries not written.
    pub(crate) master_overflows: Atomic<u64>,
    /// Bytes moved by WRITE, READ and SEND.
    pub(crate) remote_bytes: Atomic<u64>,
    /// SENDs delivered to a RECV.
    pub(crate) messages: Atomic<u64>,
    /// SENDs that found no RECV in time.
    pub(crate) rnr_timeouts: Atomic<u64>,
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
    pub(crate) fn to_abi(&self) -> uapi::QueueStats {
        let mut out: uapi::QueueStats = uapi::zeroed();
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
    waiting: [Option<WaitingSend>; uapi::MAX_QUEUES as usize],
}

/// A SEND waiting for a RECV.
struct WaitingSend {
    /// The descriptor.
    sqe: uapi::Sqe,
    /// When it started waiting (jiffies).
    since: Jiffies,
    /// How long it may wait, in milliseconds.
    timeout_ms: u32,
}

impl WorkerState {
    /// Counts a look-up of the shadow translation cache.
    pub(crate) fn count_shadow(&mut self, hit: bool) {
        if hit {
            self.shadow_hits += 1;
        } else {
            self.shadow_misses += 1;
        }
    }

    /// The bounce buffer, allocated on first use in `memcg`, the owner's
    /// memory cgroup, not whatever cgroup the kworker is in.
    pub(crate) fn bounce(&mut self, memcg: &MemCgroup) -> Result<&mut [u8]> {
        if self.bounce.is_empty() {
            self.bounce =
                memcg.with_active(|| KVec::from_elem(0u8, COPY_CHUNK, GFP_KERNEL_ACCOUNT))?;
        }
        Ok(&mut self.bounce)
    }
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
                KVec::with_capacity(uapi::MAX_QUEUES as usize, GFP_KERNEL_ACCOUNT)?,
                "memreg::DataPath::queues"
            ),
            create <- new_mutex!((), "memreg::DataPath::create"),
            master: SetOnce::new(),
            worker <- new_mutex!(
                WorkerState {
                    batch_limit: 1,
                    poll_us: INITIAL_POLL_US,
                    bounce: KVec::new(),
                    queues: KVec::with_capacity(uapi::MAX_QUEUES as usize, GFP_KERNEL_ACCOUNT)?,
                    shadow_hits: 0,
                    shadow_misses: 0,
                    waiting: [const { None }; uapi::MAX_QUEUES as usize],
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
    pub(crate) fn stats(&self) -> uapi::QueueStats {
        let mut out = self.stats.to_abi();
        out.cq_full_stalls = self
            .queues
            .lock()
            .iter()
            .fold(0u64, |n, q| n.saturating_add(q.stalls()));
        out
    }

    /// The registration of local key `lkey` in the shadow translation
    /// cache, if it is there.
    pub(crate) fn shadow_get(&self, lkey: u64) -> Option<Target> {
        // Under the shadow's lock: parking takes a registration out of it before it moves to a
        // new generation.
        self.shadow.lock().get(lkey).map(|r| Target::new(r.clone()))
    }

    /// Puts `registration` in the shadow translation cache, under the
    /// context's table lock; returns the entry it replaced, to be dropped
    /// outside the locks.
    pub(crate) fn shadow_insert(
        &self,
        registration: Arc<Registration>,
    ) -> Option<Arc<Registration>> {
        self.shadow.lock().insert(registration)
    }

    /// The queue with index `index`.
    pub(crate) fn queue(&self, index: u32) -> Option<Arc<Queue>> {
        self.queues.lock().get(index as usize).cloned()
    }

    /// The queues now.
    fn all_queues(&self) -> Result<KVec<Arc<Queue>>> {
        let mut out = KVec::with_capacity(uapi::MAX_QUEUES as usize, GFP_KERNEL)?;
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
            core::mem::replace(&mut ws.waiting, [const { None }; uapi::MAX_QUEUES as usize]);
        let queues = core::mem::take(&mut ws.queues);
        drop(ws);
        drop((waiting, queues));
    }
}

/// A completion of `user_data` with `outcome`; counts an error in `errors`.
fn cqe_of(user_data: u64, outcome: Outcome, errors: &mut u64) -> uapi::Cqe {
    let mut cqe: uapi::Cqe = uapi::zeroed();
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
        let mut cx = Issue {
            ctx,
            ws: &mut *ws,
            queue: q,
        };
        match send::resume(&mut cx, &w.sqe, w.since) {
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
                let mut cx = Issue {
                    ctx,
                    ws: &mut *ws,
                    queue: q,
                };
                match ops::execute(&mut cx, &sqe) {
                    Step::Done(outcome) => {
                        q.complete(&cqe_of(sqe.user_data, outcome, &mut errors));
                        written += 1;
                    }
                    Step::Pool(b) => {
                        let mut cqe = cqe_of(sqe.user_data, Ok(b.addr), &mut errors);
                        cqe.flags = uapi::CQE_POOL;
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
        let _ =
            dfl::system_dfl_long().enqueue_delayed::<_, { work_id::RNR_TIMER }>(ctx.clone(), delay);
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
                let _ = dfl::system_dfl_long().enqueue::<_, { work_id::WORKER }>(ctx.clone());
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
