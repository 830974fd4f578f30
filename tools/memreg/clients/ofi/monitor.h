/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The memreg memory monitor for libfabric's MR cache, and the network setup
 * that brings soft-iWARP (siw) up, shared by memreg-ofi-mrcache and
 * memreg-ofi-pair.
 *
 * The monitor is installed through libfabric's public import API
 * (fi_open("mr_cache") + fi_import_fid() with struct fid_mem_monitor, see
 * rdma/fi_ext.h): subscribe() is a watch REGISTER, valid() one acquire load
 * of the watch's state word, and a thread of its own turns memreg's ENDED
 * and EVICTED events into import_ops->notify(). See ofi/README.
 *
 * The network setup is raw netlink (no libnl): rtnetlink for links and
 * addresses, RDMA netlink for the siw device and its resource counts.
 */
#ifndef MEMREG_OFI_MONITOR_H
#define MEMREG_OFI_MONITOR_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <rdma/fabric.h>
#include <rdma/fi_ext.h>

#include "libmemreg.h"

/* The soft-iWARP device both programs use. */
#define RDMA_DEV_NAME		"siw0"

/* ---- Helpers --------------------------------------------------------------- */

/* A "# " diagnostic line on stdout (TAP), as the programs print them. */
void diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static inline void sleep_us(unsigned int us)
{
	struct timespec ts = {
		.tv_sec = us / 1000000,
		.tv_nsec = (long)(us % 1000000) * 1000,
	};

	nanosleep(&ts, NULL);
}

/* ---- The memreg monitor ---------------------------------------------------- */

#define MON_HASH_SIZE		256
#define MON_SLOTS		MEMREG_MAX_SLOTS
#define MON_EVENT_ENTRIES	64
#define MON_EVENT_BATCH		64
#define MON_WATCH_ACCESS	(MEMREG_ACCESS_LOCAL_READ | MEMREG_ACCESS_LOCAL_WRITE)

/* One subscribed range; see struct memreg_monitor. */
struct mon_sub {
	struct mon_sub *range_next;
	struct mon_sub *key_next;
	uintptr_t addr;
	size_t len;
	__u64 key;
	__u64 generation;
	__u32 slot;
	unsigned int refs;	/* subscribe() calls not matched by unsubscribe() */
	__u64 id;		/* the user data given to REGISTER */
	__u64 last_used;	/* @clock at the last valid() that found it */
};

enum mon_mode {
	MON_MEMREG,
	MON_BLIND,	/* never reports a change: the bug-class demonstration */
};

/* Counters, all unsigned long, read and written with atomics. */
struct mon_counters {
	unsigned long starts;
	unsigned long stops;
	unsigned long subscribes;
	unsigned long registers;	/* REGISTER calls made by subscribe() */
	unsigned long kernel_hits;	/* ... that memreg served as CACHED */
	unsigned long reuses;		/* subscribe() served by a valid watch */
	unsigned long subscribe_failures;
	unsigned long unsubscribes;
	unsigned long valid_calls;
	unsigned long valid_false;
	unsigned long revalidations;	/* REVALIDATE calls made by valid() */
	unsigned long revalidated;	/* ... that found the memory in place */
	unsigned long ev_suspended;
	unsigned long ev_resumed;
	unsigned long ev_ended;
	unsigned long ev_evicted;
	unsigned long ev_stale;		/* ENDED/EVICTED for no subscription */
	unsigned long ev_user_data;	/* ... whose user data named a subscription */
	unsigned long notifies;		/* import_ops->notify() calls */
	unsigned long resyncs;
	unsigned long resync_ended;	/* subscriptions a resync found gone */
	unsigned long reclaimed;	/* watches dropped to make room (EMFILE) */
	unsigned long held_at_stop;	/* subscriptions stop() still found */
	unsigned long dereg_failures;
};

#define MON_INC(m, f)	__atomic_add_fetch(&(m)->cnt.f, 1, __ATOMIC_RELAXED)
#define MON_ADD(m, f, n) __atomic_add_fetch(&(m)->cnt.f, (n), __ATOMIC_RELAXED)
#define MON_GET(m, f)	__atomic_load_n(&(m)->cnt.f, __ATOMIC_RELAXED)

/*
 * libfabric 1.17 keeps one imported monitor for the process: one instance,
 * owned by the program.
 *
 * The import API hands the monitor only (addr, len) in subscribe(),
 * unsubscribe() and valid(), and valid() gets the cache entry's range: the
 * subscriptions are kept in a table keyed by that range. A second table,
 * keyed by memreg's key, routes events. Each subscription holds exactly one
 * memreg reference (one REGISTER, matched by one DEREGISTER); a subscribe()
 * of a range already watched by a valid registration only counts a
 * reference of ours (@refs) and makes no system call.
 *
 * Locking: @lock protects the tables and is held only for table work and
 * the REGISTER, DEREGISTER and REVALIDATE ioctls, never across a call into
 * libfabric. libfabric calls subscribe() and valid() with its global
 * mm_lock held, and notify() takes mm_list_rwlock and mm_lock: the event
 * thread drops @lock before it calls notify(), so the order is always
 * libfabric's locks, then @lock.
 *
 * The programs read @cnt (MON_GET, mon_counters()), @ev, @mode,
 * @thread_started and the stop_* fields; everything else is the monitor's.
 */
