// SPDX-License-Identifier: (LGPL-2.1 OR MIT)
/*
 * Pools of pre-registered buffers: created and mapped in one call; with
 * their free-buffer rings mapped, ALLOC and FREE pop and push buffers
 * without a system call (Documentation/userspace-api/memreg/pools.rst).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
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
	struct memreg_pool_rings *rings = pool->rings;

	if (rings) {
		munmap(rings->map, rings->map_bytes);
		free(rings);
	}
	if (pool->map)
		munmap(pool->map, pool->map_bytes);
	memset(pool, 0, sizeof(*pool));
	pool->fd = -1;
}

/* ---- The free-buffer rings ----------------------------------------------- */

/*
 * How many buffers a pop may find that must go back by POOL_FREE (above
 * the limit, or in a chunk not mapped) before it gives up on the ring.
 */
#define RING_POP_TRIES	16

/* Whether [off, off + len) lies in a mapping of @bytes bytes. */
static bool in_map(__u64 off, __u64 len, size_t bytes)
{
	return off <= bytes && len <= bytes - off;
}

int memreg__pool_rings_setup(struct memreg_pool *pool, void *map, size_t map_bytes,
			     const struct memreg_pool_ring_class *rc, unsigned int nr)
{
	struct memreg_pool_rings *rings;
	unsigned int c;

	if (!nr || nr != pool->nr_classes || nr > MEMREG_POOL_MAX_CLASSES)
		return -EPROTO;
	rings = calloc(1, sizeof(*rings));
	if (!rings)
		return -ENOMEM;
	for (c = 0; c < nr; c++) {
		const struct memreg_pool_class *pc = &pool->classes[c];
		struct memreg__ring_class *r = &rings->cls[c];
		__u32 bs = pc->buffer_size, max = pc->max_buffers, per = pc->chunk_buffers;

		if (!bs || (bs & (bs - 1)) || !max || !per || (per & (per - 1)) || max % per ||
		    rc[c].nr_chunks != max / per ||
		    rc[c].head_offset % 8 || rc[c].next_offset % 4 ||
		    rc[c].chunks_offset % 8 ||
		    !in_map(rc[c].head_offset, sizeof(*r->head), map_bytes) ||
		    !in_map(rc[c].next_offset, (__u64)max * sizeof(__u32), map_bytes) ||
		    !in_map(rc[c].chunks_offset,
			    (__u64)rc[c].nr_chunks * sizeof(*r->chunks), map_bytes) ||
		    !in_map(pc->offset, (__u64)max * bs, pool->map_bytes)) {
			free(rings);
			return -EPROTO;
		}
		r->head = (struct memreg_pool_ring_head *)((char *)map + rc[c].head_offset);
		r->next = (__u32 *)((char *)map + rc[c].next_offset);
		r->chunks = (const struct memreg_pool_ring_chunk *)((char *)map +
								    rc[c].chunks_offset);
		r->base = (char *)pool->map + pc->offset;
		r->bytes = (__u64)max * bs;
		r->max_buffers = max;
		r->chunk_shift = (__u32)__builtin_ctz(per);
		r->buffer_size = bs;
		r->shift = (__u32)__builtin_ctz(bs);
	}
	rings->map = map;
	rings->map_bytes = map_bytes;
	rings->nr_classes = nr;
	__atomic_store_n(&pool->rings, rings, __ATOMIC_RELEASE);
	return 0;
}

int memreg_pool_ring_init(struct memreg_pool *pool)
{
	struct memreg_pool_ring_class rc[MEMREG_POOL_MAX_CLASSES];
	struct memreg_pool_ring r = {
		.pool = pool->id,
		.count = MEMREG_POOL_MAX_CLASSES,
		.classes = (__u64)(unsigned long)rc,
	};
	void *p;
	int ret;

	if (!pool->map)
		return -EINVAL;
	if (pool->rings)
		return -EBUSY;
	memset(rc, 0, sizeof(rc));
	ret = memreg__ioctl(pool->fd, MEMREG_IOC_POOL_RING, &r);
	if (ret)
		return ret;
	if (r.count != pool->nr_classes || !r.map_bytes || r.map_bytes > SIZE_MAX)
		return -EPROTO;
	p = mmap(NULL, r.map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, pool->fd,
		 MEMREG_MMAP_POOL_RING(pool->id));
	if (p == MAP_FAILED)
		return -errno;
	ret = memreg__pool_rings_setup(pool, p, r.map_bytes, rc, r.count);
	if (ret)
		munmap(p, r.map_bytes);
	return ret;
}

