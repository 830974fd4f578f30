// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: libmemreg (tools/lib/memreg), the functions the other
 * selftests do not already run: state words, the event ring reader, the
 * liburing-style get_sqe/prep/submit/peek/wait/for_each interface, pools
 * created and mapped in one call, and the registration cache (hits without
 * a system call, stale entries dropped or revalidated, the invalidation
 * callback, the event thread, LRU, overflow and resync, threads).
 */
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include <libmemreg.h>

#include "memreg_util.h"

#include "../kselftest_harness.h"

FIXTURE(lib)
{
	int fd;
};

FIXTURE_SETUP(lib)
{
	self->fd = memreg_open();
	ASSERT_LE(0, self->fd) TH_LOG("memreg_open: %s", strerror(-self->fd));
}

FIXTURE_TEARDOWN(lib)
{
	if (self->fd >= 0)
		close(self->fd);
}

TEST_F(lib, open_and_version)
{
	__u32 v = 0;

	ASSERT_EQ(0, memreg_get_version(self->fd, &v));
	EXPECT_EQ(MEMREG_ABI_VERSION, v);
	EXPECT_EQ(-EBADF, memreg_get_version(-1, &v));
}

TEST_F(lib, state_words_follow_the_registration)
{
	struct memreg_state_words sw;
	struct memreg_register r;
	char *buf = map_buf(4 * PAGE, 'a');

	ASSERT_NE(NULL, buf);
	EXPECT_EQ(-EINVAL, memreg_state_words_map(self->fd, 0, &sw));
	EXPECT_EQ(NULL, sw.words);
	EXPECT_EQ(-EINVAL, memreg_state_words_map(self->fd, MEMREG_MAX_SLOTS + 1, &sw));
	/* Before the words exist: no slot, never valid by its word. */
	ASSERT_EQ(0, memreg_register(self->fd, buf, PAGE, RW, &r));
	EXPECT_EQ(MEMREG_NO_SLOT, r.slot);
	ASSERT_EQ(0, memreg_deregister(self->fd, r.lkey));

	ASSERT_EQ(0, memreg_state_words_map(self->fd, 512, &sw));
	ASSERT_NE(NULL, sw.words);
	EXPECT_EQ(512, sw.slots);
	EXPECT_FALSE(memreg_word_valid(&sw, 0, 0));
	ASSERT_EQ(0, memreg_register(self->fd, buf + PAGE, 2 * PAGE, RW, &r));
	ASSERT_LT(r.slot, 512);
	EXPECT_NE(0, r.generation);
	EXPECT_EQ(0, r.generation % 4);
	EXPECT_TRUE(memreg_word_valid(&sw, r.slot, r.generation));
	EXPECT_FALSE(memreg_word_valid(&sw, r.slot, r.generation + 4));
	EXPECT_FALSE(memreg_word_valid(&sw, 512, r.generation));
	/* munmap returns only once the word says ended. */
	ASSERT_EQ(0, munmap(buf, 4 * PAGE));
	EXPECT_FALSE(memreg_word_valid(&sw, r.slot, r.generation));
	EXPECT_EQ(r.generation | MEMREG_WORD_ENDED, sw.words[r.slot]);
	memreg_state_words_unmap(&sw);
	EXPECT_EQ(NULL, sw.words);
	EXPECT_FALSE(memreg_word_valid(&sw, r.slot, r.generation));
}

/* Registers `n` buffers of one page each and unmaps them: n ENDED events. */
static void end_n(struct __test_metadata *_metadata, int fd, int n, __u64 *keys)
{
	struct memreg_register r;
	int i;

	for (i = 0; i < n; i++) {
		char *b = map_buf(PAGE, 'e');

		ASSERT_NE(NULL, b);
		ASSERT_EQ(0, memreg_register(fd, b, PAGE, RW, &r));
		keys[i] = r.lkey;
		ASSERT_EQ(0, munmap(b, PAGE));
	}
}

TEST_F(lib, events_read_advance_and_for_each)
{
	struct memreg_events ev, again;
	const struct memreg_event *e;
	struct memreg_event out[8];
	__u64 keys[3];
	__u32 head;
	int seen = 0;

	ASSERT_EQ(-EINVAL, memreg_events_init(self->fd, 3, -1, &ev));
	ASSERT_EQ(0, memreg_events_init(self->fd, 8, -1, &ev));
	EXPECT_EQ(-EBUSY, memreg_events_init(self->fd, 8, -1, &again));
	EXPECT_EQ(0, memreg_events_ready(&ev));
	EXPECT_FALSE(memreg_events_overflowed(&ev));
	end_n(_metadata, self->fd, 3, keys);
	ASSERT_EQ(3, memreg_events_ready(&ev));
	memreg_for_each_event(&ev, head, e) {
		EXPECT_EQ(keys[seen], e->key);
		EXPECT_EQ(MEMREG_EVENT_ENDED, e->kind);
		EXPECT_EQ(MEMREG_INVAL_UNMAP, e->cause);
		EXPECT_EQ(PAGE, e->length);
		seen++;
	}
	EXPECT_EQ(3, seen);
	/* Walking consumed nothing. */
	EXPECT_EQ(3, memreg_events_ready(&ev));
	memreg_events_advance(&ev, 1);
	EXPECT_EQ(2, memreg_events_ready(&ev));
	ASSERT_EQ(2, memreg_events_read(&ev, out, 8));
	EXPECT_EQ(keys[1], out[0].key);
	EXPECT_EQ(keys[2], out[1].key);
	EXPECT_EQ(0, memreg_events_ready(&ev));
	EXPECT_EQ(0, memreg_events_read(&ev, out, 8));
	/* Advancing past the tail stops at the tail. */
	memreg_events_advance(&ev, 5);
	EXPECT_EQ(0, memreg_events_ready(&ev));
	memreg_events_exit(&ev);
	EXPECT_EQ(-1, ev.fd);
}

