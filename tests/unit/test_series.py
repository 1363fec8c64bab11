"""Rotated series (src/FORMAT.md section 9): the files of one capture loaded as one trace by
fasttrace.load() and by the pure-Python reader (which must agree), from a list, a glob or one
of the files; files missing, damaged, cut or of another series; definitions repeated."""

from __future__ import annotations

import os
import struct

import pytest

from formatfiles import (CALL, CCALL, CRET, DEFS, RET, check_nesting, chunk, clock, fdef,
                         header2, native_view, opened, outcome, py_view, same, st, tdef, trailer)
from helpers import cli_in_process
from helpers import varint as vi

import fasttrace

SID = 0x5E41E5


def ev(payload, thread=1, base=1000, records=1):
    return chunk(1, payload, thread=thread, records=records, base_tick=base)


def trail(stop_tick, events=0, dropped=0):
    # every clock pair gives exactly 1 ns per tick (mono = tick + 4000)
    return chunk(4, struct.pack("<5Q4I", events, dropped, stop_tick, stop_tick + 4000, 0, 2, 3,
                                0, 0))


def write(path, index, start_tick, *chunks, sid=SID, defs=DEFS, origin=2):
    hdr = header2(start_tick=start_tick, start_mono=start_tick + 4000,
                  series=(index, sid, origin))
    path.write_bytes(hdr + defs + b"".join(chunks))
    return str(path)


# One capture of two threads, as a version 2 writer rotating its file twice would write it:
# every file has the definitions, and each events chunk opens with the frames open then.
PARTS = [
    (1000, [ev(opened() + CALL + vi(1) + vi(10) + CALL + vi(2) + vi(10), base=1000, records=2),
            ev(opened() + CALL + vi(2) + vi(5), thread=2, base=1000)], 1100),
    (1100, [ev(opened(1, 2) + CCALL + vi(3) + vi(100) + CRET + vi(5) + RET + vi(5), base=1020,
               records=3),
            ev(opened(2) + RET + vi(150), thread=2, base=1005)], 1300),
    (1300, [ev(opened(1) + CALL + vi(2) + vi(200), base=1130)], 1500),
]
NAMES = ["trace.ftrace", "trace.1.ftrace", "trace.2.ftrace"]


@pytest.fixture
def series(tmp_path):
    """The three files of the series (indexes 1, 2, 3)."""
    out = []
    for k, (name, (start, chunks, stop)) in enumerate(zip(NAMES, PARTS), 1):
        out.append(write(tmp_path / name, k, start, *chunks, trail(stop, events=k)))
    return out


@pytest.fixture
def whole(tmp_path):
    """The same capture in one file: what the series must decode to."""
    chunks = [c for _, cs, _ in PARTS for c in cs]
    p = tmp_path / "whole" / "w.ftrace"
    p.parent.mkdir()
    return same(write(p, 0, 1000, *chunks, trail(1500), sid=0, origin=0))


def real(events):
    return [e for e in events if not e[4]]


def test_series_reads_as_one_trace(series, whole, tmp_path):
    for source in (series, [series[2], series[0], series[1]], series[0], series[1],
                   str(tmp_path / "trace*.ftrace")):
        v = same(source)
        assert v["paths"] == series, source
        assert v["events"] == whole["events"]
        assert v["series_problems"] == [] and v["gaps"] == []
        assert v["header"]["series_index"] == 1 and v["header"]["origin"] == "series"
        assert v["complete"] and not v["truncated"] and v["damage"] is None
        assert v["duration_ns"] == 500
        assert v["stats"] == (1 + 2 + 3, 0, 0)  # trailers' events summed
        assert v["records"] == {1: 6, 2: 2}
    check_nesting(whole["events"])
    # the events: later files' OPEN records skipped, times from the first file's start
    assert whole["events"] == [
        ("call", 0, 1, 1, True),
        ("call", 10, 1, 1, False), ("call", 20, 1, 2, False),
        ("call", 5, 2, 2, False),
        ("c_call", 120, 1, 3, False), ("c_return", 125, 1, 3, False),
        ("return", 130, 1, 2, False),
        ("return", 155, 2, 2, False),
        ("call", 330, 1, 2, False),
        ("return", 500, 1, 2, True), ("return", 500, 1, 1, True),
    ][1:]


