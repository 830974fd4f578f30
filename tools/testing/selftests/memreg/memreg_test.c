// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: the ABI, and every bad input getting its documented
 * errno while changing nothing.
 */
#include "memreg_util.h"

#include "../kselftest_harness.h"

_Static_assert(sizeof(struct memreg_register) == 80, "ABI size");
_Static_assert(sizeof(struct memreg_revalidate) == 16, "ABI size");
_Static_assert(sizeof(struct memreg_deregister) == 16, "ABI size");
_Static_assert(sizeof(struct memreg_query) == 64, "ABI size");
_Static_assert(sizeof(struct memreg_stats) == 248, "ABI size");
_Static_assert(sizeof(struct memreg_copy) == 48, "ABI size");
_Static_assert(sizeof(struct memreg_global_stats) == 64, "ABI size");
_Static_assert(sizeof(struct memreg_cache_config) == 64, "ABI size");
_Static_assert(sizeof(struct memreg_flush) == 32, "ABI size");
_Static_assert(sizeof(struct memreg_pool_ring) == 40, "ABI size");
_Static_assert(sizeof(struct memreg_pool_ring_class) == 56, "ABI size");
_Static_assert(sizeof(struct memreg_pool_ring_head) == 64, "ABI size");
_Static_assert(sizeof(struct memreg_pool_ring_chunk) == 16, "ABI size");
_Static_assert(MEMREG_ABI_VERSION == 5, "ABI version");
_Static_assert(MEMREG_INVAL_NR_CAUSES == 9 && MEMREG_EVICT_NR_REASONS == 5, "ABI arrays");

FIXTURE(dev)
{
	int fd;
	char *buf;
	long vmpin;
};

FIXTURE_SETUP(dev)
{
	self->fd = memreg_open();
	ASSERT_GE(self->fd, 0);
	self->buf = map_filled(4 * PAGE, 'a');
	ASSERT_NE(NULL, self->buf);
	self->vmpin = vm_pin_kb();
}

FIXTURE_TEARDOWN(dev)
{
	munmap(self->buf, 4 * PAGE);
	close(self->fd);
}

/* Nothing registered, nothing pinned, nothing charged. */
static void assert_untouched(struct __test_metadata *_metadata, int fd, long vmpin)
{
	struct memreg_stats s;

	ASSERT_EQ(0, memreg_stats(fd, &s));
	EXPECT_EQ(0, s.registrations);
	EXPECT_EQ(0, s.pages_pinned);
	EXPECT_EQ(vmpin, vm_pin_kb());
}

TEST_F(dev, version)
{
	__u32 version = 0;

	ASSERT_EQ(0, ioctl(self->fd, MEMREG_IOC_GET_VERSION, &version));
	EXPECT_EQ((__u32)MEMREG_ABI_VERSION, version);
}

TEST_F(dev, version_bad_pointer)
{
	EXPECT_EQ(-1, ioctl(self->fd, MEMREG_IOC_GET_VERSION, (void *)8));
	EXPECT_EQ(EFAULT, errno);
}

TEST_F(dev, unknown_ioctl)
{
	__u64 v = 0;
	char big[256] = { 0 };

	/* Commands are matched on type, number and direction. */
	EXPECT_EQ(-1, ioctl(self->fd, _IOR(MEMREG_IOC_MAGIC, 0x7f, __u32), &v));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, ioctl(self->fd, _IOR(MEMREG_IOC_MAGIC - 1, 0x00, __u32), &v));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, ioctl(self->fd, _IOW(MEMREG_IOC_MAGIC, 0x00, __u32), &v));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, ioctl(self->fd, _IOR(MEMREG_IOC_MAGIC, 0x01, char[72]), big));
	EXPECT_EQ(ENOTTY, errno);
	EXPECT_EQ(-1, ioctl(self->fd, _IOC(_IOC_NONE, MEMREG_IOC_MAGIC, 0x09, 0), big));
	EXPECT_EQ(ENOTTY, errno);
	/* A size below the first one a header published for the command. */
	EXPECT_EQ(-1, ioctl(self->fd, _IOWR(MEMREG_IOC_MAGIC, 0x01, char[48]), big));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, ioctl(self->fd, _IOR(MEMREG_IOC_MAGIC, 0x07, char[56]), big));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, ioctl(self->fd, _IOWR(MEMREG_IOC_MAGIC, 0x09, char[16]), big));
	EXPECT_EQ(EINVAL, errno);
	/* A larger one with a nonzero tail. */
	big[100] = 1;
	EXPECT_EQ(-1, ioctl(self->fd, _IOW(MEMREG_IOC_MAGIC, 0x08, char[128]), big));
	EXPECT_EQ(E2BIG, errno);
	assert_untouched(_metadata, self->fd, self->vmpin);
}

