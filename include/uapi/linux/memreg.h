/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * memreg: registered user memory with automatic invalidation.
 *
 * Every argument structure has reserved fields that must be zero on input
 * (the kernel returns -EINVAL otherwise) and are written as zero on output.
 * A later ABI version adds fields by turning reserved space into named
 * fields, or by growing a structure at its end, always so that zero keeps
 * the old behaviour. Ioctl numbers are matched on type, number and
 * direction: the kernel accepts every size of a structure from the first
 * one it published (a program built against an older header keeps working)
 * and larger ones whose extra bytes are zero (E2BIG otherwise); a smaller
 * size than the first is EINVAL. See
 * Documentation/userspace-api/memreg/index.rst.
 */
#ifndef _UAPI_LINUX_MEMREG_H
#define _UAPI_LINUX_MEMREG_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* The ABI version this header describes, answered by MEMREG_IOC_GET_VERSION. */
#define MEMREG_ABI_VERSION		5

#define MEMREG_IOC_MAGIC		0xB9

/* Largest length one registration may cover (64 GiB). */
#define MEMREG_MAX_LENGTH		(1ULL << 36)

/* Access rights of a registration (struct memreg_register.access). */
#define MEMREG_ACCESS_LOCAL_READ	(1U << 0)
#define MEMREG_ACCESS_LOCAL_WRITE	(1U << 1)
#define MEMREG_ACCESS_REMOTE_READ	(1U << 2)
#define MEMREG_ACCESS_REMOTE_WRITE	(1U << 3)
#define MEMREG_ACCESS_ALL		0xfU

/* struct memreg_register.flags, output: served from the registration cache. */
#define MEMREG_REGISTER_CACHED		(1U << 0)
/* struct memreg_register.flags, output: served by reviving a parked registration. */
#define MEMREG_REGISTER_REVIVED		(1U << 1)
/*
 * struct memreg_register.flags, input and output: a watch-only registration.
 * Its pages are not pinned nor charged to RLIMIT_MEMLOCK; it has a state
 * word and events like any registration, ends when the memory under it
 * changes, and never moves data (COPY, ring requests and peers refuse its
 * key with EOPNOTSUPP). @access holds local rights only.
 */
#define MEMREG_REGISTER_WATCH		(1U << 2)

/*
 * State words (see Documentation/userspace-api/memreg/state-and-events.rst). The file's
 * mapping at MEMREG_MMAP_STATE_WORDS is a read-only array of __u64, one word
 * per slot. While a registration is usable its word equals the @generation
 * REGISTER returned, a nonzero multiple of 4. The kernel changes the word,
 * before the event that suspends or ends the registration returns, to
 * @generation | MEMREG_WORD_SUSPENDED (MEMREG_IOC_REVALIDATE, or a REGISTER it
 * serves, revalidates it; the kernel also does soon by itself)
 * or to @generation | MEMREG_WORD_ENDED. A slot is reused only with a larger
 * generation. Read a word with an acquire load; a cache hit is valid when it
 * equals the generation.
 */
#define MEMREG_NO_SLOT			0xffffffffU
#define MEMREG_WORD_SUSPENDED		1ULL
#define MEMREG_WORD_ENDED		2ULL
/* Most slots a context has (a 512 KiB mapping). */
#define MEMREG_MAX_SLOTS		65536

/*
 * mmap offsets of the areas a /dev/memreg file maps, all MAP_SHARED and
 * never executable: the state words and the event ring read-only, the event
 * ring's head page read-write.
 */
#define MEMREG_MMAP_STATE_WORDS		0x00000000ULL
#define MEMREG_MMAP_EVENTS		0x10000000ULL
#define MEMREG_MMAP_EVENTS_HEAD		0x20000000ULL

/**
 * struct memreg_register - register a user range (MEMREG_IOC_REGISTER)
 * @addr:     in: start of the range, any alignment
 * @length:   in: length in bytes, 1 .. MEMREG_MAX_LENGTH
 * @access:   in: MEMREG_ACCESS_* bits, at least one; out: the rights the
 *            returned keys carry: exactly the remote rights asked, and at
 *            least the local ones
 * @flags:    in: 0 or MEMREG_REGISTER_WATCH; out: that bit as given, and
 *            MEMREG_REGISTER_CACHED when an existing
 *            registration was returned: one covering the range with at least
 *            the local rights of @access and exactly its remote rights (and,
 *            when remote rights are asked, exactly the range asked)
 * @lkey:     out: local key, for this context's own requests
 * @rkey:     out: remote key, to be granted to peers: 64 random bits,
 *            unrelated to @lkey. A registration that is parked loses its
 *            remote key for good; reviving it gives it a new one (0 when it
 *            has no remote right).
 * @region_addr:   out: start of the registration the keys name; COPY offsets
 *                 count from here. Equals @addr on a miss, may be lower on a
 *                 cache hit.
 * @region_length: out: its length
 * @slot:     out: the index of the registration's state word, or
 *            MEMREG_NO_SLOT when the file has no state words mapped (or all
 *            slots are taken)
 * @reserved: must be zero
 * @generation: out: the value of the state word while the registration is
 *            usable (0 with MEMREG_NO_SLOT)
 * @user_data: in: a value of the caller's, reported with every event of the
 *            registration a miss creates (a hit keeps the value the
 *            registration was created with); added in ABI version 4, the
 *            structure's size before it (72) is still accepted (user data 0)
 *
 * Output fields are ignored on input; @flags also reports
 * MEMREG_REGISTER_REVIVED when a parked registration was revived. A watch
 * request is served only by watch-only registrations, and a pinned one only
 * by pinned registrations.
 */
struct memreg_register {
	__u64 addr;
	__u64 length;
	__u32 access;
	__u32 flags;
	__u64 lkey;
	__u64 rkey;
	__u64 region_addr;
	__u64 region_length;
	__u32 slot;
	__u32 reserved;
	__u64 generation;
	__u64 user_data;
};

/**
 * struct memreg_deregister - drop one reference (MEMREG_IOC_DEREGISTER)
 *
 * The last reference parks the registration when parking is on (the
 * default): it stays pinned and watched, and a later REGISTER it covers
 * revives it. Otherwise, or when it cannot be parked, it ends.
 *
 * @key:      in: the local key REGISTER returned
 * @reserved: must be zero
 */
struct memreg_deregister {
	__u64 key;
	__u64 reserved;
};

/* struct memreg_query.state, bits */
#define MEMREG_STATE_VALID		(1U << 0)	/* data may move through it */
#define MEMREG_STATE_PARKED		(1U << 1)	/* no reference left, kept pinned */
#define MEMREG_STATE_SUSPENDED		(1U << 2)	/* revalidated on next use */

/**
 * struct memreg_query - describe a registration (MEMREG_IOC_QUERY)
 * @key:      in: a local key
 * @addr:     out: start address as registered
 * @length:   out: length in bytes as registered
 * @access:   out: MEMREG_ACCESS_* bits
 * @state:    out: MEMREG_STATE_*
 * @pages:    out: number of pinned pages
 * @extents:  out: number of physically contiguous extents (translation entries)
 * @refcount: out: number of REGISTER calls not yet matched by DEREGISTER
 * @reserved: must be zero
 */
struct memreg_query {
	__u64 key;
	__u64 addr;
	__u64 length;
	__u32 access;
	__u32 state;
	__u64 pages;
	__u32 extents;
	__u32 refcount;
	__u64 reserved[2];
};

