// SPDX-License-Identifier: GPL-2.0

#include <linux/preempt.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>

__rust_helper void rust_helper_cond_resched(void)
{
	cond_resched();
}

__rust_helper bool rust_helper_current_fatal_signal_pending(void)
{
	return fatal_signal_pending(current);
}

__rust_helper void rust_helper_preempt_disable(void)
{
	preempt_disable();
}

__rust_helper void rust_helper_preempt_enable(void)
{
	preempt_enable();
}
