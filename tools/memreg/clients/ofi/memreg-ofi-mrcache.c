// SPDX-License-Identifier: GPL-2.0
/*
 * memreg-ofi-mrcache: libfabric 1.17's MR cache, through its verbs provider
 * over soft-iWARP (siw), told about memory changes by memreg.
 *
 * libfabric is used unchanged: a memory monitor built on memreg's watch
 * registrations (monitor.c, shared with memreg-ofi-pair, as is the network
 * setup) is installed through libfabric's public import API
 * (fi_open("mr_cache") + fi_import_fid() with struct fid_mem_monitor, see
 * rdma/fi_ext.h). Its subscribe() is a watch REGISTER (nothing pinned; siw
 * pins on its own), its valid() one acquire load of the watch's state word,
 * and a thread of its own turns memreg's ENDED and EVICTED events into
 * import_ops->notify(). Two MSG endpoints of this process are connected
 * over siw0 and every check is a byte check of an fi_write or a count of
 * the monitor's callbacks; nothing depends on timing.
 *
 * Modes (see README): the default runs the checks; --no-monitor imports
 * nothing and reports what libfabric's verbs cache does on its own;
 * --blind-monitor imports a monitor that never reports a change, to show the
 * stale-registration bug class memreg exists to prevent; --bench N prints
 * BENCH lines for a cache hit and a cache miss.
 *
 * Output is TAP, then "MEMREG-OFI: P passed, F failed". Exit status: 0 all
 * passed, 1 a check failed, 4 skipped (no /dev/memreg, no RDMA device).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <inttypes.h>
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

#include <infiniband/verbs.h>
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

/*
 * libibverbs.a registers no provider by itself: siw's, from
 * libsiw-rdmav34.a, is handed to it before anything lists devices.
 * verbs.h declares these only with RDMA_STATIC_PROVIDERS, which would also
 * redefine ibv_get_device_list().
 */
struct verbs_device_ops;
extern const struct verbs_device_ops verbs_provider_siw;
void ibv_static_providers(void *unused, ...);

#define OFI_VERSION		FI_VERSION(1, 17)
#define NODE_ADDR		"192.0.2.1"
#define NODE_PREFIX		24
#define DEFAULT_PORT		"47591"
#define NETDEV_NAME		"dummy0"

#define KIB			1024UL
#define MIB			(1024UL * 1024UL)
#define OP_TIMEOUT_MS		30000
#define EVENT_TIMEOUT_MS	5000

#define EXIT_SKIP		4

#define ARRAY_SIZE(a)		(sizeof(a) / sizeof((a)[0]))
/* container_of() comes from rdma/fabric.h. */

/* ---- TAP ----------------------------------------------------------------- */

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
	printf("MEMREG-OFI: skipped (%s)\n", why);
	exit(EXIT_SKIP);
}

/* ---- The memreg monitor (monitor.c) ------------------------------------- */

static struct memreg_monitor mon;

/* ---- libfabric: two MSG endpoints over siw -------------------------------- */

struct side {
	struct fid_domain *domain;
	struct fid_eq *eq;
	struct fid_cq *cq;
	struct fid_ep *ep;
	bool connected;
};

struct ofi {
	const char *port;
	struct fi_info *hints;
	struct fi_info *pinfo;		/* the passive endpoint's */
	struct fi_info *cinfo;		/* the client's */
	struct fid_fabric *fabric;
	struct fid_pep *pep;
	struct side srv;		/* the target of the writes */
	struct side cli;		/* their initiator */
	size_t max_msg;

	/* Control buffers, registered once through the cache. */
	void *src;			/* the client's source, 1 MiB */
	void *msg;			/* the client's SEND buffer */
	void *rx;			/* the server's RECV buffer */
	struct fid_mr *src_mr, *msg_mr, *rx_mr;
	struct fi_context rx_ctx, tx_ctx;

	unsigned long starts_after_first_domain;
	unsigned long ctl_subscribes;	/* subscribe() calls the 3 buffers made */
	int ctl_regs;			/* ... of 3 fi_mr_reg calls */
};

#define SRC_LEN		MIB
#define CTL_LEN		(4 * KIB)

static void *map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	memset(p, 0, len);
	return p;
}

static int mr_reg(struct fid_domain *domain, void *buf, size_t len,
		  uint64_t access, struct fid_mr **mr)
{
	return fi_mr_reg(domain, buf, len, access, 0, 0, 0, mr, NULL);
}

static void mr_close(struct fid_mr **mr)
{
	if (*mr)
		fi_close(&(*mr)->fid);
	*mr = NULL;
}

/* Registers a control buffer, counting the subscribe() calls it made. */
static int ctl_reg(struct ofi *o, struct fid_domain *domain, void *buf,
		   size_t len, uint64_t access, struct fid_mr **mr)
{
	unsigned long before = MON_GET(&mon, subscribes);
	int ret = mr_reg(domain, buf, len, access, mr);

	if (!ret) {
		o->ctl_regs++;
		o->ctl_subscribes += MON_GET(&mon, subscribes) - before;
	}
	return ret;
}

static int cq_wait(struct fid_cq *cq, unsigned int n, const char *what)
{
	uint64_t deadline = now_ns() + OP_TIMEOUT_MS * 1000000ULL;
	struct fi_cq_entry comp[4];

	while (n) {
		ssize_t ret = fi_cq_read(cq, comp, n < 4 ? n : 4);

		if (ret > 0) {
			n -= (unsigned int)ret;
			continue;
		}
		if (ret == -FI_EAVAIL) {
			struct fi_cq_err_entry err;

			memset(&err, 0, sizeof(err));
			fi_cq_readerr(cq, &err, 0);
			diag("%s: completion error: %s (%s)", what,
			     fi_strerror(err.err),
			     fi_cq_strerror(cq, err.prov_errno, err.err_data,
					    NULL, 0));
			return err.err ? -err.err : -EIO;
		}
		if (ret != -FI_EAGAIN) {
			diag("%s: fi_cq_read: %s", what, fi_strerror((int)-ret));
			return (int)ret;
		}
		if (now_ns() > deadline) {
			diag("%s: no completion after %d ms", what, OP_TIMEOUT_MS);
			return -ETIMEDOUT;
		}
	}
	return 0;
}

