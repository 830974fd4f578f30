// SPDX-License-Identifier: GPL-2.0

//! Cancelling a queued work item whose pointer is an [`Arc`].
//!
//! A queued `Arc<T>` work item owns one reference of the `Arc`, handed to the
//! queue by `enqueue`. [`cancel_sync`] takes the item off its queue and gives
//! that reference back, or waits for the item to finish running, so that an
//! owner about to go away (a file being released, a module being unloaded)
//! knows none of its deferred work is left.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)

use crate::{
    bindings,
    sync::Arc,
    workqueue::{HasWork, Work, WorkItem},
};

/// Cancels the work item `ID` of `this`: if it is queued, it is taken off
/// its queue without running and the reference the queue held is dropped; if
/// it is running, this waits for it to return. Returns whether it was queued.
///
/// The item may be queued again afterwards; the caller makes sure it is not
/// when it needs no work to remain. May sleep. Meant for plain work items:
/// for one embedded in a delayed work item whose timer is pending, this
/// waits for the timer to fire.
// TODO(cancel-delayed): a `cancel_delayed_sync` for `DelayedWork` items.
///
/// # Examples
///
/// ```
/// use kernel::sync::{Arc, atomic::{Atomic, Relaxed}};
/// use kernel::workqueue::{self, cancel::cancel_sync, impl_has_work, new_work, Work, WorkItem};
///
/// #[pin_data]
/// struct Job {
///     runs: Atomic<u32>,
///     #[pin]
///     work: Work<Job>,
/// }
/// impl_has_work! { impl HasWork<Self> for Job { self.work } }
/// impl WorkItem for Job {
///     type Pointer = Arc<Job>;
///     fn run(this: Arc<Job>) {
///         this.runs.add(1, Relaxed);
///     }
/// }
///
/// let job = Arc::pin_init(
///     pin_init!(Job { runs: Atomic::new(0), work <- new_work!("Job::work") }),
///     GFP_KERNEL,
/// )?;
/// assert!(workqueue::system().enqueue(job.clone()).is_ok());
/// // Cancelling either finds it queued (and drops the queue's reference) or
/// // waits for its run to end; either way no reference is left behind.
/// let queued = cancel_sync(&job);
/// assert_eq!(job.runs.load(Relaxed), if queued { 0 } else { 1 });
/// assert!(!cancel_sync(&job));
/// assert!(Arc::into_unique_or_drop(job).is_some());
/// # Ok::<(), Error>(())
/// ```
pub fn cancel_sync<T, const ID: u64>(this: &Arc<T>) -> bool
where
    T: WorkItem<ID, Pointer = Arc<T>> + HasWork<T, ID>,
{
    let ptr = Arc::as_ptr(this).cast_mut();
    // SAFETY: `ptr` points at a valid `T` kept alive by `this`.
    let work = unsafe { Work::raw_get(T::raw_get_work(ptr)) };
    // SAFETY: `work` is an initialised `work_struct` inside a live `T`.
    let queued = unsafe { bindings::cancel_work_sync(work) };
    if queued {
        // SAFETY: The item was queued, so `enqueue` leaked one reference with `Arc::into_raw`
        // of this very pointer, and the queue no longer owns it: we reclaim it once.
        drop(unsafe { Arc::from_raw(ptr) });
    }
    queued
}
