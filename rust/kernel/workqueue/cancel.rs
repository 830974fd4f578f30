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
    workqueue::{HasDelayedWork, HasWork, Work, WorkItem},
};

/// Takes the reference a queue held on `this` back after a cancel found the
/// item queued.
///
/// # Safety
///
/// When `queued` is true, the item of `this` was queued by `enqueue` (which
/// leaked one reference with [`Arc::into_raw`]) and a cancel just took it
/// off its queue without running it, so that reference is owned by nobody.
unsafe fn reclaim<T>(this: &Arc<T>, queued: bool) -> bool {
    if queued {
        // SAFETY: By the function's safety requirements the queue's reference, from
        // `Arc::into_raw` of this very pointer, is ours to drop, once.
        drop(unsafe { Arc::from_raw(Arc::as_ptr(this)) });
    }
    queued
}

/// Cancels the work item `ID` of `this`: if it is queued, it is taken off
/// its queue without running and the reference the queue held is dropped; if
/// it is running, this waits for it to return. Returns whether it was queued.
///
/// The item may be queued again afterwards; the caller makes sure it is not
/// when it needs no work to remain. May sleep. Meant for plain work items:
/// for a [`DelayedWork`](crate::workqueue::DelayedWork) use
/// [`cancel_delayed_sync`].
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
    // SAFETY: `cancel_work_sync` returns true only when it took the pending item, queued by
    // `enqueue` of an `Arc<T>` (the only way to queue it), off its queue.
    unsafe { reclaim(this, queued) }
}

/// Cancels the delayed work item `ID` of `this`: if its timer is pending or
/// it is queued, it is stopped without running and the reference the queue
/// held is dropped; if it is running, this waits for it to return (a run
/// that queues the item again is cancelled too). Returns whether it was
/// pending. May sleep.
///
/// # Examples
///
/// ```
/// use kernel::sync::{Arc, atomic::{Atomic, Relaxed}};
/// use kernel::workqueue::{
///     self, cancel::cancel_delayed_sync, impl_has_delayed_work, new_delayed_work, DelayedWork,
///     WorkItem,
/// };
///
/// #[pin_data]
/// struct Job {
///     runs: Atomic<u32>,
///     #[pin]
///     work: DelayedWork<Job>,
/// }
/// impl_has_delayed_work! { impl HasDelayedWork<Self> for Job { self.work } }
/// impl WorkItem for Job {
///     type Pointer = Arc<Job>;
///     fn run(this: Arc<Job>) {
///         this.runs.add(1, Relaxed);
///     }
/// }
///
/// let job = Arc::pin_init(
///     pin_init!(Job { runs: Atomic::new(0), work <- new_delayed_work!("Job::work") }),
///     GFP_KERNEL,
/// )?;
/// // An hour from now: cancelling stops the timer and gives the reference back.
/// assert!(workqueue::system().enqueue_delayed(job.clone(), 3600 * 1000).is_ok());
/// assert!(cancel_delayed_sync(&job));
/// assert_eq!(job.runs.load(Relaxed), 0);
/// assert!(!cancel_delayed_sync(&job));
/// assert!(Arc::into_unique_or_drop(job).is_some());
/// # Ok::<(), Error>(())
/// ```
pub fn cancel_delayed_sync<T, const ID: u64>(this: &Arc<T>) -> bool
where
    T: WorkItem<ID, Pointer = Arc<T>> + HasDelayedWork<T, ID>,
{
    let ptr = Arc::as_ptr(this).cast_mut();
    // SAFETY: `ptr` points at a valid `T` kept alive by `this`.
    let work = unsafe { Work::raw_get(T::raw_get_work(ptr)) };
    // SAFETY: By `HasDelayedWork`, `work` is the `work` field of a `delayed_work`.
    let dwork = unsafe { crate::container_of!(work, bindings::delayed_work, work) };
    // SAFETY: `dwork` is an initialised `delayed_work` inside a live `T`.
    let queued = unsafe { bindings::cancel_delayed_work_sync(dwork) };
    // SAFETY: `cancel_delayed_work_sync` returns true only when it took the pending item,
    // queued by `enqueue_delayed` of an `Arc<T>` (the only way to queue it), off its queue.
    unsafe { reclaim(this, queued) }
}
