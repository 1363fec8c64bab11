"""The native call tree (fasttrace/_calltree.py, src/ft_fold.c) against the Python fold it
replaced (tests/reference_fold.py), and the timeline index's slices and pyramid
(fasttrace/_timeline.py) against the events they come from."""

from __future__ import annotations

import random
import threading
import time

import pytest

import reference_fold
from export_programs import outer, two_threads
from helpers import load_cut, trace_with_drops, traced

import fasttrace
from fasttrace._calltree import CallTree, thread_stats
from fasttrace._timeline import DEFAULT_BUDGET, Index


def busy():
    def rec(n):
        return n if n < 2 else rec(n - 1) + rec(n - 2)

    def worker():
        for _ in range(20):
            rec(12)
            sorted(range(50))
            time.sleep(0.0005)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    worker()
    for t in threads:
        t.join()


def busy_and_spinning():
    """busy(), then 50 ms of pure Python: a sampler must see the thread running."""
    busy()
    end = time.perf_counter() + 0.05
    while time.perf_counter() < end:
        sum(range(100))


def key(stats, nonzero=False):
    out = {}
    for tid, t in stats.items():
        functions = sorted((f, s.calls, s.self_ns, s.total_ns) for f, s in t.functions.items()
                           if not nonzero or s.calls or s.self_ns or s.total_ns)
        fields = (t.traced_ns, t.gap_ns, t.outside_ns, t.samples, t.idle_ns, t.in_call_ns,
                  functions)
        if not nonzero:
            fields += (t.dropped, t.first_ts, t.last_ts)
        elif not t.traced_ns and not functions:
            continue
        out[tid] = fields
    return out


def reference(trace, **window):
    fold = reference_fold.sample_stats if trace.mode == "sample" else reference_fold.function_stats
    return fold(trace, **window)


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    d = tmp_path_factory.mktemp("calltree")
    out = {
        "threads": traced(d / "threads.ftrace", busy),
        "no-c-calls": traced(d / "noc.ftrace", busy, c_calls=False),
        "sampled": traced(d / "sampled.ftrace", busy_and_spinning, rate=2000),
        "two-threads": traced(d / "two.ftrace", two_threads),
    }
    out["drops"] = trace_with_drops(d, outer)[0]
    out["truncated"] = load_cut(d / "threads.ftrace", d / "cut.ftrace", 0.6)
    with fasttrace.start(d / "series.ftrace", max_bytes=300_000):
        for _ in range(8):
            busy()
    series = sorted(d.glob("series*.ftrace"))
    assert len(series) >= 3
    series[1].unlink()  # a missing file: the reader breaks every thread's state there
    out["series"] = fasttrace.load([str(p) for p in series if p.exists()])
    return out


@pytest.mark.parametrize("name", ["threads", "no-c-calls", "sampled", "two-threads", "drops",
                                  "truncated", "series"])
def test_native_fold_matches_the_python_fold(traces, name):
    trace = traces[name]
    assert key(thread_stats(trace)) == key(reference(trace))


def test_the_fold_sees_what_it_must(traces):
    """The comparisons above compare something: threads, recursion, gaps and a break."""
    stats = thread_stats(traces["drops"])
    assert sum(t.dropped for t in stats.values()) > 0
    assert sum(t.gap_ns for t in stats.values()) > 0
    assert any(f.qualname.endswith("rec") for f in traces["threads"].functions)
    assert len(thread_stats(traces["threads"])) == 3
    assert traces["truncated"].stats.truncated
    assert traces["series"].series_problems


@pytest.mark.parametrize("name", ["threads", "sampled", "drops", "series"])
def test_a_window_folds_only_its_time(traces, name):
    trace = traces[name]
    rng = random.Random(name)
    end = trace.stats.duration_ns
    for _ in range(4):
        a, b = sorted(rng.randrange(0, max(end, 2)) for _ in range(2))
        native = CallTree.build(trace, window=(a, b)).thread_stats()
        assert key(native, nonzero=True) == key(reference(trace, w0=a, w1=b), nonzero=True)


def test_report_and_exporters_share_the_tree(traces, tmp_path):
    """collapsed's per-stack self times sum to the tree's per-function self times."""
    from fasttrace.export import collapsed

    trace = traces["threads"]
    out = tmp_path / "t.folded"
    collapsed.write(trace, out)
    folded = sum(int(line.rsplit(" ", 1)[1]) for line in out.read_text().splitlines())
    stats = thread_stats(trace)
    assert folded == sum(f.self_ns for t in stats.values() for f in t.functions.values())


def calls_of(trace, tid):
    """(start, end, depth, fid) of every call of thread tid, from its events."""
    out, stack = [], []
    for e in trace.events(tid):
        if e.kind in ("call", "c_call"):
            stack.append((e.ts, e.function.id))
        elif stack:
            start, fid = stack.pop()
            out.append((start, e.ts, len(stack) + 1, fid))
    return sorted(out)


# budget 1: the index keeps (next to) no pyramid, so every query decodes its range again
BUDGETS = [pytest.param(DEFAULT_BUDGET, id="kept"), pytest.param(1, id="decoded-again")]


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("name", ["threads", "drops", "series", "no-c-calls"])
def test_raw_slices_are_the_calls(traces, name, budget):
    trace = traces[name]
    index = Index(trace, budget=budget)
    (p,) = index.processes
    assert (p._fold.finest_level > 0) == (budget == 1)
    tree = p.tree
    for t in p.threads:
        s = p.slices(t.tid, t.first_ns, t.last_ns, 0)
        got = sorted(zip(s.start, s.end, (tree.depth[n] for n in s.node),
                         (tree.fid[n] for n in s.node)))
        assert got == calls_of(trace, t.tid)
        assert set(s.count) == {1}
        assert t.max_depth == max((tree.depth[n] for n in s.node), default=0)