TEST_F(lib, events_overflow_then_resync)
{
	struct memreg_resync_entry list[4];
	struct memreg_events ev;
	struct memreg_register keep;
	char *b = map_buf(PAGE, 'k');
	__u64 keys[4];
	__u32 count = 99;

	ASSERT_NE(NULL, b);
	ASSERT_EQ(0, memreg_events_init(self->fd, 2, -1, &ev));
	ASSERT_EQ(0, memreg_register(self->fd, b, PAGE, RW, &keep));
	end_n(_metadata, self->fd, 4, keys);
	EXPECT_TRUE(memreg_events_overflowed(&ev));
	EXPECT_EQ(2, memreg_events_ready(&ev));
	ASSERT_EQ(0, memreg_events_resync(self->fd, list, 4, &count));
	EXPECT_EQ(1, count);
	EXPECT_EQ(keep.lkey, list[0].key);
	EXPECT_EQ((__u64)(unsigned long)b, list[0].addr);
	EXPECT_FALSE(memreg_events_overflowed(&ev));
	EXPECT_EQ(0, memreg_events_ready(&ev));
	memreg_events_exit(&ev);
	munmap(b, PAGE);
}

FIXTURE(ring)
{
	int fd;
	struct memreg_queue q;
	char *src, *dst;
	struct memreg_register rs, rd;
};

FIXTURE_SETUP(ring)
{
	self->fd = memreg_open();
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, memreg_queue_init(self->fd, 8, 16, -1, &self->q));
	self->src = map_buf(4 * PAGE, 's');
	self->dst = map_buf(4 * PAGE, 'd');
	ASSERT_NE(NULL, self->src);
	ASSERT_NE(NULL, self->dst);
	ASSERT_EQ(0, memreg_register(self->fd, self->src, 4 * PAGE, RW, &self->rs));
	ASSERT_EQ(0, memreg_register(self->fd, self->dst, 4 * PAGE, RW, &self->rd));
}

FIXTURE_TEARDOWN(ring)
{
	memreg_queue_exit(&self->q);
	close(self->fd);
	munmap(self->src, 4 * PAGE);
	munmap(self->dst, 4 * PAGE);
}

TEST_F(ring, sizes_match_what_the_kernel_reports)
{
	struct memreg_master m;

	EXPECT_EQ(memreg_sq_bytes(8), self->q.sq_bytes);
	EXPECT_EQ(memreg_cq_bytes(16), self->q.cq_bytes);
	EXPECT_EQ(8, self->q.sq_entries);
	EXPECT_EQ(16, self->q.cq_entries);
	EXPECT_EQ(-1, self->q.eventfd);
	ASSERT_EQ(0, memreg_master_init(self->fd, &m));
	EXPECT_GE(memreg_master_bytes(), MEMREG_MASTER_ENTRIES * sizeof(__u32));
	memreg_master_exit(&m);
	EXPECT_EQ(NULL, m.ring);
}

TEST_F(ring, get_sqe_prep_submit_wait_seen)
{
	const struct memreg_cqe *cqe;
	struct memreg_sqe *sqe;

	sqe = memreg_get_sqe(&self->q);
	ASSERT_NE(NULL, sqe);
	/* The universal prep clears what a previous lap left. */
	memset(sqe, 0xff, sizeof(*sqe));
	memreg_prep_copy(sqe, self->rd.lkey, 100, self->rs.lkey, PAGE, 3000);
	memreg_sqe_set_data64(sqe, 0xfeed);
	EXPECT_EQ(0, sqe->flags);
	EXPECT_EQ(0, sqe->reserved0);
	EXPECT_EQ(0, sqe->peer);
	ASSERT_EQ(0, memreg_submit(&self->q, sqe));
	ASSERT_EQ(0, memreg_wait_cqe(&self->q, &cqe, 5000));
	EXPECT_EQ(0xfeed, cqe->user_data);
	EXPECT_EQ(0, cqe->status);
	EXPECT_EQ(3000, cqe->bytes);
	EXPECT_EQ(1, memreg_cq_ready(&self->q));
	memreg_cqe_seen(&self->q, cqe);
	EXPECT_EQ(0, memreg_cq_ready(&self->q));
	EXPECT_EQ(-EAGAIN, memreg_peek_cqe(&self->q, &cqe));
	EXPECT_TRUE(all_bytes(self->dst, 100, 'd'));
	EXPECT_TRUE(all_bytes(self->dst + 100, 3000, 's'));
	EXPECT_TRUE(all_bytes(self->dst + 3100, 4 * PAGE - 3100, 'd'));
}

TEST_F(ring, submit_batch_and_for_each_cqe)
{
	struct memreg_sqe *sqes[8], local;
	const struct memreg_cqe *cqe;
	__u64 deadline;
	__u32 head;
	int i, seen = 0;

	for (i = 0; i < 8; i++) {
		sqes[i] = memreg_get_sqe(&self->q);
		ASSERT_NE(NULL, sqes[i]);
		memreg_prep_nop(sqes[i]);
		memreg_sqe_set_data64(sqes[i], 100 + i);
	}
	/* All eight slots are claimed: the ring is full. */
	EXPECT_EQ(NULL, memreg_get_sqe(&self->q));
	/* Only claimed slots of this queue are published. */
	memreg_prep_nop(&local);
	EXPECT_EQ(-EINVAL, memreg_submit(&self->q, &local));
	EXPECT_EQ(-EINVAL, memreg_submit(&self->q, (struct memreg_sqe *)((char *)sqes[0] + 8)));
	ASSERT_EQ(0, memreg_submit_batch(&self->q, sqes, 8));
	deadline = mrq_now_us() + 5000000;
	while (memreg_cq_ready(&self->q) < 8 && mrq_now_us() < deadline)
		usleep(100);
	ASSERT_EQ(8, memreg_cq_ready(&self->q));
	memreg_for_each_cqe(&self->q, head, cqe) {
		EXPECT_EQ(100 + seen, cqe->user_data);
		EXPECT_EQ(0, cqe->status);
		seen++;
	}
	EXPECT_EQ(8, seen);
	EXPECT_EQ(8, memreg_cq_ready(&self->q));
	memreg_cq_advance(&self->q, seen);
	EXPECT_EQ(0, memreg_cq_ready(&self->q));
	/* Advancing past the tail stops at the tail. */
	memreg_cq_advance(&self->q, 3);
	EXPECT_EQ(0, memreg_cq_ready(&self->q));
	EXPECT_EQ(memreg_queue_cq_tail(&self->q), memreg_queue_cq_head(&self->q));
	/* The slots came back: the ring takes more. */
	EXPECT_NE(NULL, memreg_get_sqe(&self->q));
}

