/* SPDX-License-Identifier: (LGPL-2.1 OR MIT) */
/*
 * libmemreg: the user-space library of memreg (see memreg(7) and
 * Documentation/userspace-api/memreg/).
 *
 * Every function that can fail returns 0 (or a count) on success and a
 * negative errno on failure, like liburing; none prints, exits or changes
 * errno on success. Functions marked "inline" below are defined in this
 * header; the others are in libmemreg.so / libmemreg.a, versioned from
 * LIBMEMREG_1.0.
 */
#ifndef LIBMEMREG_H
#define LIBMEMREG_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <linux/memreg.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version, also in memreg.pc. */
#define LIBMEMREG_VERSION_MAJOR		1
#define LIBMEMREG_VERSION_MINOR		0

/* ---- The device and its registrations ---------------------------------- */

/* Opens /dev/memreg (O_RDWR | O_CLOEXEC): a descriptor or -errno. */
int memreg_open(void);
/* MEMREG_IOC_GET_VERSION: the ABI version the module speaks in *version. */
int memreg_get_version(int fd, __u32 *version);
/* REGISTER of [addr, addr + length) with MEMREG_ACCESS_* rights; fills *reg. */
int memreg_register(int fd, const void *addr, __u64 length, __u32 access,
		    struct memreg_register *reg);
/*
 * REGISTER with @flags (0 or MEMREG_REGISTER_WATCH: watch the range without
 * pinning it) and @user_data, reported with the registration's events.
 */
int memreg_register_ex(int fd, const void *addr, __u64 length, __u32 access,
		       __u32 flags, __u64 user_data, struct memreg_register *reg);
/*
 * REVALIDATE: 0 when the registration named by @key is usable (it was not
 * suspended, or its memory was found in place and it resumed), -ESTALE when
 * the memory changed and it ended.
 */
int memreg_revalidate(int fd, __u64 key);
/* DEREGISTER: drops one reference on the registration named by @key. */
int memreg_deregister(int fd, __u64 key);
/* QUERY of the registration named by @key into *query. */
int memreg_query(int fd, __u64 key, struct memreg_query *query);
/*
 * COPY of @length bytes between @buf and @offset in the registration @key;
 * @direction is MEMREG_COPY_TO_REGION or MEMREG_COPY_FROM_REGION.
 */
int memreg_copy(int fd, __u64 key, __u64 offset, void *buf, __u64 length,
		__u32 direction);
/* STATS, GLOBAL_STATS, GET_CACHE, SET_CACHE and FLUSH (@flush may be NULL). */
int memreg_stats(int fd, struct memreg_stats *stats);
int memreg_global_stats(int fd, struct memreg_global_stats *stats);
int memreg_get_cache(int fd, struct memreg_cache_config *config);
int memreg_set_cache(int fd, const struct memreg_cache_config *config);
int memreg_flush(int fd, struct memreg_flush *flush);

/* ---- State words -------------------------------------------------------- */

/* The read-only mapping of a file's state words. */
struct memreg_state_words {
	const __u64 *words;
	__u32 slots;
	__u32 reserved0;
	__u64 reserved[2];			/* room to grow: zero */
};

/*
 * Maps @slots state words (1 .. MEMREG_MAX_SLOTS; the first mapping of a
 * file creates them, later ones may be no longer).
 */
int memreg_state_words_map(int fd, __u32 slots, struct memreg_state_words *sw);
void memreg_state_words_unmap(struct memreg_state_words *sw);

/*
 * Inline: true when the registration REGISTER returned with (@slot,
 * @generation) is usable now, from one acquire load and no system call.
 */
static inline bool memreg_word_valid(const struct memreg_state_words *sw,
				     __u32 slot, __u64 generation)
{
	if (!sw->words || slot >= sw->slots || !generation)
		return false;
	return __atomic_load_n(&sw->words[slot], __ATOMIC_ACQUIRE) == generation;
}

/* ---- The event ring ----------------------------------------------------- */

