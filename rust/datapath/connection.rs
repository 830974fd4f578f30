// SPDX-License-Identifier: GPL-2.0

//! Two-sided messages: where a queue's SENDs go ([`Connection`], made by
//! QUEUE_CONNECT through a peer's grant) and the receiving side of a queue
//! (the RECVs posted on it and the queues connected to send to it).
//!
//! A posted RECV reserves room for its completion in the completion ring
//! (`Queue::owed`), so the sender's worker can write and publish it at any
//! time, without waking the owner's worker; writers of completions take
//! `Queue::cq`. `Queue::send` and `Queue::recv` are spinlocks, never held
//! together; `Queue::cq` nests inside `recv`. A wake-up of another file's
//! worker happens under `recv`, which the other file's release takes before
//! it cancels its worker.

use super::{queue::Queue, DataPath};
use crate::{cache::target::Target, uapi};
use kernel::error::compat::ECONNRESET;
use kernel::{
    prelude::*,
    sync::{atomic::Relaxed, Arc},
};

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
    data: Arc<DataPath>,
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
    /// Nothing posted, nobody connected.
    pub(super) const fn new() -> Self {
        Self {
            posted: Fifo::empty(),
            senders: KVec::new(),
            closed: false,
        }
    }

    /// Wakes the workers of the senders whose SEND waits here, to look
    /// again. Under the lock: a sender's release unlinks it under this lock
    /// before it cancels its worker.
    fn wake_waiting(&mut self) {
        for s in self.senders.iter_mut().filter(|s| s.waiting) {
            s.waiting = false;
            DataPath::kick(&s.data);
        }
    }
}

/// Where a queue's SENDs go (`MEMREG_IOC_QUEUE_CONNECT`).
#[derive(Clone)]
pub(crate) struct Connection {
    /// The peer handle it was made through.
    pub(crate) handle: u32,
    /// The receiving queue's data path.
    pub(crate) data: Arc<DataPath>,
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

impl Queue {
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

    /// Takes the oldest posted RECV for the SEND of `data`'s queue `queue`,
    /// or, when none is posted, has that data path woken once one is.
    pub(crate) fn take_recv(&self, data: &DataPath, queue: u32) -> Receiver {
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
            .find(|s| s.queue == queue && core::ptr::eq(&*s.data, data))
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
    pub(crate) fn finish_recv(&self, owner: &DataPath, cqe: uapi::Cqe) -> Option<bool> {
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
                .master
                .as_ref()
                .is_some_and(|master| master.push(self.index, &owner.waiters)),
        )
    }

    /// Connects `data`'s queue `queue` to send here. `ECONNRESET` when this
    /// queue's file was released, `ENOSPC` when `MEMREG_MAX_SENDERS` are
    /// connected, or [`MAX_SENDERS_PER_FILE`] of `data`'s (so that one peer
    /// cannot take every slot). Process context: allocates the first time.
    pub(crate) fn add_sender(&self, data: Arc<DataPath>, queue: u32) -> Result {
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
            .filter(|s| Arc::ptr_eq(&s.data, &data))
            .count();
        if mine >= MAX_SENDERS_PER_FILE {
            return Err(ENOSPC);
        }
        st.senders
            .push_within_capacity(Sender {
                data,
                queue,
                waiting: false,
            })
            .map_err(|_| ENOSPC)?;
        drop(st);
        drop(room);
        Ok(())
    }

    /// Disconnects `data`'s queue `queue` from this one, if it is connected.
    pub(crate) fn remove_sender(&self, data: &DataPath, queue: u32) {
        let removed = {
            let mut st = self.recv.lock();
            st.senders
                .iter()
                .position(|s| s.queue == queue && core::ptr::eq(&*s.data, data))
                .and_then(|i| st.senders.remove(i).ok())
        };
        // The data path reference goes outside the lock.
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
    /// no other worker wakes this file's afterwards.
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
}

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_connection)]
mod tests {
    use super::*;

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
}
