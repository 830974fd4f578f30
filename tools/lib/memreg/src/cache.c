// SPDX-License-Identifier: (LGPL-2.1 OR MIT)
/*
 * The registration cache in user space. memreg_mr_get() answers a repeated
 * request of a thread from that thread's own table of recent hits: one
 * compare-and-swap takes a reference on the entry, one acquire load of its
 * state word says it is still valid, and nothing else is shared, locked or
 * called. Anything else goes through the cache's interval tree under its
 * mutex, where stale entries are dropped or revalidated and misses
 * registered. The event ring (read by the slow path, by
 * memreg_cache_process_events() or by a thread of the cache's own) drops
 * entries that ended; the state word check makes the answer right whether
 * or not the event was read yet.
 *
 * Entries: an interval tree (a treap ordered by start address, augmented
 * with the largest end in each subtree), a hash table by local key for the
 * events, and a ring for CLOCK eviction. Each holds one kernel reference
 * while it is cached. Entries live in chunks the cache frees only when it
 * is destroyed, so a thread's table may point at an entry that was freed
 * or reused: the reference taken by compare-and-swap fails on a dead entry,
 * and the entry's identity is checked once it is held.
 *
 * Reference word (e->ref): users in the low 30 bits, ENTRY_REFERENCED
 * when a get took it since the clock hand passed, ENTRY_DEAD once the
 * entry left the cache (no new user then). The last reference of a dead
 * entry frees it. Moving an entry to the dead list for its callback takes a
 * reference, dropped after the callback ran.
 *
 * Locking: cache->lock covers the tree, the table, the ring, the dead list,
 * the free list and the entries' other fields; the system calls of a miss
 * are made under it. Callbacks run without it.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

#include "libmemreg.h"
#include "internal.h"

#define ENTRY_DEAD	(1U << 31)
#define ENTRY_REFERENCED	(1U << 30)
#define ENTRY_USERS	(ENTRY_REFERENCED - 1)
#define CHUNK_ENTRIES	64
/* A thread's table of recent hits, and the threads with counters of their own. */
#define TLS_SLOTS	64
#define MAX_COUNTERS	64

struct memreg_mr {
	/* What REGISTER returned: constant while the entry is cached. */
	__u64 start;
	__u64 length;
	__u64 lkey;
	__u64 rkey;
	__u32 access;
	__u32 slot;
	__u64 generation;
	const __u64 *word;		/* its state word; NULL: not cached */
	int fd;				/* the file, for an entry without a word */
	__u32 fork_gen;			/* fork_gen when it was created */
	/* Atomic. */
	__u32 ref;			/* users | ENTRY_REFERENCED | ENTRY_DEAD */
	/* Under the cache's lock. */
	bool cached;			/* in the tree, the table and the ring */
	bool kernel_ref;		/* holds a kernel reference */
	bool listed;			/* in the list EVENTS_RESYNC returned */
	int cause;			/* why it died (MEMREG_CACHE_*) */
	bool has_event;
	struct memreg_event event;	/* the event that said so */
	struct memreg_mr *left, *right;	/* the treap */
	__u32 prio;
	__u64 max_end;			/* the largest end in this subtree */
	struct memreg_mr *hnext;	/* key table */
	struct memreg_mr *prev, *next;	/* clock ring */
	struct memreg_mr *dnext;	/* dead list, free list */
};

struct entry_chunk {
	struct entry_chunk *next;
	struct memreg_mr e[CHUNK_ENTRIES];
};

/* Counters one thread writes and get_stats adds up. */
struct thread_counter {
	__u64 hits;
	uintptr_t owner;		/* the thread's token, 0: free */
};

struct memreg_cache {
	int fd;
	__u32 fork_gen;			/* fork_gen when it was created */
	__u64 uid;			/* never the same for two caches */
	pthread_mutex_t lock;
	struct memreg_state_words sw;
	struct memreg_events ev;
	int event_fd;			/* the event ring's eventfd */
	memreg_invalidate_cb cb;
	void *cb_arg;
	unsigned int max_entries;
	/* Under lock. */
	struct memreg_mr *root;
	struct memreg_mr **table;
	size_t table_size;		/* a power of two */
	size_t nr;
	struct memreg_mr *hand;		/* the clock hand, in the ring */
	struct memreg_mr *dead;		/* left the cache, callback pending */
	struct memreg_mr *free;
	struct entry_chunk *chunks;
	__u32 seed;
	struct memreg_cache_stats stats;
	/* Hits of the fast path: one counter per thread, then a shared one. */
	struct thread_counter counters[MAX_COUNTERS];
	__u64 shared_hits;
	/* The event thread. */
	bool thread;
	pthread_t tid;
	int stop_fd;
};

