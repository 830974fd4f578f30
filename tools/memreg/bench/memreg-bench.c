// SPDX-License-Identifier: GPL-2.0
/*
 * memreg benchmark. The guest runs under emulation, so every figure is a
 * ratio against a baseline measured in the same run, interleaved with it
 * (the median of several rounds of each):
 *
 *  register_miss_per_page_*  REGISTER miss per page against raw
 *                            pin_user_pages_fast(FOLL_LONGTERM | FOLL_WRITE)
 *                            per page, timed in the kernel by CONFIG_GUP_TEST's
 *                            PIN_FAST_BENCHMARK, on pre-faulted small pages
 *                            (target <= 1.3 from 1 MiB); on a file with
 *                            parking off, so no REGISTER is served by
 *                            reviving (each one is checked to be a miss);
 *  register_hit_ioctl        REGISTER served from the cache against a no-op
 *                            ioctl (GET_VERSION on the same file), <= 1.2: a
 *                            hit on a live registration (16 pages, keeping
 *                            its own reference throughout, so it never parks
 *                            and no hit is a revival; parking stays at its
 *                            default, checked by QUERY and STATS);
 *  register_rejected_ioctl   informational: a REGISTER the kernel refuses
 *                            before any work (flags 1, EINVAL) against the
 *                            no-op ioctl: the floor every REGISTER pays,
 *                            copying its 80-byte argument in (under TCG a
 *                            user copy costs a few ns per byte);
 *  register_hit_ioctl_vs_rejected_ioctl  the REGISTER hit against that
 *                            refused REGISTER, <= 1.3: memreg's own work on
 *                            the hit path, which the emulator's copy cost
 *                            hides in register_hit_ioctl;
 *  lib_cache_hit_vs_noop_ioctl  libmemreg's registration cache:
 *                            memreg_mr_get() of 4 pages inside a cached
 *                            16-page registration (a tree look-up under the
 *                            cache's mutex and one acquire load of the state
 *                            word) plus memreg_mr_put(), against one no-op
 *                            ioctl (GET_VERSION), <= 0.1. Every get must
 *                            return the cached entry, and the kernel's STATS
 *                            must count no REGISTER during the timed runs;
 *  lib_ring_nop_vs_raw_ring  32 NOPs posted then reaped through libmemreg
 *                            (memreg_get_sqe(), memreg_submit_batch(),
 *                            memreg_reap_cqes()),
 *                            against the same through this program's own
 *                            hand-written protocol (the ring_* functions
 *                            below), on two queues of 256/1024 entries of one
 *                            file, alternating, <= 1.1: what the library
 *                            adds to the protocol;
 *  pool_alloc_free_userspace_vs_noop_ioctl  libmemreg's user-space ALLOC
 *                            + FREE of one 4 KiB buffer at its fastest: a
 *                            thread's pool cache over the free-buffer ring
 *                            (memreg_pool_cache_alloc() and _free() with a
 *                            cache of 32 buffers, which touch the ring once
 *                            per 16 operations at most), against one no-op
 *                            ioctl (GET_VERSION on the same file), <= 0.1;
 *  pool_ring_alloc_free_vs_noop_ioctl  informational: the same through the
 *                            ring alone, memreg_pool_alloc() plus
 *                            memreg_pool_free() (a pop and a push, one
 *                            compare-and-swap each). For both, the pool has
 *                            one class of 64 buffers of 4 KiB, all mapped
 *                            (initial 64) and lent to the ring (POOL_RING's
 *                            `lent` polled until 64) before anything is
 *                            timed, watermarks 0; the three are measured in
 *                            an order that changes from round to round.
 *                            POOL_STATS must show no change in `allocated`,
 *                            `waits`, `timeouts` or `grows` across the timed
 *                            runs, and `lent` must still be 64: every ALLOC
 *                            was a pop or a cached buffer;
 *  rust_ring_nop_vs_c_ring   one NOP posted and its completion busy-polled,
 *                            by the memreg crate (memreg-rs-ring_nop_bench,
 *                            run as a child, which times itself, twice as
 *                            many round trips as one C batch) against the
 *                            same loop through libmemreg in this program,
 *                            queues of 64/64 entries on files of their own,
 *                            <= 1.1; skipped (no row) when the Rust program
 *                            is not installed;
 *  userspace_hit_vs_noop_ioctl  a cache hit validated in user space through
 *                            the state words, against one no-op ioctl
 *                            (GET_VERSION on the same file), <= 0.1. The file
 *                            maps one page of state words
 *                            (MEMREG_MMAP_STATE_WORDS) before it registers a
 *                            16-page range, whose slot and generation go into
 *                            a user-space cache entry, an array indexed by
 *                            slot. One timed hit: a compiler barrier (nothing
 *                            stays in registers from the previous hit), the
 *                            entry's address taken from the array by slot, a
 *                            check that the entry covers the requested range
 *                            (two compares), one acquire load of
 *                            words[entry's slot] compared with the entry's
 *                            generation, and the entry's lkey consumed; no
 *                            system call. The registration stays live
 *                            throughout; every hit must validate, and after
 *                            FLUSH ends it the word must no longer validate;
 *  reg_dereg_loop_1mib_speedup  REGISTER + DEREGISTER of one pre-faulted
 *                            1 MiB buffer (small pages, read-write) in a loop,
 *                            on a file with parking on (every REGISTER
 *                            revives the registration the previous DEREGISTER
 *                            parked), against the same loop on a second file
 *                            with parking off (every REGISTER pins the 256
 *                            pages of its own 1 MiB buffer, every DEREGISTER
 *                            unpins them), >= 20. Each REGISTER is checked:
 *                            MEMREG_REGISTER_REVIVED with parking on, no flag
 *                            with it off. Before each timed batch with parking
 *                            on, an untimed REGISTER + DEREGISTER makes sure
 *                            the registration is parked (the idle eviction
 *                            may have ended it while the other side was
 *                            timed), so the first REGISTER of a batch revives
 *                            too. Afterwards both files get back the cache
 *                            configuration they opened with, then FLUSH;
 *  revive_vs_noop_ioctl      the pair REGISTER (revives) + DEREGISTER (parks)
 *                            of that loop with parking on, against two no-op
 *                            ioctls (GET_VERSION, on the same file, timed as
 *                            one and doubled), so the ratio is the mean cost
 *                            of those two ioctls against one no-op ioctl,
 *                            <= 1.2. The three loops (parking off, parking on,
 *                            no-op) are measured in an order that rotates
 *                            from round to round;
 *  watch_register_vs_pinned_register_1mib  REGISTER + DEREGISTER of one
 *                            touched 1 MiB buffer with parking off, as a
 *                            watch-only registration (its page frames
 *                            recorded, nothing pinned or charged) against a
 *                            pinned one (pin, charge, unpin, uncharge), on
 *                            files of their own, rounds rotated, <= 0.2.
 *                            Every REGISTER must be a miss of its kind;
 *  ucx_rcache_hit_memreg_vs_hooks  UCX's ucs_rcache_get() + put of a cached
 *                            region by memreg-ucx-rcache (which times itself
 *                            over 20000 hits), with memreg as its event
 *                            source (the state word checked after each get)
 *                            against UCX's own memory hooks, medians of 5
 *                            alternating runs, <= 1.1;
 *  ucx_rcache_miss_watch_vs_hooks  a get that misses (the region invalidated
 *                            and put after each get; only the get is timed):
 *                            a watch-only REGISTER against UCX's hooks path,
 *                            which registers nothing, <= 1.5;
 *  ofi_mr_reg_hit_vs_miss_speedup  fi_mr_reg() + fi_close() of a 64 KiB
 *                            buffer in libfabric's verbs MR cache over
 *                            soft-iWARP, with memreg's monitor imported: a
 *                            hit (one state-word load in valid()) against a
 *                            miss after the buffer was freed and allocated
 *                            again (a registration with siw), >= 10. The
 *                            client checks that each timed hit and miss was
 *                            one; the client rows are skipped (no rows) when
 *                            the clients are not installed;
 *  munmap_registered_1mib    munmap of a registered 1 MiB mapping against an
 *                            unregistered one, <= 1.5 (live registrations,
 *                            never deregistered, so parking plays no part);
 *  lookup_1k/10k/100k/1m     REGISTER cache hit in one context holding 1K,
 *                            10K, 100K, 1M registrations of mixed lengths (one of
 *                            1 GiB, read-only, the others 1-16 pages inside
 *                            and outside it), against the no-op ioctl;
 *  lookup_100k_vs_1k         that hit at 100K against the same at 1K, <= 2;
 *  lookup_1m_vs_1k           that hit at 1M against the same at 1K, <= 2;
 *  ring_copy_{64b,4kib}_batch{1,8,32,128}_speedup  requests through a
 *                            queue against one COPY ioctl each: time per
 *                            request of COPYs of 64 bytes or 4 KiB between
 *                            two registrations of one context (512 KiB each,
 *                            read-write), posted N at a time with the
 *                            lock-free protocol of the header (the doorbell
 *                            rung when the rule says so), then reaped by
 *                            spinning (yielding the CPU now and then) until
 *                            the N completions arrived, each checked in order:
 *                            user_data, status 0, bytes == length. Baseline:
 *                            MEMREG_IOC_COPY of the same length from a user
 *                            buffer into the destination registration. The
 *                            ioctl and the four batch sizes of one length are
 *                            measured in an order that rotates from round to
 *                            round; ratio baseline/value, so the ratio of
 *                            request rates. Target >= 3 for 64 bytes in
 *                            batches of 32, the others informational. One
 *                            queue of 256 submission and 1024 completion
 *                            entries; an untimed COPY through it is checked
 *                            to move the bytes asked first;
 *  ring_round_trip_vs_ioctl  one 64-byte COPY posted, the doorbell rung if
 *                            the worker sleeps, its completion seen: the
 *                            batch-1 figure of the 64-byte rows, against one
 *                            COPY ioctl of 64 bytes, <= 2;
 *  ring_doorbells_per_request  a count, not a time: 100000 64-byte COPYs
 *                            posted continuously, 32 at a time, by one thread
 *                            that reaps between batches (never more
 *                            outstanding than the completion ring holds);
 *                            DOORBELL calls (the delta of QUEUE_STATS
 *                            .doorbells, checked equal to the program's own
 *                            count) per request, median of five runs;
 *                            baseline 1, ratio = value, <= 0.05. Needs no
 *                            clock, so it is never unresolved; the run's time
 *                            per request is printed for information;
 *  peer_write_{4kib,64kib,1mib,16mib,64mib}_vs_{process_vm_writev,memcpy}_speedup
 *                            one-sided WRITE into another process, against
 *                            process_vm_writev of the same size into the same
 *                            memory and against memcpy of the same size
 *                            between two buffers of one process. A forked
 *                            child (A) opens its own file, maps and pre-faults
 *                            64 MiB (small pages), registers it LOCAL_READ |
 *                            LOCAL_WRITE | REMOTE_WRITE and sends its file
 *                            (SCM_RIGHTS), remote key and address over a unix
 *                            socketpair, then waits. The benchmark (B)
 *                            attaches A's file (PEER_ATTACH), closes the
 *                            descriptor it received, registers its own 64 MiB
 *                            source LOCAL_READ and opens a queue of 64/64
 *                            entries. One timed WRITE: posted, its completion
 *                            busy-polled (yielding the CPU every 64 spins)
 *                            and checked: user_data, status 0, bytes == size.
 *                            Every operation of a size moves that many bytes
 *                            at the same offset of each buffer, the offset
 *                            stepping through the 64 MiB. Before a size is
 *                            timed, one WRITE of a pattern of its own is
 *                            checked untimed: B reads A's buffer back with
 *                            process_vm_readv, the bytes are there and not one
 *                            byte around them changed. The three are measured
 *                            in an order that rotates from round to round;
 *                            ratio baseline/value, so the ratio of
 *                            throughputs. Targets: 1 MiB >= 1.2 against
 *                            process_vm_writev and >= 0.8 against memcpy; the
 *                            other sizes informational. QUEUE_STATS must count
 *                            no error and, in remote_bytes, exactly the bytes
 *                            the WRITEs moved. Afterwards B detaches, A exits
 *                            0, and the module's peer attachments and
 *                            contexts return to their values before the row;
 *  send_recv_pingpong_vs_unix_socket  a round trip of 64 bytes between two
 *                            processes by SEND/RECV, against the same over a
 *                            unix socketpair (write, then read the echo),
 *                            <= 0.8. A forked child (A) and the benchmark (B)
 *                            each open a file, a queue (64/256 entries) and
 *                            register one page; they exchange files and queue
 *                            indexes, each attaches the other's file, connects
 *                            its queue to the other's (QUEUE_CONNECT,
 *                            rnr_timeout_ms 1000) and keeps 16 RECVs of 64
 *                            bytes posted. One round trip: B SENDs 64 bytes;
 *                            A sees the RECV completion and SENDs the same
 *                            bytes back from the slot they arrived in (posting
 *                            its RECV again when that SEND completes); B sees
 *                            its SEND and RECV completions, checks the echo
 *                            carries its sequence number and posts its RECV
 *                            again. Both busy-poll their completion rings
 *                            (yielding the CPU every 64 spins). A serves both
 *                            kinds in turn, busy-polling while SEND/RECV is
 *                            timed and blocked in read() while the socket is,
 *                            switched by a message before each batch
 *                            (untimed). An untimed pass finds the round trips
 *                            each needs to last a timed interval; every round
 *                            then times twice the larger count of each, in an
 *                            order that alternates from round to round. Every
 *                            completion is checked (status 0, 64 bytes, no
 *                            immediate data), and B's QUEUE_STATS must count
 *                            no error, no receiver-not-ready timeout, and
 *                            each of B's SENDs as a message of 64 bytes
 *                            (messages, remote_bytes). Afterwards B detaches,
 *                            A exits 0, and the module's peer attachments and
 *                            contexts return to their values before the row;
 *  pool_alloc_free_vs_noop_ioctl  one POOL_ALLOC of a single 4 KiB buffer plus
 *                            one POOL_FREE of it, against two no-op ioctls
 *                            (GET_VERSION on the same file, timed as one and
 *                            doubled), <= 1.2. The pool has one class of 64
 *                            buffers of 4 KiB, all mapped (initial 64) before
 *                            anything is timed, watermarks 0, so no ALLOC
 *                            waits and nothing grows or shrinks (POOL_STATS is
 *                            checked afterwards: four growths, nothing waited,
 *                            fell back or is still allocated);
 *  pool_alloc_free_batch32_vs_noop_ioctl  one ALLOC of 32 buffers then one
 *                            FREE of the 32, per buffer (divided by 32),
 *                            against one no-op ioctl, <= 0.2 (every ALLOC
 *                            must give the 32);
 *  pool_vs_malloc_register_speedup  a 4 KiB buffer from the pool (the ALLOC +
 *                            FREE of the first row) against malloc(4096), a
 *                            write to its first and last byte (the pages it
 *                            spans), REGISTER + DEREGISTER of its 4096 bytes
 *                            and free(), on the same file with parking off,
 *                            so every REGISTER pins (checked: no flag on any
 *                            REGISTER, and STATS counts one more miss per
 *                            REGISTER, no hit, park or revival), >= 10. The
 *                            four loops of these rows (single, batch, malloc,
 *                            no-op) are measured in an order that rotates
 *                            from round to round;
 *  pool_grow_per_mib_vs_fault_and_register  growth of a pool by 1 MiB
 *                            against what a process does without a pool for
 *                            1 MiB of registered memory, <= 1.2. Growth:
 *                            pools of one class of 4 KiB buffers with
 *                            initial = max = 256 (1 MiB, 16 chunks of 64 KiB,
 *                            one extent, one registration), created untimed
 *                            on a fresh file (at most MEMREG_MAX_POOLS a
 *                            file: indexes are not reused); timed: mmap of
 *                            the pool, which queues the pool's work, then
 *                            POOL_STATS polled (sched_yield() between polls)
 *                            until the boundary shows the 256 buffers mapped.
 *                            So the figure includes the mmap call, the work's
 *                            wake-up and up to one poll, besides allocating,
 *                            zeroing, charging, publishing and mapping the
 *                            256 pages; munmap and teardown are untimed (each
 *                            pool is checked to count 16 chunks grown and 256
 *                            free buffers first). Baseline, the fair one
 *                            (both zero their pages): mmap of 1 MiB of
 *                            private anonymous memory, a write to each of its
 *                            pages (first touch) and a REGISTER miss of it on
 *                            a file with parking off; DEREGISTER and munmap
 *                            untimed. Measured in alternating order;
 *
 * The clock: the guest may run on a coarse clocksource (jiffies, when the
 * TSC was found unstable and nothing better was there). The clock is
 * calibrated first: the clocksource's name, clock_getres() and the smallest
 * step seen between consecutive clock_gettime() calls. Each measurement
 * repeats its operation until the timed interval lasts at least 1000 times
 * that step (and at least 10 ms), then divides. When the clocksource is
 * jiffies-based or the clock advances in steps coarser than 1 us, or a
 * figure could not be timed that finely, it is reported "unresolved"
 * instead of being given a verdict.
 *
 * Output: progress lines, a table (metric, value, baseline, ratio, target,
 * verdict) and the same rows as CSV lines prefixed "MEMREG-CSV ", header
 * "metric,value,baseline,ratio,target": values in ns (for
 * ring_doorbells_per_request a count per request, to six decimals, against
 * a baseline of 1), ratio value/baseline (baseline/value for metrics named
 * *_speedup), target like "<=1.3", and "metric,unresolved,,,target" for a
 * figure the clock cannot resolve.
 *
 * Exits 0 when every operation behaved as expected (a missed target is a
 * verdict, not a failure), 1 otherwise. The lookup rows need the module
 * loaded with max_registrations of at least 1000000 (scripts/bench.sh
 * passes max_registrations=1048576) and about 6 GiB of free guest memory
 * (3.2 GiB of buffers, 1.7 KiB of kernel memory a registration; with less
 * than the buffers need, the big registration shrinks to 256 MiB, as the
 * output says). The
 * WRITE rows need about 200 MiB, and process_vm_writev/readv on the child
 * (its parent may, whatever the Yama ptrace scope).
 */
#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "memreg_util.h"
#include "mm/gup_test.h"

#define FOLL_WRITE	0x01
#define FOLL_LONGTERM	0x100

#define KIB		1024UL
#define MIB		(1024UL * KIB)
#define GIB		(1024UL * MIB)
#define MS		1e6		/* in ns */

/* Shortest timed interval, whatever the clock. */
#define MIN_INTERVAL_NS	(10 * MS)
/* Rounds of each measurement; the median is kept. */
#define ROUNDS		5
/* Memory one batch of REGISTER misses or munmaps may use. */
#define POOL_CAP	(128 * MIB)

static void __attribute__((noreturn, format(printf, 1, 2))) fail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "memreg-bench: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static const char *err_hint(int e)
{
	if (e == EDQUOT)
		return " (the context's cap: load memreg with max_registrations=1048576)";
	if (e == ENOSPC)
		return " (the module's max_pinned_pages budget)";
	return "";
}

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- The clock ---------------------------------------------------------- */

static struct {
	char source[64];	/* current clocksource */
	int64_t getres_ns;	/* clock_getres(CLOCK_MONOTONIC), -1 if it failed */
	double step_ns;		/* smallest nonzero difference of consecutive reads */
	double read_ns;		/* mean time of one read */
	double repeat;		/* fraction of reads returning the previous value */
	long reads;
	int ok;			/* timed figures can be resolved */
	char note[200];		/* why not, or what the step means */
	double thr_ns;		/* every timed interval lasts at least this long */
	double kq_us;		/* quantum of a reading timed in the kernel, in us */
} clk;

static void read_clocksource(char *buf, size_t len)
{
	FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");

	buf[0] = 0;
	if (f) {
		if (!fgets(buf, len, f))
			buf[0] = 0;
		fclose(f);
	}
	buf[strcspn(buf, "\n")] = 0;
	if (!buf[0])
		snprintf(buf, len, "unknown");
}

