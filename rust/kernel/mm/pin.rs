// SPDX-License-Identifier: GPL-2.0

//! Long-term pinning of user pages.
//!
//! [`PinnedPages`] pins a page-aligned range of the current process's address
//! space with `FOLL_LONGTERM` (and `FOLL_WRITE` when it is to be written), so
//! the pages can be neither migrated nor reclaimed while pinned. The caller
//! charges each batch of pages before it is kept, typically to a
//! [`LockedMemory`] (the user's locked memory against `RLIMIT_MEMLOCK`, as
//! io_uring and RDMA charge pinned pages), so only pages actually pinned are
//! ever charged. The pages are described as [`Extent`]s: runs of
//! physically contiguous pages, the translation entries a device (or a software
//! adapter) works with. A transparent huge page gives one extent, not 512.
//!
//! The pinned memory is reached only through those extents, never through the
//! process's page tables. Dropping the object unpins the pages, marking them
//! dirty when they were pinned writable. Charges are the caller's to release,
//! which it may do earlier than the unpinning (when the pages stop being
//! used, say) since releasing a charge never sleeps.
//!
//! C header: [`include/linux/mm.h`](srctree/include/linux/mm.h)
#![cfg(CONFIG_MEMREG_SUPPORT)]

use crate::{
    alloc::{Flags, KVVec},
    bindings,
    error::{code::*, Error, Result},
    mm::Mm,
    page::{BorrowedPage, Page, PAGE_SHIFT, PAGE_SIZE},
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Atomic, Relaxed},
    },
    task::resched::cond_resched,
};
use core::ptr::NonNull;

/// Pages asked of `pin_user_pages_fast` in one call.
const PIN_BATCH: usize = 512;

// The C helper writes `Extent`s as `struct rust_pin_extent { u64 pfn; u32 first; u32 pages; }`.
const _: () = {
    assert!(core::mem::size_of::<Extent>() == 16);
    assert!(core::mem::offset_of!(Extent, pfn) == 0);
    assert!(core::mem::offset_of!(Extent, first) == 8);
    assert!(core::mem::offset_of!(Extent, pages) == 12);
};

/// Pages pinned with a batch array on the stack rather than allocated.
const STACK_BATCH: usize = 16;

/// Pages unpinned between two chances to reschedule.
const UNPIN_BATCH: u32 = 1024;

/// Extents stored inside [`Extents`] before an array is allocated.
pub const INLINE_EXTENTS: usize = 4;

/// A run of physically contiguous pinned pages: one translation entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Extent {
    /// Page frame number of the first page.
    pub pfn: u64,
    /// Index of the first page within the pinned range.
    pub first: u32,
    /// Number of pages.
    pub pages: u32,
}

/// An ordered list of [`Extent`]s that coalesces physically contiguous pages.
///
/// Up to [`INLINE_EXTENTS`] extents are held inline; more spill into an
/// allocated array.
///
/// # Examples
///
/// ```
/// use kernel::mm::pin::{Extent, Extents, INLINE_EXTENTS};
///
/// let mut ext = Extents::new();
/// // Pages 100..=103 are contiguous, then 200, then 201 and 7.
/// for pfn in [100, 101, 102, 103, 200, 201, 7] {
///     ext.push_page(pfn)?;
/// }
/// assert_eq!(ext.pages(), 7);
/// assert_eq!(
///     ext.as_slice(),
///     &[
///         Extent { pfn: 100, first: 0, pages: 4 },
///         Extent { pfn: 200, first: 4, pages: 2 },
///         Extent { pfn: 7, first: 6, pages: 1 },
///     ]
/// );
/// assert_eq!(ext.find(5), Some(1));
/// assert_eq!(ext.find(6), Some(2));
/// assert_eq!(ext.find(7), None);
///
/// // Scattered pages spill past the inline capacity into an array.
/// let mut ext = Extents::new();
/// for i in 0..(INLINE_EXTENTS as u64 + 3) {
///     ext.push_page(1000 + 2 * i)?;
/// }
/// assert_eq!(ext.as_slice().len(), INLINE_EXTENTS + 3);
/// // Shrinking the array keeps the extents.
/// ext.shrink();
/// assert_eq!(ext.as_slice().len(), INLINE_EXTENTS + 3);
/// assert_eq!(ext.as_slice()[0], Extent { pfn: 1000, first: 0, pages: 1 });
/// assert_eq!(ext.find(INLINE_EXTENTS as u32 + 2).map(|i| ext.as_slice()[i].pfn),
///            Some(1000 + 2 * (INLINE_EXTENTS as u64 + 2)));
/// # Ok::<(), Error>(())
/// ```
pub struct Extents {
    inline: [Extent; INLINE_EXTENTS],
    inline_len: usize,
    // INVARIANT: Either `heap` is empty and the extents are `inline[..inline_len]`, or `heap`
    // holds all of them.
    heap: KVVec<Extent>,
    pages: u32,
}

