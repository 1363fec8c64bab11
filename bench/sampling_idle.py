"""Sampling overhead against the number of idle threads (issue 8).

    python bench/sampling_idle.py --python 3.12 [--python 3.12-base ...] [--threads 0,10,100,1000]
                                  [--rates 100,1000] [--cpus 0 --cpus 0,1] [--pairs 5] [--json F]
    python bench/sampling_idle.py --from-json bench/out/idle-<time>.json [--from-json ...]

The program: N threads that wait on an Event, a few Python frames deep (a thread pool at rest),
while the main thread computes a fixed amount of work (~0.5 s bare); then the threads are
released and joined.  Each (N, rate, CPU set) cell is measured as bench/run.py measures a tool
(its `measure`, with bench/sampling_overhead.py's runner and CPU-time accounting): 1 warm-up pair
then --pairs alternated (sampled, bare) runs of the same program, each process timed from
outside, under `taskset -c CPUS`; ratio = median of the pairwise ratios, with their IQR.
`--python VER` takes bench/.venvs/VER (any name: a second venv built from an older commit gives
the before/after comparison in one run, interleaved).  Writes a markdown report and a JSON file
under bench/out/.  Stdlib only, Python 3.9+.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time

from run import BENCH, load_results, measure, rel, version_entry
from sampling_overhead import _cpu_s, load1, quartiles, table, timed_run, utc_now

PROGRAM = '''\
import threading

N_THREADS = {n}
WORK = {work}


def wait_here(ev):  # a few frames deep, as a worker of a pool waiting for a task
    ev.wait()


def worker(ev):
    wait_here(ev)


def f(i):
    return i * i % 7


def work():
    total = 0
    for i in range(WORK):
        total += f(i)
    return total


threading.stack_size(256 * 1024)  # 1000 threads: keep the memory modest, bare or sampled
ev = threading.Event()
threads = [threading.Thread(target=worker, args=(ev,), daemon=True) for _ in range(N_THREADS)]
for t in threads:
    t.start()
work()
ev.set()
for t in threads:
    t.join()
'''
WORK = 7_000_000  # ~0.5 s of the main thread on 3.12 here


def program_path(env, n, work):
    path = env.out / f"idle_{n}.py"  # bench/out is git-ignored
    text = PROGRAM.format(n=n, work=work)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return str(path)


def command(name, env, workload, out_base, args):
    """(argv, output path): workload "idle<N>", name "bare" or "rate<R>"."""
    wl = program_path(env, int(workload[4:]), args.work)
    pin = ["taskset", "-c", args.cpu_set] if args.cpu_set else []
    if name == "bare":
        return [*pin, env.python, wl], None
    out = out_base + ".ftrace"
    argv = [*pin, env.python, str(BENCH / "runners" / "fasttrace_sample.py"), wl, out,
            out + ".summary.json", "--rate", name[4:]]
    return argv, out


def notes(name, log_path, out):
    stats = out + ".summary.json"
    try:
        with open(stats) as f:
            return {"sampling": json.load(f)}
    except OSError:
        return {"sampling": None}


def summarize(res):
    res["ratio_q1"], res["ratio_q3"] = quartiles(res["ratios"])
    res["bare_median"] = statistics.median(res["bare_s"])
    if res.get("cpu_tool_s"):
        cpu = [a / b for a, b in zip(res["cpu_tool_s"], res["cpu_bare_s"])]
        res["cpu_ratio"] = statistics.median(cpu)
    sam = [r["sampling"] for r in res["runs"] if r.get("sampling")]
    if not sam:
        return
    med = lambda key, default=0: statistics.median(s.get(key, default) or 0 for s in sam)  # noqa: E731
    share = [s["sampler_cpu_ns"] / s["duration_ns"] for s in sam if s.get("duration_ns")]
    res["sampling"] = {
        "achieved_rate": med("achieved_rate"),
        "samples": med("samples"),
        "reused_share": statistics.median(
            (s.get("reused") or 0) / s["samples"] for s in sam if s.get("samples")) if any(
            s.get("samples") for s in sam) else 0.0,
        "sampler_cpu_share": statistics.median(share) if share else None,
        "rate_lowered_max": max(s.get("rate_lowered", 0) or 0 for s in sam),
        "effective_rate_min": min(s.get("effective_rate") or s["rate"] for s in sam),
        "rate_met_runs": sum(bool(s["rate_met"]) for s in sam),
        "runs": len(sam),
    }


def run_all(args):
    meta = {"argv": sys.argv[1:], "pairs": args.pairs, "warmup": args.warmup, "work": args.work,
            "started": utc_now(), "load_start": load1(), "nproc": shutil.which("nproc") and
            subprocess.run(["nproc", "--all"], capture_output=True, text=True).stdout.strip()}
    head = subprocess.run(["git", "-C", str(BENCH.parent), "describe", "--always", "--dirty"],
                          check=False, capture_output=True, text=True)
    meta["repo_commit"] = head.stdout.strip() or None
    results = {"meta": meta, "versions": {}}
    envs = []
    for ver in args.python:
        env, entry = version_entry(results, ver, args.pairs, ("fasttrace",))
        if entry is not None:
            source = env.venv / "fasttrace-source.txt"
            entry["fasttrace_source"] = source.read_text().strip() if source.exists() else None
            envs.append((ver, env, entry))
    # Cell by cell, every venv in turn: a before/after comparison sees the same machine state.
    for cpus in args.cpus:
        args.cpu_set = cpus
        for n in args.threads:
            for rate in args.rates:
                for ver, env, entry in envs:
                    _cpu_s.clear()
                    res = measure(f"rate{rate}", env, f"idle{n}", args, command, notes,
                                  timed_run)
                    res["load"] = load1()
                    if res["status"] == "ok":
                        res["cpu_tool_s"] = _cpu_s[2 * args.warmup :: 2]
                        res["cpu_bare_s"] = _cpu_s[2 * args.warmup + 1 :: 2]
                        summarize(res)
                    else:
                        print(f"  [{ver}] cpus {cpus} idle{n} {rate} Hz: {res['status']}: "
                              f"{res.get('reason')}", file=sys.stderr)
                    entry["workloads"].setdefault(cpus, {}).setdefault(str(n), {})[
                        str(rate)] = res
    meta.update(finished=utc_now(), load_end=load1())
    return results


def fmt_cell(res):
    if res is None:
        return "-"
    if res["status"] != "ok":
        return res["status"]
    text = f"{res['ratio']:.2f} ({res['ratio_q1']:.2f}-{res['ratio_q3']:.2f})"
    sam = res.get("sampling")
    if sam:
        cpu = sam["sampler_cpu_share"]
        text += f"; {sam['achieved_rate']:.0f} Hz"
        if cpu is not None:
            text += f", CPU {100 * cpu:.1f}%"
        if sam["reused_share"]:
            text += f", reused {100 * sam['reused_share']:.0f}%"
        if sam["rate_lowered_max"]:
            text += f", lowered to {sam['effective_rate_min']:g} Hz"
        if sam["rate_met_runs"] != sam["runs"]:
            text += f", rate met {sam['rate_met_runs']}/{sam['runs']}"
    return text


def report(results):
    meta = results["meta"]
    lines = [f"Pairs: {meta.get('warmup', 1)} warm-up + {meta.get('pairs')} counted per cell; "
             f"repo HEAD when run: {meta.get('repo_commit') or '?'}; work {meta.get('work')} "
             f"iterations; load {meta.get('load_start')} -> {meta.get('load_end')}.",
             "Cell: ratio sampled/bare, median (IQR); then the sampler's achieved rate, its "
             "own CPU time per wall second, the share of samples reused unchanged, and any rate "
             "lowering."]
    for ver, entry in results["versions"].items():
        lines += ["", f"### {ver}: Python {entry.get('version', '?')} ({entry.get('python')})"]
        if entry.get("fasttrace_source"):
            lines.append(f"fasttrace built from: {entry['fasttrace_source']}")
        if entry.get("problem"):
            lines.append(f"skipped: {entry['problem']}")
            continue
        for cpus, rows in entry["workloads"].items():
            rates = sorted({r for row in rows.values() for r in row}, key=float)
            bare = [statistics.median(row[r]["bare_s"]) for row in rows.values() for r in row
                    if row[r]["status"] == "ok"]
            lines += ["", f"taskset -c {cpus}" + (f" (bare runs {min(bare):.2f}-{max(bare):.2f} s)"
                                                   if bare else ""), ""]
            head = ["idle threads", *[f"{r} Hz" for r in rates]]
            body = [[n, *[fmt_cell(row.get(r)) for r in rates]] for n, row in rows.items()]
            lines += table(head, body)
    return lines


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", action="append", help="bench/.venvs/VER (repeatable)")
    ap.add_argument("--threads", default="0,10,100,1000", help="idle thread counts")
    ap.add_argument("--rates", default="100,1000", help="sampling rates, Hz")
    ap.add_argument("--cpus", action="append",
                    help="taskset CPU list, repeatable (default: 0, then 0,1)")
    ap.add_argument("--work", type=int, default=WORK, help="main-thread loop iterations")
    ap.add_argument("--pairs", type=int, default=5, help="counted pairs per cell (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="uncounted warm-up pairs (default 1)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per process run")
    ap.add_argument("--json", help="output file (default bench/out/idle-<UTC time>.json)")
    ap.add_argument("--from-json", action="append", help="re-print earlier results, no runs")
    args = ap.parse_args()
    args.python = args.python or ["3.12"]
    args.threads = [int(x) for x in args.threads.split(",") if x]
    args.rates = [int(x) for x in args.rates.split(",") if x]
    args.cpus = args.cpus or ["0", "0,1"]
    if args.pairs < 1:
        ap.error("--pairs must be >= 1")
    return args


def main():
    args = parse_args()
    if args.from_json:
        results = load_results(args.from_json)
    else:
        results = run_all(args)
        path = args.json or str(BENCH / "out" / f"idle-{time.strftime('%Y%m%d-%H%M%S')}.json")
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
        with open(path[: -len(".json")] + ".md" if path.endswith(".json") else path + ".md",
                  "w") as f:
            f.write("\n".join(report(results)) + "\n")
        print(f"results: {rel(path)}", file=sys.stderr)
    print("\n".join(report(results)))


if __name__ == "__main__":
    main()
