// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: peers (one-sided WRITE and READ, two-sided SEND and
 * RECV between processes), through libmemreg.
 *
 * - PEER_ATTACH, PEER_DETACH, PEER_REVOKE and QUEUE_CONNECT: their errors,
 *   the attachment limit, handles never reused, owner only, the grant by
 *   SCM_RIGHTS and by inheritance;
 * - WRITE and READ: every access right, bounds, wrong, guessed, stale,
 *   parked, revived and flushed remote keys, the key of one peer presented
 *   for another, fields an opcode does not use;
 * - SEND and RECV: immediate data, the oldest RECV first, ping-pong,
 *   several sending processes (each one's order kept), receiver not ready,
 *   message too long, a RECV whose buffer ended, the RECV limit;
 * - failure: revoke, detach and close during a stream, the target killed
 *   mid-transfer, the target range unmapped or mprotected mid-stream
 *   (memory mapped at the same address afterwards never receives a byte),
 *   two processes attached to each other and both killed (the module-wide
 *   counters come back to their values before the test).
 *
 * Most tests fork a "target" process: it opens its own /dev/memreg file,
 * registers buffers, sends its descriptor over a unix socket (SCM_RIGHTS)
 * followed by its keys, then serves commands from the test over that
 * socket (check or change its memory, register, post RECVs, ...).
 *
 * Buffers are private anonymous memory with MADV_NOHUGEPAGE, so that no
 * huge page split suspends a registration under a test. Run as root, with
 * no other memreg file open.
 */
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "memreg_util.h"
#include "memreg_util.h"

#include "../kselftest_harness.h"
#include "memreg_harness.h"

#define ALL		MEMREG_ACCESS_ALL
#define LREAD		MEMREG_ACCESS_LOCAL_READ
#define LWRITE		MEMREG_ACCESS_LOCAL_WRITE
#define RREAD		MEMREG_ACCESS_REMOTE_READ
#define RWRITE		MEMREG_ACCESS_REMOTE_WRITE

/* How long "nothing happens" is watched for. */
#define QUIET_MS	300

/* ---- Helpers ---- */

/* A context that parks and never evicts for idleness. */
static int open_ctx(void)
{
	struct memreg_cache_config c = { .parking = 1, .max_parked = 1024,
					 .max_parked_pages = 262144, .idle_ms = 0 };
	int fd = memreg_open();

	if (fd < 0)
		return -1;
	if (memreg_set_cache(fd, &c)) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Closes every descriptor from 3 up, but `keep` (a forked child's start). */
static void close_others(int keep)
{
	int fd;

	for (fd = 3; fd < 1024; fd++)
		if (fd != keep)
			close(fd);
}

static void print_global(const char *what, const struct memreg_global_stats *g)
{
	fprintf(stderr, "%s: contexts %llu alive %llu regions %llu pages %llu peers %llu\n", what,
		(unsigned long long)g->contexts, (unsigned long long)g->contexts_alive,
		(unsigned long long)g->regions, (unsigned long long)g->pages_pinned,
		(unsigned long long)g->peers);
}

/*
 * Waits up to `ms` for the module-wide counters (contexts, contexts_alive,
 * regions, pages_pinned, peers) to be back at `base`; 0 or -ETIMEDOUT.
 */
static int wait_baseline(const struct memreg_global_stats *base, int ms)
{
	struct memreg_global_stats g;
	int i;

	for (i = 0; i <= ms / 10; i++) {
		if (mr_global_now(&g))
			return -EIO;
		if (g.contexts == base->contexts && g.contexts_alive == base->contexts_alive &&
		    g.regions == base->regions && g.pages_pinned == base->pages_pinned &&
		    g.peers == base->peers)
			return 0;
		usleep(10000);
	}
	print_global("now ", &g);
	print_global("want", base);
	return -ETIMEDOUT;
}

/* The module-wide count of attachments, or -1. */
static long global_peers(void)
{
	struct memreg_global_stats g;

	if (mr_global_now(&g))
		return -1;
	return (long)g.peers;
}

/* Posts `sqe` and returns the status of its completion (-ETIMEDOUT: none came). */
static int run_status(struct memreg_queue *q, const struct memreg_sqe *sqe)
{
	struct memreg_cqe c;

	if (memreg_queue_run(q, sqe, &c))
		return -ETIMEDOUT;
	return c.status;
}

/* Reads or writes exactly `len` bytes; 0 or -1. */
static int xread(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = read(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= n;
	}
	return 0;
}

static int xwrite(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= n;
	}
	return 0;
}

/* ---- The target process ---- */

#define TGT_NBUF	16

/*
 * What a target registers: buffer i, len[i] bytes filled with fill[i],
 * registered whole with access[i] (not registered when 0).
 */
struct tgt_cfg {
	unsigned int nbuf;
	size_t len[TGT_NBUF];
	__u32 access[TGT_NBUF];
	int fill[TGT_NBUF];
	__u32 sq, cq;		/* its queue; 0: none */
};

/* What it sends after its descriptor. */
struct tgt_info {
	__s32 err;
	__u32 queue;
	__u64 addr[TGT_NBUF];
	__u64 rkey[TGT_NBUF];
	__u64 lkey[TGT_NBUF];
};

struct tgt {
	pid_t pid;
	int sock;
	__u32 peer;		/* the test's handle of it, 0 if not attached */
	struct tgt_info info;
};

enum tgt_op {
	T_CHECK = 1,	/* buf, a: off, b: len, c: byte -> 1 if all bytes equal it */
	T_FILL,		/* buf, a: off, b: len, c: byte */
	T_GET,		/* buf, a: off, b: len; the bytes follow the reply */
	T_REMAP,	/* buf, a: byte: munmap, fresh memory at the same address */
	T_MPROTECT,	/* buf, a: prot */
	T_SNAP,		/* buf: keep a copy of its bytes */
	T_SNAPCMP,	/* buf -> how many bytes differ from the copy */
	T_REG,		/* buf, a: off, b: len (0: all), c: access -> rkey, lkey, flags */
	T_DEREG,	/* buf: DEREGISTER of its current lkey */
	T_FLUSH,	/* -> parked registrations ended */
	T_REVOKE,
	T_CLOSE,	/* unmap the queue, close the file, then fill buf with a: byte */
	T_SENDFD,	/* send the memreg descriptor again */
	T_RECV,		/* buf, a: user_data, b: off, c: len: post a RECV */
	T_REAP,		/* a: n, b: timeout_ms -> count; the cqes follow */
	T_ATTACH,	/* receive a descriptor, attach it -> handle */
	T_CONNECT,	/* a: peer, b: remote queue, c: rnr_timeout_ms */
	T_ECHO,		/* a: rounds: RECV into buf, SEND it back -> rounds done */
	T_QSTATS,	/* -> messages, rnr_timeouts, remote_bytes */
};

struct tcmd {
	__u32 op;
	__u32 buf;
	__u64 a, b, c;
};

struct trep {
	__s64 ret;
	__u64 v[3];
};

struct tgt_state {
	int sock;
	int fd;
	const struct tgt_cfg *cfg;
	struct tgt_info info;
	char *buf[TGT_NBUF];
	char *snap[TGT_NBUF];
	struct memreg_queue q;
};

static int tgt_serve(struct tgt_state *st, const struct tcmd *c)
{
	struct trep r = { 0 };
	struct memreg_register reg;
	struct memreg_sqe s;
	struct memreg_cqe cqes[256];
	struct memreg_queue_stats qs;
	struct memreg_flush fl;
	size_t len = c->buf < TGT_NBUF ? st->cfg->len[c->buf] : 0;
	char *b = c->buf < TGT_NBUF ? st->buf[c->buf] : NULL;
	unsigned int n;
	__u64 i;
	int fd;

	switch (c->op) {
	case T_CHECK:
		r.ret = c->a + c->b <= len && all_bytes(b + c->a, c->b, (int)c->c);
		break;
	case T_FILL:
		if (c->a + c->b > len)
			r.ret = -EINVAL;
		else
			memset(b + c->a, (int)c->c, c->b);
		break;
	case T_GET:
		if (c->a + c->b > len) {
			r.ret = -EINVAL;
			break;
		}
		if (xwrite(st->sock, &r, sizeof(r)) || xwrite(st->sock, b + c->a, c->b))
			return -1;
		return 0;
	case T_REMAP:
		if (munmap(b, len) || map_fixed(b, len, (int)c->a) != b)
			r.ret = -errno;
		break;
	case T_MPROTECT:
		r.ret = mprotect(b, len, (int)c->a) ? -errno : 0;
		break;
	case T_SNAP:
		free(st->snap[c->buf]);
		st->snap[c->buf] = malloc(len);
		if (!st->snap[c->buf])
			r.ret = -ENOMEM;
		else
			memcpy(st->snap[c->buf], b, len);
		break;
	case T_SNAPCMP:
		for (i = 0; i < len; i++)
			r.ret += st->snap[c->buf][i] != b[i];
		break;
	case T_REG:
		r.ret = memreg_register(st->fd, b + c->a, c->b ? c->b : len - c->a, (__u32)c->c, &reg);
		if (!r.ret) {
			r.v[0] = reg.rkey;
			r.v[1] = reg.lkey;
			r.v[2] = reg.flags;
			st->info.rkey[c->buf] = reg.rkey;
			st->info.lkey[c->buf] = reg.lkey;
		}
		break;
	case T_DEREG:
		r.ret = memreg_deregister(st->fd, st->info.lkey[c->buf]);
		break;
	case T_FLUSH:
		r.ret = memreg_flush(st->fd, &fl);
		r.v[0] = fl.evicted;
		break;
	case T_REVOKE:
		r.ret = memreg_peer_revoke(st->fd);
		break;
	case T_CLOSE:
		memreg_queue_exit(&st->q);
		r.ret = close(st->fd) ? -errno : 0;
		st->fd = -1;
		if (b)
			memset(b, (int)c->a, len);
		break;
	case T_SENDFD:
		/* The reply first: the descriptor follows it. */
		if (xwrite(st->sock, &r, sizeof(r)))
			return -1;
		return memreg_send_fd(st->sock, st->fd) ? -1 : 0;
	case T_RECV:
		s = mr_sqe_recv(c->a, st->info.lkey[c->buf], c->b, c->c);
		r.ret = memreg_queue_post_wait(&st->q, &s, 5000);
		break;
	case T_REAP:
		n = c->a > 256 ? 256 : (unsigned int)c->a;
		n = memreg_wait_cqes(&st->q, cqes, n, (int)c->b);
		r.ret = n;
		if (xwrite(st->sock, &r, sizeof(r)) || xwrite(st->sock, cqes, n * sizeof(cqes[0])))
			return -1;
		return 0;
	case T_ATTACH:
		fd = memreg_recv_fd(st->sock);
		if (fd < 0) {
			r.ret = fd;
			break;
		}
		r.ret = memreg_peer_attach(st->fd, fd, (__u32 *)&r.v[0]);
		close(fd);
		break;
	case T_CONNECT:
		r.ret = memreg_queue_connect(st->fd, st->q.index, (__u32)c->a, (__u32)c->b, (__u32)c->c);
		break;
	case T_ECHO:
		for (i = 0; i < c->a; i++) {
			s = mr_sqe_recv(i, st->info.lkey[c->buf], 0, len);
			if (memreg_queue_post_wait(&st->q, &s, 5000) || memreg_wait_cqes(&st->q, cqes, 1, 5000) != 1 ||
			    cqes[0].status || cqes[0].user_data != i)
				break;
			s = mr_sqe_send_imm(1000 + i, st->info.lkey[c->buf], 0, cqes[0].bytes,
					    cqes[0].imm_data + 1);
			if (memreg_queue_post_wait(&st->q, &s, 5000) || memreg_wait_cqes(&st->q, cqes, 1, 5000) != 1 ||
			    cqes[0].status || cqes[0].user_data != 1000 + i)
				break;
		}
		r.ret = i;
		break;
	case T_QSTATS:
		r.ret = memreg_queue_stats(st->fd, &qs);
		r.v[0] = qs.messages;
		r.v[1] = qs.rnr_timeouts;
		r.v[2] = qs.remote_bytes;
		break;
	default:
		r.ret = -EINVAL;
	}
	return xwrite(st->sock, &r, sizeof(r));
}

static void __attribute__((noreturn)) tgt_main(int sock, const struct tgt_cfg *cfg)
{
	struct tgt_state st = { .sock = sock, .cfg = cfg };
	struct memreg_register reg;
	struct tcmd c;
	unsigned int i;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	close_others(sock);
	st.fd = open_ctx();
	st.info.queue = ~0U;
	if (st.fd < 0)
		st.info.err = -ENODEV;
	for (i = 0; !st.info.err && i < cfg->nbuf; i++) {
		memset(&reg, 0, sizeof(reg));
		st.buf[i] = map_buf(cfg->len[i], cfg->fill[i]);
		if (!st.buf[i])
			st.info.err = -ENOMEM;
		else if (cfg->access[i])
			st.info.err = memreg_register(st.fd, st.buf[i], cfg->len[i], cfg->access[i], &reg);
		st.info.addr[i] = (__u64)(unsigned long)st.buf[i];
		st.info.rkey[i] = reg.rkey;
		st.info.lkey[i] = reg.lkey;
	}
	if (!st.info.err && cfg->sq) {
		st.info.err = memreg_queue_init(st.fd, cfg->sq, cfg->cq, -1, &st.q);
		st.info.queue = st.q.index;
	}
	if (memreg_send_fd(sock, st.fd < 0 ? 0 : st.fd) || xwrite(sock, &st.info, sizeof(st.info)))
		_exit(1);
	while (!xread(sock, &c, sizeof(c)))
		if (tgt_serve(&st, &c))
			_exit(1);
	_exit(0);
}

/*
 * Forks a target registering what `cfg` says; receives its descriptor and
 * attaches it to `myfd` (unless it is -1), then closes it. 0 or -errno.
 */
static int tgt_start(struct tgt *t, const struct tgt_cfg *cfg, int myfd)
{
	int sp[2], fd, ret;

	memset(t, 0, sizeof(*t));
	t->sock = -1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp))
		return -errno;
	t->pid = fork();
	if (t->pid < 0)
		return -errno;
	if (t->pid == 0)
		tgt_main(sp[1], cfg);
	close(sp[1]);
	t->sock = sp[0];
	fd = memreg_recv_fd(t->sock);
	if (fd < 0)
		return fd;
	if (xread(t->sock, &t->info, sizeof(t->info))) {
		close(fd);
		return -EIO;
	}
	if (t->info.err) {
		close(fd);
		return t->info.err;
	}
	ret = myfd >= 0 ? memreg_peer_attach(myfd, fd, &t->peer) : 0;
	close(fd);
	return ret;
}

/* Runs one command; returns its result (-EIO if the target is gone). */
static __s64 tgt_cmd(struct tgt *t, __u32 op, __u32 buf, __u64 a, __u64 b, __u64 c,
		     struct trep *out)
{
	struct tcmd cmd = { .op = op, .buf = buf, .a = a, .b = b, .c = c };
	struct trep r;

	if (xwrite(t->sock, &cmd, sizeof(cmd)) || xread(t->sock, &r, sizeof(r)))
		return -EIO;
	if (out)
		*out = r;
	return r.ret;
}

/* Sends a command without waiting for its reply; 0 or -EIO. */
static int tgt_post(struct tgt *t, __u32 op, __u32 buf, __u64 a, __u64 b, __u64 c)
{
	struct tcmd cmd = { .op = op, .buf = buf, .a = a, .b = b, .c = c };

	return xwrite(t->sock, &cmd, sizeof(cmd)) ? -EIO : 0;
}

/* The reply of a command sent by tgt_post(); its result or -EIO. */
static __s64 tgt_reply(struct tgt *t, struct trep *out)
{
	struct trep r;

	if (xread(t->sock, &r, sizeof(r)))
		return -EIO;
	if (out)
		*out = r;
	return r.ret;
}

/* T_ATTACH: the target attaches our descriptor `fd`; its handle in *peer. */
static int tgt_attach(struct tgt *t, int fd, __u32 *peer)
{
	struct trep r;

	if (tgt_post(t, T_ATTACH, 0, 0, 0, 0) || memreg_send_fd(t->sock, fd) || tgt_reply(t, &r) < 0)
		return -EIO;
	*peer = (__u32)r.v[0];
	return (int)r.ret;
}

/* T_GET: `len` bytes of buffer `buf` at `off` into `out`; 0 or -errno. */
static int tgt_get(struct tgt *t, __u32 buf, __u64 off, __u64 len, void *out)
{
	struct tcmd cmd = { .op = T_GET, .buf = buf, .a = off, .b = len };
	struct trep r;

	if (xwrite(t->sock, &cmd, sizeof(cmd)) || xread(t->sock, &r, sizeof(r)))
		return -EIO;
	if (r.ret)
		return (int)r.ret;
	return xread(t->sock, out, len) ? -EIO : 0;
}

/* T_REAP: up to `n` (<= 256) completions of its queue within `ms`; how many, or -errno. */
static int tgt_reap(struct tgt *t, struct memreg_cqe *out, unsigned int n, int ms)
{
	struct tcmd cmd = { .op = T_REAP, .a = n, .b = ms };
	struct trep r;

	if (xwrite(t->sock, &cmd, sizeof(cmd)) || xread(t->sock, &r, sizeof(r)))
		return -EIO;
	if (r.ret < 0)
		return (int)r.ret;
	if (xread(t->sock, out, r.ret * sizeof(*out)))
		return -EIO;
	return (int)r.ret;
}

