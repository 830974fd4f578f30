// SPDX-License-Identifier: GPL-2.0

//! MMU interval notifiers.
//!
//! An interval notifier watches a range of an address space and is called
//! before the kernel changes the mappings in that range: on `munmap`, `mremap`,
//! `madvise(MADV_DONTNEED)`, `mprotect`, page migration, address space
//! teardown and more. A driver that keeps its own view of user memory (device
//! page tables, pinned pages) stops using that view in the callback.
//!
//! A type embeds an [`IntervalNotifier`] field, declares it with
//! [`impl_has_interval_notifier!`] and implements [`IntervalNotifierOps`]. The
//! notifier is inserted with [`IntervalNotifier::insert`], which returns a
//! [`Subscription`]: it owns a reference to the containing [`Arc`], so the
//! callback always sees a live object, and dropping it removes the notifier
//! (waiting for callbacks in flight). Safe code cannot leave a notifier
//! inserted without keeping its subscription alive.
//!
//! The sequence API ([`IntervalNotifier::read_begin`],
//! [`IntervalNotifier::read_retry`], [`IntervalNotifier::set_seq`]) lets a
//! driver detect that an invalidation raced with its own set-up of the range,
//! as described in `include/linux/mmu_notifier.h`.
//!
//! C header: [`include/linux/mmu_notifier.h`](srctree/include/linux/mmu_notifier.h)
#![cfg(CONFIG_MMU_NOTIFIER)]

use crate::{
    bindings,
    error::{to_result, Result},
    mm::{virt::VmaNew, Mm, MmWithUser},
    prelude::*,
    sync::{
        aref::ARef,
        atomic::{Acquire, Atomic, Full, Relaxed, Release},
        Arc, SetOnce,
    },
    types::Opaque,
};
use core::marker::PhantomData;

/// Why the mappings of a range are about to change (`enum mmu_notifier_event`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The range is unmapped: `munmap`, `mremap`, a VMA going away.
    Unmap,
    /// Page table entries are cleared: `madvise(MADV_DONTNEED/FREE)`, zapping,
    /// huge page split or collapse, copy-on-write break.
    Clear,
    /// The protection of the VMA changes: `mprotect`.
    ProtectionVma,
    /// Pages are write-protected without a VMA change: `fork` of a
    /// copy-on-write mapping, writeback of a shared file page.
    ProtectionPage,
    /// Soft-dirty tracking is reset.
    SoftDirty,
    /// The address space is being torn down: the process exits.
    Release,
    /// Pages are migrated.
    Migrate,
    /// Pages are made exclusive to a device.
    Exclusive,
    /// An event this abstraction does not know yet.
    Other(u32),
}

impl Event {
    fn from_raw(raw: bindings::mmu_notifier_event) -> Self {
        match raw {
            bindings::mmu_notifier_event_MMU_NOTIFY_UNMAP => Self::Unmap,
            bindings::mmu_notifier_event_MMU_NOTIFY_CLEAR => Self::Clear,
            bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_VMA => Self::ProtectionVma,
            bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_PAGE => Self::ProtectionPage,
            bindings::mmu_notifier_event_MMU_NOTIFY_SOFT_DIRTY => Self::SoftDirty,
            bindings::mmu_notifier_event_MMU_NOTIFY_RELEASE => Self::Release,
            bindings::mmu_notifier_event_MMU_NOTIFY_MIGRATE => Self::Migrate,
            bindings::mmu_notifier_event_MMU_NOTIFY_EXCLUSIVE => Self::Exclusive,
            other => Self::Other(other),
        }
    }

    /// The kernel's numeric value of the event.
    pub fn as_raw(self) -> u32 {
        match self {
            Self::Unmap => bindings::mmu_notifier_event_MMU_NOTIFY_UNMAP,
            Self::Clear => bindings::mmu_notifier_event_MMU_NOTIFY_CLEAR,
            Self::ProtectionVma => bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_VMA,
            Self::ProtectionPage => bindings::mmu_notifier_event_MMU_NOTIFY_PROTECTION_PAGE,
            Self::SoftDirty => bindings::mmu_notifier_event_MMU_NOTIFY_SOFT_DIRTY,
            Self::Release => bindings::mmu_notifier_event_MMU_NOTIFY_RELEASE,
            Self::Migrate => bindings::mmu_notifier_event_MMU_NOTIFY_MIGRATE,
            Self::Exclusive => bindings::mmu_notifier_event_MMU_NOTIFY_EXCLUSIVE,
            Self::Other(raw) => raw,
        }
    }
}

