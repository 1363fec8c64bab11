"""How a capture sees the program: a hook on every call (trace mode) or a sampler (sampling
mode).  A Recorder (fasttrace/_recorder.py) drives one of these two strategies; everything
that differs between the modes lives here, behind the methods of _Capture.

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

import os
import sys
import threading

from fasttrace import _core
from fasttrace._errors import TracingError
from fasttrace._summary import SamplingStats, sampling_stats

# As typing.TYPE_CHECKING, without importing typing (~9 ms): importing fasttrace stays cheap,
# since it runs in every traced process.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional

    from fasttrace._scope import Scope

# sys.monitoring tool ids that no standard tool claims (0 debugger, 1 coverage, 2 profiler as
# cProfile uses it, 5 optimizer), so that cProfile and profilers that follow the convention
# run beside fasttrace.  The first free one is taken.
TOOL_IDS = (4, 3)


class _Capture:
    """What a Recorder asks of its mode, in this order:

    prepare()         checks that need no output yet; raising here leaves the path untouched
    begin()           after the native session started: hook the program or start sampling.
                      Raising TracingError, it has finished the native session itself (the
                      Recorder then discards the output)
    before_quiesce()  stop() under the lock, still recording; returns notes to warn about
    before_finish()   after session_quiesce, before session_finish
    after_finish()    after session_finish: release what begin() retained
    abandon()         in a forked child, after session_abandon: let go without finishing
    """

    #: "monitoring", "eval_frame" or "profile": the interpreter hook in use; "sampler" in
    #: sampling mode; None until prepare() chose it
    hook: Optional[str] = None
    hook_id = -1  # _core.HOOK_*: the header's record of `hook`
    c_calls = False
    sample = False  # the native session's mode: FT_MODE_SAMPLE, else FT_MODE_TRACE
    #: the frame evaluator was the choice, but another tool holds it: the plain hook runs
    hook_fallback = False
    #: sys.monitoring tool id (3.12+), else None
    tool_id: Optional[int] = None

    def prepare(self) -> None:
        pass

    def begin(self) -> None:
        pass

    def before_quiesce(self) -> "list[str]":
        return []

    def before_finish(self) -> None:
        pass

    def after_finish(self) -> None:
        pass

    def abandon(self) -> None:
        pass

    def sampling_summary(self, raw: "dict[str, int]") -> Optional[SamplingStats]:
        """The Summary's `sampling`, from session_finish()'s "sampler" dict."""
        return None


class _ThreadStarts:
    """Thread starters replaced while a capture runs, put back when it stops.

    The sampler cannot call Python, and a thread may live and die while the main thread is
    blocked (in join(), say), so names are handed over as threads start; the profile hook
    (3.9-3.11) installs itself on threads started with _thread, which threading.setprofile
    does not reach.  Either way a C wrapper (no Python frame of ours sits on the caller's stack
    while the starter blocks) replaces the starter."""

    def __init__(self) -> None:
        # (module, name, original, wrapper)
        self._replaced: "list[tuple[Any, str, Any, Any]]" = []

    def wrap(self, module: Any, name: str, thread_class: Any, install_hook: bool) -> None:
        original = getattr(module, name)
        wrapper = _core.wrap_thread_start(original, thread_class, install_hook)
        setattr(module, name, wrapper)
        self._replaced.append((module, name, original, wrapper))

    def restore(self) -> None:
        for module, name, original, wrapper in reversed(self._replaced):
            if getattr(module, name, None) is wrapper:  # unless someone wrapped it after us
                setattr(module, name, original)
        self._replaced = []


# ---- trace mode: one of three hooks -------------------------------------------------------


class _Hook:
    """An interpreter hook that reports every call and return to the native session."""

    name = ""
    hook_id = -1
    tool_id: Optional[int] = None

    def __init__(self, c_calls: bool, skip_caller_stack: bool, patterns: bool = False) -> None:
        self.c_calls = c_calls
        self._patterns = patterns  # include/exclude given: chooses the hook on 3.12
        self.skip_caller_stack = skip_caller_stack

    def install(self) -> None:
        raise NotImplementedError

    def uninstall(self) -> None:
        raise NotImplementedError

    def check(self) -> "list[str]":
        """At stop(), before quiescing: marks in the file the threads whose hook another tool
        replaced, and returns what the user must be told about the rest."""
        return []


class _MonitoringHook(_Hook):
    """3.12+: C callbacks under a sys.monitoring tool id of fasttrace's own."""

    name = "monitoring"
    hook_id = _core.HOOK_MONITORING
    # A previous trace returned DISABLE somewhere: the interpreter's own state, so it outlives
    # every trace of the process.
    disabled_call_sites = False

    def __init__(self, c_calls: bool, skip_caller_stack: bool) -> None:
        super().__init__(c_calls, skip_caller_stack)
        self.tool_id: int = _free_tool_id()
        self._events = 0

    def install(self) -> None:
        mon = sys.monitoring
        ev = mon.events
        tool = self.tool_id
        mon.use_tool_id(tool, "fasttrace")
        if _MonitoringHook.disabled_call_sites:
            mon.restart_events()  # re-arm what a previous trace disabled
        # A scope's out-of-scope code is disabled where it starts and returns (its first call
        # is the only one the hook sees); so are call sites of Python functions (c_calls).
        _MonitoringHook.disabled_call_sites = True
        enter, exit_, call, c_exit, throw, unwind = _core.monitoring_callbacks()
        events = 0
        for e, callback in ((ev.PY_START, enter), (ev.PY_RESUME, enter), (ev.PY_THROW, throw)):
            mon.register_callback(tool, e, callback)
            events |= e
        for e, callback in ((ev.PY_RETURN, exit_), (ev.PY_YIELD, exit_),
                            (ev.PY_UNWIND, unwind)):
            mon.register_callback(tool, e, callback)
            events |= e
        if self.c_calls:
            mon.register_callback(tool, ev.CALL, call)
            for e in (ev.C_RETURN, ev.C_RAISE):
                mon.register_callback(tool, e, c_exit)
            events |= ev.CALL | ev.C_RETURN | ev.C_RAISE
        _core.install_monitoring(mon.set_events, tool, events, self.skip_caller_stack)
        # as get_events() reports them (C_RETURN and C_RAISE come with CALL, unlisted)
        self._events = mon.get_events(tool)

    def uninstall(self) -> None:
        mon = sys.monitoring
        tool = self.tool_id
        if mon.get_tool(tool) == "fasttrace":  # else someone freed it under us
            mon.set_events(tool, 0)
            ev = mon.events
            for e in (ev.PY_START, ev.PY_RESUME, ev.PY_THROW, ev.PY_RETURN, ev.PY_YIELD,
                      ev.PY_UNWIND, ev.CALL, ev.C_RETURN, ev.C_RAISE):
                mon.register_callback(tool, e, None)
            mon.free_tool_id(tool)

    def check(self) -> "list[str]":
        mon = sys.monitoring
        tool = self.tool_id
        if mon.get_tool(tool) != "fasttrace":
            _core.lose_hooks(f"sys.monitoring tool id {tool} was freed by someone else")
        elif mon.get_events(tool) != self._events:
            _core.lose_hooks(f"the events of sys.monitoring tool id {tool} were changed by "
                             "someone else")
        return []


