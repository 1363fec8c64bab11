"""`fasttrace convert`'s filters: a trace seen through a scope (fasttrace._scope), a time window
and a choice of threads, which every exporter reads as it reads a trace.

Filtered(trace, ...) has the trace's attributes, but:

* events(): the calls and returns of functions out of scope are left out, and so are those
  deeper than max_depth frames *kept* (a return goes iff its call went, so nesting stays
  balanced); events outside the window [t0, t1] are left out, and the frames open at an edge
  are opened at t0 and closed at t1 by synthetic events; with min_duration, calls shorter
  than it (after the window's cut) are left out with their returns, their time staying their
  parent's (each thread's calls wait in a pending stack until their return says how long
  they were; see docs/scope-design.md, "min_duration").
* samples(): samples outside the window or of other threads are left out; a stack keeps its
  frames in scope (a sample with none left is left out) and then its outermost max_depth.
* threads: the threads kept (merge: one thread, "all threads", that every sample is given to).
* aggregate's call tree (collapsed, pprof): folded over the window, then CallTree.pruned().

Times are ns since the trace's start, as the exporters' timestamps.
"""

from __future__ import annotations

from collections import namedtuple

from fasttrace._calltree import CallTree

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

    from fasttrace._scope import Scope
    from fasttrace._trace import Trace

#: A thread of a merged output (the attributes of fasttrace._core.Thread).
MergedThread = namedtuple("MergedThread", ["id", "ident", "native_id", "name"])
MERGED_NAME = "all threads"


class Event:
    """A call or return made here, with the attributes of fasttrace._core.Event."""

    __slots__ = ("kind", "ts", "thread", "function", "synthetic", "dropped", "start_ts")

    def __init__(self, kind: str, ts: int, thread: int, function: Any) -> None:
        self.kind, self.ts, self.thread, self.function = kind, ts, thread, function
        self.synthetic = True
        self.dropped = 0
        self.start_ts = ts


class Sample:
    """A sample with its stack trimmed, with the attributes of fasttrace._core.Sample."""

    __slots__ = ("ts", "thread", "stack", "idle", "in_call", "torn", "weight_ns")

    def __init__(self, s: Any, thread: int, stack: Tuple[Any, ...]) -> None:
        self.ts, self.thread, self.stack = s.ts, thread, stack
        self.idle, self.in_call, self.torn, self.weight_ns = s.idle, s.in_call, s.torn, \
            s.weight_ns


def _is_call(kind: str) -> bool:
    return kind == "call" or kind == "c_call"


def _is_return(kind: str) -> bool:
    return kind == "return" or kind == "c_return"


def _closing(call: Any, ts: int) -> Event:
    return Event("c_return" if call.function.is_c else "return", ts, call.thread,
                 call.function)


