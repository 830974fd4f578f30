// SPDX-License-Identifier: GPL-2.0
/*
 * memreg demo, what `make run` shows: a program registers a buffer once,
 * registers part of it again and is served from the cache, moves data
 * through the registration, then unmaps the buffer and the registration is
 * gone by itself. Then, each in a context of its own:
 * - parking: the last DEREGISTER keeps a registration for the next
 *   REGISTER, which revives it without pinning anything; FLUSH ends it;
 * - suspension: splitting the huge page under a registration suspends it,
 *   and it resumes because its pages are still in place;
 * - state words and the event ring: how a program learns, without a system
 *   call, that a registration ended;
 * - the data path: a COPY posted through a queue's shared rings with no
 *   lock, executed by the context's worker, and its completion;
 * - peers: a second process passes its /dev/memreg descriptor over a unix
 *   socket; this one attaches it, WRITEs into the other's registration by
 *   its remote key and SENDs it a message into a posted RECV; the other
 *   process revokes the grant and the next WRITE is refused;
 * - buffer pools: a pool of two size classes mapped from the device, a
 *   buffer allocated and used through its key, and the boundary that moved
 *   up behind it.
 * Exits 0 only if every step behaved as expected.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libmemreg.h>

#include "memreg_util.h"

#define BUF_PAGES	16
#define BUF_LEN		(BUF_PAGES * PAGE)

#ifndef ARRAY_SIZE
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
#endif

static int failures;

/* Prints one step: "ok" when it behaved as expected, "FAILED" otherwise. */
static int step(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int step(int ok, const char *fmt, ...)
{
	va_list ap;

	printf("%s ", ok ? "  ok    " : "  FAILED");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	if (!ok)
		failures++;
	return ok;
}

/* Prints a step that could not be shown here; not a failure. */
static void skipped(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void skipped(const char *fmt, ...)
{
	va_list ap;

	printf("  skip   ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static const char *const causes[MEMREG_INVAL_NR_CAUSES] = {
	[MEMREG_INVAL_UNMAP] = "unmap",
	[MEMREG_INVAL_CLEAR] = "clear",
	[MEMREG_INVAL_PROTECTION_VMA] = "mprotect",
	[MEMREG_INVAL_PROTECTION_PAGE] = "cow",
	[MEMREG_INVAL_SOFT_DIRTY] = "soft-dirty",
	[MEMREG_INVAL_RELEASE] = "exit",
	[MEMREG_INVAL_MIGRATE] = "migrate",
	[MEMREG_INVAL_EXCLUSIVE] = "exclusive",
	[MEMREG_INVAL_OTHER] = "other",
};

static const char *const event_kinds[] = {
	[MEMREG_EVENT_SUSPENDED] = "SUSPENDED",
	[MEMREG_EVENT_ENDED] = "ENDED",
	[MEMREG_EVENT_EVICTED] = "EVICTED",
};

/* "VALID|PARKED" and the like: the names of the bits set in `v`, into `out`. */
static const char *bit_names(char *out, size_t size, __u32 v, const char *const names[],
			     size_t n)
{
	size_t i, len = 0;

	snprintf(out, size, "none");
	for (i = 0; i < n && len < size; i++)
		if (v & (1U << i))
			len += snprintf(out + len, size - len, "%s%s", len ? "|" : "", names[i]);
	return out;
}

/* QUERY's state, by name (a static buffer: one use per printf). */
static const char *state_names(__u32 state)
{
	static const char *const names[] = { "VALID", "PARKED", "SUSPENDED" };
	static char out[64];

	return bit_names(out, sizeof(out), state, names, ARRAY_SIZE(names));
}

/* REGISTER's output flags, by name (a static buffer: one use per printf). */
static const char *register_names(__u32 flags)
{
	static const char *const names[] = { "CACHED", "REVIVED" };
	static char out[64];

	return bit_names(out, sizeof(out), flags, names, ARRAY_SIZE(names));
}

/*
 * Private anonymous memory filled with `fill`, in small pages only: the split
 * of a huge page under a registration would suspend it (see
 * demo_suspension()), which is not what the other parts show.
 */
static char *map_small(size_t len, int fill)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	/* Fails only without THP support, which is as good. */
	madvise(p, len, MADV_NOHUGEPAGE);
	memset(p, fill, len);
	return p;
}

/*
 * Parking: the last DEREGISTER keeps the registration, pinned and watched,
 * for a later REGISTER it covers, which revives it without pinning anything.
 * FLUSH ends every parked registration.
 */
static void demo_parking(void)
{
	struct memreg_register r, again = { 0 };
	struct memreg_query q = { 0 };
	struct memreg_stats s = { 0 };
	struct memreg_flush f = { 0 };
	char *buf = NULL;
	int fd, ret;

	printf("parking: DEREGISTER keeps the registration for the next REGISTER\n");
	fd = memreg_open();
	ret = fd < 0 ? -errno : mr_set_parking(fd, 1);
	if (!ret) {
		buf = map_small(8 * PAGE, 'p');
		ret = buf ? 0 : -ENOMEM;
	}
	if (!step(!ret, "new context, parking on (the default), a %lu KiB buffer%s%s",
		  8 * PAGE / 1024, ret ? ": " : "", ret ? strerror(-ret) : ""))
		goto out;

	ret = memreg_register(fd, buf, 8 * PAGE, RW, &r);
	if (!step(!ret && !r.flags, "REGISTER all %lu KiB: new registration, lkey %#llx",
		  8 * PAGE / 1024, (unsigned long long)r.lkey))
		goto out;
	ret = memreg_deregister(fd, r.lkey);
	if (!ret)
		ret = memreg_query(fd, r.lkey, &q);
	step(!ret && q.state == (MEMREG_STATE_VALID | MEMREG_STATE_PARKED) && !q.refcount &&
	     q.pages == 8,
	     "DEREGISTER its only reference: QUERY says %s, refcount %u, %llu pages still pinned",
	     ret ? strerror(-ret) : state_names(q.state), q.refcount,
	     (unsigned long long)q.pages);

	ret = memreg_register(fd, buf + PAGE, 2 * PAGE, RO, &again);
	if (!ret)
		ret = memreg_stats(fd, &s);
	step(!ret && again.flags == (MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED) &&
	     again.lkey == r.lkey && s.cache_misses == 1 && s.pages_pinned == 8,
	     "REGISTER %lu KiB inside it: flags %s, %s lkey, nothing pinned again (pages_pinned %llu)",
	     2 * PAGE / 1024, ret ? strerror(-ret) : register_names(again.flags),
	     again.lkey == r.lkey ? "the same" : "a different", (unsigned long long)s.pages_pinned);

	/* Parked again, then ended by FLUSH. */
	ret = memreg_deregister(fd, r.lkey);
	if (!ret)
		ret = memreg_flush(fd, &f);
	step(!ret && f.evicted == 1 && f.pages == 8 && memreg_query(fd, r.lkey, &q) == -ENOENT,
	     "DEREGISTER parks it again; FLUSH ends it: %llu evicted, %llu pages unpinned, key gone",
	     (unsigned long long)f.evicted, (unsigned long long)f.pages);
	ret = memreg_stats(fd, &s);
	step(!ret && s.parks == 2 && s.revives == 1 && s.evictions[MEMREG_EVICT_FLUSH] == 1 &&
	     !s.parked && !s.pages_pinned && !s.deregistrations,
	     "STATS: parks %llu, revives %llu, evictions[MEMREG_EVICT_FLUSH] %llu, %llu pages pinned",
	     (unsigned long long)s.parks, (unsigned long long)s.revives,
	     (unsigned long long)s.evictions[MEMREG_EVICT_FLUSH],
	     (unsigned long long)s.pages_pinned);
out:
	if (fd >= 0)
		close(fd);
	if (buf)
		munmap(buf, 8 * PAGE);
}

/*
 * Suspension: an event that may leave the pages where they are suspends a
 * registration instead of ending it. Here: a 2 MiB transparent huge page, all
 * of it registered but its last page; mprotect of that last page splits the
 * huge page (a "clear" over the whole of it), yet every registered page stays
 * mapped. The next use, or the context's worker, finds them in place and
 * resumes the registration.
 */
static void demo_suspension(void)
{
	static const char text[] = "still in the huge page";
	size_t huge = thp_size(), len = huge - PAGE;
	char back[sizeof(text)] = { 0 };
	struct memreg_register r;
	struct memreg_query q = { 0 };
	struct memreg_stats s = { 0 };
	char *raw, *block;
	int fd = -1, ret;
	long kb;

	printf("suspension: a huge page split suspends a registration, which resumes\n");
	raw = mmap(NULL, 3 * huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!step(raw != MAP_FAILED, "map %zu MiB, to find a %zu MiB-aligned block in it",
		  3 * huge >> 20, huge >> 20))
		return;
	/* A huge-aligned block with a page of the mapping on either side. */
	block = (char *)(((unsigned long)raw + PAGE + huge - 1) & ~(huge - 1));
	if (access("/sys/kernel/mm/transparent_hugepage", F_OK) ||
	    madvise(block, huge, MADV_HUGEPAGE)) {
		skipped("no transparent huge pages in this kernel: nothing to split");
		goto out;
	}
	memset(block, 'h', huge);
	memcpy(block, text, sizeof(text));
	kb = smaps_kb(block, "AnonHugePages");
	if (kb < (long)(huge >> 10)) {
		skipped("no huge page formed (AnonHugePages %ld kB): nothing to split", kb);
		goto out;
	}

	fd = memreg_open();
	ret = fd < 0 ? -errno : memreg_register(fd, block, len, RW, &r);
	if (!step(!ret, "new context; REGISTER a %zu MiB huge page but its last page (%zu KiB)%s%s",
		  huge >> 20, len >> 10, ret ? ": " : "", ret ? strerror(-ret) : ""))
		goto out;
	ret = mprotect(block + len, PAGE, PROT_READ) ? -errno : 0;
	if (!ret)
		ret = memreg_query(fd, r.lkey, &q);
	step(!ret && (q.state == MEMREG_STATE_SUSPENDED || q.state == MEMREG_STATE_VALID),
	     "mprotect the last page PROT_READ (the huge page splits): QUERY says %s%s",
	     ret ? strerror(-ret) : state_names(q.state),
	     ret ? "" : q.state == MEMREG_STATE_VALID ? " (the worker already resumed it)" :
	     " (revalidated on next use)");
	ret = memreg_copy(fd, r.lkey, 0, back, sizeof(text), MEMREG_COPY_FROM_REGION);
	step(!ret && !memcmp(back, text, sizeof(text)),
	     "COPY out of it still reads \"%.*s\": the pages are where they were",
	     (int)sizeof(text) - 1, back);
	ret = memreg_query(fd, r.lkey, &q);
	if (!ret)
		ret = memreg_stats(fd, &s);
	step(!ret && q.state == MEMREG_STATE_VALID && s.suspensions == 1 && s.resumptions == 1 &&
	     !s.revalidation_failures,
	     "QUERY says %s; STATS: suspensions %llu, resumptions %llu, revalidation_failures %llu",
	     ret ? strerror(-ret) : state_names(q.state),
	     (unsigned long long)s.suspensions, (unsigned long long)s.resumptions,
	     (unsigned long long)s.revalidation_failures);
out:
	if (fd >= 0)
		close(fd);
	munmap(raw, 3 * huge);
}

/*
 * State words and the event ring: how a program learns that a registration
 * ended without asking. Each registration made while the state words are
 * mapped gets a word that equals its generation while it is usable; the
 * kernel changes it, and writes an event into the ring, before the call that
 * ended the registration (here munmap) returns.
 */
static void demo_word_and_events(void)
{
	struct memreg_events_setup es = { .entries = 16, .eventfd = -1 };
	const struct memreg_event_ring *ring = MAP_FAILED;
	const struct memreg_event *e;
	const __u64 *words = MAP_FAILED;
	__u32 *head = MAP_FAILED;
	struct memreg_register r = { 0 };
	unsigned long addr;
	__u32 tail, h;
	char *buf = NULL;
	int fd, ret;
	__u64 w;

	printf("state words and the event ring: seeing a registration end, without a call\n");
	fd = memreg_open();
	if (fd >= 0)
		words = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_STATE_WORDS);
	if (!step(words != MAP_FAILED,
		  "new context; mmap a page of state words (%lu words, read-only) before registering",
		  PAGE / 8))
		goto out;
	ret = ioctl(fd, MEMREG_IOC_EVENTS_SETUP, &es) ? -errno : 0;
	if (!ret) {
		ring = mmap(NULL, es.ring_bytes, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_EVENTS);
		head = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
			    MEMREG_MMAP_EVENTS_HEAD);
	}
	if (!step(!ret && ring != MAP_FAILED && head != MAP_FAILED,
		  "EVENTS_SETUP with 16 entries; map the ring (%llu bytes) and its head page",
		  (unsigned long long)es.ring_bytes))
		goto out;

	buf = map_small(4 * PAGE, 'w');
	ret = buf ? memreg_register(fd, buf, 4 * PAGE, RW, &r) : -ENOMEM;
	if (!ret && r.slot < PAGE / 8)
		w = __atomic_load_n(&words[r.slot], __ATOMIC_ACQUIRE);
	else
		w = 0;
	if (!step(!ret && r.slot < PAGE / 8 && r.generation && w == r.generation,
		  "REGISTER %lu KiB: slot %u, generation %#llx; its word reads %#llx: usable",
		  4 * PAGE / 1024, r.slot, (unsigned long long)r.generation, (unsigned long long)w))
		goto out;

	addr = (unsigned long)buf;
	munmap(buf, 4 * PAGE);
	buf = NULL;
	w = __atomic_load_n(&words[r.slot], __ATOMIC_ACQUIRE);
	step(w == (r.generation | MEMREG_WORD_ENDED),
	     "munmap it: when munmap returns, the word reads %#llx (generation | MEMREG_WORD_ENDED)",
	     (unsigned long long)w);

	/* The reader's side of the ring: tail (acquire), the entries, head (release). */
	tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
	h = __atomic_load_n(head, __ATOMIC_RELAXED);
	if (!step(tail - h == 1, "the event ring holds %u new event(s)", tail - h))
		goto out;
	e = (const struct memreg_event *)((const char *)ring + MEMREG_EVENTS_OFFSET) +
	    (h & (ring->entries - 1));
	step(e->kind == MEMREG_EVENT_ENDED && e->cause == MEMREG_INVAL_UNMAP &&
	     e->key == r.lkey && e->addr == addr && e->length == 4 * PAGE,
	     "event: kind %s, cause %s, key %#llx (%s), %llu KiB at its address",
	     e->kind < ARRAY_SIZE(event_kinds) && event_kinds[e->kind] ? event_kinds[e->kind] : "?",
	     e->kind != MEMREG_EVENT_EVICTED && e->cause < MEMREG_INVAL_NR_CAUSES ?
	     causes[e->cause] : "?", (unsigned long long)e->key,
	     e->key == r.lkey ? "the registration's" : "another key",
	     (unsigned long long)e->length >> 10);
	__atomic_store_n(head, tail, __ATOMIC_RELEASE);
out:
	if (head != MAP_FAILED)
		munmap(head, PAGE);
	if (ring != MAP_FAILED)
		munmap((void *)ring, es.ring_bytes);
	if (words != MAP_FAILED)
		munmap((void *)words, PAGE);
	if (fd >= 0)
		close(fd);
	if (buf)
		munmap(buf, 4 * PAGE);
}

