// SPDX-License-Identifier: GPL-2.0

//! Counters: a context's, kept in its table under the table lock, and the
//! module's, kept in atomics; and how both are shown: the ioctls,
//! `/proc/PID/fdinfo/FD` of a context's file and `memreg/stats` in debugfs.

use crate::uapi::{self, EVICT_NR_REASONS, INVAL_NR_CAUSES};
use core::fmt::{self, Write};
use kernel::sync::atomic::{Atomic, Relaxed};

/// Open files of `/dev/memreg`.
pub(crate) static GLOBAL_CONTEXTS: Atomic<u64> = Atomic::new(0);
/// Registration objects alive, including those waiting for teardown.
pub(crate) static GLOBAL_REGISTRATIONS: Atomic<u64> = Atomic::new(0);
/// Pages charged by all registrations, against `max_pinned_pages`.
pub(crate) static GLOBAL_PINNED: Atomic<u64> = Atomic::new(0);
/// Peer attachments alive.
pub(crate) static GLOBAL_PEERS: Atomic<u64> = Atomic::new(0);
/// Context objects still allocated (a leak shows as one counted for good).
pub(crate) static GLOBAL_CONTEXTS_ALIVE: Atomic<u64> = Atomic::new(0);
/// Live watch-only registrations, against `max_watches_total`.
pub(crate) static GLOBAL_WATCHES: Atomic<u64> = Atomic::new(0);
/// Buffer pools alive.
pub(crate) static GLOBAL_POOLS: Atomic<u64> = Atomic::new(0);
/// Pages the pools' chunks hold.
pub(crate) static GLOBAL_POOL_PAGES: Atomic<u64> = Atomic::new(0);
/// Pages of the pools' free chunks that memory pressure may take back.
pub(crate) static GLOBAL_POOL_RECLAIMABLE: Atomic<u64> = Atomic::new(0);

/// Module-wide totals of the registration cache's life, all contexts
/// together.
pub(crate) struct Totals {
    pub(crate) parked: Atomic<u64>,
    pub(crate) parked_pages: Atomic<u64>,
    pub(crate) parks: Atomic<u64>,
    pub(crate) revives: Atomic<u64>,
    pub(crate) evictions: [Atomic<u64>; EVICT_NR_REASONS],
    pub(crate) suspensions: Atomic<u64>,
    pub(crate) resumptions: Atomic<u64>,
    pub(crate) revalidation_failures: Atomic<u64>,
}

/// The module's totals.
pub(crate) static TOTALS: Totals = Totals {
    parked: Atomic::new(0),
    parked_pages: Atomic::new(0),
    parks: Atomic::new(0),
    revives: Atomic::new(0),
    evictions: [const { Atomic::new(0) }; EVICT_NR_REASONS],
    suspensions: Atomic::new(0),
    resumptions: Atomic::new(0),
    revalidation_failures: Atomic::new(0),
};

/// Adds `n` to a context counter and to the module's total of it.
pub(crate) fn bump(counter: &mut u64, total: &Atomic<u64>, n: u64) {
    *counter = counter.saturating_add(n);
    total.add(n, Relaxed);
}

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
    pub(crate) parked: u64,
    pub(crate) parked_pages: u64,
    pub(crate) parks: u64,
    pub(crate) revives: u64,
    pub(crate) evictions: [u64; EVICT_NR_REASONS],
    pub(crate) suspensions: u64,
    pub(crate) resumptions: u64,
    pub(crate) revalidation_failures: u64,
    pub(crate) watches: u64,
    pub(crate) watch_pages: u64,
}

/// Names of the causes of invalidation, as shown in fdinfo and debugfs.
const CAUSE_NAMES: [&str; INVAL_NR_CAUSES] = [
    "unmap",
    "clear",
    "protection_vma",
    "protection_page",
    "soft_dirty",
    "release",
    "migrate",
    "exclusive",
    "other",
];

/// Names of the reasons of eviction, as shown in fdinfo and debugfs.
const EVICT_NAMES: [&str; EVICT_NR_REASONS] =
    ["idle", "pin_limit", "park_limit", "shrinker", "flush"];