impl Default for Extents {
    fn default() -> Self {
        Self::new()
    }
}

impl Extents {
    /// Creates an empty list; does not allocate.
    pub fn new() -> Self {
        Self {
            inline: [Extent::default(); INLINE_EXTENTS],
            inline_len: 0,
            heap: KVVec::new(),
            pages: 0,
        }
    }

    /// The last extent, if any.
    fn last_mut(&mut self) -> Option<&mut Extent> {
        if self.heap.is_empty() {
            self.inline[..self.inline_len].last_mut()
        } else {
            self.heap.last_mut()
        }
    }

    /// Total number of pages in all extents.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// The extents, in order of their first page.
    pub fn as_slice(&self) -> &[Extent] {
        if self.heap.is_empty() {
            &self.inline[..self.inline_len]
        } else {
            &self.heap
        }
    }

    /// Appends the page `pfn` as the next page of the range, extending the
    /// last extent when `pfn` follows it physically.
    ///
    /// Fails with `EINVAL` past `u32::MAX` pages and with `ENOMEM` when the
    /// array cannot grow; the list is unchanged then.
    pub fn push_page(&mut self, pfn: u64) -> Result {
        self.push_run(pfn, 1, true)
    }

    /// Appends the page `pfn`; it extends the last extent only when it
    /// follows it physically and `may_merge`. Callers that walk an extent
    /// through `struct page` pointers refuse merges where those pointers are
    /// not contiguous (memory sections without a virtual memory map).
    pub fn push_page_with(&mut self, pfn: u64, may_merge: bool) -> Result {
        self.push_run(pfn, 1, may_merge)
    }

    /// Makes room for `additional` more extents, so that as many pushes
    /// allocate nothing. Fails with `ENOMEM`; the list is unchanged then.
    pub fn reserve(&mut self, additional: usize) -> Result {
        if self.heap.is_empty() {
            if self.inline_len + additional <= INLINE_EXTENTS {
                return Ok(());
            }
            self.heap
                .reserve(
                    self.inline_len + additional.max(INLINE_EXTENTS),
                    GFP_KERNEL_ACCOUNT,
                )
                .map_err(|_| ENOMEM)?;
            self.heap
                .extend_from_slice(&self.inline[..self.inline_len], GFP_KERNEL_ACCOUNT)?;
            self.inline_len = 0;
            Ok(())
        } else {
            self.heap
                .reserve(additional, GFP_KERNEL_ACCOUNT)
                .map_err(|_| ENOMEM)
        }
    }

    /// Appends `pages` physically contiguous pages from `pfn`; they extend the
    /// last extent only when they follow it physically and `may_merge`.
    ///
    /// Fails with `EINVAL` for zero pages or past `u32::MAX` pages in all and
    /// with `ENOMEM` when the array cannot grow; the list is unchanged then.
    pub fn push_run(&mut self, pfn: u64, pages: u32, may_merge: bool) -> Result {
        if pages == 0 {
            return Err(EINVAL);
        }
        let first = self.pages;
        let next = first.checked_add(pages).ok_or(EINVAL)?;
        if let Some(last) = self.last_mut().filter(|_| may_merge) {
            if last.pfn.checked_add(u64::from(last.pages)) == Some(pfn) {
                last.pages += pages;
                self.pages = next;
                return Ok(());
            }
        }
        let extent = Extent { pfn, first, pages };
        if self.heap.is_empty() && self.inline_len < INLINE_EXTENTS {
            self.inline[self.inline_len] = extent;
            self.inline_len += 1;
        } else {
            self.reserve(1)?;
            self.heap.push(extent, GFP_KERNEL_ACCOUNT)?;
        }
        self.pages = next;
        Ok(())
    }

