"""Chrome trace JSON export: read back with the json module and checked as chrome://tracing and
Perfetto's JSON importer need it: B/E balanced per (pid, tid) with time never going back, thread
and process names as metadata, ts in microseconds; also with drops, a cut tail, orphans."""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import time
import zlib
from collections import defaultdict

import fasttrace
import fasttrace.export
from fasttrace.export import chrome
from helpers import MAGIC, chunk, load_cut, trace_with_drops, traced, varint


def leaf(i):
    return len([i])


def napper():
    time.sleep(0.01)


def worker():
    for i in range(20):
        leaf(i)


def program():
    t = threading.Thread(target=worker, name="chrome-worker")
    t.start()
    for i in range(30):
        leaf(i)
    napper()
    t.join()


def outer():
    for _ in range(300_000):
        leaf(0)


def many_calls():
    for i in range(60_000):
        leaf(i)




def convert(trace, tmp_path):
    """(result, document, {(pid, tid): [events]}) after the structural checks."""
    out = tmp_path / "out.json"
    result = chrome.write(trace, out)
    assert result["bytes"] == out.stat().st_size
    with open(out, encoding="utf-8") as f:
        doc = json.load(f)
    assert doc["displayTimeUnit"] == "ns" and isinstance(doc["traceEvents"], list)
    assert doc["otherData"]["pid"] == trace.header["pid"]
    per_thread = defaultdict(list)
    for ev in doc["traceEvents"]:
        assert ev["ph"] in ("M", "B", "E", "i")
        if ev["ph"] != "M":
            assert isinstance(ev["ts"], (int, float))
            per_thread[(ev["pid"], ev["tid"])].append(ev)
    for key, evs in per_thread.items():
        depth, last = 0, float("-inf")
        for ev in evs:
            assert ev["ts"] >= last, f"{key}: time goes back"
            last = ev["ts"]
            if ev["ph"] == "B":
                depth += 1
            elif ev["ph"] == "E":
                assert depth > 0, f"{key}: E with no B open"
                depth -= 1
        assert depth == 0, f"{key}: {depth} left open"
    return result, doc, per_thread


def expected(trace, thread):
    """(ph, ts in ns, name) as the events of `thread` should be, orphan returns left out."""
    out, depth = [], 0
    for e in trace.events(thread, gaps=True):
        if e.kind == "gap":
            out.append(("i", e.start_ts, f"fasttrace: {e.dropped} events dropped"))
        elif e.kind in ("call", "c_call"):
            depth += 1
            out.append(("B", e.ts, e.function.qualname))
        elif depth:
            depth -= 1
            out.append(("E", e.ts, None))
    return out


def seen(evs):
    return [(ev["ph"], round(ev["ts"] * 1000), ev.get("name")) for ev in evs]


def test_events_match_the_reader(tmp_path):
    trace = traced(tmp_path / "t.ftrace", program)
    result, doc, per_thread = convert(trace, tmp_path)
    pid = trace.header["pid"]
    assert result["threads"] == 2
    total = 0
    for t in trace.threads:
        evs = per_thread[(pid, t.native_id)]
        assert seen(evs) == expected(trace, t.id)
        total += len(evs)
    assert total == result["events"]

    begins = [ev for evs in per_thread.values() for ev in evs if ev["ph"] == "B"]
    here = os.path.abspath(__file__)
    leafs = [ev for ev in begins if ev["name"] == "leaf"]
    assert leafs and all(ev["cat"] == "python" for ev in leafs)
    assert leafs[0]["args"] == {"loc": f"{here}:{leaf.__code__.co_firstlineno}"}
    lens = [ev for ev in begins if ev["name"] == "len"]
    assert lens and all(ev["cat"] == "c" and "args" not in ev for ev in lens)

    # ts is in microseconds: napper sleeps 10 ms
    main = per_thread[(pid, threading.main_thread().native_id)]
    i = next(i for i, ev in enumerate(main) if ev.get("name") == "napper")
    depth, j = 0, i
    for j in range(i, len(main)):
        depth += {"B": 1, "E": -1}.get(main[j]["ph"], 0)
        if depth == 0:
            break
    assert 10_000 <= main[j]["ts"] - main[i]["ts"] < 2_000_000


