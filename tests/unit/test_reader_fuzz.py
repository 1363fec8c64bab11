"""Fuzzing the trace readers with hypothesis.

Property: loading a file and iterating all its events either succeeds or raises
fasttrace.FormatError, never another exception and never a crash, in the native reader and in
the pure-Python reference reader; and both give the same result (the same events, and the
same error offset and reason).  Every case runs in-process: a crash of the native reader kills
pytest, which is the failure this file exists to catch.

Inputs: byte mutations of a real trace; the same with every checksum fixed up afterwards (so
the header and chunk fields get through to the decoders); mutations of one events/defs chunk's
payload with its crc recomputed; and events chunks made of random records.  Every seed is
there in format version 1 and in version 2 (tests/formatfiles.to_v2: OPEN records first in
every events chunk, the header's series fields), and random records are made for both.  And
rotated series made by splitting a version 2 seed into files, some left out, cut or mutated,
given in any order: both readers load the same files and report the same problems.
"""

from __future__ import annotations

import itertools
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from formatfiles import to_v2, v2_header
from helpers import chunks_of, from_chunks, sample_tuple
from helpers import varint as vi

import fasttrace
from fasttrace import _pyreader


# FASTTRACE_FUZZ_EXAMPLES=20000 for a long run; the default keeps this file around 10 s.
FUZZ = settings(max_examples=int(os.environ.get("FASTTRACE_FUZZ_EXAMPLES", "600")),
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ---- running both readers ---------------------------------------------------------------

def run_native(path):
    events, fns, threads, header = [], None, None, None
    try:
        t = fasttrace.load(path)
        try:
            header = dict(t.header)
            fns = {f.id: (f.name, f.qualname, f.filename, f.lineno, f.module, bool(f.is_c))
                   for f in t.functions}
            threads = {th.id: (th.ident, th.native_id, th.name) for th in t.threads}
            for e in t.events():
                events.append((e.kind, e.ts, e.thread, e.function.id, bool(e.synthetic)))
            for _ in t.events(gaps=True):
                pass
            for s in t.samples():
                events.append(sample_tuple(s))
            err = None
        finally:
            t.close()
    except fasttrace.FormatError as e:
        err = (e.offset, e.reason)
    return header, fns, threads, events, err


def run_python(data):
    events, fns, threads, header = [], None, None, None
    try:
        t = _pyreader.read(data)
        header = t.header
        fns = {i: (f["name"], f["qualname"], f["filename"], f["lineno"], f["module"],
                   f["is_c"]) for i, f in t.functions.items()}
        threads = {i: (th["ident"], th["native_id"], th["name"]) for i, th in t.threads.items()}
        for e in t.events():
            events.append(e)
        for s in t.samples():
            events.append(s)
        err = None
    except fasttrace.FormatError as e:
        err = (e.offset, e.reason)
    return header, fns, threads, events, err


_counter = itertools.count()


def check(data, tmp_dir):
    data = bytes(data)
    py = run_python(data)
    path = tmp_dir / f"fuzz{next(_counter) % 4}.ftrace"
    path.write_bytes(data)
    nat = run_native(str(path))
    if nat[4] is not None:  # the path names the file in native messages only
        assert isinstance(nat[4][0], int)
    assert nat[4] == py[4]
    assert nat[3] == py[3]
    assert nat[:3] == py[:3]


# ---- files ------------------------------------------------------------------------------



# (header bytes, [[type, flags, thread, records, base_tick, payload], ...]) and back
split = chunks_of
join = from_chunks


def fix_crcs(data):
    """Recomputes the header's and every chunk's crc, framing chunks by their size fields."""
    d = bytearray(data)
    if len(d) < 20:
        return bytes(d)
    body = struct.unpack_from("<I", d, 12)[0]
    if 20 + body <= len(d):
        struct.pack_into("<I", d, 16, zlib.crc32(d[20:20 + body]))
    off = 20 + body
    while off + 32 <= len(d):
        size = struct.unpack_from("<I", d, off + 4)[0]
        if off + 32 + size > len(d):
            break
        struct.pack_into("<I", d, off + 8,
                         zlib.crc32(d[off + 32:off + 32 + size], zlib.crc32(d[off + 12:off + 32])))
        off += 32 + size
    return bytes(d)


class Seeds(list):
    def __repr__(self):  # keeps hypothesis' falsifying examples short
        return "<seed traces>"


def small_program():
    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    def gen():
        yield len("ab")
        yield sorted([2, 1])

    import threading
    th = threading.Thread(target=fib, args=(3,))
    th.start()
    th.join()
    fib(4)
    list(gen())


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def seeds(tmp_dir):
    p = tmp_dir / "seed.ftrace"
    with fasttrace.start(str(p)):
        small_program()
    real = p.read_bytes()
    # and a built file with the records real traces rarely have: DROP, orphans, a 2nd clock
    header, chunks = split(real)
    tail = [c for c in chunks if c[0] in (3, 4)]
    defs = [c for c in chunks if c[0] == 2]
    ev = (b"\x07" + vi(0) + vi(2) + vi(1) + vi(2) + b"\x01" + vi(3) + vi(9) + b"\x08" + vi(5)
          + vi(40) + vi(1) + vi(1) + b"\x02" + vi(3) + b"\x05" + vi(2) + vi(1) + b"\x02"
          + vi(1) + b"\x03" + vi(1) + vi(1) + b"\x06" + vi(1) + vi(2))
    base = struct.unpack_from("<Q", real, 52)[0]
    # `built` has version 1 events (a STACK first): a version 1 header (the v2 fields after
    # python_version are bytes a v1 reader ignores; the crc covers the body only)
    v1_header = header[:8] + struct.pack("<I", 1) + header[12:]
    built = join(v1_header, defs + [[1, 0, 1, 9, base, ev], [1, 1, 7, 0, base + 10, b""]] + tail)
    # and a sampled trace: SAMPLES chunks, STACK / SAMPLING / SAMPLER_STATS defs
    sp = tmp_dir / "seed-sampled.ftrace"
    with fasttrace.start(str(sp), rate=2000):
        deadline = time.perf_counter() + 0.05
        while time.perf_counter() < deadline:
            small_program()
    sampled = sp.read_bytes()
    # version 1: the checked-in real traces and `built`; version 2: this build's traces (with
    # series fields set on the sampled one) and `built` made version 2
    data_dir = Path(__file__).resolve().parent.parent / "data"
    v1_real = (data_dir / "v1-trace.ftrace").read_bytes()
    v1_sampled = (data_dir / "v1-sampled.ftrace").read_bytes()
    seeds = [v1_real, built, v1_sampled, real, to_v2(built), sampled]
    for data in seeds:
        assert run_python(data)[4] is None
    assert len(run_python(sampled)[3]) > 10
    return Seeds(seeds)


SEEDS = st.integers(0, 5)  # 0-2 version 1: trace, built, sampled; 3-5 the same in version 2
TRACE_SEEDS = st.sampled_from([0, 1, 3, 4])


def test_seeds_agree(seeds, tmp_dir):
    for data in seeds:
        check(data, tmp_dir)


# ---- strategies -------------------------------------------------------------------------

edit = st.tuples(st.sampled_from(["set", "xor", "insert", "delete", "varint"]),
                 st.integers(0, 1 << 30), st.integers(0, 255), st.integers(0, (1 << 64) - 1))
edits = st.lists(edit, min_size=1, max_size=6)


def apply(data, ops):
    d = bytearray(data)
    for op, pos, byte, big in ops:
        pos = pos % (len(d) + 1)
        if op == "set" and pos < len(d):
            d[pos] = byte
        elif op == "xor" and pos < len(d):
            d[pos] ^= 1 << (byte % 8)
        elif op == "insert":
            d[pos:pos] = bytes([byte])
        elif op == "delete":
            del d[pos:pos + 1 + byte % 4]
        elif op == "varint":
            d[pos:pos + byte % 3] = vi(big >> (byte % 64))
    return bytes(d)


@FUZZ
@given(seed=SEEDS, ops=edits, cut=st.one_of(st.none(), st.integers(0, 1 << 20)))
def test_byte_mutations(seeds, tmp_dir, seed, ops, cut):
    data = apply(seeds[seed], ops)
    check(data[:cut] if cut is not None else data, tmp_dir)


@FUZZ
@given(seed=SEEDS, ops=edits, pad=st.integers(0, 40))
def test_byte_mutations_with_fixed_crcs(seeds, tmp_dir, seed, ops, pad):
    check(fix_crcs(apply(seeds[seed], ops)) + b"\0" * pad, tmp_dir)


@FUZZ
@given(seed=SEEDS, which=st.integers(0, 1000), ops=edits,
       fields=st.lists(st.tuples(st.sampled_from([0, 1, 2, 2, 3, 4, 4]),
                                 st.integers(0, (1 << 64) - 1)),
                       max_size=2))
def test_payload_mutations(seeds, tmp_dir, seed, which, ops, fields):
    header, chunks = split(seeds[seed])
    targets = [c for c in chunks if c[0] in (1, 2, 5)]
    c = targets[which % len(targets)]
    c[5] = apply(c[5], ops)
    for index, value in fields:  # type, flags, thread, records, base_tick
        c[index] = value % (1 << (64 if index == 4 else 32 if index in (2, 3) else 8))
    check(join(header, chunks), tmp_dir)


fid = st.integers(1, 80)  # the seeds define ~90 functions, C ones among them
enter = st.tuples(st.sampled_from([1, 3, 5, 6]), fid, st.integers(0, 1 << 40)).map(
    lambda r: bytes([r[0]]) + vi(r[1]) + vi(r[2]))
leave = st.tuples(st.sampled_from([2, 4]), st.integers(0, 1 << 20)).map(
    lambda r: bytes([r[0]]) + vi(r[1]))
stack = st.tuples(st.integers(0, 1 << 20), st.lists(fid, max_size=5)).map(
    lambda r: b"\x07" + vi(r[0]) + vi(len(r[1])) + b"".join(map(vi, r[1])))
drop = st.tuples(st.integers(0, 1 << 20), st.integers(0, 1 << 20), st.lists(fid, max_size=5)).map(
    lambda r: b"\x08" + vi(r[0]) + vi(r[1]) + vi(len(r[2])) + b"".join(map(vi, r[2])))
opening = st.lists(fid, max_size=5).map(lambda r: b"\x0a" + vi(len(r)) + b"".join(map(vi, r)))
record = st.one_of(enter, enter, enter, leave, leave, leave, drop)
junk = st.one_of(st.binary(min_size=1, max_size=3), st.just(vi(1 << 63)), st.just(b"\x01\x00\x00"),
                 st.integers(13, 1 << 33).map(lambda f: b"\x01" + vi(f) + b"\x00"))


# version 2: what opens an events chunk (mostly what a writer would put there)
first_v2 = st.one_of(opening, opening, opening, drop, st.just(b""), enter, leave, stack)


@FUZZ
@given(seed=TRACE_SEEDS,
       streams=st.lists(st.tuples(st.integers(1, 3), st.integers(0, (1 << 64) - 1),
                                  st.lists(record, max_size=25), first_v2),
                        min_size=1, max_size=4),
       first=st.one_of(st.none(), stack),
       bad=st.one_of(st.none(), st.tuples(st.integers(0, 3), st.integers(0, 25),
                                          st.one_of(junk, opening))),
       keep_tail=st.booleans())
def test_random_records(seeds, tmp_dir, seed, streams, first, bad, keep_tail):
    header, chunks = split(seeds[seed])
    defs = [c for c in chunks if c[0] == 2]
    tail = [c for c in chunks if c[0] in (3, 4)] if keep_tail else []
    v2 = seed >= 3
    streams = [(tid, base, recs) for tid, base, recs, _ in streams] if not v2 else \
        [(tid, base, ([opener] if opener else []) + recs) for tid, base, recs, opener in streams]
    if first is not None and not v2:  # a thread's first chunk may open with a STACK record
        streams[0][2].insert(0, first)
    if bad is not None:  # one malformed record somewhere
        recs = streams[bad[0] % len(streams)][2]
        recs.insert(bad[1] % (len(recs) + 1), bad[2])
    ev = [[1, 0, tid, len(recs), base, b"".join(recs)] for tid, base, recs in streams]
    check(join(header, defs + ev + tail), tmp_dir)


sample = st.tuples(st.integers(0, 1 << 40), st.integers(0, 5), st.integers(0, 40),
                   st.integers(0, 1 << 30)).map(
    lambda r: b"\x09" + vi(r[0]) + vi(r[1]) + vi(r[2]) + vi(r[3]))


@FUZZ
@given(records=st.lists(st.lists(st.one_of(sample, sample, sample, junk), max_size=20),
                        min_size=1, max_size=3),
       base=st.integers(0, (1 << 64) - 1), keep_tail=st.booleans(), seed=st.sampled_from([2, 5]))
# found by this test: a weight of 2**60 us, whose ns overflow a u64, read differently by the two
# readers (the native one wrapped); both saturate now
@example(records=[[b"\t", b"\x00\x01\x00", b"\x80" * 9 + b"\x01"]], base=0, keep_tail=False,
         seed=2)
def test_random_samples(seeds, tmp_dir, records, base, keep_tail, seed):
    header, chunks = split(seeds[seed])
    defs = [c for c in chunks if c[0] == 2]
    tail = [c for c in chunks if c[0] in (3, 4)] if keep_tail else []
    ev = [[5, 0, 0, len(recs), base, b"".join(recs)] for recs in records]
    check(join(header, defs + ev + tail), tmp_dir)


# ---- regressions: huge ids once crashed the native reader or ate all memory ------------
# (run in a subprocess under a 1 GiB address-space limit, so a regression fails one test)

def _native_in_subprocess(data, tmp_dir, name):
    p = tmp_dir / name
    p.write_bytes(data)
    code = (
        "import os, resource, sys, fasttrace\n"
        "if not os.environ.get('FASTTRACE_SANITIZE'):  # ASan needs its huge shadow mappings\n"
        "    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "try:\n"
        "    t = fasttrace.load(sys.argv[1])\n"
        "    n = sum(1 for _ in t.events())\n"
        "except fasttrace.FormatError:\n"
        "    pass\n"
        "print('done')\n"
    )
    # cwd: with `-c` the working directory goes on sys.path, and the repo root would shadow the
    # installed package
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True,
                       timeout=120, cwd=os.path.dirname(str(p)))
    return r.returncode, r.stdout + r.stderr


