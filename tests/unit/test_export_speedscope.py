"""speedscope export: structural validation of the JSON (the schema is not packaged anywhere we
can install it from): frames resolve, every profile's open/close events balance and are in
order, self times come out right, and gaps have no frame open."""

from __future__ import annotations

import io
import json
import os
from collections import defaultdict

import export_programs
from export_programs import little, outer, slow, two_threads
from helpers import load_cut, trace_with_drops, traced

from fasttrace.export import collapsed, speedscope




def validate(doc):
    """Checks the file against the speedscope format; returns per profile name:
    {"self": {frame name: self ns}, "busy": ns with a frame open, "closed": [(start, end)]}
    where closed are the intervals with no frame open."""
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    frames = doc["shared"]["frames"]
    for f in frames:
        assert isinstance(f["name"], str) and f["name"]
        assert set(f) <= {"name", "file", "line", "col"}
        if "line" in f:
            assert isinstance(f["file"], str) and isinstance(f["line"], int)
    assert 0 <= doc["activeProfileIndex"] < len(doc["profiles"])
    out = {}
    for p in doc["profiles"]:
        assert p["type"] == "evented" and p["unit"] == "nanoseconds"
        assert isinstance(p["startValue"], int) and isinstance(p["endValue"], int)
        assert p["startValue"] <= p["endValue"]
        stack, last, since = [], p["startValue"], p["startValue"]
        self_ns, closed = defaultdict(int), []
        for ev in p["events"]:
            assert set(ev) == {"type", "frame", "at"}
            at, frame = ev["at"], ev["frame"]
            assert isinstance(frame, int) and 0 <= frame < len(frames)
            assert last <= at <= p["endValue"], "events are in time order"
            if stack:
                self_ns[frames[stack[-1]]["name"]] += at - last
            last = at
            if ev["type"] == "O":
                if not stack:
                    closed.append((since, at))
                stack.append(frame)
            else:
                assert ev["type"] == "C" and stack and stack[-1] == frame, "balanced"
                stack.pop()
                if not stack:
                    since = at
        assert not stack, "every frame is closed"
        closed.append((since, p["endValue"]))
        assert p["name"] not in out, "one profile per thread"
        out[p["name"]] = {"self": self_ns, "busy": sum(self_ns.values()), "closed": closed}
    return out


def convert(trace, tmp_path):
    out = tmp_path / "t.speedscope.json"
    result = speedscope.write(trace, out)
    with open(out, encoding="utf-8") as f:
        doc = json.load(f)
    assert result["profiles"] == len(doc["profiles"])
    assert result["events"] == sum(len(p["events"]) for p in doc["profiles"])
    return doc, validate(doc), result


def folded_totals(trace, tmp_path):
    out = tmp_path / "t.folded"
    collapsed.write(trace, out)
    totals = defaultdict(int)
    for line in open(out, encoding="utf-8").read().splitlines():
        stack, weight = line.rsplit(" ", 1)
        totals[stack.split(";")[0]] += int(weight)
    return dict(totals)


def test_structure_threads_and_self_time(tmp_path):
    trace = traced(tmp_path / "t.ftrace", two_threads)
    doc, profiles, _ = convert(trace, tmp_path)
    assert set(profiles) == {"MainThread", "worker"}
    main = profiles["MainThread"]["self"]
    heaviest = max(main, key=main.get)
    assert heaviest == "time.sleep" and main[heaviest] >= 45_000_000
    assert 0 < main["little"] < main[heaviest] / 5
    assert profiles["worker"]["self"]["time.sleep"] >= 25_000_000
    here = os.path.abspath(export_programs.__file__)
    slow_frame = next(f for f in doc["shared"]["frames"] if f["name"] == "slow")
    assert slow_frame == {"name": "slow", "file": here, "line": slow.__code__.co_firstlineno}
    assert {"name": "time.sleep"} in doc["shared"]["frames"]
    # the same time as the folded stacks, thread by thread
    assert {name: p["busy"] for name, p in profiles.items()} == folded_totals(trace, tmp_path)
    # `at` is ns since the trace started: threads line up
    worker = next(p for p in doc["profiles"] if p["name"] == "worker")
    assert worker["startValue"] > 0 and worker["events"][0]["at"] == worker["startValue"]


def test_text_stream_output(tmp_path):
    trace = traced(tmp_path / "t.ftrace", little, c_calls=False)
    buf = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    speedscope.write(trace, buf)
    validate(json.loads(buf.buffer.getvalue()))


def test_drops_leave_no_frame_open_in_the_gap(tmp_path):
    trace = trace_with_drops(tmp_path, outer)[0]
    doc, profiles, result = convert(trace, tmp_path)
    assert result["dropped"] == trace.stats.dropped and result["gaps"] > 0
    main = next(t for t in trace.threads if t.name == "MainThread")
    gaps = [(e.start_ts, e.ts) for e in trace.events(thread=main.id, gaps=True)
            if e.kind == "gap"]
    closed = profiles["MainThread"]["closed"]
    for start, end in gaps:
        assert any(a <= start and end <= b for a, b in closed), (start, end)
    p = next(p for p in doc["profiles"] if p["name"] == "MainThread")
    gap_ns = sum(end - start for start, end in gaps)
    assert profiles["MainThread"]["busy"] == p["endValue"] - p["startValue"] - gap_ns
    assert profiles["MainThread"]["self"]["leaf"] > 0


def test_truncated_trace(tmp_path):
    full = traced(tmp_path / "t.ftrace", lambda: [little() for _ in range(20_000)])
    trace = load_cut(full.path, tmp_path / "cut.ftrace", 2 / 3)
    assert trace.stats.truncated
    doc, profiles, _ = convert(trace, tmp_path)
    assert profiles["MainThread"]["self"]["little"] > 0
    assert {name: p["busy"] for name, p in profiles.items()} == folded_totals(trace, tmp_path)
