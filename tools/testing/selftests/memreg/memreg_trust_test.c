// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: what a caller can trust about keys, rights and charges.
 *
 * - DEREGISTER means what it says (parking on): the last DEREGISTER parks
 *   the registration but ends its keys for data before it returns. A COPY in
 *   progress on another thread stops at its next 16 KiB step with ENOENT
 *   and writes nothing once DEREGISTER returned; COPY calls and ring
 *   requests naming the key afterwards, as destination or source, fail with
 *   ENOENT (also those already waiting in a submission ring); QUERY still
 *   describes the parked registration and DEREGISTER of its key is EINVAL.
 * - A REGISTER of the same range and access revives it with new keys: the
 *   local key keeps its sequence (high 40 bits) and gets new random bits,
 *   the remote key is new; the old keys stay dead for COPY, QUERY,
 *   DEREGISTER and the rings, the new ones work.
 * - Rights never widen: a narrower REGISTER does not revive a parked
 *   registration with remote rights; a parked registration's remote key is
 *   dead for a peer, and stays dead after every revival; a hit with remote
 *   rights needs exactly the range asked; a local-only REGISTER never hits
 *   a registration with remote rights; REGISTER writes back in `access` the
 *   rights the returned keys carry.
 * - Charges are released only after the pages are unpinned: a second
 *   process of the same user, under the same RLIMIT_MEMLOCK, is charged for
 *   the room a munmapped registration leaves only once its pages are
 *   unpinned (the module-wide FOLL_PIN balance in /proc/vmstat says so),
 *   even while the owner's address space keeps invalidating.
 * - Idle eviction counts every ioctl of the owner: GET_VERSION,
 *   GLOBAL_STATS and even an unknown command keep parked registrations
 *   alive; silence ends them (evictions[MEMREG_EVICT_IDLE]).
 *
 * The peer is a second file of this process attached to the first with
 * PEER_ATTACH; its WRITE requests name the first file's registrations by
 * their remote keys. Buffers are private anonymous memory with
 * MADV_NOHUGEPAGE, so that no huge page split suspends a registration under
 * a test. Run as root, with no other memreg file open.
 */
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "memreg_util.h"
#include "memreg_util.h"

#include "../kselftest_harness.h"
#include "memreg_harness.h"

#define LREAD		MEMREG_ACCESS_LOCAL_READ
#define LWRITE		MEMREG_ACCESS_LOCAL_WRITE
#define RREAD		MEMREG_ACCESS_REMOTE_READ
#define RWRITE		MEMREG_ACCESS_REMOTE_WRITE

#define NOBODY		65534

#define BUF_PAGES	32	/* the fixture's buffer that tests register */
#define HELP_PAGES	4	/* the fixture's helper buffers */
#define KIB(n)		((__u64)(n) << 10)

/* The parts of a local key: a sequence number and 24 random bits. */
#define KEY_SEQ(k)	((k) >> 24)
#define KEY_RAND(k)	((k) & 0xffffffULL)

/* ---- Helpers ---- */