/*
 * The data path: a request posted into a queue's submission ring with no
 * lock and, unless the worker is asleep and this request is the next it
 * takes, no system call (libmemreg's memreg_queue_post() follows the
 * protocol of include/uapi/linux/memreg.h); the context's worker executes it
 * through the registrations and writes its completion.
 */
static void demo_queue(void)
{
	static const char text[] = "copied by the worker";
	struct memreg_register rs, rd;
	struct memreg_queue_stats st = { 0 };
	struct memreg_cqe cqe = { 0 };
	struct memreg_sqe sqe;
	struct memreg_queue q = { 0 };
	char *src = NULL, *dst = NULL;
	__u64 pos = 0;
	int fd, ret, i;
	__u32 flags;

	printf("the data path: a COPY posted through shared rings, run by the context's worker\n");
	fd = memreg_open();
	ret = fd < 0 ? -errno : 0;
	if (!ret) {
		src = map_small(4 * PAGE, 's');
		dst = map_small(4 * PAGE, 'd');
		ret = src && dst ? 0 : -ENOMEM;
	}
	if (!ret) {
		memcpy(src + 100, text, sizeof(text));
		ret = memreg_register(fd, src, 4 * PAGE, RO, &rs);
	}
	if (!ret)
		ret = memreg_register(fd, dst, 4 * PAGE, RW, &rd);
	if (!step(!ret, "new context; REGISTER a source (read-only) and a destination, %lu KiB each%s%s",
		  4 * PAGE / 1024, ret ? ": " : "", ret ? strerror(-ret) : ""))
		goto out;

	ret = memreg_queue_init(fd, 8, 16, -1, &q);
	flags = ret ? 0 : memreg_queue_flags(&q);
	if (!step(!ret, "QUEUE_CREATE: queue %u, 8 slots, 16 completions, rings mapped; worker %s",
		  q.index, flags & MEMREG_QUEUE_NEED_WAKEUP ? "asleep (NEED_WAKEUP)" : "awake"))
		goto out;

	/* COPY the text from the source at offset 100 to the destination at 200. */
	sqe = mr_sqe_copy(7, rd.lkey, 200, rs.lkey, 100, sizeof(text));
	ret = memreg_queue_post(&q, &sqe, 0, &pos);
	if (!step(!ret, "post a COPY, no lock: position %llu claimed (insert %llu -> %llu), published (seq %llu)%s%s",
		  (unsigned long long)pos, (unsigned long long)pos, (unsigned long long)pos + 1,
		  (unsigned long long)pos + 1, ret ? ": " : "", ret ? strerror(-ret) : ""))
		goto out;
	/* Nothing else wakes the worker of a new queue: it still sleeps. */
	step(mrq_doorbells(&q) == (flags & MEMREG_QUEUE_NEED_WAKEUP ? 1 : 0),
	     "doorbell rule: %s", mrq_doorbells(&q) ?
	     "the worker slept and sq_head was this position, so the poster rang DOORBELL" :
	     "the worker was awake, so posting took no system call");

	ret = memreg_wait_cqes(&q, &cqe, 1, 5000) == 1 ? 0 : -ETIMEDOUT;
	step(!ret && cqe.user_data == 7 && !cqe.status && cqe.bytes == sizeof(text) &&
	     !memcmp(dst + 200, text, sizeof(text)),
	     "reap the completion: user_data %llu, status %d, bytes %llu; destination reads \"%.*s\"",
	     (unsigned long long)cqe.user_data, cqe.status, (unsigned long long)cqe.bytes,
	     (int)sizeof(text) - 1, dst + 200);
	/* The worker adds to its counters just after publishing the completions. */
	for (i = 0; i < 100; i++) {
		ret = memreg_queue_stats(fd, &st);
		if (ret || st.requests)
			break;
		usleep(10000);
	}
	step(!ret && st.requests == 1 && st.completions == 1 && !st.errors &&
	     st.doorbells == mrq_doorbells(&q) && st.batches == 1,
	     "QUEUE_STATS: requests %llu, doorbells %llu, batches %llu, completions %llu",
	     (unsigned long long)st.requests, (unsigned long long)st.doorbells,
	     (unsigned long long)st.batches, (unsigned long long)st.completions);
out:
	memreg_queue_exit(&q);
	if (fd >= 0)
		close(fd);
	if (src)
		munmap(src, 4 * PAGE);
	if (dst)
		munmap(dst, 4 * PAGE);
}

