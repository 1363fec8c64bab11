"""`fasttrace report`: consistent totals, recursion counted once, options, JSON."""

from __future__ import annotations

import json
import threading
import time

import pytest
from helpers import fasttrace_cli, trace_with_drops

import fasttrace
from fasttrace._calltree import thread_stats as function_stats


def slow():
    time.sleep(0.03)


def rec(n):
    if n == 0:
        time.sleep(0.01)
        return 0
    return rec(n - 1)


def main():
    for _ in range(3):
        slow()
    rec(30)


@pytest.fixture
def traced(tmp_path):
    path = tmp_path / "r.ftrace"
    with fasttrace.start(path):
        t = threading.Thread(target=main, name="worker")
        t.start()
        main()
        t.join()
    return path


def report(tmp_path, *args):
    return fasttrace_cli(tmp_path, "report", *args)


def test_self_times_add_up_to_traced_time_per_thread(traced):
    trace = fasttrace.load(traced)
    for t in function_stats(trace).values():
        total_self = sum(f.self_ns for f in t.functions.values())
        assert t.traced_ns > 0
        # traced time (first to last event, less gaps) = self times + time with no frame open
        assert total_self + t.outside_ns == t.traced_ns
        # and time with no frame open is only thread start-up and shut-down slivers
        assert t.outside_ns < 0.01 * t.traced_ns, (t.outside_ns, t.traced_ns)


def test_gaps_are_not_attributed(tmp_path):
    def work():
        for _ in range(200_000):
            len(())

    trace, _ = trace_with_drops(tmp_path, work)
    main_stats = function_stats(trace)[1]
    assert main_stats.dropped > 0 and main_stats.gap_ns > 0
    total_self = sum(f.self_ns for f in main_stats.functions.values())
    assert total_self + main_stats.outside_ns == main_stats.traced_ns


def test_recursion_total_is_not_double_counted(traced):
    trace = fasttrace.load(traced)
    fid = next(f.id for f in trace.functions if f.qualname == "rec")
    for t in function_stats(trace).values():
        if fid in t.functions:
            fs = t.functions[fid]
            assert fs.calls == 31
            assert fs.total_ns <= t.traced_ns  # 31 nested activations, counted once
            assert 0.009e9 < fs.total_ns < 0.5e9


def test_report_table_and_options(tmp_path, traced):
    r = report(tmp_path, str(traced), "--limit", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("all threads:")
    assert "time.sleep" in lines[2]  # the top self time
    assert "\033[" not in r.stdout  # no colour into a pipe
    r = report(tmp_path, str(traced), "--thread", "worker", "--sort", "total", "--filter",
               "*test_cli_report.py")
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert rows[0].startswith("thread ") and "worker" in rows[0]
    assert rows[2].split()[-2] == "main"  # largest total time among this file's functions
    assert all("test_cli_report.py" in row for row in rows[2:] if row)


def test_report_json(tmp_path, traced):
    r = report(tmp_path, str(traced), "--json", "--per-thread", "--limit", "0")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["truncated"] is False
    titles = [t["title"] for t in data["tables"]]
    assert titles[0] == "all threads" and len(titles) == 3
    overall = {f["qualname"]: f for f in data["tables"][0]["functions"]}
    assert overall["slow"]["calls"] == 6 and overall["rec"]["calls"] == 62
    assert overall["time.sleep"]["is_c"] is True


def test_report_errors(tmp_path, traced):
    r = report(tmp_path, str(traced), "--thread", "nope")
    assert r.returncode == 1 and "no thread 'nope'" in r.stderr and r.stderr.count("\n") == 1
    bad = tmp_path / "bad.ftrace"
    bad.write_bytes(b"\x89FTRACE\n" + b"\0" * 40)
    r = report(tmp_path, str(bad))
    assert r.returncode == 1 and "fasttrace: error:" in r.stderr and "Traceback" not in r.stderr
