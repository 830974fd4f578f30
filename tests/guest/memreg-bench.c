// SPDX-License-Identifier: GPL-2.0
/*
 * memreg benchmark: every figure is a ratio against a baseline measured in
 * the same run (the guest runs under emulation, so absolute times mean
 * little):
 *
 *  - REGISTER miss, per page, against raw pin_user_pages_fast(FOLL_LONGTERM |
 *    FOLL_WRITE) timed in the kernel by CONFIG_GUP_TEST's PIN_FAST_BENCHMARK,
 *    for 4 KiB to 256 MiB of pre-faulted, small-page memory;
 *  - REGISTER hit against a no-op ioctl (GET_VERSION on the same file);
 *  - munmap of a registered 1 MiB range against an unregistered one.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <linux/memreg.h>

#include "../../../mm/gup_test.h"

#define PAGE		4096UL
#define FOLL_WRITE	0x01
#define FOLL_LONGTERM	0x100

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what)
{
	fprintf(stderr, "memreg-bench: %s: %s\n", what, strerror(errno));
	exit(1);
}

static char *map_touched(size_t len)
{
	char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("mmap");
	/* Small pages: the per-page worst case for both sides. */
	madvise(p, len, MADV_NOHUGEPAGE);
	memset(p, 1, len);
	return p;
}

static const char *verdict(double ratio, double target)
{
	return ratio <= target ? "meets" : "MISSES";
}

