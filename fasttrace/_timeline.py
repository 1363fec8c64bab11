"""The viewer's index of a trace (docs/viewer-design.md): per process, the call tree and the
timeline slices of every thread with their level-of-detail pyramid, answering range queries.

Trace mode: one native pass (_calltree.fold with slices) gives both.  Sampled traces: the tree
comes from the samples; the slices are the ones the timeline exporters draw
(export/_samples.trace_slices: a sample's stack from its tick to the next), fed to the same
native pyramid, and each thread's state (running, waiting for the GIL, waiting in a call) is
a lane of its own.
"""

from __future__ import annotations

from array import array
from collections import namedtuple

from fasttrace._calltree import CallTree, _q, canonical_ids, fold

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple, Union

    from fasttrace import _core
    from fasttrace._processes import ProcessSet
    from fasttrace._trace import Trace

IndexThread = namedtuple("IndexThread", ["tid", "name", "first_ns", "last_ns", "max_depth",
                                         "slices", "gaps"])
#: parallel arrays ('q'): start, end, node (a node of the process's tree), count (1, or the
#: calls of a merged run)
Slices = namedtuple("Slices", ["start", "end", "node", "count"])
#: parallel arrays ('q'): start, end, state (0 running, 1 waiting for the GIL, 2 in a call)
States = namedtuple("States", ["start", "end", "state"])

RUNNING, GIL, IN_CALL = 0, 1, 2

#: Bytes of timeline pyramid an index keeps in memory per process, at most: beyond it the
#: finest levels go, and queries at those resolutions decode their range from the file again
#: (src/ft_fold.c).  A trace of 10 million events keeps every slice (about 130 MB).
DEFAULT_BUDGET = 256 << 20


class IndexProcess:
    """One process of an Index: its trace, tree and threads, and range queries."""

    def __init__(self, trace: "Trace", pid: int, name: str, command: "List[str]", offset_ns: int,
                 progress: "Optional[Callable[[int], None]]" = None,
                 budget: int = DEFAULT_BUDGET) -> None:
        self.trace = trace
        self.pid = pid
        self.name = name
        self.command = command
        self.offset_ns = offset_ns
        self.mode = trace.mode
        self.end_ns = int(trace.stats.duration_ns)
        if self.mode == "sample":
            self._fold = fold(trace, progress=progress)
            _feed_samples(trace, self._fold)
            self._fold.finish()
        else:
            self._fold = fold(trace, slices=True, progress=progress, budget=budget)
        self.tree = CallTree(trace, self._fold)
        names = {t.id: t.name for t in trace.threads}
        self._roots = {t.tid: t.root for t in self.tree.threads}
        self.threads: List[IndexThread] = []
        for t in self.tree.threads:
            gaps: List[Tuple[int, int, int]] = self._fold.gaps(t.tid)
            self.threads.append(IndexThread(t.tid, names.get(t.tid, f"thread-{t.tid}"),
                                            t.first_ns, t.last_ns, t.max_depth, t.slices, gaps))

    def _root(self, tid: int) -> int:
        root = self._roots.get(tid)
        if root is None:
            raise KeyError(f"no thread {tid} in process {self.pid}")
        return int(root)

    def slices(self, tid: int, t0: int, t1: int, res_ns: int, limit: int = 0) -> Slices:
        """Thread tid's slices overlapping [t0, t1] (ns in this process's time), at most a few
        per res_ns and depth: shorter calls come merged (count > 1).  limit: at most this many
        (0: any number), else _core.TooManySlices."""
        start, end, node, count = self._fold.query(tid, t0, t1, res_ns, False, self._root(tid),
                                                   limit)
        return Slices(_q(start), _q(end), _q(node), _q(count))

    def states(self, tid: int, t0: int, t1: int, res_ns: int) -> States:
        """Sampled traces: thread tid's states overlapping [t0, t1]; empty in trace mode."""
        self._root(tid)  # KeyError for a thread that is not there
        if self.mode != "sample":
            return States(array("q"), array("q"), array("q"))
        start, end, state, _ = self._fold.query(tid, t0, t1, res_ns, True)
        return States(_q(start), _q(end), _q(state))

    def window(self, t0: "Optional[int]", t1: "Optional[int]",
               tid: "Optional[int]" = None) -> CallTree:
        """The call tree of [t0, t1] only (None: open-ended); tid: that thread's alone."""
        if t0 is None and t1 is None and tid is None:
            return self.tree
        if self.mode == "sample":
            tree = CallTree.build(self.trace, window=(t0, t1))
            if tid is not None:
                tree.threads = [t for t in tree.threads if t.tid == tid]
            return tree
        # from the chunk boundaries the index noted: the range's chunks only
        w0 = -(1 << 62) if t0 is None else t0
        w1 = 1 << 62 if t1 is None else t1
        return CallTree(self.trace, self._fold.window(w0, w1, tid), (t0, t1))

    def call(self, tid: int, node: int, t0: int, t1: int) -> "Dict[str, object]":
        """One call, exactly: the call of `node` (a node of this process's tree) on thread tid
        that runs over [t0, t1] -- its self and total time and its callees (function id,
        calls, total and self time), from a fold of that range alone."""
        self._root(tid)
        if not 0 <= node < len(self.tree.fid):
            raise KeyError(f"no node {node} in process {self.pid}")
        path = list(reversed(self.tree.stack(node)))  # function ids, outermost first
        tree = self.window(t0, t1, tid)
        out: Dict[str, object] = {"self_ns": 0, "total_ns": 0, "callees": []}
        for t in tree.threads:
            if t.tid != tid:
                continue
            children: Dict[Tuple[int, int], int] = {}
            for n in range(t.root + 1, t.end):
                children[(tree.parent[n], tree.fid[n])] = n
            at: Optional[int] = t.root
            for fid in path:
                at = children.get((at, fid)) if at is not None else None
            if at is None:
                break
            inclusive = tree.inclusive()
            out["self_ns"] = tree.self_ns[at]
            out["total_ns"] = inclusive[at]
            out["callees"] = sorted(
                ([tree.fid[n], tree.calls[n], inclusive[n], tree.self_ns[n]]
                 for (parent, _), n in children.items() if parent == at),
                key=lambda c: -c[2])
        return out


