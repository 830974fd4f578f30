// SPDX-License-Identifier: GPL-2.0
/*
 * memreg-ofi-pair: libfabric 1.17's MR cache with memreg's monitor on two
 * machines. A server and a client, each in its own guest, talk over
 * soft-iWARP (siw) on a real network device through libfabric's verbs
 * provider (FI_EP_MSG) and move data the way an MPI rendezvous does: the
 * receiver registers a buffer through the cache and sends its address,
 * length and key; the other side writes a fresh pattern into it, or reads
 * it. Buffers are freed and allocated again at the same address between
 * transfers; the cache, told by memreg's monitor (monitor.c), must never
 * hand out a registration of the old pages. Every transfer is byte
 * checked; every registration is checked to be the hit or miss it must be
 * by the monitor's counters.
 *
 *   memreg-ofi-pair --setup-net IFACE ADDR/PREFIX
 *   memreg-ofi-pair --server ADDR [--sessions N] [--rounds R] [--port P]
 *   memreg-ofi-pair --client ADDR [--rounds R] [--port P]
 *   memreg-ofi-pair --client ADDR --bench [--bench-ms MS] [--port P]
 *
 * The server serves N sessions one after the other; a client killed in
 * the middle of one (SIGKILL) ends it abruptly, and the server closes what
 * that session held, checks that its registrations and memreg's counters
 * are back where they were, and accepts the next. See README.
 *
 * Output is TAP, then "MEMREG-PAIR-SERVER: P passed, F failed" (or
 * -CLIENT, -SETUP). Exit status: 0 all passed, 1 a check failed, 4 skipped
 * (no /dev/memreg, no RDMA device).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_eq.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>
#include <rdma/fi_ext.h>

#include "libmemreg.h"
#include "monitor.h"

/* See memreg-ofi-mrcache.c: siw's provider, handed to libibverbs.a. */
struct verbs_device_ops;
extern const struct verbs_device_ops verbs_provider_siw;
void ibv_static_providers(void *unused, ...);

#define OFI_VERSION		FI_VERSION(1, 17)
#define DEFAULT_PORT		"47592"
#define DEFAULT_ROUNDS		48
#define DEFAULT_BENCH_MS	1500

#define KIB			1024UL
#define MIB			(1024UL * 1024UL)
#define PAGE			4096UL

#define OP_TIMEOUT_MS		30000	/* one message or completion */
#define EVENT_TIMEOUT_MS	5000	/* memreg's event reaching the cache */
#define CONNECT_TIMEOUT_MS	120000	/* the client: the server listening */
#define CONNECTED_TIMEOUT_MS	15000	/* one connection's handshake */
#define ACCEPT_TIMEOUT_MS	300000	/* the server: the next client */
#define SHUTDOWN_GRACE_MS	3000	/* a failed session: FI_SHUTDOWN coming */

#define EXIT_SKIP		4

#define ARRAY_SIZE(a)		(sizeof(a) / sizeof((a)[0]))

/* Access asked for: what the nocache path registers with siw. */
#define ACC_TARGET		(FI_REMOTE_WRITE | FI_REMOTE_READ)
#define ACC_SOURCE		(FI_WRITE | FI_READ | FI_SEND)

/* ---- TAP ----------------------------------------------------------------- */

static const char *final_name = "MEMREG-PAIR-CLIENT";
static unsigned int tap_count, tap_failed;

