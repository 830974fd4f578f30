// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: limits and failure paths.
 *
 * - the per-context cap on live registrations (max_registrations, EDQUOT);
 * - RLIMIT_MEMLOCK charged per user, across processes and files;
 * - charges that follow the pages: a registration that ends gives its pages
 *   back to RLIMIT_MEMLOCK and to max_pinned_pages before the call that
 *   ended it (DEREGISTER without parking, FLUSH of a parked one, munmap,
 *   mprotect, close) returns, although unpinning may be deferred; a CLEAR
 *   (MADV_DONTNEED) suspends it, and it ends when revalidation finds the
 *   pages gone;
 * - a REGISTER of unmapped memory changing no counter;
 * - concurrent misses of one range publishing one registration;
 * - remote keys carrying random bits of their own;
 * - a REGISTER whose result cannot be written back changing nothing (a
 *   miss, a hit, a revival of a parked registration);
 * - COPY stopping on a fatal signal.
 *
 * Some tests reload the module (rmmod/insmod /memreg.ko) with small limits
 * and with the defaults again at the end; this program must run with no
 * other memreg file open, as root.
 */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "memreg_util.h"

#include "../kselftest_harness.h"

#define DEFAULT_MAX_REGISTRATIONS	65536
#define CAP		8	/* max_registrations of the cap tests */
#define LIMIT		16	/* RLIMIT_MEMLOCK and max_pinned_pages, in pages */
#define NOBODY		65534

static __u64 now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000ULL + ts.tv_nsec / 1000000;
}

/* Ways for a registration of [p, p + len) to end. */
enum end {
	END_DEREGISTER,	/* with parking off */
	END_FLUSH,	/* DEREGISTER, parking on, then FLUSH */
	END_MUNMAP,
	END_MPROTECT,
	END_DONTNEED,
	END_CLOSE,
	END_HOLE,	/* munmap, leaving the hole */
};

/*
 * Makes a memory event happen over [p, p + len); all but END_HOLE leave
 * fresh writable memory there. Returns 0 or -errno.
 */
static int mem_event(char *p, size_t len, enum end how)
{
	switch (how) {
	case END_MUNMAP:
		if (munmap(p, len) ||
		    mmap(p, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			 -1, 0) != p)
			return -errno;
		memset(p, 'f', len);
		return 0;
	case END_MPROTECT:
		if (mprotect(p, len, PROT_READ) || mprotect(p, len, PROT_READ | PROT_WRITE))
			return -errno;
		return 0;
	case END_DONTNEED:
		return madvise(p, len, MADV_DONTNEED) ? -errno : 0;
	case END_HOLE:
		return munmap(p, len) ? -errno : 0;
	default:
		return -EINVAL;
	}
}

/*
 * A worker: a child process that drops to uid and gid NOBODY with an
 * RLIMIT_MEMLOCK of LIMIT pages (so without CAP_IPC_LOCK), holds two memreg
 * contexts opened before, and runs the parent's commands one by one, so the
 * parent can interleave several such processes of one user and check every
 * step with the harness.
 */
#define W_PAGES		64	/* the worker's private anonymous buffer */
#define W_CTXS		2
#define W_SLOTS		8
#define W_DEAD		(-9999L)	/* what ask() returns if the worker is gone */

enum w_op {
	W_REGISTER,	/* ctx, slot, off, n: 0 miss, 1 hit, -errno */
	W_DEREGISTER,	/* ctx, slot */
	W_EVENT,	/* off, n, how (not END_DEREGISTER/END_CLOSE) */
	W_CLOSE,	/* ctx */
	W_PARKING,	/* ctx, how: SET_CACHE with parking `how` */
	W_FLUSH,	/* ctx: FLUSH, the pages it ended */
	W_PINNED,	/* ctx: stats.pages_pinned */
	W_REGS,		/* ctx: stats.registrations */
	W_VMPIN,	/* VmPin in kB */
	W_EXIT,
};

struct w_cmd {
	int op;
	int ctx;
	int slot;
	int how;
	long off;	/* in pages */
	long n;		/* in pages */
};

struct worker {
	pid_t pid;
	int cmd;	/* commands to the worker */
	int res;	/* its answers */
};

static long worker_run(int in, int out)
{
	struct rlimit rl = { LIMIT * PAGE, LIMIT * PAGE };
	__u64 keys[W_CTXS][W_SLOTS] = { { 0 } };
	char *buf = map_filled(W_PAGES * PAGE, 'w');
	int fds[W_CTXS];
	struct w_cmd c;
	long ret = 0;
	int i;

	for (i = 0; i < W_CTXS; i++)
		fds[i] = memreg_open();
	if (!buf || fds[0] < 0 || fds[1] < 0)
		ret = 1;
	else if (setrlimit(RLIMIT_MEMLOCK, &rl))
		ret = 2;
	else if (setgid(NOBODY) || setuid(NOBODY))
		ret = 3;
	if (write(out, &ret, sizeof(ret)) != sizeof(ret) || ret)
		return ret ? ret : 4;

	while (read(in, &c, sizeof(c)) == sizeof(c)) {
		struct memreg_register r;
		struct memreg_stats s;

		if (c.ctx < 0 || c.ctx >= W_CTXS || c.slot < 0 || c.slot >= W_SLOTS ||
		    c.off < 0 || c.n < 0 || c.off + c.n > W_PAGES)
			return 5;
		switch (c.op) {
		case W_REGISTER:
			ret = memreg_register(fds[c.ctx], buf + c.off * PAGE, c.n * PAGE, RW, &r);
			if (!ret) {
				keys[c.ctx][c.slot] = r.lkey;
				ret = !!(r.flags & MEMREG_REGISTER_CACHED);
			}
			break;
		case W_DEREGISTER:
			ret = memreg_deregister(fds[c.ctx], keys[c.ctx][c.slot]);
			break;
		case W_EVENT:
			ret = mem_event(buf + c.off * PAGE, c.n * PAGE, c.how);
			break;
		case W_CLOSE:
			ret = close(fds[c.ctx]) ? -errno : 0;
			fds[c.ctx] = -1;
			break;
		case W_PARKING:
			ret = mr_set_parking(fds[c.ctx], c.how);
			break;
		case W_FLUSH: {
			struct memreg_flush f;

			ret = memreg_flush(fds[c.ctx], &f);
			if (!ret)
				ret = (long)f.pages;
			break;
		}
		case W_PINNED:
		case W_REGS:
			ret = memreg_stats(fds[c.ctx], &s);
			if (!ret)
				ret = c.op == W_PINNED ? (long)s.pages_pinned : (long)s.registrations;
			break;
		case W_VMPIN:
			ret = vm_pin_kb();
			break;
		case W_EXIT:
			return 0;
		default:
			return 6;
		}
		if (write(out, &ret, sizeof(ret)) != sizeof(ret))
			return 7;
	}
	return 8;
}