static void calibrate_clock(void)
{
	struct timespec res;
	int64_t start, prev, t, d, min = INT64_MAX;
	long reads = 0, steps = 0, repeats = 0;

	read_clocksource(clk.source, sizeof(clk.source));
	clk.getres_ns = clock_getres(CLOCK_MONOTONIC, &res) ? -1 :
			(int64_t)res.tv_sec * 1000000000 + res.tv_nsec;
	start = prev = now_ns();
	for (;;) {
		t = now_ns();
		d = t - prev;
		reads++;
		if (d > 0) {
			steps++;
			if (d < min)
				min = d;
		} else {
			repeats++;
		}
		prev = t;
		if ((reads >= 20000 && steps >= 1000) || reads >= 5000000 || t - start >= 1000000000)
			break;
	}
	clk.reads = reads;
	clk.step_ns = steps ? (double)min : INFINITY;
	clk.read_ns = (double)(prev - start) / reads;
	clk.repeat = (double)repeats / reads;
	clk.ok = 0;
	if (strstr(clk.source, "jiffies")) {
		snprintf(clk.note, sizeof(clk.note), "clocksource %s counts timer ticks", clk.source);
	} else if (!steps) {
		snprintf(clk.note, sizeof(clk.note), "the clock did not advance in %ld reads", reads);
	} else if (clk.step_ns > 1000 && clk.repeat >= 0.01) {
		/* Reads return the same time again and again: the step is the clock's own. */
		snprintf(clk.note, sizeof(clk.note),
			 "the clock advances in steps of %.1f us, coarser than 1 us", clk.step_ns / 1e3);
	} else {
		clk.ok = 1;
		if (clk.step_ns > 1000)
			/*
			 * No read returned its predecessor's time: the clock is finer than
			 * one read, and the step is what a read costs (a system call, with
			 * an emulated HPET or PM timer), which the 1000x rule covers.
			 */
			snprintf(clk.note, sizeof(clk.note),
				 "the %.1f us step is the cost of one read (no read repeated a "
				 "value), the clock itself is finer", clk.step_ns / 1e3);
		else
			clk.note[0] = 0;
	}
	/*
	 * The kernel reports whole microseconds. Its own clock reads cost no
	 * system call: when the step is the cost of a read on a clocksource known
	 * to be finer than 1 us, the microsecond is the quantum.
	 */
	clk.kq_us = fmax(1.0, clk.step_ns / 1e3);
	if (clk.ok && clk.repeat < 0.01 &&
	    (!strcmp(clk.source, "tsc") || !strcmp(clk.source, "hpet") ||
	     !strcmp(clk.source, "acpi_pm") || !strcmp(clk.source, "kvm-clock")))
		clk.kq_us = 1.0;
	if (clk.ok)
		clk.thr_ns = fmax(MIN_INTERVAL_NS, 1000 * clk.step_ns);
	else
		/* Nothing will be resolved: keep the run short. */
		clk.thr_ns = fmax(MIN_INTERVAL_NS, fmin(3 * clk.step_ns, 100 * MS));
}

/*
 * Right after boot the kernel may still be on tsc-early, which it replaces
 * a few seconds later: wait for that (at most 30 s) rather than time
 * across the switch.
 */
static void settle_clocksource(void)
{
	char src[64];
	int i;

	for (i = 0; i < 300; i++) {
		read_clocksource(src, sizeof(src));
		if (strcmp(src, "tsc-early"))
			return;
		usleep(100000);
	}
}

static void print_clock(void)
{
	printf("clock: clocksource %s, clock_getres(CLOCK_MONOTONIC) %lld ns, smallest step %.0f ns "
	       "in %ld reads (%.0f%% repeated the previous value), %.0f ns a read\n",
	       clk.source, (long long)clk.getres_ns, clk.step_ns, clk.reads, clk.repeat * 100,
	       clk.read_ns);
	if (clk.ok)
		printf("clock: usable%s%s; every timed interval lasts at least %.1f ms\n",
		       clk.note[0] ? ": " : "", clk.note, clk.thr_ns / MS);
	else
		printf("clock: UNRESOLVED: %s; every timed figure is reported as unresolved\n",
		       clk.note);
}

/*
 * Whether the clocksource is still the one `before` names. When it changed
 * (the kernel dropped an unstable TSC), the clock is calibrated again and the
 * figure timed across the change is not trusted.
 */
static int clock_unchanged(const char *before)
{
	char now[64];

	read_clocksource(now, sizeof(now));
	if (!strcmp(now, before) && !strcmp(now, clk.source))
		return 1;
	printf("clock: clocksource changed from %s to %s during the run: calibrating again\n",
	       before, now);
	calibrate_clock();
	print_clock();
	return 0;
}

/* ---- Measurements ------------------------------------------------------- */

/* A figure: time per operation, and whether the clock resolved it. */
struct fig {
	double ns;
	int ok;
};

/*
 * An operation timed in batches: prepare(n) and finish(n) are untimed, run(n)
 * performs n operations and is timed as a whole.
 */
struct batch {
	size_t max_n;		/* most operations one batch may hold (memory) */
	size_t n;		/* batch size found last time */
	void (*prepare)(void *arg, size_t n);
	void (*run)(void *arg, size_t n);
	void (*finish)(void *arg, size_t n);
	void *arg;
};

/*
 * Grows the batch until one batch lasts clk.thr_ns (or holds max_n
 * operations: then batches are added up until the total does); resolved when
 * the clock is usable and the batches counted lasted 1000 clock steps each on
 * average (a batch's time is off by at most about one step).
 */
static struct fig measure(struct batch *b)
{
	double total = 0, ops = 0;
	size_t n = b->n ? b->n : 1;
	int batches = 0;
	char src[64];
	struct fig f;

	read_clocksource(src, sizeof(src));
	for (;;) {
		int64_t t0, e;

		if (b->prepare)
			b->prepare(b->arg, n);
		t0 = now_ns();
		b->run(b->arg, n);
		e = now_ns() - t0;
		if (b->finish)
			b->finish(b->arg, n);
		if (ops == 0 && e < clk.thr_ns && n < b->max_n) {
			/* Too short to count: grow the batch and start again. */
			double want = e > 0 ? n * 1.25 * clk.thr_ns / e : n * 16.0;

			if (want < 2.0 * n)
				want = 2.0 * n;
			n = want >= (double)b->max_n ? b->max_n : (size_t)want;
			continue;
		}
		total += e;
		ops += n;
		batches++;
		/* More batches of the same length would not make them longer. */
		if (total >= clk.thr_ns || batches >= 256)
			break;
	}
	b->n = n;
	f.ns = ops > 0 && total > 0 ? total / ops : 0;
	f.ok = clock_unchanged(src) && clk.ok && f.ns > 0 && total >= clk.thr_ns &&
	       total >= 1000 * clk.step_ns * batches;
	return f;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The median of n figures; resolved only if all of them are. */
static struct fig median(struct fig *v, int n)
{
	double x[ROUNDS * 2];
	struct fig m = { 0, 1 };
	int i;

	for (i = 0; i < n; i++) {
		x[i] = v[i].ns;
		m.ok &= v[i].ok;
	}
	qsort(x, n, sizeof(x[0]), cmp_double);
	m.ns = n % 2 ? x[n / 2] : (x[n / 2 - 1] + x[n / 2]) / 2;
	return m;
}

static struct fig per(struct fig f, double n)
{
	f.ns /= n;
	return f;
}

/* A figure for the progress lines: "123.4 ns", or "unresolved". */
static const char *figstr(struct fig f, const char *unit)
{
	static char buf[8][40];
	static int next;
	char *b = buf[next++ % 8];

	if (f.ok && f.ns > 0 && isfinite(f.ns))
		snprintf(b, sizeof(buf[0]), "%.1f %s", f.ns, unit);
	else
		snprintf(b, sizeof(buf[0]), "unresolved");
	return b;
}

/* ---- Results ------------------------------------------------------------ */

struct row {
	char name[48];
	struct fig value, base;
	char target[16];
	int count;		/* value and baseline are counts, not times */
};

static struct row rows[64];
static int nrows;

static void add_row(const char *name, struct fig value, struct fig base, const char *target)
{
	struct row *r;

	if (nrows == (int)(sizeof(rows) / sizeof(rows[0])))
		fail("more than %d rows: enlarge rows[]", nrows);
	r = &rows[nrows++];

	snprintf(r->name, sizeof(r->name), "%s", name);
	r->value = value;
	r->base = base;
	snprintf(r->target, sizeof(r->target), "%s", target);
	r->count = 0;
}

/*
 * A row whose value is a count per operation (it may be 0) against a count
 * baseline, ratio value/baseline. A count needs no clock: it is resolved
 * when it was measured at all.
 */
static void add_count_row(const char *name, struct fig value, double base, const char *target)
{
	struct fig b = { base, 1 };

	add_row(name, value, b, target);
	rows[nrows - 1].count = 1;
}

static int row_resolved(const struct row *r)
{
	if (r->count)
		return r->value.ok && r->base.ok && r->value.ns >= 0 && r->base.ns > 0 &&
		       isfinite(r->value.ns) && isfinite(r->base.ns);
	return r->value.ok && r->base.ok && r->value.ns > 0 && r->base.ns > 0 &&
	       isfinite(r->value.ns) && isfinite(r->base.ns);
}

static double row_ratio(const struct row *r)
{
	size_t l = strlen(r->name);

	if (l > 8 && !strcmp(r->name + l - 8, "_speedup"))
		return r->base.ns / r->value.ns;
	return r->value.ns / r->base.ns;
}

/* "meets", "MISSES", "unresolved", or "-" for an informational row. */
static const char *row_verdict(const struct row *r)
{
	double ratio, limit;

	if (!r->target[0])
		return "-";
	if (!row_resolved(r))
		return "unresolved";
	ratio = row_ratio(r);
	limit = strtod(r->target + 2, NULL);
	if (!strncmp(r->target, "<=", 2))
		return ratio <= limit ? "meets" : "MISSES";
	if (!strncmp(r->target, ">=", 2))
		return ratio >= limit ? "meets" : "MISSES";
	return "?";
}

/* A value or baseline of a row as printed: ns to 0.1, a count to 1e-6. */
static void row_num(char *buf, size_t n, const struct row *r, struct fig f)
{
	if (r->count ? !(f.ok && f.ns >= 0) : !(f.ok && f.ns > 0))
		snprintf(buf, n, "unresolved");
	else if (r->count)
		snprintf(buf, n, f.ns == floor(f.ns) ? "%.0f" : "%.6f", f.ns);
	else
		snprintf(buf, n, "%.1f", f.ns);
}

static void print_results(void)
{
	int i, w = 34, meets = 0, misses = 0, unresolved = 0, info = 0;
	char v[32], b[32], q[32];

	/* The metric column fits the longest name. */
	for (i = 0; i < nrows; i++)
		if ((int)strlen(rows[i].name) > w)
			w = strlen(rows[i].name);
	printf("\n%-*s %14s %14s %10s %7s  %s\n", w, "metric", "value", "baseline", "ratio",
	       "target", "verdict");
	for (i = 0; i < nrows; i++) {
		const struct row *r = &rows[i];
		const char *verdict = row_verdict(r);

		row_num(v, sizeof(v), r, r->value);
		row_num(b, sizeof(b), r, r->base);
		if (row_resolved(r))
			snprintf(q, sizeof(q), r->count ? "%.6fx" : "%.2fx", row_ratio(r));
		else
			snprintf(q, sizeof(q), "unresolved");
		printf("%-*s %14s %14s %10s %7s  %s\n", w, r->name, v, b, q,
		       r->target[0] ? r->target : "-", r->target[0] ? verdict : "informational");
		if (!strcmp(verdict, "meets"))
			meets++;
		else if (!strcmp(verdict, "MISSES"))
			misses++;
		else if (!strcmp(verdict, "unresolved"))
			unresolved++;
		else
			info++;
	}
	printf("%d meet their target, %d miss it, %d unresolved, %d informational\n\n", meets,
	       misses, unresolved, info);

	printf("MEMREG-CSV metric,value,baseline,ratio,target\n");
	for (i = 0; i < nrows; i++) {
		const struct row *r = &rows[i];

		if (!row_resolved(r)) {
			printf("MEMREG-CSV %s,unresolved,,,%s\n", r->name, r->target);
		} else if (r->count) {
			row_num(v, sizeof(v), r, r->value);
			row_num(b, sizeof(b), r, r->base);
			printf("MEMREG-CSV %s,%s,%s,%.6f,%s\n", r->name, v, b, row_ratio(r),
			       r->target);
		} else {
			printf("MEMREG-CSV %s,%.1f,%.1f,%.4f,%s\n", r->name, r->value.ns,
			       r->base.ns, row_ratio(r), r->target);
		}
	}
}

/* ---- Helpers ------------------------------------------------------------ */

/* Private anonymous memory in small pages, every page written. */
static char *map_touched(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	size_t i;

	if (p == MAP_FAILED)
		fail("mmap %zu MiB: %s", len / MIB, strerror(errno));
	/* Small pages: the per-page worst case for both sides. */
	madvise(p, len, MADV_NOHUGEPAGE);
	for (i = 0; i < len; i += PAGE)
		p[i] = 1;
	return p;
}

/*
 * Waits until `regions` registrations are alive in the module, counting
 * those whose pages a worker is still releasing, so that no teardown runs
 * during the next timed batch.
 */
static void settle(__u64 regions)
{
	struct memreg_global_stats g;
	int i, ret;

	for (i = 0; i < 2000; i++) {
		ret = mr_global_now(&g);
		if (ret)
			fail("GLOBAL_STATS: %s", strerror(-ret));
		if (g.regions == regions)
			return;
		usleep(5000);
	}
	fail("%llu registrations still alive after 10 s, expected %llu",
	     (unsigned long long)g.regions, (unsigned long long)regions);
}

static void register_or_die(int fd, void *addr, __u64 len, __u32 access, struct memreg_register *r)
{
	int ret = memreg_register(fd, addr, len, access, r);

	if (ret)
		fail("REGISTER %llu bytes: %s%s", (unsigned long long)len, strerror(-ret),
		     err_hint(-ret));
}

static void sizestr(char *buf, size_t n, size_t len)
{
	if (len >= GIB && !(len % GIB))
		snprintf(buf, n, "%zu GiB", len / GIB);
	else if (len >= MIB && !(len % MIB))
		snprintf(buf, n, "%zu MiB", len / MIB);
	else
		snprintf(buf, n, "%zu KiB", len / KIB);
}

/* No-op ioctl: GET_VERSION. */
struct noop_ctx {
	int fd;
	int err;
};

static void noop_run(void *arg, size_t n)
{
	struct noop_ctx *c = arg;
	__u32 version;
	size_t i;

	for (i = 0; i < n; i++)
		if (ioctl(c->fd, MEMREG_IOC_GET_VERSION, &version))
			c->err = errno;
}

static void noop_finish(void *arg, size_t n)
{
	struct noop_ctx *c = arg;

	(void)n;
	if (c->err)
		fail("GET_VERSION: %s", strerror(c->err));
}

static void noop_batch(struct batch *b, struct noop_ctx *c, int fd)
{
	c->fd = fd;
	c->err = 0;
	memset(b, 0, sizeof(*b));
	b->max_n = 1 << 24;
	b->run = noop_run;
	b->finish = noop_finish;
	b->arg = c;
}

/* ---- REGISTER miss against pin_user_pages_fast -------------------------- */

struct miss_ctx {
	int fd;
	size_t len;
	char *pool;		/* `chunks` adjacent ranges of `len` bytes */
	size_t chunks;
	__u64 *keys;
	size_t done;
	int err, cached;
};

static void pool_ensure(struct miss_ctx *m, size_t n, size_t max_n)
{
	if (n <= m->chunks)
		return;
	if (n < 2 * m->chunks)
		n = 2 * m->chunks < max_n ? 2 * m->chunks : max_n;
	if (m->pool)
		munmap(m->pool, m->chunks * m->len);
	m->pool = map_touched(n * m->len);
	m->chunks = n;
	m->keys = realloc(m->keys, n * sizeof(*m->keys));
	if (!m->keys)
		fail("out of memory");
}

static struct batch miss_b;

static void miss_prepare(void *arg, size_t n)
{
	pool_ensure(arg, n, miss_b.max_n);
}

/* n misses: each chunk is its own registration, none covering another. */
static void miss_run(void *arg, size_t n)
{
	struct miss_ctx *m = arg;
	size_t i;

	for (i = 0; i < n; i++) {
		struct memreg_register r = {
			.addr = (unsigned long)(m->pool + i * m->len),
			.length = m->len,
			.access = RW,
		};

		if (ioctl(m->fd, MEMREG_IOC_REGISTER, &r)) {
			m->err = errno;
			break;
		}
		m->keys[i] = r.lkey;
		m->cached |= r.flags & MEMREG_REGISTER_CACHED;
	}
	m->done = i;
}

static void miss_finish(void *arg, size_t n)
{
	struct miss_ctx *m = arg;
	size_t i;

	(void)n;
	for (i = 0; i < m->done; i++)
		if (memreg_deregister(m->fd, m->keys[i]))
			fail("DEREGISTER: %s", strerror(errno));
	if (m->err)
		fail("REGISTER of %zu bytes (registration %zu of a batch): %s%s", m->len, m->done + 1,
		     strerror(m->err), err_hint(m->err));
	if (m->cached)
		fail("REGISTER of a new %zu-byte range was a cache hit", m->len);
	settle(0);
}

/*
 * PIN_FAST_BENCHMARK, repeated over the pool's chunks until its readings add
 * up to clk.thr_ns. The kernel reports whole microseconds, truncated: each
 * reading is corrected by +0.5 us, and the figure is resolved when the
 * quantum (clk.kq_us) cannot move the mean by more than 1%: at worst (mean >=
 * 50 quanta), or statistically when the readings scatter over more than one
 * quantum.
 */
static struct fig measure_pin(int gup, struct miss_ctx *m)
{
	double sum = 0, sumsq = 0, mean, sd, q;
	int64_t wall0 = now_ns();
	char src[64];
	long k = 0;
	struct fig f;

	read_clocksource(src, sizeof(src));
	while (k < 1000000) {
		struct gup_test g = {
			.addr = (unsigned long)(m->pool + (k % m->chunks) * m->len),
			.size = m->len,
			.nr_pages_per_call = 512,
			.gup_flags = FOLL_WRITE | FOLL_LONGTERM,
		};
		double us;

		if (ioctl(gup, PIN_FAST_BENCHMARK, &g))
			fail("PIN_FAST_BENCHMARK: %s", strerror(errno));
		if (g.size != m->len)
			fail("PIN_FAST_BENCHMARK pinned %llu of %zu bytes",
			     (unsigned long long)g.size, m->len);
		us = g.get_delta_usec + 0.5;
		sum += us;
		sumsq += us * us;
		k++;
		if ((k >= 3 && sum * 1e3 >= clk.thr_ns) || now_ns() - wall0 > 20 * clk.thr_ns + 2e9)
			break;
	}
	mean = sum / k;
	sd = sqrt(fmax(sumsq / k - mean * mean, 0));
	q = clk.kq_us;
	f.ns = mean * 1e3;
	f.ok = clock_unchanged(src) && clk.ok && sum * 1e3 >= clk.thr_ns &&
	       (0.5 * q / mean <= 0.01 || (sd >= q && 0.3 * q / sqrt(k) / mean <= 0.01));
	return f;
}

static void bench_miss(int gup)
{
	static const struct {
		size_t len;
		const char *name, *target;
	} sizes[] = {
		{ 4 * KIB, "register_miss_per_page_4kib", "" },
		{ 64 * KIB, "register_miss_per_page_64kib", "" },
		{ 1 * MIB, "register_miss_per_page_1mib", "<=1.3" },
		{ 16 * MIB, "register_miss_per_page_16mib", "<=1.3" },
		{ 256 * MIB, "register_miss_per_page_256mib", "<=1.3" },
	};
	int fd = memreg_open();
	unsigned int i;

	if (fd < 0)
		fail("open /dev/memreg: %s", strerror(errno));
	/* Every REGISTER must be a miss: nothing parked to revive. */
	if (mr_set_parking(fd, 0))
		fail("SET_CACHE: %s", strerror(errno));
	printf("\nREGISTER miss vs pin_user_pages_fast, per page (pre-faulted small pages)\n");
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct miss_ctx m = { .fd = fd, .len = sizes[i].len };
		size_t pages = m.len / PAGE;
		struct fig pin[ROUNDS], miss[ROUNDS], p, w;
		struct memreg_register r;
		struct memreg_query q;
		int rounds = m.len >= 256 * MIB ? 3 : ROUNDS, k;
		char sz[32];

		memset(&miss_b, 0, sizeof(miss_b));
		miss_b.max_n = POOL_CAP / m.len ? POOL_CAP / m.len : 1;
		miss_b.prepare = miss_prepare;
		miss_b.run = miss_run;
		miss_b.finish = miss_finish;
		miss_b.arg = &m;
		pool_ensure(&m, 1, miss_b.max_n);

		/* Untimed: the translation entries one registration of this size gets. */
		register_or_die(fd, m.pool, m.len, RW, &r);
		if (r.flags & MEMREG_REGISTER_CACHED)
			fail("REGISTER of a new range was a cache hit");
		if (memreg_query(fd, r.lkey, &q))
			fail("QUERY: %s", strerror(errno));
		if (memreg_deregister(fd, r.lkey))
			fail("DEREGISTER: %s", strerror(errno));
		settle(0);

		for (k = 0; k < rounds; k++) {
			if (k % 2) {
				miss[k] = measure(&miss_b);
				pin[k] = measure_pin(gup, &m);
			} else {
				pin[k] = measure_pin(gup, &m);
				miss[k] = measure(&miss_b);
			}
		}
		p = per(median(pin, rounds), pages);
		w = per(median(miss, rounds), pages);
		sizestr(sz, sizeof(sz), m.len);
		printf("  %7s: miss %s, pin %s; %zu pages, %u extents, %zu registrations a batch\n",
		       sz, figstr(w, "ns/page"), figstr(p, "ns/page"), pages, q.extents, miss_b.n);
		add_row(sizes[i].name, w, p, sizes[i].target);
		munmap(m.pool, m.chunks * m.len);
		free(m.keys);
	}
	close(fd);
}

/* ---- REGISTER hit against a no-op ioctl --------------------------------- */

struct hit_ctx {
	int fd;
	char *buf;
	__u64 key;
	size_t refs;
	int err, bad;
};

static void hit_run(void *arg, size_t n)
{
	struct hit_ctx *c = arg;
	size_t i;

	for (i = 0; i < n; i++) {
		struct memreg_register h = {
			.addr = (unsigned long)c->buf + PAGE,
			.length = 4 * PAGE,
			.access = RO,
		};

		if (ioctl(c->fd, MEMREG_IOC_REGISTER, &h)) {
			c->err = errno;
			break;
		}
		c->refs++;
		/* A hit on the live registration, not a revival. */
		c->bad |= !(h.flags & MEMREG_REGISTER_CACHED) ||
			  (h.flags & MEMREG_REGISTER_REVIVED) || h.lkey != c->key;
	}
}

