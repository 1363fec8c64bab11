"""speedscope JSON (https://www.speedscope.app/file-format-schema.json): a timeline per thread.

* `shared.frames`: one frame per traced function: `name` (qualname), and for Python functions
  `file` and `line` (its first line).
* `profiles`: one "evented" profile per thread that has events, threads in id order, named after
  the thread.  Events are "O" (open) and "C" (close) of a frame index, balanced and in time
  order, `at` in **nanoseconds since the trace started** (`unit: "nanoseconds"`), so threads
  line up.  `startValue`/`endValue` are the thread's first and last event.
* A gap where events were dropped has no frame open: the reader closes the stack where the gap
  starts and reopens it where the gap ends, and nothing is emitted for the gap itself.

The file is written while the trace is read, one thread at a time (each thread's events are
decoded on their own pass), so memory does not grow with the number of events.

A sampled trace (see `_samples` for the frames, `<waiting>` and `<truncated>`) gives one
"sampled" profile per thread that has samples, threads in id order, named after the thread:

* `shared.frames`: one per frame the samples use, as above (synthetic frames: a name only);
* `samples`: stacks as lists of frame indexes, **root first**, in time order, consecutive
  identical stacks merged into one (speedscope's time-order view draws them as one block
  anyway); `weights`: their summed weight_ns (`unit: "nanoseconds"`: wall or CPU time, after
  the trace's clock);
* `startValue` 0, `endValue` the sum of the weights: a sampled profile's axis is its weight,
  so threads do not line up in time (the Perfetto and Chrome exporters show that).

A multi-process trace (fasttrace.ProcessSet) gives every process's profiles, processes in
their order, each named `label (pid N): thread` (label: the command line, short); the shared
frames are every process's, one after the other.  Evented profiles' times are ns since the
first process started, so the processes' threads line up too.
"""

from __future__ import annotations

import json
from itertools import chain

from fasttrace._processes import ProcessSet
from fasttrace._version import __version__
from fasttrace.export import _samples
from fasttrace.export._stacks import Progress, batches, binary_output, combine, parts
from fasttrace.export._stacks import thread_labels

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Dict, Iterator, List, Optional, Union

    from fasttrace._core import Event
    from fasttrace._processes import Process
    from fasttrace._trace import Trace
    from fasttrace.export._samples import AnyFunction
    from fasttrace.export._stacks import Output, ProgressCallback

SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def _head(trace: Trace, frames: Any, name: Optional[str] = None) -> Dict[str, Any]:
    """The file's fields before its profiles: schema, name, exporter, the shared frames."""
    argv = trace.header.get("argv") or []
    return {
        "$schema": SCHEMA,
        "name": name or " ".join(argv) or trace.path,
        "exporter": f"fasttrace {__version__}",
        "shared": {"frames": [_frame(f) for f in frames]},
    }


def _frame(f: AnyFunction) -> Dict[str, Any]:
    if f.is_c or _samples.is_synthetic(f):
        return {"name": f.qualname or f.name}
    return {"name": f.qualname, "file": f.filename, "line": f.lineno}


class _Part:
    """One process (or the trace) to write: what must be known before the file's head (its
    frames, and for a sampled trace its samples), and where its frames start."""

    def __init__(self, process: Optional[Process], trace: Trace,
                 progress: Optional[ProgressCallback], base: int) -> None:
        self.process, self.trace, self.progress, self.base = process, trace, progress, base
        self.samples: Optional[_samples.Samples] = None
        self.counter: Optional[Progress] = None  # trace mode: events converted
        if trace.mode == "sample":
            self.samples = _samples.Samples(trace, progress)
            self.runs = _samples.runs(self.samples)
            self.frames: List[Any] = self.samples.frames.frames  # index = frame id - 1
        else:
            self.counter = Progress(progress, trace)
            self.frames = sorted(trace.functions, key=lambda f: f.id)

    def name(self, thread: str) -> str:
        return thread if self.process is None else f"{self.process.name}: {thread}"


def write(trace: Union[Trace, ProcessSet], out: Output, *,
          progress: Optional[ProgressCallback] = None) -> Dict[str, Any]:
    """Writes `trace` (a Trace, or a ProcessSet: profiles named `label (pid N): thread`) as
    speedscope JSON to `out` (a path or a file).  Returns a summary: profiles, frames, events
    (open and close events written), gaps, dropped (a sampled trace: profiles, stacks
    (samples written) and _samples.Samples.summary(); a ProcessSet: those summed, and
    processes)."""
    todo: List[_Part] = []
    frames: List[Any] = []
    for process, t, p in parts(trace, progress):  # sampled ones are read here
        todo.append(_Part(process, t, p, len(frames)))
        frames += todo[-1].frames
    name = None
    if isinstance(trace, ProcessSet):
        argv = todo[0].trace.header.get("argv") or []
        name = f"{' '.join(argv) or todo[0].trace.path} ({len(todo)} processes)"
    head = _head(todo[0].trace, frames, name)
    results = []
    profiles = 0
    with binary_output(out) as f:
        f.write(json.dumps(head)[:-1].encode("utf-8") + b',"profiles":[')
        for part in todo:
            write_part = _write_samples if part.samples is not None else _write_trace
            result = write_part(part, f, profiles)
            profiles += result["profiles"]
            results.append(result)
        # (keys in any order: this one only once there is a profile to point at)
        f.write(b'],"activeProfileIndex":0}\n' if profiles else b"]}\n")
    for part in todo:
        if part.counter is not None:
            part.counter.finish()
    if not isinstance(trace, ProcessSet):
        return results[0]
    return combine(results, processes=len(results))


