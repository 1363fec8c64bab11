"""Capture-time scope in sampling mode: start(rate=..., include=, exclude=, max_depth=,
trim_stacks=) writes only what the scope keeps (src/FORMAT.md section 8, "Scope").

Every program runs in a fresh interpreter from files in tmp_path, and spends known phases in
busy loops of known modules (hot.py, cold.py, called through driver.py from main.py) at
1000 Hz, long enough that each phase is certain to be sampled many times.  The assertions are
on which frames the samples hold, never on wall times: the sets expected are certain, and a
stray sample (fasttrace's own start and stop, an import) is either out of scope or allowed
for by name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter

import pytest

import fasttrace
from fasttrace._scope import Scope

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the sampler reads memory with process_vm_readv")

PHASE = 0.3  # seconds per busy phase: ~300 samples at 1000 Hz

SPIN = """
import time

def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
"""

DRIVER = """
import cold
import hot

def run(phase):
    via_cold(phase)
    via_hot(phase)
    via_cold(phase)

def via_hot(phase):
    hot.spin(phase)

def via_cold(phase):
    cold.spin(phase)
"""

# main.py: argv[1] is the JSON of start()'s scope options, argv[2] the output path; prints
# stop()'s sampling stats as JSON.
MAIN = """
import json, sys
import fasttrace
import driver

opts = json.loads(sys.argv[1])
with fasttrace.start(sys.argv[2], rate=1000, **opts) as session:
    {body}
