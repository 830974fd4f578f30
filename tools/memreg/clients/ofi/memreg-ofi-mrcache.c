// SPDX-License-Identifier: GPL-2.0
/*
 * memreg-ofi-mrcache: libfabric 1.17's MR cache, through its verbs provider
 * over soft-iWARP (siw), told about memory changes by memreg.
 *
 * libfabric is used unchanged: a memory monitor built on memreg's watch
 * registrations is installed through libfabric's public import API
 * (fi_open("mr_cache") + fi_import_fid() with struct fid_mem_monitor, see
 * rdma/fi_ext.h). Its subscribe() is a watch REGISTER (nothing pinned; siw
 * pins on its own), its valid() one acquire load of the watch's state word,
 * and a thread of its own turns memreg's ENDED and EVICTED events into
 * import_ops->notify(). Two MSG endpoints of this process are connected
 * over siw0 and every check is a byte check of an fi_write or a count of
 * the monitor's callbacks; nothing depends on timing.
 *
 * Modes (see README): the default runs the checks; --no-monitor imports
 * nothing and reports what libfabric's verbs cache does on its own;
 * --blind-monitor imports a monitor that never reports a change, to show the
 * stale-registration bug class memreg exists to prevent; --bench N prints
 * BENCH lines for a cache hit and a cache miss.
 *
 * Output is TAP, then "MEMREG-OFI: P passed, F failed". Exit status: 0 all
 * passed, 1 a check failed, 4 skipped (no /dev/memreg, no RDMA device).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_netlink.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>
#include <rdma/fi_ext.h>

#include "libmemreg.h"

/*
 * libibverbs.a registers no provider by itself: siw's, from
 * libsiw-rdmav34.a, is handed to it before anything lists devices.
 * verbs.h declares these only with RDMA_STATIC_PROVIDERS, which would also
 * redefine ibv_get_device_list().
 */
struct verbs_device_ops;
extern const struct verbs_device_ops verbs_provider_siw;
void ibv_static_providers(void *unused, ...);

#define OFI_VERSION		FI_VERSION(1, 17)
#define NODE_ADDR		"192.0.2.1"
#define NODE_PREFIX		24
#define DEFAULT_PORT		"47591"
#define NETDEV_NAME		"dummy0"
#define RDMA_DEV_NAME		"siw0"

#define KIB			1024UL
#define MIB			(1024UL * 1024UL)
#define OP_TIMEOUT_MS		30000
#define EVENT_TIMEOUT_MS	5000

#define EXIT_SKIP		4

#define ARRAY_SIZE(a)		(sizeof(a) / sizeof((a)[0]))
/* container_of() comes from rdma/fabric.h. */

/* ---- TAP ----------------------------------------------------------------- */

static unsigned int tap_count, tap_failed;

