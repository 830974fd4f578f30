// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: how an ioctl's number is matched and its size taken.
 *
 * A command is matched on its type (MEMREG_IOC_MAGIC), number and direction
 * (_IOC_DIR); an unknown number or the wrong direction is ENOTTY. Its size
 * (_IOC_SIZE) is the caller's structure size:
 * - below the first size that ioctl's structure was ever published with:
 *   EINVAL;
 * - larger than the kernel's structure: accepted only if the bytes past the
 *   kernel's structure that the caller passes in (_IOW, _IOWR) are all zero,
 *   else E2BIG;
 * - input is copied up to the caller's size and the rest taken as zero;
 *   output is written up to the caller's size, bytes past the kernel's
 *   structure as zero, and nothing past the caller's size.
 *
 * The first published sizes (x86_64, from the history of the uapi header):
 * REGISTER 56 (ABI v1; 72 since v2, 80 since v4), STATS 144 (v1; 248 since v2), every
 * other ioctl the size it has now; PEER_REVOKE is _IO (size 0).
 *
 * Each ioctl 0x00 .. 0x19 is a variant of the fixture `abi`. Its prepare
 * function sets up what a successful call needs (a registration, a queue, a
 * peer, a pool ...) and fills a valid argument, so that the size or the
 * direction is the only thing wrong with the calls that must fail; its check
 * function tells whether the call took effect (a registration made, a
 * counter moved, a pool gone ...) and checks the output of one that did.
 *
 * Run as root, with no other memreg file open.
 */
#include <stddef.h>

#include "memreg_util.h"
#include "memreg_util.h"

#include "../kselftest_harness.h"

/* ABI v1's struct memreg_register and struct memreg_stats. */
#define V1_REGISTER_SIZE	56
#define V1_STATS_SIZE		144
/* Offsets in ABI v1's struct memreg_register (the same ones since). */
#define V1_REG_ADDR		0
#define V1_REG_LENGTH		8
#define V1_REG_ACCESS		16
#define V1_REG_FLAGS		20
#define V1_REG_LKEY		24
#define V1_REG_RKEY		32
#define V1_REG_REGION_ADDR	40
#define V1_REG_REGION_LENGTH	48

/* The first number no ioctl has (update when one is added). */
#define FIRST_UNUSED_NR		0x1a

#define TAIL			8	/* bytes past the structure in the "larger" cases */
#define DIR_RW			(_IOC_READ | _IOC_WRITE)
#define PTR(p)			((__u64)(unsigned long)(p))

_Static_assert(offsetof(struct memreg_register, lkey) == V1_REG_LKEY, "v1 offset");
_Static_assert(offsetof(struct memreg_register, rkey) == V1_REG_RKEY, "v1 offset");
_Static_assert(offsetof(struct memreg_register, region_addr) == V1_REG_REGION_ADDR, "v1 offset");
_Static_assert(offsetof(struct memreg_register, region_length) == V1_REG_REGION_LENGTH,
	       "v1 offset");
_Static_assert(offsetof(struct memreg_stats, invalidations) == 48, "v1 offset");

/* ---- Raw commands ---- */

/* ioctl with the command built from its parts; 0 or -errno. */
static int raw(int fd, unsigned int dir, unsigned int nr, unsigned int size, void *arg)
{
	return ioctl(fd, _IOC(dir, MEMREG_IOC_MAGIC, nr, size), arg) ? -errno : 0;
}

static const char *dir_name(unsigned int dir)
{
	static const char *const names[] = { "_IO", "_IOW", "_IOR", "_IOWR" };

	return names[dir & 3];
}

/* ---- What each ioctl needs ---- */

struct env {
	int fd;				/* parks, never evicts for idleness */
	int fd2;			/* a second file, or -1 */
	char *buf;			/* BUF_PAGES pages filled with 'a' */
	struct memreg_cache_config cfg;	/* fd's settings */
	struct memreg_register r;	/* a registration of buf's first page */
	__u32 queue, queue2;
	__u32 peer;
	__u64 base;			/* a counter read before the call */
	__u32 pool;
	char *map;			/* the pool's mapping, or NULL */
	size_t map_bytes;
	struct memreg_pool_class cl;
	struct memreg_pool_buf bufs[2];
	__u64 addrs[2];
	struct memreg_pool_stats pst[2];
	struct memreg_pool_ring_class rcl[2];
	struct memreg_resync_entry list[2];
	char data[64];
};

#define BUF_PAGES	4

static const struct memreg_cache_config default_cfg = {
	.parking = 1, .max_parked = 1024, .max_parked_pages = 262144, .idle_ms = 0,
};

/* A registration of the first page of e->buf, RW, in e->r. */
static int register_page(struct env *e)
{
	return memreg_register(e->fd, e->buf, PAGE, RW, &e->r);
}

static __u64 peers_now(struct env *e)
{
	struct memreg_global_stats g;

	return memreg_global_stats(e->fd, &g) ? ~0ULL : g.peers;
}

/* POOL_STATS of class 0 of e->pool; 0 or -errno. */
static int pool_stat0(struct env *e, struct memreg_pool_stats *st)
{
	struct memreg_pool_info in = { .pool = e->pool, .count = 1, .stats = PTR(st) };

	memset(st, 0xff, sizeof(*st));
	return ioctl(e->fd, MEMREG_IOC_POOL_STATS, &in) ? -errno : 0;
}

