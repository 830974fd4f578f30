// SPDX-License-Identifier: GPL-2.0

//! The event ring: what happened to a context's registrations, for caches in
//! user space.
//!
//! The ring is kernel pages mapped read-only into the process (a header and
//! the entries) plus one page mapped read-write that holds the reader's head.
//! Events are written under the cache's lock, by the notifier
//! callback among others, so writing neither allocates nor sleeps; the head
//! user space writes is read as untrusted input (a head that makes no sense
//! reads as a full ring). A full ring drops the event, sets the overflow flag
//! and counts it: an event is never overwritten or lost silently. See
//! `include/uapi/linux/memreg.h` for the layout and memory ordering.

use crate::uapi;
#[cfg(not(CONFIG_MEMREG_COMPAT_7_2))]
use kernel::sync::poll::PollCondVarBox;
#[cfg(CONFIG_MEMREG_COMPAT_7_2)]
use kernel::sync::poll_box::PollCondVarBox;
use kernel::{
    eventfd::EventFd, mm::shared_pages::SharedPages, page::PAGE_SIZE, prelude::*,
    static_lock_class, sync::Arc, transmute::AsBytes,
};

use crate::uapi::layout::{
    EVENTS_ENTRIES as ENTRIES, EVENTS_FLAGS as FLAGS, EVENTS_OVERFLOWS as OVERFLOWS,
    EVENTS_TAIL as TAIL, EVENTS_USER_DATA_OFFSET as USER_DATA_OFFSET,
};

/// What an event is about: a registration's local key and registered range.
#[derive(Clone, Copy)]
pub(crate) struct Subject {
    /// The local key.
    pub(crate) key: u64,
    /// The registered address.
    pub(crate) addr: u64,
    /// The registered length.
    pub(crate) length: u64,
    /// The caller's value given when it was registered.
    pub(crate) user_data: u64,
}

/// The eventfd an argument names: none for -1.
pub(crate) fn eventfd_arg(fd: i32) -> Result<Option<EventFd>> {
    match fd {
        -1 => Ok(None),
        fd => EventFd::from_fd(fd).map(Some),
    }
}

/// Those waiting in `poll` for events. Boxed so that freeing it waits for
/// no RCU grace period (the box is freed after one instead).
pub(crate) struct Waiters {
    pub(crate) cv: PollCondVarBox,
}

impl Waiters {
    /// Creates an empty set of waiters.
    pub(crate) fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(
            Waiters {
                cv: PollCondVarBox::new(c"memreg::Waiters::cv", static_lock_class!())?,
            },
            GFP_KERNEL_ACCOUNT,
        )?)
    }
}

/// A context's event ring.
pub(crate) struct EventRing {
    /// The header and the entries, read-only to user space.
    pub(crate) ring: Arc<SharedPages>,
    /// The reader's head, written by user space.
    pub(crate) head: Arc<SharedPages>,
    /// Those waiting in `poll` (the context's).
    waiters: Arc<Waiters>,
    eventfd: Option<EventFd>,
    /// A power of two.
    entries: u32,
    /// The kernel's own copy of what it published.
    tail: u32,
    flags: u32,
    overflows: u64,
}

impl EventRing {
    /// Where the user data array of a ring of `entries` entries starts:
    /// right after the entries.
    fn user_data_offset(entries: u32) -> usize {
        uapi::EVENTS_OFFSET + entries as usize * core::mem::size_of::<uapi::Event>()
    }

    /// The length of the ring's mapping for `entries` entries: the header,
    /// the entries and their user data.
    pub(crate) fn ring_bytes(entries: u32) -> usize {
        let bytes = Self::user_data_offset(entries) + entries as usize * 8;
        bytes.next_multiple_of(PAGE_SIZE)
    }

    /// Creates a ring of `entries` entries (a power of two up to
    /// `MEMREG_MAX_EVENTS`, else `EINVAL`) that wakes `waiters` and signals
    /// `eventfd`.
    pub(crate) fn new(
        entries: u32,
        eventfd: Option<EventFd>,
        waiters: Arc<Waiters>,
    ) -> Result<Self> {
        if !entries.is_power_of_two() || entries > uapi::MAX_EVENTS {
            return Err(EINVAL);
        }
        let ring = Arc::new(
            SharedPages::new(Self::ring_bytes(entries) / PAGE_SIZE)?,
            GFP_KERNEL_ACCOUNT,
        )?;
        let head = Arc::new(SharedPages::new(1)?, GFP_KERNEL_ACCOUNT)?;
        ring.store_u32(ENTRIES, entries);
        ring.store_u64(USER_DATA_OFFSET, Self::user_data_offset(entries) as u64);
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
        head != self.tail || self.flags & uapi::EVENTS_OVERFLOW != 0
    }

