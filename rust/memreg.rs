// SPDX-License-Identifier: GPL-2.0

//! memreg: registered user memory with automatic invalidation.
//!
//! Each open file of `/dev/memreg` is a [`Context`] bound to the address
//! space of the process that opened it. A registration pins user pages, keeps
//! their translation entries, is reused by later registrations it covers, and
//! ends by itself when the memory under it changes. See
//! `Documentation/memreg.rst`.

use kernel::{
    fs::File,
    ioctl::_IOC_SIZE,
    miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
    sync::atomic::Relaxed,
    uaccess::{UserPtr, UserSlice},
};

mod accounting;
mod context;
mod defs;
mod error;
mod key;
mod registration;
mod stats;

use context::Context;
use stats::{GLOBAL_CONTEXTS, GLOBAL_PINNED, GLOBAL_REGISTRATIONS};

module! {
    type: MemregModule,
    name: "memreg",
    authors: ["The memreg developers"],
    description: "Registered user memory with automatic invalidation",
    license: "GPL",
    params: {
        max_pinned_pages: u64 {
            default: 0,
            description: "Pages all contexts together may pin (0: no limit but RLIMIT_MEMLOCK)",
        },
        max_registrations: u64 {
            default: 65536,
            description: "Live registrations one context may hold (REGISTER past it: EDQUOT)",
        },
    },
}

/// The per-context cap on live registrations.
pub(crate) fn max_registrations() -> u64 {
    module_parameters::max_registrations.value()
}

#[pin_data(PinnedDrop)]
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

#[pinned_drop]
impl PinnedDrop for MemregModule {
    fn drop(self: Pin<&mut Self>) {
        // Every file is closed before the module can go, and closing a file ends all of its
        // registrations and waits for its deferred work: anything left here is a leak.
        kernel::warn_on!(
            GLOBAL_CONTEXTS.load(Relaxed) != 0
                || GLOBAL_REGISTRATIONS.load(Relaxed) != 0
                || GLOBAL_PINNED.load(Relaxed) != 0
        );
    }
}

#[vtable]
impl MiscDevice for Context {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        Ok(KBox::new(Context::new()?, GFP_KERNEL_ACCOUNT)?)
    }

    fn ioctl(me: &Context, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let (mut reader, mut writer) =
            UserSlice::new(UserPtr::from_addr(arg), _IOC_SIZE(cmd)).reader_writer();
        match cmd {
            defs::IOC_GET_VERSION => writer.write(&defs::ABI_VERSION)?,
            defs::IOC_GLOBAL_STATS => writer.write(&stats::global())?,
            defs::IOC_REGISTER => {
                me.check_owner()?;
                let mut req: defs::Register = reader.read()?;
                let done = me.register_ioctl(&mut req)?;
                if let Err(e) = writer.write(&req) {
                    // The caller cannot learn the keys: undo the call.
                    me.unregister(&done);
                    return Err(e);
                }
            }
            defs::IOC_DEREGISTER => {
                me.check_owner()?;
                me.deregister(&reader.read()?)?;
            }
            defs::IOC_QUERY => {
                me.check_owner()?;
                let mut req: defs::Query = reader.read()?;
                me.query(&mut req)?;
                writer.write(&req)?;
            }
            defs::IOC_STATS => {
                me.check_owner()?;
                writer.write(&me.stats().to_abi())?;
            }
            defs::IOC_COPY => {
                me.check_owner()?;
                me.copy(&reader.read()?)?;
            }
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }
}
