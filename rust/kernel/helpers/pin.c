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

/* The layout of kernel::mm::pin::Extent (asserted on the Rust side). */
struct rust_pin_extent {
	u64 pfn;
	u32 first;
	u32 pages;
};

/*
 * Describes a batch of pinned pages as extents: runs contiguous both as frame
 * numbers and as struct pages (what unpin_user_page_range_dirty_lock()
 * walks). The leading pages that continue @prev (the last page of the last
 * extent so far, or NULL), whose frame would be @prev_next_pfn, are only
 * counted in *@extend; the others go into @out (room for @n extents), their
 * indexes counted from @first. Returns the number of extents written. One
 * call per batch instead of work per page in Rust.
 */
__rust_helper unsigned long rust_helper_pages_to_extents(struct page *const *pages, unsigned long n,
							 struct page *prev, unsigned long prev_next_pfn,
							 u32 first, void *out_, unsigned long *extend)
{
	struct rust_pin_extent *out = out_;
	unsigned long i = 0, runs = 0;

	while (prev && i < n && pages[i] == prev + 1 && page_to_pfn(pages[i]) == prev_next_pfn) {
		prev = pages[i];
		prev_next_pfn++;
		i++;
	}
	*extend = i;
	for (; i < n; i++) {
		unsigned long pfn = page_to_pfn(pages[i]);

		if (runs && pages[i] == pages[i - 1] + 1 &&
		    pfn == out[runs - 1].pfn + out[runs - 1].pages) {
			out[runs - 1].pages++;
			continue;
		}
		out[runs].pfn = pfn;
		out[runs].first = first + i;
		out[runs].pages = 1;
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

__rust_helper void *rust_helper_page_address(const struct page *page)
{
	return page_address(page);
}

/* Another reference on @u (put with free_uid()). */
__rust_helper struct user_struct *rust_helper_get_uid(struct user_struct *u)
{
	return get_uid(u);
}

__rust_helper void rust_helper_put_page(struct page *page)
{
	put_page(page);
}

/*
 * 2^@order physically contiguous pages, split so each is its own (one
 * reference each), or NULL. A run above one page is taken only if the
 * allocator has it at hand: no reclaim, no compaction, no reserves, no
 * warning (callers fall back to single pages, allocated with @gfp as it
 * is). Never a compound page, which split_page() cannot split.
 */
__rust_helper struct page *rust_helper_alloc_pages_split(gfp_t gfp, unsigned int order)
{
	struct page *page;

	if (order > MAX_PAGE_ORDER)
		return NULL;
	gfp &= ~__GFP_COMP;
	if (order)
		gfp = (gfp | __GFP_NOWARN | __GFP_NORETRY | __GFP_NOMEMALLOC) &
		      ~__GFP_DIRECT_RECLAIM;
	page = alloc_pages(gfp, order);
	if (page && order)
		split_page(page, order);
	return page;
}
