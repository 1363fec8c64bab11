"""`fasttrace run`: trace a program without changing it.

    fasttrace run [-o OUT] [--no-c-calls] [--buffer-size BYTES] script.py [args...]
    fasttrace run [options] -m module [args...]
    fasttrace run [options] -c code [args...]
    fasttrace run --rate 100 [--clock cpu] script.py [args...]     (sampling mode)

The program sees what it would see under plain `python`: its sys.argv, `__name__ ==
"__main__"`, sys.path[0], `__file__`, stdin and stdout.  Its exit status is fasttrace's: the
code of sys.exit(), 1 after an uncaught exception (traceback printed), death by SIGINT or
SIGTERM after those signals.  The trace is complete in every one of those cases.
"""

from __future__ import annotations

import argparse
import builtins
import importlib.util
import io
import os
import runpy
import signal
import sys
import threading
import traceback
import types

import fasttrace
from fasttrace import _tracer
from fasttrace._tracer import DEFAULT_BUFFER_SIZE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType
    from typing import Any, Dict, List, Optional, Tuple

USAGE = ("fasttrace run [-o OUT] [--no-c-calls] [--buffer-size BYTES] [--rate HZ] "
         "[--clock wall|cpu] (script.py | -m module | -c code) [args ...]")
# Our options that take a value: the program's own arguments start after these.
VALUE_OPTIONS = {"-o", "--output", "--buffer-size", "--rate", "--clock"}


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("run", help="trace a script, a module (-m) or code (-c)", usage=USAGE,
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)


def _options_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fasttrace run", usage=USAGE, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", metavar="OUT",
                   help="trace file (default: fasttrace-<program>-<pid>.ftrace)")
    p.add_argument("--no-c-calls", dest="c_calls", action="store_false",
                   help="do not record calls of C functions (lower overhead)")
    p.add_argument("--buffer-size", type=_size, default=DEFAULT_BUFFER_SIZE, metavar="BYTES",
                   help="ring buffer per thread, e.g. 8M (default 8M)")
    p.add_argument("--rate", type=float, metavar="HZ",
                   help="sampling mode: sample every thread's stack HZ times a second "
                        "(1 to 10000) instead of recording every call")
    p.add_argument("--clock", choices=["wall", "cpu"],
                   help="sampling mode: wall (default: all threads, waiting ones too) or cpu "
                        "(only time on CPU)")
    return p


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("b")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 8388608, 8M, 512k)")


