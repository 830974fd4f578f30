// SPDX-License-Identifier: GPL-2.0

//! REGISTER, its undoing, and DEREGISTER.
//!
//! A REGISTER is served by a live registration covering the range with the
//! access asked (a hit), by a parked one (revived with new keys), or by a new
//! one (a miss): its notifier goes in before its pages are pinned, so an
//! invalidation racing with the pinning is seen when it is published, and it
//! is published only if it still fits the cache's cap and overlap bound
//! (parked registrations in the way are evicted first). A watch-only REGISTER
//! is served only by watch-only registrations; a miss records the page
//! frames instead of pinning them, within caps of its own.

use super::{
    info::RegistrationInfo,
    inner::{CacheInner, Nodes},
    key::KeyPair,
    parked,
    registration::{
        push_teardown, teardown_list, Backing, Parts, Refused, Registration, Revalidated,
    },
    Cache,
};
use crate::{
    accounting::Charges,
    error::OpResult,
    stats::{GLOBAL_WATCHES, TOTALS},
    uapi,
};
use kernel::error::compat::EDQUOT;
use kernel::{
    list::List,
    mm::{mmu_notifier::IntervalNotifier, pin::PinnedPages, virt::flags, MmWithUser},
    page::PAGE_SIZE,
    prelude::*,
    random::{get_random_u32, get_random_u64},
    sync::{atomic::Relaxed, Arc},
    task::resched::{cond_resched, fatal_signal_pending},
};

/// Times a registration is retried when an invalidation races with pinning.
const REGISTER_RETRIES: u32 = 3;

/// Times a REGISTER revalidates a suspended registration it found before it
/// gives up with `EAGAIN`.
const HIT_TRIES: u32 = 3;

/// How a REGISTER was served.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Served {
    /// A new registration was pinned.
    Miss,
    /// A live registration in use served it.
    Hit,
    /// A parked registration was revived; the local key it had while
    /// parked.
    Revived(u64),
}

/// What undoing a REGISTER needs ([`Cache::undo_register`]). Small, so that
/// returning it moves little: the hit path is dominated by copies.
pub(crate) struct Registered {
    /// The answer to the caller.
    pub(crate) reply: uapi::RegisterReply,
    lkey: u64,
    served: Served,
    /// The context's peak of pinned pages before a miss, to roll back to.
    peak_before: u64,
}

impl Registered {
    /// Fills in the result of a REGISTER served by `registration` and
    /// returns what undoing it needs.
    fn fill(registration: &Registration, t: &CacheInner, served: Served, peak_before: u64) -> Self {
        let info = &registration.info;
        let reply = uapi::RegisterReply {
            lkey: registration.lkey(),
            rkey: registration.rkey(),
            // The rights the keys carry: exactly the remote ones asked, at least the local ones.
            access: info.access,
            region_addr: info.addr,
            region_length: info.length,
            flags: match served {
                Served::Miss => 0,
                Served::Hit => uapi::REGISTER_CACHED,
                Served::Revived(_) => uapi::REGISTER_CACHED | uapi::REGISTER_REVIVED,
            } | if info.watch { uapi::REGISTER_WATCH } else { 0 },
            slot: registration.slot(t),
        };
        Self {
            reply,
            lkey: registration.lkey(),
            served,
            peak_before,
        }
    }
}