class Filtered:
    """A trace as the filters leave it (see the module docstring)."""

    def __init__(self, trace: Trace, scope: Scope, threads: Optional[Set[int]] = None,
                 window: Optional[Tuple[Optional[int], Optional[int]]] = None,
                 merge: bool = False) -> None:
        self.trace = trace
        self.scope = scope
        self.thread_ids = threads
        self.window = window if window is not None and window != (None, None) else None
        self.merge = merge

    def __getattr__(self, name: str) -> Any:
        return getattr(self.trace, name)

    @property
    def threads(self) -> List[Any]:
        kept = [t for t in self.trace.threads
                if self.thread_ids is None or t.id in self.thread_ids]
        if self.merge and kept:
            first = min(kept, key=lambda t: t.id)
            return [MergedThread(first.id, None, None, MERGED_NAME)]
        return kept

    # ---- call tree (collapsed, pprof) --------------------------------------------------------

    def call_tree(self, progress: Any = None) -> CallTree:
        tree = CallTree.build(self.trace, self.window, progress,
                              min_duration_ns=self.scope.min_duration_ns)
        fn = self.trace.function
        return tree.pruned(lambda fid: self.scope.matches(fn(fid)), self.scope.max_depth,
                           self.thread_ids, self.merge)

    # ---- events (chrome, perfetto, speedscope) ------------------------------------------------

    def events(self, thread: Optional[int] = None, gaps: bool = False) -> Iterator[Any]:
        out = self._scoped(self.trace.events(thread, gaps))
        if self.window is not None:
            out = self._windowed(out, *self.window)
        if self.scope.min_duration_ns > 0:
            out = self._long(out, self.scope.min_duration_ns)
        return out

    def _scoped(self, events: Iterator[Any]) -> Iterator[Any]:
        matches, limit, threads = self.scope.matches, self.scope.max_depth, self.thread_ids
        if limit is None:
            limit = 1 << 62
        if not self.scope.patterns and limit == 1 << 62 and threads is None:
            yield from events
            return
        open_: Dict[int, List[bool]] = {}  # thread -> kept?, per open frame
        depths: Dict[int, int] = {}  # thread -> frames kept open
        for e in events:
            tid = e.thread
            if threads is not None and tid not in threads:
                continue
            k = e.kind
            if _is_call(k):
                d = depths.get(tid, 0)
                keep = d < limit and matches(e.function)
                open_.setdefault(tid, []).append(keep)
                if keep:
                    depths[tid] = d + 1
                    yield e
            elif _is_return(k):
                st = open_.get(tid)
                if not st:
                    continue  # an orphan: whether its call was in scope is unknown
                if st.pop():
                    depths[tid] -= 1
                    yield e
            else:
                yield e

    @staticmethod
    def _windowed(events: Iterator[Any], t0: Optional[int], t1: Optional[int]
                  ) -> Iterator[Any]:
        lo = t0 if t0 is not None else -(1 << 62)
        hi = t1 if t1 is not None else 1 << 62
        open_: Dict[int, List[Any]] = {}  # thread -> its open calls
        state: Dict[int, int] = {}  # thread -> 0 before the window, 1 in it, 2 after it
        for e in events:
            tid, ts = e.thread, e.ts
            s = state.get(tid, 0)
            if s == 2:
                continue
            st = open_.setdefault(tid, [])
            if s == 0 and ts >= lo:
                for call in st:  # open at the window's start: opened there
                    yield Event(call.kind, lo, tid, call.function)
                s = state[tid] = 1
            if s == 1 and ts > hi:
                for call in reversed(st):  # open at its end: closed there
                    yield _closing(call, hi)
                state[tid] = 2
                continue
            k = e.kind
            if _is_call(k):
                st.append(e)
            elif _is_return(k):
                if st:
                    st.pop()
                elif s == 0:
                    continue
            if s == 1:
                yield e

    @staticmethod
    def _long(events: Iterator[Any], min_ns: int) -> Iterator[Any]:
        pending: Dict[int, List[List[Any]]] = {}  # thread -> [call, written?] per open call
        for e in events:
            k = e.kind
            if _is_call(k):
                pending.setdefault(e.thread, []).append([e, False])
                continue
            if not _is_return(k):
                yield e
                continue
            st = pending.get(e.thread)
            if not st:
                yield e  # an orphan: the exporter leaves it out as ever
                continue
            call, written = st.pop()
            if written:  # a callee long enough wrote it: it is as long at least
                yield e
                continue
            if e.ts - call.ts < min_ns:
                continue  # both left out: its time stays its parent's
            first = len(st)
            while first and not st[first - 1][1]:
                first -= 1
            for entry in st[first:]:  # its ancestors not yet written, outermost first
                yield entry[0]
                entry[1] = True
            yield call
            yield e

    # ---- samples ---------------------------------------------------------------------------

    def samples(self, thread: Optional[int] = None) -> Iterator[Any]:
        lo, hi = self.window if self.window is not None else (None, None)
        threads, matches, limit = self.thread_ids, self.scope.matches, self.scope.max_depth
        merged = self.threads[0].id if self.merge and self.threads else None
        trim = self.scope.patterns
        for s in self.trace.samples(thread):
            if threads is not None and s.thread not in threads:
                continue
            if (lo is not None and s.ts < lo) or (hi is not None and s.ts > hi):
                continue
            stack = s.stack
            if trim:
                stack = tuple(f for f in stack if f.id and matches(f))
                if not stack:
                    continue
            if limit is not None:
                stack = stack[:limit]
                if not stack:
                    continue
            if stack is not s.stack or merged is not None:
                yield Sample(s, s.thread if merged is None else merged, stack)
            else:
                yield s
