"""Cost of a PyEval_SetProfile hook vs a PEP 523 eval-frame hook on CPython 3.11.

    python bench/pep523/run.py [--python PY] [--workloads fib,nbody] [--modes pep523_empty,...]
                               [--pairs 5] [--warmup 1]

For each workload and mode, runs alternate: mode, bare, mode, bare, ... (--warmup pairs not
counted, then --pairs counted). A mode run is `PY runner.py MODE WORKLOAD`; a bare run is
`PY WORKLOAD`. Each run is timed from outside (perf_counter around subprocess.run), so
start-up is included. Ratio = median of the pairwise mode/bare ratios; min-max is over the
pairs. `runpy-only` is the runner with no hook installed (the runner's own cost).
Builds _floor with build.sh first if it is missing or older than floor.c. Stdlib only.
"""

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
BUILD = BENCH / ".venvs" / "pep523-build"
WORKLOADS = ["fib", "richards", "nbody", "raytrace"]
MODES = ["runpy-only", "profile_empty", "profile_record", "pep523_empty", "pep523_record"]


def default_python():
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True,
                          check=True).stdout.strip()
    return str(Path(root) / "versions" / "3.11.7" / "bin" / "python")


def ensure_built(py):
    get_suffix = "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"
    suffix = subprocess.run([py, "-c", get_suffix],
                            capture_output=True, text=True, check=True).stdout.strip()
    so = BUILD / f"_floor{suffix}"
    if not so.exists() or so.stat().st_mtime < (HERE / "floor.c").stat().st_mtime:
        subprocess.run(["bash", str(HERE / "build.sh"), py], check=True)


def timed(cmd, env):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if p.returncode:
        sys.exit(f"failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr}")
    return dt


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    py = a.python or default_python()
    ensure_built(py)
    env = dict(os.environ)
    vv = subprocess.run([py, "-VV"], capture_output=True, text=True).stdout.strip()
    print(f"date: {datetime.datetime.now().isoformat(timespec='minutes')}")
    print(f"python: {vv}")
    print(f"loops: FASTTRACE_BENCH_LOOPS={env.get('FASTTRACE_BENCH_LOOPS', '(workload default)')}")
    print(f"load at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)

    rows = []
    for w in a.workloads.split(","):
        wl = str(BENCH / "workloads" / f"{w}.py")
        for mode in a.modes.split(","):
            hook = "none" if mode == "runpy-only" else mode
            mode_cmd = [py, str(HERE / "runner.py"), hook, wl]
            bare_cmd = [py, wl]
            ratios, mts, bts = [], [], []
            for i in range(a.warmup + a.pairs):
                m = timed(mode_cmd, env)
                b = timed(bare_cmd, env)
                if i >= a.warmup:
                    ratios.append(m / b)
                    mts.append(m)
                    bts.append(b)
            row = (w, mode, statistics.median(bts), statistics.median(mts),
                   statistics.median(ratios), min(ratios), max(ratios))
            rows.append(row)
            print(f"  {w:9} {mode:15} ratio {row[4]:.2f}x", file=sys.stderr, flush=True)

    print(f"load at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("| workload | mode | bare s | mode s | ratio (median) | min–max |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for w, mode, b, m, r, lo, hi in rows:
        print(f"| {w} | {mode} | {b:.2f} | {m:.2f} | {r:.2f}x | {lo:.2f}–{hi:.2f} |")


if __name__ == "__main__":
    main()
