// SPDX-License-Identifier: (LGPL-2.1 OR MIT)
/*
 * Host tests of libmemreg, run under ASan and UBSan by `make check`: what
 * runs without /dev/memreg. A thread plays the kernel's worker on ordinary
 * memory laid out like the mappings (the submission protocol, completions,
 * the doorbell rule, CQ_FULL), and the readers are fed words that make no
 * sense, as a hostile or broken writer of a shared page would. A pool's
 * free-buffer rings are laid out in memory of the test's own, filled as the
 * kernel lends buffers, and popped and pushed by threads at once, and with
 * garbage on them.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "libmemreg.h"
#include "internal.h"

static int failures, checks;
/* The pool of the ring tests (the threads' too). */
static struct memreg_pool pool_for_tests;

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

/* ---- A pool's free-buffer rings on the test's memory ---- */

#define FR_CLASSES	2
#define FR_BUFFERS	64	/* per class */
#define FR_CHUNK	16	/* buffers per chunk */
#define FR_KEY(c, k)	(0x1000 + (c) * 0x100 + (k))

/*
 * A pool of two classes (64 and 256 bytes, 64 buffers each, chunks of 16)
 * on anonymous memory, and its rings laid out as POOL_RING describes them
 * (heads, then next[] arrays, then chunk tables), as the kernel would fill
 * them: every chunk mapped with key FR_KEY(class, chunk) and offset
 * chunk * 0x10000, every buffer on its ring. The descriptor is -1, so that
 * every ioctl the library falls back to fails with EBADF.
 */
