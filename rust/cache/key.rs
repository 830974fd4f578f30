// SPDX-License-Identifier: GPL-2.0

//! Registration keys.
//!
//! A local key is 64 bits: a 40-bit sequence number in the high bits, unique
//! within a context and never reused (the context refuses registrations once
//! it runs out), and 24 random bits in the low bits. The sequence finds the
//! registration; the random bits must match too, so a stale or made-up local
//! key is refused. Local keys are only ever presented by their own context.
//!
//! A remote key, the one peers will present, is 64 random bits drawn
//! independently of the local key: nothing about one registration's keys
//! tells anything about another's, and guessing one takes on the order of
//! 2^63 tries. Neither key is ever zero and the two always differ, but for
//! the remote key of a registration that has none: a parked one, or one
//! revived without remote rights, has remote key 0, which matches nothing.

use kernel::prelude::*;

/// Bits of the random part of a local key.
const RANDOM_BITS: u32 = 24;
/// Bits of the sequence part of a local key.
const SEQ_BITS: u32 = 64 - RANDOM_BITS;
/// Largest sequence number a key can carry.
pub(crate) const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;
const RANDOM_MASK: u64 = (1 << RANDOM_BITS) - 1;

/// The local and remote keys of a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyPair {
    /// The sequence number the local key carries.
    pub(crate) seq: u64,
    /// The local key.
    pub(crate) lkey: u64,
    /// The remote key.
    pub(crate) rkey: u64,
}

impl KeyPair {
    /// Builds the keys for sequence `seq` from a random number for the local
    /// key and one for the remote key, or `None` when `seq` is zero or does
    /// not fit.
    pub(crate) fn new(seq: u64, local_random: u32, remote_random: u64) -> Option<Self> {
        if seq == 0 || seq > MAX_SEQ {
            return None;
        }
        let lkey = (seq << RANDOM_BITS) | (u64::from(local_random) & RANDOM_MASK);
        let mut rkey = remote_random;
        if rkey == 0 || rkey == lkey {
            // The remote key must be non-zero and differ from the local one; both cases have
            // probability 2^-63.
            rkey = !rkey;
        }
        Some(Self { seq, lkey, rkey })
    }
}

/// The sequence number a local key carries.
pub(crate) fn seq_of(key: u64) -> u64 {
    key >> RANDOM_BITS
}

#[cfg(CONFIG_MEMREG_KUNIT_TEST)]
#[kunit_tests(memreg_key)]
mod tests {
    use super::*;

    #[test]
    fn local_keys_carry_sequence_and_random_bits() {
        let k = KeyPair::new(5, 0xabcdef, 0x1234_5678_9abc_def0);
        assert_eq!(k.map(|k| k.seq), Some(5));
        assert_eq!(k.map(|k| k.lkey), Some((5 << 24) | 0xabcdef));
        assert_eq!(k.map(|k| seq_of(k.lkey)), Some(5));
        // Random bits above 24 are dropped, never spilled into the sequence.
        let k = KeyPair::new(7, 0xff00_0001, 2);
        assert_eq!(k.map(|k| k.lkey), Some((7 << 24) | 1));
    }

    #[test]
    fn remote_keys_are_the_remote_random_bits() {
        let k = KeyPair::new(9, 42, 0x1234_5678_9abc_def0);
        assert_eq!(k.map(|k| k.rkey), Some(0x1234_5678_9abc_def0));
        // Nothing of the sequence is in the remote key.
        let a = KeyPair::new(1, 42, 77).map(|k| k.rkey);
        let b = KeyPair::new(MAX_SEQ, 42, 77).map(|k| k.rkey);
        assert_eq!(a, b);
    }

    #[test]
    fn keys_are_never_zero_and_never_equal() {
        assert!(KeyPair::new(1, 0, 0).is_some_and(|k| k.lkey != 0 && k.rkey != 0));
        let lkey = (3 << 24) | 5;
        assert!(KeyPair::new(3, 5, lkey).is_some_and(|k| k.rkey != k.lkey && k.rkey != 0));
    }

    #[test]
    fn zero_and_overflowing_sequences_are_refused() {
        assert!(KeyPair::new(0, 1, 2).is_none());
        assert!(KeyPair::new(MAX_SEQ + 1, 1, 2).is_none());
        assert!(KeyPair::new(MAX_SEQ, 1, 2).is_some_and(|k| seq_of(k.lkey) == MAX_SEQ));
    }
}
