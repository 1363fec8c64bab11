"""Overhead of fasttrace's sampling mode next to pyinstrument, py-spy and, on 3.15+, the
standard library's own sampler, profiling.sampling (issues 4 and 9).

    python bench/sampling_overhead.py --python 3.12 [--python 3.13 ...] [--workloads fib,go]
                                      [--tools fasttrace-100,py-spy-100] [--pairs 7] [--json F]
    python bench/sampling_overhead.py --from-json bench/out/sampling-A.json [--from-json ...]

The method is bench/run.py's, whose helpers it imports: for each Python, workload and tool
config, alternated (tool, bare) pairs, 1 warm-up pair + --pairs counted pairs, each process
timed from outside; ratio = median of the pairwise tool/bare ratios.  The targets (< 1 % at
100 Hz, < 5 % at 1000 Hz) are below the noise of one run, so every ratio comes with the
interquartile range (IQR) of its pairwise ratios, and the target table says "met" only when the
whole IQR is below the target, "missed" only when it is all above, else "within noise".
Each ratio is also given for CPU time (user + sys of the process and its children).
`fasttrace-off` is the control: fasttrace's runner with the sampler not started.
The pseudo-workload `startup` (a script that sleeps 0.2 s) measures each config's fixed cost per
process (imports, start, stop, writing the output) in ms: tool minus bare, per pair.
Writes a markdown report and a JSON file under bench/out/.  Stdlib only, Python 3.9+.
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from run import (BENCH, WORKLOADS, checked_args, load_results, measure, run_once, save_report,
                 version_entry)

# name: (tool, setting, column label).  fasttrace's setting is the rate (None: control, the
# sampler never started), pyinstrument's its interval in seconds, py-spy's its rate.
CONFIGS = {
    "fasttrace-off": ("fasttrace", None, "fasttrace off (control)"),
    "fasttrace-100": ("fasttrace", 100, "fasttrace 100 Hz"),
    "fasttrace-1000": ("fasttrace", 1000, "fasttrace 1000 Hz"),
    "pyinstrument-10ms": ("pyinstrument", 0.01, "pyinstrument 10 ms"),
    "pyinstrument-1ms": ("pyinstrument", 0.001, "pyinstrument 1 ms"),
    "py-spy-100": ("py-spy", 100, "py-spy 100 Hz"),
    "py-spy-1000": ("py-spy", 1000, "py-spy 1000 Hz"),
    # 3.15+: `python -m profiling.sampling run`, which samples its child out of process
    "profiling.sampling-100": ("profiling.sampling", 100, "profiling.sampling 100 Hz"),
    "profiling.sampling-1000": ("profiling.sampling", 1000, "profiling.sampling 1000 Hz"),
}
TARGETS = {"fasttrace-100": 1.01, "fasttrace-1000": 1.05}  # ratio must stay below
STARTUP = "startup"  # pseudo-workload: fixed cost per process
STARTUP_SCRIPT = "import time\n\ntime.sleep(0.2)  # long enough for py-spy to attach\n"
PROBE_PROGRAM = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 0.3: pass"
_probes = {}  # (python, tool) -> None or the reason the tool cannot run
_cpu_s = []  # CPU seconds (user + sys) of each process run by timed_run, in order


def utc_now():
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def load1():
    return round(os.getloadavg()[0], 2)


def can_run(env, tool):
    """None if `tool` can run under env, else why not (probed once per interpreter)."""
    key = (env.python, tool)
    if key in _probes:
        return _probes[key]
    not_installed = f"{tool} not installed in bench/.venvs/{env.ver} ({env.setup_hint()})"
    reason = None
    if tool == "fasttrace":
        check = env.probe("import fasttrace; fasttrace.SamplingStats; fasttrace.start")
        if check.returncode != 0:
            error = (check.stderr.strip().splitlines() or ["?"])[-1]
            reason = f"import fasttrace (with sampling) failed in {env.label}: {error}"
    elif tool == "profiling.sampling":
        check = env.probe("import profiling.sampling")
        if check.returncode != 0:
            reason = f"no profiling.sampling in Python {env.full_version} (new in 3.15)"
    elif env.script(tool) is None:
        reason = not_installed
    elif tool == "py-spy":  # it attaches with ptrace: does that work here?
        out = env.out / "py-spy-probe.txt"
        argv = [env.script("py-spy"), "record", "-r", "100", "-f", "raw", "-o", str(out)]
        try:
            res = subprocess.run(
                [*argv, "--", env.python, "-c", PROBE_PROGRAM],
                check=False,
                capture_output=True,
                text=True,
                cwd=env.out,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            reason = "py-spy record on a 0.3 s child did not finish within 60 s"
        else:
            m = re.search(r"Samples: (\d+)", res.stdout + res.stderr)
            if res.returncode != 0 or not m or int(m.group(1)) == 0:
                tail = " | ".join((res.stdout + res.stderr).strip().splitlines()[-2:])
                reason = f"py-spy record could not sample a child (exit {res.returncode}: {tail})"
        out.unlink(missing_ok=True)
    _probes[key] = reason
    return reason


def timed_run(argv, env, log_path, timeout):
    """run.run_once, plus the CPU time (user + sys) of the process and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, error = run_once(argv, env, log_path, timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    _cpu_s.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return wall, error


def config_command(name, env, workload, out_base, args):
    """(argv, output path) of one config; LookupError(reason) when it cannot run here."""
    if workload == STARTUP:
        wl = env.out / "startup.py"  # bench/out is git-ignored
        if not wl.exists() or wl.read_text() != STARTUP_SCRIPT:
            wl.write_text(STARTUP_SCRIPT)
        wl = str(wl)
    else:
        wl = str(BENCH / "workloads" / f"{workload}.py")
    if name == "bare":
        return [env.python, wl], None
    tool, setting, _ = CONFIGS[name]
    reason = can_run(env, tool)
    if reason:
        raise LookupError(reason)
    if tool == "fasttrace":
        out = out_base + ".ftrace"
        argv = [env.python, str(BENCH / "runners" / "fasttrace_sample.py"), wl, out]
        argv.append(out + ".summary.json")  # run.measure deletes it before each run
        if setting is None:
            return argv + ["--off"], out
        return argv + ["--rate", str(setting), "--clock", args.clock], out
    if tool == "profiling.sampling":  # collapsed stacks, its cheapest output; all threads, as
        out = out_base + ".txt"  # py-spy and fasttrace sample them
        opts = ["run", "-r", str(setting), "-a", "--collapsed", "-o", out]
        return [env.python, "-m", "profiling.sampling", *opts, wl], out
    if tool == "pyinstrument":  # its raw session, no report rendering (as fasttrace's file)
        out = out_base + ".pyisession"
        opts = ["-i", str(setting), "-r", "pyisession", "-o", out]
        return [env.script("pyinstrument"), *opts, wl], out
    out = out_base + ".txt"  # py-spy's raw format: collapsed stacks, its cheapest output
    opts = ["record", "-r", str(setting), "-f", "raw", "-o", out, "--", env.python, wl]
    return [env.script("py-spy"), *opts], out


def config_notes(name, log_path, out):
    """Samples and rates each tool reports about itself; peers' outputs are deleted."""
    tool = CONFIGS[name][0]
    notes = {}
    if out and Path(out).exists():
        notes["output_bytes"] = Path(out).stat().st_size
    if tool == "fasttrace":
        stats = Path(out + ".summary.json")
        notes["sampling"] = json.loads(stats.read_text()) if stats.exists() else None
        return notes
    if tool == "pyinstrument" and Path(out).exists():
        session = json.loads(Path(out).read_text())
        notes["samples"] = session.get("sample_count")
        notes["duration_s"] = session.get("duration")
    elif tool == "py-spy":
        m = re.search(r"Samples: (\d+) Errors: (\d+)", Path(log_path).read_text(errors="replace"))
        notes["samples"], notes["errors"] = (int(m.group(1)), int(m.group(2))) if m else (None,) * 2
    elif tool == "profiling.sampling":
        log = Path(log_path).read_text(errors="replace")
        m = re.search(r"Captured (\d+) samples in ([\d.]+) seconds", log)
        if m:
            notes["samples"], notes["duration_s"] = int(m.group(1)), float(m.group(2))
        m = re.search(r"Error rate: ([\d.]+)", log)  # a percentage of its attempts
        notes["error_pct"] = float(m.group(1)) if m else None
    if out:
        Path(out).unlink(missing_ok=True)
    return notes


def quartiles(values):
    """Q1 and Q3.  Method 'exclusive': for 7 values the 2nd and 6th smallest, which is also a
    87.5 % distribution-free confidence interval for the median.  Clamped to the data (with
    fewer than 4 values the method extrapolates)."""
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4)
    return max(q1, min(values)), min(q3, max(values))