TEST_F(ring, wait_cqe_arms_and_times_out)
{
	const struct memreg_cqe *cqe = NULL;
	__u64 t0 = mrq_now_us();

	EXPECT_EQ(-ETIMEDOUT, memreg_wait_cqe(&self->q, &cqe, 50));
	EXPECT_GE(mrq_now_us() - t0, 40000);
	/* It armed the queue before it slept. */
	EXPECT_EQ(1, mrq_armed(&self->q));
}

struct late_post {
	struct memreg_queue *q;
	int delay_ms;
};

static void *post_late(void *arg)
{
	struct late_post *lp = arg;
	struct memreg_sqe s;

	usleep(lp->delay_ms * 1000);
	memreg_prep_nop(&s);
	memreg_sqe_set_data64(&s, 77);
	return (void *)(long)memreg_queue_post_wait(lp->q, &s, 1000);
}

/* A sleeping waiter is woken by the completion, through the eventfd or the file. */
TEST_F(ring, wait_cqe_sleeps_until_the_completion)
{
	struct memreg_queue qe;
	const struct memreg_cqe *cqe;
	struct late_post lp = { .delay_ms = 100 };
	pthread_t t;
	void *ret;
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), round;

	ASSERT_LE(0, efd);
	ASSERT_EQ(0, memreg_queue_init(self->fd, 8, 8, efd, &qe));
	EXPECT_EQ(efd, qe.eventfd);
	for (round = 0; round < 2; round++) {
		struct memreg_queue *q = round ? &qe : &self->q;

		lp.q = q;
		ASSERT_EQ(0, pthread_create(&t, NULL, post_late, &lp));
		ASSERT_EQ(0, memreg_wait_cqe(q, &cqe, -1));
		EXPECT_EQ(77, cqe->user_data);
		memreg_cqe_seen(q, cqe);
		ASSERT_EQ(0, pthread_join(t, &ret));
		EXPECT_EQ(0, (long)ret);
	}
	memreg_queue_exit(&qe);
	close(efd);
}

TEST_F(ring, preps_fill_the_documented_fields)
{
	struct memreg_sqe s;

	/* The universal prep: every field as given, the rest zero. */
	memset(&s, 0xff, sizeof(s));
	memreg_prep_rw(&s, MEMREG_OP_COPY, 7, 1, 2, 3, 4, 5);
	EXPECT_EQ(MEMREG_OP_COPY, s.opcode);
	EXPECT_EQ(0, s.flags);
	EXPECT_EQ(0, s.reserved0);
	EXPECT_EQ(7, s.peer);
	EXPECT_EQ(0, s.user_data);
	EXPECT_EQ(1, s.key);
	EXPECT_EQ(2, s.offset);
	EXPECT_EQ(3, s.src_key);
	EXPECT_EQ(4, s.src_offset);
	EXPECT_EQ(5, s.length);
	memreg_prep_write(&s, 3, 0x11, 0x22, 0x33, 0x44, 0x55);
	EXPECT_EQ(MEMREG_OP_WRITE, s.opcode);
	EXPECT_EQ(3, s.peer);
	EXPECT_EQ(0x11, s.key);
	EXPECT_EQ(0x22, s.offset);
	EXPECT_EQ(0x33, s.src_key);
	EXPECT_EQ(0x44, s.src_offset);
	EXPECT_EQ(0x55, s.length);
	memreg_prep_read(&s, 4, 0x11, 0x22, 0x33, 0x44, 0x55);
	EXPECT_EQ(MEMREG_OP_READ, s.opcode);
	EXPECT_EQ(4, s.peer);
	EXPECT_EQ(0x11, s.key);
	EXPECT_EQ(0x33, s.src_key);
	memreg_prep_send_imm(&s, 0x11, 0x22, 0x33, 0x99);
	EXPECT_EQ(MEMREG_OP_SEND, s.opcode);
	EXPECT_EQ(MEMREG_SQE_IMM, s.flags);
	EXPECT_EQ(0x99, s.key);
	EXPECT_EQ(0x11, s.src_key);
	EXPECT_EQ(0x22, s.src_offset);
	EXPECT_EQ(0x33, s.length);
	memreg_prep_send(&s, 0x11, 0x22, 0x33);
	EXPECT_EQ(0, s.flags);
	EXPECT_EQ(0, s.key);
	memreg_prep_recv(&s, 0x11, 0x22, 0x33);
	EXPECT_EQ(MEMREG_OP_RECV, s.opcode);
	EXPECT_EQ(0x11, s.key);
	EXPECT_EQ(0x22, s.offset);
	EXPECT_EQ(0x33, s.length);
	memreg_prep_pool_alloc(&s, 2, 4096);
	EXPECT_EQ(MEMREG_OP_POOL_ALLOC, s.opcode);
	EXPECT_EQ(2, s.peer);
	EXPECT_EQ(4096, s.length);
	memreg_prep_pool_free(&s, 2, 0x7000);
	EXPECT_EQ(MEMREG_OP_POOL_FREE, s.opcode);
	EXPECT_EQ(0x7000, s.offset);
	memreg_prep_deregister(&s, 0x42);
	EXPECT_EQ(MEMREG_OP_DEREGISTER, s.opcode);
	EXPECT_EQ(0x42, s.key);
	memreg_prep_fence(&s);
	EXPECT_EQ(MEMREG_OP_FENCE, s.opcode);
	EXPECT_EQ(0, s.key);
	memreg_prep_nop(&s);
	EXPECT_EQ(MEMREG_OP_NOP, s.opcode);
	EXPECT_EQ(0, s.user_data);
}

