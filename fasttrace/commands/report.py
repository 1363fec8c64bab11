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
import time

import fasttrace
from fasttrace._calltree import CallTree, FunctionStats, ThreadStats, merged, merged_processes
from fasttrace._processes import ProcessSet
from fasttrace.commands import (add_trace_argument, duration_text, error, load_any_or_say_why,
                                process_kinds, trace_text, where)
from fasttrace.commands._tree import Unit, print_views, unmatched, views_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple, Union

    from fasttrace import Process, SamplingStats



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
                        "(repeatable; the tables only, not --tree or --callers)")
    p.add_argument("--per-thread", action="store_true", help="one table per thread as well")
    p.add_argument("--tree", action="store_true",
                   help="a call tree per thread (total and self time) instead of the tables")
    p.add_argument("--min-percent", type=float, default=1.0, metavar="P",
                   help="--tree: hide stacks under P%% of the thread's time (default 1)")
    p.add_argument("--depth", type=int, metavar="N", help="--tree: at most N frames deep")
    p.add_argument("--callers", metavar="FUNC",
                   help="the callers and callees of FUNC (a qualname, a glob of qualnames, or "
                        "FILE:LINE) instead of the tables")
    p.add_argument("--running-only", action="store_true",
                   help="sampled traces: leave out the samples of threads not holding the GIL "
                        "(sleeping, blocked, waiting), as py-spy does by default")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto")


def main(args: argparse.Namespace) -> int:
    trace = load_any_or_say_why(args.trace)
    if trace is None:
        return 1
    if isinstance(trace, ProcessSet):
        return _main_processes(trace, args)
    tid = _thread_id(trace, args.thread)
    if args.thread is not None and tid is None:
        names = ", ".join(f"{t.id} ({t.name})" for t in trace.threads)
        print(f"fasttrace: error: no thread {args.thread!r} in {trace_text(args.trace)}; "
              f"threads: {names}",
              file=sys.stderr)
        return 1
    if args.running_only and trace.mode != "sample":
        return error(_NOT_SAMPLED.format(trace_text(args.trace)))
    progress = Progress(trace) if sys.stderr.isatty() else None
    sampled = trace.mode == "sample"
    # Everything is read before anything is printed: damage found while reading gives one
    # error line, not half a report.
    try:
        tree = CallTree.build(trace, progress=progress, running_only=args.running_only)
        threads = {t: s for t, s in tree.thread_stats().items() if tid in (None, t)}
        sampling = trace.sampling  # without a clean stop: counted from the samples
    finally:
        if progress is not None:
            progress.end()
    units = [Unit(tree, threads)]
    why = unmatched(units, args.callers) if args.callers is not None else None
    if why is not None:
        return error(why)
    tables = [("all threads", merged(threads))]
    thread_names = {t.id: t.name for t in trace.threads}
    if args.per_thread or tid is not None:
        tables = ([] if tid is not None else tables) + [
            (f"thread {t.tid} {thread_names.get(t.tid, '?')}", t) for t in threads.values()]
    views = args.tree or args.callers is not None
    if args.json:
        out = _as_json(trace, sampling, tables, args)
        if views:  # the views replace the tables
            del out["tables"]
            out.update(views_json(units, args))
        json.dump(out, sys.stdout, indent=1)
        print()
        return 0
    color = _color(args)
    _print_notes(trace)
    if sampled:
        _print_sampling(trace, sampling, threads, args, color)
    if views:
        print_views(units, args, color)
        return 0
    cpu = sampling is not None and sampling.clock == "cpu"
    for title, stats in tables:
        _print_table(trace.mode, trace.function, title, stats, args, color, cpu)
    return 0


_NOT_SAMPLED = ("--running-only needs a sampled trace (fasttrace run --rate HZ): {} was traced, "
                "and a traced thread has no running or waiting state")


def _color(args: argparse.Namespace) -> bool:
    return args.color == "always" or (args.color == "auto" and sys.stdout.isatty()
                                      and not os.environ.get("NO_COLOR"))


