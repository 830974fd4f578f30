// SPDX-License-Identifier: GPL-2.0

//! A registration cache in user space, built on the state words and the
//! event ring (see `state-and-events.rst`).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io;
use std::sync::{Mutex, MutexGuard};

use memreg_sys as raw;

use crate::events::{EventKind, EventRing, ResyncEntry};
use crate::registration::WordState;
use crate::{sys, Access, Device, DEFAULT_STATE_SLOTS};

/// The event ring [`Cache::new`] creates.
const CACHE_EVENT_ENTRIES: u32 = 1024;

/// Why the cache dropped an entry, as the invalidation callback sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidateInfo {
    /// The registration's local key, now dead.
    pub lkey: u64,
    /// The start of the range the entry was made for.
    pub addr: u64,
    /// Its length.
    pub length: u64,
    /// What happened: [`EventKind::Ended`] or [`EventKind::Evicted`].
    pub kind: EventKind,
    /// The event's cause (`MEMREG_INVAL_*`, `MEMREG_EVICT_*`), or
    /// `MEMREG_INVAL_OTHER` when the cache learned it from the state word or
    /// a resynchronisation rather than from an event.
    pub cause: u32,
}

/// What a cache entry is found by: the range and rights asked for.
type EntryKey = (u64, u64, u32);

/// A cached registration, holding one reference of the kernel's.
#[derive(Debug)]
struct Entry {
    id: u64,
    r: raw::memreg_register,
    /// Handles given out and not yet dropped.
    users: usize,
    /// Its place in the LRU list while unused.
    lru: Option<u64>,
}

type Callback = Box<dyn FnMut(&InvalidateInfo) + Send>;

/// The invalidation callback and the notices waiting for it.
///
/// The callback runs without any lock held, so that it may call the cache
/// (which may drop entries and notify in turn): the notifying thread takes
/// it out of the slot, runs it and puts it back. A notice arriving
/// meanwhile, from another thread or from the callback itself, waits in
/// `pending` for the thread running the callback.
#[derive(Default)]
struct CallbackSlot {
    callback: Option<Callback>,
    /// Whether a thread has taken the callback out to run it.
    running: bool,
    pending: Vec<InvalidateInfo>,
}

struct Inner<'dev> {
    events: EventRing<'dev>,
    entries: BTreeMap<EntryKey, Entry>,
    /// Unused entries, least recently used first.
    lru: BTreeMap<u64, EntryKey>,
    tick: u64,
    next_id: u64,
    max_unused: usize,
    resync: Vec<ResyncEntry>,
}

/// A thread-safe registration cache.
///
/// [`Cache::get`] returns a registration valid when it returns: a hit costs
/// a lock, a check that the event ring is empty and one acquire load of the
/// entry's state word, and no system call. A suspended entry is revalidated
/// by calling REGISTER again (the extra reference dropped when the same key
/// comes back); an ended or evicted one is dropped and the range registered
/// again. The cache reads its event ring on each `get` and on
/// [`Cache::process_events`], drops the entries whose registrations ended,
/// and resynchronises after an overflow (entries not listed as valid are
/// treated as ended).
///
/// Each entry holds one kernel reference; handles ([`CachedMr`]) count its
/// users. When more than `max_entries` entries are unused, the least
/// recently used are deregistered. Registrations without a state word
/// (`MEMREG_NO_SLOT`) are not cached: their handle deregisters on drop.
pub struct Cache<'dev> {
    dev: &'dev Device,
    inner: Mutex<Inner<'dev>>,
    callback: Mutex<CallbackSlot>,
}

impl fmt::Debug for Cache<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

/// The invalidation callback while a thread runs it, put back into the
/// slot when done or unwinding.
struct Running<'c, 'dev> {
    cache: &'c Cache<'dev>,
    callback: Option<Callback>,
}

