// SPDX-License-Identifier: GPL-2.0

//! The default unbound system workqueues, which replace the deprecated
//! `system_unbound_wq` (queueing on it warns once in this kernel).
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)

use crate::{bindings, workqueue::Queue};

/// Returns the default unbound system workqueue (`system_dfl_wq`): work
/// items are not bound to a CPU and run as soon as a worker is free.
pub fn system_dfl() -> &'static Queue {
    // SAFETY: `system_dfl_wq` is a C global, set up at boot and never freed.
    unsafe { Queue::from_raw(bindings::system_dfl_wq) }
}

/// Returns the default unbound system workqueue for work items that may run
/// long (`system_dfl_long_wq`).
pub fn system_dfl_long() -> &'static Queue {
    // SAFETY: `system_dfl_long_wq` is a C global, set up at boot and never freed.
    unsafe { Queue::from_raw(bindings::system_dfl_long_wq) }
}
