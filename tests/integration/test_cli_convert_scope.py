"""`fasttrace convert`'s filters (issue 13): scope, depth, window, threads, merged threads and
min duration, in every format, on a program of two modules traced by `fasttrace run`."""

from __future__ import annotations

import gzip
import json
import textwrap

import pytest

from helpers import fasttrace_cli as cli

ALPHA = """
import beta

def alpha_work(n):
    t = 0
    for i in range(n):
        t += beta.beta_helper(i)
    return t
"""
BETA = """
import time

def beta_helper(i):
    return beta_inner(i) + 1

def beta_inner(i):
    if i % 40 == 0:
        time.sleep(0.003)
    return i
"""
MAIN = """
import threading
import alpha

def main_driver():
    alpha.alpha_work(200)

threads = [threading.Thread(target=main_driver, name=f"worker{i}") for i in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
main_driver()
"""
ALL = {"alpha_work", "beta_helper", "beta_inner", "main_driver"}


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    d = tmp_path_factory.mktemp("scope")
    for name, text in (("alpha.py", ALPHA), ("beta.py", BETA), ("main.py", MAIN)):
        (d / name).write_text(textwrap.dedent(text))
    r = cli(d, "run", "-o", "t.ftrace", "main.py")
    assert r.returncode == 0, r.stderr
    r = cli(d, "run", "--rate", "500", "-o", "s.ftrace", "main.py")
    assert r.returncode == 0, r.stderr
    return d


def convert(d, fmt, *args, out=None):
    out = out or f"out{export_suffix(fmt)}"
    r = cli(d, "convert", "t.ftrace", "-f", fmt, "-o", out, *args)
    assert r.returncode == 0, r.stderr
    return d / out, r.stderr


def export_suffix(fmt):
    from fasttrace import export
    return export.suffix(fmt)


def chrome_events(path):
    return [e for e in json.loads(path.read_text())["traceEvents"] if e["ph"] in "BE"]


def nesting(events):
    """Per tid: checks B/E balance; returns (max depth, [(name, begin, end)])."""
    stacks, calls, deepest = {}, [], 0
    for e in events:
        st = stacks.setdefault(e["tid"], [])
        if e["ph"] == "B":
            st.append(e)
            deepest = max(deepest, len(st))
        else:
            assert st, f"an E with nothing open: {e}"
            b = st.pop()
            assert e["ts"] >= b["ts"]
            calls.append((b["name"], b["ts"], e["ts"]))
    assert all(not st for st in stacks.values()), "calls left open"
    return deepest, calls


def user_names(found):
    return {n for n in ALL if any(n in f for f in found)}


def names_in(path, fmt):
    if fmt == "chrome":
        return {e["name"] for e in chrome_events(path) if e["ph"] == "B"}
    if fmt == "collapsed":
        return {f for line in path.read_text().splitlines()
                for f in line.rsplit(" ", 1)[0].split(";")[1:]}
    if fmt == "speedscope":
        doc = json.loads(path.read_text())
        frames = doc["shared"]["frames"]
        return {frames[e["frame"]]["name"] for p in doc["profiles"] for e in p["events"]}
    data = path.read_bytes()  # pprof and perfetto intern the names of what they write
    if fmt == "pprof":
        data = gzip.decompress(data)
    return {n for n in ALL if n.encode() in data}


