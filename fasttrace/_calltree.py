"""The call tree: every consumer's fold of a trace (docs/viewer-design.md).

One native pass (src/ft_fold.c, driven by _core.fold_events/fold_samples) folds a trace's
events, or its samples, into a trie of the stacks seen, per thread.  Everything `report`, the
collapsed and pprof exporters and the viewer's profiles show is derived from it here:

* a stack's self time is the time it was the innermost one open; time with no frame open
  belongs to the thread's root, and so does a gap (dropped events): the reader closes every
  frame at a gap's start and reopens the stack after it;
* a function's self time is the sum over its stacks; its total time is the time it was on the
  stack at all (the inclusive time of its outermost stacks, so recursion is not counted
  twice); its calls are the calls that opened its stacks (the reader's synthetic opens, at the
  start of a trace or after a gap, are not calls).

Sampled traces estimate the same quantities: each sample stands for its weight_ns, given to
its stack's leaf; `calls` counts samples, since a sampler sees no calls (a function's: the
samples with it anywhere on the stack, once each).  Functions with the same name, file and
line are one (a sampled trace can define a function twice).

Several processes (a multi-process trace) are each folded on their own; merged_processes()
then adds up what is the same function in several of them.
"""

from __future__ import annotations

from array import array
from collections import namedtuple

from fasttrace import _core

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

    from fasttrace._trace import Trace

    Window = Optional[Tuple[Optional[int], Optional[int]]]

#: One thread's part of a CallTree: its nodes are root..end-1, root the empty stack.
ThreadTree = namedtuple("ThreadTree", ["tid", "root", "end", "first_ns", "last_ns", "gap_ns",
                                       "gaps", "dropped", "max_depth", "slices"])


class FunctionStats:
    __slots__ = ("fid", "calls", "self_ns", "total_ns")

    def __init__(self, fid: int) -> None:
        self.fid = fid
        self.calls = 0
        self.self_ns = 0
        self.total_ns = 0

    def add(self, other: "FunctionStats") -> None:
        self.calls += other.calls
        self.self_ns += other.self_ns
        self.total_ns += other.total_ns


class ThreadStats:
    """One thread: its functions and its traced time, from its first to its last event less the
    gaps: the sum of all self times plus `outside_ns`, the time no traced frame was open."""

    __slots__ = ("tid", "functions", "traced_ns", "gap_ns", "outside_ns", "dropped", "first_ts",
                 "last_ts", "samples", "idle_ns", "in_call_ns")

    def __init__(self, tid: int) -> None:
        self.tid = tid
        self.functions: Dict[int, FunctionStats] = {}
        self.traced_ns = 0
        self.gap_ns = 0
        self.outside_ns = 0  # no frame open (e.g. a thread's start-up before its hook)
        self.dropped = 0
        self.first_ts: Optional[int] = None
        self.last_ts = 0
        # sampled traces only
        self.samples = 0
        self.idle_ns = 0  # waiting: did not hold the GIL
        self.in_call_ns = 0  # waiting inside a call (sleep, recv, lock.acquire, ...)


def canonical_ids(trace: "Trace") -> "Dict[int, int]":
    """Function id -> the first id with the same name, file and line (sampled traces)."""
    out: Dict[int, int] = {0: 0}  # the truncation marker
    by_key: Dict[Tuple[str, str, int], int] = {}
    for f in trace.functions:
        out[f.id] = by_key.setdefault((f.qualname, f.filename, f.lineno), f.id)
    return out