def summarize(name, res):
    """The spread of the ratios and what the tool says about its own sampling."""
    res["ratio_q1"], res["ratio_q3"] = quartiles(res["ratios"])
    res["bare_median"] = statistics.median(res["bare_s"])
    if res.get("cpu_tool_s"):
        res["cpu_ratios"] = [a / b for a, b in zip(res["cpu_tool_s"], res["cpu_bare_s"])]
        res["cpu_ratio"] = statistics.median(res["cpu_ratios"])
        res["cpu_ratio_q1"], res["cpu_ratio_q3"] = quartiles(res["cpu_ratios"])
    deltas = [1000 * (a - b) for a, b in zip(res["tool_s"], res["bare_s"])]
    res["delta_ms"] = statistics.median(deltas)
    res["delta_ms_q1"], res["delta_ms_q3"] = quartiles(deltas)
    tool = CONFIGS[name][0]
    runs = res["runs"]
    if tool == "fasttrace":
        ms = {}
        for key in ("import_ms", "start_ms", "stop_ms"):
            got = [r["sampling"][key] for r in runs if (r.get("sampling") or {}).get(key)]
            if got:
                ms[key] = statistics.median(got)
        res["timings_ms"] = ms
        sam = [r["sampling"] for r in runs if r.get("sampling") and not r["sampling"]["off"]]
        if not sam:
            return
        med = lambda key: statistics.median(s[key] for s in sam)  # noqa: E731
        cpu = [s["sampler_cpu_ns"] / s["duration_ns"] for s in sam if s.get("duration_ns")]
        res["sampling"] = {
            "achieved_rate": med("achieved_rate"),
            "samples": med("samples"),
            "ticks": med("ticks"),
            "torn": med("torn"),
            "torn_max": max(s["torn"] for s in sam),
            "late_ticks": med("late_ticks"),
            "dropped_max": max(s["dropped"] for s in sam),
            "truncated_max": max(s["truncated"] for s in sam),
            "rate_met_runs": sum(bool(s["rate_met"]) for s in sam),
            "runs": len(sam),
            "sampler_cpu_share": statistics.median(cpu) if cpu else None,
            "realtime": all(s["realtime"] for s in sam),
        }
    else:
        samples = [r["samples"] for r in runs if r.get("samples") is not None]
        if not samples:
            return
        res["sampling"] = {"samples": statistics.median(samples)}
        if tool in ("pyinstrument", "profiling.sampling"):
            rates = [r["samples"] / r["duration_s"] for r in runs if r.get("duration_s")]
            res["sampling"]["achieved_rate"] = statistics.median(rates) if rates else None
            errors = [r["error_pct"] for r in runs if r.get("error_pct") is not None]
            if errors:
                res["sampling"]["error_pct"] = statistics.median(errors)
        else:
            res["sampling"]["errors_max"] = max(r.get("errors") or 0 for r in runs)


