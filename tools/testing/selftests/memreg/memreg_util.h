/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the memreg kselftests.
 */
#ifndef MEMREG_UTIL_H
#define MEMREG_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include <linux/memreg.h>
#include <libmemreg.h>

/* Waits for `pid`; returns its exit status, or 255 if it did not exit. */
static inline int wait_exit(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return 255;
	return WEXITSTATUS(status);
}

/* Waits for `pid`; returns the signal that killed it, or 0. */
static inline int wait_signal(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) != pid || !WIFSIGNALED(status))
		return 0;
	return WTERMSIG(status);
}

/* No core file for the children that are meant to fault. */
static inline void no_core(void)
{
	struct rlimit rl = { 0, 0 };

	setrlimit(RLIMIT_CORE, &rl);
}

/* The counter of a non-blocking eventfd, reset by reading it (0 when it is 0). */
static inline __u64 efd_count(int efd)
{
	__u64 v = 0;

	if (read(efd, &v, sizeof(v)) != sizeof(v))
		return 0;
	return v;
}

/* The base page size, read once from sysconf(_SC_PAGESIZE). */
static inline unsigned long page_size(void)
{
	static unsigned long size;
	unsigned long v = __atomic_load_n(&size, __ATOMIC_RELAXED);

	if (!v) {
		v = (unsigned long)sysconf(_SC_PAGESIZE);
		__atomic_store_n(&size, v, __ATOMIC_RELAXED);
	}
	return v;
}

#define PAGE	page_size()
/* One page in kB, the unit of VmPin. */
#define PAGE_KB	(PAGE / 1024)
#define RW	(MEMREG_ACCESS_LOCAL_READ | MEMREG_ACCESS_LOCAL_WRITE)
#define RO	MEMREG_ACCESS_LOCAL_READ

/* Module-wide counters read through a short-lived file of its own. */
static inline int mr_global_now(struct memreg_global_stats *g)
{
	int fd = memreg_open();
	int ret;

	if (fd < 0)
		return -errno;
	ret = memreg_global_stats(fd, g);
	close(fd);
	/* The probing file itself is counted while open. */
	if (!ret)
		g->contexts--;
	return ret;
}

/*
 * Waits (at most 5 s) until the module has no registration, no pinned page
 * and `contexts` open files other than ours; returns 0 or -ETIMEDOUT.
 * Teardown after an invalidation is deferred to a worker, hence the wait.
 */
static inline int mr_wait_global(__u64 contexts, __u64 regions, __u64 pages)
{
	struct memreg_global_stats g;
	int i;

	for (i = 0; i < 500; i++) {
		if (mr_global_now(&g))
			return -EIO;
		if (g.contexts == contexts && g.regions == regions && g.pages_pinned == pages)
			return 0;
		usleep(10000);
	}
	fprintf(stderr, "global: contexts %llu regions %llu pages %llu, want %llu %llu %llu\n",
		(unsigned long long)g.contexts, (unsigned long long)g.regions,
		(unsigned long long)g.pages_pinned, (unsigned long long)contexts,
		(unsigned long long)regions, (unsigned long long)pages);
	return -ETIMEDOUT;
}

/*
 * Waits until no memreg file is open and nothing is pinned (a fresh start);
 * `base` gets the module's counters then (all ones if they cannot be read).
 */
static inline void mr_settle(struct memreg_global_stats *base)
{
	mr_wait_global(0, 0, 0);
	if (mr_global_now(base))
		memset(base, 0xff, sizeof(*base));
}

/* Pages pinned module-wide (all ones on error). */
static inline __u64 mr_global_pinned(void)
{
	struct memreg_global_stats g;

	return mr_global_now(&g) ? ~0ULL : g.pages_pinned;
}

