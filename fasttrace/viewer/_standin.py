"""THROWAWAY: a pure-Python stand-in for fasttrace._calltree (Index, CallTree) as
docs/viewer-design.md describes it, so that the viewer can be built before the native fold
lands on main.  Slow (it loops over every event in Python); delete it once the real one is
merged.  The viewer imports only the documented API, through fasttrace/viewer/_source.py."""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections import namedtuple

from fasttrace import _core
from fasttrace._analysis import ThreadStats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

ThreadTree = namedtuple("ThreadTree", "tid root end first_ns last_ns gap_ns gaps dropped")
FunctionStats = namedtuple("FunctionStats", "fid calls self_ns total_ns")
IndexThread = namedtuple("IndexThread", "tid name first_ns last_ns max_depth slices gaps")
Slices = namedtuple("Slices", "start end node count")
States = namedtuple("States", "start end state")


class CallTree:
    def __init__(self, function: "Callable[[int], Any]", sampled: bool) -> None:
        self._function = function
        self.sampled = sampled
        self.parent = array("q")
        self.fid = array("q")
        self.depth = array("q")
        self.self_ns = array("q")
        self.calls = array("q")
        self.running_ns = array("q")
        self.gil_ns = array("q")
        self.call_ns = array("q")
        self.threads: List[ThreadTree] = []
        self._children: Dict[Tuple[int, int], int] = {}

    def _node(self, parent: int, fid: int) -> int:
        key = (parent, fid)
        n = self._children.get(key)
        if n is None:
            n = self._children[key] = len(self.parent)
            self.parent.append(parent)
            self.fid.append(fid)
            self.depth.append(self.depth[parent] + 1 if parent >= 0 else 0)
            for a in (self.self_ns, self.calls, self.running_ns, self.gil_ns, self.call_ns):
                a.append(0)
        return n

    def function(self, fid: int) -> Any:
        return _core.TRUNCATED if fid == 0 else self._function(fid)

    def inclusive(self) -> "array[int]":
        out = array("q", self.self_ns)
        for n in range(len(out) - 1, -1, -1):  # children are numbered after their parents
            p = self.parent[n]
            if p >= 0:
                out[p] += out[n]
        return out

    def function_stats(self, tid: Optional[int] = None) -> "Dict[int, FunctionStats]":
        inc = self.inclusive()
        calls_inc = array("q", self.calls)
        for n in range(len(calls_inc) - 1, -1, -1):
            p = self.parent[n]
            if p >= 0:
                calls_inc[p] += calls_inc[n]
        acc: Dict[int, List[int]] = {}
        for t in self.threads:
            if tid is not None and t.tid != tid:
                continue
            open_fids: Dict[int, int] = {}  # fid -> how many ancestors of the node have it
            path: List[int] = []
            for n in range(t.root + 1, t.end):
                while path and path[-1] != self.parent[n]:
                    f = self.fid[path.pop()]
                    open_fids[f] -= 1
                fid = self.fid[n]
                a = acc.setdefault(fid, [0, 0, 0])
                a[1] += self.self_ns[n]
                outer = not open_fids.get(fid)
                if outer:
                    a[2] += inc[n]
                    if self.sampled:
                        a[0] += calls_inc[n]
                if not self.sampled:
                    a[0] += self.calls[n]
                path.append(n)
                open_fids[fid] = open_fids.get(fid, 0) + 1
        return {fid: FunctionStats(fid, c, s, tot) for fid, (c, s, tot) in acc.items()}

    def thread_stats(self) -> "Dict[int, ThreadStats]":
        out = {}
        for t in self.threads:
            s = ThreadStats(t.tid)
            s.traced_ns = t.last_ns - t.first_ns - t.gap_ns
            s.gap_ns, s.dropped, s.first_ts, s.last_ts = t.gap_ns, t.dropped, t.first_ns, t.last_ns
            out[t.tid] = s
        return out


def _canonical(trace: Any) -> "Dict[int, int]":
    by_key: Dict[Tuple[str, str, int], int] = {}
    out = {0: 0}
    for f in trace.functions:
        out[f.id] = by_key.setdefault((f.qualname, f.filename, f.lineno), f.id)
    return out