/* A pool of one class (64 buffers of 4 KiB, 16 mapped at first); maps it if asked. */
static int pool_create(struct env *e, bool map)
{
	struct memreg_pool_create pc = { .classes = PTR(&e->cl), .nr_classes = 1, .access = RW,
					 .leak_timeout_ms = 1000, .shrink_ms = 100 };
	struct memreg_pool_stats st;
	void *m;
	int i;

	e->cl = (struct memreg_pool_class){ .buffer_size = 4096, .max_buffers = 64,
					    .low_watermark = 4, .high_watermark = 40,
					    .initial = 16 };
	if (ioctl(e->fd, MEMREG_IOC_POOL_CREATE, &pc))
		return -errno;
	e->pool = pc.pool;
	e->map_bytes = pc.map_bytes;
	if (!map)
		return 0;
	m = mmap(NULL, pc.map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, e->fd,
		 MEMREG_MMAP_POOL(pc.pool));
	if (m == MAP_FAILED)
		return -errno;
	e->map = m;
	/* The pool's work maps the first chunks after the mmap. */
	for (i = 0; i < 500; i++) {
		if (!pool_stat0(e, &st) && st.boundary == 16)
			return 0;
		usleep(10000);
	}
	return -ETIMEDOUT;
}

/*
 * One ioctl: its number, direction, first published size and current size,
 * how to prepare a call that succeeds and how to tell whether it took effect.
 */
struct ioc {
	const char *name;
	unsigned int nr;
	unsigned int dir;
	unsigned int first;
	unsigned int size;
	/* Sets up `e` and fills `arg` (zeroed, size bytes) for a call that succeeds. */
	int (*prepare)(struct env *e, void *arg);
	/* Checks the effect of a call (`took`) or its absence. */
	void (*check)(struct __test_metadata *_metadata, struct env *e, void *arg, bool took);
};

/* 0x00 GET_VERSION */
static int prep_get_version(struct env *e, void *arg)
{
	return 0;
}

static void check_get_version(struct __test_metadata *_metadata, struct env *e, void *arg,
			      bool took)
{
	if (took)
		EXPECT_EQ((__u32)MEMREG_ABI_VERSION, *(__u32 *)arg);
}

/* 0x01 REGISTER */
static int prep_register(struct env *e, void *arg)
{
	struct memreg_register *r = arg;

	r->addr = PTR(e->buf);
	r->length = PAGE;
	r->access = RW;
	return 0;
}

static void check_register(struct __test_metadata *_metadata, struct env *e, void *arg,
			   bool took)
{
	struct memreg_register *r = arg;
	struct memreg_stats s;

	ASSERT_EQ(0, memreg_stats(e->fd, &s));
	EXPECT_EQ(took, s.registrations);
	EXPECT_EQ(took, s.cache_misses);
	if (!took)
		return;
	EXPECT_NE(0, r->lkey);
	EXPECT_EQ(PTR(e->buf), r->region_addr);
	EXPECT_EQ(PAGE, r->region_length);
	EXPECT_EQ(MEMREG_NO_SLOT, r->slot);
}

/* 0x02 DEREGISTER */
static int prep_deregister(struct env *e, void *arg)
{
	struct memreg_deregister *d = arg;
	int ret = register_page(e);

	d->key = e->r.lkey;
	return ret;
}

static void check_deregister(struct __test_metadata *_metadata, struct env *e, void *arg,
			     bool took)
{
	struct memreg_query q;

	/* Parking is on: the last reference parks it. */
	ASSERT_EQ(0, memreg_query(e->fd, e->r.lkey, &q));
	EXPECT_EQ(took ? 0 : 1, q.refcount);
}

/* 0x03 QUERY */
static int prep_query(struct env *e, void *arg)
{
	struct memreg_query *q = arg;
	int ret = register_page(e);

	q->key = e->r.lkey;
	return ret;
}

static void check_query(struct __test_metadata *_metadata, struct env *e, void *arg, bool took)
{
	struct memreg_query *q = arg;

	if (!took)
		return;
	EXPECT_EQ(PTR(e->buf), q->addr);
	EXPECT_EQ(PAGE, q->length);
	EXPECT_EQ(MEMREG_STATE_VALID, q->state);
	EXPECT_EQ(1, q->pages);
	EXPECT_EQ(1, q->refcount);
	EXPECT_EQ(0, q->reserved[1]);
}

/* 0x04 STATS */
static int prep_stats(struct env *e, void *arg)
{
	return register_page(e);
}

static void check_stats(struct __test_metadata *_metadata, struct env *e, void *arg, bool took)
{
	struct memreg_stats *s = arg;

	if (!took)
		return;
	EXPECT_EQ(1, s->registrations);
	EXPECT_EQ(1, s->cache_misses);
	EXPECT_EQ(1, s->pages_pinned);
	EXPECT_EQ(0, s->parked);
	EXPECT_EQ(0, s->watches);
	EXPECT_EQ(0, s->reserved[1]);
}

/* 0x05 COPY */
static int prep_copy(struct env *e, void *arg)
{
	struct memreg_copy *c = arg;
	int ret = register_page(e);

	memset(e->data, 'z', sizeof(e->data));
	c->key = e->r.lkey;
	c->offset = 10;
	c->length = sizeof(e->data);
	c->buf = PTR(e->data);
	c->direction = MEMREG_COPY_TO_REGION;
	return ret;
}

static void check_copy(struct __test_metadata *_metadata, struct env *e, void *arg, bool took)
{
	if (!took) {
		EXPECT_TRUE(all_bytes(e->buf, PAGE, 'a'));
		return;
	}
	EXPECT_TRUE(all_bytes(e->buf, 10, 'a'));
	EXPECT_TRUE(all_bytes(e->buf + 10, sizeof(e->data), 'z'));
	EXPECT_TRUE(all_bytes(e->buf + 10 + sizeof(e->data), PAGE - 10 - sizeof(e->data), 'a'));
}

/* 0x06 GLOBAL_STATS */
static int prep_global_stats(struct env *e, void *arg)
{
	return register_page(e);
}

