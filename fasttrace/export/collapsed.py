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

A sampled trace (see `_samples`) gives the same lines, one per distinct stack of each thread,
with the same frame names and thread roots; `<waiting>` ends the stacks of samples that waited
and `<truncated>` starts those cut at the maximum depth:

    MainThread;main (app.py:10);work (app.py:3);<waiting> 50000000

* The value is the samples' summed weight in **nanoseconds** (wall clock: the ticks' intervals;
  cpu clock: CPU time), not their count: the unit stays the one of trace mode, so files of
  both modes compare and a flame graph reads in time whatever the rate was (the count is the
  weight over the sampling period, give or take late ticks; pprof has both).  Stacks whose
  weight is 0 are left out.

A multi-process trace (fasttrace.ProcessSet) gives each process's lines, processes in their
order, under a root frame that names the process, `label (pid N)` (its command line, short):

    app.py serve (pid 4120);MainThread;main (app.py:10);work (app.py:3) 50123456
"""

from __future__ import annotations

from fasttrace._processes import ProcessSet
from fasttrace.export import _samples
from fasttrace.export._stacks import aggregate, combine, frame_name, lazy_output, parts
from fasttrace.export._stacks import sanitise, summary, thread_labels

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Dict, List, Optional, Union

    from fasttrace._trace import Trace
    from fasttrace.export._stacks import Output, ProgressCallback

LINES_PER_WRITE = 4096


def write(trace: Union[Trace, ProcessSet], out: Output, *,
          progress: Optional[ProgressCallback] = None, per_thread: bool = True
          ) -> Dict[str, Any]:
    """Writes the folded stacks of `trace` (a Trace, or a ProcessSet: each process's stacks
    under a root frame that names it) to `out` (a path or a file).  Returns a summary: lines,
    threads, stacks, self_ns (the sum of the weights), gaps, dropped, gap_ns (a sampled trace:
    lines, unit and _samples.Samples.summary(); a ProcessSet: those summed, and processes)."""
    results = []
    with lazy_output(out) as output:  # opened once the first part is read
        for process, t, p in parts(trace, progress):
            root = "" if process is None else sanitise(process.name) + ";"
            write_part = _write_samples if t.mode == "sample" else _write_trace
            results.append(write_part(t, output, p, per_thread, root))
    if not isinstance(trace, ProcessSet):
        return results[0]
    return combine(results, processes=len(results))


def _write_trace(trace: Trace, output: Callable[[], IO[bytes]],
                 progress: Optional[ProgressCallback], per_thread: bool, root: str
                 ) -> Dict[str, Any]:
    stacks = aggregate(trace, progress)
    f = output()
    names = {fn.id: sanitise(frame_name(fn)) for fn in trace.functions}
    labels = {tid: sanitise(name) for tid, name in thread_labels(trace).items()}
    merged: Dict[str, int] = {}  # per_thread=False: stack -> weight, in first-seen order
    lines = 0
    buf: List[str] = []
    for tid, node in stacks.nodes():
        weight = stacks.self_ns[node]
        if not weight:
            continue
        frames = [names[fid] for fid in reversed(stacks.stack(node))]
        if not per_thread:
            key = root + ";".join(frames)
            merged[key] = merged.get(key, 0) + weight
            continue
        buf.append(f"{root}{labels[tid]};{';'.join(frames)} {weight}\n")
        if len(buf) >= LINES_PER_WRITE:
            f.write("".join(buf).encode("utf-8"))
            lines += len(buf)
            buf.clear()
    buf.extend(f"{key} {weight}\n" for key, weight in merged.items())
    f.write("".join(buf).encode("utf-8"))
    lines += len(buf)
    return summary(stacks, format="collapsed", unit="nanoseconds", lines=lines)


def _write_samples(trace: Trace, output: Callable[[], IO[bytes]],
                   progress: Optional[ProgressCallback], per_thread: bool, root: str
                   ) -> Dict[str, Any]:
    samples = _samples.Samples(trace, progress)
    stacks = _samples.aggregate(samples)
    labels = {tid: sanitise(name) for tid, name in thread_labels(trace).items()}
    names: Dict[_samples.Frame, str] = {}
    folded: Dict[str, int] = {}  # line without its weight -> weight, in first-seen order
    for (tid, stack), (_, weight) in stacks.items():
        parts = [root + labels.get(tid, f"thread-{tid}")] if per_thread else \
            [root[:-1]] if root else []
        for fr in stack:
            name = names.get(fr)
            if name is None:
                name = names[fr] = sanitise(_samples.label(fr))
            parts.append(name)
        key = ";".join(parts)
        folded[key] = folded.get(key, 0) + weight  # per_thread=False: threads summed
    buf = [f"{key} {weight}\n" for key, weight in folded.items() if weight]
    f = output()
    for i in range(0, len(buf), LINES_PER_WRITE):
        f.write("".join(buf[i:i + LINES_PER_WRITE]).encode("utf-8"))
    lines = len(buf)
    return samples.summary(format="collapsed", unit="nanoseconds", lines=lines,
                           threads=len({tid for tid, _ in stacks}))