def _fold(trace: Any, clip: "Optional[Tuple[int, int]]" = None,
          slices: "Optional[Dict[int, List[Tuple[int, int, int]]]]" = None,
          states: "Optional[Dict[int, List[Tuple[int, int, int]]]]" = None,
          progress: "Optional[Callable[[int], None]]" = None) -> CallTree:
    sampled = trace.mode == "sample"
    tree = CallTree(trace.function, sampled)
    lo, hi = clip if clip is not None else (-1 << 62, 1 << 62)
    tids = sorted(t.id for t in trace.threads)
    n_events = 0
    canon = _canonical(trace) if sampled else {}
    for tid in tids:
        root = len(tree.parent)
        tree._node(-1, 0)
        tree._children.pop((-1, 0))
        gaps: List[Tuple[int, int, int]] = []
        first = last = None
        out_slices: List[Tuple[int, int, int]] = []
        if not sampled:
            stack: List[Tuple[int, int]] = []
            for e in trace.events(tid, gaps=True):
                ts = e.ts
                if first is None:
                    first = last = ts
                assert last is not None
                top = stack[-1][0] if stack else root
                tree.self_ns[top] += max(0, min(ts, hi) - max(last, lo))
                last = ts
                k = e.kind
                if k == "gap":
                    gaps.append((e.start_ts, ts, e.dropped))
                elif k == "call" or k == "c_call":
                    node = tree._node(stack[-1][0] if stack else root, e.function.id)
                    if not e.synthetic and lo <= ts <= hi:
                        tree.calls[node] += 1
                    stack.append((node, ts))
                elif stack:
                    node, start = stack.pop()
                    out_slices.append((start, ts, node))
                n_events += 1
                if progress is not None and n_events % 200_000 == 0:
                    progress(n_events)
        else:
            open_: List[Tuple[int, int]] = []  # per depth: (node, start)
            out_states: List[Tuple[int, int, int]] = []
            for s in trace.samples(tid):
                w = s.weight_ns
                start, end = max(0, s.ts - w), s.ts
                if first is None:
                    first = start
                last = end
                node = root
                path = []
                for f in s.stack:
                    node = tree._node(node, canon.get(f.id, f.id))
                    path.append(node)
                weight = max(0, min(end, hi) - max(start, lo))
                tree.self_ns[node] += weight
                if lo <= end <= hi:
                    tree.calls[node] += 1
                state = 0 if not s.idle else (2 if s.in_call else 1)
                (tree.running_ns, tree.gil_ns, tree.call_ns)[state][node] += weight
                if out_states and out_states[-1][2] == state and out_states[-1][1] >= start:
                    out_states[-1] = (out_states[-1][0], end, state)
                else:
                    out_states.append((start, end, state))
                # a run of samples sharing a frame (the same node at that depth) is one slice
                keep = 0
                while (keep < len(open_) and keep < len(path) and open_[keep][0] == path[keep]):
                    keep += 1
                for d in range(len(open_) - 1, keep - 1, -1):
                    n, st = open_.pop()
                    out_slices.append((st, start, n))
                for d in range(keep, len(path)):
                    open_.append((path[d], start))
                n_events += 1
                if progress is not None and n_events % 20_000 == 0:
                    progress(n_events)
            while open_:
                n, st = open_.pop()
                out_slices.append((st, last or 0, n))
            if states is not None:
                states[tid] = out_states
        if slices is not None:
            slices[tid] = out_slices
        f0 = first or 0
        l0 = last or 0
        tree.threads.append(ThreadTree(tid, root, len(tree.parent), f0, l0,
                                       sum(b - a for a, b, _ in gaps), gaps,
                                       sum(d for _, _, d in gaps)))
    return tree