/* Whether bytes [off, off + len) of its buffer `buf` all equal `c` (1), not (0), or -errno. */
static int tgt_check(struct tgt *t, __u32 buf, __u64 off, __u64 len, int c)
{
	return (int)tgt_cmd(t, T_CHECK, buf, off, len, (__u8)c, NULL);
}

/* Ends it: closes the socket (it exits) and reaps it; its exit status. */
static int tgt_stop(struct tgt *t)
{
	if (t->sock >= 0)
		close(t->sock);
	t->sock = -1;
	if (t->pid <= 0)
		return 0;
	return wait_exit(t->pid);
}

/* A target with one buffer of `len` bytes, access `access`, filled with `fill`. */
static struct tgt_cfg cfg1(size_t len, __u32 access, int fill, __u32 sq, __u32 cq)
{
	struct tgt_cfg c = { .nbuf = 1, .len = { len }, .access = { access }, .fill = { fill },
			     .sq = sq, .cq = cq };

	return c;
}

/* ---- The test's side: a context, a queue, a registered buffer ---- */

struct side {
	int fd;
	struct memreg_queue q;
	char *buf;
	size_t len;
	struct memreg_register r;
};

/* Opens a context with a queue (sq, cq) and a RW|remote buffer of `len` filled with `fill`. */
static int side_open(struct side *s, size_t len, int fill, __u32 sq, __u32 cq)
{
	int ret;

	memset(s, 0, sizeof(*s));
	s->fd = open_ctx();
	if (s->fd < 0)
		return -ENODEV;
	s->len = len;
	s->buf = map_buf(len, fill);
	if (!s->buf)
		return -ENOMEM;
	ret = memreg_register(s->fd, s->buf, len, ALL, &s->r);
	if (ret)
		return ret;
	return memreg_queue_init(s->fd, sq, cq, -1, &s->q);
}

static void side_close(struct side *s)
{
	memreg_queue_exit(&s->q);
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	if (s->buf)
		munmap(s->buf, s->len);
	s->buf = NULL;
}

/* An empty fixture, for the tests that need more than the default timeout. */
FIXTURE(slow)
{
	int unused;
};

FIXTURE_SETUP(slow)
{
	self->unused = 0;
}

FIXTURE_TEARDOWN(slow)
{
}

/* ---- PEER_ATTACH, PEER_DETACH, PEER_REVOKE, QUEUE_CONNECT ---- */

/*
 * ATTACH refuses what is not an open memreg descriptor and nonzero
 * reserved fields; it accepts its own file (loopback); handles are nonzero
 * and never reused by one file, even after DETACH.
 */
TEST(attach_refuses_bad_descriptors)
{
	struct memreg_peer_attach a;
	__u32 h[8], x = 0;
	int fd = open_ctx(), other = open_ctx(), efd, devnull, closed, i, j;

	ASSERT_GE(fd, 0);
	ASSERT_GE(other, 0);
	efd = eventfd(0, EFD_CLOEXEC);
	devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
	closed = open("/dev/null", O_RDWR | O_CLOEXEC);
	ASSERT_GE(efd, 0);
	ASSERT_GE(devnull, 0);
	ASSERT_GE(closed, 0);
	close(closed);

	EXPECT_EQ(-EBADF, memreg_peer_attach(fd, -1, &x));
	EXPECT_EQ(-EBADF, memreg_peer_attach(fd, closed, &x));
	EXPECT_EQ(-EBADF, memreg_peer_attach(fd, 100000, &x));
	EXPECT_EQ(-EINVAL, memreg_peer_attach(fd, efd, &x));
	EXPECT_EQ(-EINVAL, memreg_peer_attach(fd, devnull, &x));
	EXPECT_EQ(-EINVAL, memreg_peer_attach(fd, 0, &x)) TH_LOG("stdin is not a memreg file");
	for (i = 0; i < 2; i++) {
		memset(&a, 0, sizeof(a));
		a.fd = other;
		a.reserved[i] = 1;
		EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_PEER_ATTACH, &a));
		EXPECT_EQ(EINVAL, errno);
	}
	EXPECT_EQ(0, global_peers());

	/* Good ones: the other file and our own, each more than once. */
	for (i = 0; i < 8; i++) {
		ASSERT_EQ(0, memreg_peer_attach(fd, i & 1 ? fd : other, &h[i]));
		EXPECT_NE(0, h[i]);
		for (j = 0; j < i; j++)
			EXPECT_NE(h[j], h[i]);
	}
	EXPECT_EQ(8, global_peers());
	/* Detached handles are not handed out again. */
	for (i = 0; i < 8; i++)
		EXPECT_EQ(0, memreg_peer_detach(fd, h[i]));
	EXPECT_EQ(0, global_peers());
	for (i = 0; i < 8; i++) {
		ASSERT_EQ(0, memreg_peer_attach(fd, other, &x));
		EXPECT_NE(0, x);
		for (j = 0; j < 8; j++)
			EXPECT_NE(h[j], x) TH_LOG("handle %u reused", x);
		EXPECT_EQ(0, memreg_peer_detach(fd, x));
	}
	/* The output field is ignored on input. */
	memset(&a, 0, sizeof(a));
	a.fd = other;
	a.peer = 12345;
	ASSERT_EQ(0, ioctl(fd, MEMREG_IOC_PEER_ATTACH, &a));
	EXPECT_NE(0, a.peer);
	EXPECT_EQ(0, a.reserved[0]);
	EXPECT_EQ(0, a.reserved[1]);
	EXPECT_EQ(0, memreg_peer_detach(fd, a.peer));
	close(efd);
	close(devnull);
	close(other);
	close(fd);
}

/* DETACH: ENOENT for unknown and already detached handles, EINVAL for reserved. */
TEST(detach_refuses_unknown_handles)
{
	struct memreg_peer_detach d;
	int fd = open_ctx(), other = open_ctx();
	__u32 h = 0, h2 = 0;

	ASSERT_GE(fd, 0);
	ASSERT_GE(other, 0);
	EXPECT_EQ(-ENOENT, memreg_peer_detach(fd, 0));
	EXPECT_EQ(-ENOENT, memreg_peer_detach(fd, 1));
	EXPECT_EQ(-ENOENT, memreg_peer_detach(fd, 0xffffffffU));
	ASSERT_EQ(0, memreg_peer_attach(fd, other, &h));
	/* A handle of another file is not ours. */
	ASSERT_EQ(0, memreg_peer_attach(other, fd, &h2));
	if (h2 != h)
		EXPECT_EQ(-ENOENT, memreg_peer_detach(fd, h2));
	d.peer = h;
	d.reserved = 1;
	EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_PEER_DETACH, &d));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-ENOENT, memreg_peer_detach(fd, h + 1000));
	EXPECT_EQ(0, memreg_peer_detach(fd, h));
	EXPECT_EQ(-ENOENT, memreg_peer_detach(fd, h));
	EXPECT_EQ(0, memreg_peer_detach(other, h2));
	EXPECT_EQ(-ENOENT, memreg_peer_detach(other, h2));
	EXPECT_EQ(0, global_peers());
	close(other);
	close(fd);
}

/* MEMREG_MAX_PEERS attachments per file, then ENOSPC; a detach makes room. */
TEST(attach_limit)
{
	__u32 h[MEMREG_MAX_PEERS + 1], x;
	int fd = open_ctx(), other = open_ctx(), i;

	ASSERT_GE(fd, 0);
	ASSERT_GE(other, 0);
	for (i = 0; i < MEMREG_MAX_PEERS; i++)
		ASSERT_EQ(0, memreg_peer_attach(fd, i & 1 ? fd : other, &h[i])) TH_LOG("attach %d", i);
	EXPECT_EQ(-ENOSPC, memreg_peer_attach(fd, other, &x));
	EXPECT_EQ(-ENOSPC, memreg_peer_attach(fd, fd, &x));
	EXPECT_EQ(MEMREG_MAX_PEERS, global_peers());
	/* The limit is per file. */
	ASSERT_EQ(0, memreg_peer_attach(other, fd, &x));
	EXPECT_EQ(0, memreg_peer_detach(other, x));
	/* Detaching one makes room for one, with a new handle. */
	EXPECT_EQ(0, memreg_peer_detach(fd, h[10]));
	ASSERT_EQ(0, memreg_peer_attach(fd, other, &h[MEMREG_MAX_PEERS]));
	for (i = 0; i < MEMREG_MAX_PEERS; i++)
		EXPECT_NE(h[i], h[MEMREG_MAX_PEERS]);
	EXPECT_EQ(-ENOSPC, memreg_peer_attach(fd, other, &x));
	close(other);
	close(fd);
	/* Attached to itself and to each other: all freed once both are closed. */
	EXPECT_EQ(0, mr_wait_global(0, 0, 0));
	EXPECT_EQ(0, global_peers());
}

/*
 * The peer calls on a file are its opener's: a forked child holding the
 * descriptor gets EPERM from each. Holding the descriptor is a grant
 * though: the child attaches it to a file of its own and writes into the
 * parent's registration.
 */
TEST(peer_calls_are_owner_only_inherited_descriptor_grants)
{
	struct memreg_register r;
	struct memreg_queue q;
	char *buf = map_buf(4 * PAGE, 'p');
	int fd = open_ctx(), other = open_ctx();
	__u32 h;
	pid_t pid;

	ASSERT_NE(NULL, buf);
	ASSERT_GE(fd, 0);
	ASSERT_GE(other, 0);
	ASSERT_EQ(0, memreg_register(fd, buf, 4 * PAGE, ALL, &r));
	ASSERT_EQ(0, memreg_queue_init(fd, 4, 4, -1, &q));
	ASSERT_EQ(0, memreg_peer_attach(fd, other, &h));
	pid = fork();
	ASSERT_GE(pid, 0);
	if (pid == 0) {
		struct memreg_peer_attach a = { .fd = other };
		struct memreg_peer_detach d = { .peer = h };
		struct memreg_queue_connect c = { .queue = q.index, .peer = h,
						  .remote_queue = 0, .rnr_timeout_ms = 0 };
		struct memreg_register lr;
		struct memreg_cqe cqe;
		struct memreg_sqe s;
		struct memreg_queue cq;
		char *src = map_buf(PAGE, 'c');
		int mine, rc = 0;
		__u32 ph;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (!ioctl(fd, MEMREG_IOC_PEER_ATTACH, &a) || errno != EPERM)
			rc |= 1;
		if (!ioctl(fd, MEMREG_IOC_PEER_DETACH, &d) || errno != EPERM)
			rc |= 2;
		if (!ioctl(fd, MEMREG_IOC_PEER_REVOKE) || errno != EPERM)
			rc |= 4;
		if (!ioctl(fd, MEMREG_IOC_QUEUE_CONNECT, &c) || errno != EPERM)
			rc |= 8;
		/* The inherited descriptor attached to a file of our own. */
		mine = open_ctx();
		if (mine < 0 || !src || memreg_peer_attach(mine, fd, &ph) ||
		    memreg_register(mine, src, PAGE, RW, &lr) || memreg_queue_init(mine, 4, 4, -1, &cq))
			_exit(rc | 16);
		s = mr_sqe_write(1, ph, r.rkey, PAGE + 10, lr.lkey, 0, 100);
		if (memreg_queue_run(&cq, &s, &cqe) || cqe.status || cqe.bytes != 100)
			rc |= 32;
		_exit(rc);
	}
	EXPECT_EQ(0, wait_exit(pid));
	/* Nothing the child tried on our file took effect... */
	EXPECT_EQ(0, memreg_peer_detach(fd, h));
	/* ... but its WRITE through its own file did. */
	EXPECT_TRUE(all_bytes(buf, PAGE + 10, 'p'));
	EXPECT_TRUE(all_bytes(buf + PAGE + 10, 100, 'c'));
	EXPECT_TRUE(all_bytes(buf + PAGE + 110, 3 * PAGE - 110, 'p'));
	memreg_queue_exit(&q);
	close(other);
	close(fd);
	munmap(buf, 4 * PAGE);
}

/*
 * Loopback (a file attached to itself): WRITE, READ, SEND and RECV, the
 * counters (remote_bytes, messages, the module-wide peers).
 */
TEST(loopback_moves_bytes_and_counts)
{
	struct memreg_queue_stats s0, s1;
	struct memreg_register ra, rb;
	struct memreg_cqe c;
	struct memreg_sqe s;
	struct memreg_queue q0, q1;
	char *a = map_buf(64 * PAGE, 'a'), *b = map_buf(64 * PAGE, 'b');
	int fd = open_ctx();
	__u32 h;

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, a);
	ASSERT_NE(NULL, b);
	ASSERT_EQ(0, memreg_register(fd, a, 64 * PAGE, ALL, &ra));
	ASSERT_EQ(0, memreg_register(fd, b, 64 * PAGE, ALL, &rb));
	EXPECT_NE(ra.lkey, ra.rkey);
	EXPECT_NE(ra.rkey, rb.rkey);
	ASSERT_EQ(0, memreg_queue_init(fd, 16, 16, -1, &q0));
	ASSERT_EQ(0, memreg_queue_init(fd, 16, 16, -1, &q1));
	ASSERT_EQ(0, memreg_peer_attach(fd, fd, &h));
	EXPECT_EQ(1, global_peers());
	ASSERT_EQ(0, memreg_queue_stats(fd, &s0));

	/* WRITE a's [100, 100 + 5 pages) into b at 3 pages + 7. */
	memset(a + 100, 'W', 5 * PAGE);
	s = mr_sqe_write(1, h, rb.rkey, 3 * PAGE + 7, ra.lkey, 100, 5 * PAGE);
	run_expect(_metadata, &q0, &s, 0, 5 * PAGE);
	EXPECT_TRUE(all_bytes(b, 3 * PAGE + 7, 'b'));
	EXPECT_TRUE(all_bytes(b + 3 * PAGE + 7, 5 * PAGE, 'W'));
	EXPECT_TRUE(all_bytes(b + 8 * PAGE + 7, 56 * PAGE - 7, 'b'));
	/* READ b's [0, 1000) into a at 40 pages. */
	s = mr_sqe_read(2, h, ra.lkey, 40 * PAGE, rb.rkey, 0, 1000);
	run_expect(_metadata, &q0, &s, 0, 1000);
	EXPECT_TRUE(all_bytes(a + 40 * PAGE, 1000, 'b'));
	EXPECT_EQ('a', a[40 * PAGE + 1000]);
	EXPECT_EQ('a', a[40 * PAGE - 1]);
	/* The whole registration in one request. */
	memset(a, 'X', 64 * PAGE);
	s = mr_sqe_write(3, h, rb.rkey, 0, ra.lkey, 0, 64 * PAGE);
	run_expect(_metadata, &q0, &s, 0, 64 * PAGE);
	EXPECT_TRUE(all_bytes(b, 64 * PAGE, 'X'));

	/* SEND on q0 to the RECVs of q1. */
	ASSERT_EQ(0, memreg_queue_connect(fd, q0.index, h, q1.index, 1000));
	s = mr_sqe_recv(10, rb.lkey, 0, 256);
	ASSERT_EQ(0, memreg_queue_post_wait(&q1, &s, 1000));
	memset(a, 'M', 200);
	s = mr_sqe_send(11, ra.lkey, 0, 200);
	run_expect(_metadata, &q0, &s, 0, 200);
	ASSERT_EQ(1, memreg_wait_cqes(&q1, &c, 1, 5000));
	expect_cqe(_metadata, &c, 10, 0, 200);
	EXPECT_TRUE(all_bytes(b, 200, 'M'));
	EXPECT_TRUE(all_bytes(b + 200, 56, 'X'));

	ASSERT_EQ(0, memreg_queue_stats(fd, &s1));
	EXPECT_EQ(5 * PAGE + 1000 + 64 * PAGE + 200, s1.remote_bytes - s0.remote_bytes);
	EXPECT_EQ(1, s1.messages - s0.messages);
	EXPECT_EQ(0, s1.rnr_timeouts - s0.rnr_timeouts);
	memreg_queue_exit(&q0);
	memreg_queue_exit(&q1);
	close(fd);
	/* A file attached to itself is freed on close. */
	EXPECT_EQ(0, mr_wait_global(0, 0, 0));
	EXPECT_EQ(0, global_peers());
	munmap(a, 64 * PAGE);
	munmap(b, 64 * PAGE);
}

/*
 * QUEUE_CONNECT: EINVAL for bad queues, timeouts and reserved fields,
 * ENOTCONN for unknown handles, EISCONN once connected, ENOSPC past
 * MEMREG_MAX_SENDERS queues sending to one queue, or past a quarter of them
 * from one file (one peer cannot take every slot).
 */
