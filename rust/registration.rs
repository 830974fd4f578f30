// SPDX-License-Identifier: GPL-2.0

//! A registration's whole life: pinned pages of one user range, their
//! translation entries, and the interval notifier that ends them.
//!
//! 1. **Created** by a REGISTER that no live registration serves: its
//!    notifier is inserted, then its pages are pinned, each batch charged as
//!    it is pinned ([`crate::accounting`]).
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
//!    context's deferred work.
//!
//! Locks: `Registration::state` nests inside the context's table lock; see
//! `context.rs` for the whole order.

use crate::{
    accounting::Charges,
    context::{job, table::Nodes, table::RegistrationTable, ContextShared},
    key::KeyPair,
    parked,
    stats::{bump, TOTALS},
    uapi, GLOBAL_REGISTRATIONS,
};
use kernel::{
    list::{
        impl_list_arc_safe, impl_list_item, AtomicTracker, List, ListArc, ListLinks, TryNewListArc,
    },
    mm::{
        hmm::PageState,
        mmu_notifier::{
            impl_has_interval_notifier, Event, IntervalNotifier, IntervalNotifierOps, Range,
            Subscription,
        },
        pin::PinnedPages,
    },
    new_spinlock,
    page::PAGE_SIZE,
    prelude::*,
    random::{get_random_u32, get_random_u64},
    rbtree::RBTreeNodeReservation,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, LockedBy, SpinLock,
    },
    task::resched::{cond_resched, fatal_signal_pending},
};

/// Pages compared per look at the page tables when revalidating: a page
/// table's worth.
const REVALIDATE_BATCH: usize = 512;

/// Looks at the page tables a suspended registration makes before giving up
/// for now (each is restarted by an invalidation of its range).
const REVALIDATE_TRIES: u32 = 4;

/// What a registration covers, fixed at creation.
#[derive(Clone, Copy)]
pub(crate) struct RegistrationInfo {
    /// Address as registered.
    pub(crate) addr: u64,
    /// Length in bytes as registered.
    pub(crate) length: u64,
    /// `MEMREG_ACCESS_*` bits.
    pub(crate) access: u32,
    /// Number of pages.
    pub(crate) npages: usize,
    /// The keys it was created with; `keys.seq` never changes, the keys
    /// themselves do at each revival ([`Registration::lkey`]).
    pub(crate) keys: KeyPair,
    /// A chunk of a buffer pool (`pool.rs`): its pages are the pool's, the
    /// pool alone ends it, and REGISTER never returns it.
    pub(crate) pool: bool,
}

impl RegistrationInfo {
    /// The first byte of the first page.
    pub(crate) fn page_addr(&self) -> usize {
        self.addr as usize & !(PAGE_SIZE - 1)
    }

    /// Whether this registration serves a request for `length` bytes at
    /// `addr` with `access`: it grants exactly the remote rights asked (a
    /// remote key never grants a peer more than the caller asked for), at
    /// least the local ones, and covers the range: exactly, when remote
    /// rights are asked (a peer given the keys reaches no byte outside the
    /// range the caller named), or with room around it otherwise.
    pub(crate) fn covers(&self, addr: u64, length: u64, access: u32) -> bool {
        let (Some(end), Some(my_end)) =
            (addr.checked_add(length), self.addr.checked_add(self.length))
        else {
            return false;
        };
        if (access ^ self.access) & uapi::ACCESS_REMOTE != 0 || access & !self.access != 0 {
            return false;
        }
        if access & uapi::ACCESS_REMOTE != 0 {
            return self.addr == addr && my_end == end;
        }
        self.addr <= addr && end <= my_end
    }

    /// Whether the pages must be pinned for writing.
    pub(crate) fn writable(&self) -> bool {
        self.access & (uapi::ACCESS_LOCAL_WRITE | uapi::ACCESS_REMOTE_WRITE) != 0
    }

    /// The registered bytes as a closed interval `(first, last)`. A
    /// registration is never empty and never wraps.
    pub(crate) fn interval(&self) -> (usize, usize) {
        let first = self.addr as usize;
        (
            first,
            first.saturating_add((self.length as usize).saturating_sub(1)),
        )
    }
}

