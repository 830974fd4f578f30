// SPDX-License-Identifier: GPL-2.0

//! memreg's user ABI structures as plain data.
//!
//! The structures of `include/uapi/linux/memreg.h` reach Rust through the
//! kernel's `uapi` crate (bindgen). Marking them [`FromBytes`] and [`AsBytes`]
//! lets the driver copy each one from and to user space in one copy, with no
//! hand-written codec, the way Binder's and DRM drivers' uapi types are used.
//!
//! C header: [`include/uapi/linux/memreg.h`](srctree/include/uapi/linux/memreg.h)
#![cfg(CONFIG_MEMREG_SUPPORT)]

use crate::{
    transmute::{AsBytes, FromBytes},
    uapi,
};

/// The size of what `_p` points at.
#[allow(
    dead_code,
    reason = "only used in unnamed constants, which the lint does not count"
)]
const fn size_of_pointee<T>(_p: *const T) -> usize {
    core::mem::size_of::<T>()
}

/// Marks each structure as plain data, after checking at compile time that
/// its size is the sum of its fields' sizes: no padding that a copy to user
/// space could leak. Every field must be listed (a missing one fails the
/// check, a wrong name fails to compile).
macro_rules! plain_data {
    ($($t:ident { $($f:ident),* $(,)? }),* $(,)?) => {$(
        const _: () = {
            let v = core::mem::MaybeUninit::<uapi::$t>::uninit();
            let p = v.as_ptr();
            // SAFETY: Only field addresses inside `v` are computed; nothing is read.
            let fields = 0 $(+ size_of_pointee(unsafe { &raw const (*p).$f }))*;
            assert!(fields == core::mem::size_of::<uapi::$t>());
        };
        // SAFETY: `uapi::$t` is a `repr(C)` structure of integers and arrays of integers, so
        // every bit pattern is valid.
        unsafe impl FromBytes for uapi::$t {}
        // SAFETY: As above, and the check shows it has no padding, so every byte is
        // initialised.
        unsafe impl AsBytes for uapi::$t {}
    )*};
}

plain_data! {
    memreg_register {
        addr, length, access, flags, lkey, rkey, region_addr, region_length, slot, reserved,
        generation,
    },
    memreg_deregister { key, reserved },
    memreg_query { key, addr, length, access, state, pages, extents, refcount, reserved },
    memreg_stats {
        registrations, cache_hits, cache_misses, pages_pinned, pages_pinned_peak,
        deregistrations, invalidations, parked, parked_pages, parks, revives, evictions,
        suspensions, resumptions, revalidation_failures, reserved,
    },
    memreg_global_stats {
        contexts, regions, pages_pinned, budget_pages, max_registrations, peers, contexts_alive,
        reserved,
    },
    memreg_copy { key, offset, length, buf, direction, flags, reserved },
    memreg_cache_config { parking, reserved0, max_parked, max_parked_pages, idle_ms, reserved },
    memreg_flush { evicted, pages, reserved },
    memreg_event { key, addr, length, kind, cause },
    memreg_event_ring { tail, entries, flags, reserved0, overflows, reserved },
    memreg_events_setup { entries, eventfd, ring_bytes, reserved },
    memreg_resync_entry { key, addr, length, state, slot },
    memreg_events_resync { entries, capacity, count, reserved },
    memreg_sqe {
        opcode, flags, reserved0, peer, user_data, key, offset, src_key, src_offset, length,
    },
    memreg_sq_slot { seq, sqe },
    memreg_sq_user { insert, cq_head, cq_arm, reserved },
    memreg_cq_ring { sq_head, cq_tail, flags, sq_entries, cq_entries, reserved },
    memreg_cqe { user_data, bytes, status, flags, imm_data },
    memreg_master_ring { tail, flags, overflows, reserved },
    memreg_master_user { head, arm, reserved },
    memreg_queue_create { sq_entries, cq_entries, eventfd, queue, sq_bytes, cq_bytes, reserved },
    memreg_doorbell { queue, reserved },
    memreg_peer_attach { fd, peer, reserved },
    memreg_peer_detach { peer, reserved },
    memreg_queue_connect { queue, peer, remote_queue, rnr_timeout_ms, reserved },
    memreg_pool_class {
        buffer_size, max_buffers, low_watermark, high_watermark, initial, chunk_buffers, offset,
    },
    memreg_pool_create {
        classes, nr_classes, access, leak_timeout_ms, shrink_ms, pool, reserved0, map_bytes,
        reserved,
    },
    memreg_pool_buf { addr, key, offset, size, class },
    memreg_pool_alloc { pool, flags, size, bufs, count, timeout_ms, reserved },
    memreg_pool_free { pool, count, addrs, reserved },
    memreg_pool_stats {
        boundary, allocated, free, grows, shrinks, waits, timeouts, fallbacks, leaks_reclaimed,
        quarantined,
    },
    memreg_pool_info { pool, count, stats, reserved },
    memreg_pool_destroy { pool, reserved },
    memreg_queue_stats {
        requests, completions, errors, doorbells, wakeups, batches, batch_max, batch_limit,
        poll_us, cq_full_stalls, shadow_hits, shadow_misses, master_overflows, remote_bytes,
        messages, rnr_timeouts,
    },
}
