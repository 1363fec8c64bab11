"""The examples run as the README says, and do what they say."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import serve_gunicorn

import fasttrace

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


def test_flight_latency_dumps_the_slow_requests(tmp_path):
    r = subprocess.run([sys.executable, str(EXAMPLES / "flight_latency.py"), str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    dumps = sorted(tmp_path.glob("slow-*.ftrace"))
    assert len(dumps) == 3, r.stdout  # requests 17, 67, 117, ... are slow: it stops at three
    for d in dumps:
        trace = fasttrace.load(d)
        assert trace.header["origin"] == "flight"
        names = {e.function.name for e in trace.events()}
        assert "slow_lookup" in names and "handle" in names


def test_gunicorn_post_fork_gives_each_worker_its_own_file(tmp_path):
    pytest.importorskip("flask")
    gunicorn = Path(sys.executable).parent / "gunicorn"
    if not gunicorn.exists():
        pytest.skip("gunicorn is not installed beside this python")
    for f in ("app.py", "gunicorn.conf.py"):
        shutil.copy(EXAMPLES / "gunicorn" / f, tmp_path)
    # HOME: recent gunicorns open a control socket in ~/.gunicorn
    env = dict(os.environ, HOME=str(tmp_path))
    env.pop("FASTTRACE_FOLLOW", None)
    _, log, served = serve_gunicorn([str(gunicorn), "-c", "gunicorn.conf.py", "-w", "2",
                                     "-b", "127.0.0.1:0", "app:app"], tmp_path, env)
    files = sorted((tmp_path / "traces").iterdir())
    assert [f.name for f in files] == sorted(f"worker.{pid}.ftrace" for pid in served), log
    for f in files:
        trace = fasttrace.load(f)
        assert trace.complete and trace.header["mode"] == "sample"
        names = {fn.name for s in trace.samples() for fn in s.stack}
        assert "view" in names and "busy" in names, f
        assert f"wrote {trace.stats.events} samples to traces/{f.name}" in log, log
