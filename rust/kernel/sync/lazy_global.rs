// SPDX-License-Identifier: GPL-2.0

//! Global locks that initialise themselves on first use.
//!
//! [`global_lock!`](crate::global_lock) locks must be initialised by an
//! `unsafe` call in the module initializer before anything uses them. A
//! [`lazy_global_lock!`](crate::lazy_global_lock) lock initialises itself
//! the first time it is locked, exactly once however many callers race
//! there, so a module uses it without `unsafe`. The first locker pays for
//! the initialisation (a few stores); later ones one acquire load.
//!
//! # Examples
//!
//! ```
//! kernel::lazy_global_lock! {
//!     static COUNTER: SpinLock<u32> = 0;
//! }
//!
//! *COUNTER.lock() += 1;
//! assert_eq!(*COUNTER.lock(), 1);
//! ```

use crate::sync::{
    atomic::{Acquire, Atomic, Relaxed, Release},
    GlobalGuard, GlobalLock, GlobalLockBackend,
};

/// The lock was never initialised.
const UNINIT: u32 = 0;
/// A caller is initialising it.
const BUSY: u32 = 1;
/// It is initialised.
const READY: u32 = 2;

/// A global lock that initialises itself on first use; see the module
/// documentation. Defined with [`lazy_global_lock!`](crate::lazy_global_lock).
///
/// # Invariants
///
/// `lock` is initialised once `state` is `READY`, and only the caller that
/// moved `state` from `UNINIT` to `BUSY` initialises it.
pub struct LazyGlobalLock<B: GlobalLockBackend> {
    lock: GlobalLock<B>,
    state: Atomic<u32>,
}

impl<B: GlobalLockBackend> LazyGlobalLock<B> {
    /// Creates the lock, holding `data`.
    ///
    /// # Safety
    ///
    /// The type `B` must not be used with any other lock.
    #[doc(hidden)]
    pub const unsafe fn new(data: B::Item) -> Self {
        Self {
            // SAFETY: `B` is used with no other lock (the caller's promise), and `ready` calls
            // `init` before any other method of the lock.
            lock: unsafe { GlobalLock::new(data) },
            state: Atomic::new(UNINIT),
        }
    }

    /// Initialises the lock if nobody did yet; returns once it is.
    fn ready(&'static self) {
        if self.state.load(Acquire) == READY {
            return;
        }
        if self.state.cmpxchg(UNINIT, BUSY, Relaxed).is_ok() {
            // SAFETY: Only the one caller that moved `state` from `UNINIT` gets here, once, and
            // nobody uses the lock before `state` is `READY`.
            unsafe { self.lock.init() };
            // INVARIANT: Initialised.
            self.state.store(READY, Release);
            return;
        }
        while self.state.load(Acquire) != READY {
            crate::processor::cpu_relax();
        }
    }

    /// Locks it, initialising it first if needed.
    pub fn lock(&'static self) -> GlobalGuard<B> {
        self.ready();
        self.lock.lock()
    }

    /// Tries to lock it, initialising it first if needed.
    pub fn try_lock(&'static self) -> Option<GlobalGuard<B>> {
        self.ready();
        self.lock.try_lock()
    }
}

/// Defines a global lock that initialises itself on first use.
///
/// As [`global_lock!`](crate::global_lock), without the `unsafe(uninit)`:
///
/// ```
/// kernel::lazy_global_lock! {
///     static NAMES: Mutex<u64> = 7;
/// }
/// assert_eq!(*NAMES.lock(), 7);
/// ```
#[macro_export]
macro_rules! lazy_global_lock {
    {
        $(#[$meta:meta])* $pub:vis
        static $name:ident: $kind:ident<$valuety:ty> = $value:expr;
    } => {
        #[doc = ::core::concat!("Backend type of [`", ::core::stringify!($name), "`].")]
        #[allow(non_camel_case_types, unreachable_pub)]
        $pub enum $name {}

        impl $crate::sync::lock::GlobalLockBackend for $name {
            const NAME: &'static $crate::str::CStr = $crate::c_str!(::core::stringify!($name));
            type Item = $valuety;
            type Backend = $crate::global_lock_inner!(backend $kind);

            fn get_lock_class() -> ::core::pin::Pin<&'static $crate::sync::LockClassKey> {
                $crate::static_lock_class!()
            }
        }

        $(#[$meta])*
        $pub static $name: $crate::sync::lazy_global::LazyGlobalLock<$name> = {
            // Outside the unsafe block.
            let init: $valuety = $value;
            // SAFETY: The backend type is this static's alone.
            unsafe { $crate::sync::lazy_global::LazyGlobalLock::new(init) }
        };
    };
}
