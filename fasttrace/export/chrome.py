"""Chrome Trace Event Format JSON (chrome://tracing, ui.perfetto.dev, speedscope), streamed.

    {"traceEvents": [
    {"ph":"M","name":"process_name","pid":P,"tid":0,"args":{"name":"app.py"}},
    {"ph":"M","name":"thread_name","pid":P,"tid":T,"args":{"name":"MainThread"}},
    {"ph":"B","pid":P,"tid":T,"cat":"python","name":"main","args":{"loc":"app.py:10"},"ts":0.000},
    {"ph":"E","pid":P,"tid":T,"ts":12.345},
    ...],
    "displayTimeUnit":"ns", "otherData":{...}}

* `ts` is in microseconds since the trace started, with three decimals (ns precision).  The
  absolute start is in otherData: start_wall_ns (CLOCK_REALTIME) and start_monotonic_ns.
* call/c_call -> "B" (cat "python" with args.loc = "file:line", or cat "c"), return/c_return
  -> "E".  The reader balances the nesting per thread, so B/E pair up; a return with nothing
  open on its thread (an orphan: its frame was entered before the trace started and missed by
  the stack snapshot) is left out.
* pid = the traced process id, tid = the thread's native id (its small id when unknown).
* A gap (dropped events) -> a thread-scoped instant "i" "fasttrace: N events dropped" at its
  start, args {dropped, gap_us}.  A truncated trace ends with a process-scoped instant
  "fasttrace: trace truncated" (args.damage), and otherData says truncated: true.
* Events are written as they are read (one per line), so memory does not grow with them.

A sampled trace (see `_samples` for the frames, `<waiting>` and `<truncated>`) becomes the same
B/E events, made from the samples as the Perfetto exporter does (_samples.slices(): a sample
covers its thread's stack until the next tick, consecutive samples that share a stack prefix
extend its slices), so chrome://tracing and Perfetto draw each thread's flame chart over
time.  Synthetic frames have cat "fasttrace" and no args.  The format's own "samples" and
"stackFrames" fields are not used: few viewers read them, while every one reads B/E.
otherData also has mode "sample" and `sampling` (trace.sampling as a dict).
"""

from __future__ import annotations

import io
import json
import os

from fasttrace._processes import ProcessSet, process_name
from fasttrace.export import _samples, _stacks
from fasttrace.export.perfetto import open_binary

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Dict, Iterable, List, Optional, Union

    from fasttrace._core import Event
    from fasttrace._processes import Process
    from fasttrace._trace import Trace
    from fasttrace.export._samples import AnyFunction, SliceEvent

    Output = Union[str, "os.PathLike[str]", IO[bytes], IO[str]]
    Progress = Optional[Callable[[int, int], None]]