static int fake_rings_init(struct memreg_pool *pool)
{
	struct memreg_pool_ring_class rc[FR_CLASSES];
	size_t off = FR_CLASSES * sizeof(struct memreg_pool_ring_head), bytes;
	__u32 c, i;
	char *map;
	int ret;

	memset(pool, 0, sizeof(*pool));
	pool->fd = -1;
	pool->nr_classes = FR_CLASSES;
	for (c = 0; c < FR_CLASSES; c++) {
		pool->classes[c] = (struct memreg_pool_class){
			.buffer_size = 64U << (2 * c), .max_buffers = FR_BUFFERS,
			.chunk_buffers = FR_CHUNK,
			.offset = c ? FR_BUFFERS * 64 : 0 };
		rc[c] = (struct memreg_pool_ring_class){
			.head_offset = c * sizeof(struct memreg_pool_ring_head),
			.nr_chunks = FR_BUFFERS / FR_CHUNK };
	}
	pool->map_bytes = FR_BUFFERS * (64 + 256);
	pool->map = mmap(NULL, pool->map_bytes, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (pool->map == MAP_FAILED)
		return -errno;
	for (c = 0; c < FR_CLASSES; c++) {
		rc[c].next_offset = off;
		off += FR_BUFFERS * sizeof(__u32);
	}
	for (c = 0; c < FR_CLASSES; c++) {
		rc[c].chunks_offset = off;
		off += FR_BUFFERS / FR_CHUNK * sizeof(struct memreg_pool_ring_chunk);
	}
	bytes = off;
	map = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		return -errno;
	for (c = 0; c < FR_CLASSES; c++) {
		struct memreg_pool_ring_head *h = (void *)(map + rc[c].head_offset);
		struct memreg_pool_ring_chunk *ch = (void *)(map + rc[c].chunks_offset);
		__u32 *next = (void *)(map + rc[c].next_offset);

		for (i = 0; i < FR_BUFFERS / FR_CHUNK; i++)
			ch[i] = (struct memreg_pool_ring_chunk){ FR_KEY(c, i), i * 0x10000ULL };
		h->limit = FR_BUFFERS;
		/* Lent from the last down: the first pop is buffer 0. */
		h->top = MEMREG_POOL_RING_TOP(0, MEMREG_POOL_RING_EMPTY);
		for (i = FR_BUFFERS; i-- > 0;) {
			next[i] = MEMREG_POOL_RING_INDEX(h->top);
			h->top = MEMREG_POOL_RING_TOP(MEMREG_POOL_RING_TAG(h->top) + 1, i);
		}
	}
	ret = memreg__pool_rings_setup(pool, map, bytes, rc, FR_CLASSES);
	if (ret)
		munmap(map, bytes);
	return ret;
}

static struct memreg__ring_class *fr_ring(struct memreg_pool *pool, __u32 c)
{
	return &pool->rings->cls[c];
}

/* The buffers on class @c's ring, walking at most 2 * FR_BUFFERS links. */
static unsigned int fr_count(struct memreg_pool *pool, __u32 c)
{
	struct memreg__ring_class *r = fr_ring(pool, c);
	__u32 idx = MEMREG_POOL_RING_INDEX(r->head->top);
	unsigned int n = 0;

	while (idx < FR_BUFFERS && n < 2 * FR_BUFFERS) {
		n++;
		idx = r->next[idx];
	}
	return n;
}

/* The index of a buffer the library handed out, checked against its class. */
static __u32 fr_index(struct memreg_pool *pool, const struct memreg_pool_buf *b)
{
	__u64 base = (__u64)(unsigned long)pool->map + pool->classes[b->class].offset;

	return (__u32)((b->addr - base) / b->size);
}

/* Pop and push through memreg_pool_alloc/free, keys, offsets, the limit. */
static void test_ring_alloc_free(void)
{
	struct memreg_pool_buf b[FR_BUFFERS + 1], one;
	void *addrs[4];
	bool seen[FR_BUFFERS] = { false };
	__u32 i, idx, n;

	CHECK(fake_rings_init(&pool_for_tests) == 0);
	if (!pool_for_tests.rings)
		return;
	/* 1 .. 64 bytes: class 0, buffers 0, 1, ... with their chunk's key and offset. */
	for (i = 0; i < FR_BUFFERS; i++) {
		CHECK(memreg_pool_alloc(&pool_for_tests, 1 + i % 64, 0, 0, &b[i]) == 0);
		idx = fr_index(&pool_for_tests, &b[i]);
		CHECK(b[i].class == 0 && b[i].size == 64 && idx == i);
		CHECK(b[i].key == FR_KEY(0, i / FR_CHUNK));
		CHECK(b[i].offset == (i / FR_CHUNK) * 0x10000ULL + (i % FR_CHUNK) * 64);
	}
	CHECK(fr_count(&pool_for_tests, 0) == 0);
	/* Empty: the ioctl answers (EBADF here); class 1's ring is not taken from. */
	CHECK(memreg_pool_alloc(&pool_for_tests, 64, 0, 0, &one) == -EBADF);
	CHECK(memreg_pool_alloc(&pool_for_tests, 64, MEMREG_POOL_NO_FALLBACK, 0, &one) == -EBADF);
	CHECK(fr_count(&pool_for_tests, 1) == FR_BUFFERS);
	/* 65 bytes: class 1. */
	CHECK(memreg_pool_alloc(&pool_for_tests, 65, 0, 0, &one) == 0);
	CHECK(one.class == 1 && one.size == 256 && one.key == FR_KEY(1, 0) && one.offset == 0);
	CHECK(memreg_pool_free(&pool_for_tests, (void *)(unsigned long)one.addr) == 0);
	/* What the ring cannot answer goes to the ioctl, which refuses it. */
	CHECK(memreg_pool_alloc(&pool_for_tests, 0, 0, 0, &one) == -EBADF);
	CHECK(memreg_pool_alloc(&pool_for_tests, 257, 0, 0, &one) == -EBADF);
	CHECK(memreg_pool_alloc(&pool_for_tests, 16, 1U << 5, 0, &one) == -EBADF);
	CHECK(memreg_pool_alloc(&pool_for_tests, 16, 0, MEMREG_POOL_MAX_TIMEOUT_MS + 1, &one) ==
	      -EBADF);
	CHECK(fr_count(&pool_for_tests, 1) == FR_BUFFERS);
	/* Free pushes; an address that is not a buffer's start is the kernel's. */
	CHECK(memreg_pool_free(&pool_for_tests, (char *)(unsigned long)b[5].addr + 1) == -EBADF);
	CHECK(memreg_pool_free(&pool_for_tests, &one) == -EBADF);
	for (i = 0; i < FR_BUFFERS; i += 2)
		CHECK(memreg_pool_free(&pool_for_tests, (void *)(unsigned long)b[i].addr) == 0);
	CHECK(fr_count(&pool_for_tests, 0) == FR_BUFFERS / 2);
	/* A batch: all or nothing for a repeated address. */
	addrs[0] = (void *)(unsigned long)b[1].addr;
	addrs[1] = (void *)(unsigned long)b[3].addr;
	addrs[2] = (void *)(unsigned long)b[1].addr;
	CHECK(memreg_pool_free_batch(&pool_for_tests, addrs, 3) == -EINVAL);
	CHECK(fr_count(&pool_for_tests, 0) == FR_BUFFERS / 2);
	/* One the kernel refuses: none of the batch is pushed. */
	addrs[2] = (char *)addrs[1] + 1;
	CHECK(memreg_pool_free_batch(&pool_for_tests, addrs, 3) == -EBADF);
	CHECK(fr_count(&pool_for_tests, 0) == FR_BUFFERS / 2);
	CHECK(memreg_pool_free_batch(&pool_for_tests, addrs, 2) == 0);
	CHECK(fr_count(&pool_for_tests, 0) == FR_BUFFERS / 2 + 2);
	for (i = 5; i < FR_BUFFERS; i += 2)
		CHECK(memreg_pool_free(&pool_for_tests, (void *)(unsigned long)b[i].addr) == 0);
	CHECK(fr_count(&pool_for_tests, 0) == FR_BUFFERS);
	/* A batch from the ring: every buffer once. */
	CHECK(memreg_pool_alloc_batch(&pool_for_tests, 64, 0, 0, b, FR_BUFFERS) == FR_BUFFERS);
	for (i = 0; i < FR_BUFFERS; i++) {
		idx = fr_index(&pool_for_tests, &b[i]);
		CHECK(idx < FR_BUFFERS && !seen[idx]);
		if (idx < FR_BUFFERS)
			seen[idx] = true;
		CHECK(b[i].key == FR_KEY(0, idx / FR_CHUNK));
	}
	/* Part from the ring, the rest asked of the ioctl (EBADF): what the ring had. */
	for (i = 0; i < 3; i++)
		CHECK(memreg_pool_free(&pool_for_tests, (void *)(unsigned long)b[i].addr) == 0);
	CHECK(memreg_pool_alloc_batch(&pool_for_tests, 64, 0, 0, b, 8) == 3);
	CHECK(memreg_pool_alloc_batch(&pool_for_tests, 64, 0, 0, b + 3, 8) == -EBADF);
	for (i = 0; i < FR_BUFFERS; i++)
		CHECK(memreg_pool_free(&pool_for_tests, (void *)(unsigned long)b[i].addr) == 0);
	CHECK(fr_count(&pool_for_tests, 0) == FR_BUFFERS);
	/*
	 * The limit at 32 and chunk 1 (buffers 16 .. 31) not mapped: pops never
	 * return those (each goes back by POOL_FREE, EBADF ignored), frees of
	 * them go to the ioctl, not the ring.
	 */
	fr_ring(&pool_for_tests, 0)->head->limit = 32;
	((struct memreg_pool_ring_chunk *)fr_ring(&pool_for_tests, 0)->chunks)[1].key = 0;
	n = 0;
	for (i = 0; i < 100 && fr_count(&pool_for_tests, 0); i++) {
		/* A pop gives up after a few of those: EBADF then (the kernel would drain). */
		if (memreg_pool_alloc(&pool_for_tests, 64, 0, 0, &b[n]))
			continue;
		idx = fr_index(&pool_for_tests, &b[n]);
		CHECK(idx < 16 && b[n].key == FR_KEY(0, 0));
		if (++n == FR_BUFFERS)
			break;
	}
	CHECK(n == 16);
	CHECK(memreg_pool_free(&pool_for_tests, (char *)pool_for_tests.map + 40 * 64) == -EBADF);
	CHECK(memreg_pool_free(&pool_for_tests, (char *)pool_for_tests.map + 20 * 64) == -EBADF);
	CHECK(fr_count(&pool_for_tests, 0) == 0);
	CHECK(memreg_pool_free(&pool_for_tests, (void *)(unsigned long)b[0].addr) == 0);
	CHECK(fr_count(&pool_for_tests, 0) == 1);
	CHECK(memreg_pool_ring_init(&pool_for_tests) == -EBUSY);
	memreg_pool_exit(&pool_for_tests);
	CHECK(pool_for_tests.rings == NULL && pool_for_tests.map == NULL && pool_for_tests.fd == -1);
	CHECK(memreg_pool_ring_init(&pool_for_tests) == -EINVAL);
}

/* A layout that does not fit the mapping or the pool is refused. */
static void test_ring_bad_layout(void)
{
	struct memreg_pool pool = { .fd = -1, .nr_classes = 1 };
	struct memreg_pool_ring_class rc = { .head_offset = 0, .next_offset = 64,
					     .chunks_offset = 64 + 4 * FR_BUFFERS,
					     .nr_chunks = FR_BUFFERS / FR_CHUNK };
	size_t bytes = 64 + 4 * FR_BUFFERS + 16 * (FR_BUFFERS / FR_CHUNK);
	static __u64 mem[1024];

	pool.classes[0] = (struct memreg_pool_class){ .buffer_size = 64, .max_buffers = FR_BUFFERS,
						      .chunk_buffers = FR_CHUNK };
	pool.map = mem;
	pool.map_bytes = 64 * FR_BUFFERS;
	CHECK(memreg__pool_rings_setup(&pool, mem, bytes - 1, &rc, 1) == -EPROTO);
	CHECK(memreg__pool_rings_setup(&pool, mem, bytes, &rc, 2) == -EPROTO);
	rc.next_offset = 66;
	CHECK(memreg__pool_rings_setup(&pool, mem, bytes + 4, &rc, 1) == -EPROTO);
	rc.next_offset = 64;
	rc.nr_chunks++;
	CHECK(memreg__pool_rings_setup(&pool, mem, bytes + 16, &rc, 1) == -EPROTO);
	rc.nr_chunks--;
	rc.head_offset = ~0ULL - 8;
	CHECK(memreg__pool_rings_setup(&pool, mem, bytes, &rc, 1) == -EPROTO);
	rc.head_offset = 0;
	pool.map_bytes--;
	CHECK(memreg__pool_rings_setup(&pool, mem, bytes, &rc, 1) == -EPROTO);
	CHECK(pool.rings == NULL);
	pool.map_bytes++;
	/* Chunks of 12 buffers (48 in 4): not a power of two. */
	pool.classes[0].max_buffers = 48;
	pool.classes[0].chunk_buffers = 12;
	rc.nr_chunks = 4;
	CHECK(memreg__pool_rings_setup(&pool, mem, bytes, &rc, 1) == -EPROTO);
	/* The same with chunks of 16 (48 in 3) fits. */
	pool.classes[0].chunk_buffers = 16;
	rc.nr_chunks = 3;
	CHECK(memreg__pool_rings_setup(&pool, mem, bytes, &rc, 1) == 0);
	CHECK(pool.rings != NULL);
	free(pool.rings);
	pool.rings = NULL;
}

/* Threads popping and pushing at once: no buffer held by two of them. */
#define FR_THREADS	4
#define FR_ROUNDS	20000

struct fr_thread {
	struct memreg_pool *pool;
	__u32 owner;
	unsigned int cache;	/* buffers per class of a cache of its own, or 0 */
	unsigned int twice, bad, empty, done;
};

static void *fr_thread_fn(void *arg)
{
	struct fr_thread *t = arg;
	struct memreg_pool_cache *pc = NULL;
	struct memreg_pool_buf b[6];
	unsigned int i, k, n;

	if (t->cache && memreg_pool_cache_create(t->pool, t->cache, &pc)) {
		t->bad++;
		return NULL;
	}
	for (i = 0; i < FR_ROUNDS; i++) {
		/*
		 * One or two at a time (one to six through a cache, for refills and
		 * spills), so that buffers change hands in every order.
		 */
		n = pc ? 1 + (i * 7 + t->owner) % 6 : 1 + (i + t->owner) % 2;
		for (k = 0; k < n; k++) {
			__u32 *tag, old;

			if (pc ? memreg_pool_cache_alloc(pc, 64, 0, 0, &b[k]) :
				 memreg_pool_alloc(t->pool, 64, 0, 0, &b[k])) {
				t->empty++;
				break;
			}
			if (fr_index(t->pool, &b[k]) >= FR_BUFFERS || b[k].class) {
				t->bad++;
				break;
			}
			tag = (__u32 *)(unsigned long)b[k].addr;
			old = __atomic_exchange_n(tag, t->owner, __ATOMIC_RELAXED);
			if (old)
				t->twice++;
		}
		n = k;
		for (k = 0; k < n; k++) {
			__u32 *tag = (__u32 *)(unsigned long)b[k].addr;

			if (__atomic_load_n(tag, __ATOMIC_RELAXED) != t->owner)
				t->twice++;
			__atomic_store_n(tag, 0, __ATOMIC_RELAXED);
			if (pc ? memreg_pool_cache_free(pc, tag) : memreg_pool_free(t->pool, tag))
				t->bad++;
		}
		t->done++;
	}
	memreg_pool_cache_destroy(pc);
	return NULL;
}

static void test_ring_threads(__u32 limit)
{
	struct fr_thread t[FR_THREADS];
	pthread_t tid[FR_THREADS];
	bool seen[FR_BUFFERS];
	struct memreg_pool_buf b;
	unsigned int i, n;
	__u32 idx;

	CHECK(fake_rings_init(&pool_for_tests) == 0);
	if (!pool_for_tests.rings)
		return;
	/* With 6, fewer buffers than the threads may hold: the ring runs dry too. */
	fr_ring(&pool_for_tests, 0)->head->limit = limit;
	for (i = 0; i < FR_THREADS; i++) {
		t[i] = (struct fr_thread){ .pool = &pool_for_tests, .owner = i + 1 };
		pthread_create(&tid[i], NULL, fr_thread_fn, &t[i]);
	}
	for (i = 0; i < FR_THREADS; i++) {
		pthread_join(tid[i], NULL);
		CHECK(t[i].twice == 0);
		CHECK(t[i].bad == 0);
		CHECK(t[i].done == FR_ROUNDS);
	}
	/*
	 * Buffers below the limit are all back on the ring; those above it that
	 * a pop found went to the ioctl (and were lost: EBADF), and so do the
	 * rest.
	 */
	memset(seen, 0, sizeof(seen));
	for (i = 0, n = 0; i < 200 && fr_count(&pool_for_tests, 0); i++) {
		if (memreg_pool_alloc(&pool_for_tests, 64, 0, 0, &b))
			continue;
		idx = fr_index(&pool_for_tests, &b);
		CHECK(idx < limit && !seen[idx]);
		if (idx < limit && !seen[idx]) {
			seen[idx] = true;
			n++;
		}
	}
	CHECK(n == limit);
	CHECK(fr_count(&pool_for_tests, 0) == 0);
	memreg_pool_exit(&pool_for_tests);
}

/* Garbage on a ring: a pop never hands out an index past max_buffers, and ends. */
static void test_ring_garbage(void)
{
	struct memreg__ring_class *r;
	struct memreg_pool_buf b;
	unsigned int i, n = 0;
	__u32 idx;

	CHECK(fake_rings_init(&pool_for_tests) == 0);
	if (!pool_for_tests.rings)
		return;
	r = fr_ring(&pool_for_tests, 0);
	/* A top out of range: empty. */
	r->head->top = MEMREG_POOL_RING_TOP(7, FR_BUFFERS);
	CHECK(memreg_pool_alloc(&pool_for_tests, 64, 0, 0, &b) == -EBADF);
	r->head->top = MEMREG_POOL_RING_TOP(7, 0x7fffffff);
	CHECK(memreg_pool_alloc(&pool_for_tests, 64, 0, 0, &b) == -EBADF);
	/* A next out of range: one pop, then empty. */
	r->head->top = MEMREG_POOL_RING_TOP(7, 3);
	r->next[3] = 1000;
	CHECK(memreg_pool_alloc(&pool_for_tests, 64, 0, 0, &b) == 0);
	CHECK(fr_index(&pool_for_tests, &b) == 3);
	CHECK(MEMREG_POOL_RING_INDEX(r->head->top) == 1000);
	CHECK(MEMREG_POOL_RING_TAG(r->head->top) == 8);
	CHECK(memreg_pool_alloc(&pool_for_tests, 64, 0, 0, &b) == -EBADF);
	/* A cycle: a, b, a, ... (the process's own fault), never anything else. */
	r->head->top = MEMREG_POOL_RING_TOP(0, 9);
	r->next[9] = 12;
	r->next[12] = 9;
	for (i = 0; i < 10; i++) {
		CHECK(memreg_pool_alloc(&pool_for_tests, 64, 0, 0, &b) == 0);
		CHECK(fr_index(&pool_for_tests, &b) == (i % 2 ? 12U : 9U));
	}
	/* The same buffer pushed twice: it comes out twice, nothing else breaks. */
	r->head->top = MEMREG_POOL_RING_TOP(0, MEMREG_POOL_RING_EMPTY);
	CHECK(memreg_pool_free(&pool_for_tests, pool_for_tests.map) == 0);
	CHECK(memreg_pool_free(&pool_for_tests, pool_for_tests.map) == 0);
	CHECK(memreg_pool_alloc(&pool_for_tests, 64, 0, 0, &b) == 0 && b.addr ==
	      (__u64)(unsigned long)pool_for_tests.map);
	/* Random words everywhere: every buffer handed out is one of the class's. */
	srand(1);
	for (i = 0; i < FR_BUFFERS; i++)
		r->next[i] = (__u32)rand() % (2 * FR_BUFFERS);
	for (i = 0; i < 10000; i++) {
		if (i % 16 == 0)
			r->head->top = MEMREG_POOL_RING_TOP(i, (__u32)rand() % (FR_BUFFERS + 8));
		if (memreg_pool_alloc(&pool_for_tests, 64, 0, 0, &b))
			continue;
		n++;
		idx = fr_index(&pool_for_tests, &b);
		CHECK(idx < FR_BUFFERS && b.class == 0 && b.key == FR_KEY(0, idx / FR_CHUNK));
	}
	CHECK(n > 0);
	memreg_pool_exit(&pool_for_tests);
}

/* ---- Per-thread caches over the rings ---- */

/* The cache's buffers: alloc/free, refills and spills of half a cache, the limit. */
static void test_cache_alloc_free(void)
{
	struct memreg_pool_buf b[FR_BUFFERS], one;
	struct memreg_pool_cache *pc = (void *)1;
	struct memreg__ring_class *r;
	struct memreg_pool none = { .fd = -1 };
	__u32 i, idx, tag, n;

	CHECK(memreg_pool_cache_create(&none, 8, &pc) == -ENXIO && pc == NULL);
	CHECK(fake_rings_init(&pool_for_tests) == 0);
	if (!pool_for_tests.rings)
		return;
	r = fr_ring(&pool_for_tests, 0);
	CHECK(memreg_pool_cache_create(&pool_for_tests, 8, NULL) == -EINVAL);
	CHECK(memreg_pool_cache_create(NULL, 8, &pc) == -EINVAL && pc == NULL);
	CHECK(memreg_pool_cache_create(&pool_for_tests, 0, &pc) == -EINVAL);
	CHECK(memreg_pool_cache_create(&pool_for_tests, MEMREG_POOL_CACHE_MAX + 1, &pc) ==
	      -EINVAL);
	CHECK(memreg_pool_cache_alloc(NULL, 64, 0, 0, &one) == -EINVAL);
	CHECK(memreg_pool_cache_free(NULL, pool_for_tests.map) == -EINVAL);
	CHECK(memreg_pool_cache_flush(NULL) == -EINVAL);
	memreg_pool_cache_destroy(NULL);
	CHECK(memreg_pool_cache_create(&pool_for_tests, 8, &pc) == 0 && pc);
	if (!pc)
		return;
	/* The first ALLOC takes half a cache (4) from the ring in one swap. */
	tag = MEMREG_POOL_RING_TAG(r->head->top);
	CHECK(memreg_pool_cache_alloc(pc, 64, 0, 0, &b[0]) == 0);
	CHECK(fr_count(&pool_for_tests, 0) == FR_BUFFERS - 4);
	CHECK(MEMREG_POOL_RING_TAG(r->head->top) == tag + 1);
	/* Then every buffer once, each with its chunk's key and offset. */
	for (i = 1; i < FR_BUFFERS; i++)
		CHECK(memreg_pool_cache_alloc(pc, 1 + i % 64, 0, 0, &b[i]) == 0);
	for (i = 0; i < FR_BUFFERS; i++) {
		idx = fr_index(&pool_for_tests, &b[i]);
		CHECK(idx < FR_BUFFERS && b[i].class == 0 && b[i].size == 64);
		CHECK(b[i].key == FR_KEY(0, idx / FR_CHUNK));
		CHECK(b[i].offset == (idx / FR_CHUNK) * 0x10000ULL + (idx % FR_CHUNK) * 64);
		CHECK(!((__u32 *)pool_for_tests.map)[idx * 16]);
		((__u32 *)pool_for_tests.map)[idx * 16] = 1;
	}
	CHECK(fr_count(&pool_for_tests, 0) == 0);
	/* Empty cache and ring: the ioctl answers (EBADF here). */
	CHECK(memreg_pool_cache_alloc(pc, 64, 0, 0, &one) == -EBADF);
	/* Class 1 has a cache of its own; what no ring answers goes to the ioctl. */
	CHECK(memreg_pool_cache_alloc(pc, 65, 0, 0, &one) == 0 && one.class == 1);
	CHECK(memreg_pool_cache_free(pc, (void *)(unsigned long)one.addr) == 0);
	CHECK(memreg_pool_cache_alloc(pc, 257, 0, 0, &one) == -EBADF);
	CHECK(memreg_pool_cache_alloc(pc, 16, 1U << 5, 0, &one) == -EBADF);
	/* Frees fill the cache; the ninth sends the newest half (4) back to the ring. */
	for (i = 0; i < 8; i++) {
		((__u32 *)pool_for_tests.map)[fr_index(&pool_for_tests, &b[i]) * 16] = 0;
		CHECK(memreg_pool_cache_free(pc, (void *)(unsigned long)b[i].addr) == 0);
	}
	CHECK(fr_count(&pool_for_tests, 0) == 0);
	((__u32 *)pool_for_tests.map)[fr_index(&pool_for_tests, &b[8]) * 16] = 0;
	CHECK(memreg_pool_cache_free(pc, (void *)(unsigned long)b[8].addr) == 0);
	CHECK(fr_count(&pool_for_tests, 0) == 4);
	/* Not a buffer's start, or not the pool's: the kernel's. */
	CHECK(memreg_pool_cache_free(pc, (char *)(unsigned long)b[20].addr + 1) == -EBADF);
	CHECK(memreg_pool_cache_free(pc, &one) == -EBADF);
	for (i = 9; i < FR_BUFFERS; i++) {
		((__u32 *)pool_for_tests.map)[fr_index(&pool_for_tests, &b[i]) * 16] = 0;
		CHECK(memreg_pool_cache_free(pc, (void *)(unsigned long)b[i].addr) == 0);
	}
	/* 55 more frees: spills of 4 whenever it is full, which it is at the end. */
	CHECK(fr_count(&pool_for_tests, 0) + 8 == FR_BUFFERS);
	CHECK(memreg_pool_cache_flush(pc) == 0);
	CHECK(fr_count(&pool_for_tests, 0) == FR_BUFFERS);
	CHECK(fr_count(&pool_for_tests, 1) == FR_BUFFERS);
	/*
	 * Cached buffers whose chunk is being given back (above the limit) are
	 * never handed out: each goes back by POOL_FREE (EBADF ignored), and
	 * the ALLOC goes on with the next.
	 */
	CHECK(memreg_pool_cache_alloc(pc, 64, 0, 0, &one) == 0);
	CHECK(memreg_pool_cache_free(pc, (void *)(unsigned long)one.addr) == 0);
	r->head->limit = 0;
	CHECK(memreg_pool_cache_alloc(pc, 64, 0, 0, &one) == -EBADF);
	r->head->limit = FR_BUFFERS;
	/* A free of a buffer above the limit is the kernel's, not the cache's. */
	r->head->limit = 8;
	CHECK(memreg_pool_cache_free(pc, (char *)pool_for_tests.map + 9 * 64) == -EBADF);
	r->head->limit = FR_BUFFERS;
	/*
	 * Cached buffers whose chunk started going back meanwhile are given to
	 * the kernel (POOL_FREE) by a flush or a spill, never pushed on the ring.
	 */
	CHECK(memreg_pool_cache_flush(pc) == 0);
	n = fr_count(&pool_for_tests, 0);
	CHECK(n >= 4);
	CHECK(memreg_pool_cache_alloc(pc, 64, 0, 0, &one) == 0);
	CHECK(memreg_pool_cache_free(pc, (void *)(unsigned long)one.addr) == 0);
	CHECK(fr_count(&pool_for_tests, 0) + 4 == n);
	r->head->limit = 0;
	CHECK(memreg_pool_cache_flush(pc) == 0);
	CHECK(fr_count(&pool_for_tests, 0) + 4 == n);
	r->head->limit = FR_BUFFERS;
	memreg_pool_cache_destroy(pc);
	memreg_pool_exit(&pool_for_tests);
}

/* Threads with a cache each over one ring: no buffer held by two of them. */
static void test_cache_threads(unsigned int size)
{
	struct fr_thread t[FR_THREADS];
	pthread_t tid[FR_THREADS];
	unsigned int i;

	CHECK(fake_rings_init(&pool_for_tests) == 0);
	if (!pool_for_tests.rings)
		return;
	for (i = 0; i < FR_THREADS; i++) {
		t[i] = (struct fr_thread){ .pool = &pool_for_tests, .owner = i + 1, .cache = size };
		pthread_create(&tid[i], NULL, fr_thread_fn, &t[i]);
	}
	for (i = 0; i < FR_THREADS; i++) {
		pthread_join(tid[i], NULL);
		CHECK(t[i].twice == 0);
		CHECK(t[i].bad == 0);
		CHECK(t[i].done == FR_ROUNDS);
	}
	/* Every cache was destroyed, so flushed: every buffer is on the ring once. */
	CHECK(fr_count(&pool_for_tests, 0) == FR_BUFFERS);
	memreg_pool_exit(&pool_for_tests);
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
	test_ring_alloc_free();
	test_ring_bad_layout();
	test_ring_threads(6);
	test_ring_threads(FR_BUFFERS);
	test_ring_garbage();
	test_cache_alloc_free();
	test_cache_threads(4);
	test_cache_threads(32);
	printf("libmemreg host tests: %d checks, %d failed\n", checks, failures);
	return failures ? 1 : 0;
}
