// SPDX-License-Identifier: GPL-2.0

//! memreg: registered user memory with automatic invalidation.
//!
//! Each open file of `/dev/memreg` is a [`Context`] bound to the address
//! space of the process that opened it. See `Documentation/memreg.rst`.

use kernel::{
    fs::File,
    ioctl::_IOC_SIZE,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
    uaccess::{UserPtr, UserSlice},
};

mod uapi;

module! {
    type: MemregModule,
    name: "memreg",
    authors: ["The memreg developers"],
    description: "Registered user memory with automatic invalidation",
    license: "GPL",
}

#[pin_data]
struct MemregModule {
    #[pin]
    _miscdev: MiscDeviceRegistration<Context>,
}

impl kernel::InPlaceModule for MemregModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            _miscdev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"memreg" }),
        })
    }
}

/// The state of one open file of `/dev/memreg`.
struct Context;

#[vtable]
impl MiscDevice for Context {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        Ok(KBox::new(Context, GFP_KERNEL)?)
    }

    fn ioctl(_me: &Context, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let user = UserSlice::new(UserPtr::from_addr(arg), _IOC_SIZE(cmd));
        match cmd {
            uapi::IOC_GET_VERSION => user.writer().write(&uapi::ABI_VERSION)?,
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }
}
