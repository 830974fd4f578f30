// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: fork, exit, the address space going first, limits, and
 * a multi-threaded race.
 */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "memreg_util.h"

#include "../kselftest_harness.h"

#define LEN (4 * PAGE)

TEST(fork_parent_keeps_registrations_child_is_refused)
{
	struct memreg_cache_config cc;
	struct memreg_register r;
	struct memreg_query q;
	struct memreg_stats s;
	char data[LEN];
	char *buf = map_filled(LEN, 'a');
	int fd = memreg_open();
	pid_t pid;
	int i;

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, memreg_register(fd, buf, LEN, RW, &r));

	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		struct memreg_register r2;

		/* The inherited file belongs to the parent's address space. */
		if (memreg_register(fd, buf, PAGE, RW, &r2) != -EPERM)
			_exit(1);
		if (memreg_copy(fd, r.lkey, 0, data, 1, MEMREG_COPY_FROM_REGION) != -EPERM)
			_exit(2);
		if (memreg_copy(fd, r.lkey, 0, data, 1, MEMREG_COPY_TO_REGION) != -EPERM)
			_exit(3);
		if (memreg_query(fd, r.lkey, &q) != -EPERM || memreg_deregister(fd, r.lkey) != -EPERM)
			_exit(4);
		if (memreg_stats(fd, &s) != -EPERM)
			_exit(5);
		/* The parked list's calls too. */
		cc = (struct memreg_cache_config){ .parking = 0, .max_parked = 1024,
						   .max_parked_pages = 262144, .idle_ms = 5000 };
		if (memreg_set_cache(fd, &cc) != -EPERM || memreg_get_cache(fd, &cc) != -EPERM ||
		    memreg_flush(fd, NULL) != -EPERM)
			_exit(6);
		/* The child's writes go to its own copy of the pages. */
		memset(buf, 'c', LEN);
		_exit(0);
	}
	ASSERT_EQ(0, wait_exit(pid));
	/* The child's SET_CACHE changed nothing. */
	ASSERT_EQ(0, memreg_get_cache(fd, &cc));
	EXPECT_EQ(1, cc.parking);

	/* The parent's registration survived fork, and its memory is its own. */
	ASSERT_EQ(0, memreg_query(fd, r.lkey, &q));
	EXPECT_TRUE(q.state & MEMREG_STATE_VALID);
	EXPECT_EQ(1, q.refcount);
	EXPECT_TRUE(all_bytes(buf, LEN, 'a'));
	ASSERT_EQ(0, memreg_stats(fd, &s));
	for (i = 0; i < MEMREG_INVAL_NR_CAUSES; i++)
		EXPECT_EQ(0, s.invalidations[i]);

	/* Data still moves between the registration and the parent's memory. */
	memset(buf, 'p', LEN);
	ASSERT_EQ(0, memreg_copy(fd, r.lkey, 0, data, LEN, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, LEN, 'p'));
	memset(data, 'q', LEN);
	ASSERT_EQ(0, memreg_copy(fd, r.lkey, 0, data, LEN, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(buf, LEN, 'q'));
	close(fd);
	munmap(buf, LEN);
}

TEST(exit_releases_everything)
{
	struct memreg_global_stats before;
	pid_t pid;

	ASSERT_EQ(0, mr_global_now(&before));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		struct memreg_register r;
		char *buf = map_filled(64 * PAGE, 'x');
		int fd = memreg_open();
		int i;

		if (fd < 0 || !buf)
			_exit(1);
		for (i = 0; i < 16; i++)
			if (memreg_register(fd, buf + 4 * i * PAGE, 4 * PAGE, RW, &r))
				_exit(2);
		/* Exit without closing or deregistering anything. */
		_exit(0);
	}
	ASSERT_EQ(0, wait_exit(pid));
	ASSERT_EQ(0, mr_wait_global(before.contexts, before.regions, before.pages_pinned));
}

/* Opens a context, registers, and exits with the file's number (or 100+). */
static int register_and_exit(void *arg)
{
	struct memreg_register r;
	char *buf = map_filled(8 * PAGE, 'y');
	int fd = memreg_open();

	(void)arg;
	if (fd < 0 || fd >= 100 || !buf)
		return 100;
	if (memreg_register(fd, buf, 8 * PAGE, RW, &r) || memreg_register(fd, buf, 2 * PAGE, RO, &r))
		return 101;
	return fd;
}

