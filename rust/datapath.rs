// SPDX-License-Identifier: GPL-2.0

//! The data path of one open file: queues of submission and completion
//! rings shared with user space, the master ring, the worker that executes
//! requests, the operations a request may ask for, and the grants other
//! files gave this one (peers) with the connections made through them.
//!
//! - [`queue`]: one queue's mappings and the posting protocol's kernel side;
//! - [`connection`]: where a queue's SENDs go, and the receiving side;
//! - [`worker`]: the worker's runs, batching and polling;
//! - [`transfer`]: moving bytes between registrations, shared with the COPY
//!   ioctl;
//! - [`ops`]: one file per opcode, in a table indexed by opcode;
//! - [`stats`]: the counters.
//!
//! [`DataPath`] owns its worker and its RNR timer: [`DataPath::kick`] queues
//! the worker, [`DataPath::stop`] stops both for good. It depends on the
//! cache (keys resolve through it), the pools (ring POOL_ALLOC/POOL_FREE) and
//! the peers' grants, never the other way round.

pub(crate) mod connection;
mod master;
pub(crate) mod ops;
pub(crate) mod queue;
mod stats;
pub(crate) mod transfer;
pub(crate) mod worker;

use crate::{
    cache::Cache,
    error::{MemregError, OpResult},
    events::{eventfd_arg, Waiters},
    peer::{self, Granter, Peers},
    pool::Pools,
    uapi,
};
use connection::Connection;
use kernel::error::compat::EISCONN;
use kernel::{
    bindings,
    fs::File,
    impl_has_delayed_work, impl_has_work,
    mm::{memcg::MemCgroup, virt::VmaNew},
    new_delayed_work, new_mutex, new_spinlock, new_work,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        full_barrier::smp_mb_full,
        poll::PollTable,
        Arc, Mutex, SetOnce, SpinLock,
    },
    workqueue::{
        cancel::{cancel_delayed_sync, cancel_sync},
        dfl, DelayedWork, Work, WorkItem,
    },
};
use master::Master;
use queue::Queue;
use stats::DataStats;
use worker::WorkerState;

/// The work items of a data path, by ID.
pub(crate) mod work_id {
    /// The worker, on `system_dfl_long`.
    pub(crate) const WORKER: u64 = 0;
    /// Wakes the worker when a SEND waiting for a RECV times out (delayed,
    /// on `system_dfl_long`).
    pub(crate) const RNR_TIMER: u64 = 1;
}

/// The data path of one open file.
#[pin_data]
pub(crate) struct DataPath {
    /// The file's cache, through which keys resolve.
    cache: Arc<Cache>,
    /// The file's pools, for ring POOL_ALLOC and POOL_FREE.
    pools: Arc<Pools>,
    /// The opener's memory cgroup: what the worker allocates on the file's
    /// behalf (receive FIFOs, bounce buffers) is charged to it, each
    /// allocation in its scope (a scope around the whole run costs every
    /// request).
    memcg: MemCgroup,
    /// Those waiting in `poll` for completions.
    waiters: Arc<Waiters>,
    /// The queues by index; room for all of them is reserved up front.
    /// Level 6 of the lock order (a leaf).
    #[pin]
    queues: SpinLock<KVec<Arc<Queue>>>,
    /// Serializes the creation of queues, connections, detaching and
    /// revoking. Level 1 (outermost).
    #[pin]
    create: Mutex<()>,
    /// The master ring, created with the first queue.
    master: SetOnce<Arc<Master>>,
    /// The worker's own state, held for a whole run. Level 1.
    #[pin]
    worker: Mutex<WorkerState>,
    /// The attachments this file made to others' data paths. Level 5.
    #[pin]
    peers: SpinLock<Peers<DataPath>>,
    /// The grant epoch: attachments made to this data path before its last
    /// PEER_REVOKE no longer hold.
    grant_epoch: Atomic<u64>,
    /// The counters.
    stats: DataStats,
    /// The file is being released: a COPY in progress stops, the worker is
    /// not queued again, grants end.
    closing: Atomic<bool>,
    /// A `poll` found a submission ring full and waits for room.
    pollout_waiting: Atomic<bool>,
    /// Runs the worker.
    #[pin]
    work: Work<DataPath, { work_id::WORKER }>,
    /// Wakes the worker when a SEND waiting for a RECV times out.
    #[pin]
    timer: DelayedWork<DataPath, { work_id::RNR_TIMER }>,
}

