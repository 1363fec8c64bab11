"""The .ftrace format (src/FORMAT.md): the native reader against the pure-Python reference
reader on real traces and on hand-built files, and how damaged files are handled."""

from __future__ import annotations

import asyncio
import random
import struct
import subprocess
import tempfile
import sys
import threading
import time

import pytest

from formatfiles import (CALL, CCALL, CRET, DEFS, DROP, OCRET, ORET, RET, STACK, built, by_thread,
                         check_nesting, clock, fdef, header, native_view, outcome, py_view, same,
                         st, tdef, trailer)
from helpers import chunk
from helpers import varint as vi

import fasttrace
from fasttrace import _core, _pyreader



# ---- traced programs --------------------------------------------------------------------

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def gen(n):
    for i in range(n):
        yield i


def raiser():
    raise ValueError("x")


def catcher():
    try:
        raiser()
    except ValueError:
        pass


class Box:
    def __init__(self):
        self.items = []

    def add(self, x):
        self.items.append(x)
        return len(self.items)


def basic():
    fib(6)
    list(gen(3))
    g = gen(5)
    next(g)
    g.close()
    catcher()
    b = Box()
    for i in range(3):
        b.add(i)
    sorted([3, 1, 2], key=abs)
    {}.get(1)


async def leaf(x):
    await asyncio.sleep(0)
    return x


async def main_coro():
    return sum(await asyncio.gather(leaf(1), leaf(2)))


def coroutines():
    asyncio.run(main_coro())


