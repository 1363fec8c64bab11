"""The endpoints of fasttrace.http, apart from any server.

    /debug/fasttrace/                                index: the process, what records now
    /debug/fasttrace/trace?seconds=N[&rate=Hz][&c_calls=0]   a .ftrace of the next N seconds
    /debug/fasttrace/profile?seconds=N[&rate=Hz]     a gzipped pprof of samples
    /debug/fasttrace/flight                          a dump of the running flight recorder

The three servers (the standalone one, the WSGI and the ASGI mounts) turn their requests into a
Request and call prepare(): it answers at once (the index, an error) with a Response, or returns
a Job, a capture that the server begins, waits out while it watches for the client going away,
and then finishes (a Response streaming the file) or cancels.  How a server waits is its own
business (a thread blocks, a coroutine sleeps); what a capture is, is this module's.

Captures served here go through the one Recorder registry (fasttrace/_recorder.py), so they
refuse to overlap any other capture of the process, as fasttrace.start() does.  When a flight
recorder runs, trace and profile requests wait their seconds and answer from a dump of it.
"""

from __future__ import annotations

import hmac
import html
import json
import os
import select
import socket
import sys
import tempfile
import threading
import time
from urllib.parse import parse_qsl

from fasttrace import _recorder
from fasttrace._capture import HIDDEN_CODES
from fasttrace._errors import TracingError
from fasttrace._recorder import MAX_RATE, MIN_RATE, Recorder
from fasttrace._version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Tuple

PREFIX = "/debug/fasttrace"
DEFAULT_MAX_SECONDS = 60.0
DEFAULT_MAX_RATE = 1000.0
# As Go's /debug/pprof: a trace of 1 s, a CPU profile of 30 s, at 100 Hz.
DEFAULT_TRACE_SECONDS = 1.0
DEFAULT_PROFILE_SECONDS = 30.0
DEFAULT_PROFILE_RATE = 100.0
BLOCK = 1 << 20  # bytes per read of a streamed file
# How often a waiting capture looks for its client having gone away.
POLL_S = 0.1

ENDPOINTS = (
    ("", "this page (?format=json for JSON)"),
    ("trace?seconds=N[&rate=HZ][&c_calls=0]",
     "a .ftrace of the next N seconds: every call (trace mode), or stacks sampled at rate HZ"),
    ("profile?seconds=N[&rate=HZ]", "a gzipped pprof CPU profile (go tool pprof URL)"),
    ("flight", "a dump of the running flight recorder"),
)


class Config:
    """What serve(), wsgi_app() and asgi_app() were given."""

    def __init__(self, token: Optional[str] = None, *, max_seconds: float = DEFAULT_MAX_SECONDS,
                 max_rate: float = DEFAULT_MAX_RATE, directory: Optional[str] = None) -> None:
        if token is not None and (not isinstance(token, str) or not token):
            raise ValueError("token must be a non-empty string, or None")
        if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)) or \
                not 0 < max_seconds < float("inf"):
            raise ValueError(f"max_seconds must be a positive number, got {max_seconds!r}")
        if isinstance(max_rate, bool) or not isinstance(max_rate, (int, float)) or \
                not MIN_RATE <= max_rate <= MAX_RATE:
            raise ValueError(f"max_rate must be between {MIN_RATE} and {MAX_RATE}, got "
                             f"{max_rate!r}")
        if directory is not None and not os.access(directory, os.W_OK | os.X_OK):
            why = "is not writable" if os.path.isdir(directory) else "does not exist"
            raise ValueError(f"the directory for captures {directory!r} {why}")
        self.token = token.encode() if token is not None else None
        self.max_seconds = float(max_seconds)
        self.max_rate = float(max_rate)
        self.directory = directory


class Request:
    """A request as the servers hand it over: method, path (from the mount point: either
    "/debug/fasttrace/..." or, mounted there, "/..."), the query string, the headers (names
    lower case) and the client's address for messages."""

    def __init__(self, method: str, path: str, query: str, headers: "Dict[str, str]",
                 client: str = "") -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.client = client


class Response:
    """status, headers, and the body: bytes, or a file streamed in BLOCK reads and closed at
    the end (its name is unlinked already: nothing is left behind if the client goes)."""

    def __init__(self, status: int, headers: "List[Tuple[str, str]]", body: bytes = b"",
                 file: "Optional[IO[bytes]]" = None, length: Optional[int] = None) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.file = file
        self.length = len(body) if file is None else length

    def chunks(self) -> "Iterator[bytes]":
        if self.file is None:
            if self.body:
                yield self.body
            return
        try:
            while True:
                block = self.file.read(BLOCK)
                if not block:
                    return
                yield block
        finally:
            self.close()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 500: "Internal Server Error",
           503: "Service Unavailable"}