impl Stats {
    /// The counters in the ABI's layout.
    pub(crate) fn to_abi(&self) -> uapi::Stats {
        let mut out: uapi::Stats = uapi::zeroed();
        out.registrations = self.registrations;
        out.cache_hits = self.cache_hits;
        out.cache_misses = self.cache_misses;
        out.pages_pinned = self.pages_pinned;
        out.pages_pinned_peak = self.pages_pinned_peak;
        out.deregistrations = self.deregistrations;
        out.invalidations = self.invalidations;
        out.parked = self.parked;
        out.parked_pages = self.parked_pages;
        out.parks = self.parks;
        out.revives = self.revives;
        out.evictions = self.evictions;
        out.suspensions = self.suspensions;
        out.resumptions = self.resumptions;
        out.revalidation_failures = self.revalidation_failures;
        out.watches = self.watches;
        out.watch_pages = self.watch_pages;
        out
    }

    /// Writes the counters as `name:\tvalue` lines, the format of fdinfo.
    pub(crate) fn show(&self, f: &mut impl Write) -> fmt::Result {
        let plain = [
            ("registrations", self.registrations),
            ("cache_hits", self.cache_hits),
            ("cache_misses", self.cache_misses),
            ("pages_pinned", self.pages_pinned),
            ("pages_pinned_peak", self.pages_pinned_peak),
            ("deregistrations", self.deregistrations),
            ("parked", self.parked),
            ("parked_pages", self.parked_pages),
            ("parks", self.parks),
            ("revives", self.revives),
            ("suspensions", self.suspensions),
            ("resumptions", self.resumptions),
            ("revalidation_failures", self.revalidation_failures),
            ("watches", self.watches),
            ("watch_pages", self.watch_pages),
        ];
        for (name, value) in plain {
            writeln!(f, "memreg-{name}:\t{value}")?;
        }
        for (name, value) in EVICT_NAMES.iter().zip(self.evictions) {
            writeln!(f, "memreg-evicted_{name}:\t{value}")?;
        }
        for (name, value) in CAUSE_NAMES.iter().zip(self.invalidations) {
            writeln!(f, "memreg-invalidated_{name}:\t{value}")?;
        }
        Ok(())
    }
}

/// A context's counters, displayed as [`Stats::show`] writes them.
pub(crate) struct Shown<'a>(pub(crate) &'a Stats);

impl kernel::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.show(f)
    }
}

/// The module's counters in the ABI's layout.
pub(crate) fn global() -> uapi::GlobalStats {
    let mut out: uapi::GlobalStats = uapi::zeroed();
    out.contexts = GLOBAL_CONTEXTS.load(Relaxed);
    out.regions = GLOBAL_REGISTRATIONS.load(Relaxed);
    out.pages_pinned = GLOBAL_PINNED.load(Relaxed);
    out.budget_pages = crate::max_pinned_pages();
    out.max_registrations = crate::max_registrations();
    out.peers = GLOBAL_PEERS.load(Relaxed);
    out.contexts_alive = GLOBAL_CONTEXTS_ALIVE.load(Relaxed);
    out.watches = GLOBAL_WATCHES.load(Relaxed);
    out
}

/// Writes the module's counters and limits as `name value` lines, the
/// content of `memreg/stats` in debugfs.
pub(crate) fn show_global(f: &mut impl Write) -> fmt::Result {
    let g = global();
    let defaults = crate::default_cache_config();
    let t = &TOTALS;
    let plain = [
        ("contexts", g.contexts),
        ("registrations", g.regions),
        ("pages_pinned", g.pages_pinned),
        ("max_pinned_pages", g.budget_pages),
        ("max_registrations", g.max_registrations),
        ("peers", g.peers),
        ("contexts_alive", g.contexts_alive),
        ("pools", GLOBAL_POOLS.load(Relaxed)),
        ("pool_pages", GLOBAL_POOL_PAGES.load(Relaxed)),
        ("park", u64::from(defaults.parking)),
        ("park_max", defaults.max_parked),
        ("park_max_pages", defaults.max_parked_pages),
        ("park_idle_ms", defaults.idle_ms),
        ("parked", t.parked.load(Relaxed)),
        ("parked_pages", t.parked_pages.load(Relaxed)),
        ("parks", t.parks.load(Relaxed)),
        ("revives", t.revives.load(Relaxed)),
        ("suspensions", t.suspensions.load(Relaxed)),
        ("resumptions", t.resumptions.load(Relaxed)),
        (
            "revalidation_failures",
            t.revalidation_failures.load(Relaxed),
        ),
    ];
    for (name, value) in plain {
        writeln!(f, "{name} {value}")?;
    }
    for (name, value) in EVICT_NAMES.iter().zip(&t.evictions) {
        writeln!(f, "evicted_{name} {}", value.load(Relaxed))?;
    }
    Ok(())
}