/* n REGISTER calls the kernel rejects at once (flags 1: EINVAL), after copying the argument in. */
static void rejected_run(void *arg, size_t n)
{
	struct hit_ctx *c = arg;
	size_t i;

	for (i = 0; i < n; i++) {
		struct memreg_register h = {
			.addr = (unsigned long)c->buf + PAGE,
			.length = 4 * PAGE,
			.access = RO,
			.flags = 1,
		};

		if (!ioctl(c->fd, MEMREG_IOC_REGISTER, &h) || errno != EINVAL) {
			c->bad = 1;
			break;
		}
	}
}

static void hit_finish(void *arg, size_t n)
{
	struct hit_ctx *c = arg;

	(void)n;
	for (; c->refs; c->refs--)
		if (memreg_deregister(c->fd, c->key))
			fail("DEREGISTER: %s", strerror(errno));
	if (c->err)
		fail("REGISTER hit: %s", strerror(c->err));
	if (c->bad)
		fail("REGISTER of a covered range was not served from the live registration");
}

static void bench_hit(void)
{
	struct hit_ctx c = { 0 };
	struct noop_ctx nc;
	struct batch hb = { .max_n = 1 << 24, .run = hit_run, .finish = hit_finish, .arg = &c };
	struct batch rb = { .max_n = 1 << 24, .run = rejected_run, .arg = &c };
	struct batch nb;
	struct fig hit[ROUNDS], noop[ROUNDS], rej[ROUNDS], h, z, x;
	struct memreg_register r;
	struct memreg_query q;
	struct memreg_stats s;
	int k;

	c.fd = memreg_open();
	if (c.fd < 0)
		fail("open /dev/memreg: %s", strerror(errno));
	c.buf = map_touched(16 * PAGE);
	register_or_die(c.fd, c.buf, 16 * PAGE, RW, &r);
	c.key = r.lkey;
	/* Live, with the one reference it keeps while every hit is timed. */
	if (memreg_query(c.fd, c.key, &q))
		fail("QUERY: %s", strerror(errno));
	if (q.refcount != 1 || q.state != MEMREG_STATE_VALID)
		fail("a new registration has refcount %u, state %#x", q.refcount, q.state);
	noop_batch(&nb, &nc, c.fd);
	for (k = 0; k < ROUNDS; k++) {
		if (k % 2) {
			hit[k] = measure(&hb);
			rej[k] = measure(&rb);
			noop[k] = measure(&nb);
		} else {
			noop[k] = measure(&nb);
			rej[k] = measure(&rb);
			hit[k] = measure(&hb);
		}
	}
	h = median(hit, ROUNDS);
	z = median(noop, ROUNDS);
	x = median(rej, ROUNDS);
	if (c.bad)
		fail("a malformed REGISTER was not refused with EINVAL, or a hit was not a hit");
	/* Every timed REGISTER was a hit on the live registration: none parked or revived. */
	if (memreg_stats(c.fd, &s))
		fail("STATS: %s", strerror(errno));
	if (s.parks || s.revives || s.cache_misses != 1)
		fail("the hit loop parked %llu, revived %llu, missed %llu times",
		     (unsigned long long)s.parks, (unsigned long long)s.revives,
		     (unsigned long long)s.cache_misses);
	printf("\nREGISTER hit (live registration) vs no-op ioctl\n"
	       "  REGISTER hit %s, GET_VERSION %s\n", figstr(h, "ns"), figstr(z, "ns"));
	printf("  REGISTER refused before any work (its %zu-byte argument copied in) %s\n",
	       sizeof(struct memreg_register), figstr(x, "ns"));
	add_row("register_hit_ioctl", h, z, "<=1.2");
	add_row("register_rejected_ioctl", x, z, "");
	/* memreg's own work on a hit: the ioctl floor with the same argument is the baseline. */
	add_row("register_hit_ioctl_vs_rejected_ioctl", h, x, "<=1.3");
	if (memreg_deregister(c.fd, c.key))
		fail("DEREGISTER: %s", strerror(errno));
	munmap(c.buf, 16 * PAGE);
	close(c.fd);
}

/* ---- A user-space cache hit validated by the state word ------------------ */

/* One entry of a user-space registration cache. */
struct uhit_entry {
	__u64 addr, len, lkey, generation;
	__u32 slot;
};

struct uhit_ctx {
	const __u64 *words;		/* the state words, mapped read-only */
	const struct uhit_entry *cache;	/* indexed by slot */
	__u32 slot;			/* where the looked-up range's entry is */
	__u64 addr, len;		/* the range looked up */
	size_t bad;
};

static volatile __u64 uhit_sink;

/* n hits, no system call. */
static void uhit_run(void *arg, size_t n)
{
	struct uhit_ctx *c = arg;
	__u64 acc = 0;
	size_t bad = 0, i;

	for (i = 0; i < n; i++) {
		const struct uhit_entry *e;

		/* Nothing read by the previous hit stays in a register. */
		asm volatile("" ::: "memory");
		e = &c->cache[c->slot];
		if (e->addr <= c->addr && c->addr + c->len <= e->addr + e->len &&
		    __atomic_load_n(&c->words[e->slot], __ATOMIC_ACQUIRE) == e->generation)
			acc += e->lkey;
		else
			bad++;
	}
	uhit_sink = acc;
	c->bad += bad;
}

static void uhit_finish(void *arg, size_t n)
{
	struct uhit_ctx *c = arg;

	(void)n;
	if (c->bad)
		fail("%zu user-space cache hits of a live registration did not validate", c->bad);
}

static void bench_userspace_hit(void)
{
	struct uhit_ctx c = { 0 };
	struct noop_ctx nc;
	struct batch ub = { .max_n = (size_t)1 << 32, .run = uhit_run, .finish = uhit_finish,
			    .arg = &c };
	struct batch nb;
	struct fig hit[ROUNDS], noop[ROUNDS], h, z;
	struct uhit_entry *cache;
	struct memreg_register r;
	size_t nslots = PAGE / sizeof(__u64);
	__u64 *words, w;
	char *buf;
	int fd, k;

	fd = memreg_open();
	if (fd < 0)
		fail("open /dev/memreg: %s", strerror(errno));
	/* The state words first: only registrations made afterwards get a slot. */
	words = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_STATE_WORDS);
	if (words == MAP_FAILED)
		fail("mmap of the state words: %s", strerror(errno));
	cache = calloc(nslots, sizeof(*cache));
	if (!cache)
		fail("out of memory");
	buf = map_touched(16 * PAGE);
	register_or_die(fd, buf, 16 * PAGE, RW, &r);
	if (r.slot == MEMREG_NO_SLOT)
		fail("REGISTER with the state words mapped returned no slot");
	if (r.slot >= nslots)
		fail("REGISTER returned slot %u, past the %zu words mapped", r.slot, nslots);
	if (!r.generation || r.generation % 4)
		fail("REGISTER returned generation %#llx, not a nonzero multiple of 4",
		     (unsigned long long)r.generation);
	w = __atomic_load_n(&words[r.slot], __ATOMIC_ACQUIRE);
	if (w != r.generation)
		fail("state word %u of a new registration is %#llx, not its generation %#llx",
		     r.slot, (unsigned long long)w, (unsigned long long)r.generation);
	cache[r.slot] = (struct uhit_entry){ r.region_addr, r.region_length, r.lkey,
					     r.generation, r.slot };
	c.words = words;
	c.cache = cache;
	c.slot = r.slot;
	/* A range inside the registration, as a cache hit asks for. */
	c.addr = (unsigned long)buf + PAGE;
	c.len = 4 * PAGE;
	noop_batch(&nb, &nc, fd);
	for (k = 0; k < ROUNDS; k++) {
		if (k % 2) {
			hit[k] = measure(&ub);
			noop[k] = measure(&nb);
		} else {
			noop[k] = measure(&nb);
			hit[k] = measure(&ub);
		}
	}
	h = median(hit, ROUNDS);
	z = median(noop, ROUNDS);
	printf("\nUser-space cache hit validated by the state word vs no-op ioctl\n"
	       "  slot %u, generation %#llx: hit %s, GET_VERSION %s, %zu hits a batch\n", r.slot,
	       (unsigned long long)r.generation, figstr(h, "ns"), figstr(z, "ns"), ub.n);
	add_row("userspace_hit_vs_noop_ioctl", h, z, "<=0.1");

	/* Ended, the registration must fail the same check. */
	if (memreg_deregister(fd, r.lkey))
		fail("DEREGISTER: %s", strerror(errno));
	if (memreg_flush(fd, NULL))
		fail("FLUSH: %s", strerror(errno));
	w = __atomic_load_n(&words[r.slot], __ATOMIC_ACQUIRE);
	if (w == r.generation)
		fail("state word %u still equals the generation after the registration ended",
		     r.slot);
	munmap(words, PAGE);
	munmap(buf, 16 * PAGE);
	free(cache);
	close(fd);
	settle(0);
}

/* ---- REGISTER + DEREGISTER loop, parking off and on ---------------------- */

static void bench_watch(void);

#define LOOP_LEN	MIB

/* A loop over one buffer on one file, parking on or off. */
struct loop_ctx {
	int fd;
	int parking;
	__u32 flags;				/* REGISTER's: 0 or MEMREG_REGISTER_WATCH */
	char *buf;
	struct memreg_cache_config saved;	/* the file's configuration at open */
	const char *op;
	int err, bad;
};

static void loop_open(struct loop_ctx *c, int parking)
{
	struct memreg_cache_config cfg;
	size_t pages = LOOP_LEN / PAGE;

	memset(c, 0, sizeof(*c));
	c->parking = parking;
	c->fd = memreg_open();
	if (c->fd < 0)
		fail("open /dev/memreg: %s", strerror(errno));
	if (memreg_get_cache(c->fd, &c->saved))
		fail("GET_CACHE: %s", strerror(errno));
	cfg = c->saved;
	cfg.parking = parking;
	/* Room for the one registration, should the module's defaults be smaller. */
	if (parking && cfg.max_parked < 1)
		cfg.max_parked = 1;
	if (parking && cfg.max_parked_pages < pages)
		cfg.max_parked_pages = pages;
	if (memreg_set_cache(c->fd, &cfg))
		fail("SET_CACHE: %s", strerror(errno));
	c->buf = map_touched(LOOP_LEN);
}

static void loop_close(struct loop_ctx *c)
{
	struct memreg_stats s;

	/* The configuration it opened with, then nothing left parked. */
	if (memreg_set_cache(c->fd, &c->saved))
		fail("SET_CACHE: %s", strerror(errno));
	if (memreg_flush(c->fd, NULL))
		fail("FLUSH: %s", strerror(errno));
	if (memreg_stats(c->fd, &s))
		fail("STATS: %s", strerror(errno));
	if (s.registrations)
		fail("%llu registrations alive after FLUSH", (unsigned long long)s.registrations);
	munmap(c->buf, LOOP_LEN);
	close(c->fd);
}

/* Parking on: makes sure the registration is parked, so the first REGISTER revives. */
static void loop_prepare(void *arg, size_t n)
{
	struct loop_ctx *c = arg;
	struct memreg_register r;
	struct memreg_stats s;

	(void)n;
	if (!c->parking)
		return;
	register_or_die(c->fd, c->buf, LOOP_LEN, RW, &r);
	if (memreg_deregister(c->fd, r.lkey))
		fail("DEREGISTER: %s", strerror(errno));
	if (memreg_stats(c->fd, &s))
		fail("STATS: %s", strerror(errno));
	if (s.parked != 1 || s.registrations != 1)
		fail("DEREGISTER with parking on left %llu parked of %llu registrations, "
		     "expected 1 of 1", (unsigned long long)s.parked,
		     (unsigned long long)s.registrations);
}

/* n times REGISTER + DEREGISTER of the whole buffer. */
static void loop_run(void *arg, size_t n)
{
	struct loop_ctx *c = arg;
	size_t i;

	for (i = 0; i < n; i++) {
		struct memreg_register r = {
			.addr = (unsigned long)c->buf,
			.length = LOOP_LEN,
			.access = RW,
			.flags = c->flags,
		};
		struct memreg_deregister d = { 0 };

		if (ioctl(c->fd, MEMREG_IOC_REGISTER, &r)) {
			c->op = "REGISTER";
			c->err = errno;
			break;
		}
		/* Parking on: a revival; off: a miss, which pins (or watches). */
		c->bad |= c->parking ? !(r.flags & MEMREG_REGISTER_REVIVED) : r.flags != c->flags;
		d.key = r.lkey;
		if (ioctl(c->fd, MEMREG_IOC_DEREGISTER, &d)) {
			c->op = "DEREGISTER";
			c->err = errno;
			break;
		}
	}
}

static void loop_finish(void *arg, size_t n)
{
	struct loop_ctx *c = arg;
	struct memreg_stats s;

	(void)n;
	if (c->err)
		fail("%s of 1 MiB with parking %s: %s%s", c->op, c->parking ? "on" : "off",
		     strerror(c->err), err_hint(c->err));
	if (c->bad)
		fail(c->parking ? "REGISTER of a parked registration's range did not revive it" :
		     "REGISTER with parking off was served from the cache");
	if (memreg_stats(c->fd, &s))
		fail("STATS: %s", strerror(errno));
	/* Parking on: parked again; off: ended, its pages unpinned. */
	if (s.registrations != (__u64)c->parking || s.parked != (__u64)c->parking)
		fail("after the loop with parking %s: %llu registrations, %llu parked",
		     c->parking ? "on" : "off", (unsigned long long)s.registrations,
		     (unsigned long long)s.parked);
}

static void bench_park(void)
{
	struct loop_ctx off, on;
	struct noop_ctx nc;
	struct batch b[3];
	struct fig f[3][ROUNDS], m[3], two;
	int i, k;

	loop_open(&off, 0);
	loop_open(&on, 1);
	for (i = 0; i < 2; i++)
		b[i] = (struct batch){ .max_n = 1 << 24, .prepare = loop_prepare, .run = loop_run,
				       .finish = loop_finish, .arg = i ? &on : &off };
	noop_batch(&b[2], &nc, on.fd);
	/* Rounds rotate the order, so a drift in the emulator's speed hits all alike. */
	for (k = 0; k < ROUNDS; k++)
		for (i = 0; i < 3; i++) {
			int x = (i + k) % 3;

			f[x][k] = measure(&b[x]);
		}
	for (i = 0; i < 3; i++)
		m[i] = median(f[i], ROUNDS);
	two = m[2];
	two.ns *= 2;
	printf("\nREGISTER + DEREGISTER of 1 MiB in a loop, parking off vs on\n"
	       "  parking off (pin + unpin) %s, parking on (revive + park) %s, GET_VERSION %s\n",
	       figstr(m[0], "ns"), figstr(m[1], "ns"), figstr(m[2], "ns"));
	add_row("reg_dereg_loop_1mib_speedup", m[1], m[0], ">=20");
	add_row("revive_vs_noop_ioctl", m[1], two, "<=1.2");
	loop_close(&on);
	loop_close(&off);
	bench_watch();
}

/*
 * REGISTER + DEREGISTER of the same touched 1 MiB, parking off: a watch-only
 * miss (frames recorded, nothing pinned or charged) against a pinned miss
 * (pin, charge, unpin, uncharge), on files of their own, rounds rotated.
 */
static void bench_watch(void)
{
	struct loop_ctx pinned, watched;
	struct batch b[2];
	struct fig f[2][ROUNDS], m[2];
	int i, k;

	loop_open(&pinned, 0);
	loop_open(&watched, 0);
	watched.flags = MEMREG_REGISTER_WATCH;
	for (i = 0; i < 2; i++)
		b[i] = (struct batch){ .max_n = 1 << 24, .run = loop_run, .finish = loop_finish,
				       .arg = i ? &pinned : &watched };
	for (k = 0; k < ROUNDS; k++)
		for (i = 0; i < 2; i++) {
			int x = (i + k) % 2;

			f[x][k] = measure(&b[x]);
		}
	for (i = 0; i < 2; i++)
		m[i] = median(f[i], ROUNDS);
	printf("\nREGISTER + DEREGISTER of 1 MiB, watch-only vs pinned (parking off)\n"
	       "  watch-only %s, pinned %s\n", figstr(m[0], "ns"), figstr(m[1], "ns"));
	add_row("watch_register_vs_pinned_register_1mib", m[0], m[1], "<=0.2");
	loop_close(&watched);
	loop_close(&pinned);
	settle(0);
}

/* ---- munmap of a registered range --------------------------------------- */

/*
 * n mappings of 1 MiB, each its own VMA between PROT_NONE guard pages, so a
 * timed munmap removes one whole VMA and splits nothing.
 */
struct unmap_ctx {
	int fd;
	int registered;
	char *area;
	size_t area_len;
	size_t mapped;
};

#define UNMAP_LEN	MIB
#define UNMAP_SLOT	(UNMAP_LEN + PAGE)

static char *unmap_piece(struct unmap_ctx *c, size_t i)
{
	return c->area + PAGE + i * UNMAP_SLOT;
}

static void unmap_prepare(void *arg, size_t n)
{
	struct unmap_ctx *c = arg;
	size_t i, j;

	c->area_len = PAGE + n * UNMAP_SLOT;
	c->area = mmap(NULL, c->area_len, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (c->area == MAP_FAILED)
		fail("mmap: %s", strerror(errno));
	for (i = 0; i < n; i++) {
		char *p = mmap(unmap_piece(c, i), UNMAP_LEN, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);

		if (p == MAP_FAILED)
			fail("mmap: %s", strerror(errno));
		madvise(p, UNMAP_LEN, MADV_NOHUGEPAGE);
		for (j = 0; j < UNMAP_LEN; j += PAGE)
			p[j] = 1;
		if (c->registered) {
			struct memreg_register r;

			register_or_die(c->fd, p, UNMAP_LEN, RW, &r);
		}
	}
	c->mapped = n;
}

static void unmap_run(void *arg, size_t n)
{
	struct unmap_ctx *c = arg;
	size_t i;

	for (i = 0; i < n; i++)
		munmap(unmap_piece(c, i), UNMAP_LEN);
}

static void unmap_finish(void *arg, size_t n)
{
	struct unmap_ctx *c = arg;
	struct memreg_stats s;

	(void)n;
	munmap(c->area, c->area_len);
	if (c->registered) {
		/* Invalidated registrations are torn down by a worker: let it finish. */
		settle(0);
		if (memreg_stats(c->fd, &s))
			fail("STATS: %s", strerror(errno));
		if (s.registrations)
			fail("munmap left %llu registrations alive",
			     (unsigned long long)s.registrations);
	}
}

static void bench_munmap(void)
{
	struct unmap_ctx plain = { 0 }, reg = { .registered = 1 };
	struct batch pb = { .max_n = POOL_CAP / MIB, .prepare = unmap_prepare, .run = unmap_run,
			    .finish = unmap_finish, .arg = &plain };
	struct batch rb = pb;
	struct fig p[ROUNDS], r[ROUNDS], a, b;
	int k;

	reg.fd = memreg_open();
	if (reg.fd < 0)
		fail("open /dev/memreg: %s", strerror(errno));
	rb.arg = &reg;
	for (k = 0; k < ROUNDS; k++) {
		if (k % 2) {
			r[k] = measure(&rb);
			p[k] = measure(&pb);
		} else {
			p[k] = measure(&pb);
			r[k] = measure(&rb);
		}
	}
	a = median(r, ROUNDS);
	b = median(p, ROUNDS);
	printf("\nmunmap of 1 MiB, registered vs not\n  registered %s, unregistered %s\n",
	       figstr(a, "ns"), figstr(b, "ns"));
	add_row("munmap_registered_1mib", a, b, "<=1.5");
	close(reg.fd);
}

/* ---- The data path: requests through a queue ----------------------------- */

/*
 * One queue of the file, mapped, and what the program has consumed of it.
 * Requests are COPYs of `len` bytes; their completions come back in order
 * (one queue, executed in order), each checked: user_data the next expected,
 * status 0, bytes == len.
 */
struct ring {
	int fd;
	__u32 q, sq_entries, cq_entries;
	struct memreg_sq_user *su;		/* read-write: insert, cq_head, cq_arm */
	const struct memreg_cq_ring *cr;	/* read-only: sq_head, cq_tail, flags */
	struct memreg_sq_slot *slots;
	const struct memreg_cqe *cqes;
	size_t sq_bytes, cq_bytes;
	__u32 head;		/* completions consumed, as stored in cq_head */
	__u64 posted;		/* user_data of the next request */
	__u64 reaped;		/* user_data the next completion must carry */
	__u64 doorbells;	/* DOORBELL calls made */
	__u64 len;		/* bytes each request moves */
	/*
	 * Posting a batch: the doorbell rule is applied once, after the whole
	 * batch is published, to all its positions (as memreg_submit_batch()
	 * does), so a doorbell that serves the queue in the caller serves the
	 * batch, not its first request.
	 */
	int batching;
	__u64 batch_pos;	/* the batch's first position */
	unsigned int batch_n;	/* requests published in the batch */
};

#define RING_SQ		256
#define RING_CQ		1024
#define RING_BUF	(512 * KIB)
/* Requests of the saturation run, and how many are posted at a time. */
#define SAT_REQUESTS	100000
#define SAT_BATCH	32

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	asm volatile("pause" ::: "memory");
#else
	asm volatile("" ::: "memory");
#endif
}

