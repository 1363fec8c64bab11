"""Recorder: one capture, from start to stop, and the registry of the one that runs.

The native core has one session per process, so one Recorder at a time is active: `_active`,
guarded by `_lock`.  fasttrace.start() and fasttrace.stop() (fasttrace/_tracer.py), the
at-exit handler and the fork handler all go through it.
"""

from __future__ import annotations

import _thread
import atexit
import errno
import os
import sys
import threading
import warnings

from fasttrace import _core
from fasttrace._capture import HIDDEN_CODES, SampleCapture, TraceCapture
from fasttrace._errors import TracingError
from fasttrace._output import open_output
from fasttrace._summary import Summary

# As typing.TYPE_CHECKING, without importing typing (~9 ms): importing fasttrace stays cheap,
# since it runs in every traced process.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable, Optional

    from fasttrace._scope import Scope

    from fasttrace._capture import _Capture

CHUNK_SIZE = 64 * 1024
DEFAULT_BUFFER_SIZE = 8 * 1024 * 1024  # per thread
MIN_BUFFER_SIZE = 4 * CHUNK_SIZE
# The ring is reserved per thread and committed as it fills: a size beyond physical memory can
# never be used and would fail (or be skipped) at a thread's first event, so start() refuses it.
# 2**40 caps it where physical memory cannot be read.
MAX_BUFFER_SIZE_CAP = 1 << 40

MIN_RATE = 1
MAX_RATE = 10000
CLOCKS = ("wall", "cpu")


def max_buffer_size() -> int:
    """The largest buffer_size start() accepts: this machine's physical memory."""
    try:
        phys = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        phys = 0
    return min(phys, MAX_BUFFER_SIZE_CAP) if phys > 0 else MAX_BUFFER_SIZE_CAP


