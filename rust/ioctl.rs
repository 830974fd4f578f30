// SPDX-License-Identifier: GPL-2.0

//! The ioctls of `/dev/memreg`, in one table.
//!
//! [`ioctls!`] turns the table into the ioctl numbers, the dispatcher (who may
//! call, how the argument moves, which subsystem serves it) and the list the
//! KUnit test checks; nothing else names an ioctl. Each line gives the
//! number, the name, how the argument moves with its structure and the first
//! size that structure was published with, who may call, and the handler:
//! one call of the subsystem that owns what the ioctl changes, with the
//! argument already decoded at this edge.
//!
//! Adding an ioctl: its structure and number in the header, the structure's
//! line in [`crate::uapi`]'s `uapi_wrapper!`, one line here, the handler in
//! its subsystem, tests and its documentation.
//!
//! # Growing structures
//!
//! A structure may grow at its end; its ioctl number is then the header's
//! new one, but the number is matched on type, number and direction only,
//! so every size a program was ever built with still reaches its handler
//! (DRM's `drm_ioctl` and `copy_struct_from_user` are the models):
//!
//! - a size below the first published one is `EINVAL`;
//! - what the caller passes is copied up to its size and the rest of the
//!   kernel's structure is zero, so an older program asks for the defaults
//!   of every newer field;
//! - a larger size than the kernel's structure is accepted when the extra
//!   bytes the caller passes in are zero, `E2BIG` otherwise;
//! - only what the caller's size holds is written back, and bytes past the
//!   kernel's structure are written as zero.
//!
//! An unknown number, another type or the wrong direction is `ENOTTY`.

use kernel::{
    ioctl::{_IOC_DIR, _IOC_NR, _IOC_SIZE, _IOC_TYPE},
    prelude::*,
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
    uapi::{_IOC_NONE, _IOC_READ, _IOC_WRITE},
};

use crate::{
    cache::Cache,
    datapath::DataPath,
    error::OpResult,
    file::Context,
    pool::Pools,
    stats,
    uapi::{self, read_arg, write_arg, Reply},
};

/// Who may make a call.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// Any holder of the file: a child that inherited it, say.
    Anyone,
    /// Only a task of the process that opened the file.
    Owner,
}

/// The argument of a call, `size` bytes at `arg`.
struct Arg {
    arg: usize,
    size: usize,
}

impl Arg {
    fn slice(&self) -> UserSlice {
        UserSlice::new(UserPtr::from_addr(self.arg), self.size)
    }

    /// `EINVAL` unless the caller's size holds at least the first published
    /// structure.
    fn check(&self, first: usize) -> Result<&Self> {
        if self.size < first {
            return Err(EINVAL);
        }
        Ok(self)
    }

    fn none(&self, me: &Context, f: fn(&Context) -> OpResult) -> Result {
        Ok(f(me)?)
    }

    fn read<T: AsBytes>(&self, me: &Context, f: fn(&Context) -> OpResult<T>) -> Result {
        let value = f(me)?;
        write_arg(&mut self.slice().writer(), self.size, &value)
    }

    fn write<T: FromBytes + AsBytes + Zeroable>(
        &self,
        me: &Context,
        f: fn(&Context, T) -> OpResult,
    ) -> Result {
        Ok(f(me, read_arg(&mut self.slice().reader(), self.size)?)?)
    }

    fn read_write<T: FromBytes + AsBytes + Zeroable>(
        &self,
        me: &Context,
        f: fn(&Context, &mut T) -> OpResult,
    ) -> Result {
        let (mut reader, mut writer) = self.slice().reader_writer();
        let mut value = read_arg(&mut reader, self.size)?;
        f(me, &mut value)?;
        write_arg(&mut writer, self.size, &value)
    }

