// SPDX-License-Identifier: GPL-2.0

//! The user ABI, mirroring `include/uapi/linux/memreg.h`.
//!
//! Structures are read and written field by field, in the header's order, so
//! no padding is ever copied to user space. Each ioctl number encodes its
//! structure's size; the sizes are asserted here and in the selftests.

use kernel::{
    ioctl::{_IOR, _IOW, _IOWR},
    prelude::*,
    uaccess::{UserSliceReader, UserSliceWriter},
};

/// The ABI version answered by `MEMREG_IOC_GET_VERSION`.
pub(crate) const ABI_VERSION: u32 = 1;

const MAGIC: u32 = 0xB9;

/// Largest length one registration may cover.
pub(crate) const MAX_LENGTH: u64 = 1 << 36;

/// `MEMREG_ACCESS_LOCAL_READ`.
pub(crate) const ACCESS_LOCAL_READ: u32 = 1 << 0;
/// `MEMREG_ACCESS_LOCAL_WRITE`.
pub(crate) const ACCESS_LOCAL_WRITE: u32 = 1 << 1;
/// `MEMREG_ACCESS_REMOTE_WRITE`.
pub(crate) const ACCESS_REMOTE_WRITE: u32 = 1 << 3;
/// All access bits.
pub(crate) const ACCESS_ALL: u32 = 0xf;

/// `MEMREG_REGISTER_CACHED`.
pub(crate) const REGISTER_CACHED: u32 = 1 << 0;
/// `MEMREG_STATE_VALID`.
pub(crate) const STATE_VALID: u32 = 1;
/// `MEMREG_INVAL_NR_CAUSES`.
pub(crate) const INVAL_NR_CAUSES: usize = 8;

/// `MEMREG_COPY_TO_REGION`.
pub(crate) const COPY_TO_REGION: u32 = 0;
/// `MEMREG_COPY_FROM_REGION`.
pub(crate) const COPY_FROM_REGION: u32 = 1;

const REGISTER_SIZE: usize = 56;
const DEREGISTER_SIZE: usize = 16;
const QUERY_SIZE: usize = 64;
const STATS_SIZE: usize = 8 * (6 + INVAL_NR_CAUSES + 4);
const COPY_SIZE: usize = 48;
const GLOBAL_STATS_SIZE: usize = 64;

/// Declares a `[u8; N]` type standing for a structure of `N` bytes, so the
/// ioctl number encodes the header's size.
type Bytes<const N: usize> = [u8; N];

/// `MEMREG_IOC_GET_VERSION`.
pub(crate) const IOC_GET_VERSION: u32 = _IOR::<u32>(MAGIC, 0x00);
/// `MEMREG_IOC_REGISTER`.
pub(crate) const IOC_REGISTER: u32 = _IOWR::<Bytes<REGISTER_SIZE>>(MAGIC, 0x01);
/// `MEMREG_IOC_DEREGISTER`.
pub(crate) const IOC_DEREGISTER: u32 = _IOW::<Bytes<DEREGISTER_SIZE>>(MAGIC, 0x02);
/// `MEMREG_IOC_QUERY`.
pub(crate) const IOC_QUERY: u32 = _IOWR::<Bytes<QUERY_SIZE>>(MAGIC, 0x03);
/// `MEMREG_IOC_STATS`.
pub(crate) const IOC_STATS: u32 = _IOR::<Bytes<STATS_SIZE>>(MAGIC, 0x04);
/// `MEMREG_IOC_COPY`.
pub(crate) const IOC_COPY: u32 = _IOW::<Bytes<COPY_SIZE>>(MAGIC, 0x05);
/// `MEMREG_IOC_GLOBAL_STATS`.
pub(crate) const IOC_GLOBAL_STATS: u32 = _IOR::<Bytes<GLOBAL_STATS_SIZE>>(MAGIC, 0x06);

