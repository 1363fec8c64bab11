"""start(), stop() and is_tracing(): the module-level API, each a thin use of one Recorder.

The Recorder (fasttrace/_recorder.py) owns a capture from start to stop, and the registry of
the one that runs; the modes' own work (hooks per version, the sampler) is in
fasttrace/_capture.py, and what stop() returns in fasttrace/_summary.py.
"""

from __future__ import annotations

import os

from fasttrace import _recorder
from fasttrace._recorder import DEFAULT_BUFFER_SIZE, Recorder
from fasttrace._summary import Summary

# Imported from here by _trace.py and the tests.
from fasttrace._capture import TOOL_IDS as TOOL_IDS
from fasttrace._capture import _call_opcodes as _call_opcodes
from fasttrace._recorder import MIN_BUFFER_SIZE as MIN_BUFFER_SIZE
from fasttrace._summary import SamplingStats as SamplingStats
from fasttrace._summary import sampling_stats as sampling_stats

# As typing.TYPE_CHECKING, without importing typing (~9 ms): importing fasttrace stays cheap,
# since it runs in every traced process.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable, Optional

# The public name of a capture: what start() returns.
Session = Recorder


def is_tracing() -> bool:
    """True while a trace is running in this process."""
    return _recorder.active() is not None


def start(
    path: "str | os.PathLike[str]" = "fasttrace.ftrace",
    *,
    c_calls: bool = True,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    rate: Optional[float] = None,
    clock: Optional[str] = None,
    duration: Optional[float] = None,
    max_bytes: Optional[int] = None,
    max_seconds: Optional[float] = None,
    keep: Optional[int] = None,
    include: "Iterable[str]" = (),
    exclude: "Iterable[str]" = (),
    max_depth: Optional[int] = None,
    min_duration: Optional[float] = None,
    trim_stacks: bool = False,
) -> Session:
    """Start tracing into `path`.

    Trace mode (no rate): every call and return on every thread.
      c_calls: also record calls of C functions (builtins, method descriptors).
    Sampling mode (rate=N): every thread's Python stack N times a second (1 to 10000), read
      by a native thread that never takes the GIL; the program itself runs unhooked.
      clock: "wall" (default) samples every thread, waiting ones too; "cpu" only threads that
      used CPU since the previous tick, weighted by that CPU time.
    buffer_size: bytes of ring buffer per thread (sampling: for the sampler); a full ring
    drops records and counts them.
    duration: stop by itself after that many seconds and finish the file, the program going
      on; a later stop() returns the same Summary.
    max_bytes, max_seconds: rotate: write a series of files <stem>.0001<suffix>, ...,
      starting the next one when the current one holds max_bytes or has run max_seconds;
      keep=N keeps only the newest N.  fasttrace.load() reads the series as one trace.
    Scope (what is recorded; the file says what was left out):
      include, exclude: patterns, module names or dotted globs (`myapp`, `myapp.*`, `json`)
        or file globs (`*/site-packages/*`, `*/views.py`).  Exclude wins; with include,
        everything else is out.  A C function is in scope when its module is (`builtins`
        for builtins and their types' methods).  Trace mode leaves out-of-scope code unhooked
        after its first call (3.12+) or at one compare per call (3.9-3.11); sampling mode
        keeps the samples with an in-scope frame, whole, or with trim_stacks=True only
        their in-scope frames.
      max_depth: record at most this many nested frames; deeper calls are not recorded.
      min_duration: seconds; calls shorter than this are left out, their time staying in
        their caller's self time (trace mode).
    """
    scope: "dict[str, Any]" = dict(include=include, exclude=exclude, max_depth=max_depth,
                 min_duration=min_duration, trim_stacks=trim_stacks)
    if max_bytes is None and max_seconds is None and keep is None:
        return Recorder(path, c_calls=c_calls, buffer_size=buffer_size, rate=rate,
                        clock=clock, duration=duration, **scope).start()
    from fasttrace._rotation import RotatingRecorder

    return RotatingRecorder(path, max_bytes=max_bytes, max_seconds=max_seconds, keep=keep,
                            c_calls=c_calls, buffer_size=buffer_size, rate=rate, clock=clock,
                            duration=duration, **scope).start()


def stop() -> Summary:
    """Stop the running trace, finish its file and return a Summary."""
    return _recorder.stop_active(stacklevel=2)  # warnings name stop()'s caller