impl_has_work! {
    impl HasWork<Self, { work_id::WORKER }> for DataPath { self.work }
}
impl_has_delayed_work! {
    impl HasDelayedWork<Self, { work_id::RNR_TIMER }> for DataPath { self.timer }
}

impl WorkItem<{ work_id::WORKER }> for DataPath {
    type Pointer = Arc<DataPath>;

    fn run(this: Arc<DataPath>) {
        worker::run(this);
    }
}

impl WorkItem<{ work_id::RNR_TIMER }> for DataPath {
    type Pointer = Arc<DataPath>;

    fn run(this: Arc<DataPath>) {
        // The release cancels this item, then the worker again.
        DataPath::kick(&this);
    }
}

impl Granter for DataPath {
    fn is_closed(&self) -> bool {
        self.closing.load(Relaxed)
    }

    fn grant_epoch(&self) -> u64 {
        self.grant_epoch.load(Relaxed)
    }
}

impl DataPath {
    /// Creates the data path of a file, charged to the caller.
    pub(crate) fn new(
        cache: Arc<Cache>,
        pools: Arc<Pools>,
        waiters: Arc<Waiters>,
    ) -> Result<Arc<Self>> {
        Arc::pin_init(
            try_pin_init!(Self {
                cache,
                pools,
                memcg: MemCgroup::of_current(),
                waiters,
                queues <- new_spinlock!(
                    KVec::with_capacity(uapi::MAX_QUEUES as usize, GFP_KERNEL_ACCOUNT)?,
                    "memreg::DataPath::queues"
                ),
                create <- new_mutex!((), "memreg::DataPath::create"),
                master: SetOnce::new(),
                worker <- new_mutex!(WorkerState::new()?, "memreg::DataPath::worker"),
                peers <- new_spinlock!(Peers::new(), "memreg::DataPath::peers"),
                grant_epoch: Atomic::new(0),
                stats: DataStats::new(),
                closing: Atomic::new(false),
                pollout_waiting: Atomic::new(false),
                work <- new_work!("memreg::DataPath::work"),
                timer <- new_delayed_work!("memreg::DataPath::timer"),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Queues the worker, unless the file is being released. Already queued:
    /// the queued run sees everything; running: it runs again.
    pub(crate) fn kick(this: &Arc<Self>) {
        if !this.closing.load(Relaxed) {
            let _ = dfl::system_dfl_long().enqueue::<_, { work_id::WORKER }>(this.clone());
        }
    }

    /// Whether the file is being released.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Relaxed)
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

    /// The queue with index `index`.
    pub(crate) fn queue(&self, index: u32) -> Option<Arc<Queue>> {
        self.queues.lock().get(index as usize).cloned()
    }

    /// The attachment `handle`: the peer's data path and the epoch of the
    /// grant, checked (see [`peer::lookup`]).
    pub(crate) fn peer(&self, handle: u32) -> Result<(Arc<DataPath>, u64), MemregError> {
        peer::lookup(&self.peers, handle)
    }

    /// The number of attachments.
    pub(crate) fn peer_count(&self) -> usize {
        self.peers.lock().len()
    }

    /// The cache keys resolve through.
    pub(crate) fn cache(&self) -> &Arc<Cache> {
        &self.cache
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

    /// Disconnects the queues sending through attachment `handle` (all of
    /// them with `None`). Process context.
    fn disconnect(this: &Arc<Self>, handle: Option<u32>) -> Result {
        for q in this.all_queues()?.iter() {
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
                conn.queue.remove_sender(this, q.index);
            }
        }
        Ok(())
    }

    /// QUEUE_CREATE: creates a queue (and the master ring with the first).
    /// The result is written back with `write_back` before the queue is
    /// installed, so a call that fails changes nothing.
    pub(crate) fn queue_create(
        &self,
        mut req: uapi::QueueCreate,
        write_back: impl FnOnce(&uapi::QueueCreate) -> Result,
    ) -> OpResult {
        uapi::check_reserved(&req.reserved)?;
        let eventfd = eventfd_arg(req.eventfd)?;
        let _create = self.create.lock();
        let index = u32::try_from(self.queues.lock().len()).map_err(|_| ENOSPC)?;
        if index >= uapi::MAX_QUEUES {
            return Err(ENOSPC.into());
        }
        let queue = Queue::new(index, req.sq_entries, req.cq_entries, eventfd)?;
        worker::master(self)?;
        req.queue = index;
        req.sq_bytes = Queue::sq_bytes(req.sq_entries) as u64;
        req.cq_bytes = Queue::cq_bytes(req.cq_entries) as u64;
        write_back(&req)?;
        // Room for every queue was reserved; creation is serialized, so this is index.
        self.queues
            .lock()
            .push_within_capacity(queue)
            .map_err(|_| ENOSPC)?;
        Ok(())
    }

    /// DOORBELL: serves a batch of queue `req.queue` in the caller when the
    /// worker is asleep, and wakes the worker for what is left (see
    /// [`worker::serve_inline`]).
    pub(crate) fn doorbell(this: &Arc<Self>, req: &uapi::DoorbellReq) -> OpResult {
        let Some(q) = this.queue(req.queue) else {
            return Err(EINVAL.into());
        };
        this.stats.doorbells.add(1, Relaxed);
        if worker::serve_inline(this, &q) {
            Self::kick(this);
        }
        Ok(())
    }

    /// PEER_ATTACH: attaches `peer`, the data path of another memreg file,
    /// and returns its handle in `req.peer`, written back with `write_back`
    /// (the attachment is undone when that fails).
    pub(crate) fn peer_attach(
        &self,
        mut req: uapi::PeerAttach,
        peer: Arc<DataPath>,
        write_back: impl FnOnce(&uapi::PeerAttach) -> Result,
    ) -> OpResult {
        // Read once the file was found open: a revocation afterwards ends this attachment.
        let epoch = peer.grant_epoch();
        let mut room = if self.peers.lock().needs_room() {
            peer::room()?
        } else {
            KVec::new()
        };
        let attached = self.peers.lock().attach(peer, epoch, &mut room);
        // Outside the lock: a refused attachment may hold the last reference to the peer.
        drop(room);
        match attached {
            Ok(handle) => {
                req.peer = handle;
                if let Err(e) = write_back(&req) {
                    // The caller cannot learn the handle: undo the call.
                    let peer = self.peers.lock().detach(handle);
                    drop(peer);
                    return Err(e.into());
                }
                Ok(())
            }
            Err((e, peer)) => {
                drop(peer);
                Err(e.into())
            }
        }
    }

    /// PEER_DETACH: drops handle `req.peer` and disconnects the queues
    /// connected through it.
    pub(crate) fn peer_detach(this: &Arc<Self>, req: &uapi::PeerDetachReq) -> OpResult {
        let _serial = this.create.lock();
        // Checked before the fallible disconnection, so that nothing changed when it fails.
        // Another thread may detach the same handle meanwhile: then there is nothing to drop.
        if this.peers.lock().find(req.peer).is_none() {
            return Err(ENOENT.into());
        }
        Self::disconnect(this, Some(req.peer))?;
        let peer = this.peers.lock().detach(req.peer);
        drop(peer);
        // A SEND waiting on a queue it disconnected completes now.
        Self::kick(this);
        Ok(())
    }

    /// PEER_REVOKE: every attachment made to this data path so far stops
    /// working, and the queues connected to its queues are disconnected.
    pub(crate) fn peer_revoke(&self) -> OpResult {
        let _serial = self.create.lock();
        self.grant_epoch.add(1, Relaxed);
        for q in self.all_queues()?.iter() {
            q.remove_senders();
        }
        Ok(())
    }

    /// QUEUE_CONNECT: SENDs on queue `req.queue` go to the RECVs posted on
    /// queue `req.remote_queue` of the peer `req.peer`.
    pub(crate) fn queue_connect(this: &Arc<Self>, req: &uapi::QueueConnectReq) -> OpResult {
        // Connections, detaching and revoking are serialized with the creation of queues.
        let _serial = this.create.lock();
        let queue = this.queue(req.queue).ok_or(EINVAL)?;
        let (peer, epoch) = this.peer(req.peer)?;
        let remote = peer.queue(req.remote_queue).ok_or(EINVAL)?;
        if queue.send.lock().is_some() {
            return Err(EISCONN.into());
        }
        remote.add_sender(this.clone(), req.queue)?;
        let conn = Connection {
            handle: req.peer,
            data: peer,
            epoch,
            queue: remote,
            rnr_timeout_ms: req.rnr_timeout_ms,
        };
        *queue.send.lock() = Some(conn);
        Ok(())
    }

    /// Maps the master ring (`user`: its read-write page) or a queue's
    /// submission (`user`) or completion mapping. `EINVAL` for one that does
    /// not exist.
    pub(crate) fn map(&self, vma: &VmaNew, queue: Option<u32>, user: bool) -> Result {
        let pages = match queue {
            None => {
                let master = self.master.as_ref().ok_or(EINVAL)?;
                if user {
                    master.user.clone()
                } else {
                    master.ring.clone()
                }
            }
            Some(q) => {
                let q = self.queue(q).ok_or(EINVAL)?;
                if user {
                    q.user.clone()
                } else {
                    q.kernel.clone()
                }
            }
        };
        pages.map_into(vma, 0, user)
    }

    /// `poll`'s part of the data path: readable when a completion ring has
    /// unread completions or the master ring unread entries; writable when
    /// no submission ring is full.
    pub(crate) fn poll_mask(&self) -> u32 {
        let any_full = || self.queues.lock().iter().any(|q| q.sq_full());
        let readable = self.queues.lock().iter().any(|q| q.cq_pending())
            || self.master.as_ref().is_some_and(|m| m.pending());
        let mut writable = !any_full();
        if !writable {
            // Only the worker clears the flag. Set, then look again: the worker, after it
            // frees a slot, either sees the flag and wakes us, or we see the slot free.
            self.pollout_waiting.store(true, Relaxed);
            smp_mb_full();
            writable = !any_full();
        }
        let mut mask = 0;
        if readable {
            mask |= bindings::POLLIN | bindings::POLLRDNORM;
        }
        if writable {
            mask |= bindings::POLLOUT | bindings::POLLWRNORM;
        }
        mask
    }

    /// Registers `table` for the wake-ups of completions and of events.
    pub(crate) fn poll_wait(&self, file: &File, table: PollTable<'_>) {
        // Registered even before EVENTS_SETUP or QUEUE_CREATE, which wake it.
        table.register_wait(file, &self.waiters.cv);
    }

    /// Stops the data path for good (the file's release): the worker stops
    /// (a COPY in progress gives up at its next step) and is not queued
    /// again, no other file's worker wakes this one's any more, and the
    /// attachments and what the worker kept go.
    pub(crate) fn stop(this: &Arc<Self>) {
        this.closing.store(true, Relaxed);
        // No other file's worker wakes this one's from now on: its receiving queues close, and
        // its queues leave the receiving queues they were connected to (both under the locks
        // those wake-ups happen under).
        let mut i = 0;
        loop {
            let Some(q) = this.queues.lock().get(i).cloned() else {
                break;
            };
            let conn = q.send.lock().take();
            if let Some(conn) = conn {
                conn.queue.remove_sender(this, q.index);
            }
            q.close_recv();
            i += 1;
        }
        cancel_sync::<_, { work_id::WORKER }>(this);
        // The timer may have queued the worker again before it was cancelled.
        cancel_delayed_sync::<_, { work_id::RNR_TIMER }>(this);
        cancel_sync::<_, { work_id::WORKER }>(this);
        // The handles' references on other data paths go (the cycle of two files attached to
        // each other breaks here), and what the worker kept of waiting SENDs.
        let peers = this.peers.lock().take_all();
        drop(peers);
        this.worker.lock().clear();
    }
}
