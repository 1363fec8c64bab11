"""Collapsed (folded) stacks: format, self-time ordering, threads, and traces with drops or a
cut tail, whose per-thread totals must match the time frames were open, gaps excluded."""

from __future__ import annotations

import io
import os
import time
from collections import defaultdict

import pytest

import export_programs
from export_programs import little, outer, slow, two_threads
from helpers import load_cut, trace_with_drops, traced

from fasttrace.export import collapsed




def parse(path):
    """[(frames root first, weight)] of a folded file."""
    out = []
    for line in open(path, encoding="utf-8").read().splitlines():
        stack, weight = line.rsplit(" ", 1)
        out.append((stack.split(";"), int(weight)))
    return out


def busy_time(trace):
    """Per thread: ns with at least one frame open, and ns inside gaps, from the raw events."""
    depth, since = defaultdict(int), {}
    busy, gaps = defaultdict(int), defaultdict(int)
    for e in trace.events(gaps=True):
        t = e.thread
        if e.kind == "gap":
            assert depth[t] == 0, "frames are closed across a gap"
            gaps[t] += e.ts - e.start_ts
            continue
        if e.kind in ("call", "c_call"):
            if depth[t] == 0:
                since[t] = e.ts
            depth[t] += 1
        elif depth[t]:
            depth[t] -= 1
            if depth[t] == 0:
                busy[t] += e.ts - since[t]
    return busy, gaps


def per_thread_totals(lines):
    totals = defaultdict(int)
    for frames, weight in lines:
        totals[frames[0]] += weight
    return totals


@pytest.mark.parametrize("c_calls", [True, False], ids=["c_calls", "no_c_calls"])
def test_self_time_ordering_and_format(tmp_path, c_calls):
    trace = traced(tmp_path / "t.ftrace", two_threads, c_calls=c_calls)
    out = tmp_path / "t.folded"
    result = collapsed.write(trace, out)
    lines = parse(out)
    assert result["lines"] == len(lines) and result["threads"] == 2
    assert all(w > 0 for _, w in lines)
    assert len({";".join(f) for f, _ in lines}) == len(lines), "one line per distinct stack"
    assert {f[0] for f, _ in lines} == {"MainThread", "worker"}

    here = os.path.abspath(export_programs.__file__)
    slow_frame = f"slow ({here}:{slow.__code__.co_firstlineno})"
    heaviest = max(lines, key=lambda line: line[1])
    assert heaviest[0][0] == "MainThread"
    if c_calls:
        assert heaviest[0][-2:] == [slow_frame, "time.sleep"]
    else:
        assert heaviest[0][-1] == slow_frame
    assert heaviest[1] >= 45_000_000
    little_time = sum(w for f, w in lines if f[-1].startswith("little ("))
    assert 0 < little_time < heaviest[1] / 5
    worker = max((line for line in lines if line[0][0] == "worker"), key=lambda line: line[1])
    assert any(frame.startswith("worker_sleep (") for frame in worker[0])
    assert worker[1] >= 25_000_000

    busy, gaps = busy_time(trace)
    names = {t.id: t.name for t in trace.threads}
    assert per_thread_totals(lines) == {names[t]: ns for t, ns in busy.items()}
    assert result["self_ns"] == sum(busy.values())


def test_merged_threads_and_text_output(tmp_path):
    trace = traced(tmp_path / "t.ftrace", two_threads)
    per_thread = tmp_path / "a.folded"
    collapsed.write(trace, per_thread)
    buf = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    result = collapsed.write(trace, buf, per_thread=False)
    text = buf.buffer.getvalue().decode("utf-8")
    merged = [(line.rsplit(" ", 1)[0].split(";"), int(line.rsplit(" ", 1)[1]))
              for line in text.splitlines()]
    assert not any(f[0] in ("MainThread", "worker") for f, _ in merged)
    summed = defaultdict(int)
    for frames, weight in parse(per_thread):
        summed[";".join(frames[1:])] += weight
    assert {";".join(f): w for f, w in merged} == summed
    assert result["lines"] == len(merged)


def test_names_are_sanitised(tmp_path):
    def weird():
        time.sleep(0.001)

    names = {"co_name": "a;b\nc"}
    if hasattr(weird.__code__, "co_qualname"):
        names["co_qualname"] = "a;b\nc"
    weird.__code__ = weird.__code__.replace(**names)
    trace = traced(tmp_path / "t.ftrace", weird)
    out = tmp_path / "t.folded"
    collapsed.write(trace, out)
    frames = [frame for f, _ in parse(out) for frame in f]
    assert any(frame.startswith("a,b c (") for frame in frames)


def test_drops_are_not_attributed(tmp_path):
    trace = trace_with_drops(tmp_path, outer)[0]
    out = tmp_path / "t.folded"
    progress = []
    result = collapsed.write(trace, out, progress=lambda done, total: progress.append(done))
    assert progress == sorted(progress) and progress[-1] == trace.stats.events
    assert len(progress) > 2, "reported while converting, not just at the end"
    assert result["dropped"] == trace.stats.dropped and result["gaps"] > 0
    lines = parse(out)
    busy, gaps = busy_time(trace)
    main = next(t for t in trace.threads if t.name == "MainThread")
    totals = per_thread_totals(lines)
    assert totals["MainThread"] == busy[main.id]
    assert gaps[main.id] > 0 and result["gap_ns"] == sum(gaps.values())
    # The main thread had frames open from start to end, except in the gaps.
    ts = [e.ts for e in trace.events(thread=main.id)]
    assert totals["MainThread"] == ts[-1] - ts[0] - gaps[main.id]


def test_truncated_trace(tmp_path):
    full = traced(tmp_path / "t.ftrace", lambda: [little() for _ in range(20_000)])
    trace = load_cut(full.path, tmp_path / "cut.ftrace", 2 / 3)
    assert trace.stats.truncated
    out = tmp_path / "t.folded"
    collapsed.write(trace, out)
    lines = parse(out)
    busy, _ = busy_time(trace)
    assert per_thread_totals(lines) == {t.name: busy[t.id] for t in trace.threads if busy[t.id]}
    assert any(f[-1].startswith("little (") for f, _ in lines)


def test_speed(tmp_path):
    """At least 1M events/s (a loose bound here: tests run in parallel on slow machines)."""
    trace = traced(tmp_path / "t.ftrace", lambda: [little() for _ in range(100_000)])
    n = sum(1 for _ in trace.events())
    t0 = time.perf_counter()
    collapsed.write(trace, tmp_path / "t.folded")
    rate = n / (time.perf_counter() - t0)
    assert rate > 300_000, f"{rate:,.0f} events/s"
