"""The public API and every error case it promises."""

from __future__ import annotations

import cProfile
import gc
import os
import sys
import threading

import pytest

import fasttrace
from fasttrace import TracingError


def test_start_returns_session_and_stop_returns_summary(trace_path):
    session = fasttrace.start(trace_path)
    assert fasttrace.is_tracing()
    assert session.path == str(trace_path)
    summary = fasttrace.stop()
    assert not fasttrace.is_tracing()
    assert summary.path == str(trace_path)
    assert summary.events > 0 and summary.dropped == 0
    assert summary.duration_ns > 0
    assert summary.bytes == os.path.getsize(trace_path)


def test_context_manager(trace_path):
    with fasttrace.start(trace_path) as s:
        assert fasttrace.is_tracing()
        sorted([3, 1, 2])  # one C call: the frames open at start are no record of their own
    assert not fasttrace.is_tracing()
    assert s.summary is not None and s.summary.events > 0
    assert fasttrace.load(trace_path).stats.truncated is False


def test_context_manager_keeps_the_blocks_exception(trace_path):
    with pytest.raises(ZeroDivisionError):
        with fasttrace.start(trace_path):
            1 / 0
    assert not fasttrace.is_tracing()
    assert fasttrace.load(trace_path).stats.truncated is False


def test_second_start_names_the_active_file(trace_path, tmp_path):
    with fasttrace.start(trace_path):
        with pytest.raises(TracingError, match="already running.*out.ftrace"):
            fasttrace.start(tmp_path / "other.ftrace")
    assert not (tmp_path / "other.ftrace").exists()


def test_stop_without_start():
    with pytest.raises(TracingError, match="no trace is running"):
        fasttrace.stop()


def test_missing_directory(tmp_path):
    path = tmp_path / "nope" / "out.ftrace"
    with pytest.raises(TracingError, match=r"nope.*does not exist"):
        fasttrace.start(path)
    assert not fasttrace.is_tracing()


def test_path_is_a_directory(tmp_path):
    with pytest.raises(TracingError, match="is a directory"):
        fasttrace.start(tmp_path)


def test_permission_denied(tmp_path):
    # /sys refuses new files even to root, so this holds wherever the tests run
    with pytest.raises(TracingError, match=r"'/sys/fasttrace-test.ftrace'.*permission denied"):
        fasttrace.start("/sys/fasttrace-test.ftrace")


@pytest.mark.parametrize("bad", [0, -1, 1000])
def test_buffer_size_too_small(trace_path, bad):
    with pytest.raises(ValueError, match="buffer_size"):
        fasttrace.start(trace_path, buffer_size=bad)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+: cProfile runs beside it")
def test_refuses_when_cprofile_runs(trace_path):
    # 3.9-3.11: cProfile and fasttrace would share the thread's one profile function
    prof = cProfile.Profile()
    prof.enable()
    try:
        with pytest.raises(TracingError, match="another profiler"):
            fasttrace.start(trace_path)
    finally:
        prof.disable()
    # cProfile kept working: it saw the calls made while it was enabled
    assert prof.getstats()


def _work(n):
    return n if n < 2 else _work(n - 1) + _work(n - 2)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")
