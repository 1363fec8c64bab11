"""`report --tree` and `report --callers FUNC`: views of a CallTree (fasttrace/_calltree.py).

The tree is pyinstrument's console view: each stack with its total (inclusive) and self time,
children by total time, branches drawn with box glyphs; stacks below --min-percent of the
thread's traced time are cut, and each parent says how many it lost and their time, so that
what is shown still adds up.  The callers view is pstats' print_callers/print_callees for one
function, from the tree's stacks.

A node's `calls` is the calls that opened its stack; in a sampled trace it is the samples
with the stack as a prefix (the samples under the node), since a sampler sees no calls.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import sys
from array import array

from fasttrace.commands import where

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, List, Optional, Tuple

    from fasttrace._calltree import CallTree, ThreadStats, ThreadTree

_COLORS = {"bold": "\033[1m", "dim": "\033[2m", "reset": "\033[0m", "red": "\033[31m",
           "yellow": "\033[33m", "green": "\033[32m"}


def palette(color: bool) -> "Dict[str, str]":
    return _COLORS if color else {k: "" for k in _COLORS}


# ---- the tree ---------------------------------------------------------------------------------


def counts(tree: "CallTree", t: "ThreadTree") -> "array[int]":
    """Node -> its calls: traced, the calls of its stack; sampled, the samples under it."""
    if not tree.sampled:
        return tree.calls
    out = array("q", tree.calls)
    parent = tree.parent
    for node in range(t.end - 1, t.root, -1):  # a child's index is above its parent's
        out[parent[node]] += out[node]
    return out


class Shape:
    """One thread's nodes as a tree to walk: children lists, inclusive time and counts."""

    def __init__(self, tree: "CallTree", t: "ThreadTree") -> None:
        self.tree = tree
        self.t = t
        self.total = tree.inclusive()
        self.children: Dict[int, List[int]] = {}
        for node in range(t.root + 1, t.end):
            self.children.setdefault(tree.parent[node], []).append(node)
        self.count = counts(tree, t)

    def split(self, node: int, floor: int, depth_left: "Optional[int]"
              ) -> "Tuple[List[int], int, int]":
        """(the children shown, by total time, the number hidden, their total time)."""
        kids = self.children.get(node, [])
        if depth_left is not None and depth_left <= 0:
            shown: List[int] = []
        else:
            shown = [k for k in kids if self.total[k] >= floor]
        shown.sort(key=lambda k: (-self.total[k], self.tree.function(self.tree.fid[k]).qualname))
        hidden = len(kids) - len(shown)
        hidden_ns = sum(self.total[k] for k in kids) - sum(self.total[k] for k in shown)
        return shown, hidden, hidden_ns


def _floor(traced_ns: int, min_percent: float) -> int:
    return int(traced_ns * min_percent / 100) if min_percent > 0 else 0


def tree_json(tree: "CallTree", t: "ThreadTree", traced_ns: int, min_percent: float,
              max_depth: "Optional[int]") -> "Dict[str, Any]":
    """The thread's stacks as nested dicts under its root ({"children", "hidden",
    "hidden_ns"}); every node's total_ns is its self_ns plus its children's total_ns plus
    hidden_ns (the total of its `hidden` children, cut by min_percent or max_depth)."""
    shape = Shape(tree, t)
    floor = _floor(traced_ns, min_percent)
    root: Dict[str, Any] = {"children": []}
    # an explicit stack rather than recursion: a deep recursion in the trace must not
    # overflow Python's
    todo: List[Tuple[int, Dict[str, Any], Optional[int]]] = [(t.root, root, max_depth)]
    while todo:
        node, out, left = todo.pop()
        shown, out["hidden"], out["hidden_ns"] = shape.split(node, floor, left)
        for k in shown:
            d = _node_json(shape, k)
            out["children"].append(d)
            todo.append((k, d, None if left is None else left - 1))
    return root


def _node_json(shape: Shape, k: int) -> "Dict[str, Any]":
    f = shape.tree.function(shape.tree.fid[k])
    return {"function": f.qualname, "file": f.filename, "line": f.lineno, "is_c": f.is_c,
            "self_ns": shape.tree.self_ns[k], "total_ns": shape.total[k],
            "calls": shape.count[k], "children": []}


