// SPDX-License-Identifier: (LGPL-2.1 OR MIT)
/*
 * Host tests of libmemreg, run under ASan and UBSan by `make check`: what
 * runs without /dev/memreg. A thread plays the kernel's worker on ordinary
 * memory laid out like the mappings (the submission protocol, completions,
 * the doorbell rule, CQ_FULL), and the readers are fed words that make no
 * sense, as a hostile or broken writer of a shared page would.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libmemreg.h"

static int failures, checks;

#define CHECK(cond)								\
	do {									\
		checks++;							\
		if (!(cond)) {							\
			failures++;						\
			fprintf(stderr, "%s:%d: %s: check failed: %s\n",	\
				__FILE__, __LINE__, __func__, #cond);		\
		}								\
	} while (0)

/* A queue on heap memory, laid out as the two mappings are. */
struct fake_queue {
	struct memreg_queue q;
	void *sq, *cq;
};

static void fake_init(struct fake_queue *f, __u32 sq_entries, __u32 cq_entries)
{
	__u32 i;

	memset(f, 0, sizeof(*f));
	f->sq = calloc(1, memreg_sq_bytes(sq_entries));
	f->cq = calloc(1, memreg_cq_bytes(cq_entries));
	f->q.fd = -1;		/* a doorbell fails with EBADF, and is counted */
	f->q.eventfd = -1;
	f->q.sq_entries = sq_entries;
	f->q.cq_entries = cq_entries;
	f->q.user = f->sq;
	f->q.slots = (struct memreg_sq_slot *)((char *)f->sq + MEMREG_SQ_SLOTS_OFFSET);
	f->q.ring = f->cq;
	f->q.cqes = (const struct memreg_cqe *)((char *)f->cq + MEMREG_CQ_ENTRIES_OFFSET);
	for (i = 0; i < sq_entries; i++)
		f->q.slots[i].seq = i;
}

static void fake_exit(struct fake_queue *f)
{
	free(f->sq);
	free(f->cq);
}

static struct memreg_cq_ring *kring(struct fake_queue *f)
{
	return f->cq;
}

static struct memreg_cqe *kcqes(struct fake_queue *f)
{
	return (struct memreg_cqe *)((char *)f->cq + MEMREG_CQ_ENTRIES_OFFSET);
}

/*
 * The worker's side of one request, as the header describes it: take slot
 * sq_head when its seq is sq_head + 1 and the CQ has room, free the slot,
 * publish sq_head, complete with user_data. Returns false when nothing is
 * ready.
 */
static bool worker_step(struct fake_queue *f)
{
	struct memreg_cq_ring *r = kring(f);
	__u64 h = __atomic_load_n(&r->sq_head, __ATOMIC_RELAXED);
	struct memreg_sq_slot *slot = &f->q.slots[h & (f->q.sq_entries - 1)];
	__u32 tail = __atomic_load_n(&r->cq_tail, __ATOMIC_RELAXED);
	__u32 head = __atomic_load_n(&f->q.user->cq_head, __ATOMIC_ACQUIRE);
	struct memreg_sqe copy;

	if (__atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE) != h + 1)
		return false;
	if (tail - head >= f->q.cq_entries) {
		__atomic_or_fetch(&r->flags, MEMREG_QUEUE_CQ_FULL, __ATOMIC_SEQ_CST);
		return false;
	}
	memcpy(&copy, &slot->sqe, sizeof(copy));
	__atomic_store_n(&slot->seq, h + f->q.sq_entries, __ATOMIC_RELEASE);
	__atomic_store_n(&r->sq_head, h + 1, __ATOMIC_RELEASE);
	kcqes(f)[tail & (f->q.cq_entries - 1)] = (struct memreg_cqe){
		.user_data = copy.user_data,
		.bytes = copy.length,
		.status = copy.opcode == MEMREG_OP_NOP ? 0 : -EINVAL,
	};
	__atomic_store_n(&r->cq_tail, tail + 1, __ATOMIC_RELEASE);
	return true;
}

struct worker {
	struct fake_queue *f;
	bool stop;		/* atomic */
};

