"""`fasttrace convert TRACE --format F [-o OUT]`: a trace in the format of another tool.

    perfetto    Perfetto protobuf: ui.perfetto.dev, trace_processor
    chrome      Trace Event Format JSON: chrome://tracing, Perfetto
    speedscope  speedscope.app, one evented profile per thread
    pprof       gzipped profile.proto: go tool pprof
    collapsed   folded stacks (a;b;c weight): flamegraph.pl, speedscope

`-o -` writes to stdout.  If the trace turns out to be damaged part-way (or the output cannot
be written), the output file is removed and the error says so.

Conversion streams: memory grows with the number of distinct functions and stacks, not with
the number of events.  A trace with dropped events or a truncated tail converts too: open
frames are closed at each gap and at the end, and this command says so.

A multi-process trace (a directory of per-process traces) converts to one file: a process
track (Perfetto) or pid (Chrome) per process, with its threads; pprof samples labelled with
pid and process; collapsed stacks under a root frame per process; speedscope profiles named
with the process.  The default output is named after the directory.

Filters (one trace at a time, not a multi-process one), the same scope as `run` records:

    --include/--exclude PAT   functions in scope: module globs (myapp, myapp.*: `myapp` covers
                              its submodules) or path globs (with a / or ending .py:
                              */site-packages/*); exclude wins; with --include, the rest is out
    --max-depth N             no frame deeper than N frames kept
    --from T / --to T         a time window, relative to the trace's start (2s, 150ms, 50us);
                              frames open at its edges are cut there
    --thread ID|NAME          only these threads
    --min-duration D          no call shorter than D (its time stays its caller's); traced,
                              not sampled, traces
    --merge-threads           collapsed, pprof: one root for all threads, same stacks summed

collapsed and pprof: a frame out of scope is taken out of its stack (its time goes to the
nearest caller kept; a stack with none kept is dropped), as is everything below --max-depth.
Events formats: the calls and returns out of scope are left out, nesting stays balanced.
Sampled traces: each sample's stack keeps its frames in scope (samples with none are left
out), then its outermost --max-depth.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

import fasttrace
from fasttrace import export
from fasttrace._processes import ProcessSet
from fasttrace._scope import Scope
from fasttrace.commands import (add_pattern_arguments, add_trace_argument, error,
                                load_any_or_say_why, os_error_text, process_kinds,
                                scope_error_text, seconds_or_zero, trace_text)
from fasttrace.export._filter import Filtered

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO, Callable, List, Optional, Set, Tuple, Union


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("convert", help="convert a trace for Perfetto, Chrome, speedscope, "
                                       "pprof or flame graphs", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trace_argument(p)
    p.add_argument("-f", "--format", required=True, choices=sorted(export.FORMATS))
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file, - for stdout (default: the trace's name with the "
                        "format's suffix)")
    g = p.add_argument_group("filters", "what of the trace is converted (see above)")
    add_pattern_arguments(g)
    g.add_argument("--max-depth", type=int, metavar="N", help="no frame deeper than N")
    g.add_argument("--min-duration", type=seconds_or_zero, metavar="D",
                   help="leave out calls shorter than D (50us, 2ms, 0.5s, or seconds), "
                        "their time staying their caller's")
    g.add_argument("--from", dest="t_from", type=_when, metavar="T",
                   help="start of a time window: from the trace's start (2s, 150ms), or a "
                        "wall-clock time (10:02:03.5, 2026-11-30T10:02:03+00:00)")
    g.add_argument("--to", dest="t_to", type=_when, metavar="T",
                   help="end of the time window: from the trace's start, or a wall-clock "
                        "time")
    g.add_argument("--thread", action="append", default=[], metavar="ID|NAME",
                   help="only this thread (repeatable)")
    g.add_argument("--merge-threads", action="store_true",
                   help="collapsed, pprof: one root for all threads, identical stacks summed")


BINARY = {"perfetto", "pprof"}  # formats not written to a terminal


def main(args: argparse.Namespace) -> int:
    try:
        scope = Scope(args.include, args.exclude, args.max_depth, args.min_duration)
    except ValueError as e:
        return error(scope_error_text(e))
    why = _filter_conflict(args, scope)
    if why is not None:
        return error(why)
    trace = load_any_or_say_why(args.trace)
    if trace is None:
        return 1
    filtered = _filters_given(args, scope)
    if filtered:
        if isinstance(trace, ProcessSet):
            return error(f"{trace_text(args.trace)}: filters convert one process's trace at a "
                         "time; give one of its files")
        if trace.mode == "sample" and scope.min_duration is not None:
            return error("--min-duration: a sampled trace has no calls to measure")
        threads = _thread_ids(trace, args.thread)
        if isinstance(threads, str):
            return error(threads)
        why = _resolve_times(args, trace.header["start_wall_ns"])
        if why is not None:
            return error(why)
        window = _window(args)
        source: Union[fasttrace.Trace, ProcessSet, Filtered] = Filtered(
            trace, scope, threads, window, args.merge_threads)
    else:
        source = trace
    if isinstance(trace, ProcessSet) and args.format == "pprof":
        why = process_kinds(trace)
        if why is not None:
            return error(f"{trace.path}: {why} (pprof has one kind of sample)")
    to_stdout = args.output == "-"
    out = "stdout" if to_stdout else args.output or _default_output(
        _output_base(trace, args.trace), args.format)
    if to_stdout and args.format in BINARY and sys.stdout.isatty():
        return error(f"{args.format} is binary: not written to a terminal (use -o FILE, or "
                     "redirect stdout)")
    progress = _progress("samples" if trace.mode == "sample" else "events") \
        if sys.stderr.isatty() else None
    # A failure part-way leaves no half-written file that looks complete: a regular file this
    # command wrote is removed.  (Not a device, a FIFO or stdout, which are said to be cut.)
    removable = not to_stdout and (not os.path.lexists(out) or os.path.isfile(out))
    try:
        sink = _Sink(None if to_stdout else out)
    except OSError as e:
        return error(f"cannot write {out!r}: {e.strerror or e}")
    try:
        try:
            summary = export.write(source, sink, args.format, progress=progress)
        finally:
            sink.close()
    except BaseException as e:
        if progress is not None:
            print(file=sys.stderr)
        if isinstance(e, _WriteError) and isinstance(e.error, BrokenPipeError):
            raise e.error from None  # stdout closed: the command line ends quietly
        lost = _discard(out, removable)
        if isinstance(e, _WriteError):
            return error(f"cannot write {out!r}: {e.error.strerror or e.error}; {lost}")
        if isinstance(e, fasttrace.FormatError):  # damage found while decoding
            return error(f"{e}; {lost}")
        if isinstance(e, OSError):  # reading the trace failed
            return error(f"{os_error_text(e.filename or trace_text(args.trace), e)}; {lost}")
        if isinstance(e, MemoryError):
            return error(f"{trace_text(args.trace)}: out of memory while reading it; {lost}")
        raise
    if progress is not None:
        print(file=sys.stderr)
    notes = []
    if trace.stats.dropped:
        notes.append(f"{trace.stats.dropped:,} events were dropped while tracing; frames open "
                     "at each gap were closed there")
    if isinstance(trace, ProcessSet):
        for p in trace:
            if p.trace.stats.truncated:
                notes.append(f"the trace of process {p.pid} is truncated ({p.trace.damage}); "
                             "frames still open were closed at its end")
    elif trace.stats.truncated:
        notes.append(f"the trace is truncated ({trace.damage}); frames still open were closed "
                     "at its end")
    for note in notes:
        print(f"fasttrace: note: {note}", file=sys.stderr)
    if trace.mode == "sample":
        count = f"{summary.get('samples_read', trace.stats.events):,} samples"
    else:
        count = f"{summary.get('events', trace.stats.events):,} events"
    size = "" if to_stdout else f"{os.path.getsize(out) / 1e6:.1f} MB, " \
        if os.path.exists(out) else ""
    said = f"; filtered: {_describe(args, scope)}" if filtered else ""
    print(f"fasttrace: wrote {args.format} to {out} ({size}{count}{said})", file=sys.stderr)
    return 0


TREE_FORMATS = {"collapsed", "pprof"}  # made from the call tree


class _Clock:
    """A wall-clock time given to --from/--to, made relative once the trace is read."""

    def __init__(self, text: str, when: "Union[datetime.datetime, datetime.time]") -> None:
        self.text = text
        self.when = when


def _when(text: str) -> "Union[float, _Clock]":
    """--from/--to: seconds from the trace's start (argparse type), or with a `:` a wall-clock
    time: an ISO 8601 date and time, or a time of day on the trace's first day; local time
    unless it names its offset."""
    if ":" not in text:
        return seconds_or_zero(text)
    t = text.strip()
    try:
        return _Clock(text, datetime.datetime.fromisoformat(t))
    except ValueError:
        pass
    try:
        return _Clock(text, datetime.time.fromisoformat(t))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (seconds from the trace's start such as 2s or 150ms, or a "
            "wall-clock time such as 10:02:03.5 or 2026-11-30T10:02:03)") from None


def _resolve_times(args: argparse.Namespace, start_wall_ns: int) -> Optional[str]:
    """Turns wall-clock --from/--to into seconds from the trace's start; why not, or None."""
    start = datetime.datetime.fromtimestamp(start_wall_ns / 1e9).astimezone()
    for name, attr in (("--from", "t_from"), ("--to", "t_to")):
        value = getattr(args, attr)
        if not isinstance(value, _Clock):
            continue
        when = value.when
        if isinstance(when, datetime.time):
            when = datetime.datetime.combine(start.date(), when, tzinfo=when.tzinfo)
        if when.tzinfo is None:
            when = when.astimezone()  # local time, as `fasttrace info` shows the start
        offset = (when - start).total_seconds()
        if offset < 0:
            return (f"{name} {value.text}: before the trace began "
                    f"({start.isoformat(timespec='milliseconds')})")
        setattr(args, attr, offset)
    if args.t_from is not None and args.t_to is not None and args.t_from > args.t_to:
        return "--from is after --to"
    return None


