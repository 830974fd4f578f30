// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: a program built against ABI version 3 keeps working on
 * a later module.
 *
 * This file is compiled against the frozen copy of the version 3 header
 * (abi/v3/linux/memreg.h, include/uapi/linux/memreg.h as of ABI v3) and
 * nothing else of memreg's: not <linux/memreg.h>, not memreg_util.h nor
 * libmemreg, which follow the current header. Its few helpers are its
 * own. It calls every ioctl of version 3 through its success path with the
 * version 3 sizes and checks the results, and a few of the errors the
 * version 3 header documents:
 *
 * - GET_VERSION (at least 3), REGISTER (malloc'd and mmap'd memory), QUERY,
 *   DEREGISTER, STATS, COPY both ways, GLOBAL_STATS; a state word;
 * - GET_CACHE and SET_CACHE, FLUSH;
 * - EVENTS_SETUP, the event ring's mappings and an event for an unmapped
 *   registration, EVENTS_RESYNC;
 * - QUEUE_CREATE, the rings' mappings, a NOP and a COPY through the ring,
 *   DOORBELL, QUEUE_STATS;
 * - PEER_ATTACH, one-sided WRITE and READ, QUEUE_CONNECT with a SEND and a
 *   RECV, PEER_DETACH and PEER_REVOKE between two files of /dev/memreg;
 * - POOL_CREATE, the pool's mapping, POOL_ALLOC, POOL_FREE, POOL_STATS,
 *   POOL_DESTROY.
 *
 * Buffers are private anonymous memory with MADV_NOHUGEPAGE unless a test
 * says otherwise. Run as root, with no other memreg file open.
 */
#ifdef _UAPI_LINUX_MEMREG_H
#error "a memreg header was included before the frozen ABI v3 header"
#endif
/*
 * First, so that the include guard it shares with the current header keeps
 * that one out should anything below ask for <linux/memreg.h>.
 */
#include "abi/v3/linux/memreg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "../kselftest_harness.h"

/* The header this program was built against is version 3's, as published. */
_Static_assert(MEMREG_ABI_VERSION == 3, "built against the ABI v3 header");
_Static_assert(MEMREG_IOC_MAGIC == 0xB9, "ABI v3 magic");
_Static_assert(sizeof(struct memreg_register) == 72, "ABI v3 size");
_Static_assert(sizeof(struct memreg_deregister) == 16, "ABI v3 size");
_Static_assert(sizeof(struct memreg_query) == 64, "ABI v3 size");
_Static_assert(sizeof(struct memreg_stats) == 248, "ABI v3 size");
_Static_assert(sizeof(struct memreg_copy) == 48, "ABI v3 size");
_Static_assert(sizeof(struct memreg_global_stats) == 64, "ABI v3 size");
_Static_assert(sizeof(struct memreg_cache_config) == 64, "ABI v3 size");
_Static_assert(sizeof(struct memreg_flush) == 32, "ABI v3 size");
_Static_assert(sizeof(struct memreg_events_setup) == 32, "ABI v3 size");
_Static_assert(sizeof(struct memreg_events_resync) == 24, "ABI v3 size");
_Static_assert(sizeof(struct memreg_queue_create) == 48, "ABI v3 size");
_Static_assert(sizeof(struct memreg_doorbell) == 8, "ABI v3 size");
_Static_assert(sizeof(struct memreg_queue_stats) == 128, "ABI v3 size");
_Static_assert(sizeof(struct memreg_peer_attach) == 24, "ABI v3 size");
_Static_assert(sizeof(struct memreg_peer_detach) == 8, "ABI v3 size");
_Static_assert(sizeof(struct memreg_queue_connect) == 32, "ABI v3 size");
_Static_assert(sizeof(struct memreg_pool_create) == 56, "ABI v3 size");
_Static_assert(sizeof(struct memreg_pool_alloc) == 48, "ABI v3 size");
_Static_assert(sizeof(struct memreg_pool_free) == 32, "ABI v3 size");
_Static_assert(sizeof(struct memreg_pool_info) == 32, "ABI v3 size");
_Static_assert(sizeof(struct memreg_pool_destroy) == 8, "ABI v3 size");
_Static_assert(sizeof(struct memreg_sqe) == 56 && sizeof(struct memreg_cqe) == 32,
	       "ABI v3 ring entries");
_Static_assert(_IOC_NR(MEMREG_IOC_POOL_DESTROY) == 0x17, "ABI v3 has 0x00 .. 0x17");

#define RW		(MEMREG_ACCESS_LOCAL_READ | MEMREG_ACCESS_LOCAL_WRITE)
#define ALL		MEMREG_ACCESS_ALL
#define PTR(p)		((__u64)(unsigned long)(p))
#define WAIT_MS		5000

/* ---- Helpers (ABI v3 only) ---- */

static unsigned long page_size(void)
{
	return (unsigned long)sysconf(_SC_PAGESIZE);
}

#define PAGE	page_size()

static int memreg_open(void)
{
	return open("/dev/memreg", O_RDWR | O_CLOEXEC);
}

/* A file that parks and never evicts for idleness (-1 on failure). */
static int open_ctx(void)
{
	struct memreg_cache_config c = { .parking = 1, .max_parked = 1024,
					 .max_parked_pages = 262144, .idle_ms = 0 };
	int fd = memreg_open();

	if (fd < 0)
		return -1;
	if (ioctl(fd, MEMREG_IOC_SET_CACHE, &c)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Private anonymous memory, small pages only, filled with `fill`; NULL on failure. */
static char *map_buf(size_t len, int fill)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	madvise(p, len, MADV_NOHUGEPAGE);
	memset(p, fill, len);
	return p;
}

/* Whether all `len` bytes at `p` equal `c`. */
static bool all_bytes(const void *p, size_t len, int c)
{
	const unsigned char *b = p;
	size_t i;

	for (i = 0; i < len; i++)
		if (b[i] != (unsigned char)c)
			return false;
	return true;
}

static __u64 now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ULL + ts.tv_nsec / 1000000;
}