    /// Appends a batch of pinned `pages`, the next pages of the range;
    /// `prev` is the last page appended before (null for none). Consecutive
    /// pages join an extent where both their frame numbers and their `struct
    /// page`s are contiguous. The work per page is done by one C call.
    ///
    /// Fails with `EINVAL` past `u32::MAX` pages and with `ENOMEM` when the
    /// array cannot grow; the list is unchanged then.
    fn push_pinned(&mut self, pages: &[*mut bindings::page], prev: *mut bindings::page) -> Result {
        let n = pages.len();
        let total = u32::try_from(n)
            .ok()
            .and_then(|n| self.pages.checked_add(n))
            .ok_or(EINVAL)?;
        let prev_next_pfn = self
            .as_slice()
            .last()
            .map_or(0, |e| e.pfn + u64::from(e.pages)) as usize;
        let mut extend = 0usize;
        // Small lists stay inline: the helper writes into a buffer on the stack, copied in
        // after; larger ones get the extents straight into the array's spare capacity.
        let inline = self.heap.is_empty() && self.inline_len + n <= INLINE_EXTENTS;
        let mut on_stack = [Extent::default(); INLINE_EXTENTS];
        let out: *mut Extent = if inline {
            on_stack.as_mut_ptr()
        } else {
            self.reserve(n)?;
            let spare = self.heap.spare_capacity_mut();
            if spare.len() < n {
                return Err(ENOMEM);
            }
            spare.as_mut_ptr().cast()
        };
        // SAFETY: `pages` holds `n` valid pinned pages and `out` has room for `n` extents, laid
        // out as the helper's `struct rust_pin_extent` (asserted at the top of this file).
        let written = unsafe {
            bindings::pages_to_extents(
                pages.as_ptr(),
                n,
                prev,
                prev_next_pfn,
                self.pages,
                out.cast(),
                &mut extend,
            )
        }
        .min(n);
        // The leading pages that continue the last extent extend it; it lies below what the
        // helper wrote.
        if let Some(last) = self.last_mut() {
            last.pages += extend as u32;
        }
        if inline {
            for e in &on_stack[..written] {
                self.inline[self.inline_len] = *e;
                self.inline_len += 1;
            }
        } else {
            // SAFETY: The helper initialised the first `written` entries of the spare capacity.
            unsafe { self.heap.inc_len(written) };
        }
        self.pages = total;
        Ok(())
    }

    /// Gives back array space beyond what the extents use, when that is more
    /// than half of it.
    pub fn shrink(&mut self) {
        let len = self.heap.len();
        if len > 0 && self.heap.capacity() / 2 > len {
            // Shrinking only reallocates smaller; on failure the array stays as it was.
            let _ = self.heap.shrink_to(len, GFP_KERNEL_ACCOUNT);
        }
    }

    /// Index of the extent holding page `index` of the range.
    pub fn find(&self, index: u32) -> Option<usize> {
        let slice = self.as_slice();
        let pos = slice.partition_point(|e| e.first <= index);
        let i = pos.checked_sub(1)?;
        let e = &slice[i];
        (index - e.first < e.pages).then_some(i)
    }
}

/// Locked memory charged to a user and an address space.
///
/// Pages are charged to the user's `locked_vm` against the `RLIMIT_MEMLOCK`
/// of the task that created the charge, with a compare-and-exchange loop as
/// io_uring does, so a user cannot multiply the limit by opening more files or
/// running more processes. A task with `CAP_IPC_LOCK` is not limited. The
/// pages are also counted in the address space's `pinned_vm` (`VmPin` in
/// `/proc/PID/status`).
///
/// Releasing a charge only does atomic arithmetic: it may be done in atomic
/// context, such as an MMU notifier callback.
///
/// # Invariants
///
/// - `user` holds a reference on a `struct user_struct` (`get_uid`), released
///   on drop.
/// - `pages` pages are added to `mm`'s `pinned_vm` and, when `limited`, to
///   `user`'s `locked_vm`.
pub struct LockedMemory {
    user: NonNull<bindings::user_struct>,
    mm: ARef<Mm>,
    limited: bool,
    limit: usize,
    pages: usize,
}

// SAFETY: The user and address space are reference counted and only touched through atomics.
unsafe impl Send for LockedMemory {}
// SAFETY: Shared references only read `pages`.
unsafe impl Sync for LockedMemory {}

impl LockedMemory {
    /// Creates an empty charge for the calling task's user and address space,
    /// limited by its `RLIMIT_MEMLOCK` unless it has `CAP_IPC_LOCK`.
    ///
    /// Fails with `EFAULT` when the task has no address space.
    pub fn for_current() -> Result<Self> {
        let current = crate::current!();
        let mm = current.mm().ok_or(EFAULT)?;
        // SAFETY: `rlimit` reads the calling task's limits, always valid in process context.
        let limit = unsafe { bindings::rlimit(bindings::RLIMIT_MEMLOCK) } >> PAGE_SHIFT;
        // SAFETY: `capable` may be called from any process context.
        let limited = !unsafe { bindings::capable(bindings::CAP_IPC_LOCK as i32) };
        // SAFETY: The helper returns the current task's user with a new reference.
        let user = NonNull::new(unsafe { bindings::get_current_user() }).ok_or(EFAULT)?;
        // INVARIANT: We hold a reference on `user` and charged nothing yet.
        Ok(Self {
            user,
            mm: ARef::from(&**mm),
            limited,
            limit: limit as usize,
            pages: 0,
        })
    }

    /// Creates an empty charge for the same user and address space, with the
    /// same limit: for pages a worker charges later on the task's behalf.
    pub fn new_like(&self) -> Self {
        // SAFETY: By the type invariant `user` is alive; the helper takes a new reference (and
        // returns `user` itself).
        unsafe { bindings::get_uid(self.user.as_ptr()) };
        // INVARIANT: We hold a new reference on `user` and charged nothing yet.
        Self {
            user: self.user,
            mm: self.mm.clone(),
            limited: self.limited,
            limit: self.limit,
            pages: 0,
        }
    }

