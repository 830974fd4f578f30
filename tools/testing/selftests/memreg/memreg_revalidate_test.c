// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: revalidation. A CLEAR notifier event suspends a
 * registration instead of ending it. Its next use (a REGISTER it would
 * serve, a COPY), or a worker shortly after the event, revalidates it: if
 * the range still maps the pages it pinned, it resumes with the same keys;
 * otherwise it ends (counted under CLEAR and in revalidation_failures).
 *
 * In Linux 7.3 a VMA split at an address that is not 2 MiB aligned sends a
 * CLEAR over the whole 2 MiB block when the mapping covers that block, so
 * these must leave a registration alive and moving data to and from the
 * same pages the program sees:
 *
 * - mprotect or munmap of one page right next to it;
 * - madvise(MADV_DONTFORK) or mlock of exactly its range;
 * - fork (on a PMD-mapped transparent huge page the kernel splits the
 *   parent's PMD: the parent keeps its pages, the child gets copies).
 *
 * Each case runs on small pages (a MADV_NOHUGEPAGE mapping covering the
 * whole 2 MiB block) and on a transparent huge page (a 2 MiB-aligned
 * MADV_HUGEPAGE block, registered except its last page, or whole for fork);
 * the THP cases are skipped when no huge page forms.
 *
 * These still end it, and the old key must never reach the memory mapped at
 * the address afterwards: munmap, mremap or mprotect of the registered
 * pages, MADV_DONTNEED of one of them.
 */
#include <stdbool.h>
#include <sys/wait.h>

#include "memreg_util.h"

#include "../kselftest_harness.h"

/* Whether the kernel has transparent huge pages (and so splits PMDs on VMA splits). */
static bool thp_configured(void)
{
	return access("/sys/kernel/mm/transparent_hugepage", F_OK) == 0;
}

FIXTURE(rv)
{
	int fd;
	size_t huge;		/* the PMD size */
	char *raw;		/* the whole mapping, 3 * huge */
	char *block;		/* the 2 MiB-aligned block inside it */
	char *reg;		/* the registered range */
	size_t reg_len;
	__u64 npages;
	long vmpin;		/* before registering */
	__u64 global_pinned;	/* the module's, before registering */
	struct memreg_register r;
};

FIXTURE_VARIANT(rv)
{
	bool thp;
};

FIXTURE_VARIANT_ADD(rv, small_pages) { .thp = false };
FIXTURE_VARIANT_ADD(rv, thp) { .thp = true };

FIXTURE_SETUP(rv)
{
	long kb;

	self->fd = -1;
	self->huge = thp_size();
	self->raw = mmap(NULL, 3 * self->huge, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->raw);
	/* Aligned, with at least a page of the mapping before and after it. */
	self->block = (char *)(((unsigned long)self->raw + PAGE + self->huge - 1) &
			       ~(self->huge - 1));
	if (variant->thp) {
		if (!thp_configured() || madvise(self->block, self->huge, MADV_HUGEPAGE))
			SKIP(return, "no transparent huge pages");
	} else if (thp_configured()) {
		/* One VMA, small pages, covering the whole block. */
		ASSERT_EQ(0, madvise(self->raw, 3 * self->huge, MADV_NOHUGEPAGE));
	}
	memset(self->block, 'a', self->huge);
	kb = smaps_kb(self->block, "AnonHugePages");
	if (variant->thp) {
		if (kb < (long)(self->huge / 1024))
			SKIP(return, "no THP formed (AnonHugePages %ld kB)", kb);
	} else {
		ASSERT_LE(kb, 0);
	}
	self->fd = memreg_open();
	ASSERT_GE(self->fd, 0);
}

FIXTURE_TEARDOWN(rv)
{
	if (self->fd >= 0)
		close(self->fd);
	munmap(self->raw, 3 * self->huge);
}

/*
 * Registers the case's range: on a THP the block but its last page (or the
 * whole block), on small pages 16 pages in the middle of the block; then
 * writes 'b' into it through the registration.
 */
static void do_register(struct __test_metadata *_metadata, FIXTURE_DATA(rv) *self, bool thp,
			bool whole_block)
{
	struct memreg_global_stats g;
	struct memreg_query q;
	char *data;

	if (thp) {
		self->reg = self->block;
		self->reg_len = whole_block ? self->huge : self->huge - PAGE;
	} else {
		self->reg = self->block + 16 * PAGE;
		self->reg_len = 16 * PAGE;
	}
	self->npages = self->reg_len / PAGE;
	self->vmpin = vm_pin_kb();
	ASSERT_EQ(0, memreg_global_stats(self->fd, &g));
	self->global_pinned = g.pages_pinned;
	ASSERT_EQ(0, memreg_register(self->fd, self->reg, self->reg_len, RW, &self->r));
	ASSERT_EQ(0, self->r.flags);
	ASSERT_EQ(0, memreg_query(self->fd, self->r.lkey, &q));
	ASSERT_EQ(MEMREG_STATE_VALID, q.state);
	ASSERT_EQ(self->npages, q.pages);
	if (thp)
		/* Registered while PMD-mapped: one extent. */
		EXPECT_EQ(1, q.extents);
	data = malloc(self->reg_len);
	ASSERT_NE(NULL, data);
	memset(data, 'b', self->reg_len);
	ASSERT_EQ(0, memreg_copy(self->fd, self->r.lkey, 0, data, self->reg_len,
			     MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->reg, self->reg_len, 'b'));
	free(data);
}

/*
 * The registration survived the event: same key, valid, holding the pages
 * the program sees (what either side writes, the other reads), nothing
 * pinned or charged twice, nothing counted as an invalidation.
 */
static void expect_survived(struct __test_metadata *_metadata, FIXTURE_DATA(rv) *self,
			    bool suspended)
{
	size_t len = self->reg_len;
	struct memreg_register again;
	struct memreg_global_stats g;
	struct memreg_stats s;
	struct memreg_query q;
	char *data = malloc(len);
	int i;

	ASSERT_NE(NULL, data);
	/* The first use revalidates; it reads what was there. */
	memset(data, 0, len);
	ASSERT_EQ(0, memreg_copy(self->fd, self->r.lkey, 0, data, len, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, len, 'b'));
	ASSERT_EQ(0, memreg_query(self->fd, self->r.lkey, &q));
	EXPECT_EQ(MEMREG_STATE_VALID, q.state);
	EXPECT_EQ(1, q.refcount);
	EXPECT_EQ(self->npages, q.pages);
	EXPECT_EQ((unsigned long)self->reg, q.addr);
	EXPECT_EQ(len, q.length);

	/* The program writes, the registration reads it... */
	memset(self->reg, 'm', len);
	memset(data, 0, len);
	ASSERT_EQ(0, memreg_copy(self->fd, self->r.lkey, 0, data, len, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, len, 'm'));
	/* ...and the other way round. */
	memset(data, 't', len);
	ASSERT_EQ(0, memreg_copy(self->fd, self->r.lkey, 0, data, len, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->reg, len, 't'));

	/* REGISTER of the range is a hit on it. */
	ASSERT_EQ(0, memreg_register(self->fd, self->reg, len, RW, &again));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, again.flags);
	EXPECT_EQ(self->r.lkey, again.lkey);
	EXPECT_EQ(self->r.rkey, again.rkey);
	EXPECT_EQ(0, memreg_deregister(self->fd, again.lkey));

	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(self->npages, s.pages_pinned);
	EXPECT_EQ(1, s.cache_misses);
	for (i = 0; i < MEMREG_INVAL_NR_CAUSES; i++) {
		EXPECT_EQ(0, s.invalidations[i]) TH_LOG("invalidations[%d]", i);
	}
	EXPECT_EQ(0, s.revalidation_failures);
	if (suspended && thp_configured()) {
		EXPECT_GE(s.suspensions, 1);
		EXPECT_GE(s.resumptions, 1);
	}
	TH_LOG("suspensions %llu, resumptions %llu", (unsigned long long)s.suspensions,
	       (unsigned long long)s.resumptions);
	EXPECT_EQ(self->vmpin + (long)(self->npages * PAGE_KB), vm_pin_kb());
	ASSERT_EQ(0, memreg_global_stats(self->fd, &g));
	EXPECT_EQ(self->global_pinned + self->npages, g.pages_pinned);
	free(data);
}

