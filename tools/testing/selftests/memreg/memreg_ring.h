/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A small user-space library for memreg's data path (see "The data path" in
 * include/uapi/linux/memreg.h): create and map a queue, post requests with
 * the lock-free protocol, ring the doorbell exactly when the rule says so,
 * reap completions, arm, and read the master ring.
 *
 * Posting is safe from any number of threads; reaping a queue, like reading
 * the master ring, is for one thread at a time. Functions return 0 or a
 * negative errno unless they say otherwise; nothing here prints.
 */
#ifndef MEMREG_RING_H
#define MEMREG_RING_H

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <linux/memreg.h>

#include "memreg_util.h"

/* ---- Sizes ---- */

static inline size_t mrq_page_round(size_t n)
{
	return (n + PAGE - 1) & ~(PAGE - 1);
}

/* The length QUEUE_CREATE reports for the submission ring's mapping. */
static inline size_t mrq_sq_bytes(__u32 sq_entries)
{
	return mrq_page_round(MEMREG_SQ_SLOTS_OFFSET +
			      (size_t)sq_entries * sizeof(struct memreg_sq_slot));
}

/* The length QUEUE_CREATE reports for the completion ring's mapping. */
static inline size_t mrq_cq_bytes(__u32 cq_entries)
{
	return mrq_page_round(MEMREG_CQ_ENTRIES_OFFSET +
			      (size_t)cq_entries * sizeof(struct memreg_cqe));
}

/* The length of the master ring's read-only mapping (header and entries). */
static inline size_t mr_master_bytes(void)
{
	return mrq_page_round(MEMREG_MASTER_ENTRIES_OFFSET +
			      MEMREG_MASTER_ENTRIES * sizeof(__u32));
}

/* ---- Time and waiting ---- */

static inline __u64 mrq_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000ULL + ts.tv_nsec / 1000;
}

/* One step of a wait loop: yield a few times, then sleep 50 us a step. */
static inline void mrq_relax(unsigned int *spins)
{
	if (++*spins < 64)
		sched_yield();
	else
		usleep(50);
}

/* ---- The ioctls ---- */

/* QUEUE_CREATE; `c` gets the result. */
static inline int mrq_create(int fd, __u32 sq_entries, __u32 cq_entries, int efd,
			     struct memreg_queue_create *c)
{
	memset(c, 0, sizeof(*c));
	c->sq_entries = sq_entries;
	c->cq_entries = cq_entries;
	c->eventfd = efd;
	return ioctl(fd, MEMREG_IOC_QUEUE_CREATE, c) ? -errno : 0;
}

static inline int mr_doorbell(int fd, __u32 queue)
{
	struct memreg_doorbell d = { .queue = queue };

	return ioctl(fd, MEMREG_IOC_DOORBELL, &d) ? -errno : 0;
}

static inline int mr_queue_stats(int fd, struct memreg_queue_stats *s)
{
	memset(s, 0, sizeof(*s));
	return ioctl(fd, MEMREG_IOC_QUEUE_STATS, s) ? -errno : 0;
}

/* ---- A mapped queue ---- */

struct mrq {
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
	__u64 doorbells;			/* DOORBELL calls made through this */
};

