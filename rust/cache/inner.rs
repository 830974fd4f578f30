// SPDX-License-Identifier: GPL-2.0

//! The cache's state under its lock ([`CacheInner`], as Binder's
//! `ProcessInner` is the part of a process under its lock).
//!
//! Live registrations are found two ways: by key (a red-black tree on the
//! key's sequence number) and by address (an interval tree, so the cache
//! look-up that a REGISTER does, and that competes with the notifier callback
//! for the table lock, is logarithmic whatever the mix of lengths). Parked
//! registrations (live, pinned, without references) are also on the
//! parked list, ordered by when they were parked, which is the order
//! they are evicted in. The table also holds the registrations that left it
//! and wait for their teardown, those suspended by an invalidation that wait
//! for revalidation, the context's cache configuration and its counters.
//!
//! It lives under [`Cache::inner`](super::Cache), a spinlock the MMU
//! notifier callback takes: nothing here allocates or sleeps. Nodes are
//! reserved beforehand ([`Nodes`]). The state words are in [`super::slots`].

use super::{
    info::RegistrationInfo,
    key,
    registration::{push_teardown, Registration},
    slots::Slots,
    target::Target,
};
use crate::{
    events::{EventRing, Subject},
    stats::Stats,
    uapi,
};
use kernel::{
    interval_tree::{self, IntervalTree},
    list::{List, ListArc},
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
    sync::Arc,
};

/// Live registrations a new one may overlap: a REGISTER miss over more fails
/// with `EDQUOT`.
pub(crate) const MAX_OVERLAP: usize = 64;

/// The memory a registration needs in the table, allocated before the table
/// lock is taken.
pub(crate) struct Nodes {
    by_key: RBTreeNodeReservation<u64, Arc<Registration>>,
    by_range: interval_tree::Reservation<Arc<Registration>>,
    /// None for a registration without a remote key (a watch).
    by_rkey: Option<RBTreeNodeReservation<u64, Arc<Registration>>>,
}

impl Nodes {
    /// Allocates the nodes of a registration that has a remote key (when
    /// `remote_key`) or not, charged to the caller's memory cgroup.
    pub(crate) fn new(remote_key: bool) -> Result<Self> {
        Ok(Self {
            by_key: RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?,
            by_range: interval_tree::Reservation::new(GFP_KERNEL_ACCOUNT)?,
            by_rkey: if remote_key {
                Some(RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?)
            } else {
                None
            },
        })
    }
}

/// How a context keeps registrations nobody references (`struct
/// memreg_cache_config`).
#[derive(Clone, Copy)]
pub(crate) struct CacheConfig {
    /// The last DEREGISTER parks a registration.
    pub(crate) parking: bool,
    /// Parked registrations at most.
    pub(crate) max_parked: u64,
    /// Their pages at most.
    pub(crate) max_parked_pages: u64,
    /// Parked registrations end after the context was idle this long; 0:
    /// never.
    pub(crate) idle_ms: u64,
}

impl CacheConfig {
    /// The configuration given by user space, validated: `EINVAL` for a
    /// nonzero reserved field or a value out of range.
    pub(crate) fn from_abi(c: &uapi::CacheConfig) -> Result<Self> {
        uapi::check_reserved(&c.reserved)?;
        if c.reserved0 != 0 || c.parking > 1 || c.idle_ms > uapi::MAX_IDLE_MS {
            return Err(EINVAL);
        }
        Ok(Self {
            parking: c.parking == 1,
            max_parked: c.max_parked,
            max_parked_pages: c.max_parked_pages,
            idle_ms: c.idle_ms,
        })
    }

    /// The configuration in the ABI's layout.
    pub(crate) fn to_abi(self) -> uapi::CacheConfig {
        let mut out: uapi::CacheConfig = uapi::zeroed();
        out.parking = u32::from(self.parking);
        out.max_parked = self.max_parked;
        out.max_parked_pages = self.max_parked_pages;
        out.idle_ms = self.idle_ms;
        out
    }

    /// Whether a registration of `npages` pages may be parked at all.
    pub(crate) fn may_park(&self, npages: u64) -> bool {
        self.parking && self.max_parked > 0 && npages <= self.max_parked_pages
    }
}

