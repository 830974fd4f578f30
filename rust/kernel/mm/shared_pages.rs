// SPDX-License-Identifier: GPL-2.0

//! Pages the kernel and user space share: the kernel's own pages, mapped
//! into a process read-only (state the kernel publishes) or read-write
//! (rings user space posts into).
//!
//! A driver that shares state with user space without system calls (state
//! words, event and request rings) allocates [`SharedPages`], accesses them
//! with atomic loads and stores only, and maps them into a process from its
//! `mmap` file operation with [`SharedPages::map_into`], which refuses private
//! mappings and, for read-only ones, writable requests; takes away the right
//! to make the mapping executable (and, read-only, writable) later; and keeps
//! the mapping out of children and from growing. Whatever a page mapped
//! read-write holds is untrusted input: user space may write any byte of it at
//! any time.
//!
//! The pages are allocated without `__GFP_HIGHMEM`, so they are always in
//! the kernel's direct map: stores need no temporary mapping and may be made
//! in any context, including under spinlocks and in MMU notifier callbacks.
//! Every access from the kernel is atomic, so kernel writers racing each
//! other or user space race on values, never on memory.
#![cfg(CONFIG_MEMREG_SUPPORT)]

use crate::{
    bindings,
    mm::virt::{flags, VmaNew, VmaRef},
    page::{Page, PAGE_SIZE},
    prelude::*,
    sync::atomic::{Acquire, Atomic, Full, Relaxed, Release},
};

/// The page offset a mapping was requested at (`vm_pgoff`): which area of
/// a device's file it maps.
pub fn vma_pgoff(vma: &VmaRef) -> usize {
    // SAFETY: `vma` is a valid VMA; `vm_pgoff` is set when the VMA is created and changes only
    // under the address space's `mmap_lock` held for writing, which a caller holding a
    // `VmaRef` excludes or holds itself.
    unsafe { (*vma.as_ptr()).vm_pgoff }
}

/// Zeroed pages shared with user space.
///
/// # Invariants
///
/// Every page in `pages` was allocated without `__GFP_HIGHMEM`, so
/// `page_address` of it is a valid, permanent kernel address; `addrs[i]` is
/// that address for `pages[i]`.
///
/// # Examples
///
/// ```
/// use kernel::mm::shared_pages::SharedPages;
/// use kernel::page::PAGE_SIZE;
///
/// let shared = SharedPages::new(2)?;
/// assert_eq!(shared.len(), 2 * PAGE_SIZE);
/// // Words straddle no page: word 512 is the first of the second page.
/// assert_eq!(shared.load_u64(512), Some(0));
/// assert!(shared.store_u64(512, 0xfeed));
/// assert_eq!(shared.load_u64(512), Some(0xfeed));
/// assert!(shared.store_u32(1, 7));
/// assert_eq!(shared.load_u32(1), Some(7));
/// assert_eq!(shared.xchg_u32(1, 0), Some(7));
/// assert_eq!(shared.load_u32(1), Some(0));
/// assert_eq!(shared.cmpxchg_u64(3, 0, 9), Some(Ok(0)));
/// assert_eq!(shared.cmpxchg_u64(3, 0, 5), Some(Err(9)));
/// assert_eq!(shared.cmpxchg_u64(1024, 0, 5), None);
/// // Out of bounds is refused, not written.
/// assert!(!shared.store_u64(1024, 1));
/// assert_eq!(shared.load_u64(1024), None);
/// // Words straddling pages, written as 8-byte stores.
/// let bytes = 0x0807_0605_0403_0201u64.to_ne_bytes();
/// let mut two = [0u8; 16];
/// two[..8].copy_from_slice(&bytes);
/// two[8..].copy_from_slice(&bytes);
/// assert!(shared.write_words(PAGE_SIZE - 8, &two));
/// assert_eq!(shared.load_u64(511), Some(0x0807_0605_0403_0201));
/// assert_eq!(shared.load_u64(512), Some(0x0807_0605_0403_0201));
/// // Unaligned, or past the end: refused.
/// assert!(!shared.write_words(4, &bytes));
/// assert!(!shared.write_words(2 * PAGE_SIZE - 8, &two));
/// # Ok::<(), Error>(())
/// ```
pub struct SharedPages {
    pages: KVec<Page>,
    addrs: KVec<usize>,
}

