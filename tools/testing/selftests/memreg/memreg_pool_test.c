// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: buffer pools (see "Buffer pools" in
 * Documentation/userspace-api/memreg/pools.rst and include/uapi/linux/memreg.h).
 *
 * - POOL_CREATE, the mapping, POOL_ALLOC, POOL_FREE, POOL_STATS and
 *   POOL_DESTROY refuse every bad input with the documented errno and change
 *   nothing;
 * - the layout: partitions, chunks, keys and offsets; the empty part
 *   above each boundary faults;
 * - allocation to exhaustion, one at a time and in batches; many threads
 *   allocating and freeing at once never get a buffer twice (addresses and
 *   the buffers' own bytes are checked);
 * - growth at the low watermark, ALLOC waiting for a growth or a FREE,
 *   timing out (ETIMEDOUT), not waiting (EAGAIN), interrupted (EINTR);
 * - fallback to a larger class, and NO_FALLBACK;
 * - shrink by the high watermark after shrink_ms (never below initial) and
 *   by the shrinker (drop_caches; never below the low watermark): the
 *   boundary goes down and the pages leave the mapping;
 * - leak reclaim: a buffer held in a chunk being given back is reclaimed
 *   after leak_timeout_ms: its address faults, its key is dead, it is
 *   quarantined until its holder frees it (ESTALE), then usable again;
 * - pool keys in COPY and in ring COPY, with the pool's access;
 * - RLIMIT_MEMLOCK stops growth;
 * - fdinfo shows the counters;
 * - teardown: POOL_DESTROY, munmap (of the whole mapping), close, fork (not
 *   inherited), exit and SIGKILL leave nothing (module-wide counters and
 *   VmPin);
 * - a pool's mapping is its own: a partial munmap or mprotect, an mremap
 *   that shrinks it (EINVAL) and an mprotect to other access (EACCES) are
 *   refused and the pool goes on; an mremap that moves it is refused but
 *   kills the pool; a mapping put over it with MAP_FIXED (anonymous,
 *   hugetlb, another file's pool) kills the pool, whose teardown leaves
 *   that mapping alone; REGISTER refuses the pool's, the rings' and the
 *   state words' mappings (EFAULT);
 * - charges follow the pages: madvise(MADV_DONTNEED) of one page kills the
 *   pool and every charge goes; POOL_DESTROY racing a growth leaves no page
 *   mapped nor charged; the pages are charged to the creator's memory
 *   cgroup.
 *
 * Growth happens in the pool's work, after the call that asks for it:
 * tests wait for boundaries with pl_wait() and allocate with a timeout.
 * Run as root, with no other memreg file open.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "memreg_pool_util.h"
#include "memreg_util.h"

#include "../kselftest_harness.h"

#define K4		4096U
#define CHUNK_BYTES	(64U * 1024)
#define NOBODY		65534
#define WAIT_MS		5000	/* how long a boundary is waited for */
#define ALLOC_MS	2000	/* ALLOC's timeout where growth may be needed */

/* ---- Helpers ---- */

/* Opens a file, creates a pool with parking off, and maps it; 0 or -errno. */
static int pl_open(struct pl *p, const struct memreg_pool_class *c, __u32 nr, __u32 access,
		   __u32 leak_ms, __u32 shrink_ms)
{
	return pl_setup(p, c, nr, access, leak_ms, shrink_ms, true);
}

/* POOL_STATS of class `c`; 0 or -errno (*st is all ones then). */
static int pl_stat(struct pl *p, __u32 c, struct memreg_pool_stats *st)
{
	struct memreg_pool_stats all[MEMREG_POOL_MAX_CLASSES];
	struct memreg_pool_info in = { .pool = p->pool, .count = MEMREG_POOL_MAX_CLASSES,
				       .stats = PTR(all) };

	memset(st, 0xff, sizeof(*st));
	if (ioctl(p->fd, MEMREG_IOC_POOL_STATS, &in))
		return -errno;
	if (c >= in.count)
		return -ERANGE;
	*st = all[c];
	return 0;
}

/* A counter of class `c` (all ones on error). */
#define STAT(p, c, field) ({							\
	struct memreg_pool_stats _st;						\
	pl_stat((p), (c), &_st);						\
	_st.field;								\
})

static void pl_print(struct pl *p, __u32 c, const char *why)
{
	struct memreg_pool_stats s;

	if (pl_stat(p, c, &s)) {
		fprintf(stderr, "%s: pool %u class %u: no stats (%s)\n", why, p->pool, c,
			strerror(errno));
		return;
	}
	fprintf(stderr, "%s: pool %u class %u: boundary %llu allocated %llu free %llu grows %llu "
		"shrinks %llu waits %llu timeouts %llu fallbacks %llu leaks %llu quarantined %llu\n",
		why, p->pool, c, (unsigned long long)s.boundary, (unsigned long long)s.allocated,
		(unsigned long long)s.free, (unsigned long long)s.grows,
		(unsigned long long)s.shrinks, (unsigned long long)s.waits,
		(unsigned long long)s.timeouts, (unsigned long long)s.fallbacks,
		(unsigned long long)s.leaks_reclaimed, (unsigned long long)s.quarantined);
}

/* Waits up to `ms` until class `c`'s counter at `off` is `want`; 0 or -ETIMEDOUT. */
static int pl_wait_field(struct pl *p, __u32 c, size_t off, __u64 want, int ms)
{
	struct memreg_pool_stats s;
	int i;

	for (i = 0; i <= ms / 5; i++) {
		if (!pl_stat(p, c, &s) && *(__u64 *)((char *)&s + off) == want)
			return 0;
		usleep(5000);
	}
	pl_print(p, c, "pl_wait timed out");
	return -ETIMEDOUT;
}

#define pl_wait(p, c, field, want) \
	pl_wait_field((p), (c), offsetof(struct memreg_pool_stats, field), (want), WAIT_MS)

/* Maps the pool at `addr` (MAP_FIXED, over whatever is there); 0 or -errno. */
static int pl_map_at(struct pl *p, void *addr)
{
	void *m = mmap(addr, p->bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, p->fd,
		       MEMREG_MMAP_POOL(p->pool));

	if (m == MAP_FAILED)
		return -errno;
	p->map = m;
	return 0;
}

/*
 * Waits (at most 5 s) while ALLOC of one buffer (timeout 0) says ENXIO: the
 * pool dies. With `busy`, EAGAIN too: its work has not killed it yet (the
 * caller left no free buffer it may hand out). Returns ALLOC's last answer:
 * EINVAL once the pool is destroyed, a count if a buffer was handed out.
 */
static int wait_pool_gone(struct pl *p, bool busy)
{
	struct memreg_pool_buf b;
	int i, r = 0;

	for (i = 0; i < 500; i++) {
		r = pl_alloc(p, 1, 1, 0, 0, &b);
		if (r != -ENXIO && !(busy && r == -EAGAIN))
			break;
		usleep(10000);
	}
	if (r != -EINVAL)
		fprintf(stderr, "pool %u: ALLOC gives %d, want %d\n", p->pool, r, -EINVAL);
	return r;
}

/* The address of buffer `i` of class `c`. */
static char *baddr(const struct pl *p, __u32 c, size_t i)
{
	return p->map + p->cl[c].offset + i * p->cl[c].buffer_size;
}

/* The index in its class of the buffer at `addr`. */
static long bidx(const struct pl *p, __u32 c, __u64 addr)
{
	return (long)((addr - PTR(p->map) - p->cl[c].offset) / p->cl[c].buffer_size);
}

/*
 * Allocates `n` buffers of `size` into `bufs`, in batches of at most
 * `batch`, each ALLOC waiting up to `timeout_ms`; returns how many it got
 * (fewer than `n` after a failed ALLOC, whose -errno goes to *err).
 */
static int alloc_n(struct pl *p, __u64 size, int n, int batch, __u32 flags, __u32 timeout_ms,
		   struct memreg_pool_buf *bufs, int *err)
{
	int got = 0, r;

	*err = 0;
	while (got < n) {
		int want = n - got < batch ? n - got : batch;

		r = pl_alloc(p, size, want, flags, timeout_ms, bufs + got);
		if (r < 0) {
			*err = r;
			break;
		}
		if (r == 0 || r > want) {
			*err = -EPROTO;
			break;
		}
		got += r;
	}
	return got;
}

/* Frees the `n` buffers of `bufs` in batches; 0 or the first -errno. */
static int free_bufs(struct pl *p, const struct memreg_pool_buf *bufs, int n)
{
	__u64 addrs[MEMREG_POOL_MAX_BATCH];
	int i = 0, k, ret = 0, r;

	while (i < n) {
		for (k = 0; k < MEMREG_POOL_MAX_BATCH && i + k < n; k++)
			addrs[k] = bufs[i + k].addr;
		r = pl_free(p, addrs, k);
		if (r && !ret)
			ret = r;
		i += k;
	}
	return ret;
}

/* ---- Faults ---- */

static sigjmp_buf probe_jb;
static volatile sig_atomic_t probe_sig;

static void on_probe_fault(int sig)
{
	probe_sig = sig;
	siglongjmp(probe_jb, 1);
}

/*
 * Reads (and with `write`, writes back) the byte at `p`; returns 0, or the
 * signal (SIGSEGV or SIGBUS) the access raised.
 */
static int probe(void *p, int write)
{
	struct sigaction sa = { .sa_handler = on_probe_fault }, old_segv, old_bus;
	volatile char *c = p;
	int ret;

	sigemptyset(&sa.sa_mask);
	sigaction(SIGSEGV, &sa, &old_segv);
	sigaction(SIGBUS, &sa, &old_bus);
	probe_sig = 0;
	if (sigsetjmp(probe_jb, 1) == 0) {
		char v = *c;

		if (write)
			*c = v;
		ret = 0;
	} else {
		ret = probe_sig;
	}
	sigaction(SIGSEGV, &old_segv, NULL);
	sigaction(SIGBUS, &old_bus, NULL);
	return ret;
}

static bool faults(void *p)
{
	int r = probe(p, 0), w = probe(p, 1);

	return (r == SIGSEGV || r == SIGBUS) && (w == SIGSEGV || w == SIGBUS);
}

/*
 * Whether the byte at `p` faults within `ms`. A chunk given back leaves the
 * mapping just after the counters show the boundary moved (the work updates
 * them first), so a test that saw the boundary move waits a little for it.
 */
static bool faults_soon(void *p, int ms)
{
	int i;

	for (i = 0; i <= ms / 5; i++) {
		if (faults(p))
			return true;
		usleep(5000);
	}
	return false;
}

/*
 * How many of buffers `from` .. `to` - 1 of class `c` do not fault: each is
 * given up to 1 s until one does not, the rest are looked at once.
 */
static int not_faulting(struct pl *p, __u32 c, size_t from, size_t to)
{
	size_t i;
	int n = 0;

	for (i = from; i < to; i++)
		if (!faults_soon(baddr(p, c, i), n ? 0 : 1000))
			n++;
	if (n)
		fprintf(stderr, "pool %u class %u: %d of buffers %zu..%zu do not fault\n",
			p->pool, c, n, from, to - 1);
	return n;
}

/* ---- Baselines ---- */

/*
 * Waits up to `ms` for the module-wide counters (open files, registrations,
 * pinned pages, contexts alive) to be back at `base`, plus `contexts` files
 * of ours still open.
 */
static int wait_global(const struct memreg_global_stats *base, __u64 contexts, int ms)
{
	struct memreg_global_stats g;
	int i;

	for (i = 0; i <= ms / 10; i++) {
		if (mr_global_now(&g))
			return -EIO;
		if (g.contexts == base->contexts + contexts && g.regions == base->regions &&
		    g.pages_pinned == base->pages_pinned &&
		    g.contexts_alive == base->contexts_alive + contexts)
			return 0;
		usleep(10000);
	}
	fprintf(stderr, "global: contexts %llu regions %llu pages %llu alive %llu, want %llu %llu "
		"%llu %llu\n", (unsigned long long)g.contexts, (unsigned long long)g.regions,
		(unsigned long long)g.pages_pinned, (unsigned long long)g.contexts_alive,
		(unsigned long long)(base->contexts + contexts), (unsigned long long)base->regions,
		(unsigned long long)base->pages_pinned,
		(unsigned long long)(base->contexts_alive + contexts));
	return -ETIMEDOUT;
}

/*
 * Waits up to `ms` for the module-wide counters to be `base` plus
 * `contexts` files of ours, `regions` registrations and `pages` pinned
 * pages.
 */
static int wait_global_plus(const struct memreg_global_stats *base, __u64 contexts,
			    __u64 regions, __u64 pages, int ms)
{
	struct memreg_global_stats g;
	int i;

	for (i = 0; i <= ms / 10; i++) {
		if (mr_global_now(&g))
			return -EIO;
		if (g.contexts == base->contexts + contexts &&
		    g.regions == base->regions + regions &&
		    g.pages_pinned == base->pages_pinned + pages &&
		    g.contexts_alive == base->contexts_alive + contexts)
			return 0;
		usleep(10000);
	}
	fprintf(stderr, "global: contexts %llu regions %llu pages %llu alive %llu, want %llu %llu "
		"%llu %llu\n", (unsigned long long)g.contexts, (unsigned long long)g.regions,
		(unsigned long long)g.pages_pinned, (unsigned long long)g.contexts_alive,
		(unsigned long long)(base->contexts + contexts),
		(unsigned long long)(base->regions + regions),
		(unsigned long long)(base->pages_pinned + pages),
		(unsigned long long)(base->contexts_alive + contexts));
	return -ETIMEDOUT;
}

/* Waits up to `ms` for VmPin to be `kb`; 0 or -ETIMEDOUT. */
static int wait_vmpin(long kb, int ms)
{
	int i;

	for (i = 0; i <= ms / 10; i++) {
		if (vm_pin_kb() == kb)
			return 0;
		usleep(10000);
	}
	fprintf(stderr, "VmPin %ld kB, want %ld kB\n", vm_pin_kb(), kb);
	return -ETIMEDOUT;
}

static __u64 now_ms(void)
{
	return mrq_now_us() / 1000;
}

/* A thread blocked in one ALLOC. */
struct waiter {
	struct pl *p;
	__u64 size;
	__u32 flags;
	__u32 timeout_ms;
	pid_t tid;
	int ret;		/* count or -errno */
	__u64 ms;		/* how long ALLOC took */
	struct memreg_pool_buf buf;
	int done;
};

static void *waiter_run(void *arg)
{
	struct waiter *w = arg;
	__u64 t0;

	__atomic_store_n(&w->tid, (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
	t0 = now_ms();
	w->ret = pl_alloc(w->p, w->size, 1, w->flags, w->timeout_ms, &w->buf);
	w->ms = now_ms() - t0;
	__atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Waits (up to 5 s) until the waiter sleeps in its ALLOC; false if it did not. */
static bool waiter_asleep(struct waiter *w)
{
	int i;

	for (i = 0; i < 500; i++) {
		pid_t tid = __atomic_load_n(&w->tid, __ATOMIC_ACQUIRE);

		if (__atomic_load_n(&w->done, __ATOMIC_ACQUIRE))
			return false;
		/* Asleep twice in a row, 10 ms apart: in the ALLOC, not on its way. */
		if (tid && thread_sleeping(tid)) {
			usleep(10000);
			if (thread_sleeping(tid) && !__atomic_load_n(&w->done, __ATOMIC_ACQUIRE))
				return true;
		}
		usleep(10000);
	}
	return false;
}

/* ---- POOL_CREATE ---- */

/* A valid create of one 4 KiB class (64 buffers, low 4, high 40, initial 16). */
static int create_ok(int fd, struct pl *p)
{
	struct memreg_pool_class c = cl(K4, 64, 4, 40, 16);

	return pl_create(p, fd, &c, 1, RW, 1000, 100);
}

/* POOL_CREATE of the classes `c`; -errno or 0. */
static int create_classes(int fd, const struct memreg_pool_class *c, __u32 nr)
{
	struct pl p;

	return pl_create(&p, fd, c, nr, RW, 1000, 100);
}

TEST(create_refuses_bad_classes)
{
	struct memreg_pool_class c[9];
	struct pl p;
	int fd = memreg_open();
	int i;

	ASSERT_GE(fd, 0);
	/* Buffer sizes: not a power of two, too small, too large, zero. */
	c[0] = cl(3000, 64, 0, 0, 0);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 1));
	c[0] = cl(32, 1024, 0, 0, 0);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 1));
	c[0] = cl(MEMREG_POOL_MAX_BUFFER * 2, 4, 0, 0, 0);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 1));
	c[0] = cl(0, 64, 0, 0, 0);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 1));
	/* Classes not increasing: equal, then decreasing (the first one valid). */
	c[0] = cl(K4, 64, 0, 0, 0);
	c[1] = cl(K4, 64, 0, 0, 0);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 2));
	c[1] = cl(256, 256, 0, 0, 0);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 2));
	/* A bad second class spoils the first. */
	c[1] = cl(8192, 12, 0, 0, 0);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 2));
	/* max_buffers: 0, not a multiple of chunk_buffers (16 for 4 KiB), too many. */
	c[0] = cl(K4, 0, 0, 0, 0);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 1));
	c[0] = cl(K4, 40, 0, 0, 0);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 1));
	c[0] = cl(K4, MEMREG_POOL_MAX_BUFFERS + 16, 0, 0, 0);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 1));
	c[0] = cl(64, 1000, 0, 0, 0);	/* 1024 to a chunk of 64 B buffers */
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 1));
	/* low_watermark not below max. */
	c[0] = cl(K4, 64, 64, 0, 0);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 1));
	c[0] = cl(K4, 64, 65, 0, 0);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 1));
	/* high_watermark below low + chunk_buffers (0 is "never"). */
	c[0] = cl(K4, 64, 4, 19, 16);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 1));
	c[0] = cl(K4, 64, 4, 1, 16);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 1));
	/* initial not a multiple of chunk_buffers, or above max. */
	c[0] = cl(K4, 64, 4, 40, 8);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 1));
	c[0] = cl(K4, 64, 4, 40, 80);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 1));
	/* A mapping past 64 GiB: 65536 buffers of 2 MiB. */
	c[0] = cl(MEMREG_POOL_MAX_BUFFER, MEMREG_POOL_MAX_BUFFERS, 0, 0, 0);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 1));
	/* nr_classes 0 and 9. */
	for (i = 0; i < 9; i++)
		c[i] = cl(64U << i, 4096, 0, 0, 0);
	c[0] = cl(64, 4096, 0, 0, 0);
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 0));
	EXPECT_EQ(-EINVAL, create_classes(fd, c, 9));

	/* The limits themselves are fine: the low watermark just below max, high = low + chunk. */
	c[0] = cl(K4, 64, 63, 0, 64);
	c[1] = cl(8192, 16, 4, 12, 0);
	c[2] = cl(MEMREG_POOL_MAX_BUFFER, 1, 0, 0, 0);
	ASSERT_EQ(0, pl_create(&p, fd, c, 3, RW, 1, 0));
	/* Nothing was created by the refused calls. */
	EXPECT_EQ(0, p.pool);
	EXPECT_EQ(16, p.cl[0].chunk_buffers);
	EXPECT_EQ(8, p.cl[1].chunk_buffers);
	EXPECT_EQ(1, p.cl[2].chunk_buffers);
	EXPECT_EQ(0, p.cl[0].offset);
	EXPECT_EQ(64 * K4, p.cl[1].offset);
	EXPECT_EQ(64 * K4 + 16 * 8192, p.cl[2].offset);
	EXPECT_EQ(64 * K4 + 16 * 8192 + MEMREG_POOL_MAX_BUFFER, p.bytes);
	/* Eight classes, the most. */
	for (i = 0; i < 8; i++)
		c[i] = cl(64U << i, 4096, 0, 0, 0);
	ASSERT_EQ(0, pl_create(&p, fd, c, 8, RW, 1, 0));
	EXPECT_EQ(1, p.pool);
	for (i = 0; i < 8; i++)
		EXPECT_EQ((CHUNK_BYTES / (64U << i)), p.cl[i].chunk_buffers) TH_LOG("class %d", i);
	close(fd);
}

