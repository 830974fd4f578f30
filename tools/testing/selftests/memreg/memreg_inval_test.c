// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: a registration dies the moment the memory under it
 * changes. For each cause: after the event, fresh memory mapped at the same
 * address is neither read nor written through the old key, the old key is
 * gone, the cause is counted, the pages are unpinned, and registering again
 * pins the new pages and data lands there. The same for a parked
 * registration (parking is on, the default, throughout).
 *
 * A CLEAR suspends a registration and its next use revalidates it (a parked
 * one, whose key moves no data, is revalidated by the context's deferred work
 * shortly after): after MADV_DONTNEED the page is gone and it ends. MADV_FREE
 * leaves the pages mapped (they are pinned, and written again), so
 * revalidation may find them and resume it: then data must reach the memory
 * mapped at the address.
 * memreg_revalidate_test.c covers the events that leave the pages in place.
 */
#include <stdbool.h>

#include "memreg_util.h"

#include "../kselftest_harness.h"

#define NPAGES 4
#define LEN (NPAGES * PAGE)

enum event { EV_MUNMAP, EV_PARTIAL_MUNMAP, EV_MPROTECT, EV_DONTNEED, EV_FREE, EV_MREMAP };

FIXTURE(inval)
{
	int fd;
	char *buf;
};

FIXTURE_VARIANT(inval)
{
	enum event event;
	int cause;
	/* The pages stay mapped: revalidation may keep the registration. */
	bool may_survive;
};

FIXTURE_VARIANT_ADD(inval, munmap) { .event = EV_MUNMAP, .cause = MEMREG_INVAL_UNMAP };
FIXTURE_VARIANT_ADD(inval, partial_munmap) {
	.event = EV_PARTIAL_MUNMAP, .cause = MEMREG_INVAL_UNMAP };
FIXTURE_VARIANT_ADD(inval, mprotect_read_only) {
	.event = EV_MPROTECT, .cause = MEMREG_INVAL_PROTECTION_VMA };
FIXTURE_VARIANT_ADD(inval, madvise_dontneed) {
	.event = EV_DONTNEED, .cause = MEMREG_INVAL_CLEAR };
FIXTURE_VARIANT_ADD(inval, madvise_free) {
	.event = EV_FREE, .cause = MEMREG_INVAL_CLEAR, .may_survive = true };
FIXTURE_VARIANT_ADD(inval, mremap) { .event = EV_MREMAP, .cause = MEMREG_INVAL_UNMAP };

FIXTURE_SETUP(inval)
{
	self->fd = memreg_open();
	ASSERT_GE(self->fd, 0);
	self->buf = map_filled(LEN, 'a');
	ASSERT_NE(NULL, self->buf);
}

FIXTURE_TEARDOWN(inval)
{
	close(self->fd);
	munmap(self->buf, LEN);
}

/*
 * Data moves between `key`'s registration of LEN bytes and the memory mapped
 * at `buf`, both ways: the registration holds the pages mapped there.
 */
