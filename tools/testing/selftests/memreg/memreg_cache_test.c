// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: the registration cache, reference counts, overlaps,
 * translation entries and COPY through them.
 */
#include "memreg_util.h"

#include "../kselftest_harness.h"

#define NPAGES 8

FIXTURE(cache)
{
	int fd;
	char *buf;
};

FIXTURE_SETUP(cache)
{
	self->fd = memreg_open();
	ASSERT_GE(self->fd, 0);
	self->buf = map_filled(NPAGES * PAGE, 'a');
	ASSERT_NE(NULL, self->buf);
}

FIXTURE_TEARDOWN(cache)
{
	close(self->fd);
	munmap(self->buf, NPAGES * PAGE);
}

/* Without parking: the last DEREGISTER ends the registration. */
TEST_F(cache, miss_then_hit)
{
	struct memreg_register a, b;
	struct memreg_stats s;
	struct memreg_query q;
	long vmpin = vm_pin_kb();

	ASSERT_EQ(0, mr_set_parking(self->fd, 0));

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, NPAGES * PAGE, RW, &a));
	EXPECT_EQ(0, a.flags);
	EXPECT_EQ(vmpin + NPAGES * PAGE_KB, vm_pin_kb());

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, NPAGES * PAGE, RW, &b));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, b.flags);
	EXPECT_EQ(a.lkey, b.lkey);
	EXPECT_EQ(a.rkey, b.rkey);
	/* A hit pins nothing more. */
	EXPECT_EQ(vmpin + NPAGES * PAGE_KB, vm_pin_kb());

	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(1, s.cache_hits);
	EXPECT_EQ(1, s.cache_misses);
	EXPECT_EQ(NPAGES, s.pages_pinned);
	EXPECT_EQ(NPAGES, s.pages_pinned_peak);

	ASSERT_EQ(0, memreg_query(self->fd, a.lkey, &q));
	EXPECT_EQ(2, q.refcount);
	EXPECT_TRUE(q.state & MEMREG_STATE_VALID);
	EXPECT_FALSE(q.state & (MEMREG_STATE_PARKED | MEMREG_STATE_SUSPENDED));
	EXPECT_EQ((unsigned long)self->buf, q.addr);
	EXPECT_EQ(NPAGES * PAGE, q.length);
	EXPECT_EQ(RW, q.access);
	EXPECT_EQ(NPAGES, q.pages);
	EXPECT_GE(q.extents, 1);
	EXPECT_LE(q.extents, NPAGES);

	/* The first DEREGISTER drops a reference, the second ends it. */
	EXPECT_EQ(0, memreg_deregister(self->fd, a.lkey));
	ASSERT_EQ(0, memreg_query(self->fd, a.lkey, &q));
	EXPECT_EQ(1, q.refcount);
	EXPECT_EQ(vmpin + NPAGES * PAGE_KB, vm_pin_kb());
	EXPECT_EQ(0, memreg_deregister(self->fd, b.lkey));
	EXPECT_EQ(-ENOENT, memreg_query(self->fd, a.lkey, &q));
	EXPECT_EQ(vmpin, vm_pin_kb());

	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(0, s.registrations);
	EXPECT_EQ(1, s.deregistrations);
	EXPECT_EQ(0, s.parks);
	EXPECT_EQ(0, s.parked);
	EXPECT_EQ(0, s.pages_pinned);
	EXPECT_EQ(NPAGES, s.pages_pinned_peak);

	/* Registering again is a miss with new keys. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, NPAGES * PAGE, RW, &b));
	EXPECT_EQ(0, b.flags);
	EXPECT_NE(a.lkey, b.lkey);
}

/*
 * With parking (the default): the last DEREGISTER parks, ending the keys for
 * data, and REGISTER revives the registration with new keys.
 */