class Index:
    """A trace (one file or series) or a multi-process trace, indexed for the viewer."""

    def __init__(self, source: "Union[Trace, ProcessSet]",
                 progress: "Optional[Callable[[int], None]]" = None,
                 budget: int = DEFAULT_BUDGET) -> None:
        from fasttrace._processes import Process, ProcessSet

        self.source = source
        self.processes: List[IndexProcess] = []
        done = [0]

        def counted(n: int) -> None:
            if progress is not None:
                progress(done[0] + n)

        for p in source if isinstance(source, ProcessSet) else [Process(source)]:
            self.processes.append(IndexProcess(p.trace, p.pid, p.label, p.argv, p.start_ns,
                                               counted, budget))
            done[0] += int(p.trace.stats.events)
        self.mode = self.processes[0].mode if self.processes else "trace"


def _frame_ids(trace: "Trace") -> "Dict[Tuple[str, str, int], int]":
    """(qualname, file, line) -> canonical function id, as the sampled tree folds them."""
    canonical = canonical_ids(trace)
    return {(f.qualname, f.filename, f.lineno): canonical[f.id] for f in trace.functions}


def _feed_samples(trace: "Trace", folded: "_core.Fold") -> None:
    """The sampled timeline: the exporters' slices of the samples as tree nodes, and each
    thread's states as runs."""
    from fasttrace.export import _samples

    ids = _frame_ids(trace)
    samples = _samples.Samples(trace)
    frames = samples.frames
    stacks: Dict[int, List[int]] = {}  # thread id -> open nodes, its root first
    for ev in _samples.trace_slices(samples):
        f = ev.function
        if f is frames.waiting:  # the states lane shows waiting
            continue
        tid = ev.thread
        open_ = stacks.setdefault(tid, [0])
        if ev.kind == "call":
            fid = 0 if f is frames.truncated else ids[(f.qualname, f.filename, f.lineno)]
            node = folded.child(tid, open_[-1], fid)
            folded.slice_open(tid, node, ev.ts)
            open_.append(node)
        elif len(open_) > 1:
            open_.pop()
            folded.slice_close(tid, ev.ts)
    period = _samples.period_ns(trace)
    cap = _samples.MAX_SPAN_PERIODS * period
    runs: Dict[int, List[int]] = {}  # thread id -> [start, last ts, state] of its open run
    for s in trace.samples():
        state = RUNNING if not s.idle else IN_CALL if s.in_call else GIL
        run = runs.get(s.thread)
        if run is not None:
            end = min(s.ts, run[1] + cap)
            if run[2] == state and end == s.ts:
                run[1] = s.ts
                continue
            folded.add_state(s.thread, run[0], end, run[2])
        runs[s.thread] = [s.ts, s.ts, state]
    for tid, (start, last, state) in runs.items():
        folded.add_state(tid, start, last + period, state)

