// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: a pool's free-buffer rings (see "Free-buffer rings" in
 * Documentation/userspace-api/memreg/pools.rst and struct memreg_pool_ring
 * in include/uapi/linux/memreg.h).
 *
 * - POOL_RING and the rings' mmap refuse every bad input with the
 *   documented errno: no such pool, a reserved field, a bad pointer; a
 *   mapping before POOL_RING, of the wrong length, private, executable, or
 *   a second one;
 * - once the pool and its rings are both mapped (in either order), the
 *   pool's work lends every free buffer to its class's ring: POOL_RING's
 *   `lent` reaches the initial size, POOL_STATS' `free` and `allocated`
 *   count none, the limit is the boundary;
 * - libmemreg's ALLOC and FREE pop and push without the kernel seeing them
 *   (POOL_STATS does not move); each buffer popped has a key and offset
 *   that COPY moves its own bytes through;
 * - an empty ring sends ALLOC to the ioctl, which grows the class inline
 *   and lends the new buffers (or, for a caller that does not wait, starts
 *   a growth: buffers popped and held are not free); mixing the ring and
 *   the ioctls is accounted;
 * - garbage on a ring (an index pushed twice, one out of range, a cycle,
 *   one never lent) is rejected by the next drain, which an ioctl ALLOC
 *   forces; the pool goes on and never hands out a buffer twice;
 * - four threads popping and pushing through libmemreg never hold a
 *   buffer at the same time;
 * - a child of fork does not have the rings: touching them faults, and
 *   POOL_RING is the owner's (EPERM).
 *
 * Lending is done by the pool's work, after the call or mapping that asks
 * for it: tests wait for `lent` with rg_wait_lent(). Run as root, with no
 * other memreg file open.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "memreg_pool_util.h"

#include "../kselftest_harness.h"

#define K4		4096U
#define WAIT_MS		5000	/* how long lending or a boundary is waited for */
#define ALLOC_MS	2000	/* ALLOC's timeout where growth may be needed */
#define MAX_BUFS	64	/* buffers of the tests' 4 KiB classes */

/* ---- Pools, through the ioctls ---- */

/* POOL_RING of the pool into p->rc; the number of classes or -errno. */
static int rg_info(struct pl *p)
{
	struct memreg_pool_ring r = { .pool = p->pool, .count = MEMREG_POOL_MAX_CLASSES,
				      .classes = PTR(p->rc) };

	if (ioctl(p->fd, MEMREG_IOC_POOL_RING, &r))
		return -errno;
	p->ring_bytes = r.map_bytes;
	return (int)r.count;
}

/* POOL_RING, then the rings' mapping; 0 or -errno. */
static int rg_map(struct pl *p)
{
	void *m;
	int n = rg_info(p);

	if (n < 0)
		return n;
	m = mmap(NULL, p->ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd,
		 MEMREG_MMAP_POOL_RING(p->pool));
	if (m == MAP_FAILED)
		return -errno;
	p->ring = m;
	return 0;
}

/* A pool created, mapped, and its rings mapped. */
static int pl_open(struct pl *p, const struct memreg_pool_class *c, __u32 nr)
{
	int ret = pl_setup(p, c, nr, RW, 1000, 0, true);

	if (!ret)
		ret = rg_map(p);
	return ret;
}

/* POOL_STATS of class `c` of pool `pool` on `fd`; all ones on error. */
static struct memreg_pool_stats stats_of(int fd, __u32 pool, __u32 c)
{
	struct memreg_pool_stats all[MEMREG_POOL_MAX_CLASSES];
	struct memreg_pool_info in = { .pool = pool, .count = MEMREG_POOL_MAX_CLASSES,
				       .stats = PTR(all) };

	memset(all, 0xff, sizeof(all));
	if (ioctl(fd, MEMREG_IOC_POOL_STATS, &in) || c >= in.count)
		memset(&all[0], 0xff, sizeof(all[0]));
	else
		all[0] = all[c];
	return all[0];
}

/* POOL_RING's counters of class `c` of pool `pool` on `fd`; all ones on error. */
static struct memreg_pool_ring_class ring_of(int fd, __u32 pool, __u32 c)
{
	struct memreg_pool_ring_class all[MEMREG_POOL_MAX_CLASSES];
	struct memreg_pool_ring r = { .pool = pool, .count = MEMREG_POOL_MAX_CLASSES,
				      .classes = PTR(all) };

	if (ioctl(fd, MEMREG_IOC_POOL_RING, &r) || c >= r.count)
		memset(&all[0], 0xff, sizeof(all[0]));
	else
		all[0] = all[c];
	return all[0];
}

#define STAT(p, c, field)	(stats_of((p)->fd, (p)->pool, (c)).field)
#define LENT(p, c)		(ring_of((p)->fd, (p)->pool, (c)).lent)
/* The same for the library's pool. */
#define LIB_STAT(lp, c, field)	(stats_of((lp)->fd, (lp)->id, (c)).field)
#define LIB_LENT(lp, c)		(ring_of((lp)->fd, (lp)->id, (c)).lent)

/* Waits up to `ms` for class `c`'s `lent` to be `want`; 0 or -ETIMEDOUT. */
static int wait_lent(int fd, __u32 pool, __u32 c, __u64 want, int ms)
{
	__u64 deadline = mrq_now_us() + (__u64)ms * 1000, lent = 0;

	do {
		lent = ring_of(fd, pool, c).lent;
		if (lent == want)
			return 0;
		usleep(5000);
	} while (mrq_now_us() < deadline);
	fprintf(stderr, "pool %u class %u: lent %llu, want %llu\n", pool, c,
		(unsigned long long)lent, (unsigned long long)want);
	return -ETIMEDOUT;
}

#define rg_wait_lent(p, c, want)	wait_lent((p)->fd, (p)->pool, (c), (want), WAIT_MS)

/* Waits up to WAIT_MS for class `c`'s boundary to be `want`; 0 or -ETIMEDOUT. */
static int wait_boundary(struct pl *p, __u32 c, __u64 want)
{
	int i;

	for (i = 0; i < WAIT_MS / 5; i++) {
		if (STAT(p, c, boundary) == want)
			return 0;
		usleep(5000);
	}
	return -ETIMEDOUT;
}

/*
 * Every buffer below the boundary is the kernel's free, allocated by the
 * ioctl, or lent (read twice apart, so given up to 1 s for the pool's work
 * to finish what it was doing).
 */
static bool accounted(int fd, __u32 pool, __u32 c)
{
	struct memreg_pool_stats st;
	__u64 lent = 0;
	int i;

	for (i = 0; i < 200; i++) {
		st = stats_of(fd, pool, c);
		lent = ring_of(fd, pool, c).lent;
		if (st.boundary == st.free + st.allocated + lent)
			return true;
		usleep(5000);
	}
	fprintf(stderr, "pool %u class %u: boundary %llu, free %llu + allocated %llu + lent %llu\n",
		pool, c, (unsigned long long)st.boundary, (unsigned long long)st.free,
		(unsigned long long)st.allocated, (unsigned long long)lent);
	return false;
}

