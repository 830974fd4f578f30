// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: the data path (queues, submission and completion
 * rings, the master ring, the doorbell and the queue counters), through the
 * library, libmemreg.
 *
 * - QUEUE_CREATE: sizes, eventfd and reserved checks, indexes 0, 1, 2, ...,
 *   mapping lengths, MEMREG_MAX_QUEUES, owner only;
 * - the mappings: which may be written, lengths, unknown queues, the fresh
 *   state of the rings;
 * - the requests: NOP, COPY (rights, keys, bounds), FENCE, DEREGISTER, and
 *   every field a request must leave zero; opcodes past MEMREG_OP_LAST;
 * - POOL_ALLOC and POOL_FREE: a round trip (the buffer's address and key,
 *   COPY through the key, the pool's counters), -EAGAIN at once when the
 *   pool is exhausted, fields they must leave zero, unknown pools, freeing
 *   twice, and the ring and the ioctls never handing out one buffer twice;
 * - registrations that end under the requests: -ENOENT, and memory mapped
 *   at the same address afterwards never written;
 * - the doorbell rule, the sleeping worker, batches;
 * - backpressure: a full submission ring, a full completion ring (the
 *   worker stops, overwrites nothing, continues after the doorbell);
 * - many posting threads into one queue: every completion exactly once, in
 *   each thread's order;
 * - arming: poll/epoll and the queue's eventfd; the master ring; POLLOUT;
 * - garbage written into the shared areas;
 * - teardown with requests in flight, and by SIGKILL.
 *
 * Buffers are private anonymous memory with MADV_NOHUGEPAGE, so that no
 * huge page split suspends a registration under a test. Run as root, with
 * no other memreg file open.
 */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "memreg_util.h"
#include "memreg_util.h"

#include "../kselftest_harness.h"
#include "memreg_harness.h"

#define QSQ		64	/* the fixture's queue */
#define QCQ		256
#define BUF_PAGES	16	/* the fixture's buffers */
#define BUF_LEN		(BUF_PAGES * PAGE)

/* How long "nothing happens" is watched for. */
#define QUIET_MS	300

/* ---- Helpers ---- */

/* mmap of the file; 0 (the mapping is removed again) or -errno. */
static int try_mmap(int fd, size_t len, int prot, int flags, off_t offset)
{
	void *p = mmap(NULL, len, prot, flags, fd, offset);

	if (p == MAP_FAILED)
		return -errno;
	munmap(p, len);
	return 0;
}

/*
 * The eventfd's count once it is nonzero, waiting up to 1 s: the kernel
 * signals it just after it publishes the completion the caller already saw.
 */
static __u64 efd_count_wait(int efd)
{
	struct pollfd p = { .fd = efd, .events = POLLIN };

	poll(&p, 1, 1000);
	return efd_count(efd);
}

/*
 * The arm word once the kernel cleared it, waiting up to 1 s: it clears it
 * just after it publishes the completion the caller already saw.
 */
static __u32 armed_wait(const struct memreg_queue *q)
{
	int i;

	for (i = 0; i < 1000 && mrq_armed(q); i++)
		usleep(1000);
	return mrq_armed(q);
}

/* poll() of `events` with timeout 0: the returned events, 0, or -1 on error. */
static int poll_now(int fd, short events)
{
	struct pollfd p = { .fd = fd, .events = events };
	int n = poll(&p, 1, 0);

	if (n < 0)
		return -1;
	return n ? p.revents : 0;
}

/* A context that never evicts for idleness and parks (1024 at most). */
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

/* Waits up to `ms` for the module-wide counters to be back at `base`. */
static int wait_baseline(const struct memreg_global_stats *base, int ms)
{
	struct memreg_global_stats g;
	int i;

	for (i = 0; i <= ms / 10; i++) {
		if (mr_global_now(&g))
			return -EIO;
		if (g.contexts == base->contexts && g.regions == base->regions &&
		    g.pages_pinned == base->pages_pinned)
			return 0;
		usleep(10000);
	}
	fprintf(stderr, "global: contexts %llu regions %llu pages %llu, want %llu %llu %llu\n",
		(unsigned long long)g.contexts, (unsigned long long)g.regions,
		(unsigned long long)g.pages_pinned, (unsigned long long)base->contexts,
		(unsigned long long)base->regions, (unsigned long long)base->pages_pinned);
	return -ETIMEDOUT;
}

/* A thread blocked in poll(). */
struct waiter {
	int fd;
	short events;
	int timeout_ms;
	pid_t tid;
	int done;
	int n;
	short revents;
	__u64 elapsed_us;
	pthread_t th;
};

static void *poll_waiter(void *arg)
{
	struct waiter *w = arg;
	struct pollfd p = { .fd = w->fd, .events = w->events };
	__u64 t0;

	__atomic_store_n(&w->tid, (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
	t0 = mrq_now_us();
	w->n = poll(&p, 1, w->timeout_ms);
	w->elapsed_us = mrq_now_us() - t0;
	w->revents = p.revents;
	__atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * Starts a thread polling `fd` for `events` (timeout `timeout_ms`) and waits
 * until it sleeps; returns 0, or -1 if it could not start or already
 * returned.
 */
static int start_waiter(struct waiter *w, int fd, short events, int timeout_ms)
{
	int i;

	memset(w, 0, sizeof(*w));
	w->fd = fd;
	w->events = events;
	w->timeout_ms = timeout_ms;
	if (pthread_create(&w->th, NULL, poll_waiter, w))
		return -1;
	for (i = 0; i < 500 && !__atomic_load_n(&w->tid, __ATOMIC_ACQUIRE); i++)
		usleep(10000);
	for (i = 0; i < 500 && !thread_sleeping(w->tid); i++)
		usleep(10000);
	usleep(100000);
	return __atomic_load_n(&w->done, __ATOMIC_ACQUIRE) ? -1 : 0;
}

/* Nothing more completes on `q` for QUIET_MS; cq_tail stays `tail`. */
static void expect_quiet(struct __test_metadata *_metadata, const struct memreg_queue *q, __u32 tail)
{
	usleep(QUIET_MS * 1000);
	EXPECT_EQ(tail, memreg_queue_cq_tail(q));
}

/* The time the worker may take to go back to sleep, in ms. */
static int sleep_ms(int fd)
{
	struct memreg_queue_stats s;

	if (memreg_queue_stats(fd, &s))
		return 2000;
	return 2000 + (int)(s.poll_us / 1000);
}

/*
 * Makes `q` (sq_entries == cq_entries == 4) stop for a full completion
 * ring with a full submission ring: user_data 0..3 completed and not
 * reaped, 4..7 posted and not taken.
 */
static void fill_both_rings(struct __test_metadata *_metadata, struct memreg_queue *q)
{
	struct memreg_sqe s;
	__u64 i;

	ASSERT_EQ(4, q->sq_entries);
	ASSERT_EQ(4, q->cq_entries);
	for (i = 0; i < 4; i++) {
		s = mr_sqe_nop(i);
		ASSERT_EQ(0, memreg_queue_post_wait(q, &s, 5000));
	}
	ASSERT_EQ(0, mrq_wait_tail(q, 4, 5000));
	for (i = 4; i < 8; i++) {
		s = mr_sqe_nop(i);
		ASSERT_EQ(0, memreg_queue_post_wait(q, &s, 5000)) TH_LOG("post %llu", (unsigned long long)i);
	}
	ASSERT_EQ(0, mrq_wait_flags(q, MEMREG_QUEUE_CQ_FULL, MEMREG_QUEUE_CQ_FULL, 5000))
		TH_LOG("flags %#x", memreg_queue_flags(q));
	/* Then, its polling window over, it sleeps. */
	EXPECT_EQ(0, mrq_wait_flags(q, ~0U, MEMREG_QUEUE_CQ_FULL | MEMREG_QUEUE_NEED_WAKEUP,
				    sleep_ms(q->fd))) TH_LOG("flags %#x", memreg_queue_flags(q));
	EXPECT_EQ(4, memreg_queue_sq_head(q));
	EXPECT_EQ(4, memreg_queue_cq_tail(q));
}

/* ---- The fixture: a context with one queue and two registered buffers ---- */

FIXTURE(dp)
{
	int fd;
	int efd;		/* the queue's eventfd, non-blocking */
	struct memreg_queue q;		/* queue 0: QSQ, QCQ */
	struct memreg_master m;
	char *src, *dst;	/* BUF_LEN each, filled with 's' and 'd' */
	struct memreg_register rs, rd;	/* both RW */
};

FIXTURE_SETUP(dp)
{
	self->efd = -1;
	self->src = self->dst = NULL;
	memset(&self->q, 0, sizeof(self->q));
	memset(&self->m, 0, sizeof(self->m));
	self->fd = open_ctx();
	ASSERT_GE(self->fd, 0);
	self->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ASSERT_GE(self->efd, 0);
	ASSERT_EQ(0, memreg_queue_init(self->fd, QSQ, QCQ, self->efd, &self->q));
	ASSERT_EQ(0, self->q.index);
	ASSERT_EQ(0, memreg_master_init(self->fd, &self->m));
	self->src = map_buf(BUF_LEN, 's');
	self->dst = map_buf(BUF_LEN, 'd');
	ASSERT_NE(NULL, self->src);
	ASSERT_NE(NULL, self->dst);
	ASSERT_EQ(0, memreg_register(self->fd, self->src, BUF_LEN, RW, &self->rs));
	ASSERT_EQ(0, memreg_register(self->fd, self->dst, BUF_LEN, RW, &self->rd));
	ASSERT_EQ((__u64)(unsigned long)self->src, self->rs.region_addr);
	ASSERT_EQ((__u64)(unsigned long)self->dst, self->rd.region_addr);
}

FIXTURE_TEARDOWN(dp)
{
	memreg_queue_exit(&self->q);
	memreg_master_exit(&self->m);
	if (self->fd >= 0)
		close(self->fd);
	if (self->efd >= 0)
		close(self->efd);
	if (self->src)
		munmap(self->src, BUF_LEN);
	if (self->dst)
		munmap(self->dst, BUF_LEN);
}

/* Consumes every completion, every master entry and the eventfd's count. */
static void drain(FIXTURE_DATA(dp) *self)
{
	memreg_reap_cqes(&self->q, NULL, ~0U);
	mr_master_set_head(&self->m, mr_master_tail(&self->m));
	efd_count(self->efd);
}

/* ---- QUEUE_CREATE ---- */

TEST(queue_create_refuses_bad_arguments)
{
	static const struct { __u32 sq, cq; } bad[] = {
		{ 0, 0 }, { 0, 1 }, { 3, 4 }, { 4, 2 }, { 4, 6 }, { 1, 0 }, { 2, 1 },
		{ 1, 3 }, { 6, 8 }, { MEMREG_MAX_SQ_ENTRIES * 2, MEMREG_MAX_CQ_ENTRIES },
		{ 4, MEMREG_MAX_CQ_ENTRIES * 2 }, { 0x80000000u, 0x80000000u },
		{ MEMREG_MAX_SQ_ENTRIES, MEMREG_MAX_SQ_ENTRIES / 2 },
	};
	struct memreg_queue_create c;
	int fd = open_ctx(), pfd[2], closed, efd;
	size_t i;

	ASSERT_GE(fd, 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		EXPECT_EQ(-EINVAL, memreg_queue_create(fd, bad[i].sq, bad[i].cq, -1, &c))
			TH_LOG("sq %u cq %u", bad[i].sq, bad[i].cq);
	}
	/* The eventfd: a file that is not one, a number that is no file. */
	ASSERT_EQ(0, pipe(pfd));
	EXPECT_EQ(-EINVAL, memreg_queue_create(fd, 4, 4, pfd[0], &c));
	EXPECT_EQ(-EINVAL, memreg_queue_create(fd, 4, 4, fd, &c));
	closed = dup(pfd[1]);
	ASSERT_GE(closed, 0);
	close(closed);
	EXPECT_EQ(-EBADF, memreg_queue_create(fd, 4, 4, closed, &c));
	i = -memreg_queue_create(fd, 4, 4, -2, &c);
	EXPECT_TRUE(i == EBADF || i == EINVAL) TH_LOG("eventfd -2: %zu", i);
	/* Reserved fields. */
	memset(&c, 0, sizeof(c));
	c.sq_entries = c.cq_entries = 4;
	c.eventfd = -1;
	c.reserved[0] = 1;
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_QUEUE_CREATE, &c));
	EXPECT_EQ(EINVAL, errno);
	c.reserved[0] = 0;
	c.reserved[1] = 1ULL << 63;
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_QUEUE_CREATE, &c));
	EXPECT_EQ(EINVAL, errno);

	/* Nothing was created: no master ring, no queue 0. */
	EXPECT_EQ(-EINVAL, try_mmap(fd, memreg_master_bytes(), PROT_READ, MAP_SHARED,
				    MEMREG_MMAP_MASTER));
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ, MAP_SHARED, MEMREG_MMAP_CQ(0)));

	/* The first good one is queue 0, with an eventfd or without. */
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ASSERT_GE(efd, 0);
	/* A one-slot submission ring is refused: published and free would look alike. */
	EXPECT_EQ(-EINVAL, memreg_queue_create(fd, 1, 1, -1, &c));
	EXPECT_EQ(-EINVAL, memreg_queue_create(fd, 1, 2, -1, &c));
	ASSERT_EQ(0, memreg_queue_create(fd, 2, 2, -1, &c));
	EXPECT_EQ(0, c.queue);
	EXPECT_EQ(2, c.sq_entries);
	EXPECT_EQ(2, c.cq_entries);
	EXPECT_EQ(memreg_sq_bytes(2), c.sq_bytes);
	EXPECT_EQ(memreg_cq_bytes(2), c.cq_bytes);
	EXPECT_EQ(0, c.reserved[0]);
	EXPECT_EQ(0, c.reserved[1]);
	ASSERT_EQ(0, memreg_queue_create(fd, MEMREG_MAX_SQ_ENTRIES, MEMREG_MAX_CQ_ENTRIES, efd, &c));
	EXPECT_EQ(1, c.queue);
	EXPECT_EQ(memreg_sq_bytes(MEMREG_MAX_SQ_ENTRIES), c.sq_bytes);
	EXPECT_EQ(memreg_cq_bytes(MEMREG_MAX_CQ_ENTRIES), c.cq_bytes);
	/* A failure in between takes no index. */
	EXPECT_EQ(-EINVAL, memreg_queue_create(fd, 8, 4, -1, &c));
	ASSERT_EQ(0, memreg_queue_create(fd, 2, 2, efd, &c));
	EXPECT_EQ(2, c.queue);
	/* Now the master ring exists. */
	EXPECT_EQ(0, try_mmap(fd, memreg_master_bytes(), PROT_READ, MAP_SHARED, MEMREG_MMAP_MASTER));
	close(efd);
	close(pfd[0]);
	close(pfd[1]);
	close(fd);
}

/* A result that cannot be written back: EFAULT, and no queue. */
TEST(queue_create_result_not_written_creates_no_queue)
{
	struct memreg_queue_create c, *ro;
	int fd = open_ctx();

	ASSERT_GE(fd, 0);
	ro = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, ro);
	*ro = (struct memreg_queue_create){ .sq_entries = 4, .cq_entries = 4, .eventfd = -1 };
	ASSERT_EQ(0, mprotect(ro, PAGE, PROT_READ));
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_QUEUE_CREATE, ro));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ, MAP_SHARED, MEMREG_MMAP_CQ(0)));
	EXPECT_EQ(-EINVAL, memreg_doorbell(fd, 0));
	ASSERT_EQ(0, memreg_queue_create(fd, 4, 4, -1, &c));
	EXPECT_EQ(0, c.queue);
	munmap(ro, PAGE);
	close(fd);
}

/* Mapping lengths follow the sizes; the 65th queue is refused. */
TEST(queue_sizes_and_limit)
{
	static const struct { __u32 sq, cq; } sizes[] = {
		{ 2, 2 }, { 2, 8 }, { 2, 4 }, { 4, 4 }, { 8, 1024 }, { 16, 16 }, { 32, 64 },
		{ 64, 128 }, { 128, 128 }, { 256, 4096 },
	};
	struct memreg_queue_create c;
	int fd = open_ctx(), i, n = sizeof(sizes) / sizeof(sizes[0]);

	ASSERT_GE(fd, 0);
	for (i = 0; i < MEMREG_MAX_QUEUES; i++) {
		__u32 sq = sizes[i % n].sq, cq = sizes[i % n].cq;

		if (i == MEMREG_MAX_QUEUES - 1)
			sq = MEMREG_MAX_SQ_ENTRIES, cq = MEMREG_MAX_SQ_ENTRIES;
		ASSERT_EQ(0, memreg_queue_create(fd, sq, cq, -1, &c)) TH_LOG("queue %d", i);
		EXPECT_EQ(i, c.queue);
		EXPECT_EQ(memreg_sq_bytes(sq), c.sq_bytes) TH_LOG("queue %d sq %u", i, sq);
		EXPECT_EQ(memreg_cq_bytes(cq), c.cq_bytes) TH_LOG("queue %d cq %u", i, cq);
		EXPECT_EQ(0, c.sq_bytes % PAGE);
		EXPECT_EQ(0, c.cq_bytes % PAGE);
	}
	EXPECT_EQ(-ENOSPC, memreg_queue_create(fd, 2, 2, -1, &c));
	EXPECT_EQ(-ENOSPC, memreg_queue_create(fd, 4, 8, -1, &c));
	/* The last one is there and mapped like any other. */
	EXPECT_EQ(0, try_mmap(fd, memreg_sq_bytes(MEMREG_MAX_SQ_ENTRIES), PROT_READ | PROT_WRITE,
			      MAP_SHARED, MEMREG_MMAP_SQ(MEMREG_MAX_QUEUES - 1)));
	EXPECT_EQ(0, try_mmap(fd, memreg_cq_bytes(MEMREG_MAX_SQ_ENTRIES), PROT_READ, MAP_SHARED,
			      MEMREG_MMAP_CQ(MEMREG_MAX_QUEUES - 1)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ, MAP_SHARED,
				    MEMREG_MMAP_CQ(MEMREG_MAX_QUEUES)));
	close(fd);
}