/*
 * Causes of invalidation, the index into struct memreg_stats.invalidations.
 * Each kernel MMU notifier event is mapped to one of these explicitly (the
 * values do not follow the kernel's enum); an event this ABI does not name is
 * counted as MEMREG_INVAL_OTHER. The causes marked "not counted" never end a
 * registration. See Documentation/userspace-api/memreg/registration.rst for what produces each one in
 * Linux 7.3 (a "clear" in particular has many sources).
 */
enum memreg_inval_cause {
	MEMREG_INVAL_UNMAP = 0,		/* munmap, mremap, MAP_FIXED over it */
	MEMREG_INVAL_CLEAR,		/* madvise(DONTNEED/FREE), truncate, hole
					 * punch, a VMA split in the same 2 MiB
					 * block, THP split/collapse, ... */
	MEMREG_INVAL_PROTECTION_VMA,	/* mprotect */
	MEMREG_INVAL_PROTECTION_PAGE,	/* not counted: fork's COW protection */
	MEMREG_INVAL_SOFT_DIRTY,	/* not counted */
	MEMREG_INVAL_RELEASE,		/* the address space is torn down */
	MEMREG_INVAL_MIGRATE,		/* device (HMM) migration of the pages */
	MEMREG_INVAL_EXCLUSIVE,		/* device-exclusive access */
	MEMREG_INVAL_OTHER,		/* an event this ABI version does not name */
	MEMREG_INVAL_NR_CAUSES = 9,
};

/* Why parked registrations were ended: struct memreg_stats.evictions. */
enum memreg_evict_reason {
	MEMREG_EVICT_IDLE = 0,		/* the context was idle for idle_ms */
	MEMREG_EVICT_PIN_LIMIT,		/* room for a new registration under
					 * RLIMIT_MEMLOCK, max_pinned_pages or
					 * max_registrations */
	MEMREG_EVICT_PARK_LIMIT,	/* max_parked or max_parked_pages */
	MEMREG_EVICT_SHRINKER,		/* memory pressure */
	MEMREG_EVICT_FLUSH,		/* MEMREG_IOC_FLUSH, or parking turned off */
	MEMREG_EVICT_NR_REASONS = 5,
};

/**
 * struct memreg_stats - per-context counters (MEMREG_IOC_STATS)
 * @registrations:     out: live registrations now
 * @cache_hits:        out: REGISTER calls served by an existing registration
 * @cache_misses:      out: REGISTER calls that pinned a new registration
 * @pages_pinned:      out: pages of this context's live registrations
 * @pages_pinned_peak: out: the highest @pages_pinned seen
 * @deregistrations:   out: registrations that ended by DEREGISTER
 * @invalidations:     out: registrations that ended by invalidation, by cause
 *                     (a suspended registration whose revalidation fails is
 *                     counted under the cause that suspended it)
 * @parked:            out: parked registrations now (part of @registrations)
 * @parked_pages:      out: their pages (part of @pages_pinned)
 * @parks:             out: registrations parked by their last DEREGISTER
 * @revives:           out: REGISTER calls served by reviving a parked one
 * @evictions:         out: parked registrations ended, by reason
 * @suspensions:       out: registrations suspended by an event that may
 *                     have left their pages in place
 * @resumptions:       out: suspended registrations found intact and resumed
 * @revalidation_failures: out: suspended registrations that ended because
 *                     their pages were no longer mapped as registered
 * @watches:           out: live watch-only registrations now (part of
 *                     @registrations; their pages are not in @pages_pinned)
 * @watch_pages:       out: their pages
 * @reserved:          must be zero
 *
 * @deregistrations counts registrations ended by DEREGISTER (parking off or
 * not possible); @parks those parked instead.
 */
struct memreg_stats {
	__u64 registrations;
	__u64 cache_hits;
	__u64 cache_misses;
	__u64 pages_pinned;
	__u64 pages_pinned_peak;
	__u64 deregistrations;
	__u64 invalidations[MEMREG_INVAL_NR_CAUSES];
	__u64 parked;
	__u64 parked_pages;
	__u64 parks;
	__u64 revives;
	__u64 evictions[MEMREG_EVICT_NR_REASONS];
	__u64 suspensions;
	__u64 resumptions;
	__u64 revalidation_failures;
	__u64 watches;
	__u64 watch_pages;
	__u64 reserved[2];
};

/**
 * struct memreg_global_stats - module-wide counters (MEMREG_IOC_GLOBAL_STATS)
 * @contexts:     out: open /dev/memreg files, including the caller's
 * @regions:      out: registrations alive in all contexts, including those
 *                whose pages are still being released
 * @pages_pinned: out: pages charged by the registrations of all contexts
 *                (a registration's pages are uncharged when it ends, before
 *                their unpinning, which may be deferred, completes)
 * @budget_pages: out: the module's pinned-page budget (max_pinned_pages,
 *                0 for none)
 * @max_registrations: out: live registrations one context may hold
 *                (max_registrations); REGISTER past it fails with EDQUOT
 * @peers:        out: peer attachments alive in all contexts
 * @contexts_alive: out: contexts whose memory is still allocated (a file
 *                closed a moment ago may still be counted while its last
 *                work finishes; one counted for good is a leak)
 * @watches:      out: live watch-only registrations in all contexts (at most
 *                the max_watches_total parameter)
 */
struct memreg_global_stats {
	__u64 contexts;
	__u64 regions;
	__u64 pages_pinned;
	__u64 budget_pages;
	__u64 max_registrations;
	__u64 peers;
	__u64 contexts_alive;
	__u64 watches;
};

/* struct memreg_copy.direction */
#define MEMREG_COPY_TO_REGION		0	/* user buffer -> registered region */
#define MEMREG_COPY_FROM_REGION		1	/* registered region -> user buffer */

/**
 * struct memreg_copy - move data through a registration (MEMREG_IOC_COPY)
 * @key:       in: a local key
 * @offset:    in: byte offset into the registered range
 * @length:    in: bytes to move; 0 is allowed and moves nothing
 * @buf:       in: user buffer address
 * @direction: in: MEMREG_COPY_*
 * @flags:     in: must be zero
 * @reserved:  must be zero
 *
 * The kernel reaches the registered pages only through the registration's
 * translation entries, never through the caller's page tables.
 */
struct memreg_copy {
	__u64 key;
	__u64 offset;
	__u64 length;
	__u64 buf;
	__u32 direction;
	__u32 flags;
	__u64 reserved;
};

/**
 * struct memreg_cache_config - how the context parks registrations
 *                              (MEMREG_IOC_GET_CACHE, MEMREG_IOC_SET_CACHE)
 * @parking:          1: the last DEREGISTER parks a registration; 0: it ends
 *                    it (setting 0 ends every parked registration now)
 * @reserved0:        must be zero
 * @max_parked:       parked registrations at most; parking one more ends the
 *                    least recently used first
 * @max_parked_pages: their pages at most; a registration larger than this
 *                    is never parked
 * @idle_ms:          parked registrations end once the context made no call
 *                    for this long; 0: never. At most 86400000 (a day).
 * @reserved:         must be zero
 *
 * A new file starts with the module parameters park, park_max,
 * park_max_pages and park_idle_ms. SET replaces all fields at once and ends
 * parked registrations past the new limits; values out of range: EINVAL.
 */
