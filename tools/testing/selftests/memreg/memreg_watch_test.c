// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: watch-only registrations (MEMREG_REGISTER_WATCH) and
 * MEMREG_IOC_REVALIDATE.
 *
 * A watch pins nothing and charges nothing to RLIMIT_MEMLOCK; it has a state
 * word and events like any registration, carries the caller's user data in
 * its events, never moves data (COPY and ring requests refuse its key with
 * EOPNOTSUPP; it has no remote key), is served only by watches, and has caps
 * of its own (max_watches, max_watches_total: EMFILE).
 *
 * It ends when the memory under it changes: munmap, mremap, MAP_FIXED,
 * mprotect removing the watched access, MADV_DONTNEED, MADV_FREE,
 * truncation of the file behind it, a copy on write after fork. A "clear"
 * over a whole 2 MiB block (a mapping split next to it, MADV_DONTFORK or
 * mlock of its range) suspends it instead; it resumes (MEMREG_EVENT_RESUMED)
 * when revalidation finds the page frames it recorded still mapped.
 *
 * Run as root, with no other memreg file open (the cap tests reload the
 * module).
 */
#include <stdbool.h>
#include <sys/wait.h>

#include "memreg_util.h"

#include "../kselftest_harness.h"

#define WATCH		MEMREG_REGISTER_WATCH
#define NPAGES		16

FIXTURE(w)
{
	int fd;
	struct memreg_state_words sw;
	struct memreg_events ev;
	size_t huge;
	char *raw;		/* 3 huge blocks, small pages */
	char *block;		/* the aligned block inside it */
	char *reg;		/* NPAGES pages in the middle of the block */
};

FIXTURE_SETUP(w)
{
	self->fd = memreg_open();
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, memreg_state_words_map(self->fd, 256, &self->sw));
	ASSERT_EQ(0, memreg_events_init(self->fd, 64, -1, &self->ev));
	self->huge = thp_size();
	self->raw = mmap(NULL, 3 * self->huge, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->raw);
	/* One VMA of small pages covering the whole aligned block. */
	madvise(self->raw, 3 * self->huge, MADV_NOHUGEPAGE);
	memset(self->raw, 'a', 3 * self->huge);
	self->block = (char *)(((unsigned long)self->raw + self->huge - 1) &
			       ~(self->huge - 1));
	self->reg = self->block + 64 * PAGE;
}

FIXTURE_TEARDOWN(w)
{
	memreg_events_exit(&self->ev);
	memreg_state_words_unmap(&self->sw);
	close(self->fd);
	munmap(self->raw, 3 * self->huge);
}

static int watch(FIXTURE_DATA(w) *self, void *addr, size_t len, __u32 access, __u64 ud,
		 struct memreg_register *r)
{
	return memreg_register_ex(self->fd, addr, len, access, WATCH, ud, r);
}

static __u64 word(FIXTURE_DATA(w) *self, const struct memreg_register *r)
{
	return __atomic_load_n(&self->sw.words[r->slot], __ATOMIC_ACQUIRE);
}

/* The next unread event and its user data; false when there is none. */
static bool next_event(FIXTURE_DATA(w) *self, struct memreg_event *e, __u64 *ud)
{
	return memreg_events_read_user_data(&self->ev, e, ud, 1) == 1;
}

/* Waits up to 2 s for an event of `kind` about `key`, skipping others. */
static bool wait_event(FIXTURE_DATA(w) *self, __u64 key, __u32 kind, __u64 *ud)
{
	struct memreg_event e;
	__u64 u;
	int i;

	for (i = 0; i < 200; i++) {
		while (next_event(self, &e, &u)) {
			if (e.key == key && e.kind == kind) {
				if (ud)
					*ud = u;
				return true;
			}
		}
		usleep(10000);
	}
	return false;
}

static struct memreg_stats stats_of(int fd)
{
	struct memreg_stats s;

	memset(&s, 0xff, sizeof(s));
	memreg_stats(fd, &s);
	return s;
}

static struct memreg_stats stats(FIXTURE_DATA(w) *self)
{
	return stats_of(self->fd);
}

