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
        ("python", h["python_version"].split()[0] + (
            " (sampled: no hook)" if h["mode"] == "sample" else f" (hook: {h['hook']})")),
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
    sampling = trace.sampling
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
    if trace.damage:
        rows.append(("damage", trace.damage))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    samples: "dict[int, int]" = {}
    if sampling is not None:
        for smp in trace.samples():
            samples[smp.thread] = samples.get(smp.thread, 0) + 1
    print(f"threads ({len(trace.threads)}):")
    for t in trace.threads:
        count = samples.get(t.id, 0) if sampling is not None else per_thread.get(t.id, 0)
        print(f"  {t.id:>4}  {t.name:<24} ident {t.ident}  tid {t.native_id}  "
              f"{count:,} {'samples' if sampling is not None else 'records'}")
    return 0