static void check_global_stats(struct __test_metadata *_metadata, struct env *e, void *arg,
			       bool took)
{
	struct memreg_global_stats *g = arg;

	if (!took)
		return;
	EXPECT_LE(1, g->contexts);
	EXPECT_LE(1, g->regions);
	EXPECT_LE(1, g->pages_pinned);
	EXPECT_LE(1, g->contexts_alive);
	EXPECT_EQ(0, g->watches);
}

/* 0x07 GET_CACHE */
static int prep_get_cache(struct env *e, void *arg)
{
	e->cfg = (struct memreg_cache_config){ .parking = 1, .max_parked = 77,
					       .max_parked_pages = 777, .idle_ms = 7777 };
	return memreg_set_cache(e->fd, &e->cfg);
}

static void check_get_cache(struct __test_metadata *_metadata, struct env *e, void *arg,
			    bool took)
{
	if (took)
		EXPECT_EQ(0, memcmp(&e->cfg, arg, sizeof(e->cfg)));
}

/* 0x08 SET_CACHE */
static int prep_set_cache(struct env *e, void *arg)
{
	struct memreg_cache_config *c = arg;

	*c = (struct memreg_cache_config){ .parking = 1, .max_parked = 55,
					   .max_parked_pages = 555, .idle_ms = 5555 };
	return 0;
}

static void check_set_cache(struct __test_metadata *_metadata, struct env *e, void *arg,
			    bool took)
{
	struct memreg_cache_config got;

	ASSERT_EQ(0, memreg_get_cache(e->fd, &got));
	EXPECT_EQ(0, memcmp(took ? arg : (void *)&e->cfg, &got, sizeof(got)));
}

/* 0x09 FLUSH */
static int prep_flush(struct env *e, void *arg)
{
	int ret = register_page(e);

	return ret ? ret : memreg_deregister(e->fd, e->r.lkey);
}

static void check_flush(struct __test_metadata *_metadata, struct env *e, void *arg, bool took)
{
	struct memreg_flush *f = arg;
	struct memreg_stats s;

	ASSERT_EQ(0, memreg_stats(e->fd, &s));
	EXPECT_EQ(took ? 0 : 1, s.parked);
	if (!took)
		return;
	EXPECT_EQ(1, f->evicted);
	EXPECT_EQ(1, f->pages);
}

/* 0x0a EVENTS_SETUP */
static int prep_events_setup(struct env *e, void *arg)
{
	struct memreg_events_setup *s = arg;

	s->entries = 4;
	s->eventfd = -1;
	return 0;
}

static void check_events_setup(struct __test_metadata *_metadata, struct env *e, void *arg,
			       bool took)
{
	struct memreg_events_setup *s = arg, again = { .entries = 4, .eventfd = -1 };

	if (took)
		EXPECT_LE(MEMREG_EVENTS_OFFSET + 4 * sizeof(struct memreg_event), s->ring_bytes);
	/* Once per file: a second one is EBUSY only if the first took. */
	EXPECT_EQ(took ? -1 : 0, ioctl(e->fd, MEMREG_IOC_EVENTS_SETUP, &again));
	if (took)
		EXPECT_EQ(EBUSY, errno);
}

/* 0x0b EVENTS_RESYNC */
static int prep_events_resync(struct env *e, void *arg)
{
	struct memreg_events_resync *rs = arg;

	memset(e->list, 0xa5, sizeof(e->list));
	rs->entries = PTR(e->list);
	rs->capacity = 2;
	return register_page(e);
}

static void check_events_resync(struct __test_metadata *_metadata, struct env *e, void *arg,
				bool took)
{
	struct memreg_events_resync *rs = arg;

	if (!took) {
		EXPECT_TRUE(all_bytes((char *)e->list, sizeof(e->list), 0xa5));
		return;
	}
	EXPECT_EQ(1, rs->count);
	EXPECT_EQ(e->r.lkey, e->list[0].key);
	EXPECT_EQ(PTR(e->buf), e->list[0].addr);
	EXPECT_TRUE(all_bytes((char *)&e->list[1], sizeof(e->list[1]), 0xa5));
}

/* 0x0c QUEUE_CREATE */
static int prep_queue_create(struct env *e, void *arg)
{
	struct memreg_queue_create *c = arg;

	c->sq_entries = 4;
	c->cq_entries = 4;
	c->eventfd = -1;
	return 0;
}

static void check_queue_create(struct __test_metadata *_metadata, struct env *e, void *arg,
			       bool took)
{
	struct memreg_queue_create *c = arg;

	/* DOORBELL on queue 0 works once there is one. */
	EXPECT_EQ(took ? 0 : -EINVAL, memreg_doorbell(e->fd, 0));
	if (!took)
		return;
	EXPECT_EQ(0, c->queue);
	EXPECT_LT(0, c->sq_bytes);
	EXPECT_LT(0, c->cq_bytes);
}

/* 0x0d DOORBELL */
static int prep_doorbell(struct env *e, void *arg)
{
	struct memreg_doorbell *d = arg;
	struct memreg_queue_create c;
	int ret = memreg_queue_create(e->fd, 4, 4, -1, &c);

	d->queue = c.queue;
	return ret;
}

static void check_doorbell(struct __test_metadata *_metadata, struct env *e, void *arg,
			   bool took)
{
	struct memreg_queue_stats s;

	ASSERT_EQ(0, memreg_queue_stats(e->fd, &s));
	EXPECT_EQ(took, s.doorbells);
}

/* 0x0e QUEUE_STATS */
static int prep_queue_stats(struct env *e, void *arg)
{
	struct memreg_queue_create c;
	int ret = memreg_queue_create(e->fd, 4, 4, -1, &c), i;

	for (i = 0; !ret && i < 3; i++)
		ret = memreg_doorbell(e->fd, c.queue);
	return ret;
}

static void check_queue_stats(struct __test_metadata *_metadata, struct env *e, void *arg,
			      bool took)
{
	struct memreg_queue_stats *s = arg;

	if (!took)
		return;
	EXPECT_EQ(3, s->doorbells);
	EXPECT_EQ(0, s->requests);
	EXPECT_EQ(0, s->completions);
	EXPECT_EQ(0, s->rnr_timeouts);
}

