"""`fasttrace view`: the server's answers (no browser) and the --html export."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys

import pytest
from helpers import http_get
from viewer_helpers import ViewServer, make_trace


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    d = tmp_path_factory.mktemp("viewer")
    return d, make_trace(d)


@pytest.fixture(scope="module")
def server(traced):
    d, trace = traced
    s = ViewServer(d, trace)
    yield s
    s.stop()


def test_serves_loopback_with_page_and_meta(server):
    assert server.url.startswith("http://127.0.0.1:")
    status, body = http_get(server.url)
    assert status == 200 and b"<canvas id=\"timeline\"" in body
    for name in ("viewer.js", "timeline.js", "flame.js", "data.js", "viewer.css"):
        assert http_get(server.url + "static/" + name)[0] == 200
    status, body = http_get(server.url + "api/meta")
    meta = json.loads(body)
    (p,) = meta["processes"]
    assert p["mode"] == "trace" and {t["name"] for t in p["threads"]} >= {"MainThread", "worker"}


def test_slices_answer_is_the_binary_layout(server):
    meta = json.loads(http_get(server.url + "api/meta")[1])
    p = meta["processes"][0]
    t = p["threads"][0]
    status, body = http_get(server.url + f"api/slices?p=0&tid={t['tid']}&t0=0&t1={p['end_ns']}"
                            f"&res=1")
    assert status == 200
    n, kind = struct.unpack_from("<II", body)
    assert kind == 0 and n > 0 and len(body) == 8 + n * 32
    starts = struct.unpack_from(f"<{n}d", body, 8)
    ends = struct.unpack_from(f"<{n}d", body, 8 + 8 * n)
    assert all(0 <= s <= e <= p["end_ns"] for s, e in zip(starts, ends))
    # coarser: fewer slices (merged runs), never more
    coarse = http_get(server.url + f"api/slices?p=0&tid={t['tid']}&t0=0&t1={p['end_ns']}"
                      f"&res={p['end_ns'] // 10}")[1]
    assert struct.unpack_from("<I", coarse)[0] < n


@pytest.mark.parametrize("path,status,says", [
    ("nope", 404, "no such page"),
    ("static/../_server.py", 404, "no such"),
    ("api/slices?p=0&tid=999&t0=0&t1=10&res=1", 404, "no thread 999"),
    ("api/slices?p=7&tid=1&t0=0&t1=10&res=1", 404, "no process 7"),
    ("api/slices?p=0&tid=1&t0=abc&t1=10&res=1", 400, "not a number"),
    ("api/slices?p=0&tid=1&t0=nan&t1=10&res=1", 400, "not a number"),
    ("api/slices?p=0&tid=1&t0=10&t1=5&res=1", 400, "before t0"),
    ("api/slices?p=0&tid=1&t0=999999999999999&t1=9999999999999999&res=1", 400, "outside"),
    ("api/slices?p=0&tid=1&t0=0&t1=10&res=0", 400, "resolution"),
    ("api/slices?p=0&tid=1&t1=10&res=1", 400, "missing parameter t0"),
    ("api/states?p=0&tid=1&t0=0&t1=10&res=1", 404, "no sampled states"),
    ("api/tree?p=0&t0=5&t1=1", 400, "before t0"),
    ("api/call?p=0&tid=1&t0=0&t1=10&node=99999999", 404, "no node 99999999"),
    ("api/call?p=0&tid=1&t0=0&t1=10&node=0", 404, "no node 0"),
    ("api/call?p=0&tid=1&t0=0&t1=10", 400, "missing parameter node"),
])
def test_bad_requests_get_a_status_and_a_message(server, path, status, says):
    got, body = http_get(server.url + path)
    assert got == status and says in body.decode(), (got, body)
    assert b"Traceback" not in body
    assert http_get(server.url + "api/meta")[0] == 200  # still serving


def test_a_truncated_trace_serves_its_intact_part(traced, tmp_path):
    _, trace = traced
    data = trace.read_bytes()
    cut = tmp_path / "cut.ftrace"
    cut.write_bytes(data[:int(len(data) * 0.7)])
    s = ViewServer(tmp_path, cut)
    try:
        meta = json.loads(http_get(s.url + "api/meta")[1])
        p = meta["processes"][0]
        assert p["truncated"] and p["damage"]
        t = p["threads"][0]
        assert http_get(s.url + f"api/slices?tid={t['tid']}&t0=0&t1={p['end_ns']}&res=1")[0] == 200
    finally:
        s.stop()


def test_a_scoped_trace_says_so(tmp_path):
    """The viewer's meta carries a scoped trace's scope in words (the page lists it with the
    trace's other notes); an unscoped trace's is null."""
    import fasttrace

    for scoped in (True, False):
        path = tmp_path / f"s{scoped}.ftrace"
        with fasttrace.start(str(path), **({"exclude": ["json"], "max_depth": 9}
                                          if scoped else {})):
            import json as j
            j.dumps([len("x")])
        s = ViewServer(tmp_path, path)
        try:
            p = json.loads(http_get(s.url + "api/meta")[1])["processes"][0]
        finally:
            s.stop()
        assert p["scope"] == ("exclude json; max depth 9" if scoped else None)


def test_html_export_is_self_contained(traced, tmp_path):
    d, trace = traced
    out = tmp_path / "t.html"
    r = subprocess.run([sys.executable, "-m", "fasttrace", "view", str(trace), "--html", str(out)],
                       capture_output=True, text=True, cwd=d, timeout=120)
    assert r.returncode == 0, r.stderr
    html = out.read_text()
    assert 'id="ft-data"' in html
    assert not re.search(r"https?://", html), re.search(r".{40}https?://.{40}", html)
    assert not re.search(r"<script[^>]*\bsrc=", html)
    assert not re.search(r"<link[^>]*\bhref=\"(?!data:)", html)
    assert "fetch(" not in html.split("class ServerSource")[0]  # only the server's source fetches


def test_html_export_respects_the_budget(traced, tmp_path):
    d, trace = traced
    out = tmp_path / "small.html"
    r = subprocess.run([sys.executable, "-m", "fasttrace", "view", str(trace), "--html", str(out),
                        "--budget", "100KB"], capture_output=True, text=True, cwd=d, timeout=120)
    assert r.returncode == 0, r.stderr
    data = json.loads(re.search(r'id="ft-data">(.*?)</script>', out.read_text(), re.S)
                      .group(1).replace("<\\/", "</"))
    assert data["export"]["budget"] == 100 * 1024  # K: KiB, as every size option
    slices = sum(len(level["data"]) for lane in data["lanes"].values()
                 for level in lane["levels"][:1])
    assert slices <= 100_000


def test_bad_arguments(traced, tmp_path):
    d, trace = traced
    r = subprocess.run([sys.executable, "-m", "fasttrace", "view", str(tmp_path / "none.ftrace"),
                        "--no-browser"], capture_output=True, text=True, cwd=d, timeout=60)
    assert r.returncode == 1 and "fasttrace: error:" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "fasttrace", "view", str(trace), "--budget", "1MB"],
                       capture_output=True, text=True, cwd=d, timeout=60)
    assert r.returncode == 1 and "--budget is for --html" in r.stderr
    for args, says in [(["--port", "99999"], "not a port: '99999'"),
                       (["--port", "x"], "not a port: 'x'"),
                       (["--memory", "10K"], "the index needs at least 1M"),
                       (["--host", "no.such.host.invalid"], "cannot listen on")]:
        r = subprocess.run([sys.executable, "-m", "fasttrace", "view", str(trace), "--no-browser",
                            *args], capture_output=True, text=True, cwd=d, timeout=60)
        assert r.returncode != 0 and says in r.stderr and "Traceback" not in r.stderr, r.stderr


def slices_of(url, p, tid, t0, t1, res):
    """(start, end, fid, depth, count) of a slices answer, sorted."""
    status, body = http_get(url + f"api/slices?p={p}&tid={tid}&t0={t0}&t1={t1}&res={res}")
    assert status == 200, body
    n, _ = struct.unpack_from("<II", body)
    start = struct.unpack_from(f"<{n}d", body, 8)
    end = struct.unpack_from(f"<{n}d", body, 8 + 8 * n)
    ints = [struct.unpack_from(f"<{n}i", body, 8 + 16 * n + 4 * n * k) for k in range(4)]
    return sorted(zip(start, end, ints[1], ints[2], ints[3]))


def test_a_small_memory_budget_decodes_again_and_answers_the_same(traced, server):
    """--memory 1M keeps only coarse levels of a bigger pyramid: finer answers are decoded
    from the file again, and must be the same slices the full index gives."""
    d, trace = traced
    big = d / "big.ftrace"
    r = subprocess.run([sys.executable, "-m", "fasttrace", "run", "-o", str(big), "-c",
                        "def f(i): return i\n"
                        "def g(n): return [f(i) for i in range(n)]\n"
                        "for _ in range(40): g(10000)\n"], capture_output=True, text=True,
                       cwd=d, timeout=120)
    assert r.returncode == 0, r.stderr
    small = ViewServer(d, big, "--memory", "1M")
    full = ViewServer(d, big)
    try:
        meta = json.loads(http_get(full.url + "api/meta")[1])
        p = meta["processes"][0]
        t = p["threads"][0]
        span = t["last_ns"] - t["first_ns"]
        for t0, t1, res in [(t["first_ns"], t["last_ns"], 1),
                            (t["first_ns"] + span // 2, t["first_ns"] + span // 2 + 200_000, 1),
                            (t["first_ns"] + span // 3, t["first_ns"] + span // 3 + 2_000_000,
                             250)]:
            got = slices_of(small.url, 0, t["tid"], t0, t1, res)
            assert got and got == slices_of(full.url, 0, t["tid"], t0, t1, res)
    finally:
        small.stop()
        full.stop()


def test_a_multi_process_directory_has_a_lane_group_per_process(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fasttrace", "run", "--follow-children", "-o",
                        str(tmp_path / "procs"), "-c",
                        "import os, time\n"
                        "def child_work(): time.sleep(0.02)\n"
                        "pid = os.fork()\n"
                        "if pid == 0:\n"
                        "    child_work(); os._exit(0)\n"
                        "os.waitpid(pid, 0)\n"], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    s = ViewServer(tmp_path, tmp_path / "procs")
    try:
        meta = json.loads(http_get(s.url + "api/meta")[1])
        assert len(meta["processes"]) == 2
        pids = {p["pid"] for p in meta["processes"]}
        assert len(pids) == 2
        names = set()
        for i, p in enumerate(meta["processes"]):
            assert p["offset_ns"] >= 0 and p["threads"]
            t = p["threads"][0]
            got = slices_of(s.url, i, t["tid"], 0, p["end_ns"], 1)
            names |= {p["functions"][str(fid)][0] for _, _, fid, _, _ in got}
        assert "child_work" in names
    finally:
        s.stop()