static void ring_open(struct ring *r, int fd)
{
	struct memreg_queue_create c = {
		.sq_entries = RING_SQ,
		.cq_entries = RING_CQ,
		.eventfd = -1,
	};
	void *p;

	memset(r, 0, sizeof(*r));
	r->fd = fd;
	if (ioctl(fd, MEMREG_IOC_QUEUE_CREATE, &c))
		fail("QUEUE_CREATE: %s", strerror(errno));
	r->q = c.queue;
	r->sq_bytes = c.sq_bytes;
	r->cq_bytes = c.cq_bytes;
	p = mmap(NULL, c.sq_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, MEMREG_MMAP_SQ(c.queue));
	if (p == MAP_FAILED)
		fail("mmap of the submission ring: %s", strerror(errno));
	r->su = p;
	r->slots = (struct memreg_sq_slot *)((char *)p + MEMREG_SQ_SLOTS_OFFSET);
	p = mmap(NULL, c.cq_bytes, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_CQ(c.queue));
	if (p == MAP_FAILED)
		fail("mmap of the completion ring: %s", strerror(errno));
	r->cr = p;
	r->cqes = (const struct memreg_cqe *)((const char *)p + MEMREG_CQ_ENTRIES_OFFSET);
	r->sq_entries = r->cr->sq_entries;
	r->cq_entries = r->cr->cq_entries;
	if (r->sq_entries != RING_SQ || r->cq_entries != RING_CQ)
		fail("a queue of %u/%u entries reports %u/%u", RING_SQ, RING_CQ, r->sq_entries,
		     r->cq_entries);
}

static void ring_close(struct ring *r)
{
	munmap(r->su, r->sq_bytes);
	munmap((void *)r->cr, r->cq_bytes);
}

static void ring_doorbell(struct ring *r)
{
	struct memreg_doorbell d = { .queue = r->q };

	if (ioctl(r->fd, MEMREG_IOC_DOORBELL, &d))
		fail("DOORBELL: %s", strerror(errno));
	r->doorbells++;
}

static void queue_stats(int fd, struct memreg_queue_stats *s)
{
	memset(s, 0, sizeof(*s));
	if (ioctl(fd, MEMREG_IOC_QUEUE_STATS, s))
		fail("QUEUE_STATS: %s", strerror(errno));
}

/*
 * The doorbell rule for a request published at `pos`: after a full barrier,
 * ring when the worker sleeps and `pos` is the next slot it takes.
 */
static void ring_rule(struct ring *r, __u64 pos)
{
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	if ((__atomic_load_n(&r->cr->flags, __ATOMIC_RELAXED) & MEMREG_QUEUE_NEED_WAKEUP) &&
	    __atomic_load_n(&r->cr->sq_head, __ATOMIC_RELAXED) == pos)
		ring_doorbell(r);
}

/*
 * Claims the next slot with the lock-free protocol: the slot, its position
 * in *posp; NULL when the submission ring is full.
 */
static struct memreg_sq_slot *ring_claim(struct ring *r, __u64 *posp)
{
	__u64 pos = __atomic_load_n(&r->su->insert, __ATOMIC_RELAXED), seq;
	struct memreg_sq_slot *s;

	for (;;) {
		s = &r->slots[pos & (r->sq_entries - 1)];
		seq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
		if (seq == pos) {
			/* Free: claim it. On failure, pos gets the value found. */
			if (__atomic_compare_exchange_n(&r->su->insert, &pos, pos + 1, 0,
							__ATOMIC_RELAXED, __ATOMIC_RELAXED))
				break;
			continue;
		}
		/* Still holding the previous lap's descriptor: full. */
		if ((__s64)(seq - pos) < 0)
			return NULL;
		/* Another poster took it. */
		pos = __atomic_load_n(&r->su->insert, __ATOMIC_RELAXED);
	}
	*posp = pos;
	return s;
}

/*
 * Publishes slot `s` at `pos`, then applies the doorbell rule (or, in a
 * batch, leaves it to ring_submit()).
 */
static void ring_publish(struct ring *r, struct memreg_sq_slot *s, __u64 pos)
{
	__atomic_store_n(&s->seq, pos + 1, __ATOMIC_RELEASE);
	if (r->batching) {
		if (!r->batch_n++)
			r->batch_pos = pos;
		return;
	}
	ring_rule(r, pos);
}

/*
 * Posts a COPY of r->len bytes from (src, soff) to (dst, doff) with the
 * lock-free protocol, and rings the doorbell when the rule says so (at
 * ring_submit() in a batch); 0 when the submission ring is full (nothing
 * posted).
 */
static int ring_post_copy(struct ring *r, __u64 dst, __u64 doff, __u64 src, __u64 soff)
{
	struct memreg_sq_slot *s;
	__u64 pos;

	s = ring_claim(r, &pos);
	if (!s)
		return 0;
	s->sqe = (struct memreg_sqe){
		.opcode = MEMREG_OP_COPY,
		.user_data = r->posted++,
		.key = dst,
		.offset = doff,
		.src_key = src,
		.src_offset = soff,
		.length = r->len,
	};
	ring_publish(r, s, pos);
	return 1;
}

/* Starts a batch: the posts that follow ring no doorbell until ring_submit(). */
static void ring_batch(struct ring *r)
{
	r->batching = 1;
	r->batch_n = 0;
}

/*
 * Ends a batch: the doorbell rule, once, for all its positions (this
 * program's only poster took them in a row): ring when the worker sleeps
 * and sq_head is any of them, as memreg_submit_batch() does. Checking only
 * the first would strand the batch's rest when a doorbell serving the queue
 * in its caller took the first ones before the others were published.
 */
static void ring_submit(struct ring *r)
{
	__u64 head;

	r->batching = 0;
	if (!r->batch_n)
		return;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	head = __atomic_load_n(&r->cr->sq_head, __ATOMIC_RELAXED);
	if ((__atomic_load_n(&r->cr->flags, __ATOMIC_RELAXED) & MEMREG_QUEUE_NEED_WAKEUP) &&
	    head - r->batch_pos < r->batch_n)
		ring_doorbell(r);
	r->batch_n = 0;
}

/* Consumes the completions there are, checking each; returns how many. */
static __u32 ring_reap(struct ring *r)
{
	__u32 tail = __atomic_load_n(&r->cr->cq_tail, __ATOMIC_ACQUIRE), n = 0;

	while (r->head != tail) {
		const struct memreg_cqe *c = &r->cqes[r->head & (r->cq_entries - 1)];

		if (c->user_data != r->reaped || c->status || c->bytes != r->len)
			fail("completion %llu: user_data %llu, status %d (%s), %llu bytes; "
			     "expected user_data %llu, status 0, %llu bytes",
			     (unsigned long long)r->head, (unsigned long long)c->user_data,
			     c->status, strerror(-c->status), (unsigned long long)c->bytes,
			     (unsigned long long)r->reaped, (unsigned long long)r->len);
		r->reaped++;
		r->head++;
		n++;
	}
	if (n) {
		/* The entries are read: the kernel may write them again. */
		__atomic_store_n(&r->su->cq_head, r->head, __ATOMIC_RELEASE);
		__atomic_thread_fence(__ATOMIC_SEQ_CST);
		if (__atomic_load_n(&r->cr->flags, __ATOMIC_RELAXED) & MEMREG_QUEUE_CQ_FULL)
			ring_doorbell(r);
	}
	return n;
}

/*
 * One step of waiting for completions: spins, and yields the CPU now and
 * then (the worker may be queued on this one). Fails after 10 s without a
 * completion.
 */
static void ring_idle(struct ring *r, unsigned long *spins, int64_t *since)
{
	if (++*spins % 1024) {
		cpu_relax();
		return;
	}
	sched_yield();
	if (*spins % (64 * 1024))
		return;
	if (!*since) {
		*since = now_ns();
	} else if (now_ns() - *since > 10000 * MS) {
		struct memreg_queue_stats s;

		queue_stats(r->fd, &s);
		fail("no completion for 10 s: %llu posted, %llu completed (sq_head %llu, "
		     "cq_tail %u, flags %#x; worker: %llu requests, %llu completions)",
		     (unsigned long long)r->posted, (unsigned long long)r->reaped,
		     (unsigned long long)r->cr->sq_head, r->cr->cq_tail, r->cr->flags,
		     (unsigned long long)s.requests, (unsigned long long)s.completions);
	}
}

/* Reaps until every request posted has completed. */
static void ring_drain(struct ring *r)
{
	unsigned long spins = 0;
	int64_t since = 0;

	while (r->reaped != r->posted)
		if (ring_reap(r)) {
			spins = 0;
			since = 0;
		} else {
			ring_idle(r, &spins, &since);
		}
}

/* Two registrations of one context for the ring, a user buffer for the ioctl. */
struct ring_ctx {
	struct ring r;
	__u64 src, dst;		/* local keys, RING_BUF bytes each */
	char *src_buf, *dst_buf, *ubuf;
	__u64 len;		/* bytes a request moves */
	size_t next;		/* position in the buffers, in requests */
};

/* The timed runs of one batch size on the shared queue. */
struct ring_run {
	struct ring_ctx *c;
	unsigned int batch;	/* requests posted before waiting */
	__u64 requests, doorbells;	/* what the timed runs did */
};

static __u64 ring_offset(struct ring_ctx *c)
{
	size_t slots = RING_BUF / c->len;

	return (c->next++ % slots) * c->len;
}

/* One operation: `batch` COPYs posted, then reaped until all completed. */
static void ring_copy_run(void *arg, size_t n)
{
	struct ring_run *rr = arg;
	struct ring_ctx *c = rr->c;
	__u64 bells = c->r.doorbells;
	size_t i;
	unsigned int j;

	c->r.len = c->len;
	for (i = 0; i < n; i++) {
		ring_batch(&c->r);
		for (j = 0; j < rr->batch; j++) {
			__u64 off = ring_offset(c);

			if (!ring_post_copy(&c->r, c->dst, off, c->src, off))
				fail("the submission ring (%u entries) was full with %u requests "
				     "posted", c->r.sq_entries, j);
		}
		ring_submit(&c->r);
		ring_drain(&c->r);
	}
	rr->requests += (__u64)n * rr->batch;
	rr->doorbells += c->r.doorbells - bells;
}

/* The baseline: one COPY ioctl per request, from the user buffer. */
struct copy_ioctl_ctx {
	struct ring_ctx *rc;
	int err;
};

static void copy_ioctl_run(void *arg, size_t n)
{
	struct copy_ioctl_ctx *x = arg;
	struct ring_ctx *c = x->rc;
	size_t i;

	for (i = 0; i < n; i++) {
		__u64 off = ring_offset(c);
		struct memreg_copy cp = {
			.key = c->dst,
			.offset = off,
			.length = c->len,
			.buf = (unsigned long)(c->ubuf + off),
			.direction = MEMREG_COPY_TO_REGION,
		};

		if (ioctl(c->r.fd, MEMREG_IOC_COPY, &cp)) {
			x->err = errno;
			break;
		}
	}
}

static void copy_ioctl_finish(void *arg, size_t n)
{
	struct copy_ioctl_ctx *x = arg;

	(void)n;
	if (x->err)
		fail("COPY of %llu bytes: %s", (unsigned long long)x->rc->len, strerror(x->err));
}

#define RING_BATCHES	4

/* Requests per second of a figure in ns a request, for the progress lines. */
static const char *ratestr(struct fig f)
{
	static char buf[4][40];
	static int next;
	char *b = buf[next++ % 4];

	if (f.ok && f.ns > 0 && isfinite(f.ns))
		snprintf(b, sizeof(buf[0]), "%.0f requests/s", 1e9 / f.ns);
	else
		snprintf(b, sizeof(buf[0]), "unresolved");
	return b;
}

static const unsigned int ring_batches[RING_BATCHES] = { 1, 8, 32, 128 };

/*
 * Ring against ioctl for one request size: the ioctl and the four batch
 * sizes measured in an order that rotates from round to round. Returns the
 * batch-1 figure and the ioctl's, per request, for the round trip.
 */
static void bench_ring_size(struct ring_ctx *c, __u64 len, const char *tag, struct fig *rt,
			    struct fig *io)
{
	struct ring_run rr[RING_BATCHES];
	struct copy_ioctl_ctx x = { .rc = c };
	struct batch b[RING_BATCHES + 1];
	struct fig f[RING_BATCHES + 1][ROUNDS], m[RING_BATCHES + 1];
	char name[48];
	int i, k;

	c->len = len;
	for (i = 0; i < RING_BATCHES; i++) {
		rr[i] = (struct ring_run){ .c = c, .batch = ring_batches[i] };
		b[i] = (struct batch){ .max_n = 1 << 20, .run = ring_copy_run, .arg = &rr[i] };
	}
	b[RING_BATCHES] = (struct batch){ .max_n = 1 << 24, .run = copy_ioctl_run,
					  .finish = copy_ioctl_finish, .arg = &x };
	/* Rounds rotate the order, so a drift in the emulator's speed hits all alike. */
	for (k = 0; k < ROUNDS; k++)
		for (i = 0; i <= RING_BATCHES; i++) {
			int y = (i + k) % (RING_BATCHES + 1);

			f[y][k] = measure(&b[y]);
		}
	m[RING_BATCHES] = median(f[RING_BATCHES], ROUNDS);
	printf("  %s: COPY ioctl %s a request (%s)\n", tag, figstr(m[RING_BATCHES], "ns"),
	       ratestr(m[RING_BATCHES]));
	for (i = 0; i < RING_BATCHES; i++) {
		m[i] = per(median(f[i], ROUNDS), ring_batches[i]);
		printf("  %s, batches of %3u: ring %s a request (%s), %.4f doorbells a request\n",
		       tag, ring_batches[i], figstr(m[i], "ns"), ratestr(m[i]),
		       rr[i].requests ? (double)rr[i].doorbells / rr[i].requests : 0);
		snprintf(name, sizeof(name), "ring_copy_%s_batch%u_speedup", tag, ring_batches[i]);
		add_row(name, m[i], m[RING_BATCHES],
			!strcmp(tag, "64b") && ring_batches[i] == 32 ? ">=3" : "");
	}
	if (!strcmp(tag, "64b")) {
		/*
		 * A batch of one rings the doorbell every time (the worker stays
		 * asleep), which serves it in the caller: the round trip of a
		 * request executed inline against the same COPY as an ioctl.
		 */
		if (rr[0].requests && rr[0].doorbells * 10 < rr[0].requests * 9)
			printf("  only %.2f doorbells a request in batches of 1: the worker, "
			       "not the doorbell, served the rest\n",
			       (double)rr[0].doorbells / rr[0].requests);
		add_row("ring_doorbell_inline_round_trip_vs_ioctl", m[0], m[RING_BATCHES], "<=1.2");
	}
	*rt = m[0];
	*io = m[RING_BATCHES];
}

/*
 * Saturation: SAT_REQUESTS 64-byte COPYs posted continuously, SAT_BATCH at a
 * time, by one thread that reaps between batches (never more outstanding
 * than the completion ring holds); doorbells per request from QUEUE_STATS.
 */
static struct fig ring_saturate(struct ring_ctx *c, struct fig *ns)
{
	struct memreg_queue_stats s0, s1;
	__u64 bells = c->r.doorbells, start = c->r.posted, end = start + SAT_REQUESTS;
	unsigned long spins = 0;
	int64_t since = 0, t0;
	struct fig f = { 0, 1 };
	unsigned int j;
	char src[64];

	c->len = 64;
	c->r.len = 64;
	queue_stats(c->r.fd, &s0);
	read_clocksource(src, sizeof(src));
	t0 = now_ns();
	while (c->r.reaped != end) {
		int progress = 0;

		if (c->r.posted != end && c->r.posted - c->r.reaped + SAT_BATCH <= c->r.cq_entries) {
			ring_batch(&c->r);
			for (j = 0; j < SAT_BATCH && c->r.posted != end; j++) {
				__u64 off = ring_offset(c);

				if (!ring_post_copy(&c->r, c->dst, off, c->src, off))
					break;	/* full: reap first */
				progress = 1;
			}
			ring_submit(&c->r);
		}
		if (ring_reap(&c->r))
			progress = 1;
		if (progress) {
			spins = 0;
			since = 0;
		} else {
			ring_idle(&c->r, &spins, &since);
		}
	}
	t0 = now_ns() - t0;
	ns->ns = (double)t0 / SAT_REQUESTS;
	ns->ok = clock_unchanged(src) && clk.ok && t0 >= clk.thr_ns;
	queue_stats(c->r.fd, &s1);
	if (s1.doorbells - s0.doorbells != c->r.doorbells - bells)
		fail("QUEUE_STATS counted %llu doorbells, the program rang %llu",
		     (unsigned long long)(s1.doorbells - s0.doorbells),
		     (unsigned long long)(c->r.doorbells - bells));
	if (s1.completions - s0.completions != SAT_REQUESTS || s1.errors != s0.errors)
		fail("QUEUE_STATS counted %llu completions (%llu errors) for %u requests",
		     (unsigned long long)(s1.completions - s0.completions),
		     (unsigned long long)(s1.errors - s0.errors), SAT_REQUESTS);
	f.ns = (double)(s1.doorbells - s0.doorbells) / SAT_REQUESTS;
	return f;
}

static void bench_ring(void)
{
	struct ring_ctx c = { 0 };
	struct memreg_register r;
	struct memreg_queue_stats s;
	struct fig rt, io, dpr[ROUNDS], sat[ROUNDS], d, t;
	size_t i;
	int fd, k;

	printf("\nRequests through a queue (COPY between two registrations) vs one COPY "
	       "ioctl each\n");
	fd = memreg_open();
	if (fd < 0)
		fail("open /dev/memreg: %s", strerror(errno));
	ring_open(&c.r, fd);
	c.src_buf = map_touched(RING_BUF);
	c.dst_buf = map_touched(RING_BUF);
	c.ubuf = map_touched(RING_BUF);
	register_or_die(fd, c.src_buf, RING_BUF, RW, &r);
	c.src = r.lkey;
	register_or_die(fd, c.dst_buf, RING_BUF, RW, &r);
	c.dst = r.lkey;

	/* Untimed: one COPY through the ring moves the right bytes. */
	for (i = 0; i < RING_BUF; i++) {
		c.src_buf[i] = (char)(i * 7 + 1);
		c.dst_buf[i] = 0;
	}
	c.r.len = 4 * KIB;
	if (!ring_post_copy(&c.r, c.dst, 8 * KIB, c.src, 4 * KIB))
		fail("the submission ring of a new queue is full");
	ring_drain(&c.r);
	if (memcmp(c.dst_buf + 8 * KIB, c.src_buf + 4 * KIB, 4 * KIB) || c.dst_buf[8 * KIB - 1] ||
	    c.dst_buf[12 * KIB])
		fail("a COPY through the ring did not move the bytes asked");

	bench_ring_size(&c, 64, "64b", &rt, &io);
	add_row("ring_round_trip_vs_ioctl", rt, io, "<=2");
	printf("  64b round trip (post, doorbell when asleep, completion seen): %s, COPY ioctl "
	       "%s\n", figstr(rt, "ns"), figstr(io, "ns"));
	bench_ring_size(&c, 4 * KIB, "4kib", &rt, &io);

	for (k = 0; k < ROUNDS; k++)
		dpr[k] = ring_saturate(&c, &sat[k]);
	d = median(dpr, ROUNDS);
	t = median(sat, ROUNDS);
	queue_stats(fd, &s);
	printf("  saturation: %u 64-byte COPYs posted %u at a time while reaping, %d rounds: "
	       "%.6f doorbells a request, %s a request (%s); worker: batch_max %llu, "
	       "poll %llu us, %llu wake-ups, %llu shadow hits, %llu misses\n",
	       SAT_REQUESTS, SAT_BATCH, ROUNDS, d.ns, figstr(t, "ns"), ratestr(t),
	       (unsigned long long)s.batch_max, (unsigned long long)s.poll_us,
	       (unsigned long long)s.wakeups, (unsigned long long)s.shadow_hits,
	       (unsigned long long)s.shadow_misses);
	add_count_row("ring_doorbells_per_request", d, 1, "<=0.05");
	if (s.errors || s.cq_full_stalls)
		fail("QUEUE_STATS: %llu errors, %llu stalls for a full completion ring",
		     (unsigned long long)s.errors, (unsigned long long)s.cq_full_stalls);

	ring_close(&c.r);
	munmap(c.src_buf, RING_BUF);
	munmap(c.dst_buf, RING_BUF);
	munmap(c.ubuf, RING_BUF);
	close(fd);
	settle(0);
}

/* ---- Peers: one-sided WRITE and SEND/RECV between two processes ---------- */

/*
 * Both rows run between the benchmark (process B) and a child it forks
 * (process A), each with its own /dev/memreg file. A grants B its file over a
 * unix socket (SCM_RIGHTS); B attaches it and closes the descriptor it
 * received (the handle holds A's context, not its file). The child dies with
 * the parent (PR_SET_PDEATHSIG), so a failure of B leaves nothing behind.
 */

#define PW_MAX		(64 * MIB)
#define PW_SIZES	5
#define PW_SQ		64
#define PW_CQ		64

static const size_t pw_sizes[PW_SIZES] = { 4 * KIB, 64 * KIB, MIB, 16 * MIB, 64 * MIB };
static const char *const pw_tags[PW_SIZES] = { "4kib", "64kib", "1mib", "16mib", "64mib" };

