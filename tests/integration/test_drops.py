"""A full ring drops events without blocking, counts them, and marks the gap."""

from __future__ import annotations

import time
from collections import Counter

from helpers import trace_with_drops


def leaf():
    pass


def outer():
    for _ in range(300_000):
        leaf()


def test_full_ring_drops_and_marks_the_gap(tmp_path):
    # The writer is stalled (a FIFO nobody reads yet), the smallest ring fills, and the program
    # must go on, dropping.
    trace, summary = trace_with_drops(tmp_path, outer)
    assert summary.dropped > 100_000
    assert trace.stats.dropped == summary.dropped
    assert not trace.stats.truncated

    events = list(trace.events(gaps=True))
    gaps = [e for e in events if e.kind == "gap"]
    assert gaps, "the gap is marked in the stream"
    assert sum(g.dropped for g in gaps) == summary.dropped
    for g in gaps:
        assert g.start_ts <= g.ts

    # Nesting stays balanced per thread across the gaps: the reader closes open frames at the
    # gap and reopens the stack at the resume point.
    depth = Counter()
    calls = 0
    for e in events:
        if e.kind == "gap":
            assert depth[e.thread] == 0, "frames are closed at a gap"
            continue
        depth[e.thread] += 1 if e.kind in ("call", "c_call") else -1
        if e.kind == "call" and e.function.qualname == "leaf" and not e.synthetic:
            calls += 1
    assert all(d <= 0 for d in depth.values())
    assert 0 < calls < 300_000
    # outer() was running when the ring filled: the reader closed it at the gap's start
    first = events.index(gaps[0])
    closed = []
    for e in reversed(events[:first]):
        if not (e.synthetic and e.kind == "return"):
            break
        closed.append(e.function.qualname)
    assert "outer" in closed
    assert all(e.ts == gaps[0].start_ts for e in events[first - len(closed):first])


MIN_DURATION = 2e-6
SLOW_CALLS = 150_000


def slow():
    # longer than MIN_DURATION: written, with its pending caller
    end = time.perf_counter() + 3 * MIN_DURATION
    while time.perf_counter() < end:
        pass


def middle(i):
    leaf()
    if i % 2:
        slow()  # middle() is written late, when slow() returns: ft_thread_flush_pending


def mixed():
    for i in range(2 * SLOW_CALLS):
        middle(i)


PROGRAM = {"mixed", "middle", "slow", "leaf"}


def test_min_duration_through_gaps(tmp_path):
    # min_duration writes a pending call late, into a ring that may be full: the flush opens
    # gaps as the hooks do, its DROP records list only the calls that are in the file, and
    # every call in the file lasted min_duration.
    trace, summary = trace_with_drops(tmp_path, mixed, pace=0.1, min_duration=MIN_DURATION,
                                      c_calls=False)
    assert summary.dropped > 0 and trace.stats.dropped == summary.dropped
    assert not trace.stats.truncated
    events = list(trace.events(gaps=True))
    main = next(t.id for t in trace.threads if t.name == "MainThread")
    gaps = [e for e in events if e.kind == "gap" and e.thread == main]
    assert len(gaps) >= 2, "gaps began and ended while the program ran"
    stack = {}
    written = Counter()
    for e in events:
        open_ = stack.setdefault(e.thread, [])
        if e.kind == "gap":
            assert not open_, "frames are closed at a gap"
            continue
        if e.kind in ("call", "c_call"):
            # none of the program's functions recurses: one open twice is a frame that a DROP
            # record reopened though it was never written, and whose return never came
            assert e.function.qualname not in PROGRAM or \
                all(f.function != e.function for f in open_), (e, open_)
            open_.append(e)
            if not e.synthetic:
                written[e.function.qualname] += 1
            continue
        assert open_ and open_[-1].function == e.function, (e, open_[-1:])
        call = open_.pop()
        if not (call.synthetic or e.synthetic):
            assert e.ts - call.ts >= MIN_DURATION * 1e9, (e.function.qualname, e.ts - call.ts)
    assert all(not s for s in stack.values())
    # a leaf() lasts min_duration only when the thread was switched out in it
    assert written["leaf"] < SLOW_CALLS // 100, written
    assert 0 < written["slow"] < SLOW_CALLS
    # middle() is written with each slow() it holds, and only then (a gap may take either)
    assert 0 < written["middle"] <= SLOW_CALLS
