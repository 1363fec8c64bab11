"""FlightRecorder: the last seconds of a capture, kept in memory and written out on request.

Go 1.25's runtime/trace.FlightRecorder, for Python: the writer thread keeps the newest chunks
in a ring of max_bytes (at least the last `seconds` when max_bytes allows it) instead of a
file, and dump(path) writes that window as an ordinary .ftrace file that every command reads.
Recording goes on during and after a dump; the program is not paused for the write (the
writer thread does it; the caller waits without the GIL).
"""

from __future__ import annotations

import _thread
import os
import signal as _signal
import sys
import threading
import time

from fasttrace import _core, _recorder
from fasttrace._capture import HIDDEN_CODES
from fasttrace._errors import TracingError
from fasttrace._output import open_output
from fasttrace._recorder import (
    CHUNK_SIZE,
    Recorder,
    _command_line,
    active,
    format_size,
)
from fasttrace._summary import Summary

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (~9 ms)
if TYPE_CHECKING:
    from typing import Any, Optional

DEFAULT_SECONDS = 10.0
DEFAULT_MAX_BYTES = 64 << 20
# Per thread: the writer drains a thread's ring into the flight ring every few milliseconds,
# so a small one is enough and keeps the recorder's memory near max_bytes.
DEFAULT_FLIGHT_BUFFER = 2 << 20


