// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: state words and the event ring (ABI version 2).
 *
 * State words: the file's read-only mapping at MEMREG_MMAP_STATE_WORDS holds
 * one __u64 per slot. A registration made after the first such mapping gets
 * a slot and a generation (a nonzero multiple of 4); its word equals the
 * generation while it is usable, generation | MEMREG_WORD_SUSPENDED while a
 * CLEAR has it suspended, and generation | MEMREG_WORD_ENDED once it ended,
 * each written before the call that caused it returns. A freed slot is reused
 * only with a larger generation.
 *
 * The event ring (MEMREG_IOC_EVENTS_SETUP): a read-only header and entries at
 * MEMREG_MMAP_EVENTS, the reader's head at MEMREG_MMAP_EVENTS_HEAD. Events
 * are written when a registration is suspended, ends by an invalidation or a
 * failed revalidation, or is evicted, never for DEREGISTER or close; each is
 * in the ring, poll/epoll see it and the eventfd counts it, before the call
 * that caused it returns. A full ring drops events and says so (flag and
 * counter); MEMREG_IOC_EVENTS_RESYNC starts over with a list of what is live.
 *
 * Also: the counters in /proc/PID/fdinfo and in debugfs (memreg/stats).
 *
 * Buffers are private anonymous memory with MADV_NOHUGEPAGE, so that no
 * huge page split adds a CLEAR to the events a test expects; the suspension
 * test builds a transparent huge page on purpose and is skipped without one.
 * Run as root, with no other memreg file open.
 */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "memreg_util.h"

#include "../kselftest_harness.h"

#define BUF_PAGES	32	/* the fixtures' buffer */
#define RING_ENTRIES	64	/* the fixtures' event ring */

#define SUSPENDED(gen)	((__u64)(gen) | MEMREG_WORD_SUSPENDED)
#define ENDED(gen)	((__u64)(gen) | MEMREG_WORD_ENDED)

#define DEBUGFS_STATS	"/sys/kernel/debug/memreg/stats"

/* ---- Helpers ---- */

/* The state word of `slot`, read as user space must: an acquire load. */
static __u64 word(const __u64 *words, __u32 slot)
{
	return __atomic_load_n(&words[slot], __ATOMIC_ACQUIRE);
}

/* mmap of the file; 0 (the mapping is removed again) or -errno. */
static int try_mmap(int fd, size_t len, int prot, int flags, off_t offset)
{
	void *p = mmap(NULL, len, prot, flags, fd, offset);

	if (p == MAP_FAILED)
		return -errno;
	munmap(p, len);
	return 0;
}

/* poll() with timeout 0: the returned events, 0, or -1 on error. */
static int poll_now(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int n = poll(&p, 1, 0);

	if (n < 0)
		return -1;
	return n ? p.revents : 0;
}

static struct memreg_cache_config cache_config(__u32 parking, __u64 max_parked,
					       __u64 max_parked_pages, __u64 idle_ms)
{
	return (struct memreg_cache_config){ .parking = parking, .max_parked = max_parked,
					     .max_parked_pages = max_parked_pages,
					     .idle_ms = idle_ms };
}

/* ---- The event ring, as a reader sees it ---- */

struct ring {
	struct memreg_event_ring *hdr;	/* the read-only mapping, `bytes` long */
	struct memreg_event *ev;	/* its entries */
	__u32 *head;			/* the read-write head page */
	size_t bytes;
	__u32 entries;
};

/* EVENTS_SETUP, then maps the ring and its head; 0 or -errno. */
static int ring_setup(int fd, __u32 entries, int efd, struct ring *r)
{
	struct memreg_events_setup s = { .entries = entries, .eventfd = efd };
	void *p;

	memset(r, 0, sizeof(*r));
	if (ioctl(fd, MEMREG_IOC_EVENTS_SETUP, &s))
		return -errno;
	p = mmap(NULL, s.ring_bytes, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_EVENTS);
	if (p == MAP_FAILED)
		return -errno;
	r->hdr = p;
	r->ev = (struct memreg_event *)((char *)p + MEMREG_EVENTS_OFFSET);
	r->bytes = s.ring_bytes;
	r->entries = entries;
	p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, MEMREG_MMAP_EVENTS_HEAD);
	if (p == MAP_FAILED)
		return -errno;
	r->head = p;
	return 0;
}

static void ring_unmap(struct ring *r)
{
	if (r->hdr)
		munmap(r->hdr, r->bytes);
	if (r->head)
		munmap(r->head, PAGE);
	memset(r, 0, sizeof(*r));
}

static __u32 ring_tail(const struct ring *r)
{
	return __atomic_load_n(&r->hdr->tail, __ATOMIC_ACQUIRE);
}

static __u32 ring_flags(const struct ring *r)
{
	return __atomic_load_n(&r->hdr->flags, __ATOMIC_ACQUIRE);
}

static __u64 ring_overflows(const struct ring *r)
{
	return __atomic_load_n(&r->hdr->overflows, __ATOMIC_ACQUIRE);
}

static __u32 ring_head(const struct ring *r)
{
	return __atomic_load_n(r->head, __ATOMIC_ACQUIRE);
}

static void ring_set_head(struct ring *r, __u32 head)
{
	__atomic_store_n(r->head, head, __ATOMIC_RELEASE);
}

/* Event number `i` (counted from the first ever written). */
static const struct memreg_event *ring_at(const struct ring *r, __u32 i)
{
	return &r->ev[i & (r->entries - 1)];
}

static void expect_event(struct __test_metadata *_metadata, const struct memreg_event *e,
			 __u64 key, const void *addr, __u64 length, __u32 kind, __u32 cause)
{
	EXPECT_EQ(key, e->key);
	EXPECT_EQ((__u64)(unsigned long)addr, e->addr);
	EXPECT_EQ(length, e->length);
	EXPECT_EQ(kind, e->kind);
	EXPECT_EQ(cause, e->cause);
}

/* ---- A context with state words, an event ring and an eventfd ---- */

struct ctx {
	int fd;
	int efd;		/* non-blocking eventfd the ring signals */
	__u64 *words;		/* one page of state words */
	size_t words_len;
	struct ring ring;	/* all zero without a ring */
};

static void ctx_init(struct ctx *c)
{
	memset(c, 0, sizeof(*c));
	c->fd = c->efd = -1;
}

/*
 * Opens a context that never evicts for idleness, maps one page of state
 * words and, unless `entries` is 0, sets up an event ring of `entries`
 * entries signalling an eventfd. 0 or -errno.
 */
static int ctx_open(struct ctx *c, __u32 entries)
{
	struct memreg_cache_config cfg = cache_config(1, 1024, 262144, 0);
	void *p;
	int ret;

	ctx_init(c);
	c->fd = memreg_open();
	if (c->fd < 0)
		return -errno;
	ret = memreg_set_cache(c->fd, &cfg);
	if (ret)
		return ret;
	c->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->efd < 0)
		return -errno;
	p = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, c->fd, MEMREG_MMAP_STATE_WORDS);
	if (p == MAP_FAILED)
		return -errno;
	c->words = p;
	c->words_len = PAGE;
	return entries ? ring_setup(c->fd, entries, c->efd, &c->ring) : 0;
}

static void ctx_close(struct ctx *c)
{
	if (c->fd >= 0)
		close(c->fd);
	if (c->efd >= 0)
		close(c->efd);
	if (c->words)
		munmap(c->words, c->words_len);
	ring_unmap(&c->ring);
	ctx_init(c);
}

/* A registration that REGISTER just created got a slot and a generation in its word. */
static void expect_new_slot(struct __test_metadata *_metadata, const struct ctx *c,
			    const struct memreg_register *r)
{
	ASSERT_NE(MEMREG_NO_SLOT, r->slot);
	ASSERT_LT(r->slot, c->words_len / 8);
	EXPECT_NE(0, r->generation);
	EXPECT_EQ(0, r->generation % 4);
	EXPECT_EQ(r->generation, word(c->words, r->slot));
}

static void expect_state(struct __test_metadata *_metadata, int fd, __u64 key, __u32 state)
{
	struct memreg_query q;

	ASSERT_EQ(0, memreg_query(fd, key, &q));
	EXPECT_EQ(state, q.state);
}

/* Nothing in the ring, nothing signalled, nothing to poll for. */
static void expect_no_events(struct __test_metadata *_metadata, const struct ctx *c)
{
	EXPECT_EQ(0, ring_tail(&c->ring));
	EXPECT_EQ(0, ring_flags(&c->ring));
	EXPECT_EQ(0, efd_count(c->efd));
	EXPECT_EQ(0, poll_now(c->fd));
}

FIXTURE(ev)
{
	struct ctx c;
	char *buf;	/* BUF_PAGES small pages, filled with 'e' */
};

FIXTURE_SETUP(ev)
{
	ctx_init(&self->c);
	self->buf = NULL;
	ASSERT_EQ(0, ctx_open(&self->c, RING_ENTRIES));
	self->buf = map_buf(BUF_PAGES * PAGE, 'e');
	ASSERT_NE(NULL, self->buf);
}

FIXTURE_TEARDOWN(ev)
{
	ctx_close(&self->c);
	if (self->buf)
		munmap(self->buf, BUF_PAGES * PAGE);
}

/* ---- State words ---- */

TEST_F(ev, words_follow_register_hit_park_revive)
{
	struct ctx *c = &self->c;
	struct memreg_register r, hit, other;
	struct memreg_query q;
	size_t i, nwords = c->words_len / 8;

	/* Unused words are zero. */
	for (i = 0; i < nwords; i++) {
		ASSERT_EQ(0, word(c->words, i)) TH_LOG("word %zu", i);
	}

	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 100, 3 * PAGE, RW, &r));
	EXPECT_EQ(0, r.flags);
	expect_new_slot(_metadata, c, &r);

	/* A hit: the same registration, slot and generation; the word stays. */
	ASSERT_EQ(0, memreg_register(c->fd, self->buf + PAGE, PAGE, RO, &hit));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, hit.flags);
	EXPECT_EQ(r.lkey, hit.lkey);
	EXPECT_EQ(r.slot, hit.slot);
	EXPECT_EQ(r.generation, hit.generation);
	EXPECT_EQ(r.generation, word(c->words, r.slot));

	/* Another registration: a slot of its own. */
	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 8 * PAGE, 2 * PAGE, RW, &other));
	expect_new_slot(_metadata, c, &other);
	EXPECT_NE(r.slot, other.slot);

	/*
	 * Dropping a reference, then the last one (parked, its keys ended for
	 * data): parking leaves the word alone.
	 */
	ASSERT_EQ(0, memreg_deregister(c->fd, r.lkey));
	EXPECT_EQ(r.generation, word(c->words, r.slot));
	ASSERT_EQ(0, memreg_deregister(c->fd, r.lkey));
	expect_state(_metadata, c->fd, r.lkey, MEMREG_STATE_VALID | MEMREG_STATE_PARKED);
	EXPECT_EQ(r.generation, word(c->words, r.slot));

	/*
	 * Revived: the same slot and generation, and the word stays, but new
	 * keys (the same sequence); the old local key is unknown now.
	 */
	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 200, PAGE, RO, &hit));
	EXPECT_EQ(MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED, hit.flags);
	EXPECT_EQ(r.lkey >> 24, hit.lkey >> 24);
	EXPECT_NE(r.lkey, hit.lkey);
	EXPECT_NE(r.rkey, hit.rkey);
	EXPECT_EQ(r.slot, hit.slot);
	EXPECT_EQ(r.generation, hit.generation);
	EXPECT_EQ(r.generation, word(c->words, r.slot));
	EXPECT_EQ(other.generation, word(c->words, other.slot));
	expect_state(_metadata, c->fd, hit.lkey, MEMREG_STATE_VALID);
	EXPECT_EQ(-ENOENT, memreg_query(c->fd, r.lkey, &q));

	/* None of it is an event; no other word moved. */
	expect_no_events(_metadata, c);
	for (i = 0; i < nwords; i++) {
		if (i != r.slot && i != other.slot) {
			EXPECT_EQ(0, word(c->words, i)) TH_LOG("word %zu", i);
		}
	}
}

