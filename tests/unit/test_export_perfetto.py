"""Perfetto export: the file is read back with Perfetto's own protos (the `perfetto` package's
perfetto_trace_pb2), replaying sequences and interning as trace_processor does, and must show
the reader's events as nested slices on the right thread tracks, also with drops, a cut tail and
hand-made oddities (orphan returns, a thread with no definition, a tiny clock)."""

from __future__ import annotations

import io
import os
import shutil
import struct
import threading
import zlib
from collections import defaultdict

import pytest

import fasttrace
import fasttrace.export
from fasttrace.export import perfetto
from helpers import MAGIC, chunk, load_cut, trace_with_drops, traced, varint

pb2 = pytest.importorskip("perfetto.protos.perfetto.trace.perfetto_trace_pb2")

BEGIN, END, INSTANT = 1, 2, 3
CLEARED, NEEDS = 1, 2


def leaf(i):
    return len([i]) + abs(-i)


def middle(n):
    return sum(leaf(i) for i in range(n))


def gen(n):
    for i in range(n):
        yield leaf(i)


def worker():
    middle(20)
    list(gen(5))


def program():
    t = threading.Thread(target=worker, name="export-worker")
    t.start()
    middle(30)
    list(gen(3))
    t.join()


def many_calls():
    for i in range(60_000):
        leaf(i)


def outer():
    for _ in range(300_000):
        leaf(0)




def replay(data):
    """What a consumer sees: tracks, and per track the slices and instants in order."""
    trace = pb2.Trace()
    trace.ParseFromString(data)
    state = {}  # sequence id -> incremental state
    tracks = {}  # uuid -> TrackDescriptor
    events = defaultdict(list)  # track uuid -> [(type, ts, name, category, source location)]
    for p in trace.packet:
        seq = p.trusted_packet_sequence_id
        assert seq, "every packet is on a sequence"
        if p.sequence_flags & CLEARED:
            state[seq] = {"names": {}, "cats": {}, "locs": {}, "track": None}
        if p.sequence_flags & NEEDS:
            assert seq in state, "needs incremental state that was never cleared"
        s = state.get(seq)
        if p.HasField("trace_packet_defaults"):
            s["track"] = p.trace_packet_defaults.track_event_defaults.track_uuid
        if p.HasField("interned_data"):
            for key, items in (("names", p.interned_data.event_names),
                               ("cats", p.interned_data.event_categories)):
                for item in items:
                    assert item.iid > 0 and item.iid not in s[key], "iids are never reused"
                    s[key][item.iid] = item.name
            for loc in p.interned_data.source_locations:
                s["locs"][loc.iid] = (loc.file_name, loc.line_number, loc.function_name)
        if p.HasField("track_descriptor"):
            d = p.track_descriptor
            assert d.uuid not in tracks
            tracks[d.uuid] = d
        if p.HasField("track_event"):
            te = p.track_event
            assert p.HasField("timestamp")
            track = te.track_uuid if te.HasField("track_uuid") else s["track"]
            assert track in tracks, "the track is described before its events"
            if te.type == BEGIN:
                name = s["names"][te.name_iid]  # resolves on this sequence
                cat = s["cats"][te.category_iids[0]]
                loc = s["locs"][te.source_location_iid] if te.source_location_iid else None
            else:
                name, cat, loc = te.name or None, None, None
            if te.type == INSTANT:
                loc = {a.name: a.string_value or a.uint_value for a in te.debug_annotations}
            events[track].append((te.type, p.timestamp, name, cat, loc))
    return tracks, events


def check_nesting(events):
    """Begins and ends balance on every track, ends never come first, time never goes back."""
    for track, evs in events.items():
        depth, last = 0, 0
        for kind, ts, *_ in evs:
            assert ts >= last, f"track {track}: time goes back"
            last = ts
            if kind == BEGIN:
                depth += 1
            elif kind == END:
                assert depth > 0, f"track {track}: an end with no slice open"
                depth -= 1
        assert depth == 0, f"track {track}: {depth} slices left open"


def convert(trace, tmp_path, **kw):
    out = tmp_path / "out.pftrace"
    result = perfetto.write(trace, out, **kw)
    data = out.read_bytes()
    assert result["bytes"] == len(data)
    tracks, events = replay(data)
    check_nesting(events)
    return result, tracks, events


def thread_tracks(trace, tracks):
    """thread id -> track uuid, matched by tid."""
    by_tid = {d.thread.tid: uuid for uuid, d in tracks.items() if d.HasField("thread")}
    return {t.id: by_tid[t.native_id or t.id] for t in trace.threads}


