// SPDX-License-Identifier: GPL-2.0
/*
 * The memreg memory monitor for libfabric's MR cache, and the network setup
 * for soft-iWARP: see monitor.h and README.
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
#include <rdma/fi_errno.h>
#include <rdma/fi_ext.h>

#include "libmemreg.h"
#include "monitor.h"

/* container_of() comes from rdma/fabric.h. */

void diag(const char *fmt, ...)
{
	va_list ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

/* ---- The memreg monitor -------------------------------------------------- */

static struct memreg_monitor *to_mon(struct fid_mem_monitor *fid)
{
	return container_of(fid, struct memreg_monitor, fid);
}

void mon_counters(struct memreg_monitor *m, struct mon_counters *out)
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
int mon_import(struct memreg_monitor *m, enum mon_mode mode)
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
void mon_unimport(struct memreg_monitor *m)
{
	if (m->imported)
		fi_close(&m->fid.fid);
	m->imported = false;
}

/*
 * Waits until the event thread has consumed every event written so far
 * and finished acting on it. False on timeout.
 */
bool mon_quiesce(struct memreg_monitor *m, unsigned int timeout_ms)
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
bool mon_wait_ends(struct memreg_monitor *m, unsigned long before,
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

bool mon_pause(struct memreg_monitor *m, unsigned int timeout_ms)
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

void mon_resume(struct memreg_monitor *m)
{
	pthread_mutex_lock(&m->pause_lock);
	m->pause_req = false;
	pthread_cond_broadcast(&m->pause_cond);
	pthread_mutex_unlock(&m->pause_lock);
}

/* Distinct keys held now, and the memreg context's stats. */
int mon_kernel_view(struct memreg_monitor *m, unsigned int *subs,
		    struct memreg_stats *st)
{
	int ret;

	pthread_mutex_lock(&m->lock);
	*subs = m->nr_subs;
	ret = memreg_stats(m->fd, st);
	pthread_mutex_unlock(&m->lock);
	return ret;
}

/* ---- Network setup: a netdev, its address, siw0 ---------------------------- */

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
int rdma_dev_exists(const char *name)
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

/* Copies the RES_SUMMARY table of one RES_GET answer into @res. */
static void rdma_res_parse(struct rtattr *summary, struct rdma_res *res)
{
	struct rtattr *entry, *rta;
	int len = (int)RTA_PAYLOAD(summary), elen;

	for (entry = RTA_DATA(summary); RTA_OK(entry, len);
	     entry = RTA_NEXT(entry, len)) {
		const char *name = NULL;
		unsigned long long curr = 0;
		bool have_curr = false;

		if ((entry->rta_type & NLA_TYPE_MASK) !=
		    RDMA_NLDEV_ATTR_RES_SUMMARY_ENTRY)
			continue;
		elen = (int)RTA_PAYLOAD(entry);
		for (rta = RTA_DATA(entry); RTA_OK(rta, elen);
		     rta = RTA_NEXT(rta, elen)) {
			switch (rta->rta_type & NLA_TYPE_MASK) {
			case RDMA_NLDEV_ATTR_RES_SUMMARY_ENTRY_NAME:
				name = RTA_DATA(rta);
				if (!RTA_PAYLOAD(rta) ||
				    name[RTA_PAYLOAD(rta) - 1] != '\0')
					name = NULL;
				break;
			case RDMA_NLDEV_ATTR_RES_SUMMARY_ENTRY_CURR:
				if (RTA_PAYLOAD(rta) >= sizeof(__u64)) {
					memcpy(&curr, RTA_DATA(rta), sizeof(__u64));
					have_curr = true;
				}
				break;
			default:
				break;
			}
		}
		if (!name || !have_curr)
			continue;
		if (!strcmp(name, "pd"))
			res->pd = curr;
		else if (!strcmp(name, "cq"))
			res->cq = curr;
		else if (!strcmp(name, "qp"))
			res->qp = curr;
		else if (!strcmp(name, "cm_id"))
			res->cm_id = curr;
		else if (!strcmp(name, "mr"))
			res->mr = curr;
		else if (!strcmp(name, "ctx"))
			res->ctx = curr;
	}
}

/*
 * RDMA_NLDEV_CMD_RES_GET dump: the resource summary ("rdma res show") of
 * the device called @name. The counts are the kernel's restrack entries,
 * every process's.
 */
int rdma_res_get(const char *name, struct rdma_res *res)
{
	char buf[16384] __attribute__((aligned(8)));
	struct nl_msg msg;
	int fd, ret, found = 0;
	bool done = false;

	memset(res, 0, sizeof(*res));
	fd = nl_open(NETLINK_RDMA);
	if (fd < 0)
		return fd;
	nl_init(&msg, RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, RDMA_NLDEV_CMD_RES_GET),
		NLM_F_REQUEST | NLM_F_DUMP, NULL, 0);
	ret = nl_send(fd, &msg, 2);
	while (!ret && !done) {
		struct nlmsghdr *nh;
		ssize_t n = recv(fd, buf, sizeof(buf), 0);

		if (n < 0) {
			ret = -errno;
			break;
		}
		for (nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, (size_t)n);
		     nh = NLMSG_NEXT(nh, n)) {
			struct rtattr *rta, *summary = NULL;
			bool ours = false;
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
			for (; RTA_OK(rta, len); rta = RTA_NEXT(rta, len)) {
				unsigned short type = rta->rta_type & NLA_TYPE_MASK;

				if (type == RDMA_NLDEV_ATTR_DEV_NAME &&
				    !strncmp(RTA_DATA(rta), name, RTA_PAYLOAD(rta)))
					ours = true;
				else if (type == RDMA_NLDEV_ATTR_RES_SUMMARY)
					summary = rta;
			}
			if (ours && summary) {
				rdma_res_parse(summary, res);
				found = 1;
			}
		}
	}
	close(fd);
	if (ret)
		return ret;
	return found ? 0 : -ENODEV;
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
 * Makes siw0 exist over @net->netdev (@net->addr/@net->prefix, up) with lo
 * up, unless it is already there (then, with @net->always, only the
 * address and the links). Only where @may_setup (the project's guest) is
 * the network touched. Returns 0 or -errno with *why filled.
 */
int siw_setup(const struct siw_net *net, bool may_setup, char *why,
	      size_t why_len, bool *created)
{
	bool made_dummy = false, exists;
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
	exists = ret;
	if (!exists && !net) {
		snprintf(why, why_len, "no %s: it is made by --setup-net IFACE "
			 "ADDR/PREFIX", RDMA_DEV_NAME);
		return -ENODEV;
	}
	if (!exists && !may_setup) {
		snprintf(why, why_len, "no %s, and network setup is only done "
			 "where /dev/memreg exists or with --setup-net",
			 RDMA_DEV_NAME);
		return -ENODEV;
	}
	if (net && may_setup && (!exists || net->always)) {
		if (net->create) {
			ret = link_create_dummy(net->netdev);
			if (ret && ret != -EEXIST) {
				snprintf(why, why_len, "cannot create %s: %s",
					 net->netdev, strerror(-ret));
				return ret;
			}
			made_dummy = !ret;
		}
		ifindex = (int)if_nametoindex(net->netdev);
		lo = (int)if_nametoindex("lo");
		if (!ifindex) {
			snprintf(why, why_len, "%s has no index", net->netdev);
			return -ENODEV;
		}
		ret = addr_add(ifindex, net->addr, net->prefix);
		if (!ret || ret == -EEXIST)
			ret = link_up(ifindex);
		if (!ret && lo)
			ret = link_up(lo);
		if (!ret && !exists)
			ret = rdma_link_add(RDMA_DEV_NAME, "siw", net->netdev);
		if (ret && ret != -EEXIST) {
			if (exists)
				snprintf(why, why_len, "cannot configure %s "
					 "(%s/%u): %s", net->netdev, net->addr,
					 net->prefix, strerror(-ret));
			else
				snprintf(why, why_len, "cannot create %s over "
					 "%s: %s", RDMA_DEV_NAME, net->netdev,
					 strerror(-ret));
			if (made_dummy)
				link_delete(ifindex);
			return ret;
		}
		*created = !exists;
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

/* ---- Test buffers -------------------------------------------------------- */

/*
 * A pattern that differs for every seed: xorshift64 words. Buffers are
 * multiples of 8 bytes long.
 */
void pattern_fill(void *buf, size_t len, uint64_t seed)
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
bool pattern_match(const void *buf, size_t len, uint64_t seed)
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

const char *const realloc_name[RE_NR] = {
	[RE_MUNMAP] = "munmap+mmap",
	[RE_FIXED] = "mmap MAP_FIXED over it",
	[RE_MREMAP] = "mremap away+mmap",
	[RE_DONTNEED] = "MADV_DONTNEED",
};

int realloc_at(char *addr, size_t len, enum realloc_how how, char **old_out)
{
	const int prot = PROT_READ | PROT_WRITE;
	const int flags = MAP_PRIVATE | MAP_ANONYMOUS;
	void *p = addr, *old;

	switch (how) {
	case RE_MUNMAP:
		if (munmap(addr, len))
			return -errno;
		p = mmap(addr, len, prot, flags | MAP_FIXED_NOREPLACE, -1, 0);
		break;
	case RE_FIXED:
		p = mmap(addr, len, prot, flags | MAP_FIXED, -1, 0);
		break;
	case RE_MREMAP:
		old = mmap(NULL, len, PROT_NONE, flags | MAP_NORESERVE, -1, 0);
		if (old == MAP_FAILED)
			return -errno;
		p = mremap(addr, len, len, MREMAP_MAYMOVE | MREMAP_FIXED,
			   old);
		if (p != old) {
			munmap(old, len);
			return p == MAP_FAILED ? -errno : -EADDRNOTAVAIL;
		}
		*old_out = old;
		p = mmap(addr, len, prot, flags | MAP_FIXED_NOREPLACE, -1, 0);
		break;
	case RE_DONTNEED:
		if (madvise(addr, len, MADV_DONTNEED))
			return -errno;
		break;
	default:
		return -EINVAL;
	}
	if (p == MAP_FAILED)
		return -errno;
	if (p != addr) {
		/* An old kernel took MAP_FIXED_NOREPLACE as a hint. */
		munmap(p, len);
		return -EADDRNOTAVAIL;
	}
	memset(addr, 0, len);
	return 0;
}
