"""The flight recorder's signal trigger (FlightRecorder(signal=), `fasttrace run --flight`) dumps
from a thread of fasttrace's (src/ft_siglisten.h), whatever the main thread is doing; the
signal goes back to what it was at stop(), in a forked child, and when the program takes it.
Each case runs in a process of its own: the trigger changes a process-wide disposition.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import fasttrace

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

PRELUDE = textwrap.dedent("""
    import _thread, os, signal, sys, threading, time, fasttrace

    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    def dumps():
        return sorted(n for n in os.listdir(".") if n.startswith("fasttrace-flight-"))

    def wait_for_threads(n, seconds=20):  # threads started by _thread, running
        deadline = time.monotonic() + seconds
        while _thread._count() != n and time.monotonic() < deadline:
            time.sleep(0.01)
        return _thread._count()

    def wait_for_dumps(n, seconds=20):
        deadline = time.monotonic() + seconds
        while len(dumps()) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return len(dumps())

    rate = float(sys.argv[1]) if sys.argv[1] != "trace" else None
    def recorder():
        return fasttrace.FlightRecorder(seconds=5, max_bytes=8 << 20, signal=signal.SIGUSR2,
                                        directory=".", rate=rate)
""")


def _run(tmp_path, body, mode="trace"):
    (tmp_path / "prog.py").write_text(PRELUDE + textwrap.dedent(body))
    return subprocess.run([sys.executable, "prog.py", mode], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("mode", ["trace", "500"])
def test_a_signal_dumps_while_the_main_thread_waits_in_c(tmp_path, mode):
    # The main thread waits on a lock that only the other thread frees, and the signal lands
    # on that other thread: CPython would only set a flag, and a Python handler would run
    # when the main thread wakes, after the dump was wanted.
    r = _run(tmp_path, """
        rec = recorder().start()
        fib(16)
        held = threading.Lock()
        held.acquire()
        seen = []

        def poke():
            time.sleep(0.2)
            signal.pthread_kill(threading.get_ident(), signal.SIGUSR2)
            seen.append(wait_for_dumps(1))  # while the main thread still waits
            held.release()

        threading.Thread(target=poke).start()
        held.acquire()
        rec.stop()
        print("dumped while the main thread waited:", seen[0])
    """, mode)
    assert r.returncode == 0, r.stderr
    assert "dumped while the main thread waited: 1" in r.stdout, (r.stdout, r.stderr)
    assert "on SIGUSR2" in r.stderr, r.stderr
    (dump,) = [p for p in tmp_path.iterdir() if p.name.startswith("fasttrace-flight-")]
    trace = fasttrace.load(dump)
    if mode == "trace":
        assert any(e.function.name == "fib" for e in trace.events())
    else:
        names = {t.name for t in trace.threads}
        assert "MainThread" in names, names
        # the listening thread is fasttrace's: no sample of it
        assert all("_listen" not in f.name for f in trace.functions), trace.functions


def test_each_signal_dumps_and_stop_ends_the_listening_thread(tmp_path):
    r = _run(tmp_path, """
        threads = _thread._count()
        for round_ in range(3):
            rec = recorder().start()
            fib(12)
            assert wait_for_threads(threads + 1) == threads + 1, "no listening thread"
            os.kill(os.getpid(), signal.SIGUSR2)
            wait_for_dumps(round_ + 1)
            rec.stop()
            assert len(rec.dumps) == 1, (round_, rec.dumps)
            assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
            assert wait_for_threads(threads) == threads, "the listening thread stays"
        print("dumps:", len(dumps()))
    """)
    assert r.returncode == 0, r.stderr
    assert "dumps: 3" in r.stdout, (r.stdout, r.stderr)


def test_the_programs_own_handler_takes_the_signal(tmp_path):
    r = _run(tmp_path, """
        rec = recorder().start()
        got = []
        signal.signal(signal.SIGUSR2, lambda *_: got.append(1))
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.5)
        rec.stop()
        os.kill(os.getpid(), signal.SIGUSR2)  # stop() leaves the program's handler in place
        time.sleep(0.5)
        print("handled:", len(got), "dumps:", len(dumps()))
    """)
    assert r.returncode == 0, r.stderr
    assert "handled: 2 dumps: 0" in r.stdout, (r.stdout, r.stderr)


def test_a_forked_child_dies_by_the_signal_as_without_a_recorder(tmp_path):
    # The child does not continue the parent's recorder: SIGUSR2 has its default action there.
    r = _run(tmp_path, """
        threads = _thread._count()
        rec = recorder().start()
        wait_for_threads(threads + 1)
        time.sleep(0.2)  # the listening thread waits: the child copies that state
        pid = os.fork()
        if pid == 0:
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(5)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        os.kill(os.getpid(), signal.SIGUSR2)  # the parent still dumps
        n = wait_for_dumps(1)
        rec.stop()
        print("child:", os.waitstatus_to_exitcode(status), "dumps:", n)
    """)
    assert r.returncode == 0, r.stderr
    assert f"child: {-int(__import__('signal').SIGUSR2)} dumps: 1" in r.stdout, (r.stdout, r.stderr)


def test_one_listened_signal_at_a_time():
    # The native API underneath: a second signal is refused, and a closed generation's wait
    # returns at once.
    r = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import errno, signal
        from fasttrace import _core
        signal.signal(signal.SIGUSR1, lambda *_: None)
        signal.signal(signal.SIGUSR2, lambda *_: None)
        g = _core.signal_listen(signal.SIGUSR1)
        try:
            _core.signal_listen(signal.SIGUSR2)
        except OSError as e:
            assert e.errno == errno.EBUSY, e
        else:
            raise AssertionError("a second signal was taken")
        _core.signal_unlisten()
        assert _core.signal_wait(g) is False
        g2 = _core.signal_listen(signal.SIGUSR2)
        assert g2 > g
        _core.signal_unlisten()
        print("ok")
    """)], capture_output=True, text=True, timeout=60, cwd=os.path.dirname(__file__))
    assert r.stdout.strip() == "ok", r.stderr