/* Each prep runs in the kernel as the header documents. */
TEST_F(ring, preps_run)
{
	struct memreg_sqe s;
	struct memreg_cqe c;
	struct memreg_register extra;

	memreg_prep_fence(&s);
	ASSERT_EQ(0, memreg_queue_run(&self->q, &s, &c));
	EXPECT_EQ(0, c.status);
	ASSERT_EQ(0, memreg_register(self->fd, self->src, PAGE, RW, &extra));
	EXPECT_EQ(self->rs.lkey, extra.lkey);
	memreg_prep_deregister(&s, extra.lkey);
	ASSERT_EQ(0, memreg_queue_run(&self->q, &s, &c));
	EXPECT_EQ(0, c.status);
	/* Still one reference: the key works. */
	memreg_prep_copy(&s, self->rd.lkey, 0, self->rs.lkey, 0, 16);
	ASSERT_EQ(0, memreg_queue_run(&self->q, &s, &c));
	EXPECT_EQ(0, c.status);
	EXPECT_EQ(16, c.bytes);
}

TEST_F(lib, pool_init_alloc_free_stats)
{
	struct memreg_pool_class cls = {
		.buffer_size = 4096, .max_buffers = 64, .initial = 16,
	};
	struct memreg_pool_params params = {
		.access = RW, .leak_timeout_ms = 1000,
	};
	struct memreg_pool_buf b, batch[8];
	struct memreg_pool_stats st[2];
	struct memreg_pool pool;
	void *addrs[8];
	char back[64];
	int i, n;

	EXPECT_EQ(-EINVAL, memreg_pool_init(self->fd, &cls, 0, &params, &pool));
	params.access = RO;
	EXPECT_EQ(-EINVAL, memreg_pool_init(self->fd, &cls, 1, &params, &pool));
	params.access = RW;
	ASSERT_EQ(0, memreg_pool_init(self->fd, &cls, 1, &params, &pool));
	EXPECT_EQ(1, pool.nr_classes);
	EXPECT_EQ(16, pool.classes[0].chunk_buffers);
	EXPECT_NE(NULL, pool.map);

	/* The first chunks are mapped by the pool's work: wait for them. */
	ASSERT_EQ(0, memreg_pool_alloc(&pool, 100, 0, 1000, &b));
	EXPECT_EQ(4096, b.size);
	EXPECT_GE(b.addr, (__u64)(unsigned long)pool.map);
	EXPECT_LT(b.addr, (__u64)(unsigned long)pool.map + pool.map_bytes);
	/* Its key and offset name the buffer. */
	memset((void *)(unsigned long)b.addr, 'P', 64);
	ASSERT_EQ(0, memreg_copy(self->fd, b.key, b.offset, back, 64, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(back, 64, 'P'));

	n = memreg_pool_alloc_batch(&pool, 4096, MEMREG_POOL_NO_FALLBACK, 100, batch, 8);
	ASSERT_GE(n, 1);
	ASSERT_LE(n, 8);
	ASSERT_EQ(1, memreg_pool_stats(&pool, st, 2));
	EXPECT_EQ(1 + n, st[0].allocated);
	for (i = 0; i < n; i++)
		addrs[i] = (void *)(unsigned long)batch[i].addr;
	/* All or nothing: a duplicate frees none. */
	if (n >= 2) {
		void *dup[2] = { addrs[0], addrs[0] };

		EXPECT_EQ(-EINVAL, memreg_pool_free_batch(&pool, dup, 2));
	}
	EXPECT_EQ(-EINVAL, memreg_pool_free_batch(&pool, addrs, 0));
	EXPECT_EQ(-EINVAL, memreg_pool_free_batch(&pool, addrs, MEMREG_POOL_MAX_BATCH + 1));
	ASSERT_EQ(0, memreg_pool_free_batch(&pool, addrs, n));
	ASSERT_EQ(0, memreg_pool_free(&pool, (void *)(unsigned long)b.addr));
	EXPECT_EQ(-EINVAL, memreg_pool_free(&pool, (void *)(unsigned long)b.addr));
	ASSERT_EQ(1, memreg_pool_stats(&pool, st, 1));
	EXPECT_EQ(0, st[0].allocated);
	memreg_pool_exit(&pool);
	EXPECT_EQ(NULL, pool.map);
}

TEST_F(lib, pool_through_the_ring)
{
	struct memreg_pool_class cls = { .buffer_size = 1024, .max_buffers = 64, .initial = 64 };
	struct memreg_pool_params params = { .access = RW, .leak_timeout_ms = 1000 };
	struct memreg_pool pool;
	struct memreg_queue q;
	struct memreg_sqe s;
	struct memreg_cqe c;
	struct memreg_pool_stats st;

	ASSERT_EQ(0, memreg_pool_init(self->fd, &cls, 1, &params, &pool));
	ASSERT_EQ(0, memreg_queue_init(self->fd, 8, 8, -1, &q));
	memreg_prep_pool_alloc(&s, pool.id, 1000);
	ASSERT_EQ(0, memreg_queue_run(&q, &s, &c));
	ASSERT_EQ(0, c.status);
	EXPECT_EQ(MEMREG_CQE_POOL, c.flags);
	EXPECT_GE(c.bytes, (__u64)(unsigned long)pool.map);
	EXPECT_NE(0, c.imm_data);
	ASSERT_EQ(1, memreg_pool_stats(&pool, &st, 1));
	EXPECT_EQ(1, st.allocated);
	memreg_prep_pool_free(&s, pool.id, c.bytes);
	ASSERT_EQ(0, memreg_queue_run(&q, &s, &c));
	EXPECT_EQ(0, c.status);
	ASSERT_EQ(1, memreg_pool_stats(&pool, &st, 1));
	EXPECT_EQ(0, st.allocated);
	memreg_queue_exit(&q);
	memreg_pool_exit(&pool);
}

/* ---- The registration cache ---- */

struct inval_log {
	int calls;
	int causes[8];
	__u64 lkeys[8];
	bool had_event[8];
};

static void log_inval(struct memreg_mr *mr, int cause, const struct memreg_event *event,
		      void *arg)
{
	struct inval_log *l = arg;
	int i = __atomic_fetch_add(&l->calls, 1, __ATOMIC_SEQ_CST);

	if (i < 8) {
		l->causes[i] = cause;
		l->lkeys[i] = memreg_mr_lkey(mr);
		l->had_event[i] = event != NULL;
	}
}

FIXTURE(cache)
{
	int fd;
	struct memreg_cache *c;
	struct inval_log log;
	char *buf;
};

FIXTURE_SETUP(cache)
{
	memset(&self->log, 0, sizeof(self->log));
	self->fd = memreg_open();
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, memreg_cache_create(self->fd, NULL, &self->c));
	memreg_cache_set_invalidate_cb(self->c, log_inval, &self->log);
	self->buf = map_buf(8 * PAGE, 'a');
	ASSERT_NE(NULL, self->buf);
}

