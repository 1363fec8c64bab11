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

def native_view(path):
    t = fasttrace.load(path)
    try:
        events = []
        for e in t.events():  # a plain loop: no comprehension frame keeps the iterator alive
            events.append((e.kind, e.ts, e.thread, e.function.id, bool(e.synthetic)))
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
            "complete": t._file.complete,
            "duration_ns": t.stats.duration_ns,
            "events": events,
            "samples": samples,
            "sampling": t._file.sampling,
            "stacks": [tuple(f.id for f in st) for st in t._file.stacks],
        }
    finally:
        t.close()



def py_view(source):
    t = _pyreader.read(source)
    return {"header": t.header, "functions": t.functions, "threads": t.threads,
            "truncated": t.truncated, "complete": t.complete, "duration_ns": t.duration_ns,
            "events": list(t.events()), "samples": list(t.samples()),
            "sampling": t.sampling, "stacks": t.stacks}


def outcome(view, source):
    try:
        return ("ok", view(source))
    except fasttrace.FormatError as e:
        return ("error", e.offset, e.reason)


def same(path):
    """Both readers agree on everything; returns the native view."""
    nat, py = native_view(path), py_view(path)
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


def header(version=1, tick_hz=1e9, start_tick=1000, start_mono=5000, clock_kind=1):
    body = (struct.pack("<6I4Qd", 0x030C00F0, 42, 1, 1, clock_kind, 65536, 262144, start_tick,
                        start_mono, 7, tick_hz) + st(b"python\0-c\0") + st("3.12"))
    return MAGIC + struct.pack("<3I", version, len(body), zlib.crc32(body)) + body



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


def built(tmp_path, *chunks, hdr=None):
    p = tmp_path / "b.ftrace"
    p.write_bytes((hdr or header()) + DEFS + b"".join(chunks))
    return str(p)