TEST(connect_refuses_bad_arguments)
{
	struct memreg_queue_create qc;
	struct memreg_queue_connect c;
	int fd = open_ctx(), other = open_ctx(), i, f, more[3];
	__u32 h, ho, hd, oh, mh;
	struct memreg_queue q0, q1;

	ASSERT_GE(fd, 0);
	ASSERT_GE(other, 0);
	ASSERT_EQ(0, memreg_queue_init(fd, 4, 4, -1, &q0));
	ASSERT_EQ(0, memreg_queue_init(fd, 4, 4, -1, &q1));
	ASSERT_EQ(0, memreg_peer_attach(fd, fd, &h));
	ASSERT_EQ(0, memreg_peer_attach(fd, other, &ho));
	ASSERT_EQ(0, memreg_peer_attach(fd, other, &hd));
	ASSERT_EQ(0, memreg_peer_detach(fd, hd));
	/* The other file has no queue yet. */
	EXPECT_EQ(-EINVAL, memreg_queue_connect(fd, q0.index, ho, 0, 0));
	EXPECT_EQ(-EINVAL, memreg_queue_connect(fd, 2, h, q1.index, 0));
	EXPECT_EQ(-EINVAL, memreg_queue_connect(fd, MEMREG_MAX_QUEUES, h, q1.index, 0));
	EXPECT_EQ(-EINVAL, memreg_queue_connect(fd, ~0U, h, q1.index, 0));
	EXPECT_EQ(-EINVAL, memreg_queue_connect(fd, q0.index, h, 2, 0));
	EXPECT_EQ(-EINVAL, memreg_queue_connect(fd, q0.index, h, MEMREG_MAX_QUEUES, 0));
	EXPECT_EQ(-EINVAL, memreg_queue_connect(fd, q0.index, h, q1.index,
					     MEMREG_MAX_RNR_TIMEOUT_MS + 1));
	EXPECT_EQ(-EINVAL, memreg_queue_connect(fd, q0.index, h, q1.index, ~0U));
	for (i = 0; i < 2; i++) {
		memset(&c, 0, sizeof(c));
		c.queue = q0.index;
		c.peer = h;
		c.remote_queue = q1.index;
		c.reserved[i] = 1;
		EXPECT_EQ(-1, ioctl(fd, MEMREG_IOC_QUEUE_CONNECT, &c));
		EXPECT_EQ(EINVAL, errno);
	}
	EXPECT_EQ(-ENOTCONN, memreg_queue_connect(fd, q0.index, 0, q1.index, 0));
	EXPECT_EQ(-ENOTCONN, memreg_queue_connect(fd, q0.index, h + 1000, q1.index, 0));
	EXPECT_EQ(-ENOTCONN, memreg_queue_connect(fd, q0.index, hd, q1.index, 0));
	/* None of those connected anything. */
	EXPECT_EQ(0, memreg_queue_connect(fd, q0.index, h, q1.index, MEMREG_MAX_RNR_TIMEOUT_MS));
	EXPECT_EQ(-EISCONN, memreg_queue_connect(fd, q0.index, h, q1.index, 0));
	EXPECT_EQ(-EISCONN, memreg_queue_connect(fd, q0.index, h, q0.index, 0));
	/* A queue may send to itself. */
	EXPECT_EQ(0, memreg_queue_connect(fd, q1.index, h, q1.index, 0));

	/* Senders to one queue: q0 and q1 of fd, then other files' queues, 16 of each at most. */
	ASSERT_EQ(0, memreg_peer_attach(other, fd, &oh));
	for (i = 0; i < MEMREG_MAX_SENDERS / 4; i++) {
		ASSERT_EQ(0, memreg_queue_create(other, 2, 2, -1, &qc));
		ASSERT_EQ(0, memreg_queue_connect(other, qc.queue, oh, q1.index, 0))
			TH_LOG("sender %d", i + 2);
	}
	ASSERT_EQ(0, memreg_queue_create(other, 2, 2, -1, &qc));
	EXPECT_EQ(-ENOSPC, memreg_queue_connect(other, qc.queue, oh, q1.index, 0));
	/* Another target queue has room. */
	EXPECT_EQ(0, memreg_queue_connect(other, qc.queue, oh, q0.index, 0));
	/* Three more files fill the queue's 64 slots: 2 + 16 + 16 + 16 + 14. */
	for (f = 0; f < 3; f++) {
		more[f] = open_ctx();
		ASSERT_GE(more[f], 0);
		ASSERT_EQ(0, memreg_peer_attach(more[f], fd, &mh));
		for (i = 0; i < (f < 2 ? MEMREG_MAX_SENDERS / 4 : MEMREG_MAX_SENDERS / 4 - 2); i++) {
			ASSERT_EQ(0, memreg_queue_create(more[f], 2, 2, -1, &qc));
			ASSERT_EQ(0, memreg_queue_connect(more[f], qc.queue, mh, q1.index, 0))
				TH_LOG("file %d sender %d", f, i);
		}
	}
	/* Full: the last file still has room of its own, the queue has none. */
	ASSERT_EQ(0, memreg_queue_create(more[2], 2, 2, -1, &qc));
	EXPECT_EQ(-ENOSPC, memreg_queue_connect(more[2], qc.queue, mh, q1.index, 0));
	for (f = 0; f < 3; f++)
		close(more[f]);
	memreg_queue_exit(&q0);
	memreg_queue_exit(&q1);
	close(other);
	close(fd);
	EXPECT_EQ(0, mr_wait_global(0, 0, 0));
	EXPECT_EQ(0, global_peers());
}

/* ---- WRITE and READ ---- */

/*
 * Every combination of access rights on both sides: WRITE needs
 * LOCAL_READ on the source and REMOTE_WRITE on the peer's registration,
 * READ LOCAL_WRITE on the destination and REMOTE_READ on the peer's;
 * otherwise -EACCES and nothing moves.
 */
TEST(every_access_right)
{
	struct tgt_cfg cfg = { .nbuf = 15 };
	struct memreg_register lr[16];
	struct memreg_sqe s;
	struct memreg_cqe c;
	struct tgt t;
	char *lb[16], got[4096], want[4096];
	int fd = open_ctx(), la, ra, ok, n_ok = 0, n_acc = 0, wrong = 0;
	unsigned int wrong_remote = 0;

	ASSERT_GE(fd, 0);
	ASSERT_EQ(4096, PAGE);
	for (ra = 1; ra <= 15; ra++) {
		cfg.len[ra - 1] = PAGE;
		cfg.access[ra - 1] = ra;
		cfg.fill[ra - 1] = 't';
	}
	ASSERT_EQ(0, tgt_start(&t, &cfg, fd));
	for (la = 1; la <= 15; la++) {
		lb[la] = map_buf(PAGE, 'A' + la);
		ASSERT_NE(NULL, lb[la]);
		ASSERT_EQ(0, memreg_register(fd, lb[la], PAGE, la, &lr[la]));
	}
	{
		struct memreg_queue q;

		ASSERT_EQ(0, memreg_queue_init(fd, 16, 16, -1, &q));
		/* WRITE local la [0, 64) -> remote ra [la * 64, la * 64 + 64). */
		for (ra = 1; ra <= 15; ra++) {
			for (la = 1; la <= 15; la++) {
				ok = (la & LREAD) && (ra & RWRITE);
				s = mr_sqe_write(ra * 100 + la, t.peer, t.info.rkey[ra - 1], la * 64,
						 lr[la].lkey, 0, 64);
				ASSERT_EQ(0, memreg_queue_run(&q, &s, &c));
				if (c.status != (ok ? 0 : -EACCES) || c.bytes != (ok ? 64U : 0U)) {
					if (wrong++ < 4)
						TH_LOG("WRITE local %#x remote %#x: status %d bytes %llu, want %d",
						       la, ra, c.status, (unsigned long long)c.bytes,
						       ok ? 0 : -EACCES);
					wrong_remote |= 1U << ra;
				}
			}
		}
		for (ra = 1; ra <= 15; ra++) {
			ASSERT_EQ(0, tgt_get(&t, ra - 1, 0, PAGE, got));
			memset(want, 't', PAGE);
			for (la = 1; la <= 15; la++)
				if ((la & LREAD) && (ra & RWRITE))
					memset(want + la * 64, 'A' + la, 64);
			EXPECT_EQ(0, memcmp(got, want, PAGE)) TH_LOG("remote %#x", ra);
		}
		/* READ remote ra [2048, 2112) -> local la [2048 + ra * 64, ...). */
		for (ra = 1; ra <= 15; ra++)
			ASSERT_EQ(0, tgt_cmd(&t, T_FILL, ra - 1, 2048, 64, 'a' + ra, NULL));
		for (ra = 1; ra <= 15; ra++) {
			for (la = 1; la <= 15; la++) {
				ok = (la & LWRITE) && (ra & RREAD);
				n_ok += ok;
				n_acc += !ok;
				s = mr_sqe_read(ra * 100 + la, t.peer, lr[la].lkey, 2048 + ra * 64,
						t.info.rkey[ra - 1], 2048, 64);
				ASSERT_EQ(0, memreg_queue_run(&q, &s, &c));
				if (c.status != (ok ? 0 : -EACCES) || c.bytes != (ok ? 64U : 0U)) {
					if (wrong++ < 8)
						TH_LOG("READ local %#x remote %#x: status %d bytes %llu, want %d",
						       la, ra, c.status, (unsigned long long)c.bytes,
						       ok ? 0 : -EACCES);
					wrong_remote |= 1U << ra;
				}
			}
		}
		for (la = 1; la <= 15; la++) {
			memset(want, 'A' + la, PAGE);
			for (ra = 1; ra <= 15; ra++)
				if ((la & LWRITE) && (ra & RREAD))
					memset(want + 2048 + ra * 64, 'a' + ra, 64);
			EXPECT_EQ(0, memcmp(lb[la], want, PAGE)) TH_LOG("local %#x", la);
		}
		memreg_queue_exit(&q);
	}
	EXPECT_EQ(64, n_ok);
	EXPECT_EQ(225 - 64, n_acc);
	EXPECT_EQ(0, wrong) TH_LOG("%d wrong statuses; remote access sets involved: mask %#x",
				   wrong, wrong_remote);
	EXPECT_EQ(0, tgt_stop(&t));
	close(fd);
}

/* Remote keys look random: 64 registrations, no two keys alike in either half. */
TEST(remote_keys_look_random)
{
	struct memreg_register r[64];
	char *buf = map_buf(64 * PAGE, 'k');
	int fd = open_ctx(), i, j, bits = 0;

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	for (i = 0; i < 64; i++)
		ASSERT_EQ(0, memreg_register(fd, buf + i * PAGE, PAGE, ALL, &r[i]));
	for (i = 0; i < 64; i++) {
		EXPECT_NE(r[i].lkey, r[i].rkey);
		for (j = 0; j < i; j++) {
			EXPECT_NE(r[j].rkey >> 32, r[i].rkey >> 32) TH_LOG("%d %d", i, j);
			EXPECT_NE((__u32)r[j].rkey, (__u32)r[i].rkey) TH_LOG("%d %d", i, j);
			EXPECT_NE(r[j].lkey, r[i].rkey);
		}
		if (i)
			bits += __builtin_popcountll(r[i].rkey ^ r[i - 1].rkey);
	}
	/* Consecutive keys differ in about half their bits (mean 32, sd 0.5). */
	EXPECT_LE(63 * 28, bits) TH_LOG("mean bits differing %d/63", bits);
	EXPECT_GE(63 * 36, bits) TH_LOG("mean bits differing %d/63", bits);
	close(fd);
	munmap(buf, 64 * PAGE);
}

/*
 * Wrong, guessed and stale remote keys: -ENOENT, nothing moves. Parking ends
 * a registration's remote key for good: a REGISTER that revives it hands out
 * a new one (and a new local key of the same sequence) while the old one
 * stays dead; once FLUSH ended it the new key is dead too. A handle never
 * attached, or detached: -ENOTCONN.
 */
TEST(wrong_guessed_and_stale_keys)
{
	struct tgt_cfg cfg = { .nbuf = 2, .len = { 16 * PAGE, 4 * PAGE },
			       .access = { ALL, ALL }, .fill = { 't', 'u' } };
	struct side b;
	struct trep rep;
	struct memreg_sqe s;
	__u64 rk, bad[8], old;
	unsigned int seed = 12345;
	__u32 h2;
	int i, n_enoent = 0, pfd;
	struct tgt t;

	ASSERT_EQ(0, side_open(&b, 16 * PAGE, 'b', 16, 16));
	ASSERT_EQ(0, tgt_start(&t, &cfg, b.fd));
	rk = t.info.rkey[0];

	bad[0] = rk ^ 1;
	bad[1] = rk + 1;
	bad[2] = rk - 1;
	bad[3] = ~rk;
	bad[4] = 0;
	bad[5] = rk ^ (1ULL << 63);
	bad[6] = t.info.lkey[0];	/* its local key is not a remote key */
	bad[7] = b.r.rkey;		/* ours, presented for the target */
	for (i = 0; i < 8; i++) {
		s = mr_sqe_write(i, t.peer, bad[i], 0, b.r.lkey, 0, 64);
		EXPECT_EQ(-ENOENT, run_status(&b.q, &s)) TH_LOG("WRITE bad key %d", i);
		s = mr_sqe_read(i, t.peer, b.r.lkey, 0, bad[i], 0, 64);
		EXPECT_EQ(-ENOENT, run_status(&b.q, &s)) TH_LOG("READ bad key %d", i);
	}
	/* Guesses. */
	for (i = 0; i < 300; i++) {
		__u64 g = ((__u64)rand_r(&seed) << 42) ^ ((__u64)rand_r(&seed) << 21) ^
			  (__u64)rand_r(&seed);

		if (g == rk || g == t.info.rkey[1])
			continue;
		if (i & 1)
			s = mr_sqe_write(i, t.peer, g, 0, b.r.lkey, 0, 8);
		else
			s = mr_sqe_read(i, t.peer, b.r.lkey, 0, g, 0, 8);
		n_enoent += run_status(&b.q, &s) == -ENOENT;
	}
	EXPECT_EQ(300, n_enoent);
	EXPECT_EQ(1, tgt_check(&t, 0, 0, 16 * PAGE, 't'));
	EXPECT_TRUE(all_bytes(b.buf, 16 * PAGE, 'b'));
	/* The right key works. */
	s = mr_sqe_write(1, t.peer, rk, 8, b.r.lkey, 0, 64);
	run_expect(_metadata, &b.q, &s, 0, 64);
	EXPECT_EQ(1, tgt_check(&t, 0, 8, 64, 'b'));
	EXPECT_EQ(1, tgt_check(&t, 0, 72, 16 * PAGE - 72, 't'));

	/* Handles: never attached, or detached. */
	s = mr_sqe_write(2, 0, rk, 0, b.r.lkey, 0, 8);
	EXPECT_EQ(-ENOTCONN, run_status(&b.q, &s));
	s = mr_sqe_write(3, t.peer + 1000, rk, 0, b.r.lkey, 0, 8);
	EXPECT_EQ(-ENOTCONN, run_status(&b.q, &s));
	s = mr_sqe_read(4, ~0U, b.r.lkey, 0, rk, 0, 8);
	EXPECT_EQ(-ENOTCONN, run_status(&b.q, &s));

	/* Parked by the owner's last DEREGISTER: -ENOENT. */
	old = t.info.rkey[1];
	ASSERT_EQ(0, tgt_cmd(&t, T_DEREG, 1, 0, 0, 0, NULL));
	s = mr_sqe_write(5, t.peer, old, 0, b.r.lkey, 0, 8);
	EXPECT_EQ(-ENOENT, run_status(&b.q, &s));
	s = mr_sqe_read(6, t.peer, b.r.lkey, 0, old, 0, 8);
	EXPECT_EQ(-ENOENT, run_status(&b.q, &s));
	EXPECT_EQ(1, tgt_check(&t, 1, 0, 4 * PAGE, 'u'));
	/* Revived: new keys; the old remote key stays dead, the new one works. */
	ASSERT_EQ(0, tgt_cmd(&t, T_REG, 1, 0, 0, ALL, &rep));
	EXPECT_TRUE(rep.v[2] & MEMREG_REGISTER_REVIVED);
	EXPECT_NE(old, rep.v[0]);
	EXPECT_EQ(t.info.lkey[1] >> 24, rep.v[1] >> 24);
	EXPECT_NE(t.info.lkey[1], rep.v[1]);
	s = mr_sqe_write(7, t.peer, old, 0, b.r.lkey, 0, 8);
	EXPECT_EQ(-ENOENT, run_status(&b.q, &s));
	s = mr_sqe_read(7, t.peer, b.r.lkey, 0, old, 0, 8);
	EXPECT_EQ(-ENOENT, run_status(&b.q, &s));
	EXPECT_EQ(1, tgt_check(&t, 1, 0, 4 * PAGE, 'u'));
	EXPECT_TRUE(all_bytes(b.buf, 16 * PAGE, 'b'));
	old = rep.v[0];
	s = mr_sqe_write(7, t.peer, old, 0, b.r.lkey, 0, 8);
	run_expect(_metadata, &b.q, &s, 0, 8);
	EXPECT_EQ(1, tgt_check(&t, 1, 0, 8, 'b'));
	EXPECT_EQ(1, tgt_check(&t, 1, 8, 4 * PAGE - 8, 'u'));
	/* Parked again, then ended by FLUSH: dead for good. */
	ASSERT_EQ(0, tgt_cmd(&t, T_DEREG, 1, 0, 0, 0, NULL));
	ASSERT_EQ(0, tgt_cmd(&t, T_FLUSH, 0, 0, 0, 0, &rep));
	EXPECT_LE(1, rep.v[0]);
	s = mr_sqe_write(8, t.peer, old, 0, b.r.lkey, 0, 8);
	EXPECT_EQ(-ENOENT, run_status(&b.q, &s));
	ASSERT_EQ(0, tgt_cmd(&t, T_REG, 1, 0, 0, ALL, &rep));
	EXPECT_FALSE(rep.v[2] & MEMREG_REGISTER_REVIVED);
	EXPECT_NE(old, rep.v[0]);
	s = mr_sqe_write(9, t.peer, old, 0, b.r.lkey, 0, 8);
	EXPECT_EQ(-ENOENT, run_status(&b.q, &s));
	s = mr_sqe_write(10, t.peer, rep.v[0], 16, b.r.lkey, 0, 8);
	run_expect(_metadata, &b.q, &s, 0, 8);
	EXPECT_EQ(1, tgt_check(&t, 1, 16, 8, 'b'));

	/* Ended by munmap: dead, and the fresh memory there gets nothing. */
	old = rep.v[0];
	ASSERT_EQ(0, tgt_cmd(&t, T_REMAP, 1, 'n', 0, 0, NULL));
	for (i = 0; i < 16; i++) {
		s = mr_sqe_write(11, t.peer, old, i * 64, b.r.lkey, 0, 64);
		EXPECT_EQ(-ENOENT, run_status(&b.q, &s));
		s = mr_sqe_read(12, t.peer, b.r.lkey, 0, old, i * 64, 64);
		EXPECT_EQ(-ENOENT, run_status(&b.q, &s));
	}
	EXPECT_EQ(1, tgt_check(&t, 1, 0, 4 * PAGE, 'n'));
	EXPECT_TRUE(all_bytes(b.buf, 16 * PAGE, 'b'));

	/* Detached: -ENOTCONN, and a new attachment gets a new handle. */
	ASSERT_EQ(0, tgt_cmd(&t, T_SENDFD, 0, 0, 0, 0, NULL));
	pfd = memreg_recv_fd(t.sock);
	ASSERT_GE(pfd, 0);
	ASSERT_EQ(0, memreg_peer_attach(b.fd, pfd, &h2));
	close(pfd);
	EXPECT_NE(t.peer, h2);
	ASSERT_EQ(0, memreg_peer_detach(b.fd, t.peer));
	s = mr_sqe_write(13, t.peer, rk, 0, b.r.lkey, 0, 8);
	EXPECT_EQ(-ENOTCONN, run_status(&b.q, &s));
	s = mr_sqe_write(14, h2, rk, 0, b.r.lkey, 0, 8);
	EXPECT_EQ(0, run_status(&b.q, &s));
	EXPECT_EQ(0, tgt_stop(&t));
	side_close(&b);
}