static int mr_register(int fd, const void *addr, __u64 len, __u32 access,
		       struct memreg_register *r)
{
	memset(r, 0, sizeof(*r));
	r->addr = PTR(addr);
	r->length = len;
	r->access = access;
	return ioctl(fd, MEMREG_IOC_REGISTER, r) ? -errno : 0;
}

static int mr_deregister(int fd, __u64 key)
{
	struct memreg_deregister d = { .key = key };

	return ioctl(fd, MEMREG_IOC_DEREGISTER, &d) ? -errno : 0;
}

static int mr_query(int fd, __u64 key, struct memreg_query *q)
{
	memset(q, 0, sizeof(*q));
	q->key = key;
	return ioctl(fd, MEMREG_IOC_QUERY, q) ? -errno : 0;
}

static int mr_copy(int fd, __u64 key, __u64 offset, void *buf, __u64 len, __u32 direction)
{
	struct memreg_copy c = { .key = key, .offset = offset, .length = len,
				 .buf = PTR(buf), .direction = direction };

	return ioctl(fd, MEMREG_IOC_COPY, &c) ? -errno : 0;
}

static int mr_stats(int fd, struct memreg_stats *s)
{
	memset(s, 0, sizeof(*s));
	return ioctl(fd, MEMREG_IOC_STATS, s) ? -errno : 0;
}

static int mr_global(int fd, struct memreg_global_stats *g)
{
	memset(g, 0, sizeof(*g));
	return ioctl(fd, MEMREG_IOC_GLOBAL_STATS, g) ? -errno : 0;
}

static int mr_doorbell(int fd, __u32 queue)
{
	struct memreg_doorbell d = { .queue = queue };

	return ioctl(fd, MEMREG_IOC_DOORBELL, &d) ? -errno : 0;
}

static int mr_queue_stats(int fd, struct memreg_queue_stats *s)
{
	memset(s, 0, sizeof(*s));
	return ioctl(fd, MEMREG_IOC_QUEUE_STATS, s) ? -errno : 0;
}

static int mr_peer_attach(int fd, int peer_fd, __u32 *peer)
{
	struct memreg_peer_attach a = { .fd = peer_fd };

	*peer = 0;
	if (ioctl(fd, MEMREG_IOC_PEER_ATTACH, &a))
		return -errno;
	*peer = a.peer;
	return 0;
}

static int mr_peer_detach(int fd, __u32 peer)
{
	struct memreg_peer_detach d = { .peer = peer };

	return ioctl(fd, MEMREG_IOC_PEER_DETACH, &d) ? -errno : 0;
}

static int mr_queue_connect(int fd, __u32 queue, __u32 peer, __u32 remote_queue,
			    __u32 rnr_timeout_ms)
{
	struct memreg_queue_connect c = { .queue = queue, .peer = peer,
					  .remote_queue = remote_queue,
					  .rnr_timeout_ms = rnr_timeout_ms };

	return ioctl(fd, MEMREG_IOC_QUEUE_CONNECT, &c) ? -errno : 0;
}

/* ---- A queue, with the version 3 posting protocol (one thread) ---- */

struct q3 {
	int fd;
	__u32 index;
	__u32 sq_entries;
	__u32 cq_entries;
	size_t sq_bytes;
	size_t cq_bytes;
	struct memreg_sq_user *user;		/* read-write */
	struct memreg_sq_slot *slots;
	const struct memreg_cq_ring *ring;	/* read-only */
	const struct memreg_cqe *cqes;
};

/* QUEUE_CREATE (no eventfd), then maps both rings; 0 or -errno. */
static int q3_open(int fd, __u32 sq_entries, __u32 cq_entries, struct q3 *q)
{
	struct memreg_queue_create c = { .sq_entries = sq_entries, .cq_entries = cq_entries,
					 .eventfd = -1 };
	void *p;

	memset(q, 0, sizeof(*q));
	q->fd = fd;
	if (ioctl(fd, MEMREG_IOC_QUEUE_CREATE, &c))
		return -errno;
	q->index = c.queue;
	q->sq_entries = sq_entries;
	q->cq_entries = cq_entries;
	q->sq_bytes = c.sq_bytes;
	q->cq_bytes = c.cq_bytes;
	p = mmap(NULL, c.sq_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, MEMREG_MMAP_SQ(c.queue));
	if (p == MAP_FAILED)
		return -errno;
	q->user = p;
	q->slots = (struct memreg_sq_slot *)((char *)p + MEMREG_SQ_SLOTS_OFFSET);
	p = mmap(NULL, c.cq_bytes, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_CQ(c.queue));
	if (p == MAP_FAILED)
		return -errno;
	q->ring = p;
	q->cqes = (const struct memreg_cqe *)((const char *)p + MEMREG_CQ_ENTRIES_OFFSET);
	return 0;
}

static void q3_close(struct q3 *q)
{
	if (q->user)
		munmap(q->user, q->sq_bytes);
	if (q->ring)
		munmap((void *)q->ring, q->cq_bytes);
	memset(q, 0, sizeof(*q));
}

/*
 * Publishes one request in the next slot (0, or -EAGAIN when the ring is
 * full) and rings the doorbell whatever the worker's flags say: these tests
 * want DOORBELL called.
 */