def threads():
    ts = [threading.Thread(target=fib, args=(8,), name=f"worker-{i}") for i in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def many_calls():
    for _ in range(30):
        fib(12)  # ~14k calls: several 64 KiB chunks


def slow():
    fib(3)
    time.sleep(0.3)  # the writer adds a CLOCK chunk every 250 ms
    fib(3)


PROGRAMS = [basic, coroutines, threads, many_calls]


def trace(path, fn, **kw):
    with fasttrace.start(str(path), **kw):
        fn()
    return str(path)


@pytest.fixture(scope="module")
def basic_trace(tmp_path_factory):
    return trace(tmp_path_factory.mktemp("fmt") / "basic.ftrace", basic)


def chunk_offsets(data):
    body_size = struct.unpack_from("<I", data, 12)[0]
    off, out = 20 + body_size, []
    while off + 32 <= len(data):
        size, ctype = struct.unpack_from("<I", data, off + 4)[0], data[off + 12]
        out.append((off, ctype, size))
        off += 32 + size
    return out


# ---- real traces: both readers agree ----------------------------------------------------

def expected_hook(c_calls, forced):
    plain = "monitoring" if _core.USE_MONITORING else "profile"
    return "eval_frame" if _core.HAS_EVAL_FRAME and not c_calls and not forced else plain


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("c_calls", [True, False], ids=["c_calls", "no_c_calls"])
@pytest.mark.parametrize("force_profile", [False, True] if _core.HAS_EVAL_FRAME else [False],
                         ids=["default_hook", "plain_hook"][:1 + _core.HAS_EVAL_FRAME])
def test_readers_agree(tmp_path, monkeypatch, program, c_calls, force_profile):
    if force_profile:  # 3.11, 3.12: the plain hook instead of the PEP 523 one
        monkeypatch.setenv("FASTTRACE_HOOK", "monitoring" if _core.USE_MONITORING else "profile")
    else:
        monkeypatch.delenv("FASTTRACE_HOOK", raising=False)
    v = same(trace(tmp_path / "t.ftrace", program, c_calls=c_calls))
    assert v["complete"] and not v["truncated"]
    assert v["header"]["c_calls"] is c_calls
    assert v["header"]["hook"] == expected_hook(c_calls, force_profile)
    assert v["header"]["format_version"] == _core.FORMAT_VERSION
    assert v["header"]["pid"] > 0 and v["header"]["tick_hz"] > 0
    check_nesting(v["events"])
    names = {f["name"] for f in v["functions"].values()}
    assert program.__name__ in names
    if c_calls:
        # many_calls calls no C function; the C functions fasttrace's own start() and stop()
        # call are not defined (they are not recorded)
        assert any(f["is_c"] for f in v["functions"].values()) is (program is not many_calls)
    else:
        assert not any(f["is_c"] for f in v["functions"].values())
        assert not any(e[0].startswith("c_") for e in v["events"])


def test_readers_agree_with_clock_chunks(tmp_path):
    p = trace(tmp_path / "t.ftrace", slow)
    data = open(p, "rb").read()
    assert sum(1 for _, ctype, _ in chunk_offsets(data) if ctype == 3) >= 2
    v = same(p)
    assert v["duration_ns"] >= 300_000_000


def test_threads_and_snapshot(tmp_path):
    """A thread already inside Python code at start() opens with a STACK record."""
    go = threading.Event()

    def waiting():
        go.wait()
        fib(3)

    th = threading.Thread(target=waiting, name="early")
    th.start()
    try:
        with fasttrace.start(str(tmp_path / "t.ftrace")):
            go.set()
            th.join()
            threads()
    finally:
        go.set()
        th.join()
    v = same(str(tmp_path / "t.ftrace"))
    check_nesting(v["events"])
    names = {t["name"] for t in v["threads"].values()}
    assert {"MainThread", "early", "worker-0", "worker-1", "worker-2"} <= names
    early = next(i for i, t in v["threads"].items() if t["name"] == "early")
    evs = [e for e in v["events"] if e[2] == early]
    assert evs[0][4] and evs[0][0] == "call" and evs[0][1] == 0  # synthetic, at start


def a_few_calls():
    fib(3)
    list(gen(2))


def restart(path):
    a_few_calls()
    fasttrace.stop()
    fasttrace.start(path, c_calls=False)


def test_restart_inside_a_traced_frame(tmp_path):
    fasttrace.start(str(tmp_path / "a.ftrace"), c_calls=False)
    a_few_calls()
    restart(str(tmp_path / "b.ftrace"))
    fasttrace.stop()
    same(str(tmp_path / "a.ftrace"))
    v = same(str(tmp_path / "b.ftrace"))
    names = [(e[0], v["functions"][e[3]]["name"]) for e in v["events"] if not e[4]]
    assert ("return", "restart") in names


def test_generator_semantics(tmp_path):
    def run():
        list(gen(2))
    v = same(trace(tmp_path / "t.ftrace", run, c_calls=False))
    fid = next(i for i, f in v["functions"].items() if f["name"] == "gen")
    seq = [e[0] for e in v["events"] if e[3] == fid]
    # first run + one resume per item + the final resume that returns: one pair each
    assert seq == ["call", "return"] * 3


# ---- hand-built files: exact semantics --------------------------------------------------


def test_built_semantics(tmp_path):
    # thread 1: STACK [f]; g called; C call; gap (3 dropped) resuming in [f, g]; both return;
    # an orphan return; a return with nothing open (ignored); a call left open at the end.
    ev1 = (STACK + vi(0) + vi(1) + vi(1) + CALL + vi(2) + vi(10) + CCALL + vi(3) + vi(5)
           + CRET + vi(5) + DROP + vi(3) + vi(100) + vi(2) + vi(1) + vi(2) + RET + vi(10)
           + RET + vi(10) + ORET + vi(2) + vi(1) + RET + vi(1) + CALL + vi(1) + vi(1))
    ev2 = OCRET + vi(3) + vi(7) + CALL + vi(2) + vi(3)  # thread 2 has no THREAD def
    p = built(tmp_path, chunk(1, ev1, thread=1, records=12, base_tick=1000),
              chunk(1, ev2, thread=2, records=2, base_tick=1500), trailer(3000, 7000))
    v = same(p)
    assert v["threads"][2] == {"ident": None, "native_id": None, "name": "thread-2"}
    assert v["threads"][1]["name"] == "main"
    assert v["functions"][3]["is_c"] and v["functions"][2]["qualname"] == "Q.g"
    assert v["events"] == [
        ("call", 0, 1, 1, True),
        ("call", 10, 1, 2, False),
        ("c_call", 15, 1, 3, False),
        ("c_return", 20, 1, 3, False),
        ("return", 20, 1, 2, True), ("return", 20, 1, 1, True),  # closed at the gap's start
        ("call", 120, 1, 1, True), ("call", 120, 1, 2, True),    # reopened at its end
        ("return", 130, 1, 2, False),
        ("return", 140, 1, 1, False),
        ("return", 141, 1, 2, False),  # orphan
        ("call", 143, 1, 1, False),
        ("c_return", 507, 2, 3, False),
        ("call", 510, 2, 2, False),
        ("return", 2000, 1, 1, True),  # open at the end: closed at the trailer's stop tick
        ("return", 2000, 2, 2, True),
    ]


def test_built_clock_rate(tmp_path):
    ev = CALL + vi(1) + vi(1000) + RET + vi(1000)
    chunks = [chunk(1, ev, thread=1, records=2, base_tick=1000)]
    # no clock pair: 1e9 / tick_hz = 0.5 ns per tick
    v = same(built(tmp_path, *chunks, hdr=header(tick_hz=2e9)))
    assert [e[1] for e in v["events"]] == [500, 1000] and v["truncated"]
    # a pair under 1 ms of ticks is ignored; the last qualifying pair (in file order) wins
    v = same(built(tmp_path, clock(1000 + 10, 5000 + 30),
                   clock(1000 + 4_000_000, 5000 + 12_000_000),
                   *chunks, clock(1000 + 8_000_000, 5000 + 8_000_000),
                   hdr=header(tick_hz=2e9)))
    assert [e[1] for e in v["events"]] == [1000, 2000]
    assert v["duration_ns"] == 8_000_000  # the largest clock tick, without a trailer
    # the span must be over 1 ms of ticks (2e6 at 2 GHz): exactly 1 ms is not enough
    v = same(built(tmp_path, clock(1000 + 2_000_000, 5000 + 4_000_000), *chunks,
                   hdr=header(tick_hz=2e9)))
    assert [e[1] for e in v["events"]] == [500, 1000]
    v = same(built(tmp_path, clock(1000 + 2_000_001, 5000 + 2_000_001), *chunks,
                   hdr=header(tick_hz=2e9)))
    assert [e[1] for e in v["events"]] == [1000, 2000]


def test_built_c_frames_and_wide_varints(tmp_path):
    # STACK and DROP frames of C functions reopen as c_call and close as c_return; a 10-byte
    # varint drops the bits above 64.
    ev = (STACK + vi(0) + vi(2) + vi(1) + vi(3) + DROP + vi(1) + vi((1 << 64) + 5) + vi(1)
          + vi(3))
    v = same(built(tmp_path, chunk(1, ev, thread=1, records=2, base_tick=1000),
                   trailer(1100, 5100)))
    assert v["events"] == [
        ("call", 0, 1, 1, True), ("c_call", 0, 1, 3, True),
        ("c_return", 0, 1, 3, True), ("return", 0, 1, 1, True),
        ("c_call", 5, 1, 3, True),
        ("c_return", 100, 1, 3, True),
    ]


def test_built_thread_names_and_padding(tmp_path):
    defs2 = chunk(2, b"\x12" + vi(1) + st("renamed") + b"\x12" + vi(9) + st("nobody")
                  + b"\x12" + vi(1) + st("") + tdef(4))
    p = built(tmp_path, defs2, trailer(1000, 5000), b"\0" * 100)
    v = same(p)
    assert v["threads"] == {1: {"ident": 101, "native_id": 201, "name": "renamed"},
                            4: {"ident": 104, "native_id": 204, "name": "thread-4"}}
    assert v["complete"] and not v["truncated"]


@pytest.mark.parametrize("payload, where", [
    (b"\x09", 0), (b"\x00", 0),                                       # unknown tags
    (CALL + vi(1) + vi(1) + CALL + vi(77) + vi(1), 3),                # undefined fid
    (CALL + vi(1) + vi(1) + STACK + vi(0) + vi(1) + vi(2), 3),        # STACK with frames open
    (CALL + vi(1), 0), (CALL + b"\x81", 0), (DROP + b"\x80", 0),     # record past the end
    (STACK + vi(0) + vi(5) + vi(1), 0),                               # depth past the end
    (DROP + vi(1) + vi(1) + vi(1) + vi(0), 0),                        # fid 0
    (RET + b"\xff" * 10 + b"\x01", 0),                                # varint over 10 bytes
])
def test_built_bad_events(tmp_path, payload, where):
    p = built(tmp_path, chunk(1, CALL + vi(1) + vi(1), thread=1, records=1),
              chunk(1, payload, thread=1, records=1), trailer(2000, 6000))
    data = open(p, "rb").read()
    off = chunk_offsets(data)[2][0] + 32 + where
    for reader in (lambda: native_view(p)["events"], lambda: list(_pyreader.read(p).events())):
        with pytest.raises(fasttrace.FormatError) as ei:
            reader()
        assert ei.value.offset == off and f"byte {off}" in str(ei.value)
    assert outcome(native_view, p) == outcome(py_view, p)


@pytest.mark.parametrize("payload", [
    b"\x13", fdef(0, "z"), fdef(1, "again"), fdef(1 << 32, "big"), b"\x10" + vi(5),
    b"\x11" + vi(2) + vi(1), b"\x12" + vi(1) + vi(9) + b"ab",
    fdef(3 + 1 + 64 + 1, "far"), tdef(1 + 64 + 1), fdef(1 << 31, "far"), tdef(0xFFFFFFFF),
])
def test_built_bad_defs(tmp_path, payload):
    p = built(tmp_path, chunk(2, payload), trailer(1000, 5000))
    nat, py = outcome(native_view, p), outcome(py_view, p)
    assert nat[0] == "error" and nat == py


def test_built_id_limits(tmp_path):
    """Ids are dense: up to 64 may be skipped (FORMAT.md section 5)."""
    p = built(tmp_path, chunk(2, fdef(3 + 1 + 64, "far") + tdef(1 + 64)),
              chunk(1, CALL + vi(68) + vi(1), thread=2 + 64), trailer(1000, 5000))
    v = same(p)
    assert 68 in v["functions"] and set(v["threads"]) == {1, 65, 66}


@pytest.mark.parametrize("make, offset", [
    (lambda: chunk(1, b"", thread=0), None),            # events chunk without a thread
    (lambda: chunk(1, b"", thread=66), None),           # thread id out of sequence
    (lambda: chunk(1, b"", thread=0xFFFFFFFF), None),
    (lambda: chunk(3, b"\0" * 23), None),               # clock too short
    (lambda: chunk(4, b"\0" * 55), None),               # trailer too short
    (lambda: chunk(9, b""), None),                      # unknown type
    (lambda: b"FTCX" + b"\1" * 40, None),               # bad magic
])
def test_built_bad_chunks(tmp_path, make, offset):
    p = built(tmp_path, make())
    off = len(header()) + len(DEFS)
    nat, py = outcome(native_view, p), outcome(py_view, p)
    assert nat[:2] == ("error", off) and nat == py


# ---- corruption of real traces ----------------------------------------------------------

def write(tmp_path, data, name="bad.ftrace"):
    p = tmp_path / name
    p.write_bytes(bytes(data))
    return str(p)


def expect_error(path, offset=None, contains=""):
    with pytest.raises(fasttrace.FormatError) as ei:
        native_view(path)
    e = ei.value
    assert f"byte {e.offset}" in str(e) and contains in str(e)
    if offset is not None:
        assert e.offset == offset
    with pytest.raises(fasttrace.FormatError) as pi:
        py_view(path)
    assert (pi.value.offset, pi.value.reason) == (e.offset, e.reason)
    return e


def test_empty_file(tmp_path):
    expect_error(write(tmp_path, b""), 0, "empty")


def test_random_bytes(tmp_path):
    rng = random.Random(1)
    for n in (1, 7, 8, 19, 20, 100, 5000):
        expect_error(write(tmp_path, bytes(rng.randrange(256) for _ in range(n))), 0, "magic")


def test_wrong_magic(tmp_path, basic_trace):
    data = bytearray(open(basic_trace, "rb").read())
    data[1:7] = b"FTRACX"
    expect_error(write(tmp_path, data), 0, "magic")


@pytest.mark.parametrize("version", [3, 0, 0xFFFFFFFF])
def test_other_format_version(tmp_path, basic_trace, version):
    data = bytearray(open(basic_trace, "rb").read())
    struct.pack_into("<I", data, 8, version)
    e = expect_error(write(tmp_path, data), 8, f"version {version}")
    assert "reads versions 1 to 2" in str(e)
    assert ("upgrade" in str(e)) is (version > 2)


def test_header_bit_flip(tmp_path, basic_trace):
    data = bytearray(open(basic_trace, "rb").read())
    data[30] ^= 0x10
    expect_error(write(tmp_path, data), 20, "checksum")


def test_truncation(tmp_path, basic_trace):
    data = open(basic_trace, "rb").read()
    full = native_view(basic_trace)
    chunks = chunk_offsets(data)
    first = chunks[0][0]
    cuts = set(range(0, first + 1))  # every cut of the header
    for off, _, size in chunks:
        cuts |= {off - 1, off + 1, off + 12, off + 31, off + 32, off + 33, off + 32 + size // 2}
    cuts |= set(random.Random(2).sample(range(first, len(data)), min(60, len(data) - first)))
    for cut in sorted(c for c in cuts if 0 <= c < len(data)):
        p = write(tmp_path, data[:cut])
        if cut < first:
            e = expect_error(p)
            assert e.offset <= cut
            continue
        v = same(p)
        assert v["truncated"], cut
        check_nesting(v["events"])
        whole = by_thread(full["events"])
        for tid, evs in by_thread(v["events"]).items():
            k = len(evs)
            while k and evs[k - 1][4] and evs[k - 1][0] in ("return", "c_return"):
                k -= 1  # the synthetic returns that close what the cut left open
            strip = [(e[0], e[3], e[4]) for e in evs[:k]]
            assert strip == [(e[0], e[3], e[4]) for e in whole[tid][:k]], (cut, tid)


def test_damaged_tail_message(tmp_path, basic_trace):
    data = open(basic_trace, "rb").read()
    t = fasttrace.load(write(tmp_path, data[:-10]))
    assert t.stats.truncated and "damaged tail" in t.damage
    t.close()
    assert _pyreader.read(data[:-10]).damage == t.damage


@pytest.mark.parametrize("ctype", [1, 2, 3, 4], ids=["events", "defs", "clock", "trailer"])
@pytest.mark.parametrize("where", ["payload", "header"])
def test_chunk_bit_flip(tmp_path, basic_trace, ctype, where):
    data = bytearray(open(basic_trace, "rb").read())
    off, _, size = next(c for c in chunk_offsets(data) if c[1] == ctype)
    pos = off + 32 + size // 2 if where == "payload" else off + 16  # the thread field
    data[pos] ^= 0x04
    expect_error(write(tmp_path, data), off, "checksum")


def test_trailing_zero_bytes(tmp_path, basic_trace):
    data = open(basic_trace, "rb").read()
    full = native_view(basic_trace)
    for n in (1, 31, 32, 33, 4096):
        v = same(write(tmp_path, data + b"\0" * n))
        assert not v["truncated"] and v["events"] == full["events"]


def test_trailing_garbage(tmp_path, basic_trace):
    data = open(basic_trace, "rb").read()
    expect_error(write(tmp_path, data + b"\0" * 40 + b"\1"), len(data), "magic")
    v = same(write(tmp_path, data + b"\1" * 10))  # too short for a chunk header: a cut tail
    assert v["truncated"]


def test_python_reader_accepts_bytes(basic_trace):
    data = open(basic_trace, "rb").read()
    assert py_view(data) == py_view(basic_trace)
    with pytest.raises(fasttrace.FormatError):
        _pyreader.read(data[:10])


@pytest.mark.skipif(sys.platform != "linux", reason="linux only")
def test_missing_file(tmp_path):
    p = str(tmp_path / "nope.ftrace")
    assert outcome(native_view, p) == outcome(py_view, p)


def _run(code, *args):
    # cwd: with `-c` the working directory goes on sys.path, and the repo root would shadow the
    # installed package
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       timeout=60, cwd=tempfile.gettempdir())
    return r.returncode, r.stdout + r.stderr


def test_events_after_close(basic_trace):
    rc, out = _run(
        "import sys, fasttrace\n"
        "t = fasttrace.load(sys.argv[1])\n"
        "t.close()\n"
        "try:\n"
        "    next(t.events())\n"
        "except Exception as e:\n"
        "    print(type(e).__name__)\n"
        "print('done')\n", basic_trace)
    assert rc == 0 and "done" in out, out


def test_close_after_iterating(tmp_path, basic_trace):
    t = fasttrace.load(basic_trace)
    it = t.events()
    n = sum(1 for _ in it)
    t.close()  # `it` is exhausted: nothing needs the mapping any more
    assert n > 0
