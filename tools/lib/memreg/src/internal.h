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

/* Microseconds of CLOCK_MONOTONIC. */
unsigned long long memreg__now_us(void);
/* One step of a wait loop: yields a few times, then sleeps 50 us a step. */
void memreg__relax(unsigned int *spins);

#endif /* LIBMEMREG_INTERNAL_H */
