// SPDX-License-Identifier: GPL-2.0

//! File operations of misc devices that [`MiscDevice`] does not offer yet:
//! `poll`.
//!
//! A driver implements [`MiscDevicePoll`] and registers with
//! [`MiscDeviceRegistration::register_with_poll`]; its file operations are
//! those of [`MiscDevice`] plus `poll`.
//!
//! [`MiscDeviceRegistration::device_of`] recognises a file of such a device
//! among any files (one a process received over a socket, say) and borrows
//! its device, the way dma-buf's `is_dma_buf_file` recognises its files by
//! their file operations.

use super::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration, MiscdeviceVTable};
use crate::{
    bindings,
    error::to_result,
    fs::{File, LocalFile},
    prelude::*,
    sync::poll::PollTable,
    types::{ForeignOwnable, Opaque},
};
use core::marker::PhantomData;

/// A misc device whose files can be polled.
pub trait MiscDevicePoll: MiscDevice + 'static {
    /// Registers the waits of `table` (with [`PollTable::register_wait`])
    /// and returns the events ready now (`EPOLLIN`, ...).
    fn poll(
        device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        file: &File,
        table: PollTable<'_>,
    ) -> u32;

    /// The device's file operations: a `static` of the driver's,
    /// `static FOPS: PollFileOps<Device> = PollFileOps::new();`, so that they
    /// have one address, which is how [`MiscDeviceRegistration::device_of`]
    /// recognises the device's files (a `const` may be copied anywhere).
    fn file_ops() -> &'static PollFileOps<Self>;
}

/// The file operations of a misc device with `poll`, to be kept in a
/// `static` (see [`MiscDevicePoll::file_ops`]).
pub struct PollFileOps<T: MiscDevicePoll> {
    fops: bindings::file_operations,
    _t: PhantomData<T>,
}

// SAFETY: The file operations are function pointers and constants, read-only once built.
unsafe impl<T: MiscDevicePoll> Sync for PollFileOps<T> {}

impl<T: MiscDevicePoll> PollFileOps<T> {
    /// The file operations of `T`'s files.
    pub const fn new() -> Self {
        Self {
            fops: bindings::file_operations {
                poll: Some(PollVTable::<T>::poll),
                ..MiscdeviceVTable::<T>::VTABLE
            },
            _t: PhantomData,
        }
    }
}

impl<T: MiscDevicePoll> Default for PollFileOps<T> {
    fn default() -> Self {
        Self::new()
    }
}

struct PollVTable<T: MiscDevicePoll>(PhantomData<T>);

impl<T: MiscDevicePoll> PollVTable<T> {
    /// The file operations, always at the same address (the driver's
    /// `static`): files are recognised by it. Every `PollFileOps<T>` holds
    /// the same operations, so whichever the driver returns is `T`'s.
    fn build() -> &'static bindings::file_operations {
        &T::file_ops().fops
    }

    /// # Safety
    ///
    /// `file` must be a valid file associated with a `MiscDeviceRegistration<T>`, between its
    /// `open` and `release`; `table` a valid poll table or null.
    unsafe extern "C" fn poll(
        file: *mut bindings::file,
        table: *mut bindings::poll_table_struct,
    ) -> bindings::__poll_t {
        // SAFETY: The poll call of a file can access the private data.
        let private = unsafe { (*file).private_data };
        // SAFETY: `open` stored a `T::Ptr` there with `into_foreign`, and `release` (which
        // takes it back) cannot run during this call.
        let device = unsafe { <T::Ptr as ForeignOwnable>::borrow(private.cast()) };
        // SAFETY: The file is valid for the duration of this call, and no `fdget_pos` region is
        // active on it on this thread.
        let file = unsafe { File::from_raw_file(file) };
        // SAFETY: `table` is a valid poll table, or null, for the duration of this call.
        let table = unsafe { PollTable::from_raw(table) };
        T::poll(device, file, table)
    }
}

impl<T: MiscDevicePoll> MiscDeviceRegistration<T> {
    /// Registers a misc device whose files have a `poll` operation.
    pub fn register_with_poll(opts: MiscDeviceOptions) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            inner <- Opaque::try_ffi_init(move |slot: *mut bindings::miscdevice| {
                let mut raw = opts.into_raw::<T>();
                raw.fops = PollVTable::<T>::build();
                // SAFETY: The initializer can write to the provided `slot`.
                unsafe { slot.write(raw) };
                // SAFETY: As in `MiscDeviceRegistration::register`: the slot holds the options,
                // and the pinned memory outlives the registration, which `drop` undoes.
                // INVARIANT: On success the slot holds a registered misc device.
                to_result(unsafe { bindings::misc_register(slot) })
            }),
            _t: PhantomData,
        })
    }

    /// The device of `file` when `file` is an open file of a misc device of
    /// type `T` registered with [`MiscDeviceRegistration::register_with_poll`],
    /// else `None`. The borrow lasts as long as the caller's reference to
    /// the file, which keeps the file from being released.
    ///
    /// The file is recognised by its file operations, which `misc_open`
    /// installs from the registration: no other file has them.
    pub fn device_of(file: &LocalFile) -> Option<<T::Ptr as ForeignOwnable>::Borrowed<'_>> {
        // SAFETY: `file` is a valid file for the duration of the borrow; `f_op` is set before a
        // file is published and does not change while it is open.
        let f_op = unsafe { (*file.as_ptr()).f_op };
        if !core::ptr::eq(f_op, PollVTable::<T>::build()) {
            return None;
        }
        // SAFETY: The file is open (the caller holds a reference), so reading its private data
        // is fine.
        let private = unsafe { (*file.as_ptr()).private_data };
        // SAFETY: Only `misc_open` installs these file operations, on a file of a registration
        // of `T`, and a file becomes reachable (through a descriptor) only after the `open` of
        // `MiscdeviceVTable::<T>` succeeded and stored a `T::Ptr` there with `into_foreign`.
        // `release`, which takes it back with `from_foreign`, runs only once the last reference
        // to the file is dropped, and the caller's reference outlives the borrow.
        Some(unsafe { <T::Ptr as ForeignOwnable>::borrow(private.cast()) })
    }
}