/* Starts a worker; returns 0 once it is ready, or what went wrong. */
static long worker_start(struct worker *w)
{
	int cmd[2], res[2];
	long ready;
	int fd;

	/* A worker that died must fail the test, not kill it with SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	if (pipe(cmd) || pipe(res))
		return -errno;
	w->pid = fork();
	if (w->pid < 0)
		return -errno;
	if (w->pid == 0) {
		/* Hold nothing of the parent's: no memreg file, no other worker's pipe. */
		for (fd = 3; fd < 1024; fd++)
			if (fd != cmd[0] && fd != res[1])
				close(fd);
		_exit(worker_run(cmd[0], res[1]));
	}
	close(cmd[0]);
	close(res[1]);
	w->cmd = cmd[1];
	w->res = res[0];
	if (read(w->res, &ready, sizeof(ready)) != sizeof(ready))
		return W_DEAD;
	return ready;
}

static long ask(struct worker *w, struct w_cmd c)
{
	long ret;

	if (write(w->cmd, &c, sizeof(c)) != sizeof(c) ||
	    read(w->res, &ret, sizeof(ret)) != sizeof(ret))
		return W_DEAD;
	return ret;
}

/* Ends a worker; returns its exit status (0 when all went well). */
static int worker_stop(struct worker *w)
{
	struct w_cmd c = { .op = W_EXIT };

	if (write(w->cmd, &c, sizeof(c)) != sizeof(c))
		kill(w->pid, SIGKILL);
	close(w->cmd);
	close(w->res);
	return wait_exit(w->pid);
}

static long w_register(struct worker *w, int ctx, int slot, long off, long n)
{
	return ask(w, (struct w_cmd){ .op = W_REGISTER, .ctx = ctx, .slot = slot,
				      .off = off, .n = n });
}

static long w_deregister(struct worker *w, int ctx, int slot)
{
	return ask(w, (struct w_cmd){ .op = W_DEREGISTER, .ctx = ctx, .slot = slot });
}

static long w_event(struct worker *w, long off, long n, enum end how)
{
	return ask(w, (struct w_cmd){ .op = W_EVENT, .off = off, .n = n, .how = how });
}

static long w_close(struct worker *w, int ctx)
{
	return ask(w, (struct w_cmd){ .op = W_CLOSE, .ctx = ctx });
}

static long w_pinned(struct worker *w, int ctx);

static long w_parking(struct worker *w, int ctx, int on)
{
	return ask(w, (struct w_cmd){ .op = W_PARKING, .ctx = ctx, .how = on });
}

static long w_flush(struct worker *w, int ctx)
{
	return ask(w, (struct w_cmd){ .op = W_FLUSH, .ctx = ctx });
}

/* Waits (at most 5 s) until the worker's context pins `pages`. */
static long w_wait_pinned(struct worker *w, int ctx, long pages)
{
	long ret = -1;
	int i;

	for (i = 0; i < 500; i++) {
		ret = w_pinned(w, ctx);
		if (ret == pages || ret < 0)
			break;
		usleep(10000);
	}
	return ret;
}

static long w_pinned(struct worker *w, int ctx)
{
	return ask(w, (struct w_cmd){ .op = W_PINNED, .ctx = ctx });
}

static long w_regs(struct worker *w, int ctx)
{
	return ask(w, (struct w_cmd){ .op = W_REGS, .ctx = ctx });
}

static long w_vmpin(struct worker *w)
{
	return ask(w, (struct w_cmd){ .op = W_VMPIN });
}

/* ---- max_registrations: the per-context cap ---- */

TEST(max_registrations_default)
{
	struct memreg_global_stats g;

	ASSERT_EQ(0, mr_global_now(&g));
	EXPECT_EQ(DEFAULT_MAX_REGISTRATIONS, g.max_registrations);
}

FIXTURE(cap)
{
	int fd;
	char *buf;
};

FIXTURE_SETUP(cap)
{
	ASSERT_EQ(0, mr_reload_module("max_registrations=8"));
	self->fd = memreg_open();
	ASSERT_GE(self->fd, 0);
	/*
	 * DEREGISTER ends registrations here; evicting parked ones to make
	 * room under the cap is in memreg_lifecycle_test.c.
	 */
	ASSERT_EQ(0, mr_set_parking(self->fd, 0));
	self->buf = map_filled(4 * CAP * PAGE, 'c');
	ASSERT_NE(NULL, self->buf);
}

FIXTURE_TEARDOWN(cap)
{
	close(self->fd);
	munmap(self->buf, 4 * CAP * PAGE);
	ASSERT_EQ(0, mr_reload_module(""));
}

TEST_F(cap, registrations_stop_at_the_cap)
{
	struct memreg_global_stats g, g0, g1;
	struct memreg_register r[CAP], hit, extra;
	struct memreg_stats s0, s1;
	char *buf = self->buf;
	long vmpin;
	int i, fd2, err;

	ASSERT_EQ(0, memreg_global_stats(self->fd, &g));
	EXPECT_EQ(CAP, g.max_registrations);

	for (i = 0; i < CAP; i++) {
		ASSERT_EQ(0, memreg_register(self->fd, buf + i * PAGE, PAGE, RW, &r[i]));
		ASSERT_EQ(0, r[i].flags);
	}
	ASSERT_EQ(0, memreg_stats(self->fd, &s0));
	ASSERT_EQ(0, memreg_global_stats(self->fd, &g0));
	vmpin = vm_pin_kb();

	/* One more is refused, in any shape, and changes nothing. */
	EXPECT_EQ(-EDQUOT, memreg_register(self->fd, buf + CAP * PAGE, PAGE, RW, &extra));
	EXPECT_EQ(-EDQUOT, memreg_register(self->fd, buf, 2 * PAGE, RW, &extra));
	EXPECT_EQ(-EDQUOT, memreg_register(self->fd, buf, PAGE, RW | MEMREG_ACCESS_REMOTE_WRITE,
				       &extra));
	ASSERT_EQ(0, memreg_stats(self->fd, &s1));
	EXPECT_EQ(CAP, s1.registrations);
	EXPECT_EQ(CAP, s1.pages_pinned);
	EXPECT_EQ(0, memcmp(&s0, &s1, sizeof(s0)));
	ASSERT_EQ(0, memreg_global_stats(self->fd, &g1));
	EXPECT_EQ(0, memcmp(&g0, &g1, sizeof(g0)));
	EXPECT_EQ(vmpin, vm_pin_kb());

	/* A cache hit creates no registration: served at the cap. */
	ASSERT_EQ(0, memreg_register(self->fd, buf + 100, 8, RO, &hit));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, hit.flags);
	EXPECT_EQ(r[0].lkey, hit.lkey);
	EXPECT_EQ(0, memreg_deregister(self->fd, hit.lkey));

	/* The cap is per context: another file has its own. */
	fd2 = memreg_open();
	ASSERT_GE(fd2, 0);
	EXPECT_EQ(0, memreg_register(fd2, buf + CAP * PAGE, PAGE, RW, &extra));
	close(fd2);

	/* Ending one makes room for exactly one. */
	EXPECT_EQ(0, memreg_deregister(self->fd, r[3].lkey));
	EXPECT_EQ(0, memreg_register(self->fd, buf + CAP * PAGE, PAGE, RW, &extra));
	EXPECT_EQ(-EDQUOT, memreg_register(self->fd, buf + (CAP + 1) * PAGE, PAGE, RW, &extra));

	/*
	 * So does an invalidation, once the registration has left. (DONTNEED
	 * splits no VMA: a split may clear the whole 2 MiB block around it.)
	 */
	ASSERT_EQ(0, mem_event(buf + 5 * PAGE, PAGE, END_DONTNEED));
	for (i = 0; i < 500; i++) {
		err = memreg_register(self->fd, buf + (CAP + 1) * PAGE, PAGE, RW, &extra);
		if (err != -EDQUOT)
			break;
		usleep(10000);
	}
	EXPECT_EQ(0, err);
	ASSERT_EQ(0, memreg_stats(self->fd, &s1));
	EXPECT_EQ(CAP, s1.registrations);
}