static int post_recv(struct ofi *o)
{
	return (int)fi_recv(o->srv.ep, o->rx, CTL_LEN, fi_mr_desc(o->rx_mr), 0,
			    &o->rx_ctx);
}

static int side_open(struct ofi *o, struct side *s, struct fi_info *info,
		     bool own_eq)
{
	struct fi_cq_attr cq_attr = {
		.format = FI_CQ_FORMAT_CONTEXT,
		.wait_obj = FI_WAIT_NONE,
	};
	struct fi_eq_attr eq_attr = { .wait_obj = FI_WAIT_UNSPEC };
	int ret;

	ret = fi_domain(o->fabric, info, &s->domain, NULL);
	if (ret)
		return ret;
	if (own_eq) {
		ret = fi_eq_open(o->fabric, &eq_attr, &s->eq, NULL);
		if (ret)
			return ret;
	}
	ret = fi_cq_open(s->domain, &cq_attr, &s->cq, NULL);
	if (ret)
		return ret;
	ret = fi_endpoint(s->domain, info, &s->ep, NULL);
	if (ret)
		return ret;
	ret = fi_ep_bind(s->ep, &s->eq->fid, 0);
	if (!ret)
		ret = fi_ep_bind(s->ep, &s->cq->fid, FI_TRANSMIT | FI_RECV);
	if (!ret)
		ret = fi_enable(s->ep);
	return ret;
}

static int ofi_getinfo(struct ofi *o)
{
	int ret;

	o->hints = fi_allocinfo();
	if (!o->hints)
		return -ENOMEM;
	o->hints->ep_attr->type = FI_EP_MSG;
	o->hints->caps = FI_MSG | FI_RMA;
	o->hints->mode = FI_CONTEXT | FI_RX_CQ_DATA;
	o->hints->addr_format = FI_SOCKADDR_IN;
	o->hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR |
					 FI_MR_ALLOCATED | FI_MR_PROV_KEY;
	o->hints->fabric_attr->prov_name = strdup("verbs");

	ret = fi_getinfo(OFI_VERSION, NODE_ADDR, o->port, FI_SOURCE, o->hints,
			 &o->pinfo);
	if (ret)
		return ret;
	o->max_msg = o->pinfo->ep_attr->max_msg_size;
	if (!o->max_msg)
		o->max_msg = SRC_LEN;
	return 0;
}

/*
 * The passive endpoint listens, the client connects, both EQs are read in
 * turn (verbs progresses a connecting side only while its EQ is read), and
 * the server's endpoint is made on FI_CONNREQ in a domain of its own.
 */
static int ofi_connect(struct ofi *o)
{
	struct fi_eq_attr eq_attr = { .wait_obj = FI_WAIT_UNSPEC };
	uint64_t deadline;
	int ret;

	ret = fi_fabric(o->pinfo->fabric_attr, &o->fabric, NULL);
	if (ret)
		return ret;
	ret = fi_eq_open(o->fabric, &eq_attr, &o->srv.eq, NULL);
	if (ret)
		return ret;
	ret = fi_passive_ep(o->fabric, o->pinfo, &o->pep, NULL);
	if (!ret)
		ret = fi_pep_bind(o->pep, &o->srv.eq->fid, 0);
	if (!ret)
		ret = fi_listen(o->pep);
	if (ret)
		return ret;

	ret = fi_getinfo(OFI_VERSION, NODE_ADDR, o->port, 0, o->hints, &o->cinfo);
	if (ret)
		return ret;
	ret = side_open(o, &o->cli, o->cinfo, true);
	o->starts_after_first_domain = MON_GET(&mon, starts);
	if (ret)
		return ret;
	ret = fi_connect(o->cli.ep, o->cinfo->dest_addr, NULL, 0);
	if (ret)
		return ret;

	deadline = now_ns() + OP_TIMEOUT_MS * 1000000ULL;
	while (!o->srv.connected || !o->cli.connected) {
		struct side *sides[2] = { &o->srv, &o->cli };
		unsigned int i;

		for (i = 0; i < 2; i++) {
			union {
				struct fi_eq_cm_entry cm;
				char buf[sizeof(struct fi_eq_cm_entry) + 256];
			} entry;
			struct fi_eq_err_entry err;
			uint32_t event;
			ssize_t rd;

			rd = fi_eq_read(sides[i]->eq, &event, &entry, sizeof(entry), 0);
			if (rd == -FI_EAGAIN)
				continue;
			if (rd == -FI_EAVAIL) {
				memset(&err, 0, sizeof(err));
				fi_eq_readerr(sides[i]->eq, &err, 0);
				diag("%s EQ error: %s (%s)", i ? "client" : "server",
				     fi_strerror(err.err),
				     fi_eq_strerror(sides[i]->eq, err.prov_errno,
						    err.err_data, NULL, 0));
				return err.err ? -err.err : -EIO;
			}
			if (rd < 0)
				return (int)rd;
			if (event == FI_CONNREQ && i == 0) {
				struct fi_info *info = entry.cm.info;

				ret = side_open(o, &o->srv, info, false);
				if (!ret)
					ret = ctl_reg(o, o->srv.domain, o->rx,
						      CTL_LEN, FI_RECV, &o->rx_mr);
				if (!ret)
					ret = post_recv(o);
				if (!ret)
					ret = fi_accept(o->srv.ep, NULL, 0);
				fi_freeinfo(info);
				if (ret)
					return ret;
			} else if (event == FI_CONNECTED) {
				sides[i]->connected = true;
			} else {
				diag("%s EQ: unexpected event %u", i ? "client" : "server",
				     event);
			}
		}
		if (now_ns() > deadline) {
			diag("not connected after %d ms", OP_TIMEOUT_MS);
			return -ETIMEDOUT;
		}
	}

	ret = ctl_reg(o, o->cli.domain, o->src, SRC_LEN, FI_WRITE | FI_SEND,
		      &o->src_mr);
	if (!ret)
		ret = ctl_reg(o, o->cli.domain, o->msg, CTL_LEN, FI_SEND, &o->msg_mr);
	return ret;
}

