// SPDX-License-Identifier: GPL-2.0

//! Checks of the hand-written encodings against values a C compiler computed
//! from the header, and of the header against the one the bindings come from.

extern crate std;

use super::*;
use std::string::String;
use std::vec::Vec;

/// The request numbers as `gcc` computes them from the header's macros.
#[test]
fn ioctl_numbers_match_the_c_macros() {
    let want: &[(u32, u32)] = &[
        (MEMREG_IOC_GET_VERSION, 0x8004b900),
        (MEMREG_IOC_REGISTER, 0xc050b901),
        (MEMREG_IOC_DEREGISTER, 0x4010b902),
        (MEMREG_IOC_QUERY, 0xc040b903),
        (MEMREG_IOC_STATS, 0x80f8b904),
        (MEMREG_IOC_COPY, 0x4030b905),
        (MEMREG_IOC_GLOBAL_STATS, 0x8040b906),
        (MEMREG_IOC_GET_CACHE, 0x8040b907),
        (MEMREG_IOC_SET_CACHE, 0x4040b908),
        (MEMREG_IOC_FLUSH, 0xc020b909),
        (MEMREG_IOC_EVENTS_SETUP, 0xc020b90a),
        (MEMREG_IOC_EVENTS_RESYNC, 0xc018b90b),
        (MEMREG_IOC_QUEUE_CREATE, 0xc030b90c),
        (MEMREG_IOC_DOORBELL, 0x4008b90d),
        (MEMREG_IOC_QUEUE_STATS, 0x8080b90e),
        (MEMREG_IOC_PEER_ATTACH, 0xc018b90f),
        (MEMREG_IOC_PEER_DETACH, 0x4008b910),
        (MEMREG_IOC_PEER_REVOKE, 0x0000b911),
        (MEMREG_IOC_QUEUE_CONNECT, 0x4020b912),
        (MEMREG_IOC_POOL_CREATE, 0xc038b913),
        (MEMREG_IOC_POOL_ALLOC, 0xc030b914),
        (MEMREG_IOC_POOL_FREE, 0x4020b915),
        (MEMREG_IOC_POOL_STATS, 0xc020b916),
        (MEMREG_IOC_POOL_DESTROY, 0x4008b917),
        (MEMREG_IOC_REVALIDATE, 0x4010b918),
        (MEMREG_IOC_POOL_RING, 0xc028b919),
    ];
    for (i, &(got, expected)) in want.iter().enumerate() {
        assert_eq!(
            got, expected,
            "request {i:#x}: {got:#010x} != {expected:#010x}"
        );
        // Each number carries its own index and the magic.
        assert_eq!(got & 0xff, i as u32);
        assert_eq!((got >> 8) & 0xff, MEMREG_IOC_MAGIC);
    }
}

/// The size field of each number is the size of its structure.
#[test]
fn ioctl_sizes_follow_the_structures() {
    let size = |nr: u32| ((nr >> 16) & 0x3fff) as usize;
    assert_eq!(size(MEMREG_IOC_REGISTER), 80);
    assert_eq!(
        size(MEMREG_IOC_REGISTER),
        core::mem::size_of::<memreg_register>()
    );
    assert_eq!(size(MEMREG_IOC_STATS), core::mem::size_of::<memreg_stats>());
    assert_eq!(
        size(MEMREG_IOC_POOL_CREATE),
        core::mem::size_of::<memreg_pool_create>()
    );
    assert_eq!(
        size(MEMREG_IOC_POOL_RING),
        core::mem::size_of::<memreg_pool_ring>()
    );
    assert_eq!(size(MEMREG_IOC_PEER_REVOKE), 0);
    assert_eq!(core::mem::size_of::<memreg_sqe>(), 56);
    assert_eq!(core::mem::size_of::<memreg_sq_slot>(), 64);
    assert_eq!(core::mem::size_of::<memreg_cqe>(), 32);
    assert_eq!(core::mem::size_of::<memreg_event>(), 32);
    assert_eq!(core::mem::size_of::<memreg_event_ring>(), 64);
    assert_eq!(core::mem::size_of::<memreg_sq_user>(), 64);
    assert_eq!(core::mem::size_of::<memreg_cq_ring>(), 64);
    assert_eq!(core::mem::size_of::<memreg_master_ring>(), 64);
    assert_eq!(core::mem::size_of::<memreg_master_user>(), 64);
}

/// The mmap offsets as `gcc` computes them from the header's macros.
#[test]
fn mmap_offsets_match_the_c_macros() {
    assert_eq!(memreg_mmap_sq(3), 0x4300_0000);
    assert_eq!(memreg_mmap_cq(63), 0xbf00_0000);
    assert_eq!(memreg_mmap_pool(0), 0x100_0000_0000);
    assert_eq!(memreg_mmap_pool(15), 0x1f0_0000_0000);
    assert_eq!(memreg_mmap_pool_ring(0), 0x200_0000_0000);
    assert_eq!(memreg_mmap_pool_ring(15), 0x20f_0000_0000);
}

/// A free-buffer ring's `top` as the header's macros pack it.
#[test]
fn pool_ring_top_matches_the_c_macros() {
    let top = memreg_pool_ring_top(7, 42);
    assert_eq!(top, 0x7_0000_002a);
    assert_eq!(memreg_pool_ring_index(top), 42);
    assert_eq!(memreg_pool_ring_tag(top), 7);
    assert_eq!(
        memreg_pool_ring_index(memreg_pool_ring_top(u32::MAX, MEMREG_POOL_RING_EMPTY)),
        MEMREG_POOL_RING_EMPTY
    );
    assert_eq!(core::mem::size_of::<memreg_pool_ring>(), 40);
    assert_eq!(core::mem::size_of::<memreg_pool_ring_class>(), 56);
    assert_eq!(core::mem::size_of::<memreg_pool_ring_head>(), 64);
    assert_eq!(core::mem::size_of::<memreg_pool_ring_chunk>(), 16);
}

/// SHA-256 (FIPS 180-4), enough for one header.
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg: Vec<u8> = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            hh = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 32];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    use core::fmt::Write;
    let mut s = String::new();
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[test]
fn sha256_known_answers() {
    assert_eq!(
        hex(&sha256(b"")),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(
        hex(&sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let long = [b'a'; 1000];
    assert_eq!(
        hex(&sha256(&long)),
        "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
    );
}

/// The committed bindings were generated from the header as it is now.
#[test]
fn bindings_match_the_header() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../../include/uapi/linux/memreg.h");
    let header =
        std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert_eq!(
        hex(&sha256(&header)),
        HEADER_SHA256.trim(),
        "{} changed since src/bindings.rs was generated: run tools/lib/rust/memreg-sys/regen.sh",
        path.display()
    );
}