/* What the second process of demo_peers() tells the first. */
struct peer_hello {
	__u64 rkey;
	__u32 queue;
	__u32 pad;
};

/*
 * The second process: its own context and a buffer peers may write into;
 * passes its descriptor and the remote key, posts a RECV, then checks what
 * arrived and revokes. Exits 0 when everything arrived as expected.
 */
static int peer_process(int sock)
{
	static const char written[] = "written by the other process";
	static const char sent[] = "a message, SEND to RECV";
	struct peer_hello hello = { 0 };
	struct memreg_register r;
	struct memreg_cqe cqe;
	struct memreg_sqe sqe;
	struct memreg_queue q = { 0 };
	char *buf, go;
	int fd;

	fd = memreg_open();
	buf = map_small(4 * PAGE, '.');
	if (fd < 0 || !buf || memreg_register(fd, buf, 4 * PAGE, RW | MEMREG_ACCESS_REMOTE_WRITE, &r) ||
	    memreg_queue_init(fd, 4, 4, -1, &q))
		return 1;
	sqe = mr_sqe_recv(1, r.lkey, PAGE, 64);
	if (memreg_queue_post_wait(&q, &sqe, 5000))
		return 1;
	hello.rkey = r.rkey;
	hello.queue = q.index;
	/* The descriptor is the grant; the remote key names the buffer. */
	if (memreg_send_fd(sock, fd) || write(sock, &hello, sizeof(hello)) != sizeof(hello))
		return 1;
	/* Both requests are done when the first process says so. */
	if (read(sock, &go, 1) != 1 || memreg_wait_cqes(&q, &cqe, 1, 5000) != 1)
		return 1;
	if (memcmp(buf + 100, written, sizeof(written)) || cqe.status ||
	    cqe.bytes != sizeof(sent) || cqe.imm_data != 42 ||
	    memcmp(buf + PAGE, sent, sizeof(sent)))
		return 2;
	if (memreg_peer_revoke(fd) || write(sock, "r", 1) != 1)
		return 1;
	/* Stay until the first process tried once more. */
	if (read(sock, &go, 1) != 1)
		return 1;
	return 0;
}

