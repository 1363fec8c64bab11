"""Whole-process wall-time overhead of the sampler prototype vs bare.

python bench/sampling/overhead.py --python 3.12.1 --python 3.13.0 --workloads fib,richards \
    --rates 100,1000 --modes nogil [--pairs 5 --warmup 1] [--json OUT]

For each (python, workload, mode, rate): alternate sampled/bare runs, 1 warm-up pair (not
counted) + N pairs; report the median of the pairwise ratios sampled/bare, the achieved
sample rate (ticks / sampler lifetime) and read/torn counters from the last sampled run.
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE.parent / "workloads"


def pyexe(v):
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
    return os.path.join(root, "versions", v, "bin", "python3")


def timed(cmd):
    with open(os.devnull, "w") as devnull:
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=devnull)
        return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", action="append", default=[])
    ap.add_argument("--workloads", default="fib,richards")
    ap.add_argument("--rates", default="100,1000")
    ap.add_argument("--modes", default="nogil")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--baseline", default="bare", choices=["bare", "off"],
                    help="bare: `python workload.py`; off: the same runner with the sampler not "
                         "started (isolates the sampler from the runner's import/runpy cost)")
    ap.add_argument("--json")
    a = ap.parse_args()
    results = []
    print("| python | workload | mode | rate | bare med s | sampled med s | "
          "ratio (median of pairs) | achieved Hz | thread samples | reads | read fails | torn | "
          "sampler CPU % of run |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for v in a.python or ["3.12.1", "3.13.0"]:
        py = pyexe(v)
        for w in a.workloads.split(","):
            wl = str(WORKLOADS / f"{w}.py")
            for mode in a.modes.split(","):
                for rate in (a.rates.split(",") if mode != "off" else ["0"]):
                    stats_path = tempfile.mktemp(suffix=".json")
                    tool = [py, str(HERE / "run_sampled.py"), rate, mode, stats_path, wl]
                    bare = [py, wl] if a.baseline == "bare" else \
                        [py, str(HERE / "run_sampled.py"), "0", "off", stats_path + ".off", wl]
                    ts, tb = [], []
                    for i in range(a.warmup + a.pairs):
                        x, y = timed(tool), timed(bare)
                        if i >= a.warmup:
                            ts.append(x)
                            tb.append(y)
                    st = json.load(open(stats_path))
                    os.unlink(stats_path)
                    if os.path.exists(stats_path + ".off"):
                        os.unlink(stats_path + ".off")
                    ratios = [x / y for x, y in zip(ts, tb)]
                    r = dict(baseline=a.baseline, python=v, workload=w, mode=mode,
                             rate=float(rate), tool_s=ts, bare_s=tb,
                             ratio=statistics.median(ratios), stats=st)
                    results.append(r)
                    hz = st["ticks"] / st["duration_s"]
                    cpu = 100 * st["sampler_cpu_ns"] / 1e9 / st["duration_s"]
                    print(f"| {v} | {w} | {mode} | {rate} | {statistics.median(tb):.3f} | "
                          f"{statistics.median(ts):.3f} | {r['ratio']:.3f} | {hz:.0f} | "
                          f"{st['thread_samples']} | {st['reads']} | {st['read_fail']} | "
                          f"{st['torn']} | {cpu:.1f} |", flush=True)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        json.dump(results, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