struct memreg_cache_config {
	__u32 parking;
	__u32 reserved0;
	__u64 max_parked;
	__u64 max_parked_pages;
	__u64 idle_ms;
	__u64 reserved[4];
};

#define MEMREG_MAX_IDLE_MS		86400000ULL

/**
 * struct memreg_flush - end every parked registration (MEMREG_IOC_FLUSH)
 * @evicted:  out: parked registrations ended
 * @pages:    out: their pages, now unpinned and uncharged
 * @reserved: must be zero
 */
struct memreg_flush {
	__u64 evicted;
	__u64 pages;
	__u64 reserved[2];
};

/*
 * The event ring (see Documentation/userspace-api/memreg/state-and-events.rst), created by
 * MEMREG_IOC_EVENTS_SETUP. Its mapping at MEMREG_MMAP_EVENTS (read-only,
 * ring_bytes long) starts with struct memreg_event_ring, followed at
 * MEMREG_EVENTS_OFFSET by @entries struct memreg_event, then (ABI version
 * 4, at @user_data_offset) by @entries __u64: the user data of the
 * registration each entry is about, at the same index. The one-page mapping
 * at MEMREG_MMAP_EVENTS_HEAD (read-write) holds the reader's __u32 head.
 *
 * The kernel writes an event when a registration is suspended, ends by an
 * invalidation or a failed revalidation, or is evicted, and when a
 * watch-only registration is resumed by a revalidation (not when DEREGISTER
 * or closing the file ends a registration, nor when a pinned one resumes:
 * its state word back at its generation is the only sign). An event about
 * a registration may still be unread after DEREGISTER ended it: match it to
 * what the key names now. Entry i lives at index i & (entries - 1).
 * Producer: writes the entry, then stores tail + 1 with release ordering,
 * then wakes poll/epoll and signals the eventfd. Reader: loads tail with
 * acquire ordering, reads entries head .. tail - 1, then stores the new head
 * with release ordering. When tail - head == entries the ring is full: the
 * event is not written, MEMREG_EVENTS_OVERFLOW is set in @flags and
 * @overflows counts it; nothing is overwritten. The reader then calls
 * MEMREG_IOC_EVENTS_RESYNC.
 */
#define MEMREG_EVENT_SUSPENDED		1	/* revalidated on next use;
						 * @cause: MEMREG_INVAL_CLEAR, or
						 * _PROTECTION_VMA (a watch) */
#define MEMREG_EVENT_ENDED		2	/* @cause: MEMREG_INVAL_* */
#define MEMREG_EVENT_EVICTED		3	/* @cause: MEMREG_EVICT_* */
#define MEMREG_EVENT_RESUMED		4	/* a watch-only registration was
						 * revalidated and is usable again;
						 * @cause: what suspended it */

#define MEMREG_EVENTS_OVERFLOW		(1U << 0)
#define MEMREG_EVENTS_OFFSET		64
#define MEMREG_MAX_EVENTS		65536

/**
 * struct memreg_event - one event of the event ring
 * @key:    the registration's local key
 * @addr:   its start address as registered
 * @length: its length
 * @kind:   MEMREG_EVENT_*
 * @cause:  MEMREG_INVAL_* (SUSPENDED, ENDED) or MEMREG_EVICT_* (EVICTED)
 */
struct memreg_event {
	__u64 key;
	__u64 addr;
	__u64 length;
	__u32 kind;
	__u32 cause;
};

/**
 * struct memreg_event_ring - the header of the event ring mapping
 * @tail:      events written so far (wraps)
 * @entries:   number of entries, a power of two
 * @flags:     MEMREG_EVENTS_OVERFLOW once an event could not be written;
 *             cleared by MEMREG_IOC_EVENTS_RESYNC
 * @reserved0: zero
 * @overflows: events not written because the ring was full, in all
 * @user_data_offset: where the user data array starts in the mapping (0
 *             from kernels before ABI version 4, which have none)
 * @reserved:  zero
 */
struct memreg_event_ring {
	__u32 tail;
	__u32 entries;
	__u32 flags;
	__u32 reserved0;
	__u64 overflows;
	__u64 user_data_offset;
	__u64 reserved[4];
};

/**
 * struct memreg_events_setup - create the event ring (MEMREG_IOC_EVENTS_SETUP)
 * @entries:    in: a power of two, 1 .. MEMREG_MAX_EVENTS
 * @eventfd:    in: an eventfd to signal with each event, or -1
 * @ring_bytes: out: the length of the MEMREG_MMAP_EVENTS mapping
 * @reserved:   must be zero
 *
 * Once per file: EBUSY afterwards. EINVAL for a bad @entries, EBADF or
 * EINVAL for a bad @eventfd.
 */
struct memreg_events_setup {
	__u32 entries;
	__s32 eventfd;
	__u64 ring_bytes;
	__u64 reserved[2];
};

/**
 * struct memreg_resync_entry - a registration still valid
 * @key:    its local key
 * @addr:   its start address as registered
 * @length: its length
 * @state:  MEMREG_STATE_* bits
 * @slot:   its state word's slot, or MEMREG_NO_SLOT
 */
struct memreg_resync_entry {
	__u64 key;
	__u64 addr;
	__u64 length;
	__u32 state;
	__u32 slot;
};

/**
 * struct memreg_events_resync - start over after an overflow
 *                               (MEMREG_IOC_EVENTS_RESYNC)
 * @entries:  in: user array of @capacity struct memreg_resync_entry, filled
 *            with the registrations valid now
 * @capacity: in: its length, at most 1048576
 * @count:    out: the number of valid registrations; only the first
 *            @capacity are written when it is larger (call again)
 * @reserved: must be zero
 *
 * In one step, under the lock that orders events: every unread event is
 * discarded (the head is set to the tail), MEMREG_EVENTS_OVERFLOW is
 * cleared, and the registrations valid at that moment are listed. Every
 * change after it is in the ring. Works without an event ring too.
 */
struct memreg_events_resync {
	__u64 entries;
	__u32 capacity;
	__u32 count;
	__u64 reserved;
};