/* ---- RLIMIT_MEMLOCK, charged per user ---- */

/*
 * Two processes of one user, each with RLIMIT_MEMLOCK of 16 pages: together
 * they pin at most 16 pages, in whichever process and file.
 */
TEST(rlimit_memlock_is_per_user)
{
	struct memreg_global_stats base;
	struct worker a, b, c;
	long va, vb;

	ASSERT_EQ(0, mr_global_now(&base));
	ASSERT_EQ(0, worker_start(&a));
	ASSERT_EQ(0, worker_start(&b));
	va = w_vmpin(&a);
	vb = w_vmpin(&b);
	ASSERT_GE(va, 0);
	ASSERT_GE(vb, 0);

	EXPECT_EQ(0, w_register(&a, 0, 0, 0, 12));
	/* 12 + 8 pages of the same user: over its limit. */
	EXPECT_EQ(-ENOMEM, w_register(&b, 0, 0, 0, 8));
	/* The refusal pinned and charged nothing. */
	EXPECT_EQ(0, w_regs(&b, 0));
	EXPECT_EQ(0, w_pinned(&b, 0));
	EXPECT_EQ(vb, w_vmpin(&b));
	/* 12 + 4: exactly the limit. */
	EXPECT_EQ(0, w_register(&b, 0, 0, 0, 4));
	/* Not a page more, in either process or file. */
	EXPECT_EQ(-ENOMEM, w_register(&b, 1, 1, 4, 1));
	EXPECT_EQ(-ENOMEM, w_register(&a, 0, 1, 12, 1));
	EXPECT_EQ(-ENOMEM, w_register(&a, 1, 1, 12, 1));
	/* A cache hit pins nothing: allowed at the limit. */
	EXPECT_EQ(1, w_register(&a, 0, 2, 2, 2));
	EXPECT_EQ(0, w_deregister(&a, 0, 2));
	/* VmPin stays per process. */
	EXPECT_EQ(va + 12 * (long)PAGE_KB, w_vmpin(&a));
	EXPECT_EQ(vb + 4 * (long)PAGE_KB, w_vmpin(&b));

	/* A closes its file: its 12 pages are the user's again at once. */
	EXPECT_EQ(0, w_close(&a, 0));
	EXPECT_EQ(va, w_vmpin(&a));
	EXPECT_EQ(0, w_register(&b, 1, 1, 4, 12));
	EXPECT_EQ(-ENOMEM, w_register(&a, 1, 0, 0, 1));

	/* Exits give everything back: a new process of the user gets all 16. */
	EXPECT_EQ(0, worker_stop(&a));
	EXPECT_EQ(0, worker_stop(&b));
	ASSERT_EQ(0, worker_start(&c));
	EXPECT_EQ(0, w_register(&c, 0, 0, 0, LIMIT));
	EXPECT_EQ(-ENOMEM, w_register(&c, 1, 0, LIMIT, 1));
	EXPECT_EQ(0, worker_stop(&c));
	ASSERT_EQ(0, mr_wait_global(base.contexts, base.regions, base.pages_pinned));
}

/* ---- Charges follow the pages ---- */

FIXTURE(follow_rlimit)
{
	struct memreg_global_stats base;
	struct worker w;
	bool started;
};

FIXTURE_VARIANT(follow_rlimit)
{
	enum end how;
};

FIXTURE_VARIANT_ADD(follow_rlimit, deregister) { .how = END_DEREGISTER };
FIXTURE_VARIANT_ADD(follow_rlimit, deregister_flush) { .how = END_FLUSH };
FIXTURE_VARIANT_ADD(follow_rlimit, munmap) { .how = END_MUNMAP };
FIXTURE_VARIANT_ADD(follow_rlimit, mprotect) { .how = END_MPROTECT };
FIXTURE_VARIANT_ADD(follow_rlimit, madvise_dontneed) { .how = END_DONTNEED };
FIXTURE_VARIANT_ADD(follow_rlimit, close) { .how = END_CLOSE };

FIXTURE_SETUP(follow_rlimit)
{
	ASSERT_EQ(0, mr_global_now(&self->base));
	ASSERT_EQ(0, worker_start(&self->w));
	self->started = true;
	if (variant->how == END_DEREGISTER)
		ASSERT_EQ(0, w_parking(&self->w, 0, 0));
}

FIXTURE_TEARDOWN(follow_rlimit)
{
	if (self->started)
		EXPECT_EQ(0, worker_stop(&self->w));
	EXPECT_EQ(0, mr_wait_global(self->base.contexts, self->base.regions,
				    self->base.pages_pinned));
}

/*
 * RLIMIT_MEMLOCK of 16 pages: register 16, end the registration, and
 * register 16 other pages once the worker unpinned (then uncharged) the
 * first ones: the charge is given back, and never before the pages.
 */
TEST_F(follow_rlimit, ended_registration_is_uncharged_after_unpinning)
{
	struct worker *w = &self->w;
	long vmpin = w_vmpin(w);
	int ctx = 0, i;

	ASSERT_GE(vmpin, 0);
	ASSERT_EQ(0, w_register(w, 0, 0, 0, LIMIT));
	ASSERT_EQ(-ENOMEM, w_register(w, 0, 1, LIMIT, 1));

	switch (variant->how) {
	case END_DEREGISTER:
		ASSERT_EQ(0, w_deregister(w, 0, 0));
		break;
	case END_FLUSH:
		ASSERT_EQ(0, w_deregister(w, 0, 0));
		/* Parked: still charged. */
		EXPECT_EQ(LIMIT, w_pinned(w, 0));
		EXPECT_EQ(vmpin + LIMIT * (long)PAGE_KB, w_vmpin(w));
		ASSERT_EQ(LIMIT, w_flush(w, 0));
		break;
	case END_CLOSE:
		ASSERT_EQ(0, w_close(w, 0));
		ctx = 1;
		break;
	case END_DONTNEED:
		ASSERT_EQ(0, w_event(w, 0, LIMIT, variant->how));
		/*
		 * A CLEAR suspends the registration; a worker revalidates it
		 * shortly after, finds the pages gone and ends it.
		 */
		ASSERT_EQ(0, w_wait_pinned(w, 0, 0));
		break;
	default:
		ASSERT_EQ(0, w_event(w, 0, LIMIT, variant->how));
		break;
	}
	/* Out of the context at once; unpinned, then uncharged, by the worker soon after. */
	if (ctx == 0)
		EXPECT_EQ(0, w_pinned(w, 0));
	for (i = 0; i < 500 && (w_vmpin(w) != vmpin ||
				mr_global_pinned() != self->base.pages_pinned); i++)
		usleep(10000);
	EXPECT_EQ(vmpin, w_vmpin(w));
	EXPECT_EQ(self->base.pages_pinned, mr_global_pinned());
	/* And the user's locked memory: 16 other pages, now that they are uncharged. */
	EXPECT_EQ(0, w_register(w, ctx, 1, LIMIT, LIMIT));
	EXPECT_EQ(LIMIT, w_pinned(w, ctx));
	EXPECT_EQ(vmpin + LIMIT * (long)PAGE_KB, w_vmpin(w));
	EXPECT_EQ(-ENOMEM, w_register(w, ctx, 2, 2 * LIMIT, 1));
}