FIXTURE_TEARDOWN(cache)
{
	memreg_cache_destroy(self->c);
	close(self->fd);
	munmap(self->buf, 8 * PAGE);
}

TEST_F(cache, hit_takes_no_system_call)
{
	struct memreg_cache_stats cs;
	struct memreg_stats before, after;
	struct memreg_mr *mr, *mr2, *sub;

	ASSERT_EQ(0, memreg_mr_get(self->c, self->buf, 4 * PAGE, RW, &mr));
	ASSERT_NE(NULL, mr);
	EXPECT_TRUE(memreg_mr_valid(mr));
	EXPECT_NE(0, memreg_mr_lkey(mr));
	EXPECT_NE(memreg_mr_lkey(mr), memreg_mr_rkey(mr));
	EXPECT_EQ(self->buf, memreg_mr_addr(mr));
	EXPECT_EQ(4 * PAGE, memreg_mr_length(mr));
	memreg_mr_put(self->c, mr);

	ASSERT_EQ(0, memreg_stats(self->fd, &before));
	ASSERT_EQ(0, memreg_mr_get(self->c, self->buf, 4 * PAGE, RW, &mr2));
	EXPECT_EQ(mr, mr2);
	/* A part of it, with fewer rights: the same entry. */
	ASSERT_EQ(0, memreg_mr_get(self->c, self->buf + PAGE, 100, RO, &sub));
	EXPECT_EQ(mr, sub);
	ASSERT_EQ(0, memreg_stats(self->fd, &after));
	/* The kernel saw neither get. */
	EXPECT_EQ(before.registrations, after.registrations);
	EXPECT_EQ(before.cache_hits, after.cache_hits);
	EXPECT_EQ(before.cache_misses, after.cache_misses);
	memreg_cache_get_stats(self->c, &cs);
	EXPECT_EQ(2, cs.hits);
	EXPECT_EQ(1, cs.misses);
	EXPECT_EQ(1, cs.entries);
	memreg_mr_put(self->c, sub);
	memreg_mr_put(self->c, mr2);
	EXPECT_EQ(0, self->log.calls);
}

TEST_F(cache, bad_requests_change_nothing)
{
	struct memreg_cache_stats cs;
	struct memreg_mr *mr = (void *)1;
	char *hole = map_buf(PAGE, 'h');

	ASSERT_NE(NULL, hole);
	ASSERT_EQ(0, munmap(hole, PAGE));
	EXPECT_EQ(-EINVAL, memreg_mr_get(self->c, self->buf, 0, RW, &mr));
	EXPECT_EQ(NULL, mr);
	EXPECT_EQ(-EINVAL, memreg_mr_get(self->c, (void *)-4096L, 8192, RW, &mr));
	EXPECT_EQ(-EFAULT, memreg_mr_get(self->c, hole, PAGE, RW, &mr));
	EXPECT_EQ(-EINVAL, memreg_mr_get(self->c, self->buf, PAGE, 0, &mr));
	memreg_cache_get_stats(self->c, &cs);
	EXPECT_EQ(0, cs.entries);
	EXPECT_EQ(0, cs.hits);
}

/* A remote right asks for the exact range: a larger entry does not serve it. */
TEST_F(cache, remote_rights_need_the_exact_range)
{
	__u32 rw = RW | MEMREG_ACCESS_REMOTE_WRITE;
	struct memreg_mr *big, *small, *again;

	ASSERT_EQ(0, memreg_mr_get(self->c, self->buf, 4 * PAGE, rw, &big));
	EXPECT_NE(0, memreg_mr_rkey(big));
	ASSERT_EQ(0, memreg_mr_get(self->c, self->buf, PAGE, rw, &small));
	EXPECT_NE(big, small);
	EXPECT_EQ(PAGE, memreg_mr_length(small));
	/* Without the remote right, a local-only request is not served by them. */
	ASSERT_EQ(0, memreg_mr_get(self->c, self->buf, PAGE, RW, &again));
	EXPECT_NE(big, again);
	EXPECT_NE(small, again);
	memreg_mr_put(self->c, again);
	memreg_mr_put(self->c, small);
	memreg_mr_put(self->c, big);
}