/*
 * The data path (see Documentation/userspace-api/memreg/rings.rst): requests posted
 * through shared rings, executed by the context's worker through the
 * registrations' translation entries, completed through shared rings.
 *
 * A queue (MEMREG_IOC_QUEUE_CREATE) has two mappings:
 * - MEMREG_MMAP_SQ(q), read-write, what user space writes: struct
 *   memreg_sq_user, then at MEMREG_SQ_SLOTS_OFFSET @sq_entries struct
 *   memreg_sq_slot;
 * - MEMREG_MMAP_CQ(q), read-only, what the kernel writes: struct
 *   memreg_cq_ring, then at MEMREG_CQ_ENTRIES_OFFSET @cq_entries struct
 *   memreg_cqe.
 * The context's master ring (created with its first queue) names queues
 * with new completions: MEMREG_MMAP_MASTER, read-only, struct
 * memreg_master_ring then MEMREG_MASTER_ENTRIES __u32 queue indexes at
 * MEMREG_MASTER_ENTRIES_OFFSET; MEMREG_MMAP_MASTER_USER, read-write, one
 * page, struct memreg_master_user.
 *
 * Posting (any number of threads, no lock): slot i of the submission ring
 * starts with seq == i. A poster loads pos = insert (relaxed); the slot is
 * slots[pos & (sq_entries - 1)]; it loads the slot's seq (acquire): equal to
 * pos, it claims the slot with a compare-and-swap of insert from pos to
 * pos + 1 (on failure it retries with the value found); less than pos, the
 * ring is full (wait: poll for POLLOUT, or retry); greater, another poster
 * took it (reload insert). It writes the descriptor, then stores seq =
 * pos + 1 (release): the slot is published. Then a full barrier
 * (__atomic_thread_fence(__ATOMIC_SEQ_CST)), then if the CQ ring's flags have
 * MEMREG_QUEUE_NEED_WAKEUP and its sq_head equals pos, it rings the doorbell
 * (MEMREG_IOC_DOORBELL); otherwise posting took no system call.
 *
 * The worker takes slot h (h = sq_head) when its seq is h + 1: it copies the
 * descriptor once, stores seq = h + sq_entries (release: the slot is free
 * for the next lap), then publishes sq_head = h + 1 (release), validates its
 * copy and executes it. Before it sleeps it sets MEMREG_QUEUE_NEED_WAKEUP,
 * issues a full barrier and looks at slot sq_head again.
 *
 * Completing: the worker writes each entry of a batch at its position
 * (tail & (cq_entries - 1)), then stores the new cq_tail once (release).
 * The reader loads cq_tail (acquire), reads the entries up to it, then
 * stores its cq_head (release). The worker
 * takes a descriptor only when the completion ring has room for it
 * (cq_tail - cq_head < cq_entries, a head that makes no sense reading as
 * full): otherwise it sets MEMREG_QUEUE_CQ_FULL and stops taking from that
 * queue (it sets the flags, issues a full barrier
 * and looks at cq_head once more before it stops); the reader, after storing
 * its head, issues a full barrier and rings the doorbell when
 * MEMREG_QUEUE_CQ_FULL is set. A completion is never dropped, overwritten or
 * duplicated.
 *
 * Arming: storing a nonzero cq_arm (or the master's arm) asks for one
 * wake-up; the reader then issues a full barrier and looks at the tail once
 * more (the kernel issues one between publishing a tail and reading the arm
 * word). The next completion of that ring clears the arm word, wakes
 * poll/epoll on the file and signals the queue's eventfd (the master ring
 * wakes poll/epoll only). Unarmed completions wake nothing.
 */
#define MEMREG_MAX_QUEUES		64
#define MEMREG_MAX_SQ_ENTRIES		4096
#define MEMREG_MAX_CQ_ENTRIES		16384
#define MEMREG_MASTER_ENTRIES		1024

#define MEMREG_MMAP_MASTER		0x30000000ULL
#define MEMREG_MMAP_MASTER_USER		0x38000000ULL
#define MEMREG_MMAP_SQ_BASE		0x40000000ULL
#define MEMREG_MMAP_CQ_BASE		0x80000000ULL
#define MEMREG_MMAP_QUEUE_SHIFT		24
#define MEMREG_MMAP_SQ(q)		(MEMREG_MMAP_SQ_BASE + ((__u64)(q) << MEMREG_MMAP_QUEUE_SHIFT))
#define MEMREG_MMAP_CQ(q)		(MEMREG_MMAP_CQ_BASE + ((__u64)(q) << MEMREG_MMAP_QUEUE_SHIFT))

#define MEMREG_SQ_SLOTS_OFFSET		64
#define MEMREG_CQ_ENTRIES_OFFSET	64
#define MEMREG_MASTER_ENTRIES_OFFSET	64

/* struct memreg_sqe.opcode */
#define MEMREG_OP_NOP			0	/* completes with status 0 */
#define MEMREG_OP_COPY			1	/* @length bytes from (src_key,
						 * src_offset) to (key, offset) */
#define MEMREG_OP_FENCE			2	/* completes after everything
						 * posted before it */
#define MEMREG_OP_DEREGISTER		3	/* drops a reference on @key */
#define MEMREG_OP_WRITE			4	/* one-sided: @length bytes from
						 * the local (src_key, src_offset)
						 * to the peer's (key, offset) */
#define MEMREG_OP_READ			5	/* one-sided: @length bytes from
						 * the peer's (src_key,
						 * src_offset) to the local (key,
						 * offset) */
#define MEMREG_OP_SEND			6	/* two-sided: @length bytes at
						 * (src_key, src_offset) to the
						 * oldest RECV posted on the
						 * connected queue */
#define MEMREG_OP_RECV			7	/* two-sided: a buffer of @length
						 * bytes at (key, offset) for the
						 * next SEND to this queue */
#define MEMREG_OP_POOL_ALLOC		8	/* a buffer of @length bytes
						 * from pool @peer, never
						 * waiting (-EAGAIN) */
#define MEMREG_OP_POOL_FREE		9	/* gives back the buffer at
						 * address @offset of pool
						 * @peer */
#define MEMREG_OP_LAST			10	/* one past the last opcode;
						 * grows with each new one */

/* struct memreg_sqe.flags */
#define MEMREG_SQE_IMM			(1U << 0)	/* SEND: @imm_data is
							 * delivered with it */

/**
 * struct memreg_sqe - a request on a submission ring
 * @opcode:     MEMREG_OP_*
 * @flags:      MEMREG_SQE_IMM with SEND; otherwise zero
 * @reserved0:  must be zero
 * @peer:       WRITE, READ: the peer handle (MEMREG_IOC_PEER_ATTACH) whose
 *              registration the remote key names; POOL_ALLOC, POOL_FREE:
 *              the pool; otherwise zero
 * @user_data:  returned as is in the completion
 * @key:        the destination: COPY, READ, RECV: a local key (LOCAL_WRITE);
 *              WRITE: the peer's remote key (REMOTE_WRITE); DEREGISTER:
 *              the key; SEND: the immediate data when @flags has
 *              MEMREG_SQE_IMM, else zero; otherwise zero
 * @offset:     COPY, WRITE, READ, RECV: byte offset into the destination;
 *              POOL_FREE: the buffer's address; otherwise zero
 * @src_key:    the source: COPY, WRITE, SEND: a local key (LOCAL_READ);
 *              READ: the peer's remote key (REMOTE_READ); otherwise zero
 * @src_offset: COPY, WRITE, READ, SEND: byte offset into the source;
 *              otherwise zero
 * @length:     COPY, WRITE, READ, SEND: bytes to move; RECV: the buffer's
 *              length; POOL_ALLOC: the size wanted; at most
 *              MEMREG_MAX_LENGTH; otherwise 0
 *
 * A POOL_ALLOC completes with the buffer's address in @bytes and its key in
 * @imm_data (flags MEMREG_CQE_POOL); its offset in the key's registration
 * is (address - (pool address + class offset)) % (chunk_buffers *
 * buffer_size), from POOL_CREATE. Errors as MEMREG_IOC_POOL_ALLOC and
 * MEMREG_IOC_POOL_FREE, as negative statuses.
 */
struct memreg_sqe {
	__u8 opcode;
	__u8 flags;
	__u16 reserved0;
	__u32 peer;
	__u64 user_data;
	__u64 key;
	__u64 offset;
	__u64 src_key;
	__u64 src_offset;
	__u64 length;
};

/**
 * struct memreg_sq_slot - a slot of the submission ring
 * @seq: the slot's sequence (see the posting protocol above)
 * @sqe: the descriptor
 */
struct memreg_sq_slot {
	__u64 seq;
	struct memreg_sqe sqe;
};

/**
 * struct memreg_sq_user - the header of a queue's read-write mapping
 * @insert:   slots claimed by posters
 * @cq_head:  completions the reader consumed
 * @cq_arm:   nonzero: wake on the next completion (the kernel clears it)
 * @reserved: zero; not read by the kernel
 */