FIXTURE(follow_budget)
{
	struct memreg_global_stats base;
	int fd, fd2;
	char *buf;
};

FIXTURE_VARIANT(follow_budget)
{
	enum end how;
};

FIXTURE_VARIANT_ADD(follow_budget, deregister) { .how = END_DEREGISTER };
FIXTURE_VARIANT_ADD(follow_budget, deregister_flush) { .how = END_FLUSH };
FIXTURE_VARIANT_ADD(follow_budget, munmap) { .how = END_MUNMAP };
FIXTURE_VARIANT_ADD(follow_budget, mprotect) { .how = END_MPROTECT };
FIXTURE_VARIANT_ADD(follow_budget, madvise_dontneed) { .how = END_DONTNEED };
FIXTURE_VARIANT_ADD(follow_budget, close) { .how = END_CLOSE };

FIXTURE_SETUP(follow_budget)
{
	ASSERT_EQ(0, mr_reload_module("max_pinned_pages=16"));
	self->fd2 = -1;
	self->fd = memreg_open();
	ASSERT_GE(self->fd, 0);
	self->fd2 = memreg_open();
	ASSERT_GE(self->fd2, 0);
	if (variant->how == END_DEREGISTER)
		ASSERT_EQ(0, mr_set_parking(self->fd, 0));
	self->buf = map_filled(4 * LIMIT * PAGE, 'b');
	ASSERT_NE(NULL, self->buf);
	ASSERT_EQ(0, mr_global_now(&self->base));
}

FIXTURE_TEARDOWN(follow_budget)
{
	if (self->fd >= 0)
		close(self->fd);
	close(self->fd2);
	munmap(self->buf, 4 * LIMIT * PAGE);
	ASSERT_EQ(0, mr_reload_module(""));
}

/* The same with the module budget, max_pinned_pages=16: no ENOSPC. */
TEST_F(follow_budget, ended_registration_is_uncharged_after_unpinning)
{
	struct memreg_global_stats g;
	struct memreg_register r, other;
	struct memreg_flush f;
	struct memreg_stats s;
	long vmpin = vm_pin_kb();
	int fd = self->fd;

	ASSERT_EQ(0, memreg_global_stats(fd, &g));
	ASSERT_EQ(LIMIT, g.budget_pages);
	ASSERT_EQ(0, memreg_register(fd, self->buf, LIMIT * PAGE, RW, &r));
	ASSERT_EQ(-ENOSPC, memreg_register(fd, self->buf + LIMIT * PAGE, PAGE, RW, &other));

	switch (variant->how) {
	case END_DEREGISTER:
		ASSERT_EQ(0, memreg_deregister(fd, r.lkey));
		break;
	case END_FLUSH:
		ASSERT_EQ(0, memreg_deregister(fd, r.lkey));
		/* Parked: still charged. */
		EXPECT_EQ(self->base.pages_pinned + LIMIT, mr_global_pinned());
		ASSERT_EQ(0, memreg_flush(fd, &f));
		EXPECT_EQ(1, f.evicted);
		EXPECT_EQ(LIMIT, f.pages);
		break;
	case END_CLOSE:
		ASSERT_EQ(0, close(fd));
		self->fd = -1;
		fd = self->fd2;
		break;
	case END_DONTNEED:
		ASSERT_EQ(0, mem_event(self->buf, LIMIT * PAGE, variant->how));
		/* Suspended, then ended by the worker's revalidation. */
		ASSERT_EQ(0, mr_wait_pinned(fd, 0));
		break;
	default:
		ASSERT_EQ(0, mem_event(self->buf, LIMIT * PAGE, variant->how));
		break;
	}
	if (self->fd >= 0) {
		ASSERT_EQ(0, memreg_stats(fd, &s));
		EXPECT_EQ(0, s.pages_pinned);
	}
	EXPECT_EQ(0, wait_vm_pin(vmpin, 5000));
	EXPECT_EQ(self->base.pages_pinned, mr_global_pinned());

	EXPECT_EQ(0, memreg_register(fd, self->buf + LIMIT * PAGE, LIMIT * PAGE, RW, &other));
	EXPECT_EQ(self->base.pages_pinned + LIMIT, mr_global_pinned());
	EXPECT_EQ(vmpin + LIMIT * (long)PAGE_KB, vm_pin_kb());
	EXPECT_EQ(-ENOSPC, memreg_register(fd, self->buf + 2 * LIMIT * PAGE, PAGE, RW, &other));
}

/* ---- REGISTER of unmapped memory ---- */

/* Expects REGISTER to fail with `err` and leave every counter as it was. */
static void register_fails_cleanly(struct __test_metadata *_metadata, int fd, char *p,
				   size_t len, __u32 access, int err)
{
	struct memreg_global_stats g0, g1;
	struct memreg_stats s0, s1;
	struct memreg_register r;
	long vmpin = vm_pin_kb();

	ASSERT_EQ(0, memreg_stats(fd, &s0));
	ASSERT_EQ(0, memreg_global_stats(fd, &g0));
	EXPECT_EQ(err, memreg_register(fd, p, len, access, &r));
	ASSERT_EQ(0, memreg_stats(fd, &s1));
	ASSERT_EQ(0, memreg_global_stats(fd, &g1));
	EXPECT_EQ(s0.registrations, s1.registrations);
	EXPECT_EQ(s0.cache_misses, s1.cache_misses);
	EXPECT_EQ(s0.pages_pinned, s1.pages_pinned);
	EXPECT_EQ(s0.pages_pinned_peak, s1.pages_pinned_peak);
	EXPECT_EQ(0, memcmp(&s0, &s1, sizeof(s0)));
	EXPECT_EQ(g0.pages_pinned, g1.pages_pinned);
	EXPECT_EQ(vmpin, vm_pin_kb());
}

