// SPDX-License-Identifier: GPL-2.0

//! The master ring of a data path: which queues have new completions, in
//! order, so a program with many queues waits on one ring. Its lock
//! (`Master::lock`) is a leaf: the owner's worker and the senders' workers
//! finishing RECVs write entries under it.

use super::queue::{area_bytes, disarm};
use crate::uapi::layout::{MASTER_ARM, MASTER_FLAGS, MASTER_HEAD, MASTER_OVERFLOWS, MASTER_TAIL};
use crate::{events::Waiters, uapi};
use kernel::{
    mm::shared_pages::SharedPages,
    new_spinlock,
    page::PAGE_SIZE,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        full_barrier::smp_mb_full,
        Arc, SpinLock,
    },
};

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
    /// Serializes the writers of entries. Level 6 (a leaf).
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
        smp_mb_full();
        if disarm(&self.user, MASTER_ARM) {
            waiters.cv.notify_all();
        }
        overflowed
    }
}
