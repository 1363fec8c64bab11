"""Sampling mode measures where the time goes: the issue's accuracy cases.

Each program runs in a fresh interpreter (no pytest threads beside it) and measures its own
truth with perf_counter; the test compares the samples with that truth.  Tolerances: the
sampler's jitter makes a phase of n expected samples come out within about sqrt(n / 12) of n,
so +-5 points is more than 3 standard deviations for every case here; what these tests catch
is bias (aliasing, a sampler that only runs when the program sleeps, waiting shown as running).
"""

from __future__ import annotations

import json

from helpers import run_script

import fasttrace

COMMON = """
    import json, sys, threading, time
    import fasttrace

    def spin(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
"""


def run(tmp_path, body):
    r = run_script(tmp_path, COMMON + body, timeout=120)
    assert r.returncode == 0, r.stderr
    truth = json.loads(r.stdout.strip().splitlines()[-1])
    return fasttrace.load(tmp_path / "out.ftrace"), truth


def shares(trace, thread, names):
    """Share (%) of `thread`'s samples whose leaf is each of `names`, and the sample count."""
    counts = dict.fromkeys(names, 0)
    n = 0
    for s in trace.samples(thread):
        n += 1
        leaf = s.stack[-1].name if s.stack else None
        if leaf in counts:
            counts[leaf] += 1
    return {k: 100.0 * v / max(n, 1) for k, v in counts.items()}, n


def thread_id(trace, name):
    return next(t.id for t in trace.threads if t.name == name)


def test_split_60_30_10_at_100_hz(tmp_path):
    trace, truth = run(tmp_path, """
    def a(s): spin(s)
    def b(s): spin(s)
    def c(s): spin(s)

    spent = {"a": 0.0, "b": 0.0, "c": 0.0}
    with fasttrace.start("out.ftrace", rate=100):
        for _ in range(5):  # 3 s in all, in phases of 360/180/60 ms
            for f, s in ((a, 0.36), (b, 0.18), (c, 0.06)):
                t0 = time.perf_counter()
                f(s)
                spent[f.__name__] += time.perf_counter() - t0
    total = sum(spent.values())
    print(json.dumps({k: 100 * v / total for k, v in spent.items()}))
    """)
    # the leaf is spin(); the function that called it is what we attribute
    counts = {"a": 0, "b": 0, "c": 0}
    n = 0
    for s in trace.samples(thread_id(trace, "MainThread")):
        names = [f.name for f in s.stack]
        for k in counts:
            if k in names:
                counts[k] += 1
                n += 1
    assert n >= 250, n  # ~300 at 100 Hz over 3 s
    got = {k: 100.0 * v / n for k, v in counts.items()}
    for k in counts:
        assert abs(got[k] - truth[k]) <= 5, (got, truth)
    assert trace.sampling.rate_met, trace.sampling


def test_sleeping_thread_is_waiting_and_spinning_thread_is_running(tmp_path):
    trace, _ = run(tmp_path, """
    def sleeper():
        time.sleep(1.0)

    def spinner():
        spin(1.0)

    with fasttrace.start("out.ftrace", rate=200):
        ts = [threading.Thread(target=sleeper, name="sleeper"),
              threading.Thread(target=spinner, name="spinner")]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    print("{}")
    """)
    sleeper = [s for s in trace.samples(thread_id(trace, "sleeper"))
               if s.stack and s.stack[-1].name == "sleeper"]
    spinner = [s for s in trace.samples(thread_id(trace, "spinner"))
               if s.stack and s.stack[-1].name in ("spin", "spinner")]
    assert len(sleeper) > 100 and len(spinner) > 100
    # in time.sleep: never holds the GIL, innermost frame is at the call
    assert all(s.idle and s.in_call for s in sleeper)
    # alone with the GIL (the sleeper and the main thread do not want it)
    running = sum(not s.idle for s in spinner) / len(spinner)
    assert running > 0.9, running


def test_short_bursts_are_not_aliased(tmp_path):
    # 1 ms of CPU every 10 ms: a sampler on a fixed 10 ms grid sees it in 0% or 100% of its
    # samples; one that only runs when the program sleeps sees 0%.
    trace, truth = run(tmp_path, """
    def pulse():
        spin(0.001)

    in_pulse = 0.0
    with fasttrace.start("out.ftrace", rate=100) as session:
        t_start = time.perf_counter()
        while time.perf_counter() - t_start < 3.0:
            t0 = time.perf_counter()
            pulse()
            in_pulse += time.perf_counter() - t0
            time.sleep(max(0.0, 0.010 - (time.perf_counter() - t0)))
        elapsed = time.perf_counter() - t_start
    print(json.dumps({"pulse": 100 * in_pulse / elapsed}))
    """)
    main = thread_id(trace, "MainThread")
    got, n = shares(trace, main, ["spin"])
    assert n >= 250, n
    assert 5 <= truth["pulse"] <= 25, truth  # the program itself ran as designed
    # Within 4 standard deviations of a share measured by n samples (7 points at n = 300 and
    # 10 %; a fixed 5 points failed about one run in 250): an aliased sampler reads 0 or 100.
    p = truth["pulse"] / 100
    allowed = max(5.0, 400 * (p * (1 - p) / n) ** 0.5)
    assert abs(got["spin"] - truth["pulse"]) <= allowed, (got, truth, allowed, trace.sampling)
    # and the rest of the time the thread is shown waiting in time.sleep
    waiting = sum(s.idle for s in trace.samples(main)) / n
    assert waiting > 0.6, waiting


def test_achieved_rate_is_reported(tmp_path):
    trace, _ = run(tmp_path, """
    with fasttrace.start("out.ftrace", rate=1000) as session:
        spin(1.0)
    s = session.summary.sampling
    print(json.dumps(s._asdict()))
    """)
    s = trace.sampling
    assert s.rate == 1000
    assert s.ticks > 500  # even on a loaded machine; the exact rate is a benchmark's job
    assert abs(s.achieved_rate - s.ticks / 1.0) < 0.2 * s.achieved_rate
    assert s.rate_met == (s.achieved_rate >= 900)
