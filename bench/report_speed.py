"""`fasttrace report` speed: events per second of the whole command (the native fold) next to
the Python fold it replaced (tests/reference_fold.py), on the same trace, in the same run.

    build/venv/bin/python bench/report_speed.py [--trace TRACE] [--events N] [--repeat 2]

Run it with a Python that has fasttrace installed.  Without --trace, a trace of at least N
events (default 10M) is made first by running a program of many small Python calls under
`fasttrace run` (bench/out/report_speed.ftrace, reused while it has enough events).
Target: report >= 10M events/s end to end.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
TESTS = BENCH.parent / "tests"
DEFAULT_TRACE = BENCH / "out" / "report_speed.ftrace"
TARGET_EVENTS_PER_S = 10e6

# Many small functions calling each other along varied paths (a depth-8 binary fan-out from
# each of N_FUNCS starting points, with a C call at the leaves): a large call tree (about 150k
# nodes), as a test suite's trace has, rather than one hot loop's handful of stacks.
PROGRAM = """
import sys

N = 300

def make(i):
    a, b = (i * 7 + 1) % N, (i * 13 + 5) % N
    src = (f"def f{i}(d):\\n"
           f"    if d == 0:\\n"
           f"        return len(())\\n"
           f"    return f{a}(d - 1) + f{b}(d - 1)\\n")
    exec(src, globals())

for i in range(N):
    make(i)

def main(n):
    for k in range(n):
        globals()[f"f{k % N}"](8)

main(int(sys.argv[1]))
"""
# events per top call: 511 Python calls and 256 C calls (len), each a call and a return
EVENTS_PER_ITER = 2 * (511 + 256) + 2


def make_trace(path, events):
    path.parent.mkdir(parents=True, exist_ok=True)
    prog = path.with_suffix(".py")
    prog.write_text(PROGRAM)
    iters = int(events / EVENTS_PER_ITER * 1.05)
    print(f"making {os.path.relpath(path)}: {iters:,} iterations under fasttrace run",
          file=sys.stderr)
    subprocess.run([sys.executable, "-m", "fasttrace", "run", "-o", str(path), str(prog),
                    str(iters)], check=True, cwd=path.parent)


def time_report(path):
    """Seconds for the whole `fasttrace report` command, output to a pipe."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fasttrace", "report", str(path)], check=True,
                   stdout=subprocess.DEVNULL, cwd=path.parent)
    return time.perf_counter() - t0


def time_native_parts(fasttrace, path):
    """(load, fold, thread_stats) seconds in this process: where report's time goes."""
    from fasttrace._calltree import CallTree

    t0 = time.perf_counter()
    trace = fasttrace.load(str(path))
    t1 = time.perf_counter()
    tree = CallTree.build(trace)
    t2 = time.perf_counter()
    tree.thread_stats()
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, len(tree.parent)


def time_reference(fasttrace, path):
    sys.path.insert(0, str(TESTS))
    import reference_fold

    t0 = time.perf_counter()
    reference_fold.function_stats(fasttrace.load(str(path)))
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trace", help="a trace-mode trace (default: make one)")
    ap.add_argument("--events", type=float, default=10e6, help="events of the made trace")
    ap.add_argument("--repeat", type=int, default=2, help="time report this many times, best")
    ap.add_argument("--no-reference", action="store_true", help="skip the Python fold")
    args = ap.parse_args()
    import fasttrace

    path = Path(args.trace) if args.trace else DEFAULT_TRACE
    if args.trace is None and (not path.exists()
                               or fasttrace.load(str(path)).stats.events < args.events):
        make_trace(path, args.events)
    events = fasttrace.load(str(path)).stats.events
    print(f"trace: {os.path.relpath(path)} ({path.stat().st_size / 2**20:.1f} MiB, "
          f"{events:,} events)")
    report_s = min(time_report(path) for _ in range(max(1, args.repeat)))
    load_s, fold_s, stats_s, nodes = time_native_parts(fasttrace, path)
    print(f"fasttrace report (whole command, best of {max(1, args.repeat)}): {report_s:.2f} s, "
          f"{events / report_s / 1e6:.1f}M events/s")
    print(f"  in process: load {load_s:.2f} s, native fold {fold_s:.2f} s "
          f"({events / fold_s / 1e6:.1f}M events/s), thread_stats over {nodes:,} nodes "
          f"{stats_s:.2f} s")
    if not args.no_reference:
        ref_s = time_reference(fasttrace, path)
        print(f"Python fold (tests/reference_fold.py): {ref_s:.2f} s, "
              f"{events / ref_s / 1e6:.2f}M events/s")
        print(f"ratio: report is {ref_s / report_s:.1f}x the Python fold")
    rate = events / report_s
    print("PASS" if rate >= TARGET_EVENTS_PER_S else "FAIL",
          f"report >= {TARGET_EVENTS_PER_S / 1e6:.0f}M events/s")


if __name__ == "__main__":
    main()
