"""The flight recorder: dumps of a window that decode on their own (issue 10, section 2)."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import fasttrace
from helpers import CALL_TREE


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def balanced(trace):
    """Per thread: nesting never goes below zero and every frame closes (the reader closes
    frames open at the end with synthetic returns)."""
    depth = {}
    for e in trace.events():
        d = depth.get(e.thread, 0) + (1 if e.kind in ("call", "c_call") else
                                      -1 if e.kind in ("return", "c_return") else 0)
        if d < 0:
            # An orphan return (format: ORPHAN_RETURN) of a frame the hook never saw enter:
            # 3.9-3.11 install the profile function inside a new thread's _bootstrap_inner.
            # Recorded as such by the writer, never made up by the reader.
            assert not e.synthetic and e.kind in ("return", "c_return"), e
            d = 0
        depth[e.thread] = d
    assert all(d == 0 for d in depth.values()), depth
    return depth


def test_dumps_of_a_long_run_decode_and_cover_the_window(tmp_path):
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            fib(12)

    rec = fasttrace.FlightRecorder(seconds=0.3, max_bytes=64 << 20)
    with rec:
        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        summaries = []
        for i in range(4):  # the run is several times the window
            time.sleep(0.4)
            summaries.append(rec.dump(tmp_path / f"d{i}.ftrace"))
        stop.set()
        for t in threads:
            t.join()
    for i, s in enumerate(summaries):
        trace = fasttrace.load(tmp_path / f"d{i}.ftrace")
        assert trace.header["origin"] == "flight"
        assert trace.stats.truncated is False
        assert trace.stats.events == s.events > 0
        balanced(trace)
        assert s.duration_ns >= 0.3e9  # 64 MiB holds the whole window here
        assert {t.id for t in trace.threads} >= {e.thread for e in trace.events()}


def test_window_is_bounded_by_max_bytes(tmp_path):
    rec = fasttrace.FlightRecorder(seconds=60, max_bytes=1 << 20)
    with rec:
        for _ in range(30):
            fib(20)
        s = rec.dump(tmp_path / "d.ftrace")
        assert s.bytes <= (1 << 20) + 64 * 1024  # the ring, plus the header and definitions
    balanced(fasttrace.load(tmp_path / "d.ftrace"))
    assert rec.summary.events > 2 * s.events  # most of the run was evicted


PROGRAM = CALL_TREE + textwrap.dedent("""
    import sys, fasttrace

    mode, out = sys.argv[1], sys.argv[2]
    if mode == "full":
        rec = fasttrace.start(out, c_calls=False)
    else:
        rec = fasttrace.FlightRecorder(seconds=100, max_bytes=256 << 10, c_calls=False).start()
    for k in range(3000):
        top(20 + k % 7)
    if mode == "flight":
        rec.dump(out)
    rec.stop()
