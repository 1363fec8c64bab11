"""`fasttrace run --follow-children`: each Python process of a run writes its own complete file,
DIR/<name>.<pid>.ftrace, holding its own work (issue 11).

The programs print `WORK <pid>` from every process that ran child_work(), so that each test
knows which files must hold it; the first process's own work is parent_work(), which no child
runs.  Every child interpreter runs with cwd=tmp_path: the repository root would shadow the
installed package.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import serve_gunicorn

import fasttrace
from fasttrace import _children

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

PACKAGE_DIR = os.path.dirname(os.path.abspath(fasttrace.__file__))
BIN_DIR = os.path.dirname(sys.executable)  # gunicorn's console script is installed here

PROGRAM = textwrap.dedent("""
    import multiprocessing, os, subprocess, sys, time

    def spin(seconds):
        end, x = time.monotonic() + seconds, 0
        while time.monotonic() < end:
            for i in range(2000):
                x += i
        return x

    def child_work(_=None):
        spin(0.15)
        os.write(1, f"WORK {os.getpid()}\\n".encode())  # one write: no interleaving
        return os.getpid()

    def parent_work():
        spin(0.15)

    def run(how):
        if how == "fork":
            pid = os.fork()
            if pid == 0:
                child_work()
                os._exit(0)  # skips atexit, as multiprocessing's fork children do
            assert os.waitpid(pid, 0)[1] == 0
            pid = os.fork()
            if pid == 0:
                child_work()
                sys.exit(0)  # through the parent's frames and atexit, as gunicorn's workers
            assert os.waitpid(pid, 0)[1] == 0
        elif how in ("mp-fork", "mp-spawn", "mp-forkserver"):
            ctx = multiprocessing.get_context(how[3:])
            with ctx.Pool(2) as pool:  # leaving it terminates the workers: SIGTERM
                pool.map(child_work, range(4), chunksize=1)
            p = ctx.Process(target=child_work)
            p.start()
            p.join()
            assert p.exitcode == 0, p.exitcode
        elif how == "subprocess":
            subprocess.run([sys.executable, __file__, "--child", "work"], check=True)
        elif how == "grandchildren":
            for how in ("fork", "subprocess", "mp-spawn"):
                subprocess.run([sys.executable, __file__, "--child", how], check=True)
        elif how == "work":
            child_work()
        else:
            raise SystemExit(f"no such mode {how!r}")

    if __name__ == "__main__":
        if sys.argv[1] == "--child":
            run(sys.argv[2])
        else:
            parent_work()
            run(sys.argv[1])