def format_size(n: int) -> str:
    """n bytes as 8 MiB, 1.5 GiB, 512 KiB or 100 bytes."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} bytes"


def _check_rate(rate: Optional[float], clock: Optional[str]) -> None:
    if rate is None:
        if clock is not None:
            raise ValueError("clock= only applies to sampling mode: pass rate= as well")
        return
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise TypeError(f"rate must be a number of samples per second, not "
                        f"{type(rate).__name__}")
    if not MIN_RATE <= rate <= MAX_RATE:  # also rejects nan
        raise ValueError(f"rate must be between {MIN_RATE} and {MAX_RATE} samples per second, "
                         f"got {rate!r}")
    if clock is not None and clock not in CLOCKS:
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")


def _check_buffer_size(buffer_size: int) -> None:
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, int):
        raise TypeError(f"buffer_size must be an int, not {type(buffer_size).__name__}")
    if buffer_size < MIN_BUFFER_SIZE:
        raise ValueError(f"buffer_size must be at least {MIN_BUFFER_SIZE} bytes, got {buffer_size}")
    if buffer_size > max_buffer_size():
        raise ValueError(
            f"buffer_size must be at most {format_size(max_buffer_size())} (this machine's "
            f"memory; the ring is per thread), got {format_size(buffer_size)}")


class Recorder:
    """One capture: a trace (every call and return) or, given a rate, samples of every
    thread's stack.  fasttrace.start() makes one and starts it; fasttrace.Session is this class.

    Its life: Recorder(...) checks the arguments; start() opens the output, starts the native
    session, then the capture, and makes it the process's active recorder (one at a time: the
    native core has one session); stop() finishes and returns a Summary (also `.summary`);
    abandon() is the forked child's way out, which leaves the parent's file alone.  Leaving a
    `with` block stops it (and entering one starts it, if it was not started).  A Recorder
    records once: start it again and it refuses.

    What differs between the modes lives in the capture strategy (fasttrace/_capture.py), not
    in branches here: TraceCapture (a hook on every call: sys.monitoring, a frame evaluator or
    a profile function, as this Python offers) and SampleCapture (the native sampler).

    Where the bytes go is the subclasses' business, through these methods alone:
      _open_output()     the descriptor to write to (here a new file at `path`)
      _start_session(fd) the native session_start() call, which takes over fd
      _discard_output()  the capture could not start after the session did: drop the output
      describe()         what runs, as the error of a second start() names it
    A flight recorder (an in-memory ring, dumped on demand) or rotation (max_bytes,
    max_seconds, keep) overrides them and leaves the capture, the registry and stop() as they
    are.
    """

    def __init__(
        self,
        path: "str | os.PathLike[str]" = "fasttrace.ftrace",
        *,
        c_calls: bool = True,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        rate: Optional[float] = None,
        clock: Optional[str] = None,
        skip_caller_stack: bool = False,
        stop_codes: "tuple[Any, ...]" = (),
        duration: Optional[float] = None,
        include: "Iterable[str]" = (),
        exclude: "Iterable[str]" = (),
        max_depth: Optional[int] = None,
        min_duration: Optional[float] = None,
        trim_stacks: bool = False,
    ) -> None:
        """The arguments of fasttrace.start() (duration: stop by itself after that many
        seconds, the program going on), and for `fasttrace run`: skip_caller_stack
        leaves the calling thread's running frames out of the trace (`fasttrace run` starts
        inside its runner, whose frames are not the program's); in sampling mode stop_codes
        does that job: frames of these code objects, and all outer ones, are cut from every
        sample."""
        _check_rate(rate, clock)
        _check_buffer_size(buffer_size)
        #: what the trace records (fasttrace/_scope.py); None: everything
        self.scope: Optional[Scope] = _make_scope(include, exclude, max_depth, min_duration,
                                                  rate is not None, trim_stacks)
        self.trim_stacks = bool(trim_stacks)
        if duration is not None:
            if isinstance(duration, bool) or not isinstance(duration, (int, float)):
                raise TypeError(f"duration must be a number of seconds, not "
                                f"{type(duration).__name__}")
            if not 0 < duration < float("inf"):
                raise ValueError(f"duration must be a positive number of seconds, got "
                                 f"{duration!r}")
        #: seconds after which the capture stops by itself, or None
        self.duration = duration
        self._timer: Any = None  # held while the duration runs; released by any stop
        #: the duration ran out and stopped the capture
        self.expired = False
        self.path: str = os.fspath(path)
        self.buffer_size = buffer_size
        #: samples per second per thread in sampling mode, None in trace mode
        self.rate: Optional[float] = None
        self.clock = "wall"
        self._capture: _Capture
        if rate is None:
            self.c_calls = c_calls
            self._capture = TraceCapture(c_calls, skip_caller_stack,
                                         self.scope is not None and self.scope.patterns)
        else:
            self.c_calls = False
            self.rate = float(rate)
            self.clock = clock or "wall"
            self._capture = SampleCapture(self.rate, self.clock, tuple(stop_codes),
                                          self.scope, self.trim_stacks)
        self.pid = os.getpid()
        self.summary: Optional[Summary] = None
        self._started = False

    # What the capture chose at start(); None (or False) before.
    @property
    def hook(self) -> Optional[str]:
        """The interpreter hook in use: "monitoring", "eval_frame" or "profile"; "sampler" in
        sampling mode."""
        return self._capture.hook

    @property
    def tool_id(self) -> Optional[int]:
        """sys.monitoring tool id (3.12+), else None."""
        return self._capture.tool_id

    @property
    def hook_fallback(self) -> bool:
        """The frame evaluator was the choice, but another tool holds it: the plain hook runs."""
        return self._capture.hook_fallback

    # ---- life ---------------------------------------------------------------------------

    def start(self) -> Recorder:
        """Opens the output and starts capturing; TracingError if it cannot, or if a capture
        already runs in this process."""
        global _active
        with _lock:
            if _active is not None:
                raise TracingError(f"{_active.describe()}; call fasttrace.stop() first")
            if self._started:
                raise TracingError(f"this trace of {self.path!r} was started already: a "
                                   "Session records once; make another one")
            self._capture.prepare()
            _prepare_core()
            fd = self._open_output()
            self._set_scope()
            try:
                self._start_session(fd)
            except BaseException:
                _core.scope_clear()
                raise
            if self.scope is not None:
                _core.session_put_scope(self.scope.to_json(self.trim_stacks))
            try:
                self._capture.begin()
            except TracingError:
                # No output is left: it would hold nothing, only the header of a start that
                # never happened.
                _core.scope_clear()
                self._discard_output()
                raise
            self._started = True
            self.pid = os.getpid()
            _active = self
            atexit.register(_stop_at_exit)
            if self.duration is not None:
                self._start_timer(self.duration)
        return self

    def _set_scope(self) -> None:
        """Hands the scope to the hooks (trace mode), before the session starts.  The files
        of the frames running now are decided here, in Python, so that the hooks' snapshot
        of the running stacks finds their answers cached."""
        scope = self.scope
        if scope is None or self.rate is not None:
            _core.scope_clear()
            return
        if scope.patterns:
            for top in sys._current_frames().values():
                frame: Any = top
                while frame is not None:
                    scope.code_in_scope(frame.f_code.co_filename)
                    frame = frame.f_back
            _core.scope_set(scope.code_in_scope, scope.code_cache, scope.c_in_scope,
                            scope.c_cache, scope.max_depth, scope.min_duration_ns)
        else:
            _core.scope_set(None, None, None, None, scope.max_depth, scope.min_duration_ns)

    def _start_timer(self, seconds: float) -> None:
        # A bare thread whose only frame is in this file: fasttrace's own frames are not
        # recorded, so the timer leaves nothing in the trace but its thread's name.
        timer = _thread.allocate_lock()
        timer.acquire()
        self._timer = timer
        _thread.start_new_thread(self._expire_after, (timer, seconds))

    def _expire_after(self, timer: Any, seconds: float) -> None:
        if timer.acquire(timeout=seconds):
            return  # stopped before the time was up
        global _expired
        with _lock:  # an RLock: _stop takes it again
            if _active is not self:
                return  # stopped at the same moment
            try:
                _stop(self, stacklevel=1)
            except TracingError as e:  # the file failed: stop() tells, as it would have
                print(f"fasttrace: stopping after duration={seconds:g} s: {e}",
                      file=sys.stderr)
            self.expired = True
            _expired = self

    def stop(self) -> Summary:
        """Stops this capture, finishes its output and returns a Summary (the one it stopped
        with, if its duration ran out)."""
        if self.expired and self.summary is not None and _active is not self:
            return self.summary
        return _stop(self, stacklevel=2)

    def abandon(self) -> None:
        """In a forked child (the fork handler calls it): the writer thread did not survive
        the fork and the output belongs to the parent, so the child stops capturing without
        touching either.  In the process that started the capture, stop() ends it."""
        global _active
        if _active is not self:
            return
        if self.pid == os.getpid():
            raise TracingError(f"abandon() is for a forked child; this process started the "
                               f"trace of {self.path!r}: stop() ends it")
        _core.session_abandon()
        self._capture.abandon()
        _active = None
        atexit.unregister(_stop_at_exit)

    def __enter__(self) -> Recorder:
        if not self._started:
            self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if _active is self:
            try:
                _stop(self, stacklevel=2)
            except TracingError:
                if exc_type is None:
                    raise
                # the block's own exception is the one the user needs to see
                warnings.warn(f"fasttrace: {sys.exc_info()[1]}", RuntimeWarning, stacklevel=2)

    def __repr__(self) -> str:
        state = "running" if _active is self else "stopped" if self._started else "not started"
        return f"<fasttrace.Session {self.path!r} {state}>"

    # ---- where the bytes go (see the class docstring) -------------------------------------

    def describe(self) -> str:
        return f"a trace is already running (writing {self.path!r})"

    def _open_output(self) -> int:
        return open_output(self.path)

    def _start_session(self, fd: int) -> None:
        capture = self._capture
        try:
            _core.session_start(fd, capture.c_calls, capture.hook_id, CHUNK_SIZE,
                                self.buffer_size // CHUNK_SIZE, _command_line(), sys.version,
                                sys.hexversion, capture.sample, self.path,
                                capture.hook_fallback)
        except OSError as e:
            os.close(fd)
            if e.errno == errno.ENOMEM:
                raise TracingError(
                    f"cannot reserve a ring buffer of {format_size(self.buffer_size)} per "
                    "thread: out of memory (pass a smaller buffer_size)") from None
            raise TracingError(f"cannot start writing {self.path!r}: {e.strerror}") from None

    def _discard_output(self) -> None:
        # open_output replaced a symlink's target, not the link.
        target = os.path.realpath(self.path)
        if os.path.isfile(target):
            try:
                os.unlink(target)
            except OSError:
                pass  # a directory we may not change: the trace was written in place

    # ---- stopping -------------------------------------------------------------------------

    def _finish(self) -> "tuple[dict[str, Any], list[str]]":
        """Under the lock: the native session's last words, and notes to warn about."""
        capture = self._capture
        notes = capture.before_quiesce()
        _core.session_quiesce()
        capture.before_finish()
        result = _core.session_finish()
        capture.after_finish()
        return result, notes

    def _conclude(self, result: "dict[str, Any]", notes: "list[str]",
                  stacklevel: int) -> Summary:
        """After the lock: the Summary, and what the user must be told (warnings name the frame
        `stacklevel` frames above this method's caller)."""
        stacklevel += 1
        summary = Summary(
            path=self.path,
            events=result["events"],
            dropped=result["dropped"],
            duration_ns=result["duration_ns"],
            bytes=result["bytes"],
            threads=result["threads"],
            functions=result["functions"],
            sampling=self._capture.sampling_summary(result["sampler"]),
            lost_threads=result["lost_threads"],
            hook_lost_threads=result["hook_lost_threads"],
        )
        self.summary = summary
        if summary.sampling is not None and summary.sampling.rate_lowered:
            s = summary.sampling
            budget = f"{100 * s.cpu_budget:g}% of one CPU" if s.cpu_budget else "its CPU budget"
            warnings.warn(
                f"fasttrace: the sampler lowered its rate from {s.rate:g} to "
                f"{s.effective_rate:g} samples per second ({s.rate_lowered} "
                f"time{'s' if s.rate_lowered > 1 else ''}): reading every thread's stack at "
                f"that rate took more than {budget}, which it would have taken from the "
                f"program (too many threads or stacks too deep for the rate; achieved "
                f"{s.achieved_rate:.0f}/s on average)",
                RuntimeWarning, stacklevel=stacklevel)
        if result["error"]:
            raise TracingError(
                f"writing {self.path!r} failed at byte {result['error_offset']}: "
                f"{os.strerror(result['error'])}; tracing stopped there and the "
                f"{result['error_offset']} bytes before it are readable"
            )
        if self.scope is not None and self.scope.patterns and summary.events == 0:
            what = "call" if self.rate is None else "sample"
            notes = notes + [f"no {what} in scope ({self.scope.describe()}) was recorded: the "
                             f"trace {self.path!r} is empty (check the patterns: a module "
                             "name such as myapp or myapp.*, or a file glob such as "
                             "*/src/*)"]
        for note in _losses(summary) + notes:
            warnings.warn(f"fasttrace: {note}", RuntimeWarning, stacklevel=stacklevel)
        return summary

    def exit_note(self, summary: Summary) -> Optional[str]:
        """What stderr says when the capture was still running at exit (None: nothing)."""
        return (f"fasttrace: warning: the trace was still running at exit; it was stopped and "
                f"saved to {self.path} ({summary.events} "
                f"{'samples' if summary.sampling else 'events'})")

    def _not_running(self) -> str:
        if not self._started:
            return f"this trace of {self.path!r} was never started"
        if self.pid != os.getpid():
            return (f"this trace of {self.path!r} runs in process {self.pid}: a forked child "
                    "does not continue it")
        return f"this trace of {self.path!r} was stopped already"


