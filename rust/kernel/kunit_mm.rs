// SPDX-License-Identifier: GPL-2.0

//! User memory for KUnit tests.
//!
//! KUnit test cases run in kernel threads, which have no address space.
//! [`UserMapping`] gives the test thread one (`kunit_attach_mm`, released when
//! the thread exits) and maps anonymous memory in it, so abstractions over
//! user memory (pinning, MMU notifiers) can be tested on real mappings.
//!
//! C header: [`include/kunit/test.h`](srctree/include/kunit/test.h)
#![cfg(CONFIG_KUNIT)]

use crate::{bindings, error::to_result, prelude::*, types::NotThreadSafe};

/// A private anonymous read/write mapping in the current task's address
/// space, unmapped on drop.
///
/// It acts on `current->mm`, so it is neither `Send` nor `Sync`: it stays with
/// the task whose address space holds it.
///
/// # Invariants
///
/// `addr..addr + len` was mapped by [`UserMapping::anonymous`] in the address
/// space of the task that created it.
pub struct UserMapping {
    addr: usize,
    len: usize,
    _not_thread_safe: NotThreadSafe,
}

impl UserMapping {
    /// Maps `len` bytes, first attaching an address space to the current
    /// thread if it has none (as in a KUnit test case).
    pub fn anonymous(len: usize) -> Result<Self> {
        // SAFETY: `kunit_attach_mm` only acts on the current task; it does nothing if the task
        // already has an address space.
        to_result(unsafe { bindings::kunit_attach_mm() })?;
        // SAFETY: A null file asks for an anonymous mapping; `vm_mmap` checks every argument.
        let addr = unsafe {
            bindings::vm_mmap(
                core::ptr::null_mut(),
                0,
                len,
                (bindings::PROT_READ | bindings::PROT_WRITE) as usize,
                (bindings::MAP_ANONYMOUS | bindings::MAP_PRIVATE) as usize,
                0,
            )
        };
        // `vm_mmap` returns an address or a negative errno in the top page.
        if addr >= (bindings::MAX_ERRNO as usize).wrapping_neg() {
            return Err(Error::from_errno(addr as i32));
        }
        // INVARIANT: The range was just mapped in the current address space.
        Ok(Self {
            addr: addr as usize,
            len,
            _not_thread_safe: NotThreadSafe,
        })
    }

    /// Start address of the mapping.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (it never is once created).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Unmaps `len` bytes at `offset` into the mapping, as `munmap` would.
    pub fn unmap(&self, offset: usize, len: usize) -> Result {
        let end = offset.checked_add(len).ok_or(EINVAL)?;
        if end > self.len {
            return Err(EINVAL);
        }
        // SAFETY: The range lies within our mapping; unmapping user memory cannot break any
        // kernel invariant.
        to_result(unsafe { bindings::vm_munmap(self.addr + offset, len) })
    }

    /// The current address space's `pinned_vm`, in pages.
    pub fn pinned_vm(&self) -> i64 {
        crate::current!().mm().map_or(0, |mm| {
            // SAFETY: `mm` is valid while borrowed; the helper returns its `pinned_vm` counter.
            unsafe { bindings::atomic64_read(bindings::mm_pinned_vm(mm.as_raw())) }
        })
    }
}

impl Drop for UserMapping {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the range was mapped by us; unmapping it again after a
        // partial `unmap` is harmless.
        unsafe { bindings::vm_munmap(self.addr, self.len) };
    }
}
