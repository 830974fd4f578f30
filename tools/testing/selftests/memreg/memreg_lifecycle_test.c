// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: the parked list. The last DEREGISTER parks a
 * registration (on by default): it stays pinned, charged and watched, its
 * key still answers QUERY but moves no data (COPY gives ENOENT), and a
 * REGISTER it serves revives it without pinning, with new keys (the local
 * key keeps its sequence; the old one is unknown from then on). Parked
 * registrations end:
 *
 * - on an invalidation, at once (counted as an invalidation);
 * - on FLUSH, or when parking is turned off (evictions[FLUSH]);
 * - when the context made no call for idle_ms (evictions[IDLE]);
 * - least recently parked first, to make room for a REGISTER miss under
 *   RLIMIT_MEMLOCK, max_pinned_pages or max_registrations
 *   (evictions[PIN_LIMIT]);
 * - least recently parked first, past max_parked or max_parked_pages
 *   (evictions[PARK_LIMIT]);
 * - under memory pressure: the shrinker (evictions[SHRINKER]);
 * - when the file is closed or its process dies.
 *
 * GET_CACHE/SET_CACHE read and replace the context's settings, FLUSH ends
 * every parked registration. Some tests reload the module (rmmod/insmod
 * /memreg.ko) with other parameters, and with the defaults again at the
 * end; this program must run with no other memreg file open, as root.
 */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "memreg_util.h"

#include "../kselftest_harness.h"

/* The module parameters' defaults: park, park_max, park_max_pages, park_idle_ms. */
#define DEF_PARKING		1
#define DEF_MAX_PARKED		1024
#define DEF_MAX_PARKED_PAGES	262144
#define DEF_IDLE_MS		5000

#define NPAGES		64	/* the fixture's buffer */
#define LIMIT		16	/* RLIMIT_MEMLOCK and max_pinned_pages, in pages */
#define NOBODY		65534

/* Each eviction counter is 0 except evictions[reason], which is `n`. */
static void expect_evictions(struct __test_metadata *_metadata, const struct memreg_stats *s,
			     int reason, __u64 n)
{
	int i;

	for (i = 0; i < MEMREG_EVICT_NR_REASONS; i++) {
		EXPECT_EQ(i == reason ? n : 0, s->evictions[i]) TH_LOG("evictions[%d]", i);
	}
}

/* `key` names a parked registration of `pages` pages. */
static void expect_parked(struct __test_metadata *_metadata, int fd, __u64 key, __u64 pages)
{
	struct memreg_query q;

	ASSERT_EQ(0, memreg_query(fd, key, &q));
	EXPECT_EQ(MEMREG_STATE_VALID | MEMREG_STATE_PARKED, q.state);
	EXPECT_EQ(0, q.refcount);
	EXPECT_EQ(pages, q.pages);
}

/* `key` names a live registration (not parked) with `refs` references. */
static void expect_live(struct __test_metadata *_metadata, int fd, __u64 key, __u32 refs)
{
	struct memreg_query q;

	ASSERT_EQ(0, memreg_query(fd, key, &q));
	EXPECT_EQ(MEMREG_STATE_VALID, q.state);
	EXPECT_EQ(refs, q.refcount);
}

static void expect_gone(struct __test_metadata *_metadata, int fd, __u64 key)
{
	struct memreg_query q;
	char c;

	EXPECT_EQ(-ENOENT, memreg_query(fd, key, &q));
	EXPECT_EQ(-ENOENT, memreg_copy(fd, key, 0, &c, 1, MEMREG_COPY_FROM_REGION));
	EXPECT_EQ(-ENOENT, memreg_deregister(fd, key));
}

/* Registers [p, p + pages) read-write as a miss, and parks it; returns the key. */
static __u64 park(struct __test_metadata *_metadata, int fd, char *p, __u64 pages)
{
	struct memreg_register r;

	EXPECT_EQ(0, memreg_register(fd, p, pages * PAGE, RW, &r));
	EXPECT_EQ(0, r.flags);
	EXPECT_EQ(0, memreg_deregister(fd, r.lkey));
	return r.lkey;
}

static struct memreg_cache_config cache_config(__u32 parking, __u64 max_parked,
					       __u64 max_parked_pages, __u64 idle_ms)
{
	return (struct memreg_cache_config){ .parking = parking, .max_parked = max_parked,
					     .max_parked_pages = max_parked_pages,
					     .idle_ms = idle_ms };
}

FIXTURE(lc)
{
	int fd;
	char *buf;
	long vmpin;
	struct memreg_global_stats base;
};

FIXTURE_SETUP(lc)
{
	mr_settle(&self->base);
	self->fd = memreg_open();
	ASSERT_GE(self->fd, 0);
	self->buf = map_filled(NPAGES * PAGE, 'a');
	ASSERT_NE(NULL, self->buf);
	self->vmpin = vm_pin_kb();
}

FIXTURE_TEARDOWN(lc)
{
	close(self->fd);
	munmap(self->buf, NPAGES * PAGE);
}

TEST_F(lc, defaults)
{
	struct memreg_cache_config c;
	int i;

	memset(&c, 0xa5, sizeof(c));
	ASSERT_EQ(0, ioctl(self->fd, MEMREG_IOC_GET_CACHE, &c));
	EXPECT_EQ(DEF_PARKING, c.parking);
	EXPECT_EQ(0, c.reserved0);
	EXPECT_EQ(DEF_MAX_PARKED, c.max_parked);
	EXPECT_EQ(DEF_MAX_PARKED_PAGES, c.max_parked_pages);
	EXPECT_EQ(DEF_IDLE_MS, c.idle_ms);
	for (i = 0; i < 4; i++)
		EXPECT_EQ(0, c.reserved[i]);
}