def test_metadata(tmp_path):
    trace = traced(tmp_path / "t.ftrace", program)
    _, doc, _ = convert(trace, tmp_path)
    pid = trace.header["pid"]
    meta = [ev for ev in doc["traceEvents"] if ev["ph"] == "M"]
    names = {ev["tid"]: ev["args"]["name"] for ev in meta if ev["name"] == "thread_name"}
    assert names == {t.native_id: t.name for t in trace.threads}
    assert names[threading.main_thread().native_id] == "MainThread"
    assert "chrome-worker" in names.values()
    (proc,) = [ev for ev in meta if ev["name"] == "process_name"]
    assert proc["pid"] == pid and proc["args"]["name"]
    other = doc["otherData"]
    assert other["argv"] == trace.header["argv"] and other["events"] == trace.stats.events
    assert other["start_wall_ns"] == trace.header["start_wall_ns"] and not other["truncated"]


def test_drops_become_instants(tmp_path):
    trace = trace_with_drops(tmp_path, outer)[0]
    result, doc, per_thread = convert(trace, tmp_path)
    gaps = [ev for ev in doc["traceEvents"] if ev["ph"] == "i"]
    assert gaps and len(gaps) == result["gaps"]
    assert sum(ev["args"]["dropped"] for ev in gaps) == trace.stats.dropped == result["dropped"]
    assert all(ev["s"] == "t" and ev["args"]["gap_us"] >= 0 for ev in gaps)
    pid = trace.header["pid"]
    for t in trace.threads:
        assert seen(per_thread[(pid, t.native_id)]) == expected(trace, t.id)


def test_truncated_trace_converts_with_a_note(tmp_path):
    full = tmp_path / "full.ftrace"
    traced(full, many_calls)
    trace = load_cut(full, tmp_path / "cut.ftrace", 3 / 5)
    assert trace.stats.truncated
    result, doc, per_thread = convert(trace, tmp_path)
    assert result["truncated"] and doc["otherData"]["truncated"]
    assert doc["otherData"]["damage"] == trace.damage
    pid = trace.header["pid"]
    (note,) = per_thread[(pid, 0)]
    assert note["ph"] == "i" and note["s"] == "p" and note["args"]["damage"]
    main = next(t for t in trace.threads if t.name == "MainThread")
    evs = per_thread[(pid, main.native_id)]
    assert seen(evs) == expected(trace, main.id)
    assert sum(1 for ev in evs if ev.get("name") == "leaf") > 1000


def test_orphans_and_unknown_threads(tmp_path):
    def vi(n):
        return varint(n)

    def st(s):
        return vi(len(s)) + s

    body = (struct.pack("<6I4Qd", 0x030C00F0, 42, 1, 1, 1, 65536, 262144, 1000, 5000, 7, 1e9)
            + st(b"python\0app.py\0") + st(b"3.12"))
    hdr = MAGIC + struct.pack("<3I", 1, len(body), zlib.crc32(body)) + body
    defs = chunk(2, b"\x10" + vi(1) + b"\x00" + vi(3) + st(b"f") + st(b"Q.f") + st(b'a"b.py')
                 + st(b""))
    # thread 1 (no THREAD def): an orphan return of f, then f called and left open
    ev = b"\x05" + vi(1) + vi(3) + b"\x01" + vi(1) + vi(1500)
    path = tmp_path / "h.ftrace"
    path.write_bytes(hdr + defs + chunk(1, ev, thread=1, records=2, base_tick=1000))
    result, doc, per_thread = convert(fasttrace.load(path), tmp_path)
    assert result["orphans"] == 1 and result["events"] == 2
    evs = per_thread[(42, 1)]
    assert [(ev["ph"], ev["ts"]) for ev in evs] == [("B", 1.503), ("E", 1.503)]
    assert evs[0]["args"]["loc"] == 'a"b.py:3'
    meta = {ev["name"]: ev["args"] for ev in doc["traceEvents"] if ev["ph"] == "M"}
    assert meta["thread_name"] == {"name": "thread-1"}
    assert meta["process_name"] == {"name": "app.py"}


def test_file_objects_progress_and_registry(tmp_path):
    trace = traced(tmp_path / "t.ftrace", many_calls)
    calls = []
    buf = io.BytesIO()
    result = chrome.write(trace, buf, progress=lambda done, total: calls.append((done, total)))
    total = trace.stats.events
    assert len(calls) >= 2 and calls[-1] == (total, total)
    assert all(0 < d <= t == total for d, t in calls)
    text = io.StringIO()
    chrome.write(trace, text)
    assert text.getvalue().encode() == buf.getvalue()
    assert len(buf.getvalue()) == result["bytes"]
    json.loads(buf.getvalue())

    assert fasttrace.export.writer("chrome") is chrome.write
    assert fasttrace.export.suffix("chrome") == ".chrome.json"
