// SPDX-License-Identifier: GPL-2.0

//! The data path's worker, which takes requests from the submission rings,
//! executes them through the registrations' translation entries only (see
//! [`ops`](crate::datapath::ops)), and posts their completions.
//!
//! The worker is a work item of the data path on the kernel's default
//! unbound workqueue for long work (a work item never runs twice at once, so
//! the rings have one consumer). A doorbell that finds no run of the worker
//! holding its state serves one batch of its queue in the caller's context
//! first ([`serve_inline`]) and queues the worker only for what is left; a
//! doorbell that finds a run queues it. A run that has served
//! requests for [`RUN_BUDGET_US`] queues itself again and returns, so one
//! busy file never holds a worker of the shared workqueue for good (a single
//! COPY still runs to its end, rescheduling between its steps). It takes
//! each queue's published descriptors in batches whose size follows the
//! backlog, and when it finds nothing it keeps polling the rings for a while
//! before it sleeps: that
//! while doubles when requests arrive during it and halves when it passes
//! with none, between [`MIN_POLL_US`] and [`MAX_POLL_US`]. Before it sleeps it
//! sets every queue's need-wakeup flag and looks once more (see
//! [`Queue::sleep`]).
//!
//! Keys resolve through the cache's shadow translation cache first.
//!
//! Data moves as [`transfer`](crate::datapath::transfer) describes; each
//! operation's file says what it does.
//!
//! Locks: see the crate's documentation; the worker holds none of the
//! spinlocks across an operation that sleeps.

use super::{
    master::Master,
    ops::{self, send, Issue, Outcome, Step},
    queue::{Next, Queue},
    transfer::COPY_CHUNK,
    work_id, DataPath,
};
use crate::uapi;
use kernel::{
    mm::memcg::MemCgroup,
    prelude::*,
    sync::{
        atomic::{Full, Relaxed},
        Arc,
    },
    task::resched::{cond_resched, fatal_signal_pending},
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
pub(super) const INITIAL_POLL_US: u32 = 50;
/// How long one run serves requests before it queues itself again.
const RUN_BUDGET_US: i64 = 20000;
/// How long a DOORBELL serves requests in its caller before it leaves the
/// rest to the worker (a request under way runs to its end).
const INLINE_BUDGET_US: i64 = 500;

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
    /// Serving in a DOORBELL's caller, not in the worker.
    inline: bool,
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
    /// The state of a new data path's worker.
    pub(super) fn new() -> Result<Self> {
        Ok(Self {
            batch_limit: 1,
            poll_us: INITIAL_POLL_US,
            bounce: KVec::new(),
            queues: KVec::with_capacity(uapi::MAX_QUEUES as usize, GFP_KERNEL_ACCOUNT)?,
            shadow_hits: 0,
            shadow_misses: 0,
            waiting: [const { None }; uapi::MAX_QUEUES as usize],
            inline: false,
        })
    }

    /// Whether a fatal signal stops what is served now: only in a DOORBELL's
    /// caller (a kernel worker gets none).
    pub(crate) fn interrupted(&self) -> bool {
        self.inline && fatal_signal_pending()
    }

    /// Drops what the worker kept (the file's release, once the worker no
    /// longer runs).
    pub(super) fn clear(&mut self) {
        let waiting = core::mem::replace(
            &mut self.waiting,
            [const { None }; uapi::MAX_QUEUES as usize],
        );
        let queues = core::mem::take(&mut self.queues);
        drop((waiting, queues));
    }

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
    data: &DataPath,
    ws: &mut WorkerState,
    q: &Queue,
    taken: u32,
    written: u32,
    errors: u64,
) {
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
        q.publish(&data.waiters);
        if let Some(master) = data.master.as_ref() {
            if master.push(q.index, &data.waiters) {
                data.stats.master_overflows.add(1, Relaxed);
            }
        }
    }
    // Fully ordered after the new head was published: pairs with `poll` setting the flag
    // before it looks at the ring.
    if taken > 0 && data.pollout_waiting.xchg(false, Full) {
        data.waiters.cv.notify_all();
    }
}

