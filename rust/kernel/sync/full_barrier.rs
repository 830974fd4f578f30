// SPDX-License-Identifier: GPL-2.0

//! A full memory barrier under one name on every kernel series: 7.3's
//! `smp_mb` takes an ordering argument, 7.2's takes none.

/// A full SMP memory barrier (`smp_mb()`).
#[inline]
pub fn smp_mb_full() {
    #[cfg(not(CONFIG_MEMREG_COMPAT_7_2))]
    super::barrier::smp_mb(super::barrier::Full);
    #[cfg(CONFIG_MEMREG_COMPAT_7_2)]
    super::barrier::smp_mb();
}