/* One remembered hit of this thread. */
struct tls_slot {
	__u64 uid;			/* the cache's */
	__u64 addr, length;
	__u32 access;
	struct memreg_mr *e;
	__u64 lkey, generation;		/* the entry's identity when remembered */
	struct thread_counter *counter;	/* this thread's in the cache, or NULL */
};

static __thread struct tls_slot tls_slots[TLS_SLOTS];
static __thread struct {
	__u64 uid;
	struct thread_counter *counter;
} tls_counter;
static __thread char thread_token;
static __u64 next_uid = 1;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/*
 * In a child after fork(): the state words are not inherited (the mapping
 * is VM_DONTCOPY), so the forking thread's remembered hits, the only
 * thread the child has, must not be followed.
 */
static __u32 fork_gen;

static void forget_hits_in_child(void)
{
	memset(tls_slots, 0, sizeof(tls_slots));
	memset(&tls_counter, 0, sizeof(tls_counter));
	__atomic_fetch_add(&fork_gen, 1, __ATOMIC_RELAXED);
}

/* True in a process forked since @gen: the cache's mappings are not there. */
static bool forked_since(__u32 gen)
{
	return __atomic_load_n(&fork_gen, __ATOMIC_RELAXED) != gen;
}

static void install_atfork(void)
{
	pthread_atfork(NULL, NULL, forget_hits_in_child);
}

static inline __u64 end_of(const struct memreg_mr *e)
{
	return e->start + e->length;
}

/* ---- The interval tree ---- */

static void update(struct memreg_mr *e)
{
	__u64 m = end_of(e);

	if (e->left && e->left->max_end > m)
		m = e->left->max_end;
	if (e->right && e->right->max_end > m)
		m = e->right->max_end;
	e->max_end = m;
}

static bool before(const struct memreg_mr *a, const struct memreg_mr *b)
{
	return a->start < b->start || (a->start == b->start && (uintptr_t)a < (uintptr_t)b);
}

static struct memreg_mr *tree_insert(struct memreg_mr *t, struct memreg_mr *e)
{
	if (!t) {
		e->left = e->right = NULL;
		update(e);
		return e;
	}
	if (before(e, t)) {
		t->left = tree_insert(t->left, e);
		if (t->left->prio > t->prio) {
			struct memreg_mr *l = t->left;

			t->left = l->right;
			l->right = t;
			update(t);
			update(l);
			return l;
		}
	} else {
		t->right = tree_insert(t->right, e);
		if (t->right->prio > t->prio) {
			struct memreg_mr *r = t->right;

			t->right = r->left;
			r->left = t;
			update(t);
			update(r);
			return r;
		}
	}
	update(t);
	return t;
}

static struct memreg_mr *merge(struct memreg_mr *a, struct memreg_mr *b)
{
	if (!a)
		return b;
	if (!b)
		return a;
	if (a->prio > b->prio) {
		a->right = merge(a->right, b);
		update(a);
		return a;
	}
	b->left = merge(a, b->left);
	update(b);
	return b;
}

static struct memreg_mr *tree_remove(struct memreg_mr *t, struct memreg_mr *e)
{
	if (!t)
		return NULL;
	if (t == e)
		return merge(t->left, t->right);
	if (before(e, t))
		t->left = tree_remove(t->left, e);
	else
		t->right = tree_remove(t->right, e);
	update(t);
	return t;
}

/* Local rights at least those asked, remote rights exactly (and the exact range). */
static bool fits(const struct memreg_mr *e, __u64 addr, __u64 end, __u32 access)
{
	__u32 remote = MEMREG_ACCESS_REMOTE_READ | MEMREG_ACCESS_REMOTE_WRITE;

	if (e->start > addr || end_of(e) < end)
		return false;
	if ((e->access & access & ~remote) != (access & ~remote))
		return false;
	if ((e->access & remote) != (access & remote))
		return false;
	return !(access & remote) || (e->start == addr && end_of(e) == end);
}

static struct memreg_mr *tree_find(struct memreg_mr *t, __u64 addr, __u64 end, __u32 access)
{
	while (t) {
		struct memreg_mr *f;

		if (t->max_end < end)
			return NULL;
		if (t->left && t->left->max_end >= end) {
			f = tree_find(t->left, addr, end, access);
			if (f)
				return f;
		}
		if (t->start > addr)
			return NULL;
		if (fits(t, addr, end, access))
			return t;
		t = t->right;
	}
	return NULL;
}