/// The range an invalidation covers (`struct mmu_notifier_range`).
pub struct Range<'a> {
    raw: &'a bindings::mmu_notifier_range,
}

impl Range<'_> {
    /// First address of the range.
    pub fn start(&self) -> usize {
        self.raw.start
    }

    /// One past the last address of the range.
    pub fn end(&self) -> usize {
        self.raw.end
    }

    /// Why the range changes.
    pub fn event(&self) -> Event {
        Event::from_raw(self.raw.event)
    }

    /// Whether the callback may sleep. When it may not (the OOM reaper), a
    /// callback that would have to sleep returns `false` instead.
    pub fn may_block(&self) -> bool {
        // SAFETY: `self.raw` is a valid range for the duration of the callback.
        unsafe { bindings::mmu_notifier_range_blockable(self.raw) }
    }
}

/// The callback of an interval notifier.
pub trait IntervalNotifierOps: HasIntervalNotifier<Self> + Send + Sync + Sized {
    /// Called before the mappings of `range`, which overlaps the watched
    /// interval, change. Upon return the implementation must no longer use the
    /// pages it found in that range.
    ///
    /// `cur_seq` is to be passed to [`IntervalNotifier::set_seq`] under the
    /// lock that guards [`IntervalNotifier::read_retry`], if the sequence API
    /// is used. Return `false` only when `range.may_block()` is `false` and the
    /// work needs to sleep.
    ///
    /// Runs with locks of the memory-management code held: it must not
    /// allocate memory with `GFP_KERNEL`, and must not drop a
    /// [`Subscription`] (removal waits for the callback).
    fn invalidate(this: &Self, range: &Range<'_>, cur_seq: u64) -> bool;
}

/// Declares that a type contains an [`IntervalNotifier<Self>`] field.
///
/// # Safety
///
/// The two methods must return valid pointers and be inverses of each other,
/// as [`impl_has_interval_notifier!`] guarantees.
pub unsafe trait HasIntervalNotifier<T> {
    /// Returns a pointer to the notifier field of `*ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must point at a valid `Self`.
    unsafe fn raw_get_notifier(ptr: *const Self) -> *const IntervalNotifier<T>;

