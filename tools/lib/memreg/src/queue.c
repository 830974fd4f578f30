// SPDX-License-Identifier: (LGPL-2.1 OR MIT)
/*
 * Queues: the submission ring's multi-producer protocol, the doorbell rule,
 * completions, arming and waiting, and the master ring. The protocol is
 * the one include/uapi/linux/memreg.h describes under "The data path"; the
 * words the kernel writes are read once and checked before they are used.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "libmemreg.h"
#include "internal.h"

/* Claims that find a slot of a later lap while insert stays put (garbage). */
#define MAX_RELOADS	65536

unsigned long long memreg__now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000ULL + ts.tv_nsec / 1000;
}

void memreg__relax(unsigned int *spins)
{
	if (++*spins < 64)
		sched_yield();
	else
		usleep(50);
}

size_t memreg_sq_bytes(__u32 sq_entries)
{
	return memreg__page_round(MEMREG_SQ_SLOTS_OFFSET +
				  (size_t)sq_entries * sizeof(struct memreg_sq_slot));
}

size_t memreg_cq_bytes(__u32 cq_entries)
{
	return memreg__page_round(MEMREG_CQ_ENTRIES_OFFSET +
				  (size_t)cq_entries * sizeof(struct memreg_cqe));
}

int memreg_queue_create(int fd, __u32 sq_entries, __u32 cq_entries, int eventfd,
			struct memreg_queue_create *create)
{
	memset(create, 0, sizeof(*create));
	create->sq_entries = sq_entries;
	create->cq_entries = cq_entries;
	create->eventfd = eventfd;
	return memreg__ioctl(fd, MEMREG_IOC_QUEUE_CREATE, create);
}

int memreg_queue_mmap(int fd, const struct memreg_queue_create *create,
		      struct memreg_queue *q)
{
	void *p;
	int ret;

	memset(q, 0, sizeof(*q));
	q->fd = fd;
	q->eventfd = create->eventfd;
	q->index = create->queue;
	q->sq_entries = create->sq_entries;
	q->cq_entries = create->cq_entries;
	q->sq_bytes = create->sq_bytes;
	q->cq_bytes = create->cq_bytes;
	p = mmap(NULL, create->sq_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		 MEMREG_MMAP_SQ(create->queue));
	if (p == MAP_FAILED)
		return -errno;
	q->user = p;
	q->slots = (struct memreg_sq_slot *)((char *)p + MEMREG_SQ_SLOTS_OFFSET);
	p = mmap(NULL, create->cq_bytes, PROT_READ, MAP_SHARED, fd,
		 MEMREG_MMAP_CQ(create->queue));
	if (p == MAP_FAILED) {
		ret = -errno;
		munmap(q->user, q->sq_bytes);
		q->user = NULL;
		q->slots = NULL;
		return ret;
	}
	q->ring = p;
	q->cqes = (const struct memreg_cqe *)((const char *)p + MEMREG_CQ_ENTRIES_OFFSET);
	return 0;
}

int memreg_queue_init(int fd, __u32 sq_entries, __u32 cq_entries, int eventfd,
		      struct memreg_queue *q)
{
	struct memreg_queue_create c;
	int ret = memreg_queue_create(fd, sq_entries, cq_entries, eventfd, &c);

	if (ret) {
		memset(q, 0, sizeof(*q));
		return ret;
	}
	return memreg_queue_mmap(fd, &c, q);
}

void memreg_queue_exit(struct memreg_queue *q)
{
	if (q->user)
		munmap(q->user, q->sq_bytes);
	if (q->ring)
		munmap((void *)q->ring, q->cq_bytes);
	q->user = NULL;
	q->slots = NULL;
	q->ring = NULL;
	q->cqes = NULL;
}

int memreg_doorbell(int fd, __u32 queue)
{
	struct memreg_doorbell d = { .queue = queue };

	return memreg__ioctl(fd, MEMREG_IOC_DOORBELL, &d);
}

int memreg_queue_doorbell(struct memreg_queue *q)
{
	__atomic_fetch_add(&q->doorbells, 1, __ATOMIC_RELAXED);
	return memreg_doorbell(q->fd, q->index);
}