/* 0x0f PEER_ATTACH */
static int prep_peer_attach(struct env *e, void *arg)
{
	struct memreg_peer_attach *a = arg;

	e->fd2 = memreg_open();
	if (e->fd2 < 0)
		return -errno;
	e->base = peers_now(e);
	a->fd = e->fd2;
	return 0;
}

static void check_peer_attach(struct __test_metadata *_metadata, struct env *e, void *arg,
			      bool took)
{
	struct memreg_peer_attach *a = arg;

	EXPECT_EQ(e->base + took, peers_now(e));
	if (took)
		EXPECT_NE(0, a->peer);
}

/* 0x10 PEER_DETACH */
static int prep_peer_detach(struct env *e, void *arg)
{
	struct memreg_peer_detach *d = arg;
	int ret;

	e->fd2 = memreg_open();
	if (e->fd2 < 0)
		return -errno;
	ret = memreg_peer_attach(e->fd, e->fd2, &e->peer);
	d->peer = e->peer;
	return ret;
}

static void check_peer_detach(struct __test_metadata *_metadata, struct env *e, void *arg,
			      bool took)
{
	EXPECT_EQ(took ? -ENOENT : 0, memreg_peer_detach(e->fd, e->peer));
}

/* 0x11 PEER_REVOKE: fd2 holds a grant to fd; after a revoke it connects no more. */
static int prep_peer_revoke(struct env *e, void *arg)
{
	struct memreg_queue_create c;
	int ret;

	e->fd2 = memreg_open();
	if (e->fd2 < 0)
		return -errno;
	ret = memreg_queue_create(e->fd, 4, 4, -1, &c);
	e->queue = c.queue;
	if (!ret)
		ret = memreg_queue_create(e->fd2, 4, 4, -1, &c);
	e->queue2 = c.queue;
	if (!ret)
		ret = memreg_peer_attach(e->fd2, e->fd, &e->peer);
	return ret;
}

static void check_peer_revoke(struct __test_metadata *_metadata, struct env *e, void *arg,
			      bool took)
{
	EXPECT_EQ(took ? -ECONNRESET : 0,
		  memreg_queue_connect(e->fd2, e->queue2, e->peer, e->queue, 0));
}

/* 0x12 QUEUE_CONNECT: two queues of fd, fd attached to itself. */
static int prep_queue_connect(struct env *e, void *arg)
{
	struct memreg_queue_connect *qc = arg;
	struct memreg_queue_create c;
	int ret = memreg_queue_create(e->fd, 4, 4, -1, &c);

	e->queue = c.queue;
	if (!ret)
		ret = memreg_queue_create(e->fd, 4, 4, -1, &c);
	e->queue2 = c.queue;
	if (!ret)
		ret = memreg_peer_attach(e->fd, e->fd, &e->peer);
	qc->queue = e->queue;
	qc->peer = e->peer;
	qc->remote_queue = e->queue2;
	return ret;
}

static void check_queue_connect(struct __test_metadata *_metadata, struct env *e, void *arg,
				bool took)
{
	EXPECT_EQ(took ? -EISCONN : 0,
		  memreg_queue_connect(e->fd, e->queue, e->peer, e->queue2, 0));
}

/* 0x13 POOL_CREATE */
static int prep_pool_create(struct env *e, void *arg)
{
	struct memreg_pool_create *pc = arg;

	e->cl = (struct memreg_pool_class){ .buffer_size = 4096, .max_buffers = 64,
					    .low_watermark = 4, .high_watermark = 40,
					    .initial = 16 };
	pc->classes = PTR(&e->cl);
	pc->nr_classes = 1;
	pc->access = RW;
	pc->leak_timeout_ms = 1000;
	pc->shrink_ms = 100;
	e->pool = 0;
	return 0;
}

static void check_pool_create(struct __test_metadata *_metadata, struct env *e, void *arg,
			      bool took)
{
	struct memreg_pool_create *pc = arg;
	struct memreg_pool_stats st;

	/* Pool 0 exists only if the call took. */
	EXPECT_EQ(took ? 0 : -EINVAL, pool_stat0(e, &st));
	if (!took)
		return;
	EXPECT_EQ(0, pc->pool);
	EXPECT_EQ(64 * 4096, pc->map_bytes);
	EXPECT_EQ(16, e->cl.chunk_buffers);
}

/* 0x14 POOL_ALLOC */
static int prep_pool_alloc(struct env *e, void *arg)
{
	struct memreg_pool_alloc *a = arg;
	int ret = pool_create(e, true);

	a->pool = e->pool;
	a->size = 100;
	a->bufs = PTR(e->bufs);
	a->count = 1;
	a->timeout_ms = 2000;
	return ret;
}

static void check_pool_alloc(struct __test_metadata *_metadata, struct env *e, void *arg,
			     bool took)
{
	struct memreg_pool_alloc *a = arg;
	struct memreg_pool_stats st;

	ASSERT_EQ(0, pool_stat0(e, &st));
	EXPECT_EQ(took, st.allocated);
	if (!took)
		return;
	EXPECT_EQ(1, a->count);
	EXPECT_EQ(4096, e->bufs[0].size);
	EXPECT_LE(PTR(e->map), e->bufs[0].addr);
	EXPECT_GT(PTR(e->map) + e->map_bytes, e->bufs[0].addr);
}