TEST_F(lc, deregister_parks)
{
	struct memreg_register r, other;
	struct memreg_global_stats g;
	struct memreg_stats s, s0;
	struct memreg_flush f;
	char data[4 * 4096];
	size_t len = 4 * PAGE;

	ASSERT_LE(len, sizeof(data));
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, len, RW, &r));
	/* Two references: the first DEREGISTER parks nothing. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, len, RW, &other));
	EXPECT_EQ(0, memreg_deregister(self->fd, r.lkey));
	expect_live(_metadata, self->fd, r.lkey, 1);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(0, s.parks);
	EXPECT_EQ(0, s.parked);

	/* The last one parks it: still there, pinned, charged. */
	EXPECT_EQ(0, memreg_deregister(self->fd, r.lkey));
	expect_parked(_metadata, self->fd, r.lkey, 4);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(1, s.parked);
	EXPECT_EQ(4, s.parked_pages);
	EXPECT_EQ(1, s.parks);
	EXPECT_EQ(0, s.deregistrations);
	EXPECT_EQ(4, s.pages_pinned);
	expect_evictions(_metadata, &s, 0, 0);
	EXPECT_EQ(self->vmpin + 4 * PAGE_KB, vm_pin_kb());
	ASSERT_EQ(0, memreg_global_stats(self->fd, &g));
	EXPECT_EQ(self->base.pages_pinned + 4, g.pages_pinned);
	EXPECT_EQ(self->base.regions + 1, g.regions);

	/* Parking ended its key for data: COPY moves no byte, either way. */
	memset(data, 'p', len);
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, r.lkey, 0, data, len, MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->buf, len, 'a'));
	memset(self->buf + PAGE, 'q', PAGE);
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, r.lkey, PAGE, data, PAGE, MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, len, 'p'));
	/* Not even a zero length one, and the failed calls changed nothing. */
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, r.lkey, 0, data, 0, MEMREG_COPY_FROM_REGION));
	expect_parked(_metadata, self->fd, r.lkey, 4);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.parked);
	EXPECT_EQ(4, s.pages_pinned);

	/* No reference left to drop: EINVAL, and nothing changes. */
	ASSERT_EQ(0, memreg_stats(self->fd, &s0));
	EXPECT_EQ(-EINVAL, memreg_deregister(self->fd, r.lkey));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(0, memcmp(&s0, &s, sizeof(s)));
	expect_parked(_metadata, self->fd, r.lkey, 4);

	/* FLUSH ends it, and uncharges it before returning. */
	ASSERT_EQ(0, memreg_flush(self->fd, &f));
	EXPECT_EQ(1, f.evicted);
	EXPECT_EQ(4, f.pages);
	EXPECT_EQ(self->vmpin, vm_pin_kb());
	ASSERT_EQ(0, memreg_global_stats(self->fd, &g));
	EXPECT_EQ(self->base.pages_pinned, g.pages_pinned);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(0, s.registrations);
	EXPECT_EQ(0, s.parked);
	EXPECT_EQ(0, s.parked_pages);
	EXPECT_EQ(0, s.pages_pinned);
	EXPECT_EQ(0, s.deregistrations);
	expect_evictions(_metadata, &s, MEMREG_EVICT_FLUSH, 1);
	expect_gone(_metadata, self->fd, r.lkey);
	EXPECT_EQ(0, mr_wait_global(self->base.contexts + 1, self->base.regions,
				    self->base.pages_pinned));

	/* The range is a miss again, with new keys. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, len, RW, &other));
	EXPECT_EQ(0, other.flags);
	EXPECT_NE(r.lkey, other.lkey);
}

TEST_F(lc, register_revives)
{
	struct memreg_register a, b, c;
	struct memreg_stats s;
	char data[64];
	long vmpin;

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 8 * PAGE, RW, &a));
	vmpin = vm_pin_kb();
	EXPECT_EQ(self->vmpin + 8 * PAGE_KB, vmpin);
	ASSERT_EQ(0, memreg_deregister(self->fd, a.lkey));

	/*
	 * A range inside, unaligned, with less access: revived, not pinned
	 * again, with new keys carrying the registration's rights. The local
	 * key keeps its sequence but gets new random bits; the remote key is
	 * new.
	 */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + PAGE + 10, 2 * PAGE, RO, &b));
	EXPECT_EQ(MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED, b.flags);
	EXPECT_EQ(a.lkey >> 24, b.lkey >> 24);
	EXPECT_NE(a.lkey, b.lkey);
	EXPECT_NE(a.rkey, b.rkey);
	EXPECT_EQ(RW, b.access);
	EXPECT_EQ((unsigned long)self->buf, b.region_addr);
	EXPECT_EQ(8 * PAGE, b.region_length);
	EXPECT_EQ(vmpin, vm_pin_kb());
	expect_live(_metadata, self->fd, b.lkey, 1);
	/* The old local key is unknown now. */
	expect_gone(_metadata, self->fd, a.lkey);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.revives);
	EXPECT_EQ(0, s.cache_hits);
	EXPECT_EQ(1, s.cache_misses);
	EXPECT_EQ(1, s.parks);
	EXPECT_EQ(0, s.parked);
	EXPECT_EQ(0, s.parked_pages);
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(8, s.pages_pinned);

	/* Live again: the next REGISTER is an ordinary hit, with the same keys. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 8 * PAGE, RW, &c));
	EXPECT_EQ(MEMREG_REGISTER_CACHED, c.flags);
	EXPECT_EQ(b.lkey, c.lkey);
	EXPECT_EQ(b.rkey, c.rkey);
	expect_live(_metadata, self->fd, b.lkey, 2);
	/* Data moves through the new key to and from the same pages as before. */
	memset(data, 'r', sizeof(data));
	ASSERT_EQ(0, memreg_copy(self->fd, b.lkey, 7 * PAGE, data, sizeof(data),
			     MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->buf + 7 * PAGE, sizeof(data), 'r'));
	memset(self->buf + 3 * PAGE, 's', sizeof(data));
	ASSERT_EQ(0, memreg_copy(self->fd, b.lkey, 3 * PAGE, data, sizeof(data),
			     MEMREG_COPY_FROM_REGION));
	EXPECT_TRUE(all_bytes(data, sizeof(data), 's'));

	/* Parked again; wider access, or a range it does not cover, is a miss. */
	ASSERT_EQ(0, memreg_deregister(self->fd, b.lkey));
	ASSERT_EQ(0, memreg_deregister(self->fd, b.lkey));
	expect_parked(_metadata, self->fd, b.lkey, 8);
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 8 * PAGE,
				 RW | MEMREG_ACCESS_REMOTE_WRITE, &c));
	EXPECT_EQ(0, c.flags);
	EXPECT_NE(b.lkey >> 24, c.lkey >> 24);
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 7 * PAGE, 2 * PAGE, RW, &c));
	EXPECT_EQ(0, c.flags);
	EXPECT_NE(b.lkey >> 24, c.lkey >> 24);
	expect_parked(_metadata, self->fd, b.lkey, 8);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(2, s.parks);
	EXPECT_EQ(1, s.parked);
	EXPECT_EQ(1, s.revives);
	EXPECT_EQ(3, s.cache_misses);
}

/* An invalidation ends a parked registration when the call that made it returns. */
FIXTURE(parked_inval)
{
	int fd;
	char *buf;
};

FIXTURE_VARIANT(parked_inval)
{
	bool unmap;	/* munmap, else mprotect */
	int cause;
};

FIXTURE_VARIANT_ADD(parked_inval, munmap) { .unmap = true, .cause = MEMREG_INVAL_UNMAP };
FIXTURE_VARIANT_ADD(parked_inval, mprotect) {
	.unmap = false, .cause = MEMREG_INVAL_PROTECTION_VMA };

FIXTURE_SETUP(parked_inval)
{
	self->fd = memreg_open();
	ASSERT_GE(self->fd, 0);
	self->buf = map_filled(8 * PAGE, 'i');
	ASSERT_NE(NULL, self->buf);
}

FIXTURE_TEARDOWN(parked_inval)
{
	close(self->fd);
	munmap(self->buf, 8 * PAGE);
}