    /// Writes an event about the registration `info`, whose local key is
    /// `lkey` now, or counts an overflow
    /// when the ring is full, then wakes the reader. Never sleeps.
    pub(crate) fn push(&mut self, what: Subject, kind: u32, cause: u32) {
        let head = self.head.load_u32(0).unwrap_or(0);
        if self.tail.wrapping_sub(head) >= self.entries {
            self.flags |= uapi::EVENTS_OVERFLOW;
            self.overflows = self.overflows.saturating_add(1);
            self.ring.store_u64(OVERFLOWS, self.overflows);
            self.ring.store_u32(FLAGS, self.flags);
        } else {
            let mut event: uapi::Event = uapi::zeroed();
            event.key = what.key;
            event.addr = what.addr;
            event.length = what.length;
            event.kind = kind;
            event.cause = cause;
            let index = (self.tail & (self.entries - 1)) as usize;
            let offset = uapi::EVENTS_OFFSET + index * core::mem::size_of::<uapi::Event>();
            self.ring.write_words(offset, event.as_bytes());
            let user_data = Self::user_data_offset(self.entries) + index * 8;
            self.ring.store_u64(user_data / 8, what.user_data);
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

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_events)]
mod tests {
    use super::*;

    fn subject(n: u64) -> Subject {
        Subject {
            key: n << 24,
            addr: 0x1000 * n,
            length: 0x1000,
            user_data: n + 100,
        }
    }

    /// The `i`-th entry's key, as user space reads it.
    fn key_at(ring: &EventRing, i: usize) -> Option<u64> {
        ring.ring
            .load_u64((uapi::EVENTS_OFFSET + i * core::mem::size_of::<uapi::Event>()) / 8)
    }

    #[test]
    fn a_full_ring_counts_overflows_and_keeps_its_entries() -> Result {
        let ring = EventRing::new(2, None, Waiters::new()?);
        assert!(ring.is_ok());
        let Ok(mut ring) = ring else {
            return Ok(());
        };
        assert_eq!(ring.ring.load_u32(ENTRIES), Some(2));
        assert!(!ring.readable());
        for n in 1..=3 {
            ring.push(subject(n), uapi::EVENT_ENDED, 0);
        }
        // Two written, the third dropped and counted; nothing overwritten.
        assert_eq!(ring.ring.load_u32(TAIL), Some(2));
        assert_eq!(ring.ring.load_u32(FLAGS), Some(uapi::EVENTS_OVERFLOW));
        assert_eq!(ring.ring.load_u64(OVERFLOWS), Some(1));
        assert_eq!(key_at(&ring, 0), Some(1 << 24));
        assert_eq!(key_at(&ring, 1), Some(2 << 24));
        // Each entry's user data is at the same index of the array after them.
        let at = ring.ring.load_u64(USER_DATA_OFFSET).unwrap_or(0) as usize;
        assert_eq!(
            at,
            uapi::EVENTS_OFFSET + 2 * core::mem::size_of::<uapi::Event>()
        );
        assert_eq!(ring.ring.load_u64(at / 8), Some(101));
        assert_eq!(ring.ring.load_u64(at / 8 + 1), Some(102));
        assert!(ring.readable());
        // The reader consumes one: there is room for one more.
        ring.head.store_u32(0, 1);
        ring.push(subject(4), uapi::EVENT_EVICTED, 4);
        assert_eq!(ring.ring.load_u32(TAIL), Some(3));
        assert_eq!(key_at(&ring, 0), Some(4 << 24));
        // Resync discards the rest and clears the flag, not the count.
        ring.resync();
        assert_eq!(ring.head.load_u32(0), Some(3));
        assert_eq!(ring.ring.load_u32(FLAGS), Some(0));
        assert_eq!(ring.ring.load_u64(OVERFLOWS), Some(1));
        assert!(!ring.readable());
        Ok(())
    }

    #[test]
    fn a_head_that_makes_no_sense_reads_as_full() -> Result {
        let Ok(mut ring) = EventRing::new(4, None, Waiters::new()?) else {
            return Ok(());
        };
        // A head ahead of the tail: the ring looks fuller than it can be.
        ring.head.store_u32(0, 100);
        ring.push(subject(1), uapi::EVENT_ENDED, 0);
        assert_eq!(ring.ring.load_u32(TAIL), Some(0));
        assert_eq!(ring.ring.load_u64(OVERFLOWS), Some(1));
        Ok(())
    }

    #[test]
    fn sizes_must_be_powers_of_two() -> Result {
        let w = Waiters::new()?;
        assert!(EventRing::new(0, None, w.clone()).is_err());
        assert!(EventRing::new(3, None, w.clone()).is_err());
        assert!(EventRing::new(uapi::MAX_EVENTS * 2, None, w).is_err());
        assert_eq!(EventRing::ring_bytes(1), PAGE_SIZE);
        // 128 entries of 32 bytes and their user data past the header: two pages.
        assert_eq!(EventRing::ring_bytes(64), PAGE_SIZE);
        assert_eq!(EventRing::ring_bytes(128), 2 * PAGE_SIZE);
        Ok(())
    }
}
