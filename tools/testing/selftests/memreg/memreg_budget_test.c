// SPDX-License-Identifier: GPL-2.0
/*
 * memreg kselftests: the module's global pinned-page budget
 * (max_pinned_pages). Reloads the module with a small budget, and with the
 * default again at the end; it must run with no other memreg file open.
 * Parking is off here: DEREGISTER ends a registration. Eviction of parked
 * registrations to stay within the budget is in memreg_lifecycle_test.c.
 */
#include "memreg_util.h"

#include "../kselftest_harness.h"

#define BUDGET 16

FIXTURE(budget)
{
	int fd;
	char *buf;
};

FIXTURE_SETUP(budget)
{
	ASSERT_EQ(0, mr_reload_module("max_pinned_pages=16"));
	self->fd = memreg_open();
	ASSERT_GE(self->fd, 0);
	ASSERT_EQ(0, mr_set_parking(self->fd, 0));
	self->buf = map_filled(64 * PAGE, 'b');
	ASSERT_NE(NULL, self->buf);
}

FIXTURE_TEARDOWN(budget)
{
	close(self->fd);
	munmap(self->buf, 64 * PAGE);
	ASSERT_EQ(0, mr_reload_module(""));
}

TEST_F(budget, pinning_stops_at_the_budget)
{
	struct memreg_global_stats g;
	struct memreg_register a, b;
	struct memreg_stats s;
	long vmpin = vm_pin_kb();

	ASSERT_EQ(0, memreg_global_stats(self->fd, &g));
	EXPECT_EQ(BUDGET, g.budget_pages);

	ASSERT_EQ(0, memreg_register(self->fd, self->buf, 8 * PAGE, RW, &a));
	EXPECT_EQ(-ENOSPC, memreg_register(self->fd, self->buf + 8 * PAGE, 9 * PAGE, RW, &b));
	/* The refusal pinned and charged nothing. */
	EXPECT_EQ(vmpin + 8 * PAGE_KB, vm_pin_kb());
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(8, s.pages_pinned);
	ASSERT_EQ(0, memreg_global_stats(self->fd, &g));
	EXPECT_EQ(8, g.pages_pinned);

	ASSERT_EQ(0, memreg_register(self->fd, self->buf + 8 * PAGE, 8 * PAGE, RW, &b));
	EXPECT_EQ(-ENOSPC, memreg_register(self->fd, self->buf + 16 * PAGE, PAGE, RO, &b));
	/* Ending a registration gives its pages back to the budget. */
	EXPECT_EQ(0, memreg_deregister(self->fd, a.lkey));
	ASSERT_EQ(0, memreg_global_stats(self->fd, &g));
	EXPECT_EQ(8, g.pages_pinned);
	EXPECT_EQ(0, memreg_register(self->fd, self->buf + 16 * PAGE, 8 * PAGE, RO, &b));
	ASSERT_EQ(0, memreg_stats(self->fd, &s));
	EXPECT_EQ(1, s.deregistrations);
	EXPECT_EQ(0, s.parks);
	EXPECT_EQ(0, s.evictions[MEMREG_EVICT_PIN_LIMIT]);
}

TEST_HARNESS_MAIN