/* A context that parks and never evicts for idleness. */
static int open_ctx(void)
{
	struct memreg_cache_config c = { .parking = 1, .max_parked = 1024,
					 .max_parked_pages = 262144, .idle_ms = 0 };
	int fd = memreg_open();

	if (fd < 0)
		return -1;
	if (memreg_set_cache(fd, &c)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* `key` names a parked registration of `pages` pages at `addr`, `len` bytes long. */
static void expect_parked(struct __test_metadata *_metadata, int fd, __u64 key,
			  const void *addr, __u64 len, __u64 pages)
{
	struct memreg_query q;

	ASSERT_EQ(0, memreg_query(fd, key, &q));
	EXPECT_TRUE(q.state & MEMREG_STATE_PARKED) TH_LOG("state %#x", q.state);
	EXPECT_FALSE(q.state & MEMREG_STATE_SUSPENDED) TH_LOG("state %#x", q.state);
	EXPECT_EQ(0, q.refcount);
	EXPECT_EQ((__u64)(unsigned long)addr, q.addr);
	EXPECT_EQ(len, q.length);
	EXPECT_EQ(pages, q.pages);
}

/* `key` names a live registration (not parked) with `refs` references. */
static void expect_live(struct __test_metadata *_metadata, int fd, __u64 key, __u32 refs)
{
	struct memreg_query q;

	ASSERT_EQ(0, memreg_query(fd, key, &q));
	EXPECT_EQ(MEMREG_STATE_VALID, q.state);
	EXPECT_EQ(refs, q.refcount);
}

/* A REGISTER that was a miss on exactly the range asked, with the rights asked. */
static void expect_miss(struct __test_metadata *_metadata, const struct memreg_register *r,
			const void *addr, __u64 len, __u32 access)
{
	EXPECT_EQ(0, r->flags);
	EXPECT_EQ((__u64)(unsigned long)addr, r->region_addr);
	EXPECT_EQ(len, r->region_length);
	EXPECT_EQ(access, r->access);
	EXPECT_NE(0, r->lkey);
	EXPECT_NE(0, r->rkey);
	EXPECT_NE(r->lkey, r->rkey);
}

/* ---- The fixture: a context with a queue, and a peer file attached to it ---- */

FIXTURE(trust)
{
	int fd;			/* the owner's context */
	int pfd;		/* the peer's context */
	__u32 h;		/* the peer's handle of the owner */
	struct memreg_queue q;		/* the owner's queue */
	struct memreg_queue pq;		/* the peer's queue */
	char *buf;		/* BUF_PAGES, 'a', registered by the tests */
	char *src, *dst;	/* HELP_PAGES each, 's' and 'd', registered RW in fd */
	char *psrc;		/* HELP_PAGES, 'w', registered RW in pfd */
	struct memreg_register rs, rd, prs;
	struct memreg_global_stats base;
};

FIXTURE_SETUP(trust)
{
	self->fd = self->pfd = -1;
	self->buf = self->src = self->dst = self->psrc = NULL;
	memset(&self->q, 0, sizeof(self->q));
	memset(&self->pq, 0, sizeof(self->pq));
	mr_settle(&self->base);

	self->fd = open_ctx();
	ASSERT_GE(self->fd, 0);
	self->pfd = open_ctx();
	ASSERT_GE(self->pfd, 0);
	ASSERT_EQ(0, memreg_queue_init(self->fd, 16, 16, -1, &self->q));
	ASSERT_EQ(0, memreg_queue_init(self->pfd, 16, 16, -1, &self->pq));
	ASSERT_EQ(0, memreg_peer_attach(self->pfd, self->fd, &self->h));
	self->buf = map_buf(BUF_PAGES * PAGE, 'a');
	self->src = map_buf(HELP_PAGES * PAGE, 's');
	self->dst = map_buf(HELP_PAGES * PAGE, 'd');
	self->psrc = map_buf(HELP_PAGES * PAGE, 'w');
	ASSERT_NE(NULL, self->buf);
	ASSERT_NE(NULL, self->src);
	ASSERT_NE(NULL, self->dst);
	ASSERT_NE(NULL, self->psrc);
	ASSERT_EQ(0, memreg_register(self->fd, self->src, HELP_PAGES * PAGE, RW, &self->rs));
	ASSERT_EQ(0, memreg_register(self->fd, self->dst, HELP_PAGES * PAGE, RW, &self->rd));
	ASSERT_EQ(0, memreg_register(self->pfd, self->psrc, HELP_PAGES * PAGE, RW, &self->prs));
}

FIXTURE_TEARDOWN(trust)
{
	memreg_queue_exit(&self->q);
	memreg_queue_exit(&self->pq);
	if (self->pfd >= 0)
		close(self->pfd);
	if (self->fd >= 0)
		close(self->fd);
	if (self->buf)
		munmap(self->buf, BUF_PAGES * PAGE);
	if (self->src)
		munmap(self->src, HELP_PAGES * PAGE);
	if (self->dst)
		munmap(self->dst, HELP_PAGES * PAGE);
	if (self->psrc)
		munmap(self->psrc, HELP_PAGES * PAGE);
	/* Nothing outlives the two files. */
	EXPECT_EQ(0, mr_wait_global(self->base.contexts, self->base.regions,
				    self->base.pages_pinned));
}

/* The peer WRITEs `len` bytes of 'w' to the owner's (rkey, off); checks the completion. */
static void peer_write(struct __test_metadata *_metadata, FIXTURE_DATA(trust) *self, __u64 ud,
		       __u64 rkey, __u64 off, __u64 len, int status)
{
	struct memreg_sqe s = mr_sqe_write(ud, self->h, rkey, off, self->prs.lkey, 0, len);

	run_expect(_metadata, &self->pq, &s, status, status ? 0 : len);
}

/* The owner's ring COPY of `len` bytes from (src_key, 0) to (key, 0); checks the completion. */
static void ring_copy(struct __test_metadata *_metadata, FIXTURE_DATA(trust) *self, __u64 ud,
		      __u64 key, __u64 src_key, __u64 len, int status)
{
	struct memreg_sqe s = mr_sqe_copy(ud, key, 0, src_key, 0, len);

	run_expect(_metadata, &self->q, &s, status, status ? 0 : len);
}

/* ---- DEREGISTER ends the keys for data ---- */

#define BIG_LEN		(8UL << 20)	/* the destination of the racing COPY */
#define COPY_ROUNDS	64		/* COPY calls the racing thread makes at most */
#define COPY_TRIES	5		/* tries at catching a COPY in progress */

struct copier {
	int fd;
	__u64 key;
	char *src;
	int rounds;	/* COPY calls that completed */
	int err;	/* the error of the one that failed, 0 if none did */
	int done;
};

/* COPYs BIG_LEN bytes of 'x' to the registration, again and again, until one fails. */
static void *copy_loop(void *arg)
{
	struct copier *c = arg;
	int i, err = 0;

	for (i = 0; i < COPY_ROUNDS; i++) {
		err = memreg_copy(c->fd, c->key, 0, c->src, BIG_LEN, MEMREG_COPY_TO_REGION);
		if (err)
			break;
		__atomic_store_n(&c->rounds, i + 1, __ATOMIC_RELEASE);
	}
	c->err = err;
	__atomic_store_n(&c->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* The length of the run of 'x' that `p` starts with. */
static size_t x_prefix(const char *p, size_t len)
{
	size_t n = 0;

	while (n < len && p[n] == 'x')
		n++;
	return n;
}

/*
 * A COPY in progress on another thread when the last DEREGISTER comes
 * stops with ENOENT, and no byte reaches the registration once DEREGISTER
 * returned: the destination right after DEREGISTER and after the COPY
 * returned are the same.
 */
TEST_F_TIMEOUT(trust, deregister_stops_copy_in_progress, 120)
{
	char *dst = map_buf(BIG_LEN, 0), *xs = map_buf(BIG_LEN, 'x'), *snap = malloc(BIG_LEN);
	struct memreg_register r;
	struct copier c;
	bool in_progress = false;
	size_t n = 0;
	pthread_t th;
	__u64 t0;
	int tries;

	ASSERT_NE(NULL, dst);
	ASSERT_NE(NULL, xs);
	ASSERT_NE(NULL, snap);
	for (tries = 0; tries < COPY_TRIES && !in_progress; tries++) {
		memset(dst, 0, BIG_LEN);
		ASSERT_EQ(0, memreg_register(self->fd, dst, BIG_LEN, RW, &r));
		expect_miss(_metadata, &r, dst, BIG_LEN, RW);
		c = (struct copier){ .fd = self->fd, .key = r.lkey, .src = xs };
		ASSERT_EQ(0, pthread_create(&th, NULL, copy_loop, &c));

		/* The COPY has started once its first step landed. */
		t0 = mrq_now_us();
		while (__atomic_load_n(&dst[0], __ATOMIC_ACQUIRE) != 'x' &&
		       !__atomic_load_n(&c.done, __ATOMIC_ACQUIRE) &&
		       mrq_now_us() - t0 < 10000000)
			sched_yield();
		if (__atomic_load_n(&dst[0], __ATOMIC_ACQUIRE) != 'x') {
			pthread_join(th, NULL);
			ASSERT_EQ('x', dst[0]) TH_LOG("the COPY never started: %d after %d rounds",
						      c.err, c.rounds);
		}

		ASSERT_EQ(0, memreg_deregister(self->fd, r.lkey));
		memcpy(snap, dst, BIG_LEN);
		pthread_join(th, NULL);

		n = x_prefix(snap, BIG_LEN);
		in_progress = n < BIG_LEN;
		EXPECT_LT(0, n);
		/* Data moves in order: 'x' up to where it stopped, zeros after. */
		EXPECT_TRUE(all_bytes(snap + n, BIG_LEN - n, 0));
		/* Nothing moved after DEREGISTER returned. */
		EXPECT_EQ(n, x_prefix(dst, BIG_LEN)) TH_LOG("try %d", tries);
		EXPECT_EQ(0, memcmp(snap, dst, BIG_LEN)) TH_LOG("try %d", tries);
		/* The COPY running then, or the next one, failed with ENOENT. */
		if (c.rounds < COPY_ROUNDS)
			EXPECT_EQ(-ENOENT, c.err) TH_LOG("after %d rounds", c.rounds);
		if (in_progress)
			EXPECT_EQ(0, c.rounds);

		/* Parked, and its key moves nothing. */
		expect_parked(_metadata, self->fd, r.lkey, dst, BIG_LEN, BIG_LEN / PAGE);
		EXPECT_EQ(-ENOENT, memreg_copy(self->fd, r.lkey, 0, xs, PAGE, MEMREG_COPY_TO_REGION));
		EXPECT_EQ(n, x_prefix(dst, BIG_LEN));
		ASSERT_EQ(0, memreg_flush(self->fd, NULL));
	}
	if (!in_progress)
		SKIP(goto out, "every COPY finished before DEREGISTER returned (%d tries)", tries);
	TH_LOG("stopped after %zu of %lu bytes (try %d)", n, BIG_LEN, tries);
out:
	free(snap);
	munmap(dst, BIG_LEN);
	munmap(xs, BIG_LEN);
}

/*
 * After the last DEREGISTER: QUERY still describes the parked registration
 * and DEREGISTER of its key is EINVAL, but COPY and ring requests naming
 * the key, as destination or as source, fail with ENOENT and move nothing,
 * also those posted before and still waiting in the submission ring. The
 * worker used the key before, so a cached translation of it would show.
 */
TEST_F(trust, deregister_ends_keys_for_data)
{
	struct memreg_register r;
	struct memreg_stats st;
	struct memreg_cqe c[4];
	struct memreg_sqe s;
	struct memreg_queue q4;
	char data[256];
	__u64 i;

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 4 * PAGE, RW, &r));
	expect_miss(_metadata, &r, self->buf, 4 * PAGE, RW);
	/* In use, both ways, by the ioctl and by the worker. */
	ring_copy(_metadata, self, 1, r.lkey, self->rs.lkey, 64, 0);
	ring_copy(_metadata, self, 2, self->rd.lkey, r.lkey, 64, 0);
	EXPECT_TRUE(all_bytes(self->buf, 64, 's'));
	EXPECT_TRUE(all_bytes(self->dst, 64, 's'));
	memset(data, 'c', sizeof(data));
	ASSERT_EQ(0, memreg_copy(self->fd, r.lkey, PAGE, data, sizeof(data), MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->buf + PAGE, sizeof(data), 'c'));
	memset(self->buf, 'a', 4 * PAGE);
	memset(self->dst, 'd', HELP_PAGES * PAGE);

	/*
	 * Two requests naming it wait in a small queue whose completion ring
	 * is full: the worker takes nothing until there is room.
	 */
	ASSERT_EQ(0, memreg_queue_init(self->fd, 4, 4, -1, &q4));
	for (i = 0; i < 4; i++) {
		s = mr_sqe_nop(i);
		ASSERT_EQ(0, memreg_queue_post_wait(&q4, &s, 5000));
	}
	ASSERT_EQ(0, mrq_wait_tail(&q4, 4, 5000));
	s = mr_sqe_copy(10, r.lkey, 0, self->rs.lkey, 0, 64);
	ASSERT_EQ(0, memreg_queue_post_wait(&q4, &s, 5000));
	s = mr_sqe_copy(11, self->rd.lkey, 0, r.lkey, 0, 64);
	ASSERT_EQ(0, memreg_queue_post_wait(&q4, &s, 5000));
	ASSERT_EQ(0, mrq_wait_flags(&q4, MEMREG_QUEUE_CQ_FULL, MEMREG_QUEUE_CQ_FULL, 5000));
	EXPECT_EQ(4, memreg_queue_sq_head(&q4));

	ASSERT_EQ(0, memreg_deregister(self->fd, r.lkey));

	/* QUERY still describes it; it has no reference to drop. */
	expect_parked(_metadata, self->fd, r.lkey, self->buf, 4 * PAGE, 4);
	EXPECT_EQ(-EINVAL, memreg_deregister(self->fd, r.lkey));
	expect_parked(_metadata, self->fd, r.lkey, self->buf, 4 * PAGE, 4);
	ASSERT_EQ(0, memreg_stats(self->fd, &st));
	EXPECT_EQ(1, st.parks);
	EXPECT_EQ(1, st.parked);
	EXPECT_EQ(4, st.parked_pages);

	/* The requests that waited: -ENOENT. */
	ASSERT_EQ(4, memreg_wait_cqes(&q4, c, 4, 5000));
	for (i = 0; i < 4; i++)
		expect_cqe(_metadata, &c[i], i, 0, 0);
	ASSERT_EQ(2, memreg_wait_cqes(&q4, c, 2, 5000));
	expect_cqe(_metadata, &c[0], 10, -ENOENT, 0);
	expect_cqe(_metadata, &c[1], 11, -ENOENT, 0);
	memreg_queue_exit(&q4);

	/* COPY through the ioctl, both ways. */
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, r.lkey, 0, data, sizeof(data),
				   MEMREG_COPY_TO_REGION));
	memset(data, 0, sizeof(data));
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, r.lkey, 0, data, sizeof(data),
				   MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, sizeof(data), 0));

	/* Requests posted now: destination, source, a zero length, DEREGISTER. */
	ring_copy(_metadata, self, 20, r.lkey, self->rs.lkey, 64, -ENOENT);
	ring_copy(_metadata, self, 21, self->rd.lkey, r.lkey, 64, -ENOENT);
	ring_copy(_metadata, self, 22, r.lkey, self->rs.lkey, 0, -ENOENT);
	s = mr_sqe_deregister(23, r.lkey);
	run_expect(_metadata, &self->q, &s, -EINVAL, 0);

	/* Nothing moved, and it is still parked. */
	EXPECT_TRUE(all_bytes(self->buf, BUF_PAGES * PAGE, 'a'));
	EXPECT_TRUE(all_bytes(self->dst, HELP_PAGES * PAGE, 'd'));
	expect_parked(_metadata, self->fd, r.lkey, self->buf, 4 * PAGE, 4);
	ASSERT_EQ(0, memreg_stats(self->fd, &st));
	EXPECT_EQ(1, st.parked);
	EXPECT_EQ(0, st.revives);
}