static void __attribute__((format(printf, 2, 3)))
tap(bool ok, const char *fmt, ...)
{
	va_list ap;

	tap_count++;
	if (!ok)
		tap_failed++;
	printf("%sok %u - ", ok ? "" : "not ", tap_count);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static void __attribute__((format(printf, 1, 2)))
diag(const char *fmt, ...)
{
	va_list ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static void __attribute__((noreturn)) skip(const char *why, const char *detail)
{
	if (detail)
		diag("%s", detail);
	printf("1..0 # SKIP %s\n", why);
	printf("MEMREG-OFI: skipped (%s)\n", why);
	exit(EXIT_SKIP);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void sleep_us(unsigned int us)
{
	struct timespec ts = {
		.tv_sec = us / 1000000,
		.tv_nsec = (long)(us % 1000000) * 1000,
	};

	nanosleep(&ts, NULL);
}

/*
 * A pattern that differs for every seed: xorshift64 words. Buffers are
 * multiples of 8 bytes long.
 */
static void pattern_fill(void *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 0x2545f4914f6cdd1dULL;
	uint64_t *p = buf;
	size_t i;

	for (i = 0; i < len / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = x;
	}
}

/* True when @buf holds exactly the pattern of @seed. */
static bool pattern_match(const void *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ULL + 0x2545f4914f6cdd1dULL;
	const uint64_t *p = buf;
	size_t i;

	for (i = 0; i < len / 8; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		if (p[i] != x)
			return false;
	}
	return true;
}

/* ---- The memreg monitor -------------------------------------------------- */

/*
 * libfabric 1.17 keeps one imported monitor for the process: one instance.
 *
 * The import API hands the monitor only (addr, len) in subscribe(),
 * unsubscribe() and valid(), and valid() gets the cache entry's range: the
 * subscriptions are kept in a table keyed by that range. A second table,
 * keyed by memreg's key, routes events. Each subscription holds exactly one
 * memreg reference (one REGISTER, matched by one DEREGISTER); a subscribe()
 * of a range already watched by a valid registration only counts a
 * reference of ours (@refs) and makes no system call.
 *
 * Locking: @lock protects the tables and is held only for table work and
 * the REGISTER, DEREGISTER and REVALIDATE ioctls, never across a call into
 * libfabric. libfabric calls subscribe() and valid() with its global
 * mm_lock held, and notify() takes mm_list_rwlock and mm_lock: the event
 * thread drops @lock before it calls notify(), so the order is always
 * libfabric's locks, then @lock.
 */
#define MON_HASH_SIZE		256
#define MON_SLOTS		MEMREG_MAX_SLOTS
#define MON_EVENT_ENTRIES	64
#define MON_EVENT_BATCH		64
#define MON_WATCH_ACCESS	(MEMREG_ACCESS_LOCAL_READ | MEMREG_ACCESS_LOCAL_WRITE)

struct mon_sub {
	struct mon_sub *range_next;
	struct mon_sub *key_next;
	uintptr_t addr;
	size_t len;
	__u64 key;
	__u64 generation;
	__u32 slot;
	unsigned int refs;	/* subscribe() calls not matched by unsubscribe() */
	__u64 id;		/* the user data given to REGISTER */
	__u64 last_used;	/* @clock at the last valid() that found it */
};

enum mon_mode {
	MON_MEMREG,
	MON_BLIND,	/* never reports a change: the bug-class demonstration */
};

/* Counters, all unsigned long, read and written with atomics. */
struct mon_counters {
	unsigned long starts;
	unsigned long stops;
	unsigned long subscribes;
	unsigned long registers;	/* REGISTER calls made by subscribe() */
	unsigned long kernel_hits;	/* ... that memreg served as CACHED */
	unsigned long reuses;		/* subscribe() served by a valid watch */
	unsigned long subscribe_failures;
	unsigned long unsubscribes;
	unsigned long valid_calls;
	unsigned long valid_false;
	unsigned long revalidations;	/* REVALIDATE calls made by valid() */
	unsigned long revalidated;	/* ... that found the memory in place */
	unsigned long ev_suspended;
	unsigned long ev_resumed;
	unsigned long ev_ended;
	unsigned long ev_evicted;
	unsigned long ev_stale;		/* ENDED/EVICTED for no subscription */
	unsigned long ev_user_data;	/* ... whose user data named a subscription */
	unsigned long notifies;		/* import_ops->notify() calls */
	unsigned long resyncs;
	unsigned long resync_ended;	/* subscriptions a resync found gone */
	unsigned long reclaimed;	/* watches dropped to make room (EMFILE) */
	unsigned long held_at_stop;	/* subscriptions stop() still found */
	unsigned long dereg_failures;
};

#define MON_INC(m, f)	__atomic_add_fetch(&(m)->cnt.f, 1, __ATOMIC_RELAXED)
#define MON_ADD(m, f, n) __atomic_add_fetch(&(m)->cnt.f, (n), __ATOMIC_RELAXED)
#define MON_GET(m, f)	__atomic_load_n(&(m)->cnt.f, __ATOMIC_RELAXED)

struct memreg_monitor {
	struct fid_mem_monitor fid;	/* what libfabric sees */
	struct fi_ops_mem_monitor ops;
	enum mon_mode mode;
	bool imported;

	pthread_mutex_t lock;
	struct mon_sub *by_range[MON_HASH_SIZE];
	struct mon_sub *by_key[MON_HASH_SIZE];
	unsigned int nr_subs;
	__u64 next_id;
	__u64 clock;

	int fd;
	struct memreg_state_words sw;
	struct memreg_events ev;
	__u32 event_entries;
	int wake[2];			/* a pipe: wakes the event thread */
	pthread_t thread;
	bool thread_started;
	int busy;			/* the thread is consuming events */

	/* Pausing the thread, for the overflow check. */
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond;
	bool pause_req;
	bool parked;
	bool stopping;

	struct mon_counters cnt;

	/* What stop() saw, for the checks after everything is closed. */
	bool stop_seen;
	unsigned int stop_keys;		/* distinct keys held */
	unsigned int stop_live_keys;	/* ... whose word was valid or suspended */
	struct memreg_stats stop_before;
	struct memreg_stats stop_after;
	bool stop_flushed;
	int stop_error;
};

static struct memreg_monitor mon;

static struct memreg_monitor *to_mon(struct fid_mem_monitor *fid)
{
	return container_of(fid, struct memreg_monitor, fid);
}

static void mon_counters(struct memreg_monitor *m, struct mon_counters *out)
{
	const unsigned long *src = (const unsigned long *)&m->cnt;
	unsigned long *dst = (unsigned long *)out;
	size_t i;

	for (i = 0; i < sizeof(*out) / sizeof(unsigned long); i++)
		dst[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
}

static unsigned int range_hash(uintptr_t addr, size_t len)
{
	uint64_t h = ((uint64_t)addr >> 12) * 0x9e3779b97f4a7c15ULL;

	h ^= (uint64_t)len * 0xc2b2ae3d27d4eb4fULL;
	return (unsigned int)(h >> 40) & (MON_HASH_SIZE - 1);
}

static unsigned int key_hash(__u64 key)
{
	return (unsigned int)((key * 0x9e3779b97f4a7c15ULL) >> 40) &
	       (MON_HASH_SIZE - 1);
}

/* Called with @lock held. */
static struct mon_sub *sub_find(struct memreg_monitor *m, uintptr_t addr,
				size_t len)
{
	struct mon_sub *s;

	for (s = m->by_range[range_hash(addr, len)]; s; s = s->range_next)
		if (s->addr == addr && s->len == len)
			return s;
	return NULL;
}

/* Called with @lock held. */
static void sub_link(struct memreg_monitor *m, struct mon_sub *s)
{
	unsigned int r = range_hash(s->addr, s->len), k = key_hash(s->key);

	s->range_next = m->by_range[r];
	m->by_range[r] = s;
	s->key_next = m->by_key[k];
	m->by_key[k] = s;
	m->nr_subs++;
}

/* Called with @lock held. */
static void sub_unlink(struct memreg_monitor *m, struct mon_sub *s)
{
	struct mon_sub **pp;

	for (pp = &m->by_range[range_hash(s->addr, s->len)]; *pp;
	     pp = &(*pp)->range_next) {
		if (*pp == s) {
			*pp = s->range_next;
			break;
		}
	}
	for (pp = &m->by_key[key_hash(s->key)]; *pp; pp = &(*pp)->key_next) {
		if (*pp == s) {
			*pp = s->key_next;
			break;
		}
	}
	m->nr_subs--;
}

/*
 * Ends a subscription: its one memreg reference goes (an ended
 * registration still needs its DEREGISTER). Called with @lock held.
 */
static void sub_drop(struct memreg_monitor *m, struct mon_sub *s)
{
	sub_unlink(m, s);
	if (memreg_deregister(m->fd, s->key))
		MON_INC(m, dereg_failures);
	free(s);
}

/*
 * True when the watch behind @s is usable: its state word, and for a
 * suspended one a REVALIDATE (0: the pages are still the ones watched).
 * Needs no lock: a slot is reused only with a larger generation.
 */
static bool sub_word_valid(struct memreg_monitor *m, __u64 key, __u32 slot,
			   __u64 generation)
{
	if (memreg_word_valid(&m->sw, slot, generation))
		return true;
	if (slot >= m->sw.slots ||
	    __atomic_load_n(&m->sw.words[slot], __ATOMIC_ACQUIRE) !=
	    (generation | MEMREG_WORD_SUSPENDED))
		return false;
	MON_INC(m, revalidations);
	if (memreg_revalidate(m->fd, key) ||
	    !memreg_word_valid(&m->sw, slot, generation))
		return false;
	MON_INC(m, revalidated);
	return true;
}

/* True when the watch behind @s has ended (its word says so). */
static bool sub_ended(struct memreg_monitor *m, const struct mon_sub *s)
{
	return s->slot < m->sw.slots &&
	       (__atomic_load_n(&m->sw.words[s->slot], __ATOMIC_ACQUIRE) &
		MEMREG_WORD_ENDED);
}

/*
 * Drops about a quarter of the subscriptions, least recently validated
 * first, to make room for a new watch. libfabric 1.17 never unsubscribes,
 * so watches of entries it has long dropped would otherwise pile up. A
 * cache entry whose watch went is found invalid by valid() (no
 * subscription) and registered again: correct, only slower. Called with
 * @lock held.
 */
static void mon_reclaim(struct memreg_monitor *m)
{
	unsigned int want = m->nr_subs / 4 ? m->nr_subs / 4 : 1;

	while (want-- && m->nr_subs) {
		struct mon_sub *s, *oldest = NULL;
		unsigned int i;

		for (i = 0; i < MON_HASH_SIZE; i++)
			for (s = m->by_range[i]; s; s = s->range_next)
				if (!oldest || s->last_used < oldest->last_used)
					oldest = s;
		sub_drop(m, oldest);
		MON_INC(m, reclaimed);
	}
}

/*
 * A watch REGISTER of [addr, addr + len). EAGAIN (it raced with an
 * invalidation of the range) is retried; EMFILE (too many watches),
 * EDQUOT (the range overlaps too many) and ENOSPC make room once first.
 * Called with @lock held.
 */
static int sub_register(struct memreg_monitor *m, uintptr_t addr, size_t len)
{
	struct memreg_register reg;
	unsigned int tries = 0;
	bool reclaimed = false;
	struct mon_sub *s;
	__u64 id;
	int ret;

again:
	id = ++m->next_id;
	ret = memreg_register_ex(m->fd, (const void *)addr, len, MON_WATCH_ACCESS,
				 MEMREG_REGISTER_WATCH, id, &reg);
	if (ret == -EAGAIN && ++tries < 8)
		goto again;
	if ((ret == -EMFILE || ret == -EDQUOT || ret == -ENOSPC) &&
	    !reclaimed && m->nr_subs) {
		mon_reclaim(m);
		reclaimed = true;
		goto again;
	}
	if (ret)
		return ret;
	MON_INC(m, registers);
	if (reg.flags & MEMREG_REGISTER_CACHED)
		MON_INC(m, kernel_hits);
	if (reg.slot == MEMREG_NO_SLOT || !reg.generation) {
		/* No state word: valid() could never say yes. */
		memreg_deregister(m->fd, reg.lkey);
		return -ENOSPC;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		memreg_deregister(m->fd, reg.lkey);
		return -ENOMEM;
	}
	s->addr = addr;
	s->len = len;
	s->key = reg.lkey;
	s->slot = reg.slot;
	s->generation = reg.generation;
	s->refs = 1;
	s->id = id;
	s->last_used = ++m->clock;
	sub_link(m, s);
	return 0;
}

static void mon_wake(struct memreg_monitor *m)
{
	char c = 1;

	if (m->wake[1] >= 0 && write(m->wake[1], &c, 1) < 0 && errno != EAGAIN)
		diag("monitor: cannot wake the event thread: %s", strerror(errno));
}

static void mon_notify(struct memreg_monitor *m, uintptr_t addr, size_t len)
{
	MON_INC(m, notifies);
	m->fid.import_ops->notify(&m->fid, (const void *)addr, len);
}

/*
 * ENDED or EVICTED for @e->key: every subscription on that key goes, then
 * the registration's range is reported to libfabric, without @lock. An
 * event for a key no subscription holds is late (valid() found the word
 * ended first and subscribe() replaced the watch, or stop() dropped it):
 * the key names nothing any more and the event is ignored, so it cannot
 * evict the entry that replaced it.
 */
static void mon_event_end(struct memreg_monitor *m, const struct memreg_event *e,
			  __u64 user_data)
{
	struct mon_sub *s, *next;
	bool found = false, named = false;

	pthread_mutex_lock(&m->lock);
	for (s = m->by_key[key_hash(e->key)]; s; s = next) {
		next = s->key_next;
		if (s->key != e->key)
			continue;
		found = true;
		if (s->id == user_data)
			named = true;
		sub_drop(m, s);
	}
	pthread_mutex_unlock(&m->lock);

	if (!found) {
		MON_INC(m, ev_stale);
		return;
	}
	if (named)
		MON_INC(m, ev_user_data);
	mon_notify(m, (uintptr_t)e->addr, (size_t)e->length);
}

static int cmp_resync_key(const void *a, const void *b)
{
	const struct memreg_resync_entry *x = a, *y = b;

	return x->key < y->key ? -1 : x->key > y->key;
}

/*
 * The ring overflowed: events were lost. EVENTS_RESYNC discards the
 * unread ones and lists the registrations valid now; subscriptions whose
 * key is missing (or whose word says ended) are dropped. Then every range
 * subscribed is reported to libfabric, conservatively: the cache drops all
 * its entries, and the ones whose watch lives on are subscribed again
 * without a system call.
 */
static void mon_resync(struct memreg_monitor *m)
{
	struct memreg_resync_entry *list;
	struct { uintptr_t addr; size_t len; } *ranges = NULL;
	unsigned int i, nr = 0, cap;
	__u32 count = 0;
	int ret;

	MON_INC(m, resyncs);
	pthread_mutex_lock(&m->lock);
	cap = m->nr_subs + 64;
	pthread_mutex_unlock(&m->lock);

	list = calloc(cap, sizeof(*list));
	if (!list) {
		diag("monitor: no memory for a resync");
		sleep_us(10000);
		return;
	}
	ret = memreg_events_resync(m->fd, list, cap, &count);
	if (ret) {
		diag("monitor: EVENTS_RESYNC failed: %s", strerror(-ret));
		free(list);
		sleep_us(10000);
		return;
	}
	if (count <= cap)
		qsort(list, count, sizeof(*list), cmp_resync_key);

	pthread_mutex_lock(&m->lock);
	ranges = calloc(m->nr_subs + 1, sizeof(*ranges));
	for (i = 0; i < MON_HASH_SIZE; i++) {
		struct mon_sub *s, *next;

		for (s = m->by_range[i]; s; s = next) {
			struct memreg_resync_entry probe = { .key = s->key };
			bool listed = true;

			next = s->range_next;
			/* With a partial list the state words decide alone. */
			if (count <= cap)
				listed = bsearch(&probe, list, count, sizeof(*list),
						 cmp_resync_key) != NULL;
			if (ranges) {
				ranges[nr].addr = s->addr;
				ranges[nr].len = s->len;
				nr++;
			}
			if (!listed || sub_ended(m, s)) {
				MON_INC(m, resync_ended);
				sub_drop(m, s);
			}
		}
	}
	pthread_mutex_unlock(&m->lock);
	free(list);

	if (!ranges) {
		/* Cannot list the ranges: drop the whole address space. */
		mon_notify(m, 0, SIZE_MAX);
		return;
	}
	for (i = 0; i < nr; i++)
		mon_notify(m, ranges[i].addr, ranges[i].len);
	free(ranges);
}

static void mon_process(struct memreg_monitor *m)
{
	struct memreg_event evs[MON_EVENT_BATCH];
	__u64 user_data[MON_EVENT_BATCH];
	unsigned int i, n;

	if (memreg_events_overflowed(&m->ev)) {
		mon_resync(m);
		return;
	}
	n = memreg_events_read_user_data(&m->ev, evs, user_data, MON_EVENT_BATCH);
	for (i = 0; i < n; i++) {
		switch (evs[i].kind) {
		case MEMREG_EVENT_SUSPENDED:
			/* Usually resumes: valid() revalidates on the next hit. */
			MON_INC(m, ev_suspended);
			break;
		case MEMREG_EVENT_RESUMED:
			MON_INC(m, ev_resumed);
			break;
		case MEMREG_EVENT_ENDED:
			MON_INC(m, ev_ended);
			mon_event_end(m, &evs[i], user_data[i]);
			break;
		case MEMREG_EVENT_EVICTED:
			MON_INC(m, ev_evicted);
			mon_event_end(m, &evs[i], user_data[i]);
			break;
		default:
			break;
		}
	}
}

/* Parks the thread while the test asks it to (the overflow check). */
static void mon_pause_point(struct memreg_monitor *m)
{
	pthread_mutex_lock(&m->pause_lock);
	while (m->pause_req && !m->stopping) {
		m->parked = true;
		pthread_cond_broadcast(&m->pause_cond);
		pthread_cond_wait(&m->pause_cond, &m->pause_lock);
	}
	m->parked = false;
	pthread_mutex_unlock(&m->pause_lock);
}

static bool mon_stopping(struct memreg_monitor *m)
{
	bool stopping;

	pthread_mutex_lock(&m->pause_lock);
	stopping = m->stopping;
	pthread_mutex_unlock(&m->pause_lock);
	return stopping;
}

static void *mon_thread(void *arg)
{
	struct memreg_monitor *m = arg;
	struct pollfd pfd[2] = {
		{ .fd = m->fd, .events = POLLIN },
		{ .fd = m->wake[0], .events = POLLIN },
	};

	for (;;) {
		mon_pause_point(m);
		if (mon_stopping(m))
			break;
		__atomic_store_n(&m->busy, 1, __ATOMIC_SEQ_CST);
		if (memreg_events_ready(&m->ev) || memreg_events_overflowed(&m->ev)) {
			mon_process(m);
			__atomic_store_n(&m->busy, 0, __ATOMIC_SEQ_CST);
			continue;
		}
		__atomic_store_n(&m->busy, 0, __ATOMIC_SEQ_CST);
		/* The timeout only bounds a missed wake-up. */
		if (poll(pfd, 2, 100) <= 0)
			continue;
		if (pfd[1].revents & POLLIN) {
			char buf[64];

			while (read(m->wake[0], buf, sizeof(buf)) > 0)
				;
		} else if ((pfd[0].revents & POLLIN) &&
			   !memreg_events_ready(&m->ev) &&
			   !memreg_events_overflowed(&m->ev)) {
			/* Readable for another reason: do not spin on it. */
			sleep_us(1000);
		}
	}
	return NULL;
}

static int mon_start(struct fid_mem_monitor *fid)
{
	struct memreg_monitor *m = to_mon(fid);
	int ret, fd;

	MON_INC(m, starts);
	if (m->mode == MON_BLIND)
		return 0;

	fd = memreg_open();
	if (fd < 0)
		return fd;
	ret = memreg_state_words_map(fd, MON_SLOTS, &m->sw);
	if (ret)
		goto err_close;
	ret = memreg_events_init(fd, m->event_entries, -1, &m->ev);
	if (ret)
		goto err_words;
	if (pipe2(m->wake, O_CLOEXEC | O_NONBLOCK)) {
		ret = -errno;
		goto err_events;
	}
	m->fd = fd;
	m->stopping = false;
	m->pause_req = false;
	ret = -pthread_create(&m->thread, NULL, mon_thread, m);
	if (ret)
		goto err_pipe;
	m->thread_started = true;
	return 0;

err_pipe:
	close(m->wake[0]);
	close(m->wake[1]);
	m->wake[0] = -1;
	m->wake[1] = -1;
err_events:
	memreg_events_exit(&m->ev);
err_words:
	memreg_state_words_unmap(&m->sw);
err_close:
	close(fd);
	m->fd = -1;
	return ret;
}

struct held_key {
	__u64 key;
	bool ended;
};

static int cmp_held_key(const void *a, const void *b)
{
	const struct held_key *x = a, *y = b;

	return x->key < y->key ? -1 : x->key > y->key;
}

static void mon_stop(struct fid_mem_monitor *fid)
{
	struct memreg_monitor *m = to_mon(fid);
	unsigned int i, nr = 0, keys = 0, live = 0;
	struct held_key *keyv;
	struct memreg_stats st;

	MON_INC(m, stops);
	if (m->mode == MON_BLIND)
		return;

	if (m->thread_started) {
		pthread_mutex_lock(&m->pause_lock);
		m->stopping = true;
		pthread_cond_broadcast(&m->pause_cond);
		pthread_mutex_unlock(&m->pause_lock);
		mon_wake(m);
		pthread_join(m->thread, NULL);
		m->thread_started = false;
	}

	/*
	 * libfabric 1.17 never calls unsubscribe(): whatever is still
	 * subscribed goes now, one DEREGISTER per subscription. First the
	 * distinct keys held (subscriptions served by one CACHED watch share
	 * theirs), to compare with memreg's count.
	 */
	pthread_mutex_lock(&m->lock);
	keyv = calloc(m->nr_subs + 1, sizeof(*keyv));
	for (i = 0; keyv && i < MON_HASH_SIZE; i++) {
		struct mon_sub *s;

		for (s = m->by_range[i]; s; s = s->range_next) {
			keyv[nr].key = s->key;
			keyv[nr].ended = sub_ended(m, s);
			nr++;
		}
	}
	if (keyv) {
		qsort(keyv, nr, sizeof(*keyv), cmp_held_key);
		for (i = 0; i < nr; i++) {
			if (i && keyv[i].key == keyv[i - 1].key)
				continue;
			keys++;
			if (!keyv[i].ended)
				live++;
		}
		free(keyv);
	}
	m->stop_error = memreg_stats(m->fd, &m->stop_before);
	m->stop_keys = keys;
	m->stop_live_keys = live;
	MON_ADD(m, held_at_stop, m->nr_subs);
	for (i = 0; i < MON_HASH_SIZE; i++)
		while (m->by_range[i])
			sub_drop(m, m->by_range[i]);
	pthread_mutex_unlock(&m->lock);

	if (!m->stop_error)
		m->stop_error = memreg_stats(m->fd, &m->stop_after);
	if (!m->stop_error && m->stop_after.parked) {
		/* Parked watches hold nothing, but are still counted. */
		m->stop_flushed = true;
		memreg_flush(m->fd, NULL);
		m->stop_error = memreg_stats(m->fd, &st);
		if (!m->stop_error)
			m->stop_after = st;
	}
	m->stop_seen = true;

	memreg_events_exit(&m->ev);
	memreg_state_words_unmap(&m->sw);
	close(m->wake[0]);
	close(m->wake[1]);
	m->wake[0] = -1;
	m->wake[1] = -1;
	close(m->fd);
	m->fd = -1;
}

static int mon_subscribe(struct fid_mem_monitor *fid, const void *addr,
			 size_t len)
{
	struct memreg_monitor *m = to_mon(fid);
	struct mon_sub *s;
	int ret;

	MON_INC(m, subscribes);
	if (m->mode == MON_BLIND)
		return 0;

	pthread_mutex_lock(&m->lock);
	s = sub_find(m, (uintptr_t)addr, len);
	if (s) {
		if (sub_word_valid(m, s->key, s->slot, s->generation)) {
			/*
			 * The pages have not changed since the watch began,
			 * which was before the registration libfabric just
			 * made: it covers them.
			 */
			s->refs++;
			s->last_used = ++m->clock;
			MON_INC(m, reuses);
			pthread_mutex_unlock(&m->lock);
			return 0;
		}
		/* Ended: its event, if still unread, will find no subscription. */
		sub_drop(m, s);
	}
	ret = sub_register(m, (uintptr_t)addr, len);
	pthread_mutex_unlock(&m->lock);
	if (ret)
		MON_INC(m, subscribe_failures);
	return ret;
}

/* Not called by libfabric 1.17 (see README); kept for later versions. */
static void mon_unsubscribe(struct fid_mem_monitor *fid, const void *addr,
			    size_t len)
{
	struct memreg_monitor *m = to_mon(fid);
	struct mon_sub *s;

	MON_INC(m, unsubscribes);
	if (m->mode == MON_BLIND)
		return;

	pthread_mutex_lock(&m->lock);
	s = sub_find(m, (uintptr_t)addr, len);
	if (s && !--s->refs)
		sub_drop(m, s);
	pthread_mutex_unlock(&m->lock);
}

static bool mon_valid(struct fid_mem_monitor *fid, const void *addr, size_t len)
{
	struct memreg_monitor *m = to_mon(fid);
	struct mon_sub *s;
	__u64 key, generation;
	__u32 slot;

	MON_INC(m, valid_calls);
	if (m->mode == MON_BLIND)
		return true;

	pthread_mutex_lock(&m->lock);
	s = sub_find(m, (uintptr_t)addr, len);
	if (!s) {
		pthread_mutex_unlock(&m->lock);
		MON_INC(m, valid_false);
		return false;
	}
	key = s->key;
	slot = s->slot;
	generation = s->generation;
	s->last_used = ++m->clock;
	pthread_mutex_unlock(&m->lock);

	if (sub_word_valid(m, key, slot, generation))
		return true;
	MON_INC(m, valid_false);
	return false;
}

/* Installs the monitor; libfabric then uses it for every new MR cache. */
static int mon_import(struct memreg_monitor *m, enum mon_mode mode)
{
	struct fid *cache_fid;
	int ret;

	m->mode = mode;
	m->fd = -1;
	m->wake[0] = -1;
	m->wake[1] = -1;
	m->event_entries = MON_EVENT_ENTRIES;
	pthread_mutex_init(&m->lock, NULL);
	pthread_mutex_init(&m->pause_lock, NULL);
	pthread_cond_init(&m->pause_cond, NULL);

	m->ops.size = sizeof(m->ops);
	m->ops.start = mon_start;
	m->ops.stop = mon_stop;
	m->ops.subscribe = mon_subscribe;
	m->ops.unsubscribe = mon_unsubscribe;
	m->ops.valid = mon_valid;
	/* libfabric overwrites fid.context and fid.ops when it imports. */
	m->fid.fid.fclass = FI_CLASS_MEM_MONITOR;
	m->fid.export_ops = &m->ops;

	ret = fi_open(FI_VERSION(1, 13), "mr_cache", NULL, 0, 0, &cache_fid, NULL);
	if (ret)
		return ret;
	ret = fi_import_fid(cache_fid, &m->fid.fid, 0);
	fi_close(cache_fid);
	if (!ret)
		m->imported = true;
	return ret;
}

/* Releases the import (libfabric forgets the monitor) once nothing uses it. */
static void mon_unimport(struct memreg_monitor *m)
{
	if (m->imported)
		fi_close(&m->fid.fid);
	m->imported = false;
}

/*
 * Waits until the event thread has consumed every event written so far
 * and finished acting on it. False on timeout.
 */
static bool mon_quiesce(struct memreg_monitor *m, unsigned int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;

	if (m->mode != MON_MEMREG || !m->thread_started)
		return true;
	for (;;) {
		/* The ring first: the thread marks itself busy before consuming. */
		bool empty = !memreg_events_ready(&m->ev) &&
			     !memreg_events_overflowed(&m->ev);

		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (empty && !__atomic_load_n(&m->busy, __ATOMIC_SEQ_CST))
			return true;
		if (now_ns() > deadline)
			return false;
		sleep_us(200);
	}
}

/* Waits until more than @before ENDED/EVICTED events were read. */
static bool mon_wait_ends(struct memreg_monitor *m, unsigned long before,
			  unsigned int timeout_ms)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000ULL;

	while (MON_GET(m, ev_ended) + MON_GET(m, ev_evicted) <= before) {
		if (now_ns() > deadline)
			return false;
		sleep_us(200);
	}
	return mon_quiesce(m, timeout_ms);
}

static bool mon_pause(struct memreg_monitor *m, unsigned int timeout_ms)
{
	struct timespec ts;
	bool parked;

	pthread_mutex_lock(&m->pause_lock);
	m->pause_req = true;
	pthread_mutex_unlock(&m->pause_lock);
	mon_wake(m);

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += timeout_ms / 1000 + 1;
	pthread_mutex_lock(&m->pause_lock);
	while (!m->parked)
		if (pthread_cond_timedwait(&m->pause_cond, &m->pause_lock, &ts))
			break;
	parked = m->parked;
	pthread_mutex_unlock(&m->pause_lock);
	return parked;
}

static void mon_resume(struct memreg_monitor *m)
{
	pthread_mutex_lock(&m->pause_lock);
	m->pause_req = false;
	pthread_cond_broadcast(&m->pause_cond);
	pthread_mutex_unlock(&m->pause_lock);
}

/* Distinct keys held now, and the memreg context's stats. */
static int mon_kernel_view(struct memreg_monitor *m, unsigned int *subs,
			   struct memreg_stats *st)
{
	int ret;

	pthread_mutex_lock(&m->lock);
	*subs = m->nr_subs;
	ret = memreg_stats(m->fd, st);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/* ---- Network setup: dummy0, its address, siw0 ------------------------------ */

struct nl_msg {
	struct nlmsghdr nh;
	char buf[1024];
};

static void nl_init(struct nl_msg *msg, unsigned short type, unsigned short flags,
		    const void *hdr, size_t hdr_len)
{
	memset(msg, 0, sizeof(*msg));
	msg->nh.nlmsg_len = NLMSG_LENGTH(hdr_len);
	msg->nh.nlmsg_type = type;
	msg->nh.nlmsg_flags = flags;
	if (hdr_len)
		memcpy(NLMSG_DATA(&msg->nh), hdr, hdr_len);
}

/* Appends an attribute (struct rtattr and struct nlattr are alike). */
static struct rtattr *nl_put(struct nl_msg *msg, unsigned short type,
			     const void *data, size_t len)
{
	struct rtattr *rta = (struct rtattr *)((char *)&msg->nh +
					       NLMSG_ALIGN(msg->nh.nlmsg_len));

	rta->rta_type = type;
	rta->rta_len = RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(rta), data, len);
	msg->nh.nlmsg_len = NLMSG_ALIGN(msg->nh.nlmsg_len) + RTA_ALIGN(rta->rta_len);
	return rta;
}

static void nl_put_str(struct nl_msg *msg, unsigned short type, const char *s)
{
	nl_put(msg, type, s, strlen(s) + 1);
}

static void nl_nest_end(struct nl_msg *msg, struct rtattr *nest)
{
	nest->rta_len = (unsigned short)((char *)&msg->nh + msg->nh.nlmsg_len -
					 (char *)nest);
}

static int nl_open(int proto)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, proto);

	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	return fd;
}

static int nl_send(int fd, struct nl_msg *msg, unsigned int seq)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };

	msg->nh.nlmsg_seq = seq;
	if (sendto(fd, &msg->nh, msg->nh.nlmsg_len, 0, (struct sockaddr *)&sa,
		   sizeof(sa)) < 0)
		return -errno;
	return 0;
}

