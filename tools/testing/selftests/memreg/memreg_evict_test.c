// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: parked registrations never deny service (see
 * Documentation/userspace-api/memreg/registration.rst).
 *
 * - a REGISTER that reaches the module's budget (max_pinned_pages) evicts
 *   parked registrations of other files, least recently parked first, and
 *   fails only when none is left;
 * - a REGISTER that reaches RLIMIT_MEMLOCK evicts the same user's parked
 *   registrations in its other processes, never another user's;
 * - a pool that grows past the module's budget evicts parked registrations
 *   of other files;
 * - memory pressure (drop_caches) evicts every file's parked registrations
 *   through the module's one shrinker.
 *
 * Evictions of another file's registration are counted in that file's
 * STATS under MEMREG_EVICT_PIN_LIMIT. Run as root, with no other memreg
 * file open; the module is reloaded with a budget and back without one.
 */
#include <signal.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "memreg_util.h"

#include "../kselftest_harness.h"

#define RW		(MEMREG_ACCESS_LOCAL_READ | MEMREG_ACCESS_LOCAL_WRITE)
#define NOBODY		65534
#define OTHER		65533

/* The evictions of `fd`'s context for `reason`, or -1. */
static long evictions(int fd, unsigned int reason)
{
	struct memreg_stats s;

	if (memreg_stats(fd, &s))
		return -1;
	return (long)s.evictions[reason];
}

/* Parks a registration of `pages` pages in `fd`; `fd` or -errno (closed). */
static int park_in(int fd, size_t pages, char **buf, struct memreg_register *r)
{
	int ret;

	if (fd < 0)
		return -EBADF;
	*buf = map_filled(pages * PAGE, 'p');
	if (!*buf) {
		close(fd);
		return -ENOMEM;
	}
	ret = memreg_register(fd, *buf, pages * PAGE, RW, r);
	if (!ret)
		ret = memreg_deregister(fd, r->lkey);
	if (ret) {
		close(fd);
		return ret;
	}
	return fd;
}

/* A new file with a parked registration of `pages` pages; the file or -errno. */
static int park_pages(size_t pages, char **buf, struct memreg_register *r)
{
	return park_in(memreg_open(), pages, buf, r);
}

/* Whether the registration of `key` is parked in `fd`'s context. */
static bool is_parked(int fd, __u64 key)
{
	struct memreg_query q;

	return !memreg_query(fd, key, &q) && (q.state & MEMREG_STATE_PARKED);
}

/*
 * Past the module's budget, a REGISTER of another file evicts the parked
 * registrations of the first, oldest first, then succeeds; with nothing
 * parked left, it fails with ENOSPC.
 */
TEST(budget_evicts_other_files_parked_registrations)
{
	struct memreg_register old, young, r, r2;
	char *b_old, *b_young, *mine;
	int a, b, c;

	ASSERT_EQ(0, mr_reload_module("max_pinned_pages=64"));
	/* 24 + 24 pages parked in two files, oldest first. */
	a = park_pages(24, &b_old, &old);
	ASSERT_GE(a, 0);
	b = park_pages(24, &b_young, &young);
	ASSERT_GE(b, 0);
	ASSERT_TRUE(is_parked(a, old.lkey));
	ASSERT_TRUE(is_parked(b, young.lkey));

	/* A third file needs 32 pages: 16 are free, the oldest parked goes. */
	c = memreg_open();
	ASSERT_GE(c, 0);
	mine = map_filled(48 * PAGE, 'm');
	ASSERT_NE(NULL, mine);
	ASSERT_EQ(0, memreg_register(c, mine, 32 * PAGE, RW, &r));
	EXPECT_FALSE(is_parked(a, old.lkey));
	EXPECT_EQ(-ENOENT, memreg_query(a, old.lkey, &(struct memreg_query){ 0 }));
	EXPECT_EQ(1, evictions(a, MEMREG_EVICT_PIN_LIMIT));
	/* The younger one was not needed. */
	EXPECT_TRUE(is_parked(b, young.lkey));
	EXPECT_EQ(0, evictions(b, MEMREG_EVICT_PIN_LIMIT));

	/* 32 more: 8 free, the younger one goes too. */
	ASSERT_EQ(0, memreg_register(c, mine + 32 * PAGE, 16 * PAGE, RW, &r2));
	EXPECT_EQ(-ENOENT, memreg_query(b, young.lkey, &(struct memreg_query){ 0 }));
	EXPECT_EQ(1, evictions(b, MEMREG_EVICT_PIN_LIMIT));
	/* Nothing parked is left: past the budget it fails, and changes nothing. */
	EXPECT_EQ(-ENOSPC, memreg_register(c, b_old, 24 * PAGE, RW, &old));
	EXPECT_EQ(0, memreg_deregister(c, r.lkey));
	EXPECT_EQ(0, memreg_deregister(c, r2.lkey));
	close(a);
	close(b);
	close(c);
	munmap(b_old, 24 * PAGE);
	munmap(b_young, 24 * PAGE);
	munmap(mine, 48 * PAGE);
	ASSERT_EQ(0, mr_wait_global(0, 0, 0));
	ASSERT_EQ(0, mr_reload_module(""));
}