/*
 * A REGISTER of exactly the range and access revives the parked
 * registration with new keys: the same sequence, new random bits, a new
 * remote key. The old local key names nothing any more (COPY, QUERY,
 * DEREGISTER, the rings), the new one works.
 */
TEST_F(trust, revival_hands_out_new_keys)
{
	struct memreg_register r, n, again;
	struct memreg_stats st;
	struct memreg_query q;
	char data[128];

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 4 * PAGE, RW, &r));
	expect_miss(_metadata, &r, self->buf, 4 * PAGE, RW);
	ring_copy(_metadata, self, 1, r.lkey, self->rs.lkey, 64, 0);
	ring_copy(_metadata, self, 2, self->rd.lkey, r.lkey, 64, 0);
	memset(self->buf, 'a', 4 * PAGE);
	memset(self->dst, 'd', HELP_PAGES * PAGE);
	ASSERT_EQ(0, memreg_deregister(self->fd, r.lkey));
	expect_parked(_metadata, self->fd, r.lkey, self->buf, 4 * PAGE, 4);

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 4 * PAGE, RW, &n));
	EXPECT_EQ(MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED, n.flags);
	EXPECT_EQ(RW, n.access);
	EXPECT_EQ((__u64)(unsigned long)self->buf, n.region_addr);
	EXPECT_EQ(4 * PAGE, n.region_length);
	EXPECT_EQ(r.slot, n.slot);
	EXPECT_EQ(r.generation, n.generation);
	/* New keys: the same sequence, other random bits; a new remote key. */
	EXPECT_NE(r.lkey, n.lkey);
	EXPECT_EQ(KEY_SEQ(r.lkey), KEY_SEQ(n.lkey));
	EXPECT_NE(KEY_RAND(r.lkey), KEY_RAND(n.lkey));
	/* Without remote rights, no remote key comes back: 0, which nothing matches. */
	EXPECT_NE(r.rkey, n.rkey);
	EXPECT_EQ(0, n.rkey);
	ASSERT_EQ(0, memreg_stats(self->fd, &st));
	EXPECT_EQ(1, st.revives);
	EXPECT_EQ(0, st.parked);

	/* QUERY: the new key names it, live; the old one nothing. */
	expect_live(_metadata, self->fd, n.lkey, 1);
	EXPECT_EQ(-ENOENT, memreg_query(self->fd, r.lkey, &q));
	/* A stale DEREGISTER drops no reference of the revived registration. */
	EXPECT_EQ(-ENOENT, memreg_deregister(self->fd, r.lkey));
	expect_live(_metadata, self->fd, n.lkey, 1);

	/* COPY through the ioctl: the old key moves nothing, the new one does. */
	memset(data, 'o', sizeof(data));
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, r.lkey, 0, data, sizeof(data),
				   MEMREG_COPY_TO_REGION));
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, r.lkey, 0, data, sizeof(data),
				   MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, sizeof(data), 'o'));
	EXPECT_TRUE(all_bytes(self->buf, BUF_PAGES * PAGE, 'a'));
	memset(data, 'n', sizeof(data));
	ASSERT_EQ(0, memreg_copy(self->fd, n.lkey, PAGE, data, sizeof(data), MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->buf + PAGE, sizeof(data), 'n'));
	memset(data, 0, sizeof(data));
	ASSERT_EQ(0, memreg_copy(self->fd, n.lkey, PAGE, data, sizeof(data),
			     MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, sizeof(data), 'n'));
	memset(self->buf + PAGE, 'a', sizeof(data));

	/* The rings: the old key, destination or source, -ENOENT; the new one works. */
	ring_copy(_metadata, self, 10, r.lkey, self->rs.lkey, 64, -ENOENT);
	ring_copy(_metadata, self, 11, self->rd.lkey, r.lkey, 64, -ENOENT);
	EXPECT_TRUE(all_bytes(self->buf, BUF_PAGES * PAGE, 'a'));
	EXPECT_TRUE(all_bytes(self->dst, HELP_PAGES * PAGE, 'd'));
	ring_copy(_metadata, self, 12, n.lkey, self->rs.lkey, 64, 0);
	EXPECT_TRUE(all_bytes(self->buf, 64, 's'));
	EXPECT_TRUE(all_bytes(self->buf + 64, BUF_PAGES * PAGE - 64, 'a'));
	ring_copy(_metadata, self, 13, self->rd.lkey, n.lkey, 128, 0);
	EXPECT_TRUE(all_bytes(self->dst, 64, 's'));
	EXPECT_TRUE(all_bytes(self->dst + 64, 64, 'a'));
	EXPECT_TRUE(all_bytes(self->dst + 128, HELP_PAGES * PAGE - 128, 'd'));

	/* Live again: the next REGISTER is an ordinary hit with the new keys. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 4 * PAGE, RW, &again));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, again.flags);
	EXPECT_EQ(n.lkey, again.lkey);
	EXPECT_EQ(n.rkey, again.rkey);
	expect_live(_metadata, self->fd, n.lkey, 2);
}

/* ---- Rights never widen ---- */