TEST_F(ev, flush_ends_parked_words_with_events)
{
	struct ctx *c = &self->c;
	struct memreg_register a, b, live;
	struct memreg_flush f;

	ASSERT_EQ(0, memreg_register(c->fd, self->buf, 2 * PAGE, RW, &a));
	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 4 * PAGE + 10, 3 * PAGE, RO, &b));
	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 10 * PAGE, PAGE, RW, &live));
	ASSERT_EQ(0, memreg_deregister(c->fd, a.lkey));
	ASSERT_EQ(0, memreg_deregister(c->fd, b.lkey));
	EXPECT_EQ(a.generation, word(c->words, a.slot));
	EXPECT_EQ(b.generation, word(c->words, b.slot));
	expect_no_events(_metadata, c);

	ASSERT_EQ(0, memreg_flush(c->fd, &f));
	EXPECT_EQ(2, f.evicted);
	EXPECT_EQ(ENDED(a.generation), word(c->words, a.slot));
	EXPECT_EQ(ENDED(b.generation), word(c->words, b.slot));
	EXPECT_EQ(live.generation, word(c->words, live.slot));
	/* Least recently parked first. */
	ASSERT_EQ(2, ring_tail(&c->ring));
	expect_event(_metadata, ring_at(&c->ring, 0), a.lkey, self->buf, 2 * PAGE,
		     MEMREG_EVENT_EVICTED, MEMREG_EVICT_FLUSH);
	expect_event(_metadata, ring_at(&c->ring, 1), b.lkey, self->buf + 4 * PAGE + 10,
		     3 * PAGE, MEMREG_EVENT_EVICTED, MEMREG_EVICT_FLUSH);
	EXPECT_EQ(2, efd_count(c->efd));
	EXPECT_EQ(POLLIN, poll_now(c->fd) & POLLIN);
}

/* DEREGISTER ending a registration ends its word but writes no event. */
TEST_F(ev, deregister_without_parking_ends_word_without_event)
{
	struct ctx *c = &self->c;
	struct memreg_register a, b;
	struct memreg_query q;

	/* Turning parking off evicts what is parked (FLUSH)... */
	ASSERT_EQ(0, memreg_register(c->fd, self->buf, PAGE, RW, &a));
	ASSERT_EQ(0, memreg_deregister(c->fd, a.lkey));
	ASSERT_EQ(0, mr_set_parking(c->fd, 0));
	EXPECT_EQ(ENDED(a.generation), word(c->words, a.slot));
	ASSERT_EQ(1, ring_tail(&c->ring));
	expect_event(_metadata, ring_at(&c->ring, 0), a.lkey, self->buf, PAGE,
		     MEMREG_EVENT_EVICTED, MEMREG_EVICT_FLUSH);
	EXPECT_EQ(1, efd_count(c->efd));

	/* ...and then the last DEREGISTER ends a registration: no event. */
	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 4 * PAGE, 2 * PAGE, RW, &b));
	expect_new_slot(_metadata, c, &b);
	ASSERT_EQ(0, memreg_deregister(c->fd, b.lkey));
	EXPECT_EQ(-ENOENT, memreg_query(c->fd, b.lkey, &q));
	EXPECT_EQ(ENDED(b.generation), word(c->words, b.slot));
	EXPECT_EQ(1, ring_tail(&c->ring));
	EXPECT_EQ(0, efd_count(c->efd));
}

/* A parked registration evicted past max_parked, then for idleness. */
TEST_F(ev, evictions_end_words_with_events)
{
	struct ctx *c = &self->c;
	struct memreg_cache_config cfg = cache_config(1, 1, 262144, 0);
	struct memreg_register a, b;
	struct pollfd p = { .fd = c->fd, .events = POLLIN };

	ASSERT_EQ(0, memreg_set_cache(c->fd, &cfg));
	ASSERT_EQ(0, memreg_register(c->fd, self->buf, PAGE, RW, &a));
	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 2 * PAGE, PAGE, RW, &b));
	ASSERT_EQ(0, memreg_deregister(c->fd, a.lkey));
	EXPECT_EQ(0, ring_tail(&c->ring));
	ASSERT_EQ(0, memreg_deregister(c->fd, b.lkey));
	EXPECT_EQ(ENDED(a.generation), word(c->words, a.slot));
	EXPECT_EQ(b.generation, word(c->words, b.slot));
	ASSERT_EQ(1, ring_tail(&c->ring));
	expect_event(_metadata, ring_at(&c->ring, 0), a.lkey, self->buf, PAGE,
		     MEMREG_EVENT_EVICTED, MEMREG_EVICT_PARK_LIMIT);
	ring_set_head(&c->ring, 1);
	EXPECT_EQ(0, poll_now(c->fd));

	/* Idle for 200 ms: the delayed work evicts b, and wakes a blocked poll. */
	cfg.idle_ms = 200;
	ASSERT_EQ(0, memreg_set_cache(c->fd, &cfg));
	ASSERT_EQ(1, poll(&p, 1, 5000));
	EXPECT_TRUE(p.revents & POLLIN);
	ASSERT_EQ(2, ring_tail(&c->ring));
	expect_event(_metadata, ring_at(&c->ring, 1), b.lkey, self->buf + 2 * PAGE, PAGE,
		     MEMREG_EVENT_EVICTED, MEMREG_EVICT_IDLE);
	EXPECT_EQ(ENDED(b.generation), word(c->words, b.slot));
	EXPECT_EQ(2, efd_count(c->efd));
}

TEST_F(ev, freed_slot_is_reused_with_larger_generation)
{
	struct ctx *c = &self->c;
	struct memreg_register a, b, cc, d, e;

	ASSERT_EQ(0, memreg_register(c->fd, self->buf, PAGE, RW, &a));
	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 2 * PAGE, PAGE, RW, &b));
	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 4 * PAGE, PAGE, RW, &cc));
	expect_new_slot(_metadata, c, &a);
	expect_new_slot(_metadata, c, &b);
	expect_new_slot(_metadata, c, &cc);
	EXPECT_NE(a.slot, b.slot);
	EXPECT_NE(b.slot, cc.slot);
	EXPECT_NE(a.slot, cc.slot);

	ASSERT_EQ(0, munmap(self->buf + 2 * PAGE, PAGE));
	EXPECT_EQ(ENDED(b.generation), word(c->words, b.slot));
	ASSERT_EQ(self->buf + 2 * PAGE, mmap(self->buf + 2 * PAGE, PAGE, PROT_READ | PROT_WRITE,
					     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0));

	/* The only free slot below the others is b's: taken again, generation up. */
	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 6 * PAGE, PAGE, RW, &d));
	EXPECT_EQ(0, d.flags);
	EXPECT_EQ(b.slot, d.slot);
	EXPECT_GT(d.generation, b.generation);
	EXPECT_EQ(0, d.generation % 4);
	EXPECT_EQ(d.generation, word(c->words, d.slot));
	EXPECT_EQ(a.generation, word(c->words, a.slot));
	EXPECT_EQ(cc.generation, word(c->words, cc.slot));

	/* Ended again (parked, flushed), and taken again: larger still. */
	ASSERT_EQ(0, memreg_deregister(c->fd, d.lkey));
	ASSERT_EQ(0, memreg_flush(c->fd, NULL));
	EXPECT_EQ(ENDED(d.generation), word(c->words, d.slot));
	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 8 * PAGE, PAGE, RW, &e));
	EXPECT_EQ(d.slot, e.slot);
	EXPECT_GT(e.generation, d.generation);
	EXPECT_EQ(e.generation, word(c->words, e.slot));
}

/*
 * Slots are handed out lowest first: a fresh context's registrations get
 * 0, 1, 2, ..., and of several free slots the lowest is taken first
 * whatever order they were freed in.
 */
TEST_F(ev, last_freed_slot_first)
{
	struct ctx *c = &self->c;
	struct memreg_register r[4], n[3];
	int i;

	for (i = 0; i < 4; i++) {
		ASSERT_EQ(0, memreg_register(c->fd, self->buf + 2 * i * PAGE, PAGE, RW, &r[i]));
		EXPECT_EQ(i, r[i].slot);
	}
	/* Slots 0 and 2 freed, in that order. */
	ASSERT_EQ(0, mprotect(self->buf, PAGE, PROT_READ));
	ASSERT_EQ(0, mprotect(self->buf + 4 * PAGE, PAGE, PROT_READ));
	EXPECT_EQ(ENDED(r[0].generation), word(c->words, 0));
	EXPECT_EQ(ENDED(r[2].generation), word(c->words, 2));

	for (i = 0; i < 3; i++) {
		ASSERT_EQ(0, memreg_register(c->fd, self->buf + (16 + 2 * i) * PAGE, PAGE, RW, &n[i]));
	}
	/* The slot freed last is taken first (its word is warm), then the others. */
	EXPECT_EQ(2, n[0].slot);
	EXPECT_EQ(0, n[1].slot);
	EXPECT_EQ(4, n[2].slot);
	EXPECT_GT(n[0].generation, r[2].generation);
	EXPECT_GT(n[1].generation, r[0].generation);
}

/* With every slot taken REGISTER gives MEMREG_NO_SLOT; a freed one is given again. */
TEST_F(ev, full_words_give_no_slot)
{
	struct ctx *c = &self->c;
	size_t nslots = c->words_len / 8, i;
	size_t len = (nslots + 2) * PAGE;
	struct memreg_register r, extra, again, freed;
	char *big = map_buf(len, 'f');
	char *seen = calloc(nslots, 1);

	ASSERT_NE(NULL, big);
	ASSERT_NE(NULL, seen);
	memset(&freed, 0, sizeof(freed));
	for (i = 0; i < nslots; i++) {
		ASSERT_EQ(0, memreg_register(c->fd, big + i * PAGE, PAGE, RW, &r)) TH_LOG("%zu", i);
		ASSERT_NE(MEMREG_NO_SLOT, r.slot) TH_LOG("registration %zu", i);
		ASSERT_LT(r.slot, nslots);
		ASSERT_EQ(0, seen[r.slot]) TH_LOG("slot %u twice", r.slot);
		seen[r.slot] = 1;
		ASSERT_EQ(r.generation, word(c->words, r.slot));
		if (i == 5)
			freed = r;
	}
	ASSERT_EQ(0, memreg_register(c->fd, big + nslots * PAGE, PAGE, RW, &extra));
	EXPECT_EQ(0, extra.flags);
	EXPECT_EQ(MEMREG_NO_SLOT, extra.slot);
	EXPECT_EQ(0, extra.generation);

	/* One ends: its slot goes to the next new registration. */
	ASSERT_EQ(0, munmap(big + 5 * PAGE, PAGE));
	EXPECT_EQ(ENDED(freed.generation), word(c->words, freed.slot));
	ASSERT_EQ(0, memreg_register(c->fd, big + (nslots + 1) * PAGE, PAGE, RW, &again));
	EXPECT_EQ(freed.slot, again.slot);
	EXPECT_GT(again.generation, freed.generation);
	EXPECT_EQ(again.generation, word(c->words, again.slot));
	/* The one without a slot keeps none. */
	ASSERT_EQ(0, memreg_register(c->fd, big + nslots * PAGE, PAGE, RO, &r));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, r.flags);
	EXPECT_EQ(extra.lkey, r.lkey);
	EXPECT_EQ(MEMREG_NO_SLOT, r.slot);
	EXPECT_EQ(0, r.generation);
	free(seen);
	munmap(big, len);
}