/* 0x15 POOL_FREE */
static int prep_pool_free(struct env *e, void *arg)
{
	struct memreg_pool_alloc a = { .size = 100, .bufs = PTR(e->bufs), .count = 1,
				       .timeout_ms = 2000 };
	struct memreg_pool_free *f = arg;
	int ret = pool_create(e, true);

	if (ret)
		return ret;
	a.pool = e->pool;
	if (ioctl(e->fd, MEMREG_IOC_POOL_ALLOC, &a))
		return -errno;
	e->addrs[0] = e->bufs[0].addr;
	f->pool = e->pool;
	f->count = 1;
	f->addrs = PTR(e->addrs);
	return 0;
}

static void check_pool_free(struct __test_metadata *_metadata, struct env *e, void *arg,
			    bool took)
{
	struct memreg_pool_stats st;

	ASSERT_EQ(0, pool_stat0(e, &st));
	EXPECT_EQ(took ? 0 : 1, st.allocated);
}

/* 0x16 POOL_STATS */
static int prep_pool_stats(struct env *e, void *arg)
{
	struct memreg_pool_info *in = arg;
	int ret = pool_create(e, false);

	memset(e->pst, 0xaa, sizeof(e->pst));
	in->pool = e->pool;
	in->count = 2;
	in->stats = PTR(e->pst);
	return ret;
}

static void check_pool_stats(struct __test_metadata *_metadata, struct env *e, void *arg,
			     bool took)
{
	struct memreg_pool_info *in = arg;

	if (!took) {
		EXPECT_TRUE(all_bytes((char *)e->pst, sizeof(e->pst), 0xaa));
		return;
	}
	/* One class: one written, the number of classes told. */
	EXPECT_EQ(1, in->count);
	EXPECT_EQ(0, e->pst[0].allocated);
	EXPECT_EQ(0, e->pst[0].leaks_reclaimed);
	EXPECT_TRUE(all_bytes((char *)&e->pst[1], sizeof(e->pst[1]), 0xaa));
}

/* 0x17 POOL_DESTROY */
static int prep_pool_destroy(struct env *e, void *arg)
{
	struct memreg_pool_destroy *d = arg;
	int ret = pool_create(e, false);

	d->pool = e->pool;
	return ret;
}

static void check_pool_destroy(struct __test_metadata *_metadata, struct env *e, void *arg,
			       bool took)
{
	struct memreg_pool_stats st;

	EXPECT_EQ(took ? -EINVAL : 0, pool_stat0(e, &st));
}

/* 0x18 REVALIDATE */
static int prep_revalidate(struct env *e, void *arg)
{
	struct memreg_revalidate *r = arg;
	int ret = register_page(e);

	r->key = e->r.lkey;
	return ret;
}

static void check_revalidate(struct __test_metadata *_metadata, struct env *e, void *arg,
			     bool took)
{
	struct memreg_query q;

	/* Taken or not, it neither takes nor drops a reference, nor ends it. */
	ASSERT_EQ(0, memreg_query(e->fd, e->r.lkey, &q));
	EXPECT_EQ(1, q.refcount);
	EXPECT_EQ(MEMREG_STATE_VALID, q.state);
}

/* 0x19 POOL_RING */
static int prep_pool_ring(struct env *e, void *arg)
{
	struct memreg_pool_ring *r = arg;
	int ret = pool_create(e, true);

	memset(e->rcl, 0xaa, sizeof(e->rcl));
	r->pool = e->pool;
	r->count = 2;
	r->classes = PTR(e->rcl);
	return ret;
}

static void check_pool_ring(struct __test_metadata *_metadata, struct env *e, void *arg,
			    bool took)
{
	struct memreg_pool_ring *r = arg;
	void *m;

	if (!took) {
		EXPECT_TRUE(all_bytes((char *)e->rcl, sizeof(e->rcl), 0xaa));
		return;
	}
	/* One class: one written, the number of classes told, the rings mappable. */
	EXPECT_EQ(1, r->count);
	EXPECT_EQ(64 / 16, e->rcl[0].nr_chunks);
	EXPECT_EQ(0, e->rcl[0].reserved0);
	EXPECT_EQ(0, e->rcl[0].stale);
	EXPECT_EQ(0, e->rcl[0].rejected);
	EXPECT_TRUE(all_bytes((char *)&e->rcl[1], sizeof(e->rcl[1]), 0xaa));
	ASSERT_NE(0, r->map_bytes);
	EXPECT_EQ(0, r->map_bytes % PAGE);
	m = mmap(NULL, r->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, e->fd,
		 MEMREG_MMAP_POOL_RING(e->pool));
	ASSERT_NE(MAP_FAILED, m);
	munmap(m, r->map_bytes);
}

/* ---- The fixture: one variant per ioctl ---- */

FIXTURE(abi)
{
	struct env e;
	__u64 arg[64];		/* the argument, 512 bytes */
};

FIXTURE_VARIANT(abi)
{
	const struct ioc *ioc;
};

/*
 * One variant per ioctl: `first` is the size its structure was first
 * published with; the number, direction and current size come from the
 * header.
 */
