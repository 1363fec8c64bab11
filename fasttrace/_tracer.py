"""start() and stop(): composing the native primitives of fasttrace._core.

Hook choice per version (bench/README.md, "The fastest hook on every version", has the
measurements, and docs/pep523-hook.md the 3.11 probe):
  3.12+      sys.monitoring, tool id 4 (or 3; see TOOL_IDS), C callbacks;
  3.11, 3.12 c_calls=False: a PEP 523 frame evaluator (3.11: it keeps the specializing
             interpreter on; 3.12: it costs less than sys.monitoring), unless another tool
             holds that slot;
  3.9-3.11   a C profile function on every thread, and threading.setprofile for new ones.
FASTTRACE_HOOK=eval_frame, profile or monitoring forces a hook where there is a choice (tests
and bench/ use it to cover and measure both paths).
"""

from __future__ import annotations

import atexit
import errno
import os
import sys
import threading
import warnings
from collections import namedtuple

from fasttrace import _core
from fasttrace._errors import TracingError
from fasttrace._output import open_output

# As typing.TYPE_CHECKING, without importing typing (~9 ms): importing fasttrace stays cheap,
# since it runs in every traced process.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional

CHUNK_SIZE = 64 * 1024
DEFAULT_BUFFER_SIZE = 8 * 1024 * 1024  # per thread
MIN_BUFFER_SIZE = 4 * CHUNK_SIZE
# The ring is reserved per thread and committed as it fills: a size beyond physical memory can
# never be used and would fail (or be skipped) at a thread's first event, so start() refuses it.
# 2**40 caps it where physical memory cannot be read.
MAX_BUFFER_SIZE_CAP = 1 << 40


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
# sys.monitoring tool ids that no standard tool claims (0 debugger, 1 coverage, 2 profiler as
# cProfile uses it, 5 optimizer), so that cProfile and profilers that follow the convention
# run beside fasttrace.  The first free one is taken.
TOOL_IDS = (4, 3)


# What stop() returns.  A namedtuple, not a dataclass: importing dataclasses costs ~15 ms,
# which would count as tracing overhead in every short traced process.
Summary = namedtuple(
    "Summary",
    ["path", "events", "dropped", "duration_ns", "bytes", "threads", "functions", "sampling",
     "lost_threads", "hook_lost_threads"],
    defaults=(None, 0, 0),
)
Summary.__doc__ = (
    "What stop() returns: path, events, dropped, duration_ns, bytes, threads, functions, in "
    "sampling mode `sampling` (a SamplingStats; None in trace mode), lost_threads (threads "
    "whose ring could not be allocated: their events are counted in dropped) and "
    "hook_lost_threads (threads whose hook another tool replaced: nothing after that was "
    "recorded there)."
)

# Sampling mode's account of itself.  rate_met is False when the sampler fell short of the
# requested rate (a loaded machine, stacks too deep or threads too many to read in one interval,
# or a rate it lowered itself, over its CPU budget): see sampling_stats.  The fields after
# `realtime` were added later, with defaults, so that files written before them still load.
SamplingStats = namedtuple(
    "SamplingStats",
    ["rate", "achieved_rate", "rate_met", "clock", "samples", "ticks", "late_ticks", "torn",
     "truncated", "dropped", "sampler_cpu_ns", "realtime", "reused", "rate_lowered",
     "effective_rate", "cpu_budget", "paused_ns"],
    defaults=(0, 0, None, None, 0),
)
SamplingStats.__doc__ = (
    "Sampling mode's account of itself: the requested and achieved rate, rate_met, the counts "
    "of ticks and samples, and since issue 8: reused (samples of threads that had not run "
    "since the previous tick, served without reading their stack), rate_lowered (times the "
    "sampler halved its rate, over its CPU budget), effective_rate (the rate in force at the "
    "end), cpu_budget (that budget, a share of one core) and paused_ns (time the sampler was "
    "stopped around fork()); None or 0 for files written before."
)

