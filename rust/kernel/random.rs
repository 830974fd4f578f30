// SPDX-License-Identifier: GPL-2.0

//! Random numbers from the kernel's cryptographically secure generator.
//!
//! C header: [`include/linux/random.h`](srctree/include/linux/random.h)

use crate::bindings;

/// Returns a random `u32`.
///
/// # Examples
///
/// ```
/// use kernel::random::get_random_u32;
///
/// // Two draws agree by chance once in 2^32; four in a row never do.
/// let first = get_random_u32();
/// assert!((0..4).any(|_| get_random_u32() != first));
/// ```
#[inline]
pub fn get_random_u32() -> u32 {
    // SAFETY: `get_random_u32` has no preconditions; it may be called from any context.
    unsafe { bindings::get_random_u32() }
}

/// Returns a random `u64`.
///
/// # Examples
///
/// ```
/// use kernel::random::get_random_u64;
///
/// let first = get_random_u64();
/// assert!((0..4).any(|_| get_random_u64() != first));
/// ```
#[inline]
pub fn get_random_u64() -> u64 {
    // SAFETY: `get_random_u64` has no preconditions; it may be called from any context.
    unsafe { bindings::get_random_u64() }
}
