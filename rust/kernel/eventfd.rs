// SPDX-License-Identifier: GPL-2.0

//! Eventfd contexts: counters user space waits on, signalled by a driver.
//!
//! C header: [`include/linux/eventfd.h`](srctree/include/linux/eventfd.h)
#![cfg(CONFIG_EVENTFD)]

use crate::{bindings, error::from_err_ptr, prelude::*};
use core::ptr::NonNull;

/// A reference to the context of an eventfd.
///
/// # Invariants
///
/// `ctx` is a valid eventfd context on which this object owns one reference.
///
/// # Examples
///
/// ```
/// use kernel::eventfd::EventFd;
///
/// // No file descriptor -1, and no eventfd behind a bad one.
/// assert_eq!(EventFd::from_fd(-1).err(), Some(EBADF));
/// ```
pub struct EventFd {
    ctx: NonNull<bindings::eventfd_ctx>,
}

// SAFETY: Eventfd contexts are reference counted and signalled under their own lock, from any
// thread.
unsafe impl Send for EventFd {}
// SAFETY: See above; `signal` takes `&self`.
unsafe impl Sync for EventFd {}

impl EventFd {
    /// Takes a reference on the eventfd context behind the calling task's
    /// file descriptor `fd`: `EBADF` when `fd` is not open, `EINVAL` when it
    /// is not an eventfd.
    pub fn from_fd(fd: i32) -> Result<Self> {
        // SAFETY: `eventfd_ctx_fdget` accepts any value and returns a context with a reference
        // taken, or an error pointer.
        let ctx = from_err_ptr(unsafe { bindings::eventfd_ctx_fdget(fd) })?;
        let ctx = NonNull::new(ctx).ok_or(EINVAL)?;
        // INVARIANT: The reference was taken by `eventfd_ctx_fdget`.
        Ok(Self { ctx })
    }

    /// Adds one to the counter, waking its readers. Never sleeps; may be
    /// called under spinlocks and in MMU notifier callbacks.
    pub fn signal(&self) {
        // SAFETY: By the type invariant `ctx` is a valid context.
        unsafe { bindings::eventfd_signal_mask(self.ctx.as_ptr(), 0) };
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: By the type invariant we own one reference, dropped once here.
        unsafe { bindings::eventfd_ctx_put(self.ctx.as_ptr()) };
    }
}