/* ---- Events that leave the pages in place ---- */

TEST_F(rv, neighbour_mprotect_keeps_registration)
{
	do_register(_metadata, self, variant->thp, false);
	ASSERT_EQ(0, mprotect(self->reg + self->reg_len, PAGE, PROT_READ));
	ASSERT_EQ(0, mprotect(self->reg - PAGE, PAGE, PROT_READ));
	expect_survived(_metadata, self, true);
}

TEST_F(rv, neighbour_munmap_keeps_registration)
{
	do_register(_metadata, self, variant->thp, false);
	ASSERT_EQ(0, munmap(self->reg + self->reg_len, PAGE));
	ASSERT_EQ(0, munmap(self->reg - PAGE, PAGE));
	expect_survived(_metadata, self, true);
}

TEST_F(rv, dontfork_of_range_keeps_registration)
{
	do_register(_metadata, self, variant->thp, false);
	ASSERT_EQ(0, madvise(self->reg, self->reg_len, MADV_DONTFORK));
	expect_survived(_metadata, self, true);
}

TEST_F(rv, mlock_of_range_keeps_registration)
{
	do_register(_metadata, self, variant->thp, false);
	if (mlock(self->reg, self->reg_len))
		SKIP(return, "mlock: %s", strerror(errno));
	expect_survived(_metadata, self, true);
	EXPECT_EQ(0, munlock(self->reg, self->reg_len));
}

