/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Checks on completions shared by the kselftests of the data path; include
 * after kselftest_harness.h.
 */
#ifndef MEMREG_HARNESS_H
#define MEMREG_HARNESS_H

#include "memreg_util.h"

/* Checks a completion of a request that moves no immediate data. */
static inline void expect_cqe(struct __test_metadata *_metadata, const struct memreg_cqe *c,
			      __u64 user_data, int status, __u64 bytes)
{
	EXPECT_EQ(user_data, c->user_data);
	EXPECT_EQ(status, c->status) TH_LOG("user_data %#llx: status %d, want %d",
					    (unsigned long long)c->user_data, c->status, status);
	EXPECT_EQ(bytes, c->bytes) TH_LOG("user_data %#llx", (unsigned long long)c->user_data);
	EXPECT_EQ(0, c->flags);
	EXPECT_EQ(0, c->imm_data);
}

/* Posts `sqe`, reaps its completion and checks it. */
static inline void run_expect(struct __test_metadata *_metadata, struct memreg_queue *q,
			      const struct memreg_sqe *sqe, int status, __u64 bytes)
{
	struct memreg_cqe c;

	ASSERT_EQ(0, memreg_queue_run(q, sqe, &c)) TH_LOG("opcode %u user_data %#llx", sqe->opcode,
						 (unsigned long long)sqe->user_data);
	expect_cqe(_metadata, &c, sqe->user_data, status, bytes);
}

#endif /* MEMREG_HARNESS_H */
