"""`fasttrace report --tree`, `--callers FUNC` and `--running-only`, on programs with known
call counts and known shares of time, traced (and sampled) by `fasttrace run`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import pytest
from helpers import fasttrace_cli

# parent() calls big() once (40 ms), small() twice (10 ms each) and tiny() 7 times (nothing);
# main() calls parent() twice and rec(5) once: 6 activations of rec, nested.
PROGRAM = textwrap.dedent("""
    import time

    def big():
        time.sleep(0.04)

    def small():
        time.sleep(0.01)

    def tiny():
        pass

    def parent():
        big()
        small()
        small()
        for _ in range(7):
            tiny()

    def rec(n):
        return 0 if n == 0 else rec(n - 1)

    def main():
        parent()
        parent()
        rec(5)

    main()
""")
LINE_OF_SMALL = 7  # `def small():` in PROGRAM

# the main thread spins 0.3 s, then sleeps 0.3 s: about half its samples are idle
SAMPLED = textwrap.dedent("""
    import time

    def spin(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    def lazy():
        time.sleep(0.3)

    def main():
        spin(0.3)
        lazy()

    main()
""")


def run(d, name, source, *options):
    (d / f"{name}.py").write_text(source)
    r = fasttrace_cli(d, "run", *options, "-o", f"{name}.ftrace", f"{name}.py")
    assert r.returncode == 0, r.stderr
    return d / f"{name}.ftrace"


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    return run(tmp_path_factory.mktemp("tree"), "prog", PROGRAM)


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    return run(tmp_path_factory.mktemp("tree-sampled"), "samp", SAMPLED, "--rate", "1000")


def report(path, *args):
    r = fasttrace_cli(path.parent, "report", str(path), *args)
    return r


def report_json(path, *args):
    r = report(path, "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def walk(nodes):
    for n in nodes:
        yield n
        yield from walk(n["children"])


def child(node, name):
    (out,) = [c for c in node["children"] if c["function"] == name]
    return out


def path_to(thread, *names):
    node = thread
    for name in names:
        node = child(node, name)
    return node


# ---- --tree -----------------------------------------------------------------------------------


@pytest.mark.parametrize("min_percent", ["0", "1", "30"])
def test_tree_json_adds_up_exactly(traced, min_percent):
    (thread,) = report_json(traced, "--tree", "--min-percent", min_percent)["tree"]
    nodes = list(walk(thread["children"]))
    assert nodes
    for n in nodes:  # what is cut is still accounted for, to the ns
        assert n["total_ns"] == (n["self_ns"] + sum(c["total_ns"] for c in n["children"])
                                 + n["hidden_ns"]), n["function"]
        assert n["hidden"] >= 0 and n["hidden_ns"] >= 0
    assert sum(n["total_ns"] for n in thread["children"]) + thread["hidden_ns"] <= \
        thread["traced_ns"]


def test_tree_nesting_order_and_calls(traced):
    (thread,) = report_json(traced, "--tree", "--min-percent", "0")["tree"]
    parent = path_to(thread, "<module>", "main", "parent")
    assert parent["calls"] == 2
    names = [c["function"] for c in parent["children"]]
    assert names[:2] == ["big", "small"]  # 80 ms before 40 ms: by total time
    assert {c["function"]: c["calls"] for c in parent["children"]} == {
        "big": 2, "small": 4, "tiny": 14}
    assert child(child(parent, "big"), "time.sleep")["calls"] == 2
    # recursion: one node per depth, each called once
    rec = path_to(thread, "<module>", "main", "rec")
    depth = 0
    while rec["children"]:
        depth += 1
        rec = child(rec, "rec")
    assert depth == 5 and rec["calls"] == 1


def test_tree_min_percent_hides_and_says_so(traced):
    (thread,) = report_json(traced, "--tree")["tree"]  # default: 1%
    parent = path_to(thread, "<module>", "main", "parent")
    assert "tiny" not in [c["function"] for c in parent["children"]]
    assert parent["hidden"] == 1 and 0 < parent["hidden_ns"] < 0.01 * thread["traced_ns"]
    r = report(traced, "--tree")
    assert r.returncode == 0, r.stderr
    assert " tiny " not in r.stdout and "… 1 more below 1%" in r.stdout
    r = report(traced, "--tree", "--min-percent", "0")
    assert " tiny " in r.stdout


def test_tree_text(traced):
    r = report(traced, "--tree")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("thread 1 MainThread: ") and lines[0].endswith(" ms traced")
    assert lines[1].split() == ["total", "ms", "total%", "self", "ms", "self%", "calls",
                                "function"]
    body = lines[2:]
    # (<module>'s line: 1, or on 3.9 its first line of code)
    assert body[0].split()[-2] == "<module>" and body[0].split()[-1].startswith("prog.py:")
    big = next(i for i, x in enumerate(body) if "─ big prog.py:" in x)
    small = next(i for i, x in enumerate(body) if "─ small prog.py:" in x)
    assert big < small  # the bigger child first
    assert "├─ big" in body[big] and "│  └─ time.sleep [C] time" in body[big + 1]
    assert body[big].split()[4] == "2"  # calls
    assert "\033[" not in r.stdout
    r = report(traced, "--tree", "--color", "always")
    assert "\033[2mprog.py:" in r.stdout  # where() dimmed, as in the tables


def test_tree_depth(traced):
    (thread,) = report_json(traced, "--tree", "--min-percent", "0", "--depth", "2")["tree"]
    main = path_to(thread, "<module>", "main")
    assert main["children"] == [] and main["hidden"] == 2  # parent and rec, cut
    assert main["total_ns"] == main["self_ns"] + main["hidden_ns"]
    assert "below --depth" in report(traced, "--tree", "--depth", "2").stdout


# ---- --callers --------------------------------------------------------------------------------


def test_callers_counts(traced):
    (small,) = report_json(traced, "--callers", "small")["callers"]
    assert (small["function"], small["calls"]) == ("small", 4)
    assert [(c["function"], c["calls"]) for c in small["callers"]] == [("parent", 4)]
    assert small["callers"][0]["total_ns"] == small["total_ns"]
    assert [(c["function"], c["calls"]) for c in small["callees"]] == [("time.sleep", 4)]

    (parent,) = report_json(traced, "--callers", "parent")["callers"]
    assert [(c["function"], c["calls"]) for c in parent["callers"]] == [("main", 2)]
    callees = {c["function"]: c for c in parent["callees"]}
    assert {k: c["calls"] for k, c in callees.items()} == {"big": 2, "small": 4, "tiny": 14}
    assert [c["function"] for c in parent["callees"]][:2] == ["big", "small"]
    # no recursion: the function's time is its own plus its callees', exactly
    assert parent["total_ns"] == parent["self_ns"] + sum(c["total_ns"] for c in callees.values())


def test_callers_of_a_recursive_function_count_time_once(traced):
    (rec,) = report_json(traced, "--callers", "rec")["callers"]
    callers = {c["function"]: c for c in rec["callers"]}
    assert {k: c["calls"] for k, c in callers.items()} == {"main": 1, "rec": 5}
    assert callers["main"]["total_ns"] == rec["total_ns"] and callers["rec"]["total_ns"] == 0
    assert sum(c["calls"] for c in rec["callers"]) == rec["calls"] == 6


def test_callers_glob_file_line_and_text(traced):
    data = report_json(traced, "--callers", "*a*")["callers"]
    assert {d["function"] for d in data} == {"parent", "small", "main"}
    (by_line,) = report_json(traced, "--callers", f"prog.py:{LINE_OF_SMALL}")["callers"]
    assert by_line["function"] == "small"
    r = report(traced, "--callers", "small")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("small prog.py:7: self ") and lines[0].endswith(", 4 calls")
    assert lines[1].split()[0] == "callers" and lines[2].split()[-2:] == ["parent", "prog.py:13"]
    assert lines[3].split()[0] == "callees" and "time.sleep [C] time" in lines[4]


def test_callers_no_match(traced):
    r = report(traced, "--callers", "smal")
    assert r.returncode == 1 and r.stdout == ""
    assert "names no function" in r.stderr and "close: small" in r.stderr
    assert r.stderr.count("\n") == 1


# ---- --running-only ---------------------------------------------------------------------------


def shares(path, *args):
    (table,) = report_json(path, "--limit", "0", *args)["tables"]
    return table, {f["qualname"]: f["total_ns"] / table["traced_ns"] for f in table["functions"]}


def test_running_only_leaves_idle_samples_out(sampled):
    everything, before = shares(sampled)
    assert before["lazy"] > 0.3 and before["spin"] > 0.3  # the program did what it says
    running, after = shares(sampled, "--running-only")
    assert after.get("lazy", 0) < 0.05 and after["spin"] > 0.9
    assert running["samples"] < everything["samples"] and running["idle_ns"] == 0
    (thread,) = report_json(sampled, "--tree", "--running-only", "--min-percent", "0")["tree"]
    assert "lazy" not in [n["function"] for n in walk(thread["children"])] or \
        max(n["total_ns"] for n in walk(thread["children"]) if n["function"] == "lazy") < \
        0.05 * thread["traced_ns"]
    spin = path_to(thread, "<module>", "main", "spin")
    assert spin["total_ns"] > 0.9 * thread["traced_ns"]
    r = report(sampled, "--running-only")
    assert r.returncode == 0 and "--running-only: the samples of threads not holding" in r.stdout


def test_callers_of_a_sampled_trace_count_samples(sampled):
    for extra in ((), ("--running-only",)):
        (spin,) = report_json(sampled, "--callers", "spin", *extra)["callers"]
        assert spin["calls"] > 100  # samples, about 300 at 1000 Hz
        assert [(c["function"], c["calls"], c["total_ns"]) for c in spin["callers"]] == [
            ("main", spin["calls"], spin["total_ns"])]


def test_running_only_on_a_traced_trace_is_an_error(traced):
    r = report(traced, "--running-only")
    assert r.returncode == 1 and r.stdout == ""
    assert "--running-only needs a sampled trace" in r.stderr and "Traceback" not in r.stderr


# ---- a multi-process directory ----------------------------------------------------------------

FAMILY = textwrap.dedent("""
    import os, subprocess, sys, time
    import fasttrace

    def work(seconds):
        time.sleep(seconds)

    fasttrace.start(f"procs/{sys.argv[1]}.{os.getpid()}.ftrace", c_calls=False)
    work(0.02)
    if sys.argv[1] == "parent":
        subprocess.run([sys.executable, "family.py", "child"], check=True)
    fasttrace.stop()
""")


def test_tree_and_callers_of_a_directory(tmp_path):
    (tmp_path / "family.py").write_text(FAMILY)
    (tmp_path / "procs").mkdir()
    subprocess.run([sys.executable, "family.py", "parent"], cwd=tmp_path, check=True,
                   timeout=60)
    procs = tmp_path / "procs"
    r = fasttrace_cli(tmp_path, "report", str(procs), "--tree", "--json")
    assert r.returncode == 0, r.stderr
    trees = json.loads(r.stdout)["tree"]
    assert len({t["process"] for t in trees}) == 2
    for t in trees:
        assert [n["calls"] for n in walk(t["children"]) if n["function"] == "work"] == [1]
    r = fasttrace_cli(tmp_path, "report", str(procs), "--tree")
    assert r.returncode == 0, r.stderr
    titles = [x for x in r.stdout.splitlines() if x.startswith("process ")]
    assert len(titles) == 2 and all(", thread " in x for x in titles)
    r = fasttrace_cli(tmp_path, "report", str(procs), "--callers", "work", "--json")
    assert r.returncode == 0, r.stderr
    assert [d["calls"] for d in json.loads(r.stdout)["callers"]] == [1, 1]
    r = fasttrace_cli(tmp_path, "report", str(procs), "--running-only")
    assert r.returncode == 1 and "needs a sampled trace" in r.stderr


# ---- progress ---------------------------------------------------------------------------------


def test_progress_is_rate_limited_and_cleared(traced, monkeypatch):
    import fasttrace
    from fasttrace.commands import report as report_command

    clock = [100.0]
    monkeypatch.setattr(report_command.time, "monotonic", lambda: clock[0])
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    progress = report_command.Progress(fasttrace.load(traced))
    for n in range(1000):  # a fold's chunks, all within one tenth of a second
        progress(n)
    assert err.getvalue().count("\r") == 1
    clock[0] += 0.2
    progress(1000)
    assert err.getvalue().count("\r") == 2 and "reading 1,000 of" in err.getvalue()
    progress.end()
    assert err.getvalue().endswith("\r\033[K")
