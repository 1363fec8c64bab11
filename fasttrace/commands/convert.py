"""`fasttrace convert TRACE --format F [-o OUT]`: a trace in the format of another tool.

    perfetto    Perfetto protobuf: ui.perfetto.dev, trace_processor
    chrome      Trace Event Format JSON: chrome://tracing, Perfetto
    speedscope  speedscope.app, one evented profile per thread
    pprof       gzipped profile.proto: go tool pprof
    collapsed   folded stacks (a;b;c weight): flamegraph.pl, speedscope

Conversion streams: memory grows with the number of distinct functions and stacks, not with
the number of events.  A trace with dropped events or a truncated tail converts too: open
frames are closed at each gap and at the end, and this command says so.
"""

from __future__ import annotations

import argparse
import os
import sys

import fasttrace
from fasttrace.commands import load_or_say_why
from fasttrace import export

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("convert", help="convert a trace for Perfetto, Chrome, speedscope, "
                                       "pprof or flame graphs", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trace", help="a .ftrace file")
    p.add_argument("-f", "--format", required=True, choices=sorted(export.FORMATS))
    p.add_argument("-o", "--output", metavar="OUT",
                   help="output file (default: the trace's name with the format's suffix)")


def main(args: argparse.Namespace) -> int:
    trace = load_or_say_why(args.trace)
    if trace is None:
        return 1
    out = args.output or _default_output(args.trace, args.format)
    progress = _progress("samples" if trace.mode == "sample" else "events") \
        if sys.stderr.isatty() else None
    try:
        summary = export.write(trace, out, args.format, progress=progress)
    except OSError as e:
        print(f"fasttrace: error: cannot write {out!r}: {e.strerror or e}", file=sys.stderr)
        return 1
    except fasttrace.FormatError as e:  # damage found while decoding events
        print(f"fasttrace: error: {e}", file=sys.stderr)
        return 1
    if progress is not None:
        print(file=sys.stderr)
    notes = []
    if trace.stats.dropped:
        notes.append(f"{trace.stats.dropped:,} events were dropped while tracing; frames open "
                     "at each gap were closed there")
    if trace.stats.truncated:
        notes.append(f"the trace is truncated ({trace.damage}); frames still open were closed "
                     "at its end")
    for note in notes:
        print(f"fasttrace: note: {note}", file=sys.stderr)
    size = os.path.getsize(out) if os.path.exists(out) else 0
    if trace.mode == "sample":
        count = f"{summary.get('samples_read', trace.stats.events):,} samples"
    else:
        count = f"{summary.get('events', trace.stats.events):,} events"
    print(f"fasttrace: wrote {args.format} to {out} ({size / 1e6:.1f} MB, {count})",
          file=sys.stderr)
    return 0


def _default_output(trace_path: str, fmt: str) -> str:
    base = trace_path[:-len(".ftrace")] if trace_path.endswith(".ftrace") else trace_path
    return base + export.suffix(fmt)


def _progress(what: str) -> "Callable[[int, Optional[int]], None]":
    def show(done: int, total: Optional[int] = None) -> None:
        share = f" ({100 * done / total:.0f}%)" if total else ""
        print(f"\rfasttrace: converting {done:,} {what}{share}", end="", file=sys.stderr,
              flush=True)

    return show