static void expect_same_pages(struct __test_metadata *_metadata, int fd, __u64 key, char *buf)
{
	struct memreg_query q;
	char data[LEN];

	memset(buf, 'm', LEN);
	memset(data, 0, sizeof(data));
	ASSERT_EQ(0, memreg_copy(fd, key, 0, data, LEN, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, LEN, 'm'));
	memset(data, 'n', sizeof(data));
	ASSERT_EQ(0, memreg_copy(fd, key, 0, data, LEN, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(buf, LEN, 'n'));
	ASSERT_EQ(0, memreg_query(fd, key, &q));
	EXPECT_TRUE(q.state & MEMREG_STATE_VALID);
	EXPECT_FALSE(q.state & MEMREG_STATE_SUSPENDED);
}

/* Makes the event happen and leaves fresh, writable memory filled with 'b'. */
static void do_event(struct __test_metadata *_metadata, char *buf, enum event ev)
{
	char *p, *moved;

	switch (ev) {
	case EV_MUNMAP:
		ASSERT_EQ(0, munmap(buf, LEN));
		p = mmap(buf, LEN, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		ASSERT_EQ(buf, p);
		break;
	case EV_PARTIAL_MUNMAP:
		ASSERT_EQ(0, munmap(buf + PAGE, PAGE));
		p = mmap(buf + PAGE, PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		ASSERT_EQ(buf + PAGE, p);
		break;
	case EV_MPROTECT:
		ASSERT_EQ(0, mprotect(buf, LEN, PROT_READ));
		ASSERT_EQ(0, mprotect(buf, LEN, PROT_READ | PROT_WRITE));
		break;
	case EV_DONTNEED:
		ASSERT_EQ(0, madvise(buf + 2 * PAGE, PAGE, MADV_DONTNEED));
		break;
	case EV_FREE:
		ASSERT_EQ(0, madvise(buf, LEN, MADV_FREE));
		break;
	case EV_MREMAP:
		/* Move the pages away, then map fresh memory where they were. */
		moved = mmap(NULL, LEN, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		ASSERT_NE(MAP_FAILED, moved);
		p = mremap(buf, LEN, LEN, MREMAP_MAYMOVE | MREMAP_FIXED, moved);
		ASSERT_EQ(moved, p);
		munmap(moved, LEN);
		p = mmap(buf, LEN, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		ASSERT_EQ(buf, p);
		break;
	}
	memset(buf, 'b', LEN);
}

TEST_F(inval, stale_key_never_reaches_new_memory)
{
	struct memreg_register r, again;
	struct memreg_stats s;
	struct memreg_query q;
	char data[LEN];
	long vmpin = vm_pin_kb();
	int i, err;

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, LEN, RW, &r));
	EXPECT_EQ(vmpin + NPAGES * PAGE_KB, vm_pin_kb());

	do_event(_metadata, self->buf, variant->event);

	/* The old key moves no data: not into the new pages... */
	memset(data, 'c', sizeof(data));
	err = memreg_copy(self->fd, r.lkey, 0, data, LEN, MEMREG_COPY_TO_REGION);
	if (variant->may_survive && !err) {
		/* Revalidated: its pages are the ones mapped at the address. */
		TH_LOG("the registration survived (revalidated)");
		EXPECT_TRUE(all_bytes(self->buf, LEN, 'c'));
		expect_same_pages(_metadata, self->fd, r.lkey, self->buf);
		ASSERT_EQ(0, memreg_stats(self->fd, &s));
		for (i = 0; i < MEMREG_INVAL_NR_CAUSES; i++)
			EXPECT_EQ(0, s.invalidations[i]);
		EXPECT_EQ(0, s.revalidation_failures);
		EXPECT_EQ(vmpin + NPAGES * PAGE_KB, vm_pin_kb());
		return;
	}
	EXPECT_EQ(-ENOENT, err);
	EXPECT_TRUE(all_bytes(self->buf, LEN, 'b'));
	/* ...and nothing out of the old ones. */
	memset(data, 0, sizeof(data));
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, r.lkey, 0, data, LEN, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, LEN, 0));
	EXPECT_EQ(-ENOENT, memreg_query(self->fd, r.lkey, &q));
	EXPECT_EQ(-ENOENT, memreg_deregister(self->fd, r.lkey));

	/* Counted by cause, and the pages are unpinned (by deferred work). */
	ASSERT_EQ(0, mr_wait_pinned(self->fd, 0));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(0, s.registrations);
	EXPECT_EQ(0, s.deregistrations);
	for (i = 0; i < MEMREG_INVAL_NR_CAUSES; i++)
		EXPECT_EQ(i == variant->cause ? 1 : 0, s.invalidations[i]);
	EXPECT_EQ(0, wait_vm_pin(vmpin, 5000));

	/* Registering again pins the new pages: data lands there. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, LEN, RW, &again));
	EXPECT_EQ(0, again.flags);
	EXPECT_NE(r.lkey, again.lkey);
	memset(data, 'd', sizeof(data));
	ASSERT_EQ(0, memreg_copy(self->fd, again.lkey, 0, data, LEN, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->buf, LEN, 'd'));
	memset(self->buf + PAGE, 'e', PAGE);
	ASSERT_EQ(0, memreg_copy(self->fd, again.lkey, PAGE, data, PAGE, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, PAGE, 'e'));
}

/* The cache never returns a registration the memory changed under. */
TEST_F(inval, cache_forgets_invalidated_registration)
{
	struct memreg_register r, again;

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, LEN, RW, &r));
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, PAGE, RW, &again));
	EXPECT_EQ(r.lkey, again.lkey);
	do_event(_metadata, self->buf, variant->event);
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, PAGE, RW, &again));
	if (variant->may_survive && again.lkey == r.lkey) {
		TH_LOG("the registration survived (revalidated)");
		EXPECT_EQ(MEMREG_REGISTER_CACHED, again.flags);
		expect_same_pages(_metadata, self->fd, r.lkey, self->buf);
		return;
	}
	EXPECT_EQ(0, again.flags);
	EXPECT_NE(r.lkey, again.lkey);
}

