"""`fasttrace run --follow-children`: a capture in every Python process of a run.

The run's plan (where the files go, their name, the capture options) travels to every process
in one environment variable, FASTTRACE_FOLLOW, as JSON.  Each process writes its own file,
DIR/<name>.<pid>.ftrace, and never touches another's:

- A new interpreter (multiprocessing's spawn children and forkserver, `subprocess` running
  Python, grandchildren, and the program `fasttrace run` itself starts) finds the plan at
  start-up: `fasttrace run` puts fasttrace/_bootstrap first on PYTHONPATH, whose
  sitecustomize.py calls bootstrap() (after any other sitecustomize it hides).
- A forked child (os.fork, multiprocessing's fork children, a forkserver's workers, gunicorn's
  workers) starts its own capture in an after-fork handler, registered after _recorder's: by
  then the parent's capture has been abandoned in the child, untouched.
- A capture ends with its process: at exit (_recorder's atexit handler), on SIGTERM while the
  program has no handler of its own (the file is finished, then the process dies by the
  signal, as `fasttrace run` does), and at os._exit(), which skips atexit and which forked
  children end with (multiprocessing's fork and forkserver children, after their atexit-like
  finalizers ran): os._exit is wrapped while following.

Other features add fields to the plan (unknown fields are kept in Plan.extra and passed on to
children unchanged) and a callback to `after_start`, which runs in every process of the run
after its capture started, with the plan.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from fasttrace import _core, _recorder, _sigterm
from fasttrace._errors import TracingError
from fasttrace._recorder import DEFAULT_BUFFER_SIZE, Recorder

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional

    from fasttrace._summary import Summary

#: the environment variable that carries the plan
ENV = "FASTTRACE_FOLLOW"
#: the directory whose sitecustomize.py starts a capture in every new interpreter
BOOTSTRAP_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_bootstrap")

_VERSION = 1


class Plan:
    """What every process of a followed run needs to start its own capture."""

    def __init__(self, directory: str, name: str, root: int, *, rate: Optional[float] = None,
                 clock: Optional[str] = None, c_calls: bool = True,
                 buffer_size: int = DEFAULT_BUFFER_SIZE, duration: Optional[float] = None,
                 extra: Optional[Dict[str, Any]] = None) -> None:
        #: where every process's file goes (absolute: a child may change directory)
        self.directory = directory
        #: the files' common name: the script's stem, the module or the command
        self.name = name
        #: the pid of the run's first process, which reports the run at its end
        self.root = root
        self.rate = rate
        self.clock = clock
        self.c_calls = c_calls
        self.buffer_size = buffer_size
        #: seconds each process records for, from its own start
        self.duration = duration
        #: fields of other features (or a newer fasttrace), passed on unchanged
        self.extra: Dict[str, Any] = dict(extra or {})

    def path(self, pid: int) -> str:
        """The file of process `pid`."""
        return os.path.join(self.directory, f"{self.name}.{pid}.ftrace")

    def to_json(self) -> str:
        fields = dict(self.extra)
        fields.update(v=_VERSION, dir=self.directory, name=self.name, root=self.root,
                      rate=self.rate, clock=self.clock, c_calls=self.c_calls,
                      buffer_size=self.buffer_size, duration=self.duration)
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """The plan in `text`; ValueError saying what is wrong with it."""
        try:
            fields = json.loads(text)
        except ValueError as e:
            raise ValueError(f"not JSON ({e})") from None
        if not isinstance(fields, dict):
            raise ValueError("not a JSON object")
        f = dict(fields)
        if f.pop("v", None) != _VERSION:
            raise ValueError(f"plan version {fields.get('v')!r}, this fasttrace reads "
                             f"version {_VERSION}")
        directory, name, root = f.pop("dir", None), f.pop("name", None), f.pop("root", None)
        if not isinstance(directory, str) or not os.path.isabs(directory):
            raise ValueError(f"'dir' must be an absolute path, got {directory!r}")
        if not isinstance(name, str) or not name or os.sep in name:
            raise ValueError(f"'name' must be a file name, got {name!r}")
        if not _is_int(root):
            raise ValueError(f"'root' must be a pid, got {root!r}")
        rate, clock, duration = f.pop("rate", None), f.pop("clock", None), f.pop("duration", None)
        c_calls, buffer_size = f.pop("c_calls", True), f.pop("buffer_size", DEFAULT_BUFFER_SIZE)
        for key, value in (("rate", rate), ("duration", duration)):
            if value is not None and (isinstance(value, bool) or
                                      not isinstance(value, (int, float))):
                raise ValueError(f"'{key}' must be a number or null, got {value!r}")
        if clock is not None and not isinstance(clock, str):
            raise ValueError(f"'clock' must be a string or null, got {clock!r}")
        if not isinstance(c_calls, bool):
            raise ValueError(f"'c_calls' must be true or false, got {c_calls!r}")
        if not _is_int(buffer_size):
            raise ValueError(f"'buffer_size' must be a number of bytes, got {buffer_size!r}")
        return cls(directory, name, root, rate=rate, clock=clock, c_calls=c_calls,
                   buffer_size=buffer_size, duration=duration, extra=f)

    def environ(self, base: Mapping[str, str]) -> Dict[str, str]:
        """A copy of environment `base` that makes a Python started with it follow this plan:
        the plan in FASTTRACE_FOLLOW, the bootstrap directory first on PYTHONPATH."""
        env = dict(base)
        env[ENV] = self.to_json()
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = BOOTSTRAP_DIR + (os.pathsep + old if old else "")
        return env

    def __repr__(self) -> str:
        return f"<fasttrace follow plan {self.to_json()}>"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: Called in every process of the run, once its capture has started, with the plan.  A
#: callback that raises is reported on stderr (one line) and the process goes on.
after_start: List[Callable[[Plan], None]] = []


class FollowRecorder(Recorder):
    """A followed process's capture: quiet at exit, except in the run's first process, which
    says where the run's files went (as `fasttrace run` does)."""

    def __init__(self, plan: Plan, **options: Any) -> None:
        super().__init__(plan.path(os.getpid()), c_calls=plan.c_calls,
                         buffer_size=plan.buffer_size, rate=plan.rate, clock=plan.clock,
                         duration=plan.duration, **plan.extra.get("scope", {}), **options)
        self.plan = plan
        self._stopping = False  # a stop (any: exit, os._exit, SIGTERM, the program's) runs
        self._term_pending = False  # SIGTERM came during that stop: it kills once it is done

    def _finish(self) -> "tuple[dict[str, Any], list[str]]":
        self._stopping = True
        return super()._finish()

    def _conclude(self, result: "dict[str, Any]", notes: "list[str]",
                  stacklevel: int) -> Summary:
        try:
            return super()._conclude(result, notes, stacklevel + 1)
        finally:
            if self._term_pending:  # the file is finished: now SIGTERM does what it came for
                note = self.exit_note(self.summary) if self.summary is not None else None
                if note:
                    _say(note, prefix="")
                _die_by_sigterm()

    def exit_note(self, summary: Summary) -> Optional[str]:
        if os.getpid() != self.plan.root:
            return None
        from fasttrace.commands.run import summary_line  # only the first process prints

        others = _other_files(self.plan, self.path)
        children = (f"; the traces of {others} other process(es) are beside it, "
                    f"{self.plan.name}.<pid>.ftrace" if others else "")
        return summary_line(self, summary) + children


