"""Every exporter on sampled traces: one real sampled trace per clock (made once for the
module), converted to each format and read back with the readers of the trace-mode exporter
tests (and `go tool pprof`).  The samples themselves, read here independently of the exporters,
are the truth: what each format holds must add up to exactly their weights, with stacks in the
format's order (root first, or leaf first for pprof), `<waiting>` under the frame a thread
waited in, `<truncated>` at the root of a stack cut at the maximum depth, thread names, and the
proportions of two known busy functions."""

from __future__ import annotations

import functools
import gzip
import importlib.util
import io
import json
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest

import fasttrace
from fasttrace import _core
from fasttrace._tracer import SamplingStats
from fasttrace.export import _samples, collapsed, pprof, speedscope
from helpers import traced

RATE = 1000
WORKER = "sampled-worker"
HERE = os.path.abspath(__file__)


def spin_a():
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:
        pass


def spin_b():
    end = time.perf_counter() + 0.15
    while time.perf_counter() < end:
        pass


def spin_deep():
    end = time.perf_counter() + 0.05
    while time.perf_counter() < end:
        pass


def nap():
    time.sleep(0.25)


def down(n):
    if n:
        down(n - 1)
    else:
        spin_deep()


def program():
    """spin_a for 0.3 s while the worker sleeps in nap, then spin_b for 0.15 s, then spin_deep
    under more frames than a sample keeps."""
    worker = threading.Thread(target=nap, name=WORKER)
    worker.start()
    spin_a()
    spin_b()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)
    try:
        down(1100)  # > fasttrace._core.MAX_SAMPLE_DEPTH
    finally:
        sys.setrecursionlimit(limit)
    worker.join()


def burn():
    end = time.perf_counter() + 0.1
    while time.perf_counter() < end:
        pass


@pytest.fixture(scope="module")
def wall(tmp_path_factory):
    trace = traced(tmp_path_factory.mktemp("sampled") / "wall.ftrace", program, rate=RATE)
    assert trace.mode == "sample" and trace.sampling.clock == "wall"
    return trace


@pytest.fixture(scope="module")
def cpu(tmp_path_factory):
    trace = traced(tmp_path_factory.mktemp("sampled") / "cpu.ftrace", burn, rate=RATE,
                   clock="cpu")
    assert trace.sampling.clock == "cpu"
    return trace