/* ---- A ring, by the protocol of the header ---- */

static struct memreg_pool_ring_head *rg_head(struct pl *p, __u32 c)
{
	return (struct memreg_pool_ring_head *)(p->ring + p->rc[c].head_offset);
}

static __u32 *rg_next(struct pl *p, __u32 c)
{
	return (__u32 *)(p->ring + p->rc[c].next_offset);
}

static struct memreg_pool_ring_chunk *rg_chunks(struct pl *p, __u32 c)
{
	return (struct memreg_pool_ring_chunk *)(p->ring + p->rc[c].chunks_offset);
}

static __u64 rg_top(struct pl *p, __u32 c)
{
	return __atomic_load_n(&rg_head(p, c)->top, __ATOMIC_ACQUIRE);
}

/* Swaps the top for one naming `idx` (the tag moved on); false if it changed. */
static bool rg_set_top(struct pl *p, __u32 c, __u64 old, __u32 idx)
{
	return __atomic_compare_exchange_n(&rg_head(p, c)->top, &old,
					   MEMREG_POOL_RING_TOP(MEMREG_POOL_RING_TAG(old) + 1, idx),
					   false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* Pops an index off class `c`'s ring (no limit check); -1 when empty. */
static long rg_pop(struct pl *p, __u32 c)
{
	__u64 top;
	__u32 idx, nxt;

	do {
		top = rg_top(p, c);
		idx = MEMREG_POOL_RING_INDEX(top);
		if (idx == MEMREG_POOL_RING_EMPTY || idx >= p->cl[c].max_buffers)
			return -1;
		nxt = __atomic_load_n(&rg_next(p, c)[idx], __ATOMIC_RELAXED);
	} while (!rg_set_top(p, c, top, nxt));
	return idx;
}

/* Pushes `idx` onto class `c`'s ring; `next` is what its next[] says (normally the top). */
static void rg_push_with_next(struct pl *p, __u32 c, __u32 idx, bool own_next, __u32 next)
{
	__u64 top;

	do {
		top = rg_top(p, c);
		if (idx < p->cl[c].max_buffers)
			__atomic_store_n(&rg_next(p, c)[idx],
					 own_next ? next : MEMREG_POOL_RING_INDEX(top),
					 __ATOMIC_RELAXED);
	} while (!rg_set_top(p, c, top, idx));
}

static void rg_push(struct pl *p, __u32 c, __u32 idx)
{
	rg_push_with_next(p, c, idx, false, 0);
}

/* The indexes on class `c`'s ring, walking at most max_buffers links. */
static __u32 rg_count(struct pl *p, __u32 c)
{
	__u32 idx = MEMREG_POOL_RING_INDEX(rg_top(p, c)), n = 0;

	while (idx < p->cl[c].max_buffers && n < p->cl[c].max_buffers) {
		n++;
		idx = __atomic_load_n(&rg_next(p, c)[idx], __ATOMIC_RELAXED);
	}
	return n;
}

/* The address of buffer `i` of class `c`, and the index of an address. */
static char *baddr(const struct pl *p, __u32 c, size_t i)
{
	return p->map + p->cl[c].offset + i * p->cl[c].buffer_size;
}

static long bidx(const char *map, const struct memreg_pool_class *cls, __u64 addr)
{
	return (long)((addr - PTR(map) - cls->offset) / cls->buffer_size);
}

/* ---- Faults ---- */

static sigjmp_buf probe_jb;

static void on_probe_fault(int sig)
{
	siglongjmp(probe_jb, sig);
}

/* Whether reading the byte at `addr` raises SIGSEGV or SIGBUS. */
static bool faults(const void *addr)
{
	struct sigaction sa = { .sa_handler = on_probe_fault }, old_segv, old_bus;
	volatile const char *c = addr;
	bool ret;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old_segv);
	sigaction(SIGBUS, &sa, &old_bus);
	if (sigsetjmp(probe_jb, 1) == 0) {
		(void)*c;
		ret = false;
	} else {
		ret = true;
	}
	sigaction(SIGSEGV, &old_segv, NULL);
	sigaction(SIGBUS, &old_bus, NULL);
	return ret;
}

/* The address of this process's mapping of /dev/memreg at mmap offset `off`, or NULL. */
static void *mapping_at_offset(__u64 off)
{
	unsigned long start, end, pgoff;
	char line[512], perms[8];
	void *found = NULL;
	FILE *f = fopen("/proc/self/maps", "r");

	if (!f)
		return NULL;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx %7s %lx", &start, &end, perms, &pgoff) == 4 &&
		    pgoff == off && strstr(line, "memreg")) {
			found = (void *)start;
			break;
		}
	}
	fclose(f);
	return found;
}

/* ---- The library's pool ---- */

static int lib_pool(int *fd, struct memreg_pool *pool, const struct memreg_pool_class *c,
		    __u32 nr)
{
	struct memreg_pool_params params = { .access = RW, .leak_timeout_ms = 1000 };
	int ret;

	*fd = memreg_open();
	if (*fd < 0)
		return *fd;
	ret = mr_set_parking(*fd, 0);
	if (!ret)
		ret = memreg_pool_init(*fd, c, nr, &params, pool);
	if (!ret)
		ret = memreg_pool_ring_init(pool);
	return ret;
}

/* ---- Bad input ---- */