    fn read_write_reply<T: FromBytes + AsBytes + Zeroable>(
        &self,
        me: &Context,
        f: fn(&Context, T, Reply<'_, T>) -> OpResult,
    ) -> Result {
        let (mut reader, writer) = self.slice().reader_writer();
        let value = read_arg(&mut reader, self.size)?;
        let reply = Reply::new(writer, self.size);
        Ok(f(me, value, reply)?)
    }
}

/// One line of the table, as the KUnit test sees it.
pub(crate) struct IoctlDef {
    /// The header's name without `MEMREG_IOC_`.
    pub(crate) name: &'static str,
    /// The number as the current header computes it.
    pub(crate) cmd: u32,
    /// The first size of its structure that a header published.
    pub(crate) first_size: usize,
}

/// The direction bits of each kind of call.
macro_rules! ioc_dir {
    (none) => {
        _IOC_NONE
    };
    (read) => {
        _IOC_READ
    };
    (write) => {
        _IOC_WRITE
    };
    (read_write) => {
        _IOC_READ | _IOC_WRITE
    };
    (read_write_reply) => {
        _IOC_READ | _IOC_WRITE
    };
}

/// The size of the structure of each kind of call.
macro_rules! ioc_size {
    (none) => {
        0
    };
    ($kind:ident $t:ty) => {
        core::mem::size_of::<$t>()
    };
}

/// Generates the numbers, the dispatcher and the list from the table.
macro_rules! ioctls {
    ($(
        $nr:literal $name:ident: $kind:ident $(($t:ty, first $first:literal))?,
            $caller:ident => $handler:expr;
    )*) => {
        /// The ioctl numbers, as the current header computes them.
        pub(crate) mod cmd {
            use super::*;
            $(
                #[doc = concat!("`MEMREG_IOC_", stringify!($name), "`.")]
                pub(crate) const $name: u32 = (ioc_dir!($kind) << 30)
                    | ((ioc_size!($kind $($t)?) as u32) << 16)
                    | (uapi::IOC_MAGIC << 8)
                    | $nr;
            )*
        }

        /// Every ioctl, in number order.
        pub(crate) const TABLE: &[IoctlDef] = &[$(IoctlDef {
            name: stringify!($name),
            cmd: cmd::$name,
            first_size: 0 $(+ $first)?,
        }),*];

        /// Serves the ioctl `cmd` with argument `arg` on `me`.
        pub(crate) fn dispatch(me: &Context, cmd: u32, arg: usize) -> Result<isize> {
            // Any call of the owner's, even one it may not make or that does not exist, counts
            // as a use of the context (idle eviction looks at the last one).
            let owner = me.check_owner();
            if owner.is_ok() {
                me.touch();
            }
            if _IOC_TYPE(cmd) != uapi::IOC_MAGIC {
                return Err(ENOTTY);
            }
            let arg = Arg { arg, size: _IOC_SIZE(cmd) };
            match _IOC_NR(cmd) {
                $($nr => {
                    if _IOC_DIR(cmd) != ioc_dir!($kind) {
                        return Err(ENOTTY);
                    }
                    if Caller::$caller == Caller::Owner {
                        owner?;
                    }
                    arg.check(0 $(+ $first)?)?
                        .$kind$(::<$t>)?(me, $handler)?;
                })*
                _ => return Err(ENOTTY),
            }
            Ok(0)
        }
    };
}

ioctls! {
    0x00 GET_VERSION: read(u32, first 4), Anyone => |_| Ok(uapi::ABI_VERSION);
    0x01 REGISTER: read_write_reply(uapi::Register, first 56), Owner => Context::register;
    0x02 DEREGISTER: write(uapi::Deregister, first 16), Owner =>
        |me, req| Cache::deregister(me.cache(), req);
    0x03 QUERY: read_write(uapi::Query, first 64), Owner => |me, req| me.cache().query(req);
    0x04 STATS: read(uapi::Stats, first 144), Owner => |me| Ok(me.cache().stats().to_abi());
    0x05 COPY: write(uapi::Copy, first 48), Owner => Context::copy;
    0x06 GLOBAL_STATS: read(uapi::GlobalStats, first 64), Anyone => |_| Ok(stats::global());
    0x07 GET_CACHE: read(uapi::CacheConfig, first 64), Owner =>
        |me| Ok(me.cache().config().to_abi());
    0x08 SET_CACHE: write(uapi::CacheConfig, first 64), Owner =>
        |me, req| Cache::set_cache_config(me.cache(), req);
    0x09 FLUSH: read_write(uapi::Flush, first 32), Owner => |me, req| me.cache().flush(req);
    0x0a EVENTS_SETUP: read_write_reply(uapi::EventsSetup, first 32), Owner =>
        |me, req, reply| me.cache().events_setup(req, |r| reply.send(r));
    0x0b EVENTS_RESYNC: read_write(uapi::EventsResync, first 24), Owner =>
        |me, req| me.cache().events_resync(req);
    0x0c QUEUE_CREATE: read_write_reply(uapi::QueueCreate, first 48), Owner =>
        |me, req, reply| me.data().queue_create(req, |r| reply.send(r));
    0x0d DOORBELL: write(uapi::Doorbell, first 8), Owner =>
        |me, req| DataPath::doorbell(me.data(), &(&req).try_into()?);
    0x0e QUEUE_STATS: read(uapi::QueueStats, first 128), Owner => |me| Ok(me.data().stats());
    0x0f PEER_ATTACH: read_write_reply(uapi::PeerAttach, first 24), Owner => Context::peer_attach;
    0x10 PEER_DETACH: write(uapi::PeerDetach, first 8), Owner =>
        |me, req| DataPath::peer_detach(me.data(), &(&req).try_into()?);
    0x11 PEER_REVOKE: none, Owner => |me| me.data().peer_revoke();
    0x12 QUEUE_CONNECT: write(uapi::QueueConnect, first 32), Owner =>
        |me, req| DataPath::queue_connect(me.data(), &(&req).try_into()?);
    0x13 POOL_CREATE: read_write(uapi::PoolCreate, first 56), Owner =>
        |me, req| Pools::create(me.pools(), req);
    0x14 POOL_ALLOC: read_write(uapi::PoolAlloc, first 48), Owner =>
        |me, req| me.pools().alloc(&(&*req).try_into()?).map(|n| req.count = n);
    0x15 POOL_FREE: write(uapi::PoolFree, first 32), Owner =>
        |me, req| me.pools().free(&(&req).try_into()?);
    0x16 POOL_STATS: read_write(uapi::PoolInfo, first 32), Owner =>
        |me, req| me.pools().stats(&(&*req).try_into()?).map(|n| req.count = n);
    0x17 POOL_DESTROY: write(uapi::PoolDestroy, first 8), Owner =>
        |me, req| me.pools().destroy(&(&req).try_into()?);
    0x18 REVALIDATE: write(uapi::Revalidate, first 16), Owner =>
        |me, req| me.cache().revalidate(req);
    0x19 POOL_RING: read_write(uapi::PoolRing, first 40), Owner =>
        |me, req| me.pools().rings(&(&*req).try_into()?).map(|(n, bytes)| {
            req.count = n;
            req.map_bytes = bytes;
        });
}

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_ioctl)]
mod tests {
    use super::*;

