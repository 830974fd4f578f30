// SPDX-License-Identifier: GPL-2.0

//! What user space sees of the cache without a system call: the state words
//! and the event ring, their mappings, EVENTS_SETUP and EVENTS_RESYNC.

use super::{slots::Slots, Cache};
use crate::{
    error::OpResult,
    events::{eventfd_arg, EventRing},
    uapi,
};
use kernel::{
    mm::{shared_pages::SharedPages, virt::VmaNew},
    prelude::*,
    uaccess::{UserPtr, UserSlice},
};

/// Most entries EVENTS_RESYNC lists at once.
const MAX_RESYNC: u32 = 1 << 20;

impl Cache {
    /// Maps the state words: the first such mapping creates one word per 8
    /// bytes of its length (up to `MEMREG_MAX_SLOTS`), and registrations made
    /// afterwards get a slot. Later mappings may be no longer. `EINVAL` for a
    /// bad length.
    pub(crate) fn map_state_words(&self, vma: &VmaNew) -> Result {
        let nslots = (vma.end() - vma.start()) / 8;
        if nslots == 0 || nslots > uapi::MAX_SLOTS {
            return Err(EINVAL);
        }
        // A refused mapping creates nothing.
        SharedPages::check_mapping(vma, false)?;
        let existing = self.inner.lock().slots.as_ref().map(|s| s.words.clone());
        let words = match existing {
            Some(words) => words,
            None => {
                let new = Slots::new(nslots)?;
                let mut t = self.inner.lock();
                match &t.slots {
                    // Another mapping won the race: ours is freed outside the lock.
                    Some(s) => {
                        let words = s.words.clone();
                        drop(t);
                        drop(new);
                        words
                    }
                    None => {
                        let words = new.words.clone();
                        t.slots = Some(new);
                        words
                    }
                }
            }
        };
        words.map_into(vma, 0, false)
    }

    /// EVENTS_SETUP: creates the event ring. `EBUSY` when there is one.
    /// The result is written back before the ring is installed, so a call
    /// that fails changes nothing.
    pub(crate) fn events_setup(
        &self,
        mut req: uapi::EventsSetup,
        write_back: impl FnOnce(&uapi::EventsSetup) -> Result,
    ) -> OpResult {
        uapi::check_reserved(&req.reserved)?;
        if !req.entries.is_power_of_two() || req.entries > uapi::MAX_EVENTS {
            return Err(EINVAL.into());
        }
        let eventfd = eventfd_arg(req.eventfd)?;
        let ring = EventRing::new(req.entries, eventfd, self.waiters.clone())?;
        if self.inner.lock().events.is_some() {
            return Err(EBUSY.into());
        }
        req.ring_bytes = EventRing::ring_bytes(req.entries) as u64;
        write_back(&req)?;
        let refused = {
            let mut t = self.inner.lock();
            if t.events.is_some() {
                Some(ring)
            } else {
                t.events = Some(ring);
                None
            }
        };
        if refused.is_some() {
            // A concurrent EVENTS_SETUP won. Freed outside the lock.
            drop(refused);
            return Err(EBUSY.into());
        }
        Ok(())
    }

    /// EVENTS_RESYNC: discards unread events, clears the overflow flag and
    /// lists the registrations valid now, in one step.
    pub(crate) fn events_resync(&self, req: &mut uapi::EventsResync) -> OpResult {
        uapi::check_reserved(&[req.reserved])?;
        if req.capacity > MAX_RESYNC {
            return Err(EINVAL.into());
        }
        let most = crate::max_registrations().saturating_add(crate::max_watches());
        let capacity = (req.capacity as usize).min(usize::try_from(most).unwrap_or(usize::MAX));
        let mut list = KVVec::<uapi::ResyncEntry>::with_capacity(capacity, GFP_KERNEL_ACCOUNT)?;
        let count = {
            let mut t = self.inner.lock();
            if let Some(ring) = t.events.as_mut() {
                ring.resync();
            }
            for r in t.iter() {
                let mut e: uapi::ResyncEntry = uapi::zeroed();
                e.key = r.lkey();
                e.addr = r.info.addr;
                e.length = r.info.length;
                e.state = if r.is_suspended() {
                    uapi::STATE_SUSPENDED
                } else {
                    uapi::STATE_VALID
                };
                if r.is_parked(&t) {
                    e.state |= uapi::STATE_PARKED;
                }
                e.slot = r.slot(&t).0;
                if list.push_within_capacity(e).is_err() {
                    break;
                }
            }
            t.len()
        };
        let buf = usize::try_from(req.entries).map_err(|_| EFAULT)?;
        let bytes = list.len() * core::mem::size_of::<uapi::ResyncEntry>();
        let mut writer = UserSlice::new(UserPtr::from_addr(buf), bytes).writer();
        for e in list.iter() {
            writer.write(e)?;
        }
        req.count = u32::try_from(count).unwrap_or(u32::MAX);
        Ok(())
    }

    /// Maps the event ring (`head`: its read-write head page instead).
    /// `EINVAL` before EVENTS_SETUP.
    pub(crate) fn map_events(&self, vma: &VmaNew, head: bool) -> Result {
        let pages = {
            let t = self.inner.lock();
            let ring = t.events.as_ref().ok_or(EINVAL)?;
            if head {
                ring.head.clone()
            } else {
                ring.ring.clone()
            }
        };
        pages.map_into(vma, 0, head)
    }

    /// Whether the event ring has unread events or overflowed, for `poll`.
    pub(crate) fn events_readable(&self) -> bool {
        self.inner
            .lock()
            .events
            .as_ref()
            .is_some_and(|r| r.readable())
    }
}