/*
 * A parked registration with remote rights is not revived by a REGISTER
 * of the same range with local rights only: that is a miss, and the peer's
 * WRITE with the old remote key finds nothing.
 */
TEST_F(trust, narrower_register_does_not_revive)
{
	const __u32 wide = LREAD | LWRITE | RWRITE;
	struct memreg_register r, n;
	struct memreg_stats st;

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 4 * PAGE, wide, &r));
	expect_miss(_metadata, &r, self->buf, 4 * PAGE, wide);
	/* The peer reaches it while it is live. */
	peer_write(_metadata, self, 1, r.rkey, 100, 64, 0);
	EXPECT_TRUE(all_bytes(self->buf + 100, 64, 'w'));
	memset(self->buf, 'a', 4 * PAGE);
	ASSERT_EQ(0, memreg_deregister(self->fd, r.lkey));
	expect_parked(_metadata, self->fd, r.lkey, self->buf, 4 * PAGE, 4);

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 4 * PAGE, RW, &n));
	expect_miss(_metadata, &n, self->buf, 4 * PAGE, RW);
	EXPECT_NE(r.lkey, n.lkey);
	EXPECT_NE(r.rkey, n.rkey);
	/* The parked one is still parked. */
	expect_parked(_metadata, self->fd, r.lkey, self->buf, 4 * PAGE, 4);
	ASSERT_EQ(0, memreg_stats(self->fd, &st));
	EXPECT_EQ(0, st.revives);
	EXPECT_EQ(1, st.parked);

	/* The old remote key finds nothing; the new registration has no remote right. */
	peer_write(_metadata, self, 2, r.rkey, 0, 64, -ENOENT);
	peer_write(_metadata, self, 3, r.rkey, 100, 4 * PAGE - 100, -ENOENT);
	peer_write(_metadata, self, 4, n.rkey, 0, 64, -EACCES);
	EXPECT_TRUE(all_bytes(self->buf, BUF_PAGES * PAGE, 'a'));
}

/*
 * A parked registration's remote key is dead: the peer's WRITE finds
 * nothing. Reviving hands out a new remote key that works; the old one
 * stays dead, through every later park and revival.
 */
