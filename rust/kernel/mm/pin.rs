// SPDX-License-Identifier: GPL-2.0

//! Long-term pinning of user pages.
//!
//! [`PinnedPages`] pins a page-aligned range of the current process's address
//! space with `FOLL_LONGTERM` (and `FOLL_WRITE` when it is to be written), so
//! the pages can be neither migrated nor reclaimed while pinned. It charges
//! them to the address space's `pinned_vm` against `RLIMIT_MEMLOCK` (unless the
//! caller has `CAP_IPC_LOCK`), and describes them as [`Extent`]s: runs of
//! physically contiguous pages, the translation entries a device (or a software
//! adapter) works with. A transparent huge page gives one extent, not 512.
//!
//! The pinned memory is reached only through those extents, never through the
//! process's page tables. Dropping the object unpins the pages, marking them
//! dirty when they were pinned writable, and uncharges `pinned_vm`.
//!
//! C header: [`include/linux/mm.h`](srctree/include/linux/mm.h)

use crate::{
    alloc::KVVec,
    bindings,
    error::{code::*, Error, Result},
    mm::Mm,
    page::{PAGE_SHIFT, PAGE_SIZE},
    prelude::*,
    sync::aref::ARef,
};

/// Pages asked of `pin_user_pages_fast` in one call.
const PIN_BATCH: usize = 512;

/// Extents stored inside [`Extents`] before an array is allocated.
pub const INLINE_EXTENTS: usize = 4;