static struct memreg_pool_rings *pool_rings(const struct memreg_pool *pool)
{
	return __atomic_load_n(&pool->rings, __ATOMIC_ACQUIRE);
}

/* The smallest class whose buffers hold @size bytes, or -1. */
static int ring_class(const struct memreg_pool_rings *rings, __u64 size)
{
	unsigned int c;

	if (!size)
		return -1;
	for (c = 0; c < rings->nr_classes; c++)
		if (size <= rings->cls[c].buffer_size)
			return (int)c;
	return -1;
}

/* The class and index of the buffer starting at @addr, or -1. */
static int ring_index(const struct memreg_pool_rings *rings, const void *addr,
		      __u32 *index)
{
	unsigned int c;

	for (c = 0; c < rings->nr_classes; c++) {
		const struct memreg__ring_class *r = &rings->cls[c];
		__u64 off = (__u64)((unsigned long)addr - (unsigned long)r->base);

		if (off < r->bytes) {
			if (off & (r->buffer_size - 1))
				return -1;
			*index = (__u32)(off >> r->shift);
			return (int)c;
		}
	}
	return -1;
}

/*
 * Whether buffer @idx may be used as the ring says: below the limit (not in
 * a chunk being given back) and in a mapped chunk; its key in *key.
 */
static bool ring_usable(const struct memreg__ring_class *r, __u32 idx, __u64 *key)
{
	if (idx >= __atomic_load_n(&r->head->limit, __ATOMIC_ACQUIRE))
		return false;
	*key = __atomic_load_n(&r->chunks[idx >> r->chunk_shift].key, __ATOMIC_ACQUIRE);
	return *key != 0;
}

static int pool_free_ioctl(struct memreg_pool *pool, const __u64 *addrs, unsigned int count)
{
	struct memreg_pool_free f = {
		.pool = pool->id,
		.count = count,
		.addrs = (__u64)(unsigned long)addrs,
	};

	return memreg__ioctl(pool->fd, MEMREG_IOC_POOL_FREE, &f);
}

/* The address of buffer @idx of ring @r. */
static __u64 ring_addr(const struct memreg__ring_class *r, __u32 idx)
{
	return (__u64)(unsigned long)(r->base + ((__u64)idx << r->shift));
}

/* Describes buffer @idx of class @c's ring @r, whose chunk has key @key. */
static void ring_buf(const struct memreg__ring_class *r, unsigned int c, __u32 idx, __u64 key,
		     struct memreg_pool_buf *buf)
{
	buf->addr = ring_addr(r, idx);
	buf->key = key;
	buf->offset = __atomic_load_n(&r->chunks[idx >> r->chunk_shift].offset,
				      __ATOMIC_RELAXED) +
		      ((__u64)(idx & ((1U << r->chunk_shift) - 1)) << r->shift);
	buf->size = r->buffer_size;
	buf->class = c;
}

/*
 * Pops a buffer from class @c's ring into *buf: 0, or -EAGAIN when the ring
 * is empty (or says nothing usable). A buffer the ring must not hand out
 * (above the limit, or its chunk not mapped) goes back by POOL_FREE.
 */
static int ring_pop(struct memreg_pool *pool, struct memreg_pool_rings *rings,
		    unsigned int c, struct memreg_pool_buf *buf)
{
	struct memreg__ring_class *r = &rings->cls[c];
	unsigned int tries = 0;
	__u64 top, want, key = 0, addr;
	__u32 idx, nxt;

	top = __atomic_load_n(&r->head->top, __ATOMIC_ACQUIRE);
	for (;;) {
		idx = MEMREG_POOL_RING_INDEX(top);
		if (idx == MEMREG_POOL_RING_EMPTY || idx >= r->max_buffers)
			return -EAGAIN;
		nxt = __atomic_load_n(&r->next[idx], __ATOMIC_RELAXED);
		want = MEMREG_POOL_RING_TOP(MEMREG_POOL_RING_TAG(top) + 1, nxt);
		/* On failure @top is the word as it is now: try again. */
		if (!__atomic_compare_exchange_n(&r->head->top, &top, want, true,
						 __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE))
			continue;
		addr = ring_addr(r, idx);
		if (ring_usable(r, idx, &key))
			break;
		/* Being given back or gone: the kernel's (ESTALE, EINVAL: fine). */
		pool_free_ioctl(pool, &addr, 1);
		if (++tries >= RING_POP_TRIES)
			return -EAGAIN;
		top = __atomic_load_n(&r->head->top, __ATOMIC_ACQUIRE);
	}
	ring_buf(r, c, idx, key, buf);
	return 0;
}