impl Running<'_, '_> {
    /// Puts the callback back unless another one was set meanwhile, and
    /// clears `running`; returns the callback that is no longer wanted, to
    /// drop with no lock held.
    fn finish(&mut self) -> Option<Callback> {
        let callback = self.callback.take()?;
        let mut slot = self.cache.lock_callback();
        slot.running = false;
        if slot.callback.is_none() {
            slot.callback = Some(callback);
            None
        } else {
            Some(callback)
        }
    }
}

impl Drop for Running<'_, '_> {
    fn drop(&mut self) {
        let replaced = self.finish();
        drop(replaced);
    }
}

/// A registration from a [`Cache`], valid when `get` returned it; dropping
/// it puts it back.
#[derive(Debug)]
pub struct CachedMr<'c, 'dev> {
    cache: &'c Cache<'dev>,
    key: EntryKey,
    /// The start of the range asked for.
    addr: u64,
    /// The entry's id, `None` for a registration the cache does not keep.
    id: Option<u64>,
    r: raw::memreg_register,
    hit: bool,
}

impl<'dev> Cache<'dev> {
    /// A cache on `dev` that keeps at most `max_entries` unused entries.
    ///
    /// It maps the state words ([`DEFAULT_STATE_SLOTS`], unless `dev` mapped
    /// them already) and creates the file's event ring, which a file has
    /// only one of: `EBUSY` when it exists; then use
    /// [`Cache::with_event_ring`].
    pub fn new(dev: &'dev Device, max_entries: usize) -> io::Result<Cache<'dev>> {
        dev.map_state_words(DEFAULT_STATE_SLOTS)?;
        let events = dev.setup_events(CACHE_EVENT_ENTRIES, None)?;
        Cache::with_event_ring(events, max_entries)
    }

    /// A cache reading `events`, the event ring of its device.
    pub fn with_event_ring(events: EventRing<'dev>, max_entries: usize) -> io::Result<Cache<'dev>> {
        let dev = events.device();
        dev.map_state_words(DEFAULT_STATE_SLOTS)?;
        Ok(Cache {
            dev,
            inner: Mutex::new(Inner {
                events,
                entries: BTreeMap::new(),
                lru: BTreeMap::new(),
                tick: 0,
                next_id: 1,
                max_unused: max_entries,
                resync: Vec::new(),
            }),
            callback: Mutex::new(CallbackSlot::default()),
        })
    }

    /// Calls `callback` for each entry the cache drops because its
    /// registration ended or was evicted (not for suspensions, which the
    /// cache revalidates itself). It runs without any lock of the cache
    /// held, on the thread that noticed (or on the thread running it at the
    /// time, which delivers what others noticed meanwhile, one call at a
    /// time), and may call the cache, including this method: a callback set
    /// while the old one runs replaces it once it returns.
    pub fn set_invalidate_callback(&self, callback: Box<dyn FnMut(&InvalidateInfo) + Send>) {
        let old = self.lock_callback().callback.replace(callback);
        // Dropped unlocked: its destructor may call the cache too.
        drop(old);
    }

    fn lock_callback(&self) -> MutexGuard<'_, CallbackSlot> {
        // Every update of the slot leaves it consistent before it can panic.
        self.callback.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Inner<'dev>> {
        // Every update of `Inner` leaves it consistent before it can panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of entries, used or not.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls the invalidation callback for `dropped`, with no lock held.
    fn notify(&self, dropped: &[InvalidateInfo]) {
        if dropped.is_empty() {
            return;
        }
        let mut slot = self.lock_callback();
        if slot.callback.is_none() && !slot.running {
            return;
        }
        slot.pending.extend_from_slice(dropped);
        if slot.running {
            // The thread running the callback delivers them (this thread
            // may be that one, called back).
            return;
        }
        loop {
            let Some(callback) = slot.callback.take() else {
                slot.pending.clear();
                return;
            };
            let batch = std::mem::take(&mut slot.pending);
            slot.running = true;
            drop(slot);
            // Puts the callback back even if it panics.
            let mut running = Running {
                cache: self,
                callback: Some(callback),
            };
            if let Some(cb) = running.callback.as_mut() {
                for info in &batch {
                    cb(info);
                }
            }
            let replaced = running.finish();
            drop(replaced);
            slot = self.lock_callback();
            if slot.pending.is_empty() || slot.running {
                return;
            }
        }
    }

    /// Reads the event ring now and drops the entries whose registrations
    /// ended; returns how many were dropped.
    pub fn process_events(&self) -> io::Result<usize> {
        let mut dropped = Vec::new();
        let result = self.lock().process_events(&mut dropped);
        self.notify(&dropped);
        result.map(|()| dropped.len())
    }

    /// A registration of the `len` bytes at `addr` with `access`, valid now.
    ///
    /// An entry serves the request when it was made for the same range and
    /// rights, or, for a request without remote rights, when it covers the
    /// range with at least the local rights asked and no remote right (the
    /// kernel's own rule: rights never widen for peers). [`CachedMr::offset`]
    /// gives the range's place in the registration.
    ///
    /// The range is not borrowed: the cache never reads or writes it, and
    /// the kernel pins it and ends the registration by itself when the
    /// memory under it changes (the next `get` then registers it again), so
    /// the call is memory safe whatever the range. What a program lets the
    /// kernel write there through the keys changes memory behind the type
    /// system's back, as with [`Device::register_range`].
    pub fn get(&self, addr: usize, len: usize, access: Access) -> io::Result<CachedMr<'_, 'dev>> {
        let mut dropped = Vec::new();
        let result = self.get_locked(addr as u64, len as u64, access, &mut dropped);
        self.notify(&dropped);
        result
    }

    fn get_locked(
        &self,
        addr: u64,
        len: u64,
        access: Access,
        dropped: &mut Vec<InvalidateInfo>,
    ) -> io::Result<CachedMr<'_, 'dev>> {
        let mut inner = self.lock();
        inner.process_events(dropped)?;
        let wanted = (addr, len, access.bits());
        let found = inner.find(addr, len, access);
        let key = found.unwrap_or(wanted);
        if let Some(cached) = found.and_then(|k| inner.entries.get(&k)).map(|e| e.r) {
            let state = self
                .dev
                .state_word(cached.slot)
                .map_or(WordState::Ended, |w| {
                    WordState::from_word(w, cached.generation)
                });
            match state {
                WordState::Valid => return Ok(self.hand_out(&mut inner, addr, key, true)),
                WordState::Suspended => {
                    // REGISTER of the entry's own region and rights
                    // revalidates it: the same key coming back means the
                    // entry resumed (drop the extra reference, keep it).
                    // (As libmemreg's revalidate_locked.)
                    let rights = Access::from_bits(cached.access);
                    let r = register(self.dev, cached.region_addr, cached.region_length, rights);
                    if let Ok(r) = r {
                        let _ = self.dev.deregister_key(r.lkey);
                        if r.lkey == cached.lkey && r.generation == cached.generation {
                            return Ok(self.hand_out(&mut inner, addr, key, false));
                        }
                    }
                    // Anything else (another registration, or an error):
                    // the entry ended, or is still suspended and holds our
                    // reference. Drop it with that reference (a harmless
                    // ENOENT if it ended); the request registers afresh
                    // below.
                    if let Some(old) = inner.remove(&key) {
                        let _ = self.dev.deregister_key(old.r.lkey);
                        dropped.push(info_of(&old.r, key, EventKind::Ended));
                    }
                }
                WordState::Ended => {
                    if let Some(old) = inner.remove(&key) {
                        dropped.push(info_of(&old.r, key, EventKind::Ended));
                    }
                }
            }
        }
        let r = register(self.dev, addr, len, access)?;
        Ok(self.insert(&mut inner, addr, wanted, r))
    }

    fn hand_out(
        &self,
        inner: &mut Inner<'dev>,
        addr: u64,
        key: EntryKey,
        hit: bool,
    ) -> CachedMr<'_, 'dev> {
        let e = inner.entries.get_mut(&key);
        let (id, r, lru) = match e {
            Some(e) => {
                e.users += 1;
                (Some(e.id), e.r, e.lru.take())
            }
            None => (None, raw::memreg_register::default(), None),
        };
        if let Some(t) = lru {
            inner.lru.remove(&t);
        }
        CachedMr {
            cache: self,
            key,
            addr,
            id,
            r,
            hit,
        }
    }

    fn insert(
        &self,
        inner: &mut Inner<'dev>,
        addr: u64,
        key: EntryKey,
        r: raw::memreg_register,
    ) -> CachedMr<'_, 'dev> {
        if r.slot == raw::MEMREG_NO_SLOT || self.dev.state_word(r.slot).is_none() {
            // No word to check it by: not cached.
            return CachedMr {
                cache: self,
                key,
                addr,
                id: None,
                r,
                hit: false,
            };
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.entries.insert(
            key,
            Entry {
                id,
                r,
                users: 0,
                lru: None,
            },
        );
        self.hand_out(inner, addr, key, false)
    }

    fn put(&self, mr: &CachedMr<'_, 'dev>) {
        let Some(id) = mr.id else {
            let _ = self.dev.deregister_key(mr.r.lkey);
            return;
        };
        let mut inner = self.lock();
        let Some(e) = inner.entries.get_mut(&mr.key) else {
            return;
        };
        if e.id != id {
            return;
        }
        e.users = e.users.saturating_sub(1);
        if e.users > 0 {
            return;
        }
        let tick = inner.tick;
        inner.tick += 1;
        if let Some(e) = inner.entries.get_mut(&mr.key) {
            e.lru = Some(tick);
        }
        inner.lru.insert(tick, mr.key);
        while inner.lru.len() > inner.max_unused {
            let Some((_, key)) = inner.lru.pop_first() else {
                break;
            };
            if let Some(old) = inner.entries.remove(&key) {
                let _ = self.dev.deregister_key(old.r.lkey);
            }
        }
    }
}

impl Drop for Cache<'_> {
    /// Drops the kernel reference of every entry, as `memreg_cache_destroy`
    /// of libmemreg does (no handle is left: they borrow the cache).
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        inner.lru.clear();
        for (_, e) in std::mem::take(&mut inner.entries) {
            // ENOENT: it ended by itself.
            let _ = self.dev.deregister_key(e.r.lkey);
        }
    }
}

/// REGISTER of a range.
fn register(dev: &Device, addr: u64, len: u64, access: Access) -> io::Result<raw::memreg_register> {
    let mut r = raw::memreg_register {
        addr,
        length: len,
        access: access.bits(),
        ..Default::default()
    };
    sys::register(dev.fd(), &mut r)?;
    if !crate::registration::region_holds(&r, addr, len) {
        let _ = dev.deregister_key(r.lkey);
        return Err(crate::eproto());
    }
    Ok(r)
}

fn info_of(r: &raw::memreg_register, key: EntryKey, kind: EventKind) -> InvalidateInfo {
    InvalidateInfo {
        lkey: r.lkey,
        addr: key.0,
        length: key.1,
        kind,
        cause: raw::MEMREG_INVAL_OTHER,
    }
}

/// The most entries a look-up for a covering registration examines.
const COVER_SCAN: usize = 64;

impl Inner<'_> {
    /// The entry serving a request for `[addr, addr + len)` with `access`:
    /// the one made for exactly that, or, without remote rights, one
    /// covering the range with at least the local rights and no remote one.
    fn find(&self, addr: u64, len: u64, access: Access) -> Option<EntryKey> {
        let exact = (addr, len, access.bits());
        if self.entries.contains_key(&exact) {
            return Some(exact);
        }
        let remote = raw::MEMREG_ACCESS_REMOTE_READ | raw::MEMREG_ACCESS_REMOTE_WRITE;
        if access.bits() & remote != 0 {
            return None;
        }
        let end = addr.checked_add(len)?;
        self.entries
            .range(..=(addr, u64::MAX, u32::MAX))
            .rev()
            .take(COVER_SCAN)
            .find(|(_, e)| {
                e.r.access & remote == 0
                    && Access::from_bits(e.r.access).contains(access)
                    && crate::registration::region_holds(&e.r, addr, len)
                    && end > addr
            })
            .map(|(k, _)| *k)
    }

