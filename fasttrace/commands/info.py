"""`fasttrace info TRACE`: the header, duration, counts, threads and damage of a trace."""

from __future__ import annotations

import argparse
import datetime

from fasttrace.commands import load_or_say_why


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("info", help="summarise a trace file")
    p.add_argument("trace", help="a .ftrace file")


def main(args: argparse.Namespace) -> int:
    trace = load_or_say_why(args.trace)
    if trace is None:
        return 1
    h, s = trace.header, trace.stats
    started = datetime.datetime.fromtimestamp(h["start_wall_ns"] / 1e9).astimezone()
    per_thread = trace._file.thread_records
    rows = [
        ("file", trace.path),
        ("format", f"version {h['format_version']}, {h['mode']} mode"),
        ("python", h["python_version"].split()[0] + f" (hook: {h['hook']})"),
        ("command", " ".join(h["argv"])),
        ("pid", str(h["pid"])),
        ("started", started.isoformat(timespec="milliseconds")),
        ("duration", f"{s.duration_ns / 1e9:.6f} s"),
        ("events", f"{s.events:,}"),
        ("dropped", f"{s.dropped:,}"),
        ("c calls", "recorded" if h["c_calls"] else "not recorded"),
        ("functions", f"{len(trace.functions):,}"),
        ("clock", f"{h['clock']} at {h['tick_hz'] / 1e9:.3f} GHz"),
        ("complete", "no: truncated" if s.truncated else "yes"),
    ]
    if trace.damage:
        rows.append(("damage", trace.damage))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print(f"threads ({len(trace.threads)}):")
    for t in trace.threads:
        print(f"  {t.id:>4}  {t.name:<24} ident {t.ident}  tid {t.native_id}  "
              f"{per_thread.get(t.id, 0):,} records")
    return 0