/*
 * Peers: one-sided WRITE into another process's registration, a SEND into
 * its posted RECV, and a revoked grant.
 */
static void demo_peers(void)
{
	static const char written[] = "written by the other process";
	static const char sent[] = "a message, SEND to RECV";
	struct peer_hello hello;
	struct memreg_register r;
	struct memreg_cqe cqe;
	struct memreg_sqe sqe;
	struct memreg_queue q = { 0 };
	int sv[2], fd = -1, peer_fd = -1, ret, status = -1;
	char *buf = NULL, go = 'g';
	__u32 peer = 0;
	pid_t pid;

	printf("peers: another process grants access by passing its descriptor\n");
	if (!step(!socketpair(AF_UNIX, SOCK_STREAM, 0, sv), "socketpair to a second process"))
		return;
	pid = fork();
	if (pid == 0) {
		close(sv[0]);
		_exit(peer_process(sv[1]));
	}
	close(sv[1]);
	fd = memreg_open();
	buf = map_small(4 * PAGE, 'x');
	ret = fd < 0 || !buf ? -ENOMEM : 0;
	if (!ret) {
		memcpy(buf, written, sizeof(written));
		memcpy(buf + PAGE, sent, sizeof(sent));
		ret = memreg_register(fd, buf, 4 * PAGE, RO, &r);
	}
	if (!ret)
		ret = memreg_queue_init(fd, 4, 4, -1, &q);
	if (!ret) {
		peer_fd = memreg_recv_fd(sv[0]);
		ret = peer_fd < 0 ? peer_fd : 0;
	}
	if (!ret && read(sv[0], &hello, sizeof(hello)) != sizeof(hello))
		ret = -EIO;
	if (!ret)
		ret = memreg_peer_attach(fd, peer_fd, &peer);
	/* The handle holds the other context, not the descriptor. */
	if (peer_fd >= 0)
		close(peer_fd);
	if (!step(!ret, "received its descriptor over SCM_RIGHTS; PEER_ATTACH: handle %u%s%s",
		  peer, ret ? ": " : "", ret ? strerror(-ret) : ""))
		goto out;

	sqe = mr_sqe_write(1, peer, hello.rkey, 100, r.lkey, 0, sizeof(written));
	ret = memreg_queue_run(&q, &sqe, &cqe);
	step(!ret && !cqe.status && cqe.bytes == sizeof(written),
	     "WRITE %zu bytes to remote key %#llx at offset 100: status %d (one copy, page to page)",
	     sizeof(written), (unsigned long long)hello.rkey, ret ? ret : cqe.status);

	ret = memreg_queue_connect(fd, q.index, peer, hello.queue, 1000);
	if (!ret) {
		sqe = mr_sqe_send_imm(2, r.lkey, PAGE, sizeof(sent), 42);
		ret = memreg_queue_run(&q, &sqe, &cqe);
	}
	step(!ret && !cqe.status && cqe.bytes == sizeof(sent),
	     "QUEUE_CONNECT to its queue %u; SEND \"%s\" with immediate data 42: status %d",
	     hello.queue, sent, ret ? ret : cqe.status);

	/* The other process checks both, then revokes the grant. */
	if (write(sv[0], &go, 1) != 1 || read(sv[0], &go, 1) != 1)
		goto out;
	sqe = mr_sqe_write(3, peer, hello.rkey, 100, r.lkey, 0, sizeof(written));
	ret = memreg_queue_run(&q, &sqe, &cqe);
	step(!ret && cqe.status == -ECONNRESET,
	     "the other process checked both and called PEER_REVOKE: the next WRITE completes with %s",
	     ret ? strerror(-ret) : cqe.status ? strerror(-cqe.status) : "success (NOT refused)");
out:
	if (write(sv[0], &go, 1) != 1)
		status = -1;
	close(sv[0]);
	if (waitpid(pid, &status, 0) == pid)
		step(WIFEXITED(status) && !WEXITSTATUS(status),
		     "the other process found the WRITE's bytes and the message (with its immediate data) in its buffer");
	memreg_queue_exit(&q);
	if (fd >= 0)
		close(fd);
	if (buf)
		munmap(buf, 4 * PAGE);
}

