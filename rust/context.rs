// SPDX-License-Identifier: GPL-2.0

//! A context: one open file of `/dev/memreg`, bound to the address space of
//! the process that opened it, its table of registrations and the operations
//! on them.
//!
//! # Lock order
//!
//! 1. `ContextShared::table` (spinlock): the registration table, the
//!    context's counters, the list of registrations awaiting teardown, and
//!    each registration's reference count (`LockedBy` the table).
//! 2. `Registration::state` (spinlock): a registration's pages, charges and
//!    notifier subscription; `live` changes under it.
//!
//! The MMU notifier callback takes both, and it runs under the memory
//! management code's locks (`mmap_lock`, `i_mmap_rwsem`, the notifier's own
//! lockdep map), so while one of them is held nothing may allocate with
//! `GFP_KERNEL`, sleep, fault on user memory or take `mmap_lock`. Everything a
//! registration needs is allocated before the table lock is taken; copies to
//! and from user memory happen outside the locks, through a bounce buffer.
//!
//! # Deferred work
//!
//! The callback cannot unpin pages or remove a notifier, so it puts the
//! registration it ended on the table's pending list and queues the
//! context's one work item on the kernel's unbound workqueue (queueing an item
//! already queued does nothing, so a burst of invalidations costs one run).
//! The release of the file tears down what is still pending itself and
//! cancels the work item, so nothing of the context outlives it.

pub(crate) mod table;

use crate::{
    accounting::Charges,
    defs,
    error::OpResult,
    key::KeyPair,
    registration::{Parts, Refused, Registration, RegistrationInfo},
    stats::{Stats, GLOBAL_CONTEXTS},
};
use kernel::{
    impl_has_work,
    mm::{mmu_notifier::IntervalNotifier, pin::PinnedPages, Mm},
    new_spinlock, new_work,
    page::PAGE_SIZE,
    prelude::*,
    random::{get_random_u32, get_random_u64},
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
        Arc, SpinLock,
    },
    task::resched::{cond_resched, fatal_signal_pending},
    uaccess::{UserPtr, UserSlice},
    workqueue::{self, cancel::cancel_sync, Work, WorkItem},
};
use table::{Nodes, RegistrationTable};

/// Times a registration is retried when an invalidation races with pinning.
const REGISTER_RETRIES: u32 = 3;

/// Bytes moved under the registration lock at a time by COPY.
const COPY_CHUNK: usize = 16 * 1024;

/// The part of a context that registrations refer to.
#[pin_data]
pub(crate) struct ContextShared {
    /// The address space this context serves.
    mm: ARef<Mm>,
    #[pin]
    pub(crate) table: SpinLock<RegistrationTable>,
    /// Tears down registrations ended by invalidation.
    #[pin]
    work: Work<ContextShared>,
    /// The next key sequence number.
    next_seq: Atomic<u64>,
}

impl_has_work! { impl HasWork<Self> for ContextShared { self.work } }

impl WorkItem for ContextShared {
    type Pointer = Arc<ContextShared>;

    fn run(this: Arc<ContextShared>) {
        this.drain_deferred();
    }
}

impl ContextShared {
    /// Queues the context's deferred work. Neither allocates nor sleeps.
    pub(crate) fn schedule_teardown(this: &Arc<Self>) {
        // Already queued: the queued run will see the new registration too.
        let _ = workqueue::system_unbound().enqueue(this.clone());
    }

    /// Tears down every registration awaiting it. Process context.
    fn drain_deferred(&self) {
        loop {
            let next = self.table.lock().next_deferred();
            let Some(registration) = next else {
                break;
            };
            registration.teardown();
            cond_resched();
        }
    }
}

/// What a REGISTER returned.
pub(crate) struct Registered {
    keys: KeyPair,
    addr: u64,
    length: u64,
    /// Served by a registration that was already live.
    hit: bool,
    /// The context's peak of pinned pages before a miss, to roll back to.
    peak_before: u64,
}