/* Registrations made before the first mapping of the state words have no slot. */
TEST(no_slot_before_words_are_mapped)
{
	struct memreg_resync_entry list[4];
	struct memreg_register a, b, r;
	struct memreg_query q;
	char *buf = map_buf(8 * PAGE, 'n');
	__u32 count = 0, i;
	__u64 *words;
	int fd = memreg_open();

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, memreg_register(fd, buf, 2 * PAGE, RW, &a));
	EXPECT_EQ(MEMREG_NO_SLOT, a.slot);
	EXPECT_EQ(0, a.generation);

	words = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_STATE_WORDS);
	ASSERT_NE(MAP_FAILED, words);
	for (i = 0; i < PAGE / 8; i++) {
		ASSERT_EQ(0, word(words, i));
	}
	ASSERT_EQ(0, memreg_register(fd, buf + 4 * PAGE, 2 * PAGE, RW, &b));
	ASSERT_NE(MEMREG_NO_SLOT, b.slot);
	EXPECT_NE(0, b.generation);
	EXPECT_EQ(b.generation, word(words, b.slot));

	/*
	 * A hit, a park and a revival of the old one: still no slot. The
	 * revival gives it new keys (the same sequence), and the old local key
	 * is unknown from then on.
	 */
	ASSERT_EQ(0, memreg_register(fd, buf + PAGE, PAGE, RO, &r));
	EXPECT_EQ(a.lkey, r.lkey);
	EXPECT_EQ(MEMREG_NO_SLOT, r.slot);
	EXPECT_EQ(0, r.generation);
	ASSERT_EQ(0, memreg_deregister(fd, a.lkey));
	ASSERT_EQ(0, memreg_deregister(fd, a.lkey));
	ASSERT_EQ(0, memreg_register(fd, buf, PAGE, RO, &r));
	EXPECT_EQ(MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED, r.flags);
	EXPECT_EQ(a.lkey >> 24, r.lkey >> 24);
	EXPECT_NE(a.lkey, r.lkey);
	EXPECT_EQ(MEMREG_NO_SLOT, r.slot);
	EXPECT_EQ(0, r.generation);
	EXPECT_EQ(-ENOENT, memreg_query(fd, a.lkey, &q));

	/* RESYNC says so too, under the new key. */
	ASSERT_EQ(0, memreg_events_resync(fd, list, 4, &count));
	ASSERT_EQ(2, count);
	for (i = 0; i < count; i++) {
		if (list[i].key == r.lkey) {
			EXPECT_EQ(MEMREG_NO_SLOT, list[i].slot);
		} else {
			EXPECT_EQ(b.lkey, list[i].key);
			EXPECT_EQ(b.slot, list[i].slot);
		}
	}

	/* Its end writes no word. */
	ASSERT_EQ(0, memreg_query(fd, r.lkey, &q));
	ASSERT_EQ(0, munmap(buf, 2 * PAGE));
	EXPECT_EQ(-ENOENT, memreg_query(fd, r.lkey, &q));
	for (i = 0; i < PAGE / 8; i++) {
		EXPECT_EQ(i == b.slot ? b.generation : 0, word(words, i)) TH_LOG("word %u", i);
	}
	close(fd);
	munmap(words, PAGE);
	munmap(buf, 8 * PAGE);
}

/* ---- The mappings ---- */

TEST(mmap_refuses_bad_requests)
{
	const off_t bad[] = { PAGE, 2 * PAGE, 0x08000000, MEMREG_MMAP_EVENTS + PAGE,
			      MEMREG_MMAP_EVENTS_HEAD + PAGE, 0x30000000, 0x40000000 };
	struct memreg_register r;
	char *buf = map_buf(4 * PAGE, 'm');
	__u64 *words, *words2;
	void *p;
	size_t i;
	int fd = memreg_open(), fd2;

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ, MAP_SHARED, bad[i]))
			TH_LOG("offset %#llx", (unsigned long long)bad[i]);
	}
	/* The event ring's areas before EVENTS_SETUP. */
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ, MAP_SHARED, MEMREG_MMAP_EVENTS));
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_EVENTS_HEAD));
	/* More words than MEMREG_MAX_SLOTS. */
	EXPECT_EQ(-EINVAL, try_mmap(fd, MEMREG_MAX_SLOTS * 8 + PAGE, PROT_READ, MAP_SHARED,
				    MEMREG_MMAP_STATE_WORDS));

	/* The first mapping sets the number of words: 2 pages of them. */
	words = mmap(NULL, 2 * PAGE, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_STATE_WORDS);
	ASSERT_NE(MAP_FAILED, words);
	EXPECT_EQ(-EINVAL, try_mmap(fd, 3 * PAGE, PROT_READ, MAP_SHARED, MEMREG_MMAP_STATE_WORDS));
	EXPECT_EQ(0, try_mmap(fd, 2 * PAGE, PROT_READ, MAP_SHARED, MEMREG_MMAP_STATE_WORDS));
	/* A shorter one shows the same words. */
	words2 = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_STATE_WORDS);
	ASSERT_NE(MAP_FAILED, words2);
	ASSERT_EQ(0, memreg_register(fd, buf, PAGE, RW, &r));
	ASSERT_LT(r.slot, PAGE / 8);
	EXPECT_EQ(r.generation, word(words, r.slot));
	EXPECT_EQ(r.generation, word(words2, r.slot));
	munmap(words2, PAGE);

	/* Writable, executable or private: refused. */
	EXPECT_EQ(-EINVAL, try_mmap(fd, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_STATE_WORDS));
	EXPECT_EQ(-EINVAL, try_mmap(fd, 2 * PAGE, PROT_WRITE, MAP_SHARED, MEMREG_MMAP_STATE_WORDS));
	EXPECT_EQ(-EINVAL, try_mmap(fd, 2 * PAGE, PROT_READ | PROT_EXEC, MAP_SHARED,
				    MEMREG_MMAP_STATE_WORDS));
	EXPECT_EQ(-EINVAL, try_mmap(fd, 2 * PAGE, PROT_READ, MAP_PRIVATE, MEMREG_MMAP_STATE_WORDS));
	/* Nor can the mapping become so. */
	EXPECT_EQ(-1, mprotect(words, 2 * PAGE, PROT_READ | PROT_WRITE));
	EXPECT_EQ(EACCES, errno);
	EXPECT_EQ(-1, mprotect(words, PAGE, PROT_READ | PROT_EXEC));
	EXPECT_EQ(EACCES, errno);
	/* Nor grow. */
	p = mremap(words, 2 * PAGE, 4 * PAGE, 0);
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EFAULT, errno);
	p = mremap(words, 2 * PAGE, 4 * PAGE, MREMAP_MAYMOVE);
	EXPECT_EQ(MAP_FAILED, p);
	EXPECT_EQ(EFAULT, errno);
	/* And it still works. */
	EXPECT_EQ(r.generation, word(words, r.slot));
	ASSERT_EQ(0, munmap(buf, PAGE));
	EXPECT_EQ(ENDED(r.generation), word(words, r.slot));

	/* The most words a context may have. */
	fd2 = memreg_open();
	ASSERT_GE(fd2, 0);
	EXPECT_EQ(0, try_mmap(fd2, MEMREG_MAX_SLOTS * 8, PROT_READ, MAP_SHARED,
			      MEMREG_MMAP_STATE_WORDS));
	close(fd2);
	close(fd);
	munmap(words, 2 * PAGE);
	munmap(buf, 4 * PAGE);
}

/*
 * A refused mapping of the state words leaves no trace: REGISTER still gives
 * no slot, and the first mapping that succeeds decides how many words there
 * are.
 */
TEST(refused_mmap_creates_no_words)
{
	struct memreg_register r;
	char *buf = map_buf(2 * PAGE, 'x');
	__u64 *words;
	int fd = memreg_open();

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_STATE_WORDS));
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ, MAP_PRIVATE, MEMREG_MMAP_STATE_WORDS));
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ | PROT_EXEC, MAP_SHARED,
				    MEMREG_MMAP_STATE_WORDS));
	ASSERT_EQ(0, memreg_register(fd, buf, PAGE, RW, &r));
	EXPECT_EQ(MEMREG_NO_SLOT, r.slot);
	EXPECT_EQ(0, r.generation);
	words = mmap(NULL, 2 * PAGE, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_STATE_WORDS);
	EXPECT_NE(MAP_FAILED, words) TH_LOG("mmap of 2 pages after refused 1-page ones: %s",
					    strerror(errno));
	if (words != MAP_FAILED)
		munmap(words, 2 * PAGE);
	close(fd);
	munmap(buf, 2 * PAGE);
}

/* Read-only mappings cannot be written; the head page can. */
TEST(written_mappings)
{
	enum { WORDS, RING, HEAD };
	int what;

	for (what = WORDS; what <= HEAD; what++) {
		pid_t pid = fork();

		ASSERT_GE(pid, 0);
		if (pid == 0) {
			struct ctx c;

			no_core();
			if (ctx_open(&c, 4))
				_exit(1);
			switch (what) {
			case WORDS:
				*(volatile __u64 *)c.words = 1;
				break;
			case RING:
				*(volatile __u32 *)&c.ring.hdr->tail = 1;
				break;
			case HEAD:
				*(volatile __u32 *)c.ring.head = 1;
				if (ring_head(&c.ring) != 1)
					_exit(2);
				break;
			}
			_exit(0);
		}
		if (what == HEAD) {
			EXPECT_EQ(0, wait_exit(pid));
		} else {
			EXPECT_EQ(SIGSEGV, wait_signal(pid)) TH_LOG("area %d", what);
		}
	}
}

/* A child has none of the mappings (VM_DONTCOPY) and cannot map them. */
TEST_F(ev, mappings_are_not_inherited)
{
	struct ctx *c = &self->c;
	const void *areas[] = { c->words, c->ring.hdr, c->ring.head };
	struct memreg_register r;
	size_t i;
	pid_t pid;

	ASSERT_EQ(0, memreg_register(c->fd, self->buf, PAGE, RW, &r));
	for (i = 0; i < sizeof(areas) / sizeof(areas[0]); i++) {
		pid = fork();
		ASSERT_GE(pid, 0);
		if (pid == 0) {
			no_core();
			(void)*(const volatile __u32 *)areas[i];
			_exit(0);
		}
		EXPECT_EQ(SIGSEGV, wait_signal(pid)) TH_LOG("area %zu", i);
	}
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		/* The inherited file is not the child's to map. */
		if (try_mmap(c->fd, PAGE, PROT_READ, MAP_SHARED, MEMREG_MMAP_STATE_WORDS) != -EPERM)
			_exit(1);
		if (try_mmap(c->fd, c->ring.bytes, PROT_READ, MAP_SHARED,
			     MEMREG_MMAP_EVENTS) != -EPERM)
			_exit(2);
		_exit(0);
	}
	EXPECT_EQ(0, wait_exit(pid));
	/* The parent's are intact. */
	EXPECT_EQ(r.generation, word(c->words, r.slot));
	EXPECT_EQ(RING_ENTRIES, c->ring.hdr->entries);
}

/* fork and the child's exit change nothing of the parent's registrations. */
TEST_F(ev, fork_and_child_exit_leave_words_alone)
{
	struct ctx *c = &self->c;
	struct memreg_register a, b;
	char data[64];
	pid_t pid;

	ASSERT_EQ(0, memreg_register(c->fd, self->buf, 4 * PAGE, RW, &a));
	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 8 * PAGE, 2 * PAGE, RW, &b));
	ASSERT_EQ(0, memreg_deregister(c->fd, b.lkey));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		memset(self->buf, 'c', 12 * PAGE);
		_exit(0);
	}
	ASSERT_EQ(0, wait_exit(pid));
	EXPECT_EQ(a.generation, word(c->words, a.slot));
	EXPECT_EQ(b.generation, word(c->words, b.slot));
	expect_state(_metadata, c->fd, a.lkey, MEMREG_STATE_VALID);
	expect_state(_metadata, c->fd, b.lkey, MEMREG_STATE_VALID | MEMREG_STATE_PARKED);
	expect_no_events(_metadata, c);
	/* Still the parent's pages. */
	EXPECT_TRUE(all_bytes(self->buf, 12 * PAGE, 'e'));
	memset(self->buf, 'p', sizeof(data));
	ASSERT_EQ(0, memreg_copy(c->fd, a.lkey, 0, data, sizeof(data), MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, sizeof(data), 'p'));
}