    fn remove(&mut self, key: &EntryKey) -> Option<Entry> {
        let e = self.entries.remove(key)?;
        if let Some(t) = e.lru {
            self.lru.remove(&t);
        }
        Some(e)
    }

    /// Drops the entries of the registration `lkey`, which ended.
    fn drop_key(
        &mut self,
        lkey: u64,
        kind: EventKind,
        cause: u32,
        dropped: &mut Vec<InvalidateInfo>,
    ) {
        let keys: Vec<EntryKey> = self
            .entries
            .iter()
            .filter(|(_, e)| e.r.lkey == lkey)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            if let Some(e) = self.remove(&key) {
                let mut info = info_of(&e.r, key, kind);
                info.cause = cause;
                dropped.push(info);
            }
        }
    }

    fn process_events(&mut self, dropped: &mut Vec<InvalidateInfo>) -> io::Result<()> {
        if !self.events.pending() {
            return Ok(());
        }
        let events: Vec<_> = self.events.events().collect();
        for ev in events {
            if ev.kind.ends() {
                self.drop_key(ev.key, ev.kind, ev.cause, dropped);
            }
        }
        if self.events.overflowed() {
            let mut list = std::mem::take(&mut self.resync);
            let r = self.events.resync(&mut list);
            if r.is_ok() {
                let valid: HashSet<u64> = list.iter().map(|e| e.key).collect();
                let gone: Vec<u64> = self
                    .entries
                    .values()
                    .filter(|e| !valid.contains(&e.r.lkey))
                    .map(|e| e.r.lkey)
                    .collect();
                for lkey in gone {
                    self.drop_key(lkey, EventKind::Ended, raw::MEMREG_INVAL_OTHER, dropped);
                }
            }
            self.resync = list;
            r?;
        }
        Ok(())
    }
}