def _print_sampling(trace: "fasttrace.Trace", s: "Optional[SamplingStats]",
                    threads: Dict[int, ThreadStats], args: argparse.Namespace,
                    color: bool, prefix: str = "") -> None:
    """The sampler's account and the threads' states; prefix: before its first line (which
    process, in a multi-process trace)."""
    bold, reset = ("\033[1m", "\033[0m") if color else ("", "")
    cpu = s is not None and s.clock == "cpu"
    if prefix:
        print(f"{bold}{prefix}{reset}")
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
    if args.running_only:  # which makes the table above all running: say why
        print("  --running-only: the samples of threads not holding the GIL are left out")
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


class Progress:
    """The events read, on stderr (a terminal): the fold calls it after each chunk, thousands
    of times a second, so the line is redrawn at most 10 times a second; done (a multi-process
    trace): [the events of the processes read before], which the caller moves on."""

    def __init__(self, trace: "Union[fasttrace.Trace, ProcessSet]",
                 done: "Optional[List[int]]" = None) -> None:
        self.total = max(trace.stats.events, 1)
        self.done = done
        self.next = 0.0
        self.shown = False

    def __call__(self, n: int) -> None:
        now = time.monotonic()
        if now < self.next:
            return
        self.next = now + 0.1
        n += self.done[0] if self.done else 0
        print(f"\rfasttrace: reading {n:,} of ~{self.total:,} events "
              f"({100 * n / self.total:.0f}%)", end="", file=sys.stderr, flush=True)
        self.shown = True

    def end(self) -> None:
        """Clears the line, so that what comes next starts on a clean one."""
        if self.shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


def _rows(function: "Callable[[int], Any]", stats: ThreadStats, args: argparse.Namespace
          ) -> List[Any]:
    """(FunctionStats, function) of the table, filtered, sorted and cut to --limit; function:
    a function id -> the function."""
    rows = []
    for fs in stats.functions.values():
        f = function(fs.fid)
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


def _print_table(mode: str, function: "Callable[[int], Any]", title: str, stats: ThreadStats,
                 args: argparse.Namespace, color: bool, cpu: bool,
                 procs: "Optional[Dict[int, List[Any]]]" = None) -> None:
    """One table; procs (a multi-process table): function id -> the processes it ran in,
    shown as a column."""
    bold, dim, reset = ("\033[1m", "\033[2m", "\033[0m") if color else ("", "", "")
    span = max(stats.traced_ns, 1)
    gaps = f", {stats.dropped:,} events dropped" if stats.dropped else ""
    if mode == "sample":
        what, count = f"sampled ({stats.samples:,} samples)", "samples"
        if cpu:
            what = f"of CPU time sampled ({stats.samples:,} samples)"
    else:
        what, count = "traced", "calls"
    print(f"{bold}{title}: {duration_text(stats.traced_ns)} {what}{gaps}{reset}")
    procs_head = "" if procs is None else f" {'procs':>5}"
    print(f"{'self ms':>11} {'self%':>6} {'total ms':>11} {'total%':>6} {count:>10}{procs_head}"
          "  function")
    for fs, f in _rows(function, stats, args):
        n = "" if procs is None else f" {len(procs.get(fs.fid, ())):5}"
        print(f"{fs.self_ns / 1e6:11.3f} {100 * fs.self_ns / span:5.1f}% "
              f"{fs.total_ns / 1e6:11.3f} {100 * fs.total_ns / span:5.1f}% {fs.calls:10,}{n}  "
              f"{f.qualname} {dim}{where(f)}{reset}")
    print()


def _as_json(trace: "fasttrace.Trace", sampling: "Optional[SamplingStats]", tables: List[Any],
             args: argparse.Namespace) -> Dict[str, Any]:
    out: Dict[str, Any] = {"trace": trace.path, "mode": trace.mode,
                           "truncated": trace.stats.truncated,
                           "dropped": trace.stats.dropped, "tables": []}
    if trace.scope is not None:
        out["scope"] = trace.scope
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
                for fs, f in _rows(trace.function, stats, args)
            ],
        })
    return out


