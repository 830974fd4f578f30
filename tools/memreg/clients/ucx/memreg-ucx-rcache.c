/* SPDX-License-Identifier: GPL-2.0 */
/*
 * memreg-ucx-rcache: UCX's registration cache (ucs_rcache of UCX 1.13) with
 * memreg as its only source of memory events, and the checks that show that
 * it stays correct.
 *
 *   memreg-ucx-rcache [--monitor=memreg|hooks] [--mode=watch|pinned] [--bench N]
 *
 * With --monitor=memreg (the default) UCM installs no memory hooks: the
 * program starts with UCX_MEM_EVENTS=no in its environment (it executes
 * itself again with it when it is missing, because UCM installs its hooks
 * while libucs initialises, before main()), turns events back on with
 * ucm_set_global_opts() and declares UCM_EVENT_VM_UNMAPPED external. The
 * rcache's mem_reg registers each region with memreg (a watch-only
 * registration with --mode=watch, the default, or a pinned one with
 * --mode=pinned) and keeps its key, slot and generation in the region's
 * tail; mem_dereg deregisters it. Staleness reaches the rcache two ways:
 *
 *  - an event thread reads memreg's event ring and, for an ENDED or EVICTED
 *    registration that an rcache region still holds, calls ucm_vm_munmap()
 *    over that region's range, as UCM's own hooks would. Events for keys no
 *    region holds (late events, after the region was dropped) are ignored;
 *    SUSPENDED and RESUMED events are only counted;
 *  - after every ucs_rcache_get() the region's state word is loaded: equal
 *    to the generation, the region is used; SUSPENDED, it is revalidated
 *    (MEMREG_IOC_REVALIDATE) and used if that says so; otherwise it is
 *    invalidated (ucs_rcache_region_invalidate()), put, and the get retried.
 *
 * With --monitor=hooks the rcache runs on UCM's own hooks and registers
 * nothing: the cost baseline, and a sanity run of the checks that do not
 * need memreg. The program prints TAP and a last line
 * "MEMREG-UCX: P passed, F failed"; it exits with 1 when a check failed and
 * with 4 when /dev/memreg is missing. See README for what each check asserts.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <ucm/api/ucm.h>
#include <ucs/memory/rcache.h>
#include <ucs/type/status.h>

#include "libmemreg.h"

#define ARRAY_SIZE(a)		(sizeof(a) / sizeof((a)[0]))
#define KIB			1024UL
#define MIB			(1024UL * 1024UL)

/* Events the ring holds; check 12 overflows it on purpose. */
#define EV_ENTRIES		256
/* Events remembered for the checks that wait for one. */
#define EV_LOG			4096
/* Registrations one resync may list. */
#define RESYNC_MAX		4096
/* Buckets of the key table (a power of two). */
#define TABLE_BITS		10
/* Gets of one buffer before giving up on stale regions. */
#define GET_TRIES		8
/* REGISTER calls that raced with an invalidation (EAGAIN, EBUSY) before giving up. */
#define REG_TRIES		8
/* How long a check waits for an event or a drained ring. */
#define WAIT_MS			10000
/* Largest range a check copies through a key. */
#define TMP_BYTES		(4 * MIB)

/* A region registered while its buffer was being remapped (check 10). */
#define BORN_RACED		(~0UL)

enum monitor {
	MONITOR_MEMREG,
	MONITOR_HOOKS,
};

enum result {
	RES_PASS,
	RES_FAIL,
	RES_SKIP,
};

/* One rcache and what its ops did. */
struct cache {
	const char *name;
	ucs_rcache_t *rc;
	unsigned long live;		/* regions between mem_reg and mem_dereg (tbl_lock) */
	unsigned long regs;		/* successful mem_reg calls */
	unsigned long deregs;		/* mem_dereg calls */
};

/* The rcache's region with this program's tail (region_struct_size). */
struct region {
	ucs_rcache_region_t super;
	struct cache *cache;
	struct region *next;		/* the key table's chain (tbl_lock) */
	__u64 id;			/* unique, never reused; the user data given to REGISTER */
	__u64 hkey;			/* what the table hashes: key, or id with hooks */
	__u64 key;			/* memreg's local key */
	__u64 generation;
	__u64 region_addr;		/* what REGISTER returned: COPY offsets count from it */
	__u64 region_length;
	unsigned long born;		/* the remap sequence it was registered at (check 10) */
	__u32 slot;
	__u32 reg_flags;
	bool retired;			/* an event or a stale word dropped it (tbl_lock) */
};

/* What a get passes to mem_reg: the remap sequence of its buffer (check 10). */
struct reg_arg {
	const unsigned long *seq;
};

/* What cache_get() found. */
struct got {
	struct region *r;
	bool missed;			/* mem_reg ran: the rcache missed */
	unsigned int stale;		/* stale regions the state word caught and dropped */
	bool revalidated;		/* a suspended registration resumed by REVALIDATE */
};

/* One event the event thread handled. */
struct ev_record {
	__u64 key;
	__u64 user_data;
	__u32 kind;
	__u32 cause;
	unsigned int dropped;		/* rcache regions it invalidated */
};

/* Counters, updated with atomic adds from any thread. */
static struct {
	unsigned long reg_failures;
	unsigned long reg_range_bad;	/* REGISTER's range does not cover the region */
	unsigned long reg_kind_bad;	/* the WATCH bit came back other than asked */
	unsigned long reg_cached;	/* REGISTER served by a live registration */
	unsigned long dereg_ended;	/* DEREGISTER of a key that had ended (ENOENT) */
	unsigned long dereg_errors;	/* DEREGISTER failed otherwise */
	unsigned long stale_caught;	/* gets whose region's word said stale */
	unsigned long suspended_seen;
	unsigned long revalidated;
	unsigned long revalidate_stale;
	unsigned long no_slot;		/* regions checked by REVALIDATE for want of a slot */
	unsigned long tries_exhausted;
	unsigned long invalidate_done;	/* completion callbacks of region invalidations */
	unsigned long events;
	unsigned long ev_ended;
	unsigned long ev_evicted;
	unsigned long ev_suspended;
	unsigned long ev_resumed;
	unsigned long ev_unknown;
	unsigned long ev_late;		/* ENDED/EVICTED for a key no region holds */
	unsigned long ev_dropped;	/* regions invalidated through ucm_vm_munmap() */
	unsigned long bad_user_data;	/* events whose user data is no id of ours */
	unsigned long resyncs;
	unsigned long resync_dropped;
	unsigned long resync_errors;
	unsigned long hook_probe;	/* VM_UNMAPPED events UCM itself reported */
} cnt;

#define INC(x)		__atomic_add_fetch(&(x), 1, __ATOMIC_RELAXED)
#define ADD(x, n)	__atomic_add_fetch(&(x), (n), __ATOMIC_RELAXED)
#define LOAD(x)		__atomic_load_n(&(x), __ATOMIC_RELAXED)

static struct {
	enum monitor monitor;
	bool watch;
	long bench;
	size_t page;
	int fd;				/* /dev/memreg, -1 with hooks */
	struct memreg_state_words sw;
	struct memreg_events ev;
	int efd;			/* the event ring's eventfd */
	unsigned char *tmp;		/* TMP_BYTES for COPY */
	int last_reg_error;
	int last_dereg_error;
} g = { .fd = -1, .efd = -1 };

/* The event thread's state, under tbl_lock. */
static struct {
	pthread_t thread;
	bool running;
	bool paused;
	bool idle;
	bool stop;
	int wake_fd;
} evt = { .wake_fd = -1 };

/*
 * tbl_lock protects the key table, the regions' chain and retired fields,
 * the caches' live counts, the event log and evt. Lock order: an rcache's
 * page table lock, then tbl_lock (mem_reg and mem_dereg run under the
 * former); the event thread calls ucm_vm_munmap() under tbl_lock, which is
 * safe because the rcache's unmap callback only try-locks its page table
 * and queues, and never calls mem_dereg. No rcache function is called with
 * tbl_lock held otherwise.
 */
static pthread_mutex_t tbl_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tbl_cond;
static struct region *table[1U << TABLE_BITS];
static struct ev_record ev_log[EV_LOG];
static unsigned long ev_log_next;

/* The last region id handed out. */
static __u64 next_id;
/* mem_reg calls made by this thread: a get that changes it missed. */
static __thread unsigned long tls_mem_regs;

static struct cache main_cache = { .name = "memreg-ucx-main" };

static unsigned int tap_n, tap_pass, tap_fail;
static const char *skip_why;

/* ---- Output ------------------------------------------------------------- */

static void __attribute__((format(printf, 1, 2))) diag(const char *fmt, ...)
{
	va_list ap;

	fputs("# ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
}

static void __attribute__((noreturn, format(printf, 1, 2))) bail(const char *fmt, ...)
{
	va_list ap;

	fputs("Bail out! ", stdout);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	printf("MEMREG-UCX: %u passed, %u failed\n", tap_pass, tap_fail + 1);
	fflush(stdout);
	exit(1);
}

static void report(enum result res, const char *name)
{
	tap_n++;
	if (res == RES_FAIL) {
		tap_fail++;
		printf("not ok %u - %s\n", tap_n, name);
		return;
	}
	tap_pass++;
	if (res == RES_SKIP)
		printf("ok %u - %s # SKIP %s\n", tap_n, name, skip_why ? skip_why : "");
	else
		printf("ok %u - %s\n", tap_n, name);
}

/* In a check: records a failed expectation, with its reason, and goes on. */
#define expect(cond, ...)						\
	do {								\
		if (!(cond)) {						\
			diag(__VA_ARGS__);				\
			ok = false;					\
		}							\
	} while (0)

/* ---- Small helpers ------------------------------------------------------ */

static __u64 now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (__u64)ts.tv_sec * 1000000000ULL + (__u64)ts.tv_nsec;
}