TEST(create_refuses_bad_fields)
{
	struct memreg_pool_class c = cl(K4, 64, 4, 40, 16);
	struct memreg_pool_create pc;
	struct memreg_pool_class *ro;
	struct pl p;
	int fd = memreg_open();
	int i;

	ASSERT_GE(fd, 0);
	/* access: without LOCAL_WRITE, unknown bits. */
	EXPECT_EQ(-EINVAL, pl_create(&p, fd, &c, 1, RO, 1000, 100));
	EXPECT_EQ(-EINVAL, pl_create(&p, fd, &c, 1, MEMREG_ACCESS_REMOTE_WRITE, 1000, 100));
	EXPECT_EQ(-EINVAL, pl_create(&p, fd, &c, 1, 0, 1000, 100));
	EXPECT_EQ(-EINVAL, pl_create(&p, fd, &c, 1, RW | 0x10, 1000, 100));
	/* Timeouts: leak 0 or past the maximum, shrink past the maximum. */
	EXPECT_EQ(-EINVAL, pl_create(&p, fd, &c, 1, RW, 0, 100));
	EXPECT_EQ(-EINVAL, pl_create(&p, fd, &c, 1, RW, MEMREG_POOL_MAX_TIMEOUT_MS + 1, 100));
	EXPECT_EQ(-EINVAL, pl_create(&p, fd, &c, 1, RW, 1000, MEMREG_POOL_MAX_TIMEOUT_MS + 1));
	/* Reserved fields. */
	memset(&pc, 0, sizeof(pc));
	pc.classes = PTR(&c);
	pc.nr_classes = 1;
	pc.access = RW;
	pc.leak_timeout_ms = 1000;
	pc.reserved0 = 1;
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_POOL_CREATE, &pc));
	EXPECT_EQ(EINVAL, errno);
	pc.reserved0 = 0;
	for (i = 0; i < 2; i++) {
		pc.reserved[i] = 1;
		EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_POOL_CREATE, &pc)) TH_LOG("reserved[%d]", i);
		EXPECT_EQ(EINVAL, errno);
		pc.reserved[i] = 0;
	}
	/* Out fields given as input are ignored. */
	pc.pool = 7;
	pc.map_bytes = 12345;
	c.chunk_buffers = 3;
	c.offset = 99;
	/* Bad pointers: the classes, the argument. */
	pc.classes = 0;
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_POOL_CREATE, &pc));
	EXPECT_EQ(EFAULT, errno);
	pc.classes = 8;
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_POOL_CREATE, &pc));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_POOL_CREATE, NULL));
	EXPECT_EQ(EFAULT, errno);
	/* Classes that cannot be written back: no pool is created. */
	ro = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, ro);
	*ro = cl(K4, 64, 4, 40, 16);
	ASSERT_EQ(0, mprotect(ro, PAGE, PROT_READ));
	pc.classes = PTR(ro);
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_POOL_CREATE, &pc));
	EXPECT_EQ(EFAULT, errno);
	munmap(ro, PAGE);

	pc.classes = PTR(&c);
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_POOL_CREATE, &pc));
	EXPECT_EQ(0, pc.pool);
	EXPECT_EQ(64 * K4, pc.map_bytes);
	EXPECT_EQ(16, c.chunk_buffers);
	EXPECT_EQ(0, c.offset);
	/* The input fields are left as they were. */
	EXPECT_EQ(K4, c.buffer_size);
	EXPECT_EQ(64, c.max_buffers);
	EXPECT_EQ(4, c.low_watermark);
	EXPECT_EQ(40, c.high_watermark);
	EXPECT_EQ(16, c.initial);
	/* The limits of the timeouts are fine. */
	ASSERT_EQ(0, pl_create(&p, fd, &c, 1, MEMREG_ACCESS_LOCAL_WRITE,
			       MEMREG_POOL_MAX_TIMEOUT_MS, MEMREG_POOL_MAX_TIMEOUT_MS));
	EXPECT_EQ(1, p.pool);
	ASSERT_EQ(0, pl_create(&p, fd, &c, 1, MEMREG_ACCESS_ALL, 1, 0));
	EXPECT_EQ(2, p.pool);
	close(fd);
}

TEST(pool_indexes_limit_and_destroy)
{
	struct memreg_pool_destroy d = { 0 };
	struct memreg_pool_stats st;
	struct pl p;
	int fd = memreg_open();
	int i;

	ASSERT_GE(fd, 0);
	for (i = 0; i < MEMREG_MAX_POOLS; i++) {
		ASSERT_EQ(0, create_ok(fd, &p)) TH_LOG("pool %d", i);
		EXPECT_EQ(i, p.pool);
	}
	EXPECT_EQ(-ENOSPC, create_ok(fd, &p));
	/* DESTROY: reserved, unknown pool; then twice. */
	d.pool = 3;
	d.reserved = 1;
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_POOL_DESTROY, &d));
	EXPECT_EQ(EINVAL, errno);
	d.reserved = 0;
	d.pool = MEMREG_MAX_POOLS;
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_POOL_DESTROY, &d));
	EXPECT_EQ(EINVAL, errno);
	d.pool = ~0U;
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_POOL_DESTROY, &d));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_POOL_DESTROY, NULL));
	EXPECT_EQ(EFAULT, errno);
	d.pool = 3;
	EXPECT_EQ(0, ioctl(fd, MEMREG_IOC_POOL_DESTROY, &d));
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_POOL_DESTROY, &d));
	EXPECT_EQ(EINVAL, errno);
	/* Its index is not reused, and its calls fail. */
	EXPECT_EQ(-ENOSPC, create_ok(fd, &p));
	p.pool = 3;
	EXPECT_EQ(-EINVAL, pl_stat(&p, 0, &st));
	EXPECT_EQ(-EINVAL, pl_alloc(&p, 1, 1, 0, 0, (void *)&st));
	EXPECT_EQ(-EINVAL, pl_free1(&p, 4096));
	/* The others still answer. */
	p.pool = 4;
	EXPECT_EQ(0, pl_stat(&p, 0, &st));
	close(fd);
}

/* ---- The mapping ---- */

static int try_mmap(int fd, size_t len, int prot, int flags, off_t off)
{
	void *m = mmap(NULL, len, prot, flags, fd, off);

	if (m == MAP_FAILED)
		return -errno;
	munmap(m, len);
	return 0;
}

TEST(mmap_refuses_bad_requests)
{
	struct memreg_pool_buf b;
	struct memreg_pool_stats st;
	struct pl p;
	int fd = memreg_open();
	char *m;

	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, create_ok(fd, &p));
	/* Before the mapping: ALLOC says ENXIO, FREE knows no buffer, STATS is all zero. */
	EXPECT_EQ(-ENXIO, pl_alloc(&p, 1, 1, 0, 0, &b));
	EXPECT_EQ(-ENXIO, pl_alloc(&p, 1, 1, 0, 100, &b));
	EXPECT_EQ(-EINVAL, pl_free1(&p, 4096));
	ASSERT_EQ(0, pl_stat(&p, 0, &st));
	EXPECT_EQ(0, st.boundary);
	EXPECT_EQ(0, st.grows);
	EXPECT_EQ(0, st.allocated);
	EXPECT_EQ(0, st.free);

	/* Wrong lengths, a private mapping, execute access. */
	EXPECT_EQ(-EINVAL, try_mmap(fd, p.bytes - PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_POOL(0)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, p.bytes + PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_POOL(0)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, p.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE,
				    MEMREG_MMAP_POOL(0)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, p.bytes, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_SHARED,
				    MEMREG_MMAP_POOL(0)));
	/* Unknown pools, and an offset inside a pool's window. */
	EXPECT_EQ(-EINVAL, try_mmap(fd, p.bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_POOL(1)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, p.bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_POOL(MEMREG_MAX_POOLS - 1)));
	EXPECT_EQ(-EINVAL, try_mmap(fd, p.bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_POOL(0) + PAGE));
	/* None of these mapped the pool. */
	EXPECT_EQ(-ENXIO, pl_alloc(&p, 1, 1, 0, 0, &b));
	usleep(50000);
	EXPECT_EQ(0, STAT(&p, 0, boundary));

	/* The right one works once; a second one is EBUSY. */
	m = mmap(NULL, p.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, MEMREG_MMAP_POOL(0));
	ASSERT_NE(MAP_FAILED, m);
	p.map = m;
	EXPECT_EQ(-EBUSY, try_mmap(fd, p.bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
				   MEMREG_MMAP_POOL(0)));
	ASSERT_EQ(1, pl_alloc(&p, 1, 1, 0, ALLOC_MS, &b));
	EXPECT_EQ(PTR(m), b.addr);
	/* The mapping cannot be made executable, nor grow. */
	EXPECT_EQ(-1, mprotect(m, PAGE, PROT_READ | PROT_EXEC));
	EXPECT_EQ(MAP_FAILED, mremap(m, p.bytes, p.bytes + PAGE, 0));
	EXPECT_EQ(0, pl_free1(&p, b.addr));
	EXPECT_EQ(16, STAT(&p, 0, boundary));
	pl_close(&p);
}

/*
 * The layout: each class's partition at its offset, buffers in chunks of
 * 64 KiB (or one buffer), a key per chunk, the offset in it; fresh buffers
 * are zero; the empty part above each boundary faults.
 */
TEST(layout_chunks_keys_and_reserved_portion)
{
	struct memreg_pool_class c[3] = {
		cl(256, 512, 0, 0, 256),		/* chunk: 256 buffers */
		cl(K4, 64, 0, 0, 32),			/* chunk: 16 */
		cl(128 * 1024, 4, 0, 0, 2),		/* chunk: 1 */
	};
	struct memreg_pool_buf b[256];
	struct memreg_query q;
	__u64 keys[3][4];
	struct pl p;
	__u32 k;
	int i, n, err;

	ASSERT_EQ(0, pl_open(&p, c, 3, RW, 1000, 0));
	EXPECT_EQ(256, p.cl[0].chunk_buffers);
	EXPECT_EQ(16, p.cl[1].chunk_buffers);
	EXPECT_EQ(1, p.cl[2].chunk_buffers);
	EXPECT_EQ(0, p.cl[0].offset);
	EXPECT_EQ(512 * 256, p.cl[1].offset);
	EXPECT_EQ(512 * 256 + 64 * K4, p.cl[2].offset);
	EXPECT_EQ(512 * 256 + 64 * K4 + 4 * 128 * 1024, p.bytes);
	for (k = 0; k < 3; k++)
		ASSERT_EQ(0, pl_wait(&p, k, boundary, p.cl[k].initial));
	EXPECT_EQ(1, STAT(&p, 0, grows));
	EXPECT_EQ(2, STAT(&p, 1, grows));
	EXPECT_EQ(2, STAT(&p, 2, grows));

	memset(keys, 0, sizeof(keys));
	for (k = 0; k < 3; k++) {
		__u32 size = p.cl[k].buffer_size;

		/* All but one (the last free one would make the class grow: low 0). */
		n = alloc_n(&p, size, (int)p.cl[k].initial - 1, 64, MEMREG_POOL_NO_FALLBACK, 0, b,
			    &err);
		ASSERT_EQ(p.cl[k].initial - 1, n) TH_LOG("class %u: %d", k, err);
		for (i = 0; i < n; i++) {
			/*
			 * Lowest first: buffer i, at its offset in the one
			 * extent the initial growth mapped (at most 2 MiB).
			 */
			EXPECT_EQ(PTR(baddr(&p, k, i)), b[i].addr) TH_LOG("class %u buf %d", k, i);
			EXPECT_EQ(size, b[i].size);
			EXPECT_EQ(k, b[i].class);
			EXPECT_EQ((__u64)i * size, b[i].offset);
			EXPECT_NE(0, b[i].key);
			if (i == 0)
				keys[k][0] = b[i].key;
			else
				EXPECT_EQ(keys[k][0], b[i].key);
			/* Fresh pages: zero. */
			EXPECT_TRUE(all_bytes((char *)(unsigned long)b[i].addr, size, 0));
			memset((char *)(unsigned long)b[i].addr, 'a' + k, size);
		}
		/* The last buffer below the boundary is mapped (and free). */
		EXPECT_EQ(0, probe(baddr(&p, k, n + 1) - 1, 1));
		/* The empty part faults, for reads and writes, up to the partition's end. */
		EXPECT_EQ(SIGBUS, probe(baddr(&p, k, n + 1), 0));
		EXPECT_TRUE(faults(baddr(&p, k, n + 1)));
		EXPECT_TRUE(faults(baddr(&p, k, p.cl[k].max_buffers) - 1));
		usleep(50000);
		EXPECT_EQ(p.cl[k].initial, STAT(&p, k, boundary));
	}
	/* One key per class: each initial growth was one extent. */
	EXPECT_NE(keys[0][0], keys[1][0]);
	EXPECT_NE(keys[1][0], keys[2][0]);
	/* The registrations are what QUERY says: an extent each, with the pool's access. */
	ASSERT_EQ(0, memreg_query(p.fd, keys[1][0], &q));
	EXPECT_EQ(PTR(baddr(&p, 1, 0)), q.addr);
	EXPECT_EQ(2 * CHUNK_BYTES, q.length);
	EXPECT_EQ(RW, q.access);
	EXPECT_EQ(32, q.pages);
	EXPECT_EQ(MEMREG_STATE_VALID, q.state & MEMREG_STATE_VALID);
	ASSERT_EQ(0, memreg_query(p.fd, keys[2][0], &q));
	EXPECT_EQ(PTR(baddr(&p, 2, 0)), q.addr);
	EXPECT_EQ(2 * 128 * 1024, q.length);
	/* A pool's extent is the pool's: DEREGISTER refuses it. */
	EXPECT_EQ(-EINVAL, memreg_deregister(p.fd, keys[1][0]));
	EXPECT_EQ(0, memreg_query(p.fd, keys[1][0], &q));
	pl_close(&p);
}

/* ---- ALLOC and FREE: bad input ---- */

TEST(alloc_refuses_bad_input)
{
	struct memreg_pool_class c[2] = { cl(256, 256, 0, 0, 256), cl(K4, 64, 0, 0, 16) };
	struct memreg_pool_alloc a;
	struct memreg_pool_buf b[65];
	struct pl p;
	int i;

	ASSERT_EQ(0, pl_open(&p, c, 2, RW, 1000, 0));
	ASSERT_EQ(0, pl_wait(&p, 1, boundary, 16));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 256));
	/* Sizes: 0, past the largest class. */
	EXPECT_EQ(-EINVAL, pl_alloc(&p, 0, 1, 0, 0, b));
	EXPECT_EQ(-EINVAL, pl_alloc(&p, K4 + 1, 1, 0, 0, b));
	EXPECT_EQ(-EINVAL, pl_alloc(&p, ~0ULL, 1, 0, 0, b));
	EXPECT_EQ(-EINVAL, pl_alloc(&p, 1ULL << 32, 1, 0, 0, b));
	/* Counts: 0, 65. */
	EXPECT_EQ(-EINVAL, pl_alloc(&p, 1, 0, 0, 0, b));
	EXPECT_EQ(-EINVAL, pl_alloc(&p, 1, MEMREG_POOL_MAX_BATCH + 1, 0, 0, b));
	/* Flags, the timeout. */
	EXPECT_EQ(-EINVAL, pl_alloc(&p, 1, 1, 2, 0, b));
	EXPECT_EQ(-EINVAL, pl_alloc(&p, 1, 1, 0x80000000U, 0, b));
	EXPECT_EQ(-EINVAL, pl_alloc(&p, 1, 1, 0, MEMREG_POOL_MAX_TIMEOUT_MS + 1, b));
	/* Reserved fields. */
	for (i = 0; i < 2; i++) {
		memset(&a, 0, sizeof(a));
		a.pool = p.pool;
		a.size = 1;
		a.count = 1;
		a.bufs = PTR(b);
		a.reserved[i] = 1;
		EXPECT_EQ(-1, ioctl(p.fd, MEMREG_IOC_POOL_ALLOC, &a)) TH_LOG("reserved[%d]", i);
		EXPECT_EQ(EINVAL, errno);
	}
	/* Unknown pools. */
	p.pool = 1;
	EXPECT_EQ(-EINVAL, pl_alloc(&p, 1, 1, 0, 0, b));
	p.pool = MEMREG_MAX_POOLS;
	EXPECT_EQ(-EINVAL, pl_alloc(&p, 1, 1, 0, 0, b));
	p.pool = 0;
	EXPECT_EQ(0, STAT(&p, 0, allocated));
	EXPECT_EQ(0, STAT(&p, 1, allocated));
	/* Bad pointers: the buffers go back. */
	EXPECT_EQ(-EFAULT, pl_alloc(&p, 1, 4, 0, 0, NULL));
	EXPECT_EQ(-EFAULT, pl_alloc(&p, K4, 4, 0, 0, (void *)8));
	/* Eight of class 1's sixteen: emptying it would start a growth, which the checks race. */
	EXPECT_EQ(-EFAULT, pl_alloc(&p, K4, 8, 0, 0,
				    (void *)((char *)p.map + p.bytes - sizeof(b[0]))));
	EXPECT_EQ(-1, ioctl(p.fd, MEMREG_IOC_POOL_ALLOC, NULL));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(0, STAT(&p, 0, allocated));
	EXPECT_EQ(256, STAT(&p, 0, free));
	EXPECT_EQ(0, STAT(&p, 1, allocated));
	EXPECT_EQ(16, STAT(&p, 1, free));
	/* The limits are fine: 64 at once, the largest size, the longest timeout. */
	EXPECT_EQ(64, pl_alloc(&p, 1, MEMREG_POOL_MAX_BATCH, 0, MEMREG_POOL_MAX_TIMEOUT_MS, b));
	EXPECT_EQ(0, free_bufs(&p, b, 64));
	EXPECT_EQ(1, pl_alloc(&p, K4, 1, MEMREG_POOL_NO_FALLBACK, 0, b));
	EXPECT_EQ(1, b[0].class);
	EXPECT_EQ(0, free_bufs(&p, b, 1));
	pl_close(&p);
}