/* What a new queue's mappings hold. */
TEST(queue_fresh_state)
{
	struct memreg_queue_create c;
	struct memreg_master m;
	struct memreg_queue q, q2;
	struct memreg_sq_user *again;
	size_t i;
	int fd = open_ctx();

	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, memreg_queue_create(fd, 8, 32, -1, &c));
	ASSERT_EQ(0, memreg_queue_mmap(fd, &c, &q));
	for (i = 0; i < 8; i++) {
		static const struct memreg_sqe zero;

		EXPECT_EQ(i, q.slots[i].seq) TH_LOG("slot %zu", i);
		EXPECT_EQ(0, memcmp(&zero, &q.slots[i].sqe, sizeof(zero))) TH_LOG("slot %zu", i);
	}
	EXPECT_EQ(0, q.user->insert);
	EXPECT_EQ(0, q.user->cq_head);
	EXPECT_EQ(0, q.user->cq_arm);
	EXPECT_EQ(0, q.ring->sq_head);
	EXPECT_EQ(0, q.ring->cq_tail);
	EXPECT_EQ(MEMREG_QUEUE_NEED_WAKEUP, q.ring->flags);
	EXPECT_EQ(8, q.ring->sq_entries);
	EXPECT_EQ(32, q.ring->cq_entries);
	for (i = 0; i < 5; i++)
		EXPECT_EQ(0, q.ring->reserved[i]);
	for (i = 0; i < 32; i++) {
		EXPECT_EQ(0, q.cqes[i].user_data);
		EXPECT_EQ(0, q.cqes[i].status);
	}

	ASSERT_EQ(0, memreg_master_init(fd, &m));
	EXPECT_EQ(0, m.ring->tail);
	EXPECT_EQ(0, m.ring->flags);
	EXPECT_EQ(0, m.ring->overflows);
	EXPECT_EQ(0, m.user->head);
	EXPECT_EQ(0, m.user->arm);

	/* A second, shorter mapping of the submission ring is the same memory. */
	again = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, MEMREG_MMAP_SQ(0));
	ASSERT_NE(MAP_FAILED, again);
	again->reserved[0] = 0x1234567890ULL;
	EXPECT_EQ(0x1234567890ULL, __atomic_load_n(&q.user->reserved[0], __ATOMIC_ACQUIRE));
	q.user->reserved[0] = 0;
	munmap(again, PAGE);

	/* The next queue has its own sizes and state. */
	ASSERT_EQ(0, memreg_queue_init(fd, 2, 16, -1, &q2));
	EXPECT_EQ(1, q2.index);
	EXPECT_EQ(2, q2.ring->sq_entries);
	EXPECT_EQ(16, q2.ring->cq_entries);
	EXPECT_EQ(MEMREG_QUEUE_NEED_WAKEUP, q2.ring->flags);
	EXPECT_EQ(0, q2.slots[0].seq);
	EXPECT_EQ(1, q2.slots[1].seq);
	EXPECT_EQ(8, q.ring->sq_entries);
	memreg_queue_exit(&q2);
	memreg_queue_exit(&q);
	memreg_master_exit(&m);
	close(fd);
}

TEST(queue_mmap_refuses_bad_requests)
{
	struct memreg_queue_create c;
	void *cq;
	int fd = open_ctx();

	ASSERT_GE(fd, 0);
	/* Nothing before the first queue. */
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_SQ(0)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ, MAP_SHARED, MEMREG_MMAP_CQ(0)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, memreg_master_bytes(), PROT_READ, MAP_SHARED,
				    MEMREG_MMAP_MASTER));
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_MASTER_USER));

	ASSERT_EQ(0, memreg_queue_create(fd, 4, 8, -1, &c));
	ASSERT_EQ(0, c.queue);
	/* Unknown queues. */
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_SQ(1)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ, MAP_SHARED, MEMREG_MMAP_CQ(1)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ, MAP_SHARED, MEMREG_MMAP_CQ(63)));
	/* The submission ring: shared, not executable, not longer than sq_bytes. */
	EXPECT_EQ(0, try_mmap(fd, c.sq_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
			      MEMREG_MMAP_SQ(0)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, c.sq_bytes + PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_SQ(0)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, c.sq_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE,
				    MEMREG_MMAP_SQ(0)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, c.sq_bytes, PROT_READ | PROT_WRITE | PROT_EXEC,
				    MAP_SHARED, MEMREG_MMAP_SQ(0)));
	/* The completion ring: read-only. */
	EXPECT_EQ(0, try_mmap(fd, c.cq_bytes, PROT_READ, MAP_SHARED, MEMREG_MMAP_CQ(0)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, c.cq_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_CQ(0)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, c.cq_bytes, PROT_WRITE, MAP_SHARED, MEMREG_MMAP_CQ(0)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, c.cq_bytes, PROT_READ, MAP_PRIVATE, MEMREG_MMAP_CQ(0)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, c.cq_bytes, PROT_READ | PROT_EXEC, MAP_SHARED,
				    MEMREG_MMAP_CQ(0)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, c.cq_bytes + PAGE, PROT_READ, MAP_SHARED,
				    MEMREG_MMAP_CQ(0)));
	/* The master ring: read-only; its user page: read-write, one page. */
	EXPECT_EQ(0, try_mmap(fd, memreg_master_bytes(), PROT_READ, MAP_SHARED, MEMREG_MMAP_MASTER));
	EXPECT_EQ(-EINVAL, try_mmap(fd, memreg_master_bytes(), PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_MASTER));
	EXPECT_EQ(0, try_mmap(fd, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
			      MEMREG_MMAP_MASTER_USER));
	EXPECT_EQ(-EINVAL, try_mmap(fd, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_MASTER_USER));
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE,
				    MEMREG_MMAP_MASTER_USER));
	/* Each area is mapped from its first byte. */
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_SQ(0) + PAGE));
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ, MAP_SHARED, MEMREG_MMAP_CQ(0) + PAGE));
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ, MAP_SHARED, MEMREG_MMAP_MASTER + PAGE));
	/* A read-only mapping cannot become writable, nor any grow. */
	cq = mmap(NULL, c.cq_bytes, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_CQ(0));
	ASSERT_NE(MAP_FAILED, cq);
	EXPECT_EQ(-1, mprotect(cq, c.cq_bytes, PROT_READ | PROT_WRITE));
	EXPECT_EQ(EACCES, errno);
	EXPECT_EQ(MAP_FAILED, mremap(cq, c.cq_bytes, c.cq_bytes + PAGE, MREMAP_MAYMOVE));
	munmap(cq, c.cq_bytes);
	cq = mmap(NULL, c.sq_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, MEMREG_MMAP_SQ(0));
	ASSERT_NE(MAP_FAILED, cq);
	EXPECT_EQ(MAP_FAILED, mremap(cq, c.sq_bytes, c.sq_bytes + PAGE, MREMAP_MAYMOVE));
	munmap(cq, c.sq_bytes);
	close(fd);
}

/* The read-only mappings cannot be written; the read-write ones can. */
TEST(queue_written_mappings)
{
	enum { SQ, CQ, MASTER, MASTER_USER, NR };
	int what;

	for (what = SQ; what < NR; what++) {
		pid_t pid = fork();

		ASSERT_GE(pid, 0);
		if (pid == 0) {
			struct memreg_master m;
			struct memreg_queue q;
			int fd = open_ctx();

			no_core();
			if (fd < 0 || memreg_queue_init(fd, 4, 4, -1, &q) || memreg_master_init(fd, &m))
				_exit(1);
			switch (what) {
			case SQ:
				*(volatile __u64 *)&q.user->reserved[5] = 7;
				if (__atomic_load_n(&q.user->reserved[5], __ATOMIC_ACQUIRE) != 7)
					_exit(2);
				break;
			case CQ:
				*(volatile __u32 *)&q.ring->cq_tail = 1;
				break;
			case MASTER:
				*(volatile __u32 *)&m.ring->tail = 1;
				break;
			case MASTER_USER:
				*(volatile __u64 *)&m.user->reserved[6] = 1;
				break;
			}
			_exit(0);
		}
		if (what == SQ || what == MASTER_USER) {
			EXPECT_EQ(0, wait_exit(pid)) TH_LOG("area %d", what);
		} else {
			EXPECT_EQ(SIGSEGV, wait_signal(pid)) TH_LOG("area %d", what);
		}
	}
}

/* The queue calls and mappings belong to the file's owner, not to a fork child. */
TEST(queue_calls_are_owner_only)
{
	struct memreg_queue_stats s;
	struct memreg_queue_create c;
	int fd = open_ctx();
	pid_t pid;

	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, memreg_queue_create(fd, 4, 4, -1, &c));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		struct memreg_queue_create c2;

		if (memreg_queue_create(fd, 4, 4, -1, &c2) != -EPERM)
			_exit(1);
		if (memreg_doorbell(fd, 0) != -EPERM)
			_exit(2);
		if (memreg_queue_stats(fd, &s) != -EPERM)
			_exit(3);
		if (try_mmap(fd, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, MEMREG_MMAP_SQ(0)) != -EPERM)
			_exit(4);
		if (try_mmap(fd, PAGE, PROT_READ, MAP_SHARED, MEMREG_MMAP_CQ(0)) != -EPERM)
			_exit(5);
		if (try_mmap(fd, memreg_master_bytes(), PROT_READ, MAP_SHARED,
			     MEMREG_MMAP_MASTER) != -EPERM)
			_exit(6);
		_exit(0);
	}
	EXPECT_EQ(0, wait_exit(pid));
	/* The child created nothing and rang nothing. */
	ASSERT_EQ(0, memreg_queue_create(fd, 4, 4, -1, &c));
	EXPECT_EQ(1, c.queue);
	ASSERT_EQ(0, memreg_queue_stats(fd, &s));
	EXPECT_EQ(0, s.doorbells);
	close(fd);
}

/* A child does not inherit the queue mappings. */
TEST(queue_mappings_are_not_inherited)
{
	struct memreg_master m;
	struct memreg_queue q;
	const void *areas[4];
	int fd = open_ctx();
	size_t i;

	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, memreg_queue_init(fd, 4, 4, -1, &q));
	ASSERT_EQ(0, memreg_master_init(fd, &m));
	areas[0] = q.user;
	areas[1] = q.ring;
	areas[2] = m.ring;
	areas[3] = m.user;
	for (i = 0; i < 4; i++) {
		pid_t pid = fork();

		ASSERT_GE(pid, 0);
		if (pid == 0) {
			no_core();
			(void)*(const volatile __u32 *)areas[i];
			_exit(0);
		}
		EXPECT_EQ(SIGSEGV, wait_signal(pid)) TH_LOG("area %zu", i);
	}
	EXPECT_EQ(4, q.ring->sq_entries);
	memreg_queue_exit(&q);
	memreg_master_exit(&m);
	close(fd);
}

TEST(doorbell_refuses_bad_requests)
{
	struct memreg_queue_stats s;
	struct memreg_doorbell d = { .queue = 0, .reserved = 1 };
	struct memreg_queue q;
	int fd = open_ctx(), fd0 = open_ctx(), i;

	ASSERT_GE(fd, 0);
	ASSERT_GE(fd0, 0);
	/* Before any queue. */
	EXPECT_EQ(-EINVAL, memreg_doorbell(fd0, 0));
	close(fd0);
	ASSERT_EQ(0, memreg_queue_init(fd, 4, 4, -1, &q));
	ASSERT_EQ(0, memreg_queue_stats(fd, &s));
	EXPECT_EQ(0, s.doorbells);
	/* On an empty ring: counted, nothing to do. */
	for (i = 0; i < 3; i++)
		EXPECT_EQ(0, memreg_doorbell(fd, 0));
	ASSERT_EQ(0, memreg_queue_stats(fd, &s));
	EXPECT_EQ(3, s.doorbells);
	EXPECT_EQ(0, s.requests);
	EXPECT_EQ(0, s.completions);
	EXPECT_EQ(0, memreg_queue_cq_tail(&q));
	EXPECT_EQ(0, memreg_queue_sq_head(&q));
	EXPECT_EQ(-EINVAL, memreg_doorbell(fd, 1));
	EXPECT_EQ(-EINVAL, memreg_doorbell(fd, MEMREG_MAX_QUEUES));
	EXPECT_EQ(-EINVAL, memreg_doorbell(fd, ~0U));
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_DOORBELL, &d));
	EXPECT_EQ(EINVAL, errno);
	/* The worker goes back to sleep. */
	EXPECT_EQ(0, mrq_wait_flags(&q, ~0U, MEMREG_QUEUE_NEED_WAKEUP, sleep_ms(fd)));
	memreg_queue_exit(&q);
	close(fd);
}

/* ---- The requests ---- */

TEST_F(dp, nop_returns_user_data)
{
	static const __u64 ud[] = { 0xfedcba9876543210ULL, 0, ~0ULL, 1 };
	struct memreg_sqe s;
	size_t i;

	for (i = 0; i < sizeof(ud) / sizeof(ud[0]); i++) {
		s = mr_sqe_nop(ud[i]);
		run_expect(_metadata, &self->q, &s, 0, 0);
	}
	EXPECT_EQ(4, memreg_queue_sq_head(&self->q));
	EXPECT_EQ(4, memreg_queue_cq_tail(&self->q));
	EXPECT_EQ(4, self->q.user->insert);
	/* A taken slot is free for the next lap. */
	for (i = 0; i < 4; i++)
		EXPECT_EQ(i + QSQ, mrq_seq(&self->q, i));
	for (i = 4; i < QSQ; i++)
		EXPECT_EQ(i, mrq_seq(&self->q, i));
}

TEST_F(dp, copy_moves_bytes)
{
	struct memreg_sqe s;
	size_t i;

	for (i = 0; i < BUF_LEN; i++)
		self->src[i] = (char)(i * 7 + 3);

	/* Across pages, at unaligned offsets. */
	s = mr_sqe_copy(1, self->rd.lkey, 100, self->rs.lkey, 3000, 5000);
	run_expect(_metadata, &self->q, &s, 0, 5000);
	EXPECT_EQ(0, memcmp(self->dst + 100, self->src + 3000, 5000));
	EXPECT_TRUE(all_bytes(self->dst, 100, 'd'));
	EXPECT_TRUE(all_bytes(self->dst + 5100, BUF_LEN - 5100, 'd'));

	/* Up to the last byte of both. */
	s = mr_sqe_copy(2, self->rd.lkey, BUF_LEN - 10, self->rs.lkey, BUF_LEN - 10, 10);
	run_expect(_metadata, &self->q, &s, 0, 10);
	EXPECT_EQ(0, memcmp(self->dst + BUF_LEN - 10, self->src + BUF_LEN - 10, 10));

	/* Nothing at all. */
	memset(self->dst, 'd', BUF_LEN);
	s = mr_sqe_copy(3, self->rd.lkey, 0, self->rs.lkey, 0, 0);
	run_expect(_metadata, &self->q, &s, 0, 0);
	EXPECT_TRUE(all_bytes(self->dst, BUF_LEN, 'd'));

	/* Everything. */
	s = mr_sqe_copy(4, self->rd.lkey, 0, self->rs.lkey, 0, BUF_LEN);
	run_expect(_metadata, &self->q, &s, 0, BUF_LEN);
	EXPECT_EQ(0, memcmp(self->dst, self->src, BUF_LEN));

	/* Within one registration. */
	s = mr_sqe_copy(5, self->rs.lkey, 2 * PAGE, self->rs.lkey, 0, PAGE);
	run_expect(_metadata, &self->q, &s, 0, PAGE);
	for (i = 0; i < PAGE; i++)
		if (self->src[2 * PAGE + i] != (char)(i * 7 + 3))
			break;
	EXPECT_EQ(PAGE, i);
}

/*
 * Within one registration: overlapping ranges are copied as by memmove
 * when the destination starts below the source, or when the length is at
 * most one 16 KiB step.
 */
TEST_F(dp, copy_overlapping_ranges)
{
	char *want = malloc(BUF_LEN);
	struct memreg_sqe s;
	size_t i;

	ASSERT_NE(NULL, want);
	for (i = 0; i < BUF_LEN; i++)
		self->src[i] = (char)(i * 7 + i / 251);
	memcpy(want, self->src, BUF_LEN);

	/* Down, longer than a step. */
	s = mr_sqe_copy(1, self->rs.lkey, 0, self->rs.lkey, 100, 40000);
	run_expect(_metadata, &self->q, &s, 0, 40000);
	memmove(want, want + 100, 40000);
	EXPECT_EQ(0, memcmp(want, self->src, BUF_LEN));

	/* Up, within one step. */
	s = mr_sqe_copy(2, self->rs.lkey, 1000, self->rs.lkey, 900, 12000);
	run_expect(_metadata, &self->q, &s, 0, 12000);
	memmove(want + 1000, want + 900, 12000);
	EXPECT_EQ(0, memcmp(want, self->src, BUF_LEN));

	/* Onto itself. */
	s = mr_sqe_copy(3, self->rs.lkey, 5, self->rs.lkey, 5, 30000);
	run_expect(_metadata, &self->q, &s, 0, 30000);
	EXPECT_EQ(0, memcmp(want, self->src, BUF_LEN));
	free(want);
}

TEST_F(dp, copy_checks_access)
{
	struct memreg_register ro, wo, rem;
	char *bro = map_buf(2 * PAGE, 'r');
	char *bwo = map_buf(2 * PAGE, 'w');
	char *brem = map_buf(2 * PAGE, 'x');
	struct memreg_queue_stats st;
	struct memreg_sqe s;

	ASSERT_NE(NULL, bro);
	ASSERT_NE(NULL, bwo);
	ASSERT_NE(NULL, brem);
	ASSERT_EQ(0, memreg_register(self->fd, bro, 2 * PAGE, MEMREG_ACCESS_LOCAL_READ, &ro));
	ASSERT_EQ(0, memreg_register(self->fd, bwo, 2 * PAGE, MEMREG_ACCESS_LOCAL_WRITE, &wo));
	ASSERT_EQ(0, memreg_register(self->fd, brem, 2 * PAGE,
				 MEMREG_ACCESS_REMOTE_READ | MEMREG_ACCESS_REMOTE_WRITE, &rem));

	/* A destination without LOCAL_WRITE. */
	s = mr_sqe_copy(1, ro.lkey, 0, self->rs.lkey, 0, PAGE);
	run_expect(_metadata, &self->q, &s, -EACCES, 0);
	s = mr_sqe_copy(2, rem.lkey, 0, self->rs.lkey, 0, PAGE);
	run_expect(_metadata, &self->q, &s, -EACCES, 0);
	/* A source without LOCAL_READ. */
	s = mr_sqe_copy(3, self->rd.lkey, 0, wo.lkey, 0, PAGE);
	run_expect(_metadata, &self->q, &s, -EACCES, 0);
	s = mr_sqe_copy(4, self->rd.lkey, 0, rem.lkey, 0, PAGE);
	run_expect(_metadata, &self->q, &s, -EACCES, 0);
	/* Nothing moved. */
	EXPECT_TRUE(all_bytes(bro, 2 * PAGE, 'r'));
	EXPECT_TRUE(all_bytes(brem, 2 * PAGE, 'x'));
	EXPECT_TRUE(all_bytes(self->dst, BUF_LEN, 'd'));

	/* Read-only to write-only is what the rights allow. */
	s = mr_sqe_copy(5, wo.lkey, PAGE, ro.lkey, 0, PAGE);
	run_expect(_metadata, &self->q, &s, 0, PAGE);
	EXPECT_TRUE(all_bytes(bwo, PAGE, 'w'));
	EXPECT_TRUE(all_bytes(bwo + PAGE, PAGE, 'r'));

	ASSERT_EQ(0, memreg_queue_stats(self->fd, &st));
	EXPECT_EQ(5, st.requests);
	EXPECT_EQ(5, st.completions);
	EXPECT_EQ(4, st.errors);
	munmap(bro, 2 * PAGE);
	munmap(bwo, 2 * PAGE);
	munmap(brem, 2 * PAGE);
}