# ---- a multi-process trace --------------------------------------------------------------------


def _main_processes(processes: ProcessSet, args: argparse.Namespace) -> int:
    why = process_kinds(processes)
    if why is not None:
        return error(f"{processes.path}: {why}")
    chosen = _choose_threads(processes, args.thread)
    if chosen is None:
        listed = ", ".join(f"{p.pid}:{t.id} ({t.name})" for p in processes
                           for t in p.trace.threads)
        return error(f"no thread {args.thread!r} in {processes.path}; threads (PID:ID): "
                     f"{listed}")
    if args.running_only and processes.mode != "sample":
        return error(_NOT_SAMPLED.format(processes.path))
    done = [0]
    progress = Progress(processes, done) if sys.stderr.isatty() else None
    sampled = processes.mode == "sample"
    # Everything is read before anything is printed (see main())
    read: List[Tuple[Process, Dict[int, ThreadStats], ThreadStats, Any]] = []
    units: List[Unit] = []
    try:
        for i, p in enumerate(processes):
            if i not in chosen:
                continue
            tree = CallTree.build(p.trace, progress=progress, running_only=args.running_only)
            threads = {t: s for t, s in tree.thread_stats().items() if chosen[i] in (None, t)}
            read.append((p, threads, merged(threads), p.trace.sampling))
            units.append(Unit(tree, threads, f"process {p.pid} {p.label}, ", p.pid))
            done[0] += p.trace.stats.events
    finally:
        if progress is not None:
            progress.end()
    why = unmatched(units, args.callers) if args.callers is not None else None
    if why is not None:
        return error(f"{processes.path}: {why}")
    total, functions, by_process = merged_processes([(p.trace, m) for p, _, m, _ in read])
    pids = {i: p.pid for i, (p, _, _, _) in enumerate(read)}
    # (title, process, thread id, stats, function id -> function, function id -> processes)
    tables: List[Tuple[str, Optional[Process], Optional[int], ThreadStats, Any, Any]] = []
    if args.thread is None:
        tables.append(("all processes", None, None, total, functions.__getitem__,
                       by_process))
        tables += [(f"process {p.pid} {p.label}", p, None, m, p.trace.function, None)
                   for p, _, m, _ in read]
    if args.per_thread or args.thread is not None:
        for p, threads, _, _ in read:
            names = {t.id: t.name for t in p.trace.threads}
            tables += [(f"process {p.pid} {p.label}, thread {t.tid} {names.get(t.tid, '?')}",
                        p, t.tid, t, p.trace.function, None) for t in threads.values()]
    views = args.tree or args.callers is not None
    if args.json:
        out = _processes_json(processes, read, tables, pids, args)
        if views:  # the views replace the tables
            del out["tables"]
            out.update(views_json(units, args))
        json.dump(out, sys.stdout, indent=1)
        print()
        return 0
    color = _color(args)
    bold, reset = ("\033[1m", "\033[0m") if color else ("", "")
    for p, _, _, _ in read:
        _print_notes(p.trace, f"process {p.pid} ({p.label}): ")
    mode = processes.mode
    print(f"{bold}{len(processes)} processes ({mode} mode), "
          f"{duration_text(processes.duration_ns)} from the first start to the last end{reset}")
    count = "events" if mode == "trace" else "samples"
    print(f"{'pid':>8} {'start':>10} {'duration':>10} {count:>11} {'threads':>7}  command")
    for p in processes:
        start = "+" + duration_text(p.start_ns) if p.start_ns else "0"
        cut = "  (truncated)" if p.trace.stats.truncated else ""
        print(f"{p.pid:8} {start:>10} {duration_text(p.trace.stats.duration_ns):>10} "
              f"{p.trace.stats.events:11,} {len(p.trace.threads):7}  {p.label}{cut}")
    print()
    cpu = False
    if sampled:
        for p, threads, _, sampling in read:
            _print_sampling(p.trace, sampling, threads, args, color,
                            f"process {p.pid} {p.label}:")
            cpu = cpu or (sampling is not None and sampling.clock == "cpu")
    if views:
        print_views(units, args, color)
        return 0
    for title, _, _, stats, function, procs in tables:
        _print_table(mode, function, title, stats, args, color, cpu, procs)
    return 0


