// SPDX-License-Identifier: GPL-2.0

//! Parked registrations, module-wide: one list, oldest first, that every
//! context's parked registrations are on, the eviction that gives their
//! charges back to whoever needs them, and the one shrinker of the module.
//!
//! Parked registrations are a cache: whatever they hold is given back when
//! anyone else needs it. A REGISTER or a pool growth that reaches the
//! module's budget (`max_pinned_pages`) evicts parked registrations
//! module-wide, least recently parked first, and one that reaches
//! `RLIMIT_MEMLOCK` evicts the same user's parked registrations, in any of
//! their contexts; only when none is left does it fail ([`charge`]).
//! Memory pressure evicts them through the module's shrinker
//! ([`reclaim`], called by [`crate::reclaim`]).
//!
//! The list is one tree, by user (the `user_struct` the pages are charged
//! to) and then by the order of parking: a user's oldest is its first entry,
//! and the module's oldest the oldest of the users' first entries, found by
//! jumping from user to user (as many steps as users have parked
//! registrations, each `O(log n)`). Each registration reserves the memory of
//! its entry when it is created, so parking never allocates.
//!
//! # Lock order
//!
//! A context's table lock comes before [`PARKED`] (parking and unparking
//! take it under the table lock); [`PARKED`] is held only to find or change
//! entries, never while taking a table lock: an eviction finds its victim,
//! drops [`PARKED`], then takes the victim's table lock and checks that the
//! victim is still parked where it was found.
//!
//! An eviction for room tears its victim down at once, which waits for an
//! invalidation in progress in the victim's address space; the shrinker
//! leaves that to the victim's context.

use super::registration::Registration;
use crate::{accounting::Charges, stats::TOTALS};
use kernel::{
    prelude::*,
    rbtree::{RBTree, RBTreeNodeReservation},
    sync::{atomic::Relaxed, Arc},
};

/// Evictions a charge tries before it gives up (each frees at least one
/// registration, or finds the one it chose gone and looks again).
const EVICT_TRIES: usize = 1024;

/// The module-wide list.
struct Lru {
    /// Parked registrations by user and order of parking, created on first
    /// use.
    by_user: Option<RBTree<(usize, u64), Arc<Registration>>>,
    /// The stamp of the next parking.
    next_stamp: u64,
}

kernel::lazy_global_lock! {
    /// The module-wide list; level 5 of the crate's lock order, inside a
    /// cache's lock and never held while taking one.
    static PARKED: SpinLock<Lru> = Lru {
        by_user: None,
        next_stamp: 0,
    };
}

/// The memory of a registration's entry, reserved when it is created.
pub(crate) struct Nodes {
    by_user: RBTreeNodeReservation<(usize, u64), Arc<Registration>>,
}

impl Nodes {
    /// Reserves the memory of the entry, charged to the caller's memory
    /// cgroup.
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            by_user: RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?,
        })
    }
}

/// Where a parked registration is on the list.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    stamp: u64,
    user: usize,
}

/// Puts `registration`, charged to `user`, at the most recent end of the
/// list, in the memory of `nodes`. Neither allocates nor sleeps.
pub(crate) fn insert(nodes: Nodes, registration: Arc<Registration>, user: usize) -> Place {
    let mut lru = PARKED.lock();
    let stamp = lru.next_stamp;
    lru.next_stamp += 1;
    // Stamps only grow, so the key is new.
    let _ = lru
        .by_user
        .get_or_insert_with(RBTree::new)
        .insert(nodes.by_user.into_node((user, stamp), registration));
    Place { stamp, user }
}

/// Takes the registration at `place` off the list; returns the memory of
/// its entries for its next parking. Neither allocates nor sleeps.
pub(crate) fn remove(place: Place) -> Option<Nodes> {
    let mut lru = PARKED.lock();
    let by_user = lru
        .by_user
        .as_mut()?
        .remove_node(&(place.user, place.stamp))?;
    Some(Nodes {
        by_user: by_user.into_reservation(),
    })
}

impl Place {
    /// The stamp of the parking.
    pub(crate) fn stamp(&self) -> u64 {
        self.stamp
    }
}

/// The least recently parked registration, of `user`'s only when given,
/// and the stamp of its parking.
fn oldest(user: Option<usize>) -> Option<(Arc<Registration>, u64)> {
    let lru = PARKED.lock();
    let tree = lru.by_user.as_ref()?;
    if let Some(user) = user {
        let c = tree.cursor_lower_bound(&(user, 0))?;
        let (&(u, stamp), r) = c.current();
        return (u == user).then(|| (r.clone(), stamp));
    }
    // Each user's first entry is its oldest: the oldest of those is the module's.
    let mut best: Option<(Arc<Registration>, u64)> = None;
    let mut next = tree.cursor_front();
    while let Some(c) = next {
        let (&(u, stamp), r) = c.current();
        if best.as_ref().is_none_or(|(_, s)| stamp < *s) {
            best = Some((r.clone(), stamp));
        }
        next = u
            .checked_add(1)
            .and_then(|n| tree.cursor_lower_bound(&(n, 0)));
    }
    best
}

/// Ends the least recently parked registration module-wide (of `user`'s
/// only when given) and tears it down; returns whether there was one. The
/// caller holds no cache lock. Process context; may sleep.
fn evict_one(user: Option<usize>) -> bool {
    for _ in 0..EVICT_TRIES {
        let Some((victim, stamp)) = oldest(user) else {
            return false;
        };
        // Unparked or ended since it was found: look again.
        if let Some(ended) = Registration::evict_if_parked_at(&victim, stamp) {
            ended.teardown();
            return true;
        }
    }
    false
}

/// Charges `pages` to `charges`, evicting parked registrations for room:
/// module-wide, least recently parked first, past the module's budget
/// (`ENOSPC`); the same user's past `RLIMIT_MEMLOCK` (`ENOMEM`). Fails with
/// that error only when nothing that could help is parked. The caller holds
/// no table lock. Process context; may sleep.
pub(crate) fn charge(charges: &mut Charges, pages: usize) -> Result {
    let mut tries = 0;
    loop {
        let e = match charges.charge(pages) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let user = (e == ENOMEM).then(|| charges.user());
        // Bounded: others may park as fast as this evicts.
        tries += 1;
        if tries > EVICT_TRIES || !evict_one(user) {
            return Err(e);
        }
    }
}

/// Evicts parked registrations module-wide, least recently parked first,
/// until `nr_to_scan` pages are unpinned or nothing is parked, and reports
/// those pages (freed once the processes no longer map them), for the
/// module's shrinker. Their caches' deferred work unpins them: the notifier
/// removal that needs may wait for an invalidation, which must not happen in
/// reclaim. Only try-locks a cache; gives up (`None`) when the oldest's is
/// contended before anything was evicted. Neither allocates nor sleeps.
pub(crate) fn reclaim(nr_to_scan: usize) -> Option<usize> {
    let mut freed = 0usize;
    let mut tries = 0;
    while freed < nr_to_scan && tries < EVICT_TRIES {
        tries += 1;
        let Some((victim, stamp)) = oldest(None) else {
            break;
        };
        match Registration::reclaim_if_parked_at(&victim, stamp) {
            Some(pages) => freed = freed.saturating_add(pages),
            // Contended, or changed since: stop rather than spin in reclaim.
            None if freed == 0 => return None,
            None => break,
        }
    }
    Some(freed)
}

/// Pages of parked registrations, module-wide: what [`reclaim`] could give
/// back. Reads an atomic only.
pub(crate) fn parked_pages() -> u64 {
    TOTALS.parked_pages.load(Relaxed)
}