TEST(free_refuses_bad_input_and_frees_none)
{
	struct memreg_pool_class c[2] = { cl(256, 256, 0, 0, 256), cl(K4, 64, 0, 0, 16) };
	struct memreg_pool_buf b[8];
	struct memreg_pool_free f;
	__u64 addrs[MEMREG_POOL_MAX_BATCH + 1];
	struct pl p;
	int i;

	ASSERT_EQ(0, pl_open(&p, c, 2, RW, 1000, 0));
	ASSERT_EQ(0, pl_wait(&p, 1, boundary, 16));
	ASSERT_EQ(4, pl_alloc(&p, 200, 4, 0, ALLOC_MS, b));
	ASSERT_EQ(4, pl_alloc(&p, K4, 4, 0, ALLOC_MS, b + 4));
	for (i = 0; i < 8; i++)
		addrs[i] = b[i].addr;

	/* Counts: 0, 65. */
	EXPECT_EQ(-EINVAL, pl_free(&p, addrs, 0));
	EXPECT_EQ(-EINVAL, pl_free(&p, addrs, MEMREG_POOL_MAX_BATCH + 1));
	/* Reserved fields. */
	for (i = 0; i < 2; i++) {
		memset(&f, 0, sizeof(f));
		f.pool = p.pool;
		f.count = 1;
		f.addrs = PTR(addrs);
		f.reserved[i] = 1;
		EXPECT_EQ(-1, ioctl(p.fd, MEMREG_IOC_POOL_FREE, &f)) TH_LOG("reserved[%d]", i);
		EXPECT_EQ(EINVAL, errno);
	}
	/* An unknown pool. */
	p.pool = 5;
	EXPECT_EQ(-EINVAL, pl_free(&p, addrs, 1));
	p.pool = 0;
	/* Each bad address spoils a batch of good ones: nothing is freed. */
	{
		__u64 bad[] = {
			PTR(baddr(&p, 0, 10)),		/* below the boundary, not allocated */
			PTR(baddr(&p, 1, 40)),		/* the empty part */
			b[0].addr + 1,			/* misaligned */
			b[4].addr + 256,		/* 256-aligned, not 4 KiB */
			b[1].addr,			/* twice */
			PTR(p.map) - K4,		/* below the pool */
			PTR(p.map) + p.bytes,		/* past it */
			0,
			~0ULL,
		};

		for (i = 0; i < (int)(sizeof(bad) / sizeof(bad[0])); i++) {
			__u64 batch[9];

			memcpy(batch, addrs, 8 * sizeof(__u64));
			batch[8] = bad[i];
			EXPECT_EQ(-EINVAL, pl_free(&p, batch, 9)) TH_LOG("bad address %d", i);
			/* First in the batch too. */
			batch[0] = bad[i];
			batch[8] = addrs[0];
			EXPECT_EQ(-EINVAL, pl_free(&p, batch, 9)) TH_LOG("bad address %d first", i);
			EXPECT_EQ(4, STAT(&p, 0, allocated));
			EXPECT_EQ(4, STAT(&p, 1, allocated));
		}
	}
	/* The same buffer twice in one batch. */
	addrs[8] = addrs[5];
	EXPECT_EQ(-EINVAL, pl_free(&p, addrs, 9));
	addrs[0] = addrs[1];
	EXPECT_EQ(-EINVAL, pl_free(&p, addrs, 2));
	addrs[0] = b[0].addr;
	EXPECT_EQ(4, STAT(&p, 0, allocated));
	EXPECT_EQ(4, STAT(&p, 1, allocated));
	/* Bad pointers. */
	EXPECT_EQ(-EFAULT, pl_free(&p, NULL, 1));
	EXPECT_EQ(-EFAULT, pl_free(&p, (void *)8, 2));
	EXPECT_EQ(-1, ioctl(p.fd, MEMREG_IOC_POOL_FREE, NULL));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(8, STAT(&p, 0, allocated) + STAT(&p, 1, allocated));

	/* All eight were still allocated: they free now, once. */
	EXPECT_EQ(0, pl_free(&p, addrs, 8));
	EXPECT_EQ(0, STAT(&p, 0, allocated));
	EXPECT_EQ(0, STAT(&p, 1, allocated));
	EXPECT_EQ(256, STAT(&p, 0, free));
	EXPECT_EQ(16, STAT(&p, 1, free));
	for (i = 0; i < 8; i++)
		EXPECT_EQ(-EINVAL, pl_free1(&p, addrs[i])) TH_LOG("buffer %d again", i);
	pl_close(&p);
}

TEST(stats_refuses_bad_input)
{
	struct memreg_pool_class c[2] = { cl(256, 256, 0, 0, 256), cl(K4, 64, 0, 0, 16) };
	struct memreg_pool_stats st[3];
	struct memreg_pool_info in;
	struct pl p;
	int i;

	ASSERT_EQ(0, pl_open(&p, c, 2, RW, 1000, 0));
	ASSERT_EQ(0, pl_wait(&p, 1, boundary, 16));
	/* count 0: nothing written, the number of classes told. */
	memset(st, 0xaa, sizeof(st));
	in = (struct memreg_pool_info){ .pool = p.pool, .count = 0, .stats = 0 };
	ASSERT_EQ(0, ioctl(p.fd, MEMREG_IOC_POOL_STATS, &in));
	EXPECT_EQ(2, in.count);
	/* count 1: one written. */
	in = (struct memreg_pool_info){ .pool = p.pool, .count = 1, .stats = PTR(st) };
	ASSERT_EQ(0, ioctl(p.fd, MEMREG_IOC_POOL_STATS, &in));
	EXPECT_EQ(2, in.count);
	EXPECT_EQ(256, st[0].boundary);
	EXPECT_TRUE(all_bytes((char *)&st[1], sizeof(st[1]), 0xaa));
	/* count 3: two written. */
	in = (struct memreg_pool_info){ .pool = p.pool, .count = 3, .stats = PTR(st) };
	ASSERT_EQ(0, ioctl(p.fd, MEMREG_IOC_POOL_STATS, &in));
	EXPECT_EQ(2, in.count);
	EXPECT_EQ(16, st[1].boundary);
	EXPECT_EQ(16, st[1].free);
	EXPECT_TRUE(all_bytes((char *)&st[2], sizeof(st[2]), 0xaa));
	/* Reserved fields, unknown pools, bad pointers. */
	for (i = 0; i < 2; i++) {
		in = (struct memreg_pool_info){ .pool = p.pool, .count = 2, .stats = PTR(st) };
		in.reserved[i] = 1;
		EXPECT_EQ(-1, ioctl(p.fd, MEMREG_IOC_POOL_STATS, &in)) TH_LOG("reserved[%d]", i);
		EXPECT_EQ(EINVAL, errno);
	}
	in = (struct memreg_pool_info){ .pool = 1, .count = 2, .stats = PTR(st) };
	EXPECT_EQ(-1, ioctl(p.fd, MEMREG_IOC_POOL_STATS, &in));
	EXPECT_EQ(EINVAL, errno);
	in = (struct memreg_pool_info){ .pool = p.pool, .count = 2, .stats = 8 };
	EXPECT_EQ(-1, ioctl(p.fd, MEMREG_IOC_POOL_STATS, &in));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(-1, ioctl(p.fd, MEMREG_IOC_POOL_STATS, NULL));
	EXPECT_EQ(EFAULT, errno);
	pl_close(&p);
}

/* A fixture with nothing in it, for the tests that need a longer timeout. */
FIXTURE(slow)
{
	int unused;
};

FIXTURE_SETUP(slow)
{
	self->unused = 0;
}

FIXTURE_TEARDOWN(slow)
{
}

/* ---- Allocation patterns ---- */

/* Whether the buffers are distinct, in class `c`, below max, on their boundaries. */
static bool distinct(const struct pl *p, __u32 c, const struct memreg_pool_buf *b, int n)
{
	static unsigned char seen[MEMREG_POOL_MAX_BUFFERS];
	int i;

	memset(seen, 0, sizeof(seen));
	for (i = 0; i < n; i++) {
		__u64 rel = b[i].addr - PTR(p->map) - p->cl[c].offset;
		long k = bidx(p, c, b[i].addr);

		if (b[i].class != c || rel % p->cl[c].buffer_size || k < 0 ||
		    k >= (long)p->cl[c].max_buffers || seen[k]++) {
			fprintf(stderr, "buffer %d: %#llx (index %ld, class %u) bad or twice\n", i,
				(unsigned long long)b[i].addr, k, b[i].class);
			return false;
		}
	}
	return true;
}

TEST(alloc_one_at_a_time_to_exhaustion)
{
	struct memreg_pool_class c = cl(K4, 64, 2, 0, 16);
	struct memreg_pool_buf b[65];
	struct pl p;
	int i, n, err;

	ASSERT_EQ(0, pl_open(&p, &c, 1, RW, 1000, 0));
	n = alloc_n(&p, K4, 64, 1, MEMREG_POOL_NO_FALLBACK, ALLOC_MS, b, &err);
	ASSERT_EQ(64, n) TH_LOG("stopped with %d", err);
	EXPECT_TRUE(distinct(&p, 0, b, n));
	for (i = 0; i < n; i++)
		memset((char *)(unsigned long)b[i].addr, i, K4);
	/* The maximum: nothing more, now or later. */
	EXPECT_EQ(-EAGAIN, pl_alloc(&p, K4, 1, 0, 0, b + 64));
	EXPECT_EQ(-ETIMEDOUT, pl_alloc(&p, K4, 1, 0, 50, b + 64));
	EXPECT_EQ(64, STAT(&p, 0, boundary));
	EXPECT_EQ(64, STAT(&p, 0, allocated));
	EXPECT_EQ(0, STAT(&p, 0, free));
	EXPECT_EQ(4, STAT(&p, 0, grows));
	for (i = 0; i < n; i++)
		EXPECT_TRUE(all_bytes((char *)(unsigned long)b[i].addr, K4, i)) TH_LOG("buf %d", i);
	/* One freed is the next one given; then all back. */
	ASSERT_EQ(0, pl_free1(&p, b[37].addr));
	ASSERT_EQ(1, pl_alloc(&p, K4, 1, 0, 0, b + 64));
	EXPECT_EQ(b[37].addr, b[64].addr);
	EXPECT_EQ(b[37].key, b[64].key);
	EXPECT_EQ(b[37].offset, b[64].offset);
	/* The bytes are not cleared between holders. */
	EXPECT_TRUE(all_bytes((char *)(unsigned long)b[64].addr, K4, 37));
	for (i = 0; i < n; i++)
		EXPECT_EQ(0, pl_free1(&p, b[i].addr)) TH_LOG("buf %d", i);
	EXPECT_EQ(0, STAT(&p, 0, allocated));
	EXPECT_EQ(64, STAT(&p, 0, free));
	pl_close(&p);
}

TEST(alloc_batches_to_exhaustion)
{
	struct memreg_pool_class c[2] = { cl(512, 1024, 8, 0, 128), cl(8192, 32, 0, 0, 8) };
	struct memreg_pool_buf b[1024 + 64];
	int sizes[] = { 1, 7, 64, 3, 33, 64 };
	struct pl p;
	int i, n = 0, r, k = 0, err;

	ASSERT_EQ(0, pl_open(&p, c, 2, RW, 1000, 0));
	/* Odd batch sizes: each gives what it asks or, at the end, what is left. */
	while (n < 1024) {
		r = pl_alloc(&p, 300, sizes[k++ % 6], MEMREG_POOL_NO_FALLBACK, ALLOC_MS, b + n);
		ASSERT_GT(r, 0) TH_LOG("after %d: %d", n, r);
		ASSERT_LE(r, sizes[(k - 1) % 6]);
		for (i = n; i < n + r; i++)
			EXPECT_EQ(512, b[i].size);
		n += r;
	}
	ASSERT_EQ(1024, n);
	EXPECT_TRUE(distinct(&p, 0, b, n));
	EXPECT_EQ(-EAGAIN, pl_alloc(&p, 300, 64, MEMREG_POOL_NO_FALLBACK, 0, b + n));
	EXPECT_EQ(1024, STAT(&p, 0, boundary));
	EXPECT_EQ(1024, STAT(&p, 0, allocated));
	EXPECT_EQ(0, STAT(&p, 0, fallbacks));
	/* The other class alone, by 64 with a partial last batch: 32 in all. */
	r = alloc_n(&p, 8192, 32, 64, 0, ALLOC_MS, b + n, &err);
	EXPECT_EQ(32, r) TH_LOG("%d", err);
	EXPECT_TRUE(distinct(&p, 1, b + n, r));
	EXPECT_EQ(-EAGAIN, pl_alloc(&p, 8192, 64, 0, 0, b + n + r));
	/* Batches back; a batch across two classes is fine. */
	EXPECT_EQ(0, free_bufs(&p, b + n - 32, 64));
	EXPECT_EQ(0, free_bufs(&p, b, n - 32));
	EXPECT_EQ(0, STAT(&p, 0, allocated));
	EXPECT_EQ(0, STAT(&p, 1, allocated));
	EXPECT_EQ(1024, STAT(&p, 0, free));
	EXPECT_EQ(32, STAT(&p, 1, free));
	pl_close(&p);
}

/* ---- Many threads ---- */

#define CT_THREADS	4
#define CT_HOLD		24
#define CT_ROUNDS	600

struct ct {
	struct pl *p;
	unsigned char *owner;	/* one byte per 256 bytes of the mapping: who holds it */
	int errors;
	int allocs;
	int frees;
	pthread_mutex_t lock;
	char first[256];
};

struct ct_arg {
	struct ct *ct;
	int id;
};

static void ct_fail(struct ct *ct, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&ct->lock);
	if (!ct->errors++) {
		va_start(ap, fmt);
		vsnprintf(ct->first, sizeof(ct->first), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&ct->lock);
}

/* The word each holder writes over its buffer. */
static __u64 ct_tag(int id, __u64 addr, int round)
{
	return ((__u64)(id + 1) << 56) ^ (addr << 8) ^ (__u64)round;
}

/*
 * Whether `b` is a buffer of the pool for `size` bytes: in the mapping, in
 * its class's partition on a buffer boundary, of its class's size, at its
 * offset in its chunk.
 */
static bool ct_buffer_ok(const struct pl *p, const struct memreg_pool_buf *b, __u64 size)
{
	__u64 rel = b->addr - PTR(p->map), within;
	__u32 c = b->class;

	if (rel >= p->bytes || c >= p->nr || b->size < size || b->size != p->cl[c].buffer_size ||
	    rel < p->cl[c].offset)
		return false;
	within = rel - p->cl[c].offset;
	return within < (__u64)p->cl[c].max_buffers * b->size && within % b->size == 0 &&
	       within % ((__u64)p->cl[c].chunk_buffers * b->size) == b->offset;
}

