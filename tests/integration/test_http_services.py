"""fasttrace.http in real services, under a bounded load: Flask under gunicorn (2 workers,
threads; the WSGI mount, and a standalone server per worker started in post_fork) and
Starlette under uvicorn (the ASGI mount).  Every load request must succeed while 2 s traces
and profiles are fetched; every trace must load and every profile open in go tool pprof.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import fasttrace
from helpers import http_get as get

SERVICES = Path(__file__).resolve().parent.parent / "services"
GO = shutil.which("go")


def free_ports(n: int) -> int:
    """A port p with p .. p+n-1 all free now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n >= 65536:
            continue
        try:
            held = []
            for p in range(base, base + n):
                c = socket.socket()
                held.append(c)
                c.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            for c in held:
                c.close()
        return base
    raise AssertionError("no run of free ports")


def wait_up(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if get(url, timeout=5)[0] == 200:
                return
        except OSError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"the service exited: {proc.communicate()[1].decode()}")
        assert time.monotonic() < deadline, f"{url} did not come up"
        time.sleep(0.1)


class Load:
    """A bounded load: `clients` threads, each one request at a time, with a pause between."""

    def __init__(self, base: str, clients: int = 4, pause: float = 0.005) -> None:
        self.base = base
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list = []
        self.threads = [threading.Thread(target=self._client, args=(pause,))
                        for _ in range(clients)]

    def _client(self, pause: float) -> None:
        i = 0
        while not self.stop.is_set():
            path = "/slow" if i % 4 == 0 else "/"
            i += 1
            try:
                code, _ = get(self.base + path, timeout=30)
            except OSError as e:
                self.failures.append((path, repr(e)))
                continue
            if code == 200:
                self.ok += 1
            else:
                self.failures.append((path, code))
            time.sleep(pause)

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def check_trace(body: bytes, path: Path, function: str) -> None:
    path.write_bytes(body)
    trace = fasttrace.load(path)
    assert trace.complete
    seen = {e.function for e in trace.events()} if trace.mode == "trace" else \
        {f for s in trace.samples() for f in s.stack}
    assert function in {f.name for f in seen}, sorted(f.name for f in seen)[:50]
    # the endpoints' own frames are left out
    assert not [f for f in seen if "/fasttrace/http/" in f.filename.replace(os.sep, "/")]


def check_profile(body: bytes, path: Path, tmp_path: Path) -> None:
    path.write_bytes(body)
    if GO is None:
        assert body[:2] == b"\x1f\x8b"
        return
    env = dict(os.environ, PPROF_TMPDIR=str(tmp_path), HOME=str(tmp_path))
    out = subprocess.run([GO, "tool", "pprof", "-top", str(path)], capture_output=True,
                         text=True, env=env, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Type: wall" in out.stdout


def fetch_all(base: str, tmp_path: Path, tag: str, function: str) -> None:
    """Two 2 s traces (trace mode, sampling mode) and a 2 s profile from one endpoint base."""
    code, body = get(base + "trace?seconds=2")
    assert code == 200, body[:300]
    check_trace(body, tmp_path / f"{tag}-trace.ftrace", function)
    code, body = get(base + "trace?seconds=2&rate=200")
    assert code == 200, body[:300]
    check_trace(body, tmp_path / f"{tag}-sampled.ftrace", function)
    code, body = get(base + "profile?seconds=2&rate=200")
    assert code == 200, body[:300]
    check_profile(body, tmp_path / f"{tag}.pb.gz", tmp_path)


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the service did not stop: {err.decode()[-3000:]}")
    return err.decode()


def test_flask_under_gunicorn(tmp_path):
    base = free_ports(3)  # the service; each worker's own endpoints on base+1, base+2
    env = dict(os.environ, FASTTRACE_HTTP_BASE=str(base))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "2", "-c", str(SERVICES / "gunicorn_conf.py"),
         "--pythonpath", str(SERVICES), "-b", f"127.0.0.1:{base}", "flask_app:app"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        site = f"http://127.0.0.1:{base}"
        wait_up(site + "/", proc)
        for age in (1, 2):
            wait_up(f"http://127.0.0.1:{base + age}/debug/fasttrace/", proc)
        with Load(site) as load:
            # through the WSGI mount (whichever worker takes it), then each worker's server
            fetch_all(site + "/debug/fasttrace/", tmp_path, "wsgi", "home")
            pids = set()
            for age in (1, 2):
                own = f"http://127.0.0.1:{base + age}/debug/fasttrace/"
                pids.add(json.loads(get(own + "?format=json")[1])["pid"])
                code, body = get(own + "trace?seconds=2&rate=200")
                assert code == 200, body[:300]
                check_trace(body, tmp_path / f"worker{age}.ftrace", "home")
            assert len(pids) == 2
            code, body = get(f"http://127.0.0.1:{base + 1}/debug/fasttrace/profile?seconds=2")
            assert code == 200
            check_profile(body, tmp_path / "worker1.pb.gz", tmp_path)
        assert load.failures == [], load.failures[:10]
        assert load.ok > 50, load.ok
    finally:
        err = stop(proc)
    assert "Traceback" not in err, err[-3000:]


def test_starlette_under_uvicorn(tmp_path):
    port = free_ports(1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(SERVICES), "--port", str(port),
         "--log-level", "warning", "starlette_app:app"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        site = f"http://127.0.0.1:{port}"
        mount = site + "/debug/fasttrace/"
        wait_up(site + "/", proc)
        with Load(site) as load:
            fetch_all(mount, tmp_path, "asgi", "home")
            # two at once: one 200, one 409
            results: list = []
            threads = [threading.Thread(target=lambda: results.append(
                get(mount + "trace?seconds=1"))) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(r[0] for r in results) == [200, 409], results
            # a client that goes away cancels the capture
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(b"GET /debug/fasttrace/trace?seconds=30 HTTP/1.1\r\nHost: x\r\n\r\n")
            deadline = time.monotonic() + 10
            while json.loads(get(mount + "?format=json")[1])["recording"] is None:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            c.close()
            deadline = time.monotonic() + 5
            while True:
                st = json.loads(get(mount + "?format=json")[1])
                if st["recording"] is None and st["serving"] is None:
                    break
                assert time.monotonic() < deadline, st
                time.sleep(0.05)
            # bad requests through the mount
            assert get(mount + "trace?seconds=0")[0] == 400
            assert get(mount + "nope")[0] == 404
            assert get(mount + "flight")[0] == 404
        assert load.failures == [], load.failures[:10]
        assert load.ok > 50, load.ok
    finally:
        err = stop(proc)
    assert "Traceback" not in err, err[-3000:]
