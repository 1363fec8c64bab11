"""Format version 2 (src/FORMAT.md): the header's series fields, OPEN records at the start of
every events chunk, records before the header's start_tick; both readers on hand-built files."""

from __future__ import annotations

import struct

import pytest

from formatfiles import (CALL, CCALL, CRET, DEFS, DROP, OPEN, RET, STACK, check_nesting, chunk,
                         clock, fdef, header, header2, native_view, opened, outcome, py_view,
                         same, st, tdef, trailer)
from helpers import varint as vi

import fasttrace
from fasttrace import _pyreader


def build(tmp_path, *chunks, hdr=None, defs=DEFS, name="v2.ftrace"):
    p = tmp_path / name
    p.write_bytes((hdr if hdr is not None else header2()) + defs + b"".join(chunks))
    return str(p)


def ev(payload, thread=1, base=1000, records=0):
    return chunk(1, payload, thread=thread, records=records, base_tick=base)


def payload_offset(path, index):
    """File offset of the payload of chunk `index` (0 = the first chunk)."""
    data = open(path, "rb").read()
    off = 20 + struct.unpack_from("<I", data, 12)[0]
    for _ in range(index):
        off += 32 + struct.unpack_from("<I", data, off + 4)[0]
    return off + 32


def errors(path):
    """(offset, reason) of the FormatError both readers raise (they must agree)."""
    nat, py = outcome(native_view, path), outcome(py_view, path)
    assert nat[0] == "error", nat
    assert nat == py
    return nat[1], nat[2]


# ---- header -------------------------------------------------------------------------------

def test_v2_header_fields(tmp_path):
    v = same(build(tmp_path, trailer(1000, 5000),
                   hdr=header2(series=(3, 0xABCDEF0123456789, 2))))
    h = v["header"]
    assert h["format_version"] == 2
    assert (h["series_index"], h["series_id"], h["origin"]) == (3, 0xABCDEF0123456789, "series")
    for origin, name in ((0, "capture"), (1, "flight"), (7, "unknown")):
        v = same(build(tmp_path, trailer(1000, 5000), hdr=header2(series=(0, 0, origin))))
        assert v["header"]["origin"] == name
    # bytes after the series fields up to body_size are ignored
    v = same(build(tmp_path, trailer(1000, 5000), hdr=header2(series=(1, 9, 2), extra=b"xyz")))
    assert (v["header"]["series_index"], v["header"]["series_id"]) == (1, 9)


def test_v1_header_has_no_series(tmp_path):
    # the same bytes after python_version are ignored in version 1
    v = same(build(tmp_path, trailer(1000, 5000),
                   hdr=header(series=vi(3) + struct.pack("<QB", 5, 2))))
    h = v["header"]
    assert (h["format_version"], h["series_index"], h["series_id"], h["origin"]) == \
        (1, 0, 0, "capture")


STRINGS_END = 20 + 64 + len(st(b"python\0-c\0")) + len(st("3.12"))


@pytest.mark.parametrize("fields, where", [
    (b"", 0),                                   # none of them
    (b"\x83", 0),                               # series_index cut
    (vi(1), 1),                                 # no series_id
    (vi(1) + b"\0" * 7, 1),                     # series_id cut
    (vi(300) + b"\0" * 8, 2 + 8),               # no origin
])
def test_v2_header_series_fields_missing(tmp_path, fields, where):
    p = build(tmp_path, trailer(1000, 5000), hdr=header2(series=fields))
    assert errors(p) == (STRINGS_END + where, "header series fields are malformed")


def test_v2_version_message(tmp_path):
    data = bytearray(header2() + DEFS + trailer(1000, 5000))
    struct.pack_into("<I", data, 8, 3)
    p = tmp_path / "v3.ftrace"
    p.write_bytes(bytes(data))
    off, reason = errors(str(p))
    assert off == 8 and reason == ("format version 3 is not supported (this reader reads "
                                   "versions 1 to 2); upgrade fasttrace")


# ---- OPEN records ---------------------------------------------------------------------------