def print_tree(tree: "CallTree", t: "ThreadTree", title: str, traced_ns: int,
               min_percent: float, max_depth: "Optional[int]", color: bool) -> None:
    """One thread's tree, pyinstrument-style: numbers on the left, glyphs before the name."""
    c = palette(color)
    shape = Shape(tree, t)
    floor = _floor(traced_ns, min_percent)
    span = max(traced_ns, 1)
    count = "samples" if tree.sampled else "calls"
    print(f"{c['bold']}{title}{c['reset']}")
    print(f"{'total ms':>11} {'total%':>6} {'self ms':>11} {'self%':>6} {count:>10}  function")
    # entries: (node, or -1 for a note, its glyphs, its children's indent, depth left, note)
    todo: List[Tuple[int, str, str, Optional[int], str]] = [(t.root, "", "", max_depth, "")]
    while todo:
        node, glyphs, indent, left, note = todo.pop()
        if node < 0:
            print(f"{'':>11} {'':>6} {'':>11} {'':>6} {'':>10}  {glyphs}{c['dim']}{note}"
                  f"{c['reset']}")
            continue
        if node != t.root:
            _print_node(shape, node, glyphs, span, c)
        shown, hidden, hidden_ns = shape.split(node, floor, left)
        # a stack: pushed in reverse, so that they come out biggest first, the note last
        if hidden:
            why = (f"below {min_percent:g}%" if left is None or left > 0
                   else "below --depth")
            todo.append((-1, indent + "└─ ", "", None,
                         f"… {hidden:,} more {why} ({hidden_ns / 1e6:.3f} ms)"))
        for i in range(len(shown) - 1, -1, -1):
            if node == t.root:  # the thread's top-level frames: no branch to draw
                glyph, more = "", ""
            elif i == len(shown) - 1 and not hidden:
                glyph, more = "└─ ", "   "
            else:
                glyph, more = "├─ ", "│  "
            todo.append((shown[i], indent + glyph, indent + more,
                         None if left is None else left - 1, ""))
    print()


def _print_node(shape: Shape, node: int, glyphs: str, span: int, c: "Dict[str, str]") -> None:
    tree = shape.tree
    f = tree.function(tree.fid[node])
    total, self_ns = shape.total[node], tree.self_ns[node]
    share = 100 * total / span
    # pyinstrument's colours: red for the stacks that take most of the time
    hot = c["red"] if share >= 60 else c["yellow"] if share >= 30 else (
        c["green"] if share >= 20 else "")
    print(f"{hot}{total / 1e6:11.3f} {share:5.1f}%{c['reset'] if hot else ''} "
          f"{self_ns / 1e6:11.3f} {100 * self_ns / span:5.1f}% {shape.count[node]:10,}  "
          f"{glyphs}{f.qualname} {c['dim']}{where(f)}{c['reset']}")


# ---- callers and callees ----------------------------------------------------------------------

#: The caller of a top-level frame (the thread's root).
TOP = -1


def match_functions(tree: "CallTree", pattern: str) -> "List[int]":
    """The function ids in the tree that `pattern` names: a qualname, a glob over qualnames,
    or FILE:LINE (FILE: the path, its base name, or a tail of it)."""
    file, _, line = pattern.rpartition(":")
    out = []
    for fid in sorted(set(tree.fid) - {0}):  # 0: roots, and the sampler's <truncated>
        f = tree.function(fid)
        if f.qualname == pattern or fnmatch.fnmatchcase(f.qualname, pattern):
            out.append(fid)
        elif file and line.isdigit() and f.lineno == int(line) and f.filename and (
                f.filename == file or f.filename.endswith(os.sep + file)):
            out.append(fid)
    return out


def close_names(trees: "Iterable[CallTree]", pattern: str) -> "List[str]":
    names = {tree.function(fid).qualname for tree in trees for fid in set(tree.fid) - {0}}
    return difflib.get_close_matches(pattern, sorted(names), n=5, cutoff=0.5)