    /// The user's locked memory counter.
    fn locked_vm(&self) -> &Atomic<isize> {
        // SAFETY: By the type invariant `user` is alive while we hold it; the helper returns the
        // address of its `atomic_long_t locked_vm`, which has the layout of an `isize` and is
        // only accessed atomically.
        unsafe { Atomic::from_ptr(bindings::user_locked_vm(self.user.as_ptr()).cast()) }
    }

    /// Charges `pages` more pages. Fails with `ENOMEM`, charging nothing,
    /// when that would take the user past the limit.
    pub fn charge(&mut self, pages: usize) -> Result {
        let delta = isize::try_from(pages).map_err(|_| ENOMEM)?;
        if self.limited {
            let locked = self.locked_vm();
            let mut cur = locked.load(Relaxed);
            loop {
                let new = cur.checked_add(delta).ok_or(ENOMEM)?;
                if usize::try_from(new).map_or(true, |n| n > self.limit) {
                    return Err(ENOMEM);
                }
                match locked.cmpxchg(cur, new, Relaxed) {
                    Ok(_) => break,
                    Err(old) => cur = old,
                }
            }
        }
        // SAFETY: `self.mm` holds a reference on the `mm_struct`; the helper returns its
        // `pinned_vm` counter.
        unsafe { bindings::atomic64_add(delta as i64, bindings::mm_pinned_vm(self.mm.as_raw())) };
        // INVARIANT: `pages` more pages were added to both counters.
        self.pages += pages;
        Ok(())
    }

    /// The pages charged now.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// The user the pages are charged to, as a key: two charges have the
    /// same key exactly when they are charged to the same user, as long as
    /// both exist (it is the address of the user's `struct user_struct`,
    /// which each holds a reference on).
    pub fn user_key(&self) -> usize {
        self.user.as_ptr() as usize
    }

    /// Releases every page charged. Never sleeps.
    pub fn release(&mut self) {
        let pages = core::mem::take(&mut self.pages);
        if pages == 0 {
            return;
        }
        if self.limited {
            self.locked_vm().fetch_sub(pages as isize, Relaxed);
        }
        // SAFETY: As in `charge`; this undoes our own additions.
        unsafe { bindings::atomic64_sub(pages as i64, bindings::mm_pinned_vm(self.mm.as_raw())) };
    }
}

impl Drop for LockedMemory {
    fn drop(&mut self) {
        self.release();
        // SAFETY: By the type invariant we hold one reference on `user`, dropped once here.
        unsafe { bindings::free_uid(self.user.as_ptr()) };
    }
}

/// A long-term pinned range of user pages, described by its [`Extent`]s.
///
/// # Invariants
///
/// Every page of every extent in `extents` holds exactly one `FOLL_PIN`
/// reference taken by [`PinnedPages::pin_current`] (with `FOLL_WRITE` when
/// `writable`), released only by `Drop`; the `struct page`s of each extent are
/// contiguous, so `pfn_to_page(pfn) + i` is the extent's page `i`.
///
/// # Examples
///
/// Pins a fresh mapping of a KUnit test's address space, writes through the
/// pinned pages and reads the data back, without the page tables.
///
/// ```
/// use kernel::kunit_mm::UserMapping;
/// use kernel::mm::pin::{LockedMemory, PinnedPages};
/// use kernel::page::PAGE_SIZE;
///
/// let map = UserMapping::anonymous(16 * PAGE_SIZE)?;
/// let before = map.pinned_vm();
/// let mut locked = LockedMemory::for_current()?;
/// let pinned = PinnedPages::pin_current(map.addr(), 16, true, &mut |n| locked.charge(n))?;
/// assert_eq!(pinned.pages(), 16);
/// assert_eq!(locked.pages(), 16);
/// assert_eq!(map.pinned_vm(), before + 16);
/// assert!(!pinned.extents().is_empty() && pinned.extents().len() <= 16);
///
/// pinned.write(PAGE_SIZE - 2, b"memreg")?;
/// let mut back = [0u8; 6];
/// pinned.read(PAGE_SIZE - 2, &mut back)?;
/// assert_eq!(&back, b"memreg");
/// // Past the end fails and copies nothing.
/// assert_eq!(pinned.read(16 * PAGE_SIZE - 1, &mut back), Err(EINVAL));
///
/// // Page to page, across page boundaries on both sides; overlapping or
/// // out-of-range copies are refused and move nothing.
/// pinned.copy_to(PAGE_SIZE - 2, &pinned, 3 * PAGE_SIZE - 5, 6)?;
/// pinned.read(3 * PAGE_SIZE - 5, &mut back)?;
/// assert_eq!(&back, b"memreg");
/// assert_eq!(pinned.copy_to(0, &pinned, 1, 2), Err(EINVAL));
/// assert_eq!(pinned.copy_to(0, &pinned, 16 * PAGE_SIZE - 1, 2), Err(EINVAL));
///
/// // A charge like it, for the same user and address space, counts there too.
/// let mut like = locked.new_like();
/// like.charge(2)?;
/// assert_eq!(map.pinned_vm(), before + 18);
/// drop(like);
/// assert_eq!(map.pinned_vm(), before + 16);
///
/// // The charge can go before the pages do; it never sleeps.
/// locked.release();
/// assert_eq!(map.pinned_vm(), before);
/// drop(pinned);
///
/// // A refused charge unpins the batch: nothing stays pinned or charged.
/// assert_eq!(
///     PinnedPages::pin_current(map.addr(), 4, true, &mut |_| Err(ENOMEM)).err(),
///     Some(ENOMEM)
/// );
/// assert_eq!(map.pinned_vm(), before);
///
/// // A read-only pin refuses writes; an unmapped range cannot be pinned, and
/// // nothing is charged for it.
/// let ro = PinnedPages::pin_current(map.addr(), 1, false, &mut |n| locked.charge(n))?;
/// assert_eq!(ro.write(0, b"x"), Err(EACCES));
/// drop(ro);
/// locked.release();
/// let addr = map.addr();
/// drop(map);
/// let mut charged = 0;
/// let mut count = |n| {
///     charged += n;
///     Ok(())
/// };
/// assert_eq!(PinnedPages::pin_current(addr, 1, true, &mut count).err(), Some(EFAULT));
/// assert_eq!(charged, 0);
/// assert_eq!(PinnedPages::pin_current(addr + 1, 1, true, &mut |_| Ok(())).err(), Some(EINVAL));
/// # Ok::<(), Error>(())
/// ```
pub struct PinnedPages {
    extents: Extents,
    writable: bool,
    /// The pages are the kernel's own (see [`PinnedPages::from_pages`]):
    /// each holds one page reference of ours instead of a pin.
    owned: bool,
}