TEST_F(parked_inval, invalidation_ends_parked_registration)
{
	struct memreg_global_stats g0;
	struct memreg_register r;
	struct memreg_stats s;
	char data[64];
	long vmpin = vm_pin_kb();
	__u64 key;
	char *p;
	int i;

	/* The module's pinned pages before it. */
	ASSERT_EQ(0, memreg_global_stats(self->fd, &g0));
	key = park(_metadata, self->fd, self->buf, 8);
	expect_parked(_metadata, self->fd, key, 8);
	EXPECT_EQ(g0.pages_pinned + 8, mr_global_pinned());

	if (variant->unmap) {
		ASSERT_EQ(0, munmap(self->buf, 8 * PAGE));
	} else {
		ASSERT_EQ(0, mprotect(self->buf, 8 * PAGE, PROT_READ));
		ASSERT_EQ(0, mprotect(self->buf, 8 * PAGE, PROT_READ | PROT_WRITE));
	}
	/* Over and counted at once; uncharged once the worker has unpinned the pages. */
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(0, s.registrations);
	EXPECT_EQ(0, s.parked);
	EXPECT_EQ(0, s.parked_pages);
	EXPECT_EQ(0, s.pages_pinned);
	EXPECT_EQ(1, s.parks);
	for (i = 0; i < MEMREG_INVAL_NR_CAUSES; i++)
		EXPECT_EQ(i == variant->cause ? 1 : 0, s.invalidations[i]);
	expect_evictions(_metadata, &s, 0, 0);
	for (i = 0; i < 500 && (vm_pin_kb() != vmpin || mr_global_pinned() != g0.pages_pinned);
	     i++)
		usleep(10000);
	EXPECT_EQ(vmpin, vm_pin_kb());
	EXPECT_EQ(g0.pages_pinned, mr_global_pinned());
	expect_gone(_metadata, self->fd, key);

	/* Fresh memory there: the old key never reaches it, REGISTER pins it. */
	if (variant->unmap) {
		p = mmap(self->buf, 8 * PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		ASSERT_EQ(self->buf, p);
	}
	memset(self->buf, 'f', 8 * PAGE);
	memset(data, 'x', sizeof(data));
	EXPECT_EQ(-ENOENT, memreg_copy(self->fd, key, 0, data, sizeof(data), MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->buf, 8 * PAGE, 'f'));
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 8 * PAGE, RW, &r));
	EXPECT_EQ(0, r.flags);
	EXPECT_NE(key, r.lkey);
	ASSERT_EQ(0, memreg_copy(self->fd, r.lkey, 0, data, sizeof(data), MEMREG_COPY_TO_REGION));
	EXPECT_TRUE(all_bytes(self->buf, sizeof(data), 'x'));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(0, s.revives);
}

/* ---- GET_CACHE / SET_CACHE ---- */

TEST_F(lc, set_cache_round_trip)
{
	struct memreg_cache_config c, got;
	int fd2, i;

	c = cache_config(1, 7, 99, 12345);
	ASSERT_EQ(0, memreg_set_cache(self->fd, &c));
	memset(&got, 0xa5, sizeof(got));
	ASSERT_EQ(0, ioctl(self->fd, MEMREG_IOC_GET_CACHE, &got));
	EXPECT_EQ(0, memcmp(&c, &got, sizeof(c)));
	/* The largest idle time, and no idle eviction at all. */
	c = cache_config(0, 1, 1, MEMREG_MAX_IDLE_MS);
	ASSERT_EQ(0, memreg_set_cache(self->fd, &c));
	ASSERT_EQ(0, memreg_get_cache(self->fd, &got));
	EXPECT_EQ(0, memcmp(&c, &got, sizeof(c)));
	c = cache_config(1, 5, 5, 0);
	ASSERT_EQ(0, memreg_set_cache(self->fd, &c));
	ASSERT_EQ(0, memreg_get_cache(self->fd, &got));
	EXPECT_EQ(0, memcmp(&c, &got, sizeof(c)));

	/* Settings are per context: a new file has the defaults. */
	fd2 = memreg_open();
	ASSERT_GE(fd2, 0);
	ASSERT_EQ(0, memreg_get_cache(fd2, &got));
	EXPECT_EQ(DEF_PARKING, got.parking);
	EXPECT_EQ(DEF_MAX_PARKED, got.max_parked);
	EXPECT_EQ(DEF_MAX_PARKED_PAGES, got.max_parked_pages);
	EXPECT_EQ(DEF_IDLE_MS, got.idle_ms);
	EXPECT_EQ(0, got.reserved0);
	for (i = 0; i < 4; i++)
		EXPECT_EQ(0, got.reserved[i]);
	close(fd2);
}

TEST_F(lc, set_cache_bad_input_changes_nothing)
{
	struct memreg_cache_config orig, bad, got;
	struct memreg_stats s0, s;
	__u64 key1, key2;
	long vmpin;
	int i;

	ASSERT_EQ(0, memreg_get_cache(self->fd, &orig));
	key1 = park(_metadata, self->fd, self->buf, 2);
	key2 = park(_metadata, self->fd, self->buf + 4 * PAGE, 3);
	ASSERT_EQ(0, memreg_stats(self->fd, &s0));
	ASSERT_EQ(2, s0.parked);
	vmpin = vm_pin_kb();

	for (i = 0; i < 11; i++) {
		/*
		 * Each also asks for what would end the parked registrations
		 * (parking off, or limits below them), so a half-applied SET
		 * shows.
		 */
		bad = cache_config(0, 1, 1, 10);
		switch (i) {
		case 0:
			bad.parking = 2;
			break;
		case 1:
			bad.parking = 0xffffffff;
			break;
		case 2:
			bad.parking = 1;
			bad.reserved0 = 1;
			break;
		case 3:
			bad.reserved0 = 0x80000000;
			break;
		case 4: case 5: case 6: case 7:
			bad.reserved[i - 4] = 1;
			break;
		case 8:
			bad.idle_ms = MEMREG_MAX_IDLE_MS + 1;
			break;
		case 9:
			bad.idle_ms = ~0ULL;
			break;
		case 10:
			bad.parking = 1;
			bad.idle_ms = 1ULL << 63;
			break;
		}
		EXPECT_EQ(-EINVAL, memreg_set_cache(self->fd, &bad)) TH_LOG("case %d", i);
		ASSERT_EQ(0, memreg_get_cache(self->fd, &got));
		EXPECT_EQ(0, memcmp(&orig, &got, sizeof(got))) TH_LOG("case %d", i);
	}
	/* Unreadable or unwritable argument. */
	EXPECT_EQ(-1, ioctl(self->fd, MEMREG_IOC_SET_CACHE, (void *)8));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(-1, ioctl(self->fd, MEMREG_IOC_GET_CACHE, (void *)8));
	EXPECT_EQ(EFAULT, errno);
	ASSERT_EQ(0, memreg_get_cache(self->fd, &got));
	EXPECT_EQ(0, memcmp(&orig, &got, sizeof(got)));

	/* The parked registrations are untouched. */
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(0, memcmp(&s0, &s, sizeof(s)));
	expect_parked(_metadata, self->fd, key1, 2);
	expect_parked(_metadata, self->fd, key2, 3);
	EXPECT_EQ(vmpin, vm_pin_kb());
}

