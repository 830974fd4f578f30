// SPDX-License-Identifier: GPL-2.0

//! Shrinkers: callbacks through which the memory management code asks a
//! cache to give memory back under memory pressure.
//!
//! A [`Shrinker`] owns one registered `struct shrinker` whose private data
//! is an [`Arc`] of the cache. Reclaim calls [`ShrinkerOps::count`] to learn
//! how many objects the cache could free and [`ShrinkerOps::scan`] to have
//! it free some. Dropping the [`Shrinker`] unregisters it and waits for
//! callbacks in progress, so the cache is never reached afterwards.
//!
//! Callbacks run in reclaim, possibly inside an allocation of any thread:
//! they must not allocate with `GFP_KERNEL` or wait for anything that may
//! itself be waiting for memory, and they should only take locks that are
//! never held across an allocation.
//!
//! C header: [`include/linux/shrinker.h`](srctree/include/linux/shrinker.h)

use crate::{
    bindings,
    prelude::*,
    sync::{Arc, ArcBorrow},
};
use core::ptr::NonNull;

/// `SHRINK_STOP` of `shrinker.h`: the scan could do nothing now.
const SHRINK_STOP: usize = !0;
/// `SHRINK_EMPTY` of `shrinker.h`: the cache has nothing to free.
const SHRINK_EMPTY: usize = !0 - 1;