/* A mapped event ring (one reader at a time). */
struct memreg_events {
	int fd;
	__u32 entries;				/* a power of two */
	size_t ring_bytes;
	const struct memreg_event_ring *ring;	/* read-only */
	const struct memreg_event *events;	/* its entries */
	__u32 *head;				/* the reader's word */
	union {
		/* The user data of each entry, or NULL (kernels before ABI 4). */
		const __u64 *user_data;
		__u64 reserved0;
	};
	__u64 reserved[3];			/* room to grow: zero */
};

/*
 * EVENTS_SETUP with @entries (a power of two) and @eventfd (or -1), then
 * maps the ring and its head.
 */
int memreg_events_init(int fd, __u32 entries, int eventfd,
		       struct memreg_events *ev);
void memreg_events_exit(struct memreg_events *ev);
/* Unread events (0 when the words make no sense). */
unsigned int memreg_events_ready(const struct memreg_events *ev);
/* True once an event could not be written (call memreg_events_resync()). */
bool memreg_events_overflowed(const struct memreg_events *ev);
/* Copies up to @max unread events to @out and consumes them: how many. */
unsigned int memreg_events_read(struct memreg_events *ev,
				struct memreg_event *out, unsigned int max);
/*
 * As memreg_events_read(), with the user data of each event in @user_data
 * (when not NULL; 0 from kernels that report none).
 */
unsigned int memreg_events_read_user_data(struct memreg_events *ev,
					  struct memreg_event *out,
					  __u64 *user_data, unsigned int max);
/* The user data of the event at @pos of memreg_for_each_event(). */
static inline __u64 memreg_event_user_data(const struct memreg_events *ev,
					   __u32 pos)
{
	return ev->user_data ? ev->user_data[pos & (ev->entries - 1)] : 0;
}
/* Consumes @nr events seen through memreg_for_each_event(). */
void memreg_events_advance(struct memreg_events *ev, unsigned int nr);
/*
 * EVENTS_RESYNC: discards unread events, clears the overflow and lists the
 * registrations valid now in @entries (up to @capacity; *count gets them all).
 */
int memreg_events_resync(int fd, struct memreg_resync_entry *entries,
			 __u32 capacity, __u32 *count);

/*
 * Walks the unread events without consuming them: @pos is a __u32
 * variable, @e a const struct memreg_event pointer. Follow with
 * memreg_events_advance() for the number seen.
 */
#define memreg_for_each_event(ev, pos, e)					\
	for ((pos) = __atomic_load_n((ev)->head, __ATOMIC_RELAXED);		\
	     memreg__events_valid(ev, pos) &&					\
	     ((e) = &(ev)->events[(pos) & ((ev)->entries - 1)], 1);		\
	     (pos)++)

static inline bool memreg__events_valid(const struct memreg_events *ev, __u32 head)
{
	__u32 tail = __atomic_load_n(&ev->ring->tail, __ATOMIC_ACQUIRE);
	__u32 start = __atomic_load_n(ev->head, __ATOMIC_RELAXED);

	return tail - start <= ev->entries && head != tail;
}

/* ---- Queues: submission and completion rings ---------------------------- */

/* A mapped queue. Posting is for any number of threads; reaping for one. */
struct memreg_queue {
	int fd;
	__u32 index;
	__u32 sq_entries;
	__u32 cq_entries;
	size_t sq_bytes;
	size_t cq_bytes;
	struct memreg_sq_user *user;		/* the read-write mapping */
	struct memreg_sq_slot *slots;		/* its slots */
	const struct memreg_cq_ring *ring;	/* the read-only mapping */
	const struct memreg_cqe *cqes;		/* its entries */
	int eventfd;				/* as created, or -1 */
	__u64 doorbells;			/* DOORBELL calls made through this */
	__u64 reserved[4];			/* room to grow: zero */
};

/* memreg_queue_post() flag: publish, but never ring the doorbell. */
#define MEMREG_POST_NO_DOORBELL		(1U << 0)

/* QUEUE_CREATE only; *create gets the result. */
int memreg_queue_create(int fd, __u32 sq_entries, __u32 cq_entries, int eventfd,
			struct memreg_queue_create *create);
