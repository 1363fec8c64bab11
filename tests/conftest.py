"""Shared fixtures.  The autouse fixture proves that no test leaves a hook installed."""

from __future__ import annotations

import sys
import threading

import pytest

import fasttrace


def _hook_state() -> dict:
    state = {
        "tracing": fasttrace.is_tracing(),
        "sys.getprofile": sys.getprofile(),
        "threading profile": getattr(threading, "_profile_hook", None),
    }
    if sys.version_info >= (3, 12):
        for tool in range(6):
            state[f"monitoring tool {tool}"] = sys.monitoring.get_tool(tool)
    return state


CLEAN = {
    "tracing": False,
    "sys.getprofile": None,
    "threading profile": None,
    **{f"monitoring tool {tool}": None for tool in range(6)},
}


@pytest.fixture(autouse=True)
def no_hook_left_installed():
    before = _hook_state()
    assert before == {k: CLEAN[k] for k in before}, f"hook state before the test: {before}"
    try:
        yield
    finally:
        after = _hook_state()
        if fasttrace.is_tracing():
            fasttrace.stop()
        assert after == {k: CLEAN[k] for k in after}, f"the test left a hook installed: {after}"


@pytest.fixture
def trace_path(tmp_path):
    return tmp_path / "out.ftrace"


def user_events(trace, thread=None):
    """(kind, qualname) of events outside fasttrace's own code and the test harness."""
    out = []
    for e in trace.events(thread):
        f = e.function
        if "fasttrace" in f.filename or f.filename.endswith("conftest.py"):
            continue
        out.append((e.kind, f.qualname))
    return out