def test_lone_file_and_no_match(tmp_path, series):
    p = write(tmp_path / "lone.ftrace", 0, 1000, *PARTS[0][1], trail(1100), sid=0, origin=0)
    v = same(p)
    assert v["paths"] == [p] and v["series_problems"] == []
    pattern = str(tmp_path / "nothing*.ftrace")
    for view in (native_view, py_view):
        assert outcome(view, pattern) == ("error", None, "no file matches this pattern")
    # a lone file first in a list is read alone; the others are noted
    v = same([p, series[0]])
    assert v["paths"] == [p]
    assert v["series_problems"] == [f"{series[0]}: skipped: {p} is not part of a rotated "
                                    "series, so it is read alone"]


def test_missing_middle_file(series):
    v = same([series[0], series[2]])
    assert v["paths"] == [series[0], series[2]]
    assert v["series_problems"] == [
        f"file 2 is missing from the series between {series[0]} and {series[2]}: the frames "
        "open before are closed there, and reopened after"]
    check_nesting(v["events"])
    assert v["events"] == [
        ("call", 10, 1, 1, False), ("call", 20, 1, 2, False),
        ("call", 5, 2, 2, False),
        # thread 1's next chunk: its frames close at its last tick, a gap, its OPEN applies
        ("return", 20, 1, 2, True), ("return", 20, 1, 1, True),
        ("call", 130, 1, 1, True),
        ("call", 330, 1, 2, False),
        ("return", 500, 1, 2, True), ("return", 500, 1, 1, True),
        ("return", 500, 2, 2, True),  # thread 2 has no chunk after the gap: closed at the end
    ]
    assert v["gaps"] == [("gap", 130, 1, 0, 20)]
    assert v["stats"] == (1 + 3, 0, 0)
    # discovery from one file finds the same: the missing file is reported
    os.remove(series[1])
    assert same(series[0]) == v


def test_damaged_file_is_reported(series, tmp_path):
    # a header that does not load (in a glob) and a chunk that does not: both skipped
    data = bytearray(open(series[1], "rb").read())
    data[30] ^= 1
    open(series[1], "wb").write(bytes(data))
    v = same(str(tmp_path / "trace*.ftrace"))
    assert v["paths"] == [series[0], series[2]]
    assert v["series_problems"][0] == f"{series[1]}: skipped: byte 20: header checksum mismatch"
    assert v["series_problems"][1].startswith("file 2 is missing from the series")
    assert v["gaps"] == [("gap", 130, 1, 0, 20)]
    # discovery from the first file cannot tell a broken file from a stranger: only the gap
    v2 = same(series[0])
    assert v2["series_problems"] == v["series_problems"][1:]
    assert v2["events"] == v["events"]
    data[30] ^= 1
    body = 20 + struct.unpack_from("<I", data, 12)[0]
    data[body + 32 + 40] ^= 1  # the defs chunk's payload
    open(series[1], "wb").write(bytes(data))
    v3 = same(series)
    assert v3["series_problems"] == [f"{series[1]}: skipped: byte {body}: chunk checksum "
                                     "mismatch (59-byte chunk of type 2)"] + \
        v["series_problems"][1:]
    assert v3["events"] == v["events"]


def test_cut_file_is_a_discontinuity(series):
    data = open(series[1], "rb").read()
    t1 = data.index(opened(1, 2))  # thread 1's chunk, then thread 2's
    cut = data.index(opened(2), t1) + 2
    open(series[1], "wb").write(data[:cut])
    v = same(series)
    assert v["paths"] == series
    assert len(v["series_problems"]) == 1
    problem = v["series_problems"][0]
    assert problem.startswith(f"{series[1]}: damaged tail at byte ") and problem.endswith(
        f"; the frames open at its end are closed there, and reopened in {series[2]}")
    check_nesting(v["events"])
    assert v["events"] == [
        ("call", 10, 1, 1, False), ("call", 20, 1, 2, False),
        ("call", 5, 2, 2, False),
        ("c_call", 120, 1, 3, False), ("c_return", 125, 1, 3, False),
        ("return", 130, 1, 2, False),
        ("return", 130, 1, 1, True), ("call", 130, 1, 1, True),  # closed, gap, reopened
        ("call", 330, 1, 2, False),
        ("return", 500, 1, 2, True), ("return", 500, 1, 1, True),
        ("return", 500, 2, 2, True),
    ]
    assert v["gaps"] == [("gap", 130, 1, 0, 130)]
    assert v["stats"] == (1 + 3 + 3, 0, 0)  # the cut file: its chunks' records
    # a cut last file: the series is truncated, its damage named after the file
    v = same(series[:2])
    assert v["truncated"] and not v["complete"] and v["series_problems"] == []
    assert v["damage"].startswith(f"{series[1]}: damaged tail at byte ")


