"""Issue 9: the hook per version and setting, and living beside other tools that use CPython's
frame evaluator (PEP 523): debuggers such as pydevd, and JITs such as torch.compile."""

from __future__ import annotations

import os
import textwrap

import pytest

from helpers import build_extension, run_script

import fasttrace
from fasttrace import _core

pytestmark = pytest.mark.skipif(not _core.HAS_EVAL_FRAME,
                                reason="the frame evaluator: 3.11 and 3.12")
PLAIN = "monitoring" if _core.USE_MONITORING else "profile"

# Another tool's frame evaluator: it counts the frames it evaluates and hands them on.
OTHER_EVALUATOR = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static long frames;

static PyObject *
other_eval(PyThreadState *ts, struct _PyInterpreterFrame *f, int exc)
{
    frames++;
    return _PyEval_EvalFrameDefault(ts, f, exc);
}

static PyObject *
install(PyObject *self, PyObject *unused)
{
    _PyInterpreterState_SetEvalFrameFunc(PyInterpreterState_Get(), other_eval);
    Py_RETURN_NONE;
}

static PyObject *
uninstall(PyObject *self, PyObject *unused)
{
    _PyInterpreterState_SetEvalFrameFunc(PyInterpreterState_Get(), _PyEval_EvalFrameDefault);
    Py_RETURN_NONE;
}

static PyObject *
installed(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(
        _PyInterpreterState_GetEvalFrameFunc(PyInterpreterState_Get()) == other_eval);
}

static PyObject *
count(PyObject *self, PyObject *unused)
{
    return PyLong_FromLong(frames);
}