struct memreg_sq_user {
	__u64 insert;
	__u32 cq_head;
	__u32 cq_arm;
	__u64 reserved[6];
};

/* struct memreg_cq_ring.flags */
#define MEMREG_QUEUE_NEED_WAKEUP	(1U << 0)	/* the worker sleeps */
#define MEMREG_QUEUE_CQ_FULL		(1U << 1)	/* stopped: no room */

/**
 * struct memreg_cq_ring - the header of a queue's read-only mapping
 * @sq_head:    submissions the worker took
 * @cq_tail:    completions written
 * @flags:      MEMREG_QUEUE_*
 * @sq_entries: submission ring entries
 * @cq_entries: completion ring entries
 * @reserved:   zero
 */
struct memreg_cq_ring {
	__u64 sq_head;
	__u32 cq_tail;
	__u32 flags;
	__u32 sq_entries;
	__u32 cq_entries;
	__u64 reserved[5];
};

/* struct memreg_cqe.flags */
#define MEMREG_CQE_IMM			(1U << 0)	/* RECV: @imm_data holds
							 * the sender's */
#define MEMREG_CQE_POOL			(1U << 1)	/* POOL_ALLOC: @bytes is
							 * the buffer's address,
							 * @imm_data its key */

/**
 * struct memreg_cqe - a completion
 * @user_data: the request's
 * @bytes:     bytes moved (COPY, WRITE, READ, SEND, RECV), 0 otherwise
 * @status:    0, or a negative errno: -EINVAL (bad opcode, flags, reserved
 *             field, a nonzero field the opcode does not use, a range past
 *             the registration, DEREGISTER of a parked registration),
 *             -ENOENT (a key that names no registration, or one that ended;
 *             for a remote key also one that is parked or that the peer
 *             never gave out), -EACCES (a registration without the access),
 *             -EAGAIN (a suspended registration still being invalidated),
 *             -EOVERFLOW (offset + length wraps), -ENOMEM (out of memory),
 *             -ECANCELED (the file is being released; RECVs still posted
 *             then are dropped without a completion), -ENOTCONN (a peer handle this file does not have, or a
 *             SEND on a queue that is not connected), -ECONNRESET (the peer
 *             closed its file or revoked its grants), -ENOBUFS (SEND: no
 *             RECV was posted within the connection's rnr_timeout_ms),
 *             -EMSGSIZE (SEND and the RECV it met: the message is longer
 *             than the buffer; nothing moved), -ENOSPC (RECV: the queue
 *             already has cq_entries RECVs posted)
 * @flags:     MEMREG_CQE_*
 * @imm_data:  RECV with MEMREG_CQE_IMM: the sender's immediate data; else 0
 */
struct memreg_cqe {
	__u64 user_data;
	__u64 bytes;
	__s32 status;
	__u32 flags;
	__u64 imm_data;
};

/**
 * struct memreg_master_ring - the header of the master ring mapping
 * @tail:      queue indexes written
 * @flags:     MEMREG_EVENTS_OVERFLOW once an entry could not be written
 * @overflows: entries not written; a reader that sees it grow looks at
 *             every queue (the completion rings are what counts)
 * @reserved:  zero
 *
 * After a batch of completions to a queue, the worker writes its index,
 * unless the ring is full (tail - head >= MEMREG_MASTER_ENTRIES, which a
 * head that makes no sense also reads as).
 */
struct memreg_master_ring {
	__u32 tail;
	__u32 flags;
	__u64 overflows;
	__u64 reserved[6];
};

/**
 * struct memreg_master_user - the read-write page of the master ring
 * @head:     entries the reader consumed
 * @arm:      nonzero: wake poll/epoll on the next entry (cleared)
 * @reserved: zero; not read by the kernel
 */
struct memreg_master_user {
	__u32 head;
	__u32 arm;
	__u64 reserved[7];
};

/**
 * struct memreg_queue_create - create a queue (MEMREG_IOC_QUEUE_CREATE)
 * @sq_entries: in: a power of two, 2 .. MEMREG_MAX_SQ_ENTRIES (with one
 *              slot, "published" and "free for the next lap" would be the
 *              same sequence)
 * @cq_entries: in: a power of two, @sq_entries .. MEMREG_MAX_CQ_ENTRIES
 * @eventfd:    in: an eventfd signalled by armed completions, or -1
 * @queue:      out: the queue's index, 0 .. MEMREG_MAX_QUEUES - 1
 * @sq_bytes:   out: the length of the MEMREG_MMAP_SQ(queue) mapping
 * @cq_bytes:   out: the length of the MEMREG_MMAP_CQ(queue) mapping
 * @reserved:   must be zero
 *
 * EINVAL for bad sizes, reserved fields or a file that is not an eventfd,
 * EBADF for a descriptor that is not open, ENOSPC past MEMREG_MAX_QUEUES,
 * ENOMEM. Queues
 * last as long as the file.
 */
struct memreg_queue_create {
	__u32 sq_entries;
	__u32 cq_entries;
	__s32 eventfd;
	__u32 queue;
	__u64 sq_bytes;
	__u64 cq_bytes;
	__u64 reserved[2];
};

/**
 * struct memreg_doorbell - wake the worker (MEMREG_IOC_DOORBELL)
 * @queue:    in: the queue whose ring has new requests or room
 * @reserved: must be zero
 */
struct memreg_doorbell {
	__u32 queue;
	__u32 reserved;
};

/**
 * struct memreg_queue_stats - the data path's counters (MEMREG_IOC_QUEUE_STATS)
 * @requests:       descriptors taken from the submission rings
 * @completions:    completions written
 * @errors:         completions with a nonzero status
 * @doorbells:      MEMREG_IOC_DOORBELL calls
 * @wakeups:        times the worker started running
 * @batches:        batches taken
 * @batch_max:      the largest batch
 * @batch_limit:    the batch size the worker uses now (follows the backlog)
 * @poll_us:        how long the worker polls before it sleeps now (adapts
 *                  to the arrival rate)
 * @cq_full_stalls: times a queue stopped for a full completion ring
 * @shadow_hits:    keys resolved by the shadow translation cache
 * @shadow_misses:  keys looked up in the registration table
 * @master_overflows: master ring entries not written
 * @remote_bytes:   bytes moved by WRITE, READ and SEND
 * @messages:       SENDs delivered to a RECV
 * @rnr_timeouts:   SENDs completed with -ENOBUFS
 */
struct memreg_queue_stats {
	__u64 requests;
	__u64 completions;
	__u64 errors;
	__u64 doorbells;
	__u64 wakeups;
	__u64 batches;
	__u64 batch_max;
	__u64 batch_limit;
	__u64 poll_us;
	__u64 cq_full_stalls;
	__u64 shadow_hits;
	__u64 shadow_misses;
	__u64 master_overflows;
	__u64 remote_bytes;
	__u64 messages;
	__u64 rnr_timeouts;
};

/*
 * Peers (see Documentation/userspace-api/memreg/peers.rst). Process A grants process
 * B access to its registrations by passing its /dev/memreg descriptor (over
 * a unix socket with SCM_RIGHTS, or any other way a descriptor travels); B
 * attaches it to its own file with MEMREG_IOC_PEER_ATTACH and gets a peer
 * handle. Holding A's descriptor is the grant: a process that inherits it
 * (fork) holds it too. B then names A's registrations by their remote keys
 * in WRITE and READ, which check the REMOTE_WRITE and REMOTE_READ rights A
 * registered them with, and connects its queues to A's for SEND and RECV.
 * A revokes every grant at once with MEMREG_IOC_PEER_REVOKE, or by closing
 * its file; B drops one with MEMREG_IOC_PEER_DETACH.
 */
