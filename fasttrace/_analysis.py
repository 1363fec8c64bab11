"""Per-function time and call counts from a trace, streamed (memory: functions x threads).

Self time of a function is the time it was the innermost frame.  Total time counts each
function once per outermost activation, so recursion is not double-counted.  Time during a
gap (dropped events) belongs to no function: the reader closes every frame at the gap's start
and reopens the stack after it.

Sampled traces (sample_stats) estimate the same quantities: each sample stands for its
weight_ns; self time is the weight of samples where the function is the leaf, total time the
weight of samples where it is anywhere on the stack (once per sample), and `calls` counts
samples instead, since a sampler sees no calls.

Several processes (a multi-process trace) are each folded on their own; merged_processes()
then adds up what is the same function in several of them.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

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


def sample_stats(trace: "Trace", thread: Optional[int] = None,
                 progress: Optional[Callable[[int], None]] = None) -> Dict[int, ThreadStats]:
    """As function_stats, from the samples of a sampled trace (see the module docstring)."""
    threads: Dict[int, ThreadStats] = {}
    canonical: Dict[int, int] = {}  # fid -> first fid with the same name, file and line
    by_key: Dict[Tuple[str, str, int], int] = {}
    for f in trace.functions:
        canonical[f.id] = by_key.setdefault((f.qualname, f.filename, f.lineno), f.id)
    canonical[0] = 0  # the truncation marker
    n = 0
    for s in trace.samples(thread):
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


def merged(threads: Dict[int, ThreadStats]) -> ThreadStats:
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