def _huge_id(seed, where, ident):
    header, chunks = split(seed)
    if where == "chunk":
        chunks = [c[:2] + [ident] + c[3:] if c[0] == 1 else c for c in chunks]
    elif where == "thread_def":
        chunks.insert(0, [2, 0, 0, 0, 0, b"\x11" + vi(ident) + vi(1) + vi(1) + vi(0)])
    else:
        chunks.insert(0, [2, 0, 0, 0, 0, b"\x10" + vi(ident) + b"\0" + vi(1) + vi(1) + b"x"
                          + vi(1) + b"x" + vi(0) + vi(0)])
    return join(header, chunks)


@pytest.mark.parametrize("where, ident", [
    ("chunk", 0xFFFFFFFF), ("chunk", 0x80000000), ("thread_def", 0xFFFFFFFF),
    ("thread_def", 1 << 26), ("function_def", 0xFFFFFFFF), ("function_def", 50_000_000),
])
def test_huge_ids(seeds, tmp_dir, where, ident):
    data = _huge_id(seeds[0], where, ident)
    rc, out = _native_in_subprocess(data, tmp_dir, "huge.ftrace")
    assert rc == 0 and "done" in out, out
    check(data, tmp_dir)


# ---- rotated series ---------------------------------------------------------------------

def run_series(load, paths):
    """What a reader makes of a series: load(paths) is fasttrace.load or read_series."""
    try:
        t = load(paths)
        out = [t.paths, t.series_problems, dict(t.header)]
        if isinstance(t, _pyreader.PySeries):
            out += [sorted(t.functions), t.duration_ns, list(t.events(gaps=True)),
                    list(t.samples())]
        else:
            try:
                out += [sorted(f.id for f in t.functions), t.stats.duration_ns,
                        [(e.kind, e.ts, e.thread, e.dropped, e.start_ts) if e.kind == "gap"
                         else (e.kind, e.ts, e.thread, e.function.id, bool(e.synthetic))
                         for e in t.events(gaps=True)],
                        [sample_tuple(s) for s in t.samples()]]
            finally:
                t.close()
        return out
    except fasttrace.FormatError as e:
        return [("error", e.path, e.offset, e.reason)]