/* A watch pins nothing, charges nothing, and counts as a watch. */
TEST_F(w, pins_nothing_and_counts)
{
	struct memreg_global_stats g;
	struct memreg_register r;
	struct memreg_query q;
	struct memreg_stats s;
	long vmpin = vm_pin_kb();

	ASSERT_EQ(0, watch(self, self->reg, NPAGES * PAGE, RW, 7, &r));
	EXPECT_EQ(WATCH, r.flags);
	EXPECT_NE(0, r.lkey);
	EXPECT_EQ(0, r.rkey);
	EXPECT_EQ(RW, r.access);
	EXPECT_EQ((__u64)(unsigned long)self->reg, r.region_addr);
	EXPECT_EQ(NPAGES * PAGE, r.region_length);
	ASSERT_NE(MEMREG_NO_SLOT, r.slot);
	EXPECT_EQ(r.generation, word(self, &r));
	EXPECT_EQ(vmpin, vm_pin_kb());
	s = stats(self);
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(1, s.watches);
	EXPECT_EQ(NPAGES, s.watch_pages);
	EXPECT_EQ(0, s.pages_pinned);
	EXPECT_EQ(1, s.cache_misses);
	ASSERT_EQ(0, memreg_global_stats(self->fd, &g));
	EXPECT_LE(1, g.watches);
	ASSERT_EQ(0, memreg_query(self->fd, r.lkey, &q));
	EXPECT_EQ(MEMREG_STATE_VALID, q.state);
	EXPECT_EQ(NPAGES, q.pages);
	EXPECT_EQ(1, q.refcount);

	/* The last DEREGISTER ends it (a watch is never parked). */
	ASSERT_EQ(0, memreg_deregister(self->fd, r.lkey));
	EXPECT_NE(r.generation, word(self, &r));
	EXPECT_EQ(-ENOENT, memreg_query(self->fd, r.lkey, &q));
	s = stats(self);
	EXPECT_EQ(0, s.registrations);
	EXPECT_EQ(0, s.watches);
	EXPECT_EQ(0, s.watch_pages);
	EXPECT_EQ(0, s.parked);
}

/* Untouched memory is faulted in, not pinned: the watch records its frames. */
TEST_F(w, faults_in_untouched_memory_without_pinning)
{
	char *fresh = mmap(NULL, NPAGES * PAGE, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct memreg_register r;
	long vmpin = vm_pin_kb();

	ASSERT_NE(MAP_FAILED, fresh);
	ASSERT_EQ(0, watch(self, fresh, NPAGES * PAGE, RW, 0, &r));
	EXPECT_EQ(vmpin, vm_pin_kb());
	EXPECT_EQ(0, stats(self).pages_pinned);
	EXPECT_EQ(NPAGES * PAGE_KB, smaps_kb(fresh, "Rss"));
	/* Writing the memory it recorded changes nothing. */
	memset(fresh, 'w', NPAGES * PAGE);
	EXPECT_EQ(r.generation, word(self, &r));
	ASSERT_EQ(0, memreg_deregister(self->fd, r.lkey));
	munmap(fresh, NPAGES * PAGE);
}

/*
 * A large watch of memory never touched, read-only (the zero page, huge or
 * not) and read-write (each page faulted in for writing, copy-on-write of
 * the zero page included): the faults happen before the frames are
 * recorded, so the REGISTER does not give up on its own invalidations.
 */
TEST_F(w, large_watch_of_untouched_memory)
{
	size_t len = 8UL << 20;
	struct memreg_register ro, rw;
	char *a, *b;

	a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	b = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, a);
	ASSERT_NE(MAP_FAILED, b);
	EXPECT_EQ(0, watch(self, a, len, RO, 0, &ro));
	/* Read it all (zero pages), then watch it for writing. */
	EXPECT_TRUE(all_bytes(b, len, 0));
	EXPECT_EQ(0, watch(self, b, len, RW, 0, &rw));
	EXPECT_EQ(2, stats(self).watches);
	EXPECT_EQ(0, stats(self).pages_pinned);
	EXPECT_EQ(ro.generation, word(self, &ro));
	EXPECT_EQ(rw.generation, word(self, &rw));
	/* Writing the memory the read-write watch recorded changes nothing. */
	memset(b, 'w', len);
	EXPECT_EQ(rw.generation, word(self, &rw));
	EXPECT_EQ(0, memreg_deregister(self->fd, ro.lkey));
	EXPECT_EQ(0, memreg_deregister(self->fd, rw.lkey));
	munmap(a, len);
	munmap(b, len);
}