/// A run of physically contiguous pinned pages: one translation entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
        self.push_page_with(pfn, true)
    }

    /// Appends the page `pfn`; it extends the last extent only when it
    /// follows it physically and `may_merge`. Callers that walk an extent
    /// through `struct page` pointers refuse merges where those pointers are
    /// not contiguous (memory sections without a virtual memory map).
    pub fn push_page_with(&mut self, pfn: u64, may_merge: bool) -> Result {
        let first = self.pages;
        let next = first.checked_add(1).ok_or(EINVAL)?;
        let last = if self.heap.is_empty() {
            self.inline[..self.inline_len].last_mut()
        } else {
            self.heap.last_mut()
        };
        if let Some(last) = last.filter(|_| may_merge) {
            if last.pfn.checked_add(u64::from(last.pages)) == Some(pfn) {
                last.pages += 1;
                self.pages = next;
                return Ok(());
            }
        }
        let extent = Extent {
            pfn,
            first,
            pages: 1,
        };
        if self.heap.is_empty() && self.inline_len < INLINE_EXTENTS {
            self.inline[self.inline_len] = extent;
            self.inline_len += 1;
        } else {
            if self.heap.is_empty() {
                self.heap
                    .reserve(2 * INLINE_EXTENTS, GFP_KERNEL)
                    .map_err(|_| ENOMEM)?;
                self.heap
                    .extend_from_slice(&self.inline[..self.inline_len], GFP_KERNEL)?;
            }
            self.heap.push(extent, GFP_KERNEL)?;
        }
        self.pages = next;
        Ok(())
    }

    /// Gives back array space beyond what the extents use, when that is more
    /// than half of it.
    pub fn shrink(&mut self) {
        let len = self.heap.len();
        if len > 0 && self.heap.capacity() / 2 > len {
            // Shrinking only reallocates smaller; on failure the array stays as it was.
            let _ = self.heap.shrink_to(len, GFP_KERNEL);
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

/// A charge of pages to an address space's `pinned_vm`.
///
/// # Invariants
///
/// `pages` pages were added to `mm`'s `pinned_vm` by [`PinnedVmCharge::new`]
/// and are subtracted when this is dropped.
struct PinnedVmCharge {
    mm: ARef<Mm>,
    pages: i64,
}

impl PinnedVmCharge {
    /// Charges `pages` to `mm`, failing with `ENOMEM` when that would take it
    /// past the caller's `RLIMIT_MEMLOCK` and the caller lacks `CAP_IPC_LOCK`.
    fn new(mm: &Mm, pages: usize) -> Result<Self> {
        let pages = i64::try_from(pages).map_err(|_| ENOMEM)?;
        // SAFETY: `rlimit` reads the calling task's limits, which are always valid in process
        // context.
        let limit = unsafe { bindings::rlimit(bindings::RLIMIT_MEMLOCK) } >> PAGE_SHIFT;
        // SAFETY: `mm` is a valid `mm_struct` for the duration of the borrow; the helper returns
        // the address of its `pinned_vm` counter.
        let pinned_vm = unsafe { bindings::mm_pinned_vm(mm.as_raw()) };
        // SAFETY: `pinned_vm` points at a valid `atomic64_t`, see above.
        let now = unsafe { bindings::atomic64_add_return(pages, pinned_vm) };
        // SAFETY: `capable` may be called from any process context.
        if u64::try_from(now).unwrap_or(u64::MAX) > limit as u64
            && !unsafe { bindings::capable(bindings::CAP_IPC_LOCK as i32) }
        {
            // SAFETY: As above; this undoes our own addition.
            unsafe { bindings::atomic64_sub(pages, pinned_vm) };
            return Err(ENOMEM);
        }
        // INVARIANT: We added `pages` to `pinned_vm` above.
        Ok(Self {
            mm: ARef::from(mm),
            pages,
        })
    }
}

impl Drop for PinnedVmCharge {
    fn drop(&mut self) {
        // SAFETY: `self.mm` holds a reference on the `mm_struct` (`mmgrab`), so it is valid, and
        // by the type invariant we added `pages` to its `pinned_vm`.
        unsafe { bindings::atomic64_sub(self.pages, bindings::mm_pinned_vm(self.mm.as_raw())) };
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
/// use kernel::mm::pin::PinnedPages;
/// use kernel::page::PAGE_SIZE;
///
/// let map = UserMapping::anonymous(16 * PAGE_SIZE)?;
/// let before = map.pinned_vm();
/// let pinned = PinnedPages::pin_current(map.addr(), 16, true)?;
/// assert_eq!(pinned.pages(), 16);
/// assert_eq!(map.pinned_vm(), before + 16);
/// assert!(pinned.extents().len() >= 1 && pinned.extents().len() <= 16);
///
/// pinned.write(PAGE_SIZE - 2, b"memreg")?;
/// let mut back = [0u8; 6];
/// pinned.read(PAGE_SIZE - 2, &mut back)?;
/// assert_eq!(&back, b"memreg");
/// // Past the end fails and copies nothing.
/// assert_eq!(pinned.read(16 * PAGE_SIZE - 1, &mut back), Err(EINVAL));
///
/// drop(pinned);
/// assert_eq!(map.pinned_vm(), before);
///
/// // A read-only pin refuses writes; an unmapped range cannot be pinned.
/// let ro = PinnedPages::pin_current(map.addr(), 1, false)?;
/// assert_eq!(ro.write(0, b"x"), Err(EACCES));
/// drop(ro);
/// let addr = map.addr();
/// drop(map);
/// assert_eq!(PinnedPages::pin_current(addr, 1, true).err(), Some(EFAULT));
/// assert_eq!(PinnedPages::pin_current(addr + 1, 1, true).err(), Some(EINVAL));
/// # Ok::<(), Error>(())
/// ```
pub struct PinnedPages {
    extents: Extents,
    writable: bool,
    _charge: PinnedVmCharge,
}

impl PinnedPages {
    /// Pins `npages` pages of the current task's address space from the
    /// page-aligned address `start`, for writing when `writable`.
    ///
    /// Errors: `EINVAL` for zero pages, an unaligned start, more than
    /// `u32::MAX` pages or a range that wraps; `EFAULT` when the task has no
    /// address space or part of the range is not mapped with the access asked;
    /// `ENOMEM` past `RLIMIT_MEMLOCK` or when memory runs out. Nothing stays
    /// pinned or charged on error.
    ///
    /// May sleep; takes the address space's `mmap_lock` when the fast path
    /// cannot pin a page, so no lock an MMU notifier takes may be held.
    pub fn pin_current(start: usize, npages: usize, writable: bool) -> Result<Self> {
        if npages == 0 || start % PAGE_SIZE != 0 || u32::try_from(npages).is_err() {
            return Err(EINVAL);
        }
        let len = npages.checked_mul(PAGE_SIZE).ok_or(EINVAL)?;
        start.checked_add(len).ok_or(EINVAL)?;
        let current = crate::current!();
        let mm = current.mm().ok_or(EFAULT)?;
        let charge = PinnedVmCharge::new(mm, npages)?;
        let mut this = Self {
            extents: Extents::new(),
            writable,
            _charge: charge,
        };
        let cap = npages.min(PIN_BATCH);
        let mut batch = KVec::<*mut bindings::page>::with_capacity(cap, GFP_KERNEL)?;
        let mut pfns = KVec::<usize>::with_capacity(cap, GFP_KERNEL)?;
        let mut flags = bindings::FOLL_LONGTERM;
        if writable {
            flags |= bindings::FOLL_WRITE;
        }
        // The last page pushed, to decide whether the next one extends its extent.
        let mut last: Option<(u64, *mut bindings::page)> = None;
        let mut done = 0;
        while done < npages {
            let want = (npages - done).min(PIN_BATCH);
            let addr = start + done * PAGE_SIZE;
            // SAFETY: `batch` has room for `want` page pointers; `want` fits in a `c_int`.
            let got = unsafe {
                bindings::pin_user_pages_fast(addr, want as i32, flags, batch.as_mut_ptr())
            };
            if got <= 0 {
                // `this` unpins and uncharges what was pinned so far.
                return Err(if got < 0 {
                    Error::from_errno(got)
                } else {
                    EFAULT
                });
            }
            let got = (got as usize).min(want);
            // SAFETY: The first `got` entries of `batch` are valid pinned pages, and `pfns` has
            // room for `got` frame numbers, which the helper writes.
            unsafe { bindings::pages_to_pfns(batch.as_ptr(), pfns.as_mut_ptr(), got) };
            for i in 0..got {
                // SAFETY: `pin_user_pages_fast` filled, and the helper translated, `got` entries.
                let (page, pfn) =
                    unsafe { (batch.as_ptr().add(i).read(), pfns.as_ptr().add(i).read()) };
                let pfn = pfn as u64;
                // A page extends the previous extent when both its frame number and its
                // `struct page` follow the previous page's: unpinning walks `struct page`s.
                let merge = last.is_some_and(|(lpfn, lpage)| {
                    lpfn.checked_add(1) == Some(pfn) && lpage.wrapping_add(1) == page
                });
                last = Some((pfn, page));
                if let Err(e) = this.extents.push_page_with(pfn, merge) {
                    // SAFETY: Entries `i..got` of `batch` are pages pinned above and not yet
                    // owned by `this`; each is unpinned once here.
                    unsafe { bindings::unpin_user_pages(batch.as_mut_ptr().add(i), got - i) };
                    return Err(e);
                }
            }
            // INVARIANT: Every page pushed into `extents` holds the pin taken above, and the
            // pages of each extent have contiguous `struct page`s.
            done += got;
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
    fn drop(&mut self) {
        for e in self.extents.as_slice() {
            // SAFETY: By the type invariant each page of `e` holds one pin taken by us, and the
            // extent's pages are contiguous both physically and as `struct page`s, as
            // `unpin_user_page_range_dirty_lock` walks them; each pin is released once here.
            unsafe {
                bindings::unpin_user_page_range_dirty_lock(
                    bindings::pfn_to_page(e.pfn as usize),
                    e.pages as usize,
                    self.writable,
                )
            };
        }
    }
}
