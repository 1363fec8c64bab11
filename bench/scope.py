"""Capture-time scope (issue 13): what `fasttrace.start(include=, exclude=, max_depth=)` costs
next to a bare run and a full trace, and what the scope check costs a trace without a scope.

    python bench/scope.py --python 3.12 [--python 3.11 ...] [--workloads fib,scope_mixed]
                          [--configs full,excl] [--rounds 5] [--callgrind] [--json F]
    python bench/scope.py --python 3.12 --rounds 0 --callgrind      # instructions only
    python bench/scope.py --old REV --python 3.12 [--python 3.11] [--rounds 11] [--callgrind]
    python bench/scope.py --from-json bench/out/scope-A.json [--from-json ...]

The method is bench/run.py's, whose helpers it imports: every process is timed from outside,
start-up and writing the trace included, and a ratio is a median over alternated runs.  One
workload's configs are alternated in rounds: bare, every config (in an order rotated by one
each round), bare, the next round, ...; a config's ratio in a round is its time over the mean
of the two bare runs around that round.  1 warm-up round (--warmup), then --rounds counted
rounds.  Cells: median ratio (min-max).

Configs (each a run of bench/runners/fasttrace_run.py; HOT is the workload's own module, so
that essentially everything the workload does is out of scope):

    full        c_calls=True, the default hook (profile function to 3.11, sys.monitoring 3.12+)
    excl        full + exclude=[HOT]
    excl+b      full + exclude=[HOT, "builtins"]
    depth6      full + max_depth=6: the runner's two frames, runpy's three and the workload's
                <module> are the 6 recorded levels; everything the workload calls is muted
    eval, eval excl   c_calls=False, FASTTRACE_HOOK=eval_frame (PEP 523; 3.11, 3.12)
    prof, prof excl   c_calls=False, FASTTRACE_HOOK=profile (3.9-3.11)
    mon, mon excl     c_calls=False, FASTTRACE_HOOK=monitoring (3.12+)
    floor       not fasttrace: runners/monitoring_floor.py, a sys.monitoring tool (3.12+) that
                returns DISABLE from every event it can, as out-of-scope code does: what such
                code costs over bare is CPython's, not fasttrace's

--callgrind counts instructions instead of (with --rounds 0) or besides time, which has no
noise from other jobs on the machine: Ir of a run with FASTTRACE_BENCH_LOOPS big minus Ir of
one with it small (CALLGRIND_LOOPS), over the same difference of bare runs, so that start-up
and exit cancel out.  The writer thread polls on a timer, so the counts of configs that record
events still move by ~0.02 between runs.

A config a Python does not offer is left out of its table.  Workloads: bench/workloads/'s six,
and `scope_mixed` (workloads/scope_mixed/app.py: an in-scope driver calling the hot module
lib.py, which is the one excluded).

--old REV measures the unscoped hot path instead: fasttrace built from commit REV (in
bench/.venvs/<ver>-<REV>, built from a `git archive` of REV when missing) against this tree's
(bench/.venvs/<ver>), full trace on fib and richards, in rounds of (bare, new, old) with new and
old swapped every round.  It reports new/old of the wall time and of the traced time (the
summary's duration_ns, start-up excluded).  --callgrind adds instructions per event over bare:
(Ir(traced, big) - Ir(traced, small) - the same difference of bare runs) / (events(big) -
events(small)).
Writes a markdown report and a JSON file under bench/out/.  Stdlib only, Python 3.9+.
"""

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from run import (BENCH, WORKLOADS, PythonEnv, fasttrace_stats, fmt_rate, hook_note, load_results,
                 rel, run_notes, run_once, save_report, version_entry)
from sampling_overhead import load1, quartiles, table, utc_now