/*
 * fi_write of @len bytes of the source buffer (filled by the caller) to
 * @dst through @key, then a SEND carrying @tag. The server's RECV of that
 * SEND completes after the WRITE's data was placed (iWARP orders them), so
 * the bytes can be checked as soon as this returns 0.
 */
static int ofi_write(struct ofi *o, void *dst, size_t len, uint64_t key,
		     uint64_t tag)
{
	size_t off, chunk;
	ssize_t ret;

	for (off = 0; off < len; off += chunk) {
		chunk = len - off < o->max_msg ? len - off : o->max_msg;
		ret = fi_write(o->cli.ep, (char *)o->src + off, chunk,
			       fi_mr_desc(o->src_mr), 0,
			       (uint64_t)(uintptr_t)dst + off, key, &o->tx_ctx);
		if (ret) {
			diag("fi_write: %s", fi_strerror((int)-ret));
			return (int)ret;
		}
		ret = cq_wait(o->cli.cq, 1, "fi_write");
		if (ret)
			return (int)ret;
	}
	memcpy(o->msg, &tag, sizeof(tag));
	ret = fi_send(o->cli.ep, o->msg, sizeof(tag), fi_mr_desc(o->msg_mr), 0,
		      &o->tx_ctx);
	if (ret) {
		diag("fi_send: %s", fi_strerror((int)-ret));
		return (int)ret;
	}
	ret = cq_wait(o->cli.cq, 1, "fi_send");
	if (!ret)
		ret = cq_wait(o->srv.cq, 1, "fi_recv");
	if (ret)
		return (int)ret;
	if (memcmp(o->rx, &tag, sizeof(tag))) {
		diag("the SEND after the write carried the wrong tag");
		return -EBADMSG;
	}
	return post_recv(o);
}

static void side_close(struct side *s)
{
	if (s->ep)
		fi_close(&s->ep->fid);
	if (s->cq)
		fi_close(&s->cq->fid);
	s->ep = NULL;
	s->cq = NULL;
}

/* Closes everything; the last domain's close stops the monitor. */
static void ofi_close(struct ofi *o)
{
	mr_close(&o->src_mr);
	mr_close(&o->msg_mr);
	mr_close(&o->rx_mr);
	side_close(&o->cli);
	side_close(&o->srv);
	if (o->pep)
		fi_close(&o->pep->fid);
	if (o->cli.eq)
		fi_close(&o->cli.eq->fid);
	if (o->srv.eq)
		fi_close(&o->srv.eq->fid);
	if (o->cli.domain)
		fi_close(&o->cli.domain->fid);
	if (o->srv.domain)
		fi_close(&o->srv.domain->fid);
	if (o->fabric)
		fi_close(&o->fabric->fid);
	o->pep = NULL;
	o->cli.eq = NULL;
	o->srv.eq = NULL;
	o->cli.domain = NULL;
	o->srv.domain = NULL;
	o->fabric = NULL;
	if (o->cinfo)
		fi_freeinfo(o->cinfo);
	if (o->pinfo)
		fi_freeinfo(o->pinfo);
	if (o->hints)
		fi_freeinfo(o->hints);
	o->cinfo = NULL;
	o->pinfo = NULL;
	o->hints = NULL;
}

/* ---- Test buffers: freed and re-allocated at the same address -------------- */

struct tbuf {
	char *addr;
	size_t len;
	char *old;	/* RE_MREMAP: where the old pages are now, or NULL */
};

static int tbuf_map(struct tbuf *b, size_t len)
{
	b->addr = map_anon(len);
	b->len = len;
	b->old = NULL;
	return b->addr ? 0 : -ENOMEM;
}

static void tbuf_unmap(struct tbuf *b)
{
	if (b->old)
		munmap(b->old, b->len);
	if (b->addr)
		munmap(b->addr, b->len);
	b->old = NULL;
	b->addr = NULL;
}

