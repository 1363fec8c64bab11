"""`fasttrace run`: trace a program without changing it.

    fasttrace run [-o OUT] [--no-c-calls] [--buffer-size BYTES] script.py [args...]
    fasttrace run [options] -m module [args...]
    fasttrace run [options] -c code [args...]
    fasttrace run --rate 100 [--clock cpu] script.py [args...]     (sampling mode)
    fasttrace run --flight 10s [--flight-dir DIR] [--rate HZ] app.py  (flight recorder)
    fasttrace run --max-bytes 100M [--max-seconds S] [--keep N] app.py (rotated files)
    fasttrace run --duration 30s app.py                    (stop tracing after 30 s)
    fasttrace run --follow-children [-o DIR] app.py        (a file per Python process)
    fasttrace run [options] command [args...]   (a Python script on PATH: gunicorn, ...)
    fasttrace run --http 127.0.0.1:6060 [--flight 30s] app.py  (traces on demand, over HTTP)

--flight keeps the last seconds in memory and writes them to a timestamped file in
--flight-dir when the process gets SIGUSR2, or when an uncaught exception ends it.

--follow-children traces the program's Python child processes too (os.fork, multiprocessing
under every start method, subprocess running Python, their children): each process writes
DIR/<name>.<pid>.ftrace (DIR: -o, by default fasttrace-<name>-<pid>).  The program then runs
in a fresh interpreter, as under plain python, that starts its capture at start-up like every
other process of the run (see fasttrace/_children.py).

--http ADDR serves fasttrace's endpoints (fasttrace.http) inside the program: traces and
profiles on demand, so nothing is recorded until asked, unless --flight also runs a flight
recorder, which then answers them.  The token, if any, comes from $FASTTRACE_HTTP_TOKEN.  With
--follow-children every Python child process serves them too, on the next free port, and the
first process's index page lists them all.

The program sees what it would see under plain `python`: its sys.argv, sys.path[0], a
`__main__` module with the attributes python gives it (see _program.py), stdin, stdout and
SIGPIPE.  Its exit status is fasttrace's: the code of sys.exit(), 1 after an uncaught exception
(traceback printed), death by SIGINT or SIGTERM after those signals.  The trace is complete in
every one of those cases; no frame of this runner or of runpy is in it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import traceback

import fasttrace
from fasttrace import _core, _recorder, _sigterm
from fasttrace._recorder import (DEFAULT_BUFFER_SIZE, MIN_BUFFER_SIZE, Recorder, format_size,
                                 max_buffer_size)
from fasttrace._recorder import _make_scope
from fasttrace.commands import (add_pattern_arguments, any_size, duration_text,
                                scope_error_text, seconds_or_zero)
from fasttrace.commands import seconds as _seconds
from fasttrace.commands._program import NoProgram, prepare

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional, Tuple

USAGE = ("fasttrace run [-o OUT] [--no-c-calls] [--buffer-size BYTES] [--rate HZ] "
         "[--clock wall|cpu] [--duration TIME] [--max-bytes BYTES] [--max-seconds TIME] "
         "[--keep N] [--flight TIME [--flight-dir DIR] [--flight-bytes BYTES]] "
         "[--follow-children] [--http ADDR] [--include PAT] [--exclude PAT] [--max-depth N] "
         "[--min-duration TIME] [--trim-stacks] (script.py | -m module | -c code | command) "
         "[args ...]")
# Our options that take a value: the program's own arguments start after these.
VALUE_OPTIONS = {"-o", "--output", "--buffer-size", "--rate", "--clock", "--duration",
                 "--max-bytes", "--max-seconds", "--keep", "--flight", "--flight-dir",
                 "--flight-bytes", "--http", "--include", "--exclude", "--max-depth",
                 "--min-duration"}


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("run", help="trace a script, a module (-m) or code (-c)", usage=USAGE,
                       add_help=False)
    p.add_argument("args", nargs=argparse.REMAINDER)


def _options_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fasttrace run", usage=USAGE, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", metavar="OUT",
                   help="trace file (default: fasttrace-<program>-<pid>.ftrace); with "
                        "--follow-children, the directory of the files (default: "
                        "fasttrace-<program>-<pid>)")
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
    p.add_argument("--duration", type=_seconds, metavar="TIME",
                   help="stop tracing after TIME (30, 30s, 500ms, 2m), the program going on")
    p.add_argument("--max-bytes", type=any_size, metavar="BYTES",
                   help="rotate: start a new file OUT-stem.NNNN.ftrace at this size (100M)")
    p.add_argument("--max-seconds", type=_seconds, metavar="TIME",
                   help="rotate: start a new file after this long")
    p.add_argument("--keep", type=int, metavar="N", help="rotate: keep only the newest N files")
    p.add_argument("--flight", type=_seconds, metavar="TIME",
                   help="flight recorder: keep the last TIME in memory; SIGUSR2 or an uncaught "
                        "exception writes it to a file in --flight-dir")
    p.add_argument("--flight-dir", default=".", metavar="DIR",
                   help="where flight-recorder dumps go (default: the current directory)")
    p.add_argument("--flight-bytes", type=any_size, metavar="BYTES",
                   help="flight recorder: memory for the window (default 64M)")
    p.add_argument("--follow-children", action="store_true",
                   help="also trace the program's Python child processes (fork, "
                        "multiprocessing, subprocess running Python, ...): one file per "
                        "process, OUT/<program>.<pid>.ftrace")
    p.add_argument("--http", metavar="ADDR",
                   help="serve fasttrace's endpoints (/debug/fasttrace/) on HOST:PORT in the "
                        "program: traces and profiles on demand; nothing is recorded until "
                        "asked, unless --flight runs too")
    g = p.add_argument_group("scope", "what is recorded (the trace says what was left out)")
    add_pattern_arguments(g, include_tail="; C functions by their module (builtins)",
                          exclude_tail="; out-of-scope code runs unhooked on 3.12+")
    g.add_argument("--max-depth", type=int, metavar="N",
                   help="record at most N nested frames; deeper calls are left out")
    g.add_argument("--min-duration", type=seconds_or_zero, metavar="TIME",
                   help="trace mode: leave out calls shorter than TIME (50us, 2ms), their "
                        "time staying in their caller's self time")
    g.add_argument("--trim-stacks", action="store_true",
                   help="sampling mode with --include/--exclude: keep only a sample's "
                        "in-scope frames (default: whole stacks that hold one)")
    return p


def scope_options(opts: argparse.Namespace) -> "dict[str, Any]":
    """The scope arguments of start() that the options give (none given: {})."""
    given: "dict[str, Any]" = {}
    if opts.include:
        given["include"] = list(opts.include)
    if opts.exclude:
        given["exclude"] = list(opts.exclude)
    if opts.max_depth is not None:
        given["max_depth"] = opts.max_depth
    if opts.min_duration is not None:
        given["min_duration"] = opts.min_duration
    if opts.trim_stacks:
        given["trim_stacks"] = True
    return given


def _size(text: str) -> int:
    """--buffer-size: bytes, or a number with K, M or G (KiB, MiB, GiB), within the bounds
    start() accepts (named here after the flag, not the API's parameter)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower()
    for suffix in ("ib", "b"):
        if t.endswith(suffix) and t[:-len(suffix)][-1:] in units:
            t = t[:-len(suffix)]
            break
    try:
        if t and t[-1] in units:
            n = int(float(t[:-1]) * units[t[-1]])
        else:
            n = int(t)
    except (ValueError, OverflowError):  # OverflowError: "infK"
        raise argparse.ArgumentTypeError(
            f"not a size: {text!r} (e.g. 8388608, 8M, 512K)") from None
    if n < MIN_BUFFER_SIZE:
        raise argparse.ArgumentTypeError(
            f"must be at least {format_size(MIN_BUFFER_SIZE)}, got {text!r}")
    top = max_buffer_size()
    if n > top:
        raise argparse.ArgumentTypeError(
            f"must be at most {format_size(top)} (this machine's memory; the ring is per "
            f"thread), got {text!r}")
    return n


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

    if kind == "script" and not os.path.lexists(what) and os.sep not in what:
        what, error = _find_command(what)  # a console script such as gunicorn
    else:
        error = _check_target(kind, what)
    if error:
        print(f"fasttrace: error: {error}", file=sys.stderr)
        return 2 if kind == "script" else 1
    if opts.clock is not None and opts.rate is None:
        parser.error("--clock needs --rate (it applies to sampling mode)")
    if opts.http is not None:
        from fasttrace.http._registry import parse_address

        try:
            parse_address(opts.http)
        except ValueError as e:
            parser.error(f"--http: {e}")
        if opts.output or opts.max_bytes or opts.max_seconds or opts.keep or opts.duration \
                or (opts.rate is not None and opts.flight is None):
            parser.error("--http records on demand, not the whole run: it does not go with -o, "
                         "--rate (but with --flight), --duration, --max-bytes, --max-seconds or "
                         "--keep; add --flight TIME to keep the last seconds as well")
        if opts.follow_children and opts.flight is not None:
            parser.error("--http --follow-children serves every process on demand: it does not "
                         "go with --flight")
    try:  # the scope's checks, before the program runs (and named after the options)
        _make_scope(opts.include, opts.exclude, opts.max_depth, opts.min_duration,
                    opts.rate is not None, opts.trim_stacks)
    except ValueError as e:
        parser.error(scope_error_text(e))
    if opts.follow_children:
        if opts.flight is not None or opts.max_bytes or opts.max_seconds or opts.keep:
            parser.error("--follow-children writes one file per process: it does not go "
                         "with --flight, --max-bytes, --max-seconds or --keep")
        return _follow(kind, what, prog_args, opts)
    out = opts.output or _default_output(kind, what)
    if opts.flight is not None and (opts.output or opts.max_bytes or opts.max_seconds or
                                    opts.keep or opts.duration):
        parser.error("--flight writes only dumps: it does not go with -o, --max-bytes, "
                     "--max-seconds, --keep or --duration")
    if (opts.flight_bytes is not None or opts.flight_dir != ".") and opts.flight is None:
        parser.error("--flight-dir and --flight-bytes need --flight")
    return _run(kind, what, prog_args, out, opts.c_calls, opts.buffer_size, opts.rate,
                opts.clock, opts)


def _check_target(kind: str, what: str) -> Optional[str]:
    if kind == "script":
        if not os.path.exists(what):
            return f"cannot run {what!r}: no such file"
        if os.path.isdir(what) and not os.path.exists(os.path.join(what, "__main__.py")):
            return f"cannot run {what!r}: a directory without __main__.py"
        if not os.access(what, os.R_OK):
            return f"cannot run {what!r}: permission denied"
    return None


def _find_command(name: str) -> "Tuple[str, Optional[str]]":
    """(path, error): a command on PATH that is a Python script (a console script such as
    gunicorn: its #! line names python), run as `python PATH` would run it."""
    import shutil

    path = shutil.which(name)
    if path is None:
        return name, f"cannot run {name!r}: no such file, nor a command on PATH"
    try:
        with open(path, "rb") as f:
            head = f.read(1024).split(b"\n")
    except OSError as e:
        return name, f"cannot run {name!r} ({path}): {e.strerror}"
    # pip writes a /bin/sh launcher whose second line execs python when python's path is long
    if head[0].startswith(b"#!") and (b"python" in head[0] or (
            len(head) > 1 and head[1].startswith(SH_LAUNCHER) and b"python" in head[1])):
        return path, None
    return name, (f"cannot run {name!r}: {path} is not a Python script (fasttrace runs "
                  "Python programs: script.py, -m module, -c code, or a command whose #! "
                  "line names python)")


SH_LAUNCHER = b"'" * 3 + b"exec'"  # how the second line of pip's launcher begins


def _program_name(kind: str, what: str) -> str:
    if kind == "script":
        return os.path.splitext(os.path.basename(os.path.abspath(what)))[0] or "script"
    return what if kind == "module" else "c"


def _default_output(kind: str, what: str) -> str:
    return f"fasttrace-{_program_name(kind, what)}-{os.getpid()}.ftrace"


def _follow(kind: str, what: str, prog_args: List[str], opts: argparse.Namespace) -> int:
    """--follow-children: runs the program in a fresh interpreter (this process becomes it:
    same pid, stdin, stdout, signals and exit status) that starts its capture at start-up,
    as every Python process it starts will (fasttrace/_children.py)."""
    from fasttrace import _children

    if sys.flags.no_site or sys.flags.isolated or sys.flags.ignore_environment:
        print("fasttrace: error: --follow-children starts each process's capture from "
              "PYTHONPATH and the site module: run python without -S, -I or -E",
              file=sys.stderr)
        return 2
    if not sys.executable:
        print("fasttrace: error: --follow-children: this Python does not know its "
              "executable (sys.executable is empty)", file=sys.stderr)
        return 2
    name = _program_name(kind, what)
    extra: "dict[str, Any]" = {}
    if opts.http is not None:
        # Endpoints in every process, no capture until asked: the plan's directory is the
        # registry where each process writes where it serves (nothing else goes there).
        import tempfile

        registry = tempfile.mkdtemp(prefix=f"fasttrace-http-{os.getpid()}-")
        extra = {"http": opts.http, "registry": registry, "capture": False}
        opts.output = registry
    directory = os.path.abspath(opts.output or f"fasttrace-{name}-{os.getpid()}")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        print(f"fasttrace: error: cannot make the directory {directory!r} for the traces: "
              f"{e.strerror}", file=sys.stderr)
        return 2
    if not os.access(directory, os.W_OK | os.X_OK):
        print(f"fasttrace: error: cannot write traces into {directory!r}: permission denied",
              file=sys.stderr)
        return 2
    plan = _children.Plan(directory, name, os.getpid(), rate=opts.rate, clock=opts.clock,
                          c_calls=opts.c_calls, buffer_size=opts.buffer_size,
                          duration=opts.duration, extra=extra)
    if scope_options(opts):
        plan.extra["scope"] = scope_options(opts)
    try:  # the checks start() makes of its arguments, before this process is replaced
        Recorder(plan.path(os.getpid()), c_calls=plan.c_calls, buffer_size=plan.buffer_size,
                 rate=plan.rate, clock=plan.clock, duration=plan.duration,
                 **plan.extra.get("scope", {}))
    except (ValueError, TypeError) as e:
        print(f"fasttrace: error: {e}", file=sys.stderr)
        return 2
    target = {"script": [what], "module": ["-m", what], "code": ["-c", what]}[kind]
    argv = [sys.executable, *_interpreter_flags(), *target, *prog_args]
    _children.finish()  # this process may be a followed child itself: its file is done
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    try:
        os.execve(sys.executable, argv, plan.environ(os.environ))
    except OSError as e:
        print(f"fasttrace: error: cannot run {sys.executable!r}: {e.strerror}", file=sys.stderr)
    return 2


def _interpreter_flags() -> List[str]:
    """This interpreter's options (-X, -W, -O, ...), for the one that replaces it, as
    multiprocessing passes them on to its children."""
    import subprocess

    flags = getattr(subprocess, "_args_from_interpreter_flags", None)
    return list(flags()) if flags is not None else []


# The session this command started; the program may stop it (and start its own).
_cli_session: Optional[Recorder] = None


def _make_recorder(out: str, c_calls: bool, buffer_size: int, rate: Optional[float],
                   clock: Optional[str], opts: Optional[argparse.Namespace]) -> Recorder:
    """The capture the options ask for, not started."""
    common: "dict[str, Any]" = dict(c_calls=c_calls, rate=rate, clock=clock,
                                    skip_caller_stack=True, stop_codes=(_run.__code__,),
                                    **(scope_options(opts) if opts is not None else {}))
    if opts is not None and opts.flight is not None:
        from fasttrace._flight import DEFAULT_FLIGHT_BUFFER, FlightRecorder

        return FlightRecorder(opts.flight, opts.flight_bytes or 64 << 20,
                              buffer_size=min(buffer_size, DEFAULT_FLIGHT_BUFFER)
                              if buffer_size == DEFAULT_BUFFER_SIZE else buffer_size,
                              signal=signal.SIGUSR2, directory=opts.flight_dir,
                              dump_on_exception=True, **common)
    if opts is not None and (opts.max_bytes or opts.max_seconds or opts.keep):
        from fasttrace._rotation import RotatingRecorder

        return RotatingRecorder(out, max_bytes=opts.max_bytes, max_seconds=opts.max_seconds,
                                keep=opts.keep, buffer_size=buffer_size,
                                duration=opts.duration, **common)
    return Recorder(out, buffer_size=buffer_size,
                    duration=opts.duration if opts is not None else None, **common)


def _run(kind: str, what: str, prog_args: List[str], out: str, c_calls: bool,
         buffer_size: int, rate: Optional[float] = None, clock: Optional[str] = None,
         opts: Optional[argparse.Namespace] = None) -> int:
    global _cli_session
    # What the program sees, as under `python script.py`, `python -m mod` or `python -c code`;
    # found and compiled before tracing starts, so that the trace opens with the program's own
    # first frame.
    try:
        program, globs = prepare(kind, what, prog_args)
    except NoProgram as e:
        print(f"fasttrace: error: cannot run {'module ' if kind == 'module' else ''}{what!r}: "
              f"{e}", file=sys.stderr)
        return 1
    except SystemExit as e:  # raised by the package of a -m module, as it is imported
        return _exit_code(e)
    except BaseException as e:  # noqa: B036 - a SyntaxError, or the package's own exception
        _print_program_traceback(e)
        return 1
    # Before the trace: not in it.  A SIGTERM the program was started with ignored (by a
    # supervisor, say) stays ignored, as under plain python.
    previous_term = signal.getsignal(signal.SIGTERM)
    if previous_term is not signal.SIG_IGN:
        previous_term = _sigterm.install(_on_sigterm)
    if opts is not None and opts.http is not None:
        try:
            _serve(opts.http)
        except (OSError, ValueError) as e:
            signal.signal(signal.SIGTERM, previous_term)
            print(f"fasttrace: error: --http {opts.http}: {e}", file=sys.stderr)
            return 2
    try:
        # The runner's own frames (this function and its callers) stay out of the trace: the
        # program's first frame is a root, as under plain python.  Sampling: the sampler cuts
        # every stack at this function's frame, which runs the program's code itself.
        # (--http alone records nothing: the endpoints start captures on demand.)
        if opts is None or opts.http is None or opts.flight is not None:
            _cli_session = _make_recorder(out, c_calls, buffer_size, rate, clock, opts).start()
    except (fasttrace.TracingError, ValueError, TypeError) as e:
        signal.signal(signal.SIGTERM, previous_term)
        print(f"fasttrace: error: {e}", file=sys.stderr)
        return 2

    code, interrupted = 0, False
    try:
        try:
            # Here, not in a helper: no runner frame in the trace.  The runner's frames are
            # muted (skip_caller_stack); run_unmuted is exec() that records the program.
            _core.run_unmuted(program, globs)
        except SystemExit as e:
            code = _exit_code(e)
        except KeyboardInterrupt:
            interrupted = True
            traceback.print_exc()
        except BaseException as e:  # noqa: B036 - the program's own exception: as python does
            _print_program_traceback(e)
            code = 1
        if not interrupted:
            # Python waits for non-daemon threads before it exits (threading._shutdown), also
            # after an uncaught exception; so does the trace.  Inline: no runner frame.
            for t in threading.enumerate():
                if t is not threading.current_thread() and not t.daemon:
                    t.join()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        code = _finish(code)
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:  # after the trace: not in it
            signal.signal(signal.SIGTERM, previous_term)
    if interrupted:
        # Exit the way python does on an uncaught KeyboardInterrupt: by SIGINT.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return code


def _serve(address: str) -> None:
    """--http: the endpoints, in threads of their own (left out of every trace)."""
    from fasttrace._capture import HIDDEN_CODES
    from fasttrace.http import _registry

    # Samples taken on demand start at the program's first frame, as `fasttrace run --rate`'s
    # do: the sampler cuts this runner's frames (trace mode shows them open, at the root).
    HIDDEN_CODES.append(_run.__code__)
    server = _registry.start_for_plan(address)
    print(f"fasttrace: serving {server.url} (process {os.getpid()})", file=sys.stderr)


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
    e.__traceback__ = tb  # the default hook prints the exception's own traceback
    try:
        sys.excepthook(type(e), e, tb)  # the program's own hook, if it set one
    except BaseException:  # noqa: B036 - a broken hook: python falls back to the default
        traceback.print_exception(type(e), e, tb)


def _is_ours(filename: str) -> bool:
    return filename.startswith(os.path.dirname(os.path.dirname(__file__))) or (
        os.path.basename(filename) == "runpy.py" or filename == "<frozen runpy>"
    )


def _finish(code: int) -> int:
    """Stops this command's trace and says where it went; if the program stopped it itself,
    says so (and leaves any trace the program started alone)."""
    try:
        sys.stdout.flush()
    except Exception:
        pass
    global _cli_session
    session, _cli_session = _cli_session, None  # once: SIGTERM may come while it runs
    if session is None:
        return code
    note = ""
    if _recorder.active() is session or session.expired:
        import warnings

        try:
            # stop()'s warnings are the user's news here, not a line of fasttrace's code
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                s = session.stop()
        except fasttrace.TracingError as e:
            print(f"fasttrace: error: {e}", file=sys.stderr)
            return code or 1
        for w in said:
            print(str(w.message), file=sys.stderr)
    elif session.summary is not None:
        s = session.summary
        note = "the program stopped the trace itself; "
    else:
        return code
    dumps = getattr(session, "dumps", None)
    if dumps is not None:  # a flight recorder: only its dumps are files
        if dumps:
            print(f"fasttrace: flight recorder stopped; it wrote {len(dumps)} dump(s): "
                  + ", ".join(d.path for d in dumps), file=sys.stderr)
        else:
            print("fasttrace: flight recorder stopped; no dump was asked for (send SIGUSR2 "
                  "to the process to write its last seconds)", file=sys.stderr)
        return code
    print(summary_line(session, s, note), file=sys.stderr)
    return code


def summary_line(session: Recorder, s: "fasttrace.Summary", note: str = "") -> str:
    """What `fasttrace run` says on stderr when the trace is done: what went where."""
    if session.expired:
        note += f"tracing stopped after --duration {session.duration:g} s; "
    dropped = f", {s.dropped:,} dropped" if s.dropped else ""
    what = f"{s.events:,} events from {s.threads} thread(s)"
    if s.sampling is not None:
        what = (f"{s.sampling.samples:,} samples from {s.threads} thread(s) over "
                f"{duration_text(s.duration_ns)} ({_rate_text(s.sampling)})")
    where = session.path
    if s.files is not None:
        stem, suffix = os.path.splitext(session.path)
        where = f"{len(s.files)} file(s) {stem}.*{suffix}"
        look = f"'{stem}.*{suffix}'"
    else:
        look = session.path
    return (f"fasttrace: {note}wrote {what} to {where} ({_size_text(s.bytes)}{dropped}); "
            f"look at it with: fasttrace report {look}")


def _rate_text(s: "fasttrace.SamplingStats") -> str:
    achieved = f"{s.achieved_rate:.0f} Hz" if s.achieved_rate >= 10 else \
        f"{s.achieved_rate:.1f} Hz"
    if s.rate_met:
        return f"{achieved} of {s.rate:g} Hz"
    return f"{achieved}, RATE NOT MET: {s.rate:g} Hz requested"


def _size_text(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _on_sigterm(signum: int, frame: object) -> None:
    # Under plain python SIGTERM kills the process at once; here the trace is finished first,
    # then the process dies by the same signal.
    _core.sigterm_taken()  # first: the guard stops reminding (fasttrace/_sigterm.py)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _finish(0)
    os.kill(os.getpid(), signal.SIGTERM)