int memreg_queue_stats(int fd, struct memreg_queue_stats *stats)
{
	memset(stats, 0, sizeof(*stats));
	return memreg__ioctl(fd, MEMREG_IOC_QUEUE_STATS, stats);
}

/*
 * Claims a slot: 0 with *slotp and *posp, -EAGAIN when the ring is full,
 * -EBUSY when its words make no sense (only garbage written into the
 * mapping does that).
 */
static int claim(struct memreg_queue *q, struct memreg_sq_slot **slotp, __u64 *posp)
{
	__u64 mask = q->sq_entries - 1;
	__u64 pos = __atomic_load_n(&q->user->insert, __ATOMIC_RELAXED);
	unsigned int reloads = 0;

	for (;;) {
		struct memreg_sq_slot *slot = &q->slots[pos & mask];
		__s64 diff = (__s64)(__atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE) - pos);

		__u64 now;

		if (diff == 0) {
			/* Free for this lap: claim it (on failure pos is what we found). */
			if (__atomic_compare_exchange_n(&q->user->insert, &pos, pos + 1,
							false, __ATOMIC_RELAXED,
							__ATOMIC_RELAXED)) {
				*slotp = slot;
				*posp = pos;
				return 0;
			}
			continue;
		}
		/* Not yet freed by the worker: full. */
		if (diff < 0)
			return -EAGAIN;
		/* Another poster took it. */
		now = __atomic_load_n(&q->user->insert, __ATOMIC_RELAXED);
		if (now == pos && ++reloads > MAX_RELOADS)
			return -EBUSY;
		pos = now;
	}
}

/* The doorbell rule, after a full barrier: rings when the worker sleeps at one of ours. */
static int doorbell_rule(struct memreg_queue *q, const __u64 *pos, unsigned int nr)
{
	__u64 head;
	unsigned int i;

	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (!(__atomic_load_n(&q->ring->flags, __ATOMIC_RELAXED) & MEMREG_QUEUE_NEED_WAKEUP))
		return 0;
	head = __atomic_load_n(&q->ring->sq_head, __ATOMIC_RELAXED);
	for (i = 0; i < nr; i++)
		if (head == pos[i])
			return memreg_queue_doorbell(q);
	return 0;
}

struct memreg_sqe *memreg_get_sqe(struct memreg_queue *q)
{
	struct memreg_sq_slot *slot;
	__u64 pos;

	if (claim(q, &slot, &pos))
		return NULL;
	return &slot->sqe;
}

/*
 * The position of a request memreg_get_sqe() claimed: its slot's seq, which
 * nobody else writes until it is published. -EINVAL for a pointer that is
 * not a claimed slot of @q.
 */
static int claimed_pos(struct memreg_queue *q, struct memreg_sqe *sqe, __u64 *pos)
{
	uintptr_t base = (uintptr_t)q->slots, at = (uintptr_t)sqe;
	size_t off = offsetof(struct memreg_sq_slot, sqe);
	__u64 i, seq;

	if (at < base + off || (at - base - off) % sizeof(struct memreg_sq_slot))
		return -EINVAL;
	i = (at - base - off) / sizeof(struct memreg_sq_slot);
	if (i >= q->sq_entries)
		return -EINVAL;
	seq = __atomic_load_n(&q->slots[i].seq, __ATOMIC_RELAXED);
	if ((seq & (q->sq_entries - 1)) != i)
		return -EINVAL;
	/*
	 * A claimed slot has seq == pos and insert past it; a free slot
	 * (never claimed, or consumed) has insert at or before its seq.
	 */
	if ((__s64)(__atomic_load_n(&q->user->insert, __ATOMIC_RELAXED) - seq) <= 0)
		return -EINVAL;
	*pos = seq;
	return 0;
}

int memreg_submit_batch(struct memreg_queue *q, struct memreg_sqe **sqes,
			unsigned int nr)
{
	__u64 pos[64];
	unsigned int i, done = 0;
	int ret;

	while (done < nr) {
		unsigned int n = nr - done < 64 ? nr - done : 64;

		for (i = 0; i < n; i++) {
			ret = claimed_pos(q, sqes[done + i], &pos[i]);
			if (ret)
				return ret;
		}
		for (i = 0; i < n; i++) {
			struct memreg_sq_slot *slot = (struct memreg_sq_slot *)
				((char *)sqes[done + i] - offsetof(struct memreg_sq_slot, sqe));

			__atomic_store_n(&slot->seq, pos[i] + 1, __ATOMIC_RELEASE);
		}
		ret = doorbell_rule(q, pos, n);
		if (ret)
			return ret;
		done += n;
	}
	return 0;
}