static int q3_post(struct q3 *q, const struct memreg_sqe *sqe)
{
	__u64 pos = __atomic_load_n(&q->user->insert, __ATOMIC_RELAXED);
	struct memreg_sq_slot *slot = &q->slots[pos & (q->sq_entries - 1)];

	if (__atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE) != pos)
		return -EAGAIN;
	if (!__atomic_compare_exchange_n(&q->user->insert, &pos, pos + 1, false,
					 __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		return -EAGAIN;
	memcpy(&slot->sqe, sqe, sizeof(*sqe));
	__atomic_store_n(&slot->seq, pos + 1, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	return mr_doorbell(q->fd, q->index);
}

/* Waits up to `ms` for the next completion and consumes it; 0 or -ETIMEDOUT. */
static int q3_reap(struct q3 *q, struct memreg_cqe *out, int ms)
{
	__u32 head = __atomic_load_n(&q->user->cq_head, __ATOMIC_RELAXED);
	__u64 deadline = now_ms() + ms;

	while (__atomic_load_n(&q->ring->cq_tail, __ATOMIC_ACQUIRE) == head) {
		if (now_ms() > deadline)
			return -ETIMEDOUT;
		usleep(100);
	}
	*out = q->cqes[head & (q->cq_entries - 1)];
	__atomic_store_n(&q->user->cq_head, head + 1, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (__atomic_load_n(&q->ring->flags, __ATOMIC_ACQUIRE) & MEMREG_QUEUE_CQ_FULL)
		mr_doorbell(q->fd, q->index);
	return 0;
}

/* Posts one request and reaps its completion (nothing else in flight). */
static int q3_run(struct q3 *q, const struct memreg_sqe *sqe, struct memreg_cqe *out)
{
	int ret = q3_post(q, sqe);

	return ret ? ret : q3_reap(q, out, WAIT_MS);
}

static void expect_cqe(struct __test_metadata *_metadata, const struct memreg_cqe *c,
		       __u64 user_data, int status, __u64 bytes)
{
	EXPECT_EQ(user_data, c->user_data);
	EXPECT_EQ(status, c->status);
	EXPECT_EQ(bytes, c->bytes);
}

/* ---- A pool ---- */

struct pool3 {
	int fd;
	__u32 pool;
	char *map;
	size_t bytes;
	struct memreg_pool_class cl;
};

/* POOL_STATS of class `c`; 0 or -errno (*st is all ones then). */
static int pool_stat(int fd, __u32 pool, __u32 c, struct memreg_pool_stats *st)
{
	struct memreg_pool_stats all[MEMREG_POOL_MAX_CLASSES];
	struct memreg_pool_info in = { .pool = pool, .count = MEMREG_POOL_MAX_CLASSES,
				       .stats = PTR(all) };

	memset(st, 0xff, sizeof(*st));
	if (ioctl(fd, MEMREG_IOC_POOL_STATS, &in))
		return -errno;
	if (c >= in.count)
		return -ERANGE;
	*st = all[c];
	return 0;
}

/*
 * Waits up to WAIT_MS until class `c` has `boundary` buffers mapped: the
 * pool's work maps them after the call that asks for them.
 */
static int pool_wait_boundary(int fd, __u32 pool, __u32 c, __u64 boundary)
{
	struct memreg_pool_stats st;
	__u64 deadline = now_ms() + WAIT_MS;

	do {
		if (!pool_stat(fd, pool, c, &st) && st.boundary == boundary)
			return 0;
		usleep(5000);
	} while (now_ms() < deadline);
	return -ETIMEDOUT;
}

/* ---- The registration core ---- */

TEST(get_version_is_at_least_3)
{
	__u32 version = 0;
	int fd = memreg_open();

	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_GET_VERSION, &version));
	EXPECT_GE(version, 3);
	close(fd);
}

TEST(register_malloc_buffer_and_query_it)
{
	struct memreg_register r;
	struct memreg_query q;
	char *heap = malloc(4 * PAGE);
	char *addr;
	int fd = open_ctx();

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, heap);
	memset(heap, 'h', 4 * PAGE);
	/* Any alignment: a range that starts inside a page and crosses one. */
	addr = heap + PAGE + 123;
	ASSERT_EQ(0, mr_register(fd, addr, PAGE, RW, &r));
	EXPECT_NE(0, r.lkey);
	EXPECT_EQ(0, r.flags);
	EXPECT_EQ(RW, r.access & RW);
	EXPECT_EQ(PTR(addr), r.region_addr);
	EXPECT_EQ(PAGE, r.region_length);
	/* No state words mapped: no slot. */
	EXPECT_EQ(MEMREG_NO_SLOT, r.slot);
	EXPECT_EQ(0, r.generation);
	EXPECT_EQ(0, r.reserved);

	ASSERT_EQ(0, mr_query(fd, r.lkey, &q));
	EXPECT_EQ(r.lkey, q.key);
	EXPECT_EQ(PTR(addr), q.addr);
	EXPECT_EQ(PAGE, q.length);
	EXPECT_EQ(RW, q.access & RW);
	EXPECT_EQ(MEMREG_STATE_VALID, q.state);
	EXPECT_EQ(2, q.pages);
	EXPECT_LE(1, q.extents);
	EXPECT_EQ(1, q.refcount);
	EXPECT_EQ(0, q.reserved[0]);
	EXPECT_EQ(0, q.reserved[1]);
	EXPECT_EQ(0, mr_deregister(fd, r.lkey));
	close(fd);
	free(heap);
}

TEST(register_refuses_zero_length)
{
	struct memreg_register r;
	char *buf = map_buf(PAGE, 'z');
	int fd = memreg_open();

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	EXPECT_EQ(-EINVAL, mr_register(fd, buf, 0, RW, &r));
	close(fd);
	munmap(buf, PAGE);
}

TEST(query_and_deregister_refuse_unknown_keys)
{
	struct memreg_query q;
	int fd = memreg_open();

	ASSERT_GE(fd, 0);
	EXPECT_EQ(-ENOENT, mr_query(fd, 0x123456789abcdefULL, &q));
	EXPECT_EQ(-ENOENT, mr_deregister(fd, 0x123456789abcdefULL));
	close(fd);
}

