"""Trace a small program with fasttrace and show what was recorded.

    python examples/quickstart.py [OUT.ftrace]
"""

import sys
import threading
import time
from collections import Counter

import fasttrace


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def io_bound():
    time.sleep(0.01)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "quickstart.ftrace"
    with fasttrace.start(out) as session:
        worker = threading.Thread(target=io_bound, name="io-worker")
        worker.start()
        fib(20)
        worker.join()
    s = session.summary
    print(f"traced {s.events} events on {s.threads} threads in {s.duration_ns / 1e6:.1f} ms, "
          f"{s.bytes} bytes ({s.bytes / max(s.events, 1):.1f} bytes/event), {s.dropped} dropped")

    trace = fasttrace.load(out)
    calls = Counter(e.function.qualname for e in trace.events() if e.kind in ("call", "c_call"))
    print("most called:", ", ".join(f"{name} x{n}" for name, n in calls.most_common(3)))
    for t in trace.threads:
        sleeps = [e for e in trace.events(t.id) if e.function.qualname == "time.sleep"]
        if len(sleeps) == 2:
            print(f"thread {t.name!r} slept {(sleeps[1].ts - sleeps[0].ts) / 1e6:.1f} ms")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