/// What a shrinkable cache does under memory pressure. The callbacks borrow
/// the cache's [`Arc`], so they may hand a reference to deferred work.
pub trait ShrinkerOps: Send + Sync + Sized {
    /// The number of objects that [`ShrinkerOps::scan`] could free now.
    fn count(this: ArcBorrow<'_, Self>) -> usize;

    /// Frees up to `nr_to_scan` objects and returns how many it freed, or
    /// `None` when it cannot make progress now (for example a lock it needs
    /// is contended).
    fn scan(this: ArcBorrow<'_, Self>, nr_to_scan: usize) -> Option<usize>;
}

/// A registered shrinker of the cache `T`.
///
/// # Invariants
///
/// `shrinker` was returned by `shrinker_alloc`, is registered, and its
/// `private_data` is a pointer from [`Arc::into_raw`] of an `Arc<T>` owned by
/// this object.
///
/// # Examples
///
/// ```
/// use kernel::shrinker::{Shrinker, ShrinkerOps};
/// use kernel::sync::{Arc, ArcBorrow, atomic::{Atomic, Relaxed}};
///
/// struct Cache {
///     objects: Atomic<usize>,
/// }
/// impl ShrinkerOps for Cache {
///     fn count(this: ArcBorrow<'_, Self>) -> usize {
///         this.objects.load(Relaxed)
///     }
///     fn scan(this: ArcBorrow<'_, Self>, nr: usize) -> Option<usize> {
///         let n = nr.min(this.objects.load(Relaxed));
///         this.objects.fetch_sub(n, Relaxed);
///         Some(n)
///     }
/// }
///
/// let cache = Arc::new(Cache { objects: Atomic::new(3) }, GFP_KERNEL)?;
/// let shrinker = Shrinker::register(c"kunit-cache", cache.clone())?;
/// // The callbacks reach the cache through the shrinker.
/// assert_eq!(shrinker.count(), 3);
/// assert_eq!(shrinker.scan(2), 2);
/// assert_eq!(shrinker.count(), 1);
/// drop(shrinker);
/// // Unregistered: the shrinker's reference is gone.
/// assert!(Arc::into_unique_or_drop(cache).is_some());
/// # Ok::<(), Error>(())
/// ```
pub struct Shrinker<T: ShrinkerOps> {
    shrinker: NonNull<bindings::shrinker>,
    _data: core::marker::PhantomData<Arc<T>>,
}

// SAFETY: The shrinker is manipulated only through the C API, which is thread-safe, and `T` is
// `Send + Sync`.
unsafe impl<T: ShrinkerOps> Send for Shrinker<T> {}
// SAFETY: See above; `&Shrinker` only runs the callbacks, which take `&T`.
unsafe impl<T: ShrinkerOps> Sync for Shrinker<T> {}

impl<T: ShrinkerOps> Shrinker<T> {
    /// Allocates and registers a shrinker named `name` (shown in debugfs)
    /// for `data`. May sleep.
    pub fn register(name: &CStr, data: Arc<T>) -> Result<Self> {
        // SAFETY: The format is a constant "%s" with one string argument, a valid C string.
        let raw = unsafe { bindings::shrinker_alloc(0, c"%s".as_char_ptr(), name.as_char_ptr()) };
        let shrinker = NonNull::new(raw).ok_or(ENOMEM)?;
        let ptr = shrinker.as_ptr();
        // SAFETY: `ptr` was just allocated and is not registered yet, so nothing else reads these
        // fields; `shrinker_alloc` zeroed the others and set `seeks`.
        unsafe {
            (*ptr).count_objects = Some(Self::count_callback);
            (*ptr).scan_objects = Some(Self::scan_callback);
            (*ptr).private_data = Arc::into_raw(data).cast_mut().cast();
        }
        // SAFETY: The shrinker is fully initialised.
        unsafe { bindings::shrinker_register(ptr) };
        // INVARIANT: Registered, with `private_data` from `Arc::into_raw`.
        Ok(Self {
            shrinker,
            _data: core::marker::PhantomData,
        })
    }

    fn data(&self) -> ArcBorrow<'_, T> {
        // SAFETY: By the type invariant `private_data` comes from `Arc::into_raw` and `self`
        // owns that reference for at least the borrow.
        unsafe { Self::borrow(self.shrinker.as_ptr()) }
    }

    /// The cache of a registered shrinker.
    ///
    /// # Safety
    ///
    /// `shrinker` is registered by [`Shrinker::register`] and not freed for `'a`.
    unsafe fn borrow<'a>(shrinker: *mut bindings::shrinker) -> ArcBorrow<'a, T> {
        // SAFETY: `private_data` is from `Arc::into_raw` of an `Arc<T>` whose reference is
        // dropped only after the shrinker is freed, which the caller rules out for `'a`.
        unsafe { ArcBorrow::from_raw((*shrinker).private_data.cast::<T>()) }
    }

    /// Calls the count callback as reclaim would.
    pub fn count(&self) -> usize {
        T::count(self.data())
    }

    /// Calls the scan callback as reclaim would.
    pub fn scan(&self, nr_to_scan: usize) -> usize {
        T::scan(self.data(), nr_to_scan).unwrap_or(0)
    }

    /// # Safety
    ///
    /// Called by reclaim with a shrinker registered by [`Shrinker::register`].
    unsafe extern "C" fn count_callback(
        shrinker: *mut bindings::shrinker,
        _sc: *mut bindings::shrink_control,
    ) -> usize {
        // SAFETY: The shrinker is freed only after this callback returns.
        let data = unsafe { Self::borrow(shrinker) };
        match T::count(data) {
            0 => SHRINK_EMPTY,
            n => n.min(SHRINK_EMPTY - 1),
        }
    }

    /// # Safety
    ///
    /// Called by reclaim with a shrinker registered by [`Shrinker::register`] and a
    /// valid control structure.
    unsafe extern "C" fn scan_callback(
        shrinker: *mut bindings::shrinker,
        sc: *mut bindings::shrink_control,
    ) -> usize {
        // SAFETY: The shrinker is freed only after this callback returns.
        let data = unsafe { Self::borrow(shrinker) };
        // SAFETY: Reclaim passes a valid control structure.
        let nr = unsafe { (*sc).nr_to_scan };
        T::scan(data, nr).map_or(SHRINK_STOP, |n| n.min(SHRINK_EMPTY - 1))
    }
}

impl<T: ShrinkerOps> Drop for Shrinker<T> {
    fn drop(&mut self) {
        let ptr = self.shrinker.as_ptr();
        // SAFETY: By the type invariant the shrinker is registered; it is read before it is
        // freed.
        let data = unsafe { (*ptr).private_data.cast::<T>() };
        // SAFETY: Registered and not used after this; `shrinker_free` unregisters it and waits
        // for callbacks in progress.
        unsafe { bindings::shrinker_free(ptr) };
        // SAFETY: From `Arc::into_raw` in `register`, reclaimed once, after the last callback.
        drop(unsafe { Arc::from_raw(data) });
    }
}