FORMATS = ["chrome", "collapsed", "perfetto", "pprof", "speedscope"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_include_and_exclude_keep_the_functions_in_scope(traced, fmt):
    full, _ = convert(traced, fmt, out="full" + export_suffix(fmt))
    assert user_names(names_in(full, fmt)) == ALL
    only_beta, said = convert(traced, fmt, "--include", "beta")
    assert user_names(names_in(only_beta, fmt)) == {"beta_helper", "beta_inner"}
    assert "filtered: include beta" in said
    if fmt in ("chrome", "collapsed", "speedscope"):  # every name is readable: no C, no other
        assert all("beta_" in n or n.startswith("<module>") for n in names_in(only_beta, fmt))
    no_beta, _ = convert(traced, fmt, "--include", "alpha", "--include", "beta", "--exclude",
                         "beta")
    assert user_names(names_in(no_beta, fmt)) == {"alpha_work"}
    by_path, _ = convert(traced, fmt, "--exclude", "*/beta.py", "--exclude", "builtins")
    assert user_names(names_in(by_path, fmt)) == {"alpha_work", "main_driver"}


def test_chrome_scope_keeps_nesting_balanced(traced):
    path, _ = convert(traced, "chrome", "--include", "alpha", "--include", "beta")
    deepest, calls = nesting(chrome_events(path))
    assert deepest >= 3  # alpha_work > beta_helper > beta_inner, main_driver gone
    assert {n for n, _, _ in calls} >= {"alpha_work", "beta_helper", "beta_inner"}


@pytest.mark.parametrize("fmt", ["chrome", "speedscope", "collapsed"])
def test_max_depth(traced, fmt):
    path, said = convert(traced, fmt, "--max-depth", "2")
    assert "max depth 2" in said
    if fmt == "chrome":
        deepest, _ = nesting(chrome_events(path))
        full, _ = nesting(chrome_events(convert(traced, fmt, out="d.json")[0]))
        assert deepest == 2 < full
    elif fmt == "speedscope":
        for p in json.loads(path.read_text())["profiles"]:
            depth = deepest = 0
            for e in p["events"]:
                depth += 1 if e["type"] == "O" else -1
                assert depth >= 0
                deepest = max(deepest, depth)
            assert depth == 0 and deepest <= 2
    else:
        depths = {line.rsplit(" ", 1)[0].count(";") for line in path.read_text().splitlines()}
        assert max(depths) == 2  # thread root + 2 frames


def test_window_keeps_events_in_it_balanced(traced):
    full = chrome_events(convert(traced, "chrome", out="w-full.json")[0])
    first = min(e["ts"] for e in full)
    last = max(e["ts"] for e in full)
    lo, hi = first + (last - first) / 3, first + 2 * (last - first) / 3  # microseconds
    path, said = convert(traced, "chrome", "--from", f"{lo}us", "--to", f"{hi}us")
    assert "window" in said
    events = chrome_events(path)
    assert events and len(events) < len(full)
    assert all(lo - 0.001 <= e["ts"] <= hi + 0.001 for e in events)
    deepest, calls = nesting(events)
    assert any(b == pytest.approx(lo, abs=0.001) for _, b, _ in calls)  # opened at the edge
    tree, _ = convert(traced, "collapsed", "--from", f"{lo}us", "--to", f"{hi}us")
    total = sum(int(line.rsplit(" ", 1)[1]) for line in tree.read_text().splitlines())
    threads = len({e["tid"] for e in events})
    assert total <= threads * (hi - lo) * 1000 + threads


def test_thread_keeps_one_thread(traced):
    path, _ = convert(traced, "chrome", "--thread", "worker1")
    assert len({e["tid"] for e in chrome_events(path)}) == 1
    folded, _ = convert(traced, "collapsed", "--thread", "worker1", "--thread", "MainThread")
    assert {line.split(";", 1)[0] for line in folded.read_text().splitlines()} == {
        "worker1", "MainThread"}
    r = cli(traced, "convert", "t.ftrace", "-f", "chrome", "--thread", "nope", "-o", "n.json")
    assert r.returncode == 1 and "no thread 'nope'" in r.stderr
    assert not (traced / "n.json").exists()


def _weights(path):
    out = {}
    for line in path.read_text().splitlines():
        stack, w = line.rsplit(" ", 1)
        out[stack] = out.get(stack, 0) + int(w)
    return out


@pytest.mark.parametrize("trace", ["t.ftrace", "s.ftrace"])
def test_merge_threads_one_root_same_total(traced, trace):
    args = ["convert", trace, "-f", "collapsed", "--include", "alpha", "--include", "beta"]
    assert cli(traced, *args, "-o", "per.folded").returncode == 0
    r = cli(traced, *args, "--merge-threads", "-o", "one.folded")
    assert r.returncode == 0, r.stderr
    per, one = _weights(traced / "per.folded"), _weights(traced / "one.folded")
    assert len({s.split(";", 1)[0] for s in per}) == 3
    assert {s.split(";", 1)[0] for s in one} == {"all threads"}
    assert sum(one.values()) == sum(per.values())
    assert len(one) < len(per)
    r = cli(traced, "convert", trace, "-f", "pprof", "--merge-threads", "-o", "one.pb.gz")
    assert r.returncode == 0, r.stderr
    assert b"all threads" in gzip.decompress((traced / "one.pb.gz").read_bytes())


def test_min_duration_drops_short_calls(traced):
    full = nesting(chrome_events(convert(traced, "chrome", out="m-full.json")[0]))[1]
    assert any(e - b < 1000 for _, b, e in full)  # short calls to drop
    path, said = convert(traced, "chrome", "--min-duration", "1ms")
    assert "min duration 1 ms" in said
    _, calls = nesting(chrome_events(path))
    assert calls and all(e - b >= 1000 - 0.001 for _, b, e in calls)
    assert {n for n, _, _ in calls} >= {"beta_inner", "time.sleep"}


@pytest.mark.parametrize("args, says", [
    (["-f", "chrome", "--include", ""], "empty pattern"),
    (["-f", "chrome", "--exclude", "no good"], "neither a module name"),
    (["-f", "chrome", "--max-depth", "-2"], "--max-depth"),
    (["-f", "chrome", "--min-duration=-1ms"], "must be 0 or more"),
    (["-f", "chrome", "--min-duration", "nan"], "not a finite time"),
    (["-f", "chrome", "--merge-threads"], "collapsed and pprof only"),
    (["-f", "chrome", "--from", "1:2:x"], "not a time"),
    (["-f", "chrome", "--from", "00:00:00"], "before the trace began"),
    (["-f", "chrome", "--from", "2s", "--to", "1s"], "--from is after --to"),
])
def test_bad_filters_fail_before_writing(traced, args, says):
    r = cli(traced, "convert", "t.ftrace", *args, "-o", "bad.out")
    assert r.returncode in (1, 2) and says in r.stderr, r.stderr
    assert not (traced / "bad.out").exists()


def test_sampled_trace_filters(traced):
    r = cli(traced, "convert", "s.ftrace", "-f", "collapsed", "--include", "beta",
            "--max-depth", "1", "-o", "s.folded")
    assert r.returncode == 0, r.stderr
    lines = (traced / "s.folded").read_text().splitlines()
    assert lines
    for line in lines:
        frames = line.rsplit(" ", 1)[0].split(";")[1:]
        assert frames[0].startswith("beta_") and len([f for f in frames if
                                                      not f.startswith("<")]) == 1
    r = cli(traced, "convert", "s.ftrace", "-f", "chrome", "--min-duration", "1ms", "-o",
            "s.json")
    assert r.returncode == 1 and "sampled trace" in r.stderr
    assert not (traced / "s.json").exists()


@pytest.mark.parametrize("extra", [[], ["--include", "beta"]])
def test_min_duration_in_collapsed_matches_the_filtered_events(traced, extra):
    """collapsed --min-duration (the native fold drops short calls) gives each function the
    self time and calls that folding the events exporters' filtered stream gives (the
    reference fold, in Python), to the ns."""
    import fasttrace
    from fasttrace._scope import Scope
    from fasttrace.export._filter import Filtered
    from reference_fold import function_stats

    r = cli(traced, "convert", "t.ftrace", "-f", "collapsed", "--min-duration", "1ms", *extra,
            "-o", "md.folded")
    assert r.returncode == 0, r.stderr
    leaf_self: dict = {}
    for stack, w in _weights(traced / "md.folded").items():
        leaf = stack.split(";")[-1].split(" (")[0]
        leaf_self[leaf] = leaf_self.get(leaf, 0) + w
    trace = fasttrace.load(str(traced / "t.ftrace"))
    include = extra[1:] if extra else []
    filtered = Filtered(trace, Scope(include, (), None, 0.001), None, None, False)
    want: dict = {}
    for ts in function_stats(filtered).values():
        for fid, fs in ts.functions.items():
            f = trace.function(fid)
            name = f.qualname
            if fs.self_ns:
                want[name] = want.get(name, 0) + fs.self_ns
    got = {k: v for k, v in leaf_self.items() if not k.startswith(("MainThread", "worker"))}
    assert got == want
    assert "beta_inner" in got  # the calls that sleep stay, the others went
    full = _weights(traced / "md.folded")
    assert len(full) < len(_weights_of(traced, extra))


def _weights_of(traced, extra):
    r = cli(traced, "convert", "t.ftrace", "-f", "collapsed", *extra, "-o", "all.folded")
    assert r.returncode == 0, r.stderr
    return _weights(traced / "all.folded")


def test_wall_clock_window(traced):
    """--from/--to as wall-clock times select the same window as the same times given from
    the trace's start."""
    import datetime

    import fasttrace

    trace = fasttrace.load(str(traced / "t.ftrace"))
    start = datetime.datetime.fromtimestamp(trace.header["start_wall_ns"] / 1e9).astimezone()
    span = trace.stats.duration_ns / 1e9
    a, b = span * 0.25, span * 0.75
    wall = [(start + datetime.timedelta(seconds=x)).isoformat() for x in (a, b)]
    day = [(start + datetime.timedelta(seconds=x)).time().isoformat() for x in (a, b)]
    outs = []
    for i, (f, t) in enumerate([(f"{a:.6f}", f"{b:.6f}"), wall, day]):
        r = cli(traced, "convert", "t.ftrace", "-f", "collapsed", "--from", f, "--to", t,
                "-o", f"w{i}.folded")
        assert r.returncode == 0, r.stderr
        outs.append(_weights(traced / f"w{i}.folded"))
    assert outs[0] and outs[0] == outs[1] == outs[2]
    assert sum(outs[0].values()) < sum(_weights_of(traced, []).values())