""")


def names(trace, real_only):
    fn = {}
    out = []
    for e in trace.events():
        if real_only and e.synthetic:
            continue
        f = fn.get(e.function.id) or fn.setdefault(e.function.id, e.function.qualname)
        out.append(f"{e.kind[0]}:{f}")
    return out


def test_a_dump_equals_the_matching_stretch_of_a_full_trace(tmp_path):
    prog = tmp_path / "prog.py"
    prog.write_text(PROGRAM)
    for mode in ("full", "flight"):
        r = subprocess.run([sys.executable, str(prog), mode, str(tmp_path / f"{mode}.ftrace")],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    full = names(fasttrace.load(tmp_path / "full.ftrace"), real_only=False)
    dump = fasttrace.load(tmp_path / "flight.ftrace")
    balanced(dump)
    real = names(dump, real_only=True)
    assert 1000 < len(real) < len(full) // 2  # a window, evicted at its start
    # the dump's recorded events are one contiguous stretch of the full trace
    joined = "\n".join(full)
    stretch = "\n".join(real)
    assert stretch in joined


def test_two_dumps_at_once_are_serialized(tmp_path):
    errors = []
    rec = fasttrace.FlightRecorder(seconds=5, max_bytes=16 << 20)
    with rec:
        for _ in range(5):
            fib(16)

        def dump(i):
            try:
                rec.dump(tmp_path / f"c{i}.ftrace")
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        ts = [threading.Thread(target=dump, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    assert errors == []
    for i in range(4):
        balanced(fasttrace.load(tmp_path / f"c{i}.ftrace"))


def test_dump_while_threads_start_and_exit(tmp_path):
    rec = fasttrace.FlightRecorder(seconds=5, max_bytes=16 << 20)
    with rec:
        for i in range(6):
            ts = [threading.Thread(target=fib, args=(14,)) for _ in range(4)]
            for t in ts:
                t.start()
            rec.dump(tmp_path / f"t{i}.ftrace")
            for t in ts:
                t.join()
    for i in range(6):
        balanced(fasttrace.load(tmp_path / f"t{i}.ftrace"))


def test_sampling_mode_dump(tmp_path):
    rec = fasttrace.FlightRecorder(seconds=5, max_bytes=4 << 20, rate=500)
    with rec:
        end = time.time() + 0.5
        while time.time() < end:
            fib(15)
        s = rec.dump(tmp_path / "s.ftrace")
    trace = fasttrace.load(tmp_path / "s.ftrace")
    samples = list(trace.samples())
    assert trace.mode == "sample" and len(samples) == s.events > 50
    assert any("fib" in f.name for smp in samples for f in smp.stack)


def test_errors(tmp_path):
    rec = fasttrace.FlightRecorder(seconds=1, max_bytes=4 << 20)
    with pytest.raises(fasttrace.TracingError, match="not running.*never started"):
        rec.dump(tmp_path / "x.ftrace")
    with rec:
        with pytest.raises(fasttrace.TracingError, match="a flight recorder is running"):
            fasttrace.start(tmp_path / "t.ftrace")
        with pytest.raises(fasttrace.TracingError, match="No such file|cannot"):
            rec.dump(tmp_path / "missing-dir" / "x.ftrace")
        rec.dump(tmp_path / "after-error.ftrace")  # recording went on
    with pytest.raises(fasttrace.TracingError, match="stopped already"):
        rec.dump(tmp_path / "x.ftrace")
    with fasttrace.start(tmp_path / "t.ftrace"):
        with pytest.raises(fasttrace.TracingError, match="a trace is already running"):
            fasttrace.FlightRecorder(seconds=1, max_bytes=4 << 20).start()
    balanced(fasttrace.load(tmp_path / "after-error.ftrace"))


@pytest.mark.parametrize("kw, message", [
    (dict(seconds=0), "seconds must be a positive"),
    (dict(seconds=-3), "seconds must be a positive"),
    (dict(seconds=float("nan")), "seconds must be a positive"),
    (dict(max_bytes=4096), "max_bytes must be at least"),
    (dict(signal=signal.SIGUSR2, directory="/nonexistent/dir"), "does not exist"),
    (dict(signal=signal.SIGKILL), "not a signal a handler can catch"),
    (dict(signal=12345), "not a signal a handler can catch"),
])
def test_bad_arguments_fail_before_anything_starts(kw, message):
    with pytest.raises(ValueError, match=message):
        fasttrace.FlightRecorder(**kw)
    assert not fasttrace.is_tracing()


def test_signal_and_exception_triggers(tmp_path):
    prog = tmp_path / "crash.py"
    prog.write_text(textwrap.dedent(f"""
        import os, signal, time, fasttrace

        def fib(n):
            return n if n < 2 else fib(n - 1) + fib(n - 2)

        rec = fasttrace.FlightRecorder(seconds=5, max_bytes=8 << 20, signal=signal.SIGUSR2,
                                       directory={str(tmp_path)!r}, dump_on_exception=True)
        rec.start()
        fib(18)
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.5)
        fib(17)
        raise RuntimeError("boom")
    """))
    r = subprocess.run([sys.executable, str(prog)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "RuntimeError: boom" in r.stderr, r.stderr
    assert "on SIGUSR2" in r.stderr and "on uncaught RuntimeError" in r.stderr, r.stderr
    dumps = sorted(p for p in os.listdir(tmp_path) if p.startswith("fasttrace-flight-"))
    assert len(dumps) == 2, dumps
    for d in dumps:
        trace = fasttrace.load(tmp_path / d)
        balanced(trace)
        assert any(e.function.name == "fib" for e in trace.events())


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded")
def test_dumps_while_another_thread_forks(tmp_path):
    stop = threading.Event()
    forks = []

    def forker():
        while not stop.is_set():
            pid = os.fork()
            if pid == 0:
                fib(10)  # the child: the parent's recorder is not running here
                os._exit(0 if not fasttrace.is_tracing() else 3)
            forks.append(os.waitpid(pid, 0)[1])
            fib(12)

    rec = fasttrace.FlightRecorder(seconds=5, max_bytes=16 << 20)
    with rec:
        t = threading.Thread(target=forker)
        t.start()
        for i in range(10):
            fib(14)
            rec.dump(tmp_path / f"f{i}.ftrace")
        stop.set()
        t.join()
    assert len(forks) > 0 and all(status == 0 for status in forks)
    for i in range(10):
        balanced(fasttrace.load(tmp_path / f"f{i}.ftrace"))


def test_dump_from_a_signal_handler_in_code(tmp_path):
    # A handler of the program's own that dumps (as the signal= trigger does from a thread)
    rec = fasttrace.FlightRecorder(seconds=5, max_bytes=8 << 20)
    done = []

    def handler(signum, frame):
        done.append(rec.dump(tmp_path / "sig.ftrace"))

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        with rec:
            fib(15)
            os.kill(os.getpid(), signal.SIGUSR1)
            fib(12)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert len(done) == 1
    balanced(fasttrace.load(tmp_path / "sig.ftrace"))


def test_dumps_racing_stop_never_crash(tmp_path):
    # dump() from several threads while the main thread stops the recorder: each dump either
    # completes (a file that loads) or says the recorder is not running
    for round_ in range(5):
        rec = fasttrace.FlightRecorder(seconds=5, max_bytes=8 << 20).start()
        fib(14)
        outcomes = []

        def dump(i):
            try:
                rec.dump(tmp_path / f"r{round_}-{i}.ftrace")
                outcomes.append("ok")
            except fasttrace.TracingError as e:
                assert "not running" in str(e), e
                outcomes.append("refused")

        ts = [threading.Thread(target=dump, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        rec.stop()
        for t in ts:
            t.join()
        assert len(outcomes) == 4
        for p in tmp_path.glob(f"r{round_}-*.ftrace"):
            balanced(fasttrace.load(p))


def test_a_signal_trigger_needs_the_main_thread():
    errors = []

    def start():
        try:
            fasttrace.FlightRecorder(signal=signal.SIGUSR2).start()
        except ValueError as e:
            errors.append(str(e))

    t = threading.Thread(target=start)
    t.start()
    t.join()
    assert errors and "main thread" in errors[0]
    assert not fasttrace.is_tracing()  # nothing was left running