def error(status: int, message: str, extra: "Tuple[Tuple[str, str], ...]" = ()) -> Response:
    if not message.startswith("fasttrace"):
        message = "fasttrace: " + message
    body = (message.rstrip("\n") + "\n").encode()
    return Response(status, [("Content-Type", "text/plain; charset=utf-8"),
                             ("Cache-Control", "no-store"),
                             ("X-Content-Type-Options", "nosniff"), *extra], body)


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> Response:
        return error(self.status, self.message)


# ---- routing ------------------------------------------------------------------------------

def prepare(config: Config, req: Request) -> "Response | Job":
    """The answer to `req`: a Response now, or a Job for the server to run."""
    if not _authorized(config, req):
        return error(401, "fasttrace: a valid token is required (Authorization: Bearer TOKEN, "
                          "or ?token=TOKEN)", (("WWW-Authenticate", 'Bearer realm="fasttrace"'),))
    path = req.path
    if path == PREFIX or path.startswith(PREFIX + "/"):
        path = path[len(PREFIX):]
    name = path.strip("/")
    if name not in ("", "trace", "profile", "flight"):
        return error(404, f"fasttrace: no endpoint {req.path!r}; the endpoints are under "
                          f"{PREFIX}/ (trace, profile, flight)")
    if req.method not in ("GET", "HEAD"):
        return error(405, f"fasttrace: {req.method} is not allowed here: use GET",
                     (("Allow", "GET, HEAD"),))
    try:
        params = _params(req.query)
        if name == "":
            _only(params, "format")
            fmt = params.get("format", "html")
            if fmt not in ("html", "json"):
                raise HttpError(400, f"format must be html or json, got {fmt!r}")
            return index(config, fmt)
        if name == "flight":
            _only(params)
            return Job("flight", 0.0, None, True, config)
        if name == "trace":
            _only(params, "seconds", "rate", "c_calls")
            seconds = _seconds(params, DEFAULT_TRACE_SECONDS, config)
            rate = _rate(params, None, config)
            c_calls = _flag(params, "c_calls", True)
            if rate is not None and "c_calls" in params:
                raise HttpError(400, "c_calls applies to trace mode only: not with rate=")
            return Job("trace", seconds, rate, c_calls, config)
        _only(params, "seconds", "rate")
        return Job("profile", _seconds(params, DEFAULT_PROFILE_SECONDS, config),
                   _rate(params, DEFAULT_PROFILE_RATE, config), False, config)
    except HttpError as e:
        return e.response()


def _authorized(config: Config, req: Request) -> bool:
    if config.token is None:
        return True
    given = None
    auth = req.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    else:
        for key, value in parse_qsl(req.query, keep_blank_values=True):
            if key == "token":
                given = value
    if given is None:
        return False
    # Constant time in the token's content: the length of the given one may show.
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), config.token)


def _params(query: str) -> "Dict[str, str]":
    params: Dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise HttpError(400, f"the query string {query!r} is malformed") from None
    for key, value in pairs:
        if key == "token":
            continue  # checked by _authorized
        if key in params:
            raise HttpError(400, f"parameter {key!r} is given twice")
        params[key] = value
    return params


def _only(params: "Dict[str, str]", *allowed: str) -> None:
    for key in params:
        if key not in allowed:
            raise HttpError(400, f"unknown parameter {key!r}" + (
                f" (this endpoint takes {', '.join(allowed)})" if allowed
                else " (this endpoint takes none)"))