/* ---- The key table ---- */

static size_t hash_key(__u64 key, size_t size)
{
	return (size_t)((key * 0x9e3779b97f4a7c15ULL) >> 32) & (size - 1);
}

static struct memreg_mr *table_find(struct memreg_cache *c, __u64 key)
{
	struct memreg_mr *e;

	for (e = c->table[hash_key(key, c->table_size)]; e; e = e->hnext)
		if (e->lkey == key)
			return e;
	return NULL;
}

/* Makes room for one more entry (called before anything changes). */
static int table_reserve(struct memreg_cache *c)
{
	struct memreg_mr **t, *e, *next;
	size_t size, i, old = c->table_size;

	if (c->nr + 1 <= old)
		return 0;
	size = old * 2;
	t = calloc(size, sizeof(*t));
	if (!t)
		return -ENOMEM;
	for (i = 0; i < old; i++) {
		for (e = c->table[i]; e; e = next) {
			size_t b = hash_key(e->lkey, size);

			next = e->hnext;
			e->hnext = t[b];
			t[b] = e;
		}
	}
	free(c->table);
	c->table = t;
	c->table_size = size;
	return 0;
}

static void table_remove(struct memreg_cache *c, struct memreg_mr *e)
{
	struct memreg_mr **p;

	for (p = &c->table[hash_key(e->lkey, c->table_size)]; *p; p = &(*p)->hnext) {
		if (*p == e) {
			*p = e->hnext;
			return;
		}
	}
}

/* ---- Entries ---- */

static __u32 next_prio(struct memreg_cache *c)
{
	/* xorshift32: a treap only needs priorities that look random. */
	__u32 x = c->seed;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	c->seed = x;
	return x;
}

/* A free entry, its reference word dead until it is set up. */
static struct memreg_mr *entry_alloc(struct memreg_cache *c)
{
	struct memreg_mr *e = c->free;

	if (!e) {
		struct entry_chunk *ch = calloc(1, sizeof(*ch));
		int i;

		if (!ch)
			return NULL;
		ch->next = c->chunks;
		c->chunks = ch;
		for (i = CHUNK_ENTRIES - 1; i >= 0; i--) {
			ch->e[i].ref = ENTRY_DEAD;
			ch->e[i].dnext = c->free;
			c->free = &ch->e[i];
		}
		e = c->free;
	}
	c->free = e->dnext;
	e->dnext = NULL;
	return e;
}

/*
 * Back to the free list: dead, no user. Its fields stay readable (a
 * thread's table may still point here) and are rewritten only at reuse.
 */
static void entry_free_locked(struct memreg_cache *c, struct memreg_mr *e)
{
	if (e->kernel_ref)
		memreg_deregister(c->fd, e->lkey);
	e->kernel_ref = false;
	e->dnext = c->free;
	c->free = e;
}

/* Takes a reference unless the entry is dead, and marks it referenced. */
static inline bool entry_get(struct memreg_mr *e)
{
	__u32 old = __atomic_load_n(&e->ref, __ATOMIC_RELAXED);

	do {
		if (old & ENTRY_DEAD)
			return false;
	} while (!__atomic_compare_exchange_n(&e->ref, &old, (old + 1) | ENTRY_REFERENCED, true,
					      __ATOMIC_ACQUIRE, __ATOMIC_RELAXED));
	return true;
}

/* Takes a reference on an entry that cannot be dead (cached, under the lock). */
static void entry_get_locked(struct memreg_mr *e)
{
	__atomic_fetch_add(&e->ref, 1, __ATOMIC_ACQUIRE);
	__atomic_fetch_or(&e->ref, ENTRY_REFERENCED, __ATOMIC_RELAXED);
}

static noinline void entry_free(struct memreg_cache *c, struct memreg_mr *e)
{
	pthread_mutex_lock(&c->lock);
	entry_free_locked(c, e);
	pthread_mutex_unlock(&c->lock);
}

/* Drops a reference; the last one of a dead entry frees it. */
static inline void entry_put(struct memreg_cache *c, struct memreg_mr *e)
{
	__u32 old = __atomic_fetch_sub(&e->ref, 1, __ATOMIC_ACQ_REL);

	if ((old & ~ENTRY_REFERENCED) == (ENTRY_DEAD | 1))
		entry_free(c, e);
}