    /// Returns a pointer to the struct containing the notifier at `ptr`.
    ///
    /// # Safety
    ///
    /// `ptr` must point at the notifier field of a `Self`.
    unsafe fn notifier_container_of(ptr: *const IntervalNotifier<T>) -> *const Self;
}

/// Implements [`HasIntervalNotifier`] for a type with an
/// [`IntervalNotifier<Self>`] field.
///
/// ```ignore
/// impl_has_interval_notifier! { impl HasIntervalNotifier<Self> for Region { self.notifier } }
/// ```
#[macro_export]
macro_rules! impl_has_interval_notifier {
    (impl$({$($generics:tt)*})? HasIntervalNotifier<Self> for $self:ty { self.$field:ident }) => {
        // SAFETY: `raw_get_notifier` only compiles if the field has the right type, and
        // `container_of!` is its inverse.
        unsafe impl$(<$($generics)+>)? $crate::mm::mmu_notifier::HasIntervalNotifier<$self>
            for $self
        {
            #[inline]
            unsafe fn raw_get_notifier(
                ptr: *const Self,
            ) -> *const $crate::mm::mmu_notifier::IntervalNotifier<$self> {
                // SAFETY: The caller promises that `ptr` points at a valid `Self`.
                unsafe { ::core::ptr::addr_of!((*ptr).$field) }
            }

            #[inline]
            unsafe fn notifier_container_of(
                ptr: *const $crate::mm::mmu_notifier::IntervalNotifier<$self>,
            ) -> *const Self {
                // SAFETY: The caller promises that `ptr` points at the field in a `Self`.
                unsafe { $crate::container_of!(ptr.cast_mut(), Self, $field) }
            }
        }
    };
}
pub use impl_has_interval_notifier;

const STATE_IDLE: i32 = 0;
const STATE_INSERTING: i32 = 1;
const STATE_INSERTED: i32 = 2;
const STATE_REMOVED: i32 = 3;
const STATE_FAILED: i32 = 4;

/// An MMU interval notifier embedded in a `T` (`struct mmu_interval_notifier`).
///
/// # Invariants
///
/// - While `state` is `STATE_INSERTED`, `sub` is inserted in an address space
///   with this type's callback table, and exactly one [`Subscription`] owns a
///   reference of the `Arc<T>` that contains it.
/// - `state` only moves forward: idle, inserting, then inserted and removed,
///   or failed when the insertion fails. Only the caller that moved it to
///   inserting touches `sub` until it leaves that state, and only the
///   [`Subscription`] moves it from inserted to removed, so a removal never
///   meets an insertion in progress.
/// - In the inserted and removed states, `mm` holds a reference on the
///   address space `sub` points at, so `sub.mm` stays valid as long as `self`.
///
/// # Examples
///
/// A notifier that records the events it sees, over a real mapping of a KUnit
/// test's address space.
///
/// ```
/// use kernel::kunit_mm::UserMapping;
/// use kernel::mm::mmu_notifier::{
///     impl_has_interval_notifier, Event, IntervalNotifier, IntervalNotifierOps, Range,
/// };
/// use kernel::page::PAGE_SIZE;
/// use kernel::sync::{atomic::{Atomic, Relaxed}, Arc};
///
/// #[pin_data]
/// struct Watch {
///     #[pin]
///     notifier: IntervalNotifier<Watch>,
///     unmaps: Atomic<u32>,
///     last_start: Atomic<usize>,
/// }
/// impl_has_interval_notifier! { impl HasIntervalNotifier<Self> for Watch { self.notifier } }
/// impl IntervalNotifierOps for Watch {
///     fn invalidate(this: &Self, range: &Range<'_>, _cur_seq: u64) -> bool {
///         if range.event() == Event::Unmap {
///             this.unmaps.add(1, Relaxed);
///             this.last_start.store(range.start(), Relaxed);
///         }
///         true
///     }
/// }
///
/// let map = UserMapping::anonymous(8 * PAGE_SIZE)?;
/// let watch = Arc::pin_init(pin_init!(Watch {
///     notifier <- IntervalNotifier::new(),
///     unmaps: Atomic::new(0),
///     last_start: Atomic::new(0),
/// }), GFP_KERNEL)?;
/// let current = kernel::current!();
/// let mm = current.mm().ok_or(EINVAL)?;
/// // Watch the second half of the mapping.
/// let sub = IntervalNotifier::insert(watch.clone(), mm, map.addr() + 4 * PAGE_SIZE, 4 * PAGE_SIZE)?;
/// assert_eq!(watch.notifier.start(), Some(map.addr() + 4 * PAGE_SIZE));
/// // A notifier is inserted once.
/// assert_eq!(
///     IntervalNotifier::insert(watch.clone(), mm, map.addr(), PAGE_SIZE).err(),
///     Some(EBUSY)
/// );
///
/// // Unmapping outside the interval is not reported; inside it is.
/// map.unmap(0, PAGE_SIZE)?;
/// assert_eq!(watch.unmaps.load(Relaxed), 0);
/// let seq = watch.notifier.read_begin();
/// map.unmap(5 * PAGE_SIZE, PAGE_SIZE)?;
/// assert_eq!(watch.unmaps.load(Relaxed), 1);
/// assert_eq!(watch.last_start.load(Relaxed), map.addr() + 5 * PAGE_SIZE);
/// // The callback did not call `set_seq`, so the sequence still reads as valid.
/// assert!(!watch.notifier.read_retry(seq));
///
/// // Dropping the subscription removes the notifier: nothing more is reported,
/// // and the reference the subscription held is released: ours is the only
/// // one left.
/// drop(sub);
/// assert!(!watch.notifier.is_inserted());
/// map.unmap(4 * PAGE_SIZE, PAGE_SIZE)?;
/// assert_eq!(watch.unmaps.load(Relaxed), 1);
/// assert!(Arc::into_unique_or_drop(watch).is_some());
/// # Ok::<(), Error>(())
/// ```
#[pin_data]
#[repr(C)]
pub struct IntervalNotifier<T> {
    #[pin]
    sub: Opaque<bindings::mmu_interval_notifier>,
    state: Atomic<i32>,
    mm: SetOnce<ARef<Mm>>,
    _t: PhantomData<T>,
}

// SAFETY: The notifier is only manipulated through the C API, which is thread-safe, and through
// the atomic `state`.
unsafe impl<T: Send + Sync> Send for IntervalNotifier<T> {}
// SAFETY: See above; no method gives out references to `T`.
unsafe impl<T: Send + Sync> Sync for IntervalNotifier<T> {}

impl<T: IntervalNotifierOps> IntervalNotifier<T> {
    const OPS: bindings::mmu_interval_notifier_ops = bindings::mmu_interval_notifier_ops {
        invalidate: Some(Self::invalidate_callback),
        invalidate_start: None,
        invalidate_finish: None,
    };

