"""fasttrace: a tracer and sampling profiler for CPython with a native core.

    with fasttrace.start("out.ftrace"):            # trace mode: every call and return
        work()
    with fasttrace.start("out.ftrace", rate=100):  # sampling mode: stacks 100 times a second
        work()
    trace = fasttrace.load("out.ftrace")
    processes = fasttrace.load_processes("traces/")  # one file per process: a ProcessSet
"""

try:
    from fasttrace import _core  # noqa: F401  (the compiled module; fail early and clearly)
except ImportError as e:  # pragma: no cover - depends on how fasttrace was installed
    import os as _os

    raise ImportError(
        f"fasttrace's native module is missing from {_os.path.dirname(__file__)}: this looks "
        "like the source tree shadowing the installed package (run from another directory), or "
        f"an unbuilt checkout (pip install . or an editable install builds it): {e}"
    ) from e

from fasttrace._errors import FormatError, TracingError
from fasttrace._flight import FlightRecorder
from fasttrace._processes import Process, ProcessSet, load_processes
from fasttrace._trace import Trace, load
from fasttrace._summary import SamplingStats, Summary
from fasttrace._tracer import Session, is_tracing, start, stop
from fasttrace._version import __version__

__all__ = [
    "FlightRecorder",
    "FormatError",
    "Process",
    "ProcessSet",
    "Session",
    "SamplingStats",
    "Summary",
    "Trace",
    "TracingError",
    "__version__",
    "is_tracing",
    "load",
    "load_processes",
    "start",
    "stop",
]
