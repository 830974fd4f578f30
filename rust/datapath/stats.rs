// SPDX-License-Identifier: GPL-2.0

//! The data path's counters (`MEMREG_IOC_QUEUE_STATS`).

use super::worker;
use crate::uapi;
use kernel::sync::atomic::{Atomic, Relaxed};

/// The data path's counters (`struct memreg_queue_stats`, where each is
/// described).
pub(crate) struct DataStats {
    /// Descriptors taken.
    pub(super) requests: Atomic<u64>,
    /// Completions written.
    pub(super) completions: Atomic<u64>,
    /// Completions with a nonzero status.
    pub(super) errors: Atomic<u64>,
    /// DOORBELL calls.
    pub(super) doorbells: Atomic<u64>,
    /// Runs of the worker, and batches a DOORBELL served in its caller.
    pub(super) wakeups: Atomic<u64>,
    /// Batches taken.
    pub(super) batches: Atomic<u64>,
    /// The largest batch.
    pub(super) batch_max: Atomic<u64>,
    /// The batch size used last.
    pub(super) batch_limit: Atomic<u64>,
    /// The polling window now.
    pub(super) poll_us: Atomic<u64>,
    /// Keys the shadow resolved.
    pub(super) shadow_hits: Atomic<u64>,
    /// Keys looked up in the table.
    pub(super) shadow_misses: Atomic<u64>,
    /// Master ring entries not written.
    pub(super) master_overflows: Atomic<u64>,
    /// Bytes moved by WRITE, READ and SEND.
    pub(super) remote_bytes: Atomic<u64>,
    /// SENDs delivered to a RECV.
    pub(super) messages: Atomic<u64>,
    /// SENDs that found no RECV in time.
    pub(super) rnr_timeouts: Atomic<u64>,
}

impl DataStats {
    pub(super) fn new() -> Self {
        Self {
            requests: Atomic::new(0),
            completions: Atomic::new(0),
            errors: Atomic::new(0),
            doorbells: Atomic::new(0),
            wakeups: Atomic::new(0),
            batches: Atomic::new(0),
            batch_max: Atomic::new(0),
            batch_limit: Atomic::new(1),
            poll_us: Atomic::new(u64::from(worker::INITIAL_POLL_US)),
            shadow_hits: Atomic::new(0),
            shadow_misses: Atomic::new(0),
            master_overflows: Atomic::new(0),
            remote_bytes: Atomic::new(0),
            messages: Atomic::new(0),
            rnr_timeouts: Atomic::new(0),
        }
    }

    /// The counters in the ABI's layout.
    pub(crate) fn to_abi(&self) -> uapi::QueueStats {
        let mut out: uapi::QueueStats = uapi::zeroed();
        out.requests = self.requests.load(Relaxed);
        out.completions = self.completions.load(Relaxed);
        out.errors = self.errors.load(Relaxed);
        out.doorbells = self.doorbells.load(Relaxed);
        out.wakeups = self.wakeups.load(Relaxed);
        out.batches = self.batches.load(Relaxed);
        out.batch_max = self.batch_max.load(Relaxed);
        out.batch_limit = self.batch_limit.load(Relaxed);
        out.poll_us = self.poll_us.load(Relaxed);
        out.shadow_hits = self.shadow_hits.load(Relaxed);
        out.shadow_misses = self.shadow_misses.load(Relaxed);
        out.master_overflows = self.master_overflows.load(Relaxed);
        out.remote_bytes = self.remote_bytes.load(Relaxed);
        out.messages = self.messages.load(Relaxed);
        out.rnr_timeouts = self.rnr_timeouts.load(Relaxed);
        out
    }
}