def _print_notes(trace: "fasttrace.Trace", prefix: str = "") -> None:
    """What the report of a trace says before its tables: damage, lost hooks, lost threads."""
    names = {t.id: t.name for t in trace.threads}
    if trace.scope is not None:
        what = ("samples the scope left out count toward no time" if trace.mode == "sample"
                else "its time is its callers' self time")
        print(f"note: {prefix}a scoped trace ({trace.scope_text()}): what is out of scope was "
              f"not recorded, {what}")
    if trace.stats.truncated:
        print(f"note: {prefix}{trace.damage}")
    for lost in trace.hook_lost:
        print(f"note: {prefix}thread {lost.thread} ({names.get(lost.thread, '?')}): "
              f"{lost.what} at {duration_text(lost.ts)}; nothing of it after that is here")
    if trace.stats.lost_threads:
        print(f"note: {prefix}{trace.stats.lost_threads:,} thread(s) got no ring buffer (out of "
              "memory): not traced, their events counted as dropped")


def _choose_threads(processes: ProcessSet, which: Optional[str]
                    ) -> "Optional[Dict[int, Optional[int]]]":
    """Process index -> the thread id to read (None: all of them), for --thread PID:ID or
    NAME (a thread of that name in each process that has one); None if nothing matches."""
    if which is None:
        return {i: None for i in range(len(processes))}
    out: Dict[int, Optional[int]] = {}
    pid, _, tid = which.partition(":")
    for i, p in enumerate(processes):
        for t in p.trace.threads:
            if (tid and pid == str(p.pid) and tid == str(t.id)) or t.name == which:
                out[i] = t.id
                break
    return out or None


def _processes_json(processes: ProcessSet, read: List[Any], tables: List[Any],
                    pids: Dict[int, int], args: argparse.Namespace) -> Dict[str, Any]:
    stats = processes.stats
    out: Dict[str, Any] = {"trace": processes.path, "mode": processes.mode,
                           "truncated": stats.truncated, "dropped": stats.dropped,
                           "duration_ns": processes.duration_ns,
                           "problems": processes.problems, "processes": [], "tables": []}
    for p, _, _, sampling in read:
        t = p.trace
        out["processes"].append({
            "pid": p.pid, "label": p.label, "argv": p.argv, "paths": p.paths, "mode": p.mode,
            "start_ns": p.start_ns, "duration_ns": t.stats.duration_ns,
            "events": t.stats.events, "dropped": t.stats.dropped,
            "truncated": t.stats.truncated, "damage": t.damage,
            **({"sampling": sampling._asdict()} if sampling is not None else {}),
        })
    for title, process, tid, stats_, function, procs in tables:
        rows = []
        for fs, f in _rows(function, stats_, args):
            row = {"qualname": f.qualname, "name": f.name, "filename": f.filename,
                   "lineno": f.lineno, "module": f.module, "is_c": f.is_c, "calls": fs.calls,
                   "self_ns": fs.self_ns, "total_ns": fs.total_ns}
            if procs is not None:  # the per-process breakdown of a function of all processes
                row["processes"] = [{"pid": pids[i], "calls": one.calls, "self_ns": one.self_ns,
                                     "total_ns": one.total_ns} for i, one in procs[fs.fid]]
            rows.append(row)
        out["tables"].append({
            "title": title,
            "process": None if process is None else process.pid,
            "thread": tid,
            "traced_ns": stats_.traced_ns,
            **({"samples": stats_.samples, "idle_ns": stats_.idle_ns,
                "in_call_ns": stats_.in_call_ns} if processes.mode == "sample" else {}),
            "functions": rows,
        })
    return out
