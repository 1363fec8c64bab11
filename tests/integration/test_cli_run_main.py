"""`fasttrace run` shows the program what plain python shows it (`__main__`'s attributes, the
code's file name, tracebacks), keeps its own and runpy's frames out of the trace, checks
--buffer-size itself, and reports its own session (issue 8)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
from helpers import fasttrace_cli

import fasttrace

# Prints what the program sees, then reads a file beside __file__ after chdir("/"), then fails.
SHOW = """
    import json, os, sys

    def describe(v):
        if v is None or isinstance(v, (str, int, dict)):
            return v
        if isinstance(v, type):
            return "class " + v.__name__
        out = {"type": type(v).__name__}
        for attr in ("name", "path", "origin", "parent", "cached"):
            if hasattr(v, attr):
                out[attr] = describe(getattr(v, attr))
        return out

    seen = {k: describe(v) for k, v in globals().items()
            if k.startswith("__") and k != "__builtins__"}
    seen["__builtins__"] = describe(__builtins__)
    seen["argv"] = sys.argv
    seen["path0"] = sys.path[0]
    seen["co_filename"] = sys._getframe().f_code.co_filename
    seen["main_module_is_globals"] = sys.modules["__main__"].__dict__ is globals()
    print(json.dumps(seen, sort_keys=True))
    if "__file__" in globals():
        os.chdir("/")
        with open(os.path.join(os.path.dirname(__file__), "data.txt")) as f:
            print("beside __file__:", f.read())

    def fail():
        raise ValueError("boom")

    fail()
"""


@pytest.fixture
def programs(tmp_path):
    body = textwrap.dedent(SHOW)
    (tmp_path / "show.py").write_text(body)
    (tmp_path / "data.txt").write_text("found")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(body)
    (pkg / "data.txt").write_text("found in pkg")
    app = tmp_path / "app"
    app.mkdir()
    (app / "__main__.py").write_text(body)
    (app / "data.txt").write_text("found in app")
    return tmp_path, body


def _program_frames(stderr):
    """The traceback's lines from the program's own frames on (no runpy, no fasttrace)."""
    lines = stderr.splitlines()
    out, skip = [], False
    for line in lines:
        if line.startswith("fasttrace: "):
            continue
        if line.startswith('  File "'):
            skip = "runpy" in line
        if not skip:
            out.append(line)
    return out


@pytest.mark.parametrize("target", [["show.py"], ["-m", "show"], ["-m", "pkg"], ["app"],
                                    ["-c", "SOURCE"]], ids=" ".join)
def test_main_module_as_plain_python_sets_it(programs, target):
    d, body = programs
    target = [body if a == "SOURCE" else a for a in target]
    plain = subprocess.run([sys.executable, *target, "x"], cwd=d, capture_output=True,
                           text=True, timeout=60)
    traced = fasttrace_cli(d, "run", "-o", "t.ftrace", *target, "x")
    assert plain.returncode == traced.returncode == 1, traced.stderr
    assert json.loads(traced.stdout.splitlines()[0]) == json.loads(plain.stdout.splitlines()[0])
    assert traced.stdout == plain.stdout  # and the file beside __file__ is found after chdir
    assert _program_frames(traced.stderr) == _program_frames(plain.stderr)
    if target[0] != "-c":
        assert "beside __file__: found" in traced.stdout
        assert re.search(r'File "/[^"]*", line \d+, in fail', traced.stderr), traced.stderr
    assert traced.stderr.splitlines()[-1].startswith("fasttrace: wrote ")


def test_syntax_error_and_missing_module(tmp_path):
    (tmp_path / "bad.py").write_text("x = (\n")
    plain = subprocess.run([sys.executable, "bad.py"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    traced = fasttrace_cli(tmp_path, "run", "bad.py")
    assert traced.returncode == plain.returncode == 1
    assert "fasttrace/" not in traced.stderr and "Traceback" not in traced.stderr
    assert f'File "{tmp_path / "bad.py"}", line 1' in traced.stderr
    assert traced.stderr.splitlines()[-1] == plain.stderr.splitlines()[-1]
    r = fasttrace_cli(tmp_path, "run", "-m", "no_such_module_xyz")
    assert r.returncode == 1
    assert r.stderr == ("fasttrace: error: cannot run module 'no_such_module_xyz': "
                        "no module named no_such_module_xyz\n")


# ---- item 14: no runner frames ----------------------------------------------------------

MODULE = """
import threading, time