/* A pool that grows past the module's budget evicts parked registrations. */
TEST(pool_growth_evicts_parked_registrations)
{
	struct memreg_pool_class cl = { .buffer_size = 4096, .max_buffers = 32,
					.low_watermark = 0, .high_watermark = 0,
					.initial = 32 };
	struct memreg_pool_create pc = { .nr_classes = 1, .access = RW,
					 .leak_timeout_ms = 1000,
					 .classes = (__u64)(unsigned long)&cl };
	struct memreg_pool_info pi;
	struct memreg_pool_stats st;
	struct memreg_register old;
	char *b_old, *map;
	int a, c, i;

	ASSERT_EQ(0, mr_reload_module("max_pinned_pages=64"));
	a = park_pages(48, &b_old, &old);
	ASSERT_GE(a, 0);
	c = memreg_open();
	ASSERT_GE(c, 0);
	ASSERT_EQ(0, ioctl(c, MEMREG_IOC_POOL_CREATE, &pc));
	map = mmap(NULL, pc.map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, c,
		   MEMREG_MMAP_POOL(pc.pool));
	ASSERT_NE(MAP_FAILED, map);
	/* 32 pages: 16 are free, so the parked registration must go. */
	for (i = 0; i < 500; i++) {
		pi = (struct memreg_pool_info){ .pool = pc.pool, .count = 1,
						.stats = (__u64)(unsigned long)&st };
		ASSERT_EQ(0, ioctl(c, MEMREG_IOC_POOL_STATS, &pi));
		if (st.boundary == 32)
			break;
		usleep(10000);
	}
	EXPECT_EQ(32, st.boundary);
	EXPECT_EQ(-ENOENT, memreg_query(a, old.lkey, &(struct memreg_query){ 0 }));
	EXPECT_EQ(1, evictions(a, MEMREG_EVICT_PIN_LIMIT));
	munmap(map, pc.map_bytes);
	close(a);
	close(c);
	munmap(b_old, 48 * PAGE);
	ASSERT_EQ(0, mr_wait_global(0, 0, 0));
	ASSERT_EQ(0, mr_reload_module(""));
}

/* Pipes to and from a child, and its pid. */
struct kid {
	pid_t pid;
	int to, from;
};

/* Writes one int; 0 or -1. */
static int put(int fd, int v)
{
	return write(fd, &v, sizeof(v)) == sizeof(v) ? 0 : -1;
}

/* Reads one int; 0 or -1. */
static int get(int fd, int *v)
{
	return read(fd, v, sizeof(*v)) == sizeof(*v) ? 0 : -1;
}

/*
 * The child's side: as `uid`, RLIMIT_MEMLOCK of `limit` pages, parks
 * `parked` pages in a file of its own, answers 0, then, for each int it
 * reads: n > 0: REGISTER the next n pages of its buffer (answers the errno,
 * 0 on success);
 * -1: answers 1 if its parked registration is still parked, else 0; 0:
 * exits.
 */
