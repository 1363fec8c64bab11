"""The viewer's server: the page's files (fasttrace/viewer/static/) and the Api's answers,
with the standard library's ThreadingHTTPServer.

Every answer is either the data or a status with a one-line plain-text message: a bad
request never reaches the client as a traceback, and never stops the server.
"""

from __future__ import annotations

import json
import os

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from fasttrace.viewer._api import Api, ApiError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Tuple

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8"}


class ViewerServer(ThreadingHTTPServer):
    daemon_threads = True  # Ctrl-C does not wait for a browser's keep-alive connections

    def __init__(self, address: "Tuple[str, int]", api: Api) -> None:
        self.api = api
        if ":" in address[0]:
            import socket
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


def static_file(name: str) -> bytes:
    with open(os.path.join(STATIC, name), "rb") as f:
        return f.read()


class _Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        try:
            url = urlsplit(self.path)
            query = dict(parse_qsl(url.query, keep_blank_values=True))
            status, ctype, body = self._route(url.path, query)
        except ApiError as e:
            status, ctype, body = e.status, "text/plain; charset=utf-8", e.message.encode()
        except Exception as e:  # a bug or damage found while answering: say so, keep serving
            status, ctype = 500, "text/plain; charset=utf-8"
            body = f"internal error: {type(e).__name__}: {e}".encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _route(self, path: str, q: "Dict[str, str]") -> "Tuple[int, str, bytes]":
        api = self.server.api
        if path in ("/", "/index.html"):
            return 200, TYPES[".html"], static_file("index.html")
        if path.startswith("/static/"):
            name = path[len("/static/"):]
            ext = os.path.splitext(name)[1]
            # only the page's own files: no directories, no other suffixes
            if "/" in name or ext not in TYPES or not os.path.isfile(os.path.join(STATIC, name)):
                raise ApiError(404, f"no such file: {path}")
            return 200, TYPES[ext], static_file(name)
        binary: Dict[str, Callable[[Dict[str, str]], bytes]] = {
            "/api/slices": api.slices, "/api/states": api.states}
        if path in binary:
            return 200, "application/octet-stream", binary[path](q)
        answers: Dict[str, Callable[[Dict[str, str]], Any]] = {
            "/api/meta": lambda q: api.meta(), "/api/functions": api.functions,
            "/api/tree": api.tree, "/api/call": api.call}
        if path in answers:
            return 200, "application/json", json.dumps(answers[path](q)).encode()
        raise ApiError(404, f"no such page: {path}")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a request per pan and zoom: the terminal stays quiet


def make_server(api: Api, host: str, port: int) -> ViewerServer:
    return ViewerServer((host, port), api)


def url_of(server: ViewerServer) -> str:
    host, port = server.server_address[:2]
    host = str(host)
    return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"