static void *ct_run(void *arg)
{
	struct ct_arg *a = arg;
	struct ct *ct = a->ct;
	struct pl *p = ct->p;
	struct memreg_pool_buf held[CT_HOLD], got[8];
	__u64 tags[CT_HOLD], addrs[CT_HOLD];
	unsigned int seed = 12345 + a->id;
	int n = 0, round, i, j, r;

	for (round = 0; round < CT_ROUNDS && !ct->errors; round++) {
		if (n < CT_HOLD && (n == 0 || rand_r(&seed) % 2)) {
			int want = 1 + rand_r(&seed) % 8;
			__u64 size = rand_r(&seed) % 10 < 7 ? 1 + rand_r(&seed) % 1024
							     : 1025 + rand_r(&seed) % (K4 - 1024);

			if (want > CT_HOLD - n)
				want = CT_HOLD - n;
			r = pl_alloc(p, size, want, 0, 10000, got);
			if (r <= 0 || r > want) {
				ct_fail(ct, "thread %d: ALLOC of %d x %llu: %d", a->id, want,
					(unsigned long long)size, r);
				break;
			}
			__atomic_fetch_add(&ct->allocs, r, __ATOMIC_RELAXED);
			for (i = 0; i < r; i++) {
				__u64 rel = got[i].addr - PTR(p->map);
				__u32 c = got[i].class;
				__u64 *w;
				unsigned char expect = 0;

				if (!ct_buffer_ok(p, &got[i], size)) {
					ct_fail(ct, "thread %d: bad buffer %#llx class %u size %u",
						a->id, (unsigned long long)got[i].addr, c,
						got[i].size);
					break;
				}
				if (!__atomic_compare_exchange_n(&ct->owner[rel / 256], &expect,
								 a->id + 1, false, __ATOMIC_ACQ_REL,
								 __ATOMIC_ACQUIRE)) {
					ct_fail(ct, "thread %d: %#llx given while thread %d holds it",
						a->id, (unsigned long long)got[i].addr,
						expect - 1);
					break;
				}
				tags[n] = ct_tag(a->id, got[i].addr, round);
				w = (__u64 *)(unsigned long)got[i].addr;
				for (j = 0; j < (int)(got[i].size / 8); j++)
					w[j] = tags[n];
				held[n++] = got[i];
			}
		} else {
			int k = 1 + rand_r(&seed) % n;

			/* Free the last k held (after checking their bytes). */
			for (i = 0; i < k; i++) {
				struct memreg_pool_buf *h = &held[n - 1 - i];
				__u64 *w = (__u64 *)(unsigned long)h->addr;
				__u64 rel = h->addr - PTR(p->map);

				for (j = 0; j < (int)(h->size / 8); j++) {
					if (w[j] != tags[n - 1 - i]) {
						ct_fail(ct, "thread %d: %#llx word %d is %#llx, "
							"want %#llx", a->id,
							(unsigned long long)h->addr, j,
							(unsigned long long)w[j],
							(unsigned long long)tags[n - 1 - i]);
						break;
					}
				}
				/* Ours no more from here: another may get it once freed. */
				__atomic_store_n(&ct->owner[rel / 256], 0, __ATOMIC_RELEASE);
				addrs[i] = h->addr;
			}
			r = pl_free(p, addrs, k);
			if (r) {
				ct_fail(ct, "thread %d: FREE of %d: %d", a->id, k, r);
				break;
			}
			__atomic_fetch_add(&ct->frees, k, __ATOMIC_RELAXED);
			n -= k;
		}
	}
	/* What is left goes back. */
	for (i = 0; i < n; i++) {
		__atomic_store_n(&ct->owner[(held[i].addr - PTR(p->map)) / 256], 0,
				 __ATOMIC_RELEASE);
		addrs[i] = held[i].addr;
	}
	if (n && (r = pl_free(p, addrs, n)))
		ct_fail(ct, "thread %d: final FREE of %d: %d", a->id, n, r);
	__atomic_fetch_add(&ct->frees, n, __ATOMIC_RELAXED);
	return NULL;
}

/*
 * Threads allocating and freeing at random (sizes of both classes, batches
 * of 1 to 8) while the classes grow and shrink under them: every address
 * handed out is held by one thread only, and each holder finds its own
 * bytes in its buffer when it frees it.
 */
TEST_F_TIMEOUT(slow, concurrent_alloc_free_never_gives_a_buffer_twice, 180)
{
	struct memreg_pool_class c[2] = {
		cl(1024, 256, 24, 24 + 64, 64),		/* chunks of 64 */
		cl(K4, 128, 4, 20, 16),			/* chunks of 16 */
	};
	pthread_t th[CT_THREADS];
	struct ct_arg args[CT_THREADS];
	struct ct ct = { .lock = PTHREAD_MUTEX_INITIALIZER };
	struct pl p;
	int i;

	ASSERT_EQ(0, pl_open(&p, c, 2, RW, 60000, 20));
	ASSERT_EQ(0, pl_wait(&p, 1, boundary, 16));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 64));
	ct.p = &p;
	ct.owner = calloc(p.bytes / 256, 1);
	ASSERT_NE(NULL, ct.owner);
	for (i = 0; i < CT_THREADS; i++) {
		args[i] = (struct ct_arg){ .ct = &ct, .id = i };
		ASSERT_EQ(0, pthread_create(&th[i], NULL, ct_run, &args[i]));
	}
	for (i = 0; i < CT_THREADS; i++)
		pthread_join(th[i], NULL);
	EXPECT_EQ(0, ct.errors) TH_LOG("%d errors, the first: %s", ct.errors, ct.first);
	EXPECT_EQ(ct.allocs, ct.frees);
	TH_LOG("%d buffers allocated and freed", ct.allocs);
	for (i = 0; i < 2; i++) {
		pl_print(&p, i, "after");
		EXPECT_EQ(0, STAT(&p, i, allocated));
		EXPECT_EQ(0, STAT(&p, i, leaks_reclaimed));
		EXPECT_EQ(0, STAT(&p, i, quarantined));
		EXPECT_EQ(0, STAT(&p, i, timeouts));
		/* A chunk being given back does not count as free. */
		EXPECT_GE(STAT(&p, i, boundary), STAT(&p, i, free));
		EXPECT_GE(STAT(&p, i, boundary), p.cl[i].initial);
	}
	free(ct.owner);
	pl_close(&p);
}

/* ---- Growth and waiting ---- */

TEST(low_watermark_triggers_growth)
{
	struct memreg_pool_class c = cl(K4, 64, 4, 0, 16);
	struct memreg_pool_buf b[64];
	struct pl p;
	long pin0 = vm_pin_kb();
	int n, err;

	ASSERT_EQ(0, pl_open(&p, &c, 1, RW, 1000, 0));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 16));
	EXPECT_EQ(1, STAT(&p, 0, grows));
	EXPECT_EQ(0, wait_vmpin(pin0 + 16 * PAGE_KB, 1000));
	/* Down to 5 free: above the watermark, no growth. */
	n = alloc_n(&p, K4, 11, 64, 0, 0, b, &err);
	ASSERT_EQ(11, n) TH_LOG("%d", err);
	usleep(200000);
	EXPECT_EQ(16, STAT(&p, 0, boundary));
	EXPECT_EQ(1, STAT(&p, 0, grows));
	EXPECT_EQ(5, STAT(&p, 0, free));
	/* 4 free: at the watermark, the work maps a chunk more, without any ALLOC waiting. */
	ASSERT_EQ(1, pl_alloc(&p, K4, 1, 0, 0, b + 11));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 32));
	EXPECT_EQ(2, STAT(&p, 0, grows));
	EXPECT_EQ(20, STAT(&p, 0, free));
	EXPECT_EQ(0, STAT(&p, 0, waits));
	EXPECT_EQ(0, wait_vmpin(pin0 + 32 * PAGE_KB, 1000));
	EXPECT_FALSE(faults(baddr(&p, 0, 31)));
	EXPECT_TRUE(faults_soon(baddr(&p, 0, 32), 1000));
	/* Fast takers rarely wait: 40 more, one at a time, without a timeout at all. */
	n = alloc_n(&p, K4, 16, 1, 0, ALLOC_MS, b + 12, &err);
	EXPECT_EQ(16, n) TH_LOG("%d", err);
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 48));
	/* Never past the maximum. */
	n = alloc_n(&p, K4, 36, 64, 0, ALLOC_MS, b + 28, &err);
	EXPECT_EQ(36, n) TH_LOG("%d", err);
	usleep(100000);
	EXPECT_EQ(64, STAT(&p, 0, boundary));
	EXPECT_EQ(4, STAT(&p, 0, grows));
	EXPECT_EQ(0, wait_vmpin(pin0 + 64 * PAGE_KB, 1000));
	pl_close(&p);
	EXPECT_EQ(0, wait_vmpin(pin0, 3000));
}

/*
 * An ALLOC made right after the mapping, while the work maps a large first
 * class (64 chunks, two extents), does not wait for the work to get to the
 * class asked for: it maps that class's first extent itself.
 */
TEST(alloc_grows_rather_than_waits)
{
	struct memreg_pool_class c[2] = {
		cl(64, MEMREG_POOL_MAX_BUFFERS, 0, 0, MEMREG_POOL_MAX_BUFFERS),
		cl(K4, 64, 0, 0, 16),
	};
	struct memreg_pool_buf b;
	struct pl p;
	__u64 t0, ms;
	int fd = memreg_open();

	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, pl_create(&p, fd, c, 2, RW, 1000, 0));
	ASSERT_EQ(0, pl_map(&p));
	t0 = now_ms();
	ASSERT_EQ(1, pl_alloc(&p, K4, 1, MEMREG_POOL_NO_FALLBACK, 20000, &b));
	ms = now_ms() - t0;
	TH_LOG("ALLOC took %llu ms", (unsigned long long)ms);
	EXPECT_EQ(1, b.class);
	EXPECT_EQ(PTR(baddr(&p, 1, 0)), b.addr);
	EXPECT_EQ(0, STAT(&p, 1, waits));
	EXPECT_EQ(0, STAT(&p, 1, timeouts));
	EXPECT_EQ(0, STAT(&p, 0, waits));
	EXPECT_EQ(16, STAT(&p, 1, boundary));
	EXPECT_EQ(1, STAT(&p, 1, grows));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, MEMREG_POOL_MAX_BUFFERS));
	EXPECT_EQ(64, STAT(&p, 0, grows));
	pl_close(&p);
	close(fd);
}

/* A FREE wakes an ALLOC waiting at the maximum; it gets that buffer. */
TEST(alloc_waits_for_a_free)
{
	struct memreg_pool_class c = cl(K4, 16, 0, 0, 16);
	struct memreg_pool_buf b[16];
	struct waiter w;
	pthread_t t;
	struct pl p;
	__u64 waits;
	int n, err;

	ASSERT_EQ(0, pl_open(&p, &c, 1, RW, 1000, 0));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 16));
	n = alloc_n(&p, K4, 16, 64, 0, 0, b, &err);
	ASSERT_EQ(16, n) TH_LOG("%d", err);
	waits = STAT(&p, 0, waits);
	EXPECT_EQ(0, waits);
	memset(&w, 0, sizeof(w));
	w.p = &p;
	w.size = 100;
	w.timeout_ms = 20000;
	ASSERT_EQ(0, pthread_create(&t, NULL, waiter_run, &w));
	ASSERT_TRUE(waiter_asleep(&w));
	ASSERT_EQ(0, pl_free1(&p, b[9].addr));
	pthread_join(t, NULL);
	EXPECT_EQ(1, w.ret);
	EXPECT_EQ(b[9].addr, w.buf.addr);
	EXPECT_LT(w.ms, 10000);
	EXPECT_EQ(waits + 1, STAT(&p, 0, waits));
	EXPECT_EQ(0, STAT(&p, 0, timeouts));
	EXPECT_EQ(16, STAT(&p, 0, allocated));
	pl_close(&p);
}

/* Timeouts: EAGAIN without waiting, ETIMEDOUT after waiting, EINTR on a signal. */
static void on_usr1(int sig)
{
	(void)sig;
}

TEST(alloc_times_out)
{
	struct memreg_pool_class c[2] = { cl(K4, 16, 0, 0, 16), cl(8192, 8, 0, 0, 8) };
	struct sigaction sa = { .sa_handler = on_usr1 };
	struct memreg_pool_buf b[24];
	struct waiter w;
	pthread_t t;
	struct pl p;
	__u64 t0, ms;
	int n, err;

	ASSERT_EQ(0, pl_open(&p, c, 2, RW, 1000, 0));
	ASSERT_EQ(0, pl_wait(&p, 1, boundary, 8));
	n = alloc_n(&p, K4, 16, 64, MEMREG_POOL_NO_FALLBACK, ALLOC_MS, b, &err);
	ASSERT_EQ(16, n) TH_LOG("%d", err);
	/* At the maximum, no fallback: timeout 0 says EAGAIN at once, uncounted. */
	t0 = now_ms();
	EXPECT_EQ(-EAGAIN, pl_alloc(&p, K4, 1, MEMREG_POOL_NO_FALLBACK, 0, b + 16));
	EXPECT_LT(now_ms() - t0, 100);
	EXPECT_EQ(0, STAT(&p, 0, waits));
	EXPECT_EQ(0, STAT(&p, 0, timeouts));
	/* A timeout: ETIMEDOUT after it, counted as a wait and a timeout. */
	t0 = now_ms();
	EXPECT_EQ(-ETIMEDOUT, pl_alloc(&p, K4, 4, MEMREG_POOL_NO_FALLBACK, 300, b + 16));
	ms = now_ms() - t0;
	EXPECT_GE(ms, 280);
	EXPECT_LT(ms, 3000);
	EXPECT_EQ(1, STAT(&p, 0, waits));
	EXPECT_EQ(1, STAT(&p, 0, timeouts));
	EXPECT_EQ(0, STAT(&p, 1, timeouts));
	EXPECT_EQ(16, STAT(&p, 0, allocated));
	EXPECT_EQ(0, STAT(&p, 1, allocated));
	/* A signal: EINTR. */
	ASSERT_EQ(0, sigemptyset(&sa.sa_mask));
	ASSERT_EQ(0, sigaction(SIGUSR1, &sa, NULL));
	memset(&w, 0, sizeof(w));
	w.p = &p;
	w.size = K4;
	w.flags = MEMREG_POOL_NO_FALLBACK;
	w.timeout_ms = 20000;
	ASSERT_EQ(0, pthread_create(&t, NULL, waiter_run, &w));
	ASSERT_TRUE(waiter_asleep(&w));
	ASSERT_EQ(0, pthread_kill(t, SIGUSR1));
	pthread_join(t, NULL);
	EXPECT_EQ(-EINTR, w.ret);
	EXPECT_LT(w.ms, 10000);
	EXPECT_EQ(16, STAT(&p, 0, allocated));
	pl_close(&p);
}

TEST(fallback_on_and_off)
{
	struct memreg_pool_class c[3] = {
		cl(256, 256, 0, 0, 256), cl(K4, 16, 0, 0, 16), cl(65536, 2, 0, 0, 2),
	};
	struct memreg_pool_buf b[300];
	struct pl p;
	int n, r, err;

	ASSERT_EQ(0, pl_open(&p, c, 3, RW, 1000, 0));
	ASSERT_EQ(0, pl_wait(&p, 2, boundary, 2));
	ASSERT_EQ(0, pl_wait(&p, 1, boundary, 16));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 256));
	/* The smallest class that fits, no fallback counted. */
	ASSERT_EQ(1, pl_alloc(&p, 257, 1, 0, 0, b));
	EXPECT_EQ(1, b[0].class);
	EXPECT_EQ(0, pl_free1(&p, b[0].addr));
	EXPECT_EQ(0, STAT(&p, 1, fallbacks));
	/* Exhaust class 0 (at its maximum). */
	n = alloc_n(&p, 100, 256, 64, MEMREG_POOL_NO_FALLBACK, ALLOC_MS, b, &err);
	ASSERT_EQ(256, n) TH_LOG("%d", err);
	/* Without fallback: nothing. */
	EXPECT_EQ(-EAGAIN, pl_alloc(&p, 100, 1, MEMREG_POOL_NO_FALLBACK, 0, b + n));
	EXPECT_EQ(-ETIMEDOUT, pl_alloc(&p, 100, 1, MEMREG_POOL_NO_FALLBACK, 50, b + n));
	/* With it: the next class, counted there. */
	ASSERT_EQ(1, pl_alloc(&p, 100, 1, 0, 0, b + n));
	EXPECT_EQ(1, b[n].class);
	EXPECT_EQ(K4, b[n].size);
	EXPECT_EQ(1, STAT(&p, 1, fallbacks));
	EXPECT_EQ(0, STAT(&p, 0, fallbacks));
	n++;
	/* A batch comes from one class; the rest of class 1 (15), then class 2. */
	r = pl_alloc(&p, 1, 64, 0, 0, b + n);
	ASSERT_EQ(15, r);
	EXPECT_EQ(1, b[n + 14].class);
	n += r;
	EXPECT_EQ(16, STAT(&p, 1, fallbacks));
	r = pl_alloc(&p, 1, 64, 0, 0, b + n);
	ASSERT_EQ(2, r);
	EXPECT_EQ(2, b[n].class);
	EXPECT_EQ(65536, b[n].size);
	EXPECT_EQ(2, STAT(&p, 2, fallbacks));
	n += r;
	/* Everything is taken: EAGAIN, even with fallback. */
	EXPECT_EQ(-EAGAIN, pl_alloc(&p, 1, 1, 0, 0, b + n));
	/* Never to a smaller class: a 4 KiB FREE does not serve 64 KiB. */
	ASSERT_EQ(0, pl_free1(&p, b[256].addr));
	EXPECT_EQ(-EAGAIN, pl_alloc(&p, 65536, 1, 0, 0, b + n));
	EXPECT_EQ(-ETIMEDOUT, pl_alloc(&p, 4097, 1, 0, 50, b + n));
	ASSERT_EQ(0, free_bufs(&p, b + 257, n - 257));
	ASSERT_EQ(0, free_bufs(&p, b, 256));
	EXPECT_EQ(0, STAT(&p, 0, allocated));
	EXPECT_EQ(0, STAT(&p, 1, allocated));
	EXPECT_EQ(0, STAT(&p, 2, allocated));
	pl_close(&p);
}

/* ---- Shrinking ---- */