/*
 * A remote key names a registration of one peer only: presented with the
 * handle of another peer (or of our own file) it is -ENOENT.
 */
TEST(key_of_one_peer_presented_for_another)
{
	struct side b;
	struct tgt t1, t2;
	struct tgt_cfg c1 = cfg1(16 * PAGE, ALL, '1', 0, 0), c2 = cfg1(16 * PAGE, ALL, '2', 0, 0);
	struct memreg_sqe s;
	__u32 hs;
	int i;

	ASSERT_EQ(0, side_open(&b, 16 * PAGE, 'b', 16, 16));
	ASSERT_EQ(0, tgt_start(&t1, &c1, b.fd));
	ASSERT_EQ(0, tgt_start(&t2, &c2, b.fd));
	ASSERT_EQ(0, memreg_peer_attach(b.fd, b.fd, &hs));
	EXPECT_NE(t1.peer, t2.peer);
	EXPECT_NE(t1.info.rkey[0], t2.info.rkey[0]);
	for (i = 0; i < 4; i++) {
		s = mr_sqe_write(1, t1.peer, t2.info.rkey[0], i * PAGE, b.r.lkey, 0, 128);
		EXPECT_EQ(-ENOENT, run_status(&b.q, &s));
		s = mr_sqe_write(2, t2.peer, t1.info.rkey[0], i * PAGE, b.r.lkey, 0, 128);
		EXPECT_EQ(-ENOENT, run_status(&b.q, &s));
		s = mr_sqe_write(3, hs, t1.info.rkey[0], i * PAGE, b.r.lkey, 0, 128);
		EXPECT_EQ(-ENOENT, run_status(&b.q, &s));
		s = mr_sqe_write(4, t1.peer, b.r.rkey, i * PAGE, b.r.lkey, 0, 128);
		EXPECT_EQ(-ENOENT, run_status(&b.q, &s));
		s = mr_sqe_read(5, t1.peer, b.r.lkey, 0, t2.info.rkey[0], i * PAGE, 128);
		EXPECT_EQ(-ENOENT, run_status(&b.q, &s));
		s = mr_sqe_read(6, t2.peer, b.r.lkey, 0, t1.info.rkey[0], i * PAGE, 128);
		EXPECT_EQ(-ENOENT, run_status(&b.q, &s));
		s = mr_sqe_read(7, hs, b.r.lkey, 0, t2.info.rkey[0], i * PAGE, 128);
		EXPECT_EQ(-ENOENT, run_status(&b.q, &s));
	}
	EXPECT_EQ(1, tgt_check(&t1, 0, 0, 16 * PAGE, '1'));
	EXPECT_EQ(1, tgt_check(&t2, 0, 0, 16 * PAGE, '2'));
	EXPECT_TRUE(all_bytes(b.buf, 16 * PAGE, 'b'));
	/* The right pairs work. */
	s = mr_sqe_write(8, t1.peer, t1.info.rkey[0], 0, b.r.lkey, 0, 128);
	run_expect(_metadata, &b.q, &s, 0, 128);
	s = mr_sqe_write(9, t2.peer, t2.info.rkey[0], PAGE, b.r.lkey, 0, 128);
	run_expect(_metadata, &b.q, &s, 0, 128);
	s = mr_sqe_read(10, t2.peer, b.r.lkey, 0, t2.info.rkey[0], 2 * PAGE, 128);
	run_expect(_metadata, &b.q, &s, 0, 128);
	s = mr_sqe_read(11, t1.peer, b.r.lkey, 128, t1.info.rkey[0], 2 * PAGE, 128);
	run_expect(_metadata, &b.q, &s, 0, 128);
	s = mr_sqe_write(12, hs, b.r.rkey, 8 * PAGE, b.r.lkey, 0, 256);
	run_expect(_metadata, &b.q, &s, 0, 256);
	EXPECT_EQ(1, tgt_check(&t1, 0, 0, 128, 'b'));
	EXPECT_EQ(1, tgt_check(&t1, 0, 128, 16 * PAGE - 128, '1'));
	EXPECT_EQ(1, tgt_check(&t2, 0, 0, PAGE, '2'));
	EXPECT_EQ(1, tgt_check(&t2, 0, PAGE, 128, 'b'));
	EXPECT_EQ(1, tgt_check(&t2, 0, PAGE + 128, 15 * PAGE - 128, '2'));
	EXPECT_TRUE(all_bytes(b.buf, 128, '2'));
	EXPECT_TRUE(all_bytes(b.buf + 128, 128, '1'));
	EXPECT_TRUE(all_bytes(b.buf + 8 * PAGE, 128, '2'));
	EXPECT_TRUE(all_bytes(b.buf + 8 * PAGE + 128, 128, '1'));
	EXPECT_EQ(0, tgt_stop(&t1));
	EXPECT_EQ(0, tgt_stop(&t2));
	side_close(&b);
}

/*
 * Ranges: past either registration -EINVAL, offset + length wrapping
 * -EOVERFLOW, nothing moved; a registration at an unaligned address counts
 * its offsets from there.
 */
TEST(remote_ranges_are_checked)
{
	struct tgt_cfg cfg = { .nbuf = 2, .len = { 16 * PAGE, 4 * PAGE },
			       .access = { ALL, 0 }, .fill = { 't', 'u' } };
	const __u64 L = 16 * PAGE;
	struct memreg_sqe s;
	struct trep rep;
	struct side b;
	struct tgt t;
	__u64 rk, sub;

	ASSERT_EQ(0, side_open(&b, 8 * PAGE, 'b', 16, 16));
	ASSERT_EQ(0, tgt_start(&t, &cfg, b.fd));
	rk = t.info.rkey[0];

	s = mr_sqe_write(1, t.peer, rk, L - 10, b.r.lkey, 0, 10);
	run_expect(_metadata, &b.q, &s, 0, 10);
	s = mr_sqe_write(2, t.peer, rk, L - 10, b.r.lkey, 0, 11);
	run_expect(_metadata, &b.q, &s, -EINVAL, 0);
	s = mr_sqe_write(3, t.peer, rk, L, b.r.lkey, 0, 1);
	run_expect(_metadata, &b.q, &s, -EINVAL, 0);
	s = mr_sqe_write(4, t.peer, rk, 0, b.r.lkey, 8 * PAGE - 5, 6);
	run_expect(_metadata, &b.q, &s, -EINVAL, 0);
	s = mr_sqe_write(5, t.peer, rk, 0, b.r.lkey, 0, L);
	run_expect(_metadata, &b.q, &s, -EINVAL, 0);
	s = mr_sqe_write(6, t.peer, rk, ~0ULL - 5, b.r.lkey, 0, 10);
	run_expect(_metadata, &b.q, &s, -EOVERFLOW, 0);
	s = mr_sqe_write(7, t.peer, rk, 0, b.r.lkey, ~0ULL - 5, 10);
	run_expect(_metadata, &b.q, &s, -EOVERFLOW, 0);
	s = mr_sqe_read(8, t.peer, b.r.lkey, 0, rk, L - 1, 2);
	run_expect(_metadata, &b.q, &s, -EINVAL, 0);
	s = mr_sqe_read(9, t.peer, b.r.lkey, 8 * PAGE, rk, 0, 1);
	run_expect(_metadata, &b.q, &s, -EINVAL, 0);
	s = mr_sqe_read(10, t.peer, b.r.lkey, 0, rk, ~0ULL, 2);
	run_expect(_metadata, &b.q, &s, -EOVERFLOW, 0);
	s = mr_sqe_read(11, t.peer, b.r.lkey, ~0ULL - 1, rk, 0, 4);
	run_expect(_metadata, &b.q, &s, -EOVERFLOW, 0);
	EXPECT_EQ(1, tgt_check(&t, 0, 0, L - 10, 't'));
	EXPECT_EQ(1, tgt_check(&t, 0, L - 10, 10, 'b'));
	EXPECT_TRUE(all_bytes(b.buf, 8 * PAGE, 'b'));

	/* A registration of [100, 1100) of the second buffer. */
	ASSERT_EQ(0, tgt_cmd(&t, T_REG, 1, 100, 1000, ALL, &rep));
	sub = rep.v[0];
	s = mr_sqe_write(12, t.peer, sub, 0, b.r.lkey, 0, 1000);
	run_expect(_metadata, &b.q, &s, 0, 1000);
	s = mr_sqe_write(13, t.peer, sub, 999, b.r.lkey, 0, 2);
	run_expect(_metadata, &b.q, &s, -EINVAL, 0);
	s = mr_sqe_write(14, t.peer, sub, 1000, b.r.lkey, 0, 1);
	run_expect(_metadata, &b.q, &s, -EINVAL, 0);
	EXPECT_EQ(1, tgt_check(&t, 1, 0, 100, 'u'));
	EXPECT_EQ(1, tgt_check(&t, 1, 100, 1000, 'b'));
	EXPECT_EQ(1, tgt_check(&t, 1, 1100, 4 * PAGE - 1100, 'u'));
	ASSERT_EQ(0, tgt_cmd(&t, T_FILL, 1, 0, 4 * PAGE, 'v', NULL));
	s = mr_sqe_read(15, t.peer, b.r.lkey, 3, sub, 0, 1000);
	run_expect(_metadata, &b.q, &s, 0, 1000);
	EXPECT_TRUE(all_bytes(b.buf + 3, 1000, 'v'));
	EXPECT_EQ('b', b.buf[2]);
	EXPECT_EQ('b', b.buf[1003]);
	EXPECT_EQ(0, tgt_stop(&t));
	side_close(&b);
}

/* Fields an opcode does not use must be zero: -EINVAL, and no RECV is consumed. */
TEST(unused_fields_are_refused)
{
	struct memreg_register ra, rb;
	struct memreg_sqe s, bad[32];
	struct memreg_cqe c[32];
	struct memreg_queue q0, q1;
	char *a = map_buf(4 * PAGE, 'a'), *b = map_buf(4 * PAGE, 'b');
	int fd = open_ctx(), n = 0, i;
	__u32 h;

	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, memreg_register(fd, a, 4 * PAGE, ALL, &ra));
	ASSERT_EQ(0, memreg_register(fd, b, 4 * PAGE, ALL, &rb));
	ASSERT_EQ(0, memreg_queue_init(fd, 32, 32, -1, &q0));
	ASSERT_EQ(0, memreg_queue_init(fd, 32, 32, -1, &q1));
	ASSERT_EQ(0, memreg_peer_attach(fd, fd, &h));

	/* SEND on a queue not connected. */
	s = mr_sqe_send(1, ra.lkey, 0, 8);
	run_expect(_metadata, &q0, &s, -ENOTCONN, 0);
	ASSERT_EQ(0, memreg_queue_connect(fd, q0.index, h, q1.index, 0));

	bad[n] = mr_sqe_nop(100 + n); bad[n].peer = h; n++;
	bad[n] = mr_sqe_fence(100 + n); bad[n].peer = h; n++;
	bad[n] = mr_sqe_copy(100 + n, rb.lkey, 0, ra.lkey, 0, 8); bad[n].peer = h; n++;
	bad[n] = mr_sqe_nop(100 + n); bad[n].flags = MEMREG_SQE_IMM; n++;
	bad[n] = mr_sqe_copy(100 + n, rb.lkey, 0, ra.lkey, 0, 8); bad[n].flags = MEMREG_SQE_IMM; n++;
	bad[n] = mr_sqe_write(100 + n, h, rb.rkey, 0, ra.lkey, 0, 8); bad[n].flags = MEMREG_SQE_IMM; n++;
	bad[n] = mr_sqe_write(100 + n, h, rb.rkey, 0, ra.lkey, 0, 8); bad[n].flags = 2; n++;
	bad[n] = mr_sqe_write(100 + n, h, rb.rkey, 0, ra.lkey, 0, 8); bad[n].reserved0 = 1; n++;
	bad[n] = mr_sqe_read(100 + n, h, rb.lkey, 0, ra.rkey, 0, 8); bad[n].flags = MEMREG_SQE_IMM; n++;
	bad[n] = mr_sqe_read(100 + n, h, rb.lkey, 0, ra.rkey, 0, 8); bad[n].flags = 0x80; n++;
	bad[n] = mr_sqe_send(100 + n, ra.lkey, 0, 8); bad[n].key = 5; n++;
	bad[n] = mr_sqe_send(100 + n, ra.lkey, 0, 8); bad[n].offset = 5; n++;
	bad[n] = mr_sqe_send(100 + n, ra.lkey, 0, 8); bad[n].peer = h; n++;
	bad[n] = mr_sqe_send(100 + n, ra.lkey, 0, 8); bad[n].flags = 2; n++;
	bad[n] = mr_sqe_send_imm(100 + n, ra.lkey, 0, 8, 7); bad[n].flags |= 4; n++;
	bad[n] = mr_sqe_send(100 + n, ra.lkey, 0, 8); bad[n].reserved0 = 2; n++;
	/* Sent from q0: none may reach q1's RECV. */
	s = mr_sqe_recv(50, rb.lkey, 0, 64);
	ASSERT_EQ(0, memreg_queue_post_wait(&q1, &s, 1000));
	for (i = 0; i < n; i++) {
		ASSERT_EQ(0, memreg_queue_run(&q0, &bad[i], &c[0]));
		EXPECT_EQ(bad[i].user_data, c[0].user_data);
		EXPECT_EQ(-EINVAL, c[0].status) TH_LOG("bad request %d (opcode %u)", i, bad[i].opcode);
		EXPECT_EQ(0, c[0].bytes);
	}
	EXPECT_EQ(0, memreg_cq_ready(&q1));
	/* Bad RECVs on q1 complete at once, and are not used either. */
	n = 0;
	bad[n] = mr_sqe_recv(200 + n, rb.lkey, 64, 64); bad[n].src_key = ra.lkey; n++;
	bad[n] = mr_sqe_recv(200 + n, rb.lkey, 64, 64); bad[n].src_offset = 1; n++;
	bad[n] = mr_sqe_recv(200 + n, rb.lkey, 64, 64); bad[n].peer = h; n++;
	bad[n] = mr_sqe_recv(200 + n, rb.lkey, 64, 64); bad[n].flags = MEMREG_SQE_IMM; n++;
	bad[n] = mr_sqe_recv(200 + n, rb.lkey, 64, 64); bad[n].key = 0; n++;
	for (i = 0; i < n; i++) {
		ASSERT_EQ(0, memreg_queue_run(&q1, &bad[i], &c[0]));
		EXPECT_EQ(bad[i].user_data, c[0].user_data);
		EXPECT_EQ(i < 4 ? -EINVAL : -ENOENT, c[0].status) TH_LOG("bad RECV %d", i);
	}
	/* The good RECV is still there and takes the good SEND. */
	memset(a, 'G', 8);
	s = mr_sqe_send(60, ra.lkey, 0, 8);
	run_expect(_metadata, &q0, &s, 0, 8);
	ASSERT_EQ(1, memreg_wait_cqes(&q1, c, 1, 5000));
	expect_cqe(_metadata, &c[0], 50, 0, 8);
	EXPECT_TRUE(all_bytes(b, 8, 'G'));
	EXPECT_TRUE(all_bytes(b + 8, 4 * PAGE - 8, 'b'));
	memreg_queue_exit(&q0);
	memreg_queue_exit(&q1);
	close(fd);
	munmap(a, 4 * PAGE);
	munmap(b, 4 * PAGE);
}

/* ---- SEND and RECV ---- */

/*
 * SEND from our queue to the RECVs the target posted: the oldest RECV
 * first, bytes and immediate data on both sides, nothing written past the
 * message, the counters.
 */
