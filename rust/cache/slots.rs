// SPDX-License-Identifier: GPL-2.0

//! The state words (`MEMREG_MMAP_STATE_WORDS`): what user space reads to
//! check a registration without a system call.

use crate::uapi;
use kernel::{mm::shared_pages::SharedPages, page::PAGE_SIZE, prelude::*, sync::Arc};

/// The context's state words (`MEMREG_MMAP_STATE_WORDS`): one `u64` per
/// slot, mapped read-only into the process, and the slots not in use.
///
/// A slot's word is its registration's generation while the registration is
/// usable, the generation with `MEMREG_WORD_SUSPENDED` while it is
/// suspended, and with `MEMREG_WORD_ENDED` once it ended. A slot taken again
/// gets a larger generation, so a stale copy never matches.
pub(crate) struct Slots {
    /// The words, one per slot.
    pub(super) words: Arc<SharedPages>,
    /// Free slots: at first in increasing order, the lowest on top; a slot
    /// freed goes on top, so it is the next taken (its word's cache line is
    /// warm).
    free: KVVec<u32>,
}

impl Slots {
    /// Creates `nslots` zeroed words, all free.
    pub(crate) fn new(nslots: usize) -> Result<Self> {
        let nslots_u32 = u32::try_from(nslots).map_err(|_| EINVAL)?;
        let npages = nslots.checked_mul(8).ok_or(EINVAL)?.div_ceil(PAGE_SIZE);
        let words = Arc::new(SharedPages::new(npages)?, GFP_KERNEL_ACCOUNT)?;
        let mut free = KVVec::with_capacity(nslots, GFP_KERNEL_ACCOUNT)?;
        for slot in (0..nslots_u32).rev() {
            free.push(slot, GFP_KERNEL_ACCOUNT)?;
        }
        Ok(Self { words, free })
    }

    /// Takes a free slot and gives it a new generation, published in its
    /// word. Never sleeps.
    pub(crate) fn take(&mut self) -> Option<(u32, u64)> {
        loop {
            let slot = self.free.pop()?;
            let old = self.words.load_u64(slot as usize)?;
            // A slot whose generations ran out is never used again.
            if let Some(generation) = (old & !3).checked_add(4) {
                self.words.store_u64(slot as usize, generation);
                return Some((slot, generation));
            }
        }
    }

    /// Sets the word of `slot`.
    pub(crate) fn set(&self, slot: u32, value: u64) {
        self.words.store_u64(slot as usize, value);
    }

    /// Marks the registration of `slot` ended and frees the slot. Never
    /// sleeps (the free list has room for every slot).
    pub(crate) fn release(&mut self, slot: u32, generation: u64) {
        self.set(slot, generation | uapi::WORD_ENDED);
        let _ = self.free.push_within_capacity(slot);
    }
}

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_slots)]
mod tests {
    use super::*;

    #[test]
    fn slots_take_new_generations() {
        let slots = Slots::new(2);
        assert!(slots.is_ok());
        let Ok(mut slots) = slots else {
            return;
        };
        let a = slots.take();
        let b = slots.take();
        assert_eq!(a, Some((0, 4)));
        assert_eq!(b, Some((1, 4)));
        assert_eq!(slots.take(), None);
        slots.release(0, 4);
        assert_eq!(slots.words.load_u64(0), Some(4 | uapi::WORD_ENDED));
        // Reused with a larger generation.
        assert_eq!(slots.take(), Some((0, 8)));
        assert_eq!(slots.words.load_u64(0), Some(8));
    }
}