static void ring_insert(struct memreg_cache *c, struct memreg_mr *e)
{
	if (!c->hand) {
		e->prev = e->next = e;
		c->hand = e;
		return;
	}
	/* Just behind the hand: the last the hand will look at. */
	e->next = c->hand;
	e->prev = c->hand->prev;
	e->prev->next = e;
	c->hand->prev = e;
}

static void ring_remove(struct memreg_cache *c, struct memreg_mr *e)
{
	if (e->next == e) {
		c->hand = NULL;
	} else {
		e->prev->next = e->next;
		e->next->prev = e->prev;
		if (c->hand == e)
			c->hand = e->next;
	}
	e->prev = e->next = NULL;
}

/*
 * Takes a cached entry out of the tree, the table and the ring, marks it
 * dead and puts it on the dead list for its callback, holding a reference
 * finish() drops (the caller did both already when @marked). Its kernel
 * reference goes now when @deregister (the registration may still be
 * alive), or never (it ended).
 */
static void drop_locked(struct memreg_cache *c, struct memreg_mr *e, int cause,
			const struct memreg_event *event, bool deregister, bool marked)
{
	if (!e->cached)
		return;
	c->root = tree_remove(c->root, e);
	table_remove(c, e);
	ring_remove(c, e);
	e->cached = false;
	c->nr--;
	if (!marked) {
		__atomic_fetch_add(&e->ref, 1, __ATOMIC_RELAXED);
		__atomic_fetch_or(&e->ref, ENTRY_DEAD, __ATOMIC_RELEASE);
	}
	if (deregister && e->kernel_ref)
		memreg_deregister(c->fd, e->lkey);
	/* memreg_mr_valid() reads it without the lock: parked keys move no data. */
	__atomic_store_n(&e->kernel_ref, false, __ATOMIC_RELEASE);
	e->cause = cause;
	e->has_event = event != NULL;
	if (event)
		e->event = *event;
	e->dnext = c->dead;
	c->dead = e;
	if (cause == MEMREG_CACHE_LRU)
		c->stats.lru_evictions++;
	else
		c->stats.invalidations++;
}

/* Unlocks, runs the callbacks of the dead list, then drops its references. */
static void finish(struct memreg_cache *c)
{
	struct memreg_mr *list = c->dead, *e, *next;
	memreg_invalidate_cb cb = c->cb;
	void *arg = c->cb_arg;

	c->dead = NULL;
	pthread_mutex_unlock(&c->lock);
	for (e = list; e; e = next) {
		next = e->dnext;
		if (cb)
			cb(e, e->cause, e->has_event ? &e->event : NULL, arg);
		entry_put(c, e);
	}
}

/*
 * CLOCK: while the cache holds more than max_entries, the hand deregisters
 * entries nobody uses and nobody used since it last passed.
 */