/* munmap, then new memory at the same address: the old entry never comes back. */
TEST_F(cache, stale_entry_is_dropped_after_remap)
{
	struct memreg_cache_stats cs;
	struct memreg_mr *mr, *mr2;
	__u64 old;
	char back[32];

	ASSERT_EQ(0, memreg_mr_get(self->c, self->buf, 2 * PAGE, RW, &mr));
	old = memreg_mr_lkey(mr);
	ASSERT_EQ(0, munmap(self->buf, 8 * PAGE));
	/* Its word said so before munmap returned. */
	EXPECT_FALSE(memreg_mr_valid(mr));
	ASSERT_EQ(self->buf, map_fixed(self->buf, 8 * PAGE, 'n'));
	ASSERT_EQ(0, memreg_mr_get(self->c, self->buf, 2 * PAGE, RW, &mr2));
	EXPECT_NE(mr, mr2);
	EXPECT_NE(old, memreg_mr_lkey(mr2));
	EXPECT_TRUE(memreg_mr_valid(mr2));
	ASSERT_EQ(0, memreg_copy(self->fd, memreg_mr_lkey(mr2), 0, back, sizeof(back),
				 MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(back, sizeof(back), 'n'));
	/* The old key reaches nothing. */
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, old, 0, back, sizeof(back),
				       MEMREG_COPY_FROM_REGION));
	ASSERT_EQ(1, self->log.calls);
	EXPECT_EQ(MEMREG_CACHE_ENDED, self->log.causes[0]);
	EXPECT_EQ(old, self->log.lkeys[0]);
	/* The old entry is still the caller's until it is put. */
	EXPECT_EQ(old, memreg_mr_lkey(mr));
	memreg_mr_put(self->c, mr);
	memreg_mr_put(self->c, mr2);
	memreg_cache_get_stats(self->c, &cs);
	EXPECT_EQ(1, cs.invalidations);
	EXPECT_EQ(1, cs.entries);
	EXPECT_EQ(2, cs.misses);
}

/*
 * A thread remembers its hits; an entry that ended, was freed and now holds
 * another registration must not answer for the old range.
 */
TEST_F(cache, reused_entry_never_answers_for_its_old_range)
{
	struct memreg_mr *a, *b, *a2;
	char *ra = map_buf(PAGE, 'A'), *rb = map_buf(2 * PAGE, 'B');
	__u64 old_a, key_b;
	char back[16];

	ASSERT_NE(NULL, ra);
	ASSERT_NE(NULL, rb);
	ASSERT_EQ(0, memreg_mr_get(self->c, ra, PAGE, RW, &a));
	old_a = memreg_mr_lkey(a);
	memreg_mr_put(self->c, a);
	ASSERT_EQ(0, munmap(ra, PAGE));
	/* The event ends the entry; it goes back to the cache's free list. */
	ASSERT_EQ(1, memreg_cache_process_events(self->c));
	/* The next entry reuses its memory for another registration. */
	ASSERT_EQ(0, memreg_mr_get(self->c, rb, 2 * PAGE, RW, &b));
	key_b = memreg_mr_lkey(b);
	EXPECT_EQ(a, b);
	ASSERT_EQ(ra, map_fixed(ra, PAGE, 'a'));
	ASSERT_EQ(0, memreg_mr_get(self->c, ra, PAGE, RW, &a2));
	EXPECT_NE(b, a2);
	EXPECT_EQ(ra, memreg_mr_addr(a2));
	EXPECT_EQ(PAGE, memreg_mr_length(a2));
	EXPECT_NE(key_b, memreg_mr_lkey(a2));
	EXPECT_NE(old_a, memreg_mr_lkey(a2));
	ASSERT_EQ(0, memreg_copy(self->fd, memreg_mr_lkey(a2), 0, back, sizeof(back),
				 MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(back, sizeof(back), 'a'));
	memreg_mr_put(self->c, a2);
	memreg_mr_put(self->c, b);
	munmap(ra, PAGE);
	munmap(rb, 2 * PAGE);
}

/*
 * In a child after fork() the state words are not mapped: a hit its thread
 * remembered must not be followed into them; the get goes to the kernel,
 * which refuses a child (EPERM).
 */
TEST_F(cache, forked_child_does_not_follow_remembered_hits)
{
	struct memreg_mr *mr;
	pid_t pid;

	ASSERT_EQ(0, memreg_mr_get(self->c, self->buf, PAGE, RW, &mr));
	memreg_mr_put(self->c, mr);
	ASSERT_EQ(0, memreg_mr_get(self->c, self->buf, PAGE, RW, &mr));
	memreg_mr_put(self->c, mr);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct memreg_mr *cm = (void *)1;
		int ret = memreg_mr_get(self->c, self->buf, PAGE, RW, &cm);
		bool ok = ret == -EPERM && !cm;

		/* Not a hit: another request, and the events, refused too. */
		ok = ok && memreg_mr_get(self->c, self->buf, 2 * PAGE, RW, &cm) == -EPERM;
		ok = ok && memreg_cache_process_events(self->c) == -EPERM;
		/* Destroying it in the child frees memory only. */
		memreg_cache_destroy(self->c);
		_exit(ok ? 0 : 1);
	}
	EXPECT_EQ(0, wait_exit(pid));
	/* The parent's hits go on. */
	ASSERT_EQ(0, memreg_mr_get(self->c, self->buf, PAGE, RW, &mr));
	EXPECT_TRUE(memreg_mr_valid(mr));
	memreg_mr_put(self->c, mr);
}

/* The event ring, read by a get, drops entries nobody is using. */
TEST_F(cache, events_drop_unused_entries)
{
	struct memreg_cache_stats cs;
	struct memreg_mr *mr;
	char *other = map_buf(PAGE, 'o');
	int n;

	ASSERT_NE(NULL, other);
	ASSERT_EQ(0, memreg_mr_get(self->c, other, PAGE, RW, &mr));
	memreg_mr_put(self->c, mr);
	ASSERT_EQ(0, munmap(other, PAGE));
	n = memreg_cache_process_events(self->c);
	EXPECT_EQ(1, n);
	ASSERT_EQ(1, self->log.calls);
	EXPECT_EQ(MEMREG_CACHE_ENDED, self->log.causes[0]);
	EXPECT_TRUE(self->log.had_event[0]);
	memreg_cache_get_stats(self->c, &cs);
	EXPECT_EQ(0, cs.entries);
	EXPECT_EQ(1, cs.events);
	EXPECT_EQ(0, memreg_cache_process_events(self->c));
}