impl PinnedPages {
    /// Pins `npages` pages of the current task's address space from the
    /// page-aligned address `start`, for writing when `writable`.
    ///
    /// `charge` is called with the size of each batch of pages once they are
    /// pinned and before they are kept; when it fails, the batch and
    /// everything pinned before are unpinned and its error is returned. So
    /// the caller charges exactly what is pinned, and a range that cannot be
    /// pinned is never charged.
    ///
    /// Errors: `EINVAL` for zero pages, an unaligned start, more than
    /// `u32::MAX` pages or a range that wraps; `EFAULT` when the task has no
    /// address space or part of the range is not mapped with the access asked;
    /// what `pin_user_pages_fast` returns otherwise (`ENOMEM`, `EOPNOTSUPP`
    /// for mappings that cannot be pinned long-term, `EHWPOISON`, `EINTR`);
    /// `charge`'s error. Nothing stays pinned on error.
    ///
    /// May sleep, and reschedules between batches; takes the address space's
    /// `mmap_lock` when the fast path cannot pin a page, so no lock an MMU
    /// notifier takes may be held.
    pub fn pin_current(
        start: usize,
        npages: usize,
        writable: bool,
        charge: &mut dyn FnMut(usize) -> Result,
    ) -> Result<Self> {
        if npages == 0 || start % PAGE_SIZE != 0 || u32::try_from(npages).is_err() {
            return Err(EINVAL);
        }
        let len = npages.checked_mul(PAGE_SIZE).ok_or(EINVAL)?;
        start.checked_add(len).ok_or(EINVAL)?;
        if crate::current!().mm().is_none() {
            return Err(EFAULT);
        }
        let mut this = Self {
            extents: Extents::new(),
            writable,
            owned: false,
        };
        let cap = npages.min(PIN_BATCH);
        // Small registrations, the common case, pin without allocating a batch array.
        let mut on_stack = [core::ptr::null_mut::<bindings::page>(); STACK_BATCH];
        let mut on_heap;
        let batch: &mut [*mut bindings::page] = if cap <= STACK_BATCH {
            &mut on_stack[..cap]
        } else {
            on_heap = KVec::from_elem(core::ptr::null_mut(), cap, GFP_KERNEL)?;
            &mut on_heap[..]
        };
        let mut flags = bindings::FOLL_LONGTERM;
        if writable {
            flags |= bindings::FOLL_WRITE;
        }
        // The last page appended, to decide whether the next batch extends its extent.
        let mut prev: *mut bindings::page = core::ptr::null_mut();
        let mut done = 0;
        while done < npages {
            let want = (npages - done).min(PIN_BATCH);
            let addr = start + done * PAGE_SIZE;
            // SAFETY: `batch` has room for `want` page pointers; `want` fits in a `c_int`.
            let got = unsafe {
                bindings::pin_user_pages_fast(addr, want as i32, flags, batch.as_mut_ptr())
            };
            if got <= 0 {
                // `this` unpins what was pinned so far.
                return Err(if got < 0 {
                    Error::from_errno(got)
                } else {
                    EFAULT
                });
            }
            // `want` is at most the batch's length, so `got` is too.
            let got = (got as usize).min(want).min(batch.len());
            let pinned = &mut batch[..got];
            let pushed = charge(got).and_then(|()| this.extents.push_pinned(pinned, prev));
            if let Err(e) = pushed {
                // SAFETY: The `got` pages of `pinned` were pinned above and not handed to `this`
                // (a failed push changes nothing); each is unpinned once here.
                unsafe { bindings::unpin_user_pages(pinned.as_mut_ptr(), got) };
                return Err(e);
            }
            // INVARIANT: Every page appended to `extents` holds the pin taken above, and the
            // helper joins pages into an extent only where their `struct page`s are contiguous.
            prev = pinned.last().copied().unwrap_or(prev);
            done += got;
            cond_resched();
        }
        this.extents.shrink();
        Ok(this)
    }

