"""Exact event sequences for small programs."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import pytest
from helpers import span

import fasttrace

QUALNAMES = sys.version_info >= (3, 11)  # before 3.11 code objects have no qualname


def trace_of(path, fn, **kw):
    with fasttrace.start(path, **kw):
        fn()
    return fasttrace.load(path)


def c():
    pass


def b():
    c()


def nested():
    b()
    c()


def test_nested_calls(trace_path):
    t = trace_of(trace_path, nested)
    assert span(t, "nested") == [
        ("call", "nested"),
        ("call", "b"),
        ("call", "c"),
        ("return", "c"),
        ("return", "b"),
        ("call", "c"),
        ("return", "c"),
        ("return", "nested"),
    ]


def fact(n):
    return 1 if n <= 1 else n * fact(n - 1)


def recursion():
    fact(3)


def test_recursion(trace_path):
    t = trace_of(trace_path, recursion)
    assert span(t, "recursion") == [
        ("call", "recursion"),
        ("call", "fact"),
        ("call", "fact"),
        ("call", "fact"),
        ("return", "fact"),
        ("return", "fact"),
        ("return", "fact"),
        ("return", "recursion"),
    ]


def gen():
    yield 1
    yield 2


def generators():
    for _ in gen():
        pass


def test_generator_resumes_are_calls(trace_path):
    t = trace_of(trace_path, generators)
    # each resume is a call and each suspension a return: 2 yields + the final return
    assert span(t, "generators") == [("call", "generators")] + [
        ("call", "gen"),
        ("return", "gen"),
    ] * 3 + [("return", "generators")]


def raiser3():
    raise KeyError("x")


def raiser2():
    raiser3()


def unwinding():
    try:
        raiser2()
    except KeyError:
        pass


def test_exception_unwinds_as_returns(trace_path):
    t = trace_of(trace_path, unwinding, c_calls=False)
    assert span(t, "unwinding") == [
        ("call", "unwinding"),
        ("call", "raiser2"),
        ("call", "raiser3"),
        ("return", "raiser3"),
        ("return", "raiser2"),
        ("return", "unwinding"),
    ]


def c_calls():
    len([1, 2])
    time.sleep(0)
    [].append(1)


def test_c_calls(trace_path):
    t = trace_of(trace_path, c_calls)
    assert span(t, "c_calls") == [
        ("call", "c_calls"),
        ("c_call", "len"),
        ("c_return", "len"),
        ("c_call", "time.sleep"),
        ("c_return", "time.sleep"),
        ("c_call", "list.append"),
        ("c_return", "list.append"),
        ("return", "c_calls"),
    ]
    f = next(f for f in t.functions if f.qualname == "time.sleep")
    assert f.is_c and f.name == "sleep" and f.module == "time"


def test_c_calls_off(trace_path):
    t = trace_of(trace_path, c_calls, c_calls=False)
    assert span(t, "c_calls") == [("call", "c_calls"), ("return", "c_calls")]
    assert t.header["c_calls"] is False


def test_c_call_that_raises_is_closed(trace_path):
    def bad_int():
        try:
            int("x")  # a type call: not a C function event
        except ValueError:
            pass
        try:
            [].pop()
        except IndexError:
            pass

    t = trace_of(trace_path, bad_int)
    name = "test_c_call_that_raises_is_closed.<locals>.bad_int" if QUALNAMES else "bad_int"
    assert span(t, name) == [
        ("call", name),
        ("c_call", "list.pop"),
        ("c_return", "list.pop"),
        ("return", name),
    ]


class Klass:
    def __init__(self):
        self.x = 1

    def method(self):
        return self.x

    @staticmethod
    def static():
        return 2


def methods():
    k = Klass()
    k.method()
    Klass.static()
    f = lambda: 3  # noqa: E731
    f()


def test_methods_and_lambdas(trace_path):
    t = trace_of(trace_path, methods, c_calls=False)
    if QUALNAMES:
        expected = ["Klass.__init__", "Klass.method", "Klass.static", "methods.<locals>.<lambda>"]
    else:
        expected = ["__init__", "method", "static", "<lambda>"]
    seq = span(t, "methods")
    assert seq[0] == ("call", "methods") and seq[-1] == ("return", "methods")
    inner = seq[1:-1]
    assert inner == [x for q in expected for x in (("call", q), ("return", q))]
    lam = next(f for f in t.functions if f.name == "<lambda>" and f.filename == __file__)
    assert lam.lineno > 0 and not lam.is_c


def work(n):
    for _ in range(n):
        c()


def test_threads_started_before_and_after_start(trace_path):
    go = threading.Event()

    def early():
        go.wait()
        work(3)

    before = threading.Thread(target=early, name="early-bird")
    before.start()
    with fasttrace.start(trace_path):
        go.set()
        before.join()
        after = threading.Thread(target=work, args=(2,), name="late-comer")
        after.start()
        after.join()
    t = fasttrace.load(trace_path)
    by_name = {th.name: th for th in t.threads}
    assert {"MainThread", "early-bird", "late-comer"} <= set(by_name)
    early_id = by_name["early-bird"].id
    late_id = by_name["late-comer"].id
    assert by_name["early-bird"].ident == before.ident
    assert span(t, "work", early_id) == [("call", "work")] + [
        ("call", "c"),
        ("return", "c"),
    ] * 3 + [("return", "work")]
    assert span(t, "work", late_id).count(("call", "c")) == 2
    # the early thread's frames that were running at start() open at the start, synthetic
    first = next(iter(t.events(early_id)))
    assert first.synthetic and first.ts == 0


def test_timestamps_are_monotonic_per_thread(trace_path):
    t = trace_of(trace_path, lambda: work(1000))
    last = {}
    for e in t.events():
        assert e.ts >= last.get(e.thread, 0)
        last[e.thread] = e.ts
    assert 0 < t.stats.duration_ns


def test_sleep_duration_is_measured(trace_path):
    def sleeper():
        time.sleep(0.05)

    t = trace_of(trace_path, sleeper)
    ev = [e for e in t.events() if e.function.qualname == "time.sleep"]
    assert [e.kind for e in ev] == ["c_call", "c_return"]
    assert 0.045e9 < ev[1].ts - ev[0].ts < 1e9


@pytest.mark.parametrize("c_calls", [True, False])
def test_calls_balance(trace_path, c_calls):
    t = trace_of(trace_path, nested, c_calls=c_calls)
    depth = {}
    for e in t.events():
        d = depth.get(e.thread, 0) + (1 if e.kind in ("call", "c_call") else -1)
        depth[e.thread] = d
    # orphan returns (frames entered before start) may take a thread below zero; every
    # frame the trace saw open is closed by the end
    assert all(d <= 0 for d in depth.values())


async def inner_coro():
    await asyncio.sleep(0)
    return 1


async def outer_coro():
    return await inner_coro()


def test_coroutines_suspend_and_resume_balanced(trace_path):
    t = trace_of(trace_path, lambda: asyncio.run(outer_coro()), c_calls=False)
    names = {"outer_coro", "inner_coro"}
    seq = [(e.kind, e.function.qualname) for e in t.events() if e.function.qualname in names]
    # the await chain suspends as a whole (each frame returns) and resumes as a whole
    assert seq == [
        ("call", "outer_coro"),
        ("call", "inner_coro"),
        ("return", "inner_coro"),
        ("return", "outer_coro"),
        ("call", "outer_coro"),
        ("call", "inner_coro"),
        ("return", "inner_coro"),
        ("return", "outer_coro"),
    ]