def expected(trace, thread):
    """(type, ts, name) the slices of `thread` should be: the reader's events, orphans left out."""
    base = trace.header["start_monotonic_ns"]
    out, depth = [], 0
    for e in trace.events(thread, gaps=True):
        if e.kind == "gap":
            out.append((INSTANT, base + e.start_ts, f"fasttrace: {e.dropped} events dropped"))
        elif e.kind in ("call", "c_call"):
            depth += 1
            out.append((BEGIN, base + e.ts, e.function.qualname or e.function.name))
        elif depth:
            depth -= 1
            out.append((END, base + e.ts, None))
    return out


@pytest.mark.parametrize("c_calls", [True, False], ids=["c_calls", "no_c_calls"])
def test_slices_match_the_reader(tmp_path, c_calls):
    trace = traced(tmp_path / "t.ftrace", program, c_calls=c_calls)
    result, tracks, events = convert(trace, tmp_path)
    assert result["threads"] == 2 and result["gaps"] == 0 and not result["truncated"]
    uuids = thread_tracks(trace, tracks)
    total = 0
    for t in trace.threads:
        got = events[uuids[t.id]]
        assert [e[:3] for e in got] == expected(trace, t.id)
        total += len(got)
    assert total == result["events"]

    names = {(e[2], e[3], e[4]) for evs in events.values() for e in evs if e[0] == BEGIN}
    here = os.path.abspath(__file__)
    line = leaf.__code__.co_firstlineno
    assert ("leaf", "python", (here, line, "leaf")) in names
    assert ("middle", "python", (here, middle.__code__.co_firstlineno, "middle")) in names
    assert any(n == "gen" for n, _, _ in names)
    has_len = ("len", "c", None) in names
    assert has_len == c_calls


def test_process_and_thread_tracks(tmp_path):
    trace = traced(tmp_path / "t.ftrace", program)
    _, tracks, _ = convert(trace, tmp_path)
    pid = trace.header["pid"]
    (proc_uuid, proc), = [(u, d) for u, d in tracks.items() if d.HasField("process")]
    assert proc.process.pid == pid == os.getpid()
    assert list(proc.process.cmdline) == trace.header["argv"]
    assert proc.process.process_name
    threads = {d.thread.thread_name: d for d in tracks.values() if d.HasField("thread")}
    assert set(threads) == {"MainThread", "export-worker"}
    for t in trace.threads:
        d = threads[t.name]
        assert d.thread.pid == pid and d.thread.tid == t.native_id
        assert d.parent_uuid == proc_uuid
    assert threads["MainThread"].thread.tid == threading.main_thread().native_id


def test_drops_become_instants(tmp_path):
    trace = trace_with_drops(tmp_path, outer)[0]
    result, tracks, events = convert(trace, tmp_path)
    uuids = thread_tracks(trace, tracks)
    gaps = [e for evs in events.values() for e in evs if e[0] == INSTANT]
    assert gaps and result["gaps"] == len(gaps)
    assert sum(g[4]["dropped"] for g in gaps) == trace.stats.dropped == result["dropped"]
    assert all(g[2].startswith("fasttrace: ") and g[4]["gap_ns"] >= 0 for g in gaps)
    for t in trace.threads:
        assert [e[:3] for e in events[uuids[t.id]]] == expected(trace, t.id)


def test_truncated_trace_converts_with_a_note(tmp_path):
    full = tmp_path / "full.ftrace"
    traced(full, many_calls)
    trace = load_cut(full, tmp_path / "cut.ftrace", 3 / 5)
    assert trace.stats.truncated
    result, tracks, events = convert(trace, tmp_path)
    assert result["truncated"]
    (proc_uuid,) = [u for u, d in tracks.items() if d.HasField("process")]
    (note,) = events[proc_uuid]
    assert note[0] == INSTANT and note[2] == "fasttrace: trace truncated" and note[4]["damage"]
    uuids = thread_tracks(trace, tracks)
    main = next(t for t in trace.threads if t.name == "MainThread")
    got = events[uuids[main.id]]
    assert [e[:3] for e in got] == expected(trace, main.id)
    assert sum(1 for e in got if e[2] == "leaf") > 1000
    assert note[1] >= max(e[1] for e in got)


def vi(n):
    return varint(n)


def st(s):
    return vi(len(s)) + s