@FUZZ
@given(seed=st.sampled_from([3, 4, 5]), cuts=st.lists(st.integers(0, 1000), min_size=1,
                                                     max_size=3),
       keep=st.lists(st.sampled_from([True, True, True, False]), min_size=4, max_size=4),
       trailers=st.lists(st.booleans(), min_size=4, max_size=4),
       order=st.permutations(range(4)), stranger=st.integers(0, 5),
       damage=st.one_of(st.none(), st.tuples(st.integers(0, 3), edits, st.booleans())))
def test_random_series(seeds, tmp_dir, seed, cuts, keep, trailers, order, stranger, damage):
    header, chunks = split(seeds[seed])
    defs = [c for c in chunks if c[0] == 2]
    body = [c for c in chunks if c[0] in (1, 3, 5)]
    tail = [c for c in chunks if c[0] == 4]
    points = sorted({c % (len(body) + 1) for c in cuts})
    parts = [body[a:b] for a, b in zip([0] + points, points + [len(body)])]
    directory = tmp_dir / f"series{next(_counter) % 4}"
    directory.mkdir(exist_ok=True)
    for old in directory.iterdir():
        old.unlink()
    paths = []
    for k, part in enumerate(parts):
        sid = 99 if k == stranger else 7  # a file of another series
        data = join(v2_header(header, (k + 1, sid, 2)), defs + part
                    + (tail if trailers[k] else []))
        if damage is not None and damage[0] == k:
            data = apply(data, damage[1])
            if damage[2]:
                data = fix_crcs(data)
        path = directory / f"s.{k}.ftrace"
        path.write_bytes(data)
        paths.append(str(path))
    chosen = [paths[i] for i in order if i < len(paths) and keep[i]] or paths[:1]
    nat = run_series(fasttrace.load, chosen)
    event("error" if isinstance(nat[0], tuple) else
          f"loaded {len(nat[0])} file(s), {len(nat[1])} problem(s)")
    assert nat == run_series(_pyreader.read_series, chosen)
    if len(chosen) == 1:  # one of them: the others are found beside it
        assert run_series(fasttrace.load, chosen[0]) == \
            run_series(_pyreader.read_series, chosen[0])
