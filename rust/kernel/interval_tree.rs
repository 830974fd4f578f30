// SPDX-License-Identifier: GPL-2.0

//! Interval trees: red-black trees of closed intervals, augmented with the
//! greatest end of each subtree, so that the intervals overlapping a range are
//! found in `O(log n + k)` for `k` results whatever the mix of lengths.
//!
//! [`IntervalTree`] owns its values. Inserting takes a [`Reservation`]
//! allocated beforehand, so a tree kept under a spinlock never allocates while
//! the lock is held.
//!
//! C header: [`include/linux/interval_tree.h`](srctree/include/linux/interval_tree.h)
#![cfg(CONFIG_INTERVAL_TREE)]

use crate::{
    alloc::{AllocError, Flags, KBox},
    bindings,
    prelude::*,
};
use core::{marker::PhantomData, mem::MaybeUninit, ptr};

/// A node: the C node first, so a pointer to it is a pointer to the node.
#[repr(C)]
struct Node<V> {
    raw: bindings::interval_tree_node,
    value: V,
}

/// Memory for one entry of an [`IntervalTree`], allocated before the tree's
/// lock is taken.
pub struct Reservation<V> {
    node: KBox<MaybeUninit<Node<V>>>,
}

impl<V> Reservation<V> {
    /// Allocates the memory of one entry.
    pub fn new(flags: Flags) -> Result<Self, AllocError> {
        Ok(Self {
            node: KBox::new_uninit(flags)?,
        })
    }
}

/// A tree of values, each stored with a closed interval `start..=last`.
///
/// Several values may have the same or overlapping intervals.
///
/// # Invariants
///
/// Every node linked in `root` is a `Node<V>` leaked from a [`KBox`] by
/// [`IntervalTree::insert`], owned by the tree, with an initialised value.
///
/// # Examples
///
/// ```
/// use kernel::interval_tree::{IntervalTree, Reservation};
///
/// let mut tree = IntervalTree::new();
/// for (start, last, name) in [(0, 99, "big"), (10, 19, "a"), (30, 30, "b"), (200, 299, "far")] {
///     tree.insert(Reservation::new(GFP_KERNEL)?, start, last, name);
/// }
/// // The intervals overlapping 15..=30, in order of their start.
/// let mut found = KVec::new();
/// for (start, last, name) in tree.iter(15, 30) {
///     found.push((start, last, *name), GFP_KERNEL)?;
/// }
/// assert_eq!(&found[..], &[(0, 99, "big"), (10, 19, "a"), (30, 30, "b")]);
/// assert_eq!(tree.iter(100, 199).count(), 0);
///
/// // Removal names the exact interval and picks the value.
/// assert_eq!(tree.remove(10, 19, |v| *v == "a"), Some("a"));
/// assert_eq!(tree.remove(10, 19, |v| *v == "a"), None);
/// assert_eq!(tree.iter(15, 15).count(), 1);
/// assert_eq!(tree.pop_first(), Some((0, 99, "big")));
/// assert!(!tree.is_empty());
/// # Ok::<(), Error>(())
/// ```
pub struct IntervalTree<V> {
    root: bindings::rb_root_cached,
    _values: PhantomData<KBox<Node<V>>>,
}

// SAFETY: The tree owns its values; moving it to another thread moves them.
unsafe impl<V: Send> Send for IntervalTree<V> {}
// SAFETY: Shared access only reads the tree and hands out `&V`.
unsafe impl<V: Sync> Sync for IntervalTree<V> {}

impl<V> Default for IntervalTree<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> IntervalTree<V> {
    /// Creates an empty tree.
    pub const fn new() -> Self {
        // INVARIANT: An empty tree has no node.
        Self {
            root: bindings::rb_root_cached {
                rb_root: bindings::rb_root {
                    rb_node: ptr::null_mut(),
                },
                rb_leftmost: ptr::null_mut(),
            },
            _values: PhantomData,
        }
    }

    /// Whether the tree holds no value.
    pub fn is_empty(&self) -> bool {
        self.root.rb_root.rb_node.is_null()
    }

    /// Stores `value` for the interval `start..=last`, in the memory of
    /// `reservation`. An interval whose `last` is below its `start` is stored
    /// as `start..=start`.
    pub fn insert(&mut self, reservation: Reservation<V>, start: usize, last: usize, value: V) {
        let node = KBox::write(
            reservation.node,
            Node {
                raw: bindings::interval_tree_node {
                    rb: bindings::rb_node {
                        __rb_parent_color: 0,
                        rb_right: ptr::null_mut(),
                        rb_left: ptr::null_mut(),
                    },
                    start,
                    last: last.max(start),
                    __subtree_last: 0,
                },
                value,
            },
        );
        let node = KBox::into_raw(node);
        // INVARIANT: The node comes from a `KBox` and holds a value; the tree owns it now.
        // SAFETY: `node` is valid, not linked anywhere, and stays at this address until it is
        // removed; `self.root` is a valid tree, which we borrow mutably.
        unsafe { bindings::interval_tree_insert(&raw mut (*node).raw, &mut self.root) };
    }