/* Maps the queue a QUEUE_CREATE described. */
int memreg_queue_mmap(int fd, const struct memreg_queue_create *create,
		      struct memreg_queue *q);
/* QUEUE_CREATE, then maps the new queue. */
int memreg_queue_init(int fd, __u32 sq_entries, __u32 cq_entries, int eventfd,
		      struct memreg_queue *q);
/* Unmaps the queue (the kernel keeps it until the file is closed). */
void memreg_queue_exit(struct memreg_queue *q);

/*
 * Claims the next slot with the multi-producer protocol: its request, to
 * fill with one memreg_prep_*(), or NULL when the ring is full (or its
 * words make no sense). Publish it with memreg_submit().
 */
struct memreg_sqe *memreg_get_sqe(struct memreg_queue *q);
/* Publishes a claimed request and rings the doorbell when the rule says. */
int memreg_submit(struct memreg_queue *q, struct memreg_sqe *sqe);
/* Publishes @nr claimed requests, with one doorbell check. */
int memreg_submit_batch(struct memreg_queue *q, struct memreg_sqe **sqes,
			unsigned int nr);
/*
 * Posts a copy of @sqe: claim, copy, publish, doorbell rule. 0, -EAGAIN
 * when full, -EBUSY when the words make no sense; *pos gets its position.
 */
int memreg_queue_post(struct memreg_queue *q, const struct memreg_sqe *sqe,
		      unsigned int flags, __u64 *pos);
/* memreg_queue_post(), waiting up to @timeout_ms for room (-ETIMEDOUT). */
int memreg_queue_post_wait(struct memreg_queue *q, const struct memreg_sqe *sqe,
			   int timeout_ms);
/* DOORBELL for this queue (counted in q->doorbells). */
int memreg_queue_doorbell(struct memreg_queue *q);
/* DOORBELL for queue @queue of @fd. */
int memreg_doorbell(int fd, __u32 queue);
/* QUEUE_STATS of the file. */
int memreg_queue_stats(int fd, struct memreg_queue_stats *stats);

/* Completions written and not consumed (0 when the head makes no sense). */
unsigned int memreg_cq_ready(const struct memreg_queue *q);
/* The oldest unconsumed completion in *cqe: 0, or -EAGAIN when none. */
int memreg_peek_cqe(struct memreg_queue *q, const struct memreg_cqe **cqe);
/*
 * Waits up to @timeout_ms (-1: for ever) for a completion: arms the queue,
 * looks again, then sleeps in poll() on its eventfd or the file.
 * -ETIMEDOUT, -EINTR.
 */
int memreg_wait_cqe(struct memreg_queue *q, const struct memreg_cqe **cqe,
		    int timeout_ms);
/* Consumes one completion seen through memreg_peek_cqe(). */
void memreg_cqe_seen(struct memreg_queue *q, const struct memreg_cqe *cqe);
/* Consumes @nr completions, ringing the doorbell if the worker stopped on a full ring. */
void memreg_cq_advance(struct memreg_queue *q, unsigned int nr);
/* Copies up to @max completions to @out (may be NULL) and consumes them. */
unsigned int memreg_reap_cqes(struct memreg_queue *q, struct memreg_cqe *out,
			      unsigned int max);
/* Reaps until @nr are in @out or @timeout_ms passed (spinning, then sleeping). */
unsigned int memreg_wait_cqes(struct memreg_queue *q, struct memreg_cqe *out,
			      unsigned int nr, int timeout_ms);
/* Posts one request and reaps its completion (nothing else in flight). */
int memreg_queue_run(struct memreg_queue *q, const struct memreg_sqe *sqe,
		     struct memreg_cqe *cqe);
/* Asks for one wake-up on the next completion, then a full barrier. */
void memreg_queue_arm(struct memreg_queue *q);

/*
 * Walks the unconsumed completions: @pos is a __u32 variable, @cqe a
 * const struct memreg_cqe pointer. Follow with memreg_cq_advance().
 */