TEST(ring_refuses_bad_input)
{
	struct memreg_pool_class c[2] = { cl(256, 512, 0, 0, 256), cl(K4, MAX_BUFS, 0, 0, 16) };
	struct memreg_pool_create pc = { .nr_classes = 1, .access = RW, .leak_timeout_ms = 1000 };
	struct memreg_pool_ring_class rc[2];
	struct memreg_pool_ring r;
	struct memreg_pool lp;
	struct pl p, q;
	void *m;
	int i;

	ASSERT_EQ(0, pl_setup(&p, c, 2, RW, 1000, 0, false));
	ASSERT_EQ(0, pl_map(&p));

	/* Before POOL_RING the rings cannot be mapped, whatever the length. */
	for (i = 1; i <= 4; i++) {
		m = mmap(NULL, i * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, p.fd,
			 MEMREG_MMAP_POOL_RING(p.pool));
		EXPECT_EQ(MAP_FAILED, m) TH_LOG("%d pages", i);
		EXPECT_EQ(EINVAL, errno);
	}

	/* No such pool: never created, past the limit. */
	for (i = 0; i < 3; i++) {
		__u32 bad[3] = { 5, MEMREG_MAX_POOLS, ~0U };

		r = (struct memreg_pool_ring){ .pool = bad[i], .count = 2, .classes = PTR(rc) };
		EXPECT_EQ(-1, ioctl(p.fd, MEMREG_IOC_POOL_RING, &r)) TH_LOG("pool %u", bad[i]);
		EXPECT_EQ(EINVAL, errno);
	}
	/* Reserved words. */
	for (i = 0; i < 2; i++) {
		r = (struct memreg_pool_ring){ .pool = p.pool, .count = 2, .classes = PTR(rc) };
		r.reserved[i] = 1;
		EXPECT_EQ(-1, ioctl(p.fd, MEMREG_IOC_POOL_RING, &r)) TH_LOG("reserved[%d]", i);
		EXPECT_EQ(EINVAL, errno);
	}
	/* Bad pointers: the classes, the argument. */
	r = (struct memreg_pool_ring){ .pool = p.pool, .count = 2, .classes = 8 };
	EXPECT_EQ(-1, ioctl(p.fd, MEMREG_IOC_POOL_RING, &r));
	EXPECT_EQ(EFAULT, errno);
	/* (That call created the rings all the same: they are not mapped.) */
	EXPECT_EQ(-1, ioctl(p.fd, MEMREG_IOC_POOL_RING, NULL));
	EXPECT_EQ(EFAULT, errno);

	/* Room for none: the number of classes and the length, nothing written. */
	memset(rc, 0xaa, sizeof(rc));
	r = (struct memreg_pool_ring){ .pool = p.pool, .count = 0, .classes = PTR(rc) };
	ASSERT_EQ(0, ioctl(p.fd, MEMREG_IOC_POOL_RING, &r));
	EXPECT_EQ(2, r.count);
	EXPECT_NE(0, r.map_bytes);
	EXPECT_TRUE(all_bytes((char *)rc, sizeof(rc), 0xaa));
	/* Room for one: one written. */
	r = (struct memreg_pool_ring){ .pool = p.pool, .count = 1, .classes = PTR(rc) };
	ASSERT_EQ(0, ioctl(p.fd, MEMREG_IOC_POOL_RING, &r));
	EXPECT_EQ(2, r.count);
	EXPECT_EQ(512 / p.cl[0].chunk_buffers, rc[0].nr_chunks);
	EXPECT_TRUE(all_bytes((char *)&rc[1], sizeof(rc[1]), 0xaa));
	ASSERT_EQ(2, rg_info(&p));
	EXPECT_EQ(r.map_bytes, p.ring_bytes);
	EXPECT_EQ(0, p.ring_bytes % PAGE);
	/* The layout lies in the mapping, one class after the other. */
	for (i = 0; i < 2; i++) {
		EXPECT_EQ(p.cl[i].max_buffers / p.cl[i].chunk_buffers, p.rc[i].nr_chunks);
		EXPECT_EQ(0, p.rc[i].head_offset % 8);
		EXPECT_EQ(0, p.rc[i].next_offset % 4);
		EXPECT_EQ(0, p.rc[i].chunks_offset % 8);
		EXPECT_LE(p.rc[i].head_offset + sizeof(struct memreg_pool_ring_head), p.ring_bytes);
		EXPECT_LE(p.rc[i].next_offset + 4ULL * p.cl[i].max_buffers, p.ring_bytes);
		EXPECT_LE(p.rc[i].chunks_offset + 16ULL * p.rc[i].nr_chunks, p.ring_bytes);
		EXPECT_EQ(0, p.rc[i].reserved0);
	}

	/* A wrong length, shorter or longer; private; executable; another pool's offset. */
	if (p.ring_bytes > PAGE) {
		m = mmap(NULL, p.ring_bytes - PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, p.fd,
			 MEMREG_MMAP_POOL_RING(p.pool));
		EXPECT_EQ(MAP_FAILED, m);
		EXPECT_EQ(EINVAL, errno);
	}
	m = mmap(NULL, p.ring_bytes + PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, p.fd,
		 MEMREG_MMAP_POOL_RING(p.pool));
	EXPECT_EQ(MAP_FAILED, m);
	EXPECT_EQ(EINVAL, errno);
	m = mmap(NULL, p.ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, p.fd,
		 MEMREG_MMAP_POOL_RING(p.pool));
	EXPECT_EQ(MAP_FAILED, m);
	EXPECT_EQ(EINVAL, errno);
	m = mmap(NULL, p.ring_bytes, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_SHARED, p.fd,
		 MEMREG_MMAP_POOL_RING(p.pool));
	EXPECT_EQ(MAP_FAILED, m);
	EXPECT_EQ(EINVAL, errno);
	m = mmap(NULL, p.ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, p.fd,
		 MEMREG_MMAP_POOL_RING(p.pool + 1));
	EXPECT_EQ(MAP_FAILED, m);
	EXPECT_EQ(EINVAL, errno);
	/* Nothing was lent meanwhile: the rings are not mapped. */
	EXPECT_EQ(0, LENT(&p, 0));

	/* Once, and once only. */
	m = mmap(NULL, p.ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, p.fd,
		 MEMREG_MMAP_POOL_RING(p.pool));
	ASSERT_NE(MAP_FAILED, m);
	p.ring = m;
	m = mmap(NULL, p.ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, p.fd,
		 MEMREG_MMAP_POOL_RING(p.pool));
	EXPECT_EQ(MAP_FAILED, m);
	EXPECT_EQ(EBUSY, errno);
	/* POOL_RING again describes the same rings. */
	memcpy(rc, p.rc, sizeof(rc));
	ASSERT_EQ(2, rg_info(&p));
	EXPECT_EQ(0, memcmp(rc, p.rc, offsetof(struct memreg_pool_ring_class, lent)));

	/* The library's init on a pool whose rings are taken: EBUSY from the mmap. */
	memset(&lp, 0, sizeof(lp));
	lp.fd = p.fd;
	lp.id = p.pool;
	lp.map = p.map;
	lp.map_bytes = p.bytes;
	lp.nr_classes = 2;
	memcpy(lp.classes, p.cl, sizeof(c));
	EXPECT_EQ(-EBUSY, memreg_pool_ring_init(&lp));
	EXPECT_EQ(NULL, lp.rings);

	/* A second pool of the file has its own rings. */
	q = p;
	q.ring = NULL;
	q.map = NULL;
	q.nr = 1;
	q.cl[0] = cl(K4, MAX_BUFS, 0, 0, 16);
	pc.classes = PTR(q.cl);
	ASSERT_EQ(0, ioctl(p.fd, MEMREG_IOC_POOL_CREATE, &pc));
	q.pool = pc.pool;
	EXPECT_EQ(1, rg_info(&q));
	m = mmap(NULL, q.ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, p.fd,
		 MEMREG_MMAP_POOL_RING(q.pool));
	ASSERT_NE(MAP_FAILED, m);
	munmap(m, q.ring_bytes);
	pl_close(&p);
}

