// SPDX-License-Identifier: GPL-2.0
/*
 * memreg-hello: the shortest libmemreg program. It registers two pages
 * through the registration cache, copies a string from the first to the
 * second with a COPY request on a queue, then unmaps the pages and sees
 * the registration end by itself.
 *
 *   cc memreg-hello.c $(pkg-config --cflags --libs memreg)
 */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <libmemreg.h>

#define PAGE	4096

int main(void)
{
	const struct memreg_cqe *cqe;
	struct memreg_cache *cache;
	struct memreg_queue q;
	struct memreg_sqe *sqe;
	struct memreg_mr *mr;
	__u64 src, dst;
	char *buf;
	int fd, ret;

	fd = memreg_open();
	if (fd < 0) {
		fprintf(stderr, "memreg_open: %s\n", strerror(-fd));
		return 1;
	}
	ret = memreg_cache_create(fd, NULL, &cache);
	if (ret)
		goto err;
	ret = memreg_queue_init(fd, 8, 8, -1, &q);
	if (ret)
		goto err;

	buf = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return 1;
	snprintf(buf, PAGE, "hello, memreg");

	/* Register both pages: offsets count from the registration's start. */
	ret = memreg_mr_get(cache, buf, 2 * PAGE,
			    MEMREG_ACCESS_LOCAL_READ | MEMREG_ACCESS_LOCAL_WRITE, &mr);
	if (ret)
		goto err;
	src = buf - (char *)memreg_mr_addr(mr);
	dst = src + PAGE;

	/* COPY page 0 to page 1 through the ring; the worker executes it. */
	sqe = memreg_get_sqe(&q);
	if (!sqe)
		return 1;
	memreg_prep_copy(sqe, memreg_mr_lkey(mr), dst, memreg_mr_lkey(mr), src,
			 strlen(buf) + 1);
	memreg_sqe_set_data64(sqe, 1);
	ret = memreg_submit(&q, sqe);
	if (ret)
		goto err;
	ret = memreg_wait_cqe(&q, &cqe, -1);
	if (ret)
		goto err;
	if (cqe->status) {
		ret = cqe->status;
		goto err;
	}
	memreg_cqe_seen(&q, cqe);
	printf("copied: %s\n", buf + PAGE);
	if (strcmp(buf + PAGE, "hello, memreg"))
		return 1;

	/* munmap ends the registration before it returns. */
	printf("valid before munmap: %d\n", memreg_mr_valid(mr));
	munmap(buf, 2 * PAGE);
	printf("valid after munmap:  %d\n", memreg_mr_valid(mr));
	if (memreg_mr_valid(mr))
		return 1;

	memreg_mr_put(cache, mr);
	memreg_queue_exit(&q);
	memreg_cache_destroy(cache);
	close(fd);
	return 0;
err:
	fprintf(stderr, "memreg-hello: %s\n", strerror(-ret));
	return 1;
}
