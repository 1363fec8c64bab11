"""What the exporters share: the call tree of a trace (aggregate(): fasttrace._calltree, one
native pass, for the collapsed and pprof exporters), outputs, progress, frame names and the
parts of a multi-process trace.  The tree's memory grows with the distinct stacks, functions
and threads, never with the number of events.

A multi-process trace (fasttrace.ProcessSet) is exported process by process (parts()): each
process's trace goes through the same fold as a single trace, and the exporter puts the
process where its format has a place for it.

Self time: between two consecutive events of a thread, the time goes to the stack that was open
(its innermost frame).  Time with no frame open is not attributed to any stack; that includes a
gap, because the reader closes every open frame where a gap starts and reopens the stack where it
ends.
"""

from __future__ import annotations

import contextlib
import io
import os
from itertools import chain, islice

from fasttrace._calltree import CallTree

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

    from fasttrace._core import Event
    from fasttrace._processes import Process, ProcessSet
    from fasttrace._trace import Trace
    from fasttrace.export._samples import AnyFunction

    Output = Union[str, "os.PathLike[str]", IO[bytes], IO[str]]
    ProgressCallback = Callable[[int, int], None]
    Part = Tuple[Optional[Process], Trace, Optional[ProgressCallback]]

BATCH = 1 << 16  # events between two progress reports


def sanitise(name: str) -> str:
    """A frame name safe for folded stacks: no `;` (the frame separator), no line breaks."""
    return name.replace(";", ",").replace("\n", " ").replace("\r", " ")


def frame_name(f: AnyFunction) -> str:
    """`qualname (file:line)` for Python functions, `qualname` for C functions."""
    if f.is_c:
        return f.qualname or f.name
    return f"{f.qualname} ({f.filename}:{f.lineno})"


def thread_labels(trace: Trace) -> Dict[int, str]:
    """Thread id -> its name; names shared by several threads get ` #id` to keep them apart."""
    threads = sorted(trace.threads, key=lambda t: t.id)
    seen: Dict[str, int] = {}
    for t in threads:
        seen[t.name] = seen.get(t.name, 0) + 1
    return {t.id: t.name if seen[t.name] == 1 else f"{t.name} #{t.id}" for t in threads}


def parts(source: Union[Trace, ProcessSet], progress: Optional[ProgressCallback] = None
          ) -> List[Part]:
    """What an exporter writes, one part per process: (process, its trace, its progress
    callback).  A Trace is one part with no process; a ProcessSet, a part per process in their
    order, each progress callback counting on from the processes before it, of the total."""
    from fasttrace._processes import ProcessSet

    if not isinstance(source, ProcessSet):
        return [(None, source, progress)]
    total = sum(max(int(p.trace.stats.events), 1) for p in source)
    out: List[Part] = []
    base = 0
    for p in source:
        callback = None
        if progress is not None:
            def callback(done: int, _total: int, base: int = base,
                         report: ProgressCallback = progress) -> None:
                report(min(base + done, total), total)
        out.append((p, p.trace, callback))
        base += max(int(p.trace.stats.events), 1)
    return out


def combine(results: List[Dict[str, Any]], **extra: Any) -> Dict[str, Any]:
    """The summaries of the parts of a multi-process export as one: counts summed, flags
    or-ed, anything else kept when the parts agree (else "mixed"); then `extra`."""
    out: Dict[str, Any] = {}
    for r in results:
        for k, v in r.items():
            if k not in out:
                out[k] = v
            elif isinstance(v, bool):
                out[k] = out[k] or v
            elif isinstance(v, int):
                out[k] += v
            elif out[k] != v:
                out[k] = "mixed"
    out.update(extra)
    return out


@contextlib.contextmanager
def binary_output(out: Output) -> Iterator[IO[bytes]]:
    """A binary stream for `out`: a path (created or replaced), a binary file, or a text file
    with an underlying `.buffer` (such as sys.stdout)."""
    if isinstance(out, (str, os.PathLike)):
        with open(out, "wb") as f:
            yield f
    elif isinstance(out, io.TextIOBase):
        buffer = getattr(out, "buffer", None)
        if buffer is None:
            raise TypeError(f"{out!r} has no binary buffer: pass a path or a binary file")
        out.flush()
        yield buffer
        buffer.flush()
    else:
        yield out  # type: ignore[misc]


@contextlib.contextmanager
def lazy_output(out: Output) -> Iterator[Callable[[], IO[bytes]]]:
    """binary_output(out), opened at the first call of the function this gives (so that a
    trace that fails to read before anything is written leaves no file behind)."""
    with contextlib.ExitStack() as stack:
        opened: List[IO[bytes]] = []

        def output() -> IO[bytes]:
            if not opened:
                opened.append(stack.enter_context(binary_output(out)))
            return opened[0]

        yield output


class Progress:
    """Calls `callback(done, total)` about every BATCH events and at the end: event records
    converted so far (the reader's synthetic events are not counted) and trace.stats.events."""

    def __init__(self, callback: Optional[ProgressCallback], trace: Trace) -> None:
        self.callback = callback
        self.records: Dict[int, int] = dict(trace.thread_records)  # thread id -> records
        self.total = int(trace.stats.events)
        self.base = 0  # records of the threads done
        self.thread = self.done = 0

    def start_thread(self, tid: int) -> None:
        self.base += self.thread
        self.thread = self.records.get(tid, 0)
        self.done = 0

    def add(self, n: int) -> None:
        self.done = min(self.done + n, self.thread)
        if self.callback is not None:
            self.callback(min(self.base + self.done, self.total), self.total)

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(self.total, self.total)


def batches(events: Iterator[Event], progress: Progress) -> Iterator[Iterator[Event]]:
    """`events` in consecutive slices of BATCH; consume each slice before taking the next."""
    while True:
        first = next(events, None)
        if first is None:
            return
        yield chain((first,), islice(events, BATCH - 1))
        progress.add(BATCH)


def aggregate(trace: Trace, progress: Optional[ProgressCallback] = None) -> CallTree:
    """The trace's call tree (fasttrace._calltree): one native pass."""
    total = int(trace.stats.events)

    def folded(n: int) -> None:
        if progress is not None:
            progress(min(n, total), total)

    from fasttrace.export._filter import Filtered

    callback = folded if progress is not None else None
    if isinstance(trace, Filtered):  # convert's filters: the window's tree, pruned
        tree = trace.call_tree(callback)
    else:
        tree = CallTree.build(trace, progress=callback)
    if progress is not None:
        progress(total, total)
    return tree


def summary(stacks: CallTree, **extra: Any) -> Dict[str, Any]:
    """The dict the collapsed and pprof writers return."""
    roots = {t.root for t in stacks.threads}
    return {
        **extra,
        "threads": len(stacks.threads),
        "stacks": len(stacks.parent) - len(roots),
        "self_ns": sum(w for n, w in enumerate(stacks.self_ns) if n not in roots),
        "gaps": stacks.gaps,
        "dropped": stacks.dropped,
        "gap_ns": stacks.gap_ns,
    }
