"""`fasttrace info TRACE`: the header, duration, counts, threads and damage of a trace.

Threads are listed busiest first (most records, or samples); beyond a screenful, the busiest
20 and one line that says how many more there are (--all-threads lists them all).

A multi-process trace (a directory of per-process traces): the totals, a line per process,
then each process as for one trace.
"""

from __future__ import annotations

import argparse
import datetime

import fasttrace
from fasttrace._processes import ProcessSet
from fasttrace.commands import add_trace_argument, duration_text, load_any_or_say_why

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Tuple

    Described = Tuple[List[Tuple[str, str]], List[Any], Dict[int, int], str]

MAX_SAMPLE_DEPTH = 1024  # the deepest stack the sampler reads (FORMAT.md section 8)
THREADS_SHOWN = 20  # busiest threads listed without --all-threads
ALL_UP_TO = 25  # ... unless there are no more than this many


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("info", help="summarise a trace file")
    add_trace_argument(p)
    p.add_argument("--all-threads", action="store_true",
                   help=f"list every thread (default: the {THREADS_SHOWN} busiest when there "
                        f"are more than {ALL_UP_TO})")


def main(args: argparse.Namespace) -> int:
    loaded = load_any_or_say_why(args.trace, notes=False)
    if loaded is None:
        return 1
    if isinstance(loaded, ProcessSet):
        return _main_processes(loaded, args)
    # Everything is read before anything is printed: damage found while reading gives one
    # error line, not half a summary.
    _show(_describe(loaded), args)
    return 0


def _describe(trace: "fasttrace.Trace") -> "Described":
    """What info shows of one trace: (rows, threads, thread id -> records or samples, unit).
    Reads the whole trace (sampled: its samples)."""
    h, s = trace.header, trace.stats
    started = datetime.datetime.fromtimestamp(h["start_wall_ns"] / 1e9).astimezone()
    sampling = trace.sampling
    counts: Dict[int, int] = {}
    if sampling is not None:
        for smp in trace.samples():
            counts[smp.thread] = counts.get(smp.thread, 0) + 1
    else:
        counts = dict(trace.thread_records)
    rows: List[Tuple[str, str]] = [
        ("file", trace.path),
        ("format", f"version {h['format_version']}, {h['mode']} mode"),
        ("python", (h["python_version"].split() or ["?"])[0] + (
            " (sampled: no hook)" if h["mode"] == "sample" else f" (hook: {h['hook']}"
            + ("; the frame evaluator was taken by another tool" if h.get("hook_fallback")
               else "") + ")")),
        ("command", " ".join(h["argv"])),
        ("pid", str(h["pid"])),
        ("started", started.isoformat(timespec="milliseconds")),
        ("duration", duration_text(s.duration_ns)),
        ("events", f"{s.events:,}"),
        ("dropped", f"{s.dropped:,}"),
        ("c calls", "recorded" if h["c_calls"] else "not recorded"),
        ("functions", f"{len(trace.functions):,}"),
        ("clock", f"{h['clock']} at {h['tick_hz'] / 1e9:.3f} GHz"),
        ("complete", "no: truncated" if s.truncated else "yes"),
    ]
    if h.get("origin", "capture") != "capture":
        rows.insert(2, ("origin", {"flight": "a flight-recorder dump",
                                   "series": "a file of a rotated series"}.get(
                                       h["origin"], str(h["origin"]))))
    if h.get("series_index"):
        first = h["series_index"]
        rows.insert(1, ("series", f"id 0x{h['series_id']:016x}, {len(trace.paths)} file(s) "
                                  f"from file {first}: {' '.join(trace.paths)}"))
    for problem in trace.series_problems:
        rows.append(("series problem", problem))
    if sampling is not None:
        # by name: the origin and series rows may have been inserted above
        at = {name: i for i, (name, _) in enumerate(rows)}
        rows[at["events"]] = ("samples", f"{sampling.samples:,}")
        rows[at["c calls"]] = ("sampling", (
            f"{sampling.clock} clock, {sampling.rate:g} Hz requested, "
            f"{sampling.achieved_rate:.1f} Hz achieved"
            + ("" if sampling.rate_met else " (RATE NOT MET)")
            + (", real-time sampler" if sampling.realtime else "")))
        said = []
        if sampling.torn or sampling.truncated or sampling.late_ticks:
            said.append(f"{sampling.torn:,} torn, {sampling.truncated:,} cut at "
                        f"{MAX_SAMPLE_DEPTH} frames, {sampling.late_ticks:,} late ticks")
        if sampling.out_of_scope or (trace.scope is not None and
                                     sampling.effective_rate is not None):
            # (effective_rate None: no stats were written, a process killed before stop())
            said.append(f"{sampling.out_of_scope:,} samples left out: the scope kept none "
                        "of their frames")
        if said:
            rows.append(("sampler", "; ".join(said)))
    if s.lost_threads:
        rows.append(("not traced", f"{s.lost_threads:,} thread(s) got no ring buffer (out of "
                                   "memory); their events are counted as dropped"))
    names = {t.id: t.name for t in trace.threads}
    for lost in trace.hook_lost:
        rows.append(("hook lost", f"thread {lost.thread} ({names.get(lost.thread, '?')}) at "
                                  f"{duration_text(lost.ts)}: {lost.what}; nothing of it after "
                                  "that was recorded"))
    if trace.scope is not None:
        recorded = "only what is in scope was recorded"
        if sampling is not None and (trace.scope.get("include") or trace.scope.get("exclude")):
            recorded = ("only the in-scope frames of samples were recorded"
                        if trace.scope.get("trim_stacks") else
                        "only samples with a frame in scope were recorded, whole")
        rows.append(("scope", (trace.scope_text() or "none") + f" ({recorded})"))
    if trace.damage:
        rows.append(("damage", trace.damage))
    threads = sorted(trace.threads, key=lambda t: (-counts.get(t.id, 0), t.id))
    unit = "samples" if sampling is not None else "records"
    return rows, threads, counts, unit