def test_function_redefinitions(series, tmp_path):
    # the same definition again is skipped; a new function in a later file is added
    defs3 = chunk(2, fdef(1, "f") + fdef(2, "g") + fdef(3, "len", is_c=True) + fdef(4, "h")
                  + tdef(1, "main-renamed"))
    write(tmp_path / NAMES[2], 3, 1300,
          ev(opened(1) + CALL + vi(4) + vi(200), base=1130), trail(1500), defs=defs3)
    v = same(series)
    assert v["functions"][4]["name"] == "h"
    assert v["threads"][1]["name"] == "main-renamed"  # a later THREAD def replaces
    assert ("call", 330, 1, 4, False) in v["events"]
    # a different definition of an id is an error naming the later file
    defs2 = chunk(2, fdef(1, "f") + fdef(2, "g2") + fdef(3, "len", is_c=True) + tdef(1, "main"))
    p2 = write(tmp_path / NAMES[1], 2, 1100, *PARTS[1][1], trail(1300), defs=defs2)
    data = open(p2, "rb").read()
    end = data.index(fdef(2, "g2")) + len(fdef(2, "g2"))
    for view in (native_view, py_view):
        assert outcome(view, series) == (
            "error", end, f"function id 2 is defined differently in {series[0]}")
        with pytest.raises(fasttrace.FormatError) as ei:
            view(series)
        assert ei.value.path == p2


def test_other_series_and_duplicates_are_skipped(series, tmp_path):
    other = write(tmp_path / "trace.7.ftrace", 2, 1100, *PARTS[1][1], trail(1300), sid=SID + 1)
    lone = write(tmp_path / "trace.9.ftrace", 0, 1100, trail(1300), sid=0, origin=0)
    again = tmp_path / "copy" / "trace.1.ftrace"
    again.parent.mkdir()
    again.write_bytes(open(series[1], "rb").read())
    v = same(series + [other, lone, str(again)])
    assert v["paths"] == series
    assert v["series_problems"] == [
        f"{other}: skipped: it belongs to another series (id 0x{SID + 1:016x}, not "
        f"0x{SID:016x})",
        f"{lone}: skipped: it is not part of a rotated series",
        f"{again}: skipped: file 2 of the series again (after {series[1]})",
    ]
    # discovery from one file ignores the strangers beside it
    v = same(series[0])
    assert v["paths"] == series and v["series_problems"] == []
    # a glob: the series of the first match (trace.1.ftrace sorts first)
    v = same(str(tmp_path / "trace*.ftrace"))
    assert v["paths"] == series and len(v["series_problems"]) == 2


def test_nothing_loads(tmp_path):
    a, b = tmp_path / "a.ftrace", tmp_path / "b.ftrace"
    a.write_bytes(b"nonsense")
    b.write_bytes(b"")
    for view in (native_view, py_view):
        assert outcome(view, [str(a), str(b)]) == ("error", 0, "not a fasttrace file (bad magic)")
        assert outcome(view, str(tmp_path / "*.ftrace")) == outcome(view, [str(a), str(b)])


def test_series_clock_and_hook_lost(tmp_path):
    # one rate for the whole series: every qualifying pair of every file, in file order
    hook = b"\x16" + vi(1) + vi(1990) + st("sys.setprofile")
    defs = chunk(2, DEFS[32:] + hook)
    hdr = dict(tick_hz=2e9)
    f1 = tmp_path / "c.ftrace"
    f1.write_bytes(header2(start_tick=1000, start_mono=5000, series=(1, 9, 2), **hdr) + defs
                   + ev(opened() + CALL + vi(1) + vi(1000), base=1000)
                   + clock(1000 + 4_000_000, 5000 + 2_000_000)    # 0.5 ns per tick
                   + trailer(1000 + 4_000_000, 5000 + 2_000_000))
    f2 = tmp_path / "c.1.ftrace"
    f2.write_bytes(header2(start_tick=5_001_000, start_mono=3_005_000, series=(2, 9, 2), **hdr)
                   + defs + ev(opened(1) + RET + vi(1000), base=2000)
                   + clock(1000 + 8_000_000, 5000 + 8_000_000)    # 1 ns per tick: wins
                   + trailer(1000 + 10_000_000, 5000 + 10_000_000))
    v = same(str(tmp_path / "c*.ftrace"))
    assert v["events"] == [("call", 1000, 1, 1, False), ("return", 2000, 1, 1, False)]
    assert v["duration_ns"] == 10_000_000
    assert v["hook_lost"] == [(1, 990, "sys.setprofile")]  # once, though both files have it


