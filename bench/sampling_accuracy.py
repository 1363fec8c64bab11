"""Accuracy of fasttrace's sampling mode next to py-spy and profiling.sampling (issue 9).

    python bench/sampling_accuracy.py --python 3.15 [--python 3.14 ...] [--rates 100,1000]
                                      [--tools fasttrace,py-spy,profiling.sampling]
                                      [--programs spin,calls] [--runs 3] [--json F]
    python bench/sampling_accuracy.py --from-json bench/out/accuracy-<time>.json

Each tool samples, from the command line a user would type, a program whose true split is
known: the main thread runs a() 360 ms, b() 180 ms, c() 60 ms, five times over (the 60/30/10
split of tests/integration/test_sampling_accuracy.py), timing each phase with perf_counter
into a side file.  `spin`: each phase is a loop without calls; `calls`: each phase calls a
recursive fib(12) over and over, so the stack changes under the sampler every few
microseconds.  The measured share of a function is the share of the samples whose stack holds
it among those that hold any of a, b, c; each tool's own output is read back:

    fasttrace            python -m fasttrace run --rate R -o O.ftrace P T  (fasttrace.load)
    py-spy               py-spy record -r R -f raw -o O.txt -- python P T
    profiling.sampling   python -m profiling.sampling run -r R -a --collapsed -o O.txt P T

Interpreters are bench/run.py's (bench/.venvs/<ver>, else pyenv's).  Writes JSON and a
markdown report under bench/out/.  Stdlib only.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from run import PythonEnv, save_report

TOOLS = ("fasttrace", "py-spy", "profiling.sampling")
PROGRAMS = ("spin", "calls")
NAMES = ("a", "b", "c")
PROGRAM = """\
import json, sys, time

pc = time.perf_counter


def spin(seconds):
    end = pc() + seconds
    while pc() < end:
        pass


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def calls(seconds):
    end = pc() + seconds
    while pc() < end:
        fib(12)


work = {kind}


def a(s):
    work(s)


def b(s):
    work(s)


def c(s):
    work(s)


spent = {{"a": 0.0, "b": 0.0, "c": 0.0}}
for _ in range(5):
    for f, s in ((a, 0.36), (b, 0.18), (c, 0.06)):
        t0 = pc()
        f(s)
        spent[f.__name__] += pc() - t0
total = sum(spent.values())
with open(sys.argv[1], "w") as out:
    json.dump({{k: 100 * v / total for k, v in spent.items()}}, out)
"""
# Run by the interpreter under test: fasttrace's samples of the main thread, by a/b/c.
FT_READER = """\
import json, sys, fasttrace
t = fasttrace.load(sys.argv[1])
main = next(th.id for th in t.threads if th.name == "MainThread")
counts = dict.fromkeys("abc", 0)
n = torn = 0
for s in t.samples(main):
    n += 1
    torn += s.torn
    names = {f.name for f in s.stack}
    for k in counts:
        if k in names:
            counts[k] += 1
print(json.dumps({"counts": counts, "samples": n, "torn": torn,
                  "rate": t.sampling.achieved_rate}))