struct memreg_monitor {
	struct fid_mem_monitor fid;	/* what libfabric sees */
	struct fi_ops_mem_monitor ops;
	enum mon_mode mode;
	bool imported;

	pthread_mutex_t lock;
	struct mon_sub *by_range[MON_HASH_SIZE];
	struct mon_sub *by_key[MON_HASH_SIZE];
	unsigned int nr_subs;
	__u64 next_id;
	__u64 clock;

	int fd;
	struct memreg_state_words sw;
	struct memreg_events ev;
	__u32 event_entries;
	int wake[2];			/* a pipe: wakes the event thread */
	pthread_t thread;
	bool thread_started;
	int busy;			/* the thread is consuming events */

	/* Pausing the thread, for the overflow check. */
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond;
	bool pause_req;
	bool parked;
	bool stopping;

	struct mon_counters cnt;

	/* What stop() saw, for the checks after everything is closed. */
	bool stop_seen;
	unsigned int stop_keys;		/* distinct keys held */
	unsigned int stop_live_keys;	/* ... whose word was valid or suspended */
	struct memreg_stats stop_before;
	struct memreg_stats stop_after;
	bool stop_flushed;
	int stop_error;
};

/*
 * Installs @m into libfabric (before the first fi_domain, after the first
 * fi_getinfo); libfabric then uses it for every new MR cache. 0 or a
 * negative fi_errno.
 */
int mon_import(struct memreg_monitor *m, enum mon_mode mode);

/* Releases the import (libfabric forgets the monitor) once nothing uses it. */
void mon_unimport(struct memreg_monitor *m);

/* A snapshot of the counters. */
void mon_counters(struct memreg_monitor *m, struct mon_counters *out);

/*
 * Waits until the event thread has consumed every event written so far
 * and finished acting on it. False on timeout.
 */
bool mon_quiesce(struct memreg_monitor *m, unsigned int timeout_ms);

/* Waits until more than @before ENDED/EVICTED events were read, then quiesces. */
bool mon_wait_ends(struct memreg_monitor *m, unsigned long before,
		   unsigned int timeout_ms);

/* Parks the event thread (true once it is parked), and lets it go again. */
bool mon_pause(struct memreg_monitor *m, unsigned int timeout_ms);
void mon_resume(struct memreg_monitor *m);

/*
 * The number of subscriptions held now, and the memreg context's STATS
 * taken under the same lock. Only while the monitor is started.
 */
int mon_kernel_view(struct memreg_monitor *m, unsigned int *subs,
		    struct memreg_stats *st);

/* ---- Network setup: a netdev, its address, siw0 ------------------------------ */

/*
 * Where siw0 goes: @netdev with @addr/@prefix. With @create, @netdev is a
 * dummy device made when missing (memreg-ofi-mrcache's dummy0); otherwise
 * it must exist (eth0). With @always, the address is added and the links
 * brought up even when siw0 exists already (each step idempotent); without
 * it nothing is touched once siw0 exists.
 */
struct siw_net {
	const char *netdev;
	const char *addr;
	unsigned char prefix;
	bool create;
	bool always;
};

/*
 * Makes siw0 exist and libibverbs list it (ibv_static_providers() must
 * have run). @net NULL: the network is never changed, siw0 must be there.
 * Only where @may_setup (the project's guest) is the network touched and
 * sysfs or /dev/infiniband made. Returns 0 or -errno with *why filled;
 * *created says whether this call created siw0.
 */
int siw_setup(const struct siw_net *net, bool may_setup, char *why,
	      size_t why_len, bool *created);

/*
 * 1 when an RDMA device called @name exists, 0 when not, -errno when RDMA
 * netlink cannot be asked (no CONFIG_INFINIBAND).
 */
int rdma_dev_exists(const char *name);

/* Resource counts of an RDMA device (RDMA netlink RES_GET, as "rdma res"). */
struct rdma_res {
	unsigned long long pd;
	unsigned long long cq;
	unsigned long long qp;
	unsigned long long cm_id;
	unsigned long long mr;
	unsigned long long ctx;
};

/* Fills @res for the RDMA device @name: 0, or -errno (-ENODEV: not listed). */
int rdma_res_get(const char *name, struct rdma_res *res);

/* ---- Test buffers -------------------------------------------------------- */

/*
 * A pattern that differs for every seed (xorshift64 words; lengths are
 * multiples of 8), and whether a buffer holds exactly it.
 */
void pattern_fill(void *buf, size_t len, uint64_t seed);
bool pattern_match(const void *buf, size_t len, uint64_t seed);

/* How a buffer's memory is freed and allocated again at the same address. */
enum realloc_how {
	RE_MUNMAP,	/* munmap, then mmap at the same address */
	RE_FIXED,	/* mmap MAP_FIXED over the live mapping */
	RE_MREMAP,	/* mremap the old pages away, then mmap at the address */
	RE_DONTNEED,	/* madvise(MADV_DONTNEED): new pages on the next touch */
	RE_NR,
};

extern const char *const realloc_name[RE_NR];

/*
 * Frees the @len bytes at @addr and allocates new memory at the same
 * address, faulted in (zeroes); RE_MREMAP leaves the old pages mapped at
 * *@old_out. -EADDRNOTAVAIL when the address could not be had.
 */
int realloc_at(char *addr, size_t len, enum realloc_how how, char **old_out);

#endif /* MEMREG_OFI_MONITOR_H */
