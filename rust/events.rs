// SPDX-License-Identifier: GPL-2.0

//! The event ring: what happened to a context's registrations, for caches in
//! user space.
//!
//! The ring is kernel pages mapped read-only into the process (a header and
//! the entries) plus one page mapped read-write that holds the reader's head.
//! Events are written under the context's table lock, by the notifier
//! callback among others, so writing neither allocates nor sleeps; the head
//! user space writes is read as untrusted input (a head that makes no sense
//! reads as a full ring). A full ring drops the event, sets the overflow flag
//! and counts it: an event is never overwritten or lost silently. See
//! `include/uapi/linux/memreg.h` for the layout and memory ordering.

use crate::{defs, registration::RegistrationInfo};
use kernel::{
    eventfd::EventFd,
    mm::shared_pages::SharedPages,
    page::PAGE_SIZE,
    prelude::*,
    static_lock_class,
    sync::{poll::PollCondVarBox, Arc},
    transmute::AsBytes,
};

/// Index of the `tail` `u32` in the header.
const TAIL: usize = 0;
/// Index of the `entries` `u32` in the header.
const ENTRIES: usize = 1;
/// Index of the `flags` `u32` in the header.
const FLAGS: usize = 2;
/// Index of the `overflows` `u64` in the header (byte 16).
const OVERFLOWS: usize = 2;

/// Those waiting in `poll` for events. Boxed so that freeing it waits for
/// no RCU grace period (the box is freed after one instead).
pub(crate) struct Waiters {
    pub(crate) cv: PollCondVarBox,
}

/// A context's event ring.
pub(crate) struct EventRing {
    /// The header and the entries, read-only to user space.
    pub(crate) ring: Arc<SharedPages>,
    /// The reader's head, written by user space.
    pub(crate) head: Arc<SharedPages>,
    /// Those waiting in `poll`.
    pub(crate) waiters: Arc<Waiters>,
    eventfd: Option<EventFd>,
    /// A power of two.
    entries: u32,
    /// The kernel's own copy of what it published.
    tail: u32,
    flags: u32,
    overflows: u64,
}

impl EventRing {
    /// The length of the ring's mapping for `entries` entries.
    pub(crate) fn ring_bytes(entries: u32) -> usize {
        let bytes = defs::EVENTS_OFFSET + entries as usize * core::mem::size_of::<defs::Event>();
        bytes.next_multiple_of(PAGE_SIZE)
    }

    /// Creates a ring of `entries` entries (a power of two up to
    /// `MEMREG_MAX_EVENTS`, else `EINVAL`) that signals `eventfd`.
    pub(crate) fn new(entries: u32, eventfd: Option<EventFd>) -> Result<Self> {
        if !entries.is_power_of_two() || entries > defs::MAX_EVENTS {
            return Err(EINVAL);
        }
        let ring = Arc::new(
            SharedPages::new(Self::ring_bytes(entries) / PAGE_SIZE)?,
            GFP_KERNEL_ACCOUNT,
        )?;
        let head = Arc::new(SharedPages::new(1)?, GFP_KERNEL_ACCOUNT)?;
        let waiters = Arc::new(
            Waiters {
                cv: PollCondVarBox::new(c"memreg::Waiters::cv", static_lock_class!())?,
            },
            GFP_KERNEL_ACCOUNT,
        )?;
        ring.store_u32(ENTRIES, entries);
        Ok(Self {
            ring,
            head,
            waiters,
            eventfd,
            entries,
            tail: 0,
            flags: 0,
            overflows: 0,
        })
    }

    /// Whether the reader has something to look at: unread events or an
    /// overflow.
    pub(crate) fn readable(&self) -> bool {
        let head = self.head.load_u32(0).unwrap_or(self.tail);
        head != self.tail || self.flags & defs::EVENTS_OVERFLOW != 0
    }

    /// Writes an event about the registration `info`, or counts an overflow
    /// when the ring is full, then wakes the reader. Never sleeps.
    pub(crate) fn push(&mut self, info: &RegistrationInfo, kind: u32, cause: u32) {
        let head = self.head.load_u32(0).unwrap_or(0);
        if self.tail.wrapping_sub(head) >= self.entries {
            self.flags |= defs::EVENTS_OVERFLOW;
            self.overflows = self.overflows.saturating_add(1);
            self.ring.store_u64(OVERFLOWS, self.overflows);
            self.ring.store_u32(FLAGS, self.flags);
        } else {
            let mut event: defs::Event = defs::zeroed();
            event.key = info.keys.lkey;
            event.addr = info.addr;
            event.length = info.length;
            event.kind = kind;
            event.cause = cause;
            let index = (self.tail & (self.entries - 1)) as usize;
            let offset = defs::EVENTS_OFFSET + index * core::mem::size_of::<defs::Event>();
            self.ring.write_bytes(offset, event.as_bytes());
            self.tail = self.tail.wrapping_add(1);
            // Release: the entry is visible before the tail that covers it.
            self.ring.store_u32(TAIL, self.tail);
        }
        self.waiters.cv.notify_all();
        if let Some(eventfd) = &self.eventfd {
            eventfd.signal();
        }
    }

    /// Discards the unread events and clears the overflow flag.
    pub(crate) fn resync(&mut self) {
        self.head.store_u32(0, self.tail);
        self.flags = 0;
        self.ring.store_u32(FLAGS, 0);
    }
}