/* Buffer pools: pre-registered buffers handed out without registering. */
static void demo_pool(void)
{
	struct memreg_pool_class cl[2] = {
		{ .buffer_size = 4096, .max_buffers = 64, .low_watermark = 4,
		  .high_watermark = 0, .initial = 16 },
		{ .buffer_size = 65536, .max_buffers = 8, .low_watermark = 0,
		  .high_watermark = 0, .initial = 1 },
	};
	struct memreg_pool_create pc = { .classes = (__u64)(unsigned long)cl, .nr_classes = 2,
					 .access = RW, .leak_timeout_ms = 1000 };
	struct memreg_pool_stats st[2] = { 0 };
	struct memreg_pool_info info = { .count = 2, .stats = (__u64)(unsigned long)st };
	struct memreg_pool_buf b = { 0 };
	struct memreg_pool_alloc pa = { .size = 3000, .bufs = (__u64)(unsigned long)&b,
					.count = 1, .timeout_ms = 5000 };
	struct memreg_pool_free pf = { .count = 1 };
	static const char text[] = "through the buffer's key";
	char back[sizeof(text)] = { 0 };
	char *map = MAP_FAILED;
	int fd, ret;

	printf("buffer pools: buffers that are registrations already, from a mapped pool\n");
	fd = memreg_open();
	ret = fd < 0 ? -errno : ioctl(fd, MEMREG_IOC_POOL_CREATE, &pc) ? -errno : 0;
	if (!step(!ret, "POOL_CREATE: 4 KiB x 64 and 64 KiB x 8, %llu KiB reserved%s%s",
		  (unsigned long long)pc.map_bytes / 1024, ret ? ": " : "",
		  ret ? strerror(-ret) : ""))
		goto out;
	map = mmap(NULL, pc.map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		   MEMREG_MMAP_POOL(pc.pool));
	if (!step(map != MAP_FAILED, "mmap the pool: partitions at offsets %llu and %llu, "
		  "%u and %u buffers per chunk", (unsigned long long)cl[0].offset,
		  (unsigned long long)cl[1].offset, cl[0].chunk_buffers, cl[1].chunk_buffers))
		goto out;
	pa.pool = pc.pool;
	ret = ioctl(fd, MEMREG_IOC_POOL_ALLOC, &pa) ? -errno : 0;
	if (!step(!ret && b.size == 4096 && b.addr == (__u64)(unsigned long)map,
		  "ALLOC 3000 bytes: a %u-byte buffer at the partition's start, key %#llx, offset %llu%s%s",
		  b.size, (unsigned long long)b.key, (unsigned long long)b.offset,
		  ret ? ": " : "", ret ? strerror(-ret) : ""))
		goto out;
	memcpy((char *)(unsigned long)b.addr, text, sizeof(text));
	ret = memreg_copy(fd, b.key, b.offset, back, sizeof(text), MEMREG_COPY_FROM_REGION);
	step(!ret && !memcmp(back, text, sizeof(text)),
	     "the program writes the buffer; COPY %s reads \"%s\"", "with its key", back);
	pf.pool = pc.pool;
	pf.addrs = (__u64)(unsigned long)&b.addr;
	ret = ioctl(fd, MEMREG_IOC_POOL_FREE, &pf) ? -errno : 0;
	step(!ret, "FREE it by address%s%s", ret ? ": " : "", ret ? strerror(-ret) : "");
	info.pool = pc.pool;
	ret = ioctl(fd, MEMREG_IOC_POOL_STATS, &info) ? -errno : 0;
	step(!ret && st[0].boundary >= 16 && st[0].grows >= 1 && !st[0].allocated,
	     "POOL_STATS class 0: boundary %llu buffers mapped (grown %llu chunks), %llu free",
	     (unsigned long long)st[0].boundary, (unsigned long long)st[0].grows,
	     (unsigned long long)st[0].free);
out:
	if (map != MAP_FAILED)
		munmap(map, pc.map_bytes);
	if (fd >= 0)
		close(fd);
}