def _show(described: "Described", args: argparse.Namespace, indent: str = "") -> None:
    rows, threads, counts, unit = described
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{indent}{k:<{width}}  {v}")
    shown = threads if args.all_threads or len(threads) <= ALL_UP_TO else \
        threads[:THREADS_SHOWN]
    busiest = "" if len(shown) == len(threads) else f", the {len(shown)} busiest"
    print(f"{indent}threads ({len(threads):,}{busiest}):")
    for t in shown:
        print(f"{indent}  {t.id:>4}  {t.name:<24} ident {t.ident}  tid {t.native_id}  "
              f"{counts.get(t.id, 0):,} {unit}")
    if len(shown) < len(threads):
        rest = threads[len(shown):]
        print(f"{indent}  ... and {len(rest):,} more threads with "
              f"{sum(counts.get(t.id, 0) for t in rest):,} {unit} "
              f"(fasttrace info --all-threads {' '.join(args.trace)} lists them)")


def _main_processes(processes: ProcessSet, args: argparse.Namespace) -> int:
    """A multi-process trace: the totals and a line per process, then each process as info
    shows a trace (indented)."""
    described = [_describe(p.trace) for p in processes]  # everything read before printing
    stats = processes.stats
    started = datetime.datetime.fromtimestamp(processes.start_wall_ns / 1e9).astimezone()
    truncated = [p for p in processes if p.trace.stats.truncated]
    sampled = processes.mode == "sample"
    rows: List[Tuple[str, str]] = [
        ("trace", processes.path),
        ("processes", f"{len(processes)}, {processes.mode} mode"),
        ("files", f"{len(processes.paths)}"),
        ("started", started.isoformat(timespec="milliseconds")),
        ("duration", f"{duration_text(processes.duration_ns)} (from the first start to the "
                     "last end)"),
        ("samples" if sampled else "events",
         f"{sum(sum(c.values()) for _, _, c, _ in described) if sampled else stats.events:,}"),
        ("dropped", f"{stats.dropped:,}"),
        ("threads", f"{sum(len(p.trace.threads) for p in processes):,}"),
        ("complete", "yes" if not truncated else
         f"no: {len(truncated)} of {len(processes)} truncated "
         f"(pid {', '.join(str(p.pid) for p in truncated)})"),
    ]
    if processes.aligned_by != "monotonic":
        rows.append(("time axis", f"{processes.aligned_by} clock (the monotonic clocks "
                                  "disagree)"))
    for problem in processes.problems:
        rows.append(("problem", problem))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"{'pid':>8} {'start':>10} {'duration':>10} {'threads':>7}  command")
    for p in processes:
        start = "+" + duration_text(p.start_ns) if p.start_ns else "0"
        cut = "  (truncated)" if p.trace.stats.truncated else ""
        print(f"{p.pid:8} {start:>10} {duration_text(p.trace.stats.duration_ns):>10} "
              f"{len(p.trace.threads):7}  {p.label}{cut}")
    for p, d in zip(processes, described):
        print()
        start = f"+{duration_text(p.start_ns)}" if p.start_ns else "0"
        print(f"process {p.pid} ({p.label}), starts at {start}:")
        _show(d, args, "  ")
    return 0