def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass

def work():
    spin(0.2)

threading.Thread(target=work, name="late").start()  # still running when the module ends
spin(0.05)
"""


def _runner_functions(functions):
    return sorted({f"{f.qualname} ({os.path.basename(f.filename)})" for f in functions
                   if "runpy" in f.filename or os.sep + "fasttrace" + os.sep in f.filename})


def test_module_trace_has_no_runner_frames(tmp_path):
    (tmp_path / "mod.py").write_text(MODULE)
    r = fasttrace_cli(tmp_path, "run", "-o", "m.ftrace", "-m", "mod")
    assert r.returncode == 0, r.stderr
    trace = fasttrace.load(tmp_path / "m.ftrace")
    main = next(t.id for t in trace.threads if t.name == "MainThread")
    first = next(iter(trace.events(main)))
    # as for a script: the module's frame is the root, with nothing above it
    assert (first.kind, first.function.qualname) == ("call", "<module>")
    # nothing of runpy's, and nothing of fasttrace's runner
    called = {e.function for e in trace.events() if e.kind in ("call", "c_call")}
    assert _runner_functions(called) == []


@pytest.mark.parametrize("target", [["-m", "mod"], ["mod.py"]], ids=" ".join)
def test_sampled_run_has_no_runner_frames(tmp_path, target):
    (tmp_path / "mod.py").write_text(MODULE)
    r = fasttrace_cli(tmp_path, "run", "--rate", "500", "-o", "s.ftrace", *target)
    assert r.returncode == 0, r.stderr
    trace = fasttrace.load(tmp_path / "s.ftrace")
    main = next(t.id for t in trace.threads if t.name == "MainThread")
    # the module is the root (the sampler leaves out what the runner itself calls, such as
    # joining the "late" thread at exit)
    assert {s.stack[0].qualname for s in trace.samples(main)} == {"<module>"}
    assert _runner_functions(f for s in trace.samples() for f in s.stack) == []


# ---- item 4: --buffer-size --------------------------------------------------------------

@pytest.mark.parametrize("size, message", [
    ("99999999999999999999", "argument --buffer-size: must be at most "),
    ("1K", "argument --buffer-size: must be at least 256 KiB, got '1K'"),
    ("infK", "argument --buffer-size: not a size: 'infK'"),
    ("-1", "argument --buffer-size: must be at least 256 KiB, got '-1'"),
])
def test_buffer_size_is_checked_by_the_command_line(tmp_path, size, message):
    r = fasttrace_cli(tmp_path, "run", "--buffer-size", size, "-c", "print('ran')")
    assert r.returncode == 2 and r.stdout == ""
    assert message in r.stderr
    assert "Traceback" not in r.stderr and "buffer_size" not in r.stderr


def test_buffer_size_units(tmp_path):
    r = fasttrace_cli(tmp_path, "run", "--buffer-size", "1MiB", "-o", "t.ftrace", "-c", "pass")
    assert r.returncode == 0, r.stderr
    assert fasttrace.load(tmp_path / "t.ftrace").header["buffer_size"] == 1 << 20


# ---- item 15: a program that stops the command's trace ----------------------------------

OWN_TRACE = """
import sys, fasttrace

def work():
    return sum(range(10))

work()
fasttrace.stop()
fasttrace.start("own.ftrace")
for _ in range(500):
    work()
if sys.argv[1] == "stop":
    fasttrace.stop()
"""


@pytest.mark.parametrize("own", ["stop", "keep"])
def test_program_that_stops_the_trace(tmp_path, own):
    (tmp_path / "p.py").write_text(OWN_TRACE)
    r = fasttrace_cli(tmp_path, "run", "-o", "cli.ftrace", "p.py", own)
    assert r.returncode == 0, r.stderr
    ours = fasttrace.load(tmp_path / "cli.ftrace")
    theirs = fasttrace.load(tmp_path / "own.ftrace")
    assert not ours.stats.truncated and not theirs.stats.truncated
    assert theirs.stats.events > 1000 > ours.stats.events
    line = next(x for x in r.stderr.splitlines() if "cli.ftrace" in x)
    assert line.startswith("fasttrace: the program stopped the trace itself; wrote "
                           f"{ours.stats.events:,} events "), r.stderr
    if own == "keep":  # the program's own trace is stopped at exit, as it would be anyway
        assert "still running at exit" in r.stderr and "own.ftrace" in r.stderr