impl Cache {
    /// REGISTER: fills in the keys of the registration serving the range,
    /// pinning a new one if none does. Returns what to pass to
    /// [`Cache::undo_register`] if the result cannot reach the caller.
    pub(crate) fn register(this: &Arc<Self>, req: &uapi::RegisterReq) -> OpResult<Registered> {
        let uapi::RegisterReq {
            addr,
            length,
            access,
            first,
            last,
            watch,
            user_data,
        } = *req;
        let end = addr.checked_add(length).ok_or(EINVAL)?;
        let max = if watch {
            crate::max_watches()
        } else {
            crate::max_registrations()
        };

        // The cache: a live registration covering the range with enough access, revived if
        // parked, revalidated if suspended.
        let mut tries = 0;
        let peak_before = loop {
            let mut evicted = List::new();
            let found = {
                let mut t = this.inner.lock();
                match t.find_cover(addr, length, access, watch).cloned() {
                    Some(r) if !r.is_suspended() => {
                        let served = match Registration::take_ref(&r, &mut t)? {
                            Some(parked_lkey) => Served::Revived(parked_lkey),
                            None => Served::Hit,
                        };
                        return Ok(Registered::fill(&r, &t, served, 0));
                    }
                    Some(r) => Some(r),
                    None if watch && t.stats.watches >= max => return Err(EMFILE.into()),
                    None => {
                        // Make room by evicting parked registrations.
                        if !Self::make_room(&mut t, first, last, max, watch, &mut evicted) {
                            drop(t);
                            teardown_list(&mut evicted);
                            return Err(EDQUOT.into());
                        }
                        None
                    }
                }
            };
            teardown_list(&mut evicted);
            let Some(suspended) = found else {
                break this.inner.lock().stats.pages_pinned_peak;
            };
            // Suspended by an invalidation: look at its pages, then look the range up again.
            // Bounded: invalidations may keep suspending it.
            tries += 1;
            if tries > HIT_TRIES {
                return Err(EAGAIN.into());
            }
            if fatal_signal_pending() {
                return Err(EINTR.into());
            }
            if let Err(e) = Registration::revalidate(&suspended) {
                if tries >= HIT_TRIES {
                    return Err(e.into());
                }
            }
        };
        // Registrations ended by invalidation no longer count against any limit but stay
        // pinned until torn down: tear this context's down now, so that a loop of REGISTER
        // and munmap cannot pin more than its limits allow while the worker catches up.
        this.drain_deferred();

        let page_addr = usize::try_from(addr).map_err(|_| EFAULT)? & !(PAGE_SIZE - 1);
        let page_end = usize::try_from(end)
            .ok()
            .and_then(|e| e.checked_next_multiple_of(PAGE_SIZE))
            .ok_or(EFAULT)?;
        let npages = (page_end - page_addr) / PAGE_SIZE;
        let seq = this.next_seq();
        let keys = KeyPair::new(seq, get_random_u32(), get_random_u64()).ok_or(ENOSPC)?;
        let info = RegistrationInfo {
            addr,
            length,
            access,
            npages,
            keys,
            pool: false,
            watch,
            user_data,
        };
        if watch {
            return Self::register_watch(this, info, max, (first, last), peak_before);
        }

        // Everything the table needs is allocated before its lock is taken.
        let mut nodes = Nodes::new(true)?;
        let mut charges = Charges::for_current()?;
        let registration = Registration::new(this.clone(), info)?;
        let current = kernel::current!();
        let mm = current.mm().ok_or(EPERM)?;
        // The notifier goes in before the pages are pinned, so that an invalidation racing
        // with pinning is seen by the sequence check when publishing.
        let mut subscription =
            IntervalNotifier::insert(registration.clone(), mm, page_addr, npages * PAGE_SIZE)?;

        for _ in 0..REGISTER_RETRIES {
            let seq = registration.notifier().read_begin();
            // After the sequence is read: a mapping that replaces a checked one is an unmap of
            // it, which makes the publication below retry.
            Self::check_pinnable(mm, page_addr, page_end)?;
            // Past the module budget or RLIMIT_MEMLOCK, parked registrations go first,
            // module-wide or the user's, oldest first.
            let pages = PinnedPages::pin_current(page_addr, npages, info.writable(), &mut |n| {
                parked::charge(&mut charges, n)
            })?;
            let parts = Parts {
                backing: Backing::Pinned { pages, charges },
                subscription,
                nodes,
            };
            let mut evicted = List::new();
            let refused = {
                let mut t = this.inner.lock();
                // Registrations parked since the look-up may be in the way: they go first.
                Self::make_room(&mut t, first, last, max, false, &mut evicted);
                match Registration::publish(&registration, &mut t, seq, max, parts) {
                    Ok(()) => {
                        let done = Registered::fill(&registration, &t, Served::Miss, peak_before);
                        drop(t);
                        teardown_list(&mut evicted);
                        return Ok(done);
                    }
                    Err(Refused::Covered(winner, revived, parts)) => {
                        // A concurrent REGISTER published a registration serving ours, and a
                        // reference was taken on it (a hit, or a revival): use it.
                        let served = match revived {
                            Some(parked_lkey) => Served::Revived(parked_lkey),
                            None => Served::Hit,
                        };
                        let done = Registered::fill(&winner, &t, served, 0);
                        drop(t);
                        // Our parts go outside the locks: unpinned, uncharged, the notifier
                        // removed.
                        drop(parts);
                        teardown_list(&mut evicted);
                        return Ok(done);
                    }
                    Err(refused) => refused,
                }
            };
            teardown_list(&mut evicted);
            match refused {
                Refused::Raced(parts) => {
                    // Something changed the range while we pinned it: pin again.
                    let Parts {
                        backing,
                        subscription: s,
                        nodes: n,
                    } = parts;
                    let Backing::Pinned {
                        pages,
                        charges: mut c,
                    } = backing
                    else {
                        return Err(EINVAL.into());
                    };
                    // Unpinned before uncharged.
                    drop(pages);
                    c.release();
                    charges = c;
                    subscription = s;
                    nodes = n;
                }
                Refused::Quota(parts) => {
                    drop(parts);
                    return Err(EDQUOT.into());
                }
                Refused::Overflow(parts) => {
                    drop(parts);
                    return Err(EOVERFLOW.into());
                }
                Refused::Covered(_, _, parts) => {
                    drop(parts);
                    return Err(EAGAIN.into());
                }
            }
        }
        Err(EAGAIN.into())
    }