static void trim_locked(struct memreg_cache *c)
{
	size_t steps = 2 * c->nr;

	while (c->nr > c->max_entries && c->hand && steps--) {
		struct memreg_mr *e = c->hand;
		__u32 unused = 0;

		c->hand = e->next;
		if (__atomic_fetch_and(&e->ref, ~ENTRY_REFERENCED, __ATOMIC_RELAXED) &
		    ENTRY_REFERENCED)
			continue;
		/* Unused: dead from here on, held for its callback, unless a user came first. */
		if (!__atomic_compare_exchange_n(&e->ref, &unused, ENTRY_DEAD | 1, false,
						 __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
			continue;
		drop_locked(c, e, MEMREG_CACHE_LRU, NULL, true, true);
	}
}

/* ---- Events ---- */

/* After an overflow: entries missing from the list of valid ones are dropped. */
static int resync_locked(struct memreg_cache *c)
{
	struct memreg_resync_entry *list = NULL;
	struct memreg_mr *e, *next;
	__u32 cap = (__u32)c->nr + 64, count = 0, i;
	size_t b;
	int ret;

	for (;;) {
		struct memreg_resync_entry *l = realloc(list, (size_t)cap * sizeof(*l));

		if (!l) {
			free(list);
			return -ENOMEM;
		}
		list = l;
		ret = memreg_events_resync(c->fd, list, cap, &count);
		if (ret) {
			free(list);
			return ret;
		}
		if (count <= cap)
			break;
		cap = count + 64;
	}
	c->stats.resyncs++;
	for (i = 0; i < count; i++) {
		e = table_find(c, list[i].key);
		if (e)
			e->listed = true;
	}
	free(list);
	for (b = 0; b < c->table_size; b++) {
		for (e = c->table[b]; e; e = next) {
			next = e->hnext;
			if (!e->listed)
				drop_locked(c, e, MEMREG_CACHE_RESYNC, NULL, false, false);
			e->listed = false;
		}
	}
	return 0;
}

static int process_locked(struct memreg_cache *c)
{
	struct memreg_event batch[32];
	unsigned int n, i;
	int total = 0;

	for (;;) {
		n = memreg_events_read(&c->ev, batch, 32);
		for (i = 0; i < n; i++) {
			struct memreg_mr *e = table_find(c, batch[i].key);

			c->stats.events++;
			if (!e)
				continue;
			if (batch[i].kind == MEMREG_EVENT_ENDED)
				drop_locked(c, e, MEMREG_CACHE_ENDED, &batch[i], false, false);
			else if (batch[i].kind == MEMREG_EVENT_EVICTED)
				drop_locked(c, e, MEMREG_CACHE_EVICTED, &batch[i], false, false);
			/* SUSPENDED: the state word says so; the next get revalidates. */
		}
		total += n;
		if (n < 32)
			break;
	}
	if (memreg_events_overflowed(&c->ev)) {
		int ret = resync_locked(c);

		if (ret)
			return ret;
	}
	return total;
}

int memreg_cache_process_events(struct memreg_cache *c)
{
	__u64 v;
	int ret;

	if (forked_since(c->fork_gen))
		return -EPERM;
	/* Resets the eventfd first: an event after this makes it readable again. */
	if (read(c->event_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return -errno;
	pthread_mutex_lock(&c->lock);
	ret = process_locked(c);
	finish(c);
	return ret;
}

static void *event_thread(void *arg)
{
	struct memreg_cache *c = arg;
	struct pollfd pfd[2] = {
		{ .fd = c->event_fd, .events = POLLIN },
		{ .fd = c->stop_fd, .events = POLLIN },
	};

	for (;;) {
		if (poll(pfd, 2, -1) < 0 && errno != EINTR)
			break;
		if (pfd[1].revents)
			break;
		if (pfd[0].revents)
			memreg_cache_process_events(c);
	}
	return NULL;
}

/* ---- The cache ---- */

int memreg_cache_create(int fd, const struct memreg_cache_attr *attr,
			struct memreg_cache **cachep)
{
	struct memreg_cache_attr a = attr ? *attr : (struct memreg_cache_attr){ 0 };
	struct memreg_cache *c;
	int ret;

	*cachep = NULL;
	if ((a.flags & ~MEMREG_CACHE_EVENT_THREAD) || a.reserved[0] || a.reserved[1] ||
	    a.reserved[2] || a.reserved[3])
		return -EINVAL;
	if (pthread_once(&atfork_once, install_atfork))
		return -ENOMEM;
	if (!a.event_entries)
		a.event_entries = 1024;
	if (!a.slots)
		a.slots = MEMREG_MAX_SLOTS;
	if (!a.max_entries)
		a.max_entries = 4096;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = fd;
	c->fork_gen = __atomic_load_n(&fork_gen, __ATOMIC_RELAXED);
	c->uid = __atomic_fetch_add(&next_uid, 1, __ATOMIC_RELAXED);
	c->max_entries = a.max_entries;
	c->seed = 0x2545f491;
	c->stop_fd = -1;
	c->table_size = 64;
	c->table = calloc(c->table_size, sizeof(*c->table));
	if (!c->table) {
		ret = -ENOMEM;
		goto err_free;
	}
	ret = pthread_mutex_init(&c->lock, NULL);
	if (ret) {
		ret = -ret;
		goto err_table;
	}
	c->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->event_fd < 0) {
		ret = -errno;
		goto err_mutex;
	}
	ret = memreg_state_words_map(fd, a.slots, &c->sw);
	if (ret)
		goto err_efd;
	ret = memreg_events_init(fd, a.event_entries, c->event_fd, &c->ev);
	if (ret)
		goto err_words;
	if (a.flags & MEMREG_CACHE_EVENT_THREAD) {
		c->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (c->stop_fd < 0) {
			ret = -errno;
			goto err_events;
		}
		ret = -pthread_create(&c->tid, NULL, event_thread, c);
		if (ret) {
			close(c->stop_fd);
			goto err_events;
		}
		c->thread = true;
	}
	*cachep = c;
	return 0;

err_events:
	memreg_events_exit(&c->ev);
err_words:
	memreg_state_words_unmap(&c->sw);
err_efd:
	close(c->event_fd);
err_mutex:
	pthread_mutex_destroy(&c->lock);
err_table:
	free(c->table);
err_free:
	free(c);
	return ret;
}

void memreg_cache_destroy(struct memreg_cache *c)
{
	struct entry_chunk *ch, *next;
	bool child;
	size_t b;

	if (!c)
		return;
	/*
	 * In a child after fork() the event thread and the mappings are not
	 * there (the addresses may hold other mappings by now), and the file
	 * refuses the child's calls: only the memory is freed.
	 */
	child = forked_since(c->fork_gen);
	if (c->thread && !child) {
		__u64 one = 1;

		/* An eventfd write fails only on EINTR or a full counter. */
		while (write(c->stop_fd, &one, sizeof(one)) != sizeof(one))
			sched_yield();
		pthread_join(c->tid, NULL);
	}
	if (c->thread)
		close(c->stop_fd);
	if (!child) {
		pthread_mutex_lock(&c->lock);
		for (b = 0; b < c->table_size; b++) {
			struct memreg_mr *e;

			for (e = c->table[b]; e; e = e->hnext)
				if (e->kernel_ref)
					memreg_deregister(c->fd, e->lkey);
		}
		pthread_mutex_unlock(&c->lock);
		memreg_events_exit(&c->ev);
		memreg_state_words_unmap(&c->sw);
	}
	close(c->event_fd);
	pthread_mutex_destroy(&c->lock);
	for (ch = c->chunks; ch; ch = next) {
		next = ch->next;
		free(ch);
	}
	free(c->table);
	free(c);
}

void memreg_cache_set_invalidate_cb(struct memreg_cache *c, memreg_invalidate_cb cb,
				    void *arg)
{
	pthread_mutex_lock(&c->lock);
	c->cb = cb;
	c->cb_arg = arg;
	pthread_mutex_unlock(&c->lock);
}

int memreg_cache_event_fd(const struct memreg_cache *c)
{
	return c->event_fd;
}

void memreg_cache_get_stats(struct memreg_cache *c, struct memreg_cache_stats *stats)
{
	int i;

	pthread_mutex_lock(&c->lock);
	*stats = c->stats;
	stats->entries = c->nr;
	pthread_mutex_unlock(&c->lock);
	stats->hits += __atomic_load_n(&c->shared_hits, __ATOMIC_RELAXED);
	for (i = 0; i < MAX_COUNTERS; i++)
		stats->hits += __atomic_load_n(&c->counters[i].hits, __ATOMIC_RELAXED);
}

/* This thread's hit counter in @c, claimed on its first hit there. */
static noinline struct thread_counter *claim_counter(struct memreg_cache *c)
{
	struct thread_counter *t = tls_counter.counter;
	int i;

	{
		/* This thread's counter in this cache, or a free one it claims. */
		uintptr_t me = (uintptr_t)&thread_token;

		t = NULL;
		for (i = 0; i < MAX_COUNTERS && !t; i++)
			if (__atomic_load_n(&c->counters[i].owner, __ATOMIC_RELAXED) == me)
				t = &c->counters[i];
		for (i = 0; i < MAX_COUNTERS && !t; i++) {
			uintptr_t none = 0;

			if (__atomic_compare_exchange_n(&c->counters[i].owner, &none, me, false,
							__ATOMIC_RELAXED, __ATOMIC_RELAXED))
				t = &c->counters[i];
		}
		tls_counter.uid = c->uid;
		tls_counter.counter = t;
	}
	return t;
}

/* Counts a hit: on this thread's own counter when it has one (no shared write). */
static inline void count_hit(struct memreg_cache *c)
{
	struct thread_counter *t = tls_counter.counter;

	if (tls_counter.uid != c->uid)
		t = claim_counter(c);
	if (t)
		__atomic_store_n(&t->hits, __atomic_load_n(&t->hits, __ATOMIC_RELAXED) + 1,
				 __ATOMIC_RELAXED);
	else
		__atomic_fetch_add(&c->shared_hits, 1, __ATOMIC_RELAXED);
}

static inline struct tls_slot *tls_slot_of(__u64 addr, __u64 length)
{
	return &tls_slots[((addr >> 6) ^ (addr >> 12) ^ length) & (TLS_SLOTS - 1)];
}

/* Remembers a hit of this thread (the entry is held). */
static void remember(struct memreg_cache *c, __u64 addr, __u64 length, __u32 access,
		     struct memreg_mr *e)
{
	struct tls_slot *s = tls_slot_of(addr, length);
	struct thread_counter *t = tls_counter.uid == c->uid ? tls_counter.counter :
							      claim_counter(c);

	*s = (struct tls_slot){ .uid = c->uid, .addr = addr, .length = length,
				.access = access, .e = e, .lkey = e->lkey,
				.generation = e->generation, .counter = t };
}

/*
 * A miss: REGISTER, then the entry it names (a kernel hit may name one the
 * cache already has: the extra kernel reference goes back). The new entry
 * is held once for the caller.
 */
static int add_locked(struct memreg_cache *c, __u64 addr, __u64 length, __u32 access,
		      struct memreg_mr **mrp)
{
	struct memreg_register r;
	struct memreg_mr *e, *old;
	int ret, tries;

	ret = table_reserve(c);
	if (ret)
		return ret;
	e = entry_alloc(c);
	if (!e)
		return -ENOMEM;
	/* EAGAIN: a suspended registration in the way kept changing; try again. */
	for (tries = 0; tries < 3; tries++) {
		ret = memreg_register(c->fd, (void *)(uintptr_t)addr, length, access, &r);
		if (ret != -EAGAIN)
			break;
		sched_yield();
	}
	if (ret) {
		e->dnext = c->free;
		c->free = e;
		return ret;
	}
	c->stats.misses++;
	old = table_find(c, r.lkey);
	if (old) {
		/* Already cached (the kernel's own cache answered). */
		memreg_deregister(c->fd, r.lkey);
		e->dnext = c->free;
		c->free = e;
		entry_get_locked(old);
		*mrp = old;
		return 0;
	}
	e->start = r.region_addr;
	e->length = r.region_length;
	e->lkey = r.lkey;
	e->rkey = r.rkey;
	e->access = r.access;
	e->slot = r.slot;
	e->generation = r.generation;
	e->fd = c->fd;
	e->fork_gen = c->fork_gen;
	e->kernel_ref = true;
	e->has_event = false;
	if (r.slot >= c->sw.slots || !r.generation) {
		/* No state word: never cached, deregistered at its last put. */
		e->word = NULL;
		e->cached = false;
		__atomic_store_n(&e->ref, ENTRY_DEAD | 1, __ATOMIC_RELEASE);
		*mrp = e;
		return 0;
	}
	e->word = &c->sw.words[r.slot];
	e->prio = next_prio(c);
	e->cached = true;
	c->root = tree_insert(c->root, e);
	e->hnext = c->table[hash_key(e->lkey, c->table_size)];
	c->table[hash_key(e->lkey, c->table_size)] = e;
	ring_insert(c, e);
	c->nr++;
	__atomic_store_n(&e->ref, 1 | ENTRY_REFERENCED, __ATOMIC_RELEASE);
	*mrp = e;
	return 0;
}

/*
 * A suspended entry: REGISTER of its range revalidates it. The same key
 * back means it resumed (the extra reference goes back); anything else
 * means it ended.
 */
static void revalidate_locked(struct memreg_cache *c, struct memreg_mr *e)
{
	struct memreg_register r;

	c->stats.revalidations++;
	if (memreg_register(c->fd, (void *)(uintptr_t)e->start, e->length, e->access, &r)) {
		drop_locked(c, e, MEMREG_CACHE_ENDED, NULL, true, false);
		return;
	}
	memreg_deregister(c->fd, r.lkey);
	/*
	 * Another registration answered: this one ended, or is still
	 * suspended and holds our reference (DEREGISTER of an ended key is a
	 * harmless ENOENT).
	 */
	if (r.lkey != e->lkey || r.generation != e->generation)
		drop_locked(c, e, MEMREG_CACHE_ENDED, NULL, true, false);
}

static noinline __cold int get_slow(struct memreg_cache *c, __u64 a, __u64 length,
					      __u32 access, struct memreg_mr **mrp)
{
	__u64 end = a + length;
	int tries, ret = 0;

	*mrp = NULL;
	if (!length || end < a || !access || (access & ~MEMREG_ACCESS_ALL))
		return -EINVAL;
	/* A child's calls on the file fail: so does this, before any mapping is read. */
	if (forked_since(c->fork_gen))
		return -EPERM;
	pthread_mutex_lock(&c->lock);
	if (memreg_events_ready(&c->ev) || memreg_events_overflowed(&c->ev)) {
		ret = process_locked(c);
		if (ret < 0)
			goto out;
		ret = 0;
	}
	for (tries = 0; tries < 4; tries++) {
		struct memreg_mr *e = tree_find(c->root, a, end, access);
		__u64 w;

		if (!e)
			break;
		w = __atomic_load_n(e->word, __ATOMIC_ACQUIRE);
		if (w == e->generation) {
			/* Cached entries are not dead while the lock is held. */
			entry_get_locked(e);
			c->stats.hits++;
			*mrp = e;
			remember(c, a, length, access, e);
			goto out;
		}
		if (w == (e->generation | MEMREG_WORD_SUSPENDED))
			revalidate_locked(c, e);
		else
			drop_locked(c, e, MEMREG_CACHE_ENDED, NULL, false, false);
	}
	ret = add_locked(c, a, length, access, mrp);
	if (!ret) {
		if ((*mrp)->cached)
			remember(c, a, length, access, *mrp);
		trim_locked(c);
	}
out:
	finish(c);
	return ret;
}

/* What the fast path says besides a hit (an entry pointer has these bits clear). */
#define FAST_MISS	0UL	/* not this thread's earlier request, or dead */
#define FAST_STALE	1UL	/* held, but no longer the entry or no longer valid */
#define FAST_CLAIM	2UL	/* a hit, this thread without a counter of its own */

/*
 * The fast path: this thread's earlier hit on exactly this request (only
 * valid requests on cached entries, which have a state word, are
 * remembered), taken and still valid. It calls nothing.
 */
static inline uintptr_t get_fast(struct memreg_cache *c, __u64 a, __u64 length, __u32 access)
{
	struct tls_slot *s = tls_slot_of(a, length);
	struct memreg_mr *e = s->e;
	__u64 lkey = s->lkey, generation = s->generation;
	struct thread_counter *t;

	if (s->uid != c->uid || s->addr != a || s->length != length || s->access != access ||
	    !entry_get(e))
		return FAST_MISS;
	/* Held: no longer reusable. Is it still the one remembered, and valid? */
	if (e->lkey != lkey || e->generation != generation ||
	    __atomic_load_n(e->word, __ATOMIC_ACQUIRE) != generation)
		return (uintptr_t)e | FAST_STALE;
	t = s->counter;
	if (!t)
		return (uintptr_t)e | FAST_CLAIM;
	__atomic_store_n(&t->hits, __atomic_load_n(&t->hits, __ATOMIC_RELAXED) + 1,
			 __ATOMIC_RELAXED);
	return (uintptr_t)e;
}

/* Whatever the fast path did not answer. */
static noinline __cold int get_other(struct memreg_cache *c, uintptr_t fast,
						     __u64 a, __u64 length, __u32 access,
						     struct memreg_mr **mrp)
{
	struct memreg_mr *e = (struct memreg_mr *)(fast & ~(FAST_STALE | FAST_CLAIM));

	if (fast & FAST_CLAIM) {
		count_hit(c);
		*mrp = e;
		return 0;
	}
	if (fast & FAST_STALE)
		entry_put(c, e);
	return get_slow(c, a, length, access, mrp);
}

int memreg_mr_get(struct memreg_cache *c, const void *addr, __u64 length, __u32 access,
		  struct memreg_mr **mrp)
{
	uintptr_t fast = get_fast(c, (__u64)(uintptr_t)addr, length, access);

	if (__builtin_expect(fast && !(fast & (FAST_STALE | FAST_CLAIM)), 1)) {
		*mrp = (struct memreg_mr *)fast;
		return 0;
	}
	return get_other(c, fast, (__u64)(uintptr_t)addr, length, access, mrp);
}

void memreg_mr_put(struct memreg_cache *c, struct memreg_mr *e)
{
	if (e)
		entry_put(c, e);
}

bool memreg_mr_valid(const struct memreg_mr *e)
{
	struct memreg_query q;

	/*
	 * Deregistered by the cache (for room, or after a failed
	 * revalidation): its registration may be parked, its word unchanged,
	 * but its keys move no data.
	 */
	if (!__atomic_load_n(&e->kernel_ref, __ATOMIC_ACQUIRE) || forked_since(e->fork_gen))
		return false;
	if (e->word)
		return __atomic_load_n(e->word, __ATOMIC_ACQUIRE) == e->generation;
	/* No state word (every slot was taken): ask the kernel. */
	return !memreg_query(e->fd, e->lkey, &q) && (q.state & MEMREG_STATE_VALID) &&
	       !(q.state & (MEMREG_STATE_SUSPENDED | MEMREG_STATE_PARKED));
}

__u64 memreg_mr_lkey(const struct memreg_mr *e)
{
	return e->lkey;
}

__u64 memreg_mr_rkey(const struct memreg_mr *e)
{
	return e->rkey;
}

void *memreg_mr_addr(const struct memreg_mr *e)
{
	return (void *)(uintptr_t)e->start;
}

__u64 memreg_mr_length(const struct memreg_mr *e)
{
	return e->length;
}
