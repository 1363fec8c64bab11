"""Helpers shared by the tests (imported as `helpers`, tests/ is on pythonpath)."""

from __future__ import annotations

import os
import struct
import subprocess
import threading
import sys
import textwrap
import zlib
from pathlib import Path

# Building .ftrace bytes by hand (src/FORMAT.md), for format and fuzz tests.
MAGIC = b"\x89FTRACE\n"
CHUNK_MAGIC = 0x4B435446


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def chunk(ctype, payload, thread=0, records=0, base_tick=0, flags=0):
    """A chunk with a correct crc32."""
    tail = struct.pack("<BBHIIQ", ctype, flags, 0, thread, records, base_tick)
    crc = zlib.crc32(payload, zlib.crc32(tail))
    return struct.pack("<3I", CHUNK_MAGIC, len(payload), crc) + tail + payload


def span(trace, qualname, thread=None):
    """(kind, qualname) from the first call of `qualname` to its matching return, inclusive."""
    out = []
    depth = 0
    for e in trace.events(thread):
        if not out:
            if e.kind == "call" and e.function.qualname == qualname and not e.synthetic:
                out.append((e.kind, qualname))
                depth = 1
            continue
        out.append((e.kind, e.function.qualname))
        depth += 1 if e.kind in ("call", "c_call") else -1
        if depth == 0:
            return out
    raise AssertionError(f"no complete span of {qualname!r}; got {out}")


def traced(path, program, **options):
    """Runs program() under fasttrace.start(path, **options); returns the loaded trace."""
    import fasttrace

    with fasttrace.start(path, **options):
        program()
    return fasttrace.load(path)


def load_cut(src, dest, keep):
    """Writes the first `keep` bytes of trace `src` to `dest` (a float keeps that share of the
    file, a negative int drops that many bytes from its end) and loads the result."""
    import fasttrace

    data = Path(src).read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    Path(dest).write_bytes(data[:n])
    return fasttrace.load(dest)


def fasttrace_cli(cwd, *args, timeout=60):
    """`python -m fasttrace ARGS` in `cwd`; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "fasttrace", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


def run_script(tmp_path: Path, source: str, *args: str, timeout: float = 60, env=None):
    """Runs `source` as a script in a fresh interpreter; returns the CompletedProcess."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env=full_env,
    )


def trace_with_drops(tmp_path: Path, work):
    """Traces work() into a FIFO that nobody reads until work() returns: the writer thread
    blocks, the smallest ring fills and the program goes on dropping.  Returns the loaded
    trace and stop()'s summary."""
    import fasttrace
    from fasttrace._tracer import MIN_BUFFER_SIZE

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    data = bytearray()
    release = threading.Event()

    def drain():
        fd = os.open(fifo, os.O_RDONLY)
        release.wait()
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            data.extend(chunk)
        os.close(fd)

    reader = threading.Thread(target=drain)
    reader.start()
    fasttrace.start(fifo, buffer_size=MIN_BUFFER_SIZE)
    try:
        work()
    finally:
        release.set()
        summary = fasttrace.stop()
        reader.join()
    assert summary.dropped > 0, "the ring never filled"
    path = tmp_path / "dropped.ftrace"
    path.write_bytes(bytes(data))
    return fasttrace.load(path), summary


def sample_tuple(s):
    """A native Sample as fasttrace._pyreader yields it: (ts, thread, function ids root first,
    state bits, weight_us)."""
    state = (1 if s.idle else 0) | (2 if s.in_call else 0) | (4 if s.torn else 0)
    return (s.ts, s.thread, tuple(f.id for f in s.stack), state, s.weight_ns // 1000)