/* Bad requests change nothing. */
TEST_F(w, refuses_bad_requests)
{
	struct memreg_register r;

	EXPECT_EQ(-EINVAL, watch(self, self->reg, PAGE, RW | MEMREG_ACCESS_REMOTE_READ, 0, &r));
	EXPECT_EQ(-EINVAL, watch(self, self->reg, PAGE, MEMREG_ACCESS_REMOTE_WRITE, 0, &r));
	EXPECT_EQ(-EINVAL, memreg_register_ex(self->fd, self->reg, PAGE, RW, WATCH << 1, 0, &r));
	EXPECT_EQ(-EINVAL, memreg_register_ex(self->fd, self->reg, PAGE, RW,
					      WATCH | MEMREG_REGISTER_CACHED, 0, &r));
	EXPECT_EQ(-EINVAL, watch(self, self->reg, 0, RW, 0, &r));
	EXPECT_EQ(-EINVAL, watch(self, self->reg, PAGE, 0, 0, &r));
	EXPECT_EQ(-EFAULT, watch(self, (void *)PAGE, PAGE, RW, 0, &r));
	EXPECT_EQ(0, stats(self).registrations);
	EXPECT_EQ(0, stats(self).watches);
}

/* No data moves through a watch: COPY and ring requests get EOPNOTSUPP. */
TEST_F(w, moves_no_data)
{
	struct memreg_register wr, pr;
	struct memreg_queue q;
	struct memreg_sqe s;
	struct memreg_cqe c;
	char buf[64];

	ASSERT_EQ(0, watch(self, self->reg, NPAGES * PAGE, RW, 0, &wr));
	ASSERT_EQ(0, memreg_register(self->fd, self->reg + NPAGES * PAGE, PAGE, RW, &pr));
	memset(buf, 'x', sizeof(buf));
	EXPECT_EQ(-EOPNOTSUPP, memreg_copy(self->fd, wr.lkey, 0, buf, sizeof(buf),
					   MEMREG_COPY_TO_REGION));
	EXPECT_EQ(-EOPNOTSUPP, memreg_copy(self->fd, wr.lkey, 0, buf, sizeof(buf),
					   MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(self->reg, NPAGES * PAGE, 'a'));

	ASSERT_EQ(0, memreg_queue_init(self->fd, 8, 8, -1, &q));
	s = mr_sqe_copy(1, pr.lkey, 0, wr.lkey, 0, 64);
	ASSERT_EQ(0, memreg_queue_post_wait(&q, &s, 5000));
	ASSERT_EQ(1, memreg_wait_cqes(&q, &c, 1, 5000));
	EXPECT_EQ(-EOPNOTSUPP, c.status);
	s = mr_sqe_copy(2, wr.lkey, 0, pr.lkey, 0, 64);
	ASSERT_EQ(0, memreg_queue_post_wait(&q, &s, 5000));
	ASSERT_EQ(1, memreg_wait_cqes(&q, &c, 1, 5000));
	EXPECT_EQ(-EOPNOTSUPP, c.status);
	EXPECT_TRUE(all_bytes(self->reg, NPAGES * PAGE + PAGE, 'a'));
	/* The watch is still there and valid. */
	EXPECT_EQ(wr.generation, word(self, &wr));
	memreg_queue_exit(&q);
}

/* A watch request is served only by watches, a pinned one only by pinned ones. */
TEST_F(w, served_only_by_its_kind)
{
	struct memreg_register p, w1, w2, p2;
	struct memreg_stats s;

	ASSERT_EQ(0, memreg_register(self->fd, self->reg, NPAGES * PAGE, RW, &p));
	ASSERT_EQ(0, watch(self, self->reg, NPAGES * PAGE, RW, 1, &w1));
	EXPECT_EQ(WATCH, w1.flags);
	EXPECT_NE(p.lkey, w1.lkey);
	ASSERT_EQ(0, watch(self, self->reg + PAGE, PAGE, RO, 2, &w2));
	EXPECT_EQ(WATCH | MEMREG_REGISTER_CACHED, w2.flags);
	EXPECT_EQ(w1.lkey, w2.lkey);
	EXPECT_EQ(w1.region_addr, w2.region_addr);
	ASSERT_EQ(0, memreg_register(self->fd, self->reg, PAGE, RW, &p2));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, p2.flags);
	EXPECT_EQ(p.lkey, p2.lkey);
	s = stats(self);
	EXPECT_EQ(2, s.registrations);
	EXPECT_EQ(1, s.watches);
	EXPECT_EQ(NPAGES, s.pages_pinned);
	EXPECT_EQ(2, s.cache_hits);
	/* Two references on the watch: it ends at the second DEREGISTER. */
	ASSERT_EQ(0, memreg_deregister(self->fd, w1.lkey));
	EXPECT_EQ(w1.generation, word(self, &w1));
	ASSERT_EQ(0, memreg_deregister(self->fd, w1.lkey));
	EXPECT_EQ(0, stats(self).watches);
}