TEST(send_recv_between_processes)
{
	static const __u64 lens[4] = { 1, 64, 1024, 700 };
	struct tgt_cfg cfg = cfg1(16 * PAGE, ALL, 'r', 64, 64);
	struct memreg_queue_stats s0, s1;
	struct memreg_cqe c[8];
	struct memreg_sqe s;
	struct side b;
	struct tgt t;
	char got[4096];
	__u64 total = 0;
	int i;

	ASSERT_EQ(0, side_open(&b, 16 * PAGE, 'b', 64, 64));
	ASSERT_EQ(0, tgt_start(&t, &cfg, b.fd));
	ASSERT_EQ(0, memreg_queue_connect(b.fd, b.q.index, t.peer, t.info.queue, 2000));
	for (i = 0; i < 4; i++)
		ASSERT_EQ(0, tgt_cmd(&t, T_RECV, 0, 10 + i, i * 1024, 1024, NULL));
	ASSERT_EQ(0, memreg_queue_stats(b.fd, &s0));
	for (i = 0; i < 4; i++) {
		memset(b.buf + i * PAGE, 'A' + i, PAGE);
		if (i < 2)
			s = mr_sqe_send_imm(20 + i, b.r.lkey, i * PAGE, lens[i],
					    i ? 0xdeadbeefcafef00dULL : 0x1111);
		else
			s = mr_sqe_send(20 + i, b.r.lkey, i * PAGE, lens[i]);
		run_expect(_metadata, &b.q, &s, 0, lens[i]);
		total += lens[i];
	}
	ASSERT_EQ(0, memreg_queue_stats(b.fd, &s1));
	EXPECT_EQ(4, s1.messages - s0.messages);
	EXPECT_EQ(total, s1.remote_bytes - s0.remote_bytes);
	EXPECT_EQ(0, s1.rnr_timeouts - s0.rnr_timeouts);

	ASSERT_EQ(4, tgt_reap(&t, c, 4, 5000));
	for (i = 0; i < 4; i++) {
		EXPECT_EQ(10 + i, c[i].user_data);
		EXPECT_EQ(0, c[i].status);
		EXPECT_EQ(lens[i], c[i].bytes);
		EXPECT_EQ(i < 2 ? MEMREG_CQE_IMM : 0, c[i].flags);
		EXPECT_EQ(i == 0 ? 0x1111 : i == 1 ? 0xdeadbeefcafef00dULL : 0, c[i].imm_data);
	}
	ASSERT_EQ(0, tgt_get(&t, 0, 0, 4096, got));
	for (i = 0; i < 4; i++) {
		EXPECT_TRUE(all_bytes(got + i * 1024, lens[i], 'A' + i)) TH_LOG("message %d", i);
		EXPECT_TRUE(all_bytes(got + i * 1024 + lens[i], 1024 - lens[i], 'r'))
			TH_LOG("past message %d", i);
	}
	EXPECT_EQ(1, tgt_check(&t, 0, 4096, 15 * PAGE, 'r'));
	/* Nothing else completed on the target. */
	EXPECT_EQ(0, tgt_reap(&t, c, 1, QUIET_MS));
	EXPECT_EQ(0, tgt_stop(&t));
	side_close(&b);
}

/*
 * Both sides attached to each other, each queue connected to the other's:
 * a ping-pong of messages of changing lengths, echoed by the target with
 * its immediate data plus one.
 */
TEST(ping_pong_both_ways)
{
	struct tgt_cfg cfg = cfg1(PAGE, ALL, 'r', 16, 16);
	struct memreg_cqe c[2], *send, *recv;
	struct memreg_sqe s;
	struct side b;
	struct tgt t;
	__u32 th;
	__u64 len;
	int i, rounds = 60;

	ASSERT_EQ(0, side_open(&b, 2 * PAGE, 'b', 16, 16));
	ASSERT_EQ(0, tgt_start(&t, &cfg, b.fd));
	ASSERT_EQ(0, tgt_attach(&t, b.fd, &th));
	EXPECT_NE(0, th);
	ASSERT_EQ(0, tgt_cmd(&t, T_CONNECT, 0, th, b.q.index, 5000, NULL));
	ASSERT_EQ(0, memreg_queue_connect(b.fd, b.q.index, t.peer, t.info.queue, 5000));
	ASSERT_EQ(0, tgt_post(&t, T_ECHO, 0, rounds, 0, 0));
	for (i = 0; i < rounds; i++) {
		len = 1 + (i * 397) % PAGE;
		memset(b.buf + PAGE, 0, PAGE);
		memset(b.buf, 'a' + i % 26, len);
		s = mr_sqe_recv(500 + i, b.r.lkey, PAGE, PAGE);
		ASSERT_EQ(0, memreg_queue_post_wait(&b.q, &s, 5000));
		s = mr_sqe_send_imm(600 + i, b.r.lkey, 0, len, 3 * i);
		ASSERT_EQ(0, memreg_queue_post_wait(&b.q, &s, 5000));
		ASSERT_EQ(2, memreg_wait_cqes(&b.q, c, 2, 10000)) TH_LOG("round %d", i);
		/*
		 * Nothing orders the SEND's completion before the RECV's: the
		 * echo may fill the RECV before this worker has written the
		 * SEND's completion. Each must be there once.
		 */
		send = c[0].user_data == 600 + i ? &c[0] : &c[1];
		recv = send == &c[0] ? &c[1] : &c[0];
		EXPECT_EQ(600 + i, send->user_data) TH_LOG("round %d", i);
		EXPECT_EQ(0, send->status);
		EXPECT_EQ(len, send->bytes);
		EXPECT_EQ(0, send->flags);
		EXPECT_EQ(500 + i, recv->user_data) TH_LOG("round %d", i);
		EXPECT_EQ(0, recv->status);
		EXPECT_EQ(len, recv->bytes);
		EXPECT_EQ(MEMREG_CQE_IMM, recv->flags);
		EXPECT_EQ(3 * i + 1, recv->imm_data);
		EXPECT_TRUE(all_bytes(b.buf + PAGE, len, 'a' + i % 26)) TH_LOG("round %d", i);
		EXPECT_TRUE(all_bytes(b.buf + PAGE + len, PAGE - len, 0)) TH_LOG("round %d", i);
		if (_metadata->exit_code)
			break;
	}
	EXPECT_EQ(rounds, tgt_reply(&t, NULL));
	EXPECT_EQ(0, tgt_stop(&t));
	side_close(&b);
}

/*
 * Receiver not ready: with rnr_timeout_ms 0 a SEND finding no RECV
 * completes with -ENOBUFS at once; with 400 it waits that long, and what
 * its queue took after it completes after it; a RECV posted while a SEND
 * waits takes it.
 */
TEST(receiver_not_ready)
{
	struct tgt_cfg cfg = cfg1(4 * PAGE, ALL, 'r', 16, 16);
	struct memreg_queue_stats s0, s1;
	struct memreg_cqe c[4];
	struct memreg_sqe s;
	struct memreg_queue q2, q3;
	struct side b;
	struct tgt t;
	__u64 t0, el;

	ASSERT_EQ(0, side_open(&b, 4 * PAGE, 'b', 16, 16));
	ASSERT_EQ(0, memreg_queue_init(b.fd, 16, 16, -1, &q2));
	ASSERT_EQ(0, memreg_queue_init(b.fd, 16, 16, -1, &q3));
	ASSERT_EQ(0, tgt_start(&t, &cfg, b.fd));
	ASSERT_EQ(0, memreg_queue_connect(b.fd, b.q.index, t.peer, t.info.queue, 0));
	ASSERT_EQ(0, memreg_queue_connect(b.fd, q2.index, t.peer, t.info.queue, 400));
	ASSERT_EQ(0, memreg_queue_connect(b.fd, q3.index, t.peer, t.info.queue, 8000));
	ASSERT_EQ(0, memreg_queue_stats(b.fd, &s0));

	/* No waiting at all. */
	t0 = mrq_now_us();
	s = mr_sqe_send(1, b.r.lkey, 0, 100);
	run_expect(_metadata, &b.q, &s, -ENOBUFS, 0);
	el = mrq_now_us() - t0;
	EXPECT_GT(300000, el) TH_LOG("rnr 0 took %llu us", (unsigned long long)el);

	/* 400 ms, and the NOP posted after it waits with it. */
	t0 = mrq_now_us();
	s = mr_sqe_send(2, b.r.lkey, 0, 100);
	ASSERT_EQ(0, memreg_queue_post_wait(&q2, &s, 1000));
	s = mr_sqe_nop(3);
	ASSERT_EQ(0, memreg_queue_post_wait(&q2, &s, 1000));
	usleep(200000);
	EXPECT_EQ(0, memreg_queue_cq_tail(&q2)) TH_LOG("completed before the timeout");
	ASSERT_EQ(2, memreg_wait_cqes(&q2, c, 2, 5000));
	el = mrq_now_us() - t0;
	expect_cqe(_metadata, &c[0], 2, -ENOBUFS, 0);
	expect_cqe(_metadata, &c[1], 3, 0, 0);
	EXPECT_LE(380000, el) TH_LOG("rnr 400 took %llu us", (unsigned long long)el);
	EXPECT_GT(3000000, el) TH_LOG("rnr 400 took %llu us", (unsigned long long)el);
	ASSERT_EQ(0, memreg_queue_stats(b.fd, &s1));
	EXPECT_EQ(2, s1.rnr_timeouts - s0.rnr_timeouts);
	EXPECT_EQ(0, s1.messages - s0.messages);
	/* The SENDs that timed out are gone: a RECV posted now waits. */
	ASSERT_EQ(0, tgt_cmd(&t, T_RECV, 0, 30, 0, 4 * PAGE, NULL));
	EXPECT_EQ(0, tgt_reap(&t, c, 1, QUIET_MS));

	/* A SEND waiting (8 s) takes a RECV posted meanwhile: the one above. */
	memset(b.buf, 'S', 100);
	s = mr_sqe_send(4, b.r.lkey, 0, 100);
	run_expect(_metadata, &q3, &s, 0, 100);
	ASSERT_EQ(1, tgt_reap(&t, c, 1, 5000));
	expect_cqe(_metadata, &c[0], 30, 0, 100);
	t0 = mrq_now_us();
	memset(b.buf, 'T', 200);
	s = mr_sqe_send(5, b.r.lkey, 0, 200);
	ASSERT_EQ(0, memreg_queue_post_wait(&q3, &s, 1000));
	usleep(300000);
	EXPECT_EQ(1, memreg_queue_cq_tail(&q3)) TH_LOG("SEND 5 completed without a RECV");
	ASSERT_EQ(0, tgt_cmd(&t, T_RECV, 0, 31, 1000, 300, NULL));
	ASSERT_EQ(1, memreg_wait_cqes(&q3, c, 1, 5000));
	el = mrq_now_us() - t0;
	expect_cqe(_metadata, &c[0], 5, 0, 200);
	EXPECT_GT(5000000, el);
	ASSERT_EQ(1, tgt_reap(&t, c, 1, 5000));
	expect_cqe(_metadata, &c[0], 31, 0, 200);
	EXPECT_EQ(1, tgt_check(&t, 0, 0, 100, 'S'));
	EXPECT_EQ(1, tgt_check(&t, 0, 100, 900, 'r'));
	EXPECT_EQ(1, tgt_check(&t, 0, 1000, 200, 'T'));
	EXPECT_EQ(1, tgt_check(&t, 0, 1200, 4 * PAGE - 1200, 'r'));
	ASSERT_EQ(0, memreg_queue_stats(b.fd, &s1));
	EXPECT_EQ(2, s1.rnr_timeouts - s0.rnr_timeouts);
	EXPECT_EQ(2, s1.messages - s0.messages);
	memreg_queue_exit(&q2);
	memreg_queue_exit(&q3);
	EXPECT_EQ(0, tgt_stop(&t));
	side_close(&b);
}

/*
 * A message longer than the RECV it meets: both complete with -EMSGSIZE,
 * nothing is written; the next SEND takes the next RECV.
 */
TEST(message_too_long)
{
	struct tgt_cfg cfg = cfg1(8 * PAGE, ALL, 'r', 16, 16);
	struct memreg_cqe c[8];
	struct memreg_sqe s;
	struct side b;
	struct tgt t;

	ASSERT_EQ(0, side_open(&b, 8 * PAGE, 'X', 16, 16));
	ASSERT_EQ(0, tgt_start(&t, &cfg, b.fd));
	ASSERT_EQ(0, memreg_queue_connect(b.fd, b.q.index, t.peer, t.info.queue, 2000));
	ASSERT_EQ(0, tgt_cmd(&t, T_RECV, 0, 1, 0, 16, NULL));
	ASSERT_EQ(0, tgt_cmd(&t, T_RECV, 0, 2, 1024, 64, NULL));
	ASSERT_EQ(0, tgt_cmd(&t, T_RECV, 0, 3, 2048, 16, NULL));
	ASSERT_EQ(0, tgt_cmd(&t, T_RECV, 0, 4, 4 * PAGE, 4 * PAGE - 1, NULL));
	ASSERT_EQ(0, tgt_cmd(&t, T_RECV, 0, 5, 4 * PAGE, 4 * PAGE, NULL));

	s = mr_sqe_send_imm(11, b.r.lkey, 0, 17, 99);
	run_expect(_metadata, &b.q, &s, -EMSGSIZE, 0);
	memset(b.buf, 'Y', 64);
	s = mr_sqe_send(12, b.r.lkey, 0, 64);
	run_expect(_metadata, &b.q, &s, 0, 64);
	memset(b.buf, 'Z', 16);
	s = mr_sqe_send(13, b.r.lkey, 0, 16);
	run_expect(_metadata, &b.q, &s, 0, 16);
	memset(b.buf, 'W', 4 * PAGE);
	s = mr_sqe_send(14, b.r.lkey, 0, 4 * PAGE);
	run_expect(_metadata, &b.q, &s, -EMSGSIZE, 0);
	s = mr_sqe_send(15, b.r.lkey, 0, 4 * PAGE);
	run_expect(_metadata, &b.q, &s, 0, 4 * PAGE);

	ASSERT_EQ(5, tgt_reap(&t, c, 5, 5000));
	EXPECT_EQ(1, c[0].user_data);
	EXPECT_EQ(-EMSGSIZE, c[0].status);
	EXPECT_EQ(0, c[0].bytes);
	EXPECT_EQ(2, c[1].user_data);
	EXPECT_EQ(0, c[1].status);
	EXPECT_EQ(64, c[1].bytes);
	EXPECT_EQ(0, c[1].flags);
	EXPECT_EQ(3, c[2].user_data);
	EXPECT_EQ(0, c[2].status);
	EXPECT_EQ(16, c[2].bytes);
	EXPECT_EQ(4, c[3].user_data);
	EXPECT_EQ(-EMSGSIZE, c[3].status);
	EXPECT_EQ(0, c[3].bytes);
	EXPECT_EQ(5, c[4].user_data);
	EXPECT_EQ(0, c[4].status);
	EXPECT_EQ(4 * PAGE, c[4].bytes);
	EXPECT_EQ(1, tgt_check(&t, 0, 0, 1024, 'r'));
	EXPECT_EQ(1, tgt_check(&t, 0, 1024, 64, 'Y'));
	EXPECT_EQ(1, tgt_check(&t, 0, 1088, 960, 'r'));
	EXPECT_EQ(1, tgt_check(&t, 0, 2048, 16, 'Z'));
	EXPECT_EQ(1, tgt_check(&t, 0, 2064, 4 * PAGE - 2064, 'r'));
	EXPECT_EQ(1, tgt_check(&t, 0, 4 * PAGE, 4 * PAGE, 'W'));
	EXPECT_EQ(0, tgt_stop(&t));
	side_close(&b);
}

/*
 * A RECV whose registration ended before a SEND arrives completes with
 * -ENOENT, and the SEND goes on to the next RECV; the fresh memory at the
 * old address gets nothing.
 */
TEST(recv_on_ended_registration_is_skipped)
{
	struct tgt_cfg cfg = { .nbuf = 2, .len = { 4 * PAGE, 4 * PAGE }, .access = { ALL, ALL },
			       .fill = { 'x', 'y' }, .sq = 16, .cq = 16 };
	struct memreg_cqe c[4];
	struct memreg_sqe s;
	struct side b;
	struct tgt t;

	ASSERT_EQ(0, side_open(&b, 4 * PAGE, 'M', 16, 16));
	ASSERT_EQ(0, tgt_start(&t, &cfg, b.fd));
	ASSERT_EQ(0, memreg_queue_connect(b.fd, b.q.index, t.peer, t.info.queue, 2000));
	ASSERT_EQ(0, tgt_cmd(&t, T_RECV, 0, 1, 0, 4 * PAGE, NULL));
	ASSERT_EQ(0, tgt_cmd(&t, T_RECV, 0, 2, PAGE, PAGE, NULL));
	ASSERT_EQ(0, tgt_cmd(&t, T_RECV, 1, 3, 100, 1000, NULL));
	ASSERT_EQ(0, tgt_cmd(&t, T_REMAP, 0, 'n', 0, 0, NULL));
	s = mr_sqe_send_imm(10, b.r.lkey, 0, 500, 7);
	run_expect(_metadata, &b.q, &s, 0, 500);
	ASSERT_EQ(3, tgt_reap(&t, c, 3, 5000));
	expect_cqe(_metadata, &c[0], 1, -ENOENT, 0);
	expect_cqe(_metadata, &c[1], 2, -ENOENT, 0);
	EXPECT_EQ(3, c[2].user_data);
	EXPECT_EQ(0, c[2].status);
	EXPECT_EQ(500, c[2].bytes);
	EXPECT_EQ(MEMREG_CQE_IMM, c[2].flags);
	EXPECT_EQ(7, c[2].imm_data);
	EXPECT_EQ(1, tgt_check(&t, 0, 0, 4 * PAGE, 'n'));
	EXPECT_EQ(1, tgt_check(&t, 1, 0, 100, 'y'));
	EXPECT_EQ(1, tgt_check(&t, 1, 100, 500, 'M'));
	EXPECT_EQ(1, tgt_check(&t, 1, 600, 4 * PAGE - 600, 'y'));
	/* No RECV left. */
	s = mr_sqe_send(11, b.r.lkey, 0, 10);
	EXPECT_EQ(-EISCONN, memreg_queue_connect(b.fd, b.q.index, t.peer, t.info.queue, 0));
	run_expect(_metadata, &b.q, &s, -ENOBUFS, 0);
	EXPECT_EQ(0, tgt_stop(&t));
	side_close(&b);
}