/* Maps the queue QUEUE_CREATE described in `c`. */
static inline int mrq_map(int fd, const struct memreg_queue_create *c, struct mrq *q)
{
	void *p;
	int ret;

	memset(q, 0, sizeof(*q));
	q->fd = fd;
	q->index = c->queue;
	q->sq_entries = c->sq_entries;
	q->cq_entries = c->cq_entries;
	q->sq_bytes = c->sq_bytes;
	q->cq_bytes = c->cq_bytes;
	p = mmap(NULL, c->sq_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		 MEMREG_MMAP_SQ(c->queue));
	if (p == MAP_FAILED)
		return -errno;
	q->user = p;
	q->slots = (struct memreg_sq_slot *)((char *)p + MEMREG_SQ_SLOTS_OFFSET);
	p = mmap(NULL, c->cq_bytes, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_CQ(c->queue));
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

/* QUEUE_CREATE, then maps the new queue. */
static inline int mrq_open(int fd, __u32 sq_entries, __u32 cq_entries, int efd, struct mrq *q)
{
	struct memreg_queue_create c;
	int ret = mrq_create(fd, sq_entries, cq_entries, efd, &c);

	if (ret) {
		memset(q, 0, sizeof(*q));
		return ret;
	}
	return mrq_map(fd, &c, q);
}

static inline void mrq_unmap(struct mrq *q)
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

/* DOORBELL for this queue, counted in q->doorbells. */
static inline int mrq_doorbell(struct mrq *q)
{
	__atomic_fetch_add(&q->doorbells, 1, __ATOMIC_RELAXED);
	return mr_doorbell(q->fd, q->index);
}

static inline __u64 mrq_doorbells(const struct mrq *q)
{
	return __atomic_load_n(&q->doorbells, __ATOMIC_RELAXED);
}

/* The kernel's words, read as the protocol says. */
static inline __u32 mrq_flags(const struct mrq *q)
{
	return __atomic_load_n(&q->ring->flags, __ATOMIC_ACQUIRE);
}

static inline __u64 mrq_sq_head(const struct mrq *q)
{
	return __atomic_load_n(&q->ring->sq_head, __ATOMIC_ACQUIRE);
}

static inline __u32 mrq_cq_tail(const struct mrq *q)
{
	return __atomic_load_n(&q->ring->cq_tail, __ATOMIC_ACQUIRE);
}

/* User space's words. */
static inline __u32 mrq_cq_head(const struct mrq *q)
{
	return __atomic_load_n(&q->user->cq_head, __ATOMIC_RELAXED);
}

static inline void mrq_set_cq_head(struct mrq *q, __u32 head)
{
	__atomic_store_n(&q->user->cq_head, head, __ATOMIC_RELEASE);
}

static inline __u64 mrq_seq(const struct mrq *q, __u64 i)
{
	return __atomic_load_n(&q->slots[i & (q->sq_entries - 1)].seq, __ATOMIC_ACQUIRE);
}

/* ---- Requests ---- */

static inline struct memreg_sqe mr_sqe_nop(__u64 user_data)
{
	return (struct memreg_sqe){ .opcode = MEMREG_OP_NOP, .user_data = user_data };
}

static inline struct memreg_sqe mr_sqe_fence(__u64 user_data)
{
	return (struct memreg_sqe){ .opcode = MEMREG_OP_FENCE, .user_data = user_data };
}

static inline struct memreg_sqe mr_sqe_deregister(__u64 user_data, __u64 key)
{
	return (struct memreg_sqe){ .opcode = MEMREG_OP_DEREGISTER, .user_data = user_data,
				    .key = key };
}

/* COPY of `length` bytes from (src_key, src_offset) to (key, offset). */
static inline struct memreg_sqe mr_sqe_copy(__u64 user_data, __u64 key, __u64 offset,
					    __u64 src_key, __u64 src_offset, __u64 length)
{
	return (struct memreg_sqe){ .opcode = MEMREG_OP_COPY, .user_data = user_data,
				    .key = key, .offset = offset, .src_key = src_key,
				    .src_offset = src_offset, .length = length };
}

/*
 * One-sided WRITE of `length` bytes from the local (lkey, loffset) to the
 * peer's (rkey, roffset).
 */
static inline struct memreg_sqe mr_sqe_write(__u64 user_data, __u32 peer, __u64 rkey,
					     __u64 roffset, __u64 lkey, __u64 loffset,
					     __u64 length)
{
	return (struct memreg_sqe){ .opcode = MEMREG_OP_WRITE, .user_data = user_data,
				    .peer = peer, .key = rkey, .offset = roffset,
				    .src_key = lkey, .src_offset = loffset, .length = length };
}

/*
 * One-sided READ of `length` bytes from the peer's (rkey, roffset) to the
 * local (lkey, loffset).
 */
static inline struct memreg_sqe mr_sqe_read(__u64 user_data, __u32 peer, __u64 lkey,
					    __u64 loffset, __u64 rkey, __u64 roffset,
					    __u64 length)
{
	return (struct memreg_sqe){ .opcode = MEMREG_OP_READ, .user_data = user_data,
				    .peer = peer, .key = lkey, .offset = loffset,
				    .src_key = rkey, .src_offset = roffset, .length = length };
}

/* SEND of `length` bytes at (lkey, offset), without immediate data. */
static inline struct memreg_sqe mr_sqe_send(__u64 user_data, __u64 lkey, __u64 offset,
					    __u64 length)
{
	return (struct memreg_sqe){ .opcode = MEMREG_OP_SEND, .user_data = user_data,
				    .src_key = lkey, .src_offset = offset, .length = length };
}

/* SEND with immediate data `imm`. */
static inline struct memreg_sqe mr_sqe_send_imm(__u64 user_data, __u64 lkey, __u64 offset,
						__u64 length, __u64 imm)
{
	struct memreg_sqe s = mr_sqe_send(user_data, lkey, offset, length);

	s.flags = MEMREG_SQE_IMM;
	s.key = imm;
	return s;
}

/* RECV into the buffer of `length` bytes at (lkey, offset). */
static inline struct memreg_sqe mr_sqe_recv(__u64 user_data, __u64 lkey, __u64 offset,
					    __u64 length)
{
	return (struct memreg_sqe){ .opcode = MEMREG_OP_RECV, .user_data = user_data,
				    .key = lkey, .offset = offset, .length = length };
}

/* ---- Peers ---- */

/* Attaches the memreg descriptor `peer_fd` to `fd`; the handle in *peer (0 on failure). */
static inline int mr_peer_attach(int fd, int peer_fd, __u32 *peer)
{
	struct memreg_peer_attach a = { .fd = peer_fd };

	*peer = 0;
	if (ioctl(fd, MEMREG_IOC_PEER_ATTACH, &a))
		return -errno;
	*peer = a.peer;
	return 0;
}

static inline int mr_peer_detach(int fd, __u32 peer)
{
	struct memreg_peer_detach d = { .peer = peer };

	return ioctl(fd, MEMREG_IOC_PEER_DETACH, &d) ? -errno : 0;
}

static inline int mr_peer_revoke(int fd)
{
	return ioctl(fd, MEMREG_IOC_PEER_REVOKE) ? -errno : 0;
}

/* SENDs on `queue` of `fd` go to `remote_queue` of the peer `peer`. */
static inline int mr_queue_connect(int fd, __u32 queue, __u32 peer, __u32 remote_queue,
				   __u32 rnr_timeout_ms)
{
	struct memreg_queue_connect c = { .queue = queue, .peer = peer,
					  .remote_queue = remote_queue,
					  .rnr_timeout_ms = rnr_timeout_ms };

	return ioctl(fd, MEMREG_IOC_QUEUE_CONNECT, &c) ? -errno : 0;
}

/* Sends descriptor `fd` over the unix socket `sock` (SCM_RIGHTS). */
static inline int mr_send_fd(int sock, int fd)
{
	char byte = 'F';
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			      .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *c;

	memset(&u, 0, sizeof(u));
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(sock, &msg, 0) == 1 ? 0 : -errno;
}

/* Receives a descriptor sent by mr_send_fd(); returns it or a negative errno. */
static inline int mr_recv_fd(int sock)
{
	char byte;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			      .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *c;
	int fd;

	if (recvmsg(sock, &msg, 0) != 1)
		return -errno ? -errno : -EIO;
	c = CMSG_FIRSTHDR(&msg);
	if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
	    c->cmsg_len != CMSG_LEN(sizeof(int)))
		return -EPROTO;
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

/* ---- Posting ---- */

/* mrq_try_post() flag: publish, but never ring the doorbell. */
#define MRQ_NO_DOORBELL		1U

/* Claims that find a slot of a later lap while insert stays put (garbage). */
#define MRQ_MAX_RELOADS		65536

/*
 * Posts one request without waiting: 0 when posted (*pos, if not NULL, gets
 * its position), -EAGAIN when the ring is full, -EBUSY when the ring's words
 * make no sense (only garbage written into the mapping does that), or the
 * error of the doorbell it rang after publishing (the request is posted).
 *
 * This is the documented protocol, with one addition: a ring of one slot is
 * also full while sq_head is not pos (the seq cannot say so; see above).
 */
static inline int mrq_try_post(struct mrq *q, const struct memreg_sqe *sqe, unsigned int flags,
			       __u64 *posp)
{
	__u64 mask = q->sq_entries - 1;
	__u64 pos = __atomic_load_n(&q->user->insert, __ATOMIC_RELAXED);
	struct memreg_sq_slot *slot;
	unsigned int reloads = 0;

	for (;;) {
		__s64 diff;

		slot = &q->slots[pos & mask];
		diff = (__s64)(__atomic_load_n(&slot->seq, __ATOMIC_ACQUIRE) - pos);
		if (diff == 0) {
			/* Free for this lap: claim it (on failure pos is what we found). */
			if (__atomic_compare_exchange_n(&q->user->insert, &pos, pos + 1, false,
							__ATOMIC_RELAXED, __ATOMIC_RELAXED))
				break;
		} else if (diff < 0) {
			/* Not yet freed by the worker: full. */
			return -EAGAIN;
		} else {
			/* Another poster took it. */
			__u64 now = __atomic_load_n(&q->user->insert, __ATOMIC_RELAXED);

			if (now == pos && ++reloads > MRQ_MAX_RELOADS)
				return -EBUSY;
			pos = now;
		}
	}
	memcpy(&slot->sqe, sqe, sizeof(*sqe));
	__atomic_store_n(&slot->seq, pos + 1, __ATOMIC_RELEASE);
	if (posp)
		*posp = pos;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (flags & MRQ_NO_DOORBELL)
		return 0;
	if ((__atomic_load_n(&q->ring->flags, __ATOMIC_RELAXED) & MEMREG_QUEUE_NEED_WAKEUP) &&
	    __atomic_load_n(&q->ring->sq_head, __ATOMIC_RELAXED) == pos)
		return mrq_doorbell(q);
	return 0;
}

/* Posts one request, waiting up to `timeout_ms` for room; -ETIMEDOUT then. */
static inline int mrq_post(struct mrq *q, const struct memreg_sqe *sqe, int timeout_ms)
{
	__u64 deadline = mrq_now_us() + (__u64)timeout_ms * 1000;
	unsigned int spins = 0;
	int ret;

	for (;;) {
		ret = mrq_try_post(q, sqe, 0, NULL);
		if (ret != -EAGAIN && ret != -EBUSY)
			return ret;
		if (mrq_now_us() > deadline)
			return -ETIMEDOUT;
		mrq_relax(&spins);
	}
}

/* ---- Reaping (one thread per queue) ---- */

/* Completions written and not yet consumed (garbage if the head is). */
static inline __u32 mrq_ready(const struct mrq *q)
{
	return mrq_cq_tail(q) - mrq_cq_head(q);
}

/*
 * Consumes up to `max` completions into `out` (may be NULL), moves the head,
 * and rings the doorbell when the worker stopped for a full ring. Returns
 * how many were consumed (0 also when the head makes no sense).
 */
static inline unsigned int mrq_reap(struct mrq *q, struct memreg_cqe *out, unsigned int max)
{
	__u32 head = mrq_cq_head(q), tail = mrq_cq_tail(q);
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
	mrq_set_cq_head(q, head);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if (mrq_flags(q) & MEMREG_QUEUE_CQ_FULL)
		mrq_doorbell(q);
	return n;
}

/* Reaps until `n` completions are in `out` or `timeout_ms` passed; returns how many. */
static inline unsigned int mrq_wait(struct mrq *q, struct memreg_cqe *out, unsigned int n,
				    int timeout_ms)
{
	__u64 deadline = mrq_now_us() + (__u64)timeout_ms * 1000;
	unsigned int got = 0, spins = 0;

	while (got < n) {
		unsigned int k = mrq_reap(q, out ? out + got : NULL, n - got);

		got += k;
		if (k) {
			spins = 0;
			continue;
		}
		if (mrq_now_us() > deadline)
			break;
		mrq_relax(&spins);
	}
	return got;
}

/* Posts one request and reaps its completion (nothing else may be in flight). */
static inline int mrq_run(struct mrq *q, const struct memreg_sqe *sqe, struct memreg_cqe *cqe)
{
	int ret = mrq_post(q, sqe, 5000);

	if (ret)
		return ret;
	return mrq_wait(q, cqe, 1, 5000) == 1 ? 0 : -ETIMEDOUT;
}

/* Waits until cq_tail reaches `tail` (without consuming); 0 or -ETIMEDOUT. */
static inline int mrq_wait_tail(const struct mrq *q, __u32 tail, int timeout_ms)
{
	__u64 deadline = mrq_now_us() + (__u64)timeout_ms * 1000;
	unsigned int spins = 0;

	while ((__s32)(mrq_cq_tail(q) - tail) < 0) {
		if (mrq_now_us() > deadline)
			return -ETIMEDOUT;
		mrq_relax(&spins);
	}
	return 0;
}

/* Waits until (flags & mask) == want; 0 or -ETIMEDOUT. */
static inline int mrq_wait_flags(const struct mrq *q, __u32 mask, __u32 want, int timeout_ms)
{
	__u64 deadline = mrq_now_us() + (__u64)timeout_ms * 1000;
	unsigned int spins = 0;

	while ((mrq_flags(q) & mask) != want) {
		if (mrq_now_us() > deadline)
			return -ETIMEDOUT;
		mrq_relax(&spins);
	}
	return 0;
}

/* Asks for one wake-up on the next completion of this queue. */
static inline void mrq_arm(struct mrq *q)
{
	__atomic_store_n(&q->user->cq_arm, 1, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static inline __u32 mrq_armed(const struct mrq *q)
{
	return __atomic_load_n(&q->user->cq_arm, __ATOMIC_ACQUIRE);
}

/* ---- The master ring (one reader) ---- */

struct mr_master {
	const struct memreg_master_ring *ring;	/* read-only, mr_master_bytes() */
	const __u32 *entries;
	struct memreg_master_user *user;	/* read-write, one page */
};

static inline int mr_master_map(int fd, struct mr_master *m)
{
	void *p;
	int ret;

	memset(m, 0, sizeof(*m));
	p = mmap(NULL, mr_master_bytes(), PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_MASTER);
	if (p == MAP_FAILED)
		return -errno;
	m->ring = p;
	m->entries = (const __u32 *)((const char *)p + MEMREG_MASTER_ENTRIES_OFFSET);
	p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, MEMREG_MMAP_MASTER_USER);
	if (p == MAP_FAILED) {
		ret = -errno;
		munmap((void *)m->ring, mr_master_bytes());
		memset(m, 0, sizeof(*m));
		return ret;
	}
	m->user = p;
	return 0;
}

static inline void mr_master_unmap(struct mr_master *m)
{
	if (m->ring)
		munmap((void *)m->ring, mr_master_bytes());
	if (m->user)
		munmap(m->user, PAGE);
	memset(m, 0, sizeof(*m));
}

static inline __u32 mr_master_tail(const struct mr_master *m)
{
	return __atomic_load_n(&m->ring->tail, __ATOMIC_ACQUIRE);
}

static inline __u32 mr_master_head(const struct mr_master *m)
{
	return __atomic_load_n(&m->user->head, __ATOMIC_RELAXED);
}

static inline void mr_master_set_head(struct mr_master *m, __u32 head)
{
	__atomic_store_n(&m->user->head, head, __ATOMIC_RELEASE);
}

/* Entry number `i`, counted from the first ever written. */
static inline __u32 mr_master_at(const struct mr_master *m, __u32 i)
{
	return m->entries[i & (MEMREG_MASTER_ENTRIES - 1)];
}

/* Consumes up to `max` queue indexes into `out` (may be NULL); returns how many. */
static inline unsigned int mr_master_read(struct mr_master *m, __u32 *out, unsigned int max)
{
	__u32 head = mr_master_head(m), tail = mr_master_tail(m);
	unsigned int n = 0;

	if (tail - head > MEMREG_MASTER_ENTRIES)
		return 0;
	while (head != tail && n < max) {
		if (out)
			out[n] = mr_master_at(m, head);
		head++;
		n++;
	}
	if (n)
		mr_master_set_head(m, head);
	return n;
}

static inline void mr_master_arm(struct mr_master *m)
{
	__atomic_store_n(&m->user->arm, 1, __ATOMIC_RELEASE);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static inline __u32 mr_master_armed(const struct mr_master *m)
{
	return __atomic_load_n(&m->user->arm, __ATOMIC_ACQUIRE);
}

#endif /* MEMREG_RING_H */
