"""Many threads at once: nothing lost, every call has its return, order kept per thread."""

from __future__ import annotations

import threading
from collections import Counter

import fasttrace

N_THREADS = 8
N_CALLS = 200_000


def leaf():
    pass


def worker(barrier):
    barrier.wait()
    for _ in range(N_CALLS):
        leaf()


def test_eight_threads_lose_nothing(trace_path):
    barrier = threading.Barrier(N_THREADS)
    threads = [threading.Thread(target=worker, args=(barrier,)) for _ in range(N_THREADS)]
    with fasttrace.start(trace_path) as session:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert session.summary.dropped == 0
    trace = fasttrace.load(trace_path)
    assert trace.stats.dropped == 0 and not trace.stats.truncated

    calls, returns = Counter(), Counter()
    last_ts, depth = {}, Counter()
    for e in trace.events():
        assert e.ts >= last_ts.get(e.thread, 0), "order within a thread"
        last_ts[e.thread] = e.ts
        if e.function.qualname != "leaf":
            continue
        if e.kind == "call":
            calls[e.thread] += 1
            depth[e.thread] += 1
        else:
            returns[e.thread] += 1
            depth[e.thread] -= 1
            assert depth[e.thread] == 0
    workers = [th.id for th in trace.threads if th.ident in {t.ident for t in threads}]
    assert len(workers) == N_THREADS
    for tid in workers:
        assert calls[tid] == N_CALLS and returns[tid] == N_CALLS