/// The cache's fields under its lock: the registrations by key, range and
/// remote key, the parked list, the lists of deferred work, the
/// configuration, the state words, the event ring and the counters.
pub(crate) struct CacheInner {
    /// Live registrations by key sequence number.
    by_key: RBTree<u64, Arc<Registration>>,
    /// Live registrations by registered range.
    by_range: IntervalTree<Arc<Registration>>,
    /// Live registrations by remote key (one without a remote right is
    /// found, and refused with `EACCES`); a parked registration is not here,
    /// nor one revived without remote rights (its remote key is 0).
    by_rkey: RBTree<u64, Arc<Registration>>,
    /// Registrations that left the table, awaiting teardown by the context's
    /// deferred work or by the caller that evicted them.
    pending: List<Registration>,
    /// Registrations suspended by an invalidation, awaiting revalidation by
    /// the context's deferred work. An entry may have ended or resumed since
    /// it was queued.
    suspended: List<Registration, 1>,
    /// The parked list: parked registrations by the stamp of their
    /// parking, oldest first.
    pub(super) parked: RBTree<u64, Arc<Registration>>,
    /// The stamp of the next parking.
    pub(super) next_stamp: u64,
    /// How registrations nobody references are kept.
    pub(super) config: CacheConfig,
    /// The state words, once mapped.
    pub(super) slots: Option<Slots>,
    /// The event ring, once set up.
    pub(super) events: Option<EventRing>,
    /// The context's counters.
    pub(super) stats: Stats,
}

impl CacheInner {
    /// Creates an empty table.
    pub(crate) fn new(config: CacheConfig) -> Self {
        Self {
            by_key: RBTree::new(),
            by_range: IntervalTree::new(),
            by_rkey: RBTree::new(),
            pending: List::new(),
            suspended: List::new(),
            parked: RBTree::new(),
            next_stamp: 0,
            config,
            slots: None,
            events: None,
            stats: Stats::default(),
        }
    }

    /// The number of live registrations.
    pub(crate) fn len(&self) -> u64 {
        self.stats.registrations
    }

    /// The number of live registrations that are not watch-only, against
    /// `max_registrations` (watches have their own cap).
    pub(crate) fn pinned_len(&self) -> u64 {
        self.stats.registrations.saturating_sub(self.stats.watches)
    }

    /// The live registration that serves `length` bytes at `addr` with
    /// `access`, if any: one of the same kind (watch-only or pinned, as
    /// `watch` says) that covers the whole range and grants at least that
    /// access. `O(log n + k)` for `k` registrations overlapping the range.
    pub(crate) fn find_cover(
        &self,
        addr: u64,
        length: u64,
        access: u32,
        watch: bool,
    ) -> Option<&Arc<Registration>> {
        let first = usize::try_from(addr).ok()?;
        // Only registrations containing the first byte can cover the range.
        self.by_range
            .iter(first, first)
            .map(|(_, _, r)| r)
            .find(|r| {
                r.info.watch == watch
                    && r.info.covers(addr, length, access)
                    && r.is_live()
                    && !r.info.pool
            })
    }

    // TODO(partial-overlap): a range only partly covered by live registrations becomes a
    // registration of its own, and the pages both cover are pinned and charged twice. Until
    // registrations are extended or split instead, [`MAX_OVERLAP`] bounds how many of them pin
    // one page.

    /// Whether a new registration `info` overlaps at most [`MAX_OVERLAP`] live
    /// registrations. Bounds how often the context pins any one page (each pin
    /// adds to the page's reference count, which must not overflow) and the
    /// registrations [`CacheInner::find_cover`] walks. `O(log n +
    /// MAX_OVERLAP)`.
    pub(crate) fn may_overlap(&self, info: &RegistrationInfo) -> bool {
        let (first, last) = info.interval();
        self.may_overlap_span(first, last)
    }

    /// Whether the bytes `first..=last` overlap at most [`MAX_OVERLAP`] live
    /// registrations; see [`CacheInner::may_overlap`].
    pub(crate) fn may_overlap_span(&self, first: usize, last: usize) -> bool {
        self.by_range.iter(first, last).nth(MAX_OVERLAP).is_none()
    }

