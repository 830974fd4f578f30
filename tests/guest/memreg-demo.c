// SPDX-License-Identifier: GPL-2.0
/*
 * memreg demo, what `make run` shows: a program registers a buffer once,
 * registers part of it again and is served from the cache, moves data
 * through the registration, then unmaps the buffer and the registration is
 * gone by itself. Exits 0 only if every step behaved as expected.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../memreg_util.h"

#define BUF_PAGES	16
#define BUF_LEN		(BUF_PAGES * PAGE)

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

int main(void)
{
	static const char to_region[] = "written through the registration";
	static const char by_program[] = "written by the program";
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
	ret = mr_register(fd, buf, BUF_LEN, RW, &r);
	if (!step(!ret && !(r.flags & MEMREG_REGISTER_CACHED),
		  "REGISTER %lu KiB read-write: %s lkey %#llx", BUF_LEN / 1024,
		  ret ? strerror(-ret) : "new registration,", (unsigned long long)r.lkey))
		return 1;
	ret = mr_query(fd, r.lkey, &q);
	step(!ret && q.pages == BUF_PAGES && (q.state & MEMREG_STATE_VALID),
	     "QUERY: %llu pages pinned, in %u physically contiguous extent(s), refcount %u",
	     (unsigned long long)q.pages, q.extents, q.refcount);

	/* 2. A range it covers: served from the cache, nothing pinned again. */
	ret = mr_register(fd, buf + 2 * PAGE, 4 * PAGE, RO, &sub);
	step(!ret && (sub.flags & MEMREG_REGISTER_CACHED) && sub.lkey == r.lkey,
	     "REGISTER 16 KiB inside it again: %s, lkey %#llx (%s)",
	     ret ? strerror(-ret) :
	     sub.flags & MEMREG_REGISTER_CACHED ? "served from the cache (MEMREG_REGISTER_CACHED)" :
	     "NOT served from the cache",
	     (unsigned long long)sub.lkey, sub.lkey == r.lkey ? "the same" : "a different one");

	/* 3. Data moves through the registration's pages; the program sees them. */
	ret = mr_copy(fd, r.lkey, 100, (void *)to_region, sizeof(to_region), MEMREG_COPY_TO_REGION);
	step(!ret && !memcmp(buf + 100, to_region, sizeof(to_region)),
	     "COPY into the registration at offset 100; the buffer now reads \"%.*s\"",
	     (int)sizeof(to_region) - 1, buf + 100);
	memcpy(buf + 8192, by_program, sizeof(by_program));
	ret = mr_copy(fd, r.lkey, 8192, back, sizeof(by_program), MEMREG_COPY_FROM_REGION);
	step(!ret && !memcmp(back, by_program, sizeof(by_program)),
	     "the program wrote \"%s\" at offset 8192; COPY out of the registration reads \"%.*s\"",
	     by_program, (int)sizeof(by_program) - 1, back);

	/* 4. The memory goes away: so does the registration, at once. */
	munmap(buf, BUF_LEN);
	ret = mr_query(fd, r.lkey, &q);
	step(ret == -ENOENT, "munmap the buffer: QUERY of lkey %#llx now fails with %s",
	     (unsigned long long)r.lkey, ret ? strerror(-ret) : "nothing (it still answers)");
	ret = mr_copy(fd, r.lkey, 0, back, 16, MEMREG_COPY_FROM_REGION);
	step(ret == -ENOENT, "COPY through the old key fails with %s: never the new memory",
	     ret ? strerror(-ret) : "nothing (it still works)");
	/* Unpinning is done by a worker: wait for it before reading the counters. */
	mr_wait_pinned(fd, 0);
	ret = mr_stats(fd, &s);
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

	if (failures)
		printf("memreg demo: %d step(s) did not behave as expected\n", failures);
	else
		printf("memreg demo: every step behaved as expected\n");
	return failures ? 1 : 0;
}