class Edges:
    """Callers (caller fid -> [total_ns, calls]) and callees (callee fid -> [total_ns,
    self_ns, calls]) of one function.  Totals count a stack only where the function in
    question is outermost on it (as function_stats does), so recursion is not counted twice:
    the callers' totals add up to the function's total, their calls to its calls."""

    def __init__(self) -> None:
        self.callers: Dict[int, List[int]] = {}
        self.callees: Dict[int, List[int]] = {}


def _on_path(tree: "CallTree", node: int, fid: int) -> bool:
    """Whether `fid` is on node's stack (node included)."""
    parent, depth, fids = tree.parent, tree.depth, tree.fid
    while depth[node]:
        if fids[node] == fid:
            return True
        node = parent[node]
    return False


def edges(tree: "CallTree", threads: "Iterable[ThreadTree]", wanted: "Iterable[int]"
          ) -> "Dict[int, Edges]":
    """The Edges of each function in `wanted`, in one pass over the nodes (a glob can match
    hundreds of functions in a tree of a million nodes)."""
    out = {fid: Edges() for fid in wanted}
    total = tree.inclusive()
    parent, depth, fids, self_ns = tree.parent, tree.depth, tree.fid, tree.self_ns
    for t in threads:
        count = counts(tree, t)
        for node in range(t.root + 1, t.end):
            p, fid = parent[node], fids[node]
            e = out.get(fid)
            if e is not None:  # an edge caller -> fid
                outer = not _on_path(tree, p, fid)
                acc = e.callers.setdefault(fids[p] if depth[p] else TOP, [0, 0])
                acc[0] += total[node] if outer else 0
                acc[1] += _calls(tree, count, node, outer)
            e = out.get(fids[p]) if depth[p] else None
            if e is not None:  # an edge fids[p] -> fid
                outer = not _on_path(tree, p, fid)
                acc = e.callees.setdefault(fid, [0, 0, 0])
                acc[0] += total[node] if outer else 0
                acc[1] += self_ns[node]
                acc[2] += _calls(tree, count, node, outer)
    return out


def _calls(tree: "CallTree", count: "array[int]", node: int, outer: bool) -> int:
    """A traced stack's calls; a sampled one's samples, where outermost (a sample counts once
    for a function however often it is on the stack)."""
    if tree.sampled:
        return count[node] if outer else 0
    return tree.calls[node]


def callers_json(tree: "CallTree", e: Edges, fid: int, self_ns: int, total_ns: int,
                 calls: int) -> "Dict[str, Any]":
    return {**_function_json(tree, fid), "self_ns": self_ns, "total_ns": total_ns,
            "calls": calls,
            "callers": [{**_function_json(tree, g), "total_ns": v[0], "calls": v[1]}
                        for g, v in _by_total(e.callers)],
            "callees": [{**_function_json(tree, g), "total_ns": v[0], "self_ns": v[1],
                         "calls": v[2]} for g, v in _by_total(e.callees)]}


def _by_total(d: "Dict[int, List[int]]") -> "List[Tuple[int, List[int]]]":
    return sorted(d.items(), key=lambda kv: (-kv[1][0], -kv[1][-1], kv[0]))


def _function_json(tree: "CallTree", fid: int) -> "Dict[str, Any]":
    if fid == TOP:
        return {"id": None, "function": "<top level>", "file": None, "line": None,
                "is_c": False}
    f = tree.function(fid)
    return {"id": fid, "function": f.qualname, "file": f.filename, "line": f.lineno,
            "is_c": bool(f.is_c)}