/*
 * Sends @msg (with NLM_F_ACK) and returns the kernel's answer: 0 or
 * -errno.
 */
static int nl_talk(int proto, struct nl_msg *msg)
{
	static unsigned int seq = 1000;
	char buf[8192] __attribute__((aligned(8)));
	int fd, ret;

	fd = nl_open(proto);
	if (fd < 0)
		return fd;
	msg->nh.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	ret = nl_send(fd, msg, ++seq);
	while (!ret) {
		struct nlmsghdr *nh;
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

		if (n < 0) {
			ret = -errno;
			break;
		}
		for (nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, (size_t)n);
		     nh = NLMSG_NEXT(nh, n)) {
			if (nh->nlmsg_seq != seq)
				continue;
			if (nh->nlmsg_type == NLMSG_ERROR) {
				struct nlmsgerr *err = NLMSG_DATA(nh);

				ret = err->error ? err->error : 1;
				break;
			}
		}
	}
	close(fd);
	return ret == 1 ? 0 : ret;
}

static int link_create_dummy(const char *name)
{
	struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC };
	struct nl_msg msg;
	struct rtattr *info;

	nl_init(&msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &ifi, sizeof(ifi));
	nl_put_str(&msg, IFLA_IFNAME, name);
	info = nl_put(&msg, IFLA_LINKINFO, NULL, 0);
	nl_put(&msg, IFLA_INFO_KIND, "dummy", strlen("dummy"));
	nl_nest_end(&msg, info);
	return nl_talk(NETLINK_ROUTE, &msg);
}