/*
 * fork: the child gets copies of the pinned pages, the parent keeps its own;
 * on a PMD-mapped THP the parent's PMD is split (a CLEAR) first.
 */
TEST_F(rv, fork_keeps_parent_registration)
{
	pid_t pid;

	do_register(_metadata, self, variant->thp, true);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		/* The child writes its copy of the registered memory. */
		memset(self->reg, 'c', self->reg_len);
		_exit(all_bytes(self->reg, self->reg_len, 'c') ? 0 : 1);
	}
	ASSERT_EQ(0, wait_exit(pid));
	/* None of it reached the parent's memory or its registration. */
	EXPECT_TRUE(all_bytes(self->reg, self->reg_len, 'b'));
	expect_survived(_metadata, self, variant->thp);
}

/* A REGISTER hit is a use: it revalidates and returns the same registration. */
TEST_F(rv, register_revalidates_suspended_registration)
{
	struct memreg_register again;

	do_register(_metadata, self, variant->thp, false);
	ASSERT_EQ(0, mprotect(self->reg + self->reg_len, PAGE, PROT_READ));
	ASSERT_EQ(0, memreg_register(self->fd, self->reg + PAGE, PAGE, RO, &again));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, again.flags);
	EXPECT_EQ(self->r.lkey, again.lkey);
	EXPECT_EQ(0, memreg_deregister(self->fd, again.lkey));
	expect_survived(_metadata, self, true);
}

/* With no use at all, the worker revalidates it shortly after the event. */
TEST_F(rv, worker_revalidates_without_use)
{
	struct memreg_query q;

	do_register(_metadata, self, variant->thp, false);
	ASSERT_EQ(0, mprotect(self->reg + self->reg_len, PAGE, PROT_READ));
	ASSERT_EQ(0, memreg_query(self->fd, self->r.lkey, &q));
	TH_LOG("state right after the event: %#x", q.state);
	EXPECT_EQ(0, mr_wait_state(self->fd, self->r.lkey, MEMREG_STATE_VALID));
	expect_survived(_metadata, self, true);
}

/*
 * A parked registration and a split next to it: its key moves no data while
 * it is parked (and a COPY does not revalidate it); REGISTER either revives
 * it, with new keys (then it holds the pages mapped there), or pins the
 * memory anew. Either way the old key is unknown afterwards and never moves
 * data.
 */
TEST_F(rv, parked_registration_and_neighbour_split)
{
	size_t len;
	struct memreg_register again;
	struct memreg_stats s;
	struct memreg_query q;
	char *data;

	do_register(_metadata, self, variant->thp, false);
	len = self->reg_len;
	data = malloc(len);
	ASSERT_NE(NULL, data);
	ASSERT_EQ(0, memreg_deregister(self->fd, self->r.lkey));
	ASSERT_EQ(0, mprotect(self->reg + len, PAGE, PROT_READ));
	memset(self->reg, 'm', len);
	memset(data, 'x', len);
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, self->r.lkey, 0, data, len, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->reg, len, 'm'));
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, self->r.lkey, 0, data, len,
				   MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, len, 'x'));
	ASSERT_EQ(0, memreg_register(self->fd, self->reg, len, RW, &again));
	if (again.flags & MEMREG_REGISTER_REVIVED) {
		TH_LOG("revived");
		EXPECT_EQ(MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED, again.flags);
		EXPECT_EQ(self->r.lkey >> 24, again.lkey >> 24);
		EXPECT_NE(self->r.lkey, again.lkey);
		EXPECT_NE(self->r.rkey, again.rkey);
		EXPECT_EQ(self->vmpin + (long)(self->npages * PAGE_KB), vm_pin_kb());
	} else {
		TH_LOG("ended and pinned anew");
		EXPECT_EQ(0, again.flags);
		EXPECT_NE(self->r.lkey >> 24, again.lkey >> 24);
	}
	EXPECT_EQ(-ENOENT, memreg_query(self->fd, self->r.lkey, &q));
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, self->r.lkey, 0, data, len, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->reg, len, 'm'));
	memset(data, 0, len);
	ASSERT_EQ(0, memreg_copy(self->fd, again.lkey, 0, data, len, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, len, 'm'));
	memset(data, 't', len);
	ASSERT_EQ(0, memreg_copy(self->fd, again.lkey, 0, data, len, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->reg, len, 't'));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(0, s.parked);
	EXPECT_EQ(0, s.revalidation_failures);
	free(data);
}

