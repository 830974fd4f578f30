// SPDX-License-Identifier: (LGPL-2.1 OR MIT)
/*
 * Peers: passing a descriptor (the grant), attaching it, connecting queues.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "libmemreg.h"
#include "internal.h"

int memreg_send_fd(int sock, int fd)
{
	char byte = 'F';
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = u.buf,
		.msg_controllen = sizeof(u.buf),
	};
	struct cmsghdr *c;
	ssize_t n;

	memset(&u, 0, sizeof(u));
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	do {
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n == 1 ? 0 : -EIO;
}

int memreg_recv_fd(int sock)
{
	char byte;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = u.buf,
		.msg_controllen = sizeof(u.buf),
	};
	struct cmsghdr *c;
	ssize_t n;
	int fd;

	do {
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ECONNRESET;
	c = CMSG_FIRSTHDR(&msg);
	if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
	    c->cmsg_len != CMSG_LEN(sizeof(int)))
		return -EPROTO;
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	if (msg.msg_flags & MSG_CTRUNC) {
		close(fd);
		return -EPROTO;
	}
	return fd;
}

int memreg_peer_attach(int fd, int peer_fd, __u32 *peer)
{
	struct memreg_peer_attach a = { .fd = peer_fd };
	int ret = memreg__ioctl(fd, MEMREG_IOC_PEER_ATTACH, &a);

	*peer = ret ? 0 : a.peer;
	return ret;
}

int memreg_peer_detach(int fd, __u32 peer)
{
	struct memreg_peer_detach d = { .peer = peer };

	return memreg__ioctl(fd, MEMREG_IOC_PEER_DETACH, &d);
}

int memreg_peer_revoke(int fd)
{
	return ioctl(fd, MEMREG_IOC_PEER_REVOKE) ? -errno : 0;
}

int memreg_queue_connect(int fd, __u32 queue, __u32 peer, __u32 remote_queue,
			 __u32 rnr_timeout_ms)
{
	struct memreg_queue_connect c = {
		.queue = queue,
		.peer = peer,
		.remote_queue = remote_queue,
		.rnr_timeout_ms = rnr_timeout_ms,
	};

	return memreg__ioctl(fd, MEMREG_IOC_QUEUE_CONNECT, &c);
}