def _write_trace(part: _Part, f: IO[bytes], before: int) -> Dict[str, Any]:
    """A trace-mode part's profiles, one per thread that has events; `before`: profiles
    written already."""
    trace, base = part.trace, part.base
    offset = 0 if part.process is None else part.process.start_ns
    # Each event is one %-format of a prebuilt string (the leading comma is cut from a
    # profile's first event)
    opens = {fn.id: ',{"type":"O","frame":%d,"at":%%d}' % (base + i)
             for i, fn in enumerate(part.frames)}
    closes = {fn.id: ',{"type":"C","frame":%d,"at":%%d}' % (base + i)
              for i, fn in enumerate(part.frames)}
    p = part.counter
    assert p is not None
    result: Dict[str, Any] = {"format": "speedscope", "profiles": 0, "frames": len(part.frames),
                              "events": 0, "gaps": 0, "dropped": 0}
    for tid, name in thread_labels(trace).items():
        events = trace.events(thread=tid, gaps=True)
        p.start_thread(tid)
        first = next(events, None)
        if first is None:
            continue
        if before + result["profiles"]:
            f.write(b",")
        result["profiles"] += 1
        profile = {"type": "evented", "name": part.name(name), "unit": "nanoseconds"}
        f.write(json.dumps(profile)[:-1].encode("utf-8") + b',"events":[')
        last = _write_events(f, chain((first,), events), opens, closes, p, result, offset)
        bounds = {"startValue": first.ts + offset, "endValue": last + offset}
        f.write(b"]," + json.dumps(bounds)[1:].encode("utf-8"))
    return result


def _write_samples(part: _Part, f: IO[bytes], before: int) -> Dict[str, Any]:
    """A sampled part's profiles, one per thread that has samples; `before`: profiles
    written already."""
    assert part.samples is not None
    profiles = written = 0
    labels = thread_labels(part.trace)  # after reading: samples can name threads the file did not
    base = part.base - 1  # frame id 1 is the part's first frame
    for tid in sorted(part.runs):
        name = part.name(labels.get(tid, f"thread-{tid}"))
        stacks, weights = part.runs[tid]
        profile = {"type": "sampled", "name": name, "unit": "nanoseconds", "startValue": 0,
                   "endValue": sum(weights)}
        f.write((b"," if before + profiles else b"") + json.dumps(profile)[:-1].encode("utf-8"))
        profiles += 1
        f.write(b',"samples":[')
        indexes: Dict[_samples.Stack, str] = {}
        for i in range(0, len(stacks), 4096):
            chunk = []
            for stack in stacks[i:i + 4096]:
                text = indexes.get(stack)
                if text is None:
                    text = indexes[stack] = "[%s]" % ",".join(str(fr.id + base) for fr in stack)
                chunk.append(text)
            f.write(((b"," if i else b"") + ",".join(chunk).encode("utf-8")))
        f.write(b'],"weights":' + json.dumps(weights, separators=(",", ":")).encode("utf-8")
                + b"}")
        written += len(stacks)
    return part.samples.summary(format="speedscope", profiles=profiles, stacks=written)


def _write_events(f: IO[bytes], events: Iterator[Event], opens: Dict[int, str],
                  closes: Dict[int, str], progress: Progress, result: Dict[str, Any],
                  offset: int = 0) -> int:
    """Writes one thread's events, at their ts + offset; returns the last event's ts."""
    stack: List[str] = []  # the close templates of the open frames
    leading_comma = True  # the first event written must not have one
    last = 0
    written = gaps = dropped = 0
    for batch in batches(events, progress):
        parts: List[str] = []
        add = parts.append
        for e in batch:
            k = e.kind
            if k == "return" or k == "c_return":
                if stack:  # else an orphan return: nothing open to close
                    add(stack.pop() % (e.ts + offset))
            elif k == "gap":
                gaps += 1
                dropped += e.dropped
            else:
                fid = e.function.id
                add(opens[fid] % (e.ts + offset))
                stack.append(closes[fid])
        last = e.ts  # batches are never empty
        if parts:
            written += len(parts)
            text = "".join(parts)
            if leading_comma:
                text, leading_comma = text[1:], False
            f.write(text.encode("utf-8"))
    if stack:  # cannot happen: the reader closes every frame at the end
        raise AssertionError(f"{len(stack)} frames left open")
    result["events"] += written
    result["gaps"] += gaps
    result["dropped"] += dropped
    return last
