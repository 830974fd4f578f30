// SPDX-License-Identifier: GPL-2.0

//! Queues of the data path: a submission ring (one slot per request) that
//! any number of user threads post into without a lock, and a completion
//! ring the context's worker writes; and the context's master ring, which
//! names the queues with new completions.
//!
//! Each ring is kernel pages mapped into the process
//! ([`SharedPages`]): what user space writes (the submission slots, its
//! completion head and arm word) in one read-write mapping per queue, what
//! the kernel writes (the heads and tails it publishes, its flags, the
//! completions) in one read-only mapping. Everything the kernel reads from
//! the read-write pages is untrusted: a descriptor is copied out once and
//! only the copy is validated and used, and an index that makes no sense
//! reads as "not ready" or "full". The protocols and their barriers are in
//! `include/uapi/linux/memreg.h`.
//!
//! Only the context's worker takes descriptors and writes completions (a
//! work item never runs twice at once), so the kernel-side indexes are
//! atomics written by one thread and read by `poll` and the ioctls.
//!
//! For two-sided messages a queue also has a receiving side (the RECVs
//! posted on it and the queues connected to it) and a sending side (the
//! queue its SENDs go to). A posted RECV reserves room for its completion
//! in the completion ring (`owed`), so the sender's worker can write and
//! publish it at any time, without waking the owner's worker. The
//! completion ring and the master ring therefore have a lock each
//! (`Queue::cq`, `Master::lock`) that writers of entries take; the owner's
//! worker alone still takes descriptors. Locks: `Queue::send` and
//! `Queue::recv` are spinlocks, never held together, taken after the table
//! locks; `Queue::cq` nests inside `recv`, and `Master::lock` is a leaf. A
//! wake-up of another context's worker happens under `recv`, which the
//! other context's release takes before it cancels its worker.

use crate::{
    context::{work_id, ContextShared},
    events::Waiters,
    registration::Target,
    uapi,
};
use kernel::{
    eventfd::EventFd,
    mm::shared_pages::SharedPages,
    new_spinlock,
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        barrier::{smp_mb, Full},
        Arc, SpinLock,
    },
    transmute::AsBytes,
    workqueue::dfl,
};

/// Bytes of a submission slot.
const SLOT_BYTES: usize = core::mem::size_of::<uapi::SqSlot>();
/// Bytes of a completion.
const CQE_BYTES: usize = core::mem::size_of::<uapi::Cqe>();

use crate::uapi::layout::{
    CQ_CQ_ENTRIES, CQ_FLAGS, CQ_SQ_ENTRIES, CQ_SQ_HEAD, CQ_TAIL, MASTER_ARM, MASTER_FLAGS,
    MASTER_HEAD, MASTER_OVERFLOWS, MASTER_TAIL, SLOT_SEQ, SQ_CQ_ARM, SQ_CQ_HEAD, SQ_INSERT,
};

/// The bytes of a mapping holding a 64-byte header and `entries` entries of
/// `size` bytes, in whole pages.
fn area_bytes(entries: u32, size: usize) -> usize {
    (64 + entries as usize * size).next_multiple_of(PAGE_SIZE)
}

/// Clears the arm word at `index` of `user`; returns whether it was armed.
/// A load first, so an unarmed ring costs no atomic exchange.
fn disarm(user: &SharedPages, index: usize) -> bool {
    user.load_u32(index).unwrap_or(0) != 0 && user.xchg_u32(index, 0).unwrap_or(0) != 0
}

/// A bounded first-in, first-out queue whose memory is allocated up front,
/// so that pushing and popping never allocate.
pub(crate) struct Fifo<T> {
    slots: KVVec<Option<T>>,
    head: usize,
    len: usize,
}

impl<T> Fifo<T> {
    /// A queue with room for nothing.
    pub(crate) const fn empty() -> Self {
        Self {
            slots: KVVec::new(),
            head: 0,
            len: 0,
        }
    }

    /// A queue with room for `n` entries.
    pub(crate) fn with_capacity(n: usize) -> Result<Self> {
        let mut slots = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..n {
            slots.push(None, GFP_KERNEL_ACCOUNT)?;
        }
        Ok(Self {
            slots,
            head: 0,
            len: 0,
        })
    }