@pytest.mark.parametrize("first", ["cprofile", "fasttrace"])
def test_cprofile_runs_beside_fasttrace(trace_path, first):
    # Issue 8: fasttrace took sys.monitoring's PROFILER_ID, so `fasttrace run -m cProfile`
    # failed; it takes an id no standard tool claims, and both see every call.
    prof = cProfile.Profile()
    if first == "cprofile":
        prof.enable()
        fasttrace.start(trace_path)
    else:
        fasttrace.start(trace_path)
        prof.enable()
    _work(10)
    prof.disable()
    fasttrace.stop()
    calls = {getattr(entry.code, "co_name", str(entry.code)): entry.callcount
             for entry in prof.getstats()}
    assert calls["_work"] == 177
    traced = [e for e in fasttrace.load(trace_path).events()
              if e.kind == "call" and e.function.qualname == "_work"]
    assert len(traced) == 177


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")
def test_refuses_when_its_monitoring_tool_ids_are_taken(trace_path):
    from fasttrace._tracer import TOOL_IDS

    for tool in TOOL_IDS:
        sys.monitoring.use_tool_id(tool, f"someone-else-{tool}")
    try:
        with pytest.raises(TracingError, match="no free sys.monitoring tool id.*someone-else"):
            fasttrace.start(trace_path)
        sys.monitoring.free_tool_id(TOOL_IDS[0])  # one is enough
        with fasttrace.start(trace_path) as session:
            assert session.tool_id == TOOL_IDS[0]
    finally:
        for tool in TOOL_IDS[1:]:
            sys.monitoring.free_tool_id(tool)


def test_refuses_when_setprofile_is_set(trace_path):
    sys.setprofile(lambda *a: None)
    try:
        with pytest.raises(TracingError, match="another profiler"):
            fasttrace.start(trace_path)
        assert sys.getprofile() is not None
    finally:
        sys.setprofile(None)


def test_refuses_when_other_thread_is_profiled(trace_path):
    ready, done = threading.Event(), threading.Event()

    def profiled():
        sys.setprofile(lambda *a: None)
        ready.set()
        done.wait()
        sys.setprofile(None)

    t = threading.Thread(target=profiled)
    t.start()
    ready.wait()
    try:
        with pytest.raises(TracingError, match=f"thread {t.ident}"):
            fasttrace.start(trace_path)
    finally:
        done.set()
        t.join()


def test_stop_from_another_thread(trace_path):
    fasttrace.start(trace_path)
    result = []
    t = threading.Thread(target=lambda: result.append(fasttrace.stop()))
    t.start()
    t.join()
    assert not fasttrace.is_tracing()
    assert result[0].events > 0
    assert fasttrace.load(trace_path).stats.truncated is False


def test_restart_many_times_without_leaks(tmp_path):
    def fds():
        return len(os.listdir("/proc/self/fd"))

    def rss_kib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

    def tasks():
        return len(os.listdir("/proc/self/task"))

    path = tmp_path / "x.ftrace"
    for _ in range(50):  # warm up allocator pools and interned tables
        fasttrace.start(path)
        fasttrace.stop()
    gc.collect()  # earlier tests' garbage must not close its files while this one counts
    before = (fds(), tasks(), rss_kib(), threading.active_count())
    for i in range(1000):
        fasttrace.start(path)
        sum(range(10))
        fasttrace.stop()
    after = (fds(), tasks(), rss_kib(), threading.active_count())
    assert after[0] == before[0], "file descriptors leaked"
    assert after[1] == before[1], "native threads leaked"
    assert after[3] == before[3], "Python threads leaked"
    # 1000 sessions each map an 8 MiB ring: any per-session leak would be far above this.
    # (Under AddressSanitizer freed memory sits in quarantine, so RSS says nothing there.)
    if not os.environ.get("FASTTRACE_SANITIZE"):
        assert after[2] - before[2] < 8 * 1024, f"RSS grew {after[2] - before[2]} KiB"
    assert fasttrace.load(path).stats.truncated is False


@pytest.mark.parametrize("c_calls", [True, False])
def test_header_names_the_hook(trace_path, c_calls):
    with fasttrace.start(trace_path, c_calls=c_calls) as session:
        pass
    plain = "monitoring" if sys.version_info >= (3, 12) else "profile"
    # The frame evaluator is the default where it is offered (3.11, 3.12) and can serve.
    offered = (3, 11) <= sys.version_info < (3, 13)
    if offered and not c_calls and os.environ.get("FASTTRACE_HOOK") != plain:
        expected = "eval_frame"
    else:
        expected = plain
    assert session.hook == expected
    assert fasttrace.load(trace_path).header["hook"] == expected