/* Pushes buffer @idx of ring @r: it is free from now on. */
static void ring_push(struct memreg__ring_class *r, __u32 idx)
{
	__u64 top = __atomic_load_n(&r->head->top, __ATOMIC_ACQUIRE);

	do {
		__atomic_store_n(&r->next[idx], MEMREG_POOL_RING_INDEX(top), __ATOMIC_RELAXED);
	} while (!__atomic_compare_exchange_n(&r->head->top, &top,
					      MEMREG_POOL_RING_TOP(MEMREG_POOL_RING_TAG(top) + 1,
								   idx),
					      true, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}

/* ---- Allocation and freeing ----------------------------------------------- */

static int pool_alloc_ioctl(struct memreg_pool *pool, __u64 size, __u32 flags,
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

/*
 * The ring's class for an ALLOC of these arguments, or -1 when the ioctl
 * must answer: no rings, or an argument the kernel refuses (it says why).
 */
static int ring_alloc_class(struct memreg_pool_rings *rings, __u64 size, __u32 flags,
			    __u32 timeout_ms, unsigned int count)
{
	if (!rings || (flags & ~MEMREG_POOL_NO_FALLBACK) ||
	    timeout_ms > MEMREG_POOL_MAX_TIMEOUT_MS || !count ||
	    count > MEMREG_POOL_MAX_BATCH)
		return -1;
	return ring_class(rings, size);
}

int memreg_pool_alloc_batch(struct memreg_pool *pool, __u64 size, __u32 flags,
			    __u32 timeout_ms, struct memreg_pool_buf *bufs,
			    unsigned int count)
{
	struct memreg_pool_rings *rings = pool_rings(pool);
	int c = ring_alloc_class(rings, size, flags, timeout_ms, count);
	unsigned int n = 0;
	int ret;

	if (c < 0)
		return pool_alloc_ioctl(pool, size, flags, timeout_ms, bufs, count);
	while (n < count && !ring_pop(pool, rings, (unsigned int)c, &bufs[n]))
		n++;
	if (n == count)
		return (int)n;
	/* The ring ran dry: the kernel takes it back, and refills it. */
	if (!n)
		return pool_alloc_ioctl(pool, size, flags, timeout_ms, bufs, count);
	ret = pool_alloc_ioctl(pool, size, flags, 0, bufs + n, count - n);
	return (int)n + (ret > 0 ? ret : 0);
}

int memreg_pool_alloc(struct memreg_pool *pool, __u64 size, __u32 flags,
		      __u32 timeout_ms, struct memreg_pool_buf *buf)
{
	struct memreg_pool_rings *rings = pool_rings(pool);
	int c = ring_alloc_class(rings, size, flags, timeout_ms, 1);
	int ret;

	if (c >= 0 && !ring_pop(pool, rings, (unsigned int)c, buf))
		return 0;
	ret = pool_alloc_ioctl(pool, size, flags, timeout_ms, buf, 1);
	return ret < 0 ? ret : 0;
}

int memreg_pool_free_batch(struct memreg_pool *pool, void *const *addrs,
			   unsigned int count)
{
	struct memreg_pool_rings *rings = pool_rings(pool);
	__u64 a[MEMREG_POOL_MAX_BATCH];
	__u32 idx[MEMREG_POOL_MAX_BATCH];
	__u8 cls[MEMREG_POOL_MAX_BATCH];
	unsigned int i, j, nr_ioctl = 0, nr_ring = 0;
	__u64 key;
	int c, ret;

	if (!count || count > MEMREG_POOL_MAX_BATCH)
		return -EINVAL;
	for (i = 0; i < count; i++) {
		c = rings ? ring_index(rings, addrs[i], &idx[nr_ring]) : -1;
		if (c >= 0 && ring_usable(&rings->cls[c], idx[nr_ring], &key)) {
			/* Twice in one batch: what the kernel says, nothing freed. */
			for (j = 0; j < nr_ring; j++)
				if (cls[j] == c && idx[j] == idx[nr_ring])
					return -EINVAL;
			cls[nr_ring++] = (__u8)c;
		} else {
			a[nr_ioctl++] = (__u64)(unsigned long)addrs[i];
		}
	}
	/*
	 * The kernel's first: if it refuses them (EINVAL, all or nothing), none
	 * is pushed either. ESTALE freed them all.
	 */
	ret = nr_ioctl ? pool_free_ioctl(pool, a, nr_ioctl) : 0;
	if (ret && ret != -ESTALE)
		return ret;
	for (i = 0; i < nr_ring; i++)
		ring_push(&rings->cls[cls[i]], idx[i]);
	return ret;
}

int memreg_pool_free(struct memreg_pool *pool, void *addr)
{
	struct memreg_pool_rings *rings = pool_rings(pool);
	__u64 a = (__u64)(unsigned long)addr, key;
	__u32 idx;
	int c;

	if (rings) {
		c = ring_index(rings, addr, &idx);
		if (c >= 0 && ring_usable(&rings->cls[c], idx, &key)) {
			ring_push(&rings->cls[c], idx);
			return 0;
		}
	}
	return pool_free_ioctl(pool, &a, 1);
}

/* ---- Per-thread caches ---------------------------------------------------- */

/*
 * Pops up to @max buffers of ring @r into @out with one compare-and-swap:
 * the chain under the top is walked first, and the swap succeeds only if
 * the top did not change meanwhile (every change counts in its tag), so the
 * walk read the stack as it was. A next index that makes no sense ends the
 * chain (the ring is left empty). How many were popped: 0 when it is empty.
 */
static unsigned int ring_pop_many(struct memreg__ring_class *r, __u32 *out, unsigned int max)
{
	__u64 top = __atomic_load_n(&r->head->top, __ATOMIC_ACQUIRE);
	unsigned int n;
	__u32 idx;

	do {
		idx = MEMREG_POOL_RING_INDEX(top);
		for (n = 0; n < max && idx < r->max_buffers; n++) {
			out[n] = idx;
			idx = __atomic_load_n(&r->next[idx], __ATOMIC_RELAXED);
		}
		if (!n)
			return 0;
		if (idx >= r->max_buffers)
			idx = MEMREG_POOL_RING_EMPTY;
	} while (!__atomic_compare_exchange_n(&r->head->top, &top,
					      MEMREG_POOL_RING_TOP(MEMREG_POOL_RING_TAG(top) + 1,
								   idx),
					      true, __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE));
	return n;
}

/* Pushes the @n (at least 1) buffers @idx onto ring @r with one compare-and-swap. */
static void ring_push_many(struct memreg__ring_class *r, const __u32 *idx, unsigned int n)
{
	__u64 top = __atomic_load_n(&r->head->top, __ATOMIC_ACQUIRE);
	unsigned int i;

	for (i = 0; i + 1 < n; i++)
		__atomic_store_n(&r->next[idx[i]], idx[i + 1], __ATOMIC_RELAXED);
	do {
		__atomic_store_n(&r->next[idx[n - 1]], MEMREG_POOL_RING_INDEX(top),
				 __ATOMIC_RELAXED);
	} while (!__atomic_compare_exchange_n(&r->head->top, &top,
					      MEMREG_POOL_RING_TOP(MEMREG_POOL_RING_TAG(top) + 1,
								   idx[0]),
					      true, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
}

/*
 * Gives the @n (at least 1) buffers @idx of @cache's class @c back: those
 * the ring may take in one push, the others (their chunk is being given
 * back since they were cached) by POOL_FREE, whose answer (ESTALE) does not
 * matter here. Reorders @idx.
 */
static void cache_give_back(struct memreg_pool_cache *cache, unsigned int c, __u32 *idx,
			    unsigned int n)
{
	struct memreg__ring_class *r = &cache->rings->cls[c];
	unsigned int i, kept = 0;
	__u64 key, addr;

	for (i = 0; i < n; i++) {
		if (ring_usable(r, idx[i], &key)) {
			__u32 t = idx[kept];

			idx[kept++] = idx[i];
			idx[i] = t;
			continue;
		}
		addr = ring_addr(r, idx[i]);
		pool_free_ioctl(cache->pool, &addr, 1);
	}
	if (kept)
		ring_push_many(r, idx, kept);
}

int memreg_pool_cache_create(struct memreg_pool *pool, unsigned int size,
			     struct memreg_pool_cache **cache)
{
	struct memreg_pool_rings *rings;
	struct memreg_pool_cache *pc;
	unsigned int c;

	if (!cache)
		return -EINVAL;
	*cache = NULL;
	if (!pool || !size || size > MEMREG_POOL_CACHE_MAX)
		return -EINVAL;
	rings = pool_rings(pool);
	if (!rings)
		return -ENXIO;
	pc = calloc(1, sizeof(*pc) + (size_t)rings->nr_classes * size * sizeof(__u32));
	if (!pc)
		return -ENOMEM;
	pc->pool = pool;
	pc->rings = rings;
	pc->size = size;
	for (c = 0; c < rings->nr_classes; c++)
		pc->idx[c] = pc->slots + (size_t)c * size;
	*cache = pc;
	return 0;
}

int memreg_pool_cache_flush(struct memreg_pool_cache *cache)
{
	unsigned int c;

	if (!cache)
		return -EINVAL;
	for (c = 0; c < cache->rings->nr_classes; c++) {
		if (cache->count[c])
			cache_give_back(cache, c, cache->idx[c], cache->count[c]);
		cache->count[c] = 0;
	}
	return 0;
}

void memreg_pool_cache_destroy(struct memreg_pool_cache *cache)
{
	if (!cache)
		return;
	memreg_pool_cache_flush(cache);
	free(cache);
}

int memreg_pool_cache_alloc(struct memreg_pool_cache *cache, __u64 size, __u32 flags,
			    __u32 timeout_ms, struct memreg_pool_buf *buf)
{
	struct memreg__ring_class *r;
	unsigned int tries = 0, *n;
	__u64 key, addr;
	__u32 idx;
	int c;

	if (!cache)
		return -EINVAL;
	c = ring_alloc_class(cache->rings, size, flags, timeout_ms, 1);
	if (c < 0)
		return memreg_pool_alloc(cache->pool, size, flags, timeout_ms, buf);
	r = &cache->rings->cls[c];
	n = &cache->count[c];
	for (;;) {
		/* Empty: half a cache from the ring in one swap, else the kernel's. */
		if (!*n) {
			*n = ring_pop_many(r, cache->idx[c], (cache->size + 1) / 2);
			if (!*n)
				break;
		}
		idx = cache->idx[c][--*n];
		if (ring_usable(r, idx, &key)) {
			ring_buf(r, (unsigned int)c, idx, key, buf);
			return 0;
		}
		/* Being given back since it was cached: the kernel's (ESTALE: fine). */
		addr = ring_addr(r, idx);
		pool_free_ioctl(cache->pool, &addr, 1);
		if (++tries >= RING_POP_TRIES)
			break;
	}
	return memreg_pool_alloc(cache->pool, size, flags, timeout_ms, buf);
}

int memreg_pool_cache_free(struct memreg_pool_cache *cache, void *addr)
{
	unsigned int half, *n;
	__u64 key;
	__u32 idx;
	int c;

	if (!cache)
		return -EINVAL;
	c = ring_index(cache->rings, addr, &idx);
	if (c < 0 || !ring_usable(&cache->rings->cls[c], idx, &key))
		return memreg_pool_free(cache->pool, addr);
	n = &cache->count[c];
	/* Full: the most recently cached half goes back to the ring in one swap. */
	if (*n == cache->size) {
		half = (cache->size + 1) / 2;
		*n -= half;
		cache_give_back(cache, (unsigned int)c, cache->idx[c] + *n, half);
	}
	cache->idx[c][(*n)++] = idx;
	return 0;
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