    /// Entries it has room for.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Entries in it.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds `v` at the back, or gives it back when full.
    pub(crate) fn push(&mut self, v: T) -> Result<(), T> {
        let cap = self.capacity();
        if self.len >= cap {
            return Err(v);
        }
        let at = (self.head + self.len).checked_rem(cap).unwrap_or(0);
        match self.slots.get_mut(at) {
            Some(slot) => {
                *slot = Some(v);
                self.len += 1;
                Ok(())
            }
            None => Err(v),
        }
    }

    /// Takes the entry at the front.
    pub(crate) fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let v = self.slots.get_mut(self.head)?.take();
        self.head = (self.head + 1).checked_rem(self.capacity()).unwrap_or(0);
        self.len -= 1;
        v
    }
}

/// A RECV posted on a queue, waiting for a SEND.
pub(crate) struct PostedRecv {
    /// The request's user data.
    pub(crate) user_data: u64,
    /// The buffer's registration, with local write access.
    pub(crate) registration: Target,
    /// The buffer's offset in it.
    pub(crate) offset: u64,
    /// The buffer's length.
    pub(crate) length: u64,
}

/// The slots of a receiving queue one sending file may take.
pub(crate) const MAX_SENDERS_PER_FILE: usize = uapi::MAX_SENDERS / 4;

/// A queue connected to send to a queue: its context is woken when a RECV
/// is posted while one of its SENDs waits.
struct Sender {
    ctx: Arc<ContextShared>,
    queue: u32,
    waiting: bool,
}

/// The receiving side of a queue, under `Queue::recv`.
pub(crate) struct RecvState {
    /// RECVs posted, oldest first.
    posted: Fifo<PostedRecv>,
    /// The queues connected to send here; room for `MEMREG_MAX_SENDERS`
    /// once one connected.
    senders: KVec<Sender>,
    /// The owner's file is released: nothing is posted or delivered any
    /// more, and no worker of the owner is woken.
    closed: bool,
}

impl RecvState {
    /// Wakes the workers of the senders whose SEND waits here, to look
    /// again. Under the lock: a sender's release unlinks it under this lock
    /// before it cancels its worker.
    fn wake_waiting(&mut self) {
        for s in self.senders.iter_mut().filter(|s| s.waiting) {
            s.waiting = false;
            let _ = dfl::system_dfl_long().enqueue::<_, { work_id::WORKER }>(s.ctx.clone());
        }
    }
}

/// Where a queue's SENDs go (`MEMREG_IOC_QUEUE_CONNECT`).
#[derive(Clone)]
pub(crate) struct Connection {
    /// The peer handle it was made through.
    pub(crate) handle: u32,
    /// The receiving queue's context.
    pub(crate) ctx: Arc<ContextShared>,
    /// That context's grant epoch when attached.
    pub(crate) epoch: u64,
    /// The receiving queue.
    pub(crate) queue: Arc<Queue>,
    /// How long a SEND waits for a RECV, in milliseconds.
    pub(crate) rnr_timeout_ms: u32,
}

/// What a sender found on the receiving queue.
pub(crate) enum Receiver {
    /// The oldest posted RECV, now the sender's to fill.
    Posted(PostedRecv),
    /// None posted: the sender is woken when one is.
    Waiting,
    /// The receiving queue's file was released.
    Closed,
}

/// One queue: its two rings.
#[pin_data]
pub(crate) struct Queue {
    /// Its index, `0..MEMREG_MAX_QUEUES`.
    pub(crate) index: u32,
    /// What user space writes: the submission slots, its completion head
    /// and arm word.
    pub(crate) user: Arc<SharedPages>,
    /// What the kernel writes: the heads and tails it publishes, its flags,
    /// the completions.
    pub(crate) kernel: Arc<SharedPages>,
    /// Slots of the submission ring, a power of two.
    sq_entries: u32,
    /// Entries of the completion ring, a power of two.
    cq_entries: u32,
    /// Signalled by armed completions.
    eventfd: Option<EventFd>,
    /// Submissions taken (the published `sq_head`).
    sq_head: Atomic<u64>,
    /// Completions written (the published `cq_tail`).
    cq_tail: Atomic<u32>,
    /// The last completion head read that made sense.
    cq_head_seen: Atomic<u32>,
    /// The published flags (`MEMREG_QUEUE_*`).
    flags: Atomic<u32>,
    /// Times the queue stopped for a full completion ring.
    stalls: Atomic<u64>,
    /// Completions owed to RECVs posted on this queue: room the completion
    /// ring keeps for them. Changed by the owner's worker only.
    owed: Atomic<u32>,
    /// A SEND of this queue waits for a RECV: nothing else is taken.
    pub(crate) stalled: Atomic<bool>,
    /// Serializes the writers of completions: the owner's worker and the
    /// senders' workers finishing RECVs.
    #[pin]
    cq: SpinLock<()>,
    /// The receiving side.
    #[pin]
    recv: SpinLock<RecvState>,
    /// The sending side.
    #[pin]
    pub(crate) send: SpinLock<Option<Connection>>,
}