TEST(stats_count_misses_hits_and_parks)
{
	struct memreg_register r, hit;
	struct memreg_stats s;
	char *buf = map_buf(4 * PAGE, 's');
	int fd = open_ctx();

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, mr_stats(fd, &s));
	EXPECT_EQ(0, s.registrations);
	EXPECT_EQ(0, s.pages_pinned);

	ASSERT_EQ(0, mr_register(fd, buf, 3 * PAGE, RW, &r));
	/* A range inside it is a cache hit on the same registration. */
	ASSERT_EQ(0, mr_register(fd, buf + PAGE, PAGE, RW, &hit));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, hit.flags);
	EXPECT_EQ(r.lkey, hit.lkey);
	EXPECT_EQ(r.region_addr, hit.region_addr);
	EXPECT_EQ(3 * PAGE, hit.region_length);
	ASSERT_EQ(0, mr_stats(fd, &s));
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(1, s.cache_misses);
	EXPECT_EQ(1, s.cache_hits);
	EXPECT_EQ(3, s.pages_pinned);
	EXPECT_LE(3, s.pages_pinned_peak);
	EXPECT_EQ(0, s.parked);

	/* The last DEREGISTER parks it (parking on). */
	EXPECT_EQ(0, mr_deregister(fd, r.lkey));
	EXPECT_EQ(0, mr_deregister(fd, r.lkey));
	ASSERT_EQ(0, mr_stats(fd, &s));
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(1, s.parked);
	EXPECT_EQ(3, s.parked_pages);
	EXPECT_EQ(1, s.parks);
	EXPECT_EQ(0, s.deregistrations);
	EXPECT_EQ(0, s.reserved[0]);
	close(fd);
	munmap(buf, 4 * PAGE);
}

TEST(copy_both_directions)
{
	struct memreg_register r;
	char *buf = map_buf(2 * PAGE, 'a');
	char *data = malloc(2 * PAGE), *back = malloc(2 * PAGE);
	size_t i;
	int fd = open_ctx();

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	ASSERT_NE(NULL, data);
	ASSERT_NE(NULL, back);
	for (i = 0; i < 2 * PAGE; i++)
		data[i] = (char)(i * 7 + 3);
	ASSERT_EQ(0, mr_register(fd, buf, 2 * PAGE, RW, &r));

	/* Into the region, across the page boundary at an odd offset. */
	ASSERT_EQ(0, mr_copy(fd, r.lkey, 100, data, PAGE + 50, MEMREG_COPY_TO_REGION));
	EXPECT_EQ(0, memcmp(buf + 100, data, PAGE + 50));
	EXPECT_TRUE(all_bytes(buf, 100, 'a'));
	EXPECT_TRUE(all_bytes(buf + 150 + PAGE, PAGE - 150, 'a'));

	/* Out of it. */
	memset(back, 0, 2 * PAGE);
	ASSERT_EQ(0, mr_copy(fd, r.lkey, 0, back, 2 * PAGE, MEMREG_COPY_FROM_REGION));
	EXPECT_EQ(0, memcmp(back, buf, 2 * PAGE));

	/* Past the end: EINVAL, nothing written. */
	EXPECT_EQ(-EINVAL, mr_copy(fd, r.lkey, 2 * PAGE - 1, data, 2, MEMREG_COPY_TO_REGION));
	EXPECT_EQ('a', buf[2 * PAGE - 1]);
	/* The remote key is not a local key. */
	EXPECT_EQ(-ENOENT, mr_copy(fd, r.rkey, 0, data, 1, MEMREG_COPY_TO_REGION));
	close(fd);
	free(data);
	free(back);
	munmap(buf, 2 * PAGE);
}

TEST(global_stats_count_this_file)
{
	struct memreg_global_stats g0, g1;
	struct memreg_register r;
	char *buf = map_buf(3 * PAGE, 'g');
	int fd = open_ctx();

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, mr_global(fd, &g0));
	EXPECT_LE(1, g0.contexts);
	EXPECT_LE(1, g0.contexts_alive);
	EXPECT_EQ(0, g0.reserved);
	ASSERT_EQ(0, mr_register(fd, buf, 3 * PAGE, RW, &r));
	ASSERT_EQ(0, mr_global(fd, &g1));
	EXPECT_EQ(g0.regions + 1, g1.regions);
	EXPECT_EQ(g0.pages_pinned + 3, g1.pages_pinned);
	EXPECT_EQ(g0.contexts, g1.contexts);
	close(fd);
	munmap(buf, 3 * PAGE);
}

/* A registration made once state words are mapped gets a slot whose word follows it. */
TEST(state_words_follow_a_registration)
{
	struct memreg_register r;
	const __u64 *words;
	char *buf = map_buf(2 * PAGE, 'w');
	int fd = open_ctx();

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	words = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_STATE_WORDS);
	ASSERT_NE(MAP_FAILED, words);
	ASSERT_EQ(0, mr_register(fd, buf, PAGE, RW, &r));
	ASSERT_NE(MEMREG_NO_SLOT, r.slot);
	ASSERT_GT(PAGE / 8, r.slot);
	EXPECT_NE(0, r.generation);
	EXPECT_EQ(0, r.generation % 4);
	EXPECT_EQ(r.generation, __atomic_load_n(&words[r.slot], __ATOMIC_ACQUIRE));
	/* Ended by munmap: the word says so before munmap returns. */
	ASSERT_EQ(0, munmap(buf, PAGE));
	EXPECT_EQ(r.generation | MEMREG_WORD_ENDED,
		  __atomic_load_n(&words[r.slot], __ATOMIC_ACQUIRE));
	munmap((void *)words, PAGE);
	close(fd);
	munmap(buf + PAGE, PAGE);
}

/* ---- The registration cache ---- */

TEST(cache_config_round_trip)
{
	struct memreg_cache_config c = { .parking = 1, .max_parked = 7, .max_parked_pages = 99,
					 .idle_ms = 12345 };
	struct memreg_cache_config got, bad;
	int fd = memreg_open();

	ASSERT_GE(fd, 0);
	memset(&got, 0xa5, sizeof(got));
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_GET_CACHE, &got));
	EXPECT_GE(1, got.parking);
	EXPECT_EQ(0, got.reserved0);
	EXPECT_EQ(0, got.reserved[3]);

	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_SET_CACHE, &c));
	memset(&got, 0xa5, sizeof(got));
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_GET_CACHE, &got));
	EXPECT_EQ(0, memcmp(&c, &got, sizeof(c)));

	/* Out of range: EINVAL, nothing changed. */
	bad = c;
	bad.idle_ms = 86400000ULL + 1;
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_SET_CACHE, &bad));
	EXPECT_EQ(EINVAL, errno);
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_GET_CACHE, &got));
	EXPECT_EQ(0, memcmp(&c, &got, sizeof(c)));
	close(fd);
}

