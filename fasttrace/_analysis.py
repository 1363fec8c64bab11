"""Per-function time and call counts from a trace, streamed (memory: functions x threads).

Self time of a function is the time it was the innermost frame.  Total time counts each
function once per outermost activation, so recursion is not double-counted.  Time during a
gap (dropped events) belongs to no function: the reader closes every frame at the gap's start
and reopens the stack after it.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple

    from fasttrace._trace import Trace


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
                 "last_ts")

    def __init__(self, tid: int) -> None:
        self.tid = tid
        self.functions: Dict[int, FunctionStats] = {}
        self.traced_ns = 0
        self.gap_ns = 0
        self.outside_ns = 0  # no frame open (e.g. a thread's start-up before its hook)
        self.dropped = 0
        self.first_ts: Optional[int] = None
        self.last_ts = 0


def function_stats(trace: "Trace", thread: Optional[int] = None,
                   progress: Optional[Callable[[int], None]] = None) -> Dict[int, ThreadStats]:
    threads: Dict[int, ThreadStats] = {}
    # per thread: stack of (FunctionStats, entry ts), active activations per fid, last ts
    stacks: Dict[int, List[Tuple[FunctionStats, int]]] = {}
    active: Dict[int, Dict[int, int]] = {}
    n = 0
    for e in trace.events(thread, gaps=True):
        tid = e.thread
        ts = e.ts
        t = threads.get(tid)
        if t is None:
            t = threads[tid] = ThreadStats(tid)
            stacks[tid] = []
            active[tid] = {}
            t.first_ts = t.last_ts = ts
        stack = stacks[tid]
        kind = e.kind
        if kind == "gap":  # the reader closed every frame at its start
            t.gap_ns += ts - e.start_ts
            t.dropped += e.dropped
            t.last_ts = ts
            continue
        if stack:
            stack[-1][0].self_ns += ts - t.last_ts
        else:
            t.outside_ns += ts - t.last_ts
        t.last_ts = ts
        if kind == "call" or kind == "c_call":
            fid = e.function.id
            fs = t.functions.get(fid)
            if fs is None:
                fs = t.functions[fid] = FunctionStats(fid)
            if not e.synthetic:
                fs.calls += 1
            act = active[tid]
            act[fid] = act.get(fid, 0) + 1
            stack.append((fs, ts))
        elif stack:
            fs, entered = stack.pop()
            act = active[tid]
            left = act[fs.fid] - 1
            act[fs.fid] = left
            if left == 0:
                fs.total_ns += ts - entered
        n += 1
        if progress is not None and n % 1_000_000 == 0:
            progress(n)
    for t in threads.values():
        t.traced_ns = t.last_ts - (t.first_ts or 0) - t.gap_ns
    return threads


def merged(threads: Dict[int, ThreadStats]) -> ThreadStats:
    """All threads as one: times and calls summed per function."""
    out = ThreadStats(0)
    for t in threads.values():
        out.traced_ns += t.traced_ns
        out.gap_ns += t.gap_ns
        out.outside_ns += t.outside_ns
        out.dropped += t.dropped
        for fid, fs in t.functions.items():
            acc = out.functions.get(fid)
            if acc is None:
                acc = out.functions[fid] = FunctionStats(fid)
            acc.add(fs)
    return out
