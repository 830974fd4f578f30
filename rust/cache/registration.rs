// SPDX-License-Identifier: GPL-2.0

//! A registration's whole life: pinned pages of one user range, their
//! translation entries, and the interval notifier that ends them.
//!
//! 1. **Created** by a REGISTER that no live registration serves: its
//!    notifier is inserted, then its pages are pinned, each batch charged as
//!    it is pinned ([`crate::accounting`]). A watch-only registration's
//!    pages are not pinned: the page frames mapped there are recorded
//!    instead, and it is never parked.
//! 2. **Published** ([`Registration::publish`]) under the table lock: unless
//!    an invalidation raced with the pinning (the notifier's sequence moved),
//!    a live registration serving the same request was published meanwhile,
//!    or the context is at its cap. It is then `live`: data may move through
//!    it, and REGISTER calls it covers take references on it.
//! 3. **Parked** ([`Registration::park`]) by the last DEREGISTER when the
//!    context's cache configuration allows: it stays pinned, charged and
//!    watched, without references, on the context's parked list.
//!    Its keys end for data at once: no request, COPY or peer operation
//!    moves data through it any more (one in progress stops at its next
//!    step), and its remote key is gone for good. A REGISTER it serves
//!    exactly as to remote rights revives it ([`Registration::take_ref`])
//!    with new keys (the random bits of the local key change, the remote
//!    key is new), so a request naming the old keys never acts on it again;
//!    eviction ends it least recently parked first.
//! 4. **Suspended** ([`Registration::suspend`]) by a "clear" invalidation,
//!    which often leaves the pages where they were: no data moves through it
//!    until [`Registration::revalidate`] finds every registered page still
//!    mapping its pinned page with the registered access (it resumes) or not
//!    (it ends). Parked or not, a registration may be suspended.
//! 5. **Unpublished** ([`Registration::unpublish`]) under the table lock, by
//!    the last DEREGISTER, by an invalidation (the notifier callback, through
//!    [`Registration::retire`]), a failed revalidation, an eviction or the
//!    file's release: it leaves the table and stops being `live` (no data
//!    moves through it afterwards). None of this allocates or sleeps.
//! 6. **Torn down** ([`Registration::teardown`]) in process context with no
//!    lock held: the notifier is removed (waiting for a callback in flight),
//!    the pages are unpinned and only then are their charges released. The
//!    notifier callback cannot do this, so it hands the registration to its
//!    cache's deferred work.
//!
//! Locks: `Registration::state` nests inside the cache's lock; the crate's
//! documentation gives the whole order.

use super::{
    info::RegistrationInfo,
    inner::{CacheInner, Nodes},
    job,
    key::KeyPair,
    parked, Cache,
};
use crate::{
    accounting::Charges,
    stats::{bump, GLOBAL_REGISTRATIONS, GLOBAL_WATCHES, TOTALS},
    uapi,
};
use kernel::{
    list::{
        impl_list_arc_safe, impl_list_item, AtomicTracker, List, ListArc, ListLinks, TryNewListArc,
    },
    mm::{
        mmu_notifier::{impl_has_interval_notifier, IntervalNotifier, Subscription},
        pin::{Extents, PinnedPages},
    },
    new_spinlock,
    prelude::*,
    random::{get_random_u32, get_random_u64},
    rbtree::RBTreeNodeReservation,
    sync::{
        atomic::{Atomic, Relaxed},
        drain_slot::DrainSlot,
        Arc, LockedBy, SpinLock,
    },
    task::resched::cond_resched,
};

/// The resources of a registration, under `Registration::state`.
pub(crate) struct RegistrationState {
    /// A watch's recorded page frames; taken out at teardown.
    pub(super) frames: Option<Extents>,
    /// What the pages are charged to; released once they are unpinned.
    pub(super) charges: Option<Charges>,
    /// The inserted notifier; taken out and dropped (removed) at teardown.
    pub(super) subscription: Option<Subscription<Registration>>,
    /// While suspended: the pages (`first..end`, indexes into the
    /// registration) the invalidations since it was last found intact may
    /// have changed, all that revalidation needs to look at.
    pub(super) unchecked: Option<(usize, usize)>,
    /// While suspended: the `MEMREG_INVAL_*` cause it ends with if its
    /// revalidation fails (`CLEAR`, or `PROTECTION_VMA` for a watch whose
    /// mapping's protection changed).
    pub(super) suspended_by: usize,
}