static void __attribute__((format(printf, 2, 3)))
tap(bool ok, const char *fmt, ...)
{
	va_list ap;

	tap_count++;
	if (!ok)
		tap_failed++;
	printf("%sok %u - ", ok ? "" : "not ", tap_count);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

static void __attribute__((noreturn)) skip(const char *why, const char *detail)
{
	if (detail)
		diag("%s", detail);
	printf("1..0 # SKIP %s\n", why);
	printf("%s: skipped (%s)\n", final_name, why);
	exit(EXIT_SKIP);
}

static int finish(void)
{
	printf("1..%u\n", tap_count);
	printf("%s: %u passed, %u failed\n", final_name, tap_count - tap_failed,
	       tap_failed);
	return tap_failed ? 1 : 0;
}

/* ---- Patterns ------------------------------------------------------------- */

static uint64_t seed_base, seed_count;

static uint64_t next_seed(void)
{
	return seed_base + ++seed_count;
}

/* ---- Buffers: freed and allocated again at the same address --------------- */

/*
 * Each buffer is mapped alone between two PROT_NONE guard pages: its VMA
 * never merges with a neighbour, so it never takes part in a transparent
 * huge page (the guests boot with transparent_hugepage=always; every
 * buffer is below 2 MiB), and what is done to one buffer never reaches
 * another's watch.
 */
struct tbuf {
	char *addr;
	size_t len;
	char *resv;	/* the reservation: a guard page, the buffer, a guard page */
	char *old;	/* RE_MREMAP: where the old pages are now, or NULL */
	bool used;	/* registered at least once in this session */
};

static int tbuf_map(struct tbuf *b, size_t len)
{
	const int flags = MAP_PRIVATE | MAP_ANONYMOUS;
	size_t span;
	char *resv;
	void *p;

	memset(b, 0, sizeof(*b));
	len = (len + PAGE - 1) & ~(PAGE - 1);
	span = len + 2 * PAGE;
	resv = mmap(NULL, span, PROT_NONE, flags | MAP_NORESERVE, -1, 0);
	if (resv == MAP_FAILED)
		return -errno;
	p = mmap(resv + PAGE, len, PROT_READ | PROT_WRITE, flags | MAP_FIXED, -1, 0);
	if (p == MAP_FAILED) {
		int ret = -errno;

		munmap(resv, span);
		return ret;
	}
	memset(p, 0, len);
	b->resv = resv;
	b->addr = p;
	b->len = len;
	return 0;
}

static void tbuf_drop_old(struct tbuf *b)
{
	if (b->old)
		munmap(b->old, b->len);
	b->old = NULL;
}

static void tbuf_unmap(struct tbuf *b)
{
	tbuf_drop_old(b);
	if (b->resv)
		munmap(b->resv, b->len + 2 * PAGE);
	memset(b, 0, sizeof(*b));
}

/*
 * Frees the buffer's memory and allocates new memory at the same address,
 * faulted in (zeroes), as realloc_at() does.
 */
static int tbuf_realloc(struct tbuf *b, enum realloc_how how)
{
	tbuf_drop_old(b);
	return realloc_at(b->addr, b->len, how, &b->old);
}

/* ---- Registrations: through the cache, counted -------------------------------- */

static struct memreg_monitor mon;
static long mrs_open;		/* fi_mr_reg calls not matched by fi_close */

static int mr_reg(struct fid_domain *domain, void *buf, size_t len,
		  uint64_t access, struct fid_mr **mr)
{
	int ret = fi_mr_reg(domain, buf, len, access, 0, 0, 0, mr, NULL);

	if (ret)
		*mr = NULL;
	else
		mrs_open++;
	return ret;
}

static void mr_close(struct fid_mr **mr)
{
	if (*mr) {
		fi_close(&(*mr)->fid);
		mrs_open--;
	}
	*mr = NULL;
}

/* The registration between two snapshots was a miss: it subscribed once. */
static bool was_miss(const struct mon_counters *c0, const struct mon_counters *c1)
{
	return c1->subscribes == c0->subscribes + 1;
}

/*
 * The registration between two snapshots was a hit: no subscribe, and the
 * cache asked valid() once, which said yes.
 */
static bool was_hit(const struct mon_counters *c0, const struct mon_counters *c1)
{
	return c1->subscribes == c0->subscribes &&
	       c1->valid_calls == c0->valid_calls + 1 &&
	       c1->valid_false == c0->valid_false;
}

/* ---- Messages ------------------------------------------------------------- */

/*
 * Every message starts with this header, padded to MSG_HDR bytes; a
 * payload chunk (MSG_DATA) follows it in the same message. Both sides are
 * x86-64: no byte swapping.
 */
struct pair_msg {
	__u32 magic;
	__u16 type;
	__u16 flags;
	__u32 round;
	__u32 arg;
	__u64 addr;
	__u64 len;
	__u64 key;
	__u64 seed;
	__u64 offset;
	__u64 total;
};

#define MSG_MAGIC		0x4d525031U	/* "MRP1" */
#define MSG_HDR			128
#define CHUNK			(64 * KIB)	/* payload bytes per MSG_DATA */
#define SLOT_LEN		(CHUNK + 4 * KIB)
#define RX_SLOTS		8		/* receives posted at all times */
#define TX_SLOTS		8
#define TX_RING			64		/* transmit contexts */
#define WINDOW			4		/* MSG_DATA between credits */
#define BENCH_WINDOW		8		/* writes in flight, bandwidth */

_Static_assert(sizeof(struct pair_msg) <= MSG_HDR, "message header too big");

enum msg_type {
	MSG_HELLO = 1,	/* client: arg rounds, flags HELLO_* */
	MSG_HELLO_ACK,
	MSG_ROUND,	/* client: round starts */
	MSG_RTS,	/* owner: addr, len, key, seed; arg 1 or 2 */
	MSG_FIN,	/* writer: the write is done; arg 1 or 2 */
	MSG_READ_REQ,	/* owner: read addr, len, key; seed in the buffer */
	MSG_READ_DONE,	/* writer: arg 1 when every byte was read back */
	MSG_DATA,	/* writer: arg chunk, seed, offset, len, total */
	MSG_CREDIT,	/* owner: WINDOW chunks consumed */
	MSG_DATA_ACK,	/* owner: arg 1 when the payload arrived intact */
	MSG_TARGET,	/* server (bench): arg size index, addr, len, key */
	MSG_SYNC,	/* client (bench): everything before has landed? */
	MSG_SYNC_ACK,
	MSG_CHECK,	/* client (bench): arg size index, len, seed */
	MSG_VERDICT,	/* server (bench): arg 1 when the bytes were there */
	MSG_BYE,	/* client: arg rounds run */
	MSG_BYE_ACK,
	MSG_NR,
};

static const char *const msg_name[MSG_NR] = {
	[MSG_HELLO] = "HELLO", [MSG_HELLO_ACK] = "HELLO_ACK",
	[MSG_ROUND] = "ROUND", [MSG_RTS] = "RTS", [MSG_FIN] = "FIN",
	[MSG_READ_REQ] = "READ_REQ", [MSG_READ_DONE] = "READ_DONE",
	[MSG_DATA] = "DATA", [MSG_CREDIT] = "CREDIT",
	[MSG_DATA_ACK] = "DATA_ACK", [MSG_TARGET] = "TARGET",
	[MSG_SYNC] = "SYNC", [MSG_SYNC_ACK] = "SYNC_ACK",
	[MSG_CHECK] = "CHECK", [MSG_VERDICT] = "VERDICT",
	[MSG_BYE] = "BYE", [MSG_BYE_ACK] = "BYE_ACK",
};

static const char *msg_str(unsigned int type)
{
	return type < MSG_NR && msg_name[type] ? msg_name[type] : "(unknown)";
}

#define HELLO_ROUNDS		0	/* struct pair_msg.arg of MSG_HELLO: rounds */
#define HELLO_BENCH		0x1	/* .flags: the benchmark */
#define HELLO_NOCACHE		0x2	/* .flags: the client's cache is off */

/* ---- A connection ----------------------------------------------------------- */

/*
 * One side of a connection: the domain (and its MR cache) and the control
 * buffers live as long as the program, the endpoint, its CQ and its EQ as
 * long as one connection. RX_SLOTS receives stay posted; a completed one
 * waits in rx_fifo until its message is handled, then is posted again.
 * Transmit operations complete in order (one send queue), so counting
 * them is enough to know which are done.
 */
struct conn {
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	struct fid_eq *eq;
	struct fid_cq *cq;
	struct fid_ep *ep;
	size_t max_msg;

	struct tbuf txb, rxb;
	struct fid_mr *tx_mr, *rx_mr;
	unsigned int tx_next;

	struct fi_context rx_ctx[RX_SLOTS];
	size_t rx_len[RX_SLOTS];
	unsigned int rx_fifo[RX_SLOTS];
	unsigned int rx_head, rx_count;

	struct fi_context tx_ctx[TX_RING];
	uint64_t tx_posted, tx_done;

	int cq_err;			/* the first completion error (fi_errno) */
	unsigned int cq_errors;
	unsigned int cq_flushed;	/* ... FI_ECANCELED: flushed on error */
	bool shutdown;			/* FI_SHUTDOWN (or an error) on the EQ */
	bool connected;
	unsigned int polls;
};

static void conn_reset(struct conn *c)
{
	c->rx_head = 0;
	c->rx_count = 0;
	c->tx_posted = 0;
	c->tx_done = 0;
	c->cq_err = 0;
	c->cq_errors = 0;
	c->cq_flushed = 0;
	c->shutdown = false;
	c->connected = false;
}

static void conn_complete(struct conn *c, void *ctx, size_t len, int err)
{
	struct fi_context *fc = ctx;

	if (fc >= c->rx_ctx && fc < c->rx_ctx + RX_SLOTS) {
		unsigned int slot = (unsigned int)(fc - c->rx_ctx);

		if (!err) {
			c->rx_len[slot] = len;
			c->rx_fifo[(c->rx_head + c->rx_count) % RX_SLOTS] = slot;
			c->rx_count++;
		}
	} else {
		c->tx_done++;
	}
	if (err) {
		c->cq_errors++;
		if (err == FI_ECANCELED)
			c->cq_flushed++;
		if (!c->cq_err)
			c->cq_err = err;
	}
}

static void conn_check_eq(struct conn *c)
{
	union {
		struct fi_eq_cm_entry cm;
		char buf[sizeof(struct fi_eq_cm_entry) + 256];
	} entry;
	struct fi_eq_err_entry err;
	uint32_t event;
	ssize_t rd;

	rd = fi_eq_read(c->eq, &event, &entry, sizeof(entry), 0);
	if (rd == -FI_EAGAIN)
		return;
	if (rd == -FI_EAVAIL) {
		memset(&err, 0, sizeof(err));
		fi_eq_readerr(c->eq, &err, 0);
		diag("EQ error: %s (%s)", fi_strerror(err.err),
		     fi_eq_strerror(c->eq, err.prov_errno, err.err_data, NULL, 0));
		c->shutdown = true;
		return;
	}
	if (rd < 0) {
		diag("fi_eq_read: %s", fi_strerror((int)-rd));
		c->shutdown = true;
		return;
	}
	if (event == FI_SHUTDOWN)
		c->shutdown = true;
	else
		diag("EQ: unexpected event %u", event);
}

/* Reads the CQ once (the EQ every 16th time): completions read, or -fi_errno. */
static int conn_poll(struct conn *c)
{
	struct fi_cq_msg_entry comp[8];
	ssize_t n, i;

	n = fi_cq_read(c->cq, comp, ARRAY_SIZE(comp));
	if (n > 0) {
		for (i = 0; i < n; i++)
			conn_complete(c, comp[i].op_context, comp[i].len, 0);
		return (int)n;
	}
	if (n == -FI_EAVAIL) {
		struct fi_cq_err_entry err;

		memset(&err, 0, sizeof(err));
		if (fi_cq_readerr(c->cq, &err, 0) < 0)
			return -FI_EIO;
		if (err.err != FI_ECANCELED || c->cq_errors < 1)
			diag("completion error: %s (%s)", fi_strerror(err.err),
			     fi_cq_strerror(c->cq, err.prov_errno, err.err_data,
					    NULL, 0));
		conn_complete(c, err.op_context, 0, err.err ? err.err : FI_EIO);
		return 1;
	}
	if (n != -FI_EAGAIN)
		return (int)n;
	if (!(++c->polls % 16))
		conn_check_eq(c);
	return 0;
}

static bool tx_all_done(struct conn *c, uint64_t target)
{
	return c->tx_done >= target;
}

static bool rx_ready(struct conn *c, uint64_t unused)
{
	(void)unused;
	return c->rx_count > 0;
}

/*
 * Progresses @c until @done holds: 0, or -ECONNRESET (the peer went away:
 * FI_SHUTDOWN), -EIO (a completion error), -ETIMEDOUT. Spins, then
 * yields, then sleeps once nothing happened for a while.
 */
static int conn_wait(struct conn *c, bool (*done)(struct conn *, uint64_t),
		     uint64_t arg, unsigned int timeout_ms)
{
	uint64_t t, idle_since = now_ns();
	uint64_t deadline = idle_since + (uint64_t)timeout_ms * 1000000ULL;
	unsigned int spins = 0;
	int n;

	for (;;) {
		n = conn_poll(c);
		if (done(c, arg))
			return 0;
		if (n < 0) {
			diag("fi_cq_read: %s", fi_strerror(-n));
			return -EIO;
		}
		if (c->cq_err)
			return c->cq_err == FI_ECANCELED ? -ECONNRESET : -EIO;
		if (c->shutdown) {
			/* What the CQ still holds came before. */
			while (conn_poll(c) > 0)
				;
			return done(c, arg) ? 0 : -ECONNRESET;
		}
		if (n > 0) {
			spins = 0;
			idle_since = now_ns();
			continue;
		}
		if (++spins < 256)
			continue;
		t = now_ns();
		if (t > deadline)
			return -ETIMEDOUT;
		if (t - idle_since > 20000000ULL)
			sleep_us(100);
		else
			sched_yield();
	}
}

/* One step of a retry loop around a post that said -FI_EAGAIN. */
static int conn_again(struct conn *c, uint64_t deadline)
{
	int n = conn_poll(c);

	if (n < 0)
		return -EIO;
	if (c->cq_err)
		return c->cq_err == FI_ECANCELED ? -ECONNRESET : -EIO;
	if (c->shutdown)
		return -ECONNRESET;
	if (now_ns() > deadline)
		return -ETIMEDOUT;
	if (!n)
		sched_yield();
	return 0;
}

static uint64_t deadline_ms(unsigned int ms)
{
	return now_ns() + (uint64_t)ms * 1000000ULL;
}

static int conn_post_recv(struct conn *c, unsigned int slot)
{
	uint64_t deadline = deadline_ms(OP_TIMEOUT_MS);
	ssize_t ret;

	for (;;) {
		ret = fi_recv(c->ep, c->rxb.addr + (size_t)slot * SLOT_LEN, SLOT_LEN,
			      fi_mr_desc(c->rx_mr), 0, &c->rx_ctx[slot]);
		if (ret != -FI_EAGAIN)
			break;
		ret = conn_again(c, deadline);
		if (ret)
			return (int)ret;
	}
	if (ret)
		diag("fi_recv: %s", fi_strerror((int)-ret));
	return (int)ret;
}

static int conn_post_recvs(struct conn *c)
{
	unsigned int i;
	int ret = 0;

	for (i = 0; i < RX_SLOTS && !ret; i++)
		ret = conn_post_recv(c, i);
	return ret;
}

/* Waits for a free transmit context. */
static int conn_tx_room(struct conn *c)
{
	if (c->tx_posted - c->tx_done < TX_RING)
		return 0;
	return conn_wait(c, tx_all_done, c->tx_posted - TX_RING + 1, OP_TIMEOUT_MS);
}

static struct fi_context *conn_tx_ctx(struct conn *c)
{
	return &c->tx_ctx[c->tx_posted % TX_RING];
}

static int conn_wait_tx(struct conn *c)
{
	return conn_wait(c, tx_all_done, c->tx_posted, OP_TIMEOUT_MS);
}

/*
 * Sends @m, followed by @len bytes at @data (registered, @desc) when
 * @data, and waits for the send to complete.
 */
static int conn_send(struct conn *c, const struct pair_msg *m, const void *data,
		     size_t len, void *desc)
{
	char *slot = c->txb.addr + (size_t)(c->tx_next++ % TX_SLOTS) * MSG_HDR;
	uint64_t deadline = deadline_ms(OP_TIMEOUT_MS);
	struct iovec iov[2];
	void *descs[2];
	ssize_t ret;

	memset(slot, 0, MSG_HDR);
	memcpy(slot, m, sizeof(*m));
	((struct pair_msg *)slot)->magic = MSG_MAGIC;
	iov[0].iov_base = slot;
	iov[0].iov_len = MSG_HDR;
	descs[0] = fi_mr_desc(c->tx_mr);
	iov[1].iov_base = (void *)data;
	iov[1].iov_len = len;
	descs[1] = desc;

	ret = conn_tx_room(c);
	if (ret)
		return (int)ret;
	for (;;) {
		ret = fi_sendv(c->ep, iov, descs, data ? 2 : 1, 0, conn_tx_ctx(c));
		if (ret != -FI_EAGAIN)
			break;
		ret = conn_again(c, deadline);
		if (ret)
			return (int)ret;
	}
	if (ret) {
		diag("fi_sendv (%s): %s", msg_str(m->type), fi_strerror((int)-ret));
		return (int)ret;
	}
	c->tx_posted++;
	return conn_wait_tx(c);
}

static int conn_send_msg(struct conn *c, unsigned int type, unsigned int round,
			 unsigned int arg)
{
	struct pair_msg m = { .type = (__u16)type, .round = round, .arg = arg };

	return conn_send(c, &m, NULL, 0, NULL);
}

static int conn_release(struct conn *c, unsigned int slot)
{
	return conn_post_recv(c, slot);
}

/*
 * Receives the next message: its header into @m, its payload at *data
 * (*data_len bytes), valid until conn_release(c, *slot) posts the slot
 * again. -EPROTO (the slot posted again) for a message not of ours.
 */
static int conn_recv(struct conn *c, struct pair_msg *m, const char **data,
		     size_t *data_len, unsigned int *slot, unsigned int timeout_ms)
{
	const char *buf;
	unsigned int s;
	int ret;

	ret = conn_wait(c, rx_ready, 0, timeout_ms);
	if (ret)
		return ret;
	s = c->rx_fifo[c->rx_head];
	c->rx_head = (c->rx_head + 1) % RX_SLOTS;
	c->rx_count--;
	buf = c->rxb.addr + (size_t)s * SLOT_LEN;
	if (c->rx_len[s] < MSG_HDR) {
		diag("a message of %zu bytes: too short", c->rx_len[s]);
		conn_release(c, s);
		return -EPROTO;
	}
	memcpy(m, buf, sizeof(*m));
	if (m->magic != MSG_MAGIC) {
		diag("a message without our magic");
		conn_release(c, s);
		return -EPROTO;
	}
	*slot = s;
	if (data)
		*data = buf + MSG_HDR;
	if (data_len)
		*data_len = c->rx_len[s] - MSG_HDR;
	return 0;
}

/* Receives a message without payload and posts its slot again at once. */
static int conn_recv_msg(struct conn *c, struct pair_msg *m,
			 unsigned int timeout_ms)
{
	unsigned int slot = 0;
	int ret = conn_recv(c, m, NULL, NULL, &slot, timeout_ms);

	return ret ? ret : conn_release(c, slot);
}

/* Receives a message that must be @type for @round. */
static int conn_expect(struct conn *c, unsigned int type, unsigned int round,
		       struct pair_msg *m)
{
	int ret = conn_recv_msg(c, m, OP_TIMEOUT_MS);

	if (ret)
		return ret;
	if (m->type != type || m->round != round) {
		diag("expected %s of round %u, got %s of round %u", msg_str(type),
		     round, msg_str(m->type), m->round);
		return -EPROTO;
	}
	return 0;
}

/*
 * fi_write (or fi_read with @is_read) of @len bytes between @buf
 * (registered as @mr) and the peer's @raddr through @key, in pieces of at
 * most max_msg bytes; posted only: conn_wait_tx() waits.
 */
static int conn_rma(struct conn *c, bool is_read, char *buf, size_t len,
		    struct fid_mr *mr, uint64_t raddr, uint64_t key)
{
	uint64_t deadline = deadline_ms(OP_TIMEOUT_MS);
	size_t off, chunk;
	ssize_t ret;

	for (off = 0; off < len; off += chunk) {
		chunk = len - off < c->max_msg ? len - off : c->max_msg;
		ret = conn_tx_room(c);
		if (ret)
			return (int)ret;
		for (;;) {
			if (is_read)
				ret = fi_read(c->ep, buf + off, chunk, fi_mr_desc(mr),
					      0, raddr + off, key, conn_tx_ctx(c));
			else
				ret = fi_write(c->ep, buf + off, chunk, fi_mr_desc(mr),
					       0, raddr + off, key, conn_tx_ctx(c));
			if (ret != -FI_EAGAIN)
				break;
			ret = conn_again(c, deadline);
			if (ret)
				return (int)ret;
		}
		if (ret) {
			diag("%s: %s", is_read ? "fi_read" : "fi_write",
			     fi_strerror((int)-ret));
			return (int)ret;
		}
		c->tx_posted++;
	}
	return 0;
}

static int conn_open_ep(struct conn *c, struct fi_info *info)
{
	struct fi_cq_attr cq_attr = {
		.format = FI_CQ_FORMAT_MSG,
		.wait_obj = FI_WAIT_NONE,
	};
	struct fi_eq_attr eq_attr = { .wait_obj = FI_WAIT_UNSPEC };
	int ret;

	conn_reset(c);
	ret = fi_eq_open(c->fabric, &eq_attr, &c->eq, NULL);
	if (!ret)
		ret = fi_cq_open(c->domain, &cq_attr, &c->cq, NULL);
	if (!ret)
		ret = fi_endpoint(c->domain, info, &c->ep, NULL);
	if (!ret)
		ret = fi_ep_bind(c->ep, &c->eq->fid, 0);
	if (!ret)
		ret = fi_ep_bind(c->ep, &c->cq->fid, FI_TRANSMIT | FI_RECV);
	if (!ret)
		ret = fi_enable(c->ep);
	return ret;
}

/* Closes the endpoint, its CQ and EQ; a connected one is shut down first. */
static void conn_close_ep(struct conn *c)
{
	if (c->ep && c->connected && !c->shutdown)
		fi_shutdown(c->ep, 0);
	if (c->ep)
		fi_close(&c->ep->fid);
	if (c->cq)
		fi_close(&c->cq->fid);
	if (c->eq)
		fi_close(&c->eq->fid);
	c->ep = NULL;
	c->cq = NULL;
	c->eq = NULL;
	c->connected = false;
}

/* Waits for FI_CONNECTED on the endpoint's EQ. */
static int conn_wait_connected(struct conn *c, unsigned int timeout_ms)
{
	uint64_t deadline = deadline_ms(timeout_ms);
	union {
		struct fi_eq_cm_entry cm;
		char buf[sizeof(struct fi_eq_cm_entry) + 256];
	} entry;
	struct fi_eq_err_entry err;
	uint32_t event;
	ssize_t rd;

	for (;;) {
		rd = fi_eq_read(c->eq, &event, &entry, sizeof(entry), 0);
		if (rd == -FI_EAVAIL) {
			memset(&err, 0, sizeof(err));
			fi_eq_readerr(c->eq, &err, 0);
			diag("connection: %s (%s)", fi_strerror(err.err),
			     fi_eq_strerror(c->eq, err.prov_errno, err.err_data,
					    NULL, 0));
			return err.err ? -err.err : -EIO;
		}
		if (rd >= 0) {
			if (event == FI_CONNECTED) {
				c->connected = true;
				return 0;
			}
			if (event == FI_SHUTDOWN)
				return -ECONNRESET;
			diag("connection: unexpected event %u", event);
		} else if (rd != -FI_EAGAIN) {
			return (int)rd;
		}
		if (now_ns() > deadline)
			return -ETIMEDOUT;
		sleep_us(1000);
	}
}

/*
 * After a failure: whether the peer went away (FI_SHUTDOWN, or every
 * completion error a flush), waiting a little for the EQ to say so.
 */
static bool conn_peer_gone(struct conn *c)
{
	uint64_t deadline = deadline_ms(SHUTDOWN_GRACE_MS);

	while (!c->shutdown && now_ns() < deadline) {
		if (conn_poll(c) <= 0)
			sleep_us(1000);
		conn_check_eq(c);
	}
	return c->shutdown || (c->cq_errors && c->cq_errors == c->cq_flushed);
}

/* The control buffers: registered once through the cache, kept. */
static int conn_buffers(struct conn *c)
{
	int ret;

	ret = tbuf_map(&c->txb, TX_SLOTS * MSG_HDR);
	if (!ret)
		ret = tbuf_map(&c->rxb, RX_SLOTS * SLOT_LEN);
	if (!ret)
		ret = mr_reg(c->domain, c->txb.addr, c->txb.len, FI_SEND, &c->tx_mr);
	if (!ret)
		ret = mr_reg(c->domain, c->rxb.addr, c->rxb.len, FI_RECV, &c->rx_mr);
	return ret;
}

static void conn_free_buffers(struct conn *c)
{
	mr_close(&c->tx_mr);
	mr_close(&c->rx_mr);
	tbuf_unmap(&c->txb);
	tbuf_unmap(&c->rxb);
}

static struct fi_info *make_hints(void)
{
	struct fi_info *hints = fi_allocinfo();

	if (!hints)
		return NULL;
	hints->ep_attr->type = FI_EP_MSG;
	hints->caps = FI_MSG | FI_RMA;
	hints->mode = FI_CONTEXT | FI_RX_CQ_DATA;
	hints->addr_format = FI_SOCKADDR_IN;
	hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR |
				      FI_MR_ALLOCATED | FI_MR_PROV_KEY;
	hints->fabric_attr->prov_name = strdup("verbs");
	return hints;
}

/* ---- Baselines: what a session must leave behind ------------------------------ */

struct baseline {
	long mrs;			/* fi_mr_reg not yet closed */
	bool have_mon;			/* the monitor is started */
	unsigned int subs;		/* its subscriptions */
	struct memreg_stats st;
	int st_err;
	struct rdma_res res;		/* siw's objects, every process's */
	int res_err;
};

/*
 * A cache hit on a control buffer: libfabric frees its dead entries (those
 * notify() took out of the cache while unused) at the start of every
 * search, so siw's MR count then shows what the cache still holds.
 */
static void flush_dead(struct conn *c)
{
	struct fid_mr *mr;

	if (!mr_reg(c->domain, c->txb.addr, c->txb.len, FI_SEND, &mr))
		mr_close(&mr);
}

static void baseline_take(struct conn *c, struct baseline *b)
{
	memset(b, 0, sizeof(*b));
	if (!mon_quiesce(&mon, EVENT_TIMEOUT_MS))
		diag("the monitor's event thread did not settle");
	flush_dead(c);
	b->mrs = mrs_open;
	b->have_mon = mon.thread_started;
	b->st_err = b->have_mon ? mon_kernel_view(&mon, &b->subs, &b->st) : 0;
	b->res_err = rdma_res_get(RDMA_DEV_NAME, &b->res);
}

static void baseline_diag(const char *what, const struct baseline *b)
{
	diag("%s: %ld MRs held, %u subscriptions, memreg registrations %llu, "
	     "watches %llu (%llu pages), pages pinned %llu; siw: %llu MRs, %llu "
	     "QPs, %llu CQs, %llu cm_ids", what, b->mrs, b->subs,
	     (unsigned long long)b->st.registrations,
	     (unsigned long long)b->st.watches,
	     (unsigned long long)b->st.watch_pages,
	     (unsigned long long)b->st.pages_pinned, b->res.mr, b->res.qp,
	     b->res.cq, b->res.cm_id);
}

/*
 * Two checks: the program's registrations, the monitor's subscriptions
 * and memreg's counters are back to @base; siw's MRs, QPs and CQs too.
 * cm_ids are left out: a client's connection request may be waiting on
 * the listener at any time, and it has one.
 */
static void baseline_check(struct conn *c, const char *label,
			   const struct baseline *base)
{
	struct baseline now;
	bool ok;

	baseline_take(c, &now);
	if (now.have_mon) {
		ok = !now.st_err && !base->st_err && now.mrs == base->mrs &&
		     now.subs == base->subs &&
		     now.st.registrations == base->st.registrations &&
		     now.st.watches == base->st.watches &&
		     now.st.watch_pages == base->st.watch_pages &&
		     now.st.pages_pinned == base->st.pages_pinned;
		tap(ok, "%s: back to the baseline: %ld MRs held (baseline %ld), "
		    "%u monitor subscriptions (%u), memreg registrations %llu "
		    "(%llu), watches %llu (%llu), watch pages %llu (%llu), pages "
		    "pinned %llu (%llu)", label, now.mrs, base->mrs, now.subs,
		    base->subs, (unsigned long long)now.st.registrations,
		    (unsigned long long)base->st.registrations,
		    (unsigned long long)now.st.watches,
		    (unsigned long long)base->st.watches,
		    (unsigned long long)now.st.watch_pages,
		    (unsigned long long)base->st.watch_pages,
		    (unsigned long long)now.st.pages_pinned,
		    (unsigned long long)base->st.pages_pinned);
		if (now.st_err)
			diag("STATS: %s", strerror(-now.st_err));
	} else {
		tap(now.mrs == base->mrs, "%s: back to the baseline: %ld MRs held "
		    "(baseline %ld; the cache is off, the monitor never started)",
		    label, now.mrs, base->mrs);
	}
	if (now.res_err || base->res_err) {
		tap(true, "%s: siw's resources back to the baseline # SKIP RDMA "
		    "resource counts unavailable (%s)", label,
		    strerror(-(now.res_err ? now.res_err : base->res_err)));
		return;
	}
	tap(now.res.mr == base->res.mr && now.res.qp == base->res.qp &&
	    now.res.cq == base->res.cq,
	    "%s: siw's resources back to the baseline: MRs %llu (%llu), QPs %llu "
	    "(%llu), CQs %llu (%llu)", label, now.res.mr, base->res.mr,
	    now.res.qp, base->res.qp, now.res.cq, base->res.cq);
	diag("%s: siw cm_ids %llu (baseline %llu), PDs %llu (%llu)", label,
	     now.res.cm_id, base->res.cm_id, now.res.pd, base->res.pd);
}

/* ---- Rounds: the rendezvous, both directions ------------------------------- */

#define NR_SIZES	3

static const size_t sizes[NR_SIZES] = { 4 * KIB, 64 * KIB, MIB };
static const char *const size_name[NR_SIZES] = { "4 KiB", "64 KiB", "1 MiB" };
static const char *const size_metric[NR_SIZES] = { "4kib", "64kib", "1mib" };

/*
 * Round r: the buffer size cycles with r % 3; the server owns the buffer
 * (registers it and is written to) in even rounds, the client in odd ones;
 * the re-allocation changes every 6 rounds; an owner waits for memreg's
 * event before registering again in every other round it owns. 24 rounds
 * give every (size, owner, re-allocation) and 48 every combination.
 */
static enum realloc_how round_how(unsigned int r)
{
	return (enum realloc_how)((r / 6) % RE_NR);
}

static bool round_via_event(unsigned int r)
{
	return (r / 2) % 2;
}

struct tally {
	unsigned int rounds;		/* completed */
	unsigned int owned, wrote;	/* ... owning the buffer, writing */
	unsigned int firsts, first_miss;	/* a buffer's first registration */
	unsigned int hit_tries, hits;	/* registrations of unchanged memory */
	unsigned int late_evicted;	/* ... missed: a late notify(), see reg_use() */
	unsigned int reallocs, realloc_miss;	/* ... after a re-allocation */
	unsigned int event_rounds, event_ok;	/* ... after waiting for the event */
	unsigned int writes, writes_ok;	/* fi_writes into this side's buffers */
	unsigned int moved, moved_clean;	/* old pages kept by mremap */
	unsigned int reads, reads_ok;	/* fi_reads of the peer's buffer */
	unsigned int payloads, payloads_ok, chunks;	/* received */
	unsigned int sent, sent_ok;	/* payloads sent, the peer's verdict */
};

static void tally_add(struct tally *dst, const struct tally *src)
{
	unsigned int *d = (unsigned int *)dst;
	const unsigned int *s = (const unsigned int *)src;
	size_t i;

	for (i = 0; i < sizeof(*dst) / sizeof(unsigned int); i++)
		d[i] += s[i];
}

struct session {
	struct conn *c;
	bool is_server;
	const char *label;		/* "session N" or "client" */
	unsigned int flags;		/* HELLO_* */
	unsigned int announced;		/* rounds the client said it runs */
	unsigned int next_round;
	bool completed;			/* BYE exchanged */
	int error;
	bool peer_gone;
	struct tally t;
	struct tbuf tgt[NR_SIZES];	/* owned: registered, written, read */
	struct tbuf src[NR_SIZES];	/* the writer's sources */
	struct fid_mr *tgt_mr, *src_mr;
	struct fid_mr *bench_mr[NR_SIZES];
	struct fid_mr *win_mr[BENCH_WINDOW];
	struct mon_counters start, end;
	unsigned int bench_checks, bench_ok;
};

static char *expect_buf;	/* the payload's pattern, for checking chunks */

static int session_map(struct session *s, bool targets, bool sources)
{
	unsigned int i;
	int ret = 0;

	for (i = 0; i < NR_SIZES && !ret; i++) {
		if (targets)
			ret = tbuf_map(&s->tgt[i], sizes[i]);
		if (!ret && sources)
			ret = tbuf_map(&s->src[i], sizes[i]);
	}
	if (ret)
		diag("session buffers: %s", strerror(-ret));
	return ret;
}

/* Closes every MR the session still holds and frees its buffers. */
static unsigned int session_release(struct session *s)
{
	unsigned int i, closed = 0;

	closed += !!s->tgt_mr + !!s->src_mr;
	mr_close(&s->tgt_mr);
	mr_close(&s->src_mr);
	for (i = 0; i < NR_SIZES; i++) {
		closed += !!s->bench_mr[i];
		mr_close(&s->bench_mr[i]);
	}
	for (i = 0; i < BENCH_WINDOW; i++) {
		closed += !!s->win_mr[i];
		mr_close(&s->win_mr[i]);
	}
	for (i = 0; i < NR_SIZES; i++) {
		tbuf_unmap(&s->tgt[i]);
		tbuf_unmap(&s->src[i]);
	}
	return closed;
}

/*
 * Registers @b for a transfer, as an MPI rendezvous does, and checks the
 * cache: its first registration in the session misses (one subscribe),
 * every later one hits (the memory has not changed since).
 *
 * One miss is not a fault: the monitor's event thread drops the
 * subscriptions of an ENDED key, unlocks, then calls notify() for the
 * range; a registration of the re-allocated memory made in between has
 * its new entry taken out of the cache by that late notify(). The next
 * registration then misses, and subscribe() finds the watch still valid
 * (a reuse, no REGISTER): a needless miss, never a stale hit. Those are
 * counted apart (late_evicted).
 */
static int reg_use(struct session *s, struct tbuf *b, uint64_t access,
		   struct fid_mr **mr, struct tally *t, unsigned int r,
		   const char *what)
{
	struct mon_counters c0, c1;
	int ret;

	mon_counters(&mon, &c0);
	ret = mr_reg(s->c->domain, b->addr, b->len, access, mr);
	mon_counters(&mon, &c1);
	if (ret) {
		diag("round %u: fi_mr_reg (%s): %s", r, what, fi_strerror(-ret));
		return ret;
	}
	if (!b->used) {
		t->firsts++;
		if (was_miss(&c0, &c1))
			t->first_miss++;
		else
			diag("round %u: the first registration of the %zu KiB %s "
			     "did not miss", r, b->len / KIB, what);
		b->used = true;
	} else {
		t->hit_tries++;
		if (was_hit(&c0, &c1)) {
			t->hits++;
		} else if (was_miss(&c0, &c1) && c1.reuses == c0.reuses + 1 &&
			   c1.registers == c0.registers) {
			t->late_evicted++;
			diag("round %u: the %zu KiB %s missed although its watch was "
			     "still valid: its entry went to a late notify()", r,
			     b->len / KIB, what);
		} else {
			diag("round %u: a registration of the unchanged %zu KiB %s "
			     "was not a hit (subscribes +%lu, valid() +%lu, no +%lu)",
			     r, b->len / KIB, what, c1.subscribes - c0.subscribes,
			     c1.valid_calls - c0.valid_calls,
			     c1.valid_false - c0.valid_false);
		}
	}
	return 0;
}

static int send_rts(struct conn *c, unsigned int r, unsigned int step,
		    const struct tbuf *b, struct fid_mr *mr, uint64_t seed)
{
	struct pair_msg m = {
		.type = MSG_RTS,
		.round = r,
		.arg = step,
		.addr = (uintptr_t)b->addr,
		.len = b->len,
		.key = fi_mr_key(mr),
		.seed = seed,
	};

	return conn_send(c, &m, NULL, 0, NULL);
}

/*
 * The owner's side of step 4: a payload arrives in chunks through the
 * receive slots (two-sided); each is compared with the pattern of the seed
 * the first one carries. A credit after every WINDOW chunks, a verdict
 * after the last.
 */
static int recv_payload(struct session *s, unsigned int r, struct tally *t)
{
	struct conn *c = s->c;
	unsigned int k, nchunks = 1, slot = 0;
	uint64_t total = 0, seed = 0, got = 0;
	bool ok = true;
	struct pair_msg m;
	const char *data;
	size_t dlen;
	int ret;

	for (k = 0; k < nchunks; k++) {
		ret = conn_recv(c, &m, &data, &dlen, &slot, OP_TIMEOUT_MS);
		if (ret)
			return ret;
		if (m.type != MSG_DATA || m.round != r || m.arg != k) {
			diag("expected DATA %u of round %u, got %s %u of round %u",
			     k, r, msg_str(m.type), m.arg, m.round);
			conn_release(c, slot);
			return -EPROTO;
		}
		if (!k) {
			total = m.total;
			seed = m.seed;
			if (!total || total > MIB || total % 8) {
				diag("round %u: a payload of %" PRIu64 " bytes", r,
				     total);
				conn_release(c, slot);
				return -EPROTO;
			}
			nchunks = (unsigned int)((total + CHUNK - 1) / CHUNK);
			pattern_fill(expect_buf, total, seed);
		}
		if (m.seed != seed || m.offset != (uint64_t)k * CHUNK ||
		    m.len != dlen || m.offset + m.len > total ||
		    memcmp(data, expect_buf + m.offset, dlen)) {
			if (ok)
				diag("round %u: payload chunk %u (offset %" PRIu64
				     ", %zu bytes) is not what was sent", r, k,
				     (uint64_t)m.offset, dlen);
			ok = false;
		}
		got += dlen;
		t->chunks++;
		ret = conn_release(c, slot);
		if (ret)
			return ret;
		if (k + 1 == nchunks)
			break;
		if (!((k + 1) % WINDOW)) {
			ret = conn_send_msg(c, MSG_CREDIT, r, k + 1);
			if (ret)
				return ret;
		}
	}
	ok = ok && got == total;
	t->payloads++;
	if (ok)
		t->payloads_ok++;
	return conn_send_msg(c, MSG_DATA_ACK, r, ok);
}

/* The writer's side of step 4: the source, registered, sent in chunks. */
static int send_payload(struct session *s, unsigned int r, struct tbuf *b,
			struct tally *t)
{
	struct conn *c = s->c;
	unsigned int k, nchunks = (unsigned int)((b->len + CHUNK - 1) / CHUNK);
	uint64_t seed = next_seed();
	struct pair_msg m;
	int ret;

	pattern_fill(b->addr, b->len, seed);
	ret = reg_use(s, b, ACC_SOURCE, &s->src_mr, t, r, "source");
	if (ret)
		return ret;
	for (k = 0; k < nchunks; k++) {
		size_t off = (size_t)k * CHUNK;
		size_t len = b->len - off < CHUNK ? b->len - off : CHUNK;

		m = (struct pair_msg){
			.type = MSG_DATA,
			.round = r,
			.arg = k,
			.seed = seed,
			.offset = off,
			.len = len,
			.total = b->len,
		};
		ret = conn_send(c, &m, b->addr + off, len, fi_mr_desc(s->src_mr));
		if (ret)
			return ret;
		if (k + 1 == nchunks) {
			ret = conn_expect(c, MSG_DATA_ACK, r, &m);
		} else if (!((k + 1) % WINDOW)) {
			ret = conn_expect(c, MSG_CREDIT, r, &m);
		}
		if (ret)
			return ret;
	}
	mr_close(&s->src_mr);
	t->sent++;
	if (m.arg)
		t->sent_ok++;
	else
		diag("round %u: the peer found the %zu KiB payload damaged", r,
		     b->len / KIB);
	return 0;
}

/*
 * The owner's round: (1) register the buffer (a hit after its first
 * round), offer it, check the writer's pattern; (2) free it and allocate
 * again at the same address, register again (must miss; in every other
 * round after waiting until memreg's ENDED event reached the cache), offer
 * it, check the new pattern, and that old pages moved away kept theirs;
 * (3) fill it and let the writer fi_read it; (4) receive a payload.
 */
static int owner_round(struct session *s, unsigned int r, struct tally *t)
{
	struct conn *c = s->c;
	unsigned int i = r % NR_SIZES;
	struct tbuf *b = &s->tgt[i];
	enum realloc_how how = round_how(r);
	bool via_event = round_via_event(r), ev_ok = false;
	struct mon_counters c0, c1;
	uint64_t seed1, seed2, seed3;
	struct pair_msg m;
	int ret;

	t->owned++;
	if (!mon_quiesce(&mon, EVENT_TIMEOUT_MS))
		diag("round %u: the event thread did not settle", r);

	/* 1. */
	ret = reg_use(s, b, ACC_TARGET, &s->tgt_mr, t, r, "buffer");
	if (ret)
		return ret;
	seed1 = next_seed();
	ret = send_rts(c, r, 1, b, s->tgt_mr, seed1);
	if (!ret)
		ret = conn_expect(c, MSG_FIN, r, &m);
	if (ret)
		return ret;
	t->writes++;
	if (pattern_match(b->addr, b->len, seed1))
		t->writes_ok++;
	else
		diag("round %u (%s): the peer's fi_write did not land", r,
		     size_name[i]);
	mr_close(&s->tgt_mr);

	/* 2. */
	mon_counters(&mon, &c0);
	ret = tbuf_realloc(b, how);
	if (ret) {
		diag("round %u: %s: %s", r, realloc_name[how], strerror(-ret));
		return ret;
	}
	t->reallocs++;
	if (via_event) {
		t->event_rounds++;
		ev_ok = mon_wait_ends(&mon, c0.ev_ended + c0.ev_evicted,
				      EVENT_TIMEOUT_MS);
		mon_counters(&mon, &c1);
		ev_ok = ev_ok && c1.notifies > c0.notifies;
	}
	mon_counters(&mon, &c0);
	ret = mr_reg(c->domain, b->addr, b->len, ACC_TARGET, &s->tgt_mr);
	mon_counters(&mon, &c1);
	if (ret) {
		diag("round %u: fi_mr_reg: %s", r, fi_strerror(-ret));
		return ret;
	}
	if (was_miss(&c0, &c1))
		t->realloc_miss++;
	else
		diag("round %u (%s, %s): fi_mr_reg after re-allocation did not "
		     "miss", r, size_name[i], realloc_name[how]);
	if (via_event) {
		/* The entry was gone already: nothing to ask valid() about. */
		if (ev_ok && c1.valid_calls == c0.valid_calls)
			t->event_ok++;
		else
			diag("round %u (%s): the free did not reach the cache "
			     "through an event and notify()", r, realloc_name[how]);
	}
	seed2 = next_seed();
	ret = send_rts(c, r, 2, b, s->tgt_mr, seed2);
	if (!ret)
		ret = conn_expect(c, MSG_FIN, r, &m);
	if (ret)
		return ret;
	t->writes++;
	if (pattern_match(b->addr, b->len, seed2))
		t->writes_ok++;
	else
		diag("round %u (%s, %s): the peer's fi_write after re-allocation "
		     "did not land in the new pages", r, size_name[i],
		     realloc_name[how]);
	if (b->old) {
		t->moved++;
		if (pattern_match(b->old, b->len, seed1))
			t->moved_clean++;
		else
			diag("round %u: the old pages changed after re-allocation", r);
		tbuf_drop_old(b);
	}

	/* 3. */
	seed3 = next_seed();
	pattern_fill(b->addr, b->len, seed3);
	m = (struct pair_msg){
		.type = MSG_READ_REQ,
		.round = r,
		.addr = (uintptr_t)b->addr,
		.len = b->len,
		.key = fi_mr_key(s->tgt_mr),
		.seed = seed3,
	};
	ret = conn_send(c, &m, NULL, 0, NULL);
	if (!ret)
		ret = conn_expect(c, MSG_READ_DONE, r, &m);
	if (ret)
		return ret;
	if (!m.arg)
		diag("round %u: the peer's fi_read of this side's buffer did not "
		     "return its bytes", r);
	mr_close(&s->tgt_mr);

	/* 4. */
	return recv_payload(s, r, t);
}

/*
 * The writer's round: (1) fill the source, register it around one
 * fi_write (a hit after its first round), say FIN; (2) free the source
 * and allocate again at the same address, fill it, register (must miss:
 * a stale MR would send the old pages' bytes), fi_write, FIN; (3)
 * fi_read the owner's buffer into the source and check it; (4) send a
 * payload from it with fi_send.
 */
static int writer_round(struct session *s, unsigned int r, struct tally *t)
{
	struct conn *c = s->c;
	unsigned int i = r % NR_SIZES;
	struct tbuf *b = &s->src[i];
	enum realloc_how how = round_how(r);
	struct mon_counters c0, c1;
	struct pair_msg m;
	bool ok;
	int ret;

	t->wrote++;

	/* 1. */
	ret = conn_expect(c, MSG_RTS, r, &m);
	if (ret)
		return ret;
	if (m.arg != 1 || m.len != b->len) {
		diag("round %u: an RTS for %" PRIu64 " bytes, step %u", r,
		     (uint64_t)m.len, m.arg);
		return -EPROTO;
	}
	pattern_fill(b->addr, b->len, m.seed);
	ret = reg_use(s, b, ACC_SOURCE, &s->src_mr, t, r, "source");
	if (!ret)
		ret = conn_rma(c, false, b->addr, b->len, s->src_mr, m.addr, m.key);
	if (!ret)
		ret = conn_wait_tx(c);
	if (ret)
		return ret;
	mr_close(&s->src_mr);
	ret = conn_send_msg(c, MSG_FIN, r, 1);
	if (ret)
		return ret;

	/* 2. */
	ret = tbuf_realloc(b, how);
	if (ret) {
		diag("round %u: %s: %s", r, realloc_name[how], strerror(-ret));
		return ret;
	}
	t->reallocs++;
	ret = conn_expect(c, MSG_RTS, r, &m);
	if (ret)
		return ret;
	if (m.arg != 2 || m.len != b->len) {
		diag("round %u: an RTS for %" PRIu64 " bytes, step %u", r,
		     (uint64_t)m.len, m.arg);
		return -EPROTO;
	}
	pattern_fill(b->addr, b->len, m.seed);
	mon_counters(&mon, &c0);
	ret = mr_reg(c->domain, b->addr, b->len, ACC_SOURCE, &s->src_mr);
	mon_counters(&mon, &c1);
	if (ret) {
		diag("round %u: fi_mr_reg: %s", r, fi_strerror(-ret));
		return ret;
	}
	if (was_miss(&c0, &c1))
		t->realloc_miss++;
	else
		diag("round %u (%s, %s): fi_mr_reg of the re-allocated source did "
		     "not miss", r, size_name[i], realloc_name[how]);
	ret = conn_rma(c, false, b->addr, b->len, s->src_mr, m.addr, m.key);
	if (!ret)
		ret = conn_wait_tx(c);
	if (ret)
		return ret;
	mr_close(&s->src_mr);
	ret = conn_send_msg(c, MSG_FIN, r, 2);
	if (ret)
		return ret;
	tbuf_drop_old(b);

	/* 3. */
	ret = conn_expect(c, MSG_READ_REQ, r, &m);
	if (ret)
		return ret;
	if (m.len != b->len) {
		diag("round %u: a READ_REQ for %" PRIu64 " bytes", r,
		     (uint64_t)m.len);
		return -EPROTO;
	}
	memset(b->addr, 0, b->len);
	ret = reg_use(s, b, ACC_SOURCE, &s->src_mr, t, r, "source");
	if (!ret)
		ret = conn_rma(c, true, b->addr, b->len, s->src_mr, m.addr, m.key);
	if (!ret)
		ret = conn_wait_tx(c);
	if (ret)
		return ret;
	t->reads++;
	ok = pattern_match(b->addr, b->len, m.seed);
	if (ok)
		t->reads_ok++;
	else
		diag("round %u (%s): fi_read did not return the peer's bytes", r,
		     size_name[i]);
	mr_close(&s->src_mr);
	ret = conn_send_msg(c, MSG_READ_DONE, r, ok);
	if (ret)
		return ret;

	/* 4. */
	return send_payload(s, r, b, t);
}

static int run_round(struct session *s, unsigned int r, struct tally *t)
{
	bool server_owns = !(r % 2);

	return s->is_server == server_owns ? owner_round(s, r, t) :
					     writer_round(s, r, t);
}

/* The TAP lines of a session of rounds (on either side). */
static void report_rounds(struct session *s, unsigned int min_rounds)
{
	const struct tally *t = &s->t;
	unsigned long ends, notifies, refusals;
	bool ok;

	if (s->completed)
		tap(!s->error && t->rounds == s->announced &&
		    s->announced >= min_rounds,
		    "%s: %u/%u rounds ran to the end (this side owned the buffer "
		    "in %u, wrote in %u; 4 KiB, 64 KiB, 1 MiB)", s->label,
		    t->rounds, s->announced, t->owned, t->wrote);
	else if (s->is_server)
		tap(s->peer_gone, "%s: the client went away after %u rounds "
		    "(%s); the server closed that endpoint, its CQ, EQ and MRs",
		    s->label, t->rounds, s->peer_gone ?
		    "FI_SHUTDOWN or flushed completions" :
		    "not a disconnection: an error");
	else
		tap(false, "%s: %u/%u rounds ran, then: %s", s->label, t->rounds,
		    s->announced, fi_strerror(-s->error));

	tap(t->first_miss == t->firsts &&
	    t->hits + t->late_evicted == t->hit_tries,
	    "%s: %u/%u registrations of unchanged memory through the cache were "
	    "hits (no subscribe, one valid() that said yes; %u needless misses "
	    "after a late notify()), %u/%u first registrations of a buffer "
	    "missed", s->label, t->hits, t->hit_tries, t->late_evicted,
	    t->first_miss, t->firsts);
	tap(t->realloc_miss == t->reallocs,
	    "%s: %u/%u fi_mr_reg after freeing and allocating again at the "
	    "same address missed (one subscribe; own buffers and sources; %s, "
	    "%s, %s, %s)", s->label, t->realloc_miss, t->reallocs,
	    realloc_name[RE_MUNMAP], realloc_name[RE_FIXED],
	    realloc_name[RE_MREMAP], realloc_name[RE_DONTNEED]);
	tap(t->event_ok == t->event_rounds,
	    "%s: %u/%u frees waited for reached the cache as memreg's ENDED "
	    "event and notify(); the fi_mr_reg after each then missed without "
	    "calling valid()", s->label, t->event_ok, t->event_rounds);
	tap(t->writes_ok == t->writes,
	    "%s: %u/%u fi_writes of the peer landed in this side's buffers, "
	    "every byte (before and after re-allocation; the peer's sources "
	    "re-allocated too)", s->label, t->writes_ok, t->writes);
	tap(t->moved_clean == t->moved,
	    "%s: %u/%u old pages moved away by mremap kept their bytes: nothing "
	    "written after re-allocation reached them", s->label, t->moved_clean,
	    t->moved);
	tap(t->reads_ok == t->reads,
	    "%s: %u/%u fi_reads of the peer's registered buffer returned every "
	    "byte", s->label, t->reads_ok, t->reads);
	tap(t->payloads_ok == t->payloads && t->sent_ok == t->sent,
	    "%s: %u/%u payloads received with fi_recv (%u chunks) were intact, "
	    "and the peer found %u/%u sent with fi_send intact", s->label,
	    t->payloads_ok, t->payloads, t->chunks, t->sent_ok, t->sent);

	/*
	 * Ground truth: each re-allocation ended a watch (one ENDED event
	 * each, at least), and reached the cache through the monitor: a
	 * notify(), or valid() refusing the entry.
	 */
	ends = (s->end.ev_ended + s->end.ev_evicted) -
	       (s->start.ev_ended + s->start.ev_evicted);
	notifies = s->end.notifies - s->start.notifies;
	refusals = s->end.valid_false - s->start.valid_false;
	ok = ends >= t->reallocs && notifies + refusals >= t->reallocs &&
	     t->realloc_miss == t->reallocs;
	tap(ok, "%s: memreg saw every re-allocation: %lu ENDED events for %u "
	    "re-allocations of registered memory; the cache heard of them "
	    "through %lu notify() calls and %lu valid() refusals; no "
	    "fi_mr_reg after one was a hit", s->label, ends, t->reallocs,
	    notifies, refusals);
}

/* ---- The server ------------------------------------------------------------ */

struct server {
	struct fi_info *hints;
	struct fi_info *pinfo;
	struct fid_eq *peq;
	struct fid_pep *pep;
	struct conn c;
	unsigned int min_rounds;
	unsigned int served, completed, aborted, refused;
};

/*
 * Waits for a connection request and accepts it into the domain the
 * server keeps (one MR cache for all sessions). A request that does not
 * end connected (the client gave up, went away) is closed and not counted.
 */
static int server_accept(struct server *sv, unsigned int timeout_ms)
{
	uint64_t deadline = deadline_ms(timeout_ms);
	struct conn *c = &sv->c;
	union {
		struct fi_eq_cm_entry cm;
		char buf[sizeof(struct fi_eq_cm_entry) + 256];
	} entry;
	struct fi_eq_err_entry err;
	uint32_t event;
	ssize_t rd;
	int ret;

	for (;;) {
		if (now_ns() > deadline)
			return -ETIMEDOUT;
		rd = fi_eq_read(sv->peq, &event, &entry, sizeof(entry), 0);
		if (rd == -FI_EAGAIN) {
			sleep_us(1000);
			continue;
		}
		if (rd == -FI_EAVAIL) {
			memset(&err, 0, sizeof(err));
			fi_eq_readerr(sv->peq, &err, 0);
			diag("listener EQ error: %s (%s)", fi_strerror(err.err),
			     fi_eq_strerror(sv->peq, err.prov_errno, err.err_data,
					    NULL, 0));
			continue;
		}
		if (rd < 0)
			return (int)rd;
		if (event != FI_CONNREQ) {
			diag("listener EQ: unexpected event %u", event);
			continue;
		}

		ret = conn_open_ep(c, entry.cm.info);
		if (ret && !c->ep)
			fi_reject(sv->pep, entry.cm.info->handle, NULL, 0);
		if (!ret)
			ret = conn_post_recvs(c);
		if (!ret)
			ret = fi_accept(c->ep, NULL, 0);
		fi_freeinfo(entry.cm.info);
		if (!ret)
			ret = conn_wait_connected(c, CONNECTED_TIMEOUT_MS);
		if (!ret)
			return 0;
		diag("a connection request did not end connected: %s",
		     fi_strerror(ret < 0 ? -ret : ret));
		sv->refused++;
		conn_close_ep(c);
	}
}

/* The server's side of a benchmark session: targets, then requests. */
static int server_bench(struct session *s)
{
	struct conn *c = s->c;
	struct pair_msg m;
	unsigned int i;
	int ret;

	ret = session_map(s, true, false);
	for (i = 0; i < NR_SIZES && !ret; i++) {
		ret = mr_reg(c->domain, s->tgt[i].addr, s->tgt[i].len, ACC_TARGET,
			     &s->bench_mr[i]);
		if (!ret) {
			m = (struct pair_msg){
				.type = MSG_TARGET,
				.arg = i,
				.addr = (uintptr_t)s->tgt[i].addr,
				.len = s->tgt[i].len,
				.key = fi_mr_key(s->bench_mr[i]),
			};
			ret = conn_send(c, &m, NULL, 0, NULL);
		}
	}
	while (!ret) {
		ret = conn_recv_msg(c, &m, OP_TIMEOUT_MS);
		if (ret)
			break;
		switch (m.type) {
		case MSG_SYNC:
			ret = conn_send_msg(c, MSG_SYNC_ACK, m.round, 0);
			break;
		case MSG_CHECK: {
			bool ok = m.arg < NR_SIZES && m.len <= s->tgt[m.arg].len &&
				  pattern_match(s->tgt[m.arg].addr, m.len, m.seed);

			s->bench_checks++;
			if (ok)
				s->bench_ok++;
			ret = conn_send_msg(c, MSG_VERDICT, m.round, ok);
			break;
		}
		case MSG_BYE:
			conn_send_msg(c, MSG_BYE_ACK, 0, 0);
			s->completed = true;
			return 0;
		default:
			diag("benchmark: unexpected %s", msg_str(m.type));
			ret = -EPROTO;
			break;
		}
	}
	return ret;
}

/* The server's side of a session of rounds: the client says which. */
static int server_rounds(struct session *s)
{
	struct conn *c = s->c;
	struct pair_msg m;
	int ret;

	ret = session_map(s, true, true);
	while (!ret) {
		struct tally rt = { 0 };

		ret = conn_recv_msg(c, &m, OP_TIMEOUT_MS);
		if (ret)
			break;
		if (m.type == MSG_BYE) {
			/* The client closes when it has this: do not insist. */
			conn_send_msg(c, MSG_BYE_ACK, 0, 0);
			s->completed = true;
			break;
		}
		if (m.type != MSG_ROUND || m.round != s->next_round) {
			diag("expected ROUND %u or BYE, got %s %u", s->next_round,
			     msg_str(m.type), m.round);
			ret = -EPROTO;
			break;
		}
		ret = run_round(s, m.round, &rt);
		if (ret)
			break;
		rt.rounds = 1;
		tally_add(&s->t, &rt);
		s->next_round++;
	}
	return ret;
}

static void server_session(struct server *sv, unsigned int no,
			   const struct baseline *base)
{
	struct session s = { .c = &sv->c, .is_server = true };
	char label[32];
	struct pair_msg m;
	unsigned int closed;
	int ret;

	snprintf(label, sizeof(label), "session %u", no);
	s.label = label;
	mon_counters(&mon, &s.start);
	ret = conn_recv_msg(s.c, &m, OP_TIMEOUT_MS);
	if (!ret && m.type != MSG_HELLO) {
		diag("expected HELLO, got %s", msg_str(m.type));
		ret = -EPROTO;
	}
	if (!ret) {
		s.flags = m.flags;
		s.announced = m.arg;
		ret = conn_send_msg(s.c, MSG_HELLO_ACK, 0, 0);
	}
	if (!ret)
		ret = s.flags & HELLO_BENCH ? server_bench(&s) : server_rounds(&s);
	if (ret && !s.completed) {
		s.error = ret;
		s.peer_gone = conn_peer_gone(s.c);
		diag("%s ended: %s (%s)", label, fi_strerror(-ret),
		     s.peer_gone ? "the client went away" : "the connection is up");
	}
	if (!mon_quiesce(&mon, EVENT_TIMEOUT_MS))
		diag("%s: the event thread did not settle", label);
	mon_counters(&mon, &s.end);

	if (s.flags & HELLO_BENCH) {
		if (s.completed)
			tap(!ret && s.bench_checks == NR_SIZES &&
			    s.bench_ok == s.bench_checks,
			    "%s: benchmark (client's cache %s): %u/%u byte checks "
			    "of the last write of each size passed", label,
			    s.flags & HELLO_NOCACHE ? "off" : "on", s.bench_ok,
			    s.bench_checks);
		else
			tap(s.peer_gone, "%s: the benchmark client went away "
			    "(%s); the server closed that endpoint and its MRs",
			    label, s.peer_gone ? "FI_SHUTDOWN or flushed "
			    "completions" : "not a disconnection: an error");
	} else {
		report_rounds(&s, sv->min_rounds);
	}

	closed = session_release(&s);
	conn_close_ep(s.c);
	if (!s.completed)
		diag("%s: closed %u MRs the session still held, its endpoint, CQ "
		     "and EQ", label, closed);
	sv->served++;
	if (s.completed)
		sv->completed++;
	else
		sv->aborted++;
	baseline_check(s.c, label, base);
}

/* After the last domain closed: stop() ran once, memreg holds nothing. */
static void check_after_close(void)
{
	tap(MON_GET(&mon, starts) == 1 && MON_GET(&mon, stops) == 1 &&
	    mon.stop_seen,
	    "the monitor was started by the first fi_domain and stopped once, "
	    "when the last domain closed (starts %lu, stops %lu)",
	    MON_GET(&mon, starts), MON_GET(&mon, stops));
	tap(mon.stop_seen && !mon.stop_error && !mon.stop_after.registrations &&
	    !mon.stop_after.watches && !mon.stop_after.pages_pinned,
	    "after closing everything memreg has no registrations and no watches "
	    "(registrations %llu, watches %llu, pages pinned %llu; stop() "
	    "dropped %lu subscriptions libfabric 1.17 never unsubscribed)",
	    (unsigned long long)mon.stop_after.registrations,
	    (unsigned long long)mon.stop_after.watches,
	    (unsigned long long)mon.stop_after.pages_pinned,
	    MON_GET(&mon, held_at_stop));
	diag("monitor: %lu subscribes (%lu REGISTERs, %lu reused), %lu valid() "
	     "(%lu no), events %lu ended, %lu evicted, %lu suspended, %lu late; "
	     "%lu notify(), %lu resyncs, %lu reclaimed, %lu DEREGISTER failures",
	     MON_GET(&mon, subscribes), MON_GET(&mon, registers),
	     MON_GET(&mon, reuses), MON_GET(&mon, valid_calls),
	     MON_GET(&mon, valid_false), MON_GET(&mon, ev_ended),
	     MON_GET(&mon, ev_evicted), MON_GET(&mon, ev_suspended),
	     MON_GET(&mon, ev_stale), MON_GET(&mon, notifies),
	     MON_GET(&mon, resyncs), MON_GET(&mon, reclaimed),
	     MON_GET(&mon, dereg_failures));
}

static int server_main(const char *addr, const char *port, unsigned int sessions,
		       unsigned int min_rounds)
{
	struct server sv = { .min_rounds = min_rounds };
	struct fi_eq_attr eq_attr = { .wait_obj = FI_WAIT_UNSPEC };
	struct conn *c = &sv.c;
	struct baseline base;
	unsigned long subs0;
	unsigned int no;
	int ret;

	sv.hints = make_hints();
	if (!sv.hints)
		return finish();
	ret = fi_getinfo(OFI_VERSION, addr, port, FI_SOURCE, sv.hints, &sv.pinfo);
	tap(!ret, "verbs fi_getinfo found %s for %s:%s (FI_EP_MSG, FI_MSG|FI_RMA, "
	    "FI_MR_LOCAL|VIRT_ADDR|ALLOCATED|PROV_KEY)", RDMA_DEV_NAME, addr, port);
	if (ret) {
		diag("fi_getinfo: %s", fi_strerror(-ret));
		goto out;
	}
	diag("provider %s, fabric %s, domain %s, max message %zu",
	     sv.pinfo->fabric_attr->prov_name, sv.pinfo->fabric_attr->name,
	     sv.pinfo->domain_attr->name, sv.pinfo->ep_attr->max_msg_size);
	c->max_msg = sv.pinfo->ep_attr->max_msg_size ?
		     sv.pinfo->ep_attr->max_msg_size : MIB;

	/* Before the first fi_domain, which starts the monitor. */
	ret = mon_import(&mon, MON_MEMREG);
	tap(!ret, "the memreg monitor imported (fi_open(\"mr_cache\") + "
	    "fi_import_fid) before the first fi_domain");
	if (ret) {
		diag("import: %s", fi_strerror(-ret));
		goto out;
	}

	ret = fi_fabric(sv.pinfo->fabric_attr, &c->fabric, NULL);
	if (!ret)
		ret = fi_eq_open(c->fabric, &eq_attr, &sv.peq, NULL);
	if (!ret)
		ret = fi_passive_ep(c->fabric, sv.pinfo, &sv.pep, NULL);
	if (!ret)
		ret = fi_pep_bind(sv.pep, &sv.peq->fid, 0);
	if (!ret)
		ret = fi_listen(sv.pep);
	if (!ret)
		ret = fi_domain(c->fabric, sv.pinfo, &c->domain, NULL);
	subs0 = MON_GET(&mon, subscribes);
	if (!ret)
		ret = conn_buffers(c);
	tap(!ret && MON_GET(&mon, starts) == 1 && mon.thread_started &&
	    MON_GET(&mon, subscribes) == subs0 + 2,
	    "listening on %s:%s; the domain started the monitor (starts %lu) and "
	    "the 2 control buffers were registered through the cache (%lu "
	    "subscribes)", addr, port, MON_GET(&mon, starts),
	    MON_GET(&mon, subscribes) - subs0);
	if (ret) {
		diag("listen: %s", fi_strerror(ret < 0 ? -ret : ret));
		goto close;
	}

	/*
	 * The baseline: the control buffers, which the server keeps
	 * registered across sessions, and nothing else.
	 */
	baseline_take(c, &base);
	baseline_diag("baseline", &base);
	for (no = 1; no <= sessions; no++) {
		ret = server_accept(&sv, ACCEPT_TIMEOUT_MS);
		if (ret) {
			tap(false, "session %u: no client connected within %u s (%s)",
			    no, ACCEPT_TIMEOUT_MS / 1000, fi_strerror(-ret));
			break;
		}
		diag("session %u: a client connected", no);
		server_session(&sv, no, &base);
	}
	tap(sv.served == sessions,
	    "%u/%u sessions served one after the other: %u ran to the end, %u "
	    "ended abruptly and were recovered from (%u connection requests "
	    "did not end connected)", sv.served, sessions, sv.completed,
	    sv.aborted, sv.refused);

close:
	conn_close_ep(c);
	mr_close(&c->tx_mr);
	mr_close(&c->rx_mr);
	if (sv.pep)
		fi_close(&sv.pep->fid);
	if (sv.peq)
		fi_close(&sv.peq->fid);
	if (c->domain)
		fi_close(&c->domain->fid);
	if (c->fabric)
		fi_close(&c->fabric->fid);
	conn_free_buffers(c);
	if (mon.imported && MON_GET(&mon, starts))
		check_after_close();
	mon_unimport(&mon);
out:
	if (sv.pinfo)
		fi_freeinfo(sv.pinfo);
	if (sv.hints)
		fi_freeinfo(sv.hints);
	return finish();
}

/* ---- The client ------------------------------------------------------------ */

struct client {
	const char *addr;
	const char *port;
	struct fi_info *hints;
	struct fi_info *cinfo;
	struct conn c;
	unsigned int attempts;
};

/*
 * fi_getinfo (retried: the server's address may not answer yet), the
 * monitor's import, the fabric, the domain and the control buffers, then
 * connection attempts until one ends connected (the server may not listen
 * yet, or be busy finishing the previous session).
 */
static int client_connect(struct client *k)
{
	uint64_t deadline = deadline_ms(CONNECT_TIMEOUT_MS);
	struct conn *c = &k->c;
	int ret;

	k->hints = make_hints();
	if (!k->hints)
		return -ENOMEM;
	for (;;) {
		ret = fi_getinfo(OFI_VERSION, k->addr, k->port, 0, k->hints,
				 &k->cinfo);
		if (!ret)
			break;
		if (now_ns() > deadline) {
			diag("fi_getinfo %s:%s: %s", k->addr, k->port,
			     fi_strerror(-ret));
			return ret;
		}
		sleep_us(1000000);
	}
	c->max_msg = k->cinfo->ep_attr->max_msg_size ?
		     k->cinfo->ep_attr->max_msg_size : MIB;

	/* Before the first fi_domain, which starts the monitor. */
	ret = mon_import(&mon, MON_MEMREG);
	if (ret) {
		diag("import: %s", fi_strerror(-ret));
		return ret;
	}
	ret = fi_fabric(k->cinfo->fabric_attr, &c->fabric, NULL);
	if (!ret)
		ret = fi_domain(c->fabric, k->cinfo, &c->domain, NULL);
	if (!ret)
		ret = conn_buffers(c);
	if (ret) {
		diag("domain: %s", fi_strerror(-ret));
		return ret;
	}

	for (;;) {
		k->attempts++;
		ret = conn_open_ep(c, k->cinfo);
		if (!ret)
			ret = fi_connect(c->ep, k->cinfo->dest_addr, NULL, 0);
		if (!ret)
			ret = conn_wait_connected(c, CONNECTED_TIMEOUT_MS);
		if (!ret)
			return conn_post_recvs(c);
		conn_close_ep(c);
		if (now_ns() > deadline) {
			diag("connect %s:%s: %s after %u attempts", k->addr, k->port,
			     fi_strerror(ret < 0 ? -ret : ret), k->attempts);
			return ret;
		}
		sleep_us(1000000);
	}
}

static void client_close(struct client *k)
{
	struct conn *c = &k->c;

	conn_close_ep(c);
	mr_close(&c->tx_mr);
	mr_close(&c->rx_mr);
	if (c->domain)
		fi_close(&c->domain->fid);
	if (c->fabric)
		fi_close(&c->fabric->fid);
	c->domain = NULL;
	c->fabric = NULL;
	conn_free_buffers(c);
	if (k->cinfo)
		fi_freeinfo(k->cinfo);
	if (k->hints)
		fi_freeinfo(k->hints);
	k->cinfo = NULL;
	k->hints = NULL;
}

/* Opens the session: HELLO, HELLO_ACK. */
static int client_hello(struct conn *c, unsigned int flags, unsigned int rounds)
{
	struct pair_msg m = { .type = MSG_HELLO, .flags = (__u16)flags, .arg = rounds };
	int ret = conn_send(c, &m, NULL, 0, NULL);

	if (!ret)
		ret = conn_expect(c, MSG_HELLO_ACK, 0, &m);
	return ret;
}

static int client_bye(struct conn *c, unsigned int rounds)
{
	struct pair_msg m;
	int ret = conn_send_msg(c, MSG_BYE, 0, rounds);

	if (!ret)
		ret = conn_expect(c, MSG_BYE_ACK, 0, &m);
	return ret;
}

static int client_rounds(struct client *k, unsigned int rounds)
{
	struct session s = {
		.c = &k->c,
		.label = "client",
		.announced = rounds,
	};
	struct baseline base;
	unsigned int r;
	int ret;

	baseline_take(&k->c, &base);
	baseline_diag("baseline", &base);
	mon_counters(&mon, &s.start);
	ret = client_hello(s.c, 0, rounds);
	if (!ret)
		ret = session_map(&s, true, true);
	for (r = 0; r < rounds && !ret; r++) {
		struct tally rt = { 0 };

		ret = conn_send_msg(s.c, MSG_ROUND, r, 0);
		if (!ret)
			ret = run_round(&s, r, &rt);
		if (!ret) {
			rt.rounds = 1;
			tally_add(&s.t, &rt);
		}
	}
	if (!ret)
		ret = client_bye(s.c, rounds);
	s.completed = !ret;
	s.error = ret;
	if (!mon_quiesce(&mon, EVENT_TIMEOUT_MS))
		diag("the event thread did not settle");
	mon_counters(&mon, &s.end);
	report_rounds(&s, 0);
	session_release(&s);
	baseline_check(&k->c, "client", &base);
	return ret;
}

/* ---- The benchmark (client) ------------------------------------------------- */

static unsigned int bench_ms = DEFAULT_BENCH_MS;

#define BENCH_MIN_ITERS		20
#define BENCH_MAX_ITERS		1000000UL
#define BENCH_WARMUP		5

struct bench_res {
	double lat_ns;
	double mbps;
	unsigned long lat_iters, bw_iters;
	unsigned long regs;		/* fi_mr_reg calls in the loops */
};

/* Everything written before has been placed at the server. */
static int bench_sync(struct conn *c)
{
	struct pair_msg m;
	int ret = conn_send_msg(c, MSG_SYNC, 0, 0);

	if (!ret)
		ret = conn_expect(c, MSG_SYNC_ACK, 0, &m);
	return ret;
}

/*
 * One size. Latency: one write at a time on an idle connection (a
 * SYNC round trip, untimed, before each), timing fi_mr_reg + fi_write +
 * its completion + fi_close. Bandwidth: BENCH_WINDOW writes in flight,
 * each with its own fi_mr_reg and fi_close around it, until bench_ms;
 * timed to the SYNC answer after the last, so every byte was placed.
 */
static int bench_size(struct session *s, unsigned int i,
		      const struct pair_msg *target, struct bench_res *res)
{
	struct conn *c = s->c;
	struct tbuf *b = &s->src[i];
	uint64_t budget = (uint64_t)bench_ms * 1000000ULL, t0, t, start, sum = 0;
	uint64_t win_end[BENCH_WINDOW] = { 0 };
	unsigned long n = 0, iter;
	unsigned int w;
	int ret = 0;

	memset(res, 0, sizeof(*res));
	start = now_ns();
	for (iter = 0; iter < BENCH_MAX_ITERS; iter++) {
		ret = bench_sync(c);
		if (ret)
			return ret;
		t0 = now_ns();
		ret = mr_reg(c->domain, b->addr, b->len, ACC_SOURCE, &s->src_mr);
		if (!ret)
			ret = conn_rma(c, false, b->addr, b->len, s->src_mr,
				       target->addr, target->key);
		if (!ret)
			ret = conn_wait_tx(c);
		mr_close(&s->src_mr);
		t = now_ns() - t0;
		res->regs++;
		if (ret)
			return ret;
		if (iter >= BENCH_WARMUP) {
			sum += t;
			n++;
		}
		if (n >= BENCH_MIN_ITERS && now_ns() - start > budget)
			break;
	}
	res->lat_iters = n;
	res->lat_ns = n ? (double)sum / (double)n : 0;

	/* Bandwidth: two windows of warm-up first, untimed. */
	for (iter = 0; iter < 2 * BENCH_WINDOW && !ret; iter++) {
		w = iter % BENCH_WINDOW;
		if (s->win_mr[w]) {
			ret = conn_wait(c, tx_all_done, win_end[w], OP_TIMEOUT_MS);
			mr_close(&s->win_mr[w]);
		}
		if (!ret)
			ret = mr_reg(c->domain, b->addr, b->len, ACC_SOURCE,
				     &s->win_mr[w]);
		if (!ret)
			ret = conn_rma(c, false, b->addr, b->len, s->win_mr[w],
				       target->addr, target->key);
		res->regs++;
		win_end[w] = c->tx_posted;
	}
	if (!ret)
		ret = conn_wait_tx(c);
	for (w = 0; w < BENCH_WINDOW; w++)
		mr_close(&s->win_mr[w]);
	if (!ret)
		ret = bench_sync(c);
	if (ret)
		return ret;

	n = 0;
	start = now_ns();
	for (iter = 0; iter < BENCH_MAX_ITERS; iter++) {
		w = iter % BENCH_WINDOW;
		if (s->win_mr[w]) {
			ret = conn_wait(c, tx_all_done, win_end[w], OP_TIMEOUT_MS);
			mr_close(&s->win_mr[w]);
			if (ret)
				return ret;
		}
		ret = mr_reg(c->domain, b->addr, b->len, ACC_SOURCE, &s->win_mr[w]);
		if (!ret)
			ret = conn_rma(c, false, b->addr, b->len, s->win_mr[w],
				       target->addr, target->key);
		res->regs++;
		if (ret)
			return ret;
		win_end[w] = c->tx_posted;
		n++;
		if (n >= BENCH_MIN_ITERS && now_ns() - start > budget)
			break;
	}
	ret = conn_wait_tx(c);
	for (w = 0; w < BENCH_WINDOW; w++)
		mr_close(&s->win_mr[w]);
	if (!ret)
		ret = bench_sync(c);
	t = now_ns() - start;
	if (ret)
		return ret;
	res->bw_iters = n;
	res->mbps = (double)n * (double)b->len / ((double)t / 1e9) / 1e6;
	return 0;
}

/*
 * The client's side of a benchmark session. With @nocache the process
 * runs with FI_MR_CACHE_MAX_COUNT=0: every fi_mr_reg registers with siw.
 */
static int client_bench(struct client *k, bool nocache)
{
	const char *tag = nocache ? "nocache" : "cache";
	struct session s = { .c = &k->c, .label = "client" };
	struct pair_msg targets[NR_SIZES], m;
	struct bench_res res[NR_SIZES];
	struct mon_counters c0, c1;
	struct fid_mr *mr1 = NULL, *mr2 = NULL;
	struct baseline base;
	unsigned long regs = 0, hits, misses;
	unsigned int i, checks = 0, checks_ok = 0;
	uint64_t seeds[NR_SIZES];
	bool same;
	int ret;

	baseline_take(&k->c, &base);
	baseline_diag("baseline", &base);
	ret = client_hello(s.c, HELLO_BENCH | (nocache ? HELLO_NOCACHE : 0), 0);
	for (i = 0; i < NR_SIZES && !ret; i++) {
		ret = conn_expect(s.c, MSG_TARGET, 0, &targets[i]);
		if (!ret && (targets[i].arg != i || targets[i].len != sizes[i])) {
			diag("a TARGET for size %u of %" PRIu64 " bytes",
			     targets[i].arg, (uint64_t)targets[i].len);
			ret = -EPROTO;
		}
	}
	if (!ret)
		ret = session_map(&s, false, true);
	if (ret)
		goto out;

	/* Is the cache what this run says it is? */
	ret = mr_reg(s.c->domain, s.src[0].addr, s.src[0].len, ACC_SOURCE, &mr1);
	if (!ret)
		ret = mr_reg(s.c->domain, s.src[0].addr, s.src[0].len, ACC_SOURCE,
			     &mr2);
	same = !ret && mr1 == mr2;
	mr_close(&mr2);
	mr_close(&mr1);
	if (nocache)
		tap(!ret && !same && !MON_GET(&mon, starts),
		    "cache off (FI_MR_CACHE_MAX_COUNT=0): two fi_mr_reg of one "
		    "buffer gave two MRs and the monitor was never started "
		    "(starts %lu)", MON_GET(&mon, starts));
	else
		tap(!ret && same && MON_GET(&mon, starts) == 1,
		    "cache on: two fi_mr_reg of one buffer gave one MR, the memreg "
		    "monitor is started");
	if (ret)
		goto out;
	s.src[0].used = true;

	mon_counters(&mon, &c0);
	for (i = 0; i < NR_SIZES && !ret; i++) {
		seeds[i] = next_seed();
		pattern_fill(s.src[i].addr, s.src[i].len, seeds[i]);
		ret = bench_size(&s, i, &targets[i], &res[i]);
		regs += res[i].regs;
		if (ret)
			break;
		/* Every write wrote the same bytes: the last one must be there. */
		m = (struct pair_msg){
			.type = MSG_CHECK,
			.arg = i,
			.len = s.src[i].len,
			.seed = seeds[i],
		};
		ret = conn_send(s.c, &m, NULL, 0, NULL);
		if (!ret)
			ret = conn_expect(s.c, MSG_VERDICT, 0, &m);
		if (!ret) {
			checks++;
			checks_ok += !!m.arg;
		}
	}
	mon_counters(&mon, &c1);
	if (!ret)
		ret = client_bye(s.c, 0);
	s.completed = !ret;

	tap(!ret && checks == NR_SIZES && checks_ok == checks,
	    "benchmark (cache %s): the server found every byte of the last write "
	    "of each size (%u/%u)", nocache ? "off" : "on", checks_ok, checks);
	hits = (c1.valid_calls - c0.valid_calls) - (c1.valid_false - c0.valid_false);
	misses = c1.subscribes - c0.subscribes;
	if (!nocache)
		tap(!ret && hits == regs - (NR_SIZES - 1) && misses == NR_SIZES - 1,
		    "benchmark (cache on): %lu/%lu fi_mr_reg + fi_close around a "
		    "write were cache hits; only the first of the 64 KiB and 1 MiB "
		    "sources missed (%lu misses)", hits, regs, misses);
	if (!ret) {
		for (i = 0; i < NR_SIZES; i++) {
			diag("%s %s: latency %lu writes, bandwidth %lu writes (%u in "
			     "flight), %u ms each", tag, size_name[i],
			     res[i].lat_iters, res[i].bw_iters, BENCH_WINDOW,
			     bench_ms);
			printf("BENCH pair_write_%s_%s_ns %.1f\n", size_metric[i], tag,
			       res[i].lat_ns);
			printf("BENCH pair_write_%s_%s_mbps %.1f\n", size_metric[i], tag,
			       res[i].mbps);
		}
		if (!nocache)
			printf("BENCH pair_cache_hit_rate %.4f\n",
			       regs ? (double)hits / (double)regs : 0.0);
	}
out:
	if (ret)
		diag("benchmark: %s", fi_strerror(ret < 0 ? -ret : ret));
	session_release(&s);
	baseline_check(&k->c, "client", &base);
	return ret;
}

/*
 * Runs the cache-off half: this program again, with FI_MR_CACHE_MAX_COUNT=0
 * in its environment (libfabric reads it once, at initialisation). Its
 * BENCH and "#" lines are passed on, its TAP lines become this run's.
 */
static void bench_nocache_child(const char *self, const char *addr,
				const char *port)
{
	char ms[16], *line = NULL;
	char *argv[] = {
		(char *)self, "--client", (char *)addr, "--bench",
		"--bench-nocache", "--port", (char *)port, "--bench-ms", ms, NULL,
	};
	size_t cap = 0;
	ssize_t n;
	int pfd[2], status = 0;
	pid_t pid;
	FILE *f;

	snprintf(ms, sizeof(ms), "%u", bench_ms);
	fflush(stdout);
	if (pipe(pfd)) {
		tap(false, "the cache-off run: pipe: %s", strerror(errno));
		return;
	}
	pid = fork();
	if (pid < 0) {
		tap(false, "the cache-off run: fork: %s", strerror(errno));
		close(pfd[0]);
		close(pfd[1]);
		return;
	}
	if (!pid) {
		dup2(pfd[1], STDOUT_FILENO);
		close(pfd[0]);
		close(pfd[1]);
		setenv("FI_MR_CACHE_MAX_COUNT", "0", 1);
		execv("/proc/self/exe", argv);
		execvp(self, argv);
		fprintf(stderr, "exec %s: %s\n", self, strerror(errno));
		_exit(127);
	}
	close(pfd[1]);
	f = fdopen(pfd[0], "r");
	while (f && (n = getline(&line, &cap, f)) > 0) {
		const char *text;

		if (line[n - 1] == '\n')
			line[n - 1] = '\0';
		if (!strncmp(line, "ok ", 3) || !strncmp(line, "not ok ", 7)) {
			text = strstr(line, " - ");
			tap(line[0] == 'o', "cache off: %s", text ? text + 3 : line);
		} else if (!strncmp(line, "BENCH ", 6) || line[0] == '#') {
			puts(line);
		} else if (!strncmp(line, "1..", 3) && strncmp(line, "1..0", 4)) {
			/* Its plan: its lines are counted here. */
		} else if (!strncmp(line, final_name, strlen(final_name)) &&
			   line[strlen(final_name)] == ':') {
			diag("the cache-off run's summary:%s",
			     line + strlen(final_name) + 1);
		} else {
			diag("cache-off run: %s", line);
		}
	}
	free(line);
	if (f)
		fclose(f);
	else
		close(pfd[0]);
	waitpid(pid, &status, 0);
	tap(WIFEXITED(status) && !WEXITSTATUS(status),
	    "the cache-off run (this program again, FI_MR_CACHE_MAX_COUNT=0) "
	    "passed (exit status %d)", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

static int client_main(const char *self, const char *addr, const char *port,
		       unsigned int rounds, bool bench, bool nocache)
{
	struct client k = { .addr = addr, .port = port };
	unsigned long subs0;
	int ret;

	subs0 = MON_GET(&mon, subscribes);
	ret = client_connect(&k);
	tap(!ret, "connected to the server at %s:%s over %s (%u attempts)", addr,
	    port, RDMA_DEV_NAME, k.attempts);
	if (ret)
		goto close;
	if (!nocache)
		tap(MON_GET(&mon, starts) == 1 && mon.thread_started &&
		    MON_GET(&mon, subscribes) == subs0 + 2,
		    "the first fi_domain started the memreg monitor (starts %lu) "
		    "and the 2 control buffers were registered through the cache "
		    "(%lu subscribes)", MON_GET(&mon, starts),
		    MON_GET(&mon, subscribes) - subs0);

	if (bench)
		client_bench(&k, nocache);
	else
		client_rounds(&k, rounds);

close:
	client_close(&k);
	if (!nocache && mon.imported && MON_GET(&mon, starts))
		check_after_close();
	mon_unimport(&mon);
	if (bench && !nocache)
		bench_nocache_child(self, addr, port);
	return finish();
}

/* ---- --setup-net ------------------------------------------------------------ */

static int setup_net(const char *iface, const char *cidr)
{
	char addr[64], why[256] = "";
	unsigned long prefix = 24;
	bool created = false;
	char *slash, *end;
	int ret;

	snprintf(addr, sizeof(addr), "%s", cidr);
	slash = strchr(addr, '/');
	if (slash) {
		*slash = '\0';
		prefix = strtoul(slash + 1, &end, 10);
		if (*end || prefix > 32) {
			fprintf(stderr, "bad prefix in %s\n", cidr);
			return 2;
		}
	}
	ret = rdma_dev_exists(RDMA_DEV_NAME);
	if (ret < 0) {
		snprintf(why, sizeof(why), "RDMA netlink unavailable: %s",
			 strerror(-ret));
		skip("no RDMA device", why);
	}
	ret = siw_setup(&(const struct siw_net){
				.netdev = iface,
				.addr = addr,
				.prefix = (unsigned char)prefix,
				.always = true,
			}, true, why, sizeof(why), &created);
	tap(!ret, "%s is up on %s (%s/%lu, %s and lo up)%s", RDMA_DEV_NAME, iface,
	    addr, prefix, iface, ret ? "" : created ? ": created by this program" :
	    ": it was there already");
	if (ret)
		diag("%s", why);
	return finish();
}

/* ---- main ------------------------------------------------------------------- */

static void __attribute__((noreturn)) usage(const char *prog, int status)
{
	fprintf(status ? stderr : stdout,
		"usage: %s --setup-net IFACE ADDR/PREFIX\n"
		"       %s --server ADDR [--sessions N] [--rounds R] [--port P]\n"
		"       %s --client ADDR [--rounds R] [--port P]\n"
		"       %s --client ADDR --bench [--bench-ms MS] [--port P]\n"
		"  --setup-net  bring IFACE and lo up, add the address, create %s "
		"on IFACE\n"
		"  --server     serve N sessions (default 1) one after the other;\n"
		"               a completed session must have run R rounds at least\n"
		"  --client     run R rounds (default %u) with the server at ADDR\n"
		"  --bench      BENCH lines: RDMA writes with the MR cache on and "
		"off\n"
		"               (two sessions of the server)\n"
		"  --port P     the server's port (default %s)\n",
		prog, prog, prog, prog, RDMA_DEV_NAME, DEFAULT_ROUNDS,
		DEFAULT_PORT);
	exit(status);
}

enum run_mode { RUN_NONE, RUN_SETUP, RUN_SERVER, RUN_CLIENT };

int main(int argc, char **argv)
{
	const char *addr = NULL, *iface = NULL, *cidr = NULL, *port = DEFAULT_PORT;
	unsigned long sessions = 1, rounds = 0;
	enum run_mode mode = RUN_NONE;
	bool bench = false, nocache = false, created;
	char why[256] = "";
	__u32 version = 0;
	int i, ret, fd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--setup-net") && i + 2 < argc) {
			mode = RUN_SETUP;
			iface = argv[++i];
			cidr = argv[++i];
		} else if (!strcmp(argv[i], "--server") && i + 1 < argc) {
			mode = RUN_SERVER;
			addr = argv[++i];
		} else if (!strcmp(argv[i], "--client") && i + 1 < argc) {
			mode = RUN_CLIENT;
			addr = argv[++i];
		} else if (!strcmp(argv[i], "--sessions") && i + 1 < argc) {
			sessions = strtoul(argv[++i], NULL, 0);
			if (!sessions)
				usage(argv[0], 2);
		} else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
			rounds = strtoul(argv[++i], NULL, 0);
			if (!rounds || rounds > UINT32_MAX)
				usage(argv[0], 2);
		} else if (!strcmp(argv[i], "--port") && i + 1 < argc) {
			port = argv[++i];
		} else if (!strcmp(argv[i], "--bench")) {
			bench = true;
		} else if (!strcmp(argv[i], "--bench-nocache")) {
			nocache = true;
		} else if (!strcmp(argv[i], "--bench-ms") && i + 1 < argc) {
			bench_ms = (unsigned int)strtoul(argv[++i], NULL, 0);
			if (!bench_ms)
				usage(argv[0], 2);
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(argv[0], 0);
		} else {
			usage(argv[0], 2);
		}
	}
	if (mode == RUN_NONE || ((bench || nocache) && mode != RUN_CLIENT))
		usage(argv[0], 2);
	final_name = mode == RUN_SETUP ? "MEMREG-PAIR-SETUP" :
		     mode == RUN_SERVER ? "MEMREG-PAIR-SERVER" :
					  "MEMREG-PAIR-CLIENT";
	nocache = nocache && bench;

	/*
	 * Only in the project's guest (where /dev/memreg exists) is the
	 * network touched, and only there do the checks mean anything.
	 */
	if (access("/dev/memreg", F_OK))
		skip("no /dev/memreg", "/dev/memreg does not exist: the memreg "
		     "module is not loaded");
	if (mode != RUN_SETUP) {
		fd = memreg_open();
		if (fd < 0) {
			snprintf(why, sizeof(why), "cannot open /dev/memreg: %s",
				 strerror(-fd));
			skip("no /dev/memreg", why);
		}
		ret = memreg_get_version(fd, &version);
		close(fd);
		if (ret || version < 4) {
			snprintf(why, sizeof(why), "the memreg module speaks ABI %u; "
				 "watch registrations need 4", version);
			skip("memreg without watch registrations", why);
		}
	}

	ibv_static_providers(NULL, &verbs_provider_siw, NULL);
	if (mode == RUN_SETUP)
		return setup_net(iface, cidr);

	ret = siw_setup(NULL, true, why, sizeof(why), &created);
	if (ret)
		skip("no RDMA device", why);

	/* Only verbs: psm's stubs and the other providers' probing stay out. */
	setenv("FI_PROVIDER", "verbs", 1);
	seed_base = (now_ns() << 16) ^ ((uint64_t)getpid() << 48) ^
		    (mode == RUN_SERVER ? 0x5eULL : 0xc1ULL);
	expect_buf = malloc(MIB);
	if (!expect_buf) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}

	if (mode == RUN_SERVER)
		return server_main(addr, port, (unsigned int)sessions,
				   rounds ? (unsigned int)rounds : 1);
	return client_main(argv[0], addr, port,
			   rounds ? (unsigned int)rounds : DEFAULT_ROUNDS, bench,
			   nocache);
}