TEST(unmapped_register_changes_nothing)
{
	/* More than two of the kernel's 512-page pinning batches. */
	const size_t npages = 1100, hole = 1050;
	struct memreg_global_stats base;
	struct memreg_register r;
	struct memreg_stats s;
	char *buf = map_filled(npages * PAGE, 'u');
	char *small = map_filled(16 * PAGE, 'v');
	int fd = memreg_open();

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	ASSERT_NE(NULL, small);
	ASSERT_EQ(0, mr_global_now(&base));
	ASSERT_EQ(0, munmap(buf + hole * PAGE, PAGE));

	/* The hole after two full batches, at the start, in the middle, at the end. */
	register_fails_cleanly(_metadata, fd, buf, npages * PAGE, RW, -EFAULT);
	register_fails_cleanly(_metadata, fd, buf, npages * PAGE, RO, -EFAULT);
	register_fails_cleanly(_metadata, fd, buf + hole * PAGE, 8 * PAGE, RW, -EFAULT);
	register_fails_cleanly(_metadata, fd, buf + (hole - 4) * PAGE, 8 * PAGE, RW, -EFAULT);
	register_fails_cleanly(_metadata, fd, buf + (hole - 4) * PAGE, 5 * PAGE, RW, -EFAULT);
	/* An inaccessible page, and a read-only one asked for writing. */
	ASSERT_EQ(0, mprotect(small + 8 * PAGE, PAGE, PROT_NONE));
	register_fails_cleanly(_metadata, fd, small, 16 * PAGE, RO, -EFAULT);
	ASSERT_EQ(0, mprotect(small + 8 * PAGE, PAGE, PROT_READ));
	register_fails_cleanly(_metadata, fd, small, 16 * PAGE, RW, -EFAULT);

	/* Nothing pinned, then or later, and the next register is the first miss. */
	ASSERT_EQ(0, mr_wait_global(base.contexts, base.regions, base.pages_pinned));
	ASSERT_EQ(0, memreg_register(fd, buf, 4 * PAGE, RW, &r));
	EXPECT_EQ(0, r.flags);
	ASSERT_EQ(0, memreg_stats(fd, &s));
	EXPECT_EQ(1, s.cache_misses);
	EXPECT_EQ(4, s.pages_pinned);
	EXPECT_EQ(4, s.pages_pinned_peak);
	close(fd);
	munmap(buf, npages * PAGE);
	munmap(small, 16 * PAGE);
}

/* Failed REGISTERs leave no locked memory charged to the user behind. */
TEST(unmapped_register_leaks_no_locked_memory)
{
	struct memreg_global_stats base;
	struct worker w;
	long vmpin;
	int i;

	ASSERT_EQ(0, mr_global_now(&base));
	ASSERT_EQ(0, worker_start(&w));
	vmpin = w_vmpin(&w);
	ASSERT_GE(vmpin, 0);
	/* A hole at page 15: [0, 16) has 15 mapped pages, [8, 24) has 7 then 8. */
	ASSERT_EQ(0, w_event(&w, LIMIT - 1, 1, END_HOLE));
	for (i = 0; i < 20; i++) {
		EXPECT_EQ(-EFAULT, w_register(&w, i & 1, 0, 0, LIMIT));
		EXPECT_EQ(-EFAULT, w_register(&w, i & 1, 0, LIMIT / 2, LIMIT));
	}
	EXPECT_EQ(0, w_pinned(&w, 0));
	EXPECT_EQ(0, w_pinned(&w, 1));
	EXPECT_EQ(vmpin, w_vmpin(&w));
	EXPECT_EQ(base.pages_pinned, mr_global_pinned());
	/* The whole limit is still there. */
	EXPECT_EQ(0, w_register(&w, 0, 0, LIMIT, LIMIT));
	EXPECT_EQ(-ENOMEM, w_register(&w, 1, 0, 2 * LIMIT, 1));
	EXPECT_EQ(0, worker_stop(&w));
	ASSERT_EQ(0, mr_wait_global(base.contexts, base.regions, base.pages_pinned));
}

/* The budget is not leaked by failed REGISTERs either. */
FIXTURE(budget)
{
	int fd;
	char *buf;
};

FIXTURE_SETUP(budget)
{
	ASSERT_EQ(0, mr_reload_module("max_pinned_pages=16"));
	self->fd = memreg_open();
	ASSERT_GE(self->fd, 0);
	self->buf = map_filled(4 * LIMIT * PAGE, 'b');
	ASSERT_NE(NULL, self->buf);
}

FIXTURE_TEARDOWN(budget)
{
	close(self->fd);
	munmap(self->buf, 4 * LIMIT * PAGE);
	ASSERT_EQ(0, mr_reload_module(""));
}

TEST_F(budget, unmapped_register_leaks_no_budget)
{
	struct memreg_register r;
	int i;

	ASSERT_EQ(0, munmap(self->buf + (LIMIT - 1) * PAGE, PAGE));
	for (i = 0; i < 20; i++) {
		EXPECT_EQ(-EFAULT, memreg_register(self->fd, self->buf, LIMIT * PAGE, RW, &r));
		EXPECT_EQ(-EFAULT, memreg_register(self->fd, self->buf + LIMIT / 2 * PAGE,
					       LIMIT * PAGE, RW, &r));
	}
	EXPECT_EQ(0, mr_global_pinned());
	EXPECT_EQ(0, memreg_register(self->fd, self->buf + LIMIT * PAGE, LIMIT * PAGE, RW, &r));
	EXPECT_EQ(-ENOSPC, memreg_register(self->fd, self->buf + 2 * LIMIT * PAGE, PAGE, RW, &r));
}

/* ---- Concurrent misses of one range ---- */

#define RACERS		8
#define RACE_PAGES	64
#define ROUNDS		20

struct racer {
	int fd;
	char *buf;
	pthread_barrier_t *barrier;
	struct memreg_register r;
	int err;
};

static void *race_register(void *arg)
{
	struct racer *t = arg;

	pthread_barrier_wait(t->barrier);
	t->err = memreg_register(t->fd, t->buf, RACE_PAGES * PAGE, RW, &t->r);
	return NULL;
}

TEST(concurrent_misses_publish_one_registration)
{
	struct memreg_global_stats base, g;
	struct racer t[RACERS];
	pthread_t th[RACERS];
	pthread_barrier_t barrier;
	struct memreg_stats s;
	struct memreg_query q;
	char *buf = map_filled(RACE_PAGES * PAGE, 'r');
	long vmpin = vm_pin_kb();
	int round, i, misses, fd;

	ASSERT_NE(NULL, buf);
	/* The baseline is taken before our own file is open. */
	ASSERT_EQ(0, mr_global_now(&base));
	fd = memreg_open();
	ASSERT_GE(fd, 0);
	/* Each round must be a miss: no parked registration to revive. */
	ASSERT_EQ(0, mr_set_parking(fd, 0));
	for (round = 0; round < ROUNDS; round++) {
		ASSERT_EQ(0, pthread_barrier_init(&barrier, NULL, RACERS));
		for (i = 0; i < RACERS; i++) {
			t[i] = (struct racer){ .fd = fd, .buf = buf, .barrier = &barrier };
			ASSERT_EQ(0, pthread_create(&th[i], NULL, race_register, &t[i]));
		}
		for (i = 0; i < RACERS; i++)
			pthread_join(th[i], NULL);
		pthread_barrier_destroy(&barrier);

		/* All got the one registration; exactly one of them made it. */
		misses = 0;
		for (i = 0; i < RACERS; i++) {
			ASSERT_EQ(0, t[i].err);
			ASSERT_EQ(t[0].r.lkey, t[i].r.lkey);
			ASSERT_EQ(t[0].r.rkey, t[i].r.rkey);
			if (!(t[i].r.flags & MEMREG_REGISTER_CACHED))
				misses++;
		}
		ASSERT_EQ(1, misses) TH_LOG("round %d", round);
		ASSERT_EQ(0, memreg_stats(fd, &s));
		ASSERT_EQ(1, s.registrations) TH_LOG("round %d", round);
		ASSERT_EQ(round + 1, s.cache_misses);
		ASSERT_EQ((RACERS - 1) * (round + 1), s.cache_hits);
		ASSERT_EQ(RACE_PAGES, s.pages_pinned);
		ASSERT_EQ(RACE_PAGES, s.pages_pinned_peak);
		ASSERT_EQ(0, memreg_query(fd, t[0].r.lkey, &q));
		ASSERT_EQ(RACERS, q.refcount);
		ASSERT_EQ(vmpin + RACE_PAGES * PAGE_KB, vm_pin_kb());
		ASSERT_EQ(0, memreg_global_stats(fd, &g));
		ASSERT_EQ(base.pages_pinned + RACE_PAGES, g.pages_pinned);

		/* RACERS references: as many DEREGISTERs end it. */
		for (i = 0; i < RACERS; i++)
			ASSERT_EQ(0, memreg_deregister(fd, t[0].r.lkey));
		ASSERT_EQ(-ENOENT, memreg_deregister(fd, t[0].r.lkey));
		ASSERT_EQ(0, memreg_stats(fd, &s));
		ASSERT_EQ(0, s.pages_pinned);
		ASSERT_EQ(round + 1, s.deregistrations);
	}
	close(fd);
	munmap(buf, RACE_PAGES * PAGE);
	ASSERT_EQ(0, mr_wait_global(base.contexts, base.regions, base.pages_pinned));
}