TEST_F(dp, copy_checks_keys)
{
	struct memreg_register e, o, p;
	struct memreg_sqe s;
	struct memreg_query qr;
	char *be = map_buf(2 * PAGE, 'e');
	char *bp = map_buf(2 * PAGE, 'p');
	__u64 future = (self->rd.lkey & 0xffffffULL) | (0xfffffULL << 24);
	int fd2;

	ASSERT_NE(NULL, be);
	ASSERT_NE(NULL, bp);
	/* Keys that name nothing: wrong random bits, an unused sequence. */
	s = mr_sqe_copy(1, self->rd.lkey ^ 1, 0, self->rs.lkey, 0, 64);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);
	s = mr_sqe_copy(2, self->rd.lkey, 0, self->rs.lkey ^ 0x800000, 0, 64);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);
	s = mr_sqe_copy(3, future, 0, self->rs.lkey, 0, 64);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);
	/* Remote keys are not local keys. */
	s = mr_sqe_copy(30, self->rd.rkey, 0, self->rs.lkey, 0, 64);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);
	s = mr_sqe_copy(31, self->rd.lkey, 0, self->rs.rkey, 0, 64);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);
	s = mr_sqe_deregister(32, self->rd.rkey);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);

	/* Another context's key. */
	fd2 = open_ctx();
	ASSERT_GE(fd2, 0);
	ASSERT_EQ(0, memreg_register(fd2, self->dst, BUF_LEN, RW, &o));
	if (o.lkey != self->rd.lkey && o.lkey != self->rs.lkey) {
		s = mr_sqe_copy(4, o.lkey, 0, self->rs.lkey, 0, 64);
		run_expect(_metadata, &self->q, &s, -ENOENT, 0);
	}
	close(fd2);

	/* A registration used (the key is known to the worker), then unmapped. */
	ASSERT_EQ(0, memreg_register(self->fd, be, 2 * PAGE, RW, &e));
	s = mr_sqe_copy(5, e.lkey, 0, self->rs.lkey, 0, 64);
	run_expect(_metadata, &self->q, &s, 0, 64);
	s = mr_sqe_copy(6, self->rd.lkey, 0, e.lkey, PAGE, 64);
	run_expect(_metadata, &self->q, &s, 0, 64);
	EXPECT_TRUE(all_bytes(self->dst, 64, 'e'));
	memset(self->dst, 'd', 64);
	ASSERT_EQ(0, munmap(be, 2 * PAGE));
	s = mr_sqe_copy(7, e.lkey, 0, self->rs.lkey, 0, 64);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);
	s = mr_sqe_copy(8, self->rd.lkey, 0, e.lkey, 0, 64);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);

	/* Parked: its key moves no data (DEREGISTER ended it for data); evicted by FLUSH: gone. */
	ASSERT_EQ(0, memreg_register(self->fd, bp, 2 * PAGE, RW, &p));
	s = mr_sqe_copy(9, p.lkey, 0, self->rs.lkey, 0, 64);
	run_expect(_metadata, &self->q, &s, 0, 64);
	ASSERT_EQ(0, memreg_deregister(self->fd, p.lkey));
	ASSERT_EQ(0, memreg_query(self->fd, p.lkey, &qr));
	ASSERT_EQ(MEMREG_STATE_VALID | MEMREG_STATE_PARKED, qr.state);
	s = mr_sqe_copy(10, p.lkey, 64, self->rs.lkey, 0, 64);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);
	s = mr_sqe_copy(12, self->rd.lkey, 0, p.lkey, 0, 64);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);
	EXPECT_TRUE(all_bytes(bp, 64, 's'));
	EXPECT_TRUE(all_bytes(bp + 64, 2 * PAGE - 64, 'p'));
	ASSERT_EQ(0, memreg_flush(self->fd, NULL));
	s = mr_sqe_copy(11, p.lkey, 0, self->rs.lkey, 0, 64);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);

	/* Ended by DEREGISTER with parking off. */
	ASSERT_EQ(0, mr_set_parking(self->fd, 0));
	memset(bp, 'p', 2 * PAGE);
	ASSERT_EQ(0, memreg_register(self->fd, bp, 2 * PAGE, RW, &p));
	s = mr_sqe_copy(12, self->rd.lkey, 0, p.lkey, 0, 64);
	run_expect(_metadata, &self->q, &s, 0, 64);
	EXPECT_TRUE(all_bytes(self->dst, 64, 'p'));
	memset(self->dst, 'd', 64);
	ASSERT_EQ(0, memreg_deregister(self->fd, p.lkey));
	ASSERT_EQ(-ENOENT, memreg_query(self->fd, p.lkey, &qr));
	s = mr_sqe_copy(13, self->rd.lkey, 0, p.lkey, 0, 64);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);
	s = mr_sqe_copy(14, p.lkey, 0, self->rs.lkey, 0, 64);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);

	EXPECT_TRUE(all_bytes(self->dst, BUF_LEN, 'd'));
	EXPECT_TRUE(all_bytes(bp, 2 * PAGE, 'p'));
	munmap(bp, 2 * PAGE);
}

TEST_F(dp, copy_checks_bounds)
{
	struct memreg_cqe c;
	struct memreg_sqe s;
	__u64 big = ~0ULL - 5;

	s = mr_sqe_copy(1, self->rd.lkey, BUF_LEN - 10, self->rs.lkey, 0, 11);
	run_expect(_metadata, &self->q, &s, -EINVAL, 0);
	s = mr_sqe_copy(2, self->rd.lkey, 0, self->rs.lkey, BUF_LEN - 10, 11);
	run_expect(_metadata, &self->q, &s, -EINVAL, 0);
	s = mr_sqe_copy(3, self->rd.lkey, BUF_LEN, self->rs.lkey, 0, 1);
	run_expect(_metadata, &self->q, &s, -EINVAL, 0);
	s = mr_sqe_copy(4, self->rd.lkey, 0, self->rs.lkey, 0, BUF_LEN + 1);
	run_expect(_metadata, &self->q, &s, -EINVAL, 0);
	s = mr_sqe_copy(5, self->rd.lkey, 0, self->rs.lkey, 0, MEMREG_MAX_LENGTH + 1);
	run_expect(_metadata, &self->q, &s, -EINVAL, 0);
	s = mr_sqe_copy(6, self->rd.lkey, 1ULL << 40, self->rs.lkey, 0, 1);
	run_expect(_metadata, &self->q, &s, -EINVAL, 0);

	/* offset + length wraps. */
	s = mr_sqe_copy(7, self->rd.lkey, big, self->rs.lkey, 0, 10);
	ASSERT_EQ(0, memreg_queue_run(&self->q, &s, &c));
	EXPECT_TRUE(c.status == -EOVERFLOW || c.status == -EINVAL) TH_LOG("status %d", c.status);
	EXPECT_EQ(0, c.bytes);
	s = mr_sqe_copy(8, self->rd.lkey, 0, self->rs.lkey, big, 10);
	ASSERT_EQ(0, memreg_queue_run(&self->q, &s, &c));
	EXPECT_TRUE(c.status == -EOVERFLOW || c.status == -EINVAL) TH_LOG("status %d", c.status);
	EXPECT_EQ(0, c.bytes);
	s = mr_sqe_copy(9, self->rd.lkey, 1, self->rs.lkey, 1, ~0ULL);
	ASSERT_EQ(0, memreg_queue_run(&self->q, &s, &c));
	EXPECT_TRUE(c.status == -EOVERFLOW || c.status == -EINVAL) TH_LOG("status %d", c.status);

	EXPECT_TRUE(all_bytes(self->dst, BUF_LEN, 'd'));
	EXPECT_TRUE(all_bytes(self->src, BUF_LEN, 's'));
}

/* A field a request must leave zero, set: -EINVAL, and the request does nothing. */
TEST_F(dp, nonzero_unused_fields_are_refused)
{
	enum { F_FLAGS, F_FLAGS_HIGH, F_RES0, F_RES1, F_RES1_HIGH, F_KEY, F_OFFSET, F_SRC_KEY,
	       F_SRC_OFFSET, F_LENGTH, F_NR };
	struct memreg_register d;
	struct memreg_query qr;
	struct memreg_queue_stats st;
	struct memreg_sqe base[4], list[4 * F_NR];
	struct memreg_cqe c[4 * F_NR];
	char *bd = map_buf(PAGE, 'k');
	unsigned int n = 0, i, b, f;

	ASSERT_NE(NULL, bd);
	for (i = 0; i < 5; i++)
		ASSERT_EQ(0, memreg_register(self->fd, bd, PAGE, RW, &d));
	base[0] = mr_sqe_nop(0);
	base[1] = mr_sqe_fence(0);
	base[2] = mr_sqe_deregister(0, d.lkey);
	base[3] = mr_sqe_copy(0, self->rd.lkey, 0, self->rs.lkey, 0, 256);
	for (b = 0; b < 4; b++) {
		for (f = 0; f < F_NR; f++) {
			struct memreg_sqe s = base[b];

			switch (f) {
			case F_FLAGS: s.flags = 1; break;
			case F_FLAGS_HIGH: s.flags = 0x80; break;
			case F_RES0: s.reserved0 = 1; break;
			case F_RES1: s.peer = 1; break;
			case F_RES1_HIGH: s.peer = 0x80000000u; break;
			case F_KEY: s.key = self->rd.lkey; break;
			case F_OFFSET: s.offset = 1; break;
			case F_SRC_KEY: s.src_key = self->rs.lkey; break;
			case F_SRC_OFFSET: s.src_offset = 1; break;
			case F_LENGTH: s.length = 1; break;
			}
			/* Fields the opcode uses. */
			if (b == 2 && f == F_KEY)
				continue;
			if (b == 3 && f >= F_KEY)
				continue;
			s.user_data = b << 8 | f;
			list[n++] = s;
		}
	}
	for (i = 0; i < n; i++)
		ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &list[i], 5000));
	ASSERT_EQ(n, memreg_wait_cqes(&self->q, c, n, 5000));
	for (i = 0; i < n; i++)
		expect_cqe(_metadata, &c[i], list[i].user_data, -EINVAL, 0);
	/* Nothing moved, no reference dropped. */
	EXPECT_TRUE(all_bytes(self->dst, BUF_LEN, 'd'));
	ASSERT_EQ(0, memreg_query(self->fd, d.lkey, &qr));
	EXPECT_EQ(5, qr.refcount);
	ASSERT_EQ(0, memreg_queue_stats(self->fd, &st));
	EXPECT_EQ(n, st.requests);
	EXPECT_EQ(n, st.errors);
	munmap(bd, PAGE);
}

TEST_F(dp, unknown_opcodes_are_refused)
{
	/* The first two past the table, and the high ones (8 and 9 are the pool's since v3). */
	static const __u8 ops[] = { MEMREG_OP_LAST, MEMREG_OP_LAST + 1, 0x7f, 0x80, 0xfe, 0xff };
	struct memreg_sqe s;
	size_t i;

	for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		s = (struct memreg_sqe){ .opcode = ops[i], .user_data = 100 + i };
		run_expect(_metadata, &self->q, &s, -EINVAL, 0);
		/* With the fields of a good COPY. */
		s = mr_sqe_copy(200 + i, self->rd.lkey, 0, self->rs.lkey, 0, 128);
		s.opcode = ops[i];
		run_expect(_metadata, &self->q, &s, -EINVAL, 0);
	}
	EXPECT_TRUE(all_bytes(self->dst, BUF_LEN, 'd'));
}

TEST_F(dp, fence_completes_after_everything_before_it)
{
	struct memreg_cqe c[40];
	struct memreg_sqe s;
	__u64 i;

	for (i = 0; i < BUF_LEN; i++)
		self->src[i] = (char)(i * 13 + 1);
	for (i = 0; i < 32; i++) {
		s = mr_sqe_copy(i, self->rd.lkey, (i % 16) * PAGE, self->rs.lkey,
				(i % 16) * PAGE, PAGE);
		ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	}
	s = mr_sqe_fence(1000);
	ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	s = mr_sqe_nop(1001);
	ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	s = mr_sqe_fence(1002);
	ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	ASSERT_EQ(35, memreg_wait_cqes(&self->q, c, 35, 10000));
	for (i = 0; i < 32; i++)
		expect_cqe(_metadata, &c[i], i, 0, PAGE);
	expect_cqe(_metadata, &c[32], 1000, 0, 0);
	expect_cqe(_metadata, &c[33], 1001, 0, 0);
	expect_cqe(_metadata, &c[34], 1002, 0, 0);
	EXPECT_EQ(0, memcmp(self->dst, self->src, BUF_LEN));
}

TEST_F(dp, deregister_request_drops_a_reference)
{
	struct memreg_register d, again;
	struct memreg_query qr;
	struct memreg_stats st;
	struct memreg_cqe c[2];
	struct memreg_sqe s;
	char *bd = map_buf(4 * PAGE, 'k');
	int i;

	ASSERT_NE(NULL, bd);
	for (i = 0; i < 3; i++)
		ASSERT_EQ(0, memreg_register(self->fd, bd, 4 * PAGE, RW, &d));
	s = mr_sqe_deregister(1, d.lkey);
	run_expect(_metadata, &self->q, &s, 0, 0);
	ASSERT_EQ(0, memreg_query(self->fd, d.lkey, &qr));
	EXPECT_EQ(2, qr.refcount);
	EXPECT_EQ(MEMREG_STATE_VALID, qr.state);
	/* Two at once. */
	s = mr_sqe_deregister(2, d.lkey);
	ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	s = mr_sqe_deregister(3, d.lkey);
	ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	ASSERT_EQ(2, memreg_wait_cqes(&self->q, c, 2, 5000));
	expect_cqe(_metadata, &c[0], 2, 0, 0);
	expect_cqe(_metadata, &c[1], 3, 0, 0);
	/* The last reference parks it, as the ioctl would. */
	ASSERT_EQ(0, memreg_query(self->fd, d.lkey, &qr));
	EXPECT_EQ(0, qr.refcount);
	EXPECT_EQ(MEMREG_STATE_VALID | MEMREG_STATE_PARKED, qr.state);
	/* Parked: no reference to drop. */
	s = mr_sqe_deregister(4, d.lkey);
	run_expect(_metadata, &self->q, &s, -EINVAL, 0);
	ASSERT_EQ(0, memreg_query(self->fd, d.lkey, &qr));
	EXPECT_EQ(MEMREG_STATE_VALID | MEMREG_STATE_PARKED, qr.state);
	/* Unknown keys. */
	s = mr_sqe_deregister(5, d.lkey ^ 2);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);
	s = mr_sqe_deregister(6, (0xfffffULL << 24) | 1);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);

	/* Revived with new keys (the old one is unknown), then ended by the request. */
	ASSERT_EQ(0, memreg_register(self->fd, bd, 4 * PAGE, RW, &again));
	EXPECT_EQ(MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED, again.flags);
	EXPECT_EQ(d.lkey >> 24, again.lkey >> 24);
	EXPECT_NE(d.lkey, again.lkey);
	s = mr_sqe_deregister(10, d.lkey);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);
	ASSERT_EQ(0, mr_set_parking(self->fd, 0));
	ASSERT_EQ(0, memreg_stats(self->fd, &st));
	EXPECT_EQ(3, st.registrations);
	s = mr_sqe_deregister(7, again.lkey);
	run_expect(_metadata, &self->q, &s, 0, 0);
	EXPECT_EQ(-ENOENT, memreg_query(self->fd, again.lkey, &qr));
	ASSERT_EQ(0, memreg_stats(self->fd, &st));
	EXPECT_EQ(2, st.registrations);
	EXPECT_EQ(1, st.deregistrations);
	s = mr_sqe_deregister(8, again.lkey);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);
	s = mr_sqe_copy(9, again.lkey, 0, self->rs.lkey, 0, 64);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);
	EXPECT_TRUE(all_bytes(bd, 4 * PAGE, 'k'));
	munmap(bd, 4 * PAGE);
}

/* ---- Pool requests: POOL_ALLOC and POOL_FREE ---- */

#define RP_SIZE		4096U		/* the pool's one class: 4 KiB buffers, ... */
#define RP_BUFS		16U		/* ... 16 of them: one 64 KiB chunk */
#define RP_MEM		(4 * PAGE)	/* the fixture's registration */
#define RP_PTR(p)	((__u64)(unsigned long)(p))

static struct memreg_sqe rp_sqe_alloc(__u64 user_data, __u32 pool, __u64 length)
{
	return (struct memreg_sqe){ .opcode = MEMREG_OP_POOL_ALLOC, .user_data = user_data,
				    .peer = pool, .length = length };
}

static struct memreg_sqe rp_sqe_free(__u64 user_data, __u32 pool, __u64 addr)
{
	return (struct memreg_sqe){ .opcode = MEMREG_OP_POOL_FREE, .user_data = user_data,
				    .peer = pool, .offset = addr };
}

/* POOL_CREATE of the one class `c` (written back), RW; its index and mapping length. */
static int rp_create(int fd, struct memreg_pool_class *c, __u32 *pool, size_t *bytes)
{
	struct memreg_pool_create pc = { .classes = RP_PTR(c), .nr_classes = 1, .access = RW,
					 .leak_timeout_ms = 1000, .shrink_ms = 0 };

	if (ioctl(fd, MEMREG_IOC_POOL_CREATE, &pc))
		return -errno;
	*pool = pc.pool;
	*bytes = pc.map_bytes;
	return 0;
}

/* POOL_STATS of a pool of one class; 0 or -errno (*st is all ones then). */
static int rp_stats(int fd, __u32 pool, struct memreg_pool_stats *st)
{
	struct memreg_pool_info in = { .pool = pool, .count = 1, .stats = RP_PTR(st) };

	memset(st, 0xff, sizeof(*st));
	return ioctl(fd, MEMREG_IOC_POOL_STATS, &in) ? -errno : 0;
}

/* MEMREG_IOC_POOL_ALLOC of `count` buffers, not waiting: how many, or -errno. */
static int rp_ioctl_alloc(int fd, __u32 pool, __u64 size, __u32 count,
			  struct memreg_pool_buf *bufs)
{
	struct memreg_pool_alloc a = { .pool = pool, .size = size, .bufs = RP_PTR(bufs),
				       .count = count, .timeout_ms = 0 };

	return ioctl(fd, MEMREG_IOC_POOL_ALLOC, &a) ? -errno : (int)a.count;
}

/* MEMREG_IOC_POOL_FREE of one address; 0 or -errno. */
static int rp_ioctl_free(int fd, __u32 pool, __u64 addr)
{
	struct memreg_pool_free f = { .pool = pool, .count = 1, .addrs = RP_PTR(&addr) };

	return ioctl(fd, MEMREG_IOC_POOL_FREE, &f) ? -errno : 0;
}

/*
 * A context with one queue, pool 0 created and never mapped, and pool 1
 * mapped, of one class of RP_BUFS buffers of RP_SIZE bytes: initial ==
 * max_buffers and no high watermark, so that every buffer is mapped from
 * the start and the class never grows nor shrinks under a test. And a
 * registration to COPY to and from.
 */
FIXTURE(rp)
{
	int fd;
	struct memreg_queue q;			/* queue 0: QSQ, QCQ */
	__u32 idle;			/* pool 0: never mapped */
	__u32 pool;			/* pool 1 */
	struct memreg_pool_class cl;	/* its class, as POOL_CREATE wrote it back */
	char *map;			/* its mapping */
	size_t bytes;
	char *mem;			/* RP_MEM bytes filled with 'm', ... */
	struct memreg_register reg;	/* ... registered RW */
};