/* Waits until this context's pinned pages drop to `pages`. */
static inline int mr_wait_pinned(int fd, __u64 pages)
{
	struct memreg_stats s;
	int i;

	for (i = 0; i < 500; i++) {
		if (memreg_stats(fd, &s))
			return -EIO;
		if (s.pages_pinned == pages)
			return 0;
		usleep(10000);
	}
	return -ETIMEDOUT;
}

/* Turns parking (the parked list) on or off, other settings kept. */
static inline int mr_set_parking(int fd, int on)
{
	struct memreg_cache_config c;
	int ret = memreg_get_cache(fd, &c);

	if (ret)
		return ret;
	c.parking = !!on;
	return memreg_set_cache(fd, &c);
}

/* Waits (at most 5 s) until this context has `parked` parked registrations. */
static inline int mr_wait_parked(int fd, __u64 parked)
{
	struct memreg_stats s;
	int i;

	for (i = 0; i < 500; i++) {
		if (memreg_stats(fd, &s))
			return -EIO;
		if (s.parked == parked)
			return 0;
		usleep(10000);
	}
	return -ETIMEDOUT;
}

/*
 * Waits (at most 5 s) until QUERY of `key` answers `state`, or, when `state`
 * is 0, until it fails with ENOENT. Returns 0, -ETIMEDOUT, or the error
 * QUERY gave otherwise.
 */
static inline int mr_wait_state(int fd, __u64 key, __u32 state)
{
	struct memreg_query q;
	int i, ret;

	for (i = 0; i < 500; i++) {
		ret = memreg_query(fd, key, &q);
		if (!state && ret == -ENOENT)
			return 0;
		if (state && !ret && q.state == state)
			return 0;
		/* Gone while waiting for a state: it will not come back. */
		if (ret && (state || ret != -ENOENT))
			return ret;
		usleep(10000);
	}
	return -ETIMEDOUT;
}

/* Runs every shrinker (echo 2 > /proc/sys/vm/drop_caches); 0 or -errno. */
static inline int drop_caches(void)
{
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, "2\n", 2) != 2)
		ret = -errno;
	close(fd);
	return ret;
}

/*
 * Reloads the module with `args` (the guest keeps it at /memreg.ko); the
 * caller must have no memreg file open. Returns system()'s status.
 */
static inline int mr_reload_module(const char *args)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rmmod memreg && insmod /memreg.ko %s", args);
	return system(cmd);
}

/* The "<key>: N kB" line of a /proc file, in kB, or -1. */
static inline long proc_kb(const char *path, const char *key)
{
	char line[256], fmt[64];
	long kb = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	snprintf(fmt, sizeof(fmt), "%s: %%ld kB", key);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, fmt, &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* VmPin of this process from /proc/self/status, in kB, or -1. */
static inline long vm_pin_kb(void)
{
	return proc_kb("/proc/self/status", "VmPin");
}

/*
 * Waits up to `ms` for VmPin to be `kb`: charges are released once the pages
 * are unpinned, which the context's deferred work does after an
 * invalidation. 0 or -ETIMEDOUT.
 */
static inline int wait_vm_pin(long kb, int ms)
{
	int i;

	for (i = 0; i <= ms / 10; i++) {
		if (vm_pin_kb() == kb)
			return 0;
		usleep(10000);
	}
	return -ETIMEDOUT;
}

/* The PMD-sized transparent huge page size, 2 MiB if sysfs does not say. */
static inline size_t thp_size(void)
{
	unsigned long size = 0;
	FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "r");

	if (f) {
		if (fscanf(f, "%lu", &size) != 1)
			size = 0;
		fclose(f);
	}
	return size ? size : 2UL << 20;
}

/*
 * The "<key>: N kB" line of the /proc/self/smaps entry of the mapping that
 * contains `addr` ("AnonHugePages", "Rss", ...), in kB, or -1.
 */
