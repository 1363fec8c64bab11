"""`fasttrace run`: the traced program sees plain python, and the trace is always complete."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import fasttrace

PROGRAM = """
    import json, os, sys, threading
    def work():
        return sum(range(100))
    t = threading.Thread(target=work, name="worker")
    t.start(); t.join()
    print(json.dumps({"argv": sys.argv, "name": __name__, "file": __file__,
                      "path0": sys.path[0], "stdin": sys.stdin.read()}))
    code = os.environ.get("EXIT")
    if code == "raise":
        raise ValueError("boom")
    if code:
        sys.exit(int(code))
"""


def fasttrace_cmd(*args):
    return [sys.executable, "-m", "fasttrace", *args]


def run(tmp_path, *args, env=None, stdin=""):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(fasttrace_cmd(*args), capture_output=True, text=True, input=stdin,
                          cwd=tmp_path, env=full_env, timeout=60)


@pytest.fixture
def program(tmp_path):
    p = tmp_path / "prog.py"
    p.write_text(textwrap.dedent(PROGRAM))
    return p


def test_script_sees_plain_python(tmp_path, program):
    import json

    r = run(tmp_path, "run", "-o", "t.ftrace", "prog.py", "a", "--flag", stdin="hello")
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout)
    assert seen == {"argv": ["prog.py", "a", "--flag"], "name": "__main__",
                    "file": str(tmp_path / "prog.py"),
                    "path0": str(tmp_path), "stdin": "hello"}
    assert r.stderr.count("\n") == 1 and "fasttrace: wrote" in r.stderr and "t.ftrace" in r.stderr
    trace = fasttrace.load(tmp_path / "t.ftrace")
    assert not trace.stats.truncated
    # a short thread, named only after its first ~50 events on 3.12+
    assert {t.name for t in trace.threads} == {"MainThread", "worker"}
    # the program's own first frame opens the trace, and nothing of the runner's is in it:
    # not its frames, not exec(), not the calls that stop the trace
    main_id = next(t.id for t in trace.threads if t.name == "MainThread")
    events = list(trace.events(main_id))
    assert (events[0].kind, events[0].function.qualname) == ("call", "<module>")
    assert events[0].function.filename.endswith("prog.py")
    assert not [e for e in events if "fasttrace" in e.function.filename]
    assert any(e.function.qualname == "work" for e in trace.events())


@pytest.mark.parametrize("code", ["0", "3", "raise"])
def test_exit_codes_and_complete_traces(tmp_path, program, code):
    r = run(tmp_path, "run", "-o", "t.ftrace", "prog.py", env={"EXIT": code})
    expected = {"0": 0, "3": 3, "raise": 1}[code]
    assert r.returncode == expected, r.stderr
    if code == "raise":
        assert "Traceback" in r.stderr and "ValueError: boom" in r.stderr
        assert "fasttrace/" not in r.stderr.split("ValueError")[0], "our frames are hidden"
    assert not fasttrace.load(tmp_path / "t.ftrace").stats.truncated


def test_module_and_code(tmp_path):
    (tmp_path / "mymod.py").write_text("import sys\nprint(__name__, sys.argv[1:])\n")
    r = run(tmp_path, "run", "-o", "m.ftrace", "-m", "mymod", "x", "-y")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "__main__ ['x', '-y']"
    r = run(tmp_path, "run", "-o", "c.ftrace", "-c", "import sys; print(sys.argv)", "z")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['-c', 'z']"
    for name in ("m.ftrace", "c.ftrace"):
        assert not fasttrace.load(tmp_path / name).stats.truncated


def test_default_output_name_has_program_and_pid(tmp_path, program):
    r1 = run(tmp_path, "run", "prog.py")
    r2 = run(tmp_path, "run", "prog.py")
    assert r1.returncode == r2.returncode == 0
    outs = sorted(p.name for p in tmp_path.glob("fasttrace-prog-*.ftrace"))
    assert len(outs) == 2, "a second run does not overwrite the first"


def test_no_c_calls_option(tmp_path, program):
    r = run(tmp_path, "run", "--no-c-calls", "--buffer-size", "1M", "-o", "t.ftrace", "prog.py")
    assert r.returncode == 0, r.stderr
    trace = fasttrace.load(tmp_path / "t.ftrace")
    assert trace.header["c_calls"] is False
    assert trace.header["buffer_size"] == 1 << 20


def signal_when_ready(tmp_path, args, sig, after=0.0, preexec_fn=None):
    """Runs `fasttrace run ARGS`, sends `sig` once the program prints "ready" (and `after`
    seconds more), and returns (proc, the rest of stdout, stderr).  A run that does not end
    says where its threads wait."""
    proc = subprocess.Popen(fasttrace_cmd("run", *args), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(after)
        proc.send_signal(sig)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # What each thread waits in, then what the process wrote: a hang must say where.
            tasks = Path(f"/proc/{proc.pid}/task")
            state = [(t.name, (t / "comm").read_text().strip(), (t / "wchan").read_text())
                     for t in tasks.iterdir()] if tasks.exists() else []
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"no exit 60 s after {signal.Signals(sig).name}; threads (tid, name, "
                        f"wchan): {state}; stderr: {err}")
    finally:
        proc.kill()
    return proc, out, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signals_leave_a_complete_trace(tmp_path, sig):
    (tmp_path / "wait.py").write_text(textwrap.dedent("""
        import time
        def tick():
            time.sleep(0.01)
        print("ready", flush=True)
        while True:
            tick()
    """))
    # A shell without job control starts background commands with SIGINT ignored, and Python
    # then leaves it ignored (as the program would under plain python): the child gets the
    # default disposition, so that this test does not depend on how the suite was started.
    proc, _, err = signal_when_ready(tmp_path, ["-o", "s.ftrace", "wait.py"], sig, after=0.2,
                                     preexec_fn=lambda: signal.signal(signal.SIGINT,
                                                                      signal.SIG_DFL))
    assert proc.returncode == -sig, err  # dies by the signal, as plain python does
    assert "fasttrace: wrote" in err
    trace = fasttrace.load(tmp_path / "s.ftrace")
    assert not trace.stats.truncated
    assert sum(1 for e in trace.events() if e.function.qualname == "tick") > 4


def test_an_ignored_sigterm_stays_ignored(tmp_path):
    (tmp_path / "ignored.py").write_text(textwrap.dedent("""
        import time
        print("ready", flush=True)
        time.sleep(1)
        print("done")
    """))
    proc, out, err = signal_when_ready(tmp_path, ["-o", "s.ftrace", "ignored.py"],
                                       signal.SIGTERM, preexec_fn=lambda: signal.signal(
                                           signal.SIGTERM, signal.SIG_IGN))
    assert proc.returncode == 0, err
    assert out == "done\n"
    assert not fasttrace.load(tmp_path / "s.ftrace").stats.truncated


# The main thread waits on a lock that only a signal would free, as a multiprocessing pool's
# worker does when Pool.terminate() SIGTERMs it; the signal lands on another thread, so CPython
# only sets a flag that the main thread never checks (ft_sigterm.h).  Without fasttrace the
# default action ends such a process; under fasttrace the handler must still run.
SIGTERM_ELSEWHERE = """
import multiprocessing as mp, signal, sys, threading, time
def tick():
    time.sleep(0.001)