/* What A sends after its file: the registration B writes into. */
struct pw_grant {
	__u64 rkey, addr, length;
};

static void write_full(int fd, const void *buf, size_t len, const char *what)
{
	const char *p = buf;

	while (len) {
		ssize_t w = write(fd, p, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			fail("%s: write: %s", what, w ? strerror(errno) : "nothing written");
		p += w;
		len -= w;
	}
}

static void read_full(int fd, void *buf, size_t len, const char *what)
{
	char *p = buf;

	while (len) {
		ssize_t r = read(fd, p, len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			fail("%s: read: %s", what, r ? strerror(errno) : "end of file");
		p += r;
		len -= r;
	}
}

/* Forks process A; in the child, runs `child(sock)`, which never returns. */
static pid_t peer_fork(int *sock, void (*child)(int sock))
{
	pid_t parent = getpid(), pid;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		fail("socketpair: %s", strerror(errno));
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		fail("fork: %s", strerror(errno));
	if (!pid) {
		close(sv[0]);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		child(sv[1]);
		_exit(1);
	}
	close(sv[1]);
	*sock = sv[0];
	return pid;
}

/* Waits for A, which must exit 0. */
static void peer_reap_child(pid_t pid, const char *what)
{
	int rc = wait_exit(pid);

	if (rc)
		fail("%s: process A exited with status %d", what, rc);
}

/*
 * One step of busy-polling a completion ring: spins, and yields the CPU every
 * 64 spins (the guest has two CPUs for both processes and both workers).
 * Fails after 10 s without progress.
 */
static void peer_idle(unsigned long *spins, int64_t *since, const char *what)
{
	if (++*spins % 64) {
		cpu_relax();
		return;
	}
	sched_yield();
	if (*spins % (16 * 1024))
		return;
	if (!*since)
		*since = now_ns();
	else if (now_ns() - *since > 10000 * MS)
		fail("%s: no completion for 10 s", what);
}

/* Posts one request without a clock read; the ring is never full here, but waits if it is. */
static void peer_post(struct memreg_queue *q, const struct memreg_sqe *sqe, const char *what)
{
	unsigned long spins = 0;
	int64_t since = 0;
	int ret;

	while ((ret = memreg_queue_post(q, sqe, 0, NULL)) == -EAGAIN)
		peer_idle(&spins, &since, what);
	if (ret)
		fail("%s: posting: %s", what, strerror(-ret));
}

/* Busy-polls until at least one completion is in `out` (at most `max`); returns how many. */
static unsigned int peer_reap(struct memreg_queue *q, struct memreg_cqe *out, unsigned int max,
			      const char *what)
{
	unsigned long spins = 0;
	int64_t since = 0;
	unsigned int n;

	while (!(n = memreg_reap_cqes(q, out, max)))
		peer_idle(&spins, &since, what);
	return n;
}

/*
 * Waits until the module has `peers` attachments alive and no more than
 * `contexts` contexts with memory allocated (both counted before the row
 * started), so nothing of the two processes leaked.
 */
static void settle_peers(__u64 peers, __u64 contexts)
{
	struct memreg_global_stats g;
	int i, ret;

	for (i = 0; i < 2000; i++) {
		ret = mr_global_now(&g);
		if (ret)
			fail("GLOBAL_STATS: %s", strerror(-ret));
		if (g.peers == peers && g.contexts_alive <= contexts)
			return;
		usleep(5000);
	}
	fail("after 10 s: %llu peer attachments and %llu contexts alive, expected %llu and at "
	     "most %llu", (unsigned long long)g.peers, (unsigned long long)g.contexts_alive,
	     (unsigned long long)peers, (unsigned long long)contexts);
}

/* Process A of the WRITE rows: a 64 MiB registration B writes into, then waits. */
static void pw_child(int sock)
{
	struct memreg_register r;
	struct pw_grant g;
	char *buf, c;
	int fd, ret;

	fd = memreg_open();
	if (fd < 0)
		fail("process A: open /dev/memreg: %s", strerror(errno));
	buf = map_touched(PW_MAX);
	register_or_die(fd, buf, PW_MAX,
			RW | MEMREG_ACCESS_REMOTE_WRITE, &r);
	g = (struct pw_grant){ r.rkey, r.region_addr, r.region_length };
	ret = memreg_send_fd(sock, fd);
	if (ret)
		fail("process A: sending its file: %s", strerror(-ret));
	write_full(sock, &g, sizeof(g), "process A");
	/* Alive, and registered, until B is done: one byte, or the end of the socket. */
	if (read(sock, &c, 1) < 0)
		_exit(1);
	_exit(0);
}

struct pw_ctx {
	struct memreg_queue q;
	__u32 peer;
	__u64 rkey, lkey;
	__u64 raddr;		/* A's buffer, in A */
	pid_t pid;		/* A */
	char *src;		/* B's registered source */
	char *dst;		/* B's memcpy destination, and where A's bytes are read back */
	size_t len;		/* bytes an operation moves */
	size_t next;		/* position in the buffers, in operations */
	__u64 posted;		/* WRITEs posted, the user_data of the next */
	__u64 written;		/* bytes the WRITEs moved */
};

/* Every operation moves `len` bytes at the same offset of each buffer, rotating over 64 MiB. */
static size_t pw_offset(struct pw_ctx *c)
{
	return (c->next++ % (PW_MAX / c->len)) * c->len;
}

static void pw_write_one(struct pw_ctx *c, __u64 roff, __u64 loff)
{
	struct memreg_sqe sqe = mr_sqe_write(c->posted, c->peer, c->rkey, roff, c->lkey, loff,
					     c->len);
	struct memreg_cqe cqe;

	peer_post(&c->q, &sqe, "WRITE");
	peer_reap(&c->q, &cqe, 1, "WRITE");
	if (cqe.user_data != c->posted || cqe.status || cqe.bytes != c->len)
		fail("WRITE of %zu bytes: user_data %llu, status %d (%s), %llu bytes; expected "
		     "user_data %llu, status 0, %zu bytes", c->len,
		     (unsigned long long)cqe.user_data, cqe.status, strerror(-cqe.status),
		     (unsigned long long)cqe.bytes, (unsigned long long)c->posted, c->len);
	c->posted++;
	c->written += c->len;
}

/* n WRITEs, each posted and its completion awaited. */
static void pw_write_run(void *arg, size_t n)
{
	struct pw_ctx *c = arg;
	size_t i;

	for (i = 0; i < n; i++) {
		size_t off = pw_offset(c);

		pw_write_one(c, off, off);
	}
}

static void pw_pvw(struct pw_ctx *c, const void *from, __u64 to, size_t len)
{
	struct iovec l = { .iov_base = (void *)from, .iov_len = len };
	struct iovec r = { .iov_base = (void *)(unsigned long)to, .iov_len = len };
	ssize_t w = process_vm_writev(c->pid, &l, 1, &r, 1, 0);

	if (w != (ssize_t)len)
		fail("process_vm_writev of %zu bytes: %s", len,
		     w < 0 ? strerror(errno) : "short write");
}

/* n process_vm_writev calls from B's source into A's buffer. */
static void pw_pvw_run(void *arg, size_t n)
{
	struct pw_ctx *c = arg;
	size_t i;

	for (i = 0; i < n; i++) {
		size_t off = pw_offset(c);

		pw_pvw(c, c->src + off, c->raddr + off, c->len);
	}
}

/* n memcpy calls between two buffers of B. */
static void pw_memcpy_run(void *arg, size_t n)
{
	struct pw_ctx *c = arg;
	size_t i;

	for (i = 0; i < n; i++) {
		size_t off = pw_offset(c);

		memcpy(c->dst + off, c->src + off, c->len);
		/* The copy is not optimised away: its destination may be read. */
		asm volatile("" ::: "memory");
	}
}

/*
 * Untimed, once per size: a WRITE of `len` bytes of a pattern of its own
 * lands in A's memory at the offset asked (a page in, when it fits), and not
 * a byte around it, as B reads A's memory back with process_vm_readv.
 */
static void pw_check(struct pw_ctx *c, size_t len, __u64 seed)
{
	size_t off = len + 2 * PAGE <= PW_MAX ? PAGE : 0;
	size_t span = len + 2 * PAGE <= PW_MAX ? len + 2 * PAGE : PW_MAX;
	__u64 *w = (__u64 *)c->src;
	struct iovec l = { .iov_base = c->dst, .iov_len = span };
	struct iovec r = { .iov_base = (void *)(unsigned long)c->raddr, .iov_len = span };
	size_t i;
	ssize_t got;

	memset(c->dst, 0, span);
	pw_pvw(c, c->dst, c->raddr, span);
	for (i = 0; i < len / sizeof(*w); i++)
		w[i] = (i + 1) * 0x9e3779b97f4a7c15ULL ^ seed;
	c->len = len;
	pw_write_one(c, off, 0);
	memset(c->dst, 0xee, span);
	got = process_vm_readv(c->pid, &l, 1, &r, 1, 0);
	if (got != (ssize_t)span)
		fail("process_vm_readv of %zu bytes: %s", span,
		     got < 0 ? strerror(errno) : "short read");
	for (i = 0; i < off; i++)
		if (c->dst[i])
			fail("a WRITE of %zu bytes at offset %zu changed byte %zu of A's buffer",
			     len, off, i);
	if (memcmp(c->dst + off, c->src, len))
		fail("a WRITE of %zu bytes did not put them in A's buffer", len);
	for (i = off + len; i < span; i++)
		if (c->dst[i])
			fail("a WRITE of %zu bytes at offset %zu changed byte %zu of A's buffer",
			     len, off, i);
}

/* Bytes per second of a figure in ns per operation of `len` bytes, for the progress lines. */
static const char *bwstr(struct fig f, size_t len)
{
	static char buf[4][40];
	static int next;
	char *b = buf[next++ % 4];

	if (f.ok && f.ns > 0 && isfinite(f.ns))
		snprintf(b, sizeof(buf[0]), "%.0f MB/s", len / f.ns * 1e3);
	else
		snprintf(b, sizeof(buf[0]), "unresolved");
	return b;
}

static void bench_peer_write(void)
{
	struct memreg_global_stats g0;
	struct memreg_queue_stats qs;
	struct memreg_register r;
	struct pw_ctx c = { 0 };
	struct pw_grant gr;
	struct fig f[3][ROUNDS], m[3];
	char name[48], sz[32];
	int sock, afd, fd, ret, i, k;
	unsigned int s;

	printf("\nOne-sided WRITE into another process vs process_vm_writev and memcpy\n");
	ret = mr_global_now(&g0);
	if (ret)
		fail("GLOBAL_STATS: %s", strerror(-ret));
	c.pid = peer_fork(&sock, pw_child);
	afd = memreg_recv_fd(sock);
	if (afd < 0)
		fail("receiving A's file: %s", strerror(-afd));
	read_full(sock, &gr, sizeof(gr), "receiving A's grant");
	if (gr.length != PW_MAX)
		fail("A's registration covers %llu bytes, not %lu", (unsigned long long)gr.length,
		     PW_MAX);
	fd = memreg_open();
	if (fd < 0)
		fail("open /dev/memreg: %s", strerror(errno));
	ret = memreg_peer_attach(fd, afd, &c.peer);
	if (ret)
		fail("PEER_ATTACH: %s", strerror(-ret));
	/* The handle holds A's context, not the file. */
	close(afd);
	c.rkey = gr.rkey;
	c.raddr = gr.addr;
	c.src = map_touched(PW_MAX);
	c.dst = map_touched(PW_MAX);
	register_or_die(fd, c.src, PW_MAX, RO, &r);
	c.lkey = r.lkey;
	ret = memreg_queue_init(fd, PW_SQ, PW_CQ, -1, &c.q);
	if (ret)
		fail("QUEUE_CREATE: %s", strerror(-ret));

	for (s = 0; s < PW_SIZES; s++) {
		struct batch b[3] = {
			{ .max_n = 1 << 20, .run = pw_write_run, .arg = &c },
			{ .max_n = 1 << 20, .run = pw_pvw_run, .arg = &c },
			{ .max_n = 1 << 20, .run = pw_memcpy_run, .arg = &c },
		};

		pw_check(&c, pw_sizes[s], s + 1);
		c.len = pw_sizes[s];
		c.next = 0;
		/* Rounds rotate the order, so a drift in the emulator's speed hits all alike. */
		for (k = 0; k < ROUNDS; k++)
			for (i = 0; i < 3; i++) {
				int x = (i + k) % 3;

				f[x][k] = measure(&b[x]);
			}
		for (i = 0; i < 3; i++)
			m[i] = median(f[i], ROUNDS);
		sizestr(sz, sizeof(sz), c.len);
		printf("  %7s: WRITE %s (%s), process_vm_writev %s (%s), memcpy %s (%s)\n", sz,
		       figstr(m[0], "ns"), bwstr(m[0], c.len), figstr(m[1], "ns"),
		       bwstr(m[1], c.len), figstr(m[2], "ns"), bwstr(m[2], c.len));
		snprintf(name, sizeof(name), "peer_write_%s_vs_process_vm_writev_speedup",
			 pw_tags[s]);
		add_row(name, m[0], m[1], c.len == MIB ? ">=1.2" : "");
		snprintf(name, sizeof(name), "peer_write_%s_vs_memcpy_speedup", pw_tags[s]);
		add_row(name, m[0], m[2], c.len == MIB ? ">=0.8" : "");
	}

	ret = memreg_queue_stats(fd, &qs);
	if (ret)
		fail("QUEUE_STATS: %s", strerror(-ret));
	printf("  %llu WRITEs moved %llu bytes; QUEUE_STATS: remote_bytes %llu, %llu errors\n",
	       (unsigned long long)c.posted, (unsigned long long)c.written,
	       (unsigned long long)qs.remote_bytes, (unsigned long long)qs.errors);
	if (qs.errors)
		fail("QUEUE_STATS counted %llu errors, every WRITE completed with status 0",
		     (unsigned long long)qs.errors);
	if (qs.remote_bytes != c.written)
		fail("QUEUE_STATS counted %llu remote bytes, the WRITEs moved %llu",
		     (unsigned long long)qs.remote_bytes, (unsigned long long)c.written);
	ret = memreg_peer_detach(fd, c.peer);
	if (ret)
		fail("PEER_DETACH: %s", strerror(-ret));
	write_full(sock, "q", 1, "telling A to exit");
	peer_reap_child(c.pid, "WRITE rows");
	close(sock);
	memreg_queue_exit(&c.q);
	close(fd);
	munmap(c.src, PW_MAX);
	munmap(c.dst, PW_MAX);
	settle(0);
	settle_peers(g0.peers, g0.contexts_alive);
}

/*
 * SEND/RECV ping-pong. Each process has one queue, connected to the other's,
 * keeps PP_RECVS RECVs of 64 bytes posted on it, and sends 64-byte messages
 * from its registered page. A serves both kinds of ping-pong in turn: it
 * busy-polls its completion ring while B times memreg round trips, and
 * blocks in read() on the socket while B times socket round trips; a message
 * with a command switches it (untimed, in the batches' prepare step).
 */
#define PP_MSG		64
#define PP_RECVS	16
#define PP_SQ		64
#define PP_CQ		256
#define PP_RNR_MS	1000
#define PP_SEND_OFF	(PP_RECVS * PP_MSG)	/* the send slot, after the receive slots */

#define PP_UD_SEND	(1ULL << 63)
#define PP_UD_RECV	(1ULL << 62)

/* A message, on the socket as in SEND/RECV. */
struct pp_msg {
	__u64 seq;
	__u64 cmd;
	char pad[PP_MSG - 16];
};

enum { PP_ECHO, PP_TO_SOCKET, PP_TO_MEMREG, PP_QUIT };

struct pp_side {
	int fd, sock;
	struct memreg_queue q;
	__u32 peer;
	__u64 lkey;
	char *buf;		/* PP_RECVS receive slots, then the send slot */
};

static void pp_post_recv(struct pp_side *s, unsigned int slot, const char *what)
{
	struct memreg_sqe sqe = mr_sqe_recv(PP_UD_RECV | slot, s->lkey, slot * PP_MSG, PP_MSG);

	peer_post(&s->q, &sqe, what);
}

/*
 * Both processes: open a file and a queue, register a page, exchange files
 * and queue indexes, attach the other's file, connect to its queue, post the
 * RECVs, then tell the other and wait for it to be ready too.
 */
static void pp_setup(struct pp_side *s, int sock, const char *who)
{
	struct memreg_register r;
	__u32 oq;
	char c = 'r';
	int ofd, ret;
	unsigned int i;

	memset(s, 0, sizeof(*s));
	s->sock = sock;
	s->fd = memreg_open();
	if (s->fd < 0)
		fail("%s: open /dev/memreg: %s", who, strerror(errno));
	ret = memreg_queue_init(s->fd, PP_SQ, PP_CQ, -1, &s->q);
	if (ret)
		fail("%s: QUEUE_CREATE: %s", who, strerror(-ret));
	s->buf = map_touched(PAGE);
	register_or_die(s->fd, s->buf, PAGE, RW, &r);
	s->lkey = r.lkey;
	ret = memreg_send_fd(sock, s->fd);
	if (ret)
		fail("%s: sending its file: %s", who, strerror(-ret));
	write_full(sock, &s->q.index, sizeof(s->q.index), who);
	ofd = memreg_recv_fd(sock);
	if (ofd < 0)
		fail("%s: receiving the other's file: %s", who, strerror(-ofd));
	read_full(sock, &oq, sizeof(oq), who);
	ret = memreg_peer_attach(s->fd, ofd, &s->peer);
	if (ret)
		fail("%s: PEER_ATTACH: %s", who, strerror(-ret));
	close(ofd);
	ret = memreg_queue_connect(s->fd, s->q.index, s->peer, oq, PP_RNR_MS);
	if (ret)
		fail("%s: QUEUE_CONNECT: %s", who, strerror(-ret));
	for (i = 0; i < PP_RECVS; i++)
		pp_post_recv(s, i, who);
	write_full(sock, &c, 1, who);
	read_full(sock, &c, 1, who);
}

/* Process A: echoes every message, by SEND/RECV or on the socket, until PP_QUIT. */
static void pp_child(int sock)
{
	struct memreg_cqe cqe[16];
	struct pp_side s;
	struct pp_msg msg;
	unsigned long spins;
	int memreg = 0;
	unsigned int n, i;

	pp_setup(&s, sock, "process A");
	for (;;) {
		if (!memreg) {
			read_full(sock, &msg, sizeof(msg), "process A");
			if (msg.cmd == PP_ECHO)
				write_full(sock, &msg, sizeof(msg), "process A");
			else if (msg.cmd == PP_TO_MEMREG)
				memreg = 1;
			else if (msg.cmd == PP_QUIT)
				_exit(0);
			else
				fail("process A: command %llu on the socket",
				     (unsigned long long)msg.cmd);
			continue;
		}
		/* No time limit: B fails after 10 s without an answer, and A dies with it. */
		for (spins = 0; !(n = memreg_reap_cqes(&s.q, cqe, 16));)
			if (++spins % 64)
				cpu_relax();
			else
				sched_yield();
		for (i = 0; i < n; i++) {
			const struct memreg_cqe *e = &cqe[i];
			unsigned int slot = e->user_data & 0xff;
			const struct pp_msg *m = (const void *)(s.buf + slot * PP_MSG);

			if (e->status || e->bytes != PP_MSG || slot >= PP_RECVS ||
			    !(e->user_data & (PP_UD_SEND | PP_UD_RECV)))
				fail("process A: completion %#llx: status %d (%s), %llu bytes",
				     (unsigned long long)e->user_data, e->status,
				     strerror(-e->status), (unsigned long long)e->bytes);
			if (e->user_data & PP_UD_SEND) {
				/* The echo left the slot: it receives again. */
				pp_post_recv(&s, slot, "process A");
			} else if (m->cmd == PP_ECHO) {
				/* Back to B, from the slot the message arrived in. */
				struct memreg_sqe sqe = mr_sqe_send(PP_UD_SEND | slot, s.lkey,
								    slot * PP_MSG, PP_MSG);

				peer_post(&s.q, &sqe, "process A");
			} else if (m->cmd == PP_TO_SOCKET) {
				pp_post_recv(&s, slot, "process A");
				memreg = 0;
			} else {
				fail("process A: command %llu by SEND", (unsigned long long)m->cmd);
			}
		}
	}
}

struct pp_ctx {
	struct pp_side s;
	pid_t pid;
	int memreg;		/* the mode A is in */
	__u64 seq;		/* the last message's */
	__u64 sends;		/* SENDs B posted */
};

/* B's SEND of one message with command `cmd` from its send slot. */
static void pp_send(struct pp_ctx *c, __u64 cmd)
{
	struct pp_msg *m = (void *)(c->s.buf + PP_SEND_OFF);
	struct memreg_sqe sqe;

	m->seq = ++c->seq;
	m->cmd = cmd;
	sqe = mr_sqe_send(PP_UD_SEND | c->seq, c->s.lkey, PP_SEND_OFF, PP_MSG);
	peer_post(&c->s.q, &sqe, "SEND");
	c->sends++;
}

/*
 * Reaps B's completions until its last SEND completed and, if `echo`, its
 * echo arrived (checked, and its RECV posted again).
 */
static void pp_reap(struct pp_ctx *c, int echo)
{
	struct memreg_cqe cqe[4];
	int sent = 0, got = !echo;
	unsigned int n, i;

	while (!sent || !got) {
		n = peer_reap(&c->s.q, cqe, 4, "SEND/RECV ping-pong");
		for (i = 0; i < n; i++) {
			const struct memreg_cqe *e = &cqe[i];

			if (e->user_data == (PP_UD_SEND | c->seq) && !e->status &&
			    e->bytes == PP_MSG) {
				sent = 1;
			} else if ((e->user_data & ~0xffULL) == PP_UD_RECV &&
				   (e->user_data & 0xff) < PP_RECVS && !e->status &&
				   e->bytes == PP_MSG && !e->flags && !e->imm_data && !got) {
				unsigned int slot = e->user_data & 0xff;
				const struct pp_msg *m = (const void *)(c->s.buf + slot * PP_MSG);

				if (m->seq != c->seq || m->cmd != PP_ECHO)
					fail("ping-pong: the echo of message %llu carries %llu, "
					     "command %llu", (unsigned long long)c->seq,
					     (unsigned long long)m->seq,
					     (unsigned long long)m->cmd);
				pp_post_recv(&c->s, slot, "RECV");
				got = 1;
			} else {
				fail("ping-pong, message %llu: completion %#llx, status %d (%s), "
				     "%llu bytes, flags %#x", (unsigned long long)c->seq,
				     (unsigned long long)e->user_data, e->status,
				     strerror(-e->status), (unsigned long long)e->bytes, e->flags);
			}
		}
	}
}

/* Puts A in the mode the next batch times. */
static void pp_mode(struct pp_ctx *c, int memreg)
{
	struct pp_msg msg = { .cmd = PP_TO_MEMREG };

	if (c->memreg == memreg)
		return;
	if (memreg) {
		write_full(c->s.sock, &msg, sizeof(msg), "ping-pong");
	} else {
		pp_send(c, PP_TO_SOCKET);
		pp_reap(c, 0);
	}
	c->memreg = memreg;
}

static void pp_mr_prepare(void *arg, size_t n)
{
	(void)n;
	pp_mode(arg, 1);
}

static void pp_sock_prepare(void *arg, size_t n)
{
	(void)n;
	pp_mode(arg, 0);
}

/* n round trips: B SENDs, A's RECV completes and A SENDs back, B's RECV completes. */
static void pp_mr_run(void *arg, size_t n)
{
	struct pp_ctx *c = arg;
	size_t i;

	for (i = 0; i < n; i++) {
		pp_send(c, PP_ECHO);
		pp_reap(c, 1);
	}
}

/* n round trips on the socket: write 64 bytes, read the echo. */
static void pp_sock_run(void *arg, size_t n)
{
	struct pp_ctx *c = arg;
	struct pp_msg msg = { 0 }, back;
	size_t i;

	for (i = 0; i < n; i++) {
		msg.seq = ++c->seq;
		write_full(c->s.sock, &msg, sizeof(msg), "socket ping-pong");
		read_full(c->s.sock, &back, sizeof(back), "socket ping-pong");
		if (back.seq != msg.seq || back.cmd != PP_ECHO)
			fail("socket ping-pong: the echo of message %llu carries %llu",
			     (unsigned long long)msg.seq, (unsigned long long)back.seq);
	}
}

/* n operations timed as one interval (prepare and finish untimed), resolved as by measure(). */
static struct fig measure_n(struct batch *b, size_t n)
{
	char src[64];
	struct fig f;
	int64_t t0, e;

	read_clocksource(src, sizeof(src));
	if (b->prepare)
		b->prepare(b->arg, n);
	t0 = now_ns();
	b->run(b->arg, n);
	e = now_ns() - t0;
	if (b->finish)
		b->finish(b->arg, n);
	f.ns = e > 0 ? (double)e / n : 0;
	f.ok = clock_unchanged(src) && clk.ok && e >= clk.thr_ns && e >= 1000 * clk.step_ns;
	return f;
}

static void bench_pingpong(void)
{
	struct memreg_global_stats g0;
	struct memreg_queue_stats qs;
	struct pp_ctx c = { 0 };
	struct batch bm = { .max_n = 1 << 20, .prepare = pp_mr_prepare, .run = pp_mr_run,
			    .arg = &c };
	struct batch bs = { .max_n = 1 << 20, .prepare = pp_sock_prepare, .run = pp_sock_run,
			    .arg = &c };
	struct fig fm[ROUNDS], fs[ROUNDS], m, s;
	struct pp_msg quit = { .cmd = PP_QUIT };
	size_t trips;
	int sock, ret, k;

	printf("\nSEND/RECV ping-pong of 64 bytes between two processes vs a unix socketpair\n");
	ret = mr_global_now(&g0);
	if (ret)
		fail("GLOBAL_STATS: %s", strerror(-ret));
	c.pid = peer_fork(&sock, pp_child);
	pp_setup(&c.s, sock, "process B");

	/* Untimed: the round trips each needs to last a timed interval; both get as many. */
	measure(&bm);
	measure(&bs);
	trips = 2 * (bm.n > bs.n ? bm.n : bs.n);
	for (k = 0; k < ROUNDS; k++) {
		if (k % 2) {
			fs[k] = measure_n(&bs, trips);
			fm[k] = measure_n(&bm, trips);
		} else {
			fm[k] = measure_n(&bm, trips);
			fs[k] = measure_n(&bs, trips);
		}
	}
	m = median(fm, ROUNDS);
	s = median(fs, ROUNDS);
	printf("  round trip: SEND/RECV %s, unix socket %s; %zu round trips of each a round\n",
	       figstr(m, "ns"), figstr(s, "ns"), trips);
	add_row("send_recv_pingpong_vs_unix_socket", m, s, "<=0.8");

	ret = memreg_queue_stats(c.s.fd, &qs);
	if (ret)
		fail("QUEUE_STATS: %s", strerror(-ret));
	printf("  B's QUEUE_STATS: %llu messages, remote_bytes %llu, %llu RNR timeouts, "
	       "%llu errors, %llu doorbells for %llu requests\n",
	       (unsigned long long)qs.messages, (unsigned long long)qs.remote_bytes,
	       (unsigned long long)qs.rnr_timeouts, (unsigned long long)qs.errors,
	       (unsigned long long)qs.doorbells, (unsigned long long)qs.requests);
	if (qs.errors || qs.rnr_timeouts)
		fail("QUEUE_STATS counted %llu errors and %llu RNR timeouts, every request "
		     "completed with status 0", (unsigned long long)qs.errors,
		     (unsigned long long)qs.rnr_timeouts);
	if (qs.messages != c.sends || qs.remote_bytes != c.sends * PP_MSG)
		fail("QUEUE_STATS counted %llu messages and %llu remote bytes for %llu SENDs of "
		     "%d bytes", (unsigned long long)qs.messages,
		     (unsigned long long)qs.remote_bytes, (unsigned long long)c.sends, PP_MSG);

	/*
	 * B detaches while A is still there, then A quits from the socket; the
	 * RECVs both still have posted are dropped when their files close.
	 */
	pp_mode(&c, 0);
	ret = memreg_peer_detach(c.s.fd, c.s.peer);
	if (ret)
		fail("PEER_DETACH: %s", strerror(-ret));
	write_full(sock, &quit, sizeof(quit), "ping-pong");
	peer_reap_child(c.pid, "ping-pong");
	close(sock);
	memreg_queue_exit(&c.s.q);
	close(c.s.fd);
	munmap(c.s.buf, PAGE);
	settle(0);
	settle_peers(g0.peers, g0.contexts_alive);
}

/* ---- Cache look-up with many registrations ------------------------------ */

/*
 * One mapping holds three parts: [lo][big][hi]. A context of n registrations
 * has one registration of all of "big", read-only, registered first, and n - 1
 * small read-write ones of 1-16 pages: half inside "big", a quarter in each of
 * "lo" and "hi". Small ones start `stride` bytes apart (any alignment), and
 * each ends after its predecessor, so none covers another and each REGISTER
 * is a miss. The timed hits cycle over LK_TARGETS ranges: a small
 * registration inside "big", a 32-page range only "big" covers, a small
 * registration outside, and so on.
 */
#define LK_SIZES	4
#define LK_TARGETS	48
#define LK_MAX_PAGES	16
#define LK_OUT_STRIDE	(PAGE + 192)	/* between small ones outside, at 100K */
#define LK_BIG_HIT	(32 * PAGE)	/* longer than any small registration */

static const size_t lk_sizes[LK_SIZES] = { 1000, 10000, 100000, 1000000 };
static const char *const lk_names[LK_SIZES] = {
	"lookup_1k", "lookup_10k", "lookup_100k", "lookup_1m"
};

struct layout {
	char *area;
	size_t area_len;
	char *lo, *big, *hi;
	size_t side_len, big_len;
};

struct small {
	__u64 addr, len, key;
};

struct lk_target {
	__u64 addr, len, key;
	__u32 access;
};

struct lk_ctx {
	int fd;
	size_t n;
	__u64 big_key;
	struct lk_target t[LK_TARGETS];
	__u64 *keys;
	size_t keys_cap, refs;
	int err, bad;
};

static uint64_t rng = 88172645463325252ULL;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng >> 32;
}

static long mem_available_mib(void)
{
	long kb = proc_kb("/proc/meminfo", "MemAvailable");

	return kb < 0 ? -1 : kb / 1024;
}

/* Length of "lo" and of "hi": room for a quarter of the largest context. */
static size_t layout_side_len(void)
{
	size_t smalls = lk_sizes[LK_SIZES - 1] - 1, side = (smalls - smalls / 2 + 1) / 2;

	return (side * LK_OUT_STRIDE + (LK_MAX_PAGES + 1) * PAGE + PAGE - 1) & ~(PAGE - 1);
}

static void layout_map(struct layout *L, size_t big_len)
{
	size_t i;

	L->big_len = big_len;
	L->side_len = layout_side_len();
	L->area_len = 2 * L->side_len + big_len;
	L->area = mmap(NULL, L->area_len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (L->area == MAP_FAILED)
		fail("mmap %zu MiB: %s", L->area_len / MIB, strerror(errno));
	L->lo = L->area;
	L->big = L->area + L->side_len;
	L->hi = L->big + big_len;
	/*
	 * Pre-fault everything, writing: a read-only long-term pin of untouched
	 * private memory would allocate it anyway (it may not pin the shared zero
	 * page), and a later write fault under the big registration would
	 * invalidate it.
	 */
	for (i = 0; i < L->area_len; i += PAGE)
		L->area[i] = 1;
}

/*
 * Registers `count` small read-write ranges in [base, base + span), starting
 * `span / count` bytes apart; returns them in out[].
 */
static void add_smalls(int fd, char *base, size_t span, size_t count, struct small *out)
{
	size_t stride, i;
	__u64 len = PAGE;

	if (!count)
		return;
	stride = (span - (LK_MAX_PAGES + 1) * PAGE) / count;
	for (i = 0; i < count; i++) {
		/* The shortest length that still ends after the previous one. */
		__u64 lo = len + 1 > stride ? len + 1 - stride : 1;
		__u64 k = 1 + rnd() % LK_MAX_PAGES, kmin = (lo + PAGE - 1) / PAGE;
		struct memreg_register r;
		int ret;

		len = (k < kmin ? kmin : k) * PAGE;
		out[i].addr = (unsigned long)base + i * stride;
		out[i].len = len;
		ret = memreg_register(fd, (void *)(unsigned long)out[i].addr, len, RW, &r);
		if (ret)
			fail("REGISTER small registration %zu of %zu: %s%s", i + 1, count,
			     strerror(-ret), err_hint(-ret));
		if (r.flags & MEMREG_REGISTER_CACHED)
			fail("REGISTER of a small range no other covers was a cache hit");
		out[i].key = r.lkey;
	}
}

/* Builds a context of n registrations; -ENOMEM if the big one cannot be pinned. */
static int lk_build(struct lk_ctx *c, size_t n, const struct layout *L)
{
	size_t smalls = n - 1, n_in = smalls / 2, n_out = smalls - n_in;
	size_t n_lo = n_out / 2, n_hi = n_out - n_lo, j;
	struct small *in = calloc(n_in, sizeof(*in));
	struct small *lo = calloc(n_lo, sizeof(*lo));
	struct small *hi = calloc(n_hi, sizeof(*hi));
	struct memreg_register r;
	struct memreg_stats s;
	int64_t t0 = now_ns();
	int ret;

	if (!in || !lo || !hi)
		fail("out of memory");
	memset(c, 0, sizeof(*c));
	c->n = n;
	c->fd = memreg_open();
	if (c->fd < 0)
		fail("open /dev/memreg: %s", strerror(errno));
	rng = 88172645463325252ULL ^ n;
	/*
	 * The big one first: a registration may overlap at most 64 live ones
	 * (EDQUOT past that), so it cannot come after the small ones inside it.
	 */
	ret = memreg_register(c->fd, L->big, L->big_len, RO, &r);
	if (ret == -ENOMEM) {
		close(c->fd);
		free(in);
		free(lo);
		free(hi);
		return -ENOMEM;
	}
	if (ret)
		fail("REGISTER %zu MiB read-only: %s%s", L->big_len / MIB, strerror(-ret),
		     err_hint(-ret));
	if (r.flags & MEMREG_REGISTER_CACHED)
		fail("REGISTER of the big range was a cache hit");
	c->big_key = r.lkey;
	add_smalls(c->fd, L->lo, L->side_len, n_lo, lo);
	add_smalls(c->fd, L->big + 64, L->big_len - 64, n_in, in);
	add_smalls(c->fd, L->hi, L->side_len, n_hi, hi);
	if (memreg_stats(c->fd, &s))
		fail("STATS: %s", strerror(errno));
	if (s.registrations != n)
		fail("context holds %llu registrations, expected %zu",
		     (unsigned long long)s.registrations, n);

	/*
	 * Target j of each kind sits at (2j + 1) / 2k of its part, k targets a
	 * kind; the ones outside alternate between "lo" and "hi".
	 */
	for (j = 0; j < LK_TARGETS / 3; j++) {
		size_t k = LK_TARGETS / 3, h = j / 2;
		size_t big_pages = L->big_len / PAGE - 2 - LK_BIG_HIT / PAGE;
		struct lk_target *a = &c->t[3 * j], *b = a + 1, *o = a + 2;
		const struct small *sa = &in[(2 * j + 1) * n_in / (2 * k)];
		const struct small *so = j % 2 ? &hi[(2 * h + 1) * n_hi / k] :
					 &lo[(2 * h + 1) * n_lo / k];

		*a = (struct lk_target){ sa->addr, sa->len, sa->key, RW };
		b->addr = (unsigned long)L->big + PAGE + (2 * j + 1) * big_pages / (2 * k) * PAGE;
		b->len = LK_BIG_HIT;
		b->key = c->big_key;
		b->access = RO;
		*o = (struct lk_target){ so->addr, so->len, so->key, RW };
	}
	/* Untimed check: each target hits the registration expected. */
	for (j = 0; j < LK_TARGETS; j++) {
		const struct lk_target *t = &c->t[j];

		ret = memreg_register(c->fd, (void *)(unsigned long)t->addr, t->len, t->access, &r);
		if (ret)
			fail("REGISTER hit: %s", strerror(-ret));
		if (!(r.flags & MEMREG_REGISTER_CACHED) || r.lkey != t->key)
			fail("REGISTER of %llu bytes at +%#llx %s (key %#llx, expected %#llx)",
			     (unsigned long long)t->len,
			     (unsigned long long)(t->addr - (unsigned long)L->area),
			     r.flags & MEMREG_REGISTER_CACHED ? "hit another registration" :
			     "was not a cache hit",
			     (unsigned long long)r.lkey, (unsigned long long)t->key);
		if (memreg_deregister(c->fd, r.lkey))
			fail("DEREGISTER: %s", strerror(errno));
	}
	printf("  %zu registrations (%zu inside the big one, %zu outside) in %.1f s\n", n, n_in,
	       n_out, (now_ns() - t0) / 1e9);
	free(in);
	free(lo);
	free(hi);
	return 0;
}

static void lk_prepare(void *arg, size_t n)
{
	struct lk_ctx *c = arg;

	if (n * LK_TARGETS > c->keys_cap) {
		c->keys_cap = n * LK_TARGETS;
		c->keys = realloc(c->keys, c->keys_cap * sizeof(*c->keys));
		if (!c->keys)
			fail("out of memory");
	}
}

/* n passes over the targets, each REGISTER a cache hit. */
static void lk_run(void *arg, size_t n)
{
	struct lk_ctx *c = arg;
	size_t p, j;

	for (p = 0; p < n; p++)
		for (j = 0; j < LK_TARGETS; j++) {
			struct memreg_register r = {
				.addr = c->t[j].addr,
				.length = c->t[j].len,
				.access = c->t[j].access,
			};

			if (ioctl(c->fd, MEMREG_IOC_REGISTER, &r)) {
				c->err = errno;
				return;
			}
			c->keys[c->refs++] = r.lkey;
			c->bad |= !(r.flags & MEMREG_REGISTER_CACHED);
		}
}

static void lk_finish(void *arg, size_t n)
{
	struct lk_ctx *c = arg;
	size_t i;

	(void)n;
	for (i = 0; i < c->refs; i++)
		if (memreg_deregister(c->fd, c->keys[i]))
			fail("DEREGISTER: %s", strerror(errno));
	c->refs = 0;
	if (c->err)
		fail("REGISTER hit with %zu registrations: %s", c->n, strerror(c->err));
	if (c->bad)
		fail("REGISTER of a covered range was not a cache hit with %zu registrations", c->n);
}

static void lk_close_all(struct lk_ctx *c, int nr)
{
	int i;

	for (i = 0; i < nr; i++) {
		close(c[i].fd);
		free(c[i].keys);
	}
}

static void bench_lookup(void)
{
	struct lk_ctx c[LK_SIZES];
	struct batch b[LK_SIZES + 1];
	struct noop_ctx nc;
	struct fig f[LK_SIZES + 1][ROUNDS], m[LK_SIZES + 1];
	struct layout L;
	size_t big_len = GIB;
	long avail = mem_available_mib();
	int i, k;

	printf("\nREGISTER cache hit with 1K, 10K, 100K, 1M registrations in one context\n");
	/* The big range, the small ones outside it, and room for the kernel's objects. */
	if (avail >= 0 && (size_t)avail < (GIB + 2 * layout_side_len() + 384 * MIB) / MIB) {
		big_len = 256 * MIB;
		printf("  only %ld MiB of memory available: the big registration covers 256 MiB, not 1 GiB\n",
		       avail);
	}
	for (;;) {
		layout_map(&L, big_len);
		for (i = 0; i < LK_SIZES; i++) {
			long before = mem_available_mib();

			if (lk_build(&c[i], lk_sizes[i], &L))
				break;
			/* The area was faulted in before: what is gone is the kernel's. */
			if (i == LK_SIZES - 1 && before > 0) {
				long used = before - mem_available_mib();

				printf("  kernel memory of %zu registrations: %ld MiB, %.0f bytes each\n",
				       lk_sizes[i], used, (double)used * MIB / lk_sizes[i]);
			}
		}
		if (i == LK_SIZES)
			break;
		lk_close_all(c, i);
		munmap(L.area, L.area_len);
		if (big_len == 256 * MIB)
			fail("REGISTER of 256 MiB read-only: %s", strerror(ENOMEM));
		printf("  REGISTER of 1 GiB read-only failed with ENOMEM: "
		       "the big registration covers 256 MiB instead\n");
		big_len = 256 * MIB;
	}
	printf("  big registration: %zu MiB read-only; targets: %d ranges, a third in small "
	       "registrations inside it, a third only it covers, a third outside\n",
	       big_len / MIB, LK_TARGETS);

	for (i = 0; i < LK_SIZES; i++)
		b[i] = (struct batch){ .max_n = 4096, .prepare = lk_prepare, .run = lk_run,
				       .finish = lk_finish, .arg = &c[i] };
	noop_batch(&b[LK_SIZES], &nc, c[0].fd);
	/* Rounds rotate the order, so a drift in the emulator's speed hits all alike. */
	for (k = 0; k < ROUNDS; k++)
		for (i = 0; i <= LK_SIZES; i++) {
			int x = (i + k) % (LK_SIZES + 1);

			f[x][k] = measure(&b[x]);
		}
	for (i = 0; i <= LK_SIZES; i++)
		m[i] = per(median(f[i], ROUNDS), i < LK_SIZES ? LK_TARGETS : 1);
	printf("  no-op ioctl %s\n", figstr(m[LK_SIZES], "ns"));
	for (i = 0; i < LK_SIZES; i++) {
		printf("  %zu registrations: REGISTER hit %s\n", lk_sizes[i], figstr(m[i], "ns"));
		add_row(lk_names[i], m[i], m[LK_SIZES], "");
	}
	add_row("lookup_100k_vs_1k", m[2], m[0], "<=2");
	add_row("lookup_1m_vs_1k", m[3], m[0], "<=2");
	lk_close_all(c, LK_SIZES);
	munmap(L.area, L.area_len);
}

/* ---- Buffer pools -------------------------------------------------------- */

/* The pool of the ALLOC/FREE rows: 64 buffers of 4 KiB, all mapped, never growing or shrinking. */
#define BP_BUFS		64
#define BP_BATCH	32

struct bp_ops {
	int fd;			/* parking off: every REGISTER of the baseline pins */
	__u32 pool;
	char *map;
	size_t map_bytes;
	int err;
	const char *op;
	int bad;
	size_t registers;	/* REGISTERs of the malloc baseline */
};

static void bp_fail_op(struct bp_ops *c, const char *op, int err)
{
	if (!c->err) {
		c->err = err;
		c->op = op;
	}
}

/* n times ALLOC of one 4 KiB buffer + FREE of it. */
static void bp_single_run(void *arg, size_t n)
{
	struct bp_ops *c = arg;
	struct memreg_pool_buf b;
	size_t i;

	for (i = 0; i < n; i++) {
		struct memreg_pool_alloc a = { .pool = c->pool, .size = 4 * KIB,
					       .bufs = (unsigned long)&b, .count = 1 };
		struct memreg_pool_free f = { .pool = c->pool, .count = 1,
					      .addrs = (unsigned long)&b.addr };

		if (ioctl(c->fd, MEMREG_IOC_POOL_ALLOC, &a)) {
			bp_fail_op(c, "POOL_ALLOC", errno);
			break;
		}
		c->bad |= a.count != 1 || b.size != 4 * KIB;
		if (ioctl(c->fd, MEMREG_IOC_POOL_FREE, &f)) {
			bp_fail_op(c, "POOL_FREE", errno);
			break;
		}
	}
}

/* n times ALLOC of 32 buffers + FREE of the 32. */
static void bp_batch_run(void *arg, size_t n)
{
	struct bp_ops *c = arg;
	struct memreg_pool_buf b[BP_BATCH];
	__u64 addrs[BP_BATCH];
	size_t i;
	int j;

	for (i = 0; i < n; i++) {
		struct memreg_pool_alloc a = { .pool = c->pool, .size = 4 * KIB,
					       .bufs = (unsigned long)b, .count = BP_BATCH };
		struct memreg_pool_free f = { .pool = c->pool, .count = BP_BATCH,
					      .addrs = (unsigned long)addrs };

		if (ioctl(c->fd, MEMREG_IOC_POOL_ALLOC, &a)) {
			bp_fail_op(c, "POOL_ALLOC", errno);
			break;
		}
		c->bad |= a.count != BP_BATCH;
		for (j = 0; j < BP_BATCH; j++)
			addrs[j] = b[j].addr;
		if (ioctl(c->fd, MEMREG_IOC_POOL_FREE, &f)) {
			bp_fail_op(c, "POOL_FREE", errno);
			break;
		}
	}
}

/* n times malloc(4096), a write to each page it spans, REGISTER, DEREGISTER, free. */
static void bp_malloc_run(void *arg, size_t n)
{
	struct bp_ops *c = arg;
	size_t i;

	for (i = 0; i < n; i++) {
		char *p = malloc(4 * KIB);
		struct memreg_register r = { .access = RW, .length = 4 * KIB };
		struct memreg_deregister d = { 0 };

		if (!p) {
			bp_fail_op(c, "malloc", ENOMEM);
			break;
		}
		p[0] = (char)i;
		p[4 * KIB - 1] = (char)i;
		r.addr = (unsigned long)p;
		if (ioctl(c->fd, MEMREG_IOC_REGISTER, &r)) {
			bp_fail_op(c, "REGISTER", errno);
			free(p);
			break;
		}
		c->registers++;
		/* Parking off: always a miss, which pins. */
		c->bad |= r.flags != 0;
		d.key = r.lkey;
		if (ioctl(c->fd, MEMREG_IOC_DEREGISTER, &d)) {
			bp_fail_op(c, "DEREGISTER", errno);
			free(p);
			break;
		}
		free(p);
	}
}

static void bp_finish(void *arg, size_t n)
{
	struct bp_ops *c = arg;

	(void)n;
	if (c->err)
		fail("%s: %s%s", c->op, strerror(c->err), err_hint(c->err));
	if (c->bad)
		fail("a pool ALLOC gave fewer or other buffers than asked, or a REGISTER with "
		     "parking off was served from the cache");
}

/* POOL_STATS of the pool's only class. */
static void bp_stats(int fd, __u32 pool, struct memreg_pool_stats *st)
{
	struct memreg_pool_info in = { .pool = pool, .count = 1, .stats = (unsigned long)st };

	if (ioctl(fd, MEMREG_IOC_POOL_STATS, &in))
		fail("POOL_STATS: %s", strerror(errno));
}

/* Waits up to 10 s until the pool's class 0 has `boundary` buffers mapped. */
static void bp_wait_boundary(int fd, __u32 pool, __u64 boundary)
{
	struct memreg_pool_stats st;
	int i;

	for (i = 0; i < 2000; i++) {
		bp_stats(fd, pool, &st);
		if (st.boundary == boundary)
			return;
		usleep(5000);
	}
	fail("pool %u: boundary %llu after 10 s, expected %llu", pool,
	     (unsigned long long)st.boundary, (unsigned long long)boundary);
}

static void bench_pool_ops(void)
{
	struct memreg_pool_class cl = { .buffer_size = 4 * KIB, .max_buffers = BP_BUFS,
					.initial = BP_BUFS };
	struct memreg_pool_create pc = { .classes = (unsigned long)&cl, .nr_classes = 1,
					 .access = RW, .leak_timeout_ms = 1000 };
	struct bp_ops c = { 0 };
	struct noop_ctx nc;
	struct batch b[4];
	struct fig f[4][ROUNDS], m[4], two, per_buf;
	struct memreg_pool_stats st;
	struct memreg_stats s, s0;
	int i, k;

	c.fd = memreg_open();
	if (c.fd < 0)
		fail("open /dev/memreg: %s", strerror(errno));
	if (mr_set_parking(c.fd, 0))
		fail("SET_CACHE: %s", strerror(errno));
	if (ioctl(c.fd, MEMREG_IOC_POOL_CREATE, &pc))
		fail("POOL_CREATE: %s", strerror(errno));
	c.pool = pc.pool;
	c.map_bytes = pc.map_bytes;
	c.map = mmap(NULL, c.map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, c.fd,
		     MEMREG_MMAP_POOL(c.pool));
	if (c.map == MAP_FAILED)
		fail("mmap of the pool: %s", strerror(errno));
	/* Untimed: every buffer mapped before anything is timed. */
	bp_wait_boundary(c.fd, c.pool, BP_BUFS);
	/* The pool's chunks count among the context's misses: only the loop's are compared. */
	if (memreg_stats(c.fd, &s0))
		fail("STATS: %s", strerror(errno));

	b[0] = (struct batch){ .max_n = 1 << 24, .run = bp_single_run, .finish = bp_finish,
			       .arg = &c };
	b[1] = (struct batch){ .max_n = 1 << 24, .run = bp_batch_run, .finish = bp_finish,
			       .arg = &c };
	b[2] = (struct batch){ .max_n = 1 << 24, .run = bp_malloc_run, .finish = bp_finish,
			       .arg = &c };
	noop_batch(&b[3], &nc, c.fd);
	/* Rounds rotate the order, so a drift in the emulator's speed hits all alike. */
	for (k = 0; k < ROUNDS; k++)
		for (i = 0; i < 4; i++) {
			int x = (i + k) % 4;

			f[x][k] = measure(&b[x]);
		}
	for (i = 0; i < 4; i++)
		m[i] = median(f[i], ROUNDS);

	/* Nothing waited, grew, shrank or fell back; everything went back. */
	bp_stats(c.fd, c.pool, &st);
	if (st.allocated || st.free != BP_BUFS || st.boundary != BP_BUFS ||
	    st.grows != BP_BUFS * 4 * KIB / (64 * KIB) ||
	    st.shrinks || st.waits || st.timeouts || st.fallbacks || st.leaks_reclaimed)
		fail("pool after the ALLOC/FREE loops: boundary %llu allocated %llu free %llu "
		     "grows %llu shrinks %llu waits %llu timeouts %llu fallbacks %llu",
		     (unsigned long long)st.boundary, (unsigned long long)st.allocated,
		     (unsigned long long)st.free, (unsigned long long)st.grows,
		     (unsigned long long)st.shrinks, (unsigned long long)st.waits,
		     (unsigned long long)st.timeouts, (unsigned long long)st.fallbacks);
	/* Every REGISTER of the baseline was a miss, none parked or revived. */
	if (memreg_stats(c.fd, &s))
		fail("STATS: %s", strerror(errno));
	if (s.cache_hits != s0.cache_hits || s.parks || s.revives ||
	    s.cache_misses - s0.cache_misses != c.registers)
		fail("the malloc + REGISTER loop: %llu hits, %llu misses for %zu REGISTERs, "
		     "%llu parks, %llu revives", (unsigned long long)(s.cache_hits - s0.cache_hits),
		     (unsigned long long)(s.cache_misses - s0.cache_misses), c.registers,
		     (unsigned long long)s.parks, (unsigned long long)s.revives);

	two = m[3];
	two.ns *= 2;
	per_buf = per(m[1], BP_BATCH);
	printf("\nBuffer pool ALLOC + FREE (4 KiB buffers, all mapped) vs no-op ioctl and vs "
	       "malloc + REGISTER\n"
	       "  ALLOC + FREE of one %s, of %d %s (%s a buffer), GET_VERSION %s\n"
	       "  malloc(4096) + touch + REGISTER + DEREGISTER + free (parking off) %s\n",
	       figstr(m[0], "ns"), BP_BATCH, figstr(m[1], "ns"), figstr(per_buf, "ns"),
	       figstr(m[3], "ns"), figstr(m[2], "ns"));
	add_row("pool_alloc_free_vs_noop_ioctl", m[0], two, "<=1.2");
	add_row("pool_alloc_free_batch32_vs_noop_ioctl", per_buf, m[3], "<=0.2");
	add_row("pool_vs_malloc_register_speedup", m[0], m[2], ">=10");
	munmap(c.map, c.map_bytes);
	close(c.fd);
	settle(0);
}

/*
 * Growth: pools of one 4 KiB class whose initial size is 1 MiB (256
 * buffers, 16 chunks of 64 KiB), created untimed on a fresh file (pool
 * indexes are never reused, so one file serves at most MEMREG_MAX_POOLS);
 * timed: mmap of each, then POOL_STATS polled (yielding the CPU between
 * polls) until its boundary reaches 256 buffers.
 */
#define BP_GROW_BUFS	256

struct bp_grow {
	int fd;
	__u32 pools[MEMREG_MAX_POOLS];
	char *maps[MEMREG_MAX_POOLS];
	size_t map_bytes;
	size_t n;
	unsigned long polls;
};

static void bp_grow_prepare(void *arg, size_t n)
{
	struct bp_grow *g = arg;
	struct memreg_pool_class cl = { .buffer_size = 4 * KIB, .max_buffers = BP_GROW_BUFS,
					.initial = BP_GROW_BUFS };
	size_t i;

	g->fd = memreg_open();
	if (g->fd < 0)
		fail("open /dev/memreg: %s", strerror(errno));
	for (i = 0; i < n; i++) {
		struct memreg_pool_create pc = { .classes = (unsigned long)&cl, .nr_classes = 1,
						 .access = RW, .leak_timeout_ms = 1000 };

		if (ioctl(g->fd, MEMREG_IOC_POOL_CREATE, &pc))
			fail("POOL_CREATE: %s", strerror(errno));
		g->pools[i] = pc.pool;
		g->map_bytes = pc.map_bytes;
		g->maps[i] = NULL;
	}
	g->n = n;
}

static void bp_grow_run(void *arg, size_t n)
{
	struct bp_grow *g = arg;
	int64_t t0 = 0;
	size_t i;
	long k;

	for (i = 0; i < n; i++) {
		struct memreg_pool_stats st;
		struct memreg_pool_info in = { .pool = g->pools[i], .count = 1,
					       .stats = (unsigned long)&st };
		char *p = mmap(NULL, g->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, g->fd,
			       MEMREG_MMAP_POOL(g->pools[i]));

		if (p == MAP_FAILED)
			fail("mmap of a pool: %s", strerror(errno));
		g->maps[i] = p;
		for (k = 0;; k++) {
			if (ioctl(g->fd, MEMREG_IOC_POOL_STATS, &in))
				fail("POOL_STATS: %s", strerror(errno));
			g->polls++;
			if (st.boundary == BP_GROW_BUFS)
				break;
			/* A growth that never ends is a failure, not a figure. */
			if (!(k % 1024)) {
				if (!k)
					t0 = now_ns();
				else if (now_ns() - t0 > 10000 * (int64_t)MS)
					fail("a pool of 1 MiB still has %llu of its %d buffers "
					     "mapped after 10 s", (unsigned long long)st.boundary,
					     BP_GROW_BUFS);
			}
			sched_yield();
		}
	}
}

static void bp_grow_finish(void *arg, size_t n)
{
	struct bp_grow *g = arg;
	size_t i;

	(void)n;
	for (i = 0; i < g->n; i++) {
		struct memreg_pool_stats st;

		if (!g->maps[i])
			continue;
		bp_stats(g->fd, g->pools[i], &st);
		if (st.grows != BP_GROW_BUFS * 4 * KIB / (64 * KIB) || st.free != BP_GROW_BUFS)
			fail("a pool grown to 1 MiB counts %llu grows, %llu free",
			     (unsigned long long)st.grows, (unsigned long long)st.free);
		munmap(g->maps[i], g->map_bytes);
	}
	close(g->fd);
	settle(0);
}

/* ---- libmemreg: its cache and rings against the raw protocol ------------ */

struct lhit_ctx {
	struct memreg_cache *c;
	struct memreg_mr *want;
	char *addr;
	size_t bad;
};

static void lhit_run(void *arg, size_t n)
{
	struct lhit_ctx *c = arg;
	size_t i;

	for (i = 0; i < n; i++) {
		struct memreg_mr *mr;

		if (memreg_mr_get(c->c, c->addr, 4 * PAGE, RW, &mr) || mr != c->want)
			c->bad++;
		else
			memreg_mr_put(c->c, mr);
	}
}

static void lhit_finish(void *arg, size_t n)
{
	struct lhit_ctx *c = arg;

	(void)n;
	if (c->bad)
		fail("%zu memreg_mr_get() calls did not return the cached entry", c->bad);
}

static void bench_lib_cache_hit(void)
{
	struct lhit_ctx c = { 0 };
	struct batch lb = { .max_n = (size_t)1 << 32, .run = lhit_run, .finish = lhit_finish,
			    .arg = &c };
	struct memreg_cache_stats cs;
	struct memreg_stats before, after;
	struct fig hit[ROUNDS], noop[ROUNDS], h, z;
	struct noop_ctx nc;
	struct batch nb;
	char *buf;
	int fd, k, ret;

	fd = memreg_open();
	if (fd < 0)
		fail("open /dev/memreg: %s", strerror(-fd));
	ret = memreg_cache_create(fd, NULL, &c.c);
	if (ret)
		fail("memreg_cache_create: %s", strerror(-ret));
	buf = map_touched(16 * PAGE);
	ret = memreg_mr_get(c.c, buf, 16 * PAGE, RW, &c.want);
	if (ret)
		fail("memreg_mr_get (miss): %s", strerror(-ret));
	c.addr = buf + PAGE;
	noop_batch(&nb, &nc, fd);
	if (memreg_stats(fd, &before))
		fail("STATS: %s", strerror(errno));
	for (k = 0; k < ROUNDS; k++) {
		if (k % 2) {
			hit[k] = measure(&lb);
			noop[k] = measure(&nb);
		} else {
			noop[k] = measure(&nb);
			hit[k] = measure(&lb);
		}
	}
	if (memreg_stats(fd, &after))
		fail("STATS: %s", strerror(errno));
	if (after.registrations != before.registrations ||
	    after.cache_hits != before.cache_hits || after.cache_misses != before.cache_misses)
		fail("memreg_mr_get() hits reached the kernel (%llu REGISTER calls)",
		     (unsigned long long)(after.cache_hits + after.cache_misses -
					  before.cache_hits - before.cache_misses));
	memreg_cache_get_stats(c.c, &cs);
	h = median(hit, ROUNDS);
	z = median(noop, ROUNDS);
	printf("\nlibmemreg cache hit (memreg_mr_get + memreg_mr_put) vs no-op ioctl\n"
	       "  hit %s, GET_VERSION %s; cache: %llu hits, %llu misses\n", figstr(h, "ns"),
	       figstr(z, "ns"), (unsigned long long)cs.hits, (unsigned long long)cs.misses);
	add_row("lib_cache_hit_vs_noop_ioctl", h, z, "<=0.1");
	memreg_mr_put(c.c, c.want);
	memreg_cache_destroy(c.c);
	munmap(buf, 16 * PAGE);
	close(fd);
	settle(0);
}

#define NOP_BATCH	32

/* Posts a NOP with the hand-written protocol (as ring_post_copy()). */
static int raw_post_nop(struct ring *r)
{
	struct memreg_sq_slot *s;
	__u64 pos;

	s = ring_claim(r, &pos);
	if (!s)
		return 0;
	s->sqe = (struct memreg_sqe){ .opcode = MEMREG_OP_NOP, .user_data = r->posted++ };
	ring_publish(r, s, pos);
	return 1;
}

static void raw_nop_run(void *arg, size_t n)
{
	struct ring *r = arg;
	size_t i, k;

	for (i = 0; i < n; i++) {
		unsigned long spins = 0;
		int64_t since = 0;

		ring_batch(r);
		for (k = 0; k < NOP_BATCH; k++)
			if (!raw_post_nop(r))
				fail("raw ring full with %d requests", NOP_BATCH);
		ring_submit(r);
		while (r->reaped != r->posted)
			if (!ring_reap(r))
				ring_idle(r, &spins, &since);
	}
}

struct lring_ctx {
	struct memreg_queue q;
	__u64 posted, reaped;
};

static void lib_nop_run(void *arg, size_t n)
{
	struct lring_ctx *c = arg;
	struct memreg_cqe out[NOP_BATCH];
	struct memreg_sqe *sqes[NOP_BATCH];
	size_t i, k;

	for (i = 0; i < n; i++) {
		unsigned long spins = 0;
		int64_t t0 = 0;

		/* Claimed, prepared, then submitted together: one doorbell rule. */
		for (k = 0; k < NOP_BATCH; k++) {
			sqes[k] = memreg_get_sqe(&c->q);
			if (!sqes[k])
				fail("memreg_get_sqe found the ring full with %zu requests", k);
			memreg_prep_nop(sqes[k]);
			memreg_sqe_set_data64(sqes[k], c->posted++);
		}
		if (memreg_submit_batch(&c->q, sqes, NOP_BATCH))
			fail("memreg_submit_batch of %d requests failed", NOP_BATCH);
		while (c->reaped != c->posted) {
			unsigned int got = memreg_reap_cqes(&c->q, out, NOP_BATCH), j;

			for (j = 0; j < got; j++, c->reaped++)
				if (out[j].user_data != c->reaped || out[j].status)
					fail("libmemreg NOP %llu: user_data %llu, status %d",
					     (unsigned long long)c->reaped,
					     (unsigned long long)out[j].user_data, out[j].status);
			if (got)
				continue;
			if (++spins % 1024) {
				cpu_relax();
				continue;
			}
			sched_yield();
			if (!t0)
				t0 = now_ns();
			else if (now_ns() - t0 > 10000 * MS)
				fail("libmemreg: no NOP completion for 10 s");
		}
	}
}

static void bench_lib_ring(void)
{
	struct lring_ctx lc = { 0 };
	struct ring raw;
	struct batch rb = { .max_n = 1 << 20, .run = raw_nop_run, .arg = &raw };
	struct batch lb = { .max_n = 1 << 20, .run = lib_nop_run, .arg = &lc };
	struct fig fr[ROUNDS], fl[ROUNDS], r, l;
	int fd, k, ret;

	fd = memreg_open();
	if (fd < 0)
		fail("open /dev/memreg: %s", strerror(-fd));
	ring_open(&raw, fd);
	raw.len = 0;
	ret = memreg_queue_init(fd, RING_SQ, RING_CQ, -1, &lc.q);
	if (ret)
		fail("memreg_queue_init: %s", strerror(-ret));
	for (k = 0; k < ROUNDS; k++) {
		if (k % 2) {
			fl[k] = measure(&lb);
			fr[k] = measure(&rb);
		} else {
			fr[k] = measure(&rb);
			fl[k] = measure(&lb);
		}
	}
	r = per(median(fr, ROUNDS), NOP_BATCH);
	l = per(median(fl, ROUNDS), NOP_BATCH);
	printf("\nlibmemreg rings vs the hand-written protocol: %d NOPs posted, then reaped\n"
	       "  libmemreg %s, hand-written %s per request\n", NOP_BATCH, figstr(l, "ns"),
	       figstr(r, "ns"));
	add_row("lib_ring_nop_vs_raw_ring", l, r, "<=1.1");
	memreg_queue_exit(&lc.q);
	ring_close(&raw);
	close(fd);
	settle(0);
}

/*
 * libmemreg's pool ALLOC + FREE through the free-buffer ring: one
 * memreg_pool_alloc() of a 4 KiB buffer (a pop) and one memreg_pool_free()
 * of it (a push), no system call, against one no-op ioctl.
 */
#define PR_BUFS		64

struct pring_ctx {
	struct memreg_pool pool;
	struct memreg_pool_cache *pc;	/* through this cache, if not NULL */
	const char *op;
	int err;
	int bad;
};

static void pring_run(void *arg, size_t n)
{
	struct pring_ctx *c = arg;
	struct memreg_pool_buf b;
	size_t i;
	int ret;

	for (i = 0; i < n; i++) {
		ret = c->pc ? memreg_pool_cache_alloc(c->pc, 4 * KIB, 0, 0, &b) :
			      memreg_pool_alloc(&c->pool, 4 * KIB, 0, 0, &b);
		if (ret) {
			c->op = c->pc ? "memreg_pool_cache_alloc" : "memreg_pool_alloc";
			c->err = -ret;
			break;
		}
		c->bad |= b.size != 4 * KIB || !b.key;
		ret = c->pc ? memreg_pool_cache_free(c->pc, (void *)(unsigned long)b.addr) :
			      memreg_pool_free(&c->pool, (void *)(unsigned long)b.addr);
		if (ret) {
			c->op = c->pc ? "memreg_pool_cache_free" : "memreg_pool_free";
			c->err = -ret;
			break;
		}
	}
}

static void pring_finish(void *arg, size_t n)
{
	struct pring_ctx *c = arg;

	(void)n;
	if (c->err)
		fail("%s: %s%s", c->op, strerror(c->err), err_hint(c->err));
	if (c->bad)
		fail("memreg_pool_alloc gave a buffer of another size, or without a key");
}

/* Class 0's `lent` from POOL_RING. */
static __u64 pring_lent(struct memreg_pool *pool)
{
	struct memreg_pool_ring_class rc;
	struct memreg_pool_ring r = { .pool = pool->id, .count = 1,
				      .classes = (unsigned long)&rc };

	if (ioctl(pool->fd, MEMREG_IOC_POOL_RING, &r))
		fail("POOL_RING: %s", strerror(errno));
	return rc.lent;
}

static void bench_pool_ring(void)
{
	struct memreg_pool_class cl = { .buffer_size = 4 * KIB, .max_buffers = PR_BUFS,
					.initial = PR_BUFS };
	struct memreg_pool_params params = { .access = RW, .leak_timeout_ms = 1000 };
	struct pring_ctx c = { 0 }, cc = { 0 };
	struct batch b[3] = {
		{ .max_n = (size_t)1 << 32, .run = pring_run, .finish = pring_finish, .arg = &c },
		{ .max_n = (size_t)1 << 32, .run = pring_run, .finish = pring_finish, .arg = &cc },
	};
	struct memreg_pool_stats st0, st;
	struct fig f[3][ROUNDS], h, hc, z;
	struct noop_ctx nc;
	int fd, i, k, ret;

	fd = memreg_open();
	if (fd < 0)
		fail("open /dev/memreg: %s", strerror(-fd));
	ret = memreg_pool_init(fd, &cl, 1, &params, &c.pool);
	if (ret)
		fail("memreg_pool_init: %s", strerror(-ret));
	ret = memreg_pool_ring_init(&c.pool);
	if (ret)
		fail("memreg_pool_ring_init: %s%s", strerror(-ret), err_hint(-ret));
	/* Untimed: the pool's work maps every buffer and lends it to the ring. */
	for (i = 0; i < 2000 && pring_lent(&c.pool) != PR_BUFS; i++)
		usleep(5000);
	if (pring_lent(&c.pool) != PR_BUFS)
		fail("pool %u: %llu buffers lent to the ring after 10 s, expected %d", c.pool.id,
		     (unsigned long long)pring_lent(&c.pool), PR_BUFS);
	ret = memreg_pool_cache_create(&c.pool, 32, &cc.pc);
	if (ret)
		fail("memreg_pool_cache_create: %s", strerror(-ret));
	if (memreg_pool_stats(&c.pool, &st0, 1) != 1)
		fail("POOL_STATS failed");
	noop_batch(&b[2], &nc, fd);
	/* Rounds rotate the order, so a drift in the emulator's speed hits all alike. */
	for (k = 0; k < ROUNDS; k++)
		for (i = 0; i < 3; i++)
			f[(i + k) % 3][k] = measure(&b[(i + k) % 3]);
	memreg_pool_cache_destroy(cc.pc);
	/* The ring path was taken: the kernel allocated nothing, nobody waited. */
	if (memreg_pool_stats(&c.pool, &st, 1) != 1)
		fail("POOL_STATS failed");
	if (st.allocated != st0.allocated || st.waits != st0.waits ||
	    st.timeouts != st0.timeouts || st.grows != st0.grows ||
	    pring_lent(&c.pool) != PR_BUFS)
		fail("memreg_pool_alloc/free reached the kernel: allocated %llu -> %llu, waits "
		     "%llu -> %llu, timeouts %llu -> %llu, grows %llu -> %llu, lent %llu",
		     (unsigned long long)st0.allocated, (unsigned long long)st.allocated,
		     (unsigned long long)st0.waits, (unsigned long long)st.waits,
		     (unsigned long long)st0.timeouts, (unsigned long long)st.timeouts,
		     (unsigned long long)st0.grows, (unsigned long long)st.grows,
		     (unsigned long long)pring_lent(&c.pool));
	h = median(f[0], ROUNDS);
	hc = median(f[1], ROUNDS);
	z = median(f[2], ROUNDS);
	printf("\nlibmemreg pool ALLOC + FREE through a thread's cache and through the "
	       "free-buffer ring vs no-op ioctl\n"
	       "  cache %s, ring %s, GET_VERSION %s; POOL_STATS: %llu allocated, %llu waits\n",
	       figstr(hc, "ns"), figstr(h, "ns"), figstr(z, "ns"),
	       (unsigned long long)st.allocated, (unsigned long long)st.waits);
	add_row("pool_alloc_free_userspace_vs_noop_ioctl", hc, z, "<=0.1");
	add_row("pool_ring_alloc_free_vs_noop_ioctl", h, z, "");
	memreg_pool_exit(&c.pool);
	close(fd);
	settle(0);
}

/*
 * The helper programs sit next to this one: /bin in the guest, build/guest-bin
 * on a host (scripts/bench-host.sh).
 */
static char helper_dir[256] = "/bin";

static void find_helper_dir(void)
{
	char self[sizeof(helper_dir)];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *slash;

	if (n <= 0)
		return;
	self[n] = '\0';
	slash = strrchr(self, '/');
	if (!slash || slash == self)
		return;
	*slash = '\0';
	snprintf(helper_dir, sizeof(helper_dir), "%s", self);
}

/* The path of helper program `name` in `buf`. */
static const char *helper(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", helper_dir, name);
	return buf;
}

#define RUST_NOP_BENCH	"memreg-rs-ring_nop_bench"

/* One NOP posted and busy-polled through libmemreg, as the Rust program does. */
static void c_nop_round_trip(void *arg, size_t n)
{
	struct lring_ctx *c = arg;
	struct memreg_sqe s;
	struct memreg_cqe out;
	size_t i;

	memreg_prep_nop(&s);
	for (i = 0; i < n; i++) {
		memreg_sqe_set_data64(&s, c->posted);
		if (memreg_queue_post_wait(&c->q, &s, 10000))
			fail("memreg_queue_post_wait failed");
		while (!memreg_reap_cqes(&c->q, &out, 1))
			cpu_relax();
		if (out.user_data != c->posted || out.status)
			fail("libmemreg NOP %llu: user_data %llu, status %d",
			     (unsigned long long)c->posted, (unsigned long long)out.user_data,
			     out.status);
		c->posted++;
	}
}

/* Runs the Rust program for `iterations` round trips: its ns per round trip. */
static double rust_nop(size_t iterations)
{
	char cmd[512], line[128], prog[300];
	double ns = 0;
	FILE *f;

	helper(prog, sizeof(prog), RUST_NOP_BENCH);
	snprintf(cmd, sizeof(cmd), "'%s' %zu", prog, iterations);
	f = popen(cmd, "r");
	if (!f)
		fail("cannot run %s: %s", prog, strerror(errno));
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "ns_per_op %lf", &ns) == 1)
			break;
	if (pclose(f) != 0 || ns <= 0)
		fail("%s did not report a time", prog);
	return ns;
}