/* The library refuses what it can tell is wrong. */
TEST(library_ring_init_needs_a_mapped_pool)
{
	struct memreg_pool_class c = cl(K4, MAX_BUFS, 0, 0, 16);
	struct memreg_pool pool;
	__u32 id;
	int fd;

	memset(&pool, 0, sizeof(pool));
	pool.fd = -1;
	EXPECT_EQ(-EINVAL, memreg_pool_ring_init(&pool));
	ASSERT_EQ(0, lib_pool(&fd, &pool, &c, 1));
	EXPECT_NE(NULL, pool.rings);
	EXPECT_EQ(-EBUSY, memreg_pool_ring_init(&pool));
	/* The library's mapping is where the header says, and goes with the pool. */
	id = pool.id;
	EXPECT_NE(NULL, mapping_at_offset(MEMREG_MMAP_POOL_RING(id)));
	memreg_pool_exit(&pool);
	EXPECT_EQ(NULL, pool.rings);
	EXPECT_EQ(NULL, mapping_at_offset(MEMREG_MMAP_POOL_RING(id)));
	close(fd);
}

/* ---- Lending ---- */

FIXTURE(lend)
{
	struct pl p;
};

FIXTURE_VARIANT(lend)
{
	bool rings_first;	/* the rings mapped before the pool */
};

FIXTURE_VARIANT_ADD(lend, pool_first) { .rings_first = false };
FIXTURE_VARIANT_ADD(lend, rings_first) { .rings_first = true };

FIXTURE_SETUP(lend)
{
	struct memreg_pool_class c = cl(K4, MAX_BUFS, 0, 0, 32);

	ASSERT_EQ(0, pl_setup(&self->p, &c, 1, RW, 1000, 0, false));
	if (variant->rings_first) {
		ASSERT_EQ(0, rg_map(&self->p));
		/* Nothing to lend while the pool is not mapped. */
		usleep(100000);
		EXPECT_EQ(0, LENT(&self->p, 0));
		EXPECT_EQ(MEMREG_POOL_RING_EMPTY, MEMREG_POOL_RING_INDEX(rg_top(&self->p, 0)));
		EXPECT_EQ(0, rg_head(&self->p, 0)->limit);
		ASSERT_EQ(0, pl_map(&self->p));
	} else {
		ASSERT_EQ(0, pl_map(&self->p));
		ASSERT_EQ(0, wait_boundary(&self->p, 0, 32));
		ASSERT_EQ(1, rg_info(&self->p));
		/* POOL_RING alone lends nothing: the rings are not mapped. */
		usleep(100000);
		EXPECT_EQ(0, LENT(&self->p, 0));
		EXPECT_EQ(32, STAT(&self->p, 0, free));
	}
}

FIXTURE_TEARDOWN(lend)
{
	pl_close(&self->p);
}

TEST_F(lend, every_free_buffer_is_lent_once_both_are_mapped)
{
	struct pl *p = &self->p;
	struct memreg_pool_stats st;
	unsigned char seen[MAX_BUFS] = { 0 };
	__u32 i, idx;
	__u64 top;

	if (!p->ring)
		ASSERT_EQ(0, rg_map(p));
	ASSERT_EQ(0, rg_wait_lent(p, 0, 32));
	st = stats_of(p->fd, p->pool, 0);
	EXPECT_EQ(32, st.boundary);
	EXPECT_EQ(0, st.free);
	EXPECT_EQ(0, st.allocated);
	EXPECT_EQ(0, st.waits);
	EXPECT_EQ(32, rg_head(p, 0)->limit);
	/* The chunks below the boundary carry a key, those above none. */
	for (i = 0; i < p->rc[0].nr_chunks; i++) {
		if (i < 32 / p->cl[0].chunk_buffers) {
			EXPECT_NE(0, rg_chunks(p, 0)[i].key) TH_LOG("chunk %u", i);
		} else {
			EXPECT_EQ(0, rg_chunks(p, 0)[i].key) TH_LOG("chunk %u", i);
		}
	}
	/* The ring holds each buffer below the boundary once. */
	top = rg_top(p, 0);
	idx = MEMREG_POOL_RING_INDEX(top);
	for (i = 0; i < 32 && idx != MEMREG_POOL_RING_EMPTY; i++) {
		ASSERT_LT(idx, 32);
		EXPECT_EQ(0, seen[idx]++);
		idx = rg_next(p, 0)[idx];
	}
	EXPECT_EQ(32, i);
	EXPECT_EQ(MEMREG_POOL_RING_EMPTY, idx);
	EXPECT_TRUE(accounted(p->fd, p->pool, 0));
	/* The ring's counters start clean. */
	EXPECT_EQ(0, ring_of(p->fd, p->pool, 0).stale);
	EXPECT_EQ(0, ring_of(p->fd, p->pool, 0).rejected);
}

/* ---- Through the library ---- */

FIXTURE(lib)
{
	int fd;
	struct memreg_pool pool;
};

FIXTURE_SETUP(lib)
{
	/* 256 B: one chunk of 256 at first; 4 KiB: 32 of 64. Nothing grows by itself. */
	struct memreg_pool_class c[2] = { cl(256, 512, 0, 0, 256), cl(K4, MAX_BUFS, 0, 0, 32) };

	self->fd = -1;
	ASSERT_EQ(0, lib_pool(&self->fd, &self->pool, c, 2));
	ASSERT_EQ(0, wait_lent(self->fd, self->pool.id, 0, 256, WAIT_MS));
	ASSERT_EQ(0, wait_lent(self->fd, self->pool.id, 1, 32, WAIT_MS));
}

FIXTURE_TEARDOWN(lib)
{
	memreg_pool_exit(&self->pool);
	if (self->fd >= 0)
		close(self->fd);
}

/* ALLOC and FREE from the ring: the kernel's counters do not move. */
TEST_F(lib, pop_and_push_leave_pool_stats_alone)
{
	struct memreg_pool_stats before[2], after[2];
	struct memreg_pool_buf b[48], batch[8];
	void *addrs[8];
	int i;

	ASSERT_EQ(2, memreg_pool_stats(&self->pool, before, 2));
	for (i = 0; i < 16; i++) {
		ASSERT_EQ(0, memreg_pool_alloc(&self->pool, 100 + i, 0, 0, &b[i]));
		EXPECT_EQ(0, b[i].class);
		EXPECT_EQ(256, b[i].size);
	}
	for (i = 16; i < 48; i++) {
		ASSERT_EQ(0, memreg_pool_alloc(&self->pool, K4, MEMREG_POOL_NO_FALLBACK, 0, &b[i]));
		EXPECT_EQ(1, b[i].class);
	}
	ASSERT_EQ(2, memreg_pool_stats(&self->pool, after, 2));
	for (i = 0; i < 2; i++) {
		EXPECT_EQ(0, after[i].allocated) TH_LOG("class %d", i);
		EXPECT_EQ(0, after[i].waits) TH_LOG("class %d", i);
		EXPECT_EQ(before[i].free, after[i].free) TH_LOG("class %d", i);
		EXPECT_EQ(before[i].boundary, after[i].boundary) TH_LOG("class %d", i);
		EXPECT_EQ(before[i].grows, after[i].grows) TH_LOG("class %d", i);
		EXPECT_EQ(before[i].fallbacks, after[i].fallbacks) TH_LOG("class %d", i);
	}
	/* Popped, not seen back: still lent. */
	EXPECT_EQ(256, LIB_LENT(&self->pool, 0));
	EXPECT_EQ(32, LIB_LENT(&self->pool, 1));
	/* A batch too, then everything back. */
	ASSERT_EQ(8, memreg_pool_alloc_batch(&self->pool, 200, 0, 0, batch, 8));
	for (i = 0; i < 8; i++)
		addrs[i] = (void *)(unsigned long)batch[i].addr;
	EXPECT_EQ(0, memreg_pool_free_batch(&self->pool, addrs, 8));
	EXPECT_EQ(0, LIB_STAT(&self->pool, 0, allocated));
	for (i = 0; i < 48; i++)
		EXPECT_EQ(0, memreg_pool_free(&self->pool, (void *)(unsigned long)b[i].addr));
	ASSERT_EQ(2, memreg_pool_stats(&self->pool, after, 2));
	for (i = 0; i < 2; i++) {
		EXPECT_EQ(0, after[i].allocated);
		EXPECT_EQ(0, after[i].waits);
		EXPECT_EQ(before[i].free, after[i].free);
	}
}

