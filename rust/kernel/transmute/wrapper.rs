// SPDX-License-Identifier: GPL-2.0

//! Newtypes over the structures of a user ABI.
//!
//! A driver's user ABI structures reach Rust through bindgen (the `uapi`
//! crate), so they are foreign to the driver's crate: it can neither mark them
//! [`FromBytes`] and [`AsBytes`] nor give them methods. [`uapi_wrapper!`]
//! declares a transparent newtype over each one, the shape of Rust Binder's
//! `decl_wrapper!`, after checking at compile time that the structure has no
//! padding (so that copying it to user space never leaks kernel memory) and
//! that every field is plain data itself.
//!
//! [`FromBytes`]: crate::transmute::FromBytes
//! [`AsBytes`]: crate::transmute::AsBytes
//! [`uapi_wrapper!`]: crate::uapi_wrapper

use crate::transmute::{AsBytes, FromBytes};

/// A newtype declared by [`uapi_wrapper!`](crate::uapi_wrapper) over the
/// structure [`UapiWrapper::Inner`].
pub trait UapiWrapper: FromBytes + AsBytes {
    /// The wrapped structure.
    type Inner;
}

/// The size of a field whose type is plain data (an integer or an array of
/// them), given a pointer to it; fails to compile for any other type.
#[doc(hidden)]
pub const fn plain_field_size<T: FromBytes + AsBytes>(_field: *const T) -> usize {
    core::mem::size_of::<T>()
}

/// The size of a field whose type is a structure wrapped by `W`, given a
/// pointer to it; fails to compile unless `W` wraps exactly that type.
#[doc(hidden)]
pub const fn wrapped_field_size<W: UapiWrapper>(_field: *const W::Inner) -> usize {
    core::mem::size_of::<W>()
}

/// Declares transparent newtypes over user ABI structures, each
/// [`FromBytes`](crate::transmute::FromBytes),
/// [`AsBytes`](crate::transmute::AsBytes) and
/// [`Zeroable`](crate::prelude::Zeroable), dereferencing to the structure.
///
/// Every field of the structure must be listed, in any order. A field of
/// another wrapped structure is written `field: Wrapper`; every other field
/// must be an integer or an array of integers. Compilation fails when a field
/// is missing (its bytes count as padding), misnamed, of another type, or
/// when the structure has padding.
///
/// # Examples
///
/// ```ignore
/// kernel::uapi_wrapper! {
///     /// `struct memreg_sqe`.
///     pub(crate) struct Sqe(uapi::memreg_sqe) { opcode, flags, user_data, key }
///     /// `struct memreg_sq_slot`.
///     pub(crate) struct SqSlot(uapi::memreg_sq_slot) { seq, sqe: Sqe }
/// }
/// ```
#[macro_export]
macro_rules! uapi_wrapper {
    ($(
        $(#[$meta:meta])*
        $vis:vis struct $name:ident($inner:ty) { $($field:ident $(: $wrapper:ty)?),* $(,)? }
    )*) => {$(
        $(#[$meta])*
        #[repr(transparent)]
        #[derive(Clone, Copy)]
        $vis struct $name(pub $inner);

        impl $crate::transmute::wrapper::UapiWrapper for $name {
            type Inner = $inner;
        }

        const _: () = {
            let v = ::core::mem::MaybeUninit::<$inner>::uninit();
            let p = v.as_ptr();
            let fields = 0 $(+ $crate::uapi_wrapper!(@size p, $field $(, $wrapper)?))*;
            ::core::assert!(
                fields == ::core::mem::size_of::<$inner>(),
                "a uapi structure has padding or a field is not listed"
            );
        };

        // SAFETY: The check above shows that every field of `$inner` is plain data (every bit
        // pattern valid) and that they fill it, and `$name` is transparent over it.
        unsafe impl $crate::transmute::FromBytes for $name {}

        // SAFETY: As above: no padding and plain fields, so every byte is initialised.
        unsafe impl $crate::transmute::AsBytes for $name {}

        // SAFETY: All bytes zero is a valid value of a structure of plain fields.
        unsafe impl $crate::prelude::Zeroable for $name {}

        impl ::core::ops::Deref for $name {
            type Target = $inner;

            fn deref(&self) -> &$inner {
                &self.0
            }
        }

        impl ::core::ops::DerefMut for $name {
            fn deref_mut(&mut self) -> &mut $inner {
                &mut self.0
            }
        }
    )*};
    (@size $p:ident, $field:ident) => {
        // SAFETY: Only the address of a field inside the uninitialised value is computed;
        // nothing is read.
        $crate::transmute::wrapper::plain_field_size(unsafe { &raw const (*$p).$field })
    };
    (@size $p:ident, $field:ident, $wrapper:ty) => {
        // SAFETY: As above.
        $crate::transmute::wrapper::wrapped_field_size::<$wrapper>(unsafe {
            &raw const (*$p).$field
        })
    };
}