def test_open_on_first_chunk_opens_later_ones_are_skipped(tmp_path):
    c1 = ev(opened(1, 2) + CCALL + vi(3) + vi(5) + CRET + vi(5) + RET + vi(10), base=1100,
            records=3)
    c2 = ev(opened(1) + CALL + vi(2) + vi(10) + RET + vi(10) + RET + vi(5), base=1120,
            records=3)
    c3 = ev(opened(1, 3) + CRET + vi(1), thread=2, base=1050, records=1)
    v = same(build(tmp_path, c1, c3, c2, trailer(2000, 6000)))
    assert v["events"] == [
        ("call", 100, 1, 1, True), ("call", 100, 1, 2, True),   # OPEN of the first chunk
        ("c_call", 105, 1, 3, False), ("c_return", 110, 1, 3, False),
        ("return", 120, 1, 2, False),
        ("call", 50, 2, 1, True), ("c_call", 50, 2, 3, True),   # a C frame opens as c_call
        ("c_return", 51, 2, 3, False),
        ("call", 130, 1, 2, False),                             # OPEN [f] skipped
        ("return", 140, 1, 2, False), ("return", 145, 1, 1, False),
        ("return", 1000, 2, 1, True),                           # open at the end
    ]
    check_nesting(v["events"])


def stream():
    """Thread 1's chunks as a version 2 writer makes them: each opens with the frames open."""
    return [
        ev(opened() + CALL + vi(1) + vi(10) + CALL + vi(2) + vi(10), base=1000, records=2),
        ev(opened(1, 2) + CCALL + vi(3) + vi(5) + CRET + vi(5) + RET + vi(5), base=1020,
           records=3),
        ev(opened(1) + CALL + vi(2) + vi(5) + RET + vi(5) + RET + vi(5) + CALL + vi(1) + vi(5),
           base=1035, records=4),
        ev(opened(1) + CALL + vi(2) + vi(5), base=1055, records=1),
    ]


def test_any_suffix_of_chunks_decodes_balanced(tmp_path):
    chunks = stream()
    full = same(build(tmp_path, *chunks, trailer(2000, 6000)))
    check_nesting(full["events"])
    real = [e for e in full["events"] if not e[4]]
    for k, base in enumerate((1000, 1020, 1035, 1055)):
        v = same(build(tmp_path, *chunks[k:], trailer(2000, 6000), name=f"s{k}.ftrace"))
        check_nesting(v["events"])
        # the recorded events are those of the whole file from that chunk on (every record of
        # these chunks has a dt > 0)
        assert [e for e in v["events"] if not e[4]] == \
            [e for e in real if e[1] > base - 1000 or k == 0]
        opens = [e for e in v["events"] if e[4] and e[0] == "call" and e[1] == base - 1000]
        assert [e[3] for e in opens] == [[], [1, 2], [1], [1]][k]


def test_drop_first(tmp_path):
    c1 = ev(DROP + vi(3) + vi(10) + vi(2) + vi(1) + vi(2) + RET + vi(5), base=1000, records=2)
    c2 = ev(DROP + vi(0) + vi(5) + vi(1) + vi(1), base=1015, records=1)
    v = same(build(tmp_path, c1, c2, trailer(2000, 6000)))
    assert v["events"] == [
        ("call", 10, 1, 1, True), ("call", 10, 1, 2, True), ("return", 15, 1, 2, False),
        ("return", 15, 1, 1, True), ("call", 20, 1, 1, True),   # the second chunk's DROP
        ("return", 1000, 1, 1, True),
    ]
    assert v["gaps"] == [("gap", 10, 1, 3, 0), ("gap", 20, 1, 0, 15)]


def test_empty_chunk_and_stack_records(tmp_path):
    # an empty chunk changes nothing: the thread's first chunk is the next one with records
    v = same(build(tmp_path, ev(b"", base=1000), ev(opened(1) + RET + vi(4), base=1010),
                   ev(b"", base=1014), trailer(2000, 6000)))
    assert v["events"] == [("call", 10, 1, 1, True), ("return", 14, 1, 1, False)]
    # STACK keeps its version 1 rules: after an empty OPEN it opens frames
    v = same(build(tmp_path, ev(opened() + STACK + vi(3) + vi(1) + vi(2) + RET + vi(1)),
                   trailer(2000, 6000)))
    assert v["events"] == [("call", 3, 1, 2, True), ("return", 4, 1, 2, False)]


