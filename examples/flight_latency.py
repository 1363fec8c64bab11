"""The latency-triggered flight recorder: keep the last seconds of a trace in memory, and
write them out only when a request was slow.

    python examples/flight_latency.py [DUMP_DIR]

A small service loop handles requests on two worker threads; about one request in fifty
takes a slow path.  The flight recorder runs the whole time (cheaply: nothing is written);
when a request takes longer than THRESHOLD, the worker asks for a dump, which holds what every
thread did in the seconds before, the slow request included.  `fasttrace report` on the dump
shows where the time went.
"""

import os
import queue
import sys
import threading
import time

import fasttrace

THRESHOLD = 0.020  # seconds: a request slower than this leaves a trace on disk


def parse(payload):
    return [int(x) for x in payload.split(",")]


def score(values):
    return sum(v * v for v in values) % 9973


def slow_lookup(values):
    time.sleep(0.03)  # the cache missed: a remote call
    return score(values)


def handle(payload):
    values = parse(payload)
    if values[0] % 50 == 17:  # one request in fifty misses the cache
        return slow_lookup(values)
    return score(values)


def worker(requests, recorder, dumps, out_dir):
    while True:
        payload = requests.get()
        if payload is None:
            return
        t0 = time.perf_counter()
        handle(payload)
        took = time.perf_counter() - t0
        if took > THRESHOLD and len(dumps) < 3:
            path = os.path.join(out_dir, f"slow-{len(dumps) + 1}.ftrace")
            summary = recorder.dump(path)  # recording goes on
            dumps.append((path, took, summary))


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "."
    recorder = fasttrace.FlightRecorder(seconds=2, max_bytes=32 << 20)
    dumps = []
    requests = queue.Queue()
    with recorder:
        threads = [threading.Thread(target=worker, args=(requests, recorder, dumps, out_dir),
                                    name=f"worker-{i}") for i in range(2)]
        for t in threads:
            t.start()
        for i in range(400):
            requests.put(",".join(str(i + k) for k in range(50)))
            time.sleep(0.001)
        for _ in threads:
            requests.put(None)
        for t in threads:
            t.join()
    s = recorder.summary
    print(f"handled 400 requests; the recorder saw {s.events} events and kept at most "
          f"{s.bytes / 1e6:.1f} MB in memory")
    for path, took, summary in dumps:
        print(f"a {took * 1e3:.0f} ms request: {path} holds the last "
              f"{summary.duration_ns / 1e9:.2f} s ({summary.events} events); "
              f"see it with: python -m fasttrace report {path}")
    if not dumps:
        print("no request was slow this time")


if __name__ == "__main__":
    main()
