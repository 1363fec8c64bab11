"""Sampling mode: the API, what a sample holds, threads, deep stacks, damage, fork.

Accuracy (where the time goes, running vs waiting, aliasing) is in
tests/integration/test_sampling_accuracy.py.
"""

from __future__ import annotations

import cProfile
import math
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import load_cut

import fasttrace
from fasttrace import _core

LINUX = sys.platform.startswith("linux")


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def leaf_names(trace, thread=None):
    return [s.stack[-1].qualname for s in trace.samples(thread) if s.stack]


# ---- the API ------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, -1, 0.5, 10001, 1e9, math.nan, math.inf, -math.inf])
def test_invalid_rates_are_refused(trace_path, bad):
    with pytest.raises(ValueError, match=r"rate must be between 1 and 10000 samples per second"):
        fasttrace.start(trace_path, rate=bad)
    assert not trace_path.exists()  # nothing was opened


@pytest.mark.parametrize("bad", ["100", True, [100]])
def test_rate_must_be_a_number(trace_path, bad):
    with pytest.raises(TypeError, match="rate must be a number"):
        fasttrace.start(trace_path, rate=bad)


def test_clock_is_checked(trace_path):
    with pytest.raises(ValueError, match="clock must be 'wall' or 'cpu'"):
        fasttrace.start(trace_path, rate=100, clock="process")
    with pytest.raises(ValueError, match="clock= only applies to sampling mode"):
        fasttrace.start(trace_path, clock="cpu")


def test_start_as_context_manager_and_summary(trace_path):
    with fasttrace.start(trace_path, rate=1000) as session:
        assert fasttrace.is_tracing()
        assert session.hook == "sampler" and session.rate == 1000
        spin(0.5)  # ~500 ticks: room for a sampler thread starved by other load on the cores
    assert not fasttrace.is_tracing()
    s = session.summary
    assert s.sampling is not None
    assert s.sampling.rate == 1000 and s.sampling.clock == "wall"
    assert s.sampling.samples == s.events > 50
    assert s.sampling.ticks > 50 and s.sampling.achieved_rate > 0
    assert s.threads == 1 and s.functions >= 2
    trace = fasttrace.load(trace_path)
    assert trace.mode == "sample"
    assert list(trace.events()) == []
    assert trace.sampling.samples == s.sampling.samples
    assert trace.sampling.ticks == s.sampling.ticks
    assert sum(1 for _ in trace.samples()) == s.sampling.samples


def test_start_and_stop_as_calls(trace_path):
    fasttrace.start(trace_path, rate=500)
    spin(0.1)
    summary = fasttrace.stop()
    assert summary.sampling.samples > 0
    assert "spin" in leaf_names(fasttrace.load(trace_path))


def test_a_second_start_is_refused(trace_path, tmp_path):
    with fasttrace.start(trace_path, rate=100):
        with pytest.raises(fasttrace.TracingError, match="already running"):
            fasttrace.start(tmp_path / "other.ftrace", rate=100)
        with pytest.raises(fasttrace.TracingError, match="already running"):
            fasttrace.start(tmp_path / "other.ftrace")


def test_sampling_runs_beside_another_profiler(trace_path):
    # No hook is installed, so cProfile (or a debugger) does not have to stop.
    prof = cProfile.Profile()
    prof.enable()
    try:
        with fasttrace.start(trace_path, rate=1000):
            spin(0.1)
    finally:
        prof.disable()
    assert prof.getstats()
    assert "spin" in leaf_names(fasttrace.load(trace_path))


