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
"""

from __future__ import annotations

import json
from itertools import chain

from fasttrace._version import __version__
from fasttrace.export import _samples
from fasttrace.export._stacks import Progress, batches, binary_output, thread_labels

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Dict, Iterator, List, Optional

    from fasttrace._core import Event
    from fasttrace._trace import Trace
    from fasttrace.export._samples import AnyFunction
    from fasttrace.export._stacks import Output, ProgressCallback

SCHEMA = "https://www.speedscope.app/file-format-schema.json"


def _head(trace: Trace, frames: Any) -> Dict[str, Any]:
    """The file's fields before its profiles: schema, name, exporter, the shared frames."""
    argv = trace.header.get("argv") or []
    return {
        "$schema": SCHEMA,
        "name": " ".join(argv) or trace.path,
        "exporter": f"fasttrace {__version__}",
        "shared": {"frames": [_frame(f) for f in frames]},
    }


def _frame(f: AnyFunction) -> Dict[str, Any]:
    if f.is_c or _samples.is_synthetic(f):
        return {"name": f.qualname or f.name}
    return {"name": f.qualname, "file": f.filename, "line": f.lineno}


def write(trace: Trace, out: Output, *, progress: Optional[ProgressCallback] = None
          ) -> Dict[str, Any]:
    """Writes `trace` as speedscope JSON to `out` (a path or a file).  Returns a summary:
    profiles, frames, events (open and close events written), gaps, dropped (a sampled trace:
    profiles, stacks (samples written) and _samples.Samples.summary())."""
    if trace.mode == "sample":
        return _write_samples(trace, out, progress)
    functions = sorted(trace.functions, key=lambda f: f.id)
    index = {f.id: i for i, f in enumerate(functions)}
    # Each event is one %-format of a prebuilt string (the leading comma is cut from a
    # profile's first event)
    opens = {f.id: ',{"type":"O","frame":%d,"at":%%d}' % index[f.id] for f in functions}
    closes = {f.id: ',{"type":"C","frame":%d,"at":%%d}' % index[f.id] for f in functions}
    head = _head(trace, functions)
    p = Progress(progress, trace)
    result: Dict[str, Any] = {"format": "speedscope", "profiles": 0, "frames": len(functions),
                              "events": 0, "gaps": 0, "dropped": 0}
    with binary_output(out) as f:
        f.write(json.dumps(head)[:-1].encode("utf-8") + b',"profiles":[')
        for tid, name in thread_labels(trace).items():
            events = trace.events(thread=tid, gaps=True)
            p.start_thread(tid)
            first = next(events, None)
            if first is None:
                continue
            if result["profiles"]:
                f.write(b",")
            result["profiles"] += 1
            profile = {"type": "evented", "name": name, "unit": "nanoseconds"}
            f.write(json.dumps(profile)[:-1].encode("utf-8") + b',"events":[')
            last = _write_events(f, chain((first,), events), opens, closes, p, result)
            bounds = {"startValue": first.ts, "endValue": last}
            f.write(b"]," + json.dumps(bounds)[1:].encode("utf-8"))
        # (keys in any order: this one only once there is a profile to point at)
        f.write(b'],"activeProfileIndex":0}\n' if result["profiles"] else b"]}\n")
    p.finish()
    return result


def _write_samples(trace: Trace, out: Output, progress: Optional[ProgressCallback]
                   ) -> Dict[str, Any]:
    samples = _samples.Samples(trace, progress)
    runs = _samples.runs(samples)
    frames = samples.frames.frames  # index = frame id - 1
    head = _head(trace, frames)
    profiles = written = 0
    with binary_output(out) as f:
        f.write(json.dumps(head)[:-1].encode("utf-8") + b',"profiles":[')
        labels = thread_labels(trace)  # after reading: samples can name threads the file did not
        for tid in sorted(runs):
            name = labels.get(tid, f"thread-{tid}")
            stacks, weights = runs[tid]
            profile = {"type": "sampled", "name": name, "unit": "nanoseconds", "startValue": 0,
                       "endValue": sum(weights)}
            f.write((b"," if profiles else b"") + json.dumps(profile)[:-1].encode("utf-8"))
            profiles += 1
            f.write(b',"samples":[')
            indexes: Dict[_samples.Stack, str] = {}
            for i in range(0, len(stacks), 4096):
                parts = []
                for stack in stacks[i:i + 4096]:
                    text = indexes.get(stack)
                    if text is None:
                        text = indexes[stack] = "[%s]" % ",".join(str(fr.id - 1) for fr in stack)
                    parts.append(text)
                f.write(((b"," if i else b"") + ",".join(parts).encode("utf-8")))
            f.write(b'],"weights":' + json.dumps(weights, separators=(",", ":")).encode("utf-8")
                    + b"}")
            written += len(stacks)
        f.write(b'],"activeProfileIndex":0}\n' if profiles else b"]}\n")
    return samples.summary(format="speedscope", profiles=profiles, stacks=written)


def _write_events(f: IO[bytes], events: Iterator[Event], opens: Dict[int, str],
                  closes: Dict[int, str], progress: Progress, result: Dict[str, Any]) -> int:
    """Writes one thread's events; returns the last event's ts."""
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
                    add(stack.pop() % e.ts)
            elif k == "gap":
                gaps += 1
                dropped += e.dropped
            else:
                fid = e.function.id
                add(opens[fid] % e.ts)
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