FIXTURE_SETUP(rp)
{
	struct memreg_pool_class idle = { .buffer_size = RP_SIZE, .max_buffers = RP_BUFS,
					  .initial = RP_BUFS };
	struct memreg_pool_stats st;
	size_t idle_bytes;
	void *m;
	int i;

	self->map = NULL;
	self->mem = NULL;
	memset(&self->q, 0, sizeof(self->q));
	self->fd = memreg_open();
	ASSERT_GE(self->fd, 0);
	ASSERT_EQ(0, memreg_queue_init(self->fd, QSQ, QCQ, -1, &self->q));
	ASSERT_EQ(0, rp_create(self->fd, &idle, &self->idle, &idle_bytes));
	ASSERT_EQ(0, self->idle);
	self->cl = (struct memreg_pool_class){ .buffer_size = RP_SIZE, .max_buffers = RP_BUFS,
					       .initial = RP_BUFS };
	ASSERT_EQ(0, rp_create(self->fd, &self->cl, &self->pool, &self->bytes));
	ASSERT_EQ(1, self->pool);
	ASSERT_EQ(RP_BUFS, self->cl.chunk_buffers);
	m = mmap(NULL, self->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd,
		 MEMREG_MMAP_POOL(self->pool));
	ASSERT_NE(MAP_FAILED, m);
	self->map = m;
	/* The pool's work maps the initial chunk after the mmap. */
	for (i = 0; i < 500; i++) {
		if (!rp_stats(self->fd, self->pool, &st) && st.boundary == RP_BUFS)
			break;
		usleep(10000);
	}
	ASSERT_EQ(RP_BUFS, st.boundary);
	ASSERT_EQ(RP_BUFS, st.free);
	ASSERT_EQ(0, st.allocated);
	self->mem = map_buf(RP_MEM, 'm');
	ASSERT_NE(NULL, self->mem);
	ASSERT_EQ(0, memreg_register(self->fd, self->mem, RP_MEM, RW, &self->reg));
}

FIXTURE_TEARDOWN(rp)
{
	memreg_queue_exit(&self->q);
	if (self->map)
		munmap(self->map, self->bytes);
	if (self->fd >= 0)
		close(self->fd);
	if (self->mem)
		munmap(self->mem, RP_MEM);
}

/* A counter of the fixture's pool (all ones if POOL_STATS fails). */
#define RP_STAT(self, field) ({							\
	struct memreg_pool_stats _st;						\
	rp_stats((self)->fd, (self)->pool, &_st);				\
	_st.field;								\
})

/* The start of the pool's partition. */
static __u64 rp_start(FIXTURE_DATA(rp) *self)
{
	return RP_PTR(self->map) + self->cl.offset;
}

/* The index of the buffer that starts at `addr`, or -1 when none does. */
static long rp_index(FIXTURE_DATA(rp) *self, __u64 addr)
{
	__u64 start = rp_start(self), rel = addr - start;

	if (addr < start || rel % self->cl.buffer_size ||
	    rel / self->cl.buffer_size >= self->cl.max_buffers)
		return -1;
	return (long)(rel / self->cl.buffer_size);
}

/*
 * The offset of the buffer at `addr` in its chunk's registration, as the
 * header gives it: (address - (pool address + class offset)) %
 * (chunk_buffers * buffer_size).
 */
static __u64 rp_offset(FIXTURE_DATA(rp) *self, __u64 addr)
{
	return (addr - rp_start(self)) % ((__u64)self->cl.chunk_buffers * self->cl.buffer_size);
}

/*
 * Checks the completion of a POOL_ALLOC that gave a buffer: status 0,
 * MEMREG_CQE_POOL, the address of one of the pool's buffers in @bytes, a
 * key in @imm_data. Returns the buffer's index, or -1.
 */
static long expect_pool_cqe(struct __test_metadata *_metadata, FIXTURE_DATA(rp) *self,
			    const struct memreg_cqe *c, __u64 user_data)
{
	long i = rp_index(self, c->bytes);

	EXPECT_EQ(user_data, c->user_data);
	EXPECT_EQ(0, c->status) TH_LOG("user_data %#llx: status %d",
				       (unsigned long long)c->user_data, c->status);
	EXPECT_EQ(MEMREG_CQE_POOL, c->flags);
	EXPECT_NE(0, c->imm_data);
	EXPECT_LE(0, i) TH_LOG("user_data %#llx: %#llx is no buffer of the pool at %p",
			       (unsigned long long)c->user_data, (unsigned long long)c->bytes,
			       self->map);
	if (c->status || c->flags != MEMREG_CQE_POOL || !c->imm_data)
		return -1;
	return i;
}

/*
 * POOL_ALLOC of `length` bytes through the ring: the buffer's index (-1:
 * it failed), its completion in *c.
 */
static long ring_alloc(struct __test_metadata *_metadata, FIXTURE_DATA(rp) *self,
		       __u64 user_data, __u64 length, struct memreg_cqe *c)
{
	struct memreg_sqe s = rp_sqe_alloc(user_data, self->pool, length);

	ASSERT_EQ(0, memreg_queue_run(&self->q, &s, c)) TH_LOG("POOL_ALLOC %#llx",
						      (unsigned long long)user_data);
	return expect_pool_cqe(_metadata, self, c, user_data);
}

/* POOL_FREE of `addr` of pool `pool` through the ring: status `status`, nothing else set. */
static void ring_free(struct __test_metadata *_metadata, FIXTURE_DATA(rp) *self,
		      __u64 user_data, __u32 pool, __u64 addr, int status)
{
	struct memreg_sqe s = rp_sqe_free(user_data, pool, addr);

	run_expect(_metadata, &self->q, &s, status, 0);
}

/*
 * POOL_ALLOC hands out a buffer: its address in @bytes, the local key of
 * its chunk's registration in @imm_data. The key reaches that buffer (QUERY
 * covers it; COPY through it moves the bytes written through the mapping,
 * both ways), POOL_FREE gives it back, the counters return to where they
 * were, and it is handed out again.
 */
TEST_F(rp, pool_alloc_and_free_round_trip)
{
	struct memreg_pool_stats before, st;
	struct memreg_query qr;
	struct memreg_cqe c;
	struct memreg_sqe s;
	__u64 addr, key, off;
	char *buf, tmp[64];
	size_t k;

	ASSERT_EQ(0, rp_stats(self->fd, self->pool, &before));
	ASSERT_LE(0, ring_alloc(_metadata, self, 0x51, 100, &c));
	addr = c.bytes;
	key = c.imm_data;
	buf = (char *)(unsigned long)addr;
	ASSERT_EQ(0, rp_stats(self->fd, self->pool, &st));
	EXPECT_EQ(before.allocated + 1, st.allocated);
	EXPECT_EQ(before.free - 1, st.free);
	EXPECT_EQ(RP_BUFS, st.boundary);
	EXPECT_EQ(0, st.waits);

	/* The key names the chunk's registration, which covers the buffer at its offset. */
	ASSERT_EQ(0, memreg_query(self->fd, key, &qr));
	off = rp_offset(self, addr);
	EXPECT_LE(qr.addr, addr);
	EXPECT_GE(qr.addr + qr.length, addr + RP_SIZE);
	EXPECT_EQ(addr, qr.addr + off) TH_LOG("registration %#llx+%#llx, buffer %#llx",
					      (unsigned long long)qr.addr,
					      (unsigned long long)qr.length,
					      (unsigned long long)addr);
	EXPECT_EQ(RW, qr.access);
	EXPECT_EQ(MEMREG_STATE_VALID, qr.state & MEMREG_STATE_VALID);

	/* Written through the mapping, ... */
	for (k = 0; k < RP_SIZE; k++)
		buf[k] = (char)(k * 7 + 3);
	/* ... read through the key: by the ioctl, and by a ring COPY into the registration. */
	EXPECT_EQ(0, memreg_copy(self->fd, key, off + 1000, tmp, sizeof(tmp),
			     MEMREG_COPY_FROM_REGION));
	EXPECT_EQ(0, memcmp(tmp, buf + 1000, sizeof(tmp)));
	s = mr_sqe_copy(0x52, self->reg.lkey, 100, key, off, RP_SIZE);
	run_expect(_metadata, &self->q, &s, 0, RP_SIZE);
	EXPECT_EQ(0, memcmp(self->mem + 100, buf, RP_SIZE));
	EXPECT_TRUE(all_bytes(self->mem, 100, 'm'));
	EXPECT_TRUE(all_bytes(self->mem + 100 + RP_SIZE, RP_MEM - 100 - RP_SIZE, 'm'));
	/* Written through the key by a ring COPY from the registration: there, and only there. */
	s = mr_sqe_copy(0x53, key, off + 10, self->reg.lkey, RP_MEM - 64, 64);
	run_expect(_metadata, &self->q, &s, 0, 64);
	EXPECT_TRUE(all_bytes(buf + 10, 64, 'm'));
	for (k = 0; k < RP_SIZE; k++)
		if ((k < 10 || k >= 74) && buf[k] != (char)(k * 7 + 3))
			break;
	EXPECT_EQ(RP_SIZE, k) TH_LOG("byte %zu of the buffer changed", k);

	/* Back: status 0, nothing in bytes, flags or imm_data. */
	ring_free(_metadata, self, 0x54, self->pool, addr, 0);
	ASSERT_EQ(0, rp_stats(self->fd, self->pool, &st));
	EXPECT_EQ(before.allocated, st.allocated);
	EXPECT_EQ(before.free, st.free);
	EXPECT_EQ(RP_BUFS, st.boundary);

	/* Handed out again, from the same chunk: the same key. */
	ASSERT_LE(0, ring_alloc(_metadata, self, 0x55, RP_SIZE, &c));
	EXPECT_EQ(key, c.imm_data);
	EXPECT_EQ(before.allocated + 1, RP_STAT(self, allocated));
	ring_free(_metadata, self, 0x56, self->pool, c.bytes, 0);
	EXPECT_EQ(before.allocated, RP_STAT(self, allocated));
	EXPECT_EQ(before.free, RP_STAT(self, free));
}

/*
 * With every buffer allocated and the class at its maximum, POOL_ALLOC
 * fails with -EAGAIN at once, never waiting (the pool counts no wait), and
 * the queue goes on; a buffer freed is the one handed out next.
 */
TEST_F(rp, pool_alloc_exhausted_fails_at_once)
{
	struct memreg_cqe c[RP_BUFS];
	struct memreg_pool_stats st;
	struct memreg_pool_buf b;
	struct memreg_sqe s;
	__u64 addrs[RP_BUFS], t0, us;
	bool seen[RP_BUFS];
	unsigned int i;
	long k;

	memset(seen, 0, sizeof(seen));
	for (i = 0; i < RP_BUFS; i++) {
		s = rp_sqe_alloc(i, self->pool, RP_SIZE);
		ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	}
	ASSERT_EQ(RP_BUFS, memreg_wait_cqes(&self->q, c, RP_BUFS, 5000));
	for (i = 0; i < RP_BUFS; i++) {
		k = expect_pool_cqe(_metadata, self, &c[i], i);
		ASSERT_LE(0, k);
		EXPECT_FALSE(seen[k]) TH_LOG("buffer %ld handed out twice", k);
		seen[k] = true;
		addrs[i] = c[i].bytes;
	}
	ASSERT_EQ(0, rp_stats(self->fd, self->pool, &st));
	EXPECT_EQ(RP_BUFS, st.allocated);
	EXPECT_EQ(0, st.free);

	/* None free, no room to grow: -EAGAIN, without waiting. */
	t0 = mrq_now_us();
	s = rp_sqe_alloc(100, self->pool, 1);
	run_expect(_metadata, &self->q, &s, -EAGAIN, 0);
	us = mrq_now_us() - t0;
	EXPECT_LT(us, 1000000ULL) TH_LOG("POOL_ALLOC took %llu us", (unsigned long long)us);

	/* Several in a row, then a NOP: each fails in turn, the queue does not stall. */
	t0 = mrq_now_us();
	for (i = 0; i < 4; i++) {
		s = rp_sqe_alloc(200 + i, self->pool, RP_SIZE);
		ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	}
	s = mr_sqe_nop(300);
	ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	ASSERT_EQ(5, memreg_wait_cqes(&self->q, c, 5, 5000));
	us = mrq_now_us() - t0;
	for (i = 0; i < 4; i++)
		expect_cqe(_metadata, &c[i], 200 + i, -EAGAIN, 0);
	expect_cqe(_metadata, &c[4], 300, 0, 0);
	EXPECT_LT(us, 1000000ULL) TH_LOG("took %llu us", (unsigned long long)us);
	/* The ioctl, not waiting either, agrees. */
	EXPECT_EQ(-EAGAIN, rp_ioctl_alloc(self->fd, self->pool, RP_SIZE, 1, &b));
	ASSERT_EQ(0, rp_stats(self->fd, self->pool, &st));
	EXPECT_EQ(RP_BUFS, st.allocated);
	EXPECT_EQ(RP_BUFS, st.boundary);
	EXPECT_EQ(0, st.waits);
	EXPECT_EQ(0, st.timeouts);

	/* One freed is the one handed out next; then none again. */
	ring_free(_metadata, self, 400, self->pool, addrs[5], 0);
	EXPECT_EQ(RP_BUFS - 1, RP_STAT(self, allocated));
	ASSERT_LE(0, ring_alloc(_metadata, self, 401, RP_SIZE, &c[0]));
	EXPECT_EQ(addrs[5], c[0].bytes);
	s = rp_sqe_alloc(402, self->pool, RP_SIZE);
	run_expect(_metadata, &self->q, &s, -EAGAIN, 0);

	/* All back. */
	for (i = 0; i < RP_BUFS; i++) {
		s = rp_sqe_free(500 + i, self->pool, addrs[i]);
		ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	}
	ASSERT_EQ(RP_BUFS, memreg_wait_cqes(&self->q, c, RP_BUFS, 5000));
	for (i = 0; i < RP_BUFS; i++)
		expect_cqe(_metadata, &c[i], 500 + i, 0, 0);
	ASSERT_EQ(0, rp_stats(self->fd, self->pool, &st));
	EXPECT_EQ(0, st.allocated);
	EXPECT_EQ(RP_BUFS, st.free);
}

/*
 * POOL_ALLOC reads only @length and @peer, POOL_FREE only @offset and
 * @peer: any other field set is -EINVAL, as are sizes no class serves, and
 * nothing is allocated or freed.
 */
TEST_F(rp, pool_requests_refuse_unused_fields)
{
	enum { F_FLAGS, F_FLAGS_HIGH, F_RES0, F_KEY, F_OFFSET, F_SRC_KEY, F_SRC_OFFSET, F_LENGTH,
	       F_NR };
	static const __u64 sizes[] = { 0, RP_SIZE + 1, MEMREG_MAX_LENGTH, MEMREG_MAX_LENGTH + 1,
				       ~0ULL };
	struct memreg_sqe list[2 * F_NR + 8];
	struct memreg_cqe c[2 * F_NR + 8];
	struct memreg_pool_stats st;
	unsigned int n = 0, i, b, f;
	__u64 addr, key;

	/* A buffer for POOL_FREE to name. */
	ASSERT_LE(0, ring_alloc(_metadata, self, 1, RP_SIZE, &c[0]));
	addr = c[0].bytes;
	key = c[0].imm_data;
	for (b = 0; b < 2; b++) {
		for (f = 0; f < F_NR; f++) {
			struct memreg_sqe s = b ? rp_sqe_free(0, self->pool, addr) :
						  rp_sqe_alloc(0, self->pool, RP_SIZE);

			/* The fields the opcode reads. */
			if ((b == 0 && f == F_LENGTH) || (b == 1 && f == F_OFFSET))
				continue;
			switch (f) {
			case F_FLAGS: s.flags = MEMREG_SQE_IMM; break;
			case F_FLAGS_HIGH: s.flags = 0x80; break;
			case F_RES0: s.reserved0 = 1; break;
			case F_KEY: s.key = self->reg.lkey; break;
			case F_OFFSET: s.offset = addr; break;
			case F_SRC_KEY: s.src_key = key; break;
			case F_SRC_OFFSET: s.src_offset = 1; break;
			case F_LENGTH: s.length = RP_SIZE; break;
			}
			s.user_data = b << 8 | f;
			list[n++] = s;
		}
	}
	/* Sizes: none, past the largest class, past any. */
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		list[n++] = rp_sqe_alloc(0x300 + i, self->pool, sizes[i]);
	for (i = 0; i < n; i++)
		ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &list[i], 5000));
	ASSERT_EQ(n, memreg_wait_cqes(&self->q, c, n, 5000));
	for (i = 0; i < n; i++)
		expect_cqe(_metadata, &c[i], list[i].user_data, -EINVAL, 0);
	ASSERT_EQ(0, rp_stats(self->fd, self->pool, &st));
	EXPECT_EQ(1, st.allocated);
	EXPECT_EQ(RP_BUFS - 1, st.free);
	/* The buffer is still allocated: it frees now, once. */
	ring_free(_metadata, self, 0x400, self->pool, addr, 0);
	EXPECT_EQ(0, RP_STAT(self, allocated));
}

/*
 * @peer names the pool. One never created, past MEMREG_MAX_POOLS or
 * destroyed: -EINVAL for both requests. One created but not mapped:
 * POOL_ALLOC -ENXIO, POOL_FREE -EINVAL (it has no buffer), as the ioctls
 * say. The fixture's pool lends and takes back nothing meanwhile.
 */
TEST_F(rp, pool_requests_name_unknown_pools)
{
	static const __u32 unknown[] = { 2, MEMREG_MAX_POOLS - 1, MEMREG_MAX_POOLS, 0x80000000U,
					 ~0U };
	struct memreg_pool_destroy d = { .pool = self->idle };
	struct memreg_pool_buf b;
	struct memreg_cqe c;
	struct memreg_sqe s;
	__u64 addr;
	size_t i;

	ASSERT_LE(0, ring_alloc(_metadata, self, 1, RP_SIZE, &c));
	addr = c.bytes;
	for (i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
		s = rp_sqe_alloc(0x100 + i, unknown[i], RP_SIZE);
		run_expect(_metadata, &self->q, &s, -EINVAL, 0);
		ring_free(_metadata, self, 0x200 + i, unknown[i], addr, -EINVAL);
	}
	/* Pool 0, never mapped. */
	s = rp_sqe_alloc(0x300, self->idle, RP_SIZE);
	run_expect(_metadata, &self->q, &s, -ENXIO, 0);
	EXPECT_EQ(-ENXIO, rp_ioctl_alloc(self->fd, self->idle, RP_SIZE, 1, &b));
	ring_free(_metadata, self, 0x301, self->idle, addr, -EINVAL);
	EXPECT_EQ(-EINVAL, rp_ioctl_free(self->fd, self->idle, addr));
	/* Destroyed: its index names nothing. */
	ASSERT_EQ(0, ioctl(self->fd, MEMREG_IOC_POOL_DESTROY, &d));
	s = rp_sqe_alloc(0x302, self->idle, RP_SIZE);
	run_expect(_metadata, &self->q, &s, -EINVAL, 0);
	ring_free(_metadata, self, 0x303, self->idle, addr, -EINVAL);

	EXPECT_EQ(1, RP_STAT(self, allocated));
	ring_free(_metadata, self, 0x400, self->pool, addr, 0);
	EXPECT_EQ(0, RP_STAT(self, allocated));
	EXPECT_EQ(RP_BUFS, RP_STAT(self, free));
}