TEST(flush_ends_parked_registrations)
{
	struct memreg_register r;
	struct memreg_query q;
	struct memreg_flush f;
	struct memreg_stats s;
	char *buf = map_buf(2 * PAGE, 'f');
	int fd = open_ctx();

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, mr_register(fd, buf, 2 * PAGE, RW, &r));
	ASSERT_EQ(0, mr_deregister(fd, r.lkey));
	ASSERT_EQ(0, mr_query(fd, r.lkey, &q));
	EXPECT_EQ(MEMREG_STATE_VALID | MEMREG_STATE_PARKED, q.state);
	EXPECT_EQ(0, q.refcount);

	memset(&f, 0, sizeof(f));
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_FLUSH, &f));
	EXPECT_EQ(1, f.evicted);
	EXPECT_EQ(2, f.pages);
	EXPECT_EQ(-ENOENT, mr_query(fd, r.lkey, &q));
	ASSERT_EQ(0, mr_stats(fd, &s));
	EXPECT_EQ(0, s.registrations);
	EXPECT_EQ(0, s.parked);
	EXPECT_EQ(0, s.pages_pinned);
	EXPECT_EQ(1, s.evictions[MEMREG_EVICT_FLUSH]);
	close(fd);
	munmap(buf, 2 * PAGE);
}

/* ---- The event ring ---- */

TEST(event_ring_reports_an_unmapped_registration)
{
	struct memreg_events_setup es = { .entries = 4, .eventfd = -1 };
	const struct memreg_event_ring *hdr;
	const struct memreg_event *ev;
	struct memreg_register r;
	struct memreg_query q;
	struct memreg_stats s;
	char *buf = map_buf(4 * PAGE, 'e');
	size_t ring_bytes;
	__u32 *head;
	int fd = open_ctx();

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_EVENTS_SETUP, &es));
	EXPECT_LE(MEMREG_EVENTS_OFFSET + 4 * sizeof(struct memreg_event), es.ring_bytes);
	EXPECT_EQ(0, es.ring_bytes % PAGE);
	EXPECT_EQ(0, es.reserved[0]);
	ring_bytes = es.ring_bytes;
	hdr = mmap(NULL, ring_bytes, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_EVENTS);
	ASSERT_NE(MAP_FAILED, hdr);
	head = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, MEMREG_MMAP_EVENTS_HEAD);
	ASSERT_NE(MAP_FAILED, head);
	ev = (const struct memreg_event *)((const char *)hdr + MEMREG_EVENTS_OFFSET);
	EXPECT_EQ(4, hdr->entries);
	EXPECT_EQ(0, __atomic_load_n(&hdr->tail, __ATOMIC_ACQUIRE));

	/* Once per file. */
	es = (struct memreg_events_setup){ .entries = 4, .eventfd = -1 };
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_EVENTS_SETUP, &es));
	EXPECT_EQ(EBUSY, errno);

	ASSERT_EQ(0, mr_register(fd, buf + PAGE, PAGE, RW, &r));
	/* In the ring before munmap returns. */
	ASSERT_EQ(0, munmap(buf + PAGE, PAGE));
	ASSERT_EQ(1, __atomic_load_n(&hdr->tail, __ATOMIC_ACQUIRE));
	EXPECT_EQ(r.lkey, ev[0].key);
	EXPECT_EQ(PTR(buf + PAGE), ev[0].addr);
	EXPECT_EQ(PAGE, ev[0].length);
	EXPECT_EQ(MEMREG_EVENT_ENDED, ev[0].kind);
	EXPECT_EQ(MEMREG_INVAL_UNMAP, ev[0].cause);
	EXPECT_EQ(0, __atomic_load_n(&hdr->flags, __ATOMIC_ACQUIRE));
	__atomic_store_n(head, 1, __ATOMIC_RELEASE);
	ASSERT_EQ(0, mr_stats(fd, &s));
	EXPECT_EQ(1, s.invalidations[MEMREG_INVAL_UNMAP]);
	/* The registration ended: its key is unknown. */
	EXPECT_EQ(-ENOENT, mr_query(fd, r.lkey, &q));

	munmap((void *)hdr, ring_bytes);
	munmap(head, PAGE);
	close(fd);
	munmap(buf, PAGE);
	munmap(buf + 2 * PAGE, 2 * PAGE);
}

TEST(events_resync_lists_live_registrations)
{
	struct memreg_resync_entry list[4], sentinel;
	struct memreg_events_resync rs;
	struct memreg_register a, b;
	char *buf = map_buf(4 * PAGE, 'r');
	int fd = open_ctx();
	int i, found = 0;

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, mr_register(fd, buf, PAGE, RW, &a));
	ASSERT_EQ(0, mr_register(fd, buf + 2 * PAGE, 2 * PAGE, RW, &b));
	memset(list, 0xa5, sizeof(list));
	memset(&sentinel, 0xa5, sizeof(sentinel));
	/* Works without an event ring too. */
	rs = (struct memreg_events_resync){ .entries = PTR(list), .capacity = 4 };
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_EVENTS_RESYNC, &rs));
	ASSERT_EQ(2, rs.count);
	for (i = 0; i < 2; i++) {
		const struct memreg_register *r = list[i].key == a.lkey ? &a : &b;

		ASSERT_EQ(r->lkey, list[i].key);
		EXPECT_EQ(r->region_addr, list[i].addr);
		EXPECT_EQ(r->region_length, list[i].length);
		EXPECT_EQ(MEMREG_STATE_VALID, list[i].state);
		EXPECT_EQ(MEMREG_NO_SLOT, list[i].slot);
		found |= r == &a ? 1 : 2;
	}
	EXPECT_EQ(3, found);
	EXPECT_EQ(0, memcmp(&list[2], &sentinel, sizeof(sentinel)));

	/* A capacity past 1048576: EINVAL. */
	rs = (struct memreg_events_resync){ .entries = PTR(list), .capacity = (1 << 20) + 1 };
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_EVENTS_RESYNC, &rs));
	EXPECT_EQ(EINVAL, errno);
	close(fd);
	munmap(buf, 4 * PAGE);
}