TEST_F(lc, parking_off_ends_parked_and_deregister_ends)
{
	struct memreg_register live, r;
	struct memreg_stats s;
	__u64 k1, k2;

	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 32 * PAGE, PAGE, RW, &live));
	k1 = park(_metadata, self->fd, self->buf, 2);
	k2 = park(_metadata, self->fd, self->buf + 4 * PAGE, 3);
	EXPECT_EQ(self->vmpin + 6 * PAGE_KB, vm_pin_kb());

	/* Turning parking off ends what is parked, now. */
	ASSERT_EQ(0, mr_set_parking(self->fd, 0));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(0, s.parked);
	EXPECT_EQ(0, s.parked_pages);
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(1, s.pages_pinned);
	EXPECT_EQ(0, s.deregistrations);
	expect_evictions(_metadata, &s, MEMREG_EVICT_FLUSH, 2);
	EXPECT_EQ(self->vmpin + PAGE_KB, vm_pin_kb());
	expect_gone(_metadata, self->fd, k1);
	expect_gone(_metadata, self->fd, k2);
	/* A live registration is not touched. */
	expect_live(_metadata, self->fd, live.lkey, 1);

	/* Without parking, the last DEREGISTER ends a registration. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 4 * PAGE, RW, &r));
	EXPECT_EQ(0, memreg_deregister(self->fd, r.lkey));
	expect_gone(_metadata, self->fd, r.lkey);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.deregistrations);
	EXPECT_EQ(2, s.parks);
	EXPECT_EQ(0, s.parked);
	EXPECT_EQ(self->vmpin + PAGE_KB, vm_pin_kb());
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 4 * PAGE, RW, &r));
	EXPECT_EQ(0, r.flags);

	/* On again: the last DEREGISTER parks. */
	ASSERT_EQ(0, mr_set_parking(self->fd, 1));
	EXPECT_EQ(0, memreg_deregister(self->fd, r.lkey));
	expect_parked(_metadata, self->fd, r.lkey, 4);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(3, s.parks);
	EXPECT_EQ(1, s.deregistrations);
}

/* ---- FLUSH ---- */

TEST_F(lc, flush_ends_every_parked_registration)
{
	struct memreg_register live;
	struct memreg_flush f;
	struct memreg_stats s;
	__u64 k[3];
	int i;

	/* Bad arguments first, with nothing parked to lose. */
	EXPECT_EQ(-1, ioctl(self->fd, MEMREG_IOC_FLUSH, (void *)8));
	EXPECT_EQ(EFAULT, errno);

	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 32 * PAGE, 2 * PAGE, RW, &live));
	k[0] = park(_metadata, self->fd, self->buf, 1);
	k[1] = park(_metadata, self->fd, self->buf + 2 * PAGE, 2);
	k[2] = park(_metadata, self->fd, self->buf + 8 * PAGE, 5);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(3, s.parked);
	EXPECT_EQ(8, s.parked_pages);
	EXPECT_EQ(10, s.pages_pinned);
	EXPECT_EQ(self->vmpin + 10 * PAGE_KB, vm_pin_kb());

	/* Reserved words must be zero: refused, nothing ended. */
	for (i = 0; i < 2; i++) {
		memset(&f, 0, sizeof(f));
		f.reserved[i] = 1;
		EXPECT_EQ(-1, ioctl(self->fd, MEMREG_IOC_FLUSH, &f));
		EXPECT_EQ(EINVAL, errno);
	}
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(3, s.parked);
	expect_evictions(_metadata, &s, 0, 0);

	/* Output fields are ignored on input. */
	memset(&f, 0, sizeof(f));
	f.evicted = 99;
	f.pages = 77;
	ASSERT_EQ(0, ioctl(self->fd, MEMREG_IOC_FLUSH, &f));
	EXPECT_EQ(3, f.evicted);
	EXPECT_EQ(8, f.pages);
	EXPECT_EQ(0, f.reserved[0]);
	EXPECT_EQ(0, f.reserved[1]);
	/* Uncharged when FLUSH returns. */
	EXPECT_EQ(self->vmpin + 2 * PAGE_KB, vm_pin_kb());
	EXPECT_EQ(self->base.pages_pinned + 2, mr_global_pinned());
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(0, s.parked);
	EXPECT_EQ(0, s.parked_pages);
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(2, s.pages_pinned);
	EXPECT_EQ(0, s.deregistrations);
	expect_evictions(_metadata, &s, MEMREG_EVICT_FLUSH, 3);
	for (i = 0; i < 3; i++)
		expect_gone(_metadata, self->fd, k[i]);
	expect_live(_metadata, self->fd, live.lkey, 1);
	/* The pages are released, by deferred work. */
	EXPECT_EQ(0, mr_wait_global(self->base.contexts + 1, self->base.regions + 1,
				    self->base.pages_pinned + 2));

	/* Nothing left: FLUSH ends nothing. */
	ASSERT_EQ(0, memreg_flush(self->fd, &f));
	EXPECT_EQ(0, f.evicted);
	EXPECT_EQ(0, f.pages);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	expect_evictions(_metadata, &s, MEMREG_EVICT_FLUSH, 3);
}

/* FLUSH ends the caller's parked registrations, not another file's. */
TEST_F(lc, flush_is_per_context)
{
	struct memreg_stats s;
	struct memreg_flush f;
	__u64 k1, k2;
	int fd2 = memreg_open();

	ASSERT_GE(fd2, 0);
	k1 = park(_metadata, self->fd, self->buf, 2);
	k2 = park(_metadata, fd2, self->buf, 3);
	ASSERT_EQ(0, memreg_flush(fd2, &f));
	EXPECT_EQ(1, f.evicted);
	EXPECT_EQ(3, f.pages);
	expect_gone(_metadata, fd2, k2);
	expect_parked(_metadata, self->fd, k1, 2);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	expect_evictions(_metadata, &s, 0, 0);
	close(fd2);
}

/* ---- Idle eviction ---- */

TEST_F(lc, idle_context_ends_parked_registrations)
{
	struct memreg_cache_config c = cache_config(1, DEF_MAX_PARKED, DEF_MAX_PARKED_PAGES, 200);
	struct memreg_register live, r;
	struct memreg_stats s;
	__u64 k1, k2;

	ASSERT_EQ(0, memreg_set_cache(self->fd, &c));
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 32 * PAGE, PAGE, RW, &live));
	k1 = park(_metadata, self->fd, self->buf, 2);
	k2 = park(_metadata, self->fd, self->buf + 4 * PAGE, 3);

	/* No call for a second: five times idle_ms. */
	usleep(1000 * 1000);
	ASSERT_EQ(0, mr_wait_parked(self->fd, 0));
	ASSERT_EQ(0, mr_wait_pinned(self->fd, 1));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	expect_evictions(_metadata, &s, MEMREG_EVICT_IDLE, 2);
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(0, s.parked_pages);
	EXPECT_EQ(0, s.deregistrations);
	EXPECT_EQ(0, wait_vm_pin(self->vmpin + PAGE_KB, 5000));
	expect_gone(_metadata, self->fd, k1);
	expect_gone(_metadata, self->fd, k2);
	/* Only parked registrations end. */
	expect_live(_metadata, self->fd, live.lkey, 1);
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 2 * PAGE, RW, &r));
	EXPECT_EQ(0, r.flags);
}