    /// The miss of a watch-only REGISTER: a registration whose notifier
    /// goes in first, then the page frames under it are recorded (faulting
    /// in absent pages without keeping them pinned); it is published unless
    /// an invalidation raced with the recording (then it records again), the
    /// context holds `max` watches (`EMFILE`) or the range overlaps too many
    /// registrations (`EDQUOT`). A place under the module's cap is taken
    /// before any work (`EMFILE` when there is none). Nothing is pinned or
    /// charged to `RLIMIT_MEMLOCK`; the memory is charged to the caller's
    /// memory cgroup.
    fn register_watch(
        this: &Arc<Self>,
        info: RegistrationInfo,
        max: u64,
        (first, last): (usize, usize),
        peak_before: u64,
    ) -> OpResult<Registered> {
        let mut place = WatchPlace::take()?;
        let page_addr = info.page_addr();
        let page_end = page_addr + info.npages * PAGE_SIZE;
        let mut nodes = Nodes::new(false)?;
        let registration = Registration::new(this.clone(), info)?;
        let current = kernel::current!();
        let mm = current.mm().ok_or(EPERM)?;
        let mut subscription =
            IntervalNotifier::insert(registration.clone(), mm, page_addr, page_end - page_addr)?;
        for _ in 0..REGISTER_RETRIES {
            let seq = registration.notifier().read_begin();
            Self::check_pinnable(mm, page_addr, page_end)?;
            let frames = match registration.record_frames(mm, seq) {
                Ok(frames) => frames,
                // An invalidation began meanwhile: record again.
                Err(e) if e == EBUSY => continue,
                // Pages to fault in first, outside the sequence: then record again.
                Err(e) if e == EAGAIN => {
                    registration.fault_in(mm)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let parts = Parts {
                backing: Backing::Watched(frames),
                subscription,
                nodes,
            };
            let mut evicted = List::new();
            let refused = {
                let mut t = this.inner.lock();
                Self::make_room(&mut t, first, last, max, true, &mut evicted);
                match Registration::publish(&registration, &mut t, seq, max, parts) {
                    Ok(()) => {
                        // Counted in the module's watches until it is unpublished.
                        place.keep();
                        let done = Registered::fill(&registration, &t, Served::Miss, peak_before);
                        drop(t);
                        teardown_list(&mut evicted);
                        return Ok(done);
                    }
                    Err(Refused::Covered(winner, _, parts)) => {
                        // A concurrent REGISTER published a watch serving ours: a hit on it.
                        let done = Registered::fill(&winner, &t, Served::Hit, 0);
                        drop(t);
                        drop(parts);
                        teardown_list(&mut evicted);
                        return Ok(done);
                    }
                    Err(Refused::Quota(parts)) => {
                        let full = t.stats.watches >= max;
                        drop(t);
                        drop(parts);
                        teardown_list(&mut evicted);
                        return Err(if full { EMFILE } else { EDQUOT }.into());
                    }
                    Err(refused) => refused,
                }
            };
            teardown_list(&mut evicted);
            match refused {
                Refused::Raced(parts) => {
                    subscription = parts.subscription;
                    nodes = parts.nodes;
                }
                Refused::Overflow(parts) => {
                    drop(parts);
                    return Err(EOVERFLOW.into());
                }
                Refused::Covered(_, _, parts) | Refused::Quota(parts) => {
                    drop(parts);
                    return Err(EAGAIN.into());
                }
            }
        }
        Err(EAGAIN.into())
    }

    /// REVALIDATE: compares the suspended registration of `req.key` with the
    /// page tables now; it resumes when its memory is in place (0) and ends
    /// otherwise (`ESTALE`). 0 for one that is not suspended; `ENOENT` for an
    /// unknown key; `EAGAIN` when invalidations kept restarting the look (it
    /// stays suspended); `EINTR` on a fatal signal. Takes no reference.
    pub(crate) fn revalidate(&self, req: uapi::Revalidate) -> OpResult {
        uapi::check_reserved(&[req.reserved])?;
        let registration = self.inner.lock().get(req.key).ok_or(ENOENT)?.clone();
        match Registration::revalidate(&registration)? {
            Revalidated::Usable => Ok(()),
            Revalidated::Ended => Err(ESTALE.into()),
        }
    }

    /// Refuses (`EFAULT`) a range that is not wholly mapped or that holds a
    /// driver's mapping of its own pages (`VM_IO`, `VM_PFNMAP`,
    /// `VM_MIXEDMAP`): memreg's rings, state words, event ring and pools
    /// among them, which `VM_IO` does not keep from `get_user_pages_fast`.
    /// Registering them would pin pages the driver frees or hands out by
    /// itself.
    fn check_pinnable(mm: &MmWithUser, start: usize, end: usize) -> Result {
        let guard = mm.mmap_read_lock();
        let mut at = start;
        while at < end {
            let vma = guard.vma_lookup(at).ok_or(EFAULT)?;
            if vma.flags() & (flags::IO | flags::PFNMAP | flags::MIXEDMAP) != 0 {
                return Err(EFAULT);
            }
            at = vma.end();
            cond_resched();
        }
        Ok(())
    }

    /// Undoes a REGISTER whose result could not reach the caller: drops the
    /// reference it took and takes back the counters it moved, so that the
    /// failed call changed nothing.
    pub(crate) fn undo_register(this: &Arc<Self>, done: &Registered) {
        let mut evicted = List::new();
        let mut idle_ms = None;
        let ended = 'ended: {
            let mut t = this.inner.lock();
            match done.served {
                Served::Revived(_) => {
                    t.stats.revives = t.stats.revives.saturating_sub(1);
                    TOTALS.revives.fetch_sub(1, Relaxed);
                }
                Served::Hit => t.stats.cache_hits = t.stats.cache_hits.saturating_sub(1),
                Served::Miss => {}
            }
            let Some(registration) = t.get(done.lkey).cloned() else {
                // An invalidation ended it meanwhile: its counters are the invalidation's.
                if done.served == Served::Miss {
                    t.stats.cache_misses = t.stats.cache_misses.saturating_sub(1);
                }
                break 'ended None;
            };
            if registration.put(&mut t) > 0 {
                break 'ended None;
            }
            if done.served != Served::Miss
                && Registration::park(&registration, &mut t, &mut evicted)
            {
                // Parked, as the DEREGISTER it stands for would have; a revived one is back
                // where it was, with the key it had there (the caller never learnt the new
                // ones), not counted as a new parking.
                if let Served::Revived(parked_lkey) = done.served {
                    t.stats.parks = t.stats.parks.saturating_sub(1);
                    TOTALS.parks.fetch_sub(1, Relaxed);
                    Registration::restore_lkey(&registration, &t, parked_lkey);
                }
                idle_ms = Some(t.config.idle_ms);
                break 'ended None;
            }
            let ended = Registration::unpublish(&mut t, registration.info.keys.seq);
            if done.served == Served::Miss {
                t.stats.cache_misses = t.stats.cache_misses.saturating_sub(1);
                t.stats.pages_pinned_peak = done.peak_before.max(t.stats.pages_pinned);
            }
            ended
        };
        if let Some(r) = ended {
            r.teardown();
        }
        teardown_list(&mut evicted);
        if let Some(idle_ms) = idle_ms {
            // The idle eviction may have stopped looking while it was revived.
            Self::arm_idle(this, idle_ms);
        }
    }

    /// DEREGISTER: see [`Cache::deregister_key`].
    pub(crate) fn deregister(this: &Arc<Self>, req: uapi::Deregister) -> OpResult {
        uapi::check_reserved(&[req.reserved])?;
        Self::deregister_key(this, req.key)
    }

    /// Drops one reference on the registration of `key` (DEREGISTER, from
    /// the ioctl or a ring); the last one parks it or, when it may not be
    /// parked, ends it. `ENOENT` for an unknown key, `EINVAL` for a parked
    /// one: there is no reference to drop. Process context.
    pub(crate) fn deregister_key(this: &Arc<Self>, key: u64) -> OpResult {
        // Parking may evict others to stay within the limits.
        let mut evicted = List::new();
        let (ended, idle_ms) = {
            let mut t = this.inner.lock();
            let registration = t.get(key).ok_or(ENOENT)?.clone();
            // No reference to drop on a parked one; a pool's chunk belongs to the pool.
            if registration.refs(&t) == 0 || registration.info.pool {
                return Err(EINVAL.into());
            }
            if registration.put(&mut t) > 0 {
                return Ok(());
            }
            if Registration::park(&registration, &mut t, &mut evicted) {
                (None, Some(t.config.idle_ms))
            } else {
                t.stats.deregistrations += 1;
                (
                    Registration::unpublish(&mut t, registration.info.keys.seq),
                    None,
                )
            }
        };
        if let Some(r) = ended {
            r.teardown();
        }
        teardown_list(&mut evicted);
        if let Some(idle_ms) = idle_ms {
            Self::arm_idle(this, idle_ms);
        }
        Ok(())
    }

    /// Ends parked registrations until a registration `info` fits the
    /// context's cap and overlap bound: the least recently parked for the
    /// cap (not for a `watch`, which has a cap of its own that parked
    /// registrations do not count against), those it overlaps for the bound.
    /// Returns whether it fits, the evicted ones on `evicted` for teardown.
    /// Neither allocates nor sleeps.
    fn make_room(
        t: &mut CacheInner,
        first: usize,
        last: usize,
        max: u64,
        watch: bool,
        evicted: &mut List<Registration>,
    ) -> bool {
        while !watch && t.pinned_len() >= max {
            match Registration::evict_oldest(t, uapi::EVICT_PIN_LIMIT) {
                Some(r) => push_teardown(evicted, r),
                None => break,
            }
        }
        while !t.may_overlap_span(first, last) {
            let Some(seq) = t.parked_overlapping(first, last) else {
                break;
            };
            if let Some(r) = Registration::evict(t, seq, uapi::EVICT_PIN_LIMIT) {
                push_teardown(evicted, r);
            }
        }
        (watch || t.pinned_len() < max) && t.may_overlap_span(first, last)
    }
}

/// A place under the module's cap on watch-only registrations
/// (`max_watches_total`), taken before a watch miss does any work and given
/// back unless the watch is published.
struct WatchPlace {
    kept: bool,
}

impl WatchPlace {
    /// Takes a place; `EMFILE` when all are taken.
    fn take() -> Result<Self> {
        let cap = crate::max_watches_total();
        let before = GLOBAL_WATCHES.fetch_add(1, Relaxed);
        if before >= cap {
            GLOBAL_WATCHES.fetch_sub(1, Relaxed);
            return Err(EMFILE);
        }
        Ok(Self { kept: false })
    }

