"""`fasttrace report TRACE`: the top functions by self and total time, per thread and overall.

Like `pprof -top` or pstats: self time (the function was the innermost frame), total time (its
outermost activations; recursion is not counted twice), calls, and both as a share of the
traced time.  For a sampled trace the times are estimates from the samples' weights, a
samples column replaces calls, and a table of threads (--limit rows) says how much of their
time each spent running Python and waiting (wall clock), or how much of their CPU time they
held the GIL (cpu clock).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys

import fasttrace
from fasttrace.commands import (add_trace_argument, duration_text, load_or_say_why, trace_text,
                                where)
from fasttrace._analysis import FunctionStats, ThreadStats, function_stats, merged, sample_stats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional

    from fasttrace import SamplingStats



def _sort_key(by: str) -> "Callable[[FunctionStats], int]":
    if by == "total":
        return lambda f: -f.total_ns
    if by == "calls":
        return lambda f: -f.calls
    return lambda f: -f.self_ns


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("report", help="top functions by self and total time")
    add_trace_argument(p)
    p.add_argument("--sort", choices=["self", "total", "calls", "name"], default="self")
    p.add_argument("--limit", type=int, default=20, metavar="N", help="rows per table (0: all)")
    p.add_argument("--thread", metavar="ID|NAME", help="only this thread (id or name)")
    p.add_argument("--filter", metavar="PATTERN", action="append", default=[],
                   help="only functions whose file, module or qualname matches this glob "
                        "(repeatable)")
    p.add_argument("--per-thread", action="store_true", help="one table per thread as well")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto")


def main(args: argparse.Namespace) -> int:
    trace = load_or_say_why(args.trace)
    if trace is None:
        return 1
    tid = _thread_id(trace, args.thread)
    if args.thread is not None and tid is None:
        names = ", ".join(f"{t.id} ({t.name})" for t in trace.threads)
        print(f"fasttrace: error: no thread {args.thread!r} in {trace_text(args.trace)}; "
              f"threads: {names}",
              file=sys.stderr)
        return 1
    progress = _progress(trace) if sys.stderr.isatty() else None
    sampled = trace.mode == "sample"
    # Everything is read before anything is printed: damage found while reading gives one
    # error line, not half a report.
    try:
        threads = (sample_stats if sampled else function_stats)(trace, tid, progress)
        sampling = trace.sampling  # without a clean stop: counted from the samples
    finally:
        if progress is not None:
            print(file=sys.stderr)
    tables = [("all threads", merged(threads))]
    thread_names = {t.id: t.name for t in trace.threads}
    if args.per_thread or tid is not None:
        tables = ([] if tid is not None else tables) + [
            (f"thread {t.tid} {thread_names.get(t.tid, '?')}", t) for t in threads.values()]
    if args.json:
        json.dump(_as_json(trace, sampling, tables, args), sys.stdout, indent=1)
        print()
        return 0
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty()
                                       and not os.environ.get("NO_COLOR"))
    if trace.stats.truncated:
        print(f"note: {trace.damage}")
    for lost in trace.hook_lost:
        print(f"note: thread {lost.thread} ({thread_names.get(lost.thread, '?')}): "
              f"{lost.what} at {duration_text(lost.ts)}; nothing of it after that is here")
    if trace.stats.lost_threads:
        print(f"note: {trace.stats.lost_threads:,} thread(s) got no ring buffer (out of "
              "memory): not traced, their events counted as dropped")
    if sampled:
        _print_sampling(trace, sampling, threads, args, color)
    cpu = sampling is not None and sampling.clock == "cpu"
    for title, stats in tables:
        _print_table(trace, title, stats, args, color, cpu)
    return 0


def _print_sampling(trace: "fasttrace.Trace", s: "Optional[SamplingStats]",
                    threads: Dict[int, ThreadStats], args: argparse.Namespace,
                    color: bool) -> None:
    bold, reset = ("\033[1m", "\033[0m") if color else ("", "")
    cpu = s is not None and s.clock == "cpu"
    if s is not None:
        met = "" if s.rate_met else "  RATE NOT MET: times are estimates from fewer samples"
        print(f"{bold}sampled {s.clock} clock at {s.rate:g} Hz: achieved {s.achieved_rate:.1f} "
              f"Hz, {s.samples:,} samples{reset}{met}")
        if s.torn or s.dropped or s.truncated:
            print(f"  {s.torn:,} samples torn, {s.dropped:,} dropped, {s.truncated:,} cut at "
                  f"the maximum depth")
    names = {t.id: t.name for t in trace.threads}
    rows = sorted(threads.values(), key=lambda t: (-t.traced_ns, t.tid))
    shown = rows[:args.limit] if args.limit > 0 else rows
    if cpu:
        # Every sample is CPU time; the state says whether the thread held the GIL while it
        # used the CPU (C code such as numpy, zlib or hashing runs with it released).
        print(f"{'samples':>9} {'cpu ms':>11} {'GIL held%':>10} {'released%':>10}  thread")
        for t in shown:
            span = max(t.traced_ns, 1)
            print(f"{t.samples:9,} {t.traced_ns / 1e6:11.3f} "
                  f"{100 * (t.traced_ns - t.idle_ns) / span:9.1f}% "
                  f"{100 * t.idle_ns / span:9.1f}%  {t.tid} {names.get(t.tid, '?')}")
    else:
        # running: held the GIL; waiting: did not (in call: blocked inside a call such as
        # sleep, recv or lock.acquire, rather than waiting for the GIL)
        print(f"{'samples':>9} {'running%':>9} {'waiting%':>9} {'in call%':>9}  thread")
        for t in shown:
            span = max(t.traced_ns, 1)
            print(f"{t.samples:9,} {100 * (t.traced_ns - t.idle_ns) / span:8.1f}% "
                  f"{100 * t.idle_ns / span:8.1f}% {100 * t.in_call_ns / span:8.1f}%  "
                  f"{t.tid} {names.get(t.tid, '?')}")
    if len(shown) < len(rows):
        print(f"  ... and {len(rows) - len(shown):,} more threads (--limit 0 lists them all)")
    print(f"  {_STATES_CPU if cpu else _STATES_WALL}")
    print()


_STATES_WALL = ("running: held the GIL; waiting: did not; in call: waiting inside a call "
                "(sleep, recv, lock.acquire, ...)")
_STATES_CPU = ("cpu clock: every sample is CPU time; GIL held: running Python (or C with the "
               "GIL), released: C code running without the GIL (numpy, zlib, hashing)")


def _thread_id(trace: "fasttrace.Trace", which: Optional[str]) -> Optional[int]:
    if which is None:
        return None
    for t in trace.threads:
        if str(t.id) == which or t.name == which:
            return t.id
    return None


def _progress(trace: "fasttrace.Trace") -> Callable[[int], None]:
    total = max(trace.stats.events, 1)

    def show(n: int) -> None:
        print(f"\rfasttrace: reading {n:,} of ~{total:,} events ({100 * n / total:.0f}%)",
              end="", file=sys.stderr, flush=True)

    return show


def _rows(trace: "fasttrace.Trace", stats: ThreadStats, args: argparse.Namespace) -> List[Any]:
    rows = []
    for fs in stats.functions.values():
        f = trace.function(fs.fid)
        if args.filter and not any(
            fnmatch.fnmatch(f.filename, p) or fnmatch.fnmatch(f.module, p)
            or fnmatch.fnmatch(f.qualname, p) for p in args.filter
        ):
            continue
        rows.append((fs, f))
    if args.sort == "name":
        rows.sort(key=lambda r: r[1].qualname)
    else:
        key = _sort_key(args.sort)
        rows.sort(key=lambda r: (key(r[0]), r[1].qualname))
    return rows[: args.limit] if args.limit > 0 else rows


def _print_table(trace: "fasttrace.Trace", title: str, stats: ThreadStats,
                 args: argparse.Namespace, color: bool, cpu: bool) -> None:
    bold, dim, reset = ("\033[1m", "\033[2m", "\033[0m") if color else ("", "", "")
    span = max(stats.traced_ns, 1)
    gaps = f", {stats.dropped:,} events dropped" if stats.dropped else ""
    if trace.mode == "sample":
        what, count = f"sampled ({stats.samples:,} samples)", "samples"
        if cpu:
            what = f"of CPU time sampled ({stats.samples:,} samples)"
    else:
        what, count = "traced", "calls"
    print(f"{bold}{title}: {duration_text(stats.traced_ns)} {what}{gaps}{reset}")
    print(f"{'self ms':>11} {'self%':>6} {'total ms':>11} {'total%':>6} {count:>10}  function")
    for fs, f in _rows(trace, stats, args):
        print(f"{fs.self_ns / 1e6:11.3f} {100 * fs.self_ns / span:5.1f}% "
              f"{fs.total_ns / 1e6:11.3f} {100 * fs.total_ns / span:5.1f}% {fs.calls:10,}  "
              f"{f.qualname} {dim}{where(f)}{reset}")
    print()


def _as_json(trace: "fasttrace.Trace", sampling: "Optional[SamplingStats]", tables: List[Any],
             args: argparse.Namespace) -> Dict[str, Any]:
    out: Dict[str, Any] = {"trace": trace.path, "mode": trace.mode,
                           "truncated": trace.stats.truncated,
                           "dropped": trace.stats.dropped, "tables": []}
    if sampling is not None:
        out["sampling"] = sampling._asdict()
    for title, stats in tables:
        out["tables"].append({
            "title": title,
            "thread": stats.tid or None,
            "traced_ns": stats.traced_ns,
            **({"samples": stats.samples, "idle_ns": stats.idle_ns,
                "in_call_ns": stats.in_call_ns} if trace.mode == "sample" else {}),
            "functions": [
                {"qualname": f.qualname, "name": f.name, "filename": f.filename,
                 "lineno": f.lineno, "module": f.module, "is_c": f.is_c, "calls": fs.calls,
                 "self_ns": fs.self_ns, "total_ns": fs.total_ns}
                for fs, f in _rows(trace, stats, args)
            ],
        })
    return out
