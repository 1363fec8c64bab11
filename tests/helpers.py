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


def trace_with_drops(tmp_path: Path, work, pace=None, **options):
    """Traces work() into a FIFO that nobody reads until work() returns: the writer thread
    blocks, the smallest ring fills and the program goes on dropping.  With `pace` (seconds),
    the FIFO is read from the start, a chunk each `pace`: slower than the program writes, so
    gaps begin and end while it runs.  Returns the loaded trace and stop()'s summary.
    `options` go to start()."""
    import fasttrace
    from fasttrace._tracer import MIN_BUFFER_SIZE

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    data = bytearray()
    release = threading.Event()

    def drain():
        fd = os.open(fifo, os.O_RDONLY)
        if pace is None:
            release.wait()
        while True:
            chunk = os.read(fd, 1 << 20 if pace is None else 64 << 10)
            if not chunk:
                break
            data.extend(chunk)
            if pace is not None and not release.is_set():
                release.wait(pace)
        os.close(fd)

    reader = threading.Thread(target=drain)
    reader.start()
    fasttrace.start(fifo, buffer_size=MIN_BUFFER_SIZE, **options)
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


# Taking real traces apart and putting them back together with correct checksums, for tests of
# damaged files (src/FORMAT.md sections 1-3).

def chunks_of(data):
    """(header bytes, [[type, flags, thread, records, base_tick, payload], ...]) of a trace;
    a cut last chunk keeps what is there of its payload."""
    first = 20 + struct.unpack_from("<I", data, 12)[0]
    off, chunks = first, []
    while off + 32 <= len(data):
        _m, size, _crc, ctype, flags, _r, thread, records, base = struct.unpack_from(
            "<IIIBBHIIQ", data, off)
        chunks.append([ctype, flags, thread, records, base, data[off + 32:off + 32 + size]])
        off += 32 + size
    return data[:first], chunks


def from_chunks(header, chunks):
    """The inverse of chunks_of(), every chunk crc computed (the header is kept as it is)."""
    return bytes(header) + b"".join(chunk(c[0], c[5], c[2], c[3], c[4], c[1]) for c in chunks)


def fix_header_crc(data):
    """data with the header body's crc32 recomputed (when the header is all there)."""
    d = bytearray(data)
    if len(d) >= 20:
        body = struct.unpack_from("<I", d, 12)[0]
        if 20 + body <= len(d):
            struct.pack_into("<I", d, 16, zlib.crc32(d[20:20 + body]))
    return bytes(d)


# A small deterministic call tree (top -> mid -> leaf), for programs whose traces are compared
# event for event; a test program's source begins with it.
CALL_TREE = textwrap.dedent("""
    def leaf(i):
        return i * 2

    def mid(i):
        return leaf(i) + leaf(i + 1)

    def top(n):
        return sum([mid(i) for i in range(n)])
""")


def with_bad_record(data, ctype):
    """A copy of trace `data` whose first chunk of type `ctype` (1 EVENTS, 5 SAMPLES) opens with
    a record the readers only reject while iterating: a call of an undefined function, or an
    unknown sample tag.  The chunk's crc is correct, so the damage passes load()."""
    header, chunks = chunks_of(data)
    c = next(c for c in chunks if c[0] == ctype)
    bad = b"\x01" + varint(100_000) + varint(0) if ctype == 1 else b"\xfb"
    c[3] += 1
    at = _open_record_end(c[5]) if ctype == 1 else 0  # version 2: after the chunk's OPEN
    c[5] = c[5][:at] + bad + c[5][at:]
    return from_chunks(header, chunks)


def _open_record_end(payload):
    """The end of the OPEN record (tag 0x0A, varint depth, depth varints) a version 2 events
    chunk begins with; 0 when it begins with something else."""
    from fasttrace._pyreader import _varint

    if not payload or payload[0] != 0x0A:
        return 0
    depth, pos = _varint(payload, 1, len(payload))
    for _ in range(depth):
        _, pos = _varint(payload, pos, len(payload))
    return pos


def cli_in_process(*args):
    """`fasttrace ARGS` (not `run`) through fasttrace.cli.main in this process, with stdout
    and stderr captured: (exit code, stdout, stderr).  An exception that escapes main() is the
    traceback the command line would have shown: it propagates."""
    import contextlib
    import io

    from fasttrace.cli import main

    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace")
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 1
    out.flush()
    err.flush()
    return (code, out.buffer.getvalue().decode("utf-8", "replace"),
            err.buffer.getvalue().decode("utf-8", "replace"))


def build_extension(directory, name, source):
    """Compiles C `source` into the extension module `name` in `directory` with the C compiler
    CPython was built with, and returns the directory (for sys.path).  For tests that need a
    real second native tool (another PEP 523 frame evaluator, say), not a stand-in of ours."""
    import sysconfig

    directory = Path(directory)
    c = directory / f"{name}.c"
    c.write_text(textwrap.dedent(source))
    cc = (sysconfig.get_config_var("CC") or "cc").split()
    out = directory / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
    subprocess.run([*cc, "-shared", "-fPIC", "-O1", f"-I{sysconfig.get_paths()['include']}",
                    str(c), "-o", str(out)], check=True, capture_output=True, timeout=120)
    return directory


def serve_gunicorn(argv, cwd, env, per_worker=4, workers=2, timeout=60):
    """Runs gunicorn (`argv`, which binds 127.0.0.1:0: the port is read from its log) until
    each of its `workers` workers has served `per_worker` requests of "/" (whose response is
    the worker's pid), then stops it with SIGTERM.  Returns (its pid, its log, {worker pid:
    requests served}).  A gunicorn that does not start or stop in time fails the test."""
    import collections
    import re
    import signal
    import time
    import urllib.request

    import pytest

    log = Path(cwd) / "gunicorn.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)  # to kill all of it, if it hangs
    served = collections.Counter()
    try:
        deadline = time.monotonic() + timeout
        port = None
        while port is None or log.read_text().count("Booting worker with pid") < workers:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            m = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", log.read_text())
            port = int(m[1]) if m else None
            time.sleep(0.1)

        def get():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
                served[int(r.read())] += 1

        # Several at a time: a sync worker serves one request at a time, so all get some.
        while len(served) < workers or min(served.values()) < per_worker:
            assert time.monotonic() < deadline, (served, log.read_text())
            threads = [threading.Thread(target=get) for _ in range(workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"gunicorn did not stop on SIGTERM: {log.read_text()}")
    return proc.pid, log.read_text(), dict(served)


def http_get(url, timeout=60):
    """(status, body) of GET url; an HTTP error status is returned, not raised."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