def run_all(args):
    meta = {"argv": sys.argv[1:], "pairs": args.pairs, "warmup": args.warmup}
    meta.update(clock=args.clock, started=utc_now(), load_start=load1())
    head = subprocess.run(
        ["git", "-C", str(BENCH.parent), "describe", "--always", "--dirty"],
        check=False,
        capture_output=True,
        text=True,
    )
    meta["repo_commit"] = head.stdout.strip() or None
    results = {"meta": meta, "versions": {}}
    for ver in args.python:
        packages = ("fasttrace", "pyinstrument", "py-spy")
        env, entry = version_entry(results, ver, args.pairs, packages)
        if entry is None:
            continue
        source = env.venv / "fasttrace-source.txt"  # written by setup.sh
        entry["fasttrace_source"] = source.read_text().strip() if source.exists() else None
        entry.update(started=utc_now(), load_start=load1())
        for wl in args.workloads:
            row = entry["workloads"][wl] = {"_load": [load1()]}
            for name in args.tools:
                load = load1()
                _cpu_s.clear()
                res = measure(name, env, wl, args, config_command, config_notes, timed_run)
                row[name] = res
                res["load"] = [load, load1()]
                if res["status"] == "ok":  # runs alternate tool, bare; warm-ups first
                    res["cpu_tool_s"] = _cpu_s[2 * args.warmup :: 2]
                    res["cpu_bare_s"] = _cpu_s[2 * args.warmup + 1 :: 2]
                    summarize(name, res)
                else:
                    line = f"  [{ver}] {wl:<9} {name:<17} {res['status'].upper()}: {res['reason']}"
                    print(line, file=sys.stderr)
            row["_load"].append(load1())
        entry.update(finished=utc_now(), load_end=load1())
    meta.update(finished=utc_now(), load_end=load1())
    return results


def fmt_ratio(res, key="ratio"):
    if res is None:
        return "-"
    if res["status"] != "ok":
        return res["status"]
    if key not in res:
        return "-"
    return f"{res[key]:.3f} ({res[key + '_q1']:.3f}-{res[key + '_q3']:.3f})"