/*
 * The address space goes away while the file stays open: the child shares
 * its file table with us but not its memory. Its exit tears down its address
 * space (the notifiers' release event), which must end every registration
 * and unpin everything; the file itself is released later, by our close.
 */
TEST(address_space_released_before_file)
{
	struct memreg_global_stats before, g;
	struct memreg_register r;
	size_t stack_size = 256 * 1024;
	char *stack = malloc(stack_size);
	int fd = -1;
	pid_t pid;

	ASSERT_NE(NULL, stack);
	ASSERT_EQ(0, mr_global_now(&before));
	pid = clone(register_and_exit, stack + stack_size, CLONE_FILES | SIGCHLD, NULL);
	ASSERT_GE(pid, 0);
	fd = wait_exit(pid);
	ASSERT_LT(fd, 100);
	/* The file is open, its registrations are gone. */
	ASSERT_EQ(0, mr_wait_global(before.contexts + 1, before.regions, before.pages_pinned));
	ASSERT_EQ(0, memreg_global_stats(fd, &g));
	/* We are not the owner of that context. */
	EXPECT_EQ(-EPERM, memreg_register(fd, stack, PAGE, RW, &r));
	close(fd);
	ASSERT_EQ(0, mr_wait_global(before.contexts, before.regions, before.pages_pinned));
	free(stack);
}

/* Runs in a child: RLIMIT_MEMLOCK of 16 pages, without CAP_IPC_LOCK. */
static int memlock_child(int drop_privileges)
{
	struct rlimit rl = { 16 * PAGE, 16 * PAGE };
	struct memreg_register r1, r2;
	struct memreg_stats s;
	char *buf = map_filled(64 * PAGE, 'm');
	int fd = memreg_open();
	long vmpin;

	if (fd < 0 || !buf || setrlimit(RLIMIT_MEMLOCK, &rl))
		return 1;
	/*
	 * DEREGISTER ends registrations here (parking would keep them charged;
	 * evicting parked ones under the limit is in memreg_lifecycle_test.c).
	 */
	if (mr_set_parking(fd, 0))
		return 13;
	if (drop_privileges && (setgid(65534) || setuid(65534)))
		return 2;
	vmpin = vm_pin_kb();
	if (!drop_privileges)
		/* CAP_IPC_LOCK lifts the limit. */
		return memreg_register(fd, buf, 32 * PAGE, RW, &r1) ? 3 : 0;
	if (memreg_register(fd, buf, 8 * PAGE, RW, &r1))
		return 4;
	if (memreg_register(fd, buf + 8 * PAGE, 16 * PAGE, RW, &r2) != -ENOMEM)
		return 5;
	/* The failure pinned and charged nothing. */
	if (vm_pin_kb() != vmpin + 8 * (long)PAGE_KB || memreg_stats(fd, &s) || s.pages_pinned != 8 ||
	    s.registrations != 1)
		return 6;
	/* Up to the limit exactly, then not a page more. */
	if (memreg_register(fd, buf + 8 * PAGE, 8 * PAGE, RW, &r2))
		return 7;
	if (memreg_register(fd, buf + 16 * PAGE, PAGE, RO, &r2) != -ENOMEM)
		return 8;
	/* A cache hit pins nothing, so it is allowed at the limit. */
	if (memreg_register(fd, buf, PAGE, RW, &r2) || !(r2.flags & MEMREG_REGISTER_CACHED))
		return 9;
	if (memreg_deregister(fd, r2.lkey) || memreg_deregister(fd, r1.lkey))
		return 10;
	if (memreg_register(fd, buf + 16 * PAGE, 8 * PAGE, RO, &r2))
		return 11;
	close(fd);
	return vm_pin_kb() == vmpin ? 0 : 12;
}

TEST(rlimit_memlock)
{
	pid_t pid = fork();

	ASSERT_GE(pid, 0);
	if (pid == 0)
		_exit(memlock_child(1));
	EXPECT_EQ(0, wait_exit(pid));
}

TEST(cap_ipc_lock_lifts_rlimit_memlock)
{
	pid_t pid = fork();

	ASSERT_GE(pid, 0);
	if (pid == 0)
		_exit(memlock_child(0));
	EXPECT_EQ(0, wait_exit(pid));
}

#define SLOTS 8
#define SLOT_LEN (4 * PAGE)