/// Takes a batch from `q` and completes it, after the completions of RECVs
/// that senders finished and the SEND that waits, if any. Returns how many
/// requests were taken or completed.
fn serve(data: &Arc<DataPath>, ws: &mut WorkerState, q: &Queue) -> u32 {
    let mut written = 0;
    let mut taken = 0;
    let mut errors = 0;
    let slot = q.index as usize;
    // The queue's waiting SEND first: until it completes nothing else is taken.
    if let Some(w) = ws.waiting.get_mut(slot).and_then(Option::take) {
        let mut cx = Issue {
            data,
            ws: &mut *ws,
            queue: q,
        };
        match send::resume(&mut cx, &w.sqe, w.since) {
            Step::Waiting(..) => {
                if let Some(entry) = ws.waiting.get_mut(slot) {
                    *entry = Some(w);
                }
                account(data, ws, q, 0, written, 0);
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
    let started = Instant::<Monotonic>::now();
    while taken < limit {
        if data.closing.load(Relaxed) {
            // The file is being released: the rest stays untaken.
            break;
        }
        // In a DOORBELL's caller, the worker takes the rest after a while, or when the caller
        // is being killed.
        if ws.inline
            && taken > 0
            && (started.elapsed().as_micros_ceil() >= INLINE_BUDGET_US || fatal_signal_pending())
        {
            break;
        }
        match q.take() {
            Next::Taken(sqe) => {
                taken += 1;
                let mut cx = Issue {
                    data,
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
    account(data, ws, q, taken, written, errors);
    taken + written
}

/// Serves one batch of `q` in the caller's context (a DOORBELL), when no run
/// of the worker holds its state: the worker is asleep, or queued and not
/// started. The caller's task pays for the requests (CPU time, memory
/// cgroup through the owner's as the worker does), and no worker wakes for
/// what one batch finishes (io_uring's inline issue). Returns whether the
/// worker is still needed: a run held the state (it serves the queue
/// itself), requests are left after the batch (posters kept posting while
/// it was served: the worker polls such a queue, which spares its posters
/// the doorbells), or a SEND of `q` waits for a RECV. A batch that one
/// poster published and rang for once is served here whole, and the worker
/// stays asleep.
pub(crate) fn serve_inline(data: &Arc<DataPath>, q: &Queue) -> bool {
    if data.closing.load(Relaxed) {
        return false;
    }
    // A run of the worker holds the state: it serves `q` too.
    let Some(mut guard) = data.worker.try_lock() else {
        return true;
    };
    let ws = &mut *guard;
    ws.inline = true;
    let served = serve(data, ws, q);
    ws.inline = false;
    // A batch served here is the run a doorbell would have started: counted as one.
    if served > 0 {
        data.stats.wakeups.add(1, Relaxed);
        data.stats
            .batch_limit
            .store(u64::from(ws.batch_limit), Relaxed);
    }
    let waits = ws
        .waiting
        .get(q.index as usize)
        .is_some_and(Option::is_some);
    // Under the worker's mutex: `ready` may write the queue's flags, which only the one
    // serving the queue writes.
    let left = waits || q.ready();
    drop(guard);
    left
}

/// Arms the timer for the SEND that stops waiting first, if any.
fn arm_timer(data: &Arc<DataPath>, ws: &WorkerState) {
    let left = ws
        .waiting
        .iter()
        .flatten()
        .map(|w| u64::from(w.timeout_ms).saturating_sub(jiffies::elapsed_ms(w.since)))
        .min();
    if let Some(ms) = left {
        let delay = msecs_to_jiffies(u32::try_from(ms.max(1)).unwrap_or(u32::MAX));
        // Already armed: the run it starts arms it again for the SENDs still waiting.
        let _ = dfl::system_dfl_long()
            .enqueue_delayed::<_, { work_id::RNR_TIMER }>(data.clone(), delay);
    }
}

/// One run of the worker: serves the queues until they stay empty for the
/// polling window, then sleeps.
pub(crate) fn run(data: Arc<DataPath>) {
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
            took += serve(&data, ws, &q);
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
                // TODO(worker-cpu): a kworker runs this, so the CPU time of the requests it
                // serves is charged to no CPU cgroup of the process's; a DOORBELL that finds
                // the worker asleep serves a batch in the caller instead (`serve_inline`).
                let _ = dfl::system_dfl_long().enqueue::<_, { work_id::WORKER }>(data.clone());
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
            arm_timer(&data, ws);
            break;
        }
    }
    data.stats.poll_us.store(u64::from(ws.poll_us), Relaxed);
}

/// The master ring of `data`, creating it (before the first queue).
pub(super) fn master(data: &DataPath) -> Result<&Arc<Master>> {
    if data.master.as_ref().is_none() {
        let master = Master::new()?;
        // Only the creation of queues, serialized, gets here.
        data.master.populate(master);
    }
    data.master.as_ref().ok_or(ENOMEM)
}