SCOPE_WORKLOADS = [*WORKLOADS, "scope_mixed"]
WORKLOAD_FILES = {"scope_mixed": "scope_mixed/app.py"}
HOT_MODULE = {"scope_mixed": "lib"}  # else the workload's own name (bench/workloads/<name>.py)
HOT = "{hot}"
DEPTH = 6
# name: (runner options, the hook FASTTRACE_HOOK asks for or None, what the Python must offer)
CONFIGS = {
    "full": ([], None),
    "excl": (["--exclude", HOT], None),
    "excl+b": (["--exclude", HOT, "--exclude", "builtins"], None),
    f"depth{DEPTH}": (["--max-depth", str(DEPTH)], None),
    "eval": (["--no-c-calls"], "eval_frame"),
    "eval excl": (["--no-c-calls", "--exclude", HOT], "eval_frame"),
    "prof": (["--no-c-calls"], "profile"),
    "prof excl": (["--no-c-calls", "--exclude", HOT], "profile"),
    "mon": (["--no-c-calls"], "monitoring"),
    "mon excl": (["--no-c-calls", "--exclude", HOT], "monitoring"),
    # not fasttrace: a sys.monitoring tool that disables every event it can (3.12+)
    "floor": ([], "monitoring"),
}
FLOOR_RUNNER = BENCH / "runners" / "monitoring_floor.py"
HOT_PATH_WORKLOADS = ["fib", "richards"]
HOT_PATH_CONFIGS = ["full"]
# --callgrind: (small, big) FASTTRACE_BENCH_LOOPS per workload
# --callgrind runs these unless --workloads names others: raytrace takes ~3 min a config under
# valgrind, and nbody makes ~100 calls
CALLGRIND_WORKLOADS = ["fib", "richards", "deltablue", "go", "scope_mixed"]
CALLGRIND_RING = 512 << 20  # per thread: holds every event of the callgrind runs
CALLGRIND_LOOPS = {"fib": (20, 24), "richards": (1, 3), "deltablue": (10, 30), "go": (1, 2),
                   "raytrace": (1, 2), "nbody": (1, 2), "scope_mixed": (2000, 6000)}
RUNNER = BENCH / "runners" / "fasttrace_run.py"


def workload_path(wl):
    return BENCH / "workloads" / WORKLOAD_FILES.get(wl, f"{wl}.py")


def slug(name):
    return re.sub(r"[^A-Za-z0-9]+", "-", name)


def hooks_offered(env):
    """The hooks this build offers: {"monitoring"} or {"profile"}, plus "eval_frame"."""
    res = env.probe("from fasttrace import _core as c; print(c.USE_MONITORING, c.HAS_EVAL_FRAME)")
    if res.returncode != 0:
        error = (res.stderr.strip().splitlines() or ["?"])[-1]
        raise LookupError(f"import fasttrace failed in {env.label}: {error} "
                          f"({env.setup_hint()})")
    mon, ev = res.stdout.split()
    plain = "monitoring" if mon == "True" else "profile"
    return {plain, "eval_frame"} if ev == "True" else {plain}


def config_argv(name, env, wl, out):
    """argv of one fasttrace config; LookupError when this Python does not offer its hook."""
    opts, hook = CONFIGS[name]
    if hook is not None and hook not in env.hooks:
        raise LookupError(f"no {hook} hook on {env.minor}")
    if name == "floor":
        return [env.python, str(FLOOR_RUNNER), str(workload_path(wl))]
    argv = [env.python, str(RUNNER), str(workload_path(wl)), out]
    argv += [HOT_MODULE.get(wl, wl) if o == HOT else o for o in opts]
    return argv + (["--hook", hook] if hook else [])


def shown_argv(argv, env):
    """argv as stored: the venv python as "python", the rest repo-relative."""
    return ["python" if a == env.python else rel(a) if os.path.isabs(a) else a for a in argv]


