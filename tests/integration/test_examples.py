"""The examples run as the README says, and do what they say."""

import subprocess
import sys
from pathlib import Path

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