/* ---- The data path ---- */

TEST(queue_nop_and_copy_with_doorbell)
{
	struct memreg_register rs, rd;
	struct memreg_queue_stats st;
	struct memreg_cqe c;
	struct memreg_sqe s;
	struct q3 q;
	char *src = map_buf(2 * PAGE, 's'), *dst = map_buf(2 * PAGE, 'd');
	size_t i;
	int fd = open_ctx();

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, src);
	ASSERT_NE(NULL, dst);
	for (i = 0; i < 2 * PAGE; i++)
		src[i] = (char)(i * 13 + 1);
	ASSERT_EQ(0, mr_register(fd, src, 2 * PAGE, RW, &rs));
	ASSERT_EQ(0, mr_register(fd, dst, 2 * PAGE, RW, &rd));
	ASSERT_EQ(0, q3_open(fd, 4, 8, &q));
	EXPECT_EQ(0, q.index);
	EXPECT_EQ(4, q.ring->sq_entries);
	EXPECT_EQ(8, q.ring->cq_entries);
	EXPECT_EQ(0, __atomic_load_n(&q.ring->cq_tail, __ATOMIC_ACQUIRE));
	ASSERT_EQ(0, mr_queue_stats(fd, &st));
	EXPECT_EQ(0, st.requests);
	EXPECT_EQ(0, st.doorbells);

	s = (struct memreg_sqe){ .opcode = MEMREG_OP_NOP, .user_data = 0xfedcba9876543210ULL };
	ASSERT_EQ(0, q3_run(&q, &s, &c));
	expect_cqe(_metadata, &c, 0xfedcba9876543210ULL, 0, 0);
	EXPECT_EQ(0, c.flags);
	EXPECT_EQ(0, c.imm_data);

	/* Across a page, at unaligned offsets. */
	s = (struct memreg_sqe){ .opcode = MEMREG_OP_COPY, .user_data = 2, .key = rd.lkey,
				 .offset = 10, .src_key = rs.lkey, .src_offset = 3000,
				 .length = PAGE };
	ASSERT_EQ(0, q3_run(&q, &s, &c));
	expect_cqe(_metadata, &c, 2, 0, PAGE);
	EXPECT_EQ(0, memcmp(dst + 10, src + 3000, PAGE));
	EXPECT_TRUE(all_bytes(dst, 10, 'd'));
	EXPECT_TRUE(all_bytes(dst + 10 + PAGE, PAGE - 10, 'd'));

	ASSERT_EQ(0, mr_queue_stats(fd, &st));
	EXPECT_EQ(2, st.requests);
	EXPECT_EQ(2, st.completions);
	EXPECT_EQ(0, st.errors);
	EXPECT_EQ(2, st.doorbells);
	EXPECT_LE(1, st.wakeups);
	EXPECT_LE(1, st.batches);
	EXPECT_EQ(0, st.remote_bytes);
	EXPECT_EQ(0, st.messages);

	/* No queue 1: EINVAL. */
	EXPECT_EQ(-EINVAL, mr_doorbell(fd, 1));
	q3_close(&q);
	close(fd);
	munmap(src, 2 * PAGE);
	munmap(dst, 2 * PAGE);
}

/* ---- Peers ---- */

/* Two files of /dev/memreg: B attached to A writes into A's registration and reads it. */
TEST(peer_attach_write_read_and_detach)
{
	struct memreg_register ra, rb;
	struct memreg_global_stats g0, g1;
	struct memreg_queue_stats st;
	struct memreg_cqe c;
	struct memreg_sqe s;
	struct q3 qb;
	char *a = map_buf(2 * PAGE, 'a'), *b = map_buf(PAGE, 'b');
	int fa = open_ctx(), fb = open_ctx();
	__u32 h;

	ASSERT_GE(fa, 0);
	ASSERT_GE(fb, 0);
	ASSERT_NE(NULL, a);
	ASSERT_NE(NULL, b);
	ASSERT_EQ(0, mr_register(fa, a, 2 * PAGE, ALL, &ra));
	EXPECT_EQ(ALL, ra.access);
	EXPECT_NE(0, ra.rkey);
	EXPECT_NE(ra.lkey, ra.rkey);
	ASSERT_EQ(0, mr_register(fb, b, PAGE, RW, &rb));
	ASSERT_EQ(0, q3_open(fb, 4, 4, &qb));
	ASSERT_EQ(0, mr_global(fb, &g0));

	ASSERT_EQ(0, mr_peer_attach(fb, fa, &h));
	EXPECT_NE(0, h);
	ASSERT_EQ(0, mr_global(fb, &g1));
	EXPECT_EQ(g0.peers + 1, g1.peers);

	s = (struct memreg_sqe){ .opcode = MEMREG_OP_WRITE, .user_data = 1, .peer = h,
				 .key = ra.rkey, .offset = PAGE + 7, .src_key = rb.lkey,
				 .src_offset = 0, .length = 100 };
	ASSERT_EQ(0, q3_run(&qb, &s, &c));
	expect_cqe(_metadata, &c, 1, 0, 100);
	EXPECT_TRUE(all_bytes(a, PAGE + 7, 'a'));
	EXPECT_TRUE(all_bytes(a + PAGE + 7, 100, 'b'));
	EXPECT_TRUE(all_bytes(a + PAGE + 107, PAGE - 107, 'a'));
	/* READ it back into B's buffer. */
	memset(b, 'x', PAGE);
	s = (struct memreg_sqe){ .opcode = MEMREG_OP_READ, .user_data = 2, .peer = h,
				 .key = rb.lkey, .offset = 0, .src_key = ra.rkey,
				 .src_offset = PAGE, .length = 200 };
	ASSERT_EQ(0, q3_run(&qb, &s, &c));
	expect_cqe(_metadata, &c, 2, 0, 200);
	EXPECT_TRUE(all_bytes(b, 7, 'a'));
	EXPECT_TRUE(all_bytes(b + 7, 100, 'b'));
	EXPECT_TRUE(all_bytes(b + 107, 93, 'a'));
	EXPECT_TRUE(all_bytes(b + 200, PAGE - 200, 'x'));
	ASSERT_EQ(0, mr_queue_stats(fb, &st));
	EXPECT_EQ(300, st.remote_bytes);

	EXPECT_EQ(0, mr_peer_detach(fb, h));
	/* A handle this file does not have: ENOENT. */
	EXPECT_EQ(-ENOENT, mr_peer_detach(fb, h));
	s.user_data = 3;
	ASSERT_EQ(0, q3_run(&qb, &s, &c));
	expect_cqe(_metadata, &c, 3, -ENOTCONN, 0);
	ASSERT_EQ(0, mr_global(fb, &g1));
	EXPECT_EQ(g0.peers, g1.peers);
	q3_close(&qb);
	close(fb);
	close(fa);
	munmap(a, 2 * PAGE);
	munmap(b, PAGE);
}