def _filter_conflict(args: argparse.Namespace, scope: Scope) -> Optional[str]:
    """Why these filters cannot be applied in this format, or None (before anything is read)."""
    if args.merge_threads and args.format not in TREE_FORMATS:
        return f"--merge-threads: collapsed and pprof only (not {args.format})"
    if isinstance(args.t_from, float) and isinstance(args.t_to, float) and \
            args.t_from > args.t_to:
        return "--from is after --to"
    return None


def _filters_given(args: argparse.Namespace, scope: Scope) -> bool:
    return bool(scope.describe() or args.thread or args.merge_threads
                or args.t_from is not None or args.t_to is not None)


def _window(args: argparse.Namespace) -> "Optional[Tuple[Optional[int], Optional[int]]]":
    if args.t_from is None and args.t_to is None:
        return None
    return (None if args.t_from is None else round(args.t_from * 1e9),
            None if args.t_to is None else round(args.t_to * 1e9))


def _thread_ids(trace: fasttrace.Trace, which: "List[str]") -> "Union[Set[int], str, None]":
    """The ids of the threads named (by id or name), None for all, or why one is unknown."""
    if not which:
        return None
    out: Set[int] = set()
    for w in which:
        ids = {t.id for t in trace.threads if str(t.id) == w or t.name == w}
        if not ids:
            names = ", ".join(f"{t.id} ({t.name})" for t in trace.threads)
            return f"--thread: no thread {w!r} in {trace.path}; threads: {names}"
        out |= ids
    return out


