/* SPDX-License-Identifier: (LGPL-2.1 OR MIT) */
/*
 * What the library's files share and do not export.
 */
#ifndef LIBMEMREG_INTERNAL_H
#define LIBMEMREG_INTERNAL_H

#include <errno.h>
#include <sys/ioctl.h>
#include <unistd.h>

#ifndef noinline
#define noinline	__attribute__((noinline))
#endif
#ifndef __cold
#define __cold		__attribute__((cold))
#endif

/* ioctl(2) as the library returns it: 0 or -errno. */
static inline int memreg__ioctl(int fd, unsigned long request, void *arg)
{
	return ioctl(fd, request, arg) ? -errno : 0;
}

/* The system page size. */
static inline size_t memreg__page_size(void)
{
	static size_t size;
	size_t v = __atomic_load_n(&size, __ATOMIC_RELAXED);

	if (!v) {
		v = (size_t)sysconf(_SC_PAGESIZE);
		__atomic_store_n(&size, v, __ATOMIC_RELAXED);
	}
	return v;
}

static inline size_t memreg__page_round(size_t n)
{
	size_t page = memreg__page_size();

	return (n + page - 1) & ~(page - 1);
}

/*
 * One class's free-buffer ring, as memreg_pool_ring_init() checked it:
 * @head, @next and @chunks lie in the rings' mapping, @base is the class's
 * first buffer in the pool's.
 */
struct memreg__ring_class {
	struct memreg_pool_ring_head *head;
	__u32 *next;
	const struct memreg_pool_ring_chunk *chunks;
	char *base;
	__u64 bytes;			/* max_buffers * buffer_size */
	__u32 max_buffers;
	__u32 chunk_shift;		/* log2(buffers per chunk, a power of two) */
	__u32 buffer_size;		/* a power of two */
	__u32 shift;			/* log2(buffer_size) */
};

/* struct memreg_pool's rings (the header only names it). */
struct memreg_pool_rings {
	void *map;			/* the MEMREG_MMAP_POOL_RING mapping */
	size_t map_bytes;
	__u32 nr_classes;
	struct memreg__ring_class cls[MEMREG_POOL_MAX_CLASSES];
};

/*
 * A cache of free buffers of one pool, for one thread at a time: per class,
 * a stack of up to @size buffer indexes taken from the class's ring and
 * given back to it half a cache at a time.
 */
struct memreg_pool_cache {
	struct memreg_pool *pool;
	struct memreg_pool_rings *rings;
	unsigned int size;
	unsigned int count[MEMREG_POOL_MAX_CLASSES];
	__u32 *idx[MEMREG_POOL_MAX_CLASSES];
	__u32 slots[];				/* nr_classes * size */
};

/*
 * Gives @pool the rings of @map (@map_bytes long, laid out as @rc, @nr
 * classes, from POOL_RING) after checking that every array lies in the
 * mapping and matches the pool's classes: 0, -EPROTO (nothing kept) or
 * -ENOMEM. The mapping is @pool's from then on: memreg_pool_exit() unmaps
 * it. The host tests call it with memory of their own.
 */
int memreg__pool_rings_setup(struct memreg_pool *pool, void *map, size_t map_bytes,
			     const struct memreg_pool_ring_class *rc, unsigned int nr);

/* Microseconds of CLOCK_MONOTONIC. */
unsigned long long memreg__now_us(void);
/* One step of a wait loop: yields a few times, then sleeps 50 us a step. */
void memreg__relax(unsigned int *spins);

#endif /* LIBMEMREG_INTERNAL_H */