    /// Adds a live registration, in the memory of `nodes`.
    pub(crate) fn insert(&mut self, nodes: Nodes, registration: Arc<Registration>) {
        let (first, last) = registration.info.interval();
        self.by_key.insert(
            nodes
                .by_key
                .into_node(registration.info.keys.seq, registration.clone()),
        );
        // Another registration with the same 64 random bits (odds 2^-64) loses its remote key:
        // it is not freed here, the other trees still hold it. A watch has no remote key (0)
        // and no node for one.
        let rkey = registration.rkey();
        if let Some(node) = nodes.by_rkey.filter(|_| rkey != 0) {
            let _ = self
                .by_rkey
                .insert(node.into_node(rkey, registration.clone()));
        }
        self.by_range
            .insert(nodes.by_range, first, last, registration);
        self.stats.registrations += 1;
    }

    /// Removes the live registration with sequence number `seq`.
    pub(crate) fn remove(&mut self, seq: u64) -> Option<Arc<Registration>> {
        let registration = self.by_key.remove(&seq)?;
        let (first, last) = registration.info.interval();
        // The same registration was inserted in both trees.
        let _ = self
            .by_range
            .remove(first, last, |r| r.info.keys.seq == seq);
        // A parked one has no remote key: it left this tree when it was parked.
        let _ = self.remove_rkey(seq, registration.rkey());
        self.stats.registrations = self.stats.registrations.saturating_sub(1);
        Some(registration)
    }

    /// Takes registration `seq`'s entry by remote key `rkey` out, if it is
    /// there, and returns its memory.
    pub(crate) fn remove_rkey(
        &mut self,
        seq: u64,
        rkey: u64,
    ) -> Option<RBTreeNodeReservation<u64, Arc<Registration>>> {
        // A registration without a remote key (0) has no entry: no look-up.
        if rkey == 0
            || self
                .by_rkey
                .get(&rkey)
                .is_none_or(|r| r.info.keys.seq != seq)
        {
            return None;
        }
        self.by_rkey
            .remove_node(&rkey)
            .map(|n| n.into_reservation())
    }

    /// Adds a revived registration's entry by its new remote key, in the
    /// memory `node` its old one left.
    pub(crate) fn insert_rkey(
        &mut self,
        node: RBTreeNodeReservation<u64, Arc<Registration>>,
        registration: Arc<Registration>,
    ) {
        // As in `insert`: a collision of 64 random bits leaves the other without a remote key.
        let _ = self
            .by_rkey
            .insert(node.into_node(registration.rkey(), registration));
    }

    /// The sequence number of a parked registration overlapping the bytes
    /// `first..=last`, if any.
    pub(crate) fn parked_overlapping(&self, first: usize, last: usize) -> Option<u64> {
        self.by_range
            .iter(first, last)
            .map(|(_, _, r)| r)
            .find(|r| r.is_parked(self))
            .map(|r| r.info.keys.seq)
    }

    /// The sequence number of the least recently parked registration.
    pub(crate) fn oldest_parked(&self) -> Option<u64> {
        self.parked
            .cursor_front()
            .map(|c| c.current().1.info.keys.seq)
    }

    /// The live registration with sequence number `seq`.
    pub(crate) fn get_seq(&self, seq: u64) -> Option<&Arc<Registration>> {
        self.by_key.get(&seq)
    }

    /// The live registration whose local key is `lkey`.
    pub(crate) fn get(&self, lkey: u64) -> Option<&Arc<Registration>> {
        self.by_key
            .get(&key::seq_of(lkey))
            .filter(|r| r.lkey() == lkey)
    }

    /// The registration data may move through by local key `lkey`: live and
    /// not parked (parking ended its keys for data), at the generation it is
    /// at now. `ENOENT` when there is none, `EOPNOTSUPP` for a watch-only
    /// one, which moves no data.
    pub(crate) fn get_target(&self, lkey: u64) -> Result<Target> {
        let r = self
            .get(lkey)
            .filter(|r| r.is_live() && !r.is_parked(self))
            .ok_or(ENOENT)?;
        if r.info.watch {
            return Err(EOPNOTSUPP);
        }
        Ok(Target::new(r.clone()))
    }

    /// The registration a peer names by remote key `rkey`: live and not
    /// parked (a parked registration's remote key is gone for good; a
    /// revival gives it a new one).
    pub(crate) fn get_remote(&self, rkey: u64) -> Option<Target> {
        self.by_rkey
            .get(&rkey)
            .filter(|r| rkey != 0 && r.rkey() == rkey && r.is_live() && !r.is_parked(self))
            .map(|r| Target::new(r.clone()))
    }