# The duration's timer thread waits in _expire_after: samplers leave it out.
HIDDEN_CODES.append(Recorder._expire_after.__code__)

_lock = threading.RLock()
_active: Optional[Recorder] = None  # the one capture that runs in this process
_expired: Optional[Recorder] = None  # the last capture its duration stopped, until stop()


def active() -> Optional[Recorder]:
    """The capture that runs in this process, if any."""
    return _active


def _stop(recorder: Optional[Recorder], stacklevel: int) -> Summary:
    """Stops `recorder`, or with None whichever runs (fasttrace.stop()).  Its warnings name
    the frame that warnings.warn(..., stacklevel=stacklevel) would name, called by this
    function's caller."""
    global _active, _expired
    with _lock:
        running = _active
        if running is None and recorder is None and _expired is not None:
            # start(duration=...) stopped by itself: the stop() meant for it gets its summary
            done, _expired = _expired, None
            assert done.summary is not None
            return done.summary
        if running is None or (recorder is not None and recorder is not running):
            raise TracingError("fasttrace.stop() was called but no trace is running"
                               if recorder is None else recorder._not_running())
        result, notes = running._finish()
        _active = None
        _expired = None
        atexit.unregister(_stop_at_exit)
        if running._timer is not None:
            running._timer.release()  # the duration's thread leaves
            running._timer = None
    return running._conclude(result, notes, stacklevel + 1)