def fold(trace: "Trace", window: "Window" = None, slices: bool = False,
         progress: "Optional[Callable[[int], None]]" = None, budget: int = 0,
         running_only: bool = False, min_duration_ns: int = 0) -> "_core.Fold":
    """The native fold of a trace (events, or samples when sampled); window (t0, t1): only
    time in it counts; slices: also the timeline slices (trace mode; see _timeline for
    samples), keeping at most `budget` bytes of their pyramid in memory (0: all);
    running_only (sampled only): leave out the samples of threads not holding the GIL;
    min_duration_ns (traced only, not with slices): calls shorter than it are taken out,
    their time going to their caller's self time."""
    w0, w1 = window if window is not None else (None, None)
    if running_only and trace.mode != "sample":
        raise ValueError("running_only needs a sampled trace: a traced one has no states")
    if trace.mode == "sample":
        canonical = canonical_ids(trace)
        flat = array("q")
        offsets = array("q", [0])
        for stack in trace.stacks:
            flat.extend(canonical.get(f.id, f.id) for f in stack)
            offsets.append(len(flat))
        files, _, _, start, npt, _ = trace.fold_source()
        return _core.fold_samples(files, flat.tobytes(), offsets.tobytes(), start, npt, w0, w1,
                                  progress, running_only)
    files, breaks, kinds, start, npt, end = trace.fold_source()
    return _core.fold_events(files, breaks, kinds, start, npt, end, slices, w0, w1, progress,
                             budget, min_duration_ns)


def _q(data: "bytes | bytearray") -> "array[int]":
    a = array("q")
    a.frombytes(data)
    return a