TEST(shrink_by_high_watermark)
{
	struct memreg_pool_class c = cl(K4, 64, 2, 18, 16);
	struct memreg_pool_buf b[64];
	struct memreg_global_stats base;
	struct pl p;
	long pin0 = vm_pin_kb();
	__u64 g0;
	int n, err, i;

	mr_settle(&base);
	ASSERT_EQ(0, pl_open(&p, &c, 1, RW, 5000, 50));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 16));
	g0 = mr_global_pinned();
	EXPECT_EQ(base.pages_pinned + 16, g0);
	n = alloc_n(&p, K4, 64, 64, 0, ALLOC_MS, b, &err);
	ASSERT_EQ(64, n) TH_LOG("%d", err);
	EXPECT_EQ(64, STAT(&p, 0, boundary));
	EXPECT_EQ(0, wait_vmpin(pin0 + 64 * PAGE_KB, 1000));
	EXPECT_EQ(g0 + 48, mr_global_pinned());
	/* Free all: 64 > 18 free for 50 ms, chunk after chunk goes, down to initial. */
	ASSERT_EQ(0, free_bufs(&p, b, 64));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 16));
	EXPECT_EQ(3, STAT(&p, 0, shrinks));
	EXPECT_EQ(16, STAT(&p, 0, free));
	EXPECT_EQ(0, STAT(&p, 0, leaks_reclaimed));
	/* The pages left the mapping and their charges went. */
	EXPECT_EQ(0, wait_vmpin(pin0 + 16 * PAGE_KB, 2000));
	EXPECT_EQ(g0, mr_global_pinned());
	for (i = 16; i < 64; i += 7)
		EXPECT_TRUE(faults_soon(baddr(&p, 0, i), 1000)) TH_LOG("buffer %d", i);
	EXPECT_TRUE(faults_soon(baddr(&p, 0, 16), 1000));
	EXPECT_FALSE(faults(baddr(&p, 0, 15)));
	/* Never below initial. */
	usleep(300000);
	EXPECT_EQ(16, STAT(&p, 0, boundary));
	EXPECT_EQ(3, STAT(&p, 0, shrinks));
	/* And it grows again when wanted. */
	n = alloc_n(&p, K4, 20, 64, 0, ALLOC_MS, b, &err);
	EXPECT_EQ(20, n) TH_LOG("%d", err);
	EXPECT_GE(STAT(&p, 0, boundary), 32);
	EXPECT_FALSE(faults(baddr(&p, 0, 19)));
	pl_close(&p);
	EXPECT_EQ(0, wait_global(&base, 0, 5000));
	EXPECT_EQ(0, wait_vmpin(pin0, 1000));
}

/* A partition that stays at or below its high watermark keeps its chunks. */
TEST(no_shrink_at_or_below_high_watermark)
{
	struct memreg_pool_class c = cl(K4, 64, 2, 32, 0);
	struct memreg_pool_buf b[64];
	struct pl p;
	int n, err;

	ASSERT_EQ(0, pl_open(&p, &c, 1, RW, 5000, 20));
	/* Initial 0, low 2: the first chunk is mapped anyway (free 0 <= low). */
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 16));
	n = alloc_n(&p, K4, 48, 64, 0, ALLOC_MS, b, &err);
	ASSERT_EQ(48, n) TH_LOG("%d", err);
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 64));
	/* 16 + 16 = 32 free: not above 32. */
	ASSERT_EQ(0, free_bufs(&p, b + 16, 16));
	usleep(300000);
	EXPECT_EQ(64, STAT(&p, 0, boundary));
	EXPECT_EQ(0, STAT(&p, 0, shrinks));
	/* 33 free: the last chunk goes, and then 17 are free. */
	ASSERT_EQ(0, pl_free1(&p, b[47].addr));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 48));
	usleep(200000);
	EXPECT_EQ(48, STAT(&p, 0, boundary));
	EXPECT_EQ(1, STAT(&p, 0, shrinks));
	EXPECT_EQ(0, STAT(&p, 0, leaks_reclaimed));
	pl_close(&p);
}

/*
 * Memory pressure (drop_caches runs the shrinkers): a partition that never
 * shrinks by use gives back free chunks while as many as the low watermark
 * stay free, one chunk per request, never below initial.
 */
TEST(shrink_by_the_shrinker)
{
	struct memreg_pool_class c[2] = { cl(K4, 64, 20, 0, 0), cl(8192, 32, 0, 0, 16) };
	struct memreg_pool_buf b[64];
	struct pl p;
	long pin0 = vm_pin_kb();
	int n, err, i;

	ASSERT_EQ(0, pl_open(&p, c, 2, RW, 5000, 0));
	/* Initial 0, low 20: grows until more than 20 are free. */
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 32));
	ASSERT_EQ(0, pl_wait(&p, 1, boundary, 16));
	n = alloc_n(&p, K4, 64, 64, 0, ALLOC_MS, b, &err);
	ASSERT_EQ(64, n) TH_LOG("%d", err);
	ASSERT_EQ(0, free_bufs(&p, b, 64));
	usleep(200000);
	EXPECT_EQ(64, STAT(&p, 0, boundary));
	EXPECT_EQ(0, wait_vmpin(pin0 + (64 + 32) * PAGE_KB, 1000));
	/* Pressure: chunks go while 20 stay free: 64 -> 48 -> 32 and no further. */
	for (i = 0; i < 8 && STAT(&p, 0, boundary) > 32; i++) {
		ASSERT_EQ(0, drop_caches());
		usleep(100000);
	}
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 32));
	TH_LOG("%d drop_caches", i);
	ASSERT_EQ(0, drop_caches());
	usleep(200000);
	EXPECT_EQ(32, STAT(&p, 0, boundary));
	EXPECT_EQ(2, STAT(&p, 0, shrinks));
	EXPECT_TRUE(faults_soon(baddr(&p, 0, 32), 1000));
	EXPECT_TRUE(faults_soon(baddr(&p, 0, 63), 1000));
	EXPECT_FALSE(faults(baddr(&p, 0, 31)));
	/* Class 1 is at its initial size: untouched. */
	EXPECT_EQ(16, STAT(&p, 1, boundary));
	EXPECT_EQ(0, STAT(&p, 1, shrinks));
	EXPECT_EQ(0, wait_vmpin(pin0 + (32 + 32) * PAGE_KB, 2000));
	pl_close(&p);
	EXPECT_EQ(0, wait_vmpin(pin0, 3000));
}

/*
 * The shrinker learns of chunks that became free by FREE: a class grown by
 * waiting ALLOCs (each growth leaves nothing spare) and then freed entirely
 * has three free chunks above its low watermark for drop_caches to ask back.
 */
TEST(shrinker_sees_chunks_freed_after_growth)
{
	struct memreg_pool_class c = cl(K4, 64, 2, 0, 16);
	struct memreg_pool_buf b[64];
	struct pl p;
	int n, err, i;

	ASSERT_EQ(0, pl_open(&p, &c, 1, RW, 5000, 0));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 16));
	n = alloc_n(&p, K4, 64, 64, 0, ALLOC_MS, b, &err);
	ASSERT_EQ(64, n) TH_LOG("%d", err);
	ASSERT_EQ(0, free_bufs(&p, b, 64));
	usleep(100000);
	EXPECT_EQ(64, STAT(&p, 0, boundary));
	for (i = 0; i < 8 && STAT(&p, 0, boundary) > 16; i++) {
		ASSERT_EQ(0, drop_caches());
		usleep(100000);
	}
	pl_print(&p, 0, "after drop_caches");
	EXPECT_EQ(16, STAT(&p, 0, boundary)) TH_LOG("%d drop_caches", i);
	EXPECT_EQ(3, STAT(&p, 0, shrinks));
	pl_close(&p);
}

/* An allocated buffer freed while its chunk waits to go: no leak, the chunk goes. */
TEST(shrink_waits_for_allocated_buffers)
{
	struct memreg_pool_class c = cl(K4, 32, 2, 18, 16);
	struct memreg_pool_buf b[32], x;
	struct pl p;
	int n, err;

	ASSERT_EQ(0, pl_open(&p, &c, 1, RW, 60000, 20));
	n = alloc_n(&p, K4, 32, 64, 0, ALLOC_MS, b, &err);
	ASSERT_EQ(32, n) TH_LOG("%d", err);
	ASSERT_EQ(PTR(baddr(&p, 0, 31)), b[31].addr);
	memset((char *)(unsigned long)b[31].addr, 'h', K4);
	ASSERT_EQ(0, free_bufs(&p, b, 31));
	/* The shrink starts: the last chunk's 15 free buffers are no longer free. */
	ASSERT_EQ(0, pl_wait(&p, 0, free, 16));
	EXPECT_EQ(32, STAT(&p, 0, boundary));
	/* No buffer is handed out from it. */
	ASSERT_EQ(1, pl_alloc(&p, K4, 1, 0, 0, &x));
	EXPECT_LT(bidx(&p, 0, x.addr), 16);
	ASSERT_EQ(0, pl_free1(&p, x.addr));
	/* The holder's buffer is intact meanwhile. */
	usleep(200000);
	EXPECT_EQ(32, STAT(&p, 0, boundary));
	EXPECT_TRUE(all_bytes((char *)(unsigned long)b[31].addr, K4, 'h'));
	EXPECT_EQ(0, memreg_copy(p.fd, b[31].key, b[31].offset, &x, 8, MEMREG_COPY_FROM_REGION));
	/* Freed: the chunk goes at once, nothing reclaimed. */
	ASSERT_EQ(0, pl_free1(&p, b[31].addr));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 16));
	EXPECT_EQ(0, STAT(&p, 0, leaks_reclaimed));
	EXPECT_EQ(0, STAT(&p, 0, quarantined));
	EXPECT_EQ(1, STAT(&p, 0, shrinks));
	EXPECT_TRUE(faults_soon(baddr(&p, 0, 31), 1000));
	EXPECT_EQ(-ENOENT, memreg_copy(p.fd, b[31].key, 0, &x, 8, MEMREG_COPY_FROM_REGION));
	pl_close(&p);
}

/*
 * A shrinking chunk is kept when the buffers run low instead: its free
 * buffers are handed out again and no new chunk is mapped.
 */
TEST(shrinking_chunk_is_kept_when_buffers_run_low)
{
	struct memreg_pool_class c = cl(K4, 32, 2, 18, 16);
	struct memreg_pool_buf b[32];
	struct pl p;
	int n, err;

	ASSERT_EQ(0, pl_open(&p, &c, 1, RW, 60000, 20));
	n = alloc_n(&p, K4, 32, 64, 0, ALLOC_MS, b, &err);
	ASSERT_EQ(32, n) TH_LOG("%d", err);
	ASSERT_EQ(2, STAT(&p, 0, grows));
	ASSERT_EQ(0, free_bufs(&p, b, 31));
	ASSERT_EQ(0, pl_wait(&p, 0, free, 16));
	/* Take 15 of the 16 that are left: 1 free <= 2, and the chunk is kept. */
	n = alloc_n(&p, K4, 15, 64, 0, 0, b, &err);
	ASSERT_EQ(15, n) TH_LOG("%d", err);
	ASSERT_EQ(0, pl_wait(&p, 0, free, 16));
	EXPECT_EQ(32, STAT(&p, 0, boundary));
	EXPECT_EQ(2, STAT(&p, 0, grows));
	EXPECT_EQ(0, STAT(&p, 0, shrinks));
	n = alloc_n(&p, K4, 16, 64, 0, 0, b + 15, &err);
	ASSERT_EQ(16, n) TH_LOG("%d", err);
	EXPECT_GE(bidx(&p, 0, b[30].addr), 16);
	EXPECT_EQ(0, free_bufs(&p, b, 31));
	pl_close(&p);
}

/* ---- Leaks ---- */

TEST_F_TIMEOUT(slow, leak_reclaimed_after_timeout, 90)
{
	struct memreg_pool_class c = cl(K4, 32, 2, 18, 16);
	struct memreg_pool_buf b[40], x;
	struct memreg_query qq;
	struct memreg_register reg;
	struct memreg_cqe cqe;
	struct memreg_sqe s;
	struct memreg_queue q;
	struct pl p;
	char *leak, *other, tmp[16];
	__u64 lkey, t0, batch[2];
	int n, err, i, seen;

	ASSERT_EQ(0, pl_open(&p, &c, 1, RW, 600, 30));
	other = map_filled(K4, 'o');
	ASSERT_NE(NULL, other);
	ASSERT_EQ(0, memreg_register(p.fd, other, K4, RW, &reg));
	ASSERT_EQ(0, memreg_queue_init(p.fd, 16, 16, -1, &q));

	n = alloc_n(&p, K4, 32, 64, 0, ALLOC_MS, b, &err);
	ASSERT_EQ(32, n) TH_LOG("%d", err);
	/* The holder keeps the last buffer (chunk 1) and frees the rest. */
	leak = (char *)(unsigned long)b[31].addr;
	lkey = b[31].key;
	ASSERT_EQ(PTR(baddr(&p, 0, 31)), b[31].addr);
	memset(leak, 'L', K4);
	ASSERT_EQ(0, free_bufs(&p, b, 31));
	t0 = now_ms();
	/* The shrink starts; until the leak timeout, the buffer is the holder's. */
	ASSERT_EQ(0, pl_wait(&p, 0, free, 16));
	if (now_ms() - t0 < 400) {
		EXPECT_EQ(0, probe(leak, 1));
		EXPECT_EQ(0, memreg_copy(p.fd, lkey, b[31].offset, tmp, 16, MEMREG_COPY_FROM_REGION));
		EXPECT_TRUE(all_bytes(tmp, 16, 'L'));
		EXPECT_EQ(32, STAT(&p, 0, boundary));
		EXPECT_EQ(1, STAT(&p, 0, allocated));
	}
	/* Then reclaimed: the boundary goes down with it. */
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 16));
	EXPECT_GE(now_ms() - t0, 550);
	EXPECT_EQ(1, STAT(&p, 0, shrinks));
	EXPECT_EQ(1, STAT(&p, 0, leaks_reclaimed));
	EXPECT_EQ(1, STAT(&p, 0, quarantined));
	EXPECT_EQ(0, STAT(&p, 0, allocated));
	EXPECT_EQ(16, STAT(&p, 0, free));
	/* The old holder faults; its key is dead in COPY and on the ring. */
	EXPECT_TRUE(faults_soon(leak, 1000));
	EXPECT_EQ(-ENOENT, memreg_copy(p.fd, lkey, b[31].offset, tmp, 16, MEMREG_COPY_FROM_REGION));
	EXPECT_EQ(-ENOENT, memreg_copy(p.fd, lkey, b[31].offset, tmp, 16, MEMREG_COPY_TO_REGION));
	s = mr_sqe_copy(1, reg.lkey, 0, lkey, b[31].offset, 16);
	ASSERT_EQ(0, memreg_queue_run(&q, &s, &cqe));
	EXPECT_EQ(-ENOENT, cqe.status);
	s = mr_sqe_copy(2, lkey, b[31].offset, reg.lkey, 0, 16);
	ASSERT_EQ(0, memreg_queue_run(&q, &s, &cqe));
	EXPECT_EQ(-ENOENT, cqe.status);
	EXPECT_TRUE(all_bytes(other, K4, 'o'));
	EXPECT_EQ(-ENOENT, memreg_query(p.fd, lkey, &qq));

	/* Quarantined: the class grows again, and everything but it is handed out. */
	n = alloc_n(&p, K4, 31, 64, 0, ALLOC_MS, b, &err);
	ASSERT_EQ(31, n) TH_LOG("%d", err);
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 32));
	for (i = 0, seen = 0; i < n; i++)
		seen += b[i].addr == PTR(leak);
	EXPECT_EQ(0, seen);
	EXPECT_EQ(-EAGAIN, pl_alloc(&p, K4, 1, 0, 0, &x));
	EXPECT_EQ(-ETIMEDOUT, pl_alloc(&p, K4, 1, 0, 50, &x));
	/* Its address is mapped again, but it shows nothing of anyone's: fresh zeros. */
	if (!probe(leak, 0))
		EXPECT_TRUE(all_bytes(leak, K4, 0));
	for (i = 0; i < n; i++)
		memset((char *)(unsigned long)b[i].addr, 'n', K4);
	/* The holder frees it: ESTALE, with the others of its batch freed too. */
	batch[0] = b[3].addr;
	batch[1] = PTR(leak);
	EXPECT_EQ(-ESTALE, pl_free(&p, batch, 2));
	EXPECT_EQ(0, STAT(&p, 0, quarantined));
	EXPECT_EQ(1, STAT(&p, 0, leaks_reclaimed));
	EXPECT_EQ(30, STAT(&p, 0, allocated));
	EXPECT_EQ(-EINVAL, pl_free1(&p, PTR(leak)));
	EXPECT_EQ(-EINVAL, pl_free1(&p, b[3].addr));
	/* Usable again: handed out with the chunk's live key. */
	ASSERT_EQ(2, pl_alloc(&p, K4, 2, 0, 0, b + 31));
	EXPECT_TRUE((b[31].addr == PTR(leak) && b[32].addr == b[3].addr) ||
		    (b[32].addr == PTR(leak) && b[31].addr == b[3].addr));
	x = b[31].addr == PTR(leak) ? b[31] : b[32];
	EXPECT_NE(lkey, x.key);
	memset(tmp, 'N', sizeof(tmp));
	EXPECT_EQ(0, memreg_copy(p.fd, x.key, x.offset, tmp, 16, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(leak, 16, 'N'));
	EXPECT_EQ(0, pl_free1(&p, b[31].addr));
	EXPECT_EQ(0, pl_free1(&p, b[32].addr));
	for (i = 0; i < n; i++)
		if (i != 3)
			EXPECT_EQ(0, pl_free1(&p, b[i].addr)) TH_LOG("buffer %d", i);
	EXPECT_EQ(0, STAT(&p, 0, allocated));
	memreg_queue_exit(&q);
	munmap(other, K4);
	pl_close(&p);
}

/* ---- Keys ---- */

