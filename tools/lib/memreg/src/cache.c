// SPDX-License-Identifier: (LGPL-2.1 OR MIT)
/*
 * The registration cache in user space: memreg_mr_get() answers a hit with
 * a tree look-up under a mutex and one acquire load of the entry's state
 * word, and no system call. The event ring (read by any caller, or by a
 * thread of the cache's own) drops entries that ended; a stale entry a
 * look-up finds is dropped or revalidated on the spot, so a get never
 * returns a registration that was not valid when it returned.
 *
 * Entries sit in a treap ordered by start address and augmented with the
 * largest end in each subtree (an interval tree), and in a hash table by
 * local key for the events. Each entry holds one kernel reference until it
 * leaves the cache; entries without a user wait on an LRU list, at most
 * max_unused of them.
 *
 * Locking: one mutex, cache->lock, covers the tree, the table, the list
 * and every entry's fields; the system calls of a miss are made under it.
 * Invalidation callbacks run without it, from the thread that dropped the
 * entry. An entry is freed once it left the cache, has no user and its
 * callback ran.
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

struct memreg_mr {
	/* What REGISTER returned: constant while the entry lives. */
	__u64 start;
	__u64 length;
	__u64 lkey;
	__u64 rkey;
	__u32 access;
	__u32 slot;
	__u64 generation;
	const __u64 *word;		/* its state word (in the cache's mapping) */
	/* Under the cache's lock. */
	unsigned int users;		/* memreg_mr_get() without a put */
	bool cached;			/* in the tree and the table */
	bool dead;			/* on the dead list, its callback pending */
	int cause;			/* why it died (MEMREG_CACHE_*) */
	struct memreg_event event;	/* the event that said so, if any */
	bool has_event;
	bool listed;			/* in the list EVENTS_RESYNC returned */
	int fd;				/* the file, for an entry without a word */
	/* Interval tree (treap). */
	struct memreg_mr *left, *right;
	__u32 prio;
	__u64 max_end;			/* the largest end in this subtree */
	/* Key table, LRU list, dead list. */
	struct memreg_mr *hnext;
	struct memreg_mr *lru_prev, *lru_next;
	struct memreg_mr *dnext;
};

struct memreg_cache {
	int fd;
	pthread_mutex_t lock;
	struct memreg_state_words sw;
	struct memreg_events ev;
	int event_fd;			/* the event ring's eventfd */
	memreg_invalidate_cb cb;
	void *cb_arg;
	unsigned int max_unused;
	/* Under lock. */
	struct memreg_mr *root;
	struct memreg_mr **table;
	size_t table_size;		/* a power of two */
	size_t nr;
	struct memreg_mr *lru_head, *lru_tail;	/* most recent first */
	size_t nr_unused;
	struct memreg_mr *dead;		/* left the cache, callback pending */
	__u32 seed;
	struct memreg_cache_stats stats;
	/* The event thread. */
	bool thread;
	pthread_t tid;
	int stop_fd;
};

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

static size_t bucket(const struct memreg_cache *c, __u64 key)
{
	return (size_t)((key * 0x9e3779b97f4a7c15ULL) >> 32) & (c->table_size - 1);
}

static struct memreg_mr *table_find(struct memreg_cache *c, __u64 key)
{
	struct memreg_mr *e;

	for (e = c->table[bucket(c, key)]; e; e = e->hnext)
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
			size_t b = (size_t)((e->lkey * 0x9e3779b97f4a7c15ULL) >> 32) & (size - 1);

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

	for (p = &c->table[bucket(c, e->lkey)]; *p; p = &(*p)->hnext) {
		if (*p == e) {
			*p = e->hnext;
			return;
		}
	}
}

/* ---- The LRU list of entries without a user ---- */

static void lru_unlink(struct memreg_cache *c, struct memreg_mr *e)
{
	if (e->lru_prev)
		e->lru_prev->lru_next = e->lru_next;
	else if (c->lru_head == e)
		c->lru_head = e->lru_next;
	else
		return;			/* not on the list */
	if (e->lru_next)
		e->lru_next->lru_prev = e->lru_prev;
	else
		c->lru_tail = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
	c->nr_unused--;
}