class CallTree:
    """The stacks of a trace, per thread (see the module docstring and
    docs/viewer-design.md): parallel arrays indexed by node."""

    def __init__(self, trace: "Trace", folded: "Optional[_core.Fold]",
                 window: "Window" = None) -> None:
        self.trace = trace
        self._fold = folded  # None: a pruned() tree, whose nodes no longer are the fold's
        self.sampled = trace.mode == "sample"
        self.window = window
        self.parent: array[int] = array("q")
        self.fid: array[int] = array("q")
        self.depth: array[int] = array("q")
        self.self_ns: array[int] = array("q")
        self.calls: array[int] = array("q")
        self.running_ns: array[int] = array("q")
        self.gil_ns: array[int] = array("q")
        self.call_ns: array[int] = array("q")
        self.threads: List[ThreadTree] = []
        if folded is None:
            return
        for tid, n, first, last, gap_ns, gaps, dropped, max_depth, n_slices in folded.threads():
            base = len(self.parent)
            arrays = folded.tree(tid)
            parent = _q(arrays["parent"])
            self.parent.extend(p + base if p >= 0 else -1 for p in parent)
            self.fid.extend(_q(arrays["fid"]))
            self.depth.extend(_q(arrays["depth"]))
            self.self_ns.extend(_q(arrays["self_ns"]))
            self.calls.extend(_q(arrays["calls"]))
            if self.sampled:
                self.running_ns.extend(_q(arrays["running_ns"]))
                self.gil_ns.extend(_q(arrays["gil_ns"]))
                self.call_ns.extend(_q(arrays["call_ns"]))
            self.threads.append(ThreadTree(tid, base, base + n, first, last, gap_ns, gaps,
                                           dropped, max_depth, n_slices))
        self._inclusive: Optional[array[int]] = None

    @classmethod
    def build(cls, trace: "Trace", window: "Window" = None,
              progress: "Optional[Callable[[int], None]]" = None,
              running_only: bool = False, min_duration_ns: int = 0) -> "CallTree":
        return cls(trace, fold(trace, window, False, progress, running_only=running_only,
                               min_duration_ns=min_duration_ns), window)

    def pruned(self, keep: "Callable[[int], bool]", max_depth: "Optional[int]" = None,
               threads: "Optional[Set[int]]" = None, merge: bool = False) -> "CallTree":
        """The tree with only the frames whose function id `keep` accepts, paths cut at
        `max_depth` frames, only `threads` (None: all), and with `merge` one thread (the first
        one's id) whose root holds every thread's stacks (summed where they are the same).

        A frame left out is removed from its stack's path: its self time (and that of
        everything cut below max_depth) goes to the nearest ancestor kept, the thread's root
        if there is none (time no exported stack shows).  Calls count only for frames kept:
        a stack's calls are the calls that opened it.  Self times still add up to the same
        thread totals, so a folded output's weights sum as before less what went to roots."""
        out = CallTree(self.trace, None, self.window)
        parent, fid, self_ns, calls = self.parent, self.fid, self.self_ns, self.calls
        n_parent, n_fid, n_depth, n_self, n_calls = out.parent, out.fid, out.depth, \
            out.self_ns, out.calls
        mapped = array("q", bytes(8 * len(parent)))
        children: Dict[Tuple[int, int], int] = {}
        limit = max_depth if max_depth is not None else 1 << 62
        decided: Dict[int, bool] = {}
        kept = [t for t in self.threads if threads is None or t.tid in threads]
        for t in kept:
            if not merge or not out.threads:
                root = len(n_parent)
                for a, v in ((n_parent, -1), (n_fid, fid[t.root]), (n_depth, 0), (n_self, 0),
                             (n_calls, 0)):
                    a.append(v)
                out.threads.append(t._replace(root=root))
            root = out.threads[-1].root
            mapped[t.root] = root
            n_self[root] += self_ns[t.root]
            n_calls[root] += calls[t.root]
            for node in range(t.root + 1, t.end):
                p = mapped[parent[node]]
                f = fid[node]
                ok = decided.get(f)
                if ok is None:
                    ok = decided[f] = keep(f)
                m = p
                if ok and n_depth[p] < limit:
                    m = children.get((p, f), -1)
                    if m < 0:
                        m = children[(p, f)] = len(n_parent)
                        for a, v in ((n_parent, p), (n_fid, f), (n_depth, n_depth[p] + 1),
                                     (n_self, 0), (n_calls, 0)):
                            a.append(v)
                    n_calls[m] += calls[node]
                mapped[node] = m
                n_self[m] += self_ns[node]
            if not merge:
                out.threads[-1] = out.threads[-1]._replace(end=len(n_parent))
        if merge and kept:
            out.threads = [ThreadTree(
                kept[0].tid, 0, len(n_parent), min(t.first_ns for t in kept),
                max(t.last_ns for t in kept), sum(t.gap_ns for t in kept),
                sum(t.gaps for t in kept), sum(t.dropped for t in kept),
                max(t.max_depth for t in kept), 0)]
        return out

    # ---- the exporters' view (what export/_stacks.Stacks was) ----------------------------

    @property
    def span(self) -> "Dict[int, Tuple[int, int]]":
        """Thread id -> its first and last event's ts."""
        return {t.tid: (t.first_ns, t.last_ns) for t in self.threads}

    @property
    def gaps(self) -> int:
        return sum(t.gaps for t in self.threads)

    @property
    def dropped(self) -> int:
        return sum(t.dropped for t in self.threads)

    @property
    def gap_ns(self) -> int:
        return sum(t.gap_ns for t in self.threads)

    def function(self, fid: int) -> "Any":
        return self.trace.function(fid)

    def thread(self, tid: int) -> ThreadTree:
        for t in self.threads:
            if t.tid == tid:
                return t
        raise KeyError(f"no thread {tid} in this trace")

    def stack(self, node: int) -> List[int]:
        """Function ids of `node`'s stack, leaf first."""
        parent, depth, fid = self.parent, self.depth, self.fid
        out = []
        while depth[node]:
            out.append(fid[node])
            node = parent[node]
        return out

    def nodes(self) -> "Iterator[Tuple[int, int]]":
        """(thread id, node) for every non-root node, threads in id order."""
        for t in self.threads:
            for node in range(t.root + 1, t.end):
                yield t.tid, node

    # ---- derived ----------------------------------------------------------------------------

    def inclusive(self) -> "array[int]":
        """Node -> the time its stack was open, as the innermost or under a callee.  A child's
        index is always above its parent's, so one backward pass sums the subtrees."""
        if self._inclusive is None:
            out = array("q", self.self_ns)
            parent = self.parent
            for node in range(len(out) - 1, -1, -1):
                p = parent[node]
                if p >= 0:
                    out[p] += out[node]
            self._inclusive = out
        return self._inclusive

    def function_stats(self, tid: "Optional[int]" = None) -> "Dict[int, FunctionStats]":
        """Function id -> its self and total time and calls in thread tid (None: summed over
        the threads)."""
        if tid is not None:
            return self._functions(self.thread(tid))
        out: Dict[int, FunctionStats] = {}
        for t in self.threads:
            for fid, fs in self._functions(t).items():
                out.setdefault(fid, FunctionStats(fid)).add(fs)
        return out

    def _functions(self, t: ThreadTree) -> "Dict[int, FunctionStats]":
        """Thread t's functions, summed natively over its nodes (ft_fold_functions)."""
        out: Dict[int, FunctionStats] = {}
        if self._fold is None:
            raise ValueError("a pruned call tree has no per-function stats")
        for fid, calls, self_ns, total_ns in self._fold.functions(t.tid):
            fs = out[fid] = FunctionStats(fid)
            fs.calls, fs.self_ns, fs.total_ns = calls, self_ns, total_ns
        return out

    def thread_stats(self) -> "Dict[int, ThreadStats]":
        """Thread id -> ThreadStats, threads in id order."""
        out: Dict[int, ThreadStats] = {}
        w0, w1 = self.window if self.window is not None else (None, None)
        for t in self.threads:
            s = out[t.tid] = ThreadStats(t.tid)
            s.functions = self._functions(t)
            s.first_ts, s.last_ts = t.first_ns, t.last_ns
            s.dropped = t.dropped
            nodes = range(t.root, t.end)
            if self.sampled:
                s.samples = sum(self.calls[n] for n in nodes)
                s.traced_ns = sum(self.self_ns[n] for n in nodes)
                s.idle_ns = sum(self.gil_ns[n] + self.call_ns[n] for n in nodes)
                s.in_call_ns = sum(self.call_ns[n] for n in nodes)
                continue
            first = t.first_ns if w0 is None else max(t.first_ns, w0)
            last = t.last_ns if w1 is None else min(t.last_ns, w1)
            s.gap_ns = t.gap_ns
            s.traced_ns = max(last - first, 0) - t.gap_ns
            s.outside_ns = self.self_ns[t.root] - t.gap_ns
        return out