/* Every buffer popped carries the key and offset of its own bytes. */
TEST_F(lib, popped_keys_and_offsets_reach_the_buffer)
{
	static struct memreg_pool_buf b[256 + 32];
	unsigned char seen[512] = { 0 };
	char tmp[64], want[64];
	int n = 0, i, k;

	/* Both classes emptied through the ring. */
	for (k = 0; k < 2; k++) {
		int count = k ? 32 : 256;

		for (i = 0; i < count; i++, n++)
			ASSERT_EQ(0, memreg_pool_alloc(&self->pool, k ? K4 : 256,
						       MEMREG_POOL_NO_FALLBACK, 0, &b[n]))
				TH_LOG("class %d, buffer %d", k, i);
	}
	EXPECT_EQ(0, LIB_STAT(&self->pool, 0, allocated));
	EXPECT_EQ(0, LIB_STAT(&self->pool, 1, allocated));
	for (i = 0; i < n; i++) {
		const struct memreg_pool_class *c = &self->pool.classes[b[i].class];
		char *addr = (char *)(unsigned long)b[i].addr;
		long idx = bidx(self->pool.map, c, b[i].addr);

		ASSERT_LT(b[i].class, 2);
		ASSERT_GE(idx, 0);
		ASSERT_LT(idx, (long)c->max_buffers);
		EXPECT_EQ(0, (b[i].addr - PTR(self->pool.map) - c->offset) % c->buffer_size);
		if (b[i].class == 0) {
			EXPECT_EQ(0, seen[idx]++) TH_LOG("buffer %ld twice", idx);
		}
		EXPECT_NE(0, b[i].key);
		/* Write through the address, read through the key... */
		for (k = 0; k < 64; k++)
			want[k] = (char)(i * 7 + k);
		memcpy(addr, want, 64);
		memset(tmp, 0, sizeof(tmp));
		ASSERT_EQ(0, memreg_copy(self->fd, b[i].key, b[i].offset, tmp, 64,
					 MEMREG_COPY_FROM_REGION)) TH_LOG("buffer %d", i);
		EXPECT_EQ(0, memcmp(tmp, want, 64)) TH_LOG("buffer %d: key %#llx offset %#llx", i,
							   (unsigned long long)b[i].key,
							   (unsigned long long)b[i].offset);
		/* ...and the other way, at its last bytes. */
		memset(tmp, 'k', sizeof(tmp));
		ASSERT_EQ(0, memreg_copy(self->fd, b[i].key, b[i].offset + b[i].size - 16, tmp, 16,
					 MEMREG_COPY_TO_REGION));
		EXPECT_TRUE(all_bytes(addr + b[i].size - 16, 16, 'k')) TH_LOG("buffer %d", i);
		EXPECT_EQ(0, memcmp(addr, want, 64));
	}
	/* The bytes of the neighbours were not touched: every buffer still has its own. */
	for (i = 0; i < n; i++) {
		for (k = 0; k < 64; k++)
			want[k] = (char)(i * 7 + k);
		EXPECT_EQ(0, memcmp((char *)(unsigned long)b[i].addr, want, 64)) TH_LOG("buffer %d", i);
	}
	for (i = 0; i < n; i++)
		EXPECT_EQ(0, memreg_pool_free(&self->pool, (void *)(unsigned long)b[i].addr));
}

/*
 * A thread's cache over the rings: every buffer it hands out is the pool's,
 * once, with a key that reaches its bytes; the kernel's counters do not
 * move, and once the cache is destroyed every buffer is back on its ring.
 */
TEST_F(lib, cache_buffers_reach_their_bytes_and_go_back_to_the_ring)
{
	static struct memreg_pool_buf b[256];
	struct memreg_pool_cache *pc;
	unsigned char seen[256] = { 0 };
	char tmp[16], want[16];
	int i, k;

	EXPECT_EQ(-EINVAL, memreg_pool_cache_create(&self->pool, 0, &pc));
	EXPECT_EQ(-EINVAL, memreg_pool_cache_create(&self->pool, MEMREG_POOL_CACHE_MAX + 1, &pc));
	ASSERT_EQ(0, memreg_pool_cache_create(&self->pool, 16, &pc));
	for (i = 0; i < 256; i++) {
		const struct memreg_pool_class *c = &self->pool.classes[0];
		long idx;

		ASSERT_EQ(0, memreg_pool_cache_alloc(pc, 256, MEMREG_POOL_NO_FALLBACK, 0, &b[i]))
			TH_LOG("buffer %d", i);
		idx = bidx(self->pool.map, c, b[i].addr);
		ASSERT_EQ(0, b[i].class);
		ASSERT_GE(idx, 0);
		ASSERT_LT(idx, 256);
		EXPECT_EQ(0, seen[idx]++) TH_LOG("buffer %ld twice", idx);
		for (k = 0; k < 16; k++)
			want[k] = (char)(i * 3 + k);
		memcpy((char *)(unsigned long)b[i].addr, want, 16);
		ASSERT_EQ(0, memreg_copy(self->fd, b[i].key, b[i].offset, tmp, 16,
					 MEMREG_COPY_FROM_REGION)) TH_LOG("buffer %d", i);
		EXPECT_EQ(0, memcmp(tmp, want, 16)) TH_LOG("buffer %d", i);
	}
	EXPECT_EQ(0, LIB_STAT(&self->pool, 0, allocated));
	for (i = 0; i < 256; i++)
		EXPECT_EQ(0, memreg_pool_cache_free(pc, (void *)(unsigned long)b[i].addr));
	/* Not a buffer's start: the kernel says so. */
	EXPECT_EQ(-EINVAL, memreg_pool_cache_free(pc, (char *)self->pool.map + 1));
	memreg_pool_cache_destroy(pc);
	EXPECT_EQ(0, LIB_STAT(&self->pool, 0, allocated));
	EXPECT_EQ(256, LIB_LENT(&self->pool, 0));
	/* All 256 are on the ring again: popped without the kernel. */
	for (i = 0; i < 256; i++)
		ASSERT_EQ(0, memreg_pool_alloc(&self->pool, 256, MEMREG_POOL_NO_FALLBACK, 0, &b[i]));
	EXPECT_EQ(0, LIB_STAT(&self->pool, 0, allocated));
	for (i = 0; i < 256; i++)
		EXPECT_EQ(0, memreg_pool_free(&self->pool, (void *)(unsigned long)b[i].addr));
}