/// One open file of `/dev/memreg`.
pub(crate) struct Context {
    shared: Arc<ContextShared>,
}

impl Context {
    /// Creates a context bound to the calling process's address space.
    pub(crate) fn new() -> Result<Self> {
        let current = kernel::current!();
        let mm = current.mm().ok_or(EINVAL)?;
        let shared = Arc::pin_init(
            pin_init!(ContextShared {
                mm: ARef::from(&**mm),
                table <- new_spinlock!(RegistrationTable::new(), "memreg::ContextShared::table"),
                work <- new_work!("memreg::ContextShared::work"),
                next_seq: Atomic::new(1),
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        GLOBAL_CONTEXTS.add(1, Relaxed);
        Ok(Self { shared })
    }

    /// Fails with `EPERM` unless the caller runs in the context's address
    /// space: a child that inherited the file, or a process it was passed to,
    /// cannot use it.
    pub(crate) fn check_owner(&self) -> Result {
        let current = kernel::current!();
        match current.mm() {
            Some(mm) if core::ptr::eq(mm.as_raw(), self.shared.mm.as_raw()) => Ok(()),
            _ => Err(EPERM),
        }
    }

    /// REGISTER: fills in the keys of the registration serving the range,
    /// pinning a new one if none does. Returns what to pass to
    /// [`Context::unregister`] if the result cannot reach the caller.
    pub(crate) fn register_ioctl(&self, req: &mut defs::Register) -> OpResult<Registered> {
        if req.flags != 0 {
            return Err(EINVAL.into());
        }
        let done = self.register(req.addr, req.length, req.access)?;
        req.lkey = done.keys.lkey;
        req.rkey = done.keys.rkey;
        req.region_addr = done.addr;
        req.region_length = done.length;
        req.flags = if done.hit { defs::REGISTER_CACHED } else { 0 };
        Ok(done)
    }

    /// Undoes a REGISTER whose result could not reach the caller: drops the
    /// reference it took and takes back the counters it moved, so that the
    /// failed call changed nothing.
    pub(crate) fn unregister(&self, done: &Registered) {
        let ended = {
            let mut t = self.shared.table.lock();
            if done.hit {
                t.stats.cache_hits = t.stats.cache_hits.saturating_sub(1);
            }
            let Some(registration) = t.get(done.keys.lkey).cloned() else {
                // An invalidation ended it meanwhile: its counters are the invalidation's.
                if !done.hit {
                    t.stats.cache_misses = t.stats.cache_misses.saturating_sub(1);
                }
                return;
            };
            if registration.put(&mut t) > 0 {
                return;
            }
            let ended = Registration::unpublish(&mut t, registration.info.keys.seq);
            if !done.hit {
                t.stats.cache_misses = t.stats.cache_misses.saturating_sub(1);
                t.stats.pages_pinned_peak = done.peak_before.max(t.stats.pages_pinned);
            }
            ended
        };
        if let Some(r) = ended {
            r.teardown();
        }
    }

    fn register(&self, addr: u64, length: u64, access: u32) -> OpResult<Registered> {
        if access == 0 || access & !defs::ACCESS_ALL != 0 || length == 0 {
            return Err(EINVAL.into());
        }
        if length > defs::MAX_LENGTH {
            return Err(E2BIG.into());
        }
        let end = addr.checked_add(length).ok_or(EINVAL)?;
        let max = crate::max_registrations();

        // The cache: a live registration covering the range with enough access.
        let peak_before = {
            let mut t = self.shared.table.lock();
            if let Some(registration) = t.find_cover(addr, length, access).cloned() {
                registration.get(&mut t)?;
                t.stats.cache_hits += 1;
                return Ok(Registered {
                    keys: registration.info.keys,
                    addr: registration.info.addr,
                    length: registration.info.length,
                    hit: true,
                    peak_before: 0,
                });
            }
            if t.len() >= max || !t.may_overlap_range(addr, length) {
                return Err(EDQUOT.into());
            }
            t.stats.pages_pinned_peak
        };
        // Registrations ended by invalidation no longer count against any limit but stay
        // pinned until torn down: tear this context's down now, so that a loop of REGISTER
        // and munmap cannot pin more than its limits allow while the worker catches up.
        self.shared.drain_deferred();

        let page_addr = usize::try_from(addr).map_err(|_| EFAULT)? & !(PAGE_SIZE - 1);
        let page_end = usize::try_from(end)
            .ok()
            .and_then(|e| e.checked_next_multiple_of(PAGE_SIZE))
            .ok_or(EFAULT)?;
        let npages = (page_end - page_addr) / PAGE_SIZE;
        let seq = self.shared.next_seq.fetch_add(1, Relaxed);
        let keys = KeyPair::new(seq, get_random_u32(), get_random_u64()).ok_or(ENOSPC)?;
        let info = RegistrationInfo {
            addr,
            length,
            access,
            npages,
            keys,
        };

        // Everything the table needs is allocated before its lock is taken.
        let mut nodes = Nodes::new()?;
        let mut charges = Charges::for_current()?;
        let registration = Registration::new(self.shared.clone(), info)?;
        let current = kernel::current!();
        let mm = current.mm().ok_or(EPERM)?;
        // The notifier goes in before the pages are pinned, so that an invalidation racing
        // with pinning is seen by the sequence check when publishing.
        let mut subscription =
            IntervalNotifier::insert(registration.clone(), mm, page_addr, npages * PAGE_SIZE)?;

        for _ in 0..REGISTER_RETRIES {
            let seq = registration.notifier().read_begin();
            let pages = PinnedPages::pin_current(page_addr, npages, info.writable(), &mut |n| {
                charges.charge(n)
            })?;
            let parts = Parts {
                pages,
                charges,
                subscription,
                nodes,
            };
            let refused = {
                let mut t = self.shared.table.lock();
                match Registration::publish(&registration, &mut t, seq, max, parts) {
                    Ok(()) => {
                        return Ok(Registered {
                            keys,
                            addr,
                            length,
                            hit: false,
                            peak_before,
                        })
                    }
                    Err(Refused::Covered(winner, parts)) => {
                        // A concurrent REGISTER published a registration serving ours: use it.
                        t.stats.cache_hits += 1;
                        let info = winner.info;
                        drop(t);
                        // Our parts go outside the locks: unpinned, uncharged, the notifier
                        // removed.
                        drop(parts);
                        return Ok(Registered {
                            keys: info.keys,
                            addr: info.addr,
                            length: info.length,
                            hit: true,
                            peak_before: 0,
                        });
                    }
                    Err(refused) => refused,
                }
            };
            match refused {
                Refused::Raced(parts) => {
                    // Something changed the range while we pinned it: pin again.
                    let Parts {
                        pages,
                        charges: mut c,
                        subscription: s,
                        nodes: n,
                    } = parts;
                    c.release();
                    drop(pages);
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
                Refused::Covered(_, parts) => {
                    drop(parts);
                    return Err(EAGAIN.into());
                }
            }
        }
        Err(EAGAIN.into())
    }

    /// DEREGISTER: drops one reference; the last one ends the registration.
    pub(crate) fn deregister(&self, req: &defs::Deregister) -> OpResult {
        defs::check_reserved(&[req.reserved])?;
        let ended = {
            let mut t = self.shared.table.lock();
            let registration = t.get(req.key).ok_or(ENOENT)?.clone();
            if registration.put(&mut t) > 0 {
                return Ok(());
            }
            t.stats.deregistrations += 1;
            Registration::unpublish(&mut t, registration.info.keys.seq)
        };
        if let Some(r) = ended {
            r.teardown();
        }
        Ok(())
    }

    /// QUERY: describes the registration whose local key is `req.key`.
    pub(crate) fn query(&self, req: &mut defs::Query) -> OpResult {
        defs::check_reserved(&req.reserved)?;
        let (registration, refcount) = {
            let t = self.shared.table.lock();
            let r = t.get(req.key).ok_or(ENOENT)?.clone();
            let refs = r.refs(&t);
            (r, refs)
        };
        let info = registration.info;
        let key = req.key;
        *req = defs::zeroed();
        req.key = key;
        req.addr = info.addr;
        req.length = info.length;
        req.access = info.access;
        req.state = if registration.is_live() {
            defs::STATE_VALID
        } else {
            0
        };
        req.pages = info.npages as u64;
        req.extents = registration.extents();
        req.refcount = refcount;
        Ok(())
    }

    /// STATS: the context's counters.
    pub(crate) fn stats(&self) -> Stats {
        self.shared.table.lock().stats.clone()
    }

    /// COPY: moves data between a user buffer and a registered range, through
    /// the registration's translation entries only.
    ///
    /// Data moves in order, [`COPY_CHUNK`] bytes at a time. When the user
    /// buffer faults (`EFAULT`), the registration ends (`ENOENT`) or a fatal
    /// signal arrives (`EINTR`) part way, the chunks before the failing one
    /// have moved and nothing after it has; the failing chunk itself may have
    /// moved in part when copying to the user buffer.
    pub(crate) fn copy(&self, req: &defs::Copy) -> OpResult {
        defs::check_reserved(&[req.reserved])?;
        if req.flags != 0
            || (req.direction != defs::COPY_TO_REGION && req.direction != defs::COPY_FROM_REGION)
        {
            return Err(EINVAL.into());
        }
        let registration = {
            let t = self.shared.table.lock();
            t.get(req.key).ok_or(ENOENT)?.clone()
        };
        let to_registration = req.direction == defs::COPY_TO_REGION;
        let need = if to_registration {
            defs::ACCESS_LOCAL_WRITE
        } else {
            defs::ACCESS_LOCAL_READ
        };
        if registration.info.access & need == 0 {
            return Err(EACCES.into());
        }
        let end = req.offset.checked_add(req.length).ok_or(EINVAL)?;
        if end > registration.info.length {
            return Err(EINVAL.into());
        }
        let length = usize::try_from(req.length).map_err(|_| EINVAL)?;
        if length == 0 {
            return Ok(());
        }
        let buf = usize::try_from(req.buf).map_err(|_| EFAULT)?;
        let mut bounce = KVVec::from_elem(0u8, length.min(COPY_CHUNK), GFP_KERNEL)?;
        let user = UserSlice::new(UserPtr::from_addr(buf), length);
        let (mut reader, mut writer) = user.reader_writer();
        let mut done = 0usize;
        while done < length {
            if fatal_signal_pending() {
                return Err(EINTR.into());
            }
            let n = (length - done).min(COPY_CHUNK);
            let chunk = bounce.get_mut(..n).ok_or(EINVAL)?;
            let offset = req.offset + done as u64;
            if to_registration {
                reader.read_slice(chunk)?;
                registration.copy_chunk(offset, chunk, true)?;
            } else {
                registration.copy_chunk(offset, chunk, false)?;
                writer.write_slice(chunk)?;
            }
            done += n;
            cond_resched();
        }
        Ok(())
    }
}

impl Drop for Context {
    /// Releases the file: ends every registration, tears down those still
    /// awaiting deferred teardown and cancels the deferred work, so nothing of
    /// this context remains.
    fn drop(&mut self) {
        loop {
            let ended = {
                let mut t = self.shared.table.lock();
                match t.any() {
                    Some(seq) => Registration::unpublish(&mut t, seq),
                    None => break,
                }
            };
            if let Some(r) = ended {
                r.teardown();
            }
            cond_resched();
        }
        // Every notifier is removed now, so nothing is queued for teardown any more.
        self.shared.drain_deferred();
        cancel_sync(&self.shared);
        GLOBAL_CONTEXTS.fetch_sub(1, Relaxed);
    }
}