/* A context that keeps making calls is not idle; idle_ms 0 never evicts. */
TEST_F(lc, busy_context_keeps_parked_registrations)
{
	struct memreg_cache_config c = cache_config(1, DEF_MAX_PARKED, DEF_MAX_PARKED_PAGES, 500);
	struct memreg_stats s;
	__u64 key;
	int i;

	ASSERT_EQ(0, memreg_set_cache(self->fd, &c));
	key = park(_metadata, self->fd, self->buf, 2);
	/* 1.5 s, three times idle_ms, with a call every 50 ms. */
	for (i = 0; i < 30; i++) {
		usleep(50 * 1000);
		ASSERT_EQ(0, memreg_stats(self->fd, &s));
		ASSERT_EQ(1, s.parked) TH_LOG("after %d ms", (i + 1) * 50);
	}
	expect_evictions(_metadata, &s, 0, 0);
	expect_parked(_metadata, self->fd, key, 2);

	/* Then quiet: it goes. */
	usleep(1000 * 1000);
	ASSERT_EQ(0, mr_wait_parked(self->fd, 0));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	expect_evictions(_metadata, &s, MEMREG_EVICT_IDLE, 1);

	/* idle_ms 0: never. */
	c.idle_ms = 0;
	ASSERT_EQ(0, memreg_set_cache(self->fd, &c));
	key = park(_metadata, self->fd, self->buf, 2);
	usleep(1200 * 1000);
	expect_parked(_metadata, self->fd, key, 2);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.parked);
	expect_evictions(_metadata, &s, MEMREG_EVICT_IDLE, 1);
}

/* ---- Park limits ---- */

TEST_F(lc, max_parked_evicts_least_recently_parked)
{
	struct memreg_cache_config c = cache_config(1, 2, DEF_MAX_PARKED_PAGES, 0);
	struct memreg_register r[4], again;
	struct memreg_stats s;
	int i;

	ASSERT_EQ(0, memreg_set_cache(self->fd, &c));
	for (i = 0; i < 4; i++)
		ASSERT_EQ(0, memreg_register(self->fd, self->buf + 2 * i * PAGE, PAGE, RW, &r[i]));
	ASSERT_EQ(0, memreg_deregister(self->fd, r[0].lkey));
	ASSERT_EQ(0, memreg_deregister(self->fd, r[1].lkey));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(2, s.parked);
	expect_evictions(_metadata, &s, 0, 0);

	/* A third: the least recently parked, r0, makes room. */
	ASSERT_EQ(0, memreg_deregister(self->fd, r[2].lkey));
	expect_gone(_metadata, self->fd, r[0].lkey);
	expect_parked(_metadata, self->fd, r[1].lkey, 1);
	expect_parked(_metadata, self->fd, r[2].lkey, 1);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(2, s.parked);
	EXPECT_EQ(2, s.parked_pages);
	EXPECT_EQ(3, s.parks);
	EXPECT_EQ(0, s.deregistrations);
	EXPECT_EQ(3, s.registrations);
	expect_evictions(_metadata, &s, MEMREG_EVICT_PARK_LIMIT, 1);
	EXPECT_EQ(self->vmpin + 3 * PAGE_KB, vm_pin_kb());

	/*
	 * Revive r1 (new keys, the same sequence; the old key is unknown) and
	 * park it again: r2 is now the least recently parked.
	 */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 2 * PAGE, PAGE, RW, &again));
	EXPECT_EQ(MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED, again.flags);
	EXPECT_EQ(r[1].lkey >> 24, again.lkey >> 24);
	EXPECT_NE(r[1].lkey, again.lkey);
	expect_gone(_metadata, self->fd, r[1].lkey);
	ASSERT_EQ(0, memreg_deregister(self->fd, again.lkey));
	ASSERT_EQ(0, memreg_deregister(self->fd, r[3].lkey));
	expect_gone(_metadata, self->fd, r[2].lkey);
	expect_parked(_metadata, self->fd, again.lkey, 1);
	expect_parked(_metadata, self->fd, r[3].lkey, 1);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(2, s.parked);
	expect_evictions(_metadata, &s, MEMREG_EVICT_PARK_LIMIT, 2);
}