/// The resources of a registration, under `Registration::state`.
pub(crate) struct RegistrationState {
    /// The pinned pages; taken out at teardown.
    pinned: Option<PinnedPages>,
    /// What the pages are charged to; released once they are unpinned.
    charges: Option<Charges>,
    /// The inserted notifier; taken out and dropped (removed) at teardown.
    subscription: Option<Subscription<Registration>>,
    /// While suspended: the pages (`first..end`, indexes into the
    /// registration) the invalidations since it was last found intact may
    /// have changed, all that revalidation needs to look at.
    unchecked: Option<(usize, usize)>,
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
    notifier: IntervalNotifier<Registration>,
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
    #[pin]
    state: SpinLock<RegistrationState>,
    /// Data may move through the registration (unless it is suspended). Set
    /// once when it is published and cleared once when it ends, both under
    /// `state`; read under `state` by the data path, and without it by the
    /// cache look-up.
    live: Atomic<bool>,
    /// An invalidation may have moved the pages: no data moves until
    /// revalidated. Changes under `state`.
    suspended: Atomic<bool>,
    /// The local key now: its sequence never changes, its random bits do at
    /// each revival. Changes under the table lock.
    lkey: Atomic<u64>,
    /// The remote key now, 0 while parked. Changes under the table lock.
    rkey: Atomic<u64>,
    /// Counts the parkings: a data request found the registration at one
    /// generation and moves data only while it has not changed, so nothing
    /// moves through keys that ended. Changes under the table lock and
    /// `state`.
    generation: Atomic<u64>,
    /// References and the parked list.
    table_state: LockedBy<TableState, RegistrationTable>,
    pub(crate) info: RegistrationInfo,
    ctx: Arc<ContextShared>,
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
    pub(crate) pages: PinnedPages,
    pub(crate) charges: Charges,
    pub(crate) subscription: Subscription<Registration>,
    pub(crate) nodes: Nodes,
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
    pub(crate) fn new(ctx: Arc<ContextShared>, info: RegistrationInfo) -> Result<Arc<Self>> {
        let lru_node = RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?;
        let global_nodes = parked::Nodes::new()?;
        let registration = Arc::pin_init(
            pin_init!(Self {
                notifier <- IntervalNotifier::new(),
                links <- ListLinks::new(),
                links_track <- AtomicTracker::new(),
                suspended_links <- ListLinks::new(),
                suspended_track <- AtomicTracker::new(),
                state <- new_spinlock!(
                    RegistrationState {
                        pinned: None,
                        charges: None,
                        subscription: None,
                        unchecked: None,
                    },
                    "memreg::Registration::state"
                ),
                live: Atomic::new(false),
                suspended: Atomic::new(false),
                lkey: Atomic::new(info.keys.lkey),
                rkey: Atomic::new(info.keys.rkey),
                generation: Atomic::new(0),
                table_state: LockedBy::new(
                    &ctx.table,
                    TableState {
                        refs: 0,
                        parked_at: None,
                        lru_node: Some(lru_node),
                        global_place: None,
                        global_nodes: Some(global_nodes),
                        rkey_node: None,
                        slot: None,
                    }
                ),
                info,
                ctx,
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
    fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// REGISTER calls not yet matched by DEREGISTER.
    pub(crate) fn refs(&self, t: &RegistrationTable) -> u32 {
        self.table_state.access(t).refs
    }

    /// Its state word's slot and generation: `(MEMREG_NO_SLOT, 0)` when it
    /// has none.
    pub(crate) fn slot(&self, t: &RegistrationTable) -> (u32, u64) {
        self.table_state
            .access(t)
            .slot
            .unwrap_or((uapi::NO_SLOT, 0))
    }

    /// Sets its state word, if it has one, to its generation with `flags`.
    fn set_word(&self, t: &RegistrationTable, flags: u64) {
        if let (Some((slot, generation)), Some(slots)) =
            (self.table_state.access(t).slot, t.slots.as_ref())
        {
            slots.set(slot, generation | flags);
        }
    }

    /// Whether it is parked on the parked list.
    pub(crate) fn is_parked(&self, t: &RegistrationTable) -> bool {
        self.table_state.access(t).parked_at.is_some()
    }

    /// Takes one more reference for a REGISTER it serves, reviving it (with
    /// new keys) when parked, and counts the hit or the revival. Returns the
    /// local key it had while parked when it was revived; `EOVERFLOW` past
    /// `u32::MAX` references.
    pub(crate) fn take_ref(this: &Arc<Self>, t: &mut RegistrationTable) -> Result<Option<u64>> {
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
    pub(crate) fn restore_lkey(this: &Arc<Self>, t: &RegistrationTable, lkey: u64) {
        if !this.is_parked(t) || crate::key::seq_of(lkey) != this.info.keys.seq {
            return;
        }
        this.lkey.store(lkey, Relaxed);
    }

    /// Gives a revived registration new keys: new random bits in its local
    /// key (the sequence stays, so the table finds it where it was) and, when
    /// it grants remote rights, a new remote key, in the memory its old one's
    /// entry left (one that grants none keeps 0). Neither allocates nor
    /// sleeps.
    fn rekey(this: &Arc<Self>, t: &mut RegistrationTable) {
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
    pub(crate) fn put(&self, t: &mut RegistrationTable) -> u32 {
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
        t: &mut RegistrationTable,
        evicted: &mut List<Registration>,
    ) -> bool {
        let npages = this.info.npages as u64;
        let config = t.config;
        if !config.may_park(npages) || this.refs(t) != 0 || this.is_parked(t) {
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
        // new generation, under the lock a copy step holds (so one in progress finishes first
        // and none starts through the old keys); the remote key goes for good.
        let rkey = this.rkey();
        let shadowed = this.ctx.data.shadow.lock().remove(this.lkey());
        let user = {
            let st = this.state.lock();
            this.generation.fetch_add(1, Relaxed);
            this.rkey.store(0, Relaxed);
            st.charges.as_ref().map_or(0, Charges::user)
        };
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
    fn unpark(&self, t: &mut RegistrationTable) -> bool {
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
    pub(crate) fn evict_oldest(t: &mut RegistrationTable, reason: usize) -> Option<Arc<Self>> {
        let seq = t.oldest_parked()?;
        Self::evict(t, seq, reason)
    }

    /// Ends `this` for room if it is still parked where the module-wide list
    /// had it (parked at `stamp`), counted under `MEMREG_EVICT_PIN_LIMIT`;
    /// returns it for teardown. Takes its context's table lock: the caller
    /// holds none. Neither allocates nor sleeps.
    pub(crate) fn evict_if_parked_at(this: &Arc<Self>, stamp: u64) -> Option<Arc<Self>> {
        let mut t = this.ctx.table.lock();
        Self::evict_at(this, &mut t, stamp, uapi::EVICT_PIN_LIMIT)
    }

    /// As [`Registration::evict_if_parked_at`] for memory pressure (counted
    /// under `MEMREG_EVICT_SHRINKER`): only try-locks the table, and leaves
    /// the teardown to the context's deferred work. Returns the pages it
    /// will unpin. Neither allocates nor sleeps.
    pub(crate) fn reclaim_if_parked_at(this: &Arc<Self>, stamp: u64) -> Option<usize> {
        let mut t = this.ctx.table.try_lock()?;
        let ended = Self::evict_at(this, &mut t, stamp, uapi::EVICT_SHRINKER)?;
        let pages = ended.info.npages;
        t.defer_teardown(ended);
        // Queued under the table lock: the file's release, which ends everything under it and
        // then cancels the work, cannot miss this.
        ContextShared::defer(&this.ctx, job::TEARDOWN);
        drop(t);
        Some(pages)
    }

    /// Ends `this`, counting `reason`, if it is parked at module-wide stamp
    /// `stamp`.
    fn evict_at(
        this: &Arc<Self>,
        t: &mut RegistrationTable,
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
    pub(crate) fn evict(t: &mut RegistrationTable, seq: u64, reason: usize) -> Option<Arc<Self>> {
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
        t: &mut RegistrationTable,
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
            .find_cover(info.addr, info.length, info.access)
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
        if !info.pool && (t.len() >= max || !t.may_overlap(info)) {
            return Err(Refused::Quota(parts));
        }
        let npages = parts.pages.pages() as u64;
        st.pinned = Some(parts.pages);
        st.charges = Some(parts.charges);
        st.subscription = Some(parts.subscription);
        this.live.store(true, Relaxed);
        drop(st);
        let slot = t.slots.as_mut().and_then(|s| s.take());
        let ts = this.table_state.access_mut(t);
        ts.refs = 1;
        ts.slot = slot;
        t.insert(parts.nodes, this.clone());
        t.stats.cache_misses += 1;
        t.stats.pages_pinned += npages;
        t.stats.pages_pinned_peak = t.stats.pages_pinned_peak.max(t.stats.pages_pinned);
        Ok(())
    }

    /// Takes the registration with sequence `seq` out of the table: it is no
    /// longer live; its charges stay with its pages until `teardown` unpins
    /// them. Returns it for teardown, or
    /// `None` if it already left. Neither allocates nor sleeps.
    pub(crate) fn unpublish(t: &mut RegistrationTable, seq: u64) -> Option<Arc<Self>> {
        let this = t.remove(seq)?;
        this.unpark(t);
        // Out of the worker's shadow before the event that ended it returns. Not the last
        // reference (`this` is another), so nothing is freed here.
        let shadowed = this.ctx.data.shadow.lock().remove(this.lkey());
        drop(shadowed);
        // The state word tells user space before the event that ended it returns.
        if let Some((slot, generation)) = this.table_state.access_mut(t).slot.take() {
            if let Some(slots) = t.slots.as_mut() {
                slots.release(slot, generation);
            }
        }
        {
            let _st = this.state.lock();
            // Taking the lock waits for a copy in progress; once `live` is clear none starts.
            this.live.store(false, Relaxed);
        }
        // Its charges stay until its pages are unpinned, in `teardown`.
        t.stats.pages_pinned = t.stats.pages_pinned.saturating_sub(this.info.npages as u64);
        Some(this)
    }

    /// Ends the registration after an invalidation: unpublishes it, counts
    /// the cause and hands it to the context's deferred work for teardown.
    /// Called from the notifier callback: neither allocates nor sleeps.
    fn retire(this: &Self, cause: usize) {
        let ctx = &this.ctx;
        let mut t = ctx.table.lock();
        let Some(this) = Self::unpublish(&mut t, this.info.keys.seq) else {
            // Already ended by DEREGISTER, release or an earlier invalidation.
            return;
        };
        if let Some(n) = t.stats.invalidations.get_mut(cause) {
            *n += 1;
        }
        t.emit(&this, uapi::EVENT_ENDED, cause);
        t.defer_teardown(this);
        ContextShared::defer(ctx, job::TEARDOWN);
        drop(t);
    }

    /// Suspends the registration after an invalidation that may have left
    /// its pages where they were: no data moves through it until it is
    /// revalidated, which the context's deferred work does soon (and any use
    /// before). Called from the notifier callback: neither allocates nor
    /// sleeps.
    fn suspend(this: &Self, range: &Range<'_>, cur_seq: u64) {
        let newly = {
            // Taking the lock waits for a copy in progress; once `suspended` is set no copy
            // starts.
            let mut st = this.state.lock();
            this.notifier.set_seq(cur_seq);
            // The pages of the registration the clear covers.
            let base = this.info.page_addr();
            let first = range.start().saturating_sub(base) / PAGE_SIZE;
            let end = range
                .end()
                .saturating_sub(base)
                .div_ceil(PAGE_SIZE)
                .min(this.info.npages);
            let first = first.min(end);
            st.unchecked = Some(match st.unchecked {
                Some((f, e)) => (f.min(first), e.max(end)),
                None => (first, end),
            });
            this.is_live() && !this.suspended.xchg(true, Relaxed)
        };
        if !newly {
            // Ended, or suspended and queued for revalidation already.
            return;
        }
        let ctx = &this.ctx;
        let mut t = ctx.table.lock();
        let Some(me) = t.get_seq(this.info.keys.seq).cloned() else {
            return;
        };
        bump(&mut t.stats.suspensions, &TOTALS.suspensions, 1);
        me.set_word(&t, uapi::WORD_SUSPENDED);
        t.emit(&me, uapi::EVENT_SUSPENDED, uapi::INVAL_CLEAR);
        t.queue_revalidation(me);
        ContextShared::defer(ctx, job::REVALIDATE);
        drop(t);
    }

    /// Whether every page the invalidations since the suspension may have
    /// changed still maps its pinned page with the registered access, as of
    /// the notifier's read sequence `seq`. `EBUSY` when an invalidation began
    /// since, `EINTR` on a fatal signal between page tables. May sleep; no
    /// lock held.
    fn pages_in_place(&self, seq: u64) -> Result<bool> {
        let Some(mm) = self.ctx.mm.mmget_not_zero() else {
            // The address space is being torn down.
            return Ok(false);
        };
        let (first, end) = self.state.lock().unchecked.unwrap_or((0, self.info.npages));
        let writable = self.info.writable();
        let start = self.info.page_addr();
        let mut expected = KVec::from_elem(0u64, REVALIDATE_BATCH, GFP_KERNEL)?;
        let mut seen = KVec::from_elem(PageState::default(), REVALIDATE_BATCH, GFP_KERNEL)?;
        let mut at = first;
        while at < end {
            let n = (end - at).min(REVALIDATE_BATCH);
            let (Some(expected), Some(seen)) = (expected.get_mut(..n), seen.get_mut(..n)) else {
                return Err(EINVAL);
            };
            {
                let st = self.state.lock();
                match &st.pinned {
                    Some(p) => p.pfns(at, expected)?,
                    None => return Ok(false),
                }
            }
            self.notifier
                .snapshot(&mm, seq, start + at * PAGE_SIZE, seen)?;
            let intact = expected
                .iter()
                .zip(seen.iter())
                .all(|(&pfn, s)| s.pfn() == Some(pfn) && (!writable || s.writable()));
            if !intact {
                return Ok(false);
            }
            at += n;
            if fatal_signal_pending() {
                return Err(EINTR);
            }
            cond_resched();
        }
        Ok(true)
    }

    /// Revalidates a suspended registration: waits for the invalidation to
    /// finish, then looks at the page tables. It resumes when every page
    /// still maps its pinned page with the registered access, and ends
    /// otherwise (counted as a revalidation failure and under the "clear"
    /// cause). `EAGAIN` when invalidations kept restarting the look (it stays
    /// suspended). Process context, no lock held; may sleep.
    pub(crate) fn revalidate(this: &Arc<Self>) -> Result<Revalidated> {
        for _ in 0..REVALIDATE_TRIES {
            if !this.is_live() {
                return Ok(Revalidated::Ended);
            }
            if !this.is_suspended() {
                return Ok(Revalidated::Usable);
            }
            let seq = this.notifier.read_begin();
            let intact = match this.pages_in_place(seq) {
                Ok(intact) => intact,
                Err(e) if e == EBUSY => continue,
                // Ended meanwhile (its notifier removed), or part of the range is a mapping
                // whose page tables cannot be read (`EFAULT`: not the pinned pages).
                Err(_) if !this.is_live() => return Ok(Revalidated::Ended),
                Err(e) if e == EFAULT => false,
                Err(e) => return Err(e),
            };
            let ctx = &this.ctx;
            let mut t = ctx.table.lock();
            {
                let mut st = this.state.lock();
                if !this.is_live() {
                    return Ok(Revalidated::Ended);
                }
                if this.notifier.read_retry(seq) {
                    continue;
                }
                if intact {
                    st.unchecked = None;
                    if this.suspended.xchg(false, Relaxed) {
                        bump(&mut t.stats.resumptions, &TOTALS.resumptions, 1);
                        this.set_word(&t, 0);
                    }
                    drop(st);
                    return Ok(Revalidated::Usable);
                }
            }
            let ended = Self::unpublish(&mut t, this.info.keys.seq);
            if ended.is_some() {
                if let Some(n) = t.stats.invalidations.get_mut(uapi::INVAL_CLEAR) {
                    *n += 1;
                }
                bump(
                    &mut t.stats.revalidation_failures,
                    &TOTALS.revalidation_failures,
                    1,
                );
                t.emit(this, uapi::EVENT_ENDED, uapi::INVAL_CLEAR);
            }
            drop(t);
            if let Some(r) = ended {
                r.teardown();
            }
            return Ok(Revalidated::Ended);
        }
        Err(EAGAIN)
    }

    /// Ends the registration for good: removes the notifier (waiting for a
    /// callback in flight), unpins the pages and only then releases their
    /// charges, as io_uring and ib_umem do: however long the removal waits
    /// (an address space kept invalidating), the pages stay charged while
    /// they are pinned. Idempotent. Process context, no lock held; may sleep.
    pub(crate) fn teardown(&self) {
        let (pinned, subscription, charges) = {
            let mut st = self.state.lock();
            self.live.store(false, Relaxed);
            (st.pinned.take(), st.subscription.take(), st.charges.take())
        };
        drop(subscription);
        drop(pinned);
        drop(charges);
    }

    /// Copies `buf.len()` bytes of the registered range from byte `offset`
    /// (relative to the registered address) into `buf`, or from `buf` into the
    /// range when `to_registration`, if the registration is still at
    /// `generation`. Fails with `ENOENT` when the registration is no longer
    /// live or was parked since, and `EAGAIN` while it is suspended; nothing
    /// moves then.
    fn copy_chunk(
        &self,
        generation: u64,
        offset: u64,
        buf: &mut [u8],
        to_registration: bool,
    ) -> Result {
        let at = self.byte_index(offset)?;
        let st = self.state.lock();
        let pinned = self.usable(&st, generation)?;
        if to_registration {
            pinned.write(at, buf)
        } else {
            pinned.read(at, buf)
        }
    }

    /// Copies `len` bytes at byte `offset` of this registration to byte
    /// `dst_offset` of `dst`, page to page through both registrations'
    /// translation entries, holding both registrations' locks (so neither
    /// can end during the copy). Fails with `EBUSY`, moving nothing, when
    /// `dst`'s lock is taken (it is only tried: two copies in opposite
    /// directions never wait for each other); the caller then goes through a
    /// bounce buffer. Otherwise as [`Registration::copy_chunk`], for either.
    fn copy_to(
        &self,
        generation: u64,
        offset: u64,
        dst: &Target,
        dst_offset: u64,
        len: usize,
    ) -> Result {
        let at = self.byte_index(offset)?;
        let dst_at = dst.byte_index(dst_offset)?;
        let st = self.state.lock();
        let src_pages = self.usable(&st, generation)?;
        if core::ptr::eq(self, &*dst.registration) {
            if dst.generation != generation {
                return Err(ENOENT);
            }
            return src_pages.copy_to(at, src_pages, dst_at, len);
        }
        let dst_st = dst.state.try_lock().ok_or(EBUSY)?;
        let dst_pages = dst.usable(&dst_st, dst.generation)?;
        src_pages.copy_to(at, dst_pages, dst_at, len)
    }

    /// The index into the pinned pages' bytes of byte `offset` of the
    /// registered range.
    fn byte_index(&self, offset: u64) -> Result<usize> {
        let page_offset = (self.info.addr as usize) % PAGE_SIZE;
        usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(page_offset))
            .ok_or(EINVAL)
    }

    /// The pinned pages, if data may move through them for a request that
    /// found the registration at `generation`: `EAGAIN` while suspended,
    /// `ENOENT` once ended or parked since.
    fn usable<'a>(&self, st: &'a RegistrationState, generation: u64) -> Result<&'a PinnedPages> {
        match &st.pinned {
            Some(_) if !self.is_live() || self.generation() != generation => Err(ENOENT),
            Some(_) if self.is_suspended() => Err(EAGAIN),
            Some(p) => Ok(p),
            _ => Err(ENOENT),
        }
    }

    /// The number of translation entries (extents), 0 once torn down.
    pub(crate) fn extents(&self) -> u32 {
        let st = self.state.lock();
        st.pinned
            .as_ref()
            .map_or(0, |p| u32::try_from(p.extents().len()).unwrap_or(u32::MAX))
    }
}

/// A registration as a data request found it by key: data moves through it
/// only while it is at the generation it was found at, so nothing moves
/// through keys that a DEREGISTER ended (parking) after the look-up, even if
/// a REGISTER revived the registration with new keys since.
#[derive(Clone)]
pub(crate) struct Target {
    registration: Arc<Registration>,
    generation: u64,
}

impl Target {
    /// `registration` at its generation now: call it under the lock its
    /// look-up was made under (the table's, or the worker's shadow's), which
    /// parking takes before it moves to a new generation.
    pub(crate) fn new(registration: Arc<Registration>) -> Self {
        let generation = registration.generation();
        Self {
            registration,
            generation,
        }
    }

    /// The registration.
    pub(crate) fn registration(&self) -> &Arc<Registration> {
        &self.registration
    }

    /// Whether `self` and `other` are the same registration.
    pub(crate) fn same(&self, other: &Target) -> bool {
        Arc::ptr_eq(&self.registration, &other.registration)
    }

    /// Copies between `buf` and the registered range as
    /// [`Registration::copy_chunk`] does, at the generation it was found at.
    pub(crate) fn copy_chunk(&self, offset: u64, buf: &mut [u8], to_registration: bool) -> Result {
        self.registration
            .copy_chunk(self.generation, offset, buf, to_registration)
    }

    /// Copies page to page to `dst` as [`Registration::copy_to`] does, each
    /// side at the generation it was found at.
    pub(crate) fn copy_to(&self, offset: u64, dst: &Target, dst_offset: u64, len: usize) -> Result {
        self.registration
            .copy_to(self.generation, offset, dst, dst_offset, len)
    }
}

impl core::ops::Deref for Target {
    type Target = Registration;

    fn deref(&self) -> &Registration {
        &self.registration
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

/// The `MEMREG_INVAL_*` cause a notifier event ends a registration with, or
/// `None` for events that leave its pages where they are. The mapping is
/// explicit so the ABI does not follow the kernel's enum order; events this
/// ABI does not name are counted as "other".
pub(crate) fn inval_cause(event: Event) -> Option<usize> {
    match event {
        // The pinned pages stay mapped where they were: fork's write protection of a
        // copy-on-write mapping (pinned anonymous pages are copied for the child, the parent
        // keeps them), writeback cleaning, soft-dirty tracking.
        Event::ProtectionPage | Event::SoftDirty => None,
        Event::Unmap => Some(uapi::INVAL_UNMAP),
        Event::Clear => Some(uapi::INVAL_CLEAR),
        Event::ProtectionVma => Some(uapi::INVAL_PROTECTION_VMA),
        Event::Release => Some(uapi::INVAL_RELEASE),
        Event::Migrate => Some(uapi::INVAL_MIGRATE),
        Event::Exclusive => Some(uapi::INVAL_EXCLUSIVE),
        Event::Other(_) => Some(uapi::INVAL_OTHER),
    }
}

impl IntervalNotifierOps for Registration {
    fn invalidate(this: &Self, range: &Range<'_>, cur_seq: u64) -> bool {
        let Some(cause) = inval_cause(range.event()) else {
            return true;
        };
        if cause == uapi::INVAL_CLEAR {
            // Many clears leave the pinned pages mapped where they were (a mapping split
            // anywhere in the same 2 MiB block, `MADV_DONTFORK` or `mlock` of the range, fork
            // of a PMD-mapped THP, failed compaction of pinned shmem): look again before ending
            // it.
            Self::suspend(this, range, cur_seq);
            return true;
        }
        {
            // Taking the lock waits for a copy in progress; once `live` is clear no copy starts.
            let _st = this.state.lock();
            this.notifier.set_seq(cur_seq);
            this.live.store(false, Relaxed);
        }
        // Leave the table and queue the teardown; neither allocates nor sleeps.
        Self::retire(this, cause);
        true
    }
}

#[pinned_drop]
impl PinnedDrop for Registration {
    fn drop(self: Pin<&mut Self>) {
        GLOBAL_REGISTRATIONS.fetch_sub(1, Relaxed);
    }
}

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_registration)]
mod tests {
    use super::*;

    fn info(addr: u64, length: u64, access: u32) -> RegistrationInfo {
        RegistrationInfo {
            addr,
            length,
            access,
            npages: 0,
            keys: KeyPair {
                seq: 1,
                lkey: 1 << 24,
                rkey: 2 << 24,
            },
            pool: false,
        }
    }

    #[test]
    fn covers_needs_the_whole_range() {
        let r = info(0x1000, 0x3000, uapi::ACCESS_LOCAL_READ);
        assert!(r.covers(0x1000, 0x3000, uapi::ACCESS_LOCAL_READ));
        assert!(r.covers(0x2000, 0x10, uapi::ACCESS_LOCAL_READ));
        assert!(r.covers(0x3fff, 1, uapi::ACCESS_LOCAL_READ));
        // Partial overlaps at either end are not covered.
        assert!(!r.covers(0xfff, 2, uapi::ACCESS_LOCAL_READ));
        assert!(!r.covers(0x3fff, 2, uapi::ACCESS_LOCAL_READ));
        assert!(!r.covers(0x0, 0x8000, uapi::ACCESS_LOCAL_READ));
        // A range that wraps is never covered.
        assert!(!r.covers(u64::MAX, 2, uapi::ACCESS_LOCAL_READ));
        assert_eq!(r.interval(), (0x1000, 0x3fff));
    }

    #[test]
    fn covers_needs_at_least_the_access() {
        let rw = uapi::ACCESS_LOCAL_READ | uapi::ACCESS_LOCAL_WRITE;
        let r = info(0x1000, 0x1000, rw);
        assert!(r.covers(0x1000, 0x1000, uapi::ACCESS_LOCAL_READ));
        assert!(r.covers(0x1000, 0x1000, rw));
        assert!(!r.covers(0x1000, 0x1000, rw | uapi::ACCESS_REMOTE_WRITE));
        let ro = info(0x1000, 0x1000, uapi::ACCESS_LOCAL_READ);
        assert!(!ro.covers(0x1000, 0x1000, rw));
    }

    #[test]
    fn remote_rights_are_served_exactly() {
        let rw = uapi::ACCESS_LOCAL_READ | uapi::ACCESS_LOCAL_WRITE;
        let remote = rw | uapi::ACCESS_REMOTE_WRITE;
        let r = info(0x1000, 0x4000, remote);
        // The exact range and rights: served.
        assert!(r.covers(0x1000, 0x4000, remote));
        // Remote rights on part of it: a miss (a peer would reach more than was named).
        assert!(!r.covers(0x2000, 0x1000, remote));
        // Fewer remote rights, or none: a miss (a key grants exactly what was asked).
        assert!(!r.covers(0x1000, 0x4000, rw));
        assert!(!r.covers(0x2000, 0x1000, uapi::ACCESS_LOCAL_READ));
        // Other remote rights: a miss.
        assert!(!r.covers(0x1000, 0x4000, rw | uapi::ACCESS_REMOTE_READ));
        // Without remote rights, a wider range with more local rights serves.
        let l = info(0x1000, 0x4000, rw);
        assert!(l.covers(0x2000, 0x1000, uapi::ACCESS_LOCAL_READ));
        assert!(!l.covers(
            0x2000,
            0x1000,
            uapi::ACCESS_LOCAL_READ | uapi::ACCESS_REMOTE_READ
        ));
    }

    #[test]
    fn writable_follows_write_access() {
        assert!(!info(0, 1, uapi::ACCESS_LOCAL_READ).writable());
        assert!(info(0, 1, uapi::ACCESS_LOCAL_WRITE).writable());
        assert!(info(0, 1, uapi::ACCESS_REMOTE_WRITE).writable());
        assert!(!info(0, 1, uapi::ACCESS_LOCAL_READ | 1 << 2).writable());
    }

    #[test]
    fn every_event_has_an_explicit_cause() {
        assert_eq!(inval_cause(Event::Unmap), Some(uapi::INVAL_UNMAP));
        assert_eq!(inval_cause(Event::Clear), Some(uapi::INVAL_CLEAR));
        assert_eq!(
            inval_cause(Event::ProtectionVma),
            Some(uapi::INVAL_PROTECTION_VMA)
        );
        assert_eq!(inval_cause(Event::Release), Some(uapi::INVAL_RELEASE));
        assert_eq!(inval_cause(Event::Migrate), Some(uapi::INVAL_MIGRATE));
        assert_eq!(inval_cause(Event::Exclusive), Some(uapi::INVAL_EXCLUSIVE));
        assert_eq!(inval_cause(Event::ProtectionPage), None);
        assert_eq!(inval_cause(Event::SoftDirty), None);
        // A kernel event this ABI does not know lands in "other", never out of bounds.
        assert_eq!(inval_cause(Event::Other(1000)), Some(uapi::INVAL_OTHER));
    }
}
