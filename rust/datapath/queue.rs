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
//! For two-sided messages a queue also has a receiving side and a sending
//! side ([`super::connection`]). Locks: see the crate's documentation.

use super::connection::{Connection, RecvState};
use crate::{events::Waiters, uapi};
use kernel::{
    eventfd::EventFd,
    mm::shared_pages::SharedPages,
    new_spinlock,
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        full_barrier::smp_mb_full,
        Arc, SpinLock,
    },
    transmute::AsBytes,
};

/// Bytes of a submission slot.
const SLOT_BYTES: usize = core::mem::size_of::<uapi::SqSlot>();
/// Bytes of a completion.
const CQE_BYTES: usize = core::mem::size_of::<uapi::Cqe>();

use crate::uapi::layout::{
    CQ_CQ_ENTRIES, CQ_FLAGS, CQ_SQ_ENTRIES, CQ_SQ_HEAD, CQ_TAIL, SLOT_SEQ, SQ_CQ_ARM, SQ_CQ_HEAD,
    SQ_INSERT,
};

/// The bytes of a mapping holding a 64-byte header and `entries` entries of
/// `size` bytes, in whole pages.
pub(super) fn area_bytes(entries: u32, size: usize) -> usize {
    (64 + entries as usize * size).next_multiple_of(PAGE_SIZE)
}

/// Clears the arm word at `index` of `user`; returns whether it was armed.
/// A load first, so an unarmed ring costs no atomic exchange.
pub(super) fn disarm(user: &SharedPages, index: usize) -> bool {
    user.load_u32(index).unwrap_or(0) != 0 && user.xchg_u32(index, 0).unwrap_or(0) != 0
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
    pub(super) sq_entries: u32,
    /// Entries of the completion ring, a power of two.
    pub(super) cq_entries: u32,
    /// Signalled by armed completions.
    pub(super) eventfd: Option<EventFd>,
    /// Submissions taken (the published `sq_head`).
    pub(super) sq_head: Atomic<u64>,
    /// Completions written (the published `cq_tail`).
    pub(super) cq_tail: Atomic<u32>,
    /// The last completion head read that made sense.
    pub(super) cq_head_seen: Atomic<u32>,
    /// The published flags (`MEMREG_QUEUE_*`).
    pub(super) flags: Atomic<u32>,
    /// Times the queue stopped for a full completion ring.
    pub(super) stalls: Atomic<u64>,
    /// Completions owed to RECVs posted on this queue: room the completion
    /// ring keeps for them. Changed by the owner's worker only.
    pub(super) owed: Atomic<u32>,
    /// A SEND of this queue waits for a RECV: nothing else is taken.
    pub(crate) stalled: Atomic<bool>,
    /// Serializes the writers of completions: the owner's worker and the
    /// senders' workers finishing RECVs. Level 6, inside `recv`.
    #[pin]
    pub(super) cq: SpinLock<()>,
    /// The receiving side. Level 6, never held with `send`.
    #[pin]
    pub(super) recv: SpinLock<RecvState>,
    /// The sending side. Level 6, never held with `recv`.
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
                    RecvState::new(),
                    "memreg::Queue::recv"
                ),
                send <- new_spinlock!(None, "memreg::Queue::send"),
            }? Error),
            GFP_KERNEL_ACCOUNT,
        )
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
        smp_mb_full();
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
        smp_mb_full();
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
    pub(super) fn write_cqe(&self, cqe: &uapi::Cqe) {
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
    pub(super) fn publish_locked(&self, waiters: &Waiters) {
        let tail = self.cq_tail.load(Relaxed);
        // Release: the entries before the tail that covers them.
        self.kernel.store_u32(CQ_TAIL, tail);
        // Pairs with the reader's barrier between arming and looking at the tail again:
        // either it sees the new tail, or we see its arm word.
        smp_mb_full();
        if disarm(&self.user, SQ_CQ_ARM) {
            waiters.cv.notify_all();
            if let Some(eventfd) = &self.eventfd {
                eventfd.signal();
            }
        }
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
