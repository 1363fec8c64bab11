"""Small programs the exporter tests trace (one module, so their file and lines are known)."""

from __future__ import annotations

import threading
import time


def slow():
    time.sleep(0.05)


def little():
    return sum(range(50))


def worker_sleep():
    time.sleep(0.03)


def leaf():
    pass


def outer():
    for _ in range(300_000):
        leaf()


def two_threads():
    worker = threading.Thread(target=worker_sleep, name="worker")
    worker.start()
    for _ in range(200):
        little()
    slow()
    worker.join()