/* What changes the memory under a watch, each ending it. */
enum change {
	CH_MUNMAP, CH_MREMAP, CH_MAP_FIXED, CH_PROT_NONE, CH_PROT_READ, CH_DONTNEED,
	CH_FREE, CH_TRUNCATE, CH_COW,
};

FIXTURE(end)
{
	int fd, memfd;
	struct memreg_state_words sw;
	struct memreg_events ev;
	char *map;
	size_t len;
};

FIXTURE_VARIANT(end)
{
	enum change change;
};

FIXTURE_VARIANT_ADD(end, munmap) { .change = CH_MUNMAP };
FIXTURE_VARIANT_ADD(end, mremap) { .change = CH_MREMAP };
FIXTURE_VARIANT_ADD(end, map_fixed) { .change = CH_MAP_FIXED };
FIXTURE_VARIANT_ADD(end, mprotect_none) { .change = CH_PROT_NONE };
FIXTURE_VARIANT_ADD(end, mprotect_read_only) { .change = CH_PROT_READ };
FIXTURE_VARIANT_ADD(end, madv_dontneed) { .change = CH_DONTNEED };
FIXTURE_VARIANT_ADD(end, madv_free) { .change = CH_FREE };
FIXTURE_VARIANT_ADD(end, truncate) { .change = CH_TRUNCATE };
FIXTURE_VARIANT_ADD(end, copy_on_write_after_fork) { .change = CH_COW };

FIXTURE_SETUP(end)
{
	self->fd = memreg_open();
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, memreg_state_words_map(self->fd, 64, &self->sw));
	ASSERT_EQ(0, memreg_events_init(self->fd, 64, -1, &self->ev));
	self->len = NPAGES * PAGE;
	self->memfd = -1;
	if (variant->change == CH_TRUNCATE) {
		self->memfd = memfd_create("memreg-watch", 0);
		ASSERT_LE(0, self->memfd);
		ASSERT_EQ(0, ftruncate(self->memfd, self->len));
		self->map = mmap(NULL, self->len, PROT_READ | PROT_WRITE, MAP_SHARED,
				 self->memfd, 0);
		ASSERT_NE(MAP_FAILED, self->map);
		memset(self->map, 'a', self->len);
	} else {
		self->map = map_buf(self->len, 'a');
		ASSERT_NE(NULL, self->map);
	}
}

FIXTURE_TEARDOWN(end)
{
	memreg_events_exit(&self->ev);
	memreg_state_words_unmap(&self->sw);
	close(self->fd);
	if (self->map)
		munmap(self->map, self->len);
	if (self->memfd >= 0)
		close(self->memfd);
}

