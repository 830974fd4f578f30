// SPDX-License-Identifier: GPL-2.0

//! Buffer pools: registered buffers taken and given back with one ioctl
//! (see `pools.rst`).

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use memreg_sys as raw;

use crate::{einval, sys, Access, Device};

/// One size class of a pool (`struct memreg_pool_class`).
///
/// `chunk_buffers` and `offset` are filled by the kernel: what is passed in
/// is ignored. A chunk is `max(64 KiB, buffer_size)` of memory, so
/// `max_buffers` and `initial` must be multiples of `64 KiB / buffer_size`
/// for buffers up to 64 KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolClass {
    /// A power of two, 64 bytes to 2 MiB; classes in increasing order.
    pub buffer_size: u32,
    /// Buffers at most, a multiple of the chunk.
    pub max_buffers: u32,
    /// Grow when this many or fewer buffers are free.
    pub low_watermark: u32,
    /// Shrink when more than this many stay free (0: never by use).
    pub high_watermark: u32,
    /// Buffers mapped when the pool is mapped, a multiple of the chunk.
    pub initial: u32,
    /// Out: buffers per chunk.
    pub chunk_buffers: u32,
    /// Out: the partition's offset in the pool's mapping.
    pub offset: u64,
}

impl PoolClass {
    /// A class of `max_buffers` buffers of `buffer_size` bytes, `initial` of
    /// them mapped at once, growing at `low_watermark` free and never
    /// shrinking by use.
    pub fn new(buffer_size: u32, max_buffers: u32, low_watermark: u32, initial: u32) -> PoolClass {
        PoolClass {
            buffer_size,
            max_buffers,
            low_watermark,
            initial,
            ..Default::default()
        }
    }
}

/// A buffer pool, mapped; destroyed (`MEMREG_IOC_POOL_DESTROY`) and
/// unmapped when dropped.
///
/// Buffers borrow the pool, so it outlives them. Its keys never carry
/// `REMOTE_WRITE` ([`Device::create_pool`] refuses it with `EINVAL`): the
/// buffers are lent as byte slices, which a peer must not write.
///
/// # The leak timeout
///
/// The pool's `leak_timeout_ms` must be longer than the program holds any
/// buffer. When a shrink gives a chunk back, it waits up to that long for
/// the chunk's allocated buffers to be freed, then reclaims those still
/// held as leaks (`pools.rst`, "Leak reclaim"): their key dies, their pages
/// leave the mapping, so touching the [`PoolBuffer`]'s bytes raises
/// `SIGBUS`, and should the class grow over it again, its address is mapped
/// to a fresh page of zeroes. Either way the slice the buffer lends no
/// longer holds what was written to it. A buffer freed within the timeout
/// never loses its pages. Without a reason for less, create pools with
/// [`raw::MEMREG_POOL_MAX_TIMEOUT_MS`], the longest timeout.
pub struct Pool<'dev> {
    dev: &'dev Device,
    index: u32,
    classes: Vec<PoolClass>,
    map: sys::PoolMapping,
}

impl fmt::Debug for Pool<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("index", &self.index)
            .field("classes", &self.classes)
            .field("addr", &self.map.addr())
            .field("len", &self.map.len())
            .finish()
    }
}

/// How long an ALLOC may wait, in the kernel's milliseconds (at most
/// `MEMREG_POOL_MAX_TIMEOUT_MS`, rounded up).
fn timeout_ms(timeout: Duration) -> io::Result<u32> {
    let ms = timeout.as_micros().div_ceil(1000);
    match u32::try_from(ms) {
        Ok(ms) if ms <= raw::MEMREG_POOL_MAX_TIMEOUT_MS => Ok(ms),
        _ => Err(einval()),
    }
}