def thread_stats(trace: "Trace", thread: "Optional[int]" = None,
                 progress: "Optional[Callable[[int], None]]" = None,
                 running_only: bool = False) -> "Dict[int, ThreadStats]":
    """Per-thread function stats of a trace (trace or sampling mode); thread: only that one;
    running_only: see fold()."""
    stats = CallTree.build(trace, progress=progress, running_only=running_only).thread_stats()
    if thread is not None:
        return {tid: s for tid, s in stats.items() if tid == thread}
    return stats


def merged(threads: "Dict[int, ThreadStats]") -> ThreadStats:
    """All threads as one: times and calls summed per function."""
    out = ThreadStats(0)
    for t in threads.values():
        _add_totals(out, t)
        for fid, fs in t.functions.items():
            acc = out.functions.get(fid)
            if acc is None:
                acc = out.functions[fid] = FunctionStats(fid)
            acc.add(fs)
    return out


def _add_totals(out: ThreadStats, t: ThreadStats) -> None:
    out.traced_ns += t.traced_ns
    out.gap_ns += t.gap_ns
    out.outside_ns += t.outside_ns
    out.dropped += t.dropped
    out.samples += t.samples
    out.idle_ns += t.idle_ns
    out.in_call_ns += t.in_call_ns


def merged_processes(units: List[Tuple[Trace, ThreadStats]]
                     ) -> Tuple[ThreadStats, List[Any], Dict[int, List[Tuple[int, FunctionStats]]]]:
    """Several processes as one (units: each process's trace and its threads merged()):
    (the totals, with functions summed where they are the same function in several processes
    (name, qualname, file, first line, module, C or not) under new ids 1, 2, ...; functions,
    new id -> the function; new id -> [(index in units, that process's FunctionStats)])."""
    out = ThreadStats(0)
    functions: List[Any] = [None]
    ids: Dict[Tuple[Any, ...], int] = {}
    by_process: Dict[int, List[Tuple[int, FunctionStats]]] = {}
    for i, (trace, stats) in enumerate(units):
        _add_totals(out, stats)
        for fid, fs in stats.functions.items():
            f = trace.function(fid)
            key = (f.name, f.qualname, f.filename, f.lineno, f.module, bool(f.is_c))
            nid = ids.get(key)
            if nid is None:
                nid = ids[key] = len(functions)
                functions.append(f)
                out.functions[nid] = FunctionStats(nid)
            out.functions[nid].add(fs)
            by_process.setdefault(nid, []).append((i, fs))
    return out, functions, by_process
