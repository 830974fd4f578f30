// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: an ioctl fuzzer. Random commands of memreg's magic (and
 * others), with every direction and size, random structure contents, keys
 * that were valid, stale or made up, and argument pointers that are valid,
 * unmapped, read-only or kernel addresses, interleaved with munmap and
 * mprotect of registered memory. The parked list's settings change
 * at random too (parking, its limits, idle eviction), and FLUSH ends what is
 * parked. The kernel must answer each call with an errno the documentation
 * lists (or success), never crash or warn (the check kernel has KASAN and
 * lockdep), and after close every counter must be back where it was.
 */
#include "memreg_util.h"

#include <linux/ioctl.h>

#include "../kselftest_harness.h"

#define ITERATIONS	20000
#define AREA_PAGES	256
#define KEYS		32

static __u64 rng_state = 0x9e3779b97f4a7c15ULL;

static __u64 rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Errnos memreg documents for its calls. */
static int documented(int e)
{
	switch (e) {
	case EINVAL: case E2BIG: case EFAULT: case ENOMEM: case ENOSPC:
	case EDQUOT: case EPERM: case ENOENT: case EACCES: case EAGAIN:
	case EOVERFLOW: case ENOTTY: case EOPNOTSUPP: case EINTR: case EHWPOISON:
		return 1;
	}
	return 0;
}

struct fuzz {
	int fd;
	char *area;		/* AREA_PAGES pages, remapped as the fuzzer goes */
	char *ro;		/* one read-only page */
	__u64 keys[KEYS];	/* keys seen, valid or not any more */
	__u8 arg[4096];
};

/* Some address: in the area, unaligned, unmapped, read-only, kernel, null. */
static __u64 some_addr(struct fuzz *f)
{
	switch (rnd() % 8) {
	case 0:
		return 0;
	case 1:
		return 0xffff888000000000ULL + (rnd() & 0xffffff);
	case 2:
		return (unsigned long)f->ro + rnd() % PAGE;
	case 3:
		return rnd();
	default:
		return (unsigned long)f->area + rnd() % (AREA_PAGES * PAGE);
	}
}

static __u64 some_len(void)
{
	switch (rnd() % 6) {
	case 0:
		return 0;
	case 1:
		return rnd();
	case 2:
		return 1 + rnd() % 64;
	default:
		return 1 + rnd() % (AREA_PAGES * PAGE / 2);
	}
}

static __u64 some_key(struct fuzz *f)
{
	return rnd() % 4 ? f->keys[rnd() % KEYS] : rnd();
}

/* Fills the argument with a plausible structure of memreg's, or noise. */
static void fill_arg(struct fuzz *f, unsigned int nr)
{
	__u64 *w = (__u64 *)f->arg;
	size_t i;

	for (i = 0; i < sizeof(f->arg) / 8; i++)
		w[i] = rnd() % 3 ? 0 : rnd();
	if (rnd() % 4 == 0)
		return;
	switch (nr) {
	case 1: {
		struct memreg_register *r = (void *)f->arg;

		memset(r, 0, sizeof(*r));
		r->addr = some_addr(f);
		r->length = some_len();
		r->access = rnd() % 8 ? 1 + rnd() % MEMREG_ACCESS_ALL : rnd();
		r->flags = rnd() % 8 ? 0 : rnd();
		break;
	}
	case 2:
	case 3:
		memset(f->arg, 0, 64);
		w[0] = some_key(f);
		break;
	case 8: {
		struct memreg_cache_config *c = (void *)f->arg;

		memset(c, 0, sizeof(*c));
		c->parking = rnd() % 8 ? rnd() % 2 : rnd();
		c->max_parked = rnd() % 4 ? rnd() % 64 : rnd();
		c->max_parked_pages = rnd() % 4 ? rnd() % (AREA_PAGES * 2) : rnd();
		c->idle_ms = rnd() % 4 ? rnd() % 1000 : rnd();
		break;
	}
	case 9:
		memset(f->arg, 0, 32);
		break;
	case 5: {
		struct memreg_copy *c = (void *)f->arg;

		memset(c, 0, sizeof(*c));
		c->key = some_key(f);
		c->offset = rnd() % 3 ? rnd() % (AREA_PAGES * PAGE) : rnd();
		c->length = some_len() % (rnd() % 2 ? 65536 : ~0ULL);
		c->buf = some_addr(f);
		c->direction = rnd() % 8 ? rnd() % 2 : rnd();
		break;
	}
	}
}