TEST_F(dev, register_bad_arguments)
{
	struct memreg_register r;

	EXPECT_EQ(-EINVAL, memreg_register(self->fd, self->buf, 0, RW, &r));
	EXPECT_EQ(-EINVAL, memreg_register(self->fd, self->buf, PAGE, 0, &r));
	EXPECT_EQ(-EINVAL, memreg_register(self->fd, self->buf, PAGE, 0x10, &r));
	EXPECT_EQ(-EINVAL, memreg_register(self->fd, self->buf, PAGE, RW | 0x80000000U, &r));
	EXPECT_EQ(-E2BIG, memreg_register(self->fd, self->buf, MEMREG_MAX_LENGTH + 1, RW, &r));
	/* Address plus length wraps around. */
	EXPECT_EQ(-EINVAL, memreg_register(self->fd, (void *)(~0UL - 100), 200, RW, &r));

	/* Nonzero input flags. */
	memset(&r, 0, sizeof(r));
	r.addr = (unsigned long)self->buf;
	r.length = PAGE;
	r.access = RW;
	r.flags = MEMREG_REGISTER_CACHED;
	EXPECT_EQ(-1, ioctl(self->fd, MEMREG_IOC_REGISTER, &r));
	EXPECT_EQ(EINVAL, errno);
	r.flags = 0;
	/* The reserved word between slot and generation. */
	r.reserved = 1;
	EXPECT_EQ(-1, ioctl(self->fd, MEMREG_IOC_REGISTER, &r));
	EXPECT_EQ(EINVAL, errno);
	r.reserved = 0;
	EXPECT_EQ(-1, ioctl(self->fd, MEMREG_IOC_REGISTER, (void *)16));
	EXPECT_EQ(EFAULT, errno);

	assert_untouched(_metadata, self->fd, self->vmpin);
}

TEST_F(dev, register_bad_memory)
{
	struct memreg_register r;
	struct memreg_global_stats before, after;
	char *ro;

	ASSERT_EQ(0, mr_global_now(&before));
	/* Kernel addresses. */
	EXPECT_EQ(-EFAULT, memreg_register(self->fd, (void *)0xffff888000000000UL, PAGE, RW, &r));
	EXPECT_EQ(-EFAULT, memreg_register(self->fd, (void *)0xffffffff81000000UL, PAGE, RO, &r));
	/* Unmapped, and partly unmapped ranges. */
	ASSERT_EQ(0, munmap(self->buf + 2 * PAGE, 2 * PAGE));
	EXPECT_EQ(-EFAULT, memreg_register(self->fd, self->buf + 2 * PAGE, PAGE, RW, &r));
	EXPECT_EQ(-EFAULT, memreg_register(self->fd, self->buf, 3 * PAGE, RW, &r));
	EXPECT_EQ(-EFAULT, memreg_register(self->fd, self->buf + PAGE, PAGE + 1, RO, &r));
	/* Write access to read-only memory. */
	ro = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, ro);
	EXPECT_EQ(-EFAULT, memreg_register(self->fd, ro, PAGE, RW, &r));
	munmap(ro, PAGE);

	assert_untouched(_metadata, self->fd, self->vmpin);
	ASSERT_EQ(0, mr_wait_global(before.contexts, before.regions, before.pages_pinned));
	ASSERT_EQ(0, mr_global_now(&after));
	EXPECT_EQ(before.pages_pinned, after.pages_pinned);
}