TEST_F(end, ends_the_watch)
{
	char *page = self->map + 4 * PAGE;
	struct memreg_register r;
	struct memreg_event e;
	struct memreg_stats s;
	int go[2], status, i;
	__u64 ud = 0, u, w;
	pid_t child = -1;
	void *moved;

	ASSERT_EQ(0, memreg_register_ex(self->fd, self->map, self->len, RW, WATCH,
					0xfeed0000 + variant->change, &r));
	ASSERT_EQ(r.generation, self->sw.words[r.slot]);

	switch (variant->change) {
	case CH_MUNMAP:
		ASSERT_EQ(0, munmap(page, PAGE));
		break;
	case CH_MREMAP:
		moved = mmap(NULL, self->len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		ASSERT_NE(MAP_FAILED, moved);
		moved = mremap(self->map, self->len, self->len, MREMAP_MAYMOVE | MREMAP_FIXED,
			       moved);
		ASSERT_NE(MAP_FAILED, moved);
		munmap(moved, self->len);
		self->map = NULL;
		break;
	case CH_MAP_FIXED:
		ASSERT_NE(NULL, map_fixed(page, PAGE, 'b'));
		break;
	case CH_PROT_NONE:
		ASSERT_EQ(0, mprotect(page, PAGE, PROT_NONE));
		break;
	case CH_PROT_READ:
		ASSERT_EQ(0, mprotect(page, PAGE, PROT_READ));
		break;
	case CH_DONTNEED:
		ASSERT_EQ(0, madvise(page, PAGE, MADV_DONTNEED));
		break;
	case CH_FREE:
		ASSERT_EQ(0, madvise(page, PAGE, MADV_FREE));
		break;
	case CH_TRUNCATE:
		ASSERT_EQ(0, ftruncate(self->memfd, 4 * PAGE));
		break;
	case CH_COW:
		/* The child keeps the pages shared while the parent writes. */
		ASSERT_EQ(0, pipe(go));
		child = fork();
		ASSERT_LE(0, child);
		if (child == 0) {
			char c;

			close(go[1]);
			_exit(read(go[0], &c, 1) < 0);
		}
		close(go[0]);
		/* fork alone changes nothing: write protection is not a change. */
		usleep(100000);
		EXPECT_EQ(r.generation, self->sw.words[r.slot]);
		page[0] = 'c';
		close(go[1]);
		ASSERT_EQ(child, waitpid(child, &status, 0));
		break;
	}
	/*
	 * No longer valid before the call that changed the memory returned:
	 * ended, or (a protection change) suspended until its revalidation
	 * finds the mapping no longer grants what it watches. The kernel's
	 * own revalidation may have ended it already by the time we look.
	 */
	w = self->sw.words[r.slot];
	EXPECT_NE(r.generation, w);
	if (variant->change == CH_PROT_NONE || variant->change == CH_PROT_READ) {
		EXPECT_TRUE(w == (r.generation | MEMREG_WORD_SUSPENDED) ||
			    w == (r.generation | MEMREG_WORD_ENDED))
			TH_LOG("state word %#llx", (unsigned long long)w);
		ASSERT_EQ(1, memreg_events_read_user_data(&self->ev, &e, &u, 1));
		EXPECT_EQ(MEMREG_EVENT_SUSPENDED, e.kind);
		EXPECT_EQ(MEMREG_INVAL_PROTECTION_VMA, e.cause);
		i = memreg_revalidate(self->fd, r.lkey);
		EXPECT_TRUE(i == -ESTALE || i == -ENOENT) TH_LOG("REVALIDATE: %d", i);
	} else {
		EXPECT_EQ(-ENOENT, memreg_revalidate(self->fd, r.lkey));
	}
	EXPECT_EQ(r.generation | MEMREG_WORD_ENDED, self->sw.words[r.slot]);
	ASSERT_EQ(1, memreg_events_read_user_data(&self->ev, &e, &u, 1));
	EXPECT_EQ(MEMREG_EVENT_ENDED, e.kind);
	EXPECT_EQ(r.lkey, e.key);
	EXPECT_EQ(0xfeed0000 + variant->change, u);
	EXPECT_EQ(r.region_addr, e.addr);
	ud = u;
	s = stats_of(self->fd);
	EXPECT_EQ(0, s.watches);
	EXPECT_EQ(0, s.registrations);
	EXPECT_EQ(0, s.pages_pinned);
	EXPECT_EQ(-ENOENT, memreg_deregister(self->fd, r.lkey));
	EXPECT_NE(0, ud);
}

/*
 * mprotect that keeps the watched access: a read-only watch is suspended,
 * then resumes (the cause is the protection change).
 */
TEST_F(w, mprotect_keeping_the_access_does_not_end_it)
{
	struct memreg_register r;
	__u64 ud;
	int ret;

	ASSERT_EQ(0, watch(self, self->reg, NPAGES * PAGE, RO, 5, &r));
	ASSERT_EQ(0, mprotect(self->reg, NPAGES * PAGE, PROT_READ));
	EXPECT_EQ(0, memreg_revalidate(self->fd, r.lkey));
	EXPECT_EQ(r.generation, word(self, &r));
	EXPECT_EQ(1, stats(self).watches);
	EXPECT_EQ(0, stats(self).revalidation_failures);
	EXPECT_TRUE(wait_event(self, r.lkey, MEMREG_EVENT_RESUMED, &ud));
	EXPECT_EQ(5, ud);
	/* Taking reading away too ends it. */
	ASSERT_EQ(0, mprotect(self->reg, NPAGES * PAGE, PROT_NONE));
	ret = memreg_revalidate(self->fd, r.lkey);
	/* ESTALE, or ENOENT when the kernel's own revalidation came first. */
	EXPECT_TRUE(ret == -ESTALE || ret == -ENOENT) TH_LOG("REVALIDATE: %d", ret);
	EXPECT_EQ(r.generation | MEMREG_WORD_ENDED, word(self, &r));
	EXPECT_EQ(1, stats(self).invalidations[MEMREG_INVAL_PROTECTION_VMA]);
	EXPECT_EQ(0, stats(self).watches);
}

/*
 * A clear over the whole 2 MiB block (a split of the mapping next to the
 * watch, MADV_DONTFORK or mlock of its range) leaves the frames in place:
 * suspended, then resumed with a RESUMED event, by REVALIDATE or the
 * kernel's own revalidation, whichever comes first.
 */
FIXTURE(keep)
{
	int fd;
	struct memreg_state_words sw;
	struct memreg_events ev;
	size_t huge;
	char *raw, *block, *reg;
};

FIXTURE_VARIANT(keep)
{
	int how;	/* 0 split next to it, 1 MADV_DONTFORK, 2 mlock */
};

FIXTURE_VARIANT_ADD(keep, split_next_to_it) { .how = 0 };
FIXTURE_VARIANT_ADD(keep, madv_dontfork) { .how = 1 };
FIXTURE_VARIANT_ADD(keep, mlock) { .how = 2 };

FIXTURE_SETUP(keep)
{
	self->fd = memreg_open();
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, memreg_state_words_map(self->fd, 64, &self->sw));
	ASSERT_EQ(0, memreg_events_init(self->fd, 64, -1, &self->ev));
	self->huge = thp_size();
	self->raw = mmap(NULL, 3 * self->huge, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->raw);
	madvise(self->raw, 3 * self->huge, MADV_NOHUGEPAGE);
	memset(self->raw, 'a', 3 * self->huge);
	self->block = (char *)(((unsigned long)self->raw + self->huge - 1) &
			       ~(self->huge - 1));
	self->reg = self->block + 64 * PAGE;
}