impl CachedMr<'_, '_> {
    /// The local key.
    pub fn lkey(&self) -> u64 {
        self.r.lkey
    }

    /// The remote key (0 without remote rights).
    pub fn rkey(&self) -> u64 {
        self.r.rkey
    }

    /// The registration the keys name, `(region_addr, region_length)`.
    pub fn region(&self) -> (u64, u64) {
        (self.r.region_addr, self.r.region_length)
    }

    /// The offset of the range asked for in the region.
    pub fn offset(&self) -> u64 {
        self.addr - self.r.region_addr
    }

    /// The state word's slot, `None` for a registration the cache does not
    /// keep.
    pub fn slot(&self) -> Option<u32> {
        (self.r.slot != raw::MEMREG_NO_SLOT).then_some(self.r.slot)
    }

    /// The state word's value while the registration is usable.
    pub fn generation(&self) -> u64 {
        self.r.generation
    }

    /// Whether `get` served it from a valid entry, without a system call (a
    /// revalidated or new registration is not a hit).
    pub fn was_hit(&self) -> bool {
        self.hit
    }

    /// Whether the registration is still usable (one acquire load of its
    /// state word; `QUERY` without one).
    pub fn is_valid(&self) -> io::Result<bool> {
        if let Some(w) = self.slot().and_then(|s| self.cache.dev.state_word(s)) {
            return Ok(WordState::from_word(w, self.r.generation) == WordState::Valid);
        }
        match self.cache.dev.query(self.r.lkey) {
            Ok(q) => Ok(q.is_usable() && q.state & raw::MEMREG_STATE_SUSPENDED == 0),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Drop for CachedMr<'_, '_> {
    fn drop(&mut self) {
        self.cache.put(self);
    }
}
