"""fasttrace: a tracer and sampling profiler for CPython with a native core.

    with fasttrace.start("out.ftrace"):
        work()
    trace = fasttrace.load("out.ftrace")
"""

from fasttrace._errors import FormatError, TracingError
from fasttrace._trace import Trace, load
from fasttrace._tracer import Session, Summary, is_tracing, start, stop
from fasttrace._version import __version__

__all__ = [
    "FormatError",
    "Session",
    "Summary",
    "Trace",
    "TracingError",
    "__version__",
    "is_tracing",
    "load",
    "start",
    "stop",
]
