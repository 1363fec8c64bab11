"""Both readers as plain data, and hand-built .ftrace files (src/FORMAT.md), for the format
tests (imported as `formatfiles`; tests/ is on pythonpath)."""

from __future__ import annotations

import struct
import zlib

import fasttrace
from fasttrace import _pyreader
from helpers import MAGIC, chunk, sample_tuple
from helpers import varint as vi


# ---- both readers as plain data ---------------------------------------------------------

def native_view(path, series=False):
    """fasttrace.load(path) as plain data; series: with what only a series has to say."""
    t = fasttrace.load(path)
    try:
        events = []
        for e in t.events():  # a plain loop: no comprehension frame keeps the iterator alive
            events.append((e.kind, e.ts, e.thread, e.function.id, bool(e.synthetic)))
        gaps = []
        for e in t.events(gaps=True):
            if e.kind == "gap":
                gaps.append((e.kind, e.ts, e.thread, e.dropped, e.start_ts))
        samples = []
        for s in t.samples():
            samples.append(sample_tuple(s))
        return {
            "header": dict(t.header),
            "functions": {f.id: dict(name=f.name, qualname=f.qualname, filename=f.filename,
                                     lineno=f.lineno, module=f.module, is_c=bool(f.is_c))
                          for f in t.functions},
            "threads": {th.id: dict(ident=th.ident, native_id=th.native_id, name=th.name)
                        for th in t.threads},
            "truncated": t.stats.truncated,
            "complete": t.complete,
            "duration_ns": t.stats.duration_ns,
            "events": events,
            "samples": samples,
            "sampling": t._sampling_info,
            "stacks": [tuple(f.id for f in st) for st in t.stacks],
            "gaps": gaps,
            "hook_lost": [tuple(h) for h in t.hook_lost],
            **({"paths": t.paths, "series_problems": t.series_problems, "damage": t.damage,
                "stats": (t.stats.events, t.stats.dropped, t.stats.lost_threads),
                "records": t.thread_records if t.mode == "trace" else {}}
               if series else {}),
        }
    finally:
        t.close()



def py_view(source, series=False):
    """The pure-Python reader's view, as native_view's: of a file's bytes, or of what
    fasttrace.load(source) loads."""
    if isinstance(source, (bytes, bytearray)):
        t = _pyreader.read(source)
    else:
        t = _pyreader.read_series(source)
    view = {"header": t.header, "functions": t.functions, "threads": t.threads,
            "truncated": t.truncated, "complete": t.complete, "duration_ns": t.duration_ns,
            "events": list(t.events()), "samples": list(t.samples()),
            "sampling": t.sampling, "stacks": t.stacks,
            "gaps": [e for e in t.events(gaps=True) if e[0] == "gap"],
            "hook_lost": t.hook_lost}
    if series:
        records = t.thread_records if t.header["mode"] == "trace" else {}
        view.update(paths=t.paths, series_problems=t.series_problems, damage=t.damage,
                    stats=(t.events_total, t.dropped_total, t.lost_threads), records=records)
    return view


def outcome(view, source):
    try:
        return ("ok", view(source))
    except fasttrace.FormatError as e:
        return ("error", e.offset, e.reason)


def same(path):
    """Both readers agree on everything; returns the native view (with its series keys)."""
    nat, py = native_view(path, series=True), py_view(path, series=True)
    assert nat["header"] == py["header"]
    assert nat["functions"] == py["functions"]
    assert nat["threads"] == py["threads"]
    assert nat["events"] == py["events"]
    assert nat == py
    return nat



# ---- hand-built files -----------------------------------------------------------------------


def st(s):
    b = s.encode() if isinstance(s, str) else s
    return vi(len(b)) + b


def header(version=1, tick_hz=1e9, start_tick=1000, start_mono=5000, clock_kind=1, series=None,
           extra=b"", mode=1):
    """A header; version 2 adds `series` = (series_index, series_id, origin), (0, 0, 0) by
    default, or raw bytes for what follows python_version."""
    body = (struct.pack("<6I4Qd", 0x030C00F0, 42, mode, 1, clock_kind, 65536, 262144,
                        start_tick, start_mono, 7, tick_hz) + st(b"python\0-c\0") + st("3.12"))
    if isinstance(series, bytes):
        body += series
    elif version >= 2:
        index, sid, origin = series or (0, 0, 0)
        body += vi(index) + struct.pack("<QB", sid, origin)
    body += extra
    return MAGIC + struct.pack("<3I", version, len(body), zlib.crc32(body)) + body


def header2(**kw):
    return header(version=2, **kw)



def fdef(fid, name, is_c=False, lineno=1):
    return (b"\x10" + vi(fid) + bytes([int(is_c)]) + vi(lineno) + st(name) + st("Q." + name)
            + st("" if is_c else "f.py") + st("m" if is_c else ""))