int memreg_submit(struct memreg_queue *q, struct memreg_sqe *sqe)
{
	return memreg_submit_batch(q, &sqe, 1);
}

int memreg_queue_post(struct memreg_queue *q, const struct memreg_sqe *sqe,
		      unsigned int flags, __u64 *posp)
{
	struct memreg_sq_slot *slot;
	__u64 pos;
	int ret = claim(q, &slot, &pos);

	if (ret)
		return ret;
	memcpy(&slot->sqe, sqe, sizeof(*sqe));
	__atomic_store_n(&slot->seq, pos + 1, __ATOMIC_RELEASE);
	if (posp)
		*posp = pos;
	if (flags & MEMREG_POST_NO_DOORBELL) {
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		return 0;
	}
	return doorbell_rule(q, &pos, 1);
}

/* The deadline of a wait of @timeout_ms (negative: none). */
static unsigned long long deadline_of(int timeout_ms)
{
	if (timeout_ms < 0)
		return ~0ULL;
	return memreg__now_us() + (unsigned long long)timeout_ms * 1000;
}

int memreg_queue_post_wait(struct memreg_queue *q, const struct memreg_sqe *sqe,
			   int timeout_ms)
{
	unsigned long long deadline = deadline_of(timeout_ms);
	unsigned int spins = 0;
	int ret;

	for (;;) {
		ret = memreg_queue_post(q, sqe, 0, NULL);
		if (ret != -EAGAIN && ret != -EBUSY)
			return ret;
		if (memreg__now_us() > deadline)
			return -ETIMEDOUT;
		memreg__relax(&spins);
	}
}

unsigned int memreg_cq_ready(const struct memreg_queue *q)
{
	__u32 d = memreg_queue_cq_tail(q) - memreg_queue_cq_head(q);

	return d <= q->cq_entries ? d : 0;
}

int memreg_peek_cqe(struct memreg_queue *q, const struct memreg_cqe **cqe)
{
	__u32 head = memreg_queue_cq_head(q);

	if (!memreg__cq_valid(q, head))
		return -EAGAIN;
	*cqe = &q->cqes[head & (q->cq_entries - 1)];
	return 0;
}