def _other_files(plan: Plan, mine: str) -> int:
    """How many other processes of this run wrote a file (modified since this one began:
    the directory may hold an earlier run's)."""
    try:
        since = os.stat(mine).st_ctime - 1
        names = os.listdir(plan.directory)
    except OSError:
        return 0
    prefix, n = plan.name + ".", 0
    for f in names:
        pid = f[len(prefix):-len(".ftrace")] if f.startswith(prefix) and \
            f.endswith(".ftrace") else ""
        path = os.path.join(plan.directory, f)
        if pid.isdigit() and path != mine:
            try:
                n += os.stat(path).st_mtime >= since
            except OSError:
                pass
    return n


_plan: Optional[Plan] = None
_session: Optional[FollowRecorder] = None  # this process's capture (a fork child inherits it)
_hooks_installed = False  # the at-fork handler and the os._exit wrapper (fork children too)
_real_exit = os._exit


def bootstrap() -> None:
    """A new interpreter's start (fasttrace/_bootstrap/sitecustomize.py): starts this
    process's capture if FASTTRACE_FOLLOW holds a plan.  Never raises: a malformed plan or a
    capture that cannot start is one line on stderr, and the program runs untraced."""
    text = os.environ.get(ENV)
    if not text:
        return
    try:
        plan = Plan.from_json(text)
    except ValueError as e:
        _say(f"ignoring {ENV} (this process is not traced): {e}")
        return
    # The interpreter's own start-up (site, the sitecustomize files) is on this thread's stack:
    # in trace mode it is muted, and what it still calls; sampling cuts every stack at site's
    # top level, so that samples taken before the program begins are empty (not kept).
    site_code = None
    frame: Any = sys._getframe()
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "site":
            site_code = frame.f_code
        frame = frame.f_back
    if not _start(plan, skip_caller_stack=True,
                  stop_codes=(site_code,) if site_code is not None else ()):
        if os.getpid() == plan.root:
            # `fasttrace run` checked all it could; what is left fails as its start would
            sys.stderr.flush()
            _real_exit(2)


def _start(plan: Plan, *, skip_caller_stack: bool, stop_codes: Any) -> bool:
    global _plan, _session
    _plan = plan
    if plan.extra.get("capture", True) is False:
        # `fasttrace run --http ADDR --follow-children`: every process serves the endpoints
        # and records only when asked
        _session = None
        _install_hooks()
        _after_start(plan)
        return True
    # Sampling: nor are the ways a capture ends (samples taken while they stop it, or while
    # the SIGTERM handler and the os._exit wrapper run around that).
    stop_codes = (*stop_codes, finish.__code__, _recorder._stop_at_exit.__code__,
                  _on_sigterm.__code__, _exit.__code__, _die_by_sigterm.__code__)
    try:
        recorder = FollowRecorder(plan, skip_caller_stack=skip_caller_stack,
                                  stop_codes=stop_codes)
    except (ValueError, TypeError) as e:  # a plan `fasttrace run` did not write
        _session = None
        _say(f"ignoring {ENV} (process {os.getpid()} is not traced): {e}")
        return False
    try:
        recorder.start()
    except (TracingError, ValueError, OSError) as e:
        _session = None  # nor are its forks: they would fail the same way
        _say(f"error: cannot trace process {os.getpid()}: {e}")
        return False
    _session = recorder
    _install_hooks()
    _after_start(plan)
    return True


