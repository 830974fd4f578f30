// SPDX-License-Identifier: (LGPL-2.1 OR MIT)
/*
 * Pools of pre-registered buffers: created and mapped in one call.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "libmemreg.h"
#include "internal.h"

int memreg_pool_init(int fd, const struct memreg_pool_class *classes,
		     unsigned int nr, const struct memreg_pool_params *params,
		     struct memreg_pool *pool)
{
	struct memreg_pool_create c = { 0 };
	struct memreg_pool_destroy d = { 0 };
	void *p;
	int ret;

	memset(pool, 0, sizeof(*pool));
	pool->fd = -1;
	if (!nr || nr > MEMREG_POOL_MAX_CLASSES || params->reserved ||
	    params->reserved1[0] || params->reserved1[1])
		return -EINVAL;
	memcpy(pool->classes, classes, nr * sizeof(*classes));
	c.classes = (__u64)(unsigned long)pool->classes;
	c.nr_classes = nr;
	c.access = params->access;
	c.leak_timeout_ms = params->leak_timeout_ms;
	c.shrink_ms = params->shrink_ms;
	ret = memreg__ioctl(fd, MEMREG_IOC_POOL_CREATE, &c);
	if (ret)
		return ret;
	p = mmap(NULL, c.map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		 MEMREG_MMAP_POOL(c.pool));
	if (p == MAP_FAILED) {
		ret = -errno;
		d.pool = c.pool;
		memreg__ioctl(fd, MEMREG_IOC_POOL_DESTROY, &d);
		return ret;
	}
	pool->fd = fd;
	pool->id = c.pool;
	pool->map = p;
	pool->map_bytes = c.map_bytes;
	pool->nr_classes = nr;
	return 0;
}

void memreg_pool_exit(struct memreg_pool *pool)
{
	if (pool->map)
		munmap(pool->map, pool->map_bytes);
	memset(pool, 0, sizeof(*pool));
	pool->fd = -1;
}

int memreg_pool_alloc_batch(struct memreg_pool *pool, __u64 size, __u32 flags,
			    __u32 timeout_ms, struct memreg_pool_buf *bufs,
			    unsigned int count)
{
	struct memreg_pool_alloc a = {
		.pool = pool->id,
		.flags = flags,
		.size = size,
		.bufs = (__u64)(unsigned long)bufs,
		.count = count,
		.timeout_ms = timeout_ms,
	};
	int ret = memreg__ioctl(pool->fd, MEMREG_IOC_POOL_ALLOC, &a);

	return ret ? ret : (int)a.count;
}

int memreg_pool_alloc(struct memreg_pool *pool, __u64 size, __u32 flags,
		      __u32 timeout_ms, struct memreg_pool_buf *buf)
{
	int ret = memreg_pool_alloc_batch(pool, size, flags, timeout_ms, buf, 1);

	return ret < 0 ? ret : 0;
}

int memreg_pool_free_batch(struct memreg_pool *pool, void *const *addrs,
			   unsigned int count)
{
	__u64 a[MEMREG_POOL_MAX_BATCH];
	struct memreg_pool_free f = {
		.pool = pool->id,
		.count = count,
		.addrs = (__u64)(unsigned long)a,
	};
	unsigned int i;

	if (!count || count > MEMREG_POOL_MAX_BATCH)
		return -EINVAL;
	for (i = 0; i < count; i++)
		a[i] = (__u64)(unsigned long)addrs[i];
	return memreg__ioctl(pool->fd, MEMREG_IOC_POOL_FREE, &f);
}

int memreg_pool_free(struct memreg_pool *pool, void *addr)
{
	return memreg_pool_free_batch(pool, &addr, 1);
}

int memreg_pool_stats(struct memreg_pool *pool, struct memreg_pool_stats *stats,
		      unsigned int count)
{
	struct memreg_pool_info info = {
		.pool = pool->id,
		.count = count,
		.stats = (__u64)(unsigned long)stats,
	};
	int ret;

	if (stats && count)
		memset(stats, 0, count * sizeof(*stats));
	ret = memreg__ioctl(pool->fd, MEMREG_IOC_POOL_STATS, &info);
	return ret ? ret : (int)info.count;
}