#define IOC(nm, cmd, first_size)						\
	_Static_assert((first_size) <= _IOC_SIZE(cmd), #nm);			\
	static const struct ioc ioc_##nm = {					\
		.name = #nm, .nr = _IOC_NR(cmd), .dir = _IOC_DIR(cmd),		\
		.first = (first_size), .size = _IOC_SIZE(cmd),			\
		.prepare = prep_##nm, .check = check_##nm,			\
	};									\
	FIXTURE_VARIANT_ADD(abi, nm) { .ioc = &ioc_##nm }

IOC(get_version, MEMREG_IOC_GET_VERSION, 4);
IOC(register, MEMREG_IOC_REGISTER, V1_REGISTER_SIZE);
IOC(deregister, MEMREG_IOC_DEREGISTER, 16);
IOC(query, MEMREG_IOC_QUERY, 64);
IOC(stats, MEMREG_IOC_STATS, V1_STATS_SIZE);
IOC(copy, MEMREG_IOC_COPY, 48);
IOC(global_stats, MEMREG_IOC_GLOBAL_STATS, 64);
IOC(get_cache, MEMREG_IOC_GET_CACHE, 64);
IOC(set_cache, MEMREG_IOC_SET_CACHE, 64);
IOC(flush, MEMREG_IOC_FLUSH, 32);
IOC(events_setup, MEMREG_IOC_EVENTS_SETUP, 32);
IOC(events_resync, MEMREG_IOC_EVENTS_RESYNC, 24);
IOC(queue_create, MEMREG_IOC_QUEUE_CREATE, 48);
IOC(doorbell, MEMREG_IOC_DOORBELL, 8);
IOC(queue_stats, MEMREG_IOC_QUEUE_STATS, 128);
IOC(peer_attach, MEMREG_IOC_PEER_ATTACH, 24);
IOC(peer_detach, MEMREG_IOC_PEER_DETACH, 8);
IOC(peer_revoke, MEMREG_IOC_PEER_REVOKE, 0);
IOC(queue_connect, MEMREG_IOC_QUEUE_CONNECT, 32);
IOC(pool_create, MEMREG_IOC_POOL_CREATE, 56);
IOC(pool_alloc, MEMREG_IOC_POOL_ALLOC, 48);
IOC(pool_free, MEMREG_IOC_POOL_FREE, 32);
IOC(pool_stats, MEMREG_IOC_POOL_STATS, 32);
IOC(pool_destroy, MEMREG_IOC_POOL_DESTROY, 8);
IOC(revalidate, MEMREG_IOC_REVALIDATE, 16);
IOC(pool_ring, MEMREG_IOC_POOL_RING, 40);

/* Every number from 0 up to FIRST_UNUSED_NR has its variant, in order. */
static const struct ioc *const all_iocs[] = {
	&ioc_get_version, &ioc_register, &ioc_deregister, &ioc_query, &ioc_stats, &ioc_copy,
	&ioc_global_stats, &ioc_get_cache, &ioc_set_cache, &ioc_flush, &ioc_events_setup,
	&ioc_events_resync, &ioc_queue_create, &ioc_doorbell, &ioc_queue_stats,
	&ioc_peer_attach, &ioc_peer_detach, &ioc_peer_revoke, &ioc_queue_connect,
	&ioc_pool_create, &ioc_pool_alloc, &ioc_pool_free, &ioc_pool_stats, &ioc_pool_destroy,
	&ioc_revalidate, &ioc_pool_ring,
};

_Static_assert(ARRAY_SIZE(all_iocs) == FIRST_UNUSED_NR, "one per number");

FIXTURE_SETUP(abi)
{
	memset(&self->e, 0, sizeof(self->e));
	memset(self->arg, 0, sizeof(self->arg));
	self->e.fd2 = -1;
	self->e.cfg = default_cfg;
	self->e.fd = memreg_open();
	ASSERT_LE(0, self->e.fd);
	ASSERT_EQ(0, memreg_set_cache(self->e.fd, &self->e.cfg));
	self->e.buf = map_buf(BUF_PAGES * PAGE, 'a');
	ASSERT_NE(NULL, self->e.buf);
	ASSERT_GE(sizeof(self->arg), variant->ioc->size + TAIL);
}

FIXTURE_TEARDOWN(abi)
{
	if (self->e.map)
		munmap(self->e.map, self->e.map_bytes);
	if (self->e.fd2 >= 0)
		close(self->e.fd2);
	if (self->e.fd >= 0)
		close(self->e.fd);
	if (self->e.buf)
		munmap(self->e.buf, BUF_PAGES * PAGE);
}

/* The table and the test's own calls agree: the current size succeeds. */
TEST_F(abi, current_size_works)
{
	const struct ioc *ioc = variant->ioc;

	ASSERT_EQ(0, ioc->prepare(&self->e, self->arg));
	ASSERT_EQ(0, raw(self->e.fd, ioc->dir, ioc->nr, ioc->size, self->arg))
		TH_LOG("%s(%#x, %u)", dir_name(ioc->dir), ioc->nr, ioc->size);
	ioc->check(_metadata, &self->e, self->arg, true);
}

/* One byte below the first published size, and size 0: EINVAL, no effect. */
TEST_F(abi, below_first_size_is_einval)
{
	const struct ioc *ioc = variant->ioc;
	unsigned int sizes[2] = { ioc->first - 1, 0 };
	int i;

	if (!ioc->first)
		SKIP(return, "%s is _IO: it has no size", ioc->name);
	ASSERT_EQ(0, ioc->prepare(&self->e, self->arg));
	for (i = 0; i < 2; i++) {
		EXPECT_EQ(-EINVAL, raw(self->e.fd, ioc->dir, ioc->nr, sizes[i], self->arg))
			TH_LOG("%s(%#x, %u)", dir_name(ioc->dir), ioc->nr, sizes[i]);
	}
	ioc->check(_metadata, &self->e, self->arg, false);
}

/* Each of the three other directions, at the current size and at 0: ENOTTY, no effect. */
TEST_F(abi, wrong_direction_is_enotty)
{
	const struct ioc *ioc = variant->ioc;
	unsigned int sizes[2] = { ioc->size ? ioc->size : TAIL, 0 };
	unsigned int dir;
	int i;

	ASSERT_EQ(0, ioc->prepare(&self->e, self->arg));
	for (dir = 0; dir < 4; dir++) {
		if (dir == ioc->dir)
			continue;
		for (i = 0; i < 2; i++) {
			EXPECT_EQ(-ENOTTY, raw(self->e.fd, dir, ioc->nr, sizes[i], self->arg))
				TH_LOG("%s(%#x, %u)", dir_name(dir), ioc->nr, sizes[i]);
		}
	}
	ioc->check(_metadata, &self->e, self->arg, false);
}

/*
 * Eight bytes more than the current structure, all zero on input: works as
 * the current size does. A read-direction ioctl writes them as zero (an _IOR
 * reads no input: they are 0xff before the call).
 */
TEST_F(abi, larger_size_with_zero_tail_works)
{
	const struct ioc *ioc = variant->ioc;
	unsigned char *tail = (unsigned char *)self->arg + ioc->size;

	if (ioc->dir == _IOC_NONE)
		SKIP(return, "%s is _IO: it has no size", ioc->name);
	ASSERT_EQ(0, ioc->prepare(&self->e, self->arg));
	if (ioc->dir == _IOC_READ)
		memset(self->arg, 0xff, ioc->size + TAIL);
	ASSERT_EQ(0, raw(self->e.fd, ioc->dir, ioc->nr, ioc->size + TAIL, self->arg))
		TH_LOG("%s(%#x, %u)", dir_name(ioc->dir), ioc->nr, ioc->size + TAIL);
	EXPECT_TRUE(all_bytes((char *)tail, TAIL, 0));
	ioc->check(_metadata, &self->e, self->arg, true);
}

/*
 * Eight bytes more than the current structure, not all zero, passed in by
 * an _IOW or _IOWR: E2BIG, whether the nonzero byte is the first or the last
 * of them, and the call has no effect.
 */
TEST_F(abi, larger_size_with_nonzero_tail_is_e2big)
{
	const struct ioc *ioc = variant->ioc;
	unsigned char *tail = (unsigned char *)self->arg + ioc->size;

	if (!(ioc->dir & _IOC_WRITE))
		SKIP(return, "%s passes nothing in", ioc->name);
	ASSERT_EQ(0, ioc->prepare(&self->e, self->arg));
	tail[TAIL - 1] = 1;
	EXPECT_EQ(-E2BIG, raw(self->e.fd, ioc->dir, ioc->nr, ioc->size + TAIL, self->arg))
		TH_LOG("%s(%#x, %u), last byte", dir_name(ioc->dir), ioc->nr, ioc->size + TAIL);
	tail[TAIL - 1] = 0;
	tail[0] = 0x80;
	EXPECT_EQ(-E2BIG, raw(self->e.fd, ioc->dir, ioc->nr, ioc->size + TAIL, self->arg))
		TH_LOG("%s(%#x, %u), first byte", dir_name(ioc->dir), ioc->nr, ioc->size + TAIL);
	ioc->check(_metadata, &self->e, self->arg, false);
}

/* ---- Numbers ---- */

TEST(variants_cover_every_number)
{
	unsigned int i;

	for (i = 0; i < FIRST_UNUSED_NR; i++) {
		EXPECT_EQ(i, all_iocs[i]->nr) TH_LOG("%s", all_iocs[i]->name);
		EXPECT_GE(all_iocs[i]->size, all_iocs[i]->first) TH_LOG("%s", all_iocs[i]->name);
	}
	EXPECT_EQ(_IOC_NONE, ioc_peer_revoke.dir);
	EXPECT_EQ(0, ioc_peer_revoke.size);
}

/* Numbers no ioctl has, in every direction and at several sizes: ENOTTY. */
TEST(unknown_numbers_are_enotty)
{
	static const unsigned int nrs[] = { FIRST_UNUSED_NR, 0xff };
	static const unsigned int sizes[] = { 0, 4, 8, 72, 248 };
	__u64 arg[64] = { 0 };
	struct memreg_stats s;
	unsigned int n, d, z;
	int fd = memreg_open();

	ASSERT_LE(0, fd);
	for (n = 0; n < 2; n++) {
		for (d = 0; d < 4; d++) {
			for (z = 0; z < ARRAY_SIZE(sizes); z++) {
				EXPECT_EQ(-ENOTTY, raw(fd, d, nrs[n], sizes[z], arg))
					TH_LOG("%s(%#x, %u)", dir_name(d), nrs[n], sizes[z]);
			}
		}
	}
	ASSERT_EQ(0, memreg_stats(fd, &s));
	EXPECT_EQ(0, s.registrations);
	close(fd);
}

/* Another type with memreg's numbers: ENOTTY. */
TEST(other_type_is_enotty)
{
	__u64 arg[64] = { 0 };
	int fd = memreg_open();

	ASSERT_LE(0, fd);
	EXPECT_EQ(-1, ioctl(fd, _IOR(MEMREG_IOC_MAGIC + 1, 0x00, __u32), arg));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, ioctl(fd, _IOR(MEMREG_IOC_MAGIC - 1, 0x04, struct memreg_stats), arg));
	EXPECT_EQ(ENOTTY, errno);
	close(fd);
}

