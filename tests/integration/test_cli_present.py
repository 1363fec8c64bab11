"""How report, info and run present traces: many threads, C functions, short sampled runs and
the cpu clock's thread states (issue 8)."""

from __future__ import annotations

import re
import threading
import time

import pytest
from helpers import cli_in_process, fasttrace_cli

import fasttrace


def _threads(n, target):
    threads = [threading.Thread(target=target, args=(i,), name=f"req-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _busy(i):
    s = set()
    for k in range(20 * (i + 1)):  # thread req-i makes 20 * (i + 1) calls of set.add
        s.add(k)


@pytest.fixture(scope="module")
def many_threads(tmp_path_factory):
    path = tmp_path_factory.mktemp("present") / "many.ftrace"
    with fasttrace.start(path):
        _threads(40, _busy)
        time.sleep(0.002)
    return path


def _thread_rows(out):
    return [line for line in out.splitlines() if re.match(r"\s+\d+\s+\S", line)
            and " ident " in line]


# ---- item 7: info with many threads -----------------------------------------------------

def test_info_summarises_many_threads(many_threads):
    code, out, err = cli_in_process("info", many_threads)
    assert code == 0, err
    assert "threads (41, the 20 busiest):" in out
    rows = _thread_rows(out)
    assert len(rows) == 20
    # busiest first: req-i made 20 * (i + 1) calls
    reqs = [int(m[1]) for m in (re.search(r" req-(\d+) ", r) for r in rows) if m]
    assert reqs == list(range(39, 39 - len(reqs), -1)) and len(reqs) >= 19, rows
    assert re.search(r"^  \.\.\. and 21 more threads with [\d,]+ records \(fasttrace info "
                     r"--all-threads .*many\.ftrace lists them\)$", out, re.M), out
    code, out, err = cli_in_process("info", "--all-threads", many_threads)
    assert code == 0, err
    assert "threads (41):" in out and len(_thread_rows(out)) == 41 and "more threads" not in out


# ---- item 9: where C functions live -----------------------------------------------------

def test_report_names_the_module_of_c_functions(many_threads):
    code, out, err = cli_in_process("report", many_threads, "--limit", "0")
    assert code == 0, err
    lines = out.splitlines()
    assert any(line.endswith(" set.add [C] builtins") for line in lines), out
    assert any(line.endswith(" time.sleep [C] time") for line in lines), out
    assert not any(line.endswith(" C") for line in lines)


# ---- items 8, 10, 11: sampled traces ----------------------------------------------------

def _sleep(i):
    time.sleep(0.03)


@pytest.fixture(scope="module")
def sampled_threads(tmp_path_factory):
    path = tmp_path_factory.mktemp("present") / "sampled.ftrace"
    with fasttrace.start(path, rate=500):
        _threads(30, _sleep)
    return path


def test_report_limit_applies_to_the_thread_table(sampled_threads):
    code, out, err = cli_in_process("report", sampled_threads, "--limit", "5")
    assert code == 0, err
    head = out.split("\n\n")[0].splitlines()
    rows = [line for line in head if re.match(r"\s+\d+\s+[\d.]+%", line)]
    assert len(rows) == 5, out
    more = len({s.thread for s in fasttrace.load(sampled_threads).samples()}) - 5
    assert f"  ... and {more} more threads (--limit 0 lists them all)" in head
    code, out, err = cli_in_process("report", sampled_threads, "--limit", "0")
    rows = [line for line in out.split("\n\n")[0].splitlines()
            if re.match(r"\s+\d+\s+[\d.]+%", line)]
    assert len(rows) > 25 and "more threads" not in out


SHORT = """
import time
end = time.perf_counter() + 0.03
while time.perf_counter() < end:
    pass
"""


def test_short_sampled_run_is_shown_in_milliseconds(tmp_path):
    (tmp_path / "short.py").write_text(SHORT)
    r = fasttrace_cli(tmp_path, "run", "--rate", "1000", "-o", "s.ftrace", "short.py")
    assert r.returncode == 0, r.stderr
    assert re.search(r"wrote \d+ samples from 1 thread\(s\) over \d+\.\d+ ms \(", r.stderr)
    code, out, err = cli_in_process("report", tmp_path / "s.ftrace")
    assert re.search(r"^all threads: \d+\.\d+ ms sampled \(\d+ samples\)$", out, re.M), out
    assert re.search(r"^ +self ms +self% +total ms +total% +samples +function$", out, re.M)
    code, out, err = cli_in_process("info", tmp_path / "s.ftrace")
    assert re.search(r"^duration +\d+\.\d+ ms$", out, re.M), out
    # a run shorter than the first tick: no samples, still a sampled trace
    r = fasttrace_cli(tmp_path, "run", "--rate", "1", "-o", "z.ftrace", "-c", "pass")
    assert r.returncode == 0, r.stderr
    code, out, err = cli_in_process("report", tmp_path / "z.ftrace")
    assert "all threads: 0 ns sampled (0 samples)" in out
    assert " samples  function" in out and " calls " not in out and "traced" not in out


HASHING = """
import hashlib, sys, threading, time
data = b"x" * (8 << 20)

def hasher():  # sha256 of a large buffer releases the GIL
    end = time.perf_counter() + 0.4
    while time.perf_counter() < end:
        hashlib.sha256(data).digest()

if sys.argv[1] == "thread":
    t = threading.Thread(target=hasher, name="hasher")
    t.start()
    t.join()
else:
    hasher()
"""


def _cpu_report(tmp_path, where):
    (tmp_path / "h.py").write_text(HASHING)
    r = fasttrace_cli(tmp_path, "run", "--rate", "200", "--clock", "cpu", "-o", "c.ftrace",
                      "h.py", where)
    assert r.returncode == 0, r.stderr
    code, out, err = cli_in_process("report", tmp_path / "c.ftrace")
    assert code == 0, err
    return out


def test_cpu_clock_states(tmp_path):
    out = _cpu_report(tmp_path, "main")
    assert re.search(r"^ +samples +cpu ms +GIL held% +released% +thread$", out, re.M), out
    row = next(line for line in out.splitlines() if line.endswith(" MainThread"))
    samples, cpu_ms, held, released = row.split()[:4]
    assert float(released.rstrip("%")) > 50, out  # CPU time spent without the GIL
    assert float(cpu_ms) > 50
    assert "every sample is CPU time" in out
    assert re.search(r"^all threads: .* of CPU time sampled", out, re.M), out


def test_cpu_clock_samples_a_thread_started_while_sampling(tmp_path):
    out = _cpu_report(tmp_path, "thread")
    row = next(line for line in out.splitlines() if line.endswith(" hasher"))
    assert float(row.split()[1]) > 50, out