def timed(argv, env, log, timeout):
    """run.run_once's wall seconds, the process's CPU seconds (user + sys, its threads and
    children), and an error text or None.  CPU time moves less than wall time when other jobs
    share the machine."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, err = run_once(argv, env, log, timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, err


def spread(values, prefix="ratio"):
    q1, q3 = quartiles(values)
    return {prefix: statistics.median(values), f"{prefix}_min": min(values),
            f"{prefix}_max": max(values), f"{prefix}_q1": q1, f"{prefix}_q3": q3}


def alternate(env, commands, args, bare_argv, log_base):
    """Rounds over `commands` ({name: (argv, out)}): bare, each command (order rotated by one
    each round), bare, ...  Returns ({name: result}, bare wall times of the counted rounds).
    A result's ratios are to the mean of the two bare runs around its round, in wall time
    (ratio*) and in CPU time (cpu_ratio*)."""
    names = list(commands)
    res = {n: {"status": "ok", "argv": shown_argv(commands[n][0], env), "times": [],
               "cpu_s": [], "ratios": [], "cpu_ratios": [], "runs": []} for n in names}
    bares = []

    def bare():
        wall, cpu, err = timed(bare_argv, env, log_base + ".bare.log", args.timeout)
        if err:
            raise RuntimeError("bare run: " + err)
        return wall, cpu

    before = bare()
    for i in range(args.warmup + args.rounds):
        live = [n for n in names if res[n]["status"] == "ok"]
        if not live:
            break
        k = i % len(live)
        got = {}
        for name in live[k:] + live[:k]:
            argv, out = commands[name]
            for stale in (out, out + ".summary.json"):
                Path(stale).unlink(missing_ok=True)
            log = f"{os.path.splitext(out)[0]}.log"
            wall, cpu, err = timed(argv, env, log, args.timeout)
            if err:
                res[name] = {"status": "failed", "reason": err, "argv": res[name]["argv"]}
                continue
            got[name] = (wall, cpu, run_notes("fasttrace", log, out))
        after = bare()
        base, cpu_base = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
        counted = i >= args.warmup
        label = f"round {i - args.warmup + 1}/{args.rounds}" if counted else "warm-up"
        cells = ", ".join(f"{n} {w / base:.2f}/{c / cpu_base:.2f}" for n, (w, c, _) in got.items())
        print(f"  [{env.ver}] {label} (load {load1()}): bare {base:.3f} s; wall/cpu: {cells}",
              file=sys.stderr, flush=True)
        if counted:
            bares.append(before[0])
            for name, (wall, cpu, notes) in got.items():
                if res[name]["status"] == "ok":
                    r = res[name]
                    r["times"].append(wall)
                    r["cpu_s"].append(cpu)
                    r["ratios"].append(wall / base)
                    r["cpu_ratios"].append(cpu / cpu_base)
                    r["runs"].append(notes)
        before = after
    bares.append(before[0])
    for r in res.values():
        if r["status"] == "ok" and r["ratios"]:
            r.update(spread(r["ratios"]), **spread(r["cpu_ratios"], "cpu_ratio"),
                     stats=fasttrace_stats(r["runs"]))
    return res, bares


def fasttrace_source(env):
    source = env.venv / "fasttrace-source.txt"  # written by setup.sh (and by --old's build)
    return source.read_text().strip() if source.exists() else None


def new_results(kind, args, **extra):
    """(results, meta): the JSON both modes write, with the run's settings and the machine's
    load at the start in meta."""
    meta = {"argv": sys.argv[1:], "rounds": args.rounds, "warmup": args.warmup, **extra,
            "started": utc_now(), "load_start": load1(), "cpus": os.cpu_count()}
    return {"kind": kind, "meta": meta, "versions": {}}, meta


def run_scope(args):
    results, meta = new_results("scope", args)
    for ver in args.python:
        env, entry = version_entry(results, ver, args.rounds, ("fasttrace",))
        if entry is None:
            continue
        try:
            env.hooks = hooks_offered(env)
        except LookupError as e:
            entry["problem"] = str(e)
            print(f"[{ver}] skipped: {e}", file=sys.stderr)
            continue
        entry.update(fasttrace_source=fasttrace_source(env), started=utc_now(),
                     load_start=load1(), hooks=sorted(env.hooks))
        for wl in args.workloads if args.rounds else ():
            commands, row = {}, {}
            for name in args.configs:
                out = str(env.out / f"{wl}.scope-{slug(name)}.ftrace")
                try:
                    commands[name] = (config_argv(name, env, wl, out), out)
                except LookupError as e:
                    row[name] = {"status": "n/a", "reason": str(e)}
            load = load1()
            bare_argv = [env.python, str(workload_path(wl))]
            got, bares = alternate(env, commands, args, bare_argv, str(env.out / f"{wl}.scope"))
            row.update(got)
            entry["workloads"][wl] = {"configs": row, "bare_s": bares,
                                      "bare_median": statistics.median(bares),
                                      "load": [load, load1()]}
            for name, r in row.items():
                if r["status"] == "failed":
                    print(f"  [{ver}] {wl} {name} FAILED: {r['reason']}", file=sys.stderr)
        if args.callgrind:
            entry["callgrind"] = callgrind_all(args, {"": env}, args.configs)
        entry.update(finished=utc_now(), load_end=load1())
    meta.update(finished=utc_now(), load_end=load1())
    return results


# ---- --old REV: the unscoped hot path, this tree against REV ----------------------------------


def old_env(ver, rev):
    """PythonEnv of bench/.venvs/<ver>-<rev>, built from `git archive REV` when missing."""
    venv = BENCH / ".venvs" / f"{ver}-{rev}"
    if not (venv / "bin" / "python").exists():
        base = PythonEnv(ver)
        if base.problem:
            raise LookupError(base.problem)
        real = base.probe("import sys; print(getattr(sys, '_base_executable', sys.executable))")
        build_old(real.stdout.strip(), venv, rev)
    env = PythonEnv(ver)
    env.python, env.venv = str(venv / "bin" / "python"), venv
    env.label = rel(env.python)
    return env


def build_old(python, venv, rev):
    """A venv with fasttrace from a clean snapshot of commit `rev`, as setup.sh's FASTTRACE_REV
    does (pip install <dir>, not editable: a release build)."""
    repo = BENCH.parent
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    print(f"building fasttrace {commit[:12]} into {rel(venv)}", file=sys.stderr)
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    src = tempfile.mkdtemp(prefix="fasttrace-old-")
    try:
        archive = subprocess.run(["git", "-C", str(repo), "archive", commit], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", src], input=archive, check=True)
        log = venv / "fasttrace-install.log"
        with open(log, "wb") as f:
            subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                            "--disable-pip-version-check", "--no-deps", src], stdout=f,
                           stderr=subprocess.STDOUT, check=True)
    finally:
        shutil.rmtree(src, ignore_errors=True)
    (venv / "fasttrace-source.txt").write_text(f"commit {commit} (git archive)\n")


def run_hot_path(args):
    results, meta = new_results("hot-path", args, old=args.old, configs=args.configs)
    for ver in args.python:
        new, entry = version_entry(results, ver, args.rounds, ("fasttrace",))
        if entry is None:
            continue
        try:
            old = old_env(ver, args.old)
            new.hooks, old.hooks = hooks_offered(new), hooks_offered(old)
        except (LookupError, subprocess.CalledProcessError) as e:
            entry["problem"] = f"{e}"
            print(f"[{ver}] skipped: {e}", file=sys.stderr)
            continue
        entry.update(new_source=fasttrace_source(new), old_source=fasttrace_source(old),
                     started=utc_now(), load_start=load1())
        for wl in args.workloads if args.rounds else ():
            for name in args.configs:
                commands = {}
                try:
                    for tag, env in (("new", new), ("old", old)):
                        out = str(new.out / f"{wl}.hot-{slug(name)}-{tag}.ftrace")
                        commands[tag] = (config_argv(name, env, wl, out), out)
                except LookupError as e:
                    entry["workloads"][f"{wl} {name}"] = {"status": "n/a", "reason": str(e)}
                    continue
                load = load1()
                bare_argv = [new.python, str(workload_path(wl))]
                got, bares = alternate(new, commands, args, bare_argv,
                                       str(new.out / f"{wl}.hot-{slug(name)}"))
                cell = {"workload": wl, "config": name, "load": [load, load1()],
                        "bare_median": statistics.median(bares), **got}
                if got["new"]["status"] == "ok" and got["old"]["status"] == "ok":
                    cell["wall"] = ratio_pairs(got["new"]["times"], got["old"]["times"])
                    traced = [[r["summary"]["duration_ns"] for r in got[t]["runs"]]
                              for t in ("new", "old")]
                    cell["traced"] = ratio_pairs(*traced)
                    cell["cpu"] = ratio_pairs(got["new"]["cpu_s"], got["old"]["cpu_s"])
                entry["workloads"][f"{wl} {name}"] = cell
        if args.callgrind:
            entry["callgrind"] = callgrind_all(args, {"new": new, "old": old}, args.configs)
        entry.update(finished=utc_now(), load_end=load1())
    meta.update(finished=utc_now(), load_end=load1())
    return results


def ratio_pairs(a, b):
    """new/old per round (the two ran in the same round, next to each other)."""
    ratios = [x / y for x, y in zip(a, b)]
    return {"ratios": ratios, **spread(ratios)}


def callgrind_ir(argv, env, loops, log):
    """Instructions (Ir) of one process under callgrind, hash seed fixed."""
    vg = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    environ = dict(os.environ, FASTTRACE_BENCH_LOOPS=str(loops), PYTHONHASHSEED="0")
    with open(log, "wb") as f:
        res = subprocess.run(vg + argv, stdout=f, stderr=subprocess.STDOUT, cwd=env.out,
                             env=environ, check=False)
    text = Path(log).read_text(errors="replace")
    m = re.search(r"Collected : (\d+)", text)
    if res.returncode != 0 or not m:
        raise RuntimeError(f"callgrind run failed ({rel(log)})")
    return int(m.group(1))


def callgrind_all(args, envs, configs):
    """Steady-state instructions, per workload and config, for each build in `envs` ({tag:
    PythonEnv}; the first also runs bare): a run with the small loop count subtracted from one
    with the big count leaves the work of the extra loops, start-up and exit cancelled out.
    ratio = that difference over bare's; per_event = (difference - bare's) / extra events."""
    if shutil.which("valgrind") is None:
        return {"problem": "valgrind not found"}
    first = next(iter(envs.values()))
    out = {}
    for wl in args.workloads if args.workloads_given else CALLGRIND_WORKLOADS:
        small, big = CALLGRIND_LOOPS[wl]
        base = first.out / f"{wl}.callgrind"
        bare = [first.python, str(workload_path(wl))]
        bare_ir = [callgrind_ir(bare, first, n, f"{base}.bare.log") for n in (small, big)]
        row = out[wl] = {"loops": [small, big], "bare_ir": bare_ir}
        d_bare = bare_ir[1] - bare_ir[0]
        for name in configs:
            for tag, env in envs.items():
                key = f"{name} {tag}".strip()
                path = str(first.out / f"{wl}.callgrind-{slug(key)}.ftrace")
                try:
                    argv = config_argv(name, env, wl, path)
                except LookupError:
                    continue
                if name != "floor":
                    argv += ["--buffer-size", str(CALLGRIND_RING)]
                irs, events, drops = [], [], 0
                for n in (small, big):
                    irs.append(callgrind_ir(argv, env, n, f"{base}.{slug(key)}.log"))
                    summary = Path(path + ".summary.json")  # none for `floor`
                    got = json.loads(summary.read_text()) if summary.exists() else {}
                    events.append(got.get("events", 0))
                    drops += got.get("dropped") or 0
                    summary.unlink(missing_ok=True)
                    Path(path).unlink(missing_ok=True)
                d_ir, d_events = irs[1] - irs[0], events[1] - events[0]
                row[key] = {"ir": irs, "events": events, "dropped": drops, "ratio": d_ir / d_bare,
                            "per_event": (d_ir - d_bare) / d_events if d_events else None}
                if drops:
                    print(f"  [{first.ver}] callgrind {wl} {key}: {drops} events dropped: the "
                          "count is not the cost of a full trace", file=sys.stderr)
                print(f"  [{first.ver}] callgrind {wl} {key}: {d_ir / d_bare:.3f} x bare's "
                      f"instructions, {d_events} more events", file=sys.stderr, flush=True)
    return out


# ---- report ----------------------------------------------------------------------------------


def fmt_cell(r, key="ratio"):
    if r is None:
        return "-"
    if r["status"] != "ok":
        return r["status"]
    return f"{r[key]:.2f} ({r[key + '_min']:.2f}-{r[key + '_max']:.2f})"


def fmt_count(n):
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else str(n)


def fmt_bytes(n):
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} B"


def version_head(entry, ver):
    return (f"**Python {entry.get('version', ver)}** ({entry.get('python') or '-'}; "
            f"load {entry.get('load_start', '?')} at start, {entry.get('load_end', '?')} at end)")


def scope_report(results):
    lines = []
    for ver, entry in results["versions"].items():
        lines += ["", version_head(entry, ver), ""]
        if entry.get("problem"):
            lines.append(f"skipped: {entry['problem']}")
            continue
        if not entry["workloads"]:  # --rounds 0: instructions only
            lines += callgrind_table(entry.get("callgrind"), None)[1:]
            lines.append(f"\nfasttrace: {entry.get('fasttrace_source') or '?'}.")
            continue
        configs = []
        for row in entry["workloads"].values():
            configs += [n for n, r in row["configs"].items()
                        if r["status"] != "n/a" and n not in configs]
        for key, what in (("ratio", "Wall time"), ("cpu_ratio", "CPU time (user + sys)")):
            rows = [[wl, f"{row['bare_median']:.3f}",
                     *(fmt_cell(row["configs"].get(n), key) for n in configs)]
                    for wl, row in entry["workloads"].items()]
            lines += [f"{what}, ratio to bare:", ""] + table(["workload", "bare s", *configs],
                                                             rows) + [""]
        lines += ["Events recorded and file size (last run):", ""]
        rows = []
        for wl, row in entry["workloads"].items():
            cells = [wl]
            for n in configs:
                r = row["configs"].get(n) or {}
                s = (r.get("runs") or [{}])[-1].get("summary") if r.get("status") == "ok" else None
                cells.append(f"{fmt_count(s['events'])}, {fmt_bytes(s['bytes'])}" if s else "-")
            rows.append(cells)
        lines += table(["workload", *configs], rows)
        hooks, problems = [], []
        for wl, row in entry["workloads"].items():
            for n, r in row["configs"].items():
                note = hook_note(n, r) if r["status"] == "ok" else None
                if note and note not in hooks:
                    hooks.append(note)
                if r["status"] not in ("ok", "n/a"):
                    problems.append(f"{n} {r['status']} on {wl}: {r['reason']}")
        lines += callgrind_table(entry.get("callgrind"), configs)
        rounds = entry.get("pairs", results["meta"].get("rounds"))
        lines += ["", f"Cells: median ratio to bare over {rounds} rounds (min-max). "
                  f"fasttrace: {entry.get('fasttrace_source') or '?'}.",
                  f"Hooks: {'; '.join(hooks) or '-'}."]
        lines += [f"- {p}" for p in problems]
    return lines


def callgrind_table(cg, configs):
    if not cg:
        return []
    if cg.get("problem"):
        return ["", f"callgrind: {cg['problem']}"]
    if not configs:
        configs = [k for c in cg.values() for k in c if k not in ("loops", "bare_ir")]
        configs = list(dict.fromkeys(configs))
    rows = [[wl, f"{c['loops'][0]} / {c['loops'][1]}",
             *(f"{c[n]['ratio']:.3f}" + (" (drops)" if c[n].get("dropped") else "")
               if n in c else "-" for n in configs)]
            for wl, c in cg.items()]
    return ["", "Instructions over bare's (callgrind; FASTTRACE_BENCH_LOOPS small / big: the "
            "difference of the two runs, so start-up and exit cancel out):", ""] + table(
        ["workload", "loops", *configs], rows)


def hot_path_report(results):
    lines = []
    old = results["meta"].get("old")
    for ver, entry in results["versions"].items():
        lines += ["", version_head(entry, ver), ""]
        if entry.get("problem"):
            lines.append(f"skipped: {entry['problem']}")
            continue
        rows = []
        for cell in entry["workloads"].values():
            if cell.get("status") == "n/a":
                continue
            new, oldr = cell["new"], cell["old"]
            wall = cell.get("wall")
            traced = cell.get("traced")
            rate = (new.get("stats") or {}).get("events_per_s")
            rows.append([cell["workload"], cell["config"], f"{cell['bare_median']:.3f}",
                         fmt_cell(new), fmt_cell(oldr), fmt_iqr(wall), fmt_iqr(cell.get("cpu")),
                         fmt_iqr(traced), fmt_rate(rate) if rate else "-"])
        lines += table(["workload", "config", "bare s", "new/bare", f"{old}/bare",
                        f"new/{old} wall", f"new/{old} CPU", f"new/{old} traced time",
                        "events/s (new)"], rows)
        lines += ["", f"new: {entry.get('new_source')}; {old}: {entry.get('old_source')}. "
                  f"Ratios to bare: median (min-max); new/{old}: median (IQR) of the "
                  f"per-round ratios over {entry.get('pairs')} rounds."]
        cg = entry.get("callgrind")
        if cg and cg.get("problem"):
            lines += ["", f"callgrind: {cg['problem']}"]
        elif cg:
            rows = []
            for wl, c in cg.items():
                for name in results["meta"].get("configs") or HOT_PATH_CONFIGS:
                    new, oldc = c.get(f"{name} new"), c.get(f"{name} old")
                    if not (new and oldc and new["per_event"] and oldc["per_event"]):
                        continue
                    rows.append([wl, name, f"{c['loops'][0]} / {c['loops'][1]}",
                                 f"{oldc['per_event']:.1f}", f"{new['per_event']:.1f}",
                                 f"{new['per_event'] - oldc['per_event']:+.1f}",
                                 f"{new['ratio'] / oldc['ratio']:.4f}"])
            lines += ["", "Instructions per event over bare (callgrind; FASTTRACE_BENCH_LOOPS "
                      "small / big: the difference of the two runs):", ""]
            lines += table(["workload", "config", "loops", old, "new", "new - old",
                            f"instructions new/{old}"], rows)
    return lines


def fmt_iqr(r):
    if not r:
        return "-"
    return f"{r['ratio']:.3f} ({r['ratio_q1']:.3f}-{r['ratio_q3']:.3f})"


def report(results):
    meta = results["meta"]
    head = [f"Started {meta.get('started')}, finished {meta.get('finished')}; "
            f"{meta.get('cpus')} CPUs; `python bench/scope.py {' '.join(meta.get('argv', []))}`"]
    if results.get("kind") == "hot-path":
        return head + hot_path_report(results)
    return head + scope_report(results)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", action="append", help="version, e.g. 3.12 (repeatable)")
    ap.add_argument("--workloads", help=f"comma list from {','.join(SCOPE_WORKLOADS)} "
                    f"(default: all; with --old: {','.join(HOT_PATH_WORKLOADS)})")
    ap.add_argument("--configs", help=f"comma list from {','.join(CONFIGS)} (default: all; "
                    f"with --old: {','.join(HOT_PATH_CONFIGS)})")
    ap.add_argument("--rounds", type=int, help="counted rounds (default 5; with --old 11; 0: "
                    "no timing, with --callgrind)")
    ap.add_argument("--warmup", type=int, default=1, help="uncounted warm-up rounds (default 1)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per process run")
    ap.add_argument("--old", metavar="REV", help="measure this tree's unscoped hot path "
                    "against commit REV (bench/.venvs/<ver>-REV, built when missing)")
    ap.add_argument("--callgrind", action="store_true", help="also count instructions under "
                    "callgrind (no noise; with --rounds 0, only that); workloads: "
                    f"{','.join(CALLGRIND_WORKLOADS)} unless --workloads is given")
    ap.add_argument("--json", help="results file (default bench/out/scope-<UTC time>.json)")
    ap.add_argument("--from-json", action="append", help="re-print earlier results, no runs")
    args = ap.parse_args()
    args.python = args.python or ["3.12"]
    hot = args.old is not None
    args.workloads_given = args.workloads is not None or hot
    args.workloads = (args.workloads or ",".join(HOT_PATH_WORKLOADS if hot else SCOPE_WORKLOADS))
    args.workloads = [w for w in args.workloads.split(",") if w]
    args.configs = [c for c in (args.configs or ",".join(HOT_PATH_CONFIGS if hot else CONFIGS))
                    .split(",") if c]
    if args.rounds is None:
        args.rounds = 11 if hot else 5
    if args.rounds == 0 and not args.callgrind:
        ap.error("--rounds 0 only with --callgrind (nothing to measure)")
    unknown = [w for w in args.workloads if w not in SCOPE_WORKLOADS]
    unknown += [c for c in args.configs if c not in CONFIGS]
    if unknown:
        ap.error(f"unknown workload/config: {', '.join(unknown)}")
    if hot and any(o in ("--exclude", "--max-depth") for c in args.configs for o in CONFIGS[c][0]):
        ap.error("--old: configs without a scope only (full, eval, prof, mon): the old build "
                 "has none")
    return args


def main():
    args = parse_args()
    if args.from_json:
        results = load_results(args.from_json)
        results["kind"] = json.loads(Path(args.from_json[-1]).read_text()).get("kind")
        lines = report(results)
        print("\n".join(lines))
        return
    results = run_hot_path(args) if args.old else run_scope(args)
    prefix = "scope-hot-path" if args.old else "scope"
    save_report(results, args.json, prefix, report(results))


if __name__ == "__main__":
    main()