    /// The number of pinned pages.
    pub fn pages(&self) -> usize {
        self.extents.pages() as usize
    }

    /// The translation entries, in address order.
    pub fn extents(&self) -> &[Extent] {
        self.extents.as_slice()
    }

    /// Whether the pages were pinned for writing.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Takes over pages the kernel allocated itself (a driver's buffers,
    /// which it may also map into a process), to use them through the same
    /// translation entries as pinned user pages. They are held by a page
    /// reference rather than a pin, always writable, and that reference is
    /// dropped with the result (the pages are freed once no mapping holds
    /// them either).
    ///
    /// # Examples
    ///
    /// ```
    /// use kernel::mm::pin::PinnedPages;
    /// use kernel::page::{Page, PAGE_SIZE};
    ///
    /// let mut pages = KVec::new();
    /// for _ in 0..3 {
    ///     pages.push(Page::alloc_page(GFP_KERNEL | __GFP_ZERO)?, GFP_KERNEL)?;
    /// }
    /// let owned = PinnedPages::from_pages(pages)?;
    /// assert_eq!(owned.pages(), 3);
    /// assert!(owned.writable());
    /// owned.write(PAGE_SIZE - 1, b"ab")?;
    /// let mut back = [0u8; 2];
    /// owned.read(PAGE_SIZE - 1, &mut back)?;
    /// assert_eq!(&back, b"ab");
    /// # Ok::<(), Error>(())
    /// ```
    pub fn from_pages(pages: KVec<Page>) -> Result<Self> {
        if pages.is_empty() || u32::try_from(pages.len()).is_err() {
            return Err(EINVAL);
        }
        let mut raw = KVec::with_capacity(pages.len(), GFP_KERNEL)?;
        for page in pages.iter() {
            raw.push(page.as_ptr(), GFP_KERNEL)?;
        }
        let mut this = Self {
            extents: Extents::new(),
            writable: true,
            owned: true,
        };
        this.extents.push_pinned(&raw, core::ptr::null_mut())?;
        // INVARIANT: Each page's reference, owned by its `Page` until now, moves to `this`;
        // `Drop` puts it.
        for page in pages {
            core::mem::forget(page);
        }
        this.extents.shrink();
        Ok(this)
    }

    /// Allocates `npages` pages the kernel owns with `flags` (`__GFP_ZERO`
    /// zeroes them in bulk), in runs of up to `1 << max_order` physically
    /// contiguous pages while the allocator has them at hand (it is not
    /// asked to reclaim or compact for a run), single pages otherwise. Each
    /// page of a run is its own, so each may be mapped on its own (see
    /// [`PinnedPages::for_each_owned_page`]). `EINVAL` for no page or more
    /// than `u32::MAX`, `ENOMEM`; nothing is kept on failure.
    pub fn alloc_owned(npages: usize, flags: Flags, max_order: u32) -> Result<Self> {
        if npages == 0 || u32::try_from(npages).is_err() {
            return Err(EINVAL);
        }
        let mut raw: KVec<*mut bindings::page> = KVec::with_capacity(npages, GFP_KERNEL)?;
        // A run larger than the buddy allocator hands out in one piece is refused by the
        // helper, and single pages follow.
        let mut order = max_order.min(u32::BITS - 1);
        let mut failed = false;
        while raw.len() < npages {
            let left = npages - raw.len();
            while order > 0 && (1usize << order) > left {
                order -= 1;
            }
            // SAFETY: An FFI call; the helper refuses an order above `MAX_PAGE_ORDER` and clears
            // `__GFP_COMP`, so a run is never a compound page it could not split.
            let page = unsafe { bindings::alloc_pages_split(flags.as_raw(), order) };
            if page.is_null() {
                if order == 0 {
                    failed = true;
                    break;
                }
                // No run at hand: single pages from here on.
                order = 0;
                continue;
            }
            for i in 0..(1usize << order) {
                // SAFETY: A buddy block is naturally aligned, at most `MAX_PAGE_ORDER` and never
                // crosses a memory section, so its `struct page`s are contiguous (as
                // `split_page` itself walks them); `i` is below its size.
                let _ = raw.push_within_capacity(unsafe { page.add(i) });
            }
        }
        let mut extents = Extents::new();
        if failed || extents.push_pinned(&raw, core::ptr::null_mut()).is_err() {
            for &page in raw.iter() {
                // SAFETY: Each page holds the one reference its allocation gave (a run was
                // split), released once here; `extents` does not release anything.
                unsafe { bindings::put_page(page) };
            }
            return Err(ENOMEM);
        }
        extents.shrink();
        // INVARIANT: Each page's one reference moves to the result, whose `Drop` puts it.
        Ok(Self {
            extents,
            writable: true,
            owned: true,
        })
    }