TEST(pool_keys_in_copy_and_on_the_ring)
{
	struct memreg_pool_class c[2] = { cl(256, 256, 0, 0, 256), cl(K4, 32, 0, 0, 32) };
	struct memreg_pool_class wc = cl(K4, 16, 0, 0, 16);
	struct memreg_pool_buf b[4], first[16], w;
	struct memreg_pool_destroy d = { 0 };
	struct memreg_query qq;
	struct memreg_register reg;
	struct memreg_cqe cqe;
	struct memreg_sqe s;
	struct memreg_queue q;
	struct pl p, wo;
	char *mem, tmp[K4];
	int i;

	ASSERT_EQ(0, pl_open(&p, c, 2, RW, 1000, 0));
	ASSERT_EQ(0, pl_wait(&p, 1, boundary, 32));
	mem = map_filled(K4, 'm');
	ASSERT_NE(NULL, mem);
	ASSERT_EQ(0, memreg_register(p.fd, mem, K4, RW, &reg));
	ASSERT_EQ(0, memreg_queue_init(p.fd, 16, 16, -1, &q));

	ASSERT_EQ(2, pl_alloc(&p, 256, 2, MEMREG_POOL_NO_FALLBACK, 0, b));
	/*
	 * Buffers 16 and 17 of class 1, in its second chunk but in the one
	 * extent (128 KiB) its initial growth mapped: offsets 64 and 68 KiB.
	 */
	ASSERT_EQ(16, pl_alloc(&p, K4, 16, 0, 0, first));
	ASSERT_EQ(2, pl_alloc(&p, K4, 2, 0, 0, b + 2));
	EXPECT_EQ(16, bidx(&p, 1, b[2].addr));
	EXPECT_EQ(CHUNK_BYTES, b[2].offset);
	EXPECT_EQ(17, bidx(&p, 1, b[3].addr));
	EXPECT_EQ(CHUNK_BYTES + K4, b[3].offset);
	EXPECT_EQ(first[0].key, b[2].key);
	EXPECT_EQ(b[2].key, b[3].key);
	EXPECT_NE(b[0].key, b[2].key);
	for (i = 0; i < 4; i++)
		memset((char *)(unsigned long)b[i].addr, '0' + i, b[i].size);

	/* COPY through the ioctl: both ways, at the buffer's offset in its chunk. */
	memset(tmp, 0, sizeof(tmp));
	EXPECT_EQ(0, memreg_copy(p.fd, b[1].key, b[1].offset, tmp, 256, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(tmp, 256, '1'));
	memset(tmp, 'T', sizeof(tmp));
	EXPECT_EQ(0, memreg_copy(p.fd, b[3].key, b[3].offset + 100, tmp, 50, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes((char *)(unsigned long)b[3].addr + 100, 50, 'T'));
	EXPECT_TRUE(all_bytes((char *)(unsigned long)b[3].addr, 100, '3'));
	/* The key covers its extent (two chunks, 128 KiB), not more. */
	EXPECT_EQ(0, memreg_copy(p.fd, b[3].key, 2 * CHUNK_BYTES - 16, tmp, 16,
				 MEMREG_COPY_FROM_REGION));
	EXPECT_EQ(-EINVAL, memreg_copy(p.fd, b[3].key, 2 * CHUNK_BYTES - 8, tmp, 16,
				       MEMREG_COPY_FROM_REGION));
	/* On the ring: pool -> registration, registration -> pool, pool -> pool. */
	s = mr_sqe_copy(1, reg.lkey, 0, b[0].key, b[0].offset, 256);
	ASSERT_EQ(0, memreg_queue_run(&q, &s, &cqe));
	EXPECT_EQ(0, cqe.status);
	EXPECT_EQ(256, cqe.bytes);
	EXPECT_TRUE(all_bytes(mem, 256, '0'));
	EXPECT_TRUE(all_bytes(mem + 256, K4 - 256, 'm'));
	s = mr_sqe_copy(2, b[2].key, b[2].offset, reg.lkey, 1024, 1024);
	ASSERT_EQ(0, memreg_queue_run(&q, &s, &cqe));
	EXPECT_EQ(0, cqe.status);
	EXPECT_TRUE(all_bytes((char *)(unsigned long)b[2].addr, 1024, 'm'));
	EXPECT_TRUE(all_bytes((char *)(unsigned long)b[2].addr + 1024, K4 - 1024, '2'));
	s = mr_sqe_copy(3, b[1].key, b[1].offset, b[3].key, b[3].offset, 256);
	ASSERT_EQ(0, memreg_queue_run(&q, &s, &cqe));
	EXPECT_EQ(0, cqe.status);
	EXPECT_TRUE(all_bytes((char *)(unsigned long)b[1].addr, 100, '3'));
	EXPECT_TRUE(all_bytes((char *)(unsigned long)b[1].addr + 100, 50, 'T'));
	EXPECT_TRUE(all_bytes((char *)(unsigned long)b[0].addr, 256, '0'));

	/* A pool with LOCAL_WRITE only: its keys may be written, not read. */
	ASSERT_EQ(0, pl_create(&wo, p.fd, &wc, 1, MEMREG_ACCESS_LOCAL_WRITE, 1000, 0));
	ASSERT_EQ(0, pl_map(&wo));
	ASSERT_EQ(1, pl_alloc(&wo, K4, 1, 0, ALLOC_MS, &w));
	memset(tmp, 'W', sizeof(tmp));
	EXPECT_EQ(0, memreg_copy(p.fd, w.key, w.offset, tmp, 64, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes((char *)(unsigned long)w.addr, 64, 'W'));
	EXPECT_EQ(-EACCES, memreg_copy(p.fd, w.key, w.offset, tmp, 64, MEMREG_COPY_FROM_REGION));
	s = mr_sqe_copy(4, reg.lkey, 0, w.key, w.offset, 64);
	ASSERT_EQ(0, memreg_queue_run(&q, &s, &cqe));
	EXPECT_EQ(-EACCES, cqe.status);
	EXPECT_TRUE(all_bytes(mem, 256, '0'));
	s = mr_sqe_copy(5, w.key, w.offset, reg.lkey, 0, 64);
	ASSERT_EQ(0, memreg_queue_run(&q, &s, &cqe));
	EXPECT_EQ(0, cqe.status);
	EXPECT_TRUE(all_bytes((char *)(unsigned long)w.addr, 64, '0'));
	ASSERT_EQ(0, memreg_query(p.fd, w.key, &qq));
	EXPECT_EQ(MEMREG_ACCESS_LOCAL_WRITE, qq.access);
	/* Keys of a destroyed pool are dead. */
	d.pool = wo.pool;
	ASSERT_EQ(0, ioctl(p.fd, MEMREG_IOC_POOL_DESTROY, &d));
	EXPECT_EQ(-ENOENT, memreg_copy(p.fd, w.key, w.offset, tmp, 64, MEMREG_COPY_TO_REGION));
	s = mr_sqe_copy(6, w.key, w.offset, reg.lkey, 0, 64);
	ASSERT_EQ(0, memreg_queue_run(&q, &s, &cqe));
	EXPECT_EQ(-ENOENT, cqe.status);
	munmap(wo.map, wo.bytes);
	memreg_queue_exit(&q);
	munmap(mem, K4);
	pl_close(&p);
}

/* ---- Limits ---- */

#define CHILD_CHECK(cond) do {							\
	if (!(cond)) {								\
		fprintf(stderr, "%s:%d: child check failed: %s\n", __FILE__,	\
			__LINE__, #cond);					\
		return 1;							\
	}									\
} while (0)

/* As uid nobody with RLIMIT_MEMLOCK of 32 pages: the class grows to 32 buffers, no further. */
static int memlock_child(void)
{
	struct rlimit rl = { 32 * PAGE, 32 * PAGE };
	struct memreg_pool_class c = cl(K4, 64, 2, 0, 16);
	struct memreg_pool_buf b[64];
	struct pl p;
	int fd = memreg_open(), n, err;

	CHILD_CHECK(fd >= 0);
	CHILD_CHECK(!setrlimit(RLIMIT_MEMLOCK, &rl));
	CHILD_CHECK(!setgid(NOBODY) && !setuid(NOBODY));
	CHILD_CHECK(!pl_create(&p, fd, &c, 1, RW, 1000, 0));
	CHILD_CHECK(!pl_map(&p));
	n = alloc_n(&p, K4, 32, 64, 0, ALLOC_MS, b, &err);
	CHILD_CHECK(n == 32);
	CHILD_CHECK(vm_pin_kb() == 32 * (long)PAGE_KB);
	/* No more: the growth fails at the limit and ALLOC times out. */
	CHILD_CHECK(pl_alloc(&p, K4, 1, 0, 300, b + 32) == -ETIMEDOUT);
	CHILD_CHECK(STAT(&p, 0, boundary) == 32);
	CHILD_CHECK(STAT(&p, 0, timeouts) == 1);
	CHILD_CHECK(faults(baddr(&p, 0, 32)));
	CHILD_CHECK(vm_pin_kb() == 32 * (long)PAGE_KB);
	/* A FREE makes room in the class, not in the limit. */
	CHILD_CHECK(!pl_free1(&p, b[5].addr));
	CHILD_CHECK(pl_alloc(&p, K4, 1, 0, 100, b + 32) == 1 && b[32].addr == b[5].addr);
	CHILD_CHECK(pl_alloc(&p, K4, 1, 0, 100, b + 32) == -ETIMEDOUT);
	CHILD_CHECK(STAT(&p, 0, boundary) == 32);
	pl_close(&p);
	CHILD_CHECK(!wait_vmpin(0, 3000));
	return 0;
}

TEST(rlimit_memlock_stops_growth)
{
	struct memreg_global_stats base;
	pid_t pid;

	mr_settle(&base);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid)
		_exit(memlock_child());
	EXPECT_EQ(0, wait_exit(pid));
	EXPECT_EQ(0, wait_global(&base, 0, 5000));
}

/* ---- Statistics ---- */

TEST(fdinfo_shows_the_counters)
{
	struct memreg_pool_class c[2] = { cl(256, 256, 0, 0, 256), cl(K4, 32, 0, 0, 16) };
	struct memreg_pool_buf b[2];
	struct memreg_pool_stats s;
	char path[64], line[512], want[512];
	struct pl p;
	__u32 k;
	FILE *f;
	int found;

	ASSERT_EQ(0, pl_open(&p, c, 2, RW, 1000, 0));
	ASSERT_EQ(0, pl_wait(&p, 1, boundary, 16));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 256));
	ASSERT_EQ(1, pl_alloc(&p, 300, 1, 0, 0, b));
	ASSERT_EQ(1, pl_alloc(&p, 30, 1, 0, 0, b + 1));
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", p.fd);
	for (k = 0; k < 2; k++) {
		ASSERT_EQ(0, pl_stat(&p, k, &s));
		snprintf(want, sizeof(want), "memreg-pool%u-class%u:\tboundary %llu allocated %llu "
			 "free %llu grows %llu shrinks %llu waits %llu timeouts %llu fallbacks %llu "
			 "leaks_reclaimed %llu quarantined %llu\n", p.pool, k,
			 (unsigned long long)s.boundary, (unsigned long long)s.allocated,
			 (unsigned long long)s.free, (unsigned long long)s.grows,
			 (unsigned long long)s.shrinks, (unsigned long long)s.waits,
			 (unsigned long long)s.timeouts, (unsigned long long)s.fallbacks,
			 (unsigned long long)s.leaks_reclaimed, (unsigned long long)s.quarantined);
		f = fopen(path, "r");
		ASSERT_NE(NULL, f);
		found = 0;
		while (fgets(line, sizeof(line), f))
			found += !strcmp(line, want);
		fclose(f);
		EXPECT_EQ(1, found) TH_LOG("no line %s", want);
	}
	EXPECT_EQ(1, STAT(&p, 1, allocated));
	EXPECT_EQ(1, STAT(&p, 0, allocated));
	pl_close(&p);
}

/* ---- Teardown ---- */

TEST(destroy_leaves_nothing)
{
	struct memreg_pool_class c[2] = { cl(256, 512, 0, 0, 256), cl(K4, 64, 4, 0, 32) };
	struct memreg_pool_destroy d = { 0 };
	struct memreg_global_stats base, g;
	struct memreg_pool_buf b[8];
	struct memreg_pool_stats st;
	struct pl p, q;
	long pin0 = vm_pin_kb();
	char tmp[8];

	mr_settle(&base);
	ASSERT_EQ(0, pl_open(&p, c, 2, RW, 1000, 0));
	ASSERT_EQ(0, pl_wait(&p, 1, boundary, 32));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 256));
	ASSERT_EQ(4, pl_alloc(&p, K4, 4, 0, 0, b));
	ASSERT_EQ(4, pl_alloc(&p, 1, 4, 0, 0, b + 4));
	ASSERT_EQ(0, memreg_global_stats(p.fd, &g));
	/* One extent each: the initial growths (64 KiB and 128 KiB). */
	EXPECT_EQ(base.regions + 1 + 1, g.regions);
	EXPECT_EQ(base.pages_pinned + 16 + 32, g.pages_pinned);
	EXPECT_EQ(0, wait_vmpin(pin0 + 48 * PAGE_KB, 1000));

	d.pool = p.pool;
	ASSERT_EQ(0, ioctl(p.fd, MEMREG_IOC_POOL_DESTROY, &d));
	/* Keys dead, pages gone from the mapping, charges back, at once. */
	EXPECT_EQ(-ENOENT, memreg_copy(p.fd, b[0].key, 0, tmp, 8, MEMREG_COPY_FROM_REGION));
	EXPECT_EQ(-ENOENT, memreg_copy(p.fd, b[4].key, 0, tmp, 8, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(faults((void *)(unsigned long)b[0].addr));
	EXPECT_TRUE(faults((void *)(unsigned long)b[4].addr));
	EXPECT_TRUE(faults(p.map));
	EXPECT_EQ(0, vm_pin_kb() - pin0);
	EXPECT_EQ(0, wait_global(&base, 1, 5000));
	/* The index answers nothing more. */
	EXPECT_EQ(-EINVAL, pl_alloc(&p, 1, 1, 0, 0, b));
	EXPECT_EQ(-EINVAL, pl_free1(&p, b[0].addr));
	EXPECT_EQ(-EINVAL, pl_stat(&p, 0, &st));
	EXPECT_EQ(-1, ioctl(p.fd, MEMREG_IOC_POOL_DESTROY, &d));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-EINVAL, try_mmap(p.fd, p.bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_POOL(p.pool)));
	/* The mapping stays until unmapped (and faults). */
	EXPECT_EQ(0, munmap(p.map, p.bytes));
	p.map = NULL;
	/* A new pool gets the next index. */
	ASSERT_EQ(0, create_ok(p.fd, &q));
	EXPECT_EQ(p.pool + 1, q.pool);
	pl_close(&p);
	EXPECT_EQ(0, wait_global(&base, 0, 5000));
}

TEST(munmap_destroys_the_pool)
{
	struct memreg_pool_class c = cl(K4, 64, 4, 0, 32);
	struct memreg_global_stats base;
	struct memreg_pool_buf b[4], x;
	struct memreg_pool_stats st;
	struct pl p, q;
	long pin0 = vm_pin_kb();
	char tmp[8];
	int i, r = 0;

	mr_settle(&base);
	ASSERT_EQ(0, pl_open(&p, &c, 1, RW, 1000, 0));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 32));
	ASSERT_EQ(4, pl_alloc(&p, K4, 4, 0, 0, b));
	EXPECT_EQ(0, wait_vmpin(pin0 + 32 * PAGE_KB, 1000));
	ASSERT_EQ(0, munmap(p.map, p.bytes));
	p.map = NULL;
	/* Its keys die with the mapping. */
	EXPECT_EQ(-ENOENT, memreg_copy(p.fd, b[0].key, 0, tmp, 8, MEMREG_COPY_FROM_REGION));
	/* ENXIO while it dies, then EINVAL: it is destroyed. */
	for (i = 0; i < 500; i++) {
		r = pl_alloc(&p, K4, 1, 0, 0, b);
		if (r != -ENXIO)
			break;
		usleep(10000);
	}
	EXPECT_EQ(-EINVAL, r);
	EXPECT_EQ(-EINVAL, pl_stat(&p, 0, &st));
	EXPECT_EQ(-EINVAL, pl_free1(&p, b[1].addr));
	EXPECT_EQ(-EINVAL, try_mmap(p.fd, p.bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_POOL(p.pool)));
	EXPECT_EQ(0, wait_global(&base, 1, 5000));
	EXPECT_EQ(0, wait_vmpin(pin0, 1000));

	/*
	 * Unmapping part of it is refused (EINVAL): the mapping cannot be split,
	 * and the pool goes on whole, its pages, keys and charges untouched.
	 */
	ASSERT_EQ(0, pl_create(&q, p.fd, &c, 1, RW, 1000, 0));
	EXPECT_EQ(1, q.pool);
	ASSERT_EQ(0, pl_map(&q));
	ASSERT_EQ(0, pl_wait(&q, 0, boundary, 32));
	ASSERT_EQ(4, pl_alloc(&q, K4, 4, 0, 0, b));
	memset((char *)(unsigned long)b[3].addr, 'u', K4);
	EXPECT_EQ(0, wait_vmpin(pin0 + 32 * PAGE_KB, 1000));
	EXPECT_EQ(-1, munmap(q.map + 40 * K4, K4));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, munmap(q.map, K4));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, munmap(q.map + q.bytes - K4, K4));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, munmap(q.map + K4, q.bytes - K4));
	EXPECT_EQ(EINVAL, errno);
	usleep(100000);
	ASSERT_EQ(1, pl_alloc(&q, K4, 1, 0, 0, &x));
	EXPECT_EQ(0, memreg_copy(p.fd, b[3].key, b[3].offset, tmp, 8, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(tmp, 8, 'u'));
	EXPECT_TRUE(all_bytes((char *)(unsigned long)b[3].addr, K4, 'u'));
	EXPECT_EQ(0, probe((void *)(unsigned long)x.addr, 1));
	EXPECT_EQ(0, probe(q.map + 32 * K4 - 1, 1));
	EXPECT_TRUE(faults(q.map + 32 * K4));
	EXPECT_TRUE(faults(q.map + 40 * K4));
	EXPECT_EQ(32, STAT(&q, 0, boundary));
	EXPECT_EQ(5, STAT(&q, 0, allocated));
	EXPECT_EQ(pin0 + 32 * (long)PAGE_KB, vm_pin_kb());
	/* The whole of it still goes, and the pool with it. */
	ASSERT_EQ(0, munmap(q.map, q.bytes));
	q.map = NULL;
	EXPECT_EQ(-EINVAL, wait_pool_gone(&q, false));
	EXPECT_EQ(-ENOENT, memreg_copy(p.fd, b[3].key, b[3].offset, tmp, 8, MEMREG_COPY_FROM_REGION));
	EXPECT_EQ(0, wait_global(&base, 1, 5000));
	EXPECT_EQ(0, wait_vmpin(pin0, 1000));
	pl_close(&p);
	EXPECT_EQ(0, wait_global(&base, 0, 5000));
}