class _EvalFrameHook(_Hook):
    """3.11, 3.12 with c_calls=False: a PEP 523 frame evaluator."""

    name = "eval_frame"
    hook_id = _core.HOOK_EVAL_FRAME

    def install(self) -> None:
        _core.install_eval_frame()  # checked free under the lock in start()

    def uninstall(self) -> None:
        _core.remove_eval_frame()


class _ProfileHook(_Hook):
    """3.9-3.11: a C profile function on every thread, and threading.setprofile for new ones."""

    name = "profile"
    hook_id = _core.HOOK_PROFILE

    def __init__(self, c_calls: bool, skip_caller_stack: bool) -> None:
        super().__init__(c_calls, skip_caller_stack)
        self._prev_threading_profile: Any = None
        self._bootstrap: Any = None  # what threading.setprofile was given
        self._thread_starts = _ThreadStarts()

    def install(self) -> None:
        self._prev_threading_profile = getattr(threading, "_profile_hook", None)
        self._bootstrap = _core.legacy_bootstrap()
        threading.setprofile(self._bootstrap)
        # threading.setprofile reaches threading.Thread only; threads started with _thread get
        # the hook from a wrapper of its starters
        import _thread
        for name in ("start_new_thread", "start_new"):
            if hasattr(_thread, name):
                self._thread_starts.wrap(_thread, name, None, install_hook=True)
        _core.install_legacy(self.skip_caller_stack)

    def uninstall(self) -> None:
        _core.remove_legacy()
        if getattr(threading, "_profile_hook", None) is self._bootstrap:
            threading.setprofile(self._prev_threading_profile)
        self._thread_starts.restore()

    def check(self) -> "list[str]":
        if getattr(threading, "_profile_hook", None) is not self._bootstrap:
            return ["threading.setprofile() replaced fasttrace's hook for new threads while "
                    "tracing: threads started after that were not traced"]
        return []