/* ---- Remote keys ---- */

#define NKEYS 64

TEST(rkeys_are_random)
{
	__u64 lkey[NKEYS], rkey[NKEYS];
	struct memreg_register r, hit;
	int i, j, other_high = 0, top_set = 0, consecutive = 0;
	char *buf = map_filled(NKEYS * PAGE, 'k');
	int fd = memreg_open();

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	for (i = 0; i < NKEYS; i++) {
		ASSERT_EQ(0, memreg_register(fd, buf + i * PAGE, PAGE, RW, &r));
		lkey[i] = r.lkey;
		rkey[i] = r.rkey;
		EXPECT_NE(0, r.rkey);
		EXPECT_NE(r.lkey, r.rkey);
		/* The high 40 bits were a sequence number shared with the lkey. */
		if (r.rkey >> 24 != r.lkey >> 24)
			other_high++;
		/* 64 random bits: the top 24 are not all zero (a 2^-24 chance). */
		if (r.rkey >> 40)
			top_set++;
		if (i && (rkey[i] >> 24) - (rkey[i - 1] >> 24) == 1)
			consecutive++;
	}
	for (i = 0; i < NKEYS; i++)
		for (j = i + 1; j < NKEYS; j++) {
			EXPECT_NE(rkey[i], rkey[j]);
			EXPECT_NE(lkey[i], lkey[j]);
		}
	TH_LOG("%d of %d rkeys differ from their lkey in the high 40 bits", other_high, NKEYS);
	EXPECT_GE(other_high, 60);
	EXPECT_GE(top_set, 60);
	EXPECT_LE(consecutive, 2);
	/* A hit hands out the registration's own keys. */
	ASSERT_EQ(0, memreg_register(fd, buf, PAGE, RO, &hit));
	EXPECT_EQ(lkey[0], hit.lkey);
	EXPECT_EQ(rkey[0], hit.rkey);
	/* The remote key is no local key. */
	EXPECT_EQ(-ENOENT, memreg_deregister(fd, rkey[1]));
	close(fd);
	munmap(buf, NKEYS * PAGE);
}

/* ---- REGISTER whose result cannot be written back ---- */

/* A REGISTER argument in a page that is readable only. */
static struct memreg_register *read_only_arg(void *addr, __u64 len, __u32 access)
{
	struct memreg_register *arg = mmap(NULL, PAGE, PROT_READ | PROT_WRITE,
					   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (arg == MAP_FAILED)
		return NULL;
	arg->addr = (unsigned long)addr;
	arg->length = len;
	arg->access = access;
	if (mprotect(arg, PAGE, PROT_READ)) {
		munmap(arg, PAGE);
		return NULL;
	}
	return arg;
}

static void expect_same_counters(struct __test_metadata *_metadata, int fd,
				 const struct memreg_stats *s0,
				 const struct memreg_global_stats *g0, long vmpin)
{
	struct memreg_global_stats g1;
	struct memreg_stats s1;

	ASSERT_EQ(0, memreg_stats(fd, &s1));
	EXPECT_EQ(s0->registrations, s1.registrations);
	EXPECT_EQ(s0->cache_hits, s1.cache_hits);
	EXPECT_EQ(s0->cache_misses, s1.cache_misses);
	EXPECT_EQ(s0->pages_pinned, s1.pages_pinned);
	EXPECT_EQ(s0->pages_pinned_peak, s1.pages_pinned_peak);
	EXPECT_EQ(0, memcmp(s0, &s1, sizeof(s1)));
	ASSERT_EQ(0, memreg_global_stats(fd, &g1));
	EXPECT_EQ(g0->contexts, g1.contexts);
	EXPECT_EQ(g0->pages_pinned, g1.pages_pinned);
	EXPECT_EQ(vmpin, vm_pin_kb());
	/* A region rolled back may take a worker's run to leave the count. */
	EXPECT_EQ(0, mr_wait_global(g0->contexts, g0->regions, g0->pages_pinned));
	ASSERT_EQ(0, memreg_global_stats(fd, &g1));
	EXPECT_EQ(0, memcmp(g0, &g1, sizeof(g1)));
}

TEST(write_back_failure_on_miss_changes_nothing)
{
	struct memreg_global_stats g0;
	struct memreg_register *arg, r;
	struct memreg_stats s0, s;
	char *buf = map_filled(8 * PAGE, 'm');
	int fd = memreg_open();
	long vmpin;

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	arg = read_only_arg(buf, 8 * PAGE, RW);
	ASSERT_NE(NULL, arg);
	ASSERT_EQ(0, memreg_stats(fd, &s0));
	ASSERT_EQ(0, memreg_global_stats(fd, &g0));
	vmpin = vm_pin_kb();

	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_REGISTER, arg));
	EXPECT_EQ(EFAULT, errno);
	expect_same_counters(_metadata, fd, &s0, &g0, vmpin);

	/* Nothing was published: the same range is a miss. */
	ASSERT_EQ(0, memreg_register(fd, buf, 8 * PAGE, RW, &r));
	EXPECT_EQ(0, r.flags);
	ASSERT_EQ(0, memreg_stats(fd, &s));
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(1, s.cache_misses);
	EXPECT_EQ(0, s.cache_hits);
	EXPECT_EQ(8, s.pages_pinned);
	close(fd);
	munmap(arg, PAGE);
	munmap(buf, 8 * PAGE);
}