/* ---- An empty ring ---- */

/* The ring ran dry: the library's ALLOC is the ioctl's, which grows and lends. */
TEST(empty_ring_falls_back_to_the_ioctl_which_grows_and_lends)
{
	struct memreg_pool_class c = cl(K4, MAX_BUFS, 0, 0, 16);
	struct memreg_pool_buf b[MAX_BUFS], x, y;
	struct memreg_pool_stats st;
	struct memreg_pool pool;
	struct pl p;
	__u64 lent;
	int fd, i;

	ASSERT_EQ(0, lib_pool(&fd, &pool, &c, 1));
	p = (struct pl){ .fd = fd, .pool = pool.id };
	ASSERT_EQ(0, wait_lent(fd, pool.id, 0, 16, WAIT_MS));
	for (i = 0; i < 16; i++)
		ASSERT_EQ(0, memreg_pool_alloc(&pool, K4, 0, 0, &b[i]));
	EXPECT_EQ(0, STAT(&p, 0, allocated));
	EXPECT_EQ(16, STAT(&p, 0, boundary));
	/* Empty: the ioctl takes the ring back, grows the class itself, gives one, lends the rest. */
	ASSERT_EQ(0, memreg_pool_alloc(&pool, K4, 0, ALLOC_MS, &x));
	st = stats_of(fd, pool.id, 0);
	lent = LENT(&p, 0);
	EXPECT_GT(st.boundary, 16);
	EXPECT_EQ(1, st.allocated);
	EXPECT_GT(lent, 16);
	EXPECT_TRUE(accounted(fd, pool.id, 0));
	EXPECT_NE(0, x.key);
	/* Pops work again, without the kernel. */
	ASSERT_EQ(0, memreg_pool_alloc(&pool, K4, 0, 0, &y));
	EXPECT_EQ(1, STAT(&p, 0, allocated));
	EXPECT_NE(x.addr, y.addr);
	for (i = 0; i < 16; i++) {
		EXPECT_NE(b[i].addr, x.addr);
		EXPECT_NE(b[i].addr, y.addr);
	}
	/* Everything back, the ioctl's buffer onto the ring too. */
	for (i = 0; i < 16; i++)
		EXPECT_EQ(0, memreg_pool_free(&pool, (void *)(unsigned long)b[i].addr));
	EXPECT_EQ(0, memreg_pool_free(&pool, (void *)(unsigned long)y.addr));
	EXPECT_EQ(0, memreg_pool_free(&pool, (void *)(unsigned long)x.addr));
	/* The kernel learns of that one at its next drain; until then it is allocated. */
	EXPECT_EQ(1, STAT(&p, 0, allocated));
	EXPECT_TRUE(accounted(fd, pool.id, 0));
	memreg_pool_exit(&pool);
	close(fd);
}

/*
 * The ring ran dry and the caller will not wait: EAGAIN (or a buffer, if the
 * call grew the class itself), and the class grows soon after, so that an
 * ALLOC that does not wait succeeds again. Every buffer popped is held:
 * the kernel must not count them as free.
 */
TEST(empty_ring_alloc_without_waiting_starts_a_growth)
{
	struct memreg_pool_class c = cl(K4, MAX_BUFS, 0, 0, 16);
	struct memreg_pool_buf b[16], x;
	struct memreg_pool pool;
	__u64 deadline;
	int fd, i, ret;

	ASSERT_EQ(0, lib_pool(&fd, &pool, &c, 1));
	ASSERT_EQ(0, wait_lent(fd, pool.id, 0, 16, WAIT_MS));
	for (i = 0; i < 16; i++)
		ASSERT_EQ(0, memreg_pool_alloc(&pool, K4, 0, 0, &b[i]));
	deadline = mrq_now_us() + WAIT_MS * 1000ULL;
	do {
		ret = memreg_pool_alloc(&pool, K4, MEMREG_POOL_NO_FALLBACK, 0, &x);
		if (ret != -EAGAIN)
			break;
		usleep(5000);
	} while (mrq_now_us() < deadline);
	ASSERT_EQ(0, ret) TH_LOG("boundary %llu, lent %llu",
				 (unsigned long long)LIB_STAT(&pool, 0, boundary),
				 (unsigned long long)LIB_LENT(&pool, 0));
	EXPECT_GT(LIB_STAT(&pool, 0, boundary), 16);
	for (i = 0; i < 16; i++)
		EXPECT_NE(b[i].addr, x.addr);
	for (i = 0; i < 16; i++)
		EXPECT_EQ(0, memreg_pool_free(&pool, (void *)(unsigned long)b[i].addr));
	EXPECT_EQ(0, memreg_pool_free(&pool, (void *)(unsigned long)x.addr));
	memreg_pool_exit(&pool);
	close(fd);
}