    /// Creates a notifier that is not inserted yet.
    pub fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            sub: Opaque::zeroed(),
            state: Atomic::new(STATE_IDLE),
            mm: SetOnce::new(),
            _t: PhantomData,
        })
    }

    /// Inserts the notifier of `this` for `length` bytes from `start` of the
    /// address space `mm`.
    ///
    /// The returned [`Subscription`] owns a reference to `this` and removes
    /// the notifier when dropped; the callback may run as soon as this
    /// returns, or before. A notifier is inserted at most once, and not again
    /// after a failed insertion: `EBUSY`. May sleep and take `mm`'s
    /// `mmap_lock`.
    pub fn insert(
        this: Arc<T>,
        mm: &MmWithUser,
        start: usize,
        length: usize,
    ) -> Result<Subscription<T>> {
        Self::insert_with(this, mm, |sub, mm| {
            // SAFETY: `sub` is zeroed, pinned inside the `Arc` and not inserted; the caller of
            // `insert_with` owns the inserting state. `mm` has users for the duration of the
            // call. `OPS` is a static table.
            unsafe { bindings::mmu_interval_notifier_insert(sub, mm, start, length, &Self::OPS) }
        })
    }

    /// Inserts the notifier of `this` for `length` bytes from `start` of the
    /// address space of `vma`, from the `mmap` handler that is creating
    /// `vma` (its caller holds the address space's `mmap_lock` for writing,
    /// which [`IntervalNotifier::insert`] would take). Otherwise as
    /// [`IntervalNotifier::insert`].
    pub fn insert_locked(
        this: Arc<T>,
        vma: &VmaNew,
        start: usize,
        length: usize,
    ) -> Result<Subscription<T>> {
        Self::insert_with(this, vma.mm(), |sub, mm| {
            // SAFETY: As in `insert`; a `VmaNew` exists only inside an `mmap` handler, whose
            // caller holds `mm`'s `mmap_lock` for writing, as
            // `mmu_interval_notifier_insert_locked` needs.
            unsafe {
                bindings::mmu_interval_notifier_insert_locked(sub, mm, start, length, &Self::OPS)
            }
        })
    }

    /// Inserts the notifier of `this` into `mm` with `insert`, which is
    /// given the zeroed subscription and the address space and returns the
    /// C result.
    fn insert_with(
        this: Arc<T>,
        mm: &MmWithUser,
        insert: impl FnOnce(*mut bindings::mmu_interval_notifier, *mut bindings::mm_struct) -> i32,
    ) -> Result<Subscription<T>> {
        // SAFETY: `this` is a valid `T`.
        let notifier = unsafe { &*T::raw_get_notifier(&*this) };
        notifier
            .state
            .cmpxchg(STATE_IDLE, STATE_INSERTING, Full)
            .map_err(|_| EBUSY)?;
        // Keep the address space's `mm_struct` for as long as the notifier, so that reading
        // the sequence stays valid even after removal.
        notifier.mm.populate(ARef::from(&**mm));
        if let Err(e) = to_result(insert(notifier.sub.get(), mm.as_raw())) {
            // INVARIANT: A failed insertion is final.
            notifier.state.store(STATE_FAILED, Release);
            return Err(e);
        }
        // INVARIANT: The subscription is inserted; the `Subscription` returned owns `this`.
        notifier.state.store(STATE_INSERTED, Release);
        Ok(Subscription { this })
    }

    /// The C subscription, for the other abstractions of this crate.
    pub(crate) fn as_raw(&self) -> *mut bindings::mmu_interval_notifier {
        self.sub.get()
    }

    /// Whether the notifier was inserted into `mm` (it may have been removed
    /// since).
    pub(crate) fn watches(&self, mm: &Mm) -> bool {
        self.mm
            .as_ref()
            .is_some_and(|m| core::ptr::eq(m.as_raw(), mm.as_raw()))
    }

    /// Whether the notifier is inserted now.
    pub fn is_inserted(&self) -> bool {
        self.state.load(Relaxed) == STATE_INSERTED
    }

    /// First address of the watched interval, while inserted.
    pub fn start(&self) -> Option<usize> {
        self.is_inserted().then(|| {
            // SAFETY: While inserted, `sub` is an initialised subscription whose interval node
            // only changes under the subscription's own locking, never for a live notifier.
            unsafe { (*self.sub.get()).interval_tree.start }
        })
    }

    /// Starts a read of the interval's pages; pass the result to
    /// [`IntervalNotifier::read_retry`]. Waits for an invalidation in
    /// progress to finish. May sleep. Returns 0 before the notifier is
    /// inserted (or while it is being inserted).
    pub fn read_begin(&self) -> u64 {
        match self.state.load(Acquire) {
            STATE_INSERTED | STATE_REMOVED if self.mm.as_ref().is_some() => {}
            _ => return 0,
        }
        // Reading the sequence of a removed subscription is harmless.
        // SAFETY: Inserted (acquire pairs with `insert`'s release): `sub.mm` is the address
        // space `self.mm` keeps a reference on, so its notifier state is alive.
        unsafe { bindings::mmu_interval_read_begin(self.sub.get()) as u64 }
    }

    /// Whether an invalidation began since `seq` was read: the pages found
    /// must then not be used. Call under the lock the callback holds for
    /// [`IntervalNotifier::set_seq`].
    pub fn read_retry(&self, seq: u64) -> bool {
        // SAFETY: `sub` is a valid (possibly zeroed) subscription; this only compares sequence
        // numbers.
        unsafe { bindings::mmu_interval_read_retry(self.sub.get(), seq as usize) }
    }

    /// Records `cur_seq` from the callback, under the lock that guards
    /// [`IntervalNotifier::read_retry`].
    pub fn set_seq(&self, cur_seq: u64) {
        // SAFETY: `sub` is a valid subscription; this stores a sequence number.
        unsafe { bindings::mmu_interval_set_seq(self.sub.get(), cur_seq as usize) }
    }

    /// The C callback of the notifier.
    ///
    /// # Safety
    ///
    /// Called by the MMU notifier code only, with a subscription inserted by
    /// [`IntervalNotifier::insert`] and a valid range.
    unsafe extern "C" fn invalidate_callback(
        sub: *mut bindings::mmu_interval_notifier,
        range: *const bindings::mmu_notifier_range,
        cur_seq: usize,
    ) -> bool {
        // The notifier is `repr(C)` with `sub` first, so the subscription's address is the
        // notifier's.
        let notifier = sub.cast::<Self>().cast_const();
        // SAFETY: The C code passes a subscription inserted by `insert`, which lives in a `T`
        // kept alive by the reference the `Subscription` owns until its removal returns, and
        // removal waits for this callback.
        let this = unsafe { &*T::notifier_container_of(notifier) };
        // SAFETY: The C code passes a valid range for the duration of the call.
        let raw = unsafe { &*range };
        let range = Range { raw };
        T::invalidate(this, &range, cur_seq as u64)
    }
}