TEST(write_back_failure_on_hit_changes_nothing)
{
	struct memreg_global_stats g0;
	struct memreg_register *arg, r;
	struct memreg_stats s0, s;
	struct memreg_query q;
	char *buf = map_filled(8 * PAGE, 'h');
	int fd = memreg_open();
	long vmpin;

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	/* One DEREGISTER must end it below. */
	ASSERT_EQ(0, mr_set_parking(fd, 0));
	/* Before registering: mprotect may split a VMA next to the registration. */
	arg = read_only_arg(buf + PAGE, 2 * PAGE, RO);
	ASSERT_NE(NULL, arg);
	ASSERT_EQ(0, memreg_register(fd, buf, 8 * PAGE, RW, &r));
	ASSERT_EQ(0, memreg_stats(fd, &s0));
	ASSERT_EQ(0, memreg_global_stats(fd, &g0));
	vmpin = vm_pin_kb();

	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_REGISTER, arg));
	EXPECT_EQ(EFAULT, errno);
	expect_same_counters(_metadata, fd, &s0, &g0, vmpin);
	ASSERT_EQ(0, memreg_query(fd, r.lkey, &q));
	EXPECT_EQ(1, q.refcount);

	/* The failed hit took no reference: one DEREGISTER ends it. */
	EXPECT_EQ(0, memreg_deregister(fd, r.lkey));
	EXPECT_EQ(-ENOENT, memreg_query(fd, r.lkey, &q));
	ASSERT_EQ(0, memreg_stats(fd, &s));
	EXPECT_EQ(0, s.registrations);
	EXPECT_EQ(0, s.pages_pinned);
	EXPECT_EQ(1, s.deregistrations);
	EXPECT_EQ(vmpin - 8 * (long)PAGE_KB, vm_pin_kb());
	close(fd);
	munmap(arg, PAGE);
	munmap(buf, 8 * PAGE);
}

/* A REGISTER that would revive a parked registration, failing, leaves it parked. */
TEST(write_back_failure_on_revive_changes_nothing)
{
	struct memreg_global_stats g0;
	struct memreg_register *arg, r;
	struct memreg_stats s0, s;
	struct memreg_query q;
	char *buf = map_filled(8 * PAGE, 'v');
	int fd = memreg_open();
	long vmpin;
	__u64 key;

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	arg = read_only_arg(buf + PAGE, 2 * PAGE, RO);
	ASSERT_NE(NULL, arg);
	ASSERT_EQ(0, memreg_register(fd, buf, 8 * PAGE, RW, &r));
	ASSERT_EQ(0, memreg_deregister(fd, r.lkey));
	ASSERT_EQ(0, memreg_stats(fd, &s0));
	ASSERT_EQ(1, s0.parked);
	ASSERT_EQ(0, memreg_global_stats(fd, &g0));
	vmpin = vm_pin_kb();

	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_REGISTER, arg));
	EXPECT_EQ(EFAULT, errno);
	expect_same_counters(_metadata, fd, &s0, &g0, vmpin);
	ASSERT_EQ(0, memreg_query(fd, r.lkey, &q));
	EXPECT_EQ(MEMREG_STATE_VALID | MEMREG_STATE_PARKED, q.state);
	EXPECT_EQ(0, q.refcount);

	/* It is still there to revive, once, with new keys. */
	key = r.lkey;
	ASSERT_EQ(0, memreg_register(fd, buf + PAGE, 2 * PAGE, RO, &r));
	EXPECT_EQ(MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED, r.flags);
	EXPECT_EQ(key >> 24, r.lkey >> 24);
	EXPECT_NE(key, r.lkey);
	EXPECT_EQ(-ENOENT, memreg_query(fd, key, &q));
	ASSERT_EQ(0, memreg_stats(fd, &s));
	EXPECT_EQ(1, s.revives);
	EXPECT_EQ(0, s.parked);
	EXPECT_EQ(1, s.parks);
	EXPECT_EQ(vmpin, vm_pin_kb());
	close(fd);
	munmap(arg, PAGE);
	munmap(buf, 8 * PAGE);
}

/* ---- COPY and fatal signals ---- */

#define KILL_LEN	(64UL << 20)
#define COPY_CHUNK	(16UL << 10)

FIXTURE(copy_kill)
{
	struct memreg_global_stats base;
	pid_t pid;
	int ready[2];
};

FIXTURE_SETUP(copy_kill)
{
	self->pid = -1;
	ASSERT_EQ(0, mr_global_now(&self->base));
	ASSERT_EQ(0, pipe(self->ready));
}

FIXTURE_TEARDOWN(copy_kill)
{
	if (self->pid > 0) {
		kill(self->pid, SIGKILL);
		waitpid(self->pid, NULL, 0);
	}
	close(self->ready[0]);
	if (self->ready[1] >= 0)
		close(self->ready[1]);
}

/* In the child: registers `region`, says so, then copies until killed. */
static void copy_until_killed(int ready, char *region, char *src, bool loop)
{
	struct memreg_register r;
	int fd = memreg_open();
	long err = fd < 0 ? -errno : memreg_register(fd, region, KILL_LEN, RW, &r);
	unsigned long i;

	if (write(ready, &err, sizeof(err)) != sizeof(err) || err)
		_exit(1);
	for (i = 0;; i++) {
		__u32 dir = loop && (i & 1) ? MEMREG_COPY_FROM_REGION : MEMREG_COPY_TO_REGION;

		if (memreg_copy(fd, r.lkey, 0, src, KILL_LEN, dir))
			_exit(2);
		if (!loop)
			_exit(3);
	}
}

/* Waits for the child's word that it registered; returns it, or -EPIPE. */
static long wait_ready(FIXTURE_DATA(copy_kill) *self)
{
	long err;

	/* Only the child may write: a child that died is end of file. */
	close(self->ready[1]);
	self->ready[1] = -1;
	return read(self->ready[0], &err, sizeof(err)) == sizeof(err) ? err : -EPIPE;
}

/*
 * A process killed while it copies 64 MiB at a time dies promptly, and
 * everything it pinned is released.
 */
TEST_F_TIMEOUT(copy_kill, fatal_signal_ends_copy_loop, 120)
{
	__u64 start, took;
	int status;

	self->pid = fork();
	ASSERT_GE(self->pid, 0);
	if (self->pid == 0) {
		char *region = map_filled(KILL_LEN, 'k');
		char *src = map_filled(KILL_LEN, 's');

		if (!region || !src)
			_exit(4);
		copy_until_killed(self->ready[1], region, src, true);
	}
	ASSERT_EQ(0, wait_ready(self));
	usleep(100000);
	start = now_ms();
	ASSERT_EQ(0, kill(self->pid, SIGKILL));
	ASSERT_EQ(self->pid, waitpid(self->pid, &status, 0));
	took = now_ms() - start;
	self->pid = -1;
	TH_LOG("reaped %llu ms after SIGKILL", (unsigned long long)took);
	ASSERT_TRUE(WIFSIGNALED(status)) TH_LOG("child exited with %d", WEXITSTATUS(status));
	EXPECT_EQ(SIGKILL, WTERMSIG(status));
	EXPECT_LT(took, 10000);
	ASSERT_EQ(0, mr_wait_global(self->base.contexts, self->base.regions,
				    self->base.pages_pinned));
}

/*
 * One COPY of 64 MiB of zeros over a shared memfd region full of 'X': the
 * parent watches the region, kills the child as soon as the first chunk has
 * landed, and finds that the copy stopped at a chunk boundary well before
 * the end instead of running to completion.
 */
