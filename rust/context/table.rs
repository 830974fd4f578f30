// SPDX-License-Identifier: GPL-2.0

//! The registration table of a context.
//!
//! Live registrations are found two ways: by key (a red-black tree on the
//! key's sequence number) and by address (an interval tree, so the cache
//! look-up that a REGISTER does, and that competes with the notifier callback
//! for the table lock, is logarithmic whatever the mix of lengths). The table
//! also holds the registrations that left it after an invalidation and wait
//! for their teardown, and the context's counters.
//!
//! The table lives under the context's spinlock, which the MMU notifier
//! callback takes: nothing here allocates or sleeps. Nodes are reserved
//! beforehand ([`Nodes`]).

use crate::{
    key,
    registration::{Registration, RegistrationInfo},
    stats::Stats,
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
}

impl Nodes {
    /// Allocates the nodes, charged to the caller's memory cgroup.
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            by_key: RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?,
            by_range: interval_tree::Reservation::new(GFP_KERNEL_ACCOUNT)?,
        })
    }
}

/// The registration table of a context.
pub(crate) struct RegistrationTable {
    /// Live registrations by key sequence number.
    by_key: RBTree<u64, Arc<Registration>>,
    /// Live registrations by registered range.
    by_range: IntervalTree<Arc<Registration>>,
    /// Registrations that left the table after an invalidation, awaiting
    /// teardown by the context's deferred work.
    pending: List<Registration>,
    /// The context's counters.
    pub(crate) stats: Stats,
}

impl RegistrationTable {
    /// Creates an empty table.
    pub(crate) fn new() -> Self {
        Self {
            by_key: RBTree::new(),
            by_range: IntervalTree::new(),
            pending: List::new(),
            stats: Stats::default(),
        }
    }

    /// The number of live registrations.
    pub(crate) fn len(&self) -> u64 {
        self.stats.registrations
    }

    /// The live registration that serves `length` bytes at `addr` with
    /// `access`, if any: one that covers the whole range and grants at least
    /// that access. `O(log n + k)` for `k` registrations overlapping the
    /// range.
    pub(crate) fn find_cover(
        &self,
        addr: u64,
        length: u64,
        access: u32,
    ) -> Option<&Arc<Registration>> {
        let first = usize::try_from(addr).ok()?;
        // Only registrations containing the first byte can cover the range.
        self.by_range
            .iter(first, first)
            .map(|(_, _, r)| r)
            .find(|r| r.info.covers(addr, length, access) && r.is_live())
    }

    // TODO(partial-overlap): a range only partly covered by live registrations becomes a
    // registration of its own, and the pages both cover are pinned and charged twice. Until
    // registrations are extended or split instead, [`MAX_OVERLAP`] bounds how many of them pin
    // one page.

    /// Whether a new registration `info` overlaps at most [`MAX_OVERLAP`] live
    /// registrations. Bounds how often the context pins any one page (each pin
    /// adds to the page's reference count, which must not overflow) and the
    /// registrations [`RegistrationTable::find_cover`] walks. `O(log n +
    /// MAX_OVERLAP)`.
    pub(crate) fn may_overlap(&self, info: &RegistrationInfo) -> bool {
        let (first, last) = info.interval();
        self.by_range.iter(first, last).nth(MAX_OVERLAP).is_none()
    }

    /// Whether `length` bytes at `addr` overlap at most [`MAX_OVERLAP`] live
    /// registrations; see [`RegistrationTable::may_overlap`].
    pub(crate) fn may_overlap_range(&self, addr: u64, length: u64) -> bool {
        let (Ok(first), Some(Ok(last))) = (
            usize::try_from(addr),
            addr.checked_add(length.saturating_sub(1))
                .map(usize::try_from),
        ) else {
            return false;
        };
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
        self.stats.registrations = self.stats.registrations.saturating_sub(1);
        Some(registration)
    }

    /// The live registration whose local key is `lkey`.
    pub(crate) fn get(&self, lkey: u64) -> Option<&Arc<Registration>> {
        self.by_key
            .get(&key::seq_of(lkey))
            .filter(|r| r.info.keys.lkey == lkey)
    }

    /// The sequence number of some live registration, if any.
    pub(crate) fn any(&self) -> Option<u64> {
        self.by_key.cursor_front().map(|c| *c.current().0)
    }

    /// Queues a registration that left the table for teardown.
    pub(crate) fn defer_teardown(&mut self, registration: Arc<Registration>) {
        // A registration leaves the table once, so it is on no list yet: failing here would
        // leave it pinned for good.
        match ListArc::try_from_arc(registration) {
            Ok(item) => self.pending.push_back(item),
            Err(_) => {
                kernel::warn_on!(true);
            }
        }
    }

    /// Takes the next registration awaiting teardown.
    pub(crate) fn next_deferred(&mut self) -> Option<Arc<Registration>> {
        self.pending.pop_front().map(ListArc::into_arc)
    }
}