/* B's queue connected to A's: a SEND fills A's posted RECV. */
TEST(queue_connect_send_to_recv)
{
	struct memreg_register ra, rb;
	struct memreg_cqe c;
	struct memreg_sqe s;
	struct q3 qa, qb;
	char *a = map_buf(PAGE, 'a'), *b = map_buf(PAGE, 'b');
	int fa = open_ctx(), fb = open_ctx();
	__u32 h;

	ASSERT_GE(fa, 0);
	ASSERT_GE(fb, 0);
	ASSERT_NE(NULL, a);
	ASSERT_NE(NULL, b);
	ASSERT_EQ(0, mr_register(fa, a, PAGE, RW, &ra));
	ASSERT_EQ(0, mr_register(fb, b, PAGE, RW, &rb));
	ASSERT_EQ(0, q3_open(fa, 4, 4, &qa));
	ASSERT_EQ(0, q3_open(fb, 4, 4, &qb));
	ASSERT_EQ(0, mr_peer_attach(fb, fa, &h));
	ASSERT_EQ(0, mr_queue_connect(fb, qb.index, h, qa.index, 5000));
	/* Connected already. */
	EXPECT_EQ(-EISCONN, mr_queue_connect(fb, qb.index, h, qa.index, 0));

	s = (struct memreg_sqe){ .opcode = MEMREG_OP_RECV, .user_data = 10, .key = ra.lkey,
				 .offset = 16, .length = 256 };
	ASSERT_EQ(0, q3_post(&qa, &s));
	memset(b, 'M', 200);
	s = (struct memreg_sqe){ .opcode = MEMREG_OP_SEND, .user_data = 11,
				 .flags = MEMREG_SQE_IMM, .key = 0x1234,
				 .src_key = rb.lkey, .src_offset = 0, .length = 200 };
	ASSERT_EQ(0, q3_run(&qb, &s, &c));
	expect_cqe(_metadata, &c, 11, 0, 200);
	ASSERT_EQ(0, q3_reap(&qa, &c, WAIT_MS));
	expect_cqe(_metadata, &c, 10, 0, 200);
	EXPECT_EQ(MEMREG_CQE_IMM, c.flags);
	EXPECT_EQ(0x1234, c.imm_data);
	EXPECT_TRUE(all_bytes(a, 16, 'a'));
	EXPECT_TRUE(all_bytes(a + 16, 200, 'M'));
	EXPECT_TRUE(all_bytes(a + 216, PAGE - 216, 'a'));
	q3_close(&qa);
	q3_close(&qb);
	close(fb);
	close(fa);
	munmap(a, PAGE);
	munmap(b, PAGE);
}

/* A's PEER_REVOKE ends B's grant: B's requests and connections through it fail. */
TEST(peer_revoke_ends_grants)
{
	struct memreg_register ra, rb;
	struct memreg_cqe c;
	struct memreg_sqe s;
	struct q3 qa, qb, qb2;
	char *a = map_buf(PAGE, 'a'), *b = map_buf(PAGE, 'b');
	int fa = open_ctx(), fb = open_ctx();
	__u32 h, h2;

	ASSERT_GE(fa, 0);
	ASSERT_GE(fb, 0);
	ASSERT_NE(NULL, a);
	ASSERT_NE(NULL, b);
	ASSERT_EQ(0, mr_register(fa, a, PAGE, ALL, &ra));
	ASSERT_EQ(0, mr_register(fb, b, PAGE, RW, &rb));
	ASSERT_EQ(0, q3_open(fa, 4, 4, &qa));
	ASSERT_EQ(0, q3_open(fb, 4, 4, &qb));
	ASSERT_EQ(0, q3_open(fb, 4, 4, &qb2));
	ASSERT_EQ(0, mr_peer_attach(fb, fa, &h));
	s = (struct memreg_sqe){ .opcode = MEMREG_OP_WRITE, .user_data = 1, .peer = h,
				 .key = ra.rkey, .src_key = rb.lkey, .length = 64 };
	ASSERT_EQ(0, q3_run(&qb, &s, &c));
	expect_cqe(_metadata, &c, 1, 0, 64);

	ASSERT_EQ(0, ioctl(fa, MEMREG_IOC_PEER_REVOKE));
	memset(a, 'a', PAGE);
	s.user_data = 2;
	ASSERT_EQ(0, q3_run(&qb, &s, &c));
	expect_cqe(_metadata, &c, 2, -ECONNRESET, 0);
	EXPECT_EQ(-ECONNRESET, mr_queue_connect(fb, qb2.index, h, qa.index, 0));
	EXPECT_TRUE(all_bytes(a, PAGE, 'a'));

	/* A new attachment after the revoke works. */
	ASSERT_EQ(0, mr_peer_attach(fb, fa, &h2));
	EXPECT_NE(h, h2);
	s.user_data = 3;
	s.peer = h2;
	ASSERT_EQ(0, q3_run(&qb, &s, &c));
	expect_cqe(_metadata, &c, 3, 0, 64);
	EXPECT_TRUE(all_bytes(a, 64, 'b'));
	q3_close(&qa);
	q3_close(&qb);
	q3_close(&qb2);
	close(fb);
	close(fa);
	munmap(a, PAGE);
	munmap(b, PAGE);
}