TEST(close_leaves_nothing)
{
	struct memreg_pool_class c[2] = { cl(256, 512, 0, 0, 256), cl(K4, 64, 4, 20, 32) };
	struct memreg_global_stats base;
	struct memreg_pool_buf b[8];
	struct pl p;
	long pin0 = vm_pin_kb();
	int fd;

	mr_settle(&base);
	/* Created, never mapped. */
	fd = memreg_open();
	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, pl_create(&p, fd, c, 2, RW, 1000, 100));
	ASSERT_EQ(0, pl_create(&p, fd, c, 2, RW, 1000, 100));
	close(fd);
	EXPECT_EQ(0, wait_global(&base, 0, 5000));

	/* Mapped, buffers held, a shrink pending: the mapping keeps the file... */
	ASSERT_EQ(0, pl_open(&p, c, 2, RW, 60000, 100));
	ASSERT_EQ(0, pl_wait(&p, 1, boundary, 32));
	ASSERT_EQ(8, pl_alloc(&p, K4, 8, 0, 0, b));
	close(p.fd);
	p.fd = -1;
	memset((char *)(unsigned long)b[7].addr, 'c', K4);
	EXPECT_TRUE(all_bytes((char *)(unsigned long)b[7].addr, K4, 'c'));
	EXPECT_EQ(0, wait_vmpin(pin0 + 48 * PAGE_KB, 1000));
	/* ...until it is unmapped. */
	pl_close(&p);
	EXPECT_EQ(0, wait_global(&base, 0, 5000));
	EXPECT_EQ(0, wait_vmpin(pin0, 1000));

	/* Mapped and unmapped, then closed. */
	ASSERT_EQ(0, pl_open(&p, c, 2, RW, 1000, 0));
	ASSERT_EQ(0, pl_wait(&p, 1, boundary, 32));
	ASSERT_EQ(0, munmap(p.map, p.bytes));
	p.map = NULL;
	pl_close(&p);
	EXPECT_EQ(0, wait_global(&base, 0, 5000));
	EXPECT_EQ(0, wait_vmpin(pin0, 1000));
}

TEST(fork_does_not_inherit_the_pool)
{
	struct memreg_pool_class c = cl(K4, 64, 4, 0, 32);
	struct memreg_global_stats base;
	struct memreg_pool_buf b[4], x;
	struct pl p;
	long pin0 = vm_pin_kb();
	char tmp[8];
	pid_t pid;

	mr_settle(&base);
	ASSERT_EQ(0, pl_open(&p, &c, 1, RW, 1000, 0));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 32));
	ASSERT_EQ(4, pl_alloc(&p, K4, 4, 0, 0, b));
	memset((char *)(unsigned long)b[0].addr, 'f', K4);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		/* No mapping: touching the pool faults; the pool's calls are the owner's. */
		if (!faults((void *)(unsigned long)b[0].addr) || !faults(p.map))
			_exit(1);
		if (pl_alloc(&p, K4, 1, 0, 0, &x) != -EPERM)
			_exit(2);
		if (pl_free1(&p, b[0].addr) != -EPERM)
			_exit(3);
		no_core();
		/* And without the handler, a fault kills. */
		*(volatile char *)(unsigned long)b[0].addr = 1;
		_exit(4);
	}
	EXPECT_EQ(SIGSEGV, wait_signal(pid));
	/* The parent's pool goes on. */
	EXPECT_TRUE(all_bytes((char *)(unsigned long)b[0].addr, K4, 'f'));
	EXPECT_EQ(0, memreg_copy(p.fd, b[0].key, b[0].offset, tmp, 8, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(tmp, 8, 'f'));
	EXPECT_EQ(0, pl_free1(&p, b[0].addr));
	ASSERT_EQ(1, pl_alloc(&p, K4, 1, 0, 0, &x));
	EXPECT_EQ(b[0].addr, x.addr);
	EXPECT_EQ(4, STAT(&p, 0, allocated));
	EXPECT_EQ(32, STAT(&p, 0, boundary));
	EXPECT_EQ(0, wait_vmpin(pin0 + 32 * PAGE_KB, 1000));
	pl_close(&p);
	EXPECT_EQ(0, wait_global(&base, 0, 5000));
	EXPECT_EQ(0, wait_vmpin(pin0, 1000));
}

/* A child with pools mapped and buffers held exits, or is killed while waiting in ALLOC. */
TEST(exit_and_kill_leave_nothing)
{
	struct memreg_pool_class c[2] = { cl(256, 512, 0, 0, 256), cl(K4, 16, 0, 18, 16) };
	struct memreg_global_stats base;
	int ready[2];
	pid_t pid;
	char ch;

	mr_settle(&base);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		struct memreg_pool_buf b[16];
		struct pl p, q;
		int err;

		if (pl_open(&p, c, 2, RW, 1000, 10) || pl_create(&q, p.fd, c, 2, RW, 1000, 10) ||
		    pl_map(&q))
			_exit(1);
		if (alloc_n(&p, K4, 16, 64, 0, ALLOC_MS, b, &err) != 16)
			_exit(2);
		if (alloc_n(&q, 1, 16, 64, 0, ALLOC_MS, b, &err) != 16)
			_exit(3);
		_exit(0);
	}
	EXPECT_EQ(0, wait_exit(pid));
	EXPECT_EQ(0, wait_global(&base, 0, 5000));

	ASSERT_EQ(0, pipe(ready));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid) {
		struct memreg_pool_buf b[16];
		struct pl p;
		int err;

		close(ready[0]);
		if (pl_open(&p, c, 2, RW, 1000, 10))
			_exit(1);
		if (alloc_n(&p, K4, 16, 64, MEMREG_POOL_NO_FALLBACK, ALLOC_MS, b, &err) != 16)
			_exit(2);
		if (write(ready[1], "r", 1) != 1)
			_exit(3);
		pl_alloc(&p, K4, 1, MEMREG_POOL_NO_FALLBACK, MEMREG_POOL_MAX_TIMEOUT_MS, b);
		_exit(4);
	}
	close(ready[1]);
	ASSERT_EQ(1, read(ready[0], &ch, 1));
	usleep(100000);
	ASSERT_EQ(0, kill(pid, SIGKILL));
	EXPECT_EQ(SIGKILL, wait_signal(pid));
	close(ready[0]);
	EXPECT_EQ(0, wait_global(&base, 0, 5000));
}

/* ---- A pool's mapping is its own ---- */

/*
 * mprotect: of part of the mapping, refused (EINVAL: it cannot be split);
 * of the whole of it to other access, refused (EACCES); to its own access,
 * nothing to do. The pool goes on as before, writable.
 */
TEST(mprotect_cannot_change_the_mapping)
{
	struct memreg_pool_class c = cl(K4, 64, 0, 0, 32);
	struct memreg_pool_buf b[4], x;
	struct pl p;
	long pin0 = vm_pin_kb();
	char tmp[8];

	ASSERT_EQ(0, pl_open(&p, &c, 1, RW, 1000, 0));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 32));
	ASSERT_EQ(4, pl_alloc(&p, K4, 4, 0, 0, b));
	memset((char *)(unsigned long)b[2].addr, 'm', K4);
	EXPECT_EQ(0, wait_vmpin(pin0 + 32 * PAGE_KB, 1000));
	/* Part of it: the first page, one in the middle, the last one, all but the first. */
	EXPECT_EQ(-1, mprotect(p.map, PAGE, PROT_READ));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, mprotect(p.map + 20 * K4, PAGE, PROT_NONE));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, mprotect(p.map + p.bytes - PAGE, PAGE, PROT_READ));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, mprotect(p.map + PAGE, p.bytes - PAGE, PROT_READ));
	EXPECT_EQ(EINVAL, errno);
	/* All of it, to other access. */
	EXPECT_EQ(-1, mprotect(p.map, p.bytes, PROT_READ));
	EXPECT_EQ(EACCES, errno);
	EXPECT_EQ(-1, mprotect(p.map, p.bytes, PROT_NONE));
	EXPECT_EQ(EACCES, errno);
	EXPECT_EQ(-1, mprotect(p.map, p.bytes, PROT_READ | PROT_WRITE | PROT_EXEC));
	EXPECT_EQ(EACCES, errno);
	/* All of it, to the access it has: nothing changes, and that is fine. */
	EXPECT_EQ(0, mprotect(p.map, p.bytes, PROT_READ | PROT_WRITE));
	/* Still one writable mapping with its pages, keys and charges. */
	EXPECT_EQ(0, probe(p.map, 1));
	EXPECT_EQ(0, probe(baddr(&p, 0, 20), 1));
	EXPECT_EQ(0, probe(baddr(&p, 0, 32) - 1, 1));
	EXPECT_TRUE(faults(baddr(&p, 0, 32)));
	EXPECT_TRUE(all_bytes((char *)(unsigned long)b[2].addr, K4, 'm'));
	memset((char *)(unsigned long)b[3].addr, 'w', K4);
	EXPECT_EQ(0, memreg_copy(p.fd, b[3].key, b[3].offset, tmp, 8, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(tmp, 8, 'w'));
	ASSERT_EQ(1, pl_alloc(&p, K4, 1, 0, ALLOC_MS, &x));
	EXPECT_EQ(PTR(baddr(&p, 0, 4)), x.addr);
	EXPECT_EQ(32, STAT(&p, 0, boundary));
	EXPECT_EQ(5, STAT(&p, 0, allocated));
	EXPECT_EQ(pin0 + 32 * (long)PAGE_KB, vm_pin_kb());
	pl_close(&p);
	EXPECT_EQ(0, wait_vmpin(pin0, 3000));
}

/*
 * mremap: shrinking the mapping is refused (EINVAL) and the pool goes on.
 * Moving it is refused too (EINVAL), but the kernel moved the pages there
 * and back, which the pool cannot follow: it dies, its pages leave the
 * mapping (which stays in its place) and its charges go.
 */
TEST(mremap_is_refused_and_a_move_kills_the_pool)
{
	struct memreg_pool_class c = cl(K4, 64, 0, 0, 32);
	struct memreg_global_stats base;
	struct memreg_pool_buf b[4], x;
	struct pl p;
	long pin0 = vm_pin_kb();
	char tmp[8], *to;

	mr_settle(&base);
	ASSERT_EQ(0, pl_open(&p, &c, 1, RW, 1000, 0));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 32));
	ASSERT_EQ(4, pl_alloc(&p, K4, 4, 0, 0, b));
	memset((char *)(unsigned long)b[1].addr, 'r', K4);
	EXPECT_EQ(0, wait_vmpin(pin0 + 32 * PAGE_KB, 1000));
	/* Shrinking: by a chunk in place, to one page free to move. */
	EXPECT_EQ(MAP_FAILED, mremap(p.map, p.bytes, p.bytes - CHUNK_BYTES, 0));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(MAP_FAILED, mremap(p.map, p.bytes, PAGE, MREMAP_MAYMOVE));
	EXPECT_EQ(EINVAL, errno);
	usleep(100000);
	ASSERT_EQ(1, pl_alloc(&p, K4, 1, 0, ALLOC_MS, &x));
	EXPECT_EQ(0, memreg_copy(p.fd, b[1].key, b[1].offset, tmp, 8, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(tmp, 8, 'r'));
	EXPECT_TRUE(all_bytes((char *)(unsigned long)b[1].addr, K4, 'r'));
	EXPECT_EQ(0, probe(baddr(&p, 0, 32) - 1, 1));
	EXPECT_EQ(32, STAT(&p, 0, boundary));
	EXPECT_EQ(pin0 + 32 * (long)PAGE_KB, vm_pin_kb());

	/* Moving it whole, to a place reserved for it. */
	to = mmap(NULL, p.bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, to);
	EXPECT_EQ(MAP_FAILED, mremap(p.map, p.bytes, p.bytes, MREMAP_MAYMOVE | MREMAP_FIXED, to));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-EINVAL, wait_pool_gone(&p, false));
	EXPECT_EQ(-ENOENT, memreg_copy(p.fd, b[1].key, b[1].offset, tmp, 8, MEMREG_COPY_FROM_REGION));
	/* The mapping is in its old place, without a page; none is at the new one. */
	EXPECT_NE(-1, smaps_kb(p.map, "Rss")) TH_LOG("the mapping left its place");
	EXPECT_EQ(0, not_faulting(&p, 0, 0, 64));
	EXPECT_TRUE(faults(to));
	EXPECT_TRUE(faults(to + 31 * K4));
	EXPECT_EQ(0, wait_global(&base, 1, 5000));
	EXPECT_EQ(0, wait_vmpin(pin0, 1000));
	/* It goes whole, in one munmap. */
	EXPECT_EQ(0, munmap(p.map, p.bytes));
	p.map = NULL;
	munmap(to, p.bytes);
	pl_close(&p);
	EXPECT_EQ(0, wait_global(&base, 0, 5000));
}

#define HUGE_2M		(2UL << 20)

/*
 * The hugetlb attack: an anonymous MAP_HUGETLB mapping at the pool's offset
 * put with MAP_FIXED over the pool. Before, the pool took it for a piece of
 * its own mapping (same offset, inside its range) and its teardown zapped a
 * 64 KiB chunk of it: a kernel BUG in __unmap_hugepage_range. Now over part
 * of the pool the mmap fails (the pool's mapping cannot be split) and the
 * pool keeps working; over all of it the pool dies and never touches the
 * hugetlb mapping. A BUG fails make check by itself.
 */
TEST(hugetlb_mapping_over_the_pool)
{
	struct memreg_pool_class c = cl(K4, 1024, 0, 0, 32);
	struct memreg_global_stats base;
	struct memreg_pool_buf b[4];
	struct pl p;
	long pin0 = vm_pin_kb();
	char *resv, *at, *h, tmp[8];
	int fd, err;

	/* Is there hugetlb at all? */
	h = mmap(NULL, HUGE_2M, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB | MAP_NORESERVE, -1, 0);
	if (h == MAP_FAILED) {
		err = errno;
		SKIP(return, "no 2 MiB hugetlb mapping: %s", strerror(err));
	}
	munmap(h, HUGE_2M);

	mr_settle(&base);
	resv = mmap(NULL, 3 * HUGE_2M, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		    -1, 0);
	ASSERT_NE(MAP_FAILED, resv);
	at = (char *)(((unsigned long)resv + HUGE_2M - 1) & ~(HUGE_2M - 1));
	fd = memreg_open();
	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, mr_set_parking(fd, 0));
	ASSERT_EQ(0, pl_create(&p, fd, &c, 1, RW, 1000, 0));
	ASSERT_EQ(2 * HUGE_2M, p.bytes);
	ASSERT_EQ(0, pl_map_at(&p, at));
	ASSERT_EQ(at, p.map);
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 32));
	ASSERT_EQ(4, pl_alloc(&p, K4, 4, 0, 0, b));
	EXPECT_EQ(0, wait_vmpin(pin0 + 32 * PAGE_KB, 1000));

	/* Over the first half: refused, and the pool is untouched. */
	h = mmap(at, HUGE_2M, PROT_READ | PROT_WRITE,
		 MAP_FIXED | MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB | MAP_NORESERVE, -1,
		 MEMREG_MMAP_POOL(p.pool));
	EXPECT_EQ(MAP_FAILED, h);
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(0, memreg_copy(fd, b[0].key, b[0].offset, tmp, 8, MEMREG_COPY_FROM_REGION));
	EXPECT_FALSE(faults(baddr(&p, 0, 0)));
	EXPECT_EQ(1, pl_alloc(&p, K4, 1, 0, 0, b + 3));

	/* Over all of it: the pool dies, the hugetlb mapping stays whole. */
	h = mmap(at, 2 * HUGE_2M, PROT_READ | PROT_WRITE,
		 MAP_FIXED | MAP_SHARED | MAP_ANONYMOUS | MAP_HUGETLB | MAP_NORESERVE, -1,
		 MEMREG_MMAP_POOL(p.pool));
	ASSERT_EQ(at, h) TH_LOG("hugetlb mmap: %s", strerror(errno));
	p.map = NULL;
	EXPECT_EQ(-EINVAL, wait_pool_gone(&p, false));
	EXPECT_EQ(0, wait_global(&base, 1, 5000));
	EXPECT_EQ(0, wait_vmpin(pin0, 1000));
	EXPECT_NE(-1, smaps_kb(h, "Rss"));
	EXPECT_NE(-1, smaps_kb(h + 2 * HUGE_2M - PAGE, "Rss"));
	EXPECT_EQ(0, munmap(h, 2 * HUGE_2M));
	munmap(resv, 3 * HUGE_2M);
	close(fd);
	EXPECT_EQ(0, wait_global(&base, 0, 5000));
}

/*
 * An anonymous private mapping put with MAP_FIXED over the whole pool
 * mapping: the pool dies, and its teardown never touches the new mapping.
 * The pool is mapped at the address equal to its offset, so the anonymous
 * mapping gets the very page offset the pool's mapping had (an anonymous
 * mapping's offset is its address): before, the teardown took it for its
 * own and discarded its pages. Its pattern, written right away, must all be
 * there once the pool is reaped. Three rounds, to give the race a chance.
 */