/*
 * POOL_FREE of an address that is not the start of an allocated buffer
 * fails as MEMREG_IOC_POOL_FREE does, with -EINVAL, and frees nothing: a
 * buffer freed already (by the ring or the ioctl), an address inside a
 * buffer, a buffer never allocated, addresses outside the pool.
 */
TEST_F(rp, pool_free_twice_is_refused)
{
	struct memreg_pool_buf b;
	struct memreg_cqe c[2];
	struct memreg_sqe s;
	__u64 a, bad[8];
	size_t i;
	long k;

	k = ring_alloc(_metadata, self, 1, RP_SIZE, &c[0]);
	ASSERT_LE(0, k);
	a = c[0].bytes;
	bad[0] = a + 1;
	bad[1] = a + RP_SIZE / 2;
	bad[2] = a + RP_SIZE - 1;
	bad[3] = rp_start(self) + (__u64)((k + 1) % RP_BUFS) * RP_SIZE;	/* never allocated */
	bad[4] = RP_PTR(self->map) - PAGE;
	bad[5] = RP_PTR(self->map) + self->bytes;
	bad[6] = 0;
	bad[7] = ~0ULL;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ring_free(_metadata, self, 0x10 + i, self->pool, bad[i], -EINVAL);
	EXPECT_EQ(1, RP_STAT(self, allocated));

	/* Freed once by the ring; a second time by the ring or the ioctl: EINVAL. */
	ring_free(_metadata, self, 0x20, self->pool, a, 0);
	ring_free(_metadata, self, 0x21, self->pool, a, -EINVAL);
	EXPECT_EQ(-EINVAL, rp_ioctl_free(self->fd, self->pool, a));
	EXPECT_EQ(0, RP_STAT(self, allocated));
	EXPECT_EQ(RP_BUFS, RP_STAT(self, free));

	/* Allocated by the ioctl, freed by the ring; then again by either. */
	ASSERT_EQ(1, rp_ioctl_alloc(self->fd, self->pool, RP_SIZE, 1, &b));
	ring_free(_metadata, self, 0x22, self->pool, b.addr, 0);
	ring_free(_metadata, self, 0x23, self->pool, b.addr, -EINVAL);
	EXPECT_EQ(-EINVAL, rp_ioctl_free(self->fd, self->pool, b.addr));

	/* Two frees of one buffer posted together: the first frees it, the second fails. */
	ASSERT_LE(0, ring_alloc(_metadata, self, 0x30, RP_SIZE, &c[0]));
	a = c[0].bytes;
	s = rp_sqe_free(0x31, self->pool, a);
	ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	s = rp_sqe_free(0x32, self->pool, a);
	ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	ASSERT_EQ(2, memreg_wait_cqes(&self->q, c, 2, 5000));
	expect_cqe(_metadata, &c[0], 0x31, 0, 0);
	expect_cqe(_metadata, &c[1], 0x32, -EINVAL, 0);
	EXPECT_EQ(0, RP_STAT(self, allocated));
	EXPECT_EQ(RP_BUFS, RP_STAT(self, free));

	/* The pool goes on. */
	ASSERT_LE(0, ring_alloc(_metadata, self, 0x40, RP_SIZE, &c[0]));
	ring_free(_metadata, self, 0x41, self->pool, c[0].bytes, 0);
	EXPECT_EQ(0, RP_STAT(self, allocated));
}

/*
 * The ring and the ioctls take from one pool: taking in turns to
 * exhaustion, neither is ever given a buffer the other holds; they agree on
 * the key and on the buffer's offset in it; either frees the other's.
 */
TEST_F(rp, pool_ring_and_ioctl_never_share_a_buffer)
{
	struct memreg_pool_buf b[RP_BUFS];
	__u64 addrs[RP_BUFS], key = 0;
	bool by_ring[RP_BUFS], seen[RP_BUFS];
	struct memreg_cqe c;
	struct memreg_sqe s;
	unsigned int n = 0, batch = 1, want, i;
	long k;
	int r;

	memset(seen, 0, sizeof(seen));
	/* One through the ring, then one, two, three ... through the ioctl, until none is left. */
	while (n < RP_BUFS) {
		k = ring_alloc(_metadata, self, n, RP_SIZE, &c);
		ASSERT_LE(0, k);
		EXPECT_FALSE(seen[k]) TH_LOG("buffer %ld handed out twice", k);
		seen[k] = true;
		if (!key)
			key = c.imm_data;
		/* One chunk: one key. */
		EXPECT_EQ(key, c.imm_data);
		by_ring[n] = true;
		addrs[n++] = c.bytes;
		if (n == RP_BUFS)
			break;
		want = batch < RP_BUFS - n ? batch : RP_BUFS - n;
		batch++;
		r = rp_ioctl_alloc(self->fd, self->pool, RP_SIZE, want, b);
		ASSERT_EQ(want, r);
		for (i = 0; i < want; i++) {
			k = rp_index(self, b[i].addr);
			ASSERT_LE(0, k) TH_LOG("%#llx", (unsigned long long)b[i].addr);
			EXPECT_FALSE(seen[k]) TH_LOG("buffer %ld handed out twice", k);
			seen[k] = true;
			EXPECT_EQ(key, b[i].key);
			EXPECT_EQ(rp_offset(self, b[i].addr), b[i].offset);
			EXPECT_EQ(RP_SIZE, b[i].size);
			EXPECT_EQ(0, b[i].class);
			by_ring[n] = false;
			addrs[n++] = b[i].addr;
		}
	}
	/* None left for either. */
	s = rp_sqe_alloc(0x100, self->pool, 1);
	run_expect(_metadata, &self->q, &s, -EAGAIN, 0);
	EXPECT_EQ(-EAGAIN, rp_ioctl_alloc(self->fd, self->pool, RP_SIZE, 1, b));
	EXPECT_EQ(RP_BUFS, RP_STAT(self, allocated));
	/* Each frees the other's. */
	for (i = 0; i < RP_BUFS; i++) {
		if (by_ring[i]) {
			EXPECT_EQ(0, rp_ioctl_free(self->fd, self->pool, addrs[i]))
				TH_LOG("buffer %u", i);
		} else {
			ring_free(_metadata, self, 0x200 + i, self->pool, addrs[i], 0);
		}
	}
	EXPECT_EQ(0, RP_STAT(self, allocated));
	EXPECT_EQ(RP_BUFS, RP_STAT(self, free));
}

#define RACE_HOLD	10	/* buffers each side takes at most: more than half the pool */
#define RACE_MS		300

/* The ring and the ioctls taking from one pool at once. */
struct rp_race {
	int fd;
	__u32 pool;
	__u64 start;			/* the partition */
	int owner[RP_BUFS];		/* who holds each buffer: 0 nobody, 1 ioctls, 2 ring */
	int stop;
	unsigned long taken[3];		/* buffers each side was given */
	int failed;			/* the ioctl side's first failure, in `why` */
	char why[160];
};

/*
 * Marks buffer `addr` held by `who` and writes its tag into it; false if
 * it is no buffer or someone holds it.
 */