static int link_delete(int ifindex)
{
	struct ifinfomsg ifi = { .ifi_family = AF_UNSPEC, .ifi_index = ifindex };
	struct nl_msg msg;

	nl_init(&msg, RTM_DELLINK, 0, &ifi, sizeof(ifi));
	return nl_talk(NETLINK_ROUTE, &msg);
}

static int link_up(int ifindex)
{
	struct ifinfomsg ifi = {
		.ifi_family = AF_UNSPEC,
		.ifi_index = ifindex,
		.ifi_flags = IFF_UP,
		.ifi_change = IFF_UP,
	};
	struct nl_msg msg;

	nl_init(&msg, RTM_NEWLINK, 0, &ifi, sizeof(ifi));
	return nl_talk(NETLINK_ROUTE, &msg);
}

static int addr_add(int ifindex, const char *addr, unsigned char prefix)
{
	struct ifaddrmsg ifa = {
		.ifa_family = AF_INET,
		.ifa_prefixlen = prefix,
		.ifa_scope = RT_SCOPE_UNIVERSE,
		.ifa_index = (unsigned int)ifindex,
	};
	struct in_addr in;
	struct nl_msg msg;

	if (inet_pton(AF_INET, addr, &in) != 1)
		return -EINVAL;
	nl_init(&msg, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, &ifa, sizeof(ifa));
	nl_put(&msg, IFA_LOCAL, &in, sizeof(in));
	nl_put(&msg, IFA_ADDRESS, &in, sizeof(in));
	return nl_talk(NETLINK_ROUTE, &msg);
}

/*
 * RDMA_NLDEV_CMD_GET dump: 1 when an RDMA device called @name exists, 0
 * when not, -errno when RDMA netlink cannot be asked (no CONFIG_INFINIBAND).
 */
static int rdma_dev_exists(const char *name)
{
	char buf[16384] __attribute__((aligned(8)));
	struct nl_msg msg;
	int fd, ret, found = 0;
	bool done = false;

	fd = nl_open(NETLINK_RDMA);
	if (fd < 0)
		return fd;
	nl_init(&msg, RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, RDMA_NLDEV_CMD_GET),
		NLM_F_REQUEST | NLM_F_DUMP, NULL, 0);
	ret = nl_send(fd, &msg, 1);
	while (!ret && !done) {
		struct nlmsghdr *nh;
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

		if (n < 0) {
			ret = -errno;
			break;
		}
		for (nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, (size_t)n);
		     nh = NLMSG_NEXT(nh, n)) {
			struct rtattr *rta;
			int len;

			if (nh->nlmsg_type == NLMSG_DONE) {
				done = true;
				break;
			}
			if (nh->nlmsg_type == NLMSG_ERROR) {
				struct nlmsgerr *err = NLMSG_DATA(nh);

				ret = err->error;
				done = true;
				break;
			}
			/* RDMA netlink has no family header. */
			rta = NLMSG_DATA(nh);
			len = (int)NLMSG_PAYLOAD(nh, 0);
			for (; RTA_OK(rta, len); rta = RTA_NEXT(rta, len))
				if (rta->rta_type == RDMA_NLDEV_ATTR_DEV_NAME &&
				    !strncmp(RTA_DATA(rta), name, RTA_PAYLOAD(rta)))
					found = 1;
		}
	}
	close(fd);
	return ret ? ret : found;
}

static int rdma_link_add(const char *name, const char *type, const char *netdev)
{
	struct nl_msg msg;

	nl_init(&msg, RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, RDMA_NLDEV_CMD_NEWLINK), 0,
		NULL, 0);
	nl_put_str(&msg, RDMA_NLDEV_ATTR_DEV_NAME, name);
	nl_put_str(&msg, RDMA_NLDEV_ATTR_LINK_TYPE, type);
	nl_put_str(&msg, RDMA_NLDEV_ATTR_NDEV_NAME, netdev);
	return nl_talk(NETLINK_RDMA, &msg);
}

/* Creates @path as the character device named in the sysfs file @dev_file. */
static void ensure_chardev(const char *path, const char *dev_file)
{
	unsigned int major, minor;
	FILE *f;

	if (!access(path, F_OK))
		return;
	f = fopen(dev_file, "r");
	if (!f)
		return;
	if (fscanf(f, "%u:%u", &major, &minor) == 2) {
		mkdir("/dev/infiniband", 0755);
		if (mknod(path, S_IFCHR | 0666, makedev(major, minor)))
			diag("mknod %s: %s", path, strerror(errno));
	}
	fclose(f);
}

/* True when libibverbs lists @name (siw's provider is registered). */
static bool verbs_has_device(const char *name)
{
	struct ibv_device **list;
	bool found = false;
	int i, n = 0;

	list = ibv_get_device_list(&n);
	if (!list)
		return false;
	for (i = 0; i < n; i++)
		if (!strcmp(ibv_get_device_name(list[i]), name))
			found = true;
	ibv_free_device_list(list);
	return found;
}

/*
 * Makes siw0 exist: over dummy0 (192.0.2.1/24, up) with lo up, unless it
 * is already there. Only where @may_setup (the project's guest) is the
 * network touched. Returns 0 or -errno with *why filled.
 */
static int siw_setup(bool may_setup, char *why, size_t why_len, bool *created)
{
	bool made_dummy = false;
	int ret, ifindex, lo;
	uint64_t deadline;

	*created = false;
	if (may_setup && access("/sys/class", F_OK)) {
		mkdir("/sys", 0755);
		if (mount("sysfs", "/sys", "sysfs", 0, NULL))
			diag("mount sysfs: %s", strerror(errno));
	}

	ret = rdma_dev_exists(RDMA_DEV_NAME);
	if (ret < 0) {
		snprintf(why, why_len, "RDMA netlink unavailable: %s", strerror(-ret));
		return ret;
	}
	if (!ret) {
		if (!may_setup) {
			snprintf(why, why_len, "no %s, and network setup is only done "
				 "where /dev/memreg exists or with --setup-net",
				 RDMA_DEV_NAME);
			return -ENODEV;
		}
		ret = link_create_dummy(NETDEV_NAME);
		if (ret && ret != -EEXIST) {
			snprintf(why, why_len, "cannot create %s: %s", NETDEV_NAME,
				 strerror(-ret));
			return ret;
		}
		made_dummy = !ret;
		ifindex = (int)if_nametoindex(NETDEV_NAME);
		lo = (int)if_nametoindex("lo");
		if (!ifindex) {
			snprintf(why, why_len, "%s has no index", NETDEV_NAME);
			return -ENODEV;
		}
		ret = addr_add(ifindex, NODE_ADDR, NODE_PREFIX);
		if (!ret || ret == -EEXIST)
			ret = link_up(ifindex);
		if (!ret && lo)
			ret = link_up(lo);
		if (!ret)
			ret = rdma_link_add(RDMA_DEV_NAME, "siw", NETDEV_NAME);
		if (ret && ret != -EEXIST) {
			snprintf(why, why_len, "cannot create %s over %s: %s",
				 RDMA_DEV_NAME, NETDEV_NAME, strerror(-ret));
			if (made_dummy)
				link_delete(ifindex);
			return ret;
		}
		*created = true;
	}

	if (may_setup) {
		ensure_chardev("/dev/infiniband/rdma_cm", "/sys/class/misc/rdma_cm/dev");
		ensure_chardev("/dev/infiniband/uverbs0",
			       "/sys/class/infiniband_verbs/uverbs0/dev");
	}
	deadline = now_ns() + 3000000000ULL;
	while (!verbs_has_device(RDMA_DEV_NAME)) {
		if (now_ns() > deadline) {
			snprintf(why, why_len, "%s exists but libibverbs does not "
				 "list it (sysfs, /dev/infiniband?)", RDMA_DEV_NAME);
			return -ENODEV;
		}
		sleep_us(50000);
	}
	return 0;
}

/* ---- libfabric: two MSG endpoints over siw -------------------------------- */

struct side {
	struct fid_domain *domain;
	struct fid_eq *eq;
	struct fid_cq *cq;
	struct fid_ep *ep;
	bool connected;
};

struct ofi {
	const char *port;
	struct fi_info *hints;
	struct fi_info *pinfo;		/* the passive endpoint's */
	struct fi_info *cinfo;		/* the client's */
	struct fid_fabric *fabric;
	struct fid_pep *pep;
	struct side srv;		/* the target of the writes */
	struct side cli;		/* their initiator */
	size_t max_msg;

	/* Control buffers, registered once through the cache. */
	void *src;			/* the client's source, 1 MiB */
	void *msg;			/* the client's SEND buffer */
	void *rx;			/* the server's RECV buffer */
	struct fid_mr *src_mr, *msg_mr, *rx_mr;
	struct fi_context rx_ctx, tx_ctx;

	unsigned long starts_after_first_domain;
	unsigned long ctl_subscribes;	/* subscribe() calls the 3 buffers made */
	int ctl_regs;			/* ... of 3 fi_mr_reg calls */
};

#define SRC_LEN		MIB
#define CTL_LEN		(4 * KIB)

static void *map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	memset(p, 0, len);
	return p;
}

static int mr_reg(struct fid_domain *domain, void *buf, size_t len,
		  uint64_t access, struct fid_mr **mr)
{
	return fi_mr_reg(domain, buf, len, access, 0, 0, 0, mr, NULL);
}

static void mr_close(struct fid_mr **mr)
{
	if (*mr)
		fi_close(&(*mr)->fid);
	*mr = NULL;
}