def test_sample_fields(trace_path):
    def inner():
        spin(0.15)

    def outer():
        inner()

    with fasttrace.start(trace_path, rate=1000):
        outer()
    trace = fasttrace.load(trace_path)
    samples = [s for s in trace.samples() if s.stack and s.stack[-1].qualname.endswith("spin")]
    assert len(samples) > 20
    s = samples[len(samples) // 2]
    names = [f.name for f in s.stack]
    # root first: ... outer, inner, spin
    assert names[-3:] == ["outer", "inner", "spin"]
    assert s.stack[-1].filename == __file__ and s.stack[-1].lineno == spin.__code__.co_firstlineno
    assert s.thread == trace.threads[0].id
    assert not s.idle and not s.torn
    assert 0 < s.weight_ns < 50_000_000  # about one interval (1 ms), never more than 50
    ts = [s.ts for s in trace.samples()]
    assert ts == sorted(ts) and 0 <= ts[0] and ts[-1] <= trace.stats.duration_ns


def test_stop_from_another_thread(trace_path):
    started = threading.Event()
    done = threading.Event()

    def starter():
        fasttrace.start(trace_path, rate=1000)
        started.set()
        done.wait(5)

    t = threading.Thread(target=starter)
    t.start()
    assert started.wait(5)
    spin(0.1)
    summary = fasttrace.stop()  # not the thread that started it
    done.set()
    t.join()
    assert summary.sampling.samples > 0
    assert "spin" in leaf_names(fasttrace.load(trace_path))


def test_threading_is_left_as_it_was(trace_path):
    before = {n: getattr(threading, n) for n in ("_start_new_thread", "_start_joinable_thread")
              if hasattr(threading, n)}
    with fasttrace.start(trace_path, rate=100):
        assert any(getattr(threading, n) is not f for n, f in before.items())
    assert {n: getattr(threading, n) for n in before} == before


def test_sampling_started_in_a_thread_covers_every_thread(trace_path):
    def worker():
        with fasttrace.start(trace_path, rate=1000):
            spin(0.15)

    t = threading.Thread(target=worker, name="starter")
    t.start()
    spin(0.1)  # the main thread is sampled too
    t.join()
    trace = fasttrace.load(trace_path)
    by_name = {th.name: th.id for th in trace.threads}
    assert {"MainThread", "starter"} <= set(by_name)
    assert "spin" in leaf_names(trace, by_name["starter"])
    assert "spin" in leaf_names(trace, by_name["MainThread"])


# ---- threads --------------------------------------------------------------------------------

def test_sixteen_threads_start_and_end_during_sampling(trace_path):
    def work(i):
        spin(0.03 + 0.005 * i)

    with fasttrace.start(trace_path, rate=1000):
        for wave in range(2):
            threads = [threading.Thread(target=work, args=(i,), name=f"w{wave}-{i}")
                       for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    trace = fasttrace.load(trace_path)
    workers = {s.thread for s in trace.samples() if "work" in {f.name for f in s.stack}}
    assert len(workers) == 16  # each lived through ticks, each has its own id
    names = {t.id: t.name for t in trace.threads}
    assert len(names) == 17 and "MainThread" in names.values()
    # named as they started, though all lived and died while the main thread sat in join()
    assert sorted(names[tid] for tid in workers) == sorted(f"w{w}-{i}" for w in range(2)
                                                           for i in range(8))


def test_repeated_sessions_with_threads_do_not_leak(tmp_path):
    def cycle(i):
        path = tmp_path / f"leak{i % 2}.ftrace"
        with fasttrace.start(path, rate=2000):
            ts = [threading.Thread(target=spin, args=(0.002,)) for _ in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

    def rss_kb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() // 1024

    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc")
    if os.environ.get("FASTTRACE_SANITIZE"):
        pytest.skip("ASan holds freed memory in quarantine: RSS grows without a leak")
    for i in range(5):
        cycle(i)
    before = rss_kb()
    for i in range(40):
        cycle(i)
    grown = rss_kb() - before
    # Each session allocates ~4 MB of tables and maps an 8 MB ring: a leak of either would grow
    # the process by 160+ MB over 40 sessions.
    assert grown < 16 * 1024, f"RSS grew by {grown} kB over 40 sampling sessions"


# ---- in_call -------------------------------------------------------------------------------

def opcodes_by_name():
    """Every opcode of this version, specialized forms included, numbered as the sampler
    numbers them (fasttrace._tracer._call_opcodes)."""
    import opcode
    names = {n: op for n, op in opcode.opmap.items() if op < 256}
    names.update(getattr(opcode, "_specialized_opmap", {}))
    free = [op for op, n in enumerate(opcode.opname) if n.startswith("<")]
    names.update(zip(getattr(opcode, "_specialized_instructions", ()), free))
    return names


def test_call_opcode_table_flags_calls_and_nothing_else():
    from fasttrace._tracer import _call_opcodes
    table = _call_opcodes()
    names = opcodes_by_name()
    flagged = {n for n, op in names.items() if table[op]}
    assert "CALL" in flagged or "CALL_FUNCTION" in flagged
    assert "IMPORT_NAME" in flagged
    # attribute loads and stores, formatting and match statements call nothing: a thread
    # running them is running, not in a call (the table once matched "WITH" anywhere)
    not_calls = {n for n in names if n.startswith(("LOAD_", "STORE_", "FORMAT_", "COPY_"))}
    assert not_calls, names
    assert not flagged & not_calls, sorted(flagged & not_calls)


def test_a_thread_blocked_entering_a_with_block_is_in_a_call(trace_path):
    # 3.14+ calls __enter__ with LOAD_SPECIAL + CALL; before, BEFORE_WITH or SETUP_WITH does
    lock = threading.Lock()
    lock.acquire()
    entered = threading.Event()

    def blocked_on_with():
        with lock:
            entered.set()

    t = threading.Thread(target=blocked_on_with, name="with")
    with fasttrace.start(trace_path, rate=1000):
        t.start()
        time.sleep(0.2)
        lock.release()
        t.join()
    assert entered.is_set()
    trace = fasttrace.load(trace_path)
    tid = next(th.id for th in trace.threads if th.name == "with")
    waiting = [s for s in trace.samples(tid) if s.stack and s.stack[-1].name == "blocked_on_with"]
    assert len(waiting) > 50
    # the few samples of the thread's start and end can catch it running
    assert sum(s.idle and s.in_call for s in waiting) >= 0.9 * len(waiting)


# ---- deep stacks ----------------------------------------------------------------------------

def test_deep_recursion_is_cut_at_the_maximum_depth(trace_path):
    def down(n):
        if n == 0:
            spin(0.15)
        else:
            down(n - 1)

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20000)
    try:
        with fasttrace.start(trace_path, rate=1000) as session:
            down(5000)
    finally:
        sys.setrecursionlimit(limit)
    trace = fasttrace.load(trace_path)
    leaf_spin = [s for s in trace.samples() if s.stack and s.stack[-1].name == "spin"]
    # A torn walk keeps only the frames it read; on 3.9-3.10 a walk can also end early on a
    # recycled frame object that still looks valid (see README, known biases).  Most samples
    # see the whole stack, and every full one is cut at the maximum depth under the marker.
    deep = [s for s in leaf_spin if len(s.stack) > _core.MAX_SAMPLE_DEPTH]
    assert len(deep) >= 0.8 * len(leaf_spin) > 0
    for s in leaf_spin:
        assert len(s.stack) <= _core.MAX_SAMPLE_DEPTH + 1
        assert (s.stack[0] is _core.TRUNCATED) == (s in deep)
    for s in deep:
        assert s.stack[0].qualname == "<truncated>"
        assert [f.name for f in s.stack[1:-1]] == ["down"] * (_core.MAX_SAMPLE_DEPTH - 1)
        assert s.stack[-1].name == "spin"
    assert session.summary.sampling.truncated >= len(deep)
    assert trace.sampling.truncated == session.summary.sampling.truncated


# ---- clocks ---------------------------------------------------------------------------------

def test_cpu_clock_counts_only_time_on_cpu(trace_path):
    def sleeper():
        time.sleep(0.4)

    t = threading.Thread(target=sleeper, name="sleeper")
    with fasttrace.start(trace_path, rate=1000, clock="cpu") as session:
        t.start()
        spin(0.3)
        t.join()
    assert session.summary.sampling.clock == "cpu"
    trace = fasttrace.load(trace_path)
    assert trace.sampling.clock == "cpu"
    tid = {th.name: th.id for th in trace.threads}
    main = list(trace.samples(tid["MainThread"]))
    asleep = list(trace.samples(tid["sleeper"])) if "sleeper" in tid else []
    assert len(main) > 100
    # the sleeper uses CPU only to start and stop: a handful of samples at most
    assert len(asleep) < 10, [(s.stack[-1].qualname, s.weight_ns) for s in asleep]
    cpu_ns = sum(s.weight_ns for s in main)
    assert 0.1e9 < cpu_ns < 1.0e9  # the main thread's CPU time while sampled (~0.3 s)


# ---- damage and processes -------------------------------------------------------------------

def test_killed_process_leaves_readable_samples(tmp_path):
    out = tmp_path / "killed.ftrace"
    code = (
        "import fasttrace, os, signal, time\n"
        f"fasttrace.start({str(out)!r}, rate=1000)\n"
        "end = time.perf_counter() + 0.5\n"
        "while time.perf_counter() < end: pass\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, timeout=60)
    assert r.returncode == -signal.SIGKILL
    trace = fasttrace.load(out)
    assert trace.stats.truncated and "did not stop" in trace.damage
    samples = list(trace.samples())
    # partial chunks are handed to the writer every 100 ms: at most that much is lost
    assert len(samples) > 200
    assert trace.sampling.samples == len(samples)
    assert trace.sampling.rate == 1000


def test_a_cut_sampled_file_loads_what_is_intact(trace_path, tmp_path):
    with fasttrace.start(trace_path, rate=2000):
        spin(0.3)
    full = list(fasttrace.load(trace_path).samples())
    data = trace_path.read_bytes()
    for keep in (len(data) - 7, len(data) - 300, len(data) // 2):
        cut = load_cut(trace_path, tmp_path / "cut.ftrace", keep)
        got = [(s.thread, [f.id for f in s.stack], s.ts) for s in cut.samples()]
        assert cut.stats.truncated
        assert keep < len(data) - 7 or len(got) == len(full)  # only the trailer was lost
        for (thread, fids, ts), s in zip(got, full):
            assert (thread, fids) == (s.thread, [f.id for f in s.stack])
            assert abs(ts - s.ts) < 1_000_000  # ns from the clock records that are left
        cut.close()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_fork_child_stops_sampling_parent_goes_on(trace_path):
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    with fasttrace.start(trace_path, rate=1000):
        spin(0.05)
        pid = os.fork()
        if pid == 0:  # the child: no sampler thread, no session, may start its own
            code = 0 if not fasttrace.is_tracing() else 3
            try:
                with fasttrace.start(str(trace_path) + ".child", rate=1000):
                    spin(0.05)
                if fasttrace.load(str(trace_path) + ".child").sampling.samples == 0:
                    code = 4
            except BaseException:
                code = 5
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        spin(0.05)
    assert os.WEXITSTATUS(status) == 0
    parent = fasttrace.load(trace_path)
    assert parent.sampling.samples > 20
    assert {s.thread for s in parent.samples()} == {parent.threads[0].id}


def test_sampling_still_running_at_exit_is_saved(tmp_path):
    out = tmp_path / "exit.ftrace"
    code = (
        "import fasttrace, time\n"
        f"fasttrace.start({str(out)!r}, rate=1000)\n"
        "end = time.perf_counter() + 0.1\n"
        "while time.perf_counter() < end: pass\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, timeout=60,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "still running at exit" in r.stderr and "samples)" in r.stderr
    trace = fasttrace.load(out)
    assert not trace.stats.truncated
    assert trace.sampling.samples == sum(1 for _ in trace.samples()) > 20


CALL_DENSE = """
import sys, threading, time

class Vec:
    __slots__ = ("x", "y")
    def __init__(self, x, y):  # a class call: a nested eval loop on 3.11 and 3.12
        self.x, self.y = x, y
    def __add__(self, o):
        return Vec(self.x + o.x, self.y + o.y)
    @property
    def norm(self):
        return abs(self.x) + abs(self.y)

def gen(n):
    for i in range(n):
        yield Vec(i, -i)

def rec(n):
    if n == 0:
        try:
            raise ValueError
        except ValueError:
            return Vec(0, 0)
    return rec(n - 1) + Vec(n, n)

def work(seconds):
    end = time.perf_counter() + seconds
    total = 0
    while time.perf_counter() < end:
        acc = Vec(0, 0)
        for v in gen(50):
            acc = acc + v
        total += acc.norm + rec(40).norm
    return total

threads = [threading.Thread(target=work, args=(1.0,)) for _ in range(3)]
for t in threads:
    t.start()
work(1.0)
for t in threads:
    t.join()
"""


def test_sampler_survives_call_dense_code(tmp_path):
    # The sampler reads stacks that change under it: every pointer it follows may be stale.
    # A bug in that handling crashes the process, so each run is a separate one.
    (tmp_path / "dense.py").write_text(CALL_DENSE)
    for rate in ("5000", "997"):
        out = tmp_path / f"dense-{rate}.ftrace"
        r = subprocess.run([sys.executable, "-m", "fasttrace", "run", "--rate", rate, "-o",
                            str(out), "dense.py"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        trace = fasttrace.load(out)
        samples = list(trace.samples())
        assert len({s.thread for s in samples}) == 4
        names = {f.name for s in samples for f in s.stack}
        assert {"work", "rec", "__init__", "gen", "__add__"} <= names
        torn = sum(s.torn for s in samples)
        assert torn <= 0.1 * len(samples), (torn, len(samples))


FIB = """
import time

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def work():
    end = time.perf_counter() + 1.0
    while time.perf_counter() < end:
        fib(15)

work()
"""


def test_a_sample_not_torn_is_a_real_stack(tmp_path):
    # Every whole sample of this program is <module>, work, then fib only.  On 3.9-3.10 a
    # frame that returned goes to the frame free list, linked by its f_back: a walk that read
    # it went on through frames of earlier calls or ended there, and half the samples of fib
    # began at some fib (and a freed code object's address lent its name to the next one's).
    (tmp_path / "fib.py").write_text(FIB)
    out = tmp_path / "fib.ftrace"
    r = subprocess.run([sys.executable, "-m", "fasttrace", "run", "--rate", "2000", "-o",
                        str(out), "fib.py"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    trace = fasttrace.load(out)
    whole = [[f.qualname for f in s.stack] for s in trace.samples() if not s.torn]
    assert len(whole) > 200, len(whole)
    wrong = [st for st in whole
             if st[:1] != ["<module>"] or st[1:2] not in ([], ["work"]) or
             any(name != "fib" for name in st[2:])]
    assert not wrong, (len(wrong), len(whole), wrong[:5])


@pytest.mark.parametrize("workload", ["deltablue", "raytrace", "go"])
def test_sampler_survives_benchmark_programs(tmp_path, workload):
    # pyperformance programs (bench/workloads): the one that found a crash (a stale frame
    # pointer near the top of the address space wrapped past a bounds check) among them.
    path = Path(__file__).resolve().parents[2] / "bench" / "workloads" / f"{workload}.py"
    out = tmp_path / "w.ftrace"
    r = subprocess.run([sys.executable, "-m", "fasttrace", "run", "--rate", "2000", "-o",
                        str(out), str(path)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    trace = fasttrace.load(out)
    assert trace.sampling.samples > 0.5 * trace.sampling.ticks