/*
 * Waits (at most 5 s) until a parked registration is no longer suspended:
 * an event that ends it does so at once, and the context's deferred work
 * revalidates one that a CLEAR suspended shortly after. Returns 0 once it is
 * parked and valid, -ENOENT once it ended, -ETIMEDOUT otherwise.
 */
static int wait_parked_settled(int fd, __u64 key)
{
	struct memreg_query q;
	int i, ret;

	for (i = 0; i < 500; i++) {
		ret = memreg_query(fd, key, &q);
		if (ret)
			return ret;
		if (q.state == (MEMREG_STATE_VALID | MEMREG_STATE_PARKED))
			return 0;
		usleep(10000);
	}
	return -ETIMEDOUT;
}

/*
 * The same with a parked registration. Its key moves no data at all, before
 * or after the event: parking ended it for data. The event ends it (or, for
 * an event that leaves the pages, the revalidation by the context's deferred
 * work may keep it parked), and REGISTER then pins the new pages instead of
 * reviving it; a revival of one that was kept hands out new keys, which
 * reach the memory mapped at the address.
 */
TEST_F(inval, parked_registration_never_reaches_new_memory)
{
	struct memreg_register r, again;
	struct memreg_stats s;
	struct memreg_query q;
	char data[LEN];
	long vmpin = vm_pin_kb();
	int i, err;

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, LEN, RW, &r));
	ASSERT_EQ(0, memreg_deregister(self->fd, r.lkey));
	ASSERT_EQ(0, memreg_query(self->fd, r.lkey, &q));
	ASSERT_EQ(MEMREG_STATE_VALID | MEMREG_STATE_PARKED, q.state);
	EXPECT_EQ(vmpin + NPAGES * PAGE_KB, vm_pin_kb());

	do_event(_metadata, self->buf, variant->event);

	/* The parked key moves no data, into the new pages or out of the old ones. */
	memset(data, 'c', sizeof(data));
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, r.lkey, 0, data, LEN, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->buf, LEN, 'b'));
	memset(data, 0, sizeof(data));
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, r.lkey, 0, data, LEN, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, LEN, 0));

	err = wait_parked_settled(self->fd, r.lkey);
	if (variant->may_survive && !err) {
		/* Revalidated: its pages are the ones mapped at the address. */
		TH_LOG("the parked registration survived (revalidated)");
		EXPECT_TRUE(all_bytes(self->buf, LEN, 'b'));
		ASSERT_EQ(0, memreg_register(self->fd, self->buf, LEN, RW, &again));
		EXPECT_EQ(MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED, again.flags);
		EXPECT_EQ(r.lkey >> 24, again.lkey >> 24);
		EXPECT_NE(r.lkey, again.lkey);
		/* The old key is unknown now and still moves nothing. */
		EXPECT_EQ(-ENOENT, memreg_query(self->fd, r.lkey, &q));
		memset(data, 'c', sizeof(data));
		EXPECT_EQ(-ENOENT, memreg_copy(self->fd, r.lkey, 0, data, LEN,
					   MEMREG_COPY_TO_REGION));
		EXPECT_TRUE(all_bytes(self->buf, LEN, 'b'));
		expect_same_pages(_metadata, self->fd, again.lkey, self->buf);
		ASSERT_EQ(0, memreg_stats(self->fd, &s));
		for (i = 0; i < MEMREG_INVAL_NR_CAUSES; i++)
			EXPECT_EQ(0, s.invalidations[i]);
		EXPECT_EQ(0, s.revalidation_failures);
		EXPECT_EQ(1, s.revives);
		EXPECT_EQ(vmpin + NPAGES * PAGE_KB, vm_pin_kb());
		return;
	}
	EXPECT_EQ(-ENOENT, err);
	EXPECT_TRUE(all_bytes(self->buf, LEN, 'b'));
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, r.lkey, 0, data, LEN, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, LEN, 0));
	EXPECT_EQ(-ENOENT, memreg_query(self->fd, r.lkey, &q));
	EXPECT_EQ(-ENOENT, memreg_deregister(self->fd, r.lkey));

	/*
	 * Counted as an invalidation, not an eviction; nothing parked or pinned
	 * (the pages are unpinned, then uncharged, by deferred work).
	 */
	ASSERT_EQ(0, mr_wait_pinned(self->fd, 0));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(0, s.registrations);
	EXPECT_EQ(0, s.parked);
	EXPECT_EQ(0, s.parked_pages);
	EXPECT_EQ(1, s.parks);
	EXPECT_EQ(0, s.deregistrations);
	EXPECT_EQ(0, s.revives);
	for (i = 0; i < MEMREG_INVAL_NR_CAUSES; i++)
		EXPECT_EQ(i == variant->cause ? 1 : 0, s.invalidations[i]);
	for (i = 0; i < MEMREG_EVICT_NR_REASONS; i++)
		EXPECT_EQ(0, s.evictions[i]);
	EXPECT_EQ(0, wait_vm_pin(vmpin, 5000));

	/* Not revived: a miss that pins the new pages. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, LEN, RW, &again));
	EXPECT_EQ(0, again.flags);
	EXPECT_NE(r.lkey >> 24, again.lkey >> 24);
	expect_same_pages(_metadata, self->fd, again.lkey, self->buf);
}

/* Changes next to a registration leave it alone. */
TEST(unrelated_changes_do_not_invalidate)
{
	struct memreg_register r;
	struct memreg_stats s;
	struct memreg_query q;
	char *a, *b;
	int fd = memreg_open();
	int i;

	ASSERT_GE(fd, 0);
	/* Two mappings side by side; the registration covers only the first. */
	a = mmap(NULL, 2 * LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, a);
	memset(a, 'a', 2 * LEN);
	b = a + LEN;
	ASSERT_EQ(0, memreg_register(fd, a, LEN, RW, &r));
	ASSERT_EQ(0, madvise(b, LEN, MADV_DONTNEED));
	ASSERT_EQ(0, mprotect(b, LEN, PROT_READ));
	ASSERT_EQ(0, munmap(b, LEN));
	/* Reading the memory, or writing it, changes no mapping either. */
	memset(a, 'z', LEN);
	ASSERT_EQ(0, memreg_query(fd, r.lkey, &q));
	EXPECT_TRUE(q.state & MEMREG_STATE_VALID);
	EXPECT_EQ(1, q.refcount);
	ASSERT_EQ(0, memreg_stats(fd, &s));
	for (i = 0; i < MEMREG_INVAL_NR_CAUSES; i++)
		EXPECT_EQ(0, s.invalidations[i]);
	close(fd);
	munmap(a, LEN);
}

TEST_HARNESS_MAIN
