"""load(): a trace file as Python objects."""

from __future__ import annotations

import os
from collections import namedtuple

from fasttrace import _core, _series
from fasttrace._errors import FormatError
from fasttrace._tracer import SamplingStats, sampling_stats

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (~9 ms)
if TYPE_CHECKING:
    from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

    Source = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]


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
    """A loaded trace: one .ftrace file, or the files of a rotated series read as one trace
    (see load()).  Events are decoded lazily, chunk by chunk, in native code."""

    def __init__(self, source: "Source") -> None:
        files, breaks, notes = _series.resolve(source, _core.read_header, _core.TraceFile)
        self._files: List[_core.TraceFile] = [f for _, _, f in files]
        self._breaks = breaks
        #: the files read, in series order (one, unless this is a rotated series)
        self.paths: List[str] = [p for p, _, _ in files]
        #: what is wrong with the series: files skipped (damaged, of another series, given
        #: twice), missing or cut short, each naming the file; empty for a single file
        self.series_problems: List[str] = notes
        first, last = self._files[0], self._files[-1]
        self._file = first
        self.path: str = first.path
        self.header: Mapping[str, Any] = first.header
        if len(self._files) == 1:
            self._functions: List[Any] = first.functions
            self._fid_kinds = first.fid_kinds
            self._stacks: List[Any] = first.stacks
            self._threads: Dict[int, Any] = first.threads
            self._sampling_info = first.sampling
            self._start_tick = self._end_tick = 0
            self._ns_per_tick = 0.0
            hook_lost = first.hook_lost
            damage = first.damage
        else:
            self._merge()
            self._start_tick, self._ns_per_tick, self._end_tick = _core.series_timeline(
                self._files)
            hook_lost = [(tid, _core.tick_ns(tick, self._start_tick, self._ns_per_tick), what)
                         for tid, tick, what in self._hook_lost_ticks()]
            damage = None if last.damage is None else f"{last.path}: {last.damage}"
        #: why the trace is marked truncated (its last file's damage), or None
        self.damage: Optional[str] = damage
        self.stats = Stats(
            events=sum(f.trailer_events if f.complete else f.chunk_events for f in self._files),
            dropped=sum(f.trailer_dropped if f.complete else 0 for f in self._files),
            truncated=last.truncated,
            duration_ns=self._duration_ns(),
            lost_threads=max(f.lost_threads for f in self._files),
        )
        #: threads whose hook another tool replaced while tracing (HookLost tuples)
        self.hook_lost: List[HookLost] = [HookLost(*h) for h in hook_lost]
        #: the capture's scope as given (include, exclude, max_depth, min_duration,
        #: trim_stacks), or None: everything was recorded
        self.scope: Optional[Dict[str, Any]] = first.scope

    def scope_text(self) -> str:
        """What the capture left out, in words ("" if nothing): `include myapp.*; exclude
        json; max depth 3; min duration 50 us; stacks trimmed to their in-scope frames`."""
        s = self.scope
        if not s:
            return ""
        from fasttrace._scope import patterns_text, seconds_text

        said = []
        if s.get("include"):
            said.append("include " + patterns_text(s["include"]))
        if s.get("exclude"):
            said.append("exclude " + patterns_text(s["exclude"]))
        if s.get("max_depth") is not None:
            said.append(f"max depth {s['max_depth']}")
        if s.get("min_duration") is not None:
            said.append(f"min duration {seconds_text(float(s['min_duration']))}")
        if s.get("trim_stacks"):
            said.append("stacks trimmed to their in-scope frames")
        return "; ".join(said)

    # ---- a series: the files' definitions as one table --------------------------------------

    def _merge(self) -> None:
        """Functions and sampled stacks defined again in later files must be the same (else
        FormatError naming the later file); threads defined again replace the earlier; the
        first SAMPLING counts, with the last file's SAMPLER_STATS."""
        functions: List[Any] = [None]
        kinds = bytearray(b"\xff")
        owner: List[str] = [""]  # index = function id: the file that defined it first
        stacks: List[Any] = [()]
        stack_owner: List[str] = [""]
        threads: Dict[int, Any] = {}
        sampling = None
        for f in self._files:
            for fid in range(1, len(f.functions)):
                fn = f.functions[fid]
                if fn is None:
                    continue
                if fid < len(functions) and functions[fid] is not None:
                    if _fields(functions[fid]) != _fields(fn):
                        raise FormatError(f.path, f.function_def_ends[fid],
                                          f"function id {fid} is defined differently in "
                                          f"{owner[fid]}")
                    continue
                while len(functions) <= fid:
                    functions.append(None)
                    kinds.append(0xFF)
                    owner.append("")
                functions[fid], kinds[fid], owner[fid] = fn, f.fid_kinds[fid], f.path
            for sid in range(1, len(f.stacks)):
                ids = tuple(fn.id for fn in f.stacks[sid])
                if sid < len(stacks):
                    if tuple(fn.id for fn in stacks[sid]) != ids:
                        raise FormatError(f.path, f.stack_def_ends[sid],
                                          f"stack id {sid} is defined differently in "
                                          f"{stack_owner[sid]}")
                    continue
                stacks.append(tuple(functions[i] if i else _core.TRUNCATED for i in ids))
                stack_owner.append(f.path)
            for tid, t in f.threads.items():
                if t.ident is not None or tid not in threads:  # a THREAD def, or first seen
                    threads[tid] = t
            if sampling is None and f.sampling is not None:
                sampling = dict(f.sampling)
        last = self._files[-1]
        if sampling is not None:
            sampling["stats"] = last.sampling["stats"] if last.sampling is not None else None
        self._functions, self._fid_kinds, self._stacks = functions, kinds, stacks
        self._threads, self._sampling_info = threads, sampling

    def _hook_lost_ticks(self) -> "List[Any]":
        out: List[Any] = []
        for f in self._files:
            for h in f.hook_lost_ticks:
                if h not in out:
                    out.append(h)
        return out

    def _duration_ns(self) -> int:
        if len(self._files) == 1:
            return int(self._files[0].duration_ns)
        return int(_core.tick_ns(self._end_tick, self._start_tick, self._ns_per_tick))

    # ---- what the trace holds ---------------------------------------------------------------

    @property
    def threads(self) -> List["_core.Thread"]:
        return list(self._threads.values())

    @property
    def functions(self) -> List["_core.Function"]:
        return [f for f in self._functions if f is not None]

    def function(self, fid: int) -> "_core.Function":
        if fid == 0:
            return _core.TRUNCATED  # the root of a sampled stack cut at the maximum depth
        f = self._functions[fid]
        if f is None:
            raise KeyError(fid)
        return f  # type: ignore[no-any-return]

    @property
    def complete(self) -> bool:
        """The trace stopped cleanly: its (last) file ends with a trailer."""
        return bool(self._files[-1].complete)

    @property
    def stacks(self) -> "List[Tuple[_core.Function, ...]]":
        """Sampling mode: the stacks samples refer to (index = stack id; 0 is empty)."""
        return self._stacks

    @property
    def thread_records(self) -> Dict[int, int]:
        """Thread id -> event records in its chunks (trace mode)."""
        out: Dict[int, int] = {}
        for f in self._files:
            for tid, n in f.thread_records.items():
                out[tid] = out.get(tid, 0) + n
        return out

    @property
    def mode(self) -> str:
        """"trace" (every call and return) or "sample" (stack samples)."""
        return str(self.header["mode"])

    @property
    def sampling(self) -> Optional["SamplingStats"]:
        """Sampling mode: requested and achieved rate, sample count and the sampler's own
        account (None in trace mode).  Without a clean stop (a killed process) the counts come
        from the samples in the file and rate_met from their timestamps."""
        info = self._sampling_info
        if info is None:
            return None
        stats = info.get("stats")
        if stats is None:  # no clean stop: count what is there
            n = 0
            ticks = set()  # one tick samples every thread at the same ts
            for s in self.samples():
                n += 1
                ticks.add(s.ts)
            stats = {"samples": n, "ticks": len(ticks), "duration_ns": self.stats.duration_ns}
        return sampling_stats(float(info["rate_hz"]), info["clock"], stats)

    def samples(self, thread: Optional[int] = None) -> Iterator["_core.Sample"]:
        """Sampling mode: every sample in time order (each has ts, thread, stack (root first),
        idle, in_call, torn and weight_ns).  Empty for a trace-mode file."""
        if len(self._files) == 1:
            return self._files[0].samples(thread)
        return _core.series_samples(self._files, self._stacks, self._threads, self._start_tick,
                                    self._ns_per_tick, thread)

    def events(self, thread: Optional[int] = None, gaps: bool = False) -> Iterator["_core.Event"]:
        """Events in order within each thread (threads interleave chunk by chunk; the files of
        a series one after the other).

        thread: only this thread id.  gaps: also yield "gap" events where events were dropped
        (and, in a series, where a file is missing or cut: dropped 0, the number unknown).
        Frames open when the trace ended are closed at its end by synthetic returns.
        """
        if len(self._files) == 1:
            return self._files[0].events(thread, gaps)
        return _core.series_events(self._files, self._breaks, self._functions, self._fid_kinds,
                                   self._start_tick, self._ns_per_tick, self._end_tick, thread,
                                   gaps)

    def fold_source(self) -> "Tuple[List[Any], List[bool], bytearray, int, float, int]":
        """What _core.fold_events() takes to fold this trace as events() decodes it: (files,
        breaks, fid kinds, start_tick, ns_per_tick, end_tick)."""
        if len(self._files) == 1:
            start, npt, end = self._files[0].timeline()
            return self._files, [False], self._fid_kinds, start, npt, end
        return (self._files, self._breaks, self._fid_kinds, self._start_tick, self._ns_per_tick,
                self._end_tick)

    def close(self) -> None:
        for f in self._files:
            f.close()

    def __enter__(self) -> "Trace":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        more = f" (+{len(self.paths) - 1} files)" if len(self.paths) > 1 else ""
        return (f"<fasttrace.Trace {self.path!r}{more} events={self.stats.events} "
                f"threads={len(self._threads)} truncated={self.stats.truncated}>")


def _fields(f: "_core.Function") -> "Tuple[Any, ...]":
    return (f.name, f.qualname, f.filename, f.lineno, f.module, bool(f.is_c))


def load(source: "Source") -> Trace:
    """Load a trace: a .ftrace file, or a rotated series of them as one trace.

    source: a path; a glob pattern (when no file has that name), such as "trace*.ftrace"; or a
    list of paths.  A path whose header says it is a file of a rotated series brings in the
    other files of that series from its directory (same suffix, same series id).  The files of
    a series are read in series order; files of another series are skipped, and files missing,
    damaged or cut short are named in Trace.series_problems (the rest loads; the threads'
    frames are closed before such a place and reopened after it).

    Raises FormatError (with the offset and the reason) if a single file is malformed, or if
    no file of a series loads; a truncated tail loads what is intact and sets
    stats.truncated."""
    return Trace(source)
