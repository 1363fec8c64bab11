"""A Flask app for gunicorn.conf.py's post_fork pattern (README, "Multi-process programs").

    gunicorn -c gunicorn.conf.py -w 2 -b 127.0.0.1:8000 app:app

Each request computes for 50 ms, enough to show in a 100 Hz sample, and answers with the pid
of the worker that served it.
"""

import os
import time

from flask import Flask

app = Flask(__name__)


def busy(seconds):
    end, x = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        for i in range(1000):
            x += i
    return x


@app.route("/")
def view():
    busy(0.05)
    return str(os.getpid())
