// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: registrations of shared file memory, memfd (shmem) and
 * hugetlbfs (memfd with MFD_HUGETLB). COPY and the cache work on the file's
 * pages, and a registration ends when its pages leave the mapping: munmap,
 * ftruncate shrinking the file, fallocate punching a hole. After the event
 * the old key moves no data, neither into the memory now mapped at the
 * address nor into the pages it pinned, and is refused with ENOENT.
 * Truncation and hole punching notify a CLEAR, which suspends the
 * registration; its next use (or a worker, shortly after) revalidates it,
 * finds the pages gone and ends it. Anonymous memory is covered by
 * memreg_inval_test.c.
 */
#include <stdbool.h>

#include "memreg_util.h"

#include "../kselftest_harness.h"

/* Each test maps NUNITS pages of the backing: base pages or huge pages. */
#define NUNITS		4
/*
 * Huge pages the hugetlb variant needs: NUNITS for the file, NUNITS for the
 * fresh file mapped over it after munmap.
 */
#define NR_HUGE		(2 * NUNITS)
#define NR_HUGEPAGES	"/proc/sys/vm/nr_hugepages"

enum event { EV_MUNMAP, EV_TRUNCATE, EV_PUNCH_HOLE };

/* A number read from a file, or -1. */
static long read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;

	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

static int write_long(const char *path, long v)
{
	FILE *f = fopen(path, "w");
	int ret;

	if (!f)
		return -1;
	ret = fprintf(f, "%ld\n", v) < 0;
	return fclose(f) || ret ? -1 : 0;
}

/* The value of a /proc/meminfo line ("HugePages_Free:"), or -1. */
static long meminfo(const char *key)
{
	char line[256];
	long v = -1;
	size_t n = strlen(key);
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, n) && sscanf(line + n, "%ld", &v) == 1)
			break;
	fclose(f);
	return v;
}