/* ---- Buffer pools ---- */

TEST(pool_create_alloc_free_stats_destroy)
{
	struct memreg_pool_class cl = { .buffer_size = 4096, .max_buffers = 64,
					.low_watermark = 4, .high_watermark = 40,
					.initial = 16 };
	struct memreg_pool_create pc = { .classes = PTR(&cl), .nr_classes = 1, .access = RW,
					 .leak_timeout_ms = 1000, .shrink_ms = 100 };
	struct memreg_pool_destroy pd = { 0 };
	struct memreg_pool_buf bufs[2];
	struct memreg_pool_alloc pa;
	struct memreg_pool_free pf;
	struct memreg_pool_stats st;
	__u64 addrs[2];
	char back[64];
	char *map;
	int fd = memreg_open(), i;

	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_POOL_CREATE, &pc));
	EXPECT_EQ(0, pc.pool);
	EXPECT_EQ(64 * 4096, pc.map_bytes);
	EXPECT_EQ(16, cl.chunk_buffers);
	EXPECT_EQ(0, cl.offset);
	EXPECT_EQ(0, pc.reserved0);

	/* Before the pool is mapped: ENXIO. */
	pa = (struct memreg_pool_alloc){ .pool = pc.pool, .size = 100, .bufs = PTR(bufs),
					 .count = 1 };
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_POOL_ALLOC, &pa));
	EXPECT_EQ(ENXIO, errno);

	map = mmap(NULL, pc.map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		   MEMREG_MMAP_POOL(pc.pool));
	ASSERT_NE(MAP_FAILED, map);
	ASSERT_EQ(0, pool_wait_boundary(fd, pc.pool, 0, 16));

	pa = (struct memreg_pool_alloc){ .pool = pc.pool, .size = 100, .bufs = PTR(bufs),
					 .count = 2, .timeout_ms = 2000 };
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_POOL_ALLOC, &pa));
	ASSERT_EQ(2, pa.count);
	for (i = 0; i < 2; i++) {
		EXPECT_LE(PTR(map), bufs[i].addr);
		EXPECT_GT(PTR(map) + pc.map_bytes, bufs[i].addr);
		EXPECT_EQ(0, (bufs[i].addr - PTR(map)) % 4096);
		EXPECT_EQ(4096, bufs[i].size);
		EXPECT_EQ(0, bufs[i].class);
		EXPECT_NE(0, bufs[i].key);
		addrs[i] = bufs[i].addr;
	}
	EXPECT_NE(bufs[0].addr, bufs[1].addr);
	/* A buffer's key and offset work in COPY. */
	memset((char *)(unsigned long)bufs[1].addr, 'P', 64);
	memset(back, 0, sizeof(back));
	ASSERT_EQ(0, mr_copy(fd, bufs[1].key, bufs[1].offset, back, 64,
			     MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(back, 64, 'P'));
	ASSERT_EQ(0, pool_stat(fd, pc.pool, 0, &st));
	EXPECT_EQ(2, st.allocated);

	pf = (struct memreg_pool_free){ .pool = pc.pool, .count = 2, .addrs = PTR(addrs) };
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_POOL_FREE, &pf));
	ASSERT_EQ(0, pool_stat(fd, pc.pool, 0, &st));
	EXPECT_EQ(0, st.allocated);
	/* Freed already: EINVAL. */
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_POOL_FREE, &pf));
	EXPECT_EQ(EINVAL, errno);

	pd.pool = pc.pool;
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_POOL_DESTROY, &pd));
	EXPECT_EQ(-EINVAL, pool_stat(fd, pc.pool, 0, &st));
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_POOL_DESTROY, &pd));
	EXPECT_EQ(EINVAL, errno);
	munmap(map, pc.map_bytes);
	close(fd);
}

TEST(pool_stats_report_each_class)
{
	struct memreg_pool_class cl[2] = {
		{ .buffer_size = 256, .max_buffers = 256, .initial = 256 },
		{ .buffer_size = 4096, .max_buffers = 64, .initial = 16 },
	};
	struct memreg_pool_create pc = { .classes = PTR(cl), .nr_classes = 2, .access = RW,
					 .leak_timeout_ms = 1000 };
	struct memreg_pool_stats st[3];
	struct memreg_pool_info in;
	char *map;
	int fd = memreg_open();

	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_POOL_CREATE, &pc));
	map = mmap(NULL, pc.map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		   MEMREG_MMAP_POOL(pc.pool));
	ASSERT_NE(MAP_FAILED, map);
	ASSERT_EQ(0, pool_wait_boundary(fd, pc.pool, 0, 256));
	ASSERT_EQ(0, pool_wait_boundary(fd, pc.pool, 1, 16));
	memset(st, 0xaa, sizeof(st));
	in = (struct memreg_pool_info){ .pool = pc.pool, .count = 3, .stats = PTR(st) };
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_POOL_STATS, &in));
	EXPECT_EQ(2, in.count);
	EXPECT_EQ(256, st[0].boundary);
	EXPECT_EQ(256, st[0].free);
	EXPECT_EQ(0, st[0].allocated);
	EXPECT_EQ(16, st[1].boundary);
	EXPECT_EQ(16, st[1].free);
	EXPECT_EQ(0, st[1].allocated);
	EXPECT_TRUE(all_bytes(&st[2], sizeof(st[2]), 0xaa));
	munmap(map, pc.map_bytes);
	close(fd);
}

TEST_HARNESS_MAIN
