// SPDX-License-Identifier: GPL-2.0

//! Mappings a driver owns whole, and recognises by their owner, never by
//! address or offset.
//!
//! A driver that maps its own pages into a process from its `mmap` file
//! operation, and later inserts pages into that mapping or zaps them, must
//! act only on the VMA it created: user space chooses the address and the
//! page offset of every mapping, so a VMA found at the address a driver
//! remembers, even with the offset it expects, may be anything (an
//! anonymous mapping, a hugetlb one, another file's).
//!
//! [`MappingOwner::attach`] marks a new VMA as the owner's: its operations
//! are this module's and its private data points to the owner, on which it
//! holds a reference for as long as it exists. [`MappingOwner::owns`] then
//! recognises it, and [`MappingOwner::zap`] zaps only in it, through
//! `zap_special_vma_range`, which also refuses anything but a `VM_PFNMAP` or
//! `VM_MIXEDMAP` VMA.
//!
//! Such a mapping stays one piece at one place with the access it was
//! created with, so that what the driver keeps about it stays true: it
//! cannot be split (a partial `munmap` or `mprotect`, an `mremap` of part of
//! it fail with `EINVAL`), moved (`mremap` fails with `EINVAL`; the pages
//! move and come back, so an interval notifier over it sees an unmap), nor
//! have its access changed (`mprotect` fails with `EACCES`). It can only go
//! whole, and [`MappingOwner::is_mapped`] tells when it went.
#![cfg(CONFIG_MEMREG_SUPPORT)]

use crate::{
    bindings,
    mm::virt::{VmaNew, VmaRef},
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, ArcBorrow,
    },
};

/// The owner of the mapping a driver created from its `mmap`.
///
/// # Invariants
///
/// `vmas` counts the VMAs whose `vm_private_data` holds a reference on
/// `self` taken by [`MappingOwner::attach`] or [`owned_open`], and whose
/// `vm_ops` is [`OWNED_VM_OPS`].
///
/// # Examples
///
/// ```
/// use kernel::mm::owned_mapping::MappingOwner;
///
/// let owner = MappingOwner::new()?;
/// // Nothing is attached yet.
/// assert!(!owner.is_mapped());
/// # Ok::<(), Error>(())
/// ```
pub struct MappingOwner {
    vmas: Atomic<u32>,
}

/// The operations of every owned mapping.
static OWNED_VM_OPS: bindings::vm_operations_struct = bindings::vm_operations_struct {
    open: Some(owned_open),
    close: Some(owned_close),
    may_split: Some(owned_may_split),
    mremap: Some(owned_mremap),
    mprotect: Some(owned_mprotect),
    // SAFETY: All other fields are optional function pointers, for which zero is `None`.
    ..unsafe { core::mem::zeroed() }
};

/// A VMA was copied from an owned one (`mremap` copies it before it refuses
/// the move): the copy holds a reference of its own.
///
/// # Safety
///
/// `vma` is a valid VMA whose `vm_ops` is [`OWNED_VM_OPS`].
unsafe extern "C" fn owned_open(vma: *mut bindings::vm_area_struct) {
    // SAFETY: The caller holds `mmap_lock`; an owned VMA's private data is a reference on its
    // owner, taken by `attach` or by this function for the VMA it was copied from, which lives
    // at least as long as this call.
    let owner = unsafe { ArcBorrow::<MappingOwner>::from_raw((*vma).vm_private_data.cast()) };
    owner.vmas.fetch_add(1, Relaxed);
    let copy: Arc<MappingOwner> = owner.into();
    // INVARIANT: The copy's reference, kept in its `vm_private_data`, is counted in `vmas`.
    let _ = Arc::into_raw(copy);
}

/// An owned VMA goes: its reference on the owner is dropped.
///
/// # Safety
///
/// `vma` is a valid VMA whose `vm_ops` is [`OWNED_VM_OPS`], being removed.
unsafe extern "C" fn owned_close(vma: *mut bindings::vm_area_struct) {
    // SAFETY: The VMA's private data is the reference `attach` or `owned_open` took; the VMA
    // is being removed, so it is given back once, here.
    let owner = unsafe { Arc::<MappingOwner>::from_raw((*vma).vm_private_data.cast()) };
    // INVARIANT: The reference goes with the count.
    owner.vmas.fetch_sub(1, Relaxed);
    drop(owner);
}