def sampled_file(path, index, start, stacks, samples, stats=None):
    defs = (fdef(1, "f") + fdef(2, "g") + tdef(1, "main") + b"\x14" + vi(100) + b"\0" + vi(64)
            + b"".join(b"\x13" + vi(i) + b"\0" + vi(len(s)) + b"".join(vi(f) for f in s)
                       for i, s in enumerate(stacks, 1)))
    if stats is not None:
        defs += b"\x15" + vi(len(stats)) + b"".join(vi(x) for x in stats)
    recs = b"".join(b"\x09" + vi(dt) + vi(1) + vi(sid) + vi(w << 3) for dt, sid, w in samples)
    body = header2(start_tick=start, start_mono=start + 4000, series=(index, 3, 2), mode=2)
    path.write_bytes(body + chunk(2, defs) + chunk(5, recs, records=len(samples),
                                                   base_tick=start) + trail(start + 100))
    return str(path)


def test_sampled_series(tmp_path):
    a = sampled_file(tmp_path / "s.ftrace", 1, 1000, [(1,), (1, 2)], [(10, 1, 5), (10, 2, 5)],
                     stats=[1, 2])
    b = sampled_file(tmp_path / "s.1.ftrace", 2, 1100, [(1,), (1, 2), (2,)],
                     [(10, 3, 7), (5, 0, 1)], stats=[3, 4])
    v = same([a, b])
    assert v["stacks"] == [(), (1,), (1, 2), (2,)]
    assert v["samples"] == [(10, 1, (1,), 0, 5), (20, 1, (1, 2), 0, 5),
                            (110, 1, (2,), 0, 7), (115, 1, (), 0, 1)]
    assert v["sampling"]["rate_hz"] == 100
    assert v["sampling"]["stats"] == {"ticks": 3, "samples": 4}  # the last file's
    t = fasttrace.load([a, b])
    assert t.sampling.samples == 4
    t.close()
    # a stack id defined differently
    sampled_file(tmp_path / "s.1.ftrace", 2, 1100, [(2,)], [])
    nat = outcome(native_view, [a, b])
    assert nat[0] == "error" and nat[2] == f"stack id 1 is defined differently in {a}"
    assert nat == outcome(py_view, [a, b])


# ---- the command line -----------------------------------------------------------------------

def test_cli_reads_a_series(series, tmp_path):
    pattern = str(tmp_path / "trace*.ftrace")
    for args in ([pattern], series, [series[1]]):
        code, out, err = cli_in_process("report", "--json", *args)
        assert code == 0 and err == "", err
        assert '"calls"' in out
        code, out, err = cli_in_process("info", *args)
        assert code == 0, err
        assert f"id 0x{SID:016x}, 3 file(s) from file 1: {' '.join(series)}\n" in out
        assert "\nseries " in out
        assert "a file of a rotated series" in out
        for fmt in ("chrome", "collapsed"):
            dest = tmp_path / f"out.{fmt}"
            code, out, err = cli_in_process("convert", *args, "-f", fmt, "-o", dest)
            assert code == 0, err
            assert dest.stat().st_size > 0
    # problems are noted on stderr; info lists them
    os.remove(series[1])
    code, out, err = cli_in_process("report", pattern)
    assert code == 0
    assert err.startswith("fasttrace: note: file 2 is missing from the series")
    code, out, err = cli_in_process("info", pattern)
    assert code == 0 and "series problem  file 2 is missing" in out
    # the default output of convert is named after the first file
    code, out, err = cli_in_process("convert", pattern, "-f", "collapsed")
    assert code == 0 and os.path.exists(tmp_path / "trace.folded")
    code, out, err = cli_in_process("report", str(tmp_path / "none*.ftrace"))
    assert code == 1 and err == (f"fasttrace: error: {tmp_path / 'none*.ftrace'}: no file "
                                 "matches this pattern\n")
