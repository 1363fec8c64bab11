"""A service with fasttrace.http.serve(): threads doing work, and the endpoints on a free port.

    python standalone.py PORTFILE [--token T] [--directory D] [--flight SECONDS] [--max-seconds N]
                         [--capture PATH]

Writes the port to PORTFILE once it serves; runs until it is killed (SIGTERM exits cleanly).
"""

import argparse
import os
import signal
import sys
import threading
import time

import fasttrace
import fasttrace.http


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def busy_worker(stop):
    while not stop.is_set():
        fib(16)
        time.sleep(0.001)


def sleepy_worker(stop):
    while not stop.is_set():
        time.sleep(0.02)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("portfile")
    p.add_argument("--token")
    p.add_argument("--directory")
    p.add_argument("--flight", type=float)
    p.add_argument("--flight-rate", type=float)
    p.add_argument("--max-seconds", type=float, default=60)
    p.add_argument("--capture", help="a capture of the program's own, into this file")
    a = p.parse_args()
    stop = threading.Event()
    # The handler only sets a flag: stop.set() in it could run while this thread holds the
    # Event's own lock inside stop.wait(), and deadlock (seen in CI on 3.11).
    terminated = []
    signal.signal(signal.SIGTERM, lambda *_: terminated.append(True))
    threads = [threading.Thread(target=busy_worker, args=(stop,), name="busy"),
               threading.Thread(target=sleepy_worker, args=(stop,), name="sleepy")]
    for t in threads:
        t.start()
    if a.capture:
        fasttrace.start(a.capture, rate=50)
    if a.flight:
        fasttrace.FlightRecorder(seconds=a.flight, rate=a.flight_rate).start()
    server = fasttrace.http.serve(port=0, token=a.token, directory=a.directory,
                                  max_seconds=a.max_seconds)
    tmp = a.portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.port))
    os.replace(tmp, a.portfile)
    while not terminated:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    server.close()
    if fasttrace.is_tracing():
        fasttrace.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