/// Reads the fields of a structure copied in with one user copy, in order.
struct Fields<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let end = self.pos.checked_add(N).ok_or(EINVAL)?;
        let field = self.bytes.get(self.pos..end).ok_or(EINVAL)?;
        self.pos = end;
        <[u8; N]>::try_from(field).map_err(|_| EINVAL)
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_ne_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_ne_bytes(self.take()?))
    }

    /// Skips `n` bytes of output fields.
    fn skip(&mut self, n: usize) -> Result {
        self.pos = self.pos.checked_add(n).ok_or(EINVAL)?;
        Ok(())
    }

    /// Reads reserved words, failing with `EINVAL` unless all are zero.
    fn reserved(&mut self, words: usize) -> Result {
        for _ in 0..words {
            if self.u64()? != 0 {
                return Err(EINVAL);
            }
        }
        Ok(())
    }
}

/// Builds a structure to copy out with one user copy; unwritten bytes
/// (reserved fields) stay zero.
struct Out<const N: usize> {
    bytes: [u8; N],
    pos: usize,
}

impl<const N: usize> Out<N> {
    fn new() -> Self {
        Self {
            bytes: [0; N],
            pos: 0,
        }
    }

    fn put(&mut self, v: &[u8]) -> Result<&mut Self> {
        let end = self.pos.checked_add(v.len()).ok_or(EINVAL)?;
        self.bytes
            .get_mut(self.pos..end)
            .ok_or(EINVAL)?
            .copy_from_slice(v);
        self.pos = end;
        Ok(self)
    }

    fn u64(&mut self, v: u64) -> Result<&mut Self> {
        self.put(&v.to_ne_bytes())
    }

    fn u32(&mut self, v: u32) -> Result<&mut Self> {
        self.put(&v.to_ne_bytes())
    }

    fn write(&self, w: &mut UserSliceWriter) -> Result {
        w.write(&self.bytes)
    }
}

/// `struct memreg_register`.
#[derive(Default)]
pub(crate) struct Register {
    pub(crate) addr: u64,
    pub(crate) length: u64,
    pub(crate) access: u32,
    pub(crate) flags: u32,
    pub(crate) lkey: u64,
    pub(crate) rkey: u64,
    pub(crate) region_addr: u64,
    pub(crate) region_length: u64,
}

impl Register {
    /// Reads the input fields; `flags` must be zero (`EINVAL`), the output
    /// fields are ignored.
    pub(crate) fn read(r: &mut UserSliceReader) -> Result<Self> {
        let raw = r.read::<[u8; REGISTER_SIZE]>()?;
        let mut f = Fields::new(&raw);
        let addr = f.u64()?;
        let length = f.u64()?;
        let access = f.u32()?;
        // `flags` is zero on input, so later versions can give it input bits; the other
        // fields are output only and ignored.
        if f.u32()? != 0 {
            return Err(EINVAL);
        }
        Ok(Self {
            addr,
            length,
            access,
            ..Self::default()
        })
    }

    /// Writes the whole structure back.
    pub(crate) fn write(&self, w: &mut UserSliceWriter) -> Result {
        Out::<REGISTER_SIZE>::new()
            .u64(self.addr)?
            .u64(self.length)?
            .u32(self.access)?
            .u32(self.flags)?
            .u64(self.lkey)?
            .u64(self.rkey)?
            .u64(self.region_addr)?
            .u64(self.region_length)?
            .write(w)
    }
}

/// `struct memreg_deregister`: the key.
pub(crate) fn read_deregister(r: &mut UserSliceReader) -> Result<u64> {
    let raw = r.read::<[u8; DEREGISTER_SIZE]>()?;
    let mut f = Fields::new(&raw);
    let key = f.u64()?;
    f.reserved(1)?;
    Ok(key)
}

/// `struct memreg_query`.
#[derive(Default)]
pub(crate) struct Query {
    pub(crate) key: u64,
    pub(crate) addr: u64,
    pub(crate) length: u64,
    pub(crate) access: u32,
    pub(crate) state: u32,
    pub(crate) pages: u64,
    pub(crate) extents: u32,
    pub(crate) refcount: u32,
}

impl Query {
    /// Reads the key; everything after it is output, but the reserved words
    /// must be zero (`EINVAL`).
    pub(crate) fn read_key(r: &mut UserSliceReader) -> Result<u64> {
        let raw = r.read::<[u8; QUERY_SIZE]>()?;
        let mut f = Fields::new(&raw);
        let key = f.u64()?;
        f.skip(40)?;
        f.reserved(2)?;
        Ok(key)
    }