/* ---- Events that take the pages away ---- */

enum end_event { OWN_MUNMAP, OWN_MREMAP, OWN_MPROTECT, OWN_DONTNEED };

/* Makes `ev` happen to the registered range; leaves writable memory there, filled with 'f'. */
static void end_event(struct __test_metadata *_metadata, FIXTURE_DATA(rv) *self,
		      enum end_event ev)
{
	size_t len = self->reg_len;
	char *p, *moved;

	switch (ev) {
	case OWN_MUNMAP:
		ASSERT_EQ(0, munmap(self->reg, len));
		p = mmap(self->reg, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		ASSERT_EQ(self->reg, p);
		break;
	case OWN_MREMAP:
		moved = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		ASSERT_NE(MAP_FAILED, moved);
		p = mremap(self->reg, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, moved);
		ASSERT_EQ(moved, p);
		munmap(moved, len);
		p = mmap(self->reg, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		ASSERT_EQ(self->reg, p);
		break;
	case OWN_MPROTECT:
		ASSERT_EQ(0, mprotect(self->reg, len, PROT_READ));
		ASSERT_EQ(0, mprotect(self->reg, len, PROT_READ | PROT_WRITE));
		break;
	case OWN_DONTNEED:
		ASSERT_EQ(0, madvise(self->reg + 3 * PAGE, PAGE, MADV_DONTNEED));
		break;
	}
	memset(self->reg, 'f', len);
}

/*
 * The registration is over: its key moves nothing into or out of the memory
 * mapped at the address now, the event is counted once (as `cause`, or as
 * `alt` when the split's CLEAR came first), nothing stays pinned, and
 * REGISTER pins what is mapped now.
 */
static void expect_ended(struct __test_metadata *_metadata, FIXTURE_DATA(rv) *self,
			 int cause, int alt)
{
	size_t len = self->reg_len;
	struct memreg_register again;
	struct memreg_stats s;
	struct memreg_query q;
	char *data = malloc(len);
	__u64 sum = 0;
	int i;

	ASSERT_NE(NULL, data);
	memset(data, 'x', len);
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, self->r.lkey, 0, data, len, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->reg, len, 'f'));
	memset(data, 0, len);
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, self->r.lkey, 0, data, len,
				   MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, len, 0));
	EXPECT_EQ(-ENOENT, memreg_query(self->fd, self->r.lkey, &q));
	EXPECT_EQ(-ENOENT, memreg_deregister(self->fd, self->r.lkey));

	ASSERT_EQ(0, mr_wait_pinned(self->fd, 0));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(0, s.registrations);
	for (i = 0; i < MEMREG_INVAL_NR_CAUSES; i++)
		sum += s.invalidations[i];
	EXPECT_EQ(1, sum);
	EXPECT_EQ(1, s.invalidations[cause] + (alt >= 0 ? s.invalidations[alt] : 0));
	if (cause == MEMREG_INVAL_CLEAR) {
		/* Suspended by the CLEAR, never resumed: the page was gone. */
		EXPECT_GE(s.suspensions, 1);
		EXPECT_EQ(0, s.resumptions);
		EXPECT_EQ(1, s.revalidation_failures);
	}
	EXPECT_EQ(0, wait_vm_pin(self->vmpin, 5000));

	ASSERT_EQ(0, memreg_register(self->fd, self->reg, len, RW, &again));
	EXPECT_EQ(0, again.flags);
	EXPECT_NE(self->r.lkey, again.lkey);
	memset(data, 'n', len);
	ASSERT_EQ(0, memreg_copy(self->fd, again.lkey, 0, data, len, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->reg, len, 'n'));
	memset(self->reg, 'o', len);
	ASSERT_EQ(0, memreg_copy(self->fd, again.lkey, 0, data, len, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, len, 'o'));
	free(data);
}