TEST_F(cache, miss_park_revive)
{
	struct memreg_register a, b;
	struct memreg_stats s;
	struct memreg_query q;
	long vmpin = vm_pin_kb();
	char data[64];

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, NPAGES * PAGE, RW, &a));
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, NPAGES * PAGE, RW, &b));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, b.flags);
	EXPECT_EQ(0, memreg_deregister(self->fd, a.lkey));
	EXPECT_EQ(0, memreg_deregister(self->fd, a.lkey));
	/* Parked: still there, pinned and charged, with no reference. */
	ASSERT_EQ(0, memreg_query(self->fd, a.lkey, &q));
	EXPECT_EQ(0, q.refcount);
	EXPECT_EQ(MEMREG_STATE_VALID | MEMREG_STATE_PARKED, q.state);
	EXPECT_EQ(NPAGES, q.pages);
	EXPECT_EQ(vmpin + NPAGES * PAGE_KB, vm_pin_kb());
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(1, s.parked);
	EXPECT_EQ(NPAGES, s.parked_pages);
	EXPECT_EQ(1, s.parks);
	EXPECT_EQ(0, s.deregistrations);
	EXPECT_EQ(NPAGES, s.pages_pinned);
	/* Its key moves no data while it is parked, either way. */
	memset(data, 'z', sizeof(data));
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, a.lkey, 0, data, sizeof(data),
				   MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->buf, NPAGES * PAGE, 'a'));
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, a.lkey, 0, data, sizeof(data),
				   MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, sizeof(data), 'z'));
	/* And it has no reference to drop. */
	EXPECT_EQ(-EINVAL, memreg_deregister(self->fd, a.lkey));

	/*
	 * A covered range revives it, nothing pinned again, with new keys: the
	 * local key keeps its sequence but not its random bits, the remote key
	 * is new. The keys carry the registration's rights, wider than asked.
	 */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + PAGE, PAGE, RO, &b));
	EXPECT_EQ(MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED, b.flags);
	EXPECT_EQ(a.lkey >> 24, b.lkey >> 24);
	EXPECT_NE(a.lkey, b.lkey);
	EXPECT_NE(a.rkey, b.rkey);
	EXPECT_EQ(RW, b.access);
	EXPECT_EQ((unsigned long)self->buf, b.region_addr);
	EXPECT_EQ(NPAGES * PAGE, b.region_length);
	EXPECT_EQ(vmpin + NPAGES * PAGE_KB, vm_pin_kb());
	ASSERT_EQ(0, memreg_query(self->fd, b.lkey, &q));
	EXPECT_EQ(1, q.refcount);
	EXPECT_EQ(MEMREG_STATE_VALID, q.state);
	EXPECT_EQ(RW, q.access);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.revives);
	EXPECT_EQ(1, s.cache_hits);
	EXPECT_EQ(1, s.cache_misses);
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(0, s.parked);
	EXPECT_EQ(0, s.parked_pages);
	EXPECT_EQ(NPAGES, s.pages_pinned);

	/* The old local key is unknown now; the new one moves data. */
	EXPECT_EQ(-ENOENT, memreg_query(self->fd, a.lkey, &q));
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, a.lkey, 0, data, sizeof(data),
				   MEMREG_COPY_TO_REGION));
	EXPECT_EQ(-ENOENT, memreg_deregister(self->fd, a.lkey));
	EXPECT_TRUE(all_bytes(self->buf, NPAGES * PAGE, 'a'));
	EXPECT_EQ(0, memreg_copy(self->fd, b.lkey, PAGE, data, sizeof(data), MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->buf + PAGE, sizeof(data), 'z'));
	EXPECT_TRUE(all_bytes(self->buf, PAGE, 'a'));
	EXPECT_TRUE(all_bytes(self->buf + PAGE + sizeof(data), (NPAGES - 1) * PAGE - sizeof(data),
			      'a'));
	ASSERT_EQ(0, memreg_query(self->fd, b.lkey, &q));
	EXPECT_EQ(1, q.refcount);
}

TEST_F(cache, covered_subrange_hits)
{
	struct memreg_register a, b, c;

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, NPAGES * PAGE, RW, &a));
	EXPECT_EQ((unsigned long)self->buf, a.region_addr);
	EXPECT_EQ(NPAGES * PAGE, a.region_length);
	/* Unaligned, inside: a hit, which names the covering registration. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + PAGE + 100, 2 * PAGE, RO, &b));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, b.flags);
	EXPECT_EQ(a.lkey, b.lkey);
	EXPECT_EQ((unsigned long)self->buf, b.region_addr);
	EXPECT_EQ(NPAGES * PAGE, b.region_length);
	/* Output fields left over from a previous call are ignored. */
	b.flags = 0;
	b.access = RO;
	ASSERT_EQ(0, ioctl(self->fd, MEMREG_IOC_REGISTER, &b));
	EXPECT_EQ(a.lkey, b.lkey);
	/* The very last byte: a hit. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + NPAGES * PAGE - 1, 1, RW, &c));
	EXPECT_EQ(a.lkey, c.lkey);
}

TEST_F(cache, wider_access_misses)
{
	struct memreg_register ro, rw, again;
	struct memreg_stats s;

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 2 * PAGE, RO, &ro));
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 2 * PAGE, RW, &rw));
	EXPECT_EQ(0, rw.flags);
	EXPECT_NE(ro.lkey, rw.lkey);
	/* Read-only is served by the read-write registration or the read-only one. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 2 * PAGE, RO, &again));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, again.flags);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(2, s.registrations);
	EXPECT_EQ(4, s.pages_pinned);
	/* Remote write access is wider still. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 2 * PAGE,
				 RW | MEMREG_ACCESS_REMOTE_WRITE, &again));
	EXPECT_EQ(0, again.flags);
}

TEST_F(cache, partial_overlap_is_a_new_registration)
{
	struct memreg_register a, b, c;
	struct memreg_stats s;

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 4 * PAGE, RW, &a));
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 2 * PAGE, 4 * PAGE, RW, &b));
	EXPECT_EQ(0, b.flags);
	EXPECT_NE(a.lkey, b.lkey);
	/* Spanning both is covered by neither. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + PAGE, 4 * PAGE, RW, &c));
	EXPECT_EQ(0, c.flags);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(3, s.registrations);
	EXPECT_EQ(12, s.pages_pinned);
	/* Ending one leaves the others intact. */
	EXPECT_EQ(0, memreg_deregister(self->fd, b.lkey));
	ASSERT_EQ(0, memreg_flush(self->fd, NULL));
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + PAGE, PAGE, RW, &b));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, b.flags);
	EXPECT_TRUE(b.lkey == a.lkey || b.lkey == c.lkey);
}