/* A memfd of `len` bytes, of huge pages if `huge`; -1 and errno on failure. */
static int new_memfd(bool huge, size_t len)
{
	int fd = memfd_create("memreg-backing", MFD_CLOEXEC | (huge ? MFD_HUGETLB : 0));

	if (fd < 0)
		return -1;
	if (ftruncate(fd, len)) {
		int err = errno;

		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

FIXTURE(backing)
{
	int fd;			/* the memreg context */
	int mfd;		/* the memfd */
	char *buf;		/* the memfd mapped MAP_SHARED: what is registered */
	char *alias;		/* a second MAP_SHARED mapping of the same file */
	size_t unit;		/* page size of the backing */
	size_t len;		/* NUNITS pages of it */
	long saved_nr_hugepages; /* to restore, or -1 */
	struct memreg_global_stats base;
};

FIXTURE_VARIANT(backing)
{
	bool huge;
};

FIXTURE_VARIANT_ADD(backing, shmem) { .huge = false };
FIXTURE_VARIANT_ADD(backing, hugetlb) { .huge = true };

static void restore_nr_hugepages(FIXTURE_DATA(backing) *self)
{
	if (self->saved_nr_hugepages >= 0)
		write_long(NR_HUGEPAGES, self->saved_nr_hugepages);
	self->saved_nr_hugepages = -1;
}

FIXTURE_SETUP(backing)
{
	self->saved_nr_hugepages = -1;
	self->unit = PAGE;
	if (variant->huge) {
		long nr = read_long(NR_HUGEPAGES);
		long free_pages, size_kb;

		if (nr < 0)
			SKIP(return, "no hugetlb support (%s)", NR_HUGEPAGES);
		if (nr < NR_HUGE) {
			if (write_long(NR_HUGEPAGES, NR_HUGE))
				SKIP(return, "cannot write %s", NR_HUGEPAGES);
			self->saved_nr_hugepages = nr;
		}
		free_pages = meminfo("HugePages_Free:");
		size_kb = meminfo("Hugepagesize:");
		if (free_pages < NR_HUGE || size_kb <= 0) {
			restore_nr_hugepages(self);
			SKIP(return, "%ld huge pages free, %d needed", free_pages, NR_HUGE);
		}
		self->unit = size_kb * 1024;
	}
	self->len = NUNITS * self->unit;
	self->mfd = new_memfd(variant->huge, self->len);
	if (self->mfd < 0 && variant->huge) {
		int err = errno;

		restore_nr_hugepages(self);
		SKIP(return, "memfd_create(MFD_HUGETLB): %s", strerror(err));
	}
	ASSERT_GE(self->mfd, 0);
	self->buf = mmap(NULL, self->len, PROT_READ | PROT_WRITE, MAP_SHARED, self->mfd, 0);
	ASSERT_NE(MAP_FAILED, self->buf);
	self->alias = mmap(NULL, self->len, PROT_READ | PROT_WRITE, MAP_SHARED, self->mfd, 0);
	ASSERT_NE(MAP_FAILED, self->alias);
	memset(self->buf, 'a', self->len);
	self->fd = memreg_open();
	ASSERT_GE(self->fd, 0);
	ASSERT_EQ(0, mr_global_now(&self->base));
}

FIXTURE_TEARDOWN(backing)
{
	close(self->fd);
	munmap(self->buf, self->len);
	munmap(self->alias, self->len);
	close(self->mfd);
	restore_nr_hugepages(self);
}

TEST_F(backing, register_copy_and_hit)
{
	size_t len = self->len, unit = self->unit;
	__u64 pages = len / PAGE;
	struct memreg_register a, b, c;
	struct memreg_flush f;
	struct memreg_stats s;
	struct memreg_query q;
	size_t off = unit / 2, n = unit + PAGE + 3, i;
	long vmpin = vm_pin_kb();
	char *data = malloc(len);

	ASSERT_NE(NULL, data);
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, len, RW, &a));
	EXPECT_EQ(0, a.flags);
	EXPECT_EQ(vmpin + pages * PAGE_KB, vm_pin_kb());
	ASSERT_EQ(0, memreg_query(self->fd, a.lkey, &q));
	EXPECT_EQ(pages, q.pages);
	/* Every page of the backing is physically contiguous. */
	EXPECT_GE(q.extents, 1);
	EXPECT_LE(q.extents, NUNITS);

	/* COPY writes the file's pages: the other mapping of the file sees it. */
	for (i = 0; i < n; i++)
		data[i] = (char)(i * 7 + 1);
	ASSERT_EQ(0, memreg_copy(self->fd, a.lkey, off, data, n, MEMREG_COPY_TO_REGION));
	EXPECT_EQ(0, memcmp(self->alias + off, data, n));
	EXPECT_TRUE(all_bytes(self->alias, off, 'a'));
	EXPECT_TRUE(all_bytes(self->alias + off + n, len - off - n, 'a'));
	/* Writes through the other mapping are read through the registration. */
	memset(self->alias + len - unit, 'w', unit);
	memset(data, 0, len);
	ASSERT_EQ(0, memreg_copy(self->fd, a.lkey, len - unit, data, unit, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, unit, 'w'));

	/* An unaligned range inside is a hit that pins nothing. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + unit + 5, unit, RO, &b));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, b.flags);
	EXPECT_EQ(a.lkey, b.lkey);
	EXPECT_EQ((unsigned long)self->buf, b.region_addr);
	EXPECT_EQ(len, b.region_length);
	EXPECT_EQ(vmpin + pages * PAGE_KB, vm_pin_kb());
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(1, s.cache_hits);
	EXPECT_EQ(1, s.cache_misses);
	EXPECT_EQ(pages, s.pages_pinned);
	ASSERT_EQ(0, memreg_query(self->fd, a.lkey, &q));
	EXPECT_EQ(2, q.refcount);

	/* The other mapping is another range: a miss, pinning the pages again. */
	ASSERT_EQ(0, memreg_register(self->fd, self->alias, len, RW, &c));
	EXPECT_EQ(0, c.flags);
	EXPECT_NE(a.lkey, c.lkey);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(2 * pages, s.pages_pinned);
	/* Both reach the same pages. */
	memset(data, 's', PAGE);
	ASSERT_EQ(0, memreg_copy(self->fd, c.lkey, 0, data, PAGE, MEMREG_COPY_TO_REGION));
	memset(data, 0, PAGE);
	ASSERT_EQ(0, memreg_copy(self->fd, a.lkey, 0, data, PAGE, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, PAGE, 's'));

	EXPECT_EQ(0, memreg_deregister(self->fd, c.lkey));
	EXPECT_EQ(0, memreg_deregister(self->fd, b.lkey));
	EXPECT_EQ(0, memreg_deregister(self->fd, a.lkey));
	/* Parked (the default): still pinned and charged until FLUSH. */
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(2, s.registrations);
	EXPECT_EQ(2, s.parked);
	EXPECT_EQ(2 * pages, s.parked_pages);
	EXPECT_EQ(2 * pages, s.pages_pinned);
	EXPECT_EQ(vmpin + 2 * pages * PAGE_KB, vm_pin_kb());
	ASSERT_EQ(0, memreg_flush(self->fd, &f));
	EXPECT_EQ(2, f.evicted);
	EXPECT_EQ(2 * pages, f.pages);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(0, s.registrations);
	EXPECT_EQ(0, s.pages_pinned);
	EXPECT_EQ(vmpin, vm_pin_kb());
	free(data);
}

