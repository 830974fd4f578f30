// SPDX-License-Identifier: (LGPL-2.1 OR MIT)
/*
 * The device, its registrations and its state words.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "libmemreg.h"
#include "internal.h"

int memreg_open(void)
{
	int fd = open("/dev/memreg", O_RDWR | O_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

int memreg_get_version(int fd, __u32 *version)
{
	return memreg__ioctl(fd, MEMREG_IOC_GET_VERSION, version);
}

int memreg_register(int fd, const void *addr, __u64 length, __u32 access,
		    struct memreg_register *reg)
{
	memset(reg, 0, sizeof(*reg));
	reg->addr = (__u64)(unsigned long)addr;
	reg->length = length;
	reg->access = access;
	return memreg__ioctl(fd, MEMREG_IOC_REGISTER, reg);
}

int memreg_register_ex(int fd, const void *addr, __u64 length, __u32 access,
		       __u32 flags, __u64 user_data, struct memreg_register *reg)
{
	memset(reg, 0, sizeof(*reg));
	reg->addr = (__u64)(unsigned long)addr;
	reg->length = length;
	reg->access = access;
	reg->flags = flags;
	reg->user_data = user_data;
	return memreg__ioctl(fd, MEMREG_IOC_REGISTER, reg);
}

int memreg_revalidate(int fd, __u64 key)
{
	struct memreg_revalidate r = { .key = key };

	return memreg__ioctl(fd, MEMREG_IOC_REVALIDATE, &r);
}

int memreg_deregister(int fd, __u64 key)
{
	struct memreg_deregister d = { .key = key };

	return memreg__ioctl(fd, MEMREG_IOC_DEREGISTER, &d);
}

int memreg_query(int fd, __u64 key, struct memreg_query *query)
{
	memset(query, 0, sizeof(*query));
	query->key = key;
	return memreg__ioctl(fd, MEMREG_IOC_QUERY, query);
}

int memreg_copy(int fd, __u64 key, __u64 offset, void *buf, __u64 length,
		__u32 direction)
{
	struct memreg_copy c = {
		.key = key,
		.offset = offset,
		.length = length,
		.buf = (__u64)(unsigned long)buf,
		.direction = direction,
	};

	return memreg__ioctl(fd, MEMREG_IOC_COPY, &c);
}

int memreg_stats(int fd, struct memreg_stats *stats)
{
	memset(stats, 0, sizeof(*stats));
	return memreg__ioctl(fd, MEMREG_IOC_STATS, stats);
}

int memreg_global_stats(int fd, struct memreg_global_stats *stats)
{
	memset(stats, 0, sizeof(*stats));
	return memreg__ioctl(fd, MEMREG_IOC_GLOBAL_STATS, stats);
}

int memreg_get_cache(int fd, struct memreg_cache_config *config)
{
	memset(config, 0, sizeof(*config));
	return memreg__ioctl(fd, MEMREG_IOC_GET_CACHE, config);
}

int memreg_set_cache(int fd, const struct memreg_cache_config *config)
{
	/* SET_CACHE only reads its argument. */
	return memreg__ioctl(fd, MEMREG_IOC_SET_CACHE, (void *)config);
}

int memreg_flush(int fd, struct memreg_flush *flush)
{
	struct memreg_flush unused;

	if (!flush)
		flush = &unused;
	memset(flush, 0, sizeof(*flush));
	return memreg__ioctl(fd, MEMREG_IOC_FLUSH, flush);
}

int memreg_state_words_map(int fd, __u32 slots, struct memreg_state_words *sw)
{
	void *p;

	memset(sw, 0, sizeof(*sw));
	if (!slots || slots > MEMREG_MAX_SLOTS)
		return -EINVAL;
	p = mmap(NULL, (size_t)slots * sizeof(__u64), PROT_READ, MAP_SHARED, fd,
		 MEMREG_MMAP_STATE_WORDS);
	if (p == MAP_FAILED)
		return -errno;
	sw->words = p;
	sw->slots = slots;
	return 0;
}

void memreg_state_words_unmap(struct memreg_state_words *sw)
{
	if (sw->words)
		munmap((void *)sw->words, (size_t)sw->slots * sizeof(__u64));
	memset(sw, 0, sizeof(*sw));
}