static void *worker_thread(void *arg)
{
	struct worker *w = arg;

	while (!__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE))
		if (!worker_step(w->f))
			sched_yield();
	while (worker_step(w->f))
		;
	return NULL;
}

static void test_preps(void)
{
	struct memreg_sqe s;

	memset(&s, 0xa5, sizeof(s));
	memreg_prep_copy(&s, 1, 2, 3, 4, 5);
	CHECK(s.opcode == MEMREG_OP_COPY && s.flags == 0 && s.reserved0 == 0 && s.peer == 0);
	CHECK(s.key == 1 && s.offset == 2 && s.src_key == 3 && s.src_offset == 4 && s.length == 5);
	CHECK(s.user_data == 0);
	memreg_sqe_set_data64(&s, ~0ULL);
	CHECK(s.user_data == ~0ULL);
	memreg_prep_send_imm(&s, 7, 8, 9, 10);
	CHECK(s.opcode == MEMREG_OP_SEND && s.flags == MEMREG_SQE_IMM && s.key == 10);
	CHECK(s.src_key == 7 && s.src_offset == 8 && s.length == 9 && s.user_data == 0);
	memreg_prep_read(&s, 5, 1, 2, 3, 4, 6);
	CHECK(s.opcode == MEMREG_OP_READ && s.peer == 5 && s.key == 1 && s.src_key == 3);
	memreg_prep_pool_free(&s, 3, 0x1000);
	CHECK(s.opcode == MEMREG_OP_POOL_FREE && s.peer == 3 && s.offset == 0x1000);
}

