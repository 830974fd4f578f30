// SPDX-License-Identifier: GPL-2.0

//! Voluntary rescheduling and fatal signals of the current task, for long
//! loops in process context.
//!
//! C header: [`include/linux/sched.h`](srctree/include/linux/sched.h)

use crate::bindings;

/// Gives the CPU to another task if one should run (`cond_resched`).
///
/// Long loops in process context call this between steps so that they
/// neither stall other tasks nor trigger soft-lockup reports on kernels
/// without full preemption. May sleep: must not be called in atomic context.
pub fn cond_resched() {
    // SAFETY: `cond_resched` may be called from any context that may sleep, which is this
    // function's documented requirement.
    unsafe { bindings::cond_resched() };
}

/// Whether the current task has been sent a fatal signal (`SIGKILL`), in
/// which case a long operation should stop and return `EINTR`.
///
/// # Examples
///
/// ```
/// use kernel::task::resched::{cond_resched, fatal_signal_pending};
///
/// // A KUnit test case is not being killed.
/// assert!(!fatal_signal_pending());
/// cond_resched();
/// ```
pub fn fatal_signal_pending() -> bool {
    // SAFETY: The helper reads the current task's pending signals, always valid.
    unsafe { bindings::current_fatal_signal_pending() }
}