@functools.lru_cache(maxsize=None)
def sibling(name):
    """A trace-mode exporter test module of this directory, for its file readers and checks
    (imported by path: tests/unit is not a package)."""
    spec = importlib.util.spec_from_file_location(f"_sampled_{name}",
                                                  Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- the truth, from the samples -------------------------------------------------------------

def names(sample):
    """The frame names a sample must show, root first."""
    return [f.qualname for f in sample.stack] + (["<waiting>"] if sample.idle else [])


DEPTH = _core.MAX_SAMPLE_DEPTH  # frames kept; a truncated stack has the marker on top


def truth(trace):
    """{(thread name, frame names root first): [samples, weight_ns]}."""
    out = defaultdict(lambda: [0, 0])
    for s in trace.samples():
        v = out[(s.thread, tuple(names(s)))]
        v[0] += 1
        v[1] += s.weight_ns
    threads = {t.id: t.name for t in trace.threads}
    merged = defaultdict(lambda: [0, 0])
    for (tid, stack), (n, w) in out.items():
        merged[(threads[tid], stack)][0] += n
        merged[(threads[tid], stack)][1] += w
    return dict(merged)


def by_leaf(stacks):
    """{(thread, innermost Python frame, waiting): weight} of {(thread, stack root first): w}."""
    out = Counter()
    for (thread, stack), w in stacks.items():
        waiting = stack[-1] == "<waiting>"
        out[(thread, stack[-2] if waiting else stack[-1], waiting)] += w
    return out


def weights(stacks):
    return {k: v[1] for k, v in stacks.items()}


def check_proportions(leaves):
    """The known functions' shares: 0.3 s of spin_a, 0.15 s of spin_b, 0.25 s of nap waiting."""
    main = defaultdict(int)
    for (thread, leaf, _), w in leaves.items():
        if thread == "MainThread":
            main[leaf] += w
    assert 1.3 < main["spin_a"] / main["spin_b"] < 3.0, dict(main)
    assert main["spin_deep"] > 0
    waiting = leaves[(WORKER, "nap", True)]
    assert 0.4 < waiting / main["spin_a"] < 1.6, (waiting, dict(main))


def test_the_truth_is_what_the_tests_expect(wall):
    stacks = truth(wall)
    assert {thread for thread, _ in stacks} >= {"MainThread", WORKER}
    check_proportions(by_leaf(weights(stacks)))
    # (a torn walk keeps only the frames it read, so only full-depth stacks have the marker)
    deep = [stack for _, stack in stacks if stack[-1] == "spin_deep" and len(stack) > DEPTH]
    assert deep and all(stack[0] == "<truncated>" for stack in deep)


# ---- pprof ---------------------------------------------------------------------------------

def pprof_stacks(p):
    """{(thread, names root first): [samples, weight]} of a decoded profile, and the states."""
    out, states = defaultdict(lambda: [0, 0]), {}
    for stack, values, labels in p["samples"]:
        assert set(labels) == {"thread", "state"} and len(values) == 2 and values[0] > 0
        key = (labels["thread"], tuple(reversed(stack)))
        out[key][0] += values[0]
        out[key][1] += values[1]
        states[key] = labels["state"]
    return dict(out), states


def test_pprof(wall, tmp_path):
    reader = sibling("test_export_pprof")
    out = tmp_path / "wall.pb.gz"
    result = pprof.write(wall, out)
    p = reader.decode(out)
    assert p["sample_type"] == [("samples", "count"), ("wall", "nanoseconds")]
    assert p["period_type"] == ("wall", "nanoseconds") and p["default_sample_type"] == "wall"
    assert reader.fields(gzip.open(out).read())[12] == [1_000_000_000 // RATE]  # period
    assert p["time_nanos"] == wall.header["start_wall_ns"]
    assert p["duration_nanos"] >= max(s.ts for s in wall.samples())
    stacks, states = pprof_stacks(p)
    assert stacks == {k: list(v) for k, v in truth(wall).items()}
    assert result["samples"] == len(stacks) and result["samples_read"] == wall.sampling.samples
    for key, state in states.items():
        assert state == ("waiting" if key[1][-1] == "<waiting>" else "running")
    # leaf first
    leaf_first = [stack for stack, _, _ in p["samples"]]
    assert any(stack[:2] == ["spin_a", "program"] for stack in leaf_first)
    assert any(stack[:2] == ["<waiting>", "nap"] for stack in leaf_first)
    assert all(stack[-1] == "<truncated>" for stack in leaf_first
               if stack[0] == "spin_deep" and len(stack) > DEPTH)
    # ids start at 1 (the truncation marker's id 0 is not one), files and lines as in trace mode
    assert min(p["functions"]) >= 1
    fns = {f["name"]: f for f in p["functions"].values()}
    assert fns["spin_a"]["file"] == HERE and fns["spin_a"]["line"] == spin_a.__code__.co_firstlineno
    assert fns["<waiting>"]["file"] == "" and fns["<waiting>"]["system_name"] != "<waiting>"
    assert any(c.startswith(f"fasttrace: sampled at {RATE} Hz") for c in p["strings"])
    check_proportions(by_leaf(weights(stacks)))


def test_pprof_cpu_clock(cpu, tmp_path):
    reader = sibling("test_export_pprof")
    out = tmp_path / "cpu.pb.gz"
    pprof.write(cpu, out)
    p = reader.decode(out)
    assert p["sample_type"] == [("samples", "count"), ("cpu", "nanoseconds")]
    assert p["period_type"] == ("cpu", "nanoseconds") and p["default_sample_type"] == "cpu"
    stacks, _ = pprof_stacks(p)
    assert stacks == {k: list(v) for k, v in truth(cpu).items()}
    assert any(stack[-1] == "burn" for _, stack in stacks)


def test_go_tool_pprof(wall, cpu, tmp_path):
    reader = sibling("test_export_pprof")
    out = tmp_path / "wall.pb.gz"
    pprof.write(wall, out)
    flat = {name: ns for ns, name in reader.top(out)}  # skips without go
    leaves = by_leaf(weights(truth(wall)))
    assert flat["spin_a"] == sum(w for (_, leaf, waiting), w in leaves.items()
                                 if leaf == "spin_a" and not waiting)
    assert 1.3 < flat["spin_a"] / flat["spin_b"] < 3.0
    assert flat["<waiting>"] >= leaves[(WORKER, "nap", True)] > 0
    worker = {name: ns for ns, name in reader.top(out, f"-tagfocus=thread={WORKER}")}
    assert max(worker, key=worker.get) == "<waiting>" and "spin_a" not in worker
    running = {name for _, name in reader.top(out, "-tagfocus=state=running")}
    assert "spin_a" in running and "<waiting>" not in running
    counts = {name: n for n, name in reader.top(out, "-sample_index=samples")}
    n_a = sum(v[0] for (_, stack), v in truth(wall).items() if stack[-1] == "spin_a")
    assert counts["spin_a"] == n_a
    out = tmp_path / "cpu.pb.gz"
    pprof.write(cpu, out)
    assert "burn" in {name for _, name in reader.top(out)}


# ---- collapsed -----------------------------------------------------------------------------

def test_collapsed(wall, tmp_path):
    out = tmp_path / "wall.folded"
    result = collapsed.write(wall, out)
    lines = [(line.rsplit(" ", 1)[0].split(";"), int(line.rsplit(" ", 1)[1]))
             for line in out.read_text(encoding="utf-8").splitlines()]
    assert result["lines"] == len(lines) and result["unit"] == "nanoseconds"
    # root first, under the thread's name; Python frames are `qualname (file:line)`
    a = f"spin_a ({HERE}:{spin_a.__code__.co_firstlineno})"
    caller = f"program ({HERE}:{program.__code__.co_firstlineno})"
    assert any(frames[0] == "MainThread" and frames[-2:] == [caller, a] for frames, _ in lines)
    assert any(frames[0] == WORKER and frames[-1] == "<waiting>"
               and frames[-2].startswith("nap (") for frames, _ in lines)
    assert all(frames[1] == "<truncated>" for frames, _ in lines
               if frames[-1].startswith("spin_deep (") and len(frames) > DEPTH + 1)
    # the value is the weight in ns: exactly the samples' weights, stack by stack
    got = defaultdict(int)
    for frames, w in lines:
        got[(frames[0], tuple(f.split(" (")[0] for f in frames[1:]))] += w
    want = {k: w for k, w in weights(truth(wall)).items() if w}
    assert dict(got) == want
    check_proportions(by_leaf(got))
    # per_thread=False: no thread root, threads summed
    buf = io.BytesIO()
    collapsed.write(wall, buf, per_thread=False)
    merged = buf.getvalue().decode().splitlines()
    assert not any(line.startswith(("MainThread;", WORKER + ";")) for line in merged)
    assert sum(int(line.rsplit(" ", 1)[1]) for line in merged) == sum(want.values())


# ---- speedscope ----------------------------------------------------------------------------

def test_speedscope(wall, tmp_path):
    out = tmp_path / "wall.speedscope.json"
    result = speedscope.write(wall, out)
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = doc["shared"]["frames"]
    for f in frames:
        assert set(f) <= {"name", "file", "line"} and f["name"]
    assert {"name": "spin_a", "file": HERE, "line": spin_a.__code__.co_firstlineno} in frames
    assert {"name": "<waiting>"} in frames and {"name": "<truncated>"} in frames
    assert len(doc["profiles"]) == result["profiles"]
    assert 0 <= doc["activeProfileIndex"] < len(doc["profiles"])
    got = defaultdict(int)
    leaves = {}
    for p in doc["profiles"]:
        assert p["type"] == "sampled" and p["unit"] == "nanoseconds"
        assert len(p["samples"]) == len(p["weights"]) > 0
        assert p["startValue"] == 0 and p["endValue"] == sum(p["weights"])
        stacks = [tuple(frames[i]["name"] for i in s) for s in p["samples"]]
        assert all(a != b for a, b in zip(stacks, stacks[1:])), "runs are merged"
        for stack, w in zip(stacks, p["weights"]):
            got[(p["name"], stack)] += w
        leaves[p["name"]] = [s[-1] for s in stacks]
    assert set(leaves) == {"MainThread", WORKER}
    assert dict(got) == weights(truth(wall))  # root first, same weights
    # time order: the main thread's phases one after the other
    main = leaves["MainThread"]
    assert main.index("spin_b") > max(i for i, leaf in enumerate(main) if leaf == "spin_a")
    assert main.index("spin_deep") > max(i for i, leaf in enumerate(main) if leaf == "spin_b")


# ---- timelines: perfetto and chrome ----------------------------------------------------------

def check_timeline(trace, per_thread):
    """per_thread: {thread id: [(ph "B"|"E", ts ns, name)]} in order.  At every sample's ts the
    slices open on its thread are the sample's stack, and every slice begins at a sample.
    Returns {name: ns in slices of that name} over all threads."""
    samples = defaultdict(list)
    for s in trace.samples():
        samples[s.thread].append((s.ts, names(s)))
    spans = Counter()
    for tid, evs in per_thread.items():
        todo = samples.pop(tid)
        ticks = {ts for ts, _ in todo}
        stack, i = [], 0
        for ts, want in todo:
            while i < len(evs) and evs[i][1] <= ts:
                ph, at, name = evs[i]
                if ph == "B":
                    assert at in ticks, "a slice begins at a sample"
                    stack.append((name, at))
                else:
                    name, start = stack.pop()
                    spans[name] += at - start
                i += 1
            assert [name for name, _ in stack] == want, ts
        for ph, at, name in evs[i:]:
            assert ph == "E", "nothing opens after the last sample"
            name, start = stack.pop()
            spans[name] += at - start
        assert not stack
    assert not samples, f"threads with samples and no slices: {list(samples)}"
    return spans


def check_spans(trace, spans):
    """Slices cover about the time the samples stand for: each covers the time to the next
    tick, which is what the next tick's samples weigh in wall clock (so they differ by about
    a tick at each end of a phase)."""
    leaves = by_leaf(weights(truth(trace)))
    for name in ("spin_a", "spin_b"):
        weight = sum(w for (_, leaf, _), w in leaves.items() if leaf == name)
        assert 0.9 < spans[name] / weight < 1.1, (name, spans[name], weight)
    assert 1.3 < spans["spin_a"] / spans["spin_b"] < 3.0


def test_perfetto(wall, tmp_path):
    reader = sibling("test_export_perfetto")  # skips without the perfetto package
    result, tracks, events = reader.convert(wall, tmp_path)  # also checks the nesting
    assert result["threads"] == 2 and result["samples_read"] == wall.sampling.samples
    uuids = reader.thread_tracks(wall, tracks)
    threads = {d.thread.thread_name for d in tracks.values() if d.HasField("thread")}
    assert threads == {"MainThread", WORKER}
    base = wall.header["start_monotonic_ns"]
    per_thread = {}
    for t in wall.threads:
        evs = events[uuids[t.id]]
        assert all(e[0] in (reader.BEGIN, reader.END) for e in evs)
        per_thread[t.id] = [("B" if e[0] == reader.BEGIN else "E", e[1] - base, e[2])
                            for e in evs]
    assert sum(map(len, per_thread.values())) == result["events"]
    check_spans(wall, check_timeline(wall, per_thread))
    begins = {(e[2], e[3], e[4]) for evs in events.values() for e in evs if e[0] == reader.BEGIN}
    line = spin_a.__code__.co_firstlineno
    assert ("spin_a", "python", (HERE, line, "spin_a")) in begins
    assert ("<waiting>", "fasttrace", None) in begins
    assert ("<truncated>", "fasttrace", None) in begins


def chrome_timeline(trace, tmp_path):
    """(result, document, events per thread id, slice time per name) of the chrome export."""
    reader = sibling("test_export_chrome")
    result, doc, by_tid = reader.convert(trace, tmp_path)  # also checks B/E balance per thread
    pid = trace.header["pid"]
    per_thread = {t.id: [(ev["ph"], round(ev["ts"] * 1000), ev.get("name"))
                         for ev in by_tid[(pid, t.native_id or t.id)]] for t in trace.threads}
    assert sum(map(len, per_thread.values())) == result["events"]
    return result, doc, by_tid, check_timeline(trace, per_thread)


def test_chrome(wall, cpu, tmp_path):
    result, doc, by_tid, spans = chrome_timeline(wall, tmp_path)
    meta = {ev["tid"]: ev["args"]["name"] for ev in doc["traceEvents"]
            if ev["ph"] == "M" and ev["name"] == "thread_name"}
    assert set(meta.values()) == {"MainThread", WORKER}
    check_spans(wall, spans)
    begins = [ev for evs in by_tid.values() for ev in evs if ev["ph"] == "B"]
    a = next(ev for ev in begins if ev["name"] == "spin_a")
    assert a["cat"] == "python" and a["args"] == {"loc": f"{HERE}:{spin_a.__code__.co_firstlineno}"}
    waiting = [ev for ev in begins if ev["name"] == "<waiting>"]
    assert waiting and all(ev["cat"] == "fasttrace" and "args" not in ev for ev in waiting)
    other = doc["otherData"]
    assert other["mode"] == "sample" and other["sampling"]["rate"] == RATE
    assert other["sampling"]["clock"] == "wall"
    # cpu clock: the same, slices where the samples are
    _, doc, _, spans = chrome_timeline(cpu, tmp_path)
    assert doc["otherData"]["sampling"]["clock"] == "cpu" and spans["burn"] > 0


def test_slices_cover_until_the_next_tick():
    """_samples.slices() on made-up samples, ticks about every 1000 ns."""
    f = _samples.Frames()
    a, b, c = (f._synthetic(n) for n in "abc")
    samples = [  # (ts, thread, stack, weight: in wall clock, the time since the tick before)
        (0, 1, (a, b), 1000), (0, 2, (a,), 1000),
        (1000, 1, (a, c), 1000),             # thread 2 not sampled: its slice ends here
        (2000, 1, (a, c), 1000), (2000, 2, (a,), 1000),
        (4600, 1, (a, c), 2600),             # a late tick: nothing missing
        (9000, 1, (b,), 1000),               # ticks missing since 8000 (samples dropped)
    ]

    def slices(clock):
        return [(e.kind, e.ts, e.thread, e.function.name)
                for e in _samples.slices(samples, 1000, clock)]

    start = [
        ("call", 0, 1, "a"), ("call", 0, 1, "b"), ("call", 0, 2, "a"),
        ("return", 1000, 1, "b"), ("call", 1000, 1, "c"),
        ("return", 1000, 2, "a"), ("call", 2000, 2, "a"),
    ]
    assert slices("wall") == start + [
        ("return", 8000, 1, "c"), ("return", 8000, 1, "a"), ("call", 9000, 1, "b"),
        ("return", 10_000, 1, "b"),          # the last tick covers one period
        ("return", 4600, 2, "a"),
    ]
    # cpu clock: weights are CPU times; a tick later than 2 periods leaves a hole
    assert slices("cpu") == start + [
        ("return", 4000, 1, "c"), ("return", 4000, 1, "a"),
        ("call", 4600, 1, "a"), ("call", 4600, 1, "c"),
        ("return", 6600, 1, "c"), ("return", 6600, 1, "a"), ("call", 9000, 1, "b"),
        ("return", 10_000, 1, "b"),
        ("return", 4000, 2, "a"),
    ]


class MadeUpTrace:
    """What the exporters read of a sampled trace, with samples made up."""

    mode = "sample"
    path = "made-up.ftrace"

    def __init__(self, samples):
        self._samples = samples
        self.threads = [SimpleNamespace(id=1, name="MainThread", ident=1, native_id=101)]
        self.header = {"pid": 1, "argv": ["app.py"], "start_wall_ns": 1, "start_monotonic_ns": 1}
        self.stats = SimpleNamespace(events=len(samples), dropped=0, truncated=False,
                                     duration_ns=samples[-1].ts)
        self.sampling = SamplingStats(
            rate=1000.0, achieved_rate=1000.0, rate_met=True, clock="wall",
            samples=len(samples), ticks=len(samples), late_ticks=0, torn=0, truncated=1,
            dropped=0, sampler_cpu_ns=0, realtime=False)

    def samples(self, thread=None):
        return iter(self._samples)


def test_one_function_with_two_ids_is_one_frame(tmp_path):
    def fn(fid, qualname, line):
        return SimpleNamespace(id=fid, name=qualname, qualname=qualname, filename="app.py",
                               lineno=line, module="app", is_c=False)

    main, work, work_again = fn(3, "main", 1), fn(1, "work", 5), fn(2, "work", 5)
    marker = fasttrace._core.TRUNCATED

    def sample(ts, stack, idle=False):
        return SimpleNamespace(ts=ts, thread=1, stack=stack, idle=idle, in_call=idle,
                               torn=False, weight_ns=1000)

    trace = MadeUpTrace([
        sample(1000, (main, work)), sample(2000, (main, work_again)),
        sample(3000, ()),  # no frame: left out
        sample(4000, (main, work_again), idle=True), sample(5000, (marker, work)),
    ])
    buf = io.BytesIO()
    result = collapsed.write(trace, buf)
    assert buf.getvalue().decode().splitlines() == [
        "MainThread;main (app.py:1);work (app.py:5) 2000",
        "MainThread;main (app.py:1);work (app.py:5);<waiting> 1000",
        "MainThread;<truncated>;work (app.py:5) 1000",
    ]
    assert result["samples_read"] == 5 and result["empty"] == 1 and result["idle"] == 1
    assert result["frames"] == 4 and result["weight_ns"] == 4000

    buf = io.BytesIO()
    speedscope.write(trace, buf)
    (profile,) = json.loads(buf.getvalue())["profiles"]
    frames = json.loads(buf.getvalue())["shared"]["frames"]
    assert [[frames[i]["name"] for i in s] for s in profile["samples"]] == [
        ["main", "work"], ["main", "work", "<waiting>"], ["<truncated>", "work"]]
    assert profile["weights"] == [2000, 1000, 1000]

    out = tmp_path / "made-up.pb.gz"
    pprof.write(trace, out)
    p = sibling("test_export_pprof").decode(out)
    assert sorted((s, v) for s, v, _ in p["samples"]) == [
        (["<waiting>", "work", "main"], [1, 1000]), (["work", "<truncated>"], [1, 1000]),
        (["work", "main"], [2, 2000])]


@pytest.mark.parametrize("fmt", ["chrome", "collapsed", "perfetto", "pprof", "speedscope"])
def test_file_objects_and_progress(wall, fmt):
    calls = []
    buf = io.BytesIO()
    result = fasttrace.export.write(wall, buf, fmt, progress=lambda *a: calls.append(a))
    assert buf.getvalue() and result["mode"] == "sample" and result["format"] == fmt
    total = wall.stats.events
    assert calls and calls[-1] == (total, total)
    assert all(0 < done <= t == total for done, t in calls)
