"""One capture at a time, as a Session: its life from construction to stop, and what a second
start, a second stop, a with block and a forked child do with it."""

from __future__ import annotations

import os
import sys
import threading
import warnings

import pytest

import fasttrace
from fasttrace import TracingError
from helpers import run_script


def _work(n):
    return n if n < 2 else _work(n - 1) + _work(n - 2)


@pytest.mark.parametrize("rate", [None, 100])
def test_second_start_names_the_running_capture(trace_path, tmp_path, rate):
    other = tmp_path / "other.ftrace"
    with fasttrace.start(trace_path, rate=rate) as running:
        for second in (lambda: fasttrace.start(other),
                       lambda: fasttrace.Session(other, rate=50).start()):
            with pytest.raises(TracingError) as e:
                second()
            assert str(e.value) == (f"a trace is already running (writing {str(trace_path)!r}); "
                                    "call fasttrace.stop() first")
            assert fasttrace.is_tracing() and repr(running).endswith(" running>")
        _work(3)
    assert not other.exists()
    assert (running.summary.sampling is None) == (rate is None)
    assert fasttrace.load(trace_path).stats.truncated is False


def test_a_session_not_started_is_not_active(trace_path, tmp_path):
    session = fasttrace.Session(trace_path, rate=100)
    assert not fasttrace.is_tracing()
    assert repr(session) == f"<fasttrace.Session {str(trace_path)!r} not started>"
    assert session.summary is None and not trace_path.exists()
    with pytest.raises(TracingError, match="no trace is running"):
        fasttrace.stop()
    with pytest.raises(TracingError, match="was never started"):
        session.stop()
    # nor does it stand in another's way
    with fasttrace.start(tmp_path / "b.ftrace"):
        pass
    assert not trace_path.exists()


@pytest.mark.parametrize("kwargs", [
    {"buffer_size": 1000}, {"buffer_size": 2.5}, {"buffer_size": 64 << 40}, {"rate": 0},
    {"rate": "fast"}, {"rate": 100, "clock": "cpu time"}, {"clock": "cpu"},
])
def test_a_session_checks_its_arguments_as_start_does(trace_path, kwargs):
    with pytest.raises((TypeError, ValueError)) as by_start:
        fasttrace.start(trace_path, **kwargs)
    with pytest.raises(type(by_start.value)) as by_session:
        fasttrace.Session(trace_path, **kwargs)
    assert str(by_session.value) == str(by_start.value)
    assert not trace_path.exists()


def test_a_failed_start_can_be_tried_again(tmp_path):
    path = tmp_path / "later" / "out.ftrace"
    session = fasttrace.Session(path)
    with pytest.raises(TracingError, match="does not exist"):
        session.start()
    assert not fasttrace.is_tracing() and repr(session).endswith(" not started>")
    path.parent.mkdir()
    assert session.start() is session
    sorted([2, 1])  # a C call: format 2 counts no record for the frames open at start
    assert session.stop().events > 0


def test_stop_twice(trace_path):
    session = fasttrace.start(trace_path)
    summary = fasttrace.stop()
    with pytest.raises(TracingError, match="no trace is running"):
        fasttrace.stop()
    with pytest.raises(TracingError, match="was stopped already"):
        session.stop()
    assert session.summary is summary
    assert repr(session) == f"<fasttrace.Session {str(trace_path)!r} stopped>"


def test_session_stop_stops_its_own_trace(trace_path):
    session = fasttrace.start(trace_path, rate=200)
    summary = session.stop()
    assert not fasttrace.is_tracing()
    assert session.summary is summary and summary.sampling.rate == 200
    assert summary.bytes == os.path.getsize(trace_path)


def test_a_session_records_once(trace_path):
    session = fasttrace.start(trace_path)
    session.stop()
    size = os.path.getsize(trace_path)
    with pytest.raises(TracingError, match="started already: a Session records once"):
        session.start()
    assert not fasttrace.is_tracing() and os.path.getsize(trace_path) == size


@pytest.mark.parametrize("rate", [None, 1000])
def test_with_block_starts_a_session_not_started(trace_path, rate):
    session = fasttrace.Session(trace_path, rate=rate)
    with session as entered:
        assert entered is session and fasttrace.is_tracing()
        _work(8)
    assert not fasttrace.is_tracing() and session.summary is not None
    trace = fasttrace.load(trace_path)
    assert trace.stats.truncated is False
    if rate is None:
        assert [e.function.qualname for e in trace.events() if e.kind == "call"
                and not e.synthetic][:1] == ["_work"]
        assert not any(e.function.filename.startswith(os.path.dirname(fasttrace.__file__))
                       for e in trace.events())


def test_with_block_of_a_session_stopped_inside_it(trace_path, tmp_path):
    with fasttrace.start(trace_path) as session:
        summary = fasttrace.stop()
        # another trace may run now: leaving the first one's block leaves it alone
        fasttrace.start(tmp_path / "second.ftrace")
    assert session.summary is summary and fasttrace.is_tracing()
    fasttrace.stop()


def test_abandon_is_for_a_forked_child(trace_path):
    with fasttrace.start(trace_path) as session:
        with pytest.raises(TracingError, match="forked child"):
            session.abandon()
        assert fasttrace.is_tracing()
    session.abandon()  # not running: nothing to do
    assert fasttrace.load(trace_path).stats.truncated is False


def _displace_hook(session):
    """What another tool does to fasttrace's hook, which stop() warns about."""
    if session.hook == "monitoring":
        sys.monitoring.set_events(session.tool_id, 0)
    else:
        threading.setprofile(lambda *a: None)


@pytest.mark.parametrize("how", ["fasttrace.stop", "session.stop", "with"])
def test_stop_warnings_name_the_callers_line(trace_path, how):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if how == "with":
                with fasttrace.start(trace_path, c_calls=True) as session:
                    _displace_hook(session)
            else:
                session = fasttrace.start(trace_path, c_calls=True)
                _displace_hook(session)
                fasttrace.stop() if how == "fasttrace.stop" else session.stop()
        finally:
            threading.setprofile(None)
    ours = [w for w in caught if str(w.message).startswith("fasttrace:")]
    assert ours, [str(w.message) for w in caught]
    assert {w.filename for w in ours} == {__file__}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
@pytest.mark.parametrize("rate", [None, 1000])
def test_forked_child_abandons_the_trace_and_may_start_its_own(tmp_path, rate):
    out, child_out = tmp_path / "parent.ftrace", tmp_path / "child.ftrace"
    r = run_script(tmp_path, f"""
        import os, fasttrace
        def f(): pass
        session = fasttrace.start({str(out)!r}, rate={rate!r})
        f()
        pid = os.fork()
        if pid == 0:
            problems = []
            if fasttrace.is_tracing() or not repr(session).endswith(" stopped>"):
                problems.append(f"still running: {{session!r}}")
            try:
                session.stop()
                problems.append("the child stopped the parent's trace")
            except fasttrace.TracingError as e:
                if f"runs in process {{os.getppid()}}" not in str(e):
                    problems.append(str(e))
            with fasttrace.start({str(child_out)!r}):
                f()
            print(*problems, flush=True)
            os._exit(3 if problems else 0)
        _, status = os.waitpid(pid, 0)
        f()
        session.stop()
        print("child", status >> 8)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["child", "0"], r.stdout
    assert fasttrace.load(out).stats.truncated is False
    child = fasttrace.load(child_out)
    assert child.stats.truncated is False
    assert [e.function.qualname for e in child.events()
            if e.kind == "call" and not e.synthetic] == ["f"]
