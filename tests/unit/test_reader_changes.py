"""The reader against files that change under it, and paths that are not trace files (issue 8).

The reader used to map the file: a file that shrank under it killed the process with SIGBUS.
These run the reader in a child process where a crash would be one, so a regression fails one
test instead of killing the run."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import zlib

import pytest

import fasttrace
from fasttrace import _pyreader
from helpers import chunk, varint as vi
from formatfiles import CALL, DEFS, RET, built, fdef, same, st


def _child(code, *args):
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                       capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir())
    return r.returncode, r.stdout, r.stderr


@pytest.fixture(scope="module")
def big_trace(tmp_path_factory):
    """A trace of many chunks, so that there is something left to read after a change."""
    path = tmp_path_factory.mktemp("big") / "big.ftrace"

    def work():
        def f(n):
            return n if n < 2 else f(n - 1) + f(n - 2)
        f(27)

    with fasttrace.start(path):
        work()
    assert os.path.getsize(path) > 2 << 20
    return path


@pytest.mark.parametrize("new_size", [0, 0.5])
def test_file_shrinks_while_iterating(tmp_path, big_trace, new_size):
    p = tmp_path / "t.ftrace"
    p.write_bytes(big_trace.read_bytes())
    rc, out, err = _child("""
        import os, sys, fasttrace
        p = sys.argv[1]
        t = fasttrace.load(p)
        it = t.events()
        n = sum(1 for _, e in zip(range(1000), it))
        os.truncate(p, int(os.path.getsize(p) * float(sys.argv[2])))
        try:
            n += sum(1 for _ in it)
            print("no error", n)
        except fasttrace.FormatError as e:
            print("error", n, e)
        """, p, new_size)
    assert rc == 0, err
    assert out.startswith("error 1"), out  # the first 1000 events came before the change
    assert "the file changed after it was loaded" in out


def test_file_shrinks_before_load_finishes_is_a_cut_tail(tmp_path, big_trace):
    # A file cut between the scan's reads looks like a killed writer's file: what was intact
    # loads.  Simulated by cutting it first: the scan never reads beyond the size at open.
    data = big_trace.read_bytes()
    p = tmp_path / "t.ftrace"
    p.write_bytes(data[: len(data) // 3])
    t = fasttrace.load(p)
    assert t.stats.truncated and sum(1 for _ in t.events()) > 0


def test_file_rewritten_in_place_is_detected(tmp_path, big_trace):
    # Same size, other bytes (another trace written over it): every chunk is checked again
    # when it is decoded, so no event of the new content is read as the old file's.
    p = tmp_path / "t.ftrace"
    data = big_trace.read_bytes()
    p.write_bytes(data)
    t = fasttrace.load(p)
    it = t.events()
    next(it)
    garbled = bytearray(data)
    for i in range(len(data) // 2, len(data), 4096):
        garbled[i] ^= 0xFF
    with open(p, "r+b") as f:
        f.write(garbled)
    with pytest.raises(fasttrace.FormatError, match="the file changed after it was loaded"):
        for _ in it:
            pass


@pytest.mark.skipif(os.environ.get("FASTTRACE_SANITIZE") == "1",
                    reason="ASan holds freed memory in quarantine: RSS grows without a leak")
def test_reader_memory_does_not_grow_with_the_file(tmp_path, big_trace):
    rc, out, err = _child("""
        import sys, fasttrace
        def rss():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        before = rss()
        t = fasttrace.load(sys.argv[1])
        it = t.events()
        for _ in it:
            pass
        print(rss() - before)
        """, big_trace)
    assert rc == 0, err
    # a mapped file kept every page it read (the load's scan reads them all) resident; reads
    # go through a 1 MiB window
    assert int(out) < os.path.getsize(big_trace) // 2, out


@pytest.mark.parametrize("make, kind", [
    (lambda d: "/dev/zero", "a character device"),
    (lambda d: str(d), "a directory"),
    (lambda d: (os.mkfifo(d / "fifo"), str(d / "fifo"))[1], "a FIFO (named pipe)"),
])
def test_not_a_regular_file(tmp_path, make, kind):
    path = make(tmp_path)
    for read in (fasttrace.load, _pyreader.read):  # a FIFO with no writer must not block
        with pytest.raises(fasttrace.FormatError) as info:
            read(path)
        assert str(info.value) == f"{path}: byte 0: not a regular file ({kind})"


def test_missing_and_unreadable_files(tmp_path):
    missing = str(tmp_path / "nope.ftrace")
    with pytest.raises(fasttrace.FormatError) as info:
        fasttrace.load(missing)
    assert str(info.value) == f"{missing}: no such file" and info.value.offset is None
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.ftrace"
        locked.write_bytes(b"x")
        locked.chmod(0)
        with pytest.raises(fasttrace.FormatError, match="permission denied"):
            fasttrace.load(locked)


# ---- the end of a trace without a trailer --------------------------------------------------


def test_killed_trace_ends_at_its_last_event(tmp_path):
    # A CLOCK record early on, events long after it, no trailer: the trace lasted until its
    # last event, not until the clock record (a killed trace said 12.6 ms for 150 ms).
    ev = CALL + vi(1) + vi(10) + RET + vi(150_000_000)
    p = built(tmp_path, chunk(3, struct.pack("<3Q", 1000 + 12_600_000, 5000 + 12_600_000, 0)),
              chunk(1, ev, thread=1, records=2, base_tick=1000))
    v = same(p)
    assert v["truncated"]
    assert v["duration_ns"] == 150_000_010 == v["events"][-1][1]


def test_killed_sampled_trace_ends_at_its_last_sample(tmp_path):
    sampling = b"\x14" + vi(1000) + b"\x00" + vi(1024)
    stack = b"\x13" + vi(1) + b"\x00" + vi(1) + vi(1)
    samples = b"".join(b"\x09" + vi(1_000_000) + vi(1) + vi(1) + vi(1000 << 3)
                       for _ in range(150))
    p = built(tmp_path, chunk(2, sampling + stack), chunk(5, samples, records=150,
                                                          base_tick=1000))
    v = same(p)
    assert v["duration_ns"] == 150_000_000
    t = fasttrace.load(p)
    # 150 ticks over 150 ms: the achieved rate is the requested 1000 Hz, not 8605.9 Hz
    assert t.sampling.achieved_rate == pytest.approx(1000, rel=0.01)


# ---- sampling definitions that would divide by zero ----------------------------------------


def test_sampling_rate_zero_is_malformed(tmp_path):
    bad = b"\x14" + vi(0) + b"\x00" + vi(1024)
    p = built(tmp_path, chunk(2, bad))
    for read in (fasttrace.load, _pyreader.read):
        with pytest.raises(fasttrace.FormatError, match="sampling definition with rate 0"):
            read(p)


def test_sampler_stats_before_the_sampling_definition(tmp_path):
    p = built(tmp_path, chunk(2, b"\x15" + vi(2) + vi(5) + vi(5)))
    for read in (fasttrace.load, _pyreader.read):
        with pytest.raises(fasttrace.FormatError, match="before the sampling definition"):
            read(p)


def test_header_strings_survive_the_read_window(tmp_path):
    # A command line longer than the 1 MiB read-ahead window: the header is read in one piece.
    argv = b"python\0" + b"x" * (3 << 20) + b"\0"
    body = (struct.pack("<6I4Qd", 0x030C00F0, 42, 1, 1, 1, 65536, 262144, 1000, 5000, 7, 1e9)
            + st(argv) + st("3.12"))
    hdr = b"\x89FTRACE\n" + struct.pack("<3I", 1, len(body), zlib.crc32(body)) + body
    p = tmp_path / "long.ftrace"
    p.write_bytes(hdr + DEFS + chunk(2, fdef(4, "h")))
    t = fasttrace.load(p)
    assert t.header["argv"] == ["python", "x" * (3 << 20)]
    assert _pyreader.read(p).header["argv"] == t.header["argv"]