def elsewhere():
    if sys.argv[1] == "masked":
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    for _ in range(20):
        tick()
    if sys.argv[1] == "masked":
        print("ready", flush=True)  # the test sends SIGTERM: only this thread can take it
    else:
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
    time.sleep(60)
if sys.argv[1] == "masked":  # the handler can never run: the main thread blocks SIGTERM
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
lock = mp.Lock()
lock.acquire()
threading.Thread(target=elsewhere, daemon=True).start()
lock.acquire()
"""


@pytest.mark.parametrize("mode", [[], ["--rate", "200"], ["--follow-children"]])
def test_sigterm_on_another_thread_still_finishes_the_trace(tmp_path, mode):
    (tmp_path / "elsewhere.py").write_text(SIGTERM_ELSEWHERE)
    proc = subprocess.Popen(fasttrace_cmd("run", "-o", "s.ftrace", *mode, "elsewhere.py", "self"),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGTERM, err
    assert "fasttrace: wrote" in err, err  # the handler ran: the file is finished
    out = tmp_path / "s.ftrace"
    if out.is_dir():  # --follow-children: one file per process (3.15: the resource tracker's)
        (out,) = [f for f in out.iterdir() if f".{proc.pid}." in f.name]
    trace = fasttrace.load(out)
    assert not trace.stats.truncated
    if mode == ["--rate", "200"]:
        assert any(f.name == "elsewhere" for s in trace.samples() for f in s.stack)
    else:
        assert sum(1 for e in trace.events() if e.function.qualname == "tick") == 40


def test_sigterm_ends_the_process_when_no_handler_can_run(tmp_path):
    # As without fasttrace, SIGTERM ends the program; the trace reads to its last chunk.
    (tmp_path / "elsewhere.py").write_text(SIGTERM_ELSEWHERE)
    proc, _, err = signal_when_ready(tmp_path, ["-o", "s.ftrace", "elsewhere.py", "masked"],
                                     signal.SIGTERM)
    assert proc.returncode == -signal.SIGTERM, err
    assert "fasttrace: wrote" not in err  # the handler never ran
    trace = fasttrace.load(tmp_path / "s.ftrace")
    assert trace.header["pid"] == proc.pid


@pytest.mark.parametrize("args, code, message", [
    (["run", "missing.py"], 2, "cannot run 'missing.py': no such file"),
    (["run", "-m", "no_such_module_xyz"], 1, "no module named no_such_module_xyz"),
    (["run", "-o", "/sys/x.ftrace", "-c", "pass"], 2, "permission denied"),
    (["run", "-o", "nodir/x.ftrace", "-c", "pass"], 2, "does not exist"),
])
def test_errors_are_one_line(tmp_path, args, code, message):
    r = run(tmp_path, *args)
    assert r.returncode == code
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0


def test_console_script(tmp_path, program):
    exe = os.path.join(os.path.dirname(sys.executable), "fasttrace")
    if not os.path.exists(exe):
        pytest.skip("console script not installed next to this python")
    r = subprocess.run([exe, "run", "-o", "t.ftrace", "prog.py"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([exe, "info", "t.ftrace"], capture_output=True, text=True, cwd=tmp_path,
                       timeout=60)
    assert r.returncode == 0 and "complete   yes" in r.stdout and "MainThread" in r.stdout
    # -m finds modules of the working directory (sys.path[0]), not of the script's bin/
    (tmp_path / "mymod.py").write_text("print('mymod ran')\n")
    r = subprocess.run([exe, "run", "-o", "m.ftrace", "-m", "mymod"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == 0 and r.stdout == "mymod ran\n", r.stderr