/// What the table keeps of a registration, under the table lock.
pub(crate) struct TableState {
    /// REGISTER calls not yet matched by DEREGISTER.
    refs: u32,
    /// The stamp of its entry on the parked list, while parked.
    parked_at: Option<u64>,
    /// The memory of that entry, while not parked.
    lru_node: Option<RBTreeNodeReservation<u64, Arc<Registration>>>,
    /// Its place on the module-wide list of parked registrations, while
    /// parked.
    global_place: Option<parked::Place>,
    /// The memory of its entries on that list, while not parked.
    global_nodes: Option<parked::Nodes>,
    /// The memory of its entry in the table by remote key, while parked
    /// (it has no remote key then).
    rkey_node: Option<RBTreeNodeReservation<u64, Arc<Registration>>>,
    /// Its state word's slot and generation, if it has one.
    slot: Option<(u32, u64)>,
}

/// One registration.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration {
    #[pin]
    pub(super) notifier: IntervalNotifier<Registration>,
    /// Links on the context's list of registrations awaiting teardown.
    #[pin]
    links: ListLinks<0>,
    #[pin]
    links_track: AtomicTracker<0>,
    /// Links on the context's list of registrations awaiting revalidation.
    #[pin]
    suspended_links: ListLinks<1>,
    #[pin]
    suspended_track: AtomicTracker<1>,
    /// The pinned pages, which data moves through without a lock: a copy
    /// borrows them (a short section, preemption disabled), then checks
    /// `live`, `suspended` and `generation`; whatever changes one of those
    /// waits for the borrows in progress before it returns. Filled when the
    /// registration is published, taken out at teardown.
    pub(super) pages: DrainSlot<PinnedPages>,
    /// The watch's frames, charges and subscription; level 5 of the crate's
    /// lock order, inside the cache's lock and its shadow.
    #[pin]
    pub(super) state: SpinLock<RegistrationState>,
    /// Data may move through the registration (unless it is suspended). Set
    /// once when it is published and cleared once when it ends, both under
    /// `state`; read by the data path under a borrow of `pages`, and
    /// without either by the cache look-up.
    pub(super) live: Atomic<bool>,
    /// An invalidation may have moved the pages: no data moves until
    /// revalidated. Changes under `state`; read by the data path under a
    /// borrow of `pages`.
    pub(super) suspended: Atomic<bool>,
    /// The local key now: its sequence never changes, its random bits do at
    /// each revival. Changes under the table lock.
    pub(super) lkey: Atomic<u64>,
    /// The remote key now, 0 while parked. Changes under the table lock.
    pub(super) rkey: Atomic<u64>,
    /// Counts the parkings: a data request found the registration at one
    /// generation and moves data only while it has not changed, so nothing
    /// moves through keys that ended. Changes under the table lock and
    /// `state`.
    pub(super) generation: Atomic<u64>,
    /// References and the parked list.
    pub(super) table_state: LockedBy<TableState, CacheInner>,
    pub(crate) info: RegistrationInfo,
    pub(super) cache: Arc<Cache>,
}

impl_has_interval_notifier! { impl HasIntervalNotifier<Self> for Registration { self.notifier } }
impl_list_arc_safe! {
    impl ListArcSafe<0> for Registration { tracked_by links_track: AtomicTracker<0>; }
    impl ListArcSafe<1> for Registration { tracked_by suspended_track: AtomicTracker<1>; }
}
impl_list_item! {
    impl ListItem<0> for Registration { using ListLinks { self.links }; }
    impl ListItem<1> for Registration { using ListLinks { self.suspended_links }; }
}

/// The parts a registration needs to be published, given back when it is
/// not.
pub(crate) struct Parts {
    pub(crate) backing: Backing,
    pub(crate) subscription: Subscription<Registration>,
    pub(crate) nodes: Nodes,
}

/// What holds a registration's memory in place, or records it.
pub(crate) enum Backing {
    /// Pinned pages and what they are charged to.
    Pinned {
        pages: PinnedPages,
        charges: Charges,
    },
    /// A watch's page frames, one per page, recorded as of the notifier
    /// sequence it is published at.
    Watched(Extents),
}

