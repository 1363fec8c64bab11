"""gunicorn settings that give every worker a sampled trace of its own, without changing the
app (README, "Multi-process programs"):

    gunicorn -c gunicorn.conf.py -w 2 app:app

Each worker writes traces/worker.<pid>.ftrace (FASTTRACE_DIR names another directory) from the
moment it is forked until it exits.  The master is not traced: `fasttrace run
--follow-children gunicorn ...` traces it too, and needs no settings.
"""

import os

import fasttrace

TRACE_DIR = os.environ.get("FASTTRACE_DIR", "traces")


def post_fork(server, worker):
    # In the new worker, before it serves anything.  A capture the master ran (if any) has
    # stopped in the worker by itself, leaving the master's file alone.
    os.makedirs(TRACE_DIR, exist_ok=True)
    fasttrace.start(os.path.join(TRACE_DIR, f"worker.{worker.pid}.ftrace"), rate=100)


def worker_exit(server, worker):
    # In the worker, as it leaves (after SIGTERM or SIGQUIT too): finish the file.  A worker
    # killed outright (SIGKILL, a timeout) leaves a file that reads up to its last 100 ms.
    if fasttrace.is_tracing():
        summary = fasttrace.stop()
        server.log.info("fasttrace: worker %s wrote %s samples to %s", worker.pid,
                        summary.events, summary.path)
