// SPDX-License-Identifier: GPL-2.0

//! The shadow translation cache: a small set-associative table of recently
//! used registrations that resolves a key without the cache's trees.
//!
//! A registration leaves it under the cache's lock when it leaves the table
//! or is parked (before it moves to a new generation), so before the munmap
//! that ended it returns.

use super::registration::Registration;
use kernel::sync::Arc;

/// Entries of the shadow translation cache.
const SHADOW_ENTRIES: usize = 16;

/// Ways of a set of the shadow translation cache.
const SHADOW_WAYS: usize = 2;

/// The shadow translation cache: recently used registrations by key, in
/// sets of [`SHADOW_WAYS`] entries (so the source and destination of a COPY
/// never evict each other), the most recently inserted first.
pub(crate) struct Shadow {
    /// The sets, one after the other.
    entries: [Option<Arc<Registration>>; SHADOW_ENTRIES],
}

impl Shadow {
    /// The first entry of the set of `lkey`.
    fn set(lkey: u64) -> usize {
        // The key's random low bits spread the sets.
        (lkey as usize) % (SHADOW_ENTRIES / SHADOW_WAYS) * SHADOW_WAYS
    }

    /// The registration of `lkey`, if it is there and live.
    pub(super) fn get(&self, lkey: u64) -> Option<&Arc<Registration>> {
        let set = Self::set(lkey);
        self.entries
            .get(set..set + SHADOW_WAYS)?
            .iter()
            .flatten()
            .find(|r| r.lkey() == lkey && r.is_live())
    }

    /// Inserts `r` first in its set; returns the entry pushed out (an
    /// ended entry of the same key, or the last way).
    pub(super) fn insert(&mut self, r: Arc<Registration>) -> Option<Arc<Registration>> {
        let set = Self::set(r.lkey());
        let ways = self.entries.get_mut(set..set + SHADOW_WAYS)?;
        // A key is in a set at most once: an ended entry of it goes first.
        if let Some(i) = ways
            .iter()
            .position(|e| e.as_ref().is_some_and(|o| o.lkey() == r.lkey()))
        {
            ways.get_mut(i..)?.rotate_left(1);
            ways.rotate_right(1);
        } else {
            // The last way leaves; the others move down one.
            ways.rotate_right(1);
        }
        ways.first_mut().and_then(|e| e.replace(r))
    }

    /// Takes the registration of `lkey` out, if it is there.
    pub(crate) fn remove(&mut self, lkey: u64) -> Option<Arc<Registration>> {
        let set = Self::set(lkey);
        self.entries
            .get_mut(set..set + SHADOW_WAYS)?
            .iter_mut()
            .find(|e| e.as_ref().is_some_and(|r| r.lkey() == lkey))
            .and_then(|e| e.take())
    }

    /// Takes every entry out.
    pub(crate) fn clear(&mut self) -> [Option<Arc<Registration>>; SHADOW_ENTRIES] {
        core::mem::replace(&mut self.entries, [const { None }; SHADOW_ENTRIES])
    }
}

impl Shadow {
    /// An empty cache.
    pub(super) const fn new() -> Self {
        Self {
            entries: [const { None }; SHADOW_ENTRIES],
        }
    }
}