def _number(params: "Dict[str, str]", key: str) -> Optional[float]:
    text = params.get(key)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise HttpError(400, f"{key} must be a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise HttpError(400, f"{key} must be a finite number, got {text!r}")
    return value


def _seconds(params: "Dict[str, str]", default: float, config: Config) -> float:
    value = _number(params, "seconds")
    if value is None:
        return min(default, config.max_seconds)
    if not 0 < value <= config.max_seconds:
        raise HttpError(400, f"seconds must be more than 0 and at most {config.max_seconds:g}, "
                             f"got {params['seconds']!r}")
    return value


def _rate(params: "Dict[str, str]", default: Optional[float], config: Config
          ) -> Optional[float]:
    value = _number(params, "rate")
    if value is None:
        return default
    if not MIN_RATE <= value <= config.max_rate:
        raise HttpError(400, f"rate must be between {MIN_RATE} and {config.max_rate:g} samples "
                             f"per second, got {params['rate']!r}")
    return value


def _flag(params: "Dict[str, str]", key: str, default: bool) -> bool:
    text = params.get(key)
    if text is None:
        return default
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise HttpError(400, f"{key} must be 0 or 1, got {text!r}")


# ---- captures -----------------------------------------------------------------------------

# The one capture a request runs now (flight dumps excepted: they overlap nothing), so that a
# second request gets 409 with what runs.
_serving: "Optional[Job]" = None
_serving_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # The request a parent's thread was serving is not the child's.
    global _serving, _serving_lock
    _serving = None
    _serving_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _flight_recorder() -> Any:
    """The running flight recorder of this process, or None."""
    flight = sys.modules.get("fasttrace._flight")
    active = _recorder.active()
    if flight is not None and isinstance(active, flight.FlightRecorder):
        return active
    return None


class Job:
    """One capture for one request: begin(), wait `seconds`, then finish() or cancel().

    kind "trace": a .ftrace of trace mode, or with rate of sampling mode; "profile": samples,
    answered as gzipped pprof; "flight": a dump of the running flight recorder, at once.  With
    a flight recorder running, trace and profile begin nothing and answer from a dump."""

    def __init__(self, kind: str, seconds: float, rate: Optional[float], c_calls: bool,
                 config: Config) -> None:
        self.kind = kind
        self.seconds = seconds
        self.rate = rate
        self.c_calls = c_calls
        self.config = config
        self.client = ""
        self.started = 0.0
        self._recorder: Optional[Recorder] = None
        self._flight: Any = None
        self._path: Optional[str] = None

    def describe(self) -> str:
        what = (f"a trace at {self.rate:g} Hz" if self.kind == "trace" and self.rate
                else "a trace" if self.kind == "trace" else f"a profile at {self.rate:g} Hz")
        ago = time.monotonic() - self.started
        return (f"{what} of {self.seconds:g} s for {self.client or 'a client'}, "
                f"{ago:.1f} s in")

    def begin(self, skip_caller_stack: bool) -> None:
        """Starts the capture (trace and profile) or finds the flight recorder; HttpError 409
        if that cannot be, 404 for /flight with none running.  skip_caller_stack: the calling
        thread waits in fasttrace's code for the whole capture (a thread of the standalone
        server, a WSGI worker): leave its frames out of the trace (on an event loop, whose
        frames go on running the program, pass False)."""
        global _serving
        self.started = time.monotonic()
        flight = _flight_recorder()
        if self.kind == "flight" or flight is not None:
            if flight is None:
                raise HttpError(404, f"no flight recorder is running in process {os.getpid()}: "
                                     "start one with fasttrace.FlightRecorder(...).start(), or "
                                     "fasttrace run --flight 10s")
            self._flight = flight
            return
        with _serving_lock:
            if _serving is not None:
                raise HttpError(409, f"a capture for another request is running: "
                                     f"{_serving.describe()}; try again when it ends")
            active = _recorder.active()
            if active is not None:
                raise HttpError(409, f"{active.describe()}: a capture for this request cannot "
                                     "start beside it")
            path = self._temp_path(".ftrace")
            rec = Recorder(path, rate=self.rate, c_calls=self.c_calls,
                           skip_caller_stack=skip_caller_stack)
            try:
                rec.start()
            except TracingError as e:
                _unlink(path)
                running = _recorder.active()
                raise HttpError(409 if running is not None else 500, str(e)) from None
            self._path = path
            self._recorder = rec
            _serving = self

    def _temp_path(self, suffix: str) -> str:
        fd, path = tempfile.mkstemp(prefix=f"fasttrace-{os.getpid()}-", suffix=suffix,
                                    dir=self.config.directory)
        os.close(fd)
        return path

    def finish(self) -> Response:
        """Ends the capture (or dumps the flight recorder) and answers with the file, streamed
        from disk.  HttpError 409/500 if the capture failed meanwhile."""
        global _serving
        try:
            if self._flight is not None:
                path = self._temp_path(".ftrace")
                try:
                    self._flight.dump(path)
                except TracingError as e:
                    _unlink(path)
                    raise HttpError(409 if "not running" in str(e) else 500, str(e)) from None
            else:
                rec = self._recorder
                assert rec is not None and self._path is not None
                path = self._path
                try:
                    if rec.summary is None:  # not stopped by anybody else meanwhile
                        rec.stop()
                except TracingError as e:
                    _unlink(path)
                    raise HttpError(500, str(e)) from None
        finally:
            self._release()
        if self.kind == "profile":
            return self._profile(path)
        return _file_response(path, "application/octet-stream",
                              f"fasttrace-{os.getpid()}-{time.strftime('%Y%m%d-%H%M%S')}"
                              ".ftrace")

    def _profile(self, trace_path: str) -> Response:
        from fasttrace import load
        from fasttrace.export import pprof

        out = self._temp_path(".pb.gz")
        try:
            with load(trace_path) as trace:
                pprof.write(trace, out)
        except Exception as e:  # a bug or a full disk: say so, leave no file behind
            _unlink(out)
            raise HttpError(500, f"converting the profile to pprof failed: {e}") from None
        finally:
            _unlink(trace_path)
        return _file_response(out, "application/octet-stream", "profile")

    def cancel(self) -> None:
        """The client went away: stop the capture and leave nothing behind."""
        rec = self._recorder
        try:
            if rec is not None and rec.summary is None:
                try:
                    rec.stop()
                except TracingError:
                    pass  # the file failed too: it is removed below in any case
        finally:
            if self._path is not None:
                _unlink(self._path)
            self._release()

    def _release(self) -> None:
        global _serving
        with _serving_lock:
            if _serving is self:
                _serving = None
        self._recorder = None


def run_blocking(job: Job, gone: "Callable[[], bool]", skip_caller_stack: bool = True
                 ) -> Optional[Response]:
    """A thread's way to serve a Job: begin, wait its seconds while polling gone() (the client
    disconnected), then finish.  None when the client went away (the capture is cancelled).
    Samplers leave out a thread inside this function (HIDDEN_CODES)."""
    job.begin(skip_caller_stack)
    try:
        deadline = time.monotonic() + job.seconds if job.kind != "flight" else 0.0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(left, POLL_S))
            if gone():
                job.cancel()
                return None
    except BaseException:
        job.cancel()
        raise
    return job.finish()