TEST_F(trust, parked_remote_key_is_dead_for_good)
{
	const __u32 acc = RW | RWRITE;
	struct memreg_register r, n, m;

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 4 * PAGE, acc, &r));
	expect_miss(_metadata, &r, self->buf, 4 * PAGE, acc);
	peer_write(_metadata, self, 1, r.rkey, 100, 64, 0);
	EXPECT_TRUE(all_bytes(self->buf + 100, 64, 'w'));
	memset(self->buf, 'a', 4 * PAGE);

	ASSERT_EQ(0, memreg_deregister(self->fd, r.lkey));
	peer_write(_metadata, self, 2, r.rkey, 100, 64, -ENOENT);
	peer_write(_metadata, self, 3, r.rkey, 0, 4 * PAGE, -ENOENT);
	EXPECT_TRUE(all_bytes(self->buf, BUF_PAGES * PAGE, 'a'));
	expect_parked(_metadata, self->fd, r.lkey, self->buf, 4 * PAGE, 4);

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 4 * PAGE, acc, &n));
	EXPECT_EQ(MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED, n.flags);
	EXPECT_EQ(acc, n.access);
	EXPECT_NE(r.rkey, n.rkey);
	EXPECT_NE(r.lkey, n.lkey);
	EXPECT_EQ(KEY_SEQ(r.lkey), KEY_SEQ(n.lkey));
	peer_write(_metadata, self, 4, r.rkey, 100, 64, -ENOENT);
	EXPECT_TRUE(all_bytes(self->buf, BUF_PAGES * PAGE, 'a'));
	peer_write(_metadata, self, 5, n.rkey, 200, 64, 0);
	EXPECT_TRUE(all_bytes(self->buf, 200, 'a'));
	EXPECT_TRUE(all_bytes(self->buf + 200, 64, 'w'));
	EXPECT_TRUE(all_bytes(self->buf + 264, BUF_PAGES * PAGE - 264, 'a'));
	memset(self->buf, 'a', 4 * PAGE);

	/* Parked and revived again: a third remote key; neither earlier one works. */
	ASSERT_EQ(0, memreg_deregister(self->fd, n.lkey));
	peer_write(_metadata, self, 6, n.rkey, 0, 64, -ENOENT);
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 4 * PAGE, acc, &m));
	EXPECT_EQ(MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED, m.flags);
	EXPECT_NE(r.rkey, m.rkey);
	EXPECT_NE(n.rkey, m.rkey);
	EXPECT_NE(n.lkey, m.lkey);
	peer_write(_metadata, self, 7, r.rkey, 0, 64, -ENOENT);
	peer_write(_metadata, self, 8, n.rkey, 0, 64, -ENOENT);
	EXPECT_TRUE(all_bytes(self->buf, BUF_PAGES * PAGE, 'a'));
	peer_write(_metadata, self, 9, m.rkey, 4 * PAGE - 64, 64, 0);
	EXPECT_TRUE(all_bytes(self->buf + 4 * PAGE - 64, 64, 'w'));
	EXPECT_TRUE(all_bytes(self->buf, 4 * PAGE - 64, 'a'));
}

/*
 * With remote rights, only exactly the range hits: a part of a 64 KiB
 * registration is a registration of its own, whose remote key reaches
 * nothing outside it; the whole range again is a hit with the same keys.
 */
TEST_F(trust, remote_hit_needs_exact_range)
{
	const __u32 acc = LWRITE | RWRITE;
	struct memreg_register big, small, odd, again;

	ASSERT_LE(KIB(64), BUF_PAGES * PAGE);
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, KIB(64), acc, &big));
	expect_miss(_metadata, &big, self->buf, KIB(64), acc);

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, KIB(4), acc, &small));
	expect_miss(_metadata, &small, self->buf, KIB(4), acc);
	EXPECT_NE(big.lkey, small.lkey);
	EXPECT_NE(big.rkey, small.rkey);

	/* Unaligned inside: a miss too, on exactly the bytes asked. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 100, 200, acc, &odd));
	expect_miss(_metadata, &odd, self->buf + 100, 200, acc);
	EXPECT_NE(big.rkey, odd.rkey);
	EXPECT_NE(small.rkey, odd.rkey);

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, KIB(64), acc, &again));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, again.flags);
	EXPECT_EQ(big.lkey, again.lkey);
	EXPECT_EQ(big.rkey, again.rkey);
	EXPECT_EQ((__u64)(unsigned long)self->buf, again.region_addr);
	EXPECT_EQ(KIB(64), again.region_length);
	EXPECT_EQ(acc, again.access);
	expect_live(_metadata, self->fd, big.lkey, 2);

	/* The small keys reach no byte past what was asked. */
	peer_write(_metadata, self, 1, small.rkey, KIB(4) - 8, 16, -EINVAL);
	peer_write(_metadata, self, 2, odd.rkey, 0, 201, -EINVAL);
	peer_write(_metadata, self, 3, odd.rkey, 1, 200, -EINVAL);
	EXPECT_TRUE(all_bytes(self->buf, BUF_PAGES * PAGE, 'a'));
	peer_write(_metadata, self, 4, odd.rkey, 0, 200, 0);
	EXPECT_TRUE(all_bytes(self->buf, 100, 'a'));
	EXPECT_TRUE(all_bytes(self->buf + 100, 200, 'w'));
	EXPECT_TRUE(all_bytes(self->buf + 300, BUF_PAGES * PAGE - 300, 'a'));
	peer_write(_metadata, self, 5, small.rkey, KIB(4) - 16, 16, 0);
	EXPECT_TRUE(all_bytes(self->buf + KIB(4) - 16, 16, 'w'));
	EXPECT_TRUE(all_bytes(self->buf + KIB(4), BUF_PAGES * PAGE - KIB(4), 'a'));
	/* The big one reaches its whole range. */
	peer_write(_metadata, self, 6, big.rkey, KIB(64) - 16, 16, 0);
	EXPECT_TRUE(all_bytes(self->buf + KIB(64) - 16, 16, 'w'));
}

/*
 * A local-only REGISTER never hits a registration with remote rights, even
 * one covering it; it may hit a local-only registration with more local
 * rights, and then `access` says which rights the returned keys carry. On
 * a miss `access` is what was asked.
 */