/// An owned VMA is never split.
extern "C" fn owned_may_split(
    _vma: *mut bindings::vm_area_struct,
    _addr: usize,
) -> crate::ffi::c_int {
    EINVAL.to_errno()
}

/// An owned VMA is never moved: the kernel moves its page table entries
/// back and unmaps the copy.
extern "C" fn owned_mremap(_vma: *mut bindings::vm_area_struct) -> crate::ffi::c_int {
    EINVAL.to_errno()
}

/// An owned VMA keeps the access it was created with, and `mprotect` of
/// part of it is refused as the split it would need is (`EINVAL`), even to
/// the same access.
///
/// # Safety
///
/// `vma` is a valid VMA; the caller holds `mmap_lock` for writing.
unsafe extern "C" fn owned_mprotect(
    vma: *mut bindings::vm_area_struct,
    start: usize,
    end: usize,
    newflags: bindings::vm_flags_t,
) -> crate::ffi::c_int {
    let access =
        (bindings::VM_READ | bindings::VM_WRITE | bindings::VM_EXEC) as bindings::vm_flags_t;
    // SAFETY: `vma` is valid and its flags and bounds cannot change under the caller's
    // `mmap_lock`.
    let vma = unsafe { VmaRef::from_raw(vma) };
    if start != vma.start() || end != vma.end() {
        return EINVAL.to_errno();
    }
    if (vma.flags() ^ newflags) & access != 0 {
        return EACCES.to_errno();
    }
    0
}

impl MappingOwner {
    /// Creates an owner with nothing attached.
    pub fn new() -> Result<Arc<Self>> {
        Ok(Arc::new(
            Self {
                vmas: Atomic::new(0),
            },
            GFP_KERNEL_ACCOUNT,
        )?)
    }

    /// Makes `vma`, which the caller's `mmap` file operation is creating,
    /// this owner's: sets its operations (replacing the kernel's dummy ones)
    /// and private data. Call it last, once nothing else in `mmap` can fail
    /// (the kernel does not close a VMA whose `mmap` failed). `EBUSY` when the
    /// VMA is owned already.
    pub fn attach(self: &Arc<Self>, vma: &VmaNew) -> Result {
        let raw = vma.as_ptr();
        // SAFETY: `vma` is being created by the caller's `mmap`, which holds `mmap_lock` for
        // writing; nothing else reads its operations yet.
        if unsafe { core::ptr::eq((*raw).vm_ops, &OWNED_VM_OPS) } {
            return Err(EBUSY);
        }
        self.vmas.fetch_add(1, Relaxed);
        let reference = Arc::into_raw(self.clone());
        // SAFETY: As above. INVARIANT: The reference is kept in `vm_private_data` and counted;
        // `owned_close` gives it back.
        unsafe {
            (*raw).vm_private_data = reference.cast_mut().cast();
            (*raw).vm_ops = &OWNED_VM_OPS;
        }
        Ok(())
    }

    /// Whether `vma` is a VMA of this owner.
    pub fn owns(&self, vma: &VmaRef) -> bool {
        let raw = vma.as_ptr();
        // SAFETY: `vma` is a valid VMA, and its operations and private data change only under
        // `mmap_lock` held for writing, which a `VmaRef` excludes.
        let (ops, private) = unsafe { ((*raw).vm_ops, (*raw).vm_private_data) };
        core::ptr::eq(ops, &OWNED_VM_OPS) && core::ptr::eq(private.cast_const().cast(), self)
    }

    /// Whether a VMA of this owner exists.
    pub fn is_mapped(&self) -> bool {
        self.vmas.load(Relaxed) != 0
    }

    /// Zaps the page table entries of `len` bytes at `addr` of `vma`: `EINVAL`,
    /// zapping nothing, unless `vma` is this owner's and the range lies in
    /// it. May sleep.
    pub fn zap(&self, vma: &VmaRef, addr: usize, len: usize) -> Result {
        let end = addr.checked_add(len).ok_or(EINVAL)?;
        if !self.owns(vma) || addr < vma.start() || end > vma.end() || len == 0 {
            return Err(EINVAL);
        }
        // SAFETY: `vma` is valid and the caller holds its address space's `mmap_lock` (a
        // `VmaRef` exists); the range lies in it.
        unsafe { bindings::zap_special_vma_range(vma.as_ptr(), addr, len) };
        Ok(())
    }
}