def fmt_sampling(name, res):
    sam = (res or {}).get("sampling")
    if not sam:
        return "-"
    if CONFIGS[name][0] == "fasttrace":
        cpu = sam["sampler_cpu_share"]
        cpu = f", CPU {100 * cpu:.1f}%" if cpu is not None else ""
        met = "" if sam["rate_met_runs"] == sam["runs"] else f", rate met {sam['rate_met_runs']}"
        return f"{sam['achieved_rate']:.0f} Hz, {sam['samples']:.0f}, torn {sam['torn']:.0f}" + (
            cpu + met
        )
    if sam.get("achieved_rate"):
        errors = f", errors {sam['error_pct']:.1f}%" if sam.get("error_pct") is not None else ""
        return f"{sam['achieved_rate']:.0f} Hz, {sam['samples']:.0f}{errors}"
    errors = f", errors {sam['errors_max']}" if sam.get("errors_max") else ""
    return f"{sam['samples']:.0f}{errors}"


def fmt_timings(ms):
    parts = [
        f"{key[:-3]} {ms[key]:.1f}" for key in ("import_ms", "start_ms", "stop_ms") if key in ms
    ]
    return ", ".join(parts) or "-"


def verdict(res, target, key="ratio"):
    if res is None or res["status"] != "ok" or key not in res:
        return "-" if res is None or key not in res else res["status"]
    q1, q3 = res[key + "_q1"], res[key + "_q3"]
    if q3 < target:
        return f"met ({res[key]:.3f}, Q3 {q3:.3f})"
    if q1 > target:
        return f"**missed** ({res[key]:.3f}, Q1 {q1:.3f})"
    return f"within noise ({res[key]:.3f}, IQR {q1:.3f}-{q3:.3f})"


def table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in rows]


def fmt_delta(res):
    if res is None or res["status"] != "ok":
        return "-" if res is None else res["status"]
    return f"{res['delta_ms']:+.1f} ({res['delta_ms_q1']:+.1f} to {res['delta_ms_q3']:+.1f})"