_HOOKS = {h.name: h for h in (_MonitoringHook, _EvalFrameHook, _ProfileHook)}


# Where there is a choice (c_calls=False on 3.11 and 3.12), the faster hook, the frame
# evaluator, is the default and FASTTRACE_HOOK names the other one (tests and bench/ use it to
# cover and measure both; bench/README.md, "The fastest hook on every version").  Otherwise
# there is one hook per version: the profile function before 3.12, sys.monitoring after.
# Except with include/exclude patterns on 3.12: sys.monitoring turns the hooks of code out of
# scope off (DISABLE), so that code runs at bare speed, whereas the evaluator is still called
# for every frame (bench/README.md, "Capture-time scope": 1.04 against 1.34 on richards).


def _choose_hook(c_calls: bool, patterns: bool = False) -> "tuple[str, bool]":
    """(hook, fell_back): fell_back when the frame evaluator was the choice but another tool
    holds it (a debugger, a JIT): fasttrace never replaces it.  `patterns`: the capture has
    include/exclude patterns."""
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
    want = forced or ("monitoring" if patterns and _core.USE_MONITORING else "eval_frame")
    if want == "eval_frame" and _core.eval_frame_taken():
        return plain, True
    return want, False


def _check_no_other_profiler() -> None:
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


class _HookMarker:
    """What sys.getprofile() shows while fasttrace's C hook is installed (3.9-3.11)."""

    def __repr__(self) -> str:
        return "<fasttrace hook>"


class TraceCapture(_Capture):
    """Trace mode: every call and return on every thread, through the hook of this Python."""

    def __init__(self, c_calls: bool, skip_caller_stack: bool, patterns: bool = False) -> None:
        self.c_calls = c_calls
        self._patterns = patterns  # include/exclude given: chooses the hook on 3.12
        # `fasttrace run` leaves its own frames out of the calling thread's start-up stack
        self._skip_caller_stack = skip_caller_stack
        self._hook: Optional[_Hook] = None

    def prepare(self) -> None:
        name, self.hook_fallback = _choose_hook(self.c_calls, self._patterns)
        _check_no_other_profiler()
        hook = _HOOKS[name](self.c_calls, self._skip_caller_stack)  # monitoring: takes an id
        self._hook, self.hook, self.hook_id = hook, hook.name, hook.hook_id
        self.tool_id = hook.tool_id

    def _chosen(self) -> _Hook:
        assert self._hook is not None, "prepare() chooses the hook"
        return self._hook

    def begin(self) -> None:
        disable = sys.monitoring.DISABLE if _core.USE_MONITORING else None
        _core.hooks_retain(getattr(threading, "_active", None), disable, _HookMarker())
        self._chosen().install()

    def before_quiesce(self) -> "list[str]":
        notes = self._chosen().check()
        _core.check_hooks()
        return notes

    def before_finish(self) -> None:
        self._chosen().uninstall()
        for t in threading.enumerate():
            if t.ident is not None:
                _core.set_thread_name(t.ident, t.name)

    def after_finish(self) -> None:
        _core.hooks_release()

    def abandon(self) -> None:
        try:
            self._chosen().uninstall()
        except Exception:  # best effort: the child must go on whatever state it inherited
            pass
        _core.hooks_release()


# ---- sampling mode ------------------------------------------------------------------------