MIN_RATE = 1
MAX_RATE = 10000
CLOCKS = ("wall", "cpu")


def rate_shortfall_allowed(expected: float) -> float:
    """How many ticks below `expected` a sampler that keeps its rate may end, by chance.

    Intervals are uniform in [0.5, 1.5] x 1/rate, so the number of ticks in a span where
    `expected` are due varies with a standard deviation of sqrt(expected / 12), and the span's
    end cuts one interval short.  The allowance is the larger of 10 % (the documented
    tolerance, which is what counts on long runs) and 1 + 3 standard deviations: a 30 ms run
    at 100 Hz expects 3 ticks, and 2 is no sign of a problem, whereas 1 s at 1000 Hz with 850
    ticks is."""
    sd: float = (expected / 12) ** 0.5  # no math import: importing fasttrace stays cheap
    return max(0.1 * expected, 1 + 3 * sd)


def sampling_stats(rate: float, clock: str, raw: "dict[str, int]") -> SamplingStats:
    # Time stopped around fork() is not time the sampler was asked to tick in.  (The values
    # come from a file: a damaged one can hold a pause longer than the run.)
    active_ns = max(0, raw.get("duration_ns", 0) - raw.get("paused_ns", 0))
    seconds = active_ns / 1e9
    ticks = raw.get("ticks", 0)
    achieved = ticks / seconds if seconds > 0 else 0.0
    lowered = raw.get("rate_lowered", 0)
    expected = seconds * rate
    final_mhz = raw.get("final_rate_mhz")
    budget_ppm = raw.get("cpu_budget_ppm")
    return SamplingStats(
        rate=rate, achieved_rate=achieved,
        rate_met=not lowered and ticks >= expected - rate_shortfall_allowed(expected),
        clock=clock, samples=raw.get("samples", 0), ticks=ticks,
        late_ticks=raw.get("late_ticks", 0), torn=raw.get("torn", 0),
        truncated=raw.get("truncated", 0), dropped=raw.get("dropped", 0),
        sampler_cpu_ns=raw.get("sampler_cpu_ns", 0), realtime=bool(raw.get("realtime", 0)),
        reused=raw.get("reused", 0), rate_lowered=lowered,
        effective_rate=final_mhz / 1000 if final_mhz else None,
        cpu_budget=budget_ppm / 1e6 if budget_ppm else None,
        paused_ns=raw.get("paused_ns", 0),
    )


class Session:
    """A running trace.  Also a context manager: leaving the block stops the trace."""

    def __init__(self, path: str, c_calls: bool, buffer_size: int, hook: str,
                 rate: Optional[float] = None, clock: str = "wall") -> None:
        self.path = path
        self.c_calls = c_calls
        #: "monitoring", "eval_frame" or "profile": the interpreter hook in use; "sampler" in
        #: sampling mode
        self.hook = hook
        #: samples per second per thread in sampling mode, None in trace mode
        self.rate = rate
        self.clock = clock
        self.buffer_size = buffer_size
        self.pid = os.getpid()
        self.summary: Optional[Summary] = None
        self._prev_threading_profile: Any = None
        # `fasttrace run` leaves its own frames out of the calling thread's start-up stack
        self._skip_caller_stack = False
        self._stop_codes: "tuple[Any, ...]" = ()
        # thread starters replaced while this session runs: (module, name, original, wrapper)
        self._thread_starts: "list[tuple[Any, str, Any, Any]]" = []
        #: sys.monitoring tool id (3.12+), else None
        self.tool_id: Optional[int] = None
        self._monitoring_events = 0
        self._bootstrap: Any = None  # 3.9-3.11: what threading.setprofile was given
        #: the frame evaluator was the choice, but another tool holds it: the plain hook runs
        self.hook_fallback = False

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if _session is self:
            try:
                stop()
            except TracingError:
                if exc_type is None:
                    raise
                # the block's own exception is the one the user needs to see
                warnings.warn(f"fasttrace: {sys.exc_info()[1]}", RuntimeWarning, stacklevel=2)

    def __repr__(self) -> str:
        state = "running" if _session is self else "stopped"
        return f"<fasttrace.Session {self.path!r} {state}>"


