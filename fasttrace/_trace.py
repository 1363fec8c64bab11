"""load(): a trace file as Python objects."""

from __future__ import annotations

import os
from collections import namedtuple

from fasttrace import _core

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (~9 ms)
if TYPE_CHECKING:
    from typing import Any, Iterator, List, Mapping, Optional


# events: records in the file (the trailer's count when the trace ended cleanly);
# dropped: events lost to full buffers; truncated: the file ends early (the process was killed,
# or its tail is damaged); duration_ns: from start() to stop() (or the last clock record).
Stats = namedtuple("Stats", ["events", "dropped", "truncated", "duration_ns"])


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
        )

    @property
    def threads(self) -> List["_core.Thread"]:
        return list(self._file.threads.values())

    @property
    def functions(self) -> List["_core.Function"]:
        return [f for f in self._file.functions if f is not None]

    def function(self, fid: int) -> "_core.Function":
        f = self._file.functions[fid]
        if f is None:
            raise KeyError(fid)
        return f

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
