"""Steady-state cost of sampling mode: the same workload run again and again in ONE process,
alternating unsampled and sampled runs, so that interpreter start-up, imports and the machine's
slow drifts cancel out of each ratio.

    python bench/sampling_steady.py [--python 3.12 ...] [--workloads fib,go] [--rates 100,1000]
                                    [--rounds 15] [--flight] [--json OUT]

Each round runs the workload once per configuration (off, then each rate) in a shuffled order;
the ratio of a rate is the median over rounds of (sampled time / unsampled time in the same
round), with the interquartile range of those per-round ratios.  The timed span is the
workload alone: fasttrace.start() and stop() are timed separately (their sum is the fixed cost
per session, which bench/sampling_overhead.py's whole-process table includes along with the
import of fasttrace).  Venvs come from `bash bench/setup.sh`.  Stdlib only.
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
WORKLOADS = ["fib", "richards", "deltablue", "go", "raytrace", "nbody"]

CHILD = r"""
import json, random, sys, time, os
import fasttrace

workload, rates, rounds, out_dir = sys.argv[1], [float(r) for r in sys.argv[2].split(",")], \
    int(sys.argv[3]), sys.argv[4]
flight = len(sys.argv) > 5 and sys.argv[5] == "flight"
with open(workload, "rb") as f:
    code = compile(f.read(), workload, "exec", dont_inherit=True)
sys.path.insert(0, os.path.dirname(workload))

def run():
    g = {"__name__": "__main__", "__file__": workload, "__builtins__": __builtins__}
    t0 = time.perf_counter()
    exec(code, g)
    return time.perf_counter() - t0

for _ in range(2):  # warm-up: imports, caches, the specializing interpreter
    run()
configs = [None] + rates
times = {str(c): [] for c in configs}
fixed = {str(r): [] for r in rates}
achieved = {str(r): [] for r in rates}
rng = random.Random(1)
for _ in range(rounds):
    order = configs[:]
    rng.shuffle(order)
    for c in order:
        if c is None:
            times["None"].append(run())
            continue
        t0 = time.perf_counter()
        if flight:
            fasttrace.FlightRecorder(10, 64 << 20, rate=c).start()
        else:
            fasttrace.start(os.path.join(out_dir, "steady.ftrace"), rate=c)
        t1 = time.perf_counter()
        elapsed = run()
        t2 = time.perf_counter()
        s = fasttrace.stop()
        t3 = time.perf_counter()
        times[str(c)].append(elapsed)
        fixed[str(c)].append((t1 - t0) + (t3 - t2))
        achieved[str(c)].append(s.sampling.achieved_rate)
print(json.dumps({"times": times, "fixed": fixed, "achieved": achieved}))
"""


def quartiles(values):
    q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return q[0], statistics.median(values), q[2]


def python_for(ver):
    venv = BENCH / ".venvs" / ver / "bin" / "python"
    if venv.exists():
        return str(venv)
    prefix = subprocess.run(["pyenv", "prefix", ver], capture_output=True, text=True)
    return os.path.join(prefix.stdout.strip(), "bin", "python")


def measure(python, workload, rates, rounds, flight=False):
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([python, "-c", CHILD, str(BENCH / "workloads" / f"{workload}.py"),
                            ",".join(str(x) for x in rates), str(rounds), tmp,
                            "flight" if flight else "file"],
                           capture_output=True, text=True, cwd=tmp, timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"{workload}: {r.stderr[-2000:]}")
    data = json.loads(r.stdout.strip().splitlines()[-1])
    off = data["times"]["None"]
    result = {"off_s": statistics.median(off)}
    for rate in rates:
        key = str(float(rate))
        ratios = [s / o for s, o in zip(data["times"][key], off)]
        result[key] = {
            "ratio": quartiles(ratios),
            "fixed_ms": statistics.median(data["fixed"][key]) * 1e3,
            "achieved_hz": statistics.median(data["achieved"][key]),
        }
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", action="append", help="version (default 3.12 and 3.13)")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--rates", default="100,1000")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--flight", action="store_true",
                   help="sample into a FlightRecorder instead of a file")
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    results = {}
    for ver in args.python or ["3.12", "3.13"]:
        python = python_for(ver)
        load = os.getloadavg()[0]
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        rows = {w: measure(python, w, rates, args.rounds, args.flight)
                for w in args.workloads.split(",")}
        ended = time.strftime("%H:%M:%S UTC", time.gmtime())
        results[ver] = rows
        print(f"\n### Python {ver}{' (flight recorder)' if args.flight else ''}: "
              f"{args.rounds} rounds, {started} to {ended}, load average "
              f"(1 min) {load:.2f} at start, {os.getloadavg()[0]:.2f} at end\n")
        head = " | ".join(f"{r:g} Hz: ratio (IQR) / start+stop ms / achieved Hz" for r in rates)
        print(f"| workload | unsampled s | {head} |")
        print("|---|---|" + "---|" * len(rates))
        for w, row in rows.items():
            cells = []
            for rate in rates:
                c = row[str(float(rate))]
                q1, med, q3 = c["ratio"]
                cells.append(f"{med:.4f} ({q1:.4f}-{q3:.4f}) / {c['fixed_ms']:.2f} / "
                             f"{c['achieved_hz']:.0f}")
            print(f"| {w} | {row['off_s']:.3f} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