impl SharedPages {
    /// Allocates `npages` zeroed pages, charged to the caller's memory
    /// cgroup.
    pub fn new(npages: usize) -> Result<Self> {
        if npages == 0 {
            return Err(EINVAL);
        }
        let mut pages = KVec::with_capacity(npages, GFP_KERNEL_ACCOUNT)?;
        let mut addrs = KVec::with_capacity(npages, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..npages {
            let page = Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?;
            // SAFETY: `page` is a valid page allocated without `__GFP_HIGHMEM` (in the direct
            // map), so `page_address` returns its permanent kernel address.
            let addr = unsafe { bindings::page_address(page.as_ptr()) } as usize;
            pages.push(page, GFP_KERNEL_ACCOUNT)?;
            addrs.push(addr, GFP_KERNEL_ACCOUNT)?;
        }
        // INVARIANT: Each address is its page's `page_address`.
        Ok(Self { pages, addrs })
    }

    /// The size in bytes.
    pub fn len(&self) -> usize {
        self.pages.len() * PAGE_SIZE
    }

    /// Whether there are no pages (never, once created).
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// The kernel address of byte `offset`, if `size` bytes from it are in
    /// bounds, aligned to `size` and within one page.
    fn at(&self, offset: usize, size: usize) -> Option<usize> {
        let in_page = offset % PAGE_SIZE;
        if offset % size != 0 || in_page + size > PAGE_SIZE {
            return None;
        }
        self.addrs.get(offset / PAGE_SIZE).map(|a| a + in_page)
    }

    fn word64(&self, index: usize) -> Option<&Atomic<u64>> {
        let addr = self.at(index.checked_mul(8)?, 8)?;
        // SAFETY: `addr` is an aligned, in-bounds `u64` of a page `self` owns, valid for as long
        // as `self`. The kernel only accesses it atomically; user space may read or write it
        // concurrently (it is not Rust memory to it), so only its value is racy, and callers
        // treat what they load from a writable mapping as untrusted.
        Some(unsafe { Atomic::from_ptr(addr as *mut u64) })
    }

    fn word32(&self, index: usize) -> Option<&Atomic<u32>> {
        let addr = self.at(index.checked_mul(4)?, 4)?;
        // SAFETY: As in `word64`, for an aligned `u32`.
        Some(unsafe { Atomic::from_ptr(addr as *mut u32) })
    }

    /// Stores `value` into the `index`-th `u64` with release ordering;
    /// returns `false`, storing nothing, when out of bounds. Never sleeps.
    pub fn store_u64(&self, index: usize, value: u64) -> bool {
        self.word64(index)
            .map(|w| w.store(value, Release))
            .is_some()
    }

    /// Loads the `index`-th `u64` with acquire ordering (a value user space
    /// may have written, if it maps these pages writable: validate it).
    pub fn load_u64(&self, index: usize) -> Option<u64> {
        self.word64(index).map(|w| w.load(Acquire))
    }

    /// Stores `value` into the `index`-th `u32` with release ordering;
    /// returns `false`, storing nothing, when out of bounds. Never sleeps.
    pub fn store_u32(&self, index: usize, value: u32) -> bool {
        self.word32(index)
            .map(|w| w.store(value, Release))
            .is_some()
    }

    /// Loads the `index`-th `u32` with acquire ordering (a value user space
    /// may have written, if it maps these pages writable: validate it).
    pub fn load_u32(&self, index: usize) -> Option<u32> {
        self.word32(index).map(|w| w.load(Acquire))
    }

    /// Exchanges the `index`-th `u32` for `value` (full ordering) and
    /// returns what was there, or `None` when out of bounds. Never sleeps.
    pub fn xchg_u32(&self, index: usize, value: u32) -> Option<u32> {
        self.word32(index).map(|w| w.xchg(value, Full))
    }

    /// Replaces the `index`-th `u64` with `new` if it holds `old` (full
    /// ordering): `Some(Ok(old))` when replaced, `Some(Err(current))` when
    /// not, `None` when out of bounds. Never sleeps. What it returns may have
    /// been written by user space: validate it.
    pub fn cmpxchg_u64(&self, index: usize, old: u64, new: u64) -> Option<Result<u64, u64>> {
        self.word64(index).map(|w| w.cmpxchg(old, new, Full))
    }

    /// Loads the `index`-th `u64` without ordering (untrusted, as
    /// [`SharedPages::load_u64`]).
    pub fn load_u64_relaxed(&self, index: usize) -> Option<u64> {
        self.word64(index).map(|w| w.load(Relaxed))
    }

    /// Copies `src` to byte `offset`, both multiples of 8, as relaxed atomic
    /// stores of 8 bytes each (so concurrent writers and readers race on
    /// values, never on memory); returns `false`, copying nothing, when it
    /// does not fit or is not aligned. Publish the bytes with a later release
    /// store. Never sleeps.
    pub fn write_words(&self, offset: usize, src: &[u8]) -> bool {
        match offset.checked_add(src.len()) {
            Some(end) if end <= self.len() && offset % 8 == 0 && src.len() % 8 == 0 => {}
            _ => return false,
        }
        for (i, chunk) in src.chunks_exact(8).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            match self.word64(offset / 8 + i) {
                Some(w) => w.store(u64::from_ne_bytes(word), Relaxed),
                None => return false,
            }
        }
        true
    }