#define UCX_CLIENT	"memreg-ucx-rcache"
#define OFI_CLIENT	"memreg-ofi-mrcache"

/*
 * Runs a client with `args` and returns the figure of its "BENCH `name` ns"
 * line (the client times itself over its iterations and checks that each
 * was what it claims: a hit, or a miss); unresolved when it printed none.
 */
static struct fig client_fig(const char *prog, const char *args, const char *name)
{
	char cmd[512], line[256], key[64], path[300];
	struct fig f = { 0, 0 };
	double ns;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "'%s' %s 2>/dev/null", helper(path, sizeof(path), prog), args);
	p = popen(cmd, "r");
	if (!p)
		fail("cannot run %s: %s", prog, strerror(errno));
	while (fgets(line, sizeof(line), p))
		if (sscanf(line, "BENCH %63s %lf", key, &ns) == 2 && !strcmp(key, name) &&
		    ns > 0 && isfinite(ns))
			f = (struct fig){ ns, 1 };
	if (pclose(p) != 0)
		f.ok = 0;
	return f;
}

/*
 * The clients' rows: UCX's ucs_rcache with memreg as its event source
 * against UCX's own memory hooks (a hit, and a miss whose REGISTER is a
 * watch), and libfabric's MR cache with memreg as its monitor (a hit against
 * a miss that registers with siw). Each figure is the median of ROUNDS runs
 * of the client, the runs of a row alternating.
 */
