// SPDX-License-Identifier: GPL-2.0

//! Memory cgroups: charging what a worker allocates on a process's behalf
//! to that process's cgroup.
//!
//! Work items and kernel threads run in no process's cgroup: what they
//! allocate with `__GFP_ACCOUNT` is charged to the root. A driver that
//! allocates for a process from such a context captures the process's
//! cgroup with [`MemCgroup::of_current`] while it runs in the process, and
//! wraps the allocations in [`MemCgroup::activate`], as `set_active_memcg`
//! users in C do.
#![cfg(CONFIG_MEMREG_SUPPORT)]

use crate::bindings;
use core::{marker::PhantomData, ptr::NonNull};

/// A reference on a memory cgroup, or on none when memory cgroups are off.
///
/// # Invariants
///
/// `memcg`, when set, holds a reference on its cgroup, put on drop.
pub struct MemCgroup {
    memcg: Option<NonNull<bindings::mem_cgroup>>,
}

// SAFETY: A counted reference on a memory cgroup may be used and put from any thread.
unsafe impl Send for MemCgroup {}
// SAFETY: `&MemCgroup` only activates the cgroup for the calling task.
unsafe impl Sync for MemCgroup {}

impl MemCgroup {
    /// The memory cgroup of the calling task.
    pub fn of_current() -> Self {
        // SAFETY: Always callable from process context; returns a counted reference or NULL.
        let memcg = NonNull::new(unsafe { bindings::get_mem_cgroup_from_current() });
        // INVARIANT: The reference just taken.
        Self { memcg }
    }

    /// Charges what the calling task allocates with `__GFP_ACCOUNT` to this
    /// cgroup until the returned guard is dropped.
    pub fn activate(&self) -> ActiveMemCgroup<'_> {
        let memcg = self.memcg.map_or(core::ptr::null_mut(), NonNull::as_ptr);
        // SAFETY: `memcg` is NULL or counted by `self`, which outlives the guard, and the
        // guard restores the previous one on this task before it goes.
        let previous = unsafe { bindings::set_active_memcg(memcg) };
        ActiveMemCgroup {
            previous,
            _owner: PhantomData,
        }
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        if let Some(memcg) = self.memcg {
            // SAFETY: By the type invariant, `self` holds this reference.
            unsafe { bindings::mem_cgroup_put(memcg.as_ptr()) };
        }
    }
}

/// A memory cgroup active for the calling task; the previous one becomes
/// active again on drop.
pub struct ActiveMemCgroup<'a> {
    previous: *mut bindings::mem_cgroup,
    /// Not `Send`: it belongs to the task that activated it.
    _owner: PhantomData<(&'a MemCgroup, *mut ())>,
}

impl Drop for ActiveMemCgroup<'_> {
    fn drop(&mut self) {
        // SAFETY: Restores what this task had active before `activate`, still valid: it is
        // the scope's caller's.
        unsafe { bindings::set_active_memcg(self.previous) };
    }
}
