"""`fasttrace run --http ADDR`: the endpoints inside a program with no code change, and with
--follow-children in every Python process of it, each on the next free port."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import fasttrace
from helpers import http_get as get

PROGRAM = """
import multiprocessing as mp, os, sys, time

def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def child_work(seconds):
    t = time.time()
    while time.time() - t < seconds:
        fib(15)
    return os.getpid()

def parent_work(seconds):
    t = time.time()
    while time.time() - t < seconds:
        fib(15)

if __name__ == "__main__":
    seconds = float(sys.argv[1])
    if len(sys.argv) > 2:
        mp.set_start_method(sys.argv[2])
        with mp.Pool(2) as pool:
            r = pool.map_async(child_work, [seconds, seconds])
            parent_work(seconds)
            print(sorted(r.get()))
    else:
        parent_work(seconds)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Run:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        (tmp_path / "prog.py").write_text(PROGRAM)
        self.err_path = tmp_path / "stderr.txt"
        self.err = open(self.err_path, "w")
        # a hung run's processes print where each thread is stuck at SIGABRT (wait())
        env = dict(os.environ, PYTHONFAULTHANDLER="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "fasttrace", "run", *args],
                                     cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                     stderr=self.err, start_new_session=True)

    def url(self) -> str:
        deadline = time.monotonic() + 60
        while True:
            m = re.search(r"serving (http://\S+/debug/fasttrace/)", self.err_path.read_text())
            if m:
                return m.group(1)
            assert self.proc.poll() is None, self.err_path.read_text()
            assert time.monotonic() < deadline, self.err_path.read_text()
            time.sleep(0.05)

    def wait(self, timeout: float = 120) -> str:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Every process of the run (the children share its session) prints its threads'
            # stacks (faulthandler), then dies.
            for sig in (signal.SIGABRT, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                time.sleep(3 if sig == signal.SIGABRT else 0)
            out, _ = self.proc.communicate()
            raise AssertionError(f"the run did not end: {out.decode()}\n"
                                 f"{self.err_path.read_text()}")
        self.err.close()
        return out.decode()

    def stderr(self) -> str:
        return self.err_path.read_text()


def test_http_alone_records_on_demand_only(tmp_path):
    run = Run(tmp_path, "--http", "127.0.0.1:0", "prog.py", "4")
    base = run.url()
    st = json.loads(get(base + "?format=json")[1])
    assert st["recording"] is None and st["pid"] == run.proc.pid
    code, body = get(base + "trace?seconds=0.5")
    assert code == 200, body
    (tmp_path / "t.ftrace").write_bytes(body)
    trace = fasttrace.load(tmp_path / "t.ftrace")
    assert "parent_work" in {e.function.name for e in trace.events()}
    code, body = get(base + "trace?seconds=0.5&rate=200")
    assert code == 200, body
    (tmp_path / "s.ftrace").write_bytes(body)
    trace = fasttrace.load(tmp_path / "s.ftrace")
    # The runner's frames are cut, as with --rate: every stack is the program's alone.  (Not
    # "starts at <module>": on 3.9, in some runs, many walks of this recursive program end
    # early without being flagged torn, with start(rate=) too; noted for the sampler.)
    samples = [s for s in trace.samples() if s.stack]
    assert samples
    others = {f.filename for s in samples for f in s.stack if not f.filename.endswith("prog.py")}
    assert others == set(), others
    assert any(s.stack[0].name == "<module>" for s in samples)
    run.wait()
    assert run.proc.returncode == 0, run.stderr()
    # nothing was recorded by itself: no trace file of the run
    assert not list(tmp_path.glob("fasttrace-*.ftrace"))


def test_http_with_flight_answers_from_the_recorder(tmp_path):
    # A short window (small dumps) and a program that outlives the requests: a response still
    # streaming when the program exits is cut, as a Go server's would be (slow under ASan).
    run = Run(tmp_path, "--http", "127.0.0.1:0", "--flight", "1s", "prog.py", "10")
    base = run.url()
    deadline = time.monotonic() + 30
    while json.loads(get(base + "?format=json")[1])["recording"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    code, body = get(base + "trace?seconds=0.5")
    assert code == 200, body
    (tmp_path / "f.ftrace").write_bytes(body)
    dump = fasttrace.load(tmp_path / "f.ftrace")
    assert dump.header["origin"] == "flight"
    assert "parent_work" in {e.function.name for e in dump.events()}
    assert get(base + "flight")[0] == 200
    run.wait()
    assert run.proc.returncode == 0, run.stderr()


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_every_child_serves_and_the_first_lists_them(tmp_path, method):
    port = free_port()
    run = Run(tmp_path, "--http", f"127.0.0.1:{port}", "--follow-children", "prog.py", "10",
              method)
    base = run.url()
    assert base == f"http://127.0.0.1:{port}/debug/fasttrace/"
    deadline = time.monotonic() + 30
    while True:  # the pool's two workers (and spawn's resource tracker, forkserver's server)
        children = json.loads(get(base + "?format=json")[1])["children"]
        if len(children) >= 2:
            break
        assert time.monotonic() < deadline, (children, run.stderr())
        time.sleep(0.1)
    assert all(c["url"] != base for c in children)
    assert len({c["url"] for c in children}) == len(children)
    for c in children:
        assert c["url"].startswith("http://127.0.0.1:")
        assert int(c["url"].split(":")[2].split("/")[0]) > port
    # a worker's own endpoints: a trace of its work.  Children register as they start (the
    # forkserver and the resource tracker may come before the workers): ask each new one.
    found = False
    asked: set = set()
    deadline = time.monotonic() + 30
    while not found:
        assert time.monotonic() < deadline, ("no child's trace shows the pool's work", asked)
        children = json.loads(get(base + "?format=json")[1])["children"]
        for c in children:
            if c["pid"] in asked:
                continue
            asked.add(c["pid"])
            code, body = get(c["url"] + "trace?seconds=0.5&rate=200")
            assert code == 200, body
            path = tmp_path / f"child-{c['pid']}.ftrace"
            path.write_bytes(body)
            trace = fasttrace.load(path)
            assert trace.header["pid"] == c["pid"]
            found |= "child_work" in {f.name for s in trace.samples() for f in s.stack}
        time.sleep(0.1)
    out = run.wait()
    assert run.proc.returncode == 0, run.stderr()
    assert "[" in out  # the pool answered
    assert "Traceback" not in run.stderr(), run.stderr()


def test_bad_http_options(tmp_path):
    (tmp_path / "prog.py").write_text(PROGRAM)
    for args, text in (
        (["--http", "nonsense", "prog.py", "0"], "is not HOST:PORT"),
        (["--http", "127.0.0.1:70000", "prog.py", "0"], "between 0 and 65535"),
        (["--http", ":0", "-o", "x.ftrace", "prog.py", "0"], "records on demand"),
        (["--http", ":0", "--rate", "100", "prog.py", "0"], "records on demand"),
        (["--http", ":0", "--follow-children", "--flight", "5s", "prog.py", "0"],
         "does not go with --flight"),
    ):
        r = subprocess.run([sys.executable, "-m", "fasttrace", "run", *args], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert text in r.stderr, (args, r.stderr)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "fasttrace", "run", "--http",
                            f"127.0.0.1:{port}", "prog.py", "0"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Address already in use" in r.stderr, r.stderr