@pytest.mark.parametrize("size", [64 << 40, 2**52, 10**20])
def test_buffer_size_beyond_memory_is_refused(trace_path, size):
    # Issue 8: a ring that can never be allocated used to start a trace that recorded nothing.
    with pytest.raises(ValueError, match="buffer_size must be at most .*this machine's memory"):
        fasttrace.start(trace_path, buffer_size=size)
    assert not trace_path.exists()


def _fasttrace_frames(trace):
    return [e for e in trace.events()
            if e.function.filename.startswith(os.path.dirname(fasttrace.__file__))]


@pytest.mark.parametrize("how", ["calls", "with"])
def test_start_and_stop_leave_no_frames_of_their_own(trace_path, how):
    # Issue 8: start()'s _install/_start returned into the trace, stop() appeared as a function
    # with what it called (RLock, atexit), and Session.__enter__/__exit__ too.
    if how == "calls":
        fasttrace.start(trace_path)
        _work(5)
        fasttrace.stop()
    else:
        with fasttrace.start(trace_path):
            _work(5)
    trace = fasttrace.load(trace_path)
    assert _fasttrace_frames(trace) == []
    names = {e.function.qualname for e in trace.events()}
    assert not names & {"atexit.register", "atexit.unregister", "_thread.RLock.__exit__",
                        "_thread.RLock.__enter__", "start", "stop", "_install", "_start"}
    # and nesting is whole: no return without its call before the program's first call
    first = next(e for e in trace.events() if not e.synthetic)
    assert (first.kind, first.function.qualname) == ("call", "_work")


def test_own_frames_stay_muted_when_start_fails(trace_path):
    # start() raising inside a trace (a second start): its frames unwind muted, and what
    # follows is recorded normally.
    with fasttrace.start(trace_path):
        with pytest.raises(TracingError):
            fasttrace.start(trace_path)
        _work(3)
    trace = fasttrace.load(trace_path)
    assert _fasttrace_frames(trace) == []
    assert sum(1 for e in trace.events() if e.kind == "call" and e.function.qualname == "_work") \
        == 5


def test_sampled_header_names_no_hook(trace_path):
    with fasttrace.start(trace_path, rate=100):
        pass
    assert fasttrace.load(trace_path).header["hook"] == "sampler"


def test_sampled_thread_starts_show_no_frame_of_fasttrace(trace_path):
    # Issue 8: sampling names threads as they start through a wrapper of threading's starter;
    # as a Python function it took the self time of Thread.start in the samples.
    with fasttrace.start(trace_path, rate=5000):
        for _ in range(4):
            threads = [threading.Thread(target=len, args=("x",)) for _ in range(50)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    trace = fasttrace.load(trace_path)
    starts = [s for s in trace.samples()  # Thread.start (3.9 and 3.10 have no qualnames)
              if any(f.name == "start" and f.filename.endswith("threading.py") for f in s.stack)]
    assert starts, "no sample caught a thread starting"
    ours = [s for s in starts if any(f.filename.startswith(os.path.dirname(fasttrace.__file__))
                                     for f in s.stack)]
    assert ours == []


@pytest.mark.skipif(fasttrace._core.HAS_EVAL_FRAME, reason="this Python offers the frame evaluator")
def test_forcing_a_frame_evaluator_this_python_lacks_is_an_error(trace_path, monkeypatch):
    # 3.9/3.10 have no PEP 523 hook of fasttrace's; 3.13 would lose specialized __init__ calls.
    monkeypatch.setenv("FASTTRACE_HOOK", "eval_frame")
    with pytest.raises(fasttrace.TracingError, match=r"FASTTRACE_HOOK='eval_frame' is not "
                       r"offered on Python 3\.\d+ \(.*\); this Python's hook is '"):
        fasttrace.start(trace_path, c_calls=False)
    assert not fasttrace.is_tracing() and not os.path.exists(trace_path)