/* ---- The first published sizes of REGISTER and STATS ---- */

/*
 * REGISTER with ABI v1's 56 bytes: a registration is made and its keys and
 * region come back at their v1 offsets; nothing past byte 56 is read (0xee
 * there would be a nonzero reserved word) nor written.
 */
TEST(register_at_v1_size_returns_lkey_at_v1_offset)
{
	unsigned char arg[sizeof(struct memreg_register) + TAIL];
	char *buf = map_buf(2 * PAGE, 'v');
	struct memreg_query q;
	struct memreg_stats s;
	__u32 access = RW, flags;
	__u64 v, lkey;
	int fd = memreg_open();

	ASSERT_LE(0, fd);
	ASSERT_NE(NULL, buf);
	memset(arg, 0xee, sizeof(arg));
	memset(arg, 0, V1_REGISTER_SIZE);
	v = PTR(buf);
	memcpy(arg + V1_REG_ADDR, &v, 8);
	v = 2 * PAGE;
	memcpy(arg + V1_REG_LENGTH, &v, 8);
	memcpy(arg + V1_REG_ACCESS, &access, 4);

	ASSERT_EQ(0, raw(fd, DIR_RW, _IOC_NR(MEMREG_IOC_REGISTER), V1_REGISTER_SIZE, arg));
	memcpy(&lkey, arg + V1_REG_LKEY, 8);
	EXPECT_NE(0, lkey);
	memcpy(&v, arg + V1_REG_REGION_ADDR, 8);
	EXPECT_EQ(PTR(buf), v);
	memcpy(&v, arg + V1_REG_REGION_LENGTH, 8);
	EXPECT_EQ(2 * PAGE, v);
	memcpy(&flags, arg + V1_REG_FLAGS, 4);
	EXPECT_EQ(0, flags);
	EXPECT_TRUE(all_bytes((char *)arg + V1_REGISTER_SIZE, sizeof(arg) - V1_REGISTER_SIZE,
			      0xee));

	/* The key is the registration's. */
	ASSERT_EQ(0, memreg_query(fd, lkey, &q));
	EXPECT_EQ(PTR(buf), q.addr);
	EXPECT_EQ(2 * PAGE, q.length);
	EXPECT_EQ(1, q.refcount);
	ASSERT_EQ(0, memreg_stats(fd, &s));
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(2, s.pages_pinned);
	EXPECT_EQ(0, memreg_deregister(fd, lkey));
	close(fd);
	munmap(buf, 2 * PAGE);
}

