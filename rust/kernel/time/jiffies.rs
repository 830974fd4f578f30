// SPDX-License-Identifier: GPL-2.0

//! The jiffies counter: the kernel's tick count, cheap to read, for coarse
//! timing (timeouts, idle detection) where a clock source read would cost
//! too much.
//!
//! C header: [`include/linux/jiffies.h`](srctree/include/linux/jiffies.h)

use crate::{bindings, time::Jiffies};

/// The jiffies counter now: ticks since boot, wrapping.
///
/// # Examples
///
/// ```
/// use kernel::time::jiffies;
///
/// let before = jiffies::now();
/// // Time does not run backwards, even across a wrap.
/// assert!(jiffies::elapsed_ms(before) < 60_000);
/// assert_eq!(jiffies::to_ms(0), 0);
/// ```
pub fn now() -> Jiffies {
    // SAFETY: `jiffies` is a valid, aligned word the timer interrupt updates; a volatile read of
    // it is what the C side's `READ_ONCE(jiffies)` does.
    unsafe { core::ptr::read_volatile(&raw const bindings::jiffies) }
}

/// Milliseconds in `j` jiffies.
pub fn to_ms(j: Jiffies) -> u64 {
    // SAFETY: A pure computation on its argument.
    unsafe { bindings::jiffies64_to_msecs(j as u64) }
}

/// Milliseconds since the jiffies counter read `since`.
pub fn elapsed_ms(since: Jiffies) -> u64 {
    to_ms(now().wrapping_sub(since))
}
