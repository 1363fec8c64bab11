"""Sampling mode's layout check (3.13+): the struct layouts compiled into fasttrace against the
running interpreter's own description of them, _PyRuntime.debug_offsets.

The refusal path is taken with the FASTTRACE_DEBUG_OFFSETS_SKEW test hook, which skews one
field of the copy that the check compares (src/ft_compat.h).
"""

from __future__ import annotations

import os
import re
import sys
import time

import pytest

import fasttrace
from fasttrace import _core

HAS_OFFSETS = sys.version_info >= (3, 13)
needs_offsets = pytest.mark.skipif(not HAS_OFFSETS,
                                   reason="_Py_DebugOffsets exists from CPython 3.13 on")
SKEW = "FASTTRACE_DEBUG_OFFSETS_SKEW"

# What the sampler cannot do without: the walk, the thread list, the GIL, the names.
ESSENTIAL = {
    "interpreter_state.threads_head", "interpreter_state.ceval_gil",
    "thread_state.next", "thread_state.current_frame", "thread_state.datastack_chunk",
    "thread_state.thread_id", "thread_state.native_thread_id", "thread_state.size",
    "interpreter_frame.previous", "interpreter_frame.executable",
    "interpreter_frame.instr_ptr", "interpreter_frame.owner",
    "code_object.name", "code_object.qualname", "code_object.filename",
    "code_object.firstlineno", "pyobject.ob_type", "unicode_object.asciiobject_size",
}


def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def own_threads():
    """This process's kernel threads, by name (fasttrace's sampler is "fasttrace-smp")."""
    names = []
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except FileNotFoundError:  # ended meanwhile
            pass
    return sorted(names)


def sample_normally(path):
    """A normal start after a refusal works, and samples."""
    with fasttrace.start(path, rate=1000) as session:
        spin(0.1)
    assert session.summary.sampling.samples > 10
    trace = fasttrace.load(path)
    assert any(s.stack and s.stack[-1].name == "spin" for s in trace.samples())


@needs_offsets
def test_a_normal_start_validates_the_layout(trace_path):
    assert ESSENTIAL <= set(_core.LAYOUT_FIELDS)
    assert _core.sampler_check_layout() is None
    sample_normally(trace_path)


@pytest.mark.skipif(HAS_OFFSETS, reason="3.13+ has _Py_DebugOffsets")
def test_before_3_13_there_is_nothing_to_check(trace_path, monkeypatch):
    assert _core.LAYOUT_FIELDS == ()
    monkeypatch.setenv(SKEW, "interpreter_frame.instr_ptr")  # nothing to skew: ignored
    assert _core.sampler_check_layout() is None
    sample_normally(trace_path)


def expected_message(field):
    if field == "cookie":
        return r'layout description \(_PyRuntime.debug_offsets\) does not start with the ' \
               r'"xdebugpy" cookie; rebuild fasttrace for this interpreter'
    if field == "version":
        return (rf"but the running interpreter is CPython 3\.{sys.version_info.minor + 1}\.\d+, "
                r"whose layout description this build cannot read; rebuild fasttrace")
    word = {"free_threaded": r"free_threaded = 1, not 0"}.get(field)
    if word is None and field.endswith("size"):
        word = rf"a {field} of (\d+) bytes, not (\d+)"
    if word is None:
        word = rf"{field} at offset (\d+), not (\d+)"
    return (rf"^cannot sample: this fasttrace was built for CPython "
            rf"{sys.version_info.major}\.{sys.version_info.minor}\.\d+'s struct layouts, but "
            rf"the running interpreter \(CPython [\d.]+\) has {word}; rebuild fasttrace for "
            r"this interpreter$")


@needs_offsets
@pytest.mark.parametrize("field", _core.LAYOUT_FIELDS + ("cookie", "version"))
def test_a_skewed_field_refuses_to_sample_and_touches_nothing(tmp_path, monkeypatch, field):
    path = tmp_path / "out.ftrace"
    path.write_bytes(b"an earlier trace")
    before = own_threads()
    monkeypatch.setenv(SKEW, field)
    with pytest.raises(fasttrace.TracingError) as info:
        fasttrace.start(path, rate=100)
    message = str(info.value)
    m = re.search(expected_message(field), message)
    assert m, message
    if m.groups():  # the running value is the skewed one: 8 bytes further
        assert int(m.group(1)) == int(m.group(2)) + 8
    assert not fasttrace.is_tracing()
    # the refusal comes before the output is opened: the earlier trace is untouched, and no
    # temporary file is left beside it
    assert path.read_bytes() == b"an earlier trace"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ftrace"]
    assert own_threads() == before and "fasttrace-smp" not in before
    monkeypatch.delenv(SKEW)
    sample_normally(path)


@needs_offsets
def test_an_unknown_skew_name_is_an_error_not_a_pass(trace_path, monkeypatch):
    monkeypatch.setenv(SKEW, "interpreter_frame.instr_pointer")
    with pytest.raises(fasttrace.TracingError, match="names no field that fasttrace checks"):
        fasttrace.start(trace_path, rate=100)
    assert not trace_path.exists()


@needs_offsets
def test_the_core_refuses_on_its_own(tmp_path, monkeypatch):
    # ft_sampler_start checks again (for C callers, and should the environment change between
    # the two checks): the session it was started in is finished, its file removed.
    path = tmp_path / "out.ftrace"
    before = own_threads()
    monkeypatch.setattr(_core, "sampler_check_layout", lambda: None)
    monkeypatch.setenv(SKEW, "thread_state.current_frame")
    with pytest.raises(fasttrace.TracingError,
                       match=r"has thread_state\.current_frame at offset \d+, not \d+"):
        fasttrace.start(path, rate=100)
    assert not fasttrace.is_tracing()
    assert list(tmp_path.iterdir()) == []
    assert own_threads() == before
    monkeypatch.delenv(SKEW)
    sample_normally(path)