impl<'dev> Pool<'dev> {
    pub(crate) fn create(
        dev: &'dev Device,
        classes: &[PoolClass],
        access: Access,
        leak_timeout_ms: u32,
        shrink_ms: u32,
    ) -> io::Result<Pool<'dev>> {
        if classes.is_empty() || classes.len() > raw::MEMREG_POOL_MAX_CLASSES as usize {
            return Err(einval());
        }
        // The buffers are lent as slices: no peer may write them.
        if access.contains(Access::REMOTE_WRITE) {
            return Err(einval());
        }
        let mut cl: Vec<raw::memreg_pool_class> = classes
            .iter()
            .map(|c| raw::memreg_pool_class {
                buffer_size: c.buffer_size,
                max_buffers: c.max_buffers,
                low_watermark: c.low_watermark,
                high_watermark: c.high_watermark,
                initial: c.initial,
                ..Default::default()
            })
            .collect();
        let mut pc = raw::memreg_pool_create {
            access: access.bits(),
            leak_timeout_ms,
            shrink_ms,
            ..Default::default()
        };
        sys::pool_create(dev.fd(), &mut cl, &mut pc)?;
        let destroy = |dev: &Device| {
            let mut d = raw::memreg_pool_destroy {
                pool: pc.pool,
                ..Default::default()
            };
            let _ = sys::pool_destroy(dev.fd(), &mut d);
        };
        let map = usize::try_from(pc.map_bytes)
            .map_err(|_| crate::eproto())
            .and_then(|len| sys::PoolMapping::map(dev.fd(), pc.pool, len));
        let map = match map {
            Ok(m) => m,
            Err(e) => {
                destroy(dev);
                return Err(e);
            }
        };
        let classes = cl
            .iter()
            .map(|c| PoolClass {
                buffer_size: c.buffer_size,
                max_buffers: c.max_buffers,
                low_watermark: c.low_watermark,
                high_watermark: c.high_watermark,
                initial: c.initial,
                chunk_buffers: c.chunk_buffers,
                offset: c.offset,
            })
            .collect();
        Ok(Pool {
            dev,
            index: pc.pool,
            classes,
            map,
        })
    }

    /// The pool's index in its file (the `pool` of requests).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The classes, with the kernel's `chunk_buffers` and `offset`.
    pub fn classes(&self) -> &[PoolClass] {
        &self.classes
    }

    /// The start address and length of the pool's mapping.
    pub fn mapping(&self) -> (usize, usize) {
        (self.map.addr(), self.map.len())
    }

    /// Takes one buffer of at least `size` bytes, waiting up to `timeout`
    /// (at most 60 s) when none is free (`MEMREG_IOC_POOL_ALLOC`): `EAGAIN`
    /// with a zero timeout, `ETIMEDOUT` after it.
    ///
    /// The first buffers appear shortly after the pool is mapped, in the
    /// background: give the first allocation a timeout.
    pub fn alloc(&self, size: u64, timeout: Duration) -> io::Result<PoolBuffer<'_>> {
        let mut v = self.alloc_flags(size, 1, 0, timeout)?;
        v.pop().ok_or_else(crate::eproto)
    }

    /// Takes up to `count` (1 to 64) buffers of at least `size` bytes from
    /// one class, waiting up to `timeout` only when none is free; returns at
    /// least one.
    pub fn alloc_batch(
        &self,
        size: u64,
        count: u32,
        timeout: Duration,
    ) -> io::Result<Vec<PoolBuffer<'_>>> {
        self.alloc_flags(size, count, 0, timeout)
    }

    /// As [`Pool::alloc_batch`], with `MEMREG_POOL_*` `flags`
    /// (`MEMREG_POOL_NO_FALLBACK`: only the smallest class that fits).
    pub fn alloc_flags(
        &self,
        size: u64,
        count: u32,
        flags: u32,
        timeout: Duration,
    ) -> io::Result<Vec<PoolBuffer<'_>>> {
        let bufs = self
            .map
            .alloc(self.dev.fd(), size, count, flags, timeout_ms(timeout)?)?;
        Ok(bufs
            .into_iter()
            .map(|b| PoolBuffer {
                pool: self,
                buf: Some(b),
            })
            .collect())
    }

    /// Gives `bufs` back in batches of up to 64 (`MEMREG_IOC_POOL_FREE`);
    /// `ESTALE` when one had been reclaimed as a leak (it is free all the
    /// same). Dropping a buffer gives it back one at a time.
    pub fn free_batch(&self, bufs: Vec<PoolBuffer<'_>>) -> io::Result<()> {
        if bufs.iter().any(|b| !std::ptr::eq(b.pool, self)) {
            // Another pool's buffers: each gives itself back as it drops.
            return Err(einval());
        }
        let mut result = Ok(());
        let mut raw_bufs: Vec<sys::PoolBuf<'_>> = Vec::with_capacity(bufs.len());
        for mut b in bufs {
            if let Some(buf) = b.buf.take() {
                raw_bufs.push(buf);
            }
        }
        while !raw_bufs.is_empty() {
            let rest = raw_bufs.split_off(raw_bufs.len().min(raw::MEMREG_POOL_MAX_BATCH as usize));
            let batch = std::mem::replace(&mut raw_bufs, rest);
            if let Err((e, _kept)) = self.map.free(self.dev.fd(), batch) {
                // Buffers the kernel refused stay allocated: they are
                // forgotten rather than lent again.
                result = Err(e);
            }
        }
        result
    }

    /// The counters of each class (`MEMREG_IOC_POOL_STATS`).
    pub fn stats(&self) -> io::Result<Vec<raw::memreg_pool_stats>> {
        let mut out =
            vec![raw::memreg_pool_stats::default(); raw::MEMREG_POOL_MAX_CLASSES as usize];
        let n = sys::pool_stats(self.dev.fd(), self.index, &mut out)? as usize;
        out.truncate(n.min(out.len()));
        Ok(out)
    }
}