    /// Whether [`SharedPages::map_into`] accepts the access `vma` asks for,
    /// so a caller can check before it creates anything: `EINVAL` for a
    /// private mapping, an executable one, or a writable one unless
    /// `writable`.
    pub fn check_mapping(vma: &VmaNew, writable: bool) -> Result {
        if vma.flags() & flags::SHARED == 0 || vma.executable() || (!writable && vma.writable()) {
            return Err(EINVAL);
        }
        Ok(())
    }

    /// Maps the pages from `first_page` on into `vma`, which must be a
    /// shared mapping no longer than what is left of them. Read-only unless
    /// `writable`: then the caller reads everything it finds there as
    /// untrusted input. The mapping can never become executable (nor
    /// writable, when read-only), is not inherited across fork and cannot
    /// grow.
    ///
    /// Errors: `EINVAL` for a private mapping, one that is too long, or one
    /// asking for write access when read-only or for execute access; what
    /// inserting the pages returns otherwise. Called from an `mmap` file
    /// operation; may sleep.
    pub fn map_into(&self, vma: &VmaNew, first_page: usize, writable: bool) -> Result {
        Self::check_mapping(vma, writable)?;
        let len = vma.end() - vma.start();
        let npages = len / PAGE_SIZE;
        let end = first_page.checked_add(npages).ok_or(EINVAL)?;
        if end > self.pages.len() {
            return Err(EINVAL);
        }
        vma.try_clear_mayexec()?;
        if !writable {
            vma.try_clear_maywrite()?;
        }
        // `VM_IO` as well as `VM_DONTCOPY`: `MADV_DOFORK` cannot make the mapping inherited,
        // and nothing can pin these pages through it.
        vma.set_io();
        vma.set_dontcopy();
        vma.set_dontexpand();
        vma.set_dontdump();
        let mixed = vma.set_mixedmap();
        let pages = self.pages.get(first_page..end).ok_or(EINVAL)?;
        for (i, page) in pages.iter().enumerate() {
            mixed.vm_insert_page(vma.start() + i * PAGE_SIZE, page)?;
        }
        Ok(())
    }
}