static inline long smaps_kb(const void *addr, const char *key)
{
	unsigned long a = (unsigned long)addr, start, end;
	char line[512], fmt[64];
	int inside = 0;
	long kb = -1, v;
	FILE *f = fopen("/proc/self/smaps", "r");

	if (!f)
		return -1;
	snprintf(fmt, sizeof(fmt), "%s: %%ld kB", key);
	while (fgets(line, sizeof(line), f)) {
		/* A mapping's first line: "start-end perms offset dev inode [path]". */
		if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && !strstr(line, " kB")) {
			if (inside)
				break;
			inside = a >= start && a < end;
			continue;
		}
		if (inside && sscanf(line, fmt, &v) == 1) {
			kb = v;
			break;
		}
	}
	fclose(f);
	return kb;
}

/* Maps `len` bytes of private anonymous memory, filled with `fill`. */
static inline char *map_filled(size_t len, int fill)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	memset(p, fill, len);
	return p;
}

/* Whether all `len` bytes at `p` equal `c`. */
static inline int all_bytes(const char *p, size_t len, int c)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] != (char)c)
			return 0;
	return 1;
}

/* Private anonymous memory, small pages only, filled with `fill`; NULL on failure. */
static inline char *map_buf(size_t len, int fill)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	madvise(p, len, MADV_NOHUGEPAGE);
	memset(p, fill, len);
	return p;
}