    /// Calls `f` with the index and the page of each page, in order, for
    /// pages the kernel owns ([`PinnedPages::from_pages`],
    /// [`PinnedPages::alloc_owned`]); `EINVAL` for user pages. Stops at the
    /// first error `f` returns, and returns it.
    pub fn for_each_owned_page(&self, mut f: impl FnMut(usize, &Page) -> Result) -> Result {
        if !self.owned {
            return Err(EINVAL);
        }
        let mut index = 0;
        for e in self.extents.as_slice() {
            for i in 0..e.pages {
                // SAFETY: By the type invariant the frame is a valid page we hold a reference on.
                let raw = unsafe { bindings::pfn_to_page((e.pfn + u64::from(i)) as usize) };
                let ptr = NonNull::new(raw).ok_or(EINVAL)?;
                // SAFETY: The page stays valid while `self` holds its reference, which outlives
                // the borrow passed to `f`.
                let page = unsafe { BorrowedPage::from_raw(ptr) };
                f(index, &page)?;
                index += 1;
            }
        }
        Ok(())
    }

    /// Fills `out` with the page frame numbers of the pinned pages from index
    /// `first` on. Fails with `EINVAL`, filling nothing, when they are not all
    /// pinned pages.
    pub fn pfns(&self, first: usize, out: &mut [u64]) -> Result {
        let end = first.checked_add(out.len()).ok_or(EINVAL)?;
        if end > self.pages() {
            return Err(EINVAL);
        }
        if out.is_empty() {
            return Ok(());
        }
        let extents = self.extents.as_slice();
        let mut idx = self.extents.find(first as u32).ok_or(EINVAL)?;
        for (i, slot) in out.iter_mut().enumerate() {
            // `first + i < pages() <= u32::MAX`.
            let index = (first + i) as u32;
            let mut e = extents.get(idx).ok_or(EINVAL)?;
            if index - e.first >= e.pages {
                idx += 1;
                e = extents.get(idx).ok_or(EINVAL)?;
            }
            *slot = e.pfn + u64::from(index - e.first);
        }
        Ok(())
    }

    /// Calls `op` with the kernel address and length of each piece of the
    /// byte range `offset..offset + len` of the pinned pages, in order, and the
    /// piece's offset from `offset`.
    fn for_each_piece(
        &self,
        offset: usize,
        len: usize,
        mut op: impl FnMut(*mut u8, usize, usize),
    ) -> Result {
        let end = offset.checked_add(len).ok_or(EINVAL)?;
        if end > self.pages() * PAGE_SIZE {
            return Err(EINVAL);
        }
        if len == 0 {
            return Ok(());
        }
        let extents = self.extents.as_slice();
        let mut idx = self
            .extents
            .find((offset / PAGE_SIZE) as u32)
            .ok_or(EINVAL)?;
        let mut pos = offset;
        while pos < end {
            let page_index = (pos / PAGE_SIZE) as u32;
            let e = extents.get(idx).ok_or(EINVAL)?;
            if page_index - e.first >= e.pages {
                idx += 1;
                continue;
            }
            let pfn = e.pfn + u64::from(page_index - e.first);
            let in_page = pos % PAGE_SIZE;
            let n = (PAGE_SIZE - in_page).min(end - pos);
            // SAFETY: By the type invariant `pfn` is a page we hold a pin on, so it is a valid,
            // allocated page for as long as `self` lives.
            let page = unsafe { bindings::pfn_to_page(pfn as usize) };
            // SAFETY: `page` is valid, see above; the mapping is undone below.
            let vaddr = unsafe { bindings::kmap_local_page(page) }.cast::<u8>();
            // SAFETY: `in_page < PAGE_SIZE`, so the result stays within the mapped page.
            op(unsafe { vaddr.add(in_page) }, n, pos - offset);
            // SAFETY: `vaddr` was returned by `kmap_local_page` above and is unmapped once, in
            // reverse order of mapping.
            unsafe { bindings::kunmap_local(vaddr.cast()) };
            pos += n;
        }
        Ok(())
    }