static void lru_push(struct memreg_cache *c, struct memreg_mr *e)
{
	e->lru_prev = NULL;
	e->lru_next = c->lru_head;
	if (c->lru_head)
		c->lru_head->lru_prev = e;
	else
		c->lru_tail = e;
	c->lru_head = e;
	c->nr_unused++;
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

/*
 * Takes @e out of the tree, the table and the list, and puts it on the
 * dead list for its callback (run by finish()). Its kernel reference is
 * dropped here when the registration may still be alive (@deregister).
 */
static void drop_locked(struct memreg_cache *c, struct memreg_mr *e, int cause,
			const struct memreg_event *event, bool deregister)
{
	if (!e->cached)
		return;
	c->root = tree_remove(c->root, e);
	table_remove(c, e);
	lru_unlink(c, e);
	e->cached = false;
	c->nr--;
	if (deregister)
		memreg_deregister(c->fd, e->lkey);
	e->dead = true;
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

/*
 * Unlocks, then runs the callbacks of the entries on the dead list and
 * frees those nobody uses.
 */
static void finish(struct memreg_cache *c)
{
	struct memreg_mr *list = c->dead, *e, *next;

	c->dead = NULL;
	pthread_mutex_unlock(&c->lock);
	if (!list)
		return;
	for (e = list; e; e = e->dnext)
		if (c->cb)
			c->cb(e, e->cause, e->has_event ? &e->event : NULL, c->cb_arg);
	pthread_mutex_lock(&c->lock);
	for (e = list; e; e = next) {
		next = e->dnext;
		e->dead = false;
		if (!e->users)
			free(e);
	}
	pthread_mutex_unlock(&c->lock);
}

/* Deregisters unused entries past max_unused, least recently used first. */
static void trim_locked(struct memreg_cache *c)
{
	while (c->nr_unused > c->max_unused && c->lru_tail)
		drop_locked(c, c->lru_tail, MEMREG_CACHE_LRU, NULL, true);
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
				drop_locked(c, e, MEMREG_CACHE_RESYNC, NULL, false);
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
				drop_locked(c, e, MEMREG_CACHE_ENDED, &batch[i], false);
			else if (batch[i].kind == MEMREG_EVENT_EVICTED)
				drop_locked(c, e, MEMREG_CACHE_EVICTED, &batch[i], false);
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

	/* Resets the eventfd first: an event after this makes it readable again. */
	if (read(c->event_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return -errno;
	pthread_mutex_lock(&c->lock);
	ret = process_locked(c);
	finish(c);
	return ret;
}

static bool events_pending(struct memreg_cache *c)
{
	return memreg_events_ready(&c->ev) || memreg_events_overflowed(&c->ev);
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
	if (a.flags & ~MEMREG_CACHE_EVENT_THREAD)
		return -EINVAL;
	if (!a.event_entries)
		a.event_entries = 1024;
	if (!a.slots)
		a.slots = MEMREG_MAX_SLOTS;
	if (!a.max_unused)
		a.max_unused = 1024;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = fd;
	c->max_unused = a.max_unused;
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
	size_t b;

	if (!c)
		return;
	if (c->thread) {
		__u64 one = 1;

		if (write(c->stop_fd, &one, sizeof(one)) == sizeof(one))
			pthread_join(c->tid, NULL);
		close(c->stop_fd);
	}
	pthread_mutex_lock(&c->lock);
	for (b = 0; b < c->table_size; b++) {
		struct memreg_mr *e, *next;

		for (e = c->table[b]; e; e = next) {
			next = e->hnext;
			memreg_deregister(c->fd, e->lkey);
			free(e);
		}
	}
	pthread_mutex_unlock(&c->lock);
	memreg_events_exit(&c->ev);
	memreg_state_words_unmap(&c->sw);
	close(c->event_fd);
	pthread_mutex_destroy(&c->lock);
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
	pthread_mutex_lock(&c->lock);
	*stats = c->stats;
	stats->entries = c->nr;
	pthread_mutex_unlock(&c->lock);
}

/* Takes a user reference on a cached entry. */
static void use_locked(struct memreg_cache *c, struct memreg_mr *e)
{
	if (!e->users)
		lru_unlink(c, e);
	e->users++;
}

/*
 * A miss: REGISTER, then the entry it names (a kernel hit may name one the
 * cache already has: the extra kernel reference goes back).
 */
static int add_locked(struct memreg_cache *c, __u64 addr, __u64 length, __u32 access,
		      struct memreg_mr **mrp)
{
	struct memreg_register r;
	struct memreg_mr *e;
	int ret, tries;

	ret = table_reserve(c);
	if (ret)
		return ret;
	e = calloc(1, sizeof(*e));
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
		free(e);
		return ret;
	}
	c->stats.misses++;
	*mrp = table_find(c, r.lkey);
	if (*mrp) {
		/* Already cached (the kernel's own cache answered). */
		memreg_deregister(c->fd, r.lkey);
		free(e);
		use_locked(c, *mrp);
		return 0;
	}
	e->start = r.region_addr;
	e->length = r.region_length;
	e->lkey = r.lkey;
	e->rkey = r.rkey;
	e->access = r.access;
	e->slot = r.slot;
	e->generation = r.generation;
	e->users = 1;
	e->fd = c->fd;
	if (r.slot >= c->sw.slots || !r.generation) {
		/* No state word: never cached, deregistered at its last put. */
		e->word = NULL;
		*mrp = e;
		return 0;
	}
	e->word = &c->sw.words[r.slot];
	e->prio = next_prio(c);
	e->cached = true;
	c->root = tree_insert(c->root, e);
	e->hnext = c->table[bucket(c, e->lkey)];
	c->table[bucket(c, e->lkey)] = e;
	c->nr++;
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
		drop_locked(c, e, MEMREG_CACHE_ENDED, NULL, true);
		return;
	}
	memreg_deregister(c->fd, r.lkey);
	if (r.lkey != e->lkey || r.generation != e->generation)
		drop_locked(c, e, MEMREG_CACHE_ENDED, NULL, false);
}

int memreg_mr_get(struct memreg_cache *c, void *addr, __u64 length, __u32 access,
		  struct memreg_mr **mrp)
{
	__u64 a = (__u64)(uintptr_t)addr, end = a + length;
	int tries, ret = 0;

	*mrp = NULL;
	if (!length || end < a || !access || (access & ~MEMREG_ACCESS_ALL))
		return -EINVAL;
	pthread_mutex_lock(&c->lock);
	if (events_pending(c)) {
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
			use_locked(c, e);
			c->stats.hits++;
			*mrp = e;
			goto out;
		}
		if (w == (e->generation | MEMREG_WORD_SUSPENDED))
			revalidate_locked(c, e);
		else
			drop_locked(c, e, MEMREG_CACHE_ENDED, NULL, false);
	}
	ret = add_locked(c, a, length, access, mrp);
	if (!ret)
		trim_locked(c);
out:
	finish(c);
	return ret;
}

void memreg_mr_put(struct memreg_cache *c, struct memreg_mr *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&c->lock);
	if (e->users)
		e->users--;
	if (!e->users) {
		if (e->cached) {
			lru_push(c, e);
			trim_locked(c);
		} else if (!e->dead) {
			/* Not cached (no state word) or dropped: free it. */
			if (!e->word)
				memreg_deregister(c->fd, e->lkey);
			free(e);
		}
	}
	finish(c);
}

bool memreg_mr_valid(const struct memreg_mr *e)
{
	struct memreg_query q;

	if (e->word)
		return __atomic_load_n(e->word, __ATOMIC_ACQUIRE) == e->generation;
	/* No state word (every slot was taken): ask the kernel. */
	return !memreg_query(e->fd, e->lkey, &q) && (q.state & MEMREG_STATE_VALID) &&
	       !(q.state & MEMREG_STATE_SUSPENDED);
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