FIXTURE_TEARDOWN(keep)
{
	munlock(self->raw, 3 * self->huge);
	memreg_events_exit(&self->ev);
	memreg_state_words_unmap(&self->sw);
	close(self->fd);
	munmap(self->raw, 3 * self->huge);
}

TEST_F(keep, clear_of_the_block_suspends_and_resumes)
{
	struct memreg_register r;
	struct memreg_event e;
	struct memreg_stats s;
	bool suspended = false, resumed = false;
	__u64 u;
	int i;

	ASSERT_EQ(0, memreg_register_ex(self->fd, self->reg, NPAGES * PAGE, RW, WATCH, 42, &r));
	switch (variant->how) {
	case 0:
		ASSERT_EQ(0, mprotect(self->reg + NPAGES * PAGE, PAGE, PROT_READ));
		break;
	case 1:
		ASSERT_EQ(0, madvise(self->reg, NPAGES * PAGE, MADV_DONTFORK));
		break;
	case 2:
		ASSERT_EQ(0, mlock(self->reg, NPAGES * PAGE));
		break;
	}
	EXPECT_EQ(0, memreg_revalidate(self->fd, r.lkey));
	EXPECT_EQ(r.generation, self->sw.words[r.slot]);
	for (i = 0; i < 100 && !resumed; i++) {
		while (memreg_events_read_user_data(&self->ev, &e, &u, 1) == 1) {
			EXPECT_EQ(r.lkey, e.key);
			EXPECT_EQ(42, u);
			EXPECT_EQ(MEMREG_INVAL_CLEAR, e.cause);
			if (e.kind == MEMREG_EVENT_SUSPENDED)
				suspended = true;
			else if (e.kind == MEMREG_EVENT_RESUMED)
				resumed = suspended;
			else
				EXPECT_EQ(0, e.kind) TH_LOG("unexpected event");
		}
		if (!resumed)
			usleep(10000);
	}
	s = stats_of(self->fd);
	if (variant->how == 2 && !suspended) {
		/* mlock of the range made no split at all: nothing to see. */
		EXPECT_EQ(0, s.suspensions);
	} else {
		EXPECT_TRUE(suspended);
		EXPECT_TRUE(resumed);
		EXPECT_LE(1, s.resumptions);
	}
	EXPECT_EQ(1, s.watches);
	EXPECT_EQ(0, s.revalidation_failures);
	EXPECT_EQ(0, memreg_deregister(self->fd, r.lkey));
}

