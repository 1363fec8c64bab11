"""A full ring drops events without blocking, counts them, and marks the gap."""

from __future__ import annotations

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
