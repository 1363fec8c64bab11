"""The checked-in format version 1 files (tests/data/v1-*.ftrace) and what they decode to.

They were written by the last writer of version 1; tests/unit/test_v1_files.py checks that
both readers still decode them exactly as the readers of that time did (tests/data/
v1-expected.json).  Recorded once, with a build that writes version 1:

    python tests/v1data.py record tests/data

(run from a directory where the source tree does not shadow the installed package, giving
the path of this file and of tests/data).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
TRACE, SAMPLED, EXPECTED = "v1-trace.ftrace", "v1-sampled.ftrace", "v1-expected.json"


def _fib(n):
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)


def _program(go):
    def gen():
        yield len("ab")
        yield sorted([2, 1])

    t = threading.Thread(target=_fib, args=(6,), name="worker")
    t.start()
    go.set()  # the thread that was waiting since before start() runs on
    _fib(5)
    list(gen())
    t.join()


def _waiting(go):
    go.wait()  # running at start(): its first chunk opens with a STACK record
    _fib(4)


def _spin():
    end = time.perf_counter() + 0.03
    while time.perf_counter() < end:
        _fib(6)


def views(path):
    """Both readers' views of `path` (they must agree) and the native events with gaps, as
    JSON data."""
    import fasttrace
    from formatfiles import native_view, py_view

    nat = native_view(path)
    assert json.dumps(nat, sort_keys=True) == json.dumps(py_view(path), sort_keys=True)
    t = fasttrace.load(path)
    try:
        gaps = [(e.kind, e.ts, e.thread, e.dropped if e.kind == "gap" else e.function.id,
                 e.start_ts if e.kind == "gap" else bool(e.synthetic))
                for e in t.events(gaps=True)]
        stats = list(t.stats)
    finally:
        t.close()
    return json.loads(json.dumps(dict(nat, events_with_gaps=gaps, stats=stats)))


def _argv(data):
    """`data` with the header's command line of this script."""
    import struct
    import zlib

    from fasttrace._pyreader import _str
    from helpers import varint

    body = data[20:20 + struct.unpack_from("<I", data, 12)[0]]
    _old, p = _str(body, 64, len(body))
    version, _ = _str(body, p, len(body))
    argv = b"python\0tests/v1data.py\0record\0"
    new = body[:64] + varint(len(argv)) + argv + varint(len(version)) + version
    return (data[:12] + struct.pack("<II", len(new), zlib.crc32(new)) + new
            + data[20 + len(body):])


def record(directory):
    import fasttrace
    from cli_fuzz import anonymous

    traced = os.path.join(directory, TRACE)
    sampled = os.path.join(directory, SAMPLED)
    go = threading.Event()
    early = threading.Thread(target=_waiting, args=(go,), name="early")
    early.start()
    with fasttrace.start(traced, c_calls=True):
        _program(go)
        early.join()
    with fasttrace.start(sampled, rate=1000):
        th = threading.Thread(target=_spin, name="spin")
        th.start()
        _spin()
        th.join()
    for path in (traced, sampled):
        with open(path, "rb") as f:
            data = _argv(anonymous(f.read()))
        with open(path, "wb") as f:
            f.write(data)
    expected = {TRACE: views(traced), SAMPLED: views(sampled)}
    with open(os.path.join(directory, EXPECTED), "w") as f:
        json.dump(expected, f, indent=None, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    if sys.argv[1:2] == ["record"] and len(sys.argv) == 3:
        record(sys.argv[2])
    else:
        sys.exit(__doc__)
