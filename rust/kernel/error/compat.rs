// SPDX-License-Identifier: GPL-2.0

//! Error codes that later kernels declare in [`super::code`], for code built
//! against a kernel that lacks them (7.2, where `CONFIG_MEMREG_COMPAT_7_2` is
//! set); on later kernels, the same items.

#[cfg(not(CONFIG_MEMREG_COMPAT_7_2))]
pub use super::code::{ECANCELED, ECONNRESET, EDQUOT, EISCONN, ENOBUFS, ENOTCONN, ESTALE};

#[cfg(CONFIG_MEMREG_COMPAT_7_2)]
pub use missing::*;

#[cfg(CONFIG_MEMREG_COMPAT_7_2)]
mod missing {
    use super::super::Error;

    macro_rules! declare_err {
        ($($err:ident: $doc:literal),* $(,)?) => {$(
            #[doc = $doc]
            pub const $err: Error = match core::num::NonZeroI32::new(-(crate::bindings::$err as i32))
            {
                Some(errno) => Error(errno),
                // Evaluated at compile time: an errno of 0 fails the build.
                None => panic!("errno 0"),
            };
        )*};
    }

    declare_err! {
        ECANCELED: "Operation canceled.",
        ECONNRESET: "Connection reset by peer.",
        EDQUOT: "Quota exceeded.",
        EISCONN: "Transport endpoint is already connected.",
        ENOBUFS: "No buffer space available.",
        ENOTCONN: "Transport endpoint is not connected.",
        ESTALE: "Stale file handle.",
    }
}