/* A buffer popped goes back by the ioctl; one the ioctl gave goes onto the ring. */
TEST(mixing_the_ring_and_the_ioctls_is_accounted)
{
	struct memreg_pool_class c = cl(K4, MAX_BUFS, 0, 0, 32);
	struct memreg_pool_buf got[MAX_BUFS], b;
	struct memreg_pool_stats st;
	unsigned char seen[MAX_BUFS] = { 0 };
	long a, idx;
	struct pl p;
	int n = 0, r, i;

	ASSERT_EQ(0, pl_open(&p, &c, 1));
	ASSERT_EQ(0, rg_wait_lent(&p, 0, 32));
	/* Popped, given back by POOL_FREE: no longer lent, the kernel's free. */
	a = rg_pop(&p, 0);
	ASSERT_GE(a, 0);
	EXPECT_EQ(0, pl_free1(&p, PTR(baddr(&p, 0, a))));
	EXPECT_EQ(31, LENT(&p, 0));
	EXPECT_EQ(1, STAT(&p, 0, free));
	/* Freed twice: refused, as any double FREE. */
	EXPECT_EQ(-EINVAL, pl_free1(&p, PTR(baddr(&p, 0, a))));
	/* The kernel's own free buffer goes first, no drain. */
	ASSERT_EQ(1, pl_alloc(&p, K4, 1, 0, 0, &b));
	EXPECT_EQ(a, bidx(p.map, &p.cl[0], b.addr));
	st = stats_of(p.fd, p.pool, 0);
	EXPECT_EQ(1, st.allocated);
	EXPECT_EQ(0, st.free);
	/* Given by the ioctl, pushed onto the ring: allocated until the next drain. */
	rg_push(&p, 0, (__u32)a);
	EXPECT_EQ(1, STAT(&p, 0, allocated));
	EXPECT_EQ(32, rg_count(&p, 0));
	/* The next ALLOC finds none of its own: it drains, and sees it back. */
	ASSERT_EQ(1, pl_alloc(&p, K4, 1, 0, 0, &got[n]));
	n++;
	st = stats_of(p.fd, p.pool, 0);
	EXPECT_EQ(1, st.allocated);
	EXPECT_TRUE(accounted(p.fd, p.pool, 0));
	EXPECT_EQ(0, ring_of(p.fd, p.pool, 0).rejected);
	/* Everything else, by the ioctl: each buffer once. */
	while (n < MAX_BUFS) {
		r = pl_alloc(&p, K4, MAX_BUFS - n, 0, 200, got + n);
		if (r < 0)
			break;
		n += r;
	}
	EXPECT_EQ(MAX_BUFS, n);
	for (i = 0; i < n; i++) {
		idx = bidx(p.map, &p.cl[0], got[i].addr);
		ASSERT_GE(idx, 0);
		ASSERT_LT(idx, MAX_BUFS);
		EXPECT_EQ(0, seen[idx]++) TH_LOG("buffer %ld twice", idx);
	}
	EXPECT_EQ(0, LENT(&p, 0));
	EXPECT_EQ(MAX_BUFS, STAT(&p, 0, allocated));
	for (i = 0; i < n; i++)
		EXPECT_EQ(0, pl_free1(&p, got[i].addr));
	EXPECT_TRUE(accounted(p.fd, p.pool, 0));
	pl_close(&p);
}

/* ---- Garbage on a ring ---- */

enum garbage { PUSHED_TWICE, OUT_OF_RANGE, TOP_OUT_OF_RANGE, CYCLE, NEVER_LENT };

FIXTURE(garbage)
{
	struct pl p;
};

FIXTURE_VARIANT(garbage)
{
	enum garbage kind;
};

FIXTURE_VARIANT_ADD(garbage, index_pushed_twice) { .kind = PUSHED_TWICE };
FIXTURE_VARIANT_ADD(garbage, next_out_of_range) { .kind = OUT_OF_RANGE };
FIXTURE_VARIANT_ADD(garbage, top_out_of_range) { .kind = TOP_OUT_OF_RANGE };
FIXTURE_VARIANT_ADD(garbage, cycle_of_two) { .kind = CYCLE };
FIXTURE_VARIANT_ADD(garbage, index_never_lent) { .kind = NEVER_LENT };

FIXTURE_SETUP(garbage)
{
	struct memreg_pool_class c = cl(K4, MAX_BUFS, 0, 0, 32);

	ASSERT_EQ(0, pl_open(&self->p, &c, 1));
	ASSERT_EQ(0, rg_wait_lent(&self->p, 0, 32));
}

FIXTURE_TEARDOWN(garbage)
{
	pl_close(&self->p);
}

/*
 * Garbage, then every buffer taken by the ioctl (each ALLOC that finds none
 * of the kernel's own drains the ring first): the garbage is rejected, and
 * no buffer is handed out twice, nor the one the test holds.
 */
TEST_F(garbage, drain_rejects_it_and_the_pool_goes_on)
{
	struct pl *p = &self->p;
	struct memreg_pool_buf got[MAX_BUFS];
	unsigned char seen[MAX_BUFS] = { 0 };
	long held, a, b, idx;
	__u64 top, rejected;
	int n = 0, m, r, i;

	/* A buffer held through all of it, with bytes of its own. */
	held = rg_pop(p, 0);
	ASSERT_GE(held, 0);
	memset(baddr(p, 0, held), 'h', K4);

	switch (variant->kind) {
	case PUSHED_TWICE:
		a = rg_pop(p, 0);
		ASSERT_GE(a, 0);
		rg_push(p, 0, (__u32)a);
		rg_push(p, 0, (__u32)a);
		break;
	case OUT_OF_RANGE:
		a = rg_pop(p, 0);
		ASSERT_GE(a, 0);
		rg_push_with_next(p, 0, (__u32)a, true, MAX_BUFS + 5);
		break;
	case TOP_OUT_OF_RANGE:
		top = rg_top(p, 0);
		ASSERT_TRUE(rg_set_top(p, 0, top, 0x7fffffff));
		break;
	case CYCLE:
		a = rg_pop(p, 0);
		b = rg_pop(p, 0);
		ASSERT_GE(a, 0);
		ASSERT_GE(b, 0);
		__atomic_store_n(&rg_next(p, 0)[a], (__u32)b, __ATOMIC_RELAXED);
		__atomic_store_n(&rg_next(p, 0)[b], (__u32)a, __ATOMIC_RELAXED);
		top = rg_top(p, 0);
		ASSERT_TRUE(rg_set_top(p, 0, top, (__u32)a));
		break;
	case NEVER_LENT:
		/* Above the boundary: never handed out. */
		rg_push(p, 0, MAX_BUFS - 1);
		break;
	}
	EXPECT_EQ(0, ring_of(p->fd, p->pool, 0).rejected);

	/* Everything, by the ioctl, growing to the maximum. */
	while (n < MAX_BUFS) {
		r = pl_alloc(p, K4, MAX_BUFS - n, 0, 200, got + n);
		if (r < 0) {
			EXPECT_EQ(-ETIMEDOUT, r);
			break;
		}
		n += r;
	}
	rejected = ring_of(p->fd, p->pool, 0).rejected;
	EXPECT_GT(rejected, 0);
	EXPECT_GT(n, 0);
	for (i = 0; i < n; i++) {
		idx = bidx(p->map, &p->cl[0], got[i].addr);
		ASSERT_GE(idx, 0);
		ASSERT_LT(idx, MAX_BUFS);
		EXPECT_NE(held, idx);
		EXPECT_EQ(0, seen[idx]++) TH_LOG("buffer %ld twice", idx);
		EXPECT_NE(0, got[i].key);
	}
	EXPECT_EQ(MAX_BUFS, STAT(p, 0, boundary));
	EXPECT_TRUE(all_bytes(baddr(p, 0, held), K4, 'h'));
	EXPECT_TRUE(accounted(p->fd, p->pool, 0));

	/*
	 * The pool goes on: all back by the ioctl (the held one too), then all of
	 * them taken again, each once; the garbage is not looked at again.
	 */
	for (i = 0; i < n; i++)
		EXPECT_EQ(0, pl_free1(p, got[i].addr));
	EXPECT_EQ(0, pl_free1(p, PTR(baddr(p, 0, held))));
	memset(seen, 0, sizeof(seen));
	m = 0;
	while (m < MAX_BUFS) {
		r = pl_alloc(p, K4, MAX_BUFS - m, 0, 200, got + m);
		if (r < 0) {
			EXPECT_EQ(-ETIMEDOUT, r);
			break;
		}
		m += r;
	}
	EXPECT_EQ(n + 1, m);
	for (i = 0; i < m; i++) {
		idx = bidx(p->map, &p->cl[0], got[i].addr);
		ASSERT_GE(idx, 0);
		ASSERT_LT(idx, MAX_BUFS);
		EXPECT_EQ(0, seen[idx]++) TH_LOG("buffer %ld twice", idx);
	}
	EXPECT_TRUE(accounted(p->fd, p->pool, 0));
	EXPECT_EQ(rejected, ring_of(p->fd, p->pool, 0).rejected);
	for (i = 0; i < m; i++)
		EXPECT_EQ(0, pl_free1(p, got[i].addr));
}