/*
 * Each RECV reserves a completion: with cq_entries RECVs posted the queue
 * takes nothing more until a completion is consumed.
 */
TEST(recvs_reserve_completions)
{
	struct memreg_register ra, rb;
	struct memreg_cqe c[16];
	struct memreg_sqe s;
	struct memreg_queue qs, qr;
	char *a = map_buf(4 * PAGE, 'a'), *b = map_buf(4 * PAGE, 'b');
	int fd = open_ctx(), i;
	__u32 h;

	ASSERT_GE(fd, 0);
	ASSERT_EQ(0, memreg_register(fd, a, 4 * PAGE, ALL, &ra));
	ASSERT_EQ(0, memreg_register(fd, b, 4 * PAGE, ALL, &rb));
	ASSERT_EQ(0, memreg_queue_init(fd, 16, 16, -1, &qs));
	ASSERT_EQ(0, memreg_queue_init(fd, 8, 8, -1, &qr));
	ASSERT_EQ(0, memreg_peer_attach(fd, fd, &h));
	ASSERT_EQ(0, memreg_queue_connect(fd, qs.index, h, qr.index, 2000));
	for (i = 0; i < 9; i++) {
		s = mr_sqe_recv(i, rb.lkey, i * 64, 64);
		ASSERT_EQ(0, memreg_queue_post_wait(&qr, &s, 1000));
	}
	usleep(QUIET_MS * 1000);
	EXPECT_EQ(8, memreg_queue_sq_head(&qr)) TH_LOG("RECVs taken with 8 completions owed");
	EXPECT_EQ(0, memreg_queue_cq_tail(&qr));
	/* One message: RECV 0 completes; the ring still has no room for RECV 8. */
	memset(a, 'A', 64);
	s = mr_sqe_send(100, ra.lkey, 0, 64);
	run_expect(_metadata, &qs, &s, 0, 64);
	ASSERT_EQ(0, mrq_wait_tail(&qr, 1, 5000));
	usleep(QUIET_MS * 1000);
	EXPECT_EQ(8, memreg_queue_sq_head(&qr));
	/* Consuming it makes room: RECV 8 is taken. */
	ASSERT_EQ(1, memreg_wait_cqes(&qr, c, 1, 5000));
	expect_cqe(_metadata, &c[0], 0, 0, 64);
	for (i = 0; i < 200 && memreg_queue_sq_head(&qr) != 9; i++)
		usleep(10000);
	EXPECT_EQ(9, memreg_queue_sq_head(&qr));
	/* Eight more messages fill RECVs 1..8 in order. */
	for (i = 1; i <= 8; i++) {
		memset(a, 'A' + i, 64);
		s = mr_sqe_send(100 + i, ra.lkey, 0, 64);
		run_expect(_metadata, &qs, &s, 0, 64);
	}
	ASSERT_EQ(8, memreg_wait_cqes(&qr, c, 8, 5000));
	for (i = 1; i <= 8; i++) {
		expect_cqe(_metadata, &c[i - 1], i, 0, 64);
		EXPECT_TRUE(all_bytes(b + i * 64, 64, 'A' + i)) TH_LOG("RECV %d", i);
	}
	memreg_queue_exit(&qs);
	memreg_queue_exit(&qr);
	close(fd);
	munmap(a, 4 * PAGE);
	munmap(b, 4 * PAGE);
}

#define NSENDERS	3
#define NMSG		120
#define MSG_SLOT	256

/* A sending process: NMSG messages of changing lengths to queue `rq` of `rfd`'s owner. */
static int sender_main(int id, int rfd, __u32 rq)
{
	struct memreg_register r;
	struct memreg_cqe c[16];
	struct memreg_sqe s;
	struct memreg_queue q;
	char *buf = map_buf(NMSG * MSG_SLOT, 0);
	__u64 posted = 0, done = 0, t0 = mrq_now_us();
	int fd = open_ctx();
	unsigned int n, i;
	__u32 h;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (fd < 0 || !buf || memreg_register(fd, buf, NMSG * MSG_SLOT, ALL, &r) ||
	    memreg_queue_init(fd, 16, 16, -1, &q) || memreg_peer_attach(fd, rfd, &h))
		return 1;
	close(rfd);
	if (memreg_queue_connect(fd, q.index, h, rq, 5000))
		return 2;
	for (i = 0; i < NMSG; i++)
		memset(buf + i * MSG_SLOT, (id * 31 + i) & 0xff, MSG_SLOT);
	while (done < NMSG) {
		if (posted < NMSG && posted - done < 8) {
			__u64 len = 1 + (posted * 7 + id * 13) % MSG_SLOT;

			s = mr_sqe_send_imm(posted, r.lkey, posted * MSG_SLOT, len,
					    ((__u64)id << 32) | posted);
			if (!memreg_queue_post(&q, &s, 0, NULL))
				posted++;
			continue;
		}
		n = memreg_wait_cqes(&q, c, 16, 10);
		for (i = 0; i < n; i++, done++)
			if (c[i].user_data != done || c[i].status)
				return 3;
		if (mrq_now_us() - t0 > 20000000)
			return 4;
	}
	return 0;
}

/*
 * Several processes send to one queue, and a queue of the receiving file
 * too: every message arrives once, whole, with its immediate data, and
 * each sender's messages in its order.
 */
TEST_F_TIMEOUT(slow, several_senders_keep_their_order, 60)
{
	struct memreg_register r, lr;
	struct memreg_cqe c[64];
	struct memreg_sqe s;
	struct memreg_queue q, lq;
	char *buf = map_buf(256 * MSG_SLOT, 0), *lbuf = map_buf(NMSG * MSG_SLOT, 0);
	__u64 next[NSENDERS + 1] = { 0 }, got = 0, bad = 0, interleave = 0, t0;
	__u64 lposted = 0, ldone = 0, lbad = 0;
	int fd = open_ctx(), i, last = -1;
	pid_t pid[NSENDERS];
	unsigned int n, k;
	__u32 self_h;

	ASSERT_GE(fd, 0);
	ASSERT_NE(NULL, buf);
	ASSERT_NE(NULL, lbuf);
	ASSERT_EQ(0, memreg_register(fd, buf, 256 * MSG_SLOT, ALL, &r));
	ASSERT_EQ(0, memreg_queue_init(fd, 256, 256, -1, &q));
	/* A sender of our own too (id NSENDERS), on another queue of this file. */
	ASSERT_EQ(0, memreg_register(fd, lbuf, NMSG * MSG_SLOT, ALL, &lr));
	ASSERT_EQ(0, memreg_queue_init(fd, 16, 16, -1, &lq));
	ASSERT_EQ(0, memreg_peer_attach(fd, fd, &self_h));
	ASSERT_EQ(0, memreg_queue_connect(fd, lq.index, self_h, q.index, 5000));
	for (i = 0; i < NMSG; i++)
		memset(lbuf + i * MSG_SLOT, (NSENDERS * 31 + i) & 0xff, MSG_SLOT);
	/* 128 RECVs, slot = user_data. */
	for (i = 0; i < 128; i++) {
		s = mr_sqe_recv(i, r.lkey, i * MSG_SLOT, MSG_SLOT);
		ASSERT_EQ(0, memreg_queue_post_wait(&q, &s, 1000));
	}
	for (i = 0; i < NSENDERS; i++) {
		pid[i] = fork();
		ASSERT_GE(pid[i], 0);
		if (pid[i] == 0)
			_exit(sender_main(i, fd, q.index));
	}
	t0 = mrq_now_us();
	while ((got < (NSENDERS + 1) * NMSG || ldone < NMSG) && mrq_now_us() - t0 < 30000000) {
		if (lposted < NMSG && lposted - ldone < 4) {
			__u64 len = 1 + (lposted * 7 + NSENDERS * 13) % MSG_SLOT;

			s = mr_sqe_send_imm(lposted, lr.lkey, lposted * MSG_SLOT, len,
					    ((__u64)NSENDERS << 32) | lposted);
			if (!memreg_queue_post(&lq, &s, 0, NULL))
				lposted++;
		}
		n = memreg_reap_cqes(&lq, c, 16);
		for (k = 0; k < n; k++, ldone++)
			if (c[k].user_data != ldone || c[k].status)
				lbad++;
		n = memreg_wait_cqes(&q, c, 64, 1);
		for (k = 0; k < n; k++, got++) {
			__u64 slot = c[k].user_data, seq = c[k].imm_data & 0xffffffffULL;
			int id = (int)(c[k].imm_data >> 32);
			__u64 len;

			if (c[k].status || slot >= 256 || !(c[k].flags & MEMREG_CQE_IMM) ||
			    id < 0 || id > NSENDERS) {
				if (bad++ < 5)
					TH_LOG("cqe %llu: slot %llu status %d flags %u imm %#llx",
					       (unsigned long long)got, (unsigned long long)slot,
					       c[k].status, c[k].flags,
					       (unsigned long long)c[k].imm_data);
				continue;
			}
			len = 1 + (seq * 7 + id * 13) % MSG_SLOT;
			if (seq != next[id] || c[k].bytes != len ||
			    !all_bytes(buf + slot * MSG_SLOT, len, (id * 31 + seq) & 0xff)) {
				if (bad++ < 5)
					TH_LOG("sender %d: message %llu (want %llu), %llu bytes (want %llu)",
					       id, (unsigned long long)seq,
					       (unsigned long long)next[id],
					       (unsigned long long)c[k].bytes,
					       (unsigned long long)len);
			}
			next[id] = seq + 1;
			interleave += last >= 0 && last != id;
			last = id;
			memset(buf + slot * MSG_SLOT, 0, MSG_SLOT);
			s = mr_sqe_recv(slot, r.lkey, slot * MSG_SLOT, MSG_SLOT);
			ASSERT_EQ(0, memreg_queue_post_wait(&q, &s, 1000));
		}
	}
	EXPECT_EQ((NSENDERS + 1) * NMSG, got);
	EXPECT_EQ(0, bad);
	EXPECT_EQ(NMSG, ldone);
	EXPECT_EQ(0, lbad);
	EXPECT_EQ(NMSG, next[NSENDERS]);
	for (i = 0; i < NSENDERS; i++) {
		EXPECT_EQ(NMSG, next[i]) TH_LOG("sender %d", i);
		EXPECT_EQ(0, wait_exit(pid[i])) TH_LOG("sender %d", i);
	}
	TH_LOG("%llu switches between senders", (unsigned long long)interleave);
	/* Nothing more arrives. */
	EXPECT_EQ(0, memreg_wait_cqes(&q, c, 1, QUIET_MS));
	memreg_queue_exit(&q);
	memreg_queue_exit(&lq);
	close(fd);
	munmap(buf, 256 * MSG_SLOT);
	munmap(lbuf, NMSG * MSG_SLOT);
}

/* ---- Failure: revoke, detach, close, kill, unmap, mprotect ---- */

/*
 * A stream of WRITEs from our queue: request i copies page i % 26 of our
 * buffer (filled 'A'..'Z') to page i % `pages` of the target's buffer 0.
 */
struct stream {
	struct memreg_queue *q;
	__u32 peer;
	__u64 rkey;		/* read and written atomically (a poster thread) */
	__u64 lkey;
	unsigned int pages;
	__u64 big;		/* nonzero: every request writes this many bytes at 0 */
	__u64 posted, reaped;
	__u64 n_ok, n_other;
	__u64 n_err[4];		/* by the statuses given to stream_init() */
	__u64 last_err[4];	/* user_data of the last of each */
	int errs[4];
	__u64 first_err;	/* user_data of the first error, or ~0 */
	__u64 ok_after_err;	/* successes after the first error */
	__u64 out_of_order;
	int stop, failed, exited;
};

static void stream_init(struct stream *st, struct memreg_queue *q, __u32 peer, __u64 rkey, __u64 lkey,
			unsigned int pages, int e0, int e1, int e2, int e3)
{
	memset(st, 0, sizeof(*st));
	st->q = q;
	st->peer = peer;
	st->rkey = rkey;
	st->lkey = lkey;
	st->pages = pages;
	st->errs[0] = e0;
	st->errs[1] = e1;
	st->errs[2] = e2;
	st->errs[3] = e3;
	st->first_err = ~0ULL;
}

static struct memreg_sqe stream_sqe(struct stream *st, __u64 i)
{
	if (st->big)
		return mr_sqe_write(i, st->peer, __atomic_load_n(&st->rkey, __ATOMIC_ACQUIRE), 0,
				    st->lkey, 0, st->big);
	return mr_sqe_write(i, st->peer, __atomic_load_n(&st->rkey, __ATOMIC_ACQUIRE),
			    (i % st->pages) * PAGE, st->lkey, (i % 26) * PAGE, PAGE);
}

/* Counts one completion. */
static void stream_count(struct stream *st, const struct memreg_cqe *c)
{
	int k;

	if (c->user_data != st->reaped)
		st->out_of_order++;
	st->reaped++;
	if (c->status == 0 && c->bytes == (st->big ? st->big : PAGE)) {
		st->n_ok++;
		if (st->first_err != ~0ULL)
			st->ok_after_err++;
		return;
	}
	if (st->first_err == ~0ULL)
		st->first_err = c->user_data;
	for (k = 0; k < 4; k++) {
		if (st->errs[k] && c->status == st->errs[k] && c->bytes == 0) {
			st->n_err[k]++;
			st->last_err[k] = c->user_data;
			return;
		}
	}
	if (st->n_other++ < 3)
		fprintf(stderr, "stream: user_data %llu status %d bytes %llu\n",
			(unsigned long long)c->user_data, c->status, (unsigned long long)c->bytes);
}

/* Reaps what is there (at most 64) and counts it; how many. */
static unsigned int stream_reap(struct stream *st, int ms)
{
	struct memreg_cqe c[64];
	unsigned int n = memreg_wait_cqes(st->q, c, 64, ms), i;

	for (i = 0; i < n; i++)
		stream_count(st, &c[i]);
	return n;
}

/*
 * Posts (keeping at most `depth` in flight) and reaps until `total`
 * completions were counted, or 10 s passed; 0 or -ETIMEDOUT.
 */
static int stream_run(struct stream *st, __u64 total, unsigned int depth)
{
	__u64 deadline = mrq_now_us() + 10000000;
	struct memreg_sqe s;

	while (st->reaped < total) {
		while (st->posted < total && st->posted - st->reaped < depth) {
			s = stream_sqe(st, st->posted);
			if (memreg_queue_post(st->q, &s, 0, NULL))
				break;
			st->posted++;
		}
		if (!stream_reap(st, 1) && mrq_now_us() > deadline)
			return -ETIMEDOUT;
	}
	return 0;
}

