// SPDX-License-Identifier: GPL-2.0

//! Eviction of parked registrations: for room, past the configuration's
//! limits, after the file was idle, and on FLUSH.

use super::{
    inner::{CacheConfig, CacheInner},
    registration::{push_teardown, teardown_list, Registration},
    work_id, Cache,
};
use crate::{error::OpResult, uapi};
use kernel::{
    list::List,
    sync::{atomic::Relaxed, Arc},
    time::{jiffies, msecs_to_jiffies},
    workqueue::{cancel::cancel_delayed_sync, dfl},
};

/// Registrations evicted under one hold of the cache's lock.
const EVICT_BATCH: usize = 64;

impl Cache {
    /// Ends parked registrations with `reason`, least recently parked first,
    /// until `keep` says the rest may stay (or none is left), and tears them
    /// down: their pages are unpinned when this returns. Returns how many
    /// ended and their pages. Process context.
    pub(super) fn evict_while(
        &self,
        reason: usize,
        keep: impl Fn(&CacheInner) -> bool,
    ) -> (u64, u64) {
        let (mut n, mut pages) = (0u64, 0u64);
        loop {
            let mut evicted = List::new();
            let mut done = false;
            {
                let mut t = self.inner.lock();
                for _ in 0..EVICT_BATCH {
                    if keep(&t) {
                        done = true;
                        break;
                    }
                    match Registration::evict_oldest(&mut t, reason) {
                        Some(r) => {
                            n += 1;
                            pages += r.info.npages as u64;
                            push_teardown(&mut evicted, r);
                        }
                        None => {
                            done = true;
                            break;
                        }
                    }
                }
            }
            teardown_list(&mut evicted);
            if done {
                return (n, pages);
            }
        }
    }

    /// Arms the idle eviction `delay_ms` from now if the configuration asks
    /// for it, unless it is armed already (it then looks at the last use when
    /// it fires).
    pub(super) fn arm_idle(this: &Arc<Self>, delay_ms: u64) {
        if delay_ms == 0 {
            return;
        }
        let delay = msecs_to_jiffies(u32::try_from(delay_ms).unwrap_or(u32::MAX));
        // Already armed: it looks again when it fires.
        let _ = dfl::system_dfl().enqueue_delayed::<_, { work_id::IDLE }>(this.clone(), delay);
    }

    /// The idle eviction: ends every parked registration if the context made
    /// no ioctl for `idle_ms` (to the tick), or looks again when it will have.
    pub(super) fn idle_check(this: Arc<Self>) {
        let (idle_ms, parked) = {
            let t = this.inner.lock();
            (t.config.idle_ms, t.stats.parked)
        };
        if idle_ms == 0 || parked == 0 {
            return;
        }
        let idle_for = jiffies::elapsed_ms(this.last_use.load(Relaxed));
        if idle_for >= idle_ms {
            this.evict_while(uapi::EVICT_IDLE, |_| false);
        } else {
            Self::arm_idle(&this, idle_ms - idle_for);
        }
    }

    /// FLUSH: ends every parked registration; their pages are uncharged when
    /// this returns.
    pub(crate) fn flush(&self, req: &mut uapi::Flush) -> OpResult {
        uapi::check_reserved(&req.reserved)?;
        let (evicted, pages) = self.evict_while(uapi::EVICT_FLUSH, |_| false);
        *req = uapi::zeroed();
        req.evicted = evicted;
        req.pages = pages;
        Ok(())
    }

    /// SET_CACHE: replaces the context's cache configuration and ends the
    /// parked registrations past its limits.
    pub(crate) fn set_cache_config(this: &Arc<Self>, req: uapi::CacheConfig) -> OpResult {
        let config = CacheConfig::from_abi(&req)?;
        this.inner.lock().config = config;
        if !config.parking {
            this.evict_while(uapi::EVICT_FLUSH, |_| false);
        } else {
            this.evict_while(uapi::EVICT_PARK_LIMIT, |t| {
                t.stats.parked <= config.max_parked
                    && t.stats.parked_pages <= config.max_parked_pages
            });
        }
        // The idle eviction follows the new delay.
        cancel_delayed_sync::<_, { work_id::IDLE }>(this);
        Self::arm_idle(this, config.idle_ms);
        Ok(())
    }
}
