"""The SIGTERM guard (src/ft_sigterm.h, fasttrace/_sigterm.py): a guarded handler runs even when
SIGTERM lands where CPython would never act on it, also in a forked child; and what the guard
refuses.  Each case runs in a process of its own: the guard changes a process-wide disposition.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

# The main thread (of the process, or of a forked child) waits on a lock only a signal would
# free; a second thread sends SIGTERM to itself, so CPython only sets a flag.  The handler says
# which process ran it and exits with 7.
PROGRAM = textwrap.dedent("""
    import multiprocessing as mp, os, signal, sys, threading, time
    from fasttrace import _core, _sigterm

    def handler(signum, frame):
        _core.sigterm_taken()
        print("handled in", "child" if os.getpid() != parent else "parent", flush=True)
        os._exit(7)

    def elsewhere():
        time.sleep(0.2)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        time.sleep(60)

    def wait_for_a_signal():
        lock = mp.Lock()
        lock.acquire()
        threading.Thread(target=elsewhere, daemon=True).start()
        lock.acquire()

    parent = os.getpid()
    _sigterm.install(handler)
    if sys.argv[1] == "fork":
        pid = os.fork()
        if pid == 0:
            wait_for_a_signal()
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status), flush=True)
    else:
        wait_for_a_signal()
""")


def _run(tmp_path, *args):
    (tmp_path / "prog.py").write_text(PROGRAM)
    return subprocess.run([sys.executable, "prog.py", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)


def test_a_guarded_handler_runs_when_sigterm_lands_on_another_thread(tmp_path):
    r = _run(tmp_path, "alone")
    assert r.returncode == 7, r.stderr
    assert r.stdout == "handled in parent\n"


def test_a_forked_child_is_guarded_too(tmp_path):
    # Timers are not inherited by fork(): the child makes its own, aimed at its main thread.
    r = _run(tmp_path, "fork")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "handled in child\nchild exit 7\n"


def test_what_the_guard_refuses(tmp_path):
    code = textwrap.dedent("""
        import errno, signal
        from fasttrace import _core
        try:
            _core.sigterm_guard(signal.SIGTERM)  # the default action: no handler to guard
        except OSError as e:
            print("default", errno.errorcode[e.errno])
        signal.signal(signal.SIGTERM, lambda *a: None)
        _core.sigterm_guard(signal.SIGTERM)
        _core.sigterm_guard(signal.SIGTERM)  # again: already guarded
        signal.signal(signal.SIGUSR1, lambda *a: None)
        try:
            _core.sigterm_guard(signal.SIGUSR1)  # one signal per process
        except OSError as e:
            print("other", errno.errorcode[e.errno])
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "default EINVAL\nother EINVAL\n"