def split_argv(argv: List[str]) -> Tuple[List[str], List[str]]:
    """(fasttrace's options, the target and its arguments)."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-m", "-c") or not a.startswith("-") or a == "-":
            break
        i += 2 if a in VALUE_OPTIONS else 1
    return argv[:i], argv[i:]


def main(args: argparse.Namespace) -> int:
    return main_argv(args.args)


def main_argv(argv: List[str]) -> int:
    parser = _options_parser()
    own, target = split_argv(argv)
    opts = parser.parse_args(own)
    if not target:
        parser.error("say what to trace: script.py, -m module or -c code")
    if target[0] in ("-m", "-c") and len(target) < 2:
        parser.error(f"argument {target[0]} needs a value")

    kind, what, prog_args = ("script", target[0], target[1:])
    if target[0] == "-m":
        kind, what, prog_args = "module", target[1], target[2:]
    elif target[0] == "-c":
        kind, what, prog_args = "code", target[1], target[2:]

    error = _check_target(kind, what)
    if error:
        print(f"fasttrace: error: {error}", file=sys.stderr)
        return 2 if kind == "script" else 1
    if opts.clock is not None and opts.rate is None:
        parser.error("--clock needs --rate (it applies to sampling mode)")
    out = opts.output or _default_output(kind, what)
    return _run(kind, what, prog_args, out, opts.c_calls, opts.buffer_size, opts.rate,
                opts.clock)


def _check_target(kind: str, what: str) -> Optional[str]:
    if kind == "script":
        if not os.path.exists(what):
            return f"cannot run {what!r}: no such file"
        if os.path.isdir(what) and not os.path.exists(os.path.join(what, "__main__.py")):
            return f"cannot run {what!r}: a directory without __main__.py"
        if not os.access(what, os.R_OK):
            return f"cannot run {what!r}: permission denied"
    elif kind == "module":
        try:
            spec = importlib.util.find_spec(what)
        except (ImportError, ValueError) as e:
            return f"cannot run module {what!r}: {e}"
        if spec is None:
            return f"cannot run module {what!r}: no module named {what!r}"
    return None


def _default_output(kind: str, what: str) -> str:
    if kind == "script":
        name = os.path.splitext(os.path.basename(os.path.abspath(what)))[0] or "script"
    elif kind == "module":
        name = what
    else:
        name = "c"
    return f"fasttrace-{name}-{os.getpid()}.ftrace"


def _run(kind: str, what: str, prog_args: List[str], out: str, c_calls: bool,
         buffer_size: int, rate: Optional[float] = None, clock: Optional[str] = None) -> int:
    # What the program sees, as under `python script.py`, `python -m mod` or `python -c code`.
    if kind == "script":
        sys.argv = [what, *prog_args]
        sys.path[0] = os.path.dirname(os.path.abspath(what))
    elif kind == "module":
        sys.argv = [what, *prog_args]  # runpy replaces argv[0] with the module's path
        sys.path[0] = os.getcwd()
    else:
        sys.argv = ["-c", *prog_args]
        sys.path[0] = ""

    program, globs = _prepare(kind, what)
    try:
        # The runner's own frames (this function and its callers) stay out of the trace: the
        # program's first frame is a root, as under plain python.
        # Sampling: the sampler cuts every stack at these frames (the program's code is exec'd
        # by _run itself, or by runpy's _run_code).
        runner = (_run.__code__, runpy._run_code.__code__)  # type: ignore[attr-defined]
        _tracer._start(out, c_calls, buffer_size, rate, skip_caller_stack=True, clock=clock,
                       stop_codes=runner)
    except (fasttrace.TracingError, ValueError) as e:
        print(f"fasttrace: error: {e}", file=sys.stderr)
        return 2
    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)

    code, interrupted = 0, False
    try:
        if program is not None:
            exec(program, globs)  # here, not in a helper: one runner frame fewer in the trace
        else:
            _execute_with_runpy(kind, what)
        _join_threads()
    except SystemExit as e:
        code = _exit_code(e)
    except KeyboardInterrupt:
        interrupted = True
        traceback.print_exc()
    except BaseException as e:  # noqa: B036 - the program's own exception: report it as python does
        _print_program_traceback(e)
        code = 1
    finally:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, previous_term)
        code = _finish(out, code)
    if interrupted:
        # Exit the way python does on an uncaught KeyboardInterrupt: by SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code


def _prepare(kind: str, what: str) -> "Tuple[Optional[CodeType], Dict[str, Any]]":
    """A plain script or -c code, compiled, with the __main__ module it runs in; (None, {})
    for what runpy must run (-m, a directory or zip with __main__.py).  Done before tracing
    starts, so that the trace opens with the program's own first frame, as under python."""
    if kind == "module" or (kind == "script" and not os.path.isfile(what)):
        return None, {}
    if kind == "script":
        with io.open_code(what) as f:
            source = f.read()
        code = compile(source, what, "exec", dont_inherit=True)
    else:
        code = compile(what, "<string>", "exec", dont_inherit=True)
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=what if kind == "script" else None, __cached__=None,
                         __loader__=None, __package__=None, __spec__=None,
                         __builtins__=builtins)
    if kind == "code":
        del main.__dict__["__file__"]
    sys.modules["__main__"] = main  # what pickle and multiprocessing look up, as under python
    return code, main.__dict__


def _execute_with_runpy(kind: str, what: str) -> None:
    if kind == "script":
        runpy.run_path(what, run_name="__main__")
    else:
        runpy.run_module(what, run_name="__main__", alter_sys=True)


def _join_threads() -> None:
    # Python waits for non-daemon threads before it exits; so does the trace.
    for t in threading.enumerate():
        if t is not threading.current_thread() and not t.daemon:
            t.join()


def _exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


def _print_program_traceback(e: BaseException) -> None:
    # Leave out fasttrace's and runpy's own frames, as python leaves out its start-up code.
    tb = e.__traceback__
    while tb is not None and _is_ours(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    traceback.print_exception(type(e), e, tb)


def _is_ours(filename: str) -> bool:
    return filename.startswith(os.path.dirname(os.path.dirname(__file__))) or (
        os.path.basename(filename) == "runpy.py" or filename == "<frozen runpy>"
    )


def _finish(out: str, code: int) -> int:
    try:
        sys.stdout.flush()
    except Exception:
        pass
    if not fasttrace.is_tracing():
        return code
    try:
        s = fasttrace.stop()
    except fasttrace.TracingError as e:
        print(f"fasttrace: error: {e}", file=sys.stderr)
        return code or 1
    dropped = f", {s.dropped:,} dropped" if s.dropped else ""
    what = f"{s.events:,} events"
    if s.sampling is not None:
        what = (f"{s.sampling.samples:,} samples at {s.sampling.achieved_rate:.0f} Hz"
                + ("" if s.sampling.rate_met else
                   f" (RATE NOT MET: {s.sampling.rate:g} Hz requested)"))
    print(f"fasttrace: wrote {what} from {s.threads} thread(s) to {out} "
          f"({_size_text(s.bytes)}{dropped}); look at it with: fasttrace report {out}",
          file=sys.stderr)
    return code


def _size_text(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _on_sigterm(signum: int, frame: object) -> None:
    # Under plain python SIGTERM kills the process at once; here the trace is finished first,
    # then the process dies by the same signal.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _finish(_current_output(), 0)
    os.kill(os.getpid(), signal.SIGTERM)


def _current_output() -> str:
    return _tracer._session.path if _tracer._session is not None else "?"
