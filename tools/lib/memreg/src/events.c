// SPDX-License-Identifier: (LGPL-2.1 OR MIT)
/*
 * The event ring: what ended or suspended a registration, read without a
 * system call, and the resynchronisation after an overflow.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "libmemreg.h"
#include "internal.h"

/*
 * The ring's user data array, where the header says it is, if it lies
 * within the mapping after the entries; NULL otherwise (older kernels).
 */
static const __u64 *user_data_array(const struct memreg_events *ev)
{
	__u64 off = ev->ring->user_data_offset;
	__u64 entries_end = MEMREG_EVENTS_OFFSET +
			    (__u64)ev->entries * sizeof(struct memreg_event);

	if (!off || off % sizeof(__u64) || off < entries_end ||
	    off > ev->ring_bytes ||
	    ev->ring_bytes - off < (__u64)ev->entries * sizeof(__u64))
		return NULL;
	return (const __u64 *)((const char *)ev->ring + off);
}

int memreg_events_init(int fd, __u32 entries, int eventfd,
		       struct memreg_events *ev)
{
	struct memreg_events_setup s = { .entries = entries, .eventfd = eventfd };
	void *p;
	int ret;

	memset(ev, 0, sizeof(*ev));
	ev->fd = -1;
	ret = memreg__ioctl(fd, MEMREG_IOC_EVENTS_SETUP, &s);
	if (ret)
		return ret;
	p = mmap(NULL, s.ring_bytes, PROT_READ, MAP_SHARED, fd, MEMREG_MMAP_EVENTS);
	if (p == MAP_FAILED)
		return -errno;
	ev->ring = p;
	ev->events = (const struct memreg_event *)((const char *)p + MEMREG_EVENTS_OFFSET);
	ev->ring_bytes = s.ring_bytes;
	p = mmap(NULL, memreg__page_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		 MEMREG_MMAP_EVENTS_HEAD);
	if (p == MAP_FAILED) {
		ret = -errno;
		munmap((void *)ev->ring, ev->ring_bytes);
		memset(ev, 0, sizeof(*ev));
		ev->fd = -1;
		return ret;
	}
	ev->head = p;
	ev->fd = fd;
	ev->entries = entries;
	ev->user_data = user_data_array(ev);
	return 0;
}

void memreg_events_exit(struct memreg_events *ev)
{
	if (ev->ring)
		munmap((void *)ev->ring, ev->ring_bytes);
	if (ev->head)
		munmap(ev->head, memreg__page_size());
	memset(ev, 0, sizeof(*ev));
	ev->fd = -1;
}

unsigned int memreg_events_ready(const struct memreg_events *ev)
{
	__u32 tail = __atomic_load_n(&ev->ring->tail, __ATOMIC_ACQUIRE);
	__u32 head = __atomic_load_n(ev->head, __ATOMIC_RELAXED);

	return tail - head <= ev->entries ? tail - head : 0;
}

bool memreg_events_overflowed(const struct memreg_events *ev)
{
	return __atomic_load_n(&ev->ring->flags, __ATOMIC_ACQUIRE) &
	       MEMREG_EVENTS_OVERFLOW;
}

unsigned int memreg_events_read(struct memreg_events *ev, struct memreg_event *out,
				unsigned int max)
{
	return memreg_events_read_user_data(ev, out, NULL, max);
}

unsigned int memreg_events_read_user_data(struct memreg_events *ev,
					  struct memreg_event *out,
					  __u64 *user_data, unsigned int max)
{
	__u32 head = __atomic_load_n(ev->head, __ATOMIC_RELAXED);
	__u32 tail = __atomic_load_n(&ev->ring->tail, __ATOMIC_ACQUIRE);
	unsigned int n = 0;

	if (tail - head > ev->entries)
		return 0;
	while (head != tail && n < max) {
		if (out)
			out[n] = ev->events[head & (ev->entries - 1)];
		if (user_data)
			user_data[n] = memreg_event_user_data(ev, head);
		head++;
		n++;
	}
	if (n)
		__atomic_store_n(ev->head, head, __ATOMIC_RELEASE);
	return n;
}

void memreg_events_advance(struct memreg_events *ev, unsigned int nr)
{
	__u32 head = __atomic_load_n(ev->head, __ATOMIC_RELAXED);
	unsigned int ready = memreg_events_ready(ev);

	if (nr > ready)
		nr = ready;
	__atomic_store_n(ev->head, head + nr, __ATOMIC_RELEASE);
}

int memreg_events_resync(int fd, struct memreg_resync_entry *entries,
			 __u32 capacity, __u32 *count)
{
	struct memreg_events_resync r = {
		.entries = (__u64)(unsigned long)entries,
		.capacity = capacity,
	};
	int ret = memreg__ioctl(fd, MEMREG_IOC_EVENTS_RESYNC, &r);

	if (!ret && count)
		*count = r.count;
	return ret;
}