/* A poster thread: posts until told to stop. */
static void *stream_poster(void *arg)
{
	struct stream *st = arg;
	struct memreg_sqe s;

	while (!__atomic_load_n(&st->stop, __ATOMIC_ACQUIRE)) {
		__u64 i = __atomic_load_n(&st->posted, __ATOMIC_RELAXED);

		s = stream_sqe(st, i);
		if (memreg_queue_post_wait(st->q, &s, 10000)) {
			__atomic_store_n(&st->failed, 1, __ATOMIC_RELEASE);
			break;
		}
		__atomic_store_n(&st->posted, i + 1, __ATOMIC_RELEASE);
	}
	__atomic_store_n(&st->exited, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* Stops the poster thread, reaping meanwhile (it may wait for room). */
static void stream_stop(struct stream *st, pthread_t th)
{
	__atomic_store_n(&st->stop, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&st->exited, __ATOMIC_ACQUIRE))
		stream_reap(st, 1);
	pthread_join(th, NULL);
}

/* Reaps (from the thread that is not the poster) until `n` completions were counted. */
static int stream_reap_until(struct stream *st, __u64 n, int ms)
{
	__u64 deadline = mrq_now_us() + (__u64)ms * 1000;

	while (st->reaped < n) {
		if (__atomic_load_n(&st->failed, __ATOMIC_ACQUIRE) || mrq_now_us() > deadline)
			return -ETIMEDOUT;
		stream_reap(st, 1);
	}
	return 0;
}

/* Reaps until `n` successes were counted. */
static int stream_reap_ok(struct stream *st, __u64 n, int ms)
{
	__u64 deadline = mrq_now_us() + (__u64)ms * 1000;

	while (st->n_ok < n) {
		if (__atomic_load_n(&st->failed, __ATOMIC_ACQUIRE) || mrq_now_us() > deadline)
			return -ETIMEDOUT;
		stream_reap(st, 1);
	}
	return 0;
}

/* Our side for the streams: 26 pages 'A'..'Z', a queue of 64/256. */
static int stream_side(struct side *b)
{
	int ret = side_open(b, 26 * PAGE, 0, 64, 256), i;

	for (i = 0; !ret && i < 26; i++)
		memset(b->buf + i * PAGE, 'A' + i, PAGE);
	return ret;
}

/*
 * PEER_REVOKE: every request through an attachment made before it fails
 * with -ECONNRESET (a SEND waiting for a RECV included; QUEUE_CONNECT
 * through it: ECONNRESET); DETACH still works; a later attachment works.
 */
TEST(revoke_ends_earlier_grants)
{
	struct tgt_cfg cfg = cfg1(16 * PAGE, ALL, 't', 16, 16);
	struct memreg_cqe c;
	struct memreg_sqe s;
	struct memreg_queue q2, q3;
	struct side b;
	struct tgt t;
	__u64 t0, el;
	__u32 h2;
	int pfd;

	ASSERT_EQ(0, side_open(&b, 16 * PAGE, 'b', 16, 16));
	ASSERT_EQ(0, memreg_queue_init(b.fd, 16, 16, -1, &q2));
	ASSERT_EQ(0, memreg_queue_init(b.fd, 16, 16, -1, &q3));
	ASSERT_EQ(0, tgt_start(&t, &cfg, b.fd));
	ASSERT_EQ(0, memreg_queue_connect(b.fd, b.q.index, t.peer, t.info.queue, 0));
	ASSERT_EQ(0, memreg_queue_connect(b.fd, q2.index, t.peer, t.info.queue, 5000));
	s = mr_sqe_write(1, t.peer, t.info.rkey[0], 0, b.r.lkey, 0, 64);
	run_expect(_metadata, &b.q, &s, 0, 64);
	/* A SEND waits for a RECV on q2. */
	s = mr_sqe_send(2, b.r.lkey, 0, 64);
	ASSERT_EQ(0, memreg_queue_post_wait(&q2, &s, 1000));
	usleep(200000);
	EXPECT_EQ(0, memreg_queue_cq_tail(&q2));

	t0 = mrq_now_us();
	ASSERT_EQ(0, tgt_cmd(&t, T_REVOKE, 0, 0, 0, 0, NULL));
	ASSERT_EQ(1, memreg_wait_cqes(&q2, &c, 1, 8000));
	el = mrq_now_us() - t0;
	expect_cqe(_metadata, &c, 2, -ECONNRESET, 0);
	TH_LOG("the waiting SEND completed %llu ms after the revoke", (unsigned long long)el / 1000);
	ASSERT_EQ(0, tgt_cmd(&t, T_FILL, 0, 0, 16 * PAGE, 'u', NULL));
	s = mr_sqe_write(3, t.peer, t.info.rkey[0], 0, b.r.lkey, 0, 64);
	run_expect(_metadata, &b.q, &s, -ECONNRESET, 0);
	s = mr_sqe_read(4, t.peer, b.r.lkey, 0, t.info.rkey[0], 0, 64);
	run_expect(_metadata, &b.q, &s, -ECONNRESET, 0);
	s = mr_sqe_write(5, t.peer, 12345, 0, b.r.lkey, 0, 64);
	run_expect(_metadata, &b.q, &s, -ECONNRESET, 0);
	s = mr_sqe_send(6, b.r.lkey, 0, 64);
	run_expect(_metadata, &b.q, &s, -ECONNRESET, 0);
	EXPECT_EQ(-ECONNRESET, memreg_queue_connect(b.fd, q3.index, t.peer, t.info.queue, 0));
	EXPECT_EQ(1, tgt_check(&t, 0, 0, 16 * PAGE, 'u'));
	EXPECT_TRUE(all_bytes(b.buf, 16 * PAGE, 'b'));

	/* A new attachment (after the revoke) works; the old handle stays dead. */
	ASSERT_EQ(0, tgt_cmd(&t, T_SENDFD, 0, 0, 0, 0, NULL));
	pfd = memreg_recv_fd(t.sock);
	ASSERT_GE(pfd, 0);
	ASSERT_EQ(0, memreg_peer_attach(b.fd, pfd, &h2));
	close(pfd);
	EXPECT_NE(t.peer, h2);
	s = mr_sqe_write(7, h2, t.info.rkey[0], PAGE, b.r.lkey, 0, 64);
	run_expect(_metadata, &b.q, &s, 0, 64);
	EXPECT_EQ(1, tgt_check(&t, 0, PAGE, 64, 'b'));
	s = mr_sqe_write(8, t.peer, t.info.rkey[0], 0, b.r.lkey, 0, 64);
	run_expect(_metadata, &b.q, &s, -ECONNRESET, 0);
	EXPECT_EQ(0, memreg_queue_connect(b.fd, q3.index, h2, t.info.queue, 0));
	/* Detaching the revoked handle: 0, then it is unknown. */
	EXPECT_EQ(0, memreg_peer_detach(b.fd, t.peer));
	s = mr_sqe_write(9, t.peer, t.info.rkey[0], 0, b.r.lkey, 0, 64);
	run_expect(_metadata, &b.q, &s, -ENOTCONN, 0);
	EXPECT_EQ(-ENOENT, memreg_peer_detach(b.fd, t.peer));
	EXPECT_EQ(0, memreg_peer_detach(b.fd, h2));
	memreg_queue_exit(&q2);
	memreg_queue_exit(&q3);
	EXPECT_EQ(0, tgt_stop(&t));
	side_close(&b);
}

/*
 * DETACH during a stream of WRITEs: the completions are successes, then
 * -ENOTCONN only, and every request posted after DETACH returned fails; a
 * SEND waiting for a RECV on a queue connected through the handle
 * completes with -ENOTCONN, and the queue may connect again.
 */
TEST(detach_during_stream)
{
	struct tgt_cfg cfg = cfg1(64 * PAGE, ALL, 't', 16, 16);
	struct memreg_cqe c;
	struct memreg_sqe s;
	struct stream st;
	struct side b;
	struct tgt t;
	struct memreg_queue q2;
	__u64 at_detach, t0, el;
	__u32 h2;
	int pfd;

	ASSERT_EQ(0, stream_side(&b));
	ASSERT_EQ(0, memreg_queue_init(b.fd, 16, 16, -1, &q2));
	ASSERT_EQ(0, tgt_start(&t, &cfg, b.fd));
	ASSERT_EQ(0, memreg_queue_connect(b.fd, q2.index, t.peer, t.info.queue, 8000));
	s = mr_sqe_send(1000, b.r.lkey, 0, 64);
	ASSERT_EQ(0, memreg_queue_post_wait(&q2, &s, 1000));

	stream_init(&st, &b.q, t.peer, t.info.rkey[0], b.r.lkey, 64, -ENOTCONN, 0, 0, 0);
	ASSERT_EQ(0, stream_run(&st, 150, 32));
	/* Detach with up to 32 requests in flight. */
	for (int i = 0; i < 32; i++) {
		s = stream_sqe(&st, st.posted);
		if (memreg_queue_post(st.q, &s, 0, NULL))
			break;
		st.posted++;
	}
	t0 = mrq_now_us();
	ASSERT_EQ(0, memreg_peer_detach(b.fd, t.peer));
	at_detach = st.posted;
	ASSERT_EQ(0, stream_run(&st, at_detach + 100, 32));
	EXPECT_EQ(0, st.out_of_order);
	EXPECT_EQ(0, st.n_other);
	EXPECT_EQ(0, st.ok_after_err);
	EXPECT_LE(150, st.n_ok);
	EXPECT_GE(at_detach, st.first_err);
	EXPECT_LE(100, st.n_err[0]);
	TH_LOG("%llu written, %llu -ENOTCONN, first at %llu (detach after %llu posted)",
	       (unsigned long long)st.n_ok, (unsigned long long)st.n_err[0],
	       (unsigned long long)st.first_err, (unsigned long long)at_detach);

	/* The waiting SEND. */
	ASSERT_EQ(1, memreg_wait_cqes(&q2, &c, 1, 9000));
	el = mrq_now_us() - t0;
	expect_cqe(_metadata, &c, 1000, -ENOTCONN, 0);
	EXPECT_GT(4000000, el) TH_LOG("the waiting SEND completed %llu ms after the detach",
				      (unsigned long long)el / 1000);
	/* Its queue is disconnected: it connects again, through a new handle. */
	ASSERT_EQ(0, tgt_cmd(&t, T_SENDFD, 0, 0, 0, 0, NULL));
	pfd = memreg_recv_fd(t.sock);
	ASSERT_GE(pfd, 0);
	ASSERT_EQ(0, memreg_peer_attach(b.fd, pfd, &h2));
	close(pfd);
	s = mr_sqe_send(1001, b.r.lkey, 0, 64);
	run_expect(_metadata, &q2, &s, -ENOTCONN, 0);
	EXPECT_EQ(0, memreg_queue_connect(b.fd, q2.index, h2, t.info.queue, 2000));
	ASSERT_EQ(0, tgt_cmd(&t, T_RECV, 0, 7, 0, 64, NULL));
	s = mr_sqe_send(1002, b.r.lkey, 25 * PAGE, 64);
	run_expect(_metadata, &q2, &s, 0, 64);
	EXPECT_EQ(1, tgt_check(&t, 0, 0, 64, 'Z'));
	memreg_queue_exit(&q2);
	EXPECT_EQ(0, tgt_stop(&t));
	side_close(&b);
}

/*
 * The target closes its file during a stream of WRITEs: successes, then
 * -ECONNRESET (everything posted after the close returned), and nothing is
 * written into its memory after its close returned. DETACH then works.
 */
TEST(target_close_during_stream)
{
	struct tgt_cfg cfg = cfg1(64 * PAGE, ALL, 't', 16, 16);
	struct memreg_global_stats base;
	struct memreg_sqe s;
	struct stream st;
	struct side b;
	struct tgt t;
	struct memreg_queue q2;
	pthread_t th;
	__u64 at_close;

	mr_settle(&base);
	ASSERT_EQ(0, stream_side(&b));
	ASSERT_EQ(0, memreg_queue_init(b.fd, 16, 16, -1, &q2));
	ASSERT_EQ(0, tgt_start(&t, &cfg, b.fd));
	ASSERT_EQ(0, memreg_queue_connect(b.fd, q2.index, t.peer, t.info.queue, 0));
	stream_init(&st, &b.q, t.peer, t.info.rkey[0], b.r.lkey, 64, -ECONNRESET, -ENOENT, 0, 0);
	ASSERT_EQ(0, pthread_create(&th, NULL, stream_poster, &st));
	ASSERT_EQ(0, stream_reap_until(&st, 150, 10000));
	/* It closes (the stream going on), then fills its buffer with 'n'. */
	ASSERT_EQ(0, tgt_cmd(&t, T_CLOSE, 0, 'n', 0, 0, NULL));
	at_close = __atomic_load_n(&st.posted, __ATOMIC_ACQUIRE);
	ASSERT_EQ(0, stream_reap_until(&st, at_close + 100, 10000));
	stream_stop(&st, th);
	EXPECT_EQ(0, st.failed);
	EXPECT_EQ(0, stream_reap_until(&st, st.posted, 10000));
	EXPECT_EQ(0, st.out_of_order);
	EXPECT_EQ(0, st.n_other);
	EXPECT_EQ(0, st.ok_after_err);
	EXPECT_LE(100, st.n_err[0]);
	EXPECT_GE(at_close, st.first_err);
	/* -ENOENT only for what was in flight while it closed. */
	if (st.n_err[1])
		EXPECT_GT(at_close, st.last_err[1]);
	TH_LOG("%llu written, %llu -ECONNRESET, %llu -ENOENT, first error at %llu (closed after %llu posted)",
	       (unsigned long long)st.n_ok, (unsigned long long)st.n_err[0],
	       (unsigned long long)st.n_err[1], (unsigned long long)st.first_err,
	       (unsigned long long)at_close);
	usleep(100000);
	EXPECT_EQ(1, tgt_check(&t, 0, 0, 64 * PAGE, 'n'));
	/* Everything through the handle now: -ECONNRESET. */
	s = mr_sqe_read(1ULL << 40, t.peer, b.r.lkey, 0, t.info.rkey[0], 0, 64);
	run_expect(_metadata, &b.q, &s, -ECONNRESET, 0);
	s = mr_sqe_send(2001, b.r.lkey, 0, 64);
	run_expect(_metadata, &q2, &s, -ECONNRESET, 0);
	EXPECT_EQ(-ECONNRESET, memreg_queue_connect(b.fd, b.q.index, t.peer, t.info.queue, 0));
	EXPECT_EQ(0, memreg_peer_detach(b.fd, t.peer));
	s = mr_sqe_write(1ULL << 41, t.peer, t.info.rkey[0], 0, b.r.lkey, 0, 64);
	run_expect(_metadata, &b.q, &s, -ENOTCONN, 0);
	memreg_queue_exit(&q2);
	EXPECT_EQ(0, tgt_stop(&t));
	side_close(&b);
	EXPECT_EQ(0, wait_baseline(&base, 5000));
}

/*
 * We (the writer) close our file during a stream of WRITEs into the
 * target: once our close returned, its memory never changes again.
 */
TEST(writer_close_during_stream)
{
	struct tgt_cfg cfg = cfg1(64 * PAGE, ALL, 't', 0, 0);
	struct memreg_global_stats base;
	struct memreg_sqe s;
	struct stream st;
	struct side b;
	struct tgt t;
	int i;

	mr_settle(&base);
	ASSERT_EQ(0, stream_side(&b));
	ASSERT_EQ(0, tgt_start(&t, &cfg, b.fd));
	stream_init(&st, &b.q, t.peer, t.info.rkey[0], b.r.lkey, 64, 0, 0, 0, 0);
	ASSERT_EQ(0, stream_run(&st, 100, 64));
	for (i = 0; i < 64; i++) {
		s = stream_sqe(&st, st.posted);
		if (memreg_queue_post(st.q, &s, 0, NULL))
			break;
		st.posted++;
	}
	memreg_queue_exit(&b.q);
	ASSERT_EQ(0, close(b.fd));
	b.fd = -1;
	ASSERT_EQ(0, tgt_cmd(&t, T_SNAP, 0, 0, 0, 0, NULL));
	usleep(300000);
	EXPECT_EQ(0, tgt_cmd(&t, T_SNAPCMP, 0, 0, 0, 0, NULL))
		TH_LOG("bytes written after our close returned");
	EXPECT_EQ(0, tgt_stop(&t));
	side_close(&b);
	EXPECT_EQ(0, wait_baseline(&base, 5000));
}

/*
 * The target is killed (SIGKILL) during a stream of WRITEs and READs and
 * while a SEND waits for its RECV: every request completes, those posted
 * after its death with -ECONNRESET; our queues go on working; nothing
 * leaks once we close.
 */
TEST_F_TIMEOUT(slow, target_killed_mid_transfer, 60)
{
	struct tgt_cfg cfg = cfg1(256 * PAGE, ALL, 't', 16, 16);
	struct memreg_global_stats base;
	struct memreg_cqe c[64];
	struct memreg_sqe s;
	struct side b;
	struct tgt t;
	struct memreg_queue q2;
	__u64 posted = 0, reaped = 0, ok = 0, reset = 0, enoent = 0, other = 0, at_death = 0;
	__u64 ok_late = 0, deadline, t0 = 0, el, inflight = 0, untaken = 0;
	bool dead = false;
	unsigned int n, i;

	mr_settle(&base);
	ASSERT_EQ(0, side_open(&b, 256 * PAGE, 'b', 64, 256));
	ASSERT_EQ(0, memreg_queue_init(b.fd, 16, 16, -1, &q2));
	ASSERT_EQ(0, tgt_start(&t, &cfg, b.fd));
	ASSERT_EQ(0, memreg_queue_connect(b.fd, q2.index, t.peer, t.info.queue, 10000));
	s = mr_sqe_send(99999, b.r.lkey, 0, 64);
	ASSERT_EQ(0, memreg_queue_post_wait(&q2, &s, 1000));

	deadline = mrq_now_us() + 20000000;
	while (mrq_now_us() < deadline && (!dead || reaped < posted || posted < at_death + 100)) {
		while (posted - reaped < 32 && (!dead || posted < at_death + 100)) {
			__u64 off = (posted % 4) * 64 * PAGE;

			if (posted & 1)
				s = mr_sqe_read(posted, t.peer, b.r.lkey, off, t.info.rkey[0], off,
						64 * PAGE);
			else
				s = mr_sqe_write(posted, t.peer, t.info.rkey[0], off, b.r.lkey, off,
						 64 * PAGE);
			if (memreg_queue_post(&b.q, &s, 0, NULL))
				break;
			posted++;
		}
		/* Killed with a full pipeline: 32 requests of 256 KiB in flight. */
		if (!dead && reaped >= 100) {
			ASSERT_EQ(0, kill(t.pid, SIGKILL));
			t0 = mrq_now_us();
			inflight = posted - reaped;
			untaken = posted - memreg_queue_sq_head(&b.q);
			EXPECT_EQ(SIGKILL, wait_signal(t.pid));
			t.pid = 0;
			at_death = posted;
			dead = true;
		}
		n = memreg_wait_cqes(&b.q, c, 64, 1);
		for (i = 0; i < n; i++, reaped++) {
			EXPECT_EQ(reaped, c[i].user_data);
			if (c[i].status == 0 && c[i].bytes == 64 * PAGE) {
				ok++;
				ok_late += dead && c[i].user_data >= at_death;
			} else if (c[i].status == -ECONNRESET) {
				reset++;
				EXPECT_EQ(0, c[i].bytes);
			} else if (c[i].status == -ENOENT && (!dead || c[i].user_data < at_death)) {
				enoent++;
			} else if (other++ < 3) {
				TH_LOG("request %llu: status %d bytes %llu",
				       (unsigned long long)c[i].user_data, c[i].status,
				       (unsigned long long)c[i].bytes);
			}
		}
	}
	EXPECT_TRUE(dead);
	EXPECT_EQ(posted, reaped);
	EXPECT_EQ(0, other);
	EXPECT_EQ(0, ok_late);
	EXPECT_LE(100, reset);
	TH_LOG("%llu moved, %llu -ECONNRESET, %llu -ENOENT (killed with %llu in flight, %llu not taken, %llu posted)",
	       (unsigned long long)ok, (unsigned long long)reset, (unsigned long long)enoent,
	       (unsigned long long)inflight, (unsigned long long)untaken,
	       (unsigned long long)at_death);

	ASSERT_EQ(1, memreg_wait_cqes(&q2, c, 1, 12000));
	el = mrq_now_us() - t0;
	expect_cqe(_metadata, &c[0], 99999, -ECONNRESET, 0);
	TH_LOG("the waiting SEND completed %llu ms after the kill", (unsigned long long)el / 1000);

	/* Our queues still work. */
	s = mr_sqe_nop(7);
	run_expect(_metadata, &b.q, &s, 0, 0);
	s = mr_sqe_copy(8, b.r.lkey, 0, b.r.lkey, PAGE, 64);
	run_expect(_metadata, &q2, &s, 0, 64);
	EXPECT_EQ(0, memreg_peer_detach(b.fd, t.peer));
	memreg_queue_exit(&q2);
	EXPECT_EQ(0, tgt_stop(&t));
	side_close(&b);
	EXPECT_EQ(0, wait_baseline(&base, 5000));
}

/*
 * The target unmaps the range under a stream of WRITEs and maps fresh
 * memory at the same address, ten times: every request completes with 0
 * or -ENOENT, in order, and no fresh mapping ever receives a byte.
 */
TEST_F_TIMEOUT(slow, unmap_of_target_mid_stream, 90)
{
	struct tgt_cfg cfg = cfg1(16 * PAGE, ALL, 't', 0, 0);
	struct memreg_global_stats base;
	struct stream st;
	struct trep rep;
	struct side b;
	struct tgt t;
	pthread_t th;
	__u64 mark;
	int round;

	mr_settle(&base);
	ASSERT_EQ(0, stream_side(&b));
	ASSERT_EQ(0, tgt_start(&t, &cfg, b.fd));
	stream_init(&st, &b.q, t.peer, t.info.rkey[0], b.r.lkey, 16, -ENOENT, 0, 0, 0);
	ASSERT_EQ(0, pthread_create(&th, NULL, stream_poster, &st));
	for (round = 0; round < 10; round++) {
		ASSERT_EQ(0, stream_reap_ok(&st, st.n_ok + 20, 10000));
		ASSERT_EQ(0, tgt_cmd(&t, T_REMAP, 0, 'n', 0, 0, NULL));
		/* Everything in flight and 40 more complete... */
		mark = __atomic_load_n(&st.posted, __ATOMIC_ACQUIRE);
		ASSERT_EQ(0, stream_reap_until(&st, mark + 40, 10000));
		/* ... and none of it landed in the fresh memory. */
		EXPECT_EQ(1, tgt_check(&t, 0, 0, 16 * PAGE, 'n')) TH_LOG("round %d", round);
		ASSERT_EQ(0, tgt_cmd(&t, T_REG, 0, 0, 0, ALL, &rep));
		__atomic_store_n(&st.rkey, rep.v[0], __ATOMIC_RELEASE);
	}
	stream_stop(&st, th);
	EXPECT_EQ(0, st.failed);
	EXPECT_EQ(0, stream_reap_until(&st, st.posted, 10000));
	EXPECT_EQ(0, st.out_of_order);
	EXPECT_EQ(0, st.n_other);
	EXPECT_LT(0, st.n_ok);
	EXPECT_LT(0, st.n_err[0]);
	TH_LOG("%llu requests: %llu written, %llu -ENOENT", (unsigned long long)st.reaped,
	       (unsigned long long)st.n_ok, (unsigned long long)st.n_err[0]);
	EXPECT_EQ(0, tgt_stop(&t));
	side_close(&b);
	EXPECT_EQ(0, wait_baseline(&base, 5000));
}

/*
 * The same with WRITEs of the whole 2 MiB registration each, so that the
 * munmap meets a copy under way: it waits for it, and the fresh memory at
 * the address never receives a byte.
 */
TEST_F_TIMEOUT(slow, unmap_of_target_under_large_writes, 90)
{
	const size_t len = 2UL << 20;
	struct tgt_cfg cfg = cfg1(len, ALL, 't', 0, 0);
	struct stream st;
	struct trep rep;
	struct side b;
	struct tgt t;
	pthread_t th;
	__u64 mark;
	int round;

	ASSERT_EQ(0, side_open(&b, len, 'L', 8, 16));
	ASSERT_EQ(0, tgt_start(&t, &cfg, b.fd));
	stream_init(&st, &b.q, t.peer, t.info.rkey[0], b.r.lkey, 1, -ENOENT, 0, 0, 0);
	st.big = len;
	ASSERT_EQ(0, pthread_create(&th, NULL, stream_poster, &st));
	for (round = 0; round < 6; round++) {
		/* Copies through the current key are under way. */
		ASSERT_EQ(0, stream_reap_ok(&st, st.n_ok + 2, 10000));
		ASSERT_EQ(0, tgt_cmd(&t, T_REMAP, 0, 'n', 0, 0, NULL));
		mark = __atomic_load_n(&st.posted, __ATOMIC_ACQUIRE);
		ASSERT_EQ(0, stream_reap_until(&st, mark + 4, 10000));
		EXPECT_EQ(1, tgt_check(&t, 0, 0, len, 'n')) TH_LOG("round %d", round);
		ASSERT_EQ(0, tgt_cmd(&t, T_REG, 0, 0, 0, ALL, &rep));
		__atomic_store_n(&st.rkey, rep.v[0], __ATOMIC_RELEASE);
	}
	stream_stop(&st, th);
	EXPECT_EQ(0, st.failed);
	EXPECT_EQ(0, stream_reap_until(&st, st.posted, 10000));
	EXPECT_EQ(0, st.out_of_order);
	EXPECT_EQ(0, st.n_other);
	EXPECT_LT(0, st.n_ok);
	EXPECT_LT(0, st.n_err[0]);
	TH_LOG("%llu requests of 2 MiB: %llu written, %llu -ENOENT", (unsigned long long)st.reaped,
	       (unsigned long long)st.n_ok, (unsigned long long)st.n_err[0]);
	EXPECT_EQ(0, tgt_stop(&t));
	side_close(&b);
}

/*
 * The same with mprotect(PROT_READ): once it returned, the target's memory
 * never changes again.
 */
TEST_F_TIMEOUT(slow, mprotect_of_target_mid_stream, 90)
{
	struct tgt_cfg cfg = cfg1(16 * PAGE, ALL, 't', 0, 0);
	struct stream st;
	struct trep rep;
	struct side b;
	struct tgt t;
	pthread_t th;
	__u64 mark;
	int round;

	ASSERT_EQ(0, stream_side(&b));
	ASSERT_EQ(0, tgt_start(&t, &cfg, b.fd));
	stream_init(&st, &b.q, t.peer, t.info.rkey[0], b.r.lkey, 16, -ENOENT, -EAGAIN, 0, 0);
	ASSERT_EQ(0, pthread_create(&th, NULL, stream_poster, &st));
	for (round = 0; round < 6; round++) {
		ASSERT_EQ(0, stream_reap_ok(&st, st.n_ok + 20, 10000));
		ASSERT_EQ(0, tgt_cmd(&t, T_MPROTECT, 0, PROT_READ, 0, 0, NULL));
		ASSERT_EQ(0, tgt_cmd(&t, T_SNAP, 0, 0, 0, 0, NULL));
		mark = __atomic_load_n(&st.posted, __ATOMIC_ACQUIRE);
		ASSERT_EQ(0, stream_reap_until(&st, mark + 40, 10000));
		EXPECT_EQ(0, tgt_cmd(&t, T_SNAPCMP, 0, 0, 0, 0, NULL)) TH_LOG("round %d", round);
		ASSERT_EQ(0, tgt_cmd(&t, T_MPROTECT, 0, PROT_READ | PROT_WRITE, 0, 0, NULL));
		ASSERT_EQ(0, tgt_cmd(&t, T_REG, 0, 0, 0, ALL, &rep));
		__atomic_store_n(&st.rkey, rep.v[0], __ATOMIC_RELEASE);
	}
	stream_stop(&st, th);
	EXPECT_EQ(0, st.failed);
	EXPECT_EQ(0, stream_reap_until(&st, st.posted, 10000));
	EXPECT_EQ(0, st.out_of_order);
	EXPECT_EQ(0, st.n_other);
	EXPECT_LT(0, st.n_ok);
	EXPECT_LT(0, st.n_err[0] + st.n_err[1]);
	TH_LOG("%llu requests: %llu written, %llu -ENOENT, %llu -EAGAIN",
	       (unsigned long long)st.reaped, (unsigned long long)st.n_ok,
	       (unsigned long long)st.n_err[0], (unsigned long long)st.n_err[1]);
	EXPECT_EQ(0, tgt_stop(&t));
	side_close(&b);
}

struct sender {
	struct memreg_queue *q;
	__u64 lkey;
	int n, gap_us;
	int posted;
	int failed;
};

static void *slow_sender(void *arg)
{
	struct sender *sd = arg;
	struct memreg_sqe s;
	int i;

	for (i = 0; i < sd->n; i++) {
		s = mr_sqe_send_imm(i, sd->lkey, (i % 26) * PAGE, 512, i);
		if (memreg_queue_post_wait(sd->q, &s, 10000)) {
			sd->failed = 1;
			break;
		}
		__atomic_store_n(&sd->posted, i + 1, __ATOMIC_RELEASE);
		usleep(sd->gap_us);
	}
	return NULL;
}

/*
 * The target unmaps the buffer of half its posted RECVs while SENDs
 * stream in: those RECVs complete with -ENOENT, the messages go to the
 * other RECVs in order, and the fresh memory receives nothing.
 */
TEST_F_TIMEOUT(slow, unmap_of_recv_buffers_mid_stream, 60)
{
	struct tgt_cfg cfg = { .nbuf = 2, .len = { 32 * PAGE, 32 * PAGE }, .access = { ALL, ALL },
			       .fill = { 'x', 'y' }, .sq = 64, .cq = 128 };
	struct memreg_cqe c[128];
	struct side b;
	struct tgt t;
	struct sender sd;
	pthread_t th;
	__u64 next = 0, enoent = 0, got = 0, bad = 0, n_ok = 0;
	int i, n, k;

	ASSERT_EQ(0, stream_side(&b));
	ASSERT_EQ(0, tgt_start(&t, &cfg, b.fd));
	ASSERT_EQ(0, memreg_queue_connect(b.fd, b.q.index, t.peer, t.info.queue, 3000));
	/* 64 RECVs: X0, Y0, X1, Y1, ... of 1 KiB (user_data: buffer << 8 | index). */
	for (i = 0; i < 32; i++) {
		ASSERT_EQ(0, tgt_cmd(&t, T_RECV, 0, i, i * 1024, 1024, NULL));
		ASSERT_EQ(0, tgt_cmd(&t, T_RECV, 1, 256 + i, i * 1024, 1024, NULL));
	}
	sd = (struct sender){ .q = &b.q, .lkey = b.r.lkey, .n = 40, .gap_us = 5000 };
	ASSERT_EQ(0, pthread_create(&th, NULL, slow_sender, &sd));
	/* After about 20 messages, X goes. */
	for (i = 0; i < 1000 && __atomic_load_n(&sd.posted, __ATOMIC_ACQUIRE) < 20; i++)
		usleep(1000);
	ASSERT_EQ(0, tgt_cmd(&t, T_REMAP, 0, 'n', 0, 0, NULL));
	pthread_join(th, NULL);
	EXPECT_EQ(0, sd.failed);
	ASSERT_EQ(40, memreg_wait_cqes(&b.q, c, 40, 10000));
	for (i = 0; i < 40; i++)
		expect_cqe(_metadata, &c[i], i, 0, 512);
	/* Everything the target completed. */
	for (k = 0; k < 3; k++) {
		n = tgt_reap(&t, c, 128, 500);
		ASSERT_LE(0, n);
		for (i = 0; i < n; i++, got++) {
			if (c[i].status == -ENOENT && c[i].user_data < 256) {
				enoent++;
				continue;
			}
			if (c[i].status || c[i].bytes != 512 || c[i].imm_data != next ||
			    !(c[i].flags & MEMREG_CQE_IMM)) {
				if (bad++ < 3)
					TH_LOG("RECV %#llx: status %d bytes %llu imm %llu (want %llu)",
					       (unsigned long long)c[i].user_data, c[i].status,
					       (unsigned long long)c[i].bytes,
					       (unsigned long long)c[i].imm_data,
					       (unsigned long long)next);
			}
			next = c[i].imm_data + 1;
			n_ok++;
		}
	}
	EXPECT_EQ(0, bad);
	EXPECT_EQ(40, n_ok);
	EXPECT_LT(0, enoent);
	TH_LOG("%llu messages, %llu RECVs on the unmapped buffer skipped",
	       (unsigned long long)n_ok, (unsigned long long)enoent);
	EXPECT_EQ(1, tgt_check(&t, 0, 0, 32 * PAGE, 'n'));
	EXPECT_EQ(0, tgt_stop(&t));
	side_close(&b);
}

/* One of two processes attached to each other: WRITEs and SENDs to the other, forever. */
static void __attribute__((noreturn)) mutual_main(int sock, int ready)
{
	struct { __u64 rkey; __u32 queue; } mine, theirs;
	struct memreg_register r;
	struct memreg_cqe c[64];
	struct memreg_sqe s;
	struct memreg_queue q;
	char *buf = map_buf(64 * PAGE, 'm');
	__u64 posted = 0, reaped = 0, done = 0;
	int fd, pfd, told = 0, i;
	unsigned int n;
	__u32 h;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	fd = open_ctx();
	if (fd < 0 || !buf || memreg_register(fd, buf, 64 * PAGE, ALL, &r) ||
	    memreg_queue_init(fd, 64, 64, -1, &q))
		_exit(1);
	mine.rkey = r.rkey;
	mine.queue = q.index;
	if (memreg_send_fd(sock, fd) || xwrite(sock, &mine, sizeof(mine)))
		_exit(2);
	pfd = memreg_recv_fd(sock);
	if (pfd < 0 || xread(sock, &theirs, sizeof(theirs)) || memreg_peer_attach(fd, pfd, &h))
		_exit(3);
	close(pfd);
	if (memreg_queue_connect(fd, q.index, h, theirs.queue, 1000))
		_exit(4);
	/* 16 RECVs, reposted as they complete. */
	for (i = 0; i < 16; i++) {
		s = mr_sqe_recv(1ULL << 40 | i, r.lkey, (48 + i) * PAGE, PAGE);
		if (memreg_queue_post_wait(&q, &s, 1000))
			_exit(5);
	}
	for (;;) {
		if (posted - reaped < 16) {
			if (posted % 2)
				s = mr_sqe_send(posted, r.lkey, 0, 1 + posted % PAGE);
			else
				s = mr_sqe_write(posted, h, theirs.rkey, (posted % 32) * PAGE,
						 r.lkey, 32 * PAGE, 4 * PAGE);
			if (!memreg_queue_post(&q, &s, 0, NULL))
				posted++;
		}
		n = memreg_reap_cqes(&q, c, 64);
		for (i = 0; i < (int)n; i++) {
			if (c[i].user_data >> 40) {
				s = mr_sqe_recv(c[i].user_data, r.lkey,
						(48 + (c[i].user_data & 15)) * PAGE, PAGE);
				memreg_queue_post_wait(&q, &s, 1000);
			} else {
				reaped++;
			}
			done++;
		}
		if (done >= 200 && !told) {
			if (write(ready, "r", 1) != 1)
				_exit(6);
			told = 1;
		}
		if (!n)
			sched_yield();
	}
}

/*
 * Two processes attached to each other, each WRITEing into and SENDing to
 * the other, both killed (at once, or one a moment after the other): the
 * module-wide counters (attachments, contexts alive and open,
 * registrations, pinned pages) come back to their values before the test.
 */
TEST_F_TIMEOUT(slow, mutually_attached_both_killed, 90)
{
	struct memreg_global_stats base, g;
	int round;

	mr_settle(&base);
	for (round = 0; round < 3; round++) {
		int sp[2], rd[2];
		pid_t pa, pb;
		char ch;

		ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp));
		ASSERT_EQ(0, pipe(rd));
		pa = fork();
		ASSERT_GE(pa, 0);
		if (pa == 0) {
			close(sp[1]);
			close(rd[0]);
			mutual_main(sp[0], rd[1]);
		}
		pb = fork();
		ASSERT_GE(pb, 0);
		if (pb == 0) {
			close(sp[0]);
			close(rd[0]);
			mutual_main(sp[1], rd[1]);
		}
		close(sp[0]);
		close(sp[1]);
		close(rd[1]);
		ASSERT_EQ(1, read(rd[0], &ch, 1)) TH_LOG("round %d: no progress", round);
		ASSERT_EQ(1, read(rd[0], &ch, 1)) TH_LOG("round %d: no progress", round);
		close(rd[0]);
		ASSERT_EQ(0, mr_global_now(&g));
		EXPECT_EQ(base.peers + 2, g.peers);
		EXPECT_EQ(base.contexts + 2, g.contexts);
		EXPECT_EQ(base.contexts_alive + 2, g.contexts_alive);
		usleep(round * 20000);
		ASSERT_EQ(0, kill(pa, SIGKILL));
		if (round == 2)
			usleep(50000);
		ASSERT_EQ(0, kill(pb, SIGKILL));
		EXPECT_EQ(SIGKILL, wait_signal(pa));
		EXPECT_EQ(SIGKILL, wait_signal(pb));
		EXPECT_EQ(0, wait_baseline(&base, 5000)) TH_LOG("round %d", round);
	}
}

TEST_HARNESS_MAIN