HIDDEN_CODES.append(run_blocking.__code__)


def peer_gone(sock: socket.socket) -> bool:
    """The client closed its end of `sock` (a read would see end-of-file).  A client that
    sent more (a pipelined request) is still there."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _file_response(path: str, media_type: str, filename: str) -> Response:
    f = open(path, "rb")
    _unlink(path)  # the open file is all that is left: gone with it, whatever happens
    size = os.fstat(f.fileno()).st_size
    return Response(200, [("Content-Type", media_type),
                          ("Content-Disposition", f'attachment; filename="{filename}"'),
                          ("Cache-Control", "no-store"),
                          ("X-Content-Type-Options", "nosniff"),
                          ("Content-Length", str(size))], file=f, length=size)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# ---- the index ----------------------------------------------------------------------------

# Other processes' endpoints to list on the index (fasttrace run --http --follow-children):
# a callable returning [{"pid", "url", "argv"}], set by whoever knows them.
children_source: "Optional[Callable[[], List[Dict[str, Any]]]]" = None


def status() -> "Dict[str, Any]":
    """What the index says, as data."""
    active = _recorder.active()
    serving = _serving
    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return {
        "pid": os.getpid(),
        "argv": list(argv),
        "python": sys.version.split()[0],
        "fasttrace": __version__,
        "recording": active.describe() if active is not None else None,
        "serving": serving.describe() if serving is not None else None,
        "threads": _thread_count(),
        "endpoints": [PREFIX + "/" + p for p, _ in ENDPOINTS],
        "children": children_source() if children_source is not None else [],
    }


def _thread_count() -> int:
    try:
        return len(os.listdir(f"/proc/{os.getpid()}/task"))
    except OSError:
        return threading.active_count()


def index(config: Config, fmt: str) -> Response:
    s = status()
    if fmt == "json":
        return Response(200, [("Content-Type", "application/json"),
                              ("Cache-Control", "no-store")],
                        (json.dumps(s, indent=1) + "\n").encode())
    e = html.escape
    rows = "".join(f'<tr><td><a href="{e(PREFIX + "/" + p.split("?")[0])}">{e(PREFIX + "/" + p)}'
                   f"</a></td><td>{e(d)}</td></tr>" for p, d in ENDPOINTS)
    kids = "".join(f'<li><a href="{e(c["url"])}">{e(c["url"])}</a> process {c["pid"]}: '
                   f'{e(" ".join(c.get("argv") or []))}</li>' for c in s["children"])
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>fasttrace: process {s['pid']}</title>
<style>body{{font-family:sans-serif;margin:2em}}td{{padding:2px 1em 2px 0}}
code{{background:#eee;padding:1px 3px}}</style></head><body>
<h1>fasttrace {e(s['fasttrace'])}: process {s['pid']}</h1>
<p><code>{e(' '.join(s['argv']))}</code><br>Python {e(s['python'])}, {s['threads']} threads</p>
<p>Recording now: {e(s['recording'] or 'nothing')}</p>
{f"<p>Serving a request: {e(s['serving'])}</p>" if s['serving'] else ""}
<h2>Endpoints</h2><table>{rows}</table>
<p>For example: <code>curl -o out.ftrace '{e(PREFIX)}/trace?seconds=5'</code>, then
<code>fasttrace report out.ftrace</code>;
<code>go tool pprof URL{e(PREFIX)}/profile?seconds=10</code>.</p>
{f"<h2>Child processes</h2><ul>{kids}</ul>" if kids else ""}
</body></html>
"""
    return Response(200, [("Content-Type", "text/html; charset=utf-8"),
                          ("Cache-Control", "no-store")], page.encode())
