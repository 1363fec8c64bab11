"""`fasttrace info TRACE`: the header, duration, counts, threads and damage of a trace.

Threads are listed busiest first (most records, or samples); beyond a screenful, the busiest
20 and one line that says how many more there are (--all-threads lists them all).
"""

from __future__ import annotations

import argparse
import datetime

from fasttrace.commands import add_trace_argument, duration_text, load_or_say_why

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Tuple

THREADS_SHOWN = 20  # busiest threads listed without --all-threads
ALL_UP_TO = 25  # ... unless there are no more than this many


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("info", help="summarise a trace file")
    add_trace_argument(p)
    p.add_argument("--all-threads", action="store_true",
                   help=f"list every thread (default: the {THREADS_SHOWN} busiest when there "
                        f"are more than {ALL_UP_TO})")


def main(args: argparse.Namespace) -> int:
    trace = load_or_say_why(args.trace, notes=False)
    if trace is None:
        return 1
    # Everything is read before anything is printed: damage found while reading gives one
    # error line, not half a summary.
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
        rows[7] = ("samples", f"{sampling.samples:,}")
        rows[9] = ("sampling", (
            f"{sampling.clock} clock, {sampling.rate:g} Hz requested, "
            f"{sampling.achieved_rate:.1f} Hz achieved"
            + ("" if sampling.rate_met else " (RATE NOT MET)")
            + (", real-time sampler" if sampling.realtime else "")))
        if sampling.torn or sampling.truncated or sampling.late_ticks:
            rows.append(("sampler", f"{sampling.torn:,} torn, {sampling.truncated:,} cut at the "
                                    f"maximum depth, {sampling.late_ticks:,} late ticks"))
    if s.lost_threads:
        rows.append(("not traced", f"{s.lost_threads:,} thread(s) got no ring buffer (out of "
                                   "memory); their events are counted as dropped"))
    names = {t.id: t.name for t in trace.threads}
    for lost in trace.hook_lost:
        rows.append(("hook lost", f"thread {lost.thread} ({names.get(lost.thread, '?')}) at "
                                  f"{duration_text(lost.ts)}: {lost.what}; nothing of it after "
                                  "that was recorded"))
    if trace.damage:
        rows.append(("damage", trace.damage))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")

    threads = sorted(trace.threads, key=lambda t: (-counts.get(t.id, 0), t.id))
    shown = threads if args.all_threads or len(threads) <= ALL_UP_TO else \
        threads[:THREADS_SHOWN]
    unit = "samples" if sampling is not None else "records"
    busiest = "" if len(shown) == len(threads) else f", the {len(shown)} busiest"
    print(f"threads ({len(threads):,}{busiest}):")
    for t in shown:
        print(f"  {t.id:>4}  {t.name:<24} ident {t.ident}  tid {t.native_id}  "
              f"{counts.get(t.id, 0):,} {unit}")
    if len(shown) < len(threads):
        rest = threads[len(shown):]
        print(f"  ... and {len(rest):,} more threads with "
              f"{sum(counts.get(t.id, 0) for t in rest):,} {unit} "
              f"(fasttrace info --all-threads {' '.join(args.trace)} lists them)")
    return 0