def stop_active(stacklevel: int = 1) -> Summary:
    """fasttrace.stop(): stops whichever capture runs (stacklevel as in _stop)."""
    return _stop(None, stacklevel + 1)


def _make_scope(include: "Iterable[str]", exclude: "Iterable[str]",
                max_depth: Optional[int], min_duration: Optional[float], sampling: bool,
                trim_stacks: bool) -> Optional[Scope]:
    """The capture's Scope, checked (ValueError before anything starts); None if nothing
    limits it."""
    if include == () and exclude == () and max_depth is None and min_duration is None \
            and not trim_stacks:
        return None  # (without importing the matcher: every traced process imports this)
    from fasttrace._scope import Scope

    scope = Scope(include, exclude, max_depth, min_duration)
    if sampling and min_duration is not None:
        raise ValueError("min_duration: for trace mode only, a sample has no duration "
                         "(fasttrace convert --min-duration filters a traced file)")
    if trim_stacks and not sampling:
        raise ValueError("trim_stacks: for sampling mode only: in trace mode out-of-scope "
                         "frames are never recorded")
    if trim_stacks and not scope.patterns:
        raise ValueError("trim_stacks: needs include or exclude patterns")
    if not scope.patterns and max_depth is None and min_duration is None:
        return None
    return scope