static void tbuf_drop_old(struct tbuf *b)
{
	if (b->old)
		munmap(b->old, b->len);
	b->old = NULL;
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

/* ---- The checks with the memreg monitor ----------------------------------- */

struct tally {
	unsigned int rounds;
	unsigned int miss_then_hit;	/* fresh memory: miss, then a hit */
	unsigned int same_addr;		/* re-allocations at the same address */
	unsigned int realloc_miss;	/* ... after which fi_mr_reg missed */
	unsigned int writes;
	unsigned int writes_ok;
	unsigned int moved;		/* RE_MREMAP rounds */
	unsigned int moved_clean;	/* ... whose old pages kept their bytes */
	unsigned int event_rounds;
	unsigned int event_ok;
	unsigned int errors;
};

static uint64_t next_seed = 1;

/* fi_write of a fresh pattern into @dst; true when it landed there. */
static bool write_check(struct ofi *o, void *dst, size_t len, uint64_t key,
			uint64_t *seed_out)
{
	uint64_t seed = next_seed++;

	pattern_fill(o->src, len, seed);
	if (seed_out)
		*seed_out = seed;
	if (ofi_write(o, dst, len, key, seed))
		return false;
	return pattern_match(dst, len, seed);
}

/*
 * One round on @b: fresh memory misses then hits; a write lands; the MR
 * goes back to the cache; the memory is freed and re-allocated at the same
 * address (@how); the next fi_mr_reg must miss and a write through it must
 * land in the new pages, never in the old ones. With @via_event the test
 * first waits for the ENDED event to reach the cache (notify), and then
 * the cache must miss without even asking valid().
 */
static void run_round(struct ofi *o, struct tbuf *b, enum realloc_how how,
		      bool via_event, struct tally *t)
{
	struct fid_mr *mr1 = NULL, *mr1b = NULL, *mr2 = NULL;
	struct mon_counters c0, c1;
	uint64_t seed_p = 0;
	bool ok, ev_ok = false;
	int ret;

	t->rounds++;
	if (!mon_quiesce(&mon, EVENT_TIMEOUT_MS))
		diag("round %u: the event thread did not settle", t->rounds);

	/* Fresh memory: a miss (one subscribe), then a hit. */
	mon_counters(&mon, &c0);
	ret = mr_reg(o->srv.domain, b->addr, b->len, FI_REMOTE_WRITE, &mr1);
	if (ret)
		goto err;
	mon_counters(&mon, &c1);
	ok = c1.subscribes == c0.subscribes + 1;
	ret = mr_reg(o->srv.domain, b->addr, b->len, FI_REMOTE_WRITE, &mr1b);
	if (ret)
		goto err;
	mon_counters(&mon, &c0);
	ok = ok && mr1b == mr1 && fi_mr_key(mr1b) == fi_mr_key(mr1) &&
	     c0.subscribes == c1.subscribes && c0.valid_calls == c1.valid_calls + 1;
	mr_close(&mr1b);
	if (ok)
		t->miss_then_hit++;
	else
		diag("round %u (%zu KiB): fresh memory did not miss then hit",
		     t->rounds, b->len / KIB);

	t->writes++;
	if (write_check(o, b->addr, b->len, fi_mr_key(mr1), &seed_p))
		t->writes_ok++;
	else
		diag("round %u: the write before re-allocation did not land",
		     t->rounds);
	mr_close(&mr1);

	/* Free and re-allocate at the same address. */
	mon_counters(&mon, &c0);
	ret = tbuf_realloc(b, how);
	if (ret) {
		diag("round %u: %s: %s", t->rounds, realloc_name[how],
		     strerror(-ret));
		goto err;
	}
	t->same_addr++;
	if (via_event) {
		t->event_rounds++;
		ev_ok = mon_wait_ends(&mon, c0.ev_ended + c0.ev_evicted,
				      EVENT_TIMEOUT_MS);
		mon_counters(&mon, &c1);
		ev_ok = ev_ok && c1.notifies > c0.notifies;
	}

	mon_counters(&mon, &c0);
	ret = mr_reg(o->srv.domain, b->addr, b->len, FI_REMOTE_WRITE, &mr2);
	if (ret)
		goto err;
	mon_counters(&mon, &c1);
	if (c1.subscribes == c0.subscribes + 1)
		t->realloc_miss++;
	else
		diag("round %u (%zu KiB, %s): fi_mr_reg after re-allocation hit",
		     t->rounds, b->len / KIB, realloc_name[how]);
	if (via_event) {
		/* The entry was gone already: nothing to ask valid() about. */
		if (ev_ok && c1.valid_calls == c0.valid_calls)
			t->event_ok++;
		else
			diag("round %u (%s): the free did not reach the cache "
			     "through an event", t->rounds, realloc_name[how]);
	}

	t->writes++;
	if (write_check(o, b->addr, b->len, fi_mr_key(mr2), NULL))
		t->writes_ok++;
	else
		diag("round %u (%zu KiB, %s): the write after re-allocation did "
		     "not land in the new pages", t->rounds, b->len / KIB,
		     realloc_name[how]);
	if (b->old) {
		t->moved++;
		if (pattern_match(b->old, b->len, seed_p))
			t->moved_clean++;
		else
			diag("round %u: the old pages changed after re-allocation",
			     t->rounds);
	}
	mr_close(&mr2);
	tbuf_drop_old(b);

	/* Fresh memory for the next round on this buffer. */
	ret = tbuf_realloc(b, RE_FIXED);
	if (ret)
		goto err;
	return;

err:
	mr_close(&mr1b);
	mr_close(&mr1);
	mr_close(&mr2);
	t->errors++;
	diag("round %u: %s", t->rounds, fi_strerror(-ret));
}

static void check_hits(struct ofi *o)
{
	struct fid_mr *mr1 = NULL, *mr2 = NULL, *mr3 = NULL;
	struct mon_counters c0, c1, c2;
	struct tbuf b;
	bool hit, sub_hit;
	int ret;

	if (tbuf_map(&b, 64 * KIB)) {
		tap(false, "a second fi_mr_reg of one buffer is a cache hit (no memory)");
		return;
	}
	mon_counters(&mon, &c0);
	ret = mr_reg(o->srv.domain, b.addr, b.len, FI_REMOTE_WRITE, &mr1);
	mon_counters(&mon, &c1);
	if (!ret)
		ret = mr_reg(o->srv.domain, b.addr, b.len, FI_REMOTE_WRITE, &mr2);
	mon_counters(&mon, &c2);
	hit = !ret && c1.subscribes == c0.subscribes + 1 && mr2 == mr1 &&
	      fi_mr_key(mr2) == fi_mr_key(mr1) && c2.subscribes == c1.subscribes &&
	      c2.valid_calls == c1.valid_calls + 1;
	tap(hit, "a second fi_mr_reg of the same 64 KiB buffer is a cache hit "
	    "(same MR and key, no subscribe, one valid())");
	if (ret)
		diag("fi_mr_reg: %s", fi_strerror(-ret));

	/* A page inside it: served by the same entry, and writable through it. */
	ret = mr_reg(o->srv.domain, b.addr + 4 * KIB, 4 * KIB, FI_REMOTE_WRITE,
		     &mr3);
	sub_hit = !ret && mr3 == mr1 &&
		  MON_GET(&mon, subscribes) == c2.subscribes &&
		  write_check(o, b.addr + 4 * KIB, 4 * KIB, fi_mr_key(mr3), NULL);
	tap(sub_hit, "a page inside a cached buffer is served by its entry, and "
	    "an fi_write through it lands");
	mr_close(&mr3);
	mr_close(&mr2);
	mr_close(&mr1);
	tbuf_unmap(&b);
}

static void check_kernel_view(void)
{
	struct memreg_stats st;
	unsigned int subs;
	int ret;

	ret = mon_kernel_view(&mon, &subs, &st);
	/* Parked watches, if the module parks them, are not the monitor's. */
	tap(!ret && st.watches >= 1 && st.watch_pages >= 1 &&
	    st.pages_pinned == 0 && st.watches <= subs + st.parked,
	    "memreg watches the cached buffers and pins nothing (watches %llu, "
	    "watch pages %llu, pages pinned %llu; %u subscriptions)",
	    (unsigned long long)st.watches, (unsigned long long)st.watch_pages,
	    (unsigned long long)st.pages_pinned, subs);
	if (ret)
		diag("STATS: %s", strerror(-ret));
}

static void check_rounds(struct ofi *o, unsigned int nr_rounds)
{
	static const size_t sizes[] = { 4 * KIB, 64 * KIB, MIB };
	struct tbuf bufs[ARRAY_SIZE(sizes)];
	struct mon_counters c0, c1;
	struct tally t = { 0 };
	unsigned int r, i;

	for (i = 0; i < ARRAY_SIZE(sizes); i++) {
		if (tbuf_map(&bufs[i], sizes[i])) {
			tap(false, "test buffers");
			while (i--)
				tbuf_unmap(&bufs[i]);
			return;
		}
	}
	mon_counters(&mon, &c0);
	for (r = 0; r < nr_rounds; r++) {
		enum realloc_how how = (enum realloc_how)(r % RE_NR);
		/* Every other group of RE_NR rounds waits for the event. */
		bool via_event = how != RE_DONTNEED && (r / RE_NR) % 2;

		run_round(o, &bufs[r % ARRAY_SIZE(sizes)], how, via_event, &t);
	}
	mon_counters(&mon, &c1);
	for (i = 0; i < ARRAY_SIZE(sizes); i++)
		tbuf_unmap(&bufs[i]);

	tap(!t.errors && t.miss_then_hit == t.rounds,
	    "%u/%u rounds: the first fi_mr_reg of fresh memory missed and the "
	    "second hit", t.miss_then_hit, t.rounds);
	tap(!t.errors && t.same_addr == t.rounds && t.realloc_miss == t.rounds,
	    "%u/%u re-allocations at the same address made fi_mr_reg miss (%s, "
	    "%s, %s, %s; 4 KiB, 64 KiB, 1 MiB)", t.realloc_miss, t.rounds,
	    realloc_name[RE_MUNMAP], realloc_name[RE_FIXED],
	    realloc_name[RE_MREMAP], realloc_name[RE_DONTNEED]);
	tap(!t.errors && t.writes_ok == t.writes && t.writes == 2 * t.rounds,
	    "%u/%u fi_writes landed in the memory at the address now (a fresh "
	    "pattern each)", t.writes_ok, 2 * t.rounds);
	tap(t.moved && t.moved_clean == t.moved,
	    "%u/%u old pages moved away by mremap kept their bytes: nothing "
	    "written after re-allocation reached them", t.moved_clean, t.moved);
	tap(t.event_rounds && t.event_ok == t.event_rounds,
	    "%u/%u frees reached the cache as an ENDED event and notify() before "
	    "the next fi_mr_reg", t.event_ok, t.event_rounds);
	diag("rounds: valid() said no %lu times (%lu revalidations, %lu resumed), "
	     "events: %lu ended, %lu suspended, %lu resumed, %lu late and ignored",
	     c1.valid_false - c0.valid_false, c1.revalidations - c0.revalidations,
	     c1.revalidated - c0.revalidated, c1.ev_ended - c0.ev_ended,
	     c1.ev_suspended - c0.ev_suspended, c1.ev_resumed - c0.ev_resumed,
	     c1.ev_stale - c0.ev_stale);
}

/*
 * The event ring overflows while the thread is paused: 100 watches end at
 * once into a ring of 64. The monitor must resync and drop every range;
 * each page registered again misses, and a write lands.
 */
static void check_overflow(struct ofi *o)
{
	enum { NR = 100 };
	const size_t page = 4 * KIB;
	struct fid_mr *mr[NR] = { NULL };
	struct mon_counters c0, c1;
	unsigned int i, misses = 0;
	bool overflowed = false, paused, ok;
	struct tbuf b;
	int ret = 0;

	if (tbuf_map(&b, NR * page)) {
		tap(false, "event ring overflow (no memory)");
		return;
	}
	for (i = 0; i < NR && !ret; i++)
		ret = mr_reg(o->srv.domain, b.addr + i * page, page,
			     FI_REMOTE_WRITE, &mr[i]);
	for (i = 0; i < NR; i++)
		mr_close(&mr[i]);
	if (ret) {
		tap(false, "event ring overflow: fi_mr_reg: %s", fi_strerror(-ret));
		tbuf_unmap(&b);
		return;
	}

	mon_quiesce(&mon, EVENT_TIMEOUT_MS);
	mon_counters(&mon, &c0);
	paused = mon_pause(&mon, EVENT_TIMEOUT_MS);
	ret = tbuf_realloc(&b, RE_MUNMAP);
	if (paused)
		overflowed = memreg_events_overflowed(&mon.ev);
	mon_resume(&mon);
	ok = !ret && mon_quiesce(&mon, EVENT_TIMEOUT_MS);
	mon_counters(&mon, &c1);

	for (i = 0; i < NR && ok; i++) {
		unsigned long before = MON_GET(&mon, subscribes);

		ret = mr_reg(o->srv.domain, b.addr + i * page, page,
			     FI_REMOTE_WRITE, &mr[i]);
		if (ret)
			break;
		if (MON_GET(&mon, subscribes) == before + 1)
			misses++;
	}
	ok = ok && !ret && misses == NR &&
	     write_check(o, b.addr + 37 * page, page, fi_mr_key(mr[37]), NULL);
	for (i = 0; i < NR; i++)
		mr_close(&mr[i]);
	tbuf_unmap(&b);

	tap(paused && overflowed && c1.resyncs > c0.resyncs &&
	    c1.notifies - c0.notifies >= NR && ok,
	    "an event ring overflow (%u ENDED events, %u entries) was resynced: "
	    "%lu notify() calls, %u/%u pages registered again missed, a write "
	    "landed", NR, MON_EVENT_ENTRIES, c1.notifies - c0.notifies, misses,
	    NR);
	if (!paused)
		diag("the event thread could not be paused");
	if (!overflowed)
		diag("the ring did not report an overflow");
}

/* After everything is closed: stop() ran once and memreg holds nothing. */
static void check_after_close(void)
{
	struct memreg_global_stats gs = { 0 };
	int fd, ret = -ENOENT;

	tap(MON_GET(&mon, stops) == 1 && MON_GET(&mon, starts) == 1 &&
	    mon.stop_seen,
	    "the monitor was stopped once, when the last domain closed "
	    "(starts %lu, stops %lu)", MON_GET(&mon, starts), MON_GET(&mon, stops));
	tap(mon.stop_seen && !mon.stop_error &&
	    mon.stop_before.watches >= mon.stop_live_keys &&
	    mon.stop_before.watches <= mon.stop_keys + mon.stop_before.parked,
	    "memreg agreed with the monitor at stop: %llu watches for %u keys "
	    "held (%u not ended)", (unsigned long long)mon.stop_before.watches,
	    mon.stop_keys, mon.stop_live_keys);
	diag("libfabric 1.17 called unsubscribe() %lu times; stop() still held "
	     "%lu subscriptions", MON_GET(&mon, unsubscribes),
	     MON_GET(&mon, held_at_stop));
	diag("monitor: %lu subscribes (%lu REGISTERs, %lu served by memreg as "
	     "CACHED, %lu reused, %lu failed), %lu valid() (%lu no, %lu "
	     "revalidations, %lu resumed), events %lu ended, %lu evicted, %lu "
	     "suspended, %lu resumed, %lu late, %lu with the creator's user "
	     "data; %lu notify(), %lu resyncs (%lu dropped), %lu reclaimed, %lu "
	     "DEREGISTER failures", MON_GET(&mon, subscribes),
	     MON_GET(&mon, registers), MON_GET(&mon, kernel_hits),
	     MON_GET(&mon, reuses), MON_GET(&mon, subscribe_failures),
	     MON_GET(&mon, valid_calls), MON_GET(&mon, valid_false),
	     MON_GET(&mon, revalidations), MON_GET(&mon, revalidated),
	     MON_GET(&mon, ev_ended), MON_GET(&mon, ev_evicted),
	     MON_GET(&mon, ev_suspended), MON_GET(&mon, ev_resumed),
	     MON_GET(&mon, ev_stale), MON_GET(&mon, ev_user_data),
	     MON_GET(&mon, notifies), MON_GET(&mon, resyncs),
	     MON_GET(&mon, resync_ended), MON_GET(&mon, reclaimed),
	     MON_GET(&mon, dereg_failures));
	tap(mon.stop_seen && !mon.stop_error && !mon.stop_after.registrations &&
	    !mon.stop_after.watches && !mon.stop_after.pages_pinned,
	    "after closing everything memreg has no registrations and no watches "
	    "(registrations %llu, watches %llu, pages pinned %llu%s)",
	    (unsigned long long)mon.stop_after.registrations,
	    (unsigned long long)mon.stop_after.watches,
	    (unsigned long long)mon.stop_after.pages_pinned,
	    mon.stop_flushed ? "; parked watches flushed" : "");

	fd = memreg_open();
	if (fd >= 0) {
		ret = memreg_global_stats(fd, &gs);
		close(fd);
	}
	tap(!ret && gs.watches == 0,
	    "module-wide, no watch is left once the monitor's file is closed "
	    "(watches %llu)", (unsigned long long)gs.watches);
}

/* ---- Without a working monitor: does the cache hand out stale MRs? -------- */

enum outcome { OUT_NEW, OUT_OLD, OUT_BROKEN };

/*
 * Registers, writes, returns the MR to the cache, moves the old pages
 * away with mremap and maps new ones at the address, registers again and
 * writes a fresh pattern through the MR it got: OUT_OLD when the bytes
 * went to the old pages (a stale MR), OUT_NEW when to the new ones.
 * *cache_on says whether two fi_mr_reg of one buffer gave one MR, the
 * cache's hit (the verbs cache returns the entry's own struct fid_mr).
 */
static enum outcome stale_demo(struct ofi *o, size_t len, bool *cache_on,
			       bool *same_key)
{
	struct fid_mr *mr1 = NULL, *mr1b = NULL, *mr2 = NULL;
	enum outcome out = OUT_BROKEN;
	uint64_t seed_q, key1;
	bool in_new, in_old;
	struct tbuf b;
	int ret;

	*cache_on = *same_key = false;
	if (tbuf_map(&b, len))
		return OUT_BROKEN;
	ret = mr_reg(o->srv.domain, b.addr, len, FI_REMOTE_WRITE, &mr1);
	if (!ret)
		ret = mr_reg(o->srv.domain, b.addr, len, FI_REMOTE_WRITE, &mr1b);
	if (ret)
		goto out;
	*cache_on = mr1b == mr1;
	mr_close(&mr1b);
	key1 = fi_mr_key(mr1);
	if (!write_check(o, b.addr, len, key1, NULL))
		goto out;
	mr_close(&mr1);

	if (tbuf_realloc(&b, RE_MREMAP))
		goto out;
	ret = mr_reg(o->srv.domain, b.addr, len, FI_REMOTE_WRITE, &mr2);
	if (ret)
		goto out;
	*same_key = fi_mr_key(mr2) == key1;
	seed_q = next_seed++;
	pattern_fill(o->src, len, seed_q);
	if (ofi_write(o, b.addr, len, fi_mr_key(mr2), seed_q))
		goto out;
	in_new = pattern_match(b.addr, len, seed_q);
	in_old = pattern_match(b.old, len, seed_q);
	if (in_new && !in_old)
		out = OUT_NEW;
	else if (in_old && !in_new)
		out = OUT_OLD;
out:
	if (ret)
		diag("fi_mr_reg: %s", fi_strerror(-ret));
	mr_close(&mr1b);
	mr_close(&mr1);
	mr_close(&mr2);
	/*
	 * The buffer stays mapped: without a monitor a later buffer at this
	 * address could be served by the entry still cached here.
	 */
	tbuf_drop_old(&b);
	return out;
}

static void check_without_monitor(struct ofi *o, bool blind)
{
	static const size_t sizes[] = { 4 * KIB, 64 * KIB, MIB };
	const char *env = getenv("FI_MR_CACHE_MONITOR");
	unsigned int i;

	if (!blind)
		diag("no monitor imported; FI_MR_CACHE_MONITOR=%s",
		     env ? env : "(unset: libfabric's default)");
	for (i = 0; i < ARRAY_SIZE(sizes); i++) {
		bool cache_on, same_key;
		enum outcome out = stale_demo(o, sizes[i], &cache_on, &same_key);

		diag("%zu KiB: cache %s, MR key after re-allocation %s, the write "
		     "went to the %s pages", sizes[i] / KIB, cache_on ? "on" : "off",
		     same_key ? "unchanged" : "new",
		     out == OUT_OLD ? "old" : out == OUT_NEW ? "new" : "(neither)");
		if (blind) {
			tap(cache_on && out == OUT_OLD,
			    "with a blind monitor (valid() always true, no events) "
			    "the cache returned a stale MR (bytes went to the old "
			    "pages) [%zu KiB]", sizes[i] / KIB);
		} else if (out == OUT_BROKEN) {
			tap(false, "without a monitor: the write went to neither the "
			    "old nor the new pages [%zu KiB]", sizes[i] / KIB);
		} else if (!cache_on) {
			tap(out == OUT_NEW, "without a monitor libfabric turned the "
			    "verbs MR cache off (two fi_mr_reg of one buffer gave "
			    "two MRs): every fi_mr_reg registers with siw and the "
			    "write after re-allocation landed in the new pages "
			    "[%zu KiB]", sizes[i] / KIB);
		} else if (out == OUT_OLD) {
			tap(true, "without a monitor the cache returned a stale MR "
			    "(bytes went to the old pages) [%zu KiB]", sizes[i] / KIB);
		} else {
			tap(true, "without an imported monitor the cache is on and "
			    "libfabric's own monitor caught the change (the write "
			    "landed in the new pages) [%zu KiB]", sizes[i] / KIB);
		}
	}
}

/* ---- Benchmark ------------------------------------------------------------ */

#define BENCH_LEN	(64 * KIB)

/*
 * ofi_mr_reg_hit_ns: fi_mr_reg + fi_close of a cached 64 KiB buffer (the
 * hit path: tree search, valid(): a table look-up and one state-word load).
 * ofi_mr_reg_miss_ns: fi_mr_reg + fi_close after the buffer was freed and
 * re-allocated at the same address (untimed, as is waiting for the event
 * thread to have reported it): the cache reclaims the invalidated entry
 * (ibv_dereg_mr), registers with siw (ibv_reg_mr) and subscribes (a watch
 * REGISTER). Pages are faulted in before each timed call. Each iteration
 * is checked to be the hit or the miss it claims to be.
 */
static void bench(struct ofi *o, unsigned long n)
{
	unsigned long warm = n / 10 > 10 ? n / 10 : 10, i, bad_hit = 0, bad = 0;
	uint64_t t0, hit_ns, miss_ns = 0;
	struct fid_mr *mr, *first = NULL;
	struct tbuf b;
	int ret;

	if (tbuf_map(&b, BENCH_LEN)) {
		tap(false, "bench buffer");
		return;
	}
	ret = mr_reg(o->srv.domain, b.addr, b.len, FI_REMOTE_WRITE, &first);
	if (ret) {
		tap(false, "bench: fi_mr_reg: %s", fi_strerror(-ret));
		tbuf_unmap(&b);
		return;
	}
	mr_close(&first);
	mon_quiesce(&mon, EVENT_TIMEOUT_MS);

	/* Hits. */
	for (i = 0; i < warm && !ret; i++) {
		ret = mr_reg(o->srv.domain, b.addr, b.len, FI_REMOTE_WRITE, &mr);
		if (!ret)
			mr_close(&mr);
	}
	{
		unsigned long subs = MON_GET(&mon, subscribes);

		t0 = now_ns();
		for (i = 0; i < n && !ret; i++) {
			ret = mr_reg(o->srv.domain, b.addr, b.len, FI_REMOTE_WRITE,
				     &mr);
			if (!ret)
				fi_close(&mr->fid);
		}
		hit_ns = now_ns() - t0;
		if (MON_GET(&mon, subscribes) != subs)
			bad_hit++;
	}
	tap(!ret && !bad_hit, "bench: all %lu timed hits were hits (no "
	    "subscribe)", n);

	/* Misses. */
	for (i = 0; i < warm + n && !ret; i++) {
		unsigned long subs, ends;
		uint64_t t;

		ends = MON_GET(&mon, ev_ended) + MON_GET(&mon, ev_evicted);
		ret = tbuf_realloc(&b, RE_MUNMAP);
		if (ret)
			break;
		mon_wait_ends(&mon, ends, EVENT_TIMEOUT_MS);
		subs = MON_GET(&mon, subscribes);
		t = now_ns();
		ret = mr_reg(o->srv.domain, b.addr, b.len, FI_REMOTE_WRITE, &mr);
		if (!ret)
			fi_close(&mr->fid);
		t = now_ns() - t;
		if (i >= warm)
			miss_ns += t;
		if (!ret && MON_GET(&mon, subscribes) != subs + 1)
			bad++;
	}
	tap(!ret && !bad, "bench: all %lu timed misses were misses (one "
	    "subscribe each)", n);
	tbuf_unmap(&b);
	if (ret || bad || bad_hit) {
		/* No figures from a run that did not measure what it says. */
		if (ret)
			diag("bench: %s", fi_strerror(ret < 0 ? -ret : ret));
		return;
	}

	diag("bench: %lu iterations after %lu of warm-up, %lu KiB buffers, "
	     "CLOCK_MONOTONIC", n, warm, BENCH_LEN / KIB);
	printf("BENCH ofi_mr_reg_hit_ns %.1f\n", (double)hit_ns / (double)n);
	printf("BENCH ofi_mr_reg_miss_ns %.1f\n", (double)miss_ns / (double)n);
}

/* ---- main ----------------------------------------------------------------- */

enum run_mode { RUN_CHECKS, RUN_NO_MONITOR, RUN_BLIND, RUN_BENCH };

static void __attribute__((noreturn)) usage(const char *prog, int status)
{
	fprintf(status ? stderr : stdout,
		"usage: %s [--no-monitor | --blind-monitor | --bench N] "
		"[--rounds N] [--port P] [--setup-net]\n"
		"  (default)        the checks with the memreg monitor imported\n"
		"  --no-monitor     import nothing: what libfabric's verbs cache "
		"does alone\n"
		"  --blind-monitor  import a monitor that never reports a change\n"
		"  --bench N        BENCH lines for a cache hit and a cache miss\n"
		"  --rounds N       free/re-allocate rounds (default 50)\n"
		"  --port P         the listening port (default %s)\n"
		"  --setup-net      create dummy0 and siw0 even without /dev/memreg\n",
		prog, DEFAULT_PORT);
	exit(status);
}

int main(int argc, char **argv)
{
	enum run_mode mode = RUN_CHECKS;
	unsigned long bench_n = 0, rounds = 50;
	struct ofi o = { .port = DEFAULT_PORT };
	bool force_setup = false, created, have_memreg;
	char why[256] = "";
	__u32 version = 0;
	int i, ret, fd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--no-monitor")) {
			mode = RUN_NO_MONITOR;
		} else if (!strcmp(argv[i], "--blind-monitor")) {
			mode = RUN_BLIND;
		} else if (!strcmp(argv[i], "--bench") && i + 1 < argc) {
			mode = RUN_BENCH;
			bench_n = strtoul(argv[++i], NULL, 0);
			if (!bench_n)
				usage(argv[0], 2);
		} else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
			rounds = strtoul(argv[++i], NULL, 0);
			if (rounds < 2 * RE_NR)
				rounds = 2 * RE_NR;
		} else if (!strcmp(argv[i], "--port") && i + 1 < argc) {
			o.port = argv[++i];
		} else if (!strcmp(argv[i], "--setup-net")) {
			force_setup = true;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(argv[0], 0);
		} else {
			usage(argv[0], 2);
		}
	}

	/* The monitor needs memreg; nothing touches the network without it. */
	have_memreg = !access("/dev/memreg", F_OK);
	if (mode == RUN_CHECKS || mode == RUN_BENCH) {
		if (!have_memreg)
			skip("no /dev/memreg", "/dev/memreg does not exist: the memreg "
			     "module is not loaded");
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
	ret = siw_setup(&(const struct siw_net){
				.netdev = NETDEV_NAME,
				.addr = NODE_ADDR,
				.prefix = NODE_PREFIX,
				.create = true,
			}, have_memreg || force_setup, why, sizeof(why), &created);
	if (ret)
		skip("no RDMA device", why);

	/*
	 * Only verbs: libfabric runs every built-in provider's init, but
	 * psm's library calls (stubs here) and the others' probing stay out.
	 */
	setenv("FI_PROVIDER", "verbs", 1);

	o.src = map_anon(SRC_LEN);
	o.msg = map_anon(CTL_LEN);
	o.rx = map_anon(CTL_LEN);
	if (!o.src || !o.msg || !o.rx) {
		fprintf(stderr, "out of memory\n");
		return 1;
	}

	if (created)
		tap(true, "%s is up: created over %s (%s/%d) by this program",
		    RDMA_DEV_NAME, NETDEV_NAME, NODE_ADDR, NODE_PREFIX);
	else
		tap(true, "%s is up: found", RDMA_DEV_NAME);

	ret = ofi_getinfo(&o);
	tap(!ret, "verbs fi_getinfo found %s (FI_EP_MSG, FI_MSG|FI_RMA, "
	    "FI_MR_LOCAL|VIRT_ADDR|ALLOCATED|PROV_KEY)", RDMA_DEV_NAME);
	if (ret) {
		diag("fi_getinfo: %s", fi_strerror(-ret));
		goto done;
	}
	diag("provider %s, fabric %s, domain %s, max message %zu",
	     o.pinfo->fabric_attr->prov_name, o.pinfo->fabric_attr->name,
	     o.pinfo->domain_attr->name, o.max_msg);

	/* Before the first fi_domain, which starts the monitor. */
	if (mode != RUN_NO_MONITOR) {
		ret = mon_import(&mon, mode == RUN_BLIND ? MON_BLIND : MON_MEMREG);
		tap(!ret, "%s monitor imported (fi_open(\"mr_cache\") + "
		    "fi_import_fid)", mode == RUN_BLIND ? "the blind" : "the memreg");
		if (ret) {
			diag("import: %s", fi_strerror(-ret));
			goto done;
		}
	}

	ret = ofi_connect(&o);
	tap(!ret, "two MSG endpoints of this process connected over %s",
	    RDMA_DEV_NAME);
	if (ret) {
		diag("connect: %s", fi_strerror(ret < 0 ? -ret : ret));
		goto close;
	}

	if (mode != RUN_NO_MONITOR) {
		tap(o.starts_after_first_domain == 1 && MON_GET(&mon, starts) == 1 &&
		    (mode == RUN_BLIND || mon.thread_started),
		    "the first fi_domain started the monitor, the second did not "
		    "(starts %lu)", MON_GET(&mon, starts));
		tap(o.ctl_regs == 3 && o.ctl_subscribes == 3,
		    "each of the %d first registrations (RECV, SEND and source "
		    "buffers) subscribed once (%lu subscribes)", o.ctl_regs,
		    o.ctl_subscribes);
	}

	switch (mode) {
	case RUN_CHECKS:
		check_hits(&o);
		check_kernel_view();
		check_rounds(&o, (unsigned int)rounds);
		check_overflow(&o);
		break;
	case RUN_BENCH:
		bench(&o, bench_n);
		break;
	case RUN_NO_MONITOR:
	case RUN_BLIND:
		check_without_monitor(&o, mode == RUN_BLIND);
		break;
	}

close:
	ofi_close(&o);
	if (mode == RUN_CHECKS || mode == RUN_BENCH)
		check_after_close();
	mon_unimport(&mon);
done:
	printf("1..%u\n", tap_count);
	printf("MEMREG-OFI: %u passed, %u failed\n", tap_count - tap_failed,
	       tap_failed);
	return tap_failed ? 1 : 0;
}