static bool race_take(struct rp_race *r, int who, __u64 addr, __u64 tag)
{
	__u64 rel = addr - r->start;
	int nobody = 0;

	if (addr < r->start || rel % RP_SIZE || rel / RP_SIZE >= RP_BUFS)
		return false;
	if (!__atomic_compare_exchange_n(&r->owner[rel / RP_SIZE], &nobody, who, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return false;
	*(volatile __u64 *)(unsigned long)addr = tag;
	r->taken[who]++;
	return true;
}

/* Checks the tag and marks the buffer free, before it is given back; false if wrong. */
static bool race_give(struct rp_race *r, int who, __u64 addr, __u64 tag)
{
	int held = who;

	if (*(volatile __u64 *)(unsigned long)addr != tag)
		return false;
	return __atomic_compare_exchange_n(&r->owner[(addr - r->start) / RP_SIZE], &held, 0,
					   false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

/* The ioctl side: takes up to RACE_HOLD buffers (or until none is left), gives them all back. */
static void *race_ioctls(void *arg)
{
	struct rp_race *r = arg;
	struct memreg_pool_buf b;
	__u64 addrs[RACE_HOLD], tags[RACE_HOLD], seq = 0;
	int n = 0, ret;

	while (!__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE)) {
		while (n < RACE_HOLD) {
			ret = rp_ioctl_alloc(r->fd, r->pool, RP_SIZE, 1, &b);
			if (ret == -EAGAIN)
				break;
			if (ret != 1) {
				snprintf(r->why, sizeof(r->why), "ioctl ALLOC: %d", ret);
				goto fail;
			}
			tags[n] = 1ULL << 32 | ++seq;
			if (!race_take(r, 1, b.addr, tags[n])) {
				snprintf(r->why, sizeof(r->why), "ioctl ALLOC gave %#llx, held",
					 (unsigned long long)b.addr);
				goto fail;
			}
			addrs[n++] = b.addr;
		}
		while (n > 0) {
			n--;
			if (!race_give(r, 1, addrs[n], tags[n])) {
				snprintf(r->why, sizeof(r->why),
					 "buffer %#llx changed under the ioctls",
					 (unsigned long long)addrs[n]);
				goto fail;
			}
			ret = rp_ioctl_free(r->fd, r->pool, addrs[n]);
			if (ret) {
				snprintf(r->why, sizeof(r->why), "ioctl FREE: %d", ret);
				goto fail;
			}
		}
		/* The ring's worker and the test may share this CPU. */
		sched_yield();
	}
	return NULL;
fail:
	__atomic_store_n(&r->failed, 1, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * The same, at once: a thread takes and gives back through the ioctls
 * while the test does through the ring, each holding up to RACE_HOLD
 * buffers (together more than the pool has). No buffer is ever held by
 * both (each is marked held before use and free before it goes back), and
 * none is changed under its holder.
 */
TEST_F(rp, pool_ring_and_ioctl_race_for_buffers)
{
	struct rp_race r;
	struct memreg_cqe c;
	struct memreg_sqe s;
	__u64 addrs[RACE_HOLD], tags[RACE_HOLD], seq = 0, ud = 0, end;
	pthread_t th;
	bool ok = true;
	int n = 0;

	memset(&r, 0, sizeof(r));
	r.fd = self->fd;
	r.pool = self->pool;
	r.start = rp_start(self);
	ASSERT_EQ(0, pthread_create(&th, NULL, race_ioctls, &r));
	end = mrq_now_us() + RACE_MS * 1000;
	while (ok && mrq_now_us() < end && !__atomic_load_n(&r.failed, __ATOMIC_ACQUIRE)) {
		while (ok && n < RACE_HOLD) {
			s = rp_sqe_alloc(++ud, self->pool, RP_SIZE);
			if (memreg_queue_run(&self->q, &s, &c)) {
				ok = false;
				TH_LOG("POOL_ALLOC %llu: no completion", (unsigned long long)ud);
				break;
			}
			if (c.status == -EAGAIN)
				break;
			tags[n] = 2ULL << 32 | ++seq;
			if (c.status || c.flags != MEMREG_CQE_POOL ||
			    !race_take(&r, 2, c.bytes, tags[n])) {
				ok = false;
				TH_LOG("POOL_ALLOC %llu: status %d flags %#x address %#llx",
				       (unsigned long long)ud, c.status, c.flags,
				       (unsigned long long)c.bytes);
				break;
			}
			addrs[n++] = c.bytes;
		}
		while (ok && n > 0) {
			n--;
			if (!race_give(&r, 2, addrs[n], tags[n])) {
				ok = false;
				TH_LOG("buffer %#llx changed under the ring",
				       (unsigned long long)addrs[n]);
				break;
			}
			s = rp_sqe_free(++ud, self->pool, addrs[n]);
			if (memreg_queue_run(&self->q, &s, &c) || c.status) {
				ok = false;
				TH_LOG("POOL_FREE %llu: status %d", (unsigned long long)ud,
				       c.status);
			}
		}
	}
	__atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	EXPECT_TRUE(ok);
	EXPECT_EQ(0, r.failed) TH_LOG("%s", r.why);
	/* Both sides were given buffers. */
	EXPECT_LT(0, r.taken[1]) TH_LOG("ioctls took %lu, the ring %lu", r.taken[1], r.taken[2]);
	EXPECT_LT(0, r.taken[2]) TH_LOG("ioctls took %lu, the ring %lu", r.taken[1], r.taken[2]);
	/* Both gave back all they took. */
	if (ok && !r.failed) {
		EXPECT_EQ(0, RP_STAT(self, allocated));
		EXPECT_EQ(RP_BUFS, RP_STAT(self, free));
	}
}

/* ---- Registrations that end under the requests ---- */

/*
 * A registration used by the worker, then unmapped and the address mapped
 * afresh: requests naming its key fail with -ENOENT and the new memory
 * never receives a byte.
 */
TEST_F(dp, ended_registration_never_reaches_new_memory)
{
	struct memreg_register v;
	struct memreg_cqe c[16];
	struct memreg_sqe s;
	char *bv = map_buf(4 * PAGE, 'v');
	__u64 i;

	ASSERT_NE(NULL, bv);
	ASSERT_EQ(0, memreg_register(self->fd, bv, 4 * PAGE, RW, &v));
	for (i = 0; i < 4; i++) {
		s = mr_sqe_copy(i, v.lkey, i * PAGE, self->rs.lkey, 0, PAGE);
		ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	}
	ASSERT_EQ(4, memreg_wait_cqes(&self->q, c, 4, 5000));
	for (i = 0; i < 4; i++)
		expect_cqe(_metadata, &c[i], i, 0, PAGE);
	ASSERT_TRUE(all_bytes(bv, 4 * PAGE, 's'));

	ASSERT_EQ(0, munmap(bv, 4 * PAGE));
	ASSERT_EQ(bv, map_fixed(bv, 4 * PAGE, 'n'));
	for (i = 0; i < 16; i++) {
		s = mr_sqe_copy(100 + i, v.lkey, (i % 4) * PAGE + i, self->rs.lkey, 0, PAGE - 16);
		ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	}
	ASSERT_EQ(16, memreg_wait_cqes(&self->q, c, 16, 5000));
	for (i = 0; i < 16; i++)
		expect_cqe(_metadata, &c[i], 100 + i, -ENOENT, 0);
	/* As a source too. */
	s = mr_sqe_copy(200, self->rd.lkey, 0, v.lkey, 0, PAGE);
	run_expect(_metadata, &self->q, &s, -ENOENT, 0);
	EXPECT_TRUE(all_bytes(bv, 4 * PAGE, 'n'));
	EXPECT_TRUE(all_bytes(self->dst, BUF_LEN, 'd'));
	/* Registered again: a new key, and the old one stays dead. */
	ASSERT_EQ(0, memreg_register(self->fd, bv, 4 * PAGE, RW, &v));
	s = mr_sqe_copy(201, v.lkey, 0, self->rs.lkey, 0, 8);
	run_expect(_metadata, &self->q, &s, 0, 8);
	EXPECT_TRUE(all_bytes(bv, 8, 's'));
	EXPECT_TRUE(all_bytes(bv + 8, 4 * PAGE - 8, 'n'));
	munmap(bv, 4 * PAGE);
}

struct stale {
	struct memreg_queue *q;
	__u64 src_key;
	__u64 key;		/* the current victim key */
	int stop;
	__u64 posted;
	int failed;
	int done;		/* the poster returned */
};

static void *stale_poster(void *arg)
{
	struct stale *st = arg;
	struct memreg_sqe s;
	__u64 i = 0;

	while (!__atomic_load_n(&st->stop, __ATOMIC_ACQUIRE)) {
		__u64 key = __atomic_load_n(&st->key, __ATOMIC_ACQUIRE);

		s = mr_sqe_copy(i, key, (i % 8) * 512, st->src_key, 0, 512);
		if (memreg_queue_post_wait(st->q, &s, 10000)) {
			__atomic_store_n(&st->failed, 1, __ATOMIC_RELEASE);
			break;
		}
		__atomic_store_n(&st->posted, ++i, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&st->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* The stream's tallies: completions reaped, copied, -ENOENT, anything else. */
struct tally {
	__u64 reaped, ok, enoent, bad;
};

/*
 * Reaps what completes within `ms` and tallies it: each completion must come
 * in order and be a whole copy (512 bytes) or -ENOENT. Returns how many.
 */
static unsigned int reap_stream(struct memreg_queue *q, struct tally *t, int ms)
{
	struct memreg_cqe c[64];
	unsigned int i, n = memreg_wait_cqes(q, c, 64, ms);

	for (i = 0; i < n; i++, t->reaped++) {
		if (c[i].user_data != t->reaped ||
		    !((c[i].status == 0 && c[i].bytes == 512) ||
		      (c[i].status == -ENOENT && c[i].bytes == 0)))
			t->bad++;
		else if (c[i].status)
			t->enoent++;
		else
			t->ok++;
	}
	return n;
}

/*
 * The same with requests streaming in while the range is unmapped and
 * mapped afresh, twenty times: every request completes, with 0 or -ENOENT,
 * in order, and each fresh mapping keeps what was written into it.
 */
TEST_F_TIMEOUT(dp, unmap_under_stream_never_reaches_new_memory, 120)
{
	struct memreg_register v;
	struct stale st = { .q = &self->q, .src_key = self->rs.lkey };
	struct tally t = { 0 };
	char *bv = map_buf(PAGE, 'v');
	__u64 target;
	pthread_t th;
	int round;

	ASSERT_NE(NULL, bv);
	ASSERT_EQ(0, memreg_register(self->fd, bv, PAGE, RW, &v));
	st.key = v.lkey;
	ASSERT_EQ(0, pthread_create(&th, NULL, stale_poster, &st));
	for (round = 0; round < 20; round++) {
		usleep(2000);
		ASSERT_EQ(0, munmap(bv, PAGE));
		ASSERT_EQ(bv, map_fixed(bv, PAGE, 'n'));
		/* Everything posted so far has completed: none of it landed here. */
		target = __atomic_load_n(&st.posted, __ATOMIC_ACQUIRE);
		while (t.reaped < target && !__atomic_load_n(&st.failed, __ATOMIC_ACQUIRE))
			reap_stream(&self->q, &t, 10);
		EXPECT_TRUE(all_bytes(bv, PAGE, 'n')) TH_LOG("round %d", round);
		ASSERT_EQ(0, memreg_register(self->fd, bv, PAGE, RW, &v));
		__atomic_store_n(&st.key, v.lkey, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&st.stop, 1, __ATOMIC_RELEASE);
	/* Reaping meanwhile: a poster waiting for room in a full ring must get it. */
	while (!__atomic_load_n(&st.done, __ATOMIC_ACQUIRE))
		reap_stream(&self->q, &t, 10);
	pthread_join(th, NULL);
	EXPECT_EQ(0, st.failed);
	target = st.posted;
	while (t.reaped < target && reap_stream(&self->q, &t, 5000))
		;
	EXPECT_EQ(target, t.reaped);
	EXPECT_EQ(0, t.bad);
	EXPECT_LT(0, t.enoent);
	EXPECT_LT(0, t.ok);
	TH_LOG("%llu requests: %llu copied, %llu -ENOENT", (unsigned long long)t.reaped,
	       (unsigned long long)t.ok, (unsigned long long)t.enoent);
	munmap(bv, PAGE);
}

/*
 * Writers into a registration that mprotect() makes read-only: one posts
 * ring COPYs of the fixture's whole source registration (64 KiB, one step
 * of the copy loop: the longest a step borrows the pages), whose bytes it
 * changes before each request, the other COPY ioctls of 64 bytes from a
 * buffer that changes too. Every completion is 0 or -ENOENT.
 */
struct late {
	int fd;
	struct memreg_queue *q;
	char *src;		/* the source registration's memory */
	__u64 src_key;
	__u64 key;		/* the current victim key */
	int stop;
	__u64 ok, enoent, bad;
};

static void late_count(struct late *l, int status)
{
	if (!status)
		__atomic_add_fetch(&l->ok, 1, __ATOMIC_RELAXED);
	else if (status == -ENOENT)
		__atomic_add_fetch(&l->enoent, 1, __ATOMIC_RELAXED);
	else
		__atomic_add_fetch(&l->bad, 1, __ATOMIC_RELAXED);
}

static void *late_ring_writer(void *arg)
{
	struct late *l = arg;
	struct memreg_sqe s;
	struct memreg_cqe c;
	__u64 i = 0;

	while (!__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
		__u64 key = __atomic_load_n(&l->key, __ATOMIC_ACQUIRE);

		memset(l->src, 'A' + i % 26, BUF_LEN);
		s = mr_sqe_copy(i, key, 0, l->src_key, 0, BUF_LEN);
		if (memreg_queue_post_wait(l->q, &s, 10000) ||
		    memreg_wait_cqes(l->q, &c, 1, 10000) != 1 || c.user_data != i) {
			late_count(l, -EIO);
			break;
		}
		late_count(l, c.status);
		i++;
	}
	return NULL;
}

static void *late_ioctl_writer(void *arg)
{
	struct late *l = arg;
	char buf[64];
	__u64 i = 0;

	while (!__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
		__u64 key = __atomic_load_n(&l->key, __ATOMIC_ACQUIRE);

		memset(buf, 'a' + i % 26, sizeof(buf));
		late_count(l, memreg_copy(l->fd, key, (i * 64) % BUF_LEN, buf, sizeof(buf),
					  MEMREG_COPY_TO_REGION));
		i++;
	}
	return NULL;
}

/* How a round of late_rounds() ends its registration. */
enum late_end { LATE_MPROTECT, LATE_DEREGISTER };

/*
 * Thirty rounds, each a fresh registration written from both sides until
 * @how ends it; its bytes are then watched while the writers go on, and
 * must not change.
 */
static void late_rounds(struct __test_metadata *_metadata, FIXTURE_DATA(dp) *self,
			enum late_end how)
{
	struct late l = { .fd = self->fd, .q = &self->q, .src = self->src,
			  .src_key = self->rs.lkey };
	struct memreg_register v;
	pthread_t ring, io;
	char *snap = malloc(BUF_LEN);
	int round, written = 0;

	ASSERT_NE(NULL, snap);
	l.key = self->rd.lkey;
	ASSERT_EQ(0, pthread_create(&ring, NULL, late_ring_writer, &l));
	ASSERT_EQ(0, pthread_create(&io, NULL, late_ioctl_writer, &l));
	for (round = 0; round < 30; round++) {
		char *bv = map_buf(BUF_LEN, 'n');

		ASSERT_NE(NULL, bv);
		if (how == LATE_DEREGISTER) {
			ASSERT_EQ(0, mr_set_parking(self->fd, round % 2));
		}
		ASSERT_EQ(0, memreg_register(self->fd, bv, BUF_LEN, RW, &v));
		__atomic_store_n(&l.key, v.lkey, __ATOMIC_RELEASE);
		usleep(3000);
		if (how == LATE_MPROTECT) {
			ASSERT_EQ(0, mprotect(bv, BUF_LEN, PROT_READ));
		} else {
			ASSERT_EQ(0, memreg_deregister(self->fd, v.lkey));
		}
		memcpy(snap, bv, BUF_LEN);
		written += !all_bytes(bv, BUF_LEN, 'n');
		usleep(3000);
		EXPECT_EQ(0, memcmp(snap, bv, BUF_LEN)) TH_LOG("round %d", round);
		ASSERT_EQ(0, munmap(bv, BUF_LEN));
	}
	__atomic_store_n(&l.stop, 1, __ATOMIC_RELEASE);
	pthread_join(ring, NULL);
	pthread_join(io, NULL);
	free(snap);
	EXPECT_EQ(0, l.bad);
	EXPECT_LT(0, l.ok);
	EXPECT_LT(0, l.enoent);
	/* The writers reached registrations before they ended: the test did something. */
	EXPECT_LE(10, written);
	TH_LOG("%llu copies landed, %llu refused, %d of 30 registrations written",
	       (unsigned long long)l.ok, (unsigned long long)l.enoent, written);
}

/*
 * No byte lands after the mprotect() that ended the registration returned:
 * copies move data with no lock, and an invalidation waits for those in
 * progress.
 */
TEST_F_TIMEOUT(dp, no_write_lands_after_mprotect_returned, 120)
{
	late_rounds(_metadata, self, LATE_MPROTECT);
}

/*
 * No byte lands after the DEREGISTER that ended the registration's keys
 * returned: DEREGISTER returns right after it ends them, so a copy step
 * still under way (64 KiB, as the writers above post) would show as bytes
 * that change in memory the process keeps. Parking on (the keys end by a
 * new generation) and off (the registration ends) in turn.
 */
TEST_F_TIMEOUT(dp, no_write_lands_after_deregister_returned, 120)
{
	late_rounds(_metadata, self, LATE_DEREGISTER);
}

/* ---- The doorbell and the worker ---- */

/*
 * The worker sleeps until a doorbell: a request published without one is
 * not taken. The poster whose position is sq_head rings it; a later one
 * does not.
 */
TEST_F(dp, worker_sleeps_until_the_doorbell)
{
	struct memreg_queue_stats st;
	struct memreg_cqe c[2];
	struct memreg_sqe s;
	__u64 pos;

	ASSERT_EQ(MEMREG_QUEUE_NEED_WAKEUP, memreg_queue_flags(&self->q));
	s = mr_sqe_nop(1);
	ASSERT_EQ(0, memreg_queue_post(&self->q, &s, MEMREG_POST_NO_DOORBELL, &pos));
	EXPECT_EQ(0, pos);
	EXPECT_EQ(1, mrq_seq(&self->q, 0));
	/* By the rule: position 1 is not sq_head (0), so no doorbell. */
	s = mr_sqe_nop(2);
	ASSERT_EQ(0, memreg_queue_post(&self->q, &s, 0, &pos));
	EXPECT_EQ(1, pos);
	EXPECT_EQ(0, mrq_doorbells(&self->q));
	expect_quiet(_metadata, &self->q, 0);
	EXPECT_EQ(0, memreg_queue_sq_head(&self->q));
	EXPECT_EQ(MEMREG_QUEUE_NEED_WAKEUP, memreg_queue_flags(&self->q));
	ASSERT_EQ(0, memreg_queue_stats(self->fd, &st));
	EXPECT_EQ(0, st.requests);
	EXPECT_EQ(0, st.wakeups);

	ASSERT_EQ(0, memreg_queue_doorbell(&self->q));
	ASSERT_EQ(2, memreg_wait_cqes(&self->q, c, 2, 5000));
	expect_cqe(_metadata, &c[0], 1, 0, 0);
	expect_cqe(_metadata, &c[1], 2, 0, 0);
	ASSERT_EQ(0, memreg_queue_stats(self->fd, &st));
	EXPECT_EQ(1, st.doorbells);
	EXPECT_LE(1, st.wakeups);

	/* It polls for a while, then sleeps again. */
	ASSERT_EQ(0, mrq_wait_flags(&self->q, ~0U, MEMREG_QUEUE_NEED_WAKEUP, sleep_ms(self->fd)));
	s = mr_sqe_nop(3);
	ASSERT_EQ(0, memreg_queue_post(&self->q, &s, 0, &pos));
	EXPECT_EQ(2, pos);
	/* sq_head was 2 and the worker asleep: this poster rang. */
	EXPECT_EQ(2, mrq_doorbells(&self->q));
	ASSERT_EQ(1, memreg_wait_cqes(&self->q, c, 1, 5000));
	expect_cqe(_metadata, &c[0], 3, 0, 0);
	ASSERT_EQ(0, memreg_queue_stats(self->fd, &st));
	EXPECT_EQ(2, st.doorbells);
	EXPECT_LE(2, st.wakeups);
	EXPECT_EQ(3, st.requests);
	EXPECT_EQ(3, st.completions);
}

/*
 * A doorbell that finds the worker asleep serves the queue in the caller:
 * the completion is in the ring when DOORBELL returns, and the worker stays
 * asleep (NEED_WAKEUP still set, no kworker run). A run of the worker
 * started by something else may take a round instead, so most rounds, not
 * all, must be served inline. (A doorbell wakes the worker only for
 * requests left after its batch, or a SEND that waits.)
 */
TEST_F(dp, doorbell_serves_in_the_caller_when_the_worker_sleeps)
{
	struct memreg_queue_stats st;
	struct memreg_cqe c[1];
	struct memreg_sqe s;
	int round, inline_rounds = 0;
	unsigned int got;

	for (round = 0; round < 8; round++) {
		ASSERT_EQ(0, mrq_wait_flags(&self->q, MEMREG_QUEUE_NEED_WAKEUP,
					    MEMREG_QUEUE_NEED_WAKEUP, sleep_ms(self->fd)));
		s = mr_sqe_nop(round);
		ASSERT_EQ(0, memreg_queue_post(&self->q, &s, MEMREG_POST_NO_DOORBELL, NULL));
		ASSERT_EQ(0, memreg_queue_doorbell(&self->q));
		/* No waiting: what the doorbell served is there already. */
		got = memreg_reap_cqes(&self->q, c, 1);
		if (got == 1 && (memreg_queue_flags(&self->q) & MEMREG_QUEUE_NEED_WAKEUP))
			inline_rounds++;
		if (!got)
			ASSERT_EQ(1, memreg_wait_cqes(&self->q, c, 1, 5000));
		expect_cqe(_metadata, &c[0], round, 0, 0);
	}
	EXPECT_LE(6, inline_rounds) TH_LOG("%d of 8 rounds served inline", inline_rounds);
	ASSERT_EQ(0, memreg_queue_stats(self->fd, &st));
	EXPECT_EQ(8, st.requests);
	EXPECT_EQ(8, st.completions);
	EXPECT_EQ(8, st.doorbells);
	/* Each inline batch counts as one run, like the worker's. */
	EXPECT_LE(8, st.wakeups);
}

/*
 * A batch one thread published and rang for once is served whole by the
 * doorbell, in the caller, and the worker stays asleep: one system call a
 * batch, no worker wake-up, and the next batch rings again.
 */
TEST_F(dp, batch_rung_once_is_served_whole_in_the_caller)
{
	struct memreg_queue_stats st0, st;
	struct memreg_cqe c[8];
	struct memreg_sqe s;
	int round;
	__u64 i;

	ASSERT_EQ(0, mrq_wait_flags(&self->q, MEMREG_QUEUE_NEED_WAKEUP, MEMREG_QUEUE_NEED_WAKEUP,
				    sleep_ms(self->fd)));
	ASSERT_EQ(0, memreg_queue_stats(self->fd, &st0));
	for (round = 0; round < 4; round++) {
		for (i = 0; i < 8; i++) {
			s = mr_sqe_copy(round * 8 + i, self->rd.lkey, i * 64, self->rs.lkey, i * 64, 64);
			ASSERT_EQ(0, memreg_queue_post(&self->q, &s, MEMREG_POST_NO_DOORBELL, NULL));
		}
		ASSERT_EQ(0, memreg_queue_doorbell(&self->q));
		/* No waiting: the whole batch completed before the doorbell returned. */
		ASSERT_EQ(8, memreg_reap_cqes(&self->q, c, 8));
		for (i = 0; i < 8; i++)
			expect_cqe(_metadata, &c[i], round * 8 + i, 0, 64);
		EXPECT_EQ(MEMREG_QUEUE_NEED_WAKEUP, memreg_queue_flags(&self->q) &
			  MEMREG_QUEUE_NEED_WAKEUP) TH_LOG("round %d", round);
	}
	EXPECT_EQ(0, memcmp(self->dst, self->src, 8 * 64));
	ASSERT_EQ(0, memreg_queue_stats(self->fd, &st));
	EXPECT_EQ(32, st.requests - st0.requests);
	EXPECT_EQ(4, st.doorbells - st0.doorbells);
	/* Each inline batch counts as one run; no worker ran besides. */
	EXPECT_EQ(4, st.wakeups - st0.wakeups);
	EXPECT_EQ(4, st.batches - st0.batches);
	EXPECT_EQ(8, st.batch_max);
}

/* Requests waiting when the worker wakes are taken in batches. */
TEST_F(dp, backlog_is_taken_in_batches)
{
	struct memreg_queue_stats st;
	struct memreg_cqe c[QSQ];
	struct memreg_sqe s;
	__u64 i;

	for (i = 0; i < 32; i++) {
		s = mr_sqe_nop(i);
		ASSERT_EQ(0, memreg_queue_post(&self->q, &s, MEMREG_POST_NO_DOORBELL, NULL));
	}
	ASSERT_EQ(0, memreg_queue_doorbell(&self->q));
	ASSERT_EQ(32, memreg_wait_cqes(&self->q, c, 32, 5000));
	for (i = 0; i < 32; i++)
		expect_cqe(_metadata, &c[i], i, 0, 0);
	ASSERT_EQ(0, memreg_queue_stats(self->fd, &st));
	EXPECT_EQ(32, st.requests);
	EXPECT_LE(1, st.batches);
	EXPECT_GT(32, st.batches);
	EXPECT_LE(2, st.batch_max);
	EXPECT_GE(32, st.batch_max);
	EXPECT_EQ(1, st.doorbells);
}

TEST_F(dp, queue_stats_follow_the_requests)
{
	struct memreg_queue_stats st;
	struct memreg_cqe c[40];
	struct memreg_sqe s;
	__u64 i;

	ASSERT_EQ(0, memreg_queue_stats(self->fd, &st));
	EXPECT_EQ(0, st.requests);
	EXPECT_EQ(0, st.completions);
	EXPECT_EQ(0, st.errors);
	EXPECT_EQ(0, st.doorbells);
	EXPECT_EQ(0, st.wakeups);
	EXPECT_EQ(0, st.batches);
	EXPECT_EQ(0, st.batch_max);
	EXPECT_EQ(0, st.cq_full_stalls);
	EXPECT_EQ(0, st.shadow_hits);
	EXPECT_EQ(0, st.shadow_misses);
	EXPECT_EQ(0, st.master_overflows);
	EXPECT_EQ(0, st.remote_bytes);
	EXPECT_EQ(0, st.messages);
	EXPECT_EQ(0, st.rnr_timeouts);

	/* 10 NOPs, 3 refused, 20 COPYs through the same two keys. */
	for (i = 0; i < 33; i++) {
		if (i < 10)
			s = mr_sqe_nop(i);
		else if (i < 13)
			s = (struct memreg_sqe){ .opcode = 9, .user_data = i };
		else
			s = mr_sqe_copy(i, self->rd.lkey, (i - 13) * 100, self->rs.lkey,
					(i - 13) * 100, 100);
		ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	}
	ASSERT_EQ(33, memreg_wait_cqes(&self->q, c, 33, 5000));
	for (i = 0; i < 33; i++)
		expect_cqe(_metadata, &c[i], i, i >= 10 && i < 13 ? -EINVAL : 0,
			   i >= 13 ? 100 : 0);
	EXPECT_TRUE(all_bytes(self->dst, 2000, 's'));
	EXPECT_TRUE(all_bytes(self->dst + 2000, BUF_LEN - 2000, 'd'));

	ASSERT_EQ(0, memreg_queue_stats(self->fd, &st));
	EXPECT_EQ(33, st.requests);
	EXPECT_EQ(33, st.completions);
	EXPECT_EQ(3, st.errors);
	EXPECT_LE(1, st.doorbells);
	EXPECT_EQ(mrq_doorbells(&self->q), st.doorbells);
	EXPECT_LE(1, st.wakeups);
	EXPECT_LE(1, st.batches);
	EXPECT_GE(33, st.batches);
	EXPECT_LE(1, st.batch_max);
	EXPECT_GE(33, st.batch_max);
	EXPECT_EQ(0, st.cq_full_stalls);
	EXPECT_LT(0, st.shadow_hits);
	EXPECT_EQ(0, st.master_overflows);
	EXPECT_EQ(0, st.remote_bytes);
	EXPECT_EQ(0, st.messages);
	EXPECT_EQ(0, st.rnr_timeouts);
	TH_LOG("batches %llu batch_max %llu batch_limit %llu poll_us %llu shadow %llu/%llu",
	       (unsigned long long)st.batches, (unsigned long long)st.batch_max,
	       (unsigned long long)st.batch_limit, (unsigned long long)st.poll_us,
	       (unsigned long long)st.shadow_hits, (unsigned long long)st.shadow_misses);
}

/* ---- Backpressure ---- */

/*
 * A full completion ring stops the worker (CQ_FULL), which then leaves the
 * submission ring full; the poster sees that at once. Nothing is
 * overwritten; after reaping and the doorbell it goes on.
 */
TEST(full_rings_stop_and_resume)
{
	struct memreg_queue_stats st;
	struct memreg_cqe c[8], before[4];
	struct memreg_sqe s;
	struct memreg_queue q;
	int fd = open_ctx();
	__u64 i;

	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, memreg_queue_init(fd, 4, 4, -1, &q));
	fill_both_rings(_metadata, &q);
	memcpy(before, q.cqes, sizeof(before));
	for (i = 0; i < 4; i++)
		EXPECT_EQ(i, before[i].user_data);

	/* The submission ring is full: slot 0 still holds position 4's request. */
	s = mr_sqe_nop(8);
	EXPECT_EQ(-EAGAIN, memreg_queue_post(&q, &s, 0, NULL));
	EXPECT_EQ(5, mrq_seq(&q, 0));
	EXPECT_EQ(8, q.user->insert);
	/* A doorbell changes nothing while the ring is full. */
	EXPECT_EQ(0, memreg_queue_doorbell(&q));
	expect_quiet(_metadata, &q, 4);
	EXPECT_EQ(4, memreg_queue_sq_head(&q));
	EXPECT_EQ(0, memcmp(before, q.cqes, sizeof(before)));
	ASSERT_EQ(0, memreg_queue_stats(fd, &st));
	EXPECT_LE(1, st.cq_full_stalls);
	EXPECT_EQ(4, st.requests);
	EXPECT_EQ(4, st.completions);

	/* Reaping rings the doorbell (CQ_FULL): the next four come. */
	ASSERT_EQ(4, memreg_reap_cqes(&q, c, 8));
	for (i = 0; i < 4; i++)
		expect_cqe(_metadata, &c[i], i, 0, 0);
	ASSERT_EQ(4, memreg_wait_cqes(&q, c, 4, 5000));
	for (i = 0; i < 4; i++)
		expect_cqe(_metadata, &c[i], 4 + i, 0, 0);
	EXPECT_EQ(0, mrq_wait_flags(&q, MEMREG_QUEUE_CQ_FULL, 0, 5000));
	s = mr_sqe_nop(8);
	ASSERT_EQ(0, memreg_queue_post_wait(&q, &s, 5000));
	ASSERT_EQ(1, memreg_wait_cqes(&q, c, 1, 5000));
	expect_cqe(_metadata, &c[0], 8, 0, 0);
	ASSERT_EQ(0, memreg_queue_stats(fd, &st));
	EXPECT_EQ(9, st.requests);
	EXPECT_EQ(9, st.completions);
	EXPECT_EQ(mrq_doorbells(&q), st.doorbells);
	memreg_queue_exit(&q);
	close(fd);
}

struct streamer {
	struct memreg_queue *q;
	__u64 n;
	int failed;
};

static void *nop_streamer(void *arg)
{
	struct streamer *t = arg;
	struct memreg_sqe s;
	__u64 i;

	for (i = 0; i < t->n; i++) {
		s = mr_sqe_nop(i);
		if (memreg_queue_post_wait(t->q, &s, 20000)) {
			__atomic_store_n(&t->failed, 1, __ATOMIC_RELEASE);
			break;
		}
	}
	return NULL;
}

/* Tiny rings and a slow reader: every request completes once, in order. */
TEST_F_TIMEOUT(dp, tiny_rings_lose_nothing, 120)
{
	struct memreg_queue_stats st;
	struct memreg_cqe c[4];
	struct streamer t = { .n = 20000 };
	struct memreg_queue q;
	__u64 next = 0, bad = 0;
	__u64 deadline = mrq_now_us() + 60000000ULL;
	pthread_t th;
	unsigned int i, n;

	ASSERT_EQ(0, memreg_queue_init(self->fd, 4, 4, -1, &q));
	ASSERT_EQ(1, q.index);
	t.q = &q;
	ASSERT_EQ(0, pthread_create(&th, NULL, nop_streamer, &t));
	while (next < t.n && mrq_now_us() < deadline) {
		n = memreg_wait_cqes(&q, c, 4, 100);
		for (i = 0; i < n; i++, next++)
			if (c[i].user_data != next || c[i].status)
				bad++;
		/* Slow now and then: the ring fills. */
		if (n && next % 64 < 4)
			usleep(1000);
	}
	pthread_join(th, NULL);
	EXPECT_EQ(0, t.failed);
	EXPECT_EQ(t.n, next);
	EXPECT_EQ(0, bad);
	expect_quiet(_metadata, &q, (__u32)t.n);
	ASSERT_EQ(0, memreg_queue_stats(self->fd, &st));
	EXPECT_EQ(t.n, st.requests);
	EXPECT_EQ(t.n, st.completions);
	EXPECT_LE(1, st.cq_full_stalls);
	EXPECT_EQ(mrq_doorbells(&q), st.doorbells);
	memreg_queue_exit(&q);
}

/* ---- Many posters ---- */

#define POSTERS		4
#define PER_POSTER	10000

struct poster {
	struct memreg_queue *q;
	__u64 thread;
	__u64 dst_key, src_key;
	int failed;
};

static void *mixed_poster(void *arg)
{
	struct poster *p = arg;
	struct memreg_sqe s;
	__u64 i;

	for (i = 0; i < PER_POSTER; i++) {
		__u64 ud = p->thread << 32 | i;

		if (i & 1)
			/* Odd requests copy, and cover all four 64-byte blocks in turn. */
			s = mr_sqe_copy(ud, p->dst_key, p->thread * 256 + (i / 2 % 4) * 64,
					p->src_key, p->thread * 256 + (i / 2 % 4) * 64, 64);
		else
			s = mr_sqe_nop(ud);
		if (memreg_queue_post_wait(p->q, &s, 30000)) {
			__atomic_store_n(&p->failed, 1, __ATOMIC_RELEASE);
			break;
		}
	}
	return NULL;
}

/*
 * POSTERS threads post into one queue while one thread reaps: each
 * user_data exactly once, each thread's requests in its order. Doorbells
 * stay well below one a request: a doorbell that serves more than one
 * request in its caller wakes the worker, which polls the busy queue with
 * NEED_WAKEUP clear (a doorbell that serves one request alone, between
 * the worker's polls, is the price of not waking it for each).
 */
TEST_F_TIMEOUT(dp, many_posters_one_reaper, 180)
{
	struct poster p[POSTERS];
	pthread_t th[POSTERS];
	struct memreg_queue_stats st0, st;
	struct memreg_cqe c[256];
	__u64 next[POSTERS] = { 0 }, total = 0, bad = 0, want = POSTERS * PER_POSTER;
	__u64 deadline = mrq_now_us() + 150000000ULL;
	unsigned int i, n;
	int t;

	for (i = 0; i < BUF_LEN; i++)
		self->src[i] = (char)(i * 3 + 5);
	ASSERT_EQ(0, memreg_queue_stats(self->fd, &st0));
	for (t = 0; t < POSTERS; t++) {
		p[t] = (struct poster){ .q = &self->q, .thread = t, .dst_key = self->rd.lkey,
					.src_key = self->rs.lkey };
		ASSERT_EQ(0, pthread_create(&th[t], NULL, mixed_poster, &p[t]));
	}
	while (total < want && mrq_now_us() < deadline) {
		n = memreg_wait_cqes(&self->q, c, 256, 100);
		for (i = 0; i < n; i++, total++) {
			__u64 ud = c[i].user_data, thread = ud >> 32, seq = ud & 0xffffffffULL;

			if (thread >= POSTERS || seq != next[thread] || c[i].status ||
			    c[i].bytes != (seq & 1 ? 64 : 0)) {
				if (bad++ < 5)
					TH_LOG("completion %llu: user_data %#llx status %d bytes %llu",
					       (unsigned long long)total, (unsigned long long)ud,
					       c[i].status, (unsigned long long)c[i].bytes);
				continue;
			}
			next[thread]++;
		}
	}
	for (t = 0; t < POSTERS; t++) {
		pthread_join(th[t], NULL);
		EXPECT_EQ(0, p[t].failed) TH_LOG("poster %d", t);
		EXPECT_EQ(PER_POSTER, next[t]) TH_LOG("poster %d", t);
	}
	EXPECT_EQ(want, total);
	EXPECT_EQ(0, bad);
	expect_quiet(_metadata, &self->q, (__u32)want);
	EXPECT_EQ(0, memcmp(self->dst, self->src, POSTERS * 256));
	EXPECT_TRUE(all_bytes(self->dst + POSTERS * 256, BUF_LEN - POSTERS * 256, 'd'));

	ASSERT_EQ(0, memreg_queue_stats(self->fd, &st));
	EXPECT_EQ(want, st.requests - st0.requests);
	EXPECT_EQ(want, st.completions - st0.completions);
	EXPECT_EQ(0, st.errors - st0.errors);
	EXPECT_EQ(mrq_doorbells(&self->q), st.doorbells - st0.doorbells);
	EXPECT_GT(want / 2, st.doorbells - st0.doorbells);
	EXPECT_LT(0, st.shadow_hits);
	EXPECT_LE(st.batch_max, want);
	TH_LOG("%llu requests: %llu doorbells, %llu wakeups, %llu batches (max %llu), "
	       "%llu full stalls, shadow %llu/%llu", (unsigned long long)want,
	       (unsigned long long)(st.doorbells - st0.doorbells),
	       (unsigned long long)st.wakeups, (unsigned long long)st.batches,
	       (unsigned long long)st.batch_max, (unsigned long long)st.cq_full_stalls,
	       (unsigned long long)st.shadow_hits, (unsigned long long)st.shadow_misses);
}

/* ---- Arming ---- */

/* An armed queue's next completion wakes poll and signals its eventfd, once. */
TEST_F(dp, armed_completion_wakes_poll_and_eventfd)
{
	struct memreg_cqe c[3];
	struct memreg_sqe s;
	struct waiter w;
	__u64 i;

	drain(self);
	EXPECT_EQ(0, mrq_armed(&self->q));
	ASSERT_EQ(0, start_waiter(&w, self->fd, POLLIN, 10000));
	memreg_queue_arm(&self->q);
	EXPECT_EQ(1, mrq_armed(&self->q));
	s = mr_sqe_nop(1);
	ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	pthread_join(w.th, NULL);
	EXPECT_EQ(1, w.n);
	EXPECT_TRUE(w.revents & POLLIN);
	/* Woken by the completion, not by the timeout. */
	EXPECT_GT(5000000, w.elapsed_us);
	ASSERT_EQ(1, memreg_wait_cqes(&self->q, c, 1, 5000));
	expect_cqe(_metadata, &c[0], 1, 0, 0);
	EXPECT_EQ(0, armed_wait(&self->q));
	EXPECT_EQ(1, efd_count_wait(self->efd));

	/* One arm, one wake-up: the next completions signal nothing. */
	memreg_queue_arm(&self->q);
	for (i = 0; i < 3; i++) {
		s = mr_sqe_nop(10 + i);
		ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	}
	ASSERT_EQ(3, memreg_wait_cqes(&self->q, c, 3, 5000));
	EXPECT_EQ(0, armed_wait(&self->q));
	EXPECT_EQ(1, efd_count_wait(self->efd));
	for (i = 0; i < 3; i++) {
		s = mr_sqe_nop(20 + i);
		ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	}
	ASSERT_EQ(3, memreg_wait_cqes(&self->q, c, 3, 5000));
	EXPECT_EQ(0, efd_count(self->efd));
}

/* Unarmed completions wake nothing and signal nothing. */
TEST_F(dp, unarmed_completions_wake_nothing)
{
	struct memreg_cqe c[8];
	struct memreg_sqe s;
	struct waiter w;
	__u64 i;

	drain(self);
	ASSERT_EQ(0, start_waiter(&w, self->fd, POLLIN, 1500));
	for (i = 0; i < 8; i++) {
		s = mr_sqe_nop(i);
		ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	}
	ASSERT_EQ(8, memreg_wait_cqes(&self->q, c, 8, 5000));
	pthread_join(w.th, NULL);
	/* It slept its whole timeout. */
	EXPECT_LE(1400000, w.elapsed_us) TH_LOG("poll returned %d (%#x) after %llu us", w.n,
						w.revents, (unsigned long long)w.elapsed_us);
	EXPECT_EQ(0, efd_count(self->efd));
	EXPECT_EQ(0, mrq_armed(&self->q));
}

/* Each queue signals its own eventfd, when it is armed. */
TEST_F(dp, eventfd_per_queue)
{
	struct memreg_cqe c;
	struct memreg_sqe s = mr_sqe_nop(7);
	struct memreg_queue q1, q2;
	int efd1 = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	ASSERT_GE(efd1, 0);
	ASSERT_EQ(0, memreg_queue_init(self->fd, 8, 8, efd1, &q1));
	ASSERT_EQ(0, memreg_queue_init(self->fd, 8, 8, -1, &q2));
	drain(self);
	memreg_queue_arm(&q1);
	ASSERT_EQ(0, memreg_queue_run(&self->q, &s, &c));
	ASSERT_EQ(0, memreg_queue_run(&q2, &s, &c));
	EXPECT_EQ(0, efd_count(self->efd));
	EXPECT_EQ(0, efd_count(efd1));
	EXPECT_EQ(1, mrq_armed(&q1));
	ASSERT_EQ(0, memreg_queue_run(&q1, &s, &c));
	EXPECT_EQ(0, armed_wait(&q1));
	EXPECT_EQ(1, efd_count_wait(efd1));
	EXPECT_EQ(0, efd_count(self->efd));

	memreg_queue_arm(&self->q);
	memreg_queue_arm(&q2);
	ASSERT_EQ(0, memreg_queue_run(&self->q, &s, &c));
	EXPECT_EQ(1, efd_count_wait(self->efd));
	EXPECT_EQ(0, efd_count(efd1));
	/* Without an eventfd, arming works all the same. */
	ASSERT_EQ(0, memreg_queue_run(&q2, &s, &c));
	EXPECT_EQ(0, armed_wait(&q2));
	memreg_queue_exit(&q1);
	memreg_queue_exit(&q2);
	close(efd1);
}

/* ---- The master ring ---- */

TEST_F(dp, master_ring_names_queues_with_completions)
{
	struct memreg_cqe c;
	struct memreg_sqe s;
	struct memreg_queue q1, q2;
	__u32 idx[MEMREG_MASTER_ENTRIES];
	unsigned int n, i, seen0 = 0, seen2 = 0, first2 = ~0U, last0 = 0;

	ASSERT_EQ(0, memreg_queue_init(self->fd, 4, 4, -1, &q1));
	ASSERT_EQ(0, memreg_queue_init(self->fd, 4, 4, -1, &q2));
	ASSERT_EQ(2, q2.index);
	EXPECT_EQ(0, mr_master_tail(&self->m));
	for (i = 0; i < 3; i++) {
		s = mr_sqe_nop(i);
		ASSERT_EQ(0, memreg_queue_run(&self->q, &s, &c));
	}
	s = mr_sqe_nop(100);
	ASSERT_EQ(0, memreg_queue_run(&q2, &s, &c));
	/* The master entry may follow the completion: wait for it. */
	for (i = 0; i < 200 && mr_master_tail(&self->m) < 4; i++)
		usleep(10000);
	n = memreg_master_read(&self->m, idx, MEMREG_MASTER_ENTRIES);
	EXPECT_LE(2, n);
	EXPECT_GE(4, n);
	for (i = 0; i < n; i++) {
		if (idx[i] == 0) {
			seen0++;
			last0 = i;
		} else if (idx[i] == 2) {
			seen2++;
			if (first2 == ~0U)
				first2 = i;
		} else {
			TH_LOG("entry %u names queue %u", i, idx[i]);
			EXPECT_TRUE(0);
		}
	}
	EXPECT_LE(1, seen0);
	EXPECT_EQ(1, seen2);
	EXPECT_LT(last0, first2);
	EXPECT_EQ(0, self->m.ring->flags);
	EXPECT_EQ(0, self->m.ring->overflows);

	/* Read: the next entries name only what completed since. */
	s = mr_sqe_nop(200);
	ASSERT_EQ(0, memreg_queue_run(&q1, &s, &c));
	for (i = 0; i < 200 && mr_master_tail(&self->m) == mr_master_head(&self->m); i++)
		usleep(10000);
	n = memreg_master_read(&self->m, idx, MEMREG_MASTER_ENTRIES);
	ASSERT_EQ(1, n);
	EXPECT_EQ(1, idx[0]);
	memreg_queue_exit(&q1);
	memreg_queue_exit(&q2);
}

/* An armed master ring wakes poll on its next entry (and signals no eventfd). */
TEST_F(dp, master_arm_wakes_poll)
{
	struct memreg_cqe c;
	struct memreg_sqe s = mr_sqe_nop(5);
	struct waiter w;

	drain(self);
	ASSERT_EQ(0, start_waiter(&w, self->fd, POLLIN, 10000));
	memreg_master_arm(&self->m);
	EXPECT_EQ(1, mr_master_armed(&self->m));
	ASSERT_EQ(0, memreg_queue_post_wait(&self->q, &s, 5000));
	pthread_join(w.th, NULL);
	EXPECT_EQ(1, w.n);
	EXPECT_TRUE(w.revents & POLLIN);
	EXPECT_GT(5000000, w.elapsed_us);
	EXPECT_EQ(0, mr_master_armed(&self->m));
	ASSERT_EQ(1, memreg_wait_cqes(&self->q, &c, 1, 5000));
	expect_cqe(_metadata, &c, 5, 0, 0);
	EXPECT_LE(1, mr_master_tail(&self->m));
	EXPECT_EQ(0, mr_master_at(&self->m, 0));
	/* The queue was not armed: its eventfd is quiet. */
	EXPECT_EQ(0, efd_count(self->efd));
}

/* A full master ring drops new entries, keeps the old ones, and counts. */
TEST_F_TIMEOUT(dp, master_overflow_counts_unwritten_entries, 120)
{
	const __u32 cycles = MEMREG_MASTER_ENTRIES + 76;
	struct memreg_queue_stats st;
	struct memreg_cqe c;
	struct memreg_sqe s;
	struct memreg_queue q1, *qs[2] = { &self->q, &q1 };
	__u32 i, tail;

	ASSERT_EQ(0, memreg_queue_init(self->fd, 4, 4, -1, &q1));
	/* One request at a time, alternately on queues 0 and 1: one entry each. */
	for (i = 0; i < cycles; i++) {
		s = mr_sqe_nop(i);
		ASSERT_EQ(0, memreg_queue_run(qs[i & 1], &s, &c)) TH_LOG("cycle %u", i);
		ASSERT_EQ(i, c.user_data);
	}
	for (i = 0; i < 200; i++) {
		if (mr_master_tail(&self->m) + self->m.ring->overflows == cycles)
			break;
		usleep(10000);
	}
	tail = mr_master_tail(&self->m);
	EXPECT_EQ(MEMREG_MASTER_ENTRIES, tail);
	EXPECT_EQ(cycles - MEMREG_MASTER_ENTRIES, self->m.ring->overflows);
	EXPECT_EQ(MEMREG_EVENTS_OVERFLOW, self->m.ring->flags & MEMREG_EVENTS_OVERFLOW);
	for (i = 0; i < MEMREG_MASTER_ENTRIES; i++) {
		if (mr_master_at(&self->m, i) != (i & 1)) {
			TH_LOG("entry %u names queue %u", i, mr_master_at(&self->m, i));
			EXPECT_TRUE(0);
			break;
		}
	}
	ASSERT_EQ(0, memreg_queue_stats(self->fd, &st));
	EXPECT_EQ(self->m.ring->overflows, st.master_overflows);
	EXPECT_EQ(cycles, st.completions);

	/* Read: room again. */
	mr_master_set_head(&self->m, tail);
	s = mr_sqe_nop(cycles);
	ASSERT_EQ(0, memreg_queue_run(&q1, &s, &c));
	for (i = 0; i < 200 && mr_master_tail(&self->m) == tail; i++)
		usleep(10000);
	EXPECT_EQ(tail + 1, mr_master_tail(&self->m));
	EXPECT_EQ(1, mr_master_at(&self->m, tail));
	EXPECT_EQ(cycles - MEMREG_MASTER_ENTRIES, self->m.ring->overflows);
	memreg_queue_exit(&q1);
}

/* ---- POLLOUT ---- */

/* The file is writable while no queue's submission ring is full. */
TEST(pollout_while_no_submission_ring_is_full)
{
	struct memreg_cqe c[8];
	struct waiter w;
	struct memreg_queue q0, q1;
	int fd = open_ctx();

	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, memreg_queue_init(fd, 4, 4, -1, &q0));
	ASSERT_EQ(0, memreg_queue_init(fd, 4, 4, -1, &q1));
	EXPECT_EQ(POLLOUT, poll_now(fd, POLLOUT) & POLLOUT);
	fill_both_rings(_metadata, &q0);
	/* Queue 0's ring is full, queue 1's is empty: not writable. */
	EXPECT_EQ(0, poll_now(fd, POLLOUT) & POLLOUT);

	/* A poller for POLLOUT is woken when the worker makes room. */
	ASSERT_EQ(0, start_waiter(&w, fd, POLLOUT, 10000));
	ASSERT_EQ(4, memreg_reap_cqes(&q0, c, 8));
	pthread_join(w.th, NULL);
	EXPECT_EQ(1, w.n);
	EXPECT_TRUE(w.revents & POLLOUT);
	EXPECT_GT(5000000, w.elapsed_us);
	ASSERT_EQ(4, memreg_wait_cqes(&q0, c, 4, 5000));
	EXPECT_EQ(POLLOUT, poll_now(fd, POLLOUT) & POLLOUT);
	memreg_queue_exit(&q0);
	memreg_queue_exit(&q1);
	close(fd);
}

/* ---- Garbage in the shared areas ---- */

/*
 * The worker takes only a slot whose seq says published for its lap: not
 * one merely claimed (insert moved), nor one with any other seq; insert
 * itself is never read by it.
 */
TEST(unpublished_slots_are_never_taken)
{
	static const __u64 wrong[] = { 0, 2, 8, 9, 17, ~0ULL, 1ULL << 63 };
	struct memreg_cqe c[2];
	struct memreg_queue q;
	size_t i;
	int fd = open_ctx();

	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, memreg_queue_init(fd, 8, 8, -1, &q));
	/* Claimed and written, never published. */
	q.slots[0].sqe = mr_sqe_nop(0xa0);
	q.slots[1].sqe = mr_sqe_nop(0xa1);
	q.user->insert = 2;
	ASSERT_EQ(0, memreg_queue_doorbell(&q));
	expect_quiet(_metadata, &q, 0);
	EXPECT_EQ(0, memreg_queue_sq_head(&q));
	/* Published with the wrong sequence. */
	for (i = 0; i < sizeof(wrong) / sizeof(wrong[0]); i++) {
		__atomic_store_n(&q.slots[0].seq, wrong[i], __ATOMIC_RELEASE);
		ASSERT_EQ(0, memreg_queue_doorbell(&q));
		usleep(50000);
		EXPECT_EQ(0, memreg_queue_cq_tail(&q)) TH_LOG("seq %#llx", (unsigned long long)wrong[i]);
		EXPECT_EQ(0, memreg_queue_sq_head(&q));
	}
	/* Slot 1 published, slot 0 not: slot 1 waits its turn. */
	__atomic_store_n(&q.slots[0].seq, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&q.slots[1].seq, 2, __ATOMIC_RELEASE);
	ASSERT_EQ(0, memreg_queue_doorbell(&q));
	expect_quiet(_metadata, &q, 0);
	/* Garbage insert, slot 0 published right: taken, then slot 1. */
	q.user->insert = 0xdeadbeefcafeULL;
	__atomic_store_n(&q.slots[0].seq, 1, __ATOMIC_RELEASE);
	ASSERT_EQ(0, memreg_queue_doorbell(&q));
	ASSERT_EQ(2, memreg_wait_cqes(&q, c, 2, 5000));
	expect_cqe(_metadata, &c[0], 0xa0, 0, 0);
	expect_cqe(_metadata, &c[1], 0xa1, 0, 0);
	EXPECT_EQ(2, memreg_queue_sq_head(&q));
	/* Freed for the next lap; insert is user space's. */
	EXPECT_EQ(8, mrq_seq(&q, 0));
	EXPECT_EQ(9, mrq_seq(&q, 1));
	EXPECT_EQ(0xdeadbeefcafeULL, q.user->insert);
	/* Taken once: another doorbell takes nothing again. */
	ASSERT_EQ(0, memreg_queue_doorbell(&q));
	expect_quiet(_metadata, &q, 2);
	EXPECT_EQ(2, memreg_queue_sq_head(&q));
	memreg_queue_exit(&q);
	close(fd);
}

/* A completion head that makes no sense reads as a full ring. */
TEST(garbage_cq_head_reads_as_full)
{
	struct memreg_cqe c[8], before[4];
	struct memreg_sqe s;
	struct memreg_queue q;
	__u32 heads[] = { 0xffffffffu, 9, 8 + 0x80000000u, 8 + 5, 8 - 5 };
	size_t i;
	int fd = open_ctx();

	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, memreg_queue_init(fd, 4, 4, -1, &q));
	for (i = 0; i < 8; i++) {
		s = mr_sqe_nop(i);
		ASSERT_EQ(0, memreg_queue_run(&q, &s, c));
	}
	ASSERT_EQ(8, memreg_queue_cq_tail(&q));
	memcpy(before, q.cqes, sizeof(before));
	/* The worker asleep first (it polls a while after its last request). */
	ASSERT_EQ(0, mrq_wait_flags(&q, MEMREG_QUEUE_NEED_WAKEUP, MEMREG_QUEUE_NEED_WAKEUP, 5000));
	s = mr_sqe_nop(100);
	mrq_set_cq_head(&q, heads[0]);
	ASSERT_EQ(0, memreg_queue_post(&q, &s, MEMREG_POST_NO_DOORBELL, NULL));
	for (i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
		mrq_set_cq_head(&q, heads[i]);
		ASSERT_EQ(0, memreg_queue_doorbell(&q));
		EXPECT_EQ(0, mrq_wait_flags(&q, MEMREG_QUEUE_CQ_FULL, MEMREG_QUEUE_CQ_FULL, 5000))
			TH_LOG("head %#x", heads[i]);
		usleep(100000);
		EXPECT_EQ(8, memreg_queue_cq_tail(&q)) TH_LOG("head %#x", heads[i]);
		EXPECT_EQ(8, memreg_queue_sq_head(&q)) TH_LOG("head %#x", heads[i]);
		EXPECT_EQ(0, memcmp(before, q.cqes, sizeof(before)));
		/* The kernel does not write the head. */
		EXPECT_EQ(heads[i], memreg_queue_cq_head(&q));
	}
	/* Put right: it goes on. */
	mrq_set_cq_head(&q, 8);
	ASSERT_EQ(0, memreg_queue_doorbell(&q));
	ASSERT_EQ(1, memreg_wait_cqes(&q, c, 1, 5000));
	expect_cqe(_metadata, &c[0], 100, 0, 0);
	EXPECT_EQ(0, mrq_wait_flags(&q, MEMREG_QUEUE_CQ_FULL, 0, 5000));
	memreg_queue_exit(&q);
	close(fd);
}

struct scribble {
	struct memreg_queue *q;
	__u64 keys[2];
	int stop;
	int failed;
	__u64 posted;
	__u64 ops;
};

#define LEGIT		0x1000000000000000ULL
#define GARBAGE		0xbad0000000000000ULL

static void *legit_poster(void *arg)
{
	struct scribble *sc = arg;
	struct memreg_sqe s;
	__u64 i = 0;
	int ret;

	while (!__atomic_load_n(&sc->stop, __ATOMIC_ACQUIRE)) {
		if (i & 1)
			s = mr_sqe_copy(LEGIT | i, sc->keys[1], (i % 64) * 64, sc->keys[0], 0, 64);
		else
			s = mr_sqe_nop(LEGIT | i);
		ret = memreg_queue_post(sc->q, &s, 0, NULL);
		if (ret == -EAGAIN || ret == -EBUSY) {
			sched_yield();
			continue;
		}
		/* Posted (a failed doorbell would be a failure of its own). */
		if (ret)
			__atomic_store_n(&sc->failed, 1, __ATOMIC_RELEASE);
		__atomic_store_n(&sc->posted, ++i, __ATOMIC_RELAXED);
	}
	return NULL;
}

static __u64 rnd64(unsigned int *seed)
{
	return (__u64)rand_r(seed) << 40 ^ (__u64)rand_r(seed) << 20 ^ (__u64)rand_r(seed);
}

static void *scribbler(void *arg)
{
	struct scribble *sc = arg;
	struct memreg_queue *q = sc->q;
	unsigned int seed = 12345;
	__u64 n = 0;

	while (!__atomic_load_n(&sc->stop, __ATOMIC_ACQUIRE)) {
		__u32 slot = rand_r(&seed) % q->sq_entries;
		struct memreg_sq_slot *sl = &q->slots[slot];
		struct memreg_sqe s;

		switch (rand_r(&seed) % 10) {
		case 0:
			__atomic_store_n(&sl->seq, rnd64(&seed), __ATOMIC_RELEASE);
			break;
		case 1:
		case 2: {
			/* Published for some lap, near the worker's. */
			__u64 head = memreg_queue_sq_head(q);
			__u64 lap = head + (rand_r(&seed) % (3 * q->sq_entries));

			__atomic_store_n(&q->slots[lap % q->sq_entries].seq, lap + 1,
					 __ATOMIC_RELEASE);
			break;
		}
		case 3:
			__atomic_store_n(&q->user->insert, rnd64(&seed), __ATOMIC_RELAXED);
			break;
		case 4:
			__atomic_store_n(&q->user->insert,
					 q->user->insert + (rand_r(&seed) % 7) - 3, __ATOMIC_RELAXED);
			break;
		case 5:
			for (size_t i = 0; i < sizeof(s); i++)
				((unsigned char *)&s)[i] = rand_r(&seed);
			s.user_data = GARBAGE | (n & 0xffffffff);
			memcpy(&sl->sqe, &s, sizeof(s));
			break;
		case 6:
		case 7:
			/* Plausible: a real opcode, real keys, odd offsets and lengths. */
			memset(&s, 0, sizeof(s));
			s.opcode = rand_r(&seed) % 5;
			s.user_data = GARBAGE | (n & 0xffffffff);
			s.key = rand_r(&seed) % 4 ? sc->keys[rand_r(&seed) % 2] : rnd64(&seed);
			s.src_key = rand_r(&seed) % 4 ? sc->keys[rand_r(&seed) % 2] : rnd64(&seed);
			s.offset = rand_r(&seed) % 3 ? rand_r(&seed) % BUF_LEN : rnd64(&seed);
			s.src_offset = rand_r(&seed) % 3 ? rand_r(&seed) % BUF_LEN : rnd64(&seed);
			s.length = rand_r(&seed) % 3 ? rand_r(&seed) % (BUF_LEN + 2) : rnd64(&seed);
			if (!(rand_r(&seed) % 8))
				s.flags = rand_r(&seed);
			memcpy(&sl->sqe, &s, sizeof(s));
			break;
		case 8:
			__atomic_store_n(&q->user->cq_arm, rand_r(&seed), __ATOMIC_RELAXED);
			break;
		case 9:
			q->user->reserved[rand_r(&seed) % 6] = rnd64(&seed);
			break;
		}
		if (!(++n % 64))
			sched_yield();
	}
	__atomic_store_n(&sc->ops, n, __ATOMIC_RELEASE);
	return NULL;
}

static bool allowed_status(int status)
{
	/* ENOTCONN: a WRITE or READ naming a peer handle the file does not have. */
	return status == 0 || status == -EINVAL || status == -ENOENT || status == -EACCES ||
	       status == -EAGAIN || status == -EOVERFLOW || status == -ENOTCONN;
}

/*
 * One thread posts properly while another writes garbage over the
 * submission ring (sequences, insert, descriptors, arm). Every completion
 * is a taken descriptor with a documented status; every taken descriptor
 * completes; the context still goes away cleanly, and the module works.
 */
TEST_F_TIMEOUT(dp, scribbled_submission_ring, 120)
{
	struct memreg_global_stats base;
	struct memreg_queue_stats st;
	struct scribble sc = { .q = &self->q, .keys = { self->rs.lkey, self->rd.lkey } };
	struct memreg_cqe c[QCQ];
	pthread_t tp, ts;
	__u64 reaped = 0, bad = 0, legit = 0, garbage = 0, end, last;
	unsigned int i, n;
	struct memreg_queue q2;
	int fd2;

	ASSERT_EQ(0, pthread_create(&tp, NULL, legit_poster, &sc));
	ASSERT_EQ(0, pthread_create(&ts, NULL, scribbler, &sc));
	end = mrq_now_us() + 1500000;
	while (mrq_now_us() < end) {
		__u32 tail = memreg_queue_cq_tail(&self->q);

		EXPECT_GE(memreg_queue_sq_head(&self->q), (__u64)tail);
		n = memreg_wait_cqes(&self->q, c, QCQ, 10);
		for (i = 0; i < n; i++, reaped++) {
			if (!allowed_status(c[i].status) || c[i].flags || c[i].imm_data ||
			    (c[i].status && c[i].bytes) || c[i].bytes > BUF_LEN) {
				if (bad++ < 5)
					TH_LOG("completion %llu: user_data %#llx status %d bytes %llu",
					       (unsigned long long)reaped,
					       (unsigned long long)c[i].user_data, c[i].status,
					       (unsigned long long)c[i].bytes);
			}
			if ((c[i].user_data & 0xf000000000000000ULL) == LEGIT)
				legit++;
			else
				garbage++;
		}
	}
	__atomic_store_n(&sc.stop, 1, __ATOMIC_RELEASE);
	pthread_join(tp, NULL);
	pthread_join(ts, NULL);

	/* Quiet down: reap (ringing when stopped) until nothing comes for 300 ms. */
	last = mrq_now_us();
	while (mrq_now_us() - last < QUIET_MS * 1000) {
		n = memreg_wait_cqes(&self->q, c, QCQ, 10);
		for (i = 0; i < n; i++, reaped++)
			if (!allowed_status(c[i].status))
				bad++;
		if (n)
			last = mrq_now_us();
	}
	EXPECT_EQ(0, bad);
	EXPECT_EQ(0, sc.failed);
	ASSERT_EQ(0, memreg_queue_stats(self->fd, &st));
	EXPECT_EQ(reaped, st.completions);
	EXPECT_EQ((__u32)reaped, memreg_queue_cq_tail(&self->q));
	EXPECT_EQ(st.requests, st.completions);
	EXPECT_EQ(st.requests, memreg_queue_sq_head(&self->q));
	TH_LOG("%llu posted, %llu scribbles; %llu completions: %llu legit, %llu garbage, "
	       "%llu errors", (unsigned long long)sc.posted, (unsigned long long)sc.ops,
	       (unsigned long long)reaped, (unsigned long long)legit,
	       (unsigned long long)garbage, (unsigned long long)st.errors);

	/* The context still goes away whole. */
	memreg_queue_exit(&self->q);
	memreg_master_exit(&self->m);
	close(self->fd);
	self->fd = -1;
	memset(&base, 0, sizeof(base));
	EXPECT_EQ(0, wait_baseline(&base, 2000));

	/* And the module still works. */
	fd2 = open_ctx();
	ASSERT_GE(fd2, 0);
	ASSERT_EQ(0, memreg_queue_init(fd2, 4, 4, -1, &q2));
	for (i = 0; i < 10; i++) {
		struct memreg_sqe s = mr_sqe_nop(i);

		ASSERT_EQ(0, memreg_queue_run(&q2, &s, c));
		expect_cqe(_metadata, c, i, 0, 0);
	}
	memreg_queue_exit(&q2);
	close(fd2);
}

/* ---- Teardown ---- */

/* close() and munmap() with thousands of requests in flight. */
TEST_F_TIMEOUT(dp, close_with_requests_in_flight, 60)
{
	struct memreg_global_stats base;
	struct memreg_sqe s;
	struct memreg_queue q;
	__u64 i;
	__u32 tail;

	ASSERT_EQ(0, memreg_queue_init(self->fd, MEMREG_MAX_SQ_ENTRIES, MEMREG_MAX_SQ_ENTRIES, -1, &q));
	for (i = 0; i < MEMREG_MAX_SQ_ENTRIES; i++) {
		s = mr_sqe_copy(i, self->rd.lkey, (i % 4) * 4 * PAGE, self->rs.lkey,
				(i % 3) * 4 * PAGE, 4 * PAGE);
		ASSERT_EQ(0, memreg_queue_post(&q, &s, 0, NULL)) TH_LOG("request %llu",
								  (unsigned long long)i);
	}
	tail = memreg_queue_cq_tail(&q);
	memreg_queue_exit(&q);
	memreg_queue_exit(&self->q);
	memreg_master_exit(&self->m);
	close(self->fd);
	self->fd = -1;
	TH_LOG("%u of %u completed at close", tail, MEMREG_MAX_SQ_ENTRIES);
	memset(&base, 0, sizeof(base));
	EXPECT_EQ(0, wait_baseline(&base, 2000));
}

/* The context stays while mapped, the worker with it; unmapping releases it. */
TEST_F_TIMEOUT(dp, close_while_mapped_then_unmap, 60)
{
	struct memreg_global_stats base = { 0 }, g;
	struct memreg_sqe s;
	__u64 i;

	for (i = 0; i < QSQ; i++) {
		s = mr_sqe_copy(i, self->rd.lkey, 0, self->rs.lkey, 0, BUF_LEN);
		ASSERT_EQ(0, memreg_queue_post(&self->q, &s, 0, NULL));
	}
	close(self->fd);
	self->fd = -1;
	ASSERT_EQ(0, mr_global_now(&g));
	EXPECT_EQ(1, g.contexts);
	EXPECT_EQ(2, g.regions);
	/* The rings are still there to read. */
	EXPECT_EQ(QSQ, self->q.ring->sq_entries);
	memreg_queue_exit(&self->q);
	usleep(10000);
	/* The master ring's mappings still hold it. */
	ASSERT_EQ(0, mr_global_now(&g));
	EXPECT_EQ(1, g.contexts);
	memreg_master_exit(&self->m);
	EXPECT_EQ(0, wait_baseline(&base, 2000));
}

/* SIGKILL of a process in the middle of a stream releases everything. */
TEST_F_TIMEOUT(dp, sigkill_mid_stream, 60)
{
	struct memreg_global_stats base;
	int ready[2];
	char ch = 0;
	pid_t pid;

	/* Only the child's context counts here. */
	memreg_queue_exit(&self->q);
	memreg_master_exit(&self->m);
	close(self->fd);
	self->fd = -1;
	mr_settle(&base);
	ASSERT_EQ(0, pipe(ready));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		struct memreg_register a, b;
		struct memreg_cqe c[256];
		struct memreg_sqe s;
		struct memreg_queue q;
		char *x = map_buf(64 * PAGE, 'x'), *y = map_buf(64 * PAGE, 'y');
		__u64 i = 0, done = 0;
		int fd = open_ctx(), told = 0;

		/* Never outlive a parent that failed before its kill. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(ready[0]);
		if (fd < 0 || !x || !y || memreg_register(fd, x, 64 * PAGE, RW, &a) ||
		    memreg_register(fd, y, 64 * PAGE, RW, &b) || memreg_queue_init(fd, 1024, 4096, -1, &q))
			_exit(1);
		for (;;) {
			s = mr_sqe_copy(i, b.lkey, (i % 64) * PAGE, a.lkey, (i % 63) * PAGE, PAGE);
			if (!memreg_queue_post(&q, &s, 0, NULL))
				i++;
			done += memreg_reap_cqes(&q, c, 256);
			if (done >= 2000 && !told) {
				if (write(ready[1], "r", 1) != 1)
					_exit(2);
				told = 1;
			}
		}
	}
	close(ready[1]);
	ASSERT_EQ(1, read(ready[0], &ch, 1));
	usleep(20000);
	ASSERT_EQ(0, kill(pid, SIGKILL));
	EXPECT_EQ(SIGKILL, wait_signal(pid));
	EXPECT_EQ(0, wait_baseline(&base, 2000));
	close(ready[0]);
}

TEST_HARNESS_MAIN