print(json.dumps(session.summary.sampling._asdict()))
"""

# The frames of the main thread in each phase, as (file, function name) root first.
MAIN_ROOT = ("main.py", "<module>")
HOT_STACK = (MAIN_ROOT, ("driver.py", "run"), ("driver.py", "via_hot"), ("hot.py", "spin"))
COLD_STACK = (MAIN_ROOT, ("driver.py", "run"), ("driver.py", "via_cold"), ("cold.py", "spin"))


def run_program(tmp_path, opts, body=f"driver.run({PHASE})", files=None, name="out",
                python_args=()):
    """Runs main.py with these scope options; returns (trace, stop()'s sampling stats, with
    the program's stderr as "stderr")."""
    sources = {"hot.py": SPIN, "cold.py": SPIN, "driver.py": DRIVER,
               "main.py": MAIN.format(body=body)}
    sources.update(files or {})
    for fname, text in sources.items():
        (tmp_path / fname).write_text(textwrap.dedent(text))
    out = tmp_path / f"{name}.ftrace"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # main.py's directory is first on sys.path: its modules win
    r = subprocess.run([sys.executable, *python_args, "main.py", json.dumps(opts), str(out)],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    stats["stderr"] = r.stderr
    return fasttrace.load(out), stats


def frames(sample):
    return tuple((os.path.basename(f.filename), f.name) for f in sample.stack)


def stacks(trace):
    return Counter(frames(s) for s in trace.samples())


def check_scope(trace, include=(), exclude=(), trim=False, max_depth=None):
    """What holds of every sample of a scoped trace, whatever the timing: with trim_stacks
    every frame is in scope, else at least one (unless max_depth may have cut it); no stack
    deeper than max_depth, and none flagged truncated; functions defined are those used."""
    scope = Scope(include, exclude)
    used = set()
    for s in trace.samples():
        assert s.stack, "the sampler writes no empty stack"
        assert s.stack[0] is not fasttrace._core.TRUNCATED
        inside = [scope.code_in_scope(f.filename) for f in s.stack]
        if trim:
            assert all(inside), frames(s)
        elif max_depth is None and scope.patterns:
            assert any(inside), frames(s)
        if max_depth is not None:
            assert len(s.stack) <= max_depth, frames(s)
        used.update(f.id for f in s.stack)
    assert used == {f.id for f in trace.functions}, "the file defines only what stacks use"


def check_counts(trace, stats):
    """stop()'s stats agree with the file; each tick sampled the main thread (the only
    Python thread) at most once, kept or counted out of scope, and with the wall clock every
    tick did; nothing was lost waiting for a decision."""
    assert trace.sampling.samples == stats["samples"] == sum(1 for _ in trace.samples())
    assert trace.sampling.out_of_scope == stats["out_of_scope"]
    assert stats["dropped"] == 0
    assert stats["samples"] + stats["out_of_scope"] <= stats["ticks"]
    if stats["clock"] == "wall":  # (the cpu clock skips a thread whose CPU time did not move)
        assert stats["samples"] + stats["out_of_scope"] >= 0.9 * stats["ticks"]


def test_include_by_module_keeps_whole_stacks(tmp_path):
    trace, stats = run_program(tmp_path, {"include": ["hot"]})
    assert trace.scope["include"] == ["hot"] and trace.scope["trim_stacks"] is False
    check_scope(trace, include=["hot"])
    check_counts(trace, stats)
    got = stacks(trace)
    # every kept sample is in hot.spin, with all its callers; torn ones may miss root frames
    assert all(st[-1] == ("hot.py", "spin") for st in got), got
    assert got[HOT_STACK] > 100
    assert not any(f == ("cold.py", "spin") for st in got for f in st)
    # the two cold phases are counted, not written
    assert stats["out_of_scope"] > 200
    assert {f.name for f in trace.functions} == {"<module>", "run", "via_hot", "spin"}


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_include_by_module_trimmed(tmp_path, clock):
    trace, stats = run_program(tmp_path, {"include": ["hot"], "trim_stacks": True,
                                          "clock": clock})
    assert trace.scope["trim_stacks"] is True and trace.sampling.clock == clock
    check_scope(trace, include=["hot"], trim=True)
    check_counts(trace, stats)
    got = stacks(trace)
    assert set(got) == {(("hot.py", "spin"),)}
    assert got[(("hot.py", "spin"),)] > 100
    assert stats["out_of_scope"] > 200
    assert [(f.name, os.path.basename(f.filename)) for f in trace.functions] == \
        [("spin", "hot.py")]


def test_exclude_by_module(tmp_path):
    # keep: a sample with any frame outside the excluded modules is kept whole, so the
    # callers have to be excluded too for the cold phases to go
    exclude = ["cold", "driver", "main"]
    trace, stats = run_program(tmp_path, {"exclude": exclude})
    check_scope(trace, exclude=exclude)
    check_counts(trace, stats)
    got = stacks(trace)
    assert got[HOT_STACK] > 100
    assert not any(("cold.py", "spin") in st for st in got), got
    assert stats["out_of_scope"] > 200


def test_exclude_by_module_trimmed(tmp_path):
    trace, stats = run_program(tmp_path, {"exclude": ["cold"], "trim_stacks": True})
    check_scope(trace, exclude=["cold"], trim=True)
    check_counts(trace, stats)
    got = stacks(trace)
    assert got[HOT_STACK] > 100
    assert got[COLD_STACK[:-1]] > 200  # the cold phases, without cold.spin
    assert not any(f[0] == "cold.py" for st in got for f in st)
    # main.py's <module> is in scope and the root of every sample: none is left out
    assert stats["out_of_scope"] == 0


def test_file_glob(tmp_path):
    trace, stats = run_program(tmp_path, {"include": ["*/hot.py"], "trim_stacks": True})
    check_scope(trace, include=["*/hot.py"], trim=True)
    check_counts(trace, stats)
    got = stacks(trace)
    assert set(got) == {(("hot.py", "spin"),)} and got[(("hot.py", "spin"),)] > 100
    assert stats["out_of_scope"] > 200

    exclude = ["*/cold.py", "*/driver.py", "*/main.py"]
    trace, stats = run_program(tmp_path, {"exclude": exclude}, name="glob2")
    check_scope(trace, exclude=exclude)
    got = stacks(trace)
    assert got[HOT_STACK] > 100  # kept whole
    assert not any(("cold.py", "spin") in st for st in got)
    assert stats["out_of_scope"] > 200


def test_max_depth_keeps_the_outermost_frames(tmp_path):
    # keep: a sample with hot.spin in it is kept, cut to its outermost 2 frames
    trace, stats = run_program(tmp_path, {"include": ["hot"], "max_depth": 2})
    check_scope(trace, include=["hot"], max_depth=2)
    check_counts(trace, stats)
    got = stacks(trace)
    assert set(got) <= {HOT_STACK[:2], HOT_STACK[:1]}, got
    assert got[HOT_STACK[:2]] > 100
    assert stats["out_of_scope"] > 200
    assert {f.name for f in trace.functions} <= {"<module>", "run"}

    # trim first, then the depth: driver and hot frames are in scope, (run, via_*, spin)
    # becomes (run,)
    trace, stats = run_program(tmp_path, {"include": ["driver", "hot"], "max_depth": 1,
                                          "trim_stacks": True}, name="trim-depth")
    check_scope(trace, include=["driver", "hot"], trim=True, max_depth=1)
    got = stacks(trace)
    assert set(got) == {(("driver.py", "run"),)}, got
    assert got[(("driver.py", "run"),)] > 600  # all three phases
    assert stats["out_of_scope"] < 0.1 * stats["samples"]


def test_max_depth_alone(tmp_path):
    # no patterns: every frame is in scope, stacks are cut to their outermost frames
    trace, stats = run_program(tmp_path, {"max_depth": 3})
    assert trace.scope["max_depth"] == 3
    check_scope(trace, max_depth=3)
    check_counts(trace, stats)
    got = stacks(trace)
    assert got[HOT_STACK[:3]] > 100 and got[COLD_STACK[:3]] > 200
    assert stats["out_of_scope"] == 0

    # 0 keeps no frame: no sample
    trace, stats = run_program(tmp_path, {"max_depth": 0}, name="depth0")
    assert stats["samples"] == 0 and list(trace.samples()) == []
    assert stats["out_of_scope"] > 600
    assert len(trace.functions) == 0


LATE = """
import time

def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass

later = lambda seconds: spin(seconds)
"""

GENERATED = """
import time

def g_spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
"""

AFTER_START = f"""
    import late  # a module first imported while sampling runs
    late.later({PHASE})
    for filename in ("/generated/gen_hot.py", "/generated/gen_cold.py"):
        ns = {{}}
        exec(compile({GENERATED!r}, filename, "exec"), ns)
        ns["g_spin"]({PHASE})
    f = eval("lambda seconds: driver.via_cold(seconds)")  # code of "<string>": out
    f({PHASE})
"""


def test_code_created_after_start(tmp_path):
    include = ["late", "*/gen_hot.py"]
    trace, stats = run_program(tmp_path, {"include": include, "trim_stacks": True},
                               body=AFTER_START, files={"late.py": LATE})
    check_scope(trace, include=include, trim=True)
    check_counts(trace, stats)
    got = stacks(trace)
    lam = (("late.py", "<lambda>"), ("late.py", "spin"))
    gen = (("gen_hot.py", "g_spin"),)
    assert got[lam] > 100 and got[gen] > 100
    # besides: the module bodies of late.py and gen_hot.py, if a tick fell while they ran
    assert set(got) <= {lam, gen, (("late.py", "<module>"),), (("gen_hot.py", "<module>"),)}
    assert stats["out_of_scope"] > 200  # gen_cold.py's and the eval'd lambda's phases


THREADS = f"""
    import threading, cold, hot
    workers = [threading.Thread(target=hot.spin, args=({PHASE},), name="hot-worker"),
               threading.Thread(target=cold.spin, args=({PHASE},), name="cold-worker")]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
"""


@pytest.mark.parametrize("trim", [False, True])
def test_threads(tmp_path, trim):
    trace, stats = run_program(tmp_path, {"include": ["hot"], "trim_stacks": trim},
                               body=THREADS)
    check_scope(trace, include=["hot"], trim=trim)
    names = {t.id: t.name for t in trace.threads}
    got = Counter((names[s.thread], frames(s)) for s in trace.samples())
    assert {name for name, _ in got} == {"hot-worker"}, got
    assert all(st[-1] == ("hot.py", "spin") for _, st in got)
    if trim:
        assert set(got) == {("hot-worker", (("hot.py", "spin"),))}
    assert sum(got.values()) > 100
    # the cold worker and the main thread (in join) are counted, not written
    assert stats["out_of_scope"] > 200
    # fasttrace's scope helper thread is never sampled: no thread but the program's
    assert set(names.values()) <= {"MainThread", "hot-worker", "cold-worker"}


def test_scope_that_keeps_nothing(tmp_path):
    trace, stats = run_program(tmp_path, {"include": ["no_such_module"]})
    assert trace.complete and list(trace.samples()) == []
    assert len(trace.functions) == 0
    assert stats["samples"] == 0 and stats["out_of_scope"] > 600
    assert trace.sampling.out_of_scope == stats["out_of_scope"]
    r = subprocess.run([sys.executable, "-m", "fasttrace", "info", str(tmp_path / "out.ftrace")],
                       capture_output=True, cwd=tmp_path, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"{stats['out_of_scope']:,} samples left out: the scope kept none" in r.stdout
    assert "include no_such_module" in r.stdout


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_left_out_time_goes_to_no_other_sample(tmp_path, clock):
    # The cold phase before the hot one is left out: the first hot sample stands for one
    # sampler interval (or the CPU time of one), not for the whole cold phase before it.
    trace, stats = run_program(tmp_path, {"include": ["hot"], "clock": clock})
    kept = list(trace.samples())
    assert kept and kept[0].weight_ns < PHASE * 1e9 / 3
    assert sum(s.weight_ns for s in kept) < 2 * PHASE * 1e9  # one hot phase of three


def test_info_shows_the_out_of_scope_count(tmp_path):
    trace, stats = run_program(tmp_path, {"include": ["hot"], "trim_stacks": True})
    r = subprocess.run([sys.executable, "-m", "fasttrace", "info", str(tmp_path / "out.ftrace")],
                       capture_output=True, cwd=tmp_path, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("sampler"))
    assert f"{stats['out_of_scope']:,} samples left out" in line
    assert f"{stats['samples']:,}" in r.stdout


def test_run_command_with_scope(tmp_path):
    for fname, text in {"hot.py": SPIN, "cold.py": SPIN, "driver.py": DRIVER,
                        "prog.py": f"import driver\ndriver.run({PHASE})\n"}.items():
        (tmp_path / fname).write_text(textwrap.dedent(text))
    r = subprocess.run([sys.executable, "-m", "fasttrace", "run", "--rate", "1000",
                        "--include", "hot", "-o", "run.ftrace", "prog.py"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    trace = fasttrace.load(tmp_path / "run.ftrace")
    got = stacks(trace)
    # the runner's frames are cut as ever (its stop code): the program's module is the root
    want = (("prog.py", "<module>"),) + HOT_STACK[1:]
    assert got[want] > 100 and all(st[-1] == ("hot.py", "spin") for st in got)
    assert {st[0] for st in got if len(st) == len(want)} == {("prog.py", "<module>")}
    assert trace.sampling.out_of_scope > 200


def test_unscoped_trace_is_unchanged(tmp_path):
    trace, stats = run_program(tmp_path, {})
    assert trace.scope is None
    assert stats["out_of_scope"] == 0 and trace.sampling.out_of_scope == 0
    check_counts(trace, stats)
    got = stacks(trace)
    assert got[HOT_STACK] > 100 and got[COLD_STACK] > 200
    r = subprocess.run([sys.executable, "-m", "fasttrace", "info", str(tmp_path / "out.ftrace")],
                       capture_output=True, cwd=tmp_path, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    keys = {ln.split()[0] for ln in r.stdout.splitlines() if ln.strip()}
    assert "left out" not in r.stdout and "scope" not in keys


FORK = f"""
    import os, threading, hot

    def tasks():
        return len(os.listdir("/proc/self/task"))

    hot.spin(0.05)
    during = tasks()
    codes = []
    for _ in range(5):
        pid = os.fork()
        if pid == 0:
            os._exit(0 if not fasttrace.is_tracing() else 3)
        codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        hot.spin(0.01)
    import late  # decided by the helper, started again after the last fork
    late.later({PHASE})
    with open("fork.json", "w") as f:
        json.dump({{"during": during, "in_hook": in_hook, "codes": codes}}, f)
"""

# Registered before fasttrace's own hooks, so it runs first after fork(): where CPython counts
# the threads to warn "this process is multi-threaded".
FORK_MAIN = """
import os
in_hook = []
os.register_at_fork(after_in_parent=lambda: in_hook.append(len(os.listdir("/proc/self/task"))))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_fork_stops_the_scope_helper_too(tmp_path):
    # The scope helper is a thread: it is stopped around os.fork(), as the sampler and the
    # writer are, and started again in the parent, where decisions go on.
    main = FORK_MAIN + MAIN.format(body=FORK)
    trace, stats = run_program(tmp_path, {"include": ["hot", "late"], "trim_stacks": True},
                               files={"main.py": main, "late.py": LATE},
                               python_args=("-W", "always::DeprecationWarning"))
    got = json.loads((tmp_path / "fork.json").read_text())
    assert got["codes"] == [0] * 5  # each child stopped sampling
    # main, writer, sampler and the scope helper; right after each fork() only main, so
    # CPython 3.12+ had no "multi-threaded" fork to warn about
    assert got["during"] == 4 and got["in_hook"] == [1] * 5, got
    assert "multi-threaded" not in stats["stderr"]
    check_scope(trace, include=["hot", "late"], trim=True)
    assert stats["paused_ns"] > 0 and stats["dropped"] == 0
    stacks_got = stacks(trace)
    assert stacks_got[(("late.py", "<lambda>"), ("late.py", "spin"))] > 100
    assert stacks_got[(("hot.py", "spin"),)] > 10
