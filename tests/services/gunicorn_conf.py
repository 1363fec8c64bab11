"""gunicorn settings for flask_app: each worker also serves fasttrace's endpoints on a port of
its own (FASTTRACE_HTTP_BASE + the worker's age: 1, 2, ...), started in post_fork."""

import os

worker_class = "gthread"
threads = 4


def post_fork(server, worker):
    import fasttrace.http

    base = int(os.environ["FASTTRACE_HTTP_BASE"])
    worker.fasttrace_http = fasttrace.http.serve(port=base + worker.age)


def worker_exit(server, worker):
    srv = getattr(worker, "fasttrace_http", None)
    if srv is not None:
        srv.close()
