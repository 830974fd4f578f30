// SPDX-License-Identifier: GPL-2.0

//! File operations of misc devices that [`MiscDevice`] does not offer yet:
//! `poll`.
//!
//! A driver implements [`MiscDevicePoll`] and registers with
//! [`MiscDeviceRegistration::register_with_poll`]; its file operations are
//! those of [`MiscDevice`] plus `poll`.

use super::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration, MiscdeviceVTable};
use crate::{
    bindings,
    error::to_result,
    fs::File,
    prelude::*,
    sync::poll::PollTable,
    types::{ForeignOwnable, Opaque},
};
use core::marker::PhantomData;

/// A misc device whose files can be polled.
pub trait MiscDevicePoll: MiscDevice {
    /// Registers the waits of `table` (with [`PollTable::register_wait`])
    /// and returns the events ready now (`EPOLLIN`, ...).
    fn poll(
        device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        file: &File,
        table: PollTable<'_>,
    ) -> u32;
}

struct PollVTable<T: MiscDevicePoll>(PhantomData<T>);

impl<T: MiscDevicePoll> PollVTable<T> {
    const VTABLE: bindings::file_operations = bindings::file_operations {
        poll: Some(Self::poll),
        ..MiscdeviceVTable::<T>::VTABLE
    };

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
                raw.fops = &PollVTable::<T>::VTABLE;
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
}