#define memreg_for_each_cqe(q, pos, cqe)					\
	for ((pos) = __atomic_load_n(&(q)->user->cq_head, __ATOMIC_RELAXED);	\
	     memreg__cq_valid(q, pos) &&					\
	     ((cqe) = &(q)->cqes[(pos) & ((q)->cq_entries - 1)], 1);		\
	     (pos)++)

static inline bool memreg__cq_valid(const struct memreg_queue *q, __u32 head)
{
	__u32 tail = __atomic_load_n(&q->ring->cq_tail, __ATOMIC_ACQUIRE);
	__u32 start = __atomic_load_n(&q->user->cq_head, __ATOMIC_RELAXED);

	return tail - start <= q->cq_entries && head != tail;
}

/* Inline: the kernel's and user space's words, read as the protocol says. */
static inline __u32 memreg_queue_flags(const struct memreg_queue *q)
{
	return __atomic_load_n(&q->ring->flags, __ATOMIC_ACQUIRE);
}

static inline __u64 memreg_queue_sq_head(const struct memreg_queue *q)
{
	return __atomic_load_n(&q->ring->sq_head, __ATOMIC_ACQUIRE);
}

static inline __u32 memreg_queue_cq_tail(const struct memreg_queue *q)
{
	return __atomic_load_n(&q->ring->cq_tail, __ATOMIC_ACQUIRE);
}

static inline __u32 memreg_queue_cq_head(const struct memreg_queue *q)
{
	return __atomic_load_n(&q->user->cq_head, __ATOMIC_RELAXED);
}

/* The length QUEUE_CREATE reports for a submission ring's mapping. */
size_t memreg_sq_bytes(__u32 sq_entries);
/* The length QUEUE_CREATE reports for a completion ring's mapping. */
size_t memreg_cq_bytes(__u32 cq_entries);

/* ---- Requests (all inline) ---------------------------------------------- */

/* The universal prep: every field of the request, the rest zero. */
static inline void memreg_prep_rw(struct memreg_sqe *sqe, __u8 opcode, __u32 peer,
				  __u64 key, __u64 offset, __u64 src_key,
				  __u64 src_offset, __u64 length)
{
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = opcode;
	sqe->peer = peer;
	sqe->key = key;
	sqe->offset = offset;
	sqe->src_key = src_key;
	sqe->src_offset = src_offset;
	sqe->length = length;
}

static inline void memreg_prep_nop(struct memreg_sqe *sqe)
{
	memreg_prep_rw(sqe, MEMREG_OP_NOP, 0, 0, 0, 0, 0, 0);
}

static inline void memreg_prep_fence(struct memreg_sqe *sqe)
{
	memreg_prep_rw(sqe, MEMREG_OP_FENCE, 0, 0, 0, 0, 0, 0);
}

/* DEREGISTER of @key, in order with the requests before it. */
static inline void memreg_prep_deregister(struct memreg_sqe *sqe, __u64 key)
{
	memreg_prep_rw(sqe, MEMREG_OP_DEREGISTER, 0, key, 0, 0, 0, 0);
}

/* COPY of @length bytes from (@src_key, @src_offset) to (@key, @offset). */
static inline void memreg_prep_copy(struct memreg_sqe *sqe, __u64 key, __u64 offset,
				    __u64 src_key, __u64 src_offset, __u64 length)
{
	memreg_prep_rw(sqe, MEMREG_OP_COPY, 0, key, offset, src_key, src_offset,
		       length);
}

/* WRITE of @length bytes from the local (@lkey, @loffset) to the peer's (@rkey, @roffset). */
static inline void memreg_prep_write(struct memreg_sqe *sqe, __u32 peer, __u64 rkey,
				     __u64 roffset, __u64 lkey, __u64 loffset,
				     __u64 length)
{
	memreg_prep_rw(sqe, MEMREG_OP_WRITE, peer, rkey, roffset, lkey, loffset,
		       length);
}

