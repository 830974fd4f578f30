// SPDX-License-Identifier: GPL-2.0

//! Counters: a context's, kept in its table under the table lock, and the
//! module's, kept in atomics.

use crate::defs::{self, INVAL_NR_CAUSES};
use kernel::sync::atomic::{Atomic, Relaxed};

/// Open files of `/dev/memreg`.
pub(crate) static GLOBAL_CONTEXTS: Atomic<u64> = Atomic::new(0);
/// Registration objects alive, including those waiting for teardown.
pub(crate) static GLOBAL_REGISTRATIONS: Atomic<u64> = Atomic::new(0);
/// Pages charged by all registrations, against `max_pinned_pages`.
pub(crate) static GLOBAL_PINNED: Atomic<u64> = Atomic::new(0);

/// A context's counters (`struct memreg_stats`).
#[derive(Clone, Default)]
pub(crate) struct Stats {
    pub(crate) registrations: u64,
    pub(crate) cache_hits: u64,
    pub(crate) cache_misses: u64,
    pub(crate) pages_pinned: u64,
    pub(crate) pages_pinned_peak: u64,
    pub(crate) deregistrations: u64,
    pub(crate) invalidations: [u64; INVAL_NR_CAUSES],
}

impl Stats {
    /// The counters in the ABI's layout.
    pub(crate) fn to_abi(&self) -> defs::Stats {
        let mut out: defs::Stats = defs::zeroed();
        out.registrations = self.registrations;
        out.cache_hits = self.cache_hits;
        out.cache_misses = self.cache_misses;
        out.pages_pinned = self.pages_pinned;
        out.pages_pinned_peak = self.pages_pinned_peak;
        out.deregistrations = self.deregistrations;
        out.invalidations = self.invalidations;
        out
    }
}

/// The module's counters in the ABI's layout.
pub(crate) fn global() -> defs::GlobalStats {
    let mut out: defs::GlobalStats = defs::zeroed();
    out.contexts = GLOBAL_CONTEXTS.load(Relaxed);
    out.regions = GLOBAL_REGISTRATIONS.load(Relaxed);
    out.pages_pinned = GLOBAL_PINNED.load(Relaxed);
    out.budget_pages = crate::module_parameters::max_pinned_pages.value();
    out.max_registrations = crate::max_registrations();
    out
}