/* A "clear" next to an entry suspends it; the next get gets it back with the same key. */
TEST_F(cache, suspended_entry_is_revalidated)
{
	struct memreg_cache_stats cs;
	struct memreg_mr *mr, *mr2;
	size_t huge = thp_size();
	char *raw, *block;
	__u64 key;

	raw = mmap(NULL, 3 * huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, raw);
	block = (char *)(((unsigned long)raw + PAGE + huge - 1) & ~(huge - 1));
	madvise(raw, 3 * huge, MADV_NOHUGEPAGE);
	memset(block, 'b', huge);
	ASSERT_EQ(0, memreg_mr_get(self->c, block + 16 * PAGE, 16 * PAGE, RW, &mr));
	key = memreg_mr_lkey(mr);
	memreg_mr_put(self->c, mr);
	/* A split one page after it: a CLEAR over the whole block. */
	ASSERT_EQ(0, mprotect(block + 32 * PAGE, PAGE, PROT_READ));
	ASSERT_EQ(0, memreg_mr_get(self->c, block + 16 * PAGE, 16 * PAGE, RW, &mr2));
	EXPECT_EQ(mr, mr2);
	EXPECT_EQ(key, memreg_mr_lkey(mr2));
	EXPECT_TRUE(memreg_mr_valid(mr2));
	EXPECT_EQ(0, self->log.calls);
	memreg_cache_get_stats(self->c, &cs);
	EXPECT_EQ(1, cs.misses);
	/* Resumed by the worker already (a plain hit), or revalidated, then a hit. */
	EXPECT_EQ(1, cs.hits);
	EXPECT_LE(cs.revalidations, 1);
	TH_LOG("hits %llu, revalidations %llu", (unsigned long long)cs.hits,
	       (unsigned long long)cs.revalidations);
	memreg_mr_put(self->c, mr2);
	munmap(raw, 3 * huge);
}

TEST_F(cache, clock_keeps_max_entries)
{
	struct memreg_cache_attr attr = { .max_entries = 2 };
	struct memreg_cache_stats cs;
	struct memreg_cache *c;
	struct memreg_mr *mr;
	struct memreg_stats st;
	int fd = memreg_open(), i;

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, memreg_cache_create(fd, &attr, &c));
	memreg_cache_set_invalidate_cb(c, log_inval, &self->log);
	for (i = 0; i < 4; i++) {
		ASSERT_EQ(0, memreg_mr_get(c, self->buf + i * PAGE, PAGE, RW, &mr));
		memreg_mr_put(c, mr);
	}
	memreg_cache_get_stats(c, &cs);
	EXPECT_EQ(2, cs.entries);
	EXPECT_EQ(2, cs.lru_evictions);
	ASSERT_EQ(2, self->log.calls);
	EXPECT_EQ(MEMREG_CACHE_LRU, self->log.causes[0]);
	EXPECT_EQ(MEMREG_CACHE_LRU, self->log.causes[1]);
	/* The least recently used went first, and went to the kernel as DEREGISTER. */
	ASSERT_EQ(0, memreg_stats(fd, &st));
	EXPECT_EQ(2, st.parks + st.deregistrations);
	memreg_cache_destroy(c);
	ASSERT_EQ(0, memreg_stats(fd, &st));
	EXPECT_EQ(4, st.parks + st.deregistrations);
	close(fd);
}

TEST_F(cache, overflow_resyncs)
{
	struct memreg_cache_attr attr = { .event_entries = 2 };
	struct memreg_cache_stats cs;
	struct memreg_cache *c;
	struct memreg_mr *mr, *keep = NULL;
	char *bufs[5];
	int fd = memreg_open(), i;

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, memreg_cache_create(fd, &attr, &c));
	for (i = 0; i < 5; i++) {
		bufs[i] = map_buf(PAGE, 'x');
		ASSERT_NE(NULL, bufs[i]);
		ASSERT_EQ(0, memreg_mr_get(c, bufs[i], PAGE, RW, &mr));
		if (i == 4)
			keep = mr;
		else
			memreg_mr_put(c, mr);
	}
	for (i = 0; i < 4; i++)
		ASSERT_EQ(0, munmap(bufs[i], PAGE));
	ASSERT_LE(0, memreg_cache_process_events(c));
	memreg_cache_get_stats(c, &cs);
	EXPECT_EQ(1, cs.resyncs);
	EXPECT_EQ(1, cs.entries);
	EXPECT_EQ(4, cs.invalidations);
	EXPECT_TRUE(memreg_mr_valid(keep));
	memreg_mr_put(c, keep);
	ASSERT_EQ(0, memreg_mr_get(c, bufs[4], PAGE, RW, &mr));
	EXPECT_EQ(keep, mr);
	memreg_mr_put(c, mr);
	memreg_cache_destroy(c);
	munmap(bufs[4], PAGE);
	close(fd);
}