void memreg_cq_advance(struct memreg_queue *q, unsigned int nr)
{
	__u32 ready = memreg_cq_ready(q);

	if (!nr)
		return;
	if (nr > ready)
		nr = ready;
	__atomic_store_n(&q->user->cq_head, memreg_queue_cq_head(q) + nr,
			 __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (memreg_queue_flags(q) & MEMREG_QUEUE_CQ_FULL)
		memreg_queue_doorbell(q);
}

void memreg_cqe_seen(struct memreg_queue *q, const struct memreg_cqe *cqe)
{
	(void)cqe;
	memreg_cq_advance(q, 1);
}

unsigned int memreg_reap_cqes(struct memreg_queue *q, struct memreg_cqe *out,
			      unsigned int max)
{
	__u32 head = memreg_queue_cq_head(q), tail = memreg_queue_cq_tail(q);
	unsigned int n = 0;

	if (tail - head > q->cq_entries)
		return 0;
	while (head != tail && n < max) {
		if (out)
			out[n] = q->cqes[head & (q->cq_entries - 1)];
		head++;
		n++;
	}
	if (!n)
		return 0;
	__atomic_store_n(&q->user->cq_head, head, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (memreg_queue_flags(q) & MEMREG_QUEUE_CQ_FULL)
		memreg_queue_doorbell(q);
	return n;
}

unsigned int memreg_wait_cqes(struct memreg_queue *q, struct memreg_cqe *out,
			      unsigned int nr, int timeout_ms)
{
	unsigned long long deadline = deadline_of(timeout_ms);
	unsigned int got = 0, spins = 0;

	while (got < nr) {
		unsigned int k = memreg_reap_cqes(q, out ? out + got : NULL, nr - got);

		got += k;
		if (k) {
			spins = 0;
			continue;
		}
		if (memreg__now_us() > deadline)
			break;
		memreg__relax(&spins);
	}
	return got;
}

int memreg_queue_run(struct memreg_queue *q, const struct memreg_sqe *sqe,
		     struct memreg_cqe *cqe)
{
	int ret = memreg_queue_post_wait(q, sqe, 5000);

	if (ret)
		return ret;
	return memreg_wait_cqes(q, cqe, 1, 5000) == 1 ? 0 : -ETIMEDOUT;
}

void memreg_queue_arm(struct memreg_queue *q)
{
	__atomic_store_n(&q->user->cq_arm, 1, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

int memreg_wait_cqe(struct memreg_queue *q, const struct memreg_cqe **cqe,
		    int timeout_ms)
{
	unsigned long long deadline = deadline_of(timeout_ms);
	struct pollfd pfd;

	for (;;) {
		int ret, left = -1;

		if (!memreg_peek_cqe(q, cqe))
			return 0;
		memreg_queue_arm(q);
		if (!memreg_peek_cqe(q, cqe))
			return 0;
		if (timeout_ms >= 0) {
			unsigned long long now = memreg__now_us();

			if (now >= deadline)
				return -ETIMEDOUT;
			left = (int)((deadline - now + 999) / 1000);
		}
		pfd.fd = q->eventfd >= 0 ? q->eventfd : q->fd;
		pfd.events = POLLIN;
		pfd.revents = 0;
		ret = poll(&pfd, 1, left);
		if (ret < 0)
			return -errno;
		if (ret && q->eventfd >= 0) {
			__u64 v;

			/* Resets the counter; a non-blocking eventfd may read nothing. */
			if (read(q->eventfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
				return -errno;
		}
		if (!ret && !memreg_peek_cqe(q, cqe))
			return 0;
		/*
		 * The file is also readable for other queues' completions and
		 * for events: wait out what is left without spinning hot.
		 */
		if (ret && q->eventfd < 0 && memreg_peek_cqe(q, cqe)) {
			unsigned int spins = 64;

			memreg__relax(&spins);
		}
	}
}

/* ---- The master ring ---- */

size_t memreg_master_bytes(void)
{
	return memreg__page_round(MEMREG_MASTER_ENTRIES_OFFSET +
				  MEMREG_MASTER_ENTRIES * sizeof(__u32));
}

int memreg_master_init(int fd, struct memreg_master *m)
{
	void *p;
	int ret;

	memset(m, 0, sizeof(*m));
	p = mmap(NULL, memreg_master_bytes(), PROT_READ, MAP_SHARED, fd,
		 MEMREG_MMAP_MASTER);
	if (p == MAP_FAILED)
		return -errno;
	m->ring = p;
	m->entries = (const __u32 *)((const char *)p + MEMREG_MASTER_ENTRIES_OFFSET);
	p = mmap(NULL, memreg__page_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		 MEMREG_MMAP_MASTER_USER);
	if (p == MAP_FAILED) {
		ret = -errno;
		munmap((void *)m->ring, memreg_master_bytes());
		memset(m, 0, sizeof(*m));
		return ret;
	}
	m->user = p;
	return 0;
}

void memreg_master_exit(struct memreg_master *m)
{
	if (m->ring)
		munmap((void *)m->ring, memreg_master_bytes());
	if (m->user)
		munmap(m->user, memreg__page_size());
	memset(m, 0, sizeof(*m));
}

unsigned int memreg_master_read(struct memreg_master *m, __u32 *out, unsigned int max)
{
	__u32 head = __atomic_load_n(&m->user->head, __ATOMIC_RELAXED);
	__u32 tail = __atomic_load_n(&m->ring->tail, __ATOMIC_ACQUIRE);
	unsigned int n = 0;

	if (tail - head > MEMREG_MASTER_ENTRIES)
		return 0;
	while (head != tail && n < max) {
		if (out)
			out[n] = m->entries[head & (MEMREG_MASTER_ENTRIES - 1)];
		head++;
		n++;
	}
	if (n)
		__atomic_store_n(&m->user->head, head, __ATOMIC_RELEASE);
	return n;
}

void memreg_master_arm(struct memreg_master *m)
{
	__atomic_store_n(&m->user->arm, 1, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}