#define MEMREG_MAX_PEERS		64	/* attachments per file */
#define MEMREG_MAX_SENDERS		64	/* queues connected to one queue */
#define MEMREG_MAX_RNR_TIMEOUT_MS	60000

/**
 * struct memreg_peer_attach - attach a peer (MEMREG_IOC_PEER_ATTACH)
 * @fd:       in: a /dev/memreg descriptor of the peer (EBADF if not open,
 *            EINVAL if not a /dev/memreg file)
 * @peer:     out: the peer handle, nonzero, never reused by this file
 * @reserved: must be zero
 *
 * The handle holds the peer's context, not its file: closing the
 * descriptor afterwards changes nothing, and two files attached to each
 * other are freed when both are closed. ENOSPC past MEMREG_MAX_PEERS.
 */
struct memreg_peer_attach {
	__s32 fd;
	__u32 peer;
	__u64 reserved[2];
};

/**
 * struct memreg_peer_detach - drop a peer handle (MEMREG_IOC_PEER_DETACH)
 * @peer:     in: the handle (ENOENT if this file has no such handle)
 * @reserved: must be zero
 *
 * Later requests naming the handle complete with -ENOTCONN, the queues
 * connected through it are disconnected, and a SEND waiting on one of them
 * completes with -ENOTCONN.
 */
struct memreg_peer_detach {
	__u32 peer;
	__u32 reserved;
};

/**
 * struct memreg_queue_connect - send from a queue to a peer's queue
 *                               (MEMREG_IOC_QUEUE_CONNECT)
 * @queue:          in: this file's queue, whose SENDs go to ...
 * @peer:           in: ... the peer of this handle's ...
 * @remote_queue:   in: ... queue of this index, filling its posted RECVs
 * @rnr_timeout_ms: in: how long a SEND waits for a RECV to be posted
 *                  before it completes with -ENOBUFS, 0 .. 
 *                  MEMREG_MAX_RNR_TIMEOUT_MS (0: not at all)
 * @reserved:       must be zero
 *
 * EINVAL for a bad @queue, @remote_queue or @rnr_timeout_ms or a nonzero
 * reserved field, ENOTCONN for an unknown @peer, ECONNRESET when the peer
 * closed its file or revoked the grant, EISCONN when @queue is connected
 * already, ENOSPC when @remote_queue has MEMREG_MAX_SENDERS connected
 * queues, or MEMREG_MAX_SENDERS / 4 of the calling file's. A queue may connect to one of its own file's queues through a
 * handle of its own file (loopback). Several queues may send to one queue;
 * each SEND takes the oldest posted RECV. A queue whose SEND waits for a
 * RECV takes nothing else meanwhile, so its requests stay in order.
 */
struct memreg_queue_connect {
	__u32 queue;
	__u32 peer;
	__u32 remote_queue;
	__u32 rnr_timeout_ms;
	__u64 reserved[2];
};

/*
 * Buffer pools (see Documentation/userspace-api/memreg/pools.rst). A pool is
 * a set of size classes; each class is a partition, one contiguous range of
 * the pool's mapping (MEMREG_MMAP_POOL(pool), MAP_SHARED, the length
 * POOL_CREATE reports) holding @max_buffers buffers of @buffer_size bytes
 * at @offset. Below each partition's boundary the buffers are the kernel's
 * own pages, pinned, charged like a registration and mapped; above it
 * nothing is mapped (touching it faults). The boundary moves in chunks of
 * @chunk_buffers buffers: up when free buffers fall to @low_watermark (the
 * pool's work, or an ALLOC that would wait, maps more), down when more than
 * @high_watermark stay free for the pool's @shrink_ms, or under memory
 * pressure. One growth maps an extent of whole chunks, up to 2 MiB (the
 * initial size, or what lifts the free buffers above @low_watermark), in
 * contiguous pages when the kernel has them at hand; an extent is one
 * registration, and a shrink gives back the last extent whole. A buffer's
 * key and offset (from ALLOC) work in COPY and on the rings with the
 * pool's @access, until its extent leaves.
 *
 * A buffer still allocated above a boundary that moves down is waited for
 * @leak_timeout_ms, then reclaimed: its pages leave the mapping and its key
 * dies. A reclaimed buffer is never handed out again until its holder FREEs
 * it (FREE then fails with ESTALE, and the buffer is free again).
 */
#define MEMREG_MAX_POOLS		16
#define MEMREG_POOL_MAX_CLASSES		8
#define MEMREG_POOL_MIN_BUFFER		64
#define MEMREG_POOL_MAX_BUFFER		(1U << 21)	/* 2 MiB */
#define MEMREG_POOL_MAX_BUFFERS		65536		/* per class */
#define MEMREG_POOL_MAX_BATCH		64		/* buffers per ALLOC/FREE */
#define MEMREG_POOL_MAX_TIMEOUT_MS	60000
#define MEMREG_MMAP_POOL_BASE		(1ULL << 40)
#define MEMREG_MMAP_POOL_SHIFT		36
#define MEMREG_MMAP_POOL(p)		(MEMREG_MMAP_POOL_BASE + ((__u64)(p) << MEMREG_MMAP_POOL_SHIFT))

/**
 * struct memreg_pool_class - one size class of a pool
 * @buffer_size:    in: a power of two, MEMREG_POOL_MIN_BUFFER ..
 *                  MEMREG_POOL_MAX_BUFFER; classes in increasing order
 * @max_buffers:    in: 1 .. MEMREG_POOL_MAX_BUFFERS, a multiple of the
 *                  class's chunk (out: @chunk_buffers)
 * @low_watermark:  in: grow when this many or fewer buffers are free,
 *                  below @max_buffers
 * @high_watermark: in: shrink when more than this many stay free, at least
 *                  @low_watermark + @chunk_buffers (0: never shrink by use)
 * @initial:        in: buffers mapped when the pool is mapped, a multiple
 *                  of @chunk_buffers, at most @max_buffers
 * @chunk_buffers:  out: buffers per chunk: one chunk is max(64 KiB,
 *                  @buffer_size) of memory
 * @offset:         out: the partition's offset in the pool's mapping
 */
struct memreg_pool_class {
	__u32 buffer_size;
	__u32 max_buffers;
	__u32 low_watermark;
	__u32 high_watermark;
	__u32 initial;
	__u32 chunk_buffers;
	__u64 offset;
};

/**
 * struct memreg_pool_create - create a pool (MEMREG_IOC_POOL_CREATE)
 * @classes:         in: user array of @nr_classes struct memreg_pool_class
 *                   (read, and written back with the out fields)
 * @nr_classes:      in: 1 .. MEMREG_POOL_MAX_CLASSES
 * @access:          in: MEMREG_ACCESS_* of the buffers' keys (LOCAL_WRITE
 *                   at least: the pages are the pool's, always writable)
 * @leak_timeout_ms: in: how long a shrink waits for an allocated buffer
 *                   before reclaiming it, 1 .. MEMREG_POOL_MAX_TIMEOUT_MS
 * @shrink_ms:       in: how long a partition stays above its high watermark
 *                   before it shrinks, 0 .. MEMREG_POOL_MAX_TIMEOUT_MS
 * @pool:            out: the pool's index, 0 .. MEMREG_MAX_POOLS - 1
 * @reserved0:       must be zero
 * @map_bytes:       out: the length of the MEMREG_MMAP_POOL(pool) mapping
 * @reserved:        must be zero
 *
 * Nothing is mapped or charged until the process maps the pool (once; the
 * mapping is not inherited by fork). EINVAL for a bad field, ENOSPC past
 * MEMREG_MAX_POOLS, EFAULT for a bad @classes, ENOMEM.
 */
