/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Pools through the ioctls, for the pool kselftests: a pool, its mapping
 * and, when a test maps them, its free-buffer rings.
 */
#ifndef MEMREG_POOL_UTIL_H
#define MEMREG_POOL_UTIL_H

#include "memreg_util.h"

#define PTR(p)		((__u64)(unsigned long)(p))

static inline struct memreg_pool_class cl(__u32 size, __u32 max, __u32 low, __u32 high,
					  __u32 initial)
{
	return (struct memreg_pool_class){ .buffer_size = size, .max_buffers = max,
					   .low_watermark = low, .high_watermark = high,
					   .initial = initial };
}

/* A pool, its mapping and, once mapped, its rings' mapping. */
struct pl {
	int fd;
	__u32 pool;
	__u32 nr;
	char *map;
	size_t bytes;
	struct memreg_pool_class cl[MEMREG_POOL_MAX_CLASSES];
	char *ring;
	size_t ring_bytes;
	struct memreg_pool_ring_class rc[MEMREG_POOL_MAX_CLASSES];
};

/* POOL_CREATE on `fd`; fills `p` (not mapped). 0 or -errno. */
static inline int pl_create(struct pl *p, int fd, const struct memreg_pool_class *c, __u32 nr,
			    __u32 access, __u32 leak_ms, __u32 shrink_ms)
{
	struct memreg_pool_create pc = { .nr_classes = nr, .access = access,
					 .leak_timeout_ms = leak_ms, .shrink_ms = shrink_ms };

	memset(p, 0, sizeof(*p));
	p->fd = fd;
	p->nr = nr;
	if (nr <= MEMREG_POOL_MAX_CLASSES) {
		memcpy(p->cl, c, nr * sizeof(*c));
		pc.classes = PTR(p->cl);
	} else {
		/* Refused anyway: the caller's array as it is. */
		pc.classes = PTR(c);
	}
	if (ioctl(fd, MEMREG_IOC_POOL_CREATE, &pc))
		return -errno;
	p->pool = pc.pool;
	p->bytes = pc.map_bytes;
	return 0;
}

/* Maps the pool; 0 or -errno. */
static inline int pl_map(struct pl *p)
{
	void *m = mmap(NULL, p->bytes, PROT_READ | PROT_WRITE, MAP_SHARED, p->fd,
		       MEMREG_MMAP_POOL(p->pool));

	if (m == MAP_FAILED)
		return -errno;
	p->map = m;
	return 0;
}

/*
 * Opens a file, creates a pool with parking off and, when `map`, maps it;
 * 0 or -errno.
 */
static inline int pl_setup(struct pl *p, const struct memreg_pool_class *c, __u32 nr,
			   __u32 access, __u32 leak_ms, __u32 shrink_ms, bool map)
{
	int fd = memreg_open(), ret;

	memset(p, 0, sizeof(*p));
	p->fd = -1;
	if (fd < 0)
		return -errno;
	ret = mr_set_parking(fd, 0);
	if (!ret)
		ret = pl_create(p, fd, c, nr, access, leak_ms, shrink_ms);
	if (!ret && map)
		ret = pl_map(p);
	if (ret) {
		close(fd);
		p->fd = -1;
	}
	return ret;
}

/* Unmaps the rings and the pool and closes the file. */
static inline void pl_close(struct pl *p)
{
	if (p->ring)
		munmap(p->ring, p->ring_bytes);
	if (p->map)
		munmap(p->map, p->bytes);
	if (p->fd >= 0)
		close(p->fd);
	p->ring = NULL;
	p->map = NULL;
	p->fd = -1;
}

/* POOL_ALLOC; the number of buffers given, or -errno. */
static inline int pl_alloc(struct pl *p, __u64 size, __u32 count, __u32 flags,
			   __u32 timeout_ms, struct memreg_pool_buf *bufs)
{
	struct memreg_pool_alloc a = { .pool = p->pool, .flags = flags, .size = size,
				       .bufs = PTR(bufs), .count = count,
				       .timeout_ms = timeout_ms };

	if (ioctl(p->fd, MEMREG_IOC_POOL_ALLOC, &a))
		return -errno;
	return (int)a.count;
}

/* POOL_FREE of `n` addresses; 0 or -errno. */
static inline int pl_free(struct pl *p, const __u64 *addrs, __u32 n)
{
	struct memreg_pool_free f = { .pool = p->pool, .count = n, .addrs = PTR(addrs) };

	return ioctl(p->fd, MEMREG_IOC_POOL_FREE, &f) ? -errno : 0;
}

static inline int pl_free1(struct pl *p, __u64 addr)
{
	return pl_free(p, &addr, 1);
}

#endif /* MEMREG_POOL_UTIL_H */