def report(results):
    """The markdown report, as a list of lines."""
    meta = results["meta"]
    lines = [
        f"Pairs: 1 warm-up + {meta.get('pairs')} counted per cell; repo HEAD when run: "
        f"{meta.get('repo_commit') or '?'} (the measured build: 'fasttrace built from' below); "
        f"fasttrace clock={meta.get('clock', 'wall')}."
    ]
    for ver, entry in results["versions"].items():
        lines += ["", f"### Python {entry.get('version', ver)} ({entry.get('python') or '-'})", ""]
        if entry.get("problem"):
            lines.append(f"skipped: {entry['problem']}")
            continue
        loads = [x for row in entry["workloads"].values() for x in row.get("_load", [])]
        lines.append(
            f"{entry.get('started', '?')} to {entry.get('finished', '?')}; load average (1 min) "
            f"{entry.get('load_start')} at start, {entry.get('load_end')} at end, "
            f"{min(loads, default='?')}-{max(loads, default='?')} between workloads."
        )
        names = []
        for row in entry["workloads"].values():
            names += [n for n in row if not n.startswith("_") and n not in names]
        labels = {n: CONFIGS[n][2] for n in names}
        sampled = [n for n in names if n != "fasttrace-off"]
        targeted = [n for n in names if n in TARGETS]
        cells = [r for row in entry["workloads"].values() for r in row.values()]
        has_cpu = any(isinstance(r, dict) and "cpu_ratio" in r for r in cells)
        cpu_targeted = targeted if has_cpu else []
        rows, cpu_rows, samp_rows, target_rows, startup_rows, problems = [], [], [], [], [], []
        for wl, row in entry["workloads"].items():
            ok = [row[n] for n in names if n in row and row[n]["status"] == "ok"]
            bare = [b for r in ok for b in r["bare_s"]]
            bare = f"{statistics.median(bare):.3f}" if bare else "-"
            if wl == STARTUP:
                startup_rows.append([wl, bare] + [fmt_delta(row.get(n)) for n in names])
            else:
                rows.append([wl, bare] + [fmt_ratio(row.get(n)) for n in names])
                cpu_rows.append([wl] + [fmt_ratio(row.get(n), "cpu_ratio") for n in names])
                samp_rows.append([wl] + [fmt_sampling(n, row.get(n)) for n in sampled])
                target_rows.append(
                    [wl]
                    + [verdict(row.get(n), TARGETS[n]) for n in targeted]
                    + [verdict(row.get(n), TARGETS[n], "cpu_ratio") for n in cpu_targeted]
                )
            for n in names:
                r = row.get(n)
                if r and r["status"] == "skipped":
                    problems.append(f"{n} skipped: {r['reason']}")
                elif r and r["status"] != "ok":
                    problems.append(f"{n} {r['status']} on {wl}: {r['reason']}")
        pairs = entry.get("pairs")
        if rows:
            lines += ["", *table(["workload", "bare s", *labels.values()], rows), ""]
            lines.append(
                f"Cells: median tool/bare wall-time ratio over {pairs} pairs (interquartile "
                "range of the pairwise ratios); `bare s`: median bare run."
            )
        if has_cpu:
            lines += ["", *table(["workload (CPU time)", *labels.values()], cpu_rows), ""]
            lines.append(
                "Cells: median tool/bare ratio of CPU time (user + sys of the process and its "
                "children: the sampler thread, py-spy itself), with the IQR. Other load on the "
                "machine moves it less than wall time; a sampler on a spare core adds to it."
            )
        if startup_rows:
            lines += ["", *table(["pseudo-workload", "bare s", *labels.values()], startup_rows)]
            lines.append("")
            lines.append(
                f"Fixed cost per process: median of (tool - bare) in ms over {pairs} pairs "
                "(IQR), on a script that only sleeps 0.2 s."
            )
        timed = [n for n in names if CONFIGS[n][0] == "fasttrace"]
        timing_rows = []
        for wl, row in entry["workloads"].items():
            cells = [(row.get(n) or {}).get("timings_ms") or {} for n in timed]
            if any(cells):
                timing_rows.append([wl] + [fmt_timings(c) for c in cells])
        if timing_rows:
            lines += ["", *table(["workload", *[labels[n] for n in timed]], timing_rows), ""]
            lines.append(
                "Medians of fasttrace's own steps, timed inside the runner, in ms: "
                "`import fasttrace`, start(), stop()."
            )
        if samp_rows:
            head = ["workload", *[labels[n] for n in sampled]]
            lines += ["", *table(head, samp_rows), ""]
            lines.append(
                "Medians over the runs. fasttrace: achieved rate, samples, torn samples (from its "
                "SamplingStats) and the sampler thread's CPU time as a share of the sampled time. "
                "pyinstrument: sample_count / duration of its session, and samples. py-spy: the "
                "samples it reports. profiling.sampling: samples / duration, samples and the "
                "error rate it reports (reads that failed, a share of its attempts)."
            )
        if targeted and target_rows:
            head = ["workload"] + [f"{labels[n]}: wall ratio < {TARGETS[n]}" for n in targeted]
            head += [f"{labels[n]}: CPU ratio < {TARGETS[n]}" for n in cpu_targeted]
            lines += ["", *table(head, target_rows), ""]
            lines.append(
                "met: the whole IQR is below the target; missed: all of it is above; "
                "else within noise."
            )
        packages = ", ".join(f"{p} {v}" for p, v in entry.get("packages", {}).items() if v)
        lines.append(f"Packages: {packages or '-'}")
        if entry.get("fasttrace_source"):
            lines.append(f"fasttrace built from: {entry['fasttrace_source']}")
        lines += ["- " + p for p in dict.fromkeys(problems)]
    return lines


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", action="append", help="pyenv version, e.g. 3.13 (repeatable)")
    ap.add_argument(
        "--workloads",
        default=",".join([STARTUP, *WORKLOADS]),
        help=f"comma list (default: all, and {STARTUP}, the fixed cost per process)",
    )
    ap.add_argument(
        "--tools",
        default=",".join(CONFIGS),
        help="comma list (default: all of " + ",".join(CONFIGS) + ")",
    )
    ap.add_argument("--pairs", type=int, default=7, help="counted (tool, bare) pairs (default 7)")
    ap.add_argument("--warmup", type=int, default=1, help="uncounted warm-up pairs (default 1)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per process run")
    ap.add_argument("--clock", default="wall", choices=("wall", "cpu"), help="fasttrace clock=")
    ap.add_argument(
        "--json",
        help="results file (default bench/out/sampling-<time>.json); "
        "the markdown report goes next to it as .md",
    )
    ap.add_argument(
        "--from-json",
        action="append",
        help="print the report from earlier results file(s), no runs (repeatable)",
    )
    return checked_args(ap, [STARTUP, *WORKLOADS], CONFIGS)


def main():
    args = parse_args()
    if args.from_json:
        print("\n".join(report(load_results(args.from_json))))
        return
    results = run_all(args)
    save_report(results, args.json, "sampling", report(results))


if __name__ == "__main__":
    main()