/* Registers a control buffer, counting the subscribe() calls it made. */
static int ctl_reg(struct ofi *o, struct fid_domain *domain, void *buf,
		   size_t len, uint64_t access, struct fid_mr **mr)
{
	unsigned long before = MON_GET(&mon, subscribes);
	int ret = mr_reg(domain, buf, len, access, mr);

	if (!ret) {
		o->ctl_regs++;
		o->ctl_subscribes += MON_GET(&mon, subscribes) - before;
	}
	return ret;
}

static int cq_wait(struct fid_cq *cq, unsigned int n, const char *what)
{
	uint64_t deadline = now_ns() + OP_TIMEOUT_MS * 1000000ULL;
	struct fi_cq_entry comp[4];

	while (n) {
		ssize_t ret = fi_cq_read(cq, comp, n < 4 ? n : 4);

		if (ret > 0) {
			n -= (unsigned int)ret;
			continue;
		}
		if (ret == -FI_EAVAIL) {
			struct fi_cq_err_entry err;

			memset(&err, 0, sizeof(err));
			fi_cq_readerr(cq, &err, 0);
			diag("%s: completion error: %s (%s)", what,
			     fi_strerror(err.err),
			     fi_cq_strerror(cq, err.prov_errno, err.err_data,
					    NULL, 0));
			return err.err ? -err.err : -EIO;
		}
		if (ret != -FI_EAGAIN) {
			diag("%s: fi_cq_read: %s", what, fi_strerror((int)-ret));
			return (int)ret;
		}
		if (now_ns() > deadline) {
			diag("%s: no completion after %d ms", what, OP_TIMEOUT_MS);
			return -ETIMEDOUT;
		}
	}
	return 0;
}

static int post_recv(struct ofi *o)
{
	return (int)fi_recv(o->srv.ep, o->rx, CTL_LEN, fi_mr_desc(o->rx_mr), 0,
			    &o->rx_ctx);
}

static int side_open(struct ofi *o, struct side *s, struct fi_info *info,
		     bool own_eq)
{
	struct fi_cq_attr cq_attr = {
		.format = FI_CQ_FORMAT_CONTEXT,
		.wait_obj = FI_WAIT_NONE,
	};
	struct fi_eq_attr eq_attr = { .wait_obj = FI_WAIT_UNSPEC };
	int ret;

	ret = fi_domain(o->fabric, info, &s->domain, NULL);
	if (ret)
		return ret;
	if (own_eq) {
		ret = fi_eq_open(o->fabric, &eq_attr, &s->eq, NULL);
		if (ret)
			return ret;
	}
	ret = fi_cq_open(s->domain, &cq_attr, &s->cq, NULL);
	if (ret)
		return ret;
	ret = fi_endpoint(s->domain, info, &s->ep, NULL);
	if (ret)
		return ret;
	ret = fi_ep_bind(s->ep, &s->eq->fid, 0);
	if (!ret)
		ret = fi_ep_bind(s->ep, &s->cq->fid, FI_TRANSMIT | FI_RECV);
	if (!ret)
		ret = fi_enable(s->ep);
	return ret;
}

static int ofi_getinfo(struct ofi *o)
{
	int ret;

	o->hints = fi_allocinfo();
	if (!o->hints)
		return -ENOMEM;
	o->hints->ep_attr->type = FI_EP_MSG;
	o->hints->caps = FI_MSG | FI_RMA;
	o->hints->mode = FI_CONTEXT | FI_RX_CQ_DATA;
	o->hints->addr_format = FI_SOCKADDR_IN;
	o->hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR |
					 FI_MR_ALLOCATED | FI_MR_PROV_KEY;
	o->hints->fabric_attr->prov_name = strdup("verbs");

	ret = fi_getinfo(OFI_VERSION, NODE_ADDR, o->port, FI_SOURCE, o->hints,
			 &o->pinfo);
	if (ret)
		return ret;
	o->max_msg = o->pinfo->ep_attr->max_msg_size;
	if (!o->max_msg)
		o->max_msg = SRC_LEN;
	return 0;
}

/*
 * The passive endpoint listens, the client connects, both EQs are read in
 * turn (verbs progresses a connecting side only while its EQ is read), and
 * the server's endpoint is made on FI_CONNREQ in a domain of its own.
 */
static int ofi_connect(struct ofi *o)
{
	struct fi_eq_attr eq_attr = { .wait_obj = FI_WAIT_UNSPEC };
	uint64_t deadline;
	int ret;

	ret = fi_fabric(o->pinfo->fabric_attr, &o->fabric, NULL);
	if (ret)
		return ret;
	ret = fi_eq_open(o->fabric, &eq_attr, &o->srv.eq, NULL);
	if (ret)
		return ret;
	ret = fi_passive_ep(o->fabric, o->pinfo, &o->pep, NULL);
	if (!ret)
		ret = fi_pep_bind(o->pep, &o->srv.eq->fid, 0);
	if (!ret)
		ret = fi_listen(o->pep);
	if (ret)
		return ret;

	ret = fi_getinfo(OFI_VERSION, NODE_ADDR, o->port, 0, o->hints, &o->cinfo);
	if (ret)
		return ret;
	ret = side_open(o, &o->cli, o->cinfo, true);
	o->starts_after_first_domain = MON_GET(&mon, starts);
	if (ret)
		return ret;
	ret = fi_connect(o->cli.ep, o->cinfo->dest_addr, NULL, 0);
	if (ret)
		return ret;

	deadline = now_ns() + OP_TIMEOUT_MS * 1000000ULL;
	while (!o->srv.connected || !o->cli.connected) {
		struct side *sides[2] = { &o->srv, &o->cli };
		unsigned int i;

		for (i = 0; i < 2; i++) {
			union {
				struct fi_eq_cm_entry cm;
				char buf[sizeof(struct fi_eq_cm_entry) + 256];
			} entry;
			struct fi_eq_err_entry err;
			uint32_t event;
			ssize_t rd;

			rd = fi_eq_read(sides[i]->eq, &event, &entry, sizeof(entry), 0);
			if (rd == -FI_EAGAIN)
				continue;
			if (rd == -FI_EAVAIL) {
				memset(&err, 0, sizeof(err));
				fi_eq_readerr(sides[i]->eq, &err, 0);
				diag("%s EQ error: %s (%s)", i ? "client" : "server",
				     fi_strerror(err.err),
				     fi_eq_strerror(sides[i]->eq, err.prov_errno,
						    err.err_data, NULL, 0));
				return err.err ? -err.err : -EIO;
			}
			if (rd < 0)
				return (int)rd;
			if (event == FI_CONNREQ && i == 0) {
				struct fi_info *info = entry.cm.info;

				ret = side_open(o, &o->srv, info, false);
				if (!ret)
					ret = ctl_reg(o, o->srv.domain, o->rx,
						      CTL_LEN, FI_RECV, &o->rx_mr);
				if (!ret)
					ret = post_recv(o);
				if (!ret)
					ret = fi_accept(o->srv.ep, NULL, 0);
				fi_freeinfo(info);
				if (ret)
					return ret;
			} else if (event == FI_CONNECTED) {
				sides[i]->connected = true;
			} else {
				diag("%s EQ: unexpected event %u", i ? "client" : "server",
				     event);
			}
		}
		if (now_ns() > deadline) {
			diag("not connected after %d ms", OP_TIMEOUT_MS);
			return -ETIMEDOUT;
		}
	}

	ret = ctl_reg(o, o->cli.domain, o->src, SRC_LEN, FI_WRITE | FI_SEND,
		      &o->src_mr);
	if (!ret)
		ret = ctl_reg(o, o->cli.domain, o->msg, CTL_LEN, FI_SEND, &o->msg_mr);
	return ret;
}

/*
 * fi_write of @len bytes of the source buffer (filled by the caller) to
 * @dst through @key, then a SEND carrying @tag. The server's RECV of that
 * SEND completes after the WRITE's data was placed (iWARP orders them), so
 * the bytes can be checked as soon as this returns 0.
 */
static int ofi_write(struct ofi *o, void *dst, size_t len, uint64_t key,
		     uint64_t tag)
{
	size_t off, chunk;
	ssize_t ret;

	for (off = 0; off < len; off += chunk) {
		chunk = len - off < o->max_msg ? len - off : o->max_msg;
		ret = fi_write(o->cli.ep, (char *)o->src + off, chunk,
			       fi_mr_desc(o->src_mr), 0,
			       (uint64_t)(uintptr_t)dst + off, key, &o->tx_ctx);
		if (ret) {
			diag("fi_write: %s", fi_strerror((int)-ret));
			return (int)ret;
		}
		ret = cq_wait(o->cli.cq, 1, "fi_write");
		if (ret)
			return (int)ret;
	}
	memcpy(o->msg, &tag, sizeof(tag));
	ret = fi_send(o->cli.ep, o->msg, sizeof(tag), fi_mr_desc(o->msg_mr), 0,
		      &o->tx_ctx);
	if (ret) {
		diag("fi_send: %s", fi_strerror((int)-ret));
		return (int)ret;
	}
	ret = cq_wait(o->cli.cq, 1, "fi_send");
	if (!ret)
		ret = cq_wait(o->srv.cq, 1, "fi_recv");
	if (ret)
		return (int)ret;
	if (memcmp(o->rx, &tag, sizeof(tag))) {
		diag("the SEND after the write carried the wrong tag");
		return -EBADMSG;
	}
	return post_recv(o);
}

static void side_close(struct side *s)
{
	if (s->ep)
		fi_close(&s->ep->fid);
	if (s->cq)
		fi_close(&s->cq->fid);
	s->ep = NULL;
	s->cq = NULL;
}

/* Closes everything; the last domain's close stops the monitor. */
static void ofi_close(struct ofi *o)
{
	mr_close(&o->src_mr);
	mr_close(&o->msg_mr);
	mr_close(&o->rx_mr);
	side_close(&o->cli);
	side_close(&o->srv);
	if (o->pep)
		fi_close(&o->pep->fid);
	if (o->cli.eq)
		fi_close(&o->cli.eq->fid);
	if (o->srv.eq)
		fi_close(&o->srv.eq->fid);
	if (o->cli.domain)
		fi_close(&o->cli.domain->fid);
	if (o->srv.domain)
		fi_close(&o->srv.domain->fid);
	if (o->fabric)
		fi_close(&o->fabric->fid);
	o->pep = NULL;
	o->cli.eq = NULL;
	o->srv.eq = NULL;
	o->cli.domain = NULL;
	o->srv.domain = NULL;
	o->fabric = NULL;
	if (o->cinfo)
		fi_freeinfo(o->cinfo);
	if (o->pinfo)
		fi_freeinfo(o->pinfo);
	if (o->hints)
		fi_freeinfo(o->hints);
	o->cinfo = NULL;
	o->pinfo = NULL;
	o->hints = NULL;
}

/* ---- Test buffers: freed and re-allocated at the same address -------------- */

enum realloc_how {
	RE_MUNMAP,	/* munmap, then mmap at the same address */
	RE_FIXED,	/* mmap MAP_FIXED over the live mapping */
	RE_MREMAP,	/* mremap the old pages away, then mmap at the address */
	RE_DONTNEED,	/* madvise(MADV_DONTNEED): new pages on the next touch */
	RE_NR,
};

static const char *const realloc_name[RE_NR] = {
	[RE_MUNMAP] = "munmap+mmap",
	[RE_FIXED] = "mmap MAP_FIXED over it",
	[RE_MREMAP] = "mremap away+mmap",
	[RE_DONTNEED] = "MADV_DONTNEED",
};

struct tbuf {
	char *addr;
	size_t len;
	char *old;	/* RE_MREMAP: where the old pages are now, or NULL */
};

static int tbuf_map(struct tbuf *b, size_t len)
{
	b->addr = map_anon(len);
	b->len = len;
	b->old = NULL;
	return b->addr ? 0 : -ENOMEM;
}