/*
 * Registers the whole mapping, writes the registration's data through it,
 * makes `ev` happen, and checks the registration is over and stays away
 * from both the old pages and the memory now mapped at the address.
 */
static void check_event_ends_registration(struct __test_metadata *_metadata,
					  FIXTURE_DATA(backing) *self, bool huge,
					  enum event ev)
{
	size_t len = self->len, unit = self->unit;
	size_t fresh_off = 0, fresh_len = 0;
	struct memreg_register r, again;
	struct memreg_stats s;
	struct memreg_query q;
	long vmpin = vm_pin_kb();
	char *data = malloc(len);
	int cause = -1, newfd = -1;
	char *p;
	int i;

	ASSERT_NE(NULL, data);
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, len, RW, &r));
	EXPECT_EQ(vmpin + len / PAGE * PAGE_KB, vm_pin_kb());
	memset(data, 'r', len);
	ASSERT_EQ(0, memreg_copy(self->fd, r.lkey, 0, data, len, MEMREG_COPY_TO_REGION));
	ASSERT_TRUE(all_bytes(self->alias, len, 'r'));

	switch (ev) {
	case EV_MUNMAP:
		/* Fresh memory of the same kind at the same address. */
		newfd = new_memfd(huge, len);
		ASSERT_GE(newfd, 0);
		ASSERT_EQ(0, munmap(self->buf, len));
		p = mmap(self->buf, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, newfd, 0);
		ASSERT_EQ(self->buf, p);
		fresh_len = len;
		cause = MEMREG_INVAL_UNMAP;
		break;
	case EV_TRUNCATE:
		/* The file loses its second half; growing it back brings holes. */
		ASSERT_EQ(0, ftruncate(self->mfd, len / 2));
		ASSERT_EQ(0, ftruncate(self->mfd, len));
		fresh_off = len / 2;
		fresh_len = len / 2;
		cause = MEMREG_INVAL_CLEAR;
		break;
	case EV_PUNCH_HOLE:
		ASSERT_EQ(0, fallocate(self->mfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				       unit, unit));
		fresh_off = unit;
		fresh_len = unit;
		cause = MEMREG_INVAL_CLEAR;
		break;
	}

	/* The memory now there never held the registration's data. */
	EXPECT_TRUE(all_bytes(self->buf + fresh_off, fresh_len, 0));

	/* munmap: over by the time the call returned; uncharged once the worker unpinned. */
	if (cause == MEMREG_INVAL_UNMAP) {
		ASSERT_EQ(0, memreg_stats(self->fd, &s));
		EXPECT_EQ(0, s.registrations);
		EXPECT_EQ(0, s.pages_pinned);
		EXPECT_EQ(0, wait_vm_pin(vmpin, 5000));
	}

	/*
	 * The old key moves no data (for a CLEAR, this use revalidates the
	 * suspended registration and ends it): not into the memory mapped
	 * there now...
	 */
	memset(self->buf, 'b', len);
	memset(data, 'c', len);
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, r.lkey, 0, data, len, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->buf, len, 'b'));
	/* ...nor into the old file pages, still reachable through the alias... */
	if (ev == EV_MUNMAP)
		EXPECT_TRUE(all_bytes(self->alias, len, 'r'));
	/* ...and nothing out of anything. */
	memset(data, 0, len);
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, r.lkey, 0, data, len, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, len, 0));
	EXPECT_EQ(-ENOENT, memreg_query(self->fd, r.lkey, &q));
	EXPECT_EQ(-ENOENT, memreg_deregister(self->fd, r.lkey));

	/* Over, counted by cause, and uncharged. */
	ASSERT_EQ(0, mr_wait_pinned(self->fd, 0));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(0, s.registrations);
	EXPECT_EQ(0, s.deregistrations);
	EXPECT_EQ(0, s.pages_pinned);
	for (i = 0; i < MEMREG_INVAL_NR_CAUSES; i++)
		EXPECT_EQ(i == cause ? 1 : 0, s.invalidations[i]);
	EXPECT_EQ(0, s.resumptions);
	if (cause == MEMREG_INVAL_CLEAR)
		EXPECT_EQ(1, s.revalidation_failures);
	EXPECT_EQ(0, wait_vm_pin(vmpin, 5000));

	/* Registering again is a miss that pins what is mapped now. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, len, RW, &again));
	EXPECT_EQ(0, again.flags);
	EXPECT_NE(r.lkey, again.lkey);
	memset(data, 'd', len);
	ASSERT_EQ(0, memreg_copy(self->fd, again.lkey, 0, data, len, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->buf, len, 'd'));
	/* Same file: the alias sees it too; another file: the old pages do not. */
	EXPECT_TRUE(all_bytes(self->alias, len, ev == EV_MUNMAP ? 'r' : 'd'));
	EXPECT_EQ(0, memreg_deregister(self->fd, again.lkey));
	ASSERT_EQ(0, memreg_flush(self->fd, NULL));

	/* The old pages are released too, by deferred work. */
	EXPECT_EQ(0, mr_wait_global(self->base.contexts, self->base.regions,
				    self->base.pages_pinned));
	if (newfd >= 0)
		close(newfd);
	free(data);
}