/*
 * A child's own context: when it exits, its address space goes and every
 * registration of it ends by invalidation, writing events (seen here through
 * the eventfd it shared); then its file is released.
 */
TEST(child_exit_ends_its_registrations_with_events)
{
	struct memreg_global_stats base, g;
	int ready[2], go[2], efd;
	char ch;
	pid_t pid;

	mr_settle(&base);
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ASSERT_GE(efd, 0);
	ASSERT_EQ(0, pipe(ready));
	ASSERT_EQ(0, pipe(go));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		struct memreg_register r[3];
		struct ring ring;
		char *buf = map_buf(8 * PAGE, 'k');
		struct memreg_cache_config cfg = cache_config(1, 1024, 262144, 0);
		__u64 *words;
		int fd = memreg_open(), i;

		if (fd < 0 || !buf || memreg_set_cache(fd, &cfg) || ring_setup(fd, 16, efd, &ring))
			_exit(1);
		words = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_STATE_WORDS);
		if (words == MAP_FAILED)
			_exit(2);
		for (i = 0; i < 3; i++)
			if (memreg_register(fd, buf + 2 * i * PAGE, 2 * PAGE, RW, &r[i]) ||
			    word(words, r[i].slot) != r[i].generation)
				_exit(3);
		if (memreg_deregister(fd, r[1].lkey))
			_exit(4);
		if (write(ready[1], "r", 1) != 1 || read(go[0], &ch, 1) != 1)
			_exit(5);
		_exit(0);
	}
	ASSERT_EQ(1, read(ready[0], &ch, 1));
	EXPECT_EQ(0, efd_count(efd));
	ASSERT_EQ(0, mr_global_now(&g));
	EXPECT_EQ(base.contexts + 1, g.contexts);
	EXPECT_EQ(base.regions + 3, g.regions);
	EXPECT_EQ(base.pages_pinned + 6, g.pages_pinned);
	ASSERT_EQ(1, write(go[1], "g", 1));
	ASSERT_EQ(0, wait_exit(pid));
	EXPECT_EQ(3, efd_count(efd));
	EXPECT_EQ(0, mr_wait_global(base.contexts, base.regions, base.pages_pinned));
	close(efd);
}

/* Closing the file ends its registrations without events. */
TEST(close_writes_no_events)
{
	struct memreg_global_stats base;
	struct memreg_cache_config cfg = cache_config(1, 1024, 262144, 0);
	struct memreg_events_setup s = { .entries = 8 };
	struct memreg_register a, b;
	char *buf = map_buf(8 * PAGE, 'c');
	long vmpin;
	int fd, efd;

	ASSERT_NE(NULL, buf);
	mr_settle(&base);
	vmpin = vm_pin_kb();
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ASSERT_GE(efd, 0);
	fd = memreg_open();
	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, memreg_set_cache(fd, &cfg));
	s.eventfd = efd;
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_EVENTS_SETUP, &s));
	ASSERT_EQ(0, memreg_register(fd, buf, 2 * PAGE, RW, &a));
	ASSERT_EQ(0, memreg_register(fd, buf + 4 * PAGE, 2 * PAGE, RW, &b));
	ASSERT_EQ(0, memreg_deregister(fd, b.lkey));
	EXPECT_EQ(vmpin + 4 * (long)PAGE_KB, vm_pin_kb());
	ASSERT_EQ(0, close(fd));
	EXPECT_EQ(vmpin, vm_pin_kb());
	EXPECT_EQ(0, efd_count(efd));
	EXPECT_EQ(0, mr_wait_global(base.contexts, base.regions, base.pages_pinned));
	EXPECT_EQ(0, efd_count(efd));
	close(efd);
	munmap(buf, 8 * PAGE);
}

/*
 * The mappings hold the file: close() of the descriptor releases nothing
 * while one is mapped (the words stay what they were); unmapping the last
 * one releases the context, still without events.
 */
TEST(close_keeps_context_while_mapped)
{
	struct memreg_global_stats base, g;
	struct memreg_register a, b;
	struct ctx c;
	char *buf = map_buf(8 * PAGE, 'c');

	ASSERT_NE(NULL, buf);
	mr_settle(&base);
	ASSERT_EQ(0, ctx_open(&c, 8));
	ASSERT_EQ(0, memreg_register(c.fd, buf, 4 * PAGE, RW, &a));
	ASSERT_EQ(0, memreg_register(c.fd, buf + 4 * PAGE, 2 * PAGE, RW, &b));
	ASSERT_EQ(0, memreg_deregister(c.fd, b.lkey));
	ASSERT_EQ(0, close(c.fd));
	c.fd = -1;

	EXPECT_EQ(a.generation, word(c.words, a.slot));
	EXPECT_EQ(b.generation, word(c.words, b.slot));
	ASSERT_EQ(0, mr_global_now(&g));
	EXPECT_EQ(base.contexts + 1, g.contexts);
	EXPECT_EQ(base.regions + 2, g.regions);
	EXPECT_EQ(base.pages_pinned + 6, g.pages_pinned);

	/* The registrations still end by invalidation while it lives. */
	ASSERT_EQ(0, munmap(buf, 4 * PAGE));
	EXPECT_EQ(ENDED(a.generation), word(c.words, a.slot));
	ASSERT_EQ(1, ring_tail(&c.ring));
	expect_event(_metadata, ring_at(&c.ring, 0), a.lkey, buf, 4 * PAGE,
		     MEMREG_EVENT_ENDED, MEMREG_INVAL_UNMAP);
	EXPECT_EQ(1, efd_count(c.efd));

	munmap(c.words, c.words_len);
	c.words = NULL;
	ASSERT_EQ(0, mr_global_now(&g));
	EXPECT_EQ(base.contexts + 1, g.contexts);
	ring_unmap(&c.ring);
	EXPECT_EQ(0, mr_wait_global(base.contexts, base.regions, base.pages_pinned));
	EXPECT_EQ(0, efd_count(c.efd));
	ctx_close(&c);
	munmap(buf + 4 * PAGE, 4 * PAGE);
}

/* ---- Events of invalidations ---- */

enum inval_op { OP_MUNMAP, OP_MPROTECT, OP_MREMAP };

FIXTURE(inval)
{
	struct ctx c;
	char *buf;
	char *moved;	/* where OP_MREMAP moved the pages */
};

FIXTURE_VARIANT(inval)
{
	int op;
	bool parked;
	int cause;
};

FIXTURE_VARIANT_ADD(inval, munmap) { .op = OP_MUNMAP, .cause = MEMREG_INVAL_UNMAP };
FIXTURE_VARIANT_ADD(inval, munmap_parked) {
	.op = OP_MUNMAP, .parked = true, .cause = MEMREG_INVAL_UNMAP };
FIXTURE_VARIANT_ADD(inval, mprotect) { .op = OP_MPROTECT, .cause = MEMREG_INVAL_PROTECTION_VMA };
FIXTURE_VARIANT_ADD(inval, mprotect_parked) {
	.op = OP_MPROTECT, .parked = true, .cause = MEMREG_INVAL_PROTECTION_VMA };
FIXTURE_VARIANT_ADD(inval, mremap) { .op = OP_MREMAP, .cause = MEMREG_INVAL_UNMAP };
FIXTURE_VARIANT_ADD(inval, mremap_parked) {
	.op = OP_MREMAP, .parked = true, .cause = MEMREG_INVAL_UNMAP };

FIXTURE_SETUP(inval)
{
	ctx_init(&self->c);
	self->buf = self->moved = NULL;
	ASSERT_EQ(0, ctx_open(&self->c, RING_ENTRIES));
	self->buf = map_buf(BUF_PAGES * PAGE, 'i');
	ASSERT_NE(NULL, self->buf);
}

FIXTURE_TEARDOWN(inval)
{
	ctx_close(&self->c);
	if (self->buf)
		munmap(self->buf, BUF_PAGES * PAGE);
	if (self->moved)
		munmap(self->moved, 4 * PAGE);
}

/*
 * The registration's word is ENDED and its event is in the ring, signalled
 * and pollable, when the call that ended it returns.
 */
TEST_F(inval, ends_word_and_writes_event_before_returning)
{
	struct ctx *c = &self->c;
	char *pages = self->buf + 2 * PAGE;	/* the 4 pages under the registration */
	struct memreg_register r, other;
	struct memreg_stats s;
	struct memreg_query q;
	__u64 sum = 0;
	char *p;
	int i;

	ASSERT_EQ(0, memreg_register(c->fd, pages + 100, 3 * PAGE, RW, &r));
	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 10 * PAGE, 2 * PAGE, RW, &other));
	if (variant->parked) {
		ASSERT_EQ(0, memreg_deregister(c->fd, r.lkey));
		expect_state(_metadata, c->fd, r.lkey, MEMREG_STATE_VALID | MEMREG_STATE_PARKED);
	}
	ASSERT_EQ(r.generation, word(c->words, r.slot));
	ASSERT_EQ(0, ring_tail(&c->ring));

	switch (variant->op) {
	case OP_MUNMAP:
		ASSERT_EQ(0, munmap(pages, 4 * PAGE));
		break;
	case OP_MPROTECT:
		ASSERT_EQ(0, mprotect(pages, 4 * PAGE, PROT_READ));
		break;
	case OP_MREMAP:
		self->moved = mmap(NULL, 4 * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		ASSERT_NE(MAP_FAILED, self->moved);
		p = mremap(pages, 4 * PAGE, 4 * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, self->moved);
		ASSERT_EQ(self->moved, p);
		break;
	}
	/* No waiting: all of it is there when the call returns. */
	EXPECT_EQ(ENDED(r.generation), word(c->words, r.slot));
	ASSERT_EQ(1, ring_tail(&c->ring));
	expect_event(_metadata, ring_at(&c->ring, 0), r.lkey, pages + 100, 3 * PAGE,
		     MEMREG_EVENT_ENDED, variant->cause);
	EXPECT_EQ(POLLIN, poll_now(c->fd) & POLLIN);
	EXPECT_EQ(1, efd_count(c->efd));
	EXPECT_EQ(0, ring_flags(&c->ring));
	EXPECT_EQ(0, ring_overflows(&c->ring));
	EXPECT_EQ(0, ring_head(&c->ring));
	EXPECT_EQ(-ENOENT, memreg_query(c->fd, r.lkey, &q));
	ASSERT_EQ(0, memreg_stats(c->fd, &s));
	for (i = 0; i < MEMREG_INVAL_NR_CAUSES; i++)
		sum += s.invalidations[i];
	EXPECT_EQ(1, sum);
	EXPECT_EQ(1, s.invalidations[variant->cause]);

	/* The registration next to it is untouched. */
	EXPECT_EQ(other.generation, word(c->words, other.slot));
	expect_state(_metadata, c->fd, other.lkey, MEMREG_STATE_VALID);
	/* Nothing more comes. */
	usleep(100000);
	EXPECT_EQ(1, ring_tail(&c->ring));
	EXPECT_EQ(0, efd_count(c->efd));
}