class _Lane:
    """One thread's slices, per depth, by start (those of a depth never overlap)."""

    def __init__(self, slices: "List[Tuple[int, int, int]]", depth: "array[int]") -> None:
        by_depth: Dict[int, List[Tuple[int, int, int]]] = {}
        for s in slices:
            by_depth.setdefault(depth[s[2]], []).append(s)
        self.depths = []
        for d in sorted(by_depth):
            rows = sorted(by_depth[d])
            self.depths.append(([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]))
        self.max_depth = max(by_depth) if by_depth else 0

    def query(self, t0: int, t1: int, res: int) -> Slices:
        out = Slices(array("q"), array("q"), array("q"), array("q"))
        for starts, ends, nodes in self.depths:
            i, j = bisect_left(ends, t0), bisect_right(starts, t1)
            run: Optional[List[int]] = None  # start, end, node, count, longest
            for k in range(i, j):
                s, e, n = starts[k], ends[k], nodes[k]
                if e - s >= res:
                    if run is not None:
                        _emit(out, run)
                        run = None
                    _emit(out, [s, e, n, 1, e - s])
                elif run is not None and s - run[1] < res:
                    run[1] = e
                    run[3] += 1
                    if e - s > run[4]:
                        run[2], run[4] = n, e - s
                else:
                    if run is not None:
                        _emit(out, run)
                    run = [s, e, n, 1, e - s]
            if run is not None:
                _emit(out, run)
        return out


def _emit(out: Slices, run: "List[int]") -> None:
    out.start.append(run[0])
    out.end.append(run[1])
    out.node.append(run[2])
    out.count.append(run[3])


class IndexProcess:
    def __init__(self, trace: Any, pid: int, name: str, command: "List[str]", offset_ns: int,
                 progress: "Optional[Callable[[int], None]]") -> None:
        self.trace = trace
        self.pid, self.name, self.command, self.offset_ns = pid, name, command, offset_ns
        self.mode = trace.mode
        slices: Dict[int, List[Tuple[int, int, int]]] = {}
        self._states: Dict[int, List[Tuple[int, int, int]]] = {}
        self.tree = _fold(trace, None, slices, self._states, progress)
        self.end_ns = int(trace.stats.duration_ns)
        names = {t.id: t.name for t in trace.threads}
        self._lanes = {tid: _Lane(s, self.tree.depth) for tid, s in slices.items()}
        self.threads = [IndexThread(t.tid, names.get(t.tid, "?"), t.first_ns, t.last_ns,
                                    self._lanes[t.tid].max_depth, len(slices[t.tid]), t.gaps)
                        for t in self.tree.threads]

    def slices(self, tid: int, t0: int, t1: int, res_ns: int) -> Slices:
        return self._lanes[tid].query(t0, t1, max(1, res_ns))

    def states(self, tid: int, t0: int, t1: int, res_ns: int) -> States:
        out = States(array("q"), array("q"), array("q"))
        pending: "Optional[List[Any]]" = None  # runs shorter than res_ns: start, end, ns/state

        def emit(s: int, e: int, st: int) -> None:
            if out.start and out.state[-1] == st and s - out.end[-1] < res_ns:
                out.end[-1] = e
            else:
                out.start.append(s)
                out.end.append(e)
                out.state.append(st)

        def flush() -> None:
            if pending is not None:
                ns = pending[2]
                emit(pending[0], pending[1], max(range(3), key=lambda i: ns[i]))

        for s, e, st in self._states.get(tid, ()):
            if e < t0 or s > t1:
                continue
            if e - s >= res_ns:
                flush()
                pending = None
                emit(s, e, st)
                continue
            if pending is None:
                pending = [s, e, [0, 0, 0]]
            pending[1] = e
            pending[2][st] += e - s
            if pending[1] - pending[0] >= res_ns:
                flush()
                pending = None
        flush()
        return out

    def window(self, t0: int, t1: int) -> CallTree:
        return _fold(self.trace, (t0, t1))


class Index:
    def __init__(self, source: Any, progress: "Optional[Callable[[int], None]]" = None) -> None:
        from fasttrace._processes import ProcessSet

        self.processes: List[IndexProcess] = []
        if isinstance(source, ProcessSet):
            for p in source:
                self.processes.append(IndexProcess(p.trace, p.pid, p.label, p.argv, p.start_ns,
                                                   progress))
        else:
            h = source.header
            argv = list(h.get("argv") or [])
            from fasttrace._processes import process_name
            self.processes.append(IndexProcess(source, int(h["pid"]),
                                               process_name(argv, int(h["pid"])), argv, 0,
                                               progress))