static void bench_clients(void)
{
	struct fig hm[ROUNDS], hh[ROUNDS], mm[ROUNDS], mh[ROUNDS], oh[ROUNDS], om[ROUNDS];
	char u[300], o[300];
	int k;

	if (access(helper(u, sizeof(u), UCX_CLIENT), X_OK) ||
	    access(helper(o, sizeof(o), OFI_CLIENT), X_OK)) {
		printf("\nthe clients are not installed: no ucx_* or ofi_* rows\n");
		return;
	}
	for (k = 0; k < ROUNDS; k++) {
		hm[k] = client_fig(UCX_CLIENT, "--monitor=memreg --bench 20000", "ucx_rcache_hit_ns");
		hh[k] = client_fig(UCX_CLIENT, "--monitor=hooks --bench 20000", "ucx_rcache_hit_ns");
		mm[k] = client_fig(UCX_CLIENT, "--monitor=memreg --bench 2000", "ucx_rcache_miss_ns");
		mh[k] = client_fig(UCX_CLIENT, "--monitor=hooks --bench 2000", "ucx_rcache_miss_ns");
		oh[k] = client_fig(OFI_CLIENT, "--bench 2000", "ofi_mr_reg_hit_ns");
		om[k] = client_fig(OFI_CLIENT, "--bench 2000", "ofi_mr_reg_miss_ns");
	}
	printf("\nUCX's ucs_rcache, memreg (watch-only) vs UCX's hooks; libfabric's MR cache\n"
	       "  rcache hit: memreg %s, hooks %s; miss: memreg %s, hooks %s\n"
	       "  fi_mr_reg: hit %s, miss %s\n",
	       figstr(median(hm, ROUNDS), "ns"), figstr(median(hh, ROUNDS), "ns"),
	       figstr(median(mm, ROUNDS), "ns"), figstr(median(mh, ROUNDS), "ns"),
	       figstr(median(oh, ROUNDS), "ns"), figstr(median(om, ROUNDS), "ns"));
	add_row("ucx_rcache_hit_memreg_vs_hooks", median(hm, ROUNDS), median(hh, ROUNDS), "<=1.1");
	add_row("ucx_rcache_miss_watch_vs_hooks", median(mm, ROUNDS), median(mh, ROUNDS), "<=1.5");
	add_row("ofi_mr_reg_hit_vs_miss_speedup", median(oh, ROUNDS), median(om, ROUNDS), ">=10");
}