struct memreg_pool_create {
	__u64 classes;
	__u32 nr_classes;
	__u32 access;
	__u32 leak_timeout_ms;
	__u32 shrink_ms;
	__u32 pool;
	__u32 reserved0;
	__u64 map_bytes;
	__u64 reserved[2];
};

/**
 * struct memreg_pool_buf - an allocated buffer
 * @addr:   its address in the pool's mapping
 * @key:    the local key of its chunk's registration
 * @offset: its offset in that registration
 * @size:   its class's buffer size
 * @class:  its class's index
 */
struct memreg_pool_buf {
	__u64 addr;
	__u64 key;
	__u64 offset;
	__u32 size;
	__u32 class;
};

/* struct memreg_pool_alloc.flags */
#define MEMREG_POOL_NO_FALLBACK		(1U << 0)	/* only the smallest class
							 * that fits */

/**
 * struct memreg_pool_alloc - allocate buffers (MEMREG_IOC_POOL_ALLOC)
 * @pool:       in: the pool
 * @flags:      in: MEMREG_POOL_NO_FALLBACK or zero
 * @size:       in: bytes wanted per buffer, 1 .. the largest class's size
 * @bufs:       in: user array of @count struct memreg_pool_buf, filled
 * @count:      in: buffers wanted, 1 .. MEMREG_POOL_MAX_BATCH; out: given,
 *              at least 1
 * @timeout_ms: in: how long to wait when none is free, 0 ..
 *              MEMREG_POOL_MAX_TIMEOUT_MS (0: do not wait)
 * @reserved:   must be zero
 *
 * Buffers come from the smallest class whose buffers fit @size, or, when it
 * has none free and cannot grow at once, from the next larger class (unless
 * MEMREG_POOL_NO_FALLBACK). With none free anywhere it may take, ALLOC
 * waits for a growth or a FREE: EAGAIN with @timeout_ms 0, ETIMEDOUT after
 * it (also when the class cannot grow: maximum, module budget or
 * RLIMIT_MEMLOCK), EINTR on a signal. ENXIO before the pool is mapped or
 * once its mapping went (the pool is then destroyed, and its index gives
 * EINVAL); EINVAL for a bad field or pool, EFAULT for a bad @bufs (the
 * buffers go back).
 */
struct memreg_pool_alloc {
	__u32 pool;
	__u32 flags;
	__u64 size;
	__u64 bufs;
	__u32 count;
	__u32 timeout_ms;
	__u64 reserved[2];
};

/**
 * struct memreg_pool_free - give buffers back (MEMREG_IOC_POOL_FREE)
 * @pool:     in: the pool
 * @count:    in: 1 .. MEMREG_POOL_MAX_BATCH
 * @addrs:    in: user array of @count buffer addresses (__u64)
 * @reserved: must be zero
 *
 * All or nothing: EINVAL, freeing none, if an address is not the start of
 * an allocated buffer of the pool or appears twice. ESTALE when one was
 * reclaimed as a leak: the others are freed, and so is it (it may be
 * handed out again from now on).
 */
struct memreg_pool_free {
	__u32 pool;
	__u32 count;
	__u64 addrs;
	__u64 reserved[2];
};

/**
 * struct memreg_pool_stats - a partition's counters
 *                            (MEMREG_IOC_POOL_STATS, one per class)
 * @boundary:  buffers below the boundary (mapped)
 * @allocated: buffers allocated now
 * @free:      buffers below the boundary and free
 * @grows:     chunks mapped
 * @shrinks:   chunks unmapped
 * @waits:     ALLOC calls that waited
 * @timeouts:  ALLOC calls that gave up
 * @fallbacks: buffers given from this class for a smaller size
 * @leaks_reclaimed: allocated buffers reclaimed after the leak timeout
 * @quarantined: reclaimed buffers not yet freed by their holder
 */
struct memreg_pool_stats {
	__u64 boundary;
	__u64 allocated;
	__u64 free;
	__u64 grows;
	__u64 shrinks;
	__u64 waits;
	__u64 timeouts;
	__u64 fallbacks;
	__u64 leaks_reclaimed;
	__u64 quarantined;
};

/**
 * struct memreg_pool_info - a pool's state (MEMREG_IOC_POOL_STATS)
 * @pool:     in: the pool
 * @count:    in: room in @stats; out: the pool's number of classes
 * @stats:    in: user array of @count struct memreg_pool_stats, filled
 * @reserved: must be zero
 */
struct memreg_pool_info {
	__u32 pool;
	__u32 count;
	__u64 stats;
	__u64 reserved[2];
};

/**
 * struct memreg_pool_destroy - destroy a pool (MEMREG_IOC_POOL_DESTROY)
 * @pool:     in: the pool (EINVAL if there is none)
 * @reserved: must be zero
 *
 * Every chunk leaves: keys die, pages leave the mapping (touching it
 * faults) and are freed, charges are released. The index is not reused.
 */
struct memreg_pool_destroy {
	__u32 pool;
	__u32 reserved;
};

/*
 * A pool's free-buffer rings (ABI version 5; see
 * Documentation/userspace-api/memreg/pools.rst): one per class, in one
 * mapping per pool (MEMREG_MMAP_POOL_RING(pool), MAP_SHARED, read-write,
 * the length POOL_RING reports). Each is a lock-free stack of buffer
 * indexes: @top in its head names the first free buffer, next[] the one
 * after each. User space pops a buffer (ALLOC) and pushes it back (FREE)
 * with one compare-and-swap of @top, whose upper 32 bits count the changes
 * (so a stale pop fails), and no system call. The kernel lends its free
 * buffers to the ring and takes the whole ring back when it must know what
 * is free (an ALLOC system call that finds none of its own, a shrink). It
 * checks every index it takes back: one not handed out is dropped, one
 * allocated by the system call counts as freed, one reclaimed as a leak is
 * freed (counted @stale). Nothing it reads there is trusted; garbage only
 * hurts the process that writes it.
 */
#define MEMREG_MMAP_POOL_RING_BASE	(1ULL << 41)
#define MEMREG_MMAP_POOL_RING_SHIFT	32
#define MEMREG_MMAP_POOL_RING(p)	(MEMREG_MMAP_POOL_RING_BASE + ((__u64)(p) << MEMREG_MMAP_POOL_RING_SHIFT))
#define MEMREG_POOL_RING_EMPTY		0xffffffffU	/* the index of no buffer */
#define MEMREG_POOL_RING_INDEX(top)	((__u32)(top))
#define MEMREG_POOL_RING_TAG(top)	((__u32)((top) >> 32))
#define MEMREG_POOL_RING_TOP(tag, index) (((__u64)(tag) << 32) | (__u32)(index))