    /// Writes the whole structure.
    pub(crate) fn write(&self, w: &mut UserSliceWriter) -> Result {
        Out::<QUERY_SIZE>::new()
            .u64(self.key)?
            .u64(self.addr)?
            .u64(self.length)?
            .u32(self.access)?
            .u32(self.state)?
            .u64(self.pages)?
            .u32(self.extents)?
            .u32(self.refcount)?
            .write(w)
    }
}

/// `struct memreg_stats`.
#[derive(Clone, Default)]
pub(crate) struct Stats {
    pub(crate) registrations: u64,
    pub(crate) cache_hits: u64,
    pub(crate) cache_misses: u64,
    pub(crate) pages_pinned: u64,
    pub(crate) pages_pinned_peak: u64,
    pub(crate) deregistrations: u64,
    pub(crate) invalidations: [u64; INVAL_NR_CAUSES],
}

impl Stats {
    /// Writes the whole structure.
    pub(crate) fn write(&self, w: &mut UserSliceWriter) -> Result {
        let mut out = Out::<STATS_SIZE>::new();
        for v in [
            self.registrations,
            self.cache_hits,
            self.cache_misses,
            self.pages_pinned,
            self.pages_pinned_peak,
            self.deregistrations,
        ] {
            out.u64(v)?;
        }
        for v in self.invalidations {
            out.u64(v)?;
        }
        out.write(w)
    }
}

/// `struct memreg_global_stats`.
pub(crate) struct GlobalStats {
    pub(crate) contexts: u64,
    pub(crate) regions: u64,
    pub(crate) pages_pinned: u64,
    pub(crate) budget_pages: u64,
}

impl GlobalStats {
    /// Writes the whole structure.
    pub(crate) fn write(&self, w: &mut UserSliceWriter) -> Result {
        Out::<GLOBAL_STATS_SIZE>::new()
            .u64(self.contexts)?
            .u64(self.regions)?
            .u64(self.pages_pinned)?
            .u64(self.budget_pages)?
            .write(w)
    }
}

/// `struct memreg_copy`.
pub(crate) struct Copy {
    pub(crate) key: u64,
    pub(crate) offset: u64,
    pub(crate) length: u64,
    pub(crate) buf: u64,
    pub(crate) direction: u32,
}

impl Copy {
    /// Reads the structure; `flags` and the reserved word must be zero and the
    /// direction known (`EINVAL`).
    pub(crate) fn read(r: &mut UserSliceReader) -> Result<Self> {
        let raw = r.read::<[u8; COPY_SIZE]>()?;
        let mut f = Fields::new(&raw);
        let key = f.u64()?;
        let offset = f.u64()?;
        let length = f.u64()?;
        let buf = f.u64()?;
        let direction = f.u32()?;
        let flags = f.u32()?;
        f.reserved(1)?;
        if flags != 0 || (direction != COPY_TO_REGION && direction != COPY_FROM_REGION) {
            return Err(EINVAL);
        }
        Ok(Self {
            key,
            offset,
            length,
            buf,
            direction,
        })
    }
}

#[kunit_tests(memreg_uapi)]
mod tests {
    use super::*;

    /// The ioctl numbers are the ones `<linux/memreg.h>` computes with the
    /// generic `_IOC` encoding: direction in bits 30-31 (1 write, 2 read),
    /// size in 16-29, type in 8-15 and number in 0-7.
    #[test]
    fn ioctl_numbers_match_the_header() {
        let ioc = |dir: u32, size: u32, nr: u32| (dir << 30) | (size << 16) | (0xB9 << 8) | nr;
        assert_eq!(IOC_GET_VERSION, ioc(2, 4, 0));
        assert_eq!(IOC_REGISTER, ioc(3, 56, 1));
        assert_eq!(IOC_DEREGISTER, ioc(1, 16, 2));
        assert_eq!(IOC_QUERY, ioc(3, 64, 3));
        assert_eq!(IOC_STATS, ioc(2, 144, 4));
        assert_eq!(IOC_COPY, ioc(1, 48, 5));
        assert_eq!(IOC_GLOBAL_STATS, ioc(2, 64, 6));
    }
}
