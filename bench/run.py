"""Overhead of fasttrace and its peers, as a ratio of whole-process wall time to a bare run.

    python bench/run.py --python 3.13 [--python 3.12 ...] [--workloads fib,go]
                        [--tools fasttrace,cProfile] [--pairs 5] [--targets]
    python bench/run.py --from-json bench/out/results-A.json --from-json ... --targets

For each Python version and workload, every tool is measured against the bare run in
alternating pairs (tool, bare, tool, bare, ...): 1 warm-up pair, then --pairs counted pairs.
Each run is timed from outside the process (perf_counter around subprocess.run), so start-up
and writing the output are included. Ratio = median of the pairwise tool/bare ratios.
Venvs come from `bash bench/setup.sh`; tools that cannot run are listed as skipped.
Stdlib only, Python 3.9+.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
WORKLOADS = ["fib", "richards", "deltablue", "go", "raytrace", "nbody"]
CALL_DENSE = ["fib", "richards", "deltablue", "go", "raytrace"]
DEFAULT_TOOLS = ["fasttrace", "cProfile", "viztracer", "trace0"]
# fasttrace's variants: runners/fasttrace_run.py's options for each. fasttrace-noc is
# c_calls=False; -mon, -eval and -prof force one hook with FASTTRACE_HOOK (monitoring,
# eval_frame, profile), also with c_calls=False, the one setting every hook serves, so that they
# compare the hooks side by side. The hook each trace really used is recorded and printed.
FASTTRACE_VARIANTS = {
    "fasttrace": [],
    "fasttrace-noc": ["--no-c-calls"],
    "fasttrace-mon": ["--no-c-calls", "--hook", "monitoring"],
    "fasttrace-eval": ["--no-c-calls", "--hook", "eval_frame"],
    "fasttrace-prof": ["--no-c-calls", "--hook", "profile"],
}
ALL_TOOLS = [*DEFAULT_TOOLS, *(t for t in FASTTRACE_VARIANTS if t not in DEFAULT_TOOLS)]
VIZ_DEFAULT_ENTRIES = 1_000_000  # viztracer's own default --tracer_entries


def rel(path):
    """A path as printed or stored: relative to the repo when inside it."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(BENCH.parent))
    except ValueError:
        return str(path)