""")

MODES = ["fork", "mp-fork", "mp-spawn", "mp-forkserver", "subprocess", "grandchildren"]


def _env(**extra):
    env = dict(os.environ)
    env.pop(_children.ENV, None)
    env["PATH"] = BIN_DIR + os.pathsep + env.get("PATH", "")
    env["PYTHONFAULTHANDLER"] = "1"  # a hung run's processes print their stacks at SIGABRT
    env.update(extra)
    return env


def _run(tmp_path, *args, timeout=120, env=None):
    """`python -m fasttrace run ARGS` in tmp_path: (pid, returncode, stdout, stderr); under
    --follow-children the pid is the first process's (it becomes the program)."""
    # A session of its own: a hang kills every process of the run, which may hold the pipes.
    proc = subprocess.Popen([sys.executable, "-m", "fasttrace", "run", *map(str, args)],
                            cwd=tmp_path, env=env or _env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Every process of the run prints where it is stuck (faulthandler), then dies.
        for sig in (signal.SIGABRT, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(3 if sig == signal.SIGABRT else 0)
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"fasttrace run {' '.join(map(str, args))} hung: {out}\n{err}")
    return proc.pid, proc.returncode, out, err


def _work_pids(stdout):
    return {int(p) for p in re.findall(r"^WORK (\d+)$", stdout, re.M)}


def _files(directory, name, timeout=30.0):
    """{pid: trace} of every file in `directory`, once each is complete: processes that
    outlive the first one (multiprocessing's resource tracker and forkserver) finish theirs
    when it has gone.  Every file must be named <name>.<pid>.ftrace."""
    deadline = time.monotonic() + timeout
    while True:
        files = sorted(Path(directory).iterdir())
        assert files, f"no file in {directory}"
        traces = {}
        for f in files:
            m = re.fullmatch(re.escape(name) + r"\.(\d+)\.ftrace", f.name)
            assert m, f"unexpected file {f.name}"
            traces[int(m[1])] = fasttrace.load(f)
        if all(t.complete for t in traces.values()) or time.monotonic() > deadline:
            return traces
        time.sleep(0.2)


def _functions(trace, torn=True):
    """{qualname: Function} recorded in the trace: called (trace mode) or sampled (with the
    samples flagged torn unless `torn` is false)."""
    found = {}
    if trace.header["mode"] == "sample":
        for s in trace.samples():
            if s.torn and not torn:
                continue
            for f in s.stack:
                found.setdefault(f.qualname, f)
    else:
        for e in trace.events():
            found.setdefault(e.function.qualname, e.function)
    return found


def _startup_frames(functions):
    """Frames of the interpreter's start-up (site, sitecustomize) or fasttrace's own."""
    return [f"{f.qualname} ({f.filename})" for f in functions.values()
            if f.filename.endswith(("sitecustomize.py", "/site.py")) or
            f.filename == "<frozen site>" or f.filename.startswith(PACKAGE_DIR)]


@pytest.mark.parametrize("sampling", [False, True], ids=["trace", "sample"])
@pytest.mark.parametrize("mode", MODES)
def test_each_process_writes_its_own_complete_file(tmp_path, mode, sampling):
    (tmp_path / "prog.py").write_text(PROGRAM)
    rate = ["--rate", "200"] if sampling else []
    pid, code, out, err = _run(tmp_path, "--follow-children", *rate, "-o", "traces",
                               "prog.py", mode)
    assert code == 0, err
    workers = _work_pids(out)
    # a pool's two workers may share its four tasks any way: one of them at least, and the
    # Process
    least = {"fork": 2, "subprocess": 1, "grandchildren": 5}.get(mode, 2)
    assert len(workers) >= least, out
    traces = _files(tmp_path / "traces", "prog")
    assert pid in traces and workers <= set(traces), (pid, workers, sorted(traces))
    incomplete = [p for p, t in traces.items() if not t.complete]
    assert not incomplete, f"files not finished: {incomplete}\n{err}"
    first = _functions(traces[pid])
    assert "parent_work" in first and "child_work" not in first  # the children wrote elsewhere
    assert re.search(rf"^fasttrace: wrote .* to .*prog\.{pid}\.ftrace", err, re.M), err
    for p in workers:
        mine = _functions(traces[p])
        assert "child_work" in mine, (p, sorted(mine))
        assert "parent_work" not in mine, p  # not a copy of the parent's file
    for p, t in traces.items():
        assert t.header["mode"] == ("sample" if sampling else "trace")
        # A torn sample is what a walk read before the stack moved under it (flagged so):
        # one taken during start-up may stop short of site's top level, where the cut is.
        startup = _startup_frames(_functions(t, torn=False))
        assert not startup, (p, startup)


def test_a_forked_child_opens_with_the_frames_it_was_forked_in(tmp_path):
    # The child's capture starts inside os.fork(): the frames open there are its trace's first
    # (synthetic) calls, and the return of os.fork() itself, which the hooks still report,
    # closes none of them.
    (tmp_path / "prog.py").write_text(PROGRAM)
    pid, code, out, err = _run(tmp_path, "--follow-children", "-o", "traces", "prog.py", "fork")
    assert code == 0, err
    traces = _files(tmp_path / "traces", "prog")
    for p in _work_pids(out):
        events = [(e.kind, e.function.qualname, e.synthetic) for e in traces[p].events()]
        assert events[:3] == [("call", "<module>", True), ("call", "run", True),
                              ("call", "child_work", False)], events[:6]
        stack = []
        for kind, name, _ in events:  # properly nested to the end: run is closed at the end
            if kind.endswith("call"):
                stack.append(name)
            else:
                assert stack and stack.pop() == name, (kind, name, stack)


def test_without_the_flag_a_forked_child_writes_nothing(tmp_path):
    (tmp_path / "prog.py").write_text(PROGRAM)
    for mode in ("fork", "mp-fork"):
        _, code, out, err = _run(tmp_path, "-o", f"{mode}.ftrace", "prog.py", mode)
        assert code == 0, err
        assert _work_pids(out), out  # the children did run
        trace = fasttrace.load(tmp_path / f"{mode}.ftrace")
        assert trace.complete
        functions = _functions(trace)
        assert "parent_work" in functions and "child_work" not in functions
    assert sorted(p.name for p in tmp_path.rglob("*.ftrace")) == ["fork.ftrace",
                                                                 "mp-fork.ftrace"]


def test_the_first_process_keeps_pythons_exit_status_and_signals(tmp_path):
    (tmp_path / "exits.py").write_text(textwrap.dedent("""
        import os, sys, time
        def work():
            return sum(range(1000))
        work()
        if sys.argv[1] == "code":
            sys.exit(3)
        if sys.argv[1] == "raise":
            raise ValueError("boom")
        open("ready", "w").close()
        time.sleep(60)
    """))
    pid, code, out, err = _run(tmp_path, "--follow-children", "exits.py", "code")
    assert code == 3, err
    directory = tmp_path / f"fasttrace-exits-{pid}"  # the default directory
    assert fasttrace.load(directory / f"exits.{pid}.ftrace").complete
    assert f"to {directory / f'exits.{pid}.ftrace'}" in err
    pid, code, out, err = _run(tmp_path, "--follow-children", "-o", "t", "exits.py", "raise")
    assert code == 1 and "ValueError: boom" in err
    assert set(re.findall(r'File "([^"]+)"', err)) == {str(tmp_path / "exits.py")}, err
    assert fasttrace.load(tmp_path / "t" / f"exits.{pid}.ftrace").complete
    # SIGTERM, with no handler of the program's: the file is finished, then it dies by it
    proc = subprocess.Popen([sys.executable, "-m", "fasttrace", "run", "--follow-children",
                             "-o", "t", "exits.py", "sleep"], cwd=tmp_path, env=_env(),
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "ready").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err
    trace = fasttrace.load(tmp_path / "t" / f"exits.{proc.pid}.ftrace")
    assert trace.complete and "work" in _functions(trace)
    assert "wrote" in err


def test_callbacks_run_in_every_process_after_its_capture_started(tmp_path):
    # What another feature (the HTTP endpoints) hooks into: a callback with the plan, in each
    # process, once its capture runs.  Here registered by the program, so forks have it.
    (tmp_path / "cb.py").write_text(textwrap.dedent("""
        import os, fasttrace
        from fasttrace import _children
        def started(plan):
            with open(os.path.join(plan.directory, f"started.{os.getpid()}"), "w") as f:
                f.write(f"{fasttrace.is_tracing()} {plan.extra.get('custom')}")
        _children.after_start.append(started)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        print("CHILD", pid)
    """))
    env = _env()
    _, code, out, err = _run(tmp_path, "--follow-children", "-o", "t", "cb.py", env=env)
    assert code == 0, err
    child = int(re.search(r"CHILD (\d+)", out)[1])
    assert (tmp_path / "t" / f"started.{child}").read_text() == "True None"
    # Fields the plan does not know are kept and passed on.
    plan = _children.Plan(str(tmp_path), "x", 1, extra={"custom": [1, 2]})
    again = _children.Plan.from_json(plan.to_json())
    assert again.extra == {"custom": [1, 2]} and again.directory == str(tmp_path)


def test_gunicorn_flask_two_workers_one_sampled_file_each(tmp_path):
    pytest.importorskip("flask")
    if not os.path.exists(os.path.join(BIN_DIR, "gunicorn")):
        pytest.skip("gunicorn is not installed beside this python")
    (tmp_path / "app.py").write_text(textwrap.dedent("""
        import os, time
        from flask import Flask

        app = Flask(__name__)

        def busy(seconds):
            end, x = time.monotonic() + seconds, 0
            while time.monotonic() < end:
                for i in range(1000):
                    x += i
            return x

        @app.route("/")
        def view():
            busy(0.05)
            return str(os.getpid())
    """))
    # HOME: recent gunicorns open a control socket in ~/.gunicorn
    master, text, served = serve_gunicorn(
        [sys.executable, "-m", "fasttrace", "run", "--follow-children", "--rate", "100",
         "-o", "traces", "gunicorn", "-w", "2", "-b", "127.0.0.1:0", "app:app"],
        tmp_path, _env(HOME=str(tmp_path)))
    workers = {int(p) for p in re.findall(r"Booting worker with pid: (\d+)", text)}
    assert workers == set(served), (workers, served)
    traces = _files(tmp_path / "traces", "gunicorn")
    assert set(traces) == workers | {master}, (sorted(traces), workers, master)
    for pid, trace in traces.items():
        assert trace.complete and trace.header["mode"] == "sample", pid
    for pid in workers:
        functions = _functions(traces[pid])
        assert "view" in functions and "busy" in functions, (pid, sorted(functions))
        assert functions["view"].filename.endswith("app.py")
    assert "view" not in _functions(traces[master])  # the master serves no request
    assert "wrote" in text and "2 other process(es)" in text, text


def test_the_bootstrap_chains_to_the_sitecustomize_it_hides(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("print('other sitecustomize ran')\n")
    check = ("import sys; print('fasttrace' in sys.modules, "
             f"sys.modules['sitecustomize'].__file__, {_children.BOOTSTRAP_DIR!r} in sys.path)")
    env = _env(PYTHONPATH=os.pathsep.join([_children.BOOTSTRAP_DIR, str(other)]))
    r = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    # without a plan: the other one runs, fasttrace is not even imported, sys.path is clean
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.splitlines() == ["other sitecustomize ran",
                                     f"False {other / 'sitecustomize.py'} False"]
    # with a plan: both
    plan = _children.Plan(str(tmp_path / "t"), "x", 1)
    (tmp_path / "t").mkdir()
    env[_children.ENV] = plan.to_json()
    r = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.splitlines()[0] == "other sitecustomize ran"
    assert r.stdout.splitlines()[1].startswith("True ")
    files = list((tmp_path / "t").iterdir())
    assert len(files) == 1 and fasttrace.load(files[0]).complete


@pytest.mark.parametrize("value", [
    "{not json",
    "[]",
    json.dumps({"v": 99, "dir": "/", "name": "x", "root": 1}),
    json.dumps({"v": 1, "dir": "relative", "name": "x", "root": 1}),
    json.dumps({"v": 1, "dir": "/", "name": "x", "root": 1, "rate": 10**9}),
    json.dumps({"v": 1, "dir": "/", "name": "x", "root": 1, "buffer_size": "8M"}),
])
def test_a_malformed_plan_is_one_line_and_the_program_runs(tmp_path, value):
    env = _env(PYTHONPATH=_children.BOOTSTRAP_DIR)
    env[_children.ENV] = value
    r = subprocess.run([sys.executable, "-c", "import fasttrace; print(fasttrace.is_tracing())"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "False\n", r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fasttrace: ignoring FASTTRACE_FOLLOW"), \
        r.stderr


def test_a_command_on_path_runs_if_it_is_a_python_script(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "hello").write_text("#!/usr/bin/env python3\n"
                                   "import sys\ndef hello():\n    print('hello', sys.argv[1:])\n"
                                   "hello()\n")
    (bin_dir / "shell").write_text("#!/bin/sh\necho hi\n")
    for f in ("hello", "shell"):
        (bin_dir / f).chmod(0o755)
    env = _env()
    env["PATH"] = str(bin_dir) + os.pathsep + env["PATH"]
    _, code, out, err = _run(tmp_path, "-o", "h.ftrace", "hello", "a", "-b", env=env)
    assert code == 0 and out == "hello ['a', '-b']\n", err
    assert "hello" in _functions(fasttrace.load(tmp_path / "h.ftrace"))
    _, code, out, err = _run(tmp_path, "shell", env=env)
    assert code == 2 and out == ""
    assert err == (f"fasttrace: error: cannot run 'shell': {bin_dir / 'shell'} is not a Python "
                   "script (fasttrace runs Python programs: script.py, -m module, -c code, or "
                   "a command whose #! line names python)\n")
    _, code, out, err = _run(tmp_path, "no-such-command-here", env=env)
    assert code == 2 and "no such file, nor a command on PATH" in err


@pytest.mark.parametrize("option", [["--flight", "5s"], ["--max-bytes", "10M"],
                                    ["--max-seconds", "5"], ["--keep", "3"]])
def test_follow_children_refuses_the_options_of_one_file(tmp_path, option):
    (tmp_path / "prog.py").write_text(PROGRAM)
    _, code, out, err = _run(tmp_path, "--follow-children", *option, "prog.py", "work")
    assert code == 2 and "--follow-children writes one file per process" in err
    assert not list(tmp_path.rglob("*.ftrace"))