def print_callers(tree: "CallTree", data: "Dict[str, Any]", title: str, color: bool) -> None:
    """One function's callers and callees (a callers_json() of tree), as two small tables."""
    c = palette(color)
    count = "samples" if tree.sampled else "calls"

    def _where(row: "Dict[str, Any]") -> str:
        return "" if row["id"] is None else where(tree.function(row["id"]))

    span = max(data["total_ns"], 1)
    print(f"{c['bold']}{title}{data['function']}{c['reset']} {c['dim']}{_where(data)}"
          f"{c['reset']}: self {data['self_ns'] / 1e6:.3f} ms, total "
          f"{data['total_ns'] / 1e6:.3f} ms, {data['calls']:,} {count}")
    print(f"  callers{'':3} {'total ms':>11} {'share%':>6} {count:>10}  function")
    for row in data["callers"]:
        print(f"  {'':10} {row['total_ns'] / 1e6:11.3f} {100 * row['total_ns'] / span:5.1f}% "
              f"{row['calls']:10,}  {row['function']} {c['dim']}{_where(row)}{c['reset']}")
    print(f"  callees{'':3} {'total ms':>11} {'self ms':>11} {count:>10}  function")
    for row in data["callees"]:
        print(f"  {'':10} {row['total_ns'] / 1e6:11.3f} {row['self_ns'] / 1e6:11.3f} "
              f"{row['calls']:10,}  {row['function']} {c['dim']}{_where(row)}{c['reset']}")
    if not data["callees"]:
        print(f"  {'':10} {c['dim']}(none){c['reset']}")
    print()


# ---- what report shows with --tree and --callers ----------------------------------------------


class Unit:
    """One process's tree and the threads of it to show (a single trace is one unit)."""

    def __init__(self, tree: "CallTree", stats: "Dict[int, ThreadStats]", prefix: str = "",
                 pid: "Optional[int]" = None) -> None:
        self.tree = tree
        self.stats = stats
        self.prefix = prefix  # "process PID LABEL, " in a multi-process trace
        self.pid = pid
        self.names = {th.id: th.name for th in tree.trace.threads}

    def threads(self) -> "List[ThreadTree]":
        return [t for t in self.tree.threads if t.tid in self.stats]

    def title(self, t: "ThreadTree") -> str:
        s = self.stats[t.tid]
        what = "sampled" if self.tree.sampled else "traced"
        return (f"{self.prefix}thread {t.tid} {self.names.get(t.tid, '?')}: "
                f"{s.traced_ns / 1e6:.3f} ms {what}")


def unmatched(units: "List[Unit]", pattern: str) -> "Optional[str]":
    """The error for a --callers pattern that names no function, or None."""
    if any(match_functions(u.tree, pattern) for u in units):
        return None
    close = close_names([u.tree for u in units], pattern)
    hint = f"; close: {', '.join(close)}" if close else ""
    return (f"--callers {pattern!r} names no function in the trace (a qualname, a glob such "
            f"as '*.parse', or FILE:LINE){hint}")


def views_json(units: "List[Unit]", args: "Any") -> "Dict[str, Any]":
    out: Dict[str, Any] = {}
    if args.tree:
        out["tree"] = [{"process": u.pid, "thread": t.tid, "name": u.names.get(t.tid),
                        "traced_ns": u.stats[t.tid].traced_ns,
                        **tree_json(u.tree, t, u.stats[t.tid].traced_ns, args.min_percent,
                                    args.depth)}
                       for u in units for t in u.threads()]
        # nesting as deep as the deepest stack shown: json's encoder recurses
        deepest = max((t.max_depth for u in units for t in u.threads()), default=0)
        sys.setrecursionlimit(max(sys.getrecursionlimit(), 2 * deepest + 200))
    if args.callers is not None:
        out["callers"] = [{"process": u.pid, **data} for u, data in _callers(units, args)]
    return out


def print_views(units: "List[Unit]", args: "Any", color: bool) -> None:
    if args.tree:
        for u in units:
            for t in u.threads():
                print_tree(u.tree, t, u.title(t), u.stats[t.tid].traced_ns, args.min_percent,
                           args.depth, color)
    if args.callers is not None:
        for u, data in _callers(units, args):
            print_callers(u.tree, data, u.prefix, color)


def _callers(units: "List[Unit]", args: "Any") -> "Iterable[Tuple[Unit, Dict[str, Any]]]":
    for u in units:
        threads = u.threads()
        matched = match_functions(u.tree, args.callers)
        found = edges(u.tree, threads, matched)
        for fid in matched:
            self_ns = total_ns = calls = 0
            for t in threads:
                fs = u.stats[t.tid].functions.get(fid)
                if fs is not None:
                    self_ns, total_ns, calls = (self_ns + fs.self_ns, total_ns + fs.total_ns,
                                                calls + fs.calls)
            yield u, callers_json(u.tree, found[fid], fid, self_ns, total_ns, calls)