TEST_F(cache, event_thread_drops_entries_by_itself)
{
	struct memreg_cache_attr attr = { .flags = MEMREG_CACHE_EVENT_THREAD };
	struct memreg_cache_stats cs;
	struct memreg_cache *c;
	struct memreg_mr *mr;
	struct inval_log log = { 0 };
	char *b = map_buf(PAGE, 't');
	__u64 deadline;
	int fd = memreg_open();

	ASSERT_LE(0, fd);
	ASSERT_NE(NULL, b);
	EXPECT_EQ(-EINVAL, memreg_cache_create(fd, &(struct memreg_cache_attr){ .flags = 8 }, &c));
	EXPECT_EQ(NULL, c);
	ASSERT_EQ(0, memreg_cache_create(fd, &attr, &c));
	EXPECT_LE(0, memreg_cache_event_fd(c));
	memreg_cache_set_invalidate_cb(c, log_inval, &log);
	ASSERT_EQ(0, memreg_mr_get(c, b, PAGE, RW, &mr));
	memreg_mr_put(c, mr);
	ASSERT_EQ(0, munmap(b, PAGE));
	deadline = mrq_now_us() + 5000000;
	while (!__atomic_load_n(&log.calls, __ATOMIC_SEQ_CST) && mrq_now_us() < deadline)
		usleep(1000);
	ASSERT_EQ(1, __atomic_load_n(&log.calls, __ATOMIC_SEQ_CST));
	EXPECT_EQ(MEMREG_CACHE_ENDED, log.causes[0]);
	memreg_cache_get_stats(c, &cs);
	EXPECT_EQ(0, cs.entries);
	memreg_cache_destroy(c);
	close(fd);
}

TEST_F(lib, cache_wants_the_event_ring)
{
	struct memreg_events ev;
	struct memreg_cache *c;

	ASSERT_EQ(0, memreg_events_init(self->fd, 8, -1, &ev));
	EXPECT_EQ(-EBUSY, memreg_cache_create(self->fd, NULL, &c));
	EXPECT_EQ(NULL, c);
	memreg_events_exit(&ev);
}

struct getter {
	struct memreg_cache *c;
	char *buf;
	int rounds;
	int errors;
	int stale;
};

static void *get_loop(void *arg)
{
	struct getter *g = arg;
	unsigned int seed = (unsigned int)(unsigned long)pthread_self();
	int i;

	for (i = 0; i < g->rounds; i++) {
		int k = rand_r(&seed) % 8;
		struct memreg_mr *mr;

		if (memreg_mr_get(g->c, g->buf + k * PAGE, PAGE, RW, &mr)) {
			g->errors++;
			continue;
		}
		if (memreg_mr_addr(mr) > (void *)(g->buf + k * PAGE) ||
		    (char *)memreg_mr_addr(mr) + memreg_mr_length(mr) < g->buf + (k + 1) * PAGE)
			g->stale++;
		memreg_mr_put(g->c, mr);
	}
	return NULL;
}

/* Four threads get and put while the main thread remaps one page over and over. */
TEST_F(cache, threads_share_it)
{
	struct getter g[4];
	struct memreg_cache_stats cs;
	pthread_t t[4];
	int i;

	for (i = 0; i < 4; i++) {
		g[i] = (struct getter){ .c = self->c, .buf = self->buf, .rounds = 2000 };
		ASSERT_EQ(0, pthread_create(&t[i], NULL, get_loop, &g[i]));
	}
	for (i = 0; i < 50; i++) {
		ASSERT_EQ(self->buf + 7 * PAGE, map_fixed(self->buf + 7 * PAGE, PAGE, 'r'));
		usleep(1000);
	}
	for (i = 0; i < 4; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
		EXPECT_EQ(0, g[i].errors);
		EXPECT_EQ(0, g[i].stale);
	}
	memreg_cache_get_stats(self->c, &cs);
	EXPECT_EQ(8000, cs.hits + cs.misses);
	TH_LOG("hits %llu misses %llu invalidations %llu", (unsigned long long)cs.hits,
	       (unsigned long long)cs.misses, (unsigned long long)cs.invalidations);
	EXPECT_GE(cs.hits, 4000);
	EXPECT_LE(cs.entries, 8);
}

/* Peers through the library: the descriptor over a socket, attach, WRITE, detach. */
TEST_F(lib, peer_write_through_a_passed_descriptor)
{
	struct memreg_register mine, theirs;
	struct memreg_queue q;
	struct memreg_sqe s;
	struct memreg_cqe c;
	char *a = map_buf(PAGE, 'a'), *b = map_buf(PAGE, 'b');
	int sv[2], other, got;
	__u32 peer;

	ASSERT_NE(NULL, a);
	ASSERT_NE(NULL, b);
	other = memreg_open();
	ASSERT_LE(0, other);
	ASSERT_EQ(0, memreg_register(other, b, PAGE, RW | MEMREG_ACCESS_REMOTE_WRITE, &theirs));
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	ASSERT_EQ(0, memreg_send_fd(sv[0], other));
	got = memreg_recv_fd(sv[1]);
	ASSERT_LE(0, got);
	EXPECT_EQ(-EBADF, memreg_send_fd(sv[0], -1));
	ASSERT_EQ(0, memreg_peer_attach(self->fd, got, &peer));
	close(got);
	EXPECT_NE(0, peer);
	ASSERT_EQ(0, memreg_register(self->fd, a, PAGE, RW, &mine));
	ASSERT_EQ(0, memreg_queue_init(self->fd, 8, 8, -1, &q));
	memreg_prep_write(&s, peer, theirs.rkey, 8, mine.lkey, 0, 100);
	ASSERT_EQ(0, memreg_queue_run(&q, &s, &c));
	EXPECT_EQ(0, c.status);
	EXPECT_EQ(100, c.bytes);
	EXPECT_TRUE(all_bytes(b, 8, 'b'));
	EXPECT_TRUE(all_bytes(b + 8, 100, 'a'));
	ASSERT_EQ(0, memreg_peer_detach(self->fd, peer));
	EXPECT_EQ(-ENOENT, memreg_peer_detach(self->fd, peer));
	ASSERT_EQ(0, memreg_peer_revoke(other));
	/* A closed socket: no descriptor. */
	close(sv[0]);
	EXPECT_EQ(-ECONNRESET, memreg_recv_fd(sv[1]));
	close(sv[1]);
	memreg_queue_exit(&q);
	close(other);
}

TEST_HARNESS_MAIN