/* Posting and reaping with the worker running: nothing lost, reordered or doubled. */
static void test_post_reap(void)
{
	struct fake_queue f;
	struct worker w;
	pthread_t t;
	__u64 next = 0, got = 0;
	int i;

	fake_init(&f, 8, 16);
	w.f = &f;
	w.stop = false;
	pthread_create(&t, NULL, worker_thread, &w);
	for (i = 0; got < 20000 && i < 100000000; i++) {
		struct memreg_sqe *sqe = next < 20000 ? memreg_get_sqe(&f.q) : NULL;
		struct memreg_cqe out[16];
		unsigned int n, k;

		if (sqe) {
			memreg_prep_nop(sqe);
			memreg_sqe_set_data64(sqe, next++);
			CHECK(memreg_submit(&f.q, sqe) == 0);
		}
		n = memreg_reap_cqes(&f.q, out, 16);
		for (k = 0; k < n; k++) {
			if (out[k].user_data != got || out[k].status)
				CHECK(!"completions in order, status 0");
			got++;
		}
		if (!sqe && !n)
			sched_yield();
	}
	__atomic_store_n(&w.stop, true, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	CHECK(got == 20000);
	CHECK(next == 20000);
	CHECK(memreg_reap_cqes(&f.q, NULL, 16) == 0);
	/* The worker never slept: no doorbell. */
	CHECK(f.q.doorbells == 0);
	fake_exit(&f);
}

/* The doorbell rule: only when the worker sleeps at one of ours. */
static void test_doorbell_rule(void)
{
	struct fake_queue f;
	struct memreg_sqe s, *sqe;
	__u64 pos;

	fake_init(&f, 4, 4);
	memreg_prep_nop(&s);
	CHECK(memreg_queue_post(&f.q, &s, 0, &pos) == 0);
	CHECK(pos == 0 && f.q.doorbells == 0);
	/* The worker took 0 and sleeps at 1. */
	kring(&f)->flags = MEMREG_QUEUE_NEED_WAKEUP;
	kring(&f)->sq_head = 1;
	/* 1 is ours: it rings (EBADF on fd -1). */
	CHECK(memreg_queue_post(&f.q, &s, 0, &pos) == -EBADF);
	CHECK(pos == 1 && f.q.doorbells == 1);
	sqe = memreg_get_sqe(&f.q);
	CHECK(sqe != NULL);
	memreg_prep_nop(sqe);
	/* This one is at 2, the worker sleeps at 1: no doorbell. */
	CHECK(memreg_submit(&f.q, sqe) == 0);
	CHECK(f.q.doorbells == 1);
	CHECK(memreg_queue_post(&f.q, &s, MEMREG_POST_NO_DOORBELL, &pos) == 0);
	CHECK(pos == 3 && f.q.doorbells == 1);
	/* Never claimed, or already published: not submitted again. */
	CHECK(memreg_submit(&f.q, &f.q.slots[0].sqe) == -EINVAL);
	CHECK(memreg_submit(&f.q, &f.q.slots[2].sqe) == -EINVAL);
	/* Full: slot 0 has not come back. */
	CHECK(memreg_queue_post(&f.q, &s, 0, NULL) == -EAGAIN);
	CHECK(memreg_get_sqe(&f.q) == NULL);
	CHECK(memreg_queue_post_wait(&f.q, &s, 10) == -ETIMEDOUT);
	fake_exit(&f);
}

/* Words that make no sense are refused, never followed. */
static void test_garbage_words(void)
{
	struct fake_queue f;
	const struct memreg_cqe *cqe;
	struct memreg_cqe out[4];
	struct memreg_sqe s;
	__u32 head;
	int n = 0;

	fake_init(&f, 4, 4);
	kring(&f)->cq_tail = 1000;	/* far past the head */
	CHECK(memreg_cq_ready(&f.q) == 0);
	CHECK(memreg_reap_cqes(&f.q, out, 4) == 0);
	CHECK(memreg_peek_cqe(&f.q, &cqe) == -EAGAIN);
	memreg_for_each_cqe(&f.q, head, cqe)
		n++;
	CHECK(n == 0);
	memreg_cq_advance(&f.q, 3);
	CHECK(memreg_queue_cq_head(&f.q) == 0);
	/* A slot of a later lap while insert stays put. */
	f.q.slots[0].seq = 4;
	CHECK(memreg_queue_post(&f.q, (memreg_prep_nop(&s), &s), 0, NULL) == -EBUSY);
	f.q.slots[0].seq = 0;
	/* A CQ that the worker stopped on: advancing rings the doorbell. */
	kring(&f)->cq_tail = 2;
	kring(&f)->flags = MEMREG_QUEUE_CQ_FULL;
	CHECK(memreg_cq_ready(&f.q) == 2);
	CHECK(memreg_reap_cqes(&f.q, out, 1) == 1);
	CHECK(f.q.doorbells == 1);
	CHECK(memreg_peek_cqe(&f.q, &cqe) == 0);
	memreg_cqe_seen(&f.q, cqe);
	CHECK(f.q.doorbells == 2);
	CHECK(memreg_peek_cqe(&f.q, &cqe) == -EAGAIN);
	fake_exit(&f);
}

static void test_events_reader(void)
{
	size_t bytes = MEMREG_EVENTS_OFFSET + 4 * sizeof(struct memreg_event);
	struct memreg_event_ring *ring = calloc(1, bytes);
	struct memreg_event *e = (struct memreg_event *)((char *)ring + MEMREG_EVENTS_OFFSET);
	const struct memreg_event *it;
	struct memreg_event out[8];
	struct memreg_events ev;
	__u32 head = 0, h;
	int n = 0, i;

	ev = (struct memreg_events){ .fd = -1, .entries = 4, .ring = ring, .events = e,
				     .head = &head };
	for (i = 0; i < 3; i++)
		e[i] = (struct memreg_event){ .key = 10 + i, .kind = MEMREG_EVENT_ENDED };
	ring->tail = 3;
	CHECK(memreg_events_ready(&ev) == 3);
	memreg_for_each_event(&ev, h, it)
		CHECK(it->key == (__u64)(10 + n++));
	CHECK(n == 3);
	memreg_events_advance(&ev, 2);
	CHECK(head == 2);
	CHECK(memreg_events_read(&ev, out, 8) == 1 && out[0].key == 12);
	CHECK(memreg_events_ready(&ev) == 0);
	/* A tail too far ahead: nothing is read. */
	ring->tail = head + 5;
	CHECK(memreg_events_ready(&ev) == 0);
	CHECK(memreg_events_read(&ev, out, 8) == 0);
	n = 0;
	memreg_for_each_event(&ev, h, it)
		n++;
	CHECK(n == 0);
	memreg_events_advance(&ev, 1);
	CHECK(head == 3);
	CHECK(!memreg_events_overflowed(&ev));
	ring->flags = MEMREG_EVENTS_OVERFLOW;
	CHECK(memreg_events_overflowed(&ev));
	free(ring);
}

static void test_events_user_data(void)
{
	size_t bytes = MEMREG_EVENTS_OFFSET + 4 * sizeof(struct memreg_event);
	struct memreg_event_ring *ring = calloc(1, bytes);
	struct memreg_event *e = (struct memreg_event *)((char *)ring + MEMREG_EVENTS_OFFSET);
	__u64 ud[4] = { 100, 101, 102, 103 }, got[4] = { 0 };
	struct memreg_event out[4];
	struct memreg_events ev;
	__u32 head = 2;

	ev = (struct memreg_events){ .fd = -1, .entries = 4, .ring = ring, .events = e,
				     .head = &head };
	/* A kernel without user data: 0 for each event. */
	ring->tail = 3;
	CHECK(memreg_events_read_user_data(&ev, out, got, 4) == 1 && got[0] == 0);
	/* With it: the entry's index in the array, wrapping with the ring. */
	ev.user_data = ud;
	ring->tail = 6;
	CHECK(memreg_event_user_data(&ev, 5) == 101);
	CHECK(memreg_events_read_user_data(&ev, out, got, 4) == 3);
	CHECK(got[0] == 103 && got[1] == 100 && got[2] == 101);
	CHECK(head == 6);
	free(ring);
}

static void test_word_valid(void)
{
	__u64 words[4] = { 0, 8, 8 | MEMREG_WORD_SUSPENDED, 8 | MEMREG_WORD_ENDED };
	struct memreg_state_words sw = { .words = words, .slots = 4 };

	CHECK(memreg_word_valid(&sw, 1, 8));
	CHECK(!memreg_word_valid(&sw, 2, 8));
	CHECK(!memreg_word_valid(&sw, 3, 8));
	CHECK(!memreg_word_valid(&sw, 0, 0));
	CHECK(!memreg_word_valid(&sw, 4, 8));
	CHECK(!memreg_word_valid(&sw, MEMREG_NO_SLOT, 8));
}

/* Without the device: clean errors, nothing mapped. */
static void test_no_device(void)
{
	struct memreg_queue q;
	struct memreg_cache *c = (void *)1;
	struct memreg_pool pool;
	struct memreg_pool_class cls = { .buffer_size = 4096, .max_buffers = 16 };
	struct memreg_pool_params params = { .access = MEMREG_ACCESS_LOCAL_WRITE };
	__u32 peer = 5;
	int fd = memreg_open();

	CHECK(fd < 0);
	CHECK(memreg_queue_init(-1, 8, 8, -1, &q) == -EBADF);
	CHECK(q.user == NULL);
	CHECK(memreg_cache_create(-1, NULL, &c) == -EBADF);
	CHECK(c == NULL);
	CHECK(memreg_pool_init(-1, &cls, 1, &params, &pool) == -EBADF);
	CHECK(pool.map == NULL);
	CHECK(memreg_pool_init(-1, &cls, MEMREG_POOL_MAX_CLASSES + 1, &params, &pool) == -EINVAL);
	CHECK(memreg_peer_attach(-1, 3, &peer) == -EBADF && peer == 0);
	CHECK(memreg_send_fd(-1, 0) == -EBADF);
	CHECK(memreg_recv_fd(-1) == -EBADF);
	CHECK(memreg_flush(-1, NULL) == -EBADF);
}

int main(void)
{
	test_preps();
	test_post_reap();
	test_doorbell_rule();
	test_garbage_words();
	test_events_reader();
	test_events_user_data();
	test_word_valid();
	test_no_device();
	printf("libmemreg host tests: %d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
