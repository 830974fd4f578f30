// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: the ABI basics.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/memreg.h>

#include "kselftest_harness.h"

FIXTURE(dev)
{
	int fd;
};

FIXTURE_SETUP(dev)
{
	self->fd = open("/dev/memreg", O_RDWR | O_CLOEXEC);
	ASSERT_GE(self->fd, 0);
}

FIXTURE_TEARDOWN(dev)
{
	close(self->fd);
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
	__u32 v;

	EXPECT_EQ(-1, ioctl(self->fd, _IOR(MEMREG_IOC_MAGIC, 0x7f, __u32), &v));
	EXPECT_EQ(ENOTTY, errno);
	/* The right number with the wrong size is a different command. */
	EXPECT_EQ(-1, ioctl(self->fd, _IOR(MEMREG_IOC_MAGIC, 0x00, __u64), &v));
	EXPECT_EQ(ENOTTY, errno);
}

TEST_HARNESS_MAIN