int main(void)
{
	static const size_t sizes[] = { 4096, 65536, 1 << 20, 16 << 20, 256 << 20 };
	int fd = open("/dev/memreg", O_RDWR | O_CLOEXEC);
	int gup = open("/sys/kernel/debug/gup_test", O_RDWR);
	double v[64], w[64];
	unsigned int i, k;

	if (fd < 0)
		die("open /dev/memreg");
	if (gup < 0)
		die("open /sys/kernel/debug/gup_test (CONFIG_GUP_TEST)");

	printf("memreg benchmark (guest under emulation: compare the ratios, not the times)\n\n");
	printf("REGISTER miss vs pin_user_pages_fast, per page (target: <= 1.3x from 1 MiB)\n");
	printf("%10s %14s %14s %8s %9s\n", "size", "pin us/page", "miss us/page", "ratio",
	       "extents");
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t len = sizes[i], pages = len / PAGE;
		int reps = pages >= 65536 ? 5 : pages >= 4096 ? 9 : 31;
		char *buf = map_touched(len);
		double pin, miss, ratio;
		__u32 extents = 0;

		for (k = 0; k < (unsigned int)reps; k++) {
			struct gup_test g = {
				.addr = (unsigned long)buf,
				.size = len,
				.nr_pages_per_call = 512,
				.gup_flags = FOLL_WRITE | FOLL_LONGTERM,
			};
			struct memreg_register r = {
				.addr = (unsigned long)buf,
				.length = len,
				.access = MEMREG_ACCESS_LOCAL_READ | MEMREG_ACCESS_LOCAL_WRITE,
			};
			struct memreg_deregister d = { 0 };
			double t0;

			if (ioctl(gup, PIN_FAST_BENCHMARK, &g))
				die("PIN_FAST_BENCHMARK");
			v[k] = g.get_delta_usec * 1e3;
			t0 = now_ns();
			if (ioctl(fd, MEMREG_IOC_REGISTER, &r))
				die("REGISTER");
			w[k] = now_ns() - t0;
			if (r.flags & MEMREG_REGISTER_CACHED) {
				errno = EEXIST;
				die("REGISTER was a cache hit");
			}
			if (k == 0) {
				struct memreg_query q = { .key = r.lkey };

				if (ioctl(fd, MEMREG_IOC_QUERY, &q))
					die("QUERY");
				extents = q.extents;
			}
			d.key = r.lkey;
			if (ioctl(fd, MEMREG_IOC_DEREGISTER, &d))
				die("DEREGISTER");
		}
		pin = median(v, reps) / 1e3 / pages;
		miss = median(w, reps) / 1e3 / pages;
		ratio = pin > 0 ? miss / pin : 0;
		if (len >= (1 << 20))
			printf("%8zu K %14.3f %14.3f %7.2fx %9u  %s\n", len >> 10, pin, miss, ratio,
			       extents, verdict(ratio, 1.3));
		else if (pin > 0)
			printf("%8zu K %14.3f %14.3f %7.2fx %9u\n", len >> 10, pin, miss, ratio, extents);
		else
			printf("%8zu K %14s %14.3f %8s %9u\n", len >> 10, "<1us total", miss, "n/a",
			       extents);
		munmap(buf, len);
	}

	{
		const int n = 20000;
		char *buf = map_touched(16 * PAGE);
		struct memreg_register r = {
			.addr = (unsigned long)buf,
			.length = 16 * PAGE,
			.access = MEMREG_ACCESS_LOCAL_READ | MEMREG_ACCESS_LOCAL_WRITE,
		};
		struct memreg_deregister d = { 0 };
		double t0, null_ns, hit_ns;
		__u32 version;

		if (ioctl(fd, MEMREG_IOC_REGISTER, &r))
			die("REGISTER");
		d.key = r.lkey;
		for (k = 0; k < 5; k++) {
			int j;

			t0 = now_ns();
			for (j = 0; j < n; j++)
				if (ioctl(fd, MEMREG_IOC_GET_VERSION, &version))
					die("GET_VERSION");
			v[k] = (now_ns() - t0) / n;
			t0 = now_ns();
			for (j = 0; j < n; j++) {
				struct memreg_register h = {
					.addr = (unsigned long)buf + PAGE,
					.length = 4 * PAGE,
					.access = MEMREG_ACCESS_LOCAL_READ,
				};

				if (ioctl(fd, MEMREG_IOC_REGISTER, &h) ||
				    !(h.flags & MEMREG_REGISTER_CACHED))
					die("REGISTER hit");
			}
			w[k] = (now_ns() - t0) / n;
			for (j = 0; j < n; j++)
				if (ioctl(fd, MEMREG_IOC_DEREGISTER, &d))
					die("DEREGISTER");
		}
		null_ns = median(v, 5);
		hit_ns = median(w, 5);
		printf("\nREGISTER hit vs no-op ioctl (target: <= 1.5x)\n");
		printf("%18s %10.0f ns\n%18s %10.0f ns\n%18s %9.2fx  %s\n", "no-op ioctl", null_ns,
		       "REGISTER hit", hit_ns, "ratio", hit_ns / null_ns,
		       verdict(hit_ns / null_ns, 1.5));
		ioctl(fd, MEMREG_IOC_DEREGISTER, &d);
		munmap(buf, 16 * PAGE);
	}

	{
		const int reps = 21;
		const size_t len = 1 << 20;
		double plain, registered;

		for (k = 0; k < (unsigned int)reps; k++) {
			struct memreg_register r = {
				.length = len,
				.access = MEMREG_ACCESS_LOCAL_READ | MEMREG_ACCESS_LOCAL_WRITE,
			};
			char *a = map_touched(len), *b = map_touched(len);
			double t0;

			r.addr = (unsigned long)b;
			if (ioctl(fd, MEMREG_IOC_REGISTER, &r))
				die("REGISTER");
			t0 = now_ns();
			munmap(a, len);
			v[k] = now_ns() - t0;
			t0 = now_ns();
			munmap(b, len);
			w[k] = now_ns() - t0;
		}
		plain = median(v, reps);
		registered = median(w, reps);
		printf("\nmunmap of 1 MiB, registered vs not (target: <= 2x)\n");
		printf("%18s %10.1f us\n%18s %10.1f us\n%18s %9.2fx  %s\n", "unregistered",
		       plain / 1e3, "registered", registered / 1e3, "ratio", registered / plain,
		       verdict(registered / plain, 2.0));
	}
	close(gup);
	close(fd);
	return 0;
}
