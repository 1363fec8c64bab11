"""`fasttrace run` for production: --flight, --duration, --max-bytes/--max-seconds/--keep."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import fasttrace
from helpers import fasttrace_cli

APP = textwrap.dedent("""
    import os, signal, sys, time

    def fib(n):
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    def serve(seconds):
        end = time.time() + seconds
        while time.time() < end:
            fib(14)

    serve(float(sys.argv[1]))
    if "--usr2" in sys.argv:
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.3)
        serve(0.1)
    if "--crash" in sys.argv:
        raise RuntimeError("the service fell over")
    print("done")
""")


@pytest.fixture
def app(tmp_path):
    p = tmp_path / "app.py"
    p.write_text(APP)
    return p


def test_flight_dumps_on_sigusr2_and_on_a_crash(tmp_path, app):
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    r = fasttrace_cli(tmp_path, "run", "--flight", "2s", "--flight-dir", str(dumps), str(app),
                      "0.3", "--usr2", "--crash")
    assert r.returncode == 1, r.stderr  # the program's own status
    assert "RuntimeError: the service fell over" in r.stderr
    assert "on SIGUSR2" in r.stderr and "on uncaught RuntimeError" in r.stderr
    assert "flight recorder stopped; it wrote 2 dump(s)" in r.stderr
    files = sorted(dumps.iterdir())
    assert len(files) == 2
    for f in files:
        t = fasttrace.load(f)
        assert t.header["origin"] == "flight"
        assert any(e.function.name == "fib" for e in t.events())
    assert not list(tmp_path.glob("*.ftrace"))  # nothing but dumps is written


def test_flight_without_a_trigger_writes_nothing(tmp_path, app):
    r = fasttrace_cli(tmp_path, "run", "--flight", "1", str(app), "0.1")
    assert r.returncode == 0, r.stderr
    assert "no dump was asked for" in r.stderr
    assert not list(tmp_path.glob("*.ftrace"))


def test_flight_in_sampling_mode_from_outside(tmp_path, app):
    # the usual production use: an operator sends SIGUSR2 to a running service
    p = subprocess.Popen([sys.executable, "-m", "fasttrace", "run", "--flight", "5s",
                          "--rate", "200", str(app), "3"], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    p.send_signal(signal.SIGUSR2)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    files = list(tmp_path.glob("fasttrace-flight-*.ftrace"))
    assert len(files) == 1, err
    t = fasttrace.load(files[0])
    assert t.mode == "sample" and any(f.name == "fib" for s in t.samples() for f in s.stack)


def test_duration(tmp_path, app):
    r = fasttrace_cli(tmp_path, "run", "--duration", "200ms", "-o", "d.ftrace", str(app), "1")
    assert r.returncode == 0, r.stderr
    assert "done" in r.stdout and "tracing stopped after --duration 0.2 s" in r.stderr
    t = fasttrace.load(tmp_path / "d.ftrace")
    assert not t.stats.truncated and 0.2e9 <= t.stats.duration_ns < 0.8e9


def test_rotation(tmp_path, app):
    r = fasttrace_cli(tmp_path, "run", "--max-bytes", "256K", "--keep", "2", "-o", "r.ftrace",
                      str(app), "0.5")
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in tmp_path.glob("r.*.ftrace"))
    assert len(files) == 2 and files[0] != "r.0001.ftrace", files
    assert "2 file(s) " in r.stderr and "fasttrace report 'r.*.ftrace'" in r.stderr
    rep = fasttrace_cli(tmp_path, "report", "r.*.ftrace")
    assert rep.returncode == 0 and "fib" in rep.stdout, rep.stderr
    # dump, the byte-level view, shows each file of the series in turn: each is a whole file
    d = fasttrace_cli(tmp_path, "dump", "--chunks-only", "r.*.ftrace")
    assert d.returncode == 0, d.stderr
    heads = [x for x in d.stdout.splitlines() if x.startswith("== ")]
    assert heads == [f"== {f}" for f in files]
    assert d.stdout.count("PREAMBLE version=2") == 2 and d.stdout.count("TRAILER") == 2
    d = fasttrace_cli(tmp_path, "dump", "nothing-*.ftrace")
    assert d.returncode == 1 and "no file matches this pattern" in d.stderr


@pytest.mark.parametrize("args, message", [
    (["--flight", "0"], "must be a positive time"),
    (["--flight", "ten"], "not a time"),
    (["--flight", "1", "-o", "x.ftrace"], "--flight writes only dumps"),
    (["--flight-dir", "d"], "need --flight"),
    (["--flight", "1", "--flight-dir", "/nonexistent"], "does not exist"),
    (["--max-bytes", "10"], "max_bytes must be at least"),
    (["--keep", "2"], "keep= needs"),
    (["--duration", "-1"], "must be a positive time"),
])
def test_bad_options(tmp_path, app, args, message):
    r = fasttrace_cli(tmp_path, "run", *args, str(app), "0.01")
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".ftrace")]