/* READ of @length bytes from the peer's (@rkey, @roffset) to the local (@lkey, @loffset). */
static inline void memreg_prep_read(struct memreg_sqe *sqe, __u32 peer, __u64 lkey,
				    __u64 loffset, __u64 rkey, __u64 roffset,
				    __u64 length)
{
	memreg_prep_rw(sqe, MEMREG_OP_READ, peer, lkey, loffset, rkey, roffset,
		       length);
}

/* SEND of @length bytes at (@lkey, @offset) to the connected queue. */
static inline void memreg_prep_send(struct memreg_sqe *sqe, __u64 lkey, __u64 offset,
				    __u64 length)
{
	memreg_prep_rw(sqe, MEMREG_OP_SEND, 0, 0, 0, lkey, offset, length);
}

/* SEND with immediate data @imm. */
static inline void memreg_prep_send_imm(struct memreg_sqe *sqe, __u64 lkey,
					__u64 offset, __u64 length, __u64 imm)
{
	memreg_prep_rw(sqe, MEMREG_OP_SEND, 0, imm, 0, lkey, offset, length);
	sqe->flags = MEMREG_SQE_IMM;
}

/* RECV into the buffer of @length bytes at (@lkey, @offset). */
static inline void memreg_prep_recv(struct memreg_sqe *sqe, __u64 lkey, __u64 offset,
				    __u64 length)
{
	memreg_prep_rw(sqe, MEMREG_OP_RECV, 0, lkey, offset, 0, 0, length);
}

/* POOL_ALLOC of a buffer of @size bytes from @pool (never waits). */
static inline void memreg_prep_pool_alloc(struct memreg_sqe *sqe, __u32 pool,
					  __u64 size)
{
	memreg_prep_rw(sqe, MEMREG_OP_POOL_ALLOC, pool, 0, 0, 0, 0, size);
}

/* POOL_FREE of the buffer at @addr of @pool. */
static inline void memreg_prep_pool_free(struct memreg_sqe *sqe, __u32 pool,
					 __u64 addr)
{
	memreg_prep_rw(sqe, MEMREG_OP_POOL_FREE, pool, 0, addr, 0, 0, 0);
}

/* The value returned as is in the request's completion. */
static inline void memreg_sqe_set_data64(struct memreg_sqe *sqe, __u64 data)
{
	sqe->user_data = data;
}

/* ---- The master ring (one reader) --------------------------------------- */

struct memreg_master {
	const struct memreg_master_ring *ring;	/* read-only */
	const __u32 *entries;
	struct memreg_master_user *user;	/* read-write, one page */
	__u64 reserved[2];			/* room to grow: zero */
};

/* The length of the master ring's read-only mapping. */
size_t memreg_master_bytes(void);
/* Maps the context's master ring (after its first queue). */
int memreg_master_init(int fd, struct memreg_master *m);
void memreg_master_exit(struct memreg_master *m);
/* Consumes up to @max queue indexes into @out (may be NULL): how many. */
unsigned int memreg_master_read(struct memreg_master *m, __u32 *out,
				unsigned int max);
/* Asks for one wake-up on the next master entry, then a full barrier. */
void memreg_master_arm(struct memreg_master *m);

/* ---- Peers -------------------------------------------------------------- */

/* Sends descriptor @fd over the unix socket @sock (SCM_RIGHTS). */
int memreg_send_fd(int sock, int fd);
/* Receives a descriptor memreg_send_fd() sent: it, or -errno. */
int memreg_recv_fd(int sock);
/* PEER_ATTACH of @peer_fd to @fd: the handle in *peer (0 on failure). */
int memreg_peer_attach(int fd, int peer_fd, __u32 *peer);
int memreg_peer_detach(int fd, __u32 peer);
/* PEER_REVOKE: ends every grant of @fd's context. */
int memreg_peer_revoke(int fd);
/* SENDs on @queue of @fd go to @remote_queue of @peer. */
int memreg_queue_connect(int fd, __u32 queue, __u32 peer, __u32 remote_queue,
			 __u32 rnr_timeout_ms);

/* ---- Pools -------------------------------------------------------------- */