static int kid_main(int in, int out, uid_t uid, size_t limit, size_t parked)
{
	struct rlimit rl = { limit * PAGE, limit * PAGE };
	struct memreg_register p, r;
	char *pbuf, *buf;
	int pfd, fd, cmd, ret;
	size_t used = 0;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* Opened as root (the device is root's); charged to `uid` from REGISTER on. */
	pfd = memreg_open();
	fd = memreg_open();
	if (setrlimit(RLIMIT_MEMLOCK, &rl) || setgid(uid) || setuid(uid))
		return put(out, -EPERM), 1;
	pfd = park_in(pfd, parked, &pbuf, &p);
	buf = map_filled(2 * limit * PAGE, 'k');
	if (pfd < 0 || fd < 0 || !buf)
		return put(out, -EIO), 1;
	put(out, 0);
	while (!get(in, &cmd) && cmd) {
		if (cmd < 0)
			put(out, is_parked(pfd, p.lkey));
		else if (used + cmd > 2 * limit)
			put(out, ERANGE);
		else {
			/* Each REGISTER on pages of its own, so none is a cache hit. */
			ret = memreg_register(fd, buf + used * PAGE, (size_t)cmd * PAGE, RW, &r);
			if (!ret)
				used += cmd;
			put(out, -ret);
		}
	}
	return 0;
}

/* Starts a child as `uid` that parks `parked` pages; 0 or -1. */
static int kid_start(struct kid *k, uid_t uid, size_t limit, size_t parked)
{
	int to[2], from[2], v;

	if (pipe(to) || pipe(from))
		return -1;
	k->pid = fork();
	if (k->pid < 0)
		return -1;
	if (!k->pid) {
		close(to[1]);
		close(from[0]);
		_exit(kid_main(to[0], from[1], uid, limit, parked));
	}
	close(to[0]);
	close(from[1]);
	k->to = to[1];
	k->from = from[0];
	return get(k->from, &v) || v ? -1 : 0;
}

/* Sends `cmd` to the child and returns its answer (-1000 on a broken pipe). */
static int kid_ask(struct kid *k, int cmd)
{
	int v;

	if (put(k->to, cmd) || get(k->from, &v))
		return -1000;
	return v;
}

static int kid_stop(struct kid *k)
{
	put(k->to, 0);
	close(k->to);
	close(k->from);
	return wait_exit(k->pid);
}

/*
 * Past RLIMIT_MEMLOCK, a REGISTER evicts the parked registrations of the
 * same user's other processes, never another user's.
 */
TEST(memlock_evicts_the_same_users_parked_registrations)
{
	struct kid same, other, me;

	/* Another user parks 40 pages: nothing of ours is charged for them. */
	ASSERT_EQ(0, kid_start(&other, OTHER, 64, 40));
	/* The same user parks 40 pages in one process... */
	ASSERT_EQ(0, kid_start(&same, NOBODY, 64, 40));
	/* ...and another process of that user, parking 8 of its own, needs 40. */
	ASSERT_EQ(0, kid_start(&me, NOBODY, 64, 8));
	EXPECT_EQ(1, kid_ask(&same, -1));
	/* 40 + 8 charged, 40 more: the oldest of the user's parked (40) goes. */
	EXPECT_EQ(0, kid_ask(&me, 40));
	EXPECT_EQ(0, kid_ask(&same, -1));
	/* The other user's stays. */
	EXPECT_EQ(1, kid_ask(&other, -1));
	/* 48 charged, 32 more: its own parked 8 go, still short: ENOMEM. */
	EXPECT_EQ(ENOMEM, kid_ask(&me, 32));
	EXPECT_EQ(0, kid_ask(&me, -1));
	EXPECT_EQ(1, kid_ask(&other, -1));
	EXPECT_EQ(0, kid_stop(&me));
	EXPECT_EQ(0, kid_stop(&same));
	EXPECT_EQ(0, kid_stop(&other));
	ASSERT_EQ(0, mr_wait_global(0, 0, 0));
}

/*
 * drop_caches evicts the parked registrations of every file, through the
 * module's one shrinker (files register none of their own any more).
 */
TEST(drop_caches_evicts_every_files_parked_registrations)
{
	struct memreg_register r[3];
	char *buf[3];
	int fd[3], i;

	for (i = 0; i < 3; i++) {
		fd[i] = park_pages(8, &buf[i], &r[i]);
		ASSERT_GE(fd[i], 0);
	}
	ASSERT_EQ(0, drop_caches());
	for (i = 0; i < 3; i++) {
		EXPECT_EQ(-ENOENT, memreg_query(fd[i], r[i].lkey, &(struct memreg_query){ 0 }));
		EXPECT_EQ(1, evictions(fd[i], MEMREG_EVICT_SHRINKER));
		close(fd[i]);
		munmap(buf[i], 8 * PAGE);
	}
	ASSERT_EQ(0, mr_wait_global(0, 0, 0));
}

TEST_HARNESS_MAIN
