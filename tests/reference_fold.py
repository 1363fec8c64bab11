"""The fold report used before the native call tree (fasttrace/_calltree.py), kept as the
tests' independent reference: per-function time and call counts from a trace's events, in
Python, one event at a time.  Windowed folds clip time to [w0, w1] as the native one does.

Self time of a function is the time it was the innermost frame.  Total time counts each
function once per outermost activation, so recursion is not double-counted.  Time during a
gap (dropped events) belongs to no function: the reader closes every frame at the gap's start
and reopens the stack after it.

Sampled traces (sample_stats) estimate the same quantities: each sample stands for its
weight_ns; self time is the weight of samples where the function is the leaf, total time the
weight of samples where it is anywhere on the stack (once per sample), and `calls` counts
samples instead, since a sampler sees no calls.

"""

from __future__ import annotations

from fasttrace._calltree import FunctionStats, ThreadStats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple

    from fasttrace._trace import Trace


def function_stats(trace: "Trace", thread: Optional[int] = None,
                   progress: Optional[Callable[[int], None]] = None,
                   w0: float = float("-inf"), w1: float = float("inf")) -> Dict[int, ThreadStats]:
    def clip(a: int, b: int) -> int:
        return int(max(0, min(b, w1) - max(a, w0)))

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
            lost = clip(e.start_ts, ts)
            t.gap_ns += lost
            if lost or (w0, w1) == (float("-inf"), float("inf")):
                t.dropped += e.dropped
            t.last_ts = ts
            continue
        if stack:
            stack[-1][0].self_ns += clip(t.last_ts, ts)
        else:
            t.outside_ns += clip(t.last_ts, ts)
        t.last_ts = ts
        if kind == "call" or kind == "c_call":
            fid = e.function.id
            fs = t.functions.get(fid)
            if fs is None:
                fs = t.functions[fid] = FunctionStats(fid)
            if not e.synthetic and w0 <= ts <= w1:
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
                fs.total_ns += clip(entered, ts)
        n += 1
        if progress is not None and n % 1_000_000 == 0:
            progress(n)
    for t in threads.values():
        t.traced_ns = clip(t.first_ts or 0, t.last_ts) - t.gap_ns
    return threads


def sample_stats(trace: "Trace", thread: Optional[int] = None,
                 progress: Optional[Callable[[int], None]] = None,
                 w0: float = float("-inf"), w1: float = float("inf")) -> Dict[int, ThreadStats]:
    """As function_stats, from the samples of a sampled trace (see the module docstring)."""
    threads: Dict[int, ThreadStats] = {}
    canonical: Dict[int, int] = {}  # fid -> first fid with the same name, file and line
    by_key: Dict[Tuple[str, str, int], int] = {}
    for f in trace.functions:
        canonical[f.id] = by_key.setdefault((f.qualname, f.filename, f.lineno), f.id)
    canonical[0] = 0  # the truncation marker
    n = 0
    for s in trace.samples(thread):
        if not w0 <= s.ts <= w1:
            continue
        t = threads.get(s.thread)
        if t is None:
            t = threads[s.thread] = ThreadStats(s.thread)
            t.first_ts = s.ts
        w = s.weight_ns
        t.samples += 1
        t.traced_ns += w
        t.last_ts = s.ts
        if s.idle:
            t.idle_ns += w
            if s.in_call:
                t.in_call_ns += w
        seen = set()
        fs = None
        for f in s.stack:
            fid = canonical.get(f.id, f.id)
            fs = t.functions.get(fid)
            if fs is None:
                fs = t.functions[fid] = FunctionStats(fid)
            if fid not in seen:
                seen.add(fid)
                fs.total_ns += w
                fs.calls += 1
        if fs is not None:
            fs.self_ns += w
        n += 1
        if progress is not None and n % 100_000 == 0:
            progress(n)
    return threads