/* MADV_DONTNEED of a registered page: suspended (CLEAR), then revalidation fails. */
TEST_F(ev, failed_revalidation_ends_word_with_events)
{
	struct ctx *c = &self->c;
	char *reg = self->buf + 2 * PAGE;
	struct memreg_register r;
	struct memreg_stats s;
	char data[64];
	__u64 w;

	ASSERT_EQ(0, memreg_register(c->fd, reg, 4 * PAGE, RW, &r));
	ASSERT_EQ(0, madvise(reg + PAGE, PAGE, MADV_DONTNEED));
	/* Suspended when madvise returns (the worker may have ended it already). */
	w = word(c->words, r.slot);
	EXPECT_TRUE(w == SUSPENDED(r.generation) || w == ENDED(r.generation))
		TH_LOG("word %#llx, generation %#llx", (unsigned long long)w,
		       (unsigned long long)r.generation);
	ASSERT_GE(ring_tail(&c->ring), 1);
	expect_event(_metadata, ring_at(&c->ring, 0), r.lkey, reg, 4 * PAGE,
		     MEMREG_EVENT_SUSPENDED, MEMREG_INVAL_CLEAR);

	/* The first use revalidates: the page is gone, the registration ends. */
	EXPECT_EQ(-ENOENT, memreg_copy(c->fd, r.lkey, 0, data, sizeof(data), MEMREG_COPY_FROM_REGION));
	EXPECT_EQ(ENDED(r.generation), word(c->words, r.slot));
	ASSERT_EQ(2, ring_tail(&c->ring));
	expect_event(_metadata, ring_at(&c->ring, 1), r.lkey, reg, 4 * PAGE,
		     MEMREG_EVENT_ENDED, MEMREG_INVAL_CLEAR);
	EXPECT_EQ(2, efd_count(c->efd));
	ASSERT_EQ(0, memreg_stats(c->fd, &s));
	EXPECT_EQ(1, s.suspensions);
	EXPECT_EQ(0, s.resumptions);
	EXPECT_EQ(1, s.revalidation_failures);
	EXPECT_EQ(1, s.invalidations[MEMREG_INVAL_CLEAR]);
}

/* ---- Suspension: a transparent huge page split next to the registration ---- */

static bool thp_configured(void)
{
	return access("/sys/kernel/mm/transparent_hugepage", F_OK) == 0;
}

FIXTURE(thp)
{
	struct ctx c;
	size_t huge;
	char *raw;	/* 3 * huge */
	char *block;	/* a huge-aligned block inside, a page of the mapping either side */
};

FIXTURE_SETUP(thp)
{
	long kb;

	ctx_init(&self->c);
	self->huge = thp_size();
	self->raw = mmap(NULL, 3 * self->huge, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->raw);
	self->block = (char *)(((unsigned long)self->raw + PAGE + self->huge - 1) &
			       ~(self->huge - 1));
	if (!thp_configured() || madvise(self->block, self->huge, MADV_HUGEPAGE))
		SKIP(return, "no transparent huge pages");
	memset(self->block, 'a', self->huge);
	kb = smaps_kb(self->block, "AnonHugePages");
	if (kb < (long)(self->huge / 1024))
		SKIP(return, "no THP formed (AnonHugePages %ld kB)", kb);
	ASSERT_EQ(0, ctx_open(&self->c, RING_ENTRIES));
}

FIXTURE_TEARDOWN(thp)
{
	ctx_close(&self->c);
	munmap(self->raw, 3 * self->huge);
}

TEST_F(thp, neighbour_split_suspends_then_resumes)
{
	struct ctx *c = &self->c;
	size_t len = self->huge - PAGE;
	struct memreg_register r;
	struct memreg_stats s;
	char data[64];
	__u64 w;
	int i;

	ASSERT_EQ(0, memreg_register(c->fd, self->block, len, RW, &r));
	expect_new_slot(_metadata, c, &r);
	/* Splits the VMA inside the huge page: a CLEAR over the whole block. */
	ASSERT_EQ(0, mprotect(self->block + len, PAGE, PROT_READ));
	w = word(c->words, r.slot);
	ASSERT_EQ(1, ring_tail(&c->ring));
	expect_event(_metadata, ring_at(&c->ring, 0), r.lkey, self->block, len,
		     MEMREG_EVENT_SUSPENDED, MEMREG_INVAL_CLEAR);
	EXPECT_EQ(1, efd_count(c->efd));
	if (w != SUSPENDED(r.generation)) {
		/* Only if the worker resumed it already. */
		EXPECT_EQ(r.generation, w);
		ASSERT_EQ(0, memreg_stats(c->fd, &s));
		EXPECT_EQ(1, s.resumptions);
		TH_LOG("resumed before the word was read");
	}

	/* The worker finds the pages in place: usable again, same generation. */
	for (i = 0; i < 500 && word(c->words, r.slot) != r.generation; i++)
		usleep(10000);
	EXPECT_EQ(r.generation, word(c->words, r.slot));
	expect_state(_metadata, c->fd, r.lkey, MEMREG_STATE_VALID);
	ASSERT_EQ(0, memreg_copy(c->fd, r.lkey, 0, data, sizeof(data), MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, sizeof(data), 'a'));
	ASSERT_EQ(0, memreg_stats(c->fd, &s));
	EXPECT_EQ(1, s.suspensions);
	EXPECT_EQ(1, s.resumptions);
	EXPECT_EQ(0, s.revalidation_failures);
	/*
	 * Resuming a pinned registration is not an event (only a watch's is):
	 * a reader built before ABI version 4 sees nothing it does not know.
	 */
	EXPECT_EQ(1, ring_tail(&c->ring));
	EXPECT_EQ(0, efd_count(c->efd));
}

/* ---- The event ring's set-up and mappings ---- */

TEST(events_setup_refuses_bad_requests)
{
	const __u32 bad_entries[] = { 0, 3, 6, 100, MEMREG_MAX_EVENTS + 1,
				      MEMREG_MAX_EVENTS * 2, 0x80000000u, 0xffffffffu };
	struct memreg_events_setup s;
	struct memreg_event_ring *hdr;
	size_t hdr_bytes;
	int fd = memreg_open(), efd, nullfd, closedfd, pipefd[2], fd2;
	size_t i;

	ASSERT_GE(fd, 0);
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ASSERT_GE(efd, 0);
	nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
	ASSERT_GE(nullfd, 0);
	ASSERT_EQ(0, pipe(pipefd));
	closedfd = dup(nullfd);
	ASSERT_GE(closedfd, 0);
	close(closedfd);

	for (i = 0; i < sizeof(bad_entries) / sizeof(bad_entries[0]); i++) {
		s = (struct memreg_events_setup){ .entries = bad_entries[i], .eventfd = -1 };
		EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_EVENTS_SETUP, &s)) TH_LOG("%u", bad_entries[i]);
		EXPECT_EQ(EINVAL, errno) TH_LOG("entries %u", bad_entries[i]);
	}
	for (i = 0; i < 2; i++) {
		s = (struct memreg_events_setup){ .entries = 4, .eventfd = -1 };
		s.reserved[i] = 1;
		EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_EVENTS_SETUP, &s));
		EXPECT_EQ(EINVAL, errno);
	}
	/* Not an eventfd. */
	{
		const int not_eventfd[] = { nullfd, pipefd[0], pipefd[1], fd };

		for (i = 0; i < 4; i++) {
			s = (struct memreg_events_setup){ .entries = 4, .eventfd = not_eventfd[i] };
			EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_EVENTS_SETUP, &s)) TH_LOG("%zu", i);
			EXPECT_EQ(EINVAL, errno) TH_LOG("case %zu", i);
		}
	}
	/* Not open. */
	{
		const int not_open[] = { closedfd, -2, 0x7fffffff };

		for (i = 0; i < 3; i++) {
			s = (struct memreg_events_setup){ .entries = 4, .eventfd = not_open[i] };
			EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_EVENTS_SETUP, &s)) TH_LOG("%zu", i);
			EXPECT_EQ(EBADF, errno) TH_LOG("case %zu", i);
		}
	}
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_EVENTS_SETUP, (void *)8));
	EXPECT_EQ(EFAULT, errno);
	/* None of that made a ring. */
	EXPECT_EQ(-EINVAL, try_mmap(fd, PAGE, PROT_READ, MAP_SHARED, MEMREG_MMAP_EVENTS));
	EXPECT_EQ(0, poll_now(fd));

	s = (struct memreg_events_setup){ .entries = 4, .eventfd = efd };
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_EVENTS_SETUP, &s));
	EXPECT_GE(s.ring_bytes, MEMREG_EVENTS_OFFSET + 4 * sizeof(struct memreg_event));
	EXPECT_EQ(0, s.ring_bytes % PAGE);
	EXPECT_EQ(0, s.reserved[0]);
	EXPECT_EQ(0, s.reserved[1]);
	hdr_bytes = s.ring_bytes;
	hdr = mmap(NULL, hdr_bytes, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_EVENTS);
	ASSERT_NE(MAP_FAILED, hdr);
	EXPECT_EQ(4, hdr->entries);

	/* Once per file. */
	s = (struct memreg_events_setup){ .entries = 4, .eventfd = -1 };
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_EVENTS_SETUP, &s));
	EXPECT_EQ(EBUSY, errno);
	s = (struct memreg_events_setup){ .entries = 16, .eventfd = efd };
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_EVENTS_SETUP, &s));
	EXPECT_EQ(EBUSY, errno);
	EXPECT_EQ(4, hdr->entries);
	EXPECT_EQ(0, hdr->tail);
	munmap(hdr, hdr_bytes);

	/* The smallest and the largest ring. */
	fd2 = memreg_open();
	ASSERT_GE(fd2, 0);
	s = (struct memreg_events_setup){ .entries = 1, .eventfd = -1 };
	ASSERT_EQ(0, ioctl(fd2, MEMREG_IOC_EVENTS_SETUP, &s));
	EXPECT_GE(s.ring_bytes, MEMREG_EVENTS_OFFSET + sizeof(struct memreg_event));
	close(fd2);
	fd2 = memreg_open();
	ASSERT_GE(fd2, 0);
	s = (struct memreg_events_setup){ .entries = MEMREG_MAX_EVENTS, .eventfd = -1 };
	ASSERT_EQ(0, ioctl(fd2, MEMREG_IOC_EVENTS_SETUP, &s));
	EXPECT_GE(s.ring_bytes, MEMREG_EVENTS_OFFSET +
				MEMREG_MAX_EVENTS * sizeof(struct memreg_event));
	EXPECT_EQ(0, try_mmap(fd2, s.ring_bytes, PROT_READ, MAP_SHARED, MEMREG_MMAP_EVENTS));
	close(fd2);

	close(pipefd[0]);
	close(pipefd[1]);
	close(nullfd);
	close(efd);
	close(fd);
}

TEST_F(ev, ring_mappings_refuse_bad_requests)
{
	struct ctx *c = &self->c;
	const struct memreg_event_ring *h = c->ring.hdr;
	struct memreg_event_ring *again;
	struct memreg_register r;
	size_t bytes = c->ring.bytes;
	void *p;
	int i;

	/* A fresh ring. */
	EXPECT_EQ(RING_ENTRIES, h->entries);
	EXPECT_EQ(0, h->tail);
	EXPECT_EQ(0, h->flags);
	EXPECT_EQ(0, h->reserved0);
	EXPECT_EQ(0, h->overflows);
	for (i = 0; i < 5; i++) {
		EXPECT_EQ(0, h->reserved[i]);
	}
	EXPECT_EQ(0, ring_head(&c->ring));

	EXPECT_EQ(-EINVAL, try_mmap(c->fd, bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_EVENTS));
	EXPECT_EQ(-EINVAL, try_mmap(c->fd, bytes, PROT_READ | PROT_EXEC, MAP_SHARED,
				    MEMREG_MMAP_EVENTS));
	EXPECT_EQ(-EINVAL, try_mmap(c->fd, bytes, PROT_READ, MAP_PRIVATE, MEMREG_MMAP_EVENTS));
	EXPECT_EQ(-EINVAL, try_mmap(c->fd, bytes + PAGE, PROT_READ, MAP_SHARED,
				    MEMREG_MMAP_EVENTS));
	EXPECT_EQ(-1, mprotect(c->ring.hdr, bytes, PROT_READ | PROT_WRITE));
	EXPECT_EQ(EACCES, errno);
	p = mremap(c->ring.hdr, bytes, bytes + PAGE, MREMAP_MAYMOVE);
	EXPECT_EQ(MAP_FAILED, p);

	EXPECT_EQ(-EINVAL, try_mmap(c->fd, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED,
				    MEMREG_MMAP_EVENTS_HEAD));
	EXPECT_EQ(-EINVAL, try_mmap(c->fd, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE,
				    MEMREG_MMAP_EVENTS_HEAD));
	EXPECT_EQ(-EINVAL, try_mmap(c->fd, PAGE, PROT_READ | PROT_EXEC, MAP_SHARED,
				    MEMREG_MMAP_EVENTS_HEAD));
	EXPECT_EQ(0, try_mmap(c->fd, PAGE, PROT_READ, MAP_SHARED, MEMREG_MMAP_EVENTS_HEAD));

	/* A second mapping of the ring shows the same events. */
	again = mmap(NULL, bytes, PROT_READ, MAP_SHARED, c->fd, MEMREG_MMAP_EVENTS);
	ASSERT_NE(MAP_FAILED, again);
	ASSERT_EQ(0, memreg_register(c->fd, self->buf, PAGE, RW, &r));
	ASSERT_EQ(0, munmap(self->buf, PAGE));
	EXPECT_EQ(1, __atomic_load_n(&again->tail, __ATOMIC_ACQUIRE));
	EXPECT_EQ(r.lkey, ((struct memreg_event *)((char *)again + MEMREG_EVENTS_OFFSET))->key);
	munmap(again, bytes);
}