TEST_F(backing, munmap_ends_registration)
{
	check_event_ends_registration(_metadata, self, variant->huge, EV_MUNMAP);
}

TEST_F(backing, truncate_ends_registration)
{
	check_event_ends_registration(_metadata, self, variant->huge, EV_TRUNCATE);
}

TEST_F(backing, punch_hole_ends_registration)
{
	check_event_ends_registration(_metadata, self, variant->huge, EV_PUNCH_HOLE);
}

/* Growing the file, or writing it, leaves a registration of it alone. */
TEST_F(backing, growing_the_file_does_not_invalidate)
{
	struct memreg_register r;
	struct memreg_stats s;
	struct memreg_query q;
	int i;

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, self->len, RW, &r));
	ASSERT_EQ(0, ftruncate(self->mfd, 2 * self->len));
	memset(self->alias, 'g', self->len);
	ASSERT_EQ(0, memreg_query(self->fd, r.lkey, &q));
	EXPECT_TRUE(q.state & MEMREG_STATE_VALID);
	EXPECT_EQ(1, q.refcount);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	for (i = 0; i < MEMREG_INVAL_NR_CAUSES; i++)
		EXPECT_EQ(0, s.invalidations[i]);
	EXPECT_EQ(0, memreg_deregister(self->fd, r.lkey));
}

TEST_HARNESS_MAIN