static void deadline_after(struct timespec *ts, int ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void sleep_us(long us)
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

static __u64 mix64(__u64 x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* A deterministic generator: every run makes the same choices. */
static __u64 rnd_next(__u64 *state)
{
	*state = mix64(*state);
	return *state;
}

/*
 * The byte at offset @off of pattern @seed: byte (off & 7) of a word that
 * depends on the seed and off / 8 (this program runs on little-endian
 * x86-64, so a word copied to memory lays out the same bytes).
 */
static unsigned char pattern_byte(__u64 seed, size_t off)
{
	return mix64(seed ^ (off >> 3)) >> ((off & 7) * 8);
}

/* Writes bytes [off, off + len) of pattern @seed to @p. */
static void pattern_fill(void *p, size_t len, __u64 seed, size_t off)
{
	unsigned char *b = p;
	size_t i = 0;

	for (; i < len && ((off + i) & 7); i++)
		b[i] = pattern_byte(seed, off + i);
	for (; i + 8 <= len; i += 8) {
		__u64 w = mix64(seed ^ ((off + i) >> 3));

		memcpy(b + i, &w, sizeof(w));
	}
	for (; i < len; i++)
		b[i] = pattern_byte(seed, off + i);
}

/* True when @p holds bytes [off, off + len) of pattern @seed. */
static bool pattern_check(const void *p, size_t len, __u64 seed, size_t off)
{
	unsigned char chunk[4096];
	const unsigned char *b = p;
	size_t done, n;

	for (done = 0; done < len; done += n) {
		n = len - done < sizeof(chunk) ? len - done : sizeof(chunk);
		pattern_fill(chunk, n, seed, off + done);
		if (memcmp(chunk, b + done, n))
			return false;
	}
	return true;
}

/*
 * Maps @len bytes (a multiple of the page size) of private anonymous memory
 * between two PROT_NONE guard pages, so that the kernel never merges it
 * with a neighbour: each buffer is a mapping of its own.
 */
static void *buf_map(size_t len)
{
	size_t total = len + 2 * g.page;
	char *p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		bail("mmap of %zu bytes: %s", total, strerror(errno));
	if (mprotect(p, g.page, PROT_NONE) || mprotect(p + g.page + len, g.page, PROT_NONE))
		bail("mprotect of a guard page: %s", strerror(errno));
	return p + g.page;
}

static void buf_unmap(void *p, size_t len)
{
	munmap((char *)p - g.page, len + 2 * g.page);
}

/* Anonymous read-write memory over [p, p + len), replacing what was there. */
static bool map_fixed(void *p, size_t len, int prot, int flags)
{
	void *q = mmap(p, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);

	if (q == MAP_FAILED)
		return false;
	if (q != p) {
		munmap(q, len);
		return false;
	}
	return true;
}

static uintptr_t reg_start(const struct region *r)
{
	return r->super.super.start;
}

static uintptr_t reg_end(const struct region *r)
{
	return r->super.super.end;
}

static bool memreg_on(void)
{
	return g.monitor == MONITOR_MEMREG;
}

static bool get_stats(struct memreg_stats *st)
{
	int ret = memreg_stats(g.fd, st);

	if (ret)
		diag("STATS: %s", strerror(-ret));
	return !ret;
}

/* The raw state word of a region, or 0 when it has none. */
static __u64 region_word(const struct region *r)
{
	if (r->slot >= g.sw.slots || !r->generation)
		return 0;
	return __atomic_load_n(&g.sw.words[r->slot], __ATOMIC_ACQUIRE);
}

/* True when (slot, generation) no longer names a usable registration. */
static bool word_gone(__u32 slot, __u64 generation)
{
	__u64 w;

	if (slot >= g.sw.slots || !generation)
		return false;
	w = __atomic_load_n(&g.sw.words[slot], __ATOMIC_ACQUIRE);
	return w != generation && w != (generation | MEMREG_WORD_SUSPENDED);
}

/* ---- The key table ------------------------------------------------------ */

static unsigned int table_hash(__u64 hkey)
{
	return (hkey * 0x9e3779b97f4a7c15ULL) >> (64 - TABLE_BITS);
}

/* Under tbl_lock. */
static void table_insert(struct region *r)
{
	unsigned int b = table_hash(r->hkey);

	r->next = table[b];
	table[b] = r;
	r->cache->live++;
}

/* Under tbl_lock. */
static void table_remove(struct region *r)
{
	struct region **pp;

	for (pp = &table[table_hash(r->hkey)]; *pp; pp = &(*pp)->next) {
		if (*pp == r) {
			*pp = r->next;
			r->cache->live--;
			return;
		}
	}
	diag("region %llu missing from the key table", (unsigned long long)r->id);
}

/*
 * Under tbl_lock: invalidates in the rcache every live region that holds
 * @key, through the same entry point UCM's hooks use. Returns how many.
 */
static unsigned int drop_key_locked(__u64 key)
{
	unsigned int n = 0;
	struct region *r;

	for (r = table[table_hash(key)]; r; r = r->next) {
		if (r->key != key || r->retired)
			continue;
		r->retired = true;
		ucm_vm_munmap((void *)reg_start(r), reg_end(r) - reg_start(r));
		n++;
	}
	return n;
}

static int cmp_u64(const void *a, const void *b)
{
	__u64 x = *(const __u64 *)a, y = *(const __u64 *)b;

	return x < y ? -1 : x > y;
}

/*
 * Under tbl_lock, after the event ring overflowed: EVENTS_RESYNC discards
 * the unread events and lists the registrations valid now; every live
 * region whose key is not among them is invalidated.
 */
static void resync_locked(void)
{
	static struct memreg_resync_entry ents[RESYNC_MAX];
	static __u64 keys[RESYNC_MAX];
	__u32 count = 0, i;
	bool all = false;
	unsigned int b;
	struct region *r;
	int ret;

	INC(cnt.resyncs);
	ret = memreg_events_resync(g.fd, ents, RESYNC_MAX, &count);
	if (ret) {
		INC(cnt.resync_errors);
		all = true;
	} else if (count > RESYNC_MAX) {
		all = true;
	}
	for (i = 0; !all && i < count; i++)
		keys[i] = ents[i].key;
	if (!all)
		qsort(keys, count, sizeof(keys[0]), cmp_u64);
	for (b = 0; b < ARRAY_SIZE(table); b++) {
		for (r = table[b]; r; r = r->next) {
			if (r->retired)
				continue;
			if (!all && bsearch(&r->key, keys, count, sizeof(keys[0]), cmp_u64))
				continue;
			r->retired = true;
			ucm_vm_munmap((void *)reg_start(r), reg_end(r) - reg_start(r));
			INC(cnt.resync_dropped);
		}
	}
}

/* ---- rcache ops --------------------------------------------------------- */

static ucs_status_t status_of(int err)
{
	switch (err) {
	case -ENOMEM:
		return UCS_ERR_NO_MEMORY;
	case -EMFILE:
	case -EDQUOT:
		return UCS_ERR_EXCEEDS_LIMIT;
	case -EFAULT:
	case -EPERM:
	case -EACCES:
		return UCS_ERR_INVALID_ADDR;
	default:
		return UCS_ERR_IO_ERROR;
	}
}

static ucs_status_t op_mem_reg(void *context, ucs_rcache_t *rcache, void *arg,
			       ucs_rcache_region_t *rregion, uint16_t flags)
{
	struct cache *c = context;
	struct region *r = (struct region *)rregion;
	const struct reg_arg *ra = arg;
	uintptr_t start = rregion->super.start;
	size_t len = rregion->super.end - start;
	struct memreg_register reg;
	unsigned long before = 0, after;
	unsigned int tries = 0;
	__u32 access = 0;
	int ret;

	(void)rcache;
	tls_mem_regs++;
	r->cache = c;
	r->id = __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);
	r->hkey = r->id;
	r->slot = MEMREG_NO_SLOT;
	if (ra)
		before = __atomic_load_n(ra->seq, __ATOMIC_SEQ_CST);
	if (memreg_on()) {
		if (rregion->prot & PROT_READ)
			access |= MEMREG_ACCESS_LOCAL_READ;
		if (rregion->prot & PROT_WRITE)
			access |= MEMREG_ACCESS_LOCAL_WRITE;
		if (!access)
			access = MEMREG_ACCESS_LOCAL_READ;
		do {
			ret = memreg_register_ex(g.fd, (void *)start, len, access,
						 g.watch ? MEMREG_REGISTER_WATCH : 0, r->id, &reg);
		} while ((ret == -EAGAIN || ret == -EBUSY) && ++tries < REG_TRIES);
		if (ret) {
			INC(cnt.reg_failures);
			if (!(flags & UCS_RCACHE_MEM_REG_HIDE_ERRORS))
				g.last_reg_error = ret;
			return status_of(ret);
		}
		if (reg.region_addr > start || reg.region_addr + reg.region_length < start + len)
			INC(cnt.reg_range_bad);
		if (!(reg.flags & MEMREG_REGISTER_WATCH) != !g.watch)
			INC(cnt.reg_kind_bad);
		if (reg.flags & MEMREG_REGISTER_CACHED)
			INC(cnt.reg_cached);
		r->key = reg.lkey;
		r->hkey = reg.lkey;
		r->slot = reg.slot;
		r->generation = reg.generation;
		r->region_addr = reg.region_addr;
		r->region_length = reg.region_length;
		r->reg_flags = reg.flags;
	}
	r->born = 0;
	if (ra) {
		after = __atomic_load_n(ra->seq, __ATOMIC_SEQ_CST);
		r->born = before == after && !(before & 1) ? before : BORN_RACED;
	}
	pthread_mutex_lock(&tbl_lock);
	r->retired = false;
	table_insert(r);
	pthread_mutex_unlock(&tbl_lock);
	INC(c->regs);
	return UCS_OK;
}

/* May run on UCX's async thread, or on whichever thread puts the last reference. */
static void op_mem_dereg(void *context, ucs_rcache_t *rcache, ucs_rcache_region_t *rregion)
{
	struct cache *c = context;
	struct region *r = (struct region *)rregion;
	int ret;

	(void)rcache;
	pthread_mutex_lock(&tbl_lock);
	table_remove(r);
	pthread_mutex_unlock(&tbl_lock);
	if (memreg_on()) {
		ret = memreg_deregister(g.fd, r->key);
		if (ret == -ENOENT) {
			INC(cnt.dereg_ended);
		} else if (ret) {
			INC(cnt.dereg_errors);
			g.last_dereg_error = ret;
		}
	}
	INC(c->deregs);
}

static void op_dump_region(void *context, ucs_rcache_t *rcache, ucs_rcache_region_t *rregion,
			   char *buf, size_t max)
{
	struct region *r = (struct region *)rregion;

	(void)context;
	(void)rcache;
	snprintf(buf, max, "id %llu key 0x%llx slot %u generation 0x%llx",
		 (unsigned long long)r->id, (unsigned long long)r->key, r->slot,
		 (unsigned long long)r->generation);
}

static const ucs_rcache_ops_t cache_ops = {
	.mem_reg = op_mem_reg,
	.mem_dereg = op_mem_dereg,
	.dump_region = op_dump_region,
};

static void invalidate_done(void *arg)
{
	(void)arg;
	INC(cnt.invalidate_done);
}

static void cache_create(struct cache *c, unsigned long max_regions)
{
	ucs_rcache_params_t p;
	ucs_status_t status;

	memset(&p, 0, sizeof(p));
	p.region_struct_size = sizeof(struct region);
	p.alignment = g.page;
	p.max_alignment = g.page;
	p.ucm_events = UCM_EVENT_VM_UNMAPPED;
	p.ucm_event_priority = 1000;
	p.ops = &cache_ops;
	p.context = c;
	/* No UCS_RCACHE_FLAG_NO_PFN_CHECK: with it, UCX 1.13 never evicts by LRU. */
	p.flags = 0;
	p.max_regions = max_regions;
	p.max_size = SIZE_MAX;
	/* Small, so that UCX's async thread also runs mem_dereg now and then. */
	p.max_unreleased = MIB;
	c->live = 0;
	c->regs = 0;
	c->deregs = 0;
	status = ucs_rcache_create(&p, c->name, NULL, &c->rc);
	if (status != UCS_OK)
		bail("ucs_rcache_create(%s): %s", c->name, ucs_status_string(status));
}

static void cache_destroy(struct cache *c)
{
	if (!c->rc)
		return;
	ucs_rcache_destroy(c->rc);
	c->rc = NULL;
}

static unsigned long cache_live(struct cache *c)
{
	unsigned long n;

	pthread_mutex_lock(&tbl_lock);
	n = c->live;
	pthread_mutex_unlock(&tbl_lock);
	return n;
}

/* ---- Getting a region that is not stale --------------------------------- */

enum region_state {
	REGION_VALID,
	REGION_RESUMED,
	REGION_STALE,
};

/*
 * Whether the region's registration is usable now: one acquire load of its
 * state word, and REVALIDATE only when that says it is suspended (or when
 * the region has no slot).
 */
static enum region_state region_state(const struct region *r)
{
	bool has_word = r->slot < g.sw.slots && r->generation;
	int ret;

	if (has_word) {
		__u64 w = __atomic_load_n(&g.sw.words[r->slot], __ATOMIC_ACQUIRE);

		if (w == r->generation)
			return REGION_VALID;
		if (w != (r->generation | MEMREG_WORD_SUSPENDED))
			return REGION_STALE;
		INC(cnt.suspended_seen);
	} else {
		INC(cnt.no_slot);
	}
	ret = memreg_revalidate(g.fd, r->key);
	if (ret) {
		INC(cnt.revalidate_stale);
		return REGION_STALE;
	}
	if (!has_word)
		return REGION_VALID;
	INC(cnt.revalidated);
	return REGION_RESUMED;
}

/* Drops a region the state word found stale: invalidate, then put our reference. */
static void drop_stale(struct cache *c, struct region *r)
{
	pthread_mutex_lock(&tbl_lock);
	r->retired = true;
	pthread_mutex_unlock(&tbl_lock);
	ucs_rcache_region_invalidate(c->rc, &r->super, invalidate_done, NULL);
	ucs_rcache_region_put(c->rc, &r->super);
}

/*
 * ucs_rcache_get() of [addr, addr + len) with @prot, then the state word
 * check: the region returned in got->r is one memreg says is usable now.
 */
static ucs_status_t cache_get(struct cache *c, void *addr, size_t len, int prot,
			      struct reg_arg *arg, struct got *got)
{
	ucs_rcache_region_t *rr;
	ucs_status_t status;
	unsigned int tries;

	memset(got, 0, sizeof(*got));
	for (tries = 0; tries < GET_TRIES; tries++) {
		unsigned long regs = tls_mem_regs;

		status = ucs_rcache_get(c->rc, addr, len, prot, arg, &rr);
		if (tls_mem_regs != regs)
			got->missed = true;
		if (status != UCS_OK)
			return status;
		got->r = (struct region *)rr;
		if (!memreg_on())
			return UCS_OK;
		switch (region_state(got->r)) {
		case REGION_VALID:
			return UCS_OK;
		case REGION_RESUMED:
			got->revalidated = true;
			return UCS_OK;
		case REGION_STALE:
			break;
		}
		got->stale++;
		INC(cnt.stale_caught);
		drop_stale(c, got->r);
		got->r = NULL;
	}
	INC(cnt.tries_exhausted);
	return UCS_ERR_BUSY;
}

static void cache_put(struct cache *c, struct region *r)
{
	ucs_rcache_region_put(c->rc, &r->super);
}

/* A get that must succeed; the check fails (and gets NULL) otherwise. */
static struct region *must_get(struct cache *c, void *addr, size_t len, int prot,
			       struct got *got, bool *ok)
{
	ucs_status_t status = cache_get(c, addr, len, prot, NULL, got);

	if (status != UCS_OK) {
		diag("get of %p+%zu: %s (last REGISTER error %s)", addr, len,
		     ucs_status_string(status), strerror(-g.last_reg_error));
		*ok = false;
		return NULL;
	}
	return got->r;
}

/*
 * The ground truth that @r is not stale for [addr, addr + len), which holds
 * bytes [off, off + len) of pattern @seed: the region covers it, and with
 * memreg its state word is valid and, pinned, a COPY through its key reads
 * those bytes back from the registration's own page frames; a watch cannot
 * move data, so REVALIDATE must find its frames still mapped in place.
 */
static bool verify(const struct region *r, const void *addr, size_t len, __u64 seed,
		   size_t off, const char *what)
{
	uintptr_t a = (uintptr_t)addr;
	int ret;

	if (reg_start(r) > a || reg_end(r) < a + len) {
		diag("%s: region 0x%lx-0x%lx does not cover %p+%zu", what,
		     (unsigned long)reg_start(r), (unsigned long)reg_end(r), addr, len);
		return false;
	}
	if (!pattern_check(addr, len, seed, off)) {
		diag("%s: memory at %p does not hold what was written", what, addr);
		return false;
	}
	if (!memreg_on())
		return true;
	if (r->region_addr > a || r->region_addr + r->region_length < a + len) {
		diag("%s: registration 0x%llx+%llu does not cover %p+%zu", what,
		     (unsigned long long)r->region_addr, (unsigned long long)r->region_length,
		     addr, len);
		return false;
	}
	if (r->slot < g.sw.slots && !memreg_word_valid(&g.sw, r->slot, r->generation)) {
		diag("%s: state word 0x%llx, generation 0x%llx", what,
		     (unsigned long long)region_word(r), (unsigned long long)r->generation);
		return false;
	}
	if (g.watch) {
		ret = memreg_revalidate(g.fd, r->key);
		if (ret) {
			diag("%s: REVALIDATE of key 0x%llx: %s", what,
			     (unsigned long long)r->key, strerror(-ret));
			return false;
		}
		return true;
	}
	if (len > TMP_BYTES)
		return true;
	ret = memreg_copy(g.fd, r->key, a - r->region_addr, g.tmp, len,
			  MEMREG_COPY_FROM_REGION);
	if (ret) {
		diag("%s: COPY from key 0x%llx: %s", what, (unsigned long long)r->key,
		     strerror(-ret));
		return false;
	}
	if (!pattern_check(g.tmp, len, seed, off)) {
		diag("%s: COPY through key 0x%llx read other bytes than memory holds", what,
		     (unsigned long long)r->key);
		return false;
	}
	return true;
}

/*
 * Pinned: writes bytes [off, off + len) of pattern @seed into the memory at
 * @addr through the region's key, as an adapter would, and checks that the
 * memory shows them.
 */
static bool write_through(const struct region *r, void *addr, size_t len, __u64 seed,
			  size_t off, const char *what)
{
	int ret;

	pattern_fill(g.tmp, len, seed, off);
	ret = memreg_copy(g.fd, r->key, (uintptr_t)addr - r->region_addr, g.tmp, len,
			  MEMREG_COPY_TO_REGION);
	if (ret) {
		diag("%s: COPY to key 0x%llx: %s", what, (unsigned long long)r->key,
		     strerror(-ret));
		return false;
	}
	if (!pattern_check(addr, len, seed, off)) {
		diag("%s: COPY through key 0x%llx did not reach the memory at %p", what,
		     (unsigned long long)r->key, addr);
		return false;
	}
	return true;
}

/* ---- The event thread --------------------------------------------------- */

/* Under tbl_lock. */
static void handle_event_locked(const struct memreg_event *e, __u64 user_data)
{
	struct ev_record *rec = &ev_log[ev_log_next++ % EV_LOG];
	unsigned int n = 0;

	INC(cnt.events);
	if (!user_data || user_data > __atomic_load_n(&next_id, __ATOMIC_RELAXED))
		INC(cnt.bad_user_data);
	switch (e->kind) {
	case MEMREG_EVENT_ENDED:
	case MEMREG_EVENT_EVICTED:
		if (e->kind == MEMREG_EVENT_ENDED)
			INC(cnt.ev_ended);
		else
			INC(cnt.ev_evicted);
		n = drop_key_locked(e->key);
		if (n)
			ADD(cnt.ev_dropped, n);
		else
			INC(cnt.ev_late);
		break;
	case MEMREG_EVENT_SUSPENDED:
		/* Checked lazily: the state word says so at the next get. */
		INC(cnt.ev_suspended);
		break;
	case MEMREG_EVENT_RESUMED:
		INC(cnt.ev_resumed);
		break;
	default:
		INC(cnt.ev_unknown);
		break;
	}
	rec->key = e->key;
	rec->user_data = user_data;
	rec->kind = e->kind;
	rec->cause = e->cause;
	rec->dropped = n;
}

/* Under tbl_lock, so that a drained ring means every event read was handled. */
static unsigned int consume_locked(void)
{
	struct memreg_event evs[64];
	__u64 ud[64];
	unsigned int total = 0, n, i;

	do {
		n = memreg_events_read_user_data(&g.ev, evs, ud, ARRAY_SIZE(evs));
		for (i = 0; i < n; i++)
			handle_event_locked(&evs[i], ud[i]);
		total += n;
	} while (n);
	if (memreg_events_overflowed(&g.ev)) {
		resync_locked();
		total++;
	}
	return total;
}

static void drain_fd(int fd)
{
	__u64 v;

	while (read(fd, &v, sizeof(v)) == sizeof(v))
		;
}

static void *event_thread(void *arg)
{
	struct pollfd pfd[2] = {
		{ .fd = g.efd, .events = POLLIN },
		{ .fd = evt.wake_fd, .events = POLLIN },
	};
	unsigned int n;
	bool stop;

	(void)arg;
	for (;;) {
		pthread_mutex_lock(&tbl_lock);
		while (evt.paused && !evt.stop) {
			evt.idle = true;
			pthread_cond_broadcast(&tbl_cond);
			pthread_cond_wait(&tbl_cond, &tbl_lock);
		}
		evt.idle = false;
		stop = evt.stop;
		if (!stop) {
			/* Cleared before the ring is read: a later event signals again. */
			drain_fd(g.efd);
			n = consume_locked();
			pthread_cond_broadcast(&tbl_cond);
		}
		pthread_mutex_unlock(&tbl_lock);
		if (stop)
			break;
		if (n)
			continue;
		if (poll(pfd, 2, -1) < 0 && errno != EINTR)
			break;
		drain_fd(evt.wake_fd);
	}
	return NULL;
}

static void evt_kick(void)
{
	__u64 one = 1;

	if (write(evt.wake_fd, &one, sizeof(one)) != sizeof(one))
		diag("write to the wake-up eventfd: %s", strerror(errno));
}

/* Stops the event thread from reading the ring; returns once it is idle. */
static void evt_pause(void)
{
	pthread_mutex_lock(&tbl_lock);
	evt.paused = true;
	evt_kick();
	while (!evt.idle)
		pthread_cond_wait(&tbl_cond, &tbl_lock);
	pthread_mutex_unlock(&tbl_lock);
}

static void evt_resume(void)
{
	pthread_mutex_lock(&tbl_lock);
	evt.paused = false;
	pthread_cond_broadcast(&tbl_cond);
	pthread_mutex_unlock(&tbl_lock);
}

static unsigned long log_mark(void)
{
	unsigned long m;

	pthread_mutex_lock(&tbl_lock);
	m = ev_log_next;
	pthread_mutex_unlock(&tbl_lock);
	return m;
}

/* Waits for the event thread to have handled a @kind event of @key logged from @since on. */
static bool wait_event(__u64 key, __u32 kind, unsigned long since, struct ev_record *out)
{
	struct timespec dl;
	bool found = false, timed_out = false;
	unsigned long i;

	deadline_after(&dl, WAIT_MS);
	pthread_mutex_lock(&tbl_lock);
	for (;;) {
		i = ev_log_next - since > EV_LOG ? ev_log_next - EV_LOG : since;
		for (; i < ev_log_next; i++) {
			if (ev_log[i % EV_LOG].key == key && ev_log[i % EV_LOG].kind == kind) {
				*out = ev_log[i % EV_LOG];
				found = true;
				break;
			}
		}
		if (found || timed_out)
			break;
		timed_out = pthread_cond_timedwait(&tbl_cond, &tbl_lock, &dl) == ETIMEDOUT;
	}
	pthread_mutex_unlock(&tbl_lock);
	return found;
}

/* Waits until the event thread has read and handled every event written so far. */
static bool wait_drained(void)
{
	struct timespec dl;
	bool done, timed_out = false;

	if (!memreg_on())
		return true;
	deadline_after(&dl, WAIT_MS);
	pthread_mutex_lock(&tbl_lock);
	for (;;) {
		done = !memreg_events_ready(&g.ev) && !memreg_events_overflowed(&g.ev);
		if (done || timed_out)
			break;
		evt_kick();
		timed_out = pthread_cond_timedwait(&tbl_cond, &tbl_lock, &dl) == ETIMEDOUT;
	}
	pthread_mutex_unlock(&tbl_lock);
	if (!done)
		diag("the event thread did not drain the ring in %d ms", WAIT_MS);
	return done;
}

/* ---- Checks ------------------------------------------------------------- */

#define RW	(PROT_READ | PROT_WRITE)

/* What a cached region was, for the checks that change the memory under it. */
struct was {
	__u64 id;
	__u64 key;
	__u64 generation;
	__u32 slot;
};

/* Fills and caches a buffer; @was gets what its region was. */
static bool prime(char *buf, size_t len, __u64 seed, struct was *was)
{
	struct region *r;
	bool ok = true;
	struct got got;

	pattern_fill(buf, len, seed, 0);
	r = must_get(&main_cache, buf, len, RW, &got, &ok);
	if (!r)
		return false;
	was->id = r->id;
	was->key = r->key;
	was->slot = r->slot;
	was->generation = r->generation;
	cache_put(&main_cache, r);
	return true;
}

/*
 * 1: a get, then a get of a sub-range, is one region and one registration;
 * a watch pins nothing.
 */
static enum result check_hit(void)
{
	size_t len = 256 * KIB;
	char *buf = buf_map(len);
	struct memreg_stats st0, st1;
	struct region *r1, *r2;
	struct got g1, g2;
	bool ok = true;

	pattern_fill(buf, len, 1, 0);
	if (memreg_on() && !get_stats(&st0))
		return RES_FAIL;
	r1 = must_get(&main_cache, buf, len, RW, &g1, &ok);
	if (!r1)
		return RES_FAIL;
	r2 = must_get(&main_cache, buf + 3 * g.page, 64 * KIB, RW, &g2, &ok);
	if (r2) {
		expect(g1.missed, "the first get did not register");
		expect(r2 == r1 && r2->id == r1->id,
		       "the sub-range get returned region %llu, not %llu",
		       (unsigned long long)r2->id, (unsigned long long)r1->id);
		expect(!g2.missed && !g2.stale,
		       "the sub-range get was no hit (missed %d, stale %u)", g2.missed, g2.stale);
		expect(verify(r2, buf + 3 * g.page, 64 * KIB, 1, 3 * g.page, "sub-range"),
		       "the hit does not verify");
	}
	if (memreg_on() && get_stats(&st1)) {
		expect(st1.registrations - st0.registrations == 1,
		       "memreg has %llu more registrations, not 1",
		       (unsigned long long)(st1.registrations - st0.registrations));
		expect(st1.cache_misses - st0.cache_misses == 1 && st1.cache_hits == st0.cache_hits,
		       "memreg saw %llu REGISTER misses and %llu hits, not 1 and 0",
		       (unsigned long long)(st1.cache_misses - st0.cache_misses),
		       (unsigned long long)(st1.cache_hits - st0.cache_hits));
		if (g.watch) {
			expect(st1.pages_pinned == 0, "a watch pinned %llu pages",
			       (unsigned long long)st1.pages_pinned);
			expect(st1.watches == 1, "memreg counts %llu watches, not 1",
			       (unsigned long long)st1.watches);
			expect(st1.watch_pages == len / g.page,
			       "memreg watches %llu pages, not %zu",
			       (unsigned long long)st1.watch_pages, len / g.page);
		} else {
			expect(st1.pages_pinned - st0.pages_pinned == len / g.page,
			       "memreg pinned %llu pages, not %zu",
			       (unsigned long long)(st1.pages_pinned - st0.pages_pinned),
			       len / g.page);
			expect(st1.watches == 0, "a pinned registration counted as a watch");
		}
	}
	if (r2)
		cache_put(&main_cache, r2);
	cache_put(&main_cache, r1);
	buf_unmap(buf, len);
	return ok ? RES_PASS : RES_FAIL;
}

/* 2: munmap under a cached region; the next get registers anew, memreg said so. */
static enum result check_munmap(void)
{
	size_t len = 128 * KIB;
	char *buf = buf_map(len);
	struct region *r;
	struct ev_record rec;
	unsigned long since;
	struct was was;
	bool ok = true;
	struct got got;

	pattern_fill(buf, len, 2, 0);
	r = must_get(&main_cache, buf, len, RW, &got, &ok);
	if (!r)
		return RES_FAIL;
	expect(verify(r, buf, len, 2, 0, "before munmap"), "the region does not verify");
	was.id = r->id;
	was.key = r->key;
	was.slot = r->slot;
	was.generation = r->generation;
	cache_put(&main_cache, r);

	since = log_mark();
	munmap(buf, len);
	if (memreg_on()) {
		expect(word_gone(was.slot, was.generation), "the state word still names the "
		       "registration after munmap returned");
		if (wait_event(was.key, MEMREG_EVENT_ENDED, since, &rec)) {
			expect(rec.user_data == was.id, "the ENDED event carries user data %llu, "
			       "not %llu", (unsigned long long)rec.user_data,
			       (unsigned long long)was.id);
			expect(rec.cause == MEMREG_INVAL_UNMAP,
			       "the ENDED event's cause is %u, not UNMAP", rec.cause);
			expect(rec.dropped == 1, "the event invalidated %u regions, not 1",
			       rec.dropped);
		} else {
			expect(false, "no ENDED event for key 0x%llx", (unsigned long long)was.key);
		}
	}
	if (!map_fixed(buf, len, RW, MAP_FIXED_NOREPLACE)) {
		diag("the address was taken meanwhile; using a new buffer");
		munmap(buf - g.page, g.page);
		munmap(buf + len, g.page);
		buf = buf_map(len);
	}
	pattern_fill(buf, len, 3, 0);
	r = must_get(&main_cache, buf, len, RW, &got, &ok);
	if (r) {
		expect(r->id != was.id, "the get after munmap returned the old region");
		expect(got.missed, "the get after munmap did not register");
		/* The event, not the state word, must have told the rcache. */
		expect(!memreg_on() || !got.stale, "the rcache still held the old region "
		       "after its ENDED event was handled");
		expect(verify(r, buf, len, 3, 0, "after munmap"), "the new region does not verify");
		cache_put(&main_cache, r);
	}
	buf_unmap(buf, len);
	return ok ? RES_PASS : RES_FAIL;
}

/* 3: mprotect(PROT_READ) of a region registered for writing; the next get misses. */
static enum result check_mprotect(void)
{
	size_t len = 64 * KIB;
	char *buf = buf_map(len);
	struct region *r;
	struct ev_record rec;
	unsigned long since;
	ucs_status_t status;
	struct was was;
	bool ok = true;
	struct got got;

	if (!prime(buf, len, 4, &was))
		return RES_FAIL;

	since = log_mark();
	if (mprotect(buf, len, PROT_READ))
		bail("mprotect: %s", strerror(errno));
	if (memreg_on()) {
		/* Suspended at once, then ended by its revalidation. */
		expect(was.slot < g.sw.slots &&
		       __atomic_load_n(&g.sw.words[was.slot], __ATOMIC_ACQUIRE) != was.generation,
		       "the state word still says valid after mprotect returned");
		if (wait_event(was.key, MEMREG_EVENT_ENDED, since, &rec))
			diag("ENDED event for the write registration, cause %u", rec.cause);
		else
			expect(false, "no ENDED event after mprotect");
	}
	r = must_get(&main_cache, buf, len, PROT_READ, &got, &ok);
	if (!r) {
		buf_unmap(buf, len);
		return RES_FAIL;
	}
	if (!memreg_on()) {
		/* UCM has no mprotect event: the region registered for writing comes back. */
		diag("hooks: the get after mprotect returned %s region",
		     r->id == was.id ? "the old (stale)" : "a new");
		cache_put(&main_cache, r);
		buf_unmap(buf, len);
		skip_why = "UCM reports no mprotect event";
		return RES_SKIP;
	}
	expect(r->id != was.id,
	       "the get after mprotect returned the region registered for writing");
	expect(got.missed, "the get after mprotect did not register");
	expect(verify(r, buf, len, 4, 0, "after mprotect"), "the read-only region does not verify");
	cache_put(&main_cache, r);

	/* Informational: memreg should refuse write rights on read-only memory. */
	status = cache_get(&main_cache, buf, len, RW, NULL, &got);
	diag("a get for writing on the read-only buffer: %s", ucs_status_string(status));
	if (status == UCS_OK)
		cache_put(&main_cache, got.r);
	buf_unmap(buf, len);
	return ok ? RES_PASS : RES_FAIL;
}

/* 4: MADV_DONTNEED under a cached region; the region the next get returns has the new frames. */
static enum result check_dontneed(void)
{
	size_t len = 128 * KIB;
	char *buf = buf_map(len);
	struct region *r;
	struct was was;
	bool ok = true;
	struct got got;
	__u64 w, gen;

	if (!prime(buf, len, 5, &was))
		return RES_FAIL;
	gen = was.generation;

	if (madvise(buf, len, MADV_DONTNEED))
		bail("madvise: %s", strerror(errno));
	if (memreg_on() && was.slot < g.sw.slots) {
		w = __atomic_load_n(&g.sw.words[was.slot], __ATOMIC_ACQUIRE);
		diag("state word after MADV_DONTNEED: %s",
		     w == gen ? "valid" : w == (gen | MEMREG_WORD_SUSPENDED) ? "suspended" :
		     w == (gen | MEMREG_WORD_ENDED) ? "ended" : "reused");
		expect(w != gen, "the state word is still valid after MADV_DONTNEED");
	}
	/* New frames, with new bytes. */
	pattern_fill(buf, len, 6, 0);
	r = must_get(&main_cache, buf, len, RW, &got, &ok);
	if (r) {
		expect(r->id != was.id, "the get after MADV_DONTNEED returned the old region");
		expect(got.missed, "the get after MADV_DONTNEED did not register");
		expect(verify(r, buf, len, 6, 0, "after MADV_DONTNEED"),
		       "the region does not reach the new frames");
		if (memreg_on())
			expect(word_gone(was.slot, gen), "the old registration did not end");
		diag("caught by: %s", got.stale ? "the state word" : "an event");
		cache_put(&main_cache, r);
	}
	buf_unmap(buf, len);
	return ok ? RES_PASS : RES_FAIL;
}

/*
 * 5: the MPI pattern: malloc a large (mmap-backed) buffer, move data through
 * its registration, free it, malloc again (usually at the same address):
 * the get must not return the old region.
 */
static bool mpi_round(void *p, size_t len, __u64 seed, __u64 *old_id, __u32 *old_slot,
		      __u64 *old_gen)
{
	struct region *r;
	bool ok = true;
	struct got got;

	pattern_fill(p, len, seed, 0);
	r = must_get(&main_cache, p, len, RW, &got, &ok);
	if (!r)
		return false;
	if (*old_id) {
		expect(r->id != *old_id, "the get returned the region of the freed buffer");
		expect(got.missed, "the get after free and malloc did not register");
		if (memreg_on())
			expect(word_gone(*old_slot, *old_gen),
			       "the freed buffer's registration did not end");
	}
	expect(verify(r, p, len, seed, 0, "MPI buffer"), "the region does not verify");
	if (memreg_on() && !g.watch) {
		/* Data moved through the registration reaches the buffer. */
		expect(write_through(r, p, len, seed + 100, 0, "MPI buffer"),
		       "writing through the key failed");
		pattern_fill(p, len, seed, 0);
	}
	*old_id = r->id;
	*old_slot = r->slot;
	*old_gen = r->generation;
	cache_put(&main_cache, r);
	return ok;
}

static enum result check_mpi(void)
{
	size_t len = 2 * MIB;
	unsigned int round, reused = 0;
	__u64 id = 0, gen = 0;
	__u32 slot = 0;
	uintptr_t prev = 0;
	bool ok = true;
	char *p;

	for (round = 0; round < 8; round++) {
		p = malloc(len);
		if (!p)
			bail("malloc: %s", strerror(errno));
		if ((uintptr_t)p == prev)
			reused++;
		if (!mpi_round(p, len, 10 + round, &id, &slot, &gen))
			ok = false;
		prev = (uintptr_t)p;
		free(p);
	}
	diag("malloc returned the freed address again in %u of 7 rounds", reused);
	if (!reused) {
		/* Make the same-address case happen: map the freed range again by hand. */
		uintptr_t want = prev & ~(g.page - 1);
		size_t maplen = len + g.page;
		char *base = mmap((void *)want, maplen, RW,
				  MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);

		if (base != MAP_FAILED && (uintptr_t)base == want) {
			if (!mpi_round(base + (prev - want), len, 20, &id, &slot, &gen))
				ok = false;
			munmap(base, maplen);
		} else {
			if (base != MAP_FAILED)
				munmap(base, maplen);
			diag("could not map the freed address again");
		}
	}
	return ok ? RES_PASS : RES_FAIL;
}

/* One sub-case of check 6: after @what changed the buffer, the get must miss. */
static bool expect_miss(char *buf, size_t len, __u64 seed, const struct was *was,
			const char *what)
{
	struct region *r;
	bool ok = true;
	struct got got;

	r = must_get(&main_cache, buf, len, RW, &got, &ok);
	if (!r) {
		diag("%s: the get failed", what);
		return false;
	}
	expect(r->id != was->id, "%s: the get returned the old region", what);
	expect(got.missed, "%s: the get did not register", what);
	if (memreg_on())
		expect(word_gone(was->slot, was->generation),
		       "%s: the old registration did not end", what);
	expect(verify(r, buf, len, seed, 0, what), "%s: the new region does not verify", what);
	cache_put(&main_cache, r);
	return ok;
}

/* 6: munmap + mmap, MAP_FIXED, mremap (shrink, and onto it) over cached buffers. */
static enum result check_remaps(void)
{
	size_t len = 64 * KIB;
	char *a = buf_map(len), *b = buf_map(len), *c = buf_map(2 * len), *d = buf_map(len);
	char *e = buf_map(len), *scratch, *other;
	struct was was, ewas;
	bool ok = true;
	struct got got;
	struct region *r;

	/* munmap, then a new mapping at the same address. */
	if (prime(a, len, 30, &was)) {
		munmap(a, len);
		if (map_fixed(a, len, RW, MAP_FIXED_NOREPLACE)) {
			pattern_fill(a, len, 31, 0);
			ok &= expect_miss(a, len, 31, &was, "munmap+mmap");
		} else {
			diag("munmap+mmap: the address was taken meanwhile");
			ok = false;
			/* Only the guards are still ours. */
			munmap(a - g.page, g.page);
			munmap(a + len, g.page);
			a = NULL;
		}
	} else {
		ok = false;
	}

	/* MAP_FIXED over it. */
	if (prime(b, len, 32, &was) && map_fixed(b, len, RW, MAP_FIXED)) {
		pattern_fill(b, len, 33, 0);
		ok &= expect_miss(b, len, 33, &was, "MAP_FIXED");
	} else {
		ok = false;
	}

	/* mremap shrinking it: the registration covered the tail that left. */
	if (prime(c, 2 * len, 34, &was) &&
	    mremap(c, 2 * len, len, 0) == c) {
		ok &= expect_miss(c, len, 34, &was, "mremap shrink");
	} else {
		ok = false;
	}

	/* mremap of other memory onto it (UCM's mremap hook knows no MREMAP_FIXED). */
	if (memreg_on()) {
		scratch = mmap(NULL, len, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (scratch != MAP_FAILED && prime(d, len, 35, &was)) {
			pattern_fill(scratch, len, 36, 0);
			if (mremap(scratch, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, d) == d) {
				ok &= expect_miss(d, len, 36, &was, "mremap onto");
			} else {
				diag("mremap onto: %s", strerror(errno));
				ok = false;
			}
		} else {
			ok = false;
		}
	} else {
		diag("hooks: no mremap onto a cached buffer (UCM's hook sees only the old range)");
	}

	/* Mapping and unmapping unrelated memory must not cost a cached region. */
	if (prime(e, len, 37, &ewas)) {
		other = mmap(NULL, len, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (other != MAP_FAILED) {
			pattern_fill(other, len, 38, 0);
			munmap(other, len);
		}
		wait_drained();
		r = must_get(&main_cache, e, len, RW, &got, &ok);
		if (r) {
			expect(r->id == ewas.id && !got.missed && !got.stale,
			       "unrelated mmap/munmap cost a cached region");
			cache_put(&main_cache, r);
		}
	} else {
		ok = false;
	}

	if (a)
		buf_unmap(a, len);
	buf_unmap(b, len);
	buf_unmap(c, 2 * len);
	buf_unmap(d, len);
	buf_unmap(e, len);
	return ok ? RES_PASS : RES_FAIL;
}

/* 7: two overlapping gets merged by the rcache; munmap of half; the other half misses. */
static enum result check_merge(void)
{
	size_t half = 64 * KIB, len = 2 * half;
	char *buf = buf_map(len);
	struct region *ra, *rm, *rh, *r3;
	struct got ga, gm, gh, g3;
	__u64 mid = 0, mgen = 0;
	__u32 mslot = 0;
	bool ok = true;

	pattern_fill(buf, len, 40, 0);
	ra = must_get(&main_cache, buf, half + 100, RW, &ga, &ok);
	if (!ra)
		return RES_FAIL;
	rm = must_get(&main_cache, buf + half, half, RW, &gm, &ok);
	if (rm) {
		expect(reg_start(rm) == (uintptr_t)buf && reg_end(rm) == (uintptr_t)(buf + len),
		       "the rcache did not merge: 0x%lx-0x%lx", (unsigned long)reg_start(rm),
		       (unsigned long)reg_end(rm));
		expect(rm->id != ra->id && gm.missed,
		       "the overlapping get did not register a merged region");
		expect(verify(rm, buf, len, 40, 0, "merged"), "the merged region does not verify");
		mid = rm->id;
		mslot = rm->slot;
		mgen = rm->generation;
		rh = must_get(&main_cache, buf + 2 * g.page, 100 * KIB, RW, &gh, &ok);
		if (rh) {
			expect(rh->id == mid && !gh.missed && !gh.stale,
			       "a get inside the merged region was no hit");
			cache_put(&main_cache, rh);
		}
		cache_put(&main_cache, rm);
	}
	/* The first region was invalidated by the merge while held; this put frees it. */
	cache_put(&main_cache, ra);

	munmap(buf + half, half);
	r3 = must_get(&main_cache, buf, half, RW, &g3, &ok);
	if (r3) {
		expect(r3->id != mid, "the get of the lower half returned the merged region");
		expect(g3.missed, "the get of the lower half did not register");
		expect(reg_end(r3) <= (uintptr_t)(buf + half),
		       "the new region reaches the unmapped half");
		if (memreg_on())
			expect(word_gone(mslot, mgen), "the merged registration did not end");
		expect(verify(r3, buf, half, 40, 0, "lower half"),
		       "the lower half does not verify");
		cache_put(&main_cache, r3);
	}
	buf_unmap(buf, len);
	return ok ? RES_PASS : RES_FAIL;
}

/* 8: LRU eviction at max_regions keeps memreg's registrations bounded. */
static enum result check_lru(void)
{
	enum { MAX = 8, BUFS = 32, SLACK = 1 };
	struct cache lru = { .name = "memreg-ucx-lru" };
	struct memreg_stats st0, st;
	unsigned long max_live = 0, max_regs = 0;
	size_t len = 16 * KIB;
	char *bufs[BUFS];
	struct region *r;
	struct got got;
	bool ok = true;
	unsigned int i;
	__u64 last_id = 0;

	wait_drained();
	if (memreg_on() && !get_stats(&st0))
		return RES_FAIL;
	for (i = 0; i < BUFS; i++) {
		bufs[i] = buf_map(len);
		pattern_fill(bufs[i], len, 50 + i, 0);
	}
	cache_create(&lru, MAX);
	for (i = 0; i < BUFS; i++) {
		r = must_get(&lru, bufs[i], len, RW, &got, &ok);
		if (!r)
			break;
		expect(got.missed, "the get of buffer %u did not register", i);
		if (i == BUFS - 1)
			last_id = r->id;
		if (cache_live(&lru) > max_live)
			max_live = cache_live(&lru);
		if (memreg_on() && get_stats(&st) &&
		    st.registrations - st0.registrations > max_regs)
			max_regs = st.registrations - st0.registrations;
		cache_put(&lru, r);
	}
	expect(max_live <= MAX + SLACK, "the rcache held %lu regions, max_regions %d", max_live,
	       MAX);
	expect(cache_live(&lru) <= MAX, "%lu regions left after the puts", cache_live(&lru));
	expect(LOAD(lru.deregs) >= BUFS - MAX, "only %lu regions were evicted", LOAD(lru.deregs));
	if (memreg_on()) {
		expect(max_regs <= MAX + SLACK, "memreg held %lu registrations of the LRU cache",
		       max_regs);
		if (get_stats(&st))
			expect(st.registrations - st0.registrations <= MAX,
			       "memreg holds %llu registrations after the puts",
			       (unsigned long long)(st.registrations - st0.registrations));
	}
	diag("LRU cache: peak %lu regions, %lu memreg registrations, %lu evicted", max_live,
	     max_regs, LOAD(lru.deregs));
	if (ok) {
		/* The most recent buffer is still cached; the first one was evicted. */
		r = must_get(&lru, bufs[BUFS - 1], len, RW, &got, &ok);
		if (r) {
			expect(r->id == last_id && !got.missed,
			       "the most recent buffer was evicted");
			cache_put(&lru, r);
		}
		r = must_get(&lru, bufs[0], len, RW, &got, &ok);
		if (r) {
			expect(got.missed, "the first buffer was never evicted");
			expect(verify(r, bufs[0], len, 50, 0, "re-registered"), "does not verify");
			cache_put(&lru, r);
		}
	}
	cache_destroy(&lru);
	expect(cache_live(&lru) == 0, "%lu regions survived ucs_rcache_destroy", cache_live(&lru));
	if (memreg_on() && get_stats(&st))
		expect(st.registrations == st0.registrations,
		       "memreg has %lld registrations more after destroying the LRU cache",
		       (long long)(st.registrations - st0.registrations));
	for (i = 0; i < BUFS; i++)
		buf_unmap(bufs[i], len);
	return ok ? RES_PASS : RES_FAIL;
}

/* 9: random malloc/free/get cycles, each get checked against the ground truth. */
static enum result check_random(void)
{
	enum { SLOTS = 12, CYCLES = 1000 };
	struct slot {
		char *p;
		size_t len;
		__u64 seed;
	} s[SLOTS];
	unsigned long gets = 0, hits = 0, misses = 0, stale = 0, revalidated = 0, writes = 0;
	unsigned int cycle, fails = 0, i;
	__u64 rs = 0x5eed;
	struct region *r;
	struct got got;
	bool ok = true;

	memset(s, 0, sizeof(s));
	for (cycle = 0; cycle < CYCLES; cycle++) {
		struct slot *sl = &s[rnd_next(&rs) % SLOTS];
		unsigned int op = rnd_next(&rs) % 10;
		size_t off, len;

		if (!sl->p || op < 2) {
			free(sl->p);
			if (rnd_next(&rs) % 4 == 0)
				sl->len = 512 * KIB + rnd_next(&rs) % (3 * MIB / 2);
			else
				sl->len = 64 + rnd_next(&rs) % (64 * KIB);
			sl->p = malloc(sl->len);
			if (!sl->p)
				bail("malloc: %s", strerror(errno));
			sl->seed = rnd_next(&rs);
			pattern_fill(sl->p, sl->len, sl->seed, 0);
			continue;
		}
		if (op == 2) {
			free(sl->p);
			sl->p = NULL;
			continue;
		}
		off = rnd_next(&rs) % sl->len;
		len = 1 + rnd_next(&rs) % (sl->len - off);
		if (op == 3) {
			/* New bytes: through the key when pinned, by the CPU otherwise. */
			__u64 seed = rnd_next(&rs);

			if (memreg_on() && !g.watch) {
				r = must_get(&main_cache, sl->p, sl->len, RW, &got, &ok);
				if (!r)
					break;
				if (!write_through(r, sl->p, sl->len, seed, 0, "random write"))
					fails++;
				cache_put(&main_cache, r);
				writes++;
			} else {
				pattern_fill(sl->p, sl->len, seed, 0);
			}
			sl->seed = seed;
			continue;
		}
		r = must_get(&main_cache, sl->p + off, len, RW, &got, &ok);
		if (!r)
			break;
		gets++;
		if (got.missed)
			misses++;
		else if (!got.stale)
			hits++;
		stale += got.stale;
		revalidated += got.revalidated;
		if (!verify(r, sl->p + off, len, sl->seed, off, "random get") && ++fails <= 5)
			diag("cycle %u: a stale or wrong region for %p+%zu", cycle, sl->p + off,
			     len);
		cache_put(&main_cache, r);
	}
	for (i = 0; i < SLOTS; i++)
		free(s[i].p);
	diag("%lu gets: %lu hits, %lu misses, %lu stale regions caught by the state word, "
	     "%lu revalidated; %lu writes through keys", gets, hits, misses, stale,
	     revalidated, writes);
	expect(!fails, "%u gets or writes failed the ground truth", fails);
	expect(cycle == CYCLES, "stopped at cycle %u", cycle);
	expect(hits && misses, "the mix had no hits or no misses");
	return ok ? RES_PASS : RES_FAIL;
}

/* Check 10: a thread remaps buffers while this one gets them. */
#define REMAP_BUFS	8
#define REMAP_LEN	(64 * KIB)
#define REMAP_STRIDE	(256 * KIB)

struct remap {
	char *area;
	char *buf[REMAP_BUFS];
	unsigned long seq[REMAP_BUFS];	/* odd while the buffer is being remapped */
	bool stop;
	unsigned long remaps;
	unsigned long errors;
	__u64 rs;
};

static __u64 remap_seed(unsigned int i, unsigned long seq)
{
	return ((__u64)i << 40) ^ seq ^ 0xabcdef;
}

static void *remapper(void *arg)
{
	struct remap *m = arg;
	unsigned int kinds = memreg_on() ? 3 : 2;

	while (!__atomic_load_n(&m->stop, __ATOMIC_ACQUIRE)) {
		unsigned int i = rnd_next(&m->rs) % REMAP_BUFS;
		unsigned int kind = rnd_next(&m->rs) % kinds;
		unsigned long s = m->seq[i];
		char *b = m->buf[i], *scratch;
		bool done = false;

		__atomic_store_n(&m->seq[i], s + 1, __ATOMIC_SEQ_CST);
		switch (kind) {
		case 0:
			done = map_fixed(b, REMAP_LEN, RW, MAP_FIXED);
			if (done)
				pattern_fill(b, REMAP_LEN, remap_seed(i, s + 2), 0);
			break;
		case 1:
			done = map_fixed(b, REMAP_LEN, PROT_NONE, MAP_FIXED) &&
			       map_fixed(b, REMAP_LEN, RW, MAP_FIXED);
			if (done)
				pattern_fill(b, REMAP_LEN, remap_seed(i, s + 2), 0);
			break;
		default:
			scratch = mmap(NULL, REMAP_LEN, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (scratch == MAP_FAILED)
				break;
			pattern_fill(scratch, REMAP_LEN, remap_seed(i, s + 2), 0);
			done = mremap(scratch, REMAP_LEN, REMAP_LEN, MREMAP_MAYMOVE | MREMAP_FIXED,
				      b) == b;
			if (!done)
				munmap(scratch, REMAP_LEN);
			break;
		}
		if (!done) {
			INC(m->errors);
			/* Leave the buffer mapped with the bytes its sequence says. */
			if (map_fixed(b, REMAP_LEN, RW, MAP_FIXED))
				pattern_fill(b, REMAP_LEN, remap_seed(i, s + 2), 0);
		}
		__atomic_store_n(&m->seq[i], s + 2, __ATOMIC_SEQ_CST);
		INC(m->remaps);
		sleep_us(100);
	}
	return NULL;
}

static enum result check_race(void)
{
	/* At least ITERS gets, and gets until the remapper did MIN_REMAPS, for at most CAP_S. */
	enum { ITERS = 3000, MIN_REMAPS = 300, CAP_S = 60 };
	unsigned long verified = 0, raced = 0, raced_errors = 0, unverifiable = 0;
	unsigned long stale_hits = 0, stale_data = 0, errors = 0, caught = 0;
	struct remap m;
	pthread_t thread;
	struct reg_arg ra;
	__u64 rs = 0xface;
	unsigned int it, i;
	bool ok = true;
	struct got got;
	__u64 t_end;
	int ret;

	memset(&m, 0, sizeof(m));
	m.rs = 0xbeef;
	m.area = mmap(NULL, REMAP_BUFS * REMAP_STRIDE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
		      -1, 0);
	if (m.area == MAP_FAILED)
		bail("mmap: %s", strerror(errno));
	for (i = 0; i < REMAP_BUFS; i++) {
		m.buf[i] = m.area + i * REMAP_STRIDE + REMAP_STRIDE / 2;
		if (!map_fixed(m.buf[i], REMAP_LEN, RW, MAP_FIXED))
			bail("mmap: %s", strerror(errno));
		pattern_fill(m.buf[i], REMAP_LEN, remap_seed(i, 0), 0);
	}
	if (pthread_create(&thread, NULL, remapper, &m))
		bail("pthread_create failed");

	t_end = now_ns() + CAP_S * 1000000000ULL;
	for (it = 0; (it < ITERS || LOAD(m.remaps) < MIN_REMAPS) && now_ns() < t_end; it++) {
		unsigned long s1, s2;
		ucs_status_t status;
		struct region *r;

		i = rnd_next(&rs) % REMAP_BUFS;
		s1 = __atomic_load_n(&m.seq[i], __ATOMIC_SEQ_CST);
		ra.seq = &m.seq[i];
		status = cache_get(&main_cache, m.buf[i], REMAP_LEN, RW, &ra, &got);
		caught += got.stale;
		if (status != UCS_OK) {
			s2 = __atomic_load_n(&m.seq[i], __ATOMIC_SEQ_CST);
			if (s1 == s2 && !(s1 & 1)) {
				if (++errors <= 3)
					diag("a get failed with no remap under way: %s",
					     ucs_status_string(status));
			} else {
				raced_errors++;
			}
			continue;
		}
		r = got.r;
		ret = 0;
		if (memreg_on() && !g.watch)
			ret = memreg_copy(g.fd, r->key, (uintptr_t)m.buf[i] - r->region_addr, g.tmp,
					  REMAP_LEN, MEMREG_COPY_FROM_REGION);
		else if (memreg_on())
			ret = memreg_revalidate(g.fd, r->key);
		s2 = __atomic_load_n(&m.seq[i], __ATOMIC_SEQ_CST);
		if (s1 != s2 || (s1 & 1)) {
			raced++;
		} else {
			verified++;
			if (r->born == BORN_RACED) {
				unverifiable++;
			} else if (r->born != s1 && ++stale_hits <= 3) {
				diag("stale hit: buffer %u at remap %lu, region registered at %lu",
				     i, s1, r->born);
			}
			if (memreg_on() && (ret || (!g.watch &&
			    !pattern_check(g.tmp, REMAP_LEN, remap_seed(i, s1), 0)))) {
				if (++stale_data <= 3)
					diag("buffer %u: the key %s", i, ret ? strerror(-ret) :
					     "reads other frames than the buffer's");
			}
		}
		cache_put(&main_cache, r);
	}
	__atomic_store_n(&m.stop, true, __ATOMIC_RELEASE);
	pthread_join(thread, NULL);
	diag("%u gets, %lu remaps: %lu verified (%lu registered mid-remap), %lu raced, "
	     "%lu failed mid-remap, %lu stale regions caught by the state word", it,
	     LOAD(m.remaps), verified, unverifiable, raced, raced_errors, caught);
	expect(!stale_hits, "%lu gets returned a region registered before the last remap",
	       stale_hits);
	expect(!stale_data, "%lu gets returned a key that does not reach the buffer", stale_data);
	expect(!errors, "%lu gets failed with no remap under way", errors);
	expect(!LOAD(m.errors), "%lu remaps failed", LOAD(m.errors));
	expect(verified >= ITERS / 10 && LOAD(m.remaps) >= MIN_REMAPS,
	       "too few verified gets or remaps to mean anything");
	munmap(m.area, REMAP_BUFS * REMAP_STRIDE);
	return ok ? RES_PASS : RES_FAIL;
}

/* 11: with the event thread held off, the state word alone catches every stale region. */
static enum result check_held_off(void)
{
	enum { N = 9 };
	size_t len = 64 * KIB;
	char *bufs[N], *scratch;
	struct was was[N];
	__u64 new_id[N];
	unsigned int i, caught = 0, ignored = 0;
	unsigned int ready0, ready1;
	unsigned long since;
	struct ev_record rec;
	struct region *r;
	struct got got;
	bool ok = true;

	if (!memreg_on()) {
		skip_why = "no memreg event thread with hooks";
		return RES_SKIP;
	}
	for (i = 0; i < N; i++) {
		bufs[i] = buf_map(len);
		if (!prime(bufs[i], len, 60 + i, &was[i]))
			return RES_FAIL;
	}
	wait_drained();
	evt_pause();
	since = log_mark();
	ready0 = memreg_events_ready(&g.ev);
	for (i = 0; i < N; i++) {
		switch (i % 3) {
		case 0:
			scratch = mmap(NULL, len, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (scratch == MAP_FAILED ||
			    mremap(scratch, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, bufs[i]) !=
			    bufs[i])
				bail("mremap: %s", strerror(errno));
			break;
		case 1:
			if (!map_fixed(bufs[i], len, RW, MAP_FIXED))
				bail("mmap: %s", strerror(errno));
			break;
		default:
			if (madvise(bufs[i], len, MADV_DONTNEED))
				bail("madvise: %s", strerror(errno));
			break;
		}
		pattern_fill(bufs[i], len, 70 + i, 0);
	}
	ready1 = memreg_events_ready(&g.ev);
	expect(ready1 - ready0 >= N, "%u events waiting for %d changed buffers",
	       ready1 - ready0, N);
	for (i = 0; i < N; i++) {
		new_id[i] = 0;
		r = must_get(&main_cache, bufs[i], len, RW, &got, &ok);
		if (!r)
			continue;
		new_id[i] = r->id;
		if (got.stale && r->id != was[i].id &&
		    verify(r, bufs[i], len, 70 + i, 0, "held off"))
			caught++;
		else
			diag("buffer %u: stale %u, region %s", i, got.stale,
			     r->id == was[i].id ? "the old one" : "new");
		cache_put(&main_cache, r);
	}
	expect(caught == N, "the state word caught %u of %d stale regions", caught, N);
	expect(memreg_events_ready(&g.ev) >= ready1, "someone read the ring while it was held off");
	evt_resume();
	wait_drained();
	for (i = 0; i < N; i++) {
		if (!wait_event(was[i].key, MEMREG_EVENT_ENDED, since, &rec))
			diag("buffer %u: no late ENDED event", i);
		else if (rec.dropped)
			diag("buffer %u: the late ENDED event dropped a live region", i);
		else
			ignored++;
	}
	expect(ignored == N, "%u of %d late ENDED events were ignored", ignored, N);
	/* The late events evicted none of the new regions. */
	for (i = 0; i < N; i++) {
		r = must_get(&main_cache, bufs[i], len, RW, &got, &ok);
		if (!r)
			continue;
		expect(r->id == new_id[i] && !got.missed && !got.stale,
		       "buffer %u: the new region did not survive the late events", i);
		cache_put(&main_cache, r);
	}
	for (i = 0; i < N; i++)
		buf_unmap(bufs[i], len);
	return ok ? RES_PASS : RES_FAIL;
}

/* 12: the event ring overflows while held off; the resync drops every ended region. */
static enum result check_overflow(void)
{
	enum { N = EV_ENTRIES + EV_ENTRIES / 2 };
	struct cache oc = { .name = "memreg-ucx-overflow" };
	static char *bufs[N];
	unsigned long resyncs0, dropped0, ev_dropped0;
	unsigned int i, fresh = 0;
	struct region *r;
	struct got got;
	bool ok = true;

	if (!memreg_on()) {
		skip_why = "no memreg event ring with hooks";
		return RES_SKIP;
	}
	for (i = 0; i < N; i++) {
		bufs[i] = buf_map(g.page);
		pattern_fill(bufs[i], g.page, 80 + i, 0);
	}
	cache_create(&oc, 4 * N);
	for (i = 0; i < N; i++) {
		r = must_get(&oc, bufs[i], g.page, RW, &got, &ok);
		if (r)
			cache_put(&oc, r);
	}
	wait_drained();
	evt_pause();
	for (i = 0; i < N; i++) {
		if (!map_fixed(bufs[i], g.page, RW, MAP_FIXED))
			bail("mmap: %s", strerror(errno));
		pattern_fill(bufs[i], g.page, 1000 + i, 0);
	}
	expect(memreg_events_overflowed(&g.ev), "%d ENDED events did not overflow a ring of %d",
	       N, EV_ENTRIES);
	resyncs0 = LOAD(cnt.resyncs);
	dropped0 = LOAD(cnt.resync_dropped);
	ev_dropped0 = LOAD(cnt.ev_dropped);
	evt_resume();
	wait_drained();
	expect(LOAD(cnt.resyncs) > resyncs0, "the event thread did not resync");
	diag("%lu regions dropped by the events the ring held, %lu by the resync",
	     LOAD(cnt.ev_dropped) - ev_dropped0, LOAD(cnt.resync_dropped) - dropped0);
	/* The ring's events are handled before the resync, which catches the rest. */
	expect(LOAD(cnt.ev_dropped) > ev_dropped0, "the events in the ring dropped no region");
	expect(LOAD(cnt.resync_dropped) > dropped0, "the resync dropped no region");
	/* Every region is gone from the rcache without the state word's help. */
	for (i = 0; i < N; i++) {
		r = must_get(&oc, bufs[i], g.page, RW, &got, &ok);
		if (!r)
			continue;
		if (got.missed && !got.stale && verify(r, bufs[i], g.page, 1000 + i, 0, "resync"))
			fresh++;
		cache_put(&oc, r);
	}
	expect(fresh == N, "%u of %d gets found the rcache had dropped the ended region",
	       fresh, N);
	cache_destroy(&oc);
	expect(cache_live(&oc) == 0, "%lu regions survived ucs_rcache_destroy", cache_live(&oc));
	for (i = 0; i < N; i++)
		buf_unmap(bufs[i], g.page);
	return ok ? RES_PASS : RES_FAIL;
}

static int cmp_query(const void *a, const void *b)
{
	const struct memreg_query *x = a, *y = b;

	return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/*
 * 13: memreg holds exactly the registrations the rcache's regions name, no
 * two over the same range; after ucs_rcache_destroy nothing is left.
 */
static enum result check_leaks(void)
{
	enum { N = 4, MAXQ = 1024 };
	static struct memreg_query q[MAXQ];
	static __u64 keys[MAXQ];
	size_t len = 64 * KIB;
	unsigned int nkeys = 0, nq = 0, i, b;
	__u64 pages = 0;
	struct memreg_stats st;
	struct region *r;
	char *bufs[N];
	struct got got;
	bool ok = true;

	for (i = 0; i < N; i++) {
		bufs[i] = buf_map(len);
		pattern_fill(bufs[i], len, 90 + i, 0);
		r = must_get(&main_cache, bufs[i], len, RW, &got, &ok);
		if (r)
			cache_put(&main_cache, r);
	}
	wait_drained();
	if (memreg_on()) {
		pthread_mutex_lock(&tbl_lock);
		for (b = 0; b < ARRAY_SIZE(table); b++)
			for (r = table[b]; r && nkeys < MAXQ; r = r->next)
				keys[nkeys++] = r->key;
		pthread_mutex_unlock(&tbl_lock);
		qsort(keys, nkeys, sizeof(keys[0]), cmp_u64);
		for (i = 0; i < nkeys; i++) {
			if (i && keys[i] == keys[i - 1])
				continue;
			if (memreg_query(g.fd, keys[i], &q[nq]))
				continue;
			pages += q[nq].pages;
			nq++;
		}
		qsort(q, nq, sizeof(q[0]), cmp_query);
		for (i = 1; i < nq; i++)
			expect(q[i - 1].addr + q[i - 1].length <= q[i].addr,
			       "registrations 0x%llx and 0x%llx overlap",
			       (unsigned long long)q[i - 1].key, (unsigned long long)q[i].key);
		if (get_stats(&st)) {
			expect(st.registrations == nq, "memreg has %llu registrations, the "
			       "rcache's regions name %u", (unsigned long long)st.registrations,
			       nq);
			if (g.watch)
				expect(st.watch_pages == pages && !st.pages_pinned,
				       "memreg watches %llu pages and pins %llu, the regions "
				       "span %llu",
				       (unsigned long long)st.watch_pages,
				       (unsigned long long)st.pages_pinned,
				       (unsigned long long)pages);
			else
				expect(st.pages_pinned == pages, "memreg pins %llu pages, the "
				       "regions span %llu", (unsigned long long)st.pages_pinned,
				       (unsigned long long)pages);
		}
		diag("before destroy: %u registrations over %llu pages", nq,
		     (unsigned long long)pages);
	}
	cache_destroy(&main_cache);
	for (i = 0; i < N; i++)
		buf_unmap(bufs[i], len);
	expect(cache_live(&main_cache) == 0, "%lu regions survived ucs_rcache_destroy",
	       cache_live(&main_cache));
	if (memreg_on() && get_stats(&st)) {
		expect(!st.registrations && !st.watches && !st.pages_pinned,
		       "after destroy memreg has %llu registrations, %llu watches, "
		       "%llu pages pinned",
		       (unsigned long long)st.registrations, (unsigned long long)st.watches,
		       (unsigned long long)st.pages_pinned);
	}
	expect(!LOAD(cnt.dereg_errors), "%lu DEREGISTER calls failed (last %s)",
	       LOAD(cnt.dereg_errors), strerror(-g.last_dereg_error));
	expect(!LOAD(cnt.reg_range_bad) && !LOAD(cnt.reg_kind_bad),
	       "REGISTER answered %lu ranges that do not cover and %lu of the wrong kind",
	       LOAD(cnt.reg_range_bad), LOAD(cnt.reg_kind_bad));
	expect(!LOAD(cnt.bad_user_data), "%lu events carried user data that is no region id",
	       LOAD(cnt.bad_user_data));
	expect(!LOAD(cnt.tries_exhausted), "%lu gets gave up on stale regions",
	       LOAD(cnt.tries_exhausted));
	expect(!LOAD(cnt.ev_unknown), "%lu events of an unknown kind", LOAD(cnt.ev_unknown));
	return ok ? RES_PASS : RES_FAIL;
}

static const struct {
	const char *name;
	enum result (*run)(void);
} checks[] = {
	{ "a get of a sub-range hits; one registration, no page pinned by a watch", check_hit },
	{ "munmap under a cached region: the next get misses, memreg ended the key",
	  check_munmap },
	{ "mprotect(PROT_READ) of a region registered for writing: the next get misses",
	  check_mprotect },
	{ "MADV_DONTNEED under a cached region: the next get reaches the new frames",
	  check_dontneed },
	{ "MPI pattern: free and malloc again at the same address never returns the old region",
	  check_mpi },
	{ "munmap+mmap, MAP_FIXED and mremap over cached buffers: each next get misses",
	  check_remaps },
	{ "merged regions: after munmap of half, the other half misses", check_merge },
	{ "LRU eviction at max_regions bounds memreg's registrations", check_lru },
	{ "1000 random malloc/free/get cycles against the ground truth", check_random },
	{ "a remapping thread against a getting thread: no stale hit", check_race },
	{ "event thread held off: the state word alone catches every stale region",
	  check_held_off },
	{ "event ring overflow: the resync drops every ended region", check_overflow },
	{ "no range registered twice; nothing left after ucs_rcache_destroy", check_leaks },
};

/* ---- Benchmarks --------------------------------------------------------- */

/* Mean ns of REGISTER + DEREGISTER of a touched 1 MiB buffer, each REGISTER a miss. */
static double bench_register(char *buf, size_t len, __u32 flags, long n, unsigned long *bad)
{
	struct memreg_register reg;
	__u64 t0 = 0;
	long i;

	for (i = -16; i < n; i++) {
		if (!i)
			t0 = now_ns();
		if (memreg_register_ex(g.fd, buf, len,
				       MEMREG_ACCESS_LOCAL_READ | MEMREG_ACCESS_LOCAL_WRITE, flags,
				       1, &reg)) {
			(*bad)++;
			continue;
		}
		if (reg.flags & (MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED))
			(*bad)++;
		if (memreg_deregister(g.fd, reg.lkey))
			(*bad)++;
	}
	return (double)(now_ns() - t0) / (double)n;
}

static void run_bench(long n)
{
	size_t len = 64 * KIB;
	char *buf = buf_map(len), *big;
	unsigned long not_hit = 0, not_miss = 0, bad_watch = 0, bad_pinned = 0;
	struct region *first;
	ucs_status_t status;
	__u64 t0, sum = 0;
	struct got got;
	bool ok = true;
	long i;

	pattern_fill(buf, len, 7, 0);
	/* Hits: get + put of a cached 64 KiB buffer, after a warm-up. */
	first = must_get(&main_cache, buf, len, RW, &got, &ok);
	if (!first)
		bail("the first get failed");
	for (i = 0; i < 1000; i++) {
		status = cache_get(&main_cache, buf, len, RW, NULL, &got);
		if (status == UCS_OK)
			cache_put(&main_cache, got.r);
	}
	t0 = now_ns();
	for (i = 0; i < n; i++) {
		status = cache_get(&main_cache, buf, len, RW, NULL, &got);
		if (status != UCS_OK) {
			not_hit++;
			continue;
		}
		if (got.r != first || got.missed || got.stale)
			not_hit++;
		cache_put(&main_cache, got.r);
	}
	printf("BENCH ucx_rcache_hit_ns %.1f\n", (double)(now_ns() - t0) / (double)n);
	cache_put(&main_cache, first);

	/*
	 * Misses: the region is invalidated and put after each get, so every
	 * get registers the buffer anew (memreg's parking is off: REGISTER
	 * misses too); only the get is timed.
	 */
	for (i = -16; i < n; i++) {
		__u64 t = now_ns();

		status = cache_get(&main_cache, buf, len, RW, NULL, &got);
		if (i >= 0)
			sum += now_ns() - t;
		if (status != UCS_OK) {
			not_miss++;
			continue;
		}
		if (!got.missed)
			not_miss += i >= 0;
		ucs_rcache_region_invalidate(main_cache.rc, &got.r->super, invalidate_done, NULL);
		cache_put(&main_cache, got.r);
	}
	printf("BENCH ucx_rcache_miss_ns %.1f\n", (double)sum / (double)n);
	report(not_hit ? RES_FAIL : RES_PASS, "bench: every timed hit was a hit");
	if (not_hit)
		diag("%lu of %ld were not", not_hit, n);
	report(not_miss ? RES_FAIL : RES_PASS, "bench: every timed miss registered anew");
	if (not_miss)
		diag("%lu of %ld did not", not_miss, n);
	buf_unmap(buf, len);

	if (memreg_on()) {
		big = buf_map(MIB);
		pattern_fill(big, MIB, 8, 0);
		printf("BENCH watch_register_1mib_ns %.1f\n",
		       bench_register(big, MIB, MEMREG_REGISTER_WATCH, n, &bad_watch));
		printf("BENCH pinned_register_1mib_ns %.1f\n",
		       bench_register(big, MIB, 0, n, &bad_pinned));
		report(bad_watch ? RES_FAIL : RES_PASS,
		       "bench: every watch REGISTER was a miss and succeeded");
		report(bad_pinned ? RES_FAIL : RES_PASS,
		       "bench: every pinned REGISTER was a miss and succeeded");
		buf_unmap(big, MIB);
	}
	cache_destroy(&main_cache);
}

/* ---- Setup -------------------------------------------------------------- */

static void usage(const char *prog)
{
	fprintf(stderr, "usage: %s [--monitor=memreg|hooks] [--mode=watch|pinned] [--bench N]\n",
		prog);
	exit(2);
}

static void parse_args(int argc, char **argv)
{
	const char *v;
	char *end;
	int i;

	g.monitor = MONITOR_MEMREG;
	g.watch = true;
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--monitor=memreg")) {
			g.monitor = MONITOR_MEMREG;
		} else if (!strcmp(argv[i], "--monitor=hooks")) {
			g.monitor = MONITOR_HOOKS;
		} else if (!strcmp(argv[i], "--mode=watch")) {
			g.watch = true;
		} else if (!strcmp(argv[i], "--mode=pinned")) {
			g.watch = false;
		} else if (!strncmp(argv[i], "--bench", 7)) {
			if (argv[i][7] == '=')
				v = argv[i] + 8;
			else if (!argv[i][7] && i + 1 < argc)
				v = argv[++i];
			else
				usage(argv[0]);
			g.bench = strtol(v, &end, 10);
			if (*end || g.bench <= 0)
				usage(argv[0]);
		} else {
			usage(argv[0]);
		}
	}
}

static bool is_no(const char *v)
{
	return v && (!strcasecmp(v, "no") || !strcasecmp(v, "n") || !strcmp(v, "0") ||
		     !strcasecmp(v, "off") || !strcasecmp(v, "false"));
}

/*
 * UCM reads UCX_MEM_EVENTS and installs its hooks before main(): with
 * memreg the process must start with it "no", with hooks without it. Sets
 * or clears it and executes the program again when it is not so.
 */
static void ensure_env(char **argv)
{
	const char *v = getenv("UCX_MEM_EVENTS");
	bool want_no = g.monitor == MONITOR_MEMREG;

	if (want_no == is_no(v))
		return;
	if (getenv("MEMREG_UCX_REEXEC"))
		bail("UCX_MEM_EVENTS is still %s after executing again", v ? v : "unset");
	setenv("MEMREG_UCX_REEXEC", "1", 1);
	if (want_no)
		setenv("UCX_MEM_EVENTS", "no", 1);
	else
		unsetenv("UCX_MEM_EVENTS");
	fflush(stdout);
	execv("/proc/self/exe", argv);
	if (strchr(argv[0], '/'))
		execv(argv[0], argv);
	bail("cannot execute the program again (%s): set UCX_MEM_EVENTS=%s yourself",
	     strerror(errno), want_no ? "no" : "yes");
}

static void hook_probe(ucm_event_type_t type, ucm_event_t *event, void *arg)
{
	(void)type;
	(void)event;
	(void)arg;
	INC(cnt.hook_probe);
}

/* Whether UCM itself reports an munmap: its hooks are installed. */
static bool ucm_hooks_active(void)
{
	ucs_status_t status;
	void *p;

	status = ucm_set_event_handler(UCM_EVENT_VM_UNMAPPED | UCM_EVENT_FLAG_NO_INSTALL, 0,
				       hook_probe, NULL);
	if (status != UCS_OK)
		bail("ucm_set_event_handler: %s", ucs_status_string(status));
	p = mmap(NULL, g.page, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p != MAP_FAILED)
		munmap(p, g.page);
	ucm_unset_event_handler(UCM_EVENT_VM_UNMAPPED, hook_probe, NULL);
	return LOAD(cnt.hook_probe) != 0;
}

static void setup_ucm(void)
{
	ucm_global_config_t opts;

	if (g.monitor == MONITOR_HOOKS) {
		if (!ucm_hooks_active())
			bail("UCM's hooks report no munmap: the hooks baseline means nothing");
		return;
	}
	/* Events on (rcache_create needs it), but no hooks: they were not installed at start. */
	opts = ucm_global_opts;
	opts.enable_events = 1;
	ucm_set_global_opts(&opts);
	ucm_set_external_event(UCM_EVENT_VM_UNMAPPED);
	if (ucm_hooks_active())
		bail("UCM's memory hooks are installed: memreg would not be the only event source");
}

static void setup_memreg(void)
{
	struct memreg_cache_config cfg;
	__u32 version = 0;
	int ret;

	g.fd = memreg_open();
	if (g.fd == -ENOENT || g.fd == -ENODEV || g.fd == -ENXIO) {
		printf("1..0 # SKIP /dev/memreg missing\n");
		fflush(stdout);
		exit(4);
	}
	if (g.fd < 0)
		bail("open /dev/memreg: %s", strerror(-g.fd));
	ret = memreg_get_version(g.fd, &version);
	if (ret)
		bail("GET_VERSION: %s", strerror(-ret));
	if (version < 4)
		bail("memreg speaks ABI version %u; watches, REVALIDATE and user data need 4",
		     version);
	/* The rcache is the cache: registrations it drops end at once, nothing is parked. */
	ret = memreg_get_cache(g.fd, &cfg);
	if (!ret) {
		cfg.parking = 0;
		ret = memreg_set_cache(g.fd, &cfg);
	}
	if (ret)
		bail("turning parking off: %s", strerror(-ret));
	ret = memreg_state_words_map(g.fd, MEMREG_MAX_SLOTS, &g.sw);
	if (ret)
		bail("mapping the state words: %s", strerror(-ret));
	g.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	evt.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (g.efd < 0 || evt.wake_fd < 0)
		bail("eventfd: %s", strerror(errno));
	ret = memreg_events_init(g.fd, EV_ENTRIES, g.efd, &g.ev);
	if (ret)
		bail("setting up the event ring: %s", strerror(-ret));
	if (!g.ev.user_data)
		bail("the event ring carries no user data (ABI version %u)", version);
	if (pthread_create(&evt.thread, NULL, event_thread, NULL))
		bail("pthread_create failed");
	evt.running = true;
	diag("memreg ABI %u, %s registrations, %u state words, %d-entry event ring", version,
	     g.watch ? "watch-only" : "pinned", g.sw.slots, EV_ENTRIES);
}

static void teardown_memreg(void)
{
	if (evt.running) {
		pthread_mutex_lock(&tbl_lock);
		evt.stop = true;
		evt.paused = false;
		pthread_cond_broadcast(&tbl_cond);
		pthread_mutex_unlock(&tbl_lock);
		evt_kick();
		pthread_join(evt.thread, NULL);
		evt.running = false;
	}
	memreg_events_exit(&g.ev);
	memreg_state_words_unmap(&g.sw);
	close(g.efd);
	close(evt.wake_fd);
	close(g.fd);
}

int main(int argc, char **argv)
{
	pthread_condattr_t ca;
	unsigned int i;

	parse_args(argc, argv);
	ensure_env(argv);
	setvbuf(stdout, NULL, _IOLBF, 0);
	g.page = (size_t)sysconf(_SC_PAGESIZE);
	/* Fixed, so that glibc's dynamic threshold never moves large buffers to the heap. */
	mallopt(M_MMAP_THRESHOLD, 512 * KIB);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&tbl_cond, &ca);
	g.tmp = mmap(NULL, TMP_BYTES, RW, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (g.tmp == MAP_FAILED)
		bail("mmap: %s", strerror(errno));

	setup_ucm();
	if (memreg_on())
		setup_memreg();
	diag("memreg-ucx-rcache: monitor %s, UCX_MEM_EVENTS=%s",
	     memreg_on() ? "memreg" : "hooks (UCM)",
	     getenv("UCX_MEM_EVENTS") ? getenv("UCX_MEM_EVENTS") : "unset");
	cache_create(&main_cache, 256);

	if (g.bench) {
		run_bench(g.bench);
	} else {
		for (i = 0; i < ARRAY_SIZE(checks); i++) {
			enum result res;

			skip_why = NULL;
			res = checks[i].run();
			report(res, checks[i].name);
		}
		diag("gets: %lu stale regions caught by the state word, %lu suspended "
		     "(%lu resumed by REVALIDATE, %lu ended); events: %lu (%lu ended, %lu "
		     "evicted, %lu suspended, %lu resumed, %lu late), %lu regions dropped by "
		     "events, %lu resyncs; REGISTER: %lu failed, %lu served by a live "
		     "registration; %lu DEREGISTER of ended keys", LOAD(cnt.stale_caught),
		     LOAD(cnt.suspended_seen), LOAD(cnt.revalidated), LOAD(cnt.revalidate_stale),
		     LOAD(cnt.events), LOAD(cnt.ev_ended), LOAD(cnt.ev_evicted),
		     LOAD(cnt.ev_suspended), LOAD(cnt.ev_resumed), LOAD(cnt.ev_late),
		     LOAD(cnt.ev_dropped), LOAD(cnt.resyncs), LOAD(cnt.reg_failures),
		     LOAD(cnt.reg_cached), LOAD(cnt.dereg_ended));
	}
	cache_destroy(&main_cache);
	if (memreg_on())
		teardown_memreg();
	printf("1..%u\n", tap_n);
	printf("MEMREG-UCX: %u passed, %u failed\n", tap_pass, tap_fail);
	return tap_fail ? 1 : 0;
}