"""


def collapsed_counts(path, func_of):
    """Per-function sample counts from folded stacks ("f1;f2;f3 count" lines)."""
    counts = dict.fromkeys(NAMES, 0)
    n = 0
    for line in Path(path).read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n += int(count)
        names = {func_of(frame) for frame in stack.split(";")}
        for k in counts:
            if k in names:
                counts[k] += int(count)
    return counts, n


def py_spy_func(frame):  # "name (file:line)"
    return frame.rsplit(" (", 1)[0]


def profiling_func(frame):  # "file:func:line", and a "tid:N" root
    parts = frame.rsplit(":", 2)
    return parts[1] if len(parts) == 3 else None


def run_one(env, tool, kind, rate, i):
    prog = env.out / f"split_{kind}.py"
    text = PROGRAM.format(kind=kind)
    if not prog.exists() or prog.read_text() != text:
        prog.write_text(text)
    truth_path = env.out / f"split_{kind}.truth.json"
    base = env.out / f"split_{kind}.{tool}-{rate}.{i}"
    log = Path(f"{base}.log")
    truth_path.unlink(missing_ok=True)
    if tool == "fasttrace":
        out = f"{base}.ftrace"
        argv = [env.python, "-m", "fasttrace", "run", "--rate", str(rate), "-o", out]
    elif tool == "py-spy":
        if env.script("py-spy") is None:
            return {"status": "skipped", "reason": f"no py-spy in bench/.venvs/{env.ver}"}
        out = f"{base}.txt"
        argv = [env.script("py-spy"), "record", "-r", str(rate), "-f", "raw", "-o", out, "--",
                env.python]
    else:
        if env.probe("import profiling.sampling").returncode != 0:
            return {"status": "skipped", "reason": f"no profiling.sampling in {env.full_version}"}
        out = f"{base}.txt"
        argv = [env.python, "-m", "profiling.sampling", "run", "-r", str(rate), "-a",
                "--collapsed", "-o", out]
    argv += [str(prog), str(truth_path)]
    with open(log, "w") as f:
        res = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, cwd=env.out, timeout=300,
                             check=False)
    text = log.read_text(errors="replace")
    if res.returncode != 0 or not truth_path.exists() or not Path(out).exists():
        tail = " | ".join(text.strip().splitlines()[-2:])
        return {"status": "failed", "reason": f"exit {res.returncode}: {tail}"}
    row = {"status": "ok", "truth": json.loads(truth_path.read_text())}
    if tool == "fasttrace":
        got = subprocess.run([env.python, "-c", FT_READER, out], capture_output=True, text=True,
                             cwd=env.out, check=True)
        info = json.loads(got.stdout)
        counts, n = info["counts"], info["samples"]
        row.update(torn=info["torn"], rate=info["rate"])
    elif tool == "py-spy":
        counts, n = collapsed_counts(out, py_spy_func)
        m = re.search(r"Samples: (\d+) Errors: (\d+)", text)
        row["errors"] = int(m.group(2)) if m else None
    else:
        counts, n = collapsed_counts(out, profiling_func)
        m = re.search(r"Error rate: ([\d.]+)", text)
        row["error_pct"] = float(m.group(1)) if m else None
    attributed = sum(counts.values())
    row.update(samples=n, attributed=attributed,
               shares={k: 100 * v / attributed if attributed else None
                       for k, v in counts.items()})
    Path(out).unlink(missing_ok=True)
    return row


def run_all(args):
    results = {"meta": {"argv": sys.argv[1:], "runs": args.runs,
                        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())},
               "versions": {}}
    for ver in args.python:
        env = PythonEnv(ver)
        entry = results["versions"][ver] = {"python": env.label, "cells": {}}
        if env.problem:
            entry["problem"] = env.problem
            continue
        entry["version"] = env.full_version
        entry["packages"] = {p: env.package_version(p) for p in ("fasttrace", "py-spy")}
        for kind in args.programs:
            for rate in args.rates:
                for tool in args.tools:
                    runs = [run_one(env, tool, kind, rate, i) for i in range(args.runs)]
                    entry["cells"][f"{kind}/{rate}/{tool}"] = runs
                    print(f"[{ver}] {kind} {rate} Hz {tool}: "
                          + "; ".join(fmt_run(r) for r in runs), file=sys.stderr)
    results["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return results


def fmt_run(r):
    if r["status"] != "ok":
        return f"{r['status']}: {r['reason']}"
    return "/".join(f"{r['shares'][k]:.1f}" for k in NAMES) + f" of {r['attributed']}"


def report(results):
    lines = [f"Runs per cell: {results['meta']['runs']}; started {results['meta']['started']}."]
    for ver, entry in results["versions"].items():
        lines += ["", f"### Python {entry.get('version', ver)} ({entry['python']})", ""]
        if entry.get("problem"):
            lines.append(f"skipped: {entry['problem']}")
            continue
        head = ["program", "rate", "tool", "truth a/b/c %", "measured a/b/c % (median)",
                "worst error, points", "samples in a/b/c (of all)", "tool's own errors"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for key, runs in entry["cells"].items():
            kind, rate, tool = key.split("/")
            ok = [r for r in runs if r["status"] == "ok"]
            if not ok:
                reason = runs[0].get("reason", "?") if runs else "?"
                lines.append(f"| {kind} | {rate} | {tool} | - | {runs[0]['status']}: {reason} "
                             "| - | - | - |")
                continue
            truth = {k: statistics.median(r["truth"][k] for r in ok) for k in NAMES}
            got = {k: statistics.median(r["shares"][k] for r in ok) for k in NAMES}
            worst = max(abs(r["shares"][k] - r["truth"][k]) for r in ok for k in NAMES)
            att = statistics.median(r["attributed"] for r in ok)
            tot = statistics.median(r["samples"] for r in ok)
            if tool == "fasttrace":
                errs = f"torn {max(r['torn'] for r in ok)} (max)"
            elif tool == "py-spy":
                errs = f"{max(r['errors'] or 0 for r in ok)} (max)"
            else:
                pct = [r["error_pct"] for r in ok if r.get("error_pct") is not None]
                errs = f"{statistics.median(pct):.1f} % (median)" if pct else "-"
            lines.append(
                f"| {kind} | {rate} | {tool} | " + "/".join(f"{truth[k]:.1f}" for k in NAMES)
                + " | " + "/".join(f"{got[k]:.1f}" for k in NAMES)
                + f" | {worst:.1f} | {att:.0f} ({tot:.0f}) | {errs} |")
        packages = ", ".join(f"{p} {v}" for p, v in entry.get("packages", {}).items() if v)
        lines += ["", f"Packages: {packages or '-'}"]
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", action="append", help="version, e.g. 3.15 (repeatable)")
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--programs", default=",".join(PROGRAMS))
    ap.add_argument("--rates", default="100,1000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", help="results file (default bench/out/accuracy-<time>.json)")
    ap.add_argument("--from-json", help="print the report of an earlier results file")
    args = ap.parse_args()
    if args.from_json:
        print("\n".join(report(json.loads(Path(args.from_json).read_text()))))
        return
    args.python = args.python or ["3.15"]
    args.tools = [t for t in args.tools.split(",") if t]
    args.programs = [p for p in args.programs.split(",") if p]
    args.rates = [int(r) for r in args.rates.split(",") if r]
    bad = [t for t in args.tools if t not in TOOLS] + [p for p in args.programs
                                                       if p not in PROGRAMS]
    if bad:
        ap.error(f"unknown tool/program: {', '.join(bad)}")
    results = run_all(args)
    save_report(results, args.json, "accuracy", report(results))


if __name__ == "__main__":
    main()