def test_gaps_are_in_the_index(traces):
    (p,) = Index(traces["drops"]).processes
    gaps = [g for t in p.threads for g in t.gaps]
    assert gaps and sum(g[2] for g in gaps) == traces["drops"].stats.dropped
    assert all(start <= end for start, end, _ in gaps)


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("res", [1_000, 10_000, 250_000, 5_000_000])
def test_the_pyramid_covers_every_call_with_few_entries(traces, res, budget):
    trace = traces["threads"]
    (p,) = Index(trace, budget=budget).processes
    tree = p.tree
    for t in p.threads:
        raw = p.slices(t.tid, t.first_ns, t.last_ns, 0)
        span = t.last_ns - t.first_ns
        for t0, t1 in [(t.first_ns, t.last_ns), (t.first_ns + span // 3, t.first_ns + span // 2)]:
            got = p.slices(t.tid, t0, t1, res)
            by_depth = {}
            for start, end, node, count in zip(*got):
                assert start <= t1 and end >= t0
                by_depth.setdefault(tree.depth[node], []).append((start, end, count))
            for depth, entries in by_depth.items():
                # a few entries per resolution step at most (runs are split by gaps >= width)
                assert len(entries) <= 2 * (t1 - t0) // res + 4, (depth, len(entries))
            # every call in range lies inside an entry at its depth, and the counts add up
            covered = {}
            for start, end, node, count in zip(*raw):
                if start > t1 or end < t0:
                    continue
                d = tree.depth[node]
                inside = [e for e in by_depth.get(d, ()) if e[0] <= start and end <= e[1]]
                assert len(inside) == 1, (d, start, end)
                covered[(d, inside[0])] = covered.get((d, inside[0]), 0) + 1
            whole = (t0, t1) == (t.first_ns, t.last_ns)
            for d, entries in by_depth.items():
                for e in entries:
                    # an entry holds the calls it stands for (in part, for a part of the range)
                    n = covered.get((d, e), 0)
                    assert n == e[2] if whole else 0 < n <= e[2]


def test_sampled_index_has_slices_and_states(traces):
    trace = traces["sampled"]
    (p,) = Index(trace).processes
    assert p.mode == "sample"
    states = set()
    for t in p.threads:
        s = p.slices(t.tid, t.first_ns, t.last_ns + 10**9, 0)
        assert len(s.start) > 0
        assert all(a <= b for a, b in zip(s.start, s.end))
        st = p.states(t.tid, t.first_ns, t.last_ns + 10**9, 0)
        states.update(st.state)
    assert 0 in states  # running
    assert states & {1, 2}  # the workers sleep


def test_unknown_threads_are_key_errors(traces):
    (p,) = Index(traces["threads"]).processes
    with pytest.raises(KeyError):
        p.slices(999, 0, 10, 1)
    with pytest.raises(KeyError):
        p.states(999, 0, 10, 1)


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("name", ["threads", "drops", "series"])
def test_a_range_in_the_middle_has_its_calls_exactly(traces, name, budget):
    """A query from the middle of a thread (decoding again starts at a chunk boundary, with
    the frames open there) gives exactly the calls that overlap it, with their full extent."""
    trace = traces[name]
    (p,) = Index(trace, budget=budget).processes
    tree = p.tree
    rng = random.Random(name)
    for t in p.threads:
        calls = calls_of(trace, t.tid)
        for _ in range(3):
            t0, t1 = sorted(rng.randint(t.first_ns, t.last_ns) for _ in range(2))
            s = p.slices(t.tid, t0, t1, 0)
            got = sorted(zip(s.start, s.end, (tree.depth[n] for n in s.node),
                             (tree.fid[n] for n in s.node)))
            assert got == [c for c in calls if c[0] <= t1 and c[1] >= t0]


@pytest.mark.parametrize("budget", BUDGETS)
def test_a_query_over_its_limit_says_so(traces, budget):
    from fasttrace._core import TooManySlices

    (p,) = Index(traces["threads"], budget=budget).processes
    t = p.threads[0]
    n = len(p.slices(t.tid, t.first_ns, t.last_ns, 0).start)
    assert n > 10
    with pytest.raises(TooManySlices, match="more than 10 slices"):
        p.slices(t.tid, t.first_ns, t.last_ns, 0, limit=10)
    assert len(p.slices(t.tid, t.first_ns, t.last_ns, 0, limit=n).start) == n


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("name", ["threads", "drops", "series", "no-c-calls"])
def test_the_index_folds_a_window_from_its_chunk_boundaries(traces, name, budget):
    """IndexProcess.window() starts each thread at the chunk boundary before the window (the
    frames open there, the reader's state) instead of at the trace's start: the same answer
    as a whole fold clipped to the window."""
    trace = traces[name]
    (p,) = Index(trace, budget=budget).processes
    rng = random.Random(name + "w")
    end = trace.stats.duration_ns
    windows = [(0, end), (end // 2, end), (0, end // 3)]
    windows += [tuple(sorted(rng.randrange(0, end) for _ in range(2))) for _ in range(5)]
    for a, b in windows:
        got = p.window(a, b).thread_stats()
        assert key(got, nonzero=True) == key(reference(trace, w0=a, w1=b), nonzero=True), (a, b)