/// An inserted [`IntervalNotifier`]: owns a reference to the object that
/// contains it, and removes it when dropped.
///
/// # Invariants
///
/// The notifier of `this` is inserted (`STATE_INSERTED`) until `drop`, and
/// this is the only `Subscription` of it.
pub struct Subscription<T: IntervalNotifierOps> {
    this: Arc<T>,
}

impl<T: IntervalNotifierOps> Subscription<T> {
    /// The object whose notifier this is.
    pub fn get(&self) -> &Arc<T> {
        &self.this
    }
}

impl<T: IntervalNotifierOps> Drop for Subscription<T> {
    /// Removes the notifier, waiting for callbacks in flight to return, then
    /// releases the reference. May sleep: must not be dropped in the
    /// notifier's own callback (it would wait for itself) or under a spinlock.
    fn drop(&mut self) {
        // SAFETY: `self.this` is a valid `T`.
        let notifier = unsafe { &*T::raw_get_notifier(&*self.this) };
        // INVARIANT: We are the only subscription, so this transition is ours alone.
        notifier.state.store(STATE_REMOVED, Release);
        // SAFETY: By the type invariant the subscription is inserted, and it is removed exactly
        // once, here.
        unsafe { bindings::mmu_interval_notifier_remove(notifier.sub.get()) };
    }
}
