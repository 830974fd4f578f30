#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Checks the driver's shape: no import cycle among its modules and no file
over the line limit.

A module is a file of rust/ outside the kernel-crate overlay (rust/kernel/);
`foo.rs` and the files under `foo/` are the module `foo` and its children.
An edge goes from a module to every module of the crate its `use crate::`
items and `crate::` paths name. Edges between a module and its own
ancestors are not counted: a subsystem's files share their parent's items
(Rust's privacy lets a child see its parent's private items), and the
parent declares them. A top-level module and its children also form one
node, whose edges are all of theirs to other subsystems. Any cycle is
reported, between subsystems or between sibling files of one subsystem,
and so is any file over MAX_LINES lines.

Usage: check-layout.py [RUST_DIR]   (exit status 1 on any finding)
"""

import os
import re
import sys

MAX_LINES = 800


def modules(root):
    """Maps module paths (tuples) to their files."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel == "kernel" or rel.startswith("kernel" + os.sep):
            dirnames[:] = []
            continue
        parts = () if rel == "." else tuple(rel.split(os.sep))
        for f in filenames:
            if not f.endswith(".rs"):
                continue
            name = f[:-3]
            if parts == () and name == "memreg":
                path = ()
            elif name == "mod":
                path = parts
            else:
                path = parts + (name,)
            found[path] = os.path.join(dirpath, f)
    return found


def use_paths(text):
    """Yields the crate paths (tuples) a file's `use crate::` items name."""
    text = re.sub(r"//[^\n]*", "", text)
    for m in re.finditer(r"\buse\s+crate::(\{.*?\}|[^;]*);", text, re.S):
        yield from expand((), m.group(1))
    # Paths used inline, `crate::a::b::f()`.
    for m in re.finditer(r"(?<!use )\bcrate::((?:[a-z_][a-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)", text):
        yield tuple(m.group(1).split("::"))


def expand(prefix, tree):
    """Expands a use tree into its paths."""
    tree = tree.strip()
    if tree.startswith("{") and tree.endswith("}"):
        depth = 0
        item = ""
        for ch in tree[1:-1] + ",":
            if ch == "," and depth == 0:
                if item.strip():
                    yield from expand(prefix, item)
                item = ""
                continue
            depth += ch == "{"
            depth -= ch == "}"
            item += ch
        return
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*::\s*(.*)$", tree, re.S)
    if m:
        yield from expand(prefix + (m.group(1),), m.group(2))
        return
    name = re.split(r"\s+as\s+", tree)[0].strip()
    if name == "self":
        yield prefix
    elif name:
        yield prefix + (name,)


def owner(path, mods):
    """The longest module path that `path` starts with."""
    for n in range(len(path), -1, -1):
        if path[:n] in mods:
            return path[:n]
    return ()


def related(a, b):
    """Whether one module is an ancestor of the other."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "rust")
    mods = modules(root)
    bad = 0
    graph = {m: set() for m in mods}
    for m, f in mods.items():
        with open(f) as fh:
            text = fh.read()
        lines = text.count("\n")
        if lines > MAX_LINES:
            print(f"{os.path.relpath(f, root)}: {lines} lines, more than {MAX_LINES}")
            bad += 1
        for p in use_paths(text):
            o = owner(p, mods)
            if o != m and not related(o, m):
                graph[m].add(o)
    # Whole subsystems too: a top-level module with its children is one node,
    # so a child importing something that imports its subsystem is a cycle.
    for m in list(graph):
        for o in list(graph[m]):
            if m[:1] and o[:1] and m[:1] != o[:1]:
                graph.setdefault(m[:1], set()).add(o[:1])
    # Tarjan's strongly connected components.
    index = {}
    low = {}
    stack = []
    on = set()
    sccs = []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        graph.setdefault(v, set())
    for v in sorted(graph):
        if v not in index:
            visit(v)
    for comp in sccs:
        names = sorted("::".join(c) or "crate" for c in comp)
        print("import cycle among: " + ", ".join(names))
        bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
