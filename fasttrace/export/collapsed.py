"""Brendan Gregg's collapsed ("folded") stacks, for flamegraph.pl, speedscope, inferno & co.

One line per distinct stack of each thread, root first, then its self time in **nanoseconds**
(integers, so per-thread sums are exact):

    MainThread;main (app.py:10);work (app.py:3);time.sleep 50123456

* Frames: the function's qualname, plus ` (file:line)` (its first line) for Python functions.
  `;` in a name becomes `,` and line breaks become spaces.
* `per_thread=True` (the default) makes the thread's name the root frame (threads that share a
  name get ` #id`); with `per_thread=False` identical stacks of different threads are summed.
* Self time is the time a stack was the innermost one open (see `_stacks`).  Time with no frame
  open, which includes every gap where events were dropped, is in no line, so a thread's lines
  sum to its traced time minus its gaps.  Stacks with no self time are left out.
"""

from __future__ import annotations

from fasttrace.export._stacks import aggregate, binary_output, frame_name, sanitise, summary
from fasttrace.export._stacks import thread_labels

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

    from fasttrace._trace import Trace
    from fasttrace.export._stacks import Output, ProgressCallback

LINES_PER_WRITE = 4096


def write(trace: Trace, out: Output, *, progress: Optional[ProgressCallback] = None,
          per_thread: bool = True) -> Dict[str, Any]:
    """Writes the folded stacks of `trace` to `out` (a path or a file).  Returns a summary:
    lines, threads, stacks, self_ns (the sum of the weights), gaps, dropped, gap_ns."""
    stacks = aggregate(trace, progress)
    names = {f.id: sanitise(frame_name(f)) for f in trace.functions}
    labels = {tid: sanitise(name) for tid, name in thread_labels(trace).items()}
    merged: Dict[str, int] = {}  # per_thread=False: stack -> weight, in first-seen order
    lines = 0
    with binary_output(out) as f:
        buf: List[str] = []
        for tid, node in stacks.nodes():
            weight = stacks.self_ns[node]
            if not weight:
                continue
            frames = [names[fid] for fid in reversed(stacks.stack(node))]
            if not per_thread:
                key = ";".join(frames)
                merged[key] = merged.get(key, 0) + weight
                continue
            buf.append(f"{labels[tid]};{';'.join(frames)} {weight}\n")
            if len(buf) >= LINES_PER_WRITE:
                f.write("".join(buf).encode("utf-8"))
                lines += len(buf)
                buf.clear()
        buf.extend(f"{key} {weight}\n" for key, weight in merged.items())
        f.write("".join(buf).encode("utf-8"))
        lines += len(buf)
    return summary(stacks, format="collapsed", unit="nanoseconds", lines=lines)