/* ---- Waiting for events ---- */

TEST_F(ev, poll_reports_unread_events)
{
	struct ctx *c = &self->c;
	struct memreg_register a, b;
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	int fd2 = memreg_open();

	/* Without a ring, nothing to read. */
	ASSERT_GE(fd2, 0);
	EXPECT_EQ(0, poll_now(fd2));
	close(fd2);

	EXPECT_EQ(0, poll_now(c->fd));
	ASSERT_EQ(0, memreg_register(c->fd, self->buf, PAGE, RW, &a));
	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 2 * PAGE, PAGE, RW, &b));
	EXPECT_EQ(0, poll_now(c->fd));

	ASSERT_EQ(0, munmap(self->buf, PAGE));
	EXPECT_EQ(POLLIN, poll_now(c->fd) & POLLIN);
	/* A blocking poll returns at once too. */
	EXPECT_EQ(1, poll(&p, 1, 5000));
	EXPECT_TRUE(p.revents & POLLIN);
	/* Read: nothing left. */
	ring_set_head(&c->ring, ring_tail(&c->ring));
	EXPECT_EQ(0, poll_now(c->fd));
	EXPECT_EQ(0, poll(&p, 1, 100));

	ASSERT_EQ(0, munmap(self->buf + 2 * PAGE, PAGE));
	EXPECT_EQ(POLLIN, poll_now(c->fd) & POLLIN);
	ASSERT_EQ(2, ring_tail(&c->ring));
	expect_event(_metadata, ring_at(&c->ring, 1), b.lkey, self->buf + 2 * PAGE, PAGE,
		     MEMREG_EVENT_ENDED, MEMREG_INVAL_UNMAP);
	ring_set_head(&c->ring, 2);
	EXPECT_EQ(0, poll_now(c->fd));
}

struct waiter {
	int epfd;
	pid_t tid;
	int done;
	int n;
	struct epoll_event ev;
};

static void *epoll_waiter(void *arg)
{
	struct waiter *w = arg;

	__atomic_store_n(&w->tid, (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
	w->n = epoll_wait(w->epfd, &w->ev, 1, 10000);
	__atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

TEST_F(ev, epoll_wakes_a_blocked_waiter)
{
	struct ctx *c = &self->c;
	struct epoll_event ee = { .events = EPOLLIN, .data.u64 = 0x5eed };
	struct waiter w = { .epfd = -1 };
	struct memreg_register r;
	struct timespec t0, t1;
	pthread_t th;
	int i;

	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 4 * PAGE, 2 * PAGE, RW, &r));
	w.epfd = epoll_create1(EPOLL_CLOEXEC);
	ASSERT_GE(w.epfd, 0);
	ASSERT_EQ(0, epoll_ctl(w.epfd, EPOLL_CTL_ADD, c->fd, &ee));
	ASSERT_EQ(0, pthread_create(&th, NULL, epoll_waiter, &w));
	for (i = 0; i < 500 && !__atomic_load_n(&w.tid, __ATOMIC_ACQUIRE); i++)
		usleep(10000);
	ASSERT_NE(0, w.tid);
	for (i = 0; i < 500 && !thread_sleeping(w.tid); i++)
		usleep(10000);
	usleep(100000);
	/* Blocked: nothing woke it yet. */
	ASSERT_EQ(0, __atomic_load_n(&w.done, __ATOMIC_ACQUIRE));

	clock_gettime(CLOCK_MONOTONIC, &t0);
	ASSERT_EQ(0, munmap(self->buf + 4 * PAGE, 2 * PAGE));
	pthread_join(th, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	EXPECT_EQ(1, w.n);
	EXPECT_TRUE(w.ev.events & EPOLLIN);
	EXPECT_EQ(0x5eed, w.ev.data.u64);
	/* Woken by the event, not by the 10 s timeout. */
	EXPECT_LT(t1.tv_sec - t0.tv_sec, 5);
	ASSERT_EQ(1, ring_tail(&c->ring));
	expect_event(_metadata, ring_at(&c->ring, 0), r.lkey, self->buf + 4 * PAGE, 2 * PAGE,
		     MEMREG_EVENT_ENDED, MEMREG_INVAL_UNMAP);
	close(w.epfd);
}

TEST_F(ev, eventfd_counts_each_event)
{
	struct ctx *c = &self->c;
	struct memreg_register r;
	uint64_t v;
	int i;

	EXPECT_EQ(-1, read(c->efd, &v, sizeof(v)));
	EXPECT_EQ(EAGAIN, errno);
	for (i = 0; i < 5; i++) {
		ASSERT_EQ(0, memreg_register(c->fd, self->buf + 2 * i * PAGE, PAGE, RW, &r));
	}
	for (i = 0; i < 3; i++) {
		ASSERT_EQ(0, munmap(self->buf + 2 * i * PAGE, PAGE));
	}
	EXPECT_EQ(3, efd_count(c->efd));
	EXPECT_EQ(0, efd_count(c->efd));
	/* Evictions too: one per registration. */
	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 10 * PAGE, PAGE, RO, &r));
	ASSERT_EQ(0, memreg_deregister(c->fd, r.lkey));
	ASSERT_EQ(0, memreg_register(c->fd, self->buf + 12 * PAGE, PAGE, RO, &r));
	ASSERT_EQ(0, memreg_deregister(c->fd, r.lkey));
	ASSERT_EQ(0, memreg_flush(c->fd, NULL));
	EXPECT_EQ(2, efd_count(c->efd));
	EXPECT_EQ(5, ring_tail(&c->ring));
}

/* ---- A full ring ---- */

/* Registers `n` one-page ranges, every other page of `buf`. */
static void register_pages(struct __test_metadata *_metadata, int fd, char *buf, int n,
			   struct memreg_register *r)
{
	int i;

	for (i = 0; i < n; i++) {
		ASSERT_EQ(0, memreg_register(fd, buf + 2 * i * PAGE, PAGE, RW, &r[i]));
	}
}

TEST(overflow_drops_new_events_and_keeps_old)
{
	struct memreg_register r[5];
	struct ctx c;
	char *buf = map_buf(16 * PAGE, 'o');
	int i;

	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, ctx_open(&c, 2));
	register_pages(_metadata, c.fd, buf, 5, r);
	for (i = 0; i < 5; i++) {
		ASSERT_EQ(0, munmap(buf + 2 * i * PAGE, PAGE));
	}

	EXPECT_EQ(2, ring_tail(&c.ring));
	EXPECT_EQ(MEMREG_EVENTS_OVERFLOW, ring_flags(&c.ring));
	EXPECT_EQ(3, ring_overflows(&c.ring));
	EXPECT_EQ(0, ring_head(&c.ring));
	/* The first two, not overwritten. */
	expect_event(_metadata, &c.ring.ev[0], r[0].lkey, buf, PAGE, MEMREG_EVENT_ENDED,
		     MEMREG_INVAL_UNMAP);
	expect_event(_metadata, &c.ring.ev[1], r[1].lkey, buf + 2 * PAGE, PAGE,
		     MEMREG_EVENT_ENDED, MEMREG_INVAL_UNMAP);
	/* Every event is signalled, the dropped ones too; words end regardless. */
	EXPECT_EQ(5, efd_count(c.efd));
	for (i = 0; i < 5; i++) {
		EXPECT_EQ(ENDED(r[i].generation), word(c.words, r[i].slot));
	}
	/* Read everything: the overflow still asks for attention. */
	ring_set_head(&c.ring, 2);
	EXPECT_EQ(POLLIN, poll_now(c.fd) & POLLIN);
	ctx_close(&c);
	munmap(buf, 16 * PAGE);
}

/* A head that makes no sense reads as a full ring. */
TEST(garbage_head_reads_as_full)
{
	const __u32 heads[] = { 0xdeadbeef, 1, 0x80000000u };
	struct memreg_register r[4];
	struct ctx c;
	__u32 count = 0;
	char *buf = map_buf(8 * PAGE, 'g');
	size_t i;

	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, ctx_open(&c, 4));
	register_pages(_metadata, c.fd, buf, 4, r);
	for (i = 0; i < 3; i++) {
		ring_set_head(&c.ring, heads[i]);
		EXPECT_EQ(POLLIN, poll_now(c.fd) & POLLIN);
		ASSERT_EQ(0, munmap(buf + 2 * i * PAGE, PAGE));
		EXPECT_EQ(0, ring_tail(&c.ring)) TH_LOG("head %#x", heads[i]);
		EXPECT_EQ(MEMREG_EVENTS_OVERFLOW, ring_flags(&c.ring));
		EXPECT_EQ(i + 1, ring_overflows(&c.ring));
		EXPECT_EQ(ENDED(r[i].generation), word(c.words, r[i].slot));
	}
	EXPECT_EQ(3, efd_count(c.efd));

	/* RESYNC puts the head right; events flow again. */
	ASSERT_EQ(0, memreg_events_resync(c.fd, NULL, 0, &count));
	EXPECT_EQ(1, count);
	EXPECT_EQ(0, ring_head(&c.ring));
	EXPECT_EQ(0, ring_flags(&c.ring));
	EXPECT_EQ(3, ring_overflows(&c.ring));
	EXPECT_EQ(0, poll_now(c.fd));
	ASSERT_EQ(0, munmap(buf + 6 * PAGE, PAGE));
	ASSERT_EQ(1, ring_tail(&c.ring));
	expect_event(_metadata, ring_at(&c.ring, 0), r[3].lkey, buf + 6 * PAGE, PAGE,
		     MEMREG_EVENT_ENDED, MEMREG_INVAL_UNMAP);
	ctx_close(&c);
	munmap(buf, 8 * PAGE);
}

/* ---- RESYNC ---- */

static const struct memreg_resync_entry *find_entry(const struct memreg_resync_entry *list,
						    __u32 n, __u64 key)
{
	__u32 i;

	for (i = 0; i < n; i++)
		if (list[i].key == key)
			return &list[i];
	return NULL;
}

static void expect_entry(struct __test_metadata *_metadata, const struct memreg_resync_entry *list,
			 __u32 n, const struct memreg_register *r, const void *addr, __u64 length,
			 __u32 state)
{
	const struct memreg_resync_entry *e = find_entry(list, n, r->lkey);

	ASSERT_NE(NULL, e) TH_LOG("key %#llx not listed", (unsigned long long)r->lkey);
	EXPECT_EQ((__u64)(unsigned long)addr, e->addr);
	EXPECT_EQ(length, e->length);
	EXPECT_EQ(state, e->state);
	EXPECT_EQ(r->slot, e->slot);
}