TEST_F(lc, max_parked_pages_evicts_and_bounds_parking)
{
	struct memreg_cache_config c = cache_config(1, DEF_MAX_PARKED, 8, 0);
	struct memreg_register big;
	struct memreg_stats s;
	__u64 a, b, k;

	ASSERT_EQ(0, memreg_set_cache(self->fd, &c));
	a = park(_metadata, self->fd, self->buf, 4);
	b = park(_metadata, self->fd, self->buf + 4 * PAGE, 3);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(7, s.parked_pages);
	expect_evictions(_metadata, &s, 0, 0);

	/* 7 + 2 > 8: the least recently parked goes. */
	k = park(_metadata, self->fd, self->buf + 8 * PAGE, 2);
	expect_gone(_metadata, self->fd, a);
	expect_parked(_metadata, self->fd, b, 3);
	expect_parked(_metadata, self->fd, k, 2);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(2, s.parked);
	EXPECT_EQ(5, s.parked_pages);
	EXPECT_EQ(5, s.pages_pinned);
	expect_evictions(_metadata, &s, MEMREG_EVICT_PARK_LIMIT, 1);
	EXPECT_EQ(self->vmpin + 5 * PAGE_KB, vm_pin_kb());

	/* Larger than max_parked_pages: never parked, and evicts nothing. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 16 * PAGE, 10 * PAGE, RW, &big));
	EXPECT_EQ(0, memreg_deregister(self->fd, big.lkey));
	expect_gone(_metadata, self->fd, big.lkey);
	expect_parked(_metadata, self->fd, b, 3);
	expect_parked(_metadata, self->fd, k, 2);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.deregistrations);
	EXPECT_EQ(3, s.parks);
	EXPECT_EQ(2, s.parked);
	EXPECT_EQ(5, s.pages_pinned);
	expect_evictions(_metadata, &s, MEMREG_EVICT_PARK_LIMIT, 1);
	EXPECT_EQ(self->vmpin + 5 * PAGE_KB, vm_pin_kb());
}

TEST_F(lc, lowering_limits_evicts_least_recently_parked)
{
	struct memreg_cache_config c;
	struct memreg_stats s;
	__u64 k[4];
	int i;

	for (i = 0; i < 4; i++)
		k[i] = park(_metadata, self->fd, self->buf + 2 * i * PAGE, 1);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(4, s.parked);

	c = cache_config(1, 2, DEF_MAX_PARKED_PAGES, DEF_IDLE_MS);
	ASSERT_EQ(0, memreg_set_cache(self->fd, &c));
	expect_gone(_metadata, self->fd, k[0]);
	expect_gone(_metadata, self->fd, k[1]);
	expect_parked(_metadata, self->fd, k[2], 1);
	expect_parked(_metadata, self->fd, k[3], 1);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(2, s.parked);
	EXPECT_EQ(2, s.pages_pinned);
	expect_evictions(_metadata, &s, MEMREG_EVICT_PARK_LIMIT, 2);
	EXPECT_EQ(self->vmpin + 2 * PAGE_KB, vm_pin_kb());

	c.max_parked_pages = 1;
	ASSERT_EQ(0, memreg_set_cache(self->fd, &c));
	expect_gone(_metadata, self->fd, k[2]);
	expect_parked(_metadata, self->fd, k[3], 1);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.parked);
	EXPECT_EQ(1, s.parked_pages);
	expect_evictions(_metadata, &s, MEMREG_EVICT_PARK_LIMIT, 3);
	EXPECT_EQ(self->vmpin + PAGE_KB, vm_pin_kb());
}

/* ---- Pin limits: parked registrations make room for a miss ---- */

#define CHILD_CHECK(cond) do {							\
	if (!(cond)) {								\
		fprintf(stderr, "%s:%d: child check failed: %s\n", __FILE__,	\
			__LINE__, #cond);					\
		return 1;							\
	}									\
} while (0)

/*
 * In a child with RLIMIT_MEMLOCK of LIMIT pages, as uid nobody (so without
 * CAP_IPC_LOCK): the limit is the user's, and so is the room: the user's
 * parked registrations in any context are ended to make it, least recently
 * parked first.
 */
static int rlimit_child(void)
{
	struct rlimit rl = { LIMIT * PAGE, LIMIT * PAGE };
	struct memreg_register r, a, b;
	struct memreg_query q;
	struct memreg_stats s;
	char *buf = map_filled(64 * PAGE, 'm');
	int fd = memreg_open(), fd2 = memreg_open();
	long vmpin;
	__u64 x;

	CHILD_CHECK(fd >= 0 && fd2 >= 0 && buf);
	CHILD_CHECK(!setrlimit(RLIMIT_MEMLOCK, &rl));
	CHILD_CHECK(!setgid(NOBODY) && !setuid(NOBODY));
	vmpin = vm_pin_kb();

	/* Another context's parked pages count, and are ended for us: the same user's. */
	CHILD_CHECK(!memreg_register(fd2, buf + 40 * PAGE, 10 * PAGE, RW, &r));
	x = r.lkey;
	CHILD_CHECK(!memreg_deregister(fd2, x));
	CHILD_CHECK(!memreg_register(fd, buf, 8 * PAGE, RW, &r));
	CHILD_CHECK(r.flags == 0);
	CHILD_CHECK(memreg_query(fd2, x, &q) == -ENOENT);
	CHILD_CHECK(!memreg_stats(fd2, &s) && s.evictions[MEMREG_EVICT_PIN_LIMIT] == 1 &&
		    s.parked == 0 && s.pages_pinned == 0);
	CHILD_CHECK(vm_pin_kb() == vmpin + 8 * (long)PAGE_KB);
	/* Ended, not parked, so that the rest starts from nothing. */
	CHILD_CHECK(!mr_set_parking(fd, 0) && !memreg_deregister(fd, r.lkey) && !mr_set_parking(fd, 1));
	CHILD_CHECK(vm_pin_kb() == vmpin);
	/* Within one context too, least recently parked first. */
	CHILD_CHECK(!memreg_register(fd2, buf + 40 * PAGE, 10 * PAGE, RW, &r));
	x = r.lkey;
	CHILD_CHECK(!memreg_deregister(fd2, x));
	CHILD_CHECK(!memreg_register(fd2, buf + 50 * PAGE, 8 * PAGE, RW, &r));
	CHILD_CHECK(r.flags == 0);
	CHILD_CHECK(memreg_query(fd2, x, &q) == -ENOENT);
	CHILD_CHECK(!memreg_stats(fd2, &s) && s.evictions[MEMREG_EVICT_PIN_LIMIT] == 2 &&
		    s.parked == 0 && s.pages_pinned == 8);
	CHILD_CHECK(vm_pin_kb() == vmpin + 8 * (long)PAGE_KB);
	CHILD_CHECK(!close(fd2));
	CHILD_CHECK(vm_pin_kb() == vmpin);

	/* A (8 pages) then B (6) parked; C (8) needs A's room, not B's. */
	CHILD_CHECK(!memreg_register(fd, buf, 8 * PAGE, RW, &a));
	CHILD_CHECK(!memreg_register(fd, buf + 8 * PAGE, 6 * PAGE, RW, &b));
	CHILD_CHECK(!memreg_deregister(fd, a.lkey) && !memreg_deregister(fd, b.lkey));
	CHILD_CHECK(vm_pin_kb() == vmpin + 14 * (long)PAGE_KB);
	CHILD_CHECK(!memreg_register(fd, buf + 16 * PAGE, 8 * PAGE, RW, &r));
	CHILD_CHECK(r.flags == 0);
	CHILD_CHECK(memreg_query(fd, a.lkey, &q) == -ENOENT);
	CHILD_CHECK(!memreg_query(fd, b.lkey, &q) && q.state == (MEMREG_STATE_VALID | MEMREG_STATE_PARKED));
	CHILD_CHECK(!memreg_stats(fd, &s) && s.evictions[MEMREG_EVICT_PIN_LIMIT] == 1 &&
		    s.parked == 1 && s.parked_pages == 6 && s.pages_pinned == 14);
	CHILD_CHECK(s.evictions[MEMREG_EVICT_PARK_LIMIT] == 0 && s.evictions[MEMREG_EVICT_FLUSH] == 0);
	CHILD_CHECK(vm_pin_kb() == vmpin + 14 * (long)PAGE_KB);
	/* Evicting everything parked is not enough: ENOMEM, C untouched. */
	CHILD_CHECK(memreg_register(fd, buf + 24 * PAGE, 10 * PAGE, RW, &a) == -ENOMEM);
	CHILD_CHECK(!memreg_query(fd, r.lkey, &q) && q.state == MEMREG_STATE_VALID && q.refcount == 1);
	CHILD_CHECK(!memreg_stats(fd, &s) && s.registrations - s.parked == 1);
	CHILD_CHECK(vm_pin_kb() == vmpin + (long)(s.pages_pinned * PAGE_KB));
	close(fd);
	CHILD_CHECK(vm_pin_kb() == vmpin);
	return 0;
}

TEST(rlimit_memlock_evicts_parked)
{
	pid_t pid = fork();

	ASSERT_GE(pid, 0);
	if (pid == 0)
		_exit(rlimit_child());
	EXPECT_EQ(0, wait_exit(pid));
}

/* The module's budget, max_pinned_pages=16. */
FIXTURE(budget)
{
	int fd, fd2;
	char *buf;
};

FIXTURE_SETUP(budget)
{
	self->fd = self->fd2 = -1;
	ASSERT_EQ(0, mr_reload_module("max_pinned_pages=16"));
	self->fd = memreg_open();
	ASSERT_GE(self->fd, 0);
	self->fd2 = memreg_open();
	ASSERT_GE(self->fd2, 0);
	self->buf = map_filled(64 * PAGE, 'b');
	ASSERT_NE(NULL, self->buf);
}

FIXTURE_TEARDOWN(budget)
{
	close(self->fd);
	close(self->fd2);
	munmap(self->buf, 64 * PAGE);
	ASSERT_EQ(0, mr_reload_module(""));
}

TEST_F(budget, budget_evicts_parked)
{
	struct memreg_global_stats g;
	struct memreg_register r, a, b;
	struct memreg_stats s;
	__u64 x;

	ASSERT_EQ(0, memreg_global_stats(self->fd, &g));
	ASSERT_EQ(LIMIT, g.budget_pages);

	/* Another context's parked pages count, and are ended for us: the budget is everyone's. */
	x = park(_metadata, self->fd2, self->buf + 40 * PAGE, 10);
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 8 * PAGE, RW, &r));
	EXPECT_EQ(0, r.flags);
	expect_gone(_metadata, self->fd2, x);
	ASSERT_EQ(0, memreg_stats(self->fd2, &s));
	EXPECT_EQ(0, s.registrations);
	expect_evictions(_metadata, &s, MEMREG_EVICT_PIN_LIMIT, 1);
	/* Ended, not parked, so that the rest starts from nothing. */
	ASSERT_EQ(0, mr_set_parking(self->fd, 0));
	ASSERT_EQ(0, memreg_deregister(self->fd, r.lkey));
	ASSERT_EQ(0, mr_set_parking(self->fd, 1));
	ASSERT_EQ(0, memreg_global_stats(self->fd, &g));
	EXPECT_EQ(0, g.pages_pinned);

	/* A (8 pages) then B (6) parked; C (8) needs A's room, not B's. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 8 * PAGE, RW, &a));
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 8 * PAGE, 6 * PAGE, RW, &b));
	ASSERT_EQ(0, memreg_deregister(self->fd, a.lkey));
	ASSERT_EQ(0, memreg_deregister(self->fd, b.lkey));
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 16 * PAGE, 8 * PAGE, RW, &r));
	EXPECT_EQ(0, r.flags);
	expect_gone(_metadata, self->fd, a.lkey);
	expect_parked(_metadata, self->fd, b.lkey, 6);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.parked);
	EXPECT_EQ(14, s.pages_pinned);
	expect_evictions(_metadata, &s, MEMREG_EVICT_PIN_LIMIT, 1);
	ASSERT_EQ(0, memreg_global_stats(self->fd, &g));
	EXPECT_EQ(14, g.pages_pinned);

	/* Evicting everything parked is not enough: ENOSPC, C untouched. */
	EXPECT_EQ(-ENOSPC, memreg_register(self->fd, self->buf + 24 * PAGE, 10 * PAGE, RW, &a));
	expect_live(_metadata, self->fd, r.lkey, 1);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.registrations - s.parked);
	ASSERT_EQ(0, memreg_global_stats(self->fd, &g));
	EXPECT_EQ(s.pages_pinned, g.pages_pinned);
}