struct race {
	int fd;
	char *area;
	_Atomic __u64 keys[SLOTS];
	_Atomic int stop;
	_Atomic int bad_errno;
	_Atomic long registers, copies, remaps;
};

static unsigned int next_rand(unsigned int *seed)
{
	*seed = *seed * 1103515245 + 12345;
	return *seed >> 16;
}

static void note_bad(struct race *rc, int err, int allowed1, int allowed2, int allowed3)
{
	if (err && err != allowed1 && err != allowed2 && err != allowed3)
		atomic_store(&rc->bad_errno, -err);
}

static void *registrar(void *arg)
{
	struct race *rc = arg;
	unsigned int seed = 1;

	while (!atomic_load(&rc->stop)) {
		int slot = next_rand(&seed) % SLOTS;
		struct memreg_register r;
		int err = memreg_register(rc->fd, rc->area + slot * SLOT_LEN, SLOT_LEN, RW, &r);
		__u64 old;

		/* The slot may be unmapped right now (EFAULT), or change while pinned (EAGAIN). */
		note_bad(rc, err, -EFAULT, -EAGAIN, 0);
		if (err)
			continue;
		atomic_fetch_add(&rc->registers, 1);
		old = atomic_exchange(&rc->keys[slot], r.lkey);
		if (old && old != r.lkey)
			note_bad(rc, memreg_deregister(rc->fd, old), -ENOENT, 0, 0);
	}
	return NULL;
}

static void *remapper(void *arg)
{
	struct race *rc = arg;
	unsigned int seed = 2;

	while (!atomic_load(&rc->stop)) {
		int slot = next_rand(&seed) % SLOTS;
		char *p = rc->area + slot * SLOT_LEN;

		if (munmap(p, SLOT_LEN) ||
		    mmap(p, SLOT_LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
			 -1, 0) != p)
			atomic_store(&rc->bad_errno, errno);
		memset(p, 's', SLOT_LEN);
		atomic_fetch_add(&rc->remaps, 1);
		usleep(100);
	}
	return NULL;
}

static void *copier(void *arg)
{
	struct race *rc = arg;
	unsigned int seed = (unsigned int)(unsigned long)pthread_self();
	char buf[SLOT_LEN];

	memset(buf, 'k', sizeof(buf));
	while (!atomic_load(&rc->stop)) {
		int slot = next_rand(&seed) % SLOTS;
		__u64 key = atomic_load(&rc->keys[slot]);
		int dir = next_rand(&seed) & 1;

		if (!key)
			continue;
		/* A key may die at any moment: ENOENT is the only other answer. */
		note_bad(rc, memreg_copy(rc->fd, key, 0, buf, SLOT_LEN, dir), -ENOENT, 0, 0);
		atomic_fetch_add(&rc->copies, 1);
	}
	return NULL;
}

TEST(race_register_deregister_munmap_copy)
{
	struct memreg_global_stats before;
	static struct race rc;
	pthread_t t[5];
	int i;

	ASSERT_EQ(0, mr_global_now(&before));
	rc.fd = memreg_open();
	ASSERT_GE(rc.fd, 0);
	rc.area = mmap(NULL, SLOTS * SLOT_LEN, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, rc.area);
	memset(rc.area, 's', SLOTS * SLOT_LEN);

	ASSERT_EQ(0, pthread_create(&t[0], NULL, registrar, &rc));
	ASSERT_EQ(0, pthread_create(&t[1], NULL, registrar, &rc));
	ASSERT_EQ(0, pthread_create(&t[2], NULL, remapper, &rc));
	ASSERT_EQ(0, pthread_create(&t[3], NULL, copier, &rc));
	ASSERT_EQ(0, pthread_create(&t[4], NULL, copier, &rc));
	/* Bounded in time: two seconds of racing. */
	sleep(2);
	atomic_store(&rc.stop, 1);
	for (i = 0; i < 5; i++)
		pthread_join(t[i], NULL);

	TH_LOG("%ld registrations, %ld copies, %ld remaps", rc.registers, rc.copies, rc.remaps);
	EXPECT_EQ(0, rc.bad_errno);
	EXPECT_GT(rc.registers, 0);
	EXPECT_GT(rc.remaps, 0);
	EXPECT_GT(rc.copies, 0);
	close(rc.fd);
	munmap(rc.area, SLOTS * SLOT_LEN);
	ASSERT_EQ(0, mr_wait_global(before.contexts, before.regions, before.pages_pinned));
}

TEST_HARNESS_MAIN