def test_open_not_counted_in_records(tmp_path):
    t = fasttrace.load(build(tmp_path, ev(opened(1, 2), base=1500, records=0)))
    try:
        assert t.stats.events == 0 and t.stats.truncated
        assert [(e.kind, e.ts) for e in t.events()] == [("call", 500), ("call", 500),
                                                        ("return", 500), ("return", 500)]
    finally:
        t.close()


@pytest.mark.parametrize("payload, where, reason", [
    (CALL + vi(1) + vi(1), 0, "events chunk starts with record 0x01, not an open or drop "
                              "record"),
    (RET + vi(1), 0, "events chunk starts with record 0x02, not an open or drop record"),
    (STACK + vi(0) + vi(0), 0, "events chunk starts with record 0x07, not an open or drop "
                               "record"),
    (b"\x09" + vi(1), 0, "unknown event record 0x09"),
    (b"\x0b", 0, "unknown event record 0x0b"),
    (opened(1) + opened(1), 3, "open record after the start of its chunk"),
    (DROP + vi(0) + vi(0) + vi(0) + opened(), 4, "open record after the start of its chunk"),
    (OPEN + vi(5) + vi(1), 0, "malformed open record"),
    (OPEN + vi(1) + b"\x81", 0, "malformed open record"),
    (OPEN, 0, "malformed open record"),
    (opened(1, 77), 0, "function id 77 is used before its definition"),
    (opened(0), 0, "function id 0 is used before its definition"),
    (opened(1) + STACK + vi(0) + vi(0), 3, "stack record while frames are open"),
])
def test_bad_v2_events(tmp_path, payload, where, reason):
    # a good first chunk, then the bad one: an OPEN of a later chunk is checked too
    p = build(tmp_path, ev(opened() + CALL + vi(1) + vi(1)), ev(payload, base=1001),
              trailer(2000, 6000))
    assert errors(p) == (payload_offset(p, 2) + where, reason)
    for reader in (lambda: native_view(p)["events"], lambda: list(_pyreader.read(p).events())):
        with pytest.raises(fasttrace.FormatError):
            reader()


def test_bad_first_chunk_of_a_thread(tmp_path):
    p = build(tmp_path, ev(CALL + vi(1) + vi(1)), trailer(2000, 6000))
    assert errors(p) == (payload_offset(p, 1), "events chunk starts with record 0x01, not an "
                                               "open or drop record")


def test_open_in_v1_is_an_unknown_record(tmp_path):
    p = build(tmp_path, ev(CALL + vi(1) + vi(1)), ev(opened(1), base=1001), trailer(2000, 6000),
              hdr=header())
    assert errors(p) == (payload_offset(p, 2), "unknown event record 0x0a")
    # and a v1 trace's end without a trailer stops at it
    v = same(build(tmp_path, ev(CALL + vi(1) + vi(7), base=1300), hdr=header(),
                   name="v1-cut.ftrace"))
    assert v["duration_ns"] == 307
    p = build(tmp_path, ev(CALL + vi(1) + vi(7) + OPEN + vi(0) + RET + vi(50), base=1300),
              hdr=header(), name="v1-open.ftrace")
    t = fasttrace.load(p)
    py = _pyreader.read(p)
    assert t.stats.duration_ns == py.duration_ns == 307
    t.close()


def test_end_of_trace_skips_open(tmp_path):
    # without a trailer the trace ends at its last record; an OPEN has the chunk's base_tick
    v = same(build(tmp_path, ev(opened(1), base=1500)))
    assert v["duration_ns"] == 500 and v["truncated"]
    v = same(build(tmp_path, ev(opened(1) + CALL + vi(2) + vi(7), base=1500)))
    assert v["duration_ns"] == 507
    assert v["events"][-2:] == [("return", 507, 1, 2, True), ("return", 507, 1, 1, True)]


