"""load(): a trace file as Python objects."""

from __future__ import annotations

import os
from collections import namedtuple

from fasttrace import _core
from fasttrace._tracer import SamplingStats, sampling_stats

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (~9 ms)
if TYPE_CHECKING:
    from typing import Any, Iterator, List, Mapping, Optional


# events: records in the file (the trailer's count when the trace ended cleanly);
# dropped: events lost to full buffers and to threads that got no buffer; truncated: the file
# ends early (the process was killed, or its tail is damaged); duration_ns: from start() to
# stop() (or to the last record); lost_threads: threads that got no buffer (out of memory).
Stats = namedtuple("Stats", ["events", "dropped", "truncated", "duration_ns", "lost_threads"],
                   defaults=(0,))

# A thread whose hook another tool replaced (sys.setprofile, cProfile, a debugger's frame
# evaluator): nothing of it after `ts` was recorded.
HookLost = namedtuple("HookLost", ["thread", "ts", "what"])


class Trace:
    """A loaded .ftrace file.  Events are decoded lazily, chunk by chunk, in native code."""

    def __init__(self, path: "str | os.PathLike[str]") -> None:
        self._file = _core.TraceFile(path)
        self.path: str = self._file.path
        self.header: Mapping[str, Any] = self._file.header
        #: why the file is marked truncated, or None
        self.damage: Optional[str] = self._file.damage
        f = self._file
        self.stats = Stats(
            events=f.trailer_events if f.complete else f.chunk_events,
            dropped=f.trailer_dropped if f.complete else 0,
            truncated=f.truncated,
            duration_ns=f.duration_ns,
            lost_threads=f.lost_threads,
        )
        #: threads whose hook another tool replaced while tracing (HookLost tuples)
        self.hook_lost: List[HookLost] = [HookLost(*h) for h in f.hook_lost]

    @property
    def threads(self) -> List["_core.Thread"]:
        return list(self._file.threads.values())

    @property
    def functions(self) -> List["_core.Function"]:
        return [f for f in self._file.functions if f is not None]

    def function(self, fid: int) -> "_core.Function":
        if fid == 0:
            return _core.TRUNCATED  # the root of a sampled stack cut at the maximum depth
        f = self._file.functions[fid]
        if f is None:
            raise KeyError(fid)
        return f

    @property
    def mode(self) -> str:
        """"trace" (every call and return) or "sample" (stack samples)."""
        return str(self.header["mode"])

    @property
    def sampling(self) -> Optional["SamplingStats"]:
        """Sampling mode: requested and achieved rate, sample count and the sampler's own
        account (None in trace mode).  Without a clean stop (a killed process) the counts come
        from the samples in the file and rate_met from their timestamps."""
        info = self._file.sampling
        if info is None:
            return None
        stats = info.get("stats")
        if stats is None:  # no clean stop: count what is there
            n = 0
            ticks = set()  # one tick samples every thread at the same ts
            for s in self._file.samples():
                n += 1
                ticks.add(s.ts)
            stats = {"samples": n, "ticks": len(ticks), "duration_ns": self._file.duration_ns}
        return sampling_stats(float(info["rate_hz"]), info["clock"], stats)

    def samples(self, thread: Optional[int] = None) -> Iterator["_core.Sample"]:
        """Sampling mode: every sample in time order (each has ts, thread, stack (root first),
        idle, in_call, torn and weight_ns).  Empty for a trace-mode file."""
        return self._file.samples(thread)

    def events(self, thread: Optional[int] = None, gaps: bool = False) -> Iterator["_core.Event"]:
        """Events in order within each thread (threads interleave chunk by chunk).

        thread: only this thread id.  gaps: also yield "gap" events where events were dropped.
        Frames open when the trace ended are closed at its end by synthetic returns.
        """
        return self._file.events(thread, gaps)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Trace":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<fasttrace.Trace {self.path!r} events={self.stats.events} "
                f"threads={len(self._file.threads)} truncated={self.stats.truncated}>")


def load(path: "str | os.PathLike[str]") -> Trace:
    """Load a .ftrace file.  Raises FormatError (with the offset and the reason) if it is
    malformed; a truncated tail loads what is intact and sets stats.truncated."""
    return Trace(path)
