// SPDX-License-Identifier: GPL-2.0

//! Workqueues owned by a driver.
//!
//! The system workqueues cannot be flushed by a module, so a module that
//! queues work items whose code lives in the module needs a queue of its own
//! that it drains before the code can go away. [`OwnedQueue`] allocates one
//! and destroys it on drop, which waits for every queued and running item.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)

use crate::{bindings, prelude::*, str::CStr, workqueue::Queue};
use core::{ops::Deref, ptr::NonNull};

/// A workqueue allocated with `alloc_workqueue` and destroyed on drop.
///
/// Dropping it drains the queue: every work item queued before the drop has
/// run to completion when the drop returns. It must therefore not be dropped
/// from one of its own work items.
///
/// # Invariants
///
/// `ptr` points at a workqueue allocated by `alloc_workqueue` that is
/// destroyed only by [`OwnedQueue`]'s `Drop`.
///
/// # Examples
///
/// ```
/// use kernel::sync::{Arc, atomic::{Atomic, Relaxed}};
/// use kernel::workqueue::owned::OwnedQueue;
///
/// let queue = OwnedQueue::new(c"doctest_wq", OwnedQueue::UNBOUND, 1)?;
/// let done = Arc::new(Atomic::new(0u32), GFP_KERNEL)?;
/// for _ in 0..3 {
///     let done = done.clone();
///     queue.try_spawn(GFP_KERNEL, move || done.add(1, Relaxed))?;
/// }
/// // Dropping the queue waits for all three items.
/// drop(queue);
/// assert_eq!(done.load(Relaxed), 3);
/// # Ok::<(), Error>(())
/// ```
pub struct OwnedQueue {
    ptr: NonNull<bindings::workqueue_struct>,
}

// SAFETY: A workqueue can be used and destroyed from any thread.
unsafe impl Send for OwnedQueue {}
// SAFETY: All of `Queue`'s methods may be called concurrently.
unsafe impl Sync for OwnedQueue {}

impl OwnedQueue {
    /// `WQ_UNBOUND`: items run on any CPU. A queue is either this or
    /// [`OwnedQueue::PERCPU`].
    pub const UNBOUND: u32 = bindings::wq_flags_WQ_UNBOUND;
    /// `WQ_PERCPU`: items run on the CPU that queued them.
    pub const PERCPU: u32 = bindings::wq_flags_WQ_PERCPU;
    /// `WQ_MEM_RECLAIM`: the queue has a rescuer thread, for work that
    /// reclaim may wait for.
    pub const MEM_RECLAIM: u32 = bindings::wq_flags_WQ_MEM_RECLAIM;

    /// Allocates a workqueue called `name` with the `flags` above and at most
    /// `max_active` items running at once (0 for the default).
    pub fn new(name: &'static CStr, flags: u32, max_active: i32) -> Result<Self> {
        // SAFETY: `name` is a valid NUL-terminated string that outlives the queue, as the
        // workqueue only copies it into its own name buffer.
        let ptr = unsafe { bindings::alloc_workqueue_named(name.as_char_ptr(), flags, max_active) };
        // INVARIANT: A non-null return is a freshly allocated workqueue that only we destroy.
        Ok(Self {
            ptr: NonNull::new(ptr).ok_or(ENOMEM)?,
        })
    }
}

impl Deref for OwnedQueue {
    type Target = Queue;

    fn deref(&self) -> &Queue {
        // SAFETY: By the type invariant the workqueue is valid until `self` is dropped, which
        // outlives the returned borrow.
        unsafe { Queue::from_raw(self.ptr.as_ptr()) }
    }
}

impl Drop for OwnedQueue {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the queue was allocated by `alloc_workqueue` and this is
        // the only place that destroys it. `destroy_workqueue` drains it first.
        unsafe { bindings::destroy_workqueue(self.ptr.as_ptr()) };
    }
}