static void bench_rust_ring(void)
{
	struct lring_ctx lc = { 0 };
	struct batch cb = { .max_n = 1 << 20, .run = c_nop_round_trip, .arg = &lc };
	struct fig fc[ROUNDS], fr[ROUNDS], c, r;
	struct memreg_sqe s;
	struct memreg_cqe out;
	size_t iterations;
	char prog[300];
	int fd, k, ret;

	if (access(helper(prog, sizeof(prog), RUST_NOP_BENCH), X_OK)) {
		printf("\n%s not installed: no rust_ring_nop_vs_c_ring row\n", RUST_NOP_BENCH);
		return;
	}
	fd = memreg_open();
	if (fd < 0)
		fail("open /dev/memreg: %s", strerror(-fd));
	ret = memreg_queue_init(fd, 64, 64, -1, &lc.q);
	if (ret)
		fail("memreg_queue_init: %s", strerror(-ret));
	/* The Rust program warms up with 1000 round trips: so does this. */
	memreg_prep_nop(&s);
	for (k = 0; k < 1000; k++) {
		memreg_sqe_set_data64(&s, lc.posted);
		if (memreg_queue_run(&lc.q, &s, &out) || out.user_data != lc.posted)
			fail("libmemreg NOP warm-up failed");
		lc.posted++;
	}
	/*
	 * The Rust program times twice as many round trips as one C batch
	 * holds: a batch lasts the shortest interval the clock resolves, and
	 * the Rust run must too even when it is the faster.
	 */
	fc[0] = measure(&cb);
	iterations = 2 * cb.n < 2000 ? 2000 : 2 * cb.n;
	for (k = 0; k < ROUNDS; k++) {
		double ns;

		if (k % 2)
			fc[k] = measure(&cb);
		ns = rust_nop(iterations);
		fr[k] = (struct fig){ .ns = ns,
				      .ok = clk.ok && ns * iterations >= clk.thr_ns &&
					    ns * iterations >= 1000 * clk.step_ns };
		if (!(k % 2))
			fc[k] = measure(&cb);
	}
	c = median(fc, ROUNDS);
	r = median(fr, ROUNDS);
	printf("\nRust crate vs libmemreg: one NOP posted, its completion busy-polled\n"
	       "  Rust %s, C %s per round trip (%zu a run)\n", figstr(r, "ns"), figstr(c, "ns"),
	       iterations);
	add_row("rust_ring_nop_vs_c_ring", r, c, "<=1.1");
	memreg_queue_exit(&lc.q);
	close(fd);
	settle(0);
}

/*
 * The baseline of the growth row: mmap of 1 MiB, first touch of each page,
 * REGISTER miss; DEREGISTER and munmap in the finish, untimed.
 */
struct fault_reg {
	int fd;
	char *maps[POOL_CAP / MIB];
	__u64 keys[POOL_CAP / MIB];
	size_t done;
	int err, cached;
};

static void fault_reg_run(void *arg, size_t n)
{
	struct fault_reg *f = arg;
	size_t i, o;

	for (i = 0; i < n; i++) {
		struct memreg_register r = { .length = MIB, .access = RW };
		char *p = mmap(NULL, MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED) {
			f->err = errno;
			break;
		}
		for (o = 0; o < MIB; o += 4096)
			p[o] = 1;
		f->maps[i] = p;
		r.addr = (unsigned long)p;
		if (ioctl(f->fd, MEMREG_IOC_REGISTER, &r)) {
			f->err = errno;
			munmap(p, MIB);
			break;
		}
		f->keys[i] = r.lkey;
		f->cached |= r.flags & MEMREG_REGISTER_CACHED;
	}
	f->done = i;
}

static void fault_reg_finish(void *arg, size_t n)
{
	struct fault_reg *f = arg;
	size_t i;

	(void)n;
	for (i = 0; i < f->done; i++) {
		if (memreg_deregister(f->fd, f->keys[i]))
			fail("DEREGISTER: %s", strerror(errno));
		munmap(f->maps[i], MIB);
	}
	if (f->err)
		fail("mmap + touch + REGISTER of 1 MiB (%zu of a batch): %s", f->done + 1,
		     strerror(f->err));
	if (f->cached)
		fail("REGISTER of a freshly mapped MiB was a cache hit");
	f->done = 0;
	settle(0);
}

static void bench_pool_grow(void)
{
	struct bp_grow g = { 0 };
	struct fault_reg f = { 0 };
	struct batch gb = { .max_n = MEMREG_MAX_POOLS, .prepare = bp_grow_prepare,
			    .run = bp_grow_run, .finish = bp_grow_finish, .arg = &g };
	struct batch fb = { .max_n = POOL_CAP / MIB, .run = fault_reg_run,
			    .finish = fault_reg_finish, .arg = &f };
	struct fig grow[ROUNDS], base[ROUNDS], a, b;
	unsigned long polls;
	int k;

	f.fd = memreg_open();
	if (f.fd < 0)
		fail("open /dev/memreg: %s", strerror(errno));
	/* Every REGISTER must be a miss: nothing parked to revive. */
	if (mr_set_parking(f.fd, 0))
		fail("SET_CACHE: %s", strerror(errno));
	for (k = 0; k < ROUNDS; k++) {
		if (k % 2) {
			base[k] = measure(&fb);
			grow[k] = measure(&gb);
		} else {
			grow[k] = measure(&gb);
			base[k] = measure(&fb);
		}
	}
	polls = g.polls;
	a = median(grow, ROUNDS);
	b = median(base, ROUNDS);
	printf("\nBuffer pool growth per MiB (mmap until one 1 MiB extent is mapped) vs "
	       "mmap + first touch + REGISTER miss of 1 MiB (parking off)\n"
	       "  growth %s, mmap + touch + REGISTER %s; %lu POOL_STATS polls in all\n",
	       figstr(a, "ns/MiB"), figstr(b, "ns/MiB"), polls);
	add_row("pool_grow_per_mib_vs_fault_and_register", a, b, "<=1.2");
	close(f.fd);
	settle(0);
}

/* ---- main --------------------------------------------------------------- */

/* The module's limits; fails at once if the look-up rows cannot run. */
static void print_module_limits(void)
{
	struct memreg_global_stats g;
	int ret = mr_global_now(&g);

	if (ret)
		fail("GLOBAL_STATS: %s", strerror(-ret));
	printf("module: max_registrations=%llu, max_pinned_pages=%llu (0: no limit)\n",
	       (unsigned long long)g.max_registrations, (unsigned long long)g.budget_pages);
	if (g.max_registrations < lk_sizes[LK_SIZES - 1])
		fail("max_registrations=%llu is below the %zu registrations the look-up rows "
		     "hold in one context: load memreg with max_registrations=1048576",
		     (unsigned long long)g.max_registrations, lk_sizes[LK_SIZES - 1]);
}

/* The sections "memreg-bench only a,b" runs; NULL runs every one. */
static const char *only_sections;

/* Whether section `name` runs. */
static bool want(const char *name)
{
	size_t l = strlen(name);
	const char *p = only_sections;

	if (!p)
		return true;
	while (*p) {
		const char *e = strchrnul(p, ',');

		if ((size_t)(e - p) == l && !strncmp(p, name, l))
			return true;
		p = *e ? e + 1 : e;
	}
	return false;
}

int main(int argc, char **argv)
{
	/*
	 * "memreg-bench lib": only the rows of the user-space libraries;
	 * "memreg-bench clients": only the clients' rows;
	 * "memreg-bench host": every row but the clients' (which set up
	 * soft-iWARP on a dummy device), on a machine of one's own, with the
	 * REGISTER miss rows only when the kernel has CONFIG_GUP_TEST;
	 * "memreg-bench only hit,ring": only the sections named (miss, hit,
	 * userspace_hit, park, munmap, ring, peer_write, pingpong, lookup,
	 * pool_ops, pool_grow, lib_cache_hit, lib_ring, pool_ring, rust_ring,
	 * clients), for work on one part; their rows are a subset of the table.
	 */
	bool lib_only = argc > 1 && !strcmp(argv[1], "lib");
	bool clients_only = argc > 1 && !strcmp(argv[1], "clients");
	bool host = argc > 1 && !strcmp(argv[1], "host");
	bool only = argc > 2 && !strcmp(argv[1], "only");
	int gup;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 1 && !lib_only && !clients_only && !host && !only)
		fail("usage: memreg-bench [lib|clients|host|only SECTION,...]");
	if (only)
		only_sections = argv[2];
	find_helper_dir();
	if (host)
		printf("memreg benchmark (this machine: every figure is a ratio against a baseline "
		       "timed in the same run)\n");
	else
		printf("memreg benchmark (guest under emulation: compare the ratios, not the times)\n");
	settle_clocksource();
	calibrate_clock();
	print_clock();
	if (clients_only) {
		bench_clients();
		print_results();
		return 0;
	}
	if (!lib_only) {
		/* The look-up rows need the module loaded for them. */
		print_module_limits();
		gup = want("miss") ? open("/sys/kernel/debug/gup_test", O_RDWR) : -1;
		if (gup >= 0) {
			bench_miss(gup);
			close(gup);
		} else if (host || only) {
			if (want("miss"))
				printf("\nno /sys/kernel/debug/gup_test (CONFIG_GUP_TEST, "
				       "debugfs): no register_miss_per_page rows\n");
		} else {
			fail("open /sys/kernel/debug/gup_test (CONFIG_GUP_TEST): %s",
			     strerror(errno));
		}
		if (want("hit"))
			bench_hit();
		if (want("userspace_hit"))
			bench_userspace_hit();
		if (want("park"))
			bench_park();
		if (want("munmap"))
			bench_munmap();
		if (want("ring"))
			bench_ring();
		if (want("peer_write"))
			bench_peer_write();
		if (want("pingpong"))
			bench_pingpong();
		if (want("lookup"))
			bench_lookup();
		if (want("pool_ops"))
			bench_pool_ops();
		if (want("pool_grow"))
			bench_pool_grow();
	}
	if (want("lib_cache_hit"))
		bench_lib_cache_hit();
	if (want("lib_ring"))
		bench_lib_ring();
	if (want("pool_ring"))
		bench_pool_ring();
	if (want("rust_ring"))
		bench_rust_ring();
	if (!lib_only && !host && want("clients"))
		bench_clients();
	print_results();
	return 0;
}