/* ---- Threads ---- */

#define THREADS		4
#define ROUNDS		20000

struct popper {
	struct memreg_pool *pool;
	__u32 owner;
	unsigned int cache;	/* buffers per class of a cache of its own, or 0 */
	int errors;		/* an ALLOC or FREE that failed, a bad buffer */
	int twice;		/* a buffer found held by another thread */
	int rounds;
};

static int popper_alloc(struct popper *t, struct memreg_pool_cache *pc,
			struct memreg_pool_buf *b)
{
	if (pc)
		return memreg_pool_cache_alloc(pc, K4, 0, ALLOC_MS, b);
	return memreg_pool_alloc(t->pool, K4, 0, ALLOC_MS, b);
}

static void *popper_run(void *arg)
{
	struct popper *t = arg;
	struct memreg_pool_cache *pc = NULL;
	struct memreg_pool_buf b[3];
	int i, k, n;

	if (t->cache && memreg_pool_cache_create(t->pool, t->cache, &pc)) {
		t->errors++;
		return NULL;
	}
	for (i = 0; i < ROUNDS; i++) {
		/* One to three at a time: buffers change hands in every order. */
		n = 1 + (int)((i + t->owner) % (pc ? 3 : 2));
		for (k = 0; k < n; k++) {
			__u32 *tag;

			if (popper_alloc(t, pc, &b[k]) || !b[k].key) {
				t->errors++;
				break;
			}
			tag = (__u32 *)(unsigned long)b[k].addr;
			if (__atomic_exchange_n(tag, t->owner, __ATOMIC_RELAXED))
				t->twice++;
		}
		n = k;
		for (k = 0; k < n; k++) {
			__u32 *tag = (__u32 *)(unsigned long)b[k].addr;

			if (__atomic_load_n(tag, __ATOMIC_RELAXED) != t->owner)
				t->twice++;
			__atomic_store_n(tag, 0, __ATOMIC_RELAXED);
			if (pc ? memreg_pool_cache_free(pc, tag) : memreg_pool_free(t->pool, tag))
				t->errors++;
		}
		t->rounds++;
	}
	memreg_pool_cache_destroy(pc);
	return NULL;
}

FIXTURE(threads)
{
};

FIXTURE_VARIANT(threads)
{
	unsigned int cache;
};

FIXTURE_SETUP(threads)
{
}

FIXTURE_TEARDOWN(threads)
{
}

/* Each thread through the ring, or through a cache of its own over it. */
FIXTURE_VARIANT_ADD(threads, ring) { .cache = 0 };
FIXTURE_VARIANT_ADD(threads, cache_of_4) { .cache = 4 };

TEST_F(threads, never_hold_a_buffer_at_once)
{
	struct memreg_pool_class c = cl(K4, MAX_BUFS, 0, 0, 16);
	struct popper t[THREADS];
	pthread_t tid[THREADS];
	struct memreg_pool pool;
	int fd, i;

	ASSERT_EQ(0, lib_pool(&fd, &pool, &c, 1));
	ASSERT_EQ(0, wait_lent(fd, pool.id, 0, 16, WAIT_MS));
	for (i = 0; i < THREADS; i++) {
		t[i] = (struct popper){ .pool = &pool, .owner = (__u32)i + 1,
					.cache = variant->cache };
		ASSERT_EQ(0, pthread_create(&tid[i], NULL, popper_run, &t[i]));
	}
	for (i = 0; i < THREADS; i++) {
		pthread_join(tid[i], NULL);
		EXPECT_EQ(0, t[i].twice) TH_LOG("thread %d", i);
		EXPECT_EQ(0, t[i].errors) TH_LOG("thread %d", i);
		EXPECT_EQ(ROUNDS, t[i].rounds) TH_LOG("thread %d", i);
	}
	EXPECT_TRUE(accounted(fd, pool.id, 0));
	EXPECT_EQ(0, ring_of(fd, pool.id, 0).rejected);
	memreg_pool_exit(&pool);
	close(fd);
}

/* ---- fork ---- */

TEST(fork_does_not_inherit_the_rings)
{
	struct memreg_pool_class c = cl(K4, MAX_BUFS, 0, 0, 16);
	struct memreg_pool_buf b, x;
	struct memreg_pool_ring_class rc;
	struct memreg_pool pool;
	void *ring;
	pid_t pid;
	int fd;

	ASSERT_EQ(0, lib_pool(&fd, &pool, &c, 1));
	ASSERT_EQ(0, wait_lent(fd, pool.id, 0, 16, WAIT_MS));
	ring = mapping_at_offset(MEMREG_MMAP_POOL_RING(pool.id));
	ASSERT_NE(NULL, ring);
	ASSERT_EQ(0, memreg_pool_alloc(&pool, K4, 0, 0, &b));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		struct memreg_pool_ring r = { .pool = pool.id, .count = 1, .classes = PTR(&rc) };

		/* No mapping: touching the rings faults; POOL_RING is the owner's. */
		if (!faults(ring))
			_exit(1);
		if (!ioctl(fd, MEMREG_IOC_POOL_RING, &r) || errno != EPERM)
			_exit(2);
		no_core();
		/* The library's pop touches the ring: the child dies of it. */
		memreg_pool_alloc(&pool, K4, 0, 0, &x);
		_exit(3);
	}
	EXPECT_EQ(SIGSEGV, wait_signal(pid));
	/* The parent's ring goes on. */
	EXPECT_EQ(16, LIB_LENT(&pool, 0));
	ASSERT_EQ(0, memreg_pool_alloc(&pool, K4, 0, 0, &x));
	EXPECT_NE(b.addr, x.addr);
	EXPECT_EQ(0, memreg_pool_free(&pool, (void *)(unsigned long)x.addr));
	EXPECT_EQ(0, memreg_pool_free(&pool, (void *)(unsigned long)b.addr));
	EXPECT_EQ(0, LIB_STAT(&pool, 0, allocated));
	memreg_pool_exit(&pool);
	close(fd);
}

TEST_HARNESS_MAIN
