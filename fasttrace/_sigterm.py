"""The SIGTERM handlers that finish a trace before the process dies by the signal (`fasttrace
run`, and every process --follow-children traces).

A Python handler alone can leave the process running: CPython runs it in the main thread
between bytecodes, and a SIGTERM that lands just before the main thread blocks in a wait that
only a signal would end is never acted on.  multiprocessing's Pool.terminate() hung that way
on its workers.  The native guard (src/ft_sigterm.h) reminds the main thread until the handler
runs, and after two seconds lets the default action end the process, as it would have without
fasttrace.
"""

from __future__ import annotations

import signal

from fasttrace import _core

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable


def install(handler: "Callable[[int, Any], None]") -> Any:
    """signal.signal(SIGTERM, handler), guarded; returns the previous handler.  Main thread
    only (ValueError elsewhere, as signal.signal).  `handler` calls _core.sigterm_taken()
    first (a C call: no frame of fasttrace's in the program's trace)."""
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        _core.sigterm_guard(signal.SIGTERM)
    except OSError:
        pass  # not Linux, or no timer to be had: the handler alone, as before
    return previous