def save_report(results, json_arg, prefix, lines):
    """Writes `results` as JSON (to `json_arg`, else bench/out/<prefix>-<UTC time>.json) and
    the report `lines` beside it as .md, prints the report and both paths."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    path = Path(json_arg) if json_arg else BENCH / "out" / f"{prefix}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    text = "\n".join(lines)
    path.with_suffix(".md").write_text(text + "\n")
    print(text)
    print(f"\nresults: {rel(path)}, report: {rel(path.with_suffix('.md'))}")
    return path


def fmt_rate(per_s):
    return f"{per_s / 1e6:.2f}M" if per_s >= 1e6 else f"{per_s / 1e3:.1f}k"


class PythonEnv:
    """One interpreter: bench/.venvs/<ver> when set up, else the plain pyenv Python (or, for a
    version pyenv lacks, the one scripts/get-python.sh left in build/pythons/)."""

    def __init__(self, ver):
        self.ver = ver
        self.venv = BENCH / ".venvs" / ver
        self.out = BENCH / "out" / ver
        self.problem = self.label = None
        if (self.venv / "bin" / "python").exists():
            self.python = str(self.venv / "bin" / "python")
            self.label = rel(self.python)
        else:
            prefix = self._pyenv_prefix()
            unpacked = BENCH.parent / "build" / "pythons" / ver / "usr" / "bin" / f"python{ver}"
            if prefix is not None:
                self.python = str(Path(prefix) / "bin" / "python")
                self.label = f"pyenv {ver}, no bench/.venvs/{ver}"
            elif unpacked.exists():
                self.python = str(unpacked)
                self.label = f"{rel(unpacked)}, no bench/.venvs/{ver}"
            else:
                self.python = None
                self.problem = (f"no bench/.venvs/{ver}, 'pyenv prefix {ver}' failed and "
                                f"scripts/get-python.sh has not unpacked {ver}")
                return
        self.out.mkdir(parents=True, exist_ok=True)
        probe = self.probe(
            "import sys, platform; print('%d.%d' % sys.version_info[:2], platform.python_version())"
        )
        if probe.returncode != 0:
            self.problem = f"cannot run {self.label}"
            return
        self.minor, self.full_version = probe.stdout.split()

    def _pyenv_prefix(self):
        try:
            res = subprocess.run(
                ["pyenv", "prefix", self.ver], check=False, capture_output=True, text=True
            )
        except OSError:
            return None
        lines = res.stdout.strip().splitlines()
        return lines[0] if res.returncode == 0 and lines else None

    def probe(self, code):
        # cwd = out dir, so that `-c` cannot import the repo's source tree instead of the install.
        return subprocess.run(
            [self.python, "-c", code], check=False, capture_output=True, text=True, cwd=self.out
        )

    def setup_hint(self, name="fasttrace"):
        """Where to look when `name` (fasttrace or a peer) is not installed: the log setup.sh
        keeps of a failed install, else the command that installs it."""
        log = self.venv / f"{name}-install.log"
        if log.exists():
            tail = [x.strip() for x in log.read_text(errors="replace").splitlines() if x.strip()]
            error = next((x for x in reversed(tail) if x.startswith("ERROR")), None)
            return f"see {rel(log)}" + (f": {error}" if error and name != "fasttrace" else "")
        return f"run: bash bench/setup.sh {self.ver}"

    def script(self, name):
        path = self.venv / "bin" / name
        return str(path) if path.exists() else None

    def package_version(self, name):
        res = self.probe(f"import importlib.metadata as m; print(m.version({name!r}))")
        return res.stdout.strip() if res.returncode == 0 else None


def tool_command(tool, env, workload, out_base, args):
    """(argv, output path) for one run; raises LookupError(reason) if the tool cannot run here."""
    wl = str(BENCH / "workloads" / f"{workload}.py")

    def not_installed(name):
        return f"{name} not installed in bench/.venvs/{env.ver} ({env.setup_hint(name)})"

    if tool == "bare":
        return [env.python, wl], None
    if tool == "cProfile":
        out = out_base + ".prof"
        return [env.python, "-m", "cProfile", "-o", out, wl], out
    if tool == "viztracer":
        viztracer = env.script("viztracer")
        if viztracer is None:
            raise LookupError(not_installed("viztracer"))
        out = out_base + ".json"
        return [viztracer, "--tracer_entries", str(args.viz_entries), "-o", out, wl], out
    if tool == "trace0":
        if tuple(map(int, env.minor.split("."))) < (3, 13):
            raise LookupError(f"trace0 needs Python >= 3.13, this is {env.minor}")
        trace0 = env.script("trace0")
        if trace0 is None:
            raise LookupError(not_installed("trace0"))
        out = out_base + ".pb"
        return [trace0, "run", "--output", out, wl], out
    if tool in FASTTRACE_VARIANTS:
        check = env.probe("import fasttrace; fasttrace.start; fasttrace.stop")
        if check.returncode != 0:
            error = (check.stderr.strip().splitlines() or ["?"])[-1]
            hint = env.setup_hint()
            raise LookupError(f"import fasttrace failed in {env.label}: {error} ({hint})")
        out = out_base + ".ftrace"
        argv = [env.python, str(BENCH / "runners" / "fasttrace_run.py"), wl, out]
        return argv + FASTTRACE_VARIANTS[tool], out
    raise LookupError(f"unknown tool {tool!r}")


def run_once(argv, env, log_path, timeout):
    """Wall seconds of one process run timed from outside, and an error text or None.

    The wait blocks in waitpid and a timer thread enforces the timeout: subprocess.run(...,
    timeout=) polls instead, sleeping up to 50 ms between polls, which adds 0-50 ms to every
    time (up to 6-8 % of a workload run)."""
    timed_out = []

    def kill():
        timed_out.append(True)
        proc.kill()

    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=env.out
        )
        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            returncode = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        error = None if returncode == 0 else f"exit code {returncode}"
        if timed_out:
            error = f"timed out after {timeout} s"
    if error:
        tail = Path(log_path).read_text(errors="replace").strip().splitlines()[-3:]
        error += f" ({rel(log_path)}: {' | '.join(tail)})"
    return wall, error


def run_notes(tool, log_path, out):
    """What a tool run tells besides its time: output size, viztracer buffer, fasttrace summary."""
    notes = {}
    if out and Path(out).exists():
        notes["output_bytes"] = Path(out).stat().st_size
    if tool == "viztracer":
        text = Path(log_path).read_text(errors="replace")
        notes["buffer_full"] = "Circular buffer is full" in text
        m = re.search(r"Total Entries: (\d+)", text)
        notes["entries"] = int(m.group(1)) if m else None
    if tool.startswith("fasttrace"):
        summary = Path(out + ".summary.json")
        notes["summary"] = json.loads(summary.read_text()) if summary.exists() else None
        if notes["summary"] and notes["summary"].get("path"):
            notes["summary"]["path"] = rel(notes["summary"]["path"])
    elif out:
        Path(out).unlink(missing_ok=True)  # peers' outputs are big (100s of MB) and not needed
    return notes


def measure(tool, env, workload, args, command=tool_command, notes_of=run_notes, run=run_once):
    """Alternated (tool, bare) pairs of one tool on one workload.  bench/sampling_overhead.py
    passes its own `command` (which also gives the "bare" command), `notes_of` and `run`, with
    the signatures of tool_command, run_notes and run_once."""
    out_base = str(env.out / f"{workload}.{tool}")
    try:
        tool_argv, out = command(tool, env, workload, out_base, args)
    except LookupError as e:
        return {"status": "skipped", "reason": str(e)}
    bare_argv, _ = command("bare", env, workload, out_base, args)
    # Stored without this machine's paths: the venv python as "python", the rest repo-relative.
    shown = ["python" if a == env.python else rel(a) if os.path.isabs(a) else a for a in tool_argv]
    res = {"status": "ok", "argv": shown, "tool_s": [], "bare_s": [], "ratios": [], "runs": []}
    for i in range(args.warmup + args.pairs):
        if out:  # never report a previous run's output or summary
            for stale in (out, out + ".summary.json"):
                Path(stale).unlink(missing_ok=True)
        a, err = run(tool_argv, env, out_base + ".log", args.timeout)
        if err is None:
            notes = notes_of(tool, out_base + ".log", out)
            b, err = run(bare_argv, env, out_base + ".bare.log", args.timeout)
            err = err and "bare run: " + err
        if err:
            return {"status": "failed", "reason": err, "argv": shown}
        counted = i >= args.warmup
        label = f"pair {i - args.warmup + 1}/{args.pairs}" if counted else "warm-up"
        print(
            f"  [{env.ver}] {workload:<9} {tool:<13} {label}: {a:.3f} s / {b:.3f} s = {a / b:.2f}",
            file=sys.stderr,
            flush=True,
        )
        if counted:
            res["tool_s"].append(a)
            res["bare_s"].append(b)
            res["ratios"].append(a / b)
            res["runs"].append(notes)
    ratios = res["ratios"]
    res.update(ratio=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios))
    if tool.startswith("fasttrace") and notes_of is run_notes:
        res["stats"] = fasttrace_stats(res["runs"])
    return res


def fasttrace_stats(runs):
    """bytes/event (last run), events/s over the traced duration (median), drops (max)."""
    sums = [r["summary"] for r in runs if r.get("summary") and r["summary"].get("events")]
    if not sums:
        return None
    last = sums[-1]
    rates = [s["events"] / (s["duration_ns"] / 1e9) for s in sums if s.get("duration_ns")]
    return {
        "events": last["events"],
        "bytes_per_event": last["bytes"] / last["events"] if last.get("bytes") else None,
        "events_per_s": statistics.median(rates) if rates else None,
        "dropped_max": max(s.get("dropped") or 0 for s in sums),
        # The hook the traces were recorded with (Session.hook), and FASTTRACE_HOOK if set.
        "hooks": sorted({s["hook"] for s in sums if s.get("hook")}),
        "hook_requested": last.get("hook_requested"),
    }


def hook_note(tool, res):
    """`tool: hook` as recorded, and whether a FASTTRACE_HOOK request was not honoured."""
    st = (res or {}).get("stats") or {}
    if not st.get("hooks"):
        return None
    used, asked = "/".join(st["hooks"]), st.get("hook_requested")
    if asked and st["hooks"] != [asked]:
        return f"{tool} {used} (FASTTRACE_HOOK={asked} asked: not honoured by this build)"
    return f"{tool} {used}"


def version_entry(results, ver, pairs, packages):
    """(PythonEnv, its results["versions"] entry), the entry None when that Python cannot run
    (the reason is recorded in the results and printed)."""
    env = PythonEnv(ver)
    entry = {"python": env.label, "problem": env.problem}
    results["versions"][ver] = entry
    if env.problem:
        print(f"[{ver}] skipped: {env.problem}", file=sys.stderr)
        return env, None
    entry.update(version=env.full_version, minor=env.minor, pairs=pairs, workloads={})
    entry["packages"] = {p: env.package_version(p) for p in packages}
    return env, entry


def run_all(args):
    meta = {"argv": sys.argv[1:], "pairs": args.pairs, "warmup": args.warmup}
    meta.update(viz_entries=args.viz_entries, started=time.strftime("%Y-%m-%d %H:%M:%S"))
    results = {"meta": meta, "versions": {}}
    for ver in args.python:
        env, entry = version_entry(results, ver, args.pairs, ("viztracer", "trace0", "fasttrace"))
        if entry is None:
            continue
        for wl in args.workloads:
            row = entry["workloads"][wl] = {}
            for tool in args.tools:
                res = row[tool] = measure(tool, env, wl, args)
                if res["status"] != "ok":
                    status = res["status"].upper()
                    print(
                        f"  [{ver}] {wl:<9} {tool:<13} {status}: {res['reason']}", file=sys.stderr
                    )
    results["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return results


def fmt_cell(res):
    if res is None:
        return "-"
    if res["status"] != "ok":
        return res["status"]
    cell = f"{res['ratio']:.2f} ({res['ratio_min']:.2f}-{res['ratio_max']:.2f})"
    return cell + (" *" if any(r.get("buffer_full") for r in res["runs"]) else "")


def fasttrace_cells(res):
    st = (res or {}).get("stats")
    if not st:
        return ["-", "-", "-"]
    bpe, rate = st["bytes_per_event"], st["events_per_s"]
    return [f"{bpe:.1f}" if bpe else "-", fmt_rate(rate) if rate else "-", str(st["dropped_max"])]


def print_tables(results, out=sys.stdout):
    for ver, entry in results["versions"].items():
        print(
            f"\n### Python {entry.get('version', ver)} ({entry.get('python') or '-'})\n", file=out
        )
        if entry.get("problem"):
            print(f"skipped: {entry['problem']}", file=out)
            continue
        tools = []
        for row in entry["workloads"].values():
            tools += [t for t in row if t not in tools]
        ft_tools = [t for t in tools if t.startswith("fasttrace")]
        head = ["workload", "bare s", *tools]
        for t in ft_tools:
            head += [f"{t} bytes/event", f"{t} events/s", f"{t} drops"]
        print("| " + " | ".join(head) + " |", file=out)
        print("|" + "---|" * len(head), file=out)
        problems, viz_full = [], False
        for wl, row in entry["workloads"].items():
            bare = [b for r in row.values() if r["status"] == "ok" for b in r["bare_s"]]
            cells = [wl, f"{statistics.median(bare):.3f}" if bare else "-"]
            cells += [fmt_cell(row.get(t)) for t in tools]
            for t in ft_tools:
                cells += fasttrace_cells(row.get(t))
            print("| " + " | ".join(cells) + " |", file=out)
            viz_full |= fmt_cell(row.get("viztracer")).endswith("*")
            for t, r in row.items():
                if r["status"] == "skipped":
                    problems.append(f"{t} skipped: {r['reason']}")
                elif r["status"] != "ok":
                    problems.append(f"{t} {r['status']} on {wl}: {r['reason']}")
        pairs = entry.get("pairs", results["meta"].get("pairs"))
        print(f"\nCells: median tool/bare wall ratio over {pairs} pairs (min-max).", file=out)
        if viz_full:
            print("`*` VizTracer reported its circular buffer full (early events lost).", file=out)
        packages = ", ".join(f"{p} {v}" for p, v in entry.get("packages", {}).items() if v)
        print(f"Packages: {packages or '-'}", file=out)
        hooks = {}
        for t in ft_tools:
            for row in entry["workloads"].values():
                note = hook_note(t, row.get(t))
                if note:
                    hooks.setdefault(t, [])
                    if note not in hooks[t]:
                        hooks[t].append(note)
        if hooks:
            print(f"fasttrace's hooks: {'; '.join(n for ns in hooks.values() for n in ns)}",
                  file=out)
        for p in dict.fromkeys(problems):  # a skip repeats per workload: print each once
            print("- " + p, file=out)


def check_targets(results, out=sys.stdout):
    """The issue's targets: PASS / FAIL / INCOMPLETE / N/A each. Never fails the run."""
    by_minor = {e["minor"]: e for e in results["versions"].values() if e.get("minor")}

    def ratio(entry, wl, tool):
        r = entry["workloads"].get(wl, {}).get(tool)
        return r["ratio"] if r and r["status"] == "ok" else None

    def why_missing(entry, wl, tools):
        row = entry["workloads"].get(wl)
        if row is None:
            return f"{wl} (not run)"
        bad = [t + " " + (row[t]["status"] if t in row else "not run") for t in tools]
        bad = [b for b in bad if not b.endswith(" ok")]
        return f"{wl} ({', '.join(bad)})"

    def compare(entry, wl, peer):
        ft, other = ratio(entry, wl, "fasttrace"), ratio(entry, wl, peer)
        if ft is None or other is None:
            return None
        if peer == "trace0":
            return ft <= other, f"{ft:.2f} vs {other:.2f}"
        return ft - 1 <= 0.5 * (other - 1), f"{ft - 1:.2f} vs {0.5 * (other - 1):.2f}"

    def verdict(name, minor, workloads, peer, explain):
        entry = by_minor.get(minor)
        if entry is None:
            print(f"{'N/A':<10} {name}: Python {minor} not in these results", file=out)
            return
        details, failed, missing = [], False, []
        for wl in workloads:
            got = compare(entry, wl, peer)
            if got is None:
                missing.append(why_missing(entry, wl, ["fasttrace", peer]))
                continue
            ok, text = got
            details.append(f"{wl} {text}" + ("" if ok else " FAIL"))
            failed |= not ok
        status = "FAIL" if failed else "INCOMPLETE" if missing else "PASS"
        print(f"{status:<10} {name} [{explain}]: {'; '.join(details) or '-'}", file=out)
        if missing:
            print(f"{'':<10} no data for: {'; '.join(missing)}", file=out)

    print("\n### Targets\n", file=out)
    for minor in ("3.13", "3.14", "3.15"):  # trace0 supports 3.13+ (3.15: where it installs)
        verdict(f"{minor}: fasttrace ratio <= trace0's", minor, WORKLOADS, "trace0",
                "ratio ft vs trace0")
    half_viz = "overhead ft vs 0.5 x viztracer's"
    for minor in ("3.12", "3.13", "3.14", "3.15"):
        title = f"{minor}: fasttrace overhead <= 0.5 x viztracer overhead"
        verdict(title, minor, WORKLOADS, "viztracer", half_viz)
    title = "3.11: the same, call-dense workloads only"
    verdict(title, "3.11", CALL_DENSE, "viztracer", half_viz)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", action="append", help="pyenv version, e.g. 3.13 (repeatable)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list (default: all)")
    ap.add_argument(
        "--tools",
        default=",".join(DEFAULT_TOOLS),
        help=f"comma list from {','.join(ALL_TOOLS)} (default: {','.join(DEFAULT_TOOLS)})",
    )
    ap.add_argument("--pairs", type=int, default=5, help="counted (tool, bare) pairs (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="uncounted warm-up pairs (default 1)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per process run")
    ap.add_argument(
        "--viz-entries",
        type=int,
        default=VIZ_DEFAULT_ENTRIES,
        help="viztracer --tracer_entries (default: its own default, 1000000)",
    )
    ap.add_argument("--targets", action="store_true", help="evaluate the issue's targets")
    ap.add_argument(
        "--from-json",
        action="append",
        help="print tables/targets from earlier results file(s), no runs (repeatable)",
    )
    return checked_args(ap, WORKLOADS, ALL_TOOLS)


def checked_args(ap, workloads, tools):
    """Parses the command line shared with sampling_overhead.py: comma lists split, names and
    --pairs checked against what the script knows."""
    args = ap.parse_args()
    args.python = args.python or ["3.13"]
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.tools = [t for t in args.tools.split(",") if t]
    unknown = [w for w in args.workloads if w not in workloads]
    unknown += [t for t in args.tools if t not in tools]
    if unknown:
        ap.error(f"unknown workload/tool: {', '.join(unknown)}")
    if args.pairs < 1:
        ap.error("--pairs must be >= 1")
    return args


def load_results(paths):
    """Earlier results files merged: a later file's entry for the same version wins."""
    results = {"meta": {}, "versions": {}}
    for path in paths:
        loaded = json.loads(Path(path).read_text())
        results["meta"].update(loaded["meta"])
        results["versions"].update(loaded["versions"])
    return results


def main():
    args = parse_args()
    if args.from_json:
        results = load_results(args.from_json)
    else:
        results = run_all(args)
        path = BENCH / "out" / f"results-{time.strftime('%Y%m%d-%H%M%S')}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(results, indent=1) + "\n")
        print(f"\nresults: {rel(path)}")
    print_tables(results)
    if args.targets:
        check_targets(results)


if __name__ == "__main__":
    main()