TEST_F_TIMEOUT(slow, anonymous_mapping_over_the_pool_is_left_alone, 120)
{
	/* 64 chunks: the teardown takes long enough to come after the pattern. */
	struct memreg_pool_class c = cl(K4, 1024, 4, 0, 1024);
	struct memreg_global_stats base;
	struct memreg_pool_buf b[8];
	struct pl p;
	long pin0 = vm_pin_kb();
	char tmp[8], *m, *at;
	int round, n, err, fd;

	mr_settle(&base);
	for (round = 0; round < 3; round++) {
		fd = memreg_open();
		ASSERT_GE(fd, 0);
		ASSERT_EQ(0, mr_set_parking(fd, 0));
		ASSERT_EQ(0, pl_create(&p, fd, &c, 1, RW, 1000, 0));
		at = (char *)(unsigned long)MEMREG_MMAP_POOL(p.pool);
		m = mmap(at, p.bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED_NOREPLACE, fd,
			 MEMREG_MMAP_POOL(p.pool));
		ASSERT_EQ(at, m) TH_LOG("mmap at the offset: %s", strerror(errno));
		p.map = m;
		ASSERT_EQ(0, pl_wait(&p, 0, boundary, 1024));
		n = alloc_n(&p, K4, 8, 64, 0, 0, b, &err);
		ASSERT_EQ(8, n) TH_LOG("%d", err);
		EXPECT_EQ(0, wait_vmpin(pin0 + 1024 * PAGE_KB, 1000));
		m = map_fixed(p.map, p.bytes, 'a' + round);
		ASSERT_EQ(p.map, m);
		p.map = NULL;
		EXPECT_EQ(-EINVAL, wait_pool_gone(&p, false)) TH_LOG("round %d", round);
		EXPECT_EQ(-ENOENT, memreg_copy(p.fd, b[0].key, b[0].offset, tmp, 8,
					   MEMREG_COPY_FROM_REGION));
		EXPECT_EQ(0, wait_global(&base, 1, 5000));
		EXPECT_EQ(0, wait_vmpin(pin0, 1000));
		EXPECT_TRUE(all_bytes(m, p.bytes, 'a' + round))
			TH_LOG("round %d: the pool's teardown touched the new mapping", round);
		munmap(m, p.bytes);
		pl_close(&p);
	}
	EXPECT_EQ(0, wait_global(&base, 0, 5000));
	EXPECT_EQ(0, wait_vmpin(pin0, 1000));
}

/* How many pages of the `len` bytes at `p` fault (read). */
static int pages_faulting(char *p, size_t len)
{
	size_t off;
	int n = 0;

	for (off = 0; off < len; off += PAGE)
		n += probe(p + off, 0) != 0;
	return n;
}

/*
 * Another file's pool (also pool 0, the same classes, so the same offset
 * and length) mapped with MAP_FIXED where file A's pool is: A's pool dies,
 * B's grows in its own mapping, and A's teardown leaves B's pages and
 * bytes alone. Then only B's pool is counted.
 */
TEST_F_TIMEOUT(slow, another_files_pool_in_the_pools_place, 90)
{
	struct memreg_pool_class c = cl(K4, 64, 0, 0, 32);
	struct memreg_global_stats base;
	struct memreg_pool_buf a[4], x;
	struct pl pa, pb;
	long pin0 = vm_pin_kb();
	char tmp[8];
	int round, fd, lost;

	mr_settle(&base);
	for (round = 0; round < 3; round++) {
		ASSERT_EQ(0, pl_open(&pa, &c, 1, RW, 1000, 0));
		ASSERT_EQ(0, pl_wait(&pa, 0, boundary, 32));
		ASSERT_EQ(4, pl_alloc(&pa, K4, 4, 0, 0, a));
		memset((char *)(unsigned long)a[0].addr, 'A', K4);
		fd = memreg_open();
		ASSERT_GE(fd, 0);
		ASSERT_EQ(0, mr_set_parking(fd, 0));
		ASSERT_EQ(0, pl_create(&pb, fd, &c, 1, RW, 1000, 0));
		ASSERT_EQ(pa.pool, pb.pool);
		ASSERT_EQ(pa.bytes, pb.bytes);
		/* B's pool in A's place, at the same offset of its own file. */
		ASSERT_EQ(0, pl_map_at(&pb, pa.map));
		pa.map = NULL;
		ASSERT_EQ(0, pl_wait(&pb, 0, boundary, 32));
		memset(pb.map, 'B', 32 * K4);
		EXPECT_EQ(-EINVAL, wait_pool_gone(&pa, false)) TH_LOG("round %d", round);
		EXPECT_EQ(-ENOENT, memreg_copy(pa.fd, a[0].key, a[0].offset, tmp, 8,
					   MEMREG_COPY_FROM_REGION));
		/* B's pages are where B put them, with B's bytes. */
		lost = pages_faulting(pb.map, 32 * K4);
		EXPECT_EQ(0, lost) TH_LOG("round %d: A's teardown took B's pages", round);
		if (!lost)
			EXPECT_TRUE(all_bytes(pb.map, 32 * K4, 'B')) TH_LOG("round %d", round);
		ASSERT_EQ(1, pl_alloc(&pb, K4, 1, 0, ALLOC_MS, &x));
		if (!lost)
			EXPECT_TRUE(all_bytes((char *)(unsigned long)x.addr, K4, 'B'));
		EXPECT_EQ(0, memreg_copy(pb.fd, x.key, x.offset, tmp, 8, MEMREG_COPY_FROM_REGION));
		EXPECT_TRUE(all_bytes(tmp, 8, 'B'));
		EXPECT_EQ(32, STAT(&pb, 0, boundary));
		/* Only B's pool is left: one extent of 32 pages, in two files. */
		EXPECT_EQ(0, wait_global_plus(&base, 2, 1, 32, 5000));
		EXPECT_EQ(0, wait_vmpin(pin0 + 32 * PAGE_KB, 1000));
		pl_close(&pb);
		pl_close(&pa);
		EXPECT_EQ(0, wait_global(&base, 0, 5000));
		EXPECT_EQ(0, wait_vmpin(pin0, 1000));
	}
}

/*
 * REGISTER refuses memreg's own mappings (EFAULT), which it would pin
 * behind the driver's back: a live, allocated pool buffer (alone, the
 * whole pool, or with an ordinary page before it), the state words, a
 * queue's rings. Nothing is created; an ordinary page still registers, and
 * the pool goes on.
 */
TEST(register_refuses_memregs_own_mappings)
{
	struct memreg_pool_class c = cl(K4, 64, 0, 0, 32);
	struct memreg_global_stats g0, g;
	struct memreg_pool_buf b[2];
	struct memreg_register r;
	struct memreg_queue q;
	struct pl p;
	char *resv, *words, *bp, tmp[8];
	int fd;

	fd = memreg_open();
	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, mr_set_parking(fd, 0));
	ASSERT_EQ(0, pl_create(&p, fd, &c, 1, RW, 1000, 0));
	/* An ordinary page, and the pool right after it. */
	resv = mmap(NULL, PAGE + p.bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		    -1, 0);
	ASSERT_NE(MAP_FAILED, resv);
	memset(resv, 'o', PAGE);
	ASSERT_EQ(0, pl_map_at(&p, resv + PAGE));
	ASSERT_EQ(0, pl_wait(&p, 0, boundary, 32));
	ASSERT_EQ(2, pl_alloc(&p, K4, 2, 0, 0, b));
	ASSERT_EQ(PTR(p.map), b[0].addr);
	bp = (char *)(unsigned long)b[0].addr;
	memset(bp, 'p', K4);
	words = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_STATE_WORDS);
	ASSERT_NE(MAP_FAILED, words);
	ASSERT_EQ(0, memreg_queue_init(fd, 16, 16, -1, &q));
	ASSERT_EQ(0, memreg_global_stats(fd, &g0));

	EXPECT_EQ(-EFAULT, memreg_register(fd, bp, K4, RW, &r));
	EXPECT_EQ(-EFAULT, memreg_register(fd, bp, K4, RO, &r));
	EXPECT_EQ(-EFAULT, memreg_register(fd, bp + 100, 200, RO, &r));
	EXPECT_EQ(-EFAULT, memreg_register(fd, p.map, 32 * K4, RW, &r));
	EXPECT_EQ(-EFAULT, memreg_register(fd, p.map, p.bytes, RW, &r));
	EXPECT_EQ(-EFAULT, memreg_register(fd, resv, 2 * PAGE, RW, &r));
	EXPECT_EQ(-EFAULT, memreg_register(fd, words, PAGE, RO, &r));
	EXPECT_EQ(-EFAULT, memreg_register(fd, (void *)q.ring, q.cq_bytes, RO, &r));
	EXPECT_EQ(-EFAULT, memreg_register(fd, q.user, q.sq_bytes, RW, &r));
	EXPECT_EQ(-EFAULT, memreg_register(fd, q.user, q.sq_bytes, RO, &r));
	ASSERT_EQ(0, memreg_global_stats(fd, &g));
	EXPECT_EQ(g0.regions, g.regions);
	EXPECT_EQ(g0.pages_pinned, g.pages_pinned);

	/* The ordinary page alone registers. */
	ASSERT_EQ(0, memreg_register(fd, resv, PAGE, RW, &r));
	ASSERT_EQ(0, memreg_global_stats(fd, &g));
	EXPECT_EQ(g0.regions + 1, g.regions);
	EXPECT_EQ(0, memreg_copy(fd, r.lkey, 0, tmp, 8, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(tmp, 8, 'o'));
	EXPECT_EQ(0, memreg_deregister(fd, r.lkey));
	/* The pool goes on: its buffer, its key, its bytes. */
	EXPECT_TRUE(all_bytes(bp, K4, 'p'));
	EXPECT_EQ(0, memreg_copy(fd, b[0].key, b[0].offset, tmp, 8, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(tmp, 8, 'p'));
	EXPECT_EQ(0, pl_free1(&p, b[0].addr));
	EXPECT_EQ(1, STAT(&p, 0, allocated));
	memreg_queue_exit(&q);
	munmap(words, PAGE);
	munmap(resv, PAGE + p.bytes);
	close(fd);
}

/* ---- Charges follow the pages ---- */

/*
 * madvise(MADV_DONTNEED) of one page of a chunk takes a page out of the
 * pool's mapping, which the pool cannot follow: the whole pool dies, its
 * keys die, nothing more is handed out, every page leaves the mapping and
 * every charge goes. Ten rounds, VmPin back where it was after each (it
 * was not: each round left the rest of the chunk mapped and uncharged).
 */
TEST_F_TIMEOUT(slow, dontneed_of_one_page_kills_the_pool, 120)
{
	struct memreg_pool_class c = cl(K4, 32, 0, 0, 32);
	struct memreg_global_stats base;
	struct memreg_pool_buf b[17];
	struct pl p;
	long pin0 = vm_pin_kb();
	char tmp[8];
	int round, n, err;

	mr_settle(&base);
	for (round = 0; round < 10; round++) {
		ASSERT_EQ(0, pl_open(&p, &c, 1, RW, 1000, 0));
		ASSERT_EQ(0, pl_wait(&p, 0, boundary, 32));
		/* All of chunk 0 and one buffer of chunk 1: none free outside the chunk hit. */
		n = alloc_n(&p, K4, 17, 64, 0, 0, b, &err);
		ASSERT_EQ(17, n) TH_LOG("%d", err);
		ASSERT_EQ(16, bidx(&p, 0, b[16].addr));
		memset((char *)(unsigned long)b[0].addr, 'd', K4);
		EXPECT_EQ(0, wait_vmpin(pin0 + 32 * PAGE_KB, 1000));
		/* One page of chunk 1: the allocated buffer's, or a free one's. */
		ASSERT_EQ(0, madvise(baddr(&p, 0, 16 + round % 16), PAGE, MADV_DONTNEED));
		EXPECT_EQ(0, mr_wait_state(p.fd, b[16].key, 0)) TH_LOG("round %d", round);
		EXPECT_EQ(-ENOENT, memreg_copy(p.fd, b[16].key, 0, tmp, 8, MEMREG_COPY_FROM_REGION));
		/* No buffer is handed out (EAGAIN until the pool dies), then it is gone. */
		EXPECT_EQ(-EINVAL, wait_pool_gone(&p, true)) TH_LOG("round %d", round);
		EXPECT_EQ(-ENOENT, memreg_copy(p.fd, b[0].key, 0, tmp, 8, MEMREG_COPY_FROM_REGION));
		EXPECT_EQ(0, not_faulting(&p, 0, 0, 32)) TH_LOG("round %d", round);
		EXPECT_EQ(0, wait_vmpin(pin0, 2000)) TH_LOG("round %d", round);
		EXPECT_EQ(0, wait_global(&base, 1, 5000)) TH_LOG("round %d", round);
		pl_close(&p);
		EXPECT_EQ(0, wait_vmpin(pin0, 1000)) TH_LOG("round %d", round);
	}
	EXPECT_EQ(0, wait_global(&base, 0, 5000));
}

/*
 * POOL_DESTROY right after the mapping and a first ALLOC (timeout 0), while
 * the work maps the first chunks (initial 0, low watermark 40: three of
 * them): once it returns, no chunk is left in the mapping, however the
 * race went, and nothing stays charged. Twenty rounds.
 */
TEST_F_TIMEOUT(slow, destroy_racing_growth_leaves_nothing, 120)
{
	struct memreg_pool_class c = cl(K4, 64, 40, 0, 0);
	struct memreg_pool_destroy d = { 0 };
	struct memreg_global_stats base;
	struct memreg_pool_buf b;
	struct pl p;
	long pin0 = vm_pin_kb();
	int round, r, early = 0;
	char tmp[8];

	mr_settle(&base);
	for (round = 0; round < 20; round++) {
		ASSERT_EQ(0, pl_open(&p, &c, 1, RW, 1000, 0));
		r = pl_alloc(&p, K4, 1, 0, 0, &b);
		d.pool = p.pool;
		ASSERT_EQ(0, ioctl(p.fd, MEMREG_IOC_POOL_DESTROY, &d));
		EXPECT_TRUE(r == 1 || r == -EAGAIN) TH_LOG("round %d: ALLOC gives %d", round, r);
		early += r == -EAGAIN;
		if (r == 1)
			EXPECT_EQ(-ENOENT, memreg_copy(p.fd, b.key, b.offset, tmp, 8,
						   MEMREG_COPY_FROM_REGION));
		EXPECT_EQ(0, not_faulting(&p, 0, 0, 64)) TH_LOG("round %d", round);
		EXPECT_EQ(-EINVAL, pl_alloc(&p, K4, 1, 0, 0, &b));
		pl_close(&p);
		EXPECT_EQ(0, wait_vmpin(pin0, 2000)) TH_LOG("round %d", round);
	}
	TH_LOG("%d of 20 ALLOCs came before the first chunk", early);
	EXPECT_EQ(0, wait_global(&base, 0, 5000));
	EXPECT_EQ(0, wait_vmpin(pin0, 1000));
}

#define CG_ROOT		"/sys/fs/cgroup"
#define CG_TEST		CG_ROOT "/memreg-pool-test"

/* Writes `s` to the file at `path`; 0 or -errno. */
static int write_str(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, s, strlen(s)) != (ssize_t)strlen(s))
		ret = -errno;
	close(fd);
	return ret;
}

/* The number in the file at `path`, or -1. */
static long long read_ll(const char *path)
{
	long long v = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	if (fscanf(f, "%lld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

/*
 * Mounts cgroup2 at /sys/fs/cgroup unless it is there, enables the memory
 * controller for the root's children and makes the test's cgroup. Returns
 * NULL, or a message saying why it cannot be done.
 */
static const char *cg_setup(void)
{
	char line[512], *tok, *save;
	bool memory = false;
	FILE *f;

	if (access(CG_ROOT "/cgroup.controllers", F_OK)) {
		if (mkdir(CG_ROOT, 0755) && errno != EEXIST)
			return "no " CG_ROOT;
		if (mount("none", CG_ROOT, "cgroup2", 0, NULL))
			return "cgroup2 cannot be mounted";
	}
	f = fopen(CG_ROOT "/cgroup.controllers", "r");
	if (!f)
		return "no cgroup.controllers";
	if (fgets(line, sizeof(line), f))
		for (tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save))
			memory |= !strcmp(tok, "memory");
	fclose(f);
	if (!memory)
		return "no memory controller";
	if (write_str(CG_ROOT "/cgroup.subtree_control", "+memory"))
		return "the memory controller cannot be enabled";
	if (mkdir(CG_TEST, 0755) && errno != EEXIST)
		return "no test cgroup";
	if (access(CG_TEST "/memory.current", R_OK))
		return "no memory.current";
	return NULL;
}

/*
 * In the test's cgroup: a pool of 512 pages (2 MiB) grows its cgroup's
 * memory.current by 1 MiB at least, though its work allocates the pages
 * (charged to the root cgroup, the growth would be a few pages). The
 * margin is for the charges memcg takes in advance, per CPU.
 */
static int memcg_child(void)
{
	struct memreg_pool_class c = cl(K4, 512, 0, 0, 512);
	long long before, after;
	const char *why;
	char pid[32];
	struct pl p;
	int ok;

	why = cg_setup();
	if (why) {
		fprintf(stderr, "%s\n", why);
		return KSFT_SKIP;
	}
	snprintf(pid, sizeof(pid), "%d\n", getpid());
	CHILD_CHECK(!write_str(CG_TEST "/cgroup.procs", pid));
	before = read_ll(CG_TEST "/memory.current");
	CHILD_CHECK(before >= 0);
	CHILD_CHECK(!pl_open(&p, &c, 1, RW, 1000, 0));
	/* 32 chunks: a longer wait than one boundary's. */
	CHILD_CHECK(!pl_wait_field(&p, 0, offsetof(struct memreg_pool_stats, boundary), 512,
				   4 * WAIT_MS));
	after = read_ll(CG_TEST "/memory.current");
	fprintf(stderr, "memory.current: %lld before the pool, %lld after\n", before, after);
	ok = after >= before + (1LL << 20);
	pl_close(&p);
	CHILD_CHECK(!write_str(CG_ROOT "/cgroup.procs", pid));
	rmdir(CG_TEST);
	CHILD_CHECK(ok);
	return 0;
}

/* A pool's pages are charged to the memory cgroup of the process that created it. */
TEST(pool_pages_are_charged_to_the_creators_memcg)
{
	struct memreg_global_stats base;
	pid_t pid;
	int ret;

	mr_settle(&base);
	pid = fork();
	ASSERT_GE(pid, 0);
	if (!pid)
		_exit(memcg_child());
	ret = wait_exit(pid);
	/* Left behind by a child that failed half way (empty once it exited). */
	rmdir(CG_TEST);
	if (ret == KSFT_SKIP)
		SKIP(return, "no cgroup2 memory controller");
	EXPECT_EQ(0, ret);
	EXPECT_EQ(0, wait_global(&base, 0, 5000));
}

TEST_HARNESS_MAIN