    /// The values whose interval overlaps `start..=last`, with their
    /// intervals, in increasing order of start.
    pub fn iter(&self, start: usize, last: usize) -> Iter<'_, V> {
        // SAFETY: `interval_tree_iter_first` only reads the tree, which `&self` keeps unchanged.
        let next = unsafe {
            bindings::interval_tree_iter_first(ptr::from_ref(&self.root).cast_mut(), start, last)
        };
        Iter {
            next,
            advance: false,
            start,
            last,
            _tree: PhantomData,
        }
    }

    /// Removes and returns the first value, in order of start, whose interval
    /// is exactly `start..=last` and for which `pred` returns `true`.
    pub fn remove(
        &mut self,
        start: usize,
        last: usize,
        mut pred: impl FnMut(&V) -> bool,
    ) -> Option<V> {
        // SAFETY: The tree is valid and only read here.
        let mut raw = unsafe { bindings::interval_tree_iter_first(&mut self.root, start, last) };
        while !raw.is_null() {
            let node = raw.cast::<Node<V>>();
            // SAFETY: By the type invariant every linked node is a live `Node<V>`, and `raw`
            // points at its first field.
            let (s, l, value) = unsafe { ((*raw).start, (*raw).last, &(*node).value) };
            if s == start && l == last && pred(value) {
                // SAFETY: `raw` is linked in this tree.
                return Some(unsafe { self.unlink(node) });
            }
            // SAFETY: `raw` is a node of this tree, which is unchanged.
            raw = unsafe { bindings::interval_tree_iter_next(raw, start, last) };
        }
        None
    }

    /// Removes and returns the value with the lowest start, with its interval.
    pub fn pop_first(&mut self) -> Option<(usize, usize, V)> {
        let leftmost = self.root.rb_leftmost;
        if leftmost.is_null() {
            return None;
        }
        // `rb` is the first field of the node, and the C node the first field of `Node<V>`.
        let node = leftmost.cast::<Node<V>>();
        // SAFETY: By the type invariant the leftmost node is a live `Node<V>`.
        let (start, last) = unsafe { ((*node).raw.start, (*node).raw.last) };
        // SAFETY: The leftmost node is linked in this tree.
        let value = unsafe { self.unlink(node) };
        Some((start, last, value))
    }

    /// Unlinks `node` and frees it, returning its value.
    ///
    /// # Safety
    ///
    /// `node` must be linked in this tree.
    unsafe fn unlink(&mut self, node: *mut Node<V>) -> V {
        // SAFETY: The caller promises `node` is linked in this tree.
        unsafe { bindings::interval_tree_remove(&raw mut (*node).raw, &mut self.root) };
        // SAFETY: By the type invariant the node came from `KBox::into_raw` and is no longer
        // linked, so we own it again.
        let node = unsafe { KBox::from_raw(node) };
        KBox::into_inner(node).value
    }
}

impl<V> Drop for IntervalTree<V> {
    fn drop(&mut self) {
        while self.pop_first().is_some() {}
    }
}

/// An iterator over the values of an [`IntervalTree`] overlapping a range.
pub struct Iter<'a, V> {
    /// The node returned last (when `advance`) or to return next.
    next: *mut bindings::interval_tree_node,
    advance: bool,
    start: usize,
    last: usize,
    _tree: PhantomData<&'a IntervalTree<V>>,
}

impl<'a, V> Iterator for Iter<'a, V> {
    type Item = (usize, usize, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        // The successor is looked up only when asked for, so a search that stops at its first
        // match costs one descent.
        if self.advance {
            let (node, start, last) = (self.next, self.start, self.last);
            // SAFETY: `node` is a node of the tree `'a` borrows unchanged; the tree is valid and
            // only read.
            self.next = unsafe { bindings::interval_tree_iter_next(node, start, last) };
        }
        let raw = self.next;
        if raw.is_null() {
            self.advance = false;
            return None;
        }
        self.advance = true;
        // SAFETY: `raw` is a node of the tree `'a` borrows unchanged; by the tree's invariant it
        // is the first field of a live `Node<V>`.
        let item = unsafe {
            let node = raw.cast::<Node<V>>();
            ((*raw).start, (*raw).last, &(*node).value)
        };
        Some(item)
    }
}