static void tbuf_unmap(struct tbuf *b)
{
	if (b->old)
		munmap(b->old, b->len);
	if (b->addr)
		munmap(b->addr, b->len);
	b->old = NULL;
	b->addr = NULL;
}

static void tbuf_drop_old(struct tbuf *b)
{
	if (b->old)
		munmap(b->old, b->len);
	b->old = NULL;
}

/*
 * Frees the buffer's memory and allocates new memory at the same address,
 * faulted in (zeroes). -EADDRNOTAVAIL when the address could not be had.
 */
static int tbuf_realloc(struct tbuf *b, enum realloc_how how)
{
	const int prot = PROT_READ | PROT_WRITE;
	const int flags = MAP_PRIVATE | MAP_ANONYMOUS;
	void *p = b->addr, *old;

	tbuf_drop_old(b);
	switch (how) {
	case RE_MUNMAP:
		if (munmap(b->addr, b->len))
			return -errno;
		p = mmap(b->addr, b->len, prot, flags | MAP_FIXED_NOREPLACE, -1, 0);
		break;
	case RE_FIXED:
		p = mmap(b->addr, b->len, prot, flags | MAP_FIXED, -1, 0);
		break;
	case RE_MREMAP:
		old = mmap(NULL, b->len, PROT_NONE, flags | MAP_NORESERVE, -1, 0);
		if (old == MAP_FAILED)
			return -errno;
		p = mremap(b->addr, b->len, b->len, MREMAP_MAYMOVE | MREMAP_FIXED,
			   old);
		if (p != old) {
			munmap(old, b->len);
			return p == MAP_FAILED ? -errno : -EADDRNOTAVAIL;
		}
		b->old = old;
		p = mmap(b->addr, b->len, prot, flags | MAP_FIXED_NOREPLACE, -1, 0);
		break;
	case RE_DONTNEED:
		if (madvise(b->addr, b->len, MADV_DONTNEED))
			return -errno;
		break;
	default:
		return -EINVAL;
	}
	if (p == MAP_FAILED)
		return -errno;
	if (p != b->addr) {
		/* An old kernel took MAP_FIXED_NOREPLACE as a hint. */
		munmap(p, b->len);
		return -EADDRNOTAVAIL;
	}
	memset(b->addr, 0, b->len);
	return 0;
}

/* ---- The checks with the memreg monitor ----------------------------------- */

struct tally {
	unsigned int rounds;
	unsigned int miss_then_hit;	/* fresh memory: miss, then a hit */
	unsigned int same_addr;		/* re-allocations at the same address */
	unsigned int realloc_miss;	/* ... after which fi_mr_reg missed */
	unsigned int writes;
	unsigned int writes_ok;
	unsigned int moved;		/* RE_MREMAP rounds */
	unsigned int moved_clean;	/* ... whose old pages kept their bytes */
	unsigned int event_rounds;
	unsigned int event_ok;
	unsigned int errors;
};

static uint64_t next_seed = 1;

/* fi_write of a fresh pattern into @dst; true when it landed there. */
static bool write_check(struct ofi *o, void *dst, size_t len, uint64_t key,
			uint64_t *seed_out)
{
	uint64_t seed = next_seed++;

	pattern_fill(o->src, len, seed);
	if (seed_out)
		*seed_out = seed;
	if (ofi_write(o, dst, len, key, seed))
		return false;
	return pattern_match(dst, len, seed);
}

/*
 * One round on @b: fresh memory misses then hits; a write lands; the MR
 * goes back to the cache; the memory is freed and re-allocated at the same
 * address (@how); the next fi_mr_reg must miss and a write through it must
 * land in the new pages, never in the old ones. With @via_event the test
 * first waits for the ENDED event to reach the cache (notify), and then
 * the cache must miss without even asking valid().
 */
static void run_round(struct ofi *o, struct tbuf *b, enum realloc_how how,
		      bool via_event, struct tally *t)
{
	struct fid_mr *mr1 = NULL, *mr1b = NULL, *mr2 = NULL;
	struct mon_counters c0, c1;
	uint64_t seed_p = 0;
	bool ok, ev_ok = false;
	int ret;

	t->rounds++;
	if (!mon_quiesce(&mon, EVENT_TIMEOUT_MS))
		diag("round %u: the event thread did not settle", t->rounds);

	/* Fresh memory: a miss (one subscribe), then a hit. */
	mon_counters(&mon, &c0);
	ret = mr_reg(o->srv.domain, b->addr, b->len, FI_REMOTE_WRITE, &mr1);
	if (ret)
		goto err;
	mon_counters(&mon, &c1);
	ok = c1.subscribes == c0.subscribes + 1;
	ret = mr_reg(o->srv.domain, b->addr, b->len, FI_REMOTE_WRITE, &mr1b);
	if (ret)
		goto err;
	mon_counters(&mon, &c0);
	ok = ok && mr1b == mr1 && fi_mr_key(mr1b) == fi_mr_key(mr1) &&
	     c0.subscribes == c1.subscribes && c0.valid_calls == c1.valid_calls + 1;
	mr_close(&mr1b);
	if (ok)
		t->miss_then_hit++;
	else
		diag("round %u (%zu KiB): fresh memory did not miss then hit",
		     t->rounds, b->len / KIB);

	t->writes++;
	if (write_check(o, b->addr, b->len, fi_mr_key(mr1), &seed_p))
		t->writes_ok++;
	else
		diag("round %u: the write before re-allocation did not land",
		     t->rounds);
	mr_close(&mr1);

	/* Free and re-allocate at the same address. */
	mon_counters(&mon, &c0);
	ret = tbuf_realloc(b, how);
	if (ret) {
		diag("round %u: %s: %s", t->rounds, realloc_name[how],
		     strerror(-ret));
		goto err;
	}
	t->same_addr++;
	if (via_event) {
		t->event_rounds++;
		ev_ok = mon_wait_ends(&mon, c0.ev_ended + c0.ev_evicted,
				      EVENT_TIMEOUT_MS);
		mon_counters(&mon, &c1);
		ev_ok = ev_ok && c1.notifies > c0.notifies;
	}

	mon_counters(&mon, &c0);
	ret = mr_reg(o->srv.domain, b->addr, b->len, FI_REMOTE_WRITE, &mr2);
	if (ret)
		goto err;
	mon_counters(&mon, &c1);
	if (c1.subscribes == c0.subscribes + 1)
		t->realloc_miss++;
	else
		diag("round %u (%zu KiB, %s): fi_mr_reg after re-allocation hit",
		     t->rounds, b->len / KIB, realloc_name[how]);
	if (via_event) {
		/* The entry was gone already: nothing to ask valid() about. */
		if (ev_ok && c1.valid_calls == c0.valid_calls)
			t->event_ok++;
		else
			diag("round %u (%s): the free did not reach the cache "
			     "through an event", t->rounds, realloc_name[how]);
	}

	t->writes++;
	if (write_check(o, b->addr, b->len, fi_mr_key(mr2), NULL))
		t->writes_ok++;
	else
		diag("round %u (%zu KiB, %s): the write after re-allocation did "
		     "not land in the new pages", t->rounds, b->len / KIB,
		     realloc_name[how]);
	if (b->old) {
		t->moved++;
		if (pattern_match(b->old, b->len, seed_p))
			t->moved_clean++;
		else
			diag("round %u: the old pages changed after re-allocation",
			     t->rounds);
	}
	mr_close(&mr2);
	tbuf_drop_old(b);

	/* Fresh memory for the next round on this buffer. */
	ret = tbuf_realloc(b, RE_FIXED);
	if (ret)
		goto err;
	return;

err:
	mr_close(&mr1b);
	mr_close(&mr1);
	mr_close(&mr2);
	t->errors++;
	diag("round %u: %s", t->rounds, fi_strerror(-ret));
}

static void check_hits(struct ofi *o)
{
	struct fid_mr *mr1 = NULL, *mr2 = NULL, *mr3 = NULL;
	struct mon_counters c0, c1, c2;
	struct tbuf b;
	bool hit, sub_hit;
	int ret;

	if (tbuf_map(&b, 64 * KIB)) {
		tap(false, "a second fi_mr_reg of one buffer is a cache hit (no memory)");
		return;
	}
	mon_counters(&mon, &c0);
	ret = mr_reg(o->srv.domain, b.addr, b.len, FI_REMOTE_WRITE, &mr1);
	mon_counters(&mon, &c1);
	if (!ret)
		ret = mr_reg(o->srv.domain, b.addr, b.len, FI_REMOTE_WRITE, &mr2);
	mon_counters(&mon, &c2);
	hit = !ret && c1.subscribes == c0.subscribes + 1 && mr2 == mr1 &&
	      fi_mr_key(mr2) == fi_mr_key(mr1) && c2.subscribes == c1.subscribes &&
	      c2.valid_calls == c1.valid_calls + 1;
	tap(hit, "a second fi_mr_reg of the same 64 KiB buffer is a cache hit "
	    "(same MR and key, no subscribe, one valid())");
	if (ret)
		diag("fi_mr_reg: %s", fi_strerror(-ret));

	/* A page inside it: served by the same entry, and writable through it. */
	ret = mr_reg(o->srv.domain, b.addr + 4 * KIB, 4 * KIB, FI_REMOTE_WRITE,
		     &mr3);
	sub_hit = !ret && mr3 == mr1 &&
		  MON_GET(&mon, subscribes) == c2.subscribes &&
		  write_check(o, b.addr + 4 * KIB, 4 * KIB, fi_mr_key(mr3), NULL);
	tap(sub_hit, "a page inside a cached buffer is served by its entry, and "
	    "an fi_write through it lands");
	mr_close(&mr3);
	mr_close(&mr2);
	mr_close(&mr1);
	tbuf_unmap(&b);
}

static void check_kernel_view(void)
{
	struct memreg_stats st;
	unsigned int subs;
	int ret;

	ret = mon_kernel_view(&mon, &subs, &st);
	/* Parked watches, if the module parks them, are not the monitor's. */
	tap(!ret && st.watches >= 1 && st.watch_pages >= 1 &&
	    st.pages_pinned == 0 && st.watches <= subs + st.parked,
	    "memreg watches the cached buffers and pins nothing (watches %llu, "
	    "watch pages %llu, pages pinned %llu; %u subscriptions)",
	    (unsigned long long)st.watches, (unsigned long long)st.watch_pages,
	    (unsigned long long)st.pages_pinned, subs);
	if (ret)
		diag("STATS: %s", strerror(-ret));
}

