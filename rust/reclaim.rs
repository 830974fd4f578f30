// SPDX-License-Identifier: GPL-2.0

//! The module's one shrinker: under memory pressure, parked registrations
//! give back their pages, module-wide and least recently parked first, and
//! the pools give back their free chunks.

use crate::{cache::parked, pool};
use kernel::{shrinker::ShrinkerOps, sync::ArcBorrow};

/// The module's shrinker.
pub(crate) struct Reclaim;

impl ShrinkerOps for Reclaim {
    /// Parked pages, what evicting gives back, and the pools' free chunks.
    /// Reads atomics only.
    fn count(_this: ArcBorrow<'_, Self>) -> usize {
        let pages = parked::parked_pages().saturating_add(pool::reclaimable_pages());
        usize::try_from(pages).unwrap_or(usize::MAX)
    }

    /// Asks the pools for their free chunks (their work gives them back: it
    /// needs `mmap_lock`), then evicts parked registrations until
    /// `nr_to_scan` pages are unpinned (see [`parked::reclaim`]).
    fn scan(_this: ArcBorrow<'_, Self>, nr_to_scan: usize) -> Option<usize> {
        pool::press_all();
        parked::reclaim(nr_to_scan)
    }
}