/// The outcome of looking at a queue's next slot.
pub(crate) enum Next {
    /// A descriptor, copied out of the slot, which is free again.
    Taken(uapi::Sqe),
    /// Nothing published there yet.
    Empty,
    /// The completion ring has no room: nothing was taken.
    CqFull,
}

impl Queue {
    /// The length of the read-write mapping of a queue of `sq_entries`.
    pub(crate) fn sq_bytes(sq_entries: u32) -> usize {
        area_bytes(sq_entries, SLOT_BYTES)
    }

    /// The length of the read-only mapping of a queue of `cq_entries`.
    pub(crate) fn cq_bytes(cq_entries: u32) -> usize {
        area_bytes(cq_entries, CQE_BYTES)
    }

    /// Creates queue `index`: sizes are powers of two, `2 ..=
    /// MEMREG_MAX_SQ_ENTRIES` (with one slot, a published slot and a slot
    /// free for the next lap would have the same sequence) and `sq_entries
    /// ..= MEMREG_MAX_CQ_ENTRIES` (else `EINVAL`). Its pages are charged to
    /// the caller.
    pub(crate) fn new(
        index: u32,
        sq_entries: u32,
        cq_entries: u32,
        eventfd: Option<EventFd>,
    ) -> Result<Arc<Self>> {
        if !sq_entries.is_power_of_two()
            || !(2..=uapi::MAX_SQ_ENTRIES).contains(&sq_entries)
            || !cq_entries.is_power_of_two()
            || cq_entries < sq_entries
            || cq_entries > uapi::MAX_CQ_ENTRIES
        {
            return Err(EINVAL);
        }
        let user = Arc::new(
            SharedPages::new(Self::sq_bytes(sq_entries) / PAGE_SIZE)?,
            GFP_KERNEL_ACCOUNT,
        )?;
        let kernel = Arc::new(
            SharedPages::new(Self::cq_bytes(cq_entries) / PAGE_SIZE)?,
            GFP_KERNEL_ACCOUNT,
        )?;
        // Slot `i` starts free for lap 0: its sequence is `i`.
        for i in 0..sq_entries as usize {
            user.store_u64(Self::seq_word(i), i as u64);
        }
        kernel.store_u32(CQ_SQ_ENTRIES, sq_entries);
        kernel.store_u32(CQ_CQ_ENTRIES, cq_entries);
        // No worker runs yet: a poster rings the doorbell.
        kernel.store_u32(CQ_FLAGS, uapi::QUEUE_NEED_WAKEUP);
        Arc::pin_init(
            try_pin_init!(Self {
                index,
                user,
                kernel,
                sq_entries,
                cq_entries,
                eventfd,
                sq_head: Atomic::new(0),
                cq_tail: Atomic::new(0),
                cq_head_seen: Atomic::new(0),
                flags: Atomic::new(uapi::QUEUE_NEED_WAKEUP),
                stalls: Atomic::new(0),
                owed: Atomic::new(0),
                stalled: Atomic::new(false),
                cq <- new_spinlock!((), "memreg::Queue::cq"),
                recv <- new_spinlock!(
                    RecvState {
                        posted: Fifo::empty(),
                        senders: KVec::new(),
                        closed: false,
                    },
                    "memreg::Queue::recv"
                ),
                send <- new_spinlock!(None, "memreg::Queue::send"),
            }? Error),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Makes room for the RECVs this queue may have posted (as many as its
    /// completion ring has entries) and their completions. Worker only;
    /// allocates the first time.
    pub(crate) fn prepare_recv(&self) -> Result {
        if self.recv.lock().posted.capacity() != 0 {
            return Ok(());
        }
        let posted = Fifo::with_capacity(self.cq_entries as usize)?;
        let mut st = self.recv.lock();
        if st.posted.capacity() == 0 {
            st.posted = posted;
        }
        Ok(())
    }

    /// Posts a RECV: it owes a completion from now on, and the senders
    /// waiting for one are woken. Gives it back when the queue cannot take
    /// it. Owner's worker only.
    pub(crate) fn post_recv(&self, r: PostedRecv) -> Result<(), PostedRecv> {
        let mut st = self.recv.lock();
        if st.closed {
            return Err(r);
        }
        st.posted.push(r)?;
        self.owed.add(1, Relaxed);
        st.wake_waiting();
        Ok(())
    }

    /// Takes the oldest posted RECV for the SEND of `ctx`'s queue `queue`,
    /// or, when none is posted, has that context woken once one is.
    pub(crate) fn take_recv(&self, ctx: &ContextShared, queue: u32) -> Receiver {
        let mut st = self.recv.lock();
        if st.closed {
            return Receiver::Closed;
        }
        if let Some(r) = st.posted.pop() {
            return Receiver::Posted(r);
        }
        if let Some(s) = st
            .senders
            .iter_mut()
            .find(|s| s.queue == queue && core::ptr::eq(&*s.ctx, ctx))
        {
            s.waiting = true;
        }
        Receiver::Waiting
    }

    /// Writes and publishes the completion of a RECV a sender took, into the
    /// room kept for it since it was posted, and names the queue in the
    /// owner's master ring. Dropped if the owner's file was released
    /// meanwhile (`None`); otherwise returns whether the master ring was
    /// full.
    pub(crate) fn finish_recv(&self, owner: &ContextShared, cqe: uapi::Cqe) -> Option<bool> {
        {
            let st = self.recv.lock();
            if st.closed {
                return None;
            }
            let _cq = self.cq.lock();
            self.write_cqe(&cqe);
            // After the tail moved: a reader of both never sees more room than there is.
            self.owed.fetch_sub(1, Relaxed);
            self.publish_locked(&owner.waiters);
        }
        Some(
            owner
                .data
                .master
                .as_ref()
                .is_some_and(|master| master.push(self.index, &owner.waiters)),
        )
    }

    /// Connects `ctx`'s queue `queue` to send here. `ECONNRESET` when this
    /// queue's file was released, `ENOSPC` when `MEMREG_MAX_SENDERS` are
    /// connected, or [`MAX_SENDERS_PER_FILE`] of `ctx`'s (so that one peer
    /// cannot take every slot). Process context: allocates the first time.
    pub(crate) fn add_sender(&self, ctx: Arc<ContextShared>, queue: u32) -> Result {
        let mut room = KVec::new();
        if self.recv.lock().senders.capacity() == 0 {
            room = KVec::with_capacity(uapi::MAX_SENDERS, GFP_KERNEL_ACCOUNT)?;
        }
        let mut st = self.recv.lock();
        if st.closed {
            return Err(ECONNRESET);
        }
        if st.senders.capacity() == 0 {
            core::mem::swap(&mut st.senders, &mut room);
        }
        let mine = st
            .senders
            .iter()
            .filter(|s| Arc::ptr_eq(&s.ctx, &ctx))
            .count();
        if mine >= MAX_SENDERS_PER_FILE {
            return Err(ENOSPC);
        }
        st.senders
            .push_within_capacity(Sender {
                ctx,
                queue,
                waiting: false,
            })
            .map_err(|_| ENOSPC)?;
        drop(st);
        drop(room);
        Ok(())
    }

    /// Disconnects `ctx`'s queue `queue` from this one, if it is connected.
    pub(crate) fn remove_sender(&self, ctx: &ContextShared, queue: u32) {
        let removed = {
            let mut st = self.recv.lock();
            st.senders
                .iter()
                .position(|s| s.queue == queue && core::ptr::eq(&*s.ctx, ctx))
                .and_then(|i| st.senders.remove(i).ok())
        };
        // The context reference goes outside the lock.
        drop(removed);
    }

    /// Disconnects every queue that sends here (their later SENDs see that
    /// the grant was revoked or the file released).
    pub(crate) fn remove_senders(&self) {
        let senders = {
            let mut st = self.recv.lock();
            st.wake_waiting();
            core::mem::replace(&mut st.senders, KVec::new())
        };
        drop(senders);
    }

    /// Closes the receiving side for good when the file is released: posted
    /// RECVs and unpublished completions are dropped, senders unlinked, and
    /// no other worker wakes this context's afterwards.
    pub(crate) fn close_recv(&self) {
        let (posted, senders) = {
            let mut st = self.recv.lock();
            st.closed = true;
            st.wake_waiting();
            (
                core::mem::replace(&mut st.posted, Fifo::empty()),
                core::mem::replace(&mut st.senders, KVec::new()),
            )
        };
        drop((posted, senders));
    }

    /// The `u64` index of the sequence of slot `i`.
    fn seq_word(i: usize) -> usize {
        (uapi::SQ_SLOTS_OFFSET + i * SLOT_BYTES) / 8 + SLOT_SEQ
    }

    /// Publishes `flags`.
    fn set_flags(&self, flags: u32) {
        if self.flags.load(Relaxed) != flags {
            self.flags.store(flags, Relaxed);
            self.kernel.store_u32(CQ_FLAGS, flags);
        }
    }

    /// Says the worker is awake (clears `MEMREG_QUEUE_NEED_WAKEUP`).
    pub(crate) fn wake(&self) {
        self.set_flags(self.flags.load(Relaxed) & !uapi::QUEUE_NEED_WAKEUP);
    }

    /// Says the worker goes to sleep: sets `MEMREG_QUEUE_NEED_WAKEUP`, then
    /// a full barrier, then returns whether a descriptor is ready after all
    /// (the worker must then not sleep). Pairs with the poster's barrier
    /// between publishing a slot and reading the flags.
    pub(crate) fn sleep(&self) -> bool {
        self.set_flags(self.flags.load(Relaxed) | uapi::QUEUE_NEED_WAKEUP);
        smp_mb(Full);
        self.ready()
    }

    /// Whether the next slot is published and the completion ring has room
    /// for its completion. A published slot without room sets
    /// `MEMREG_QUEUE_CQ_FULL` first (then a full barrier and a second look),
    /// so that the reader, once it makes room, rings the doorbell.
    pub(crate) fn ready(&self) -> bool {
        !self.stalled.load(Relaxed) && self.published().is_some() && self.room_or_flag()
    }

    /// The head and the index of its slot's sequence word, if the slot at
    /// the head is published. Acquire: the descriptor the poster wrote before
    /// publishing is visible then.
    fn published(&self) -> Option<(u64, usize)> {
        let head = self.sq_head.load(Relaxed);
        let slot = (head & u64::from(self.sq_entries - 1)) as usize;
        let seq_word = Self::seq_word(slot);
        (self.user.load_u64(seq_word) == Some(head.wrapping_add(1))).then_some((head, seq_word))
    }

    /// Whether the completion ring has room; if not, sets
    /// `MEMREG_QUEUE_CQ_FULL`, issues a full barrier and looks once more.
    /// Pairs with the reader's barrier between storing its head and reading
    /// the flags: either it sees the flag and rings, or this sees its head.
    fn room_or_flag(&self) -> bool {
        if self.cq_room() {
            return true;
        }
        let flags = self.flags.load(Relaxed);
        if flags & uapi::QUEUE_CQ_FULL == 0 {
            self.stalls.add(1, Relaxed);
            self.set_flags(flags | uapi::QUEUE_CQ_FULL);
        }
        smp_mb(Full);
        self.cq_room()
    }

    /// Times the queue stopped for a full completion ring.
    pub(crate) fn stalls(&self) -> u64 {
        self.stalls.load(Relaxed)
    }

    /// Whether the completion ring has room for one more completion. A head
    /// that makes no sense reads as full: one past the tail, or behind the
    /// last head seen (a reader never moves back).
    fn cq_room(&self) -> bool {
        let head = self.user.load_u32(SQ_CQ_HEAD).unwrap_or(0);
        let seen = self.cq_head_seen.load(Relaxed);
        let tail = self.cq_tail.load(Relaxed);
        if head.wrapping_sub(seen) > tail.wrapping_sub(seen) {
            return false;
        }
        self.cq_head_seen.store(head, Relaxed);
        // Room kept for the completions posted RECVs owe counts as used.
        tail.wrapping_sub(head)
            .saturating_add(self.owed.load(Relaxed))
            < self.cq_entries
    }

    /// Submissions posted and not taken, as far as the untrusted insert
    /// index says, at most the ring's size.
    pub(crate) fn backlog(&self) -> u32 {
        let insert = self.user.load_u64(SQ_INSERT).unwrap_or(0);
        let pending = insert.wrapping_sub(self.sq_head.load(Relaxed));
        pending.min(u64::from(self.sq_entries)) as u32
    }

    /// Whether a poster would find the submission ring full now.
    pub(crate) fn sq_full(&self) -> bool {
        let insert = self.user.load_u64(SQ_INSERT).unwrap_or(0);
        insert.wrapping_sub(self.sq_head.load(Relaxed)) >= u64::from(self.sq_entries)
    }

    /// Whether the queue is stopped for a full completion ring.
    pub(crate) fn cq_full(&self) -> bool {
        self.flags.load(Relaxed) & uapi::QUEUE_CQ_FULL != 0
    }

    /// Whether published completions wait for the reader.
    pub(crate) fn cq_pending(&self) -> bool {
        let head = self.user.load_u32(SQ_CQ_HEAD).unwrap_or(0);
        Some(head) != self.kernel.load_u32(CQ_TAIL)
    }

    /// Takes the next descriptor: copies it out of its slot once, frees the
    /// slot for the next lap and publishes the new head. Only when the
    /// completion ring has room for its completion. Worker only.
    pub(crate) fn take(&self) -> Next {
        let Some((head, seq_word)) = self.published() else {
            return Next::Empty;
        };
        // Only a published request needs room: a reader that keeps its ring exactly full
        // does not stall the queue.
        if !self.room_or_flag() {
            return Next::CqFull;
        }
        if self.flags.load(Relaxed) & uapi::QUEUE_CQ_FULL != 0 {
            self.set_flags(self.flags.load(Relaxed) & !uapi::QUEUE_CQ_FULL);
        }
        let mut words = [0u64; 7];
        for (i, w) in words.iter_mut().enumerate() {
            *w = self.user.load_u64_relaxed(seq_word + 1 + i).unwrap_or(0);
        }
        // The one copy: the slot may change under us from now on.
        let sqe = uapi::sqe_from_words(&words);
        // Release: our reads of the slot happen before a poster of the next lap may write it.
        self.user
            .store_u64(seq_word, head.wrapping_add(u64::from(self.sq_entries)));
        let head = head.wrapping_add(1);
        self.sq_head.store(head, Relaxed);
        self.kernel.store_u64(CQ_SQ_HEAD, head);
        Next::Taken(sqe)
    }

    /// Writes a completion, to be published by [`Queue::publish`]. The
    /// caller made sure there is room ([`Queue::take`]). Worker only.
    pub(crate) fn complete(&self, cqe: &uapi::Cqe) {
        let _cq = self.cq.lock();
        self.write_cqe(cqe);
    }

    /// Writes a completion at the tail, under `cq`.
    fn write_cqe(&self, cqe: &uapi::Cqe) {
        let tail = self.cq_tail.load(Relaxed);
        let index = (tail & (self.cq_entries - 1)) as usize;
        self.kernel
            .write_words(uapi::CQ_ENTRIES_OFFSET + index * CQE_BYTES, cqe.as_bytes());
        self.cq_tail.store(tail.wrapping_add(1), Relaxed);
    }

    /// Publishes the completions written since the last call (once per
    /// batch); wakes `waiters` and signals the eventfd if the ring was
    /// armed. Worker only.
    pub(crate) fn publish(&self, waiters: &Waiters) {
        let _cq = self.cq.lock();
        self.publish_locked(waiters);
    }

    /// Publishes the tail, under `cq`.
    fn publish_locked(&self, waiters: &Waiters) {
        let tail = self.cq_tail.load(Relaxed);
        // Release: the entries before the tail that covers them.
        self.kernel.store_u32(CQ_TAIL, tail);
        // Pairs with the reader's barrier between arming and looking at the tail again:
        // either it sees the new tail, or we see its arm word.
        smp_mb(Full);
        if disarm(&self.user, SQ_CQ_ARM) {
            waiters.cv.notify_all();
            if let Some(eventfd) = &self.eventfd {
                eventfd.signal();
            }
        }
    }
}

/// The master ring: the queues with new completions, in order.
#[pin_data]
pub(crate) struct Master {
    /// The header and the entries, read-only to user space.
    pub(crate) ring: Arc<SharedPages>,
    /// The reader's head and arm word.
    pub(crate) user: Arc<SharedPages>,
    /// Entries written (the published tail).
    tail: Atomic<u32>,
    /// Entries not written for a full ring.
    overflows: Atomic<u64>,
    /// Serializes the writers of entries.
    #[pin]
    lock: SpinLock<()>,
}

impl Master {
    /// The length of the read-only mapping.
    pub(crate) fn ring_bytes() -> usize {
        area_bytes(uapi::MASTER_ENTRIES, 4)
    }

    /// Creates an empty master ring, charged to the caller.
    pub(crate) fn new() -> Result<Arc<Self>> {
        let ring = Arc::new(
            SharedPages::new(Self::ring_bytes() / PAGE_SIZE)?,
            GFP_KERNEL_ACCOUNT,
        )?;
        let user = Arc::new(SharedPages::new(1)?, GFP_KERNEL_ACCOUNT)?;
        Arc::pin_init(
            try_pin_init!(Self {
                ring,
                user,
                tail: Atomic::new(0),
                overflows: Atomic::new(0),
                lock <- new_spinlock!((), "memreg::Master::lock"),
            }? Error),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Whether entries wait for the reader.
    pub(crate) fn pending(&self) -> bool {
        self.user.load_u32(MASTER_HEAD).unwrap_or(0) != self.tail.load(Relaxed)
    }

    /// Names queue `index` as having new completions, or counts an
    /// overflow when the ring is full; wakes `waiters` if armed. Returns
    /// whether it overflowed. Worker only.
    pub(crate) fn push(&self, index: u32, waiters: &Waiters) -> bool {
        let _lock = self.lock.lock();
        let head = self.user.load_u32(MASTER_HEAD).unwrap_or(0);
        let tail = self.tail.load(Relaxed);
        let overflowed = tail.wrapping_sub(head) >= uapi::MASTER_ENTRIES;
        if overflowed {
            let n = self.overflows.load(Relaxed).saturating_add(1);
            self.overflows.store(n, Relaxed);
            self.ring.store_u64(MASTER_OVERFLOWS, n);
            self.ring.store_u32(MASTER_FLAGS, uapi::EVENTS_OVERFLOW);
        } else {
            let at = (tail & (uapi::MASTER_ENTRIES - 1)) as usize;
            self.ring
                .store_u32(uapi::MASTER_ENTRIES_OFFSET / 4 + at, index);
            let tail = tail.wrapping_add(1);
            self.tail.store(tail, Relaxed);
            // Release: the entry before the tail that covers it.
            self.ring.store_u32(MASTER_TAIL, tail);
        }
        // As in `Queue::complete`.
        smp_mb(Full);
        if disarm(&self.user, MASTER_ARM) {
            waiters.cv.notify_all();
        }
        overflowed
    }
}

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_queue)]
mod tests {
    use super::*;

    fn post(q: &Queue, pos: u64, words: [u64; 7]) {
        let slot = (pos & u64::from(q.sq_entries - 1)) as usize;
        for (i, w) in words.iter().enumerate() {
            q.user.store_u64(Queue::seq_word(slot) + 1 + i, *w);
        }
        q.user.store_u64(Queue::seq_word(slot), pos + 1);
        q.user.store_u64(SQ_INSERT, pos + 1);
    }

    #[test]
    fn a_published_slot_is_taken_once_and_freed_for_the_next_lap() -> Result {
        let q = Queue::new(0, 2, 2, None)?;
        let waiters = Waiters::new()?;
        assert!(matches!(q.take(), Next::Empty));
        // opcode 1 (COPY) in the first byte, user_data 42.
        post(&q, 0, [1, 42, 0, 0, 0, 0, 0]);
        assert_eq!(q.backlog(), 1);
        let Next::Taken(sqe) = q.take() else {
            return Err(EINVAL);
        };
        assert_eq!(sqe.opcode, 1);
        assert_eq!(sqe.user_data, 42);
        // Freed for lap 1 (2 entries): its sequence is 0 + 2.
        assert_eq!(q.user.load_u64(Queue::seq_word(0)), Some(2));
        assert_eq!(q.kernel.load_u64(CQ_SQ_HEAD), Some(1));
        assert!(matches!(q.take(), Next::Empty));
        let mut cqe: uapi::Cqe = uapi::zeroed();
        cqe.user_data = 42;
        q.complete(&cqe);
        assert_eq!(q.kernel.load_u32(CQ_TAIL), Some(0));
        q.publish(&waiters);
        assert_eq!(q.kernel.load_u32(CQ_TAIL), Some(1));
        assert_eq!(q.kernel.load_u64(uapi::CQ_ENTRIES_OFFSET / 8), Some(42));
        Ok(())
    }

    #[test]
    fn a_full_completion_ring_stops_taking() -> Result {
        let q = Queue::new(0, 2, 2, None)?;
        let waiters = Waiters::new()?;
        let cqe: uapi::Cqe = uapi::zeroed();
        for pos in 0..2 {
            post(&q, pos, [0; 7]);
            assert!(matches!(q.take(), Next::Taken(_)));
            q.complete(&cqe);
            q.publish(&waiters);
        }
        post(&q, 2, [0; 7]);
        // Two completions unread in a ring of two: nothing is taken.
        assert!(matches!(q.take(), Next::CqFull));
        assert!(q.cq_full());
        assert_ne!(
            q.kernel.load_u32(CQ_FLAGS).unwrap_or(0) & uapi::QUEUE_CQ_FULL,
            0
        );
        // The reader consumes one: the request is taken.
        q.user.store_u32(SQ_CQ_HEAD, 1);
        assert!(matches!(q.take(), Next::Taken(_)));
        assert!(!q.cq_full());
        q.complete(&cqe);
        q.publish(&waiters);
        // Heads that make no sense read as full: past the tail, or behind one seen before.
        q.user.store_u32(SQ_CQ_HEAD, 100);
        assert!(!q.cq_room());
        q.user.store_u32(SQ_CQ_HEAD, 0);
        assert!(!q.cq_room());
        q.user.store_u32(SQ_CQ_HEAD, 3);
        assert!(q.cq_room());
        Ok(())
    }

    #[test]
    fn garbage_in_a_slot_is_not_taken() -> Result {
        let q = Queue::new(0, 4, 4, None)?;
        // A sequence from another lap, or from the future.
        q.user.store_u64(Queue::seq_word(0), 7);
        assert!(matches!(q.take(), Next::Empty));
        q.user.store_u64(SQ_INSERT, u64::MAX);
        assert_eq!(q.backlog(), 4);
        Ok(())
    }

    #[test]
    fn a_fifo_keeps_order_and_its_bound() -> Result {
        let mut f = Fifo::with_capacity(3)?;
        assert_eq!(Fifo::<u32>::empty().capacity(), 0);
        for lap in 0..4u32 {
            for i in 0..3 {
                assert!(f.push(lap * 10 + i).is_ok());
            }
            assert_eq!(f.push(99), Err(99));
            assert_eq!(f.len(), 3);
            for i in 0..3 {
                assert_eq!(f.pop(), Some(lap * 10 + i));
            }
            assert_eq!(f.pop(), None);
        }
        Ok(())
    }

    #[test]
    fn posted_recvs_keep_room_in_the_completion_ring() -> Result {
        let q = Queue::new(0, 2, 2, None)?;
        let waiters = Waiters::new()?;
        let cqe: uapi::Cqe = uapi::zeroed();
        post(&q, 0, [0; 7]);
        assert!(matches!(q.take(), Next::Taken(_)));
        // As a RECV does: no completion now, one owed.
        q.owed.add(1, Relaxed);
        post(&q, 1, [0; 7]);
        assert!(matches!(q.take(), Next::Taken(_)));
        q.complete(&cqe);
        q.publish(&waiters);
        // One completion unread and one owed fill a ring of two.
        post(&q, 2, [0; 7]);
        assert!(matches!(q.take(), Next::CqFull));
        q.user.store_u32(SQ_CQ_HEAD, 1);
        assert!(matches!(q.take(), Next::Taken(_)));
        Ok(())
    }

    #[test]
    fn sizes_are_checked() {
        assert!(Queue::new(0, 0, 1, None).is_err());
        assert!(Queue::new(0, 1, 1, None).is_err());
        assert!(Queue::new(0, 3, 4, None).is_err());
        assert!(Queue::new(0, 4, 2, None).is_err());
        assert!(Queue::new(0, uapi::MAX_SQ_ENTRIES * 2, uapi::MAX_CQ_ENTRIES, None).is_err());
        assert_eq!(Queue::sq_bytes(64), 2 * PAGE_SIZE);
        assert_eq!(Queue::cq_bytes(1), PAGE_SIZE);
    }
}