def _prepare_core() -> None:
    _core.hooks_init()  # fork and exit handlers; once per process
    # start() and stop() are not the program's: their frames, and what they call, are not
    # recorded (the code objects' filenames are these modules')
    _core.set_own_files(_own_files())


def refresh_own_files() -> None:
    """A module of fasttrace's own was imported (fasttrace.http): a capture that runs already
    treats its code as fasttrace's from now on (its code objects have not run yet)."""
    with _lock:
        if _active is not None:
            _core.set_own_files(_own_files())


def _own_files() -> "tuple[str, ...]":
    from fasttrace import _capture, _summary, _tracer  # loaded already: a dict lookup

    extra = [getattr(sys.modules.get(f"fasttrace.{m}"), "__file__", None)
             for m in ("_flight", "_rotation", "_children", "http._endpoints", "http._server",
                       "http._wsgi", "http._asgi")]  # once in use
    return tuple(f for f in (_tracer.__file__, __file__, _capture.__file__, _summary.__file__,
                             *extra) if f)


def _command_line() -> bytes:
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return b"".join(os.fsencode(a) + b"\0" for a in argv)


def _losses(summary: Summary) -> "list[str]":
    notes = []
    if summary.lost_threads:
        notes.append(f"{summary.lost_threads} thread(s) could not get a ring buffer (out of "
                     "memory): their events were not recorded and are counted as dropped")
    if summary.hook_lost_threads:
        notes.append(f"on {summary.hook_lost_threads} thread(s) another tool replaced "
                     "fasttrace's hook (sys.setprofile, cProfile or another profiler): "
                     "nothing after that was recorded there; `fasttrace info` shows where")
    return notes


def _stop_at_exit() -> None:
    running = _active
    if running is None:
        return
    try:
        summary = stop_active()
    except TracingError as e:
        print(f"fasttrace: {e}", file=sys.stderr)
        return
    note = running.exit_note(summary)
    if note:
        print(note, file=sys.stderr)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.RLock()  # the parent's may have been held by a thread that is gone
    if _active is not None:
        _active.abandon()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