TEST_F(trust, local_hits_and_returned_access)
{
	char *rem_buf = self->buf, *loc_buf = self->buf + 16 * PAGE;
	struct memreg_register rem, part, whole, loc, hit, ro, rr;
	struct memreg_query q;
	char data[64];

	/* A registration with remote rights: local-only requests inside it miss. */
	ASSERT_EQ(0, memreg_register(self->fd, rem_buf, 8 * PAGE, RW | RREAD, &rem));
	expect_miss(_metadata, &rem, rem_buf, 8 * PAGE, RW | RREAD);
	ASSERT_EQ(0, memreg_register(self->fd, rem_buf + PAGE, 2 * PAGE, RW, &part));
	expect_miss(_metadata, &part, rem_buf + PAGE, 2 * PAGE, RW);
	EXPECT_NE(rem.lkey, part.lkey);
	ASSERT_EQ(0, memreg_register(self->fd, rem_buf + 5 * PAGE + 10, 100, LREAD, &ro));
	expect_miss(_metadata, &ro, rem_buf + 5 * PAGE + 10, 100, LREAD);
	EXPECT_NE(rem.lkey, ro.lkey);
	/* Even its exact range. */
	ASSERT_EQ(0, memreg_register(self->fd, rem_buf, 8 * PAGE, RW, &whole));
	expect_miss(_metadata, &whole, rem_buf, 8 * PAGE, RW);
	EXPECT_NE(rem.lkey, whole.lkey);
	expect_live(_metadata, self->fd, rem.lkey, 1);

	/* A local-only registration with more local rights serves a narrower request. */
	ASSERT_EQ(0, memreg_register(self->fd, loc_buf, 8 * PAGE, RW, &loc));
	expect_miss(_metadata, &loc, loc_buf, 8 * PAGE, RW);
	ASSERT_EQ(0, memreg_register(self->fd, loc_buf + PAGE + 10, 100, LREAD, &hit));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, hit.flags);
	EXPECT_EQ(loc.lkey, hit.lkey);
	EXPECT_EQ(loc.rkey, hit.rkey);
	EXPECT_EQ((__u64)(unsigned long)loc_buf, hit.region_addr);
	EXPECT_EQ(8 * PAGE, hit.region_length);
	/* The rights its keys carry, not the ones asked. */
	EXPECT_EQ(LREAD | LWRITE, hit.access);
	ASSERT_EQ(0, memreg_query(self->fd, loc.lkey, &q));
	EXPECT_EQ(LREAD | LWRITE, q.access);
	EXPECT_EQ(2, q.refcount);
	/* And they work: writing through the key of a read-only request. */
	memset(data, 'h', sizeof(data));
	ASSERT_EQ(0, memreg_copy(self->fd, hit.lkey, PAGE + 10, data, sizeof(data),
			     MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(loc_buf + PAGE + 10, sizeof(data), 'h'));

	/* Remote rights asked on the local-only one: a miss, with exactly those rights. */
	ASSERT_EQ(0, memreg_register(self->fd, loc_buf, 8 * PAGE, LREAD | RREAD, &rr));
	expect_miss(_metadata, &rr, loc_buf, 8 * PAGE, LREAD | RREAD);
	EXPECT_NE(loc.lkey, rr.lkey);

	/* Parked, the local-only one is revived by the narrower request, same story. */
	ASSERT_EQ(0, memreg_deregister(self->fd, loc.lkey));
	ASSERT_EQ(0, memreg_deregister(self->fd, loc.lkey));
	expect_parked(_metadata, self->fd, loc.lkey, loc_buf, 8 * PAGE, 8);
	ASSERT_EQ(0, memreg_register(self->fd, loc_buf + 3 * PAGE, PAGE, LREAD, &hit));
	EXPECT_EQ(MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED, hit.flags);
	EXPECT_EQ(KEY_SEQ(loc.lkey), KEY_SEQ(hit.lkey));
	EXPECT_NE(loc.lkey, hit.lkey);
	EXPECT_EQ(LREAD | LWRITE, hit.access);
	EXPECT_EQ((__u64)(unsigned long)loc_buf, hit.region_addr);
	EXPECT_EQ(8 * PAGE, hit.region_length);
}

/* ---- Charges follow the unpinning ---- */

#define CHARGE_PAGES	64		/* RLIMIT_MEMLOCK and each registration, in pages */
#define CHURN_LEN	(2UL << 20)	/* the region the owner's threads keep clearing */
#define CHURNERS	2
#define RETRY_MS	3000

enum { CMD_REGISTER = 1, CMD_RETRY, CMD_UNMAP, CMD_STOP, CMD_QUIT };

static int put_int(int fd, int v)
{
	return write(fd, &v, sizeof(v)) == sizeof(v) ? 0 : -1;
}

/* Reads one int, waiting up to `timeout_ms`; 0 or -1 (timeout, end of file, error). */
static int get_int(int fd, int *v, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (poll(&p, 1, timeout_ms) != 1)
		return -1;
	return read(fd, v, sizeof(*v)) == sizeof(*v) ? 0 : -1;
}

/* Sends `cmd` to a child and returns its answer (-EPIPE when none came in 20 s). */
static int ask(int out, int in, int cmd)
{
	int v;

	if (put_int(out, cmd) || get_int(in, &v, 20000))
		return -EPIPE;
	return v;
}

/* RLIMIT_MEMLOCK of `pages` pages, then uid and gid NOBODY (no CAP_IPC_LOCK). */
static int become_nobody(__u64 pages)
{
	struct rlimit rl = { pages * PAGE, pages * PAGE };

	if (setrlimit(RLIMIT_MEMLOCK, &rl))
		return -1;
	if (setgid(NOBODY) || setuid(NOBODY))
		return -1;
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	return 0;
}

/*
 * Pages pinned module-wide by FOLL_PIN, from /proc/vmstat after folding
 * every CPU's pending counts (/proc/sys/vm/stat_refresh); 0 or -errno.
 */
static int pin_balance(long long *balance)
{
	unsigned long long acquired = 0, released = 0, v;
	int fd = open("/proc/sys/vm/stat_refresh", O_WRONLY | O_CLOEXEC);
	int found = 0, ret = 0;
	char line[128];
	FILE *f;

	if (fd < 0)
		return -errno;
	if (write(fd, "1\n", 2) != 2)
		ret = -errno;
	close(fd);
	if (ret)
		return ret;
	f = fopen("/proc/vmstat", "r");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "nr_foll_pin_acquired %llu", &v) == 1) {
			acquired = v;
			found |= 1;
		} else if (sscanf(line, "nr_foll_pin_released %llu", &v) == 1) {
			released = v;
			found |= 2;
		}
	}
	fclose(f);
	if (found != 3)
		return -ENOENT;
	*balance = (long long)(acquired - released);
	return 0;
}

/* Waits (at most 5 s) until the pin balance is back at `want`; 0 or -ETIMEDOUT. */
static int wait_pin_balance(long long want)
{
	long long now = 0;
	int i;

	for (i = 0; i < 250; i++) {
		if (pin_balance(&now))
			return -EIO;
		if (now == want)
			return 0;
		usleep(20000);
	}
	fprintf(stderr, "pin balance %lld, want %lld\n", now, want);
	return -ETIMEDOUT;
}

struct churn {
	char *mem;		/* CHURN_LEN, shared by the threads */
	int stop;
	unsigned long iters[CHURNERS];
};

struct churner {
	struct churn *c;
	int i;
};

