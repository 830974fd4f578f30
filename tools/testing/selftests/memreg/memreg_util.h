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
#include <time.h>
#include <unistd.h>

#include <linux/memreg.h>

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

static inline int memreg_open(void)
{
	return open("/dev/memreg", O_RDWR | O_CLOEXEC);
}

/* REGISTER; returns 0 or -errno and fills *r. */
static inline int mr_register(int fd, void *addr, __u64 len, __u32 access,
			      struct memreg_register *r)
{
	memset(r, 0, sizeof(*r));
	r->addr = (__u64)(unsigned long)addr;
	r->length = len;
	r->access = access;
	return ioctl(fd, MEMREG_IOC_REGISTER, r) ? -errno : 0;
}

static inline int mr_deregister(int fd, __u64 key)
{
	struct memreg_deregister d = { .key = key };

	return ioctl(fd, MEMREG_IOC_DEREGISTER, &d) ? -errno : 0;
}

static inline int mr_query(int fd, __u64 key, struct memreg_query *q)
{
	memset(q, 0, sizeof(*q));
	q->key = key;
	return ioctl(fd, MEMREG_IOC_QUERY, q) ? -errno : 0;
}

static inline int mr_copy(int fd, __u64 key, __u64 offset, void *buf, __u64 len,
			  __u32 direction)
{
	struct memreg_copy c = {
		.key = key,
		.offset = offset,
		.length = len,
		.buf = (__u64)(unsigned long)buf,
		.direction = direction,
	};

	return ioctl(fd, MEMREG_IOC_COPY, &c) ? -errno : 0;
}

static inline int mr_stats(int fd, struct memreg_stats *s)
{
	memset(s, 0, sizeof(*s));
	return ioctl(fd, MEMREG_IOC_STATS, s) ? -errno : 0;
}

static inline int mr_global(int fd, struct memreg_global_stats *g)
{
	memset(g, 0, sizeof(*g));
	return ioctl(fd, MEMREG_IOC_GLOBAL_STATS, g) ? -errno : 0;
}

/* Module-wide counters read through a short-lived file of its own. */
static inline int mr_global_now(struct memreg_global_stats *g)
{
	int fd = memreg_open();
	int ret;

	if (fd < 0)
		return -errno;
	ret = mr_global(fd, g);
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
		if (mr_stats(fd, &s))
			return -EIO;
		if (s.pages_pinned == pages)
			return 0;
		usleep(10000);
	}
	return -ETIMEDOUT;
}

/* GET_CACHE; returns 0 or -errno. */
static inline int mr_get_cache(int fd, struct memreg_cache_config *c)
{
	memset(c, 0, sizeof(*c));
	return ioctl(fd, MEMREG_IOC_GET_CACHE, c) ? -errno : 0;
}

/* SET_CACHE; returns 0 or -errno. */
static inline int mr_set_cache(int fd, const struct memreg_cache_config *c)
{
	return ioctl(fd, MEMREG_IOC_SET_CACHE, c) ? -errno : 0;
}

/* Turns parking (the parked list) on or off, other settings kept. */
static inline int mr_set_parking(int fd, int on)
{
	struct memreg_cache_config c;
	int ret = mr_get_cache(fd, &c);

	if (ret)
		return ret;
	c.parking = !!on;
	return mr_set_cache(fd, &c);
}

/* FLUSH: ends every parked registration; `f` (may be NULL) gets the result. */
static inline int mr_flush(int fd, struct memreg_flush *f)
{
	struct memreg_flush tmp;

	if (!f)
		f = &tmp;
	memset(f, 0, sizeof(*f));
	return ioctl(fd, MEMREG_IOC_FLUSH, f) ? -errno : 0;
}

/* Waits (at most 5 s) until this context has `parked` parked registrations. */
static inline int mr_wait_parked(int fd, __u64 parked)
{
	struct memreg_stats s;
	int i;

	for (i = 0; i < 500; i++) {
		if (mr_stats(fd, &s))
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
		ret = mr_query(fd, key, &q);
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

#endif /* MEMREG_UTIL_H */
