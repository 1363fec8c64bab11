"""fasttrace.http.serve(): the endpoints of a running service (tests/services/standalone.py,
a process with a busy and a sleepy thread), fetched over real HTTP.

Each test starts its own service, so that one test's capture never answers another's 409.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import fasttrace

SERVICES = Path(__file__).resolve().parent.parent / "services"


class Service:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        portfile = tmp_path / f"port-{time.monotonic_ns()}"
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVICES / "standalone.py"), str(portfile), *args],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            # a service that hangs prints every thread's stack at SIGABRT (stop())
            env=dict(os.environ, PYTHONFAULTHANDLER="1"))
        deadline = time.monotonic() + 30
        while not portfile.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out, err = self.proc.communicate(timeout=5)
                raise AssertionError(f"the service did not start: {err.decode()}")
            time.sleep(0.05)
        self.port = int(portfile.read_text())
        self.base = f"http://127.0.0.1:{self.port}/debug/fasttrace/"

    def get(self, path: str, headers: dict = {}, method: str = "GET", timeout: float = 60):
        req = urllib.request.Request(self.base + path, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def status(self) -> dict:
        code, _, body = self.get("?format=json")
        assert code == 200, body
        return json.loads(body)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # faulthandler: where each thread is stuck
            try:
                _, err = self.proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                _, err = self.proc.communicate()
            raise AssertionError(f"the service did not exit on SIGTERM: {err.decode()}")
        return err.decode()


@pytest.fixture
def service(tmp_path):
    services = []

    def start(*args: str) -> Service:
        s = Service(tmp_path, *args)
        services.append(s)
        return s

    yield start
    for s in services:
        err = s.stop()
        assert s.proc.returncode == 0, err
        assert "Traceback" not in err, err


def save(tmp_path: Path, body: bytes, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(body)
    return path


def ours(name: str) -> bool:
    return "fasttrace" in name.replace(os.sep, "/").split("/site-packages/")[-1].split("/")[0]


def test_index_lists_the_process_and_endpoints(service):
    s = service()
    code, headers, body = s.get("")
    assert code == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    for endpoint in ("trace?seconds=N", "profile?seconds=N", "flight"):
        assert endpoint in page
    st = s.status()
    assert st["pid"] == s.proc.pid
    assert st["recording"] is None and st["serving"] is None
    assert any("standalone.py" in a for a in st["argv"])


def test_trace_holds_the_program_and_not_the_server(service, tmp_path):
    s = service()
    code, headers, body = s.get("trace?seconds=0.5")
    assert code == 200, body
    assert headers["Content-Type"] == "application/octet-stream"
    assert "attachment" in headers["Content-Disposition"]
    assert int(headers["Content-Length"]) == len(body)
    trace = fasttrace.load(save(tmp_path, body, "t.ftrace"))
    assert trace.mode == "trace" and trace.complete
    by_thread: dict = {}
    for e in trace.events():
        by_thread.setdefault(e.thread, set()).add(e.function)
    names = {t.id: t.name for t in trace.threads}
    busy = [t for t, n in names.items() if n == "busy"]
    assert busy and any(f.name == "fib" for f in by_thread[busy[0]])
    for tid, functions in by_thread.items():
        files = {f.filename for f in functions if not f.is_c}
        # the server's threads record nothing: every thread with events is the program's
        assert names[tid] in ("busy", "sleepy", "MainThread"), (names[tid], sorted(files)[:5])
        assert not any("/fasttrace/http/" in f for f in files), files
    # the capture ended with the request: nothing records, nothing is being served
    st = s.status()
    assert st["recording"] is None and st["serving"] is None


def test_sampled_trace_leaves_the_servers_threads_out(service, tmp_path):
    s = service()
    code, _, body = s.get("trace?seconds=0.6&rate=200")
    assert code == 200, body
    trace = fasttrace.load(save(tmp_path, body, "s.ftrace"))
    assert trace.mode == "sample"
    names = {t.id: t.name for t in trace.threads}
    sampled = {names[smp.thread] for smp in trace.samples()}
    assert {"busy", "sleepy"} <= sampled, sampled
    assert sampled <= {"busy", "sleepy", "MainThread"}, sampled
    for smp in trace.samples():
        assert not any("/fasttrace/http/" in f.filename for f in smp.stack)


def test_c_calls_0_leaves_c_calls_out(service, tmp_path):
    s = service()
    code, _, body = s.get("trace?seconds=0.3&c_calls=0")
    assert code == 200, body
    trace = fasttrace.load(save(tmp_path, body, "t.ftrace"))
    kinds = {e.kind for e in trace.events()}
    assert "call" in kinds and "c_call" not in kinds


@pytest.mark.skipif(shutil.which("go") is None, reason="`go` is not installed (golang-go)")
def test_go_tool_pprof_fetches_a_profile(service, tmp_path):
    s = service()
    env = dict(os.environ, PPROF_TMPDIR=str(tmp_path), HOME=str(tmp_path))
    out = subprocess.run(["go", "tool", "pprof", "-top", s.base + "profile?seconds=1"],
                         capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "fib" in out.stdout, out.stdout
    assert "Type: wall" in out.stdout
    # with -seconds, go tool pprof adds the parameter itself, as for a Go server
    out = subprocess.run(["go", "tool", "pprof", "-seconds", "1", "-raw", s.base + "profile"],
                         capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "fib" in out.stdout


def test_profile_is_gzipped_pprof_of_samples(service, tmp_path):
    s = service()
    code, headers, body = s.get("profile?seconds=0.5&rate=200")
    assert code == 200, body
    raw = gzip.decompress(body)
    assert b"fib" in raw and b"busy" in raw  # a function, and the thread label


BAD = [
    ("trace?seconds=0", 400, "seconds must be more than 0"),
    ("trace?seconds=-1", 400, "seconds must be more than 0"),
    ("trace?seconds=61", 400, "at most 60"),
    ("trace?seconds=nan", 400, "finite"),
    ("trace?seconds=abc", 400, "must be a number"),
    ("trace?rate=0", 400, "rate must be between 1 and 1000"),
    ("trace?rate=100000", 400, "rate must be between 1 and 1000"),
    ("trace?c_calls=maybe", 400, "c_calls must be 0 or 1"),
    ("trace?rate=10&c_calls=0", 400, "trace mode only"),
    ("trace?seconds=1&seconds=2", 400, "given twice"),
    ("trace?bogus=1", 400, "unknown parameter 'bogus'"),
    ("profile?c_calls=0", 400, "unknown parameter 'c_calls'"),
    ("flight?seconds=1", 400, "unknown parameter"),
    ("?format=xml", 400, "format must be html or json"),
    ("nope", 404, "no endpoint"),
    ("trace/extra", 404, "no endpoint"),
    ("flight", 404, "no flight recorder is running"),
]


def test_bad_requests_get_their_status_and_a_message(service):
    s = service()
    for path, status, text in BAD:
        code, headers, body = s.get(path)
        assert code == status, (path, code, body)
        assert text in body.decode(), (path, body)
        assert headers["Content-Type"].startswith("text/plain")
    code, headers, body = s.get("trace", method="POST")
    assert code == 405 and headers["Allow"] == "GET, HEAD"
    code, _, body = s.get("", method="HEAD")
    assert code == 200 and body == b""
    # nothing was started by any of them
    assert s.status()["recording"] is None
    # malformed requests get an error, in plain text, and the server goes on
    for raw in (b"GARBAGE\r\n\r\n", b"GET /debug/fasttrace/ HTTP/9.9\r\n\r\n",
                b"GET /" + b"x" * 70000 + b" HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(raw)
            reply = b""
            while b"fasttrace: " not in reply:  # the status line and the body may part
                block = c.recv(1000)
                if not block:
                    break
                reply += block
        assert b"fasttrace: " in reply and b"<html" not in reply.lower(), reply
    assert s.status()["recording"] is None


def test_token(service):
    s = service("--token", "s3cret")
    code, headers, body = s.get("")
    assert code == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert s.get("?token=wrong")[0] == 401
    assert s.get("", {"Authorization": "Bearer wrong"})[0] == 401
    assert s.get("", {"Authorization": "Basic s3cret"})[0] == 401
    assert s.get("trace?seconds=0.1")[0] == 401  # before anything starts
    assert s.get("?token=s3cret")[0] == 200
    assert s.get("", {"Authorization": "Bearer s3cret"})[0] == 200
    code, _, body = s.get("trace?seconds=0.2&token=s3cret")
    assert code == 200 and body.startswith(b"\x89FTRACE")


def test_two_concurrent_traces_one_200_one_409(service):
    s = service()
    results = []

    def fetch():
        results.append(s.get("trace?seconds=1"))

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r[0] for r in results)
    assert codes == [200, 409], [(r[0], r[2][:200]) for r in results]
    conflict = next(r for r in results if r[0] == 409)[2].decode()
    assert "a capture for another request is running: a trace of 1 s" in conflict


def test_409_names_a_capture_the_program_runs(service, tmp_path):
    s = service("--capture", str(tmp_path / "own.ftrace"))
    for path in ("trace?seconds=0.2", "profile?seconds=0.2", "trace?rate=10"):
        code, _, body = s.get(path)
        assert code == 409, (path, code, body)
        assert "a trace is already running (writing" in body.decode()
        assert "own.ftrace" in body.decode()


def test_409_while_another_request_captures(service):
    s = service()
    holder = threading.Thread(target=lambda: s.get("trace?seconds=2"))
    holder.start()
    deadline = time.monotonic() + 10
    while s.status()["serving"] is None and time.monotonic() < deadline:
        time.sleep(0.02)
    code, _, body = s.get("profile?seconds=1")
    holder.join()
    assert code == 409 and b"a capture for another request is running" in body


def test_client_that_disconnects_stops_the_capture(service, tmp_path):
    capdir = tmp_path / "captures"
    capdir.mkdir()
    s = service("--directory", str(capdir))
    before = s.status()["threads"]
    for query in ("trace?seconds=30", "trace?seconds=30&rate=100", "profile?seconds=30"):
        c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        c.sendall(f"GET /debug/fasttrace/{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        deadline = time.monotonic() + 10
        while s.status()["recording"] is None:
            assert time.monotonic() < deadline, "the capture never started"
            time.sleep(0.02)
        assert list(capdir.iterdir()), "the capture writes into the directory given"
        c.close()
        deadline = time.monotonic() + 5
        while True:
            st = s.status()
            if st["recording"] is None and st["serving"] is None and st["threads"] <= before:
                break
            assert time.monotonic() < deadline, f"still running after the client left: {st}"
            time.sleep(0.05)
        assert list(capdir.iterdir()) == [], "the cancelled capture left a file"
    # and the next request is served
    assert s.get("trace?seconds=0.1")[0] == 200
    assert list(capdir.iterdir()) == []


def test_flight_recorder_answers_trace_and_flight(service, tmp_path):
    s = service("--flight", "5")
    assert s.status()["recording"].startswith("a flight recorder is running")
    code, _, body = s.get("flight")
    assert code == 200, body
    dump = fasttrace.load(save(tmp_path, body, "f.ftrace"))
    assert dump.header["origin"] == "flight"
    # trace?seconds=N waits N seconds, then answers from the recorder: no capture of its own
    t0 = time.monotonic()
    code, _, body = s.get("trace?seconds=0.5")
    assert code == 200 and time.monotonic() - t0 >= 0.5
    dump = fasttrace.load(save(tmp_path, body, "f2.ftrace"))
    assert dump.header["origin"] == "flight"
    assert any(e.function.name == "fib" for e in dump.events())
    # two at once are both served: they overlap no capture
    results = []
    threads = [threading.Thread(target=lambda: results.append(s.get("trace?seconds=0.3")))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r[0] for r in results] == [200, 200]
    assert s.status()["recording"].startswith("a flight recorder is running")


def test_bounds_are_configurable(service):
    s = service("--max-seconds", "2")
    code, _, body = s.get("trace?seconds=3")
    assert code == 400 and b"at most 2" in body
    code, _, body = s.get("profile")  # the 30 s default is held to the bound
    assert code == 200


def test_serve_arguments_and_port_in_use(tmp_path):
    import fasttrace.http

    with pytest.raises(ValueError, match="max_seconds"):
        fasttrace.http.serve(port=0, max_seconds=0)
    with pytest.raises(ValueError, match="max_rate"):
        fasttrace.http.serve(port=0, max_rate=10**6)
    with pytest.raises(ValueError, match="token"):
        fasttrace.http.serve(port=0, token="")
    with pytest.raises(ValueError, match="does not exist"):
        fasttrace.http.serve(port=0, directory=str(tmp_path / "missing"))
    with fasttrace.http.serve(port=0) as first:
        assert first.url == f"http://127.0.0.1:{first.port}/debug/fasttrace/"
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{first.port}"):
            fasttrace.http.serve(port=first.port)
    with pytest.warns(RuntimeWarning, match="without a token"):
        srv = fasttrace.http.serve("0.0.0.0", port=0)
    srv.close()


def _peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(os.environ.get("FASTTRACE_SANITIZE") == "1",
                    reason="ASan's quarantine keeps freed memory resident: RSS says nothing")
def test_a_big_trace_is_streamed_not_held(service):
    s = service()
    s.get("trace?seconds=0.2")  # the first capture's one-time costs (imports, tables)
    before = _peak_rss(s.proc.pid)
    code, _, body = s.get("trace?seconds=3")
    assert code == 200
    grew = _peak_rss(s.proc.pid) - before
    assert len(body) > 8 << 20, "the workload should make a trace of several MB"
    assert grew < len(body) / 2, (grew, len(body))
    print(f"trace {len(body) >> 20} MiB, peak RSS grew {grew >> 20} MiB")


def test_a_forked_child_lets_go_of_the_parents_port(tmp_path):
    # The child must not keep the parent's listening socket (connections would queue in it
    # once the parent is gone), and can serve on a port of its own.
    program = tmp_path / "forks.py"
    program.write_text(
        "import os, sys, urllib.request, fasttrace.http\n"
        "srv = fasttrace.http.serve(port=0)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    ok = srv._httpd.socket.fileno() == -1\n"
        "    mine = fasttrace.http.serve(port=0)\n"
        "    body = urllib.request.urlopen(mine.url + '?format=json').read()\n"
        "    os._exit(0 if ok and str(os.getpid()).encode() in body else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "body = urllib.request.urlopen(srv.url + '?format=json').read()\n"
        "sys.exit(os.waitstatus_to_exitcode(status) or (0 if str(os.getpid()).encode() in body "
        "else 4))\n")
    r = subprocess.run([sys.executable, str(program)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, (r.returncode, r.stderr)