EVENTS_PER_WRITE = 1 << 15
_NS = [".%03d}" % i for i in range(1000)]  # the ns digits of a ts, closing its event


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _us(ns: int) -> str:
    return "%s%d.%03d" % ("-" if ns < 0 else "", abs(ns) // 1000, abs(ns) % 1000)


def _begin(f: AnyFunction, head: str) -> str:
    """Everything of f's "B" event before its ts."""
    if _samples.is_synthetic(f):
        return f'{head}"cat":"{_samples.SYNTHETIC_CATEGORY}","name":{_dumps(f.qualname)},"ts":'
    if f.is_c:
        return f'{head}"cat":"c","name":{_dumps(f.qualname or f.name)},"ts":'
    loc = _dumps(f"{f.filename}:{f.lineno}")
    return f'{head}"cat":"python","name":{_dumps(f.qualname)},"args":{{"loc":{loc}}},"ts":'


def write(trace: Union[Trace, ProcessSet], out: Output, *, progress: Progress = None
          ) -> Dict[str, Any]:
    """Writes `trace` (a Trace, or a ProcessSet: one pid per process) to `out` (a path, or a
    file: binary, or text) as Chrome JSON.

    progress(done, total) is called every EVENTS_PER_WRITE events and at the end, with the
    events converted so far and trace.stats.events (done is capped at total: the reader adds
    synthetic events).  Returns {"format", "events" (B and E written), "gaps", "dropped",
    "orphans", "threads", "bytes", "truncated"}.  A sampled trace: progress counts samples,
    and the dict also has _samples.Samples.summary().  A ProcessSet: those summed, and
    processes.
    """
    if isinstance(out, io.TextIOBase) and getattr(out, "buffer", None) is None:
        return _write(trace, out.write, progress)  # a StringIO, say
    f, close = open_binary(out)
    try:
        return _write(trace, lambda s: f.write(s.encode("utf-8")), progress)
    finally:
        f.flush()
        if close:
            f.close()


def _write(source: Union[Trace, ProcessSet], emit: Callable[[str], Any], progress: Progress
           ) -> Dict[str, Any]:
    """The file: each process's events (a Trace: one process), then otherData."""
    parts: List[str] = ['{"traceEvents":[\n']
    results: List[Dict[str, Any]] = []
    size = 0
    for process, trace, p in _stacks.parts(source, progress):
        if results:
            parts.append(",\n")
        if trace.mode == "sample":
            samples = _samples.Samples(trace, p)
            result = _write_process(trace, process, parts, emit, None,
                                    _samples.trace_slices(samples))
            result = samples.summary(**result)
        else:
            result = _write_process(trace, process, parts, emit, p)
        size += result["bytes"]
        results.append(result)
    if isinstance(source, ProcessSet):
        other = _other_set(source)
    else:
        other = _other(source, sampled=source.mode == "sample")
    tail = f'\n],\n"displayTimeUnit":"ns",\n"otherData":{_dumps(other)}}}\n'
    chunk = "".join(parts) + tail
    emit(chunk)
    size += len(chunk)
    if not isinstance(source, ProcessSet):
        return dict(results[0], bytes=size)
    return _stacks.combine(results, bytes=size, processes=len(results))


def _other(trace: Trace, sampled: bool) -> Dict[str, Any]:
    """otherData of one trace: where and what it was, and the reader's account."""
    h = trace.header
    stats = trace.stats
    keys = ("pid", "argv", "python_version", "hook", "c_calls", "start_wall_ns",
            "start_monotonic_ns")
    other = {k: h.get(k) for k in keys}
    other.update(producer="fasttrace", events=stats.events, dropped=stats.dropped,
                 truncated=bool(stats.truncated), damage=trace.damage,
                 duration_ns=stats.duration_ns)
    if sampled:
        sampling = trace.sampling
        other.update(mode="sample", sampling=sampling._asdict() if sampling is not None else None)
    return other


def _other_set(processes: ProcessSet) -> Dict[str, Any]:
    """otherData of a multi-process trace: the set's start (time 0) and totals, and each
    process's own otherData with its place on the time axis (start_ns)."""
    stats = processes.stats
    each = []
    for p in processes:
        one = _other(p.trace, sampled=p.mode == "sample")
        one.pop("producer")
        each.append(dict(one, label=p.label, start_ns=p.start_ns, mode=p.mode))
    return {"producer": "fasttrace", "start_wall_ns": processes.start_wall_ns,
            "start_monotonic_ns": processes.start_monotonic_ns,
            "aligned_by": processes.aligned_by, "events": stats.events,
            "dropped": stats.dropped, "truncated": bool(stats.truncated),
            "duration_ns": stats.duration_ns, "problems": processes.problems,
            "processes": each}


def _write_process(trace: Trace, process: Optional[Process], parts: List[str],
                   emit: Callable[[str], Any], progress: Progress,
                   events: Optional[Iterable[Union[Event, SliceEvent]]] = None
                   ) -> Dict[str, Any]:
    """One process's metadata and events into `parts` (emitted every EVENTS_PER_WRITE), at
    its place on the time axis.  Trace mode: trace.events(); a sampled trace: `events` made
    from its samples.  "bytes" in the result: what was emitted."""
    h = trace.header
    pid = int(h["pid"])
    offset = 0 if process is None else process.start_ns
    total = max(int(trace.stats.events), 1)
    threads = sorted(trace.threads, key=lambda t: t.id)
    tids = {t.id: int(t.native_id) if t.native_id else t.id for t in threads}
    name = process_name(list(h.get("argv") or []), pid) if process is None else process.label
    meta = [{"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": name}}]
    for t in threads:
        for key, value in (("thread_name", {"name": t.name}), ("thread_sort_index",
                                                              {"sort_index": t.id})):
            meta.append({"ph": "M", "name": key, "pid": pid, "tid": tids[t.id], "args": value})
    parts.append(",\n".join(map(_dumps, meta)))
    size = 0

    heads: Dict[int, str] = {}  # thread id -> '\n{"ph":"B","pid":P,"tid":T,'
    begins: Dict[int, Dict[AnyFunction, str]] = {}
    ends: Dict[int, str] = {}
    cur = -1
    begin: Dict[AnyFunction, str] = {}
    end = head = ""
    last_us = -1
    us = ""
    ns_digits = _NS
    n = gaps = dropped = orphans = depth = 0
    depths: Dict[int, int] = {}  # thread id -> events open (but the current thread's)
    ts = offset
    w = parts.append
    for e in trace.events(gaps=True) if events is None else events:
        n += 1
        tid = e.thread
        if tid != cur:
            if tid not in heads:
                os_tid = tids.setdefault(tid, tid)
                heads[tid] = f',\n{{"ph":"B","pid":{pid},"tid":{os_tid},'
                ends[tid] = f',\n{{"ph":"E","pid":{pid},"tid":{os_tid},"ts":'
                begins[tid] = {}
            depths[cur] = depth
            cur, head, end, begin = tid, heads[tid], ends[tid], begins[tid]
            depth = depths.get(tid, 0)
        ts = e.ts + offset
        u = ts // 1000
        if u != last_us:
            last_us = u
            us = str(u)
        k = e.kind
        if k == "return" or k == "c_return":
            if not depth:  # an orphan: its frame was entered before the trace started
                orphans += 1
                continue
            depth -= 1
            w(end + us + ns_digits[ts - u * 1000])
        elif k == "call" or k == "c_call":
            depth += 1
            fn = e.function
            b = begin.get(fn)
            if b is None:
                b = begin[fn] = _begin(fn, head)
            w(b + us + ns_digits[ts - u * 1000])
        else:
            gaps += 1
            dropped += e.dropped
            gap = {"ph": "i", "s": "t", "cat": "fasttrace", "pid": pid, "tid": tids[tid],
                   "name": f"fasttrace: {e.dropped} events dropped",
                   "args": {"dropped": e.dropped, "gap_us": (e.ts - e.start_ts) / 1000}}
            w(f',\n{_dumps(gap)[:-1]},"ts":{_us(e.start_ts + offset)}}}')
        if len(parts) >= EVENTS_PER_WRITE:
            chunk = "".join(parts)
            emit(chunk)
            size += len(chunk)
            parts.clear()
            w = parts.append
            if progress is not None:
                progress(min(n, total), total)
    stats = trace.stats
    if stats.truncated:
        end_ts = max(ts, offset + int(stats.duration_ns))
        note = {"ph": "i", "s": "p", "cat": "fasttrace", "pid": pid, "tid": 0,
                "name": "fasttrace: trace truncated",
                "args": {"damage": trace.damage or "the file ends early"}}
        w(f',\n{_dumps(note)[:-1]},"ts":{_us(end_ts)}}}')
    if progress is not None:
        progress(total, total)
    return {
        "format": "chrome",
        "events": n - gaps - orphans,
        "gaps": gaps,
        "dropped": dropped,
        "orphans": orphans,
        "threads": len(heads),
        "bytes": size,
        "truncated": bool(stats.truncated),
    }