TEST_F(dev, bad_keys)
{
	struct memreg_register r;
	struct memreg_deregister d = { 0 };
	struct memreg_query q;
	char data[16];

	EXPECT_EQ(-ENOENT, memreg_deregister(self->fd, 0));
	EXPECT_EQ(-ENOENT, memreg_deregister(self->fd, 0x123456789abcdefULL));
	EXPECT_EQ(-ENOENT, memreg_query(self->fd, 0, &q));
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, 42, 0, data, 1, MEMREG_COPY_FROM_REGION));

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, PAGE, RW, &r));
	EXPECT_NE(0, r.lkey);
	EXPECT_NE(r.lkey, r.rkey);
	/* Same sequence number, other random bits: refused. */
	EXPECT_EQ(-ENOENT, memreg_deregister(self->fd, r.lkey ^ 1));
	EXPECT_EQ(-ENOENT, memreg_query(self->fd, r.lkey ^ 0x800000, &q));
	/* The remote key is not a local key. */
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, r.rkey, 0, data, 1, MEMREG_COPY_FROM_REGION));
	/* Reserved word in DEREGISTER. */
	d.key = r.lkey;
	d.reserved = 1;
	EXPECT_EQ(-1, ioctl(self->fd, MEMREG_IOC_DEREGISTER, &d));
	EXPECT_EQ(EINVAL, errno);
	/* Reserved words in QUERY. */
	memset(&q, 0, sizeof(q));
	q.key = r.lkey;
	q.reserved[0] = 7;
	EXPECT_EQ(-1, ioctl(self->fd, MEMREG_IOC_QUERY, &q));
	EXPECT_EQ(EINVAL, errno);
	/* None of that touched the registration. */
	ASSERT_EQ(0, memreg_query(self->fd, r.lkey, &q));
	EXPECT_EQ(1, q.refcount);
	EXPECT_EQ(0, memreg_deregister(self->fd, r.lkey));
	/* Parked (the default): no reference left to drop. */
	EXPECT_EQ(-EINVAL, memreg_deregister(self->fd, r.lkey));
	ASSERT_EQ(0, memreg_query(self->fd, r.lkey, &q));
	EXPECT_EQ(0, q.refcount);
	EXPECT_EQ(MEMREG_STATE_VALID | MEMREG_STATE_PARKED, q.state);
	/* Once it has ended, the key is unknown. */
	ASSERT_EQ(0, memreg_flush(self->fd, NULL));
	EXPECT_EQ(-ENOENT, memreg_deregister(self->fd, r.lkey));
	EXPECT_EQ(-ENOENT, memreg_query(self->fd, r.lkey, &q));

	/* Without parking, the last DEREGISTER ends it: a key is not valid twice. */
	ASSERT_EQ(0, mr_set_parking(self->fd, 0));
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, PAGE, RW, &r));
	EXPECT_EQ(0, memreg_deregister(self->fd, r.lkey));
	EXPECT_EQ(-ENOENT, memreg_deregister(self->fd, r.lkey));
	EXPECT_EQ(-ENOENT, memreg_query(self->fd, r.lkey, &q));
	assert_untouched(_metadata, self->fd, self->vmpin);
}

TEST_F(dev, copy_bad_arguments)
{
	struct memreg_register r, ro;
	struct memreg_copy c;
	char data[64];

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 2 * PAGE, RW, &r));
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 2 * PAGE, PAGE, RO, &ro));

	memset(data, 'z', sizeof(data));
	/* Past the end, and offset plus length wrapping. */
	EXPECT_EQ(-EINVAL, memreg_copy(self->fd, r.lkey, 2 * PAGE - 1, data, 2, MEMREG_COPY_TO_REGION));
	EXPECT_EQ(-EINVAL, memreg_copy(self->fd, r.lkey, 2 * PAGE, data, 1, MEMREG_COPY_FROM_REGION));
	EXPECT_EQ(-EINVAL, memreg_copy(self->fd, r.lkey, ~0ULL, data, 2, MEMREG_COPY_TO_REGION));
	/* Unknown direction, flags, reserved. */
	EXPECT_EQ(-EINVAL, memreg_copy(self->fd, r.lkey, 0, data, 1, 2));
	c = (struct memreg_copy){ .key = r.lkey, .length = 1,
				  .buf = (unsigned long)data, .flags = 1 };
	EXPECT_EQ(-1, ioctl(self->fd, MEMREG_IOC_COPY, &c));
	EXPECT_EQ(EINVAL, errno);
	c.flags = 0;
	c.reserved = 1;
	EXPECT_EQ(-1, ioctl(self->fd, MEMREG_IOC_COPY, &c));
	EXPECT_EQ(EINVAL, errno);
	/* Writing through a read-only registration. */
	EXPECT_EQ(-EACCES, memreg_copy(self->fd, ro.lkey, 0, data, 1, MEMREG_COPY_TO_REGION));
	/* A bad user buffer. */
	EXPECT_EQ(-EFAULT, memreg_copy(self->fd, r.lkey, 0, (void *)8, 16, MEMREG_COPY_TO_REGION));
	EXPECT_EQ(-EFAULT, memreg_copy(self->fd, r.lkey, 0, (void *)8, 16, MEMREG_COPY_FROM_REGION));
	/* None of it wrote anything. */
	EXPECT_TRUE(all_bytes(self->buf, 3 * PAGE, 'a'));
	/* Zero length is a no-op that succeeds. */
	EXPECT_EQ(0, memreg_copy(self->fd, r.lkey, 0, data, 0, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->buf, 3 * PAGE, 'a'));

	EXPECT_EQ(0, memreg_deregister(self->fd, r.lkey));
	EXPECT_EQ(0, memreg_deregister(self->fd, ro.lkey));
}