def _after_start(plan: Plan) -> None:
    if plan.extra.get("http") is not None:
        try:
            from fasttrace.http import _registry

            server = _registry.start_for_plan(plan.extra["http"], plan.extra.get("registry"),
                                              child=os.getpid() != plan.root)
            if os.getpid() == plan.root:
                _say(f"serving {server.url} (process {os.getpid()}; each Python child process "
                     "it starts serves on the next free port, listed there)")
        except (OSError, ValueError) as e:
            _say(f"error: process {os.getpid()} cannot serve the endpoints: {e}")
    for callback in list(after_start):
        try:
            callback(plan)
        except Exception as e:
            _say(f"error in process {os.getpid()}: {callback!r} failed: "
                 f"{type(e).__name__}: {e}")


def _say(text: str, prefix: str = "fasttrace: ") -> None:
    try:
        sys.stderr.write(f"{prefix}{text}\n")
        sys.stderr.flush()
    except Exception:
        pass  # no stderr: nothing to say it on


def _install_hooks() -> None:
    """Once per process (a forked child inherits them): follow forks, finish at os._exit, and
    at SIGTERM when the program has no handler of its own."""
    global _hooks_installed
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            _sigterm.install(_on_sigterm)
    except (ValueError, OSError):
        pass  # not the main thread: SIGTERM kills the process, the file reads to its last chunk
    if _hooks_installed:
        return
    _hooks_installed = True
    # After _recorder's handler, which abandons the parent's capture in the child: after-fork
    # handlers run in the order they were registered.
    os.register_at_fork(after_in_child=_after_fork_in_child)
    os._exit = _exit  # type: ignore[assignment]


def _after_fork_in_child() -> None:
    parent = _session
    if _plan is not None and _plan.extra.get("capture", True) is False:
        _start(_plan, skip_caller_stack=False, stop_codes=())  # the endpoints only
        return
    if parent is None or _plan is None or parent.summary is not None:
        return  # the parent's capture did not start, or had stopped: so does the child's
    # The frames open at fork() are the child's too: they open its trace (as for start()).
    # Sampling: this handler's own frames are not (the sampler runs before it returns).
    if not _start(_plan, skip_caller_stack=False,
                  stop_codes=(_after_fork_in_child.__code__,)):
        return
    # This runs inside the call of os.fork() (or of whatever forked) made by the frame below.
    # Recording C calls, the hook reports that call's return (the parent's trace had its call
    # site hooked): it is not the return of the innermost frame the child's trace opens with,
    # and is left out, with the other after-fork handlers that still run before it.
    recorder = _session
    if recorder is not None and recorder.rate is None and recorder.c_calls and \
            _at_call(sys._getframe(1)):
        _core.mute_returns(1)


def _at_call(frame: Any) -> bool:
    """The frame is executing a call instruction (as the caller of os.fork() is)."""
    import opcode

    try:
        name = opcode.opname[frame.f_code.co_code[frame.f_lasti]]
    except (IndexError, AttributeError):
        return False
    return "CALL" in name and "INTRINSIC" not in name


def finish() -> None:
    """Stops this process's capture if it runs, and says what exit would say (os._exit and
    SIGTERM skip atexit)."""
    recorder = _session
    if recorder is None or _recorder.active() is not recorder or recorder.pid != os.getpid() \
            or recorder._stopping:
        return
    try:
        summary = recorder.stop()
    except TracingError as e:
        _say(str(e))
        return
    note = recorder.exit_note(summary)
    if note:
        _say(note, prefix="")


def _exit(status: int, /) -> NoReturn:
    try:
        finish()
    finally:
        _real_exit(status)


_exit.__name__ = _exit.__qualname__ = "_exit"
_exit.__module__ = _real_exit.__module__
_exit.__doc__ = _real_exit.__doc__


def _on_sigterm(signum: int, frame: Any) -> None:
    # As `fasttrace run` does: the file is finished, then the process dies by the signal.  If
    # it came during a stop (the process exiting, say), that stop finishes the file and then
    # kills (FollowRecorder._conclude): a second stop must not start inside the first.
    _core.sigterm_taken()  # first: the guard stops reminding (fasttrace/_sigterm.py)
    recorder = _session
    if recorder is not None and recorder._stopping and recorder.summary is None \
            and recorder.pid == os.getpid():
        recorder._term_pending = True
        return
    try:
        finish()
    finally:
        _die_by_sigterm()


def _die_by_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