    /// Keeps the place for the watch just published: unpublishing it gives
    /// the place back.
    fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for WatchPlace {
    fn drop(&mut self) {
        if !self.kept {
            GLOBAL_WATCHES.fetch_sub(1, Relaxed);
        }
    }
}

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_cache)]
mod tests {
    use super::*;
    use crate::{cache::inner::CacheConfig, events::Waiters};
    use kernel::kunit_mm::UserMapping;

    /// REGISTER of `length` bytes at `addr` with local read and write, as
    /// the ioctl decodes it; the answer.
    fn register(cache: &Arc<Cache>, addr: usize, length: usize) -> Result<uapi::RegisterReply> {
        let mut req: uapi::Register = uapi::zeroed();
        req.addr = addr as u64;
        req.length = length as u64;
        req.access = uapi::ACCESS_LOCAL_READ | uapi::ACCESS_LOCAL_WRITE;
        let req = uapi::RegisterReq::try_from(&req)?;
        Ok(Cache::register(cache, &req)?.reply)
    }

    /// A miss pins, a covered range is a hit on the same registration, the
    /// last DEREGISTER parks it and a REGISTER revives it with a new key; an
    /// munmap ends it, and the release leaves nothing pinned.
    #[test]
    fn the_cache_serves_parks_revives_and_ends() -> Result {
        let map = UserMapping::anonymous(4 * PAGE_SIZE)?;
        let current = kernel::current!();
        let mm = current.mm().ok_or(EINVAL)?;
        let config = CacheConfig {
            parking: true,
            max_parked: 16,
            max_parked_pages: 1024,
            idle_ms: 0,
        };
        let cache = Cache::new(mm, config, Waiters::new()?)?;
        let pinned_before = map.pinned_vm();

        let miss = register(&cache, map.addr(), 4 * PAGE_SIZE)?;
        assert_eq!(miss.flags, 0);
        assert_eq!(map.pinned_vm(), pinned_before + 4);
        let hit = register(&cache, map.addr() + PAGE_SIZE, PAGE_SIZE)?;
        assert_eq!(hit.flags, uapi::REGISTER_CACHED);
        assert_eq!(hit.lkey, miss.lkey);
        let stats = cache.stats();
        assert_eq!((stats.cache_misses, stats.cache_hits), (1, 1));

        // Two references: the second DEREGISTER parks it, still pinned.
        assert!(Cache::deregister_key(&cache, miss.lkey).is_ok());
        assert!(Cache::deregister_key(&cache, miss.lkey).is_ok());
        assert_eq!(cache.stats().parked, 1);
        assert!(cache.get_target(miss.lkey).is_err());
        assert_eq!(map.pinned_vm(), pinned_before + 4);
        let revived = register(&cache, map.addr(), 4 * PAGE_SIZE)?;
        assert_eq!(
            revived.flags,
            uapi::REGISTER_CACHED | uapi::REGISTER_REVIVED
        );
        assert_ne!(revived.lkey, miss.lkey);
        assert!(cache.get_target(revived.lkey).is_ok());

        // The munmap ends it: its key finds nothing, and the cause is counted.
        map.unmap(0, PAGE_SIZE)?;
        assert!(cache.get_target(revived.lkey).is_err());
        assert_eq!(
            cache.stats().invalidations.get(uapi::INVAL_UNMAP).copied(),
            Some(1)
        );
        Cache::release(&cache);
        assert_eq!(map.pinned_vm(), pinned_before);
        Ok(())
    }