# ---- ticks before start_tick ----------------------------------------------------------------

def test_records_before_start_have_negative_ts(tmp_path):
    hdr = header2(start_tick=1_000_000, start_mono=5_000_000, tick_hz=2e9)
    c1 = ev(opened(1) + CALL + vi(2) + vi(500) + RET + vi(1000)
            + DROP + vi(4) + vi(100) + vi(1) + vi(1), base=999_000)
    c2 = ev(opened(1) + CALL + vi(2) + vi(10), thread=2, base=998_000)
    hook_lost = chunk(2, b"\x16" + vi(2) + vi(998_010) + st("sys.setprofile"))
    p = build(tmp_path, c1, c2, hook_lost, trailer(1_004_000, 5_002_000), hdr=hdr)
    v = same(p)
    # the trailer's pair spans under 1 ms of ticks: 0.5 ns per tick, from tick_hz
    assert v["events"] == [
        ("call", -500, 1, 1, True), ("call", -250, 1, 2, False), ("return", 250, 1, 2, False),
        ("return", 250, 1, 1, True), ("call", 300, 1, 1, True),
        ("call", -1000, 2, 1, True), ("call", -995, 2, 2, False),
        ("return", 2000, 1, 1, True),
        ("return", 2000, 2, 2, True), ("return", 2000, 2, 1, True),
    ]
    assert v["gaps"] == [("gap", 300, 1, 4, 250)]
    assert v["hook_lost"] == [(2, -995, "sys.setprofile")]
    t = fasttrace.load(p)
    try:
        e = next(iter(t.events()))
        assert e.ts == -500 and isinstance(e.ts, int)
        gap = [g for g in t.events(gaps=True) if g.kind == "gap"]
        assert gap[0].start_ts == 250
    finally:
        t.close()


def test_only_records_before_start(tmp_path):
    # a killed process whose file holds only records from before its start_tick: the end is
    # the start (duration 0) and open frames close there
    hdr = header2(start_tick=10_000)
    v = same(build(tmp_path, ev(opened(1) + CALL + vi(2) + vi(10), base=9_000), hdr=hdr))
    assert v["duration_ns"] == 0
    assert v["events"] == [("call", -1000, 1, 1, True), ("call", -990, 1, 2, False),
                           ("return", 0, 1, 2, True), ("return", 0, 1, 1, True)]


def test_v2_defs_before_use_and_hook_lost_without_events(tmp_path):
    # a file may open with the whole definitions table; a HOOK_LOST may name a thread that has
    # no events chunk in the file
    defs = chunk(2, fdef(1, "f") + fdef(2, "g") + fdef(3, "len", is_c=True) + fdef(4, "unused")
                 + tdef(1, "main") + tdef(2, "idle") + b"\x16" + vi(2) + vi(900) + st("gone"))
    v = same(build(tmp_path, ev(opened(1), base=1000), clock(1500, 5500), defs=defs))
    assert 4 in v["functions"] and v["hook_lost"] == [(2, -100, "gone")]


def test_dump_shows_v2(tmp_path):
    from helpers import cli_in_process

    p = build(tmp_path, ev(opened(1, 2) + CALL + vi(3) + vi(4), base=990), trailer(2000, 6000),
              hdr=header2(series=(2, 0x1234, 2)))
    code, out, err = cli_in_process("dump", p)
    assert code == 0, err
    assert "series_index=2 series_id=0x0000000000001234 origin=series" in out
    assert "OPEN stack=[1 2]" in out and "CALL fid=3 (Q.len) dt=4" in out
    # in version 1, 0x0a is no record
    p = build(tmp_path, ev(opened(1)), trailer(2000, 6000), hdr=header(), name="v1.ftrace")
    code, out, err = cli_in_process("dump", p)
    assert code == 1 and "unknown record tag 0x0a" in out + err
    # series fields cut
    p = build(tmp_path, trailer(2000, 6000), hdr=header2(series=vi(2)), name="cut.ftrace")
    code, out, err = cli_in_process("dump", p)
    assert code == 1 and "header series fields are malformed" in err