/**
 * struct memreg_pool_ring_head - the head of a class's ring (64 bytes)
 * @top:      user space and kernel, by compare-and-swap only:
 *            MEMREG_POOL_RING_TOP(changes, index of the first free buffer
 *            or MEMREG_POOL_RING_EMPTY)
 * @limit:    kernel: buffers at or above this index are being given back
 *            or gone; one popped there must go back by MEMREG_IOC_POOL_FREE
 *            (which says ESTALE for a reclaimed one), not be used
 * @reserved0: zero
 * @reserved: zero
 */
struct memreg_pool_ring_head {
	__u64 top;
	__u32 limit;
	__u32 reserved0;
	__u64 reserved[6];
};

/**
 * struct memreg_pool_ring_chunk - what a chunk's buffers carry
 * @key:    kernel: the local key of the chunk's registration (0 while the
 *          chunk is not mapped)
 * @offset: kernel: the offset of the chunk's first buffer in that
 *          registration; buffer i's is @offset + (i % chunk_buffers) *
 *          buffer_size
 */
struct memreg_pool_ring_chunk {
	__u64 key;
	__u64 offset;
};

/**
 * struct memreg_pool_ring_class - one class's ring (MEMREG_IOC_POOL_RING)
 * @head_offset:   out: its struct memreg_pool_ring_head in the mapping
 * @next_offset:   out: its __u32 next[max_buffers]
 * @chunks_offset: out: its struct memreg_pool_ring_chunk[@nr_chunks]
 * @nr_chunks:     out: max_buffers / chunk_buffers
 * @reserved0:     out: zero
 * @lent:          out: buffers the kernel lent to the ring (on it, or
 *                 popped and not yet seen back)
 * @stale:         out: reclaimed buffers the kernel found pushed back, and
 *                 freed
 * @rejected:      out: indexes the kernel found on the ring and dropped: not
 *                 lent, repeated, or out of range
 */
struct memreg_pool_ring_class {
	__u64 head_offset;
	__u64 next_offset;
	__u64 chunks_offset;
	__u32 nr_chunks;
	__u32 reserved0;
	__u64 lent;
	__u64 stale;
	__u64 rejected;
};

/**
 * struct memreg_pool_ring - a pool's rings (MEMREG_IOC_POOL_RING)
 * @pool:      in: the pool
 * @count:     in: room in @classes; out: the pool's number of classes
 * @classes:   in: user array of @count struct memreg_pool_ring_class,
 *             filled
 * @map_bytes: out: the length of the MEMREG_MMAP_POOL_RING(pool) mapping
 * @reserved:  must be zero
 *
 * The rings' memory is allocated (charged to the caller) by the first call.
 * The kernel lends buffers to the rings once they are mapped (once; not
 * inherited by fork), after the pool itself; the ioctl ALLOC and FREE keep
 * working beside them. EINVAL for a bad pool or field, EFAULT, ENOMEM.
 */
struct memreg_pool_ring {
	__u32 pool;
	__u32 count;
	__u64 classes;
	__u64 map_bytes;
	__u64 reserved[2];
};

/**
 * struct memreg_revalidate - revalidate a registration (MEMREG_IOC_REVALIDATE)
 * @key:      in: a local key
 * @reserved: must be zero
 *
 * A suspended registration is compared with the page tables now: when every
 * page still maps the page frame it was registered with, with the access
 * registered (for a watch: in mappings that still grant the access it
 * watches), it resumes (its state word is its generation again; for a
 * watch a MEMREG_EVENT_RESUMED is written); otherwise it ends (ESTALE). A
 * registration that is not suspended is left as it is (0). Takes no
 * reference and pins nothing.
 */
struct memreg_revalidate {
	__u64 key;
	__u64 reserved;
};

#define MEMREG_IOC_GET_VERSION	_IOR(MEMREG_IOC_MAGIC, 0x00, __u32)
#define MEMREG_IOC_REGISTER	_IOWR(MEMREG_IOC_MAGIC, 0x01, struct memreg_register)
#define MEMREG_IOC_DEREGISTER	_IOW(MEMREG_IOC_MAGIC, 0x02, struct memreg_deregister)
#define MEMREG_IOC_QUERY	_IOWR(MEMREG_IOC_MAGIC, 0x03, struct memreg_query)
#define MEMREG_IOC_STATS	_IOR(MEMREG_IOC_MAGIC, 0x04, struct memreg_stats)
#define MEMREG_IOC_COPY		_IOW(MEMREG_IOC_MAGIC, 0x05, struct memreg_copy)
#define MEMREG_IOC_GLOBAL_STATS	_IOR(MEMREG_IOC_MAGIC, 0x06, struct memreg_global_stats)
#define MEMREG_IOC_GET_CACHE	_IOR(MEMREG_IOC_MAGIC, 0x07, struct memreg_cache_config)
#define MEMREG_IOC_SET_CACHE	_IOW(MEMREG_IOC_MAGIC, 0x08, struct memreg_cache_config)
#define MEMREG_IOC_FLUSH	_IOWR(MEMREG_IOC_MAGIC, 0x09, struct memreg_flush)
#define MEMREG_IOC_EVENTS_SETUP	_IOWR(MEMREG_IOC_MAGIC, 0x0a, struct memreg_events_setup)
#define MEMREG_IOC_EVENTS_RESYNC _IOWR(MEMREG_IOC_MAGIC, 0x0b, struct memreg_events_resync)
#define MEMREG_IOC_QUEUE_CREATE	_IOWR(MEMREG_IOC_MAGIC, 0x0c, struct memreg_queue_create)
#define MEMREG_IOC_DOORBELL	_IOW(MEMREG_IOC_MAGIC, 0x0d, struct memreg_doorbell)
#define MEMREG_IOC_QUEUE_STATS	_IOR(MEMREG_IOC_MAGIC, 0x0e, struct memreg_queue_stats)
#define MEMREG_IOC_PEER_ATTACH	_IOWR(MEMREG_IOC_MAGIC, 0x0f, struct memreg_peer_attach)
#define MEMREG_IOC_PEER_DETACH	_IOW(MEMREG_IOC_MAGIC, 0x10, struct memreg_peer_detach)
#define MEMREG_IOC_PEER_REVOKE	_IO(MEMREG_IOC_MAGIC, 0x11)
#define MEMREG_IOC_QUEUE_CONNECT _IOW(MEMREG_IOC_MAGIC, 0x12, struct memreg_queue_connect)
#define MEMREG_IOC_POOL_CREATE	_IOWR(MEMREG_IOC_MAGIC, 0x13, struct memreg_pool_create)
#define MEMREG_IOC_POOL_ALLOC	_IOWR(MEMREG_IOC_MAGIC, 0x14, struct memreg_pool_alloc)
#define MEMREG_IOC_POOL_FREE	_IOW(MEMREG_IOC_MAGIC, 0x15, struct memreg_pool_free)
#define MEMREG_IOC_POOL_STATS	_IOWR(MEMREG_IOC_MAGIC, 0x16, struct memreg_pool_info)
#define MEMREG_IOC_POOL_DESTROY	_IOW(MEMREG_IOC_MAGIC, 0x17, struct memreg_pool_destroy)
#define MEMREG_IOC_REVALIDATE	_IOW(MEMREG_IOC_MAGIC, 0x18, struct memreg_revalidate)
#define MEMREG_IOC_POOL_RING	_IOWR(MEMREG_IOC_MAGIC, 0x19, struct memreg_pool_ring)

#endif /* _UAPI_LINUX_MEMREG_H */