# Code objects of fasttrace's own threads and waits (fasttrace.http's server threads, a request
# waiting out its capture, the duration timer): the sampler cuts these frames and all outer
# ones, and a stack that keeps nothing inside them (they call no module's top level) is not
# sampled, so these threads are left out of every sampled trace.  Modules add to it at import.
HIDDEN_CODES: "list[Any]" = []


class SampleCapture(_Capture):
    """Sampling mode: no hook at all, so it runs beside debuggers and other profilers."""

    hook = "sampler"
    hook_id = _core.HOOK_SAMPLER
    sample = True

    def __init__(self, rate: float, clock: str, stop_codes: "tuple[Any, ...]",
                 scope: "Optional[Scope]" = None, trim_stacks: bool = False) -> None:
        self.rate = rate
        self.clock = clock
        self._stop_codes = stop_codes  # the sampler compares their addresses
        #: include/exclude/max_depth (min_duration is refused in sampling mode), or None;
        #: trim_stacks: keep only a sample's in-scope frames, not the whole stack
        self.scope = scope
        self.trim_stacks = trim_stacks
        self._thread_starts = _ThreadStarts()
        self._scope_helper = False  # a scope helper was started: stop() joins it

    def prepare(self) -> None:
        # 3.13+: the interpreter's own description of its struct layouts against this build's,
        # before the output is opened: a refused start leaves the path as it was (no new file,
        # an earlier trace there untouched).  sampler_start checks again, for C callers.
        problem = _core.sampler_check_layout()
        if problem is not None:
            raise TracingError(problem)

    def begin(self) -> None:
        scope = self.scope
        patterns = scope is not None and scope.patterns
        try:
            _core.sampler_start(self.rate,
                                _core.CLOCK_CPU if self.clock == "cpu" else _core.CLOCK_WALL,
                                _call_opcodes(), _stop_codes(self._stop_codes), patterns,
                                self.trim_stacks, None if scope is None else scope.max_depth)
        except (OSError, _core.LayoutError) as e:
            _core.session_quiesce()
            _core.session_finish()
            _core.sampler_release()
            # (The Recorder discards the output: no trace file is left.)
            if isinstance(e, _core.LayoutError):  # only if the environment changed since prepare()
                raise TracingError(str(e)) from None
            raise TracingError(
                f"cannot start the sampler: {e.strerror}"
                + (" (process_vm_readv is not allowed here: seccomp or a container policy)"
                   if e.errno in (1, 38) else "")
            ) from None
        _name_sampled_threads(force=False)
        name = next((n for n in _START_NAMES if hasattr(threading, n)), None)
        if name is not None:
            self._thread_starts.wrap(threading, name, threading.Thread, install_hook=False)
        if scope is not None and scope.patterns:
            # The sampler meets each file name on its own thread, where it cannot call the
            # scope's predicate: a helper thread decides them with the GIL (a bare thread, not
            # in threading.enumerate(), that the sampler never samples; stopped around
            # os.fork() as the sampler is).  stop() joins it and decides what is left.
            _core.sampler_scope_start(scope.code_in_scope)
            self._scope_helper = True

    def before_quiesce(self) -> "list[str]":
        self._thread_starts.restore()
        _name_sampled_threads(force=True)
        return []

    def before_finish(self) -> None:
        if self._scope_helper:
            self._scope_helper = False
            _core.sampler_scope_finish()

    def after_finish(self) -> None:
        _core.sampler_release()

    def abandon(self) -> None:
        self._thread_starts.restore()

    def sampling_summary(self, raw: "dict[str, int]") -> SamplingStats:
        return sampling_stats(self.rate, self.clock, raw)


def _stop_codes(given: "tuple[Any, ...]") -> "tuple[Any, ...]":
    hidden = tuple(c for c in HIDDEN_CODES if c not in given)
    return (given + hidden)[:_core.MAX_STOP_CODES]


def _name_sampled_threads(force: bool) -> None:
    for t in threading.enumerate():
        if t.ident is not None:
            _core.name_sampled_thread(t.ident, t.name, getattr(t, "native_id", None), force)


# threading's own thread starter, wrapped while sampling runs (see _ThreadStarts).  It returns
# the new thread's ident (3.9-3.12) or a handle that has it (3.13).
_START_NAMES = ("_start_joinable_thread", "_start_new_thread")

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