impl Drop for Pool<'_> {
    fn drop(&mut self) {
        let mut d = raw::memreg_pool_destroy {
            pool: self.index,
            ..Default::default()
        };
        // The mapping is unmapped afterwards, when `map` drops.
        let _ = sys::pool_destroy(self.dev.fd(), &mut d);
    }
}

/// A buffer of a pool, given back (`MEMREG_IOC_POOL_FREE`) when dropped,
/// and lent as a byte slice meanwhile.
///
/// Its key and offset name it in COPY and in requests on the rings, with the
/// pool's rights. Only this value lends its bytes: let the kernel write it
/// by key (which takes `unsafe`: [`Device::copy_to_key`],
/// [`crate::Queue::try_submit`]) only while no slice of it is borrowed, and
/// never give it back by a `POOL_FREE` request while it is alive. Free it
/// before the pool's leak timeout: if the program holds it past that while
/// the pool shrinks, its pages leave the mapping (touching them raises
/// `SIGBUS`, or reads zeroes once the class grows over it again; see
/// [`Pool`]).
pub struct PoolBuffer<'pool> {
    pool: &'pool Pool<'pool>,
    buf: Option<sys::PoolBuf<'pool>>,
}

impl fmt::Debug for PoolBuffer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuffer")
            .field("pool", &self.pool.index)
            .field("addr", &self.addr())
            .field("key", &self.key())
            .field("offset", &self.offset())
            .field("size", &self.size())
            .field("class", &self.class())
            .finish()
    }
}

impl PoolBuffer<'_> {
    fn info(&self) -> raw::memreg_pool_buf {
        self.buf.as_ref().map(|b| *b.info()).unwrap_or_default()
    }

    /// The buffer's address in the pool's mapping.
    pub fn addr(&self) -> u64 {
        self.info().addr
    }

    /// The local key of its chunk's registration.
    pub fn key(&self) -> u64 {
        self.info().key
    }

    /// Its offset in that registration, for requests naming [`Self::key`].
    pub fn offset(&self) -> u64 {
        self.info().offset
    }

    /// Its class's buffer size, at least the size asked for.
    pub fn size(&self) -> u32 {
        self.info().size
    }

    /// Its class's index.
    pub fn class(&self) -> u32 {
        self.info().class
    }

    /// Gives the buffer back now, reporting the kernel's answer (`ESTALE`:
    /// it had been reclaimed as a leak, and is free now).
    pub fn free(mut self) -> io::Result<()> {
        match self.buf.take() {
            Some(b) => self
                .pool
                .map
                .free(self.pool.dev.fd(), vec![b])
                .map_err(|(e, _)| e),
            None => Ok(()),
        }
    }
}

impl Deref for PoolBuffer<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |b| b.bytes())
    }
}

impl DerefMut for PoolBuffer<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut().map_or(&mut [], |b| b.bytes_mut())
    }
}

impl Drop for PoolBuffer<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            let _ = self.pool.map.free(self.pool.dev.fd(), vec![b]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_and_are_bounded() {
        assert_eq!(timeout_ms(Duration::ZERO).expect("0"), 0);
        assert_eq!(timeout_ms(Duration::from_micros(1)).expect("1us"), 1);
        assert_eq!(
            timeout_ms(Duration::from_millis(60_000)).expect("60s"),
            60_000
        );
        assert!(timeout_ms(Duration::from_millis(60_001)).is_err());
        assert!(timeout_ms(Duration::MAX).is_err());
    }
}