def tdef(tid, name=""):
    return b"\x11" + vi(tid) + vi(100 + tid) + vi(200 + tid) + st(name)


def clock(tick, mono):
    return chunk(3, struct.pack("<3Q", tick, mono, 0))


def trailer(stop_tick, stop_mono):
    return chunk(4, struct.pack("<5Q4I", 0, 0, stop_tick, stop_mono, 0, 2, 3, 0, 0))


DEFS = chunk(2, fdef(1, "f") + fdef(2, "g") + fdef(3, "len", is_c=True) + tdef(1, "main"))
CALL, RET, CCALL, CRET, ORET, OCRET, STACK, DROP = (bytes([i]) for i in range(1, 9))
OPEN = b"\x0a"


def opened(*fids):
    """An OPEN record (version 2) of these frames, root first."""
    return OPEN + vi(len(fids)) + b"".join(vi(f) for f in fids)


def by_thread(events):
    out = {}
    for e in events:
        out.setdefault(e[2], []).append(e)
    return out


def check_nesting(events):
    """Calls and returns nest per thread, times never go back, nothing is left open."""
    for tid, evs in by_thread(events).items():
        stack, last = [], None
        for kind, ts, _, fid, _syn in evs:
            assert last is None or ts >= last, (tid, ts, last)
            last = ts
            if kind in ("call", "c_call"):
                stack.append((kind, fid))
            elif stack:  # else an orphan return
                assert stack.pop() == ({"return": "call", "c_return": "c_call"}[kind], fid)
        assert stack == [], tid


def built(tmp_path, *chunks, hdr=None):
    p = tmp_path / "b.ftrace"
    p.write_bytes((hdr or header()) + DEFS + b"".join(chunks))
    return str(p)


# ---- version 2 from version 1 -------------------------------------------------------------

def v2_header(v1_header, series=(0, 0, 0)):
    """A version 1 header as version 2, with the series fields (index, id, origin), or raw
    bytes in their place."""
    body = v1_header[20:]
    _argv, p = _pyreader._str(body, 64, len(body))
    _py, p = _pyreader._str(body, p, len(body))
    fields = series if isinstance(series, bytes) else (
        vi(series[0]) + struct.pack("<QB", series[1], series[2]))
    body = body[:p] + fields
    return v1_header[:8] + struct.pack("<3I", 2, len(body), zlib.crc32(body)) + body


def _frames_of(payload, stack):
    """Follows an events payload's records on `stack` (a thread's open frames), in place."""
    R = _pyreader
    d, p, end = payload, 0, len(payload)
    while p < end:
        tag = d[p]
        p += 1
        if tag == R.DROP:
            _n, p = R._varint(d, p, end)
        if tag in R.WITH_FID:
            fid, p = R._varint(d, p, end)
        if tag != R.OPEN:
            _dt, p = R._varint(d, p, end)
        if tag in (R.CALL, R.C_CALL):
            stack.append(fid)
        elif tag in (R.RETURN, R.C_RETURN):
            if stack:
                stack.pop()
        elif tag in (R.STACK, R.DROP, R.OPEN):
            n, p = R._varint(d, p, end)
            fids = []
            for _ in range(n):
                f, p = R._varint(d, p, end)
                fids.append(f)
            if tag != R.OPEN or not stack:
                stack[:] = fids


def v2_chunks(chunks):
    """Version 1 chunks ([type, flags, thread, records, base, payload], as helpers.chunks_of
    gives them) as a version 2 writer would write them: every events chunk opens with an OPEN
    of the frames open on its thread (a STACK opening a first chunk becomes that OPEN)."""
    R = _pyreader
    stacks = {}
    out = []
    for c in chunks:
        c = list(c)
        if c[0] == 1 and c[5]:
            stack = stacks.setdefault(c[2], [])
            payload = c[5]
            if payload[0] == R.STACK:
                p = 1
                _dt, p = R._varint(payload, p, len(payload))  # 0: written at start_tick
                rest = payload[p:]
                n, q = R._varint(rest, 0, len(rest))
                for _ in range(n):
                    _f, q = R._varint(rest, q, len(rest))
                payload = b"\x0a" + rest  # OPEN: depth and fids, no dt
                c[3] -= 1
            elif payload[0] != R.DROP:
                payload = b"\x0a" + vi(len(stack)) + b"".join(vi(f) for f in stack)
                payload += c[5]
            _frames_of(payload, stack)
            c[5] = payload
        out.append(c)
    return out


def to_v2(data, series=(0, 0, 0)):
    """A version 1 trace's bytes as version 2 (its header and events chunks)."""
    from helpers import chunks_of, from_chunks

    head, chunks = chunks_of(data)
    return from_chunks(v2_header(head, series), v2_chunks(chunks))
