"""Subcommands of the fasttrace command line, one module each, and what they share: one-line
errors, the checks of an input path, and how times and places are shown."""

from __future__ import annotations

import argparse
import os
import stat
import sys

import fasttrace
from fasttrace._processes import ProcessSet, load_processes, spans_processes
from fasttrace._scope import c_module, parse_seconds
from fasttrace._series import is_pattern

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional, Union

# What a path is when it is not a regular file (the wording fasttrace.load() uses too).
_FILE_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def error(message: str) -> int:
    """One line on stderr, `fasttrace: error: MESSAGE`; returns the exit code, 1."""
    print(f"fasttrace: error: {message}", file=sys.stderr)
    return 1


def os_error_text(path: str, e: OSError) -> str:
    """`PATH: what went wrong`, for an OSError met while opening or reading `path`."""
    if isinstance(e, FileNotFoundError):
        return f"{path}: no such file"
    what = e.strerror or str(e) or type(e).__name__
    return f"{path}: {what[:1].lower()}{what[1:]}"


def unreadable(path: str) -> Optional[str]:
    """Why `path` cannot be read as a trace (missing, not a regular file), or None."""
    try:
        st = os.stat(path)
    except OSError as e:
        return os_error_text(path, e)
    return not_regular(path, st.st_mode)


def not_regular(path: str, mode: int) -> Optional[str]:
    """`PATH: byte 0: not a regular file (a FIFO (named pipe))`, or None for a regular file."""
    for test, kind in _FILE_KINDS:
        if test(mode):
            return f"{path}: byte 0: not a regular file ({kind})"
    return None


def add_trace_argument(p: "argparse.ArgumentParser") -> None:
    """The TRACE argument of the commands that read a whole trace: a file, the files of a
    rotated series (several paths, or a glob in quotes that fasttrace expands), or the traces
    of several processes (a directory, or files of more than one process)."""
    p.add_argument("trace", nargs="+", metavar="TRACE",
                   help="a .ftrace file; or the files of a rotated series: several paths, a "
                        "glob in quotes ('trace*.ftrace'), or one of them (the others are found "
                        "beside it); or a directory of per-process traces (or files of several "
                        "processes), read as one multi-process trace")


def trace_text(trace: "Union[str, List[str]]") -> str:
    """The TRACE argument as messages name it."""
    if isinstance(trace, str):
        return trace
    return trace[0] if len(trace) == 1 else f"{trace[0]} (and {len(trace) - 1} more)"


def load_or_say_why(trace: "Union[str, List[str]]",
                    notes: bool = True) -> "Optional[fasttrace.Trace]":
    """The loaded trace (a file, a glob or several files: fasttrace.load()), or None after one
    line on stderr saying what is wrong and where.  notes: say on stderr what is wrong with a
    series (files skipped, missing or cut)."""
    source: Union[str, List[str]] = trace
    if not isinstance(trace, str):
        source = trace[0] if len(trace) == 1 else list(trace)
    if isinstance(source, str) and not is_pattern(source):
        why = unreadable(source)
        if why is not None:
            error(why)
            return None
    try:
        loaded = fasttrace.load(source)
    except fasttrace.FormatError as e:
        error(str(e))
        return None
    except OSError as e:
        error(os_error_text(e.filename or trace_text(trace), e))
        return None
    if notes:
        for problem in loaded.series_problems:
            print(f"fasttrace: note: {problem}", file=sys.stderr)
    return loaded


def load_any_or_say_why(trace: "List[str]", notes: bool = True
                        ) -> "Union[fasttrace.Trace, ProcessSet, None]":
    """load_or_say_why(), or for a directory or files of more than one process (a file, or a
    rotated series, each) the multi-process trace (fasttrace.load_processes()).  notes: say
    on stderr what was skipped or is wrong with a series."""
    if not spans_processes(list(trace)):
        return load_or_say_why(trace, notes)
    try:
        loaded = load_processes(list(trace))
    except fasttrace.FormatError as e:
        error(str(e))
        return None
    except OSError as e:
        error(os_error_text(e.filename or trace_text(trace), e))
        return None
    if notes:
        for problem in loaded.problems:
            print(f"fasttrace: note: {problem}", file=sys.stderr)
    return loaded


def process_kinds(processes: ProcessSet) -> "Optional[str]":
    """Why the processes cannot share one table or profile (recorded in different modes, or
    sampled with different clocks), or None."""
    if len({p.kind for p in processes}) <= 1:
        return None
    return ("the processes were recorded in different modes ("
            + ", ".join(f"pid {p.pid}: {p.kind}" for p in processes)
            + "); read them one at a time")


def duration_text(ns: float) -> str:
    """A duration in the unit that suits it: 1.50 s, 30.2 ms, 512 us, 80 ns."""
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            v = ns / scale
            return f"{v:.{3 if v < 10 else 2 if v < 100 else 1}f} {unit}"
    return f"{ns:.0f} ns"


def where(f: "Any") -> str:
    """Where a function lives, for a table's last column: `file.py:12`, or `[C] module` for
    a C function."""
    if f.is_c:
        return f"[C] {c_module(f)}"
    if not f.filename:
        return ""
    return f"{os.path.basename(f.filename)}:{f.lineno}"


def seconds(text: str) -> float:
    """A positive time: seconds, or a number with ns, us, ms, s, m or h (argparse type)."""
    return _time(text, positive=True)


def add_pattern_arguments(group: "argparse._ArgumentGroup", include_tail: str = "",
                          exclude_tail: str = "") -> None:
    """--include and --exclude (repeatable), as `run` and `convert` take them."""
    group.add_argument("--include", action="append", default=[], metavar="PAT",
                       help="only functions of these modules or files (repeatable): myapp, "
                            "myapp.*, */src/*" + include_tail)
    group.add_argument("--exclude", action="append", default=[], metavar="PAT",
                       help="leave out functions of these modules or files (repeatable; wins "
                            "over --include)" + exclude_tail)


def scope_error_text(e: ValueError) -> str:
    """A Scope's ValueError, named after the command-line options."""
    text = str(e)
    for name in ("include", "exclude", "max_depth", "min_duration", "trim_stacks"):
        text = text.replace(f"{name}:", f"--{name.replace('_', '-')}:")
    return text


def seconds_or_zero(text: str) -> float:
    """A time, 0 or more: seconds, or a number with ns, us, ms, s, m or h (argparse type)."""
    return _time(text, positive=False)


def _time(text: str, positive: bool) -> float:
    try:
        v = parse_seconds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if positive and not v > 0:
        raise argparse.ArgumentTypeError(f"must be a positive time, got {text!r}")
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text!r}")
    return v


def any_size(text: str) -> int:
    """A size in bytes, or with K, M or G (KiB, MiB, GiB); its bounds are checked where it is
    used."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 100M, 512K)") from None