/* A pool's free-buffer rings as memreg_pool_ring_init() mapped them. */
struct memreg_pool_rings;

/* A created and mapped pool. */
struct memreg_pool {
	int fd;
	__u32 id;
	void *map;
	size_t map_bytes;
	__u32 nr_classes;
	struct memreg_pool_class classes[MEMREG_POOL_MAX_CLASSES];
	union {
		/* Its free-buffer rings (memreg_pool_ring_init()), or NULL. */
		struct memreg_pool_rings *rings;
		__u64 reserved0;
	};
	__u64 reserved[3];			/* room to grow: zero */
};

/* What memreg_pool_init() creates. */
struct memreg_pool_params {
	__u32 access;		/* MEMREG_ACCESS_*: LOCAL_WRITE at least */
	__u32 leak_timeout_ms;	/* 1 .. MEMREG_POOL_MAX_TIMEOUT_MS */
	__u32 shrink_ms;	/* 0 .. MEMREG_POOL_MAX_TIMEOUT_MS */
	__u32 reserved;		/* must be zero */
	__u64 reserved1[2];	/* must be zero */
};

/* POOL_CREATE with @nr classes, then maps the pool (in one call). */
int memreg_pool_init(int fd, const struct memreg_pool_class *classes,
		     unsigned int nr, const struct memreg_pool_params *params,
		     struct memreg_pool *pool);
/* Unmaps the pool (and its rings), which destroys it. */
void memreg_pool_exit(struct memreg_pool *pool);
/*
 * POOL_RING, then maps the pool's free-buffer rings: from then on ALLOC and
 * FREE pop and push buffers there without a system call while the ring of
 * the class has some (ABI version 5).
 */
int memreg_pool_ring_init(struct memreg_pool *pool);
/*
 * One buffer of at least @size bytes (MEMREG_POOL_NO_FALLBACK in @flags):
 * from the ring of the smallest class that fits, else MEMREG_IOC_POOL_ALLOC.
 */
int memreg_pool_alloc(struct memreg_pool *pool, __u64 size, __u32 flags,
		      __u32 timeout_ms, struct memreg_pool_buf *buf);
/* Up to @count (1 .. MEMREG_POOL_MAX_BATCH) buffers: how many, at least 1. */
int memreg_pool_alloc_batch(struct memreg_pool *pool, __u64 size, __u32 flags,
			    __u32 timeout_ms, struct memreg_pool_buf *bufs,
			    unsigned int count);
/* Onto the buffer's ring when it has one, else MEMREG_IOC_POOL_FREE. */
int memreg_pool_free(struct memreg_pool *pool, void *addr);
/* All or nothing, up to MEMREG_POOL_MAX_BATCH addresses. */
int memreg_pool_free_batch(struct memreg_pool *pool, void *const *addrs,
			   unsigned int count);
/*
 * A cache of free buffers of @pool for one thread at a time (the pool's
 * rings mapped first): up to @size (1 .. MEMREG_POOL_CACHE_MAX) buffers per
 * class, taken from and given back to the class's ring half a cache at a
 * time, so that most ALLOCs and FREEs touch no shared memory (library 1.3).
 */
#define MEMREG_POOL_CACHE_MAX	512
struct memreg_pool_cache;
int memreg_pool_cache_create(struct memreg_pool *pool, unsigned int size,
			     struct memreg_pool_cache **cache);
/* As memreg_pool_alloc(), from the cache first. */
int memreg_pool_cache_alloc(struct memreg_pool_cache *cache, __u64 size, __u32 flags,
			    __u32 timeout_ms, struct memreg_pool_buf *buf);
/* As memreg_pool_free(), into the cache first. */
int memreg_pool_cache_free(struct memreg_pool_cache *cache, void *addr);
/* Gives every cached buffer back to its ring. */
int memreg_pool_cache_flush(struct memreg_pool_cache *cache);
/* Flushes and frees the cache (before memreg_pool_exit() of its pool). */
void memreg_pool_cache_destroy(struct memreg_pool_cache *cache);
/* Per-class counters into @stats (room for @count): the number of classes. */
int memreg_pool_stats(struct memreg_pool *pool, struct memreg_pool_stats *stats,
		      unsigned int count);