/* max_registrations=4: parked registrations count, and make room. */
FIXTURE(cap)
{
	int fd;
	char *buf;
};

FIXTURE_SETUP(cap)
{
	self->fd = -1;
	ASSERT_EQ(0, mr_reload_module("max_registrations=4"));
	self->fd = memreg_open();
	ASSERT_GE(self->fd, 0);
	self->buf = map_filled(16 * PAGE, 'c');
	ASSERT_NE(NULL, self->buf);
}

FIXTURE_TEARDOWN(cap)
{
	close(self->fd);
	munmap(self->buf, 16 * PAGE);
	ASSERT_EQ(0, mr_reload_module(""));
}

TEST_F(cap, max_registrations_evicts_parked)
{
	struct memreg_register r[4], extra;
	struct memreg_stats s;
	int i;

	for (i = 0; i < 4; i++)
		ASSERT_EQ(0, memreg_register(self->fd, self->buf + i * PAGE, PAGE, RW, &r[i]));
	ASSERT_EQ(0, memreg_deregister(self->fd, r[0].lkey));
	ASSERT_EQ(0, memreg_deregister(self->fd, r[1].lkey));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(4, s.registrations);
	EXPECT_EQ(2, s.parked);

	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 8 * PAGE, PAGE, RW, &extra));
	EXPECT_EQ(0, extra.flags);
	expect_gone(_metadata, self->fd, r[0].lkey);
	expect_parked(_metadata, self->fd, r[1].lkey, 1);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(4, s.registrations);
	EXPECT_EQ(1, s.parked);
	expect_evictions(_metadata, &s, MEMREG_EVICT_PIN_LIMIT, 1);

	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 9 * PAGE, PAGE, RW, &extra));
	expect_gone(_metadata, self->fd, r[1].lkey);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(4, s.registrations);
	EXPECT_EQ(0, s.parked);
	expect_evictions(_metadata, &s, MEMREG_EVICT_PIN_LIMIT, 2);

	/* Nothing parked left: EDQUOT. */
	EXPECT_EQ(-EDQUOT, memreg_register(self->fd, self->buf + 10 * PAGE, PAGE, RW, &extra));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(4, s.registrations);
	expect_evictions(_metadata, &s, MEMREG_EVICT_PIN_LIMIT, 2);
	/* A revival needs no new slot; it hands out new keys (the same sequence). */
	ASSERT_EQ(0, memreg_deregister(self->fd, r[2].lkey));
	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 2 * PAGE, PAGE, RO, &extra));
	EXPECT_EQ(MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED, extra.flags);
	EXPECT_EQ(r[2].lkey >> 24, extra.lkey >> 24);
	EXPECT_NE(r[2].lkey, extra.lkey);
	expect_gone(_metadata, self->fd, r[2].lkey);
	expect_live(_metadata, self->fd, extra.lkey, 1);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(4, s.registrations);
	EXPECT_EQ(1, s.revives);
}

/* Module parameters give a new file its settings. */
FIXTURE(params)
{
	int fd;
	char *buf;
};

FIXTURE_SETUP(params)
{
	self->fd = -1;
	ASSERT_EQ(0, mr_reload_module("park=0 park_max=7 park_max_pages=99 park_idle_ms=1234"));
	self->fd = memreg_open();
	ASSERT_GE(self->fd, 0);
	self->buf = map_filled(8 * PAGE, 'p');
	ASSERT_NE(NULL, self->buf);
}

FIXTURE_TEARDOWN(params)
{
	close(self->fd);
	munmap(self->buf, 8 * PAGE);
	ASSERT_EQ(0, mr_reload_module(""));
}

TEST_F(params, module_parameters_are_the_defaults)
{
	struct memreg_cache_config c;
	struct memreg_register r;
	struct memreg_stats s;

	ASSERT_EQ(0, memreg_get_cache(self->fd, &c));
	EXPECT_EQ(0, c.parking);
	EXPECT_EQ(7, c.max_parked);
	EXPECT_EQ(99, c.max_parked_pages);
	EXPECT_EQ(1234, c.idle_ms);
	/* park=0: the last DEREGISTER ends a registration. */
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 2 * PAGE, RW, &r));
	EXPECT_EQ(0, memreg_deregister(self->fd, r.lkey));
	expect_gone(_metadata, self->fd, r.lkey);
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.deregistrations);
	EXPECT_EQ(0, s.parks);
	/* The context can still turn it on. */
	ASSERT_EQ(0, mr_set_parking(self->fd, 1));
	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 2 * PAGE, RW, &r));
	EXPECT_EQ(0, memreg_deregister(self->fd, r.lkey));
	expect_parked(_metadata, self->fd, r.lkey, 2);
}

/* ---- The shrinker ---- */

