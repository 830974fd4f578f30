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
    sync::atomic::{Atomic, Relaxed},
    uaccess::{UserPtr, UserSlice},
};

mod context;
mod key;
mod region;
mod uapi;

use context::Context;

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
    },
}

/// Open files of `/dev/memreg`.
pub(crate) static GLOBAL_CONTEXTS: Atomic<u64> = Atomic::new(0);
/// Region objects alive, including those waiting for teardown.
pub(crate) static GLOBAL_REGIONS: Atomic<u64> = Atomic::new(0);
/// Pages pinned by all contexts, charged against `max_pinned_pages`.
pub(crate) static GLOBAL_PINNED: Atomic<u64> = Atomic::new(0);

/// The configured global budget in pages, `u64::MAX` for none.
fn budget_pages() -> u64 {
    match module_parameters::max_pinned_pages.value() {
        0 => u64::MAX,
        n => n,
    }
}

/// A charge of pages against the module's global budget, released on drop.
pub(crate) struct BudgetCharge {
    pages: u64,
}

impl BudgetCharge {
    /// Charges `pages`, failing with `ENOSPC` past the budget.
    pub(crate) fn new(pages: usize) -> Result<Self> {
        let pages = pages as u64;
        let before = GLOBAL_PINNED.fetch_add(pages, Relaxed);
        if before
            .checked_add(pages)
            .is_none_or(|now| now > budget_pages())
        {
            GLOBAL_PINNED.fetch_sub(pages, Relaxed);
            return Err(ENOSPC);
        }
        Ok(Self { pages })
    }
}

impl Drop for BudgetCharge {
    fn drop(&mut self) {
        GLOBAL_PINNED.fetch_sub(self.pages, Relaxed);
    }
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
        // registrations: anything left here is a leak.
        kernel::warn_on!(
            GLOBAL_CONTEXTS.load(Relaxed) != 0
                || GLOBAL_REGIONS.load(Relaxed) != 0
                || GLOBAL_PINNED.load(Relaxed) != 0
        );
    }
}

#[vtable]
impl MiscDevice for Context {
    type Ptr = KBox<Self>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<Self>> {
        Ok(KBox::new(Context::new()?, GFP_KERNEL)?)
    }

    fn ioctl(me: &Context, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let (mut reader, mut writer) =
            UserSlice::new(UserPtr::from_addr(arg), _IOC_SIZE(cmd)).reader_writer();
        match cmd {
            uapi::IOC_GET_VERSION => writer.write(&uapi::ABI_VERSION)?,
            uapi::IOC_GLOBAL_STATS => uapi::GlobalStats {
                contexts: GLOBAL_CONTEXTS.load(Relaxed),
                regions: GLOBAL_REGIONS.load(Relaxed),
                pages_pinned: GLOBAL_PINNED.load(Relaxed),
                budget_pages: module_parameters::max_pinned_pages.value(),
            }
            .write(&mut writer)?,
            uapi::IOC_REGISTER => {
                me.check_owner()?;
                let mut req = uapi::Register::read(&mut reader)?;
                me.register(&mut req)?;
                if let Err(e) = req.write(&mut writer) {
                    // The caller cannot learn the keys: take the reference back.
                    let _ = me.deregister(req.lkey);
                    return Err(e);
                }
            }
            uapi::IOC_DEREGISTER => {
                me.check_owner()?;
                me.deregister(uapi::read_deregister(&mut reader)?)?;
            }
            uapi::IOC_QUERY => {
                me.check_owner()?;
                let key = uapi::Query::read_key(&mut reader)?;
                me.query(key)?.write(&mut writer)?;
            }
            uapi::IOC_STATS => {
                me.check_owner()?;
                me.stats().write(&mut writer)?;
            }
            uapi::IOC_COPY => {
                me.check_owner()?;
                me.copy(&uapi::Copy::read(&mut reader)?)?;
            }
            _ => return Err(ENOTTY),
        }
        Ok(0)
    }
}