TEST(resync_clears_overflow_and_lists_live_registrations)
{
	struct memreg_resync_entry list[16], sentinel;
	struct memreg_register a, b, cc, d[3], hit;
	struct ctx c;
	char *buf = map_buf(32 * PAGE, 'r');
	__u32 count = 0, i;

	ASSERT_NE(NULL, buf);
	ASSERT_EQ(0, ctx_open(&c, 2));
	/* a: live, two references; b: parked; cc: live, read-only, unaligned. */
	ASSERT_EQ(0, memreg_register(c.fd, buf, 2 * PAGE, RW, &a));
	ASSERT_EQ(0, memreg_register(c.fd, buf, PAGE, RW, &hit));
	ASSERT_EQ(0, memreg_register(c.fd, buf + 4 * PAGE, 3 * PAGE, RW, &b));
	ASSERT_EQ(0, memreg_deregister(c.fd, b.lkey));
	ASSERT_EQ(0, memreg_register(c.fd, buf + 8 * PAGE + 123, PAGE, RO, &cc));
	/* Three ended: two events and one overflow. */
	register_pages(_metadata, c.fd, buf + 16 * PAGE, 3, d);
	for (i = 0; i < 3; i++) {
		ASSERT_EQ(0, munmap(buf + (16 + 2 * i) * PAGE, PAGE));
	}
	ASSERT_EQ(2, ring_tail(&c.ring));
	ASSERT_EQ(MEMREG_EVENTS_OVERFLOW, ring_flags(&c.ring));
	ASSERT_EQ(1, ring_overflows(&c.ring));

	memset(list, 0xa5, sizeof(list));
	memset(&sentinel, 0xa5, sizeof(sentinel));
	ASSERT_EQ(0, memreg_events_resync(c.fd, list, 16, &count));
	ASSERT_EQ(3, count);
	expect_entry(_metadata, list, count, &a, buf, 2 * PAGE, MEMREG_STATE_VALID);
	expect_entry(_metadata, list, count, &b, buf + 4 * PAGE, 3 * PAGE,
		     MEMREG_STATE_VALID | MEMREG_STATE_PARKED);
	expect_entry(_metadata, list, count, &cc, buf + 8 * PAGE + 123, PAGE, MEMREG_STATE_VALID);
	for (i = 0; i < 3; i++) {
		EXPECT_EQ(NULL, find_entry(list, count, d[i].lkey));
	}
	for (i = count; i < 16; i++) {
		EXPECT_EQ(0, memcmp(&list[i], &sentinel, sizeof(sentinel))) TH_LOG("entry %u", i);
	}

	/* Unread events gone, flag cleared, the overflow count kept. */
	EXPECT_EQ(2, ring_tail(&c.ring));
	EXPECT_EQ(2, ring_head(&c.ring));
	EXPECT_EQ(0, ring_flags(&c.ring));
	EXPECT_EQ(1, ring_overflows(&c.ring));
	EXPECT_EQ(0, poll_now(c.fd));
	/* Nothing it did changed the registrations. */
	expect_state(_metadata, c.fd, b.lkey, MEMREG_STATE_VALID | MEMREG_STATE_PARKED);
	EXPECT_EQ(a.generation, word(c.words, a.slot));

	/* What happens next is in the ring. */
	EXPECT_EQ(3, efd_count(c.efd));
	ASSERT_EQ(0, munmap(buf + 8 * PAGE, 2 * PAGE));
	ASSERT_EQ(3, ring_tail(&c.ring));
	expect_event(_metadata, ring_at(&c.ring, 2), cc.lkey, buf + 8 * PAGE + 123, PAGE,
		     MEMREG_EVENT_ENDED, MEMREG_INVAL_UNMAP);
	EXPECT_EQ(0, ring_flags(&c.ring));
	EXPECT_EQ(POLLIN, poll_now(c.fd) & POLLIN);
	EXPECT_EQ(1, efd_count(c.efd));
	ASSERT_EQ(0, memreg_events_resync(c.fd, list, 16, &count));
	ASSERT_EQ(2, count);
	EXPECT_EQ(3, ring_head(&c.ring));
	EXPECT_EQ(1, ring_overflows(&c.ring));
	ctx_close(&c);
	munmap(buf, 32 * PAGE);
}

TEST(resync_count_beyond_capacity)
{
	struct memreg_resync_entry list[8], sentinel;
	struct memreg_events_resync req;
	struct memreg_register r[5];
	char *buf = map_buf(16 * PAGE, 's');
	__u32 count = 0, i, j;
	int fd = memreg_open();

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	/* No event ring, and no state words: RESYNC works all the same. */
	register_pages(_metadata, fd, buf, 5, r);

	memset(list, 0xa5, sizeof(list));
	memset(&sentinel, 0xa5, sizeof(sentinel));
	ASSERT_EQ(0, memreg_events_resync(fd, list, 2, &count));
	EXPECT_EQ(5, count);
	for (i = 0; i < 2; i++) {
		for (j = 0; j < 5 && list[i].key != r[j].lkey; j++)
			;
		ASSERT_LT(j, 5) TH_LOG("entry %u: unknown key", i);
		EXPECT_EQ((__u64)(unsigned long)(buf + 2 * j * PAGE), list[i].addr);
		EXPECT_EQ(PAGE, list[i].length);
		EXPECT_EQ(MEMREG_STATE_VALID, list[i].state);
		EXPECT_EQ(MEMREG_NO_SLOT, list[i].slot);
	}
	EXPECT_NE(list[0].key, list[1].key);
	for (i = 2; i < 8; i++) {
		EXPECT_EQ(0, memcmp(&list[i], &sentinel, sizeof(sentinel))) TH_LOG("entry %u", i);
	}

	/* Capacity 0: just the count, the array untouched (even NULL). */
	ASSERT_EQ(0, memreg_events_resync(fd, NULL, 0, &count));
	EXPECT_EQ(5, count);
	/* Large enough: all of them, once each. */
	memset(list, 0xa5, sizeof(list));
	ASSERT_EQ(0, memreg_events_resync(fd, list, 8, &count));
	ASSERT_EQ(5, count);
	for (j = 0; j < 5; j++) {
		EXPECT_NE(NULL, find_entry(list, count, r[j].lkey));
	}
	for (i = 0; i < count; i++) {
		for (j = i + 1; j < count; j++)
			EXPECT_NE(list[i].key, list[j].key);
	}
	/* The largest capacity allowed; only `count` entries are written. */
	ASSERT_EQ(0, memreg_events_resync(fd, list, 1 << 20, &count));
	EXPECT_EQ(5, count);

	/* Bad requests. */
	req = (struct memreg_events_resync){ .entries = (__u64)(unsigned long)list,
					     .capacity = (1 << 20) + 1 };
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_EVENTS_RESYNC, &req));
	EXPECT_EQ(EINVAL, errno);
	req = (struct memreg_events_resync){ .entries = (__u64)(unsigned long)list,
					     .capacity = 8, .reserved = 1 };
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_EVENTS_RESYNC, &req));
	EXPECT_EQ(EINVAL, errno);
	req = (struct memreg_events_resync){ .entries = 8, .capacity = 8 };
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_EVENTS_RESYNC, &req));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_EVENTS_RESYNC, (void *)8));
	EXPECT_EQ(EFAULT, errno);
	close(fd);
	munmap(buf, 16 * PAGE);
}

/* ---- Counters: fdinfo and debugfs ---- */

struct kv {
	char name[64];
	unsigned long long value;
};

/*
 * Reads the "memreg-<name>:\t<value>" lines of an fdinfo file (fdinfo) or
 * the "<name> <value>" lines of debugfs; returns how many, or -1 when a line
 * of the first kind is malformed or the file cannot be read.
 */
static int read_kv(const char *path, bool fdinfo, struct kv *out, int max)
{
	char line[256], *sep, *end;
	int n = 0;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f) && n < max) {
		char *name = line;

		if (fdinfo) {
			if (strncmp(line, "memreg-", 7))
				continue;
			name += 7;
			sep = strchr(name, ':');
			if (!sep || sep[1] != '\t')
				goto bad;
			*sep = 0;
			sep += 2;
		} else {
			sep = strchr(name, ' ');
			if (!sep)
				goto bad;
			*sep++ = 0;
		}
		if (strlen(name) >= sizeof(out[n].name))
			goto bad;
		errno = 0;
		out[n].value = strtoull(sep, &end, 10);
		if (errno || end == sep || *end != '\n')
			goto bad;
		strcpy(out[n].name, name);
		n++;
	}
	fclose(f);
	return n;
bad:
	fclose(f);
	return -1;
}

/* The value of `name`; exactly one line must have it. */
static unsigned long long kv_get(struct __test_metadata *_metadata, const struct kv *kv, int n,
				 const char *name)
{
	unsigned long long v = ~0ULL;
	int i, found = 0;

	for (i = 0; i < n; i++)
		if (!strcmp(kv[i].name, name)) {
			v = kv[i].value;
			found++;
		}
	EXPECT_EQ(1, found) TH_LOG("%s", name);
	return v;
}