TEST_F(lc, shrinker_ends_parked_registrations)
{
	struct memreg_register live;
	struct memreg_stats s;
	__u64 k[3];
	int i, err;

	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 32 * PAGE, PAGE, RW, &live));
	k[0] = park(_metadata, self->fd, self->buf, 2);
	k[1] = park(_metadata, self->fd, self->buf + 4 * PAGE, 3);
	k[2] = park(_metadata, self->fd, self->buf + 8 * PAGE, 4);
	EXPECT_EQ(self->vmpin + 10 * PAGE_KB, vm_pin_kb());

	/* Runs every shrinker. */
	err = drop_caches();
	if (err)
		SKIP(return, "cannot write /proc/sys/vm/drop_caches: %s", strerror(-err));
	/* Ending and unpinning may be deferred to a worker. */
	ASSERT_EQ(0, mr_wait_parked(self->fd, 0));
	ASSERT_EQ(0, mr_wait_pinned(self->fd, 1));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	expect_evictions(_metadata, &s, MEMREG_EVICT_SHRINKER, 3);
	EXPECT_EQ(1, s.registrations);
	EXPECT_EQ(0, s.parked_pages);
	for (i = 0; i < 3; i++)
		expect_gone(_metadata, self->fd, k[i]);
	/* A live registration is not the shrinker's. */
	expect_live(_metadata, self->fd, live.lkey, 1);
	EXPECT_EQ(0, wait_vm_pin(self->vmpin + PAGE_KB, 5000));
	EXPECT_EQ(0, mr_wait_global(self->base.contexts + 1, self->base.regions + 1,
				    self->base.pages_pinned + 1));
}

/* ---- Many threads reviving one parked registration ---- */

#define RACERS	8
#define ROUNDS	10

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
	t->err = memreg_register(t->fd, t->buf, 16 * PAGE, RW, &t->r);
	return NULL;
}

TEST_F(lc, concurrent_registers_revive_once)
{
	struct racer t[RACERS];
	pthread_t th[RACERS];
	pthread_barrier_t barrier;
	struct memreg_stats s;
	struct memreg_query q;
	int round, i, revived, missed;

	for (round = 0; round < ROUNDS; round++) {
		ASSERT_EQ(0, pthread_barrier_init(&barrier, NULL, RACERS));
		for (i = 0; i < RACERS; i++) {
			t[i] = (struct racer){ .fd = self->fd, .buf = self->buf,
					       .barrier = &barrier };
			ASSERT_EQ(0, pthread_create(&th[i], NULL, race_register, &t[i]));
		}
		for (i = 0; i < RACERS; i++)
			pthread_join(th[i], NULL);
		pthread_barrier_destroy(&barrier);

		revived = missed = 0;
		for (i = 0; i < RACERS; i++) {
			ASSERT_EQ(0, t[i].err);
			ASSERT_EQ(t[0].r.lkey, t[i].r.lkey);
			if (t[i].r.flags == (MEMREG_REGISTER_CACHED | MEMREG_REGISTER_REVIVED))
				revived++;
			else if (!t[i].r.flags)
				missed++;
			else
				ASSERT_EQ(MEMREG_REGISTER_CACHED, t[i].r.flags);
		}
		/* The first round pins it; each later one revives it exactly once. */
		ASSERT_EQ(round ? 0 : 1, missed) TH_LOG("round %d", round);
		ASSERT_EQ(round ? 1 : 0, revived) TH_LOG("round %d", round);
		ASSERT_EQ(0, memreg_stats(self->fd, &s));
		ASSERT_EQ(1, s.registrations);
		ASSERT_EQ(1, s.cache_misses);
		ASSERT_EQ(round, s.revives);
		ASSERT_EQ((RACERS - 1) * (round + 1), s.cache_hits);
		ASSERT_EQ(0, s.parked);
		ASSERT_EQ(16, s.pages_pinned);
		ASSERT_EQ(0, memreg_query(self->fd, t[0].r.lkey, &q));
		ASSERT_EQ(RACERS, q.refcount);
		ASSERT_EQ(self->vmpin + 16 * PAGE_KB, vm_pin_kb());

		for (i = 0; i < RACERS; i++)
			ASSERT_EQ(0, memreg_deregister(self->fd, t[0].r.lkey));
		ASSERT_EQ(-EINVAL, memreg_deregister(self->fd, t[0].r.lkey));
		expect_parked(_metadata, self->fd, t[0].r.lkey, 16);
		ASSERT_EQ(0, memreg_stats(self->fd, &s));
		ASSERT_EQ(round + 1, s.parks);
	}
}

/* ---- Nothing outlives the file or the process ---- */

TEST(close_with_parked_registrations_releases_everything)
{
	struct memreg_global_stats base, g;
	struct memreg_register live;
	char *buf = map_filled(32 * PAGE, 'x');
	long vmpin = vm_pin_kb();
	int fd;

	ASSERT_NE(NULL, buf);
	mr_settle(&base);
	fd = memreg_open();
	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, memreg_register(fd, buf + 16 * PAGE, 4 * PAGE, RW, &live));
	park(_metadata, fd, buf, 2);
	park(_metadata, fd, buf + 4 * PAGE, 3);
	park(_metadata, fd, buf + 8 * PAGE, 5);
	ASSERT_EQ(0, memreg_global_stats(fd, &g));
	EXPECT_EQ(base.pages_pinned + 14, g.pages_pinned);
	EXPECT_EQ(base.regions + 4, g.regions);
	EXPECT_EQ(vmpin + 14 * PAGE_KB, vm_pin_kb());
	close(fd);
	EXPECT_EQ(vmpin, vm_pin_kb());
	ASSERT_EQ(0, mr_wait_global(base.contexts, base.regions, base.pages_pinned));
	munmap(buf, 32 * PAGE);
}

TEST(kill_with_parked_registrations_releases_everything)
{
	struct memreg_global_stats base, g;
	int ready[2], status;
	char c;
	pid_t pid;

	mr_settle(&base);
	ASSERT_EQ(0, pipe(ready));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		struct memreg_register r;
		char *buf = map_filled(32 * PAGE, 'k');
		int fd = memreg_open(), i;

		close(ready[0]);
		if (fd < 0 || !buf)
			_exit(1);
		for (i = 0; i < 4; i++)
			if (memreg_register(fd, buf + 4 * i * PAGE, 4 * PAGE, RW, &r) ||
			    (i < 3 && memreg_deregister(fd, r.lkey)))
				_exit(2);
		if (write(ready[1], "r", 1) != 1)
			_exit(3);
		for (;;)
			pause();
	}
	close(ready[1]);
	ASSERT_EQ(1, read(ready[0], &c, 1));
	close(ready[0]);
	ASSERT_EQ(0, mr_global_now(&g));
	EXPECT_EQ(base.contexts + 1, g.contexts);
	EXPECT_EQ(base.regions + 4, g.regions);
	EXPECT_EQ(base.pages_pinned + 16, g.pages_pinned);
	ASSERT_EQ(0, kill(pid, SIGKILL));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFSIGNALED(status));
	ASSERT_EQ(0, mr_wait_global(base.contexts, base.regions, base.pages_pinned));
}

TEST_HARNESS_MAIN