static void check_rounds(struct ofi *o, unsigned int nr_rounds)
{
	static const size_t sizes[] = { 4 * KIB, 64 * KIB, MIB };
	struct tbuf bufs[ARRAY_SIZE(sizes)];
	struct mon_counters c0, c1;
	struct tally t = { 0 };
	unsigned int r, i;

	for (i = 0; i < ARRAY_SIZE(sizes); i++) {
		if (tbuf_map(&bufs[i], sizes[i])) {
			tap(false, "test buffers");
			while (i--)
				tbuf_unmap(&bufs[i]);
			return;
		}
	}
	mon_counters(&mon, &c0);
	for (r = 0; r < nr_rounds; r++) {
		enum realloc_how how = (enum realloc_how)(r % RE_NR);
		/* Every other group of RE_NR rounds waits for the event. */
		bool via_event = how != RE_DONTNEED && (r / RE_NR) % 2;

		run_round(o, &bufs[r % ARRAY_SIZE(sizes)], how, via_event, &t);
	}
	mon_counters(&mon, &c1);
	for (i = 0; i < ARRAY_SIZE(sizes); i++)
		tbuf_unmap(&bufs[i]);

	tap(!t.errors && t.miss_then_hit == t.rounds,
	    "%u/%u rounds: the first fi_mr_reg of fresh memory missed and the "
	    "second hit", t.miss_then_hit, t.rounds);
	tap(!t.errors && t.same_addr == t.rounds && t.realloc_miss == t.rounds,
	    "%u/%u re-allocations at the same address made fi_mr_reg miss (%s, "
	    "%s, %s, %s; 4 KiB, 64 KiB, 1 MiB)", t.realloc_miss, t.rounds,
	    realloc_name[RE_MUNMAP], realloc_name[RE_FIXED],
	    realloc_name[RE_MREMAP], realloc_name[RE_DONTNEED]);
	tap(!t.errors && t.writes_ok == t.writes && t.writes == 2 * t.rounds,
	    "%u/%u fi_writes landed in the memory at the address now (a fresh "
	    "pattern each)", t.writes_ok, 2 * t.rounds);
	tap(t.moved && t.moved_clean == t.moved,
	    "%u/%u old pages moved away by mremap kept their bytes: nothing "
	    "written after re-allocation reached them", t.moved_clean, t.moved);
	tap(t.event_rounds && t.event_ok == t.event_rounds,
	    "%u/%u frees reached the cache as an ENDED event and notify() before "
	    "the next fi_mr_reg", t.event_ok, t.event_rounds);
	diag("rounds: valid() said no %lu times (%lu revalidations, %lu resumed), "
	     "events: %lu ended, %lu suspended, %lu resumed, %lu late and ignored",
	     c1.valid_false - c0.valid_false, c1.revalidations - c0.revalidations,
	     c1.revalidated - c0.revalidated, c1.ev_ended - c0.ev_ended,
	     c1.ev_suspended - c0.ev_suspended, c1.ev_resumed - c0.ev_resumed,
	     c1.ev_stale - c0.ev_stale);
}

/*
 * The event ring overflows while the thread is paused: 100 watches end at
 * once into a ring of 64. The monitor must resync and drop every range;
 * each page registered again misses, and a write lands.
 */
static void check_overflow(struct ofi *o)
{
	enum { NR = 100 };
	const size_t page = 4 * KIB;
	struct fid_mr *mr[NR] = { NULL };
	struct mon_counters c0, c1;
	unsigned int i, misses = 0;
	bool overflowed = false, paused, ok;
	struct tbuf b;
	int ret = 0;

	if (tbuf_map(&b, NR * page)) {
		tap(false, "event ring overflow (no memory)");
		return;
	}
	for (i = 0; i < NR && !ret; i++)
		ret = mr_reg(o->srv.domain, b.addr + i * page, page,
			     FI_REMOTE_WRITE, &mr[i]);
	for (i = 0; i < NR; i++)
		mr_close(&mr[i]);
	if (ret) {
		tap(false, "event ring overflow: fi_mr_reg: %s", fi_strerror(-ret));
		tbuf_unmap(&b);
		return;
	}

	mon_quiesce(&mon, EVENT_TIMEOUT_MS);
	mon_counters(&mon, &c0);
	paused = mon_pause(&mon, EVENT_TIMEOUT_MS);
	ret = tbuf_realloc(&b, RE_MUNMAP);
	if (paused)
		overflowed = memreg_events_overflowed(&mon.ev);
	mon_resume(&mon);
	ok = !ret && mon_quiesce(&mon, EVENT_TIMEOUT_MS);
	mon_counters(&mon, &c1);

	for (i = 0; i < NR && ok; i++) {
		unsigned long before = MON_GET(&mon, subscribes);

		ret = mr_reg(o->srv.domain, b.addr + i * page, page,
			     FI_REMOTE_WRITE, &mr[i]);
		if (ret)
			break;
		if (MON_GET(&mon, subscribes) == before + 1)
			misses++;
	}
	ok = ok && !ret && misses == NR &&
	     write_check(o, b.addr + 37 * page, page, fi_mr_key(mr[37]), NULL);
	for (i = 0; i < NR; i++)
		mr_close(&mr[i]);
	tbuf_unmap(&b);

	tap(paused && overflowed && c1.resyncs > c0.resyncs &&
	    c1.notifies - c0.notifies >= NR && ok,
	    "an event ring overflow (%u ENDED events, %u entries) was resynced: "
	    "%lu notify() calls, %u/%u pages registered again missed, a write "
	    "landed", NR, MON_EVENT_ENTRIES, c1.notifies - c0.notifies, misses,
	    NR);
	if (!paused)
		diag("the event thread could not be paused");
	if (!overflowed)
		diag("the ring did not report an overflow");
}

/* After everything is closed: stop() ran once and memreg holds nothing. */
static void check_after_close(void)
{
	struct memreg_global_stats gs = { 0 };
	int fd, ret = -ENOENT;

	tap(MON_GET(&mon, stops) == 1 && MON_GET(&mon, starts) == 1 &&
	    mon.stop_seen,
	    "the monitor was stopped once, when the last domain closed "
	    "(starts %lu, stops %lu)", MON_GET(&mon, starts), MON_GET(&mon, stops));
	tap(mon.stop_seen && !mon.stop_error &&
	    mon.stop_before.watches >= mon.stop_live_keys &&
	    mon.stop_before.watches <= mon.stop_keys + mon.stop_before.parked,
	    "memreg agreed with the monitor at stop: %llu watches for %u keys "
	    "held (%u not ended)", (unsigned long long)mon.stop_before.watches,
	    mon.stop_keys, mon.stop_live_keys);
	diag("libfabric 1.17 called unsubscribe() %lu times; stop() still held "
	     "%lu subscriptions", MON_GET(&mon, unsubscribes),
	     MON_GET(&mon, held_at_stop));
	diag("monitor: %lu subscribes (%lu REGISTERs, %lu served by memreg as "
	     "CACHED, %lu reused, %lu failed), %lu valid() (%lu no, %lu "
	     "revalidations, %lu resumed), events %lu ended, %lu evicted, %lu "
	     "suspended, %lu resumed, %lu late, %lu with the creator's user "
	     "data; %lu notify(), %lu resyncs (%lu dropped), %lu reclaimed, %lu "
	     "DEREGISTER failures", MON_GET(&mon, subscribes),
	     MON_GET(&mon, registers), MON_GET(&mon, kernel_hits),
	     MON_GET(&mon, reuses), MON_GET(&mon, subscribe_failures),
	     MON_GET(&mon, valid_calls), MON_GET(&mon, valid_false),
	     MON_GET(&mon, revalidations), MON_GET(&mon, revalidated),
	     MON_GET(&mon, ev_ended), MON_GET(&mon, ev_evicted),
	     MON_GET(&mon, ev_suspended), MON_GET(&mon, ev_resumed),
	     MON_GET(&mon, ev_stale), MON_GET(&mon, ev_user_data),
	     MON_GET(&mon, notifies), MON_GET(&mon, resyncs),
	     MON_GET(&mon, resync_ended), MON_GET(&mon, reclaimed),
	     MON_GET(&mon, dereg_failures));
	tap(mon.stop_seen && !mon.stop_error && !mon.stop_after.registrations &&
	    !mon.stop_after.watches && !mon.stop_after.pages_pinned,
	    "after closing everything memreg has no registrations and no watches "
	    "(registrations %llu, watches %llu, pages pinned %llu%s)",
	    (unsigned long long)mon.stop_after.registrations,
	    (unsigned long long)mon.stop_after.watches,
	    (unsigned long long)mon.stop_after.pages_pinned,
	    mon.stop_flushed ? "; parked watches flushed" : "");

	fd = memreg_open();
	if (fd >= 0) {
		ret = memreg_global_stats(fd, &gs);
		close(fd);
	}
	tap(!ret && gs.watches == 0,
	    "module-wide, no watch is left once the monitor's file is closed "
	    "(watches %llu)", (unsigned long long)gs.watches);
}

/* ---- Without a working monitor: does the cache hand out stale MRs? -------- */

enum outcome { OUT_NEW, OUT_OLD, OUT_BROKEN };

/*
 * Registers, writes, returns the MR to the cache, moves the old pages
 * away with mremap and maps new ones at the address, registers again and
 * writes a fresh pattern through the MR it got: OUT_OLD when the bytes
 * went to the old pages (a stale MR), OUT_NEW when to the new ones.
 * *cache_on says whether two fi_mr_reg of one buffer gave one MR, the
 * cache's hit (the verbs cache returns the entry's own struct fid_mr).
 */
static enum outcome stale_demo(struct ofi *o, size_t len, bool *cache_on,
			       bool *same_key)
{
	struct fid_mr *mr1 = NULL, *mr1b = NULL, *mr2 = NULL;
	enum outcome out = OUT_BROKEN;
	uint64_t seed_q, key1;
	bool in_new, in_old;
	struct tbuf b;
	int ret;

	*cache_on = *same_key = false;
	if (tbuf_map(&b, len))
		return OUT_BROKEN;
	ret = mr_reg(o->srv.domain, b.addr, len, FI_REMOTE_WRITE, &mr1);
	if (!ret)
		ret = mr_reg(o->srv.domain, b.addr, len, FI_REMOTE_WRITE, &mr1b);
	if (ret)
		goto out;
	*cache_on = mr1b == mr1;
	mr_close(&mr1b);
	key1 = fi_mr_key(mr1);
	if (!write_check(o, b.addr, len, key1, NULL))
		goto out;
	mr_close(&mr1);

	if (tbuf_realloc(&b, RE_MREMAP))
		goto out;
	ret = mr_reg(o->srv.domain, b.addr, len, FI_REMOTE_WRITE, &mr2);
	if (ret)
		goto out;
	*same_key = fi_mr_key(mr2) == key1;
	seed_q = next_seed++;
	pattern_fill(o->src, len, seed_q);
	if (ofi_write(o, b.addr, len, fi_mr_key(mr2), seed_q))
		goto out;
	in_new = pattern_match(b.addr, len, seed_q);
	in_old = pattern_match(b.old, len, seed_q);
	if (in_new && !in_old)
		out = OUT_NEW;
	else if (in_old && !in_new)
		out = OUT_OLD;
out:
	if (ret)
		diag("fi_mr_reg: %s", fi_strerror(-ret));
	mr_close(&mr1b);
	mr_close(&mr1);
	mr_close(&mr2);
	/*
	 * The buffer stays mapped: without a monitor a later buffer at this
	 * address could be served by the entry still cached here.
	 */
	tbuf_drop_old(&b);
	return out;
}