_lock = threading.RLock()
_session: Optional[Session] = None
_disabled_call_sites = False  # a previous trace returned DISABLE somewhere


def is_tracing() -> bool:
    """True while a trace is running in this process."""
    return _session is not None


# Where there is a choice (c_calls=False on 3.11 and 3.12), the faster hook, the frame
# evaluator, is the default and FASTTRACE_HOOK names the other one (tests and bench/ use it to
# cover and measure both; bench/README.md, "The fastest hook on every version").  Otherwise
# there is one hook per version: the profile function before 3.12, sys.monitoring after.


def _choose_hook(c_calls: bool) -> "tuple[str, bool]":
    """(hook, fell_back): fell_back when the frame evaluator was the choice but another tool
    holds it (a debugger, a JIT): fasttrace never replaces it."""
    plain = "monitoring" if _core.USE_MONITORING else "profile"
    forced = os.environ.get("FASTTRACE_HOOK", "")
    if forced == "eval_frame" and not _core.HAS_EVAL_FRAME:
        why = ("it is new in 3.11" if sys.version_info < (3, 11) else
               "3.13 runs a class's Python __init__ without asking the frame evaluator"
               if sys.version_info < (3, 14) else
               "3.14+ closes generators without running their frames, and the evaluator is "
               "no faster than sys.monitoring there")
        raise TracingError(f"FASTTRACE_HOOK='eval_frame' is not offered on Python "
                           f"{sys.version_info[0]}.{sys.version_info[1]} ({why}); "
                           f"this Python's hook is {plain!r}")
    if forced not in ("", "eval_frame", plain):
        choices = f"'eval_frame' or {plain!r}" if _core.HAS_EVAL_FRAME else repr(plain)
        raise TracingError(f"FASTTRACE_HOOK={forced!r} is not a hook of this Python: {choices}")
    if c_calls or not _core.HAS_EVAL_FRAME:
        return plain, False  # the frame evaluator cannot see C calls
    want = forced or "eval_frame"
    if want == "eval_frame" and _core.eval_frame_taken():
        return plain, True
    return want, False


def _check_no_other_profiler(hook: str) -> None:
    other = sys.getprofile()
    if other is not None:
        raise TracingError(
            f"another profiler is active on this thread (sys.getprofile() is {other!r}); "
            "stop it before fasttrace.start()"
        )
    ident = _core.find_profiled_thread()
    if ident:
        raise TracingError(
            f"another profiler is installed on thread {ident} (a profile function is set); "
            "stop it before fasttrace.start()"
        )


def _free_tool_id() -> int:
    """The first of TOOL_IDS that no tool holds, or TracingError naming the holders."""
    holders = {i: sys.monitoring.get_tool(i) for i in TOOL_IDS}
    for i, holder in holders.items():
        if holder is None:
            return i
    taken = ", ".join(f"{i} by {h!r}" for i, h in holders.items())
    raise TracingError(f"no free sys.monitoring tool id for fasttrace (it uses {TOOL_IDS}; "
                       f"held: {taken}); stop one of those tools before fasttrace.start()")


def _command_line() -> bytes:
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return b"".join(os.fsencode(a) + b"\0" for a in argv)