static PyMethodDef methods[] = {
    {"install", install, METH_NOARGS, NULL},
    {"uninstall", uninstall, METH_NOARGS, NULL},
    {"installed", installed, METH_NOARGS, NULL},
    {"count", count, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "other_eval", NULL, -1, methods};

PyMODINIT_FUNC
PyInit_other_eval(void)
{
    return PyModule_Create(&module);
}
"""


@pytest.fixture(scope="module")
def other_eval(tmp_path_factory):
    return build_extension(tmp_path_factory.mktemp("ext"), "other_eval", OTHER_EVALUATOR)


def _run(tmp_path, other_eval, body, env=None):
    # The default hook's behaviour: a FASTTRACE_HOOK of the CI's second pass does not apply.
    return run_script(tmp_path, f"import sys; sys.path.insert(0, {str(other_eval)!r})\n"
                      + textwrap.dedent(body), env={"FASTTRACE_HOOK": "", **(env or {})})


def test_default_hook_per_setting(trace_path):
    with fasttrace.start(trace_path, c_calls=True) as with_c:
        pass
    assert with_c.hook == PLAIN
    with fasttrace.start(trace_path, c_calls=False) as without_c:
        pass
    forced = os.environ.get("FASTTRACE_HOOK")
    assert without_c.hook == (forced or "eval_frame")
    assert fasttrace.load(trace_path).header["hook"] == without_c.hook
    assert not without_c.hook_fallback


def test_unknown_forced_hook_is_an_error(trace_path, monkeypatch):
    monkeypatch.setenv("FASTTRACE_HOOK", "nonsense")
    with pytest.raises(fasttrace.TracingError, match="FASTTRACE_HOOK='nonsense'"):
        fasttrace.start(trace_path, c_calls=False)


def test_another_evaluator_is_never_replaced(tmp_path, other_eval):
    out = tmp_path / "t.ftrace"
    r = _run(tmp_path, other_eval, f"""
        import fasttrace, other_eval
        def f(): pass
        other_eval.install()
        with fasttrace.start({str(out)!r}, c_calls=False) as s:
            before = other_eval.count()
            for _ in range(1000):
                f()
            during = other_eval.count() - before
        print(s.hook, s.hook_fallback, other_eval.installed(), during >= 1000)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [PLAIN, "True", "True", "True"]
    trace = fasttrace.load(out)
    assert trace.header["hook"] == PLAIN and trace.header["hook_fallback"]
    assert sum(1 for e in trace.events() if e.kind == "call" and e.function.name == "f") == 1000


@pytest.mark.parametrize("after", [100_000, 10], ids=["found_at_a_chunk_hand_off",
                                                     "found_at_stop"])
def test_evaluator_taken_while_tracing_is_marked(tmp_path, other_eval, after):
    out = tmp_path / "t.ftrace"
    r = _run(tmp_path, other_eval, f"""
        import warnings, fasttrace, other_eval
        def f(): pass
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with fasttrace.start({str(out)!r}, c_calls=False) as s:
                for _ in range(1000):
                    f()
                other_eval.install()   # a debugger attaches
                for _ in range({after}):
                    f()
            print(s.hook, s.summary.hook_lost_threads, other_eval.installed())
        for w in caught:
            print("WARNING", w.message)
    """, env={"FASTTRACE_HOOK": ""})
    assert r.returncode == 0, r.stderr
    first = r.stdout.splitlines()[0].split()
    assert first == ["eval_frame", "1", "True"], r.stdout
    assert "another tool replaced fasttrace's hook" in r.stdout
    trace = fasttrace.load(out)
    (lost,) = trace.hook_lost
    assert "frame evaluator" in lost.what
    calls = sum(1 for e in trace.events() if e.kind == "call" and e.function.name == "f")
    assert calls == 1000


def test_deep_recursion_raises_instead_of_crashing(tmp_path):
    # Under a frame evaluator every Python call nests a C call: a recursion plain Python runs
    # in its own frames runs out of C stack.  It must be a RecursionError, never a crash.
    r = run_script(tmp_path, """
        import sys, fasttrace
        sys.setrecursionlimit(1_000_000)
        def r(n):
            return 0 if n == 0 else 1 + r(n - 1)
        with fasttrace.start("deep.ftrace", c_calls=False) as s:
            try:
                r(200_000)
                print("no error")
            except RecursionError as e:
                print("RecursionError")
            print(r(500))
        print(s.hook)
    """, env={"FASTTRACE_HOOK": ""})
    assert r.returncode == 0, r.stderr
    out = r.stdout.split()
    assert out[-1] == "eval_frame" and out[-2] == "500" and out[0] in ("RecursionError",
                                                                     "no error")
    trace = fasttrace.load(tmp_path / "deep.ftrace")
    assert not trace.stats.truncated


@pytest.mark.parametrize("hook", ["eval_frame", PLAIN])
def test_both_hooks_record_the_same_calls(tmp_path, hook):
    # The events must not depend on the hook: cProfile's call counts, on either hook.
    r = run_script(tmp_path, """
        import cProfile, json, pstats, fasttrace
        def gen(n):
            for i in range(n):
                yield i
        class K:
            def m(self, x):
                return x + 1
        def boom():
            raise ValueError
        def main():
            k = K()
            total = sum(gen(50)) + sum(k.m(i) for i in range(20))
            for _ in range(30):
                try:
                    boom()
                except ValueError:
                    total += 1
            return total
        prof = cProfile.Profile()
        prof.enable(); main(); prof.disable()
        counts = {f"{name}:{line}": nc for (fn, line, name), (cc, nc, tt, ct, callers)
                  in pstats.Stats(prof).stats.items() if fn.endswith("script.py")}
        with fasttrace.start("h.ftrace", c_calls=False) as s:
            main()
        mine = {}
        for e in fasttrace.load("h.ftrace").events():
            f = e.function
            if e.kind == "call" and f.filename.endswith("script.py") and not e.synthetic:
                key = f"{f.name}:{f.lineno}"
                mine[key] = mine.get(key, 0) + 1
        print(json.dumps([s.hook, counts, mine]))
    """, env={"FASTTRACE_HOOK": hook})
    assert r.returncode == 0, r.stderr
    import json
    used, counts, mine = json.loads(r.stdout)
    assert used == hook
    # cProfile counts a generator once per resume as we do, and the <genexpr>s too
    assert counts and counts == mine