static void check_without_monitor(struct ofi *o, bool blind)
{
	static const size_t sizes[] = { 4 * KIB, 64 * KIB, MIB };
	const char *env = getenv("FI_MR_CACHE_MONITOR");
	unsigned int i;

	if (!blind)
		diag("no monitor imported; FI_MR_CACHE_MONITOR=%s",
		     env ? env : "(unset: libfabric's default)");
	for (i = 0; i < ARRAY_SIZE(sizes); i++) {
		bool cache_on, same_key;
		enum outcome out = stale_demo(o, sizes[i], &cache_on, &same_key);

		diag("%zu KiB: cache %s, MR key after re-allocation %s, the write "
		     "went to the %s pages", sizes[i] / KIB, cache_on ? "on" : "off",
		     same_key ? "unchanged" : "new",
		     out == OUT_OLD ? "old" : out == OUT_NEW ? "new" : "(neither)");
		if (blind) {
			tap(cache_on && out == OUT_OLD,
			    "with a blind monitor (valid() always true, no events) "
			    "the cache returned a stale MR (bytes went to the old "
			    "pages) [%zu KiB]", sizes[i] / KIB);
		} else if (out == OUT_BROKEN) {
			tap(false, "without a monitor: the write went to neither the "
			    "old nor the new pages [%zu KiB]", sizes[i] / KIB);
		} else if (!cache_on) {
			tap(out == OUT_NEW, "without a monitor libfabric turned the "
			    "verbs MR cache off (two fi_mr_reg of one buffer gave "
			    "two MRs): every fi_mr_reg registers with siw and the "
			    "write after re-allocation landed in the new pages "
			    "[%zu KiB]", sizes[i] / KIB);
		} else if (out == OUT_OLD) {
			tap(true, "without a monitor the cache returned a stale MR "
			    "(bytes went to the old pages) [%zu KiB]", sizes[i] / KIB);
		} else {
			tap(true, "without an imported monitor the cache is on and "
			    "libfabric's own monitor caught the change (the write "
			    "landed in the new pages) [%zu KiB]", sizes[i] / KIB);
		}
	}
}

/* ---- Benchmark ------------------------------------------------------------ */

#define BENCH_LEN	(64 * KIB)

/*
 * ofi_mr_reg_hit_ns: fi_mr_reg + fi_close of a cached 64 KiB buffer (the
 * hit path: tree search, valid(): a table look-up and one state-word load).
 * ofi_mr_reg_miss_ns: fi_mr_reg + fi_close after the buffer was freed and
 * re-allocated at the same address (untimed, as is waiting for the event
 * thread to have reported it): the cache reclaims the invalidated entry
 * (ibv_dereg_mr), registers with siw (ibv_reg_mr) and subscribes (a watch
 * REGISTER). Pages are faulted in before each timed call. Each iteration
 * is checked to be the hit or the miss it claims to be.
 */
static void bench(struct ofi *o, unsigned long n)
{
	unsigned long warm = n / 10 > 10 ? n / 10 : 10, i, bad_hit = 0, bad = 0;
	uint64_t t0, hit_ns, miss_ns = 0;
	struct fid_mr *mr, *first = NULL;
	struct tbuf b;
	int ret;

	if (tbuf_map(&b, BENCH_LEN)) {
		tap(false, "bench buffer");
		return;
	}
	ret = mr_reg(o->srv.domain, b.addr, b.len, FI_REMOTE_WRITE, &first);
	if (ret) {
		tap(false, "bench: fi_mr_reg: %s", fi_strerror(-ret));
		tbuf_unmap(&b);
		return;
	}
	mr_close(&first);
	mon_quiesce(&mon, EVENT_TIMEOUT_MS);

	/* Hits. */
	for (i = 0; i < warm && !ret; i++) {
		ret = mr_reg(o->srv.domain, b.addr, b.len, FI_REMOTE_WRITE, &mr);
		if (!ret)
			mr_close(&mr);
	}
	{
		unsigned long subs = MON_GET(&mon, subscribes);

		t0 = now_ns();
		for (i = 0; i < n && !ret; i++) {
			ret = mr_reg(o->srv.domain, b.addr, b.len, FI_REMOTE_WRITE,
				     &mr);
			if (!ret)
				fi_close(&mr->fid);
		}
		hit_ns = now_ns() - t0;
		if (MON_GET(&mon, subscribes) != subs)
			bad_hit++;
	}
	tap(!ret && !bad_hit, "bench: all %lu timed hits were hits (no "
	    "subscribe)", n);

	/* Misses. */
	for (i = 0; i < warm + n && !ret; i++) {
		unsigned long subs, ends;
		uint64_t t;

		ends = MON_GET(&mon, ev_ended) + MON_GET(&mon, ev_evicted);
		ret = tbuf_realloc(&b, RE_MUNMAP);
		if (ret)
			break;
		mon_wait_ends(&mon, ends, EVENT_TIMEOUT_MS);
		subs = MON_GET(&mon, subscribes);
		t = now_ns();
		ret = mr_reg(o->srv.domain, b.addr, b.len, FI_REMOTE_WRITE, &mr);
		if (!ret)
			fi_close(&mr->fid);
		t = now_ns() - t;
		if (i >= warm)
			miss_ns += t;
		if (!ret && MON_GET(&mon, subscribes) != subs + 1)
			bad++;
	}
	tap(!ret && !bad, "bench: all %lu timed misses were misses (one "
	    "subscribe each)", n);
	tbuf_unmap(&b);
	if (ret || bad || bad_hit) {
		/* No figures from a run that did not measure what it says. */
		if (ret)
			diag("bench: %s", fi_strerror(ret < 0 ? -ret : ret));
		return;
	}

	diag("bench: %lu iterations after %lu of warm-up, %lu KiB buffers, "
	     "CLOCK_MONOTONIC", n, warm, BENCH_LEN / KIB);
	printf("BENCH ofi_mr_reg_hit_ns %.1f\n", (double)hit_ns / (double)n);
	printf("BENCH ofi_mr_reg_miss_ns %.1f\n", (double)miss_ns / (double)n);
}

/* ---- main ----------------------------------------------------------------- */

enum run_mode { RUN_CHECKS, RUN_NO_MONITOR, RUN_BLIND, RUN_BENCH };

static void __attribute__((noreturn)) usage(const char *prog, int status)
{
	fprintf(status ? stderr : stdout,
		"usage: %s [--no-monitor | --blind-monitor | --bench N] "
		"[--rounds N] [--port P] [--setup-net]\n"
		"  (default)        the checks with the memreg monitor imported\n"
		"  --no-monitor     import nothing: what libfabric's verbs cache "
		"does alone\n"
		"  --blind-monitor  import a monitor that never reports a change\n"
		"  --bench N        BENCH lines for a cache hit and a cache miss\n"
		"  --rounds N       free/re-allocate rounds (default 50)\n"
		"  --port P         the listening port (default %s)\n"
		"  --setup-net      create dummy0 and siw0 even without /dev/memreg\n",
		prog, DEFAULT_PORT);
	exit(status);
}

int main(int argc, char **argv)
{
	enum run_mode mode = RUN_CHECKS;
	unsigned long bench_n = 0, rounds = 50;
	struct ofi o = { .port = DEFAULT_PORT };
	bool force_setup = false, created, have_memreg;
	char why[256] = "";
	__u32 version = 0;
	int i, ret, fd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--no-monitor")) {
			mode = RUN_NO_MONITOR;
		} else if (!strcmp(argv[i], "--blind-monitor")) {
			mode = RUN_BLIND;
		} else if (!strcmp(argv[i], "--bench") && i + 1 < argc) {
			mode = RUN_BENCH;
			bench_n = strtoul(argv[++i], NULL, 0);
			if (!bench_n)
				usage(argv[0], 2);
		} else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
			rounds = strtoul(argv[++i], NULL, 0);
			if (rounds < 2 * RE_NR)
				rounds = 2 * RE_NR;
		} else if (!strcmp(argv[i], "--port") && i + 1 < argc) {
			o.port = argv[++i];
		} else if (!strcmp(argv[i], "--setup-net")) {
			force_setup = true;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(argv[0], 0);
		} else {
			usage(argv[0], 2);
		}
	}

	/* The monitor needs memreg; nothing touches the network without it. */
	have_memreg = !access("/dev/memreg", F_OK);
	if (mode == RUN_CHECKS || mode == RUN_BENCH) {
		if (!have_memreg)
			skip("no /dev/memreg", "/dev/memreg does not exist: the memreg "
			     "module is not loaded");
		fd = memreg_open();
		if (fd < 0) {
			snprintf(why, sizeof(why), "cannot open /dev/memreg: %s",
				 strerror(-fd));
			skip("no /dev/memreg", why);
		}
		ret = memreg_get_version(fd, &version);
		close(fd);
		if (ret || version < 4) {
			snprintf(why, sizeof(why), "the memreg module speaks ABI %u; "
				 "watch registrations need 4", version);
			skip("memreg without watch registrations", why);
		}
	}

	ibv_static_providers(NULL, &verbs_provider_siw, NULL);
	ret = siw_setup(have_memreg || force_setup, why, sizeof(why), &created);
	if (ret)
		skip("no RDMA device", why);

	/*
	 * Only verbs: libfabric runs every built-in provider's init, but
	 * psm's library calls (stubs here) and the others' probing stay out.
	 */
	setenv("FI_PROVIDER", "verbs", 1);

	o.src = map_anon(SRC_LEN);
	o.msg = map_anon(CTL_LEN);
	o.rx = map_anon(CTL_LEN);
	if (!o.src || !o.msg || !o.rx) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}

	if (created)
		tap(true, "%s is up: created over %s (%s/%d) by this program",
		    RDMA_DEV_NAME, NETDEV_NAME, NODE_ADDR, NODE_PREFIX);
	else
		tap(true, "%s is up: found", RDMA_DEV_NAME);

	ret = ofi_getinfo(&o);
	tap(!ret, "verbs fi_getinfo found %s (FI_EP_MSG, FI_MSG|FI_RMA, "
	    "FI_MR_LOCAL|VIRT_ADDR|ALLOCATED|PROV_KEY)", RDMA_DEV_NAME);
	if (ret) {
		diag("fi_getinfo: %s", fi_strerror(-ret));
		goto done;
	}
	diag("provider %s, fabric %s, domain %s, max message %zu",
	     o.pinfo->fabric_attr->prov_name, o.pinfo->fabric_attr->name,
	     o.pinfo->domain_attr->name, o.max_msg);

	/* Before the first fi_domain, which starts the monitor. */
	if (mode != RUN_NO_MONITOR) {
		ret = mon_import(&mon, mode == RUN_BLIND ? MON_BLIND : MON_MEMREG);
		tap(!ret, "%s monitor imported (fi_open(\"mr_cache\") + "
		    "fi_import_fid)", mode == RUN_BLIND ? "the blind" : "the memreg");
		if (ret) {
			diag("import: %s", fi_strerror(-ret));
			goto done;
		}
	}

	ret = ofi_connect(&o);
	tap(!ret, "two MSG endpoints of this process connected over %s",
	    RDMA_DEV_NAME);
	if (ret) {
		diag("connect: %s", fi_strerror(ret < 0 ? -ret : ret));
		goto close;
	}

	if (mode != RUN_NO_MONITOR) {
		tap(o.starts_after_first_domain == 1 && MON_GET(&mon, starts) == 1 &&
		    (mode == RUN_BLIND || mon.thread_started),
		    "the first fi_domain started the monitor, the second did not "
		    "(starts %lu)", MON_GET(&mon, starts));
		tap(o.ctl_regs == 3 && o.ctl_subscribes == 3,
		    "each of the %d first registrations (RECV, SEND and source "
		    "buffers) subscribed once (%lu subscribes)", o.ctl_regs,
		    o.ctl_subscribes);
	}

	switch (mode) {
	case RUN_CHECKS:
		check_hits(&o);
		check_kernel_view();
		check_rounds(&o, (unsigned int)rounds);
		check_overflow(&o);
		break;
	case RUN_BENCH:
		bench(&o, bench_n);
		break;
	case RUN_NO_MONITOR:
	case RUN_BLIND:
		check_without_monitor(&o, mode == RUN_BLIND);
		break;
	}

close:
	ofi_close(&o);
	if (mode == RUN_CHECKS || mode == RUN_BENCH)
		check_after_close();
	mon_unimport(&mon);
done:
	printf("1..%u\n", tap_count);
	printf("MEMREG-OFI: %u passed, %u failed\n", tap_count - tap_failed,
	       tap_failed);
	return tap_failed ? 1 : 0;
}