def test_hand_made_oddities(tmp_path):
    # start_mono 5000: timestamps under 2**14 ns (an over-long varint, still valid); thread 2
    # has no THREAD def (no native id: tid = its small id); orphan returns are left out.
    body = (struct.pack("<6I4Qd", 0x030C00F0, 42, 1, 1, 1, 65536, 262144, 1000, 5000, 7, 1e9)
            + st(b"python\0app.py\0") + st(b"3.12"))
    hdr = MAGIC + struct.pack("<3I", 1, len(body), zlib.crc32(body)) + body

    def fdef(fid, name, is_c=False):
        return (b"\x10" + vi(fid) + bytes([is_c]) + vi(0 if is_c else 3) + st(name)
                + st(b"Q." + name) + st(b"" if is_c else b"f.py") + st(b""))

    defs = chunk(2, fdef(1, b"f") + fdef(2, b"g") + fdef(3, b"len", True)
                 + b"\x11" + vi(1) + vi(101) + vi(201) + st(b"main"))
    call, ret, ccall, cret, oret = (bytes([i]) for i in range(1, 6))
    ev1 = (oret + vi(1) + vi(3) + call + vi(2) + vi(10) + ccall + vi(3) + vi(5) + cret + vi(5)
           + ret + vi(2_000_000))
    ev2 = ret + vi(7) + call + vi(1) + vi(3)
    path = tmp_path / "h.ftrace"
    path.write_bytes(hdr + defs + chunk(1, ev1, thread=1, records=5, base_tick=1000)
                     + chunk(1, ev2, thread=2, records=2, base_tick=1500))
    trace = fasttrace.load(path)
    result, tracks, events = convert(trace, tmp_path)
    assert result["orphans"] == 1 and result["threads"] == 2
    threads = {d.thread.tid: (d.thread.thread_name, u) for u, d in tracks.items()
               if d.HasField("thread")}
    assert set(threads) == {201, 2} and threads[2][0] == "thread-2"
    assert [e[:3] for e in events[threads[201][1]]] == [
        (BEGIN, 5013, "Q.g"), (BEGIN, 5018, "Q.len"), (END, 5023, None), (END, 2_005_023, None)]
    # thread 2's return with nothing open yields nothing; f, open at the end, closes there:
    # without a trailer the trace ends at its last record, thread 1's return
    assert [e[:3] for e in events[threads[2][1]]] == [(BEGIN, 5510, "Q.f"),
                                                      (END, 2_005_023, None)]
    proc = next(d.process for d in tracks.values() if d.HasField("process"))
    assert proc.process_name == "app.py" and proc.pid == 42


def test_file_objects_progress_and_registry(tmp_path):
    trace = traced(tmp_path / "t.ftrace", many_calls)
    calls = []
    buf = io.BytesIO()
    result = perfetto.write(trace, buf, progress=lambda done, total: calls.append((done, total)))
    assert len(buf.getvalue()) == result["bytes"] > perfetto.FLUSH_BYTES
    total = trace.stats.events
    assert len(calls) >= 2 and calls[-1] == (total, total)
    assert all(0 < d <= t == total for d, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    text = io.TextIOWrapper(io.BytesIO())
    perfetto.write(trace, text)
    assert text.buffer.getvalue() == buf.getvalue()

    assert fasttrace.export.writer("perfetto") is perfetto.write
    assert fasttrace.export.suffix("perfetto") == ".pftrace"
    with pytest.raises(ValueError, match="unknown export format"):
        fasttrace.export.writer("nope")


def test_process_name():
    name = perfetto.process_name
    assert name(["/usr/bin/python3.12", "-X", "dev", "-u", "app.py", "x"], 1) == "app.py x"
    assert name(["python", "-m", "pytest", "-q"], 1) == "pytest -q"
    assert name(["python", "-c", "pass"], 1) == "-c pass"
    assert name(["/usr/local/bin/fasttrace", "run", "a.py"], 1) == "fasttrace run a.py"
    assert name([], 7) == "pid 7"
    assert len(name(["python", "x" * 100], 1)) == 64


def test_trace_processor_reads_it(tmp_path):
    """trace_processor itself, if a binary is available offline: the `perfetto` package only
    downloads it, so point FASTTRACE_TRACE_PROCESSOR at a trace_processor_shell to run this."""
    binary = os.environ.get("FASTTRACE_TRACE_PROCESSOR") or shutil.which("trace_processor_shell")
    if not binary:
        pytest.skip("no trace_processor_shell (set FASTTRACE_TRACE_PROCESSOR)")
    tp_mod = pytest.importorskip("perfetto.trace_processor")
    trace = traced(tmp_path / "t.ftrace", program)
    out = tmp_path / "t.pftrace"
    result = perfetto.write(trace, out)
    config = tp_mod.TraceProcessorConfig(bin_path=binary)
    with tp_mod.TraceProcessor(trace=str(out), config=config) as tp:
        (row,) = list(tp.query("select count(*) as n from slice"))
        assert row.n == result["events"] // 2
        got = {r.name: r.tid for r in tp.query("select name, tid from thread")}
        for t in trace.threads:
            assert got[t.name] == t.native_id
        errors = [(r.name, r.value) for r in tp.query(
            "select name, value from stats where severity in ('error', 'data_loss')"
            " and value > 0")]
        assert not errors