#define STAT(f) { #f, offsetof(struct memreg_stats, f) }
#define EVICTED(name, reason) \
	{ "evicted_" name, offsetof(struct memreg_stats, evictions[MEMREG_EVICT_##reason]) }
#define INVALIDATED(name, cause) \
	{ "invalidated_" name, offsetof(struct memreg_stats, invalidations[MEMREG_INVAL_##cause]) }
static const struct {
	const char *name;
	size_t offset;
} stat_fields[] = {
	STAT(registrations), STAT(cache_hits), STAT(cache_misses), STAT(pages_pinned),
	STAT(pages_pinned_peak), STAT(deregistrations), STAT(parked), STAT(parked_pages),
	STAT(parks), STAT(revives), STAT(suspensions), STAT(resumptions),
	STAT(revalidation_failures), STAT(watches), STAT(watch_pages),
	EVICTED("idle", IDLE), EVICTED("pin_limit", PIN_LIMIT),
	EVICTED("park_limit", PARK_LIMIT), EVICTED("shrinker", SHRINKER), EVICTED("flush", FLUSH),
	INVALIDATED("unmap", UNMAP), INVALIDATED("clear", CLEAR),
	INVALIDATED("protection_vma", PROTECTION_VMA),
	INVALIDATED("protection_page", PROTECTION_PAGE),
	INVALIDATED("soft_dirty", SOFT_DIRTY), INVALIDATED("release", RELEASE),
	INVALIDATED("migrate", MIGRATE), INVALIDATED("exclusive", EXCLUSIVE),
	INVALIDATED("other", OTHER),
};

#define NFIELDS	(sizeof(stat_fields) / sizeof(stat_fields[0]))

/* fdinfo of `fd` has every field, once, equal to STATS and GET_CACHE. */
static void expect_fdinfo(struct __test_metadata *_metadata, int fd)
{
	struct memreg_cache_config cfg;
	struct memreg_stats s;
	struct kv kv[64];
	char path[64];
	size_t i;
	int n;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	ASSERT_EQ(0, memreg_stats(fd, &s));
	ASSERT_EQ(0, memreg_get_cache(fd, &cfg));
	n = read_kv(path, true, kv, 64);
	ASSERT_EQ(5 + NFIELDS, n);
	/* No peer attached, no pool (which would add a line per class). */
	EXPECT_EQ(0, kv_get(_metadata, kv, n, "peers"));
	EXPECT_EQ(cfg.parking, kv_get(_metadata, kv, n, "park"));
	EXPECT_EQ(cfg.max_parked, kv_get(_metadata, kv, n, "park_max"));
	EXPECT_EQ(cfg.max_parked_pages, kv_get(_metadata, kv, n, "park_max_pages"));
	EXPECT_EQ(cfg.idle_ms, kv_get(_metadata, kv, n, "park_idle_ms"));
	for (i = 0; i < NFIELDS; i++) {
		__u64 want = *(const __u64 *)((const char *)&s + stat_fields[i].offset);

		EXPECT_EQ(want, kv_get(_metadata, kv, n, stat_fields[i].name))
			TH_LOG("%s", stat_fields[i].name);
	}
}

TEST_F(ev, fdinfo_matches_stats)
{
	struct ctx *c = &self->c;
	struct memreg_cache_config cfg;
	struct memreg_register a, b, r, e, f;
	struct memreg_stats s;
	char *buf = self->buf, ch;
	int fd2;

	/* A fresh context: zeros and the module's settings. */
	fd2 = memreg_open();
	ASSERT_GE(fd2, 0);
	expect_fdinfo(_metadata, fd2);
	close(fd2);

	/* Make every kind of counter move at least once, most differently. */
	ASSERT_EQ(0, memreg_register(c->fd, buf, 2 * PAGE, RW, &a));
	ASSERT_EQ(0, memreg_register(c->fd, buf, PAGE, RW, &r));		/* hit */
	ASSERT_EQ(0, memreg_deregister(c->fd, a.lkey));
	ASSERT_EQ(0, memreg_register(c->fd, buf + 4 * PAGE, 3 * PAGE, RW, &b));
	ASSERT_EQ(0, memreg_deregister(c->fd, b.lkey));			/* park */
	ASSERT_EQ(0, memreg_register(c->fd, buf + 4 * PAGE, PAGE, RW, &r));	/* revive */
	ASSERT_EQ(0, memreg_deregister(c->fd, r.lkey));			/* park (new key) */
	ASSERT_EQ(0, memreg_register(c->fd, buf + 8 * PAGE, PAGE, RW, &r));
	ASSERT_EQ(0, munmap(buf + 8 * PAGE, PAGE));			/* unmap */
	ASSERT_EQ(0, memreg_register(c->fd, buf + 10 * PAGE, PAGE, RW, &r));
	ASSERT_EQ(0, mprotect(buf + 10 * PAGE, PAGE, PROT_READ));	/* protection_vma */
	ASSERT_EQ(0, memreg_register(c->fd, buf + 12 * PAGE, 2 * PAGE, RW, &r));
	ASSERT_EQ(0, madvise(buf + 12 * PAGE, PAGE, MADV_DONTNEED));	/* clear */
	EXPECT_EQ(-ENOENT, memreg_copy(c->fd, r.lkey, 0, &ch, 1, MEMREG_COPY_FROM_REGION));
	ASSERT_EQ(0, memreg_flush(c->fd, NULL));				/* flush b */
	cfg = cache_config(1, 1, 262144, 0);
	ASSERT_EQ(0, memreg_set_cache(c->fd, &cfg));
	ASSERT_EQ(0, memreg_register(c->fd, buf + 16 * PAGE, PAGE, RW, &e));
	ASSERT_EQ(0, memreg_register(c->fd, buf + 18 * PAGE, 2 * PAGE, RW, &f));
	ASSERT_EQ(0, memreg_deregister(c->fd, e.lkey));
	ASSERT_EQ(0, memreg_deregister(c->fd, f.lkey));			/* park_limit: e */
	cfg = cache_config(0, 77, 999, 4321);
	ASSERT_EQ(0, memreg_set_cache(c->fd, &cfg));			/* flush f */
	ASSERT_EQ(0, memreg_register(c->fd, buf + 24 * PAGE, PAGE, RW, &r));
	ASSERT_EQ(0, memreg_deregister(c->fd, r.lkey));			/* deregistration */

	ASSERT_EQ(0, memreg_stats(c->fd, &s));
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(2, s.pages_pinned);
	EXPECT_EQ(1, s.cache_hits);
	EXPECT_EQ(1, s.revives);
	EXPECT_EQ(4, s.parks);
	EXPECT_EQ(1, s.deregistrations);
	EXPECT_EQ(2, s.evictions[MEMREG_EVICT_FLUSH]);
	EXPECT_EQ(1, s.evictions[MEMREG_EVICT_PARK_LIMIT]);
	EXPECT_EQ(1, s.invalidations[MEMREG_INVAL_UNMAP]);
	EXPECT_EQ(1, s.invalidations[MEMREG_INVAL_PROTECTION_VMA]);
	EXPECT_EQ(1, s.invalidations[MEMREG_INVAL_CLEAR]);
	EXPECT_EQ(1, s.revalidation_failures);
	expect_fdinfo(_metadata, c->fd);
}

/* Mounts debugfs if it is not; whether memreg/stats can be read. */
static bool debugfs_stats(void)
{
	if (access(DEBUGFS_STATS, R_OK) == 0)
		return true;
	mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL);
	return access(DEBUGFS_STATS, R_OK) == 0;
}

static const char *const global_names[] = {
	"contexts", "registrations", "pages_pinned", "max_pinned_pages", "max_registrations",
	"park", "park_max", "park_max_pages", "park_idle_ms", "parked", "parked_pages", "parks",
	"revives", "suspensions", "resumptions", "revalidation_failures", "evicted_idle",
	"evicted_pin_limit", "evicted_park_limit", "evicted_shrinker", "evicted_flush",
	"peers", "contexts_alive", "pools", "pool_pages",
};

#define NGLOBAL	(sizeof(global_names) / sizeof(global_names[0]))

struct dstats {
	unsigned long long v[NGLOBAL];
};

/*
 * memreg/stats, every line there once, and GLOBAL_STATS read around it
 * (equal), through `fd` or, when it is -1, a short-lived file of its own.
 */
static void read_debugfs(struct __test_metadata *_metadata, int fd, struct dstats *d,
			 struct memreg_global_stats *g)
{
	struct memreg_global_stats g2;
	struct kv kv[64];
	size_t i;
	int n, tries;

	for (tries = 0; tries < 100; tries++) {
		ASSERT_EQ(0, fd < 0 ? mr_global_now(g) : memreg_global_stats(fd, g));
		n = read_kv(DEBUGFS_STATS, false, kv, 64);
		ASSERT_EQ(0, fd < 0 ? mr_global_now(&g2) : memreg_global_stats(fd, &g2));
		if (!memcmp(g, &g2, sizeof(g2)))
			break;
		/* Deferred teardown moved the counters meanwhile. */
		usleep(10000);
	}
	ASSERT_EQ(NGLOBAL, n);
	for (i = 0; i < NGLOBAL; i++)
		d->v[i] = kv_get(_metadata, kv, n, global_names[i]);
}

static unsigned long long dget(const struct dstats *d, const char *name)
{
	size_t i;

	for (i = 0; i < NGLOBAL; i++)
		if (!strcmp(global_names[i], name))
			return d->v[i];
	return ~0ULL;
}

TEST(debugfs_stats_match_global_stats)
{
	struct memreg_global_stats base, g;
	struct memreg_cache_config cfg;
	struct memreg_register a, b, r;
	struct dstats d0, d1, d2;
	char *buf = map_buf(16 * PAGE, 'd'), ch;
	int fd, fd2;

	ASSERT_NE(NULL, buf);
	if (!debugfs_stats())
		SKIP(return, "no %s", DEBUGFS_STATS);
	mr_settle(&base);
	fd = memreg_open();
	ASSERT_GE(fd, 0);
	cfg = cache_config(1, 1024, 262144, 0);
	ASSERT_EQ(0, memreg_set_cache(fd, &cfg));

	read_debugfs(_metadata, fd, &d0, &g);
	EXPECT_EQ(g.contexts, dget(&d0, "contexts"));
	EXPECT_EQ(g.regions, dget(&d0, "registrations"));
	EXPECT_EQ(g.pages_pinned, dget(&d0, "pages_pinned"));
	EXPECT_EQ(g.budget_pages, dget(&d0, "max_pinned_pages"));
	EXPECT_EQ(g.max_registrations, dget(&d0, "max_registrations"));
	EXPECT_EQ(g.peers, dget(&d0, "peers"));
	EXPECT_EQ(g.contexts_alive, dget(&d0, "contexts_alive"));
	EXPECT_EQ(base.contexts + 1, g.contexts);

	/* The module's parameters: what a new file starts with. */
	fd2 = memreg_open();
	ASSERT_GE(fd2, 0);
	ASSERT_EQ(0, memreg_get_cache(fd2, &cfg));
	EXPECT_EQ(cfg.parking, dget(&d0, "park"));
	EXPECT_EQ(cfg.max_parked, dget(&d0, "park_max"));
	EXPECT_EQ(cfg.max_parked_pages, dget(&d0, "park_max_pages"));
	EXPECT_EQ(cfg.idle_ms, dget(&d0, "park_idle_ms"));
	read_debugfs(_metadata, fd, &d1, &g);
	EXPECT_EQ(base.contexts + 2, dget(&d1, "contexts"));
	close(fd2);

	/* Registrations and pages. */
	ASSERT_EQ(0, memreg_register(fd, buf, 3 * PAGE, RW, &a));
	ASSERT_EQ(0, memreg_register(fd, buf + 4 * PAGE, 2 * PAGE, RW, &b));
	read_debugfs(_metadata, fd, &d1, &g);
	EXPECT_EQ(g.contexts, dget(&d1, "contexts"));
	EXPECT_EQ(g.regions, dget(&d1, "registrations"));
	EXPECT_EQ(g.pages_pinned, dget(&d1, "pages_pinned"));
	EXPECT_EQ(dget(&d0, "registrations") + 2, dget(&d1, "registrations"));
	EXPECT_EQ(dget(&d0, "pages_pinned") + 5, dget(&d1, "pages_pinned"));

	/* The module's totals move with this context's. */
	ASSERT_EQ(0, memreg_deregister(fd, b.lkey));
	read_debugfs(_metadata, fd, &d1, &g);
	EXPECT_EQ(dget(&d0, "parks") + 1, dget(&d1, "parks"));
	EXPECT_EQ(dget(&d0, "parked") + 1, dget(&d1, "parked"));
	EXPECT_EQ(dget(&d0, "parked_pages") + 2, dget(&d1, "parked_pages"));
	/* A revival, with new keys: the old key drops nothing. */
	ASSERT_EQ(0, memreg_register(fd, buf + 4 * PAGE, PAGE, RO, &r));
	EXPECT_EQ(MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED, r.flags);
	EXPECT_EQ(-ENOENT, memreg_deregister(fd, b.lkey));
	ASSERT_EQ(0, memreg_deregister(fd, r.lkey));
	ASSERT_EQ(0, memreg_flush(fd, NULL));
	read_debugfs(_metadata, fd, &d2, &g);
	EXPECT_EQ(dget(&d0, "revives") + 1, dget(&d2, "revives"));
	EXPECT_EQ(dget(&d0, "parks") + 2, dget(&d2, "parks"));
	EXPECT_EQ(dget(&d0, "parked"), dget(&d2, "parked"));
	EXPECT_EQ(dget(&d0, "parked_pages"), dget(&d2, "parked_pages"));
	EXPECT_EQ(dget(&d0, "evicted_flush") + 1, dget(&d2, "evicted_flush"));
	EXPECT_EQ(dget(&d0, "evicted_idle"), dget(&d2, "evicted_idle"));
	EXPECT_EQ(g.regions, dget(&d2, "registrations"));
	EXPECT_EQ(g.pages_pinned, dget(&d2, "pages_pinned"));
	EXPECT_EQ(dget(&d0, "pages_pinned") + 3, dget(&d2, "pages_pinned"));

	/* A failed revalidation. */
	ASSERT_EQ(0, madvise(buf, PAGE, MADV_DONTNEED));
	EXPECT_EQ(-ENOENT, memreg_copy(fd, a.lkey, 0, &ch, 1, MEMREG_COPY_FROM_REGION));
	read_debugfs(_metadata, fd, &d2, &g);
	EXPECT_EQ(dget(&d0, "suspensions") + 1, dget(&d2, "suspensions"));
	EXPECT_EQ(dget(&d0, "revalidation_failures") + 1, dget(&d2, "revalidation_failures"));
	EXPECT_EQ(dget(&d0, "resumptions"), dget(&d2, "resumptions"));

	close(fd);
	ASSERT_EQ(0, mr_wait_global(base.contexts, base.regions, base.pages_pinned));
	read_debugfs(_metadata, -1, &d2, &g);
	EXPECT_EQ(base.contexts, dget(&d2, "contexts"));
	EXPECT_EQ(base.regions, dget(&d2, "registrations"));
	EXPECT_EQ(base.pages_pinned, dget(&d2, "pages_pinned"));
	munmap(buf, 16 * PAGE);
}

TEST_HARNESS_MAIN
