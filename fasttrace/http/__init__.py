"""Traces on demand from a running program, over HTTP: Go's net/http/pprof for Python.

    fasttrace.http.serve()                     # a server of its own, in a daemon thread
    app.mount("/debug/fasttrace", fasttrace.http.asgi_app())         # Starlette, FastAPI
    DispatcherMiddleware(app.wsgi_app, {"/debug/fasttrace": fasttrace.http.wsgi_app()})

    curl -o out.ftrace 'http://127.0.0.1:6060/debug/fasttrace/trace?seconds=5'
    go tool pprof 'http://127.0.0.1:6060/debug/fasttrace/profile?seconds=10'

The endpoints, under /debug/fasttrace/:
    (the index)                     the process, what records now, the endpoints
    trace?seconds=N[&rate=HZ][&c_calls=0]   a .ftrace of the next N seconds
    profile?seconds=N[&rate=HZ]     a gzipped pprof profile of samples (100 Hz by default)
    flight                          a dump of the running flight recorder (404 if none)

With a flight recorder running, trace and profile wait their seconds and answer from a dump of
it: no second capture starts.  Otherwise a request that would overlap any capture gets 409
saying what runs.  With token=, a request needs `Authorization: Bearer TOKEN` or ?token=TOKEN
(401 otherwise).  seconds is at most max_seconds (60) and rate at most max_rate (1000); bad
parameters get 400 and unknown paths 404.  A client that disconnects mid-capture stops it.
Files are streamed from disk (a temporary file in `directory`, unlinked as soon as it is open).
The endpoints' own threads and waits are left out of the traces they serve.
"""

from __future__ import annotations

from fasttrace import _recorder
from fasttrace.http._asgi import AsgiApp
from fasttrace.http._endpoints import DEFAULT_MAX_RATE, DEFAULT_MAX_SECONDS, PREFIX, Config
from fasttrace.http._server import Server, serve
from fasttrace.http._wsgi import WsgiApp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

__all__ = ["PREFIX", "AsgiApp", "Server", "WsgiApp", "asgi_app", "serve", "wsgi_app"]


def wsgi_app(token: Optional[str] = None, *, max_seconds: float = DEFAULT_MAX_SECONDS,
             max_rate: float = DEFAULT_MAX_RATE, directory: Optional[str] = None) -> WsgiApp:
    """The endpoints as a WSGI application (mount it at /debug/fasttrace, or serve it whole)."""
    return WsgiApp(Config(token, max_seconds=max_seconds, max_rate=max_rate,
                          directory=directory))


def asgi_app(token: Optional[str] = None, *, max_seconds: float = DEFAULT_MAX_SECONDS,
             max_rate: float = DEFAULT_MAX_RATE, directory: Optional[str] = None) -> AsgiApp:
    """The endpoints as an ASGI application (mount it at /debug/fasttrace, or serve it whole)."""
    return AsgiApp(Config(token, max_seconds=max_seconds, max_rate=max_rate,
                          directory=directory))


# A capture that runs already learns that these modules are fasttrace's own.
_recorder.refresh_own_files()