def _describe(args: argparse.Namespace, scope: Scope) -> str:
    said = [scope.describe()] if scope.describe() else []
    if args.t_from is not None or args.t_to is not None:
        said.append(f"window {args.t_from or 0:g} s to "
                    + ("the end" if args.t_to is None else f"{args.t_to:g} s"))
    if args.thread:
        said.append("threads " + ", ".join(args.thread))
    if args.merge_threads:
        said.append("threads merged")
    return "; ".join(said)


class _WriteError(Exception):
    """Writing the output failed (an OSError there is not one of reading the trace)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Sink:
    """The binary output the exporters write to: the file at `path`, or stdout (None)."""

    def __init__(self, path: Optional[str]) -> None:
        if path is None:
            sys.stdout.flush()
            self.f: BinaryIO = sys.stdout.buffer
        else:
            self.f = open(path, "wb")
        self.close_it = path is not None

    def write(self, data: bytes) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            raise _WriteError(e) from None

    def flush(self) -> None:
        try:
            self.f.flush()
        except OSError as e:
            raise _WriteError(e) from None

    def close(self) -> None:
        try:
            if self.close_it:
                self.f.close()
            else:
                self.f.flush()
        except OSError as e:
            raise _WriteError(e) from None


def _discard(out: str, removable: bool) -> str:
    """Removes what was written of `out` if it is a regular file; says what became of it."""
    if out == "stdout":
        return "the output on stdout is incomplete"
    if removable:
        try:
            os.remove(out)
        except FileNotFoundError:
            return f"nothing written to {out}"
        except OSError:
            return f"{out} is incomplete"
        return f"nothing written to {out}"
    return f"the output to {out} is incomplete"


def _output_base(trace: "Union[fasttrace.Trace, ProcessSet]", given: List[str]) -> str:
    """What the default output is named after: the directory of a multi-process trace given
    as one, else the (first) trace file."""
    if isinstance(trace, ProcessSet):
        if len(given) == 1 and os.path.isdir(given[0]):
            return os.path.normpath(given[0])
        return trace[0].path
    return trace.path


def _default_output(trace_path: str, fmt: str) -> str:
    base = trace_path[:-len(".ftrace")] if trace_path.endswith(".ftrace") else trace_path
    return base + export.suffix(fmt)


def _progress(what: str) -> "Callable[[int, Optional[int]], None]":
    def show(done: int, total: Optional[int] = None) -> None:
        share = f" ({100 * done / total:.0f}%)" if total else ""
        print(f"\rfasttrace: converting {done:,} {what}{share}", end="", file=sys.stderr,
              flush=True)

    return show