    /// The generic `_IOC` encoding: direction in bits 30-31 (1 write, 2 read),
    /// size in 16-29, type in 8-15 and number in 0-7.
    fn ioc(dir: u32, size: u32, nr: u32) -> u32 {
        (dir << 30) | (size << 16) | (0xB9 << 8) | nr
    }

    /// The numbers are the ones `<linux/memreg.h>` computes, with the sizes
    /// of its structures; no number was ever changed or reused.
    #[test]
    fn ioctl_numbers_match_the_header() {
        let expected = [
            ("GET_VERSION", ioc(2, 4, 0)),
            ("REGISTER", ioc(3, 80, 1)),
            ("DEREGISTER", ioc(1, 16, 2)),
            ("QUERY", ioc(3, 64, 3)),
            ("STATS", ioc(2, 248, 4)),
            ("COPY", ioc(1, 48, 5)),
            ("GLOBAL_STATS", ioc(2, 64, 6)),
            ("GET_CACHE", ioc(2, 64, 7)),
            ("SET_CACHE", ioc(1, 64, 8)),
            ("FLUSH", ioc(3, 32, 9)),
            ("EVENTS_SETUP", ioc(3, 32, 10)),
            ("EVENTS_RESYNC", ioc(3, 24, 11)),
            ("QUEUE_CREATE", ioc(3, 48, 12)),
            ("DOORBELL", ioc(1, 8, 13)),
            ("QUEUE_STATS", ioc(2, 128, 14)),
            ("PEER_ATTACH", ioc(3, 24, 15)),
            ("PEER_DETACH", ioc(1, 8, 16)),
            ("PEER_REVOKE", ioc(0, 0, 17)),
            ("QUEUE_CONNECT", ioc(1, 32, 18)),
            ("POOL_CREATE", ioc(3, 56, 0x13)),
            ("POOL_ALLOC", ioc(3, 48, 0x14)),
            ("POOL_FREE", ioc(1, 32, 0x15)),
            ("POOL_STATS", ioc(3, 32, 0x16)),
            ("POOL_DESTROY", ioc(1, 8, 0x17)),
            ("REVALIDATE", ioc(1, 16, 0x18)),
            ("POOL_RING", ioc(3, 40, 0x19)),
        ];
        assert_eq!(TABLE.len(), expected.len());
        for (i, (def, (name, cmd))) in TABLE.iter().zip(expected.iter()).enumerate() {
            assert_eq!(def.name, *name);
            assert_eq!(def.cmd, *cmd);
            // Numbers are dense and in order.
            assert_eq!(_IOC_NR(def.cmd) as usize, i);
            // The first published size is never above the current one.
            assert!(def.first_size <= _IOC_SIZE(def.cmd));
        }
    }
}
