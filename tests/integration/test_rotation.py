"""Rotation (start(max_bytes=, max_seconds=, keep=)) and start(duration=) (issue 10, sections
3 and 4), and what a full disk does to a rotation or a flight-recorder dump."""

import os
import subprocess
import sys
import textwrap

import pytest

import fasttrace
from helpers import CALL_TREE

PROGRAM = CALL_TREE + textwrap.dedent("""
    import sys, threading, time, fasttrace

    def work(rounds):
        for k in range(rounds):
            top(20 + k % 7)

    out, kwargs = sys.argv[1], eval(sys.argv[2])
    s = fasttrace.start(out, c_calls=False, **kwargs)
    t = threading.Thread(target=work, args=(1500,), name="helper")
    t.start()
    work(3000)
    t.join()
    print(fasttrace.stop())
""")


def run(tmp_path, out, **kwargs):
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    r = subprocess.run([sys.executable, str(prog), str(out), repr(kwargs)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r


def per_thread(trace):
    """Each thread's events as (kind, qualname), in order: threads are named, so that the
    comparison does not depend on the order they were first seen in."""
    names = {t.id: t.name for t in trace.threads}
    out = {}
    for e in trace.events():
        out.setdefault(names[e.thread], []).append((e.kind, e.function.qualname, e.synthetic))
    return out


def test_a_series_holds_the_same_events_as_one_file(tmp_path):
    run(tmp_path, tmp_path / "one.ftrace")
    (tmp_path / "s").mkdir()
    run(tmp_path, tmp_path / "s" / "trace.ftrace", max_bytes=256 << 10)
    files = sorted(os.listdir(tmp_path / "s"))
    assert len(files) >= 5 and files[0] == "trace.0001.ftrace"
    for i, name in enumerate(files, 1):
        assert name == f"trace.{i:04d}.ftrace"  # none missing
        assert os.path.getsize(tmp_path / "s" / name) <= 256 << 10
    one = fasttrace.load(tmp_path / "one.ftrace")
    series = fasttrace.load(str(tmp_path / "s" / "trace.*.ftrace"))
    assert series.series_problems == []
    assert series.stats.events == one.stats.events
    a, b = per_thread(one), per_thread(series)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name  # no event lost, none twice, the same nesting


def test_each_file_decodes_on_its_own(tmp_path):
    run(tmp_path, tmp_path / "trace.ftrace", max_bytes=256 << 10)
    files = sorted(p for p in os.listdir(tmp_path) if p.endswith(".ftrace"))
    total = 0
    for k, name in enumerate(files, 1):
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
            import fasttrace
            t = fasttrace.load([{str(tmp_path / name)!r}])  # this file alone
            depth = {{}}
            for e in t.events():
                d = depth.get(e.thread, 0) + (1 if e.kind in ("call", "c_call") else -1)
                assert d >= 0 or not e.synthetic, e  # 3.9-3.11: a new thread's orphan return
                depth[e.thread] = max(d, 0)
            assert t.header["series_index"] == {k} and t.header["origin"] == "series"
            assert not t.stats.truncated
            print(t.stats.events)
        """)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        total += int(r.stdout)
    assert total == fasttrace.load(str(tmp_path / "trace.0001.ftrace")).stats.events


def test_keep_and_max_seconds(tmp_path):
    r = run(tmp_path, tmp_path / "t.ftrace", max_bytes=256 << 10, keep=3)
    files = sorted(p for p in os.listdir(tmp_path) if p.endswith(".ftrace"))
    assert len(files) == 3
    last = int(files[-1].split(".")[1])
    assert last > 3 and files == [f"t.{k:04d}.ftrace" for k in range(last - 2, last + 1)]
    assert f"files=[{str(tmp_path / files[0])!r}" in r.stdout
    t = fasttrace.load(str(tmp_path / files[0]))
    assert t.series_problems == []  # files before the kept ones are no problem
    depth = {}
    for e in t.events():
        d = depth.get(e.thread, 0) + (1 if e.kind in ("call", "c_call") else -1)
        assert d >= 0 or not e.synthetic, e  # 3.9-3.11: a new thread's orphan return
        depth[e.thread] = max(d, 0)
    # time: a new file every 10 ms (when a chunk comes)
    (tmp_path / "m").mkdir()
    run(tmp_path, tmp_path / "m" / "t.ftrace", max_seconds=0.01)
    assert len(os.listdir(tmp_path / "m")) >= 2


def test_a_missing_file_is_reported_and_the_rest_loads(tmp_path):
    run(tmp_path, tmp_path / "t.ftrace", max_bytes=256 << 10)
    files = sorted(p for p in os.listdir(tmp_path) if p.endswith(".ftrace"))
    os.unlink(tmp_path / files[2])
    t = fasttrace.load(str(tmp_path / "t.*.ftrace"))
    assert any(files[2].split(".")[1].lstrip("0") in p or "missing" in p
               for p in t.series_problems), t.series_problems
    depth = {}
    for e in t.events():
        d = depth.get(e.thread, 0) + (1 if e.kind in ("call", "c_call") else -1)
        assert d >= 0 or not e.synthetic, e  # 3.9-3.11: a new thread's orphan return
        depth[e.thread] = max(d, 0)
    assert all(d == 0 for d in depth.values())


@pytest.mark.parametrize("kw, error, message", [
    (dict(max_bytes=1000), ValueError, "max_bytes must be at least"),
    (dict(max_seconds=0), ValueError, "max_seconds must be a positive"),
    (dict(max_seconds=float("nan")), ValueError, "max_seconds must be a positive"),
    (dict(keep=3), ValueError, "keep= needs max_bytes= or max_seconds="),
    (dict(max_bytes=1 << 20, keep=0), ValueError, "keep must be at least 1"),
    (dict(duration=0), ValueError, "duration must be a positive"),
    (dict(duration=-1.0), ValueError, "duration must be a positive"),
])
def test_bad_arguments_fail_before_anything_starts(tmp_path, kw, error, message):
    with pytest.raises(error, match=message):
        fasttrace.start(tmp_path / "t.ftrace", **kw)
    assert not fasttrace.is_tracing() and os.listdir(tmp_path) == []


def test_unwritable_directory(tmp_path):
    with pytest.raises(fasttrace.TracingError, match="nope"):
        fasttrace.start(tmp_path / "nope" / "t.ftrace", max_bytes=1 << 20)
    assert not fasttrace.is_tracing()


def test_duration_stops_the_capture_and_the_program_goes_on(tmp_path):
    code = textwrap.dedent(f"""
        import time, fasttrace
        def f():
            return 1
        s = fasttrace.start({str(tmp_path / "d.ftrace")!r}, duration=0.2)
        end = time.time() + 1.0
        n = 0
        while time.time() < end:
            f()
            n += 1
        assert not fasttrace.is_tracing()
        a = fasttrace.stop()   # returns the summary instead of raising
        assert a is s.summary and s.expired and a.events > 0, a
        assert s.stop() is a
        print(n, a.duration_ns)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)  # not the repo root: its source tree would shadow the install
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    n, duration_ns = map(int, r.stdout.split())
    assert 0.2e9 <= duration_ns < 0.9e9 and n > 0
    t = fasttrace.load(tmp_path / "d.ftrace")
    assert not t.stats.truncated and t.stats.events > 0


def test_stop_before_the_duration_ends_it(tmp_path):
    s = fasttrace.start(tmp_path / "d.ftrace", duration=30)
    summary = fasttrace.stop()
    assert not s.expired and summary.events >= 0
    with pytest.raises(fasttrace.TracingError, match="no trace is running"):
        fasttrace.stop()


FULL_DISK = textwrap.dedent("""
    import resource, signal, sys, time, fasttrace, warnings
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (200 << 10, resource.RLIM_INFINITY))

    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    mode, out = sys.argv[1], sys.argv[2]
    if mode == "series":
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            s = fasttrace.start(out, max_bytes=1 << 20)
            end = time.time() + 2.5  # a failed file's successor is tried once a second
            while time.time() < end:
                fib(18)
            summary = fasttrace.stop()
        print(summary.files)
        print("WARN", *[str(x.message) for x in w])
    else:
        rec = fasttrace.FlightRecorder(seconds=60, max_bytes=8 << 20).start()
        fib(25)
        try:
            rec.dump(out)
        except fasttrace.TracingError as e:
            print("ERROR", e)
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        fib(20)
        rec.dump(out + ".2")  # recording went on
        rec.stop()
""")


def test_full_disk_during_rotation_and_dump(tmp_path):
    prog = tmp_path / "full.py"
    prog.write_text(FULL_DISK)
    r = subprocess.run([sys.executable, str(prog), "series", str(tmp_path / "t.ftrace")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "File too large" in r.stdout and "recording went on into the next file" in r.stdout
    files = eval(r.stdout.splitlines()[0])
    assert len(files) >= 2
    for f in files:
        assert os.path.getsize(f) <= 200 << 10
    t = fasttrace.load(files[0])  # the series: each file cut where it failed
    assert t.series_problems
    r = subprocess.run([sys.executable, str(prog), "flight", str(tmp_path / "f.ftrace")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ERROR dump(" in r.stdout and "File too large" in r.stdout
    assert "recording goes on" in r.stdout
    assert fasttrace.load(tmp_path / "f.ftrace.2").stats.events > 0
    assert fasttrace.load(tmp_path / "f.ftrace").stats.truncated  # cut at the limit, readable