/* One random call; returns 0, or the errno the kernel gave. */
static int one_call(struct fuzz *f)
{
	static const unsigned int dirs[] = { _IOC_NONE, _IOC_READ, _IOC_WRITE,
					     _IOC_READ | _IOC_WRITE };
	static const unsigned int sizes[] = { 4, 16, 32, 48, 56, 64, 72, 144, 248 };
	unsigned int nr = rnd() % 10, dir, size, type = rnd() % 16 ? MEMREG_IOC_MAGIC : rnd() % 256;
	unsigned long cmd, arg;

	/* Mostly the real commands, sometimes a variation of them. */
	switch (rnd() % 4) {
	case 0:
		dir = dirs[rnd() % 4];
		size = rnd() % 4 ? sizes[rnd() % (sizeof(sizes) / sizeof(sizes[0]))] : rnd() % 4096;
		cmd = _IOC(dir, type, nr, size);
		break;
	default: {
		static const unsigned long real[] = {
			MEMREG_IOC_GET_VERSION, MEMREG_IOC_REGISTER, MEMREG_IOC_DEREGISTER,
			MEMREG_IOC_QUERY, MEMREG_IOC_STATS, MEMREG_IOC_COPY,
			MEMREG_IOC_GLOBAL_STATS, MEMREG_IOC_GET_CACHE, MEMREG_IOC_SET_CACHE,
			MEMREG_IOC_FLUSH,
		};

		cmd = real[rnd() % (sizeof(real) / sizeof(real[0]))];
		nr = _IOC_NR(cmd);
		break;
	}
	}
	fill_arg(f, nr);
	switch (rnd() % 10) {
	case 0:
		arg = 0;
		break;
	case 1:
		arg = (unsigned long)f->ro;
		break;
	case 2:
		arg = 0xffff888000000000ULL;
		break;
	default:
		arg = (unsigned long)f->arg;
	}
	if (ioctl(f->fd, cmd, arg) == 0) {
		if (cmd == MEMREG_IOC_REGISTER && arg == (unsigned long)f->arg)
			f->keys[rnd() % KEYS] = ((struct memreg_register *)f->arg)->lkey;
		return 0;
	}
	return errno;
}

/* Changes the memory under the registrations now and then. */
static void shake(struct fuzz *f)
{
	size_t page = rnd() % AREA_PAGES, n = 1 + rnd() % 16;
	char *p = f->area + page * PAGE;

	if (page + n > AREA_PAGES)
		n = AREA_PAGES - page;
	switch (rnd() % 4) {
	case 0:
		munmap(p, n * PAGE);
		mmap(p, n * PAGE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		break;
	case 1:
		mprotect(p, n * PAGE, PROT_READ);
		mprotect(p, n * PAGE, PROT_READ | PROT_WRITE);
		break;
	case 2:
		madvise(p, n * PAGE, MADV_DONTNEED);
		break;
	default:
		memset(p, (int)rnd(), n * PAGE);
	}
}

TEST(random_ioctls_change_nothing_after_close)
{
	struct memreg_global_stats base;
	struct fuzz f = { 0 };
	int i, e, undocumented = 0, ok = 0;
	long vmpin = vm_pin_kb();

	ASSERT_EQ(0, mr_global_now(&base));
	f.fd = memreg_open();
	ASSERT_GE(f.fd, 0);
	f.area = map_filled(AREA_PAGES * PAGE, 'f');
	ASSERT_NE(NULL, f.area);
	f.ro = mmap(NULL, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, f.ro);
	for (i = 0; i < ITERATIONS; i++) {
		if (rnd() % 50 == 0)
			shake(&f);
		e = one_call(&f);
		if (!e)
			ok++;
		else if (!documented(e) && undocumented++ < 5)
			TH_LOG("undocumented errno %d (%s)", e, strerror(e));
	}
	TH_LOG("%d of %d calls succeeded", ok, ITERATIONS);
	EXPECT_EQ(0, undocumented);
	/* Some calls must have got through, or the fuzzer tests nothing. */
	EXPECT_LT(100, ok);
	close(f.fd);
	munmap(f.area, AREA_PAGES * PAGE);
	munmap(f.ro, PAGE);
	ASSERT_EQ(0, mr_wait_global(base.contexts, base.regions, base.pages_pinned));
	EXPECT_EQ(vmpin, vm_pin_kb());
}

TEST_HARNESS_MAIN