int main(void)
{
	static const char to_region[] = "written through the registration";
	static const char by_program[] = "written by the program";
	struct memreg_register r, sub;
	struct memreg_query q;
	struct memreg_stats s;
	char back[64] = { 0 };
	__u32 version = 0;
	char *buf;
	int fd, ret, i, inval_other = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("memreg demo: register memory once, reuse it, and watch it go away with the memory\n");

	fd = memreg_open();
	if (!step(fd >= 0, "open /dev/memreg%s%s", fd < 0 ? ": " : "",
		  fd < 0 ? strerror(errno) : ""))
		return 1;
	ret = ioctl(fd, MEMREG_IOC_GET_VERSION, &version) ? -errno : 0;
	step(!ret && version == MEMREG_ABI_VERSION, "ABI version %u (this program knows %u)",
	     version, MEMREG_ABI_VERSION);

	/* 1. Register a buffer: its pages are pinned and described once. */
	buf = map_filled(BUF_LEN, '.');
	if (!step(buf != NULL, "map a %lu KiB buffer", BUF_LEN / 1024))
		return 1;
	ret = memreg_register(fd, buf, BUF_LEN, RW, &r);
	if (!step(!ret && !(r.flags & MEMREG_REGISTER_CACHED),
		  "REGISTER %lu KiB read-write: %s lkey %#llx", BUF_LEN / 1024,
		  ret ? strerror(-ret) : "new registration,", (unsigned long long)r.lkey))
		return 1;
	ret = memreg_query(fd, r.lkey, &q);
	step(!ret && q.pages == BUF_PAGES && (q.state & MEMREG_STATE_VALID),
	     "QUERY: %llu pages pinned, in %u physically contiguous extent(s), refcount %u",
	     (unsigned long long)q.pages, q.extents, q.refcount);

	/* 2. A range it covers: served from the cache, nothing pinned again. */
	ret = memreg_register(fd, buf + 2 * PAGE, 4 * PAGE, RO, &sub);
	step(!ret && (sub.flags & MEMREG_REGISTER_CACHED) && sub.lkey == r.lkey,
	     "REGISTER 16 KiB inside it again: %s, lkey %#llx (%s)",
	     ret ? strerror(-ret) :
	     sub.flags & MEMREG_REGISTER_CACHED ? "served from the cache (MEMREG_REGISTER_CACHED)" :
	     "NOT served from the cache",
	     (unsigned long long)sub.lkey, sub.lkey == r.lkey ? "the same" : "a different one");

	/* 3. Data moves through the registration's pages; the program sees them. */
	ret = memreg_copy(fd, r.lkey, 100, (void *)to_region, sizeof(to_region), MEMREG_COPY_TO_REGION);
	step(!ret && !memcmp(buf + 100, to_region, sizeof(to_region)),
	     "COPY into the registration at offset 100; the buffer now reads \"%.*s\"",
	     (int)sizeof(to_region) - 1, buf + 100);
	memcpy(buf + 8192, by_program, sizeof(by_program));
	ret = memreg_copy(fd, r.lkey, 8192, back, sizeof(by_program), MEMREG_COPY_FROM_REGION);
	step(!ret && !memcmp(back, by_program, sizeof(by_program)),
	     "the program wrote \"%s\" at offset 8192; COPY out of the registration reads \"%.*s\"",
	     by_program, (int)sizeof(by_program) - 1, back);

	/* 4. The memory goes away: so does the registration, at once. */
	munmap(buf, BUF_LEN);
	ret = memreg_query(fd, r.lkey, &q);
	step(ret == -ENOENT, "munmap the buffer: QUERY of lkey %#llx now fails with %s",
	     (unsigned long long)r.lkey, ret ? strerror(-ret) : "nothing (it still answers)");
	ret = memreg_copy(fd, r.lkey, 0, back, 16, MEMREG_COPY_FROM_REGION);
	step(ret == -ENOENT, "COPY through the old key fails with %s: never the new memory",
	     ret ? strerror(-ret) : "nothing (it still works)");
	/* Unpinning is done by a worker: wait for it before reading the counters. */
	mr_wait_pinned(fd, 0);
	ret = memreg_stats(fd, &s);
	if (!step(!ret && s.invalidations[MEMREG_INVAL_UNMAP] == 1,
		  "STATS: invalidations[MEMREG_INVAL_UNMAP] = %llu",
		  (unsigned long long)s.invalidations[MEMREG_INVAL_UNMAP]))
		return 1;

	printf("counters: registrations %llu, cache_hits %llu, cache_misses %llu, "
	       "pages_pinned %llu (peak %llu), deregistrations %llu\n",
	       (unsigned long long)s.registrations, (unsigned long long)s.cache_hits,
	       (unsigned long long)s.cache_misses, (unsigned long long)s.pages_pinned,
	       (unsigned long long)s.pages_pinned_peak, (unsigned long long)s.deregistrations);
	printf("invalidations:");
	for (i = 0; i < MEMREG_INVAL_NR_CAUSES; i++) {
		if (causes[i])
			printf(" %s %llu", causes[i], (unsigned long long)s.invalidations[i]);
		else
			printf(" cause%d %llu", i, (unsigned long long)s.invalidations[i]);
		if (i != MEMREG_INVAL_UNMAP)
			inval_other += s.invalidations[i] != 0;
	}
	putchar('\n');
	step(s.registrations == 0 && s.cache_hits == 1 && s.cache_misses == 1 &&
	     s.pages_pinned == 0 && s.pages_pinned_peak == BUF_PAGES && s.deregistrations == 0 &&
	     !inval_other,
	     "counters as expected: 1 miss, 1 hit, nothing left registered or pinned");
	close(fd);

	demo_parking();
	demo_suspension();
	demo_word_and_events();
	demo_queue();
	demo_peers();
	demo_pool();

	if (failures)
		printf("memreg demo: %d step(s) did not behave as expected\n", failures);
	else
		printf("memreg demo: every step behaved as expected\n");
	return failures ? 1 : 0;
}
