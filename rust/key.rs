// SPDX-License-Identifier: GPL-2.0

//! Registration keys.
//!
//! A key is 64 bits: a 40-bit sequence number in the high bits, unique within
//! a context and never reused (the context refuses registrations once it runs
//! out), and 24 random bits in the low bits. The sequence finds the
//! registration; the random bits must match too, so a key cannot be guessed
//! from another. The local and remote keys of one registration share the
//! sequence and differ in their random bits. Zero is never a key.

use kernel::prelude::*;

/// Bits of the random part.
const RANDOM_BITS: u32 = 24;
/// Bits of the sequence part.
const SEQ_BITS: u32 = 64 - RANDOM_BITS;
/// Largest sequence number a key can carry.
pub(crate) const MAX_SEQ: u64 = (1 << SEQ_BITS) - 1;
const RANDOM_MASK: u64 = (1 << RANDOM_BITS) - 1;

/// The local and remote keys of a registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyPair {
    /// The sequence number both keys carry.
    pub(crate) seq: u64,
    /// The local key.
    pub(crate) lkey: u64,
    /// The remote key.
    pub(crate) rkey: u64,
}

impl KeyPair {
    /// Builds the keys for sequence `seq` from two random numbers, or `None`
    /// when `seq` is zero or does not fit.
    pub(crate) fn new(seq: u64, local_random: u32, remote_random: u32) -> Option<Self> {
        if seq == 0 || seq > MAX_SEQ {
            return None;
        }
        let lkey = (seq << RANDOM_BITS) | (u64::from(local_random) & RANDOM_MASK);
        let mut rkey = (seq << RANDOM_BITS) | (u64::from(remote_random) & RANDOM_MASK);
        if rkey == lkey {
            // The two keys must differ; flip one random bit.
            rkey ^= 1;
        }
        Some(Self { seq, lkey, rkey })
    }
}

/// The sequence number a key carries.
pub(crate) fn seq_of(key: u64) -> u64 {
    key >> RANDOM_BITS
}

#[kunit_tests(memreg_key)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_sequence_and_random_bits() {
        let k = KeyPair::new(5, 0xabcdef, 0x123456).unwrap_or(KeyPair {
            seq: 0,
            lkey: 0,
            rkey: 0,
        });
        assert_eq!(k.seq, 5);
        assert_eq!(k.lkey, (5 << 24) | 0xabcdef);
        assert_eq!(k.rkey, (5 << 24) | 0x123456);
        assert_eq!(seq_of(k.lkey), 5);
        assert_eq!(seq_of(k.rkey), 5);
        // Random bits above 24 are dropped, never spilled into the sequence.
        let k = KeyPair::new(7, 0xff00_0001, 2);
        assert_eq!(k.map(|k| k.lkey), Some((7 << 24) | 1));
    }

    #[test]
    fn local_and_remote_keys_differ() {
        let k = KeyPair::new(9, 42, 42);
        assert!(k.is_some_and(|k| k.lkey != k.rkey && seq_of(k.rkey) == 9));
    }

    #[test]
    fn zero_and_overflowing_sequences_are_refused() {
        assert!(KeyPair::new(0, 1, 2).is_none());
        assert!(KeyPair::new(MAX_SEQ + 1, 1, 2).is_none());
        assert!(KeyPair::new(MAX_SEQ, 1, 2).is_some_and(|k| seq_of(k.lkey) == MAX_SEQ));
        // No valid key is zero.
        assert!(KeyPair::new(1, 0, 0).is_some_and(|k| k.lkey != 0 && k.rkey != 0));
    }
}