/* REVALIDATE's own errors; a valid registration is left as it is. */
TEST_F(w, revalidate_arguments)
{
	struct memreg_revalidate rv = { 0 };
	struct memreg_register r;

	ASSERT_EQ(0, memreg_register(self->fd, self->reg, PAGE, RW, &r));
	EXPECT_EQ(0, memreg_revalidate(self->fd, r.lkey));
	EXPECT_EQ(-ENOENT, memreg_revalidate(self->fd, r.lkey ^ 1));
	EXPECT_EQ(-ENOENT, memreg_revalidate(self->fd, 0));
	rv.key = r.lkey;
	rv.reserved = 1;
	EXPECT_EQ(-1, ioctl(self->fd, MEMREG_IOC_REVALIDATE, &rv));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(r.generation, word(self, &r));
	EXPECT_EQ(1, stats(self).registrations);
	EXPECT_EQ(0, stats(self).resumptions);
}

/* A pinned registration's events carry its user data too. */
TEST_F(w, pinned_events_carry_user_data)
{
	struct memreg_register r;
	__u64 ud = 0;

	ASSERT_EQ(0, memreg_register_ex(self->fd, self->reg, PAGE, RW, 0, 0xabcdef, &r));
	EXPECT_EQ(0, r.flags);
	ASSERT_EQ(0, munmap(self->reg, PAGE));
	EXPECT_TRUE(wait_event(self, r.lkey, MEMREG_EVENT_ENDED, &ud));
	EXPECT_EQ(0xabcdef, ud);
}

/* max_watches per file and max_watches_total: EMFILE, nothing changed. */
TEST(caps)
{
	struct memreg_register r[8], x;
	char *buf;
	int fd, fd2, i;

	ASSERT_EQ(0, mr_reload_module("max_watches=4 max_watches_total=6"));
	buf = map_buf(16 * PAGE, 'c');
	ASSERT_NE(NULL, buf);
	fd = memreg_open();
	fd2 = memreg_open();
	ASSERT_LE(0, fd);
	ASSERT_LE(0, fd2);
	for (i = 0; i < 4; i++)
		ASSERT_EQ(0, memreg_register_ex(fd, buf + i * PAGE, PAGE, RW, WATCH, 0, &r[i]));
	EXPECT_EQ(-EMFILE, memreg_register_ex(fd, buf + 4 * PAGE, PAGE, RW, WATCH, 0, &x));
	EXPECT_EQ(4, stats_of(fd).watches);
	/* A hit needs no new watch; pinned registrations do not count. */
	ASSERT_EQ(0, memreg_register_ex(fd, buf, PAGE, RO, WATCH, 0, &x));
	EXPECT_EQ(WATCH | MEMREG_REGISTER_CACHED, x.flags);
	ASSERT_EQ(0, memreg_register(fd, buf + 4 * PAGE, PAGE, RW, &x));
	/* The module's cap: two more in another file, then none. */
	ASSERT_EQ(0, memreg_register_ex(fd2, buf + 8 * PAGE, PAGE, RW, WATCH, 0, &r[4]));
	ASSERT_EQ(0, memreg_register_ex(fd2, buf + 9 * PAGE, PAGE, RW, WATCH, 0, &r[5]));
	EXPECT_EQ(-EMFILE, memreg_register_ex(fd2, buf + 10 * PAGE, PAGE, RW, WATCH, 0, &x));
	EXPECT_EQ(2, stats_of(fd2).watches);
	/* Ending one makes room. */
	ASSERT_EQ(0, memreg_deregister(fd, r[3].lkey));
	ASSERT_EQ(0, memreg_register_ex(fd2, buf + 10 * PAGE, PAGE, RW, WATCH, 0, &x));
	close(fd);
	close(fd2);
	munmap(buf, 16 * PAGE);
	ASSERT_EQ(0, mr_reload_module(""));
}

TEST_HARNESS_MAIN