impl Backing {
    /// The pages it covers.
    fn pages(&self) -> usize {
        match self {
            Backing::Pinned { pages, .. } => pages.pages(),
            Backing::Watched(frames) => frames.pages() as usize,
        }
    }
}

/// Why [`Registration::publish`] did not publish.
pub(crate) enum Refused {
    /// An invalidation raced with the pinning: pin again.
    Raced(Parts),
    /// A live registration serving the same request was published
    /// meanwhile; a reference was taken on it for the caller (reviving it if
    /// it was parked: then the local key it had while parked).
    Covered(Arc<Registration>, Option<u64>, Parts),
    /// The context is at its cap of registrations, or the pages are already
    /// pinned by too many of its registrations.
    Quota(Parts),
    /// The registration serving the request cannot take another reference.
    Overflow(Parts),
}

/// The outcome of [`Registration::revalidate`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Revalidated {
    /// Usable: it was not suspended, or its pages were found in place.
    Usable,
    /// Ended, now or before.
    Ended,
}

impl Registration {
    /// Creates a registration that is not live, holds no pages and has no
    /// notifier inserted yet. Its memory is charged to the caller's memory
    /// cgroup.
    pub(crate) fn new(cache: Arc<Cache>, info: RegistrationInfo) -> Result<Arc<Self>> {
        // A watch is never parked: it needs no entries on the parked lists.
        let (lru_node, global_nodes) = if info.watch {
            (None, None)
        } else {
            (
                Some(RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?),
                Some(parked::Nodes::new()?),
            )
        };
        let registration = Arc::pin_init(
            pin_init!(Self {
                notifier <- IntervalNotifier::new(),
                links <- ListLinks::new(),
                links_track <- AtomicTracker::new(),
                suspended_links <- ListLinks::new(),
                suspended_track <- AtomicTracker::new(),
                pages: DrainSlot::new(),
                state <- new_spinlock!(
                    RegistrationState {
                        frames: None,
                        charges: None,
                        subscription: None,
                        unchecked: None,
                        suspended_by: uapi::INVAL_CLEAR,
                    },
                    "memreg::Registration::state"
                ),
                live: Atomic::new(false),
                suspended: Atomic::new(false),
                lkey: Atomic::new(info.keys.lkey),
                // A watch has no remote key: no peer can name it.
                rkey: Atomic::new(if info.watch { 0 } else { info.keys.rkey }),
                generation: Atomic::new(0),
                table_state: LockedBy::new(
                    &cache.inner,
                    TableState {
                        refs: 0,
                        parked_at: None,
                        lru_node,
                        global_place: None,
                        global_nodes,
                        rkey_node: None,
                        slot: None,
                    }
                ),
                info,
                cache,
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        GLOBAL_REGISTRATIONS.add(1, Relaxed);
        Ok(registration)
    }

    /// The interval notifier.
    pub(crate) fn notifier(&self) -> &IntervalNotifier<Registration> {
        &self.notifier
    }

    /// Whether data may move through the registration.
    pub(crate) fn is_live(&self) -> bool {
        self.live.load(Relaxed)
    }

    /// Whether an invalidation suspended it.
    pub(crate) fn is_suspended(&self) -> bool {
        self.suspended.load(Relaxed)
    }

    /// The local key now.
    pub(crate) fn lkey(&self) -> u64 {
        self.lkey.load(Relaxed)
    }

    /// The remote key now (0 while parked).
    pub(crate) fn rkey(&self) -> u64 {
        self.rkey.load(Relaxed)
    }

    /// The generation a data request finds it at (see [`Target`]).
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// REGISTER calls not yet matched by DEREGISTER.
    pub(crate) fn refs(&self, t: &CacheInner) -> u32 {
        self.table_state.access(t).refs
    }

    /// Its state word's slot and generation: `(MEMREG_NO_SLOT, 0)` when it
    /// has none.
    pub(crate) fn slot(&self, t: &CacheInner) -> (u32, u64) {
        self.table_state
            .access(t)
            .slot
            .unwrap_or((uapi::NO_SLOT, 0))
    }

    /// Sets its state word, if it has one, to its generation with `flags`.
    pub(super) fn set_word(&self, t: &CacheInner, flags: u64) {
        if let (Some((slot, generation)), Some(slots)) =
            (self.table_state.access(t).slot, t.slots.as_ref())
        {
            slots.set(slot, generation | flags);
        }
    }

    /// Whether it is parked on the parked list.
    pub(crate) fn is_parked(&self, t: &CacheInner) -> bool {
        self.table_state.access(t).parked_at.is_some()
    }

    /// Takes one more reference for a REGISTER it serves, reviving it (with
    /// new keys) when parked, and counts the hit or the revival. Returns the
    /// local key it had while parked when it was revived; `EOVERFLOW` past
    /// `u32::MAX` references.
    pub(crate) fn take_ref(this: &Arc<Self>, t: &mut CacheInner) -> Result<Option<u64>> {
        let ts = this.table_state.access_mut(t);
        ts.refs = ts.refs.checked_add(1).ok_or(EOVERFLOW)?;
        let parked_lkey = this.lkey();
        if this.unpark(t) {
            Self::rekey(this, t);
            bump(&mut t.stats.revives, &TOTALS.revives, 1);
            return Ok(Some(parked_lkey));
        }
        t.stats.cache_hits += 1;
        Ok(None)
    }

    /// Gives a registration parked again by the undo of its revival (the
    /// caller could not be told its new keys) the local key it had while
    /// parked, so that the failed call changes nothing the caller can see.
    /// Its remote key stays gone, as it was while parked. Neither allocates
    /// nor sleeps.
    pub(crate) fn restore_lkey(this: &Arc<Self>, t: &CacheInner, lkey: u64) {
        if !this.is_parked(t) || super::key::seq_of(lkey) != this.info.keys.seq {
            return;
        }
        this.lkey.store(lkey, Relaxed);
    }

    /// Gives a revived registration new keys: new random bits in its local
    /// key (the sequence stays, so the table finds it where it was) and, when
    /// it grants remote rights, a new remote key, in the memory its old one's
    /// entry left (one that grants none keeps 0). Neither allocates nor
    /// sleeps.
    fn rekey(this: &Arc<Self>, t: &mut CacheInner) {
        let old = this.lkey();
        // Only a registration that grants remote rights gets a remote key again: one that
        // grants none keeps 0, which no peer's request matches (and spares a draw).
        let remote = this.info.access & uapi::ACCESS_REMOTE != 0;
        let node = this.table_state.access_mut(t).rkey_node.take_if(|_| remote);
        let remote_random = || if remote { get_random_u64() } else { 1 };
        // The sequence was valid when the registration was created, so `new` succeeds; the
        // random bits differ from the old ones but for odds of 2^-24 per draw.
        let keys = (0..8)
            .filter_map(|_| KeyPair::new(this.info.keys.seq, get_random_u32(), remote_random()))
            .find(|k| k.lkey != old);
        // Never without new keys: a draw that kept failing (odds 2^-192) flips a random bit.
        let keys = keys.unwrap_or_else(|| KeyPair {
            seq: this.info.keys.seq,
            lkey: old ^ 1,
            rkey: get_random_u64() | 1,
        });
        // Under the table lock, which every look-up by key holds (the worker's shadow has
        // no entry of a parked registration); data moves by generation, not by key.
        this.lkey.store(keys.lkey, Relaxed);
        if let Some(node) = node {
            this.rkey.store(keys.rkey, Relaxed);
            t.insert_rkey(node, this.clone());
        }
    }

    /// Drops one reference; returns how many are left.
    pub(crate) fn put(&self, t: &mut CacheInner) -> u32 {
        let ts = self.table_state.access_mut(t);
        ts.refs = ts.refs.saturating_sub(1);
        ts.refs
    }

    /// Parks a registration without references on the parked list,
    /// evicting the least recently parked ones first when the list is at the
    /// context's limits; those are put on `evicted` for the caller to tear
    /// down once it dropped the lock. Returns `false`, having changed nothing,
    /// when the configuration does not let it park; the caller then ends it.
    /// Neither allocates nor sleeps.
    pub(crate) fn park(
        this: &Arc<Self>,
        t: &mut CacheInner,
        evicted: &mut List<Registration>,
    ) -> bool {
        let npages = this.info.npages as u64;
        let config = t.config;
        // A watch pins nothing, so keeping it without users saves nothing worth its notifier.
        if this.info.watch || !config.may_park(npages) || this.refs(t) != 0 || this.is_parked(t) {
            return false;
        }
        while t.stats.parked >= config.max_parked
            || t.stats.parked_pages.saturating_add(npages) > config.max_parked_pages
        {
            match Self::evict_oldest(t, uapi::EVICT_PARK_LIMIT) {
                Some(r) => push_teardown(evicted, r),
                None => return false,
            }
        }
        let Some(node) = this.table_state.access_mut(t).lru_node.take() else {
            return false;
        };
        // The keys end for data before DEREGISTER returns: out of the worker's shadow, then a
        // new generation, then a wait for the copy steps in progress (none starts through the
        // old keys after it); the remote key goes for good.
        let rkey = this.rkey();
        let shadowed = this.cache.shadow.lock().remove(this.lkey());
        let user = {
            let st = this.state.lock();
            this.generation.fetch_add(1, Relaxed);
            this.rkey.store(0, Relaxed);
            st.charges.as_ref().map_or(0, Charges::user)
        };
        // A copy that found the old generation has ended once this returns; later ones see the
        // new one.
        this.pages.wait_borrows();
        let rkey_node = t.remove_rkey(this.info.keys.seq, rkey);
        this.table_state.access_mut(t).rkey_node = rkey_node;
        // Not the last reference (`this` is another): nothing is freed under the lock.
        drop(shadowed);
        let stamp = t.next_stamp;
        t.next_stamp += 1;
        // Stamps only grow, so the key is new.
        let _ = t.parked.insert(node.into_node(stamp, this.clone()));
        this.table_state.access_mut(t).parked_at = Some(stamp);
        // On the module-wide list too, under the user its pages are charged to.
        if let Some(nodes) = this.table_state.access_mut(t).global_nodes.take() {
            let place = parked::insert(nodes, this.clone(), user);
            this.table_state.access_mut(t).global_place = Some(place);
        }
        bump(&mut t.stats.parked, &TOTALS.parked, 1);
        bump(&mut t.stats.parked_pages, &TOTALS.parked_pages, npages);
        bump(&mut t.stats.parks, &TOTALS.parks, 1);
        true
    }

    /// Takes the registration off the parked list if it is on it;
    /// returns whether it was.
    fn unpark(&self, t: &mut CacheInner) -> bool {
        let Some(stamp) = self.table_state.access_mut(t).parked_at.take() else {
            return false;
        };
        let node = t.parked.remove_node(&stamp);
        let npages = self.info.npages as u64;
        t.stats.parked = t.stats.parked.saturating_sub(1);
        t.stats.parked_pages = t.stats.parked_pages.saturating_sub(npages);
        TOTALS.parked.fetch_sub(1, Relaxed);
        TOTALS.parked_pages.fetch_sub(npages, Relaxed);
        // Keep the entries' memory for the next parking.
        self.table_state.access_mut(t).lru_node = node.map(|n| n.into_reservation());
        if let Some(place) = self.table_state.access_mut(t).global_place.take() {
            self.table_state.access_mut(t).global_nodes = parked::remove(place);
        }
        true
    }

    /// Ends the least recently parked registration, counting `reason`: it
    /// leaves the table and is returned for
    /// teardown, or `None` when nothing is parked. Neither allocates nor
    /// sleeps.
    pub(crate) fn evict_oldest(t: &mut CacheInner, reason: usize) -> Option<Arc<Self>> {
        let seq = t.oldest_parked()?;
        Self::evict(t, seq, reason)
    }

    /// Ends `this` for room if it is still parked where the module-wide list
    /// had it (parked at `stamp`), counted under `MEMREG_EVICT_PIN_LIMIT`;
    /// returns it for teardown. Takes its context's table lock: the caller
    /// holds none. Neither allocates nor sleeps.
    pub(crate) fn evict_if_parked_at(this: &Arc<Self>, stamp: u64) -> Option<Arc<Self>> {
        let mut t = this.cache.inner.lock();
        Self::evict_at(this, &mut t, stamp, uapi::EVICT_PIN_LIMIT)
    }

    /// As [`Registration::evict_if_parked_at`] for memory pressure (counted
    /// under `MEMREG_EVICT_SHRINKER`): only try-locks the table, and leaves
    /// the teardown to the context's deferred work. Returns the pages it
    /// will unpin. Neither allocates nor sleeps.
    pub(crate) fn reclaim_if_parked_at(this: &Arc<Self>, stamp: u64) -> Option<usize> {
        let mut t = this.cache.inner.try_lock()?;
        let ended = Self::evict_at(this, &mut t, stamp, uapi::EVICT_SHRINKER)?;
        let pages = ended.info.npages;
        t.defer_teardown(ended);
        // Queued under the table lock: the file's release, which ends everything under it and
        // then cancels the work, cannot miss this.
        Cache::defer(&this.cache, job::TEARDOWN);
        drop(t);
        Some(pages)
    }

    /// Ends `this`, counting `reason`, if it is parked at module-wide stamp
    /// `stamp`.
    fn evict_at(
        this: &Arc<Self>,
        t: &mut CacheInner,
        stamp: u64,
        reason: usize,
    ) -> Option<Arc<Self>> {
        let place = this.table_state.access(t).global_place?;
        if place.stamp() != stamp {
            return None;
        }
        Self::evict(t, this.info.keys.seq, reason)
    }

    /// Ends the parked registration `seq` as [`Registration::evict_oldest`]
    /// does.
    pub(crate) fn evict(t: &mut CacheInner, seq: u64, reason: usize) -> Option<Arc<Self>> {
        let this = Self::unpublish(t, seq)?;
        t.emit(&this, uapi::EVENT_EVICTED, reason);
        if let (Some(n), Some(total)) = (
            t.stats.evictions.get_mut(reason),
            TOTALS.evictions.get(reason),
        ) {
            bump(n, total, 1);
        }
        Some(this)
    }

    /// Publishes the registration with its pinned pages, unless an
    /// invalidation began since `seq` was read, a live registration serving
    /// the same request is in the table, or the table is at `max` entries.
    /// Neither allocates nor sleeps.
    pub(crate) fn publish(
        this: &Arc<Self>,
        t: &mut CacheInner,
        seq: u64,
        max: u64,
        parts: Parts,
    ) -> Result<(), Refused> {
        let info = &this.info;
        let mut st = this.state.lock();
        if this.notifier.read_retry(seq) {
            return Err(Refused::Raced(parts));
        }
        // A suspended one is not taken: its pages may have moved. Ours serves the request then.
        // A pool's chunk serves no REGISTER and is published whatever the cap.
        if let Some(winner) = t
            .find_cover(info.addr, info.length, info.access, info.watch)
            .filter(|w| !w.is_suspended() && !info.pool)
        {
            let winner = winner.clone();
            drop(st);
            return match Self::take_ref(&winner, t) {
                Ok(revived) => Err(Refused::Covered(winner, revived, parts)),
                // As a cache hit on it would.
                Err(_) => Err(Refused::Overflow(parts)),
            };
        }
        let over = if info.watch {
            t.stats.watches >= max
        } else {
            t.pinned_len() >= max
        };
        if !info.pool && (over || !t.may_overlap(info)) {
            return Err(Refused::Quota(parts));
        }
        let npages = parts.backing.pages() as u64;
        match parts.backing {
            Backing::Pinned { pages, charges } => {
                // Only a publication fills the slot, and a registration is published once.
                if let Err(pages) = this.pages.fill(pages) {
                    kernel::warn_on!(true);
                    drop(st);
                    return Err(Refused::Quota(Parts {
                        backing: Backing::Pinned { pages, charges },
                        ..parts
                    }));
                }
                st.charges = Some(charges);
            }
            Backing::Watched(frames) => st.frames = Some(frames),
        }
        st.subscription = Some(parts.subscription);
        this.live.store(true, Relaxed);
        drop(st);
        let slot = t.slots.as_mut().and_then(|s| s.take());
        let ts = this.table_state.access_mut(t);
        ts.refs = 1;
        ts.slot = slot;
        t.insert(parts.nodes, this.clone());
        t.stats.cache_misses += 1;
        if info.watch {
            t.stats.watches += 1;
            t.stats.watch_pages += npages;
        } else {
            t.stats.pages_pinned += npages;
            t.stats.pages_pinned_peak = t.stats.pages_pinned_peak.max(t.stats.pages_pinned);
        }
        Ok(())
    }

    /// Takes the registration with sequence `seq` out of the table: it is no
    /// longer live; its charges stay with its pages until `teardown` unpins
    /// them. Returns it for teardown, or
    /// `None` if it already left. Neither allocates nor sleeps.
    pub(crate) fn unpublish(t: &mut CacheInner, seq: u64) -> Option<Arc<Self>> {
        let this = t.remove(seq)?;
        this.unpark(t);
        // Out of the worker's shadow before the event that ended it returns. Not the last
        // reference (`this` is another), so nothing is freed here.
        let shadowed = this.cache.shadow.lock().remove(this.lkey());
        drop(shadowed);
        // The state word tells user space before the event that ended it returns.
        if let Some((slot, generation)) = this.table_state.access_mut(t).slot.take() {
            if let Some(slots) = t.slots.as_mut() {
                slots.release(slot, generation);
            }
        }
        {
            let _st = this.state.lock();
            this.live.store(false, Relaxed);
        }
        // A copy in progress has ended once this returns; once `live` is clear none starts.
        this.pages.wait_borrows();
        // Its charges stay until its pages are unpinned, in `teardown`.
        let npages = this.info.npages as u64;
        if this.info.watch {
            t.stats.watches = t.stats.watches.saturating_sub(1);
            t.stats.watch_pages = t.stats.watch_pages.saturating_sub(npages);
            GLOBAL_WATCHES.fetch_sub(1, Relaxed);
        } else {
            t.stats.pages_pinned = t.stats.pages_pinned.saturating_sub(npages);
        }
        Some(this)
    }

    /// Ends the registration after an invalidation: unpublishes it, counts
    /// the cause and hands it to the context's deferred work for teardown.
    /// Called from the notifier callback: neither allocates nor sleeps.
    pub(super) fn retire(this: &Self, cause: usize) {
        let cache = &this.cache;
        let mut t = cache.inner.lock();
        let Some(this) = Self::unpublish(&mut t, this.info.keys.seq) else {
            // Already ended by DEREGISTER, release or an earlier invalidation.
            return;
        };
        if let Some(n) = t.stats.invalidations.get_mut(cause) {
            *n += 1;
        }
        t.emit(&this, uapi::EVENT_ENDED, cause);
        t.defer_teardown(this);
        Cache::defer(cache, job::TEARDOWN);
        drop(t);
    }

    /// Ends the registration for good: removes the notifier (waiting for a
    /// callback in flight), unpins the pages and only then releases their
    /// charges, as io_uring and ib_umem do: however long the removal waits
    /// (an address space kept invalidating), the pages stay charged while
    /// they are pinned. Idempotent. Process context, no lock held; may sleep.
    pub(crate) fn teardown(&self) {
        let (frames, subscription, charges) = {
            let mut st = self.state.lock();
            self.live.store(false, Relaxed);
            (st.frames.take(), st.subscription.take(), st.charges.take())
        };
        // Waits for the copies in progress, if any.
        let pinned = self.pages.take();
        drop(subscription);
        drop(pinned);
        drop(frames);
        drop(charges);
    }

    /// The number of translation entries (extents), 0 once torn down.
    pub(crate) fn extents(&self) -> u32 {
        let extents = match self.pages.borrow() {
            Some(p) => p.extents().len(),
            None => self
                .state
                .lock()
                .frames
                .as_ref()
                .map_or(0, |f| f.as_slice().len()),
        };
        u32::try_from(extents).unwrap_or(u32::MAX)
    }
}

/// Puts a registration that left its table on `list`, for teardown once the
/// caller dropped the table lock. Neither allocates nor sleeps.
pub(crate) fn push_teardown(list: &mut List<Registration>, registration: Arc<Registration>) {
    // A registration leaves the table once, so it is on no list yet: failing here would leave
    // it pinned for good.
    match ListArc::try_from_arc(registration) {
        Ok(item) => list.push_back(item),
        Err(_) => {
            kernel::warn_on!(true);
        }
    }
}

/// Tears down every registration on `list`. Process context, no lock held.
pub(crate) fn teardown_list(list: &mut List<Registration>) {
    while let Some(item) = list.pop_front() {
        item.teardown();
        cond_resched();
    }
}

#[pinned_drop]
impl PinnedDrop for Registration {
    fn drop(self: Pin<&mut Self>) {
        GLOBAL_REGISTRATIONS.fetch_sub(1, Relaxed);
    }
}
