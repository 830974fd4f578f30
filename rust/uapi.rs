// SPDX-License-Identifier: GPL-2.0

//! The user ABI, mirroring `include/uapi/linux/memreg.h`.
//!
//! Sizes are asserted at compile time here and in the selftests, so the two
//! definitions cannot drift apart silently.

use kernel::ioctl::_IOR;
use kernel::prelude::*;

/// The ABI version answered by `MEMREG_IOC_GET_VERSION`.
pub(crate) const ABI_VERSION: u32 = 1;

const MAGIC: u32 = 0xB9;

/// `MEMREG_IOC_GET_VERSION`.
pub(crate) const IOC_GET_VERSION: u32 = _IOR::<u32>(MAGIC, 0x00);

#[kunit_tests(memreg_uapi)]
mod tests {
    use super::*;

    /// The ioctl numbers are the ones `<linux/memreg.h>` computes with the
    /// generic `_IOC` encoding: direction in bits 30-31, size in 16-29, type
    /// in 8-15 and number in 0-7.
    #[test]
    fn ioctl_numbers_match_the_header() {
        assert_eq!(IOC_GET_VERSION, (2 << 30) | (4 << 16) | (0xB9 << 8));
    }
}
