// SPDX-License-Identifier: GPL-2.0

//! Anonymous memory mappings, to register memory whose invalidation a
//! program controls.

use std::io;
use std::ops::{Deref, DerefMut};

use crate::sys;

/// A private anonymous mapping (`mmap(MAP_PRIVATE | MAP_ANONYMOUS)`),
/// zero-filled, readable and writable, unmapped when dropped.
///
/// Dropping it is a `munmap`, which ends every registration over it: its
/// state word says ended and an `ENDED` event (cause `UNMAP`) is written
/// before the drop returns. Register it with [`crate::Device::register_range`]
/// or [`crate::Cache::get`] to watch that happen.
#[derive(Debug)]
pub struct AnonMap {
    map: sys::AnonMapping,
}

impl AnonMap {
    /// Maps `len` bytes (rounded up to whole pages by the kernel) where the
    /// kernel chooses.
    pub fn new(len: usize) -> io::Result<AnonMap> {
        Ok(AnonMap {
            map: sys::AnonMapping::new(None, len)?,
        })
    }

    /// Maps `len` bytes at `addr` exactly, which must be page aligned and
    /// free (`MAP_FIXED_NOREPLACE`: `EEXIST` when something is mapped
    /// there). Nothing already mapped is ever replaced.
    pub fn at(addr: usize, len: usize) -> io::Result<AnonMap> {
        Ok(AnonMap {
            map: sys::AnonMapping::new(Some(addr), len)?,
        })
    }

    /// The mapping's start address.
    pub fn addr(&self) -> usize {
        self.map.addr()
    }

    /// The mapping's length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty (never: a mapping has a page at least).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }
}

impl Deref for AnonMap {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.map.bytes()
    }
}

impl DerefMut for AnonMap {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.map.bytes_mut()
    }
}