/* Fresh memory at `addr` (MAP_FIXED over whatever was there), filled with `fill`. */
static inline char *map_fixed(void *addr, size_t len, int fill)
{
	char *p = mmap(addr, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	madvise(p, len, MADV_NOHUGEPAGE);
	memset(p, fill, len);
	return p;
}

/* Whether thread `tid` of this process is asleep ("S"). */
static inline bool thread_sleeping(pid_t tid)
{
	char path[64], line[512], *p;
	bool asleep = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	f = fopen(path, "r");
	if (!f)
		return false;
	if (fgets(line, sizeof(line), f)) {
		p = strrchr(line, ')');
		asleep = p && p[1] == ' ' && p[2] == 'S';
	}
	fclose(f);
	return asleep;
}

/*
 * ---- The data path, for the tests ----
 *
 * The tests post and reap through libmemreg; what follows builds requests
 * by value (through the library's preps) and reads the protocol's words
 * where a test checks them.
 */

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

/* DOORBELL calls made through memreg_queue_doorbell() on this queue. */
static inline __u64 mrq_doorbells(const struct memreg_queue *q)
{
	return __atomic_load_n(&q->doorbells, __ATOMIC_RELAXED);
}

static inline void mrq_set_cq_head(struct memreg_queue *q, __u32 head)
{
	__atomic_store_n(&q->user->cq_head, head, __ATOMIC_RELEASE);
}

static inline __u64 mrq_seq(const struct memreg_queue *q, __u64 i)
{
	return __atomic_load_n(&q->slots[i & (q->sq_entries - 1)].seq, __ATOMIC_ACQUIRE);
}

static inline __u32 mrq_armed(const struct memreg_queue *q)
{
	return __atomic_load_n(&q->user->cq_arm, __ATOMIC_ACQUIRE);
}

/* Waits until cq_tail reaches `tail` (without consuming); 0 or -ETIMEDOUT. */
static inline int mrq_wait_tail(const struct memreg_queue *q, __u32 tail, int timeout_ms)
{
	__u64 deadline = mrq_now_us() + (__u64)timeout_ms * 1000;
	unsigned int spins = 0;

	while ((__s32)(memreg_queue_cq_tail(q) - tail) < 0) {
		if (mrq_now_us() > deadline)
			return -ETIMEDOUT;
		mrq_relax(&spins);
	}
	return 0;
}

/* Waits until (flags & mask) == want; 0 or -ETIMEDOUT. */
static inline int mrq_wait_flags(const struct memreg_queue *q, __u32 mask, __u32 want,
				 int timeout_ms)
{
	__u64 deadline = mrq_now_us() + (__u64)timeout_ms * 1000;
	unsigned int spins = 0;

	while ((memreg_queue_flags(q) & mask) != want) {
		if (mrq_now_us() > deadline)
			return -ETIMEDOUT;
		mrq_relax(&spins);
	}
	return 0;
}

static inline __u32 mr_master_tail(const struct memreg_master *m)
{
	return __atomic_load_n(&m->ring->tail, __ATOMIC_ACQUIRE);
}

static inline __u32 mr_master_head(const struct memreg_master *m)
{
	return __atomic_load_n(&m->user->head, __ATOMIC_RELAXED);
}

static inline void mr_master_set_head(struct memreg_master *m, __u32 head)
{
	__atomic_store_n(&m->user->head, head, __ATOMIC_RELEASE);
}

/* Entry number `i`, counted from the first ever written. */
static inline __u32 mr_master_at(const struct memreg_master *m, __u32 i)
{
	return m->entries[i & (MEMREG_MASTER_ENTRIES - 1)];
}

static inline __u32 mr_master_armed(const struct memreg_master *m)
{
	return __atomic_load_n(&m->user->arm, __ATOMIC_ACQUIRE);
}

/* Requests by value, each through the library's prep. */
static inline struct memreg_sqe mr_sqe_nop(__u64 user_data)
{
	struct memreg_sqe s;

	memreg_prep_nop(&s);
	memreg_sqe_set_data64(&s, user_data);
	return s;
}

static inline struct memreg_sqe mr_sqe_fence(__u64 user_data)
{
	struct memreg_sqe s;

	memreg_prep_fence(&s);
	memreg_sqe_set_data64(&s, user_data);
	return s;
}

static inline struct memreg_sqe mr_sqe_deregister(__u64 user_data, __u64 key)
{
	struct memreg_sqe s;

	memreg_prep_deregister(&s, key);
	memreg_sqe_set_data64(&s, user_data);
	return s;
}

static inline struct memreg_sqe mr_sqe_copy(__u64 user_data, __u64 key, __u64 offset,
					    __u64 src_key, __u64 src_offset, __u64 length)
{
	struct memreg_sqe s;

	memreg_prep_copy(&s, key, offset, src_key, src_offset, length);
	memreg_sqe_set_data64(&s, user_data);
	return s;
}

static inline struct memreg_sqe mr_sqe_write(__u64 user_data, __u32 peer, __u64 rkey,
					     __u64 roffset, __u64 lkey, __u64 loffset,
					     __u64 length)
{
	struct memreg_sqe s;

	memreg_prep_write(&s, peer, rkey, roffset, lkey, loffset, length);
	memreg_sqe_set_data64(&s, user_data);
	return s;
}

static inline struct memreg_sqe mr_sqe_read(__u64 user_data, __u32 peer, __u64 lkey,
					    __u64 loffset, __u64 rkey, __u64 roffset,
					    __u64 length)
{
	struct memreg_sqe s;

	memreg_prep_read(&s, peer, lkey, loffset, rkey, roffset, length);
	memreg_sqe_set_data64(&s, user_data);
	return s;
}

static inline struct memreg_sqe mr_sqe_send(__u64 user_data, __u64 lkey, __u64 offset,
					    __u64 length)
{
	struct memreg_sqe s;

	memreg_prep_send(&s, lkey, offset, length);
	memreg_sqe_set_data64(&s, user_data);
	return s;
}

static inline struct memreg_sqe mr_sqe_send_imm(__u64 user_data, __u64 lkey, __u64 offset,
						__u64 length, __u64 imm)
{
	struct memreg_sqe s;

	memreg_prep_send_imm(&s, lkey, offset, length, imm);
	memreg_sqe_set_data64(&s, user_data);
	return s;
}

static inline struct memreg_sqe mr_sqe_recv(__u64 user_data, __u64 lkey, __u64 offset,
					    __u64 length)
{
	struct memreg_sqe s;

	memreg_prep_recv(&s, lkey, offset, length);
	memreg_sqe_set_data64(&s, user_data);
	return s;
}

#endif /* MEMREG_UTIL_H */