    /// Copies `src` into the pinned pages at byte `offset` of the range.
    ///
    /// Fails with `EACCES` when the pages were pinned read-only (they may be
    /// shared with other mappings) and with `EINVAL` when the range does not
    /// fit; nothing is written then.
    pub fn write(&self, offset: usize, src: &[u8]) -> Result {
        if !self.writable {
            return Err(EACCES);
        }
        self.for_each_piece(offset, src.len(), |dst, n, at| {
            // User space may access the page concurrently: benign for user memory (as with
            // DMA), and C `memcpy` forms no Rust reference to it.
            // SAFETY: `dst` is valid for `n` bytes of a mapped, pinned page; `at + n <= len`.
            unsafe { bindings::memcpy(dst.cast(), src.as_ptr().add(at).cast(), n) };
        })
    }

    /// Copies `len` bytes at byte `offset` of these pinned pages to byte
    /// `dst_offset` of the pinned pages `dst`, page to page, without a bounce
    /// buffer.
    ///
    /// Fails with `EACCES` when `dst` was pinned read-only and with `EINVAL`
    /// when a range does not fit; nothing is copied then. The two ranges may
    /// be of the same pages only if they do not overlap (else `EINVAL`).
    pub fn copy_to(
        &self,
        offset: usize,
        dst: &PinnedPages,
        dst_offset: usize,
        len: usize,
    ) -> Result {
        if !dst.writable {
            return Err(EACCES);
        }
        let end = offset.checked_add(len).ok_or(EINVAL)?;
        let dst_end = dst_offset.checked_add(len).ok_or(EINVAL)?;
        if end > self.pages() * PAGE_SIZE || dst_end > dst.pages() * PAGE_SIZE {
            return Err(EINVAL);
        }
        if core::ptr::eq(self, dst) && offset < dst_end && dst_offset < end {
            return Err(EINVAL);
        }
        let mut inner = Ok(());
        self.for_each_piece(offset, len, |src, n, at| {
            if inner.is_err() {
                return;
            }
            // `at + n <= len`, and the destination range fits: checked above.
            inner = dst.for_each_piece(dst_offset + at, n, |d, m, at2| {
                if m == PAGE_SIZE {
                    // Two whole pages (`m == PAGE_SIZE` means both pieces are page-aligned):
                    // the architecture's page copy.
                    // SAFETY: `d` and `src` (`at2 == 0`) are each a whole mapped, pinned page,
                    // distinct pages (checked above for the same pages); see `write` for
                    // concurrent user access.
                    unsafe { bindings::copy_page(d.cast(), src.cast()) };
                    return;
                }
                // Distinct bytes (checked above for the same pages), both mapped; see `write`
                // for concurrent user access.
                // SAFETY: `d` is valid for `m` bytes of a mapped, pinned page, and `src + at2`
                // for `m` bytes of another mapped page (`at2 + m <= n`).
                unsafe { bindings::memcpy(d.cast(), src.add(at2).cast(), m) };
            });
        })?;
        inner
    }

    /// Copies bytes at byte `offset` of the pinned range into `dst`.
    ///
    /// Fails with `EINVAL` when the range does not fit; nothing is read then.
    pub fn read(&self, offset: usize, dst: &mut [u8]) -> Result {
        let out = dst.as_mut_ptr();
        self.for_each_piece(offset, dst.len(), |src, n, at| {
            // SAFETY: `src` is valid for `n` bytes of a mapped, pinned page and `at + n <=
            // dst.len()`; see `write` for concurrent user access.
            unsafe { bindings::memcpy(out.add(at).cast(), src.cast(), n) };
        })
    }
}

impl Drop for PinnedPages {
    /// Unpins the pages (puts them, for pages the kernel owns), rescheduling
    /// every [`UNPIN_BATCH`] pages. May sleep.
    fn drop(&mut self) {
        if self.owned {
            for e in self.extents.as_slice() {
                for i in 0..e.pages {
                    // SAFETY: By the type invariant each page of `e` holds one reference of ours
                    // (taken by `alloc_pages` for a `Page`), released once here.
                    unsafe {
                        bindings::put_page(bindings::pfn_to_page((e.pfn + u64::from(i)) as usize))
                    };
                }
                cond_resched();
            }
            return;
        }
        for e in self.extents.as_slice() {
            let mut done = 0;
            while done < e.pages {
                let n = (e.pages - done).min(UNPIN_BATCH);
                // SAFETY: By the type invariant the frame is a page we hold a pin on.
                let page = unsafe { bindings::pfn_to_page((e.pfn + u64::from(done)) as usize) };
                // SAFETY: By the type invariant each page of `e` holds one pin taken by us, and
                // the extent's pages are contiguous both physically and as `struct page`s, as
                // `unpin_user_page_range_dirty_lock` walks them; pages `done..done + n` lie
                // within the extent and each pin is released once here.
                unsafe {
                    bindings::unpin_user_page_range_dirty_lock(page, n as usize, self.writable)
                };
                done += n;
                cond_resched();
            }
        }
    }
}
