"""fasttrace.http.wsgi_app(): the endpoints as a WSGI application, to mount in Flask, Django or
any WSGI server:

    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app,
                                        {"/debug/fasttrace": fasttrace.http.wsgi_app()})

A trace request holds its worker for its seconds, as a Go handler holds its goroutine: mount it
in a server with threads (gunicorn --threads N, or a threaded server) so that the program's own
requests go on meanwhile.  The worker's thread waits in fasttrace's code, so its frames are left
out of the trace (and of samples).  A client that goes away mid-capture is seen where the server
hands over its socket (gunicorn's "gunicorn.socket", werkzeug's "werkzeug.socket"); elsewhere
the capture runs its seconds (at most max_seconds) and the answer is dropped.
"""

from __future__ import annotations

import socket

from fasttrace.http import _endpoints
from fasttrace.http._endpoints import REASONS, Config, HttpError, Job, Request, Response

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Iterable, Optional


class WsgiApp:
    """A WSGI application serving fasttrace's endpoints."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def __call__(self, environ: "Dict[str, Any]", start_response: "Callable[..., Any]"
                 ) -> "Iterable[bytes]":
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                   if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        req = Request(environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "") or "/",
                      environ.get("QUERY_STRING", ""), headers, environ.get("REMOTE_ADDR", ""))
        answer = _endpoints.prepare(self.config, req)
        response: Optional[Response]
        if isinstance(answer, Job):
            answer.client = req.client
            try:
                response = _endpoints.run_blocking(answer, _gone_check(environ))
            except HttpError as e:
                response = e.response()
            if response is None:  # the client went away: whatever is sent goes nowhere
                response = _endpoints.error(400, "fasttrace: the client closed the request")
        else:
            response = answer
        start_response(f"{response.status} {REASONS.get(response.status, '')}",
                       response.headers)
        if req.method == "HEAD":
            response.close()
            return []
        if response.file is not None:
            wrapper = environ.get("wsgi.file_wrapper")
            if wrapper is not None:  # the server's sendfile path, which closes the file
                return wrapper(response.file, _endpoints.BLOCK)  # type: ignore[no-any-return]
        return response.chunks()


def _gone_check(environ: "Dict[str, Any]") -> "Callable[[], bool]":
    sock = environ.get("gunicorn.socket") or environ.get("werkzeug.socket")
    if not isinstance(sock, socket.socket):
        return lambda: False
    return lambda: _endpoints.peer_gone(sock)