    /// A watch pins nothing, is served only to watch requests, moves no
    /// data, and ends when its memory is unmapped.
    #[test]
    fn a_watch_pins_nothing_and_ends_with_its_memory() -> Result {
        let map = UserMapping::anonymous(4 * PAGE_SIZE)?;
        let current = kernel::current!();
        let mm = current.mm().ok_or(EINVAL)?;
        let config = CacheConfig {
            parking: true,
            max_parked: 16,
            max_parked_pages: 1024,
            idle_ms: 0,
        };
        let cache = Cache::new(mm, config, Waiters::new()?)?;
        let pinned_before = map.pinned_vm();
        let mut req: uapi::Register = uapi::zeroed();
        req.addr = map.addr() as u64;
        req.length = (4 * PAGE_SIZE) as u64;
        req.access = uapi::ACCESS_LOCAL_READ | uapi::ACCESS_LOCAL_WRITE;
        req.flags = uapi::REGISTER_WATCH;
        req.user_data = 99;
        let watch = Cache::register(&cache, &uapi::RegisterReq::try_from(&req)?)?.reply;
        assert_eq!(watch.flags, uapi::REGISTER_WATCH);
        assert_eq!(watch.rkey, 0);
        assert_eq!(map.pinned_vm(), pinned_before);
        let stats = cache.stats();
        assert_eq!(
            (stats.watches, stats.watch_pages, stats.pages_pinned),
            (1, 4, 0)
        );
        assert_eq!(cache.get_target(watch.lkey).err(), Some(EOPNOTSUPP));
        // A pinned request is not served by the watch.
        let pinned = register(&cache, map.addr(), PAGE_SIZE)?;
        assert_eq!(pinned.flags, 0);
        assert_ne!(pinned.lkey, watch.lkey);
        // The unmap of one page ends the watch, not parks it.
        map.unmap(2 * PAGE_SIZE, PAGE_SIZE)?;
        assert!(cache.get_target(watch.lkey).is_err());
        assert_eq!(cache.stats().watches, 0);
        Cache::release(&cache);
        assert_eq!(map.pinned_vm(), pinned_before);
        Ok(())
    }
}