def start(
    path: "str | os.PathLike[str]" = "fasttrace.ftrace",
    *,
    c_calls: bool = True,
    buffer_size: int = DEFAULT_BUFFER_SIZE,
    rate: Optional[float] = None,
    clock: Optional[str] = None,
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
    """
    return _start(path, c_calls, buffer_size, rate, clock=clock)


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


def _start(path: "str | os.PathLike[str]", c_calls: bool, buffer_size: int,
           rate: Optional[float], skip_caller_stack: bool = False,
           clock: Optional[str] = None, stop_codes: "tuple[Any, ...]" = ()) -> Session:
    """start(); skip_caller_stack leaves the calling thread's running frames out of the trace
    (`fasttrace run` starts inside its runner, whose frames are not the program's); in
    sampling mode stop_codes does that job: frames of these code objects, and all outer ones,
    are cut from every sample."""
    global _session
    _check_rate(rate, clock)
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, int):
        raise TypeError(f"buffer_size must be an int, not {type(buffer_size).__name__}")
    if buffer_size < MIN_BUFFER_SIZE:
        raise ValueError(f"buffer_size must be at least {MIN_BUFFER_SIZE} bytes, got {buffer_size}")
    if buffer_size > max_buffer_size():
        raise ValueError(
            f"buffer_size must be at most {format_size(max_buffer_size())} (this machine's "
            f"memory; the ring is per thread), got {format_size(buffer_size)}")
    path = os.fspath(path)
    with _lock:
        if _session is not None:
            raise TracingError(
                f"a trace is already running (writing {_session.path!r}); "
                "call fasttrace.stop() first"
            )
        if rate is not None:
            return _start_sampling(path, buffer_size, float(rate), clock or "wall", stop_codes)
        hook, fell_back = _choose_hook(c_calls)
        _check_no_other_profiler(hook)
        tool_id = _free_tool_id() if hook == "monitoring" else None
        _prepare_core()
        fd = open_output(path)
        n_chunks = buffer_size // CHUNK_SIZE
        hook_id = {"profile": _core.HOOK_PROFILE, "monitoring": _core.HOOK_MONITORING,
                   "eval_frame": _core.HOOK_EVAL_FRAME}[hook]
        _session_start(fd, path, buffer_size, c_calls, hook_id, n_chunks, False, fell_back)
        session = Session(path, c_calls, buffer_size, hook)
        #: the frame evaluator was the choice, but another tool holds it
        session.hook_fallback = fell_back
        session.tool_id = tool_id
        session._skip_caller_stack = skip_caller_stack
        _install(session)
        _session = session
        atexit.register(_stop_at_exit)
        return session


def _prepare_core() -> None:
    _core.hooks_init()  # fork and exit handlers; once per process
    # start() and stop() are not the program's: their frames, and what they call, are not
    # recorded (the code object's filename is this module's)
    _core.set_own_files((__file__,))


def _session_start(fd: int, path: str, buffer_size: int, c_calls: bool, hook_id: int,
                   n_chunks: int, sample: bool, hook_fallback: bool = False) -> None:
    try:
        _core.session_start(fd, c_calls, hook_id, CHUNK_SIZE, n_chunks, _command_line(),
                            sys.version, sys.hexversion, sample, path, hook_fallback)
    except OSError as e:
        os.close(fd)
        if e.errno == errno.ENOMEM:
            raise TracingError(
                f"cannot reserve a ring buffer of {format_size(buffer_size)} per thread: out of "
                "memory (pass a smaller buffer_size)") from None
        raise TracingError(f"cannot start writing {path!r}: {e.strerror}") from None


def _start_sampling(path: str, buffer_size: int, rate: float, clock: str,
                    stop_codes: "tuple[Any, ...]") -> Session:
    """Sampling mode: no hook at all, so it runs beside debuggers and other profilers."""
    global _session
    # 3.13+: the interpreter's own description of its struct layouts against this build's,
    # before the output is opened: a refused start leaves the path as it was (no new file, an
    # earlier trace there untouched).  sampler_start checks again, for C callers.
    problem = _core.sampler_check_layout()
    if problem is not None:
        raise TracingError(problem)
    _prepare_core()
    fd = open_output(path)
    _session_start(fd, path, buffer_size, False, _core.HOOK_SAMPLER, buffer_size // CHUNK_SIZE,
                   True)
    try:
        _core.sampler_start(rate, _core.CLOCK_CPU if clock == "cpu" else _core.CLOCK_WALL,
                            _call_opcodes(), tuple(stop_codes))
    except (OSError, _core.LayoutError) as e:
        _core.session_quiesce()
        _core.session_finish()
        _core.sampler_release()
        # No trace file is left: it would hold no sample, only the header of a start that
        # never happened.  (open_output replaced a symlink's target, not the link.)
        target = os.path.realpath(path)
        if os.path.isfile(target):
            try:
                os.unlink(target)
            except OSError:
                pass  # a directory we may not change: the trace was written in place
        if isinstance(e, _core.LayoutError):  # only if the environment changed since the check
            raise TracingError(str(e)) from None
        raise TracingError(
            f"cannot start the sampler: {e.strerror}"
            + (" (process_vm_readv is not allowed here: seccomp or a container policy)"
               if e.errno in (1, 38) else "")
        ) from None
    session = Session(path, False, buffer_size, "sampler", rate, clock)
    session._stop_codes = tuple(stop_codes)  # the sampler compares their addresses
    _name_sampled_threads(force=False)
    _wrap_thread_start(session)
    _session = session
    atexit.register(_stop_at_exit)
    return session


def _name_sampled_threads(force: bool) -> None:
    for t in threading.enumerate():
        if t.ident is not None:
            _core.name_sampled_thread(t.ident, t.name, getattr(t, "native_id", None), force)


# The sampler cannot call Python, and a thread may live and die while the main thread is
# blocked (in join(), say), so names are handed over as threads start: threading's own thread
# starter is wrapped while sampling runs, by a C wrapper (no Python frame of ours sits on the
# caller's stack while the starter blocks).  It returns the new thread's ident (3.9-3.12) or a
# handle that has it (3.13).
_START_NAMES = ("_start_joinable_thread", "_start_new_thread")


def _wrap_thread_start(session: Session) -> None:
    name = next((n for n in _START_NAMES if hasattr(threading, n)), None)
    if name is None:
        return

    _patch(session, threading, name, threading.Thread, install_hook=False)


def _patch(session: Session, module: Any, name: str, thread_class: Any,
           install_hook: bool) -> None:
    original = getattr(module, name)
    wrapper = _core.wrap_thread_start(original, thread_class, install_hook)
    setattr(module, name, wrapper)
    session._thread_starts.append((module, name, original, wrapper))


def _unwrap_thread_start(session: Session) -> None:
    for module, name, original, wrapper in reversed(session._thread_starts):
        if getattr(module, name, None) is wrapper:  # unless someone wrapped it after us
            setattr(module, name, original)
    session._thread_starts = []


_CALL_OPCODES: Optional[bytes] = None
# Besides every opcode named *CALL* (3.11's PRECALL_* specializations make the call
# themselves): the with statement's __enter__ and __exit__ calls up to 3.13 (3.14+ compiles
# them to LOAD_SPECIAL + CALL), and imports.  Not "WITH" as a substring: that also named
# LOAD_ATTR_WITH_HINT, STORE_ATTR_WITH_HINT, LOAD_*_WITH_VALUES, FORMAT_WITH_SPEC and 3.10's
# COPY_DICT_WITHOUT_KEYS, which call nothing, and flagged a thread running them as in a call.
_CALLING_OPNAMES = frozenset({"SETUP_WITH", "SETUP_ASYNC_WITH", "BEFORE_WITH",
                              "BEFORE_ASYNC_WITH", "WITH_EXCEPT_START", "IMPORT_NAME"})


def _call_opcodes() -> bytes:
    """256 flags: which opcodes (specialized and instrumented forms included) call something.
    A waiting thread whose innermost frame is at one of them is blocked in that call."""
    global _CALL_OPCODES
    if _CALL_OPCODES is None:
        import opcode  # not dis, which costs ~2 ms more at every start

        table = bytearray(256)
        names = dict(opcode.opmap)
        # specialized forms (3.11+), numbered as dis numbers them (dis._all_opmap)
        names.update(getattr(opcode, "_specialized_opmap", {}))  # 3.13
        specialized = getattr(opcode, "_specialized_instructions", ())  # 3.11, 3.12
        free = [op for op, name in enumerate(opcode.opname) if name.startswith("<")]
        names.update(zip(specialized, free))
        for name, op in names.items():
            if 0 <= op < 256 and ("CALL" in name or name in _CALLING_OPNAMES):
                table[op] = 1
        _CALL_OPCODES = bytes(table)
    return _CALL_OPCODES


def _install(session: Session) -> None:
    global _disabled_call_sites
    disable = sys.monitoring.DISABLE if _core.USE_MONITORING else None
    _core.hooks_retain(getattr(threading, "_active", None), disable, _HookMarker())
    if session.hook == "monitoring":
        mon = sys.monitoring
        ev = mon.events
        tool = session.tool_id
        assert tool is not None
        mon.use_tool_id(tool, "fasttrace")
        if _disabled_call_sites:
            mon.restart_events()  # re-arm call sites a previous trace disabled
        enter, exit_, call, c_exit = _core.monitoring_callbacks()
        events = 0
        for e in (ev.PY_START, ev.PY_RESUME, ev.PY_THROW):
            mon.register_callback(tool, e, enter)
            events |= e
        for e in (ev.PY_RETURN, ev.PY_YIELD, ev.PY_UNWIND):
            mon.register_callback(tool, e, exit_)
            events |= e
        if session.c_calls:
            mon.register_callback(tool, ev.CALL, call)
            for e in (ev.C_RETURN, ev.C_RAISE):
                mon.register_callback(tool, e, c_exit)
            events |= ev.CALL | ev.C_RETURN | ev.C_RAISE
            _disabled_call_sites = True
        _core.install_monitoring(mon.set_events, tool, events, session._skip_caller_stack)
        # as get_events() reports them (C_RETURN and C_RAISE come with CALL, unlisted)
        session._monitoring_events = mon.get_events(tool)
    elif session.hook == "eval_frame":
        _core.install_eval_frame()  # checked free under the lock in start()
    else:
        session._prev_threading_profile = getattr(threading, "_profile_hook", None)
        session._bootstrap = _core.legacy_bootstrap()
        threading.setprofile(session._bootstrap)
        # threading.setprofile reaches threading.Thread only; threads started with _thread get
        # the hook from a wrapper of its starters
        import _thread
        for name in ("start_new_thread", "start_new"):
            if hasattr(_thread, name):
                _patch(session, _thread, name, None, install_hook=True)
        _core.install_legacy(session._skip_caller_stack)


def _uninstall(session: Session) -> None:
    if session.hook == "eval_frame":
        _core.remove_eval_frame()
    elif session.hook == "monitoring":
        mon = sys.monitoring
        tool = session.tool_id
        assert tool is not None
        if mon.get_tool(tool) == "fasttrace":  # else someone freed it under us
            mon.set_events(tool, 0)
            for e in _all_monitoring_events():
                mon.register_callback(tool, e, None)
            mon.free_tool_id(tool)
    else:
        _core.remove_legacy()
        if getattr(threading, "_profile_hook", None) is session._bootstrap:
            threading.setprofile(session._prev_threading_profile)
        _unwrap_thread_start(session)


def _all_monitoring_events() -> "list[int]":
    ev = sys.monitoring.events
    return [ev.PY_START, ev.PY_RESUME, ev.PY_THROW, ev.PY_RETURN, ev.PY_YIELD, ev.PY_UNWIND,
            ev.CALL, ev.C_RETURN, ev.C_RAISE]


def _check_hooks(session: Session) -> "list[str]":
    """Marks in the file the threads whose hook another tool replaced, and returns what the
    user must be told about the rest."""
    notes = []
    if session.hook == "monitoring":
        mon = sys.monitoring
        tool = session.tool_id
        assert tool is not None
        if mon.get_tool(tool) != "fasttrace":
            what = f"sys.monitoring tool id {tool} was freed by someone else"
        elif mon.get_events(tool) != session._monitoring_events:
            what = f"the events of sys.monitoring tool id {tool} were changed by someone else"
        else:
            what = ""
        if what:
            _core.lose_hooks(what)
    elif session.hook == "profile" and \
            getattr(threading, "_profile_hook", None) is not session._bootstrap:
        notes.append("threading.setprofile() replaced fasttrace's hook for new threads while "
                     "tracing: threads started after that were not traced")
    _core.check_hooks()
    return notes


def stop() -> Summary:
    """Stop the running trace, finish its file and return a Summary."""
    global _session
    with _lock:
        session = _session
        if session is None:
            raise TracingError("fasttrace.stop() was called but no trace is running")
        sampling = session.rate is not None
        notes: "list[str]" = []
        if sampling:
            _unwrap_thread_start(session)
            _name_sampled_threads(force=True)
            _core.session_quiesce()
        else:
            notes = _check_hooks(session)
            _core.session_quiesce()
            _uninstall(session)
            for t in threading.enumerate():
                if t.ident is not None:
                    _core.set_thread_name(t.ident, t.name)
        result = _core.session_finish()
        if sampling:
            _core.sampler_release()
        else:
            _core.hooks_release()
        _session = None
        atexit.unregister(_stop_at_exit)
    summary = Summary(
        path=session.path,
        events=result["events"],
        dropped=result["dropped"],
        duration_ns=result["duration_ns"],
        bytes=result["bytes"],
        threads=result["threads"],
        functions=result["functions"],
        sampling=sampling_stats(session.rate, session.clock, result["sampler"])
        if session.rate is not None else None,
        lost_threads=result["lost_threads"],
        hook_lost_threads=result["hook_lost_threads"],
    )
    session.summary = summary
    if summary.sampling is not None and summary.sampling.rate_lowered:
        s = summary.sampling
        budget = f"{100 * s.cpu_budget:g}% of one CPU" if s.cpu_budget else "its CPU budget"
        warnings.warn(
            f"fasttrace: the sampler lowered its rate from {s.rate:g} to {s.effective_rate:g} "
            f"samples per second ({s.rate_lowered} time{'s' if s.rate_lowered > 1 else ''}): "
            f"reading every thread's stack at that rate took more than {budget}, which it "
            f"would have taken from the program (too many threads or stacks too deep for the "
            f"rate; achieved {s.achieved_rate:.0f}/s on average)",
            RuntimeWarning, stacklevel=2)
    if result["error"]:
        raise TracingError(
            f"writing {session.path!r} failed at byte {result['error_offset']}: "
            f"{os.strerror(result['error'])}; tracing stopped there and the "
            f"{result['error_offset']} bytes before it are readable"
        )
    for note in _losses(summary) + notes:
        warnings.warn(f"fasttrace: {note}", RuntimeWarning, stacklevel=2)
    return summary


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
    if _session is None:
        return
    path = _session.path
    try:
        summary = stop()
    except TracingError as e:
        print(f"fasttrace: {e}", file=sys.stderr)
        return
    print(
        f"fasttrace: warning: the trace was still running at exit; it was stopped and saved "
        f"to {path} ({summary.events} {'samples' if summary.sampling else 'events'})",
        file=sys.stderr,
    )


def _after_fork_in_child() -> None:
    # The writer thread did not survive the fork and the file belongs to the parent: the child
    # stops tracing without touching either.
    global _session, _lock
    _lock = threading.RLock()
    if _session is None:
        return
    _core.session_abandon()
    _unwrap_thread_start(_session)
    if _session.rate is None:
        try:
            _uninstall(_session)
        except Exception:  # best effort: the child must go on whatever state it inherited
            pass
        _core.hooks_release()
    _session = None
    atexit.unregister(_stop_at_exit)


class _HookMarker:
    """What sys.getprofile() shows while fasttrace's C hook is installed (3.9-3.11)."""

    def __repr__(self) -> str:
        return "<fasttrace hook>"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