TEST_F(dev, global_stats)
{
	struct memreg_global_stats g, g2;
	struct memreg_register r;

	ASSERT_EQ(0, memreg_global_stats(self->fd, &g));
	EXPECT_GE(g.contexts, 1);
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 3 * PAGE, RW, &r));
	ASSERT_EQ(0, memreg_global_stats(self->fd, &g2));
	EXPECT_EQ(g.regions + 1, g2.regions);
	EXPECT_EQ(g.pages_pinned + 3, g2.pages_pinned);
	/* Parked, it is still pinned and charged; FLUSH ends it. */
	EXPECT_EQ(0, memreg_deregister(self->fd, r.lkey));
	ASSERT_EQ(0, memreg_global_stats(self->fd, &g));
	EXPECT_EQ(g2.regions, g.regions);
	EXPECT_EQ(g2.pages_pinned, g.pages_pinned);
	ASSERT_EQ(0, memreg_flush(self->fd, NULL));
	ASSERT_EQ(0, memreg_global_stats(self->fd, &g));
	EXPECT_EQ(0, g.pages_pinned);
}

/* Without state words mapped, REGISTER reports no slot and generation 0. */
TEST_F(dev, register_reports_no_slot)
{
	struct memreg_register r, hit, revived;

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 2 * PAGE, RW, &r));
	EXPECT_EQ(0, r.flags);
	EXPECT_EQ(MEMREG_NO_SLOT, r.slot);
	EXPECT_EQ(0, r.generation);
	EXPECT_EQ(0, r.reserved);
	/* Output fields left over from an earlier call are ignored. */
	hit = r;
	hit.flags = 0;
	hit.length = PAGE;
	hit.slot = 7;
	hit.generation = 12;
	ASSERT_EQ(0, ioctl(self->fd, MEMREG_IOC_REGISTER, &hit));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, hit.flags);
	EXPECT_EQ(r.lkey, hit.lkey);
	EXPECT_EQ(MEMREG_NO_SLOT, hit.slot);
	EXPECT_EQ(0, hit.generation);
	EXPECT_EQ(0, memreg_deregister(self->fd, r.lkey));
	EXPECT_EQ(0, memreg_deregister(self->fd, r.lkey));
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, PAGE, RW, &revived));
	EXPECT_EQ(MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED, revived.flags);
	/* A revival hands out new keys: the same sequence, new random bits. */
	EXPECT_NE(r.lkey, revived.lkey);
	EXPECT_EQ(r.lkey >> 24, revived.lkey >> 24);
	EXPECT_EQ(MEMREG_NO_SLOT, revived.slot);
	EXPECT_EQ(0, revived.generation);
	EXPECT_EQ(-ENOENT, memreg_deregister(self->fd, r.lkey));
	EXPECT_EQ(0, memreg_deregister(self->fd, revived.lkey));
	ASSERT_EQ(0, memreg_flush(self->fd, NULL));
	assert_untouched(_metadata, self->fd, self->vmpin);
}

TEST_HARNESS_MAIN