/* ---- The registration cache --------------------------------------------- */

struct memreg_cache;
struct memreg_mr;

/* Why an entry left the cache, for the invalidation callback. */
enum memreg_cache_cause {
	MEMREG_CACHE_ENDED = 1,		/* an event or its state word said ended */
	MEMREG_CACHE_EVICTED = 2,	/* the kernel evicted it */
	MEMREG_CACHE_RESYNC = 3,	/* missing from the list after an overflow */
	MEMREG_CACHE_LRU = 4,		/* unused, deregistered for room (max_entries) */
};

/*
 * Called, without the cache's lock held, for each entry that leaves the
 * cache: @mr is still readable, its keys no longer move data through it
 * (memreg_mr_valid() says false), @event the event that said so, or NULL.
 */
typedef void (*memreg_invalidate_cb)(struct memreg_mr *mr, int cause,
				     const struct memreg_event *event, void *arg);

/* memreg_cache_attr.flags */
#define MEMREG_CACHE_EVENT_THREAD	(1U << 0)	/* a thread of its own reads events */

struct memreg_cache_attr {
	__u32 flags;		/* MEMREG_CACHE_* */
	__u32 event_entries;	/* event ring size; 0: 1024 */
	__u32 slots;		/* state words to map; 0: MEMREG_MAX_SLOTS */
	/*
	 * Entries kept; past it a miss deregisters unused ones, least
	 * recently used first (CLOCK); 0: 4096.
	 */
	__u32 max_entries;
	__u32 reserved[4];	/* must be zero */
};

struct memreg_cache_stats {
	__u64 hits;		/* memreg_mr_get() answered without a system call */
	__u64 misses;		/* REGISTER calls made for a get */
	__u64 revalidations;	/* suspended entries registered again */
	__u64 invalidations;	/* entries dropped: ended, evicted or resync */
	__u64 lru_evictions;	/* unused entries deregistered for room */
	__u64 resyncs;		/* EVENTS_RESYNC calls after an overflow */
	__u64 events;		/* events consumed */
	__u64 entries;		/* entries now */
	__u64 reserved[8];	/* zero */
};

/*
 * Creates a cache on @fd, which must have no event ring yet (the cache sets
 * it up) and no state words, or words at least @attr->slots long.
 */
int memreg_cache_create(int fd, const struct memreg_cache_attr *attr,
			struct memreg_cache **cache);
/* Deregisters every entry; every mr must have been put. */
void memreg_cache_destroy(struct memreg_cache *cache);
void memreg_cache_set_invalidate_cb(struct memreg_cache *cache,
				    memreg_invalidate_cb cb, void *arg);
/* Consumes pending events (and resyncs after an overflow): how many. */
int memreg_cache_process_events(struct memreg_cache *cache);
/* A descriptor that polls readable while events wait (the event ring's eventfd). */
int memreg_cache_event_fd(const struct memreg_cache *cache);
void memreg_cache_get_stats(struct memreg_cache *cache,
			    struct memreg_cache_stats *stats);

/*
 * A registration covering [addr, addr + length) with @access that is valid
 * now: a hit takes one acquire load and no system call.
 */
int memreg_mr_get(struct memreg_cache *cache, const void *addr, __u64 length,
		  __u32 access, struct memreg_mr **mr);
void memreg_mr_put(struct memreg_cache *cache, struct memreg_mr *mr);
/* True while @mr's registration is usable (one acquire load). */
bool memreg_mr_valid(const struct memreg_mr *mr);
__u64 memreg_mr_lkey(const struct memreg_mr *mr);
__u64 memreg_mr_rkey(const struct memreg_mr *mr);
/* The registration's start and length: offsets in requests count from it. */
void *memreg_mr_addr(const struct memreg_mr *mr);
__u64 memreg_mr_length(const struct memreg_mr *mr);

#ifdef __cplusplus
}
#endif

#endif /* LIBMEMREG_H */