    /// Writes an event about the registration `info` to the event ring, if
    /// there is one. Never sleeps.
    pub(crate) fn emit(&mut self, registration: &Registration, kind: u32, cause: usize) {
        // A fault build (`MEMREG_FAULT=drop-events`, never the default) loses every event, to
        // show that the clients' tests catch it.
        if cfg!(memreg_fault_drop_events) {
            return;
        }
        if let Some(ring) = self.events.as_mut() {
            let what = Subject {
                key: registration.lkey(),
                addr: registration.info.addr,
                length: registration.info.length,
                user_data: registration.info.user_data,
            };
            ring.push(what, kind, cause as u32);
        }
    }

    /// The live registrations, by key.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Registration>> {
        self.by_key.values()
    }

    /// The sequence number of some live registration, if any.
    pub(crate) fn any(&self) -> Option<u64> {
        self.by_key.cursor_front().map(|c| *c.current().0)
    }

    /// Queues a registration that left the table for teardown by the
    /// context's deferred work.
    pub(crate) fn defer_teardown(&mut self, registration: Arc<Registration>) {
        push_teardown(&mut self.pending, registration);
    }

    /// Takes the next registration awaiting teardown.
    pub(crate) fn next_deferred(&mut self) -> Option<Arc<Registration>> {
        self.pending.pop_front().map(ListArc::into_arc)
    }

    /// Queues a suspended registration for revalidation, unless it is
    /// queued already.
    pub(crate) fn queue_revalidation(&mut self, registration: Arc<Registration>) {
        // Already queued: the queued entry is revalidated once, which serves this too.
        if let Ok(item) = ListArc::try_from_arc(registration) {
            self.suspended.push_back(item);
        }
    }

    /// Takes the next registration awaiting revalidation.
    pub(crate) fn next_suspended(&mut self) -> Option<Arc<Registration>> {
        self.suspended.pop_front().map(ListArc::into_arc)
    }
}

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_cache_inner)]
mod tests {
    use super::*;

    fn abi(
        parking: u32,
        max_parked: u64,
        max_parked_pages: u64,
        idle_ms: u64,
    ) -> uapi::CacheConfig {
        let mut c: uapi::CacheConfig = uapi::zeroed();
        c.parking = parking;
        c.max_parked = max_parked;
        c.max_parked_pages = max_parked_pages;
        c.idle_ms = idle_ms;
        c
    }

    #[test]
    fn cache_config_is_validated() {
        let ok = CacheConfig::from_abi(&abi(1, 10, 100, uapi::MAX_IDLE_MS));
        assert!(ok.is_ok());
        assert_eq!(
            CacheConfig::from_abi(&abi(2, 10, 100, 0)).err(),
            Some(EINVAL)
        );
        assert_eq!(
            CacheConfig::from_abi(&abi(1, 10, 100, uapi::MAX_IDLE_MS + 1)).err(),
            Some(EINVAL)
        );
        let mut c = abi(0, 0, 0, 0);
        c.reserved0 = 1;
        assert_eq!(CacheConfig::from_abi(&c).err(), Some(EINVAL));
        let mut c = abi(0, 0, 0, 0);
        c.reserved[3] = 1;
        assert_eq!(CacheConfig::from_abi(&c).err(), Some(EINVAL));
        // What goes in comes out.
        let back = CacheConfig::from_abi(&abi(1, 7, 99, 1234)).map(|c| c.to_abi());
        assert!(back.is_ok_and(|b| b.parking == 1
            && b.max_parked == 7
            && b.max_parked_pages == 99
            && b.idle_ms == 1234));
    }

    #[test]
    fn what_may_park() {
        let on = CacheConfig {
            parking: true,
            max_parked: 4,
            max_parked_pages: 16,
            idle_ms: 0,
        };
        assert!(on.may_park(16));
        assert!(!on.may_park(17));
        assert!(!CacheConfig {
            parking: false,
            ..on
        }
        .may_park(1));
        assert!(!CacheConfig {
            max_parked: 0,
            ..on
        }
        .may_park(1));
    }
}