/*
 * REGISTER at a size between v1's and the current one (64 bytes): taken
 * like the v1 size, with the fields that fit written (the slot) and none
 * past them.
 */
TEST(register_at_size_between_published_sizes_fills_what_fits)
{
	unsigned char arg[sizeof(struct memreg_register) + TAIL];
	struct memreg_register *r = (struct memreg_register *)arg;
	char *buf = map_buf(PAGE, 'b');
	int fd = memreg_open();

	ASSERT_LE(0, fd);
	ASSERT_NE(NULL, buf);
	_Static_assert(offsetof(struct memreg_register, generation) == 64, "layout");
	memset(arg, 0xee, sizeof(arg));
	memset(arg, 0, 64);
	r->addr = PTR(buf);
	r->length = PAGE;
	r->access = RW;
	ASSERT_EQ(0, raw(fd, DIR_RW, _IOC_NR(MEMREG_IOC_REGISTER), 64, arg));
	EXPECT_NE(0, r->lkey);
	EXPECT_EQ(PTR(buf), r->region_addr);
	EXPECT_EQ(MEMREG_NO_SLOT, r->slot);
	EXPECT_EQ(0, r->reserved);
	EXPECT_TRUE(all_bytes((char *)arg + 64, sizeof(arg) - 64, 0xee));
	close(fd);
	munmap(buf, PAGE);
}

/*
 * STATS with ABI v1's 144 bytes: those bytes are what the current size
 * gives in its first 144, and the bytes past them in a larger buffer are
 * left as they were.
 */
TEST(stats_at_v1_size_fills_only_v1_bytes)
{
	unsigned char arg[sizeof(struct memreg_stats) + TAIL];
	struct memreg_register r;
	struct memreg_stats s;
	char *buf = map_buf(4 * PAGE, 's');
	__u64 v;
	int fd = memreg_open();

	ASSERT_LE(0, fd);
	ASSERT_NE(NULL, buf);
	/* No idle eviction: the counters hold still between the two calls. */
	ASSERT_EQ(0, memreg_set_cache(fd, &default_cfg));
	ASSERT_EQ(0, memreg_register(fd, buf, 3 * PAGE, RW, &r));
	memset(arg, 0xee, sizeof(arg));
	ASSERT_EQ(0, raw(fd, _IOC_READ, _IOC_NR(MEMREG_IOC_STATS), V1_STATS_SIZE, arg));
	ASSERT_EQ(0, memreg_stats(fd, &s));
	EXPECT_EQ(0, memcmp(arg, &s, V1_STATS_SIZE));
	memcpy(&v, arg + offsetof(struct memreg_stats, registrations), 8);
	EXPECT_EQ(1, v);
	memcpy(&v, arg + offsetof(struct memreg_stats, pages_pinned), 8);
	EXPECT_EQ(3, v);
	EXPECT_TRUE(all_bytes((char *)arg + V1_STATS_SIZE, sizeof(arg) - V1_STATS_SIZE, 0xee));
	close(fd);
	munmap(buf, 4 * PAGE);
}

/* ---- The largest size a command can encode ---- */

/*
 * REGISTER with a 16383-byte argument: all zero past the structure, it
 * works; one nonzero byte at its very end is E2BIG and registers nothing.
 */
TEST(register_at_largest_encodable_size)
{
	const unsigned int size = _IOC_SIZEMASK;
	unsigned char *arg = calloc(1, size);
	struct memreg_register *r = (struct memreg_register *)arg;
	char *buf = map_buf(2 * PAGE, 'l');
	struct memreg_stats s;
	int fd = memreg_open();

	ASSERT_LE(0, fd);
	ASSERT_NE(NULL, arg);
	ASSERT_NE(NULL, buf);
	r->addr = PTR(buf);
	r->length = PAGE;
	r->access = RW;
	ASSERT_EQ(0, raw(fd, DIR_RW, _IOC_NR(MEMREG_IOC_REGISTER), size, arg));
	EXPECT_NE(0, r->lkey);
	EXPECT_TRUE(all_bytes((char *)arg + sizeof(*r), size - sizeof(*r), 0));

	memset(arg, 0, size);
	r->addr = PTR(buf + PAGE);
	r->length = PAGE;
	r->access = RW;
	arg[size - 1] = 1;
	EXPECT_EQ(-E2BIG, raw(fd, DIR_RW, _IOC_NR(MEMREG_IOC_REGISTER), size, arg));
	ASSERT_EQ(0, memreg_stats(fd, &s));
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(1, s.pages_pinned);
	close(fd);
	free(arg);
	munmap(buf, 2 * PAGE);
}

TEST_HARNESS_MAIN
