// SPDX-License-Identifier: GPL-2.0

//! Memory cgroups: charging what a worker allocates on a process's behalf
//! to that process's cgroup.
//!
//! Work items and kernel threads run in no process's cgroup: what they
//! allocate with `__GFP_ACCOUNT` is charged to the root. A driver that
//! allocates for a process from such a context captures the process's
//! cgroup with [`MemCgroup::of_current`] while it runs in the process, and
//! wraps the allocations in [`MemCgroup::with_active`], as `set_active_memcg`
//! users in C do.
#![cfg(CONFIG_MEMREG_SUPPORT)]

use crate::bindings;
use core::ptr::NonNull;

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
// SAFETY: `&MemCgroup` only makes the cgroup active for the calling task, within one call.
unsafe impl Sync for MemCgroup {}

impl MemCgroup {
    /// The memory cgroup of the calling task.
    pub fn of_current() -> Self {
        // SAFETY: Always callable from process context; returns a counted reference or NULL.
        let memcg = NonNull::new(unsafe { bindings::get_mem_cgroup_from_current() });
        // INVARIANT: The reference just taken.
        Self { memcg }
    }

    /// Runs `f` with what the calling task allocates with `__GFP_ACCOUNT`
    /// charged to this cgroup, then makes the previous one active again.
    /// (A closure rather than a guard: a guard could be forgotten, leaving
    /// the task charging a cgroup this reference no longer holds.)
    pub fn with_active<R>(&self, f: impl FnOnce() -> R) -> R {
        let memcg = self.memcg.map_or(core::ptr::null_mut(), NonNull::as_ptr);
        // SAFETY: `memcg` is NULL or counted by `self`, which outlives this call, and the
        // previous one is made active again on this task before it returns.
        let previous = unsafe { bindings::set_active_memcg(memcg) };
        let result = f();
        // SAFETY: Restores what this task had active before, still valid: it is the caller's.
        unsafe { bindings::set_active_memcg(previous) };
        result
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
