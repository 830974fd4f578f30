// SPDX-License-Identifier: GPL-2.0

#include <linux/mm.h>
#include <linux/sched/signal.h>
#include <linux/sched/user.h>
#include <linux/cred.h>

__rust_helper struct page *rust_helper_pfn_to_page(unsigned long pfn)
{
	return pfn_to_page(pfn);
}

__rust_helper unsigned long rust_helper_page_to_pfn(const struct page *page)
{
	return page_to_pfn(page);
}

__rust_helper unsigned long rust_helper_rlimit(unsigned int limit)
{
	return rlimit(limit);
}

__rust_helper atomic64_t *rust_helper_mm_pinned_vm(struct mm_struct *mm)
{
	return &mm->pinned_vm;
}

/*
 * Describes a batch of pages as runs that are contiguous both as frame
 * numbers and as struct pages (what unpin_user_page_range_dirty_lock()
 * walks): run i is lens[i] pages from frame pfns[i]. Returns the number of
 * runs, at most n. One call per batch instead of one per page.
 */
__rust_helper unsigned long rust_helper_pages_to_runs(struct page *const *pages, unsigned long n,
						      unsigned long *pfns, unsigned int *lens)
{
	unsigned long i, runs = 0;

	for (i = 0; i < n; i++) {
		unsigned long pfn = page_to_pfn(pages[i]);

		if (runs && pages[i] == pages[i - 1] + 1 &&
		    pfn == pfns[runs - 1] + lens[runs - 1]) {
			lens[runs - 1]++;
			continue;
		}
		pfns[runs] = pfn;
		lens[runs] = 1;
		runs++;
	}
	return runs;
}

#ifdef CONFIG_MEMREG_SUPPORT
/* The calling task's user, with a new reference (put with free_uid()). */
__rust_helper struct user_struct *rust_helper_get_current_user(void)
{
	return get_current_user();
}

/* The user's pinned pages charged against RLIMIT_MEMLOCK (needs CONFIG_NET). */
__rust_helper atomic_long_t *rust_helper_user_locked_vm(struct user_struct *user)
{
	return &user->locked_vm;
}
#endif
