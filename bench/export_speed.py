"""Exporter speed and memory: events per second for each format in fasttrace.export.FORMATS.

    bench/.venvs/3.13/bin/python bench/export_speed.py [TRACE] [--format perfetto ...] [--keep DIR]

Run it with a Python that has fasttrace installed. If TRACE does not exist it is first made by
tracing the fib workload (bench/runners/fasttrace_run.py). Each format is converted in a fresh
process, so its peak RSS (getrusage ru_maxrss) is its own: the growth from after load() to the
end of the conversion is the exporter's memory. RssAnon (Linux: the process's heap, not the
mapped trace file) is also sampled as the conversion goes on, to show that it stays flat as
events go by. Target: >= 1M events/s (wall clock; the rate per CPU second, printed too, is
less sensitive to a busy machine).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULT_TRACE = BENCH / "out" / "decode_fib.ftrace"
TARGET_EVENTS_PER_S = 1e6


def make_trace(path):
    print(f"{os.path.relpath(path)} missing: tracing bench/workloads/fib.py to make it",
          file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    runner = BENCH / "runners" / "fasttrace_run.py"
    workload = BENCH / "workloads" / "fib.py"
    subprocess.run([sys.executable, str(runner), str(workload), str(path)], check=True)


def maxrss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def rss_anon_kib():
    """The process's anonymous resident memory (Linux), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def child(fmt, trace_path, out_path):
    """Converts once and prints one JSON line of measurements."""
    import fasttrace
    from fasttrace import export

    write = export.writer(fmt)
    trace = fasttrace.load(trace_path)
    before = maxrss_kib()
    anon = []  # (fraction done, RssAnon KiB)
    next_sample = [0.0]

    def progress(done, total):
        if done / total >= next_sample[0]:
            anon.append((round(done / total, 2), rss_anon_kib()))
            next_sample[0] += 0.1

    t0, c0 = time.perf_counter(), time.process_time()
    result = write(trace, out_path, progress=progress)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({
        "format": fmt,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "events": trace.stats.events,
        "result": result,
        "maxrss_before_kib": before,
        "maxrss_after_kib": maxrss_kib(),
        "rss_anon_kib": anon,
        "out_bytes": os.path.getsize(out_path),
    }, default=str))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace", nargs="?", default=str(DEFAULT_TRACE), help="a fasttrace trace file")
    ap.add_argument("--format", action="append", help="only this format (repeatable)")
    ap.add_argument("--keep", metavar="DIR", help="keep the converted files in DIR")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    try:
        from fasttrace import export
    except ImportError as e:
        sys.exit(f"export_speed: cannot import fasttrace with {sys.executable}: {e}")

    path = Path(args.trace)
    if not path.exists():
        make_trace(path)
    formats = args.format or sorted(export.FORMATS)
    unknown = [f for f in formats if f not in export.FORMATS]
    if unknown:
        sys.exit(f"export_speed: unknown format(s) {unknown}; known: {sorted(export.FORMATS)}")
    print(f"trace: {os.path.relpath(path)} ({path.stat().st_size / 2**20:.1f} MiB)")
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = Path(args.keep or tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        for fmt in formats:
            out = out_dir / (path.stem + export.suffix(fmt))
            proc = subprocess.run(
                [sys.executable, __file__, "--child", fmt, str(path), str(out)],
                stdout=subprocess.PIPE, text=True,
            )
            if proc.returncode != 0:
                print(f"{fmt:>10}: FAILED (exit {proc.returncode})")
                continue
            report(json.loads(proc.stdout.strip().splitlines()[-1]))


def report(m):
    rate = m["events"] / m["seconds"] if m["seconds"] > 0 else float("inf")
    growth = (m["maxrss_after_kib"] - m["maxrss_before_kib"]) / 1024
    anon = [kib for _, kib in m["rss_anon_kib"] if kib is not None]
    flat = f", RssAnon {min(anon) / 1024:.1f}..{max(anon) / 1024:.1f} MiB" if anon else ""
    verdict = "PASS" if rate >= TARGET_EVENTS_PER_S else "FAIL"
    cpu_rate = m["events"] / m["cpu_seconds"] if m["cpu_seconds"] > 0 else float("inf")
    print(f"{m['format']:>10}: {m['events']:,} events in {m['seconds']:.2f} s = "
          f"{rate / 1e6:.2f}M events/s [{verdict} >= {TARGET_EVENTS_PER_S / 1e6:.0f}M/s] "
          f"({cpu_rate / 1e6:.2f}M/s of CPU time); "
          f"output {m['out_bytes'] / 2**20:.1f} MiB ({m['out_bytes'] / max(m['events'], 1):.1f}"
          f" B/event); peak RSS growth {growth:.1f} MiB{flat}")


if __name__ == "__main__":
    main()
