"""Reader speed: events per second decoded by fasttrace.load(path).events().

    bench/.venvs/3.13/bin/python bench/decode_speed.py [TRACE] [--repeat 3]

Run it with a Python that has fasttrace installed. If TRACE does not exist it is first made by
tracing the fib workload (bench/runners/fasttrace_run.py). Target: >= 5M events/s.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULT_TRACE = BENCH / "out" / "decode_fib.ftrace"
TARGET_EVENTS_PER_S = 5e6


def make_trace(path):
    print(
        f"{os.path.relpath(path)} missing: tracing bench/workloads/fib.py to make it",
        file=sys.stderr,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    runner = BENCH / "runners" / "fasttrace_run.py"
    workload = BENCH / "workloads" / "fib.py"
    subprocess.run([sys.executable, str(runner), str(workload), str(path)], check=True)


def decode_once(fasttrace, path):
    """(events, seconds for load, seconds for load + iterating all events)."""
    t0 = time.perf_counter()
    trace = fasttrace.load(str(path))
    t1 = time.perf_counter()
    count = 0
    for _ in trace.events():
        count += 1
    return count, t1 - t0, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("trace", nargs="?", default=str(DEFAULT_TRACE), help="a fasttrace trace file")
    ap.add_argument("--repeat", type=int, default=3, help="decode this many times, report best")
    args = ap.parse_args()
    try:
        import fasttrace
    except ImportError as e:
        sys.exit(f"decode_speed: cannot import fasttrace with {sys.executable}: {e}")

    path = Path(args.trace)
    if not path.exists():
        make_trace(path)
    runs = [decode_once(fasttrace, path) for _ in range(max(1, args.repeat))]
    events, load_s, total_s = min(runs, key=lambda r: r[2])
    rate = events / total_s if total_s > 0 else float("inf")
    size = path.stat().st_size
    print(f"trace: {os.path.relpath(path)} ({size / 2**20:.1f} MiB, {events:,} events)")
    print(f"best of {len(runs)}: load {load_s:.3f} s, load + iterate {total_s:.3f} s")
    print(
        f"decode speed: {rate / 1e6:.2f}M events/s (target >= {TARGET_EVENTS_PER_S / 1e6:.0f}M/s)"
    )
    print("PASS" if rate >= TARGET_EVENTS_PER_S else "FAIL", "reader speed target")


if __name__ == "__main__":
    main()