TEST_F_TIMEOUT(copy_kill, fatal_signal_stops_copy_between_chunks, 120)
{
	size_t moved;
	char *region;
	__u64 start;
	int status, mfd;

	mfd = memfd_create("memreg-kill", MFD_CLOEXEC);
	ASSERT_GE(mfd, 0);
	ASSERT_EQ(0, ftruncate(mfd, KILL_LEN));
	region = mmap(NULL, KILL_LEN, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	ASSERT_NE(MAP_FAILED, region);
	memset(region, 'X', KILL_LEN);

	self->pid = fork();
	ASSERT_GE(self->pid, 0);
	if (self->pid == 0) {
		/* Never written: reading it costs no memory (the zero page). */
		char *zeros = mmap(NULL, KILL_LEN, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (zeros == MAP_FAILED)
			_exit(4);
		copy_until_killed(self->ready[1], region, zeros, false);
	}
	ASSERT_EQ(0, wait_ready(self));
	start = now_ms();
	while (__atomic_load_n(region, __ATOMIC_RELAXED) == 'X')
		ASSERT_LT(now_ms() - start, 60000) TH_LOG("the copy never started");
	ASSERT_EQ(0, kill(self->pid, SIGKILL));
	ASSERT_EQ(self->pid, waitpid(self->pid, &status, 0));
	self->pid = -1;
	ASSERT_TRUE(WIFSIGNALED(status)) TH_LOG("child exited with %d", WEXITSTATUS(status));

	for (moved = 0; moved < KILL_LEN && !region[moved]; moved++)
		;
	TH_LOG("%zu of %lu bytes copied before the kill took effect", moved, KILL_LEN);
	EXPECT_GT(moved, 0);
	EXPECT_LT(moved, KILL_LEN);
	EXPECT_EQ(0, moved % COPY_CHUNK);
	EXPECT_TRUE(all_bytes(region + moved, KILL_LEN - moved, 'X'));
	munmap(region, KILL_LEN);
	close(mfd);
	ASSERT_EQ(0, mr_wait_global(self->base.contexts, self->base.regions,
				    self->base.pages_pinned));
}

/* ---- Charges leave with the registration, not with the worker ---- */

static _Atomic int spin_stop;

static void *spin(void *arg)
{
	(void)arg;
	while (!spin_stop)
		;
	return NULL;
}

/* Pins the calling thread to `cpu` with SCHED_FIFO priority `prio`. */
static int realtime_on(int cpu, int prio)
{
	struct sched_param sp = { .sched_priority = prio };
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		return -errno;
	return sched_setscheduler(0, SCHED_FIFO, &sp) ? -errno : 0;
}

static void *spin_on_cpu1(void *arg)
{
	if (realtime_on(1, 50))
		return NULL;
	return spin(arg);
}

/*
 * Runs in a child that keeps both CPUs busy with real-time threads, so the
 * kernel worker that unpins an invalidated registration cannot run. Charges
 * follow the pages: while the pages are still pinned, they must still be
 * charged (VmPin and the module's pinned pages), although the registration
 * left the table (the context's own pages_pinned is 0); once the threads
 * stop and the worker unpins them, the charges go.
 */
static int charged_while_worker_starved(void)
{
	const size_t npages = 64;
	struct memreg_global_stats g0, g1;
	struct memreg_register r;
	struct memreg_stats s;
	pthread_t th;
	long vmpin;
	char *buf = map_filled(npages * PAGE, 'w');
	int fd = memreg_open(), ret = 0, i;

	if (fd < 0 || !buf || memreg_global_stats(fd, &g0))
		return 1;
	if (pthread_create(&th, NULL, spin_on_cpu1, NULL))
		return 2;
	if (realtime_on(0, 50))
		return 3;
	vmpin = vm_pin_kb();
	if (memreg_register(fd, buf, npages * PAGE, RW, &r))
		ret = 4;
	else if (munmap(buf, npages * PAGE))
		ret = 5;
	/* Nothing has yielded the CPUs since the invalidation queued the unpinning. */
	else if (memreg_stats(fd, &s) || s.pages_pinned != 0 || memreg_global_stats(fd, &g1))
		ret = 6;
	else if (g1.regions == g0.regions)
		/* The worker ran anyway: nothing is proved either way. */
		ret = 7;
	else if (vm_pin_kb() != vmpin + (long)(npages * PAGE / 1024) ||
		 g1.pages_pinned != g0.pages_pinned + npages)
		/* Uncharged while still pinned. */
		ret = 8;
	spin_stop = 1;
	pthread_join(th, NULL);
	/* Unpinned by the worker now, then uncharged. */
	for (i = 0; !ret && i < 500; i++) {
		if (!memreg_global_stats(fd, &g1) && g1.pages_pinned == g0.pages_pinned && vm_pin_kb() == vmpin)
			break;
		usleep(10000);
	}
	if (!ret && i == 500)
		ret = 9;
	close(fd);
	return ret;
}

TEST(charges_stay_until_the_worker_unpins)
{
	int status;
	pid_t pid;

	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		SKIP(return, "needs two CPUs");
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0)
		_exit(charged_while_worker_starved());
	status = wait_exit(pid);
	if (status == 7)
		SKIP(return, "the unpinning worker ran despite the real-time load");
	EXPECT_EQ(0, status);
	ASSERT_EQ(0, mr_wait_global(0, 0, 0));
}

/* ---- Overlapping registrations ---- */

#define MAX_OVERLAP 64

/*
 * A miss may overlap at most MAX_OVERLAP live registrations: each pins the
 * shared pages again, and a page's reference count must not overflow.
 */
TEST(overlap_is_bounded)
{
	const size_t npages = MAX_OVERLAP + 8;
	struct memreg_register r[MAX_OVERLAP + 1], big;
	struct memreg_stats before, after;
	char *buf = map_filled(npages * PAGE, 'o');
	long vmpin;
	int fd = memreg_open();
	int i;

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	/* A DEREGISTER must end a registration, not park it (still pinned). */
	ASSERT_EQ(0, mr_set_parking(fd, 0));
	/* MAX_OVERLAP + 1 one-page registrations, each of its own page. */
	for (i = 0; i <= MAX_OVERLAP; i++)
		ASSERT_EQ(0, memreg_register(fd, buf + i * PAGE, PAGE, RW, &r[i]));
	ASSERT_EQ(0, memreg_stats(fd, &before));
	vmpin = vm_pin_kb();

	/* The whole range overlaps one too many: refused, nothing changed. */
	EXPECT_EQ(-EDQUOT, memreg_register(fd, buf, npages * PAGE, RW, &big));
	ASSERT_EQ(0, memreg_stats(fd, &after));
	EXPECT_EQ(0, memcmp(&before, &after, sizeof(before)));
	EXPECT_EQ(vmpin, vm_pin_kb());
	/* A range overlapping fewer is fine. */
	EXPECT_EQ(0, memreg_register(fd, buf + PAGE, MAX_OVERLAP * PAGE, RW, &big));
	EXPECT_EQ(0, memreg_deregister(fd, big.lkey));

	/* One fewer overlapping registration, and the whole range fits. */
	ASSERT_EQ(0, memreg_deregister(fd, r[0].lkey));
	EXPECT_EQ(0, memreg_register(fd, buf, npages * PAGE, RW, &big));
	/* A cache hit on it is not a new pin, whatever it overlaps. */
	EXPECT_EQ(0, memreg_register(fd, buf + 2 * PAGE, PAGE, RO, &big));
	EXPECT_TRUE(big.flags & MEMREG_REGISTER_CACHED);
	close(fd);
	munmap(buf, npages * PAGE);
}

TEST_HARNESS_MAIN