/*
 * Touches the region and clears it with MADV_DONTNEED, again and again:
 * with two of these the address space is almost always invalidating.
 */
static void *churn_loop(void *arg)
{
	struct churner *t = arg;
	struct churn *c = t->c;
	size_t off;

	while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
		for (off = 0; off < CHURN_LEN; off += KIB(64))
			c->mem[off] = 1;
		madvise(c->mem, CHURN_LEN, MADV_DONTNEED);
		__atomic_fetch_add(&c->iters[t->i], 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

/*
 * Process A, as NOBODY: registers CHARGE_PAGES pages (its whole
 * RLIMIT_MEMLOCK), starts the churning threads and answers 0 (or the
 * error); then runs commands: CMD_UNMAP (munmap the registered buffer),
 * CMD_STOP (stop and join the threads), CMD_QUIT.
 */
static int owner_child(int in, int out)
{
	struct churner t[CHURNERS];
	struct memreg_register r;
	pthread_t th[CHURNERS];
	struct churn c = { 0 };
	char *buf = map_buf(CHARGE_PAGES * PAGE, 'A');
	int fd = memreg_open(), cmd, ret, i, started = 0;
	__u64 t0;

	c.mem = map_buf(CHURN_LEN, 'c');
	if (fd < 0 || !buf || !c.mem || become_nobody(CHARGE_PAGES)) {
		put_int(out, -EPERM);
		return 1;
	}
	ret = memreg_register(fd, buf, CHARGE_PAGES * PAGE, RW, &r);
	if (!ret) {
		for (i = 0; i < CHURNERS; i++) {
			t[i] = (struct churner){ .c = &c, .i = i };
			if (pthread_create(&th[i], NULL, churn_loop, &t[i])) {
				ret = -EAGAIN;
				break;
			}
			started++;
		}
	}
	/* Both churning before the test goes on. */
	t0 = mrq_now_us();
	while (!ret && (!__atomic_load_n(&c.iters[0], __ATOMIC_ACQUIRE) ||
			!__atomic_load_n(&c.iters[CHURNERS - 1], __ATOMIC_ACQUIRE))) {
		if (mrq_now_us() - t0 > 5000000)
			ret = -ETIMEDOUT;
		usleep(1000);
	}
	if (put_int(out, ret) || ret)
		return 2;

	while (!get_int(in, &cmd, 30000)) {
		switch (cmd) {
		case CMD_UNMAP:
			ret = munmap(buf, CHARGE_PAGES * PAGE) ? -errno : 0;
			break;
		case CMD_STOP:
			__atomic_store_n(&c.stop, 1, __ATOMIC_RELEASE);
			for (i = 0; i < started; i++)
				pthread_join(th[i], NULL);
			started = 0;
			ret = 0;
			break;
		case CMD_QUIT:
			close(fd);
			put_int(out, 0);
			return 0;
		default:
			return 3;
		}
		if (put_int(out, ret))
			return 4;
	}
	return 5;
}

/*
 * Process B, as NOBODY with the same RLIMIT_MEMLOCK: answers 0 once ready,
 * then runs commands: CMD_REGISTER (REGISTER CHARGE_PAGES pages once),
 * CMD_RETRY (again every 10 ms while it fails with ENOMEM, RETRY_MS at
 * most), CMD_QUIT. Answers the REGISTER's result.
 */
static int rival_child(int in, int out)
{
	struct memreg_register r;
	char *buf = map_buf(CHARGE_PAGES * PAGE, 'B');
	int fd = memreg_open(), cmd, ret;
	__u64 t0;

	if (fd < 0 || !buf || become_nobody(CHARGE_PAGES)) {
		put_int(out, -EPERM);
		return 1;
	}
	if (put_int(out, 0))
		return 2;
	while (!get_int(in, &cmd, 30000)) {
		switch (cmd) {
		case CMD_REGISTER:
			ret = memreg_register(fd, buf, CHARGE_PAGES * PAGE, RW, &r);
			break;
		case CMD_RETRY:
			t0 = mrq_now_us();
			for (;;) {
				ret = memreg_register(fd, buf, CHARGE_PAGES * PAGE, RW, &r);
				if (ret != -ENOMEM || mrq_now_us() - t0 > RETRY_MS * 1000ULL)
					break;
				usleep(10000);
			}
			break;
		case CMD_QUIT:
			close(fd);
			put_int(out, 0);
			return 0;
		default:
			return 3;
		}
		if (put_int(out, ret))
			return 4;
	}
	return 5;
}

/*
 * A's registration ends by munmap while A's address space keeps
 * invalidating (which holds up the removal of its notifier, and so its
 * unpinning). B, the same user under the same RLIMIT_MEMLOCK, gets the
 * room only once A's pages are unpinned: when B's REGISTER succeeds, the
 * module-wide FOLL_PIN balance holds at most B's pages. When it fails with
 * ENOMEM, it succeeds within RETRY_MS once A's invalidations stop.
 *
 * Without the guarantee this fails only when B comes in while A's teardown
 * is held up; with it, it never fails.
 */
TEST(charges_released_after_unpinning)
{
	int a_in[2], a_out[2], b_in[2], b_out[2], v, ret;
	struct memreg_global_stats base, g;
	long long pin0 = 0, pins = 0;
	pid_t a, b;

	mr_settle(&base);
	ret = pin_balance(&pin0);
	if (ret)
		SKIP(return, "cannot read the FOLL_PIN counters: %s", strerror(-ret));
	ASSERT_EQ(0, pipe(a_in));
	ASSERT_EQ(0, pipe(a_out));
	ASSERT_EQ(0, pipe(b_in));
	ASSERT_EQ(0, pipe(b_out));

	b = fork();
	ASSERT_GE(b, 0);
	if (b == 0) {
		close(a_in[0]);
		close(a_in[1]);
		close(a_out[0]);
		close(a_out[1]);
		close(b_in[1]);
		close(b_out[0]);
		_exit(rival_child(b_in[0], b_out[1]));
	}
	close(b_in[0]);
	close(b_out[1]);
	a = fork();
	ASSERT_GE(a, 0);
	if (a == 0) {
		close(a_in[1]);
		close(a_out[0]);
		close(b_in[1]);
		close(b_out[0]);
		_exit(owner_child(a_in[0], a_out[1]));
	}
	close(a_in[0]);
	close(a_out[1]);

	ASSERT_EQ(0, get_int(b_out[0], &v, 20000));
	ASSERT_EQ(0, v);
	ASSERT_EQ(0, get_int(a_out[0], &v, 20000));
	ASSERT_EQ(0, v) TH_LOG("A's REGISTER or threads");
	ASSERT_EQ(0, mr_global_now(&g));
	EXPECT_EQ(base.pages_pinned + CHARGE_PAGES, g.pages_pinned);

	/* The limit holds: B has no room while A's pages are charged. */
	EXPECT_EQ(-ENOMEM, ask(b_in[1], b_out[0], CMD_REGISTER));

	ASSERT_EQ(0, ask(a_in[1], a_out[0], CMD_UNMAP));
	ret = ask(b_in[1], b_out[0], CMD_REGISTER);
	if (!ret) {
		/* Read while A's invalidations still run. */
		ASSERT_EQ(0, pin_balance(&pins));
		EXPECT_GE((long long)CHARGE_PAGES, pins - pin0)
			TH_LOG("B was charged while %lld of A's pages were pinned",
			       pins - pin0 - CHARGE_PAGES);
		EXPECT_LE((long long)CHARGE_PAGES, pins - pin0);
		EXPECT_EQ(0, ask(a_in[1], a_out[0], CMD_STOP));
	} else {
		EXPECT_EQ(-ENOMEM, ret);
		EXPECT_EQ(0, ask(a_in[1], a_out[0], CMD_STOP));
		ret = ask(b_in[1], b_out[0], CMD_RETRY);
		EXPECT_EQ(0, ret) TH_LOG("B's REGISTER %d ms after A's threads stopped", RETRY_MS);
		if (!ret) {
			ASSERT_EQ(0, pin_balance(&pins));
			EXPECT_GE((long long)CHARGE_PAGES, pins - pin0);
			EXPECT_LE((long long)CHARGE_PAGES, pins - pin0);
		}
	}

	EXPECT_EQ(0, ask(b_in[1], b_out[0], CMD_QUIT));
	EXPECT_EQ(0, ask(a_in[1], a_out[0], CMD_QUIT));
	EXPECT_EQ(0, wait_exit(b));
	EXPECT_EQ(0, wait_exit(a));
	close(a_in[1]);
	close(a_out[0]);
	close(b_in[1]);
	close(b_out[0]);
	EXPECT_EQ(0, mr_wait_global(base.contexts, base.regions, base.pages_pinned));
	EXPECT_EQ(0, wait_pin_balance(pin0));
}

/* ---- Idle eviction counts every ioctl of the owner ---- */

#define IDLE_MS		300
#define BUSY_MS		900
#define CALL_MS		50
/* A gap between two calls this long makes a busy phase inconclusive. */
#define MAX_GAP_MS	200

enum { CALL_VERSION, CALL_GLOBAL, CALL_UNKNOWN, NR_CALLS };

/*
 * Makes one kind of call on `fd` every CALL_MS for BUSY_MS; returns the
 * longest gap between two calls (the first counted from `*last`), in us,
 * and updates `*last`.
 */
static __u64 keep_busy(struct __test_metadata *_metadata, int fd, int kind, __u64 *last)
{
	struct memreg_global_stats g;
	__u64 now, gap = 0;
	__u32 version;
	int i;

	for (i = 0; i < BUSY_MS / CALL_MS; i++) {
		usleep(CALL_MS * 1000);
		switch (kind) {
		case CALL_VERSION:
			version = 0;
			EXPECT_EQ(0, ioctl(fd, MEMREG_IOC_GET_VERSION, &version));
			EXPECT_EQ(MEMREG_ABI_VERSION, version);
			break;
		case CALL_GLOBAL:
			EXPECT_EQ(0, memreg_global_stats(fd, &g));
			break;
		case CALL_UNKNOWN:
			EXPECT_EQ(-1, ioctl(fd, _IO(MEMREG_IOC_MAGIC, 0xfe)));
			EXPECT_EQ(ENOTTY, errno);
			break;
		}
		now = mrq_now_us();
		if (now - *last > gap)
			gap = now - *last;
		*last = now;
	}
	return gap;
}

/*
 * With idle_ms 300, a parked registration stays parked through 900 ms of
 * GET_VERSION calls, of GLOBAL_STATS calls and of calls of an unknown
 * command (ENOTTY), one every 50 ms; after 900 ms without a call on the
 * file it is evicted (evictions[MEMREG_EVICT_IDLE]).
 */
TEST(every_owner_ioctl_counts_for_idle)
{
	struct memreg_cache_config cfg = { .parking = 1, .max_parked = 1024,
					   .max_parked_pages = 262144, .idle_ms = IDLE_MS };
	struct memreg_global_stats base, g;
	struct memreg_register r;
	struct memreg_query q;
	struct memreg_stats s;
	char *buf = map_buf(4 * PAGE, 'i');
	__u64 last, gap, t0;
	int fd, kind;

	ASSERT_NE(NULL, buf);
	mr_settle(&base);
	fd = memreg_open();
	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, memreg_set_cache(fd, &cfg));
	ASSERT_EQ(0, memreg_register(fd, buf, 4 * PAGE, RW, &r));
	ASSERT_EQ(0, memreg_deregister(fd, r.lkey));
	last = mrq_now_us();
	expect_parked(_metadata, fd, r.lkey, buf, 4 * PAGE, 4);

	for (kind = 0; kind < NR_CALLS; kind++) {
		gap = keep_busy(_metadata, fd, kind, &last);
		if (gap >= MAX_GAP_MS * 1000ULL)
			SKIP(goto out, "calls %llu ms apart: too slow to tell (kind %d)",
			     (unsigned long long)gap / 1000, kind);
		expect_parked(_metadata, fd, r.lkey, buf, 4 * PAGE, 4);
		ASSERT_EQ(0, memreg_stats(fd, &s));
		EXPECT_EQ(1, s.parked) TH_LOG("kind %d", kind);
		EXPECT_EQ(0, s.evictions[MEMREG_EVICT_IDLE]) TH_LOG("kind %d", kind);
		last = mrq_now_us();
	}

	/*
	 * Quiet: nothing on the file. Other files (the probes of
	 * mr_global_now()) show when its pages are uncharged.
	 */
	usleep(BUSY_MS * 1000);
	t0 = mrq_now_us();
	for (;;) {
		ASSERT_EQ(0, mr_global_now(&g));
		if (g.pages_pinned == base.pages_pinned || mrq_now_us() - t0 > 3000000)
			break;
		usleep(20000);
	}
	EXPECT_EQ(base.pages_pinned, g.pages_pinned);
	EXPECT_EQ(-ENOENT, memreg_query(fd, r.lkey, &q));
	ASSERT_EQ(0, memreg_stats(fd, &s));
	EXPECT_EQ(1, s.evictions[MEMREG_EVICT_IDLE]);
	EXPECT_EQ(0, s.parked);
	EXPECT_EQ(0, s.registrations);
out:
	close(fd);
	munmap(buf, 4 * PAGE);
}

TEST_HARNESS_MAIN