TEST_F(rv, munmap_of_range_ends_registration)
{
	do_register(_metadata, self, variant->thp, false);
	end_event(_metadata, self, OWN_MUNMAP);
	expect_ended(_metadata, self, MEMREG_INVAL_UNMAP, MEMREG_INVAL_CLEAR);
}

TEST_F(rv, mremap_of_range_ends_registration)
{
	do_register(_metadata, self, variant->thp, false);
	end_event(_metadata, self, OWN_MREMAP);
	expect_ended(_metadata, self, MEMREG_INVAL_UNMAP, MEMREG_INVAL_CLEAR);
}

TEST_F(rv, mprotect_of_range_ends_registration)
{
	do_register(_metadata, self, variant->thp, false);
	end_event(_metadata, self, OWN_MPROTECT);
	expect_ended(_metadata, self, MEMREG_INVAL_PROTECTION_VMA, MEMREG_INVAL_CLEAR);
}

/* MADV_DONTNEED of one registered page: suspended, then revalidation fails. */
TEST_F(rv, dontneed_ends_registration)
{
	do_register(_metadata, self, variant->thp, false);
	end_event(_metadata, self, OWN_DONTNEED);
	expect_ended(_metadata, self, MEMREG_INVAL_CLEAR, -1);
}

/* The same, with a REGISTER of the range as the first use: a miss. */
TEST_F(rv, dontneed_then_register_is_a_miss)
{
	size_t len;
	struct memreg_register again;
	struct memreg_stats s;
	char *data;

	do_register(_metadata, self, variant->thp, false);
	len = self->reg_len;
	data = malloc(len);
	ASSERT_NE(NULL, data);
	ASSERT_EQ(0, madvise(self->reg + 3 * PAGE, PAGE, MADV_DONTNEED));
	ASSERT_EQ(0, memreg_register(self->fd, self->reg, len, RW, &again));
	EXPECT_EQ(0, again.flags);
	EXPECT_NE(self->r.lkey, again.lkey);
	/* The new registration holds the pages mapped now, the zeroed one too. */
	memset(data, 'n', len);
	ASSERT_EQ(0, memreg_copy(self->fd, again.lkey, 0, data, len, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->reg, len, 'n'));
	memset(self->reg, 'o', len);
	ASSERT_EQ(0, memreg_copy(self->fd, again.lkey, 0, data, len, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, len, 'o'));
	/* The old key moves nothing. */
	memset(data, 'x', len);
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, self->r.lkey, 0, data, len, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->reg, len, 'o'));
	ASSERT_EQ(0, mr_wait_pinned(self->fd, self->npages));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(1, s.invalidations[MEMREG_INVAL_CLEAR]);
	EXPECT_EQ(1, s.revalidation_failures);
	EXPECT_EQ(0, s.resumptions);
	EXPECT_EQ(2, s.cache_misses);
	EXPECT_EQ(0, wait_vm_pin(self->vmpin + (long)(self->npages * PAGE_KB), 5000));
	free(data);
}

/* With no use at all, the worker finds the page gone and ends it. */
TEST_F(rv, worker_ends_registration_without_use)
{
	struct memreg_stats s;
	char data[64];

	do_register(_metadata, self, variant->thp, false);
	ASSERT_EQ(0, madvise(self->reg + 3 * PAGE, PAGE, MADV_DONTNEED));
	ASSERT_EQ(0, mr_wait_state(self->fd, self->r.lkey, 0));
	ASSERT_EQ(0, mr_wait_pinned(self->fd, 0));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.invalidations[MEMREG_INVAL_CLEAR]);
	EXPECT_EQ(1, s.revalidation_failures);
	EXPECT_EQ(0, s.resumptions);
	EXPECT_EQ(0, wait_vm_pin(self->vmpin, 5000));
	/* Fresh memory at the hole never receives the old key's bytes. */
	memset(self->reg, 'f', self->reg_len);
	memset(data, 'x', sizeof(data));
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, self->r.lkey, 3 * PAGE, data, sizeof(data),
				   MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->reg, self->reg_len, 'f'));
}

TEST_HARNESS_MAIN