class FlightRecorder(Recorder):
    """Keeps the last `seconds` of a trace (or, with rate=, of samples) in memory.

        rec = fasttrace.FlightRecorder(seconds=10, max_bytes=64 << 20)
        rec.start()
        ...
        if request_was_slow:
            rec.dump("slow-request.ftrace")

    max_bytes bounds the memory of the window (the threads' own rings, buffer_size each, and
    the definitions table come on top).  signal=signal.SIGUSR2 dumps to a timestamped file in
    `directory` when the process gets that signal; dump_on_exception=True does the same when
    an uncaught exception ends the program.
    """

    def __init__(
        self,
        seconds: float = DEFAULT_SECONDS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        rate: Optional[float] = None,
        c_calls: bool = True,
        clock: Optional[str] = None,
        buffer_size: int = DEFAULT_FLIGHT_BUFFER,
        signal: Optional[int] = None,
        directory: "str | os.PathLike[str]" = ".",
        dump_on_exception: bool = False,
        skip_caller_stack: bool = False,
        stop_codes: "tuple[Any, ...]" = (),
        **scope: Any,
    ) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"seconds must be a number, not {type(seconds).__name__}")
        if not seconds > 0 or seconds == float("inf"):
            raise ValueError(f"seconds must be a positive number of seconds, got {seconds!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError(f"max_bytes must be an int, not {type(max_bytes).__name__}")
        super().__init__("<flight recorder>", c_calls=c_calls, buffer_size=buffer_size,
                         rate=rate, clock=clock, skip_caller_stack=skip_caller_stack,
                         stop_codes=stop_codes, **scope)
        # Room for one full chunk of every thread running now, and of the sampler: less
        # could not hold one chunk per thread, so the window would lose whole threads.
        least = CHUNK_SIZE * (threading.active_count() + 2)
        if max_bytes < least:
            raise ValueError(f"max_bytes must be at least {format_size(least)} (one "
                             f"{format_size(CHUNK_SIZE)} chunk per running thread, plus two), "
                             f"got {format_size(max_bytes)}")
        self.seconds = float(seconds)
        self.max_bytes = max_bytes
        self.directory = os.fspath(directory)
        if (signal is not None or dump_on_exception) and not os.access(self.directory,
                                                                       os.W_OK | os.X_OK):
            why = "does not exist" if not os.path.isdir(self.directory) else "is not writable"
            raise ValueError(f"the flight recorder's dump directory {self.directory!r} {why}")
        if signal is not None and (signal not in _signal.valid_signals() or
                                   signal in (_signal.SIGKILL, _signal.SIGSTOP)):
            raise ValueError(f"signal={signal!r} cannot trigger dumps: not a signal a handler "
                             "can catch")
        self.signal = signal
        self.dump_on_exception = dump_on_exception
        self._dump_lock = threading.Lock()
        self._prev_handler: Any = None
        self._handler_installed = False
        self._listening = False  # the signal wakes _listen (src/ft_siglisten.h)
        self._prev_excepthook: Any = None
        self.dumps: "list[Summary]" = []

    # ---- where the bytes go: a ring in memory, not a file -------------------------------

    def describe(self) -> str:
        return (f"a flight recorder is running ({self.seconds:g} s window, "
                f"{format_size(self.max_bytes)})")

    def _open_output(self) -> int:
        return -1

    def _start_session(self, fd: int) -> None:
        capture = self._capture
        try:
            _core.session_start(-1, capture.c_calls, capture.hook_id, CHUNK_SIZE,
                                self.buffer_size // CHUNK_SIZE, _command_line(), sys.version,
                                sys.hexversion, capture.sample, "", capture.hook_fallback,
                                flight_max_bytes=self.max_bytes, flight_seconds=self.seconds)
        except OSError as e:
            raise TracingError(f"cannot start the flight recorder: {e.strerror} "
                               f"({format_size(self.max_bytes)} ring)") from None

    def _discard_output(self) -> None:
        pass

    def start(self) -> "FlightRecorder":
        if self.signal is not None:
            # First: an impossible signal (SIGKILL), or a thread other than the main one,
            # fails here with nothing started.
            self._prev_handler = _signal.signal(self.signal, self._on_signal)
            self._handler_installed = True
        try:
            super().start()
        except BaseException:
            self._uninstall_triggers()
            raise
        if self.signal is not None:
            self._listen_for_signal(self.signal)
        if self.dump_on_exception:
            self._prev_excepthook = sys.excepthook
            sys.excepthook = self._on_exception
        return self

    def _finish(self) -> "tuple[dict[str, Any], list[str]]":
        self._uninstall_triggers()
        return super()._finish()

    def abandon(self) -> None:
        super().abandon()
        self._uninstall_triggers()

    def _listen_for_signal(self, signum: int) -> None:
        # The Python handler just installed stays in signal.getsignal(), so a program's own
        # signal.signal() replaces the trigger as before; the C handler under it is ours: a
        # thread of fasttrace's dumps, whatever the main thread is doing.  Where that cannot
        # be had (no POSIX semaphores), the Python handler does it.
        try:
            generation = _core.signal_listen(signum)
        except OSError:
            return
        self._listening = True
        try:
            _thread.start_new_thread(_listen, (self, generation,
                                               _signal.Signals(signum).name))
        except RuntimeError:  # no thread to be had: the Python handler it is
            _core.signal_unlisten()
            self._listening = False

    def _uninstall_triggers(self) -> None:
        if self._listening:
            _core.signal_unlisten()  # CPython's handler back; the listening thread ends
            self._listening = False
        if self.signal is not None and self._handler_installed:
            try:
                if _signal.getsignal(self.signal) == self._on_signal:
                    # None: the previous handler was not set from Python; the default it is
                    prev = self._prev_handler
                    _signal.signal(self.signal, _signal.SIG_DFL if prev is None else prev)
            except ValueError:
                pass  # not the main thread: the handler stays, and finds nothing running
            self._prev_handler = None
            self._handler_installed = False
        if self._prev_excepthook is not None:
            if sys.excepthook == self._on_exception:
                sys.excepthook = self._prev_excepthook
            self._prev_excepthook = None

    def exit_note(self, summary: Summary) -> Optional[str]:
        return None  # nothing was meant to be saved: a flight recorder ends silently

    # ---- dumps ----------------------------------------------------------------------------

    def dump(self, path: "str | os.PathLike[str]") -> Summary:
        """Writes the window to `path` as a .ftrace file and returns its Summary.  Recording
        goes on.  Dumps are serialized; TracingError if this recorder is not running."""
        path = os.fspath(path)
        # The registry's lock: stop() cannot free the threads' rings under the flush, and
        # waits for a dump in progress.  (Dumps are serialized by it, and by the writer.)
        with _recorder._lock:
            if active() is not self or self.pid != os.getpid():
                raise TracingError(
                    f"dump({path!r}): this flight recorder is not running "
                    f"({self._not_running() if active() is not self else 'forked'})")
            return self._dump(path)

    def _dump(self, path: str) -> Summary:
        with self._dump_lock:
            fd = open_output(path)
            try:
                if self.rate is None:
                    _core.session_flush_threads()  # what each thread recorded until now
                try:
                    r = _core.flight_dump(fd)
                except OSError as e:
                    raise TracingError(f"dump({path!r}): the flight recorder stopped meanwhile "
                                       f"({e.strerror})") from None
            finally:
                os.close(fd)
        if r["error"]:
            raise TracingError(
                f"dump({path!r}) failed at byte {r['error_offset']}: "
                f"{os.strerror(r['error'])}; the {r['error_offset']} bytes before it are "
                "readable, and recording goes on")
        summary = Summary(path=path, events=r["events"], dropped=0,
                          duration_ns=r["duration_ns"], bytes=r["bytes"],
                          threads=r["threads"], functions=r["functions"], sampling=None)
        self.dumps.append(summary)
        return summary

    def dump_to_directory(self, reason: str) -> Optional[Summary]:
        """Dumps to a timestamped file in `directory` and says so on stderr; errors are
        reported there too (a trigger has nobody else to tell)."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
        name = f"fasttrace-flight-{os.getpid()}-{stamp}-{time.time_ns() % 10**9:09d}.ftrace"
        path = os.path.join(self.directory, name)
        try:
            s = self.dump(path)
        except (TracingError, OSError) as e:
            print(f"fasttrace: flight recorder dump on {reason} failed: {e}", file=sys.stderr)
            return None
        print(f"fasttrace: flight recorder dumped the last {s.duration_ns / 1e9:.1f} s to "
              f"{path} on {reason} ({s.events} records)", file=sys.stderr)
        return s

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Only where no thread listens for the signal (see _listen_for_signal).
        # Not in the handler itself: the handler runs between two bytecodes of whatever the
        # main thread was doing, maybe a dump of its own (whose lock it would wait for).
        t = threading.Thread(target=self.dump_to_directory,
                             args=(_signal.Signals(signum).name,),
                             name="fasttrace-flight-dump", daemon=True)
        t.start()

    def _on_exception(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            self.dump_to_directory(f"uncaught {getattr(exc_type, '__name__', exc_type)}")
        finally:
            hook = self._prev_excepthook or sys.__excepthook__
            hook(exc_type, exc, tb)


def _listen(recorder: FlightRecorder, generation: int, reason: str) -> None:
    # A bare thread whose only frames are fasttrace's: trace mode records nothing of it, and
    # samplers leave it out (HIDDEN_CODES).
    while _core.signal_wait(generation):
        recorder.dump_to_directory(reason)


HIDDEN_CODES.append(_listen.__code__)
