"""fasttrace.http.serve(): the endpoints on a server of their own, in a daemon thread.

The standard library's http.server, with two changes that matter to a tracer:
  - every thread of the server is a bare thread (_thread.start_new_thread) whose entry
    function is in this file, fasttrace's own code: trace mode records nothing under it, a
    profile function installed through threading never reaches it, and the sampler leaves out
    any thread inside it (HIDDEN_CODES).  The traces it serves hold the program alone.
  - at most MAX_CONNECTIONS requests are handled at once; more get 503 at once, so a flood
    of connections cannot start a thread each.
"""

from __future__ import annotations

import _thread
import ipaddress
import os
import socket
import sys
import threading
import warnings
import weakref
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlsplit

from fasttrace._capture import HIDDEN_CODES
from fasttrace.http import _endpoints
from fasttrace.http._endpoints import REASONS, Config, HttpError, Job, Request, Response

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional, Tuple

MAX_CONNECTIONS = 32
# A client that sends no complete request in this time, or stops reading a response, is
# dropped: its thread is not held forever.
SOCKET_TIMEOUT_S = 30.0


class Server:
    """A running endpoint server: .url, .host, .port, and close()."""

    def __init__(self, host: str, port: int, config: Config) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._httpd = _HTTPServer((host, port), _Handler, config, family)
        except OSError as e:
            raise OSError(e.errno, f"fasttrace.http: cannot listen on {_hostport(host, port)}: "
                                   f"{e.strerror}") from None
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self.url = f"http://{_hostport(host, self.port)}{_endpoints.PREFIX}/"
        self._closed = False
        self._pid = os.getpid()
        _servers.add(self)
        # Returns once the thread runs, as threading.Thread.start() does: a program that forks
        # right after serve() must not fork while the thread is still starting.  (Under ASan,
        # whose allocator GCC 12's libasan does not lock around fork(), the child then hung
        # on the allocator lock that the starting thread held.)
        started = _thread.allocate_lock()
        started.acquire()
        _thread.start_new_thread(_serve_forever, (self._httpd, started))
        started.acquire()

    def close(self) -> None:
        """Stops listening; requests being served finish on their own."""
        if not self._closed:
            self._closed = True
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<fasttrace.http.Server {self.url} {'closed' if self._closed else 'serving'}>"


def serve(host: str = "127.0.0.1", port: int = 6060, token: Optional[str] = None, *,
          max_seconds: float = _endpoints.DEFAULT_MAX_SECONDS,
          max_rate: float = _endpoints.DEFAULT_MAX_RATE,
          directory: Optional[str] = None) -> Server:
    """Serves fasttrace's endpoints (see fasttrace.http) on host:port, in a daemon thread, and
    returns the Server (port=0: a free port, in .port).  It listens on loopback unless told
    otherwise; anywhere else without a token it warns, since anyone who reaches the port can
    trace the process.  OSError if the port cannot be had."""
    config = Config(token, max_seconds=max_seconds, max_rate=max_rate, directory=directory)
    if not _is_loopback(host) and token is None:
        warnings.warn(f"fasttrace.http: serving on {host} without a token: anyone who can reach "
                      "this port can trace the process; pass token=", RuntimeWarning,
                      stacklevel=2)
    return Server(host, port, config)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---- the server's threads: entry functions in this file -------------------------------------

def _serve_forever(httpd: "_HTTPServer", started: "_thread.LockType") -> None:
    started.release()
    try:
        httpd.serve_forever(poll_interval=0.5)
    except Exception as e:  # the listening socket failed: say so once, the program goes on
        print(f"fasttrace.http: the server stopped: {e}", file=sys.stderr)


def _handle(httpd: "_HTTPServer", request: socket.socket, client: "Tuple[str, int]") -> None:
    try:
        httpd.finish_request(request, client)
    except Exception:
        pass  # the client's problem (a reset, a timeout): nobody to tell
    finally:
        httpd.shutdown_request(request)
        httpd.slots.release()


class _HTTPServer(HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: "Tuple[str, int]", handler: Any, config: Config,
                 family: int) -> None:
        self.address_family = family
        self.config = config
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client: Any) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain"
                                b"\r\nConnection: close\r\n\r\nfasttrace: too many requests at "
                                b"once\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            _thread.start_new_thread(_handle, (self, request, client))
        except RuntimeError:  # no thread to be had
            self.slots.release()
            self.shutdown_request(request)

    def handle_error(self, request: Any, client: Any) -> None:
        pass  # as in _handle: nothing useful to say, and stderr is the program's


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "fasttrace"
    timeout = SOCKET_TIMEOUT_S
    # http.server's own errors (a malformed request line) in the endpoints' plain text
    error_message_format = "fasttrace: %(code)d %(message)s: %(explain)s\n"
    error_content_type = "text/plain; charset=utf-8"

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _serve(self) -> None:
        url = urlsplit(self.path)
        req = Request(self.command, url.path, url.query,
                      {k.lower(): v for k, v in self.headers.items()},
                      f"{self.client_address[0]}")
        answer = _endpoints.prepare(self.server.config, req)
        if isinstance(answer, Job):
            answer.client = req.client
            try:
                response = _endpoints.run_blocking(answer, self._gone, skip_caller_stack=True)
            except HttpError as e:
                response = e.response()
            if response is None:
                self.close_connection = True
                return  # the client went away: nobody to answer
        else:
            response = answer
        self._send(response)

    def _send(self, response: Response) -> None:
        try:
            self.send_response(response.status, REASONS.get(response.status))
            for name, value in response.headers:
                self.send_header(name, value)
            if not any(n.lower() == "content-length" for n, _ in response.headers):
                self.send_header("Content-Length", str(response.length or 0))
            self.end_headers()
            if self.command != "HEAD":
                for block in response.chunks():
                    self.wfile.write(block)
        finally:
            response.close()

    def _gone(self) -> bool:
        return _endpoints.peer_gone(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the program's stderr is its own


_servers: "weakref.WeakSet[Server]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A forked child has none of the servers' threads, but their listening sockets: closed,
    # or connections to the parent's port would queue in the child, where nobody accepts
    # them once the parent is gone.  (A child serves on a port of its own: serve() again.)
    for server in list(_servers):
        if server._pid == os.getpid():
            continue  # started in this child by an earlier after-fork handler (--http)
        _servers.discard(server)
        server._closed = True
        try:
            server._httpd.socket.close()
        except OSError:
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)

# Samplers leave out the server's threads (fasttrace/_capture.py).
HIDDEN_CODES.extend([_serve_forever.__code__, _handle.__code__])
