// SPDX-License-Identifier: GPL-2.0

//! The event ring: what ended, was suspended or was evicted.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::Ordering;

use memreg_sys as raw;

use crate::{einval, sys, Device};

/// Offsets in the ring's header (`struct memreg_event_ring`).
const TAIL: usize = 0;
const FLAGS: usize = 8;
const OVERFLOWS: usize = 16;
/// The reader's head: the first `u32` of the head page.
const HEAD: usize = 0;
/// The size of one `struct memreg_event`.
const EVENT_SIZE: usize = std::mem::size_of::<raw::memreg_event>();

/// What happened to a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Suspended by a clear; revalidated on its next use
    /// (`MEMREG_EVENT_SUSPENDED`).
    Suspended,
    /// Ended by an invalidation or a failed revalidation; the cause is a
    /// `MEMREG_INVAL_*` value (`MEMREG_EVENT_ENDED`).
    Ended,
    /// A parked registration was evicted; the cause is a `MEMREG_EVICT_*`
    /// value (`MEMREG_EVENT_EVICTED`).
    Evicted,
    /// A suspended watch-only registration was revalidated and is usable
    /// again (`MEMREG_EVENT_RESUMED`; a pinned one's resumption writes no
    /// event).
    Resumed,
    /// A kind this crate does not know, as written.
    Unknown(u32),
}

impl EventKind {
    /// The kind of the raw value `kind`.
    pub fn from_raw(kind: u32) -> EventKind {
        match kind {
            raw::MEMREG_EVENT_SUSPENDED => EventKind::Suspended,
            raw::MEMREG_EVENT_ENDED => EventKind::Ended,
            raw::MEMREG_EVENT_EVICTED => EventKind::Evicted,
            raw::MEMREG_EVENT_RESUMED => EventKind::Resumed,
            other => EventKind::Unknown(other),
        }
    }

    /// Whether the registration's keys are dead.
    pub fn ends(self) -> bool {
        matches!(self, EventKind::Ended | EventKind::Evicted)
    }
}

/// One event of the ring (`struct memreg_event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    /// The registration's local key.
    pub key: u64,
    /// Its start address as registered.
    pub addr: u64,
    /// Its length.
    pub length: u64,
    /// What happened.
    pub kind: EventKind,
    /// `MEMREG_INVAL_*` (suspended, ended) or `MEMREG_EVICT_*` (evicted).
    pub cause: u32,
}

impl From<raw::memreg_event> for Event {
    fn from(e: raw::memreg_event) -> Event {
        Event {
            key: e.key,
            addr: e.addr,
            length: e.length,
            kind: EventKind::from_raw(e.kind),
            cause: e.cause,
        }
    }
}

/// A registration valid at the moment of a resynchronisation
/// (`struct memreg_resync_entry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResyncEntry {
    /// Its local key.
    pub key: u64,
    /// Its start address as registered.
    pub addr: u64,
    /// Its length.
    pub length: u64,
    /// `MEMREG_STATE_*` bits.
    pub state: u32,
    /// Its state word's slot, `None` with `MEMREG_NO_SLOT`.
    pub slot: Option<u32>,
}

/// `MEMREG_IOC_EVENTS_RESYNC` into `out`, growing it until every valid
/// registration fits.
pub(crate) fn resync(dev: &Device, out: &mut Vec<ResyncEntry>) -> io::Result<()> {
    let mut buf = vec![raw::memreg_resync_entry::default(); out.capacity().max(64)];
    loop {
        let count = sys::events_resync(dev.fd(), &mut buf)? as usize;
        if count <= buf.len() {
            buf.truncate(count);
            break;
        }
        // More than fit: call again with room for them (the second call's
        // list is as of the second call, and discards the events between).
        buf = vec![raw::memreg_resync_entry::default(); count + count / 4 + 16];
    }
    out.clear();
    out.extend(buf.iter().map(|e| ResyncEntry {
        key: e.key,
        addr: e.addr,
        length: e.length,
        state: e.state,
        slot: (e.slot != raw::MEMREG_NO_SLOT).then_some(e.slot),
    }));
    Ok(())
}

/// The context's event ring, mapped: a header and entries the kernel writes
/// (read-only) and the reader's head (read-write).
///
/// One reader at a time: reading takes `&mut self`.
#[derive(Debug)]
pub struct EventRing<'dev> {
    dev: &'dev Device,
    ring: sys::Mmap,
    head: sys::Mmap,
    entries: u32,
}