TEST_F(cache, copy_moves_data_both_ways)
{
	struct memreg_register r;
	char *data = malloc(NPAGES * PAGE);
	size_t i;

	ASSERT_NE(NULL, data);
	/* An unaligned registration; copies cross page boundaries. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 10, NPAGES * PAGE - 20, RW, &r));
	for (i = 0; i < NPAGES * PAGE; i++)
		data[i] = (char)(i * 7 + 1);
	ASSERT_EQ(0, memreg_copy(self->fd, r.lkey, 100, data, 3 * PAGE + 5, MEMREG_COPY_TO_REGION));
	EXPECT_EQ(0, memcmp(self->buf + 110, data, 3 * PAGE + 5));
	EXPECT_TRUE(all_bytes(self->buf, 110, 'a'));
	EXPECT_TRUE(all_bytes(self->buf + 110 + 3 * PAGE + 5, NPAGES * PAGE - 115 - 3 * PAGE, 'a'));

	/* The process writes, the copy reads what it wrote. */
	memset(self->buf + 5 * PAGE, 'q', PAGE);
	memset(data, 0, NPAGES * PAGE);
	ASSERT_EQ(0, memreg_copy(self->fd, r.lkey, 5 * PAGE - 10, data, PAGE, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, PAGE, 'q'));

	/* A whole-region copy larger than the kernel's bounce chunk. */
	ASSERT_EQ(0, memreg_copy(self->fd, r.lkey, 0, data, NPAGES * PAGE - 20, MEMREG_COPY_FROM_REGION));
	EXPECT_EQ(0, memcmp(data, self->buf + 10, NPAGES * PAGE - 20));
	free(data);
}

TEST_F(cache, read_only_registration_reads)
{
	struct memreg_register r;
	char out[32];

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, PAGE, RO, &r));
	EXPECT_EQ(0, memreg_copy(self->fd, r.lkey, 7, out, sizeof(out), MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(out, sizeof(out), 'a'));
}

/* A transparent huge page is one translation entry, not one per page. */
TEST(thp_gives_one_extent)
{
	size_t huge = thp_size();
	__u64 pages = huge / PAGE;
	struct memreg_register r;
	struct memreg_query q;
	char *raw, *p;
	int fd = memreg_open();

	ASSERT_GE(fd, 0);
	raw = mmap(NULL, 2 * huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, raw);
	p = (char *)(((unsigned long)raw + huge - 1) & ~(huge - 1));
	ASSERT_EQ(0, madvise(p, huge, MADV_HUGEPAGE));
	memset(p, 'h', huge);

	ASSERT_EQ(0, memreg_register(fd, p, huge, RW, &r));
	ASSERT_EQ(0, memreg_query(fd, r.lkey, &q));
	EXPECT_EQ(pages, q.pages);
	if (q.extents != 1) {
		/* Physically contiguous or not, coalescing never makes more extents than pages. */
		EXPECT_LE(q.extents, pages);
		SKIP(goto out, "no THP formed (%u extents)", q.extents);
	}
	EXPECT_EQ(1, q.extents);
out:
	close(fd);
	munmap(raw, 2 * huge);
}

/* Closing the file ends every registration and uncharges everything. */
TEST(close_releases_everything)
{
	struct memreg_global_stats before;
	struct memreg_register r;
	long vmpin = vm_pin_kb();
	char *buf = map_filled(16 * PAGE, 'x');
	int fd, i;

	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, mr_global_now(&before));
	fd = memreg_open();
	ASSERT_GE(fd, 0);
	for (i = 0; i < 16; i++)
		ASSERT_EQ(0, memreg_register(fd, buf + i * PAGE, PAGE, RW, &r));
	ASSERT_EQ(0, memreg_register(fd, buf, 16 * PAGE, RO, &r));
	EXPECT_EQ(vmpin + 32 * PAGE_KB, vm_pin_kb());
	close(fd);
	EXPECT_EQ(vmpin, vm_pin_kb());
	ASSERT_EQ(0, mr_wait_global(before.contexts, before.regions, before.pages_pinned));
	munmap(buf, 16 * PAGE);
}

TEST_HARNESS_MAIN