impl<'dev> EventRing<'dev> {
    pub(crate) fn setup(
        dev: &'dev Device,
        entries: u32,
        eventfd: Option<BorrowedFd<'_>>,
    ) -> io::Result<EventRing<'dev>> {
        if !entries.is_power_of_two() || entries > raw::MEMREG_MAX_EVENTS {
            return Err(einval());
        }
        let mut s = raw::memreg_events_setup {
            entries,
            eventfd: eventfd.map_or(-1, |fd| fd.as_raw_fd()),
            ..Default::default()
        };
        sys::events_setup(dev.fd(), &mut s)?;
        let need = raw::MEMREG_EVENTS_OFFSET as usize + entries as usize * EVENT_SIZE;
        let ring_bytes = usize::try_from(s.ring_bytes).map_err(|_| crate::eproto())?;
        if ring_bytes < need {
            return Err(crate::eproto());
        }
        let ring =
            sys::Mmap::map_shared(dev.fd(), ring_bytes, false, raw::MEMREG_MMAP_EVENTS.into())?;
        let head = sys::Mmap::map_shared(
            dev.fd(),
            sys::page_size(),
            true,
            raw::MEMREG_MMAP_EVENTS_HEAD.into(),
        )?;
        Ok(EventRing {
            dev,
            ring,
            head,
            entries,
        })
    }

    /// The number of entries.
    pub fn entries(&self) -> u32 {
        self.entries
    }

    fn tail(&self) -> u32 {
        // The offsets are constants within the header: cannot fail.
        self.ring.load_u32(TAIL, Ordering::Acquire).unwrap_or(0)
    }

    fn head(&self) -> u32 {
        self.head.load_u32(HEAD, Ordering::Relaxed).unwrap_or(0)
    }

    /// Whether events wait to be read (the cheap check: one acquire load of
    /// the tail, compared with the head).
    pub fn pending(&self) -> bool {
        self.tail() != self.head() || self.overflowed()
    }

    /// Whether an event could not be written for a full ring
    /// (`MEMREG_EVENTS_OVERFLOW`); call [`EventRing::resync`].
    pub fn overflowed(&self) -> bool {
        self.ring
            .load_u32(FLAGS, Ordering::Acquire)
            .is_ok_and(|f| f & raw::MEMREG_EVENTS_OVERFLOW != 0)
    }

    /// Events not written because the ring was full, in all.
    pub fn overflows(&self) -> u64 {
        self.ring
            .load_u64(OVERFLOWS, Ordering::Acquire)
            .unwrap_or(0)
    }

    /// Reads the events written so far, consuming each one the iterator
    /// yields. A head that makes no sense (more than `entries` behind the
    /// tail, or ahead of it) yields nothing; the kernel then reports every
    /// new event as an overflow, and [`EventRing::resync`] puts it right.
    pub fn events(&mut self) -> EventIter<'_, 'dev> {
        let head = self.head();
        let tail = self.tail();
        let end = if tail.wrapping_sub(head) > self.entries {
            head
        } else {
            tail
        };
        EventIter {
            ring: self,
            head,
            end,
        }
    }

    /// Discards the unread events, clears the overflow flag and lists the
    /// registrations valid now into `out` (`MEMREG_IOC_EVENTS_RESYNC`). A
    /// cache treats every entry not listed as ended.
    pub fn resync(&mut self, out: &mut Vec<ResyncEntry>) -> io::Result<()> {
        resync(self.dev, out)
    }

    /// The device the ring belongs to.
    pub fn device(&self) -> &'dev Device {
        self.dev
    }
}

/// The iterator [`EventRing::events`] returns; each event it yields is
/// consumed (the head moves past it, with a release store).
#[derive(Debug)]
pub struct EventIter<'r, 'dev> {
    ring: &'r mut EventRing<'dev>,
    head: u32,
    end: u32,
}

impl Iterator for EventIter<'_, '_> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.head == self.end {
            return None;
        }
        let index = (self.head & (self.ring.entries - 1)) as usize;
        let offset = raw::MEMREG_EVENTS_OFFSET as usize + index * EVENT_SIZE;
        let e = self.ring.ring.read::<raw::memreg_event>(offset).ok()?;
        self.head = self.head.wrapping_add(1);
        // The kernel may reuse the entry once the head passed it.
        self.ring
            .head
            .store_u32(HEAD, self.head, Ordering::Release)
            .ok()?;
        Some(Event::from(e))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end.wrapping_sub(self.head) as usize;
        (n, Some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(EventKind::from_raw(1), EventKind::Suspended);
        assert_eq!(EventKind::from_raw(2), EventKind::Ended);
        assert_eq!(EventKind::from_raw(3), EventKind::Evicted);
        assert_eq!(EventKind::from_raw(0), EventKind::Unknown(0));
        assert_eq!(EventKind::from_raw(77), EventKind::Unknown(77));
        assert!(EventKind::Ended.ends());
        assert!(!EventKind::Suspended.ends());
    }
}
